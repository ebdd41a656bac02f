import ZOIR
import ZORuntime

/// fold-constants: an op whose operands are all constants with known data is evaluated now (by the
/// reference interpreter's kernels) and replaced by a new constant `fold.<function>.<n>`.
/// Ops whose result would exceed `maxElements`, and constants without data, are left alone.
public struct FoldConstantsPass: Pass {
    public let name = "fold-constants"
    public var maxElements = 1 << 20
    public init() {}

    public func run(_ m: Module) throws -> Module {
        let mb = ModuleBuilder(emptyFunctionsOf: m)
        for f in m.functions {
            var rw = FunctionRewriter(f, into: mb)
            var known: [Int: TensorData] = [:]  // old value id → data, for constants and folded ops
            var folded = 0
            for (i, op) in f.ops.enumerated() {
                let id = f.params.count + i
                if op.kind == .constant, case let .symbol(n)? = op.attributes["name"], case let .data(d)? = mb.module.constantData[n] {
                    known[id] = d
                    try rw.copy(op, id: id)
                    continue
                }
                let inputs = op.operands.compactMap { known[$0] }
                if op.kind != .constant, !op.operands.isEmpty, inputs.count == op.operands.count, op.type.elementCount <= maxElements {
                    let d = try Interpreter.evaluate(op, inputs, op.operands.map { f.type(of: $0) })
                    let cname = "fold.\(f.name).\(folded)"
                    folded += 1
                    mb.declareConstant(cname, op.type, .data(d))
                    known[id] = d
                    rw.builder.loc = op.loc
                    rw.map[id] = try rw.builder.constant(cname)
                    continue
                }
                try rw.copy(op, id: id)
            }
            rw.finish()
        }
        mb.removeUnusedConstants()
        return mb.module
    }
}
