import XCTest
import ZOIR
import ZOLowering
import ZORuntime

/// Each decomposable/quantizable op on a small graph: the lowered npu function must compute what
/// the float function computes, up to quantization error.
final class QuantizeAccuracyTests: XCTestCase {
    /// Builds `body` as a float function, lowers it (decompose, calibrate on seeded inputs,
    /// quantize, legalize), runs both on the calibration input, returns the worst error relative
    /// to the output's range.
    func lowerAndCompare(_ params: [(String, TensorType)], constants: [(String, TensorType, [Float])] = [], weights: WeightCache? = nil,
                         ops: ((Function) -> Void)? = nil, _ body: (FunctionBuilder, [Value]) throws -> Value, file: StaticString = #filePath, line: UInt = #line) throws -> Double {
        let mb = ModuleBuilder(name: "t")
        for (n, t, d) in constants { mb.declareConstant(n, t, .data(.f32(d))) }
        let f = FunctionBuilder("f", in: mb)
        let ps = params.map { f.param($0.0, $0.1) }
        f.output("y", try body(f, ps))
        f.finish()
        let float = mb.module
        let input = CalibratePass.syntheticInputs(float.function("f")!)
        let lowered = try PassManager([DecomposePass(), CalibratePass(inputs: ["f": [input]]), QuantizePass(cache: weights), FoldConstantsPass(), DCEPass(), LegalizeNPUPass()]).run(float)
        let want = try Interpreter(module: float).run("f", input)
        let lf = lowered.function("f")!
        ops?(lf)
        var qin: [String: TensorData] = [:]
        for p in lf.params {
            guard case let .f32(a)? = input[p.name], case let .perTensor(s, _)? = p.type.quant else { continue }
            qin[p.name] = .i16(a.map { Int16(clamping: Int(($0 / s).rounded())) })
        }
        let got = try Interpreter(module: lowered).run("f", qin)
        guard case let .f32(w)? = want["y"], case let .i16(g)? = got["y"],
              case let .perTensor(s, _)? = lf.type(of: lf.resultValues[0]).quant else { XCTFail("bad outputs", file: file, line: line); return .infinity }
        let range = Double(w.map { abs($0) }.max() ?? 1)
        return zip(w, g).map { abs(Double($0) - Double($1) * Double(s)) / range }.max() ?? 0
    }

    func testFullyConnected() throws {
        var rng = SplitMix64(seed: 1)
        let w = (0..<(8 * 16)).map { _ in Float(rng.normal()) }
        let e = try lowerAndCompare([("x", .f32([2, 16]))], constants: [("w", .f32([8, 16]), w)]) { f, p in
            try f.emit(.fullyConnected, [p[0], f.constant("w")])
        }
        XCTAssertLessThan(e, 2e-2, "fully_connected")
    }

    /// K a multiple of 32: blocks. Weights that are GGUF Q4_1 blocks (each block 16 levels
    /// lo + j · step) are held exactly, so only the activations' i16 grids remain; per channel,
    /// int8 rounds them. Weights on no grid get symmetric 8-bit blocks.
    func testBlockWeightsHoldQ4GridsExactly() throws {
        var rng = SplitMix64(seed: 2)
        let n = 8, k = 64
        var grid = [Float](), normal = [Float]()
        for _ in 0..<(n * k / 32) {
            let step = Float(0.01 + abs(rng.normal()) * 0.05), lo = Float(-8 * Double(step) + rng.normal() * 0.01)
            var levels = (0..<32).map { _ in Float(Int.random(in: 0...15, using: &rng)) }
            levels[0] = 0; levels[1] = 15  // the block's minimum and maximum, as Q4_1 blocks have
            grid += levels.map { lo + $0 * step }
        }
        for _ in 0..<(n * k) { normal.append(Float(rng.normal())) }
        for (w, name) in [(grid, "Q4_1 grid"), (normal, "normal")] {
            var kinds: [OpKind] = []
            let blocked = try lowerAndCompare([("x", .f32([4, k]))], constants: [("w", .f32([n, k]), w)], ops: { kinds = $0.ops.map(\.kind) }) { f, p in
                try f.emit(.fullyConnected, [p[0], f.constant("w")])
            }
            XCTAssertTrue(kinds.contains(.blockFullyConnected) && !kinds.contains(.fullyConnected), "\(name): \(kinds)")
            let perChannel = try lowerAndCompare([("x", .f32([4, k]))], constants: [("w", .f32([n, k]), w)], weights: WeightCache(form: .perChannel)) { f, p in
                try f.emit(.fullyConnected, [p[0], f.constant("w")])
            }
            if w == grid {
                XCTAssertLessThan(blocked, 2e-4, "\(name): blocks")
                XCTAssertLessThan(blocked * 4, perChannel, "\(name): blocks \(blocked), per channel \(perChannel)")
            } else {
                // 8 bits per block of 32 against 8 bits per row of 64: alike.
                XCTAssertLessThan(blocked, 1e-2, "\(name): blocks")
                XCTAssertLessThan(blocked, perChannel * 1.5, "\(name): blocks \(blocked), per channel \(perChannel)")
            }
        }
    }

