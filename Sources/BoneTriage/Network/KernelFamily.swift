import CKernels
import Foundation

/// The engine's kernel families (Sources/CKernels): the convolution micro-kernel, the Winograd
/// transforms and the pools, compiled once per instruction set and chosen at run time.
///
/// Every family computes the same network. `avx2` and `avx512` sum each output in the same order with
/// fused multiply-adds, so they give the same bits; `portable` rounds differently (within 1e-5).
public enum KernelFamily: String, CaseIterable, Sendable, CustomStringConvertible {
    /// Plain C as the baseline x86-64 target compiles it (4-wide SSE); any CPU.
    case portable
    /// 256-bit AVX2 + FMA: 6 pixels x 16 channels per micro-kernel call.
    case avx2
    /// 512-bit AVX-512F: 12 pixels x 16 channels per call, 16-wide transforms and pools.
    case avx512
    /// The `avx512` family's own code compiled for AVX2 (each 16-float vector in two halves). Slower
    /// than both: it exists so the suite checks that code on CPUs without AVX-512.
    case avx512OnAVX2 = "avx512-on-avx2"

    /// The families a user may choose in the configuration ([triage] kernels); the emulation is for tests.
    public static let selectable: [KernelFamily] = [.avx512, .avx2, .portable]

    var code: Int32 {
        switch self {
        case .portable: Int32(BT_KERNELS_PORTABLE)
        case .avx2: Int32(BT_KERNELS_AVX2)
        case .avx512: Int32(BT_KERNELS_AVX512)
        case .avx512OnAVX2: Int32(BT_KERNELS_AVX512_ON_AVX2)
        }
    }

    /// Whether this CPU (and its OS) can run the family.
    public var isSupported: Bool { bt_kernels_supported(code) != 0 }

    /// The fastest family this CPU runs: AVX-512, else AVX2, else portable.
    public static var best: KernelFamily {
        let code = bt_kernels_best()
        return allCases.first { $0.code == code } ?? .portable
    }

    /// Every family this CPU can run.
    public static var supported: [KernelFamily] { allCases.filter(\.isSupported) }

    /// Output pixels per micro-kernel call: row splits that are multiples of it waste nothing.
    var stripHeight: Int { Int(bt_kernels_strip_height(code)) }

    public var description: String { rawValue }

    /// What the family is, for `bonetriage bench` and the logs.
    public var summary: String {
        switch self {
        case .portable: "portable C (no AVX2)"
        case .avx2: "AVX2 + FMA, 256-bit"
        case .avx512: "AVX-512F, 512-bit"
        case .avx512OnAVX2: "AVX-512 code compiled for AVX2 (test emulation)"
        }
    }

    /// The environment variable that overrides the automatic choice (for `make train-default`, the
    /// benchmarks and the tests).
    public static let environmentVariable = "BONETRIAGE_KERNELS"

    /// `auto` (or nothing) is the best family; otherwise the named one, which this CPU must run.
    public static func named(_ name: String?) throws -> KernelFamily {
        let trimmed = (name ?? "").trimmingCharacters(in: .whitespaces).lowercased()
        if trimmed.isEmpty || trimmed == "auto" { return best }
        guard let family = KernelFamily(rawValue: trimmed) else {
            throw EngineError.unknownKernelFamily(trimmed)
        }
        guard family.isSupported else { throw EngineError.kernelFamilyUnsupported(family, cpu: CPUInfo.modelName) }
        return family
    }

    /// The family an engine uses when none is given: $BONETRIAGE_KERNELS when set, else the best.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> KernelFamily {
        try named(environment[environmentVariable])
    }
}

/// What the benchmarks print about the machine.
public enum CPUInfo {
    /// The CPU's model name from /proc/cpuinfo ("unknown CPU" elsewhere).
    public static var modelName: String {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        return info.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
    }

    /// The model name with the number of logical CPUs.
    public static var summary: String { "\(modelName), \(ProcessInfo.processInfo.activeProcessorCount) logical CPUs" }
}
