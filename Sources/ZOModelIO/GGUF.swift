/// GGUF (versions 2 and 3): header, metadata, tensor infos, aligned tensor data.
/// Layout facts from the GGUF specification (ggml/docs/gguf.md).

public enum GGUFValueType: UInt32, Sendable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12
}

/// One metadata value. Arrays keep their element type so a file can be written back unchanged.
public indirect enum GGUFValue: Equatable, Sendable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    case array(GGUFValueType, [GGUFValue])

    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        }
    }

    /// Any integer type as Int (nil for non-integers or values that do not fit).
    public var intValue: Int? {
        switch self {
        case let .uint8(v): return Int(v)
        case let .int8(v): return Int(v)
        case let .uint16(v): return Int(v)
        case let .int16(v): return Int(v)
        case let .uint32(v): return Int(v)
        case let .int32(v): return Int(v)
        case let .uint64(v): return Int(exactly: v)
        case let .int64(v): return Int(v)
        default: return nil
        }
    }

    public var doubleValue: Double? {
        switch self {
        case let .float32(v): return Double(v)
        case let .float64(v): return v
        default: return intValue.map(Double.init)
        }
    }
}

public struct GGUFTensorInfo: Equatable, Sendable {
    public var name: String
    /// ggml order: dims[0] is the fastest-varying (row length).
    public var dims: [Int]
    public var type: GGMLType
    /// Offset relative to the start of the tensor-data section.
    public var offset: Int

    public init(name: String, dims: [Int], type: GGMLType, offset: Int) {
        self.name = name; self.dims = dims; self.type = type; self.offset = offset
    }

    public var elementCount: Int { dims.reduce(1, *) }
    /// Row-major shape, slowest dimension first (the reverse of ggml's order).
    public var shape: [Int] { dims.reversed() }
    public var byteCount: Int { type.byteCount(elements: elementCount) }
}

