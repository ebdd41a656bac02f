import ZOIR
import ZOModelIO

/// Host-side embedding lookup: rows of a block-encoded table (GGUF's `token_embd.weight`, or the
/// same bytes in an artifact's host segment) dequantized on demand, never held as f32.
public struct EmbeddingTable {
    public let rows: Int
    public let width: Int
    let type: GGMLType
    let bytes: UnsafeRawBufferPointer
    /// Keeps the mapped file holding `bytes` alive.
    let owner: AnyObject
    let name: String

    public init(gguf: GGUFFile) throws {
        guard let i = gguf.tensorInfo("token_embd.weight"), i.dims.count == 2 else {
            throw ModelIOError.missingTensor(path: gguf.path, name: "token_embd.weight")
        }
        guard i.type.canDequantize else { throw ModelIOError.unsupportedTensorType(path: gguf.path, tensor: i.name, type: i.type.rawValue) }
        self.init(bytes: gguf.tensorBytes(i), type: i.type, rows: i.dims[1], width: i.dims[0], owner: gguf, name: "\(gguf.path): token_embd.weight")
    }

    /// `bytes` must hold rows × width elements of `type` (the caller checked the length).
    public init(bytes: UnsafeRawBufferPointer, type: GGMLType, rows: Int, width: Int, owner: AnyObject, name: String) {
        self.bytes = bytes; self.type = type; self.rows = rows; self.width = width; self.owner = owner; self.name = name
    }

    /// The encoded size of a rows × width table, or nil when width is not a whole number of blocks.
    public static func byteCount(_ type: GGMLType, rows: Int, width: Int) -> Int? {
        width % type.blockSize == 0 ? rows * type.byteCount(elements: width) : nil
    }

    public func row(_ r: Int) -> [Float] {
        let rowBytes = type.byteCount(elements: width)
        let src = UnsafeRawBufferPointer(rebasing: bytes[(r * rowBytes)..<((r + 1) * rowBytes)])
        return [Float](unsafeUninitializedCapacity: width) { buf, count in
            type.dequantize(src, into: UnsafeMutableBufferPointer(rebasing: buf[0..<width]))
            count = width
        }
    }

    /// max |x| over the whole table (reads every row once).
    public func maxAbs() -> Double {
        var m: Float = 0
        for r in 0..<rows { for v in row(r) { m = max(m, abs(v)) } }
        return Double(m)
    }

    /// Drops the table's pages from resident memory; looked-up rows are read from the file again.
    /// (A lookup faults in whole neighbourhoods of the table: after a plan run's lookups 15 of
    /// its 29 MiB were resident.)
    public func releasePages() {
        let file = (owner as? MappedFile) ?? (owner as? GGUFFile)?.file
        file?.releasePages(of: bytes)
    }

    /// [1, T, D] embeddings of `ids`.
    public func lookup(_ ids: [Int]) throws -> TensorData {
        var out = [Float]()
        out.reserveCapacity(ids.count * width)
        for id in ids {
            guard id >= 0 && id < rows else { throw RuntimeError.badRequest("token id \(id) is outside the vocabulary (0..<\(rows))") }
            out.append(contentsOf: row(id))
        }
        return .f32(out)
    }
}
