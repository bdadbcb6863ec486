//! Fork-as: run a function as another user in a freshly forked child and get
//! its serialized result back over a pipe.
//!
//! ```no_run
//! use std::time::Duration;
//! use privfork::ForkAs;
//!
//! let uid: u32 = ForkAs::user("nobody")?
//!     .timeout(Duration::from_secs(2))
//!     .run(|| rustix::process::getuid().as_raw())?;
//! assert_eq!(uid, 65534);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What happens
//!
//! The parent resolves the user (before forking: the user database is not
//! safe to read in a child), refuses if the process has more than one thread,
//! creates a CLOEXEC pipe, forks, and opens a pidfd for the child. The child:
//!
//! 1. closes every fd but stdin, stdout, stderr and its end of the pipe
//!    (`close_range`);
//! 2. clears the environment (unless told otherwise);
//! 3. drops privileges ([`crate::privdrop`], verified) — a failure is
//!    reported to the parent and ends the child;
//! 4. sets a parent-death signal (SIGKILL) and exits if the parent is
//!    already gone — after the drop, because the kernel clears the death
//!    signal when the effective uid changes — and makes itself not dumpable
//!    (the uid change resets that too);
//! 5. runs the function, catching a panic, encodes the result with postcard
//!    and writes one frame: a tag byte, a little-endian `u64` length, the
//!    payload; then `_exit(0)` — no destructor of the parent's image runs.
//!
//! The parent reads the frame under the deadline, checks the length against
//! the limit before allocating, then waits for the child on its pidfd under
//! the same deadline. Whatever happens, the child is reaped before `run`
//! returns; on timeout or an oversized result it is killed first.
//!
//! Everything the child sends is treated as hostile: after the drop it runs
//! as another user and may have been taken over.
//!
//! # Threads
//!
//! Forking a multithreaded process is unsafe: another thread may hold a lock
//! (the allocator's, stdio's) that stays locked forever in the child, which
//! has only the forking thread. `run` refuses with
//! [`ForkAsError::MultiThreaded`]. A multithreaded program asks a fork
//! server instead: a single-threaded helper process started before any
//! threads, which forks on its behalf (see DESIGN.md, "Fork-as").

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{
    DumpableBehavior, Pid, PidfdFlags, Signal, WaitId, WaitIdOptions, WaitIdStatus,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::identity::{Identity, ResolveError};
use crate::privdrop::{DropOptions, PrivDropError, WireDropError, drop_to};
use crate::sys::{self, ChildToken, Forked, Threads};

/// Default deadline of [`ForkAs::run`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit on the encoded result, in bytes.
pub const DEFAULT_MAX_RESULT: usize = 16 << 20;
/// Limit on a panic message or other report from the child, in bytes.
const MAX_REPORT: u64 = 64 << 10;
/// Exit code of a child whose setup or privilege drop failed.
const EXIT_SETUP_FAILED: i32 = 125;
/// Exit code of a child whose parent is already gone.
const EXIT_ORPHANED: i32 = 126;

/// Frame tags, child to parent.
mod tag {
    pub(super) const OK: u8 = 0;
    pub(super) const PANIC: u8 = 1;
    pub(super) const DROP_FAILED: u8 = 2;
    pub(super) const SETUP_FAILED: u8 = 3;
    pub(super) const ENCODE_FAILED: u8 = 4;
    pub(super) const TOO_LARGE: u8 = 5;
}
const HEADER_LEN: usize = 9;

/// What the child's environment holds.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Environment {
    /// Empty (the default): nothing of the caller's environment leaks.
    #[default]
    Clear,
    /// The caller's environment, unchanged.
    Inherit,
    /// Exactly these variables.
    Set(Vec<(OsString, OsString)>),
}

/// A step of the child's setup, for [`ForkAsError::ChildSetup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum SetupStep {
    /// `prctl(PR_SET_PDEATHSIG)`.
    ParentDeathSignal,
    /// `close_range`.
    CloseFds,
    /// `prctl(PR_SET_DUMPABLE)`.
    NotDumpable,
}

