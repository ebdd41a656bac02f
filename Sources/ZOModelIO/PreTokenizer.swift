/// Splits text into the chunks that byte-level BPE encodes independently. Each scheme is a
/// hand-written scanner equivalent to the regular expression the named tokenizer uses
/// (\p{L} letters, \p{N} numbers, \s White_Space), so no regex engine is involved.
public enum PreTokenizer: String, Sendable, CaseIterable {
    /// GPT-2's pattern with every digit split off first (SmolLM, StarCoder):
    /// `\p{N}` then `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case smollm
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case qwen2
    /// As qwen2 but numbers in runs of up to three: `\p{N}{1,3}` (Llama 3).
    case llamaBPE = "llama-bpe"
    /// GPT-2's pattern alone.
    case gpt2

    public init?(ggufName: String) {
        switch ggufName {
        case "smollm", "starcoder", "refact", "codeshell": self = .smollm
        case "qwen2": self = .qwen2
        case "llama-bpe", "llama3": self = .llamaBPE
        case "gpt2", "default": self = .gpt2
        default: return nil
        }
    }

    public func split(_ text: String) -> [Substring.UnicodeScalarView] {
        let s = Array(text.unicodeScalars)
        var out: [Range<Int>] = []
        switch self {
        case .gpt2: Self.gpt2(s, 0..<s.count, &out)
        case .smollm:
            // Digits first: each digit is its own chunk; the text between digits goes through GPT-2's pattern.
            var start = 0
            for i in 0..<s.count where isNumber(s[i]) {
                if start < i { Self.gpt2(s, start..<i, &out) }
                out.append(i..<(i + 1))
                start = i + 1
            }
            if start < s.count { Self.gpt2(s, start..<s.count, &out) }
        case .qwen2: Self.llama3Style(s, maxDigits: 1, &out)
        case .llamaBPE: Self.llama3Style(s, maxDigits: 3, &out)
        }
        let view = text.unicodeScalars
        // Map scalar offsets back to the string's unicode-scalar view.
        var idx: [String.UnicodeScalarView.Index] = []
        idx.reserveCapacity(s.count + 1)
        var i = view.startIndex
        while i != view.endIndex { idx.append(i); i = view.index(after: i) }
        idx.append(view.endIndex)
        return out.map { view[idx[$0.lowerBound]..<idx[$0.upperBound]] }
    }

    /// The contractions of GPT-2 (`'s 't 're 've 'm 'll 'd`); returns the match length or 0.
    static func contraction(_ s: [Unicode.Scalar], _ i: Int, _ end: Int, caseInsensitive: Bool) -> Int {
        guard i < end, s[i] == "'" else { return 0 }
        func at(_ k: Int) -> Unicode.Scalar? {
            guard i + k < end else { return nil }
            let c = s[i + k]
            return caseInsensitive ? Unicode.Scalar(String(c).lowercased().unicodeScalars.first!.value) ?? c : c
        }
        if let a = at(1) {
            if a == "s" || a == "t" || a == "m" || a == "d" { return 2 }
            if let b = at(2), (a == "r" && b == "e") || (a == "v" && b == "e") || (a == "l" && b == "l") { return 3 }
        }
        return 0
    }

    static func gpt2(_ s: [Unicode.Scalar], _ range: Range<Int>, _ out: inout [Range<Int>]) {
        var i = range.lowerBound
        let end = range.upperBound
        while i < end {
            let start = i
            let c = contraction(s, i, end, caseInsensitive: false)
            if c > 0 { i += c; out.append(start..<i); continue }
            // ` ?` optional leading space, then a run of one class.
            var j = i
            if s[j] == " ", j + 1 < end, !isWhitespace(s[j + 1]) { j += 1 }
            if isLetter(s[j]) {
                while j < end, isLetter(s[j]) { j += 1 }
            } else if isNumber(s[j]) {
                while j < end, isNumber(s[j]) { j += 1 }
            } else if !isWhitespace(s[j]) {
                while j < end, !isWhitespace(s[j]), !isLetter(s[j]), !isNumber(s[j]) { j += 1 }
            } else {
                // `\s+(?!\S)`: a whitespace run, leaving its last space to the next word when one follows.
                while j < end, isWhitespace(s[j]) { j += 1 }
                if j < end, j - i > 1 { j -= 1 }
            }
            i = j
            out.append(start..<i)
        }
    }

    static func llama3Style(_ s: [Unicode.Scalar], maxDigits: Int, _ out: inout [Range<Int>]) {
        let end = s.count
        var i = 0
        func isCRLF(_ c: Unicode.Scalar) -> Bool { c == "\r" || c == "\n" }
        while i < end {
            let start = i
            let c = contraction(s, i, end, caseInsensitive: true)
            if c > 0 { i += c; out.append(start..<i); continue }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            var j = i
            if !isCRLF(s[j]), !isLetter(s[j]), !isNumber(s[j]), j + 1 < end, isLetter(s[j + 1]) { j += 1 }
            if isLetter(s[j]) {
                while j < end, isLetter(s[j]) { j += 1 }
                i = j; out.append(start..<i); continue
            }
            // `\p{N}{1,maxDigits}`
            if isNumber(s[i]) {
                j = i
                while j < end, j - i < maxDigits, isNumber(s[j]) { j += 1 }
                i = j; out.append(start..<i); continue
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            j = i
            if s[j] == " ", j + 1 < end, !isWhitespace(s[j + 1]), !isLetter(s[j + 1]), !isNumber(s[j + 1]) { j += 1 }
            if !isWhitespace(s[j]), !isLetter(s[j]), !isNumber(s[j]) {
                while j < end, !isWhitespace(s[j]), !isLetter(s[j]), !isNumber(s[j]) { j += 1 }
                while j < end, isCRLF(s[j]) { j += 1 }
                i = j; out.append(start..<i); continue
            }
            // `\s*[\r\n]+`: whitespace up to and including the last newline of the run.
            j = i
            var lastNewlineEnd = -1
            while j < end, isWhitespace(s[j]) {
                if isCRLF(s[j]) { lastNewlineEnd = j + 1 }
                j += 1
            }
            if lastNewlineEnd > 0 {
                i = lastNewlineEnd; out.append(start..<i); continue
            }
            // `\s+(?!\S)|\s+`
            if j < end, j - i > 1 { j -= 1 }
            i = j
            out.append(start..<i)
        }
    }
}

@inline(__always) func isLetter(_ c: Unicode.Scalar) -> Bool {
    switch c.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
    default: return false
    }
}

@inline(__always) func isNumber(_ c: Unicode.Scalar) -> Bool {
    switch c.properties.generalCategory {
    case .decimalNumber, .letterNumber, .otherNumber: return true
    default: return false
    }
}

@inline(__always) func isWhitespace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace }
