import ZOIR
import CKernels
import Dispatch
import Foundation

/// Integer kernels of the npu profile, bit-exact to the semantics written in the op catalog.
/// How many threads kernels split work between (ZO_THREADS overrides the core count).
public enum Threads {
    public static let count: Int = {
        if let s = ProcessInfo.processInfo.environment["ZO_THREADS"], let n = Int(s), n >= 1 { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// Elementwise ops, rescales, tables, row reductions and copies split between the threads
    /// from this many elements on (one threshold for all of them).
    public static let splitElements = 1 << 16

    /// body(p) for p in 0..<parts, split between `count` threads (CKernels' pool, whose workers
    /// stay awake between the ops of a graph); returns when all are done.
    public static func run(_ parts: Int, _ body: (Int) -> Void) {
        guard parts > 1 else { if parts == 1 { body(0) }; return }
        withoutActuallyEscaping(body) { b in
            var f = b
            withUnsafeMutablePointer(to: &f) { ptr in
                zo_parallel_for(Int32(parts), Int32(count), { ctx, p in ctx!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(p)) }, ptr)
            }
        }
    }
}

enum IntKernels {
    static func widen(_ d: TensorData) -> [Int64] { d.int64Values }

    /// Saturates each value to `dtype`'s range.
    static func narrow(_ v: [Int64], to dtype: DType) -> TensorData {
        switch dtype {
        case .i8: return .i8(v.map { Int8(clamping: $0) })
        case .i16: return .i16(v.map { Int16(clamping: $0) })
        case .i32: return .i32(v.map { Int32(clamping: $0) })
        case .i64: return .i64(v)
        case .f32: return .f32(v.map(Float.init))
        }
    }

    /// i8 data in place (arrays and mapped views alike).
    static func withInt8s<R>(_ d: TensorData, _ body: (UnsafeBufferPointer<Int8>) throws -> R) throws -> R {
        guard let r = try d.withInt8s(body) else { throw KernelError("expected i8 data, got \(d.dtype.rawValue)") }
        return r
    }

    /// i16 data in place (arrays and views alike); i8 data is widened into a copy first.
    static func withInt16s<R>(_ d: TensorData, _ body: (UnsafeBufferPointer<Int16>) throws -> R) throws -> R {
        if let r = try d.withInt16s(body) { return r }
        if let r = try d.withInt8s({ try $0.map(Int16.init).withUnsafeBufferPointer(body) }) { return r }
        throw KernelError("expected i16 data, got \(d.dtype.rawValue)")
    }

    /// The output columns [j0, j1) of part p of `parts`: whole 4-column groups where possible,
    /// so each part takes the vector path.
    @inline(__always) static func columns(_ p: Int, of parts: Int, n: Int) -> (Int, Int) {
        let chunk = (n + parts - 1) / parts
        let j0 = min(n, p * chunk)
        return (j0, min(n, j0 + chunk))
    }

    /// acc[r, n] = bias[n] + Σ_k x[r, k] · w[n, k], exact (CKernels: AVX2 when the CPU has it).
    /// Large products split the outputs between the cores; every split gives the same integers.
    static func fullyConnected(_ xp: UnsafeBufferPointer<Int16>, rows: Int, k: Int, _ wp: UnsafeBufferPointer<Int8>, n: Int, bias: [Int64]?,
                               into out: KernelOutput) -> TensorData {
        let parts = rows * n * k >= 1 << 20 ? min(Threads.count, max(1, n / 64)) : 1
        return out.make(.i64, count: rows * n) { y in
            let o = y.assumingMemoryBound(to: Int64.self)
            func run(_ b: UnsafePointer<Int64>?) {
                Threads.run(parts) { p in
                    let (j0, j1) = columns(p, of: parts, n: n)
                    if j0 < j1 { zo_fc_i16_i8(xp.baseAddress, Int32(rows), Int32(k), wp.baseAddress, Int32(n), Int32(j0), Int32(j1), b, o) }
                }
            }
            if let bias { bias.withUnsafeBufferPointer { run($0.baseAddress) } } else { run(nil) }
        }
    }