impl std::fmt::Display for SetupStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ParentDeathSignal => "prctl(PR_SET_PDEATHSIG)",
            Self::CloseFds => "close_range",
            Self::NotDumpable => "prctl(PR_SET_DUMPABLE)",
        })
    }
}

/// Error of [`ForkAs::run`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForkAsError {
    /// The user or group could not be resolved.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The calling process has more than one thread.
    #[error(
        "fork_as refused: this process has {threads} threads, and forking a multithreaded \
         process is unsafe (a lock held by another thread, e.g. the allocator's, stays locked \
         forever in the child). Call it before any thread starts, or ask a fork server: a \
         single-threaded helper process started before the threads, which forks for you"
    )]
    MultiThreaded {
        /// The number of threads seen.
        threads: usize,
    },
    /// Creating the pipe, forking, or watching the child failed.
    #[error("fork_as: {what} failed")]
    Spawn {
        /// The call that failed.
        what: &'static str,
        /// Its error.
        #[source]
        source: io::Error,
    },
    /// The privilege drop failed in the child (reported by the child).
    #[error("fork_as: privilege drop in the child failed")]
    PrivDrop(#[source] PrivDropError),
    /// A setup step of the child failed before the function ran.
    #[error("fork_as: child setup step {step} failed")]
    ChildSetup {
        /// The step.
        step: SetupStep,
        /// Its error.
        #[source]
        source: io::Error,
    },
    /// The function panicked.
    #[error("fork_as: the function panicked: {message}")]
    Panicked {
        /// The panic message (truncated to 64 KiB).
        message: String,
    },
    /// The child was killed by a signal.
    #[error("fork_as: the child was killed by signal {signal} ({name}){}", if *.core_dumped { ", core dumped" } else { "" })]
    Signaled {
        /// The signal number.
        signal: i32,
        /// Its name, e.g. "SIGKILL".
        name: &'static str,
        /// Whether a core was dumped.
        core_dumped: bool,
    },
    /// The child exited without sending a result.
    #[error("fork_as: the child exited with status {exit_code} without a result")]
    NoResult {
        /// Its exit status.
        exit_code: i32,
    },
    /// The deadline passed; the child was killed and reaped.
    #[error("fork_as: no result within {timeout:?}; the child was killed")]
    Timeout {
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The result is larger than the limit; the child was killed and reaped.
    #[error("fork_as: the result is {len} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The length the child announced.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The result could not be decoded as the expected type.
    #[error("fork_as: the result could not be decoded")]
    Decode(#[source] postcard::Error),
    /// The function's result could not be encoded in the child.
    #[error("fork_as: the result could not be encoded in the child: {message}")]
    Encode {
        /// postcard's message.
        message: String,
    },
    /// The child sent something that is not a valid frame.
    #[error("fork_as: protocol error from the child: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
}

/// A fork-as call: who to run as, and under which limits.
#[derive(Debug, Clone)]
pub struct ForkAs {
    identity: Identity,
    drop: DropOptions,
    timeout: Duration,
    max_result: usize,
    env: Environment,
}

/// Runs `f` as `user` (a name or numeric uid) with the default limits.
///
/// Shorthand for `ForkAs::user(user)?.run(f)`.
///
/// # Errors
///
/// As [`ForkAs::user`] and [`ForkAs::run`].
pub fn fork_as<T, F>(user: &str, f: F) -> Result<T, ForkAsError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    ForkAs::user(user)?.run(f)
}

impl ForkAs {
    /// A call that runs as `identity`.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            drop: DropOptions::default(),
            timeout: DEFAULT_TIMEOUT,
            max_result: DEFAULT_MAX_RESULT,
            env: Environment::Clear,
        }
    }

    /// A call that runs as `user`, a name or numeric uid (see
    /// [`Identity::user`]).
    ///
    /// # Errors
    ///
    /// [`ResolveError`] naming the user.
    pub fn user(user: &str) -> Result<Self, ResolveError> {
        Ok(Self::new(Identity::user(user)?))
    }

    /// Sets the deadline for the whole call (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the limit on the encoded result in bytes (default 16 MiB).
    pub fn max_result(mut self, bytes: usize) -> Self {
        self.max_result = bytes;
        self
    }

    /// Sets the child's environment (default: empty).
    ///
    /// # Panics
    ///
    /// If a variable name is empty or contains `=` or NUL, or a value
    /// contains NUL — checked here, in the caller, not in the child.
    pub fn env(mut self, env: Environment) -> Self {
        if let Environment::Set(vars) = &env {
            for (k, v) in vars {
                let kb = k.as_encoded_bytes();
                assert!(
                    !kb.is_empty() && !kb.contains(&b'=') && !kb.contains(&0),
                    "invalid environment variable name {k:?}"
                );
                assert!(
                    !v.as_encoded_bytes().contains(&0),
                    "environment value of {k:?} contains NUL"
                );
            }
        }
        self.env = env;
        self
    }

    /// Sets the privilege-drop options (e.g. to allow uid 0 as target).
    pub fn drop_options(mut self, opts: DropOptions) -> Self {
        self.drop = opts;
        self
    }

    /// The identity the function will run as.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Runs `f` in a forked child as the configured user and returns its
    /// result.
    ///
    /// # Errors
    ///
    /// See [`ForkAsError`]: one variant per way the call can fail. The child
    /// has always been reaped when this returns.
    pub fn run<T, F>(&self, f: F) -> Result<T, ForkAsError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> T,
    {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let parent = rustix::process::getpid();
        if sys::children_autoreaped().map_err(|source| ForkAsError::Spawn {
            what: "sigaction(SIGCHLD)",
            source,
        })? {
            return Err(ForkAsError::Spawn {
                what: "checking SIGCHLD",
                source: io::Error::other(
                    "SIGCHLD is ignored (or SA_NOCLDWAIT is set), so the kernel would reap \
                     the child before its status can be read; restore the default disposition",
                ),
            });
        }
        // The read end is non-blocking: the parent reads first and polls
        // (under the deadline) only when nothing is there yet.
        let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| spawn_err("pipe2", e))?;
        rustix::io::ioctl_fionbio(&read_end, true).map_err(|e| spawn_err("ioctl(FIONBIO)", e))?;
        let forked = sys::fork().map_err(|source| ForkAsError::Spawn {
            what: "fork",
            source,
        })?;
        let pid = match forked {
            Err(mt) => {
                return Err(ForkAsError::MultiThreaded {
                    threads: mt.threads,
                });
            }
            Ok(Forked::Child(token)) => {
                drop(read_end);
                child_main(&token, parent, write_end, self, f)
            }
            Ok(Forked::Parent(pid)) => pid,
        };
        drop(write_end);
        let child = Child::watch(pid)?;
        let outcome = read_frame(&read_end, deadline, self.max_result as u64);
        drop(read_end);
        let killed_by_us = matches!(outcome, Err(ReadFail::Timeout) | Err(ReadFail::TooLarge(_)));
        if killed_by_us {
            child.kill();
        }
        let status = child.reap(deadline)?;
        finish(outcome, status, self)
    }
}

