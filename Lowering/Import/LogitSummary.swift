import Foundation

/// Per-position top-K logits and logsumexp, in the shape of the shared fixtures.
public struct LogitSummary {
    public struct Position { public let topIDs: [Int]; public let topLogits: [Float]; public let logsumexp: Double }
    public let positions: [Position]

    public init(logits: [[Float]], top k: Int) {
        positions = logits.map { row in
            let ids = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(k)
            return Position(topIDs: Array(ids), topLogits: ids.map { row[$0] }, logsumexp: logSumExp(row))
        }
    }

    public var json: String {
        let rows = positions.map { p in
            "{\"top_ids\": [\(p.topIDs.map(String.init).joined(separator: ", "))], "
                + "\"top_logits\": [\(p.topLogits.map { "\($0)" }.joined(separator: ", "))], \"logsumexp\": \(p.logsumexp)}"
        }
        return "{\"positions\": [\n" + rows.joined(separator: ",\n") + "\n]}"
    }

    /// log-probabilities (logits − logsumexp) as little-endian f32 bytes.
    public static func logProbBytes(_ logits: [Float]) -> Data {
        let lse = logSumExp(logits)
        var d = Data(capacity: logits.count * 4)
        for x in logits { withUnsafeBytes(of: Float(Double(x) - lse).bitPattern.littleEndian) { d.append(contentsOf: $0) } }
        return d
    }
}
