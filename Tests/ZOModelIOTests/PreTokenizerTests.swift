import XCTest
import ZOModelIO

/// The pre-tokenizers against splits worked out by hand from each tokenizer's regular expression.
final class PreTokenizerTests: XCTestCase {
    func split(_ p: PreTokenizer, _ s: String) -> [String] { p.split(s).map { String(String.UnicodeScalarView($0)) } }

    func testQwen2SplitsDigitsOneByOne() {
        XCTAssertEqual(split(.qwen2, "Hello 123 world's"), ["Hello", " ", "1", "2", "3", " world", "'s"])
        XCTAssertEqual(split(.qwen2, "x\n\ny"), ["x", "\n\n", "y"])
        XCTAssertEqual(split(.qwen2, "a  b"), ["a", " ", " b"])
        // Contractions are case-insensitive; punctuation takes one leading space and trailing newlines.
        XCTAssertEqual(split(.qwen2, "HELLO'S ok!!\nnext"), ["HELLO", "'S", " ok", "!!\n", "next"])
        // A non-letter, non-digit may lead a word ("[^\r\n\p{L}\p{N}]?\p{L}+").
        XCTAssertEqual(split(.qwen2, "(foo)"), ["(foo", ")"])
    }

    func testLlamaBPEGroupsUpToThreeDigits() {
        XCTAssertEqual(split(.llamaBPE, "Hello 12345 world"), ["Hello", " ", "123", "45", " world"])
        XCTAssertEqual(split(.llamaBPE, "tab\tand  spaces\n"), ["tab", "\tand", " ", " spaces", "\n"])
    }

    func testSmolLMSplitsEveryDigitBeforeGPT2Rules() {
        XCTAssertEqual(split(.smollm, "at 10:45"), ["at", " ", "1", "0", ":", "4", "5"])
        XCTAssertEqual(split(.smollm, "I'm  here"), ["I", "'m", " ", " here"])
    }

    func testGGUFNames() {
        XCTAssertEqual(PreTokenizer(ggufName: "smollm"), .smollm)
        XCTAssertEqual(PreTokenizer(ggufName: "qwen2"), .qwen2)
        XCTAssertEqual(PreTokenizer(ggufName: "llama-bpe"), .llamaBPE)
        XCTAssertNil(PreTokenizer(ggufName: "tekken"))
    }
}
