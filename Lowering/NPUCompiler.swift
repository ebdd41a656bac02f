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
    let weights: WeightCache
    /// Calibrated ranges of the decomposed calibration function's ops, in order, by location.
    public private(set) var opRanges: [String: [(kind: OpKind, range: Double)]] = [:]

    /// The calibrated range of layer `l`'s MLP output (its down-projection's result).
    public func mlpOutputRange(layer l: Int) -> Double? {
        opRanges["blk.\(l).ffn"]?.last(where: { $0.kind == .fullyConnected })?.range
    }

    /// The calibrated range of layer `l`'s residual stream after its attention (the last op there).
    public func attentionResidualRange(layer l: Int) -> Double? { opRanges["blk.\(l).attn"]?.last?.range }

    /// The calibrated range of layer `l`'s output, the residual stream after its MLP.
    public func blockOutputRange(layer l: Int) -> Double? { opRanges["blk.\(l).ffn"]?.last?.range }

    /// Sets the range of a parameter or location key that only editing graphs have.
    public func setRange(_ key: String, _ r: Double) { calibration.byKey[key] = r }

    /// Declares that parameter `name` arrives on `grid` (another function's wide result).
    public func setGrid(param name: String, _ grid: WideGrid) { calibration.grids["param:\(name)"] = grid }

    /// Sets the range of every op at a location only editing graphs have.
    public func setRange(location: String, _ r: Double) { calibration.byLocation[location] = r }

    /// The calibrated range of the residual stream after the last block.
    public var finalResidualRange: Double? { blockOutputRange(layer: importer.config.layers - 1) }

    public init(importer: LlamaImporter, tokenizer: Tokenizer, samples: [String] = CalibrationText.samples, rule: ClipRule = .max,
                weightForm: WeightForm = .blocks) throws {
        weights = WeightCache(form: weightForm)
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
        let f = m.function(name)!
        for op in f.ops {
            if let loc = op.loc, case let .float(r)? = op.attributes["range"] { opRanges[loc, default: []].append((op.kind, r)) }
        }
        // A KV cache fed to an editing graph holds the keys and values on the grid the attention
        // matmuls narrow them to: their calibrated ranges become the cache parameters' ranges.
        let keys = CalibrationTable.keys(f)
        for l in 0..<importer.config.layers {
            let mms = f.ops.filter { $0.loc == "blk.\(l).attn" && $0.kind == .matmul }
            guard mms.count == 2 else { continue }
            for (which, op) in zip(["k_cache", "v_cache"], mms) {
                if let k = keys[op.operands[1]], let r = calibration.byKey[k] { calibration.byKey["param:\(which).\(l)"] = r }
            }
            // The cached graph slices the attention weights in two: both halves narrow to the
            // grid the whole would.
            if let k = keys[mms[1].operands[0]], let r = calibration.byKey[k] { calibration.byLocation["blk.\(l).cache"] = r }
        }
        // A decode function's RoPE tables and mask are inputs (ForwardShape.separateCache): cos and
        // sin on a grid whose 32767 is 1; the mask's −∞ as −32767 on a grid where that is −10⁴,
        // which saturates the scores it is added to far below the softmax table's bottom.
        for t in ["rope.cos", "rope.sin"] { calibration.byKey["param:\(t)"] = 1 / FunctionQuantizer.headroom }
        calibration.byKey["param:mask"] = 1e4 / FunctionQuantizer.headroom
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
