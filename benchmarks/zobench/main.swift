import ArgumentParser
import Foundation
import ZOIR
import ZOLowering
import ZOModelIO
import ZORuntime

extension ClipRule: ExpressibleByArgument {}
extension WeightForm: ExpressibleByArgument {}

/// zobench: prints speed and memory figures. Each measurement runs in a fresh child process
/// (so peak RSS belongs to that run alone); the parent prints medians over the runs.
@main
struct ZoBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "zo benchmarks (build with -c release).",
        subcommands: [Float32Forward.self, Float32Once.self, Fidelity.self, Greedy.self, IntForward.self, EditStep.self, Decode.self, Kernels.self, EditDirections.self, ArtifactLoad.self, ArtifactLoadOnce.self])
}

struct Float32Forward: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "float",
        abstract: "Float reference path: forward time at batch 1 × 16 tokens, decode tokens/s, peak RSS (medians over runs).")
    @Option(help: "The model (GGUF).") var model: String = DefaultModel.path
    @Option(help: "Child processes to run.") var runs: Int = 5
    @Option(help: "Timed forward passes per child (after one warm-up).") var forwards: Int = 5
    @Option(help: "Tokens decoded per child.") var decode: Int = 32

    func run() throws {
        let results = try childRuns(["float-once", "--model", model, "--forwards", "\(forwards)", "--decode", "\(decode)"], runs: runs)
        func med(_ k: String) -> Double { median(results.map { $0[k] ?? .nan }) }
        print("zo float reference path, \(URL(fileURLWithPath: model).lastPathComponent), medians of \(runs) runs")
        print(String(format: "  forward, batch 1 x 16 tokens:  %8.2f ms", med("forward_ms")))
        print(String(format: "  prefill, 16 tokens:            %8.2f ms", med("prefill_ms")))
        print(String(format: "  decode:                        %8.2f tokens/s", med("decode_tps")))
        print(String(format: "  load + dequantize weights:     %8.2f s", med("load_s")))
        print(String(format: "  peak RSS:                      %8.1f MiB", med("peak_rss_mib")))
    }
}

struct Float32Once: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "float-once", abstract: "One measurement run (prints JSON).", shouldDisplay: false)
    @Option var model: String
    @Option var forwards: Int = 5
    @Option var decode: Int = 32

    func run() throws {
        let t0 = monotonicSeconds()
        let lm = try LanguageModel(path: model)
        // 16 tokens of ordinary text.
        let ids = Array(lm.tokenizer.encode("The history of the city begins in the early medieval period, when a small settlement grew around the river crossing.").prefix(16))
        _ = try lm.logits(ids)  // builds the graph and dequantizes the weights
        let load = monotonicSeconds() - t0
        var times: [Double] = []
        for _ in 0..<forwards {
            let s = monotonicSeconds()
            _ = try lm.logits(ids)
            times.append(monotonicSeconds() - s)
        }
        // Decode: warm once (builds the prefill and decode graphs), then time a fresh generation.
        _ = try lm.generate(ids, maxTokens: decode)
        var stamps: [Double] = []
        let g0 = monotonicSeconds()
        let out = try lm.generate(ids, maxTokens: decode) { _ in stamps.append(monotonicSeconds()) }
        let decodeTPS = out.count > 1 ? Double(out.count - 1) / (stamps.last! - stamps.first!) : .nan
        let r: [String: Double] = [
            "forward_ms": median(times) * 1000, "prefill_ms": (stamps.first! - g0) * 1000, "decode_tps": decodeTPS,
            "load_s": load, "peak_rss_mib": Double(ProcessStats.peakRSS() ?? 0) / 1_048_576, "decoded": Double(out.count),
        ]
        print(String(decoding: try JSONSerialization.data(withJSONObject: r, options: [.sortedKeys]), as: UTF8.self))
    }
}

