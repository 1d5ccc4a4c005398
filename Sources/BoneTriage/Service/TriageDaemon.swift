import CSystem
import Dispatch
import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `bonetriage serve`: the one place that wires the receiver, the drop-folder watcher, the study
/// assembler and the triage workers together, and runs them until SIGTERM.
///
/// Each part runs on its own thread because each blocks in C (DCMTK's accept loop, inotify's poll,
/// BLAS): nothing here parks Swift's cooperative pool. Signals arrive on a dispatch queue: SIGTERM and
/// SIGINT stop (associations and the study being triaged finish; queued studies stay in the worklist
/// and resume at the next start), SIGHUP reloads the model and the allowed callers.
public final class TriageDaemon: @unchecked Sendable {
    public let configurationPath: String?
    let configuration: BoneTriageConfiguration
    /// The writer, sender, picture maker and heatmap hook results are made and sent with; nil: none.
    let results: ResultsComponents?
    let decoderExecutable: String
    let logger: Logger
    let notifier = SystemdNotifier()

    private let stopRequested = Mutex(false)
    private let stopSignal = DispatchSemaphore(value: 0)
    private let received = Atomic<Int>(0)
    private let triaged = Atomic<Int>(0)
    private let failed = Atomic<Int>(0)
    /// The settings in force: those read at start, with what reloads have applied since.
    private let running: Mutex<BoneTriageConfiguration>
    /// Studies that found no model loaded; queued again when a reload brings one.
    private let waitingForModel = Mutex<Set<String>>([])
    /// Where each drop-folder study waiting for triage was dropped (its folder under the drop folder),
    /// for the log lines that name a study's source; forgotten once the study is triaged.
    private let dropSources = Mutex<[String: String]>([:])

    /// `decoderExecutable`: the `bonetriage` binary for the isolated decoder (`[triage] isolate_decoder`);
    /// by default this process's own.
    public init(configuration: BoneTriageConfiguration, configurationPath: String?, logger: Logger,
                decoderExecutable: String = "/proc/self/exe", results: ResultsComponents? = nil) {
        self.results = results
        self.decoderExecutable = decoderExecutable
        self.configuration = configuration
        running = Mutex(configuration)
        self.configurationPath = configurationPath
        self.logger = logger
    }

    /// Runs until stopped; throws only when the daemon cannot start at all (the message says what to fix).
    public func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let c = configuration
        // Large blocks mapped on their own, so that a reload leaves next to nothing of the old model and engine resident.
        // Not when this process decodes the images itself: there, reusing the last image's heap pages saves a
        // large image's page faults (what the decoder processes keep with bt_memory_reuse_freed).
        if c.isolateDecoder && bt_memory_return_large_blocks() == 0 {
            logger.debug("glibc refused the fixed mmap threshold: a reload may leave some of the old model resident")
        }
        let spool = Spool(root: c.spoolFolder)
        let quarantine = Quarantine(root: c.quarantineFolder)
        let cleared = try spool.prepare()
        if cleared > 0 { logger.info("cleared \(cleared) partly received file(s) left by the previous run (never acknowledged)") }
        try quarantine.prepare()
        if c.afterTriage == .archive { try FileSystem.makeFolder(c.archiveFolder) }
        if let drop = c.dropFolder { try FileSystem.makeFolder(drop) }
        if results != nil { try FileSystem.makeFolder(c.resultsFolder) }
        guard let worklist = try openWorklist(c) else {
            logger.info("stopped before the worklist database answered")
            return
        }

        let models = ModelSlot(loadModel())
        let scheduler = TriageScheduler(quietPeriod: c.quietPeriod)
        var restored = 0
        // This node's studies: those it holds images of (in a shared worklist, the others' are theirs).
        for study in try worklist.studies(matching: { var f = WorklistFilter(); f.states = [.receiving, .pending]; return f }()) {
            let held = try worklist.images(ofStudy: study.studyInstanceUID).filter { $0.isHeld(by: worklist.node) }
            guard !held.isEmpty else { continue }
            scheduler.restore(study: study.studyInstanceUID, instances: held.map(\.sopInstanceUID), lastArrival: study.lastReceivedAt)
            restored += 1
        }
        if restored > 0 { logger.info("\(restored) study(ies) from the previous run resume where they were") }

