import Foundation
import ZOModelIO

/// A prompt with the answer it is scored against (locality, portability).
public struct ScoredPrompt: Equatable, Sendable {
    public var prompt: String
    public var answer: String
    /// The record's grouping, e.g. "Relation_Specificity" or "Reasoning".
    public var category: String
    public init(prompt: String, answer: String, category: String) { self.prompt = prompt; self.answer = answer; self.category = category }
}

/// One fact to edit: `prompt` (which contains `subject`) should be completed by `targetNew`.
public struct EditRequest: Equatable, Sendable {
    public var prompt: String
    public var subject: String
    public var targetNew: String
    public var groundTruth: String?
    public var rephrasePrompts: [String]
    public var locality: [ScoredPrompt]
    public var portability: [ScoredPrompt]
    /// Where it came from, for messages: "FILE record N".
    public var origin: String

    public init(prompt: String, subject: String, targetNew: String, groundTruth: String? = nil, rephrasePrompts: [String] = [],
                locality: [ScoredPrompt] = [], portability: [ScoredPrompt] = [], origin: String = "") {
        self.prompt = prompt; self.subject = subject; self.targetNew = targetNew; self.groundTruth = groundTruth
        self.rephrasePrompts = rephrasePrompts; self.locality = locality; self.portability = portability; self.origin = origin
    }
}

extension EditRequest {
    /// The request in the KnowEdit shape (what `EditRequests.parse` reads back).
    public var json: JSONValue {
        func group(_ items: [ScoredPrompt]) -> JSONValue {
            var cats: [(key: String, value: JSONValue)] = []
            for it in items {
                let entry = JSONValue.object([("prompt", .string(it.prompt)), ("ground_truth", .string(it.answer))])
                if let i = cats.firstIndex(where: { $0.key == it.category }), case let .array(a) = cats[i].value {
                    cats[i].value = .array(a + [entry])
                } else {
                    cats.append((it.category, .array([entry])))
                }
            }
            return .object(cats)
        }
        var o: [(key: String, value: JSONValue)] = [("prompt", .string(prompt)), ("subject", .string(subject)), ("target_new", .string(targetNew))]
        if let g = groundTruth { o.append(("ground_truth", .string(g))) }
        o.append(("rephrase_prompt", .array(rephrasePrompts.map(JSONValue.string))))
        o.append(("locality", group(locality)))
        o.append(("portability", group(portability)))
        return .object(o)
    }
}

public enum EditRequestError: Error, CustomStringConvertible, Equatable {
    case io(path: String, reason: String)
    case syntax(path: String, JSONSyntaxError)
    case field(path: String, record: Int, field: String, reason: String)
    case subjectNotInPrompt(path: String, record: Int, subject: String, prompt: String)

    public var description: String {
        switch self {
        case let .io(p, r): return "\(p): cannot read: \(r)"
        case let .syntax(p, e): return "\(p): malformed JSON at \(e)"
        case let .field(p, r, f, why): return "\(p): record \(r): \(f): \(why)"
        case let .subjectNotInPrompt(p, r, s, pr):
            return "\(p): record \(r): the subject does not occur in the prompt\n  subject: \(s.debugDescription)\n  prompt:  \(pr.debugDescription)"
        }
    }
}

/// Reads edit requests: one JSON object or a list, each in the KnowEdit/EasyEdit shape (prompt,
/// subject, target_new, ground_truth, rephrase_prompt, locality, portability; CounterFact's flat
/// locality_prompt/locality_ground_truth too) or the ZsRE-MEND shape (src, alt, subject, rephrase,
/// loc, loc_ans, portability). Unknown fields are ignored.
public enum EditRequests {
    public static func load(path: String) throws -> [EditRequest] {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch { throw EditRequestError.io(path: path, reason: error.localizedDescription) }
        return try parse([UInt8](data), path: path)
    }

    public static func parse(_ bytes: [UInt8], path: String) throws -> [EditRequest] {
        let json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch let e as JSONSyntaxError { throw EditRequestError.syntax(path: path, e) }
        let records: [JSONValue]
        switch json {
        case let .array(a): records = a
        case .object: records = [json]
        default: throw EditRequestError.field(path: path, record: 0, field: "(top level)", reason: "expected an edit object or a list of them, found \(json.kindName)")
        }
        return try records.enumerated().map { try request($1, record: $0, path: path) }
    }

