import Foundation
import ZOIR
import ZOModelIO

/// What to build: the static batch and number of new tokens, and the KV-cache capacity of the
/// past (0: a plain forward pass whose RoPE tables and causal mask are compile-time constants).
public struct ForwardShape: Hashable, Sendable {
    public var batch: Int
    public var seqLen: Int
    public var cacheLen: Int
    /// Also return each layer's new keys and values ("k.L", "v.L") so a host can fill a cache.
    public var emitCache: Bool

    /// Editing: adds parameter "delta" [B, T, D] to the output of this layer's MLP (the host puts
    /// δ at each prompt's subject row and zeros elsewhere).
    public var injectLayer: Int?
    /// Editing: logits only at these rows (the output head is the costliest op per row).
    public var scored: ScoredRows?
    /// Float probes for editing: also return layer L's ffn_down input ("ffn_key") and output ("ffn_value").
    public var probeLayer: Int?
    /// Editing: an additive mask [B, T, C+T] fixed at compile time (left-padded prompts). The new
    /// rows sit at positions C..<C+T, the RoPE tables and the mask are constants, and with C > 0
    /// the cache's scores and values are separate matmuls (at "blk.L.cache"), so every op of the
    /// uncached graph keeps its location and ordinal, hence its calibrated range, and the cached
    /// graph computes the same integers.
    public var padMask: [Float]?
    /// Editing, with a cache (C > 0, padMask): the cache parameters hold this many sequences (one
    /// copy's prompts), repeated for each copy of the batch (copy-major) inside the graph, next to
    /// the matmuls that read them: the host binds a cache once, not once per copy.
    public var cacheBatch: Int?
    /// Editing, a graph that starts at the subject (startLayer): each prompt's real rows, the rest
    /// of its T rows right padding. Row-wise ops then run on the real rows only (RowPacking).
    public var packing: RowPacking?

    /// Whether the function returns logits.
    public var logits: Bool

    /// Decoding on the npu (cacheLen > 0, no padMask): the cache's scores and values are separate
    /// matmuls at "blk.L.cache", as in editing graphs, so every op keeps the location and ordinal
    /// it has in the calibration graph (concatenating the cache would shift them, and the ranges
    /// with them). RoPE tables and the mask stay parameters: one function serves every position.
    public var separateCache: Bool

    /// Editing: the function starts inside this layer, after its attention: it takes the residual
    /// stream there ("attn_residual" [B, T, D]) and the layer's MLP output ("ffn_out" [B, T, D])
    /// instead of embeddings, and runs only the layers after it (caches of those layers only).
    public var startLayer: Int?
    /// Editing (a prefix graph): also return this layer's "attn_residual" and "ffn_out".
    public var exportLayer: Int?
    /// Editing: the loss terms reduced after the scored rows' logits (see LossHead).
    public var loss: LossHead?

    /// A decode function (cacheLen > 0 without padMask) always returns its new keys and values.
    public init(batch: Int = 1, seqLen: Int, cacheLen: Int = 0, emitCache: Bool = false,
                injectLayer: Int? = nil, scored: ScoredRows? = nil, probeLayer: Int? = nil, padMask: [Float]? = nil, logits: Bool = true,
                startLayer: Int? = nil, exportLayer: Int? = nil, loss: LossHead? = nil, separateCache: Bool = false, cacheBatch: Int? = nil,
                packing: RowPacking? = nil) {
        self.batch = batch; self.seqLen = seqLen; self.cacheLen = cacheLen; self.emitCache = emitCache || (cacheLen > 0 && padMask == nil)
        self.injectLayer = injectLayer; self.scored = scored; self.probeLayer = probeLayer; self.padMask = padMask; self.logits = logits
        self.startLayer = startLayer; self.exportLayer = exportLayer; self.loss = loss
        self.separateCache = separateCache || padMask != nil
        self.cacheBatch = cacheBatch
        self.packing = packing.flatMap { $0.isTrivial ? nil : $0 }
    }

