//! `quiesce __workload pre|hold|post --config PATH --run-dir DIR`: a
//! workload application's phases, run by the job as its scripts.
//!
//! - `pre` starts `hold` and relays its one-line report: exit 0 once the
//!   method is done (and its lock held), else the [`Failure`]'s status.
//! - `hold` owns the client's session: it runs the method, reports, and —
//!   when the method holds a lock — stays, listening on
//!   `DIR/workload/<key>.sock` (root only) until the post phase asks it to
//!   release, which it does on that same session, then ends it.
//! - `post` asks the holder to release and relays its answer.
//! - `probe` prints what the server is (for the coverage check and
//!   `check`, which run it supervised and sandboxed like a script).
//!
//! The credentials never leave the run directory's private copy (see
//! [`client`]); nothing here prints them.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::workload::Workload;
use crate::integrity::{CheckedFile, FileRole};

use super::client;
use super::method::{self, Method, Server};
use super::session::{Session, SessionError};
use super::{Failure, HELPER_ARG};

/// Where a workload's settings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An application's config (`"workload"`).
    Config(PathBuf),
    /// The extension's workload.conf.
    WorkloadConf(PathBuf),
}

impl Source {
    /// The helper's arguments naming this source.
    pub fn args(&self) -> [String; 2] {
        match self {
            Source::Config(p) => ["--config".into(), p.display().to_string()],
            Source::WorkloadConf(p) => ["--workload-conf".into(), p.display().to_string()],
        }
    }

    fn path(&self) -> &Path {
        match self {
            Source::Config(p) | Source::WorkloadConf(p) => p,
        }
    }

    /// Loads the workload and its phase timeout, checked as the preflight
    /// checked it.
    pub fn load(&self) -> Result<(Workload, u64), String> {
        match self {
            Source::Config(p) => {
                let file = CheckedFile::open(p, FileRole::Config).map_err(|e| e.to_string())?;
                let bytes = file
                    .read_limited(crate::config::MAX_CONFIG_BYTES)
                    .map_err(|e| e.to_string())?;
                let loaded = crate::config::parse(p, &bytes, None).map_err(|e| e.to_string())?;
                let w = loaded
                    .config
                    .workload
                    .ok_or_else(|| format!("{} names no workload", p.display()))?;
                Ok((w, loaded.config.timeout_secs))
            }
            Source::WorkloadConf(p) => crate::config::workload_conf::load(p)
                .map(|c| (c.workload, c.timeout_secs))
                .map_err(|e| e.to_string()),
        }
    }
}

/// The files of one workload application in the run directory.
pub struct Files {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub lost: PathBuf,
    pub private: PathBuf,
}

impl Files {
    pub fn of(run_dir: &Path, source: &Source) -> Files {
        use sha2::{Digest, Sha256};
        let digest = crate::integrity::hex(&Sha256::digest(
            source.path().as_os_str().as_encoded_bytes(),
        ));
        let key = &digest[..16];
        let dir = run_dir.join("workload");
        Files {
            socket: dir.join(format!("{key}.sock")),
            lost: dir.join(format!("{key}.lost")),
            private: dir.join(format!("{key}.d")),
            dir,
        }
    }
}

/// The helper's command line.
struct Args {
    phase: String,
    source: Source,
    run_dir: PathBuf,
}

fn parse(args: &[OsString]) -> Option<Args> {
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    let phase = it.next()?;
    let (mut source, mut run_dir) = (None, None);
    while let Some(flag) = it.next() {
        let value = it.next()?;
        match flag.as_str() {
            "--config" => source = Some(Source::Config(value.into())),
            "--workload-conf" => source = Some(Source::WorkloadConf(value.into())),
            "--run-dir" => run_dir = Some(PathBuf::from(value)),
            _ => return None,
        }
    }
    Some(Args {
        phase,
        source: source?,
        run_dir: run_dir?,
    })
}

