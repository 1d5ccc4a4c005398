import Foundation

public enum ModelFileError: Error, CustomStringConvertible, Equatable {
    case notAModel(path: String, reason: String)
    case backboneMismatch(path: String, expected: String, found: String)

    public var description: String {
        switch self {
        case let .notAModel(path, reason):
            return "\(path): not a BoneTriage model (\(reason)); build one with `make model` or `bonetriage model join`"
        case let .backboneMismatch(path, expected, found):
            return "\(path): the head was trained on backbone \(expected.prefix(16))... but the file holds backbone \(found.prefix(16))...; join the head with the backbone it was trained on"
        }
    }
}

/// What a trained head records about itself.
public struct HeadDescription: Sendable, Equatable {
    public static let format = "bonetriage-head"
    public var modelID: String
    public var backboneVariant: InceptionVariant
    public var backboneSHA256: String
    public var inputSize: Int
    public var inputRange: ClosedRange<Float>
    public var resizeFilter: ResizeFilter
    public var threshold: Double
    public var targetSensitivity: Double?
    public var bodyParts: [String]
    public var trainingData: String
    public var trainedAt: String
    /// JSON text: cross-validated figures and the chosen regularisation.
    public var crossValidation: String
    /// The operating point and its evidence; nil in files written before it was recorded (the threshold
    /// is then the default one set when the head was trained).
    public var operatingPoint: OperatingPoint?
    /// Which pooled features the head reads, and whether images are also scored mirrored (metadata
    /// `head_blocks` and `test_time_flip`; absent: mixed10 alone, unmirrored).
    public var reading: HeadReading = .mixed10

    public var metadata: [String: String] {
        var m = [
            "head_format": Self.format, "model_id": modelID, "backbone_variant": backboneVariant.rawValue,
            "backbone_sha256": backboneSHA256, "head_input_size": String(inputSize),
            "head_input_range": "\(inputRange.lowerBound),\(inputRange.upperBound)", "resize_filter": resizeFilter.rawValue,
            "threshold": String(threshold), "body_parts": bodyParts.joined(separator: ","), "training_data": trainingData,
            "trained_at": trainedAt, "cross_validation": crossValidation,
        ]
        if let t = targetSensitivity { m["target_sensitivity"] = String(t) }
        if let operatingPoint { m["operating_point"] = operatingPoint.json }
        if reading.blocks != HeadReading.mixed10.blocks { m["head_blocks"] = reading.blocks.joined(separator: ",") }
        if reading.testTimeFlip { m["test_time_flip"] = "true" }
        return m
    }

    public init(modelID: String, backboneVariant: InceptionVariant, backboneSHA256: String, inputSize: Int, inputRange: ClosedRange<Float>,
                resizeFilter: ResizeFilter, threshold: Double, targetSensitivity: Double?, bodyParts: [String], trainingData: String,
                trainedAt: String, crossValidation: String, operatingPoint: OperatingPoint? = nil, reading: HeadReading = .mixed10) {
        self.reading = reading
        self.modelID = modelID
        self.backboneVariant = backboneVariant
        self.backboneSHA256 = backboneSHA256
        self.inputSize = inputSize
        self.inputRange = inputRange
        self.resizeFilter = resizeFilter
        self.threshold = threshold
        self.targetSensitivity = targetSensitivity
        self.bodyParts = bodyParts
        self.trainingData = trainingData
        self.trainedAt = trainedAt
        self.crossValidation = crossValidation
        self.operatingPoint = operatingPoint
    }

