import BoneTriage
import Foundation
import Testing

/// The result objects as DICOM: a Secondary Capture and a Comprehensive SR written from a study's
/// radiograph, read back with DicomReader and DCMTK's dcmdump and dsrdump.
@Suite("DICOM result objects (SC, SR)", .enabled(if: ResultFixtures.toolsAvailable, "skipped: needs DCMTK's dcmdump and dsrdump (Debian package dcmtk)"))
struct DicomResultWriterTests {
    let writer = DicomResultWriter()

    @Test("a Secondary Capture carries the picture, the SC modules and the study of its template")
    func secondaryCapture() throws {
        let dir = try TemporaryDirectory()
        let template = try ResultFixtures.template(in: dir)
        if !template.real { print("note: ../shared is absent, so a self-made radiograph stands in for the real one") }
        let capture = try ResultFixtures.capture(template: template.path)
        let path = dir.path("sc.dcm")
        try writer.writeCapture(capture, to: path)

        let meta = try DicomReader.metadata(path: path)
        let source = try DicomReader.metadata(path: template.path)
        #expect(meta.sopClassUID == "1.2.840.10008.5.1.4.1.1.7")
        #expect(meta.transferSyntaxUID == "1.2.840.10008.1.2.1" && meta.hasFileMeta)
        #expect(meta.studyInstanceUID == source.studyInstanceUID)
        #expect(meta.seriesInstanceUID == capture.placement.seriesInstanceUID && meta.sopInstanceUID == capture.placement.sopInstanceUID)
        #expect(meta.seriesNumber == 9901 && meta.instanceNumber == 1)
        #expect(meta.modality == "OT" && meta.seriesDescription == "BoneTriage heatmaps (triage aid)")
        #expect(meta.patientName == source.patientName && meta.patientID == source.patientID)
        #expect(meta.accessionNumber == source.accessionNumber && meta.studyDate == source.studyDate && meta.studyTime == source.studyTime)
        #expect(meta.rows == 48 && meta.columns == 64 && meta.photometricInterpretation == "RGB" && meta.bitsAllocated == 8)

        let rendered = try DicomReader.render(path: path)
        let frame = try #require(rendered.frames.first)
        #expect(frame.width == 64 && frame.height == 48 && frame.channels == 3)
        #expect(frame.pixels == capture.picture.pixels, "the pixels read back differ from the picture written")

        let v = { (tag: String) in try ResultFixtures.value(path, tag) }
        #expect(try v("0028,0006") == "0")  // Planar Configuration
        #expect(try v("0028,0002") == "3")
        #expect(try v("0028,0301") == "YES")
        #expect(try v("0008,0064") == "WSD")
        #expect(try v("0008,0008") == "DERIVED\\SECONDARY")
        #expect(try v("0008,0070") == "BoneTriage" && v("0018,1016") == "BoneTriage")
        #expect(try v("0018,1019") == BoneTriageVersion.number && v("0018,1020") == BoneTriageVersion.number)
        #expect(try v("0008,2111")?.contains("heatmap") == true)
        #expect(try ResultFixtures.values(path, "0008,1155") == [capture.source.sopInstanceUID])  // Source Image Sequence
        #expect(try ResultFixtures.values(path, "0008,1150") == [capture.source.sopClassUID])
        #expect(try v("0008,0023")?.count == 8 && v("0008,0033")?.count == 6)  // Content Date, Time
        #expect(try v("0008,0012") == v("0008,0023"))  // Instance Creation Date
        #expect(try v("0002,0010") == "LittleEndianExplicit" || v("0002,0010") == "1.2.840.10008.1.2.1")
        // Type 2 attributes present even when empty.
        for tag in ["0010,0010", "0010,0020", "0010,0030", "0010,0040", "0008,0020", "0008,0030", "0008,0090", "0020,0010", "0008,0050", "0020,0020"] {
            #expect(try !ResultFixtures.run("dcmdump", ["-q", "+P", tag, path]).output.isEmpty, "\(tag) is missing")
        }
        let dump = try ResultFixtures.run("dcmdump", ["-q", "-dc", path])
        #expect(dump.status == 0 && dump.errors.isEmpty, "\(dump.errors)")
    }