/// The helper's entry point (`main.rs`, before the command line is
/// parsed); returns the exit status.
pub fn main(args: &[OsString]) -> u8 {
    let Some(a) = parse(args) else {
        eprintln!("quiesce {HELPER_ARG}: internal helper of workload applications; usage: {HELPER_ARG} pre|hold|post|probe --config PATH|--workload-conf PATH --run-dir DIR");
        return 64;
    };
    let files = Files::of(&a.run_dir, &a.source);
    let result = match a.phase.as_str() {
        "pre" => pre(args),
        "hold" => hold(&a.source, &files),
        "post" => post(&files),
        "probe" => probe(&a.source, &a.run_dir).map(|server| print!("{}", server.to_lines())),
        _ => return 64,
    };
    match result {
        Ok(()) => 0,
        Err((f, msg)) => {
            eprintln!("quiesce workload: {msg}");
            f.exit()
        }
    }
}

type Outcome = Result<(), (Failure, String)>;

/// The helper's own deadline: the job's `QUIESCE_DEADLINE_SECONDS` less
/// a margin, so that a method that waits too long is ended and reported
/// by name (510), its session closed, before the job's timeout kills the
/// tree.
fn deadline(fallback_secs: u64) -> Instant {
    let secs = std::env::var("QUIESCE_DEADLINE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(fallback_secs);
    let margin = if secs > 4 { 2 } else { 1 };
    Instant::now() + Duration::from_secs(secs.saturating_sub(margin).max(1))
}

/// Starts the holder and relays its report.
fn pre(args: &[OsString]) -> Outcome {
    let exe = std::env::current_exe().map_err(|e| {
        (
            Failure::Quiescing,
            format!("cannot find quiesce's own binary: {e}"),
        )
    })?;
    let mut rest = args[1..].to_vec();
    rest.insert(0, "hold".into());
    let mut child = Command::new(exe)
        .arg(HELPER_ARG)
        .args(&rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| (Failure::Quiescing, format!("cannot start the holder: {e}")))?;
    let mut line = String::new();
    let out = child.stdout.take().expect("piped above");
    let _ = BufReader::new(out).read_line(&mut line);
    let line = line.trim_end();
    if let Some(msg) = line.strip_prefix("ok ") {
        println!("{msg}");
        if !msg.contains("held by holder pid") {
            let _ = child.wait();
        }
        return Ok(());
    }
    let _ = child.wait();
    match line.strip_prefix("fail ").and_then(|l| l.split_once(' ')) {
        Some((code, msg)) => {
            let f = [
                Failure::Connection,
                Failure::Credentials,
                Failure::Quiescing,
                Failure::QuiescingTimeout,
                Failure::Config,
            ]
            .into_iter()
            .find(|f| f.exit().to_string() == code)
            .unwrap_or(Failure::Quiescing);
            Err((f, msg.to_string()))
        }
        None => Err((
            Failure::Quiescing,
            "the holder ended without a report; nothing is held".into(),
        )),
    }
}

/// The holder: the method on one session, reported on stdout; then, when
/// it holds a lock, the wait for the post phase.
fn hold(source: &Source, files: &Files) -> Outcome {
    let report = |r: &Result<String, (Failure, String)>| {
        let line = match r {
            Ok(m) => format!("ok {m}\n"),
            Err((f, m)) => format!("fail {} {}\n", f.exit(), m.replace('\n', " | ")),
        };
        let mut out = std::io::stdout();
        let _ = out.write_all(line.as_bytes()).and_then(|_| out.flush());
    };
    let started = match start(source, files) {
        Ok(s) => s,
        Err(e) => {
            report(&Err(e.clone()));
            return Err(e);
        }
    };
    let (mut session, server, listener, max_hold) = started;
    let Some(listener) = listener else {
        report(&Ok(format!(
            "{}: {} done; nothing held ({})",
            server.version,
            server.method.name(),
            server.why
        )));
        session.close(Duration::from_secs(2));
        return Ok(());
    };
    report(&Ok(format!(
        "{}: {} held by holder pid {} on client session pid {} ({})",
        server.version,
        server.method.name(),
        std::process::id(),
        session.pid(),
        server.why
    )));
    detach_stdio();
    serve(&mut session, server.method, &listener, files, max_hold);
    session.close(Duration::from_secs(2));
    let _ = std::fs::remove_file(&files.socket);
    Ok(())
}

type Started = (Session, Server, Option<UnixListener>, Duration);

/// Loads, connects, inspects and runs the method; on any failure nothing
/// is left held (the session is closed, which releases what it took).
fn start(source: &Source, files: &Files) -> Result<Started, (Failure, String)> {
    let (w, timeout) = source.load().map_err(|e| (Failure::Config, e))?;
    let deadline = deadline(timeout);
    std::fs::DirBuilder::new()
        .mode(0o711)
        .recursive(true)
        .create(&files.dir)
        .map_err(|e| (Failure::Quiescing, format!("{}: {e}", files.dir.display())))?;
    let _ = std::fs::remove_file(&files.lost);
    let (mut session, server) = connect(&w, &files.private, deadline)?;
    let max_hold = w.connection.max_hold_secs;
    let listener = match run_method(&mut session, &server, files, deadline, max_hold) {
        Ok(l) => l,
        Err(e) => {
            session.close(Duration::from_secs(2));
            return Err(e);
        }
    };
    Ok((session, server, listener, Duration::from_secs(max_hold)))
}

/// The method's pre statements on `session`; when it holds a lock, the
/// socket the post phase will reach the holder on. On failure the caller
/// closes the session, which releases whatever it took.
fn run_method(
    session: &mut Session,
    server: &Server,
    files: &Files,
    deadline: Instant,
    max_hold: u64,
) -> Result<Option<UnixListener>, (Failure, String)> {
    let name = server.method.name();
    let listener = if server.method.holds() {
        Some(bind(&files.socket).map_err(|e| (Failure::Quiescing, e))?)
    } else {
        None
    };
    // The server gives up on a lock first (1205), a second before the
    // helper's own deadline.
    let lock_wait = deadline
        .saturating_duration_since(Instant::now())
        .as_secs()
        .saturating_sub(1)
        .max(1);
    let sql = server.method.pre_sql(lock_wait, max_hold);
    if sql.is_empty() {
        return Ok(listener);
    }
    match session.query(&sql, deadline) {
        Ok(_) => Ok(listener),
        Err(e) => {
            let _ = std::fs::remove_file(&files.socket);
            let timed_out = match &e {
                SessionError::Timeout => true,
                SessionError::Ended(m) => {
                    m.contains("1205") || m.to_ascii_lowercase().contains("lock wait timeout")
                }
                SessionError::Spawn(_) => false,
            };
            Err(if timed_out {
                (
                    Failure::QuiescingTimeout,
                    format!("{name} did not complete before the phase's deadline ({e}); its session was closed, so nothing is held"),
                )
            } else {
                (
                    Failure::Quiescing,
                    format!("{name} failed: {e}; nothing is held"),
                )
            })
        }
    }
}

/// The holder's socket: a stale one (its holder gone) is replaced; a live
/// one means an earlier run's session still holds a lock.
fn bind(path: &Path) -> Result<UnixListener, String> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "an earlier run's session of this application still holds its lock ({}); it is ended by that run's post phase",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    l.set_nonblocking(true)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(l)
}

