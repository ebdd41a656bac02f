import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Resident-memory figures of this process, from /proc/self/status (Linux).
public enum ProcessStats {
    /// Peak resident set size (VmHWM) in bytes, or nil where /proc is unavailable.
    public static func peakRSS() -> Int? { field("VmHWM") }
    /// Resets the peak (VmHWM) to the current RSS and returns freed heap to the system first, so a
    /// following `peakRSS()` measures only what comes after (Linux: /proc/self/clear_refs, 5).
    public static func resetPeakRSS() {
        #if os(Linux)
        _ = glibcMallocTrim(0)
        #endif
        try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
    }

    /// Resident anonymous memory (RssAnon): the heap, not pages mapped from files.
    public static func anonymousRSS() -> Int? { field("RssAnon") }
    /// Resident pages mapped from files (RssFile).
    public static func fileRSS() -> Int? { field("RssFile") }

    /// Current resident set size (VmRSS) in bytes.
    public static func currentRSS() -> Int? { field("VmRSS") }

    static func field(_ name: String) -> Int? {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in s.split(separator: "\n") where line.hasPrefix(name + ":") {
            let kb = line.split(separator: " ").compactMap { Int($0) }.first
            return kb.map { $0 * 1024 }
        }
        return nil
    }
}

#if os(Linux)
/// glibc's malloc_trim, which Swift's Glibc module does not export.
@_silgen_name("malloc_trim") func glibcMallocTrim(_ pad: Int) -> Int32
/// glibc's mallopt (the same).
@_silgen_name("mallopt") func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif

/// Buffers of 4 MiB and more get their own mapping, given back to the system when freed.
/// glibc otherwise raises that threshold each time such a buffer is freed, then serves the
/// interpreter's large per-op arrays from heaps that do not shrink: a one-edit plan run peaked
/// with 155 MiB of heap on 2 threads (301 MiB in all), 210 MiB in all with this. At 128 KiB every
/// step-graph array was a fresh mapping, and page faults took a sixth of `zorun run`'s time (47
/// steps in a minute against 66 at 4 MiB and 73 with glibc's default).
public enum LargeBuffers {
    public static let returnedWhenFreed: Void = {
        #if os(Linux)
        _ = glibcMallopt(-3 /* M_MMAP_THRESHOLD */, 4 << 20)
        #endif
    }()
}

/// Monotonic seconds.
public func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

public func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return .nan }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