struct Fidelity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The int path against the fixtures: KL(fp32 ‖ zo int) at the last position of the 16 prompts, top-1 agreement.")
    @Option(help: "The model (GGUF).") var model: String = DefaultModel.path
    @Option(help: "The fixtures folder.") var fixtures: String = "../shared/fixtures/smollm2"
    @Option(help: "Calibration clipping rule: percentile or max.") var clip: ClipRule = .max
    @Option(help: "How many of the 16 prompts.") var prompts: Int = 16
    @Option(help: "Weight form: blocks or per-channel.") var weights: WeightForm = .blocks

    struct Case: Decodable { let prompt: String; let ids: [Int] }
    struct Cases: Decodable { let cases: [Case] }

    func run() throws {
        let cases = try JSONDecoder().decode(Cases.self, from: Data(contentsOf: URL(fileURLWithPath: fixtures + "/logits_fp32.json"))).cases
        let ref = try Data(contentsOf: URL(fileURLWithPath: fixtures + "/last_logprobs_fp32.f32"))
        let llama = try? Data(contentsOf: URL(fileURLWithPath: fixtures + "/last_logprobs_llamacpp.f32"))
        let lm = try LanguageModel(path: model, precision: .int, clipRule: clip, weightForm: weights)
        let v = lm.config.vocab
        func row(_ d: Data, _ i: Int) -> [Float] {
            d.withUnsafeBytes { b in (0..<v).map { Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: (i * v + $0) * 4, as: UInt32.self))) } }
        }
        func kl(_ p: [Float], _ q: [Float]) -> Double {
            zip(p, q).reduce(0.0) { $0 + (Double($1.0).isFinite ? exp(Double($1.0)) * (Double($1.0) - Double($1.1)) : 0) }
        }
        var kls: [Double] = [], llamaKLs: [Double] = [], agree = 0
        for (i, c) in cases.prefix(prompts).enumerated() {
            let t0 = monotonicSeconds()
            let logits = try lm.logits(c.ids).last!
            let lse = logSumExp(logits)
            let ours = logits.map { Float(Double($0) - lse) }
            let p = row(ref, i)
            let k = kl(p, ours)
            kls.append(k)
            if let l = llama { llamaKLs.append(kl(p, row(l, i))) }
            let same = argmax(p) == argmax(ours)
            if same { agree += 1 }
            print(String(format: "%2d  KL %.5f  top-1 %@  %5.1fs  %@", i, k, same ? "same" : "DIFF", monotonicSeconds() - t0, c.prompt.debugDescription))
        }
        print(String(format: "mean KL(fp32 ‖ zo int) = %.5f   (llama.cpp: %.5f)   top-1 agreement %d/%d", kls.reduce(0, +) / Double(kls.count),
                     llamaKLs.isEmpty ? .nan : llamaKLs.reduce(0, +) / Double(llamaKLs.count), agree, kls.count))
    }
}

struct Greedy: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Greedy 24-token continuations of the 6 fixture prompts, compared with greedy_fp32.json.")
    @Option(help: "The model (GGUF).") var model: String = DefaultModel.path
    @Option(help: "The fixtures folder.") var fixtures: String = "../shared/fixtures/smollm2"
    @Option(help: "fp32 or int.") var precision: String = "int"
    @Option(help: "Weight form of the int path: blocks or per-channel.") var weights: WeightForm = .blocks

    struct Case: Decodable { let prompt: String; let ids: [Int]; let greedy_ids: [Int] }
    struct Cases: Decodable { let cases: [Case] }

    func run() throws {
        let cases = try JSONDecoder().decode(Cases.self, from: Data(contentsOf: URL(fileURLWithPath: fixtures + "/greedy_fp32.json"))).cases
        guard let p = LanguageModel.Precision(rawValue: precision) else { throw ValidationError("--precision is fp32 or int") }
        let lm = try LanguageModel(path: model, precision: p, weightForm: weights)
        var same = 0
        for c in cases {
            let t0 = monotonicSeconds()
            let got = try lm.generate(c.ids, maxTokens: 24)
            let equal = got == c.greedy_ids
            if equal { same += 1 }
            let firstDiff = zip(got, c.greedy_ids).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            print(String(format: "%@  %5.1fs  %@ → %@", equal ? "same" : "DIFF at \(firstDiff ?? min(got.count, c.greedy_ids.count))",
                         monotonicSeconds() - t0, c.prompt.debugDescription, lm.tokenizer.decode(got).debugDescription))
        }
        print("greedy \(precision) equal to fp32 on \(same)/\(cases.count) prompts")
    }
}

