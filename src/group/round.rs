//! One member's part in a round of its group (SPEC.md §11): the round
//! joined in one transaction, the barriers (all joined, all pre-scripts
//! done, all frozen, all snapshot commands done), each member's progress a
//! key under its own lease, aborts seen by every member at once, and the
//! proof of the common instant from etcd's revisions (one global order;
//! clocks are not trusted).
//!
//! Keys, under `quiesce/groups/NAME/`: `open` (the round newcomers join),
//! and under `rounds/ROUND/`: `joined/M`, `pre/M`, `frozen/M`, `snapshot/M`,
//! `thaw/M` (member M's progress), `abort/M` (why M gave up) and
//! `closed/M` (M saw every member join: the barriers began, no newcomer),
//! every one under M's lease: a member that dies or is cut off loses them
//! within the lease's TTL, and a round leaves nothing behind once its
//! members' leases are gone. `open` is the only key without a lease.
//!
//! Nothing here waits past the deadline it is given: every call has its
//! own timeout, bounded by what is left; the lease is kept alive by a
//! thread of its own, and a lease that could not be renewed for its TTL
//! counts as lost at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::etcd::{Compare, Etcd, EtcdError, Kv, Op};
use super::report::{AbortReport, BarrierReport, GroupReport, MemberReport, Proof};
use super::settings::GroupSettings;

/// How often a waiting member reads the round.
const POLL: Duration = Duration::from_millis(5);
/// The longest one call may take while a member waits.
const CALL: Duration = Duration::from_millis(1000);
/// One read of the watch while the snapshot command runs.
const WATCH_CALL: Duration = Duration::from_millis(200);

/// A barrier of the round, and the key each member writes at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Joined,
    Pre,
    Frozen,
    Snapshot,
    Thaw,
}

impl Stage {
    pub fn from_name(name: &str) -> Option<Stage> {
        [
            Stage::Joined,
            Stage::Pre,
            Stage::Frozen,
            Stage::Snapshot,
            Stage::Thaw,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Stage::Joined => "joined",
            Stage::Pre => "pre",
            Stage::Frozen => "frozen",
            Stage::Snapshot => "snapshot",
            Stage::Thaw => "thaw",
        }
    }
}

/// Why this member cannot go on with the round.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error("etcd: {0}")]
    Etcd(#[from] EtcdError),
    #[error(
        "round {round} of the group already began its barriers; a member joins the next round"
    )]
    Closed { round: String },
    #[error("member {member} is not listed in the group file")]
    NotMember { member: String },
    #[error("the round aborted at {stage}: member {member}: {reason}")]
    Aborted {
        member: String,
        stage: String,
        reason: String,
    },
    #[error("this member's lease could not be kept alive for its {0} s TTL (etcd unreachable, or the lease expired)")]
    LeaseLost(u64),
    #[error("the {stage} barrier was not passed by {missing} before the deadline")]
    Timeout {
        stage: &'static str,
        missing: String,
    },
    #[error("interrupted by a signal while waiting at the {0} barrier")]
    Interrupted(&'static str),
}

/// The lease as its keeper thread last saw it.
struct LeaseState {
    started: Instant,
    /// Milliseconds since `started` of the last renewal etcd confirmed.
    renewed_ms: AtomicU64,
    expired: AtomicBool,
    stop: AtomicBool,
}

/// This member in its group's round.
pub struct Round {
    etcd: Etcd,
    members: Vec<String>,
    join: Duration,
    ttl: u64,
    lease: i64,
    base: String,
    prefix: String,
    state: Arc<LeaseState>,
    keeper: Option<JoinHandle<()>>,
    pub report: GroupReport,
}

