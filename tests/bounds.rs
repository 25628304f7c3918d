//! Bounds (issue 26 item 8): what the number of applications and the
//! plugin-host file's `numberOfPlugins` may cost. A count the file cannot
//! back is refused before anything is allocated for it; descriptors stay
//! flat in the number of applications, and running out of them is said as
//! what it is; one warning about many applications is one warning.
//! Every config is generated in a scratch directory.

mod common;

use std::ffi::OsString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use common::{quiesce_bin, Run, Scratch};
use serde_json::json;

/// A scratch set of applications: `etc/apps.d/NNN.json`, each naming a
/// script pair of `scripts/`, and an optional plugin-host file.
struct Many {
    s: Scratch,
}

impl Many {
    fn new(tag: &str) -> Many {
        let s = Scratch::new(tag);
        s.mkdir("etc/apps.d", 0o755);
        s.mkdir("scripts", 0o755);
        Many { s }
    }

    fn marker(&self) -> PathBuf {
        self.s.path("ran")
    }

    /// Script pair `label`: each appends one line to the marker.
    fn scripts(&self, label: &str) -> (PathBuf, PathBuf) {
        let script = |phase: &str| {
            self.s.write(
                &format!("scripts/{label}-{phase}.sh"),
                format!(
                    "#!/bin/sh\necho '{label} {phase}' >> '{}'\n",
                    self.marker().display()
                ),
                0o700,
            )
        };
        (script("pre"), script("post"))
    }

    /// `n` applications in the apps directory; `shared`: all name one
    /// script pair, else each its own.
    fn apps(&self, n: usize, shared: bool) -> Vec<PathBuf> {
        let one = self.scripts("shared");
        (0..n)
            .map(|i| {
                let (pre, post) = if shared {
                    one.clone()
                } else {
                    self.scripts(&format!("app{i:04}"))
                };
                let config = json!({
                    "preScriptLocation": pre,
                    "postScriptLocation": post,
                    "timeoutInSeconds": 10,
                });
                self.s.write(
                    &format!("etc/apps.d/{i:04}.json"),
                    config.to_string(),
                    0o600,
                )
            })
            .collect()
    }

    fn host(&self) -> PathBuf {
        self.s.path("VMSnapshotPluginHost.conf")
    }

    fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--host-config".into(),
            self.host().into(),
            "--apps-dir".into(),
            self.s.path("etc/apps.d").into(),
        ];
        args.extend(common::private_args(&self.s.dir));
        args
    }

    /// Runs quiesce with these applications, its RLIMIT_NOFILE set to
    /// `nofile` (soft and hard) when given.
    fn run(&self, nofile: Option<u64>, args: &[&str]) -> Run {
        let mut cmd = quiesce_bin();
        cmd.args(self.args()).args(args);
        if let Some(n) = nofile {
            // SAFETY: setrlimit is async-signal-safe and touches only the
            // child; nothing is allocated.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Run::from(cmd.output().unwrap())
    }

    fn ran(&self) -> usize {
        fs::read_to_string(self.marker())
            .unwrap_or_default()
            .lines()
            .count()
    }
}

fn ctx(run: &Run) -> String {
    let out: String = run.stdout.chars().take(4000).collect();
    format!("exit {}\nstdout:\n{out}\nstderr:\n{}", run.code, run.stderr)
}

/// `numberOfPlugins: 10000000000` aborted `check` and `snapshot` with
/// "memory allocation of 240000000000 bytes failed" (exit 134, no status,
/// no trail). The count is bounded by the keys the file has, before
/// anything is allocated: 304 naming the key and the file.
#[test]
fn a_plugin_count_the_file_cannot_back_is_304_before_any_allocation() {
    require_root!();
    let m = Many::new("bounds-count");
    let configs = m.apps(1, false);
    for count in ["10000000000", "50000000", "2"] {
        m.s.write(
            "VMSnapshotPluginHost.conf",
            format!(
                "[pre_post]\nnumberOfPlugins: {count}\npluginConfigPath0: {}\n",
                configs[0].display()
            ),
            0o600,
        );
        for op in ["check", "pre"] {
            let run = m.run(None, &[op, "--json"]);
            assert_eq!(run.code, 2, "{op} {count}: {}", ctx(&run));
            let v = run.json();
            assert_eq!(v["errors"][0]["name"], "IncorrectPluginhostFile", "{v}");
            assert_eq!(v["errors"][0]["code"], 304, "{v}");
            let msg = v["errors"][0]["message"].as_str().unwrap();
            assert!(
                msg.contains(&format!("numberOfPlugins is {count}"))
                    && msg.contains("pluginConfigPath1")
                    && msg.contains(&m.host().display().to_string()),
                "{op} {count}: {msg}"
            );
        }
        assert_eq!(m.ran(), 0, "a script ran");
    }
}

