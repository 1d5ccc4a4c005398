import ArgumentParser
import BoneTriage
import Foundation

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "The worklist: flagged studies first, then by priority and arrival.",
        discussion: "A '!' marks a flagged study (abnormal, not yet reviewed). IDs are accepted as prefixes by show, confirm and override.")

    @OptionGroup var location: WorklistLocationOptions
    @OptionGroup var filters: WorklistFilterOptions
    @Option(help: "table (fits 80 columns), json or csv.")
    var format: OutputFormat = .table

    func run() throws {
        let studies = try location.open().studies(matching: try filters.filter())
        switch format {
        case .table: print(WorklistPresentation.table(studies, colour: Terminal.wantsColour))
        case .json: print(WorklistPresentation.json(studies.map(WorklistPresentation.jsonObject)))
        case .csv: FileHandle.standardOutput.write(Data(WorklistPresentation.csv(studies).utf8))
        }
    }
}

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "One study: its images with their probabilities, the model, and the review history.")

    @OptionGroup var location: WorklistLocationOptions
    @Argument(help: "The study: its ID from `list` (or a unique prefix), or its Study Instance UID.")
    var study: String
    @Option(help: "text or json.")
    var format: DetailFormat = .text

    enum DetailFormat: String, ExpressibleByArgument { case text, json }

    func run() throws {
        let worklist = try location.open()
        let s = try worklist.study(handle: study)
        let images = try worklist.images(ofStudy: s.studyInstanceUID)
        let reviews = try worklist.reviews(ofStudy: s.studyInstanceUID)
        switch format {
        case .text: print(WorklistPresentation.detail(s, images: images, reviews: reviews))
        case .json:
            print(WorklistPresentation.json([
                "study": WorklistPresentation.jsonObject(s),
                "images": images.map(WorklistPresentation.jsonObject),
                "reviews": reviews.map(WorklistPresentation.jsonObject),
            ] as [String: Any]))
        }
    }
}

struct ReviewOptions: ParsableArguments {
    @Option(help: "A note kept with the review in the audit trail.")
    var note: String?
    @Option(help: "Who reviews (default: the login name).")
    var reviewer: String?

    var who: String { reviewer ?? Terminal.loginName() }
}

struct ConfirmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "confirm", abstract: "Agree with the model's verdict on a study (recorded in the audit trail).")

    @OptionGroup var location: WorklistLocationOptions
    @Argument(help: "The study ID from `list` (or a unique prefix), or its Study Instance UID.")
    var study: String
    @OptionGroup var review: ReviewOptions

    func run() throws {
        let worklist = try location.open()
        let r = try worklist.recordReview(studyHandle: study, reviewer: review.who, action: .confirm, label: nil, note: review.note, at: Date())
        let s = try worklist.study(handle: study)
        print("confirmed \(s.shortID.prefix(8)) as \(r.label.rawValue) (reviewer \(r.reviewer))")
    }
}

struct OverrideCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "override", abstract: "Record your own label for a study, whatever the model said (audited).")

    @OptionGroup var location: WorklistLocationOptions
    @Argument(help: "The study ID from `list` (or a unique prefix), or its Study Instance UID.")
    var study: String
    @Option(help: "Your label: normal or abnormal.")
    var label: Finding
    @OptionGroup var review: ReviewOptions

    func run() throws {
        let worklist = try location.open()
        let r = try worklist.recordReview(studyHandle: study, reviewer: review.who, action: .override, label: label, note: review.note, at: Date())
        let s = try worklist.study(handle: study)
        print("overrode \(s.shortID.prefix(8)): model \(r.fromVerdict?.rawValue ?? "had no verdict"), label \(r.label.rawValue) (reviewer \(r.reviewer))")
    }
}

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write the worklist as RFC 4180 CSV (or MURA's path,label form with --mura).",
        discussion: "Cells that would start with =, +, -, @, tab or carriage return get a leading apostrophe so spreadsheets never run them.")

    @OptionGroup var location: WorklistLocationOptions
    @OptionGroup var filters: WorklistFilterOptions
    @Option(help: "The file to write, or - for standard output.")
    var out: String
    @Flag(help: "MURA's path,label form (1 = abnormal) from confirmed and overridden studies.")
    var mura = false

    func run() throws {
        let worklist = try location.open()
        let studies = try worklist.studies(matching: try filters.filter())
        let text: String
        if mura {
            text = WorklistPresentation.mura(try studies.map { ($0, try worklist.images(ofStudy: $0.studyInstanceUID)) })
        } else {
            text = WorklistPresentation.csv(studies)
        }
        if out == "-" {
            FileHandle.standardOutput.write(Data(text.utf8))
            return
        }
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: out), options: .atomic)
        } catch {
            throw ExportError(path: out, reason: (error as NSError).localizedDescription)
        }
        FileHandle.standardError.write(Data("wrote \(studies.count) studies to \(out)\n".utf8))
    }
}

struct ExportError: Error, CustomStringConvertible {
    let path: String
    let reason: String
    var description: String { "cannot write \(path): \(reason); choose a folder you can write to, or --out - for standard output" }
}
