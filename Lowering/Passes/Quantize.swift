import Foundation
import ZOIR

/// quantize: rewrites a decomposed, calibrated float function into the npu profile.
///
/// - Weights of fully_connected become block_fully_connected's blocks of 32 (GGUF's Q4_1 and Q8_0
///   blocks held exactly; `WeightForm`), or symmetric per-output-channel i8 (`--weights per-channel`,
///   K not a multiple of 32, and the weight an edit rewrites).
/// - Activations are i16 with per-tensor scale range/32767 (`range` from calibrate), zero point 0.
/// - Exact integers are kept wide (i32/i64) as long as the catalog allows: accumulators, products,
///   sums and the softmax scores stay exact, and are rescaled to i16 only where an op needs i16
///   (fully_connected/matmul inputs, table inputs, results). Each value carries its real scale and
///   a bound on its magnitude (|q| < 2^bits), so no wide op can overflow.
/// - Nonlinearities are tables: sigmoid and exp (softmax, inputs ≤ 0, domain [−16, 0]) by `table`;
///   rsqrt (RMSNorm) and reciprocal (softmax) by `norm_table`, exact over the whole input range.
/// - A constant vector along the last axis that multiplies a value (the RMSNorm weight) folds into
///   a per-channel rescale; constants added to wide values are quantized at that value's scale.
public struct QuantizePass: Pass {
    public let name = "quantize"
    /// Quantized weights kept across runs (lowering several shapes of one model quantizes each weight once).
    public var cache: WeightCache?
    public init(cache: WeightCache? = nil) { self.cache = cache }

    public func run(_ m: Module) throws -> Module {
        let mb = ModuleBuilder(emptyFunctionsOf: m)
        for f in m.functions {
            var q = FunctionQuantizer(module: m, function: f, out: mb, cache: cache)
            try q.run()
        }
        mb.removeUnusedConstants()
        return mb.module
    }
}

/// The integer grid of a wide value passed between functions: real = scale · q, |q| < 2^bits.
/// A function lists results to keep wide in module attribute `wide_results.<function>` (names
/// joined by ","); quantize records each one's grid as `grid.<function>.<result>`, and a
/// parameter with attribute `grid.<function>.<param>` is declared on that grid.
public struct WideGrid: Equatable, Sendable {
    public var scale: Double
    public var bits: Int
    public var dtype: DType
    public init(scale: Double, bits: Int, dtype: DType) { self.scale = scale; self.bits = bits; self.dtype = dtype }

    public init?(_ a: Attribute?) {
        guard case let .floats(v)? = a, v.count == 3, let d = [DType.i16, .i32, .i64].first(where: { Double($0.byteSize) == v[2] }) else { return nil }
        self.init(scale: v[0], bits: Int(v[1]), dtype: d)
    }

    public var attribute: Attribute { .floats([scale, Double(bits), Double(dtype.byteSize)]) }
}

/// A value of the integer function: its integer value, real = scale · q, and |q| < 2^bits.
struct QValue {
    var value: Value
    var scale: Double
    var bits: Int
}

enum QSlot {
    /// A float constant, materialized only if a rule needs its values.
    case constant(name: String, source: ConstantSource, type: TensorType)
    case value(QValue)
}

/// A float constant's values (dequantizing a lazy GGUF-backed one now).
func floats(_ source: ConstantSource) throws -> [Float] {
    let d: TensorData
    switch source {
    case let .data(x): d = x
    case let .lazy(make): d = try make()
    }
    guard case let .f32(a) = d else { return d.int64Values.map(Float.init) }
    return a
}

/// How quantize lowers fully_connected weights.
/// - blocks: block_fully_connected, GGUF's blocks held exactly (zobench fidelity: mean KL 0.0037,
///   16/16 top-1, greedy 4/6), where K is a multiple of 32;
/// - perChannel: fully_connected with i8 per output channel (KL 0.0086, greedy 1/6), whose
///   kernel runs the step graphs' matmuls 1.24× faster (zobench kernels, 1 thread: 27.3 vs 22.0 GMAC/s).
public enum WeightForm: String, Sendable, CaseIterable {
    case blocks
    case perChannel = "per-channel"

    /// The form edit plans use unless told otherwise (`EditSettings.weights`): the model the user
    /// has. An edit found on per-channel weights is found on another model: on ZsRE records 0–49,
    /// 8 edits that reached p ≥ 0.53 there were not top-1 in llama.cpp (record 41: p 0.39 on
    /// per-channel weights, 0.02 in llama.cpp; found on blocks, top-1 in both).
    public static let editing = WeightForm.blocks
}