    /// The first layer the function runs whole.
    var firstWholeLayer: Int { startLayer.map { $0 + 1 } ?? 0 }
}

/// The rows of an editing graph's prompts that hold tokens: prompt p's first `lengths[p]` of its
/// `seqLen` rows (the rest is right padding, which no real row attends to: the mask is causal).
/// Packed, a [copies · P, T, W] tensor is [copies, Σ lengths, W]: per copy, each prompt's real
/// rows one after another. Row-wise ops (norms, projections, the MLP, residual adds) run packed;
/// the attention between them runs on the padded layout, each prompt's padding filled with
/// copies of its last real row (what the padding rows compute is never read). The KL prompt
/// ("{subject} is a") has 3 rows where the rewrite prompts have 4–13 (record 8: 8 of 44 a copy).
public struct RowPacking: Hashable, Sendable {
    public var copies: Int
    public var lengths: [Int]
    public var seqLen: Int
    public init(copies: Int, lengths: [Int], seqLen: Int) {
        precondition(lengths.allSatisfy { (1...seqLen).contains($0) }, "each prompt holds 1...seqLen rows")
        self.copies = copies; self.lengths = lengths; self.seqLen = seqLen
    }
    var isTrivial: Bool { lengths.allSatisfy { $0 == seqLen } }
    /// Where prompt p's rows start in a packed copy.
    var starts: [Int] { lengths.indices.map { lengths[..<$0].reduce(0, +) } }
    /// The prompts one slice moves: a run of prompts that fill all T rows and the one after it.
    var runs: [ClosedRange<Int>] {
        var out: [ClosedRange<Int>] = [], p = 0
        while p < lengths.count {
            var q = p
            while q + 1 < lengths.count && lengths[q] == seqLen { q += 1 }
            out.append(p...q)
            p = q + 1
        }
        return out
    }
    /// The real rows of a run.
    func rows(_ run: ClosedRange<Int>) -> Int { (run.count - 1) * seqLen + lengths[run.upperBound] }
}

/// The rows whose logits an editing graph returns. The batch is `copies` × prompts, copy-major
/// (element c·P + p is copy c of prompt p); prompt p contributes its rows `rows[p]`, and the
/// result "logits" is [copies, Σ rows, V].
public struct ScoredRows: Hashable, Sendable {
    public var copies: Int
    public var rows: [Range<Int>]
    public init(copies: Int, rows: [Range<Int>]) { self.copies = copies; self.rows = rows }
    public var count: Int { rows.map(\.count).reduce(0, +) }
}

/// The edit loss's terms, reduced inside an editing graph so a step returns a few numbers per copy
/// instead of [copies, N, V] logits. Over the scored rows' logits l [copies, N, V]:
///   "loss.max"     m = max_v l                                   [copies, N, 1]
///   "loss.exp_sum" Z = Σ_v exp((l − m)/2)²                        [copies, N, 1]
///   "loss.target"  l at each target token, row by row            [copies, rows with a target, 1]
///   "loss.kl_sum"  A = Σ_v e·(l − m − log p₀), e = exp(l − m)      [copies, 1, 1] at the KL row
///   "loss.kl_exp_sum" Z₁ = Σ_v e                                  [copies, 1, 1]
/// (computed one copy at a time, so the exp terms of one copy exist at a time).
/// The host finishes with a few logs: log p(t) = l_t − m − log Z, KL = A / Z₁ − log Z₁.
/// Why the square: an int16 table of exp reaches only 10.4 nats below the top (e^−10.4 = 1/32767),
/// and the tokens beyond hold 0.2–1% of the mass on this model (NLL up to 0.01 nats low); the square of
/// a table of exp(x/2) reaches 20.8 nats. The KL term uses the plain table: it is the KL of p
/// restricted to tokens within 10.4 nats of the top (renormalised) from p₀, exact in its terms
/// (log p₀ in A cancels the truncation to first order) and a regulariser, while the squared weights'
/// products with l − m − log p₀ would not fit int64. All results stay on their integer grids.
public struct LossHead: Hashable, Sendable {
    /// Per scored row (ScoredRows order), the token whose logit is returned, or nil.
    public var targets: [Int?]
    /// The KL row among the scored rows and log p₀ there (the unedited model's log-probabilities).
    public var kl: (row: Int, base: [Float])? {
        get { klRow.map { ($0, klBase) } }
        set { klRow = newValue?.row; klBase = newValue?.base ?? [] }
    }
    var klRow: Int?
    var klBase: [Float] = []