struct IntForward: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "int-forward",
        abstract: "One int forward pass at batch 1 × N tokens: time (median of runs), peak RSS during the pass, memory-plan's arena.")
    @Option(help: "The model (GGUF).") var model: String = DefaultModel.path
    @Option(help: "Tokens.") var seqLen: Int = 16
    @Option(help: "Timed runs.") var runs: Int = 5
    @Option(help: "Weight form: blocks or per-channel.") var weights: WeightForm = .blocks

    func run() throws {
        let lm = try LanguageModel(path: model, precision: .int, weightForm: weights)
        let ids = Array(repeating: 504, count: seqLen)
        let c = try lm.npuCompiler()
        let m = try c.lower("npu_t\(seqLen)", ForwardShape(seqLen: seqLen))
        _ = try lm.logits(ids)  // builds the interpreter for this shape, materializes the int weights
        let before = ProcessStats.currentRSS() ?? 0
        ProcessStats.resetPeakRSS()
        let floor = ProcessStats.currentRSS() ?? 0
        var times: [Double] = []
        for _ in 0..<runs {
            let t0 = monotonicSeconds()
            _ = try lm.logits(ids)
            times.append(monotonicSeconds() - t0)
        }
        let peak = ProcessStats.peakRSS() ?? 0
        let weights = m.constants.filter { $0.type.dtype == .i8 }.reduce(0) { $0 + $1.type.byteCount }
        if case let .int(arena)? = m.attributes["arena.npu_t\(seqLen)"] {
            print(String(format: "memory-plan peak arena, batch 1 x %d:  %.2f MiB (%d bytes)", seqLen, Double(arena) / 1_048_576, arena))
        }
        print(String(format: "weights (i8 constants):                %.1f MiB", Double(weights) / 1_048_576))
        print(String(format: "int forward, batch 1 x %d (median of %d): %.3f s", seqLen, runs, median(times)))
        print(String(format: "resident before the passes:            %.1f MiB", Double(before) / 1_048_576))
        print(String(format: "resident after releasing freed memory: %.1f MiB", Double(floor) / 1_048_576))
        print(String(format: "peak RSS during the passes:            %.1f MiB", Double(peak) / 1_048_576))
    }
}

/// Runs this executable with `arguments` in `runs` fresh child processes, each printing one JSON
/// object of figures; returns them (progress on stderr).
func childRuns(_ arguments: [String], runs: Int) throws -> [[String: Double]] {
    var results: [[String: Double]] = []
    for i in 0..<runs {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
        p.arguments = arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0, let obj = try JSONSerialization.jsonObject(with: data) as? [String: Double] else {
            throw ValidationError("run \(i + 1) failed (exit \(p.terminationStatus))")
        }
        results.append(obj)
        FileHandle.standardError.write(Data("run \(i + 1)/\(runs): \(obj.keys.sorted().map { "\($0)=\(String(format: "%.3f", obj[$0]!))" }.joined(separator: " "))\n".utf8))
    }
    return results
}

struct ArtifactLoad: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "artifact",
        abstract: "Loading a .zo: time, resident memory it adds before the first run (heap vs mapped file pages), first forward (medians over fresh processes).")
    @Argument(help: "The artifact (zoc lower MODEL -o FILE.zo).") var artifact: String
    @Option(help: "Child processes to run.") var runs: Int = 5
    @Flag(help: "Skip the segment checksums.") var noVerify = false

    func run() throws {
        let results = try childRuns(["artifact-once", artifact] + (noVerify ? ["--no-verify"] : []), runs: runs)
        func med(_ k: String) -> Double { median(results.map { $0[k] ?? .nan }) }
        print("zo artifact \(URL(fileURLWithPath: artifact).lastPathComponent)\(noVerify ? " (--no-verify)" : ""), medians of \(runs) fresh processes")
        print(String(format: "  load + validate:                          %8.1f ms", med("load_ms")))
        print(String(format: "  added heap (RssAnon) before the first run: %7.2f MiB", med("load_anon_mib")))
        print(String(format: "  added mapped file pages (RssFile):        %8.2f MiB", med("load_file_mib")))
        print(String(format: "  first forward (%2.0f tokens):                %8.1f ms", med("tokens"), med("first_forward_ms")))
        print(String(format: "  heap after the first run:                 %8.2f MiB", med("run_anon_mib")))
        print(String(format: "  peak RSS:                                 %8.1f MiB", med("peak_rss_mib")))
    }
}

