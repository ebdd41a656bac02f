/// ggml tensor element types and their block layouts. Values are ggml's type ids.
public enum GGMLType: UInt32, Sendable, CustomStringConvertible {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, bf16 = 30

    public var description: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .f64: return "F64"
        case .i8: return "I8"
        case .i16: return "I16"
        case .i32: return "I32"
        case .i64: return "I64"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q5_0: return "Q5_0"
        case .q5_1: return "Q5_1"
        case .q8_0: return "Q8_0"
        case .q8_1: return "Q8_1"
        case .q2_K: return "Q2_K"
        case .q3_K: return "Q3_K"
        case .q4_K: return "Q4_K"
        case .q5_K: return "Q5_K"
        case .q6_K: return "Q6_K"
        case .q8_K: return "Q8_K"
        }
    }

    /// Elements per block.
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16, .f64, .i8, .i16, .i32, .i64: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1: return 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K: return 256
        }
    }

    /// Bytes per block.
    public var blockBytes: Int {
        switch self {
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .f64, .i64: return 8
        case .i8: return 1
        case .q4_0: return 2 + 16
        case .q4_1: return 4 + 16
        case .q5_0: return 2 + 4 + 16
        case .q5_1: return 4 + 4 + 16
        case .q8_0: return 2 + 32
        case .q8_1: return 4 + 32
        case .q2_K: return 16 + 64 + 4
        case .q3_K: return 32 + 64 + 12 + 2
        case .q4_K: return 4 + 12 + 128
        case .q5_K: return 4 + 12 + 32 + 128
        case .q6_K: return 128 + 64 + 16 + 2
        case .q8_K: return 4 + 256 + 32
        }
    }

    public func byteCount(elements: Int) -> Int { elements / blockSize * blockBytes }

    public var canDequantize: Bool {
        switch self {
        case .f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K: return true
        default: return false
        }
    }

    /// Dequantizes `src` (a whole number of blocks) into `dst` (blockSize × blocks floats).
    /// Precondition: `canDequantize` and matching sizes (the GGUF reader has checked them).
    public func dequantize(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableBufferPointer<Float>) {
        let blocks = dst.count / blockSize
        precondition(src.count >= blocks * blockBytes && dst.count % blockSize == 0, "dequantize: size mismatch")
        guard let s = src.baseAddress, let d = dst.baseAddress else { return }
        for b in 0..<blocks {
            let blk = s + b * blockBytes
            let out = d + b * blockSize
            switch self {
            case .f32: out[0] = Float(bitPattern: blk.loadUnaligned(as: UInt32.self).littleEndian)
            case .f16: out[0] = half(blk, 0)
            case .bf16: out[0] = Float(bitPattern: UInt32(blk.loadUnaligned(as: UInt16.self).littleEndian) << 16)
            case .q4_0: Self.q4_0(blk, out)
            case .q4_1: Self.q4_1(blk, out)
            case .q5_0: Self.q5_0(blk, out)
            case .q5_1: Self.q5_1(blk, out)
            case .q8_0: Self.q8_0(blk, out)
            case .q4_K: Self.q4_K(blk, out)
            case .q5_K: Self.q5_K(blk, out)
            case .q6_K: Self.q6_K(blk, out)
            default: preconditionFailure("dequantize: \(self) is not supported (check canDequantize first)")
            }
        }
    }

    // MARK: block kernels (layouts: ggml-common.h)

    // {f16 d; u8 qs[16]}: low nibbles are elements 0..15, high nibbles 16..31; x = (q - 8)·d
    static func q4_0(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        for j in 0..<16 {
            let q = b.load(fromByteOffset: 2 + j, as: UInt8.self)
            y[j] = Float(Int(q & 0x0F) - 8) * d
            y[j + 16] = Float(Int(q >> 4) - 8) * d
        }
    }

    // {f16 d; f16 m; u8 qs[16]}: x = q·d + m
    static func q4_1(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), m = half(b, 2)
        for j in 0..<16 {
            let q = b.load(fromByteOffset: 4 + j, as: UInt8.self)
            y[j] = Float(q & 0x0F) * d + m
            y[j + 16] = Float(q >> 4) * d + m
        }
    }

    // {f16 d; u32 qh; u8 qs[16]}: bit j of qh is the 5th bit of element j; x = (q - 16)·d
    static func q5_0(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        let qh = b.loadUnaligned(fromByteOffset: 2, as: UInt32.self).littleEndian
        for j in 0..<16 {
            let q = b.load(fromByteOffset: 6 + j, as: UInt8.self)
            let h0 = Int((qh >> UInt32(j)) & 1) << 4
            let h1 = Int((qh >> UInt32(j + 16)) & 1) << 4
            y[j] = Float((Int(q & 0x0F) | h0) - 16) * d
            y[j + 16] = Float((Int(q >> 4) | h1) - 16) * d
        }
    }

    // {f16 d; f16 m; u32 qh; u8 qs[16]}: x = q·d + m
    static func q5_1(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), m = half(b, 2)
        let qh = b.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
        for j in 0..<16 {
            let q = b.load(fromByteOffset: 8 + j, as: UInt8.self)
            let h0 = Int((qh >> UInt32(j)) & 1) << 4
            let h1 = Int((qh >> UInt32(j + 16)) & 1) << 4
            y[j] = Float(Int(q & 0x0F) | h0) * d + m
            y[j + 16] = Float(Int(q >> 4) | h1) * d + m
        }
    }

    // {f16 d; i8 qs[32]}: x = q·d
    static func q8_0(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        for j in 0..<32 { y[j] = Float(b.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
    }

    /// 6-bit scale and min of sub-block j from the 12 packed bytes of a K-quant super-block.
    static func scaleMinK4(_ j: Int, _ q: UnsafeRawPointer) -> (Float, Float) {
        func u(_ i: Int) -> UInt8 { q.load(fromByteOffset: i, as: UInt8.self) }
        if j < 4 { return (Float(u(j) & 63), Float(u(j + 4) & 63)) }
        let sc = (u(j + 4) & 0x0F) | ((u(j - 4) >> 6) << 4)
        let mn = (u(j + 4) >> 4) | ((u(j) >> 6) << 4)
        return (Float(sc), Float(mn))
    }

    // {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}: 8 sub-blocks of 32; x = d·sc·q - dmin·m
    static func q4_K(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), dmin = half(b, 2)
        let scales = b + 4, qs = b + 16
        for chunk in 0..<4 {  // 64 elements: 32 low nibbles, then 32 high nibbles
            let (s1, m1) = scaleMinK4(2 * chunk, scales)
            let (s2, m2) = scaleMinK4(2 * chunk + 1, scales)
            for l in 0..<32 {
                let q = qs.load(fromByteOffset: 32 * chunk + l, as: UInt8.self)
                y[64 * chunk + l] = d * s1 * Float(q & 0x0F) - dmin * m1
                y[64 * chunk + 32 + l] = d * s2 * Float(q >> 4) - dmin * m2
            }
        }
    }

    // {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: as Q4_K plus a 5th bit from qh
    static func q5_K(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), dmin = half(b, 2)
        let scales = b + 4, qh = b + 16, qs = b + 48
        for chunk in 0..<4 {
            let (s1, m1) = scaleMinK4(2 * chunk, scales)
            let (s2, m2) = scaleMinK4(2 * chunk + 1, scales)
            let bitLo = UInt8(1) << UInt8(2 * chunk), bitHi = UInt8(2) << UInt8(2 * chunk)
            for l in 0..<32 {
                let q = qs.load(fromByteOffset: 32 * chunk + l, as: UInt8.self)
                let h = qh.load(fromByteOffset: l, as: UInt8.self)
                let lo = Float(Int(q & 0x0F) + (h & bitLo != 0 ? 16 : 0))
                let hi = Float(Int(q >> 4) + (h & bitHi != 0 ? 16 : 0))
                y[64 * chunk + l] = d * s1 * lo - dmin * m1
                y[64 * chunk + 32 + l] = d * s2 * hi - dmin * m2
            }
        }
    }

    // {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: 16 sub-blocks of 16; x = d·sc·(q - 32)
    static func q6_K(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 208)
        for half128 in 0..<2 {
            let ql = b + 64 * half128, qh = b + 128 + 32 * half128, sc = b + 192 + 8 * half128
            let out = y + 128 * half128
            for l in 0..<32 {
                let sub = l / 16
                let a = ql.load(fromByteOffset: l, as: UInt8.self)
                let c = ql.load(fromByteOffset: l + 32, as: UInt8.self)
                let h = qh.load(fromByteOffset: l, as: UInt8.self)
                let q1 = Int((a & 0x0F) | ((h & 3) << 4)) - 32
                let q2 = Int((c & 0x0F) | (((h >> 2) & 3) << 4)) - 32
                let q3 = Int((a >> 4) | (((h >> 4) & 3) << 4)) - 32
                let q4 = Int((c >> 4) | (((h >> 6) & 3) << 4)) - 32
                func s(_ i: Int) -> Float { Float(sc.load(fromByteOffset: i, as: Int8.self)) }
                out[l] = d * s(sub) * Float(q1)
                out[l + 32] = d * s(sub + 2) * Float(q2)
                out[l + 64] = d * s(sub + 4) * Float(q3)
                out[l + 96] = d * s(sub + 6) * Float(q4)
            }
        }
    }
}

@inline(__always)
func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self).littleEndian))
}
