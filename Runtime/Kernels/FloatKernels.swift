import CBLAS
import Foundation
import ZOIR

/// f32 kernels of the float profile. Matmuls go through OpenBLAS; the rest are plain loops.
enum FloatKernels {
    /// y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias), M = all leading dims of x.
    static func fullyConnected(_ x: [Float], _ xt: TensorType, _ w: [Float], _ wt: TensorType, bias: [Float]?, pool: inout BufferPool) -> [Float] {
        let k = wt.shape[1], n = wt.shape[0], m = xt.elementCount / k
        var y = pool.take(m * n)
        if let b = bias {
            y.withUnsafeMutableBufferPointer { yp in for r in 0..<m { for j in 0..<n { yp[r * n + j] = b[j] } } }
        }
        x.withUnsafeBufferPointer { xp in
            w.withUnsafeBufferPointer { wp in
                y.withUnsafeMutableBufferPointer { yp in
                    if m == 1 {
                        // One row: a matrix-vector product reads w in place (sgemm would repack all of it).
                        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), 1, wp.baseAddress, Int32(k),
                                    xp.baseAddress, 1, bias == nil ? 0 : 1, yp.baseAddress, 1)
                    } else {
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1,
                                    xp.baseAddress, Int32(k), wp.baseAddress, Int32(k), bias == nil ? 0 : 1, yp.baseAddress, Int32(n))
                    }
                }
            }
        }
        return y
    }

    /// Batched c[b, M, N] = a[b, M, K] · b[b, K, N] (or b[b, N, K]ᵀ).
    static func matmul(_ a: [Float], _ at: TensorType, _ b: [Float], _ bt: TensorType, transposeB: Bool, out: TensorType, pool: inout BufferPool) -> [Float] {
        let m = at.shape[at.rank - 2], k = at.shape[at.rank - 1]
        let n = out.shape[out.rank - 1]
        let batches = at.elementCount / (m * k)
        var c = pool.take(out.elementCount)
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    for i in 0..<batches {
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                                    Int32(m), Int32(n), Int32(k), 1,
                                    ap.baseAddress! + i * m * k, Int32(k),
                                    bp.baseAddress! + i * k * n, Int32(transposeB ? k : n),
                                    0, cp.baseAddress! + i * m * n, Int32(n))
                    }
                }
            }
        }
        return c
    }

    /// Elementwise with numpy broadcasting.
    static func binary(_ kind: OpKind, _ a: [Float], _ ashape: [Int], _ b: [Float], _ bshape: [Int], out: [Int]) -> [Float] {
        switch kind {
        case .add: return Broadcast.apply(a, ashape, b, bshape, out: out, +)
        case .sub: return Broadcast.apply(a, ashape, b, bshape, out: out, -)
        default: return Broadcast.apply(a, ashape, b, bshape, out: out, *)
        }
    }

    static func map(_ x: [Float], pool: inout BufferPool, _ f: (Float) -> Float) -> [Float] {
        var y = pool.take(x.count)
        y.withUnsafeMutableBufferPointer { yp in x.withUnsafeBufferPointer { xp in for i in 0..<xp.count { yp[i] = f(xp[i]) } } }
        return y
    }

    /// Mean of squares accumulated in f32 (as PyTorch does on CPU for f32 tensors is not guaranteed;
    /// f64 here keeps the norm exact to f32 rounding).
    static func rmsNorm(_ x: [Float], _ w: [Float], eps: Float, pool: inout BufferPool) -> [Float] {
        let d = w.count, rows = x.count / d
        var y = pool.take(x.count)
        y.withUnsafeMutableBufferPointer { yp in
            x.withUnsafeBufferPointer { xp in
                for r in 0..<rows {
                    var ss: Double = 0
                    for j in 0..<d { let v = Double(xp[r * d + j]); ss += v * v }
                    let inv = Float(1 / (ss / Double(d) + Double(eps)).squareRoot())
                    for j in 0..<d { yp[r * d + j] = xp[r * d + j] * inv * w[j] }
                }
            }
        }
        return y
    }

    static func softmaxLastAxis(_ x: [Float], rowLength d: Int, pool: inout BufferPool) -> [Float] {
        var y = pool.take(x.count)
        y.withUnsafeMutableBufferPointer { yp in
            x.withUnsafeBufferPointer { xp in
                for r in 0..<(x.count / d) {
                    let base = r * d
                    var mx = -Float.infinity
                    for j in 0..<d { mx = max(mx, xp[base + j]) }
                    var sum: Float = 0
                    for j in 0..<d { let e = mx == -.infinity ? 0 : expf(xp[base + j] - mx); yp[base + j] = e; sum += e }
                    let inv = sum > 0 ? 1 / sum : 0
                    for j in 0..<d { yp[base + j] *= inv }
                }
            }
        }
        return y
    }

    /// x[B, H, T, D]; cos/sin[T, D/2].
    static func rope(_ x: [Float], _ shape: [Int], cos: [Float], sin: [Float], neox: Bool, pool: inout BufferPool) -> [Float] {
        let t = shape[2], d = shape[3], half = d / 2
        var y = pool.take(x.count)
        y.withUnsafeMutableBufferPointer { yp in
            x.withUnsafeBufferPointer { xp in
                for row in 0..<(x.count / d) {
                    let pos = row % t, base = row * d
                    for i in 0..<half {
                        let c = cos[pos * half + i], s = sin[pos * half + i]
                        let (i0, i1) = neox ? (i, i + half) : (2 * i, 2 * i + 1)
                        let a = xp[base + i0], b = xp[base + i1]
                        yp[base + i0] = a * c - b * s
                        yp[base + i1] = a * s + b * c
                    }
                }
            }
        }
        return y
    }
}
