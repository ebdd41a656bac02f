#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A read-only memory map of a whole file. Tensor data is used in place from it.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let bytes: UnsafeRawBufferPointer

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw ModelIOError.io(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ModelIOError.io(path: path, reason: String(cString: strerror(errno))) }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw ModelIOError.io(path: path, reason: "is a directory") }
        let size = Int(st.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw ModelIOError.io(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        bytes = UnsafeRawBufferPointer(start: p, count: size)
    }

    /// Drops the pages read so far from this process's resident memory (they are re-read from the
    /// file if touched again); used after compiling, when the weights now live elsewhere.
    public func releasePages() {
        if let base = bytes.baseAddress { madvise(UnsafeMutableRawPointer(mutating: base), bytes.count, MADV_DONTNEED) }
    }

    /// The same for the pages holding `range` (byte offsets; whole pages, so a neighbour's
    /// first or last page may go too: it is re-read if needed).
    public func releasePages(_ range: Range<Int>) {
        guard let base = bytes.baseAddress, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lo = range.lowerBound / page * page, hi = min(bytes.count, (range.upperBound + page - 1) / page * page)
        madvise(UnsafeMutableRawPointer(mutating: base + lo), hi - lo, MADV_DONTNEED)
    }

    /// The same for the pages of `part`, if it lies in this mapping.
    public func releasePages(of part: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, let p = part.baseAddress, p >= base, p + part.count <= base + bytes.count else { return }
        releasePages((p - base)..<(p - base + part.count))
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }
}

/// Errors of reading model files: each names the file, and where relevant the byte offset and field.
public enum ModelIOError: Error, CustomStringConvertible, Equatable {
    case io(path: String, reason: String)
    case truncated(path: String, offset: Int, field: String, needed: Int, available: Int)
    case badMagic(path: String, found: String)
    case unsupportedVersion(path: String, version: UInt32)
    case invalid(path: String, offset: Int, field: String, reason: String)
    case missingKey(path: String, key: String)
    case wrongKeyType(path: String, key: String, expected: String, found: String)
    case unsupportedTensorType(path: String, tensor: String, type: UInt32)
    case missingTensor(path: String, name: String)
    case tensorShape(path: String, name: String, expected: [Int], found: [Int])

    public var description: String {
        switch self {
        case let .io(path, reason): return "\(path): \(reason)"
        case let .truncated(path, offset, field, needed, available):
            return "\(path): truncated at byte \(offset) reading \(field): needed \(needed) bytes, \(available) left"
        case let .badMagic(path, found): return "\(path): not a GGUF file (magic \(found), expected \"GGUF\")"
        case let .unsupportedVersion(path, v): return "\(path): GGUF version \(v) is not supported (2 or 3)"
        case let .invalid(path, offset, field, reason): return "\(path): invalid \(field) at byte \(offset): \(reason)"
        case let .missingKey(path, key): return "\(path): metadata key '\(key)' is missing"
        case let .wrongKeyType(path, key, expected, found):
            return "\(path): metadata key '\(key)' has type \(found), expected \(expected)"
        case let .unsupportedTensorType(path, tensor, type):
            return "\(path): tensor '\(tensor)' has ggml type \(type), which zo cannot dequantize"
        case let .missingTensor(path, name): return "\(path): tensor '\(name)' is missing"
        case let .tensorShape(path, name, expected, found):
            return "\(path): tensor '\(name)' has shape \(found), expected \(expected)"
        }
    }
}

/// A bounds-checked little-endian cursor; every read names the field it reads for error messages.
struct ByteCursor {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var offset: Int = 0

    init(_ bytes: UnsafeRawBufferPointer, path: String) {
        self.bytes = bytes
        self.path = path
    }

    var remaining: Int { bytes.count - offset }

    mutating func need(_ n: Int, _ field: String) throws {
        if n < 0 || n > remaining {
            throw ModelIOError.truncated(path: path, offset: offset, field: field, needed: n, available: remaining)
        }
    }

    mutating func read<T: FixedWidthInteger>(_ type: T.Type, _ field: String) throws -> T {
        let n = MemoryLayout<T>.size
        try need(n, field)
        let v = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += n
        return T(littleEndian: v)
    }

    mutating func readF32(_ field: String) throws -> Float { Float(bitPattern: try read(UInt32.self, field)) }
    mutating func readF64(_ field: String) throws -> Double { Double(bitPattern: try read(UInt64.self, field)) }

    mutating func readString(_ field: String) throws -> String {
        let start = offset
        let len = try read(UInt64.self, "\(field) length")
        guard len <= UInt64(remaining) else {
            throw ModelIOError.truncated(path: path, offset: start, field: field, needed: Int(clamping: len), available: remaining)
        }
        let n = Int(len)
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)]), as: UTF8.self)
        offset += n
        return s
    }
}
