import Foundation
import XCTest
import ZOIR
import ZOLowering
import ZOModelIO
import ZORuntime
import ZOTestSupport

/// Tiny models written as GGUF files, for the parts the real model does not exercise.
final class SyntheticModelTests: XCTestCase {
    /// A one-layer qwen2 (q/k/v biases, NeoX RoPE, separate output head), hidden 8, 2 heads, 1 kv head.
    func writeQwen2(biasScale: Float) throws -> String {
        var rng = SplitMix64(seed: 7)
        func r(_ n: Int, _ s: Float = 0.3) -> [Float] { (0..<n).map { _ in Float(rng.normal()) * s } }
        var w = GGUFWriter()
        w.add("general.architecture", .string("qwen2"))
        for (k, v) in [("block_count", 1), ("embedding_length", 8), ("feed_forward_length", 16), ("attention.head_count", 2),
                       ("attention.head_count_kv", 1), ("context_length", 64)] {
            w.add("qwen2." + k, .uint32(UInt32(v)))
        }
        w.add("qwen2.rope.freq_base", .float32(10000))
        w.add("qwen2.attention.layer_norm_rms_epsilon", .float32(1e-6))
        w.addTensor("token_embd.weight", dims: [8, 20], floats: r(160))
        w.addTensor("output.weight", dims: [8, 20], floats: r(160))
        w.addTensor("output_norm.weight", dims: [8], floats: r(8, 0.1).map { 1 + $0 })
        let p = "blk.0."
        w.addTensor(p + "attn_norm.weight", dims: [8], floats: r(8, 0.1).map { 1 + $0 })
        w.addTensor(p + "ffn_norm.weight", dims: [8], floats: r(8, 0.1).map { 1 + $0 })
        w.addTensor(p + "attn_q.weight", dims: [8, 8], floats: r(64))
        w.addTensor(p + "attn_k.weight", dims: [8, 4], floats: r(32))
        w.addTensor(p + "attn_v.weight", dims: [8, 4], floats: r(32))
        w.addTensor(p + "attn_q.bias", dims: [8], floats: r(8).map { $0 * biasScale })
        w.addTensor(p + "attn_k.bias", dims: [4], floats: r(4).map { $0 * biasScale })
        w.addTensor(p + "attn_v.bias", dims: [4], floats: r(4).map { $0 * biasScale })
        w.addTensor(p + "attn_output.weight", dims: [8, 8], floats: r(64))
        w.addTensor(p + "ffn_gate.weight", dims: [8, 16], floats: r(128))
        w.addTensor(p + "ffn_up.weight", dims: [8, 16], floats: r(128))
        w.addTensor(p + "ffn_down.weight", dims: [16, 8], floats: r(128))
        let path = TestPaths.scratch(self).appendingPathComponent("qwen2-\(biasScale).gguf").path
        try w.write(to: path)
        return path
    }

    func logits(_ path: String, ids: [Int]) throws -> [Float] {
        let imp = try LlamaImporter(gguf: GGUFFile(path: path))
        let m = try imp.addForward("f", ForwardShape(seqLen: ids.count))
        try Verifier.verify(m)
        let emb = try EmbeddingTable(gguf: imp.gguf).lookup(ids)
        guard case let .f32(l)? = try Interpreter(module: m).run("f", ["embeddings": emb])["logits"] else { throw RuntimeError.badRequest("no logits") }
        return l
    }

    func testQwen2ImportsWithBiasesNeoxRopeAndSeparateHead() throws {
        let path = try writeQwen2(biasScale: 1)
        let imp = try LlamaImporter(gguf: GGUFFile(path: path))
        XCTAssertEqual(imp.config.arch, .qwen2)
        XCTAssertTrue(imp.config.qkvBias && imp.config.ropeNeox && !imp.config.tiedEmbeddings)
        let m = try imp.addForward("f", ForwardShape(seqLen: 3))
        let f = m.function("f")!
        XCTAssertEqual(f.ops.filter { $0.kind == .fullyConnected && $0.operands.count == 3 }.count, 3, "q, k and v carry biases")
        XCTAssertTrue(f.ops.contains { $0.kind == .rope && $0.attributes["mode"] == .string("neox") })
        XCTAssertTrue(f.ops.contains { $0.kind == .constant && $0.attributes["name"] == .symbol("output.weight") })
        // The biases reach the output, and nothing is non-finite.
        let with = try logits(path, ids: [1, 5, 7]), without = try logits(try writeQwen2(biasScale: 0), ids: [1, 5, 7])
        XCTAssertEqual(with.count, 3 * 20)
        XCTAssertTrue(with.allSatisfy(\.isFinite))
        XCTAssertGreaterThan(zip(with, without).map { abs($0 - $1) }.max()!, 1e-3)
    }

    func testCachedDecodeEqualsTheFullPassOnQwen2() throws {
        // Prefill two tokens, decode the third from the cache: the same last logits as one pass over three.
        let path = try writeQwen2(biasScale: 1)
        let imp = try LlamaImporter(gguf: GGUFFile(path: path))
        let c = imp.config
        try imp.addForward("prefill", ForwardShape(seqLen: 2, emitCache: true))
        let m = try imp.addForward("decode", ForwardShape(seqLen: 1, cacheLen: 2))
        let interp = try Interpreter(module: m)
        let table = try EmbeddingTable(gguf: imp.gguf)
        let pre = try interp.run("prefill", ["embeddings": table.lookup([1, 5])])
        let (cs, sn) = RopeTables.make(positions: [2], headDim: c.headDim, base: c.ropeBase)
        let dec = try interp.run("decode", [
            "embeddings": table.lookup([7]), "rope.cos": .f32(cs), "rope.sin": .f32(sn),
            "mask": .f32(RopeTables.decodeMask(newTokens: 1, cacheLen: 2, filled: 2)),
            "k_cache.0": pre["k.0"]!, "v_cache.0": pre["v.0"]!,
        ])
        guard case let .f32(last)? = dec["logits"] else { return XCTFail() }
        let full = try logits(path, ids: [1, 5, 7])
        for (a, b) in zip(last, full.suffix(20)) { XCTAssertEqual(a, b, accuracy: 1e-4) }
    }
}
