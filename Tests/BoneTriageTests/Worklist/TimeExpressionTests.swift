import BoneTriage
import Foundation
import Testing

@Suite("--since and --until times")
struct TimeExpressionTests {
    static let zone = TimeZone(identifier: "Europe/Zurich") ?? .gmt
    /// 2026-11-30 10:30 in Zurich (09:30 UTC).
    static let now = Date(timeIntervalSince1970: 1_796_031_000)

    static func local(_ y: Int, _ m: Int, _ d: Int, _ h: Int = 0, _ min: Int = 0) -> Date {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = zone
        return c.date(from: DateComponents(year: y, month: m, day: d, hour: h, minute: min)) ?? .distantPast
    }

    func parse(_ text: String, until: Bool = false) throws -> Date {
        try TimeExpression.parse(text, option: until ? "--until" : "--since", endOfDay: until, now: Self.now, timeZone: Self.zone)
    }

    @Test("today, yesterday, spans back from now, local dates and times without a zone, ISO 8601 with one")
    func accepted() throws {
        #expect(Self.local(2026, 11, 30, 10, 30) == Self.now)
        #expect(try parse("today") == Self.local(2026, 11, 30))
        #expect(try parse("today", until: true) == Self.local(2026, 12, 1))
        #expect(try parse("Yesterday") == Self.local(2026, 11, 29))
        #expect(try parse("yesterday", until: true) == Self.local(2026, 11, 30))
        #expect(try parse("2h") == Self.now.addingTimeInterval(-7200))
        #expect(try parse("90m") == Self.now.addingTimeInterval(-5400))
        #expect(try parse("3d") == Self.now.addingTimeInterval(-3 * 86_400))
        #expect(try parse("2w", until: true) == Self.now.addingTimeInterval(-14 * 86_400))
        #expect(try parse("2026-11-18") == Self.local(2026, 11, 18))
        #expect(try parse("2026-11-18", until: true) == Self.local(2026, 11, 19))
        #expect(try parse("2026-11-30T08:00") == Self.local(2026, 11, 30, 8))
        #expect(try parse("2026-11-30 08:00:30") == Self.local(2026, 11, 30, 8).addingTimeInterval(30))
        #expect(try parse("2026-11-30T08:00:00Z") == Self.local(2026, 11, 30, 9))
        #expect(try parse("2026-07-01T08:00") == Self.local(2026, 7, 1, 8), "summer time in the same zone")
    }

    @Test("anything else is refused with what is accepted", arguments: ["", "tomorrowish", "2h30", "-2h", "3y", "2026-13-01", "30/11/2026", "08:00"])
    func refused(_ text: String) {
        #expect(throws: TimeExpression.Invalid(option: "--since", text: text)) { try parse(text) }
        let message = TimeExpression.Invalid(option: "--since", text: text).description
        #expect(message.contains("--since '\(text)'") && message.contains("yesterday") && message.contains("2026-11-30T08:00"))
    }
}
