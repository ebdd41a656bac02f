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

/// Buffers of 8 MiB and more get their own mapping, given back to the system when freed, and
/// up to 32 MiB of free heap is kept at its top. glibc otherwise raises the mapping threshold each
/// time such a buffer is freed, then serves the interpreter's large per-op arrays from heaps that
/// do not shrink: a one-edit plan run peaked with 155 MiB of heap on 2 threads (301 MiB in all).
/// At 128 KiB every step-graph array was a fresh mapping, and page faults took a sixth of `zorun
/// run`'s time (47 steps in a minute). At 4 MiB (trim at glibc's 128 KiB) the loss head's arrays
/// of 5–11 MiB were still fresh mappings and the heap's top was given back and faulted in again
/// each step: 66 steps in that minute; with these two settings 90–93, and the 50-edit plan's
/// peak RSS 246.7 MiB against 250.1.
public enum LargeBuffers {
    public static let returnedWhenFreed: Void = {
        #if os(Linux)
        _ = glibcMallopt(-3 /* M_MMAP_THRESHOLD */, 8 << 20)
        _ = glibcMallopt(-1 /* M_TRIM_THRESHOLD */, 32 << 20)
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
