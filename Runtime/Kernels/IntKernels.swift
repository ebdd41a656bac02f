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
    static func withInt8s<R>(_ d: TensorData, _ body: (UnsafeBufferPointer<Int8>) -> R) throws -> R {
        guard let r = d.withInt8s(body) else { throw KernelError("expected i8 data, got \(d.dtype.rawValue)") }
        return r
    }

    static func int16s(_ d: TensorData) throws -> [Int16] {
        switch d {
        case let .i16(a): return a
        case let .i8(a): return a.map(Int16.init)
        case let .i8View(v): return v.buffer.map(Int16.init)
        default: throw KernelError("expected i16 data, got \(d.dtype.rawValue)")
        }
    }

    /// acc[r, n] = bias[n] + Σ_k x[r, k] · w[n, k], exact (CKernels: AVX2 when the CPU has it).
    /// Large products split the outputs between the cores; every split gives the same integers.
    static func fullyConnected(_ x: [Int16], rows: Int, k: Int, _ wp: UnsafeBufferPointer<Int8>, n: Int, bias: [Int64]?) -> [Int64] {
        var out = [Int64](repeating: 0, count: rows * n)
        let parts = rows * n * k >= 1 << 20 ? min(Threads.count, max(1, n / 64)) : 1
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                let o = op.baseAddress!
                func run(_ p: Int) {
                    // Output slices of whole 4-column groups, so each part takes the vector path.
                    let chunk = (n + parts - 1) / parts
                    let j0 = min(n, p * chunk), j1 = min(n, j0 + chunk)
                    guard j0 < j1 else { return }
                    if let b = bias {
                        b.withUnsafeBufferPointer { zo_fc_i16_i8(xp.baseAddress, Int32(rows), Int32(k), wp.baseAddress, Int32(n), Int32(j0), Int32(j1), $0.baseAddress, o) }
                    } else {
                        zo_fc_i16_i8(xp.baseAddress, Int32(rows), Int32(k), wp.baseAddress, Int32(n), Int32(j0), Int32(j1), nil, o)
                    }
                }
                if parts == 1 { run(0) } else { DispatchQueue.concurrentPerform(iterations: parts, execute: run) }
            }
        }
        return out
    }

    /// Batched c[b, m, n] = Σ_k a[b, m, k] · b[b, k, n] (or b[b, n, k]), exact: each i16 product
    /// fits in Int32 and the sum is kept in Int64. B is laid out [n, k] first, so every output is a
    /// contiguous dot product.
    static func matmul(_ a: [Int16], _ at: TensorType, _ b: [Int16], transposeB: Bool, out: TensorType) -> [Int64] {
        let m = at.shape[at.rank - 2], k = at.shape[at.rank - 1], n = out.shape[out.rank - 1]
        let batches = at.elementCount / (m * k)
        var bt = b
        if !transposeB {
            bt = [Int16](unsafeUninitializedCapacity: b.count) { buf, count in
                for t in 0..<batches { for l in 0..<k { for j in 0..<n { buf[t * k * n + j * k + l] = b[t * k * n + l * n + j] } } }
                count = b.count
            }
        }
        var c = [Int64](repeating: 0, count: out.elementCount)
        a.withUnsafeBufferPointer { ap in
            bt.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    for t in 0..<batches {
                        let A = ap.baseAddress! + t * m * k, Bm = bp.baseAddress! + t * k * n, C = cp.baseAddress! + t * m * n
                        for i in 0..<m {
                            let ai = A + i * k
                            for j in 0..<n {
                                let bj = Bm + j * k
                                var acc: Int64 = 0
                                for l in 0..<k { acc &+= Int64(Int32(ai[l]) &* Int32(bj[l])) }
                                C[i * n + j] = acc
                            }
                        }
                    }
                }
            }
        }
        return c
    }

    /// add/sub/mul with numpy broadcasting, exact in Int64, then saturated to the result type.
    /// (Operands are at most i32 for mul into i64, so the products fit; i64 products saturate.)
    static func binary(_ kind: OpKind, _ a: [Int64], _ ashape: [Int], _ b: [Int64], _ bshape: [Int], out: TensorType) -> TensorData {
        let f: (Int64, Int64) -> Int64
        switch kind {
        case .add: f = { let (r, o) = $0.addingReportingOverflow($1); return o ? ($1 > 0 ? .max : .min) : r }
        case .sub: f = { let (r, o) = $0.subtractingReportingOverflow($1); return o ? ($1 < 0 ? .max : .min) : r }
        default: f = { let (r, o) = $0.multipliedReportingOverflow(by: $1); return o ? (($0 < 0) != ($1 < 0) ? .min : .max) : r }
        }
        return narrow(Broadcast.apply(a, ashape, b, bshape, out: out.shape, f), to: out.dtype)
    }

    /// y = saturate(round(x · m / 2^s)) per tensor or per index of the last axis (CKernels), the
    /// input read in its own width; large tensors are split between the cores at row boundaries.
    static func rescale(_ d: TensorData, lastDim: Int, multipliers: [Int], shifts: [Int], out: DType) -> TensorData {
        let width = multipliers.count > 1 ? lastDim : 1
        let m = multipliers.map(Int64.init), s = shifts.map(Int32.init)
        let count = d.count
        let outBits = Int32(out == .f32 ? 64 : out.byteSize * 8)
        func run(_ x: UnsafeRawPointer, inBits: Int32, _ y: UnsafeMutableRawPointer) {
            let rows = count / max(width, 1)
            let parts = count >= 1 << 16 && rows >= 2 ? min(Threads.count, rows) : 1
            let inBytes = Int(inBits / 8), outBytes = Int(outBits / 8)
            func part(_ p: Int) {
                let r0 = rows * p / parts, r1 = rows * (p + 1) / parts
                zo_rescale(x + r0 * width * inBytes, inBits, (r1 - r0) * width, Int32(width), m, s, outBits, y + r0 * width * outBytes)
            }
            if parts == 1 { part(0) } else { DispatchQueue.concurrentPerform(iterations: parts, execute: part) }
        }
        func make<T>(_: T.Type) -> [T] {
            [T](unsafeUninitializedCapacity: count) { buf, n in
                if count > 0 {
                    let y = UnsafeMutableRawPointer(buf.baseAddress!)
                    switch d {
                    case let .i8(a): a.withUnsafeBytes { run($0.baseAddress!, inBits: 8, y) }
                    case let .i8View(v): run(UnsafeRawPointer(v.buffer.baseAddress!), inBits: 8, y)
                    case let .i16(a): a.withUnsafeBytes { run($0.baseAddress!, inBits: 16, y) }
                    case let .i32(a): a.withUnsafeBytes { run($0.baseAddress!, inBits: 32, y) }
                    case let .i64(a): a.withUnsafeBytes { run($0.baseAddress!, inBits: 64, y) }
                    case .f32: widen(d).withUnsafeBytes { run($0.baseAddress!, inBits: 64, y) }
                    }
                }
                n = count
            }
        }
        switch out {
        case .i8: return .i8(make(Int8.self))
        case .i16: return .i16(make(Int16.self))
        case .i32: return .i32(make(Int32.self))
        default: return .i64(make(Int64.self))
        }
    }

    /// round(v / 2^s) with ties toward +∞, saturated to Int64.
    @inline(__always) static func roundShift(_ v: Int128, _ s: Int) -> Int64 {
        let r = s == 0 ? v : (v + (Int128(1) << (s - 1))) >> s
        return Int64(clamping: r)
    }

    static func table(_ x: [Int16], _ tbl: [Int16]) -> [Int32] {
        x.map { v in
            let u = Int(v) + 32768, i = u >> 7, f = Int32(u & 127)
            let lo = Int32(tbl[i]), hi = Int32(tbl[i + 1])
            return lo * 128 + (hi - lo) * f
        }
    }

    static func normTable(_ x: [Int64], _ tbl: [Int16], power: Int, shift: Int) -> [Int64] {
        x.map { raw in
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
    }

    static func reduceSum(_ x: [Int64], _ shape: [Int], axis: Int) -> [Int64] {
        Reduction.apply(x, shape, axis: axis, initial: 0) { acc, v in
            let (r, o) = acc.addingReportingOverflow(v)
            return o ? (v > 0 ? .max : .min) : r
        }
    }
}

/// numpy broadcasting of a binary function, with fast paths for equal shapes and a trailing operand.
enum Broadcast {
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