/// A weight in block form (block_fully_connected): real w[n, c] = rowScales[n] · (scale[n, b] · q[n, c]
/// + offset[n, b]) for c in block b, input channels scaled by the block's smoothing factor.
/// Blocks that are a 16-level grid (GGUF Q4_1) keep it exactly (q in 0...15, offset = the block's
/// minimum); others, Q8_0's included, are symmetric (q in ±127, offset 0), exact when they were
/// Q8_0. Scale and offset are i16 on the row's grid: within ~1e-4 of the block's own. A weight
/// whose blocks are all grids stores two levels per byte (bits 4).
struct BlockWeights {
    static let block = 32
    static let suffix = ".b32"
    /// i8 [n, k], or with bits 4 [n, k/2] (input 2i in the low nibble).
    var q: [Int8]
    var bits = 8
    var scale: [Int16]
    var offset: [Int16]
    var rowScales: [Double]
    var smoothing: [Double]

    /// `w` [n, k] with column c multiplied by t[c] (constant within each block).
    init(_ w: [Float], n: Int, k: Int, smoothing t: [Double]) {
        let B = Self.block, kb = k / B
        q = [Int8](repeating: 0, count: n * k)
        scale = [Int16](repeating: 0, count: n * kb)
        offset = scale
        rowScales = [Double](repeating: 1, count: n)
        smoothing = t
        var d = [Double](repeating: 0, count: kb), m = d
        var v = [Double](repeating: 0, count: B)
        var levels = [Int](repeating: 0, count: k)
        var grids = true
        for r in 0..<n {
            for b in 0..<kb {
                for i in 0..<B { v[i] = Double(w[r * k + b * B + i]) * t[b * B] }
                let lo = v.min()!, hi = v.max()!, step = (hi - lo) / 15
                // A 16-level grid: every value within a thousandth of a step of lo + j · step
                // (a constant block is one level).
                if step == 0 {
                    d[b] = 0; m[b] = lo
                    for i in 0..<B { levels[b * B + i] = 0 }
                } else if v.allSatisfy({ abs(($0 - lo) / step - (($0 - lo) / step).rounded()) < 1e-3 }) {
                    d[b] = step; m[b] = lo
                    for i in 0..<B { levels[b * B + i] = Int(((v[i] - lo) / step).rounded()) }
                } else {
                    grids = false
                    let amax = v.map(abs).max()!
                    d[b] = amax > 0 ? amax / 127 : 0; m[b] = 0
                    for i in 0..<B { levels[b * B + i] = amax > 0 ? Int((v[i] / d[b]).rounded()) : 0 }
                }
            }
            let top = zip(d, m).map { max(abs($0), abs($1)) }.max() ?? 0
            guard top > 0 else { continue }
            let sigma = top / 32767
            rowScales[r] = sigma
            for b in 0..<kb {
                scale[r * kb + b] = Int16((d[b] / sigma).rounded())
                offset[r * kb + b] = Int16((m[b] / sigma).rounded())
            }
            for c in 0..<k { q[r * k + c] = Int8(max(-127, min(127, levels[c]))) }
        }
        if grids {
            bits = 4
            q = (0..<(n * k / 2)).map { i in Int8(bitPattern: UInt8(q[2 * i]) | UInt8(q[2 * i + 1]) << 4) }
        }
    }
}

/// int8 weights, their row scales and the smoothing factors they were made with, by constant name.
public final class WeightCache {
    var entries: [String: (q: [Int8], scales: [Double], type: TensorType, smoothing: [Double])] = [:]
    var blocks: [String: BlockWeights] = [:]
    /// Weights kept in per-channel int8 form (those an edit rewrites: `requantize` and `restore`
    /// work on that form); every other fully_connected weight with K a multiple of 32 is blocked.
    public private(set) var perChannel: Set<String> = []
    /// How fully_connected weights are lowered.
    public let form: WeightForm
    public init(form: WeightForm = .blocks) { self.form = form }

    /// Keeps `weight` per channel in every later lowering. Returns the name of its block form's
    /// constant if a lowering already made one (graphs holding it would not see edits: the
    /// caller lowers them again).
    public func keepPerChannel(_ weight: String) -> String? {
        perChannel.insert(weight)
        let name = weight + BlockWeights.suffix
        return blocks.removeValue(forKey: name) == nil ? nil : name
    }

    /// Puts edited float weights for `weight` (e.g. "blk.6.ffn_down.weight") on the grid its int8
    /// form already has (same row scales and smoothing, so the lowered graphs stay valid), keeps
    /// them, and returns the int8 constant's name, its data, and how many values were clipped to ±127.
    public func requantize(_ weight: String, _ w: [Float]) throws -> (name: String, data: TensorData, clipped: Int) {
        let qname = weight + ".i8"
        guard let e = entries[qname], e.type.rank == 2, w.count == e.type.elementCount else {
            throw PassError(pass: "quantize", function: "-", message: "no int8 form of \(weight) with \(w.count) values to requantize")
        }
        let (q, clipped) = Self.int8(w, rowScales: e.scales, smoothing: e.smoothing)
        entries[qname] = (q, e.scales, e.type, e.smoothing)
        return (qname, .i8(q), clipped)
    }