    static func request(_ r: JSONValue, record: Int, path: String) throws -> EditRequest {
        func bad(_ field: String, _ why: String) -> EditRequestError { .field(path: path, record: record, field: field, reason: why) }
        guard case .object = r else { throw bad("(record)", "expected an object, found \(r.kindName)") }
        /// A required non-empty string under the first of `keys` present.
        func text(_ keys: [String], what: String) throws -> String {
            guard let k = keys.first(where: { r[$0] != nil }) else { throw bad(keys.joined(separator: " or "), "missing (\(what))") }
            guard let s = r[k]!.string else { throw bad(k, "expected a string, found \(r[k]!.kindName)") }
            guard !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw bad(k, "is empty (\(what))") }
            return s
        }
        let mend = r["src"] != nil && r["prompt"] == nil
        let prompt = try text(mend ? ["src"] : ["prompt"], what: "the prompt to edit")
        let subject = try text(["subject"], what: "the subject, a substring of the prompt")
        let target = try text(mend ? ["alt"] : ["target_new"], what: "the new answer")
        guard prompt.contains(subject) else { throw EditRequestError.subjectNotInPrompt(path: path, record: record, subject: subject, prompt: prompt) }

        var req = EditRequest(prompt: prompt, subject: subject, targetNew: target, origin: "\(path) record \(record)")
        req.groundTruth = try firstString(r[mend ? "answers" : "ground_truth"], field: mend ? "answers" : "ground_truth", bad)
        for key in ["rephrase_prompt", "rephrase_prompts", "rephrase"] {
            if let v = r[key] { req.rephrasePrompts += try strings(v, field: key, bad) }
        }
        if mend {
            if let loc = r["loc"]?.string, let ans = try firstString(r["loc_ans"], field: "loc_ans", bad) {
                req.locality.append(ScoredPrompt(prompt: loc, answer: ans, category: "loc"))
            }
            if case let .object(p)? = r["portability"], let q = p.first(where: { $0.key == "New Question" })?.value.string,
               let a = p.first(where: { $0.key == "New Answer" })?.value.string {
                req.portability.append(ScoredPrompt(prompt: q, answer: a, category: "New Question"))
            }
        } else {
            req.locality = try scored(r["locality"], field: "locality", bad)
            if let lp = r["locality_prompt"]?.string, let la = try firstString(r["locality_ground_truth"], field: "locality_ground_truth", bad) {
                req.locality.append(ScoredPrompt(prompt: lp, answer: la, category: "locality"))
            }
            req.portability = try scored(r["portability"], field: "portability", bad)
        }
        return req
    }

    /// A string, or the first string of a (nested) list; nil when absent or null.
    static func firstString(_ v: JSONValue?, field: String, _ bad: (String, String) -> EditRequestError) throws -> String? {
        switch v {
        case nil, .null?: return nil
        case let .string(s)?: return s
        case let .array(a)?:
            for x in a { if let s = try firstString(x, field: field, bad) { return s } }
            return nil
        case let other?: throw bad(field, "expected a string or a list of strings, found \(other.kindName)")
        }
    }

    static func strings(_ v: JSONValue, field: String, _ bad: (String, String) -> EditRequestError) throws -> [String] {
        switch v {
        case .null: return []
        case let .string(s): return [s]
        case let .array(a):
            return try a.enumerated().map { i, x in
                guard let s = x.string else { throw bad("\(field)[\(i)]", "expected a string, found \(x.kindName)") }
                return s
            }
        default: throw bad(field, "expected a string or a list of strings, found \(v.kindName)")
        }
    }

    /// {category: [{prompt, ground_truth}] or {prompt, ground_truth}}, or a bare list of such items.
    static func scored(_ v: JSONValue?, field: String, _ bad: (String, String) -> EditRequestError) throws -> [ScoredPrompt] {
        func items(_ v: JSONValue, category: String, at f: String) throws -> [ScoredPrompt] {
            switch v {
            case let .array(a): return try a.enumerated().flatMap { try items($1, category: category, at: "\(f)[\($0)]") }
            case .object:
                guard let p = v["prompt"] else { throw bad(f, "expected {prompt, ground_truth}") }
                guard let prompt = p.string else { throw bad(f + ".prompt", "expected a string, found \(p.kindName)") }
                guard let answer = try firstString(v["ground_truth"], field: f + ".ground_truth", bad) else {
                    throw bad(f + ".ground_truth", "missing (the answer the prompt is scored against)")
                }
                return [ScoredPrompt(prompt: prompt, answer: answer, category: category)]
            default: throw bad(f, "expected a list or an object, found \(v.kindName)")
            }
        }
        switch v {
        case nil, .null?: return []
        case let .object(groups)? where v?["prompt"] == nil:
            return try groups.flatMap { try items($0.value, category: $0.key, at: "\(field).\($0.key)") }
        case let other?: return try items(other, category: field, at: field)
        }
    }
}
