import ArgumentParser
import Foundation
import ZOLowering
import ZOModelIO
import ZORuntime

extension ClipRule: ExpressibleByArgument {}

/// zobench: prints speed and memory figures. Each measurement runs in a fresh child process
/// (so peak RSS belongs to that run alone); the parent prints medians over the runs.
@main
struct ZoBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "zo benchmarks (build with -c release).",
        subcommands: [Float32Forward.self, Float32Once.self, Fidelity.self])
}

struct Float32Forward: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "float",
        abstract: "Float reference path: forward time at batch 1 × 16 tokens, decode tokens/s, peak RSS (medians over runs).")
    @Option(help: "The model (GGUF).") var model: String = DefaultModel.path
    @Option(help: "Child processes to run.") var runs: Int = 5
    @Option(help: "Timed forward passes per child (after one warm-up).") var forwards: Int = 5
    @Option(help: "Tokens decoded per child.") var decode: Int = 32

    func run() throws {
        var results: [[String: Double]] = []
        for i in 0..<runs {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
            p.arguments = ["float-once", "--model", model, "--forwards", "\(forwards)", "--decode", "\(decode)"]
            let pipe = Pipe()
            p.standardOutput = pipe
            try p.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            guard p.terminationStatus == 0,
                  let obj = try JSONSerialization.jsonObject(with: data) as? [String: Double] else {
                throw ValidationError("run \(i + 1) failed (exit \(p.terminationStatus))")
            }
            results.append(obj)
            FileHandle.standardError.write(Data("run \(i + 1)/\(runs): \(obj.keys.sorted().map { "\($0)=\(String(format: "%.3f", obj[$0]!))" }.joined(separator: " "))\n".utf8))
        }
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
    @Option(help: "Calibration clipping rule: percentile or max.") var clip: ClipRule = .percentile
    @Option(help: "How many of the 16 prompts.") var prompts: Int = 16

    struct Case: Decodable { let prompt: String; let ids: [Int] }
    struct Cases: Decodable { let cases: [Case] }

    func run() throws {
        let cases = try JSONDecoder().decode(Cases.self, from: Data(contentsOf: URL(fileURLWithPath: fixtures + "/logits_fp32.json"))).cases
        let ref = try Data(contentsOf: URL(fileURLWithPath: fixtures + "/last_logprobs_fp32.f32"))
        let llama = try? Data(contentsOf: URL(fileURLWithPath: fixtures + "/last_logprobs_llamacpp.f32"))
        let lm = try LanguageModel(path: model, precision: .int, clipRule: clip)
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
