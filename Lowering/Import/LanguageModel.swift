import Foundation
import ZOIR
import ZOModelIO
import ZORuntime

/// A Llama-family model run by the reference interpreter: builds the forward functions each
/// shape needs (once), does the embedding lookup on the host, and keeps the KV cache for decoding.
public final class LanguageModel {
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
    private var intInterpreters: [String: Interpreter] = [:]
    private lazy var embeddings = try? EmbeddingTable(gguf: gguf)

    /// How calibration chooses ranges for the int path.
    public let clipRule: ClipRule

    public init(path: String, precision: Precision = .fp32, clipRule: ClipRule = .max) throws {
        self.clipRule = clipRule
        gguf = try GGUFFile(path: path)
        importer = try LlamaImporter(gguf: gguf)
        config = importer.config
        tokenizer = try Tokenizer(gguf: gguf)
        self.precision = precision
    }

    /// The npu compiler (calibrates on first use).
    public func npuCompiler() throws -> NPUCompiler {
        if let c = compiler { return c }
        let c = try NPUCompiler(importer: importer, tokenizer: tokenizer, rule: clipRule)
        compiler = c
        return c
    }

    /// Logits of every position of `ids` from the npu graph of static length `length` (≥ ids.count):
    /// the tokens are right-padded, which the causal mask keeps from reaching earlier positions.
    func intLogits(_ ids: [Int], length: Int? = nil) throws -> [[Float]] {
        let L = length ?? ids.count
        let name = "npu_t\(L)"
        let interp: Interpreter
        if let i = intInterpreters[name] {
            interp = i
        } else {
            interp = try Interpreter(module: npuCompiler().lower(name, ForwardShape(seqLen: L)), constantsFrom: intInterpreters.values.first)
            intInterpreters[name] = interp
            // The int graph holds its own weights now: the float model's pages need not stay resident.
            gguf.file.releasePages()
        }
        let f = interp.module.function(name)!
        let padded = ids + Array(repeating: tokenizer.eosID ?? 0, count: L - ids.count)
        let input = try quantizeInput(try embed(padded), f.params[0].type)
        let out = try interp.run(name, [f.params[0].name: input])
        let logitsType = f.type(of: f.resultValues[0])
        guard case let .i16(q)? = out["logits"], case let .perTensor(scale, _)? = logitsType.quant else {
            throw RuntimeError.badRequest("the npu graph's logits are not quantized i16")
        }
        let v = config.vocab
        return (0..<ids.count).map { t in q[(t * v)..<((t + 1) * v)].map { Float($0) * scale } }
    }

    /// Greedy decoding on the npu graph: one static function of the final length, re-run per token.
    func intGenerate(_ prompt: [Int], maxTokens: Int, onToken: (Int) -> Void) throws -> [Int] {
        let L = prompt.count + maxTokens - 1
        var ids = prompt, generated: [Int] = []
        repeat {
            let next = argmax(try intLogits(ids, length: L).last!)
            generated.append(next)
            ids.append(next)
            onToken(next)
        } while generated.count < maxTokens && !isStopToken(generated.last!)
        return generated
    }

    /// f32 data onto a quantized i16 parameter's grid (round to nearest, saturate).
    func quantizeInput(_ d: TensorData, _ t: TensorType) throws -> TensorData {
        guard case let .f32(a) = d, case let .perTensor(scale, _)? = t.quant, t.dtype == .i16 else {
            throw RuntimeError.badRequest("expected an f32 input for a quantized i16 parameter, got \(t)")
        }
        return .i16(a.map { Int16(clamping: Int(($0 / scale).rounded())) })
    }

    /// The interpreter for a module that has `name` (built with `shape` on first request).
    func function(_ name: String, _ shape: ForwardShape) throws -> Interpreter {
        if !built.contains(name) {
            try importer.addForward(name, shape)
            built.insert(name)
            interpreter = try Interpreter(module: importer.module, constantsFrom: interpreter)
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
        if precision == .int { return try intLogits(ids) }
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
        if precision == .int { return try intGenerate(prompt, maxTokens: maxTokens, onToken: onToken) }
        let c = config
        let P = prompt.count
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
        while generated.count < maxTokens && !isStopToken(next) {
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

    /// EOS or the end of a chat turn.
    public func isStopToken(_ id: Int) -> Bool { id == tokenizer.eosID || id == tokenizer.imEnd }

    func lastLogits(_ out: [String: TensorData], positions: Int) -> ArraySlice<Float> {
        guard case let .f32(l)? = out["logits"] else { return [] }
        return l[((positions - 1) * config.vocab)..<(positions * config.vocab)]
    }

    /// The prompt wrapped in the model's chat turn format (ChatML, as SmolLM2's template writes it).
    public func chatPrompt(_ user: String) -> String {
        var s = ""
        if let t = try? gguf.string("tokenizer.chat_template"), t.contains("You are a helpful AI assistant named SmolLM") {
            s += "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        }
        return s + "<|im_start|>user\n\(user)<|im_end|>\n<|im_start|>assistant\n"
    }
}

/// Index of the largest value (the first one on ties).
public func argmax<C: Collection>(_ x: C) -> Int where C.Element == Float, C.Index == Int {
    var best = x.startIndex
    for i in x.indices where x[i] > x[best] { best = i }
    return best - x.startIndex
}

/// log Σ exp(x), computed stably in f64.
public func logSumExp<C: Collection>(_ x: C) -> Double where C.Element == Float {
    let m = Double(x.max() ?? 0)
    return m + log(x.reduce(0.0) { $0 + exp(Double($1) - m) })
}
