//! The runner's side of the group helper, `quiesce-group`: a separate
//! binary that holds the etcd client, the lease and the round, so that a
//! run without `--group` never maps the TLS and HTTP code (start-up time
//! and peak RSS unchanged), and a run with it never talks to the network
//! itself. One JSON line per request on the helper's stdin, one per reply
//! on its stdout; every wait for a reply is bounded by the caller's
//! deadline, after which the helper is killed (its lease then expires and
//! the other members abort).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::report::GroupReport;

/// What the runner asks of the helper.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Join the group's round (a lease, the join barrier).
    Join,
    /// This member reached `stage` (`ok`) or failed there (`reason`); wait
    /// for every member, `deadline_ms` at most.
    #[serde(rename_all = "camelCase")]
    Pass {
        stage: String,
        ok: bool,
        reason: String,
        deadline_ms: u64,
    },
    /// Give up the wait in progress (a signal reached the runner).
    Abort,
    /// While the snapshot command runs: answer as soon as the round
    /// aborts, or when told `unwatch` (or at `deadline_ms`).
    #[serde(rename_all = "camelCase")]
    Watch { deadline_ms: u64 },
    /// The snapshot command ended: end the watch in progress.
    Unwatch,
    /// The thaw begins: this member's thaw key, `timeout_ms` at most.
    #[serde(rename_all = "camelCase")]
    Thawing { timeout_ms: u64 },
    /// The round read once more: the proof of the common instant.
    Prove,
    /// `check --group`: each endpoint's answer; nothing written.
    Check,
}

/// The helper's answer: the round as it stands, and what failed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ReplyError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<GroupReport>,
    /// Human lines (`check`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplyError {
    pub kind: ErrorKind,
    pub message: String,
}

/// The error table's row a failure belongs to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ErrorKind {
    /// The group file, a TLS file, or a member not listed.
    File,
    /// No etcd endpoint answered.
    Unreachable,
    /// The round had begun its barriers.
    Closed,
    /// The round aborted.
    Aborted,
}

/// Why the helper gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the group helper {0} cannot be started: {1}")]
    Start(PathBuf, std::io::Error),
    #[error("the group helper ended without answering")]
    Gone,
    #[error("the group helper did not answer before the deadline; it was killed")]
    Timeout,
    #[error("interrupted by a signal")]
    Interrupted,
    #[error("{}", .0.message)]
    Refused(ReplyError),
}

/// How long a helper that was asked to give up has to say so.
const ABORT_GRACE: Duration = Duration::from_millis(500);

/// A running group helper.
pub struct GroupLink {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<Reply>,
    /// The round as the helper last reported it.
    pub report: Option<GroupReport>,
    /// The human lines of the last reply (`check`).
    pub lines: Vec<String>,
}

impl GroupLink {
    /// Starts `helper` with `args`; its stderr is the runner's.
    pub fn start(helper: &Path, args: &[OsString]) -> Result<GroupLink, LinkError> {
        let mut child = Command::new(helper)
            .args(args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| LinkError::Start(helper.to_path_buf(), e))?;
        let stdout = child.stdout.take().ok_or(LinkError::Gone)?;
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let reply = serde_json::from_str(&line).unwrap_or_else(|e| Reply {
                    error: Some(ReplyError {
                        kind: ErrorKind::Aborted,
                        message: format!("the group helper answered something unreadable: {e}"),
                    }),
                    ..Reply::default()
                });
                if tx.send(reply).is_err() {
                    break;
                }
            }
        });
        Ok(GroupLink {
            stdin: child.stdin.take(),
            child,
            replies,
            report: None,
            lines: Vec::new(),
        })
    }

    fn send(&mut self, req: &Request) -> Result<(), LinkError> {
        let mut line = serde_json::to_string(req).map_err(|_| LinkError::Gone)?;
        line.push('\n');
        let stdin = self.stdin.as_mut().ok_or(LinkError::Gone)?;
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|_| LinkError::Gone)
    }

    /// One request and its reply, by `deadline` at the latest; a signal
    /// (`interrupted`) asks the helper to give up and waits briefly for it.
    pub fn call(
        &mut self,
        req: &Request,
        deadline: Instant,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Reply, LinkError> {
        self.send(req)?;
        self.reply(deadline, interrupted)
    }

    /// Sends `req` without waiting: its reply is polled ([`GroupLink::ready`])
    /// or awaited ([`GroupLink::reply`]) later.
    pub fn post(&mut self, req: &Request) -> Result<(), LinkError> {
        self.send(req)
    }

    /// The reply to what was posted, if it came: `None` while it has not.
    pub fn ready(&mut self) -> Option<Result<Reply, LinkError>> {
        match self.replies.try_recv() {
            Ok(reply) => Some(self.take(reply, false)),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(LinkError::Gone)),
        }
    }

    fn take(&mut self, reply: Reply, asked_to_stop: bool) -> Result<Reply, LinkError> {
        if let Some(r) = &reply.report {
            self.report = Some(r.clone());
        }
        self.lines.clone_from(&reply.lines);
        match reply.error.clone() {
            Some(e) if asked_to_stop && e.kind == ErrorKind::Aborted => Err(LinkError::Interrupted),
            Some(e) => Err(LinkError::Refused(e)),
            None => Ok(reply),
        }
    }

    /// The reply to the request in flight, by `deadline` at the latest.
    pub fn reply(
        &mut self,
        deadline: Instant,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Reply, LinkError> {
        let mut deadline = deadline;
        let mut asked_to_stop = false;
        loop {
            match self.replies.recv_timeout(Duration::from_millis(5)) {
                Ok(reply) => return self.take(reply, asked_to_stop),
                Err(RecvTimeoutError::Disconnected) => return Err(LinkError::Gone),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if !asked_to_stop && interrupted() {
                asked_to_stop = true;
                let _ = self.send(&Request::Abort);
                deadline = deadline.min(Instant::now() + ABORT_GRACE);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(if asked_to_stop {
                    LinkError::Interrupted
                } else {
                    LinkError::Timeout
                });
            }
        }
    }

    /// Ends the helper now (SIGKILL, by its pid) and reaps it.
    pub fn kill(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GroupLink {
    /// Its stdin closed, the helper ends by itself; one that does not
    /// within a second is killed.
    fn drop(&mut self) {
        self.stdin = None;
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_object_each() {
        let r = Request::Pass {
            stage: "frozen".into(),
            ok: true,
            reason: String::new(),
            deadline_ms: 250,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"op":"pass","stage":"frozen","ok":true,"reason":"","deadlineMs":250}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        assert_eq!(
            serde_json::to_string(&Request::Abort).unwrap(),
            r#"{"op":"abort"}"#
        );
    }
}
