//! Spawn by exec: `clone3` a child that does nothing but raw system calls
//! (place fds, reset signals, `execveat` the pinned binary), and adopt fds
//! that came through exec.
//!
//! # Safety
//!
//! Unlike [`super::fork`], [`spawn`] may be called from a multithreaded
//! process. That is sound because the child runs only code that takes no
//! lock and allocates nothing: everything it reads (argv, envp, the fd map,
//! a scratch array) was built by the parent before the clone, and every
//! step is a system call made through `libc::syscall`, a thin wrapper that
//! only sets `errno` (a thread-local of the calling thread, whose copy the
//! child owns). A failure ends the child in `_exit(127)` after writing the
//! step and errno to a close-on-exec pipe; the parent reads that pipe, and
//! end-of-file means the exec succeeded.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::process::Pid;

/// The step of the child that failed, as it comes back over the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Setting a signal's disposition to the default (`rt_sigaction`).
    ResetSignal,
    /// Moving a source fd above the highest target (`F_DUPFD_CLOEXEC`).
    MoveFd,
    /// Marking every other fd close-on-exec (`close_range`).
    CloseOthers,
    /// Placing an fd at its target number (`dup3`).
    PlaceFd,
    /// Emptying the signal mask (`rt_sigprocmask`).
    SignalMask,
    /// The exec itself (`execveat`).
    Exec,
}

impl Step {
    const ALL: [Step; 6] = [
        Step::ResetSignal,
        Step::MoveFd,
        Step::CloseOthers,
        Step::PlaceFd,
        Step::SignalMask,
        Step::Exec,
    ];

    fn code(self) -> u32 {
        self as u32 + 1
    }

    fn from_code(code: u32) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// Error of [`spawn`].
#[derive(Debug)]
pub(crate) enum SpawnFailure {
    /// Creating the error pipe failed.
    Pipe(io::Error),
    /// `clone3` (or the fallback `clone` + `pidfd_open`) failed.
    Clone(io::Error),
    /// The child reported that `step` failed, with this error; `target` is
    /// the fd number being placed, when the step concerns one.
    Child {
        step: Step,
        target: Option<RawFd>,
        error: io::Error,
    },
    /// Reading the error pipe failed or gave a malformed report.
    Report(io::Error),
}

/// Everything the child needs, built in the parent before the clone.
///
/// The pointer arrays point into the `CString`s, which this struct owns
/// and never changes after [`Prepared::new`], so the pointers stay valid
/// for as long as it lives.
#[derive(Debug)]
pub(crate) struct Prepared {
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// (source, target) pairs; targets are distinct and non-negative.
    map: Vec<(RawFd, RawFd)>,
    /// One slot per map entry (plus the exe and the error pipe), written
    /// by the child only: its copy-on-write copy, no allocation.
    scratch: Vec<RawFd>,
    max_target: RawFd,
}

impl Prepared {
    /// Builds the argv and envp arrays and the fd map. `map` holds
    /// (source, target) pairs with distinct, non-negative targets (the safe
    /// layer checks that); the sources must stay open until [`spawn`]
    /// returns, which the `BorrowedFd`s the caller holds guarantee.
    pub(crate) fn new(argv: Vec<CString>, envp: Vec<CString>, map: Vec<(RawFd, RawFd)>) -> Self {
        debug_assert!(map.iter().all(|&(s, t)| s >= 0 && t >= 0));
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let argv_ptrs = ptrs(&argv);
        let envp_ptrs = ptrs(&envp);
        // Stdio (0..=2) is inherited unless mapped, so everything the child
        // moves out of the way lands at 3 or above.
        let max_target = map.iter().map(|&(_, t)| t).max().unwrap_or(2).max(2);
        let scratch = vec![-1; map.len()];
        Self {
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            map,
            scratch,
            max_target,
        }
    }
}

/// Blocks every signal the C library lets a thread block, and returns the
/// previous mask (restored on drop).
fn block_all_signals() -> io::Result<super::SavedMask> {
    // SAFETY: sigfillset initialises the local set; the pointers are to
    // live locals; pthread_sigmask only reads `set` and writes `old`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &set, &mut old);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(super::SavedMask(old))
    }
}

/// The kernel's `struct clone_args`, first version (64 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// What a clone returned.
enum Cloned {
    Parent(Pid, OwnedFd),
    Child,
}

