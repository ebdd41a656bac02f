import ArgumentParser
import Foundation
import ZOIR
import ZOEditOptions
import ZOLowering
import ZOModelIO
import ZORuntime

/// zoc: the compiler. Thin: every command is a call into the libraries.
@main
struct Zoc: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "zo compiler: import models into the zo IR, verify and transform graphs.",
        subcommands: [Import.self, Verify.self, Opt.self, Lower.self, Compile.self, Inspect.self])
}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Import a GGUF model as a float-profile IR module.")

    @Argument(help: "The model file (GGUF).") var model: String
    @Option(help: "Static sequence length of the forward function.") var seqLen: Int
    @Option(help: "Static batch size.") var batch: Int = 1
    @Option(name: [.customShort("o"), .long], help: "Write the IR here instead of stdout.") var output: String?

    func validate() throws {
        guard seqLen >= 1 else { throw ValidationError("--seq-len must be at least 1") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
    }

    func run() throws {
        let importer = try LlamaImporter(gguf: GGUFFile(path: model))
        let m = try importer.addForward("forward", ForwardShape(batch: batch, seqLen: seqLen))
        try Verifier.verify(m)
        try emit(IRPrinter.print(m), to: output, inputs: [model])
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Parse and verify an IR file; exits non-zero with diagnostics when it is not valid.")

    @Argument(help: "The IR file (.zoir).") var file: String
    @Option(help: "Also check that every op and dtype belongs to this profile (float, npu).") var profile: Profile?
    @Flag(help: "Print the op histogram (op → result dtype: count).") var histogram = false

    func run() throws {
        let text: String
        do { text = try String(contentsOfFile: file, encoding: .utf8) } catch { throw CLIError("\(file): cannot read: \(error.localizedDescription)") }
        let m = try IRParser.parse(text, file: file)
        let diags = Verifier.diagnose(m, profile: profile)
        if !diags.isEmpty {
            for d in diags.prefix(50) { FileHandle.standardError.write(Data("\(file): \(d)\n".utf8)) }
            if diags.count > 50 { FileHandle.standardError.write(Data("\(file): ... \(diags.count - 50) more (\(diags.count) in all)\n".utf8)) }
            throw ExitCode(1)
        }
        let ops = m.functions.reduce(0) { $0 + $1.ops.count }
        print("\(file): ok (\(m.functions.count) functions, \(ops) ops, \(m.constants.count) constants\(profile.map { ", profile \($0.rawValue)" } ?? ""))")
        if histogram {
            let h = OpHistogram(m)
            print(h)
            print("ops computing in f32: \(h.floatOps)")
        }
    }
}

struct Opt: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run named passes over an IR file, like mlir-opt.")

    @Argument(help: "The IR file (.zoir).") var file: String
    @Option(help: "Comma-separated passes: \(PassRegistry.names.joined(separator: ", ")).") var passes: String
    @Flag(help: "Print the IR after every pass (to stderr).") var printAfterAll = false
    @Option(name: [.customShort("o"), .long], help: "Write the result here instead of stdout.") var output: String?

    func run() throws {
        let text: String
        do { text = try String(contentsOfFile: file, encoding: .utf8) } catch { throw CLIError("\(file): cannot read: \(error.localizedDescription)") }
        let m = try IRParser.parse(text, file: file)
        try Verifier.verify(m)
        let result = try PassManager(pipeline: passes).run(m) { pass, m in
            if printAfterAll { FileHandle.standardError.write(Data("// ----- after \(pass.name) -----\n\(IRPrinter.print(m))".utf8)) }
        }
        try emit(IRPrinter.print(result), to: output, inputs: [file])
    }
}

