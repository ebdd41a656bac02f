import Foundation
import XCTest
import ZOIR
import ZOLowering
import ZOModelIO
import ZORuntime
import ZOTestSupport

/// Edit layouts and the batched editing graphs on the real model.
final class EditGraphTests: XCTestCase {
    func zsre(_ i: Int) throws -> EditRequest {
        let path = TestPaths.data.appendingPathComponent("knowedit_zsre/ZsRE-test-all.json").path
        return try EditRequests.load(path: path)[i]
    }

    func testLayoutOfAZsRERecord() throws {
        let tok = try Tokenizer(gguf: GGUFFile(path: TestPaths.requireModel()))
        let r = try zsre(0)  // "Which family does Epaspidoceras belong to?" → "Noctuidae"
        let layout = try EditLayout(r, prefixes: ["The world is"], tokenizer: tok)
        XCTAssertEqual(layout.rewriteCount, 2)
        XCTAssertEqual(layout.sequences.count, 3)
        XCTAssertEqual(tok.decode(layout.targets), " Noctuidae")
        let plain = tok.encode(r.prompt)
        XCTAssertEqual(layout.sequences[0], plain + layout.targets.dropLast())
        XCTAssertEqual(layout.scored[0], (plain.count - 1)..<(plain.count - 1 + layout.targets.count))
        // The subject's last token is where δ goes, in the plain and the prefixed prompt.
        for p in 0..<2 {
            let upTo = tok.decode(Array(layout.sequences[p][...layout.subjectRows[p]]))
            XCTAssertTrue(upTo.hasSuffix("Epaspidoceras"), upTo)
        }
        XCTAssertTrue(tok.decode(layout.sequences[1]).hasPrefix("The world is. Which family"))
        // The KL prompt: "{subject} is a", scored at its last row.
        XCTAssertEqual(tok.decode(layout.sequences[2]), "Epaspidoceras is a")
        XCTAssertEqual(layout.scored[2], (layout.sequences[2].count - 1)..<layout.sequences[2].count)
        XCTAssertEqual(layout.length, layout.sequences.map(\.count).max())
    }

    func testLayoutRejectsAMissingSubjectAndAnEmptyTarget() throws {
        let tok = try Tokenizer(gguf: GGUFFile(path: TestPaths.requireModel()))
        var r = try zsre(0)
        r.subject = "Nautilus"
        XCTAssertThrowsError(try EditLayout(r, prefixes: [], tokenizer: tok)) { e in
            XCTAssertTrue("\(e)".contains("Nautilus") && "\(e)".contains("Which family"), "\(e)")
        }
        r = try zsre(0)
        r.targetNew = "  "
        XCTAssertThrowsError(try EditLayout(r, prefixes: [], tokenizer: tok)) { e in XCTAssertTrue("\(e)".contains("target_new"), "\(e)") }
    }

    /// The editing graphs on the real model:
    /// - the uncached graph (every row, prompts left-padded so subject rows align) with δ = 0
    ///   gives, for the prompt that needs no padding, the plain npu forward's logits bit for bit;
    /// - the step graph (a prefix graph once; then, from layer L's residual add on, only the rows
    ///   from the subject on) gives the uncached graph's loss terms bit for bit, with δ = 0 and δ ≠ 0;
    /// - a δ in one copy changes that copy only;
    /// - the loss terms reduced in the graph (exp by table, integer sums) agree with the same
    ///   terms computed on the host from the logits in f64.
    /// The edit loop undoes a rank-one update that fails its check by requantizing the weights it
    /// started from: that must give back the original int8 values exactly.
    func testRequantizingTheOriginalDownProjectionIsExact() throws {
        let lm = try NPUModelTests.model()
        let name = "blk.6.ffn_down.weight"
        try lm.makeEditable(name)  // the shared model lowers weights in blocks; edits rewrite the per-channel form
        _ = try lm.logits(lm.tokenizer.encode("The"))  // an int graph, so the int8 form exists whichever test runs first
        let original = try XCTUnwrap(try lm.int8Weight(name))
        let live = LiveWeights(model: lm, also: [])
        let w = try live.downProjection(layer: 6)
        var moved = w
        moved[0] += 0.5
        _ = try live.replaceDownProjection(layer: 6, moved)
        XCTAssertNotEqual(try lm.int8Weight(name), original)
        _ = try live.replaceDownProjection(layer: 6, w)
        XCTAssertEqual(try lm.int8Weight(name), original)
        try lm.restoreWeight(name, original)
    }