/// `clone3(CLONE_PIDFD)` with fork semantics (a copy of the address space,
/// the same stack pointer), falling back to `clone(SIGCHLD)` and
/// `pidfd_open` where `clone3` is refused (`ENOSYS`, e.g. under a seccomp
/// filter that predates it).
///
/// # Safety
///
/// The caller must, in the child, run only async-signal-safe code that
/// takes no lock and allocates nothing, and end it in exec or `_exit`:
/// the C library is not told about this clone (no atfork handlers run, its
/// cached thread id is stale), and other threads' locks stay held forever.
unsafe fn clone_with_pidfd() -> io::Result<Cloned> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a live, correctly laid out clone_args whose size we
    // pass; `pidfd` outlives the call. A zero stack means the child runs
    // on a copy of this stack, as after fork; the caller upholds this
    // function's contract for what the child then does.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc == 0 {
        return Ok(Cloned::Child);
    }
    if rc > 0 {
        debug_assert!(pidfd >= 0);
        let pid = Pid::from_raw(rc as i32).expect("clone3 returned a positive pid");
        // SAFETY: with CLONE_PIDFD the kernel stored a new close-on-exec
        // pidfd in `pidfd`; nothing else owns it.
        return Ok(Cloned::Parent(pid, unsafe { OwnedFd::from_raw_fd(pidfd) }));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // SAFETY: clone with only an exit signal and a null stack is fork
    // without the C library's atfork handlers. Flags come first on every
    // architecture but s390 (CLONE_BACKWARDS2, where clone3 always exists
    // on kernels with pidfds); the other arguments are zero, so their
    // order does not matter. The caller upholds the contract for the child.
    let rc = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    match rc {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Cloned::Child),
        pid => {
            let pid = Pid::from_raw(pid as i32).expect("clone returned a positive pid");
            // The child is ours and not yet reaped: a zombie keeps its pid,
            // so the pidfd names it unless another thread of this program
            // reaps it first with waitpid(-1) (documented on spawn).
            let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
            Ok(Cloned::Parent(pid, pidfd))
        }
    }
}

/// Raw `syscall` returning the result or `errno`, without allocating.
fn raw(rc: libc::c_long) -> Result<libc::c_long, i32> {
    if rc < 0 {
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(rc)
    }
}