        let headers: any HeaderReader = c.isolateDecoder
            ? IsolatedHeaderReader(executable: decoderExecutable, timeout: min(c.decodeTimeout, IsolatedHeaderReader.maximumTimeout)) { [logger] in
                logger.warning("\($0)")
            }
            : InProcessHeaderReader()
        let intake = InstanceIntake(spool: spool, quarantine: quarantine, worklist: worklist, logger: logger,
                                    maximumPixels: UInt64(c.maximumMegapixels) << 20, headers: headers) { [self] notice in
            received.add(1, ordering: .relaxed)
            scheduler.arrived(notice)
        }
        intake.adoptUnrecordedFiles()
        if c.allowedCallers.isEmpty {
            logger.warning("no [dicom] allowed_callers: every association will be refused; add the PACS's AE title and address")
        }
        let receiver = try StorageReceiver(configuration: c, intake: intake, logger: logger)
        let watcher = try c.dropFolder.map {
            try DropFolderWatcher(root: $0, removeEmptyFoldersAfter: c.dropRemoveEmptyFoldersAfter, rescanInterval: c.dropRetryInterval, logger: logger)
        }

        let threads = DispatchGroup()
        Self.spawn("dicom-receiver", group: threads) { receiver.run() }
        if let watcher {
            Self.spawn("drop-folder", group: threads) { [self] in watch(watcher, intake: intake) }
        }
        var policy = TriagePolicy(configuration: c, decoderExecutable: decoderExecutable)
        var results = self.results
        if let given = results, given.pictures == nil, given.heatmapOverlays {
            // Rendered in a decoder process of its own, as every other decode: a file that crashes a
            // decoder costs its picture, not the daemon.
            let radiographs: any RadiographSource = c.isolateDecoder
                ? IsolatedRadiographs(executable: decoderExecutable, timeout: c.decodeTimeout) { [logger] in logger.warning("\($0)") }
                : InProcessRadiographs()
            results = given.withHeatmapOverlays(worklist: worklist, scope: policy.heatmapScope, maximumPixels: policy.maximumPixels,
                                                radiographs: radiographs)
        }
        policy.resultDestinations = results.map { $0.queueing(c.resultDestinations) } ?? []
        if results == nil && !c.resultDestinations.isEmpty {
            logger.error("[[results]] destinations are configured, but this daemon has no DICOM result writer: no result is queued or sent")
        } else if let results, results.pictures == nil, c.resultDestinations.contains(where: { $0.kinds.contains(.secondaryCapture) }) {
            logger.warning("no picture maker: result reports (SR) are queued and sent, Secondary Captures (SC) are not")
        }
        let resultsWake = DispatchSemaphore(value: 0), deliveryWake = DispatchSemaphore(value: 0)
        let heatmapClaims = HeatmapClaims()
        for n in 0..<c.workers {
            let worker = StudyTriage(worklist: worklist, models: models, policy: policy, logger: logger, heatmapClaims: heatmapClaims)
            Self.spawn("triage-\(n)", group: threads) { [self] in
                worker.prepare()
                // While no study waits: follow a model reload, then make heatmaps one image at a time.
                while let (study, queued) = scheduler.next(idleWork: {
                    worker.followModelReload()
                    return worker.makeNextHeatmap(shouldYield: { scheduler.hasStudyDue })
                }) {
                    for complete in queued {
                        let record = try? worklist.study(studyInstanceUID: complete)
                        logger.info("study complete, queued for triage", metadata: ["study": "\(Study.shortID(for: complete))",
                                                                                   "instances": "\(record.map { String($0.imageCount) } ?? "?")",
                                                                                   "source": "\(source(of: complete, record))"])
                        guard complete != study else { continue }
                        // Only the listing shows it: the study is queued in the scheduler either way.
                        do { try worklist.markPending(studyInstanceUID: complete) } catch {
                            logger.warning("a queued study could not be shown as pending: \(error)", metadata: ["study": "\(Study.shortID(for: complete))"])
                        }
                    }
                    switch worker.triage(studyInstanceUID: study, source: source(of: study, try? worklist.study(studyInstanceUID: study))) {
                    case .triaged, .notApplicable:
                        triaged.add(1, ordering: .relaxed)
                        resultsWake.signal()
                        dropSources.withLock { $0[study] = nil }
                    case .failed:
                        failed.add(1, ordering: .relaxed)
                        dropSources.withLock { $0[study] = nil }
                    case .waitingForModel: waitingForModel.withLock { _ = $0.insert(study) }
                    case .heldElsewhere, .waitingForImages, .superseded:
                        // Looked at again after a quiet period: the other node may finish, fail or never
                        // come back, and a late instance may have reached another node only.
                        scheduler.recheck(study)
                    case .alreadyDone: dropSources.withLock { $0[study] = nil }
                    }
                    scheduler.finished(study)
                }
                worker.shutDown()
            }
        }