/// Stdout and stderr become /dev/null: the pre phase's pipes must close
/// when the pre helper exits, and nobody reads them any more.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        for fd in [1, 2] {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
}

/// Waits for the post phase's release, the client's end, or the longest
/// hold; a lock released other than by the post phase leaves a note the
/// post phase reports.
fn serve(session: &mut Session, m: Method, listener: &UnixListener, files: &Files, max: Duration) {
    let since = Instant::now();
    loop {
        if let Ok((stream, _)) = listener.accept() {
            if release(session, m, stream, since) {
                return;
            }
        }
        if !session.alive() {
            note_lost(files, &format!("the session holding {} ended before the post phase ({}); the server released the lock then", m.name(), session.stderr_text()));
            return;
        }
        if since.elapsed() > max {
            let _ = session.query(m.release_sql(), Instant::now() + Duration::from_secs(10));
            note_lost(
                files,
                &format!(
                    "{} was held for maxHoldSeconds ({} s) without a post phase, and released then",
                    m.name(),
                    max.as_secs()
                ),
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn note_lost(files: &Files, why: &str) {
    let _ = std::fs::remove_file(&files.socket);
    let _ = std::fs::write(&files.lost, why);
}

/// One request on the socket: only root may ask, and only `release`.
/// Returns whether the lock was released (or the session is gone).
fn release(session: &mut Session, m: Method, stream: UnixStream, since: Instant) -> bool {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let root = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map(|c| c.uid() == 0)
        .unwrap_or(false);
    let mut line = String::new();
    let _ = BufReader::new(&stream).read_line(&mut line);
    let mut w = &stream;
    if !root || line.trim() != "release" {
        let _ = w.write_all(b"fail refused\n");
        return false;
    }
    let held = since.elapsed();
    let answer = match session.query(m.release_sql(), Instant::now() + Duration::from_secs(30)) {
        Ok(_) => format!(
            "ok {} released on the session that took it (held {} ms)\n",
            m.name(),
            held.as_millis()
        ),
        Err(e) => format!(
            "fail {} could not be released on its session ({e}); the session is closed now, which releases it\n",
            m.name()
        ),
    };
    let _ = w.write_all(answer.as_bytes());
    true
}

/// Asks the holder to release; without a holder, says why.
fn post(files: &Files) -> Outcome {
    if let Ok(why) = std::fs::read_to_string(&files.lost) {
        let _ = std::fs::remove_file(&files.lost);
        return Err((
            Failure::Release,
            format!("{why}; the snapshot may not be application-consistent"),
        ));
    }
    let stream = match UnixStream::connect(&files.socket) {
        Ok(s) => s,
        Err(_) => {
            println!("no session is held for this application (its method holds none, or it was already released)");
            return Ok(());
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(40)));
    let mut w = &stream;
    w.write_all(b"release\n")
        .map_err(|e| (Failure::Release, format!("cannot reach the holder: {e}")))?;
    let mut line = String::new();
    let _ = BufReader::new(&stream).read_line(&mut line);
    match line.trim_end().strip_prefix("ok ") {
        Some(msg) => {
            println!("{msg}");
            Ok(())
        }
        None => Err((
            Failure::Release,
            format!("the holder answered: {}", line.trim()),
        )),
    }
}

/// For the coverage check and `check`: the server reached, its version,
/// the method it would get and where its files are; nothing is taken.
pub fn probe(source: &Source, run_dir: &Path) -> Result<Server, (Failure, String)> {
    let files = Files::of(run_dir, source);
    let (w, timeout) = source.load().map_err(|e| (Failure::Config, e))?;
    let deadline = Instant::now() + Duration::from_secs(timeout.min(30));
    std::fs::DirBuilder::new()
        .mode(0o711)
        .recursive(true)
        .create(&files.dir)
        .map_err(|e| (Failure::Quiescing, format!("{}: {e}", files.dir.display())))?;
    let private = files.dir.join(format!("probe-{}.d", std::process::id()));
    let (session, server) = connect(&w, &private, deadline)?;
    session.close(Duration::from_secs(2));
    Ok(server)
}

/// Starts the client with the credentials channel in `private`, asks the
/// server what it is; the credentials copy is gone on every path out.
fn connect(
    w: &Workload,
    private: &Path,
    deadline: Instant,
) -> Result<(Session, Server), (Failure, String)> {
    let mut prepared = client::prepare(w, private).map_err(|e| {
        let f = match e {
            client::ClientError::OptionFile(..) => Failure::Credentials,
            _ => Failure::Config,
        };
        (f, e.to_string())
    })?;
    let program = format!("{:?}", prepared.cmd.get_program());
    let started = Session::start(std::mem::replace(&mut prepared.cmd, Command::new("/")));
    let inspected = started.and_then(|mut session| {
        method::inspect(w.engine, &mut session, deadline).map(|server| (session, server))
    });
    prepared.forget_credentials();
    let _ = std::fs::remove_dir(private);
    inspected.map_err(|e| match e {
        SessionError::Ended(msg) => (Failure::of_connect(&msg), msg),
        SessionError::Timeout => (
            Failure::Connection,
            format!("the server did not answer in time ({program})"),
        ),
        e => (Failure::Connection, format!("{program}: {e}")),
    })
}