struct ArtifactLoadOnce: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "artifact-once", abstract: "One measurement run (prints JSON).", shouldDisplay: false)
    @Argument var artifact: String
    @Flag var noVerify = false

    func run() throws {
        func mib(_ b: Int?) -> Double { Double(b ?? 0) / 1_048_576 }
        ProcessStats.resetPeakRSS()
        let anon0 = ProcessStats.anonymousRSS(), file0 = ProcessStats.fileRSS()
        let t0 = monotonicSeconds()
        let model = try ArtifactModel(path: artifact, verifyChecksums: !noVerify)
        let load = monotonicSeconds() - t0
        let anon1 = ProcessStats.anonymousRSS(), file1 = ProcessStats.fileRSS()
        let ids = Array(model.tokenizer.encode("The history of the city begins in the early medieval period").prefix(model.forward.length))
        let t1 = monotonicSeconds()
        _ = try model.logits(ids)
        let first = monotonicSeconds() - t1
        let r: [String: Double] = [
            "load_ms": load * 1000, "load_anon_mib": mib(anon1) - mib(anon0), "load_file_mib": mib(file1) - mib(file0),
            "first_forward_ms": first * 1000, "tokens": Double(ids.count), "run_anon_mib": mib(ProcessStats.anonymousRSS()) - mib(anon0),
            "peak_rss_mib": mib(ProcessStats.peakRSS()),
        ]
        print(String(decoding: try JSONSerialization.data(withJSONObject: r, options: [.sortedKeys]), as: UTF8.self))
    }
}

struct EditStep: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "edit-step",
        abstract: "One ZO step graph (2q perturbed copies × the edit's prompts) on the int path: time (median of runs), integer MACs and their rate, time per op kind.")
    @Option(help: "The model (GGUF).") var model: String = DefaultModel.path
    @Option(help: "Edit requests (JSON).") var edits: String = "../shared/data/knowedit_zsre/ZsRE-test-all.json"
    @Option(help: "Record.") var record: Int = 0
    @Option(help: "Directions q (2q copies).") var directions: Int = EditSettings().directions
    @Option(help: "Timed runs.") var runs: Int = 3
    @Option(help: "Weight form: blocks or per-channel.") var weights: WeightForm = .editing

    func run() throws {
        let lm = try LanguageModel(path: model, precision: .int, weightForm: weights)
        var s = EditSettings()
        s.directions = directions
        s.weights = weights
        let editor = try ZOEditor(model: lm, settings: s)
        let request = try EditRequests.load(path: edits)[record]
        let layout = try EditLayout(request, prefixes: editor.prefixes, tokenizer: lm.tokenizer)
        let g = try editor.runner(request).start().step
        let zero = [[Float]](repeating: [Float](repeating: 0, count: lm.config.hidden), count: 2 * directions)
        _ = try g.run(zero)
        g.interpreter.profile = [:]
        var times: [Double] = []
        for _ in 0..<runs {
            let t0 = monotonicSeconds()
            _ = try g.run(zero)
            times.append(monotonicSeconds() - t0)
        }
        let f = g.interpreter.module.function(g.name)!
        var macs = 0.0
        for op in f.ops where [.fullyConnected, .blockFullyConnected, .matmul].contains(op.kind) {
            let a = f.type(of: op.operands[0]).shape, out = op.type.shape
            let k = op.kind == OpKind.matmul && !(op.attributes["transpose_b"].map { $0 == .bool(true) } ?? false)
                ? f.type(of: op.operands[1]).shape.dropLast().last! : a.last!
            macs += Double(out.reduce(1, *)) * Double(k)
        }
        let t = median(times)
        print("edit step graph, record \(record): \(g.copies) copies × \(layout.sequences.count) prompts × \(g.rows) rows, \(Threads.count) threads")
        print(String(format: "  time (median of %d):  %.3f s", runs, t))
        print(String(format: "  integer MACs:         %.2f G  (%.1f GMAC/s)", macs / 1e9, macs / 1e9 / t))
        let plan = MemoryPlanPass.plan(f)
        print(String(format: "  arena (memory-plan):  %.2f MiB, at most %.2f MiB live at once", Double(plan.peak) / 1048576, Double(plan.mostLive) / 1048576))
        print("  ops writing outside the arena: \(g.interpreter.resultsOutsideArena.map(String.init) ?? "none (not run in an arena)")")
        try printProfile(g.interpreter, g.name, runs: runs)
    }
}

