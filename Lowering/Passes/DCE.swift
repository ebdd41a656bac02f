import ZOIR

/// dce: drops ops whose results nothing uses (results and their transitive operands stay),
/// renumbers values, and drops constants no function refers to.
public struct DCEPass: Pass {
    public let name = "dce"
    public init() {}

    public func run(_ m: Module) throws -> Module {
        let mb = ModuleBuilder(emptyFunctionsOf: m)
        for f in m.functions {
            var live = Set(f.resultValues)
            for (i, op) in f.ops.enumerated().reversed() where live.contains(f.params.count + i) {
                live.formUnion(op.operands)
            }
            var rw = FunctionRewriter(f, into: mb)
            for (i, op) in f.ops.enumerated() where live.contains(f.params.count + i) {
                try rw.copy(op, id: f.params.count + i)
            }
            rw.finish()
        }
        mb.removeUnusedConstants()
        return mb.module
    }
}