    /// Fluency is measured on the float graph: an edited weight reaches it, and undoing the edit
    /// gives back the source model's generation token for token.
    func testAnEditReachesTheFloatGraphAndIsUndone() throws {
        let lm = try NPUModelTests.model()
        let name = "blk.6.ffn_down.weight"
        try lm.makeEditable(name)
        let prompt = lm.tokenizer.encode("The capital of France is")
        _ = try lm.logits(prompt)  // an int graph, so the int8 form exists whichever test runs first
        let original = try XCTUnwrap(try lm.int8Weight(name))
        let plain = try lm.generateFloat(prompt, maxTokens: 4)
        let w = try LiveWeights(model: lm, also: []).downProjection(layer: 6)
        try lm.replaceWeight(name, w.map { $0 * 1000 })  // drowns the residual stream
        let edited = try lm.generateFloat(prompt, maxTokens: 4)
        try lm.restoreWeight(name, original)
        XCTAssertNotEqual(edited, plain)
        XCTAssertEqual(try lm.generateFloat(prompt, maxTokens: 4), plain)
        XCTAssertEqual(try lm.int8Weight(name), original)
    }

    /// An editor refuses a model lowered with other weights than its settings name.
    func testEditorRefusesAModelWithOtherWeights() throws {
        let lm = try NPUModelTests.model()
        var s = EditSettings()
        s.weights = lm.weightForm == .blocks ? .perChannel : .blocks
        XCTAssertThrowsError(try ZOEditor(model: lm, settings: s)) { e in
            XCTAssertTrue("\(e)".contains(s.weights.rawValue) && "\(e)".contains(lm.weightForm.rawValue), "\(e)")
        }
    }

    /// ZsRE record 1 with one context prefix and one direction: 3 prompts, 2 copies a step.
    func smallEdit() throws -> (LanguageModel, EditSettings, ZOEditor, EditRunner) {
        let lm = try NPUModelTests.model()
        var s = EditSettings()
        s.weights = lm.weightForm
        s.contextPrefixes = 1
        s.directions = 1
        let editor = try ZOEditor(model: lm, settings: s)
        return (lm, s, editor, try editor.runner(try zsre(1)))
    }

