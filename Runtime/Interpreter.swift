import Foundation
import ZOIR
import ZOModelIO

/// The reference interpreter: executes any verified function of a module. Float ops follow the
/// catalog's semantics in f32 (matmuls through OpenBLAS), their buffers returned to a pool after
/// their last use and reused by later ops of the same size. Integer functions run in one arena laid
/// out by memory-plan's `ArenaPlan`: each op's kernel writes its result at the op's place, and the
/// results are copied out at the end; a run allocates no tensor memory but its results.
public final class Interpreter {
    public let module: Module
    private var constants: [String: TensorData] = [:]
    private var plans: [String: Plan] = [:]
    private var pool = BufferPool()
    private let arena = Arena()
    /// The multipliers and shifts of the rescale running now, widened for the kernels (kept, so
    /// a run makes no new arrays for them).
    private var multipliers: [Int64] = [], shifts: [Int32] = []
    /// Ops of the last run whose result a kernel put outside the arena (0 for a function that
    /// ran in its arena; nil for one that did not: float values, or `observe`).
    public private(set) var resultsOutsideArena: Int?
    /// `run`'s value slots and an op's operand list, kept between runs.
    private var slots: [TensorData?] = [], operands: [TensorData] = []
    /// Seconds spent per op kind and output dtype, when profiling is on (`profile = [:]`).
    public var profile: [String: Double]?

    /// Per-function facts computed once: where each value is last used.
    struct Plan {
        let function: Function
        let lastUse: [Int]
        let isResult: [Bool]
        /// Integer fully_connected ops and i64 add/sub/mul (by op index) run together with the
        /// rescale (op index) that is their only use: the i64 result is never stored whole.
        let fusedRescale: [Int: Int]
        /// i64 add/sub/mul ops (by op index) whose only use is a last-axis reduce_sum (op index):
        /// the sums are made a row at a time, the i64 tensor never exists whole.
        let fusedRowSum: [Int: Int]
        /// The rescales and reduce_sums of those pairs (by op index).
        let fusedConsumer: [Bool]
        /// Where each value lives in the arena (nil for functions with float values).
        let arena: ArenaPlan?
        /// Each op's operand types, and what its kernel needs that depends only on them (made
        /// here once, so a run allocates no bookkeeping arrays for them).
        let operandTypes: [[TensorType]]
        let prepared: [Prepared?]
    }

    enum Prepared {
        /// An integer add/sub/mul's broadcast layout.
        case broadcast(Broadcast.Layout)
        /// A transpose's, slice's or concat's copies.
        case copies([ShapeKernels.StridedCopy], count: Int)
    }

    static func prepare(_ op: Op, _ t: [TensorType]) throws -> Prepared? {
        let at = AttrReader(op.attributes)
        switch op.kind {
        case .add, .sub, .mul:
            return op.type.dtype == .f32 ? nil : .broadcast(Broadcast.layout(t[0].shape, t[1].shape, out: op.type.shape))
        case .transpose:
            return .copies(ShapeKernels.StridedCopy.transpose(t[0].shape, perm: try at.ints("perm")), count: op.type.elementCount)
        case .slice:
            return .copies(ShapeKernels.StridedCopy.slice(t[0].shape, begin: try at.ints("begin"), size: try at.ints("size")),
                           count: op.type.elementCount)
        case .concat:
            let axis = try at.int("axis")
            return .copies(ShapeKernels.StridedCopy.concat(t.map(\.shape), axis: axis < 0 ? axis + t[0].rank : axis), count: op.type.elementCount)
        default:
            return nil
        }
    }

    /// `constantsFrom`: reuse the constants another interpreter has materialized (same weights).
    /// Evaluates one op on given operand data (constant folding uses this).
    public static func evaluate(_ op: Op, _ operands: [TensorData], _ types: [TensorType]) throws -> TensorData {
        do {
            return try Interpreter(module: Module(name: "evaluate")).execute(op, operands, types)
        } catch let e as KernelError {
            throw RuntimeError.badRequest("\(op.kind.rawValue): \(e.message)")
        }
    }

