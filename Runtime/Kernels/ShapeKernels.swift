import ZOIR

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
        case .i8View: return owned.mapElements(f)
        }
    }
}

/// Static shape ops, for every element type.
enum ShapeKernels {
    struct Transpose: ElementTransform {
        let shape: [Int], perm: [Int]
        func callAsFunction<T>(_ x: [T]) -> [T] {
            let r = shape.count
            guard r > 0, !x.isEmpty else { return x }
            let inStrides = strides(of: shape)
            let outShape = perm.map { shape[$0] }
            let step = perm.map { inStrides[$0] }
            var out = [T]()
            out.reserveCapacity(x.count)
            var idx = [Int](repeating: 0, count: r)
            var src = 0
            let last = r - 1, inner = outShape[last], innerStep = step[last]
            x.withUnsafeBufferPointer { xp in
                while true {
                    var s = src
                    for _ in 0..<inner { out.append(xp[s]); s += innerStep }
                    // Advance the output multi-index over all but the last dim (odometer order).
                    var d = last - 1
                    while d >= 0 {
                        idx[d] += 1
                        src += step[d]
                        if idx[d] < outShape[d] { break }
                        src -= step[d] * idx[d]
                        idx[d] = 0
                        d -= 1
                    }
                    if d < 0 { break }
                }
            }
            return out
        }
    }

    /// Copies contiguous runs: the trailing axes taken whole join the innermost run, and an
    /// odometer walks the outer axes.
    struct Slice: ElementTransform {
        let shape: [Int], begin: [Int], size: [Int]
        func callAsFunction<T>(_ x: [T]) -> [T] {
            let count = size.reduce(1, *)
            guard count > 0 else { return [] }
            let st = strides(of: shape)
            // The innermost axis not taken whole ends the contiguous run.
            var d = shape.count - 1
            while d > 0 && size[d] == shape[d] { d -= 1 }
            let run = size[d] * st[d]
            let outer = count / run
            var idx = [Int](repeating: 0, count: d)
            var src = zip(begin, st).reduce(0) { $0 + $1.0 * $1.1 }
            return [T](unsafeUninitializedCapacity: count) { buf, n in
                x.withUnsafeBufferPointer { xp in
                    for o in 0..<outer {
                        (buf.baseAddress! + o * run).initialize(from: xp.baseAddress! + src, count: run)
                        var a = d - 1
                        while a >= 0 {
                            idx[a] += 1; src += st[a]
                            if idx[a] < size[a] { break }
                            src -= st[a] * size[a]; idx[a] = 0
                            a -= 1
                        }
                    }
                }
                n = count
            }
        }
    }

    struct Gather: ElementTransform {
        let rows: [Int], width: Int
        func callAsFunction<T>(_ x: [T]) -> [T] { rows.flatMap { x[($0 * width)..<(($0 + 1) * width)] } }
    }

    static func transpose(_ x: TensorData, _ shape: [Int], perm: [Int]) -> TensorData {
        x.mapElements(Transpose(shape: shape, perm: perm))
    }

    static func slice(_ x: TensorData, _ shape: [Int], begin: [Int], size: [Int]) -> TensorData {
        x.mapElements(Slice(shape: shape, begin: begin, size: size))
    }

    static func concat(_ xs: [TensorData], _ shapes: [[Int]], axis: Int) -> TensorData {
        // For each outer index, each operand's contiguous chunk in turn.
        let outer = shapes[0][..<axis].reduce(1, *)
        let chunks = shapes.map { $0[axis...].reduce(1, *) }
        let total = chunks.reduce(0, +) * outer
        func join<T>(_ arrays: [[T]]) -> [T] {
            [T](unsafeUninitializedCapacity: total) { buf, n in
                var start = 0
                for (a, c) in zip(arrays, chunks) {
                    if c > 0 { a.withUnsafeBufferPointer { ap in
                        for o in 0..<outer { (buf.baseAddress! + o * (total / max(outer, 1)) + start).initialize(from: ap.baseAddress! + o * c, count: c) }
                    } }
                    start += c
                }
                n = total
            }
        }
        func all<T>(_ get: (TensorData) -> [T]?) -> [[T]] { xs.map { get($0.owned) ?? [] } }
        switch xs[0].owned {
        case .f32: return .f32(join(all { if case let .f32(a) = $0 { a } else { nil } }))
        case .i8: return .i8(join(all { if case let .i8(a) = $0 { a } else { nil } }))
        case .i16: return .i16(join(all { if case let .i16(a) = $0 { a } else { nil } }))
        case .i32: return .i32(join(all { if case let .i32(a) = $0 { a } else { nil } }))
        case .i64: return .i64(join(all { if case let .i64(a) = $0 { a } else { nil } }))
        case .i8View: return xs[0]  // never: `owned` has no views
        }
    }
}
