import BoneTriage
import Foundation
import Logging
import Testing

@Suite("Storage retention: the spool and the archive cannot fill the disk")
struct StorageRetentionTests {
    static func study(_ n: Int, daysAgo: Double, now: Date, files: Int = 2) -> FinishedStudyFiles {
        FinishedStudyFiles(studyInstanceUID: "1.2.3.\(n)", shortID: "s\(n)", finishedAt: now.addingTimeInterval(-daysAgo * 86_400),
                           paths: (0..<files).map { "/spool/1.2.3.\(n)/\($0).dcm" })
    }

    @Test("past the age every finished study goes; over the size the oldest go first, until the folder is within its limit")
    func plan() {
        let now = Date(timeIntervalSince1970: 1_795_000_000)
        let finished = [Self.study(1, daysAgo: 40, now: now), Self.study(2, daysAgo: 31, now: now),
                        Self.study(3, daysAgo: 5, now: now), Self.study(4, daysAgo: 2, now: now), Self.study(5, daysAgo: 1, now: now)]
        let size: (String) -> UInt64 = { _ in 1000 }  // every file 1000 bytes: 2000 per study
        // Age only: the two older than 30 days.
        let byAge = StorageRetention.plan(finished: finished, usedBytes: 10_000, limitBytes: nil, maximumAge: 30 * 86_400, now: now, sizes: size)
        #expect(byAge.map(\.study.shortID) == ["s1", "s2"])
        #expect(byAge.allSatisfy { $0.reason == .age })
        // Size only: 10,000 used, limit 5,000: s1, s2, s3 go (10,000 -> 4,000).
        let bySize = StorageRetention.plan(finished: finished, usedBytes: 10_000, limitBytes: 5_000, maximumAge: nil, now: now, sizes: size)
        #expect(bySize.map(\.study.shortID) == ["s1", "s2", "s3"])
        #expect(bySize.allSatisfy { $0.reason == .size })
        // Both: the aged ones for their age, then by size.
        let both = StorageRetention.plan(finished: finished, usedBytes: 10_000, limitBytes: 3_000, maximumAge: 30 * 86_400, now: now, sizes: size)
        #expect(both.map(\.reason) == [.age, .age, .size, .size])
        // Within the limit and young: nothing.
        #expect(StorageRetention.plan(finished: finished, usedBytes: 1_000, limitBytes: 5_000, maximumAge: 60 * 86_400, now: now, sizes: size).isEmpty)
        // Over the limit with studies that are not finished taking the room: only finished ones go, all of them.
        let all = StorageRetention.plan(finished: finished, usedBytes: 1_000_000, limitBytes: 5_000, maximumAge: nil, now: now, sizes: size)
        #expect(all.count == finished.count)
    }

    @Test("sizes: shares, units, no limit; and mistakes are named")
    func limits() throws {
        #expect(StorageLimit("25%") == .percentOfFileSystem(25))
        #expect(StorageLimit("40 GB") == .bytes(40_000_000_000))
        #expect(StorageLimit("500 MiB") == .bytes(500 << 20))
        #expect(StorageLimit("0") == StorageLimit.none)
        #expect(StorageLimit("25%")?.bytes(ofFileSystem: 1000) == 250)
        for bad in ["", "25", "150%", "-3 GB", "lots", "12 parsecs"] { #expect(StorageLimit(bad) == nil, "\(bad)") }
        let c = try BoneTriageConfiguration.parse("[storage]\nretention_days = 7\nspool_limit = \"10 GB\"\narchive_limit = \"0\"\nretention_interval_seconds = 60\n",
                                                  path: "c.toml")
        #expect(c.retentionDays == 7 && c.spoolLimit == .bytes(10_000_000_000) && c.archiveLimit == StorageLimit.none && c.retentionInterval == 60)
        do {
            _ = try BoneTriageConfiguration.parse("[storage]\nspool_limit = \"half\"\nretention_days = -1\n", path: "c.toml")
            Issue.record("a bad retention was accepted")
        } catch let error as ConfigurationError {
            #expect(error.problems.count == 2)
            #expect(error.description.contains(#"[storage] spool_limit = "half": must be a size in quotes"#), "\(error)")
            #expect(error.description.contains("[storage] retention_days"), "\(error)")
        }
    }

    @Test("a pass removes the planned files and their emptied study folders, leaves everything else, and records it",
          arguments: WorklistBackend.all)
    func pass(_ backend: WorklistBackend) throws {
        let dir = try TemporaryDirectory()
        let spool = dir.path("spool")
        let store = try backend.open(dir.url.path)
        let old = "1.2.826.0.1.3680043.8.498.20001", young = "1.2.826.0.1.3680043.8.498.20002", receiving = "1.2.826.0.1.3680043.8.498.20003"
        for (uid, offset) in [(old, -40.0 * 86_400), (young, -86_400.0), (receiving, -50.0 * 86_400)] {
            try FileManager.default.createDirectory(atPath: "\(spool)/\(uid)", withIntermediateDirectories: true)
            var arrival = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: uid + ".1", filePath: "\(spool)/\(uid)/1.dcm",
                                          receivedAt: Date().addingTimeInterval(offset), eligible: false, source: .cstore)
            arrival.modality = "CT"
            _ = try store.recordArrival(arrival)
            try Data(repeating: 7, count: 4096).write(to: URL(fileURLWithPath: "\(spool)/\(uid)/1.dcm"))
            if uid != receiving { try store.markNotApplicable(studyInstanceUID: uid, reason: "CT") }
        }
        let retention = StorageRetention(folder: spool, name: "spool", limit: .none, retentionDays: 30)
        let removed = retention.run(worklist: store, logger: Logger(label: "test"))
        #expect(removed.map(\.study.studyInstanceUID) == [old])
        #expect(!FileManager.default.fileExists(atPath: "\(spool)/\(old)"), "the emptied study folder goes too")
        #expect(FileManager.default.fileExists(atPath: "\(spool)/\(young)/1.dcm"))
        #expect(FileManager.default.fileExists(atPath: "\(spool)/\(receiving)/1.dcm"), "a study still receiving is never touched, however old")
        #expect(try store.finishedStudyFiles(under: spool).map(\.studyInstanceUID) == [young])
        // A size limit smaller than anything: the young finished study goes, the receiving one stays.
        let tight = StorageRetention(folder: spool, name: "spool", limit: .bytes(1), retentionDays: 0)
        #expect(tight.run(worklist: store, logger: Logger(label: "test")).map(\.reason) == [.size])
        #expect(!FileManager.default.fileExists(atPath: "\(spool)/\(young)/1.dcm"))
        #expect(FileManager.default.fileExists(atPath: "\(spool)/\(receiving)/1.dcm"))
    }
}
