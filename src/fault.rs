//! Test-only fault points: with `--features fault-injection` (never in the
//! packages), `QUIESCE_FAULT=name[,name…]` makes the named points misbehave,
//! so the suite can prove that a bug, a stuck call or a failed spawn still
//! ends with everything thawed and reaped. Without the feature every point
//! is off and compiles to nothing.

/// Whether the fault point `name` is set for this run.
pub fn active(name: &str) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        std::env::var("QUIESCE_FAULT").is_ok_and(|v| v.split(',').any(|f| f == name))
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = name;
        false
    }
}
