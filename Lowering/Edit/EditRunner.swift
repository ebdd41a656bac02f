import Foundation
import ZOIR
import ZOModelIO
import ZORuntime

/// One compiled edit: the request, its static layout, and the names of its three functions in
/// the module that holds them (a live compilation or a plan artifact).
public struct EditProgram: Sendable {
    public var request: EditRequest
    public var layout: EditLayout
    public var prefix: String, step: String, probe: String
    /// The refresh function (nil in plans made before it, and when no row precedes the subject):
    /// the rows before the subject with δ·(k̄·k)/‖k̄‖² added at layer L, returning the later
    /// layers' keys and values there (see `EditRunner.refreshed`).
    public var refresh: String? = nil
    /// ‖v_init‖ when compiled (the run recomputes it; the two agree on the same weights).
    public var valueNorm: Float
    /// The largest |δ_i| the step and probe functions represent (clamp · ‖v_init‖): δ's grid.
    public var deltaRange: Double
}

/// Where an edit's rank-one update goes: the edited layer's down-projection as it is now (f32,
/// GGUF layout [hidden, ffn] row-major), and its replacement on the int8 grid of every graph.
public protocol EditWeights: AnyObject {
    func downProjection(layer: Int) throws -> [Float]
    /// Returns how many int8 values were clipped to ±127.
    func replaceDownProjection(layer: Int, _ w: [Float]) throws -> Int
}

/// Called after each step: step, mean loss over the step's points, the probe's smallest target
/// probability, ‖δ‖ / ‖v_init‖.
public typealias EditProgress = (_ step: Int, _ loss: Double, _ minP: Double, _ relDelta: Float) -> Void

/// Seconds per named phase, in the order the phases first ran.
struct PhaseClock {
    private(set) var totals: [(phase: String, seconds: Double)] = []
    mutating func time<T>(_ phase: String, _ body: () throws -> T) rethrows -> T {
        let t0 = Date()
        defer {
            let dt = Date().timeIntervalSince(t0)
            if let i = totals.firstIndex(where: { $0.phase == phase }) { totals[i].seconds += dt } else { totals.append((phase, dt)) }
        }
        return try body()
    }
}

/// What one edit did.
public struct EditOutcome: Sendable {
    public var steps: Int
    /// Step-graph evaluations: 2q perturbed copies per step.
    public var evaluations: Int
    /// Probe-graph evaluations (one copy each; see `run`).
    public var probes: Int
    public var stoppedEarly: Bool
    /// The smallest target-token probability over rewrite prompts before the rank-one update (last probe).
    public var minTargetProbability: Double
    /// The same after the update, measured on the int graph with the requantized weights.
    public var minTargetProbabilityAfterUpdate: Double
    public var deltaNorm: Float
    public var valueNorm: Float
    public var clippedWeights: Int
    public var seconds: Double
    /// Where `seconds` went: the prefix run and binding, the step graphs, the probes, the
    /// refreshes of the rows before the subject, the rank-one update and its check.
    public var phaseSeconds: [(phase: String, seconds: Double)] = []
    /// The edited layer's down-projection (GGUF layout, f32), for export.
    public var editedWeight: [Float]
    public var weightName: String
    /// The down-projection before this edit (f32), to undo it.
    public var previousWeight: [Float]
}

/// The prefix function's results for one edit (every prompt unperturbed, every row).
public struct PrefixRun {
    public var out: [String: TensorData]
    public var logitScale: Float, keyScale: Float, valueScale: Float
    let layout: EditLayout, config: ModelConfig

    /// Runs `program.prefix` on the layout's left-padded prompts.
    public init(_ interp: Interpreter, _ program: EditProgram, config: ModelConfig, embed: ([Int]) throws -> [Float], padID: Int) throws {
        let name = program.prefix, layout = program.layout
        guard let f = interp.module.function(name) else { throw RuntimeError.noFunction(name, available: interp.module.functions.map(\.name)) }
        func result(_ n: String) -> TensorType? { f.results.first { $0.0 == n }.map { f.type(of: $0.1) } }
        let rows = layout.cacheLength + layout.suffixLength
        let scale = try EditGraph.scale(f.params.first { $0.name == "embeddings" }?.type, "@\(name) embeddings")
        let e = try embed(layout.paddedIDs(first: 0, rows: rows, padID: padID))
        out = try interp.run(name, ["embeddings": .i16(EditGraph.quantize(e, scale))])
        logitScale = try EditGraph.scale(result("logits"), "@\(name) logits")
        keyScale = try EditGraph.scale(result("ffn_key"), "@\(name) ffn_key")
        valueScale = try EditGraph.scale(result("ffn_value"), "@\(name) ffn_value")
        self.layout = layout; self.config = config
    }

    func i16(_ name: String) throws -> [Int16] {
        guard case let .i16(a)? = out[name] else { throw RuntimeError.badRequest("the prefix function returned no i16 \(name)") }
        return a
    }

    /// v_init: layer L's MLP output at the subject row of the plain prompt (row C of prompt 0).
    var valueInit: [Float] {
        get throws {
            let D = config.hidden, row = layout.cacheLength * D
            return try i16("ffn_value")[row..<(row + D)].map { Float($0) * valueScale }
        }
    }

    public var valueNorm: Float { ((try? valueInit) ?? []).reduce(0) { $0 + $1 * $1 }.squareRoot() }

    /// log p₀ at the KL row (the last scored row): the unedited model's log-probabilities there.
    public var klBase: [Float] {
        get throws {
            let V = config.vocab, row = layout.scored.map(\.count).reduce(0, +) - 1
            return logSoftmax(try i16("logits")[(row * V)..<((row + 1) * V)], scale: logitScale).map(Float.init)
        }
    }

    /// k̄: the down-projection's input at the subject row, averaged over the rewrite prompts.
    var averagedKey: [Float] {
        get throws {
            let F = config.ffn, R = layout.cacheLength + layout.suffixLength, keys = try i16("ffn_key")
            var key = [Float](repeating: 0, count: F)
            for p in 0..<layout.rewriteCount {
                let b = (p * R + layout.cacheLength) * F
                for j in 0..<F { key[j] += Float(keys[b + j]) * keyScale / Float(layout.rewriteCount) }
            }
            return key
        }
    }

    /// How much of δ the rank-one update adds at each row: (k̄·k_row)/‖k̄‖², since W' k = W k + δ·(k̄·k)/‖k̄‖²
    /// for every key k. Per prompt, for the `rows` rows of a graph that starts at row `first` of
    /// the padded layout. Rows before the subject get 0 (the step functions read them from the
    /// prefix cache) unless `beforeSubject` (the refresh function's and the full graph's rows);
    /// padding rows get 0.
    func keyResponse(_ key: [Float], first: Int, rows: Int, beforeSubject: Bool = false) throws -> [[Float]] {
        let F = config.ffn, R = layout.cacheLength + layout.suffixLength, C = layout.cacheLength, keys = try i16("ffn_key")
        let kk = key.reduce(0) { $0 + $1 * $1 }, offsets = layout.offsets
        return (0..<layout.sequences.count).map { p in
            (first..<(first + rows)).map { r in
                guard r >= C || (beforeSubject && r >= offsets[p]) else { return 0 }
                var dot: Float = 0
                for j in 0..<F { dot += Float(keys[(p * R + r) * F + j]) * key[j] }
                return dot * keyScale / kk
            }
        }
    }

    /// The inputs a step function reads from this run, for one copy (the same in every copy):
    /// layer L's suffix rows ("attn_residual", "ffn_out") and the later layers' keys and values of
    /// the rows before the subject ("k_cache.l", "v_cache.l").
    func stepInputs(layer L: Int) throws -> [String: TensorData] {
        let P = layout.sequences.count, C = layout.cacheLength, T = layout.suffixLength
        let D = config.hidden, kvh = config.kvHeads, hd = config.headDim
        var fixed: [String: TensorData] = [:]
        for k in ["attn_residual", "ffn_out"] {
            guard let a = out[k] else { throw RuntimeError.badRequest("the prefix function returned no \(k)") }
            fixed[k] = a.rows(blocks: P, of: C + T, taking: C..<(C + T), width: D)
        }
        for l in (L + 1)..<config.layers where C > 0 {
            for (o, param) in [("k.\(l)", "k_cache.\(l)"), ("v.\(l)", "v_cache.\(l)")] {
                guard let a = out[o] else { throw RuntimeError.badRequest("the prefix function returned no \(o)") }
                fixed[param] = a.rows(blocks: P * kvh, of: C + T, taking: 0..<C, width: hd)
            }
        }
        return fixed
    }
}

/// Runs one compiled edit: the prefix function once, then the ZO loop on the host in fp32
/// (directions regenerated from the seed; Adam on the two-sided estimate; the probe after every
/// step for early stopping), then r-ROME's rank-one update of ffn_down with the averaged key.
public final class EditRunner {
    let interpreter: Interpreter
    public let program: EditProgram
    let settings: EditSettings
    let config: ModelConfig
    let embed: ([Int]) throws -> [Float]
    let padID: Int

    public init(interpreter: Interpreter, program: EditProgram, settings: EditSettings, config: ModelConfig,
                embed: @escaping ([Int]) throws -> [Float], padID: Int) throws {
        self.interpreter = interpreter; self.program = program; self.settings = settings; self.config = config
        self.embed = embed; self.padID = padID
    }

    func prefixRun() throws -> PrefixRun {
        defer { interpreter.releaseWeightPages(except: [program.step, program.probe]) }
        return try PrefixRun(interpreter, program, config: config, embed: embed, padID: padID)
    }

    /// What a run starts from: the prefix run, v_init and k̄, the KL baseline, and the step and
    /// probe functions bound to the prefix's inputs.
    public struct Start {
        public let base: PrefixRun
        public let valueInit: [Float], key: [Float]
        public let valueNorm: Float
        public let step: EditGraph, probe: EditGraph
        /// The refresh function bound to the embedded rows before the subject, with δ's weight
        /// at each of them (nil without a refresh function).
        public let refresh: EditGraph?
    }

    public func start() throws -> Start {
        let layout = program.layout, D = config.hidden, L = settings.layer
        let base = try prefixRun()
        let vInit = try base.valueInit, key = try base.averagedKey
        func bound(_ name: String) throws -> EditGraph {
            let g = try EditGraph(interpreter: interpreter, name: name, layout: layout, hidden: D, fixed: [:])
            let weights = settings.injection == .update ? try base.keyResponse(key, first: layout.cacheLength, rows: g.rows) : nil
            return try g.binding(base.stepInputs(layer: L), rowWeights: weights)
        }
        var refresh: EditGraph?
        if let name = program.refresh, settings.injection == .update {
            let C = layout.cacheLength
            let g = try EditGraph(interpreter: interpreter, name: name, layout: layout, hidden: D, fixed: [:])
            guard let f = interpreter.module.function(name), g.rows == C, g.copies == 1 else {
                throw RuntimeError.badRequest("@\(name) does not take the \(C) rows before the subject of one copy")
            }
            let scale = try EditGraph.scale(f.params.first { $0.name == "embeddings" }?.type, "@\(name) embeddings")
            let e = try embed(layout.paddedIDs(first: 0, rows: C, padID: padID))
            refresh = try g.binding(["embeddings": .i16(EditGraph.quantize(e, scale))],
                                    rowWeights: try base.keyResponse(key, first: 0, rows: C, beforeSubject: true))
        }
        return Start(base: base, valueInit: vInit, key: key, valueNorm: vInit.reduce(0) { $0 + $1 * $1 }.squareRoot(),
                     step: try bound(program.step), probe: try bound(program.probe), refresh: refresh)
    }

    /// `g` reading the later layers' keys and values of the rows before the subject from the
    /// refresh function run at `delta`. The rank-one update moves every row by δ·(k̄·k)/‖k̄‖², the
    /// rows before the subject too (a subject's first tokens: 0.1–0.3), and the prefix cache holds
    /// them unperturbed: with δ of 4–5 ‖v_init‖ the probe then passes where the edited model fails.
    /// The loop refreshes the cache before every probe and every `refreshInterval` steps, so the
    /// probe and the steps see those rows as the update would leave them (at that δ).
    public func refreshed(_ graphs: [EditGraph], by refresh: EditGraph, at delta: [Float]) throws -> [EditGraph] {
        defer { interpreter.releaseWeightPages(except: [program.step, program.probe]) }
        let out = try refresh.run([delta])
        var caches: [String: TensorData] = [:]
        for l in (settings.layer + 1)..<config.layers {
            guard let k = out["k.\(l)"], let v = out["v.\(l)"] else { throw RuntimeError.badRequest("@\(refresh.name) returned no k.\(l), v.\(l)") }
            caches["k_cache.\(l)"] = k; caches["v_cache.\(l)"] = v
        }
        return try graphs.map { g in
            var fixed = g.fixed
            for (name, data) in caches { fixed[name] = data }
            return try g.binding(fixed, rowWeights: g.rowWeights)
        }
    }

    /// The edit loss at each point (δ of copy c of `g`): target NLL (token-mean per rewrite
    /// prompt, averaged over them) + kl_factor · KL(p_δ ‖ p_0) at the KL prompt + wd · ‖δ‖ / ‖v_init‖²,
    /// from the loss terms the graph reduced.
    public func losses(_ st: Start, _ g: EditGraph, _ points: [[Float]]) throws -> [Double] {
        try evaluate(st, g, points.map { [$0] }).map { $0.parts.reduce(0, +) }
    }

    /// Per point (one δ for all prompts, or one per prompt), the edit loss — whole, or by prompt:
    /// each rewrite prompt's NLL share, the KL prompt's term; the norm term goes with the first
    /// prompt's δ — and the smallest target-token probability on a rewrite prompt.
    public func evaluate(_ st: Start, _ g: EditGraph, _ points: [[[Float]]]) throws -> [(parts: [Double], minP: Double)] {
        let layout = program.layout, s = settings, vNorm = Double(st.valueNorm), R = layout.rewriteCount, T = layout.targets.count
        return try zip(g.lossTerms(perPrompt: points), points).map { terms, point in
            guard let kl = terms.kl else { throw RuntimeError.badRequest("@\(g.name) reduces no KL term") }
            let dn = Double(point[0].reduce(0) { $0 + $1 * $1 }.squareRoot())
            let norm = Double(s.weightDecay) * dn / (vNorm * vNorm)
            let nll = (0..<R).map { p in -(0..<T).reduce(0.0) { $0 + terms.targetLogProbability(p * T + $1) } / Double(T) }
            if point.count == 1 {
                return ([nll.reduce(0, +) / Double(R) + Double(s.klFactor) * kl + norm], minTargetProbability(terms))
            }
            return (nll.enumerated().map { $1 / Double(R) + ($0 == 0 ? norm : 0) } + [Double(s.klFactor) * kl], minTargetProbability(terms))
        }
    }

    /// The smallest probability of a target token on a rewrite prompt, from a one-copy graph.
    func minTargetProbability(_ g: EditGraph, _ delta: [Float]) throws -> Double {
        minTargetProbability(try g.lossTerms([delta])[0])
    }

    func minTargetProbability(_ terms: LossTerms) -> Double {
        let n = program.layout.rewriteCount * program.layout.targets.count
        return (0..<n).map { exp(terms.targetLogProbability($0)) }.min() ?? 1
    }

    /// The same from i16 logits of the scored rows (the prefix function's), scale `scale`.
    func minTargetProbability(_ logits: [Int16], scale: Float) -> Double {
        let layout = program.layout, V = config.vocab
        let offsets = layout.scored.map(\.count).reduce(into: [0]) { $0.append($0.last! + $1) }
        var worst = 1.0
        for p in 0..<layout.rewriteCount {
            for (j, t) in layout.targets.enumerated() {
                let row = (offsets[p] + j) * V
                worst = min(worst, exp(logSoftmax(logits[row..<(row + V)], scale: scale)[t]))
            }
        }
        return worst
    }

    /// Steps between refreshes of the rows before the subject (besides one before every probe):
    /// the steps must optimise the loss the edited model will have, not the prefix cache's.
    static let refreshInterval = 10

