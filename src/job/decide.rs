//! The decision table of SPEC.md §5 as pure functions, so every row is
//! unit-tested apart from processes and filesystems. Every transition of a
//! run is decided here — after the pre-check and the pre-script, after a
//! signal, after a freeze that failed or mounts that could not be opened —
//! and the outcome and consistency follow from what happened; the steps of
//! the job only carry the decisions out.

use super::apps::{App, Apps};
use crate::job::status::{Consistency, Outcome};

/// The settings that decide the table (from the config, or the extension's
/// defaults when the config could not be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub continue_on_failure: bool,
    pub fs_freeze_enabled: bool,
}

impl Settings {
    /// The settings of several applications (SPEC §3.1): the freeze is on
    /// only if every application allows it (one that depends on no freeze
    /// wins); a failure is let through only if every application that
    /// `failed` allows it.
    pub fn of_apps(apps: &Apps, failed: impl Fn(&App) -> bool) -> Settings {
        Settings {
            continue_on_failure: apps
                .list
                .iter()
                .filter(|a| failed(a))
                .all(App::continue_on_failure),
            fs_freeze_enabled: apps.list.iter().all(App::fs_freeze_enabled),
        }
    }

    /// `quiesce freeze -- CMD`: no scripts, the freeze is the point, and a
    /// failed freeze takes no snapshot.
    pub const FREEZE_ONLY: Settings = Settings {
        continue_on_failure: false,
        fs_freeze_enabled: true,
    };
}

/// Whether any script may run after the pre-check: not when an application
/// whose pre-check failed does not allow going on (then nothing runs and no
/// snapshot is taken).
pub fn scripts_may_run(apps: &Apps) -> bool {
    Settings::of_apps(apps, |a| !a.pc.passed()).continue_on_failure
}

/// What to do once the pre-check and the pre-script are over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    /// Freeze the filesystems around the snapshot command.
    pub freeze: bool,
    /// Run the snapshot command at all.
    pub snapshot: bool,
}

/// After a signal to the runner: no freeze and no snapshot any more (the
/// post-script still runs, and a second signal stops it).
pub fn after_signal() -> Next {
    Next {
        freeze: false,
        snapshot: false,
    }
}

/// Row 1–3 of the table: after the pre-check (`precheck_ok`) and, when it
/// passed, the pre-script (`pre_ok`).
pub fn after_pre(p: Settings, precheck_ok: bool, pre_ok: bool) -> Next {
    let none = Next {
        freeze: false,
        snapshot: false,
    };
    if precheck_ok && pre_ok {
        return Next {
            freeze: p.fs_freeze_enabled,
            snapshot: true,
        };
    }
    if !p.continue_on_failure {
        return none;
    }
    if !precheck_ok {
        // No script runs; freeze + snapshot (crash-consistent if freeze is off).
        return Next {
            freeze: p.fs_freeze_enabled,
            snapshot: true,
        };
    }
    // Pre-script failed: a filesystem-consistent fallback needs the freeze;
    // without it the extension takes no snapshot, and neither do we.
    if p.fs_freeze_enabled {
        Next {
            freeze: true,
            snapshot: true,
        }
    } else {
        none
    }
}

/// Row 4: when the freeze failed — an ioctl, a deadline, or mounts that
/// could not be opened; everything already thawed — whether the snapshot
/// is still taken, without freeze. Never after a signal.
pub fn snapshot_after_freeze_failure(p: Settings, interrupted: bool) -> bool {
    p.continue_on_failure && !interrupted
}

/// `quiesce freeze -- CMD`: success only when every filesystem was frozen
/// while CMD ran and succeeded, with no error; then the copy is
/// filesystem-consistent.
pub fn freeze_only(f: Facts) -> (Outcome, Consistency) {
    if f.froze && f.snapshot_ok && !f.any_error {
        (Outcome::Success, Consistency::Filesystem)
    } else {
        (Outcome::Failure, Consistency::None)
    }
}

/// What the run achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The pre-check passed and the pre-script succeeded.
    pub pre_ok: bool,
    /// Every planned filesystem was frozen for the snapshot.
    pub froze: bool,
    /// The snapshot command ran and succeeded.
    pub snapshot_ok: bool,
    /// The post-script ran and failed (or timed out).
    pub post_failed: bool,
    /// Any error was reported (pre-check, pre, freeze, snapshot, post).
    pub any_error: bool,
}

/// The consistency of the snapshot taken (`none` when none was taken).
pub fn consistency(p: Settings, f: Facts) -> Consistency {
    if !f.snapshot_ok {
        Consistency::None
    } else if f.pre_ok && (f.froze || !p.fs_freeze_enabled) {
        Consistency::Application
    } else if f.froze {
        Consistency::Filesystem
    } else {
        Consistency::Crash
    }
}

