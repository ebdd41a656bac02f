import Foundation
import ZOIR
import ZOModelIO
import ZORuntime

/// An edit plan: compiled edits in one .zo artifact. Its module holds, per edit i, a prefix, a
/// step and a probe function named by attribute "plan.<i>.functions" (sharing one set of int8
/// weight segments); module
/// attributes "plan.*" hold the settings, the context prefixes and each edit request (JSON, from
/// which the static layout is rebuilt with the artifact's tokenizer); the host tensor
/// "plan.ffn_down" holds the edited layer's f32 down-projection for the rank-one update, and
/// attributes "plan.ffn_down.scales"/"plan.ffn_down.smoothing" the exact grid its int8 form is on.
public enum EditPlan {
    public static let weightTensor = "plan.ffn_down"

    /// Compiles `requests` into a plan artifact's bytes.
    public static func build(editor: ZOEditor, requests: [EditRequest], progress: (Int) -> Void = { _ in }) throws -> [UInt8] {
        let lm = editor.model, s = editor.settings
        guard !requests.isEmpty else { throw RuntimeError.badRequest("no edit requests to compile") }
        // The plan's module holds the constants of every edit (one copy of each: share-constants)
        // and, as the artifact's entry, edit 0's prefix function. Each edit's own functions are a
        // separate host segment, decoded only while that edit runs: a run's memory does not grow
        // with the number of edits.
        var module: Module?
        var functions: [(name: String, bytes: [UInt8])] = []
        for (i, r) in requests.enumerated() {
            let (m, p) = try editor.compile(r, tag: "e\(i)")
            var all = module.map { var a = $0; a.merge(m); return a } ?? m
            all = try ShareConstantsPass().run(all)
            let names = [p.prefix, p.step, p.probe] + (p.refresh.map { [$0] } ?? [])
            let mine = all.functions.filter { names.contains($0.name) }
            functions.append(("plan.\(i).functions", try ManifestCodec.encodeModule(Module(name: "plan.\(i)", functions: mine))))
            all.functions = module?.functions ?? mine.filter { $0.name == p.prefix }
            module = all
            module!.attributes["plan.\(i).request"] = .string(r.json.serialized)
            module!.attributes["plan.\(i).functions"] = .string(names.joined(separator: ","))
            progress(i + 1)
        }
        var m = module!
        m.attributes["plan.edits"] = .int(requests.count)
        m.attributes["plan.prefixes"] = .string(JSONValue.array(editor.prefixes.map(JSONValue.string)).serialized)
        for (k, v) in s.attributes { m.attributes["plan.setting.\(k)"] = v }
        let wname = "blk.\(s.layer).ffn_down.weight"
        let weights = try lm.npuCompiler().weights
        guard let scales = weights.rowScales(wname), let smoothing = weights.smoothing(wname) else {
            throw RuntimeError.missingConstantData(wname + ".i8")
        }
        m.attributes["plan.ffn_down.scales"] = .floats(scales)
        m.attributes["plan.ffn_down.smoothing"] = .floats(smoothing)
        guard let info = lm.gguf.tensorInfo(wname) else { throw ModelIOError.missingTensor(path: lm.gguf.path, name: wname) }
        guard case let .string(first)? = m.attributes["plan.0.functions"], let entry = first.split(separator: ",").first else {
            throw RuntimeError.badRequest("plan without functions")
        }
        return try ArtifactBuilder.build(module: m, entry: String(entry), gguf: lm.gguf, tokenizer: lm.tokenizer, config: lm.config,
                                         settings: ["kind": .string("edit-plan")],
                                         host: [(weightTensor, info.shape, try lm.gguf.dequantize(info))], hostBytes: functions)
    }
}

/// A plan artifact opened for running.
public final class LoadedPlan {
    public let artifact: Artifact
    public let settings: EditSettings
    public let prefixes: [String]
    public let requests: [EditRequest]
    public let tokenizer: Tokenizer
    public let config: ModelConfig
    let embeddings: EmbeddingTable

    public init(path: String) throws {
        artifact = try Artifact(path: path)
        func bad(_ field: String, _ why: String) -> ArtifactError { .invalidField(path: path, field: field, reason: why) }
        let a = artifact.module.attributes
        guard case .string("edit-plan")? = artifact.manifest.provenance.settings["kind"] else {
            throw bad("provenance.settings.kind", "not an edit plan (zoc compile makes one)")
        }
        guard case let .int(n)? = a["plan.edits"], n >= 1 else { throw bad("plan.edits", "missing") }
        settings = try EditSettings(attributes: a.filter { $0.key.hasPrefix("plan.setting.") }, prefix: "plan.setting.") { bad($0, $1) }
        guard case let .string(pj)? = a["plan.prefixes"], case let .array(ps) = try JSONValue.parse(Array(pj.utf8)) else { throw bad("plan.prefixes", "missing") }
        prefixes = ps.compactMap(\.string)
        requests = try (0..<n).map { i in
            guard case let .string(j)? = a["plan.\(i).request"] else { throw bad("plan.\(i).request", "missing") }
            guard let r = try EditRequests.parse(Array(j.utf8), path: "\(path) plan.\(i).request").first else { throw bad("plan.\(i).request", "empty") }
            return r
        }
        tokenizer = try artifact.tokenizer()
        config = try artifact.config()
        embeddings = try artifact.embeddings()
    }

