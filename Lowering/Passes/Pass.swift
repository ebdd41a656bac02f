import ZOIR

/// A pass: a named transformation of a module (or a diagnostic saying why it cannot apply).
public protocol Pass {
    var name: String { get }
    func run(_ module: Module) throws -> Module
}

/// A pass refused its input; the message names the op, its location and the reason.
public struct PassError: Error, CustomStringConvertible {
    public let pass: String
    public let diagnostics: [Diagnostic]
    public init(pass: String, _ diagnostics: [Diagnostic]) { self.pass = pass; self.diagnostics = diagnostics }
    public init(pass: String, function: String, message: String) {
        self.init(pass: pass, [Diagnostic(function: function, message: message)])
    }
    public var description: String { diagnostics.map { "\(pass): \($0)" }.joined(separator: "\n") }
}

/// The passes `zoc opt --passes=` knows, by name.
public enum PassRegistry {
    public static let names = ["decompose", "calibrate", "quantize", "legalize-npu", "fold-constants", "dce", "memory-plan", "share-constants"]

    public static func make(_ name: String) throws -> Pass {
        switch name {
        case "decompose": return DecomposePass()
        case "calibrate": return CalibratePass()
        case "quantize": return QuantizePass()
        case "legalize-npu": return LegalizeNPUPass()
        case "fold-constants": return FoldConstantsPass()
        case "dce": return DCEPass()
        case "memory-plan": return MemoryPlanPass()
        case "share-constants": return ShareConstantsPass()
        default:
            throw PassError(pass: "pipeline", function: "", message: "unknown pass '\(name)' (known: \(names.joined(separator: ", ")))")
        }
    }
}

/// Runs passes in order, verifying after each; `afterEach` sees every intermediate module.
public struct PassManager {
    public let passes: [Pass]

    public init(_ passes: [Pass]) { self.passes = passes }

    public init(pipeline: String) throws {
        passes = try pipeline.split(separator: ",").map { try PassRegistry.make($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// The standard lowering of an imported float module to the npu profile.
    /// The passes of `standardPipeline`, by name.
    public static var standardPipelineNames: [String] { standardPipeline(calibration: CalibratePass()).passes.map(\.name) }

    public static func standardPipeline(calibration: CalibratePass, weights: WeightCache? = nil) -> PassManager {
        PassManager([DecomposePass(), FoldConstantsPass(), calibration, QuantizePass(cache: weights), FoldConstantsPass(), DCEPass(),
                     LegalizeNPUPass(), MemoryPlanPass()])
    }

    public func run(_ module: Module, afterEach: ((Pass, Module) -> Void)? = nil) throws -> Module {
        var m = module
        for p in passes {
            m = try p.run(m)
            let d = Verifier.diagnose(m)
            if !d.isEmpty { throw PassError(pass: p.name, d.map { Diagnostic(function: $0.function, value: $0.value, op: $0.op, loc: $0.loc, message: "after \(p.name): \($0.message)") }) }
            afterEach?(p, m)
        }
        return m
    }
}

/// Rebuilds a function op by op: `map` translates old value ids to values of the new function.
struct FunctionRewriter {
    let old: Function
    let builder: FunctionBuilder
    var map: [Int: Value] = [:]

    init(_ old: Function, into module: ModuleBuilder) {
        self.old = old
        builder = FunctionBuilder(old.name, in: module)
        for (i, p) in old.params.enumerated() { map[i] = builder.param(p.name, p.type) }
    }

    func value(_ old: Int) -> Value { map[old]! }

    /// Re-emits an op unchanged (types re-inferred), keeping its location and annotations.
    mutating func copy(_ op: Op, id: Int) throws {
        builder.loc = op.loc
        if op.kind == .constant, case let .symbol(name)? = op.attributes["name"] {
            map[id] = try builder.constant(name)
        } else {
            map[id] = try builder.emit(op.kind, op.operands.map(value), op.attributes)
        }
    }

    func finish() {
        for (name, v) in old.results { builder.output(name, value(v)) }
        builder.finish()
    }
}

extension ModuleBuilder {
    /// A builder holding `m`'s name, attributes, constants and data, but no functions.
    convenience init(emptyFunctionsOf m: Module) {
        self.init(name: m.name, attributes: m.attributes)
        for c in m.constants { declareConstant(c.name, c.type, m.constantData[c.name]) }
    }
}
