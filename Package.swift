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
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),
        // Debian's libpq (libpq-dev): the PostgreSQL worklist, synchronous as the store protocol is.
        .systemLibrary(name: "CLibPQ", path: "Sources/CLibPQ", pkgConfig: "libpq"),
        // Plain C so the AVX2 micro-kernel can be compiled for a target chosen at run time.
        .target(name: "CKernels", path: "Sources/CKernels"),
        // Process helpers that need _GNU_SOURCE (close_range, PR_SET_PDEATHSIG): the isolated decoder.
        .target(name: "CSystem", path: "Sources/CSystem"),
        .target(name: "CPNG", path: "Sources/CPNG", linkerSettings: [.linkedLibrary("png16")]),
        .target(
            name: "CDCMTK",
            path: "Sources/CDCMTK",
            cxxSettings: [.unsafeFlags(["-I/usr/include/openjpeg-2.5"])],
            linkerSettings: [
                .linkedLibrary("dcmsr"), .linkedLibrary("dcmnet"), .linkedLibrary("dcmjpls"), .linkedLibrary("dcmjpeg"), .linkedLibrary("dcmimage"), .linkedLibrary("dcmimgle"),
                .linkedLibrary("dcmdata"), .linkedLibrary("oflog"), .linkedLibrary("ofstd"), .linkedLibrary("openjp2"),
                // libjpeg-turbo (libjpeg62-turbo-dev) for DCT-scaled decoding of 8-bit JPEG.
                .linkedLibrary("jpeg"),
            ]
        ),
        .target(
            name: "BoneTriage",
            dependencies: [
                "COpenBLAS",
                "CKernels",
                "CDCMTK",
                "CPNG",
                "CSystem",
                "CLibPQ",
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/BoneTriage"
        ),
        .executableTarget(
            name: "bonetriage",
            dependencies: [
                "BoneTriage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/bonetriage",
            plugins: ["BuildStamp"]
        ),
        // `bonetriage --version`'s git commit (tools/build_stamp.sh; none in a build from a tarball).
        .plugin(name: "BuildStamp", capability: .buildTool(), path: "Plugins/BuildStamp"),
        .testTarget(
            name: "BoneTriageTests",
            dependencies: ["BoneTriage", "CKernels", .product(name: "ZIPFoundation", package: "ZIPFoundation"),
                           .product(name: "GRDB", package: "GRDB.swift"), .product(name: "Logging", package: "swift-log")],
            path: "Tests/BoneTriageTests"
        ),
    ],
    swiftLanguageModes: [.v6],
    cxxLanguageStandard: .cxx17
)