        // Files stored while the worklist could not record them (answered 0xA701) are recorded as soon as
        // it answers again, without waiting for the sender's retry or a restart. After a lost connection
        // (a failover to a replica, a server restart), the spool is checked against the worklist too:
        // rows the old primary acknowledged but did not replicate in time are taken in again from the files.
        let recoveryWake = DispatchSemaphore(value: 0)
        let faults = worklist as? any WorklistConnectionFaults
        Self.spawn("spool-recovery", group: threads) { [self] in
            var faultsChecked = faults?.connectionFaults ?? 0
            while !isStopping && recoveryWake.wait(timeout: .now() + Self.unrecordedFilesInterval) == .timedOut {
                let seen = faults?.connectionFaults ?? 0
                guard intake.hasUnrecordedFiles || seen != faultsChecked else { continue }
                if seen != faultsChecked {
                    logger.debug("the worklist connection was lost or re-made: checking the spool against the worklist")
                }
                intake.adoptUnrecordedFiles()
                guard !intake.hasUnrecordedFiles else { continue }
                if seen == faultsChecked || resumeStudiesLeftWaiting(worklist, scheduler) { faultsChecked = seen }
            }
        }

        let retentionWake = DispatchSemaphore(value: 0)
        Self.spawn("storage-retention", group: threads) { [self] in
            let folders = [StorageRetention(folder: c.spoolFolder, name: "spool", limit: c.spoolLimit, retentionDays: c.retentionDays),
                           StorageRetention(folder: c.archiveFolder, name: "archive", limit: c.archiveLimit, retentionDays: c.retentionDays),
                           StorageRetention(folder: c.resultsFolder, name: "results", limit: .none, retentionDays: c.retentionDays)]
            repeat {
                for folder in folders where !isStopping && FileManager.default.fileExists(atPath: folder.folder) {
                    folder.run(worklist: worklist, logger: logger)
                }
            } while !isStopping && retentionWake.wait(timeout: .now() + c.retentionInterval) == .timedOut
        }

        // Results: made off the triage path, then sent; both take up where they were after a restart.
        if let results {
            let build = ResultBuildStage(worklist: worklist, components: results, folder: c.resultsFolder, afterTriage: c.afterTriage,
                                         spoolFolder: c.spoolFolder, logger: logger)
            let delivery = ResultDeliveryStage(worklist: worklist, sender: results.sender, destinations: c.resultDestinations,
                                               policy: c.delivery, logger: logger)
            Self.spawn("result-build", group: threads) { [self] in
                repeat {
                    if build.runOnce(isStopping: { self.isStopping }) > 0 { deliveryWake.signal() }
                    _ = resultsWake.wait(timeout: .now() + 1)
                } while !isStopping
            }
            Self.spawn("result-delivery", group: threads) { [self] in
                repeat {
                    delivery.runOnce(isStopping: { self.isStopping })
                    _ = deliveryWake.wait(timeout: .now() + 1)
                } while !isStopping
            }
        }

        let signals = installSignalHandlers(receiver: receiver, models: models, scheduler: scheduler)
        logger.info("listening", metadata: ["version": "\(BoneTriageVersion.number)", "node": "\(worklist.node)", "ae_title": "\(c.aeTitle)",
                                            "address": "\(c.bindAddress):\(receiver.port)",
                                            "drop_folder": "\(c.dropFolder ?? "off")", "workers": "\(c.workers)",
                                            "model": "\(models.current.model?.path ?? "none")",
                                            "decoding": "\(c.isolateDecoder ? "isolated" : "in-process")"])
        notifier.notify("READY=1\nSTATUS=" + status(receiver, scheduler, models))
        let statusFile = StatusFilePublisher(path: c.statusFile, logger: logger, node: worklist.node)
        statusFile.publish(status(receiver, scheduler, models))

