import Foundation

/// Where the engine's large buffers live: the packed weights (~95 MB, streamed once per image at batch 1)
/// and the activation maps. Buffers of 2 MiB and more are placed on 2 MiB boundaries and marked for
/// transparent huge pages (`madvise(MADV_HUGEPAGE)`; Debian's default THP mode honours only marked
/// memory), so streaming them takes one TLB entry per 2 MiB instead of one per 4 KiB. Where THP is
/// off the mark does nothing. $BONETRIAGE_HUGE_PAGES=0 leaves every buffer on ordinary pages (for
/// measuring the difference).
enum EngineMemory {
    static let hugePageBytes = 2 << 20

    static let hugePagesEnabled: Bool = ProcessInfo.processInfo.environment["BONETRIAGE_HUGE_PAGES"] != "0"

    /// `count` zeroed floats, 64-byte aligned (a 16-float row never straddles two cache lines).
    static func allocateFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        let huge = hugePagesEnabled && bytes >= hugePageBytes
        // Rounded up to whole huge pages: the last one is faulted in whole anyway.
        let size = huge ? (bytes + hugePageBytes - 1) / hugePageBytes * hugePageBytes : bytes
        let raw = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: huge ? hugePageBytes : 64)
        if huge { _ = madvise(raw, size, MADV_HUGEPAGE) }
        let floats = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        floats.initialize(repeating: 0, count: max(count, 1))
        return floats
    }
}