    /// A fully_connected whose only use is a rescale, in one pass: each sum is rescaled as it is
    /// made, so the [rows, n] i64 accumulator (41 MiB for a step graph's output head) never
    /// exists. The integers are those of `fullyConnected` followed by `rescale`; the outputs are
    /// split between the cores as in `fullyConnected`.
    static func fullyConnectedRescaled(_ xp: UnsafeBufferPointer<Int16>, rows: Int, k: Int, _ wp: UnsafeBufferPointer<Int8>, n: Int,
                                       bias: [Int64]?, multipliers m: [Int64], shifts s: [Int32], out: DType, into place: KernelOutput) -> TensorData {
        let width = m.count > 1 ? n : 1
        let outBits = out.byteSize * 8
        let parts = rows * n * k >= 1 << 20 ? min(Threads.count, max(1, n / 64)) : 1
        return makeInteger(out, count: rows * n, into: place) { y in
            func run(_ b: UnsafePointer<Int64>?) {
                Threads.run(parts) { p in
                    let (j0, j1) = columns(p, of: parts, n: n)
                    guard j0 < j1 else { return }
                    zo_fc_rescale_i16_i8(xp.baseAddress, Int32(rows), Int32(k), wp.baseAddress, Int32(n), Int32(j0), Int32(j1), b,
                                         m, s, Int32(width), Int32(outBits), y)
                }
            }
            if let bias { bias.withUnsafeBufferPointer { run($0.baseAddress) } } else { run(nil) }
        }
    }

    /// block_fully_connected's exact sums (CKernels), raw (`multipliers` nil: i64) or each rescaled
    /// as it is made (then `out` is the rescale's type). Outputs split between the cores as in
    /// `fullyConnected`; every split gives the same integers. Scales and offsets are read in place.
    static func blockFullyConnected(_ xp: UnsafeBufferPointer<Int16>, rows: Int, k: Int, _ wp: UnsafeBufferPointer<Int8>, bits: Int,
                                    scale: TensorData, offset: TensorData, block: Int, n: Int, multipliers: [Int64]? = nil,
                                    shifts: [Int32] = [], out: DType = .i64, into place: KernelOutput) throws -> TensorData {
        try withInt16s(scale) { sp in
            try withInt16s(offset) { op in
                try blockFullyConnected(xp, rows: rows, k: k, wp, bits: bits, scale: sp, offset: op, block: block, n: n,
                                        multipliers: multipliers, shifts: shifts, out: out, into: place)
            }
        }
    }

    static func blockFullyConnected(_ xp: UnsafeBufferPointer<Int16>, rows: Int, k: Int, _ wp: UnsafeBufferPointer<Int8>, bits: Int,
                                    scale sp: UnsafeBufferPointer<Int16>, offset op: UnsafeBufferPointer<Int16>, block: Int, n: Int,
                                    multipliers: [Int64]?, shifts s: [Int32], out: DType, into place: KernelOutput) throws -> TensorData {
        let m = multipliers ?? []
        let width = m.count > 1 ? n : 1, outBits = out.byteSize * 8
        let parts = rows * n * k >= 1 << 20 ? min(Threads.count, max(1, n / 64)) : 1
        guard (1...512).contains(block), k % block == 0, bits == 8 || (bits == 4 && block % 2 == 0), wp.count == n * k * bits / 8,
              sp.count == n * (k / block), op.count == sp.count else {
            throw KernelError("block \(block) must lie in 1...512 and divide K = \(k), with \(n) × \(k / max(block, 1)) scales and offsets")
        }
        return makeInteger(out, count: rows * n, into: place) { y in
            Threads.run(parts) { p in
                let (j0, j1) = columns(p, of: parts, n: n)
                guard j0 < j1 else { return }
                _ = multipliers == nil
                    ? zo_block_fc_i16_i8(xp.baseAddress, Int32(rows), Int32(k), wp.baseAddress, Int32(bits), sp.baseAddress, op.baseAddress, Int32(block),
                                         Int32(n), Int32(j0), Int32(j1), y.assumingMemoryBound(to: Int64.self))
                    : zo_block_fc_rescale_i16_i8(xp.baseAddress, Int32(rows), Int32(k), wp.baseAddress, Int32(bits), sp.baseAddress, op.baseAddress,
                                                 Int32(block), Int32(n), Int32(j0), Int32(j1), m, s, Int32(width), Int32(outBits), y)
            }
        }
    }