    public init(module: Module, constantsFrom other: Interpreter? = nil) throws {
        _ = LargeBuffers.returnedWhenFreed
        try Verifier.verify(module)
        self.module = module
        if let o = other {
            // Only the constants this module's ops name: a chain of interpreters (one per edit of a
            // plan) does not accumulate earlier edits' tables. Others materialize again if asked for.
            var used = Set<String>()
            for f in module.functions {
                for op in f.ops where op.kind == .constant { if case let .symbol(n)? = op.attributes["name"] { used.insert(n) } }
            }
            constants = o.constants.filter { used.contains($0.key) }
        }
    }

    /// The data of a constant, materialized (e.g. dequantized) on first use and kept.
    public func constant(_ name: String) throws -> TensorData {
        if let d = constants[name] { return d }
        guard let decl = module.constant(name) else { throw RuntimeError.missingConstantData(name) }
        guard let src = module.constantData[name] else { throw RuntimeError.missingConstantData(name) }
        let d: TensorData
        switch src {
        case let .data(x): d = x
        case let .lazy(make): d = try make()
        }
        guard d.dtype == decl.type.dtype, d.count == decl.type.elementCount else {
            throw RuntimeError.constantMismatch(name: name, expected: decl.type.description, got: "\(d.dtype.rawValue) × \(d.count)")
        }
        constants[name] = d
        return d
    }

    /// Replaces a constant's data (an edited weight); its declared type must not change.
    public func replaceConstant(_ name: String, _ data: TensorData) throws {
        guard let decl = module.constant(name) else { throw RuntimeError.missingConstantData(name) }
        guard data.dtype == decl.type.dtype, data.count == decl.type.elementCount else {
            throw RuntimeError.constantMismatch(name: name, expected: decl.type.description, got: "\(data.dtype.rawValue) × \(data.count)")
        }
        constants[name] = data
    }

    /// Forgets a replaced constant's data: it materializes from its source again on next use.
    public func forgetConstant(_ name: String) { constants[name] = nil }

    /// Gives the arena's pages back to the system (the next run writes them again): for work
    /// between runs that needs the memory more, such as an edit's rank-one update.
    public func releaseArena() { arena.dropPages() }

    /// Drops from resident memory the pages of the weights (int8, and their int16 block scales)
    /// used in place from a file mapping that none of `functions` names (they are re-read from the
    /// file if another function runs again): an edit's prefix and refresh functions run all layers,
    /// its step loop the later ones only; the first layers' weights need not stay resident.
    public func releaseWeightPages(except functions: Set<String>) {
        var kept = Set<String>(), all = Set<String>()
        for f in module.functions {
            for op in f.ops where op.kind == .constant {
                if case let .symbol(n)? = op.attributes["name"] { if functions.contains(f.name) { kept.insert(n) } else { all.insert(n) } }
            }
        }
        for n in all.subtracting(kept) {
            switch constants[n] {
            case let .i8View(v)?: (v.owner as? MappedFile)?.releasePages(of: UnsafeRawBufferPointer(v.buffer))
            case let .i16View(v)?: (v.owner as? MappedFile)?.releasePages(of: UnsafeRawBufferPointer(v.buffer))
            default: break
            }
        }
    }

    func plan(_ name: String) throws -> Plan {
        if let p = plans[name] { return p }
        guard let f = module.function(name) else { throw RuntimeError.noFunction(name, available: module.functions.map(\.name)) }
        if let p = f.params.first(where: { !$0.type.isStatic }) {
            throw RuntimeError.badRequest("@\(name): parameter \"\(p.name)\" has a dynamic shape \(p.type); zo runs static shapes only")
        }
        var last = [Int](repeating: -1, count: f.valueCount)
        for (i, op) in f.ops.enumerated() { for o in op.operands { last[o] = i } }
        var isResult = [Bool](repeating: false, count: f.valueCount)
        for v in f.resultValues { isResult[v] = true }
        let fused = FusedPairs(f)
        let integer = f.params.allSatisfy { $0.type.dtype != .f32 } && f.ops.allSatisfy { $0.kind == .constant || $0.type.dtype != .f32 }
        let types = f.ops.map { $0.operands.map { f.type(of: $0) } }
        var consumer = [Bool](repeating: false, count: f.ops.count)
        for c in fused.rescale.values { consumer[c] = true }
        for c in fused.rowSum.values { consumer[c] = true }
        let prepared = try zip(f.ops, types).map { try Self.prepare($0, $1) }  // the verifier checked the attributes
        let p = Plan(function: f, lastUse: last, isResult: isResult, fusedRescale: fused.rescale, fusedRowSum: fused.rowSum,
                     fusedConsumer: consumer, arena: integer ? ArenaPlan(f, fused: fused) : nil, operandTypes: types, prepared: prepared)
        plans[name] = p
        return p
    }

