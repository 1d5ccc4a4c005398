import Foundation

/// The subset of Python's pickle format (protocols 2 to 4) that PyTorch and TorchScript archives use,
/// read without running any Python: globals and reduce calls become inert `PickleObject` values
/// that the caller interprets. Nothing named in the pickle is ever executed.
public indirect enum PickleValue: CustomStringConvertible {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple([PickleValue])
    case list(PickleList)
    case dict(PickleDict)
    case global(module: String, name: String)
    case object(PickleObject)
    /// The result of a persistent-id lookup (TorchScript: a tensor storage reference).
    case persistent(PickleValue)

    public var description: String {
        switch self {
        case .none: return "None"
        case let .bool(b): return b ? "True" : "False"
        case let .int(i): return String(i)
        case let .float(d): return String(d)
        case let .string(s): return "'\(s)'"
        case let .bytes(b): return "bytes(\(b.count))"
        case let .tuple(t): return "(" + t.map(\.description).joined(separator: ", ") + ")"
        case let .list(l): return "[" + l.items.map(\.description).joined(separator: ", ") + "]"
        case let .dict(d): return "{" + d.items.map { "\($0.0): \($0.1)" }.joined(separator: ", ") + "}"
        case let .global(m, n): return "\(m).\(n)"
        case let .object(o): return "\(o.className)(...)"
        case let .persistent(p): return "persistent\(p)"
        }
    }

    public var intValue: Int? { if case let .int(i) = self { return i } else { return nil } }
    public var stringValue: String? { if case let .string(s) = self { return s } else { return nil } }
    public var tupleValue: [PickleValue]? {
        switch self {
        case let .tuple(t): return t
        case let .list(l): return l.items
        default: return nil
        }
    }
}

public final class PickleList { public var items: [PickleValue] = [] }

public final class PickleDict {
    public var items: [(PickleValue, PickleValue)] = []
    public subscript(key: String) -> PickleValue? {
        items.last { if case let .string(s) = $0.0 { return s == key } else { return false } }?.1
    }
}

/// An object built by NEWOBJ or REDUCE: the class or callable, its arguments, and the state set by BUILD.
public final class PickleObject {
    public let module: String
    public let name: String
    public let arguments: [PickleValue]
    public var state: PickleValue?
    init(module: String, name: String, arguments: [PickleValue]) {
        self.module = module
        self.name = name
        self.arguments = arguments
    }
    public var className: String { "\(module).\(name)" }
    /// For module objects whose state is a dict: one attribute.
    public subscript(attribute: String) -> PickleValue? {
        if case let .dict(d) = state { return d[attribute] }
        return nil
    }
}

public struct PickleError: Error, CustomStringConvertible, Equatable {
    public let offset: Int
    public let reason: String
    public var description: String { "pickle data is malformed at byte \(offset): \(reason)" }
}

