//! The parent side: everything the child needs prepared before the fork
//! (descriptors, pointers, the signal state), the fork, then the wait for
//! its exec through the start-up pipe, the reports judged, the sentinel's
//! watch started; and the `oom_score_adj` every child is given back.

use super::child::{fork_child, ChildPlan, ChildStep, ExecMode, Report, RECORD};
use super::spec::{Exec, SpawnError, SpawnSpec, EXEC_FD};
use crate::supervise::cgroup::{self, CgroupStatus, ScriptCgroup};
use crate::supervise::live;
use crate::supervise::procfs;
use crate::supervise::sentinel::{self, Watched};
use crate::supervise::supervised::{Started, Supervised};
use crate::supervise::sys;
use nix::errno::Errno;
use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// Descriptors handed to the child are kept at or above this number so the
/// child's `dup2` onto 0–3 never collides with one it still needs.
const MIN_CHILD_FD: RawFd = EXEC_FD + 1;

/// Starts `spec` under supervision. `output_cap` bytes are kept at each end
/// of stdout and of stderr
/// ([`DEFAULT_OUTPUT_CAP`](crate::supervise::DEFAULT_OUTPUT_CAP)).
///
/// Kernel requirements: pidfd_open (5.3), waitid(P_PIDFD) (5.4),
/// close_range with CLOSE_RANGE_CLOEXEC (5.11). Call
/// [`become_subreaper`](crate::supervise::become_subreaper) once before the
/// first spawn.
pub fn spawn(spec: &SpawnSpec, output_cap: usize) -> Result<Supervised, SpawnError> {
    if spec.argv.is_empty() {
        return Err(SpawnError::EmptyArgv);
    }
    let mut cg_status = CgroupStatus::default();
    let (mut cg, join) = match &spec.cgroup {
        Some(req) => cgroup::prepare(req, &mut cg_status),
        None => (
            ScriptCgroup::default(),
            cgroup::JoinFds {
                v2: None,
                v2_dir: None,
                v1_pids: None,
            },
        ),
    };
    match spawn_prepared(spec, output_cap, join, cg.v2.as_deref()) {
        Ok(mut started) => {
            cg_status.joined = started.cgroup_joined;
            cg_status.notes.append(&mut started.join_notes);
            Ok(Supervised::new(started, cg, cg_status))
        }
        Err(e) => {
            cg.remove(&mut cg_status);
            Err(e)
        }
    }
}

/// What the child resets every signal to before its exec: the default
/// action, and an empty mask (prepared before the fork).
fn default_signal_state() -> (libc::sigaction, libc::sigset_t) {
    // SAFETY: sigaction and sigset_t are plain old data; all-zero is valid
    // and the fields that matter are set below.
    let mut default_action: libc::sigaction = unsafe { std::mem::zeroed() };
    default_action.sa_sigaction = libc::SIG_DFL;
    // SAFETY: as above.
    let mut empty_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both point to valid, writable sigset_t values.
    unsafe {
        libc::sigemptyset(&mut empty_mask);
        libc::sigemptyset(&mut default_action.sa_mask);
    }
    (default_action, empty_mask)
}

/// The runner's children now (pid and start time).
fn children_of(runner: i32) -> HashSet<(i32, u64)> {
    procfs::scan()
        .values()
        .filter(|p| p.ppid == runner)
        .map(|p| p.id())
        .collect()
}

