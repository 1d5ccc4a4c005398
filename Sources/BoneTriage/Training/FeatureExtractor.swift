import Foundation

/// Pooled Inception V3 features of image files, computed once and cached on disk, keyed by the file's
/// SHA-256, the backbone fingerprint and the input settings.
public final class FeatureExtractor {
    public let spec: ModelInputSpec
    /// The blocks whose pooled outputs make up a row, in order (the daemon's head reads mixed10 alone).
    public let blocks: [String]
    /// Each input mirrored left to right first (the head study's test-time and training flips).
    public let mirrored: Bool
    /// Values per row: the blocks' channels added up.
    public let width: Int
    let engine: InceptionV3Engine
    let cacheFolder: String?
    let batchSize = 16

    /// `fingerprint` is the backbone's `BackboneFingerprint` (the caller has it already: computing it
    /// hashes all 87 MB of weights), used to key the cache.
    public convenience init(backbone: InceptionV3Weights, fingerprint: String, spec: ModelInputSpec, cacheRoot: String?) throws {
        try self.init(network: InceptionV3Network(weights: backbone), fingerprint: fingerprint, spec: spec, cacheRoot: cacheRoot)
    }

    /// One network can serve several extractors (several filters, mirrored or not).
    public init(network: InceptionV3Network, fingerprint: String, spec: ModelInputSpec, cacheRoot: String?,
                blocks: [String] = ["mixed10"], mirrored: Bool = false) throws {
        self.spec = spec
        self.blocks = blocks
        self.mirrored = mirrored
        let channels = Dictionary(network.architecture.blocks.map { ($0.name, $0.outputChannels) }, uniquingKeysWith: { a, _ in a })
        if let unknown = blocks.first(where: { channels[$0] == nil }) { throw EngineError.unknownBlock(unknown) }
        width = blocks.reduce(0) { $0 + (channels[$1] ?? 0) }
        engine = try InceptionV3Engine(network: network, inputSize: spec.size)
        if let cacheRoot {
            var key = "\(fingerprint.prefix(16))-\(spec.size)-\(spec.filter.rawValue)-\(spec.range.lowerBound)_\(spec.range.upperBound)"
            if blocks != ["mixed10"] { key += "-" + blocks.joined(separator: "+") }
            if mirrored { key += "-mirrored" }
            let folder = (cacheRoot as NSString).appendingPathComponent(key)
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            cacheFolder = folder
        } else {
            cacheFolder = nil
        }
    }

    public static var defaultCacheRoot: String {
        let env = ProcessInfo.processInfo.environment
        let base = env["XDG_CACHE_HOME"] ?? ((env["HOME"] ?? NSTemporaryDirectory()) as NSString).appendingPathComponent(".cache")
        return (base as NSString).appendingPathComponent("bonetriage/features")
    }

    /// Model inputs of every eligible frame of a file (PNG or DICOM).
    func inputs(path: String) throws -> [[Float]] {
        let image = try IncomingImage.read(path: path)
        let inputs = image.frames.map { ModelInput.make($0, spec: spec) }
        return mirrored ? inputs.map { ModelInput.mirrored($0, size: spec.size) } : inputs
    }

    /// n x `width` features (2048 for the daemon's mixed10 head), one row per file (a multi-frame file:
    /// the mean of its frames). `progress` gets (done, total) after each batch.
    public func features(of paths: [String], progress: ((Int, Int) -> Void)? = nil) throws -> [Float] {
        let d = width
        var out = [Float](repeating: 0, count: paths.count * d)
        var pending: [(index: Int, inputs: [[Float]], key: String?)] = []
        var done = 0
        func flush() throws {
            let all = pending.flatMap(\.inputs)
            guard !all.isEmpty else { pending = []; return }
            var offset = 0
            var results: [Float] = []
            while offset < all.count {
                let batch = Array(all[offset..<min(all.count, offset + batchSize)])
                results += try engine.pooledBlockFeatures(Array(batch.joined()), batch: batch.count, blocks: blocks)
                offset += batch.count
            }
            var row = 0
            for item in pending {
                var mean = [Float](repeating: 0, count: d)
                for f in 0..<item.inputs.count {
                    for j in 0..<d { mean[j] += results[(row + f) * d + j] / Float(item.inputs.count) }
                }
                row += item.inputs.count
                out.replaceSubrange((item.index * d)..<((item.index + 1) * d), with: mean)
                if let key = item.key { try? Data(mean.withUnsafeBytes { Data($0) }).write(to: URL(fileURLWithPath: key), options: .atomic) }
            }
            done += pending.count
            pending = []
            progress?(done, paths.count)
        }
        for (index, path) in paths.enumerated() {
            var key: String?
            if let cacheFolder {
                guard let bytes = FileManager.default.contents(atPath: path) else { throw ImagingError.unreadable(path: path, reason: "cannot read") }
                key = (cacheFolder as NSString).appendingPathComponent(SHA256Digest.hex(bytes) + ".f32")
                if let key, let cached = FileManager.default.contents(atPath: key), cached.count == d * 4 {
                    cached.withUnsafeBytes { raw in
                        for j in 0..<d { out[index * d + j] = raw.loadUnaligned(fromByteOffset: j * 4, as: Float.self) }
                    }
                    done += 1
                    continue
                }
            }
            let inputs = try inputs(path: path)
            guard !inputs.isEmpty else { throw ImagingError.undecodable(path: path, reason: "no eligible frame to extract features from") }
            pending.append((index, inputs, key))
            if pending.reduce(0, { $0 + $1.inputs.count }) >= batchSize { try flush() }
        }
        try flush()
        return out
    }
}
