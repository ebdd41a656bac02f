import Foundation
import ZOIR
import ZORuntime

/// calibrate: runs each function with the float interpreter and records, for every value, the
/// absolute range quantize will map onto the integer grid; writes it as the `range` annotation on
/// ops, and as module attributes `range.<function>.<param>` for parameters.
///
/// Inputs: per-function sets of named inputs (e.g. embedded calibration text), or, when none are
/// given, seeded standard-normal inputs (for synthetic graphs). A precomputed `CalibrationTable`
/// can be applied instead of running anything: its keys are op locations plus the op's ordinal
/// within its location, so ranges measured on one static shape carry over to other shapes.
public struct CalibratePass: Pass {
    public let name = "calibrate"
    public var inputs: [String: [[String: TensorData]]]
    public var table: CalibrationTable?
    public var rule: ClipRule

    public init(inputs: [String: [[String: TensorData]]] = [:], table: CalibrationTable? = nil, rule: ClipRule = .max) {
        self.inputs = inputs; self.table = table; self.rule = rule
    }

    public func run(_ m: Module) throws -> Module {
        var out = m
        for (fi, f) in m.functions.enumerated() {
            let ranges: [Int: Double]
            let channels: [Int: [Double]]
            if let t = table {
                ranges = t.ranges(for: f)
                channels = t.channelRanges(for: f)
            } else {
                let stats = try measure(m, f)
                ranges = stats.mapValues { rule.range($0) }
                channels = stats.filter { !$0.value.channelMax.isEmpty }.mapValues(\.channelMax)
            }
            for (i, op) in f.ops.enumerated() where op.kind == .fullyConnected {
                guard let c = channels[op.operands[0]] else { continue }
                let name = "channel_range.\(f.name).\(f.params.count + i)"
                out.constants.append(ConstantDecl(name, .f32([c.count])))
                out.constantData[name] = .data(.f32(c.map(Float.init)))
                out.functions[fi].ops[i].attributes["channel_range"] = .symbol(name)
            }
            for (i, p) in f.params.enumerated() {
                if let r = ranges[i] { out.attributes["range.\(f.name).\(p.name)"] = .float(r) }
                if let g = table?.grids["param:\(p.name)"] { out.attributes["grid.\(f.name).\(p.name)"] = g.attribute }
            }
            for i in f.ops.indices where f.ops[i].kind != .constant {
                if let r = ranges[f.params.count + i] { out.functions[fi].ops[i].attributes["range"] = .float(r) }
            }
        }
        return out
    }

    /// Statistics of |x| per value over all calibration inputs.
    public func measure(_ m: Module, _ f: Function) throws -> [Int: RangeStats] {
        for c in m.constants where m.constantData[c.name] == nil {
            throw PassError(pass: name, function: f.name, message: "constant @\(c.name) has no data: calibration runs the graph, so it needs the weights (import from a model, or give small constants inline)")
        }
        let interp = try Interpreter(module: m)
        let runs = inputs[f.name] ?? [Self.syntheticInputs(f)]
        let fcInputs = Set(f.ops.filter { $0.kind == .fullyConnected }.map { $0.operands[0] })
        var stats: [Int: RangeStats] = [:]
        func note(_ id: Int, _ a: [Float]) {
            stats[id, default: RangeStats()].add(a)
            if fcInputs.contains(id) { stats[id]!.addChannels(a, width: f.type(of: id).shape.last ?? 1) }
        }
        for input in runs {
            _ = try interp.run(f.name, input) { id, data in if case let .f32(a) = data { note(id, a) } }
            for (i, p) in f.params.enumerated() { if case let .f32(a)? = input[p.name] { note(i, a) } }
        }
        return stats
    }

    /// Seeded standard-normal f32 inputs (integer parameters get zeros).
    public static func syntheticInputs(_ f: Function, seed: UInt64 = 0x5EED) -> [String: TensorData] {
        var rng = SplitMix64(seed: seed)
        var out: [String: TensorData] = [:]
        for p in f.params {
            let n = p.type.elementCount
            switch p.type.dtype {
            case .f32: out[p.name] = .f32((0..<n).map { _ in Float(rng.normal()) })
            case .i8: out[p.name] = .i8(Array(repeating: 0, count: n))
            case .i16: out[p.name] = .i16(Array(repeating: 0, count: n))
            case .i32: out[p.name] = .i32(Array(repeating: 0, count: n))
            case .i64: out[p.name] = .i64(Array(repeating: 0, count: n))
            }
        }
        return out
    }
}

/// Running statistics of |x| for one value: the maximum and the mean of per-run 99th percentiles.
public struct RangeStats: Equatable, Sendable {
    public var max: Double = 0
    public var p99Sum: Double = 0
    public var runs = 0
    /// max |x| per index of the last axis (kept for values a fully_connected reads).
    public var channelMax: [Double] = []

    public var p99: Double { runs == 0 ? 0 : p99Sum / Double(runs) }

