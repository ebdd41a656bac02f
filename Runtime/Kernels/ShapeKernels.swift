import ZOIR
import CKernels

/// An array transform that works for every element type (Swift closures cannot be generic).
public protocol ElementTransform {
    func callAsFunction<T>(_ a: [T]) -> [T]
}

extension TensorData {
    public func mapElements<F: ElementTransform>(_ f: F) -> TensorData {
        switch self {
        case let .f32(a): return .f32(f(a))
        case let .i8(a): return .i8(f(a))
        case let .i16(a): return .i16(f(a))
        case let .i32(a): return .i32(f(a))
        case let .i64(a): return .i64(f(a))
        case .i8View, .i16View, .i32View, .i64View: return owned.mapElements(f)
        }
    }
}

/// Static shape ops, for every element type. Transpose, slice and concat are strided copies
/// (CKernels: memcpy of the contiguous runs), split between the cores along the first axis
/// when large; gather picks whole rows.
enum ShapeKernels {
    /// The bytes of any tensor data and its element size (views read in place).
    static func withBytes<R>(_ d: TensorData, _ body: (UnsafeRawPointer, Int) -> R) -> R {
        func raw<T>(_ a: [T]) -> R { a.withUnsafeBytes { body($0.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!, MemoryLayout<T>.stride) } }
        switch d {
        case let .f32(a): return raw(a)
        case let .i8(a): return raw(a)
        case let .i8View(v): return body(UnsafeRawPointer(v.buffer.baseAddress ?? UnsafePointer(bitPattern: 8)!), 1)
        case let .i16(a): return raw(a)
        case let .i16View(v): return body(UnsafeRawPointer(v.buffer.baseAddress ?? UnsafePointer(bitPattern: 8)!), 2)
        case let .i32(a): return raw(a)
        case let .i32View(v): return body(UnsafeRawPointer(v.buffer.baseAddress ?? UnsafePointer(bitPattern: 8)!), 4)
        case let .i64(a): return raw(a)
        case let .i64View(v): return body(UnsafeRawPointer(v.buffer.baseAddress ?? UnsafePointer(bitPattern: 8)!), 8)
        }
    }

    /// One operand's part of a transpose, slice or concat: `shape` elements read from the operand
    /// at `from` with strides `src`, written at `to` with strides `dst` (elements, row-major).
    /// Made once per op (the interpreter's plan), so running one allocates nothing.
    struct StridedCopy {
        var shape: [Int], src: [Int], dst: [Int], from = 0, to = 0

        static func transpose(_ shape: [Int], perm: [Int]) -> [StridedCopy] {
            let st = strides(of: shape), out = perm.map { shape[$0] }
            return [StridedCopy(shape: out, src: perm.map { st[$0] }, dst: strides(of: out))]
        }

        static func slice(_ shape: [Int], begin: [Int], size: [Int]) -> [StridedCopy] {
            let st = strides(of: shape)
            return [StridedCopy(shape: size, src: st, dst: strides(of: size), from: zip(begin, st).reduce(0) { $0 + $1.0 * $1.1 })]
        }

        static func concat(_ shapes: [[Int]], axis: Int) -> [StridedCopy] {
            var out = shapes[0]
            out[axis] = shapes.map { $0[axis] }.reduce(0, +)
            let dst = strides(of: out)
            var at = 0  // where along `axis` the next operand starts
            return shapes.map { shape in
                defer { at += shape[axis] }
                return StridedCopy(shape: shape, src: strides(of: shape), dst: dst, to: at * dst[axis])
            }
        }
    }

    /// Runs the copies (one per operand) into new data of `count` elements.
    static func run(_ copies: [StridedCopy], _ xs: [TensorData], count: Int, into place: KernelOutput) -> TensorData {
        place.make(xs[0].dtype, count: count) { y in
            for (c, x) in zip(copies, xs) {
                withBytes(x) { xp, elem in copy(xp + c.from * elem, y + c.to * elem, elem: elem, shape: c.shape, src: c.src, dst: c.dst) }
            }
        }
    }

    /// Copies `shape` from src to dst with the given element strides; parts of the first axis
    /// go to the cores when there are many elements.
    static func copy(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, elem: Int, shape: [Int], src srcStride: [Int], dst dstStride: [Int]) {
        guard !shape.isEmpty else { dst.copyMemory(from: src, byteCount: elem); return }
        let count = shape.reduce(1, *)
        let parts = count >= Threads.splitElements && shape[0] >= 2 ? min(Threads.count, shape[0]) : 1
        Threads.run(parts) { p in
            let a0 = shape[0] * p / parts, a1 = shape[0] * (p + 1) / parts
            guard a1 > a0 else { return }
            withFirstAxis(shape, a1 - a0) { sh in
                zo_strided_copy(src + a0 * srcStride[0] * elem, dst + a0 * dstStride[0] * elem, Int32(elem), Int32(shape.count),
                                sh, srcStride, dstStride)
            }
        }
    }

    /// Whole rows of `width` elements of x, in the order of `rows` (each checked by the caller).
    static func gather(_ x: TensorData, rows: [Int], width: Int, into place: KernelOutput) -> TensorData {
        withBytes(x) { xp, elem in
            place.make(x.dtype, count: rows.count * width) { y in
                for (i, r) in rows.enumerated() { (y + i * width * elem).copyMemory(from: xp + r * width * elem, byteCount: width * elem) }
            }
        }
    }
}

/// `shape` with its first axis set to `first`, on the stack (a part of an op split between the
/// cores), for a C kernel.
@inline(__always) func withFirstAxis<R>(_ shape: [Int], _ first: Int, _ body: (UnsafePointer<Int>) -> R) -> R {
    withUnsafeTemporaryAllocation(of: Int.self, capacity: max(shape.count, 1)) { sh in
        for (i, d) in shape.enumerated() { sh[i] = i == 0 ? first : d }
        return body(UnsafePointer(sh.baseAddress!))
    }
}