    @Test("text that needs it is written in UTF-8 with Specific Character Set ISO_IR 192; plain ASCII needs none")
    func characterSet() throws {
        let dir = try TemporaryDirectory()
        let latin = try ResultFixtures.selfMadeRadiograph(in: dir)
        let sc = dir.path("sc.dcm")
        try writer.writeCapture(try ResultFixtures.capture(template: latin), to: sc)
        #expect(try ResultFixtures.value(sc, "0008,0005") == "ISO_IR 192")
        #expect(try DicomReader.metadata(path: sc).patientName == "Müller^Jörg")
        let sr = dir.path("sr.dcm")
        try writer.writeReport(try ResultFixtures.report(template: latin), to: sr)
        #expect(try ResultFixtures.value(sr, "0008,0005") == "ISO_IR 192")
        #expect(try DicomReader.metadata(path: sr).patientName == "Müller^Jörg")

        // An ASCII template: no character set, unless a reviewer's name needs one.
        let ascii = dir.path("ascii.dcm")
        try RadiographFactory.make(at: ascii, study: "1.2.826.0.1.3680043.10.13.2", seed: 3)
        let plain = dir.path("plain.dcm")
        try writer.writeReport(try ResultFixtures.report(template: ascii), to: plain)
        #expect(try ResultFixtures.value(plain, "0008,0005") == nil)
        let review = ReportedReview(reviewer: "jdoe", statedReviewer: "Dr. Zoë Ångström", action: .override, label: .normal,
                                    reviewedAt: Date(timeIntervalSince1970: 1_796_100_000), note: nil)
        let reviewed = dir.path("reviewed.dcm")
        try writer.writeReport(try ResultFixtures.report(template: ascii, review: review), to: reviewed)
        #expect(try ResultFixtures.value(reviewed, "0008,0005") == "ISO_IR 192")
        let dump = try ResultFixtures.run("dsrdump", ["+Pl", "+Pu", "+Pc", reviewed])
        // DCMTK 3.6.7's VR checker cannot check non-ASCII UTF-8 values in the tree, and dsrdump says so
        // about itself; it must say nothing else.
        let limitation = "W: The VR checker does not support this Specific Character Set: ISO_IR 192"
        let otherErrors = dump.errors.split(separator: "\n").filter { $0 != limitation }
        #expect(dump.status == 0 && otherErrors.isEmpty, "\(dump.errors)")
        #expect(dump.output.contains("Zoë Ångström"), "\(dump.output)")
    }

    @Test("a Comprehensive SR holds the verdict, probabilities, threshold, model, image references and the disclaimer; dsrdump and dcmsr accept it")
    func structuredReport() throws {
        let dir = try TemporaryDirectory()
        let template = try ResultFixtures.template(in: dir)
        var report = try ResultFixtures.report(template: template.path)
        report.operatingPoint = "site-calibrated for sensitivity 0.90: sensitivity 0.91 (95% CI 0.85-0.95), specificity 0.72 on 240 studies, set 2026-11-30"
        let path = dir.path("sr.dcm")
        try writer.writeReport(report, to: path)

        let dump = try ResultFixtures.run("dsrdump", ["+Pl", "+Pu", "+Pc", path])
        #expect(dump.status == 0, "dsrdump failed: \(dump.errors)")
        #expect(dump.errors.isEmpty, "dsrdump warned: \(dump.errors)")
        #expect(DicomResultWriter.check(reportAt: path) == nil)
        let text = dump.output
        for expected in ["Comprehensive SR Document", "Musculoskeletal radiograph triage", "Triage verdict", "Abnormal",
                         "Study probability of abnormality", "0.873000", "Abnormality threshold", "0.420000", "mura-humerus-v1",
                         "sha256:1f2e3d4c5b6a7980", TriageDisclaimer.text, "Image probability of abnormality",
                         "JPEG 2000 codestream truncated", report.images[0].sopInstanceUID, report.images[1].sopInstanceUID,
                         "UNVERIFIED", "Operating point", "site-calibrated for sensitivity 0.90"] {
            #expect(text.contains(expected), "dsrdump's output lacks \(expected):\n\(text)")
        }
        let meta = try DicomReader.metadata(path: path)
        let source = try DicomReader.metadata(path: template.path)
        #expect(meta.sopClassUID == "1.2.840.10008.5.1.4.1.1.88.33" && meta.modality == "SR")
        #expect(meta.transferSyntaxUID == "1.2.840.10008.1.2.1")
        #expect(meta.studyInstanceUID == source.studyInstanceUID && meta.patientID == source.patientID && meta.patientName == source.patientName)
        #expect(meta.seriesInstanceUID == report.placement.seriesInstanceUID && meta.sopInstanceUID == report.placement.sopInstanceUID)
        #expect(meta.seriesDescription == DicomResultWriter.reportSeriesDescription)
        #expect(try ResultFixtures.value(path, "0040,a491") == "COMPLETE")
        #expect(try ResultFixtures.value(path, "0040,a493") == "UNVERIFIED")
        #expect(try ResultFixtures.values(path, "0008,0102").contains("99BTRG"))  // Coding Scheme Identification
        #expect(try ResultFixtures.value(path, "0008,0115") == TriageReportCode.privateSchemeName)
        // Current Requested Procedure Evidence lists both images; no predecessor.
        #expect(try ResultFixtures.run("dcmdump", ["-q", "+P", "0040,a375", path]).output.contains("SQ"))
        #expect(try ResultFixtures.run("dcmdump", ["-q", "+P", "0040,a360", path]).output.isEmpty)
    }