/// The run's result, from which the exit code follows.
pub fn outcome(p: Settings, f: Facts) -> Outcome {
    match consistency(p, f) {
        Consistency::None => Outcome::Failure,
        // Rows 1–3 with continueBackupOnFailure=false never snapshot after an
        // error, except a post-script failure: the snapshot stands, but the
        // run is reported as a failure with the post error.
        _ if f.post_failed && !p.continue_on_failure => Outcome::Failure,
        // A snapshot taken while the freeze did not hold (a window the
        // watchdog thawed, SPEC §6.4 point 6): it exists, but the operator
        // asked to fail closed.
        Consistency::Crash if p.fs_freeze_enabled && !p.continue_on_failure => Outcome::Failure,
        Consistency::Application if !f.any_error => Outcome::Success,
        _ => Outcome::Degraded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONT: Settings = Settings {
        continue_on_failure: true,
        fs_freeze_enabled: true,
    };
    const STOP: Settings = Settings {
        continue_on_failure: false,
        fs_freeze_enabled: true,
    };
    const CONT_NOFREEZE: Settings = Settings {
        continue_on_failure: true,
        fs_freeze_enabled: false,
    };

    fn facts(pre_ok: bool, froze: bool, snapshot_ok: bool, post_failed: bool) -> Facts {
        Facts {
            pre_ok,
            froze,
            snapshot_ok,
            post_failed,
            any_error: !pre_ok || post_failed || !snapshot_ok,
        }
    }

    #[test]
    fn all_good_is_application_consistent() {
        assert_eq!(
            after_pre(CONT, true, true),
            Next {
                freeze: true,
                snapshot: true
            }
        );
        let f = facts(true, true, true, false);
        assert_eq!(consistency(CONT, f), Consistency::Application);
        assert_eq!(outcome(CONT, f), Outcome::Success);
        // Freeze disabled by config: still application-consistent.
        assert_eq!(
            after_pre(CONT_NOFREEZE, true, true),
            Next {
                freeze: false,
                snapshot: true
            }
        );
        assert_eq!(
            consistency(CONT_NOFREEZE, facts(true, false, true, false)),
            Consistency::Application
        );
    }

    #[test]
    fn precheck_failure_row() {
        assert_eq!(
            after_pre(CONT, false, false),
            Next {
                freeze: true,
                snapshot: true
            }
        );
        let f = facts(false, true, true, false);
        assert_eq!(consistency(CONT, f), Consistency::Filesystem);
        assert_eq!(outcome(CONT, f), Outcome::Degraded);
        assert_eq!(
            after_pre(CONT_NOFREEZE, false, false),
            Next {
                freeze: false,
                snapshot: true
            }
        );
        assert_eq!(
            consistency(CONT_NOFREEZE, facts(false, false, true, false)),
            Consistency::Crash
        );
        assert_eq!(
            after_pre(STOP, false, false),
            Next {
                freeze: false,
                snapshot: false
            }
        );
        assert_eq!(
            outcome(STOP, facts(false, false, false, false)),
            Outcome::Failure
        );
    }

    #[test]
    fn pre_script_failure_row() {
        assert_eq!(
            after_pre(CONT, true, false),
            Next {
                freeze: true,
                snapshot: true
            }
        );
        assert_eq!(
            consistency(CONT, facts(false, true, true, false)),
            Consistency::Filesystem
        );
        // Like the extension: no freeze, no fallback snapshot.
        assert_eq!(
            after_pre(CONT_NOFREEZE, true, false),
            Next {
                freeze: false,
                snapshot: false
            }
        );
        assert_eq!(
            after_pre(STOP, true, false),
            Next {
                freeze: false,
                snapshot: false
            }
        );
    }

    #[test]
    fn freeze_failure_row() {
        assert!(snapshot_after_freeze_failure(CONT, false));
        assert!(!snapshot_after_freeze_failure(STOP, false));
        // A signal during the freeze: no snapshot, whatever the setting.
        assert!(!snapshot_after_freeze_failure(CONT, true));
        let f = Facts {
            any_error: true,
            ..facts(true, false, true, false)
        };
        assert_eq!(consistency(CONT, f), Consistency::Crash);
        assert_eq!(outcome(CONT, f), Outcome::Degraded);
    }

    #[test]
    fn a_window_that_did_not_hold_is_crash_consistent_and_fails_closed_when_asked() {
        // The snapshot command succeeded, but the watchdog thawed mid-window.
        let f = Facts {
            any_error: true,
            ..facts(true, false, true, false)
        };
        assert_eq!(consistency(CONT, f), Consistency::Crash);
        assert_eq!(outcome(CONT, f), Outcome::Degraded);
        assert_eq!(consistency(STOP, f), Consistency::Crash);
        assert_eq!(outcome(STOP, f), Outcome::Failure);
    }

    #[test]
    fn a_signal_stops_the_freeze_and_the_snapshot() {
        let n = after_signal();
        assert!(!n.freeze && !n.snapshot);
    }

    #[test]
    fn freeze_only_succeeds_only_when_frozen_and_ok() {
        let ok = Facts {
            any_error: false,
            ..facts(false, true, true, false)
        };
        assert_eq!(freeze_only(ok), (Outcome::Success, Consistency::Filesystem));
        for f in [
            Facts { froze: false, ..ok },
            Facts {
                snapshot_ok: false,
                ..ok
            },
            Facts {
                any_error: true,
                ..ok
            },
        ] {
            assert_eq!(freeze_only(f), (Outcome::Failure, Consistency::None));
        }
    }

    #[test]
    fn snapshot_failure_row() {
        for p in [CONT, STOP] {
            let f = facts(true, true, false, false);
            assert_eq!(consistency(p, f), Consistency::None);
            assert_eq!(outcome(p, f), Outcome::Failure);
        }
    }

    #[test]
    fn post_failure_row() {
        let f = facts(true, true, true, true);
        assert_eq!(consistency(CONT, f), Consistency::Application);
        assert_eq!(outcome(CONT, f), Outcome::Degraded);
        assert_eq!(consistency(STOP, f), Consistency::Application);
        assert_eq!(outcome(STOP, f), Outcome::Failure);
    }
}
