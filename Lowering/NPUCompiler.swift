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
        calibration.byKey["param:embeddings"] = try embed.maxAbs()
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

/// Host-side embedding lookup: rows of `token_embd.weight` dequantized from the mapped GGUF on
/// demand, so the table is never held as f32.
public struct EmbeddingTable {
    public let rows: Int
    public let width: Int
    let gguf: GGUFFile
    let info: GGUFTensorInfo

    public init(gguf: GGUFFile) throws {
        guard let i = gguf.tensorInfo("token_embd.weight"), i.dims.count == 2 else {
            throw ModelIOError.missingTensor(path: gguf.path, name: "token_embd.weight")
        }
        self.gguf = gguf
        info = i
        width = i.dims[0]
        rows = i.dims[1]
    }

    /// max |x| over the whole table (reads every row once).
    public func maxAbs() throws -> Double {
        var m: Float = 0
        for r in 0..<rows { for v in try gguf.dequantizeRow(info, r) { m = max(m, abs(v)) } }
        return Double(m)
    }

    /// [1, T, D] embeddings of `ids`.
    public func lookup(_ ids: [Int]) throws -> TensorData {
        var out = [Float]()
        out.reserveCapacity(ids.count * width)
        for id in ids {
            guard id >= 0 && id < rows else { throw RuntimeError.badRequest("token id \(id) is outside the vocabulary (0..<\(rows))") }
            out.append(contentsOf: try gguf.dequantizeRow(info, id))
        }
        return .f32(out)
    }
}
