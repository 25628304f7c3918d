//! What happened to the records of a run, per sink and summed: sent,
//! dropped, and why a socket could not be reached; the status warning.

use std::fmt::Write as _;

use super::sink::{Sink, SinkKind};

/// What happened to the records of this run at one sink.
/// `sent + dropped` is every record submitted since [`init`](super::init).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkDelivery {
    pub sink: SinkKind,
    /// Records the socket accepted.
    pub sent: u64,
    /// Records not delivered: socket buffer full (EAGAIN), hold queue full,
    /// too large for the socket, or the socket unavailable.
    pub dropped: u64,
    /// Why the socket could not be reached (first failure), e.g.
    /// `/dev/log: No such file or directory (os error 2)`.
    pub unavailable: Option<String>,
}

impl SinkDelivery {
    pub(super) fn new(sink: SinkKind) -> SinkDelivery {
        SinkDelivery {
            sink,
            sent: 0,
            dropped: 0,
            unavailable: None,
        }
    }

    fn warning(&self) -> Option<String> {
        if self.dropped == 0 && self.unavailable.is_none() {
            return None;
        }
        let total = self.sent + self.dropped;
        let name = self.sink.name();
        let mut w = format!(
            "audit trail: {} of {total} {name} records not delivered",
            self.dropped
        );
        if let Some(why) = &self.unavailable {
            let _ = write!(w, " ({name} socket unavailable: {why})");
        }
        Some(w)
    }
}

/// What happened to the records of this run, for the status `warnings`:
/// the sum over the sinks, and each sink's own count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Deliveries the sockets accepted (a record sent to both sinks counts twice).
    pub sent: u64,
    /// Deliveries that failed, summed over the sinks.
    pub dropped: u64,
    /// The first sink's reason its socket could not be reached.
    pub unavailable: Option<String>,
    pub sinks: Vec<SinkDelivery>,
}

impl DeliveryReport {
    pub(super) fn of(sinks: &[Sink]) -> DeliveryReport {
        let sinks: Vec<SinkDelivery> = sinks.iter().map(|s| s.report.clone()).collect();
        DeliveryReport {
            sent: sinks.iter().map(|s| s.sent).sum(),
            dropped: sinks.iter().map(|s| s.dropped).sum(),
            unavailable: sinks.iter().find_map(|s| s.unavailable.clone()),
            sinks,
        }
    }

    /// One line for the status `warnings`, or `None` when all went well.
    pub fn warning(&self) -> Option<String> {
        let lines: Vec<String> = self
            .sinks
            .iter()
            .filter_map(SinkDelivery::warning)
            .collect();
        (!lines.is_empty()).then(|| lines.join("; "))
    }
}