    /// Batched c[b, m, n] = Σ_k a[b, m, k] · b[b, k, n] (or b[b, n, k]), exact: each i16 product
    /// fits in Int32 and the sum is kept in Int64 (CKernels). Batches split between the cores.
    static func matmul(_ ap: UnsafeBufferPointer<Int16>, _ at: TensorType, _ bp: UnsafeBufferPointer<Int16>, transposeB: Bool, out: TensorType,
                       into place: KernelOutput) -> TensorData {
        let m = at.shape[at.rank - 2], k = at.shape[at.rank - 1], n = out.shape[out.rank - 1]
        let batches = at.elementCount / max(m * k, 1)
        let parts = batches * m * n * k >= 1 << 18 && batches >= 2 ? min(Threads.count, batches) : 1
        return place.make(.i64, count: out.elementCount) { y in
            let c = y.assumingMemoryBound(to: Int64.self)
            guard m * k > 0 else { c.initialize(repeating: 0, count: out.elementCount); return }
            Threads.run(parts) { p in
                let t0 = batches * p / parts, t1 = batches * (p + 1) / parts
                zo_matmul_i16(ap.baseAddress! + t0 * m * k, bp.baseAddress! + t0 * k * n, Int32(t1 - t0), Int32(m), Int32(k), Int32(n),
                              transposeB ? 1 : 0, c + t0 * m * n)
            }
        }
    }

    /// add/sub/mul with numpy broadcasting, exact in Int64 (saturating there), then saturated to
    /// the result type (CKernels; each operand read in its own width). With `rescale` (an i64 op's
    /// only use: per tensor, or per index of the last axis), each result is rescaled into `out` as
    /// it is made: the integers of the op then `rescale`, without the i64 tensor. Large results are
    /// split between the cores along their outermost axis.
    /// `layout`: `Broadcast.layout` of the operands' shapes (made once per op).
    static func binary(_ kind: OpKind, _ a: TensorData, _ b: TensorData, _ layout: Broadcast.Layout, out: TensorType,
                       rescale: (multipliers: [Int64], shifts: [Int32])? = nil, into place: KernelOutput) -> TensorData {
        let op: Int32 = kind == .add ? 0 : kind == .sub ? 1 : 2
        let (shape, sa, sb) = layout
        let count = out.elementCount
        let outBits = out.dtype == .f32 ? 64 : out.dtype.byteSize * 8
        let m = rescale?.multipliers ?? [], s = rescale?.shifts ?? []
        return makeInteger(out.dtype, count: count, into: place) { y in
            withIntegerBytes(a) { ap, abits in
                withIntegerBytes(b) { bp, bbits in
                    let parts = count >= Threads.splitElements && shape[0] >= 2 ? min(Threads.count, shape[0]) : 1
                    let inner = count / shape[0]
                    Threads.run(parts) { p in
                        let r0 = shape[0] * p / parts, r1 = shape[0] * (p + 1) / parts
                        guard r1 > r0 else { return }
                        let (x, z, first) = (ap + r0 * sa[0] * abits / 8, bp + r0 * sb[0] * bbits / 8, r0 * inner)
                        withFirstAxis(shape, r1 - r0) { sh in
                            if rescale == nil {
                                zo_binary(op, x, Int32(abits), z, Int32(bbits), Int32(shape.count), sh, sa, sb, Int32(outBits), y + first * outBits / 8)
                            } else {
                                zo_binary_rescale(op, x, Int32(abits), z, Int32(bbits), Int32(shape.count), sh, sa, sb, m, s, m.count, first,
                                                  Int32(outBits), y + first * outBits / 8)
                            }
                        }
                    }
                }
            }
        }
    }