    func testRMSNorm() throws {
        let g: [Float] = (0..<16).map { 0.5 + Float($0) / 16 }
        let e = try lowerAndCompare([("x", .f32([3, 16]))], constants: [("g", .f32([16]), g)]) { f, p in
            try f.emit(.rmsNorm, [p[0], f.constant("g")], ["eps": .float(1e-5)])
        }
        XCTAssertLessThan(e, 1e-3, "rms_norm")
    }

    func testSoftmax() throws {
        let e = try lowerAndCompare([("x", .f32([4, 8]))]) { f, p in try f.emit(.softmax, [p[0]], ["axis": .int(-1)]) }
        XCTAssertLessThan(e, 2e-3, "softmax")
    }

    func testSiLUTimesUp() throws {
        let e = try lowerAndCompare([("x", .f32([4, 8])), ("u", .f32([4, 8]))]) { f, p in
            try f.emit(.mul, [f.emit(.silu, [p[0]]), p[1]])
        }
        XCTAssertLessThan(e, 2e-3, "silu · up")
    }

    func testRopeBothModes() throws {
        var rng = SplitMix64(seed: 2)
        let c = (0..<(3 * 4)).map { _ in Float(cos(rng.normal())) }, s = (0..<(3 * 4)).map { _ in Float(sin(rng.normal())) }
        for mode in ["norm", "neox"] {
            let e = try lowerAndCompare([("x", .f32([1, 2, 3, 8]))], constants: [("c", .f32([3, 4]), c), ("s", .f32([3, 4]), s)]) { f, p in
                try f.emit(.rope, [p[0], f.constant("c"), f.constant("s")], ["mode": .string(mode)])
            }
            XCTAssertLessThan(e, 1e-3, "rope \(mode)")
        }
    }

    func testResidualAddOfDifferentScales() throws {
        let e = try lowerAndCompare([("a", .f32([2, 8])), ("b", .f32([2, 8]))]) { f, p in
            try f.emit(.add, [p[0], f.emit(.scale, [p[1]], ["factor": .float(0.01)])])
        }
        XCTAssertLessThan(e, 1e-3, "add")
    }

    func testMaskedAttentionScores() throws {
        let mask = RopeTablesForTest.causal(4)
        let e = try lowerAndCompare([("q", .f32([1, 4, 8])), ("k", .f32([1, 4, 8]))], constants: [("m", .f32([4, 4]), mask)]) { f, p in
            var s = try f.emit(.matmul, [p[0], p[1]], ["transpose_b": .bool(true)])
            s = try f.emit(.scale, [s], ["factor": .float(0.35)])
            s = try f.emit(.add, [s, f.constant("m")])
            return try f.emit(.softmax, [s], ["axis": .int(-1)])
        }
        XCTAssertLessThan(e, 2e-3, "masked softmax of scores")
    }
}

enum RopeTablesForTest {
    static func causal(_ t: Int) -> [Float] { (0..<(t * t)).map { $0 % t > $0 / t ? -.infinity : 0 } }
}
