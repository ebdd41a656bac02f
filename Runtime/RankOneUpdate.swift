/// ROME's rank-one update of an MLP down-projection, in the r-ROME form: the same averaged key k̄
/// in u and in r (the original code divides by k·u with the plain-prompt key k, which explodes when
/// k and k̄ are near-orthogonal).
///
///     u = k̄ / ‖k̄‖,   r = (v* − W k̄) / (k̄ · u),   W ← W + r uᵀ
///
/// so W' k̄ = v* exactly, and W' x = W x for every x orthogonal to k̄.
public struct RankOneUpdate: Equatable, Sendable {
    /// Length = rows of W (the layer's output, hidden size).
    public let r: [Float]
    /// Length = columns of W (the key, ffn size).
    public let u: [Float]

    /// `weights`: W as rows × cols, row-major (GGUF's ffn_down: rows = hidden, cols = ffn);
    /// `key`: k̄ (cols); `target`: v* (rows). Sums in f64.
    public init(weights w: [Float], rows: Int, cols: Int, key: [Float], target: [Float]) throws {
        guard w.count == rows * cols, key.count == cols, target.count == rows else {
            throw RuntimeError.badRequest("rank-one update: W has \(w.count) values for \(rows)×\(cols), key \(key.count), target \(target.count)")
        }
        let norm = key.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        guard norm > 0, norm.isFinite else { throw RuntimeError.badRequest("rank-one update: the key is zero or not finite") }
        let uu = key.map { Double($0) / norm }
        let ku = zip(key, uu).reduce(0.0) { $0 + Double($1.0) * $1.1 }  // = ‖k̄‖
        var rr = [Float](repeating: 0, count: rows)
        for i in 0..<rows {
            var wk = 0.0
            for j in 0..<cols { wk += Double(w[i * cols + j]) * Double(key[j]) }
            rr[i] = Float((Double(target[i]) - wk) / ku)
        }
        r = rr
        u = uu.map(Float.init)
    }

    /// W + r uᵀ.
    public func applied(to w: [Float]) -> [Float] {
        let cols = u.count
        var out = w
        for i in 0..<r.count { for j in 0..<cols { out[i * cols + j] += r[i] * u[j] } }
        return out
    }
}
