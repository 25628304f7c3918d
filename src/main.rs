//! The command line: parse, call the library, map the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use quiesce::commands;
use quiesce::config::{DEFAULT_APPS_DIR, DEFAULT_CONFIG_PATH, DEFAULT_HOST_CONFIG_PATH};
use quiesce::error::Exit;
use quiesce::freeze::{mounts, state};
use quiesce::job::apps::AppSources;
use quiesce::job::metrics::{MetricsDir, Outputs};
use quiesce::job::pending::{self, PendingOptions};
use quiesce::job::snapshot::WindowRequest;
use quiesce::job::Common;
use quiesce::job::Phase;
use quiesce::job::RunnerOptions;
use quiesce::trail::{self, Facility, TrailMode};

/// Runs a Linux VM's application-consistency scripts around a filesystem
/// freeze and a snapshot: supervised, sandboxed, audited, never leaving a
/// filesystem frozen.
#[derive(Parser, Debug)]
#[command(name = "quiesce", version, after_help = EXIT_HELP)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct GlobalArgs {
    /// An application's configuration (the extension's format). Repeatable:
    /// the applications, in order; then nothing else is read [default:
    /// the plugin-host file's numberOfPlugins list, else every *.json of
    /// --apps-dir, else /etc/azure/VMSnapshotScriptPluginConfig.json].
    #[arg(long, global = true, value_name = "PATH")]
    config: Vec<PathBuf>,
    /// quiesce's own applications, one config each: every *.json, in
    /// lexical order (used when the plugin-host file lists no plugins).
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_APPS_DIR)]
    apps_dir: PathBuf,
    /// The extension's plugin-host file: its timeoutInSeconds caps every
    /// config's; its numberOfPlugins/pluginConfigPath<i> list the applications.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_HOST_CONFIG_PATH)]
    host_config: PathBuf,
    /// Bridge mode, as the extension hook runs quiesce: quiesce's own set
    /// (--apps-dir, else /etc/quiesce/VMSnapshotScriptPluginConfig.json);
    /// the plugin-host file's list is the extension's and is not read.
    #[arg(long, global = true)]
    bridge: bool,
    /// The Azure extension's own config: check reads it to recognise
    /// bridge mode (its scripts are quiesce's hook) and verify the set-up.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    extension_config: PathBuf,
    /// Print the status document as JSON on stdout (human text stays on stderr).
    #[arg(long, global = true)]
    json: bool,
    /// More detail on stderr: every audit record is echoed as a line, and
    /// check lists every mount.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Runner state directory on tmpfs: lock, recovery record, pre-script holders.
    #[arg(long, global = true, value_name = "DIR", default_value = state::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// Durable state: each run's status as last-<operation>.json, and the
    /// record of each pending post-script, written before
    /// its pre-script starts (root-owned, 0700; created if missing).
    #[arg(long, global = true, value_name = "DIR", default_value = pending::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// After a separate `quiesce pre`, how long the `quiesce post` call may
    /// take to come; at that time the pre's post guard runs the overdue
    /// post-script (as would `quiesce recover` or the next run). The default
    /// is the 1800 s script cap plus the 60 s freeze maximum.
    #[arg(long, global = true, value_name = "SECS", default_value_t = pending::DEFAULT_POST_DUE_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    post_due: u64,
    /// The extension's backup settings; its [SnapshotThread] MountsToSkip is honoured.
    #[arg(long, global = true, value_name = "PATH", default_value = mounts::VMBACKUP_CONF_PATH)]
    vmbackup_conf: PathBuf,
    /// Sandbox policy for scripts [default: /etc/quiesce/policy.json if
    /// present, else the built-in policy].
    #[arg(long, global = true, value_name = "PATH")]
    policy: Option<PathBuf>,
    /// Run scripts WITHOUT the sandbox (loudly logged; never the default).
    #[arg(long, global = true)]
    no_sandbox: bool,
    /// Syslog socket of the audit trail.
    #[arg(long, global = true, value_name = "PATH", default_value = trail::DEFAULT_SOCKET)]
    syslog_socket: PathBuf,
    /// Syslog facility of the audit trail (authpriv, auth, daemon, user, local0..local7).
    #[arg(long, global = true, value_name = "NAME", default_value = "authpriv", value_parser = parse_facility)]
    syslog_facility: Facility,
    /// Where the audit trail goes: auto (the journal when its socket exists,
    /// else syslog), journal, syslog or both.
    #[arg(long, global = true, value_name = "SINK", default_value = "auto", value_parser = parse_trail)]
    trail: TrailMode,
    /// journald's native socket (for tests and containers).
    #[arg(long, global = true, value_name = "PATH", default_value = trail::DEFAULT_JOURNAL_SOCKET)]
    journal_socket: PathBuf,
    /// node-exporter textfile directory for quiesce.prom [default:
    /// /var/lib/prometheus/node-exporter when it exists].
    #[arg(long, global = true, value_name = "DIR")]
    metrics_dir: Option<PathBuf>,
}

