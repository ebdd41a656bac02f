import XCTest
import ZOIR
import ZORuntime

/// Each float kernel on small graphs against a direct scalar computation.
final class InterpreterTests: XCTestCase {
    var rng = SystemRandomNumberGenerator()
    func random(_ n: Int) -> [Float] { (0..<n).map { _ in Float.random(in: -2...2, using: &rng) } }

    /// Builds a one-op function over parameters, runs it.
    func run(_ kind: OpKind, _ inputs: [(TensorType, [Float])], _ attrs: [String: Attribute] = [:]) throws -> (TensorType, [Float]) {
        let mb = ModuleBuilder(name: "t")
        let f = FunctionBuilder("f", in: mb)
        let params = inputs.enumerated().map { f.param("x\($0.offset)", $0.element.0) }
        let y = try f.emit(kind, params, attrs)
        f.output("y", y)
        f.finish()
        let out = try Interpreter(module: mb.module).run("f", Dictionary(uniqueKeysWithValues: inputs.enumerated().map { ("x\($0.offset)", TensorData.f32($0.element.1)) }))
        guard case let .f32(r)? = out["y"] else { throw RuntimeError.badRequest("no f32 output") }
        return (y.type, r)
    }

    func assertClose(_ a: [Float], _ b: [Float], tol: Float = 1e-5, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        for (x, y) in zip(a, b) where abs(x - y) > tol * max(1, abs(y)) { XCTFail("\(x) vs \(y)", file: file, line: line); return }
    }

    func testFullyConnectedWithBias() throws {
        let x = random(2 * 3 * 5), w = random(4 * 5), b = random(4)
        let (t, y) = try run(.fullyConnected, [(.f32([2, 3, 5]), x), (.f32([4, 5]), w), (.f32([4]), b)])
        XCTAssertEqual(t.shape, [2, 3, 4])
        var want = [Float]()
        for r in 0..<6 { for n in 0..<4 { want.append(b[n] + (0..<5).reduce(0) { $0 + x[r * 5 + $1] * w[n * 5 + $1] }) } }
        assertClose(y, want)
    }

    func testBatchedMatmulBothLayouts() throws {
        let a = random(2 * 3 * 4), b = random(2 * 4 * 5)
        let (_, y) = try run(.matmul, [(.f32([2, 3, 4]), a), (.f32([2, 4, 5]), b)])
        var want = [Float]()
        for bt in 0..<2 { for i in 0..<3 { for j in 0..<5 { want.append((0..<4).reduce(0) { $0 + a[bt * 12 + i * 4 + $1] * b[bt * 20 + $1 * 5 + j] }) } } }
        assertClose(y, want)
        let bt = random(2 * 5 * 4)
        let (_, y2) = try run(.matmul, [(.f32([2, 3, 4]), a), (.f32([2, 5, 4]), bt)], ["transpose_b": .bool(true)])
        var want2 = [Float]()
        for bb in 0..<2 { for i in 0..<3 { for j in 0..<5 { want2.append((0..<4).reduce(0) { $0 + a[bb * 12 + i * 4 + $1] * bt[bb * 20 + j * 4 + $1] }) } } }
        assertClose(y2, want2)
    }

    func testBroadcastingInAllThreeShapes() throws {
        let a = random(2 * 3 * 4)
        // equal shapes, trailing broadcast, and a middle-axis broadcast.
        let b1 = random(24), b2 = random(4), b3 = random(2 * 1 * 4)
        assertClose(try run(.add, [(.f32([2, 3, 4]), a), (.f32([2, 3, 4]), b1)]).1, zip(a, b1).map(+))
        assertClose(try run(.sub, [(.f32([2, 3, 4]), a), (.f32([4]), b2)]).1, a.indices.map { a[$0] - b2[$0 % 4] })
        let y3 = try run(.mul, [(.f32([2, 3, 4]), a), (.f32([2, 1, 4]), b3)]).1
        assertClose(y3, a.indices.map { i in a[i] * b3[(i / 12) * 4 + i % 4] })
        // broadcasting the first operand.
        let y4 = try run(.add, [(.f32([4]), b2), (.f32([2, 3, 4]), a)]).1
        assertClose(y4, a.indices.map { a[$0] + b2[$0 % 4] })
    }

    func testNormSoftmaxSiluScale() throws {
        let x = random(3 * 8), w = random(8)
        let n = try run(.rmsNorm, [(.f32([3, 8]), x), (.f32([8]), w)], ["eps": .float(1e-5)]).1
        for r in 0..<3 {
            let row = Array(x[(r * 8)..<(r * 8 + 8)])
            let inv = 1 / (row.reduce(0) { $0 + $1 * $1 } / 8 + 1e-5).squareRoot()
            assertClose(Array(n[(r * 8)..<(r * 8 + 8)]), (0..<8).map { row[$0] * inv * w[$0] })
        }
        let s = try run(.softmax, [(.f32([3, 8]), x)], ["axis": .int(-1)]).1
        for r in 0..<3 {
            let row = Array(x[(r * 8)..<(r * 8 + 8)]), e = row.map { exp($0) }, z = e.reduce(0, +)
            assertClose(Array(s[(r * 8)..<(r * 8 + 8)]), e.map { $0 / z })
        }
        assertClose(try run(.silu, [(.f32([24]), x)]).1, x.map { $0 / (1 + exp(-$0)) })
        assertClose(try run(.scale, [(.f32([24]), x)], ["factor": .float(0.5)]).1, x.map { $0 * 0.5 })
    }

