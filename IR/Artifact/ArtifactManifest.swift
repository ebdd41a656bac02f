/// What a .zo artifact's manifest says, as Swift values (IR/schema/zo.proto is its wire form; the
/// codec converts, and nothing of protobuf-c is visible past it).
public struct ArtifactManifest: Equatable, Sendable {
    public var producer: String
    public var provenance: ArtifactProvenance
    public var tokenizer: TokenizerSpec
    /// Functions and attributes; its constants are the non-host tensors (their data is in segments).
    public var module: Module
    /// Module constants and host tensors, in segment order.
    public var tensors: [TensorDescriptor]

    public init(producer: String, provenance: ArtifactProvenance, tokenizer: TokenizerSpec, module: Module, tensors: [TensorDescriptor]) {
        self.producer = producer; self.provenance = provenance; self.tokenizer = tokenizer
        self.module = module; self.tensors = tensors
    }

    public func tensor(_ name: String) -> TensorDescriptor? { tensors.first { $0.name == name } }
}

/// Where one tensor's bytes are in the file.
public struct TensorDescriptor: Equatable, Sendable {
    public var name: String
    /// The IR type; for a host tensor, the logical f32 shape its block encoding decodes to.
    public var type: TensorType
    /// Offset from the start of the data section (the first 64-byte boundary after the manifest).
    public var offset: Int
    public var length: Int
    /// CRC-32 (zlib's) of the segment.
    public var crc32: UInt32
    /// Used by the host (not a module constant), e.g. the embedding table.
    public var host: Bool
    /// The ggml block encoding of a host tensor (GGMLType raw value); 0 for plain IR dtypes.
    public var ggmlType: UInt32

    public init(name: String, type: TensorType, offset: Int = 0, length: Int = 0, crc32: UInt32 = 0, host: Bool = false, ggmlType: UInt32 = 0) {
        self.name = name; self.type = type; self.offset = offset; self.length = length; self.crc32 = crc32
        self.host = host; self.ggmlType = ggmlType
    }
}

/// The source model the artifact was compiled from, and how.
public struct ArtifactProvenance: Equatable, Sendable {
    public var fileName: String
    public var fileSize: UInt64
    public var sha256: String
    public var config: SourceModelConfig
    /// Compilation settings (pipeline, calibration rule, static shapes), by name.
    public var settings: [String: Attribute]

    public init(fileName: String, fileSize: UInt64, sha256: String, config: SourceModelConfig, settings: [String: Attribute] = [:]) {
        self.fileName = fileName; self.fileSize = fileSize; self.sha256 = sha256; self.config = config; self.settings = settings
    }
}

/// The source model's hyper-parameters (mirrors ZOModelIO's ModelConfig, which IR cannot import).
public struct SourceModelConfig: Equatable, Sendable {
    public var arch: String
    public var layers, hidden, ffn, heads, kvHeads, headDim, vocab, contextLength: Int
    public var ropeBase, rmsEps: Double
    public var tiedEmbeddings: Bool

    public init(arch: String, layers: Int, hidden: Int, ffn: Int, heads: Int, kvHeads: Int, headDim: Int, vocab: Int,
                contextLength: Int, ropeBase: Double, rmsEps: Double, tiedEmbeddings: Bool) {
        self.arch = arch; self.layers = layers; self.hidden = hidden; self.ffn = ffn; self.heads = heads; self.kvHeads = kvHeads
        self.headDim = headDim; self.vocab = vocab; self.contextLength = contextLength; self.ropeBase = ropeBase
        self.rmsEps = rmsEps; self.tiedEmbeddings = tiedEmbeddings
    }
}

/// A byte-level BPE tokenizer's data, so an artifact tokenizes without its source model.
public struct TokenizerSpec: Equatable, Sendable {
    public var model: String
    public var preTokenizer: String
    public var tokens: [String]
    public var tokenTypes: [Int]
    public var merges: [String]
    public var bosID: Int?
    public var eosID: Int?
    public var unknownID: Int?
    public var chatTemplate: String

    public init(model: String, preTokenizer: String, tokens: [String], tokenTypes: [Int], merges: [String],
                bosID: Int?, eosID: Int?, unknownID: Int?, chatTemplate: String) {
        self.model = model; self.preTokenizer = preTokenizer; self.tokens = tokens; self.tokenTypes = tokenTypes
        self.merges = merges; self.bosID = bosID; self.eosID = eosID; self.unknownID = unknownID; self.chatTemplate = chatTemplate
    }
}

/// Errors of reading a .zo file: each names the file and the field, tensor or offset at fault.
public enum ArtifactError: Error, CustomStringConvertible, Equatable {
    case truncated(path: String, field: String, needed: Int, available: Int)
    case badMagic(path: String)
    case headerChecksum(path: String)
    case unsupportedVersion(path: String, found: UInt32, supported: UInt32)
    case manifestChecksum(path: String, expected: UInt32, found: UInt32)
    case manifestDecode(path: String, reason: String)
    case invalidField(path: String, field: String, reason: String)
    case invalidTensor(path: String, tensor: String, reason: String)
    case tensorChecksum(path: String, tensor: String, expected: UInt32, found: UInt32)
    case invalidModule(path: String, diagnostics: [String])
    case encode(reason: String)

    public var description: String {
        switch self {
        case let .truncated(p, f, n, a): return "\(p): truncated: \(f) needs \(n) bytes, the file has \(a)"
        case let .badMagic(p): return "\(p): not a .zo artifact (bad magic bytes at offset 0)"
        case let .headerChecksum(p): return "\(p): header checksum mismatch (bytes 0..<32 are corrupt)"
        case let .unsupportedVersion(p, f, s): return "\(p): format version \(f) is not supported (this build reads version \(s))"
        case let .manifestChecksum(p, e, f):
            return "\(p): manifest checksum mismatch (header says \(hex(e)), the manifest bytes give \(hex(f)))"
        case let .manifestDecode(p, r): return "\(p): manifest: \(r)"
        case let .invalidField(p, f, r): return "\(p): manifest field \(f): \(r)"
        case let .invalidTensor(p, t, r): return "\(p): tensor '\(t)': \(r)"
        case let .tensorChecksum(p, t, e, f):
            return "\(p): tensor '\(t)': checksum mismatch (manifest says \(hex(e)), the segment gives \(hex(f))); the file is corrupt"
        case let .invalidModule(p, d): return "\(p): the module does not verify:\n" + d.prefix(20).joined(separator: "\n")
        case let .encode(r): return "cannot write the artifact: \(r)"
        }
    }
}

func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16, uppercase: false) }
