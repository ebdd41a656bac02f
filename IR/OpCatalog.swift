/// The one op catalog. Every op is declared here once: operands, attributes, result-type rule,
/// the profiles that allow it, and its semantics. Printer, parser, verifier and the interpreter's
/// dispatch all read this table.

public enum OpKind: String, CaseIterable, Hashable, Sendable {
    case constant
    case fullyConnected = "fully_connected"
    case matmul
    case add, sub, mul
    case scale
    case rmsNorm = "rms_norm"
    case silu
    case softmax
    case rope
    case reshape, transpose, slice, concat

    public var spec: OpSpec { OpCatalog.specs[self]! }
}

public enum Profile: String, CaseIterable, Sendable {
    /// Import and calibration: f32 tensors, high-level ops.
    case float
    /// The NPU target: int8/int16 ops only (added by the lowering issue).
    case npu
}

public enum AttrKind: Sendable { case int, float, ints, floats, string, bool, symbol }

public struct AttrSpec: Sendable {
    public let name: String
    public let kind: AttrKind
    public let required: Bool
}

public enum Arity: Sendable {
    case exactly(Int)
    case between(Int, Int)
    case atLeast(Int)

    func allows(_ n: Int) -> Bool {
        switch self {
        case let .exactly(k): return n == k
        case let .between(a, b): return n >= a && n <= b
        case let .atLeast(k): return n >= k
        }
    }

    var text: String {
        switch self {
        case let .exactly(k): return "\(k)"
        case let .between(a, b): return "\(a) to \(b)"
        case let .atLeast(k): return "at least \(k)"
        }
    }
}

/// Reads typed attributes for a result-type rule; a missing or mistyped one is a diagnostic.
public struct AttrReader {
    let attrs: [String: Attribute]
    public init(_ attrs: [String: Attribute]) { self.attrs = attrs }
    public func int(_ k: String) throws -> Int {
        guard case let .int(v)? = attrs[k] else { throw OpTypeError("attribute '\(k)' must be an int") }
        return v
    }
    public func ints(_ k: String) throws -> [Int] {
        guard case let .ints(v)? = attrs[k] else { throw OpTypeError("attribute '\(k)' must be an int list") }
        return v
    }
    public func float(_ k: String) throws -> Double {
        switch attrs[k] {
        case let .float(v)?: return v
        case let .int(v)?: return Double(v)
        default: throw OpTypeError("attribute '\(k)' must be a float")
        }
    }
    public func string(_ k: String) throws -> String {
        guard case let .string(v)? = attrs[k] else { throw OpTypeError("attribute '\(k)' must be a string") }
        return v
    }
    public func bool(_ k: String, default d: Bool) -> Bool {
        if case let .bool(v)? = attrs[k] { return v }
        return d
    }
}

public struct OpTypeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ m: String) { description = m }
}

public typealias TypeRule = (_ operands: [TensorType], _ attrs: AttrReader) throws -> TensorType

public struct OpSpec: Sendable {
    public let kind: OpKind
    public let operands: Arity
    public let attributes: [AttrSpec]
    public let profiles: Set<Profile>
    /// Semantics, including (for integer ops) rounding, saturation and accumulator widths.
    public let doc: String
    let rule: @Sendable (_ operands: [TensorType], _ attrs: AttrReader) throws -> TensorType

    /// The result type for these operands and attributes, or a message saying what is wrong.
    public func resultType(_ operands: [TensorType], _ attributes: [String: Attribute]) throws -> TensorType {
        try rule(operands, AttrReader(attributes))
    }
}

func sameF32(_ ts: [TensorType], _ what: String) throws {
    for t in ts where t.dtype != .f32 { throw OpTypeError("\(what) takes f32 operands, got \(t.dtype.rawValue)") }
}

func normAxis(_ axis: Int, _ rank: Int) throws -> Int {
    let a = axis < 0 ? axis + rank : axis
    guard a >= 0 && a < rank else { throw OpTypeError("axis \(axis) is out of range for rank \(rank)") }
    return a
}

public enum OpCatalog {
    static let float: Set<Profile> = [.float]