    mutating func addChannels(_ a: [Float], width: Int) {
        if channelMax.count != width { channelMax = [Double](repeating: 0, count: width) }
        for (i, v) in a.enumerated() where v.isFinite { channelMax[i % width] = Swift.max(channelMax[i % width], abs(Double(v))) }
    }

    mutating func add(_ a: [Float]) {
        var finite = a.lazy.filter { $0.isFinite }.map { abs(Double($0)) }.makeIterator()
        // A strided sample of at most 1024 elements gives the percentile; the max is exact.
        let stride = Swift.max(1, a.count / 1024)
        var sample: [Double] = []
        var i = 0, m = 0.0
        while let v = finite.next() {
            m = Swift.max(m, v)
            if i % stride == 0 { sample.append(v) }
            i += 1
        }
        guard i > 0 else { return }
        sample.sort()
        max = Swift.max(max, m)
        p99Sum += sample[Swift.min(sample.count - 1, Int(Double(sample.count) * 0.99))]
        runs += 1
    }
}

/// How a value's range is chosen from its statistics.
///
/// Measured on SmolLM2-135M (zobench fidelity, 16 fixture prompts): MobiEdit's percentile rule gives
/// mean KL(fp32 ‖ int) ≈ 12 (top-1 0/16): it clips the residual stream's massive activations,
/// which the model depends on. `max` gives ≈ 0.009. With 16-bit activations there is no need to clip.
public enum ClipRule: String, Sendable, CaseIterable {
    /// MobiEdit's rule: where the maximum exceeds 4× the 99th percentile, clip to the 99th percentile.
    case percentile
    /// Never clip: the range is the observed maximum (the default).
    case max

    public func range(_ s: RangeStats) -> Double {
        switch self {
        case .percentile: return s.max > 4 * s.p99 ? s.p99 : s.max
        case .max: return s.max
        }
    }
}

/// Ranges keyed by op location and ordinal within that location, so they transfer between
/// functions built from the same model at different static shapes.
public struct CalibrationTable: Sendable {
    public var byKey: [String: Double] = [:]
    public var channelsByKey: [String: [Double]] = [:]
    /// Parameters ("param:<name>") that arrive as another function's wide result, on its grid.
    public var grids: [String: WideGrid] = [:]

    public init() {}

    public static func keys(_ f: Function) -> [Int: String] {
        var counts: [String: Int] = [:]
        var out: [Int: String] = [:]
        for (i, p) in f.params.enumerated() { out[i] = "param:\(p.name)" }
        for (i, op) in f.ops.enumerated() where op.kind != .constant {
            let loc = op.loc ?? "-"
            let n = counts[loc, default: 0]
            counts[loc] = n + 1
            out[f.params.count + i] = "\(loc)#\(n)"
        }
        return out
    }

    /// Records the `range` annotations of a calibrated function (and its parameters' ranges).
    public mutating func record(_ m: Module, _ f: Function) {
        let keys = Self.keys(f)
        for (i, p) in f.params.enumerated() {
            if case let .float(r)? = m.attributes["range.\(f.name).\(p.name)"] { byKey[keys[i]!] = Swift.max(byKey[keys[i]!] ?? 0, r) }
        }
        for (i, op) in f.ops.enumerated() {
            if case let .float(r)? = op.attributes["range"], let k = keys[f.params.count + i] { byKey[k] = r }
            if case let .symbol(c)? = op.attributes["channel_range"], case let .data(.f32(v))? = m.constantData[c],
               let k = keys[op.operands[0]] {
                channelsByKey[k] = v.map(Double.init)
            }
        }
    }

    /// Per-channel ranges of fully_connected inputs. An input that is a reshape, slice or concat
    /// no calibration saw (an editing graph's row packing) has the channels of what it moves (the
    /// last axis is kept): its first operand's, looked through.
    func channelRanges(for f: Function) -> [Int: [Double]] {
        var out: [Int: [Double]] = [:]
        for (v, k) in Self.keys(f) { if let c = channelsByKey[k] { out[v] = c } }
        func moved(_ v: Int) -> Int {
            guard v >= f.params.count, out[v] == nil else { return v }
            let op = f.ops[v - f.params.count]
            guard [.reshape, .slice, .concat].contains(op.kind), let first = op.operands.first,
                  f.type(of: first).shape.last == f.type(of: v).shape.last else { return v }
            return moved(first)
        }
        for op in f.ops where op.kind == .fullyConnected && out[op.operands[0]] == nil {
            if let c = out[moved(op.operands[0])] { out[op.operands[0]] = c }
        }
        return out
    }

    /// Ranges for every op at a location no calibration function has (editing graphs' own ops),
    /// used when no key matches.
    public var byLocation: [String: Double] = [:]

    func ranges(for f: Function) -> [Int: Double] {
        var out: [Int: Double] = [:]
        for (v, k) in Self.keys(f) {
            if let r = byKey[k] ?? byLocation[String(k.prefix { $0 != "#" })] { out[v] = r }
        }
        return out
    }
}

