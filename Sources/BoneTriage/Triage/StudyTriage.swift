import CSystem
import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The model the workers use, replaced as a whole on reload (SIGHUP); each worker notices the new
/// generation before its next study and builds its engine again.
public final class LoadedModel: Sendable {
    public let model: TriageModel
    public let path: String
    /// SHA-256 over the head's tensors and metadata, which name the backbone's own fingerprint: the
    /// identity recorded with every triage.
    public let identity: String

    public init(model: TriageModel, path: String) {
        self.model = model
        self.path = path
        var digest = SHA256Digest()
        let head = model.head.file
        for key in head.metadata.keys.sorted() { digest.update(Data("\(key)=\(head.metadata[key] ?? "")\n".utf8)) }
        for name in head.tensors.keys.sorted() {
            guard let t = head.tensors[name] else { continue }
            digest.update(Data("\(name)\(t.shape)".utf8))
            t.values.withUnsafeBytes { digest.update($0) }
        }
        identity = digest.finalHex()
    }

    public static func load(path: String) throws -> LoadedModel { LoadedModel(model: try TriageModel.load(path: path), path: path) }
}

public final class ModelSlot: Sendable {
    private let state = Mutex<(model: LoadedModel?, generation: Int)>((nil, 0))

    public init(_ model: LoadedModel?) { state.withLock { $0 = (model, model == nil ? 0 : 1) } }

    public func replace(with model: LoadedModel) { state.withLock { $0 = (model, $0.generation + 1) } }
    public var current: (model: LoadedModel?, generation: Int) { state.withLock { $0 } }
}

/// Triage policy from the configuration: which body parts the model may see and what to do with the files.
public struct TriagePolicy: Sendable {
    public var coveredBodyParts: Set<String>
    public var triageUnknownBodyPart: Bool
    public var afterTriage: PostTriageAction
    public var spool: Spool
    public var archiveFolder: String
    public var engineThreads: Int
    /// The engines' kernel family ([triage] kernels); nil is automatic.
    public var kernels: KernelFamily?
    /// The engines' precision ([triage] precision).
    public var precision = ConvolutionArithmetic.float32
    public var maximumPixels: UInt64
    /// The `bonetriage` binary that decodes in a child process; nil decodes inside this process.
    public var decoderExecutable: String?
    public var decodeTimeout: Double
    /// Decoder processes per worker (with an isolated decoder; decoding inside the daemon is one at a time).
    public var decodersPerWorker: Int
    /// Which triaged studies get heatmaps ([heatmaps] compute).
    public var heatmapScope: HeatmapScope
    /// The destinations results are queued for with each verdict (set by the daemon: `ResultsComponents.queueing`).
    public var resultDestinations: [ResultDestination] = []
    /// How long a study whose images are on other nodes waits (since its last arrival anywhere) for a
    /// node that holds them all, before this node triages those it holds (`[worklist] split_study_wait_seconds`).
    public var splitStudyWait: TimeInterval = 120

    /// `decoderExecutable` is used when the configuration isolates the decoder (the daemon passes its own binary).
    public init(configuration c: BoneTriageConfiguration, decoderExecutable: String? = nil) {
        coveredBodyParts = Set(c.coveredBodyParts.map { $0.uppercased() })
        triageUnknownBodyPart = c.triageUnknownBodyPart
        afterTriage = c.afterTriage
        spool = Spool(root: c.spoolFolder)
        archiveFolder = c.archiveFolder
        engineThreads = c.engineThreads > 0 ? c.engineThreads : ProcessInfo.processInfo.activeProcessorCount
        kernels = c.kernels
        precision = c.precision
        maximumPixels = UInt64(c.maximumMegapixels) << 20
        self.decoderExecutable = c.isolateDecoder ? decoderExecutable : nil
        decodeTimeout = c.decodeTimeout
        decodersPerWorker = c.decodersPerWorker
        heatmapScope = c.heatmapScope
        splitStudyWait = c.splitStudyWait
    }
}

