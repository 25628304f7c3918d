//! The run's options: one value, parsed and checked once (`main.rs`), read
//! by every run, and given back as a command line by [`Options::to_args`]
//! beside the parser — so the post guard's `quiesce recover` and any other
//! run this one starts run with exactly this run's options (its trail, its
//! metrics, its directories), never a hand-made subset.
//!
//! [`Context`] is what a run reads: the options as parsed, and what follows
//! from them once (the run and state directories, where applications come
//! from, where the results go).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::apps::AppSources;
use super::metrics::{MetricsDir, Outputs};
use super::pending::{self, PendingOptions};
use super::takeover::{Rules, Takeover};
use crate::config::{DEFAULT_APPS_DIR, DEFAULT_CONFIG_PATH, DEFAULT_HOST_CONFIG_PATH};
use crate::freeze::{mounts, state};
use crate::group::settings::DEFAULT_GROUPS_DIR;
use crate::trail::{self, Facility, TrailConfig, TrailMode};

/// The options every command shares (SPEC §2), as the command line gives
/// them. Paths are made absolute once, by [`Context::new`].
///
/// The fields' comments are their `--help` text, written for a terminal,
/// not for rustdoc (`[SnapshotThread]` and `<operation>` are literal).
#[derive(Args, Debug, Clone, PartialEq, Eq)]
#[allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
pub struct Options {
    /// An application's configuration (the extension's format). Repeatable:
    /// the applications, in order; then nothing else is read [default:
    /// the plugin-host file's numberOfPlugins list, else every *.json of
    /// --apps-dir, else /etc/azure/VMSnapshotScriptPluginConfig.json].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Vec<PathBuf>,
    /// quiesce's own applications, one config each: every *.json, in
    /// lexical order (used when the plugin-host file lists no plugins).
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_APPS_DIR)]
    pub apps_dir: PathBuf,
    /// The extension's plugin-host file: its timeoutInSeconds caps every
    /// config's; its numberOfPlugins/pluginConfigPath<i> list the applications.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_HOST_CONFIG_PATH)]
    pub host_config: PathBuf,
    /// Bridge mode, as the extension hook runs quiesce: quiesce's own set
    /// (--apps-dir, else /etc/quiesce/VMSnapshotScriptPluginConfig.json);
    /// the plugin-host file's list is the extension's and is not read.
    #[arg(long, global = true)]
    pub bridge: bool,
    /// The Azure extension's own config: check reads it to recognise
    /// bridge mode (its scripts are quiesce's hook) and verify the set-up.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub extension_config: PathBuf,
    /// The Azure extension's workload.conf: when it names a workload
    /// (postgres, mariadb, mysql), one more application, run by quiesce's
    /// built-in method; the only one when nothing else names an
    /// application. Not read in bridge mode (the extension reads it).
    #[arg(long, global = true, value_name = "PATH", default_value = crate::config::workload_conf::DEFAULT_WORKLOAD_CONF)]
    pub workload_conf: PathBuf,
    /// More detail on stderr: every audit record is echoed as a line, and
    /// check lists every mount.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Runner state directory on tmpfs: lock, recovery record, pre-script holders.
    #[arg(long, global = true, value_name = "DIR", default_value = state::DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// Durable state: each run's status as last-<operation>.json, and the
    /// record of each pending post-script, written before
    /// its pre-script starts (root-owned, 0700; created if missing).
    #[arg(long, global = true, value_name = "DIR", default_value = pending::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// After a separate `quiesce pre`, how long the `quiesce post` call may
    /// take to come; at that time the pre's post guard runs the overdue
    /// post-script (as would `quiesce recover` or the next run). The default
    /// is the 1800 s script cap plus the 60 s freeze maximum.
    #[arg(long, global = true, value_name = "SECS", default_value_t = pending::DEFAULT_POST_DUE_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub post_due: u64,
    /// The extension's backup settings; its [SnapshotThread] MountsToSkip is honoured.
    #[arg(long, global = true, value_name = "PATH", default_value = mounts::VMBACKUP_CONF_PATH)]
    pub vmbackup_conf: PathBuf,
    /// Sandbox policy for scripts [default: /etc/quiesce/policy.json if
    /// present, else the built-in policy].
    #[arg(long, global = true, value_name = "PATH")]
    pub policy: Option<PathBuf>,
    /// Run scripts WITHOUT the sandbox (loudly logged; never the default).
    #[arg(long, global = true)]
    pub no_sandbox: bool,
    /// Syslog socket of the audit trail.
    #[arg(long, global = true, value_name = "PATH", default_value = trail::DEFAULT_SOCKET)]
    pub syslog_socket: PathBuf,
    /// Syslog facility of the audit trail (authpriv, auth, daemon, user, local0..local7).
    #[arg(long, global = true, value_name = "NAME", default_value = "authpriv", value_parser = parse_facility)]
    pub syslog_facility: Facility,
    /// Where the audit trail goes: auto (the journal when its socket exists,
    /// else syslog), journal, syslog or both.
    #[arg(long, global = true, value_name = "SINK", default_value = "auto", value_parser = parse_trail)]
    pub trail: TrailMode,
    /// journald's native socket (for tests and containers).
    #[arg(long, global = true, value_name = "PATH", default_value = trail::DEFAULT_JOURNAL_SOCKET)]
    pub journal_socket: PathBuf,
    /// node-exporter textfile directory for quiesce.prom [default:
    /// /var/lib/prometheus/node-exporter when it exists].
    #[arg(long, global = true, value_name = "DIR")]
    pub metrics_dir: Option<PathBuf>,
    /// A stock dispatcher's directory (/etc/qemu/fsfreeze-hook.d,
    /// /etc/vmware-tools/backupScripts.d) taken over: each script it would
    /// run is one application (freeze, then thaw), in its order, with its
    /// ignore rules (VMware's under `hook vmware`, else qemu's).
    #[arg(long, global = true, value_name = "DIR")]
    pub takeover_dir: Option<PathBuf>,
    /// Consistency group (SPEC §11): snapshot joins the group's round in
    /// etcd and freezes with every other member; check reports the group.
    #[arg(long, global = true, value_name = "NAME")]
    pub group: Option<String>,
    /// Where the group files are: DIR/NAME.json (root's, 600).
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_GROUPS_DIR)]
    pub groups_dir: PathBuf,
    /// This member's name in the group [default: the host name].
    #[arg(long, global = true, value_name = "NAME")]
    pub group_member: Option<String>,
    /// How long to wait for every member to join [default: the group
    /// file's joinSeconds].
    #[arg(long, global = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub group_join: Option<u64>,
}

