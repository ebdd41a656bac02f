/// The one op catalog. Every op is declared here once: operands, attributes, result-type rule,
/// the profiles that allow it, and its semantics. Printer, parser, verifier and the interpreter's
/// dispatch all read this table.

public enum OpKind: String, CaseIterable, Hashable, Sendable {
    case constant
    case fullyConnected = "fully_connected"
    case blockFullyConnected = "block_fully_connected"
    case matmul
    case add, sub, mul
    case scale
    case rmsNorm = "rms_norm"
    case silu
    case softmax
    case rope
    case exp, sigmoid, rsqrt, reciprocal
    case reduceSum = "reduce_sum"
    case reduceMax = "reduce_max"
    case rescale
    case table
    case normTable = "norm_table"
    case reshape, transpose, slice, concat
    case gather

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
    public func int(_ k: String, default d: Int) -> Int {
        if case let .int(v)? = attrs[k] { return v }
        return d
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

/// Integer semantics shared by the npu ops:
/// - two's complement; "saturate to T" clamps to T's range; no op wraps around;
/// - "round(v / 2^n)" is round half toward +∞: floor((v + 2^(n−1)) / 2^n) for n ≥ 1, exact for n = 0;
/// - accumulations (fully_connected, matmul, reduce_sum) are exact in i64 (inputs are bounded so
///   they cannot overflow: an NPU may use int48);
/// - quantized types say what integers mean: real = scale · q (zero point 0 throughout).
public enum OpCatalog {
    static let both: Set<Profile> = [.float, .npu]
    static let float: Set<Profile> = [.float]
    static let npu: Set<Profile> = [.npu]

    /// Attributes any op may carry as annotations (not part of its semantics).
    /// `range`: the calibrated absolute range of the result (written by the calibrate pass).
    /// `offset`: the result's byte offset in the function's arena (written by memory-plan).
    /// `channel_range`: a constant with the calibrated range of each channel of a fully_connected's input.
    public static let annotations: Set<String> = ["range", "offset", "channel_range"]

    static func isInt(_ t: TensorType) -> Bool { t.dtype.isInteger }
    static func widest(_ ts: [TensorType]) -> Int { ts.map(\.dtype.byteSize).max() ?? 4 }

    /// add/sub: f32 → f32; integers (i8…i64) → i32 when both fit in i32, else i64; saturating.
    static func addLike(_ kind: OpKind, _ doc: String) -> OpSpec {
        OpSpec(kind: kind, operands: .exactly(2), attributes: [], profiles: both, doc: doc) { ops, _ in
            guard let s = broadcastShape(ops[0].shape, ops[1].shape) else {
                throw OpTypeError("shapes \(ops[0].shape) and \(ops[1].shape) do not broadcast")
            }
            if ops.allSatisfy({ $0.dtype == .f32 }) { return .f32(s) }
            guard ops.allSatisfy(isInt) else { throw OpTypeError("operands must be both f32 or both integer") }
            return TensorType(widest(ops) <= 4 ? .i32 : .i64, s)
        }
    }

    static func unaryFloat(_ kind: OpKind, _ doc: String) -> OpSpec {
        OpSpec(kind: kind, operands: .exactly(1), attributes: [], profiles: float, doc: doc) { ops, _ in
            try sameF32(ops, kind.rawValue); return ops[0]
        }
    }

    static func reduce(_ kind: OpKind, _ doc: String, _ intResult: @escaping @Sendable (TensorType) -> DType) -> OpSpec {
        OpSpec(kind: kind, operands: .exactly(1), attributes: [AttrSpec(name: "axis", kind: .int, required: true)],
               profiles: both, doc: doc) { ops, at in
            let a = try normAxis(at.int("axis"), ops[0].rank)
            var shape = ops[0].shape
            shape[a] = 1
            if ops[0].dtype == .f32 { return .f32(shape) }
            let d = intResult(ops[0])
            return TensorType(d, shape, quant: d == ops[0].dtype ? ops[0].quant : nil)
        }
    }

    public static let specs: [OpKind: OpSpec] = {
        var t: [OpKind: OpSpec] = [:]
        func add(_ s: OpSpec) { t[s.kind] = s }

        add(OpSpec(kind: .constant, operands: .exactly(0), attributes: [AttrSpec(name: "name", kind: .symbol, required: true)],
                   profiles: both, doc: "The module constant `name`; its type is the constant's declared type.") { _, _ in
            throw OpTypeError("constant's type comes from its declaration")
        })

        add(OpSpec(kind: .fullyConnected, operands: .between(2, 3), attributes: [], profiles: both,
                   doc: """
                   y[..., n] = Σ_k x[..., k] · w[n, k] (+ bias[n]); w is stored [out, in] as in GGUF. \
                   f32: all operands f32. Integer: x i16 (or i8), w i8, bias i64; y is the exact i64 sum.
                   """) { ops, _ in
            let x = ops[0], w = ops[1]
            guard w.rank == 2, x.rank >= 1, x.shape.last == w.shape[1] else {
                throw OpTypeError("x \(x.shape) and w \(w.shape) do not fit: need x[..., K] and w[N, K]")
            }
            if ops.count == 3, ops[2].shape != [w.shape[0]] { throw OpTypeError("bias \(ops[2].shape) must be [\(w.shape[0])]") }
            let shape = Array(x.shape.dropLast()) + [w.shape[0]]
            if ops.allSatisfy({ $0.dtype == .f32 }) { return .f32(shape) }
            guard x.dtype == .i16 || x.dtype == .i8, w.dtype == .i8, ops.count == 2 || ops[2].dtype == .i64 else {
                throw OpTypeError("integer fully_connected takes x i16/i8, w i8 (and bias i64), got \(ops.map(\.dtype.rawValue))")
            }
            return TensorType(.i64, shape)
        })

        add(OpSpec(kind: .blockFullyConnected, operands: .exactly(4),
                   attributes: [AttrSpec(name: "block", kind: .int, required: true), AttrSpec(name: "bits", kind: .int, required: false)],
                   profiles: npu,
                   doc: """
                   Block-scaled weights (GGUF's Q4_1/Q8_0 blocks, held exactly): the K inputs fall in blocks of B = `block` \
                   (1 ≤ B ≤ 512, B divides K); y[..., n] = Σ_b scale[n, b] · Σ_{k∈b} x[..., k] · w[n, k] + offset[n, b] · Σ_{k∈b} x[..., k]. \
                   x i16 (or i8); `bits` 8 (default): w i8 [N, K]; `bits` 4: w i8 [N, K/2] holds levels 0…15, two per byte, \
                   input 2i in the low nibble (B even). scale and offset i16 [N, K/B]; y is the exact i64 sum (each \
                   block's Σ x·w fits in i32).
                   """) { ops, at in
            let x = ops[0], w = ops[1], b = try at.int("block"), bits = at.int("bits", default: 8)
            guard bits == 8 || bits == 4 else { throw OpTypeError("bits must be 8 or 4, got \(bits)") }
            guard w.rank == 2, x.rank >= 1, let k = x.shape.last, w.shape[1] * (8 / bits) == k else {
                throw OpTypeError("x \(x.shape) and w \(w.shape) do not fit: need x[..., K] and w[N, \(bits == 4 ? "K/2" : "K")]")
            }
            guard (1...512).contains(b), k % b == 0, bits == 8 || b % 2 == 0 else {
                throw OpTypeError("block \(b) must lie in 1...512 and divide K = \(k)\(bits == 4 ? " (and be even with 4 bits)" : "")")
            }
            for (i, name) in [(2, "scale"), (3, "offset")] where ops[i].shape != [w.shape[0], k / b] || ops[i].dtype != .i16 {
                throw OpTypeError("\(name) must be i16 [\(w.shape[0]), \(k / b)], got \(ops[i].dtype.rawValue) \(ops[i].shape)")
            }
            guard x.dtype == .i16 || x.dtype == .i8, w.dtype == .i8 else {
                throw OpTypeError("block_fully_connected takes x i16/i8 and w i8, got \(x.dtype.rawValue) and \(w.dtype.rawValue)")
            }
            return TensorType(.i64, Array(x.shape.dropLast()) + [w.shape[0]])
        })

        add(OpSpec(kind: .matmul, operands: .exactly(2), attributes: [AttrSpec(name: "transpose_b", kind: .bool, required: false)],
                   profiles: both,
                   doc: """
                   Batched: c[..., m, n] = Σ_k a[..., m, k] · b[..., k, n] (b[..., n, k] with transpose_b); batch dims equal. \
                   f32, or a and b i16 with c the exact i64 sum.
                   """) { ops, at in
            let a = ops[0], b = ops[1]
            let tb = at.bool("transpose_b", default: false)
            guard a.rank >= 2, a.rank == b.rank, a.shape.dropLast(2) == b.shape.dropLast(2) else {
                throw OpTypeError("operands \(a.shape) and \(b.shape) need equal rank ≥ 2 and equal batch dims")
            }
            let k = a.shape[a.rank - 1]
            let bk = tb ? b.shape[b.rank - 1] : b.shape[b.rank - 2]
            let n = tb ? b.shape[b.rank - 2] : b.shape[b.rank - 1]
            guard k == bk else { throw OpTypeError("contraction sizes differ: \(k) vs \(bk)") }
            let shape = Array(a.shape.dropLast()) + [n]
            if a.dtype == .f32 && b.dtype == .f32 { return .f32(shape) }
            guard a.dtype == .i16 && b.dtype == .i16 else { throw OpTypeError("integer matmul takes i16 × i16, got \(a.dtype.rawValue) × \(b.dtype.rawValue)") }
            return TensorType(.i64, shape)
        })

        add(addLike(.add, "a + b, numpy broadcasting. Integer: exact, saturated to the result type (i32, or i64 when an operand is i64)."))
        add(addLike(.sub, "a − b, numpy broadcasting. Integer: exact, saturated to the result type (i32, or i64 when an operand is i64)."))
        add(OpSpec(kind: .mul, operands: .exactly(2), attributes: [], profiles: both,
                   doc: "a · b, numpy broadcasting. Integer: exact; i32 when both operands are i8/i16, else i64 (saturated).") { ops, _ in
            guard let s = broadcastShape(ops[0].shape, ops[1].shape) else {
                throw OpTypeError("shapes \(ops[0].shape) and \(ops[1].shape) do not broadcast")
            }
            if ops.allSatisfy({ $0.dtype == .f32 }) { return .f32(s) }
            guard ops.allSatisfy(isInt) else { throw OpTypeError("operands must be both f32 or both integer") }
            return TensorType(widest(ops) <= 2 ? .i32 : .i64, s)
        })

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

        add(unaryFloat(.silu, "x · sigmoid(x)."))

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

        add(unaryFloat(.exp, "e^x."))
        add(unaryFloat(.sigmoid, "1 / (1 + e^−x)."))
        add(unaryFloat(.rsqrt, "1 / sqrt(x)."))
        add(unaryFloat(.reciprocal, "1 / x."))

        add(reduce(.reduceSum, "Sum along axis, kept as a dimension of size 1. Integer: the exact i64 sum.") { _ in .i64 })
        add(reduce(.reduceMax, "Maximum along axis, kept as a dimension of size 1; same type as the input.") { $0.dtype })

        add(OpSpec(kind: .rescale, operands: .between(1, 3),
                   attributes: [AttrSpec(name: "multiplier", kind: .int, required: false), AttrSpec(name: "shift", kind: .int, required: false),
                                AttrSpec(name: "out", kind: .string, required: true), AttrSpec(name: "scale", kind: .float, required: false)],
                   profiles: npu,
                   doc: """
                   y = saturate_out(round(x · multiplier / 2^shift)), the product exact (128-bit). Per tensor: the \
                   attributes `multiplier` and `shift`; per channel (last axis): operands 2 and 3, i32 constants with one \
                   entry per channel. A multiplier is a signed 32-bit value; a shift lies in 0...62. `out` is i8, i16, i32 \
                   or i64; `scale`, when given, is the result's quantization scale (real = scale · y).
                   """) { ops, at in
            let x = ops[0]
            guard isInt(x) else { throw OpTypeError("rescale takes an integer input, got \(x.dtype.rawValue)") }
            if ops.count == 1 {
                let m = try at.int("multiplier"), sh = try at.int("shift")
                guard abs(m) < (1 << 31), (0...62).contains(sh) else { throw OpTypeError("multiplier must fit in 32 bits and shift lie in 0...62") }
            } else {
                guard ops.count == 3, ops[1].dtype == .i32, ops[2].dtype == .i32, ops[1].shape == [x.shape.last ?? 0], ops[2].shape == ops[1].shape else {
                    throw OpTypeError("per-channel rescale takes i32 multipliers and shifts of shape [\(x.shape.last ?? 0)], got \(ops.dropFirst().map(\.description))")
                }
                guard at.attrs["multiplier"] == nil, at.attrs["shift"] == nil else { throw OpTypeError("give multiplier and shift either as attributes or as operands") }
            }
            guard let out = DType(rawValue: try at.string("out")), out.isInteger else { throw OpTypeError("out must be i8, i16, i32 or i64") }
            var q: Quantization?
            if case let .float(sc)? = at.attrs["scale"] { q = .perTensor(scale: Float(sc), zeroPoint: 0) }
            return TensorType(out, x.shape, quant: q)
        })

        add(OpSpec(kind: .table, operands: .exactly(2), attributes: [], profiles: npu,
                   doc: """
                   int16 lookup with interpolation (TOSA TABLE, 16-bit): u = x + 32768, i = u >> 7, f = u & 127; \
                   y = tbl[i] · 128 + (tbl[i+1] − tbl[i]) · f, an i32 with 7 fraction bits. tbl is i16[513].
                   """) { ops, _ in
            guard ops[0].dtype == .i16 else { throw OpTypeError("table input must be i16, got \(ops[0].dtype.rawValue)") }
            guard ops[1].dtype == .i16, ops[1].shape == [513] else { throw OpTypeError("table must be i16[513], got \(ops[1])") }
            return TensorType(.i32, ops[0].shape)
        })

        add(OpSpec(kind: .normTable, operands: .exactly(2),
                   attributes: [AttrSpec(name: "power", kind: .int, required: true), AttrSpec(name: "shift", kind: .int, required: true)],
                   profiles: npu,
                   doc: """
                   x^(−power/2) over a wide range (power 1: rsqrt, 2: reciprocal), by leading-zero normalization and a \
                   table (TOSA composes this from CLZ, shifts and TABLE). v = max(x, 1) (i32 or i64); k = ⌊log2(v)/2⌋, so \
                   v = m · 4^k with m in [1, 4); vn = v · 2^(61 − 2k) (exact shift; a right shift by 1 when 2k = 62); \
                   u = vn >> 47 (in [16384, 65536)), i = u >> 7, f = u & 127; r = tbl[i] · 128 + (tbl[i+1] − tbl[i]) · f; \
                   y = r · 2^(shift − power·k): a saturating left shift, or round(r / 2^(power·k − shift)). \
                   tbl[i] holds g(i/128) for the m-domain function g(m) = m^(−power/2) (entries below 128 are unused).
                   """) { ops, at in
            guard ops[0].dtype == .i32 || ops[0].dtype == .i64 else { throw OpTypeError("norm_table input must be i32 or i64, got \(ops[0].dtype.rawValue)") }
            guard ops[1].dtype == .i16, ops[1].shape == [513] else { throw OpTypeError("table must be i16[513], got \(ops[1])") }
            let p = try at.int("power")
            guard p == 1 || p == 2 else { throw OpTypeError("power must be 1 (rsqrt) or 2 (reciprocal), got \(p)") }
            _ = try at.int("shift")
            return TensorType(.i64, ops[0].shape)
        })

        add(OpSpec(kind: .reshape, operands: .exactly(1), attributes: [AttrSpec(name: "shape", kind: .ints, required: true)],
                   profiles: both, doc: "Same elements in row-major order, new static shape.") { ops, at in
            let s = try at.ints("shape")
            guard s.allSatisfy({ $0 >= 0 }), s.reduce(1, *) == ops[0].elementCount else {
                throw OpTypeError("cannot reshape \(ops[0].shape) (\(ops[0].elementCount) elements) to \(s)")
            }
            if case .perChannel? = ops[0].quant { throw OpTypeError("reshape of a per-channel quantized tensor") }
            var r = ops[0]; r.shape = s
            return r
        })

        add(OpSpec(kind: .transpose, operands: .exactly(1), attributes: [AttrSpec(name: "perm", kind: .ints, required: true)],
                   profiles: both, doc: "Result dim k is input dim perm[k].") { ops, at in
            let p = try at.ints("perm")
            guard p.sorted() == Array(0..<ops[0].rank) else { throw OpTypeError("perm \(p) is not a permutation of 0..<\(ops[0].rank)") }
            if case .perChannel? = ops[0].quant { throw OpTypeError("transpose of a per-channel quantized tensor") }
            var r = ops[0]; r.shape = p.map { ops[0].shape[$0] }
            return r
        })

        add(OpSpec(kind: .slice, operands: .exactly(1),
                   attributes: [AttrSpec(name: "begin", kind: .ints, required: true), AttrSpec(name: "size", kind: .ints, required: true)],
                   profiles: both, doc: "A static box: begin and size per dim (constant bounds).") { ops, at in
            let b = try at.ints("begin"), s = try at.ints("size"), x = ops[0]
            guard b.count == x.rank, s.count == x.rank,
                  zip(zip(b, s), x.shape).allSatisfy({ $0.0 >= 0 && $0.1 >= 1 && $0.0 + $0.1 <= $1 }) else {
                throw OpTypeError("slice begin \(b) size \(s) is outside \(x.shape)")
            }
            if case .perChannel? = x.quant { throw OpTypeError("slice of a per-channel quantized tensor") }
            var r = x; r.shape = s
            return r
        })

        add(OpSpec(kind: .concat, operands: .atLeast(1), attributes: [AttrSpec(name: "axis", kind: .int, required: true)],
                   profiles: both, doc: "Joins operands along axis; other dims, dtype and quantization must match.") { ops, at in
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
        add(OpSpec(kind: .gather, operands: .exactly(2), attributes: [], profiles: float,
                   doc: "y[i..., :] = table[indices[i...], :]: a data-dependent row lookup (host side only; no NPU form).") { ops, _ in
            guard ops[0].rank == 2, ops[1].dtype == .i32 || ops[1].dtype == .i64 else {
                throw OpTypeError("gather takes table[V, D] and i32/i64 indices, got \(ops[0]) and \(ops[1])")
            }
            return TensorType(ops[0].dtype, ops[1].shape + [ops[0].shape[1]], quant: ops[0].quant)
        })
        return t
    }()
}