    init(metadata m: [String: String], path: String) throws {
        func need(_ key: String) throws -> String {
            guard let v = m[key], !v.isEmpty else { throw ModelFileError.notAModel(path: path, reason: "metadata '\(key)' is missing") }
            return v
        }
        guard try need("head_format") == Self.format else { throw ModelFileError.notAModel(path: path, reason: "unknown head format") }
        guard let variant = InceptionVariant(rawValue: try need("backbone_variant")) else {
            throw ModelFileError.notAModel(path: path, reason: "unknown backbone variant")
        }
        guard let size = Int(try need("head_input_size")), size >= InceptionV3Architecture.minimumInputSize else {
            throw ModelFileError.notAModel(path: path, reason: "head_input_size is not a size of at least \(InceptionV3Architecture.minimumInputSize)")
        }
        let range = try need("head_input_range").split(separator: ",").compactMap { Float($0) }
        guard range.count == 2, range[0] < range[1] else { throw ModelFileError.notAModel(path: path, reason: "head_input_range must be 'low,high'") }
        guard let filter = ResizeFilter(rawValue: try need("resize_filter")) else {
            throw ModelFileError.notAModel(path: path, reason: "resize_filter must be area or nearest")
        }
        guard let threshold = Double(try need("threshold")), threshold > 0, threshold < 1 else {
            throw ModelFileError.notAModel(path: path, reason: "threshold must be between 0 and 1")
        }
        self.init(modelID: try need("model_id"), backboneVariant: variant, backboneSHA256: try need("backbone_sha256"), inputSize: size,
                  inputRange: range[0]...range[1], resizeFilter: filter, threshold: threshold,
                  targetSensitivity: m["target_sensitivity"].flatMap(Double.init),
                  bodyParts: (m["body_parts"] ?? "").split(separator: ",").map(String.init), trainingData: m["training_data"] ?? "",
                  trainedAt: m["trained_at"] ?? "", crossValidation: m["cross_validation"] ?? "{}")
        if let blocks = m["head_blocks"] {
            reading.blocks = blocks.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard reading.featureWidth != nil else {
                throw ModelFileError.notAModel(path: path, reason: "head_blocks '\(blocks)' must list Inception V3 blocks (mixed0 ... mixed10)")
            }
        }
        if let flip = m["test_time_flip"] {
            guard let value = Bool(flip) else { throw ModelFileError.notAModel(path: path, reason: "test_time_flip must be true or false, not '\(flip)'") }
            reading.testTimeFlip = value
        }
        if let text = m["operating_point"] {
            let point: OperatingPoint
            do { point = try OperatingPoint.parse(text) } catch {
                throw ModelFileError.notAModel(path: path, reason: "metadata 'operating_point' is not an operating point (\(error))")
            }
            guard point.threshold == threshold else {
                throw ModelFileError.notAModel(path: path, reason: "the operating point's threshold \(point.threshold) is not the model's threshold \(threshold)")
            }
            if let c = point.calibration, !(c.a > 0 && c.a.isFinite && c.b.isFinite) {
                throw ModelFileError.notAModel(path: path, reason: "the calibration's slope must be a positive number")
            }
            operatingPoint = point
        }
    }
}

/// A trained head alone (the small file committed under models/).
public struct HeadFile: Sendable {
    public var description: HeadDescription
    public var head: LogisticHead

    public init(description: HeadDescription, head: LogisticHead) {
        self.description = description
        self.head = head
    }

    public var file: SafeTensorsFile {
        SafeTensorsFile(metadata: description.metadata, tensors: [
            "head/weights": Tensor(shape: [head.weights.count], values: head.weights),
            "head/bias": Tensor(shape: [1], values: [head.bias]),
        ])
    }

    public init(file: SafeTensorsFile, path: String) throws {
        description = try HeadDescription(metadata: file.metadata, path: path)
        do {
            let w = try file.tensor("head/weights", shape: [description.reading.featureWidth ?? InceptionV3Architecture.featureCount], path: path)
            let b = try file.tensor("head/bias", shape: [1], path: path)
            guard w.values.allSatisfy(\.isFinite), b.values.allSatisfy(\.isFinite) else {
                throw ModelFileError.notAModel(path: path, reason: "the head holds NaN or infinite values")
            }
            head = LogisticHead(weights: w.values, bias: b.values[0])
        } catch let e as SafeTensorsError {
            throw ModelFileError.notAModel(path: path, reason: e.description)
        }
    }

    public static func load(path: String) throws -> HeadFile { try HeadFile(file: SafeTensorsFile.read(path: path), path: path) }
}

/// A whole model: backbone and head in one file, as the daemon and `evaluate` load it.
public struct TriageModel: Sendable {
    public var backbone: InceptionV3Weights
    public var head: HeadFile

    public var spec: ModelInputSpec {
        ModelInputSpec(size: head.description.inputSize, range: head.description.inputRange, filter: head.description.resizeFilter)
    }

    /// Joins a head to the backbone it was trained on; refuses any other backbone.
    public init(backbone: InceptionV3Weights, head: HeadFile, path: String = "<model>") throws {
        let fingerprint = BackboneFingerprint.of(backbone)
        guard fingerprint == head.description.backboneSHA256 else {
            throw ModelFileError.backboneMismatch(path: path, expected: head.description.backboneSHA256, found: fingerprint)
        }
        self.backbone = backbone
        self.head = head
    }

    public var file: SafeTensorsFile {
        var out = backbone.file
        let h = head.file
        out.metadata.merge(h.metadata) { _, new in new }
        out.tensors.merge(h.tensors) { _, new in new }
        return out
    }

    public static func load(path: String) throws -> TriageModel {
        let contents = try SafeTensorsFile.read(path: path)
        let head = try HeadFile(file: contents, path: path)
        let backbone = try InceptionV3Weights(file: contents, path: path)
        return try TriageModel(backbone: backbone, head: head, path: path)
    }
}

/// SHA-256 over a backbone's tensors (name, shape, float32 little-endian bytes, in name order): the
/// identity a head is tied to, the same however the file was written.
public enum BackboneFingerprint {
    public static func of(_ weights: InceptionV3Weights) -> String {
        var digest = SHA256Digest()
        digest.update(Data(weights.description.variant.rawValue.utf8))
        let file = weights.file  // shares the tensors' storage, copies nothing
        for name in file.tensors.keys.sorted() {
            guard let t = file.tensors[name] else { continue }
            digest.update(Data("\(name)\(t.shape)".utf8))
            t.values.withUnsafeBytes { digest.update($0) }
        }
        return digest.finalHex()
    }
}
