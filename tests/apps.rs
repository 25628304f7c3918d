//! Several applications on one VM (SPEC.md §3.1, the contract as built in
//! /work/helpers/design-12.md), black box through the real binary: where
//! the applications come from and in what order, what each failure of one
//! application does to the others and to the run, the status document's
//! `applications`, `check`, separate `pre`/`post`, and holders.
//!
//! Every script appends `<app> <phase>` to one marker file: the order of its
//! lines is the proof of what ran when. Snapshot runs always freeze a scratch
//! loop filesystem passed with `--mount` (never `/` or the work tree's
//! filesystem), and every such run ends with that filesystem proved writable.
//! Nothing here uses `Setup::global_args` (it always passes `--config`):
//! the options are built here, all inside the test's scratch directory, so
//! that the plugin-host file, the apps directory and the default config can
//! compete.

mod common;

use common::rsyslog::{parse_5424, Syslog5424, TestSyslog};
use common::scratchfs::ScratchFs;
use common::{chown, quiesce_bin, MarkerGuard, Run, Scratch, NOBODY};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The default config: only ever named, never created (nothing under /etc).
const DEFAULT_CONFIG: &str = "/etc/azure/VMSnapshotScriptPluginConfig.json";
/// The default config of bridge mode.
const BRIDGE_DEFAULT_CONFIG: &str = "/etc/quiesce/VMSnapshotScriptPluginConfig.json";

// ---------------------------------------------------------------------------
// The environment of one test
// ---------------------------------------------------------------------------

/// A root-owned scratch directory and, for snapshot runs, a scratch
/// filesystem. Fields drop in order: the filesystem is thawed and unmounted
/// before its directory is removed.
struct Env {
    fs: Option<ScratchFs>,
    s: Scratch,
    marker: PathBuf,
    /// A private rsyslogd the runs send their trail to, when a test reads it.
    syslog: Option<TestSyslog>,
}

impl Env {
    fn new(tag: &str) -> Env {
        let s = Scratch::new(tag);
        s.mkdir("etc", 0o755);
        let marker = s.path("ran");
        Env {
            fs: None,
            s,
            marker,
            syslog: None,
        }
    }

    /// [`Env::new`] with a scratch ext4 to freeze.
    fn with_fs(tag: &str) -> Env {
        let mut e = Env::new(tag);
        e.fs = Some(ScratchFs::new(&e.s.dir, "data", "ext4"));
        e
    }

    fn fs(&self) -> &ScratchFs {
        self.fs
            .as_ref()
            .expect("this test has no scratch filesystem")
    }

    fn mnt(&self) -> &str {
        self.fs().path()
    }

    /// `--host-config` (absent unless a test writes it).
    fn host(&self) -> PathBuf {
        self.s.path("VMSnapshotPluginHost.conf")
    }

    /// `--apps-dir` (absent unless a test makes it), under `etc/` so that a
    /// test can make its parent insecure without touching the scratch dir.
    fn apps_dir(&self) -> PathBuf {
        self.s.path("etc/apps.d")
    }

    fn make_apps_dir(&self) -> PathBuf {
        self.s.mkdir("etc/apps.d", 0o755)
    }

    fn write_host(&self, text: &str) -> PathBuf {
        self.s.write("VMSnapshotPluginHost.conf", text, 0o600)
    }

    /// Writes application `label`'s two scripts: each appends
    /// `<label> <phase>` to the marker, then runs `pre_rest` / `post_rest`.
    fn scripts(&self, label: &str, pre_rest: &str, post_rest: &str) -> (PathBuf, PathBuf) {
        let script = |phase: &str, rest: &str| {
            self.s.write(
                &format!("scripts/{label}/{phase}.sh"),
                format!(
                    "#!/bin/sh\necho '{label} {phase}' >> '{}'\n{rest}\n",
                    self.marker.display()
                ),
                0o700,
            )
        };
        (script("pre", pre_rest), script("post", post_rest))
    }

    /// A valid config for application `label` with scripts that only mark.
    fn app(&self, label: &str) -> Value {
        self.app_with(label, "", "")
    }

    fn app_with(&self, label: &str, pre_rest: &str, post_rest: &str) -> Value {
        let (pre, post) = self.scripts(label, pre_rest, post_rest);
        json!({
            "preScriptLocation": pre,
            "postScriptLocation": post,
            "preScriptParams": [],
            "postScriptParams": [],
            "timeoutInSeconds": 10,
            "continueBackupOnFailure": true,
            "fsFreezeEnabled": true
        })
    }

    /// Writes a config at `rel` (0600 unless told).
    fn write_json(&self, rel: &str, v: &Value) -> PathBuf {
        self.write_json_mode(rel, v, 0o600)
    }

    fn write_json_mode(&self, rel: &str, v: &Value, mode: u32) -> PathBuf {
        self.s
            .write(rel, serde_json::to_string_pretty(v).unwrap(), mode)
    }

    /// The global options, WITHOUT `--config`: every path inside the
    /// scratch directory (runner state, trail sockets that do not exist, so
    /// `--trail auto` picks syslog and loses nothing that matters here).
    fn base_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut opt = |name: &str, value: &Path| {
            args.push(name.into());
            args.push(value.into());
        };
        opt("--host-config", &self.host());
        opt("--apps-dir", &self.apps_dir());
        opt("--run-dir", &self.s.path("run"));
        let syslog = match &self.syslog {
            Some(d) => d.socket.clone(),
            None => self.s.path("no-syslog.sock"),
        };
        opt("--syslog-socket", &syslog);
        opt("--journal-socket", &self.s.path("no-journal.sock"));
        opt("--state-dir", &self.s.path("state"));
        args
    }

    /// `quiesce [--config C]... <base args> ARGS...`.
    fn run(&self, configs: &[&Path], args: &[&str]) -> Run {
        let mut cmd = quiesce_bin();
        for c in configs {
            cmd.arg("--config").arg(c);
        }
        cmd.args(self.base_args()).args(args);
        Run::from(cmd.output().unwrap())
    }

    /// The marker's lines: which scripts ran, in order.
    fn ran(&self) -> Vec<String> {
        fs::read_to_string(&self.marker)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn snapshot_ran_file(&self) -> PathBuf {
        self.s.path("snapshot-ran")
    }

    fn probe_file(&self) -> PathBuf {
        self.s.path("frozen-probe")
    }

    /// The snapshot command of every snapshot run here: leaves a file
    /// outside the mount (it ran), and records whether the mount was frozen
    /// while it ran (`fsfreeze -f` on a frozen filesystem is EBUSY; on one
    /// that is not, it freezes and the probe thaws at once), then, when the
    /// mount was not frozen, writes a file on it.
    fn snapshot_cmd(&self) -> String {
        format!(
            "touch '{ran}'; if fsfreeze -f '{m}' 2>/dev/null; then fsfreeze -u '{m}'; \
             echo not-frozen > '{p}'; echo written > '{m}/written'; \
             else echo frozen > '{p}'; fi",
            ran = self.snapshot_ran_file().display(),
            m = self.mnt(),
            p = self.probe_file().display()
        )
    }

    /// `quiesce [--config C]... snapshot --json --mount FS -- sh -c PROBE`.
    fn snapshot(&self, configs: &[&Path], before: &[&str]) -> Run {
        let cmd = self.snapshot_cmd();
        let mut args: Vec<&str> = before.to_vec();
        args.extend([
            "snapshot",
            "--json",
            "--max-freeze",
            "10",
            "--mount",
            self.mnt(),
            "--",
            "sh",
            "-c",
            &cmd,
        ]);
        self.run(configs, &args)
    }

    fn snapshot_was_taken(&self) -> bool {
        self.snapshot_ran_file().exists()
    }

    fn assert_writable(&self) {
        if let Some(fs) = &self.fs {
            fs.assert_writable();
        }
    }
}

fn ctx(run: &Run) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        run.code, run.stdout, run.stderr
    )
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn sha256_of(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    quiesce::integrity::hex(&Sha256::digest(fs::read(p).unwrap()))
}

/// `(name, code)` of every top-level error, in order (`None`: null code).
fn errors_of(v: &Value) -> Vec<(String, Option<u64>)> {
    v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {v}"))
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["code"].as_u64()))
        .collect()
}