        // The status file follows the counts within this tick (2 s), and is rewritten at least every 30 s.
        let watchdogInterval = ProcessInfo.processInfo.environment["WATCHDOG_USEC"].flatMap(Double.init).map { $0 / 2_000_000 }
        let tick = min(watchdogInterval ?? 2, 2)
        while stopSignal.wait(timeout: .now() + tick) == .timedOut {
            if watchdogInterval != nil { notifier.notify("WATCHDOG=1") }
            let line = status(receiver, scheduler, models)
            notifier.notify("STATUS=" + line)
            statusFile.publish(line)
        }

        logger.info("stopping: no new associations or dropped files; running associations and triages finish")
        notifier.notify("STOPPING=1")
        receiver.stop()
        scheduler.stop()
        retentionWake.signal()
        recoveryWake.signal()
        resultsWake.signal()
        deliveryWake.signal()
        threads.wait()
        headers.close()
        signals.forEach { $0.cancel() }
        statusFile.remove()
        logger.info("stopped", metadata: ["received": "\(received.load(ordering: .relaxed))", "triaged": "\(triaged.load(ordering: .relaxed))"])
    }

    /// Seconds between two tries of a worklist database that does not answer at start.
    public static let worklistRetryInterval: Double = 5

    /// The worklist, once it answers: a PostgreSQL server that cannot be reached at start is waited for
    /// (said once in the log, and in systemd's status), since the daemon can do nothing safe without it;
    /// nil when the daemon is stopped meanwhile. Any other problem (a newer schema, a file that cannot be
    /// written) ends the start with its message.
    private func openWorklist(_ c: BoneTriageConfiguration) throws -> (any WorklistStore)? {
        var waitingSince: Date?
        while true {
            do {
                let worklist = try Worklist.open(configuration: c, role: .daemon)
                if let since = waitingSince {
                    logger.info("the worklist database answers after \(Int(Date().timeIntervalSince(since))) s: starting")
                }
                return worklist
            } catch let error as WorklistError {
                guard case .databaseUnreachable = error else { throw error }
                if waitingSince == nil {
                    logger.error("\(error); the daemon waits for it (tried every \(Int(Self.worklistRetryInterval)) s) and receives nothing until it answers")
                    waitingSince = Date()
                }
                notifier.notify("STATUS=waiting for the worklist database \(c.worklistLocation)\nEXTEND_TIMEOUT_USEC=\(Int(Self.worklistRetryInterval * 3_000_000))")
                if stopSignal.wait(timeout: .now() + Self.worklistRetryInterval) == .success { return nil }
            }
        }
    }

    /// After the worklist was away: the studies it shows receiving or pending that this daemon does not hold
    /// (a triage whose result could not be recorded, or was lost in a failover) are triaged again, as at a
    /// start. False when the worklist could not be read (tried again on the next round).
    private func resumeStudiesLeftWaiting(_ worklist: any WorklistStore, _ scheduler: TriageScheduler) -> Bool {
        do {
            var resumed = 0
            for study in try worklist.studies(matching: { var f = WorklistFilter(); f.states = [.receiving, .pending]; return f }()) {
                // This node's studies only (those it holds images of): the others' are theirs.
                let instances = try worklist.images(ofStudy: study.studyInstanceUID).filter { $0.isHeld(by: worklist.node) }.map(\.sopInstanceUID)
                guard !instances.isEmpty else { continue }
                if scheduler.resumeIfNotHeld(study: study.studyInstanceUID, instances: instances, lastArrival: study.lastReceivedAt) { resumed += 1 }
            }
            if resumed > 0 {
                logger.info("\(resumed) study(ies) the worklist shows waiting are triaged again (their triage was not recorded, or was lost, while the worklist was away)")
            }
            return true
        } catch {
            logger.warning("could not look for studies left waiting after the worklist was away: \(error); tried again shortly")
            return false
        }
    }

    /// Seconds between two looks for files the worklist could not record (after a 0xA701).
    public static let unrecordedFilesInterval: Double = 5

    /// Stops the daemon as SIGTERM does (for tests and embedding).
    public func stop() {
        let first = stopRequested.withLock { stopping in
            defer { stopping = true }
            return !stopping
        }
        if first { stopSignal.signal() }
    }

    private var isStopping: Bool { stopRequested.withLock { $0 } }

    private func watch(_ watcher: DropFolderWatcher, intake: InstanceIntake) {
        var leftInPlace = Set<String>()
        func ingest(_ path: String) {
            let outcome = intake.ingest(dropped: path, dropRoot: watcher.root)
            if case let .recorded(notice) = outcome { noteDropSource(path, root: watcher.root, study: notice.studyInstanceUID) }
            if case .leftInPlace = outcome {
                var st = stat()  // lstat: a path longer than PATH_MAX is kept too
                if lstat(path, &st) == 0 || errno == ENAMETOOLONG { leftInPlace.insert(path) }
            } else {
                leftInPlace.remove(path)
            }
        }
        let existing = watcher.existingFiles()
        if !existing.isEmpty { logger.info("\(existing.count) file(s) were dropped while the daemon was down") }
        for path in existing where !isStopping { ingest(path) }
        var lastRetry = Date(), lastSweep = Date.distantPast
        while !isStopping {
            for path in watcher.nextFiles(timeout: 0.5) where !isStopping { ingest(path) }
            // Emptied folders go, with their watches (the drop folder itself stays).
            if Date().timeIntervalSince(lastSweep) >= 1 {
                lastSweep = Date()
                watcher.removeEmptyFolders()
            }
            // Files the spool or the worklist could not take: inotify will not announce them again.
            if !leftInPlace.isEmpty, Date().timeIntervalSince(lastRetry) >= configuration.dropRetryInterval {
                lastRetry = Date()
                for path in leftInPlace.sorted() where !isStopping { ingest(path) }
            }
        }
    }

    /// The first folder (or file, at the top) a drop-folder study came in, relative to the drop folder.
    /// A MURA-style patient folder (`patient11185`), which the intake reads as the patient ID, is shown
    /// as `patient*`: the log never carries a patient ID at info level.
    private func noteDropSource(_ path: String, root: String, study: String) {
        guard let parts = DropTree.components(of: path, root: (root as NSString).standardizingPath) else { return }
        let folders = (parts.count > 1 ? Array(parts.dropLast()) : parts).map { InstanceIntake.isPatientFolder($0) ? "patient*" : $0 }
        let shown = folders.joined(separator: "/")
        dropSources.withLock { sources in
            if sources[study] == nil { sources[study] = DropTree.shortened(shown) }
        }
    }

    /// "C-STORE from PACS at 10.0.0.5", "drop folder ward3/tuesday" (no patient data: the AE title and
    /// address of the sender, the folder the file was dropped in).
    private func source(of uid: String, _ study: Study?) -> String {
        guard let study else { return "unknown" }
        switch study.source {
        case .cstore:
            return "C-STORE from \(study.callingAETitle ?? "?") at \(study.peerAddress ?? "?")"
        case .dropFolder:
            // After a restart the folder is no longer known (the drop folder keeps no file once taken in).
            return dropSources.withLock { $0[uid] }.map { "drop folder \($0)" } ?? "drop folder"
        }
    }

    private func loadModel() -> LoadedModel? {
        do {
            let path = try DefaultModel.resolve(configuration.modelPath)
            let model = try LoadedModel.load(path: path)
            let kernels: String
            do {
                let family = try configuration.kernels ?? KernelFamily.fromEnvironment()
                kernels = "\(family.rawValue) (\(family.summary))"
            } catch {
                kernels = "none: \(error)"
            }
            logger.info("model loaded", metadata: ["model": "\(model.model.head.description.modelID)", "path": "\(path)", "kernels": "\(kernels)",
                                                   "precision": "\(configuration.precision.name)"])
            return model
        } catch {
            logger.error("no model loaded: \(error). Studies are received and kept, and wait for triage; fix [model] path and send SIGHUP")
            return nil
        }
    }

    private func installSignalHandlers(receiver: StorageReceiver, models: ModelSlot, scheduler: TriageScheduler) -> [DispatchSourceSignal] {
        let queue = DispatchQueue(label: "bonetriage.signals")
        var sources: [DispatchSourceSignal] = []
        for number in [SIGTERM, SIGINT, SIGHUP] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { [self] in
                if number == SIGHUP { reload(receiver: receiver, models: models, scheduler: scheduler) } else { stop() }
            }
            source.resume()
            sources.append(source)
        }
        return sources
    }

    /// SIGHUP: the model and the allowed callers, all or nothing: the new configuration and its model
    /// must both load before either is applied; otherwise the running settings stay, and the log says
    /// why. What changed is logged; other settings need a restart (also logged, by name).
    private func reload(receiver: StorageReceiver, models: ModelSlot, scheduler: TriageScheduler) {
        notifier.notify("RELOADING=1")
        defer { notifier.notify("READY=1") }
        let before = running.withLock { $0 }
        var fresh = before
        if let path = configurationPath {
            do {
                fresh = try BoneTriageConfiguration.load(path: path)
            } catch {
                logger.error("reload refused, the running settings stay: \(error)")
                return
            }
        }
        let model: LoadedModel
        let modelPath: String
        do {
            modelPath = try DefaultModel.resolve(fresh.modelPath)
            model = try LoadedModel.load(path: modelPath)
        } catch {
            logger.error("reload refused, the running model and allowed callers stay: the model did not load: \(error)")
            return
        }
        receiver.updateAllowedCallers(fresh.allowedCallers)
        models.replace(with: model)
        scheduler.wakeIdleWorkers()
        bt_memory_release_free()
        var applied = before
        applied.allowedCallers = fresh.allowedCallers
        applied.modelPath = fresh.modelPath
        running.withLock { $0 = applied }
        for study in waitingForModel.withLock({ waiting in defer { waiting = [] }; return waiting }) { scheduler.requeue(study) }

        if before.allowedCallers != fresh.allowedCallers {
            logger.info("allowed callers changed", metadata: ["before": "\(Self.describe(before.allowedCallers))",
                                                             "now": "\(Self.describe(fresh.allowedCallers))"])
        }
        let restartOnly = BoneTriageConfiguration.differingSettings(applied, fresh)
        if !restartOnly.isEmpty {
            logger.warning("changed settings that take effect at the next restart: \(restartOnly.joined(separator: ", "))")
        }
        logger.info("reloaded", metadata: ["model": "\(model.model.head.description.modelID)", "path": "\(modelPath)",
                                           "allowed_callers": "\(fresh.allowedCallers.count)"])
    }

    static func describe(_ callers: [AllowedCaller]) -> String {
        callers.isEmpty ? "none" : callers.map { c in
            c.hosts.isEmpty ? c.aeTitle : "\(c.aeTitle)@\(c.hosts.map(\.description).joined(separator: "|"))"
        }.joined(separator: ", ")
    }

    private func status(_ receiver: StorageReceiver, _ scheduler: TriageScheduler, _ models: ModelSlot) -> String {
        let counts = scheduler.counts
        return "associations \(receiver.activeAssociations) · received \(received.load(ordering: .relaxed)) · assembling \(counts.receiving)"
            + " · queued \(counts.queued) · triaging \(counts.triaging) · done \(triaged.load(ordering: .relaxed))"
            + " · failed \(failed.load(ordering: .relaxed)) · workers \(configuration.workers)"
            + (models.current.model.map { " · model \($0.model.head.description.modelID)" } ?? " · NO MODEL")
            + (configuration.precision == .float32 ? "" : " (\(configuration.precision.name))")
    }

    private static func spawn(_ name: String, group: DispatchGroup, _ body: @escaping @Sendable () -> Void) {
        group.enter()
        let thread = Thread {
            body()
            group.leave()
        }
        thread.name = name
        thread.stackSize = 8 << 20
        thread.start()
    }
}