impl Round {
    /// Connects: a lease of the group's TTL, kept alive from now on.
    pub fn connect(
        settings: &GroupSettings,
        etcd: Etcd,
        member: &str,
        join: Option<Duration>,
    ) -> Result<Round, RoundError> {
        let mut report = GroupReport {
            name: settings.name.clone(),
            member: member.into(),
            lease_seconds: settings.lease_seconds,
            ..GroupReport::default()
        };
        report.members = settings
            .members
            .iter()
            .map(|m| MemberReport {
                name: m.clone(),
                ..MemberReport::default()
            })
            .collect();
        let mut round = Round {
            etcd,
            members: settings.members.clone(),
            join: join.unwrap_or(Duration::from_secs(settings.join_seconds)),
            ttl: settings.lease_seconds,
            lease: 0,
            base: format!("quiesce/groups/{}/", settings.name),
            prefix: String::new(),
            state: Arc::new(LeaseState {
                started: Instant::now(),
                renewed_ms: AtomicU64::new(0),
                expired: AtomicBool::new(false),
                stop: AtomicBool::new(false),
            }),
            keeper: None,
            report,
        };
        if !settings.members.iter().any(|m| m == member) {
            return Err(RoundError::NotMember {
                member: member.into(),
            });
        }
        round.lease = round.etcd.grant(round.ttl, CALL)?;
        round
            .state
            .renewed_ms
            .store(round.elapsed_ms(), Ordering::SeqCst);
        round.keeper = Some(start_keeper(
            round.etcd.clone(),
            round.lease,
            round.ttl,
            round.state.clone(),
        ));
        Ok(round)
    }

    fn elapsed_ms(&self) -> u64 {
        self.state.started.elapsed().as_millis() as u64
    }

    /// The lease was renewed within its TTL and has not expired.
    pub fn lease_alive(&self) -> bool {
        !self.lease_left().is_zero()
    }

    /// How long the lease lasts without another renewal, as this member
    /// can know it: a cut-off member stops counting on it then.
    fn lease_left(&self) -> Duration {
        if self.state.expired.load(Ordering::SeqCst) {
            return Duration::ZERO;
        }
        let now = self.elapsed_ms();
        let since = now - self.state.renewed_ms.load(Ordering::SeqCst).min(now);
        Duration::from_millis((self.ttl * 1000).saturating_sub(since))
    }

    /// The time one call may take: `CALL`, what is left before `deadline`,
    /// and what is left of the lease, whichever is least.
    fn budget(&self, deadline: Instant) -> Duration {
        CALL.min(left(deadline))
            .min(self.lease_left())
            .max(Duration::from_millis(1))
    }

    fn member(&self) -> &str {
        &self.report.member
    }

    /// Joins the group's open round (opening one if there is none, or
    /// replacing one that is over), then waits for every member within the
    /// join time; the round is then closed to newcomers.
    pub fn join(&mut self, interrupted: &dyn Fn() -> bool) -> Result<(), RoundError> {
        let deadline = Instant::now() + self.join;
        let open = format!("{}open", self.base);
        let (round, rev) = loop {
            if interrupted() {
                return Err(RoundError::Interrupted("joined"));
            }
            if let Some(joined) = self.try_join(&open)? {
                break joined;
            }
            if Instant::now() >= deadline {
                return Err(RoundError::Timeout {
                    stage: "joined",
                    missing: "an open round".into(),
                });
            }
            std::thread::sleep(POLL * 4);
        };
        self.prefix = format!("{}rounds/{round}/", self.base);
        self.report.round = Some(round);
        self.record_own(Stage::Joined, rev);
        self.wait(Stage::Joined, rev, deadline, interrupted)?;
        let closed = format!("{}closed/{}", self.prefix, self.member());
        self.etcd.put(&closed, "", self.lease, CALL)?;
        Ok(())
    }