    public func run(weights: EditWeights, progress: EditProgress? = nil) throws -> EditOutcome {
        let begin = Date()
        var clock = PhaseClock()
        let s = settings, L = s.layer, D = config.hidden, q = s.directions
        let st = try clock.time("start") { try start() }
        var (step, probe, vNorm) = (st.step, st.probe, st.valueNorm)
        guard step.copies == 2 * q else {
            throw RuntimeError.badRequest("@\(program.step) runs \(step.copies) copies; \(q) directions need \(2 * q)")
        }
        let est = ZOEstimator(dimension: D, directions: q, epsilon: s.perturbation * vNorm / Float(D).squareRoot(), seed: s.seed,
                              groups: s.promptDirections == .independent ? program.layout.sequences.count : 1)
        var adam = Adam(dimension: D, learningRate: s.learningRate)
        var delta = [Float](repeating: 0, count: D)
        var steps = 0, stopped = false, pmin = 0.0, probes = 0, probeDue = true
        let w = try weights.downProjection(layer: L)
        var update: (edited: [Float], clipped: Int, pAfter: Double)?
        while true {
            if let r = st.refresh, probeDue || steps == s.maxSteps || (steps > 0 && steps % Self.refreshInterval == 0) {
                let g = try clock.time("refresh") { try refreshed([step, probe], by: r, at: delta) }
                (step, probe) = (g[0], g[1])
            }
            if probeDue || steps == s.maxSteps {
                pmin = try clock.time("probe") { try minTargetProbability(probe, delta) }
                probes += 1
            }
            if probeDue || steps == s.maxSteps, pmin > s.stopProbability {
                // Stop only if the edit survives the rank-one update on the int grid; else undo it and go on.
                let u = try clock.time("update") { try applyUpdate(delta, key: st.key, to: w, weights: weights) }
                if u.pAfter > s.stopProbability { update = u; stopped = true; break }
                _ = try clock.time("update") { try weights.replaceDownProjection(layer: L, w) }
            }
            if steps == s.maxSteps { break }
            let points = est.points(around: delta, step: steps)
            let e = try clock.time("step") { try evaluate(st, step, points) }, l = e.map { $0.parts.reduce(0, +) }
            // The probe runs only once some perturbed copy is halfway to the stop rule (the ± copies
            // straddle δ): most steps of an edit are far from it.
            probeDue = e.map(\.minP).max()! > s.stopProbability / 2
            adam.learningRate = s.learningRate * s.schedule.factor(step: steps, of: s.maxSteps)
            adam.step(&delta, gradient: est.gradient(losses: e.map(\.parts), step: steps))
            // Decoupled decay: components the estimate's noise adds (and the loss does not hold) shrink back.
            if s.decay > 0 { delta = delta.map { $0 * (1 - s.decay) } }
            let norm = delta.reduce(0) { $0 + $1 * $1 }.squareRoot(), limit = s.clamp * vNorm
            if norm > limit { delta = delta.map { $0 * limit / norm } }
            steps += 1
            progress?(steps, l.reduce(0, +) / Double(l.count), pmin, delta.reduce(0) { $0 + $1 * $1 }.squareRoot() / vNorm)
        }
        let u = try update ?? clock.time("update") { try applyUpdate(delta, key: st.key, to: w, weights: weights) }
        var outcome = EditOutcome(steps: steps, evaluations: steps * 2 * q, probes: probes, stoppedEarly: stopped, minTargetProbability: pmin,
                           minTargetProbabilityAfterUpdate: u.pAfter,
                           deltaNorm: delta.reduce(0) { $0 + $1 * $1 }.squareRoot(), valueNorm: vNorm, clippedWeights: u.clipped,
                           seconds: Date().timeIntervalSince(begin), editedWeight: u.edited, weightName: "blk.\(L).ffn_down.weight",
                           previousWeight: w)
        outcome.phaseSeconds = clock.totals
        return outcome
    }

    /// r-ROME with the averaged key in u and in r, and the value it targets taken at that key:
    /// W' k̄ = W k̄ + δ, so every prompt's MLP output moves by δ·(k̄·k_p)/‖k̄‖² — the δ the loop
    /// optimised, added where its key matches k̄. Applies the update to `weights` and measures the
    /// smallest target probability on the rewrite prompts with them (the prefix function, δ = 0).
    func applyUpdate(_ delta: [Float], key: [Float], to w: [Float], weights: EditWeights) throws -> (edited: [Float], clipped: Int, pAfter: Double) {
        // The step function's arena pages (its output head for every copy) need not stay resident
        // while the f32 weights are made: the prefix run below writes its own, smaller part again.
        interpreter.releaseArena()
        let D = config.hidden, F = config.ffn
        var target = [Float](repeating: 0, count: D)
        for i in 0..<D {
            var wk = 0.0
            for j in 0..<F { wk += Double(w[i * F + j]) * Double(key[j]) }
            target[i] = Float(wk) + delta[i]
        }
        let edited = try RankOneUpdate(weights: w, rows: D, cols: F, key: key, target: target).applied(to: w)
        let clipped = try weights.replaceDownProjection(layer: settings.layer, edited)
        let after = try prefixRun()
        return (edited, clipped, minTargetProbability(try after.i16("logits"), scale: after.logitScale))
    }
}

/// log-softmax of one row of i16 logits with scale `scale`, in f64.
public func logSoftmax(_ row: ArraySlice<Int16>, scale: Float) -> [Double] {
    let x = row.map { Double($0) * Double(scale) }
    let m = x.max() ?? 0
    let lse = m + log(x.reduce(0.0) { $0 + exp($1 - m) })
    return x.map { $0 - lse }
}

