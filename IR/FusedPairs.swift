/// Pairs of ops the runtime runs as one kernel, so the first op's i64 result is never stored:
/// an integer fully_connected, block_fully_connected or i64 add/sub/mul whose only use is a
/// rescale to i16/i32 by constants (each sum is rescaled as it is made), and an i64 add/sub/mul
/// of operands of its own shape whose only use is a last-axis reduce_sum (summed a row at a
/// time). The interpreter fuses them and memory-plan gives the first op of a pair no place.
public struct FusedPairs: Equatable, Sendable {
    /// Producer op index → the rescale op index that consumes it.
    public var rescale: [Int: Int] = [:]
    /// Producer op index → the reduce_sum op index that consumes it.
    public var rowSum: [Int: Int] = [:]

    /// The consumer of a fused producer (op indices), either kind.
    public func consumer(of op: Int) -> Int? { rescale[op] ?? rowSum[op] }

    public init(_ f: Function) {
        let n = f.params.count
        var last = [Int](repeating: -1, count: f.valueCount), uses = [Int](repeating: 0, count: f.valueCount)
        for (i, op) in f.ops.enumerated() { for o in op.operands { last[o] = i; uses[o] += 1 } }
        var isResult = [Bool](repeating: false, count: f.valueCount)
        for v in f.resultValues { isResult[v] = true }
        func onlyUse(_ i: Int) -> Int? {
            let id = n + i, c = last[id]
            return uses[id] == 1 && !isResult[id] && c > i ? c : nil
        }
        func isConstant(_ v: Int) -> Bool { v >= n && f.ops[v - n].kind == .constant }
        for (i, op) in f.ops.enumerated() {
            let intoRescale: Bool
            switch op.kind {
            case .fullyConnected: intoRescale = op.type.dtype == .i64 && op.operands.count == 2
            case .blockFullyConnected: intoRescale = true
            case .add, .sub, .mul: intoRescale = op.type.dtype == .i64
            default: intoRescale = false
            }
            guard let c = onlyUse(i) else { continue }
            let user = f.ops[c]
            if intoRescale, user.kind == .rescale, user.operands.first == n + i, [DType.i16, .i32].contains(user.type.dtype),
               user.operands.dropFirst().allSatisfy(isConstant) {
                rescale[i] = c
            } else if [.add, .sub, .mul].contains(op.kind), op.type.dtype == .i64, op.type.rank > 0, user.kind == .reduceSum,
                      user.type.dtype == .i64, op.operands.allSatisfy({ f.type(of: $0).shape == op.type.shape }),
                      let axis = try? AttrReader(user.attributes).int("axis"), axis == -1 || axis == op.type.rank - 1 {
                rowSum[i] = c
            }
        }
    }
}
