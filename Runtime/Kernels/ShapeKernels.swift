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

    /// Copies `shape` from src to dst with the given element strides; parts of the first axis
    /// go to the cores when there are many elements.
    static func copy(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, elem: Int, shape: [Int], src srcStride: [Int], dst dstStride: [Int]) {
        guard !shape.isEmpty else { dst.copyMemory(from: src, byteCount: elem); return }
        let count = shape.reduce(1, *)
        let parts = count >= Threads.splitElements && shape[0] >= 2 ? min(Threads.count, shape[0]) : 1
        Threads.run(parts) { p in
            let a0 = shape[0] * p / parts, a1 = shape[0] * (p + 1) / parts
            guard a1 > a0 else { return }
            var sh = shape
            sh[0] = a1 - a0
            zo_strided_copy(src + a0 * srcStride[0] * elem, dst + a0 * dstStride[0] * elem, Int32(elem), Int32(sh.count),
                            sh, srcStride, dstStride)
        }
    }

    static func transpose(_ x: TensorData, _ shape: [Int], perm: [Int], into place: KernelOutput) -> TensorData {
        let st = strides(of: shape), outShape = perm.map { shape[$0] }
        return withBytes(x) { xp, elem in
            place.make(x.dtype, count: x.count) { y in
                copy(xp, y, elem: elem, shape: outShape, src: perm.map { st[$0] }, dst: strides(of: outShape))
            }
        }
    }

    static func slice(_ x: TensorData, _ shape: [Int], begin: [Int], size: [Int], into place: KernelOutput) -> TensorData {
        let st = strides(of: shape), start = zip(begin, st).reduce(0) { $0 + $1.0 * $1.1 }
        return withBytes(x) { xp, elem in
            place.make(x.dtype, count: size.reduce(1, *)) { y in
                copy(xp + start * elem, y, elem: elem, shape: size, src: st, dst: strides(of: size))
            }
        }
    }

    static func concat(_ xs: [TensorData], _ shapes: [[Int]], axis: Int, into place: KernelOutput) -> TensorData {
        var outShape = shapes[0]
        outShape[axis] = shapes.map { $0[axis] }.reduce(0, +)
        let outStrides = strides(of: outShape)
        return place.make(xs[0].dtype, count: outShape.reduce(1, *)) { y in
            var at = 0  // where along `axis` the next operand starts
            for (x, shape) in zip(xs, shapes) {
                withBytes(x) { xp, elem in
                    copy(xp, y + at * outStrides[axis] * elem, elem: elem, shape: shape, src: strides(of: shape), dst: outStrides)
                }
                at += shape[axis]
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
