import Foundation

/// Small Part 10 files (explicit VR little endian meta and dataset) built byte by byte, for what DCMTK's
/// tools will not write: text in a chosen character set as raw bytes, Pixel Data shorter than the
/// header declares, encapsulated data with fewer fragments than frames, a dataset with no attribute.
struct DicomWriter {
    private struct Element {
        let group: UInt16, element: UInt16, vr: String, value: Data
    }

    var sopClassUID = "1.2.840.10008.5.1.4.1.1.1"  // CR Image Storage
    var sopInstanceUID: String
    var transferSyntax = "1.2.840.10008.1.2.1"
    /// Leaves SOP Instance UID (0008,0018) out of the dataset (the File Meta header still names it).
    var omitSOPInstanceUID = false
    private var elements: [Element] = []
    /// Encapsulated Pixel Data: an empty Basic Offset Table, these fragments, a sequence delimiter.
    private var fragments: [Data]?

    init(sopInstanceUID: String) { self.sopInstanceUID = sopInstanceUID }

    /// A radiograph header (CR, MONOCHROME2, Body Part Examined HUMERUS), without Pixel Data.
    static func radiograph(study: String, sop: String, rows: Int, columns: Int, bitsAllocated: Int = 8, frames: Int? = nil) -> DicomWriter {
        var w = DicomWriter(sopInstanceUID: sop)
        w.set(0x0008, 0x0060, "CS", "CR")
        w.set(0x0018, 0x0015, "CS", "HUMERUS")
        w.set(0x0020, 0x000D, "UI", study)
        w.set(0x0020, 0x000E, "UI", study + ".1")
        w.set(0x0028, 0x0002, "US", us(1))
        w.set(0x0028, 0x0004, "CS", "MONOCHROME2")
        if let frames { w.set(0x0028, 0x0008, "IS", String(frames)) }
        w.set(0x0028, 0x0010, "US", us(rows))
        w.set(0x0028, 0x0011, "US", us(columns))
        w.set(0x0028, 0x0100, "US", us(bitsAllocated))
        w.set(0x0028, 0x0101, "US", us(bitsAllocated))
        w.set(0x0028, 0x0102, "US", us(bitsAllocated - 1))
        w.set(0x0028, 0x0103, "US", us(0))
        return w
    }

    static func us(_ v: Int) -> Data { withUnsafeBytes(of: UInt16(v).littleEndian) { Data($0) } }

    /// Sets an element (replacing one with the same tag) to these exact bytes.
    mutating func set(_ group: UInt16, _ element: UInt16, _ vr: String, _ value: Data) {
        elements.removeAll { $0.group == group && $0.element == element }
        elements.append(Element(group: group, element: element, vr: vr, value: value))
    }

    mutating func set(_ group: UInt16, _ element: UInt16, _ vr: String, _ text: String) {
        set(group, element, vr, Data(text.utf8))
    }

    /// Native Pixel Data (OW for 16 bits, else OB) of exactly `bytes` bytes (plus a pad byte when odd).
    mutating func nativePixels(bytes: Int, bitsAllocated: Int = 8) {
        set(0x7FE0, 0x0010, bitsAllocated > 8 ? "OW" : "OB", Data((0..<bytes).map { UInt8($0 % 251) }))
    }

    /// Encapsulated Pixel Data in `transferSyntax` (undefined length, one item per fragment).
    mutating func encapsulatedPixels(_ fragments: [Data], transferSyntax: String) {
        self.transferSyntax = transferSyntax
        self.fragments = fragments
    }

    private static func encode(_ e: Element) -> Data {
        var d = Data()
        withUnsafeBytes(of: e.group.littleEndian) { d.append(contentsOf: $0) }
        withUnsafeBytes(of: e.element.littleEndian) { d.append(contentsOf: $0) }
        d.append(contentsOf: Array(e.vr.utf8))
        var v = e.value
        if v.count % 2 == 1 { v.append(e.vr == "UI" || e.vr == "OB" ? 0 : 0x20) }
        if ["OB", "OW", "OF", "SQ", "UN", "UT", "UC", "UR"].contains(e.vr) {
            d.append(contentsOf: [0, 0])
            withUnsafeBytes(of: UInt32(v.count).littleEndian) { d.append(contentsOf: $0) }
        } else {
            withUnsafeBytes(of: UInt16(v.count).littleEndian) { d.append(contentsOf: $0) }
        }
        d.append(v)
        return d
    }

    /// The whole file; `emptyDataset` writes the File Meta header alone (what a C-STORE of an empty
    /// dataset leaves on disk).
    func data(emptyDataset: Bool = false) -> Data {
        var meta = Data()
        for e in [Element(group: 2, element: 1, vr: "OB", value: Data([0, 1])),
                  Element(group: 2, element: 2, vr: "UI", value: Data(sopClassUID.utf8)),
                  Element(group: 2, element: 3, vr: "UI", value: Data(sopInstanceUID.utf8)),
                  Element(group: 2, element: 0x10, vr: "UI", value: Data(transferSyntax.utf8)),
                  Element(group: 2, element: 0x12, vr: "UI", value: Data("1.2.826.0.1.3680043.8.498.1".utf8))] {
            meta += Self.encode(e)
        }
        var file = Data(count: 128) + Data("DICM".utf8)
        file += Self.encode(Element(group: 2, element: 0, vr: "UL", value: withUnsafeBytes(of: UInt32(meta.count).littleEndian) { Data($0) }))
        file += meta
        guard !emptyDataset else { return file }
        var all = elements
        all.append(Element(group: 0x0008, element: 0x0016, vr: "UI", value: Data(sopClassUID.utf8)))
        if !omitSOPInstanceUID { all.append(Element(group: 0x0008, element: 0x0018, vr: "UI", value: Data(sopInstanceUID.utf8))) }
        for e in all.sorted(by: { ($0.group, $0.element) < ($1.group, $1.element) }) { file += Self.encode(e) }
        if let fragments {
            file += Data([0xE0, 0x7F, 0x10, 0x00]) + Data("OB".utf8) + Data([0, 0, 0xFF, 0xFF, 0xFF, 0xFF])
            func item(_ payload: Data) -> Data {
                var p = payload
                if p.count % 2 == 1 { p.append(0) }
                return Data([0xFE, 0xFF, 0x00, 0xE0]) + withUnsafeBytes(of: UInt32(p.count).littleEndian) { Data($0) } + p
            }
            file += item(Data())
            for fragment in fragments { file += item(fragment) }
            file += Data([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0])
        }
        return file
    }

    func write(to path: String, emptyDataset: Bool = false) throws {
        try data(emptyDataset: emptyDataset).write(to: URL(fileURLWithPath: path))
    }
}
