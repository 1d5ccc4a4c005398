import CDCMTK
import Foundation

/// The header fields the worklist and the triage need (read without decoding pixels).
public struct DicomMetadata: Sendable, Equatable, Codable {
    public var studyInstanceUID: String?
    public var seriesInstanceUID: String?
    public var sopInstanceUID: String?
    public var sopClassUID: String?
    public var patientID: String?
    public var patientName: String?
    public var accessionNumber: String?
    public var studyDate: String?
    public var studyTime: String?
    public var studyDescription: String?
    public var seriesDescription: String?
    public var modality: String?
    public var bodyPartExamined: String?
    public var viewPosition: String?
    public var laterality: String?
    public var rows: Int?
    public var columns: Int?
    public var numberOfFrames: Int
    public var photometricInterpretation: String?
    public var bitsAllocated: Int?
    public var bitsStored: Int?
    public var pixelRepresentation: Int?
    public var transferSyntaxUID: String
    public var hasFileMeta: Bool
    public var numberOfStudyRelatedInstances: Int?
    /// Set when some text (names, IDs, descriptions) could not be converted to UTF-8 from its Specific
    /// Character Set (0008,0005) (an unknown set, bytes invalid in it): that text is kept as received,
    /// and this says why. Names no patient data.
    public var characterSetNote: String?
    /// Series Number (0020,0011) and Instance Number (0020,0013): how the PACS numbers the image.
    public var seriesNumber: Int?
    public var instanceNumber: Int?
}

/// How a DICOM image was turned into 8 bits.
public struct RenderingDecisions: Sendable, Equatable, Codable {
    public enum VOI: String, Sendable, Codable { case minMax = "min_max", window, voiLUT = "voi_lut" }
    public var voi: VOI
    public var windowCenter: Double?
    public var windowWidth: Double?
    public var invertedMonochrome1: Bool
    public var decodedWithOpenJPEG: Bool
    /// The file's window missed every pixel value (a flat image), so min-max was used instead.
    public var fileWindowIgnored: Bool
}

/// A DICOM file, rendered: its metadata, one radiograph per frame, and how they were made.
public struct RenderedDicom: Sendable {
    public let metadata: DicomMetadata
    public let frames: [Radiograph]
    public let decisions: RenderingDecisions
    /// The reduced resolution decoded: 0 is full resolution (Rows x Columns); r is 1/2^r of it in each
    /// dimension (rounded up): a JPEG 2000 resolution level, or a JPEG's DCT scaling (`dctScaled`).
    /// Always 0 for other transfer syntaxes.
    public var resolutionLevel: Int = 0
    /// The reduction is a JPEG's DCT scaling (each pixel covers its 2^r x 2^r block), not a JPEG 2000 level.
    public var dctScaled = false
    /// For a gray JPEG 2000 image decoded for the min-max window with a minimum size: how far the extremes
    /// of the finer reduced level moved under a 2x2 average, as a fraction of their range. At most
    /// `DicomReader.minMaxShiftLimit`: that level's extremes made the window; above it: decoded in full.
    /// Nil when not measured (a window or VOI LUT, full resolution asked for, another syntax).
    public var minMaxShift: Double?

    /// Where the frames lie on the full image, for the model input's resize; nil at full resolution.
    public var reduction: ModelInput.Reduction? {
        guard resolutionLevel > 0, let columns = metadata.columns, let rows = metadata.rows else { return nil }
        return ModelInput.Reduction(level: resolutionLevel, fullWidth: columns, fullHeight: rows, blockAligned: dctScaled)
    }
}

/// Reads DICOM through DCMTK (JPEG 2000 through OpenJPEG).
public enum DicomReader {
    /// rows x columns x frames above this are refused before any decoding (default 256 Mpixel).
    public static let defaultMaximumPixels: UInt64 = 256 << 20

    /// The header, with the checks a file must pass before it is accepted: a dataset that is not empty,
    /// and Pixel Data that holds what the header declares (`ImagingError.incomplete`).
    public static func metadata(path: String) throws -> DicomMetadata {
        let handle = try open(path, metadataOnly: true)
        defer { bt_dicom_close(handle) }
        try checkPixelData(handle, path: path)
        return metadata(handle)
    }

    /// How many times the model's input size a reduced decode keeps in both dimensions, so that the area
    /// filter still averages several decoded pixels into each input pixel (see `minimumDecodedSize`).
    public static let reductionMargin = 2

    /// The smallest width and height worth decoding for `spec`: `reductionMargin` x its size for the
    /// area filter; 0 (full resolution) for nearest, whose models were trained on pixels picked from
    /// the full image (a lower resolution level is an average, not a pick).
    public static func minimumDecodedSize(for spec: ModelInputSpec) -> Int {
        spec.filter == .area ? reductionMargin * spec.size : 0
    }

    /// The largest shift of a reduced level's extreme values under a 2x2 average (a fraction of their
    /// range) for which they stand for the full image's in the min-max window (see `render`).
    public static let minMaxShiftLimit = bt_min_max_shift_limit

