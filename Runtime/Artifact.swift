import Foundation
import ZOIR
import ZOModelIO

/// A .zo artifact mapped into memory and validated: header, manifest, every descriptor, the
/// segments' checksums (unless skipped) and the IR verifier. Module constants are bound to their
/// segments: int8 weights and int16 block scales are used in place from the mapping; the small rest
/// is copied on first use.
public final class Artifact {
    public let path: String
    /// The whole file, and what keeps it mapped.
    public let bytes: UnsafeRawBufferPointer
    let owner: AnyObject
    public let manifest: ArtifactManifest
    /// The manifest's module with its constants' data bound to the file.
    public let module: Module
    /// Where the data section (the segments) begins in the file.
    public let dataStart: Int

    public convenience init(path: String, verifyChecksums: Bool = true) throws {
        let file: MappedFile
        do { file = try MappedFile(path: path) } catch let e as ModelIOError { throw RuntimeError.badRequest(e.description) }
        // Checking a segment reads all its pages: each is dropped once checked, so only what the
        // run touches stays resident (a plan's host embedding table is most of it untouched).
        try self.init(bytes: file.bytes, owner: file, path: path, verifyChecksums: verifyChecksums, checked: file.releasePages)
        // The same for the manifest, decoded into the module now.
        file.releasePages()
    }

    /// Drops the mapping's pages from resident memory (a file-backed artifact's; they are re-read
    /// on next touch): a plan does this as each edit starts, so earlier edits' pages do not pile up.
    public func releasePages() { (owner as? MappedFile)?.releasePages() }

    /// An artifact in memory that `owner` keeps alive; `path` names it in errors. `checked` sees
    /// each segment's byte range once its checksum is verified.
    public init(bytes: UnsafeRawBufferPointer, owner: AnyObject, path: String, verifyChecksums: Bool = true,
                checked: (Range<Int>) -> Void = { _ in }) throws {
        self.path = path
        self.bytes = bytes
        self.owner = owner
        (manifest, dataStart) = try ArtifactFormat.decode(bytes, path: path)
        if verifyChecksums { try ArtifactFormat.verifySegments(bytes, manifest, dataStart: dataStart, path: path, checked: checked) }
        var m = manifest.module
        for t in manifest.tensors where !t.host { m.constantData[t.name] = Self.constant(t, bytes: bytes, at: dataStart, owner: owner) }
        let diagnostics = Verifier.diagnose(m, profile: nil)
        guard diagnostics.isEmpty else { throw ArtifactError.invalidModule(path: path, diagnostics: diagnostics.map(\.description)) }
        module = m
    }