    public init(targets: [Int?], kl: (row: Int, base: [Float])?) {
        self.targets = targets
        self.kl = kl
    }
}

/// Builds float-profile graphs of Llama-family models (llama, qwen2) from a GGUF:
/// RMSNorm, RoPE with the model's base, grouped-query attention, SwiGLU MLP, tied or separate
/// output head, q/k/v biases where the model has them. Embedding lookup stays on the host: a
/// function takes `embeddings` [B, T, D] and returns `logits` [B, T, V].
public final class LlamaImporter {
    public let gguf: GGUFFile
    public let config: ModelConfig
    public let builder: ModuleBuilder

    public init(gguf: GGUFFile) throws {
        self.gguf = gguf
        config = try ModelConfig(gguf: gguf)
        builder = ModuleBuilder(name: Self.moduleName(gguf), attributes: Self.configAttributes(config))
        try declareWeights()
    }

    static func moduleName(_ g: GGUFFile) -> String {
        let base = (try? g.string("general.basename")) ?? (try? g.string("general.name")) ?? "model"
        let size = (try? g.string("general.size_label")).map { "-" + $0 } ?? ""
        // A symbol-safe module name: other characters become "_".
        return (base + size).lowercased().map { isSymbolCharacter($0) ? $0 : "_" }.map(String.init).joined()
    }

    public static func configAttributes(_ c: ModelConfig) -> [String: Attribute] {
        [
            "arch": .string(c.arch.rawValue), "layers": .int(c.layers), "hidden": .int(c.hidden), "ffn": .int(c.ffn),
            "heads": .int(c.heads), "kv_heads": .int(c.kvHeads), "head_dim": .int(c.headDim), "vocab": .int(c.vocab),
            "rope_base": .float(c.ropeBase), "rms_eps": .float(c.rmsEps), "rope_mode": .string(c.ropeNeox ? "neox" : "norm"),
        ]
    }

    /// The names of the weights one block uses.
    static func blockWeights(_ l: Int, bias: Bool) -> [String] {
        var w = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
            .map { "blk.\(l).\($0).weight" }
        if bias { w += ["attn_q", "attn_k", "attn_v"].map { "blk.\(l).\($0).bias" } }
        return w
    }

    /// Declares every weight as an f32 constant backed lazily by the GGUF, with shapes checked.
    func declareWeights() throws {
        let c = config
        var expected: [(String, [Int])] = [("token_embd.weight", [c.vocab, c.hidden]), ("output_norm.weight", [c.hidden])]
        if !c.tiedEmbeddings { expected.append(("output.weight", [c.vocab, c.hidden])) }
        let kvDim = c.kvHeads * c.headDim
        for l in 0..<c.layers {
            let p = "blk.\(l)."
            expected += [
                (p + "attn_norm.weight", [c.hidden]), (p + "attn_q.weight", [c.hidden, c.hidden]),
                (p + "attn_k.weight", [kvDim, c.hidden]), (p + "attn_v.weight", [kvDim, c.hidden]),
                (p + "attn_output.weight", [c.hidden, c.hidden]), (p + "ffn_norm.weight", [c.hidden]),
                (p + "ffn_gate.weight", [c.ffn, c.hidden]), (p + "ffn_up.weight", [c.ffn, c.hidden]),
                (p + "ffn_down.weight", [c.hidden, c.ffn]),
            ]
            if c.qkvBias { expected += [(p + "attn_q.bias", [c.hidden]), (p + "attn_k.bias", [kvDim]), (p + "attn_v.bias", [kvDim])] }
        }
        for (name, shape) in expected {
            guard let info = gguf.tensorInfo(name) else { throw ModelIOError.missingTensor(path: gguf.path, name: name) }
            guard info.shape == shape else { throw ModelIOError.tensorShape(path: gguf.path, name: name, expected: shape, found: info.shape) }
            guard info.type.canDequantize else { throw ModelIOError.unsupportedTensorType(path: gguf.path, tensor: name, type: info.type.rawValue) }
            let g = gguf
            builder.declareConstant(name, .f32(shape), .lazy { .f32(try g.dequantize(info)) })
        }
    }

