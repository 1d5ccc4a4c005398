import ArgumentParser
import BoneTriage
import Foundation

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