fn spawn_err(what: &'static str, e: rustix::io::Errno) -> ForkAsError {
    ForkAsError::Spawn {
        what,
        source: e.into(),
    }
}

/// A forked child, watched through its pidfd.
struct Child {
    pid: Pid,
    pidfd: OwnedFd,
}

/// How the child ended.
enum Ended {
    Exited(i32),
    Signaled(i32, bool),
    /// The deadline passed while waiting; it was killed and reaped.
    TimedOut,
}

impl Child {
    fn watch(pid: Pid) -> Result<Self, ForkAsError> {
        match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
            Ok(pidfd) => Ok(Self { pid, pidfd }),
            Err(e) => {
                // Without a pidfd we cannot wait under a deadline: end it now.
                let _ = rustix::process::kill_process(pid, Signal::KILL);
                let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
                Err(spawn_err("pidfd_open", e))
            }
        }
    }

    fn kill(&self) {
        // ESRCH cannot happen before we reap; any error leaves reap() to
        // wait for the deadline, then kill again.
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, Signal::KILL);
    }

    /// Waits for the child until `deadline`, then kills it; always reaps.
    fn reap(self, deadline: Instant) -> Result<Ended, ForkAsError> {
        let mut timed_out = false;
        loop {
            match wait(&self.pidfd, WaitIdOptions::EXITED | WaitIdOptions::NOHANG) {
                Ok(Some(st)) => return Ok(ended(&st, timed_out)),
                Ok(None) => {}
                Err(e) => return Err(reap_err(self.pid, e)),
            }
            if timed_out {
                // Killed: block until the kernel has torn it down.
                return match wait(&self.pidfd, WaitIdOptions::EXITED) {
                    Ok(Some(st)) => Ok(ended(&st, true)),
                    Ok(None) => Err(reap_err(self.pid, rustix::io::Errno::CHILD)),
                    Err(e) => Err(reap_err(self.pid, e)),
                };
            }
            match poll_until(&self.pidfd, deadline) {
                Ok(true) => {}
                Ok(false) => {
                    self.kill();
                    timed_out = true;
                }
                Err(e) => {
                    self.kill();
                    let _ = wait(&self.pidfd, WaitIdOptions::EXITED);
                    return Err(spawn_err("poll", e));
                }
            }
        }
    }
}