/// The codes of `applications[i].errors`.
fn app_error_codes(app: &Value) -> Vec<u64> {
    app["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("application without errors array: {app}"))
        .iter()
        .map(|e| e["code"].as_u64().unwrap_or(0))
        .collect()
}

fn applications(v: &Value) -> &Vec<Value> {
    v["applications"]
        .as_array()
        .unwrap_or_else(|| panic!("no applications array: {v}"))
}

fn names(v: &Value) -> Vec<String> {
    applications(v)
        .iter()
        .map(|a| a["name"].as_str().unwrap_or("<none>").to_string())
        .collect()
}

fn configs_of(v: &Value) -> Vec<String> {
    applications(v)
        .iter()
        .map(|a| a["config"].as_str().unwrap_or("<none>").to_string())
        .collect()
}

fn path_strings(paths: &[&Path]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

fn ignored_of(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v["applicationSource"]["ignored"]
        .as_array()
        .map(|a| a.iter().map(|p| p.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// The table: one snapshot run of 2–3 applications given with --config
// ---------------------------------------------------------------------------

/// What a script of a row does after marking.
#[derive(Clone, Copy, PartialEq)]
enum Act {
    Ok,
    /// exit 3
    Fail,
    /// sleeps past its application's timeout (1 s)
    Hang,
}

/// How a row's application fails its pre-check, if it does.
#[derive(Clone, Copy, PartialEq)]
enum Broken {
    No,
    /// preScriptLocation names a file that does not exist (302).
    MissingPre,
    /// The post-script is 0777 (307).
    PostPerm,
    /// The config is 0644 (305; its flags are then unknown).
    Config0644,
}

/// One application of a row; its config is `conf/<label>.json`, so with
/// several applications its name is `<label>`.
#[derive(Clone, Copy)]
struct A {
    label: &'static str,
    pre: Act,
    post: Act,
    cont: bool,
    freeze: bool,
    broken: Broken,
}

const fn app(label: &'static str) -> A {
    A {
        label,
        pre: Act::Ok,
        post: Act::Ok,
        cont: true,
        freeze: true,
        broken: Broken::No,
    }
}

impl A {
    const fn pre(mut self, a: Act) -> A {
        self.pre = a;
        self
    }
    const fn post(mut self, a: Act) -> A {
        self.post = a;
        self
    }
    const fn stop(mut self) -> A {
        self.cont = false;
        self
    }
    const fn no_freeze(mut self) -> A {
        self.freeze = false;
        self
    }
    const fn broken(mut self, b: Broken) -> A {
        self.broken = b;
        self
    }
}

type Errs = &'static [(&'static str, Option<u64>)];

struct Want {
    code: i32,
    result: &'static str,
    consistency: &'static str,
    /// The marker's lines, in order.
    ran: &'static [&'static str],
    /// Top-level errors, in order.
    errors: Errs,
    /// The codes of each application's `errors`, in application order.
    app_errors: &'static [&'static [u64]],
    /// `phases.freeze` present (and the mount frozen while the command ran).
    freeze: bool,
    /// The snapshot command ran (`phases.snapshot` present).
    snapshot: bool,
}

struct Row {
    name: &'static str,
    apps: &'static [A],
    want: Want,
}

const NO_ERR: Errs = &[];
const E300: Errs = &[("Pre-ScriptExecutionFailed", Some(300))];
const E301: Errs = &[("Post-ScriptExecutionFailed", Some(301))];
const E302: Errs = &[("Pre-ScriptNotFound", Some(302))];
const E305: Errs = &[("IncorrectJSONConfigFile", Some(305))];
const E307: Errs = &[("InsufficientPermissionforPost-Script", Some(307))];
const E308: Errs = &[("Pre-ScriptTimeout", Some(308))];
const E309: Errs = &[("Post-ScriptTimeout", Some(309))];

const ROWS: &[Row] = &[
    Row {
        name: "m01_three_apps_pres_in_order_posts_in_reverse",
        apps: &[app("a"), app("b"), app("c")],
        want: Want {
            code: 0,
            result: "success",
            consistency: "application",
            ran: &["a pre", "b pre", "c pre", "c post", "b post", "a post"],
            errors: NO_ERR,
            app_errors: &[&[], &[], &[]],
            freeze: true,
            snapshot: true,
        },
    },
    // ---- pre-check failures ------------------------------------------------
    Row {
        name: "m02_first_app_precheck_fails_continue_others_run_filesystem",
        apps: &[app("a").broken(Broken::MissingPre), app("b")],
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "filesystem",
            ran: &["b pre", "b post"],
            errors: E302,
            app_errors: &[&[302], &[]],
            freeze: true,
            snapshot: true,
        },
    },
    Row {
        name: "m03_later_app_precheck_fails_continue_others_run_filesystem",
        apps: &[app("a"), app("b").broken(Broken::PostPerm), app("c")],
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "filesystem",
            ran: &["a pre", "c pre", "c post", "a post"],
            errors: E307,
            app_errors: &[&[], &[307], &[]],
            freeze: true,
            snapshot: true,
        },
    },
    Row {
        name: "m04_first_app_precheck_fails_stop_nothing_runs",
        apps: &[app("a").broken(Broken::MissingPre).stop(), app("b")],
        want: Want {
            code: 2,
            result: "failure",
            consistency: "none",
            ran: &[],
            errors: E302,
            app_errors: &[&[302], &[]],
            freeze: false,
            snapshot: false,
        },
    },
    Row {
        name: "m05_later_app_precheck_fails_stop_nothing_runs",
        apps: &[app("a"), app("b").broken(Broken::PostPerm).stop()],
        want: Want {
            code: 2,
            result: "failure",
            consistency: "none",
            ran: &[],
            errors: E307,
            app_errors: &[&[], &[307]],
            freeze: false,
            snapshot: false,
        },
    },
    // A 0644 config is not read: its continueBackupOnFailure=false is
    // unknown, taken as true (SPEC §5), so the others go on.
    Row {
        name: "m06_later_app_config_0644_is_305_taken_as_continue",
        apps: &[app("a"), app("b").broken(Broken::Config0644).stop()],
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "filesystem",
            ran: &["a pre", "a post"],
            errors: E305,
            app_errors: &[&[], &[305]],
            freeze: true,
            snapshot: true,
        },
    },
    Row {
        name: "m07_precheck_fails_continue_with_freeze_disabled_is_crash",
        apps: &[app("a").broken(Broken::MissingPre), app("b").no_freeze()],
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "crash",
            ran: &["b pre", "b post"],
            errors: E302,
            app_errors: &[&[302], &[]],
            freeze: false,
            snapshot: true,
        },
    },
    // ---- pre-script failures -----------------------------------------------
    Row {
        name: "m08_first_pre_fails_continue_later_pres_run_all_posts_run",
        apps: &[app("a").pre(Act::Fail), app("b")],
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "filesystem",
            ran: &["a pre", "b pre", "b post", "a post"],
            errors: E300,
            app_errors: &[&[300], &[]],
            freeze: true,
            snapshot: true,
        },
    },
    Row {
        name: "m09_later_pre_fails_continue_later_pres_run_all_posts_run",
        apps: &[app("a"), app("b").pre(Act::Fail), app("c")],
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "filesystem",
            ran: &["a pre", "b pre", "c pre", "c post", "b post", "a post"],
            errors: E300,
            app_errors: &[&[], &[300], &[]],
            freeze: true,
            snapshot: true,
        },
    },
    Row {
        name: "m10_first_pre_fails_stop_later_pres_never_start_own_post_runs",
        apps: &[app("a").pre(Act::Fail).stop(), app("b"), app("c")],
        want: Want {
            code: 2,
            result: "failure",
            consistency: "none",
            ran: &["a pre", "a post"],
            errors: E300,
            app_errors: &[&[300], &[], &[]],
            freeze: false,
            snapshot: false,
        },
    },
    Row {
        name: "m11_later_pre_fails_stop_earlier_posts_run_later_never_start",
        apps: &[app("a"), app("b").pre(Act::Fail).stop(), app("c")],
        want: Want {
            code: 2,
            result: "failure",
            consistency: "none",
            ran: &["a pre", "b pre", "b post", "a post"],
            errors: E300,
            app_errors: &[&[], &[300], &[]],
            freeze: false,
            snapshot: false,
        },
    },
    Row {
        name: "m12_first_pre_times_out_continue_is_filesystem_its_post_runs",
        apps: &[app("a").pre(Act::Hang), app("b")],
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "filesystem",
            ran: &["a pre", "b pre", "b post", "a post"],
            errors: E308,
            app_errors: &[&[308], &[]],
            freeze: true,
            snapshot: true,
        },
    },
    Row {
        name: "m13_later_pre_times_out_stop_later_never_start",
        apps: &[app("a"), app("b").pre(Act::Hang).stop(), app("c")],
        want: Want {
            code: 2,
            result: "failure",
            consistency: "none",
            ran: &["a pre", "b pre", "b post", "a post"],
            errors: E308,
            app_errors: &[&[], &[308], &[]],
            freeze: false,
            snapshot: false,
        },
    },
    // ---- post-script failures ----------------------------------------------
    Row {
        name: "m14_first_app_post_fails_continue_degraded_snapshot_stands",
        apps: &[app("a").post(Act::Fail), app("b")],
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "application",
            ran: &["a pre", "b pre", "b post", "a post"],
            errors: E301,
            app_errors: &[&[301], &[]],
            freeze: true,
            snapshot: true,
        },
    },
    Row {
        name: "m15_later_app_post_fails_stop_is_failure_other_posts_still_run",
        apps: &[app("a"), app("b").post(Act::Fail).stop(), app("c")],
        want: Want {
            code: 2,
            result: "failure",
            consistency: "application",
            ran: &["a pre", "b pre", "c pre", "c post", "b post", "a post"],
            errors: E301,
            app_errors: &[&[], &[301], &[]],
            freeze: true,
            snapshot: true,
        },
    },
    Row {
        name: "m16_last_app_post_fails_stop_the_earlier_posts_still_run",
        apps: &[app("a"), app("b").post(Act::Fail).stop()],
        want: Want {
            code: 2,
            result: "failure",
            consistency: "application",
            ran: &["a pre", "b pre", "b post", "a post"],
            errors: E301,
            app_errors: &[&[], &[301]],
            freeze: true,
            snapshot: true,
        },
    },
    Row {
        name: "m17_later_app_post_times_out_continue_degraded_others_run",
        apps: &[app("a"), app("b").post(Act::Hang)],
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "application",
            ran: &["a pre", "b pre", "b post", "a post"],
            errors: E309,
            app_errors: &[&[], &[309]],
            freeze: true,
            snapshot: true,
        },
    },
    // ---- fsFreezeEnabled -----------------------------------------------------
    Row {
        name: "m18_freeze_disabled_in_one_app_disables_the_freeze_application",
        apps: &[app("a"), app("b").no_freeze(), app("c")],
        want: Want {
            code: 0,
            result: "success",
            consistency: "application",
            ran: &["a pre", "b pre", "c pre", "c post", "b post", "a post"],
            errors: NO_ERR,
            app_errors: &[&[], &[], &[]],
            freeze: false,
            snapshot: true,
        },
    },
    Row {
        name: "m19_pre_fails_continue_with_freeze_disabled_takes_no_snapshot",
        apps: &[app("a").no_freeze(), app("b").pre(Act::Fail)],
        want: Want {
            code: 2,
            result: "failure",
            consistency: "none",
            ran: &["a pre", "b pre", "b post", "a post"],
            errors: E300,
            app_errors: &[&[], &[300]],
            freeze: false,
            snapshot: false,
        },
    },
];

