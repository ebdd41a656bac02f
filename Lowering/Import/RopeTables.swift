import Foundation

/// RoPE angle tables and attention masks, computed on the host (at compile time for static
/// positions, per step for decoding).
public enum RopeTables {
    /// cos and sin of position·base^(−2i/d) for i < d/2, row-major [positions, d/2].
    /// Frequencies are rounded to f32 first, as the reference implementations do.
    public static func make(positions: [Int], headDim: Int, base: Double) -> (cos: [Float], sin: [Float]) {
        let half = headDim / 2
        let invFreq = (0..<half).map { Float(1.0 / pow(base, Double(2 * $0) / Double(headDim))) }
        var c = [Float](), s = [Float]()
        c.reserveCapacity(positions.count * half); s.reserveCapacity(positions.count * half)
        for p in positions {
            for i in 0..<half {
                let angle = Float(p) * invFreq[i]
                c.append(Foundation.cos(angle)); s.append(Foundation.sin(angle))
            }
        }
        return (c, s)
    }

    /// Additive causal mask [T, T]: 0 where key ≤ query, −∞ above the diagonal.
    public static func causalMask(_ t: Int) -> [Float] {
        var m = [Float](repeating: 0, count: t * t)
        for i in 0..<t { for j in (i + 1)..<max(i + 1, t) { m[i * t + j] = -.infinity } }
        return m
    }

    /// Mask [T, C+T] for T new tokens after `filled` valid cache slots of capacity C.
    public static func decodeMask(newTokens t: Int, cacheLen c: Int, filled: Int) -> [Float] {
        var m = [Float](repeating: -.infinity, count: t * (c + t))
        for i in 0..<t {
            for j in 0..<filled { m[i * (c + t) + j] = 0 }
            for j in 0...i { m[i * (c + t) + c + j] = 0 }
        }
        return m
    }
}
