import XCTest
import ZOIR
import ZOLowering
import ZOModelIO
import ZORuntime
import ZOTestSupport

final class ImportTests: XCTestCase {
    func testFullSmolLM2IRPrintsParsesAndPrintsIdentically() throws {
        let imp = try LlamaImporter(gguf: GGUFFile(path: TestPaths.requireModel()))
        try imp.addForward("forward", ForwardShape(seqLen: 16))
        try imp.addForward("decode", ForwardShape(seqLen: 1, cacheLen: 31))
        let m = imp.module
        try Verifier.verify(m)
        let text = IRPrinter.print(m)
        let parsed = try IRParser.parse(text, file: "smollm2.zoir")
        XCTAssertEqual(parsed, m)
        XCTAssertEqual(IRPrinter.print(parsed), text)
        try Verifier.verify(parsed)
        // 30 blocks of 41 ops, plus head and tables; 272 GGUF tensors become 272 weight constants.
        XCTAssertEqual(m.constants.filter { $0.name.hasSuffix(".weight") }.count, 272)
        XCTAssertEqual(m.function("forward")?.params.map(\.name), ["embeddings"])
        XCTAssertEqual(m.function("decode")?.params.count, 4 + 60)
        XCTAssertEqual(m.function("decode")?.resultNames.count, 1 + 60)
        // No weight bytes in the text: it stays small.
        XCTAssertLessThan(text.utf8.count, 1_000_000)
    }

    func testConfigFromGGUF() throws {
        let c = try ModelConfig(gguf: GGUFFile(path: TestPaths.requireModel()))
        XCTAssertEqual(c, ModelConfig(arch: .llama, layers: 30, hidden: 576, ffn: 1536, heads: 9, kvHeads: 3, headDim: 64,
                                      vocab: 49152, contextLength: 8192, ropeBase: 100000, rmsEps: Double(Float(1e-5)), tiedEmbeddings: true))
    }

    func testDecodeWithCacheMatchesFullForward() throws {
        // Logits of the last token from prefill + cached decode equal those of one full pass.
        let lm = try LanguageModel(path: TestPaths.requireModel())
        let ids = lm.tokenizer.encode("The mother tongue of Danielle Darrieux is")
        let full = try lm.logits(ids)
        let gen = try lm.generate(Array(ids.dropLast()), maxTokens: 2)
        XCTAssertEqual(gen.first, argmax(full[ids.count - 2]))
        XCTAssertEqual(argmax(full[ids.count - 1]), try lm.generate(ids, maxTokens: 1).first)
    }
}