    /// w [n, k] on an int8 grid: round(w[r, c] · smoothing[c] / rowScales[r]) clipped to ±127;
    /// also how many values were clipped.
    public static func int8(_ w: [Float], rowScales: [Double], smoothing: [Double]) -> (q: [Int8], clipped: Int) {
        let n = rowScales.count, k = smoothing.count
        var q = [Int8](repeating: 0, count: n * k)
        var clipped = 0
        for r in 0..<n {
            // The same f32 arithmetic as the first quantization, so the original weights come back exactly.
            let scale = Float(rowScales[r])
            for c in 0..<k {
                let v = (w[r * k + c] * Float(smoothing[c]) / scale).rounded()
                if abs(v) > 127 { clipped += 1 }
                q[r * k + c] = Int8(max(-127, min(127, v)))
            }
        }
        return (q, clipped)
    }

    /// The row scales of `weight`'s int8 form.
    public func rowScales(_ weight: String) -> [Double]? { entries[weight + ".i8"]?.scales }

    /// The smoothing factors of `weight`'s input channels (its int8 columns are w · smoothing).
    public func smoothing(_ weight: String) -> [Double]? { entries[weight + ".i8"]?.smoothing }

    /// The int8 form of `weight` as it is now (to restore it after an edit).
    public func int8(_ weight: String) -> [Int8]? { entries[weight + ".i8"]?.q }

    /// Puts back an int8 form saved by `int8(_:)`; returns the constant's name.
    public func restore(_ weight: String, _ q: [Int8]) throws -> String {
        let qname = weight + ".i8"
        guard let e = entries[qname], e.q.count == q.count else {
            throw PassError(pass: "quantize", function: "-", message: "no int8 form of \(weight) with \(q.count) values to restore")
        }
        entries[qname] = (q, e.scales, e.type, e.smoothing)
        return qname
    }
}

struct FunctionQuantizer {
    let module: Module
    let function: Function
    let out: ModuleBuilder
    let cache: WeightCache?
    let b: FunctionBuilder
    var slots: [Int: QSlot] = [:]
    var materialized: [String: QValue] = [:]
    var tables = 0
    /// Old values used only as function results (the logits): produced directly on their i16 grid.
    let resultsOnly: Set<Int>

    static let i16Max = 32767.0

    init(module: Module, function: Function, out: ModuleBuilder, cache: WeightCache?) {
        self.module = module; self.function = function; self.out = out; self.cache = cache
        var used = Set<Int>()
        for op in function.ops { used.formUnion(op.operands) }
        resultsOnly = Set(function.resultValues).subtracting(used)
        b = FunctionBuilder(function.name, in: out)
    }

    func fail(_ id: Int?, _ message: String) -> PassError {
        let op = id.flatMap { function.op(defining: $0) }
        return PassError(pass: "quantize", [Diagnostic(function: function.name, value: id, op: op?.kind.rawValue, loc: op?.loc, message: message)])
    }

    /// Calibration saw a few samples; inputs beyond its maxima would saturate, so every range gets
    /// this much headroom.
    /// Measured (zobench fidelity, 16 prompts): 1.25 → KL 0.0086, 2 → 0.0092, 4 → 0.0103.
    public static let headroom = 1.25

    /// The calibrated range of an old value, with headroom. A reshape, slice or concat that no
    /// calibration saw (an editing graph's row packing) has its operands' range: it moves values.
    func range(_ id: Int) throws -> Double {
        if id < function.params.count {
            if case let .float(r)? = module.attributes["range.\(function.name).\(function.params[id].name)"] { return r * Self.headroom }
        } else {
            let op = function.ops[id - function.params.count]
            if let r = op.attributes["range"], case let .float(v) = r { return v * Self.headroom }
            if [.reshape, .slice, .concat].contains(op.kind), !op.operands.isEmpty {
                return try op.operands.map { try range($0) }.max()!
            }
        }
        throw fail(id, "no calibrated range: run calibrate before quantize")
    }

    /// The i16 scale for a range, rounded to f32 so the printed scale is the one used.
    static func i16Scale(_ r: Double) -> Double {
        Double(Float(r > 0 && r.isFinite ? r / i16Max : 1))
    }

