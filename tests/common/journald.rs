//! A private systemd-journald for tests: the real daemon in its own mount
//! namespace (`unshare -m`, a tmpfs over `/run` and `/var/log/journal`, so
//! the host's journal, if any, is untouched), its socket reached from
//! outside through `/proc/PID/root/run/systemd/journal/socket`, what it
//! stored read with `journalctl -D … -o json`. Programs that must read that
//! journal (rsyslog's imjournal, syslog-ng's systemd-journal()) run inside
//! the namespace through [`TestJournal::inside`].
//!
//! Needs root and systemd-journald (package `systemd`; scripts/test.sh
//! installs it).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

pub const JOURNALD: &str = "/lib/systemd/systemd-journald";

/// systemd-journald in its own mount namespace; killed on drop. The
/// namespace is held by `child` (a `sleep`), so journald can be stopped
/// with its socket file left behind, as on a host where it died.
pub struct TestJournal {
    child: Child,
    journald: Option<i32>,
}

impl TestJournal {
    pub fn prerequisites() -> Result<(), String> {
        if !super::is_root() {
            return Err("needs root (mount namespace, tmpfs, journald's sockets)".into());
        }
        if !Path::new(JOURNALD).is_file() {
            return Err(format!(
                "{JOURNALD} not installed (apt-get install systemd; scripts/test.sh does)"
            ));
        }
        Ok(())
    }

    /// Starts journald and waits (bounded) for its native socket.
    pub fn start() -> TestJournal {
        // A tmpfs over all of /run (not /run/systemd/journal, which may not
        // exist on the host and would have to be created there first).
        let script = "mount -t tmpfs -o mode=0755 tmpfs /run && \
                      { [ ! -d /var/log/journal ] || mount -t tmpfs tmpfs /var/log/journal; } && \
                      { \"$0\" & echo $! > /run/test-journald.pid; exec sleep 2147483647; }";
        let child = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                JOURNALD,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn unshare");
        let mut j = TestJournal {
            child,
            journald: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_socket(&j.socket()) {
            assert!(
                Instant::now() < deadline,
                "journald did not start within 10 s"
            );
            sleep(Duration::from_millis(20));
        }
        let pid = fs::read_to_string(j.root().join("run/test-journald.pid")).unwrap();
        j.journald = Some(pid.trim().parse().unwrap());
        j
    }

    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.child.id()))
    }

    /// The native socket, as seen from outside the namespace.
    pub fn socket(&self) -> PathBuf {
        self.root().join("run/systemd/journal/socket")
    }

    pub fn dir(&self) -> PathBuf {
        self.root().join("run/log/journal")
    }

    /// Every quiesce entry stored so far, in order of arrival.
    pub fn entries(&self) -> Vec<Map<String, Value>> {
        journal_entries(&self.dir())
    }

    /// The entries of operation `op`, once its run-end has arrived.
    pub fn wait_for_run(&self, op: &str) -> Vec<Map<String, Value>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ops: Vec<Map<String, Value>> = self
                .entries()
                .into_iter()
                .filter(|e| field(e, "QUIESCE_OP") == op)
                .collect();
            if ops.iter().any(|e| field(e, "SYSLOG_MSGID") == "run-end") {
                return ops;
            }
            assert!(
                Instant::now() < deadline,
                "no run-end of {op} in the journal within 10 s: {ops:?}"
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Stops journald (SIGKILL, like a crash); its socket file stays.
    pub fn stop_journald(&mut self) {
        if let Some(pid) = self.journald.take() {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            // Not our child (sh's, then sleep's): wait until it is gone.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}/exe")).exists() && Instant::now() < deadline {
                sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for TestJournal {
    fn drop(&mut self) {
        self.stop_journald();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// `journalctl -D DIR -o json --all` (--all: long and binary fields in full).
pub fn journal_entries(dir: &Path) -> Vec<Map<String, Value>> {
    let out = Command::new("journalctl")
        .arg("-D")
        .arg(dir)
        .args([
            "-o",
            "json",
            "--all",
            "--no-pager",
            "SYSLOG_IDENTIFIER=quiesce",
        ])
        .output()
        .expect("run journalctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str(l) {
            Ok(Value::Object(m)) => m,
            other => panic!("journalctl printed {l:?}: {other:?}"),
        })
        .collect()
}

/// A field's bytes: journalctl prints a string, or an array of byte values
/// for a value that is not printable UTF-8.
pub fn field_bytes(e: &Map<String, Value>, name: &str) -> Option<Vec<u8>> {
    match e.get(name)? {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Array(a) => Some(a.iter().map(|b| b.as_u64().unwrap() as u8).collect()),
        other => panic!("{name} is {other:?}"),
    }
}

pub fn field(e: &Map<String, Value>, name: &str) -> String {
    field_bytes(e, name).map_or_else(String::new, |b| String::from_utf8_lossy(&b).into_owned())
}

impl TestJournal {
    /// A command run inside the journal's mount namespace: it sees the
    /// private `/run` (the journal files, the sockets) and the host's
    /// other filesystems.
    pub fn inside(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.child.id()))
            .arg("--")
            .arg(program);
        c
    }

    /// Where `path` (absolute, as seen inside the namespace) is seen from
    /// outside it.
    pub fn outside(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }
}
