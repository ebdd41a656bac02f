import Foundation
import XCTest
import ZOModelIO
import ZOTestSupport

/// The README's main job through the built executables: `zoc compile` of an example, then
/// `zorun run --eval --out --report` (the path the unit tests do not take: the eval model
/// is a second LanguageModel that takes each edit and gives it back).
final class CommandLineTests: XCTestCase {
    struct Result { let status: Int32; let stdout: String; let stderr: String }

    /// Runs a built executable (beside the test bundle) to completion.
    func run(_ tool: String, _ args: [String]) throws -> Result {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let exe = dir.appendingPathComponent(tool)
        guard FileManager.default.isExecutableFile(atPath: exe.path) else {
            throw TestPaths.Missing(description: "\(exe.path) not built: swift build --build-tests builds it")
        }
        let p = Process(), out = Pipe(), err = Pipe()
        p.executableURL = exe; p.arguments = args; p.standardOutput = out; p.standardError = err
        try p.run()
        // Read before waiting: a full pipe would block the child.
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    func testCompileThenRunWithEvalWritesTheEditedModelAndTheReport() throws {
        let model = try TestPaths.requireModel()
        let dir = TestPaths.scratch(self)
        let plan = dir.appendingPathComponent("one.zo").path, edited = dir.appendingPathComponent("one.gguf").path
        let report = dir.appendingPathComponent("report.json").path
        let edits = TestPaths.repo.appendingPathComponent("examples/one-fact.json").path

        let c = try run("zoc", ["compile", "--model", model, "--edits", edits, "--max-steps", "2", "--directions", "1", "--contexts", "1", "-o", plan])
        XCTAssertEqual(c.status, 0, c.stderr)
        let r = try run("zorun", ["run", plan, "--model", model, "--eval", "--report", report, "--out", edited])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("after:  rewrite"), r.stdout)

        let rows = try XCTUnwrap(JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: report)))).array)
        XCTAssertEqual(rows.count, 1)
        XCTAssertEqual(rows[0]["steps"], .number(2))
        XCTAssertNotNil(rows[0]["before"]?["rewrite"])
        XCTAssertNotNil(rows[0]["after"]?["locality"])

        // The edited layer's down-projection is F32 in the export; every other tensor keeps its type.
        let source = try GGUFFile(path: model), out = try GGUFFile(path: edited)
        XCTAssertEqual(out.tensors.count, source.tensors.count)
        for t in source.tensors {
            let e = try XCTUnwrap(out.tensorInfo(t.name))
            XCTAssertEqual(e.type, t.name == "blk.6.ffn_down.weight" ? .f32 : t.type, t.name)
        }

        // The plan's segments, in file order: 64-byte aligned, none overlapping, the host tensors marked.
        let seg = try run("zoc", ["inspect", "--segments", plan])
        XCTAssertEqual(seg.status, 0, seg.stderr)
        var end = 0
        var hosts: [String] = []
        for line in seg.stdout.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            let offset = try XCTUnwrap(Int(f[0]), String(line)), length = try XCTUnwrap(Int(f[1]), String(line))
            XCTAssertEqual(offset % 64, 0, String(line))
            XCTAssertGreaterThanOrEqual(offset, end, String(line))
            end = offset + length
            if f[2] == "host" { hosts.append(String(f.last!)) }
        }
        XCTAssertEqual(end, (try FileManager.default.attributesOfItem(atPath: plan)[.size] as? NSNumber)?.intValue)
        XCTAssertTrue(hosts.contains("token_embd.weight") && hosts.contains("plan.ffn_down"), "\(hosts)")

        // A report is not a plan: a clear error naming it, and the file is left as it was.
        let before = try Data(contentsOf: URL(fileURLWithPath: report))
        let bad = try run("zorun", ["run", report])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains(report), bad.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: report)), before)
    }
}
