import Foundation

/// Builds a GGUF (version 3 by default) in memory: metadata in the order added, tensor infos,
/// then tensor data, each tensor aligned to `alignment`.
public struct GGUFWriter {
    public var version: UInt32
    public var alignment: Int
    public private(set) var metadata: [(key: String, value: GGUFValue)] = []
    public private(set) var tensors: [(info: GGUFTensorInfo, data: Data)] = []

    public init(version: UInt32 = 3, alignment: Int = 32) {
        self.version = version
        self.alignment = alignment
    }

    public mutating func add(_ key: String, _ value: GGUFValue) { metadata.append((key, value)) }

    /// `dims` in ggml order (row length first); `data` must be exactly the tensor's bytes.
    public mutating func addTensor(_ name: String, dims: [Int], type: GGMLType, data: Data) {
        tensors.append((GGUFTensorInfo(name: name, dims: dims, type: type, offset: 0), data))
    }

    public mutating func addTensor(_ name: String, dims: [Int], floats: [Float]) {
        var d = Data(capacity: floats.count * 4)
        for f in floats { withUnsafeBytes(of: f.bitPattern.littleEndian) { d.append(contentsOf: $0) } }
        addTensor(name, dims: dims, type: .f32, data: d)
    }

    public func serialize() -> Data { parts().reduce(into: Data()) { $0.append($1) } }

    /// The file as pieces: the header (metadata and tensor infos), then each tensor's data and padding.
    public func parts() -> [Data] {
        var out = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func str(_ s: String) { let b = Array(s.utf8); u64(UInt64(b.count)); out.append(contentsOf: b) }
        func value(_ v: GGUFValue) {
            switch v {
            case let .uint8(x): out.append(x)
            case let .int8(x): out.append(UInt8(bitPattern: x))
            case let .uint16(x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case let .int16(x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case let .uint32(x): u32(x)
            case let .int32(x): u32(UInt32(bitPattern: x))
            case let .float32(x): u32(x.bitPattern)
            case let .bool(x): out.append(x ? 1 : 0)
            case let .string(x): str(x)
            case let .uint64(x): u64(x)
            case let .int64(x): u64(UInt64(bitPattern: x))
            case let .float64(x): u64(x.bitPattern)
            case let .array(t, items): u32(t.rawValue); u64(UInt64(items.count)); items.forEach(value)
            }
        }
        out.append(contentsOf: Array("GGUF".utf8))
        u32(version)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (k, v) in metadata { str(k); u32(v.type.rawValue); value(v) }
        var offset = 0
        for (info, data) in tensors {
            str(info.name)
            u32(UInt32(info.dims.count))
            info.dims.forEach { u64(UInt64($0)) }
            u32(info.type.rawValue)
            u64(UInt64(offset))
            offset = (offset + data.count + alignment - 1) / alignment * alignment
        }
        func padding(_ n: Int) -> Data { Data(count: (alignment - n % alignment) % alignment) }
        out.append(padding(out.count))
        var result = [out]
        for (_, data) in tensors { result += [data, padding(data.count)] }
        return result
    }

    public func write(to path: String, inputs: [String] = []) throws {
        try writeAtomically(parts: parts(), to: path, inputs: inputs)
    }
}

extension GGUFFile {
    /// A writer reproducing this file (same version, alignment, metadata and tensor order, tensor
    /// bytes used in place from the mapping, so the writer must not outlive this file) with each tensor of `replacements` rewritten as F32
    /// values of the same dims, in ggml element order.
    public func rewriter(replacing replacements: [String: [Float]]) throws -> GGUFWriter {
        var w = GGUFWriter(version: version, alignment: alignment)
        for (k, v) in metadata { w.add(k, v) }
        for name in replacements.keys where tensorInfo(name) == nil { throw ModelIOError.missingTensor(path: path, name: name) }
        for t in tensors {
            if let f = replacements[t.name] {
                guard f.count == t.elementCount else {
                    throw ModelIOError.invalid(path: path, offset: dataOffset + t.offset, field: "tensor '\(t.name)'",
                                               reason: "replacement has \(f.count) values, the tensor \(t.elementCount)")
                }
                w.addTensor(t.name, dims: t.dims, floats: f)
            } else {
                let b = tensorBytes(t)
                let data = b.isEmpty ? Data() : Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: b.baseAddress!), count: b.count, deallocator: .none)
                w.addTensor(t.name, dims: t.dims, type: t.type, data: data)
            }
        }
        return w
    }
}
