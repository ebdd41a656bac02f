import ZOIR
import ZOModelIO

/// A language model the CLIs can drive: the float graph, the npu graph, or a loaded artifact.
public protocol CausalLM: AnyObject {
    var tokenizer: Tokenizer { get }
    /// Logits for every position of `ids`: [T][V].
    func logits(_ ids: [Int]) throws -> [[Float]]
    /// Greedy decoding: stops after `maxTokens` or an end token; `onToken` sees each new id.
    func generate(_ prompt: [Int], maxTokens: Int, onToken: (Int) -> Void) throws -> [Int]
    /// The prompt in the model's chat turn format.
    func chatPrompt(_ user: String) -> String
}

extension CausalLM {
    /// EOS or the end of a chat turn.
    public func isStopToken(_ id: Int) -> Bool { id == tokenizer.eosID || id == tokenizer.imEnd }
}

/// An npu forward function of static length run on token ids: embedding rows looked up on the host
/// and put on the input's i16 grid, the ids right-padded to the static length (the causal mask keeps
/// padding from reaching earlier positions), the i16 logits of the real positions dequantized.
public final class NPUForward {
    public let interpreter: Interpreter
    public let name: String
    /// The static sequence length.
    public let length: Int
    let embeddings: EmbeddingTable
    let padID: Int
    let inputName: String
    let inputScale: Float
    let logitScale: Float
    let vocab: Int

    public init(interpreter: Interpreter, function name: String, embeddings: EmbeddingTable, padID: Int) throws {
        guard let f = interpreter.module.function(name) else {
            throw RuntimeError.noFunction(name, available: interpreter.module.functions.map(\.name))
        }
        guard f.params.count == 1, case let .perTensor(inScale, 0)? = f.params[0].type.quant, f.params[0].type.dtype == .i16,
              f.params[0].type.rank == 3, f.params[0].type.shape[0] == 1, f.params[0].type.shape[2] == embeddings.width else {
            throw RuntimeError.badRequest("@\(name) is not an npu forward function: it must take one quantized i16 [1, T, \(embeddings.width)] embeddings parameter")
        }
        let lt = f.type(of: f.resultValues.first ?? 0)
        guard f.resultNames.first == "logits", case let .perTensor(outScale, 0)? = lt.quant, lt.dtype == .i16, lt.rank == 3 else {
            throw RuntimeError.badRequest("@\(name) is not an npu forward function: its first result must be quantized i16 logits [1, T, V]")
        }
        self.interpreter = interpreter; self.name = name; self.embeddings = embeddings; self.padID = padID
        length = f.params[0].type.shape[1]
        inputName = f.params[0].name
        inputScale = inScale
        logitScale = outScale
        vocab = lt.shape[2]
    }

    public func logits(_ ids: [Int]) throws -> [[Float]] {
        guard !ids.isEmpty else { throw RuntimeError.badRequest("no tokens to run") }
        guard ids.count <= length else {
            throw RuntimeError.badRequest("\(ids.count) tokens do not fit @\(name), whose static length is \(length)")
        }
        guard case let .f32(e) = try embeddings.lookup(ids + Array(repeating: padID, count: length - ids.count)) else {
            throw RuntimeError.badRequest("embedding lookup returned no f32 rows")
        }
        let input = TensorData.i16(e.map { Int16(clamping: Int(($0 / inputScale).rounded())) })
        guard case let .i16(q)? = try interpreter.run(name, [inputName: input])["logits"] else {
            throw RuntimeError.badRequest("@\(name) returned no i16 logits")
        }
        return (0..<ids.count).map { t in q[(t * vocab)..<((t + 1) * vocab)].map { Float($0) * logitScale } }
    }

    /// Greedy decoding by re-running the static function per token (needs prompt + maxTokens − 1 ≤ length).
    public func generate(_ prompt: [Int], maxTokens: Int, isStop: (Int) -> Bool, onToken: (Int) -> Void) throws -> [Int] {
        guard prompt.count + maxTokens - 1 <= length else {
            throw RuntimeError.badRequest("prompt (\(prompt.count) tokens) + \(maxTokens) new tokens need a static length of \(prompt.count + maxTokens - 1); @\(name) has \(length)")
        }
        var ids = prompt, generated: [Int] = []
        repeat {
            let next = argmax(try logits(ids).last!)
            generated.append(next)
            ids.append(next)
            onToken(next)
        } while generated.count < maxTokens && !isStop(generated.last!)
        return generated
    }
}

/// Index of the largest value (the first one on ties).
public func argmax<C: Collection>(_ x: C) -> Int where C.Element == Float, C.Index == Int {
    var best = x.startIndex
    for i in x.indices where x[i] > x[best] { best = i }
    return best - x.startIndex
}
