//! The order of a freeze window, every path (SPEC.md §6.4): freeze, run the
//! snapshot command, thaw, kill — thaw always before kill (a process blocked
//! writing to a frozen filesystem cannot die until the thaw). The steps are
//! behind a trait, so the order and the decisions are unit-tested without
//! root; [`super::snapshot_command`] carries them out on the kernel.

use std::time::Duration;

use crate::error::{ErrorCode, Problem};
use crate::job::decide::{self, Settings};
use crate::job::status as report;

/// How the snapshot command ended, as the window sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandEnd {
    Exited,
    /// `--max-freeze` passed.
    DeadlinePassed,
    /// A signal reached the runner.
    Interrupted,
    /// The consistency group's round aborted while the command ran.
    GroupAborted,
}

/// The steps of a window, behind a trait so that their order — above all
/// thaw before kill — and the decisions are unit-tested without root.
pub trait WindowSteps {
    /// Whether there is a window to freeze (a freeze was asked and its
    /// preparation succeeded).
    fn has_window(&self) -> bool;
    /// Freezes every target; on failure nothing of ours is left frozen.
    fn freeze(&mut self) -> Result<(), Problem>;
    /// Thaws what is frozen (idempotent).
    fn thaw(&mut self);
    /// Closes the window — thaws, dismisses the watchdog — then releases
    /// the held trail (idempotent).
    fn close(&mut self);
    fn start_command(&mut self) -> Result<(), Problem>;
    fn wait_command(&mut self) -> CommandEnd;
    /// Kills the command's whole tree.
    fn kill_command(&mut self);
    /// The signal the runner got, if any.
    fn signal(&self) -> Option<i32>;
    /// In a consistency group (SPEC §11), the barrier after the freeze:
    /// this member froze (`ok`) or failed to; every member frozen, or the
    /// round aborted. `None`: no group.
    fn group_frozen(&mut self, _ok: bool) -> Option<Result<(), Problem>> {
        None
    }
    /// In a consistency group, the barrier after the snapshot command:
    /// every member's command done (then this member's thaw is recorded),
    /// or the round aborted. `None`: no group.
    fn group_done(&mut self, _end: CommandEnd) -> Option<Result<(), Problem>> {
        None
    }
}

/// What carrying a window out came to.
#[derive(Debug, Default)]
pub struct Carried {
    /// Every planned filesystem was frozen while the command ran.
    pub froze: bool,
    /// The command was started.
    pub ran: bool,
    /// The command was killed (deadline or signal) and cannot count.
    pub killed: bool,
    /// The command could not be started.
    pub start_failed: bool,
    pub problems: Vec<Problem>,
    pub interrupted: Option<i32>,
    /// The consistency group's round aborted inside the window: whatever
    /// the command did, the snapshot does not count.
    pub group_failed: bool,
}

