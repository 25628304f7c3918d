//! One run of quiesce, end to end (SPEC.md §1), in three floors; every
//! import points down.
//!
//! - [`runs`]: each run a short sequence of steps in a file of its own —
//!   `check`, `pre`/`post`, `freeze`, `snapshot`, `thaw`, `recover`,
//!   `audit`, `hook` (every agent's hook, SPEC §10). `main.rs` parses the command line into one [`Context`](context::Context) and
//!   calls one of them.
//! - [`steps`]: what several runs share — the applications' pre-check, a
//!   script phase over every application, the post-script guarantee armed
//!   and settled around it, running what dead runs left pending, the lock,
//!   the snapshot command inside a freeze window.
//! - this folder's own files, what a run is made of: its [`context`]
//!   (the options), the [`run::Job`] (trail, status, warnings; the exit code
//!   follows from the status once), the [`runner::Runner`] (signals,
//!   sandbox, policy), the [`apps`] and their [`preflight`], one [`script`]
//!   phase and how a script is [`launch`]ed and what runs it
//!   ([`interpreter`]), its [`holders`], the [`decide`] table (SPEC §5),
//!   the [`status`] document, the [`pending`] records, the [`postguard`]
//!   and what a run keeps [`armed`], the [`metrics`], [`bridge`] mode, the
//!   [`hook`] agents and their calls, [`agents`]' own set-up, and the
//!   extension's [`workload_conf`] as an application.
//!
//! A run reads as its steps:
//!
//! ```text
//! preflight → pre-script → freeze window (freeze, snapshot command, thaw) → post-script → conclude
//! ```

pub mod runs;
pub mod steps;

pub mod agents;
pub mod apps;
pub mod armed;
pub mod bridge;
pub mod context;
pub mod decide;
pub mod holders;
pub mod hook;
pub mod interpreter;
pub mod launch;
pub mod metrics;
pub mod pending;
pub mod phase;
pub mod postguard;
pub mod preflight;
pub mod run;
pub mod runner;
pub mod script;
pub mod status;
pub mod takeover;
pub mod workload_conf;