    func testCachedEditGraphIsExactlyTheFullForward() throws {
        let (lm, s, editor, runner) = try smallEdit()
        let layout = runner.program.layout
        XCTAssertGreaterThan(layout.cacheLength, 0)
        let cached = try runner.start().step
        let full = try editor.fullGraph(runner, copies: 2)
        XCTAssertEqual(cached.copies, 2)
        XCTAssertEqual(cached.rows, layout.suffixLength)
        XCTAssertEqual(full.rows, layout.cacheLength + layout.suffixLength)
        // The step graph starts at layer L's residual add: no op of the layers before runs in it.
        let early = Set((0...s.layer).flatMap { ["blk.\($0).attn", "blk.\($0).ffn"] })
        let stepOps = cached.interpreter.module.function(cached.name)!.ops
        XCTAssertFalse(stepOps.contains { $0.loc.map(early.contains) ?? false })
        XCTAssertTrue(stepOps.contains { $0.loc == "blk.\(s.layer + 1).attn" })
        // Row-wise ops run on each prompt's real rows only: the KL prompt is shorter than the rest.
        XCTAssertLessThan(try XCTUnwrap(layout.suffixLengths.last), layout.suffixLength, "nothing to pack on this record")
        XCTAssertTrue(stepOps.contains { $0.loc == "edit.rows" }, "the step function runs the KL prompt's padding rows")
        // The caches are bound once, for one copy: the step function repeats them for each copy.
        let stepFunction = try XCTUnwrap(cached.interpreter.module.function(cached.name))
        let kc = try XCTUnwrap(stepFunction.params.firstIndex { $0.name == "k_cache.\(s.layer + 1)" })
        XCTAssertEqual(stepFunction.params[kc].type.shape[0], layout.sequences.count, "the step function takes every copy's cache")
        XCTAssertTrue(stepOps.contains { $0.kind == .concat && $0.operands == [kc, kc] }, "no op repeats the cache for the 2 copies")
        // Fixed data of neither one copy's size nor every copy's is refused, naming the input.
        XCTAssertThrowsError(try EditGraph(interpreter: cached.interpreter, name: cached.name, layout: layout, hidden: lm.config.hidden,
                                           fixed: ["attn_residual": .i32([1, 2, 3])])) { e in
            XCTAssertTrue("\(e)".contains("attn_residual"), "\(e)")
        }
        let D = lm.config.hidden, V = lm.config.vocab, N = layout.scored.map(\.count).reduce(0, +)
        let zero = [Float](repeating: 0, count: D)
        var push = zero
        for i in stride(from: 0, to: D, by: 7) { push[i] = Float(i % 5) - 2 }
        let terms = ["loss.max", "loss.exp_sum", "loss.target", "loss.kl_sum", "loss.kl_exp_sum"]
        XCTAssertNil(try cached.run([zero, zero])["logits"], "the step graph returns logits")
        func lossOutputs(_ g: EditGraph, _ d: [[Float]]) throws -> [[Int64]] {
            let out = try g.run(d)
            return try terms.map { k in try XCTUnwrap(out[k], "@\(g.name) returns no \(k)").int64Values }
        }
        func copy(_ o: [[Int64]], _ c: Int) -> [[Int64]] { o.map { a in Array(a[(c * a.count / 2)..<((c + 1) * a.count / 2)]) } }
        let both = try lossOutputs(full, [zero, zero])
        XCTAssertEqual(copy(both, 0), copy(both, 1), "two copies with δ = 0 differ")
        XCTAssertEqual(try lossOutputs(cached, [zero, zero]), both, "cached ≠ full at δ = 0")
        let moved = try lossOutputs(full, [zero, push])
        XCTAssertEqual(copy(moved, 0), copy(both, 0), "δ in copy 1 changed copy 0")
        XCTAssertNotEqual(copy(moved, 1), copy(both, 1), "δ changed nothing")
        XCTAssertEqual(try lossOutputs(cached, [zero, push]), moved, "cached ≠ full at δ ≠ 0")
        // The step function runs in its arena (memory-plan's layout): no op's result is put elsewhere.
        XCTAssertEqual(cached.interpreter.resultsOutsideArena, 0, "a step-graph op wrote outside the arena")

        // The graph's terms next to the host's f64 log-softmax of the same logits.
        let fullOut = try full.run([zero, push])
        guard case let .i16(logits)? = fullOut["logits"] else { return XCTFail("the full graph returns no i16 logits") }
        XCTAssertEqual(logits.count, 2 * N * V)
        let base = try runner.start().base, p0 = try base.klBase.map(Double.init), scale = try XCTUnwrap(full.logitScale)
        for (c, t) in try full.lossTerms(of: fullOut).enumerated() {
            for (k, target) in layout.targets.enumerated() {
                let row = (c * N + k) * V
                let host = logSoftmax(logits[row..<(row + V)], scale: scale)[target]
                XCTAssertEqual(t.targetLogProbability(k), host, accuracy: 1e-3, "copy \(c) target \(k)")
            }
            // KL of p within 10.4 nats of its top: the host's full KL plus at most the log of the
            // mass it drops (0.2% here).
            let row = (c * N + N - 1) * V, lp = logSoftmax(logits[row..<(row + V)], scale: scale)
            let kl = (0..<V).reduce(0.0) { $0 + exp(lp[$1]) * (lp[$1] - p0[$1]) }
            XCTAssertEqual(try XCTUnwrap(t.kl), kl, accuracy: 0.02, "copy \(c) KL")
            if c == 0 { XCTAssertEqual(kl, 0, accuracy: 1e-6, "δ = 0 moved the KL prompt") }
        }
        // The prompt with the longest prefix has no left padding: the plain forward of its tokens.
        let p = layout.offsets.firstIndex(of: 0)!
        let reference = try lm.logits(layout.sequences[p])
        var row = layout.scored[..<p].map(\.count).reduce(0, +)
        for t in layout.scored[p] {
            XCTAssertEqual(logits[(row * V)..<((row + 1) * V)].map { Float($0) * scale }, reference[t], "row \(t)")
            row += 1
        }
    }