    /// The bytes of integer data and its element width in bits (f32 is read as Int64 values).
    static func withIntegerBytes<R>(_ d: TensorData, _ body: (UnsafeRawPointer, Int) -> R) -> R {
        switch d {
        case let .i8(a): return a.withUnsafeBytes { body($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, 8) }
        case let .i8View(v): return body(UnsafeRawPointer(v.buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!), 8)
        case let .i16(a): return a.withUnsafeBytes { body($0.baseAddress ?? UnsafeRawPointer(bitPattern: 2)!, 16) }
        case let .i16View(v): return body(UnsafeRawPointer(v.buffer.baseAddress ?? UnsafePointer(bitPattern: 2)!), 16)
        case let .i32(a): return a.withUnsafeBytes { body($0.baseAddress ?? UnsafeRawPointer(bitPattern: 4)!, 32) }
        case let .i32View(v): return body(UnsafeRawPointer(v.buffer.baseAddress ?? UnsafePointer(bitPattern: 4)!), 32)
        case let .i64(a): return a.withUnsafeBytes { body($0.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!, 64) }
        case let .i64View(v): return body(UnsafeRawPointer(v.buffer.baseAddress ?? UnsafePointer(bitPattern: 8)!), 64)
        case .f32: return widen(d).withUnsafeBytes { body($0.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!, 64) }
        }
    }

    /// Element j of integer data of `bits` bits at p, as Int64.
    @inline(__always) static func element(_ p: UnsafeRawPointer, _ bits: Int, _ j: Int) -> Int64 {
        switch bits {
        case 8: return Int64(p.load(fromByteOffset: j, as: Int8.self))
        case 16: return Int64(p.load(fromByteOffset: 2 * j, as: Int16.self))
        case 32: return Int64(p.load(fromByteOffset: 4 * j, as: Int32.self))
        default: return p.load(fromByteOffset: 8 * j, as: Int64.self)
        }
    }

    /// An integer tensor of `dtype` (f32 results are produced as i64) written by `fill`.
    static func makeInteger(_ dtype: DType, count: Int, into place: KernelOutput, _ fill: (UnsafeMutableRawPointer) -> Void) -> TensorData {
        place.make(dtype == .f32 ? .i64 : dtype, count: count, fill)
    }

    /// y = saturate(round(x · m / 2^s)) per tensor or per index of the last axis (CKernels), the
    /// input read in its own width; large tensors are split between the cores at row boundaries.
    static func rescale(_ d: TensorData, lastDim: Int, multipliers m: [Int64], shifts s: [Int32], out: DType, into place: KernelOutput) -> TensorData {
        let width = m.count > 1 ? lastDim : 1
        let count = d.count
        let outBits = out == .f32 ? 64 : out.byteSize * 8
        return makeInteger(out, count: count, into: place) { y in
            withIntegerBytes(d) { x, inBits in
                let rows = count / max(width, 1)
                let parts = count >= Threads.splitElements && rows >= 2 ? min(Threads.count, rows) : 1
                func part(_ p: Int) {
                    let r0 = rows * p / parts, r1 = rows * (p + 1) / parts
                    zo_rescale(x + r0 * width * inBits / 8, Int32(inBits), (r1 - r0) * width, Int32(width), m, s, Int32(outBits),
                               y + r0 * width * outBits / 8)
                }
                Threads.run(parts, part)
            }
        }
    }

    /// round(v / 2^s) with ties toward +∞, saturated to Int64.
    @inline(__always) static func roundShift(_ v: Int128, _ s: Int) -> Int64 {
        let r = s == 0 ? v : (v + (Int128(1) << (s - 1))) >> s
        return Int64(clamping: r)
    }

    /// The 513-entry table interpolated at each value (see the catalog); large inputs are split
    /// between the cores (the exp and reciprocal tables run over every attention score).
    static func table(_ xp: UnsafeBufferPointer<Int16>, _ t: UnsafeBufferPointer<Int16>, into place: KernelOutput) throws -> TensorData {
        guard t.count == 513 else { throw KernelError("table has \(t.count) entries, not 513") }
        let count = xp.count, parts = count >= Threads.splitElements ? Threads.count : 1
        return place.make(.i32, count: count) { y in
            let o = y.assumingMemoryBound(to: Int32.self)
            Threads.run(parts) { p in
                let e0 = count * p / parts, e1 = count * (p + 1) / parts
                if e1 > e0 { zo_table(xp.baseAddress! + e0, e1 - e0, t.baseAddress, o + e0) }
            }
        }
    }

