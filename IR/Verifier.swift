/// One verifier finding: where (function, value, op, source location) and what is wrong.
public struct Diagnostic: Error, CustomStringConvertible, Equatable, Sendable {
    public let function: String
    public let value: Int?
    public let op: String?
    public let loc: String?
    public let message: String

    public init(function: String, value: Int? = nil, op: String? = nil, loc: String? = nil, message: String) {
        self.function = function; self.value = value; self.op = op; self.loc = loc; self.message = message
    }

    public var description: String {
        var s = "@\(function)"
        if let v = value { s += ": %\(v)" }
        if let o = op { s += " = \(o)" }
        if let l = loc { s += " (at \(l))" }
        return s + ": " + message
    }
}

/// All the verifier's findings, in order.
public struct VerificationError: Error, CustomStringConvertible {
    public let diagnostics: [Diagnostic]
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

public enum Verifier {
    /// Checks SSA order, arity, attributes, result types (recomputed from the catalog), constant
    /// declarations, and, when `profile` is given, that every op and dtype is allowed in it.
    public static func verify(_ m: Module, profile: Profile? = nil) throws {
        let d = diagnose(m, profile: profile)
        if !d.isEmpty { throw VerificationError(diagnostics: d) }
    }

    public static func diagnose(_ m: Module, profile: Profile? = nil) -> [Diagnostic] {
        var out: [Diagnostic] = []
        var constTypes: [String: TensorType] = [:]
        for c in m.constants {
            if constTypes[c.name] != nil { out.append(Diagnostic(function: "", message: "constant @\(c.name) is declared twice")) }
            constTypes[c.name] = c.type
            out.append(contentsOf: typeProblems(c.type, constTypes: nil).map { Diagnostic(function: "", message: "constant @\(c.name): \($0)") })
        }
        var names = Set<String>()
        for f in m.functions {
            if !names.insert(f.name).inserted { out.append(Diagnostic(function: f.name, message: "function is defined twice")) }
            out.append(contentsOf: verify(f, constTypes: constTypes, profile: profile))
        }
        return out
    }

    static func typeProblems(_ t: TensorType, constTypes: [String: TensorType]?) -> [String] {
        var p: [String] = []
        if t.shape.contains(where: { $0 <= 0 && $0 != TensorType.dynamic }) { p.append("shape \(t.shape) has a dimension that is not positive") }
        if let q = t.quant {
            if t.dtype == .f32 { p.append("f32 tensors cannot carry quantization") }
            if case let .perChannel(axis, scales) = q {
                if axis < 0 || axis >= t.rank { p.append("quantization axis \(axis) is outside rank \(t.rank)") }
                if let ct = constTypes {
                    if let st = ct[scales] {
                        if st.dtype != .f32 || (axis >= 0 && axis < t.rank && st.shape != [t.shape[axis]]) {
                            p.append("scales @\(scales) must be f32 [\(axis < t.rank && axis >= 0 ? t.shape[axis] : 0)], got \(st)")
                        }
                    } else {
                        p.append("scales @\(scales) is not a declared constant")
                    }
                }
            }
        }
        return p
    }

    static func verify(_ f: Function, constTypes: [String: TensorType], profile: Profile?) -> [Diagnostic] {
        var out: [Diagnostic] = []
        for (i, p) in f.params.enumerated() {
            for problem in typeProblems(p.type, constTypes: constTypes) {
                out.append(Diagnostic(function: f.name, value: i, message: "parameter \"\(p.name)\": \(problem)"))
            }
            if let pr = profile, !allowed(p.type.dtype, in: pr) {
                out.append(Diagnostic(function: f.name, value: i, message: "parameter \"\(p.name)\" has dtype \(p.type.dtype.rawValue), which the \(pr.rawValue) profile does not allow"))
            }
        }
        for (i, op) in f.ops.enumerated() {
            let id = f.params.count + i
            func diag(_ m: String) { out.append(Diagnostic(function: f.name, value: id, op: op.kind.rawValue, loc: op.loc, message: m)) }
            let spec = op.kind.spec
            if let r = op.attributes["range"], !matches(r, .float) { diag("annotation 'range' must be a float") }
            if let c = op.attributes["channel_range"] {
                if case let .symbol(n) = c, constTypes[n] != nil {} else { diag("annotation 'channel_range' must name a declared constant") }
            }
            if let pr = profile, !spec.profiles.contains(pr) {
                diag("op '\(op.kind.rawValue)' is not in the \(pr.rawValue) profile (allowed in: \(spec.profiles.map(\.rawValue).sorted().joined(separator: ", ")))")
            }
            if let pr = profile, !allowed(op.type.dtype, in: pr) {
                diag("result dtype \(op.type.dtype.rawValue) is not allowed in the \(pr.rawValue) profile")
            }
            for problem in typeProblems(op.type, constTypes: constTypes) { diag(problem) }
            guard spec.operands.allows(op.operands.count) else {
                diag("takes \(spec.operands.text) operands, got \(op.operands.count)"); continue
            }
            if let bad = op.operands.first(where: { $0 < 0 || $0 >= id }) {
                diag("operand %\(bad) is not defined before this op"); continue
            }
            let known = Set(spec.attributes.map(\.name))
            for k in op.attributes.keys.sorted() where !known.contains(k) && !OpCatalog.annotations.contains(k) { diag("unknown attribute '\(k)'") }
            var attrsOK = true
            for a in spec.attributes {
                guard let v = op.attributes[a.name] else {
                    if a.required { diag("missing attribute '\(a.name)'"); attrsOK = false }
                    continue
                }
                if !matches(v, a.kind) { diag("attribute '\(a.name)' must be \(a.kind), got \(v.kindName)"); attrsOK = false }
            }
            guard attrsOK else { continue }
            if op.kind == .constant {
                guard case let .symbol(name)? = op.attributes["name"], let ct = constTypes[name] else {
                    diag("refers to an undeclared constant"); continue
                }
                if ct != op.type { diag("type \(op.type) differs from the declaration of @\(name): \(ct)") }
                continue
            }
            do {
                let expected = try spec.resultType(op.operands.map { f.type(of: $0) }, op.attributes)
                if expected != op.type { diag("result type \(op.type) should be \(expected)") }
            } catch {
                diag("\(error)")
            }
        }
        var resultNames = Set<String>()
        for (name, v) in f.results {
            if v < 0 || v >= f.valueCount { out.append(Diagnostic(function: f.name, message: "result \"\(name)\" refers to undefined %\(v)")) }
            if !resultNames.insert(name).inserted { out.append(Diagnostic(function: f.name, message: "result name \"\(name)\" is used twice")) }
        }
        return out
    }

    static func allowed(_ d: DType, in p: Profile) -> Bool {
        switch p {
        case .float: return true
        case .npu: return d != .f32
        }
    }

    static func matches(_ a: Attribute, _ k: AttrKind) -> Bool {
        switch (a, k) {
        case (.int, .int), (.float, .float), (.int, .float), (.ints, .ints), (.floats, .floats), (.ints([]), .floats),
             (.string, .string), (.bool, .bool), (.symbol, .symbol): return true
        default: return false
        }
    }
}