    public var module: Module { builder.module }

    /// Adds a forward function named `name` of the given shape and returns the module so far.
    @discardableResult
    public func addForward(_ name: String, _ shape: ForwardShape) throws -> Module {
        let c = config
        let f = FunctionBuilder(name, in: builder)
        let B = shape.batch, T = shape.seqLen, C = shape.cacheLen, S = C + T
        let x0 = shape.startLayer == nil ? f.param("embeddings", .f32([B, T, c.hidden])) : f.param("attn_residual", .f32([B, T, c.hidden]))
        let ffnOut = shape.startLayer == nil ? nil : f.param("ffn_out", .f32([B, T, c.hidden]))
        let delta = shape.injectLayer.map { _ in f.param("delta", .f32([B, T, c.hidden])) }
        let cos: Value, sin: Value, mask: Value
        var caches: [Int: (Value, Value)] = [:]
        if let pm = shape.padMask {
            precondition(pm.count == B * T * S, "padMask must be [B, T, C+T]")
            let (ct, st) = RopeTables.make(positions: Array(C..<(C + T)), headDim: c.headDim, base: c.ropeBase)
            let tag = "\(f.function.name)"
            builder.declareConstant("rope.cos.\(tag)", .f32([T, c.headDim / 2]), .data(.f32(ct)))
            builder.declareConstant("rope.sin.\(tag)", .f32([T, c.headDim / 2]), .data(.f32(st)))
            builder.declareConstant("mask.\(tag)", .f32([B, 1, 1, T, S]), .data(.f32(pm)))
            if C > 0 {
                let cb = shape.cacheBatch ?? B
                precondition(cb > 0 && B % cb == 0, "cacheBatch must divide the batch")
                for l in shape.firstWholeLayer..<c.layers {
                    caches[l] = (f.param("k_cache.\(l)", .f32([cb, c.kvHeads, C, c.headDim])),
                                 f.param("v_cache.\(l)", .f32([cb, c.kvHeads, C, c.headDim])))
                }
            }
            cos = try f.constant("rope.cos.\(tag)")
            sin = try f.constant("rope.sin.\(tag)")
            mask = try f.constant("mask.\(tag)")
        } else if C == 0 {
            // Positions 0..<T: tables and the causal mask are constants of this shape.
            let (ct, st) = RopeTables.make(positions: Array(0..<T), headDim: c.headDim, base: c.ropeBase)
            builder.declareConstant("rope.cos.\(T)", .f32([T, c.headDim / 2]), .data(.f32(ct)))
            builder.declareConstant("rope.sin.\(T)", .f32([T, c.headDim / 2]), .data(.f32(st)))
            builder.declareConstant("mask.causal.\(T)", .f32([T, T]), .data(.f32(RopeTables.causalMask(T))))
            cos = try f.constant("rope.cos.\(T)")
            sin = try f.constant("rope.sin.\(T)")
            mask = try f.constant("mask.causal.\(T)")
        } else {
            cos = f.param("rope.cos", .f32([T, c.headDim / 2]))
            sin = f.param("rope.sin", .f32([T, c.headDim / 2]))
            mask = f.param("mask", .f32([T, S]))
            for l in 0..<c.layers {
                caches[l] = (f.param("k_cache.\(l)", .f32([B, c.kvHeads, C, c.headDim])),
                             f.param("v_cache.\(l)", .f32([B, c.kvHeads, C, c.headDim])))
            }
        }
        var h = x0
        var packedFFN = ffnOut, packedDelta = delta
        if let pk = shape.packing {
            precondition(shape.startLayer != nil && pk.copies * pk.lengths.count == B && pk.seqLen == T, "row packing is for step graphs [copies · P, T, …]")
            h = try pack(f, h, pk)
            packedFFN = try ffnOut.map { try pack(f, $0, pk) }
            packedDelta = try delta.map { try pack(f, $0, pk) }
        }
        var newKV: [Int: (Value, Value)] = [:]
        for l in (shape.startLayer ?? 0)..<c.layers {
            var m: Value
            if l == shape.startLayer, let given = packedFFN {
                m = given
            } else {
                f.loc = "blk.\(l).attn"
                let (attnOut, k, v) = try attention(f, layer: l, h, cos: cos, sin: sin, mask: mask, cache: C > 0 ? caches[l] : nil, B: B, T: T,
                                                    split: shape.separateCache, packing: shape.packing)
                h = try f.emit(.add, [h, attnOut])
                newKV[l] = (k, v)
                f.loc = "blk.\(l).ffn"
                m = try mlp(f, layer: l, h, probe: shape.probeLayer == l ? f : nil)
                if shape.exportLayer == l {
                    f.output("attn_residual", h); f.output("ffn_out", m)
                    // On their own (wide) grids: a step graph resumes from them exactly.
                    builder.setAttribute("wide_results.\(f.function.name)", .string("attn_residual,ffn_out"))
                }
            }
            if shape.injectLayer == l, let delta = packedDelta {
                // Its own location, so the calibrated ranges of the block's ops keep their keys.
                f.loc = "edit.inject"
                m = try f.emit(.add, [m, delta])
            }
            // A graph that starts here has only this add of the block: its own location too.
            f.loc = l == shape.startLayer ? "edit.resume" : "blk.\(l).ffn"
            h = try f.emit(.add, [h, m])
        }
        if let sc = shape.scored {
            f.loc = "edit.scored"
            h = try scoredRows(f, h, sc, T: T, packing: shape.packing)
        }
        if shape.logits || shape.loss != nil {
            f.loc = "head"
            let logits = try head(f, h)
            if shape.logits { f.output("logits", logits) }
            if let loss = shape.loss {
                f.loc = "edit.loss"
                try lossTerms(f, logits, loss)
            }
        }
        if shape.emitCache {
            for (l, kv) in newKV.sorted(by: { $0.key < $1.key }) { f.output("k.\(l)", kv.0); f.output("v.\(l)", kv.1) }
        }
        f.finish()
        return builder.module
    }