    /// Reads and renders every frame. With `minimumSize` above 0 (the model's input: see
    /// `minimumDecodedSize`), JPEG 2000 is decoded at the lowest resolution level that keeps at least
    /// that many pixels in both dimensions, with `threads` OpenJPEG threads, and rendered as the full
    /// image would be; 0 (the default, for `inspect` and what radiologists see) decodes at full resolution.
    ///
    /// The min-max window (a gray image with no usable window or VOI LUT) spans the smallest and largest
    /// pixel values of the image decoded: at full resolution, every pixel of the full image. A lower
    /// resolution level is a low-pass of the image, so for the model input a JPEG 2000 image getting it is
    /// decoded one level finer than `minimumSize` needs (at least twice that size), its values clamped to
    /// the range Bits Stored allows, and its window spans that level's extremes only when they are stable:
    /// when averaging the level over 2x2 blocks moves neither extreme by more than `minMaxShiftLimit` of
    /// their range (extremes held by areas of several pixels: saturation, a collimator's shadow).
    /// Otherwise (a marker, text or a dot of a few pixels at an extreme) it is decoded in full, and the
    /// window spans the full image's extremes. A lone extreme pixel that the finer level averages below
    /// that limit is not seen (the window then spans the finer level's extremes). Other syntaxes decode a
    /// min-max image in full.
    public static func render(path: String, maximumPixels: UInt64 = defaultMaximumPixels, minimumSize: Int = 0,
                              threads: Int = 1) throws -> RenderedDicom {
        let rendered = try render(path: path, maximumPixels: maximumPixels, minimumSize: minimumSize, threads: threads, expectMinMax: false)
        guard rendered.resolutionLevel > 0, rendered.decisions.voi == .minMax, rendered.frames.first?.channels == 1,
              rendered.minMaxShift == nil else { return rendered }
        // The file's window missed every value of the reduced image: decode it again as a min-max image.
        return try render(path: path, maximumPixels: maximumPixels, minimumSize: minimumSize, threads: threads, expectMinMax: true)
    }

    private static func render(path: String, maximumPixels: UInt64, minimumSize: Int, threads: Int, expectMinMax: Bool) throws -> RenderedDicom {
        let handle = try open(path, metadataOnly: false)
        defer { bt_dicom_close(handle) }
        try checkPixelData(handle, path: path)
        let meta = metadata(handle)
        if let rows = meta.rows, let columns = meta.columns, rows > 0, columns > 0,
           UInt64(rows) * UInt64(columns) * UInt64(meta.numberOfFrames) > maximumPixels {
            throw ImagingError.sizeRefusal(path: path, width: columns, height: rows, frames: meta.numberOfFrames, limit: maximumPixels)
        }
        var info = bt_render_info()
        var error = [CChar](repeating: 0, count: 512)
        guard let image = bt_dicom_image_reduced(handle, maximumPixels, Int32(clamping: max(0, minimumSize)), Int32(clamping: max(1, threads)),
                                                 expectMinMax ? 1 : 0, &info, &error, error.count) else {
            let hint = uncompressedSyntaxes.contains(meta.transferSyntaxUID) ? "" : "; sending it uncompressed may help"
            throw ImagingError.undecodable(path: path, reason: message(error) + hint)
        }
        defer { bt_image_close(image) }
        let size = Int(info.width) * Int(info.height) * Int(info.channels)
        var frames: [Radiograph] = []
        for frame in 0..<Int(info.frames) {
            var pixels = [UInt8](repeating: 0, count: size)
            let status = pixels.withUnsafeMutableBufferPointer { bt_image_render(image, Int32(frame), $0.baseAddress, size, &error, error.count) }
            guard status == 0 else { throw ImagingError.undecodable(path: path, reason: message(error)) }
            frames.append(Radiograph(width: Int(info.width), height: Int(info.height), channels: Int(info.channels), pixels: pixels))
        }
        let voi: RenderingDecisions.VOI = info.voi_method == 2 ? .voiLUT : info.voi_method == 1 ? .window : .minMax
        let windowed = info.channels == 1 && info.window_width > 0
        let decisions = RenderingDecisions(voi: voi, windowCenter: windowed ? info.window_center : nil,
                                           windowWidth: windowed ? info.window_width : nil,
                                           invertedMonochrome1: info.inverted != 0, decodedWithOpenJPEG: info.used_openjpeg != 0,
                                           fileWindowIgnored: info.file_window_ignored != 0)
        return RenderedDicom(metadata: meta, frames: frames, decisions: decisions, resolutionLevel: Int(info.resolution_level),
                             dctScaled: info.dct_scaled != 0, minMaxShift: info.min_max_shift >= 0 ? info.min_max_shift : nil)
    }

    /// Implicit and explicit VR little endian, explicit big endian, deflated: pixels as they are.
    static let uncompressedSyntaxes: Set<String> = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"]

    /// Why an empty dataset is refused (a C-STORE can carry one: its file is a File Meta header alone).
    public static let emptyDatasetReason = "the dataset is empty: it holds no attribute, not even a SOP or Study Instance UID"