    /// Independent directions per prompt (EditSettings.promptDirections) rest on this: in one
    /// copy, each prompt's loss terms depend on its own δ only.
    func testEachPromptOfACopyReadsOnlyItsOwnDelta() throws {
        let (lm, _, _, runner) = try smallEdit()
        let step = try runner.start().step, layout = runner.program.layout
        XCTAssertEqual(layout.sequences.count, 3)
        let D = lm.config.hidden, T = layout.targets.count, zero = [Float](repeating: 0, count: D)
        var push = zero
        for i in stride(from: 0, to: D, by: 5) { push[i] = 3 * (Float(i % 7) - 3) }
        let still = try step.lossTerms([zero, zero]), moved = try step.lossTerms([push, push])
        // Copy 0: δ at the plain prompt only; copy 1: δ at the context prompt and the KL prompt.
        let mixed = try step.lossTerms(perPrompt: [[push, zero, zero], [zero, push, push]])
        func prompt(_ t: LossTerms, _ p: Int) -> [Double] { (0..<T).map { t.targetLogProbability(p * T + $0) } }
        XCTAssertNotEqual(prompt(moved[0], 0), prompt(still[0], 0), "δ changed nothing")
        XCTAssertEqual(prompt(mixed[0], 0), prompt(moved[0], 0))
        XCTAssertEqual(prompt(mixed[0], 1), prompt(still[0], 1))
        XCTAssertEqual(mixed[0].kl, still[0].kl)
        XCTAssertEqual(prompt(mixed[1], 0), prompt(still[1], 0))
        XCTAssertEqual(prompt(mixed[1], 1), prompt(moved[1], 1))
        XCTAssertEqual(mixed[1].kl, moved[1].kl)
        XCTAssertNotEqual(moved[1].kl, still[1].kl)
        XCTAssertThrowsError(try step.run(perPrompt: [[zero, zero], [zero, zero]])) { e in XCTAssertTrue("\(e)".contains("one per prompt (3)"), "\(e)") }
    }

    /// The refresh function gives step functions the rows before the subject as the rank-one
    /// update leaves them: refreshed at δ, the step function with δ in every copy computes the full
    /// graph with δ·(k̄·k)/‖k̄‖² at every row (before the subject too) bit for bit; refreshed at
    /// δ = 0, exactly what it computed on the prefix cache.
    func testRefreshedStepGraphIsTheFullForwardWithDeltaBeforeTheSubject() throws {
        let (lm, _, editor, runner) = try smallEdit()
        let st = try runner.start()
        let refresh = try XCTUnwrap(st.refresh, "a layout with rows before the subject compiled no refresh function")
        XCTAssertEqual(refresh.rows, runner.program.layout.cacheLength)
        let D = lm.config.hidden, zero = [Float](repeating: 0, count: D)
        var push = zero
        for i in stride(from: 0, to: D, by: 7) { push[i] = 4 * (Float(i % 5) - 2) }
        func loss(_ g: EditGraph, _ d: [[Float]]) throws -> [[Int64]] {
            let out = try g.run(d)
            return try ["loss.max", "loss.exp_sum", "loss.target", "loss.kl_sum", "loss.kl_exp_sum"].map { k in
                try XCTUnwrap(out[k], "@\(g.name) returns no \(k)").int64Values
            }
        }
        let atZero = try runner.refreshed([st.step], by: refresh, at: zero)[0]
        XCTAssertEqual(try loss(atZero, [zero, push]), try loss(st.step, [zero, push]), "refreshed at δ = 0 ≠ the prefix cache")
        let atPush = try runner.refreshed([st.step], by: refresh, at: push)[0]
        let full = try editor.fullGraph(runner, copies: 2, beforeSubject: true)
        let refreshed = try loss(atPush, [push, push])
        XCTAssertEqual(refreshed, try loss(full, [push, push]), "refreshed step ≠ full graph with δ before the subject")
        XCTAssertNotEqual(refreshed, try loss(st.step, [push, push]), "δ at the rows before the subject changed nothing")
    }
}

final class EditMetricsTests: XCTestCase {
    func testNgramEntropyOfKnownSequences() {
        // A constant sequence has one bigram and one trigram: no entropy.
        XCTAssertEqual(EditMetrics.ngramEntropy(Array(repeating: 7, count: 50)), 0)
        // 0 1 2 3 0 1 2 3 …: 4 equally frequent bigrams and trigrams, 2 bits each → (2/3 + 4/3)·2.
        XCTAssertEqual(EditMetrics.ngramEntropy((0..<402).map { $0 % 4 }), 4, accuracy: 1e-3)
    }

