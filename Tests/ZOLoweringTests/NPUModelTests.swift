import Foundation
import XCTest
import ZOIR
import ZOLowering
import ZOModelIO
import ZORuntime
import ZOTestSupport

/// The real model through the npu lowering.
final class NPUModelTests: XCTestCase {
    /// One int model per test process: calibration and weight quantization run once.
    static var shared: LanguageModel?
    static func model() throws -> LanguageModel {
        if let m = shared { return m }
        let m = try LanguageModel(path: TestPaths.requireModel(), precision: .int)
        shared = m
        return m
    }
    func model() throws -> LanguageModel { try Self.model() }

    func testLoweredSmolLM2IsPureNPUAndItsFloatGraphIsNot() throws {
        let lm = try model()
        let m = try lm.npuCompiler().lower("npu_t8", ForwardShape(seqLen: 8))
        try Verifier.verify(m, profile: .npu)
        XCTAssertEqual(OpHistogram(m).floatOps, 0)
        XCTAssertFalse(m.functions[0].ops.contains { $0.kind == .gather || !$0.type.isStatic })
        // Every weight matrix is int8 per output channel.
        XCTAssertEqual(m.constants.filter { $0.type.dtype == .i8 }.count, 211)
        // The arena plan covers every op result.
        guard case let .int(arena)? = m.attributes["arena.npu_t8"] else { return XCTFail("no arena size") }
        XCTAssertGreaterThan(arena, 0)
        // The float import of the same shape is refused by the npu profile.
        let imp = try LlamaImporter(gguf: GGUFFile(path: TestPaths.requireModel()))
        XCTAssertThrowsError(try LegalizeNPUPass().run(imp.addForward("f", ForwardShape(seqLen: 8))))
        // The text form of the lowered graph round-trips.
        let text = IRPrinter.print(m)
        XCTAssertEqual(IRPrinter.print(try IRParser.parse(text)), text)
    }

    func testIntLogitsStayCloseToTheFloatModel() throws {
        struct Case: Decodable { let prompt: String; let ids: [Int] }
        struct Cases: Decodable { let cases: [Case] }
        let lm = try model()
        let cases = try JSONDecoder().decode(Cases.self, from: TestPaths.fixture("logits_fp32.json")).cases.prefix(4)
        let ref = try TestPaths.fixture("last_logprobs_fp32.f32")
        let v = lm.config.vocab
        var agree = 0, total = 0.0
        for (i, c) in cases.enumerated() {
            let logits = try lm.logits(c.ids).last!
            let lse = logSumExp(logits)
            let p = ref.withUnsafeBytes { b in (0..<v).map { Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: (i * v + $0) * 4, as: UInt32.self))) } }
            let kl = zip(p, logits).reduce(0.0) { $0 + exp(Double($1.0)) * (Double($1.0) - (Double($1.1) - lse)) }
            total += kl
            if argmax(p) == argmax(logits) { agree += 1 }
        }
        print("int path on 4 prompts: mean KL \(total / 4), top-1 \(agree)/4")
        // A regression guard; the acceptance figures come from `zobench fidelity`.
        XCTAssertLessThan(total / 4, 0.03)
        XCTAssertGreaterThanOrEqual(agree, 3)
    }

    /// Decoding with the int KV cache follows the static int forward: at each new position the
    /// token it chose is the static forward's top-1 or within a hair of it (the two lower the
    /// scores' masks and RoPE tables differently, so logits can differ in their last bits).
    func testKVCacheDecodingFollowsTheStaticForward() throws {
        struct Case: Decodable { let prompt: String; let ids: [Int] }
        struct Cases: Decodable { let cases: [Case] }
        let lm = try model()
        let c = try JSONDecoder().decode(Cases.self, from: TestPaths.fixture("logits_fp32.json")).cases[0]
        let n = 10
        let generated = try lm.generate(c.ids, maxTokens: n)
        XCTAssertEqual(generated.count, n)
        let decode = try XCTUnwrap(lm.npuDecoders.values.first)
        try Verifier.verify(decode.decode.module, profile: .npu)
        XCTAssertEqual(OpHistogram(decode.decode.module).floatOps, 0)
        let full = try lm.logits(c.ids + generated.dropLast())
        var top1 = 0, worst: Float = 0
        for (i, t) in generated.enumerated() {
            let row = full[c.ids.count - 1 + i]
            worst = max(worst, row.max()! - row[t])
            XCTAssertLessThan(row.max()! - row[t], 0.3, "position \(i): the decoder's token is far from the static forward's top-1")
            if argmax(row) == t { top1 += 1 }
        }
        print("KV-cache decoding: \(top1)/\(n) tokens the static forward's top-1, largest logit gap \(worst)")
        XCTAssertGreaterThanOrEqual(top1, n - 1)
    }
}
