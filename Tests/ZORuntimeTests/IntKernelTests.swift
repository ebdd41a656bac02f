import XCTest
import Foundation
import ZOIR
import ZORuntime

/// Every integer kernel against a slow scalar oracle written from the catalog's semantics, on
/// random inputs with the saturation edges mixed in.
final class IntKernelTests: XCTestCase {
    var rng = SystemRandomNumberGenerator()

    static let edges16: [Int16] = [.min, .max, -1, 0, 1]

    /// Random values with an edge value every 13th element.
    func i16s(_ n: Int) -> [Int16] {
        var out: [Int16] = []
        for i in 0..<n { out.append(i % 13 == 0 ? Self.edges16[(i / 13) % 5] : Int16.random(in: .min ... .max, using: &rng)) }
        return out
    }
    func i8s(_ n: Int) -> [Int8] { (0..<n).map { i in i % 11 == 0 ? [Int8(-127), 127, 0][(i / 11) % 3] : Int8.random(in: -127...127, using: &rng) } }

    /// Runs a one-op function on named inputs and constants.
    func run(_ kind: OpKind, _ params: [(TensorType, TensorData)], consts: [(TensorType, TensorData)] = [], _ attrs: [String: Attribute] = [:]) throws -> TensorData {
        let mb = ModuleBuilder(name: "k")
        for (i, c) in consts.enumerated() { mb.declareConstant("c\(i)", c.0, .data(c.1)) }
        let f = FunctionBuilder("f", in: mb)
        var operands = params.enumerated().map { f.param("p\($0.offset)", $0.element.0) }
        for i in consts.indices { operands.append(try f.constant("c\(i)")) }
        f.output("y", try f.emit(kind, operands, attrs))
        f.finish()
        var inputs: [String: TensorData] = [:]
        for (i, p) in params.enumerated() { inputs["p\(i)"] = p.1 }
        return try Interpreter(module: mb.module).run("f", inputs)["y"]!
    }

    func ints(_ d: TensorData) -> [Int64] { d.int64Values }

    /// floor(v / 2^s + 1/2) by 128-bit floor division.
    func oracleRound(_ v: Int128, _ s: Int) -> Int128 {
        if s == 0 { return v }
        let d = Int128(1) << s
        let n = v + d / 2
        let q = n / d
        return (n % d != 0 && n < 0) ? q - 1 : q
    }

    func sat(_ v: Int128, _ bits: Int) -> Int64 {
        let hi = (Int128(1) << (bits - 1)) - 1, lo = -(Int128(1) << (bits - 1))
        return Int64(max(lo, min(hi, v)))
    }

    /// reduce_max and reduce_sum on the last axis (their row loops) and on another axis (the
    /// general walk), i16, i32 and i64, against the scalar definition.
    func testReductionsOnEveryAxis() throws {
        let shape = [3, 4, 37]
        let x16 = i16s(3 * 4 * 37)
        let x32 = x16.enumerated().map { Int32($0.element) * 40_000 + Int32($0.offset) }
        let x64 = x16.enumerated().map { Int64($0.element) << 40 + Int64($0.offset) }
        for (data, dtype) in [(TensorData.i16(x16), DType.i16), (.i32(x32), .i32), (.i64(x64), .i64)] {
            let v = data.int64Values
            for axis in 0..<3 {
                var out = shape
                out[axis] = 1
                var maxes = [Int64](repeating: .min, count: out.reduce(1, *)), sums = [Int64](repeating: 0, count: maxes.count)
                for i in 0..<3 { for j in 0..<4 { for k in 0..<37 {
                    var o = [i, j, k]
                    o[axis] = 0
                    let at = (o[0] * out[1] + o[1]) * out[2] + o[2], x = v[(i * 4 + j) * 37 + k]
                    maxes[at] = max(maxes[at], x)
                    sums[at] += x
                } } }
                let t = TensorType(dtype, shape)
                let gotMax = try run(.reduceMax, [(t, data)], ["axis": .int(axis)])
                XCTAssertEqual(gotMax.dtype, dtype, "reduce_max keeps the type")
                XCTAssertEqual(ints(gotMax), maxes, "reduce_max \(dtype) axis \(axis)")
                XCTAssertEqual(ints(try run(.reduceSum, [(t, data)], ["axis": .int(axis)])), sums, "reduce_sum \(dtype) axis \(axis)")
            }
        }
        // i64 sums saturate at each addition, on the last axis (row loop) as on another (general walk).
        let big: [Int64] = [.max - 1, 5, -10]
        XCTAssertEqual(ints(try run(.reduceSum, [(TensorType(.i64, [1, 3]), .i64(big))], ["axis": .int(1)])), [.max - 10])
        XCTAssertEqual(ints(try run(.reduceSum, [(TensorType(.i64, [3, 1]), .i64(big))], ["axis": .int(0)])), [.max - 10])
        // Long rows split between the cores: rows whose sum cannot overflow take the plain sum, the
        // row of huge values the saturating one.
        let long = (0..<(4 * 20_000)).map { i -> Int64 in i / 20_000 == 1 ? (i % 3 == 0 ? .max - 7 : -(1 << 61)) : Int64.random(in: -(1 << 40)...(1 << 40), using: &rng) }
        let want = (0..<4).map { r in
            long[(r * 20_000)..<((r + 1) * 20_000)].reduce(Int64(0)) { acc, v in
                let (t, over) = acc.addingReportingOverflow(v)
                return over ? (v > 0 ? .max : .min) : t
            }
        }
        XCTAssertEqual(ints(try run(.reduceSum, [(TensorType(.i64, [4, 20_000]), .i64(long))], ["axis": .int(1)])), want)
        let maxes = (0..<4).map { r in long[(r * 20_000)..<((r + 1) * 20_000)].max()! }
        XCTAssertEqual(ints(try run(.reduceMax, [(TensorType(.i64, [4, 20_000]), .i64(long))], ["axis": .int(1)])), maxes)
        let long32 = long.map { Int32(truncatingIfNeeded: $0) }
        XCTAssertEqual(ints(try run(.reduceMax, [(TensorType(.i32, [4, 20_000]), .i32(long32))], ["axis": .int(-1)])),
                       (0..<4).map { r in Int64(long32[(r * 20_000)..<((r + 1) * 20_000)].max()!) })
    }