fn wait(pidfd: &OwnedFd, opts: WaitIdOptions) -> rustix::io::Result<Option<WaitIdStatus>> {
    loop {
        match rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), opts) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r,
        }
    }
}

fn reap_err(pid: Pid, e: rustix::io::Errno) -> ForkAsError {
    let source = if e == rustix::io::Errno::CHILD {
        io::Error::other(format!(
            "child {} was reaped elsewhere (is SIGCHLD ignored?)",
            pid.as_raw_nonzero()
        ))
    } else {
        e.into()
    };
    ForkAsError::Spawn {
        what: "waitid",
        source,
    }
}

fn ended(st: &WaitIdStatus, timed_out: bool) -> Ended {
    if timed_out {
        return Ended::TimedOut;
    }
    if let Some(sig) = st.terminating_signal() {
        Ended::Signaled(sig, st.dumped())
    } else {
        Ended::Exited(st.exit_status().unwrap_or(-1))
    }
}

/// Polls `fd` for input until `deadline`; `Ok(false)` when it passed.
fn poll_until(fd: &impl AsFd, deadline: Instant) -> rustix::io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let ts = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => continue, // re-check the clock: poll may round down
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Why no frame was read.
enum ReadFail {
    /// End of file before a complete frame; how many bytes had come.
    Eof(usize),
    Timeout,
    TooLarge(u64),
    Io(rustix::io::Errno),
}

/// A frame's payload: small ones stay on the stack, because while the
/// child lives every heap page the parent writes is a copy-on-write fault.
#[allow(
    clippy::large_enum_variant,
    reason = "the inline variant is the point: no heap write while the child lives"
)]
enum Payload {
    Small([u8; SMALL], usize),
    Large(Vec<u8>),
}
const SMALL: usize = 512;

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Small(b, n) => &b[..*n],
            Self::Large(v) => v,
        }
    }
}

/// Reads one frame (tag, payload) from the child.
fn read_frame(fd: &OwnedFd, deadline: Instant, max_ok: u64) -> Result<(u8, Payload), ReadFail> {
    let mut header = [0u8; HEADER_LEN];
    read_exact(fd, &mut header, deadline, 0)?;
    let tag = header[0];
    let len = u64::from_le_bytes(header[1..].try_into().expect("8 bytes"));
    let limit = if tag == tag::OK { max_ok } else { MAX_REPORT };
    if len > limit {
        return Err(ReadFail::TooLarge(len));
    }
    // len <= limit <= usize::MAX here (the limit came from a usize).
    let len = len as usize;
    let mut payload = if len <= SMALL {
        Payload::Small([0; SMALL], len)
    } else {
        Payload::Large(vec![0u8; len])
    };
    let buf = match &mut payload {
        Payload::Small(b, n) => &mut b[..*n],
        Payload::Large(v) => &mut v[..],
    };
    read_exact(fd, buf, deadline, HEADER_LEN)?;
    Ok((tag, payload))
}