    func w(_ f: FunctionBuilder, _ name: String) throws -> Value { try f.constant(name) }

    /// x [copies · P, T, …, W] (any rows of width W) packed to [copies, Σ lengths, W] (RowPacking):
    /// slices of each run of prompts, joined. Its own location: the ops around keep their ordinals.
    func pack(_ f: FunctionBuilder, _ x: Value, _ pk: RowPacking) throws -> Value {
        let W = x.type.shape.last!, T = pk.seqLen, loc = f.loc
        f.loc = "edit.rows"
        defer { f.loc = loc }
        let grouped = try f.emit(.reshape, [x], ["shape": .ints([pk.copies, pk.lengths.count * T, W])])
        let parts = try pk.runs.map { run in
            try f.emit(.slice, [grouped], ["begin": .ints([0, run.lowerBound * T, 0]), "size": .ints([pk.copies, pk.rows(run), W])])
        }
        return parts.count == 1 ? parts[0] : try f.emit(.concat, parts, ["axis": .int(1)])
    }

    /// x [copies, Σ lengths, W] back to the padded [copies · P, T, W]: each prompt's padding rows
    /// are copies of its last real row.
    func unpack(_ f: FunctionBuilder, _ x: Value, _ pk: RowPacking) throws -> Value {
        let W = x.type.shape.last!, T = pk.seqLen, loc = f.loc
        f.loc = "edit.rows"
        defer { f.loc = loc }
        var parts: [Value] = []
        let starts = pk.starts
        for run in pk.runs {
            parts.append(try f.emit(.slice, [x], ["begin": .ints([0, starts[run.lowerBound], 0]), "size": .ints([pk.copies, pk.rows(run), W])]))
            let q = run.upperBound
            if pk.lengths[q] < T {
                let last = try f.emit(.slice, [x], ["begin": .ints([0, starts[q] + pk.lengths[q] - 1, 0]), "size": .ints([pk.copies, 1, W])])
                parts += Array(repeating: last, count: T - pk.lengths[q])
            }
        }
        let padded = parts.count == 1 ? parts[0] : try f.emit(.concat, parts, ["axis": .int(1)])
        return try f.emit(.reshape, [padded], ["shape": .ints([pk.copies * pk.lengths.count, T, W])])
    }

