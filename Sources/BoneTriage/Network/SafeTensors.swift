import Foundation

/// A tensor held in memory as float32 (files may store F32, F64 or U8): its shape and its values in row-major order.
public struct Tensor: Sendable, Equatable {
    public var shape: [Int]
    public var values: [Float]

    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "tensor shape \(shape) does not hold \(values.count) values")
        self.shape = shape
        self.values = values
    }

    public var count: Int { values.count }
}

/// Errors reading or writing a safetensors file; each names the file and what to do.
public enum SafeTensorsError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)
    case missingTensor(path: String, name: String)
    case wrongShape(path: String, name: String, expected: [Int], found: [Int])
    case unsupportedDType(path: String, name: String, dtype: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason):
            return "\(path): cannot read the weight file (\(reason)); check the path and its permissions"
        case let .malformed(path, reason):
            return "\(path): not a valid safetensors file (\(reason)); re-create it with `bonetriage model import-backbone` or `make model`"
        case let .missingTensor(path, name):
            return "\(path): tensor '\(name)' is missing; the file was written for another architecture or is incomplete"
        case let .wrongShape(path, name, expected, found):
            return "\(path): tensor '\(name)' has shape \(found), expected \(expected); the file does not match this architecture"
        case let .unsupportedDType(path, name, dtype):
            return "\(path): tensor '\(name)' has dtype \(dtype); only F32, F64 and U8 are read"
        }
    }
}

/// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
/// header length, a JSON header naming each tensor's dtype, shape and byte range, then the raw data.
/// Free-form string metadata lives under the header key `__metadata__`.
public struct SafeTensorsFile: Sendable {
    public var metadata: [String: String]
    public var tensors: [String: Tensor]

    public init(metadata: [String: String] = [:], tensors: [String: Tensor] = [:]) {
        self.metadata = metadata
        self.tensors = tensors
    }

    /// Largest header accepted: real headers for this project are well under 1 MB.
    static let maximumHeaderBytes = 64 << 20