    func testFullyConnectedIsExact() throws {
        // Shapes that reach every path of the kernel: 4-row and single-row blocks, odd output
        // counts, inputs that are not a multiple of 16, more than one 2048-input block, and
        // (for the largest) the split of outputs between threads.
        for (rows, k, n) in [(3, 700, 5), (9, 4100, 7), (5, 33, 130), (6, 576, 1024)] {
            var x = i16s(rows * k), w = i8s(n * k)
            x[0] = .min; w[0] = .min  // the extreme operands the int32 lanes must hold
            let y = ints(try run(.fullyConnected, [(TensorType(.i16, [rows, k]), .i16(x))], consts: [(TensorType(.i8, [n, k]), .i8(w))]))
            for r in 0..<rows { for j in 0..<n {
                var acc: Int64 = 0
                for c in 0..<k { acc += Int64(x[r * k + c]) * Int64(w[j * k + c]) }
                XCTAssertEqual(y[r * n + j], acc, "rows \(rows) k \(k) n \(n) at [\(r), \(j)]")
            } }
        }
        // Every product at its extreme, −32768 · −128, over 2048 inputs (the one-block loop at its
        // longest) and 4096 (two blocks), 4 rows: the vector path.
        for k in [2048, 4096] {
            let ext = ints(try run(.fullyConnected, [(TensorType(.i16, [4, k]), .i16(Array(repeating: .min, count: 4 * k)))],
                                   consts: [(TensorType(.i8, [2, k]), .i8(Array(repeating: .min, count: 2 * k)))]))
            XCTAssertEqual(ext, Array(repeating: Int64(32768 * 128 * k), count: 8), "k \(k)")
        }
        // The extreme: every product −32768 · −127 over 1536 terms needs more than 32 bits.
        let big = ints(try run(.fullyConnected, [(TensorType(.i16, [1, 1536]), .i16(Array(repeating: .min, count: 1536)))],
                               consts: [(TensorType(.i8, [1, 1536]), .i8(Array(repeating: -127, count: 1536)))]))
        XCTAssertEqual(big, [Int64(32768 * 127 * 1536)])
    }

    /// The oracle of block_fully_connected at [r, j]: Σ_b scale·Σ x·w + offset·Σ x, in Int128
    /// (bits 4: w holds two levels per byte, input 2i in the low nibble).
    func blockOracle(_ x: [Int16], _ w: [Int8], _ sc: [Int16], _ of: [Int16], r: Int, j: Int, k: Int, block: Int, bits: Int = 8) -> Int128 {
        func weight(_ c: Int) -> Int128 {
            if bits == 8 { return Int128(w[j * k + c]) }
            let byte = UInt8(bitPattern: w[j * k / 2 + c / 2])
            return Int128(c % 2 == 0 ? byte & 15 : byte >> 4)
        }
        var total = Int128(0)
        for b in 0..<(k / block) {
            var dot = Int128(0), sum = Int128(0)
            for c in b * block..<(b + 1) * block { dot += Int128(x[r * k + c]) * weight(c); sum += Int128(x[r * k + c]) }
            total += Int128(sc[j * (k / block) + b]) * dot + Int128(of[j * (k / block) + b]) * sum
        }
        return total
    }

    func testBlockFullyConnectedIsExact() throws {
        // 4-row groups and leftover rows (a decode step's single row: 4 outputs at a time and a tail), odd output counts, the portable path (block 8: not a
        // multiple of 16), blocks of 32 and 512, and the split of outputs between threads; the packed path (4+ rows, 16+
        // outputs) with outputs past a multiple of 16 and a short last row group, its tiles packed 32 inputs at a
        // time (K a multiple of 32) or one by one (K = 48).
        // Both weight widths: int8, and 4-bit levels two per byte (random bytes: every nibble).
        // Both multiply-add paths where the CPU has AVX-512 VNNI (vpdpwssd, and vpmaddwd + vpaddd), the
        // VNNI path's 32-output kernel next to its 16-output one (n = 48), and the kernels for offsets all 0.
        try eachVectorPath {
            for bits in [8, 4] { for zeroOffsets in [false, true] {
                for (rows, k, n, block) in [(5, 64, 3, 32), (9, 96, 7, 8), (4, 1024, 5, 512), (6, 576, 1024, 32), (1, 576, 11, 32), (1, 1536, 64, 32), (7, 1024, 40, 512), (4, 64, 19, 16), (13, 96, 1000, 2), (5, 48, 20, 16), (8, 64, 48, 32)] {
                    let kb = k / block
                    let x = i16s(rows * k), w = bits == 8 ? i8s(n * k) : (0..<(n * k / 2)).map { _ in Int8.random(in: .min ... .max, using: &rng) }
                    let sc = i16s(n * kb), of = zeroOffsets ? [Int16](repeating: 0, count: n * kb) : i16s(n * kb)
                    let y = ints(try run(.blockFullyConnected, [(TensorType(.i16, [rows, k]), .i16(x))],
                                         consts: [(TensorType(.i8, [n, k * bits / 8]), .i8(w)), (TensorType(.i16, [n, kb]), .i16(sc)), (TensorType(.i16, [n, kb]), .i16(of))],
                                         bits == 8 ? ["block": .int(block)] : ["block": .int(block), "bits": .int(4)]))
                    for r in 0..<rows { for j in 0..<n {
                        XCTAssertEqual(Int128(y[r * n + j]), blockOracle(x, w, sc, of, r: r, j: j, k: k, block: block, bits: bits),
                                       "bits \(bits) rows \(rows) k \(k) n \(n) block \(block) zero offsets \(zeroOffsets) at [\(r), \(j)]")
                    } }
                }
            } }
            // Every operand at its extreme: each block's Σ x·w is 512 · 2^15 · 127 (near 2^31), times
            // −32768, and the offsets' Σ x; over 4 blocks the total needs 50 bits.
            let k = 2048, block = 512
            // 2 outputs take the row-major kernel, 16 and 48 the packed ones; offsets at their extreme and all 0.
            for n in [2, 16, 48] { for offset in [Int16.max, 0] {
                let y = ints(try run(.blockFullyConnected, [(TensorType(.i16, [4, k]), .i16(Array(repeating: .min, count: 4 * k)))],
                                     consts: [(TensorType(.i8, [n, k]), .i8(Array(repeating: -127, count: n * k))),
                                              (TensorType(.i16, [n, 4]), .i16(Array(repeating: .min, count: 4 * n))),
                                              (TensorType(.i16, [n, 4]), .i16(Array(repeating: offset, count: 4 * n)))], ["block": .int(block)]))
                let one = Int64(-32768) * (Int64(512) * 32768 * 127) + Int64(offset) * (Int64(512) * -32768)
                XCTAssertEqual(y, Array(repeating: 4 * one, count: 4 * n), "n \(n), offsets \(offset)")
            } }
        }
    }

