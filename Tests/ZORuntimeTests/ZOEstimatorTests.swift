import XCTest
import ZORuntime

final class ZOEstimatorTests: XCTestCase {
    func testDirectionsAreReproducibleStandardNormals() {
        let e = ZOEstimator(dimension: 4096, directions: 4, epsilon: 0.01, seed: 9)
        let z = e.direction(step: 3, index: 1)
        XCTAssertEqual(z, ZOEstimator(dimension: 4096, directions: 4, epsilon: 0.01, seed: 9).direction(step: 3, index: 1))
        XCTAssertNotEqual(z, e.direction(step: 3, index: 2))
        XCTAssertNotEqual(z, e.direction(step: 4, index: 1))
        let mean = z.reduce(0, +) / 4096, variance = z.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / 4096
        XCTAssertLessThan(abs(mean), 0.06)
        XCTAssertEqual(variance, 1, accuracy: 0.08)
        let p = e.points(around: [Float](repeating: 1, count: 4096), step: 3)
        XCTAssertEqual(p.count, 8)
        XCTAssertEqual(p[2].count, 1)
        XCTAssertEqual(p[2][0][7], 1 + 0.01 * z[7], accuracy: 1e-6)
        XCTAssertEqual(p[3][0][7], 1 - 0.01 * z[7], accuracy: 1e-6)
        // With groups, group 0 keeps the shared directions and the others differ.
        let grouped = ZOEstimator(dimension: 4096, directions: 4, epsilon: 0.01, seed: 9, groups: 3)
        XCTAssertEqual(grouped.direction(step: 3, index: 1, group: 0), z)
        XCTAssertNotEqual(grouped.direction(step: 3, index: 1, group: 1), z)
        XCTAssertNotEqual(grouped.direction(step: 3, index: 1, group: 2), grouped.direction(step: 3, index: 1, group: 1))
        let gp = grouped.points(around: [Float](repeating: 1, count: 4096), step: 3)
        XCTAssertEqual(gp.count, 8)
        XCTAssertEqual(gp[3].count, 3)
        XCTAssertEqual(gp[3][2][7], 1 - 0.01 * grouped.direction(step: 3, index: 1, group: 2)[7], accuracy: 1e-6)
    }

    /// On a linear loss the two-sided estimate is unbiased: averaged over steps it points along the gradient.
    func testEstimateOfALinearLossPointsAlongItsGradient() {
        let d = 256
        let grad = (0..<d).map { Float(sin(Double($0))) }
        let e = ZOEstimator(dimension: d, directions: 8, epsilon: 0.05, seed: 1)
        var sum = [Float](repeating: 0, count: d)
        for step in 0..<200 {
            let losses = e.points(around: [Float](repeating: 0, count: d), step: step).map { x in [zip(x[0], grad).reduce(0.0) { $0 + Double($1.0 * $1.1) }] }
            for (i, g) in e.gradient(losses: losses, step: step).enumerated() { sum[i] += g }
        }
        let dot = zip(sum, grad).reduce(0) { $0 + $1.0 * $1.1 }
        let cos = dot / (sqrt(sum.reduce(0) { $0 + $1 * $1 }) * sqrt(grad.reduce(0) { $0 + $1 * $1 }))
        XCTAssertGreaterThan(cos, 0.9)
    }

    /// Adam on ZO estimates minimises a quadratic from loss values alone.
    func testAdamOnEstimatesMinimisesAQuadratic() {
        let d = 64
        let target = (0..<d).map { Float(cos(Double($0) * 0.7)) }
        let weights = (0..<d).map { 0.5 + Float($0 % 5) }
        func loss(_ x: [Float]) -> Double {
            var total = 0.0
            for i in 0..<d { let r = Double(x[i] - target[i]); total += Double(weights[i]) * r * r }
            return total
        }
        var x = [Float](repeating: 0, count: d)
        let start = loss(x)
        let e = ZOEstimator(dimension: d, directions: 4, epsilon: 0.01, seed: 5)
        var adam = Adam(dimension: d, learningRate: 0.05)
        for step in 0..<600 {
            adam.step(&x, gradient: e.gradient(losses: e.points(around: x, step: step).map { [loss($0[0])] }, step: step))
        }
        XCTAssertLessThan(loss(x), start * 0.01)
        XCTAssertEqual(adam.steps, 600)
    }

    /// A loss of three parts whose gradients point the same way (an edit's prompts): directions of
    /// their own per part keep the estimate unbiased and cut its mean squared error about threefold.
    func testGroupsCutTheVarianceOfAlignedParts() {
        let d = 128, steps = 400
        let grad = (0..<d).map { Float(cos(Double($0) * 0.3)) }
        func error(groups: Int) -> (cosine: Float, meanSquaredError: Double) {
            let e = ZOEstimator(dimension: d, directions: 2, epsilon: 0.05, seed: 3, groups: groups)
            var sum = [Float](repeating: 0, count: d), squared = 0.0
            for step in 0..<steps {
                // L = Σ_g L_g, each part a third of the linear loss at its own δ.
                let losses = e.points(around: [Float](repeating: 0, count: d), step: step).map { copy -> [Double] in
                    let parts = (0..<3).map { p in zip(copy[copy.count == 1 ? 0 : p], grad).reduce(0.0) { $0 + Double($1.0 * $1.1) } / 3 }
                    return copy.count == 1 ? [parts.reduce(0, +)] : parts
                }
                let g = e.gradient(losses: losses, step: step)
                for i in 0..<d { sum[i] += g[i]; squared += Double((g[i] - grad[i]) * (g[i] - grad[i])) }
            }
            let dot = zip(sum, grad).reduce(0) { $0 + $1.0 * $1.1 }
            return (dot / (sqrt(sum.reduce(0) { $0 + $1 * $1 }) * sqrt(grad.reduce(0) { $0 + $1 * $1 })), squared / Double(steps))
        }
        let shared = error(groups: 1), own = error(groups: 3)
        XCTAssertGreaterThan(own.cosine, 0.9)
        XCTAssertGreaterThan(shared.cosine, 0.9)
        XCTAssertLessThan(own.meanSquaredError, shared.meanSquaredError / 2)
        XCTAssertGreaterThan(own.meanSquaredError, shared.meanSquaredError / 4)
    }
}
