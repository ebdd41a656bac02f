import Foundation

/// Where the default model lives: $ZO_MODEL, else $ZO_CACHE (default ~/.cache/zo) as fetched by
/// scripts/fetch-model.sh.
public enum DefaultModel {
    public static let fileName = "SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

    public static var path: String {
        let env = ProcessInfo.processInfo.environment
        if let p = env["ZO_MODEL"], !p.isEmpty { return p }
        let cache = env["ZO_CACHE"].flatMap { $0.isEmpty ? nil : $0 } ?? (NSHomeDirectory() + "/.cache/zo")
        return cache + "/" + fileName
    }
}

/// Turns a stream of token ids into text pieces, holding back bytes until they form whole UTF-8
/// characters (a character can span several byte-level tokens).
public struct TextStreamer {
    let tokenizer: Tokenizer
    var pending: [UInt8] = []

    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// The text that became complete with this token ("" while a character is unfinished).
    public mutating func push(_ id: Int) -> String {
        pending += tokenizer.bytes(of: id)
        // Find the longest prefix that ends on a character boundary.
        var end = pending.count
        var back = 0
        while back < min(4, pending.count) {
            let b = pending[pending.count - 1 - back]
            if b & 0xC0 != 0x80 {  // a lead or ASCII byte
                let need = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1
                if need > back + 1 { end = pending.count - 1 - back }
                break
            }
            back += 1
        }
        let out = String(decoding: pending[..<end], as: UTF8.self)
        pending.removeFirst(end)
        return out
    }

    /// Whatever is left (invalid bytes become U+FFFD).
    public mutating func finish() -> String {
        defer { pending = [] }
        return String(decoding: pending, as: UTF8.self)
    }
}