/// What one worker did with one study.
public enum TriageOutcome: Equatable, Sendable {
    case triaged(probability: Double, verdict: Finding)
    case notApplicable(reason: String)
    case failed(reason: String)
    /// Late instances arrived during the triage; the study is queued again.
    case superseded
    /// No model is loaded: the study waits (in the worklist) for a model (SIGHUP) or a restart.
    case waitingForModel
    /// Another node (a shared worklist) holds the study's triage: it is left to that node, and looked at
    /// again after a quiet period.
    case heldElsewhere(node: String)
    /// Its outcome stands and nothing arrived since (another node triaged it): nothing was done.
    case alreadyDone
    /// Some of its eligible images are only on these other nodes: it waits for a node that holds them
    /// all (`TriagePolicy.splitStudyWait`), and is looked at again after a quiet period.
    case waitingForImages(nodes: [String])
}

/// The images whose heatmap a worker is making, so that two workers do not make the same one.
public final class HeatmapClaims: Sendable {
    private let claimed = Mutex<Set<String>>([])

    public init() {}

    /// True when no other worker has claimed the image.
    public func claim(_ sopInstanceUID: String) -> Bool { claimed.withLock { $0.insert(sopInstanceUID).inserted } }
    public func release(_ sopInstanceUID: String) { claimed.withLock { _ = $0.remove(sopInstanceUID) } }
}

/// One worker: owns an engine (not thread-safe) and triages one study at a time from the worklist.
/// Sendable only so that it can be handed to its thread; it is used by that one thread alone.
public final class StudyTriage: @unchecked Sendable {
    let worklist: any WorklistStore
    let models: ModelSlot
    let policy: TriagePolicy
    let logger: Logger
    private var classifier: StudyClassifier?
    private var generation = 0
    private let decoders: [any ImageDecoder]
    private let heatmapClaims: HeatmapClaims
    /// Studies this worker found held by another node, so that "left to node X" is said once per study.
    private var leftToOtherNodes: Set<String> = []
    /// Whether the worklist may hold heatmap work: true at start, after each triage and each model
    /// reload; false once a look found none (so that an idle worker does not query a large worklist
    /// every second for nothing).
    private var heatmapWorkMayExist = true

    public init(worklist: any WorklistStore, models: ModelSlot, policy: TriagePolicy, logger: Logger, heatmapClaims: HeatmapClaims = HeatmapClaims()) {
        self.heatmapClaims = heatmapClaims
        self.worklist = worklist
        self.models = models
        self.policy = policy
        self.logger = logger
        // A worker decodes a study's images before its engine runs, so its decoders share the engine's
        // threads: each decoder process gets engine_threads / decoders_per_worker OpenJPEG threads (at least 1).
        if let executable = policy.decoderExecutable {
            let count = max(1, policy.decodersPerWorker)
            decoders = (0..<count).map { _ in
                let isolated = IsolatedDecoder(executable: executable, timeout: policy.decodeTimeout)
                isolated.decodeThreads = Self.decodeThreads(engineThreads: policy.engineThreads, decoders: count)
                isolated.onEvent = { [logger] in logger.warning("\($0)") }
                return isolated
            }
        } else {
            decoders = [InProcessDecoder(threads: Self.decodeThreads(engineThreads: policy.engineThreads, decoders: 1))]
        }
    }

    /// OpenJPEG threads per decoder: the worker's engine threads split over its decoders, at least 1.
    public static func decodeThreads(engineThreads: Int, decoders: Int) -> Int {
        max(1, engineThreads / max(1, decoders))
    }

    /// Ends the worker's decoder processes, if it has any.
    public func shutDown() {
        decoders.forEach { $0.close() }
    }

    /// Triages that may be cut short (kill -9, a crash in a decoder) before a study is set aside.
    public static let maximumInterruptedAttempts = StudyLifecycle.maximumInterruptedAttempts