/// Writes the row's applications; returns their config paths.
fn arrange(e: &Env, row: &Row, m: &MarkerGuard) -> Vec<PathBuf> {
    let body = |a: Act| match a {
        Act::Ok => String::new(),
        Act::Fail => "exit 3".to_string(),
        Act::Hang => format!("sleep {}", m.0),
    };
    row.apps
        .iter()
        .map(|a| {
            let mut c = e.app_with(a.label, &body(a.pre), &body(a.post));
            let hang = a.pre == Act::Hang || a.post == Act::Hang;
            c["timeoutInSeconds"] = json!(if hang { 1 } else { 10 });
            c["continueBackupOnFailure"] = json!(a.cont);
            c["fsFreezeEnabled"] = json!(a.freeze);
            let rel = format!("conf/{}.json", a.label);
            match a.broken {
                Broken::No => e.write_json(&rel, &c),
                Broken::MissingPre => {
                    c["preScriptLocation"] =
                        json!(e.s.path(&format!("scripts/{}/missing.sh", a.label)));
                    e.write_json(&rel, &c)
                }
                Broken::PostPerm => {
                    chmod(&e.s.path(&format!("scripts/{}/post.sh", a.label)), 0o777);
                    e.write_json(&rel, &c)
                }
                Broken::Config0644 => e.write_json_mode(&rel, &c, 0o644),
            }
        })
        .collect()
}

fn check_row(e: &Env, row: &Row, configs: &[PathBuf], run: &Run) {
    let w = &row.want;
    let ctx = format!("row {}\n{}", row.name, ctx(run));
    assert_eq!(run.code, w.code, "exit code\n{ctx}");
    let v = run.json();
    assert_eq!(v["operation"], "snapshot", "{ctx}");
    assert_eq!(v["result"], w.result, "result\n{ctx}");
    assert_eq!(v["consistency"], w.consistency, "consistency\n{ctx}");
    let want_errors: Vec<(String, Option<u64>)> =
        w.errors.iter().map(|(n, c)| (n.to_string(), *c)).collect();
    assert_eq!(errors_of(&v), want_errors, "errors\n{ctx}");
    let ran = e.ran();
    assert_eq!(ran, lines(w.ran), "scripts that ran, in order\n{ctx}");

    // The multi-application shape: applications[], no phases.pre/post.
    assert!(v["phases"].get("pre").is_none(), "phases.pre\n{ctx}");
    assert!(v["phases"].get("post").is_none(), "phases.post\n{ctx}");
    let apps = applications(&v);
    assert_eq!(apps.len(), row.apps.len(), "applications\n{ctx}");
    for (i, (a, entry)) in row.apps.iter().zip(apps).enumerate() {
        assert_eq!(entry["name"], a.label, "applications[{i}].name\n{ctx}");
        assert_eq!(
            entry["config"],
            configs[i].display().to_string(),
            "applications[{i}].config\n{ctx}"
        );
        assert_eq!(
            app_error_codes(entry),
            w.app_errors[i].to_vec(),
            "applications[{i}].errors\n{ctx}"
        );
        for phase in ["pre", "post"] {
            let did = ran.contains(&format!("{} {phase}", a.label));
            assert_eq!(
                entry.get(phase).is_some(),
                did,
                "applications[{i}].{phase} present iff that script ran\n{ctx}"
            );
        }
        if a.pre == Act::Hang {
            assert_eq!(
                entry["pre"]["attempts"][0]["timedOut"], true,
                "applications[{i}].pre timedOut\n{ctx}"
            );
        }
        if a.post == Act::Hang {
            assert_eq!(
                entry["post"]["attempts"][0]["timedOut"], true,
                "applications[{i}].post timedOut\n{ctx}"
            );
        }
    }

    assert_eq!(
        v["phases"].get("freeze").is_some(),
        w.freeze,
        "phases.freeze present\n{ctx}"
    );
    assert_eq!(
        v["phases"].get("snapshot").is_some(),
        w.snapshot,
        "phases.snapshot present\n{ctx}"
    );
    assert_eq!(
        e.snapshot_was_taken(),
        w.snapshot,
        "snapshot command ran\n{ctx}"
    );
    if w.snapshot {
        let probe = fs::read_to_string(e.probe_file()).unwrap_or_default();
        let want = if w.freeze { "frozen" } else { "not-frozen" };
        assert_eq!(probe.trim(), want, "the mount during the command\n{ctx}");
        if !w.freeze {
            assert_eq!(
                fs::read_to_string(Path::new(e.mnt()).join("written")).unwrap_or_default(),
                "written\n",
                "the command wrote to the unfrozen mount\n{ctx}"
            );
        }
    }
}

/// Every row of the table, each on its own scratch filesystem; each ends
/// with that filesystem writable and no script process left.
#[test]
fn several_applications_decision_table() {
    require_root!("trust checks need uid 0 ownership; freezing needs CAP_SYS_ADMIN");
    for (i, row) in ROWS.iter().enumerate() {
        eprintln!("row {}", row.name);
        let e = Env::with_fs(&format!("apps-row{i}"));
        let m = MarkerGuard::new(120 + i as u32);
        let configs = arrange(&e, row, &m);
        let refs: Vec<&Path> = configs.iter().map(PathBuf::as_path).collect();
        let run = e.snapshot(&refs, &[]);
        check_row(&e, row, &configs, &run);
        assert_eq!(m.survivors(), Vec::<i32>::new(), "{}: survivors", row.name);
        e.assert_writable();
    }
}

// ---------------------------------------------------------------------------
// Where the applications come from
// ---------------------------------------------------------------------------