/// A mount point on the command line: absolute, because it is compared
/// with the kernel's mount table, which has no working directory.
fn parse_mount(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(format!(
            "{s} is not an absolute path: give the mount point as /proc/self/mountinfo lists it"
        ))
    }
}

fn parse_trail(s: &str) -> Result<TrailMode, String> {
    s.parse::<TrailMode>().map_err(|e| e.to_string())
}

fn parse_facility(s: &str) -> Result<Facility, String> {
    s.parse::<Facility>().map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Verify every application (config, both scripts and what runs them:
    /// each #! interpreter, /bin/sh, what #!/usr/bin/env finds on PATH),
    /// the plugin-host file, bridge mode when the extension's config runs
    /// quiesce's hook, and list the mounts that would be frozen (and why
    /// others are skipped); runs nothing. A misspelt key (a near miss of a
    /// known one) fails it, though runs only warn.
    /// Exit 0 only if a snapshot would be application-consistent.
    Check {
        /// Plan these mounts instead of discovering them (repeatable; absolute paths).
        #[arg(long = "mount", value_name = "M", value_parser = parse_mount)]
        mounts: Vec<PathBuf>,
    },
    /// Run every application's pre-script, in order, with its retries and
    /// timeout (supervised, sandboxed). What it leaves running is kept until
    /// that application's next post phase.
    Pre,
    /// Run every application's post-script, in reverse order, with its
    /// retries and timeout, each followed by ending what its pre-script left
    /// running. After a separate `pre`: only those whose pre-script it
    /// started.
    Post,
    /// Freeze the filesystems, run CMD, thaw. No scripts.
    Freeze {
        #[command(flatten)]
        window: WindowArgs,
    },
    /// The whole job: pre-scripts (in application order), freeze, CMD (takes
    /// the snapshot), thaw, post-scripts (in reverse); every failure decided
    /// by the continueBackupOnFailure of the application it belongs to.
    Snapshot {
        #[command(flatten)]
        window: WindowArgs,
    },
    /// Capability and sandbox audit: what the runner holds, the rules in
    /// force for scripts, and what a script really holds (a probe is run).
    Audit,
    /// Emergency thaw: thaws what a dead runner recorded as frozen, or the
    /// given mounts. Safe to run at any time.
    Thaw {
        /// Thaw exactly these mounts (repeatable; absolute paths).
        #[arg(long = "mount", value_name = "M", value_parser = parse_mount)]
        mounts: Vec<PathBuf>,
    },
    /// Run what dead runners left pending: every due post-script recorded
    /// in --state-dir (QUIESCE_RECOVERY=runner-died, reboot or post-overdue
    /// in its environment), after thawing what they left frozen. Safe at any
    /// time; runs at boot from quiesce-recover.service.
    Recover {
        /// Keep running until no recovered post-script waits for a retry: a
        /// failed one is retried after a backoff (15 s, doubling, at most
        /// 10 min) until it succeeds or its record is removed. The recovery
        /// unit and a dead runner's post guard use it.
        #[arg(long)]
        retry: bool,
    },
}

#[derive(Args, Debug)]
struct WindowArgs {
    /// Freeze these mounts instead of discovering them (repeatable; absolute paths).
    #[arg(long = "mount", value_name = "M", value_parser = parse_mount)]
    mounts: Vec<PathBuf>,
    /// Longest time filesystems may stay frozen; then they are thawed first
    /// and the command is killed (FsFreezeTimeout).
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=1800))]
    max_freeze: u64,
    /// The command that takes the snapshot (after --), e.g. lvcreate -s …
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<String>,
}

