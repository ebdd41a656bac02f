import ArgumentParser
import Foundation
import ZOEditOptions
import ZOLowering
import ZOModelIO
import ZORuntime

/// zorun: runs models (and, later, compiled edit plans). Thin: every command calls the libraries.
@main
struct Zorun: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "zo runtime: generate, tokenize and inspect logits with the reference interpreter.",
        subcommands: [Generate.self, Tokenize.self, Logits.self, Edit.self, Run.self])
}

struct ModelOption: ParsableArguments {
    @Option(help: "The model file (GGUF). Default: $ZO_MODEL or the model fetched by scripts/fetch-model.sh.")
    var model: String = DefaultModel.path
    @Option(help: "fp32 (the float graph) or int (the graph lowered to the npu profile; embedding lookup on the host).")
    var precision: LanguageModel.Precision = .fp32
    @Option(help: "With --precision int: the calibration clipping rule (max or percentile).")
    var clip: ClipRule = .max
    @Option(help: "With --precision int: blocks (GGUF's weight blocks held exactly) or per-channel (int8 per output channel).")
    var weights: WeightForm = .blocks
    @Option(help: "Run a compiled .zo artifact (zoc lower -o FILE.zo) instead of --model; always the int path.")
    var artifact: String?
    @Flag(help: "With --artifact: skip the segment checksums.")
    var noVerify = false

    func load() throws -> CausalLM {
        if let a = artifact { return try ArtifactModel(path: a, verifyChecksums: !noVerify) }
        return try LanguageModel(path: model, precision: precision, clipRule: clip, weightForm: weights)
    }

    /// The file the tokens come from, named in errors and never overwritten.
    var source: String { artifact ?? model }
}

extension LanguageModel.Precision: ExpressibleByArgument {}
extension ClipRule: ExpressibleByArgument {}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Greedy generation with a KV cache; tokens stream to stdout.")
    @OptionGroup var model: ModelOption
    @Option(help: "The prompt text.") var prompt: String
    @Option(name: .short, help: "Tokens to generate.") var n: Int = 24
    @Flag(help: "Wrap the prompt in the model's chat template.") var chat = false
    @Flag(help: "Print timings to stderr as JSON: load, prefill, decode tokens/s (after a warm-up generation that builds the graphs).")
    var stats = false

    func validate() throws { guard n >= 1 else { throw ValidationError("-n must be at least 1") } }

    func run() throws {
        let t0 = monotonicSeconds()
        let lm = try model.load()
        let ids = lm.tokenizer.encode(chat ? lm.chatPrompt(prompt) : prompt)
        if stats { _ = try lm.generate(ids, maxTokens: n) { _ in } }  // builds and calibrates the graphs
        let load = monotonicSeconds() - t0
        var streamer = TextStreamer(tokenizer: lm.tokenizer)
        var stamps: [Double] = []
        let g0 = monotonicSeconds()
        _ = try lm.generate(ids, maxTokens: n) { id in
            stamps.append(monotonicSeconds())
            if lm.isStopToken(id) { return }
            FileHandle.standardOutput.write(Data(streamer.push(id).utf8))
        }
        print(streamer.finish())
        if stats, let first = stamps.first, let last = stamps.last {
            let r: [String: Double] = ["load_s": load, "prefill_s": first - g0, "prompt_tokens": Double(ids.count), "tokens": Double(stamps.count),
                                       "decode_tokens_per_s": stamps.count > 1 ? Double(stamps.count - 1) / (last - first) : .nan]
            FileHandle.standardError.write(Data((String(decoding: try JSONSerialization.data(withJSONObject: r, options: [.sortedKeys]), as: UTF8.self) + "\n").utf8))
        }
    }
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print token ids (no special tokens added) as a JSON array per input.")
    @OptionGroup var model: ModelOption
    @Option(help: "Text to tokenize.") var text: String?
    @Option(help: "A file with one JSON string per line.") var input: String?

    func validate() throws {
        guard (text == nil) != (input == nil) else { throw ValidationError("give exactly one of --text and --input") }
    }

    func run() throws {
        let tok = try model.artifact == nil ? Tokenizer(gguf: GGUFFile(path: model.model)) : model.load().tokenizer
        if let t = text { print(jsonArray(tok.encode(t))); return }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: input!)) } catch { throw CLIError("\(input!): cannot read: \(error.localizedDescription)") }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        for (i, line) in lines.enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            guard let s = try? JSONSerialization.jsonObject(with: Data(line.utf8), options: [.fragmentsAllowed]) as? String else {
                throw CLIError("\(input!):\(i + 1): expected a JSON string, found \(line.prefix(60))")
            }
            print(jsonArray(tok.encode(s)))
        }
    }
}