/// `pre` then `post` (both exit 0); returns the marker's lines.
fn pre_then_post(e: &Env, configs: &[&Path], before: &[&str]) -> Vec<String> {
    let mut args: Vec<&str> = before.to_vec();
    args.extend(["pre", "--json"]);
    let pre = e.run(configs, &args);
    assert_eq!(pre.code, 0, "pre\n{}", ctx(&pre));
    args.truncate(before.len());
    args.extend(["post", "--json"]);
    let post = e.run(configs, &args);
    assert_eq!(post.code, 0, "post\n{}", ctx(&post));
    e.ran()
}

/// A plugin-host file naming two configs (with `key: v`, `pluginPath<i>`
/// accepted and ignored) and an apps dir that would run `c`.
fn host_list_and_apps_dir(e: &Env) -> (PathBuf, PathBuf, PathBuf) {
    let a = e.write_json("conf/a.json", &e.app("a"));
    let b = e.write_json("conf/b.json", &e.app("b"));
    e.make_apps_dir();
    let c = e.write_json("etc/apps.d/10-c.json", &e.app("c"));
    e.write_host(&format!(
        "[pre_post]\ntimeoutInSeconds: 60\nnumberOfPlugins: 2\n\
         pluginName0: alpha\npluginPath0: /var/lib/waagent/ScriptRunner.py\n\
         pluginConfigPath0: {}\n\
         pluginName1: ScriptRunner\npluginConfigPath1: {}\n",
        a.display(),
        b.display()
    ));
    (a, b, c)
}

#[test]
fn the_plugin_host_list_beats_the_apps_dir() {
    require_root!();
    let e = Env::new("apps-host");
    let (a, b, _c) = host_list_and_apps_dir(&e);
    let check = e.run(&[], &["check", "--json"]);
    assert_eq!(check.code, 0, "{}", ctx(&check));
    let v = check.json();
    assert_eq!(v["applicationSource"]["source"], "plugin-host", "{v}");
    assert_eq!(
        v["applicationSource"]["path"],
        e.host().display().to_string(),
        "{v}"
    );
    assert_eq!(configs_of(&v), path_strings(&[&a, &b]), "{v}");
    assert_eq!(e.ran(), Vec::<String>::new(), "check ran a script");

    let ran = pre_then_post(&e, &[], &[]);
    assert_eq!(ran, lines(&["a pre", "b pre", "b post", "a post"]));
}

/// The same list written `key = v`, with a host file whose other keys stay.
#[test]
fn the_plugin_host_list_also_reads_key_equals_value() {
    require_root!();
    let e = Env::new("apps-host-eq");
    let a = e.write_json("conf/a.json", &e.app("a"));
    let b = e.write_json("conf/b.json", &e.app("b"));
    e.write_host(&format!(
        "[pre_post]\nnumberOfPlugins = 2\npluginConfigPath1 = {}\npluginConfigPath0 = {}\n",
        b.display(),
        a.display()
    ));
    // Index order, not the order of the lines: 0 = a, 1 = b.
    let ran = pre_then_post(&e, &[], &[]);
    assert_eq!(ran, lines(&["a pre", "b pre", "b post", "a post"]));
}

/// The leftovers of package managers and editors in an apps dir.
const LEFTOVERS: &[&str] = &[
    "30-x.json~",
    "30-x.json.bak",
    "30-x.json.dpkg-old",
    "30-x.json.dpkg-new",
    "30-x.json.dpkg-dist",
    "30-x.json.dpkg-tmp",
    "30-x.json.rpmnew",
    "30-x.json.rpmsave",
    "30-x.json.rpmorig",
    "30-x.json.sample",
    ".hidden.json",
];

#[test]
fn the_apps_dir_in_lexical_order_beats_the_default_and_ignores_leftovers() {
    require_root!();
    let e = Env::new("apps-dir");
    // A host file without numberOfPlugins does not list applications.
    e.write_host("[pre_post]\ntimeoutInSeconds: 60\n");
    e.make_apps_dir();
    let a = e.write_json("etc/apps.d/20-a.json", &e.app("a"));
    let b = e.write_json("etc/apps.d/10-b.json", &e.app("b"));
    let x = e.app("x");
    let mut ignored: Vec<String> = LEFTOVERS
        .iter()
        .map(|n| {
            e.write_json(&format!("etc/apps.d/{n}"), &x)
                .display()
                .to_string()
        })
        .collect();
    ignored.sort();

    let check = e.run(&[], &["check", "--json"]);
    assert_eq!(check.code, 0, "{}", ctx(&check));
    let v = check.json();
    assert_eq!(v["applicationSource"]["source"], "apps-dir", "{v}");
    assert_eq!(
        v["applicationSource"]["path"],
        e.apps_dir().display().to_string(),
        "{v}"
    );
    assert_eq!(ignored_of(&v), ignored, "applicationSource.ignored");
    assert_eq!(configs_of(&v), path_strings(&[&b, &a]), "{v}");
    assert_eq!(names(&v), lines(&["10-b", "20-a"]), "file stems");
    for p in &ignored {
        assert!(
            check
                .stderr
                .lines()
                .any(|l| l.contains("ignored") && l.contains(p.as_str())),
            "check does not say it ignored {p}:\n{}",
            check.stderr
        );
    }

    let pre = e.run(&[], &["pre", "--json"]);
    assert_eq!(pre.code, 0, "{}", ctx(&pre));
    assert_eq!(
        ignored_of(&pre.json()),
        ignored,
        "pre's applicationSource.ignored"
    );
    let post = e.run(&[], &["post", "--json"]);
    assert_eq!(post.code, 0, "{}", ctx(&post));
    assert_eq!(e.ran(), lines(&["b pre", "a pre", "a post", "b post"]));
}

/// `check`'s text: where the applications come from, what was ignored,
/// then one block per application in order (its heading once, its findings
/// indented under it), then the rest of the check.
#[test]
fn check_says_each_application_once_with_its_findings_under_it() {
    require_root!();
    let e = Env::new("apps-check-text");
    e.make_apps_dir();
    let a = e.write_json("etc/apps.d/10-app.json", &e.app("a"));
    let b = e.write_json("etc/apps.d/20-db.json", &e.app("b"));
    let left = e.write_json("etc/apps.d/20-db.json.dpkg-old", &e.app("b"));
    let check = e.run(&[], &["check"]);
    assert_eq!(check.code, 0, "{}", ctx(&check));
    let said: Vec<&str> = check
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("quiesce: "))
        .skip_while(|l| !l.starts_with("applications (2)"))
        .take(14)
        .collect();
    let heading =
        |i: usize, name: &str, p: &Path| format!("application {i} of 2: {name} ({})", p.display());
    let want = [
        format!(
            "applications (2) from the apps directory {}: 10-app, 20-db",
            e.apps_dir().display()
        ),
        format!(
            "ignored {} (a package-manager leftover or backup)",
            left.display()
        ),
        heading(1, "10-app", &a),
        "  configuration ok".into(),
        "  pre-script ok".into(),
        "    pre-script interpreter ok: /bin/sh".into(),
        "  post-script ok".into(),
        "    post-script interpreter ok: /bin/sh".into(),
        heading(2, "20-db", &b),
        "  configuration ok".into(),
        "  pre-script ok".into(),
        "    pre-script interpreter ok: /bin/sh".into(),
        "  post-script ok".into(),
        "    post-script interpreter ok: /bin/sh".into(),
    ];
    assert_eq!(said.len(), want.len(), "{}", check.stderr);
    for (got, want) in said.iter().zip(&want) {
        assert!(
            got.starts_with(want.as_str()),
            "{got:?} is not {want:?}\n{}",
            check.stderr
        );
    }
    for (i, name, p) in [(1, "10-app", &a), (2, "20-db", &b)] {
        let h = heading(i, name, p);
        let n = check.stderr.lines().filter(|l| l.ends_with(&h)).count();
        assert_eq!(n, 1, "{h:?} said {n} times:\n{}", check.stderr);
    }
}

/// No plugin list and no apps dir: the single default config, named in
/// `check` (which runs and creates nothing; nothing is written under /etc).
#[test]
fn without_host_list_or_apps_dir_the_default_config_is_the_application() {
    require_root!();
    let e = Env::new("apps-default");
    for host in [None, Some("[pre_post]\ntimeoutInSeconds = 60\n")] {
        if let Some(text) = host {
            e.write_host(text);
        }
        let check = e.run(&[], &["check", "--json"]);
        let v = check.json();
        assert_eq!(v["applicationSource"]["source"], "config", "{v}");
        assert_eq!(configs_of(&v), lines(&[DEFAULT_CONFIG]), "{v}");
        if !Path::new(DEFAULT_CONFIG).exists() {
            assert_eq!(check.code, 2, "{}", ctx(&check));
            assert_eq!(v["errors"][0]["code"], 305, "{v}");
        }
    }
    assert!(!e.apps_dir().exists());
}

