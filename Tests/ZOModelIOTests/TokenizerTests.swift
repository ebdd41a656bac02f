import Foundation
import XCTest
import ZOModelIO
import ZOTestSupport

final class TokenizerTests: XCTestCase {
    struct Case: Decodable { let text: String; let ids: [Int] }
    struct Fixture: Decodable { let cases: [Case] }

    func testAllFixtureCasesMatchHuggingFace() throws {
        let gguf = try GGUFFile(path: TestPaths.requireModel())
        let tok = try Tokenizer(gguf: gguf)
        let fx = try JSONDecoder().decode(Fixture.self, from: TestPaths.fixture("tokenizer.json"))
        XCTAssertEqual(fx.cases.count, 331)
        var mismatches: [String] = []
        for c in fx.cases {
            let got = tok.encode(c.text)
            if got != c.ids { mismatches.append("\(c.text.debugDescription): got \(got), expected \(c.ids)") }
        }
        XCTAssertEqual(mismatches.count, 0, mismatches.prefix(10).joined(separator: "\n"))
    }

    func testDecodeRoundTripsFixtureTexts() throws {
        let tok = try Tokenizer(gguf: GGUFFile(path: TestPaths.requireModel()))
        let fx = try JSONDecoder().decode(Fixture.self, from: TestPaths.fixture("tokenizer.json"))
        for c in fx.cases { XCTAssertEqual(tok.decode(c.ids), c.text) }
    }

    func testSpecialTokensAreMatchedAsSpecials() throws {
        let tok = try Tokenizer(gguf: GGUFFile(path: TestPaths.requireModel()))
        XCTAssertEqual(tok.imStart, 1)
        XCTAssertEqual(tok.imEnd, 2)
        XCTAssertEqual(tok.encode("<|im_end|><|im_end|>"), [2, 2])
        // An unfinished special is ordinary text.
        XCTAssertFalse(tok.encode("<|im_end").contains(2))
    }
}