/// The time `interp` spent per op kind over `runs` runs of `name` (its profile), largest first.
func printProfile(_ interp: Interpreter, _ name: String, runs: Int) throws {
    guard let f = interp.module.function(name) else { throw RuntimeError.noFunction(name, available: interp.module.functions.map(\.name)) }
    let prof = interp.profile ?? [:]
    let total = prof.values.reduce(0, +)
    var elements: [String: (ops: Int, count: Int)] = [:]
    for (op, k) in zip(f.ops, try interp.profileKeys(name)) where !k.isEmpty {
        elements[k, default: (0, 0)].ops += 1; elements[k]!.count += op.type.elementCount
    }
    print("  op kind and result     time/run   share   ops  elements  ns/element")
    for (k, v) in prof.sorted(by: { $0.value > $1.value }) where v / total > 0.005 {
        let e = elements[k] ?? (0, 0)
        print(String(format: "  %-22@ %6.3f s  %5.1f%%  %4d  %8.2fM  %6.2f", k as NSString, v / Double(runs), 100 * v / total,
                     e.ops, Double(e.count) / 1e6, v / Double(runs) / Double(max(e.count, 1)) * 1e9))
    }
}

struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Greedy decoding on the int path with its KV cache: tokens/s and the decode function's time per op kind.")
    @Option(help: "The model (GGUF).") var model: String = DefaultModel.path
    @Option(help: "The prompt text.") var prompt: String = "The capital of France is"
    @Option(name: .short, help: "Tokens per run.") var n: Int = 48
    @Option(help: "Timed runs.") var runs: Int = 3
    @Option(help: "Weight form: blocks or per-channel.") var weights: WeightForm = .blocks

    func run() throws {
        let lm = try LanguageModel(path: model, precision: .int, weightForm: weights)
        let ids = lm.tokenizer.encode(prompt)
        let never: (Int) -> Bool = { _ in false }
        _ = try lm.generate(ids, maxTokens: n)  // lowers the prefill and decode functions
        guard let d = lm.npuDecoders.values.first else { throw RuntimeError.badRequest("no decoder was built") }
        d.decode.profile = [:]
        var rates: [Double] = []
        for _ in 0..<runs {
            var stamps: [Double] = []
            _ = try d.generate(ids, maxTokens: n, isStop: never) { _ in stamps.append(monotonicSeconds()) }
            rates.append(Double(stamps.count - 1) / (stamps.last! - stamps.first!))
        }
        print("int decode, \(ids.count)-token prompt, \(n) tokens (no stop), \(Threads.count) threads, \(weights.rawValue) weights")
        print(String(format: "  tokens/s (median of %d): %.1f   (runs: %@)", runs, median(rates), rates.map { String(format: "%.1f", $0) }.joined(separator: ", ")))
        try printProfile(d.decode, d.decodeName, runs: runs * (n - 1))
    }
}