fn parse_trail(s: &str) -> Result<TrailMode, String> {
    s.parse::<TrailMode>().map_err(|e| e.to_string())
}

fn parse_facility(s: &str) -> Result<Facility, String> {
    s.parse::<Facility>().map_err(|e| e.to_string())
}

impl Default for Options {
    /// The options of a command line that gives none: clap's defaults above.
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            options: Options,
        }
        Only::parse_from(["quiesce"]).options
    }
}

impl Options {
    /// These options as a command line (before the subcommand): every one
    /// given, defaults included, so the run it starts does not depend on
    /// the defaults of the binary it execs.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut pair = |flag: &str, value: OsString| {
            args.push(flag.into());
            args.push(value);
        };
        for c in &self.config {
            pair("--config", c.into());
        }
        pair("--apps-dir", self.apps_dir.clone().into());
        pair("--host-config", self.host_config.clone().into());
        pair("--extension-config", self.extension_config.clone().into());
        pair("--workload-conf", self.workload_conf.clone().into());
        pair("--run-dir", self.run_dir.clone().into());
        pair("--state-dir", self.state_dir.clone().into());
        pair("--post-due", self.post_due.to_string().into());
        pair("--vmbackup-conf", self.vmbackup_conf.clone().into());
        if let Some(p) = &self.policy {
            pair("--policy", p.into());
        }
        pair("--syslog-socket", self.syslog_socket.clone().into());
        pair("--syslog-facility", self.syslog_facility.to_string().into());
        pair("--trail", self.trail.name().into());
        pair("--journal-socket", self.journal_socket.clone().into());
        if let Some(m) = &self.metrics_dir {
            pair("--metrics-dir", m.into());
        }
        if let Some(t) = &self.takeover_dir {
            pair("--takeover-dir", t.into());
        }
        if let Some(g) = &self.group {
            pair("--group", g.into());
        }
        pair("--groups-dir", self.groups_dir.clone().into());
        if let Some(m) = &self.group_member {
            pair("--group-member", m.into());
        }
        if let Some(j) = self.group_join {
            pair("--group-join", j.to_string().into());
        }
        let flags = [
            (self.bridge, "--bridge"),
            (self.verbose, "--verbose"),
            (self.no_sandbox, "--no-sandbox"),
        ];
        args.extend(flags.iter().filter(|f| f.0).map(|f| f.1.into()));
        args
    }

    /// Every path made absolute: the operator's paths are relative to the
    /// cwd, and the trust checks must see every directory above them.
    fn absolute(self) -> Options {
        let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        Options {
            config: self.config.into_iter().map(abs).collect(),
            apps_dir: abs(self.apps_dir),
            host_config: abs(self.host_config),
            extension_config: abs(self.extension_config),
            workload_conf: abs(self.workload_conf),
            run_dir: abs(self.run_dir),
            state_dir: abs(self.state_dir),
            vmbackup_conf: abs(self.vmbackup_conf),
            policy: self.policy.map(abs),
            metrics_dir: self.metrics_dir.map(abs),
            takeover_dir: self.takeover_dir.map(abs),
            groups_dir: abs(self.groups_dir),
            ..self
        }
    }
}