    private static func checkPixelData(_ handle: OpaquePointer, path: String) throws {
        var error = [CChar](repeating: 0, count: 512)
        if bt_dicom_check_pixel_data(handle, &error, error.count) != 0 {
            throw ImagingError.incomplete(path: path, reason: message(error))
        }
    }

    /// Text from the shim: UTF-8, or (text kept as received in an unknown character set) its bytes one
    /// character each, as ISO 8859-1 reads them, so that nothing is lost or replaced.
    static func receivedText(_ c: UnsafePointer<CChar>) -> (text: String, isUTF8: Bool) {
        if let text = String(validatingCString: c) { return (text, true) }
        let bytes = UnsafeBufferPointer(start: UnsafeRawPointer(c).assumingMemoryBound(to: UInt8.self), count: strlen(c))
        return (String(String.UnicodeScalarView(bytes.map { Unicode.Scalar($0) })), false)
    }

    /// The NUL-terminated text a C shim wrote into `buffer`.
    static func message(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func open(_ path: String, metadataOnly: Bool) throws -> OpaquePointer {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw ImagingError.unreadable(path: path, reason: isDirectory.boolValue ? "it is a folder" : "no such file")
        }
        guard FileManager.default.isReadableFile(atPath: path) else { throw ImagingError.unreadable(path: path, reason: "permission denied") }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        guard size > 0 else { throw ImagingError.notDICOM(path: path, reason: "the file is empty (0 bytes)") }
        var error = [CChar](repeating: 0, count: 512)
        guard let handle = bt_dicom_open(path, metadataOnly ? 1 : 0, &error, error.count) else {
            throw ImagingError.notDICOM(path: path, reason: message(error))
        }
        if bt_dicom_has_file_meta(handle) != 0 && bt_dicom_dataset_size(handle) == 0 {
            bt_dicom_close(handle)
            throw ImagingError.notDICOM(path: path, reason: emptyDatasetReason)
        }
        // DCMTK reads almost any bytes as a bare dataset; a DICOM file names at least its SOP instance.
        if bt_dicom_has_file_meta(handle) == 0 && bt_dicom_string(handle, 0x0008, 0x0018) == nil && bt_dicom_string(handle, 0x0020, 0x000D) == nil {
            bt_dicom_close(handle)
            throw ImagingError.notDICOM(path: path, reason: "no File Meta header and no SOP Instance UID (0008,0018) or Study Instance UID (0020,000D)")
        }
        return handle
    }

    private static func metadata(_ h: OpaquePointer) -> DicomMetadata {
        var notUTF8 = false
        func text(_ g: UInt16, _ e: UInt16) -> String? {
            guard let c = bt_dicom_string(h, g, e) else { return nil }
            let received = receivedText(c)
            notUTF8 = notUTF8 || !received.isUTF8
            let s = received.text.trimmingCharacters(in: .whitespaces)
            return s.isEmpty ? nil : s
        }
        func number(_ g: UInt16, _ e: UInt16) -> Int? {
            let v = bt_dicom_integer(h, g, e, Int.min)
            return v == Int.min ? nil : v
        }
        var m = DicomMetadata(
            studyInstanceUID: text(0x0020, 0x000D), seriesInstanceUID: text(0x0020, 0x000E), sopInstanceUID: text(0x0008, 0x0018),
            sopClassUID: text(0x0008, 0x0016), patientID: text(0x0010, 0x0020), patientName: text(0x0010, 0x0010),
            accessionNumber: text(0x0008, 0x0050), studyDate: text(0x0008, 0x0020), studyTime: text(0x0008, 0x0030),
            studyDescription: text(0x0008, 0x1030), seriesDescription: text(0x0008, 0x103E), modality: text(0x0008, 0x0060),
            bodyPartExamined: text(0x0018, 0x0015), viewPosition: text(0x0018, 0x5101),
            laterality: text(0x0020, 0x0060) ?? text(0x0020, 0x0062), rows: number(0x0028, 0x0010), columns: number(0x0028, 0x0011),
            numberOfFrames: max(1, number(0x0028, 0x0008) ?? 1), photometricInterpretation: text(0x0028, 0x0004),
            bitsAllocated: number(0x0028, 0x0100), bitsStored: number(0x0028, 0x0101), pixelRepresentation: number(0x0028, 0x0103),
            transferSyntaxUID: String(cString: bt_dicom_transfer_syntax(h)), hasFileMeta: bt_dicom_has_file_meta(h) != 0,
            numberOfStudyRelatedInstances: number(0x0020, 0x1208))
        m.seriesNumber = number(0x0020, 0x0011)
        m.instanceNumber = number(0x0020, 0x0013)
        if let note = bt_dicom_text_note(h) {
            m.characterSetNote = String(cString: note) + (notUTF8 ? " (bytes that are not UTF-8 are shown as ISO 8859-1 reads them)" : "")
        } else if notUTF8 {
            m.characterSetNote = "a text value is not valid in its Specific Character Set (0008,0005); it is kept as received, "
                + "its bytes shown as ISO 8859-1 reads them"
        }
        return m
    }
}