struct Kernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The integer matmul kernels at the shapes of a ZO step graph: GMAC/s per shape next to the machine's int16 multiply-add peak (a tight loop of the multiply-add the kernels use, vpmaddwd + vpaddd or AVX-512 VNNI's vpdpwssd, measured here; ZO_VNNI=0 for the AVX2 kernels), on the threads the runtime uses.")
    @Option(help: "The model (GGUF).") var model: String = DefaultModel.path
    @Option(help: "Edit requests (JSON).") var edits: String = "../shared/data/knowedit_zsre/ZsRE-test-all.json"
    @Option(help: "Record whose step graph gives the shapes.") var record: Int = 0
    @Option(help: "Weight form: blocks or per-channel.") var weights: WeightForm = .editing
    @Option(help: "Timed runs per shape.") var runs: Int = 5

    struct Shape: Hashable { let kind: OpKind; let bits: Int; let a: [Int]; let b: [Int]; let transposeB: Bool; let out: DType }

    func run() throws {
        // The peak is the best of 3 (the machine is shared: a slow run says nothing of the CPU),
        // measured again after the shapes: a first measurement on a cold machine came out at
        // 50 GMAC/s a thread where later ones gave 80, and flattered the shares.
        func peak(_ threads: Int) -> Double? { (0..<3).compactMap { _ in MultiplyAddPeak.measure(threads: threads) }.max() }
        guard let p1 = peak(1), var pN = peak(Threads.count) else { throw ValidationError("no AVX2: the peak loop does not run here") }
        print(String(format: "int16 multiply-add peak (%@ loop, best of 3): %.1f GMAC/s on 1 thread, %.1f GMAC/s on %d",
                     MultiplyAdd.instruction, p1 / 1e9, pN / 1e9, Threads.count))
        // The shapes of the step graph's matmuls, with how often each occurs.
        let lm = try LanguageModel(path: model, precision: .int, weightForm: weights)
        var settings = EditSettings()
        settings.weights = weights
        let editor = try ZOEditor(model: lm, settings: settings)
        let g = try editor.runner(try EditRequests.load(path: edits)[record]).start().step
        let f = g.interpreter.module.function(g.name)!
        var count: [Shape: Int] = [:], order: [Shape] = []
        for (i, op) in f.ops.enumerated() where [.fullyConnected, .blockFullyConnected, .matmul].contains(op.kind) {
            let a = f.type(of: op.operands[0]).shape, b = f.type(of: op.operands[1]).shape
            // The rescale a fully_connected runs fused with, if any.
            let id = f.params.count + i
            let out = op.kind == .matmul ? DType.i64 : f.ops.first { $0.kind == .rescale && $0.operands.first == id }?.type.dtype ?? .i64
            let s = Shape(kind: op.kind, bits: AttrReader(op.attributes).int("bits", default: 8), a: a, b: b,
                          transposeB: op.attributes["transpose_b"] == .bool(true), out: out)
            if count[s] == nil { order.append(s) }
            count[s, default: 0] += 1
        }
        print("step graph of record \(record) (\(weights.rawValue) weights): \(order.count) shapes, \(Threads.count) threads")
        print("  op                     x            w             count   GMAC   ms/op  GMAC/s  of peak")
        var totalMACs = 0.0, totalTime = 0.0
        var rng = SplitMix64(seed: 7)
        var rows: [(name: String, s: Shape, macs: Double, t: Double)] = []
        for s in order {
            let (interp, inputs, macs) = try Self.oneOp(s, &rng)
            _ = try interp.run("f", inputs)
            var times: [Double] = []
            for _ in 0..<runs {
                let t0 = monotonicSeconds()
                _ = try interp.run("f", inputs)
                times.append(monotonicSeconds() - t0)
            }
            let t = median(times), n = Double(count[s]!)
            totalMACs += macs * n; totalTime += t * n
            rows.append((s.kind == .blockFullyConnected ? "block_fc/\(s.bits)" : s.kind.rawValue, s, macs, t))
        }
        if let after = peak(Threads.count), after > pN {
            print(String(format: "  (the %d-thread peak measured again after the shapes: %.1f GMAC/s; the shares use it)", Threads.count, after / 1e9))
            pN = after
        }
        for (name, s, macs, t) in rows {
            print(String(format: "  %-22@ %-12@ %-13@ %5d  %5.2f  %6.2f  %6.1f  %5.1f%%", name as NSString, "\(s.a)" as NSString, "\(s.b)" as NSString,
                         count[s]!, macs / 1e9, t * 1000, macs / t / 1e9, 100 * macs / t / pN))
        }
        print(String(format: "  all of the step graph's matmuls: %.2f GMAC in %.3f s = %.1f GMAC/s, %.1f%% of the %d-thread peak",
                     totalMACs / 1e9, totalTime, totalMACs / totalTime / 1e9, 100 * totalMACs / totalTime / pN, Threads.count))
    }

    /// A function of one matmul (and, for fully_connected, the rescale it runs fused with) on
    /// random operands; its multiply-adds.
    static func oneOp(_ s: Shape, _ rng: inout SplitMix64) throws -> (Interpreter, [String: TensorData], Double) {
        func i16s(_ n: Int) -> [Int16] { (0..<n).map { _ in Int16(truncatingIfNeeded: Int(rng.next() % 65536) - 32768) } }
        func i8s(_ n: Int) -> [Int8] { (0..<n).map { _ in Int8(truncatingIfNeeded: Int(rng.next() % 255) - 127) } }
        let mb = ModuleBuilder(name: "k")
        let fb = FunctionBuilder("f", in: mb)
        let x = fb.param("x", TensorType(.i16, s.a))
        var inputs: [String: TensorData] = ["x": .i16(i16s(s.a.reduce(1, *)))]
        let y: Value, macs: Double
        if s.kind == .matmul {
            let bv = fb.param("b", TensorType(.i16, s.b))
            inputs["b"] = .i16(i16s(s.b.reduce(1, *)))
            y = try fb.emit(.matmul, [x, bv], s.transposeB ? ["transpose_b": .bool(true)] : [:])
            let k = s.a.last!, n = s.transposeB ? s.b[s.b.count - 2] : s.b.last!
            macs = Double(s.a.reduce(1, *) / k) * Double(k) * Double(n)
        } else {
            let n = s.b[0], k = s.a.last!
            mb.declareConstant("w", TensorType(.i8, s.b), .data(.i8(i8s(s.b.reduce(1, *)))))
            var operands = [x, try fb.constant("w")]
            var attributes: [String: Attribute] = [:]
            if s.kind == .blockFullyConnected {
                for c in ["scale", "offset"] { mb.declareConstant(c, TensorType(.i16, [n, k / 32]), .data(.i16(i16s(n * k / 32)))) }
                operands += [try fb.constant("scale"), try fb.constant("offset")]
                attributes = s.bits == 8 ? ["block": .int(32)] : ["block": .int(32), "bits": .int(4)]
            }
            mb.declareConstant("m", TensorType(.i32, [n]), .data(.i32((0..<n).map { _ in Int32(1 << 30) })))
            mb.declareConstant("s", TensorType(.i32, [n]), .data(.i32((0..<n).map { _ in 50 })))
            let acc = try fb.emit(s.kind, operands, attributes)
            y = s.out == .i64 ? acc : try fb.emit(.rescale, [acc, try fb.constant("m"), try fb.constant("s")], ["out": .string(s.out.rawValue)])
            macs = Double(s.a.reduce(1, *) / k) * Double(k) * Double(n)
        }
        fb.output("y", y)
        fb.finish()
        return (try Interpreter(module: mb.module), inputs, macs)
    }
}

