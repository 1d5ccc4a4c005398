import BoneTriage
import Foundation
import Testing

@Suite("Study assembly")
struct StudyAssemblerTests {
    let t0 = Date(timeIntervalSince1970: 1_000_000)

    @Test("a study is released after its quiet period since the last instance, not before")
    func quietPeriod() {
        var a = StudyAssembler(quietPeriod: 30)
        a.arrived(study: "S", instance: "1", at: t0)
        a.arrived(study: "S", instance: "2", at: t0 + 20)
        #expect(a.release(at: t0 + 49).isEmpty)
        #expect(a.nextDeadline == t0 + 50)
        #expect(a.release(at: t0 + 50) == ["S"])
        #expect(a.pendingStudies == 0 && a.nextDeadline == nil)
    }

    @Test("the announced instance count releases a study early; repeats do not count")
    func expectedCount() {
        var a = StudyAssembler(quietPeriod: 30)
        a.arrived(study: "S", instance: "1", at: t0, expectedInstances: 3)
        a.arrived(study: "S", instance: "1", at: t0 + 1, expectedInstances: 3)
        a.arrived(study: "S", instance: "2", at: t0 + 2)
        #expect(a.release(at: t0 + 3).isEmpty)
        a.arrived(study: "S", instance: "3", at: t0 + 4)
        #expect(a.release(at: t0 + 4) == ["S"])
    }

    @Test("late instances make the study pending again; studies are released oldest first")
    func lateAndOrder() {
        var a = StudyAssembler(quietPeriod: 10)
        a.arrived(study: "B", instance: "b1", at: t0 + 5)
        a.arrived(study: "A", instance: "a1", at: t0)
        #expect(a.release(at: t0 + 20) == ["A", "B"])
        a.arrived(study: "A", instance: "a2", at: t0 + 30)
        #expect(a.release(at: t0 + 35).isEmpty)
        #expect(a.release(at: t0 + 40) == ["A"])
    }
}
