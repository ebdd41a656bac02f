/// Parses the text form written by `IRPrinter`. Errors name the line and column and show the line.
public struct IRParseError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let line: Int
    public let column: Int
    public let message: String
    public let lineText: String

    public var description: String {
        "\(file):\(line):\(column): error: \(message)\n  \(lineText)\n  \(String(repeating: " ", count: max(0, column - 1)))^"
    }
}

public struct IRParser {
    let text: [UInt8]
    let file: String
    var pos = 0

    public static func parse(_ text: String, file: String = "<input>") throws -> Module {
        var p = IRParser(text: Array(text.utf8), file: file)
        return try p.parseModule()
    }

    init(text: [UInt8], file: String) { self.text = text; self.file = file }

    // MARK: errors and lexing helpers

    func error(_ message: String, at: Int? = nil) -> IRParseError {
        let at = min(at ?? pos, text.count)
        var line = 1, lineStart = 0
        for i in 0..<at where text[i] == UInt8(ascii: "\n") { line += 1; lineStart = i + 1 }
        var lineEnd = lineStart
        while lineEnd < text.count && text[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
        let col = String(decoding: text[lineStart..<at], as: UTF8.self).count + 1
        return IRParseError(file: file, line: line, column: col, message: message,
                            lineText: String(decoding: text[lineStart..<lineEnd], as: UTF8.self))
    }

    var peek: UInt8? { pos < text.count ? text[pos] : nil }

    /// Skips spaces, newlines and `//` comments.
    mutating func skip() {
        while let c = peek {
            if c == 32 || c == 9 || c == 10 || c == 13 { pos += 1; continue }
            if c == UInt8(ascii: "/"), pos + 1 < text.count, text[pos + 1] == UInt8(ascii: "/") {
                while let d = peek, d != 10 { pos += 1; _ = d }
                continue
            }
            break
        }
    }

    func describeHere() -> String {
        guard pos < text.count else { return "end of input" }
        var end = pos
        while end < text.count, end - pos < 20, !(text[end] == 10 || text[end] == 32) { end += 1 }
        return "'\(String(decoding: text[pos..<max(end, pos + 1)], as: UTF8.self))'"
    }

    mutating func expect(_ s: String) throws {
        skip()
        let b = Array(s.utf8)
        guard text.count - pos >= b.count, Array(text[pos..<(pos + b.count)]) == b else {
            throw error("expected '\(s)', found \(describeHere())")
        }
        pos += b.count
    }

    mutating func accept(_ s: String) -> Bool {
        skip()
        let b = Array(s.utf8)
        if text.count - pos >= b.count, Array(text[pos..<(pos + b.count)]) == b { pos += b.count; return true }
        return false
    }

    static func isIdent(_ c: UInt8) -> Bool {
        (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c == 95 || c == 46 || c == 45
    }

    mutating func word() throws -> String {
        skip()
        let start = pos
        while let c = peek, Self.isIdent(c) { pos += 1 }
        guard pos > start else { throw error("expected a name, found \(describeHere())") }
        return String(decoding: text[start..<pos], as: UTF8.self)
    }

    mutating func keyword(_ k: String) throws {
        let at = pos
        let w = try word()
        guard w == k else { throw error("expected '\(k)', found '\(w)'", at: at) }
    }

    mutating func string() throws -> String {
        skip()
        guard peek == UInt8(ascii: "\"") else { throw error("expected a quoted string, found \(describeHere())") }
        pos += 1
        var bytes: [UInt8] = []
        while true {
            guard let c = peek else { throw error("unterminated string") }
            pos += 1
            if c == UInt8(ascii: "\"") { break }
            if c == 10 { throw error("newline inside a string", at: pos - 1) }
            if c == UInt8(ascii: "\\") {
                guard let e = peek else { throw error("unterminated escape") }
                pos += 1
                switch e {
                case UInt8(ascii: "n"): bytes.append(10)
                case UInt8(ascii: "t"): bytes.append(9)
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): bytes.append(e)
                case UInt8(ascii: "u"):
                    try expect("{")
                    let s = pos
                    while let h = peek, h != UInt8(ascii: "}") { pos += 1 }
                    guard let v = UInt32(String(decoding: text[s..<pos], as: UTF8.self), radix: 16), let u = Unicode.Scalar(v) else {
                        throw error("bad \\u{...} escape", at: s)
                    }
                    try expect("}")
                    bytes.append(contentsOf: Array(String(u).utf8))
                default: throw error("unknown escape '\\\(Character(Unicode.Scalar(e)))'", at: pos - 1)
                }
            } else {
                bytes.append(c)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    mutating func symbol() throws -> String {
        try expect("@")
        if peek == UInt8(ascii: "\"") { return try string() }
        let start = pos
        while let c = peek, Self.isIdent(c) { pos += 1 }
        guard pos > start else { throw error("expected a symbol name after '@'") }
        return String(decoding: text[start..<pos], as: UTF8.self)
    }

    /// `%N`
    mutating func valueRef() throws -> Int {
        try expect("%")
        let start = pos
        while let c = peek, c >= 48 && c <= 57 { pos += 1 }
        guard pos > start, let v = Int(String(decoding: text[start..<pos], as: UTF8.self)) else {
            throw error("expected a value number after '%'")
        }
        return v
    }

    /// A number token: returns (text, isFloat).
    mutating func number() throws -> (String, Bool) {
        skip()
        let start = pos
        while let c = peek, Self.isIdent(c) || c == UInt8(ascii: "+") { pos += 1 }
        let s = String(decoding: text[start..<pos], as: UTF8.self)
        if Int(s) != nil { return (s, false) }
        if Double(s) != nil { return (s, true) }
        throw error("expected a number, found '\(s)'", at: start)
    }

    mutating func int() throws -> Int {
        let at = pos
        let (s, isFloat) = try number()
        guard !isFloat, let v = Int(s) else { throw error("expected an integer, found '\(s)'", at: at) }
        return v
    }

    // MARK: grammar

    mutating func parseType() throws -> TensorType {
        try keyword("tensor")
        try expect("<")
        // dims 'x' ... dtype, e.g. 1x16x576xf32 or f32 (scalar)
        let start = pos
        while let c = peek, Self.isIdent(c) || c == UInt8(ascii: "?") { pos += 1 }
        let body = String(decoding: text[start..<pos], as: UTF8.self)
        let parts = body.split(separator: "x", omittingEmptySubsequences: false).map(String.init)
        guard let last = parts.last, let dtype = DType(rawValue: last) else {
            throw error("expected a shape and element type like 1x16xf32, found '\(body)'", at: start)
        }
        var shape: [Int] = []
        for p in parts.dropLast() {
            if p == "?" { shape.append(TensorType.dynamic); continue }
            guard let d = Int(p), d >= 0 else { throw error("bad dimension '\(p)' in '\(body)'", at: start) }
            shape.append(d)
        }
        var t = TensorType(dtype, shape)
        if accept(",") {
            try keyword("q")
            try expect("<")
            skip()
            if peek == UInt8(ascii: "a") {
                try keyword("axis"); try expect("=")
                let axis = try int()
                try expect(",")
                t.quant = .perChannel(axis: axis, scales: try symbol())
            } else {
                let at = pos
                let (s, _) = try number()
                guard let scale = Float(s) else { throw error("bad scale '\(s)'", at: at) }
                var zp = 0
                if accept(",") { try keyword("zp"); try expect("="); zp = try int() }
                t.quant = .perTensor(scale: scale, zeroPoint: zp)
            }
            try expect(">")
        }
        try expect(">")
        return t
    }

    mutating func parseAttribute() throws -> Attribute {
        skip()
        guard let c = peek else { throw error("expected an attribute value, found end of input") }
        switch c {
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "@"): return .symbol(try symbol())
        case UInt8(ascii: "["):
            pos += 1
            if accept("]") { return .ints([]) }
            var items: [(String, Bool)] = []
            repeat { items.append(try number()) } while accept(",")
            try expect("]")
            if items.contains(where: { $0.1 }) { return .floats(items.map { Double($0.0)! }) }
            return .ints(items.map { Int($0.0)! })
        case UInt8(ascii: "t"), UInt8(ascii: "f"):
            let at = pos
            let w = try word()
            if w == "true" { return .bool(true) }
            if w == "false" { return .bool(false) }
            throw error("expected an attribute value, found '\(w)'", at: at)
        default:
            let (s, isFloat) = try number()
            return isFloat ? .float(Double(s)!) : .int(Int(s)!)
        }
    }

    /// Inline constant values: `[v, v, ...]`, exactly the type's element count.
    mutating func parseData(_ t: TensorType, at: Int) throws -> TensorData {
        try expect("[")
        var items: [String] = []
        if !accept("]") {
            repeat { items.append(try number().0) } while accept(",")
            try expect("]")
        }
        guard items.count == t.elementCount else {
            throw error("constant has \(items.count) values but its type \(t) holds \(t.elementCount)", at: at)
        }
        func ints<T: FixedWidthInteger>(_: T.Type) throws -> [T] {
            try items.map { guard let v = T($0) else { throw error("'\($0)' is not a valid \(t.dtype.rawValue)", at: at) }; return v }
        }
        switch t.dtype {
        case .f32: return .f32(try items.map { guard let v = Float($0) else { throw error("'\($0)' is not a number", at: at) }; return v })
        case .i8: return .i8(try ints(Int8.self))
        case .i16: return .i16(try ints(Int16.self))
        case .i32: return .i32(try ints(Int32.self))
        case .i64: return .i64(try ints(Int64.self))
        }
    }

    mutating func parseAttributes() throws -> [String: Attribute] {
        var attrs: [String: Attribute] = [:]
        guard accept("{") else { return attrs }
        if accept("}") { return attrs }
        repeat {
            let at = pos
            let k = try word()
            if attrs[k] != nil { throw error("attribute '\(k)' is given twice", at: at) }
            try expect("=")
            attrs[k] = try parseAttribute()
        } while accept(",")
        try expect("}")
        return attrs
    }

    mutating func parseModule() throws -> Module {
        try keyword("module")
        var m = Module(name: try symbol())
        m.attributes = try parseAttributes()
        var seenConst = Set<String>(), seenFunc = Set<String>()
        while true {
            skip()
            if peek == nil { break }
            let at = pos
            let w = try word()
            switch w {
            case "const":
                let name = try symbol()
                if !seenConst.insert(name).inserted { throw error("constant @\(name) is declared twice", at: at) }
                try expect(":")
                let type = try parseType()
                m.constants.append(ConstantDecl(name, type))
                if accept("=") { m.constantData[name] = .data(try parseData(type, at: at)) }
            case "func":
                let f = try parseFunction()
                if !seenFunc.insert(f.name).inserted { throw error("function @\(f.name) is defined twice", at: at) }
                m.functions.append(f)
            default:
                throw error("expected 'const' or 'func', found '\(w)'", at: at)
            }
        }
        return m
    }

    mutating func parseFunction() throws -> Function {
        var f = Function(name: try symbol())
        try expect("(")
        if !accept(")") {
            repeat {
                let at = pos
                let id = try valueRef()
                guard id == f.params.count else { throw error("parameter %\(id) is out of order: expected %\(f.params.count)", at: at) }
                let name = try string()
                try expect(":")
                f.params.append(Param(name, try parseType()))
            } while accept(",")
            try expect(")")
        }
        try expect("->")
        try expect("(")
        var declared: [(String, TensorType, Int)] = []
        if !accept(")") {
            repeat {
                let at = pos
                let name = try string()
                try expect(":")
                declared.append((name, try parseType(), at))
            } while accept(",")
            try expect(")")
        }
        try expect("{")
        while true {
            skip()
            let at = pos
            if accept("return") {
                var values: [Int] = []
                skip()
                if peek == UInt8(ascii: "%") {
                    repeat {
                        let vat = pos
                        let v = try valueRef()
                        guard v < f.valueCount else { throw error("%\(v) is not defined", at: vat) }
                        values.append(v)
                    } while accept(",")
                }
                guard values.count == declared.count else {
                    throw error("return has \(values.count) values but the signature declares \(declared.count) results", at: at)
                }
                for (v, d) in zip(values, declared) where f.type(of: v) != d.1 {
                    throw error("result \"\(d.0)\" is declared \(d.1) but %\(v) is \(f.type(of: v))", at: d.2)
                }
                f.results = zip(declared, values).map { ($0.0, $1) }
                try expect("}")
                return f
            }
            let id = try valueRef()
            guard id == f.valueCount else { throw error("value %\(id) is out of order: expected %\(f.valueCount)", at: at) }
            try expect("=")
            let kat = pos
            let kname = try word()
            guard let kind = OpKind(rawValue: kname) else { throw error("unknown op '\(kname)'", at: kat) }
            var operands: [Int] = []
            skip()
            if peek == UInt8(ascii: "%") {
                repeat {
                    let vat = pos
                    let v = try valueRef()
                    guard v < f.valueCount else { throw error("%\(v) is used before it is defined", at: vat) }
                    operands.append(v)
                } while accept(",")
            }
            let attrs = try parseAttributes()
            try expect(":")
            let type = try parseType()
            var loc: String?
            if accept("loc") { try expect("("); loc = try string(); try expect(")") }
            f.ops.append(Op(kind, operands, attrs, type: type, loc: loc))
        }
    }
}
