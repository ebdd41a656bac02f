/// Byte-level BPE (tokenizer.ggml.model "gpt2") built from GGUF metadata.
/// Control and user-defined tokens are matched in the text as specials before BPE.
public final class Tokenizer: @unchecked Sendable {
    public let tokens: [String]
    public let tokenTypes: [Int]
    public let merges: [String]
    public let preTokenizer: PreTokenizer
    public let bosID: Int?
    public let eosID: Int?
    /// The ids of the chat-turn markers when present (<|im_start|>, <|im_end|>).
    public var imStart: Int? { tokenIDs["<|im_start|>"] }
    public var imEnd: Int? { tokenIDs["<|im_end|>"] }

    private let tokenIDs: [String: Int]
    /// The token of each single byte (-1: none and no unknown token).
    private let byteIDs: [Int32]
    private let mergeRanks: [Pair: Int]
    /// Specials sorted longest first, so the longest one at a position wins.
    private let specials: [(text: [UInt8], id: Int)]
    private var cache: [Substring: [Int]] = [:]

    static let controlType = 3, userDefinedType = 4

    struct Pair: Hashable { let a: Int32, b: Int32 }

    public init(tokens: [String], tokenTypes: [Int], merges: [String], preTokenizer: PreTokenizer,
                bosID: Int? = nil, eosID: Int? = nil, unknownID: Int? = nil) throws {
        self.tokens = tokens
        self.tokenTypes = tokenTypes.count == tokens.count ? tokenTypes : Array(repeating: 1, count: tokens.count)
        self.merges = merges
        self.preTokenizer = preTokenizer
        self.bosID = bosID
        self.eosID = eosID
        var ids: [String: Int] = [:]
        ids.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where ids[t] == nil { ids[t] = i }
        tokenIDs = ids
        var ranks: [Pair: Int] = [:]
        ranks.reserveCapacity(merges.count)
        for (r, m) in merges.enumerated() {
            let parts = m.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, let a = ids[String(parts[0])], let b = ids[String(parts[1])] else {
                throw TokenizerError.badMerge(index: r, merge: m)
            }
            let pair = Pair(a: Int32(a), b: Int32(b))
            if ranks[pair] == nil { ranks[pair] = r }
        }
        mergeRanks = ranks
        var sp: [(text: [UInt8], id: Int)] = []
        for (i, t) in self.tokenTypes.enumerated() where t == Self.controlType || t == Self.userDefinedType {
            if !tokens[i].isEmpty { sp.append((Array(tokens[i].utf8), i)) }
        }
        specials = sp.sorted { $0.text.count > $1.text.count || ($0.text.count == $1.text.count && $0.id < $1.id) }
        // Some vocabularies lack tokens for bytes that never occur in practice (invalid UTF-8 leads,
        // rare control characters); those bytes become the unknown token, or are dropped without one.
        byteIDs = (0..<256).map { b in ids[String(byteToUnicode[b])].map(Int32.init) ?? unknownID.map(Int32.init) ?? -1 }
    }

    public convenience init(gguf: GGUFFile) throws {
        let model = try gguf.string("tokenizer.ggml.model")
        guard model == "gpt2" else { throw TokenizerError.unsupportedModel(model) }
        let preName = gguf.value("tokenizer.ggml.pre") == nil ? "default" : try gguf.string("tokenizer.ggml.pre")
        guard let pre = PreTokenizer(ggufName: preName) else { throw TokenizerError.unsupportedPreTokenizer(preName) }
        let types = gguf.value("tokenizer.ggml.token_type") == nil ? [] : try gguf.intArray("tokenizer.ggml.token_type")
        try self.init(tokens: gguf.stringArray("tokenizer.ggml.tokens"), tokenTypes: types,
                      merges: gguf.stringArray("tokenizer.ggml.merges"), preTokenizer: pre,
                      bosID: gguf.value("tokenizer.ggml.bos_token_id")?.intValue,
                      eosID: gguf.value("tokenizer.ggml.eos_token_id")?.intValue,
                      unknownID: gguf.value("tokenizer.ggml.unknown_token_id")?.intValue)
    }

    public var vocabSize: Int { tokens.count }

    public func id(of token: String) -> Int? { tokenIDs[token] }

    public func isSpecial(_ id: Int) -> Bool {
        id >= 0 && id < tokenTypes.count && (tokenTypes[id] == Self.controlType || tokenTypes[id] == Self.userDefinedType)
    }

