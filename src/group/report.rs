//! What a member tells of its group's round (SPEC.md §11): the status's
//! `group` object, as types. No network code here: the runner reads it
//! from the group helper (`quiesce-group`), which fills it.

use serde::{Deserialize, Serialize};

/// What the status says of the round (the `group` object).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupReport {
    pub name: String,
    pub member: String,
    pub round: Option<String>,
    pub lease_seconds: u64,
    pub members: Vec<MemberReport>,
    pub barriers: Vec<BarrierReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<Proof>,
    /// Every member passed every barrier and the proof holds.
    pub consistent: bool,
}

/// One member's progress, as etcd's revisions of its keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MemberReport {
    pub name: String,
    pub joined: Option<i64>,
    pub pre: Option<i64>,
    pub frozen: Option<i64>,
    pub snapshot: Option<i64>,
    pub thaw: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
}

/// A barrier this member passed: its own key's revision, the revision at
/// which every member's key was seen, the time it waited.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BarrierReport {
    pub stage: String,
    pub revision: i64,
    pub passed_revision: i64,
    pub waited_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AbortReport {
    pub member: String,
    pub stage: String,
    pub reason: String,
}

/// The common instant: every member's "frozen" key is older than the
/// first "thaw" key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Proof {
    pub last_frozen_revision: Option<i64>,
    pub first_thaw_revision: Option<i64>,
    pub holds: bool,
}