    /// Self-attention of one block; returns its output [B, T, D] and this call's keys and values [B, kvh, T, hd].
    func attention(_ f: FunctionBuilder, layer l: Int, _ x: Value, cos: Value, sin: Value, mask: Value,
                   cache: (Value, Value)?, B: Int, T: Int, split: Bool = false, packing: RowPacking? = nil) throws -> (Value, Value, Value) {
        let c = config
        let p = "blk.\(l)."
        let hd = c.headDim, kvh = c.kvHeads, g = c.heads / c.kvHeads
        let n = try f.emit(.rmsNorm, [x, w(f, p + "attn_norm.weight")], ["eps": .float(c.rmsEps)])
        func proj(_ which: String, heads: Int) throws -> Value {
            var ops = [n, try w(f, p + "attn_\(which).weight")]
            if c.qkvBias { ops.append(try w(f, p + "attn_\(which).bias")) }
            var y = try f.emit(.fullyConnected, ops)
            if let pk = packing { y = try unpack(f, y, pk) }
            let r = try f.emit(.reshape, [y], ["shape": .ints([B, T, heads, hd])])
            return try f.emit(.transpose, [r], ["perm": .ints([0, 2, 1, 3])])
        }
        let mode: Attribute = .string(c.ropeNeox ? "neox" : "norm")
        let q = try f.emit(.rope, [proj("q", heads: c.heads), cos, sin], ["mode": mode])
        let k = try f.emit(.rope, [proj("k", heads: kvh), cos, sin], ["mode": mode])
        let v = try proj("v", heads: kvh)
        var keys = k, values = v
        let splitCache = split ? cache : nil
        if let (kc, vc) = cache, !split {
            keys = try f.emit(.concat, [kc, k], ["axis": .int(2)])
            values = try f.emit(.concat, [vc, v], ["axis": .int(2)])
        }
        let C = splitCache?.0.type.shape[2] ?? 0
        let S = keys.type.shape[2] + C
        let attnLoc = f.loc
        // Query heads h = kv·g + j share kv head kv: group them so one matmul per kv head serves g heads.
        let qg = try f.emit(.reshape, [q], ["shape": .ints([B, kvh, g * T, hd])])
        var s = try f.emit(.matmul, [qg, keys], ["transpose_b": .bool(true)])
        // A cache of fewer sequences than the batch is one copy's: repeated for each copy (copy-major).
        func perCopy(_ v: Value) throws -> Value {
            let n = B / v.type.shape[0]
            return n == 1 ? v : try f.emit(.concat, Array(repeating: v, count: n), ["axis": .int(0)])
        }
        if let (kc, _) = splitCache {
            f.loc = "blk.\(l).cache"
            let sc = try f.emit(.matmul, [qg, perCopy(kc)], ["transpose_b": .bool(true)])
            s = try f.emit(.concat, [sc, s], ["axis": .int(3)])
            f.loc = attnLoc
        }
        s = try f.emit(.scale, [s], ["factor": .float(1.0 / Double(hd).squareRoot())])
        s = try f.emit(.reshape, [s], ["shape": .ints([B, kvh, g, T, S])])
        s = try f.emit(.add, [s, mask])
        s = try f.emit(.softmax, [s], ["axis": .int(-1)])
        s = try f.emit(.reshape, [s], ["shape": .ints([B, kvh, g * T, S])])
        var cached: Value?
        if let (_, vc) = splitCache {
            f.loc = "blk.\(l).cache"
            let pc = try f.emit(.slice, [s], ["begin": .ints([0, 0, 0, 0]), "size": .ints([B, kvh, g * T, C])])
            cached = try f.emit(.matmul, [pc, perCopy(vc)])
            s = try f.emit(.slice, [s], ["begin": .ints([0, 0, 0, C]), "size": .ints([B, kvh, g * T, T])])
            f.loc = attnLoc
        }
        var a = try f.emit(.matmul, [s, values])
        if let ca = cached {
            f.loc = "blk.\(l).cache"
            a = try f.emit(.add, [ca, a])
            f.loc = attnLoc
        }
        a = try f.emit(.reshape, [a], ["shape": .ints([B, c.heads, T, hd])])
        a = try f.emit(.transpose, [a], ["perm": .ints([0, 2, 1, 3])])
        a = try f.emit(.reshape, [a], ["shape": .ints([B, T, c.hidden])])
        if let pk = packing { a = try pack(f, a, pk) }
        let o = try f.emit(.fullyConnected, [a, w(f, p + "attn_output.weight")])
        return (o, k, v)
    }

