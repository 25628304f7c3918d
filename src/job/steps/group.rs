//! A `snapshot --group` run's part in its consistency group's round (SPEC
//! §11), as the run takes it: the group file checked and the round joined
//! before any script, the pre-scripts' barrier, the window's barriers
//! (through [`GroupGate`], which the window calls), and after the thaw
//! the proof, the trail's records and the status's `group` object.
//!
//! The local guarantees never wait on etcd: every barrier inside the
//! window ends at the window's deadline at the latest, and the watchdog
//! and the post guard know nothing of the group.

use std::time::{Duration, Instant};

use log::Level;

use crate::config::MAX_TIMEOUT_SECS;
use crate::error::{ErrorCode, Fix, Problem};
use crate::freeze::signals;
use crate::group::etcd::{Etcd, EtcdError};
use crate::group::round::{Round, RoundError, Stage};
use crate::group::settings::{GroupSettings, SettingsError};
use crate::job::context::Context;
use crate::job::run::Job;
use crate::job::status::say;
use crate::trail::{self, Record};

/// How long the thaw may wait for this member's "thaw" key to be written.
const THAW_KEY: Duration = Duration::from_millis(250);

/// This member's name: `--group-member`, else the host name.
pub fn member_name(cx: &Context) -> String {
    cx.options.group_member.clone().unwrap_or_else(|| {
        nix::sys::utsname::uname()
            .map(|u| u.nodename().to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

/// The group of `--group`, its file and TLS files checked, and a client
/// of its cluster.
pub fn connect(cx: &Context, name: &str) -> Result<(GroupSettings, Etcd), Problem> {
    let settings = GroupSettings::load(&cx.options.groups_dir, name).map_err(settings_problem)?;
    let tls = settings.tls().map_err(settings_problem)?;
    let etcd = Etcd::new(&settings.endpoints, tls.as_ref()).map_err(etcd_problem)?;
    Ok((settings, etcd))
}

fn settings_problem(e: SettingsError) -> Problem {
    let fix = match &e {
        SettingsError::Trust(p, t) => t.fix(crate::integrity::FileRole::Config).or_file(p),
        SettingsError::Content { path, .. } => Fix::Json(path.clone()),
        SettingsError::Name(_) => Fix::Row,
    };
    Problem::new(ErrorCode::IncorrectGroupFile, e.to_string()).with_fix(fix)
}

trait OrFile {
    fn or_file(self, p: &std::path::Path) -> Fix;
}

impl OrFile for Fix {
    /// A trust fix as it is, or the file itself to look at.
    fn or_file(self, p: &std::path::Path) -> Fix {
        match self {
            Fix::Row => Fix::Unreadable(p.to_path_buf()),
            f => f,
        }
    }
}

fn etcd_problem(e: EtcdError) -> Problem {
    let code = match e {
        EtcdError::Tls(_) => ErrorCode::IncorrectGroupFile,
        _ => ErrorCode::GroupUnreachable,
    };
    Problem::new(code, e.to_string())
}

/// The problem a round's failure is, by its table row.
fn round_problem(e: &RoundError) -> Problem {
    let code = match e {
        RoundError::Etcd(EtcdError::Tls(_)) | RoundError::NotMember { .. } => {
            ErrorCode::IncorrectGroupFile
        }
        RoundError::Etcd(EtcdError::Unreachable(_)) => ErrorCode::GroupUnreachable,
        RoundError::Closed { .. } => ErrorCode::GroupRoundClosed,
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
pub fn join(job: &mut Job, cx: &Context) -> Result<Option<Round>, Problem> {
    let Some(name) = &cx.options.group else {
        return Ok(None);
    };
    let member = member_name(cx);
    let (settings, etcd) = connect(cx, name)?;
    let join = cx.options.group_join.map(Duration::from_secs);
    let mut round =
        Round::connect(&settings, etcd, &member, join).map_err(|e| round_problem(&e))?;
    say(format!(
        "group {name}: member {member} joining (up to {} s)",
        join.map_or(settings.join_seconds, |d| d.as_secs())
    ));
    if let Err(e) = round.join(&interrupted) {
        let p = round_problem(&e);
        file(job, &mut round, false);
        return Err(p);
    }
    let own = round.report.barriers.first().map_or(0, |b| b.revision);
    trail::event(
        Level::Info,
        Record::GroupJoin,
        "group",
        &[
            ("group", name.clone()),
            ("round", round.report.round.clone().unwrap_or_default()),
            ("member", member),
            ("revision", own.to_string()),
        ],
        "joined the consistency group's round",
    );
    Ok(Some(round))
}

/// The pre-scripts' barrier: this member's outcome told, every member's
/// awaited. Whether the group goes on to freeze.
pub fn pres_done(job: &mut Job, round: Option<&mut Round>, ok: bool) -> bool {
    let Some(round) = round else { return true };
    let outcome = if ok {
        Ok(())
    } else {
        Err("its pre-check or a pre-script failed".to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(MAX_TIMEOUT_SECS + 60);
    match round.pass(Stage::Pre, outcome, deadline, &interrupted) {
        Ok(()) => true,
        Err(e) => {
            if ok {
                job.problem(&round_problem(&e));
            } else {
                job.problem(&Problem::new(ErrorCode::GroupAborted, e.to_string()));
            }
            say("group: no member freezes");
            false
        }
    }
}

/// What the window does with the group: its two barriers inside the
/// window, each bounded by the window's deadline.
pub struct GroupGate<'r> {
    pub round: &'r mut Round,
}

impl GroupGate<'_> {
    /// This member froze (or failed to): every member frozen, the common
    /// instant, or the round aborted.
    pub fn all_frozen(&mut self, ok: bool, deadline: Instant) -> Result<(), Problem> {
        let outcome = if ok {
            Ok(())
        } else {
            Err("its freeze failed".to_string())
        };
        self.round
            .pass(Stage::Frozen, outcome, deadline, &interrupted)
            .map_err(|e| Problem::new(ErrorCode::GroupAborted, e.to_string()))
    }

    /// This member's snapshot command ended: every member's done, then
    /// this member's "thaw" key (briefly: the thaw never waits on etcd
    /// longer than [`THAW_KEY`]).
    pub fn all_done(&mut self, ok: bool, deadline: Instant) -> Result<(), Problem> {
        let outcome = if ok {
            Ok(())
        } else {
            Err("its snapshot command failed".to_string())
        };
        let passed = self
            .round
            .pass(Stage::Snapshot, outcome, deadline, &interrupted);
        if passed.is_ok() {
            self.round.thawing(THAW_KEY);
        }
        passed.map_err(|e| Problem::new(ErrorCode::GroupAborted, e.to_string()))
    }
}

/// After the thaw: the proof when the round went through, the trail's
/// records of every barrier, the abort and the proof, the status's `group`
/// object. A round that did not prove its common instant is a problem.
pub fn finish(job: &mut Job, round: Option<Round>, froze: bool) {
    let Some(mut round) = round else { return };
    file(job, &mut round, froze);
    let proof = round.report.proof.clone();
    if froze && round.report.abort.is_none() && !proof.as_ref().is_some_and(|p| p.holds) {
        job.problem(&Problem::new(
            ErrorCode::GroupAborted,
            "the proof of the common instant does not hold (a member's frozen key is missing or not older than the first thaw key)",
        ));
    }
    match &round.report.proof {
        Some(p) if p.holds && round.report.consistent => say(format!(
            "group {}: consistent — every member frozen (last at revision {}) before the first thaw (revision {})",
            round.report.name,
            p.last_frozen_revision.unwrap_or(0),
            p.first_thaw_revision.unwrap_or(0)
        )),
        _ => say(format!("group {}: not a consistent group snapshot", round.report.name)),
    }
}

/// The round's records and its status, once the trail is released.
fn file(job: &mut Job, round: &mut Round, froze: bool) {
    if froze && round.report.abort.is_none() {
        round.prove();
    }
    let r = &round.report;
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
}

/// `check --group NAME`: the group file checked, each endpoint asked for
/// its version, whether this member is listed and which round is open.
/// Nothing is written to etcd. The problems found.
pub fn check(job: &mut Job, cx: &Context) -> Vec<Problem> {
    let Some(name) = &cx.options.group else {
        return Vec::new();
    };
    let member = member_name(cx);
    let (settings, _) = match connect(cx, name) {
        Ok(connected) => connected,
        Err(p) => return vec![p],
    };
    let tls = settings.tls().ok().flatten();
    let mut reached = 0;
    for e in &settings.endpoints {
        let one = Etcd::new(std::slice::from_ref(e), tls.as_ref());
        match one.and_then(|c| c.status(Duration::from_secs(2))) {
            Ok(version) => {
                reached += 1;
                say(format!("group {name}: endpoint {e}: etcd {version}"));
            }
            Err(err) => say(format!("group {name}: endpoint {e}: {err}")),
        }
    }
    let listed = settings.members.contains(&member);
    say(format!(
        "group {name}: members {}; this member ({member}) {}",
        settings.members.join(", "),
        if listed { "is listed" } else { "is NOT listed" }
    ));
    job.status.group = Some(crate::group::round::GroupReport {
        name: name.clone(),
        member: member.clone(),
        lease_seconds: settings.lease_seconds,
        members: settings
            .members
            .iter()
            .map(|m| crate::group::round::MemberReport {
                name: m.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    let mut problems = Vec::new();
    if reached == 0 {
        problems.push(Problem::new(
            ErrorCode::GroupUnreachable,
            format!("no endpoint of group {name} answered"),
        ));
    }
    if !listed {
        problems.push(Problem::new(
            ErrorCode::IncorrectGroupFile,
            format!(
                "member {member} is not listed in {}",
                settings.file.display()
            ),
        ));
    }
    problems
}
