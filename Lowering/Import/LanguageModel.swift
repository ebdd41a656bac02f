import Foundation
import ZOIR
import ZOModelIO
import ZORuntime

/// A Llama-family model run by the reference interpreter: builds the forward functions each
/// shape needs (once), does the embedding lookup on the host, and keeps the KV cache for decoding.
public final class LanguageModel {
    public let gguf: GGUFFile
    public let config: ModelConfig
    public let tokenizer: Tokenizer
    let importer: LlamaImporter
    private var interpreter: Interpreter?
    private var built = Set<String>()

    public init(path: String) throws {
        gguf = try GGUFFile(path: path)
        importer = try LlamaImporter(gguf: gguf)
        config = importer.config
        tokenizer = try Tokenizer(gguf: gguf)
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
        let table = try function(forwardName(seqLen: 1), ForwardShape(seqLen: 1)).constant("token_embd.weight")
        guard case let .f32(t) = table else { throw RuntimeError.badRequest("token_embd.weight is not f32") }
        let d = config.hidden
        var out = [Float]()
        out.reserveCapacity(ids.count * d)
        for id in ids {
            guard id >= 0 && id < config.vocab else { throw RuntimeError.badRequest("token id \(id) is outside the vocabulary (0..<\(config.vocab))") }
            out.append(contentsOf: t[(id * d)..<((id + 1) * d)])
        }
        return .f32(out)
    }

    func forwardName(seqLen: Int) -> String { "forward_t\(seqLen)" }

    /// Logits for every position of `ids`: [T][V].
    public func logits(_ ids: [Int]) throws -> [[Float]] {
        guard !ids.isEmpty else { throw RuntimeError.badRequest("no tokens to run") }
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
