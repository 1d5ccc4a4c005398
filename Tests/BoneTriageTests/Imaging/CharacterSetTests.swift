import BoneTriage
import Foundation
import Testing

/// Text attributes (names, IDs, descriptions) are converted to UTF-8 from their Specific Character Set
/// (0008,0005); text in a set that cannot be converted is kept as received and the file is flagged.
/// The byte sequences are DICOM PS3.5 Annex H's examples (Japanese, Korean) and their like.
@Suite("Specific Character Set")
struct CharacterSetTests {
    static let study = "1.2.826.0.1.3680043.8.498.7070"

    static func hex(_ text: String) -> Data {
        var data = Data()
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            data.append(UInt8(text[index..<next], radix: 16) ?? 0)
            index = next
        }
        return data
    }

    static let latin1Name = hex("47E9726172645E5A6FEB")  // Gérard^Zoë in ISO 8859-1
    static let latin1Description = hex("C974756465206475206272617320E0206761756368652028C3A729")  // Étude du bras à gauche (Ã§)

    /// (Specific Character Set, Patient Name bytes, expected UTF-8)
    static let cases: [(String, Data, String)] = [
        ("ISO_IR 100", latin1Name, "Gérard^Zoë"),
        ("ISO_IR 192", Data("Gérard^Zoë^山田".utf8), "Gérard^Zoë^山田"),
        ("\\ISO 2022 IR 87",
         hex("59616D6164615E5461726F753D1B24423B3345441B28425E1B244242404F3A1B28423D1B24422464245E24401B28425E1B2442243F246D24261B2842"),
         "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("ISO 2022 IR 13\\ISO 2022 IR 87",
         hex("D4CFC0DE5EC0DBB33D1B24423B3345441B284A5E1B244242404F3A1B284A3D1B24422464245E24401B284A5E1B2442243F246D24261B284A"),
         "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
        ("\\ISO 2022 IR 149", hex("486F6E675E47696C646F6E673D1B242943FBF35E1B242943D1CED4D73D1B242943C8AB5E1B242943B1E6B5BF"),
         "Hong^Gildong=洪^吉洞=홍^길동"),
        ("GB18030", hex("57616E675E5869616F446F6E673DCDF55ED0A1B6AB3D"), "Wang^XiaoDong=王^小东="),
        ("\\ISO 2022 IR 58", hex("5A68616E675E5869616F446F6E673D1B242941D5C55E1B242941D0A1B6AB"), "Zhang^XiaoDong=张^小东"),
        ("\\ISO 2022 IR 100", hex("4275635E4A1B2D41E972F46D65"), "Buc^Jérôme"),
        // Sets DCMTK 3.6.7 does not convert on glibc: Latin-9 (the euro sign) and JIS X 0201 alone.
        ("ISO_IR 203", hex("4575726FA45E4AE972F46D65"), "Euro€^Jérôme"),
        ("ISO 2022 IR 13", hex("D4CFC0DE5EC0DBB3"), "ﾔﾏﾀﾞ^ﾀﾛｳ"),
    ]

    static func file(in dir: TemporaryDirectory, _ name: String, charset: String?, patientName: Data, description: Data? = nil) throws -> String {
        var w = DicomWriter.radiograph(study: study, sop: study + ".\(name.utf8.reduce(0) { ($0 &* 31 &+ Int($1)) & 0xFFFFFF })", rows: 8, columns: 8)
        if let charset { w.set(0x0008, 0x0005, "CS", charset) }
        w.set(0x0010, 0x0010, "PN", patientName)
        w.set(0x0010, 0x0020, "LO", "ID-7")
        if let description { w.set(0x0008, 0x1030, "LO", description) }
        w.nativePixels(bytes: 64)
        let path = dir.path(name + ".dcm")
        try w.write(to: path)
        return path
    }

    @Test("names in ISO_IR 100, ISO_IR 192, ISO 2022 IR 87 (with and without IR 13), ISO 2022 IR 149, IR 58, IR 100, GB18030, ISO_IR 203 and ISO 2022 IR 13 read as UTF-8",
          arguments: cases)
    func converted(_ charset: String, _ bytes: Data, _ expected: String) throws {
        let dir = try TemporaryDirectory()
        let path = try Self.file(in: dir, "name", charset: charset, patientName: bytes)
        let m = try DicomReader.metadata(path: path)
        #expect(m.patientName == expected, "\(charset): \(m.patientName ?? "nil")")
        #expect(m.patientID == "ID-7")
        #expect(m.characterSetNote == nil, "\(m.characterSetNote ?? "")")
    }

    @Test("every text attribute is converted, not only the name: the study description in ISO_IR 100 and ISO_IR 144")
    func descriptionConverted() throws {
        let dir = try TemporaryDirectory()
        let path = try Self.file(in: dir, "desc", charset: "ISO_IR 100", patientName: Self.latin1Name, description: Self.latin1Description)
        let m = try DicomReader.metadata(path: path)
        #expect(m.studyDescription == "Étude du bras à gauche (Ã§)" && m.characterSetNote == nil, "\(m)")
        // Cyrillic, which no byte-for-byte reading gets right.
        let cyrillic = try DicomReader.metadata(path: try Self.file(in: dir, "cyrillic", charset: "ISO_IR 144", patientName: Data("Ivanov".utf8),
                                                                   description: Self.hex("BFDBD5E7DE20DBD5D2DED5")))
        #expect(cyrillic.studyDescription == "Плечо левое" && cyrillic.characterSetNote == nil, "\(cyrillic)")
        // The decoder process hands the converted header back unchanged.
        if let executable = Executable.url {
            let reader = IsolatedHeaderReader(executable: executable.path, timeout: 10, processes: 1)
            defer { reader.close() }
            #expect(try reader.metadata(path: path) == m)
        }
    }

    @Test("an unknown character set: text kept as received (each byte one character) and flagged")
    func unknownSet() throws {
        let dir = try TemporaryDirectory()
        let path = try Self.file(in: dir, "unknown", charset: "ISO_IR 999", patientName: Self.latin1Name)
        let m = try DicomReader.metadata(path: path)
        #expect(m.patientName.map { Array($0.unicodeScalars.map { UInt8($0.value) }) } == Array(Self.latin1Name))
        let note = try #require(m.characterSetNote)
        #expect(note.contains("'ISO_IR 999'") && note.contains("kept as received"), "\(note)")
        #expect(!note.contains("rard"), "the note names no patient data: \(note)")
    }

    @Test("bytes outside ASCII without a Specific Character Set, or invalid in the declared one, are flagged")
    func undeclaredAndInvalid() throws {
        let dir = try TemporaryDirectory()
        let undeclared = try DicomReader.metadata(path: try Self.file(in: dir, "none", charset: nil, patientName: Self.latin1Name))
        #expect(undeclared.characterSetNote?.contains("declares no Specific Character Set") == true, "\(undeclared.characterSetNote ?? "nil")")
        // GB18030 cut inside a four-byte character.
        let invalid = try DicomReader.metadata(path: try Self.file(in: dir, "cut", charset: "GB18030", patientName: Self.hex("57616E675E8139")))
        #expect(invalid.characterSetNote?.contains("not valid in Specific Character Set (0008,0005) 'GB18030'") == true,
                "\(invalid.characterSetNote ?? "nil")")
        #expect(invalid.patientName?.hasPrefix("Wang^") == true)
        // Japanese with an escape sequence for a set it does not declare or know.
        let foreign = try DicomReader.metadata(path: try Self.file(in: dir, "foreign", charset: "\\ISO 2022 IR 87", patientName: Self.hex("41411B2D4141")))
        #expect(foreign.characterSetNote != nil)
        // Plain ASCII needs no character set and is not flagged.
        let ascii = try DicomReader.metadata(path: try Self.file(in: dir, "ascii", charset: nil, patientName: Data("Doe^John".utf8)))
        #expect(ascii.patientName == "Doe^John" && ascii.characterSetNote == nil)
    }
}
