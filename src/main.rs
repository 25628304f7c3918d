//! The command line: parse, call the library, map the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use quiesce::commands::{self, Common};
use quiesce::config::{DEFAULT_CONFIG_PATH, DEFAULT_HOST_CONFIG_PATH};
use quiesce::error::Exit;
use quiesce::precheck::InputPaths;

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
    /// The scripts' configuration (the extension's format).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// The extension's plugin-host file; its timeoutInSeconds caps the config's.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_HOST_CONFIG_PATH)]
    host_config: PathBuf,
    /// Print the status document as JSON on stdout (human text stays on stderr).
    #[arg(long, global = true)]
    json: bool,
    /// More detail on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Verify config, plugin-host file and both scripts; runs nothing.
    /// Exit 0 only if a snapshot would be application-consistent.
    Check,
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
    let common = Common {
        paths: InputPaths {
            config: cli.global.config,
            host_config: cli.global.host_config,
        },
        verbose: cli.global.verbose,
    };
    let (status, exit) = match cli.command {
        Command::Check => commands::check(&common),
    };
    if cli.global.json {
        println!("{}", status.to_json());
    }
    ExitCode::from(exit.code() as u8)
}
