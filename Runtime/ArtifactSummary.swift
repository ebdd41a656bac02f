import Foundation
import ZOIR
import ZOModelIO

/// What `zoc inspect` shows of an artifact: entry functions, op histogram, bytes per dtype, peak
/// arena and provenance, as text or as a JSON object.
public struct ArtifactSummary {
    public let artifact: Artifact

    public init(_ artifact: Artifact) { self.artifact = artifact }

    /// Segment bytes by storage: IR dtype for module constants, "host <ggml type>" for host tensors.
    public var bytesByDType: [(key: String, bytes: Int)] {
        var b: [String: Int] = [:]
        for t in artifact.manifest.tensors {
            let key = t.host ? "host " + (GGMLType(rawValue: t.ggmlType)?.description ?? "ggml \(t.ggmlType)") : t.type.dtype.rawValue
            b[key, default: 0] += t.length
        }
        return b.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }.map { ($0.key, $0.value) }
    }

    public var json: [String: Any] {
        let m = artifact.manifest, p = m.provenance, c = p.config
        let functions: [[String: Any]] = m.module.functions.map { f in
            var d: [String: Any] = [
                "name": f.name, "ops": f.ops.count,
                "params": f.params.map { ["name": $0.name, "type": $0.type.description] },
                "results": f.results.map { ["name": $0.name, "type": f.type(of: $0.value).description] },
            ]
            if case let .int(peak)? = m.module.attributes["arena.\(f.name)"] { d["peak_arena_bytes"] = peak }
            return d
        }
        let h = OpHistogram(m.module)
        return [
            "file": artifact.path, "file_bytes": artifact.bytes.count, "format_version": Int(ArtifactFormat.version),
            "producer": m.producer,
            "provenance": [
                "file_name": p.fileName, "file_bytes": Int(p.fileSize), "sha256": p.sha256,
                "settings": Dictionary(uniqueKeysWithValues: p.settings.map { ($0.key, jsonValue($0.value)) }),
                "config": ["arch": c.arch, "layers": c.layers, "hidden": c.hidden, "ffn": c.ffn, "heads": c.heads,
                           "kv_heads": c.kvHeads, "head_dim": c.headDim, "vocab": c.vocab, "context_length": c.contextLength,
                           "rope_base": c.ropeBase, "rms_eps": c.rmsEps, "tied_embeddings": c.tiedEmbeddings] as [String: Any],
            ] as [String: Any],
            "tokenizer": ["pre_tokenizer": m.tokenizer.preTokenizer, "tokens": m.tokenizer.tokens.count, "merges": m.tokenizer.merges.count],
            "functions": functions,
            "op_histogram": Dictionary(uniqueKeysWithValues: h.counts.map { ($0.key, $0.count) }),
            "float_ops": h.floatOps,
            "bytes_by_dtype": Dictionary(uniqueKeysWithValues: bytesByDType.map { ($0.key, $0.bytes) }),
            "tensors": m.tensors.count,
        ]
    }

    func jsonValue(_ a: Attribute) -> Any {
        switch a {
        case let .int(v): return v
        case let .float(v): return v
        case let .ints(v): return v
        case let .floats(v): return v
        case let .string(v), let .symbol(v): return v
        case let .bool(v): return v
        }
    }

    public var text: String {
        let m = artifact.manifest, p = m.provenance, c = p.config
        func mib(_ b: Int) -> String { String(format: "%.2f MiB", Double(b) / 1_048_576) }
        var s = "\(artifact.path): zo artifact v\(ArtifactFormat.version), \(mib(artifact.bytes.count)), written by \(m.producer)\n"
        s += "source: \(p.fileName) (\(p.fileSize) bytes, sha256 \(p.sha256))\n"
        s += "model: \(c.arch), \(c.layers) layers, hidden \(c.hidden), ffn \(c.ffn), heads \(c.heads)/\(c.kvHeads), vocab \(c.vocab)\n"
        s += "settings: " + p.settings.sorted { $0.key < $1.key }.map { "\($0.key)=\(jsonValue($0.value))" }.joined(separator: ", ") + "\n"
        s += "tokenizer: \(m.tokenizer.tokens.count) tokens, \(m.tokenizer.merges.count) merges, pre-tokenizer \(m.tokenizer.preTokenizer)\n"
        s += "functions:\n"
        for f in m.module.functions {
            s += "  @\(f.name): \(f.ops.count) ops; (" + f.params.map { "\($0.name): \($0.type)" }.joined(separator: ", ") + ") -> ("
            s += f.results.map { "\($0.name): \(f.type(of: $0.value))" }.joined(separator: ", ") + ")"
            if case let .int(peak)? = m.module.attributes["arena.\(f.name)"] { s += "; peak arena \(peak) bytes (\(mib(peak)))" }
            s += "\n"
        }
        s += "bytes by dtype (\(m.tensors.count) tensors):\n"
        for (k, b) in bytesByDType { s += "  \(k): \(b) (\(mib(b)))\n" }
        let h = OpHistogram(m.module)
        s += "op histogram (ops computing in f32: \(h.floatOps)):\n"
        s += h.description.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n") + "\n"
        return s
    }
}