/// An editing function bound to one edit's inputs: feeds its copies × prompts (the same fixed
/// inputs in every copy) with δ_c at each prompt's subject row, and returns its loss terms
/// (LossHead) per copy. Its copies and rows are read from the function's δ parameter.
public final class EditGraph {
    public let interpreter: Interpreter
    public let name: String
    public let layout: EditLayout
    public let copies: Int, rows: Int
    public let deltaScale: Float
    /// The scale of the "logits" result, for a graph that returns them.
    public let logitScale: Float?
    let hidden: Int
    /// Inputs other than δ (embedded rows, or the prefix's residual stream and caches), as the
    /// function takes them: data given for one copy is repeated for each where the parameter
    /// holds every copy's (a graph that repeats its caches itself takes them once).
    let fixed: [String: TensorData]
    /// Per prompt and row, the multiple of δ added there (nil: δ at the subject row only).
    let rowWeights: [[Float]]?

    public init(interpreter: Interpreter, name: String, layout: EditLayout, hidden: Int, fixed: [String: TensorData],
                rowWeights: [[Float]]? = nil) throws {
        self.interpreter = interpreter; self.name = name; self.layout = layout; self.hidden = hidden
        self.rowWeights = rowWeights
        guard let f = interpreter.module.function(name) else { throw RuntimeError.noFunction(name, available: interpreter.module.functions.map(\.name)) }
        guard let d = f.params.first(where: { $0.name == "delta" }), d.type.rank == 3, d.type.shape[2] == hidden,
              d.type.shape[0] % layout.sequences.count == 0 else {
            throw RuntimeError.badRequest("@\(name) has no δ parameter [copies·\(layout.sequences.count), rows, \(hidden)]")
        }
        copies = d.type.shape[0] / layout.sequences.count
        var bound: [String: TensorData] = [:]
        for (k, data) in fixed {
            let n = f.params.first { $0.name == k }?.type.elementCount ?? data.count
            guard n == data.count || n == data.count * copies else {
                throw RuntimeError.inputMismatch(function: name, name: k, expected: "\(n) elements (or \(n / max(copies, 1)) of one copy)", got: "\(data.count)")
            }
            bound[k] = n == data.count ? data : data.repeated(copies)
        }
        self.fixed = bound
        rows = d.type.shape[1]
        deltaScale = try Self.scale(d.type, "@\(name) delta")
        logitScale = try f.results.first { $0.0 == "logits" }.map { try Self.scale(f.type(of: $0.1), "@\(name) logits") }
    }

    static func scale(_ t: TensorType?, _ what: String) throws -> Float {
        guard case let .perTensor(s, _)? = t?.quant else { throw RuntimeError.badRequest("\(what) is not a quantized tensor of an editing graph") }
        return s
    }

    static func quantize(_ x: [Float], _ s: Float) -> [Int16] { x.map { Int16(clamping: Int(($0 / s).rounded())) } }

    /// The subject row of every prompt in this graph's rows (the last `rows` of the padded layout
    /// that begin at the subject, or all of them).
    public var subjectRow: Int { rows == layout.suffixLength ? 0 : layout.cacheLength }

    /// Runs the graph with δ_c for copy c (deltas.count must equal copies).
    public func run(_ deltas: [[Float]]) throws -> [String: TensorData] { try run(perPrompt: deltas.map { [$0] }) }

    /// Runs the graph with δ_{c,p} at prompt p of copy c, or δ_c at all of copy c's prompts where
    /// deltas[c] holds one.
    public func run(perPrompt deltas: [[[Float]]]) throws -> [String: TensorData] {
        guard deltas.count == copies else { throw RuntimeError.badRequest("@\(name) takes \(copies) perturbations, got \(deltas.count)") }
        let D = hidden, P = layout.sequences.count
        if let bad = deltas.first(where: { $0.count != 1 && $0.count != P }) {
            throw RuntimeError.badRequest("@\(name) takes one δ per copy or one per prompt (\(P)), got \(bad.count)")
        }
        var d = [Int16](repeating: 0, count: copies * P * rows * D)
        for (c, copy) in deltas.enumerated() {
            for p in 0..<P {
                let delta = copy[copy.count == 1 ? 0 : p]
                for r in 0..<rows {
                    let weight: Float = rowWeights?[p][r] ?? (r == subjectRow ? 1 : 0)
                    guard weight != 0 else { continue }
                    let base = ((c * P + p) * rows + r) * D
                    d.replaceSubrange(base..<(base + D), with: Self.quantize(weight == 1 ? delta : delta.map { $0 * weight }, deltaScale))
                }
            }
        }
        var inputs = fixed
        inputs["delta"] = .i16(d)
        return try interpreter.run(name, inputs)
    }