/// The child's side: runs only raw system calls and never returns.
///
/// `exe` and `report` are the pinned binary and the write end of the error
/// pipe (both close-on-exec).
fn child(prep: &mut Prepared, exe: RawFd, report: RawFd) -> ! {
    let mut report = report;
    let mut target_of_failure: RawFd = -1;
    let result = (|| -> Result<(), (Step, i32)> {
        // 1. Every disposition back to the default. Signals are still all
        // blocked (the parent blocked them around the clone), so none of
        // the parent's handlers can run in this child. An all-zero kernel
        // sigaction is SIG_DFL, no flags, empty mask, whatever the
        // architecture's field order; 32 bytes cover every layout with
        // the 8-byte sigset passed below.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            // SAFETY: `dfl` is a live, all-zero struct sigaction for the
            // kernel to read; the old-action pointer is null. This process
            // has one thread (a clone of one), whose dispositions these are.
            raw(unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                )
            })
            .map_err(|e| (Step::ResetSignal, e))?;
        }
        // 2. Move every source, the exe and the report pipe above the
        // highest target, so no dup3 below can overwrite one that a later
        // entry still needs (the swap 3->4, 4->3 is the classic case).
        let above = prep.max_target + 1;
        let dup_above = |fd: RawFd| -> Result<RawFd, i32> {
            // SAFETY: integer arguments only; F_DUPFD_CLOEXEC creates a
            // new fd and touches no existing one.
            raw(unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, above) })
                .map(|fd| fd as RawFd)
        };
        // A failure here is caused by the highest target (e.g. above
        // RLIMIT_NOFILE): it is the one named.
        target_of_failure = prep.max_target;
        report = dup_above(report).map_err(|e| (Step::MoveFd, e))?;
        let exe = dup_above(exe).map_err(|e| (Step::MoveFd, e))?;
        for (i, &(source, target)) in prep.map.iter().enumerate() {
            target_of_failure = target;
            prep.scratch[i] = dup_above(source).map_err(|e| (Step::MoveFd, e))?;
        }
        target_of_failure = -1;
        // 3. Everything from 3 up is closed by the exec, except what step 4
        // places. Nothing is closed now, so the numbers held in `prep`
        // stay valid until then.
        super::cloexec_from(3)
            .map_err(|e| (Step::CloseOthers, e.raw_os_error().unwrap_or(libc::EIO)))?;
        // 4. dup3 without O_CLOEXEC leaves the target's flag clear. The
        // moved copy is never equal to its target (it is above all
        // targets), so source == target needs no special case: it too is
        // replaced by a fresh copy with the flag clear.
        for (i, &(_, target)) in prep.map.iter().enumerate() {
            target_of_failure = target;
            // SAFETY: integer arguments only; the target number is replaced
            // atomically, and whatever it held was a stray fd of this
            // child (step 2 moved away everything still needed).
            raw(unsafe { libc::syscall(libc::SYS_dup3, prep.scratch[i], target, 0) })
                .map_err(|e| (Step::PlaceFd, e))?;
        }
        target_of_failure = -1;
        // 5. An empty mask: exec keeps the mask, and the program must
        // start with none blocked. Pending signals are delivered now, to
        // the default actions set in step 1.
        let empty: u64 = 0;
        // SAFETY: the pointer is to a live 8-byte local, the size passed;
        // the old-mask pointer is null.
        raw(unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &empty as *const u64,
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        })
        .map_err(|e| (Step::SignalMask, e))?;
        // 6. Exec the pinned binary through its fd; no path, no PATH.
        // SAFETY: the path is a static empty C string; argv and envp are
        // null-terminated arrays of pointers to NUL-terminated strings
        // owned by `prep` (see Prepared). On success nothing returns.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_execveat,
                exe,
                c"".as_ptr(),
                prep.argv_ptrs.as_ptr(),
                prep.envp_ptrs.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        Err((Step::Exec, raw(rc).err().unwrap_or(libc::EIO)))
    })();
    let (step, errno) = match result {
        Err(failure) => failure,
        Ok(()) => (Step::Exec, libc::EIO),
    };
    // The report: step code, errno, target (or -1), native byte order.
    let mut msg = [0u8; 12];
    msg[..4].copy_from_slice(&step.code().to_ne_bytes());
    msg[4..8].copy_from_slice(&errno.to_ne_bytes());
    msg[8..].copy_from_slice(&target_of_failure.to_ne_bytes());
    // SAFETY: the pointer and length describe the live local `msg`. 12
    // bytes are below PIPE_BUF, so the write is atomic; if it fails there
    // is no one else to tell, and the exit status still says 127.
    let _ = unsafe { libc::syscall(libc::SYS_write, report, msg.as_ptr(), msg.len()) };
    super::exit_immediately(127)
}

/// Starts the binary `exe` as a new process with `prep`'s argv, envp and fd
/// map; returns its pid and a pidfd once the exec succeeded.
///
/// The child does only raw system calls between the clone and the exec
/// (see the module's safety note), so this may be called from a
/// multithreaded process. Its steps: reset every signal disposition to the
/// default (ignored ones too, so a `SIGPIPE` the Rust runtime ignores is
/// not inherited as ignored), move the sources out of the way, mark every
/// other fd from 3 up close-on-exec, place each source at its target with
/// the close-on-exec flag clear, empty the signal mask, `execveat`.
/// Stdin, stdout and stderr are inherited unless the map targets them.
///
/// Another thread of this program that forks at the same moment keeps a
/// copy of the error pipe until it execs, which only delays this call.
///
/// # Errors
///
/// [`SpawnFailure`]: the pipe or the clone failed, or the child reported
/// the step that failed and its errno (it then exited with 127 and has
/// been reaped).
///
/// See clone3(2), execveat(2), close_range(2).
pub(crate) fn spawn(
    exe: BorrowedFd<'_>,
    prep: &mut Prepared,
) -> Result<(Pid, OwnedFd), SpawnFailure> {
    let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SpawnFailure::Pipe(e.into()))?;
    let cloned = {
        let _mask = block_all_signals().map_err(SpawnFailure::Clone)?;
        // SAFETY: the child branch below calls only `child`, which makes
        // raw system calls on data prepared before the clone, allocates
        // nothing, takes no lock, and ends in execveat or _exit.
        match unsafe { clone_with_pidfd() } {
            Ok(Cloned::Child) => child(prep, exe.as_raw_fd(), write_end.as_raw_fd()),
            Ok(parent) => parent,
            Err(e) => return Err(SpawnFailure::Clone(e)),
        }
        // The mask is restored here, in the parent only.
    };
    let Cloned::Parent(pid, pidfd) = cloned else {
        unreachable!("the child never leaves `child`")
    };
    drop(write_end);
    let mut msg = [0u8; 12];
    let mut len = 0;
    while len < msg.len() {
        match rustix::io::read(&read_end, &mut msg[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                reap(&pidfd);
                return Err(SpawnFailure::Report(e.into()));
            }
        }
    }
    if len == 0 {
        return Ok((pid, pidfd));
    }
    // The child failed and is exiting with 127: reap it, so no zombie is
    // left for a caller that gets no handle.
    reap(&pidfd);
    let word = |i: usize| <[u8; 4]>::try_from(&msg[i..i + 4]).expect("4 bytes");
    let step = Step::from_code(u32::from_ne_bytes(word(0)));
    match (len, step) {
        (12, Some(step)) => {
            let target = i32::from_ne_bytes(word(8));
            Err(SpawnFailure::Child {
                step,
                target: (target >= 0).then_some(target),
                error: io::Error::from_raw_os_error(i32::from_ne_bytes(word(4))),
            })
        }
        _ => Err(SpawnFailure::Report(io::Error::other(
            "malformed report from the spawned child",
        ))),
    }
}