    /// The `profile` entry an op's time goes to: its kind and result type ("mul i64"); a rescale
    /// also names its input type ("rescale i64→i16"), which decides how fast it runs.
    public static func profileKey(_ op: Op, in f: Function) -> String {
        if op.kind == .rescale, let x = op.operands.first { return "rescale \(f.type(of: x).dtype.rawValue)→\(op.type.dtype.rawValue)" }
        return "\(op.kind.rawValue) \(op.type.dtype.rawValue)"
    }

    static func fusedKey(_ fc: Op, _ rescale: Op) -> String { "\(fc.kind.rawValue)+rescale \(rescale.type.dtype.rawValue)" }

    /// The `profile` entry each op of `function` counts under when it runs (fused ops under
    /// "fully_connected+rescale …", the rescale fused into one under ""), for per-op figures.
    public func profileKeys(_ function: String) throws -> [String] {
        let p = try plan(function), f = p.function
        var keys = f.ops.map { Self.profileKey($0, in: f) }
        for (fc, rescale) in p.fusedRescale {
            keys[fc] = Self.fusedKey(f.ops[fc], f.ops[rescale])
            keys[rescale] = ""
        }
        for (op, sum) in p.fusedRowSum {
            keys[op] = "\(f.ops[op].kind.rawValue)+reduce_sum i64"
            keys[sum] = ""
        }
        return keys
    }

