//! The fields of a record: one event's, as every sink formats them,
//! rendered when it happened; the header's, fixed for a run; their bounds.

use log::Level;
use std::time::SystemTime;

use super::record::Record;
use super::syslog::Facility;

/// The SD-ID of our structured-data element (32473 is the IANA enterprise
/// number RFC 5612 reserves for documentation examples).
pub const SD_ID: &str = "quiesce@32473";

/// Upper bound of one record on the wire: rsyslog's default `maxMessageSize`.
/// rsyslog 8.2302 keeps a datagram of 8096 bytes whole and cuts a longer one
/// at byte 8096, wherever that falls (even inside a UTF-8 sequence, and past
/// our truncation mark); so we cut first, inside MSG, and say so.
pub const MAX_RECORD_BYTES: usize = 8096;

/// Upper bound of one SD-PARAM value before escaping (argv, paths, output tails).
pub const MAX_VALUE_BYTES: usize = 2 * 1024;

pub(super) const MAX_OPERATION_ID_BYTES: usize = 128;

/// One event, rendered to owned strings at the time it happened.
pub(super) struct Event {
    pub(super) at: SystemTime,
    pub(super) level: Level,
    pub(super) kind: Record,
    pub(super) phase: Option<String>,
    pub(super) params: Vec<(String, String)>,
    pub(super) msg: String,
}

/// The parts of every record fixed for a run.
pub(super) struct Header {
    pub(super) facility: Facility,
    pub(super) hostname: String,
    pub(super) app_name: String,
    pub(super) procid: String,
    pub(super) operation_id: String,
    /// `QUIESCE_APP` in the journal, `app` in the RFC 5424 structured data.
    pub(super) application: String,
}

/// An event of the kind whose MSGID is `msgid` (else a `log` record), for
/// the unit tests of the trail and its formats.
#[cfg(test)]
pub(super) fn test_event(
    level: Level,
    msgid: &str,
    phase: &str,
    params: &[(&str, &str)],
    msg: &str,
) -> Event {
    Event {
        at: std::time::UNIX_EPOCH + std::time::Duration::new(1_709_251_199, 123_456_000),
        level,
        kind: Record::from_msgid(msgid).unwrap_or(Record::Log),
        phase: Some(phase.to_owned()),
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        msg: msg.to_owned(),
    }
}
