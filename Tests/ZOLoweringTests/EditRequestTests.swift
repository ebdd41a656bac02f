import Foundation
import XCTest
import ZOLowering
import ZOModelIO
import ZOTestSupport

final class EditRequestTests: XCTestCase {
    func load(_ relative: String) throws -> [EditRequest] {
        try EditRequests.load(path: TestPaths.data.appendingPathComponent(relative).path)
    }

    func testReadsEveryRecordOfTheSharedDatasets() throws {
        let zsre = try load("knowedit_zsre/ZsRE-test-all.json")
        XCTAssertEqual(zsre.count, 1301)
        let r0 = zsre[0]
        XCTAssertEqual(r0.prompt, "Which family does Epaspidoceras belong to?")
        XCTAssertEqual(r0.subject, "Epaspidoceras")
        XCTAssertEqual(r0.targetNew, "Noctuidae")
        XCTAssertEqual(r0.groundTruth, "Aspidoceratidae")
        XCTAssertEqual(r0.rephrasePrompts, ["What family are Epaspidoceras?"])
        XCTAssertEqual(r0.locality, [ScoredPrompt(prompt: "The taxon rank of Epaspidoceras is", answer: "genus", category: "Relation_Specificity"),
                                     ScoredPrompt(prompt: "Epaspidoceras taxon rank", answer: "genus", category: "Relation_Specificity")])
        XCTAssertEqual(r0.portability, [ScoredPrompt(prompt: "What is the common name for the family Epaspidoceras belongs to?",
                                                     answer: "Owlet moths", category: "Reasoning")])

        let mend = try load("zsre/zsre_mend_edit.json")
        XCTAssertEqual(mend.count, 1037)
        XCTAssertEqual(mend[0].prompt, "When was the inception of IAAF Combined Events Challenge?")
        XCTAssertEqual(mend[0].targetNew, "2006")
        XCTAssertEqual(mend[0].groundTruth, "1998")
        XCTAssertEqual(mend[0].rephrasePrompts, ["When was the IAAF Combined Events Challenge launched?"])
        XCTAssertEqual(mend[0].locality.first?.answer, "The String")
        XCTAssertEqual(mend[0].portability.first?.answer, "Athletics")

        let cf = try load("knowedit_wiki_counterfact/test_cf.json")
        XCTAssertEqual(cf.count, 839)
        XCTAssertEqual(cf[0].portability.first?.answer, "Syrian pound")  // first of a nested list
        let flat = try load("counterfact/counterfact-val.json")
        XCTAssertEqual(flat.count, 1919)
        XCTAssertEqual(flat[0].locality, [ScoredPrompt(prompt: "BBC Radio, by", answer: "BBC", category: "locality")])
    }

    func parse(_ s: String) throws -> [EditRequest] { try EditRequests.parse(Array(s.utf8), path: "edits.json") }

    func testOneObjectAndUnknownFieldsAreAccepted() throws {
        let r = try parse(#"{"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "target_new": "Rome", "note": {"x": [1, 2.5e3, null, true]}}"#)
        XCTAssertEqual(r, [EditRequest(prompt: "The Eiffel Tower is in", subject: "Eiffel Tower", targetNew: "Rome", origin: "edits.json record 0")])
    }

    func testBadRequestsNameWhatAndWhere() {
        func message(_ s: String) -> String {
            do { _ = try parse(s); return "no error" } catch { return "\(error)" }
        }
        XCTAssertEqual(message(#"[{"prompt": "Paris is in", "subject": "Lyon", "target_new": "Italy"}]"#),
                       "edits.json: record 0: the subject does not occur in the prompt\n  subject: \"Lyon\"\n  prompt:  \"Paris is in\"")
        XCTAssertEqual(message(#"{"prompt": "Paris is in", "subject": "Paris", "target_new": "  "}"#),
                       "edits.json: record 0: target_new: is empty (the new answer)")
        XCTAssertEqual(message(#"{"prompt": "Paris is in", "subject": "Paris"}"#),
                       "edits.json: record 0: target_new: missing (the new answer)")
        XCTAssertEqual(message("[\n  {\"prompt\": \"a\",\n   \"subject\" \"a\"}\n]"),
                       "edits.json: malformed JSON at line 3, column 14: expected ':' after the key \"subject\", found '\"'")
        XCTAssertEqual(message("[{\"prompt\": \"é\", x}]"), "edits.json: malformed JSON at line 1, column 18: expected a quoted key, found 'x'")
        XCTAssertEqual(message("[{\"prompt\": \"unterminated}]"), "edits.json: malformed JSON at line 1, column 13: unterminated string (it starts here)")
        XCTAssertEqual(message("42"), "edits.json: record 0: (top level): expected an edit object or a list of them, found a number")
        XCTAssertEqual(message(#"[{"prompt": 3, "subject": "a", "target_new": "b"}]"#), "edits.json: record 0: prompt: expected a string, found a number")
        XCTAssertTrue(message(#"{"prompt": "a b", "subject": "a", "target_new": "c", "locality": {"x": [{"prompt": "p"}]}}"#)
            .hasSuffix("locality.x[0].ground_truth: missing (the answer the prompt is scored against)"))
    }

    func testJSONParserAgreesWithFoundationOnTheDatasets() throws {
        let url = TestPaths.data.appendingPathComponent("knowedit_zsre/ZsRE-test-all.json")
        let ours = try JSONValue.parse([UInt8](Data(contentsOf: url)))
        let theirs = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [[String: Any]]
        XCTAssertEqual(ours.array?.count, theirs.count)
        for (o, t) in zip(ours.array!, theirs) {
            XCTAssertEqual(o["rephrase_prompt"]?.string, t["rephrase_prompt"] as? String)
        }
        XCTAssertEqual(try JSONValue.parse(Array(#"["\u00e9\ud83d\ude00\n", -0.5e-2]"#.utf8)), .array([.string("é😀\n"), .number(-0.005)]))
        // Every prefix of a valid document is either valid or a syntax error, never a crash.
        let doc = Array(#"{"a": [1, {"b": "c\"d"}, true, null], "e": -1.5E+3}"#.utf8)
        for n in 0..<doc.count { XCTAssertThrowsError(try JSONValue.parse(Array(doc[0..<n]))) }
    }
}
