import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes `data` to `path` through a temporary file in the same folder and a rename, so a
/// crash never leaves a half-written output. Refuses to overwrite any of `inputs`.
public func writeAtomically(_ data: Data, to path: String, inputs: [String] = []) throws {
    try writeAtomically(parts: [data], to: path, inputs: inputs)
}

/// The same for a file written in pieces (e.g. tensors used in place from a mapped input).
public func writeAtomically(parts: [Data], to path: String, inputs: [String] = []) throws {
    let target = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath()
    for input in inputs where URL(fileURLWithPath: input).standardizedFileURL.resolvingSymlinksInPath() == target {
        throw ModelIOError.io(path: path, reason: "refusing to overwrite an input file")
    }
    let dir = target.deletingLastPathComponent()
    let tmp = dir.appendingPathComponent(".\(target.lastPathComponent).tmp-\(getpid())")
    do {
        guard FileManager.default.createFile(atPath: tmp.path, contents: nil) else {
            throw ModelIOError.io(path: tmp.path, reason: "cannot create")
        }
        let h = try FileHandle(forWritingTo: tmp)
        defer { try? h.close() }
        for p in parts { try h.write(contentsOf: p) }
        try h.synchronize()
    } catch {
        try? FileManager.default.removeItem(at: tmp)
        throw ModelIOError.io(path: path, reason: "cannot write: \(error.localizedDescription)")
    }
    // rename(2) replaces an existing file atomically: readers see the old file or the new one, never a part.
    guard rename(tmp.path, target.path) == 0 else {
        let reason = String(cString: strerror(errno))
        try? FileManager.default.removeItem(at: tmp)
        throw ModelIOError.io(path: path, reason: "cannot write: \(reason)")
    }
}