impl WindowArgs {
    fn request(self) -> WindowRequest {
        WindowRequest {
            mounts: self.mounts,
            max_freeze: Duration::from_secs(self.max_freeze),
            cmd: self.cmd,
        }
    }
}

const EXIT_HELP: &str = "Exit status:
  0    success (snapshot: application-consistent; check: it would be)
  1    degraded: only filesystem- or crash-consistent, as continueBackupOnFailure allowed
  2    failure: the phase failed or no snapshot was taken
  64   usage error
  70   internal error (everything still thawed and reaped)
  128+N  stopped by signal N (after thawing and cleaning up)";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            let exit = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            return ExitCode::from(exit.code() as u8);
        }
    };
    // Paths on the command line are the operator's, relative to the cwd; the
    // trust checks need them absolute to check every directory above them.
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let cli = Cli {
        global: GlobalArgs {
            config: cli.global.config.into_iter().map(abs).collect(),
            apps_dir: abs(cli.global.apps_dir),
            host_config: abs(cli.global.host_config),
            extension_config: abs(cli.global.extension_config),
            policy: cli.global.policy.map(abs),
            run_dir: abs(cli.global.run_dir),
            state_dir: abs(cli.global.state_dir),
            metrics_dir: cli.global.metrics_dir.map(abs),
            ..cli.global
        },
        ..cli
    };
    let common = Common {
        apps: AppSources {
            explicit: cli.global.config,
            apps_dir: cli.global.apps_dir,
            host_config: cli.global.host_config,
            bridge: cli.global.bridge,
            extension_config: cli.global.extension_config,
        },
        verbose: cli.global.verbose,
        run_dir: state::RunDir::new(cli.global.run_dir.clone()),
        vmbackup_conf: cli.global.vmbackup_conf,
        pending: PendingOptions {
            state_dir: state::RunDir::new(cli.global.state_dir.clone()),
            post_due: Duration::from_secs(cli.global.post_due),
            run_dir: state::RunDir::new(cli.global.run_dir),
        },
    };
    let ropts = RunnerOptions {
        policy: cli.global.policy,
        no_sandbox: cli.global.no_sandbox,
        syslog_socket: cli.global.syslog_socket,
        facility: cli.global.syslog_facility,
        trail: cli.global.trail,
        journal_socket: cli.global.journal_socket,
        outputs: Outputs {
            state_dir: Some(cli.global.state_dir),
            metrics_dir: cli
                .global
                .metrics_dir
                .map_or(MetricsDir::Default, MetricsDir::Given),
        },
        verbose: cli.global.verbose,
    };
    let json = cli.global.json;
    // A panic is a bug: every window it crosses has already thawed (the
    // panic hook, then the window's Drop while unwinding) and children were
    // reaped or killed by their guards; report it as exit 70.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match cli.command {
        Command::Audit => commands::audit::run(&ropts),
        Command::Pre => commands::phase::run(&common, &ropts, Phase::Pre),
        Command::Post => commands::phase::run(&common, &ropts, Phase::Post),
        Command::Freeze { window: w } => commands::freeze::run(&common, &ropts, &w.request()),
        Command::Snapshot { window: w } => commands::snapshot::run(&common, &ropts, &w.request()),
        Command::Check { mounts } => commands::check::run(&common, &ropts, &mounts),
        Command::Thaw { mounts } => commands::thaw::run(&common, &ropts, &mounts),
        Command::Recover { retry } => commands::recover::run(&common, &ropts, retry),
    }));
    let (status, exit) = match outcome {
        Ok(done) => done,
        Err(_) => {
            quiesce::trail::release();
            eprintln!("quiesce: internal error (a bug); filesystems were thawed. Please report it with the output above.");
            return ExitCode::from(Exit::Internal.code() as u8);
        }
    };
    if json {
        println!("{}", status.to_json());
    }
    ExitCode::from(exit.code() as u8)
}
