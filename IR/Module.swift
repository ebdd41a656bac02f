/// One operation: a single SSA result whose value id is `function.params.count + index`.
public struct Op: Hashable, Sendable {
    public var kind: OpKind
    public var operands: [Int]
    public var attributes: [String: Attribute]
    public var type: TensorType
    /// Where the op came from (e.g. "blk.3.attn"), for diagnostics.
    public var loc: String?

    public init(_ kind: OpKind, _ operands: [Int], _ attributes: [String: Attribute] = [:], type: TensorType, loc: String? = nil) {
        self.kind = kind; self.operands = operands; self.attributes = attributes; self.type = type; self.loc = loc
    }
}

public struct Param: Hashable, Sendable {
    public var name: String
    public var type: TensorType
    public init(_ name: String, _ type: TensorType) { self.name = name; self.type = type }
}

/// A straight-line function: parameters, then ops in order, then named results.
public struct Function: Hashable, Sendable {
    public var name: String
    public var params: [Param]
    public var ops: [Op]
    public var results: [(name: String, value: Int)] {
        get { zip(resultNames, resultValues).map { ($0, $1) } }
        set { resultNames = newValue.map(\.name); resultValues = newValue.map(\.value) }
    }
    public var resultNames: [String]
    public var resultValues: [Int]

    public init(name: String, params: [Param] = [], ops: [Op] = [], results: [(name: String, value: Int)] = []) {
        self.name = name; self.params = params; self.ops = ops
        resultNames = results.map(\.name); resultValues = results.map(\.value)
    }

    public var valueCount: Int { params.count + ops.count }

    public func type(of value: Int) -> TensorType {
        value < params.count ? params[value].type : ops[value - params.count].type
    }

    /// The op defining `value`, or nil for a parameter.
    public func op(defining value: Int) -> Op? { value < params.count ? nil : ops[value - params.count] }
}

public struct ConstantDecl: Hashable, Sendable {
    public var name: String
    public var type: TensorType
    public init(_ name: String, _ type: TensorType) { self.name = name; self.type = type }
}

/// Where a constant's bytes come from: in memory, or produced on first use (e.g. dequantized from a
/// memory-mapped GGUF) so importing a model does not touch its weights.
public enum ConstantSource: @unchecked Sendable {
    case data(TensorData)
    case lazy(() throws -> TensorData)
}

/// A module: named constants (declared with their types; their data lives beside, never in the
/// text) and several entry functions.
public struct Module: Sendable {
    public var name: String
    public var attributes: [String: Attribute]
    public var constants: [ConstantDecl]
    public var functions: [Function]
    /// Constant data by name. Not part of module equality or the text form.
    public var constantData: [String: ConstantSource]

    public init(name: String, attributes: [String: Attribute] = [:], constants: [ConstantDecl] = [],
                functions: [Function] = [], constantData: [String: ConstantSource] = [:]) {
        self.name = name; self.attributes = attributes; self.constants = constants
        self.functions = functions; self.constantData = constantData
    }

    public func function(_ name: String) -> Function? { functions.first { $0.name == name } }
    public func constant(_ name: String) -> ConstantDecl? { constants.first { $0.name == name } }

    /// Adds another module's functions, attributes, and the constants this one lacks (a constant
    /// both declare is the same weight: lowered from one model, it keeps one segment).
    public mutating func merge(_ other: Module) {
        functions += other.functions
        attributes.merge(other.attributes) { mine, _ in mine }
        let have = Set(constants.map(\.name))
        for c in other.constants where !have.contains(c.name) {
            constants.append(c)
            if let d = other.constantData[c.name] { constantData[c.name] = d }
        }
    }
}

extension Module: Equatable {
    /// Structural equality: name, attributes, constant declarations and functions (not constant data).
    public static func == (a: Module, b: Module) -> Bool {
        a.name == b.name && a.attributes == b.attributes && a.constants == b.constants && a.functions == b.functions
    }
}
