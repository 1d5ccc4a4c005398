import BoneTriage
import Foundation
import Logging
import Testing

/// What the intake keeps of each image so that `show` can point to it in the PACS or the drop folder.
@Suite("Intake: image details and MURA drop-folder studies")
struct ImageDetailsIntakeTests {
    static let study = "1.2.826.0.1.3680043.8.498.1515"

    static func radiograph(_ sop: String) -> DicomWriter {
        var w = DicomWriter.radiograph(study: study, sop: sop, rows: 4, columns: 4)
        w.nativePixels(bytes: 16)
        return w
    }

    @Test("series number, instance number, view position and laterality (Image Laterality, else Laterality) are kept when the file has them")
    func dicomDetails() throws {
        let setup = try IntakeHarness()
        var first = Self.radiograph(Self.study + ".1")
        first.set(0x0020, 0x0011, "IS", "3")
        first.set(0x0020, 0x0013, "IS", "12")
        first.set(0x0018, 0x5101, "CS", "PA")
        first.set(0x0020, 0x0062, "CS", "L")
        var second = Self.radiograph(Self.study + ".2")
        second.set(0x0020, 0x0011, "IS", " 4")
        second.set(0x0020, 0x0060, "CS", "R")
        let third = Self.radiograph(Self.study + ".3")
        for w in [first, second, third] {
            #expect(try setup.receive(w) == .success)
        }
        let images = try setup.worklist.images(ofStudy: Self.study)
        #expect(images.map(\.seriesNumber) == [3, 4, nil])
        #expect(images.map(\.instanceNumber) == [12, nil, nil])
        #expect(images.map(\.viewPosition) == ["PA", nil, nil])
        #expect(images.map(\.laterality) == ["L", "R", nil])
        #expect(images.allSatisfy { $0.fileName == nil }, "a C-STORE instance has no file name of its own")
    }

    @Test("a MURA-layout PNG: its patient folder is the patient ID, its file name is kept, its part comes from XR_<PART>")
    func muraLayout() throws {
        let setup = try IntakeHarness()
        let drop = setup.dir.path("drop")
        let folder = drop + "/patients-2026/XR_WRIST/patient11185/study1_positive"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try PNGReader.write(testPattern(width: 40, height: 30), to: folder + "/image1.png")
        guard case let .recorded(notice) = setup.intake.ingest(dropped: folder + "/image1.png", dropRoot: drop) else {
            Issue.record("the PNG was not recorded")
            return
        }
        let s = try setup.worklist.study(studyInstanceUID: notice.studyInstanceUID)
        #expect(s.patientID == "patient11185" && s.bodyPart == "WRIST" && s.source == .dropFolder)
        let images = try setup.worklist.images(ofStudy: notice.studyInstanceUID)
        #expect(images.map(\.fileName) == ["image1.png"])
        #expect(images.first?.filePath.hasPrefix(setup.dir.path("spool")) == true, "the file itself is in the spool")
    }

    @Test("a DICOM file dropped in the drop folder keeps its file name beside its series and instance numbers")
    func droppedDicom() throws {
        let setup = try IntakeHarness()
        let drop = setup.dir.path("drop")
        try FileManager.default.createDirectory(atPath: drop + "/ward3", withIntermediateDirectories: true)
        var w = Self.radiograph(Self.study + ".9")
        w.set(0x0020, 0x0011, "IS", "1")
        w.set(0x0020, 0x0013, "IS", "2")
        try w.write(to: drop + "/ward3/IMG0002.dcm")
        guard case .recorded = setup.intake.ingest(dropped: drop + "/ward3/IMG0002.dcm", dropRoot: drop) else {
            Issue.record("the DICOM file was not recorded")
            return
        }
        let image = try #require(try setup.worklist.images(ofStudy: Self.study).first)
        #expect(image.fileName == "IMG0002.dcm" && image.seriesNumber == 1 && image.instanceNumber == 2)
    }
}