    /// ratio = multiplier / 2^shift with |multiplier| < 2^31 and shift in 0...62.
    static func multiplierShift(_ ratio: Double) -> (Int, Int) {
        guard ratio != 0 && ratio.isFinite else { return (0, 0) }
        var shift = 30 - Int(floor(log2(abs(ratio))))
        shift = min(62, max(0, shift))
        var m = (ratio * pow(2, Double(shift))).rounded()
        if abs(m) >= 2147483648 { m = m < 0 ? -2147483647 : 2147483647 }
        return (Int(m), shift)
    }

    static func bitsFor(_ n: Int) -> Int { max(0, Int(ceil(log2(Double(max(n, 1)))))) }

    // MARK: emitting

    mutating func rescale(_ x: QValue, to scale: Double, out dtype: DType, perChannel ratios: [Double]? = nil) throws -> QValue {
        var v: Value
        if let rs = ratios {
            let ms = rs.map(Self.multiplierShift)
            let base = "rescale.\(function.name).\(b.function.valueCount)"
            out.declareConstant(base + ".multiplier", TensorType(.i32, [rs.count]), .data(.i32(ms.map { Int32($0.0) })))
            out.declareConstant(base + ".shift", TensorType(.i32, [rs.count]), .data(.i32(ms.map { Int32($0.1) })))
            v = try b.emit(.rescale, [x.value, b.constant(base + ".multiplier"), b.constant(base + ".shift")],
                           ["out": .string(dtype.rawValue), "scale": .float(scale)])
        } else {
            let (m, sh) = Self.multiplierShift(x.scale / scale)
            v = try b.emit(.rescale, [x.value], ["multiplier": .int(m), "shift": .int(sh), "out": .string(dtype.rawValue), "scale": .float(scale)])
        }
        let bits = dtype == .i16 ? 15 : dtype == .i8 ? 7 : dtype == .i32 ? 31 : 63
        return QValue(value: v, scale: scale, bits: bits)
    }

    /// `x` as i16 (i8 stays): wide values are rescaled onto the range of old value `id`.
    mutating func narrow(_ x: QValue, rangeOf id: Int) throws -> QValue {
        if x.value.type.dtype == .i16 || x.value.type.dtype == .i8 { return x }
        return try rescale(x, to: Self.i16Scale(try range(id)), out: .i16)
    }

    /// The slot of old value `id` as an integer value (constants become i16 with a power-of-two scale,
    /// so tables such as cos and sin share one scale).
    mutating func operand(_ id: Int) throws -> QValue {
        switch slots[id]! {
        case let .value(v): return v
        case let .constant(name, source, type):
            if let v = materialized[name] { return v }
            let data = try floats(source)
            let mx = data.lazy.filter(\.isFinite).map { abs(Double($0)) }.max() ?? 0
            let scale = mx > 0 ? pow(2, ceil(log2(mx))) / 32768 : 1
            let q = data.map { Int16(clamping: $0.isNaN ? 0 : Int64(max(-1e15, min(1e15, (Double($0) / scale).rounded())))) }
            let qname = name + ".i16"
            out.declareConstant(qname, TensorType(.i16, type.shape, quant: .perTensor(scale: Float(scale), zeroPoint: 0)), .data(.i16(q)))
            let v = QValue(value: try b.constant(qname), scale: Double(Float(scale)), bits: 15)
            materialized[name] = v
            return v
        }
    }

    mutating func i16Operand(_ id: Int) throws -> QValue { try narrow(try operand(id), rangeOf: id) }

    func constantSlot(_ id: Int) -> (name: String, source: ConstantSource, type: TensorType)? {
        if case let .constant(n, d, t)? = slots[id] { return (n, d, t) }
        return nil
    }

    /// A table constant sampling f at the 513 points of an i16 input with scale `inScale`.
    mutating func lut(_ f: (Double) -> Double, inScale: Double, outScale: Double) -> String {
        let name = "lut.\(function.name).\(tables)"
        tables += 1
        let t = (0...512).map { i -> Int16 in
            let u = Double(i * 128 - 32768) * inScale
            return Int16(clamping: Int64((f(u) / outScale).rounded()))
        }
        out.declareConstant(name, TensorType(.i16, [513]), .data(.i16(t)))
        return name
    }

    // MARK: the walk

