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
        XCTAssertEqual(p[2][7], 1 + 0.01 * z[7], accuracy: 1e-6)
        XCTAssertEqual(p[3][7], 1 - 0.01 * z[7], accuracy: 1e-6)
    }

    /// On a linear loss the two-sided estimate is unbiased: averaged over steps it points along the gradient.
    func testEstimateOfALinearLossPointsAlongItsGradient() {
        let d = 256
        let grad = (0..<d).map { Float(sin(Double($0))) }
        let e = ZOEstimator(dimension: d, directions: 8, epsilon: 0.05, seed: 1)
        var sum = [Float](repeating: 0, count: d)
        for step in 0..<200 {
            let losses = e.points(around: [Float](repeating: 0, count: d), step: step).map { x in zip(x, grad).reduce(0.0) { $0 + Double($1.0 * $1.1) } }
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
            adam.step(&x, gradient: e.gradient(losses: e.points(around: x, step: step).map(loss), step: step))
        }
        XCTAssertLessThan(loss(x), start * 0.01)
        XCTAssertEqual(adam.steps, 600)
    }
}
