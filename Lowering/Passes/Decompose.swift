import ZOIR

/// decompose: rewrites the high-level float ops into primitives that each have an integer form:
///   rms_norm(x, w)  → x · rsqrt(reduce_sum(x·x)/D + eps) · w
///   silu(x)         → x · sigmoid(x)
///   softmax(x)      → e = exp(x − reduce_max(x)); e · reciprocal(reduce_sum(e))
///   rope(x, c, s)   → even/odd (or half) slices, x_e·c − x_o·s and x_e·s + x_o·c, joined back
/// Grouped-query attention is already primitive: the importer emits it as reshapes and batched
/// matmuls in which g query heads share one key/value head (no repeat of keys or values).
public struct DecomposePass: Pass {
    public let name = "decompose"
    public init() {}

    public func run(_ m: Module) throws -> Module {
        let mb = ModuleBuilder(emptyFunctionsOf: m)
        for f in m.functions {
            var rw = FunctionRewriter(f, into: mb)
            let b = rw.builder
            for (i, op) in f.ops.enumerated() {
                let id = f.params.count + i
                b.loc = op.loc
                let x = op.operands.map(rw.value)
                switch op.kind {
                case .rmsNorm:
                    let eps = try AttrReader(op.attributes).float("eps")
                    let d = x[0].type.shape.last!
                    let epsName = "eps.\(IRPrinter.floatText(eps))"
                    mb.declareConstant(epsName, .f32([1]), .data(.f32([Float(eps)])))
                    let sq = try b.emit(.mul, [x[0], x[0]])
                    let ss = try b.emit(.reduceSum, [sq], ["axis": .int(-1)])
                    let ms = try b.emit(.scale, [ss], ["factor": .float(1 / Double(d))])
                    let r = try b.emit(.rsqrt, [b.emit(.add, [ms, b.constant(epsName)])])
                    rw.map[id] = try b.emit(.mul, [b.emit(.mul, [x[0], r]), x[1]])
                case .silu:
                    rw.map[id] = try b.emit(.mul, [x[0], b.emit(.sigmoid, [x[0]])])
                case .softmax:
                    let axis = op.attributes["axis"]!
                    let mx = try b.emit(.reduceMax, [x[0]], ["axis": axis])
                    let e = try b.emit(.exp, [b.emit(.sub, [x[0], mx])])
                    let z = try b.emit(.reduceSum, [e], ["axis": axis])
                    rw.map[id] = try b.emit(.mul, [e, b.emit(.reciprocal, [z])])
                case .rope:
                    rw.map[id] = try rope(b, x[0], cos: x[1], sin: x[2], neox: AttrReader(op.attributes).string("mode") == "neox")
                default:
                    try rw.copy(op, id: id)
                }
            }
            rw.finish()
        }
        return mb.module
    }

    func rope(_ b: FunctionBuilder, _ x: Value, cos: Value, sin: Value, neox: Bool) throws -> Value {
        let s = x.type.shape, half = s[3] / 2
        let xe: Value, xo: Value
        if neox {
            xe = try b.emit(.slice, [x], ["begin": .ints([0, 0, 0, 0]), "size": .ints([s[0], s[1], s[2], half])])
            xo = try b.emit(.slice, [x], ["begin": .ints([0, 0, 0, half]), "size": .ints([s[0], s[1], s[2], half])])
        } else {
            let pairs = try b.emit(.reshape, [x], ["shape": .ints([s[0], s[1], s[2], half, 2])])
            func pick(_ k: Int) throws -> Value {
                let one = try b.emit(.slice, [pairs], ["begin": .ints([0, 0, 0, 0, k]), "size": .ints([s[0], s[1], s[2], half, 1])])
                return try b.emit(.reshape, [one], ["shape": .ints([s[0], s[1], s[2], half])])
            }
            xe = try pick(0)
            xo = try pick(1)
        }
        let ye = try b.emit(.sub, [b.emit(.mul, [xe, cos]), b.emit(.mul, [xo, sin])])
        let yo = try b.emit(.add, [b.emit(.mul, [xe, sin]), b.emit(.mul, [xo, cos])])
        if neox { return try b.emit(.concat, [ye, yo], ["axis": .int(3)]) }
        let e5 = try b.emit(.reshape, [ye], ["shape": .ints([s[0], s[1], s[2], half, 1])])
        let o5 = try b.emit(.reshape, [yo], ["shape": .ints([s[0], s[1], s[2], half, 1])])
        return try b.emit(.reshape, [b.emit(.concat, [e5, o5], ["axis": .int(4)])], ["shape": .ints(s)])
    }
}