    /// norm_table (see the catalog) of i64 data (other integer types are widened first).
    static func normTable(_ d: TensorData, _ tbl: UnsafeBufferPointer<Int16>, power: Int, shift: Int, into place: KernelOutput) -> TensorData {
        func apply(_ x: UnsafeBufferPointer<Int64>) -> TensorData {
            place.make(.i64, count: x.count) { y in
                let o = y.assumingMemoryBound(to: Int64.self)
                for (j, raw) in x.enumerated() { o[j] = normTable(raw, tbl, power: power, shift: shift) }
            }
        }
        switch d {
        case let .i64(a): return a.withUnsafeBufferPointer(apply)
        case let .i64View(v): return apply(v.buffer)
        default: return widen(d).withUnsafeBufferPointer(apply)
        }
    }

    @inline(__always) static func normTable(_ raw: Int64, _ tbl: UnsafeBufferPointer<Int16>, power: Int, shift: Int) -> Int64 {
        let v = UInt64(max(raw, 1))
        let top = 63 - v.leadingZeroBitCount          // index of the highest set bit, 0...62
        let k = top / 2                                // v = m · 4^k, m in [1, 4)
        let s = 61 - 2 * k
        let vn = s >= 0 ? v << UInt64(s) : v >> 1      // in [2^61, 2^63)
        let u = Int(vn >> 47)                          // in [2^14, 2^16)
        let i = u >> 7, f = Int64(u & 127)
        let lo = Int64(tbl[i]), hi = Int64(tbl[i + 1])
        let r = lo * 128 + (hi - lo) * f
        let e = shift - power * k
        if e >= 0 {
            return Int64(clamping: Int128(r) << e)
        }
        return roundShift(Int128(r), -e)
    }

    /// The elements of i16, i32 or i64 data in place, as `body`'s generic argument (nil for others).
    static func withIntegerElements<B: IntegerElementsBody>(_ d: TensorData, _ body: B) -> B.Result? {
        switch d {
        case let .i16(a): return a.withUnsafeBufferPointer { body($0) }
        case let .i16View(v): return body(v.buffer)
        case let .i32(a): return a.withUnsafeBufferPointer { body($0) }
        case let .i32View(v): return body(v.buffer)
        case let .i64(a): return a.withUnsafeBufferPointer { body($0) }
        case let .i64View(v): return body(v.buffer)
        default: return nil
        }
    }

    /// The maximum of each row of i16, i32 or i64 data (nil for other types): the last-axis
    /// reduce_max, without widening every element to Int64 first (the loss head reduces 49,152-wide
    /// rows), rows split between the cores when there are many elements.
    static func maxOfRows(_ d: TensorData, rowLength n: Int, into place: KernelOutput) -> TensorData? {
        struct Max: IntegerElementsBody {
            let n: Int, place: KernelOutput
            func callAsFunction<T: FixedWidthInteger>(_ a: UnsafeBufferPointer<T>) -> TensorData {
                place.make(DType.of(T.self), count: n > 0 ? a.count / n : 0) { y in
                    IntKernels.eachRow(a, length: n, into: y.assumingMemoryBound(to: T.self)) { row in
                        var m = T.min
                        for v in row { m = Swift.max(m, v) }
                        return m
                    }
                }
            }
        }
        return withIntegerElements(d, Max(n: n, place: place))
    }

    /// The exact sum of each row of i16, i32 or i64 data (nil for other types): rows of i16 or i32
    /// of fewer than 2^32 elements cannot leave Int64, so only i64 rows saturate (as `reduceSum`,
    /// at each addition: the norms' sums of i64 squares).
    static func sumOfRows(_ d: TensorData, rowLength n: Int, into place: KernelOutput) -> TensorData? {
        struct Sum: IntegerElementsBody {
            let n: Int, place: KernelOutput
            func callAsFunction<T: FixedWidthInteger>(_ a: UnsafeBufferPointer<T>) -> TensorData {
                place.make(.i64, count: n > 0 ? a.count / n : 0) { y in
                    let o = y.assumingMemoryBound(to: Int64.self)
                    if let rows = a as? UnsafeBufferPointer<Int64> {
                        IntKernels.eachRow(rows, length: n, into: o) { IntKernels.saturatingSum($0) }
                    } else {
                        IntKernels.eachRow(a, length: n, into: o) { $0.reduce(Int64(0)) { $0 + Int64($1) } }
                    }
                }
            }
        }
        return withIntegerElements(d, Sum(n: n, place: place))
    }