    func testReportJSONRoundTripsThroughTheParser() throws {
        let v = JSONValue.object([("a", .number(1)), ("b", .array([.string("q\"\\\n\u{1}é"), .bool(true), .null, .number(0.25)]))])
        XCTAssertEqual(v.serialized, #"{"a":1,"b":["q\"\\\n\u0001é",true,null,0.25]}"#)
        XCTAssertEqual(try JSONValue.parse(Array(v.serialized.utf8)), v)
    }
}

/// Edit plans: what `zoc compile` writes and `zorun run` runs.
final class EditPlanTests: XCTestCase {
    /// A plan run computes exactly what the in-memory edit computes (same losses, steps, δ and
    /// edited weights); settings and requests survive the artifact; a forward artifact is not a plan.
    func testPlanRunMatchesTheLiveEdit() throws {
        let lm = try NPUModelTests.model()
        var s = EditSettings()
        s.weights = lm.weightForm
        s.contextPrefixes = 1; s.directions = 2; s.maxSteps = 2; s.schedule = .cosine; s.promptDirections = .shared  // the default is independent: CommandLineTests runs it
        let editor = try ZOEditor(model: lm, settings: s)
        let path = TestPaths.data.appendingPathComponent("knowedit_zsre/ZsRE-test-all.json").path
        let request = try EditRequests.load(path: path)[3]
        let bytes = try EditPlan.build(editor: editor, requests: [request])
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("zo-plan-\(getpid()).zo")
        try Data(bytes).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }

        let plan = try LoadedPlan(path: file.path)
        XCTAssertEqual(plan.settings, s)
        XCTAssertEqual(plan.prefixes, editor.prefixes)
        XCTAssertEqual(plan.requests.count, 1)
        XCTAssertEqual(plan.requests[0].prompt, request.prompt)
        XCTAssertEqual(plan.requests[0].locality, request.locality)
        XCTAssertEqual(plan.requests[0].rephrasePrompts, request.rephrasePrompts)
        // The plan's module holds edit 0's prefix function only; each edit's functions come from their segment.
        XCTAssertEqual(plan.artifact.module.functions.count, 1)
        let interp = try plan.interpreter(0, after: Interpreter(module: plan.artifact.module))
        // Prefix, step, probe and refresh.
        XCTAssertEqual(interp.module.functions.count, 4)
        XCTAssertNotNil(try plan.program(0).refresh)
        let fromPlan = try EditRunner(interpreter: interp, program: plan.program(0), settings: plan.settings, config: plan.config,
                                      embed: plan.embed, padID: plan.tokenizer.eosID ?? 0).run(weights: PlanWeights(plan: plan, interpreter: interp))

        let wname = "blk.\(s.layer).ffn_down.weight"
        let original = try XCTUnwrap(try lm.int8Weight(wname))
        var losses: [Double] = []
        let live = try editor.edit(request) { _, loss, _, _ in losses.append(loss) }
        try lm.restoreWeight(wname, original)
        XCTAssertEqual(losses.count, 2)
        XCTAssertEqual(fromPlan.steps, live.steps)
        // The probe runs at δ = 0 and at the last step whatever the gate says.
        XCTAssertEqual(fromPlan.probes, live.probes)
        XCTAssertGreaterThanOrEqual(live.probes, 2)
        XCTAssertLessThanOrEqual(live.probes, live.steps + 1)
        XCTAssertEqual(fromPlan.minTargetProbability, live.minTargetProbability)
        XCTAssertEqual(fromPlan.minTargetProbabilityAfterUpdate, live.minTargetProbabilityAfterUpdate)
        XCTAssertEqual(fromPlan.deltaNorm, live.deltaNorm)
        XCTAssertGreaterThan(live.deltaNorm, 0)
        XCTAssertEqual(fromPlan.editedWeight, live.editedWeight)
        XCTAssertEqual(fromPlan.clippedWeights, live.clippedWeights)
    }

    func testCosineScheduleFallsFromOneToZeroOverTheSteps() {
        let c = EditSettings.Schedule.cosine
        XCTAssertEqual(c.factor(step: 0, of: 600), 1)
        XCTAssertEqual(c.factor(step: 300, of: 600), 0.5, accuracy: 1e-6)
        XCTAssertEqual(c.factor(step: 600, of: 600), 0, accuracy: 1e-6)
        XCTAssertEqual(EditSettings.Schedule.constant.factor(step: 599, of: 600), 1)
    }

    func testAForwardArtifactIsNotAPlan() throws {
        let gguf = try GGUFFile(path: TestPaths.requireModel())
        let importer = try LlamaImporter(gguf: gguf)
        let c = try NPUCompiler(importer: importer, tokenizer: Tokenizer(gguf: gguf))
        let m = try c.lower("forward", ForwardShape(seqLen: 2))
        let bytes = try ArtifactBuilder.build(module: m, entry: "forward", gguf: gguf, tokenizer: c.tokenizer, config: importer.config, settings: [:])
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("zo-forward-\(getpid()).zo")
        try Data(bytes).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        XCTAssertThrowsError(try LoadedPlan(path: file.path)) { e in XCTAssertTrue("\(e)".contains("not an edit plan"), "\(e)") }
    }
}
