import Foundation
import ZOModelIO
import ZORuntime

/// The EasyEdit/KnowEdit metrics of EDITING.md, on any CausalLM (teacher-forced, prompts as given).
public enum EditMetrics {
    /// The answer's tokens as they follow the prompt (a leading space joins the first word).
    public static func answerTokens(_ tok: Tokenizer, prompt: String, answer: String) -> (prompt: [Int], answer: [Int]) {
        let p = tok.encode(prompt)
        let a = answer.trimmingCharacters(in: .whitespaces)
        let full = tok.encode(prompt + " " + a)
        return (p, full.starts(with: p) && full.count > p.count ? Array(full[p.count...]) : tok.encode(" " + a))
    }

    /// The argmax prediction at each answer position of prompt + answer (teacher-forced).
    public static func predictions(_ lm: CausalLM, prompt: String, answer: String) throws -> (predicted: [Int], answer: [Int]) {
        let (p, a) = answerTokens(lm.tokenizer, prompt: prompt, answer: answer)
        guard !p.isEmpty, !a.isEmpty else { return ([], a) }
        let logits = try lm.logits(p + a.dropLast())
        return ((0..<a.count).map { argmax(logits[p.count - 1 + $0]) }, a)
    }

    /// The fraction of answer tokens that are the argmax (rewrite, rephrase, portability).
    public static func tokenAccuracy(_ lm: CausalLM, prompt: String, answer: String) throws -> Double {
        let (pred, a) = try predictions(lm, prompt: prompt, answer: answer)
        guard !a.isEmpty else { return 0 }
        return Double(zip(pred, a).filter { $0 == $1 }.count) / Double(a.count)
    }

    /// Fluency: (2/3)·H(bigrams) + (4/3)·H(trigrams) in bits, of generated token ids.
    public static func ngramEntropy(_ ids: [Int]) -> Double {
        func entropy(_ n: Int) -> Double {
            guard ids.count >= n else { return 0 }
            var counts: [[Int]: Int] = [:]
            for i in 0...(ids.count - n) { counts[Array(ids[i..<(i + n)]), default: 0] += 1 }
            let total = Double(counts.values.reduce(0, +))
            return -counts.values.reduce(0.0) { let p = Double($1) / total; return $0 + p * log2(p) }
        }
        return 2.0 / 3.0 * entropy(2) + 4.0 / 3.0 * entropy(3)
    }
}

/// One edit's scores before and after (each ×100 when printed; nil when the record has no such prompts).
public struct EditScores: Sendable {
    public var rewrite: Double
    public var rephrase: Double?
    public var locality: Double?
    public var portability: Double?
    /// n-gram entropy (bits) of the tokens generated greedily from the edit prompt, when asked for.
    public var fluency: Double?

    /// Scores of `lm` on `r`; `localityBefore` holds the unedited model's locality predictions
    /// (nil: compute them, i.e. this is the "before" measurement, whose locality is 1 by definition).
    /// `generate` (prompt ids → generated ids), if given, gives the fluency.
    public static func measure(_ lm: CausalLM, _ r: EditRequest, localityBefore: [[Int]]?,
                               generate: (([Int]) throws -> [Int])? = nil) throws -> (EditScores, [[Int]]) {
        let rewrite = try EditMetrics.tokenAccuracy(lm, prompt: r.prompt, answer: r.targetNew)
        let rephrase = try r.rephrasePrompts.isEmpty ? nil
            : r.rephrasePrompts.map { try EditMetrics.tokenAccuracy(lm, prompt: $0, answer: r.targetNew) }.reduce(0, +) / Double(r.rephrasePrompts.count)
        let loc = try r.locality.map { try EditMetrics.predictions(lm, prompt: $0.prompt, answer: $0.answer).predicted }
        var locality: Double?
        if !loc.isEmpty {
            let before = localityBefore ?? loc
            var same = 0, total = 0
            for (a, b) in zip(loc, before) { same += zip(a, b).filter { $0 == $1 }.count; total += b.count }
            locality = total == 0 ? nil : Double(same) / Double(total)
        }
        let port = try r.portability.isEmpty ? nil
            : r.portability.map { try EditMetrics.tokenAccuracy(lm, prompt: $0.prompt, answer: $0.answer) }.reduce(0, +) / Double(r.portability.count)
        let fluency = try generate.map { EditMetrics.ngramEntropy(try $0(lm.tokenizer.encode(r.prompt))) }
        return (EditScores(rewrite: rewrite, rephrase: rephrase, locality: locality, portability: port, fluency: fluency), loc)
    }
}