    static func elementwise(_ kind: OpKind, _ doc: String) -> OpSpec {
        OpSpec(kind: kind, operands: .exactly(2), attributes: [], profiles: float, doc: doc) { ops, _ in
            try sameF32(ops, kind.rawValue)
            guard let s = broadcastShape(ops[0].shape, ops[1].shape) else {
                throw OpTypeError("shapes \(ops[0].shape) and \(ops[1].shape) do not broadcast")
            }
            return .f32(s)
        }
    }

    public static let specs: [OpKind: OpSpec] = {
        var t: [OpKind: OpSpec] = [:]
        func add(_ s: OpSpec) { t[s.kind] = s }

        add(OpSpec(kind: .constant, operands: .exactly(0), attributes: [AttrSpec(name: "name", kind: .symbol, required: true)],
                   profiles: [.float, .npu],
                   doc: "The module constant `name`; its type is the constant's declared type.") { _, _ in
            throw OpTypeError("constant's type comes from its declaration")
        })

        add(OpSpec(kind: .fullyConnected, operands: .between(2, 3), attributes: [], profiles: float,
                   doc: "y[..., n] = Σ_k x[..., k] · w[n, k] (+ bias[n]). w is stored [out, in] as in GGUF.") { ops, _ in
            try sameF32(ops, "fully_connected")
            let x = ops[0], w = ops[1]
            guard w.rank == 2, x.rank >= 1, x.shape.last == w.shape[1] else {
                throw OpTypeError("x \(x.shape) and w \(w.shape) do not fit: need x[..., K] and w[N, K]")
            }
            if ops.count == 3, ops[2].shape != [w.shape[0]] { throw OpTypeError("bias \(ops[2].shape) must be [\(w.shape[0])]") }
            return .f32(Array(x.shape.dropLast()) + [w.shape[0]])
        })

        add(OpSpec(kind: .matmul, operands: .exactly(2), attributes: [AttrSpec(name: "transpose_b", kind: .bool, required: false)],
                   profiles: float,
                   doc: "Batched: c[..., m, n] = Σ_k a[..., m, k] · b[..., k, n] (b[..., n, k] with transpose_b). Batch dims must be equal.") { ops, at in
            try sameF32(ops, "matmul")
            let a = ops[0], b = ops[1]
            let tb = at.bool("transpose_b", default: false)
            guard a.rank >= 2, a.rank == b.rank, a.shape.dropLast(2) == b.shape.dropLast(2) else {
                throw OpTypeError("operands \(a.shape) and \(b.shape) need equal rank ≥ 2 and equal batch dims")
            }
            let k = a.shape[a.rank - 1]
            let bk = tb ? b.shape[b.rank - 1] : b.shape[b.rank - 2]
            let n = tb ? b.shape[b.rank - 2] : b.shape[b.rank - 1]
            guard k == bk else { throw OpTypeError("contraction sizes differ: \(k) vs \(bk)") }
            return .f32(Array(a.shape.dropLast()) + [n])
        })

        add(elementwise(.add, "a + b, numpy broadcasting."))
        add(elementwise(.sub, "a − b, numpy broadcasting."))
        add(elementwise(.mul, "a · b, numpy broadcasting."))

        add(OpSpec(kind: .scale, operands: .exactly(1), attributes: [AttrSpec(name: "factor", kind: .float, required: true)],
                   profiles: float, doc: "x · factor.") { ops, at in
            try sameF32(ops, "scale"); _ = try at.float("factor"); return ops[0]
        })

        add(OpSpec(kind: .rmsNorm, operands: .exactly(2), attributes: [AttrSpec(name: "eps", kind: .float, required: true)],
                   profiles: float, doc: "y = x / sqrt(mean(x², last axis) + eps) · w; w has the last axis's size.") { ops, at in
            try sameF32(ops, "rms_norm"); _ = try at.float("eps")
            guard let d = ops[0].shape.last, ops[1].shape == [d] else { throw OpTypeError("weight \(ops[1].shape) must be [\(ops[0].shape.last ?? 0)]") }
            return ops[0]
        })

        add(OpSpec(kind: .silu, operands: .exactly(1), attributes: [], profiles: float, doc: "x · sigmoid(x).") { ops, _ in
            try sameF32(ops, "silu"); return ops[0]
        })

        add(OpSpec(kind: .softmax, operands: .exactly(1), attributes: [AttrSpec(name: "axis", kind: .int, required: true)],
                   profiles: float, doc: "exp(x − max) / Σ exp(x − max) along axis.") { ops, at in
            try sameF32(ops, "softmax"); _ = try normAxis(at.int("axis"), ops[0].rank); return ops[0]
        })

        add(OpSpec(kind: .rope, operands: .exactly(3), attributes: [AttrSpec(name: "mode", kind: .string, required: true)],
                   profiles: float,
                   doc: """
                   Rotary embedding of x[B, H, T, D] with cos/sin[T, D/2]: pair i of a head is rotated by angle i of its \
                   position. mode "norm" pairs (2i, 2i+1) (llama GGUFs); "neox" pairs (i, i + D/2) (qwen2).
                   """) { ops, at in
            try sameF32(ops, "rope")
            let mode = try at.string("mode")
            guard mode == "norm" || mode == "neox" else { throw OpTypeError("mode must be \"norm\" or \"neox\", got \"\(mode)\"") }
            let x = ops[0]
            guard x.rank == 4, x.shape[3] % 2 == 0 else { throw OpTypeError("x must be [B, H, T, D] with even D, got \(x.shape)") }
            let want = [x.shape[2], x.shape[3] / 2]
            guard ops[1].shape == want, ops[2].shape == want else { throw OpTypeError("cos/sin must be \(want), got \(ops[1].shape), \(ops[2].shape)") }
            return x
        })

        add(OpSpec(kind: .reshape, operands: .exactly(1), attributes: [AttrSpec(name: "shape", kind: .ints, required: true)],
                   profiles: [.float, .npu], doc: "Same elements in row-major order, new static shape.") { ops, at in
            let s = try at.ints("shape")
            guard s.allSatisfy({ $0 >= 0 }), s.reduce(1, *) == ops[0].elementCount else {
                throw OpTypeError("cannot reshape \(ops[0].shape) (\(ops[0].elementCount) elements) to \(s)")
            }
            var r = ops[0]; r.shape = s
            if case .perChannel? = r.quant { throw OpTypeError("reshape of a per-channel quantized tensor") }
            return r
        })

        add(OpSpec(kind: .transpose, operands: .exactly(1), attributes: [AttrSpec(name: "perm", kind: .ints, required: true)],
                   profiles: [.float, .npu], doc: "y[i_perm[0], ...] = x[i_0, ...]: result dim k is input dim perm[k].") { ops, at in
            let p = try at.ints("perm")
            guard p.sorted() == Array(0..<ops[0].rank) else { throw OpTypeError("perm \(p) is not a permutation of 0..<\(ops[0].rank)") }
            var r = ops[0]; r.shape = p.map { ops[0].shape[$0] }
            return r
        })

        add(OpSpec(kind: .slice, operands: .exactly(1),
                   attributes: [AttrSpec(name: "begin", kind: .ints, required: true), AttrSpec(name: "size", kind: .ints, required: true)],
                   profiles: [.float, .npu], doc: "A static box: begin and size per dim (constant bounds).") { ops, at in
            let b = try at.ints("begin"), s = try at.ints("size"), x = ops[0]
            guard b.count == x.rank, s.count == x.rank,
                  zip(zip(b, s), x.shape).allSatisfy({ $0.0 >= 0 && $0.1 >= 1 && $0.0 + $0.1 <= $1 }) else {
                throw OpTypeError("slice begin \(b) size \(s) is outside \(x.shape)")
            }
            var r = x; r.shape = s
            return r
        })

        add(OpSpec(kind: .concat, operands: .atLeast(1), attributes: [AttrSpec(name: "axis", kind: .int, required: true)],
                   profiles: [.float, .npu], doc: "Joins operands along axis; other dims and types must match.") { ops, at in
            let a = try normAxis(at.int("axis"), ops[0].rank)
            var r = ops[0]
            for o in ops.dropFirst() {
                guard o.dtype == r.dtype, o.quant == r.quant, o.rank == r.rank,
                      (0..<o.rank).allSatisfy({ $0 == a || o.shape[$0] == r.shape[$0] }) else {
                    throw OpTypeError("operand \(o) does not fit \(ops[0]) along axis \(a)")
                }
                r.shape[a] += o.shape[a]
            }
            return r
        })
        return t
    }()
}
