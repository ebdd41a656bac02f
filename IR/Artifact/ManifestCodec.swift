import Foundation
import CProtobufC
import ZOSchemaC

/// Converts an ArtifactManifest to and from its protobuf bytes (IR/schema/zo.proto) with the
/// protoc-c code in ZOSchemaC. The only file that touches protobuf-c types.
public enum ManifestCodec {
    public static func encode(_ m: ArtifactManifest) throws -> [UInt8] {
        let a = CArena()
        let msg = a.message(Zo__Manifest.self, zo__manifest__init)
        msg.pointee.format_version = ArtifactFormat.version
        msg.pointee.producer = try a.string(m.producer, "producer")
        msg.pointee.provenance = try provenance(m.provenance, a)
        msg.pointee.tokenizer = try tokenizer(m.tokenizer, a)
        msg.pointee.module = try module(m.module, a)
        (msg.pointee.n_tensors, msg.pointee.tensors) = try a.array(m.tensors) { try tensor($0, a) }
        let size = withUnsafePointer(to: &msg.pointee.base) { protobuf_c_message_get_packed_size($0) }
        var out = [UInt8](repeating: 0, count: size)
        let written = out.withUnsafeMutableBufferPointer { buf in
            withUnsafePointer(to: &msg.pointee.base) { protobuf_c_message_pack($0, buf.baseAddress!) }
        }
        guard written == size else { throw ArtifactError.encode(reason: "protobuf-c packed \(written) of \(size) bytes") }
        return out
    }

    /// A module's functions and attributes on their own (zo.Module bytes; constants are declared
    /// by the artifact that holds them): how an edit plan stores each edit's functions apart.
    public static func encodeModule(_ m: Module) throws -> [UInt8] {
        let a = CArena()
        let msg = try module(m, a)
        let size = zo__module__get_packed_size(msg)
        var out = [UInt8](repeating: 0, count: size)
        let written = out.withUnsafeMutableBufferPointer { zo__module__pack(msg, $0.baseAddress!) }
        guard written == size else { throw ArtifactError.encode(reason: "protobuf-c packed \(written) of \(size) bytes") }
        return out
    }