    /// f of each row of `n` elements of a, written to out[row]; rows are split between the cores
    /// when there are many elements (the loss head's rows are 49,152 wide).
    static func eachRow<T, R>(_ a: UnsafeBufferPointer<T>, length n: Int, into out: UnsafeMutablePointer<R>, _ f: (UnsafeBufferPointer<T>) -> R) {
        guard n > 0 else { return }
        let rowCount = a.count / n
        let parts = a.count >= Threads.splitElements && rowCount >= 2 ? min(Threads.count, rowCount) : 1
        Threads.run(parts) { part in
            for r in (rowCount * part / parts)..<(rowCount * (part + 1) / parts) {
                (out + r).initialize(to: f(UnsafeBufferPointer(rebasing: a[(r * n)..<((r + 1) * n)])))
            }
        }
    }

    /// Σ row, saturating at each addition, continuing from `start`. When every |v| ≤ 2^b, |start|
    /// < 2^62 and the row is shorter than 2^(62 − b), no partial sum can leave Int64 and the plain
    /// (vectorized) sum is that.
    @inline(__always) static func saturatingSum(_ row: UnsafeBufferPointer<Int64>, from start: Int64 = 0) -> Int64 {
        var sum: Int64 = 0, bits: UInt64 = 0
        for v in row { sum &+= v; bits |= UInt64(bitPattern: v ^ (v >> 63)) }
        let startFits = start.magnitude < 1 << 62
        if startFits && 64 - bits.leadingZeroBitCount + (Int.bitWidth - row.count.leadingZeroBitCount) < 62 { return start + sum }
        var acc = start
        for v in row {
            let (t, over) = acc.addingReportingOverflow(v)
            acc = over ? (v > 0 ? .max : .min) : t
        }
        return acc
    }

    /// An i64 add/sub/mul of two operands of its own shape and the last-axis reduce_sum that is
    /// its only use, a row at a time (the loss head's Σ e² over 49,152 logits per row): the sums of
    /// `binary` then `reduce_sum`, without the i64 tensor (each row is made and summed in pieces
    /// of 1,024 in a buffer on the stack). Rows are split between the cores.
    static func binaryRowSums(_ kind: OpKind, _ a: TensorData, _ b: TensorData, rowLength n: Int, into place: KernelOutput) -> TensorData {
        let op: Int32 = kind == .add ? 0 : kind == .sub ? 1 : 2
        let rowCount = n > 0 ? a.count / n : 0
        let parts = a.count >= Threads.splitElements && rowCount >= 2 ? min(Threads.count, rowCount) : 1
        let piece = 1024
        return place.make(.i64, count: rowCount) { y in
            let out = y.assumingMemoryBound(to: Int64.self)
            withIntegerBytes(a) { ap, abits in
                withIntegerBytes(b) { bp, bbits in
                    Threads.run(parts) { part in
                        withUnsafeTemporaryAllocation(of: Int64.self, capacity: piece) { buf in
                            for r in (rowCount * part / parts)..<(rowCount * (part + 1) / parts) {
                                var acc: Int64 = 0
                                for e0 in stride(from: 0, to: n, by: piece) {
                                    let len = min(piece, n - e0), at = r * n + e0
                                    withUnsafeTemporaryAllocation(of: Int.self, capacity: 3) { v in
                                        v[0] = len; v[1] = 1; v[2] = 1
                                        zo_binary(op, ap + at * abits / 8, Int32(abits), bp + at * bbits / 8, Int32(bbits), 1,
                                                  v.baseAddress, v.baseAddress! + 1, v.baseAddress! + 2, 64, buf.baseAddress)
                                    }
                                    acc = saturatingSum(UnsafeBufferPointer(rebasing: buf[0..<len]), from: acc)
                                }
                                out[r] = acc
                            }
                        }
                    }
                }
            }
        }
    }

