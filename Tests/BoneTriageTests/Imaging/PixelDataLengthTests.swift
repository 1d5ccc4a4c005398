import BoneTriage
import Foundation
import Testing

/// Pixel Data that holds less than Rows x Columns x Samples x Bits Allocated x frames (native), or fewer
/// fragments than frames (encapsulated), is a typed error before anything is rendered or allocated
/// for it: at the header read (so a C-STORE is refused and the file quarantined) and at decoding.
@Suite("Pixel Data against its header")
struct PixelDataLengthTests {
    static let spec = ModelInputSpec(size: 75, range: -1...1, filter: .area)
    static let study = "1.2.826.0.1.3680043.8.498.6060"

    /// The reason of an `.incomplete` error, or a recorded issue.
    static func incompleteReason(_ body: () throws -> Void) -> String? {
        do {
            try body()
            Issue.record("expected ImagingError.incomplete, got no error")
        } catch let ImagingError.incomplete(_, reason) {
            return reason
        } catch {
            Issue.record("expected ImagingError.incomplete, got \(error)")
        }
        return nil
    }

    @Test("16384 x 16384 x 16 bits with 512 bytes of Pixel Data: refused at the header and at decoding, with the numbers")
    func shortNativeSingleFrame() throws {
        let dir = try TemporaryDirectory()
        var w = DicomWriter.radiograph(study: Self.study, sop: Self.study + ".1", rows: 16384, columns: 16384, bitsAllocated: 16)
        w.nativePixels(bytes: 512, bitsAllocated: 16)
        let path = dir.path("short.dcm")
        try w.write(to: path)
        let reason = Self.incompleteReason { _ = try DicomReader.metadata(path: path) }
        #expect(reason?.contains("holds 512 bytes") == true && reason?.contains("need 536870912 bytes") == true, "\(reason ?? "")")
        #expect(reason?.contains("16384 x 16384 x 1 x 16 x 1") == true && reason?.contains("truncated or corrupt") == true, "\(reason ?? "")")
        _ = Self.incompleteReason { _ = try DicomReader.render(path: path) }
        guard case .unreadable(.incomplete) = InProcessDecoder.decode(path: path, spec: Self.spec, maximumPixels: DicomReader.defaultMaximumPixels) else {
            Issue.record("the decoder must refuse the file, not classify it")
            return
        }
        let description = ImagingError.incomplete(path: path, reason: reason ?? "").description
        #expect(description.contains("resend"), "\(description)")
    }

    @Test("512 x 512 x 1024 frames with 512 bytes: refused before rendering any frame, also in the decoder process")
    func shortNativeMultiFrame() throws {
        let dir = try TemporaryDirectory()
        var w = DicomWriter.radiograph(study: Self.study, sop: Self.study + ".2", rows: 512, columns: 512, bitsAllocated: 16, frames: 1024)
        w.nativePixels(bytes: 512, bitsAllocated: 16)
        let path = dir.path("frames.dcm")
        try w.write(to: path)
        let reason = Self.incompleteReason { _ = try DicomReader.metadata(path: path) }
        #expect(reason?.contains("holds 512 bytes") == true && reason?.contains("x 1024) need 536870912 bytes") == true, "\(reason ?? "")")
        if let executable = Executable.url {
            let decoder = IsolatedDecoder(executable: executable.path, timeout: 30)
            defer { decoder.close() }
            guard case let .unreadable(.incomplete(_, childReason)) = decoder.decode(path: path, spec: Self.spec, maximumPixels: DicomReader.defaultMaximumPixels) else {
                Issue.record("the decoder process must answer a typed incomplete-data error")
                return
            }
            #expect(childReason == reason)
            let reader = IsolatedHeaderReader(executable: executable.path, timeout: 10, processes: 1)
            defer { reader.close() }
            #expect(throws: ImagingError.incomplete(path: path, reason: reason ?? "")) { try reader.metadata(path: path) }
        }
    }

    @Test("encapsulated data with fewer non-empty fragments than Number of Frames is refused")
    func encapsulatedFewerFragments() throws {
        let dir = try TemporaryDirectory()
        var w = DicomWriter.radiograph(study: Self.study, sop: Self.study + ".3", rows: 512, columns: 512, bitsAllocated: 8, frames: 1024)
        w.encapsulatedPixels([Data(repeating: 7, count: 512)], transferSyntax: "1.2.840.10008.1.2.5")  // RLE
        let path = dir.path("rle.dcm")
        try w.write(to: path)
        let reason = Self.incompleteReason { _ = try DicomReader.metadata(path: path) }
        #expect(reason?.contains("1 non-empty fragment(s)") == true && reason?.contains("for 1024 frame(s)") == true, "\(reason ?? "")")
        _ = Self.incompleteReason { _ = try DicomReader.render(path: path) }

        var empty = DicomWriter.radiograph(study: Self.study, sop: Self.study + ".4", rows: 64, columns: 64)
        empty.encapsulatedPixels([Data()], transferSyntax: "1.2.840.10008.1.2.5")
        try empty.write(to: dir.path("empty-fragment.dcm"))
        let emptyReason = Self.incompleteReason { _ = try DicomReader.metadata(path: dir.path("empty-fragment.dcm")) }
        #expect(emptyReason?.contains("0 non-empty fragment(s)") == true, "\(emptyReason ?? "")")
    }

    @Test("complete Pixel Data passes: exact, odd length padded, 1-bit, and an image the model sees")
    func completeDataPasses() throws {
        let dir = try TemporaryDirectory()
        var exact = DicomWriter.radiograph(study: Self.study, sop: Self.study + ".5", rows: 64, columns: 48)
        exact.nativePixels(bytes: 64 * 48)
        try exact.write(to: dir.path("exact.dcm"))
        #expect(try DicomReader.metadata(path: dir.path("exact.dcm")).rows == 64)
        let rendered = try DicomReader.render(path: dir.path("exact.dcm"))
        #expect(rendered.frames.count == 1 && rendered.frames[0].width == 48 && rendered.frames[0].height == 64)

        var odd = DicomWriter.radiograph(study: Self.study, sop: Self.study + ".6", rows: 3, columns: 3)
        odd.nativePixels(bytes: 9)  // written padded to 10
        try odd.write(to: dir.path("odd.dcm"))
        #expect(try DicomReader.render(path: dir.path("odd.dcm")).frames.count == 1)

        var bits = DicomWriter.radiograph(study: Self.study, sop: Self.study + ".7", rows: 8, columns: 8, bitsAllocated: 1)
        bits.nativePixels(bytes: 8)
        try bits.write(to: dir.path("bits.dcm"))
        #expect(throws: Never.self) { try DicomReader.metadata(path: dir.path("bits.dcm")) }

        // One byte short of that is refused.
        var oneShort = DicomWriter.radiograph(study: Self.study, sop: Self.study + ".8", rows: 8, columns: 9)
        oneShort.nativePixels(bytes: 70)
        try oneShort.write(to: dir.path("one-short.dcm"))
        let reason = Self.incompleteReason { _ = try DicomReader.metadata(path: dir.path("one-short.dcm")) }
        #expect(reason?.contains("holds 70 bytes") == true && reason?.contains("need 72 bytes") == true, "\(reason ?? "")")
    }
}