/// Waits for the child behind `pidfd` to end and reaps it.
fn reap(pidfd: &OwnedFd) {
    use std::os::fd::AsFd;
    loop {
        match rustix::process::waitid(
            rustix::process::WaitId::PidFd(pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED,
        ) {
            Err(rustix::io::Errno::INTR) => {}
            _ => return,
        }
    }
}

/// `fcntl(n, F_GETFD)`—The fd flags of number `n`, or `None` if it is not
/// open. Touches no fd.
pub(crate) fn fd_flags(n: RawFd) -> io::Result<Option<libc::c_int>> {
    // SAFETY: integer arguments only; F_GETFD reads a flag and changes
    // nothing, whoever owns the fd.
    let rc = unsafe { libc::fcntl(n, libc::F_GETFD) };
    if rc >= 0 {
        return Ok(Some(rc));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EBADF) {
        Ok(None)
    } else {
        Err(err)
    }
}

/// A number that this process may take ownership of: one that came
/// through exec and has been claimed once in the process-wide set of
/// [`crate::inherit`].
///
/// Only `inherit` builds it, while it holds the lock of that set.
#[derive(Debug)]
pub(crate) struct Claimed(pub(crate) RawFd);

/// Lists the fds above stderr that came through exec — those without
/// close-on-exec — and marks them close-on-exec, so that from here on no
/// fd the program creates can be mistaken for one of them, and none is
/// passed on by a later exec unless taken and placed again. Idempotent:
/// only the first call looks.
///
/// [`crate::family::Family::dispatch`] and
/// [`crate::fork_as::exec_entry`], the first line of a family program's or
/// an exec-mode program's `main`, call it. A program that adopts fds
/// otherwise calls it first thing in `main`.
///
/// # Safety
///
/// Call it before anything in the process creates an fd without
/// close-on-exec (C code, or Rust code asking for such an fd on purpose):
/// such an fd would be listed as inherited and could then be taken — a
/// second owner of one fd. Rust's std, rustix and tokio create every fd
/// close-on-exec.
pub unsafe fn capture() {
    crate::inherit::capture_inner();
}

/// Sets close-on-exec on fd `n` (listed by `inherit::capture_inner`;
/// errors leave it as it was).
pub(crate) fn set_cloexec(n: RawFd) {
    // SAFETY: integer arguments only; F_SETFD changes a flag of an open fd
    // number and never closes or reuses it.
    let _ = unsafe { libc::fcntl(n, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// Makes an [`OwnedFd`] of an inherited number.
///
/// # Panics
///
/// In debug builds, if the number is not open.
pub(crate) fn adopt(claim: Claimed) -> OwnedFd {
    debug_assert!(matches!(fd_flags(claim.0), Ok(Some(_))));
    // SAFETY: `inherit::take_inherited_fd`, the only place that builds a
    // `Claimed`, checked that the number is among those `capture` found
    // open without FD_CLOEXEC when the program started — fds that came
    // through exec, owned by nothing in this image (`capture`'s safety
    // contract: it ran before the program created any fd without the
    // flag) — and that it was not taken before (a set kept under a lock),
    // so no other `OwnedFd` for it exists.
    unsafe { OwnedFd::from_raw_fd(claim.0) }
}
