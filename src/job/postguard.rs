//! The post guard (SPEC.md §6.6): a small process that lives from just
//! before the pre-script until the post-script has run, and runs `quiesce
//! recover` the moment the runner dies without having run it.
//!
//! Why a process of its own rather than the freeze watchdog: the watchdog
//! exists only for the freeze window (forked before the first freeze, gone
//! after the last thaw) and runs under a seccomp allow-list made for
//! thawing, while a post-script is pending from before the pre-script until
//! after the post-script, and running one needs the whole runner (checks,
//! sandbox, supervision, trail). So the guard does one thing: it is forked
//! before the pre-script, in a session of its own (outside the runner's
//! process group, so a kill of that group spares it), holds the runner's
//! pidfd and a descriptor of the quiesce binary opened beforehand, and when
//! the pidfd says the runner exited it re-executes that binary as `quiesce
//! recover` with the run's options. If the runner finishes normally it
//! SIGKILLs and reaps the guard once the post-script has run (or, after a
//! separate `pre`, once the record says a `post` call is awaited).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nix::errno::Errno;

/// A running guard: a child of the runner.
#[derive(Debug)]
pub struct PostGuard {
    pub pid: i32,
    pidfd: OwnedFd,
    /// Tells the guard when a post-script left awaiting a `post` call is due.
    control: OwnedFd,
}

/// Where the guard's descriptors are moved before anything else, so the
/// `dup2` onto 0–4 never overwrites one of them.
const HIGH_FD: RawFd = 10;

fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just created this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

fn high(fd: OwnedFd) -> Result<OwnedFd, Errno> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we own; returns a new one.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: just created by fcntl; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

fn open_raw(path: &std::ffi::CStr, flags: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: a NUL-terminated path; open returns a new descriptor or -1.
    let r = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: just opened; nothing else owns it.
    high(unsafe { OwnedFd::from_raw_fd(r) })
}

/// What the guard needs after the fork, as raw values (nothing is allocated
/// in the child).
struct Plan {
    runner: RawFd,
    exe: RawFd,
    null: RawFd,
    control: RawFd,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// The root cgroups it joins as it starts, out of the reach of the
    /// caller's unit (its stop kills what is left in its cgroup; its
    /// freeze would freeze the guard): the v2 root's `cgroup.procs` when it
    /// could not be cloned there, and the v1 freezer root's `tasks` (null:
    /// nothing to join).
    leave_v2: *const libc::c_char,
    leave_v1: *const libc::c_char,
}

impl PostGuard {
    /// Forks the guard; on the runner's death it executes `quiesce` with
    /// `args` (argv\[1..\]) and the runner's environment.
    pub fn start(args: &[CString]) -> Result<PostGuard, Errno> {
        let runner = high(pidfd_open(std::process::id() as i32)?)?;
        let (control_r, control_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e as Errno)?;
        let control_r = high(control_r)?;
        // Opened now: after an upgrade, or once the runner is gone, the
        // binary that ran this job is still the one that recovers it.
        let exe = open_raw(c"/proc/self/exe", libc::O_PATH)?;
        let null = open_raw(c"/dev/null", libc::O_RDWR)?;
        let mut argv_owned = vec![c"quiesce".to_owned()];
        argv_owned.extend(args.iter().cloned());
        let env_owned: Vec<CString> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).ok()
            })
            .collect();
        let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = env_owned.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        let roots = crate::supervise::root_join_for_child().unwrap_or_default();
        let c_path = |p: Option<std::path::PathBuf>| {
            p.and_then(|p| CString::new(p.into_os_string().into_vec()).ok())
        };
        let (leave_v2, leave_v1) = (c_path(roots.v2_procs), c_path(roots.v1_tasks));
        let c_ptr = |p: &Option<CString>| p.as_ref().map_or(std::ptr::null(), |p| p.as_ptr());
        let plan = Plan {
            runner: runner.as_raw_fd(),
            exe: exe.as_raw_fd(),
            null: null.as_raw_fd(),
            control: control_r.as_raw_fd(),
            argv,
            envp,
            leave_v2: c_ptr(&leave_v2),
            leave_v1: c_ptr(&leave_v1),
        };
        // Every signal stays blocked in the guard until its exec (the
        // runner's handlers must never run there).
        // Cloned into the v2 root where it can be: a `cgroup.procs` write
        // would hold the tree's lock through an RCU grace period, and the
        // runner's first script waits for that lock to start in its cgroup.
        let v2_root = roots.v2_dir.as_ref().map(|fd| fd.as_raw_fd());
        // SAFETY: the child only runs `watch`, which keeps to
        // async-signal-safe calls on the prebuilt plan and never returns.
        let forked =
            unsafe { crate::supervise::fork_into_cgroup(v2_root, |in_root| watch(&plan, in_root)) };
        drop((
            runner,
            exe,
            null,
            control_r,
            argv_owned,
            env_owned,
            leave_v2,
            leave_v1,
            roots.v2_dir,
        ));
        let pid = forked?;
        match pidfd_open(pid) {
            Ok(pidfd) => Ok(PostGuard {
                pid,
                pidfd,
                control: control_w,
            }),
            Err(e) => {
                // SAFETY: kill(2) and waitpid(2) of our own unreaped child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                Err(e)
            }
        }
    }

    /// Leaves the guard watching: when this runner exits it runs `quiesce
    /// recover`, which runs what is still pending.
    pub fn leave_armed(self) {}

    /// A separate `pre` is over and its post-scripts await a `quiesce post`
    /// until `due_unix`: the guard stays, and once this runner has exited it
    /// waits for that time and runs `quiesce recover`, which runs them if no
    /// `post` came (SPEC §6.6: at the due time, without waiting for another
    /// run, and without systemd).
    pub fn await_post(self, due_unix: u64) {
        self.announce_due(due_unix);
    }

    /// [`PostGuard::await_post`] said early, the guard kept: once every
    /// pre-script of the run is over, a runner killed from here on (a held
    /// freeze's `pre`, killed by its agent's timeout) leaves its guard
    /// waiting for the due time, not running a recovery that finds nothing
    /// due yet. The guard keeps the last time it was sent.
    pub fn announce_due(&self, due_unix: u64) {
        let _ = nix::unistd::write(&self.control, &due_unix.to_ne_bytes());
    }

    pub fn stop(self) {
        // SAFETY: pidfd_send_signal on our pidfd with a null siginfo (as kill).
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
        loop {
            // SAFETY: our own unreaped child: its pid cannot be recycled.
            let r = unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
            if r >= 0 || Errno::last() != Errno::EINTR {
                return;
            }
        }
    }
}

