import Foundation
import XCTest
import ZOIR
import ZOLowering
import ZOModelIO
import ZORuntime
import ZOTestSupport

/// The .zo artifact of the real model: round trip, determinism, and corruption.
final class ArtifactTests: XCTestCase {
    static let entry = "npu_t8"
    static var built: (module: Module, bytes: [UInt8])?

    /// SmolLM2 lowered at 1 × 8 and packed (once per test process).
    func artifact() throws -> (module: Module, bytes: [UInt8]) {
        if let b = Self.built { return b }
        let lm = try NPUModelTests.model()
        let m = try lm.npuCompiler().lower(Self.entry, ForwardShape(seqLen: 8))
        let bytes = try ArtifactBuilder.build(module: m, entry: Self.entry, gguf: lm.gguf, tokenizer: lm.tokenizer, config: lm.config,
                                              settings: ["seq_len": .int(8)])
        Self.built = (m, bytes)
        return (m, bytes)
    }

    let prompts = [[1, 504, 3458, 282, 4649, 314], [2, 9, 3017, 10, 85, 2], [28, 7042]]

    func testArtifactRunsBitIdenticallyToTheInMemoryModuleAndPrintsTheSameIR() throws {
        let (m, bytes) = try artifact()
        let path = TestPaths.scratch(self).appendingPathComponent("m.zo").path
        try writeAtomically(Data(bytes), to: path, inputs: [])
        let model = try ArtifactModel(path: path)
        XCTAssertEqual(IRPrinter.print(model.artifact.module), IRPrinter.print(m))
        XCTAssertEqual(model.artifact.module, m)
        let lm = try NPUModelTests.model()
        let inMemory = try NPUForward(interpreter: Interpreter(module: m), function: Self.entry, embeddings: EmbeddingTable(gguf: lm.gguf), padID: 2)
        for ids in prompts {
            let a = try model.logits(ids), b = try inMemory.logits(ids)
            XCTAssertEqual(a.count, ids.count)
            XCTAssertTrue(zip(a, b).allSatisfy { $0.map(\.bitPattern) == $1.map(\.bitPattern) }, "logits differ for \(ids)")
        }
        // The artifact's tokenizer is the model's.
        let text = "Hello, world! The year 2024 <|im_start|>user"
        XCTAssertEqual(model.tokenizer.encode(text), lm.tokenizer.encode(text))
        XCTAssertEqual(model.chatPrompt("hi"), lm.chatPrompt("hi"))
        // Int8 weights are used in place from the mapping.
        let w = try XCTUnwrap(m.constants.first { $0.type.dtype == .i8 })
        guard case .data(.i8View)? = model.artifact.module.constantData[w.name] else { return XCTFail("\(w.name) was copied") }
        // So are their int16 block scales and offsets.
        let scales = try XCTUnwrap(m.constants.first { $0.type.dtype == .i16 && $0.name.hasSuffix(".scale") })
        guard case .data(.i16View)? = model.artifact.module.constantData[scales.name] else { return XCTFail("\(scales.name) was copied") }
    }

    func testSameInputsGiveAByteIdenticalArtifact() throws {
        let (m, bytes) = try artifact()
        let lm = try NPUModelTests.model()
        let again = try ArtifactBuilder.build(module: m, entry: Self.entry, gguf: lm.gguf, tokenizer: lm.tokenizer, config: lm.config,
                                              settings: ["seq_len": .int(8)])
        XCTAssertEqual(again, bytes)
    }

