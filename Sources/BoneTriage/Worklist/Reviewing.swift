import Foundation

extension WorklistStore {
    /// A radiologist's `confirm` or `override` of the studies named by `handles` (IDs, prefixes, UIDs):
    /// every handle is resolved first (an unknown or ambiguous one is an error, and nothing is
    /// recorded), each study is reviewed once, in the order given, and all in one transaction.
    public func review(handles: [String], by reviewer: ReviewerIdentity, action: ReviewAction, label: Finding?, note: String?,
                       at date: Date) throws -> [(study: Study, review: Review)] {
        var studies: [Study] = []
        for handle in handles {
            let study = try study(handle: handle)
            if !studies.contains(where: { $0.studyInstanceUID == study.studyInstanceUID }) { studies.append(study) }
        }
        let reviews = try recordReviews(studyInstanceUIDs: studies.map(\.studyInstanceUID), by: reviewer, action: action, label: label,
                                        note: note, at: date)
        return Array(zip(studies, reviews)).map { (study: $0.0, review: $0.1) }
    }
}