/// What every run reads: the options, and what follows from them, built
/// once.
#[derive(Debug, Clone)]
pub struct Context {
    pub options: Options,
    /// Where the applications come from (SPEC §3.1).
    pub apps: AppSources,
    /// `/run/quiesce`: lock, recovery state, pre-script holders.
    pub run_dir: state::RunDir,
    /// `--state-dir`, `--post-due`: pending post-scripts (SPEC §6.6).
    pub pending: PendingOptions,
    /// Where the last result and the metrics go once the run is over.
    pub outputs: Outputs,
}

impl Context {
    pub fn new(options: Options) -> Context {
        let o = options.absolute();
        Context {
            apps: AppSources {
                explicit: o.config.clone(),
                apps_dir: o.apps_dir.clone(),
                host_config: o.host_config.clone(),
                bridge: o.bridge,
                extension_config: o.extension_config.clone(),
                workload_conf: o.workload_conf.clone(),
                takeover: o.takeover_dir.clone().map(|dir| Takeover {
                    dir,
                    rules: Rules::QemuGa,
                    configs: o.state_dir.join("takeover"),
                }),
            },
            run_dir: state::RunDir::new(o.run_dir.clone()),
            pending: PendingOptions {
                state_dir: state::RunDir::new(o.state_dir.clone()),
                post_due: Duration::from_secs(o.post_due),
                run_dir: state::RunDir::new(o.run_dir.clone()),
            },
            outputs: Outputs {
                state_dir: Some(o.state_dir.clone()),
                metrics_dir: o
                    .metrics_dir
                    .clone()
                    .map_or(MetricsDir::Default, MetricsDir::Given),
            },
            options: o,
        }
    }

    /// The trail of a run with operation id `operation_id`.
    pub fn trail_config(&self, operation_id: &str) -> TrailConfig {
        let o = &self.options;
        let mut cfg = TrailConfig::new(operation_id.to_string());
        cfg.socket = o.syslog_socket.clone();
        cfg.facility = o.syslog_facility;
        cfg.mode = o.trail;
        cfg.journal_socket = o.journal_socket.clone();
        cfg.verbose = o.verbose;
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    fn parse(args: &[OsString]) -> Options {
        let argv = std::iter::once(OsString::from("quiesce")).chain(args.iter().cloned());
        Cli::try_parse_from(argv).unwrap().options
    }

    /// Every option, none at its default: what `to_args` gives back parses
    /// to the same options (the post guard's recovery runs with exactly the
    /// run's options).
    #[test]
    fn every_option_round_trips_through_to_args() {
        let o = Options {
            config: vec!["/a/one.json".into(), "/a/two.json".into()],
            apps_dir: "/x/apps.d".into(),
            host_config: "/x/host.json".into(),
            bridge: true,
            extension_config: "/x/ext.json".into(),
            workload_conf: "/x/workload.conf".into(),
            verbose: true,
            run_dir: "/x/run".into(),
            state_dir: "/x/state".into(),
            post_due: 77,
            vmbackup_conf: "/x/vmbackup.conf".into(),
            policy: Some("/x/policy.json".into()),
            no_sandbox: true,
            syslog_socket: "/x/log".into(),
            syslog_facility: Facility::Local3,
            trail: TrailMode::Both,
            journal_socket: "/x/journal".into(),
            metrics_dir: Some("/x/metrics".into()),
            takeover_dir: Some("/x/fsfreeze-hook.d".into()),
            group: Some("pg".into()),
            groups_dir: "/x/groups.d".into(),
            group_member: Some("db1".into()),
            group_join: Some(12),
        };
        assert_ne!(o.trail, Options::default().trail);
        assert_ne!(o.syslog_facility, Options::default().syslog_facility);
        assert_eq!(parse(&o.to_args()), o);
        for trail in [TrailMode::Auto, TrailMode::Journal, TrailMode::Syslog] {
            let t = Options { trail, ..o.clone() };
            assert_eq!(parse(&t.to_args()), t);
        }
    }

    #[test]
    fn the_defaults_round_trip_too() {
        let d = Options::default();
        assert_eq!(parse(&d.to_args()), d);
        assert_eq!(parse(&[]), d);
    }

    #[test]
    fn relative_paths_become_absolute_once() {
        let ctx = Context::new(Options {
            state_dir: "rel/state".into(),
            ..Options::default()
        });
        assert!(ctx.options.state_dir.is_absolute());
        assert_eq!(ctx.pending.state_dir.path, ctx.options.state_dir);
    }
}
