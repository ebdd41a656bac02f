import Foundation
import ZOIR
import ZOModelIO
import ZORuntime

/// A Llama-family model run by the reference interpreter: builds the forward functions each
/// shape needs (once), does the embedding lookup on the host, and keeps the KV cache for decoding.
public final class LanguageModel: CausalLM {
    /// fp32: the float graph. int: the graph lowered to the npu profile (embedding lookup on the host).
    public enum Precision: String, CaseIterable, Sendable { case fp32, int }

    public let gguf: GGUFFile
    public let config: ModelConfig
    public let tokenizer: Tokenizer
    public let precision: Precision
    let importer: LlamaImporter
    private var interpreter: Interpreter?
    private var built = Set<String>()
    private var compiler: NPUCompiler?
    var npuForwards: [String: NPUForward] = [:]
    public internal(set) var npuDecoders: [String: NPUDecoder] = [:]
    /// Every int graph's interpreter (they share the int8 weights; an edit replaces them in all).
    var npuInterpreters: [Interpreter] {
        npuForwards.values.map(\.interpreter) + npuDecoders.values.flatMap { [$0.prefill, $0.decode] }
    }
    /// Weights an edit has replaced (f32, GGUF layout), by name.
    public internal(set) var editedWeights: [String: [Float]] = [:]
    private lazy var embeddings = try? EmbeddingTable(gguf: gguf)

    /// How calibration chooses ranges for the int path.
    public let clipRule: ClipRule
    /// How the int path lowers the weights.
    public let weightForm: WeightForm

    public init(path: String, precision: Precision = .fp32, clipRule: ClipRule = .max, weightForm: WeightForm = .blocks) throws {
        self.clipRule = clipRule
        self.weightForm = weightForm
        gguf = try GGUFFile(path: path)
        importer = try LlamaImporter(gguf: gguf)
        config = importer.config
        tokenizer = try Tokenizer(gguf: gguf)
        self.precision = precision
    }

    /// The npu compiler (calibrates on first use).
    public func npuCompiler() throws -> NPUCompiler {
        if let c = compiler { return c }
        let c = try NPUCompiler(importer: importer, tokenizer: tokenizer, rule: clipRule, weightForm: weightForm)
        compiler = c
        return c
    }

    /// The npu forward of static length `length`, lowered on first request (its interpreter shares
    /// the int8 weights of the others).
    func npuForward(length: Int) throws -> NPUForward {
        let name = "npu_t\(length)"
        if let f = npuForwards[name] { return f }
        guard let table = embeddings else { throw RuntimeError.missingConstantData("token_embd.weight") }
        let interp = try Interpreter(module: npuCompiler().lower(name, ForwardShape(seqLen: length)),
                                     constantsFrom: npuInterpreters.first)
        let f = try NPUForward(interpreter: interp, function: name, embeddings: table, padID: tokenizer.eosID ?? 0)
        npuForwards[name] = f
        // The int graph holds its own weights now: the float model's pages need not stay resident.
        gguf.file.releasePages()
        return f
    }

    /// The npu prefill of `promptLength` rows and decode over `capacity` cache slots, lowered on
    /// first request (sharing the int8 weights of the other int graphs).
    func npuDecoder(promptLength P: Int, capacity: Int) throws -> NPUDecoder {
        let key = "\(P)/\(capacity)"
        if let d = npuDecoders[key] { return d }
        guard let table = embeddings else { throw RuntimeError.missingConstantData("token_embd.weight") }
        guard capacity < config.contextLength else {
            throw RuntimeError.badRequest("\(capacity + 1) positions exceed the context length \(config.contextLength)")
        }
        let c = try npuCompiler()
        let names = (prefill: "npu_prefill_t\(P)", decode: "npu_decode_c\(capacity)")
        let prefill = try Interpreter(module: c.lower(names.prefill, ForwardShape(seqLen: P, emitCache: true)), constantsFrom: npuInterpreters.first)
        let decode = try Interpreter(module: c.lower(names.decode, ForwardShape(seqLen: 1, cacheLen: capacity, separateCache: true)),
                                     constantsFrom: prefill)
        let d = try NPUDecoder(prefill: prefill, names.prefill, decode: decode, names.decode, capacity: capacity, config: config, embeddings: table)
        npuDecoders[key] = d
        gguf.file.releasePages()
        return d
    }

