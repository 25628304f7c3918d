//! The extension's workload.conf as an application (SPEC.md §3.2): its
//! pre-check — the file's trust checks, its keys, quiesce's own binary as
//! both phases — in the shape every other application has.

use std::path::Path;

use crate::config::workload_conf::{self, WorkloadConfError};
use crate::config::{Config, ScriptConfig, DEFAULT_POLL_SECS};
use crate::error::{ErrorCode, Problem};
use crate::job::phase::Phase;
use crate::job::preflight::{workload_script, HostFile, Prechecked};
use crate::workload::helper::Source;

/// Whether `path` is a workload.conf (an INI file with a `[workload]`
/// section) rather than a JSON config: how a recovery, which has only the
/// path, knows which pre-check to make again.
pub fn is_workload_conf(path: &Path) -> bool {
    workload_conf::peek(path).is_some_and(|t| t.lines().any(|l| l.trim() == "[workload]"))
}

/// The pre-check of workload.conf: every failure a named row (501, 502,
/// 503, 505), nothing run.
pub fn check(path: &Path, host: &HostFile) -> Prechecked {
    let mut out = Prechecked {
        host_timeout: host.timeout,
        ..Prechecked::default()
    };
    if let Some(p) = &host.problem {
        out.problems.push(p.clone());
    }
    let conf = match workload_conf::load(path) {
        Ok(c) => c,
        Err(e) => {
            let code = match e {
                WorkloadConfError::Parse(..) => ErrorCode::WorkloadConfigError,
                WorkloadConfError::Role(..) => ErrorCode::WorkloadInvalidRole,
                WorkloadConfError::Name(..) => ErrorCode::WorkloadInvalidName,
                WorkloadConfError::Credentials(..) => ErrorCode::WorkloadNoCredentials,
            };
            out.problems.push(Problem::new(
                code,
                format!("workload.conf: {e}; nothing was run"),
            ));
            return out;
        }
    };
    let timeout_secs = host
        .timeout
        .map_or(conf.timeout_secs, |h| conf.timeout_secs.min(h));
    let engine = conf.workload.engine;
    let mut workload = conf.workload;
    // The runner never keeps the password: the helper reads the file again.
    workload.connection.password = None;
    let no_script = ScriptConfig {
        location: Default::default(),
        params: Vec::new(),
        retries: 0,
        sha256: None,
    };
    let config = Config {
        plugin_name: "ScriptRunner".into(),
        pre: no_script.clone(),
        post: no_script,
        timeout_secs,
        continue_on_failure: true,
        fs_freeze_enabled: true,
        poll_secs: DEFAULT_POLL_SECS,
        app_name: Some(format!("workload.conf ({})", engine.name())),
        workload: Some(workload),
    };
    let source = Source::WorkloadConf(path.to_path_buf());
    for (phase, slot) in [(Phase::Pre, &mut out.pre), (Phase::Post, &mut out.post)] {
        match workload_script(phase, &source, &config.pre) {
            Ok(s) => *slot = Some(s),
            Err(p) => out.problems.push(p),
        }
    }
    out.workload = Some((source, engine));
    out.warnings = conf.warnings;
    out.config_sha256 = Some(conf.sha256);
    out.config = Some(config);
    out
}