    /// The compiled edit `i` (its layout rebuilt from the request with the plan's tokenizer).
    public func program(_ i: Int) throws -> EditProgram {
        let layout = try EditLayout(requests[i], prefixes: prefixes, tokenizer: tokenizer)
        guard case let .string(f)? = artifact.module.attributes["plan.\(i).functions"], case let names = f.split(separator: ",").map(String.init),
              names.count == 3 || names.count == 4 else {
            throw ArtifactError.invalidField(path: artifact.path, field: "plan.\(i).functions", reason: "missing (prefix,step,probe[,refresh])")
        }
        var program = EditProgram(request: requests[i], layout: layout, prefix: names[0], step: names[1], probe: names[2], valueNorm: 0, deltaRange: 0)
        program.refresh = names.count == 4 ? names[3] : nil
        return program
    }

    /// Edit `i`'s functions (decoded from their host segment) over the plan's constants, in an
    /// interpreter that starts from `previous`'s materialized constants (the plan's weights as
    /// they are now, edited or not). Only one edit's functions are in memory at a time.
    public func interpreter(_ i: Int, after previous: Interpreter) throws -> Interpreter {
        let field = "plan.\(i).functions"
        guard let t = artifact.manifest.tensor(field), t.host, t.type.dtype == .i8 else {
            throw ArtifactError.invalidTensor(path: artifact.path, tensor: field, reason: "missing (edit \(i)'s functions)")
        }
        // Earlier edits' functions and tables were read from the mapping and stay resident unless
        // dropped (2 MiB per edit: 50 edits grew zorun run's peak from 234 to 337 MiB); this
        // edit's pages, the weights among them, come back as it touches them.
        artifact.releasePages()
        let fm = try ManifestCodec.decodeModule(artifact.bytes(t), path: artifact.path, field: field)
        let base = artifact.module
        let m = Module(name: base.name, attributes: base.attributes, constants: base.constants, functions: fm.functions,
                       constantData: base.constantData)
        do {
            return try Interpreter(module: m, constantsFrom: previous)
        } catch {
            throw ArtifactError.invalidField(path: artifact.path, field: field, reason: "\(error)")
        }
    }

    public func embed(_ ids: [Int]) throws -> [Float] {
        defer { embeddings.releasePages() }
        guard case let .f32(e) = try embeddings.lookup(ids) else { throw RuntimeError.badRequest("embedding lookup returned no f32 rows") }
        return e
    }

    /// The edited layer's f32 down-projection as compiled.
    public func originalWeight() throws -> [Float] {
        guard let t = artifact.manifest.tensor(EditPlan.weightTensor), t.host, t.type.dtype == .f32,
              t.type.shape == [config.hidden, config.ffn], t.length == config.hidden * config.ffn * 4 else {
            throw ArtifactError.invalidTensor(path: artifact.path, tensor: EditPlan.weightTensor, reason: "missing or not f32 [\(config.hidden), \(config.ffn)]")
        }
        let b = artifact.bytes(t)
        return (0..<(config.hidden * config.ffn)).map { Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
    }
}

/// A plan's weights in one interpreter: the down-projection's f32 form kept on the host, its
/// int8 constant replaced on the plan's exact grid.
public final class PlanWeights: EditWeights {
    /// The interpreter running the current edit (`LoadedPlan.interpreter(_:after:)` makes one per edit).
    public var interpreter: Interpreter
    let layer: Int
    public private(set) var current: [Float]
    public let original: [Float]
    let scales: [Double], smoothing: [Double]

    public init(plan: LoadedPlan, interpreter: Interpreter) throws {
        self.interpreter = interpreter
        layer = plan.settings.layer
        original = try plan.originalWeight()
        current = original
        let a = plan.artifact.module.attributes
        guard case let .floats(sc)? = a["plan.ffn_down.scales"], sc.count == plan.config.hidden,
              case let .floats(sm)? = a["plan.ffn_down.smoothing"], sm.count == plan.config.ffn else {
            throw ArtifactError.invalidField(path: plan.artifact.path, field: "plan.ffn_down.scales/smoothing", reason: "missing or of the wrong length")
        }
        scales = sc; smoothing = sm
    }

    public func downProjection(layer: Int) throws -> [Float] {
        guard layer == self.layer else { throw RuntimeError.badRequest("the plan edits layer \(self.layer), not \(layer)") }
        return current
    }

    /// Back to the plan's weights (single editing): the int8 constant as it was, the f32 original.
    public func reset(to int8: TensorData) throws {
        try interpreter.replaceConstant("blk.\(layer).ffn_down.weight.i8", int8)
        current = original
    }

    public func replaceDownProjection(layer: Int, _ w: [Float]) throws -> Int {
        let (q, clipped) = WeightCache.int8(w, rowScales: scales, smoothing: smoothing)
        try interpreter.replaceConstant("blk.\(layer).ffn_down.weight.i8", .i8(q))
        current = w
        return clipped
    }
}
