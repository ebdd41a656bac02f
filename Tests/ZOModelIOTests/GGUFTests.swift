import Foundation
import XCTest
import ZOModelIO
import ZOTestSupport

final class GGUFTests: XCTestCase {
    static let allValues: [(String, GGUFValue)] = [
        ("u8", .uint8(200)), ("i8", .int8(-5)), ("u16", .uint16(60000)), ("i16", .int16(-30000)),
        ("u32", .uint32(4_000_000_000)), ("i32", .int32(-2_000_000_000)), ("f32", .float32(1.5)), ("bool", .bool(true)),
        ("str", .string("héllo")), ("u64", .uint64(1 << 60)), ("i64", .int64(-(1 << 60))), ("f64", .float64(-0.25)),
        ("arr", .array(.int32, [.int32(1), .int32(-2)])), ("strs", .array(.string, [.string("a"), .string("")])),
        ("nested", .array(.array, [.array(.uint8, [.uint8(1)])])),
    ]

    func sampleFile(version: UInt32 = 3) -> (Data, GGUFWriter) {
        var w = GGUFWriter(version: version)
        for (k, v) in Self.allValues { w.add(k, v) }
        w.addTensor("a", dims: [4, 2], floats: (0..<8).map(Float.init))
        w.addTensor("b", dims: [32], type: .q8_0, data: Data([0, 0x3C] + (0..<32).map { UInt8($0) }))
        return (w.serialize(), w)
    }

    lazy var scratch = TestPaths.scratch(self)

    /// Writes `d` to this test's scratch file (each call replaces the last).
    func write(_ d: Data) throws -> String {
        let p = scratch.appendingPathComponent("f.gguf").path
        try d.write(to: URL(fileURLWithPath: p))
        return p
    }

    func testEveryValueTypeRoundTripsInVersions2And3() throws {
        for version: UInt32 in [2, 3] {
            let g = try GGUFFile(path: write(sampleFile(version: version).0))
            XCTAssertEqual(g.version, version)
            XCTAssertEqual(g.metadata.map(\.key), Self.allValues.map(\.0))
            for (k, v) in Self.allValues { XCTAssertEqual(g.value(k), v, k) }
            XCTAssertEqual(try g.dequantize("a"), (0..<8).map(Float.init))
            XCTAssertEqual(g.tensorInfo("a")?.shape, [2, 4])
            XCTAssertEqual(try g.dequantize("b"), (0..<32).map { Float($0) })
        }
    }

    func testWrongMagic() throws {
        var d = sampleFile().0
        d[0] = UInt8(ascii: "X")
        let p = try write(d)
        XCTAssertThrowsError(try GGUFFile(path: p)) { e in
            guard case .badMagic(let path, let found)? = e as? ModelIOError else { return XCTFail("\(e)") }
            XCTAssertEqual(path, p); XCTAssertEqual(found, "\"XGUF\"")
            XCTAssertTrue("\(e)".contains("not a GGUF file"))
        }
    }

    func testUnsupportedVersion() throws {
        var d = sampleFile().0
        d[4] = 1
        XCTAssertThrowsError(try GGUFFile(path: write(d))) { e in
            guard case .unsupportedVersion(_, 1)? = e as? ModelIOError else { return XCTFail("\(e)") }
        }
    }

    func testEveryTruncationIsATypedErrorNamingTheOffset() throws {
        let (d, _) = sampleFile()
        let g = try GGUFFile(path: write(d))
        let dataEnd = g.dataOffset + g.tensors.map { $0.offset + $0.byteCount }.max()!
        var truncatedErrors = 0
        for cut in 0..<dataEnd {
            let p = try write(d.prefix(cut))
            do {
                _ = try GGUFFile(path: p)
                XCTFail("a file cut at \(cut) of \(dataEnd) bytes loaded")
            } catch let e as ModelIOError {
                if case let .truncated(_, offset, field, _, _) = e {
                    truncatedErrors += 1
                    // Header fields fail where the file ends; tensor data where it should have started.
                    XCTAssertTrue(offset <= cut || field.hasSuffix("data"), "\(e)")
                    XCTAssertFalse(field.isEmpty)
                }
            }
        }
        XCTAssertGreaterThan(truncatedErrors, dataEnd * 9 / 10)
    }

    func testBitFlipsInTheHeaderNeverCrash() throws {
        let (d, _) = sampleFile()
        let g = try GGUFFile(path: write(d))
        var loaded = 0, rejected = 0
        for i in 0..<g.dataOffset {
            for bit in [0, 3, 7] {
                var c = d
                c[i] ^= UInt8(1 << bit)
                do { _ = try GGUFFile(path: write(c)); loaded += 1 } catch is ModelIOError { rejected += 1 }
            }
        }
        XCTAssertEqual(loaded + rejected, g.dataOffset * 3)
        XCTAssertGreaterThan(rejected, 0)
    }

    func testRealModelTruncatedAndCorrupted() throws {
        let model = try TestPaths.requireModel()
        let full = try Data(contentsOf: URL(fileURLWithPath: model), options: .alwaysMapped)
        let g = try GGUFFile(path: model)
        XCTAssertEqual(g.tensors.count, 272)
        // In the early metadata, inside the token list, and inside the last tensor's data.
        for cut in [1000, 400_000, full.count - 100] {
            XCTAssertThrowsError(try GGUFFile(path: write(full.prefix(cut)))) { e in
                guard case let .truncated(_, offset, field, _, _)? = e as? ModelIOError else { return XCTFail("\(e)") }
                XCTAssertTrue(offset <= cut || field.hasSuffix("data"), "\(e)")
                if cut == 1000 { XCTAssertTrue(field.hasPrefix("metadata"), field) }
                if cut == 400_000 { XCTAssertTrue(field.contains("tokenizer.ggml.tokens"), field) }
                if cut == full.count - 100 { XCTAssertTrue(field.contains("output_norm.weight") || field.contains("data"), field) }
            }
        }
        // A tensor count far beyond what the file holds.
        var c = Data(full)
        c.replaceSubrange(8..<16, with: [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0])
        XCTAssertThrowsError(try GGUFFile(path: write(c))) { e in
            XCTAssertTrue("\(e)".contains("tensor_count"), "\(e)")
        }
    }

    func testMissingFileAndDirectory() {
        XCTAssertThrowsError(try GGUFFile(path: "/nonexistent/x.gguf")) { e in
            guard case .io? = e as? ModelIOError else { return XCTFail("\(e)") }
        }
        XCTAssertThrowsError(try GGUFFile(path: NSTemporaryDirectory())) { e in XCTAssertTrue("\(e)".contains("directory")) }
    }

    func testAtomicWriteReplacesAnExistingOutput() throws {
        let p = scratch.appendingPathComponent("out.txt").path
        try writeAtomically(Data("first".utf8), to: p)
        try writeAtomically(Data("second".utf8), to: p)
        XCTAssertEqual(try String(contentsOfFile: p, encoding: .utf8), "second")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path), ["out.txt"], "no temporary file left behind")
        XCTAssertThrowsError(try writeAtomically(Data(), to: "/nonexistent-dir/x")) { e in XCTAssertTrue("\(e)".contains("cannot write")) }
    }

    func testWriterRefusesToOverwriteItsInput() throws {
        let p = try write(sampleFile().0)
        let before = try Data(contentsOf: URL(fileURLWithPath: p))
        XCTAssertThrowsError(try sampleFile().1.write(to: p, inputs: [p]))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: p)), before)
    }
}
