import Foundation
import ZOIR
import ZOModelIO
import ZORuntime

/// Greedy decoding on the npu profile with a KV cache: a prefill function of the prompt's length
/// (every row, returning each layer's keys and values) and a decode function of one new row over
/// a cache of static capacity, whose RoPE tables and mask are inputs (`ForwardShape.separateCache`).
/// Keys and values stay on their i16 grids: a prefill's and a decode's results are on the grid
/// the decode's cache parameters read, so the host only copies rows.
public final class NPUDecoder {
    public let prefill: Interpreter, decode: Interpreter
    public let prefillName: String, decodeName: String
    /// Cache slots: prompt + new tokens − 1 must fit.
    public let capacity: Int
    let config: ModelConfig
    let embeddings: EmbeddingTable
    let scales: [String: Float]

    public init(prefill: Interpreter, _ prefillName: String, decode: Interpreter, _ decodeName: String, capacity: Int,
                config: ModelConfig, embeddings: EmbeddingTable) throws {
        self.prefill = prefill; self.prefillName = prefillName; self.decode = decode; self.decodeName = decodeName
        self.capacity = capacity; self.config = config; self.embeddings = embeddings
        guard let pf = prefill.module.function(prefillName) else { throw RuntimeError.noFunction(prefillName, available: prefill.module.functions.map(\.name)) }
        guard let df = decode.module.function(decodeName) else { throw RuntimeError.noFunction(decodeName, available: decode.module.functions.map(\.name)) }
        var s: [String: Float] = [:]
        func scale(_ t: TensorType, _ what: String) throws -> Float {
            guard case let .perTensor(v, 0)? = t.quant, t.dtype == .i16 else { throw RuntimeError.badRequest("\(what) is not a quantized i16 tensor") }
            return v
        }
        for p in df.params { s["decode:" + p.name] = try scale(p.type, "@\(decodeName) %\(p.name)") }
        for (n, v) in df.results { s["decode>" + n] = try scale(df.type(of: v), "@\(decodeName) result \(n)") }
        guard let e = pf.params.first, e.name == "embeddings" else { throw RuntimeError.badRequest("@\(prefillName) takes no embeddings") }
        s["prefill:embeddings"] = try scale(e.type, "@\(prefillName) %embeddings")
        for (n, v) in pf.results { s["prefill>" + n] = try scale(pf.type(of: v), "@\(prefillName) result \(n)") }
        // The host copies cache rows as integers: every producer must be on its reader's grid.
        for l in 0..<config.layers {
            for kv in ["k", "v"] {
                let want = s["decode:\(kv)_cache.\(l)"]
                guard want != nil, s["prefill>\(kv).\(l)"] == want, s["decode>\(kv).\(l)"] == want else {
                    throw RuntimeError.badRequest("layer \(l)'s \(kv == "k" ? "keys" : "values"): the prefill, decode and cache grids differ")
                }
            }
        }
        scales = s
    }

    func embedded(_ ids: [Int], scale: Float) throws -> TensorData {
        guard case let .f32(e) = try embeddings.lookup(ids) else { throw RuntimeError.badRequest("embedding lookup returned no f32 rows") }
        return .i16(quantize(e, scale))
    }

    func quantize(_ x: [Float], _ s: Float) -> [Int16] {
        x.map { $0 == -.infinity ? -Int16.max : Int16(clamping: Int(($0 / s).rounded())) }
    }

    /// Greedy decoding: stops after `maxTokens` or an end token (`isStop`).
    public func generate(_ prompt: [Int], maxTokens: Int, isStop: (Int) -> Bool, onToken: (Int) -> Void) throws -> [Int] {
        let c = config, P = prompt.count, hd = c.headDim, kvh = c.kvHeads, V = c.vocab
        guard P >= 1, P + maxTokens - 1 <= capacity else {
            throw RuntimeError.badRequest("prompt (\(P) tokens) + \(maxTokens) new tokens need \(P + maxTokens - 1) cache slots; the decoder has \(capacity)")
        }
        var out = try prefill.run(prefillName, ["embeddings": embedded(prompt, scale: scales["prefill:embeddings"]!)])
        let slot = capacity * hd  // one kv head's cache
        var caches = [String: [Int16]]()
        for l in 0..<c.layers { for kv in ["k", "v"] { caches["\(kv)_cache.\(l)"] = [Int16](repeating: 0, count: kvh * slot) } }
        func store(_ out: [String: TensorData], at position: Int, count: Int) throws {
            for l in 0..<c.layers {
                for kv in ["k", "v"] {
                    guard case let .i16(rows)? = out["\(kv).\(l)"] else { throw RuntimeError.badRequest("no i16 \(kv).\(l) result") }
                    for h in 0..<kvh {
                        let src = h * count * hd, dst = h * slot + position * hd
                        caches["\(kv)_cache.\(l)"]!.replaceSubrange(dst..<(dst + count * hd), with: rows[src..<(src + count * hd)])
                    }
                }
            }
        }
        func next(_ out: [String: TensorData], row: Int) throws -> Int {
            guard case let .i16(l)? = out["logits"] else { throw RuntimeError.badRequest("no i16 logits") }
            var best = row * V  // the first of equal maxima, as `argmax`
            for i in (row * V)..<((row + 1) * V) where l[i] > l[best] { best = i }
            return best - row * V
        }
        try store(out, at: 0, count: P)
        var filled = P
        var token = try next(out, row: P - 1)
        var generated = [token]
        onToken(token)
        while generated.count < maxTokens && !isStop(token) {
            let (cs, sn) = RopeTables.make(positions: [filled], headDim: hd, base: c.ropeBase)
            var inputs: [String: TensorData] = [
                "embeddings": try embedded([token], scale: scales["decode:embeddings"]!),
                "rope.cos": .i16(quantize(cs, scales["decode:rope.cos"]!)), "rope.sin": .i16(quantize(sn, scales["decode:rope.sin"]!)),
                "mask": .i16(quantize(RopeTables.decodeMask(newTokens: 1, cacheLen: capacity, filled: filled), scales["decode:mask"]!)),
            ]
            for (k, v) in caches { inputs[k] = .i16(v) }
            out = try decode.run(decodeName, inputs)
            inputs = [:]  // release the cache arrays so writing the new slot does not copy them
            try store(out, at: filled, count: 1)
            filled += 1
            token = try next(out, row: 0)
            generated.append(token)
            onToken(token)
        }
        return generated
    }
}