struct EditDirections: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "edit-directions",
        abstract: "How much of the loss gradient at δ = 0 candidate directions capture: two-sided slopes of the edit loss along each, against random directions (cos = slope / ‖g‖, ‖g‖² ≈ D · mean random slope²).")
    @Option(help: "The model (GGUF).") var model: String = DefaultModel.path
    @Option(help: "Edit requests (JSON).") var edits: String = "../shared/data/knowedit_zsre/ZsRE-test-all.json"
    @Option(help: "Records.") var records: [Int] = [0]
    @Option(help: "Random directions.") var random: Int = 24
    @Option(help: "Perturbation norm relative to ‖v_init‖.") var perturbation: Float = 0.3

    func run() throws {
        let lm = try LanguageModel(path: model, precision: .int, weightForm: .editing)
        var settings = EditSettings()
        settings.directions = 3 + random
        let editor = try ZOEditor(model: lm, settings: settings)
        let D = lm.config.hidden, V = lm.config.vocab
        let gamma = try lm.gguf.dequantize("output_norm.weight")
        let E = lm.gguf.tensorInfo("token_embd.weight")!
        func unit(_ x: [Float]) -> [Float] { let n = x.reduce(0) { $0 + $1 * $1 }.squareRoot(); return x.map { $0 / n } }
        for record in records {
            let request = try EditRequests.load(path: edits)[record]
            let runner = try editor.runner(request)
            let start = try runner.start()
            let vNorm = start.valueNorm
            let rows = try runner.program.layout.targets.map { try lm.gguf.dequantizeRow(E, $0) }
            var priors: [(String, [Float])] = []
            priors.append(("Σ γ⊙E[target]", unit((0..<D).map { i in rows.reduce(0) { $0 + $1[i] } * gamma[i] })))
            priors.append(("Σ E[target]", unit((0..<D).map { i in rows.reduce(0) { $0 + $1[i] } })))
            priors.append(("γ⊙E[first target]", unit((0..<D).map { rows[0][$0] * gamma[$0] })))
            var g = SplitMix64(seed: 7)
            let randoms = (0..<random).map { _ in unit((0..<D).map { _ in Float(g.normal()) }) }
            let dirs = priors.map(\.1) + randoms
            let eps = perturbation * vNorm
            let graph = start.step
            var points: [[Float]] = []
            for u in dirs { points.append(u.map { $0 * eps }); points.append(u.map { -$0 * eps }) }
            // The loss by prompt (each rewrite prompt's NLL share, the KL term) at every point.
            let P = runner.program.layout.sequences.count
            let parts = try runner.evaluate(start, graph, points.map { [[Float]](repeating: $0, count: P) }).map(\.parts)
            let losses = parts.map { $0.reduce(0, +) }
            var slopes: [Double] = []
            for i in 0..<dirs.count { slopes.append((losses[2 * i] - losses[2 * i + 1]) / (2 * Double(eps))) }
            let partSlopes = (0..<P).map { p in (priors.count..<dirs.count).map { (parts[2 * $0][p] - parts[2 * $0 + 1][p]) / (2 * Double(eps)) } }
            var sq = 0.0
            for v in slopes[priors.count...] { sq += v * v }
            let gNorm = (Double(D) * sq / Double(random)).squareRoot()
            print("record \(record) \(request.subject.debugDescription) → \(request.targetNew.debugDescription): ‖v_init‖ \(String(format: "%.2f", vNorm)), ‖g‖ ≈ \(String(format: "%.4f", gNorm))")
            for (i, (name, _)) in priors.enumerated() {
                print(String(format: "  %-20@ slope %+.4f  cos(−g) %+.3f", name as NSString, slopes[i], -slopes[i] / gNorm))
            }
            let rc = slopes[priors.count...].map { abs($0) / gNorm }
            print(String(format: "  random directions: mean |cos| %.3f (1/√D = %.3f)", rc.reduce(0, +) / Double(rc.count), 1 / Double(D).squareRoot()))
            // Along random unit u, E[(uᵀg_a)(uᵀg_b)] = g_a·g_b / D: the prompts' gradients' cosines,
            // and what directions of their own per prompt do to the estimate's variance (‖Σ g_p‖² : Σ ‖g_p‖²).
            func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }
            let names = (0..<(P - 1)).map { "rewrite \($0)" } + ["KL"]
            for a in 0..<P {
                let row = (0..<P).map { b in String(format: "%+.2f", dot(partSlopes[a], partSlopes[b]) / (dot(partSlopes[a], partSlopes[a]) * dot(partSlopes[b], partSlopes[b])).squareRoot()) }
                print("  cos(g_p) \(names[a].padding(toLength: 10, withPad: " ", startingAt: 0)) " + row.joined(separator: " ") + String(format: "   ‖g_p‖ ≈ %.4f", (Double(D) * dot(partSlopes[a], partSlopes[a]) / Double(random)).squareRoot()))
            }
            let whole = (0..<random).map { i in partSlopes.reduce(0) { $0 + $1[i] } }
            print(String(format: "  ‖Σ g_p‖² / Σ ‖g_p‖² ≈ %.2f (the variance of shared directions over that of one per prompt)",
                         dot(whole, whole) / partSlopes.reduce(0) { $0 + dot($1, $1) }))
            _ = V
        }
    }
}