    /// SwiGLU MLP of one block: down(silu(gate(n)) · up(n)), n = rms_norm(x). With `probe`, the
    /// down-projection's input and output are also results ("ffn_key", "ffn_value").
    func mlp(_ f: FunctionBuilder, layer l: Int, _ x: Value, probe: FunctionBuilder? = nil) throws -> Value {
        let p = "blk.\(l)."
        let n = try f.emit(.rmsNorm, [x, w(f, p + "ffn_norm.weight")], ["eps": .float(config.rmsEps)])
        let gate = try f.emit(.fullyConnected, [n, w(f, p + "ffn_gate.weight")])
        let up = try f.emit(.fullyConnected, [n, w(f, p + "ffn_up.weight")])
        let act = try f.emit(.mul, [f.emit(.silu, [gate]), up])
        let down = try f.emit(.fullyConnected, [act, w(f, p + "ffn_down.weight")])
        if let pf = probe { pf.output("ffn_key", act); pf.output("ffn_value", down) }
        return down
    }

    /// The scored rows of h [copies·P, T, D] (packed: [copies, Σ lengths, D]), gathered by static
    /// slices into [copies, N, D].
    func scoredRows(_ f: FunctionBuilder, _ h: Value, _ sc: ScoredRows, T: Int, packing: RowPacking? = nil) throws -> Value {
        let D = config.hidden, P = sc.rows.count
        if let pk = packing {
            let parts = try zip(sc.rows, pk.starts).filter { !$0.0.isEmpty }.map { r, start in
                try f.emit(.slice, [h], ["begin": .ints([0, start + r.lowerBound, 0]), "size": .ints([sc.copies, r.count, D])])
            }
            return parts.count == 1 ? parts[0] : try f.emit(.concat, parts, ["axis": .int(1)])
        }
        let grouped = try f.emit(.reshape, [h], ["shape": .ints([sc.copies, P, T, D])])
        var parts: [Value] = []
        for (p, r) in sc.rows.enumerated() where !r.isEmpty {
            let s = try f.emit(.slice, [grouped], ["begin": .ints([0, p, r.lowerBound, 0]), "size": .ints([sc.copies, 1, r.count, D])])
            parts.append(try f.emit(.reshape, [s], ["shape": .ints([sc.copies, r.count, D])]))
        }
        return parts.count == 1 ? parts[0] : try f.emit(.concat, parts, ["axis": .int(1)])
    }