/// An apps dir with no `.json` falls through to the default config.
#[test]
fn an_apps_dir_without_json_falls_through_to_the_default_config() {
    require_root!();
    let e = Env::new("apps-empty");
    e.make_apps_dir();
    e.write_json("etc/apps.d/10-a.json.bak", &e.app("a"));
    let check = e.run(&[], &["check", "--json"]);
    let v = check.json();
    assert_eq!(v["applicationSource"]["source"], "config", "{v}");
    assert_eq!(configs_of(&v), lines(&[DEFAULT_CONFIG]), "{v}");
    if !Path::new(DEFAULT_CONFIG).exists() {
        assert_eq!(check.code, 2, "{}", ctx(&check));
    }
    assert_eq!(e.ran(), Vec::<String>::new());
}

#[test]
fn explicit_configs_beat_the_host_list_and_the_apps_dir() {
    require_root!();
    let e = Env::new("apps-explicit");
    host_list_and_apps_dir(&e);
    let y = e.write_json("conf/y.json", &e.app("y"));
    let x = e.write_json("conf/x.json", &e.app("x"));
    // The order given, not the names' order.
    let check = e.run(&[&y, &x], &["check", "--json"]);
    assert_eq!(check.code, 0, "{}", ctx(&check));
    let v = check.json();
    assert_eq!(v["applicationSource"]["source"], "config", "{v}");
    assert_eq!(configs_of(&v), path_strings(&[&y, &x]), "{v}");
    let ran = pre_then_post(&e, &[&y, &x], &[]);
    assert_eq!(ran, lines(&["y pre", "x pre", "x post", "y post"]));
}

/// `--bridge` (the extension hook): the host file's list is the
/// extension's own and is not read; its `timeoutInSeconds` still caps.
#[test]
fn bridge_mode_skips_the_host_list_and_keeps_its_timeout_cap() {
    require_root!();
    let e = Env::new("apps-bridge");
    let m = MarkerGuard::new(150);
    host_list_and_apps_dir(&e);
    // The host file caps every phase at 1 s; b's own timeout is 30 s.
    let host = fs::read_to_string(e.host()).unwrap();
    e.write_host(&host.replace("timeoutInSeconds: 60", "timeoutInSeconds: 1"));
    let mut slow = e.app_with("b", &format!("sleep {}", m.0), "");
    slow["timeoutInSeconds"] = json!(30);
    e.write_json("etc/apps.d/20-b.json", &slow);

    let pre = e.run(&[], &["--bridge", "pre", "--json"]);
    assert_eq!(pre.code, 2, "{}", ctx(&pre));
    let v = pre.json();
    assert_eq!(v["applicationSource"]["source"], "apps-dir", "{v}");
    assert_eq!(
        errors_of(&v),
        vec![("Pre-ScriptTimeout".to_string(), Some(308))],
        "{v}"
    );
    assert_eq!(e.ran(), lines(&["c pre", "b pre"]));
    assert_eq!(m.survivors(), Vec::<i32>::new());
    let post = e.run(&[], &["--bridge", "post", "--json"]);
    assert_eq!(post.code, 0, "{}", ctx(&post));
    assert_eq!(e.ran(), lines(&["c pre", "b pre", "b post", "c post"]));

    // No apps dir: bridge mode's own default config, not the host list.
    fs::remove_dir_all(e.apps_dir()).unwrap();
    let pre = e.run(&[], &["--bridge", "pre", "--json"]);
    let v = pre.json();
    assert_eq!(v["applicationSource"]["source"], "config", "{v}");
    assert_eq!(configs_of(&v), lines(&[BRIDGE_DEFAULT_CONFIG]), "{v}");
    if !Path::new(BRIDGE_DEFAULT_CONFIG).exists() {
        assert_eq!(pre.code, 2, "{}", ctx(&pre));
        assert_eq!(v["errors"][0]["code"], 305, "{v}");
    }
    assert_eq!(e.ran().len(), 4, "the host list ran: {:?}", e.ran());
}

// ---------------------------------------------------------------------------
// Bad input: fails closed, nothing runs
// ---------------------------------------------------------------------------

struct Bad {
    name: &'static str,
    /// Breaks the set-up of [`bad_base`].
    arrange: fn(&Env),
    code: u64,
    /// Substrings the first error's message must contain.
    needles: fn(&Env) -> Vec<String>,
}

/// A valid app `a` in the apps dir and valid configs `h0`, `h1` a host
/// list could name: if the run did not fail closed, something would run.
fn bad_base(e: &Env) {
    e.make_apps_dir();
    e.write_json("etc/apps.d/10-a.json", &e.app("a"));
    e.write_json("conf/h0.json", &e.app("h0"));
    e.write_json("conf/h1.json", &e.app("h1"));
}

fn host_lines(e: &Env, lines: &str) {
    let text = lines
        .replace("H0", &e.s.path("conf/h0.json").display().to_string())
        .replace("H1", &e.s.path("conf/h1.json").display().to_string());
    e.write_host(&format!("[pre_post]\n{text}"));
}

fn dir_needle(e: &Env) -> Vec<String> {
    vec![e.apps_dir().display().to_string()]
}

fn n_needles(e: &Env) -> Vec<String> {
    vec!["numberOfPlugins".into(), e.host().display().to_string()]
}

const BAD: &[Bad] = &[
    Bad {
        name: "apps dir group-writable",
        arrange: |e| chmod(&e.apps_dir(), 0o775),
        code: 305,
        needles: dir_needle,
    },
    Bad {
        name: "apps dir world-writable",
        arrange: |e| chmod(&e.apps_dir(), 0o757),
        code: 305,
        needles: dir_needle,
    },
    Bad {
        name: "apps dir world-writable and sticky",
        arrange: |e| chmod(&e.apps_dir(), 0o1777),
        code: 305,
        needles: dir_needle,
    },
    Bad {
        name: "apps dir owned by nobody",
        arrange: |e| chown(&e.apps_dir(), NOBODY),
        code: 305,
        needles: dir_needle,
    },
    Bad {
        name: "apps dir a symlink to a good dir",
        arrange: |e| {
            fs::rename(e.apps_dir(), e.s.path("etc/real-apps.d")).unwrap();
            e.s.symlink(&e.s.path("etc/real-apps.d"), "etc/apps.d");
        },
        code: 305,
        needles: dir_needle,
    },
    Bad {
        name: "apps dir a regular file",
        arrange: |e| {
            fs::remove_dir_all(e.apps_dir()).unwrap();
            e.s.write("etc/apps.d", "", 0o600);
        },
        code: 305,
        needles: dir_needle,
    },
    Bad {
        name: "apps dir's parent group-writable",
        arrange: |e| chmod(&e.s.path("etc"), 0o775),
        code: 305,
        needles: |e| vec![e.s.path("etc").display().to_string()],
    },
    Bad {
        name: "numberOfPlugins 0",
        arrange: |e| host_lines(e, "numberOfPlugins: 0\n"),
        code: 304,
        needles: n_needles,
    },
    Bad {
        name: "numberOfPlugins -1",
        arrange: |e| host_lines(e, "numberOfPlugins: -1\npluginConfigPath0: H0\n"),
        code: 304,
        needles: n_needles,
    },
    Bad {
        name: "numberOfPlugins x",
        arrange: |e| host_lines(e, "numberOfPlugins = x\npluginConfigPath0 = H0\n"),
        code: 304,
        needles: n_needles,
    },
    Bad {
        name: "numberOfPlugins 1.5",
        arrange: |e| host_lines(e, "numberOfPlugins: 1.5\npluginConfigPath0: H0\n"),
        code: 304,
        needles: n_needles,
    },
    Bad {
        name: "pluginConfigPath1 missing with N=2",
        arrange: |e| host_lines(e, "numberOfPlugins: 2\npluginConfigPath0: H0\n"),
        code: 304,
        needles: |_| vec!["pluginConfigPath1".into(), "2".into()],
    },
    Bad {
        name: "pluginConfigPath2 with N=2",
        arrange: |e| {
            host_lines(
                e,
                "numberOfPlugins: 2\npluginConfigPath0: H0\npluginConfigPath1: H1\npluginConfigPath2: H1\n",
            )
        },
        code: 304,
        needles: |_| vec!["pluginConfigPath2".into()],
    },
    Bad {
        name: "pluginName2 with N=2",
        arrange: |e| {
            host_lines(
                e,
                "numberOfPlugins: 2\npluginConfigPath0: H0\npluginConfigPath1: H1\npluginName2: extra\n",
            )
        },
        code: 304,
        needles: |_| vec!["pluginName2".into()],
    },
    Bad {
        name: "pluginConfigPath0 without numberOfPlugins",
        arrange: |e| host_lines(e, "timeoutInSeconds: 60\npluginConfigPath0: H0\n"),
        code: 304,
        needles: |_| vec!["pluginConfigPath0".into()],
    },
    Bad {
        name: "non-numeric index",
        arrange: |e| {
            host_lines(
                e,
                "numberOfPlugins: 1\npluginConfigPath0: H0\npluginConfigPathx: H1\n",
            )
        },
        code: 304,
        needles: |_| vec!["pluginConfigPathx".into()],
    },
    Bad {
        name: "pluginConfigPath0 not absolute",
        arrange: |e| host_lines(e, "numberOfPlugins: 1\npluginConfigPath0: conf/h0.json\n"),
        code: 304,
        needles: |_| vec!["pluginConfigPath0".into()],
    },
];

