import ZOIR

/// legalize-npu: checks that every function fits the npu profile and refuses anything else with a
/// diagnostic naming the op, its location and why: float ops or dtypes, data-dependent indexing
/// (gather), dynamic shapes. It changes nothing; its output is its input.
public struct LegalizeNPUPass: Pass {
    public let name = "legalize-npu"
    public init() {}

    public func run(_ m: Module) throws -> Module {
        var diags: [Diagnostic] = []
        for f in m.functions {
            for (i, p) in f.params.enumerated() {
                if !p.type.isStatic { diags.append(Diagnostic(function: f.name, value: i, message: "parameter \"\(p.name)\" has a dynamic shape \(p.type): NPU graphs are static")) }
                if p.type.dtype == .f32 { diags.append(Diagnostic(function: f.name, value: i, message: "parameter \"\(p.name)\" is f32: the npu profile is integer-only (quantize first)")) }
            }
            for (i, op) in f.ops.enumerated() {
                let id = f.params.count + i
                func refuse(_ why: String) { diags.append(Diagnostic(function: f.name, value: id, op: op.kind.rawValue, loc: op.loc, message: why)) }
                if op.kind == .gather {
                    refuse("gather is data-dependent indexing, which a mobile NPU delegates back to the CPU (SELECT_OPS); look rows up on the host")
                    continue
                }
                if !op.kind.spec.profiles.contains(.npu) {
                    refuse("'\(op.kind.rawValue)' is a float-profile op with no npu form (decompose and quantize first)")
                    continue
                }
                if !op.type.isStatic { refuse("result shape \(op.type) is dynamic: NPU graphs are static"); continue }
                if op.type.dtype == .f32 { refuse("computes in f32 (\(op.type)): the npu profile is integer-only") }
            }
        }
        if !diags.isEmpty { throw PassError(pass: name, diags) }
        try Verifier.verify(m, profile: .npu)
        return m
    }
}