struct Lower: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Lower a model to the npu profile (decompose, calibrate, quantize, legalize-npu, fold, dce, memory-plan).",
        discussion: "With -o FILE.zo the result is a .zo artifact (manifest + weight segments) that zorun runs with --artifact; otherwise npu IR text.")

    @Argument(help: "The model file (GGUF).") var model: String
    @Option(help: "Static sequence length of the forward function.") var seqLen: Int = 16
    @Option(help: "Calibration clipping rule: percentile (MobiEdit's) or max.") var clip: ClipRule = .max
    @Option(help: "Weights: blocks (GGUF's blocks held exactly, block_fully_connected) or per-channel (int8 per output channel).")
    var weights: WeightForm = .blocks
    @Flag(help: "Print the IR after every pass (to stderr).") var printAfterAll = false
    @Option(name: [.customShort("o"), .long], help: "Write here instead of stdout: a .zo artifact if the name ends in .zo, else IR text.") var output: String?

    func validate() throws { guard seqLen >= 1 else { throw ValidationError("--seq-len must be at least 1") } }

    func run() throws {
        let gguf = try GGUFFile(path: model)
        let tokenizer = try Tokenizer(gguf: gguf)
        let importer = try LlamaImporter(gguf: gguf)
        let compiler = try NPUCompiler(importer: importer, tokenizer: tokenizer, rule: clip, weightForm: weights)
        let m = try compiler.lower("forward", ForwardShape(seqLen: seqLen)) { pass, m in
            if printAfterAll { FileHandle.standardError.write(Data("// ----- after \(pass.name) -----\n\(IRPrinter.print(m))".utf8)) }
        }
        if let out = output, out.hasSuffix(".zo") {
            let bytes = try ArtifactBuilder.build(module: m, entry: "forward", gguf: gguf, tokenizer: tokenizer, config: importer.config,
                                                  settings: ["seq_len": .int(seqLen), "clip": .string(clip.rawValue), "weights": .string(weights.rawValue),
                                                             "pipeline": .string(PassManager.standardPipelineNames.joined(separator: ","))])
            try writeAtomically(Data(bytes), to: out, inputs: [model])
        } else {
            try emit(IRPrinter.print(m), to: output, inputs: [model])
        }
        if case let .int(peak)? = m.attributes["arena.forward"] {
            FileHandle.standardError.write(Data("memory-plan: peak arena \(peak) bytes (\(String(format: "%.2f", Double(peak) / 1_048_576)) MiB) for batch 1 × \(seqLen)\n".utf8))
        }
    }
}

struct Compile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compile edit requests into a ZO edit plan (.zo): per edit, the prefix, step and probe functions in the npu profile, sharing one set of weights.",
        discussion: "zorun run PLAN.zo runs it. MobiEdit's published settings: --layer 5 --directions 5 --perturbation <1e-3/‖v_init‖> --lr 0.05 --max-steps 600 --contexts 5 --context-tokens 3 (their model: Qwen2.5-3B).")
    @Option(help: "The model file (GGUF).") var model: String = DefaultModel.path
    @Option(help: "Edit requests (JSON: KnowEdit/EasyEdit or ZsRE-MEND shape, one object or a list).") var edits: String
    @Option(help: "First record to compile.") var from: Int = 0
    @Option(help: "How many records (default: all from --from).") var count: Int?
    @OptionGroup var options: EditSettingsOptions
    @Option(name: [.customShort("o"), .long], help: "The plan to write (.zo).") var output: String

    func validate() throws {
        guard output.hasSuffix(".zo") else { throw ValidationError("-o must name a .zo file") }
    }

    func run() throws {
        let requests = try EditRequests.load(path: edits)
        guard from >= 0, from < requests.count else { throw CLIError("\(edits): has \(requests.count) records; --from \(from) is outside") }
        let batch = Array(requests[from..<min(requests.count, from + (count ?? requests.count))])
        let editor = try ZOEditor(model: LanguageModel(path: model, precision: .int, weightForm: options.weights), settings: options.settings)
        let bytes = try EditPlan.build(editor: editor, requests: batch) { i in
            FileHandle.standardError.write(Data("compiled edit \(i)/\(batch.count)\n".utf8))
        }
        try writeAtomically(Data(bytes), to: output, inputs: [model, edits])
        print("wrote \(output): \(batch.count) edits, \(String(format: "%.1f", Double(bytes.count) / 1_048_576)) MiB")
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate a .zo artifact and summarise it: entry functions, op histogram, bytes per dtype, peak arena, provenance.")

    @Argument(help: "The artifact (.zo).") var file: String
    @Flag(help: "Print the summary as JSON.") var json = false
    @Flag(help: "Print the artifact's IR text instead of the summary.") var ir = false
    @Flag(help: "Skip the segment checksums.") var noVerify = false
    @Flag(help: "List the segments: file offset, length, dtype and shape, name.") var segments = false

    func run() throws {
        let a = try Artifact(path: file, verifyChecksums: !noVerify)
        if ir { print(IRPrinter.print(a.module), terminator: ""); return }
        if segments {
            for t in a.manifest.tensors.sorted(by: { $0.offset < $1.offset }) {
                print(String(format: "%12d %12d  ", a.dataStart + t.offset, t.length) + "\(t.host ? "host " : "")\(t.type)  \(t.name)")
            }
            return
        }
        let s = ArtifactSummary(a)
        if json {
            let d = try JSONSerialization.data(withJSONObject: s.json, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: d, as: UTF8.self))
        } else {
            print(s.text, terminator: "")
        }
    }
}

extension Profile: ExpressibleByArgument {}
extension ClipRule: ExpressibleByArgument {}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Prints to stdout, or writes atomically to `path` (never over an input).
func emit(_ text: String, to path: String?, inputs: [String]) throws {
    if let p = path { try writeAtomically(Data(text.utf8), to: p, inputs: inputs) } else { print(text, terminator: "") }
}