fn spawn_prepared(
    spec: &SpawnSpec,
    output_cap: usize,
    mut join: cgroup::JoinFds,
    cgroup_dir: Option<&std::path::Path>,
) -> Result<Started, SpawnError> {
    let program = spec.program_name();
    let v2_dir = join.v2_dir.take();
    let ChildEnds {
        devnull,
        out_r,
        out_w,
        err_r,
        err_w,
        rep_r,
        rep_w,
        join_v2,
        join_v1,
        exec_copy,
    } = ChildEnds::open(spec, join)?;
    let exec_fd = |fd: &OwnedFd| exec_copy.as_ref().map_or(fd.as_raw_fd(), |c| c.as_raw_fd());
    let (path_ptr, exec_fd, mode) = match &spec.program {
        Exec::Path(p) => (p.as_ptr(), -1, ExecMode::Path),
        Exec::Fd(fd) => (std::ptr::null(), exec_fd(fd), ExecMode::Fd),
        Exec::Interpreter { program, script } => {
            (program.as_ptr(), exec_fd(script), ExecMode::Interpreter)
        }
    };
    let (argv, envp) = (null_terminated(&spec.argv), null_terminated(&spec.env));

    let (default_action, empty_mask) = default_signal_state();
    let runner = std::process::id() as i32;
    let plan = ChildPlan {
        path: path_ptr,
        exec_fd,
        mode,
        identity: spec
            .identity_check
            .as_ref()
            .map(|c| (c.path.as_ptr(), c.dev, c.ino)),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: spec.cwd.as_ptr(),
        stdin: devnull.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        report: rep_w.as_raw_fd(),
        join: [
            join_v2.as_ref().map_or(-1, |f| f.as_raw_fd()),
            join_v1.as_ref().map_or(-1, |f| f.as_raw_fd()),
        ],
        cgroup_dir: v2_dir.as_ref().map_or(-1, |f| f.as_raw_fd()),
        runner,
        oom_score_adj: oom_baseline(),
        hook: spec.pre_exec.as_deref(),
        default_action,
        empty_mask,
    };

    // Without a cgroup, orphans re-parented to the runner can only be told
    // apart by "not a child of the runner before this spawn".
    let preexisting = (join_v2.is_none() && join_v1.is_none()).then(|| children_of(runner));

    let started = Instant::now();
    let pid = fork_child(&plan)?;
    // The child's ends: closing ours lets the report pipe reach EOF and the
    // output pipes reach EOF once the tree is done writing.
    drop((
        devnull, out_w, err_w, rep_w, join_v2, join_v1, v2_dir, exec_copy,
    ));

    let (pidfd, reports) = await_exec(pid, &rep_r, started + spec.startup_timeout, || {
        SpawnError::StartupTimeout {
            program: program.clone(),
            waited: spec.startup_timeout,
        }
    })?;
    let (cgroup_joined, mut join_notes) = judge_reports(spec, &program, pid, &plan, &reports)?;

    let (sentinel, sentinel_note) = start_sentinel(pid, cgroup_joined, cgroup_dir);
    join_notes.extend(sentinel_note);
    let start_ticks = procfs::read_stat(pid).map_or(0, |s| s.start);
    live::register(pid);
    Ok(Started {
        pid,
        pidfd,
        start_ticks,
        started,
        program,
        stdout: out_r,
        stderr: err_r,
        output_cap,
        runner,
        preexisting,
        cgroup_joined,
        join_notes,
        sentinel,
    })
}

/// `strings` as the NULL-terminated pointer array `execve` takes (pointing
/// into `strings`, which must outlive it).
fn null_terminated(strings: &[std::ffi::CString]) -> Vec<*const libc::c_char> {
    let mut v: Vec<*const libc::c_char> = strings.iter().map(|a| a.as_ptr()).collect();
    v.push(std::ptr::null());
    v
}

/// The descriptors a child is given, each at or above [`MIN_CHILD_FD`] so
/// the child's dup2 onto 0–2 is always a copy, and the runner's ends.
struct ChildEnds {
    devnull: OwnedFd,
    out_r: OwnedFd,
    out_w: OwnedFd,
    err_r: OwnedFd,
    err_w: OwnedFd,
    rep_r: OwnedFd,
    rep_w: OwnedFd,
    join_v2: Option<OwnedFd>,
    join_v1: Option<OwnedFd>,
    /// A program descriptor below MIN_CHILD_FD gets a temporary copy above
    /// it; the caller's descriptor is left as it is.
    exec_copy: Option<OwnedFd>,
}

impl ChildEnds {
    fn open(spec: &SpawnSpec, join: cgroup::JoinFds) -> Result<ChildEnds, SpawnError> {
        let child_fd =
            |fd: OwnedFd| sys::at_least(fd, MIN_CHILD_FD).map_err(SpawnError::Descriptor);
        let devnull = nix::fcntl::open(
            c"/dev/null",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(SpawnError::OpenDevNull)?;
        // SAFETY: `open` just returned this descriptor; nothing else owns it.
        let devnull =
            child_fd(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(devnull) })?;
        let (out_r, out_w) = sys::pipe_cloexec().map_err(SpawnError::Pipe)?;
        let (err_r, err_w) = sys::pipe_cloexec().map_err(SpawnError::Pipe)?;
        let (rep_r, rep_w) = sys::pipe_cloexec().map_err(SpawnError::Pipe)?;
        sys::set_nonblocking(out_r.as_fd()).map_err(SpawnError::Pipe)?;
        sys::set_nonblocking(err_r.as_fd()).map_err(SpawnError::Pipe)?;
        let exec_copy = match &spec.program {
            Exec::Fd(fd) | Exec::Interpreter { script: fd, .. }
                if fd.as_raw_fd() < MIN_CHILD_FD =>
            {
                Some(sys::dup_at_least(fd.as_fd(), MIN_CHILD_FD).map_err(SpawnError::Descriptor)?)
            }
            _ => None,
        };
        Ok(ChildEnds {
            devnull,
            out_r,
            out_w: child_fd(out_w)?,
            err_r,
            err_w: child_fd(err_w)?,
            rep_r,
            rep_w: child_fd(rep_w)?,
            join_v2: join.v2.map(child_fd).transpose()?,
            join_v1: join.v1_pids.map(child_fd).transpose()?,
            exec_copy,
        })
    }
}