    /// The interpreter for a module that has `name` (built with `shape` on first request).
    func function(_ name: String, _ shape: ForwardShape) throws -> Interpreter {
        if !built.contains(name) {
            try importer.addForward(name, shape)
            built.insert(name)
            interpreter = try Interpreter(module: importer.module, constantsFrom: interpreter)
            for (n, w) in editedWeights where importer.module.constant(n) != nil { try interpreter!.replaceConstant(n, .f32(w)) }
        }
        return interpreter!
    }

    /// Embedding rows for `ids`, as [1, T, D].
    public func embed(_ ids: [Int]) throws -> TensorData {
        guard let e = embeddings else { throw RuntimeError.missingConstantData("token_embd.weight") }
        return try e.lookup(ids)
    }

    func forwardName(seqLen: Int) -> String { "forward_t\(seqLen)" }

    /// Logits for every position of `ids`: [T][V].
    public func logits(_ ids: [Int]) throws -> [[Float]] {
        guard !ids.isEmpty else { throw RuntimeError.badRequest("no tokens to run") }
        if precision == .int { return try npuForward(length: ids.count).logits(ids) }
        let name = forwardName(seqLen: ids.count)
        let interp = try function(name, ForwardShape(seqLen: ids.count))
        let out = try interp.run(name, ["embeddings": embed(ids)])
        guard case let .f32(l)? = out["logits"] else { throw RuntimeError.badRequest("no logits") }
        let v = config.vocab
        return (0..<ids.count).map { Array(l[($0 * v)..<(($0 + 1) * v)]) }
    }

    /// Greedy decoding with a KV cache: prefill the prompt, then one token at a time. Stops after
    /// `maxTokens` or after emitting an end token (EOS or <|im_end|>). `onToken` sees each new id.
    public func generate(_ prompt: [Int], maxTokens: Int, onToken: (Int) -> Void = { _ in }) throws -> [Int] {
        guard !prompt.isEmpty else { throw RuntimeError.badRequest("the prompt has no tokens") }
        guard maxTokens > 0 else { return [] }
        let P = prompt.count
        if precision == .int {
            return try npuDecoder(promptLength: P, capacity: P + maxTokens - 1).generate(prompt, maxTokens: maxTokens, isStop: isStopToken, onToken: onToken)
        }
        return try generateFloat(prompt, maxTokens: maxTokens, onToken: onToken)
    }

    /// Greedy decoding on the int path without a cache: each token re-runs the static forward of
    /// prompt + maxTokens − 1 rows. Edit plans make their context prefixes this way, as they have
    /// from the start: the KV decoder lowers scores and RoPE differently, its tokens can differ
    /// at near-ties, and a plan must not change with it.
    func generateStatic(_ prompt: [Int], maxTokens: Int) throws -> [Int] {
        guard !prompt.isEmpty else { throw RuntimeError.badRequest("the prompt has no tokens") }
        return try npuForward(length: prompt.count + maxTokens - 1).generate(prompt, maxTokens: maxTokens, isStop: isStopToken) { _ in }
    }

