/// Counts of ops by name and result dtype, e.g. "fully_connected → i64: 211".
public struct OpHistogram: CustomStringConvertible {
    public let counts: [(key: String, count: Int)]

    public init(_ m: Module) {
        var c: [String: Int] = [:]
        for f in m.functions { for op in f.ops { c["\(op.kind.rawValue) → \(op.type.dtype.rawValue)", default: 0] += 1 } }
        counts = c.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }.map { ($0.key, $0.value) }
    }

    /// Ops computing in f32 (constants excluded).
    public var floatOps: Int { counts.filter { $0.key.hasSuffix("→ f32") && !$0.key.hasPrefix("constant") }.reduce(0) { $0 + $1.count } }

    public var description: String {
        let w = counts.map(\.key.count).max() ?? 0
        return counts.map { $0.key + String(repeating: " ", count: w - $0.key.count) + "  \($0.count)" }.joined(separator: "\n")
    }
}