fn read_exact(
    fd: &OwnedFd,
    mut buf: &mut [u8],
    deadline: Instant,
    already: usize,
) -> Result<(), ReadFail> {
    let mut got = already;
    while !buf.is_empty() {
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) => return Err(ReadFail::Eof(got)),
            Ok(n) => {
                got += n;
                buf = &mut buf[n..];
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => match poll_until(fd, deadline) {
                Ok(true) => {}
                Ok(false) => return Err(ReadFail::Timeout),
                Err(e) => return Err(ReadFail::Io(e)),
            },
            Err(e) => return Err(ReadFail::Io(e)),
        }
    }
    Ok(())
}

/// Turns what was read and how the child ended into the call's result.
fn finish<T: DeserializeOwned>(
    outcome: Result<(u8, Payload), ReadFail>,
    status: Ended,
    call: &ForkAs,
) -> Result<T, ForkAsError> {
    let signaled = |sig: i32, core_dumped| ForkAsError::Signaled {
        signal: sig,
        name: signal_name(sig),
        core_dumped,
    };
    let (tag, payload) = match outcome {
        Ok(frame) => frame,
        Err(ReadFail::Timeout) => {
            return Err(ForkAsError::Timeout {
                timeout: call.timeout,
            });
        }
        Err(ReadFail::TooLarge(len)) => {
            return Err(ForkAsError::TooLarge {
                len,
                limit: call.max_result as u64,
            });
        }
        Err(ReadFail::Io(e)) => return Err(spawn_err("read", e)),
        Err(ReadFail::Eof(got)) => {
            return Err(match status {
                Ended::TimedOut => ForkAsError::Timeout {
                    timeout: call.timeout,
                },
                Ended::Signaled(sig, core) => signaled(sig, core),
                Ended::Exited(code) if got == 0 => ForkAsError::NoResult { exit_code: code },
                Ended::Exited(code) => ForkAsError::Protocol {
                    reason: format!("truncated frame: {got} bytes, then exit status {code}"),
                },
            });
        }
    };
    // A complete frame arrived; how the child ended after it only matters
    // if it never got to exit cleanly.
    if let Ended::TimedOut = status {
        return Err(ForkAsError::Timeout {
            timeout: call.timeout,
        });
    }
    let text = || String::from_utf8_lossy(&payload).into_owned();
    match tag {
        tag::OK => postcard::from_bytes(&payload).map_err(ForkAsError::Decode),
        tag::PANIC => Err(ForkAsError::Panicked { message: text() }),
        tag::ENCODE_FAILED => Err(ForkAsError::Encode { message: text() }),
        tag::DROP_FAILED => match postcard::from_bytes::<WireDropError>(&payload) {
            Ok(w) => Err(ForkAsError::PrivDrop(w.into())),
            Err(_) => Err(protocol("undecodable privilege-drop report")),
        },
        tag::SETUP_FAILED => match postcard::from_bytes::<(SetupStep, i32)>(&payload) {
            Ok((step, errno)) => Err(ForkAsError::ChildSetup {
                step,
                source: io::Error::from_raw_os_error(errno),
            }),
            Err(_) => Err(protocol("undecodable setup report")),
        },
        tag::TOO_LARGE => match <[u8; 8]>::try_from(&payload[..]) {
            Ok(b) => Err(ForkAsError::TooLarge {
                len: u64::from_le_bytes(b),
                limit: call.max_result as u64,
            }),
            Err(_) => Err(protocol("bad size report")),
        },
        other => Err(protocol(&format!("unknown frame tag {other}"))),
    }
}

fn protocol(reason: &str) -> ForkAsError {
    ForkAsError::Protocol {
        reason: reason.to_owned(),
    }
}

/// The conventional name of a signal number.
pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => "unknown signal",
    }
}

