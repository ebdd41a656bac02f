import ZOIR

/// memory-plan: places every parameter and op result of each function in one arena
/// (`ArenaPlan`: by liveness, first fit, 64-byte aligned; reshapes alias their operand; the first
/// op of a pair the runtime fuses is never stored). Writes `offset` on each stored op and
/// `arena.<function>` (the peak, in bytes) on the module. The interpreter runs in the same plan.
public struct MemoryPlanPass: Pass {
    public let name = "memory-plan"
    public init() {}

    public static func plan(_ f: Function) -> ArenaPlan { ArenaPlan(f, fused: FusedPairs(f)) }

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