    /// reduce_max along any axis of i16, i32 or i64 data (nil for others; the last axis goes to
    /// `maxOfRows`).
    static func maxAlong(_ d: TensorData, _ shape: [Int], axis: Int, into place: KernelOutput) -> TensorData? {
        struct Max: IntegerElementsBody {
            let len: Int, inner: Int, place: KernelOutput
            func callAsFunction<T: FixedWidthInteger>(_ x: UnsafeBufferPointer<T>) -> TensorData {
                let outer = x.count / max(len * inner, 1)
                return place.make(DType.of(T.self), count: outer * inner) { y in
                    let o = y.bindMemory(to: T.self, capacity: outer * inner)
                    o.initialize(repeating: T.min, count: outer * inner)
                    for a in 0..<outer {
                        for j in 0..<len {
                            let base = (a * len + j) * inner
                            for i in 0..<inner { o[a * inner + i] = Swift.max(o[a * inner + i], x[base + i]) }
                        }
                    }
                }
            }
        }
        return withIntegerElements(d, Max(len: shape[axis], inner: shape[(axis + 1)...].reduce(1, *), place: place))
    }

    /// reduce_sum along any axis, saturating at each addition (the last axis goes to `sumOfRows`).
    static func reduceSum(_ d: TensorData, _ shape: [Int], axis: Int, into place: KernelOutput) -> TensorData {
        let len = shape[axis], inner = shape[(axis + 1)...].reduce(1, *)
        let outer = d.count / max(len * inner, 1)
        func apply(_ xp: UnsafeBufferPointer<Int64>) -> TensorData {
            place.make(.i64, count: outer * inner) { y in
                let op = y.assumingMemoryBound(to: Int64.self)
                op.initialize(repeating: 0, count: outer * inner)
                for o in 0..<outer {
                    for j in 0..<len {
                        let base = (o * len + j) * inner
                        for i in 0..<inner {
                            let (r, over) = op[o * inner + i].addingReportingOverflow(xp[base + i])
                            op[o * inner + i] = over ? (xp[base + i] > 0 ? .max : .min) : r
                        }
                    }
                }
            }
        }
        switch d {
        case let .i64(a): return a.withUnsafeBufferPointer(apply)
        case let .i64View(v): return apply(v.buffer)
        default: return widen(d).withUnsafeBufferPointer(apply)
        }
    }
}

/// A body generic over the element type of integer data (Swift closures cannot be generic).
protocol IntegerElementsBody {
    associatedtype Result
    func callAsFunction<T: FixedWidthInteger>(_ a: UnsafeBufferPointer<T>) -> Result
}

extension DType {
    /// The dtype of an integer element type.
    static func of<T: FixedWidthInteger>(_: T.Type) -> DType {
        switch T.bitWidth { case 8: return .i8; case 16: return .i16; case 32: return .i32; default: return .i64 }
    }
}

/// numpy broadcasting of a binary function, with fast paths for equal shapes and a trailing operand.
enum Broadcast {
    /// The result's shape with both operands' element strides (0 on broadcast axes), size-1 axes
    /// dropped and adjacent axes merged where both operands run on contiguously (rank ≥ 1).
    typealias Layout = (shape: [Int], sa: [Int], sb: [Int])

    static func layout(_ ashape: [Int], _ bshape: [Int], out: [Int]) -> Layout {
        let r = out.count
        func bstrides(_ s: [Int]) -> [Int] {
            let padded = [Int](repeating: 1, count: r - s.count) + s
            let st = strides(of: padded)
            return (0..<r).map { padded[$0] == 1 ? 0 : st[$0] }
        }
        let fa = bstrides(ashape), fb = bstrides(bshape)
        var shape: [Int] = [], sa: [Int] = [], sb: [Int] = []
        for d in 0..<r where out[d] != 1 {
            if let n = shape.last, sa.last! == fa[d] * out[d], sb.last! == fb[d] * out[d] {
                shape[shape.count - 1] = n * out[d]; sa[sa.count - 1] = fa[d]; sb[sb.count - 1] = fb[d]
            } else {
                shape.append(out[d]); sa.append(fa[d]); sb.append(fb[d])
            }
        }
        if shape.isEmpty { return ([1], [0], [0]) }
        return (shape, sa, sb)
    }

