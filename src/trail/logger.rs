//! The `log` facade's way into the trail: records of target `audit` with a
//! `msgid` naming a kind of the catalogue, and the warnings and errors of
//! libraries.

use log::kv::{self, VisitSource};
use log::{Level, Log, Metadata};
use std::time::SystemTime;

use super::fields::{Event, MAX_VALUE_BYTES};
use super::record::Record;
use super::syslog::cap_value;
use super::trail;

/// The `log` target whose records are audit events at every level. Records
/// from other targets (dependencies) reach the trail only at warn and error.
pub const AUDIT_TARGET: &str = "audit";

pub(super) struct TrailLogger;

impl Log for TrailLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == AUDIT_TARGET || metadata.level() <= Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Everything is rendered before taking the lock: a Display impl that
        // logs would otherwise deadlock on it.
        let ev = Event::from_record(record);
        if let Some(t) = trail().as_mut() {
            t.record(ev);
        }
    }

    fn flush(&self) {}
}

impl Event {
    fn from_record(record: &log::Record<'_>) -> Event {
        let mut ev = Event {
            at: SystemTime::now(),
            level: record.level(),
            kind: Record::Log,
            phase: None,
            params: Vec::new(),
            msg: record.args().to_string(),
        };
        if record.target() != AUDIT_TARGET {
            // A dependency's warning: keep where it came from.
            ev.params
                .push(("target".to_owned(), record.target().to_owned()));
        }
        let _ = record.key_values().visit(&mut CollectParams(&mut ev));
        ev
    }
}

struct CollectParams<'a>(&'a mut Event);

impl<'kvs> VisitSource<'kvs> for CollectParams<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let value = cap_value(&value.to_string(), MAX_VALUE_BYTES);
        match key.as_str() {
            // Only kinds of the catalogue: anything else stays a `log` record
            // that names what it claimed to be.
            "msgid" => match Record::from_msgid(&value) {
                Some(kind) => self.0.kind = kind,
                None => self.0.params.push(("msgid".to_owned(), value)),
            },
            "phase" => self.0.phase = Some(value),
            k => self.0.params.push((k.to_owned(), value)),
        }
        Ok(())
    }
}