    func testThreadPoolRunsEveryPartOnceAndNestedCallsInTheirOwnThread() {
        for parts in [2, 3, 7, 64, 1000] {
            for round in 0..<40 {
                let hits = UnsafeMutableBufferPointer<Int>.allocate(capacity: parts)
                hits.initialize(repeating: 0)
                defer { hits.deallocate() }
                Threads.run(parts) { p in
                    hits[p] += 1
                    var inner = [0, 0, 0]
                    inner.withUnsafeMutableBufferPointer { b in Threads.run(3) { b[$0] += 1 } }
                    if inner != [1, 1, 1] { hits[p] += 100 }
                }
                XCTAssertEqual(Array(hits), Array(repeating: 1, count: parts), "\(parts) parts, round \(round)")
                // Now and then past the workers' spin, so they are woken from sleep.
                if round % 10 == 9 { usleep(5000) }
            }
        }
    }

    func testBlockFullyConnectedRefusesABlockThatDoesNotDivideK() {
        XCTAssertThrowsError(try run(.blockFullyConnected, [(TensorType(.i16, [1, 64]), .i16(i16s(64)))],
                                     consts: [(TensorType(.i8, [2, 64]), .i8(i8s(128))), (TensorType(.i16, [2, 2]), .i16([1, 1, 1, 1])), (TensorType(.i16, [2, 2]), .i16([0, 0, 0, 0]))],
                                     ["block": .int(32), "bits": .int(4)])) { e in
            XCTAssertTrue("\(e)".contains("K/2"), "\(e)")
        }
        XCTAssertThrowsError(try run(.blockFullyConnected, [(TensorType(.i16, [1, 48]), .i16(i16s(48)))],
                                     consts: [(TensorType(.i8, [2, 48]), .i8(i8s(96))), (TensorType(.i16, [2, 1]), .i16([1, 1])), (TensorType(.i16, [2, 1]), .i16([0, 0]))],
                                     ["block": .int(32)])) { e in
            XCTAssertTrue("\(e)".contains("block 32"), "\(e)")
        }
    }

    func testMatmulIsExactInBothLayouts() throws {
        // Small shapes; attention's (k = 64 head dims, k = 13 keys, n not a multiple of 4); k past the
        // 240 inputs the int32 lanes take before they are widened (608; 600, not whole chunks of 16,
        // takes the plain loop); every value −32768 (a pair of those overflows vpmaddwd's int32, which
        // the byte split avoids).
        for (batches, m, k, n, extreme) in [(2, 3, 9, 4, false), (3, 21, 64, 13, false), (3, 21, 13, 64, false), (2, 5, 608, 7, false), (2, 4, 608, 6, true), (2, 4, 600, 5, true)] {
            let a = extreme ? Array(repeating: Int16.min, count: batches * m * k) : i16s(batches * m * k)
            let b = extreme ? Array(repeating: Int16.min, count: batches * k * n) : i16s(batches * k * n)
            for tb in [false, true] {
                let bt = TensorType(.i16, tb ? [batches, n, k] : [batches, k, n])
                let y = ints(try run(.matmul, [(TensorType(.i16, [batches, m, k]), .i16(a)), (bt, .i16(b))], ["transpose_b": .bool(tb)]))
                for bb in 0..<batches { for i in 0..<m { for j in 0..<n {
                    var acc: Int64 = 0
                    for l in 0..<k { acc += Int64(a[(bb * m + i) * k + l]) * Int64(tb ? b[(bb * n + j) * k + l] : b[(bb * k + l) * n + j]) }
                    XCTAssertEqual(y[(bb * m + i) * n + j], acc, "\(batches)×\(m)×\(k)×\(n) transpose_b \(tb) at [\(bb), \(i), \(j)]")
                } } }
            }
        }
    }

    /// `body` on the AVX-512 paths (VNNI multiply-adds, AVX-512VL rescales) where the CPU has
    /// them, and on the AVX2 paths.
    func eachVectorPath(_ body: () throws -> Void) throws {
        let vnni = MultiplyAdd.usesVNNI
        defer { MultiplyAdd.usesVNNI = vnni }
        for useVNNI in vnni ? [true, false] : [false] {
            MultiplyAdd.usesVNNI = useVNNI
            try body()
        }
    }

    func testRescaleRoundingAndSaturation() throws { try eachVectorPath(rescaleRoundingAndSaturation) }

    func rescaleRoundingAndSaturation() throws {
        let x = (0..<400).map { i -> Int64 in
            [Int64.min / 2, Int64.max / 2, -1, 0, 1, -(1 << 40), (1 << 40) + 1][i % 7] &+ Int64.random(in: -1000...1000, using: &rng) * Int64(i % 3)
        }
        for _ in 0..<30 {
            let m = Int.random(in: -(1 << 31) + 1 ... (1 << 31) - 1, using: &rng), s = Int.random(in: 0...62, using: &rng)
            for (out, bits) in [(DType.i8, 8), (.i16, 16), (.i32, 32), (.i64, 64)] {
                let y = ints(try run(.rescale, [(TensorType(.i64, [400]), .i64(x))], ["multiplier": .int(m), "shift": .int(s), "out": .string(out.rawValue)]))
                for (xi, yi) in zip(x, y) { XCTAssertEqual(yi, sat(oracleRound(Int128(xi) * Int128(m), s), bits), "x \(xi) m \(m) s \(s) \(out)") }
            }
        }
        // Inputs below 2^31 take the unchecked per-tensor loop (and, this large, both threads):
        // every input width against the oracle.
        let n = 70_000
        let small = (0..<n).map { i -> Int64 in [Int64(Int32.min), Int64(Int32.max), -1, 0, 1, -3, 3][i % 7] &+ Int64.random(in: -40000...40000, using: &rng) * Int64(i % 2) }
        for (dt, data) in [(DType.i32, TensorData.i32(small.map { Int32(clamping: $0) })), (.i16, .i16(small.map { Int16(clamping: $0) })),
                           (.i8, .i8(small.map { Int8(clamping: $0) }))] {
            let xs = data.int64Values
            for _ in 0..<4 {
                let m = Int.random(in: -(1 << 31) + 1 ... (1 << 31) - 1, using: &rng), s = Int.random(in: 0...62, using: &rng)
                let y = ints(try run(.rescale, [(TensorType(dt, [n]), data)], ["multiplier": .int(m), "shift": .int(s), "out": .string("i16")]))
                for (xi, yi) in zip(xs, y) where yi != sat(oracleRound(Int128(xi) * Int128(m), s), 16) {
                    return XCTFail("\(dt) x \(xi) m \(m) s \(s): got \(yi)")
                }
            }
        }
        // i64 inputs beyond 2^31 (below 2^62) with shifts ≥ 31 take the split-product vector path:
        // per tensor and per channel, channel counts that are and are not multiples of 4.
        for width in [1, 4, 7, 13] {
            let rows = 37
            let wide = (0..<(rows * width)).map { i -> Int64 in
                [-(Int64(1) << 61), (Int64(1) << 61), -1, 0, 1 << 40, -(1 << 33) - 1][i % 6] &+ Int64.random(in: -(1 << 45)...(1 << 45), using: &rng) * Int64(i % 2)
            }
            let m = (0..<width).map { _ in Int32.random(in: (Int32.min + 1)...Int32.max, using: &rng) }
            let sh = (0..<width).map { _ in Int32.random(in: 31...62, using: &rng) }
            let attrs: [String: Attribute] = ["out": .string("i32")]
            let y = width == 1
                ? ints(try run(.rescale, [(TensorType(.i64, [rows, width]), .i64(wide))], ["multiplier": .int(Int(m[0])), "shift": .int(Int(sh[0])), "out": .string("i32")]))
                : ints(try run(.rescale, [(TensorType(.i64, [rows, width]), .i64(wide))],
                               consts: [(TensorType(.i32, [width]), .i32(m)), (TensorType(.i32, [width]), .i32(sh))], attrs))
            for (i, (xi, yi)) in zip(wide, y).enumerated() where yi != sat(oracleRound(Int128(xi) * Int128(m[i % width]), Int(sh[i % width])), 32) {
                return XCTFail("width \(width) x \(xi) m \(m[i % width]) s \(sh[i % width]): got \(yi)")
            }
        }
        // Ties round toward +∞: 3/2 → 2, −3/2 → −1.
        let t = ints(try run(.rescale, [(TensorType(.i32, [2]), .i32([3, -3]))], ["multiplier": .int(1), "shift": .int(1), "out": .string("i32")]))
        XCTAssertEqual(t, [2, -1])
    }