    /// Decodes `encodeModule`'s bytes; `path` and `field` name them in errors.
    public static func decodeModule(_ bytes: UnsafeRawBufferPointer, path: String, field: String) throws -> Module {
        guard let msg = zo__module__unpack(nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)) else {
            throw ArtifactError.invalidField(path: path, field: field, reason: "the \(bytes.count) bytes are not a valid zo.Module protobuf message")
        }
        defer { zo__module__free_unpacked(msg, nil) }
        return try Decoder(path: path).module(msg.pointee)
    }

    /// Decodes and checks every enum and reference the IR relies on; `path` names the file in errors.
    public static func decode(_ bytes: UnsafeRawBufferPointer, path: String) throws -> (version: UInt32, manifest: ArtifactManifest) {
        let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
        guard let msg = zo__manifest__unpack(nil, bytes.count, base) else {
            throw ArtifactError.manifestDecode(path: path, reason: "the \(bytes.count) bytes are not a valid zo.Manifest protobuf message")
        }
        defer { zo__manifest__free_unpacked(msg, nil) }
        var d = Decoder(path: path)
        let m = msg.pointee
        guard let prov = m.provenance else { throw d.missing("provenance") }
        guard let tok = m.tokenizer else { throw d.missing("tokenizer") }
        guard let mod = m.module else { throw d.missing("module") }
        let tensors = try d.list(m.n_tensors, m.tensors, "tensors") { try d.tensor($0, $1) }
        var module = try d.module(mod.pointee)
        module.constants = tensors.filter { !$0.host }.map { ConstantDecl($0.name, $0.type) }
        let manifest = ArtifactManifest(producer: str(m.producer), provenance: try d.provenance(prov.pointee),
                                        tokenizer: try d.tokenizer(tok.pointee), module: module, tensors: tensors)
        return (m.format_version, manifest)
    }

    // MARK: encoding

    static func provenance(_ p: ArtifactProvenance, _ a: CArena) throws -> UnsafeMutablePointer<Zo__Provenance> {
        let m = a.message(Zo__Provenance.self, zo__provenance__init)
        m.pointee.file_name = try a.string(p.fileName, "provenance.file_name")
        m.pointee.file_size = p.fileSize
        m.pointee.sha256 = try a.string(p.sha256, "provenance.sha256")
        let c = a.message(Zo__ModelConfig.self, zo__model_config__init), s = p.config
        c.pointee.arch = try a.string(s.arch, "provenance.config.arch")
        c.pointee.layers = UInt32(s.layers); c.pointee.hidden = UInt32(s.hidden); c.pointee.ffn = UInt32(s.ffn)
        c.pointee.heads = UInt32(s.heads); c.pointee.kv_heads = UInt32(s.kvHeads); c.pointee.head_dim = UInt32(s.headDim)
        c.pointee.vocab = UInt32(s.vocab); c.pointee.context_length = UInt32(s.contextLength)
        c.pointee.rope_base = s.ropeBase; c.pointee.rms_eps = s.rmsEps
        c.pointee.tied_embeddings = s.tiedEmbeddings ? 1 : 0
        m.pointee.config = c
        (m.pointee.n_settings, m.pointee.settings) = try attributes(p.settings, a)
        return m
    }

    static func tokenizer(_ t: TokenizerSpec, _ a: CArena) throws -> UnsafeMutablePointer<Zo__Tokenizer> {
        let m = a.message(Zo__Tokenizer.self, zo__tokenizer__init)
        m.pointee.model = try a.string(t.model, "tokenizer.model")
        m.pointee.pre_tokenizer = try a.string(t.preTokenizer, "tokenizer.pre_tokenizer")
        (m.pointee.n_tokens, m.pointee.tokens) = try a.strings(t.tokens, "tokenizer.tokens")
        (m.pointee.n_merges, m.pointee.merges) = try a.strings(t.merges, "tokenizer.merges")
        (m.pointee.n_token_types, m.pointee.token_types) = a.scalars(t.tokenTypes.map(Int32.init))
        m.pointee.bos_id = Int64(t.bosID ?? -1)
        m.pointee.eos_id = Int64(t.eosID ?? -1)
        m.pointee.unknown_id = Int64(t.unknownID ?? -1)
        m.pointee.chat_template = try a.string(t.chatTemplate, "tokenizer.chat_template")
        return m
    }

    static func module(_ mod: Module, _ a: CArena) throws -> UnsafeMutablePointer<Zo__Module> {
        let m = a.message(Zo__Module.self, zo__module__init)
        m.pointee.name = try a.string(mod.name, "module.name")
        (m.pointee.n_attributes, m.pointee.attributes) = try attributes(mod.attributes, a)
        (m.pointee.n_functions, m.pointee.functions) = try a.array(mod.functions) { f in
            let fm = a.message(Zo__Function.self, zo__function__init)
            fm.pointee.name = try a.string(f.name, "function.name")
            (fm.pointee.n_params, fm.pointee.params) = try a.array(f.params) { p in
                let pm = a.message(Zo__Param.self, zo__param__init)
                pm.pointee.name = try a.string(p.name, "param.name")
                pm.pointee.type = try type(p.type, a)
                return pm
            }
            (fm.pointee.n_ops, fm.pointee.ops) = try a.array(f.ops) { op in
                let om = a.message(Zo__Op.self, zo__op__init)
                om.pointee.kind = try a.string(op.kind.rawValue, "op.kind")
                (om.pointee.n_operands, om.pointee.operands) = a.scalars(op.operands.map(UInt32.init))
                (om.pointee.n_attributes, om.pointee.attributes) = try attributes(op.attributes, a)
                om.pointee.type = try type(op.type, a)
                om.pointee.loc = try a.string(op.loc ?? "", "op.loc")
                return om
            }
            (fm.pointee.n_results, fm.pointee.results) = try a.array(f.results) { r in
                let rm = a.message(Zo__Result.self, zo__result__init)
                rm.pointee.name = try a.string(r.name, "result.name")
                rm.pointee.value = UInt32(r.value)
                return rm
            }
            return fm
        }
        return m
    }

    static func tensor(_ t: TensorDescriptor, _ a: CArena) throws -> UnsafeMutablePointer<Zo__Tensor> {
        let m = a.message(Zo__Tensor.self, zo__tensor__init)
        m.pointee.name = try a.string(t.name, "tensor.name")
        m.pointee.type = try type(t.type, a)
        m.pointee.offset = UInt64(t.offset)
        m.pointee.length = UInt64(t.length)
        m.pointee.crc32 = t.crc32
        m.pointee.host = t.host ? 1 : 0
        m.pointee.ggml_type = t.ggmlType
        return m
    }

    static let dtypes: [(DType, Zo__DType)] = [(.f32, ZO__DTYPE__F32), (.i8, ZO__DTYPE__I8), (.i16, ZO__DTYPE__I16),
                                                (.i32, ZO__DTYPE__I32), (.i64, ZO__DTYPE__I64)]

    static func type(_ t: TensorType, _ a: CArena) throws -> UnsafeMutablePointer<Zo__TensorType> {
        let m = a.message(Zo__TensorType.self, zo__tensor_type__init)
        m.pointee.dtype = dtypes.first { $0.0 == t.dtype }!.1
        guard t.isStatic else { throw ArtifactError.encode(reason: "type \(t) has a dynamic dimension; artifacts hold static shapes") }
        (m.pointee.n_shape, m.pointee.shape) = a.scalars(t.shape.map(Int64.init))
        switch t.quant {
        case nil: break
        case let .perTensor(scale, zp)?:
            let q = a.message(Zo__PerTensorQuant.self, zo__per_tensor_quant__init)
            q.pointee.scale = scale
            q.pointee.zero_point = Int64(zp)
            m.pointee.quant_case = ZO__TENSOR_TYPE__QUANT_PER_TENSOR
            m.pointee.per_tensor = q
        case let .perChannel(axis, scales)?:
            let q = a.message(Zo__PerChannelQuant.self, zo__per_channel_quant__init)
            q.pointee.axis = Int64(axis)
            q.pointee.scales = try a.string(scales, "quant.scales")
            m.pointee.quant_case = ZO__TENSOR_TYPE__QUANT_PER_CHANNEL
            m.pointee.per_channel = q
        }
        return m
    }

    /// Attributes sorted by name, so equal dictionaries encode to equal bytes.
    static func attributes(_ attrs: [String: Attribute], _ a: CArena) throws -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<Zo__Attribute>?>?) {
        try a.array(attrs.sorted { $0.key < $1.key }) { name, value in
            let m = a.message(Zo__Attribute.self, zo__attribute__init)
            m.pointee.name = try a.string(name, "attribute.name")
            switch value {
            case let .int(v):
                m.pointee.value_case = ZO__ATTRIBUTE__VALUE_INT_VALUE; m.pointee.int_value = Int64(v)
            case let .float(v):
                m.pointee.value_case = ZO__ATTRIBUTE__VALUE_FLOAT_VALUE; m.pointee.float_value = v
            case let .ints(v):
                let l = a.message(Zo__IntList.self, zo__int_list__init)
                (l.pointee.n_values, l.pointee.values) = a.scalars(v.map(Int64.init))
                m.pointee.value_case = ZO__ATTRIBUTE__VALUE_INTS; m.pointee.ints = l
            case let .floats(v):
                let l = a.message(Zo__FloatList.self, zo__float_list__init)
                (l.pointee.n_values, l.pointee.values) = a.scalars(v)
                m.pointee.value_case = ZO__ATTRIBUTE__VALUE_FLOATS; m.pointee.floats = l
            case let .string(v):
                m.pointee.value_case = ZO__ATTRIBUTE__VALUE_STRING_VALUE; m.pointee.string_value = try a.string(v, "attribute \(name)")
            case let .bool(v):
                m.pointee.value_case = ZO__ATTRIBUTE__VALUE_BOOL_VALUE; m.pointee.bool_value = v ? 1 : 0
            case let .symbol(v):
                m.pointee.value_case = ZO__ATTRIBUTE__VALUE_SYMBOL; m.pointee.symbol = try a.string(v, "attribute \(name)")
            }
            return m
        }
    }

    // MARK: decoding

    /// Reads unpacked messages into Swift values, naming the field of every inconsistency.
    struct Decoder {
        let path: String

        func missing(_ field: String) -> ArtifactError { .invalidField(path: path, field: field, reason: "missing") }
        func bad(_ field: String, _ reason: String) -> ArtifactError { .invalidField(path: path, field: field, reason: reason) }

        func list<M, T>(_ n: Int, _ items: UnsafeMutablePointer<UnsafeMutablePointer<M>?>?, _ field: String,
                        _ f: (M, String) throws -> T) throws -> [T] {
            guard n > 0 else { return [] }
            guard let items = items else { throw missing(field) }
            return try (0..<n).map { i in
                guard let p = items[i] else { throw missing("\(field)[\(i)]") }
                return try f(p.pointee, "\(field)[\(i)]")
            }
        }

        func int(_ v: Int64, _ field: String, _ range: ClosedRange<Int64> = 0...Int64(Int32.max)) throws -> Int {
            guard range.contains(v) else { throw bad(field, "\(v) is outside \(range.lowerBound)...\(range.upperBound)") }
            return Int(v)
        }

        func type(_ p: UnsafeMutablePointer<Zo__TensorType>?, _ field: String) throws -> TensorType {
            guard let t = p?.pointee else { throw missing(field) }
            guard let dt = ManifestCodec.dtypes.first(where: { $0.1 == t.dtype })?.0 else {
                throw bad(field + ".dtype", "unknown dtype \(t.dtype.rawValue)")
            }
            let shape = try (0..<t.n_shape).map { try int(t.shape[$0], "\(field).shape[\($0)]", 0...(1 << 40)) }
            guard shape.reduce(1, { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }) <= 1 << 40 else {
                throw bad(field + ".shape", "\(shape) has too many elements")
            }
            var q: Quantization?
            switch t.quant_case {
            case ZO__TENSOR_TYPE__QUANT__NOT_SET: q = nil
            case ZO__TENSOR_TYPE__QUANT_PER_TENSOR:
                guard let pt = t.per_tensor?.pointee else { throw missing(field + ".per_tensor") }
                guard pt.scale.isFinite, pt.scale > 0 else { throw bad(field + ".per_tensor.scale", "\(pt.scale) is not a positive finite scale") }
                q = .perTensor(scale: pt.scale, zeroPoint: try int(pt.zero_point, field + ".per_tensor.zero_point", -32768...32767))
            case ZO__TENSOR_TYPE__QUANT_PER_CHANNEL:
                guard let pc = t.per_channel?.pointee else { throw missing(field + ".per_channel") }
                q = .perChannel(axis: try int(pc.axis, field + ".per_channel.axis", 0...7), scales: str(pc.scales))
            default: throw bad(field + ".quant", "unknown quantization case \(t.quant_case.rawValue)")
            }
            return TensorType(dt, shape, quant: q)
        }

        func attributes(_ n: Int, _ items: UnsafeMutablePointer<UnsafeMutablePointer<Zo__Attribute>?>?, _ field: String) throws -> [String: Attribute] {
            var out: [String: Attribute] = [:]
            for (name, value) in try list(n, items, field, { m, f in (str(m.name), try attribute(m, f)) }) {
                guard out[name] == nil else { throw bad(field, "attribute '\(name)' appears twice") }
                out[name] = value
            }
            return out
        }

        func attribute(_ m: Zo__Attribute, _ field: String) throws -> Attribute {
            switch m.value_case {
            case ZO__ATTRIBUTE__VALUE_INT_VALUE: return .int(Int(m.int_value))
            case ZO__ATTRIBUTE__VALUE_FLOAT_VALUE: return .float(m.float_value)
            case ZO__ATTRIBUTE__VALUE_INTS:
                guard let l = m.ints?.pointee else { throw missing(field + ".ints") }
                return .ints((0..<l.n_values).map { Int(l.values[$0]) })
            case ZO__ATTRIBUTE__VALUE_FLOATS:
                guard let l = m.floats?.pointee else { throw missing(field + ".floats") }
                return .floats((0..<l.n_values).map { l.values[$0] })
            case ZO__ATTRIBUTE__VALUE_STRING_VALUE: return .string(str(m.string_value))
            case ZO__ATTRIBUTE__VALUE_BOOL_VALUE: return .bool(m.bool_value != 0)
            case ZO__ATTRIBUTE__VALUE_SYMBOL: return .symbol(str(m.symbol))
            default: throw bad(field, "attribute '\(str(m.name))' has no value")
            }
        }

        func module(_ m: Zo__Module) throws -> Module {
            let functions = try list(m.n_functions, m.functions, "module.functions") { f, field -> Function in
                let params = try list(f.n_params, f.params, field + ".params") { p, pf in Param(str(p.name), try type(p.type, pf + ".type")) }
                let ops = try list(f.n_ops, f.ops, field + ".ops") { o, of -> Op in
                    guard let kind = OpKind(rawValue: str(o.kind)) else { throw bad(of + ".kind", "unknown op '\(str(o.kind))'") }
                    let operands = (0..<o.n_operands).map { Int(o.operands[$0]) }
                    let loc = str(o.loc)
                    return Op(kind, operands, try attributes(o.n_attributes, o.attributes, of + ".attributes"),
                              type: try type(o.type, of + ".type"), loc: loc.isEmpty ? nil : loc)
                }
                let results = try list(f.n_results, f.results, field + ".results") { r, _ in (name: str(r.name), value: Int(r.value)) }
                return Function(name: str(f.name), params: params, ops: ops, results: results)
            }
            return Module(name: str(m.name), attributes: try attributes(m.n_attributes, m.attributes, "module.attributes"), functions: functions)
        }

        func tensor(_ t: Zo__Tensor, _ field: String) throws -> TensorDescriptor {
            let name = str(t.name)
            guard !name.isEmpty else { throw missing(field + ".name") }
            guard t.offset <= UInt64(Int.max), t.length <= UInt64(Int.max) else { throw bad(field, "offset or length out of range") }
            return TensorDescriptor(name: name, type: try type(t.type, field + ".type"), offset: Int(t.offset), length: Int(t.length),
                                    crc32: t.crc32, host: t.host != 0, ggmlType: t.ggml_type)
        }

        func provenance(_ p: Zo__Provenance) throws -> ArtifactProvenance {
            guard let c = p.config?.pointee else { throw missing("provenance.config") }
            let cfg = SourceModelConfig(arch: str(c.arch), layers: Int(c.layers), hidden: Int(c.hidden), ffn: Int(c.ffn),
                                        heads: Int(c.heads), kvHeads: Int(c.kv_heads), headDim: Int(c.head_dim), vocab: Int(c.vocab),
                                        contextLength: Int(c.context_length), ropeBase: c.rope_base, rmsEps: c.rms_eps,
                                        tiedEmbeddings: c.tied_embeddings != 0)
            return ArtifactProvenance(fileName: str(p.file_name), fileSize: p.file_size, sha256: str(p.sha256), config: cfg,
                                      settings: try attributes(p.n_settings, p.settings, "provenance.settings"))
        }

        func tokenizer(_ t: Zo__Tokenizer) throws -> TokenizerSpec {
            func strings(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ field: String) throws -> [String] {
                guard n > 0 else { return [] }
                guard let p = p else { throw missing(field) }
                return (0..<n).map { str(p[$0]) }
            }
            func id(_ v: Int64, _ field: String) throws -> Int? { v < 0 ? nil : try int(v, field) }
            return TokenizerSpec(model: str(t.model), preTokenizer: str(t.pre_tokenizer),
                                 tokens: try strings(t.n_tokens, t.tokens, "tokenizer.tokens"),
                                 tokenTypes: (0..<t.n_token_types).map { Int(t.token_types[$0]) },
                                 merges: try strings(t.n_merges, t.merges, "tokenizer.merges"),
                                 bosID: try id(t.bos_id, "tokenizer.bos_id"), eosID: try id(t.eos_id, "tokenizer.eos_id"),
                                 unknownID: try id(t.unknown_id, "tokenizer.unknown_id"), chatTemplate: str(t.chat_template))
        }
    }
}

