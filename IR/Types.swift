/// Element types. Integer types may carry quantization parameters in their `TensorType`.
public enum DType: String, CaseIterable, Hashable, Sendable {
    case f32, i8, i16, i32, i64

    public var byteSize: Int {
        switch self {
        case .i8: return 1
        case .i16: return 2
        case .f32, .i32: return 4
        case .i64: return 8
        }
    }

    public var isInteger: Bool { self != .f32 }
}

/// What the integer bits of a quantized tensor mean: real = scale · (q − zeroPoint).
public enum Quantization: Hashable, Sendable {
    case perTensor(scale: Float, zeroPoint: Int)
    /// One scale per index of `axis`; the scales are the f32 constant named `scales`, zero point 0.
    case perChannel(axis: Int, scales: String)
}

/// A tensor's static type: dtype, shape and (for integers) optional quantization.
public struct TensorType: Hashable, Sendable, CustomStringConvertible {
    public var dtype: DType
    public var shape: [Int]
    public var quant: Quantization?

    public init(_ dtype: DType, _ shape: [Int], quant: Quantization? = nil) {
        self.dtype = dtype; self.shape = shape; self.quant = quant
    }

    public static func f32(_ shape: [Int]) -> TensorType { TensorType(.f32, shape) }

    /// A dimension not known until run time (printed `?`). Only the float profile's verifier accepts
    /// it; legalize-npu and the interpreter refuse it (zo graphs are static).
    public static let dynamic = -1
    public var isStatic: Bool { !shape.contains(TensorType.dynamic) }

    public var rank: Int { shape.count }
    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { elementCount * dtype.byteSize }

    public var description: String { IRPrinter.typeText(self) }
}

/// Row-major strides of a shape.
public func strides(of shape: [Int]) -> [Int] {
    var s = [Int](repeating: 1, count: shape.count)
    var acc = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) { s[i] = acc; acc *= shape[i] }
    return s
}

/// The numpy broadcast of two shapes, or nil when they do not broadcast.
public func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int]? {
    let n = max(a.count, b.count)
    var out = [Int](repeating: 1, count: n)
    for i in 0..<n {
        let x = i < n - a.count ? 1 : a[i - (n - a.count)]
        let y = i < n - b.count ? 1 : b[i - (n - b.count)]
        if x == TensorType.dynamic || y == TensorType.dynamic { out[i] = TensorType.dynamic; continue }
        if x == y || y == 1 { out[i] = x } else if x == 1 { out[i] = y } else { return nil }
    }
    return out
}

/// Attribute values. Floats are stored as Double and printed so they parse back exactly.
public enum Attribute: Hashable, Sendable {
    case int(Int)
    case float(Double)
    case ints([Int])
    case floats([Double])
    case string(String)
    case bool(Bool)
    /// A reference to a module constant (`@name`).
    case symbol(String)

    public var kindName: String {
        switch self {
        case .int: return "int"
        case .float: return "float"
        case .ints: return "int list"
        case .floats: return "float list"
        case .string: return "string"
        case .bool: return "bool"
        case .symbol: return "symbol"
        }
    }
}

/// Element data of a constant or a runtime tensor.
public enum TensorData: Sendable, Equatable {
    case f32([Float])
    case i8([Int8])
    case i16([Int16])
    case i32([Int32])
    case i64([Int64])
    /// i8 data used in place from memory the tensor does not own (a mapped artifact's weights).
    case i8View(Int8View)
    /// i16 data used in place likewise (a mapped artifact's block scales and offsets, and the
    /// interpreter's values in its arena, as the i32 and i64 views).
    case i16View(Int16View)
    case i32View(Int32View)
    case i64View(Int64View)

    public var dtype: DType {
        switch self {
        case .f32: return .f32
        case .i8, .i8View: return .i8
        case .i16, .i16View: return .i16
        case .i32, .i32View: return .i32
        case .i64, .i64View: return .i64
        }
    }

    /// Every element as Int64 (exact for the integer dtypes; f32 truncates toward zero).
    public var int64Values: [Int64] {
        switch self {
        case let .i8(a): return a.map(Int64.init)
        case let .i8View(v): return v.buffer.map(Int64.init)
        case let .i16(a): return a.map(Int64.init)
        case let .i16View(v): return v.buffer.map(Int64.init)
        case let .i32(a): return a.map(Int64.init)
        case let .i32View(v): return v.buffer.map(Int64.init)
        case let .i64(a): return a
        case let .i64View(v): return Array(v.buffer)
        case let .f32(a): return a.map { Int64($0) }
        }
    }

    public var count: Int {
        switch self {
        case let .f32(a): return a.count
        case let .i8(a): return a.count
        case let .i8View(v): return v.count
        case let .i16(a): return a.count
        case let .i16View(v): return v.count
        case let .i32(a): return a.count
        case let .i32View(v): return v.count
        case let .i64(a): return a.count
        case let .i64View(v): return v.count
        }
    }
}

extension TensorData {
    /// The same data with views copied into owned arrays (the few kernels that want arrays, and
    /// results leaving the interpreter, whose arena the next run overwrites).
    public var owned: TensorData {
        switch self {
        case let .i8View(v): return .i8(Array(v.buffer))
        case let .i16View(v): return .i16(Array(v.buffer))
        case let .i32View(v): return .i32(Array(v.buffer))
        case let .i64View(v): return .i64(Array(v.buffer))
        default: return self
        }
    }

    /// i8 elements in place, without copying a view.
    public func withInt8s<R>(_ body: (UnsafeBufferPointer<Int8>) throws -> R) rethrows -> R? {
        switch self {
        case let .i8(a): return try a.withUnsafeBufferPointer(body)
        case let .i8View(v): return try body(v.buffer)
        default: return nil
        }
    }

    /// i16 elements in place, without copying a view.
    public func withInt16s<R>(_ body: (UnsafeBufferPointer<Int16>) throws -> R) rethrows -> R? {
        switch self {
        case let .i16(a): return try a.withUnsafeBufferPointer(body)
        case let .i16View(v): return try body(v.buffer)
        default: return nil
        }
    }
}

/// Integer elements in memory kept alive by `owner` (e.g. a memory-mapped file), in host order.
public struct MappedView<Element: FixedWidthInteger>: @unchecked Sendable, Equatable {
    public let buffer: UnsafeBufferPointer<Element>
    public let owner: AnyObject
    public var count: Int { buffer.count }

    public init(_ buffer: UnsafeBufferPointer<Element>, owner: AnyObject) { self.buffer = buffer; self.owner = owner }

    public static func == (a: MappedView, b: MappedView) -> Bool { a.buffer.elementsEqual(b.buffer) }
}

public typealias Int8View = MappedView<Int8>
public typealias Int16View = MappedView<Int16>
public typealias Int32View = MappedView<Int32>
public typealias Int64View = MappedView<Int64>