    /// Runs `function` on named inputs; returns its named results.
    public func run(_ function: String, _ inputs: [String: TensorData],
                    observe: ((_ value: Int, _ data: TensorData) -> Void)? = nil) throws -> [String: TensorData] {
        let p = try plan(function)
        let f = p.function
        for k in inputs.keys where !f.params.contains(where: { $0.name == k }) {
            throw RuntimeError.unexpectedInput(function: f.name, name: k)
        }
        // The value slots and operand lists are the interpreter's, kept between runs.
        var values = slots
        slots = []
        defer { values.removeAll(keepingCapacity: true); slots = values }
        values.append(contentsOf: repeatElement(nil, count: f.valueCount))
        for (i, param) in f.params.enumerated() {
            guard let d = inputs[param.name] else { throw RuntimeError.missingInput(function: f.name, name: param.name) }
            guard d.dtype == param.type.dtype, d.count == param.type.elementCount else {
                throw RuntimeError.inputMismatch(function: f.name, name: param.name, expected: param.type.description,
                                                 got: "\(d.dtype.rawValue) × \(d.count)")
            }
            values[i] = d
        }
        let n = f.params.count
        // The arena when the function runs fused (observers see every value, so they run unfused, in arrays).
        let plan = observe == nil ? p.arena : nil
        let base = plan.map { arena.reserve($0.peak) }
        func place(_ v: Int) -> KernelOutput {
            guard let base, let offset = plan?.offsets[v] else { return .array }
            return KernelOutput(place: base + offset, arena: arena)
        }
        var outside = 0
        let fusing = observe == nil
        var x = operands
        operands = []
        defer { x.removeAll(keepingCapacity: true); operands = x }
        for (i, op) in f.ops.enumerated() {
            let id = n + i
            // A fused pair's rescale or reduce_sum ran with its producer.
            if fusing && p.fusedConsumer[i] { continue }
            do {
                let t0 = profile == nil ? 0 : DispatchTime.now().uptimeNanoseconds
                x.removeAll(keepingCapacity: true)
                for o in op.operands { x.append(values[o]!) }
                let t = p.operandTypes[i]
                var result = id  // the value this op's kernel makes
                if fusing, let c = p.fusedRowSum[i] {
                    result = n + c
                    values[result] = IntKernels.binaryRowSums(op.kind, x[0], x[1], rowLength: op.type.shape.last!, into: place(result))
                } else if fusing, let c = p.fusedRescale[i] {
                    result = n + c
                    values[result] = try rescaled(op, f.ops[c], at: c, in: f, x, t, prepared: p.prepared[i], into: place(result))
                } else {
                    values[id] = try execute(op, x, t, into: place(id), prepared: p.prepared[i],
                                             rescaleFactors: op.kind == .rescale ? try rescaleFactors(f, i) : nil)
                    if let o = observe { o(id, values[id]!) }
                }
                if plan != nil, op.kind != .constant, op.kind != .reshape, !arena.holds(values[result]!) { outside += 1 }
                if profile != nil {
                    // A string per op: only when profiling.
                    let kind = result == id ? Self.profileKey(op, in: f)
                        : p.fusedRowSum[i] != nil ? "\(op.kind.rawValue)+reduce_sum i64" : Self.fusedKey(op, f.ops[result - n])
                    profile![kind, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                }
            } catch let e as KernelError {
                throw RuntimeError.unsupported(function: f.name, value: id, op: op.kind.rawValue, reason: e.message)
            }
            for o in op.operands where p.lastUse[o] == i && o >= n && !p.isResult[o] && f.ops[o - n].kind != .constant {
                if case let .f32(buf)? = values[o] { pool.give(buf) }
                values[o] = nil
            }
        }
        resultsOutsideArena = plan == nil ? nil : outside
        var out: [String: TensorData] = [:]
        for (name, v) in f.results { out[name] = values[v]!.owned }
        return out
    }

    /// The multipliers and shifts of rescale op `i` of `f` (constants or attributes), checked,
    /// in the interpreter's two arrays (valid until the next call).
    func rescaleFactors(_ f: Function, _ i: Int) throws -> (m: [Int64], s: [Int32]) {
        let op = f.ops[i]
        multipliers.removeAll(keepingCapacity: true)
        shifts.removeAll(keepingCapacity: true)
        if op.operands.count == 3 {
            func constantOperand(_ k: Int) throws -> TensorData {
                guard case let .symbol(name)? = f.op(defining: op.operands[k])?.attributes["name"] else {
                    throw KernelError("rescale operand \(k) is not a constant")
                }
                return try constant(name)
            }
            let (m, sh) = (try constantOperand(1), try constantOperand(2))
            IntKernels.withIntegerBytes(m) { p, bits in for j in 0..<m.count { multipliers.append(IntKernels.element(p, bits, j)) } }
            var valid = true
            IntKernels.withIntegerBytes(sh) { p, bits in
                for j in 0..<sh.count {
                    let v = IntKernels.element(p, bits, j)
                    valid = valid && (0...62).contains(v)
                    shifts.append(Int32(clamping: v))
                }
            }
            guard valid else { throw KernelError("rescale shifts must lie in 0...62") }
        } else {
            let at = AttrReader(op.attributes), sh = try at.int("shift")
            guard (0...62).contains(sh) else { throw KernelError("rescale shifts must lie in 0...62") }
            multipliers.append(Int64(try at.int("multiplier")))
            shifts.append(Int32(sh))
        }
        return (multipliers, shifts)
    }

    /// An integer fully_connected or add/sub/mul and the rescale that is its only use (op `c`), as
    /// one kernel. (The rescale's multipliers and shifts are constants: the plan checked it.)
    func rescaled(_ op: Op, _ rescale: Op, at c: Int, in f: Function, _ x: [TensorData], _ t: [TensorType], prepared: Prepared?,
                  into place: KernelOutput) throws -> TensorData {
        let (m, sh) = try rescaleFactors(f, c)
        if [.add, .sub, .mul].contains(op.kind) {
            guard m.count == 1 || m.count == op.type.shape.last, m.count == sh.count else {
                throw KernelError("rescale has \(m.count) multipliers for a last axis of \(op.type.shape.last ?? 1)")
            }
            guard case let .broadcast(layout)? = prepared else { throw KernelError("\(op.kind.rawValue) has no broadcast layout") }
            return IntKernels.binary(op.kind, x[0], x[1], layout, out: TensorType(rescale.type.dtype, op.type.shape), rescale: (m, sh), into: place)
        }
        let k = t[1].shape[1], n = t[1].shape[0]
        return try IntKernels.withInt16s(x[0]) { input in
            if op.kind == .blockFullyConnected {
                let fa = AttrReader(op.attributes), k = t[0].shape.last!
                return try IntKernels.withInt8s(x[1]) {
                    try IntKernels.blockFullyConnected(input, rows: t[0].elementCount / k, k: k, $0, bits: fa.int("bits", default: 8),
                                                       scale: x[2], offset: x[3], block: try fa.int("block"), n: n,
                                                       multipliers: m, shifts: sh, out: rescale.type.dtype, into: place)
                }
            }
            return try IntKernels.withInt8s(x[1]) {
                IntKernels.fullyConnectedRescaled(input, rows: t[0].elementCount / k, k: k, $0, n: n, bias: nil, multipliers: m, shifts: sh,
                                                  out: rescale.type.dtype, into: place)
            }
        }
    }

    /// Op on operand data, its result where `place` says. `rescaleFactors`: the rescale's
    /// multipliers and shifts, made once (else read from its operands or attributes).
    func execute(_ op: Op, _ x: [TensorData], _ t: [TensorType], into place: KernelOutput = .array, prepared: Prepared? = nil,
                 rescaleFactors: (m: [Int64], s: [Int32])? = nil) throws -> TensorData {
        let at = AttrReader(op.attributes)
        let isFloat = op.type.dtype == .f32
        switch op.kind {
        case .constant:
            guard case let .symbol(name)? = op.attributes["name"] else { throw KernelError("constant without a name") }
            return try constant(name)
        case .fullyConnected:
            if isFloat {
                return .f32(FloatKernels.fullyConnected(try f32(x[0]), t[0], try f32(x[1]), t[1], bias: x.count > 2 ? try f32(x[2]) : nil, pool: &pool))
            }
            let k = t[1].shape[1], n = t[1].shape[0]
            let bias = x.count > 2 ? IntKernels.widen(x[2]) : nil
            return try IntKernels.withInt16s(x[0]) { input in
                try IntKernels.withInt8s(x[1]) { IntKernels.fullyConnected(input, rows: t[0].elementCount / k, k: k, $0, n: n, bias: bias, into: place) }
            }
        case .blockFullyConnected:
            let k = t[0].shape.last!, n = t[1].shape[0]
            return try IntKernels.withInt16s(x[0]) { input in
                try IntKernels.withInt8s(x[1]) {
                    try IntKernels.blockFullyConnected(input, rows: t[0].elementCount / k, k: k, $0, bits: at.int("bits", default: 8), scale: x[2],
                                                       offset: x[3], block: try at.int("block"), n: n, into: place)
                }
            }
        case .matmul:
            let tb = at.bool("transpose_b", default: false)
            if isFloat { return .f32(FloatKernels.matmul(try f32(x[0]), t[0], try f32(x[1]), t[1], transposeB: tb, out: op.type, pool: &pool)) }
            return try IntKernels.withInt16s(x[0]) { a in
                try IntKernels.withInt16s(x[1]) { IntKernels.matmul(a, t[0], $0, transposeB: tb, out: op.type, into: place) }
            }
        case .add, .sub, .mul:
            if isFloat { return .f32(FloatKernels.binary(op.kind, try f32(x[0]), t[0].shape, try f32(x[1]), t[1].shape, out: op.type.shape)) }
            guard case let .broadcast(layout)? = try prepared ?? Self.prepare(op, t) else { throw KernelError("no broadcast layout") }
            return IntKernels.binary(op.kind, x[0], x[1], layout, out: op.type, into: place)
        case .scale:
            let factor = Float(try at.float("factor"))
            return .f32(FloatKernels.map(try f32(x[0]), pool: &pool) { $0 * factor })
        case .silu:
            return .f32(FloatKernels.map(try f32(x[0]), pool: &pool) { $0 / (1 + expf(-$0)) })
        case .exp:
            return .f32(FloatKernels.map(try f32(x[0]), pool: &pool) { expf($0) })
        case .sigmoid:
            return .f32(FloatKernels.map(try f32(x[0]), pool: &pool) { 1 / (1 + expf(-$0)) })
        case .rsqrt:
            return .f32(FloatKernels.map(try f32(x[0]), pool: &pool) { 1 / $0.squareRoot() })
        case .reciprocal:
            return .f32(FloatKernels.map(try f32(x[0]), pool: &pool) { 1 / $0 })
        case .rmsNorm:
            return .f32(FloatKernels.rmsNorm(try f32(x[0]), try f32(x[1]), eps: Float(try at.float("eps")), pool: &pool))
        case .softmax:
            let axis = try at.int("axis")
            guard axis == -1 || axis == t[0].rank - 1 else { throw KernelError("softmax is implemented on the last axis only") }
            return .f32(FloatKernels.softmaxLastAxis(try f32(x[0]), rowLength: t[0].shape.last!, pool: &pool))
        case .rope:
            let neox = try at.string("mode") == "neox"
            return .f32(FloatKernels.rope(try f32(x[0]), t[0].shape, cos: try f32(x[1]), sin: try f32(x[2]), neox: neox, pool: &pool))
        case .reduceSum:
            let axis = try at.int("axis"), a = axis < 0 ? axis + t[0].rank : axis
            if isFloat { return .f32(Reduction.apply(try f32(x[0]), t[0].shape, axis: a, initial: 0, +)) }
            if a == t[0].rank - 1, let r = IntKernels.sumOfRows(x[0], rowLength: t[0].shape[a], into: place) { return r }
            return IntKernels.reduceSum(x[0], t[0].shape, axis: a, into: place)
        case .reduceMax:
            let axis = try at.int("axis"), a = axis < 0 ? axis + t[0].rank : axis
            if isFloat { return .f32(Reduction.apply(try f32(x[0]), t[0].shape, axis: a, initial: -.infinity, max)) }
            if a == t[0].rank - 1, let r = IntKernels.maxOfRows(x[0], rowLength: t[0].shape[a], into: place) { return r }
            if let r = IntKernels.maxAlong(x[0], t[0].shape, axis: a, into: place) { return r }
            return IntKernels.narrow(Reduction.apply(IntKernels.widen(x[0]), t[0].shape, axis: a, initial: .min, max), to: op.type.dtype)
        case .rescale:
            let (m, sh) = try rescaleFactors ?? {
                let (m, sh) = x.count == 3 ? (IntKernels.widen(x[1]), IntKernels.widen(x[2]))
                                           : ([Int64(try at.int("multiplier"))], [Int64(try at.int("shift"))])
                guard sh.allSatisfy({ (0...62).contains($0) }) else { throw KernelError("rescale shifts must lie in 0...62") }
                return (m, sh.map { Int32($0) })
            }()
            return IntKernels.rescale(x[0], lastDim: t[0].shape.last ?? 1, multipliers: m, shifts: sh, out: op.type.dtype, into: place)
        case .table:
            return try IntKernels.withInt16s(x[0]) { v in try IntKernels.withInt16s(x[1]) { try IntKernels.table(v, $0, into: place) } }
        case .normTable:
            let (power, shift) = (try at.int("power"), try at.int("shift"))
            return try IntKernels.withInt16s(x[1]) { IntKernels.normTable(x[0], $0, power: power, shift: shift, into: place) }
        case .reshape:
            return x[0]
        case .transpose, .slice, .concat:
            guard case let .copies(copies, count)? = try prepared ?? Self.prepare(op, t) else { throw KernelError("no copies for \(op.kind.rawValue)") }
            return ShapeKernels.run(copies, x, count: count, into: place)
        case .gather:
            let rows = IntKernels.widen(x[1]), v = t[0].shape[0]
            if let bad = rows.first(where: { $0 < 0 || $0 >= v }) { throw KernelError("gather index \(bad) is outside 0..<\(v)") }
            return ShapeKernels.gather(x[0], rows: rows.map(Int.init), width: t[0].shape[1], into: place)
        }
    }

    func f32(_ d: TensorData) throws -> [Float] {
        guard case let .f32(a) = d else { throw KernelError("expected f32 data, got \(d.dtype.rawValue)") }
        return a
    }
}

struct KernelError: Error { let message: String; init(_ m: String) { message = m } }
