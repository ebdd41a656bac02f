import ArgumentParser
import Foundation
import ZOLowering
import ZOModelIO
import ZORuntime

/// zobench: prints speed and memory figures. Each measurement runs in a fresh child process
/// (so peak RSS belongs to that run alone); the parent prints medians over the runs.
@main
struct ZoBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "zo benchmarks (build with -c release).",
        subcommands: [Float32Forward.self, Float32Once.self])
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
