/// A value being built: its id in the function and its type.
public struct Value: Hashable, Sendable {
    public let id: Int
    public let type: TensorType
}

/// Builds a module: declares constants with their data, and functions op by op, inferring each
/// result type from the op catalog (a wrong combination is reported where it is built).
public final class ModuleBuilder {
    public private(set) var module: Module

    public init(name: String, attributes: [String: Attribute] = [:]) {
        module = Module(name: name, attributes: attributes)
    }

    /// Declares a constant (once per name); `source` nil declares it without data (as parsed text does).
    public func declareConstant(_ name: String, _ type: TensorType, _ source: ConstantSource?) {
        if module.constant(name) == nil { module.constants.append(ConstantDecl(name, type)) }
        if let s = source { module.constantData[name] = s }
    }

    public func setAttribute(_ key: String, _ value: Attribute) { module.attributes[key] = value }

    /// Drops constants no function refers to (by op or by per-channel scales).
    public func removeUnusedConstants() {
        var used = Set<String>()
        func note(_ t: TensorType) { if case let .perChannel(_, s)? = t.quant { used.insert(s) } }
        for f in module.functions {
            f.params.forEach { note($0.type) }
            for op in f.ops {
                note(op.type)
                if op.kind == .constant, case let .symbol(n)? = op.attributes["name"] { used.insert(n) }
            }
        }
        for c in module.constants where used.contains(c.name) { note(c.type) }
        module.constants.removeAll { !used.contains($0.name) }
        for k in module.constantData.keys where !used.contains(k) { module.constantData[k] = nil }
    }

    public func addFunction(_ f: Function) { module.functions.append(f) }
}

public struct BuildError: Error, CustomStringConvertible {
    public let description: String
}

public final class FunctionBuilder {
    public private(set) var function: Function
    let module: ModuleBuilder
    /// The location recorded on ops built from now on.
    public var loc: String?
    private var constantValues: [String: Value] = [:]

    public init(_ name: String, in module: ModuleBuilder) {
        function = Function(name: name)
        self.module = module
    }

    public func param(_ name: String, _ type: TensorType) -> Value {
        precondition(function.ops.isEmpty, "parameters come before ops")
        function.params.append(Param(name, type))
        return Value(id: function.params.count - 1, type: type)
    }

    /// The value of a declared constant (one `constant` op per name and function).
    public func constant(_ name: String) throws -> Value {
        if let v = constantValues[name] { return v }
        guard let decl = module.module.constant(name) else { throw BuildError(description: "constant @\(name) is not declared") }
        let v = append(Op(.constant, [], ["name": .symbol(name)], type: decl.type, loc: nil))
        constantValues[name] = v
        return v
    }

    @discardableResult
    public func emit(_ kind: OpKind, _ operands: [Value], _ attributes: [String: Attribute] = [:]) throws -> Value {
        let type: TensorType
        do {
            type = try kind.spec.resultType(operands.map(\.type), attributes)
        } catch {
            throw BuildError(description: "@\(function.name) \(kind.rawValue)\(loc.map { " at \($0)" } ?? ""): \(error)")
        }
        return append(Op(kind, operands.map(\.id), attributes, type: type, loc: loc))
    }

    private func append(_ op: Op) -> Value {
        function.ops.append(op)
        return Value(id: function.valueCount - 1, type: op.type)
    }

    public func output(_ name: String, _ v: Value) { function.results.append((name, v.id)) }

    public func finish() { module.addFunction(function) }
}
