import ZOIR
#if canImport(Glibc)
import Glibc
#endif

/// One block of memory for the values of the function an interpreter is running, laid out by
/// `ArenaPlan` (memory-plan): it grows to the largest plan run so far, never shrinks, and every
/// run reuses it, so a step loop allocates no tensor memory. Values in it are views (owner: the
/// arena) that the interpreter copies out before returning. A run of a function with a smaller
/// plan gives the pages past its end back to the system (they come back zeroed when next
/// written): between an edit's steps the prefix cache refresh and the probe need less, and
/// the memory the step's output head held is not kept resident through them.
final class Arena {
    private(set) var base: UnsafeMutableRawPointer?
    private(set) var capacity = 0
    /// Bytes the last run may have written.
    private var used = 0

    /// The start of at least `bytes` bytes (contents unspecified).
    func reserve(_ bytes: Int) -> UnsafeMutableRawPointer {
        if bytes > capacity || base == nil {
            base?.deallocate()
            base = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: ArenaPlan.alignment)
            capacity = bytes
        } else if bytes < used {
            dropPages(from: bytes)
        }
        used = bytes
        return base!
    }

    /// Gives the whole pages from `offset` on back to the system, keeping the allocation.
    func dropPages(from offset: Int = 0) {
        guard let base else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: base) + offset + page - 1) / page * page, end = (Int(bitPattern: base) + capacity) / page * page
        if end > start { _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, Int32(MADV_DONTNEED)) }
        used = min(used, offset)
    }

    /// Whether `d` is a view into this arena.
    func holds(_ d: TensorData) -> Bool {
        switch d {
        case let .i8View(v): return v.owner === self
        case let .i16View(v): return v.owner === self
        case let .i32View(v): return v.owner === self
        case let .i64View(v): return v.owner === self
        default: return false
        }
    }

    deinit { base?.deallocate() }
}

/// Where a kernel writes its result: a new array, or the op's place in the arena.
struct KernelOutput {
    let place: UnsafeMutableRawPointer?
    let arena: Arena?

    static let array = KernelOutput(place: nil, arena: nil)

    /// Data of `dtype`, `count` elements, every element written by `fill`. In the arena for the
    /// integer types; f32 (float functions never run in an arena) always in a new array.
    func make(_ dtype: DType, count: Int, _ fill: (UnsafeMutableRawPointer) -> Void) -> TensorData {
        if let place, let arena, dtype != .f32 {
            if count > 0 { fill(place) }
            func view<T: FixedWidthInteger>(_: T.Type) -> MappedView<T> {
                MappedView(UnsafeBufferPointer(start: place.bindMemory(to: T.self, capacity: count), count: count), owner: arena)
            }
            switch dtype {
            case .i8: return .i8View(view(Int8.self))
            case .i16: return .i16View(view(Int16.self))
            case .i32: return .i32View(view(Int32.self))
            default: return .i64View(view(Int64.self))
            }
        }
        func array<T>(_: T.Type) -> [T] {
            [T](unsafeUninitializedCapacity: count) { buf, n in
                if count > 0 { fill(UnsafeMutableRawPointer(buf.baseAddress!)) }
                n = count
            }
        }
        switch dtype {
        case .f32: return .f32(array(Float.self))
        case .i8: return .i8(array(Int8.self))
        case .i16: return .i16(array(Int16.self))
        case .i32: return .i32(array(Int32.self))
        case .i64: return .i64(array(Int64.self))
        }
    }
}
