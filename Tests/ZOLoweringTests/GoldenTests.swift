import Foundation
import XCTest
import ZOIR
import ZOLowering
import ZOTestSupport

/// Golden IR tests: every Tests/Golden/<pass>/<case>.zoir starts with `// RUN: <pipeline>`; the
/// pipeline's output (or, for a refused input, `// ERROR:` lines with its diagnostics) must equal
/// <case>.expected byte for byte. ZO_REGENERATE_GOLDEN=1 rewrites the expectations, except on CI.
final class GoldenTests: XCTestCase {
    static let root = TestPaths.repo.appendingPathComponent("Tests/Golden")

    static func run(_ text: String, file: String) -> String {
        guard let first = text.split(separator: "\n", maxSplits: 1).first, first.hasPrefix("// RUN:") else {
            return "// ERROR: the first line must be `// RUN: <pipeline>`\n"
        }
        let pipeline = first.dropFirst("// RUN:".count).trimmingCharacters(in: .whitespaces)
        do {
            let m = try IRParser.parse(text, file: file)
            try Verifier.verify(m)
            return IRPrinter.print(try PassManager(pipeline: pipeline).run(m))
        } catch let e as PassError {
            return e.diagnostics.map { "// ERROR: \(e.pass): \($0)\n" }.joined()
        } catch {
            return "// ERROR: \(error)\n".replacingOccurrences(of: "\n  ", with: "\n// ")
        }
    }

    func testEveryGoldenCase() throws {
        let env = ProcessInfo.processInfo.environment
        let regenerate = env["ZO_REGENERATE_GOLDEN"] == "1" && env["CI"] == nil
        let files = try FileManager.default.subpathsOfDirectory(atPath: Self.root.path).filter { $0.hasSuffix(".zoir") }.sorted()
        var perPass: [String: Int] = [:]
        for rel in files {
            let input = Self.root.appendingPathComponent(rel)
            let expectedURL = input.deletingPathExtension().appendingPathExtension("expected")
            let got = Self.run(try String(contentsOf: input, encoding: .utf8), file: rel)
            perPass[rel.split(separator: "/").first.map(String.init) ?? "", default: 0] += 1
            if regenerate {
                try got.write(to: expectedURL, atomically: true, encoding: .utf8)
                continue
            }
            guard let want = try? String(contentsOf: expectedURL, encoding: .utf8) else {
                XCTFail("\(rel): no .expected file (run with ZO_REGENERATE_GOLDEN=1 and review it)")
                continue
            }
            XCTAssertEqual(got, want, "\(rel): output differs from \(expectedURL.lastPathComponent)")
        }
        for pass in PassRegistry.names { XCTAssertGreaterThanOrEqual(perPass[pass] ?? 0, 3, "golden cases for \(pass)") }
    }
}