struct Logits: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Top-K logits and logsumexp at every position.")
    @OptionGroup var model: ModelOption
    @Option(help: "Prompt text.") var prompt: String?
    @Option(help: "Token ids, comma-separated.") var ids: String?
    @Option(help: "How many top logits per position.") var top: Int = 10
    @Flag(help: "Print JSON: {\"positions\": [{\"top_ids\", \"top_logits\", \"logsumexp\"}]}.") var json = false
    @Option(help: "Write the last position's full log-probability vector here (little-endian f32).") var lastLogprobs: String?

    func validate() throws {
        guard (prompt == nil) != (ids == nil) else { throw ValidationError("give exactly one of --prompt and --ids") }
        guard top >= 1 else { throw ValidationError("--top must be at least 1") }
    }

    func run() throws {
        let lm = try model.load()
        let tokens: [Int]
        if let p = prompt {
            tokens = lm.tokenizer.encode(p)
        } else {
            tokens = try ids!.split(separator: ",").map {
                guard let v = Int($0.trimmingCharacters(in: .whitespaces)) else { throw CLIError("--ids: '\($0)' is not an integer") }
                return v
            }
        }
        let logits = try lm.logits(tokens)
        let summary = LogitSummary(logits: logits, top: top)
        if json {
            print(summary.json)
        } else {
            for (i, p) in summary.positions.enumerated() {
                let pairs = zip(p.topIDs, p.topLogits).map { "\($0)=\(String(format: "%.4f", $1))" }.joined(separator: " ")
                print("[\(i)] \(lm.tokenizer.decode([tokens[i]]).debugDescription) lse=\(String(format: "%.5f", p.logsumexp)) \(pairs)")
            }
        }
        if let path = lastLogprobs, let last = logits.last {
            try writeAtomically(LogitSummary.logProbBytes(last), to: path, inputs: [model.source])
        }
    }
}

struct Edit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Edit facts on the int path (MobiEdit: ZO on batched ± perturbed graphs, then r-ROME), optionally scored before and after.")
    @Option(help: "The model file (GGUF).") var model: String = DefaultModel.path
    @Option(help: "Edit requests (JSON: KnowEdit/EasyEdit or ZsRE-MEND shape).") var edits: String
    @Option(help: "First record to edit.") var from: Int = 0
    @Option(help: "How many records.") var count: Int = 1
    @OptionGroup var options: EditSettingsOptions
    @OptionGroup var output: EditRunOptions

    func validate() throws {
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        try output.validate(edits: count)
    }

    func run() throws {
        let requests = try EditRequests.load(path: edits)
        guard from >= 0, from < requests.count else { throw CLIError("\(edits): has \(requests.count) records; --from \(from) is outside") }
        let lm = try LanguageModel(path: model, precision: .int, weightForm: options.weights)
        let editor = try ZOEditor(model: lm, settings: options.settings)
        let batch = Array(requests[from..<min(requests.count, from + count)])
        let wname = "blk.\(options.layer).ffn_down.weight"
        guard let original = try lm.int8Weight(wname) else { throw CLIError("\(model): no int8 form of \(wname)") }
        var loop = try EditLoop(requests: batch, firstRecord: from, options: output, eval: output.eval ? lm : nil, inputs: [model, edits], gguf: lm.gguf)
        try loop.run(
            edit: { i, progress in try editor.edit(batch[i], progress: progress) },
            applied: { _ in },  // the model's own weights are edited
            undo: { if !output.sequential { try lm.restoreWeight(wname, original) } })
        try loop.write()
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run an edit plan (zoc compile): per edit the prefix function once, the ZO loop on the host, early stopping on the probe, then r-ROME's update.")
    @Argument(help: "The plan (.zo from zoc compile).") var plan: String
    @Option(help: "The source model (GGUF; its sha256 must match the plan's): needed by --out, --out-dir and --eval.") var model: String = DefaultModel.path
    @OptionGroup var output: EditRunOptions

    func validate() throws { try output.validate(edits: nil) }

    func run() throws {
        let p = try LoadedPlan(path: plan)
        try output.validate(edits: p.requests.count)
        let (eval, sequential, out, outDir) = (output.eval, output.sequential, output.out, output.outDir)
        let weights = try PlanWeights(plan: p, interpreter: Interpreter(module: p.artifact.module))
        let wname = "blk.\(p.settings.layer).ffn_down.weight"
        let original = try weights.interpreter.constant(wname + ".i8")
        var source: LanguageModel?
        if eval || out != nil || outDir != nil {
            let lm = try LanguageModel(path: model, precision: eval ? .int : .fp32, weightForm: p.settings.weights)
            guard SHA256.hex(lm.gguf.file.bytes) == p.artifact.manifest.provenance.sha256 else {
                throw CLIError("\(model) is not the model \(plan) was compiled from (\(p.artifact.manifest.provenance.fileName), sha256 \(p.artifact.manifest.provenance.sha256))")
            }
            source = lm
        }
        // The eval model takes each edit on its per-channel int8 form (as `zorun edit`'s model does),
        // which exists once the first score lowered its graphs: saved then, to undo each edit.
        if eval { try source!.makeEditable(wname) }
        var evalOriginal: [Int8]?
        var loop = try EditLoop(requests: p.requests, firstRecord: 0, options: output, eval: eval ? source : nil, inputs: [plan], gguf: source?.gguf)
        try loop.run(
            edit: { i, progress in
                weights.interpreter = try p.interpreter(i, after: weights.interpreter)
                return try EditRunner(interpreter: weights.interpreter, program: p.program(i), settings: p.settings, config: p.config,
                                      embed: p.embed, padID: p.tokenizer.eosID ?? 0).run(weights: weights, progress: progress)
            },
            applied: { o in
                guard eval else { return }
                if evalOriginal == nil {
                    guard let q = try source!.int8Weight(wname) else { throw CLIError("\(model): no int8 form of \(wname) after scoring") }
                    evalOriginal = q
                }
                try source!.replaceWeight(o.weightName, o.editedWeight)
            },
            undo: {
                guard !sequential else { return }
                try weights.reset(to: original)
                if let q = evalOriginal { try source!.restoreWeight(wname, q) }
            })
        try loop.write()
    }
}

