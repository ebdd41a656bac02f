/// Where each value of a function lives in one block of memory (the arena), by liveness: a value
/// occupies [offset, offset + bytes) from its definition to its last use, and a freed range is
/// reused (first fit, 64-byte aligned). A reshape shares its operand's bytes; constants live in
/// the weight segments, not the arena. The first op of a fused pair (`FusedPairs`) is never
/// stored: it has no place, and its consumer's result is placed when the pair runs (at the
/// producer). memory-plan writes this plan into the IR; the interpreter runs in it.
public struct ArenaPlan: Equatable, Sendable {
    public static let alignment = 64
    /// Byte offset of every stored value (params, op results; reshapes at their operand's).
    public var offsets: [Int: Int]
    /// The arena's size in bytes.
    public var peak: Int
    /// The most bytes live at once (a lower bound on any arena; first fit's gaps make up the rest).
    public var mostLive: Int

    public init(_ f: Function, fused: FusedPairs) {
        let n = f.valueCount, p = f.params.count
        // Storage root of each value (reshape aliases its operand).
        var root = Array(0..<n)
        for (i, op) in f.ops.enumerated() where op.kind == .reshape { root[p + i] = root[op.operands[0]] }
        // A fused consumer is written when its producer runs; the producer is never stored.
        var defined = Array(0..<n), stored = [Bool](repeating: true, count: n)
        for (i, c) in fused.rescale.merging(fused.rowSum, uniquingKeysWith: { a, _ in a }) {
            defined[p + c] = p + i
            stored[p + i] = false
        }
        var lastUse = Array(0..<n)
        for (i, op) in f.ops.enumerated() { for o in op.operands { lastUse[root[o]] = max(lastUse[root[o]], p + i) } }
        for v in f.resultValues { lastUse[root[v]] = n }
        var live: [(start: Int, end: Int, root: Int)] = []
        var offsets: [Int: Int] = [:]
        var peak = 0, mostLive = 0
        let order = (0..<n).filter { root[$0] == $0 && stored[$0] && f.op(defining: $0)?.kind != .constant }
            .sorted { (defined[$0], $0) < (defined[$1], $1) }
        for v in order {
            live.removeAll { lastUse[$0.root] < defined[v] }
            let size = (f.type(of: v).byteCount + Self.alignment - 1) / Self.alignment * Self.alignment
            var offset = 0
            for r in live.sorted(by: { $0.start < $1.start }) {
                if offset + size <= r.start { break }
                offset = max(offset, r.end)
            }
            offsets[v] = offset
            live.append((offset, offset + size, v))
            peak = max(peak, offset + size)
            mostLive = max(mostLive, live.reduce(0) { $0 + $1.end - $1.start })
        }
        for v in 0..<n where root[v] != v { offsets[v] = offsets[root[v]] }
        self.offsets = offsets
        self.peak = peak
        self.mostLive = mostLive
    }
}