    /// A segment's bytes, in place.
    public func bytes(_ t: TensorDescriptor) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[(dataStart + t.offset)..<(dataStart + t.offset + t.length)])
    }

    /// i8 and i16 data (weights, block scales) as views of the mapping (the format is aligned and
    /// little-endian, as the host); other dtypes copied (small ones now, so they print inline).
    static func constant(_ t: TensorDescriptor, bytes: UnsafeRawBufferPointer, at dataStart: Int, owner: AnyObject) -> ConstantSource {
        let raw = UnsafeRawBufferPointer(rebasing: bytes[(dataStart + t.offset)..<(dataStart + t.offset + t.length)])
        let n = t.type.elementCount
        func copy<T: FixedWidthInteger>(_: T.Type) -> [T] { (0..<n).map { T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * T.bitWidth / 8, as: T.self)) } }
        let read: () -> TensorData = {
            // A copy leaves the mapping's pages resident for nothing: they go once copied.
            defer { if ![.i8, .i16].contains(t.type.dtype) { (owner as? MappedFile)?.releasePages(of: raw) } }
            switch t.type.dtype {
            case .f32: return .f32(copy(UInt32.self).map(Float.init(bitPattern:)))
            case .i8: return .i8View(Int8View(raw.bindMemory(to: Int8.self), owner: owner))
            case .i16: return .i16View(Int16View(raw.bindMemory(to: Int16.self), owner: owner))
            case .i32: return .i32(copy(Int32.self))
            case .i64: return .i64(copy(Int64.self))
            }
        }
        return [.i8, .i16].contains(t.type.dtype) || n <= IRPrinter.inlineLimit ? .data(read()) : .lazy { read() }
    }

    /// The source model's hyper-parameters.
    public func config() throws -> ModelConfig {
        let c = manifest.provenance.config
        guard let arch = ModelConfig.Arch(rawValue: c.arch) else {
            throw ArtifactError.invalidField(path: path, field: "provenance.config.arch", reason: "'\(c.arch)' is not a supported architecture")
        }
        return ModelConfig(arch: arch, layers: c.layers, hidden: c.hidden, ffn: c.ffn, heads: c.heads, kvHeads: c.kvHeads,
                           headDim: c.headDim, vocab: c.vocab, contextLength: c.contextLength, ropeBase: c.ropeBase,
                           rmsEps: c.rmsEps, tiedEmbeddings: c.tiedEmbeddings)
    }

    /// The tokenizer stored in the manifest.
    public func tokenizer() throws -> Tokenizer {
        let s = manifest.tokenizer
        guard s.model == "gpt2" else { throw ArtifactError.invalidField(path: path, field: "tokenizer.model", reason: "'\(s.model)' is not supported (gpt2)") }
        guard let pre = PreTokenizer(ggufName: s.preTokenizer) else {
            throw ArtifactError.invalidField(path: path, field: "tokenizer.pre_tokenizer", reason: "'\(s.preTokenizer)' is not supported")
        }
        for (field, id) in [("bos_id", s.bosID), ("eos_id", s.eosID), ("unknown_id", s.unknownID)] {
            if let i = id, i >= s.tokens.count {
                throw ArtifactError.invalidField(path: path, field: "tokenizer.\(field)", reason: "\(i) is outside the \(s.tokens.count) tokens")
            }
        }
        do {
            return try Tokenizer(tokens: s.tokens, tokenTypes: s.tokenTypes, merges: s.merges, preTokenizer: pre,
                                 bosID: s.bosID, eosID: s.eosID, unknownID: s.unknownID)
        } catch {
            throw ArtifactError.invalidField(path: path, field: "tokenizer", reason: "\(error)")
        }
    }

    /// The host embedding table (the `token_embd.weight` host tensor in its ggml encoding).
    public func embeddings() throws -> EmbeddingTable {
        let name = "token_embd.weight"
        guard let t = manifest.tensor(name), t.host else { throw ArtifactError.invalidTensor(path: path, tensor: name, reason: "missing (the host embedding table)") }
        guard let type = GGMLType(rawValue: t.ggmlType), type.canDequantize else {
            throw ArtifactError.invalidTensor(path: path, tensor: name, reason: "ggml type \(t.ggmlType) cannot be decoded")
        }
        guard t.type.rank == 2, let n = EmbeddingTable.byteCount(type, rows: t.type.shape[0], width: t.type.shape[1]), n == t.length else {
            throw ArtifactError.invalidTensor(path: path, tensor: name, reason: "length \(t.length) does not match \(type) × \(t.type.shape)")
        }
        return EmbeddingTable(bytes: bytes(t), type: type, rows: t.type.shape[0], width: t.type.shape[1], owner: owner, name: "\(path): \(name)")
    }
}

/// A language model run from a .zo artifact: its tokenizer, host embeddings and npu forward.
public final class ArtifactModel: CausalLM {
    public let artifact: Artifact
    public let tokenizer: Tokenizer
    public let config: ModelConfig
    public let forward: NPUForward

    /// The artifact's forward entry is named by its `entry` setting.
    public convenience init(path: String, verifyChecksums: Bool = true) throws {
        try self.init(Artifact(path: path, verifyChecksums: verifyChecksums))
    }

    public init(_ artifact: Artifact) throws {
        self.artifact = artifact
        let path = artifact.path
        tokenizer = try artifact.tokenizer()
        config = try artifact.config()
        guard case let .string(entry)? = artifact.manifest.provenance.settings["entry"] else {
            throw ArtifactError.invalidField(path: path, field: "provenance.settings.entry", reason: "missing (the forward function's name)")
        }
        forward = try NPUForward(interpreter: Interpreter(module: artifact.module), function: entry,
                                 embeddings: artifact.embeddings(), padID: tokenizer.eosID ?? 0)
    }

    public func logits(_ ids: [Int]) throws -> [[Float]] { try forward.logits(ids) }

    public func generate(_ prompt: [Int], maxTokens: Int, onToken: (Int) -> Void) throws -> [Int] {
        guard !prompt.isEmpty else { throw RuntimeError.badRequest("the prompt has no tokens") }
        guard maxTokens > 0 else { return [] }
        return try forward.generate(prompt, maxTokens: maxTokens, isStop: isStopToken, onToken: onToken)
    }

    public func chatPrompt(_ user: String) -> String {
        ChatFormat.prompt(user, template: artifact.manifest.tokenizer.chatTemplate)
    }
}