    func testPerChannelRescale() throws { try eachVectorPath(perChannelRescale) }

    func perChannelRescale() throws {
        let x = (0..<12).map { Int32($0 * 1000 - 6000) }
        let m: [Int32] = [3, -7, 1 << 30], s: [Int32] = [0, 4, 31]
        let y = ints(try run(.rescale, [(TensorType(.i32, [4, 3]), .i32(x))],
                             consts: [(TensorType(.i32, [3]), .i32(m)), (TensorType(.i32, [3]), .i32(s))], ["out": .string("i16")]))
        for i in 0..<12 { XCTAssertEqual(y[i], sat(oracleRound(Int128(x[i]) * Int128(m[i % 3]), Int(s[i % 3])), 16)) }
        // Widths divisible by 4 take the vectorized loop when inputs and multipliers are below
        // 2^31 (the first input set), the checked one otherwise (the second): both against the oracle.
        let w = 8, rows = 300
        let mw = (0..<w).map { _ in Int32.random(in: -Int32.max...Int32.max, using: &rng) }
        let sw = (0..<w).map { c in Int32(c == 3 ? 0 : Int.random(in: 1...62, using: &rng)) }
        let narrow = (0..<(w * rows)).map { i in [Int64(Int32.max), -Int64(Int32.max), -1, 0, 1][i % 5] &+ Int64.random(in: -90000...90000, using: &rng) * Int64(i % 2) }
        for xs in [narrow.map { max(-Int64(Int32.max), min(Int64(Int32.max), $0)) }, narrow.map { $0 &* 40 }] {
            for out in ["i16", "i32"] {
                let y = ints(try run(.rescale, [(TensorType(.i64, [rows, w]), .i64(xs))],
                                     consts: [(TensorType(.i32, [w]), .i32(mw)), (TensorType(.i32, [w]), .i32(sw))], ["out": .string(out)]))
                for i in 0..<xs.count where y[i] != sat(oracleRound(Int128(xs[i]) * Int128(mw[i % w]), Int(sw[i % w])), out == "i16" ? 16 : 32) {
                    return XCTFail("x \(xs[i]) m \(mw[i % w]) s \(sw[i % w]) \(out): got \(y[i])")
                }
            }
        }
    }

    /// A fully_connected whose only use is a rescale runs as one kernel (row blocks through an i64
    /// scratch, both cores): the same integers as the two ops apart (an observed run keeps them
    /// apart), per channel and per tensor, on sizes that leave partial blocks and vector tails.
    func testFullyConnectedFusedWithItsRescaleMatchesTheTwoOps() throws {
        for (rows, k, n, perChannel, out) in [(37, 300, 203, true, DType.i16), (9, 64, 8, false, .i32), (130, 576, 64, true, .i32)] {
            let x = i16s(rows * k), w = i8s(n * k)
            let m = (0..<(perChannel ? n : 1)).map { _ in Int32.random(in: 1...(1 << 30), using: &rng) }
            let sh = (0..<(perChannel ? n : 1)).map { _ in Int32.random(in: 20...40, using: &rng) }
            let mb = ModuleBuilder(name: "k")
            mb.declareConstant("w", TensorType(.i8, [n, k]), .data(.i8(w)))
            mb.declareConstant("m", TensorType(.i32, [m.count]), .data(.i32(m)))
            mb.declareConstant("s", TensorType(.i32, [sh.count]), .data(.i32(sh)))
            let f = FunctionBuilder("f", in: mb)
            let acc = try f.emit(.fullyConnected, [f.param("x", TensorType(.i16, [rows, k])), try f.constant("w")])
            let y = perChannel ? try f.emit(.rescale, [acc, try f.constant("m"), try f.constant("s")], ["out": .string(out.rawValue)])
                               : try f.emit(.rescale, [acc], ["multiplier": .int(Int(m[0])), "shift": .int(Int(sh[0])), "out": .string(out.rawValue)])
            f.output("y", y)
            f.finish()
            let interp = try Interpreter(module: mb.module)
            let fused = try interp.run("f", ["x": .i16(x)])["y"]!
            let apart = try interp.run("f", ["x": .i16(x)], observe: { _, _ in })["y"]!
            XCTAssertEqual(fused.dtype, out)
            XCTAssertTrue(fused == apart, "rows \(rows) k \(k) n \(n): the fused kernel differs from fully_connected + rescale")
            // And the two ops against the oracle, at a few outputs.
            for (r, j) in [(0, 0), (rows - 1, n - 1), (rows / 2, n / 3)] {
                var dot = Int128(0)
                for i in 0..<k { dot += Int128(x[r * k + i]) * Int128(w[j * k + i]) }
                let c = perChannel ? j : 0
                XCTAssertEqual(ints(apart)[r * n + j], sat(oracleRound(dot * Int128(m[c]), Int(sh[c])), out == .i16 ? 16 : 32))
            }
        }
    }

