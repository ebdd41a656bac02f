/// Free f32 buffers by element count, so a value's storage is reused after its last use.
struct BufferPool {
    private var free: [Int: [[Float]]] = [:]

    /// A buffer of `count` elements with unspecified contents, uniquely owned by the caller.
    mutating func take(_ count: Int) -> [Float] {
        // Pop in place: copying the list out of the dictionary first would duplicate it on every call.
        if let b = free[count]?.popLast() { return b }
        return [Float](repeating: 0, count: count)
    }

    mutating func give(_ b: [Float]) {
        guard !b.isEmpty else { return }
        free[b.count, default: []].append(b)
    }
}