/// The child: set up, drop, run, report, `_exit`. Never returns.
fn child_main<T, F>(token: &ChildToken, parent: Pid, pipe: OwnedFd, call: &ForkAs, f: F) -> !
where
    T: Serialize,
    F: FnOnce() -> T,
{
    // Nothing may unwind out of here into the parent's code.
    let code = catch_unwind(AssertUnwindSafe(|| {
        child_body(token, parent, &pipe, call, f)
    }))
    .unwrap_or(EXIT_SETUP_FAILED);
    sys::exit_immediately(code)
}

fn child_body<T, F>(token: &ChildToken, parent: Pid, pipe: &OwnedFd, call: &ForkAs, f: F) -> i32
where
    T: Serialize,
    F: FnOnce() -> T,
{
    let setup_failed = |step: SetupStep, e: io::Error| {
        let report =
            postcard::to_allocvec(&(step, e.raw_os_error().unwrap_or(0))).unwrap_or_default();
        write_frame(pipe, tag::SETUP_FAILED, &report);
        EXIT_SETUP_FAILED
    };
    // 1. Only stdio and the pipe stay open.
    if let Err(e) = sys::close_fds_except(token, &mut [0, 1, 2, pipe.as_raw_fd()]) {
        return setup_failed(SetupStep::CloseFds, e);
    }
    // 2. Environment.
    match &call.env {
        Environment::Inherit => {}
        Environment::Clear => sys::clear_env(token),
        Environment::Set(vars) => {
            sys::clear_env(token);
            for (k, v) in vars {
                sys::set_env(token, k, v);
            }
        }
    }
    // 3. Drop privileges, verified.
    if let Err(failure) = drop_to(&call.identity, &call.drop, Threads::Only(token)) {
        let report =
            postcard::to_allocvec(&WireDropError::from(&failure.error)).unwrap_or_default();
        write_frame(pipe, tag::DROP_FAILED, &report);
        return EXIT_SETUP_FAILED;
    }
    // 4. Die with the parent, and stop here if it is already gone. Set only
    // now: the kernel clears the death signal when the uid changes (and a
    // parent dying before this point is caught by the getppid check).
    // The uid change also reset dumpability.
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        return setup_failed(SetupStep::ParentDeathSignal, e.into());
    }
    if rustix::process::getppid() != Some(parent) {
        return EXIT_ORPHANED;
    }
    if let Err(e) = rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        return setup_failed(SetupStep::NotDumpable, e.into());
    }
    // 5. Run, encode, report.
    let value = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic payload is not a string".to_owned());
            let mut end = msg.len().min(MAX_REPORT as usize);
            while !msg.is_char_boundary(end) {
                end -= 1;
            }
            write_frame(pipe, tag::PANIC, &msg.as_bytes()[..end]);
            return 0;
        }
    };
    // Small results are encoded on the stack, right behind their header,
    // and sent in one write: no allocation, so no copy-on-write fault of
    // the heap, and one wake-up of the parent.
    let mut small = [0u8; 512];
    let (head, body) = small.split_at_mut(HEADER_LEN);
    match postcard::to_slice(&value, body) {
        Ok(bytes) if bytes.len() <= call.max_result => {
            let len = bytes.len();
            head[0] = tag::OK;
            head[1..].copy_from_slice(&(len as u64).to_le_bytes());
            let _ = write_all(pipe, &small[..HEADER_LEN + len]);
            return 0;
        }
        _ => {}
    }
    match postcard::to_allocvec(&value) {
        Ok(bytes) if bytes.len() > call.max_result => {
            write_frame(pipe, tag::TOO_LARGE, &(bytes.len() as u64).to_le_bytes());
        }
        Ok(bytes) => write_frame(pipe, tag::OK, &bytes),
        Err(e) => write_frame(pipe, tag::ENCODE_FAILED, e.to_string().as_bytes()),
    }
    0
}

/// Writes one frame; errors (the parent went away) are ignored: the child
/// exits right after.
fn write_frame(pipe: &OwnedFd, tag: u8, payload: &[u8]) {
    let mut header = [0u8; HEADER_LEN];
    header[0] = tag;
    header[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let _ = write_all(pipe, &header).and_then(|()| write_all(pipe, payload));
}

fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> rustix::io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