    /// An i64 add/sub/mul whose only use is a rescale runs as one kernel (no i64 tensor): the same
    /// integers as the two ops, per tensor and per channel, broadcast, and split between the cores
    /// at a point inside the last axis (shapes that merge into one run of 90,003 elements).
    /// Per-channel and per-tensor rescales, broadcast and contiguous operands (contiguous 16/32-bit
    /// products with one multiplier take their own loop), on each vector path.
    func testBinaryFusedWithItsRescaleMatchesTheTwoOps() throws { try eachVectorPath(binaryFusedWithItsRescale) }

    func binaryFusedWithItsRescale() throws {
        func i32s(_ n: Int) -> [Int32] { (0..<n).map { i in i % 17 == 0 ? [Int32.min, .max, 0][(i / 17) % 3] : Int32.random(in: -(1 << 24)...(1 << 24), using: &rng) } }
        func i64s(_ n: Int) -> [Int64] { (0..<n).map { i in i % 19 == 0 ? [Int64.min, .max][(i / 19) % 2] : Int64.random(in: -(1 << 50)...(1 << 50), using: &rng) } }
        let cases: [(OpKind, TensorType, TensorData, TensorType, TensorData, Bool, DType)] = [
            (.mul, TensorType(.i32, [6, 70, 37]), .i32(i32s(6 * 70 * 37)), TensorType(.i16, [6, 70, 37]), .i16(i16s(6 * 70 * 37)), true, .i16),
            (.mul, TensorType(.i32, [200, 5, 37]), .i32(i32s(200 * 5 * 37)), TensorType(.i16, [37]), .i16(i16s(37)), false, .i32),
            (.mul, TensorType(.i32, [3, 30001]), .i32(i32s(90003)), TensorType(.i32, [3, 30001]), .i32(i32s(90003)), true, .i32),
            (.mul, TensorType(.i32, [6, 70, 37]), .i32(i32s(6 * 70 * 37)), TensorType(.i16, [6, 70, 37]), .i16(i16s(6 * 70 * 37)), false, .i16),
            (.mul, TensorType(.i16, [3, 30001]), .i16(i16s(90003)), TensorType(.i32, [3, 30001]), .i32(i32s(90003)), false, .i32),
            (.mul, TensorType(.i32, [1003]), .i32(i32s(1003)), TensorType(.i32, [1003]), .i32(i32s(1003)), false, .i16),
            (.mul, TensorType(.i32, [7, 1, 13]), .i32(Array(repeating: .min, count: 91)), TensorType(.i32, [7, 1, 13]), .i32((0..<91).map { $0 % 3 == 0 ? .min : .max }), false, .i16),
            (.add, TensorType(.i64, [3, 30001]), .i64(i64s(90003)), TensorType(.i32, [30001]), .i32(i32s(30001)), true, .i16),
            (.sub, TensorType(.i64, [40, 9, 64]), .i64(i64s(40 * 9 * 64)), TensorType(.i64, [40, 1, 64]), .i64(i64s(40 * 64)), false, .i32),
        ]
        for (kind, ta, a, tb, b, perChannel, out) in cases {
            let last = ta.shape.last!
            let m = (0..<(perChannel ? last : 1)).map { _ in Int32.random(in: 1...(1 << 30), using: &rng) }
            let sh = (0..<(perChannel ? last : 1)).map { _ in Int32.random(in: 31...62, using: &rng) }
            let mb = ModuleBuilder(name: "k")
            mb.declareConstant("m", TensorType(.i32, [m.count]), .data(.i32(m)))
            mb.declareConstant("s", TensorType(.i32, [sh.count]), .data(.i32(sh)))
            let f = FunctionBuilder("f", in: mb)
            let v = try f.emit(kind, [f.param("a", ta), f.param("b", tb)])
            XCTAssertEqual(v.type.dtype, .i64)
            let y = perChannel ? try f.emit(.rescale, [v, try f.constant("m"), try f.constant("s")], ["out": .string(out.rawValue)])
                               : try f.emit(.rescale, [v], ["multiplier": .int(Int(m[0])), "shift": .int(Int(sh[0])), "out": .string(out.rawValue)])
            f.output("y", y)
            f.finish()
            let interp = try Interpreter(module: mb.module)
            let fused = try interp.run("f", ["a": a, "b": b])["y"]!
            let apart = try interp.run("f", ["a": a, "b": b], observe: { _, _ in })["y"]!
            XCTAssertEqual(fused.dtype, out)
            XCTAssertTrue(fused == apart, "\(kind.rawValue) \(ta) \(tb): the fused kernel differs from the op + rescale")
        }
    }

    /// An i64 add/sub/mul whose only use is a last-axis reduce_sum is summed a row at a time: the
    /// same sums as the two ops (rows split between the cores; one row saturates on the way).
    func testBinaryFusedWithItsRowSumMatchesTheTwoOps() throws {
        let rows = 6, n = 20_000
        // Row 2 saturates; row 3 saturates at +max over its first half, then falls to -max over
        // its second (pieces of 1,024 in the fused sums carry the saturated partial sum on).
        let a = (0..<(rows * n)).map { i -> Int64 in
            i / n == 2 ? .max / 3 : i / n == 3 ? (i % n < n / 2 ? .max / 3 : -(.max / 3)) : Int64.random(in: -(1 << 40)...(1 << 40), using: &rng)
        }
        let b = (0..<(rows * n)).map { i -> Int32 in i / n == 2 || i / n == 3 ? 2 : Int32.random(in: -(1 << 20)...(1 << 20), using: &rng) }
        for kind in [OpKind.mul, .add, .sub] {
            let mb = ModuleBuilder(name: "k")
            let f = FunctionBuilder("f", in: mb)
            let t = TensorType(.i64, [1, rows, n])
            let v = try f.emit(kind, [f.param("a", t), f.param("b", TensorType(.i32, [1, rows, n]))])
            f.output("y", try f.emit(.reduceSum, [v], ["axis": .int(2)]))
            f.finish()
            let interp = try Interpreter(module: mb.module)
            let fused = try interp.run("f", ["a": .i64(a), "b": .i32(b)])["y"]!
            let apart = try interp.run("f", ["a": .i64(a), "b": .i32(b)], observe: { _, _ in })["y"]!
            XCTAssertTrue(fused == apart, "\(kind.rawValue) then reduce_sum: the fused rows differ")
            if kind == .mul {
                XCTAssertEqual(ints(apart)[2], .max, "the row of huge products saturates")
                XCTAssertEqual(ints(apart)[3], .min, "the row that saturates up, then down")
            }
        }
    }

