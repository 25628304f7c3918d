//! The command line: parse, call the library, map the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use quiesce::error::Exit;
use quiesce::job::context::{Context, Options};
use quiesce::job::hook::{self, Agent};
use quiesce::job::phase::Phase;
use quiesce::job::runs;
use quiesce::job::runs::hook::HookRequest;
use quiesce::job::steps::snapshot_window::WindowRequest;
use quiesce::job::steps::{agent_deadline, held};
use quiesce::job::takeover::Rules;

/// Runs a Linux VM's application-consistency scripts around a filesystem
/// freeze and a snapshot: supervised, sandboxed, audited, never leaving a
/// filesystem frozen.
#[derive(Parser, Debug)]
#[command(name = "quiesce", version, after_help = EXIT_HELP)]
struct Cli {
    #[command(flatten)]
    options: Options,
    /// Print the status document as JSON on stdout (human text stays on stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
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

#[derive(Subcommand, Debug)]
enum Command {
    /// Verify every application (config, both scripts and what runs them:
    /// each #! interpreter, /bin/sh, what #!/usr/bin/env finds on PATH),
    /// the plugin-host file, bridge mode when the extension's config runs
    /// quiesce's hook, and list the mounts that would be frozen (and why
    /// others are skipped); runs no script. A workload application's
    /// server is asked its version and where its files are: the method it
    /// would get, and whether every file would be frozen. A misspelt key (a near miss of a
    /// known one) fails it, though runs only warn.
    /// Exit 0 only if a snapshot would be application-consistent.
    Check {
        /// Plan these mounts instead of discovering them (repeatable; absolute paths).
        #[arg(long = "mount", value_name = "M", value_parser = parse_mount)]
        mounts: Vec<PathBuf>,
        /// Also check that AGENT is installed and set up to call quiesce
        /// (qemu-ga started with -F naming the wrapper, VMware's
        /// execScripts on, Google's [Snapshots] enabled, the wrappers in place).
        #[arg(long, value_enum, value_name = "AGENT")]
        hook: Option<Agent>,
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
    /// quiesce as another agent's hook (SPEC §10): `qemu-ga freeze|thaw`,
    /// `vmware freeze|freezeFail|thaw` (any case), `gce pre|post DISKS`,
    /// `aws-dlm pre-script|post-script|dry-run`. The first call runs the
    /// pre-scripts, the second the post-scripts of what the first started
    /// (one operation, carried by the pending-post records). Where the
    /// agent freezes (qemu-ga, vmware), quiesce never does, and thaws what
    /// the agent left frozen at --max-freeze if its thaw never comes; where
    /// the agent expects the hook to freeze (gce, aws-dlm), `pre` returns
    /// with the filesystems frozen, held by a process that keeps every
    /// thaw guarantee until `post` (or --max-freeze) thaws them.
    Hook {
        /// The filesystems of the held freeze (gce, aws-dlm), or those whose
        /// agent freeze --max-freeze ends (qemu-ga, vmware); discovery when
        /// none is given (repeatable; absolute paths).
        #[arg(long = "mount", value_name = "M", value_parser = parse_mount)]
        mounts: Vec<PathBuf>,
        /// Longest time the filesystems may stay frozen: the held freeze's
        /// deadline, or the one qemu-ga and VMware Tools lack.
        #[arg(long, value_name = "SECS", default_value_t = 60,
              value_parser = clap::value_parser!(u64).range(1..=1800))]
        max_freeze: u64,
        /// The agent quiesce is the hook of.
        #[arg(value_enum, value_name = "AGENT")]
        agent: Agent,
        /// The agent's own arguments, as it passes them.
        #[arg(
            value_name = "ARG",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        args: Vec<String>,
    },
    /// Inside a held freeze's window: waits for the post call (internal).
    #[command(name = "__hold-wait", hide = true)]
    HoldWait { run_dir: PathBuf },
    /// The deadline of an agent's own freeze (internal).
    #[command(name = "__agent-deadline", hide = true)]
    AgentDeadline {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        operation_id: String,
        #[arg(long)]
        deadline_ms: u64,
        #[arg(long = "mount", value_parser = parse_mount)]
        mounts: Vec<PathBuf>,
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

/// The internal subcommands (no run, no status: a held freeze's waiting
/// command, an agent freeze's deadline) and the hook's own usage errors;
/// every other command comes back to be run.
fn internal(cx: &Context, command: Command) -> Result<Command, ExitCode> {
    match command {
        Command::HoldWait { run_dir } => Err(ExitCode::from(held::wait_in_window(&run_dir))),
        Command::AgentDeadline {
            agent,
            operation_id,
            deadline_ms,
            mounts,
        } => {
            let w = agent_deadline::Watch {
                agent,
                operation_id,
                deadline_unix_ms: deadline_ms,
                mounts,
            };
            Err(ExitCode::from(agent_deadline::watch(cx, &w)))
        }
        Command::Hook {
            agent, ref args, ..
        } => match hook::parse_call(agent, args) {
            Ok(_) => Ok(command),
            Err(e) => {
                eprintln!("quiesce: {e}");
                Err(ExitCode::from(Exit::Usage.code() as u8))
            }
        },
        other => Ok(other),
    }
}

fn main() -> ExitCode {
    // A workload application's phases (SPEC §3.2) run quiesce itself as
    // their script: an internal helper, never a command for operators.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .get(1)
        .is_some_and(|a| a == quiesce::workload::HELPER_ARG)
    {
        return ExitCode::from(quiesce::workload::helper::main(&argv[2..]));
    }
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
    let json = cli.json;
    let mut cx = Context::new(cli.options);
    if let (Command::Hook { agent, .. }, Some(t)) = (&cli.command, cx.apps.takeover.as_mut()) {
        // The directory is vmtoolsd's: its rules (every regular file).
        if *agent == Agent::Vmware {
            t.rules = Rules::Vmware;
        }
    }
    let command = match internal(&cx, cli.command) {
        Ok(command) => command,
        Err(code) => return code,
    };
    // A panic is a bug: every window it crosses has already thawed (the
    // panic hook, then the window's Drop while unwinding) and children were
    // reaped or killed by their guards; report it as exit 70.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match command {
        Command::Audit => runs::audit::run(&cx),
        Command::Pre => runs::prepost::run(&cx, Phase::Pre),
        Command::Post => runs::prepost::run(&cx, Phase::Post),
        Command::Freeze { window: w } => runs::freeze::run(&cx, &w.request()),
        Command::Snapshot { window: w } => runs::snapshot::run(&cx, &w.request()),
        Command::Check { mounts, hook } => runs::check::run(&cx, &mounts, hook),
        Command::Thaw { mounts } => runs::thaw::run(&cx, &mounts),
        Command::Recover { retry } => runs::recover::run(&cx, retry),
        Command::Hook {
            mounts,
            max_freeze,
            agent,
            args,
        } => {
            let call = hook::parse_call(agent, &args).expect("checked by internal()");
            let req = HookRequest {
                agent,
                call,
                args,
                mounts,
                max_freeze,
            };
            runs::hook::run(&cx, &req)
        }
        Command::HoldWait { .. } | Command::AgentDeadline { .. } => {
            unreachable!("run by internal()")
        }
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