    @Test("a review's SR is VERIFIED by the reviewer, carries the label and references the report it replaces")
    func reviewedReport() throws {
        let dir = try TemporaryDirectory()
        let template = try ResultFixtures.template(in: dir)
        let first = try ResultFixtures.report(template: template.path)
        let firstPath = dir.path("first.dcm")
        try writer.writeReport(first, to: firstPath)
        let review = ReportedReview(reviewer: "jdoe", statedReviewer: "Doe^Jane", action: .override, label: .normal,
                                    reviewedAt: Date(timeIntervalSince1970: 1_796_100_000), note: "fracture line is a nutrient canal")
        let predecessor = ReportedObject(sopClassUID: ResultKind.structuredReport.sopClassUID, sopInstanceUID: first.placement.sopInstanceUID,
                                         seriesInstanceUID: first.placement.seriesInstanceUID)
        var second = try ResultFixtures.report(template: template.path, review: review, predecessor: predecessor)
        second.placement.seriesInstanceUID = first.placement.seriesInstanceUID
        second.placement.instanceNumber = 2
        let path = dir.path("second.dcm")
        try writer.writeReport(second, to: path)

        let dump = try ResultFixtures.run("dsrdump", ["+Pl", "+Pu", "+Pc", path])
        #expect(dump.status == 0 && dump.errors.isEmpty, "dsrdump: \(dump.errors)")
        #expect(DicomResultWriter.check(reportAt: path) == nil)
        for expected in ["Radiologist review", "Radiologist label", "Normal", "Verdict overridden", "Doe^Jane", "jdoe",
                         "fracture line is a nutrient canal", "VERIFIED"] {
            #expect(dump.output.contains(expected), "dsrdump's output lacks \(expected):\n\(dump.output)")
        }
        #expect(try ResultFixtures.value(path, "0040,a493") == "VERIFIED")
        #expect(try ResultFixtures.value(path, "0040,a075") == "Doe^Jane")  // Verifying Observer Name
        #expect(try ResultFixtures.value(path, "0040,a027") == writer.verifyingOrganization)
        // The predecessor's SOP Instance UID is referenced (Predecessor Documents Sequence).
        let predecessorDump = try ResultFixtures.run("dcmdump", ["-q", "+P", "0040,a360", "+P", "0008,1155", path]).output
        #expect(predecessorDump.contains(first.placement.sopInstanceUID), "\(predecessorDump)")
        #expect(try ResultFixtures.value(path, "0020,0013") == "2")
    }

    @Test("a template from another study, a bad UID or a missing series is a clear error, and no file is left")
    func refusals() throws {
        let dir = try TemporaryDirectory()
        let template = try ResultFixtures.template(in: dir)
        var report = try ResultFixtures.report(template: template.path)
        report.placement.studyInstanceUID = "1.2.3.4.5"
        let path = dir.path("sr.dcm")
        let wrongStudy = errorText { try writer.writeReport(report, to: path) }
        #expect(wrongStudy?.contains("belongs to study") == true && wrongStudy?.contains("1.2.3.4.5") == true, "\(String(describing: wrongStudy))")
        var capture = try ResultFixtures.capture(template: template.path)
        capture.placement.sopInstanceUID = "1.2.bad.uid"
        let badUID = errorText { try writer.writeCapture(capture, to: path) }
        #expect(badUID?.contains("not a valid UID") == true, "\(String(describing: badUID))")
        var orphan = try ResultFixtures.report(template: template.path)
        orphan.images[0].seriesInstanceUID = nil
        let noSeries = errorText { try writer.writeReport(orphan, to: path) }
        #expect(noSeries?.contains("no Series Instance UID") == true, "\(String(describing: noSeries))")
        var missing = try ResultFixtures.capture(template: template.path)
        missing.placement.studyTemplatePath = dir.path("nowhere.dcm")
        let noTemplate = errorText { try writer.writeCapture(missing, to: path) }
        #expect(noTemplate?.contains("could not be read") == true, "\(String(describing: noTemplate))")
        #expect(!FileManager.default.fileExists(atPath: path) && !FileManager.default.fileExists(atPath: path + ".partial"))
    }

    @Test("dcmsr's check finds a broken SR: a TEXT item without its value, a NUM without its measurement")
    func checkFindsFaults() throws {
        let dir = try TemporaryDirectory()
        let template = try ResultFixtures.template(in: dir)
        let path = dir.path("sr.dcm")
        try writer.writeReport(try ResultFixtures.report(template: template.path), to: path)
        #expect(DicomResultWriter.check(reportAt: path) == nil)
        // The first content item is the disclaimer (TEXT): remove its Text Value.
        try DicomTools.run("dcmodify", ["-nb", "-e", "(0040,a730)[0].(0040,a160)", path])
        let problems = try #require(DicomResultWriter.check(reportAt: path), "the check accepted an SR whose TEXT item has no value")
        #expect(!problems.isEmpty)
        let dump = try ResultFixtures.run("dsrdump", ["+Pl", "+Pu", "+Pc", path])
        #expect(dump.status != 0 || !dump.errors.isEmpty, "dsrdump accepted it too")
    }
}

/// The description of the error `body` throws, or nil when it throws none.
func errorText(_ body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch {
        return "\(error)"
    }
}
