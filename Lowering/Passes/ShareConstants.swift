import ZOIR

/// share-constants: constants with the same type and the same values become one (the first by
/// declaration order), so a module with many functions lowered from one model — an edit plan's
/// per-edit prefix, step and probe functions, whose rescale multipliers and masks repeat —
/// stores and loads each distinct constant once. Constants named by a per-channel quantization
/// (weight scales), per-channel quantized ones and lazy ones (model weights) keep their names.
public struct ShareConstantsPass: Pass {
    public let name = "share-constants"
    public init() {}

    public func run(_ m: Module) throws -> Module {
        var pinned = Set<String>()
        func note(_ t: TensorType) { if case let .perChannel(_, s)? = t.quant { pinned.insert(s) } }
        for f in m.functions {
            f.params.forEach { note($0.type) }
            f.ops.forEach { note($0.type) }
        }
        m.constants.forEach { note($0.type) }

        var first: [Key: String] = [:]
        var replaced: [String: String] = [:]
        for c in m.constants where !pinned.contains(c.name) {
            // A per-channel weight names its own scales: it can only equal itself, so it is not hashed.
            if case .perChannel? = c.type.quant { continue }
            guard case let .data(d)? = m.constantData[c.name] else { continue }
            let key = Key(type: c.type, data: d, hash: ArtifactBuilder.littleEndianBytes(d).hashValue)
            if let kept = first[key] { replaced[c.name] = kept } else { first[key] = c.name }
        }
        guard !replaced.isEmpty else { return m }
        var out = m
        for fi in out.functions.indices {
            for oi in out.functions[fi].ops.indices where out.functions[fi].ops[oi].kind == .constant {
                if case let .symbol(n)? = out.functions[fi].ops[oi].attributes["name"], let kept = replaced[n] {
                    out.functions[fi].ops[oi].attributes["name"] = .symbol(kept)
                }
            }
        }
        out.constants.removeAll { replaced[$0.name] != nil }
        for n in replaced.keys { out.constantData[n] = nil }
        return out
    }
}

/// A constant's type and values; hashed by its bytes, compared by its values.
private struct Key: Hashable {
    let type: TensorType, data: TensorData, hash: Int
    static func == (a: Key, b: Key) -> Bool { a.hash == b.hash && a.type == b.type && a.data == b.data }
    func hash(into h: inout Hasher) { h.combine(type); h.combine(hash) }
}