    /// `source`: where the study came from, as the daemon's "study complete" line says it (C-STORE
    /// caller or drop-folder path), repeated on the outcome's line so that an admin can match the two.
    public func triage(studyInstanceUID uid: String, source: String? = nil) -> TriageOutcome {
        let shortID = Study.shortID(for: uid)
        let started = Date()
        logger.debug("triage started", metadata: ["study": "\(shortID)"])
        do {
            let attempts: Int
            switch try worklist.beginTriage(studyInstanceUID: uid) {
            case let .claimed(count): attempts = count
            case let .heldBy(node, since):
                if leftToOtherNodes.insert(uid).inserted {
                    logger.info("study left to node \(node), which claimed its triage at \(since) (if that node is down, it resumes the study when it starts again)",
                                metadata: ["study": "\(shortID)"])
                }
                return .heldElsewhere(node: node)
            case let .alreadyDone(state):
                logger.debug("study already \(state.rawValue) and nothing arrived since; nothing to do", metadata: ["study": "\(shortID)"])
                leftToOtherNodes.remove(uid)
                return .alreadyDone
            }
            leftToOtherNodes.remove(uid)
            defer { try? worklist.endTriage(studyInstanceUID: uid) }
            if let reason = StudyLifecycle.setAsideReason(interruptedAttempts: attempts) {
                try worklist.markFailed(studyInstanceUID: uid, reason: reason)
                logger.error("study set aside: \(reason)", metadata: ["study": "\(shortID)"])
                return .failed(reason: reason)
            }
            let outcome = try run(uid)
            heatmapWorkMayExist = true
            let ms = Int(Date().timeIntervalSince(started) * 1000)
            let named: Logger.Metadata = source.map { ["study": "\(shortID)", "source": "\($0)"] } ?? ["study": "\(shortID)"]
            switch outcome {
            case let .triaged(p, verdict):
                logger.info("study triaged", metadata: named.merging(["probability": "\(String(format: "%.3f", p))",
                                                                      "verdict": "\(verdict.rawValue)", "ms": "\(ms)"]) { a, _ in a })
            case let .notApplicable(reason):
                logger.info("study not applicable: \(reason)", metadata: named)
            case let .failed(reason):
                logger.error("study triage failed: \(reason)", metadata: named)
            case .superseded:
                logger.info("late instances arrived during triage; the study is triaged again", metadata: named)
            case .waitingForModel:
                logger.warning("no model is loaded; the study waits (fix [model] path and send SIGHUP)", metadata: named)
            case let .waitingForImages(nodes):
                let waiting = "some of the study's images are only on node(s) \(nodes.joined(separator: ", ")); it waits up to "
                    + "\(Int(policy.splitStudyWait)) s after its last arrival for a node that holds them all"
                logger.info("\(waiting)", metadata: named)
            case .heldElsewhere, .alreadyDone: break
            }
            return outcome
        } catch {
            // An acknowledged study must never stay "receiving" without a word. When the worklist itself
            // could not be written (locked, disk full), the study stays as it is and is triaged at the
            // next start; anything else is recorded as the study's failure, with the reason.
            let reason = "triage stopped: \(error)"
            if let fault = error as? WorklistError, fault.isDatabaseFault {
                logger.error("study triage could not be recorded: \(error); it is retried at the next start", metadata: ["study": "\(shortID)"])
            } else {
                do {
                    try worklist.markFailed(studyInstanceUID: uid, reason: reason)
                    logger.error("study triage failed: \(reason)", metadata: ["study": "\(shortID)"])
                } catch let recording {
                    logger.error("study triage could not be recorded: \(recording); it is retried at the next start", metadata: ["study": "\(shortID)"])
                }
            }
            return .failed(reason: reason)
        }
    }