    /// Greedy decoding on the float graph with a KV cache, whatever `precision` is (with the
    /// edited weights, dequantized as an exported GGUF holds them): fluency is measured here,
    /// the int path re-runs its static function per token. `throughEnd`: go on past an end token
    /// (fluency counts 100 tokens whatever they are).
    public func generateFloat(_ prompt: [Int], maxTokens: Int, throughEnd: Bool = false, onToken: (Int) -> Void = { _ in }) throws -> [Int] {
        guard !prompt.isEmpty else { throw RuntimeError.badRequest("the prompt has no tokens") }
        guard maxTokens > 0 else { return [] }
        let P = prompt.count
        let c = config
        let capacity = P + maxTokens - 1
        guard capacity <= c.contextLength else {
            throw RuntimeError.badRequest("prompt (\(P)) + tokens (\(maxTokens)) exceed the context length \(c.contextLength)")
        }
        let prefillName = "prefill_t\(P)"
        var interp = try function(prefillName, ForwardShape(seqLen: P, emitCache: true))
        var out = try interp.run(prefillName, ["embeddings": embed(prompt)])
        let slot = c.headDim * capacity  // one kv head's cache
        var kCache = [[Float]](repeating: [Float](repeating: 0, count: c.kvHeads * slot), count: c.layers)
        var vCache = kCache
        func store(_ out: [String: TensorData], at position: Int, count: Int) {
            for l in 0..<c.layers {
                guard case let .f32(k)? = out["k.\(l)"], case let .f32(v)? = out["v.\(l)"] else { continue }
                for h in 0..<c.kvHeads {
                    let src = h * count * c.headDim, dst = h * slot + position * c.headDim
                    kCache[l].replaceSubrange(dst..<(dst + count * c.headDim), with: k[src..<(src + count * c.headDim)])
                    vCache[l].replaceSubrange(dst..<(dst + count * c.headDim), with: v[src..<(src + count * c.headDim)])
                }
            }
        }
        store(out, at: 0, count: P)
        var filled = P
        var next = argmax(lastLogits(out, positions: P))
        var generated = [next]
        onToken(next)
        let decodeName = "decode_c\(capacity)"
        while generated.count < maxTokens && (throughEnd || !isStopToken(next)) {
            interp = try function(decodeName, ForwardShape(seqLen: 1, cacheLen: capacity))
            let (cs, sn) = RopeTables.make(positions: [filled], headDim: c.headDim, base: c.ropeBase)
            var inputs: [String: TensorData] = [
                "embeddings": try embed([next]), "rope.cos": .f32(cs), "rope.sin": .f32(sn),
                "mask": .f32(RopeTables.decodeMask(newTokens: 1, cacheLen: capacity, filled: filled)),
            ]
            for l in 0..<c.layers { inputs["k_cache.\(l)"] = .f32(kCache[l]); inputs["v_cache.\(l)"] = .f32(vCache[l]) }
            out = try interp.run(decodeName, inputs)
            inputs = [:]  // release the cache arrays so writing the new slot does not copy them
            store(out, at: filled, count: 1)
            filled += 1
            next = argmax(lastLogits(out, positions: 1))
            generated.append(next)
            onToken(next)
        }
        return generated
    }

    func lastLogits(_ out: [String: TensorData], positions: Int) -> ArraySlice<Float> {
        guard case let .f32(l)? = out["logits"] else { return [] }
        return l[((positions - 1) * config.vocab)..<(positions * config.vocab)]
    }

    /// The prompt wrapped in the model's chat turn format.
    public func chatPrompt(_ user: String) -> String { ChatFormat.prompt(user, template: try? gguf.string("tokenizer.chat_template")) }
}

/// log Σ exp(x), computed stably in f64.
public func logSumExp<C: Collection>(_ x: C) -> Double where C.Element == Float {
    let m = Double(x.max() ?? 0)
    return m + log(x.reduce(0.0) { $0 + exp(Double($1) - m) })
}

extension LanguageModel {
    /// Puts edited f32 weights for `name` on its int8 grid in every lowered graph (editing graphs
    /// share the compiler's weight cache, so later lowerings see them too) and into the float
    /// graph; returns how many values were clipped to ±127.
    @discardableResult
    public func replaceWeight(_ name: String, _ w: [Float], also: [Interpreter] = []) throws -> Int {
        let (qname, data, clipped) = try npuCompiler().weights.requantize(name, w)
        for i in npuInterpreters where i.module.constant(qname) != nil { try i.replaceConstant(qname, data) }
        for i in also where i.module.constant(qname) != nil { try i.replaceConstant(qname, data) }
        if let i = interpreter, i.module.constant(name) != nil { try i.replaceConstant(name, .f32(w)) }
        editedWeights[name] = w
        return clipped
    }

    /// Lowers weight `name` (and so layer `l`'s ffn_down an edit rewrites) in the per-channel int8
    /// form `replaceWeight` and `restoreWeight` work on; int graphs lowered before with its block
    /// form are dropped (lowered again on next use).
    public func makeEditable(_ name: String) throws {
        guard let blocked = try npuCompiler().weights.keepPerChannel(name) else { return }
        npuForwards = npuForwards.filter { $0.value.interpreter.module.constant(blocked) == nil }
        npuDecoders = npuDecoders.filter { $0.value.prefill.module.constant(blocked) == nil }
    }

    /// The int8 form of weight `name` in the lowered graphs (to undo an edit with `restoreWeight`).
    public func int8Weight(_ name: String) throws -> [Int8]? { try npuCompiler().weights.int8(name) }

    /// Puts back an int8 form saved by `int8Weight` in every lowered graph (and the GGUF's weights in the float graph).
    public func restoreWeight(_ name: String, _ q: [Int8]) throws {
        let qname = try npuCompiler().weights.restore(name, q)
        editedWeights[name] = nil
        interpreter?.forgetConstant(name)
        for i in npuInterpreters where i.module.constant(qname) != nil { try i.replaceConstant(qname, .i8(q)) }
    }
}