/// Each finding refuses the run before anything runs (no script, no
/// freeze, no snapshot: exit 2), and `check` lists it and exits 2.
#[test]
fn bad_application_sources_fail_closed() {
    require_root!("trust checks need uid 0 ownership; freezing needs CAP_SYS_ADMIN");
    for (i, bad) in BAD.iter().enumerate() {
        eprintln!("bad input: {}", bad.name);
        let e = Env::with_fs(&format!("apps-bad{i}"));
        bad_base(&e);
        (bad.arrange)(&e);
        let needles = (bad.needles)(&e);
        for (what, run) in [
            ("snapshot", e.snapshot(&[], &[])),
            ("check", e.run(&[], &["check", "--json"])),
        ] {
            let ctx = format!("{}: {what}\n{}", bad.name, ctx(&run));
            assert_eq!(run.code, 2, "exit\n{ctx}");
            let v = run.json();
            let first = &v["errors"][0];
            assert_eq!(first["code"], bad.code, "first error\n{ctx}");
            let msg = first["message"].as_str().unwrap_or("");
            for n in &needles {
                assert!(msg.contains(n.as_str()), "message lacks {n:?}\n{ctx}");
            }
            assert_eq!(e.ran(), Vec::<String>::new(), "a script ran\n{ctx}");
            assert!(!e.snapshot_was_taken(), "the snapshot ran\n{ctx}");
            assert!(v["phases"].get("freeze").is_none(), "froze\n{ctx}");
        }
        e.assert_writable();
    }
}

/// An insecure plugin-host file as a whole: 304 as the pre-check result of
/// every application (which then come from the apps dir); each one's
/// continueBackupOnFailure (true here) lets the snapshot go on, no script runs.
#[test]
fn an_insecure_host_file_is_304_for_every_application() {
    require_root!("trust checks need uid 0 ownership; freezing needs CAP_SYS_ADMIN");
    let e = Env::with_fs("apps-host-0666");
    bad_base(&e);
    e.write_json("etc/apps.d/20-b.json", &e.app("b"));
    host_lines(&e, "numberOfPlugins: 1\npluginConfigPath0: H0\n");
    chmod(&e.host(), 0o666);
    let run = e.snapshot(&[], &[]);
    assert_eq!(run.code, 1, "{}", ctx(&run));
    let v = run.json();
    assert_eq!(v["applicationSource"]["source"], "apps-dir", "{v}");
    assert_eq!(names(&v), lines(&["10-a", "20-b"]), "{v}");
    for a in applications(&v) {
        assert_eq!(app_error_codes(a).first(), Some(&304), "{a}");
    }
    let errs = errors_of(&v);
    assert!(
        !errs.is_empty() && errs.iter().all(|(_, c)| *c == Some(304)),
        "{errs:?}"
    );
    assert_eq!(v["consistency"], "filesystem", "{v}");
    assert_eq!(e.ran(), Vec::<String>::new());
    assert!(e.snapshot_was_taken());
    e.assert_writable();
}

#[test]
fn two_applications_with_the_same_script_pair_are_a_warning_naming_both() {
    require_root!();
    let e = Env::new("apps-same-pair");
    let a = e.write_json("conf/a.json", &e.app("a"));
    let mut twin = e.app("a");
    twin["timeoutInSeconds"] = json!(20);
    let b = e.write_json("conf/b.json", &twin);
    let run = e.run(&[&a, &b], &["check", "--json"]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let (sa, sb) = (a.display().to_string(), b.display().to_string());
    assert!(
        run.warnings()
            .iter()
            .any(|w| w.contains(&sa) && w.contains(&sb)),
        "no warning naming both configs: {:?}",
        run.warnings()
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("warning:") && l.contains(&sa) && l.contains(&sb)),
        "{}",
        run.stderr
    );
    // A different pair is no such warning.
    let c = e.write_json("conf/c.json", &e.app("c"));
    let run = e.run(&[&c, &b], &["check", "--json"]);
    assert!(
        !run.warnings()
            .iter()
            .any(|w| w.contains(&sb) && w.contains(&c.display().to_string())),
        "{:?}",
        run.warnings()
    );
}

// ---------------------------------------------------------------------------
// Names and the status document
// ---------------------------------------------------------------------------