    private func run(_ uid: String) throws -> TriageOutcome {
        let study = try worklist.study(studyInstanceUID: uid)
        let images = try worklist.images(ofStudy: study.studyInstanceUID)
        let eligible = images.filter(\.eligible)
        guard !eligible.isEmpty else {
            let reasons = Set(images.compactMap(\.eligibilityReason)).sorted()
            let reason = "no eligible image" + (reasons.isEmpty ? "" : ": " + reasons.prefix(3).joined(separator: "; "))
            try worklist.markNotApplicable(studyInstanceUID: uid, reason: reason)
            return .notApplicable(reason: reason)
        }
        let current = models.current
        guard let loaded = current.model else { return .waitingForModel }
        let covered = policy.coveredBodyParts.union(loaded.model.head.description.bodyParts.map { $0.uppercased() })
        if let part = study.bodyPart?.uppercased(), !part.isEmpty {
            guard covered.contains(part) else {
                let reason = "body part \(part) is not covered by the model (covers \(covered.sorted().joined(separator: ", ")); see [triage] covered_body_parts)"
                try worklist.markNotApplicable(studyInstanceUID: uid, reason: reason)
                return .notApplicable(reason: reason)
            }
        } else if !policy.triageUnknownBodyPart {
            let reason = "Body Part Examined (0018,0015) is empty; set [triage] triage_unknown_body_part = true to triage such studies"
            try worklist.markNotApplicable(studyInstanceUID: uid, reason: reason)
            return .notApplicable(reason: reason)
        }

        // Probabilities already recorded by this very model are kept (their files may be archived or deleted).
        let sameModel = study.modelHash == loaded.identity
        // Images only another node holds (a shared worklist): a node that holds them all may triage the
        // study; after the wait, this node triages without them and says where they are.
        let elsewhere = eligible.filter { !$0.isHeld(by: worklist.node) && !(sameModel && $0.probability != nil) }
        if !elsewhere.isEmpty && Date().timeIntervalSince(study.lastReceivedAt) < policy.splitStudyWait {
            return .waitingForImages(nodes: Set(elsewhere.compactMap(\.node)).sorted())
        }
        var probabilities: [String: Double] = [:]
        var toClassify: [StudyImage] = []
        var imageProblems: [String: String] = [:]
        for image in eligible {
            if sameModel, let p = image.probability {
                probabilities[image.sopInstanceUID] = p
            } else if !image.isHeld(by: worklist.node) {
                imageProblems[image.sopInstanceUID] = "only on node \(image.node ?? "?"), not on this node (\(worklist.node)); "
                    + "triaged without it after \(Int(policy.splitStudyWait)) s with no node holding the whole study"
                logger.warning("image left out: it is only on another node", metadata: ["node": "\(image.node ?? "?")", "sop": "\(image.sopInstanceUID)"])
            } else if FileManager.default.fileExists(atPath: image.filePath) {
                toClassify.append(image)
            } else if let p = image.probability {
                probabilities[image.sopInstanceUID] = p
                logger.warning("image file is gone; its earlier probability is kept", metadata: ["path": "\(image.filePath)"])
            } else {
                logger.warning("image file is gone and was never classified; it is left out", metadata: ["path": "\(image.filePath)"])
            }
        }
        var problems: [String] = []
        if !toClassify.isEmpty {
            let classifier = try classifier(for: loaded, generation: current.generation)
            for (image, outcome) in zip(toClassify, classifier.outcomes(paths: toClassify.map(\.filePath), decoders: decoders)) {
                switch outcome {
                case let .probability(p): probabilities[image.sopInstanceUID] = p
                case let .notApplicable(reason):
                    imageProblems[image.sopInstanceUID] = reason
                    logger.info("image not applicable after decoding: \(reason)", metadata: ["path": "\(image.filePath)"])
                case let .unreadable(error):
                    problems.append("\(error)")
                    imageProblems[image.sopInstanceUID] = (error as? ImagingError).map { "could not be decoded: \($0.parts.reason)" } ?? "\(error)"
                    logger.warning("image could not be decoded: \(error)", metadata: ["path": "\(image.filePath)"])
                }
            }
        }
        guard !probabilities.isEmpty else {
            let reason = problems.first.map { "no image could be classified: \($0)" } ?? "no eligible image could be classified"
            try worklist.recordImageProblems(imageProblems)
            try worklist.markFailed(studyInstanceUID: uid, reason: reason)
            return .failed(reason: reason)
        }
        let description = loaded.model.head.description
        let recorded: Study
        do {
            var result = TriageResult(studyInstanceUID: uid, imageProbabilities: probabilities, threshold: description.threshold,
                                      modelID: description.modelID, modelHash: loaded.identity, imageCount: images.count, imageProblems: imageProblems)
            result.resultDestinations = policy.resultDestinations
            result.operatingPoint = OperatingPoint.verdictSource(description)
            recorded = try worklist.recordTriage(result)
        } catch WorklistError.triageSuperseded {
            return .superseded
        }
        if policy.afterTriage == .delete, wantsHeatmaps(recorded) {
            // Their files are deleted next: the heatmaps could not be made later.
            for image in eligible where probabilities[image.sopInstanceUID] != nil && image.isHeld(by: worklist.node)
                && FileManager.default.fileExists(atPath: image.filePath) {
                makeHeatmap(HeatmapWork(studyInstanceUID: uid, sopInstanceUID: image.sopInstanceUID, filePath: image.filePath,
                                        fileRemovedAt: image.fileRemovedAt, modelFingerprint: loaded.identity),
                            loaded: loaded, generation: current.generation)
            }
        }
        try afterTriage(images)
        guard let probability = recorded.probability, let verdict = recorded.verdict else {
            return .notApplicable(reason: recorded.stateReason ?? "no eligible image was classified")
        }
        return .triaged(probability: probability, verdict: verdict)
    }