    /// An integer function runs in one arena laid out by memory-plan's ArenaPlan: every op's kernel
    /// writes its result there (none outside it, the fused pairs included), the results are the
    /// integers of the unfused, array-per-op run (`observe`), and they are copies: the next run,
    /// which reuses the arena, leaves them intact.
    func testAnIntegerFunctionRunsInItsArena() throws {
        let rows = 24, k = 96, n = 40
        let w = i8s(n * k), tbl = (0...512).map { Int16(($0 * 61) % 30001 - 15000) }
        let mb = ModuleBuilder(name: "k")
        mb.declareConstant("w", TensorType(.i8, [n, k]), .data(.i8(w)))
        mb.declareConstant("t", TensorType(.i16, [513]), .data(.i16(tbl)))
        mb.declareConstant("m", TensorType(.i32, [n]), .data(.i32((0..<n).map { Int32(1 << 20) + Int32($0) * 977 })))
        mb.declareConstant("s", TensorType(.i32, [n]), .data(.i32((0..<n).map { 30 + Int32($0 % 5) })))
        let f = FunctionBuilder("f", in: mb)
        let x = f.param("x", TensorType(.i16, [2, rows / 2, k]))
        let acc = try f.emit(.fullyConnected, [x, try f.constant("w")])                                // fused with its rescale
        let h = try f.emit(.rescale, [acc, try f.constant("m"), try f.constant("s")], ["out": .string("i16")])
        let ht = try f.emit(.transpose, [h], ["perm": .ints([0, 2, 1])])
        let scores = try f.emit(.matmul, [h, ht])                                                     // [2, 12, 12] i64
        let s16 = try f.emit(.rescale, [scores], ["multiplier": .int(1), "shift": .int(12), "out": .string("i16")])
        let e = try f.emit(.table, [s16, try f.constant("t")])                                       // i32
        let sq = try f.emit(.mul, [e, e])                                                           // i64
        let sums = try f.emit(.reduceSum, [sq], ["axis": .int(2)])                                    // fused row sums
        let inv = try f.emit(.normTable, [sums, try f.constant("t")], ["power": .int(1), "shift": .int(20)])
        let top = try f.emit(.reduceMax, [e], ["axis": .int(1)])
        let cols = try f.emit(.reduceSum, [e], ["axis": .int(1)])
        let part = try f.emit(.slice, [h], ["begin": .ints([0, 2, 0]), "size": .ints([2, 5, n])])
        let both = try f.emit(.concat, [part, part], ["axis": .int(1)])
        let flat = try f.emit(.reshape, [both], ["shape": .ints([2 * 10 * n])])
        f.output("inv", inv); f.output("top", top); f.output("cols", cols); f.output("flat", flat); f.output("h", h)
        f.finish()
        // A smaller function: running it between two runs of f gives f's pages past its end back.
        let g = FunctionBuilder("g", in: mb)
        let (ga, gb) = (g.param("a", TensorType(.i16, [4])), g.param("b", TensorType(.i16, [4])))
        g.output("y", try g.emit(.mul, [ga, gb]))
        g.finish()
        let interp = try Interpreter(module: mb.module)
        let x1 = i16s(rows * k), x2 = i16s(rows * k)
        let first = try interp.run("f", ["x": .i16(x1)])
        XCTAssertEqual(interp.resultsOutsideArena, 0, "an op of an integer function wrote outside the arena")
        let apart = try interp.run("f", ["x": .i16(x1)], observe: { _, _ in })
        XCTAssertNil(interp.resultsOutsideArena, "an observed run used the arena")
        let kept = first
        let second = try interp.run("f", ["x": .i16(x2)])
        for name in ["inv", "top", "cols", "flat", "h"] {
            XCTAssertTrue(first[name]! == apart[name]!, "\(name): the arena run differs from the run in arrays")
            XCTAssertTrue(kept[name]! == first[name]!, "\(name): the next run overwrote a result")
            if case .i16View = first[name]! { XCTFail("\(name) is returned as a view into the arena") }
        }
        XCTAssertFalse(second["h"]! == first["h"]!, "other inputs gave the same h")
        XCTAssertEqual(ints(try interp.run("g", ["a": .i16([1, -2, 3, 4]), "b": .i16([5, 6, -7, 8])])["y"]!), [5, -12, -21, 32])
        let again = try interp.run("f", ["x": .i16(x1)])
        for name in ["inv", "top", "cols", "flat", "h"] { XCTAssertTrue(again[name]! == first[name]!, "\(name) differs after a smaller function ran") }
        XCTAssertTrue(ints(first["inv"]!).contains { $0 != 0 } && ints(first["cols"]!).contains { $0 != 0 }, "trivial data")
    }

    /// The same for block_fully_connected and its rescale.
    func testBlockFullyConnectedFusedWithItsRescaleMatchesTheTwoOps() throws { try eachVectorPath(blockFullyConnectedFusedWithItsRescale) }

    func blockFullyConnectedFusedWithItsRescale() throws {
        for (rows, k, n, out, bits) in [(37, 320, 203, DType.i16, 8), (130, 576, 64, .i32, 8), (21, 576, 67, .i32, 4)] {
            let kb = k / 32
            let x = i16s(rows * k), sc = i16s(n * kb), of = i16s(n * kb)
            let w = bits == 8 ? i8s(n * k) : (0..<(n * k / 2)).map { _ in Int8.random(in: .min ... .max, using: &rng) }
            let m = (0..<n).map { _ in Int32.random(in: 1...(1 << 30), using: &rng) }
            let sh = (0..<n).map { _ in Int32.random(in: 30...50, using: &rng) }
            let mb = ModuleBuilder(name: "k")
            mb.declareConstant("w", TensorType(.i8, [n, k * bits / 8]), .data(.i8(w)))
            mb.declareConstant("sc", TensorType(.i16, [n, kb]), .data(.i16(sc)))
            mb.declareConstant("of", TensorType(.i16, [n, kb]), .data(.i16(of)))
            mb.declareConstant("m", TensorType(.i32, [n]), .data(.i32(m)))
            mb.declareConstant("s", TensorType(.i32, [n]), .data(.i32(sh)))
            let f = FunctionBuilder("f", in: mb)
            let acc = try f.emit(.blockFullyConnected, [f.param("x", TensorType(.i16, [rows, k])), try f.constant("w"), try f.constant("sc"), try f.constant("of")],
                                 bits == 8 ? ["block": .int(32)] : ["block": .int(32), "bits": .int(4)])
            f.output("y", try f.emit(.rescale, [acc, try f.constant("m"), try f.constant("s")], ["out": .string(out.rawValue)]))
            f.finish()
            let interp = try Interpreter(module: mb.module)
            let fused = try interp.run("f", ["x": .i16(x)])["y"]!
            let apart = try interp.run("f", ["x": .i16(x)], observe: { _, _ in })["y"]!
            XCTAssertEqual(fused.dtype, out)
            XCTAssertTrue(fused == apart, "rows \(rows) k \(k) n \(n): the fused kernel differs from block_fully_connected + rescale")
            for (r, j) in [(0, 0), (rows - 1, n - 1), (rows / 2, n / 3)] {
                let dot = blockOracle(x, w, sc, of, r: r, j: j, k: k, block: 32, bits: bits)
                XCTAssertEqual(ints(apart)[r * n + j], sat(oracleRound(dot * Int128(m[j]), Int(sh[j])), out == .i16 ? 16 : 32))
            }
        }
    }

