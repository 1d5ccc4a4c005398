import BoneTriage
import Foundation
import Testing

/// Orthanc as the destination PACS: the source radiograph is uploaded, then the SR and SC made from it
/// are sent with the C-STORE SCU and read back through Orthanc's REST API.
@Suite("result objects in Orthanc as the destination PACS", .serialized,
       .enabled(if: OrthancPACS.available && ResultFixtures.toolsAvailable, Comment(rawValue: OrthancPACS.unavailable)))
struct ResultsInOrthancTests {
    @Test("the SR and SC are filed in the source's study: same Study Instance UID, SR content readable, SC size")
    func filedWithTheStudy() throws {
        let dir = try TemporaryDirectory()
        let template = try ResultFixtures.template(in: dir)
        let orthanc = try OrthancPACS()
        defer { orthanc.stop() }
        let uploaded = try orthanc.upload(template.path)
        let studyUID = try #require(try DicomReader.metadata(path: template.path).studyInstanceUID)

        let writer = DicomResultWriter()
        let report = try ResultFixtures.report(template: template.path)
        let capture = try ResultFixtures.capture(template: template.path, picture: ResultFixtures.picture(width: 320, height: 200))
        let sr = dir.path("sr.dcm"), sc = dir.path("sc.dcm")
        try writer.writeReport(report, to: sr)
        try writer.writeCapture(capture, to: sc)
        let outcomes = StorageSCU().send([sr, sc], to: orthanc.destination())
        #expect(outcomes == [.stored(warning: nil), .stored(warning: nil)], "\(outcomes)\n\(orthanc.log)")

        #expect(try orthanc.study(uid: studyUID) == uploaded.study, "Orthanc filed the results in another study")
        let instances = try orthanc.instances(ofStudy: uploaded.study)
        #expect(instances.count == 3, "\(instances.count) instances: \(instances.map { $0["ID"] ?? "?" })")
        var found: [String: [String: Any]] = [:]
        for instance in instances {
            let id = try #require(instance["ID"] as? String)
            let tags = try orthanc.tags(instance: id)
            #expect(tags["StudyInstanceUID"] as? String == studyUID)
            if let uid = tags["SOPInstanceUID"] as? String { found[uid] = tags.merging(["_id": id]) { a, _ in a } }
        }
        let srTags = try #require(found[report.placement.sopInstanceUID], "the SR is not in the study")
        #expect(srTags["Modality"] as? String == "SR" && srTags["SOPClassUID"] as? String == ResultKind.structuredReport.sopClassUID)
        #expect(srTags["SeriesInstanceUID"] as? String == report.placement.seriesInstanceUID)
        #expect(srTags["CompletionFlag"] as? String == "COMPLETE")
        let scTags = try #require(found[capture.placement.sopInstanceUID], "the SC is not in the study")
        #expect(scTags["Modality"] as? String == "OT" && scTags["Rows"] as? String == "200" && scTags["Columns"] as? String == "320", "\(scTags)")
        #expect(scTags["BurnedInAnnotation"] as? String == "YES")

        // The SR's content as Orthanc holds it.
        let back = dir.path("back-sr.dcm")
        try orthanc.file(instance: try #require(srTags["_id"] as? String), to: back)
        let dump = try ResultFixtures.run("dsrdump", ["+Pl", "+Pu", "+Pc", back])
        #expect(dump.status == 0 && dump.errors.isEmpty, "\(dump.errors)")
        for expected in ["Triage verdict", "Abnormal", "0.873000", "0.420000", TriageDisclaimer.text, report.images[0].sopInstanceUID] {
            #expect(dump.output.contains(expected), "the SR from Orthanc lacks \(expected)")
        }
        #expect(DicomResultWriter.check(reportAt: back) == nil)
    }

    @Test("a stopped PACS means retry later; started again on the same ports and storage, it takes the object and still holds the study")
    func stoppedAndStartedAgain() throws {
        let dir = try TemporaryDirectory()
        let template = dir.path("template.dcm")
        try RadiographFactory.make(at: template, study: "1.2.826.0.1.3680043.10.13.4", seed: 9)
        let orthanc = try OrthancPACS()
        defer { orthanc.stop() }
        let uploaded = try orthanc.upload(template)
        let sc = dir.path("sc.dcm")
        try DicomResultWriter().writeCapture(try ResultFixtures.capture(template: template), to: sc)

        orthanc.stop()
        let down = StorageSCU().send([sc], to: orthanc.destination(timeoutSeconds: 5))
        guard case .retryLater = try #require(down.first) else { Issue.record("expected retryLater while Orthanc is down, got \(down)"); return }

        try orthanc.start()
        #expect(StorageSCU().send([sc], to: orthanc.destination()) == [.stored(warning: nil)])
        let instances = try orthanc.instances(ofStudyUID: "1.2.826.0.1.3680043.10.13.4")
        #expect(instances.count == 2, "\(instances)")
        #expect(try orthanc.study(uid: "1.2.826.0.1.3680043.10.13.4") == uploaded.study)
    }
}
