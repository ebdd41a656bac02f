import ZOIR

/// memory-plan: places every parameter and op result of each function in one arena, by liveness:
/// a value occupies [offset, offset + bytes) from its definition to its last use, and a freed range
/// is reused (first fit, 64-byte aligned). A reshape shares its operand's bytes. Constants live in
/// the weight segments, not the arena. Writes `offset` on each op and `arena.<function>` (the peak,
/// in bytes) on the module.
public struct MemoryPlanPass: Pass {
    public let name = "memory-plan"
    public static let alignment = 64
    public init() {}

    public struct Plan: Equatable {
        public var offsets: [Int: Int]
        public var peak: Int
    }

    public static func plan(_ f: Function) -> Plan {
        let n = f.valueCount
        // Storage root of each value (reshape aliases its operand) and the last use of each root.
        var root = Array(0..<n)
        for (i, op) in f.ops.enumerated() where op.kind == .reshape { root[f.params.count + i] = root[op.operands[0]] }
        var lastUse = Array(0..<n)
        for (i, op) in f.ops.enumerated() { for o in op.operands { lastUse[root[o]] = max(lastUse[root[o]], f.params.count + i) } }
        for v in f.resultValues { lastUse[root[v]] = n }
        var live: [(start: Int, end: Int, root: Int)] = []
        var offsets: [Int: Int] = [:]
        var peak = 0
        func isConstant(_ v: Int) -> Bool { f.op(defining: v)?.kind == .constant }
        for v in 0..<n where root[v] == v && !isConstant(v) {
            live.removeAll { lastUse[$0.root] < v }
            let size = (f.type(of: v).byteCount + alignment - 1) / alignment * alignment
            var offset = 0
            for r in live.sorted(by: { $0.start < $1.start }) {
                if offset + size <= r.start { break }
                offset = max(offset, r.end)
            }
            offsets[v] = offset
            live.append((offset, offset + size, v))
            peak = max(peak, offset + size)
        }
        for v in 0..<n where root[v] != v { offsets[v] = offsets[root[v]] }
        return Plan(offsets: offsets, peak: peak)
    }

    public func run(_ m: Module) throws -> Module {
        var out = m
        for (fi, f) in m.functions.enumerated() {
            let plan = Self.plan(f)
            for i in f.ops.indices {
                if let off = plan.offsets[f.params.count + i] { out.functions[fi].ops[i].attributes["offset"] = .int(off) }
            }
            out.attributes["arena.\(f.name)"] = .int(plan.peak)
        }
        return out
    }
}