/// Carries a window out: freeze, run the command, thaw, kill — thaw always
/// before kill (a process blocked on a frozen filesystem cannot die before
/// the thaw). When the freeze fails, [`decide::snapshot_after_freeze_failure`]
/// decides under `settings` whether the command still runs (§5 row 4).
/// `prepared`: the window's preparation failed with this problem.
pub fn carry_out(
    steps: &mut impl WindowSteps,
    settings: Settings,
    max_freeze: Duration,
    prepared: Option<Problem>,
) -> Carried {
    let mut c = Carried::default();
    c.problems.extend(prepared);
    if steps.has_window() {
        match steps.freeze() {
            Ok(()) => c.froze = true,
            Err(p) => c.problems.push(p),
        }
    }
    // A group freezes together or not at all: no snapshot without the
    // freeze, nor after another member failed.
    if let Some(Err(p)) = steps.group_frozen(c.froze && c.problems.is_empty()) {
        c.problems.push(p);
        c.group_failed = true;
        steps.close();
        c.interrupted = steps.signal();
        return c;
    }
    if !c.problems.is_empty() {
        steps.close();
        if !decide::snapshot_after_freeze_failure(settings, steps.signal().is_some()) {
            c.interrupted = steps.signal();
            return c;
        }
        report::say(
            "snapshot without freeze (crash-consistent), as continueBackupOnFailure allows",
        );
    }
    if let Err(p) = steps.start_command() {
        steps.close();
        c.problems.push(p);
        c.start_failed = true;
        return c;
    }
    c.ran = true;
    let end = steps.wait_command();
    match end {
        CommandEnd::Exited => group_done(steps, &mut c, end),
        CommandEnd::DeadlinePassed => {
            steps.thaw();
            c.problems.push(Problem::new(
                ErrorCode::FsFreezeTimeout,
                format!(
                    "the freeze window reached --max-freeze ({} s): filesystems thawed, then the snapshot command was killed",
                    max_freeze.as_secs()
                ),
            ));
            c.killed = true;
            group_done(steps, &mut c, end);
        }
        CommandEnd::Interrupted => {
            steps.thaw();
            c.interrupted = steps.signal().or(Some(libc::SIGTERM));
            c.killed = true;
            group_done(steps, &mut c, end);
        }
        CommandEnd::GroupAborted => {
            // Another member failed: thaw now, then end the command.
            steps.thaw();
            c.killed = true;
            group_done(steps, &mut c, end);
        }
    }
    if c.killed {
        steps.kill_command();
    }
    steps.close();
    c
}
/// The group's barrier after the command (after the thaw when the command
/// did not end by itself: the others are told, the thaw never waits).
fn group_done(steps: &mut impl WindowSteps, c: &mut Carried, end: CommandEnd) {
    if let Some(Err(p)) = steps.group_done(end) {
        c.problems.push(p);
        c.group_failed = true;
        // A signal that ended the wait at the barrier is the run's end
        // (128+N), as anywhere else in the window.
        c.interrupted = c.interrupted.or(steps.signal());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the steps in order; answers as it is told.
    #[derive(Default)]
    struct Steps {
        calls: Vec<&'static str>,
        window: bool,
        freeze_fails: bool,
        start_fails: bool,
        end: Option<CommandEnd>,
        signal: Option<i32>,
        /// In a group: the round aborts at this barrier ("frozen", "done").
        group: Option<&'static str>,
    }

    impl WindowSteps for Steps {
        fn has_window(&self) -> bool {
            self.window
        }
        fn freeze(&mut self) -> Result<(), Problem> {
            self.calls.push("freeze");
            if self.freeze_fails {
                Err(Problem::new(ErrorCode::FsFreezeFailed, "EIO"))
            } else {
                Ok(())
            }
        }
        fn thaw(&mut self) {
            self.calls.push("thaw");
        }
        fn close(&mut self) {
            self.calls.push("close");
        }
        fn start_command(&mut self) -> Result<(), Problem> {
            self.calls.push("start");
            if self.start_fails {
                Err(Problem::new(ErrorCode::SnapshotCommandFailed, "ENOENT"))
            } else {
                Ok(())
            }
        }
        fn wait_command(&mut self) -> CommandEnd {
            self.calls.push("wait");
            self.end.unwrap_or(CommandEnd::Exited)
        }
        fn kill_command(&mut self) {
            self.calls.push("kill");
        }
        fn signal(&self) -> Option<i32> {
            self.signal
        }
        fn group_frozen(&mut self, ok: bool) -> Option<Result<(), Problem>> {
            let g = self.group?;
            self.calls.push("all-frozen");
            Some(if ok && g != "frozen" {
                Ok(())
            } else {
                Err(Problem::new(ErrorCode::GroupAborted, "m1 failed"))
            })
        }
        fn group_done(&mut self, end: CommandEnd) -> Option<Result<(), Problem>> {
            let g = self.group?;
            self.calls.push("all-done");
            Some(if end == CommandEnd::Exited && g != "done" {
                Ok(())
            } else {
                Err(Problem::new(ErrorCode::GroupAborted, "m1 failed"))
            })
        }
    }

    const CONT: Settings = Settings {
        continue_on_failure: true,
        fs_freeze_enabled: true,
    };
    const SECS: Duration = Duration::from_secs(60);

    fn windowed() -> Steps {
        Steps {
            window: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_good_window_freezes_runs_and_closes() {
        let mut s = windowed();
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(s.calls, ["freeze", "start", "wait", "close"]);
        assert!(c.froze && c.ran && !c.killed && c.problems.is_empty());
    }

    /// A group (SPEC §11): the barriers in the window, the thaw after the
    /// last; a member that failed elsewhere thaws this one before its
    /// command is killed, and nothing runs after an abort at "frozen".
    #[test]
    fn in_a_group_the_barriers_come_before_the_command_and_the_thaw() {
        let mut s = Steps {
            group: Some("none"),
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(
            s.calls,
            ["freeze", "all-frozen", "start", "wait", "all-done", "close"]
        );
        assert!(c.froze && !c.group_failed);

        let mut s = Steps {
            group: Some("frozen"),
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(s.calls, ["freeze", "all-frozen", "close"]);
        assert!(c.group_failed && !c.ran);

        let mut s = Steps {
            group: Some("none"),
            freeze_fails: true,
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(
            s.calls,
            ["freeze", "all-frozen", "close"],
            "no crash-consistent fallback"
        );
        assert!(c.group_failed);

        let mut s = Steps {
            group: Some("none"),
            end: Some(CommandEnd::GroupAborted),
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(
            s.calls,
            [
                "freeze",
                "all-frozen",
                "start",
                "wait",
                "thaw",
                "all-done",
                "kill",
                "close"
            ]
        );
        assert!(c.group_failed && c.killed);
    }

    #[test]
    fn at_the_deadline_it_thaws_before_it_kills() {
        let mut s = Steps {
            end: Some(CommandEnd::DeadlinePassed),
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(
            s.calls,
            ["freeze", "start", "wait", "thaw", "kill", "close"]
        );
        assert!(c.killed);
        assert_eq!(c.problems[0].code, ErrorCode::FsFreezeTimeout);
    }

    #[test]
    fn after_a_signal_it_thaws_before_it_kills() {
        let mut s = Steps {
            end: Some(CommandEnd::Interrupted),
            signal: Some(libc::SIGTERM),
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(
            s.calls,
            ["freeze", "start", "wait", "thaw", "kill", "close"]
        );
        assert_eq!(c.interrupted, Some(libc::SIGTERM));
        assert!(c.killed);
    }

    #[test]
    fn a_failed_freeze_snapshots_without_freeze_only_if_allowed() {
        let mut s = Steps {
            freeze_fails: true,
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(s.calls, ["freeze", "close", "start", "wait", "close"]);
        assert!(!c.froze && c.ran);

        let mut s = Steps {
            freeze_fails: true,
            ..windowed()
        };
        let c = carry_out(&mut s, Settings::FREEZE_ONLY, SECS, None);
        assert_eq!(s.calls, ["freeze", "close"]);
        assert!(!c.ran);
    }

    #[test]
    fn a_signal_during_a_failed_freeze_runs_no_command() {
        let mut s = Steps {
            freeze_fails: true,
            signal: Some(libc::SIGINT),
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(s.calls, ["freeze", "close"]);
        assert_eq!(c.interrupted, Some(libc::SIGINT));
    }

    #[test]
    fn a_window_that_could_not_be_prepared_is_a_failed_freeze() {
        let mut s = Steps::default();
        let failed = Problem::new(ErrorCode::FsFreezeFailed, "watchdog not ready");
        let c = carry_out(&mut s, CONT, SECS, Some(failed.clone()));
        assert_eq!(s.calls, ["close", "start", "wait", "close"]);
        let mut s = Steps::default();
        let c2 = carry_out(&mut s, Settings::FREEZE_ONLY, SECS, Some(failed));
        assert_eq!(s.calls, ["close"]);
        assert!(c.ran && !c2.ran);
    }

    #[test]
    fn a_command_that_cannot_start_still_closes_the_window() {
        let mut s = Steps {
            start_fails: true,
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(s.calls, ["freeze", "start", "close"]);
        assert!(c.start_failed && !c.ran);
    }
}
