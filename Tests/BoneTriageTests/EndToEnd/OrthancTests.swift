import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Orthanc (Debian package `orthanc`) as the sending PACS: a study uploaded through its REST API and
/// C-STOREd by Orthanc to the daemon.
@Suite("daemon with Orthanc as the PACS", .serialized,
       .enabled(if: Executable.url != nil && DaemonHarness.toolsAvailable && OrthancPACS.available,
                "skipped: needs Orthanc (/usr/sbin/Orthanc, Debian package orthanc), curl and DCMTK; `make test` installs them"))
struct OrthancTests {
    /// Orthanc's answer as text.
    func curl(_ orthanc: OrthancPACS, _ arguments: [String]) throws -> String {
        String(decoding: try orthanc.curl(arguments), as: UTF8.self)
    }

    @Test("Orthanc C-STOREs an uploaded study to the daemon, which triages it")
    func orthancSendsAStudy() throws {
        let daemon = try DaemonHarness(quietPeriod: 1)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let orthanc = try OrthancPACS(callingPort: daemon.port)
        defer { orthanc.stop() }
        let dir = orthanc.dir, base = orthanc.base

        let study = "1.2.826.0.1.3680043.10.9.1"
        var parent: String?
        for i in 0..<3 {
            let path = dir.path("o\(i).dcm")
            try RadiographFactory.make(at: path, study: study, seed: 40 + i)
            if i == 2 { try DicomTools.run("dcmcjpeg", ["+e1", path, path + ".jpeg"]) }
            parent = try orthanc.upload(i == 2 ? path + ".jpeg" : path).study
        }
        let orthancStudy = try #require(parent)
        let stored = try curl(orthanc, ["-X", "POST", "--data-binary", "\"\(orthancStudy)\"", base + "/modalities/bt/store"])
        #expect(stored.contains("\"FailedInstancesCount\" : 0") || stored.contains("\"InstancesCount\" : 3"), "\(stored)")

        let triaged = try daemon.waitForTriage([study], timeout: 60)
        let row = try #require(triaged[study])
        #expect(row["state"] as? String == "triaged" && row["images"] as? Int == 3, "\(row)")
        #expect(row["calling_ae_title"] as? String == "ORTHANC")
        #expect(daemon.log.contains("association accepted: 'ORTHANC' from 127.0.0.1"))
    }

    @Test("Orthanc pushes a study with a CR and its X-Ray Radiation Dose SR: every instance arrives, the CR is triaged, the SR recorded as not applicable")
    func orthancSendsAStudyWithADoseReport() throws {
        let daemon = try DaemonHarness(quietPeriod: 1)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let orthanc = try OrthancPACS(callingPort: daemon.port)
        defer { orthanc.stop() }
        let study = "1.2.826.0.1.3680043.10.9.2"
        let cr = orthanc.dir.path("cr.dcm"), sr = orthanc.dir.path("dose.dcm")
        try RadiographFactory.make(at: cr, study: study, seed: 50)
        try DoseReportFactory.make(at: sr, study: study, sopInstanceUID: study + ".9.1")
        var parents: Set<String> = []
        for path in [cr, sr] {
            parents.insert(try orthanc.upload(path).study)
        }
        #expect(parents.count == 1, "Orthanc filed the CR and the SR in different studies")
        let orthancStudy = try #require(parents.first)
        let stored = try curl(orthanc, ["-X", "POST", "--data-binary", "\"\(orthancStudy)\"", orthanc.base + "/modalities/bt/store"])
        let result = try #require(try JSONSerialization.jsonObject(with: Data(stored.utf8)) as? [String: Any], "Orthanc answered: \(stored)\n\(daemon.log)")
        #expect(result["FailedInstancesCount"] as? Int == 0 && result["InstancesCount"] as? Int == 2, "\(stored)")

        let triaged = try daemon.waitForTriage([study], timeout: 60)
        let row = try #require(triaged[study])
        #expect(row["state"] as? String == "triaged" && row["images"] as? Int == 2 && row["eligible_images"] as? Int == 1, "\(row)")
        let images = try daemon.show(study).images
        let report = try #require(images.first { $0["sop_instance_uid"] as? String == study + ".9.1" }, "\(images)")
        #expect(report["eligible"] as? Bool == false && report["probability"] is NSNull, "\(report)")
        let radiograph = try #require(images.first { $0["sop_instance_uid"] as? String != study + ".9.1" })
        #expect(radiograph["probability"] as? Double != nil, "\(radiograph)")
    }
}