/// Waits until the runner (pidfd 3) has exited; returns the due time it
/// sent on the control pipe (5) before, or 0.
///
/// # Safety
/// Only in the guard, after its descriptors are in place.
unsafe fn wait_for_runner() -> u64 {
    let mut due = 0u64;
    let mut control = 5;
    loop {
        let mut fds = [
            crate::supervise::pollfd(Some(3)),
            crate::supervise::pollfd(Some(control)),
        ];
        // SAFETY: poll/read on descriptors the guard holds, stack buffers.
        unsafe {
            if libc::poll(fds.as_mut_ptr(), 2, -1) <= 0 {
                continue;
            }
            // The due time first: the runner sends it just before it exits.
            if fds[1].revents != 0 {
                let mut b = [0u8; 8];
                if libc::read(control, b.as_mut_ptr().cast(), 8) == 8 {
                    due = u64::from_ne_bytes(b);
                } else {
                    control = -1; // the runner closed it: it is exiting
                }
            }
            // A pidfd is readable once its process has exited.
            if fds[0].revents != 0 {
                return due;
            }
        }
    }
}

/// The guard's whole life.
///
/// INVARIANT: async-signal-safe calls only, no allocation (forked from a
/// possibly multi-threaded runner).
///
/// # Safety
/// Only in the child of `fork()`.
unsafe fn watch(plan: &Plan, in_v2_root: bool) -> ! {
    // SAFETY: setsid/dup2/fcntl/close_range/open/write/poll/read/
    // clock_nanosleep/sigaction/sigprocmask/execveat/_exit are
    // async-signal-safe syscalls on integers, static strings and the
    // prebuilt, NUL-terminated pointer arrays.
    unsafe {
        libc::setsid();
        // 0–2 on /dev/null: a copy of the runner's stdout would keep its
        // reader from seeing EOF, and a closed pipe would SIGPIPE recovery.
        for fd in 0..3 {
            libc::dup2(plan.null, fd);
        }
        libc::dup2(plan.runner, 3);
        libc::dup2(plan.exe, 4);
        libc::dup2(plan.control, 5);
        for fd in 3..6 {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        libc::syscall(
            libc::SYS_close_range,
            6 as libc::c_uint,
            libc::c_uint::MAX,
            0,
        );
        // Like the watchdog: the OOM killer must not take the guard.
        let adj = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
        if adj >= 0 {
            libc::write(adj, b"-1000".as_ptr().cast(), 5);
            libc::close(adj);
        }
        // Out of the caller's unit before anything else: its stop kills
        // what is left in its cgroup (the runner with it, or, after a
        // separate `pre`, everything while the post is awaited) and its
        // freeze would freeze the guard too. Cloned into the v2 root where
        // that worked; the v1 freezer's `tasks` moves this, the only thread,
        // without the tree-wide lock. A failure leaves it where it was.
        let v2 = if in_v2_root {
            std::ptr::null()
        } else {
            plan.leave_v2
        };
        for file in [v2, plan.leave_v1] {
            if file.is_null() {
                continue;
            }
            let fd = libc::open(file, libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
        let due = wait_for_runner();
        if due > 0 {
            // The runner finished a separate `pre`: its post-scripts await a
            // `post` call until `due`; recovery runs what is left then.
            let at = libc::timespec {
                tv_sec: due as libc::time_t + 1,
                tv_nsec: 0,
            };
            while libc::clock_nanosleep(
                libc::CLOCK_REALTIME,
                libc::TIMER_ABSTIME,
                &at,
                std::ptr::null_mut(),
            ) == libc::EINTR
            {}
        }
        // The recovery is a fresh quiesce: default dispositions, nothing
        // blocked (exec keeps the mask).
        for sig in 1..libc::SIGRTMAX() {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::syscall(
            libc::SYS_execveat,
            4,
            c"".as_ptr(),
            plan.argv.as_ptr(),
            plan.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        libc::_exit(127)
    }
}
