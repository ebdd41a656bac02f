import Foundation
import XCTest
import ZOModelIO

/// Where tests find the real model and the shared fixtures. The model is fetched by
/// scripts/fetch-model.sh (the test script runs it first); a missing model is a test failure.
public enum TestPaths {
    /// The repository root, derived from this file's location.
    public static let repo: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    public static let shared: URL = repo.deletingLastPathComponent().appendingPathComponent("shared")
    public static let fixtures: URL = shared.appendingPathComponent("fixtures/smollm2")
    public static let data: URL = shared.appendingPathComponent("data")

    public static var model: String { DefaultModel.path }

    public struct Missing: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// The model path, or an error telling how to fetch it.
    public static func requireModel() throws -> String {
        guard FileManager.default.fileExists(atPath: model) else {
            throw Missing(description: "model not found at \(model): run scripts/fetch-model.sh (or set ZO_MODEL)")
        }
        return model
    }

    public static func fixture(_ name: String) throws -> Data {
        try Data(contentsOf: fixtures.appendingPathComponent(name))
    }

    /// A fresh temporary directory, removed when `test` finishes.
    public static func scratch(_ test: XCTestCase) -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("zo-test-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(at: u) }
        return u
    }
}
