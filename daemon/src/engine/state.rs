//! The state transitions of tasks, batches and approvals, as pure
//! functions: the runner, restart recovery and the API all decide through
//! these, so each rule is written once.

use crate::model::{Approval, ApprovalStatus, Opinion};

/// An approval is decided by the first refusal, by an admin's word, or by
/// agreement (of one approver, or of all with `everyone`).
pub fn approval_status(a: &Approval) -> ApprovalStatus {
    if a.opinions.values().any(|o| *o == Opinion::Refuse) {
        return ApprovalStatus::Refuse;
    }
    // An admin who is not a listed approver decides for all.
    if a.opinions.keys().any(|n| !a.approvers.contains(n)) {
        return ApprovalStatus::Agree;
    }
    let agreed = |n: &String| a.opinions.get(n) == Some(&Opinion::Agree);
    let done = if a.everyone {
        a.approvers.iter().all(agreed)
    } else {
        a.approvers.iter().any(agreed) || !a.opinions.is_empty()
    };
    if done {
        ApprovalStatus::Agree
    } else {
        ApprovalStatus::Pending
    }
}
