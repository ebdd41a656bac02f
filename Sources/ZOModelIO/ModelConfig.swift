/// The hyper-parameters of a Llama-family model, read from GGUF metadata.
public struct ModelConfig: Equatable, Sendable {
    public enum Arch: String, Sendable { case llama, qwen2 }
    public var arch: Arch
    public var layers: Int
    public var hidden: Int
    public var ffn: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var vocab: Int
    public var contextLength: Int
    public var ropeBase: Double
    public var rmsEps: Double
    /// true when there is no separate `output.weight` (the head reuses `token_embd.weight`).
    public var tiedEmbeddings: Bool

    public init(arch: Arch, layers: Int, hidden: Int, ffn: Int, heads: Int, kvHeads: Int, headDim: Int,
                vocab: Int, contextLength: Int, ropeBase: Double, rmsEps: Double, tiedEmbeddings: Bool) {
        self.arch = arch; self.layers = layers; self.hidden = hidden; self.ffn = ffn; self.heads = heads
        self.kvHeads = kvHeads; self.headDim = headDim; self.vocab = vocab; self.contextLength = contextLength
        self.ropeBase = ropeBase; self.rmsEps = rmsEps; self.tiedEmbeddings = tiedEmbeddings
    }

    /// Whether RoPE rotates adjacent pairs (llama GGUFs, whose q/k rows were permuted at conversion)
    /// or the two halves of each head (NeoX style: qwen2).
    public var ropeNeox: Bool { arch == .qwen2 }
    /// q/k/v projections carry biases (qwen2).
    public var qkvBias: Bool { arch == .qwen2 }

    public init(gguf: GGUFFile) throws {
        let archName = try gguf.string("general.architecture")
        guard let a = Arch(rawValue: archName) else {
            throw ModelIOError.invalid(path: gguf.path, offset: 0, field: "general.architecture",
                                       reason: "'\(archName)' is not a supported architecture (llama, qwen2)")
        }
        let p = archName + "."
        arch = a
        layers = try gguf.int(p + "block_count")
        hidden = try gguf.int(p + "embedding_length")
        ffn = try gguf.int(p + "feed_forward_length")
        heads = try gguf.int(p + "attention.head_count")
        kvHeads = gguf.value(p + "attention.head_count_kv") == nil ? heads : try gguf.int(p + "attention.head_count_kv")
        contextLength = try gguf.int(p + "context_length")
        ropeBase = gguf.value(p + "rope.freq_base") == nil ? 10000 : try gguf.double(p + "rope.freq_base")
        rmsEps = try gguf.double(p + "attention.layer_norm_rms_epsilon")
        guard heads > 0, kvHeads > 0, heads % kvHeads == 0, hidden % heads == 0, layers > 0, ffn > 0 else {
            throw ModelIOError.invalid(path: gguf.path, offset: 0, field: p + "attention",
                                       reason: "inconsistent sizes: hidden \(hidden), heads \(heads), kv heads \(kvHeads)")
        }
        headDim = hidden / heads
        guard let emb = gguf.tensorInfo("token_embd.weight") else { throw ModelIOError.missingTensor(path: gguf.path, name: "token_embd.weight") }
        vocab = emb.dims.count == 2 ? emb.dims[1] : 0
        tiedEmbeddings = gguf.tensorInfo("output.weight") == nil
        if let rd = gguf.value(p + "rope.dimension_count")?.intValue, rd != headDim {
            throw ModelIOError.invalid(path: gguf.path, offset: 0, field: p + "rope.dimension_count",
                                       reason: "partial rotary (\(rd) of \(headDim)) is not supported")
        }
    }
}
