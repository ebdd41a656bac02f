import Foundation
import XCTest
import ZOLowering
import ZOModelIO
import ZORuntime
import ZOTestSupport

/// The float reference path against Hugging Face transformers (float32) on the real model.
final class FloatModelTests: XCTestCase {
    struct Position: Decodable { let top_ids: [Int]; let top_logits: [Float]; let logsumexp: Double }
    struct LogitCase: Decodable { let prompt: String; let ids: [Int]; let positions: [Position] }
    struct GreedyCase: Decodable { let prompt: String; let ids: [Int]; let greedy_ids: [Int] }
    struct Cases<T: Decodable>: Decodable { let cases: [T] }

    static var shared: LanguageModel?
    func model() throws -> LanguageModel {
        if let m = Self.shared { return m }
        let m = try LanguageModel(path: TestPaths.requireModel())
        Self.shared = m
        return m
    }

    func testLogitsMatchTransformersAtEveryPosition() throws {
        let lm = try model()
        let fx = try JSONDecoder().decode(Cases<LogitCase>.self, from: TestPaths.fixture("logits_fp32.json"))
        XCTAssertEqual(fx.cases.count, 16)
        var worstLogit: Float = 0, worstLSE = 0.0, checked = 0
        for c in fx.cases {
            XCTAssertEqual(lm.tokenizer.encode(c.prompt), c.ids, c.prompt)
            let logits = try lm.logits(c.ids)
            XCTAssertEqual(logits.count, c.positions.count)
            for (p, pos) in zip(logits, c.positions) {
                for (id, want) in zip(pos.top_ids, pos.top_logits) {
                    worstLogit = max(worstLogit, abs(p[id] - want))
                    checked += 1
                }
                worstLSE = max(worstLSE, abs(logSumExp(p) - pos.logsumexp))
                // Our top-1 is one of the fixture's top ids, so near-ties are the only disagreement.
                XCTAssertTrue(pos.top_ids.prefix(3).contains(argmax(p)), "\(c.prompt): top-1 \(argmax(p)) not among \(pos.top_ids.prefix(3))")
            }
        }
        print("logits: \(checked) top-10 logits checked, max |Δlogit| = \(worstLogit), max |Δlogsumexp| = \(worstLSE)")
        XCTAssertLessThanOrEqual(worstLogit, 2e-3)
        XCTAssertLessThanOrEqual(worstLSE, 2e-3)
    }

    func testGreedyContinuationsMatchTransformers() throws {
        let lm = try model()
        let fx = try JSONDecoder().decode(Cases<GreedyCase>.self, from: TestPaths.fixture("greedy_fp32.json"))
        XCTAssertEqual(fx.cases.count, 6)
        for c in fx.cases {
            XCTAssertEqual(lm.tokenizer.encode(c.prompt), c.ids)
            let got = try lm.generate(c.ids, maxTokens: 24)
            XCTAssertEqual(got, c.greedy_ids, "\(c.prompt): got \(lm.tokenizer.decode(got).debugDescription)")
        }
    }
}
