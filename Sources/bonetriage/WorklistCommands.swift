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