/// Each application held its two scripts' descriptors for the whole run:
/// from ~500 applications on a 1024 soft limit, EMFILE was reported as
/// `IncorrectJSONConfigFile` and nothing ran. Here 60 applications, each
/// with its own scripts (120 files), check and run their pre- and
/// post-scripts under a limit of 32 descriptors.
#[test]
fn descriptors_stay_flat_in_the_number_of_applications() {
    require_root!();
    let m = Many::new("bounds-fds");
    m.apps(60, false);
    let run = m.run(Some(32), &["check", "--json"]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_eq!(run.json()["applications"].as_array().unwrap().len(), 60);
    for phase in ["pre", "post"] {
        let run = m.run(Some(32), &[phase, "--json"]);
        assert_eq!(run.code, 0, "{phase}: {}", ctx(&run));
    }
    assert_eq!(m.ran(), 120, "every pre- and post-script ran once");
}

/// Running out of descriptors is said as what it is, never as a bad
/// configuration (305), a script's failure or another file's fault: at
/// every limit from one that leaves the runner almost nothing to one that
/// is plenty, no error that comes from EMFILE has another name, and some
/// limit does run out, in `check` and in `pre`.
#[test]
fn running_out_of_descriptors_is_never_a_config_error() {
    require_root!();
    let m = Many::new("bounds-emfile");
    m.apps(3, false);
    let mut seen = std::collections::BTreeSet::new();
    for (op, nofile) in (4..40).flat_map(|n| [("check", n), ("pre", n)]) {
        let run = m.run(Some(nofile), &[op, "--json"]);
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&run.stdout) else {
            // Too few to even start: the runner must still say why.
            assert!(
                run.stderr.contains("Too many open files") || run.stderr.contains("EMFILE"),
                "limit {nofile}: {}",
                ctx(&run)
            );
            continue;
        };
        for e in v["errors"].as_array().unwrap() {
            let msg = e["message"].as_str().unwrap_or("");
            if msg.contains("Too many open files") || msg.contains("EMFILE") {
                assert_eq!(e["name"], "TooManyOpenFiles", "{op}, limit {nofile}: {e}");
                seen.insert(op);
            }
            assert_ne!(e["code"], 305, "{op}, limit {nofile}: {e}");
        }
    }
    // Both ran out somewhere: reading the applications, starting a script.
    assert_eq!(seen.len(), 2, "ran out of descriptors only in {seen:?}");
}

/// 300 applications sharing one script pair produced 44,850 pairwise
/// warnings and a 16 MB status. They are one warning naming the pair and
/// how many applications share it.
#[test]
fn applications_sharing_one_script_pair_are_one_warning() {
    require_root!();
    let m = Many::new("bounds-shared");
    let configs = m.apps(300, true);
    let run = m.run(None, &["check", "--json"]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let shared: Vec<String> = run
        .warnings()
        .into_iter()
        .filter(|w| w.contains("same scripts"))
        .collect();
    assert_eq!(shared.len(), 1, "{:?}", &shared[..shared.len().min(3)]);
    let w = &shared[0];
    assert!(w.contains("300 applications"), "{w}");
    assert!(
        w.contains(&configs[0].display().to_string())
            && w.contains(&m.s.path("scripts/shared-pre.sh").display().to_string()),
        "{w}"
    );
    assert!(w.len() < 4096, "{} bytes: {w}", w.len());
    assert!(
        run.stdout.len() < 1024 * 1024,
        "status of {} bytes",
        run.stdout.len()
    );
    // Two groups stay two warnings, each with its own count.
    let extra = m.scripts("other");
    for i in 0..2 {
        m.s.write(
            &format!("etc/apps.d/9{i}.json"),
            json!({"preScriptLocation": extra.0, "postScriptLocation": extra.1}).to_string(),
            0o600,
        );
    }
    let run = m.run(None, &["check", "--json"]);
    let shared: Vec<String> = run
        .warnings()
        .into_iter()
        .filter(|w| w.contains("same scripts"))
        .collect();
    assert_eq!(shared.len(), 2, "{shared:?}");
    assert!(
        shared.iter().any(|w| w.contains("2 applications")),
        "{shared:?}"
    );
}