    /// Builds the engine before the first study arrives, so the first triage is as fast as the others.
    public func prepare() {
        decoders.forEach { $0.start() }
        let current = models.current
        guard let loaded = current.model else { return }
        do { _ = try classifier(for: loaded, generation: current.generation) } catch {
            logger.error("the triage engine could not be built: \(error)")
        }
    }

    /// Between studies: when a reload brought a new model, the engine built for the old one is dropped
    /// first (so that its memory goes back to the system, not only the model's), then the new one is
    /// built, so that the next study does not wait for it.
    public func followModelReload() {
        let current = models.current
        guard current.generation != generation, let loaded = current.model else { return }
        heatmapWorkMayExist = true
        classifier = nil
        bt_memory_release_free()
        do {
            _ = try classifier(for: loaded, generation: current.generation)
            logger.info("engine rebuilt for the reloaded model", metadata: ["model": "\(loaded.model.head.description.modelID)"])
        } catch {
            logger.error("the triage engine could not be built for the reloaded model: \(error)")
        }
    }

    /// Whether `[heatmaps] compute` wants heatmaps for this study.
    func wantsHeatmaps(_ study: Study) -> Bool {
        switch policy.heatmapScope {
        case .none: return false
        case .all: return study.state == .triaged
        case .flagged: return study.state == .triaged && study.verdict == .abnormal
        }
    }

    /// Between studies, while none waits: makes and records the heatmap of one image that lacks one for
    /// its study's current model ([heatmaps] compute), and returns true; false when there is none to
    /// make (or no model), so that the worker waits.
    /// `shouldYield`: asked between the heatmap's batches; yes (a study is due) gives the image up for now.
    public func makeNextHeatmap(shouldYield: () -> Bool = { false }) -> Bool {
        guard policy.heatmapScope != .none, heatmapWorkMayExist else { return false }
        let current = models.current
        guard let loaded = current.model else { return false }
        let work: [HeatmapWork]
        do {
            work = try worklist.heatmapWork(scope: policy.heatmapScope, modelFingerprint: loaded.identity, limit: 8)
        } catch {
            logger.warning("heatmaps: the worklist could not be read: \(error); tried again in a moment")
            return false
        }
        if work.isEmpty { heatmapWorkMayExist = false }
        guard let item = work.first(where: { heatmapClaims.claim($0.sopInstanceUID) }) else { return false }
        defer { heatmapClaims.release(item.sopInstanceUID) }
        return makeHeatmap(item, loaded: loaded, generation: current.generation, shouldYield: shouldYield)
    }