    /// One attempt at joining the open round: the round and the revision
    /// of this member's key, or `None` to try again.
    fn try_join(&mut self, open: &str) -> Result<Option<(String, i64)>, RoundError> {
        let Some(cur) = self.etcd.get(open, CALL)? else {
            let id = format!("{:x}", self.lease);
            self.etcd
                .txn(&[Compare::Absent(open)], &[put(open, &id, 0)], CALL)?;
            return Ok(None);
        };
        let prefix = format!("{}rounds/{}/", self.base, cur.value);
        let (kvs, _) = self.etcd.range_prefix(&prefix, CALL)?;
        let any_under = |k: &str| {
            let p = format!("{prefix}{k}/");
            kvs.iter().any(|kv| kv.key.starts_with(&p))
        };
        let live = any_under("joined");
        let closed = any_under("closed");
        let aborted = any_under("abort");
        let thawed = self
            .members
            .iter()
            .all(|m| find(&kvs, &format!("{prefix}thaw/{m}")).is_some());
        // A round that is over — nobody left, aborted, or every member
        // thawing — is replaced by a new one at once; its keys go with
        // their members' leases.
        if !live || aborted || (closed && thawed) {
            if live || closed || aborted {
                let id = format!("{:x}", self.lease);
                let when = [Compare::ModRevisionIs(open, cur.mod_revision)];
                self.etcd.txn(&when, &[put(open, &id, 0)], CALL)?;
                return Ok(None);
            }
        } else if closed || find(&kvs, &format!("{prefix}joined/{}", self.member())).is_some() {
            return Err(RoundError::Closed { round: cur.value });
        }
        let me = format!("{prefix}joined/{}", self.member());
        let when = [Compare::ValueIs(open, &cur.value), Compare::Absent(&me)];
        let (ok, rev) = self.etcd.txn(&when, &[put(&me, "", self.lease)], CALL)?;
        Ok(ok.then_some((cur.value, rev)))
    }