/// After the fork: the child's pidfd and its start-up reports, read until
/// its exec closes the report pipe or `deadline` passes. A child that
/// cannot be watched, or is stuck before its exec, is killed and reaped
/// (our unreaped child: its pid cannot have been recycled).
fn await_exec(
    pid: i32,
    rep_r: &OwnedFd,
    deadline: Instant,
    stuck: impl FnOnce() -> SpawnError,
) -> Result<(OwnedFd, Vec<Report>), SpawnError> {
    let pidfd = sys::pidfd_open(pid);
    let reports = read_reports(rep_r, deadline);
    let pidfd = match pidfd {
        Ok(fd) => fd,
        Err(errno) => {
            // SAFETY: kill(2) on our own unreaped child (see above).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            sys::waitpid_blocking(pid);
            return Err(SpawnError::PidfdOpen { pid, errno });
        }
    };
    match reports {
        Some(reports) => Ok((pidfd, reports)),
        None => {
            let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL, 0);
            sys::waitpid_blocking(pid);
            Err(stuck())
        }
    }
}

/// Acts on the child's reports: a fatal one reaps the child and becomes the
/// spawn's error; the others are notes. Returns whether the child is in a
/// cgroup, and the notes.
fn judge_reports(
    spec: &SpawnSpec,
    program: &str,
    pid: i32,
    plan: &ChildPlan<'_>,
    reports: &[Report],
) -> Result<(bool, Vec<String>), SpawnError> {
    let mut notes = Vec::new();
    let mut join_failed = [false; 2];
    for rep in reports {
        if rep.step.fatal() {
            // The child _exits right after reporting: reap it before
            // returning, by pid (still our unreaped child: race-free).
            sys::waitpid_blocking(pid);
            return Err(fatal_error(spec, program.to_string(), *rep));
        }
        match rep.step {
            ChildStep::JoinCgroupV2 => join_failed[0] = true,
            ChildStep::JoinCgroupV1 => join_failed[1] = true,
            _ => {}
        }
        notes.push(format!("{}: {}", rep.step.name(), rep.errno));
    }
    let joined = (plan.join[0] >= 0 && !join_failed[0]) || (plan.join[1] >= 0 && !join_failed[1]);
    if !joined && join_failed.contains(&true) {
        // `preexisting` was not recorded (a cgroup was expected), so orphans
        // re-parented to the runner cannot be attributed to this tree.
        notes.push(
            "not in a cgroup: descendants that setsid and double-fork away cannot be found".into(),
        );
    }
    Ok((joined, notes))
}

/// The run sentinel's watch on the tree led by `pid` (see sentinel.rs); a
/// failure is a note, not a failed spawn.
fn start_sentinel(
    pid: i32,
    cgroup_joined: bool,
    cgroup_dir: Option<&std::path::Path>,
) -> (Option<Watched>, Option<String>) {
    let kill_fd = cgroup_dir
        .filter(|_| cgroup_joined)
        .and_then(sentinel::open_cgroup_kill);
    match sentinel::watch(pid, kill_fd) {
        Ok(s) => (Some(s), None),
        Err(e) => (
            None,
            Some(format!(
                "no sentinel ({e}): if the runner dies, only the main child is killed with it"
            )),
        ),
    }
}