    /// Makes one image's heatmap with this worker's engine and records it (or why it could not be made).
    @discardableResult
    private func makeHeatmap(_ item: HeatmapWork, loaded: LoadedModel, generation: Int, shouldYield: () -> Bool = { false }) -> Bool {
        let shortID = Study.shortID(for: item.studyInstanceUID)
        let started = Date()
        let made: HeatmapOutcome?
        do {
            let classifier = try classifier(for: loaded, generation: generation)
            let maker = OcclusionSensitivity(engine: classifier.engine, head: loaded.model.head.head, reading: loaded.model.head.description.reading,
                                             modelFingerprint: loaded.identity)
            made = maker.outcome(path: item.filePath, fileRemovedAt: item.fileRemovedAt, decoder: decoders[0], spec: loaded.model.spec,
                                 maximumPixels: policy.maximumPixels, shouldYield: shouldYield)
        } catch {
            logger.error("heatmaps: the engine could not be built: \(error)")
            return false
        }
        guard let outcome = made else {
            logger.debug("heatmap put off: a study is due for triage", metadata: ["study": "\(shortID)"])
            return true
        }
        do {
            try worklist.recordHeatmap(sopInstanceUID: item.sopInstanceUID, outcome, at: Date())
        } catch {
            logger.warning("heatmaps: could not be recorded: \(error); tried again in a moment", metadata: ["study": "\(shortID)"])
            return false
        }
        let ms = Int(Date().timeIntervalSince(started) * 1000)
        switch outcome {
        case let .made(h):
            logger.info("heatmap made", metadata: ["study": "\(shortID)", "maximum": "\(String(format: "%.3f", Double(h.maximum)))", "ms": "\(ms)"])
        case let .notMade(reason, _):
            logger.warning("no heatmap for an image: \(reason)", metadata: ["study": "\(shortID)"])
            logger.debug("the image without a heatmap", metadata: ["path": "\(item.filePath)"])
        }
        return true
    }

    private func classifier(for loaded: LoadedModel, generation: Int) throws -> StudyClassifier {
        if let classifier, self.generation == generation { return classifier }
        let built = try StudyClassifier(model: loaded.model, threads: policy.engineThreads, kernels: policy.kernels, precision: policy.precision)
        built.maximumPixels = policy.maximumPixels
        classifier = built
        self.generation = generation
        return built
    }

    /// Keep, archive or delete the study's files that are still in the spool.
    private func afterTriage(_ images: [StudyImage]) throws {
        let inSpool = images.filter { $0.isHeld(by: worklist.node) && $0.filePath.hasPrefix(policy.spool.root + "/") }
        switch policy.afterTriage {
        case .keep:
            return
        case .delete:
            // Result objects still to be built need a file of the study: the build stage deletes them once built.
            if let study = images.first?.studyInstanceUID, try worklist.resultObjects(ofStudy: study).contains(where: \.awaitsBuild) { return }
            for image in inSpool { unlink(image.filePath) }
        case .archive:
            var moved: [String: String] = [:]
            for image in inSpool {
                let relative = String(image.filePath.dropFirst(policy.spool.root.count + 1))
                let target = policy.archiveFolder + "/" + relative
                do {
                    try FileSystem.makeFolder((target as NSString).deletingLastPathComponent)
                    try FileSystem.moveDurably(image.filePath, to: target)
                    moved[image.sopInstanceUID] = target
                } catch {
                    logger.error("could not archive \(image.filePath): \(error); it stays in the spool")
                }
            }
            try worklist.updateImagePaths(moved)
        }
    }
}
