// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "BoneTriage",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "bonetriage", targets: ["bonetriage"]),
        .library(name: "BoneTriage", targets: ["BoneTriage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20"),
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),
        .target(
            name: "BoneTriage",
            dependencies: [
                "COpenBLAS",
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
            ],
            path: "Sources/BoneTriage"
        ),
        .executableTarget(
            name: "bonetriage",
            dependencies: [
                "BoneTriage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/bonetriage"
        ),
        .testTarget(
            name: "BoneTriageTests",
            dependencies: ["BoneTriage", .product(name: "ZIPFoundation", package: "ZIPFoundation")],
            path: "Tests/BoneTriageTests"
        ),
    ],
    swiftLanguageModes: [.v6]
)