/// A C string from protobuf-c (NULL reads as empty).
func str(_ p: UnsafePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "" }
func str(_ p: UnsafeMutablePointer<CChar>?) -> String { str(UnsafePointer(p)) }

/// malloc'd memory for one message tree being packed; freed with the arena.
final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    deinit { for b in blocks { free(b) } }

    func raw(_ bytes: Int) -> UnsafeMutableRawPointer {
        let p = malloc(max(bytes, 1))!
        blocks.append(p)
        return p
    }

    func message<M>(_: M.Type, _ initialize: (UnsafeMutablePointer<M>?) -> Void) -> UnsafeMutablePointer<M> {
        let p = raw(MemoryLayout<M>.stride).bindMemory(to: M.self, capacity: 1)
        initialize(p)
        return p
    }

    func string(_ s: String, _ field: String) throws -> UnsafeMutablePointer<CChar> {
        let u = Array(s.utf8)
        guard !u.contains(0) else { throw ArtifactError.encode(reason: "\(field) contains a NUL byte: \(s.debugDescription)") }
        let p = raw(u.count + 1).bindMemory(to: CChar.self, capacity: u.count + 1)
        u.withUnsafeBufferPointer { UnsafeMutableRawPointer(p).copyMemory(from: $0.baseAddress!, byteCount: u.count) }
        p[u.count] = 0
        return p
    }

    func strings(_ ss: [String], _ field: String) throws -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) {
        let p = raw(ss.count * MemoryLayout<UnsafeMutablePointer<CChar>?>.stride).bindMemory(to: UnsafeMutablePointer<CChar>?.self, capacity: ss.count)
        for (i, s) in ss.enumerated() { p[i] = try string(s, "\(field)[\(i)]") }
        return (ss.count, p)
    }

    func scalars<T>(_ v: [T]) -> (Int, UnsafeMutablePointer<T>?) {
        let p = raw(v.count * MemoryLayout<T>.stride).bindMemory(to: T.self, capacity: v.count)
        for (i, x) in v.enumerated() { p[i] = x }
        return (v.count, p)
    }

    func array<T, M>(_ items: [T], _ make: (T) throws -> UnsafeMutablePointer<M>) throws -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<M>?>?) {
        let p = raw(items.count * MemoryLayout<UnsafeMutablePointer<M>?>.stride).bindMemory(to: UnsafeMutablePointer<M>?.self, capacity: items.count)
        for (i, x) in items.enumerated() { p[i] = try make(x) }
        return (items.count, p)
    }
}
