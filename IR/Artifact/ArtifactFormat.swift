/// The .zo file layout:
///
///     0   magic        8 bytes  89 5A 4F 41 0D 0A 1A 0A  ("\x89ZOA\r\n\x1a\n": catches text-mode copies)
///     8   version      u32 LE   ArtifactFormat.version
///     12  flags        u32 LE   0
///     16  manifest     u64 LE   length in bytes
///     24  manifest     u32 LE   CRC-32 of the manifest bytes
///     28  header       u32 LE   CRC-32 of bytes 0..<28
///     32  the manifest (zo.Manifest, protobuf)
///     then the data section from the first 64-byte boundary after the manifest: each tensor's
///     segment at its descriptor's offset (relative to the section, a multiple of 64), zero padding between.
///
/// Weights never enter the protobuf message, so its 2 GiB limit never limits model size, and a
/// mapped file's segments are aligned for in-place use.
public enum ArtifactFormat {
    public static let magic: [UInt8] = [0x89, 0x5A, 0x4F, 0x41, 0x0D, 0x0A, 0x1A, 0x0A]
    public static let version: UInt32 = 1
    public static let headerSize = 32
    public static let alignment = 64

    static func aligned(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }

    /// The whole file: `manifest`'s tensors get their offsets, lengths and checksums from
    /// `segments` (same order, same count).
    public static func encode(_ manifest: ArtifactManifest, segments: [[UInt8]]) throws -> [UInt8] {
        guard segments.count == manifest.tensors.count else {
            throw ArtifactError.encode(reason: "\(manifest.tensors.count) tensors but \(segments.count) segments")
        }
        var m = manifest
        var offset = 0
        for (i, s) in segments.enumerated() {
            m.tensors[i].offset = offset
            m.tensors[i].length = s.count
            m.tensors[i].crc32 = CRC32.checksum(s)
            offset = aligned(offset + s.count)
        }
        let body = try ManifestCodec.encode(m)
        let dataStart = aligned(headerSize + body.count)
        var out = [UInt8]()
        out.reserveCapacity(dataStart + offset)
        out += magic
        append(&out, version)
        append(&out, UInt32(0))
        append(&out, UInt64(body.count))
        append(&out, CRC32.checksum(body))
        append(&out, CRC32.checksum(out))
        out += body
        for (i, s) in segments.enumerated() {
            out += [UInt8](repeating: 0, count: dataStart + m.tensors[i].offset - out.count)
            out += s
        }
        return out
    }

    static func append<T: FixedWidthInteger>(_ out: inout [UInt8], _ v: T) {
        withUnsafeBytes(of: v.littleEndian) { out += $0 }
    }

    static func load<T: FixedWidthInteger>(_ b: UnsafeRawBufferPointer, _ at: Int, _: T.Type) -> T {
        T(littleEndian: b.loadUnaligned(fromByteOffset: at, as: T.self))
    }

    /// Checks the header, the manifest's checksum and every descriptor against the file's size
    /// (bounds, alignment, length for its type, unique names). Segment checksums: `verifySegments`.
    public static func decode(_ b: UnsafeRawBufferPointer, path: String) throws -> (manifest: ArtifactManifest, dataStart: Int) {
        guard b.count >= headerSize else {
            throw ArtifactError.truncated(path: path, field: "header", needed: headerSize, available: b.count)
        }
        guard Array(b[0..<8]) == magic else { throw ArtifactError.badMagic(path: path) }
        guard load(b, 28, UInt32.self) == CRC32.checksum(UnsafeRawBufferPointer(rebasing: b[0..<28])) else {
            throw ArtifactError.headerChecksum(path: path)
        }
        let v = load(b, 8, UInt32.self)
        guard v == version else { throw ArtifactError.unsupportedVersion(path: path, found: v, supported: version) }
        guard load(b, 12, UInt32.self) == 0 else { throw ArtifactError.invalidField(path: path, field: "header.flags", reason: "must be 0") }
        let length = load(b, 16, UInt64.self)
        guard length <= UInt64(b.count - headerSize) else {
            throw ArtifactError.truncated(path: path, field: "manifest", needed: headerSize + Int(min(length, 1 << 62)), available: b.count)
        }
        let body = UnsafeRawBufferPointer(rebasing: b[headerSize..<(headerSize + Int(length))])
        let expected = load(b, 24, UInt32.self), found = CRC32.checksum(body)
        guard expected == found else { throw ArtifactError.manifestChecksum(path: path, expected: expected, found: found) }
        let (mv, manifest) = try ManifestCodec.decode(body, path: path)
        guard mv == version else {
            throw ArtifactError.invalidField(path: path, field: "format_version", reason: "\(mv) disagrees with the header's \(version)")
        }
        let dataStart = aligned(headerSize + Int(length))
        var names = Set<String>()
        for t in manifest.tensors {
            func bad(_ r: String) -> ArtifactError { .invalidTensor(path: path, tensor: t.name, reason: r) }
            guard names.insert(t.name).inserted else { throw bad("declared twice") }
            guard t.offset % alignment == 0 else { throw bad("offset \(t.offset) is not a multiple of \(alignment)") }
            let (end, overflow) = (dataStart + t.offset).addingReportingOverflow(t.length)
            guard !overflow, end <= b.count else {
                throw ArtifactError.truncated(path: path, field: "tensor '\(t.name)'", needed: overflow ? Int.max : end, available: b.count)
            }
            if !t.host {
                guard t.ggmlType == 0 else { throw bad("a module constant cannot have a ggml block encoding") }
                guard t.length == t.type.byteCount else {
                    throw bad("length \(t.length) does not match its type \(t.type) (\(t.type.byteCount) bytes)")
                }
            }
        }
        return (manifest, dataStart)
    }

    /// Recomputes every segment's CRC-32 and compares it with its descriptor; `checked` sees the
    /// byte range of each segment once it is read.
    public static func verifySegments(_ b: UnsafeRawBufferPointer, _ manifest: ArtifactManifest, dataStart: Int, path: String,
                                      checked: (Range<Int>) -> Void = { _ in }) throws {
        for t in manifest.tensors {
            let start = dataStart + t.offset
            let found = CRC32.checksum(UnsafeRawBufferPointer(rebasing: b[start..<(start + t.length)]))
            guard found == t.crc32 else { throw ArtifactError.tensorChecksum(path: path, tensor: t.name, expected: t.crc32, found: found) }
            checked(start..<(start + t.length))
        }
    }
}

/// CRC-32 as zlib and PNG compute it (reflected polynomial 0xEDB88320), eight bytes per step.
public enum CRC32 {
    /// Eight 256-entry tables, one after another: table k advances a byte k positions further.
    static let table: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            t[i] = c
        }
        for k in 1..<8 { for i in 0..<256 { t[k * 256 + i] = (t[(k - 1) * 256 + i] >> 8) ^ t[Int(t[(k - 1) * 256 + i] & 0xFF)] } }
        return t
    }()

    public static func checksum(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { checksum($0) } }

    public static func checksum(_ b: UnsafeRawBufferPointer) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            var i = 0
            let n = b.count
            while i + 8 <= n {
                let lo = c ^ UInt32(littleEndian: b.loadUnaligned(fromByteOffset: i, as: UInt32.self))
                let hi = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self))
                c = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                  ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                  ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                  ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                i += 8
            }
            while i < n {
                c = t[Int((c ^ UInt32(b[i])) & 0xFF)] ^ (c >> 8)
                i += 1
            }
        }
        return ~c
    }
}