#[test]
fn application_names_appname_then_plugin_name_then_file_stem() {
    require_root!();
    let e = Env::new("apps-names");
    let a = e.write_json("conf/a.json", &e.app("a"));
    let b = e.write_json("conf/b.json", &e.app("b"));
    let mut g = e.app("g");
    g["appName"] = json!("gamma");
    let g = e.write_json("conf/g.json", &g);
    e.write_host(&format!(
        "[pre_post]\nnumberOfPlugins: 3\n\
         pluginName0: alpha\npluginConfigPath0: {}\n\
         pluginName1: ScriptRunner\npluginConfigPath1: {}\n\
         pluginName2: other\npluginConfigPath2: {}\n",
        a.display(),
        b.display(),
        g.display()
    ));
    let run = e.run(&[], &["check", "--json"]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_eq!(names(&run.json()), lines(&["alpha", "b", "gamma"]));

    // Two configs of one file name: each gets its position.
    let one = e.write_json("one/app.json", &e.app("p"));
    let two = e.write_json("two/app.json", &e.app("q"));
    let run = e.run(&[&one, &two], &["check", "--json"]);
    assert_eq!(names(&run.json()), lines(&["app #1", "app #2"]));

    // One application: its pluginName, as it always was.
    let mut solo = e.app("s");
    solo["pluginName"] = json!("ScriptRunner");
    let solo = e.write_json("conf/solo.json", &solo);
    let run = e.run(&[&solo], &["check", "--json"]);
    assert_eq!(names(&run.json()), lines(&["ScriptRunner"]));
}

#[test]
fn status_of_a_multi_app_snapshot_has_applications_and_no_phases_pre() {
    require_root!("trust checks need uid 0 ownership; freezing needs CAP_SYS_ADMIN");
    let e = Env::with_fs("apps-status");
    let env_rec = |label: &str, phase: &str| {
        format!(
            "echo \"$QUIESCE_APP\" > '{}'",
            e.s.path(&format!("env-{label}-{phase}")).display()
        )
    };
    let a = e.write_json(
        "conf/a.json",
        &e.app_with("a", &env_rec("a", "pre"), &env_rec("a", "post")),
    );
    let mut bc = e.app_with("b", &env_rec("b", "pre"), &env_rec("b", "post"));
    bc["continueBackupOnFailure"] = json!(false);
    bc["timeoutInSeconds"] = json!(7);
    let b = e.write_json("conf/b.json", &bc);
    let run = e.snapshot(&[&a, &b], &[]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let v = run.json();
    assert_eq!(v["consistency"], "application", "{v}");
    assert!(v["phases"].get("pre").is_none(), "{v}");
    assert!(v["phases"].get("post").is_none(), "{v}");
    assert!(v["phases"].get("freeze").is_some(), "{v}");
    assert!(v["phases"].get("snapshot").is_some(), "{v}");
    assert_eq!(v["applicationSource"]["source"], "config", "{v}");
    assert!(v["applicationSource"].get("path").is_none(), "{v}");
    let apps = applications(&v);
    assert_eq!(apps.len(), 2, "{v}");
    for (entry, (label, config, cont, timeout)) in
        apps.iter().zip([("a", &a, true, 10), ("b", &b, false, 7)])
    {
        assert_eq!(entry["name"], label, "{entry}");
        assert_eq!(entry["config"], config.display().to_string(), "{entry}");
        assert_eq!(entry["configSha256"], sha256_of(config), "{entry}");
        assert_eq!(entry["continueBackupOnFailure"], cont, "{entry}");
        assert_eq!(entry["fsFreezeEnabled"], true, "{entry}");
        assert_eq!(entry["timeoutInSeconds"], timeout, "{entry}");
        assert_eq!(entry["errors"], json!([]), "{entry}");
        for phase in ["pre", "post"] {
            let script = e.s.path(&format!("scripts/{label}/{phase}.sh"));
            let p = &entry[phase];
            assert_eq!(p["script"], script.display().to_string(), "{entry}");
            assert_eq!(p["sha256"], sha256_of(&script), "{entry}");
            let attempts = p["attempts"].as_array().unwrap_or_else(|| panic!("{p}"));
            assert_eq!(attempts.len(), 1, "{p}");
            assert_eq!(attempts[0]["exitCode"], 0, "{p}");
            assert_eq!(attempts[0]["timedOut"], false, "{p}");
            let seen =
                fs::read_to_string(e.s.path(&format!("env-{label}-{phase}"))).unwrap_or_default();
            assert_eq!(seen.trim(), label, "QUIESCE_APP of {label} {phase}");
        }
    }
    e.assert_writable();
}

/// One application keeps the shape it always had: `phases.pre`/`post`.
#[test]
fn status_of_a_single_app_snapshot_keeps_phases_pre_and_post() {
    require_root!("trust checks need uid 0 ownership; freezing needs CAP_SYS_ADMIN");
    let e = Env::with_fs("apps-single");
    let a = e.write_json("conf/a.json", &e.app("a"));
    let run = e.snapshot(&[&a], &[]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let v = run.json();
    for phase in ["pre", "post"] {
        assert_eq!(
            v["phases"][phase]["attempts"][0]["exitCode"], 0,
            "phases.{phase}: {v}"
        );
    }
    assert!(v["phases"].get("freeze").is_some(), "{v}");
    assert_eq!(applications(&v).len(), 1, "{v}");
    assert_eq!(e.ran(), lines(&["a pre", "a post"]));
    e.assert_writable();
}

// ---------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------

#[test]
fn check_lists_every_application_with_its_scripts() {
    require_root!();
    let e = Env::new("apps-check");
    let a = e.write_json("conf/a.json", &e.app("a"));
    let b = e.write_json("conf/b.json", &e.app("b"));
    let run = e.run(&[&a, &b], &["check", "--json"]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let v = run.json();
    assert_eq!(v["operation"], "check", "{v}");
    let apps = applications(&v);
    assert_eq!(apps.len(), 2, "{v}");
    for (entry, label) in apps.iter().zip(["a", "b"]) {
        for (key, phase) in [("preScript", "pre"), ("postScript", "post")] {
            let script = e.s.path(&format!("scripts/{label}/{phase}.sh"));
            // What runs it is listed too, checked (SPEC §4, issue 26).
            let sh = fs::canonicalize("/bin/sh").unwrap();
            let interpreters = json!([{
                "path": "/bin/sh",
                "resolved": sh,
                "namedBy": format!("#! line of {}", script.display()),
            }]);
            assert_eq!(
                entry[key],
                json!({"script": script, "sha256": sha256_of(&script), "pinned": false,
                       "interpreters": interpreters}),
                "{entry}"
            );
            assert!(entry.get(phase).is_none(), "check ran {label} {phase}");
        }
        assert_eq!(entry["errors"], json!([]), "{entry}");
    }
    for (i, (label, config)) in [("a", &a), ("b", &b)].iter().enumerate() {
        let line = format!("application {} of 2: {label} ({})", i + 1, config.display());
        assert!(run.stderr.contains(&line), "no {line:?}:\n{}", run.stderr);
    }
    assert_eq!(e.ran(), Vec::<String>::new(), "check ran a script");
}

#[test]
fn check_with_one_broken_application_is_2_with_its_errors_in_its_entry() {
    require_root!();
    let e = Env::new("apps-check-broken");
    let a = e.write_json("conf/a.json", &e.app("a"));
    let mut bc = e.app("b");
    bc["preScriptLocation"] = json!(e.s.path("scripts/b/missing.sh"));
    chmod(&e.s.path("scripts/b/post.sh"), 0o777);
    let b = e.write_json("conf/b.json", &bc);
    let run = e.run(&[&a, &b], &["check", "--json"]);
    assert_eq!(run.code, 2, "{}", ctx(&run));
    let v = run.json();
    let apps = applications(&v);
    assert_eq!(app_error_codes(&apps[0]), Vec::<u64>::new(), "{v}");
    assert_eq!(app_error_codes(&apps[1]), vec![302, 307], "{v}");
    assert!(apps[0].get("preScript").is_some(), "{v}");
    assert!(apps[1].get("preScript").is_none(), "{v}");
    assert!(apps[1].get("postScript").is_none(), "{v}");
    assert_eq!(
        errors_of(&v),
        vec![
            ("Pre-ScriptNotFound".to_string(), Some(302)),
            (
                "InsufficientPermissionforPost-Script".to_string(),
                Some(307)
            ),
        ],
        "{v}"
    );
    assert_eq!(e.ran(), Vec::<String>::new());
}

/// Top-level errors follow application order, then each one's pre-check
/// order — not the kind of error (305 < 302 < 307 would be the other).
#[test]
fn check_errors_follow_application_order() {
    require_root!();
    let e = Env::new("apps-check-order");
    let a = e.write_json("conf/a.json", &e.app("a"));
    chmod(&e.s.path("scripts/a/post.sh"), 0o777);
    let b = e.write_json_mode("conf/b.json", &e.app("b"), 0o644);
    let mut cc = e.app("c");
    cc["preScriptLocation"] = json!(e.s.path("scripts/c/missing.sh"));
    let c = e.write_json("conf/c.json", &cc);
    let run = e.run(&[&a, &b, &c], &["check", "--json"]);
    assert_eq!(run.code, 2, "{}", ctx(&run));
    let v = run.json();
    let codes: Vec<Option<u64>> = errors_of(&v).into_iter().map(|(_, c)| c).collect();
    assert_eq!(codes, vec![Some(307), Some(305), Some(302)], "{v}");
    let per_app: Vec<Vec<u64>> = applications(&v).iter().map(app_error_codes).collect();
    assert_eq!(per_app, vec![vec![307], vec![305], vec![302]], "{v}");
}

// ---------------------------------------------------------------------------
// Separate pre and post (bridge style)
// ---------------------------------------------------------------------------

#[test]
fn pre_and_post_as_separate_commands_run_in_order_and_in_reverse() {
    require_root!();
    let e = Env::new("apps-pre-post");
    let configs: Vec<PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|l| e.write_json(&format!("conf/{l}.json"), &e.app(l)))
        .collect();
    let refs: Vec<&Path> = configs.iter().map(PathBuf::as_path).collect();
    let pre = e.run(&refs, &["pre", "--json"]);
    assert_eq!(pre.code, 0, "{}", ctx(&pre));
    assert_eq!(e.ran(), lines(&["a pre", "b pre", "c pre"]));
    let v = pre.json();
    assert_eq!(v["operation"], "pre", "{v}");
    assert!(v["phases"].get("pre").is_none(), "{v}");
    for entry in applications(&v) {
        assert_eq!(entry["pre"]["attempts"][0]["exitCode"], 0, "{entry}");
        assert!(entry.get("post").is_none(), "{entry}");
    }
    let post = e.run(&refs, &["post", "--json"]);
    assert_eq!(post.code, 0, "{}", ctx(&post));
    assert_eq!(
        e.ran(),
        lines(&["a pre", "b pre", "c pre", "c post", "b post", "a post"])
    );
    let v = post.json();
    assert_eq!(v["operation"], "post", "{v}");
    assert!(v["phases"].get("post").is_none(), "{v}");
    for entry in applications(&v) {
        assert_eq!(entry["post"]["attempts"][0]["exitCode"], 0, "{entry}");
        assert!(entry.get("pre").is_none(), "{entry}");
    }
}

/// `quiesce pre` keeps the stop rule: a failed pre-script with
/// continueBackupOnFailure=false stops the later ones, exit 2. The `quiesce
/// post` that completes it runs the post-scripts of the applications whose
/// pre-script started (their records await it), in reverse, and not of the
/// one that never started. A second `post` for the same `pre` (a retry, a
/// late call) runs nothing again: one `pre`, one post-script run (§6.6).
#[test]
fn separate_pre_stops_at_a_fatal_failure_and_post_runs_the_started_in_reverse() {
    require_root!();
    let e = Env::new("apps-pre-stop");
    let a = e.write_json("conf/a.json", &e.app("a"));
    let mut bc = e.app_with("b", "exit 3", "");
    bc["continueBackupOnFailure"] = json!(false);
    let b = e.write_json("conf/b.json", &bc);
    let c = e.write_json("conf/c.json", &e.app("c"));
    let pre = e.run(&[&a, &b, &c], &["pre", "--json"]);
    assert_eq!(pre.code, 2, "{}", ctx(&pre));
    assert_eq!(e.ran(), lines(&["a pre", "b pre"]));
    let v = pre.json();
    assert_eq!(
        errors_of(&v),
        vec![("Pre-ScriptExecutionFailed".to_string(), Some(300))],
        "{v}"
    );
    assert!(applications(&v)[2].get("pre").is_none(), "{v}");

    let post = e.run(&[&a, &b, &c], &["post", "--json"]);
    assert_eq!(post.code, 0, "{}", ctx(&post));
    assert_eq!(
        e.ran(),
        lines(&["a pre", "b pre", "b post", "a post"]),
        "{}",
        ctx(&post)
    );
    assert!(
        post.stderr
            .lines()
            .any(|l| l.contains("c: its pre-script did not start")),
        "{}",
        post.stderr
    );
    assert!(applications(&post.json())[2].get("post").is_none());

    let again = e.run(&[&a, &b, &c], &["post", "--json"]);
    assert_eq!(again.code, 0, "a second post\n{}", ctx(&again));
    assert_eq!(
        e.ran(),
        lines(&["a pre", "b pre", "b post", "a post"]),
        "{}",
        ctx(&again)
    );
    for app in ["a", "b"] {
        assert!(
            again
                .stderr
                .lines()
                .any(|l| l.contains(&format!("{app}: its post-script already ran for operation"))),
            "{app}\n{}",
            again.stderr
        );
    }
}

/// The audit trail names the application on every record of its work (its
/// checks, script start, output and exit, holders), in the order the
/// scripts ran; the run's own records between them (freeze, thaw, window,
/// run-end) name none.
#[test]
fn the_trail_names_the_application_on_every_script_record() {
    require_root!("trust checks need uid 0 ownership; freezing needs CAP_SYS_ADMIN; rsyslogd's socket dir is root-owned");
    if let Err(why) = TestSyslog::prerequisites() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let mut e = Env::with_fs("apps-trail");
    e.syslog = Some(TestSyslog::start().expect("start rsyslogd"));
    let m = MarkerGuard::new(170);
    let hold = format!(
        "echo a-pre-says-hello\nsetsid sleep {} >/dev/null 2>&1 &",
        m.0
    );
    let a = e.write_json(
        "conf/a.json",
        &e.app_with("a", &hold, "echo a-post-says-bye"),
    );
    let b = e.write_json("conf/b.json", &e.app_with("b", "echo b-pre", "echo b-post"));
    let run = e.snapshot(&[&a, &b], &[]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    e.assert_writable();
    let syslog = e.syslog.as_ref().unwrap();
    let raw = syslog.wait_for("the run-end record", |ls| {
        ls.iter()
            .filter_map(|l| parse_5424(l).ok())
            .any(|r| r.msgid == "run-end")
    });
    let recs: Vec<Syslog5424> = raw
        .iter()
        .map(|l| parse_5424(l).unwrap_or_else(|e| panic!("not RFC 5424: {e}")))
        .collect();
    let app_of = |r: &Syslog5424| r.param("app").unwrap_or("").to_string();
    const WORK: &[&str] = &[
        "check",
        "script-start",
        "script-output",
        "script-exit",
        "holder-recorded",
        "holder-terminated",
    ];
    const RUN: &[&str] = &["freeze", "freeze-complete", "thaw", "window", "run-end"];
    for r in &recs {
        let app = app_of(r);
        if WORK.contains(&r.msgid.as_str()) {
            assert!(
                app == "a" || app == "b",
                "a {} record naming no application: {r:?}",
                r.msgid
            );
        } else if RUN.contains(&r.msgid.as_str()) {
            assert_eq!(app, "", "the run's own {} record names {app:?}", r.msgid);
        }
    }
    let seen = |msgid: &str| -> Vec<String> {
        recs.iter()
            .filter(|r| r.msgid == msgid)
            .map(|r| format!("{} {}", app_of(r), r.param("phase").unwrap_or("")))
            .collect()
    };
    assert_eq!(
        seen("script-start"),
        lines(&["a pre", "b pre", "b post", "a post"]),
        "{raw:#?}"
    );
    assert_eq!(seen("script-exit"), seen("script-start"), "{raw:#?}");
    for (text, app) in [
        ("a-pre-says-hello", "a"),
        ("b-pre", "b"),
        ("b-post", "b"),
        ("a-post-says-bye", "a"),
    ] {
        assert!(
            recs.iter()
                .any(|r| r.msgid == "script-output" && r.msg.contains(text) && app_of(r) == app),
            "no script-output {text:?} naming {app}: {raw:#?}"
        );
    }
    for msgid in ["holder-recorded", "holder-terminated"] {
        let apps: Vec<String> = recs
            .iter()
            .filter(|r| r.msgid == msgid)
            .map(app_of)
            .collect();
        assert_eq!(apps, ["a"], "{msgid}: {raw:#?}");
    }
    assert!(m.survivors().is_empty(), "a's holder survived the run");
}

// ---------------------------------------------------------------------------
// Holders belong to their application
// ---------------------------------------------------------------------------

/// Both pre-scripts leave a holder. B's post (first, reverse order) sees
/// both alive; B's holder is ended right after B's post, so A's post sees
/// its own alive and B's gone; A's is ended right after A's post.
#[test]
fn holders_are_ended_right_after_their_own_post_script() {
    require_root!("trust checks need uid 0 ownership; freezing needs CAP_SYS_ADMIN");
    let e = Env::with_fs("apps-holders");
    let ma = MarkerGuard::new(160);
    let mb = MarkerGuard::new(161);
    let pid_a = e.s.path("holder-a.pid");
    let pid_b = e.s.path("holder-b.pid");
    // alive PIDFILE: the process exists and is not a zombie.
    let alive = |label: &str| {
        format!(
            "alive() {{ p=$(cat \"$1\") && s=$(cat /proc/$p/stat 2>/dev/null) || return 1; \
         case \"$s\" in *\") Z \"*) return 1;; esac; return 0; }}\n\
         st() {{ if alive \"$1\"; then echo alive; else echo gone; fi; }}\n\
         echo \"{label} sees a=$(st '{a}') b=$(st '{b}')\" >> '{marker}'",
            a = pid_a.display(),
            b = pid_b.display(),
            marker = e.marker.display()
        )
    };
    let hold = |m: &MarkerGuard, pidfile: &Path| {
        format!(
            "setsid sleep {} >/dev/null 2>&1 &\necho $! > '{}'",
            m.0,
            pidfile.display()
        )
    };
    let a = e.write_json(
        "conf/a.json",
        &e.app_with("a", &hold(&ma, &pid_a), &alive("a")),
    );
    let b = e.write_json(
        "conf/b.json",
        &e.app_with("b", &hold(&mb, &pid_b), &alive("b")),
    );
    let run = e.snapshot(&[&a, &b], &[]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_eq!(
        e.ran(),
        lines(&[
            "a pre",
            "b pre",
            "b post",
            "b sees a=alive b=alive",
            "a post",
            "a sees a=alive b=gone",
        ]),
        "{}",
        ctx(&run)
    );
    assert_eq!(ma.survivors(), Vec::<i32>::new(), "A's holder survived");
    assert_eq!(mb.survivors(), Vec::<i32>::new(), "B's holder survived");
    let pid = |p: &Path| -> i64 { fs::read_to_string(p).unwrap().trim().parse().unwrap() };
    let v = run.json();
    let apps = applications(&v);
    let ended = |i: usize| -> Vec<i64> {
        apps[i]["post"]["holdersTerminated"]
            .as_array()
            .unwrap_or_else(|| panic!("no holdersTerminated: {}", apps[i]))
            .iter()
            .map(|p| p.as_i64().unwrap())
            .collect()
    };
    assert_eq!(ended(0), vec![pid(&pid_a)], "A's post ends A's holder only");
    assert_eq!(ended(1), vec![pid(&pid_b)], "B's post ends B's holder only");
    e.assert_writable();
}
