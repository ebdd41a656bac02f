import ZOIR

public enum RuntimeError: Error, CustomStringConvertible, Equatable {
    case noFunction(String, available: [String])
    case missingInput(function: String, name: String)
    case unexpectedInput(function: String, name: String)
    case inputMismatch(function: String, name: String, expected: String, got: String)
    case missingConstantData(String)
    case constantMismatch(name: String, expected: String, got: String)
    case unsupported(function: String, value: Int, op: String, reason: String)
    case badRequest(String)

    public var description: String {
        switch self {
        case let .noFunction(n, avail): return "no function @\(n) (the module has: \(avail.map { "@" + $0 }.joined(separator: ", ")))"
        case let .missingInput(f, n): return "@\(f): input \"\(n)\" is missing"
        case let .unexpectedInput(f, n): return "@\(f): no parameter is named \"\(n)\""
        case let .inputMismatch(f, n, e, g): return "@\(f): input \"\(n)\" should be \(e), got \(g)"
        case let .missingConstantData(n): return "constant @\(n) has no data"
        case let .constantMismatch(n, e, g): return "constant @\(n) data should be \(e), got \(g)"
        case let .unsupported(f, v, op, r): return "@\(f): %\(v) = \(op): \(r)"
        case let .badRequest(m): return m
        }
    }
}