    mutating func run() throws {
        for (i, p) in function.params.enumerated() {
            if let g = WideGrid(module.attributes["grid.\(function.name).\(p.name)"]) {
                // A wide value of another function, on that function's exact grid.
                let v = b.param(p.name, TensorType(g.dtype, p.type.shape, quant: .perTensor(scale: Float(g.scale), zeroPoint: 0)))
                slots[i] = .value(QValue(value: v, scale: g.scale, bits: g.bits))
            } else if p.type.dtype == .f32 {
                let s = Self.i16Scale(try range(i))
                let v = b.param(p.name, TensorType(.i16, p.type.shape, quant: .perTensor(scale: Float(s), zeroPoint: 0)))
                slots[i] = .value(QValue(value: v, scale: s, bits: 15))
            } else {
                slots[i] = .value(QValue(value: b.param(p.name, p.type), scale: 1, bits: p.type.dtype.byteSize * 8 - 1))
            }
        }
        for (i, op) in function.ops.enumerated() {
            let id = function.params.count + i
            b.loc = op.loc
            slots[id] = try lower(op, id: id)
        }
        var wide = Set<String>()
        if case let .string(names)? = module.attributes["wide_results.\(function.name)"] {
            wide = Set(names.split(separator: ",").map(String.init))
        }
        for (name, v) in function.results {
            if wide.contains(name), case let .value(q)? = slots[v] {
                // Kept on its own grid, so a function that resumes from it computes the same integers.
                out.setAttribute("grid.\(function.name).\(name)", WideGrid(scale: q.scale, bits: q.bits, dtype: q.value.type.dtype).attribute)
                b.output(name, q.value)
                continue
            }
            let r = try narrow(try operand(v), rangeOf: v)
            b.output(name, r.value)
        }
        b.finish()
    }