/// Keeps `[service] status_file` in step with the daemon's counts for `bonetriage status`: rewritten
/// when they change and at least every 30 s (so that its age shows the daemon is alive), removed at a
/// clean stop. A file that cannot be written is said once and the daemon goes on.
final class StatusFilePublisher {
    let path: String
    let logger: Logger
    /// The daemon's `[worklist] node`, shown by `bonetriage status`.
    let node: String
    let startedAt = Date()
    private var published: (status: String, at: Date)?
    private var warned = false

    init(path: String, logger: Logger, node: String) {
        self.path = path
        self.node = node
        self.logger = logger
        // Under systemd, RuntimeDirectory= made it; by hand, a folder every user may read.
        mkdir((path as NSString).deletingLastPathComponent, 0o755)
    }

    func publish(_ status: String, now: Date = Date()) {
        if let published, published.status == status, now.timeIntervalSince(published.at) < 30 { return }
        published = (status, now)
        do {
            try DaemonStatus(pid: getpid(), version: BoneTriageVersion.number, startedAt: startedAt, updatedAt: now, status: status,
                             node: node).write(to: path)
        } catch {
            if !warned { logger.warning("\(error); `bonetriage status` cannot see this daemon (see [service] status_file)") }
            warned = true
        }
    }

    func remove() {
        if published != nil { unlink(path) }
    }
}