    /// Reads a file tensor by tensor, so peak memory is the tensors themselves, not the file twice.
    public static func read(path: String) throws -> SafeTensorsFile {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file"
            throw SafeTensorsError.unreadable(path: path, reason: reason)
        }
        defer { try? handle.close() }
        do {
            let prefix = try handle.read(upToCount: 8) ?? Data()
            guard prefix.count == 8 else {
                throw SafeTensorsError.malformed(path: path, reason: "file is \(prefix.count) bytes, shorter than the 8-byte header length")
            }
            let headerLength = prefix.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            guard headerLength <= UInt64(maximumHeaderBytes) else {
                throw SafeTensorsError.malformed(path: path, reason: "header length \(headerLength) is larger than any weight file's")
            }
            let header = try handle.read(upToCount: Int(headerLength)) ?? Data()
            let fileSize = try handle.seekToEnd()
            let payload = Int(fileSize) - 8 - header.count
            guard header.count == Int(headerLength), payload >= 0 else {
                throw SafeTensorsError.malformed(path: path, reason: "header length \(headerLength) exceeds the file size \(fileSize)")
            }
            return try decode(header: header, payloadCount: payload, path: path) { begin, end in
                try handle.seek(toOffset: UInt64(8 + header.count + begin))
                let bytes = try handle.read(upToCount: end - begin) ?? Data()
                guard bytes.count == end - begin else { throw SafeTensorsError.malformed(path: path, reason: "file ends inside a tensor") }
                return bytes
            }
        } catch let error as SafeTensorsError {
            throw error
        } catch {
            throw SafeTensorsError.unreadable(path: path, reason: (error as NSError).localizedDescription)
        }
    }

    public static func decode(_ data: Data, path: String = "<memory>") throws -> SafeTensorsFile {
        guard data.count >= 8 else { throw SafeTensorsError.malformed(path: path, reason: "file is \(data.count) bytes, shorter than the 8-byte header length") }
        let headerLength = data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard headerLength <= UInt64(maximumHeaderBytes), Int(headerLength) <= data.count - 8 else {
            throw SafeTensorsError.malformed(path: path, reason: "header length \(headerLength) exceeds the file size \(data.count)")
        }
        let dataStart = data.startIndex + 8 + Int(headerLength)
        return try decode(header: data[(data.startIndex + 8)..<dataStart], payloadCount: data.count - 8 - Int(headerLength), path: path) { begin, end in
            data[(dataStart + begin)..<(dataStart + end)]
        }
    }

    /// Parses the JSON header and fetches each tensor's bytes (offsets relative to the payload).
    private static func decode(header headerData: Data, payloadCount: Int, path: String,
                               bytes fetch: (Int, Int) throws -> Data) throws -> SafeTensorsFile {
        guard let header = (try? JSONSerialization.jsonObject(with: headerData)) as? [String: Any] else {
            throw SafeTensorsError.malformed(path: path, reason: "header is not a JSON object")
        }
        var file = SafeTensorsFile()
        for (name, entry) in header {
            if name == "__metadata__" {
                guard let meta = entry as? [String: String] else {
                    throw SafeTensorsError.malformed(path: path, reason: "__metadata__ must map strings to strings")
                }
                file.metadata = meta
                continue
            }
            guard let info = entry as? [String: Any],
                  let dtype = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int],
                  let offsets = info["data_offsets"] as? [Int], offsets.count == 2
            else { throw SafeTensorsError.malformed(path: path, reason: "entry '\(name)' lacks dtype, shape or data_offsets") }
            guard let width = ["F32": 4, "F64": 8, "U8": 1][dtype] else {
                throw SafeTensorsError.unsupportedDType(path: path, name: name, dtype: dtype)
            }
            guard shape.allSatisfy({ $0 >= 0 }) else { throw SafeTensorsError.malformed(path: path, reason: "entry '\(name)' has a negative dimension") }
            let (count, overflow) = shape.reduce((1, false)) { acc, d in
                let r = acc.0.multipliedReportingOverflow(by: d); return (r.partialValue, acc.1 || r.overflow)
            }
            let begin = offsets[0], end = offsets[1]
            guard !overflow, begin >= 0, end >= begin, end <= payloadCount, end - begin == count * width else {
                throw SafeTensorsError.malformed(path: path, reason: "entry '\(name)' byte range \(begin)..<\(end) does not fit shape \(shape) inside \(payloadCount) data bytes")
            }
            let bytes = try fetch(begin, end)
            var values = [Float](repeating: 0, count: count)
            switch dtype {
            case "U8":
                for (i, b) in bytes.enumerated() { values[i] = Float(b) }
            case "F64":
                var wide = [UInt64](repeating: 0, count: count)
                _ = wide.withUnsafeMutableBytes { bytes.copyBytes(to: $0) }
                for i in 0..<count { values[i] = Float(Double(bitPattern: UInt64(littleEndian: wide[i]))) }
            default:
                var bits = [UInt32](repeating: 0, count: count)
                _ = bits.withUnsafeMutableBytes { bytes.copyBytes(to: $0) }
                for i in 0..<count { values[i] = Float(bitPattern: UInt32(littleEndian: bits[i])) }
            }
            file.tensors[name] = Tensor(shape: shape, values: values)
        }
        return file
    }

    public func tensor(_ name: String, shape: [Int], path: String) throws -> Tensor {
        guard let t = tensors[name] else { throw SafeTensorsError.missingTensor(path: path, name: name) }
        guard t.shape == shape else { throw SafeTensorsError.wrongShape(path: path, name: name, expected: shape, found: t.shape) }
        return t
    }

    /// Serialises with tensors in name order, so equal contents give byte-identical files.
    public func encoded() throws -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            guard let t = tensors[name] else { continue }
            header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + t.count * 4]] as [String: Any]
            offset += t.count * 4
        }
        var headerData = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad the header with spaces so the data starts 8-byte aligned, as the format recommends.
        while (8 + headerData.count) % 8 != 0 { headerData.append(0x20) }
        var out = Data(capacity: 8 + headerData.count + offset)
        var length = UInt64(headerData.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(headerData)
        for name in names {
            guard let t = tensors[name] else { continue }
            t.values.withUnsafeBytes { out.append(contentsOf: $0) }
        }
        return out
    }

    public func write(path: String) throws {
        let data = try encoded()
        do {
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw SafeTensorsError.unreadable(path: path, reason: "cannot write: \((error as NSError).localizedDescription)")
        }
    }
}
