import Foundation
import ZOIR
import ZOModelIO
import ZORuntime

/// Lowers a Llama-family model to the npu profile: measures activation ranges once, on the
/// calibration samples at a fixed shape, then lowers forward functions of any shape with them.
public final class NPUCompiler {
    public let importer: LlamaImporter
    public let tokenizer: Tokenizer
    public private(set) var calibration = CalibrationTable()
    public let rule: ClipRule
    let weights = WeightCache()

    public init(importer: LlamaImporter, tokenizer: Tokenizer, samples: [String] = CalibrationText.samples, rule: ClipRule = .max) throws {
        self.importer = importer
        self.tokenizer = tokenizer
        self.rule = rule
        try calibrate(samples)
    }

    /// Runs the decomposed float graph over each sample (cut to one common length) and keeps the ranges.
    func calibrate(_ samples: [String]) throws {
        let ids = samples.map { tokenizer.encode($0) }
        let length = min(32, ids.map(\.count).min() ?? 1)
        let name = "calibrate_t\(length)"
        try importer.addForward(name, ForwardShape(seqLen: length))
        var m = try DecomposePass().run(single(name))
        let embed = try EmbeddingTable(gguf: importer.gguf)
        let inputs = try ids.map { ["embeddings": try embed.lookup(Array($0.prefix(length)))] }
        m = try CalibratePass(inputs: [name: inputs], rule: rule).run(m)
        calibration.record(m, m.function(name)!)
        // The host may feed any row of the table: its range is the whole table's, not the samples'.
        calibration.byKey["param:embeddings"] = embed.maxAbs()
    }

    /// A module holding only function `name` of the importer's module.
    func single(_ name: String) -> Module {
        var m = importer.module
        m.functions = m.functions.filter { $0.name == name }
        return m
    }

    /// The npu module of a forward function of this shape; `afterEach` sees each pass's output.
    public func lower(_ name: String, _ shape: ForwardShape, afterEach: ((Pass, Module) -> Void)? = nil) throws -> Module {
        if importer.module.function(name) == nil { try importer.addForward(name, shape) }
        let pm = PassManager.standardPipeline(calibration: CalibratePass(table: calibration, rule: rule), weights: weights)
        return try pm.run(single(name), afterEach: afterEach)
    }
}