    mutating func lower(_ op: Op, id: Int) throws -> QSlot {
        let x = op.operands
        let at = AttrReader(op.attributes)
        switch op.kind {
        case .constant:
            guard case let .symbol(name)? = op.attributes["name"] else { throw fail(id, "constant without a name") }
            guard let src = module.constantData[name] else { throw fail(id, "constant @\(name) has no data to quantize") }
            guard op.type.dtype == .f32 else {
                return .value(QValue(value: try b.constant(name), scale: 1, bits: op.type.dtype.byteSize * 8 - 1))
            }
            return .constant(name: name, source: src, type: op.type)

        case .fullyConnected:
            guard let w = constantSlot(x[1]) else { throw fail(id, "fully_connected weights must be a constant") }
            let n = w.type.shape[0], k = w.type.shape[1]
            // Smoothing (SmoothQuant, α = 1/2; measured: α 0.3 → KL 0.0138, 0.5 → 0.0092, 0.7 → 0.0238): input channel c is divided by t_c = sqrt(a_c / max_n |w_nc|)
            // and weight column c multiplied by it, so a few huge input channels (massive activations)
            // neither flatten the input's i16 grid nor, fully, the weights' int8 grid.
            var a: [Float]?
            if case let .symbol(cr)? = op.attributes["channel_range"], case let .data(.f32(v))? = module.constantData[cr], v.count == k { a = v }
            let blocked = x.count == 2 && k % BlockWeights.block == 0 && (cache?.form ?? .blocks) == .blocks
                && !(cache?.perChannel.contains(w.name) ?? false)
            let (qname, scales, t, bits): (String, [Double], [Double], Int)
            if blocked { (qname, scales, t, bits) = try blockWeights(w, channelRange: a) } else {
                (qname, scales, t) = try int8Weights(w, channelRange: a)
                bits = 8
            }
            var xq: QValue
            if let a = a {
                let v = try operand(x[0])
                let s = Self.i16Scale(((0..<k).map { Double(a[$0]) / t[$0] }.max() ?? 1) * Self.headroom)
                xq = try rescale(v, to: s, out: .i16, perChannel: t.map { v.scale / (s * $0) })
            } else {
                xq = try i16Operand(x[0])
            }
            var operands = [xq.value, try b.constant(qname)]
            if x.count == 3 {
                guard let bias = constantSlot(x[2]) else { throw fail(id, "fully_connected bias must be a constant") }
                let bname = "\(bias.name).i64.\(function.name).\(id)"
                let bd = try floats(bias.source)
                out.declareConstant(bname, TensorType(.i64, [n]), .data(.i64((0..<n).map { Int64((Double(bd[$0]) / (xq.scale * scales[$0])).rounded()) })))
                operands.append(try b.constant(bname))
            }
            let acc: QValue
            if blocked {
                // |Σ_b D·Σ x·q + M·Σ x| ≤ Σ_k |x_k| (|D|·|q| + |M|) < k · 2^15 · 2^23.
                operands += [try b.constant(qname + ".scale"), try b.constant(qname + ".offset")]
                let attributes: [String: Attribute] = bits == 8 ? ["block": .int(BlockWeights.block)] : ["block": .int(BlockWeights.block), "bits": .int(bits)]
                acc = QValue(value: try b.emit(.blockFullyConnected, operands, attributes), scale: xq.scale,
                             bits: 15 + 23 + Self.bitsFor(k))
            } else {
                acc = QValue(value: try b.emit(.fullyConnected, operands), scale: xq.scale, bits: 15 + 7 + Self.bitsFor(k) + 1)
            }
            // The output head's logits go straight to i16 also when an editing graph's loss terms
            // read them: the same integers as a forward that returns them.
            if resultsOnly.contains(id) || op.loc == "head" {
                let s = Self.i16Scale(try range(id))
                return .value(try rescale(acc, to: s, out: .i16, perChannel: scales.map { xq.scale * $0 / s }))
            }
            // Onto one per-tensor grid 2^8 finer than i16: outputs with a few huge channels (the MLP's
            // massive activations) keep their small channels' precision on the way into the residual.
            let s = Self.i16Scale(try range(id)) / 256
            var v = try rescale(acc, to: s, out: .i32, perChannel: scales.map { xq.scale * $0 / s })
            v.bits = 24
            return .value(v)

        case .matmul:
            let a = try i16Operand(x[0]), c = try i16Operand(x[1])
            let k = op.operands.map { function.type(of: $0) }[0].shape.last!
            let v = try b.emit(.matmul, [a.value, c.value], op.attributes.filter { $0.key == "transpose_b" })
            return .value(QValue(value: v, scale: a.scale * c.scale, bits: 30 + Self.bitsFor(k)))

        case .scale:
            let f = try at.float("factor")
            guard f > 0 else { throw fail(id, "scale by a non-positive factor is not supported") }
            var v = try operand(x[0])
            v.scale *= f
            return .value(v)

        case .add, .sub:
            // A constant joins a value at the value's own scale, exactly (eps, the attention mask).
            if let c = constantSlot(x[1]), case let .value(v)? = slots[x[0]] { return .value(try addConstant(op.kind, v, c, id: id)) }
            if let c = constantSlot(x[0]), case let .value(v)? = slots[x[1]], op.kind == .add { return .value(try addConstant(.add, v, c, id: id)) }
            var a = try operand(x[0]), c = try operand(x[1])
            if abs(a.scale / c.scale - 1) > 1e-9 || max(a.bits, c.bits) >= 62 {
                // Different scales: both onto a common i32 grid 2^8 finer than the result's i16 grid.
                let common = Self.i16Scale(try range(id)) / 256
                a = try rescale(a, to: common, out: .i32)
                c = try rescale(c, to: common, out: .i32)
            }
            let v = try b.emit(op.kind, [a.value, c.value])
            return .value(QValue(value: v, scale: a.scale, bits: min(63, max(a.bits, c.bits) + 1)))

        case .mul:
            for (vi, ci) in [(0, 1), (1, 0)] {
                if let c = constantSlot(x[ci]), case .value? = slots[x[vi]], let lastDim = function.type(of: id).shape.last,
                   c.type.elementCount == lastDim, c.type.shape.last == lastDim {
                    // y = v · c[channel]: a per-channel rescale onto a grid 2^8 finer than i16.
                    let v = try operand(x[vi])
                    let s = Self.i16Scale(try range(id)) / 256
                    var r = try rescale(v, to: s, out: .i32, perChannel: try floats(c.source).map { v.scale * Double($0) / s })
                    r.bits = 24
                    return .value(r)
                }
            }
            var a = try operand(x[0]), c = try operand(x[1])
            while a.bits + c.bits > 62 {
                if a.bits >= c.bits { a = try narrow(a, rangeOf: x[0]) } else { c = try narrow(c, rangeOf: x[1]) }
                if a.bits + c.bits > 62 && a.bits <= 15 && c.bits <= 15 { break }
            }
            let v = try b.emit(.mul, [a.value, c.value])
            return .value(QValue(value: v, scale: a.scale * c.scale, bits: a.bits + c.bits))

        case .reduceSum:
            let v = try operand(x[0])
            let len = function.type(of: x[0]).shape[try normalizedAxis(at.int("axis"), function.type(of: x[0]).rank)]
            let r = try b.emit(.reduceSum, [v.value], op.attributes.filter { $0.key == "axis" })
            return .value(QValue(value: r, scale: v.scale, bits: min(63, v.bits + Self.bitsFor(len))))

        case .reduceMax:
            let v = try operand(x[0])
            return .value(QValue(value: try b.emit(.reduceMax, [v.value], op.attributes.filter { $0.key == "axis" }), scale: v.scale, bits: v.bits))

        case .exp:
            // Softmax only: inputs are x − max(x) ≤ 0, tabulated over [−D, 0] with D the calibrated range
            // kept in 8...16. The bottom entry is 0: a masked score saturates there and must weigh nothing
            // (any genuine input that low has e^x < e^−8).
            guard let src = function.op(defining: x[0]), src.kind == .sub, function.op(defining: src.operands[1])?.kind == .reduceMax else {
                throw fail(id, "exp is supported only as softmax's exp(x − max(x)) (its input must be ≤ 0)")
            }
            let domain = min(max(try range(x[0]), 8), 16)
            let inScale = domain / 32768
            let input = try rescale(try operand(x[0]), to: inScale, out: .i16)
            let t = lut({ $0 <= -domain ? 0 : Foundation.exp(min($0, 0)) }, inScale: inScale, outScale: 1 / Self.i16Max)
            let v = try b.emit(.table, [input.value, b.constant(t)])
            return .value(QValue(value: v, scale: 1 / (Self.i16Max * 128), bits: 22))

        case .sigmoid:
            let input = try i16Operand(x[0])
            let t = lut({ 1 / (1 + Foundation.exp(-$0)) }, inScale: input.scale, outScale: 1 / Self.i16Max)
            let v = try b.emit(.table, [input.value, b.constant(t)])
            return .value(QValue(value: v, scale: 1 / (Self.i16Max * 128), bits: 22))

        case .rsqrt, .reciprocal:
            let p = op.kind == .rsqrt ? 1 : 2
            var v = try operand(x[0])
            if v.value.type.dtype != .i32 && v.value.type.dtype != .i64 { v = try rescale(v, to: v.scale, out: .i32) }
            // Aim the largest input (calibrated, or the magnitude bound) at an output near 2^20.
            let qHi = max(1, min(try range(x[0]) / v.scale, pow(2, Double(v.bits))))
            let shift = Int(ceil(Double(p) / 2 * log2(qHi))) - 2
            let name = "lut.\(op.kind.rawValue)"
            if out.module.constant(name) == nil {
                let t = (0...512).map { i -> Int16 in
                    i < 128 ? 32767 : Int16(clamping: Int64((Self.i16Max * pow(Double(i) / 128, -Double(p) / 2)).rounded()))
                }
                out.declareConstant(name, TensorType(.i16, [513]), .data(.i16(t)))
            }
            let r = try b.emit(.normTable, [v.value, b.constant(name)], ["power": .int(p), "shift": .int(shift)])
            let scale = pow(v.scale, -Double(p) / 2) / (Self.i16Max * 128 * pow(2, Double(shift)))
            // Bound by the calibrated output range with 16× headroom (beyond it, products saturate).
            let bits = min(23 + max(shift, 0), Self.bitsFor(Int(min(1e18, try range(id) / scale))) + 4)
            return .value(QValue(value: r, scale: scale, bits: bits))

        case .reshape, .transpose, .slice:
            let v = try operand(x[0])
            return .value(QValue(value: try b.emit(op.kind, [v.value], op.attributes.filter { $0.key != "range" }), scale: v.scale, bits: v.bits))

        case .concat:
            var vs = try x.map { try operand($0) }
            if !vs.allSatisfy({ abs($0.scale / vs[0].scale - 1) <= 1e-12 && $0.value.type.dtype == vs[0].value.type.dtype }) {
                let s = Self.i16Scale(try range(id))
                vs = try vs.map { try $0.value.type.dtype == .i16 && abs($0.scale / s - 1) <= 1e-12 ? $0 : rescale($0, to: s, out: .i16) }
            }
            let v = try b.emit(.concat, vs.map(\.value), op.attributes.filter { $0.key == "axis" })
            return .value(QValue(value: v, scale: vs[0].scale, bits: vs.map(\.bits).max()!))

        case .gather:
            throw fail(id, "gather has no integer form: look rows up on the host")
        case .rmsNorm, .silu, .softmax, .rope:
            throw fail(id, "'\(op.kind.rawValue)' must be decomposed before quantize")
        case .rescale, .table, .normTable, .blockFullyConnected:
            throw fail(id, "'\(op.kind.rawValue)' is already an npu op: the input is quantized")
        }
    }