    /// The same function with other fixed inputs (and δ's row weights).
    func binding(_ inputs: [String: TensorData], rowWeights: [[Float]]? = nil) throws -> EditGraph {
        try EditGraph(interpreter: interpreter, name: name, layout: layout, hidden: hidden, fixed: inputs, rowWeights: rowWeights)
    }

    /// Each copy's loss terms (LossHead), in real units.
    public func lossTerms(_ deltas: [[Float]]) throws -> [LossTerms] { try lossTerms(of: run(deltas)) }

    /// The same with a δ per prompt of each copy (see `run(perPrompt:)`).
    public func lossTerms(perPrompt deltas: [[[Float]]]) throws -> [LossTerms] { try lossTerms(of: run(perPrompt: deltas)) }

    /// The loss terms of a run's results.
    public func lossTerms(of out: [String: TensorData]) throws -> [LossTerms] {
        func read(_ k: String) throws -> (values: [Int64], scale: Double)? {
            guard let v = out[k] else { return nil }
            guard let g = WideGrid(interpreter.module.attributes["grid.\(name).\(k)"]) else {
                throw RuntimeError.badRequest("@\(name): \(k) has no recorded grid")
            }
            return (v.int64Values, g.scale)
        }
        guard let m = try read("loss.max"), let z = try read("loss.exp_sum"), let t = try read("loss.target") else {
            throw RuntimeError.badRequest("@\(name) returns no loss terms (loss.max, loss.exp_sum, loss.target): a plan from an older zoc? compile it again")
        }
        let a = try read("loss.kl_sum"), z1 = try read("loss.kl_exp_sum")
        let rows = m.values.count / copies, targets = t.values.count / copies
        return (0..<copies).map { c in
            let lse = (0..<rows).map { r in Double(m.values[c * rows + r]) * m.scale + log(Double(z.values[c * rows + r]) * z.scale) }
            var kl: Double?
            if let a = a, let z1 = z1 {
                let zc = Double(z1.values[c]) * z1.scale
                kl = Double(a.values[c]) * a.scale / zc - log(zc)
            }
            return LossTerms(logSumExp: lse, targetLogits: (0..<targets).map { Double(t.values[c * targets + $0]) * t.scale }, kl: kl)
        }
    }
}

/// One copy's loss terms (LossHead) in real units: log Σ exp(l) of each scored row, the logits of
/// the target tokens (rewrite prompts' rows in order), and KL(p ‖ p₀) at the KL row (p within
/// 10.4 nats of its top, renormalised: see LossHead).
public struct LossTerms: Sendable {
    public var logSumExp: [Double]
    public var targetLogits: [Double]
    public var kl: Double?

    /// log p of target k (the k-th row with a target; the rows with targets come first).
    public func targetLogProbability(_ k: Int) -> Double { targetLogits[k] - logSumExp[k] }
}

extension TensorData {
    /// Rows `taking` of each of `blocks` blocks of `of` rows of `width` elements, joined.
    func rows(blocks: Int, of rows: Int, taking: Range<Int>, width: Int) -> TensorData {
        mapElements(RowPick(blocks: blocks, rows: rows, taking: taking, width: width))
    }

    /// The data `n` times over.
    func repeated(_ n: Int) -> TensorData { mapElements(Repeat(times: n)) }
}

struct RowPick: ElementTransform {
    let blocks: Int, rows: Int, taking: Range<Int>, width: Int
    func callAsFunction<T>(_ a: [T]) -> [T] {
        var out: [T] = []
        out.reserveCapacity(blocks * taking.count * width)
        for b in 0..<blocks { out += a[((b * rows + taking.lowerBound) * width)..<((b * rows + taking.upperBound) * width)] }
        return out
    }
}

struct Repeat: ElementTransform {
    let times: Int
    func callAsFunction<T>(_ a: [T]) -> [T] {
        var out: [T] = []
        out.reserveCapacity(a.count * times)
        for _ in 0..<times { out += a }
        return out
    }
}