public enum Unpickler {
    /// Decodes one pickle. `persistentLoad` turns a persistent id into a value (default: wrap it).
    public static func load(_ bytes: [UInt8], persistentLoad: (PickleValue) throws -> PickleValue = { .persistent($0) }) throws -> PickleValue {
        var reader = Reader(bytes: bytes)
        var stack: [PickleValue] = []
        var marks: [Int] = []
        var memo: [Int: PickleValue] = [:]

        func pop(_ at: Int) throws -> PickleValue {
            guard let v = stack.popLast() else { throw PickleError(offset: at, reason: "stack underflow") }
            return v
        }
        func popMark(_ at: Int) throws -> [PickleValue] {
            guard let m = marks.popLast(), m <= stack.count else { throw PickleError(offset: at, reason: "no MARK for this opcode") }
            let items = Array(stack[m...])
            stack.removeSubrange(m...)
            return items
        }
        func call(_ callable: PickleValue, _ args: [PickleValue], at: Int) throws -> PickleValue {
            guard case let .global(module, name) = callable else {
                throw PickleError(offset: at, reason: "call of a non-global \(callable)")
            }
            if module == "collections" && name == "OrderedDict" && args.isEmpty { return .dict(PickleDict()) }
            // TorchScript wraps typed lists: build_intlist([0, 3]) is just the list.
            if module == "torch.jit._pickle" && name.hasPrefix("build_") && args.count == 1 { return args[0] }
            return .object(PickleObject(module: module, name: name, arguments: args))
        }

        while true {
            let at = reader.position
            let op = try reader.byte()
            switch op {
            case 0x80: _ = try reader.byte()  // PROTO
            case 0x95: _ = try reader.fixed(8)  // FRAME
            case 0x2E: return try pop(at)  // STOP
            case 0x28: marks.append(stack.count)  // MARK
            case 0x4E: stack.append(.none)
            case 0x88: stack.append(.bool(true))
            case 0x89: stack.append(.bool(false))
            case 0x4B: stack.append(.int(Int(try reader.byte())))  // BININT1
            case 0x4D: stack.append(.int(Int(try reader.fixed(2))))  // BININT2
            case 0x4A: stack.append(.int(Int(Int32(bitPattern: UInt32(try reader.fixed(4))))))  // BININT
            case 0x8A:  // LONG1
                let n = Int(try reader.byte())
                guard n <= 8 else { throw PickleError(offset: at, reason: "integer of \(n) bytes is too large") }
                let raw = try reader.bytes(n)
                var v: Int64 = 0
                for (i, b) in raw.enumerated() { v |= Int64(b) << (8 * Int64(i)) }
                if n > 0 && n < 8 && raw[n - 1] & 0x80 != 0 { v -= Int64(1) << (8 * Int64(n)) }
                stack.append(.int(Int(v)))
            case 0x47:  // BINFLOAT, big-endian double
                let raw = try reader.bytes(8)
                stack.append(.float(Double(bitPattern: raw.reduce(UInt64(0)) { $0 << 8 | UInt64($1) })))
            case 0x58: stack.append(.string(try reader.utf8(Int(try reader.fixed(4)), at: at)))  // BINUNICODE
            case 0x8C: stack.append(.string(try reader.utf8(Int(try reader.byte()), at: at)))  // SHORT_BINUNICODE
            case 0x42: stack.append(.bytes(try reader.bytes(Int(try reader.fixed(4)))))  // BINBYTES
            case 0x43: stack.append(.bytes(try reader.bytes(Int(try reader.byte()))))  // SHORT_BINBYTES
            case 0x29: stack.append(.tuple([]))
            case 0x74: stack.append(.tuple(try popMark(at)))
            case 0x85: stack.append(.tuple([try pop(at)]))
            case 0x86: let b = try pop(at), a = try pop(at); stack.append(.tuple([a, b]))
            case 0x87: let c = try pop(at), b = try pop(at), a = try pop(at); stack.append(.tuple([a, b, c]))
            case 0x5D: stack.append(.list(PickleList()))
            case 0x7D: stack.append(.dict(PickleDict()))
            case 0x61:  // APPEND
                let v = try pop(at)
                guard case let .list(l)? = stack.last else { throw PickleError(offset: at, reason: "APPEND to a non-list") }
                l.items.append(v)
            case 0x65:  // APPENDS
                let items = try popMark(at)
                guard case let .list(l)? = stack.last else { throw PickleError(offset: at, reason: "APPENDS to a non-list") }
                l.items.append(contentsOf: items)
            case 0x73:  // SETITEM
                let v = try pop(at), k = try pop(at)
                guard case let .dict(d)? = stack.last else { throw PickleError(offset: at, reason: "SETITEM on a non-dict") }
                d.items.append((k, v))
            case 0x75:  // SETITEMS
                let items = try popMark(at)
                guard items.count % 2 == 0, case let .dict(d)? = stack.last else { throw PickleError(offset: at, reason: "SETITEMS on a non-dict or odd item count") }
                for i in stride(from: 0, to: items.count, by: 2) { d.items.append((items[i], items[i + 1])) }
            case 0x63:  // GLOBAL "module\nname\n"
                let module = try reader.line(at: at), name = try reader.line(at: at)
                stack.append(.global(module: module, name: name))
            case 0x93:  // STACK_GLOBAL
                let name = try pop(at), module = try pop(at)
                guard let m = module.stringValue, let n = name.stringValue else { throw PickleError(offset: at, reason: "STACK_GLOBAL needs two strings") }
                stack.append(.global(module: m, name: n))
            case 0x81:  // NEWOBJ
                let args = try pop(at), cls = try pop(at)
                stack.append(try call(cls, args.tupleValue ?? [], at: at))
            case 0x52:  // REDUCE
                let args = try pop(at), callable = try pop(at)
                stack.append(try call(callable, args.tupleValue ?? [], at: at))
            case 0x62:  // BUILD
                let state = try pop(at)
                guard case let .object(o)? = stack.last else { throw PickleError(offset: at, reason: "BUILD on a non-object") }
                o.state = state
            case 0x51: stack.append(try persistentLoad(try pop(at)))  // BINPERSID
            case 0x71: memo[Int(try reader.byte())] = try top(stack, at)  // BINPUT
            case 0x72: memo[Int(try reader.fixed(4))] = try top(stack, at)  // LONG_BINPUT
            case 0x94: memo[memo.count] = try top(stack, at)  // MEMOIZE
            case 0x68, 0x6A:  // BINGET, LONG_BINGET
                let key = op == 0x68 ? Int(try reader.byte()) : Int(try reader.fixed(4))
                guard let v = memo[key] else { throw PickleError(offset: at, reason: "memo key \(key) was never stored") }
                stack.append(v)
            default:
                throw PickleError(offset: at, reason: String(format: "unsupported opcode 0x%02X", op))
            }
        }
    }

    private static func top(_ stack: [PickleValue], _ at: Int) throws -> PickleValue {
        guard let v = stack.last else { throw PickleError(offset: at, reason: "memo store from an empty stack") }
        return v
    }

    private struct Reader {
        let bytes: [UInt8]
        var position = 0

        mutating func byte() throws -> UInt8 {
            guard position < bytes.count else { throw PickleError(offset: position, reason: "data ends before STOP") }
            defer { position += 1 }
            return bytes[position]
        }
        mutating func bytes(_ n: Int) throws -> [UInt8] {
            guard n >= 0, n <= bytes.count - position else { throw PickleError(offset: position, reason: "length \(n) runs past the end") }
            defer { position += n }
            return Array(bytes[position..<(position + n)])
        }
        mutating func fixed(_ n: Int) throws -> UInt64 {
            try bytes(n).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        }
        mutating func utf8(_ n: Int, at: Int) throws -> String {
            guard let s = String(bytes: try bytes(n), encoding: .utf8) else { throw PickleError(offset: at, reason: "string is not UTF-8") }
            return s
        }
        mutating func line(at: Int) throws -> String {
            guard let end = bytes[position...].firstIndex(of: 0x0A) else { throw PickleError(offset: at, reason: "unterminated GLOBAL name") }
            let s = String(decoding: bytes[position..<end], as: UTF8.self)
            position = end + 1
            return s
        }
    }
}