/// What `zorun edit` and `zorun run` do with their edits besides making them: one definition.
struct EditRunOptions: ParsableArguments {
    @Flag(help: "Apply the edits one after another (default: each on a fresh model).") var sequential = false
    @Flag(help: "Score each edit before and after (rewrite, rephrase, locality, portability) on the int path.") var eval = false
    @Flag(help: "With --eval, also the fluency: n-gram entropy of 100 tokens generated greedily from the edit prompt (float graph with the edited weights, as the exported GGUF).") var fluency = false
    @Flag(help: "Print every step on its own line to stderr (a terminal gets a one-line display anyway).") var verbose = false
    @Option(help: "Write a JSON report here.") var report: String?
    @Option(help: "Write the edited model here (GGUF; the edited tensor as F32, all else byte-identical).") var out: String?
    @Option(help: "Write each edited model (single editing) as DIR/record-N.gguf.") var outDir: String?

    /// `edits`: how many edits run, when known.
    func validate(edits: Int?) throws {
        if fluency && !eval { throw ValidationError("--fluency is a score of --eval: give both") }
        if out != nil && (edits ?? 1) > 1 && !sequential {
            throw ValidationError("--out with several edits needs --sequential (each edit is otherwise undone); --out-dir writes one model per edit")
        }
        if let d = outDir {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: d, isDirectory: &isDir), isDir.boolValue else { throw ValidationError("--out-dir \(d) is not a directory") }
        }
    }
}

/// The per-edit loop both edit commands share: progress display, scores before and after, the
/// printed line per edit, the JSON report and the edited GGUFs.
struct EditLoop {
    let requests: [EditRequest]
    let firstRecord: Int
    /// Each edited model goes to outDir/record-N.gguf as soon as it is made; the JSON report is
    /// rewritten after every edit (a long run stopped midway keeps what it did).
    let options: EditRunOptions
    /// The model the scores are measured on (edited by `applied`).
    let eval: LanguageModel?
    let inputs: [String]
    let gguf: GGUFFile?
    var rows: [JSONValue] = []
    var edited: [String: [Float]] = [:]

    init(requests: [EditRequest], firstRecord: Int, options: EditRunOptions, eval: LanguageModel?, inputs: [String], gguf: GGUFFile?) throws {
        self.requests = requests; self.firstRecord = firstRecord; self.options = options; self.eval = eval; self.inputs = inputs; self.gguf = gguf
        if (options.out != nil || options.outDir != nil) && gguf == nil { throw CLIError("writing a GGUF needs the source model") }
    }