    /// Every input, and 7 more (a tail past the vector loops' 16 and 8 lanes), on each vector path.
    func testTableOnEveryInput() throws { try eachVectorPath(tableOnEveryInput) }

    func tableOnEveryInput() throws {
        let tbl = (0..<513).map { _ in Int16.random(in: .min ... .max, using: &rng) }
        let x = (0..<65536).map { Int16(truncatingIfNeeded: $0 - 32768) } + [.max, .min, 0, -1, 1, .max, 12345]
        let y = ints(try run(.table, [(TensorType(.i16, [x.count]), .i16(x))], consts: [(TensorType(.i16, [513]), .i16(tbl))]))
        XCTAssertEqual(y.count, x.count)
        for (v, r) in zip(x, y) {
            let u = Int(v) + 32768, base = Int64(tbl[u / 128]), next = Int64(tbl[u / 128 + 1])
            XCTAssertEqual(r, base * 128 + (next - base) * Int64(u % 128))
        }
    }

    func testNormTableNormalizesEveryMagnitude() throws {
        // With the table holding g(m) = m^(−p/2) exactly, the result is x^(−p/2) · 2^shift · 32767 · 128.
        for p in [1, 2] {
            let tbl = (0...512).map { i -> Int16 in i < 128 ? 32767 : Int16((32767 * pow(Double(i) / 128, -Double(p) / 2)).rounded()) }
            var x: [Int64] = [0, -5, 1, 2, 3, 4, 5, 1 << 20, (1 << 31) - 1, 1 << 40, Int64.max, Int64.max / 3]
            for _ in 0..<200 { x.append(Int64.random(in: 1...(Int64(1) << Int.random(in: 1...62, using: &rng)), using: &rng)) }
            let shift = 40
            let y = ints(try run(.normTable, [(TensorType(.i64, [x.count]), .i64(x))], consts: [(TensorType(.i16, [513]), .i16(tbl))],
                                 ["power": .int(p), "shift": .int(shift)]))
            for (v, r) in zip(x, y) {
                // Where the output keeps at least 20 bits (tiny outputs are as precise as their integer allows).
                let want = 32767.0 * 128 * pow(2, Double(shift)) * pow(Double(max(v, 1)), -Double(p) / 2)
                if want >= Double(1 << 20) && want < 9e18 { XCTAssertEqual(Double(r) / want, 1, accuracy: 2e-4, "x = \(v), power \(p)") }
            }
            // And bit-exactly against the written rule.
            for (v, r) in zip(x, y) {
                let u = UInt64(max(v, 1)), top = 63 - u.leadingZeroBitCount, k = top / 2, s = 61 - 2 * k
                let vn = s >= 0 ? u << UInt64(s) : u >> 1
                let t = Int(vn >> 47), i = t / 128, f = Int64(t % 128)
                let rr = Int64(tbl[i]) * 128 + (Int64(tbl[i + 1]) - Int64(tbl[i])) * f
                let e = shift - p * k
                XCTAssertEqual(r, e >= 0 ? sat(Int128(rr) << e, 64) : sat(oracleRound(Int128(rr), -e), 64))
            }
        }
    }

    func testElementwiseSaturates() throws {
        let a: [Int32] = [.max, .min, 5, -5, .max], b: [Int32] = [1, -1, -7, 7, .max]
        let ta = TensorType(.i32, [5])
        XCTAssertEqual(ints(try run(.add, [(ta, .i32(a)), (ta, .i32(b))])), [Int64(Int32.max), Int64(Int32.min), -2, 2, Int64(Int32.max)])
        XCTAssertEqual(ints(try run(.sub, [(ta, .i32(a)), (ta, .i32(b))])), [Int64(Int32.max) - 1, Int64(Int32.min) + 1, 12, -12, 0])
        XCTAssertEqual(ints(try run(.mul, [(ta, .i32(a)), (ta, .i32(b))])), [Int64(Int32.max), Int64(Int32.max) + 1, -35, -35, Int64(Int32.max) * Int64(Int32.max)])
        let big: [Int64] = [.max, .min], one: [Int64] = [1, -1]
        let t64 = TensorType(.i64, [2])
        XCTAssertEqual(ints(try run(.add, [(t64, .i64(big)), (t64, .i64(one))])), [.max, .min])
        XCTAssertEqual(ints(try run(.mul, [(t64, .i64(big)), (t64, .i64([2, 2]))])), [.max, .min])
        // i16 × i16 is exact in i32, broadcasting a row.
        let x = i16s(12), r = i16s(4)
        let y = ints(try run(.mul, [(TensorType(.i16, [3, 4]), .i16(x)), (TensorType(.i16, [4]), .i16(r))]))
        for i in 0..<12 { XCTAssertEqual(y[i], Int64(x[i]) * Int64(r[i % 4])) }
        // General broadcasting: both operands stretched, on inner and outer axes.
        let p = i16s(2 * 3), q = i16s(3 * 4)
        let z = ints(try run(.add, [(TensorType(.i16, [2, 1, 3, 1]), .i16(p)), (TensorType(.i16, [3, 4]), .i16(q))]))
        XCTAssertEqual(z.count, 2 * 3 * 4)
        for b in 0..<2 { for i in 0..<3 { for j in 0..<4 {
            XCTAssertEqual(z[(b * 3 + i) * 4 + j], Int64(p[b * 3 + i]) + Int64(q[i * 4 + j]))
        } } }
    }