    func testSoftmaxWithMaskedEntries() throws {
        let x: [Float] = [1, -.infinity, 2, -.infinity]
        let s = try run(.softmax, [(.f32([1, 4]), x)], ["axis": .int(-1)]).1
        assertClose(s, [1 / (1 + exp(1)), 0, exp(1) / (1 + exp(1)), 0])
    }

    func testRopeBothModes() throws {
        let x = random(1 * 2 * 3 * 4), c = random(3 * 2), s = random(3 * 2)
        let shapes: [(TensorType, [Float])] = [(.f32([1, 2, 3, 4]), x), (.f32([3, 2]), c), (.f32([3, 2]), s)]
        let norm = try run(.rope, shapes, ["mode": .string("norm")]).1
        let neox = try run(.rope, shapes, ["mode": .string("neox")]).1
        var wantNorm = x, wantNeox = x
        for h in 0..<2 { for t in 0..<3 { for i in 0..<2 {
            let base = (h * 3 + t) * 4, cs = c[t * 2 + i], sn = s[t * 2 + i]
            wantNorm[base + 2 * i] = x[base + 2 * i] * cs - x[base + 2 * i + 1] * sn
            wantNorm[base + 2 * i + 1] = x[base + 2 * i] * sn + x[base + 2 * i + 1] * cs
            wantNeox[base + i] = x[base + i] * cs - x[base + i + 2] * sn
            wantNeox[base + i + 2] = x[base + i] * sn + x[base + i + 2] * cs
        } } }
        assertClose(norm, wantNorm)
        assertClose(neox, wantNeox)
    }

    func testShapeOps() throws {
        let x = (0..<24).map(Float.init)
        let (tt, t) = try run(.transpose, [(.f32([2, 3, 4]), x)], ["perm": .ints([2, 0, 1])])
        XCTAssertEqual(tt.shape, [4, 2, 3])
        XCTAssertEqual(t, (0..<24).map { o in let k = o / 6, i = (o / 3) % 2, j = o % 3; return Float(i * 12 + j * 4 + k) })
        let sl = try run(.slice, [(.f32([2, 3, 4]), x)], ["begin": .ints([1, 1, 2]), "size": .ints([1, 2, 2])]).1
        XCTAssertEqual(sl, [18, 19, 22, 23])
        let cat = try run(.concat, [(.f32([2, 2]), [0, 1, 2, 3]), (.f32([2, 1]), [9, 8])], ["axis": .int(1)]).1
        XCTAssertEqual(cat, [0, 1, 9, 2, 3, 8])
        let r = try run(.reshape, [(.f32([2, 3, 4]), x)], ["shape": .ints([4, 6])])
        XCTAssertEqual(r.0.shape, [4, 6]); XCTAssertEqual(r.1, x)
    }

    func testBadInputsAreTypedErrors() throws {
        let mb = ModuleBuilder(name: "t")
        let f = FunctionBuilder("f", in: mb)
        let p = f.param("x", .f32([2]))
        f.output("y", try f.emit(.silu, [p]))
        f.finish()
        let interp = try Interpreter(module: mb.module)
        XCTAssertThrowsError(try interp.run("f", [:])) { XCTAssertEqual($0 as? RuntimeError, .missingInput(function: "f", name: "x")) }
        XCTAssertThrowsError(try interp.run("f", ["x": .f32([1, 2, 3])])) { e in
            guard case .inputMismatch? = e as? RuntimeError else { return XCTFail("\(e)") }
        }
        XCTAssertThrowsError(try interp.run("g", [:])) { e in XCTAssertTrue("\(e)".contains("no function @g")) }
        XCTAssertThrowsError(try interp.run("f", ["x": .f32([1, 2]), "z": .f32([1])])) { e in XCTAssertTrue("\(e)".contains("\"z\"")) }
    }

    func testBufferReuseKeepsResultsIntact() throws {
        // A chain long enough that pooled buffers are reused many times; the result must not alias them.
        let mb = ModuleBuilder(name: "t")
        let f = FunctionBuilder("f", in: mb)
        var v = f.param("x", .f32([64]))
        var side: Value?
        for i in 0..<20 {
            v = try f.emit(.scale, [v], ["factor": .float(1.5)])
            if i == 5 { side = v }
        }
        f.output("y", v)
        f.output("side", side!)
        f.finish()
        let out = try Interpreter(module: mb.module).run("f", ["x": .f32(Array(repeating: 1, count: 64))])
        guard case let .f32(y)? = out["y"], case let .f32(s)? = out["side"] else { return XCTFail() }
        XCTAssertEqual(y[0], Float(pow(1.5, 20.0)), accuracy: 1e-2)
        XCTAssertEqual(s[0], Float(pow(1.5, 6.0)), accuracy: 1e-5)
    }
}