/// Reads the child's report records until EOF (the exec closed the pipe, or
/// the child exited). `None`: the deadline passed first (the child is stuck
/// before its exec).
fn read_reports(rep_r: &OwnedFd, deadline: Instant) -> Option<Vec<Report>> {
    let mut buf = [0u8; RECORD * 8];
    let mut len = 0;
    while len < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [sys::pollfd(Some(rep_r.as_raw_fd()))];
        match sys::ppoll(&mut fds, left) {
            Ok(0) if left.is_zero() => return None,
            Ok(0) => continue,
            Ok(_) | Err(_) => {}
        }
        match sys::read(rep_r.as_fd(), &mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    Some(
        buf[..len - len % RECORD]
            .chunks_exact(RECORD)
            .filter_map(|rec| {
                let u64_at = |i: usize| Some(u64::from_ne_bytes(rec[i..i + 8].try_into().ok()?));
                Some(Report {
                    step: ChildStep::from_u32(u32::from_ne_bytes(rec[..4].try_into().ok()?))?,
                    errno: Errno::from_raw(i32::from_ne_bytes(rec[4..8].try_into().ok()?)),
                    values: [u64_at(8)?, u64_at(16)?],
                })
            })
            .collect(),
    )
}

fn fatal_error(spec: &SpawnSpec, program: String, rep: Report) -> SpawnError {
    let errno = rep.errno;
    match rep.step {
        ChildStep::Exec => SpawnError::Exec { program, errno },
        ChildStep::Chdir => SpawnError::Chdir {
            program,
            cwd: spec.cwd.to_string_lossy().into_owned(),
            errno,
        },
        ChildStep::PreExec => SpawnError::PreExec { program, errno },
        ChildStep::Identity => identity_error(spec, rep),
        other => SpawnError::ChildSetup {
            program,
            step: other.name(),
            errno,
        },
    }
}

/// The re-check's finding: the path is gone or unreadable, a symbolic link,
/// or another file.
fn identity_error(spec: &SpawnSpec, rep: Report) -> SpawnError {
    let (path, dev, ino) = spec.identity_check.as_ref().map_or_else(
        || (String::new(), 0, 0),
        |c| (c.path.to_string_lossy().into_owned(), c.dev, c.ino),
    );
    let found = match rep.errno {
        Errno::UnknownErrno => format!("device {} inode {}", rep.values[0], rep.values[1]),
        Errno::ELOOP => "a symbolic link".to_string(),
        errno => return SpawnError::IdentityCheck { path, errno },
    };
    SpawnError::ScriptReplaced {
        path,
        expected_dev: dev,
        expected_ino: ino,
        found,
    }
}

/// The `oom_score_adj` every child gets (see [`record_oom_score_adj`]).
static OOM_BASELINE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Records the runner's `oom_score_adj` now, before any freeze window
/// lowers it to -1000, as the value every child is given back before its
/// exec (a snapshot command or script must not be exempt from the OOM
/// killer because the runner is). Without a record children get 0.
pub fn record_oom_score_adj() {
    OOM_BASELINE.get_or_init(|| {
        std::fs::read("/proc/self/oom_score_adj")
            .map(|v| v.trim_ascii().to_vec())
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| b"0".to_vec())
    });
}

fn oom_baseline() -> &'static [u8] {
    OOM_BASELINE.get().map_or(b"0", |v| v.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::spawn::child::{child_report, child_report_values};
    use std::time::Duration;

    #[test]
    fn report_records_round_trip() {
        let (r, w) = sys::pipe_cloexec().unwrap();
        child_report(w.as_raw_fd(), ChildStep::JoinCgroupV2, libc::EACCES);
        child_report_values(w.as_raw_fd(), ChildStep::Identity, 0, [7, 42]);
        drop(w);
        let got = read_reports(&r, Instant::now() + Duration::from_secs(60)).unwrap();
        let rec = |step, errno, values| Report {
            step,
            errno,
            values,
        };
        assert_eq!(
            got,
            vec![
                rec(ChildStep::JoinCgroupV2, Errno::EACCES, [0, 0]),
                rec(ChildStep::Identity, Errno::UnknownErrno, [7, 42])
            ]
        );
        assert!(!got[0].step.fatal() && got[1].step.fatal());
    }

    #[test]
    fn a_child_that_never_reaches_exec_does_not_hang_the_reader() {
        // The write end stays open and silent, like a child blocked before
        // its exec: the read gives up at the deadline instead of waiting.
        let (r, w) = sys::pipe_cloexec().unwrap();
        child_report(w.as_raw_fd(), ChildStep::JoinCgroupV2, libc::EACCES);
        assert_eq!(
            read_reports(&r, Instant::now() + Duration::from_millis(50)),
            None
        );
        drop(w);
    }
}
