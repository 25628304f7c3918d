//! A `snapshot --group` run's part in its consistency group's round (SPEC
//! §11), as the run takes it: the group file checked and the round joined
//! before any script, the pre-scripts' barrier, the window's barriers
//! (through [`GroupGate`], which the window calls), and after the thaw
//! the proof, the trail's records and the status's `group` object.
//!
//! The local guarantees never wait on etcd: every barrier inside the
//! window ends at the window's deadline at the latest, and the watchdog
//! and the post guard know nothing of the group.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::Level;

use crate::config::MAX_TIMEOUT_SECS;
use crate::error::{ErrorCode, Problem};
use crate::freeze::signals;
use crate::group::link::{ErrorKind, GroupLink, LinkError, Request};
use crate::group::report::GroupReport;
use crate::integrity::CheckedFile;
use crate::job::context::Context;
use crate::job::run::Job;
use crate::job::status::say;
use crate::trail::{self, Record};

/// How long the thaw may wait for this member's "thaw" key to be written.
const THAW_KEY: Duration = Duration::from_millis(250);
/// Longest wait for a reply that has no deadline of its own (join, check,
/// the proof): the helper bounds each of its calls.
const HELPER_SLACK: Duration = Duration::from_secs(5);

/// This member's name: `--group-member`, else the host name.
pub fn member_name(cx: &Context) -> String {
    cx.options.group_member.clone().unwrap_or_else(|| {
        nix::sys::utsname::uname()
            .map(|u| u.nodename().to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

/// The group helper: beside this binary, trusted like every program that
/// runs as root (root-owned, not writable by others, every directory
/// above it root's).
fn helper() -> Result<PathBuf, Problem> {
    let here = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/sbin/quiesce"));
    let path = here.with_file_name("quiesce-group");
    CheckedFile::open_program(&path)
        .map(|f| f.path)
        .map_err(|e| {
            Problem::new(
                ErrorCode::IncorrectGroupFile,
                format!("the group helper {}: {e}", path.display()),
            )
        })
}

/// The helper of `--group NAME`, started.
fn start(cx: &Context, name: &str) -> Result<GroupLink, Problem> {
    let mut args: Vec<OsString> = vec![
        "--groups-dir".into(),
        cx.options.groups_dir.clone().into(),
        "--group".into(),
        name.into(),
        "--member".into(),
        member_name(cx).into(),
    ];
    if let Some(j) = cx.options.group_join {
        args.extend(["--join".into(), j.to_string().into()]);
    }
    GroupLink::start(&helper()?, &args).map_err(|e| link_problem(&e))
}

/// The problem a failed request is, by its table row.
fn link_problem(e: &LinkError) -> Problem {
    let code = match e {
        LinkError::Refused(r) => match r.kind {
            ErrorKind::File => ErrorCode::IncorrectGroupFile,
            ErrorKind::Unreachable => ErrorCode::GroupUnreachable,
            ErrorKind::Closed => ErrorCode::GroupRoundClosed,
            ErrorKind::Aborted => ErrorCode::GroupAborted,
        },
        LinkError::Start(..) => ErrorCode::IncorrectGroupFile,
        _ => ErrorCode::GroupAborted,
    };
    Problem::new(code, e.to_string())
}

fn interrupted() -> bool {
    signals::pending().is_some()
}

/// `--group`: the round joined, before any script runs. `None` without
/// `--group`; an error after which nothing runs (the group's status
/// filed).
pub fn join(job: &mut Job, cx: &Context) -> Result<Option<GroupLink>, Problem> {
    let Some(name) = &cx.options.group else {
        return Ok(None);
    };
    let member = member_name(cx);
    let mut link = start(cx, name)?;
    say(format!("group {name}: member {member} joining"));
    let deadline =
        Instant::now() + Duration::from_secs(cx.options.group_join.unwrap_or(3600)) + HELPER_SLACK;
    if let Err(e) = link.call(&Request::Join, deadline, &interrupted) {
        file(job, &mut link, false);
        return Err(link_problem(&e));
    }
    let report = link.report.clone().unwrap_or_default();
    let own = report.barriers.first().map_or(0, |b| b.revision);
    trail::event(
        Level::Info,
        Record::GroupJoin,
        "group",
        &[
            ("group", name.clone()),
            ("round", report.round.unwrap_or_default()),
            ("member", member),
            ("revision", own.to_string()),
        ],
        "joined the consistency group's round",
    );
    Ok(Some(link))
}

/// One barrier through the helper: this member's outcome, every
/// member's awaited until `deadline` (and not a moment longer).
fn pass(
    link: &mut GroupLink,
    stage: &str,
    outcome: Result<(), String>,
    deadline: Instant,
) -> Result<(), LinkError> {
    // The helper's own wait ends a little earlier, so that its answer is
    // back by the deadline.
    let left = deadline.saturating_duration_since(Instant::now());
    let req = Request::Pass {
        stage: stage.into(),
        ok: outcome.is_ok(),
        reason: outcome.err().unwrap_or_default(),
        deadline_ms: left.saturating_sub(Duration::from_millis(50)).as_millis() as u64,
    };
    link.call(&req, deadline, &interrupted).map(|_| ())
}

/// The pre-scripts' barrier: this member's outcome told, every member's
/// awaited. Whether the group goes on to freeze.
pub fn pres_done(job: &mut Job, link: Option<&mut GroupLink>, ok: bool) -> bool {
    let Some(link) = link else { return true };
    let outcome = if ok {
        Ok(())
    } else {
        Err("its pre-check or a pre-script failed".to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(MAX_TIMEOUT_SECS + 60);
    match pass(link, "pre", outcome, deadline) {
        Ok(()) => true,
        Err(e) => {
            job.problem(&Problem::new(ErrorCode::GroupAborted, e.to_string()));
            say("group: no member freezes");
            false
        }
    }
}

/// What the window does with the group: its two barriers inside the
/// window, each bounded by the window's deadline.
pub struct GroupGate<'r> {
    link: &'r mut GroupLink,
    /// The helper watches the round while the snapshot command runs.
    watching: bool,
    /// The round aborted while the command ran.
    failed: Option<Problem>,
}

impl<'r> GroupGate<'r> {
    pub fn new(link: &'r mut GroupLink) -> GroupGate<'r> {
        GroupGate {
            link,
            watching: false,
            failed: None,
        }
    }

    /// The snapshot command started: the helper watches the round until
    /// it ends, so that another member's failure thaws this one at once.
    pub fn watch(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        let req = Request::Watch {
            deadline_ms: left.as_millis() as u64,
        };
        self.watching = self.link.post(&req).is_ok();
    }

    /// Whether the round aborted while the command runs (then: thaw now).
    pub fn aborted(&mut self) -> bool {
        if !self.watching {
            return false;
        }
        match self.link.ready() {
            None => false,
            Some(Ok(_)) => {
                self.watching = false;
                false
            }
            Some(Err(e)) => {
                self.watching = false;
                self.failed = Some(Problem::new(ErrorCode::GroupAborted, e.to_string()));
                true
            }
        }
    }

    /// The command ended: the watch ended, its answer awaited briefly (an
    /// abort seen just then still counts).
    pub fn unwatch(&mut self, deadline: Instant) {
        if !std::mem::take(&mut self.watching) {
            return;
        }
        let by = deadline.min(Instant::now() + Duration::from_millis(500));
        let ended = self
            .link
            .post(&Request::Unwatch)
            .and_then(|()| self.link.reply(by, &interrupted));
        if let Err(e) = ended {
            self.failed = Some(Problem::new(ErrorCode::GroupAborted, e.to_string()));
        }
    }

    /// This member froze (or failed to): every member frozen, the common
    /// instant, or the round aborted.
    pub fn all_frozen(&mut self, ok: bool, deadline: Instant) -> Result<(), Problem> {
        let outcome = if ok {
            Ok(())
        } else {
            Err("its freeze failed".to_string())
        };
        pass(self.link, "frozen", outcome, deadline)
            .map_err(|e| Problem::new(ErrorCode::GroupAborted, e.to_string()))
    }

    /// This member's snapshot command ended: every member's done, then
    /// this member's "thaw" key (briefly: the thaw never waits on etcd
    /// longer than [`THAW_KEY`]).
    pub fn all_done(&mut self, ok: bool, deadline: Instant) -> Result<(), Problem> {
        if let Some(p) = self.failed.take() {
            return Err(p);
        }
        let outcome = if ok {
            Ok(())
        } else {
            Err("its snapshot command failed".to_string())
        };
        let passed = pass(self.link, "snapshot", outcome, deadline);
        if passed.is_ok() {
            let req = Request::Thawing {
                timeout_ms: THAW_KEY.as_millis() as u64,
            };
            let by = (Instant::now() + THAW_KEY + Duration::from_millis(50)).min(deadline);
            let _ = self.link.call(&req, by, &interrupted);
        }
        passed.map_err(|e| Problem::new(ErrorCode::GroupAborted, e.to_string()))
    }
}

/// After the thaw: the proof when the round went through, the trail's
/// records of every barrier, the abort and the proof, the status's `group`
/// object. A round that did not prove its common instant is a problem.
pub fn finish(job: &mut Job, link: Option<GroupLink>, froze: bool) {
    let Some(mut link) = link else { return };
    let report = file(job, &mut link, froze);
    let proof = report.proof.clone();
    if froze && report.abort.is_none() && !proof.as_ref().is_some_and(|p| p.holds) {
        job.problem(&Problem::new(
            ErrorCode::GroupAborted,
            "the proof of the common instant does not hold (a member's frozen key is missing or not older than the first thaw key)",
        ));
    }
    match &report.proof {
        Some(p) if p.holds && report.consistent => say(format!(
            "group {}: consistent — every member frozen (last at revision {}) before the first thaw (revision {})",
            report.name,
            p.last_frozen_revision.unwrap_or(0),
            p.first_thaw_revision.unwrap_or(0)
        )),
        _ => say(format!("group {}: not a consistent group snapshot", report.name)),
    }
}

/// The round's records and its status, once the trail is released.
fn file(job: &mut Job, link: &mut GroupLink, froze: bool) -> GroupReport {
    let aborted = link.report.as_ref().is_none_or(|r| r.abort.is_some());
    if froze && !aborted {
        let _ = link.call(&Request::Prove, Instant::now() + HELPER_SLACK, &interrupted);
    }
    let Some(r) = &link.report else {
        return GroupReport::default();
    };
    let id = r.round.clone().unwrap_or_default();
    for b in &r.barriers {
        trail::event(
            Level::Info,
            Record::GroupBarrier,
            "group",
            &[
                ("group", r.name.clone()),
                ("round", id.clone()),
                ("stage", b.stage.to_string()),
                ("revision", b.revision.to_string()),
                ("passedRevision", b.passed_revision.to_string()),
                ("waitedMs", format!("{:.1}", b.waited_ms)),
            ],
            "every member of the round passed the barrier",
        );
    }
    if let Some(a) = &r.abort {
        say(format!(
            "group {}: round aborted at {} by {}: {}",
            r.name, a.stage, a.member, a.reason
        ));
        trail::event(
            Level::Error,
            Record::GroupAbort,
            "group",
            &[
                ("group", r.name.clone()),
                ("round", id.clone()),
                ("member", a.member.clone()),
                ("stage", a.stage.clone()),
                ("reason", a.reason.clone()),
            ],
            "the consistency group's round aborted",
        );
    }
    if let Some(p) = &r.proof {
        let rev = |v: Option<i64>| v.map_or("none".into(), |v| v.to_string());
        trail::event(
            if p.holds { Level::Info } else { Level::Error },
            Record::GroupProof,
            "group",
            &[
                ("group", r.name.clone()),
                ("round", id),
                ("lastFrozen", rev(p.last_frozen_revision)),
                ("firstThaw", rev(p.first_thaw_revision)),
                ("holds", p.holds.to_string()),
            ],
            "the proof of the group's common instant",
        );
    }
    job.status.group = Some(r.clone());
    r.clone()
}

/// `check --group NAME`: the group file checked, each endpoint asked for
/// its version, whether this member is listed. Nothing is written to
/// etcd. The problems found.
pub fn check(job: &mut Job, cx: &Context) -> Vec<Problem> {
    let Some(name) = &cx.options.group else {
        return Vec::new();
    };
    let mut link = match start(cx, name) {
        Ok(link) => link,
        Err(p) => return vec![p],
    };
    let asked = link.call(
        &Request::Check,
        Instant::now() + HELPER_SLACK * 4,
        &interrupted,
    );
    job.status.group = link.report.clone();
    link.lines.iter().for_each(say);
    asked.err().map(|e| link_problem(&e)).into_iter().collect()
}
