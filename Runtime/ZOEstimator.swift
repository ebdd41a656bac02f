import Foundation

/// Two-sided zeroth-order gradient estimates (MobiEdit's estimator): at step t the host asks the
/// npu for the loss at δ ± ε·z_i for q Gaussian directions z_i, then
///
///     ĝ = (1/q) Σ_i [L(δ + ε z_i) − L(δ − ε z_i)] / (2ε) · z_i.
///
/// With `groups` > 1 the loss is a sum of parts L = Σ_g L_g that each read only their own copy of
/// δ (an edit's prompts: every prompt is a separate row block of the batch), and each part gets its
/// own directions z_{i,g}: ĝ = (1/q) Σ_i Σ_g [L_g(δ + ε z_{i,g}) − L_g(δ − ε z_{i,g})] / (2ε) · z_{i,g}.
/// Still unbiased (E[z zᵀ] = I per part), and where the parts' gradients point the same way (the
/// same fact asked with other context prefixes) its variance is that of q·groups shared directions,
/// for the same 2q evaluations.
///
/// Directions are regenerated from (seed, step, i, g) whenever needed, never stored, so a run is
/// reproducible from its seed and the host keeps O(dimension) memory. Group 0's directions are
/// those of the shared estimator.
public struct ZOEstimator: Sendable {
    public let dimension: Int
    /// q: directions per step (2q loss evaluations).
    public let directions: Int
    /// ε: the perturbation scale (a direction's norm is about ε·√dimension).
    public let epsilon: Float
    public let seed: UInt64
    /// Parts of the loss with directions of their own (1: one direction shared by the whole loss).
    public let groups: Int

    public init(dimension: Int, directions: Int, epsilon: Float, seed: UInt64, groups: Int = 1) {
        precondition(groups >= 1, "groups must be at least 1")
        self.dimension = dimension; self.directions = directions; self.epsilon = epsilon; self.seed = seed; self.groups = groups
    }

    /// z_{i,g} of step `step`: standard normal entries.
    public func direction(step: Int, index: Int, group: Int = 0) -> [Float] {
        var g = SplitMix64(seed: seed ^ (UInt64(truncatingIfNeeded: step) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(truncatingIfNeeded: index) &* 0xC2B2_AE3D_27D4_EB4F)
                               ^ (UInt64(truncatingIfNeeded: group) &* 0x1656_67B1_9E37_79F9))
        return (0..<dimension).map { _ in Float(g.normal()) }
    }

    /// The 2q points to evaluate at step `step`, each as one δ per group: δ + εz_{1,g}, δ − εz_{1,g}, δ + εz_{2,g}, …
    public func points(around delta: [Float], step: Int) -> [[[Float]]] {
        (0..<directions).flatMap { i -> [[[Float]]] in
            let z = (0..<groups).map { direction(step: step, index: i, group: $0) }
            return [z.map { zip(delta, $0).map { $0 + epsilon * $1 } }, z.map { zip(delta, $0).map { $0 - epsilon * $1 } }]
        }
    }

    /// ĝ from each group's part of the loss at `points(around:step:)`, in the same order.
    public func gradient(losses: [[Double]], step: Int) -> [Float] {
        precondition(losses.count == 2 * directions && losses.allSatisfy { $0.count == groups },
                     "expected \(2 * directions) points of \(groups) loss parts")
        var g = [Double](repeating: 0, count: dimension)
        for i in 0..<directions {
            for k in 0..<groups {
                let slope = (losses[2 * i][k] - losses[2 * i + 1][k]) / (2 * Double(epsilon) * Double(directions))
                for (j, z) in direction(step: step, index: i, group: k).enumerated() { g[j] += slope * Double(z) }
            }
        }
        return g.map(Float.init)
    }
}
/// Adam (Kingma & Ba) on the host, in f32 state with f64 bias corrections.
public struct Adam: Sendable {
    public var learningRate: Float
    public let beta1: Float, beta2: Float, eps: Float
    var m: [Float], v: [Float]
    public private(set) var steps = 0

    public init(dimension: Int, learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8) {
        self.learningRate = learningRate; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps
        m = [Float](repeating: 0, count: dimension)
        v = m
    }

    /// x ← x − lr · m̂ / (√v̂ + eps).
    public mutating func step(_ x: inout [Float], gradient g: [Float]) {
        steps += 1
        let c1 = Float(1 - pow(Double(beta1), Double(steps))), c2 = Float(1 - pow(Double(beta2), Double(steps)))
        for i in 0..<x.count {
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
            x[i] -= learningRate * (m[i] / c1) / ((v[i] / c2).squareRoot() + eps)
        }
    }
}
