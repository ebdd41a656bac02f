import Foundation
import ZOIR
import ZOModelIO

/// Packs a lowered module into a .zo artifact: its constants as segments, the source model's
/// embedding table as a host segment in its own ggml encoding, the tokenizer and provenance.
public enum ArtifactBuilder {
    public static let producer = "zoc (zo 0.1)"

    /// The file's bytes. `entry` names the forward function; `settings` records how it was made.
    /// `host`: further host tensors (f32), e.g. an edit plan's original down-projection;
    /// `hostBytes`: opaque host segments (i8 tensors of their length), e.g. a plan's per-edit functions.
    public static func build(module: Module, entry: String, gguf: GGUFFile, tokenizer: Tokenizer, config: ModelConfig,
                             settings: [String: Attribute], host: [(name: String, shape: [Int], data: [Float])] = [],
                             hostBytes: [(name: String, bytes: [UInt8])] = []) throws -> [UInt8] {
        guard module.function(entry) != nil else { throw ArtifactError.encode(reason: "the module has no function @\(entry)") }
        var tensors: [TensorDescriptor] = []
        var segments: [[UInt8]] = []
        for c in module.constants {
            guard let src = module.constantData[c.name] else { throw ArtifactError.encode(reason: "constant @\(c.name) has no data") }
            let d: TensorData
            switch src {
            case let .data(x): d = x
            case let .lazy(make): d = try make()
            }
            guard d.dtype == c.type.dtype, d.count == c.type.elementCount else {
                throw ArtifactError.encode(reason: "constant @\(c.name): data \(d.dtype.rawValue) × \(d.count) does not match \(c.type)")
            }
            tensors.append(TensorDescriptor(name: c.name, type: c.type))
            segments.append(littleEndianBytes(d))
        }
        let embed = "token_embd.weight"
        guard let e = gguf.tensorInfo(embed), e.dims.count == 2 else { throw ModelIOError.missingTensor(path: gguf.path, name: embed) }
        tensors.append(TensorDescriptor(name: embed, type: .f32(e.shape), host: true, ggmlType: e.type.rawValue))
        segments.append(Array(gguf.tensorBytes(e)))
        for h in host {
            guard h.data.count == h.shape.reduce(1, *) else { throw ArtifactError.encode(reason: "host tensor \(h.name): \(h.data.count) values for \(h.shape)") }
            tensors.append(TensorDescriptor(name: h.name, type: .f32(h.shape), host: true))
            segments.append(littleEndianBytes(.f32(h.data)))
        }
        for h in hostBytes {
            tensors.append(TensorDescriptor(name: h.name, type: TensorType(.i8, [h.bytes.count]), host: true))
            segments.append(h.bytes)
        }

        var m = module
        m.constants = []
        m.constantData = [:]
        var s = settings
        s["entry"] = .string(entry)
        let provenance = ArtifactProvenance(
            fileName: URL(fileURLWithPath: gguf.path).lastPathComponent, fileSize: UInt64(gguf.file.bytes.count),
            sha256: SHA256.hex(gguf.file.bytes), config: sourceConfig(config), settings: s)
        let manifest = ArtifactManifest(producer: producer, provenance: provenance, tokenizer: try tokenizerSpec(tokenizer, gguf),
                                        module: m, tensors: tensors)
        return try ArtifactFormat.encode(manifest, segments: segments)
    }

    static func sourceConfig(_ c: ModelConfig) -> SourceModelConfig {
        SourceModelConfig(arch: c.arch.rawValue, layers: c.layers, hidden: c.hidden, ffn: c.ffn, heads: c.heads, kvHeads: c.kvHeads,
                          headDim: c.headDim, vocab: c.vocab, contextLength: c.contextLength, ropeBase: c.ropeBase,
                          rmsEps: c.rmsEps, tiedEmbeddings: c.tiedEmbeddings)
    }

    static func tokenizerSpec(_ t: Tokenizer, _ gguf: GGUFFile) throws -> TokenizerSpec {
        TokenizerSpec(model: "gpt2", preTokenizer: t.preTokenizer.rawValue, tokens: t.tokens, tokenTypes: t.tokenTypes, merges: t.merges,
                      bosID: t.bosID, eosID: t.eosID, unknownID: gguf.value("tokenizer.ggml.unknown_token_id")?.intValue,
                      chatTemplate: (try? gguf.string("tokenizer.chat_template")) ?? "")
    }

    /// Little-endian element bytes (zo targets little-endian hosts).
    static func littleEndianBytes(_ d: TensorData) -> [UInt8] {
        func bytes<T>(_ a: [T]) -> [UInt8] { a.withUnsafeBytes { Array($0) } }
        switch d {
        case let .f32(a): return bytes(a)
        case let .i8(a): return bytes(a)
        case let .i8View(v): return Array(UnsafeRawBufferPointer(v.buffer))
        case let .i16(a): return bytes(a)
        case let .i16View(v): return Array(UnsafeRawBufferPointer(v.buffer))
        case let .i32(a): return bytes(a)
        case let .i32View(v): return Array(UnsafeRawBufferPointer(v.buffer))
        case let .i64View(v): return Array(UnsafeRawBufferPointer(v.buffer))
        case let .i64(a): return bytes(a)
        }
    }
}

#if _endian(big)
#error("zo artifacts are little-endian; this host is big-endian")
#endif