    mutating func run(edit: (Int, @escaping EditProgress) throws -> EditOutcome, applied: (EditOutcome) throws -> Void, undo: () throws -> Void) throws {
        let tty = isatty(fileno(stderr)) != 0
        let n = requests.count, verbose = options.verbose
        let generate: (([Int]) throws -> [Int])? = options.fluency ? eval.map { lm in { try lm.generateFloat($0, maxTokens: 100, throughEnd: true) } } : nil
        for (i, r) in requests.enumerated() {
            let before = try eval.map { try EditScores.measure($0, r, localityBefore: nil, generate: generate) }
            let o = try edit(i) { step, loss, p, rd in
                guard tty || verbose else { return }
                FileHandle.standardError.write(Data("\(verbose ? "" : "\r")  edit \(i + 1)/\(n) step \(step) loss \(String(format: "%.3f", loss)) min p(target) \(String(format: "%.3f", p)) ‖δ‖/‖v‖ \(String(format: "%.2f", rd))\(verbose ? "\n" : "   ")".utf8))
            }
            if tty && !verbose { FileHandle.standardError.write(Data("\n".utf8)) }
            try applied(o)
            edited[o.weightName] = o.editedWeight
            if let dir = options.outDir, let g = gguf {
                try g.rewriter(replacing: [o.weightName: o.editedWeight]).write(to: "\(dir)/record-\(firstRecord + i).gguf", inputs: inputs + [g.path])
            }
            let after = try before.map { try EditScores.measure(eval!, r, localityBefore: $0.1, generate: generate).0 }
            print("[\(firstRecord + i)] \(r.prompt.debugDescription) → \(r.targetNew.debugDescription): steps \(o.steps), evaluations \(o.evaluations), probes \(o.probes), stopped early \(o.stoppedEarly), min p(target) \(String(format: "%.3f", o.minTargetProbability)) → \(String(format: "%.3f", o.minTargetProbabilityAfterUpdate)) after the update, ‖δ‖/‖v‖ \(String(format: "%.2f", o.deltaNorm / o.valueNorm)), clipped \(o.clippedWeights), \(String(format: "%.1f", o.seconds)) s (\(o.phaseSeconds.map { "\($0.phase) \(String(format: "%.1f", $0.seconds))" }.joined(separator: ", ")))")
            fflush(stdout)
            if let b = before?.0, let a = after { print("    before: \(b.line)\n    after:  \(a.line)") }
            var row: [(key: String, value: JSONValue)] = [
                ("record", .number(Double(firstRecord + i))), ("steps", .number(Double(o.steps))), ("evaluations", .number(Double(o.evaluations))), ("probes", .number(Double(o.probes))),
                ("stopped_early", .bool(o.stoppedEarly)), ("seconds", .number(o.seconds)),
                ("phase_seconds", .object(o.phaseSeconds.map { ($0.phase, .number($0.seconds)) })), ("clipped_weights", .number(Double(o.clippedWeights))),
                ("value_norm", .number(Double(o.valueNorm))), ("delta_norm", .number(Double(o.deltaNorm))),
                ("min_target_probability", .number(o.minTargetProbability)), ("min_target_probability_after_update", .number(o.minTargetProbabilityAfterUpdate)),
                // The process's peak resident memory so far and its resident memory now (bytes), to see where memory goes.
                ("peak_rss_bytes", .number(Double(ProcessStats.peakRSS() ?? 0))), ("rss_bytes", .number(Double(ProcessStats.currentRSS() ?? 0))),
            ]
            if let b = before?.0 { row.append(("before", b.json)) }
            if let a = after { row.append(("after", a.json)) }
            rows.append(.object(row))
            if let path = options.report { try writeAtomically(Data(JSONValue.array(rows).serialized.utf8), to: path, inputs: inputs) }
            try undo()
        }
    }

    func write() throws {
        if let path = options.out {
            guard let g = gguf else { throw CLIError("writing a GGUF needs the source model") }
            try g.rewriter(replacing: edited).write(to: path, inputs: inputs + [g.path])
            print("wrote \(path)")
        }
    }
}

extension EditScores {
    var line: String {
        func f(_ v: Double?) -> String { v.map { String(format: "%.1f", $0 * 100) } ?? "-" }
        return "rewrite \(f(rewrite))  rephrase \(f(rephrase))  locality \(f(locality))  portability \(f(portability))"
            + (fluency.map { "  fluency \(f($0))" } ?? "")
    }
    var json: JSONValue {
        var o: [(key: String, value: JSONValue)] = [("rewrite", .number(rewrite * 100))]
        if let v = rephrase { o.append(("rephrase", .number(v * 100))) }
        if let v = locality { o.append(("locality", .number(v * 100))) }
        if let v = portability { o.append(("portability", .number(v * 100))) }
        if let v = fluency { o.append(("fluency", .number(v * 100))) }
        return .object(o)
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func jsonArray(_ ids: [Int]) -> String { "[" + ids.map(String.init).joined(separator: ", ") + "]" }