public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    /// Metadata in file order (order matters for byte-identical rewriting).
    public let metadata: [(key: String, value: GGUFValue)]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Absolute file offset of the tensor-data section.
    public let dataOffset: Int
    public let file: MappedFile
    private let metadataIndex: [String: Int]
    private let tensorIndex: [String: Int]

    static let maxDims = 4

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        self.path = file.path
        var c = ByteCursor(file.bytes, path: file.path)
        try c.need(4, "magic")
        let magic = Array(file.bytes[0..<4])
        guard magic == Array("GGUF".utf8) else {
            let shown = magic.allSatisfy { $0 >= 32 && $0 < 127 } ? "\"\(String(decoding: magic, as: UTF8.self))\""
                : magic.map { String($0, radix: 16) }.joined(separator: " ")
            throw ModelIOError.badMagic(path: path, found: shown)
        }
        c.offset = 4
        version = try c.read(UInt32.self, "version")
        guard version == 2 || version == 3 else { throw ModelIOError.unsupportedVersion(path: path, version: version) }
        let tensorCountOffset = c.offset
        let tensorCount = try c.read(UInt64.self, "tensor_count")
        let kvOffset = c.offset
        let kvCount = try c.read(UInt64.self, "metadata_kv_count")
        // A metadata entry takes at least 13 bytes (key length, type, one byte of value).
        guard kvCount <= UInt64(c.remaining / 13) else {
            throw ModelIOError.truncated(path: path, offset: kvOffset, field: "metadata_kv_count (\(kvCount) entries)",
                                         needed: Int(clamping: kvCount.multipliedReportingOverflow(by: 13).partialValue), available: c.remaining)
        }
        var md: [(key: String, value: GGUFValue)] = []
        var mdIndex: [String: Int] = [:]
        for i in 0..<Int(kvCount) {
            let keyOffset = c.offset
            let key = try c.readString("metadata[\(i)].key")
            let tOffset = c.offset
            let rawType = try c.read(UInt32.self, "metadata '\(key)' type")
            guard let t = GGUFValueType(rawValue: rawType) else {
                throw ModelIOError.invalid(path: path, offset: tOffset, field: "metadata '\(key)' type", reason: "unknown value type \(rawType)")
            }
            let v = try Self.readValue(&c, type: t, field: "metadata '\(key)'", depth: 0)
            if mdIndex[key] != nil {
                throw ModelIOError.invalid(path: path, offset: keyOffset, field: "metadata key", reason: "duplicate key '\(key)'")
            }
            mdIndex[key] = md.count
            md.append((key, v))
        }
        metadata = md
        metadataIndex = mdIndex

        var align = 32
        if let a = mdIndex["general.alignment"] {
            guard let v = md[a].value.intValue, v > 0, v.nonzeroBitCount == 1 else {
                throw ModelIOError.invalid(path: path, offset: 0, field: "general.alignment", reason: "must be a power of two")
            }
            align = v
        }
        alignment = align

        // A tensor info takes at least 8 + 4 + 8 + 4 + 8 bytes.
        guard tensorCount <= UInt64(c.remaining / 32) else {
            throw ModelIOError.truncated(path: path, offset: tensorCountOffset, field: "tensor_count (\(tensorCount) tensor infos after the metadata)",
                                         needed: Int(clamping: tensorCount.multipliedReportingOverflow(by: 32).partialValue), available: c.remaining)
        }
        var infos: [GGUFTensorInfo] = []
        var tIndex: [String: Int] = [:]
        for i in 0..<Int(tensorCount) {
            let name = try c.readString("tensor[\(i)].name")
            let ndOffset = c.offset
            let nd = try c.read(UInt32.self, "tensor '\(name)' n_dims")
            guard nd >= 1 && nd <= UInt32(Self.maxDims) else {
                throw ModelIOError.invalid(path: path, offset: ndOffset, field: "tensor '\(name)' n_dims", reason: "\(nd) is outside 1...\(Self.maxDims)")
            }
            var dims: [Int] = []
            var total = 1
            for d in 0..<Int(nd) {
                let dOff = c.offset
                let v = try c.read(UInt64.self, "tensor '\(name)' dim \(d)")
                guard v >= 1, v < (1 << 40) else {
                    throw ModelIOError.invalid(path: path, offset: dOff, field: "tensor '\(name)' dim \(d)", reason: "size \(v) is not a valid dimension")
                }
                let (p, overflow) = total.multipliedReportingOverflow(by: Int(v))
                guard !overflow, p < (1 << 42) else {
                    throw ModelIOError.invalid(path: path, offset: dOff, field: "tensor '\(name)' dims", reason: "element count overflows")
                }
                total = p
                dims.append(Int(v))
            }
            let tyOff = c.offset
            let rawType = try c.read(UInt32.self, "tensor '\(name)' type")
            guard let ty = GGMLType(rawValue: rawType) else {
                throw ModelIOError.invalid(path: path, offset: tyOff, field: "tensor '\(name)' type", reason: "unknown ggml type \(rawType)")
            }
            guard dims[0] % ty.blockSize == 0 else {
                throw ModelIOError.invalid(path: path, offset: ndOffset, field: "tensor '\(name)' dims", reason: "row length \(dims[0]) is not a multiple of the \(ty) block size \(ty.blockSize)")
            }
            let offOff = c.offset
            let off = try c.read(UInt64.self, "tensor '\(name)' offset")
            guard off < (1 << 48), Int(off) % align == 0 else {
                throw ModelIOError.invalid(path: path, offset: offOff, field: "tensor '\(name)' offset", reason: "\(off) is not a multiple of the alignment \(align)")
            }
            if tIndex[name] != nil {
                throw ModelIOError.invalid(path: path, offset: ndOffset, field: "tensor name", reason: "duplicate tensor '\(name)'")
            }
            tIndex[name] = infos.count
            infos.append(GGUFTensorInfo(name: name, dims: dims, type: ty, offset: Int(off)))
        }
        tensors = infos
        tensorIndex = tIndex
        let headerEnd = c.offset
        dataOffset = (headerEnd + align - 1) / align * align
        for t in infos {
            let end = dataOffset + t.offset + t.byteCount
            if end > file.bytes.count {
                throw ModelIOError.truncated(path: path, offset: dataOffset + t.offset, field: "tensor '\(t.name)' data",
                                             needed: t.byteCount, available: max(0, file.bytes.count - dataOffset - t.offset))
            }
        }
    }

    private static func readValue(_ c: inout ByteCursor, type: GGUFValueType, field: String, depth: Int) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try c.read(UInt8.self, field))
        case .int8: return .int8(try c.read(Int8.self, field))
        case .uint16: return .uint16(try c.read(UInt16.self, field))
        case .int16: return .int16(try c.read(Int16.self, field))
        case .uint32: return .uint32(try c.read(UInt32.self, field))
        case .int32: return .int32(try c.read(Int32.self, field))
        case .float32: return .float32(try c.readF32(field))
        case .bool:
            let off = c.offset
            let b = try c.read(UInt8.self, field)
            guard b <= 1 else { throw ModelIOError.invalid(path: c.path, offset: off, field: field, reason: "bool byte \(b) is not 0 or 1") }
            return .bool(b == 1)
        case .string: return .string(try c.readString(field))
        case .uint64: return .uint64(try c.read(UInt64.self, field))
        case .int64: return .int64(try c.read(Int64.self, field))
        case .float64: return .float64(try c.readF64(field))
        case .array:
            let off = c.offset
            guard depth < 4 else { throw ModelIOError.invalid(path: c.path, offset: off, field: field, reason: "arrays nested too deeply") }
            let raw = try c.read(UInt32.self, "\(field) element type")
            guard let et = GGUFValueType(rawValue: raw) else {
                throw ModelIOError.invalid(path: c.path, offset: off, field: "\(field) element type", reason: "unknown value type \(raw)")
            }
            let countOff = c.offset
            let n = try c.read(UInt64.self, "\(field) count")
            guard n <= UInt64(c.remaining) else {
                throw ModelIOError.truncated(path: c.path, offset: countOff, field: "\(field) (\(n) elements)", needed: Int(clamping: n), available: c.remaining)
            }
            var out: [GGUFValue] = []
            out.reserveCapacity(Int(n))
            for i in 0..<Int(n) {
                out.append(try readValue(&c, type: et, field: "\(field)[\(i)]", depth: depth + 1))
            }
            return .array(et, out)
        }
    }

    // MARK: lookup

    public func value(_ key: String) -> GGUFValue? { metadataIndex[key].map { metadata[$0].value } }

    public func int(_ key: String) throws -> Int {
        guard let v = value(key) else { throw ModelIOError.missingKey(path: path, key: key) }
        guard let i = v.intValue else { throw ModelIOError.wrongKeyType(path: path, key: key, expected: "integer", found: "\(v.type)") }
        return i
    }

    public func double(_ key: String) throws -> Double {
        guard let v = value(key) else { throw ModelIOError.missingKey(path: path, key: key) }
        guard let d = v.doubleValue else { throw ModelIOError.wrongKeyType(path: path, key: key, expected: "number", found: "\(v.type)") }
        return d
    }

    public func string(_ key: String) throws -> String {
        guard let v = value(key) else { throw ModelIOError.missingKey(path: path, key: key) }
        guard case let .string(s) = v else { throw ModelIOError.wrongKeyType(path: path, key: key, expected: "string", found: "\(v.type)") }
        return s
    }

    public func stringArray(_ key: String) throws -> [String] {
        guard let v = value(key) else { throw ModelIOError.missingKey(path: path, key: key) }
        guard case let .array(.string, items) = v else { throw ModelIOError.wrongKeyType(path: path, key: key, expected: "array of string", found: "\(v.type)") }
        return items.map { if case let .string(s) = $0 { return s } else { return "" } }
    }

    public func intArray(_ key: String) throws -> [Int] {
        guard let v = value(key) else { throw ModelIOError.missingKey(path: path, key: key) }
        guard case let .array(_, items) = v, items.allSatisfy({ $0.intValue != nil }) else {
            throw ModelIOError.wrongKeyType(path: path, key: key, expected: "array of integer", found: "\(v.type)")
        }
        return items.map { $0.intValue! }
    }

    public func tensorInfo(_ name: String) -> GGUFTensorInfo? { tensorIndex[name].map { tensors[$0] } }

    /// The raw bytes of a tensor, in place in the mapped file.
    public func tensorBytes(_ info: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        let start = dataOffset + info.offset
        return UnsafeRawBufferPointer(rebasing: file.bytes[start..<(start + info.byteCount)])
    }

    /// Dequantizes row `row` of a 2-D tensor (dims[0] elements) to float32, touching only that row's bytes.
    public func dequantizeRow(_ info: GGUFTensorInfo, _ row: Int) throws -> [Float] {
        guard info.type.canDequantize else { throw ModelIOError.unsupportedTensorType(path: path, tensor: info.name, type: info.type.rawValue) }
        let width = info.dims[0], rows = info.elementCount / width
        guard row >= 0 && row < rows else { throw ModelIOError.invalid(path: path, offset: dataOffset + info.offset, field: "tensor '\(info.name)' row", reason: "row \(row) is outside 0..<\(rows)") }
        let rowBytes = info.type.byteCount(elements: width)
        let all = tensorBytes(info)
        let bytes = UnsafeRawBufferPointer(rebasing: all[(row * rowBytes)..<((row + 1) * rowBytes)])
        return [Float](unsafeUninitializedCapacity: width) { buf, count in
            info.type.dequantize(bytes, into: UnsafeMutableBufferPointer(rebasing: buf[0..<width]))
            count = width
        }
    }

    /// Dequantizes a tensor to float32, row-major in ggml element order.
    public func dequantize(_ name: String) throws -> [Float] {
        guard let info = tensorInfo(name) else { throw ModelIOError.missingTensor(path: path, name: name) }
        return try dequantize(info)
    }

    public func dequantize(_ info: GGUFTensorInfo) throws -> [Float] {
        guard info.type.canDequantize else {
            throw ModelIOError.unsupportedTensorType(path: path, tensor: info.name, type: info.type.rawValue)
        }
        let n = info.elementCount
        return [Float](unsafeUninitializedCapacity: n) { buf, count in
            info.type.dequantize(tensorBytes(info), into: UnsafeMutableBufferPointer(rebasing: buf[0..<n]))
            count = n
        }
    }
}
