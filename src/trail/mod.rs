//! The audit trail of SPEC.md §9 and the human output on stderr.
//!
//! Every record is one kind of the catalogue ([`Record`], `record.rs`: the
//! compliance contract) and goes to one or both sinks ([`TrailMode`],
//! `--trail`): a native journal entry on `/run/systemd/journal/socket`
//! (`journal.rs`: `MESSAGE_ID`, `QUIESCE_OP`, `QUIESCE_<KEY>`…; explained
//! by the catalog of `catalog.rs`), and/or one RFC 5424 record with the
//! structured-data element `[quiesce@32473 op="…" phase="…" key="value" …]`
//! on the local syslog socket (`/dev/log`, or `--syslog-socket PATH`; the
//! format is in `syslog.rs`). `auto`, the default, is the journal when its
//! socket exists: on systemd hosts `/dev/log` is journald's, which flattens
//! RFC 5424 structured data into MESSAGE.
//!
//! ```ignore
//! trail::event(Level::Info, Record::ScriptExit, "pre",
//!              &[("pid", pid.to_string()), ("exit", "0".into())], "pre-script exited 0");
//! ```
//!
//! The `log` facade reaches the trail too: records of target `audit` with a
//! `msgid` key-value naming a kind of the catalogue, and warnings and errors
//! of libraries (kind [`Record::Log`]).
//!
//! SPEC.md §6.5: nothing touches the frozen disk and sends never block
//! the window (the same rule for every sink). Between [`hold`] and [`release`] records and human lines are
//! queued in memory (time-stamped when the event happened) and nothing is
//! written anywhere, not even to a socket: stderr may be a file on the frozen
//! filesystem, and journald or a syslog daemon may write synchronously to one. [`release`]
//! sends the queue in order after the thaw.
//!
//! Why hand-written RFC 5424 and not the `syslog` crate (v7): its unix
//! transport is a *blocking* datagram socket that falls back to a blocking
//! stream socket, so a stalled daemon could block the caller; its structured
//! data is a `BTreeMap`, which reorders parameters (`op` and `phase` would not
//! come first) and does not sanitise SD-NAMEs; it stamps the time when the
//! record is formatted, whereas held records must carry the time of the event;
//! and it has no notion of holding. The format is ~100 lines here and every
//! byte that reaches a compliance team's SIEM is visible in this file.
//!
//! Receiving side: rsyslog's `imuxsock` parses the local socket with a
//! "special parser" for the traditional BSD format by default, which folds an
//! RFC 5424 record into MSG and replaces its timestamp with the time of
//! receipt. The socket input needs `useSpecialParser="off"` and
//! `ignoreTimestamp="off"` (tests/audit_syslog.rs shows a working config).
//!
//! One file, one job: `setup.rs` how a run sets the trail up, `fields.rs`
//! the fields of a record (the event's, the run's header, their bounds),
//! `queue.rs` the trail of a run and its hold queue, `sink.rs` the sockets
//! and stderr, `delivery.rs` what they delivered, `logger.rs` the `log`
//! facade's way in. The entry points below lock the one trail of the
//! process.

pub mod catalog;
mod delivery;
mod fields;
mod journal;
mod logger;
mod queue;
mod record;
mod setup;
mod sink;
mod syslog;

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::SystemTime;

use log::{Level, LevelFilter};

pub use delivery::{DeliveryReport, SinkDelivery};
pub use fields::{MAX_RECORD_BYTES, MAX_VALUE_BYTES, SD_ID};
pub use journal::DEFAULT_JOURNAL_SOCKET;
pub use logger::AUDIT_TARGET;
pub use queue::MAX_HELD;
pub use record::Record;
pub use setup::{TrailConfig, TrailError, TrailMode, DEFAULT_SOCKET};
pub use sink::SinkKind;
pub use syslog::{rfc3339_micros, severity, Facility};

// Header and Event are what the formats (syslog.rs, journal.rs) read of a
// record; test_event is how their tests build one.
#[cfg(test)]
use fields::test_event;
use fields::{Event, Header, MAX_OPERATION_ID_BYTES};
use logger::TrailLogger;
use queue::{Pending, Trail};
use sink::HumanSink;
use syslog::{cap_value, escape_controls};

// ---------------------------------------------------------------------------
// The public entry points. All of them lock one global; none of them fails.

