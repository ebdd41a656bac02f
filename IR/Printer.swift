/// The deterministic text form. Values are numbered in definition order (parameters first),
/// attributes are sorted by name, floats print in their shortest exact form, and constants print
/// as `@name` references, never as bytes.
public enum IRPrinter {
    public static func print(_ m: Module) -> String {
        var out = "module \(symbol(m.name))"
        if !m.attributes.isEmpty { out += " " + attributesText(m.attributes) }
        out += "\n"
        if !m.constants.isEmpty {
            out += "\n"
            for c in m.constants {
                out += "const \(symbol(c.name)) : \(typeText(c.type))"
                if case let .data(d)? = m.constantData[c.name], d.count <= inlineLimit { out += " = " + dataText(d) }
                out += "\n"
            }
        }
        for f in m.functions { out += "\n" + print(f) }
        return out
    }

    public static func print(_ f: Function) -> String {
        var out = "func \(symbol(f.name))("
        out += f.params.enumerated().map { "%\($0.offset) \(quoted($0.element.name)): \(typeText($0.element.type))" }.joined(separator: ", ")
        out += ") -> ("
        out += f.results.map { "\(quoted($0.name)): \(typeText(f.type(of: $0.value)))" }.joined(separator: ", ")
        out += ") {\n"
        for (i, op) in f.ops.enumerated() { out += "  " + opText(op, id: f.params.count + i) + "\n" }
        out += "  return " + f.resultValues.map { "%\($0)" }.joined(separator: ", ") + "\n}\n"
        return out
    }

    /// Constants with at most this many elements print their values inline; larger ones only by name.
    public static let inlineLimit = 64

    static func dataText(_ d: TensorData) -> String {
        switch d {
        case let .f32(a): return "[" + a.map { floatText(Double($0)) }.joined(separator: ", ") + "]"
        case let .i8(a): return "[" + a.map { String($0) }.joined(separator: ", ") + "]"
        case let .i8View(v): return "[" + v.buffer.map { String($0) }.joined(separator: ", ") + "]"
        case let .i16(a): return "[" + a.map { String($0) }.joined(separator: ", ") + "]"
        case let .i16View(v): return "[" + v.buffer.map { String($0) }.joined(separator: ", ") + "]"
        case let .i32(a): return "[" + a.map { String($0) }.joined(separator: ", ") + "]"
        case let .i32View(v): return "[" + v.buffer.map { String($0) }.joined(separator: ", ") + "]"
        case let .i64View(v): return "[" + v.buffer.map { String($0) }.joined(separator: ", ") + "]"
        case let .i64(a): return "[" + a.map { String($0) }.joined(separator: ", ") + "]"
        }
    }

    public static func opText(_ op: Op, id: Int) -> String {
        var s = "%\(id) = \(op.kind.rawValue)"
        if !op.operands.isEmpty { s += " " + op.operands.map { "%\($0)" }.joined(separator: ", ") }
        if !op.attributes.isEmpty { s += " " + attributesText(op.attributes) }
        s += " : " + typeText(op.type)
        if let l = op.loc { s += " loc(\(quoted(l)))" }
        return s
    }

    public static func typeText(_ t: TensorType) -> String {
        var s = "tensor<" + t.shape.map { $0 == TensorType.dynamic ? "?" : String($0) }.joined(separator: "x") + (t.shape.isEmpty ? "" : "x") + t.dtype.rawValue
        switch t.quant {
        case nil: break
        case let .perTensor(scale, zp)?: s += ", q<\(scale)" + (zp == 0 ? "" : ", zp=\(zp)") + ">"
        case let .perChannel(axis, scales)?: s += ", q<axis=\(axis), \(symbol(scales))>"
        }
        return s + ">"
    }

    static func attributesText(_ a: [String: Attribute]) -> String {
        "{" + a.keys.sorted().map { "\($0) = \(attributeText(a[$0]!))" }.joined(separator: ", ") + "}"
    }

    static func attributeText(_ a: Attribute) -> String {
        switch a {
        case let .int(v): return "\(v)"
        case let .float(v): return floatText(v)
        case let .ints(v): return "[" + v.map(String.init).joined(separator: ", ") + "]"
        case let .floats(v): return "[" + v.map(floatText).joined(separator: ", ") + "]"
        case let .string(v): return quoted(v)
        case let .bool(v): return v ? "true" : "false"
        case let .symbol(v): return symbol(v)
        }
    }

    /// Always carries a '.', an exponent, or inf/nan, so it never reads back as an int.
    public static func floatText(_ v: Double) -> String {
        let s = "\(v)"
        return s.contains(".") || s.contains("e") || s.contains("inf") || s.contains("nan") ? s : s + ".0"
    }

    static func isSymbolChar(_ c: Unicode.Scalar) -> Bool {
        (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c == "_" || c == "." || c == "-"
    }

    static func symbol(_ name: String) -> String {
        !name.isEmpty && name.unicodeScalars.allSatisfy(isSymbolChar) ? "@" + name : "@" + quoted(name)
    }

    static func quoted(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default:
                if c.value < 0x20 || c.value == 0x7F { out += "\\u{\(String(c.value, radix: 16))}" } else { out.unicodeScalars.append(c) }
            }
        }
        return out + "\""
    }
}
