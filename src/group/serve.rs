//! The group helper's side (`quiesce-group`, started by a `--group` run):
//! the group file checked, the etcd client, the lease and the round, one
//! request of the runner at a time (see [`super::link`]). An `abort`
//! request, or the runner's end (stdin closed, or the parent-death
//! signal), stops any wait in progress: the helper then tells the others
//! and ends.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::etcd::{Etcd, EtcdError};
use super::link::{ErrorKind, Reply, ReplyError, Request};
use super::report::{GroupReport, MemberReport};
use super::round::{Round, RoundError, Stage};
use super::settings::GroupSettings;

/// The helper's command line: `--groups-dir DIR --group NAME --member NAME
/// [--join SECS]`.
struct Args {
    groups_dir: PathBuf,
    group: String,
    member: String,
    join: Option<u64>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Option<Args> {
    let (mut dir, mut group, mut member, mut join) = (None, None, None, None);
    while let Some(flag) = argv.next() {
        let value = argv.next()?;
        match flag.as_str() {
            "--groups-dir" => dir = Some(PathBuf::from(value)),
            "--group" => group = Some(value),
            "--member" => member = Some(value),
            "--join" => join = Some(value.parse().ok()?),
            _ => return None,
        }
    }
    Some(Args {
        groups_dir: dir?,
        group: group?,
        member: member?,
        join,
    })
}

fn failure(kind: ErrorKind, message: impl ToString) -> ReplyError {
    ReplyError {
        kind,
        message: message.to_string(),
    }
}

fn refused(kind: ErrorKind, message: impl ToString) -> Reply {
    Reply::from(failure(kind, message))
}

impl From<ReplyError> for Reply {
    fn from(e: ReplyError) -> Reply {
        Reply {
            error: Some(e),
            ..Reply::default()
        }
    }
}

fn kind_of(e: &RoundError) -> ErrorKind {
    match e {
        RoundError::Etcd(EtcdError::Tls(_)) | RoundError::NotMember { .. } => ErrorKind::File,
        RoundError::Etcd(EtcdError::Unreachable(_)) => ErrorKind::Unreachable,
        RoundError::Closed { .. } => ErrorKind::Closed,
        _ => ErrorKind::Aborted,
    }
}

/// The helper's state: its settings (or why they cannot be used), the
/// round once joined, and the flag that stops a wait.
struct Helper {
    args: Args,
    settings: Result<GroupSettings, ReplyError>,
    round: Option<Round>,
    stop: Arc<AtomicBool>,
    /// Set by `unwatch`, cleared as a `watch` is read (in the order the
    /// runner sent them).
    unwatch: Arc<AtomicBool>,
}

impl Helper {
    fn etcd(&self) -> Result<(GroupSettings, Etcd), ReplyError> {
        let settings = self.settings.clone()?;
        let tls = settings.tls().map_err(|e| failure(ErrorKind::File, e))?;
        let etcd = Etcd::new(&settings.endpoints, tls.as_ref()).map_err(|e| {
            let kind = match e {
                EtcdError::Tls(_) => ErrorKind::File,
                _ => ErrorKind::Unreachable,
            };
            failure(kind, e)
        })?;
        Ok((settings, etcd))
    }

    fn handle(&mut self, req: Request) -> Reply {
        let stop = self.stop.clone();
        let interrupted = move || stop.load(Ordering::SeqCst);
        let result = match (req, self.round.as_mut()) {
            (Request::Join, None) => return self.join(&interrupted),
            (Request::Check, _) => return self.check(),
            (
                Request::Pass {
                    stage,
                    ok,
                    reason,
                    deadline_ms,
                },
                Some(round),
            ) => {
                let stage = Stage::from_name(&stage).unwrap_or(Stage::Snapshot);
                let outcome = if ok { Ok(()) } else { Err(reason) };
                let deadline = Instant::now() + Duration::from_millis(deadline_ms);
                round.pass(stage, outcome, deadline, &interrupted)
            }
            (Request::Watch { deadline_ms }, Some(round)) => {
                let unwatch = self.unwatch.clone();
                let stopped = move || unwatch.load(Ordering::SeqCst) || interrupted();
                let deadline = Instant::now() + Duration::from_millis(deadline_ms);
                round.watch(deadline, &stopped)
            }
            (Request::Thawing { timeout_ms }, Some(round)) => {
                round.thawing(Duration::from_millis(timeout_ms));
                Ok(())
            }
            (Request::Prove, Some(round)) => {
                round.prove();
                Ok(())
            }
            (req, _) => return refused(ErrorKind::Aborted, format!("request {req:?} out of turn")),
        };
        self.reply(result)
    }