    /// This member reached `stage` (`ok`) or failed there (`reason`): its
    /// key written, then every member's awaited until `deadline`.
    pub fn pass(
        &mut self,
        stage: Stage,
        outcome: Result<(), String>,
        deadline: Instant,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<(), RoundError> {
        if let Err(reason) = outcome {
            self.abort(stage, &reason);
            return Err(RoundError::Aborted {
                member: self.member().into(),
                stage: stage.name().into(),
                reason,
            });
        }
        let key = format!("{}{}/{}", self.prefix, stage.name(), self.member());
        let rev = match self.put_while_leased(&key, deadline, interrupted) {
            Ok(rev) => rev,
            Err(e) => {
                self.abort(
                    stage,
                    &format!("could not record reaching {}: {e}", stage.name()),
                );
                return Err(e.into());
            }
        };
        self.record_own(stage, rev);
        self.wait(stage, rev, deadline, interrupted)
    }

    /// Puts `key` under this member's lease, trying again while no endpoint
    /// answers in time (the cluster electing a new leader after losing
    /// one) for as long as the lease and `deadline` last: a quorum that
    /// still stands completes the round. A refusal is final. The put is the
    /// same each time, so one that landed late changes nothing.
    fn put_while_leased(
        &self,
        key: &str,
        deadline: Instant,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<i64, EtcdError> {
        loop {
            match self.etcd.put(key, "", self.lease, self.budget(deadline)) {
                Err(EtcdError::Unreachable(why))
                    if self.lease_alive() && Instant::now() < deadline && !interrupted() =>
                {
                    log::debug!("group: {key} not recorded yet ({why}); trying again");
                    std::thread::sleep(POLL);
                }
                other => return other,
            }
        }
    }

    /// This member gives up at `stage`: the reason kept for the others
    /// (best effort, briefly: it never delays a thaw by more than that).
    pub fn abort(&mut self, stage: Stage, reason: &str) {
        let own = AbortReport {
            member: self.member().into(),
            stage: stage.name().into(),
            reason: reason.into(),
        };
        self.report.abort.get_or_insert(own.clone());
        self.mark_aborted(&own, Duration::from_millis(300));
    }

    /// This member's abort key, naming the member that failed: the round
    /// is then over for newcomers too (the next round opens at once), and
    /// whoever reads it still sees who failed first.
    fn mark_aborted(&self, a: &AbortReport, timeout: Duration) {
        if self.prefix.is_empty() {
            return;
        }
        let key = format!("{}abort/{}", self.prefix, self.member());
        let value = serde_json::json!({"member": a.member, "stage": a.stage, "reason": a.reason})
            .to_string();
        let _ = self.etcd.put(&key, &value, self.lease, timeout);
    }

    /// While this member's snapshot command runs: watches the round until
    /// `stopped` (the command ended: `Ok`), the deadline (`Ok`), an abort
    /// or a member's lease gone (`Err`: thaw now), or this member's own
    /// lease lost (`Err`). Writes nothing unless the round aborted.
    pub fn watch(
        &mut self,
        deadline: Instant,
        stopped: &dyn Fn() -> bool,
    ) -> Result<(), RoundError> {
        while !stopped() && Instant::now() < deadline {
            if !self.lease_alive() {
                self.report.abort.get_or_insert(AbortReport {
                    member: self.member().into(),
                    stage: Stage::Snapshot.name().into(),
                    reason: "lease lost".into(),
                });
                return Err(RoundError::LeaseLost(self.ttl));
            }
            // A local read, briefly: the command's end must be answered at
            // once, even while the cluster elects a new leader (a linear
            // read would wait that out). The barriers after it read and
            // write through the leader.
            let budget = self.budget(deadline).min(WATCH_CALL);
            if let Ok((kvs, _)) = self.etcd.range_prefix_local(&self.prefix, budget) {
                if let Verdict::Abort(a) = self.judge(&kvs, Stage::Snapshot) {
                    return Err(self.aborted(a));
                }
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// The thaw is about to begin: this member's "thaw" key, within
    /// `timeout` (the thaw never waits longer for it).
    pub fn thawing(&mut self, timeout: Duration) {
        let key = format!("{}thaw/{}", self.prefix, self.member());
        if let Ok(rev) = self.etcd.put(&key, "", self.lease, timeout) {
            self.record_own(Stage::Thaw, rev);
        }
    }

    /// Reads the round once more after the thaw: every member's revisions
    /// and the proof of the common instant.
    pub fn prove(&mut self) {
        let Ok((kvs, _)) = self.etcd.range_prefix(&self.prefix, CALL) else {
            self.report.proof = Some(Proof {
                last_frozen_revision: None,
                first_thaw_revision: None,
                holds: false,
            });
            return;
        };
        let prefix = self.prefix.clone();
        for m in &mut self.report.members {
            let rev =
                |s: &str| find(&kvs, &format!("{prefix}{s}/{}", m.name)).map(|k| k.mod_revision);
            m.joined = m.joined.or(rev("joined"));
            m.pre = m.pre.or(rev("pre"));
            m.frozen = m.frozen.or(rev("frozen"));
            m.snapshot = m.snapshot.or(rev("snapshot"));
            m.thaw = m.thaw.or(rev("thaw"));
        }
        let frozen: Option<Vec<i64>> = self.report.members.iter().map(|m| m.frozen).collect();
        let last_frozen = frozen.and_then(|f| f.into_iter().max());
        let first_thaw = self.report.members.iter().filter_map(|m| m.thaw).min();
        let holds = matches!((last_frozen, first_thaw), (Some(f), Some(t)) if f < t);
        self.report.proof = Some(Proof {
            last_frozen_revision: last_frozen,
            first_thaw_revision: first_thaw,
            holds,
        });
        self.report.consistent = holds && self.report.abort.is_none();
    }

    fn record_own(&mut self, stage: Stage, rev: i64) {
        let me = self.report.member.clone();
        if let Some(m) = self.report.members.iter_mut().find(|m| m.name == me) {
            let slot = match stage {
                Stage::Joined => &mut m.joined,
                Stage::Pre => &mut m.pre,
                Stage::Frozen => &mut m.frozen,
                Stage::Snapshot => &mut m.snapshot,
                Stage::Thaw => &mut m.thaw,
            };
            *slot = Some(rev);
        }
    }

    /// Waits until every member's key of `stage` exists; an abort, a member
    /// whose lease is gone, this member's own lease lost, a signal or the
    /// deadline ends the wait.
    fn wait(
        &mut self,
        stage: Stage,
        own: i64,
        deadline: Instant,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<(), RoundError> {
        let started = Instant::now();
        let mut missing = self.members.join(", ");
        loop {
            if interrupted() {
                self.abort(stage, "interrupted by a signal");
                return Err(RoundError::Interrupted(stage.name()));
            }
            if !self.lease_alive() {
                self.report.abort.get_or_insert(AbortReport {
                    member: self.member().into(),
                    stage: stage.name().into(),
                    reason: "lease lost".into(),
                });
                return Err(RoundError::LeaseLost(self.ttl));
            }
            let budget = self.budget(deadline);
            if let Ok((kvs, rev)) = self.etcd.range_prefix(&self.prefix, budget) {
                match self.judge(&kvs, stage) {
                    Verdict::Pass => {
                        self.report.barriers.push(BarrierReport {
                            stage: stage.name().into(),
                            revision: own,
                            passed_revision: rev,
                            waited_ms: started.elapsed().as_secs_f64() * 1000.0,
                        });
                        return Ok(());
                    }
                    Verdict::Abort(a) => return Err(self.aborted(a)),
                    Verdict::Wait(m) => missing = m,
                }
            }
            if Instant::now() >= deadline {
                self.abort(
                    stage,
                    &format!("{missing} did not reach {} in time", stage.name()),
                );
                return Err(RoundError::Timeout {
                    stage: stage.name(),
                    missing,
                });
            }
            std::thread::sleep(POLL.min(left(deadline)));
        }
    }

    fn aborted(&mut self, a: AbortReport) -> RoundError {
        if let Some(m) = self.report.members.iter_mut().find(|m| m.name == a.member) {
            m.aborted = Some(a.stage.clone());
        }
        self.report.abort.get_or_insert(a.clone());
        // Briefly: etcd just answered, and the thaw waits for this.
        self.mark_aborted(&a, Duration::from_millis(100));
        RoundError::Aborted {
            member: a.member,
            stage: a.stage,
            reason: a.reason,
        }
    }

    /// What the round's keys say at `stage`.
    fn judge(&self, kvs: &[Kv], stage: Stage) -> Verdict {
        let abort = format!("{}abort/", self.prefix);
        if let Some(kv) = kvs.iter().find(|kv| kv.key.starts_with(&abort)) {
            let v: serde_json::Value = serde_json::from_str(&kv.value).unwrap_or_default();
            let writer = &kv.key[abort.len()..];
            return Verdict::Abort(AbortReport {
                member: v["member"].as_str().unwrap_or(writer).into(),
                stage: v["stage"].as_str().unwrap_or("unknown").into(),
                reason: v["reason"].as_str().unwrap_or("").into(),
            });
        }
        let has = |s: &str, m: &str| find(kvs, &format!("{}{s}/{m}", self.prefix)).is_some();
        if stage != Stage::Joined {
            if let Some(m) = self.members.iter().find(|m| !has("joined", m)) {
                return Verdict::Abort(AbortReport {
                    member: m.clone(),
                    stage: stage.name().into(),
                    reason: "its lease expired (the member died or was cut off from etcd)".into(),
                });
            }
        }
        let missing: Vec<&str> = self
            .members
            .iter()
            .filter(|m| !has(stage.name(), m))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Wait(missing.join(", "))
        }
    }
}

impl Drop for Round {
    /// The keeper stops; the lease is not revoked: its keys stay until its
    /// TTL, so a slower member still sees that this one passed every
    /// barrier.
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(k) = self.keeper.take() {
            let _ = k.join();
        }
    }
}

enum Verdict {
    Pass,
    Abort(AbortReport),
    Wait(String),
}

fn put<'a>(key: &'a str, value: &'a str, lease: i64) -> Op<'a> {
    Op::Put { key, value, lease }
}

fn find<'a>(kvs: &'a [Kv], key: &str) -> Option<&'a Kv> {
    kvs.iter().find(|kv| kv.key == key)
}

fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// The keeper: renews the lease every third of its TTL; etcd saying it
/// expired is final.
fn start_keeper(etcd: Etcd, lease: i64, ttl: u64, state: Arc<LeaseState>) -> JoinHandle<()> {
    let every = Duration::from_millis(ttl * 1000 / 3).max(Duration::from_millis(100));
    std::thread::spawn(move || {
        let mut next = Instant::now() + every;
        while !state.stop.load(Ordering::SeqCst) {
            if Instant::now() < next {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            next = Instant::now() + every;
            match etcd.keep_alive(lease, every) {
                Ok(left) if left > 0 => {
                    let ms = state.started.elapsed().as_millis() as u64;
                    state.renewed_ms.store(ms, Ordering::SeqCst);
                }
                Ok(_) => state.expired.store(true, Ordering::SeqCst),
                Err(_) => {}
            }
        }
    })
}