    /// Corruptions of the real artifact: each load fails with a typed error or gives identical logits.
    func testCorruptedArtifactsFailWithTypedErrors() throws {
        var bytes = try artifact().bytes
        let reference = try bytes.withUnsafeBytes { try ArtifactModel(Artifact(bytes: $0, owner: self, path: "ok.zo")).logits(prompts[0]) }
        let manifestLength = bytes.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self))) }
        let dataStart = (32 + manifestLength + 63) / 64 * 64
        var rng = SplitMix64(seed: 42)
        var outcomes: [String: Int] = [:]

        /// Loads (and runs, when it loads) the bytes; records the outcome.
        func load(_ b: UnsafeRawBufferPointer, label: String, verify: Bool = true) {
            do {
                let logits = try ArtifactModel(Artifact(bytes: b, owner: self, path: "mutated.zo", verifyChecksums: verify)).logits(prompts[0])
                XCTAssertEqual(logits.map { $0.map(\.bitPattern) }, reference.map { $0.map(\.bitPattern) }, "\(label): loaded but the logits differ")
                outcomes["\(label): loaded, identical logits", default: 0] += 1
            } catch let e as ArtifactError {
                outcomes["\(label): \(kind(e))", default: 0] += 1
            } catch {
                XCTFail("\(label): untyped error \(error)")
            }
        }

        for _ in 0..<1000 {
            let cut = Int(rng.next() % UInt64(bytes.count))
            bytes.withUnsafeBytes { load(UnsafeRawBufferPointer(rebasing: $0[0..<cut]), label: "truncation") }
        }
        for i in 0..<1000 {
            // One in five lands in the 32-byte header, the rest anywhere before the first segment.
            let at = Int(rng.next() % UInt64(i % 5 == 0 ? 32 : dataStart)), old = bytes[at]
            bytes[at] ^= UInt8(1 << (rng.next() % 8)) | UInt8(truncatingIfNeeded: rng.next() % 2 == 0 ? 0 : rng.next())
            if bytes[at] == old { bytes[at] ^= 0xFF }
            bytes.withUnsafeBytes { load($0, label: at < 32 ? "header flip" : at < 32 + manifestLength ? "manifest flip" : "padding flip") }
            bytes[at] = old
        }
        // A wrong checksum: one flipped weight byte is caught, naming its tensor.
        let at = dataStart + 64 * 1000 + 5
        bytes[at] ^= 0x10
        try bytes.withUnsafeBytes { b in
            XCTAssertThrowsError(try Artifact(bytes: b, owner: self, path: "m.zo")) { e in
                guard case .tensorChecksum(_, let tensor, _, _)? = e as? ArtifactError else { return XCTFail("\(e)") }
                XCTAssertFalse(tensor.isEmpty)
            }
            load(b, label: "weight flip")
        }
        bytes[at] ^= 0x10
        for (k, v) in outcomes.sorted(by: { $0.key < $1.key }) { print("artifact corruption: \(k): \(v)") }
        XCTAssertEqual(outcomes.filter { $0.key.hasPrefix("truncation") }.values.reduce(0, +), 1000)
        XCTAssertEqual(outcomes.filter { $0.key.contains(" flip") && !$0.key.hasPrefix("weight") }.values.reduce(0, +), 1000)
        XCTAssertNil(outcomes.keys.first { $0.hasPrefix("manifest flip: loaded") || $0.hasPrefix("header flip: loaded") })
        XCTAssertEqual(outcomes["weight flip: tensor checksum"], 1)
    }

    /// Manifest flips with the checksums made consistent again (a crafted file): the decoder and
    /// verifier alone must turn each into a typed error or a loadable module; none may crash.
    func testCraftedManifestsNeverCrashTheLoader() throws {
        var bytes = try artifact().bytes
        let manifestLength = bytes.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self))) }
        var rng = SplitMix64(seed: 7)
        var loaded = 0, refused: [String: Int] = [:]
        for _ in 0..<300 {
            let at = 32 + Int(rng.next() % UInt64(manifestLength)), old = bytes[at]
            bytes[at] = UInt8(truncatingIfNeeded: rng.next())
            resealManifest(&bytes, manifestLength)
            do {
                let a = try bytes.withUnsafeBytes { try Artifact(bytes: $0, owner: self, path: "crafted.zo", verifyChecksums: false) }
                _ = try ArtifactModel(a)
                loaded += 1
            } catch let e as ArtifactError {
                refused[kind(e), default: 0] += 1
            } catch let e as RuntimeError {
                refused["runtime: \(e)".prefix(60).description, default: 0] += 1
            } catch {
                refused["other typed: \(type(of: error))", default: 0] += 1
            }
            bytes[at] = old
        }
        resealManifest(&bytes, manifestLength)
        print("crafted manifests: \(loaded) loaded, refused: \(refused.sorted { $0.key < $1.key })")
        XCTAssertEqual(loaded + refused.values.reduce(0, +), 300)
    }

    func resealManifest(_ bytes: inout [UInt8], _ length: Int) {
        let crc = CRC32.checksum(Array(bytes[32..<(32 + length)]))
        withUnsafeBytes(of: crc.littleEndian) { bytes.replaceSubrange(24..<28, with: $0) }
        let hcrc = CRC32.checksum(Array(bytes[0..<28]))
        withUnsafeBytes(of: hcrc.littleEndian) { bytes.replaceSubrange(28..<32, with: $0) }
    }

    func kind(_ e: ArtifactError) -> String {
        switch e {
        case .truncated: return "truncated"
        case .badMagic: return "bad magic"
        case .headerChecksum: return "header checksum"
        case .unsupportedVersion: return "unsupported version"
        case .manifestChecksum: return "manifest checksum"
        case .manifestDecode: return "manifest decode"
        case .invalidField: return "invalid field"
        case .invalidTensor: return "invalid tensor"
        case .tensorChecksum: return "tensor checksum"
        case .invalidModule: return "invalid module"
        case .encode: return "encode"
        }
    }

    func testCRC32AndSHA256MatchKnownVectors() {
        XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(CRC32.checksum([UInt8]()), 0)
        let abc = Array("abc".utf8)
        XCTAssertEqual(abc.withUnsafeBytes { SHA256.hex($0) }, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = [UInt8](repeating: 0x61, count: 1_000_000)
        XCTAssertEqual(long.withUnsafeBytes { SHA256.hex($0) }, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // Streaming in odd pieces gives the one-shot digest.
        var s = SHA256()
        long.withUnsafeBytes { b in for i in stride(from: 0, to: b.count, by: 777) { s.update(UnsafeRawBufferPointer(rebasing: b[i..<min(i + 777, b.count)])) } }
        XCTAssertEqual(s.finish().map { String(format: "%02x", $0) }.joined(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}