    fn reply(&self, result: Result<(), RoundError>) -> Reply {
        Reply {
            error: result.err().map(|e| ReplyError {
                kind: kind_of(&e),
                message: e.to_string(),
            }),
            report: self.round.as_ref().map(|r| r.report.clone()),
            lines: Vec::new(),
        }
    }

    fn join(&mut self, interrupted: &dyn Fn() -> bool) -> Reply {
        let (settings, etcd) = match self.etcd() {
            Ok(c) => c,
            Err(e) => return Reply::from(e),
        };
        let join = self.args.join.map(Duration::from_secs);
        let round = Round::connect(&settings, etcd, &self.args.member, join);
        let mut round = match round {
            Ok(r) => r,
            Err(e) => return refused(kind_of(&e), e),
        };
        let joined = round.join(interrupted);
        self.round = Some(round);
        self.reply(joined)
    }

    /// Each endpoint asked for its version on its own; whether this member
    /// is listed. Nothing is written.
    fn check(&self) -> Reply {
        let (settings, _) = match self.etcd() {
            Ok(c) => c,
            Err(e) => return Reply::from(e),
        };
        let tls = settings.tls().ok().flatten();
        let name = &settings.name;
        let mut lines = Vec::new();
        let mut reached = 0;
        for e in &settings.endpoints {
            let one = Etcd::new(std::slice::from_ref(e), tls.as_ref());
            match one.and_then(|c| c.status(Duration::from_secs(2))) {
                Ok(version) => {
                    reached += 1;
                    lines.push(format!("group {name}: endpoint {e}: etcd {version}"));
                }
                Err(err) => lines.push(format!("group {name}: endpoint {e}: {err}")),
            }
        }
        let member = &self.args.member;
        let listed = settings.members.contains(member);
        lines.push(format!(
            "group {name}: members {}; this member ({member}) {}",
            settings.members.join(", "),
            if listed { "is listed" } else { "is NOT listed" }
        ));
        let error = if reached == 0 {
            Some(ReplyError {
                kind: ErrorKind::Unreachable,
                message: format!("no endpoint of group {name} answered"),
            })
        } else if !listed {
            Some(ReplyError {
                kind: ErrorKind::File,
                message: format!(
                    "member {member} is not listed in {}",
                    settings.file.display()
                ),
            })
        } else {
            None
        };
        Reply {
            error,
            report: Some(GroupReport {
                name: name.clone(),
                member: member.clone(),
                lease_seconds: settings.lease_seconds,
                members: settings
                    .members
                    .iter()
                    .map(|m| MemberReport {
                        name: m.clone(),
                        ..MemberReport::default()
                    })
                    .collect(),
                ..GroupReport::default()
            }),
            lines,
        }
    }
}

/// The helper's `main`: requests from stdin, replies on stdout, until the
/// runner closes stdin.
pub fn main() -> ExitCode {
    // The runner's death ends the helper too (its lease then expires and
    // the others abort): the parent-death signal, and stdin's EOF.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let Some(args) = parse_args(std::env::args().skip(1)) else {
        eprintln!("usage: quiesce-group --groups-dir DIR --group NAME --member NAME [--join SECS] (started by quiesce --group)");
        return ExitCode::from(64);
    };
    let settings =
        GroupSettings::load(&args.groups_dir, &args.group).map_err(|e| failure(ErrorKind::File, e));
    let stop = Arc::new(AtomicBool::new(false));
    let unwatch = Arc::new(AtomicBool::new(false));
    let mut helper = Helper {
        args,
        settings,
        round: None,
        stop: stop.clone(),
        unwatch: unwatch.clone(),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Request>(&line) {
                Ok(Request::Abort) => stop.store(true, Ordering::SeqCst),
                Ok(Request::Unwatch) => unwatch.store(true, Ordering::SeqCst),
                Ok(req) => {
                    if matches!(req, Request::Watch { .. }) {
                        unwatch.store(false, Ordering::SeqCst);
                    }
                    if tx.send(req).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        stop.store(true, Ordering::SeqCst);
    });
    let mut out = std::io::stdout().lock();
    for req in rx {
        let reply = helper.handle(req);
        let line = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}
