// swift-tools-version:6.0
import PackageDescription

// Layout follows ../shared/design/ARCHITECTURE.md: IR ← Runtime ← Lowering ← CLIs.
let package = Package(
    name: "zo",
    products: [
        .executable(name: "zoc", targets: ["zoc"]),
        .executable(name: "zorun", targets: ["zorun"]),
        .library(name: "ZOIR", targets: ["ZOIR"]),
        .library(name: "ZORuntime", targets: ["ZORuntime"]),
        .library(name: "ZOLowering", targets: ["ZOLowering"]),
        .library(name: "ZOModelIO", targets: ["ZOModelIO"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        .systemLibrary(name: "CProtobufC", path: "Sources/CProtobufC"),
        // Integer matmul kernels: AVX2 chosen at run time, a portable loop otherwise.
        .target(name: "CKernels", path: "Sources/CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        // protoc-c's output for IR/schema/zo.proto (scripts/gen-schema.sh regenerates it).
        .target(name: "ZOSchemaC", dependencies: ["CProtobufC"], path: "Sources/ZOSchemaC"),
        .target(name: "ZOModelIO", path: "Sources/ZOModelIO"),
        .target(name: "ZOIR", dependencies: ["ZOSchemaC", "CProtobufC"], path: "IR", exclude: ["schema"]),
        .target(name: "ZORuntime", dependencies: ["ZOIR", "ZOModelIO", "CBLAS", "CKernels"], path: "Runtime"),
        .target(name: "ZOLowering", dependencies: ["ZOIR", "ZORuntime", "ZOModelIO"], path: "Lowering"),
        // The edit settings' flags, shared by zoc and zorun.
        .target(name: "ZOEditOptions", dependencies: [
            "ZOLowering", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Sources/ZOEditOptions"),
        .executableTarget(name: "zoc", dependencies: [
            "ZOIR", "ZOLowering", "ZOModelIO", "ZOEditOptions",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Sources/zoc"),
        .executableTarget(name: "zorun", dependencies: [
            "ZOIR", "ZORuntime", "ZOLowering", "ZOModelIO", "ZOEditOptions",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Sources/zorun"),
        .executableTarget(name: "zobench", dependencies: [
            "ZOIR", "ZORuntime", "ZOLowering", "ZOModelIO",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "benchmarks/zobench"),
        .target(name: "ZOTestSupport", dependencies: ["ZOModelIO"], path: "Tests/ZOTestSupport"),
        .testTarget(name: "ZOModelIOTests", dependencies: ["ZOModelIO", "ZOTestSupport"], path: "Tests/ZOModelIOTests"),
        .testTarget(name: "ZOIRTests", dependencies: ["ZOIR", "ZOTestSupport"], path: "Tests/ZOIRTests"),
        .testTarget(name: "ZORuntimeTests", dependencies: ["ZORuntime", "ZOIR", "ZOModelIO", "ZOTestSupport"], path: "Tests/ZORuntimeTests"),
        .testTarget(name: "ZOLoweringTests", dependencies: ["ZOLowering", "ZORuntime", "ZOIR", "ZOModelIO", "ZOTestSupport"], path: "Tests/ZOLoweringTests"),
    ],
    swiftLanguageModes: [.v5]
)