    /// The weights as i8 per output channel, with the smoothing factors t of their input channels
    /// (t_c = sqrt(a_c / max_n |w_nc|) from the input's channel ranges a; all 1 without them) multiplied
    /// into the columns. Each row's scale minimises the squared rounding error (clip ratios 0.70...1.00).
    /// Returns the constant's name, the row scales and t. Reads the float weights only on a cache miss.
    mutating func int8Weights(_ w: (name: String, source: ConstantSource, type: TensorType), channelRange a: [Float]?) throws -> (String, [Double], [Double]) {
        let n = w.type.shape[0], k = w.type.shape[1]
        let qname = w.name + ".i8", sname = w.name + ".i8.scales"
        if let e = cache?.entries[qname] {
            out.declareConstant(sname, .f32([n]), .data(.f32(e.scales.map(Float.init))))
            out.declareConstant(qname, e.type, .data(.i8(e.q)))
            return (qname, e.scales, e.smoothing)
        }
        let data = try floats(w.source)
        var t = [Double](repeating: 1, count: k)
        if let a = a {
            for c in 0..<k {
                var wm = 0.0
                for r in 0..<n { wm = max(wm, abs(Double(data[r * k + c]))) }
                if a[c] > 0 && wm > 0 { t[c] = (Double(a[c]) / wm).squareRoot() }
            }
        }
        var q = [Int8](repeating: 0, count: n * k)
        var scales = [Double](repeating: 1, count: n)
        var row = [Float](repeating: 0, count: k)
        let tf = t.map(Float.init)
        for r in 0..<n {
            for c in 0..<k { row[c] = data[r * k + c] * tf[c] }
            let mx = row.map(abs).max() ?? 0
            guard mx > 0 else { continue }
            var best = mx / 127, bestErr = Float.infinity
            for step in 0...15 {
                let sc = mx * (1 - Float(step) * 0.02) / 127, inv = 1 / sc
                var err: Float = 0
                for v in row { let d = v - max(-127, min(127, (v * inv).rounded())) * sc; err += d * d }
                if err < bestErr { bestErr = err; best = sc }
            }
            scales[r] = Double(best)
            for c in 0..<k { q[r * k + c] = Int8(max(-127, min(127, (row[c] / best).rounded()))) }
        }
        let type = TensorType(.i8, [n, k], quant: .perChannel(axis: 0, scales: sname))
        out.declareConstant(sname, .f32([n]), .data(.f32(scales.map(Float.init))))
        out.declareConstant(qname, type, .data(.i8(q)))
        cache?.entries[qname] = (q, scales, type, t)
        return (qname, scales, t)
    }

