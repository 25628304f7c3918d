//! quiesce — runs a Linux VM's application-consistency scripts around a
//! filesystem freeze and a snapshot, the way the Azure Backup extension's
//! pre-script/post-script framework does, and makes that job safe.
//!
//! # Threat model
//!
//! quiesce runs as root on security-hardened VMs and executes what a
//! configuration file names, as root. What it defends against:
//!
//! - **Anyone but root changing what runs.** Every file that decides what
//!   runs (config, scripts, policy, plugin-host file) must be owned by uid 0
//!   and not writable by others, and so must every directory above it, on
//!   the path as written and with links resolved ([`integrity`]). The file
//!   is opened once and checked on the descriptor. What runs a script runs
//!   as root too: its interpreter at every `#!` level, `/bin/sh`, and what
//!   `#!/usr/bin/env` finds on the scripts' PATH (with every PATH directory
//!   that could shadow it) pass the same checks ([`job::interpreter`]).
//! - **The caller's environment.** A script gets a fixed PATH, root's HOME
//!   from the password database and a LANG that is a plain locale name,
//!   never the caller's ([`sandbox::env`]).
//! - **A change racing the run.** A script is checked on its descriptor
//!   and executed by its path, which only root can change; right before
//!   `execve` the child re-checks that the path still names the checked
//!   file. A script pinned by its SHA-256 runs exactly the hashed bytes,
//!   from a sealed memfd, and a changed one is a refusal
//!   (`ScriptChecksumMismatch`) ([`job::launch`]).
//! - **A script doing more than quiescing.** Scripts run sandboxed
//!   ([`sandbox`]): capabilities removed from the bounding set,
//!   `no_new_privs`, rlimits, and a seccomp deny-list that includes the
//!   freeze ioctls — only the runner freezes.
//! - **A script that hangs or escapes.** Every child is supervised
//!   ([`supervise`]): own session, subreaper, cgroup, pidfd-only signalling;
//!   on timeout the whole tree is killed, escapees included.
//!
//! # Invariants
//!
//! - **Nothing stays frozen.** From the first `FIFREEZE` to the last
//!   `FITHAW` every way out thaws ([`freeze`]): the normal path in reverse
//!   order, the `--max-freeze` deadline (thaw, then kill), the signal
//!   handlers and the panic hook on pre-opened descriptors, `Drop`, a
//!   watchdog process that survives SIGKILL of the runner, and a recovery
//!   record on tmpfs for `quiesce thaw`.
//! - **Thaw before kill.** A process blocked on a frozen filesystem cannot
//!   die before the thaw, so every path thaws first.
//! - **Nothing touches a frozen disk.** During the window the runner writes
//!   no file; log records and human output are held in memory
//!   ([`trail::hold`]).
//! - **Between fork and exec only async-signal-safe calls.** Every argv,
//!   environment, BPF program and capability list is built before the fork.
//! - **The post-script runs** whenever the pre-check passed, whatever failed
//!   in between ([`job::steps::phases`], [`job::runs::snapshot`]), and when
//!   the runner itself dies, by its post guard and `quiesce recover`
//!   ([`job::steps::guarantee`], [`job::runs::recover`]).
//!
//! # What fails closed
//!
//! An insecure or malformed config runs no script; an insecure or malformed
//! policy runs nothing (`IncorrectPluginhostFile`); a sandbox that cannot be
//! installed makes the child exit before exec; a freeze without
//! `CAP_SYS_ADMIN` is refused before anything runs. The one escape hatch,
//! `--no-sandbox`, is explicit and loudly logged. Every failure is reported
//! with the extension's error names and codes ([`error`]).

pub mod config;
pub mod error;
pub mod fault;
pub mod freeze;
pub mod group;
pub mod integrity;
pub mod job;
pub mod replace;
pub mod sandbox;
pub mod supervise;
pub mod trail;
pub mod workload;