    /// LossHead's results from logits [copies, N, V], one copy at a time: the exp terms of all
    /// copies at once would be [copies, N, V] i64 (41 MB for a step graph), one copy's are 1/copies.
    func lossTerms(_ f: FunctionBuilder, _ logits: Value, _ loss: LossHead) throws {
        let copies = logits.type.shape[0], N = logits.type.shape[1], V = logits.type.shape[2]
        precondition(loss.targets.count == N, "a loss head needs one entry per scored row")
        var name: String?
        if let (_, base) = loss.kl {
            precondition(base.count == V, "log p0 needs one value per vocabulary entry")
            name = "kl_base.\(f.function.name)"
            builder.declareConstant(name!, .f32([V]), .data(.f32(base)))
        }
        var results: [String: [Value]] = [:]
        for c in 0..<copies {
            let l = copies == 1 ? logits : try f.emit(.slice, [logits], ["begin": .ints([c, 0, 0]), "size": .ints([1, N, V])])
            // The target logits first: the copy's logits are free once its exp terms are made.
            for (j, t) in loss.targets.enumerated() {
                guard let t = t else { continue }
                results["loss.target", default: []].append(try f.emit(.slice, [l], ["begin": .ints([0, j, t]), "size": .ints([1, 1, 1])]))
            }
            results["loss.max", default: []].append(try f.emit(.reduceMax, [l], ["axis": .int(2)]))
            // exp((l − m)/2)², as softmax's pattern exp(x − max x) with x = l/2.
            let half = try f.emit(.scale, [l], ["factor": .float(0.5)])
            let eh = try f.emit(.exp, [f.emit(.sub, [half, f.emit(.reduceMax, [half], ["axis": .int(2)])])])
            results["loss.exp_sum", default: []].append(try f.emit(.reduceSum, [f.emit(.mul, [eh, eh])], ["axis": .int(2)]))
            if let (row, _) = loss.kl, let name = name {
                let lk = try f.emit(.slice, [l], ["begin": .ints([0, row, 0]), "size": .ints([1, 1, V])])
                let shifted = try f.emit(.sub, [lk, f.emit(.reduceMax, [lk], ["axis": .int(2)])])
                let e = try f.emit(.exp, [shifted])
                let d = try f.emit(.sub, [shifted, f.constant(name)])
                results["loss.kl_sum", default: []].append(try f.emit(.reduceSum, [f.emit(.mul, [e, d])], ["axis": .int(2)]))
                results["loss.kl_exp_sum", default: []].append(try f.emit(.reduceSum, [e], ["axis": .int(2)]))
            }
        }
        var wide: [String] = []
        for k in ["loss.max", "loss.exp_sum", "loss.target", "loss.kl_sum", "loss.kl_exp_sum"] {
            guard let parts = results[k] else { continue }
            // loss.target: per copy, one [1, 1, 1] per target, joined on axis 1; then copies on axis 0.
            let perCopy = parts.count / copies
            let rows = try (0..<copies).map { c -> Value in
                let mine = Array(parts[(c * perCopy)..<((c + 1) * perCopy)])
                return mine.count == 1 ? mine[0] : try f.emit(.concat, mine, ["axis": .int(1)])
            }
            f.output(k, rows.count == 1 ? rows[0] : try f.emit(.concat, rows, ["axis": .int(0)]))
            wide.append(k)
        }
        // Exact sums on their own grids: narrowing them to i16 would cost the host its precision.
        builder.setAttribute("wide_results.\(f.function.name)", .string(wide.joined(separator: ",")))
    }

    func head(_ f: FunctionBuilder, _ x: Value) throws -> Value {
        let n = try f.emit(.rmsNorm, [x, w(f, "output_norm.weight")], ["eps": .float(config.rmsEps)])
        return try f.emit(.fullyConnected, [n, w(f, config.tiedEmbeddings ? "token_embd.weight" : "output.weight")])
    }
}

func isSymbolCharacter(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c.isNumber) || c == "_" || c == "-" || c == "." }
