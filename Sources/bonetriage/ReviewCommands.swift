import ArgumentParser
import BoneTriage
import Foundation

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "One study: its images with their probabilities, the model, and the review history.",
        discussion: "Fits 80 columns. Each image is named as the PACS or the drop folder knows it: its file name, or its series and instance numbers, with its view and laterality when the file has them.")

    @OptionGroup var location: WorklistLocationOptions
    @Argument(help: "The study: its ID from `list` (or a unique prefix), or its Study Instance UID.")
    var study: String
    @Option(help: "text or json.")
    var format: DetailFormat = .text
    @Option(name: .customLong("images"), help: ArgumentHelp(
        "Write per image a PNG of the radiograph with its heatmap and the disclaimer band, and one of the plain rendering, into this folder.",
        discussion: "Files are named after the image (drop-folder file name, or series and instance numbers): NAME-overlay.png and NAME-plain.png. An image whose file is gone, or without a heatmap yet, is said so.",
        valueName: "dir"))
    var imagesFolder: String?

    enum DetailFormat: String, ExpressibleByArgument { case text, json }

    func run() throws {
        let worklist = try location.open()
        let s = try worklist.study(handle: study)
        let images = try worklist.images(ofStudy: s.studyInstanceUID)
        let reviews = try worklist.reviews(ofStudy: s.studyInstanceUID)
        let results = try worklist.resultObjects(ofStudy: s.studyInstanceUID)
        let inProgress = try worklist.triageInProgress(ofStudy: s.studyInstanceUID)
        switch format {
        case .text:
            print(WorklistPresentation.detail(s, images: images, reviews: reviews, inProgress: inProgress))
            print(OutboxListing.detailLines(s, images: images, objects: results).joined(separator: "\n"))
        case .json:
            var heatmaps: [String: StoredHeatmap] = [:]
            for image in images { heatmaps[image.sopInstanceUID] = try worklist.heatmap(sopInstanceUID: image.sopInstanceUID) }
            var object = WorklistPresentation.detailJSONObject(s, images: images, reviews: reviews, heatmaps: heatmaps, inProgress: inProgress)
            object["results"] = OutboxListing.detailJSON(results)
            print(WorklistPresentation.json(object))
        }
        if let folder = imagesFolder {
            let lines = try StudyPictures.write(study: s, images: images, worklist: worklist, to: folder)
            // With JSON on stdout, what was written goes to stderr.
            let text = (format == .text ? "\nPictures\n" : "") + lines.map { "  " + $0 }.joined(separator: "\n") + "\n"
            if format == .text { print(text, terminator: "") } else { FileHandle.standardError.write(Data(text.utf8)) }
        }
    }
}

struct ReviewOptions: ParsableArguments {
    @Option(help: "A note kept with the review in the audit trail.")
    var note: String?
    @Option(help: ArgumentHelp("A name recorded beside your login, e.g. the radiologist you review for.",
                               discussion: "The reviewer recorded is always the login of the user running the command (its user ID, not $USER); this name never replaces it.",
                               valueName: "name"))
    var reviewer: String?

    /// Who records the review: the login, and the stated name beside it.
    func identity() throws -> ReviewerIdentity {
        do { return try ReviewerIdentity.current(statedName: reviewer) } catch let error as ReviewerNameError {
            throw ValidationError(error.description)
        }
    }

    /// Opens the worklist to record reviews (an error names the group to join when this user may not
    /// write it), resolves every study, then records them all in one transaction.
    func record(_ location: WorklistLocationOptions, studies: [String], action: ReviewAction, label: Finding?) throws -> [(study: Study, review: Review)] {
        let worklist = try location.open(role: .recordingReviews)
        return try worklist.review(handles: studies, by: try identity(), action: action, label: label, note: note, at: Date())
    }
}

struct ConfirmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "confirm", abstract: "Agree with the model's verdict on one or more studies (recorded in the audit trail).",
        discussion: "All studies are found first (an unknown or ambiguous ID records nothing), then recorded together. A study already reviewed is not confirmed again (exit 1): use override to change its label.")

    @OptionGroup var location: WorklistLocationOptions
    @Argument(help: "The studies: IDs from `list` (or unique prefixes), or Study Instance UIDs.")
    var studies: [String]
    @OptionGroup var review: ReviewOptions

    func run() throws {
        for (s, r) in try review.record(location, studies: studies, action: .confirm, label: nil) {
            print("confirmed \(s.shortID.prefix(8)) as \(r.label.rawValue) (reviewer \(r.attribution))")
        }
    }
}

struct OverrideCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "override", abstract: "Record your own label for one or more studies, whatever the model said (audited).",
        discussion: "All studies are found first (an unknown or ambiguous ID records nothing), then recorded together. A study that already has this label is left as it is (exit 1).")

    @OptionGroup var location: WorklistLocationOptions
    @Argument(help: "The studies: IDs from `list` (or unique prefixes), or Study Instance UIDs.")
    var studies: [String]
    @Option(help: "Your label: normal or abnormal.")
    var label: Finding
    @OptionGroup var review: ReviewOptions

    func run() throws {
        for (s, r) in try review.record(location, studies: studies, action: .override, label: label) {
            print("overrode \(s.shortID.prefix(8)): model \(r.fromVerdict?.rawValue ?? "had no verdict"), label \(r.label.rawValue) (reviewer \(r.attribution))")
        }
    }
}
