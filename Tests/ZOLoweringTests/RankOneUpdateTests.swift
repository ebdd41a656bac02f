import Foundation
import XCTest
import ZOLowering
import ZOModelIO
import ZORuntime
import ZOTestSupport

/// ROME's rank-one update on the real model's ffn_down, and the edited GGUF it is exported as.
final class RankOneUpdateTests: XCTestCase {
    func testUpdateMapsTheKeyToTheTargetAndLeavesOrthogonalKeysAlone() throws {
        let gguf = try GGUFFile(path: TestPaths.requireModel())
        let name = "blk.6.ffn_down.weight"
        let info = try XCTUnwrap(gguf.tensorInfo(name))
        let (rows, cols) = (info.dims[1], info.dims[0])
        let w = try gguf.dequantize(name)
        var rng = SystemRandomNumberGenerator()
        let key = (0..<cols).map { _ in Float.random(in: -1...1, using: &rng) }
        let before = matVec(w, rows, cols, key)
        let target = before.enumerated().map { $0.element + ($0.offset % 7 == 0 ? 0.5 : -0.1) }
        let update = try RankOneUpdate(weights: w, rows: rows, cols: cols, key: key, target: target)
        let edited = update.applied(to: w)
        let after = matVec(edited, rows, cols, key)
        XCTAssertLessThan(zip(after, target).map { abs($0 - $1) }.max()!, 1e-3)
        // x ⟂ k̄: unchanged.
        var x = (0..<cols).map { _ in Float.random(in: -1...1, using: &rng) }
        let proj = zip(x, update.u).reduce(0) { $0 + $1.0 * $1.1 }
        x = zip(x, update.u).map { $0 - proj * $1 }
        XCTAssertLessThan(zip(matVec(edited, rows, cols, x), matVec(w, rows, cols, x)).map { abs($0 - $1) }.max()!, 1e-3)
        XCTAssertThrowsError(try RankOneUpdate(weights: w, rows: rows, cols: cols, key: [Float](repeating: 0, count: cols), target: target))
    }

    func testEditedGGUFRewritesOneTensorAsF32AndKeepsEverythingElseByteIdentical() throws {
        let path = try TestPaths.requireModel()
        let gguf = try GGUFFile(path: path)
        let name = "blk.6.ffn_down.weight"
        var w = try gguf.dequantize(name)
        w[0] += 1
        let out = TestPaths.scratch(self).appendingPathComponent("edited.gguf").path
        try gguf.rewriter(replacing: [name: w]).write(to: out, inputs: [path])
        let edited = try GGUFFile(path: out)
        XCTAssertEqual(edited.version, gguf.version)
        XCTAssertEqual(edited.metadata.map(\.key), gguf.metadata.map(\.key))
        XCTAssertTrue(zip(edited.metadata, gguf.metadata).allSatisfy { $0.value == $1.value })
        XCTAssertEqual(edited.tensors.map(\.name), gguf.tensors.map(\.name))
        for (a, b) in zip(edited.tensors, gguf.tensors) {
            XCTAssertEqual(a.dims, b.dims)
            if a.name == name {
                XCTAssertEqual(a.type, .f32)
                XCTAssertEqual(try edited.dequantize(name), w)
            } else {
                XCTAssertEqual(a.type, b.type)
                XCTAssertTrue(edited.tensorBytes(a).elementsEqual(gguf.tensorBytes(b)), "\(a.name) changed")
            }
        }
        // It still loads and runs as a model.
        let lm = try LanguageModel(path: out)
        XCTAssertTrue(try lm.logits([1, 504, 3458]).last!.allSatisfy(\.isFinite))
        XCTAssertThrowsError(try gguf.rewriter(replacing: [name: [1, 2]]))
        XCTAssertThrowsError(try gguf.rewriter(replacing: ["no.such.tensor": []]))
        XCTAssertThrowsError(try gguf.rewriter(replacing: [:]).write(to: path, inputs: [path]))
    }

    func matVec(_ w: [Float], _ rows: Int, _ cols: Int, _ x: [Float]) -> [Float] {
        (0..<rows).map { i in Float((0..<cols).reduce(0.0) { $0 + Double(w[i * cols + $1]) * Double(x[$1]) }) }
    }
}