    /// Sizes past the thresholds where the kernels split work between cores, broadcasting on
    /// inner and outer axes, mixed operand widths.
    func testLargeBroadcastMatchesOracle() throws {
        let a = i16s(84_000)
        let b: [Int32] = (0..<15).map { i in Int32(i) * 77_777 - 500_000 }
        let y = ints(try run(.mul, [(TensorType(.i16, [40, 3, 1, 700]), .i16(a)), (TensorType(.i32, [3, 5, 1]), .i32(b))]))
        XCTAssertEqual(y.count, 40 * 3 * 5 * 700)
        for n in stride(from: 0, to: 40, by: 7) { for c in 0..<3 { for r in 0..<5 { for j in stride(from: 0, to: 700, by: 13) {
            let expected = Int64(a[(n * 3 + c) * 700 + j]) * Int64(b[c * 5 + r])
            XCTAssertEqual(y[((n * 3 + c) * 5 + r) * 700 + j], expected)
        } } } }
    }

    func testSliceAndConcatOnEveryAxis() throws {
        let shape = [4, 6, 9, 10], x = i16s(4 * 6 * 9 * 10)
        let t = TensorType(.i16, shape)
        func at(_ i: [Int]) -> Int16 { x[((i[0] * 6 + i[1]) * 9 + i[2]) * 10 + i[3]] }
        for (begin, size) in [([1, 2, 0, 3], [2, 3, 9, 5]), ([0, 0, 0, 0], [4, 6, 9, 10]), ([3, 1, 2, 0], [1, 5, 7, 10]), ([0, 5, 0, 0], [4, 1, 9, 10])] {
            let y = ints(try run(.slice, [(t, .i16(x))], ["begin": .ints(begin), "size": .ints(size)]))
            var k = 0
            for a in 0..<size[0] { for b in 0..<size[1] { for c in 0..<size[2] { for d in 0..<size[3] {
                XCTAssertEqual(y[k], Int64(at([begin[0] + a, begin[1] + b, begin[2] + c, begin[3] + d]))); k += 1
            } } } }
        }
        for axis in 0..<4 {
            var s2 = shape; s2[axis] = 2
            let z = i16s(s2.reduce(1, *))
            let y = ints(try run(.concat, [(t, .i16(x)), (TensorType(.i16, s2), .i16(z))], ["axis": .int(axis)]))
            var out = shape; out[axis] += 2
            var k = 0
            for a in 0..<out[0] { for b in 0..<out[1] { for c in 0..<out[2] { for d in 0..<out[3] {
                var i = [a, b, c, d]
                if i[axis] < shape[axis] { XCTAssertEqual(y[k], Int64(at(i))) } else {
                    i[axis] -= shape[axis]
                    XCTAssertEqual(y[k], Int64(z[((i[0] * s2[1] + i[1]) * s2[2] + i[2]) * s2[3] + i[3]]))
                }
                k += 1
            } } } }
        }
    }

    /// Transpose, slice and concat are strided byte copies: every permutation of a 4-D shape, for
    /// every element width (f32 too, and a mapped i8 view), small and large enough to be split
    /// between the cores, against index arithmetic.
    func testShapeOpsMoveEveryElementOfEveryWidth() throws {
        for shape in [[2, 3, 4, 5], [8, 3, 40, 70]] {
            let count = shape.reduce(1, *), st = strides(of: shape)
            let base = (0..<count).map { Int64($0 % 251) - 125 }  // fits every width
            let view = base.map(Int8.init).withUnsafeBufferPointer { b in
                let copy = UnsafeMutableBufferPointer<Int8>.allocate(capacity: count)
                _ = copy.initialize(from: b)
                return copy
            }
            defer { view.deallocate() }
            let owner = NSObject()
            let inputs: [(DType, TensorData)] = [(.i8, .i8(base.map(Int8.init))), (.i8, .i8View(Int8View(UnsafeBufferPointer(view), owner: owner))),
                                                 (.i16, .i16(base.map(Int16.init))), (.i32, .i32(base.map(Int32.init))),
                                                 (.i64, .i64(base)), (.f32, .f32(base.map(Float.init)))]
            for (dtype, x) in inputs {
                let t = TensorType(dtype, shape)
                for perm in [[0, 1, 2, 3], [0, 2, 1, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
                    let y = ints(try run(.transpose, [(t, x)], ["perm": .ints(perm)]))
                    let out = perm.map { shape[$0] }
                    var k = 0, bad = 0
                    for a in 0..<out[0] { for b in 0..<out[1] { for c in 0..<out[2] { for d in 0..<out[3] {
                        let i = [a, b, c, d]
                        var src = 0
                        for (o, axis) in perm.enumerated() { src += i[o] * st[axis] }
                        if y[k] != base[src] { bad += 1 }
                        k += 1
                    } } } }
                    XCTAssertEqual(bad, 0, "transpose \(perm) of \(dtype.rawValue) \(shape)")
                }
                let begin = [1, 1, 2, 3], size = [shape[0] - 1, 2, shape[2] - 2, shape[3] - 4]
                let y = ints(try run(.slice, [(t, x)], ["begin": .ints(begin), "size": .ints(size)]))
                var k = 0, bad = 0
                for a in 0..<size[0] { for b in 0..<size[1] { for c in 0..<size[2] { for d in 0..<size[3] {
                    if y[k] != base[(a + 1) * st[0] + (b + 1) * st[1] + (c + 2) * st[2] + (d + 3) * st[3]] { bad += 1 }
                    k += 1
                } } } }
                XCTAssertEqual(bad, 0, "slice of \(dtype.rawValue) \(shape)")
                for axis in 0..<4 {
                    let z = ints(try run(.concat, [(t, x), (t, x)], ["axis": .int(axis)]))
                    var out = shape; out[axis] *= 2
                    var k = 0, bad = 0
                    for a in 0..<out[0] { for b in 0..<out[1] { for c in 0..<out[2] { for d in 0..<out[3] {
                        var i = [a, b, c, d]
                        i[axis] %= shape[axis]
                        if z[k] != base[zip(i, st).reduce(0) { $0 + $1.0 * $1.1 }] { bad += 1 }
                        k += 1
                    } } } }
                    XCTAssertEqual(bad, 0, "concat on axis \(axis) of \(dtype.rawValue) \(shape)")
                }
            }
        }
    }

    func testReductions() throws {
        let x = i16s(6 * 5)
        let s = ints(try run(.reduceSum, [(TensorType(.i16, [6, 5]), .i16(x))], ["axis": .int(0)]))
        let m = ints(try run(.reduceMax, [(TensorType(.i16, [6, 5]), .i16(x))], ["axis": .int(-1)]))
        for c in 0..<5 { XCTAssertEqual(s[c], (0..<6).reduce(Int64(0)) { $0 + Int64(x[$1 * 5 + c]) }) }
        for r in 0..<6 { XCTAssertEqual(m[r], Int64(x[(r * 5)..<(r * 5 + 5)].max()!)) }
    }
}
