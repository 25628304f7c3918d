//! One session of the database's own client (`psql`, `mariadb`/`mysql`):
//! started with its statements on a pipe, so that the lock a statement
//! takes lives exactly as long as this session, and is released on it.
//!
//! Every statement is followed by a marker `SELECT`; its result line ends
//! the statement's output. The clients stop at the first error (`psql -v
//! ON_ERROR_STOP=1`, `mariadb --batch` without `--force`), so an error is
//! the end of the output, and its text is on the client's stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why a statement did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// The client could not be started.
    Spawn(String),
    /// The client ended (an error, a refused connection): its stderr.
    Ended(String),
    /// No answer before the deadline.
    Timeout,
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Spawn(e) => write!(f, "the client could not be started: {e}"),
            SessionError::Ended(e) if e.is_empty() => f.write_str("the client ended"),
            SessionError::Ended(e) => write!(f, "{e}"),
            SessionError::Timeout => f.write_str("no answer before the deadline"),
        }
    }
}

/// A running client and what it prints.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    marks: u32,
}

impl Session {
    /// Starts the client `cmd` (its argv, environment and user set by the
    /// caller); stdin, stdout and stderr become the session's pipes.
    pub fn start(mut cmd: Command) -> Result<Session, SessionError> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| SessionError::Spawn(e.to_string()))?;
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped above");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped above");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    if s.len() < 16 * 1024 {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            }
        });
        Ok(Session {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            marks: 0,
        })
    }

    /// Runs `sql` (one or more statements, each ending in `;`) and returns
    /// its output lines, or why it did not complete by `deadline`.
    pub fn query(&mut self, sql: &str, deadline: Instant) -> Result<Vec<String>, SessionError> {
        self.marks += 1;
        let mark = format!("quiesce-mark-{}", self.marks);
        let text = format!("{sql}\nSELECT '{mark}';\n");
        let stdin = self
            .stdin
            .as_mut()
            .ok_or(SessionError::Ended(String::new()))?;
        if stdin
            .write_all(text.as_bytes())
            .and_then(|_| stdin.flush())
            .is_err()
        {
            return Err(self.ended());
        }
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.trim() == mark => return Ok(out),
                Ok(line) => out.push(line),
                Err(RecvTimeoutError::Timeout) => return Err(SessionError::Timeout),
                Err(RecvTimeoutError::Disconnected) => return Err(self.ended()),
            }
        }
    }

    /// The client ended: waits briefly for its stderr, and returns it.
    fn ended(&mut self) -> SessionError {
        let until = Instant::now() + std::time::Duration::from_millis(500);
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        SessionError::Ended(self.stderr_text())
    }

    /// What the client wrote on stderr, trimmed.
    pub fn stderr_text(&self) -> String {
        let all = self
            .stderr
            .lock()
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        // The error lines themselves, without the statement the client
        // echoes around them.
        let errors: Vec<&str> = all
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                l.starts_with("ERROR") || l.contains("FATAL") || l.starts_with("psql:")
            })
            .collect();
        if errors.is_empty() {
            all
        } else {
            errors.join("; ")
        }
    }

    /// The client is still running (its session open).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ends the session: stdin closed (the client quits), then, if it has
    /// not within `grace`, SIGKILL; reaped either way. A killed client's
    /// session is closed by the server, which releases what it held.
    pub fn close(mut self, grace: std::time::Duration) {
        drop(self.stdin.take());
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Drop kills and reaps what is still running.
    }
}

impl Drop for Session {
    /// A session dropped on a failure path: its client is ended and reaped
    /// (the server then releases whatever the session held).
    fn drop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