    /// Token ids of `text` (no BOS/EOS added). Special-token text becomes the special's id.
    public func encode(_ text: String) -> [Int] {
        var out: [Int] = []
        let utf8 = Array(text.utf8)
        var segmentStart = 0
        var i = 0
        while i < utf8.count {
            if utf8[i] == UInt8(ascii: "<") || !specials.isEmpty && specials.contains(where: { $0.text.first == utf8[i] }),
               let sp = specials.first(where: { utf8.count - i >= $0.text.count && utf8[i..<(i + $0.text.count)].elementsEqual($0.text) }) {
                if segmentStart < i { encodeOrdinary(String(decoding: utf8[segmentStart..<i], as: UTF8.self), into: &out) }
                out.append(sp.id)
                i += sp.text.count
                segmentStart = i
            } else {
                i += 1
            }
        }
        if segmentStart < utf8.count { encodeOrdinary(String(decoding: utf8[segmentStart...], as: UTF8.self), into: &out) }
        return out
    }

    private func encodeOrdinary(_ text: String, into out: inout [Int]) {
        for chunk in preTokenizer.split(text) {
            let key = Substring(chunk)
            if let hit = cache[key] { out.append(contentsOf: hit); continue }
            let ids = bpe(Array(key.utf8))
            if cache.count < 100_000 { cache[key] = ids }
            out.append(contentsOf: ids)
        }
    }

    /// Applies merges by rank to one chunk's bytes (each byte first mapped to its token).
    private func bpe(_ bytes: [UInt8]) -> [Int] {
        var parts = bytes.map { byteIDs[Int($0)] }.filter { $0 >= 0 }
        while parts.count > 1 {
            var best = Int.max, at = -1
            for k in 0..<(parts.count - 1) {
                if let r = mergeRanks[Pair(a: parts[k], b: parts[k + 1])], r < best { best = r; at = k }
            }
            if at < 0 { break }
            let (a, b) = (parts[at], parts[at + 1])
            let merged = Int32(tokenIDs[tokens[Int(a)] + tokens[Int(b)]] ?? -1)
            if merged < 0 { break }
            // Merge every occurrence of this pair, left to right.
            var next: [Int32] = []
            next.reserveCapacity(parts.count)
            var k = 0
            while k < parts.count {
                if k + 1 < parts.count, parts[k] == a, parts[k + 1] == b { next.append(merged); k += 2 } else { next.append(parts[k]); k += 1 }
            }
            parts = next
        }
        return parts.map(Int.init)
    }

    /// The bytes a token stands for (specials: their text).
    public func bytes(of id: Int) -> [UInt8] {
        guard id >= 0 && id < tokens.count else { return [] }
        if isSpecial(id) { return Array(tokens[id].utf8) }
        var out: [UInt8] = []
        for u in tokens[id].unicodeScalars {
            if let b = unicodeToByte[u] { out.append(b) } else { out.append(contentsOf: Array(String(u).utf8)) }
        }
        return out
    }

    public func decode(_ ids: [Int]) -> String {
        String(decoding: ids.flatMap { bytes(of: $0) }, as: UTF8.self)
    }
}

public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    case unsupportedModel(String)
    case unsupportedPreTokenizer(String)
    case badMerge(index: Int, merge: String)

    public var description: String {
        switch self {
        case let .unsupportedModel(m): return "tokenizer.ggml.model '\(m)' is not supported (only byte-level BPE 'gpt2')"
        case let .unsupportedPreTokenizer(p): return "tokenizer.ggml.pre '\(p)' is not supported (smollm, qwen2, llama-bpe, gpt2)"
        case let .badMerge(i, m): return "tokenizer.ggml.merges[\(i)] '\(m)' does not name two tokens of the vocabulary"
        }
    }
}

/// GPT-2's reversible map from bytes to printable unicode characters: printable Latin-1 bytes map
/// to themselves, the rest to U+0100 onwards in byte order.
let byteToUnicode: [Character] = {
    var table = [Character](repeating: " ", count: 256)
    var next: UInt32 = 256
    for b in 0..<256 {
        let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
        if printable { table[b] = Character(Unicode.Scalar(UInt32(b))!) } else { table[b] = Character(Unicode.Scalar(next)!); next += 1 }
    }
    return table
}()

let unicodeToByte: [Unicode.Scalar: UInt8] = {
    var m: [Unicode.Scalar: UInt8] = [:]
    for (b, c) in byteToUnicode.enumerated() { m[c.unicodeScalars.first!] = UInt8(b) }
    return m
}()