/// The trail of this process. `init` replaces it; the `log::Log` shim (which
/// the facade lets us install only once per process) forwards into it.
static TRAIL: Mutex<Option<Trail>> = Mutex::new(None);
static LOGGER: TrailLogger = TrailLogger;
/// Whether our shim owns the facade (decided once, at the first `init`).
static INSTALLED: OnceLock<bool> = OnceLock::new();

fn trail() -> MutexGuard<'static, Option<Trail>> {
    // A panic elsewhere while holding the lock must not silence the trail.
    TRAIL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets up the trail for this run and installs the `log` shim (once per
/// process). Calling it again replaces the trail: the old one is released to
/// its socket first, so it must not be called inside a freeze window.
pub fn init(config: TrailConfig) -> Result<(), TrailError> {
    let new = Trail::new(config, HumanSink::Stderr);
    let old = trail().replace(new);
    if let Some(mut old) = old {
        old.release();
    }
    let installed = *INSTALLED.get_or_init(|| {
        let ok = log::set_logger(&LOGGER).is_ok();
        if ok {
            // Debug records of target "audit" (script output) always go to
            // the daemon, which filters; `enabled` drops the rest cheaply.
            log::set_max_level(LevelFilter::Trace);
        }
        ok
    });
    if installed {
        Ok(())
    } else {
        Err(TrailError::LoggerTaken)
    }
}

/// Names the application of records emitted from now on (`QUIESCE_APP`,
/// `app=`): the application whose work follows; empty for the run's own
/// records between the applications of several.
pub fn set_application(name: impl Into<String>) {
    if let Some(t) = trail().as_mut() {
        t.header.application = cap_value(&name.into(), MAX_OPERATION_ID_BYTES);
    }
}

/// Changes the operation id of records emitted from now on.
pub fn set_operation_id(id: impl Into<String>) {
    if let Some(t) = trail().as_mut() {
        t.header.operation_id = cap_value(&id.into(), MAX_OPERATION_ID_BYTES);
    }
}

/// Starts queueing: from now until [`release`] nothing is written anywhere.
/// Call it before the first freeze.
pub fn hold() {
    if let Some(t) = trail().as_mut() {
        t.held = true;
    }
}

/// Sends everything queued since [`hold`], in order, then resumes sending
/// immediately. Call it after the last thaw, on every path.
pub fn release() {
    if let Some(t) = trail().as_mut() {
        t.release();
    }
}

/// Holding the trail for as long as the guard lives: from [`Hold::start`]
/// (before the first freeze) nothing is written anywhere; dropping it
/// releases what was queued. The freeze window owns it, declared after the
/// window itself, so even while unwinding the release follows the thaw.
#[must_use = "the trail is released when the guard is dropped"]
pub struct Hold(());

impl Hold {
    pub fn start() -> Hold {
        hold();
        Hold(())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        release();
    }
}

/// Whether records are being held.
pub fn is_held() -> bool {
    trail().as_ref().is_some_and(|t| t.held)
}

/// One human line on stderr, `quiesce: <line>`, held like the records.
/// Before [`init`] it is written directly.
pub fn human(line: impl AsRef<str>) {
    let line = escape_controls(line.as_ref());
    match trail().as_mut() {
        Some(t) => t.submit(Pending::Human(line)),
        None => HumanSink::Stderr.write(&line),
    }
}

/// One audit record without the macro syntax. Records before [`init`] are
/// discarded.
pub fn event(level: Level, kind: Record, phase: &str, params: &[(&str, String)], msg: &str) {
    let ev = Event {
        at: SystemTime::now(),
        level,
        kind,
        phase: Some(phase.to_owned()),
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), cap_value(v, MAX_VALUE_BYTES)))
            .collect(),
        msg: msg.to_owned(),
    };
    if let Some(t) = trail().as_mut() {
        t.record(ev);
    }
}

/// Delivery so far. Held records count once released.
pub fn delivery_report() -> DeliveryReport {
    trail()
        .as_ref()
        .map(|t| DeliveryReport::of(&t.sinks))
        .unwrap_or_default()
}

/// Releases what is held, removes the trail and returns its final report.
/// Records emitted afterwards are discarded; human lines go straight to stderr.
pub fn finish() -> DeliveryReport {
    let old = trail().take();
    match old {
        Some(mut t) => {
            t.release();
            DeliveryReport::of(&t.sinks)
        }
        None => DeliveryReport::default(),
    }
}

/// Test hook: forgets the trail and everything it holds, sending nothing.
#[doc(hidden)]
pub fn reset_for_tests() {
    trail().take();
}