    /// The weights in block form (`BlockWeights`), declared as constants NAME.b32 (i8 [n, k]) and
    /// NAME.b32.scale / .offset (i16 [n, k/32]), with the smoothing factors of the input channels:
    /// per block, t_b = sqrt(max_{c∈b} a_c / max_{n,c∈b} |w_nc|) (all 1 without ranges), so that
    /// a block stays on its grid. Returns the constant's name, the row scales, t per channel and
    /// the weight bits (8, or 4 when every block is a 16-level grid).
    mutating func blockWeights(_ w: (name: String, source: ConstantSource, type: TensorType), channelRange a: [Float]?) throws -> (String, [Double], [Double], Int) {
        let n = w.type.shape[0], k = w.type.shape[1], B = BlockWeights.block
        let qname = w.name + BlockWeights.suffix
        let bw: BlockWeights
        if let e = cache?.blocks[qname] {
            bw = e
        } else {
            let data = try floats(w.source)
            var t = [Double](repeating: 1, count: k)
            if let a = a {
                for b in 0..<(k / B) {
                    var am = 0.0, wm = 0.0
                    for c in b * B..<(b + 1) * B {
                        am = max(am, Double(a[c]))
                        for r in 0..<n { wm = max(wm, abs(Double(data[r * k + c]))) }
                    }
                    if am > 0 && wm > 0 { for c in b * B..<(b + 1) * B { t[c] = (am / wm).squareRoot() } }
                }
            }
            bw = BlockWeights(data, n: n, k: k, smoothing: t)
            cache?.blocks[qname] = bw
        }
        out.declareConstant(qname, TensorType(.i8, [n, k * bw.bits / 8]), .data(.i8(bw.q)))
        out.declareConstant(qname + ".scale", TensorType(.i16, [n, k / B]), .data(.i16(bw.scale)))
        out.declareConstant(qname + ".offset", TensorType(.i16, [n, k / B]), .data(.i16(bw.offset)))
        return (qname, bw.rowScales, bw.smoothing, bw.bits)
    }

    func normalizedAxis(_ a: Int, _ rank: Int) -> Int { a < 0 ? a + rank : a }

    /// v ± c with c quantized at v's scale as i64 (−∞ saturates far below any real value).
    mutating func addConstant(_ kind: OpKind, _ v: QValue, _ c: (name: String, source: ConstantSource, type: TensorType), id: Int) throws -> QValue {
        let limit = Double(1 << 52)
        let q = try floats(c.source).map { x -> Int64 in
            let r = Double(x) / v.scale
            return Int64(r.isNaN ? 0 : max(-limit, min(limit, r.rounded())))
        }
        let cname = "\(c.name).i64.\(function.name).\(id)"
        out.declareConstant(cname, TensorType(.i64, c.type.shape), .data(.i64(q)))
        let r = try b.emit(kind, [v.value, b.constant(cname)])
        let cbits = Self.bitsFor(Int(q.map { $0.magnitude }.max() ?? 0) + 1)
        return QValue(value: r, scale: v.scale, bits: min(63, max(v.bits, cbits) + 1))
    }
}