    static func apply<T, R>(_ a: [T], _ ashape: [Int], _ b: [T], _ bshape: [Int], out: [Int], _ f: (T, T) -> R) -> [R] {
        let n = out.reduce(1, *)
        if ashape == out && bshape == out { return (0..<n).map { f(a[$0], b[$0]) } }
        if ashape == out && Array(out.suffix(bshape.count)) == bshape && !b.isEmpty {
            let m = b.count
            return (0..<n).map { f(a[$0], b[$0 % m]) }
        }
        let r = out.count
        func bstrides(_ s: [Int]) -> [Int] {
            let padded = [Int](repeating: 1, count: r - s.count) + s
            let st = strides(of: padded)
            return (0..<r).map { padded[$0] == 1 ? 0 : st[$0] }
        }
        let sa = bstrides(ashape), sb = bstrides(bshape)
        guard r > 0, n > 0 else { return n == 1 ? [f(a[0], b[0])] : [] }
        // Row by row along the last axis; an odometer over the outer axes moves the operands'
        // offsets (no division per element).
        let inner = out[r - 1], ia1 = sa[r - 1], ib1 = sb[r - 1]
        var index = [Int](repeating: 0, count: r)
        var baseA = 0, baseB = 0
        var result = [R]()
        result.reserveCapacity(n)
        for _ in 0..<(n / inner) {
            var ia = baseA, ib = baseB
            for _ in 0..<inner { result.append(f(a[ia], b[ib])); ia += ia1; ib += ib1 }
            var d = r - 2
            while d >= 0 {
                index[d] += 1; baseA += sa[d]; baseB += sb[d]
                if index[d] < out[d] { break }
                baseA -= sa[d] * out[d]; baseB -= sb[d] * out[d]; index[d] = 0
                d -= 1
            }
        }
        return result
    }
}

/// Folds one axis of a row-major tensor, keeping it as a dimension of size 1.
enum Reduction {
    static func apply<T>(_ x: [T], _ shape: [Int], axis: Int, initial: T, _ f: (T, T) -> T) -> [T] {
        let len = shape[axis]
        let inner = shape[(axis + 1)...].reduce(1, *)
        let outer = x.count / (len * inner)
        var out = [T](repeating: initial, count: outer * inner)
        for o in 0..<outer {
            for j in 0..<len {
                let base = (o * len + j) * inner
                for i in 0..<inner { out[o * inner + i] = f(out[o * inner + i], x[base + i]) }
            }
        }
        return out
    }
}

/// The multiply-add instruction of the block kernels and the peak loop: AVX-512 VNNI's vpdpwssd
/// (on 256-bit registers) where the CPU has it, unless ZO_VNNI=0; else AVX2's vpmaddwd + vpaddd.
/// The same switch picks the rescales' AVX-512VL form. Both give the same integers. Settable for
/// tests and benchmarks of both paths (not while kernels run).
public enum MultiplyAdd {
    public static var usesVNNI: Bool {
        get { zo_has_vnni() != 0 }
        set { _ = zo_use_vnni(newValue ? 1 : 0) }
    }
    public static var instruction: String { usesVNNI ? "vpdpwssd" : "vpmaddwd + vpaddd" }
}

/// The machine's int16 multiply-add peak, measured (CKernels' tight loop of `MultiplyAdd`'s instruction).
public enum MultiplyAddPeak {
    /// Multiply-adds per second on `threads` threads running the loop at once for about `seconds`
    /// (nil without AVX2).
    public static func measure(threads: Int, seconds: Double = 0.5) -> Double? {
        let perIteration = zo_madd_peak(1)
        guard perIteration > 0 else { return nil }
        // Size the loop on one thread, then time all threads running it together.
        var n = 1 << 16
        while true {
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = zo_madd_peak(n)
            let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            if dt > 0.05 { n = max(1, Int(Double(n) * seconds / dt)); break }
            n *= 4
        }
        let iterations = n
        let t0 = DispatchTime.now().uptimeNanoseconds
        DispatchQueue.concurrentPerform(iterations: threads) { _ in _ = zo_madd_peak(iterations) }
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return Double(perIteration) * Double(iterations) * Double(threads) / dt
    }
}
