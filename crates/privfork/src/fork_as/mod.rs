//! Fork-as: run a function as another user in a freshly forked child (or,
//! in exec mode, a fresh image of the pinned binary) and get its serialized
//! result back over a pipe.
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
//! blocks SIGCHLD (so that no SIGCHLD handler of the program can reap the
//! child first), creates a CLOEXEC pipe, forks, and opens a pidfd for the
//! child. The child moves its end of the pipe above stderr and runs the one
//! child-setup routine ([`crate::setup`]): signal mask and handlers, fds,
//! environment, session, keyring, shared mappings, personality, limits, not
//! dumpable, bounding set, the verified privilege drop ([`crate::privdrop`];
//! a failure is reported to the parent and ends the child), the
//! parent-death signal (SIGKILL, armed after the drop, which would clear it;
//! the child exits if the parent is already gone), capabilities,
//! `no_new_privs`, and the sandbox if any. Then it runs the function,
//! catching a panic, encodes the result with postcard and writes one frame:
//! a tag byte, a little-endian `u64` length, the payload; then `_exit(0)` —
//! no destructor of the parent's image runs.
//!
//! The parent reads the frame under the deadline, checks the length against
//! the limit before allocating (and grows the buffer only as bytes arrive),
//! and watches the child's pidfd at the same time: once the child has exited
//! and the pipe is drained, nothing more is awaited (a grandchild holding
//! the pipe does not stall the call). Whatever happens, the child is reaped
//! before `run` returns; on timeout or an oversized result it is killed
//! first. The caller's signal mask is then restored.
//!
//! Everything the child sends is treated as hostile: after the drop it runs
//! as another user and may have been taken over.
//!
//! # What the child inherits
//!
//! **All of the caller's memory, readable.** The child is a copy-on-write
//! copy of the caller: every secret the caller holds at the moment of the
//! call — keys, passwords, session tokens, other users' data, in the heap,
//! on the stack, in statics — is in the child's memory, and the function
//! (or whoever takes it over: it runs as another user and may parse
//! hostile input) can read it. The copy is private: what the child writes
//! never reaches the caller. Not dumpable, the child cannot be read by
//! other processes of the target user (no ptrace, no core, `/proc/<pid>/mem`
//! owned by root).
//!
//! What it does **not** get:
//!
//! - **fds**: each of the caller's fds reaches `/dev/null` (`dup3` over it,
//!   so `File`s the function captured stay sound to use and drop), and so
//!   do stdin, stdout and stderr unless [`Stdio::Inherit`]; only the
//!   result pipe is real;
//! - **environment**: empty, unless [`ForkAs::env`] says otherwise;
//! - **signal handlers**: reset to the default action, the mask emptied
//!   (ignored signals stay ignored, as Rust programs expect for SIGPIPE);
//! - **controlling terminal and session**: a new session (`setsid`), so no
//!   `/dev/tty` and no `TIOCSTI` into the caller's terminal;
//! - **session keyring**: a fresh anonymous one;
//! - **shared mappings**: every `MAP_SHARED` mapping is removed (it would
//!   write the caller's files or memory);
//! - **personality**: reset to `PER_LINUX`;
//! - **privileges**: the target user's ids and groups only, no capability
//!   (bounding set emptied), `no_new_privs` (unless turned off);
//! - **threads**: only the calling thread exists in the child.
//!
//! # Which to use
//!
//! | | cost | the child's memory | from a multithreaded process |
//! |---|---|---|---|
//! | [`ForkAs::run`] | a fork, ~0.3–0.6 ms (more with a large heap) | a copy of the caller's: every secret it holds | refused |
//! | a [fork server](crate::fork_server) spawned first thing in `main` | a fork of the small server, plus a round trip | a copy of the server's, which holds nothing of the program's later state | yes: that is its purpose |
//! | exec mode, [`ForkAs::run_exec`] | a fork and an exec of the pinned binary, ~2 ms, ~4× `run` | a fresh image: nothing of the caller | yes |
//!
//! Use [`ForkAs::run`] when the caller holds nothing the function must not
//! see, or the function is trusted with it. A caller that holds secrets
//! starts a fork server before it reads them (and before any thread), or,
//! when it cannot start one early, uses exec mode: functions registered by
//! name ([`Functions`]), served by [`exec_entry`] on the first line of
//! `main` (see "Exec mode" below for why the child may trust its request,
//! and how a sandbox crosses the exec). `cargo bench -p privfork --bench
//! fork_as` measures both.
//!
//! # Threads
//!
//! Forking a multithreaded process is unsafe: another thread may hold a lock
//! (the allocator's, stdio's) that stays locked forever in the child, which
//! has only the forking thread. `run` refuses with
//! [`ForkAsError::MultiThreaded`]. A multithreaded program asks a fork
//! server instead: a single-threaded helper process started before any
//! threads, which forks on its behalf (see DESIGN.md, "Fork-as"); or it uses
//! exec mode, whose child runs nothing of the caller's between the clone and
//! the exec.
//!
//! # Exec mode
//!
//! [`ForkAs::run_exec`] runs a function registered by name in a
//! [`Functions`] registry — a closure cannot cross exec — in a fresh image
//! of the pinned binary ([`crate::exe::Exe`]), spawned with
//! [`crate::exe::Spawn`]: [`EXEC_ROLE`] in argv, an empty environment, a
//! unix socket at fd [`CHANNEL_FD`], stdio on `/dev/null` (unless
//! [`Stdio::Inherit`]), no other fd. The request (function name, encoded
//! argument, the caller's pid, the numeric uid, gid and groups, the drop
//! and `no_new_privs` options, the environment, the result limit, the
//! address-space cap) goes down
//! the socket, and the same result frame as a forked child's comes back,
//! read under the same deadline while the child's pidfd is watched: every
//! [`ForkAsError`] means what it means for [`ForkAs::run`]. The program
//! calls [`exec_entry`] first thing in `main`; in the exec-mode child it
//! checks that the image is not setuid and has one thread, reads the
//! request, runs the same setup routine as a forked child (with the
//! parent-death check against the caller's pid), and only then the
//! function.
//!
//! ## Why the child may trust its request
//!
//! Anyone who can execute the binary can start it with [`EXEC_ROLE`] and
//! hand it any request. That gains nothing: the child starts with exactly
//! the privileges of whoever started it, because it refuses to run in a
//! secure-execution image (`AT_SECURE`: a setuid or setgid bit, file
//! capabilities) — so the drop to the uid of the request succeeds only if
//! the invoker could change to that uid itself (root, or CAP_SETUID), and a
//! non-root invoker can at most run a registered function as itself. The
//! caller of [`ForkAs::run_exec`] is the process the child serves, and
//! already holds every privilege the child has. The ids arrive numeric,
//! resolved by the caller: the child reads no user database, and names no
//! user the caller did not. Root as a target is refused unless the caller
//! allowed it ([`DropOptions::allow_root`](crate::DropOptions)), as the
//! drop always does. Only registered functions run — a name, never a code
//! address.
//!
//! ## The sandbox in exec mode
//!
//! A prepared sandbox (a Landlock ruleset fd and seccomp programs) lives in
//! the caller's memory and fds, which the exec leaves behind. Rather than
//! pass a ruleset fd and filter bytes through exec, the sandbox belongs to
//! the function: [`Functions::register_sandboxed`]. The child finds it in
//! its own image — the binary, not the request, says how a function is
//! sandboxed — and prepares it as root before the drop (paths opened,
//! ruleset built, filters compiled), then installs it as the routine's last
//! stages. That costs the child a preparation per call, on top of the exec;
//! in return nothing the caller sends can widen or drop a function's
//! sandbox. [`ForkAs::sandbox`] does not apply to [`ForkAs::run_exec`],
//! which refuses a call that has one rather than run unsandboxed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::Pid;
use serde::Serialize;
use serde::de::DeserializeOwned;

mod exec;
mod functions;

pub use exec::{CHANNEL_FD, EXEC_ROLE, MAX_REQUEST, exec_entry};
pub(crate) use functions::ChildOutcome;
pub use functions::Functions;

use crate::event::{Interest, Poller};
use crate::identity::{Identity, ResolveError};
use crate::privdrop::{DropOptions, PrivDropError, WireDropError};
use crate::process::{Child, ExitStatus, ProcessError, signal_name};
use crate::sandbox::{PreparedSandbox, Sandbox, SandboxError};
use crate::setup::{Fds, Setup, SetupError};
use crate::sys::{self, ChildToken, ForkError, Forked};

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
    /// Exec mode: the child refused the request before running anything.
    pub(super) const REFUSED: u8 = 6;
}
const HEADER_LEN: usize = 9;

pub use crate::setup::{Environment, SetupStep, Stdio};

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
    /// The child exited without sending a result. Status 126: the child
    /// found its parent gone (`getppid` changed) before running the
    /// function; 125: its setup failed before it could report why.
    #[error("fork_as: the child exited with status {exit_code} without a result{}", exit_hint(*.exit_code))]
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
    /// Exec mode: the binary has no function registered under this name.
    #[error("fork_as exec mode: no function named {name:?} is registered in the binary")]
    UnknownFunction {
        /// The name asked for.
        name: String,
    },
    /// Exec mode: the function could not decode its argument.
    #[error("fork_as exec mode: the function could not decode its argument: {message}")]
    BadArguments {
        /// postcard's message.
        message: String,
    },
    /// Exec mode: the pinned binary could not be started.
    #[error("fork_as exec mode: starting the pinned binary failed")]
    Exec(#[from] crate::exe::SpawnError),
    /// Exec mode: the call cannot be made as asked (a sandbox set on the
    /// call, arguments that cannot be encoded), or the child refused the
    /// request before running anything.
    #[error("fork_as exec mode: {reason}")]
    ExecMode {
        /// Why.
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
    stdio: Stdio,
    no_new_privs: bool,
    sandbox: Option<Arc<PreparedSandbox>>,
    /// `RLIMIT_AS` of the child, if set.
    max_memory: Option<u64>,
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
            stdio: Stdio::Null,
            no_new_privs: true,
            sandbox: None,
            max_memory: None,
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

    /// Caps the child's address space (`RLIMIT_AS`, set in the child
    /// before the drop; default: the caller's limit). The child starts as
    /// a copy of the caller, whose mappings count too: leave room for
    /// them. An allocation over the cap fails, which Rust's allocator
    /// turns into an abort: the call fails with
    /// [`ForkAsError::Signaled`] (SIGABRT) instead of the machine running
    /// out of memory.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
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

    /// Sets where the child's stdin, stdout and stderr go (default:
    /// `/dev/null`).
    pub fn stdio(mut self, stdio: Stdio) -> Self {
        self.stdio = stdio;
        self
    }

    /// Whether the child sets `no_new_privs` (default: yes), so that it
    /// cannot gain privileges by executing a setuid or file-capability
    /// program. See prctl(2), `PR_SET_NO_NEW_PRIVS`.
    pub fn no_new_privs(mut self, on: bool) -> Self {
        self.no_new_privs = on;
        self
    }

    /// Sandboxes the child: `sandbox` is prepared now, in the caller
    /// (paths opened, Landlock ruleset created, seccomp filters compiled:
    /// [`Sandbox::prepare`]), and installed in every child as the last
    /// stages of its setup, after the privilege drop.
    ///
    /// # Errors
    ///
    /// [`SandboxError`] naming the bad input, before anything is forked.
    pub fn sandbox(self, sandbox: &Sandbox) -> Result<Self, SandboxError> {
        Ok(self.prepared_sandbox(Arc::new(sandbox.prepare()?)))
    }

    /// Sandboxes the child with an already prepared sandbox (shared by
    /// several calls, e.g. the fork server's per-function sandboxes).
    pub fn prepared_sandbox(mut self, sandbox: Arc<PreparedSandbox>) -> Self {
        self.sandbox = Some(sandbox);
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
        // SIGCHLD stays blocked until the child is reaped, so that a SIGCHLD
        // handler of the program cannot reap it first; the caller's mask is
        // restored afterwards, and pending SIGCHLDs then reach the handler.
        let _mask = sys::block_sigchld().map_err(|source| ForkAsError::Spawn {
            what: "pthread_sigmask",
            source,
        })?;
        self.spawn(f)?.wait()
    }

    /// Forks the child that runs `f` and returns without waiting for it;
    /// [`Pending::advance`] makes progress without blocking, so one
    /// single-threaded process (the fork server) can watch many children.
    ///
    /// SIGCHLD must be blocked on the calling thread until the child is
    /// reaped (see [`ForkAs::run`]), so that no SIGCHLD handler of the
    /// program reaps it first.
    pub(crate) fn spawn<T, F>(&self, f: F) -> Result<Pending, ForkAsError>
    where
        T: Serialize,
        F: FnOnce() -> T,
    {
        let deadline = deadline_after(self.timeout);
        let parent = rustix::process::getpid();
        refuse_autoreap()?;
        let devnull = dev_null().map_err(|source| ForkAsError::Spawn {
            what: "open(/dev/null)",
            source,
        })?;
        // The read end is non-blocking: the parent reads first and polls
        // (under the deadline) only when nothing is there yet.
        let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| spawn_err("pipe2", e))?;
        // Both ends above stderr: if the caller had closed fd 0, 1 or 2, an
        // end landing there would let the function's output (or stdin)
        // reach the result pipe.
        let read_end = above_stderr(read_end)?;
        let write_end = above_stderr(write_end)?;
        rustix::io::ioctl_fionbio(&read_end, true).map_err(|e| spawn_err("ioctl(FIONBIO)", e))?;
        let inherited = sys::open_fds().map_err(|source| ForkAsError::Spawn {
            what: "listing /proc/self/fd",
            source,
        })?;
        // Every signal blocked across the fork (restored in the parent right
        // after): none may run a handler of the program's in the child
        // before the child has reset them.
        let all_blocked = sys::block_all_signals().map_err(|source| ForkAsError::Spawn {
            what: "pthread_sigmask",
            source,
        })?;
        let pid = match sys::fork() {
            Ok(Forked::Parent(pid)) => pid,
            Ok(Forked::Child(token)) => {
                let read_fd = read_end.as_raw_fd();
                drop(read_end);
                let fds = ChildFds {
                    inherited: &inherited,
                    devnull,
                    skip: read_fd,
                };
                child_main(&token, parent, write_end, &fds, self, f)
            }
            Err(ForkError::MultiThreaded(threads)) => {
                return Err(ForkAsError::MultiThreaded { threads });
            }
            Err(ForkError::CountThreads(source)) => {
                return Err(ForkAsError::Spawn {
                    what: "counting threads in /proc/self/task",
                    source,
                });
            }
            Err(ForkError::Fork(source)) => {
                return Err(ForkAsError::Spawn {
                    what: "fork",
                    source,
                });
            }
        };
        drop(all_blocked);
        drop(write_end);
        let child = Child::after_fork(pid).map_err(process_err)?;
        Ok(Pending::new(
            child,
            read_end,
            deadline,
            self.timeout,
            self.max_result,
        ))
    }
}

/// When a call of `timeout` started now times out.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    // A deadline past the clock's range means "no deadline" in practice.
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// Refuses to start a child the kernel would reap by itself.
fn refuse_autoreap() -> Result<(), ForkAsError> {
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
    Ok(())
}

/// `fd` itself if it is above 2, else a CLOEXEC duplicate at 3 or above.
fn above_stderr(fd: OwnedFd) -> Result<OwnedFd, ForkAsError> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    rustix::io::fcntl_dupfd_cloexec(&fd, 3).map_err(|e| spawn_err("fcntl(F_DUPFD_CLOEXEC)", e))
}

/// `/dev/null`, opened once (CLOEXEC) and kept: the child points every fd
/// it must not use at it.
pub(crate) fn dev_null() -> io::Result<BorrowedFd<'static>> {
    static DEV_NULL: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = DEV_NULL.get() {
        return Ok(fd.as_fd());
    }
    let fd = rustix::fs::open(
        c"/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    Ok(DEV_NULL.get_or_init(|| fd).as_fd())
}

/// A forked fork-as child whose result has not been collected yet.
///
/// Dropping it kills and reaps the child (the drop of its [`Child`]).
pub(crate) struct Pending {
    child: Child,
    /// The result pipe, while the frame is still being read.
    pipe: Option<OwnedFd>,
    reader: FrameReader,
    /// What reading gave, once it is over.
    outcome: Option<Result<(u8, Payload), ReadFail>>,
    /// How the child ended, once it is reaped.
    status: Option<Ended>,
    /// The child was sent SIGKILL when the deadline passed.
    killed_at_deadline: bool,
    deadline: Instant,
    timeout: Duration,
    max_result: u64,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("pid", &self.child.pid())
            .field("reading", &self.pipe.is_some())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Pending {
    /// Watches `child`, whose result frame arrives on `pipe` (non-blocking).
    fn new(
        child: Child,
        pipe: OwnedFd,
        deadline: Instant,
        timeout: Duration,
        max_result: usize,
    ) -> Self {
        Self {
            child,
            pipe: Some(pipe),
            reader: FrameReader::new(max_result as u64),
            outcome: None,
            status: None,
            killed_at_deadline: false,
            deadline,
            timeout,
            max_result: max_result as u64,
        }
    }

    /// Blocks until the call is over; the child is reaped.
    fn wait<T: DeserializeOwned>(mut self) -> Result<T, ForkAsError> {
        loop {
            if let Some(result) = self.advance() {
                return result;
            }
            self.block()?;
        }
    }

    /// The fds to poll for input before calling [`Pending::advance`] again:
    /// the result pipe while reading, and the child's pidfd (readable once
    /// it has exited).
    pub(crate) fn poll_fds(&self) -> [Option<BorrowedFd<'_>>; 2] {
        [
            self.pipe.as_ref().map(AsFd::as_fd),
            (!self.child.is_reaped()).then(|| self.child.as_fd()),
        ]
    }

    /// When the call times out; `None` once the child was killed for it
    /// (only its pidfd matters then).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        (!self.killed_at_deadline).then_some(self.deadline)
    }

    /// Reads what the child sent so far, reaps it once it has exited, and
    /// kills it at the deadline — without blocking (but for the moment
    /// between a SIGKILL and the kernel's reaping). `None`: not finished.
    pub(crate) fn advance<T: DeserializeOwned>(&mut self) -> Option<Result<T, ForkAsError>> {
        if let Err(e) = self.read() {
            return Some(Err(e));
        }
        if self.pipe.is_some() {
            return None;
        }
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(Some(_)) if self.killed_at_deadline => self.status = Some(Ended::TimedOut),
                Ok(Some(status)) => self.status = Some(Ended::Status(status)),
                Ok(None) => {
                    if !self.killed_at_deadline && Instant::now() >= self.deadline {
                        // Killed now, reaped when its pidfd says it is gone:
                        // never a blocking wait here (a child stuck in the
                        // kernel would hold up a fork server's whole loop).
                        let _ = self.child.kill();
                        self.killed_at_deadline = true;
                    }
                    return None;
                }
                Err(e) => return Some(Err(process_err(e))),
            }
        }
        let outcome = self.outcome.take().unwrap_or(Err(ReadFail::Timeout));
        let status = self.status.take().unwrap_or(Ended::TimedOut);
        Some(finish(outcome, status, self.timeout, self.max_result))
    }

    /// The reading half of [`Pending::advance`]: leaves `self.pipe` set
    /// while the frame is incomplete and the child may still write.
    fn read(&mut self) -> Result<(), ForkAsError> {
        let Some(pipe) = &self.pipe else {
            return Ok(());
        };
        let outcome = match self.reader.read_available(pipe) {
            Ok(Some(frame)) => Ok(frame),
            Err(fail) => Err(fail),
            Ok(None) => match self.child.try_wait().map_err(process_err)? {
                // The child has exited: read once more, since it may have
                // written between our read and its exit; after that nothing
                // more can come from it. Whatever else holds the write end
                // (a grandchild) does not keep the call waiting.
                Some(status) => {
                    self.status = Some(Ended::Status(status));
                    match self.reader.read_available(pipe) {
                        Ok(Some(frame)) => Ok(frame),
                        Ok(None) => Err(ReadFail::Eof(self.reader.received())),
                        Err(fail) => Err(fail),
                    }
                }
                None if Instant::now() < self.deadline => return Ok(()),
                None => Err(ReadFail::Timeout),
            },
        };
        self.pipe = None;
        if matches!(
            outcome,
            Err(ReadFail::Timeout) | Err(ReadFail::TooLarge { .. })
        ) {
            // Any error (it exited meanwhile) leaves the reaping to report.
            let _ = self.child.kill();
        }
        self.outcome = Some(outcome);
        Ok(())
    }

    /// Blocks until [`Pending::advance`] may make progress: input on
    /// [`Pending::poll_fds`] or the deadline. Two fds at most, held on the
    /// stack: no heap page is written while the child lives.
    fn block(&self) -> Result<(), ForkAsError> {
        let mut poller = Poller::<2>::new();
        for fd in self.poll_fds().into_iter().flatten() {
            poller.add_fd(fd, Interest::READABLE, 0);
        }
        poller
            .wait(self.deadline())
            .map(drop)
            .map_err(|source| ForkAsError::Spawn {
                what: "poll",
                source,
            })
    }
}

fn spawn_err(what: &'static str, e: rustix::io::Errno) -> ForkAsError {
    ForkAsError::Spawn {
        what,
        source: e.into(),
    }
}

/// A failure to watch, reap or signal the child, as a [`ForkAsError`].
fn process_err(e: ProcessError) -> ForkAsError {
    ForkAsError::Spawn {
        what: e.what(),
        source: e.into(),
    }
}

/// How the child ended.
enum Ended {
    Status(ExitStatus),
    /// The deadline passed while waiting; it was killed and reaped.
    TimedOut,
}

/// Why no frame was read.
enum ReadFail {
    /// End of file before a complete frame; how many bytes had come.
    Eof(usize),
    Timeout,
    /// The header announced more than the limit for its tag.
    TooLarge {
        tag: u8,
        len: u64,
    },
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
    /// Grown as bytes arrive (never allocated up front from the header's
    /// claim): the bytes so far, and the length announced.
    Large(Vec<u8>, usize),
}
const SMALL: usize = 512;
/// How much a large payload buffer grows at a time.
const CHUNK: usize = 1 << 20;

impl Payload {
    fn announced(&self) -> usize {
        match self {
            Self::Small(_, n) | Self::Large(_, n) => *n,
        }
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Small(b, n) => &b[..*n],
            Self::Large(v, _) => v,
        }
    }
}

/// Reads one frame (tag byte, `u64` length, payload) from the child as it
/// arrives, checking the length against the limit before allocating.
struct FrameReader {
    header: [u8; HEADER_LEN],
    got: usize,
    /// Tag, payload, bytes of it received.
    payload: Option<(u8, Payload, usize)>,
    max_ok: u64,
}

impl FrameReader {
    fn new(max_ok: u64) -> Self {
        Self {
            header: [0; HEADER_LEN],
            got: 0,
            payload: None,
            max_ok,
        }
    }

    /// Bytes received so far.
    fn received(&self) -> usize {
        self.got + self.payload.as_ref().map_or(0, |p| p.2)
    }

    /// Reads until the pipe is empty; `Ok(Some)` with the whole frame.
    fn read_available(&mut self, fd: &OwnedFd) -> Result<Option<(u8, Payload)>, ReadFail> {
        loop {
            if let Some((_, payload, filled)) = &self.payload
                && *filled == payload.announced()
            {
                let (tag, mut payload, _) = self.payload.take().expect("just matched");
                if let Payload::Large(v, _) = &mut payload {
                    v.shrink_to_fit();
                }
                return Ok(Some((tag, payload)));
            }
            let buf: &mut [u8] = match &mut self.payload {
                None => &mut self.header[self.got..],
                Some((_, Payload::Small(b, n), filled)) => &mut b[*filled..*n],
                Some((_, Payload::Large(v, n), filled)) => {
                    // Grow by at most CHUNK beyond what has arrived.
                    if v.len() == *filled {
                        let more = (*n - *filled).min(CHUNK);
                        v.resize(*filled + more, 0);
                    }
                    &mut v[*filled..]
                }
            };
            match rustix::io::read(fd, buf) {
                Ok(0) => return Err(ReadFail::Eof(self.received())),
                Ok(n) => match &mut self.payload {
                    Some((_, _, filled)) => *filled += n,
                    None => {
                        self.got += n;
                        if self.got == HEADER_LEN {
                            self.payload = Some(self.start_payload()?);
                        }
                    }
                },
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => return Ok(None),
                Err(e) => return Err(ReadFail::Io(e)),
            }
        }
    }

    fn start_payload(&self) -> Result<(u8, Payload, usize), ReadFail> {
        let tag = self.header[0];
        let len = u64::from_le_bytes(self.header[1..].try_into().expect("8 bytes"));
        let limit = if tag == tag::OK {
            self.max_ok
        } else {
            MAX_REPORT
        };
        let Some(len) = usize::try_from(len).ok().filter(|_| len <= limit) else {
            return Err(ReadFail::TooLarge { tag, len });
        };
        let payload = if len <= SMALL {
            Payload::Small([0; SMALL], len)
        } else {
            Payload::Large(Vec::new(), len)
        };
        Ok((tag, payload, 0))
    }
}

/// Turns what was read and how the child ended into the call's result.
fn finish<T: DeserializeOwned>(
    outcome: Result<(u8, Payload), ReadFail>,
    status: Ended,
    timeout: Duration,
    max_result: u64,
) -> Result<T, ForkAsError> {
    let signaled = |sig: i32, core_dumped| ForkAsError::Signaled {
        signal: sig,
        name: signal_name(sig),
        core_dumped,
    };
    let (tag, payload) = match outcome {
        Ok(frame) => frame,
        Err(ReadFail::Timeout) => {
            return Err(ForkAsError::Timeout { timeout });
        }
        Err(ReadFail::TooLarge { tag: tag::OK, len }) => {
            return Err(ForkAsError::TooLarge {
                len,
                limit: max_result,
            });
        }
        Err(ReadFail::TooLarge { tag, len }) => {
            return Err(protocol(&format!(
                "a report frame (tag {tag}) of {len} bytes, over the {MAX_REPORT}-byte limit \
                 for reports"
            )));
        }
        Err(ReadFail::Io(e)) => return Err(spawn_err("read", e)),
        Err(ReadFail::Eof(got)) => {
            return Err(match status {
                Ended::TimedOut => ForkAsError::Timeout { timeout },
                Ended::Status(ExitStatus::Signaled {
                    signal,
                    core_dumped,
                }) => signaled(signal, core_dumped),
                Ended::Status(ExitStatus::Exited(code)) if got == 0 => {
                    ForkAsError::NoResult { exit_code: code }
                }
                Ended::Status(ExitStatus::Exited(code)) => ForkAsError::Protocol {
                    reason: format!("truncated frame: {got} bytes, then exit status {code}"),
                },
            });
        }
    };
    // A complete frame arrived; how the child ended after it only matters
    // if it never got to exit cleanly.
    if let Ended::TimedOut = status {
        return Err(ForkAsError::Timeout { timeout });
    }
    let text = || String::from_utf8_lossy(&payload).into_owned();
    match tag {
        tag::OK => decode_exact(&payload),
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
                limit: max_result,
            }),
            Err(_) => Err(protocol("bad size report")),
        },
        tag::REFUSED => match postcard::from_bytes::<exec::Refusal>(&payload) {
            Ok(refusal) => Err(refusal.into()),
            Err(_) => Err(protocol("undecodable refusal")),
        },
        other => Err(protocol(&format!("unknown frame tag {other}"))),
    }
}

/// Decodes `T` from exactly `bytes`: trailing bytes are an error too.
fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ForkAsError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(protocol(&format!(
            "{} bytes left over after the result",
            rest.len()
        ))),
        Err(e) => Err(ForkAsError::Decode(e)),
    }
}

fn protocol(reason: &str) -> ForkAsError {
    ForkAsError::Protocol {
        reason: reason.to_owned(),
    }
}

/// What the child's own exit statuses mean, for messages.
fn exit_hint(code: i32) -> &'static str {
    match code {
        EXIT_ORPHANED => " (the child found its parent gone before running the function)",
        EXIT_SETUP_FAILED => " (the child's setup failed before it could report why)",
        _ => "",
    }
}

/// The child: set up, drop, run, report, `_exit`. Never returns.
/// What the child needs to know about the fds it inherited.
struct ChildFds<'a> {
    /// The parent's fds, listed just before the fork.
    inherited: &'a sys::OpenFds,
    devnull: BorrowedFd<'static>,
    /// The parent's end of the pipe, already closed in the child.
    skip: RawFd,
}

fn child_main<T, F>(
    token: &ChildToken,
    parent: Pid,
    pipe: OwnedFd,
    fds: &ChildFds<'_>,
    call: &ForkAs,
    f: F,
) -> !
where
    T: Serialize,
    F: FnOnce() -> T,
{
    // Nothing may unwind out of here into the parent's code.
    let code = catch_unwind(AssertUnwindSafe(|| {
        child_body(token, parent, pipe, fds, call, f)
    }))
    .unwrap_or(EXIT_SETUP_FAILED);
    sys::exit_immediately(code)
}

fn child_body<T, F>(
    token: &ChildToken,
    parent: Pid,
    pipe: OwnedFd,
    fds: &ChildFds<'_>,
    call: &ForkAs,
    f: F,
) -> i32
where
    T: Serialize,
    F: FnOnce() -> T,
{
    let setup_failed = |pipe: &OwnedFd, step: SetupStep, errno: i32| {
        let report = postcard::to_allocvec(&(step, errno)).unwrap_or_default();
        write_frame(pipe, tag::SETUP_FAILED, &report);
        EXIT_SETUP_FAILED
    };
    // 1. Keep the pipe above stderr (it lands on 0–2 if the parent had
    //    closed them), so that stdio can be pointed elsewhere.
    let pipe = if pipe.as_raw_fd() <= 2 {
        match rustix::io::fcntl_dupfd_cloexec(&pipe, 3) {
            Ok(moved) => moved,
            Err(e) => return setup_failed(&pipe, SetupStep::MovePipe, e.raw_os_error()),
        }
    } else {
        pipe
    };
    let pipe = &pipe;
    // 2. The child-setup routine (crate::setup): signals, fds (each of the
    //    parent's now reaches /dev/null, stdio too unless inherited on
    //    request), environment, session, keyring, shared mappings,
    //    personality, limits, not dumpable, bounding set, the verified
    //    drop, the death signal, capabilities, no_new_privs, the sandbox.
    let keep = [pipe.as_raw_fd(), fds.skip];
    let memory = call
        .max_memory
        .map(|bytes| (rustix::process::Resource::As, bytes));
    let setup = Setup {
        parent: Some(parent),
        fds: Fds::Null {
            inherited: fds.inherited,
            devnull: fds.devnull,
            keep: &keep,
            stdio: matches!(call.stdio, Stdio::Null),
        },
        env: Some(&call.env),
        isolate: true,
        cwd_root: true,
        identity: Some((&call.identity, &call.drop)),
        no_new_privs: call.no_new_privs,
        sandbox: call.sandbox.as_deref(),
        rlimits: memory.as_slice(),
        ..Setup::default()
    };
    match setup.run(Some(token)) {
        Ok(_) => {}
        Err(SetupError::PrivDrop { error, .. }) => {
            let report = postcard::to_allocvec(&WireDropError::from(&error)).unwrap_or_default();
            write_frame(pipe, tag::DROP_FAILED, &report);
            return EXIT_SETUP_FAILED;
        }
        Err(SetupError::ParentGone) => return EXIT_ORPHANED,
        Err(e) => return setup_failed(pipe, e.step(), setup_errno(&e)),
    }
    // 3. Run, encode, report.
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

/// The errno behind a setup failure, for the report to the parent (0 when
/// there is none, e.g. a Landlock ruleset error).
fn setup_errno(e: &SetupError) -> i32 {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(errno) = s
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return errno;
        }
        source = s.source();
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

/// The form of a [`ForkAsError`] sent from the fork server to its caller.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum WireForkAsError {
    /// [`ForkAsError::MultiThreaded`].
    MultiThreaded(u64),
    /// [`ForkAsError::Spawn`]: the call and its error text.
    Spawn(String, String),
    /// [`ForkAsError::PrivDrop`].
    PrivDrop(WireDropError),
    /// [`ForkAsError::ChildSetup`]: step and errno.
    ChildSetup(SetupStep, i32),
    /// [`ForkAsError::Panicked`].
    Panicked(String),
    /// [`ForkAsError::Signaled`]: signal and whether a core was dumped.
    Signaled(i32, bool),
    /// [`ForkAsError::NoResult`].
    NoResult(i32),
    /// [`ForkAsError::Timeout`], in milliseconds.
    Timeout(u64),
    /// [`ForkAsError::TooLarge`]: length and limit.
    TooLarge(u64, u64),
    /// [`ForkAsError::Decode`] or [`ForkAsError::Encode`]: the message.
    Codec(String),
    /// [`ForkAsError::Protocol`].
    Protocol(String),
    /// Any other error, as text.
    Other(String),
}

impl From<&ForkAsError> for WireForkAsError {
    fn from(e: &ForkAsError) -> Self {
        match e {
            ForkAsError::MultiThreaded { threads } => Self::MultiThreaded(*threads as u64),
            ForkAsError::Spawn { what, source } => {
                Self::Spawn((*what).to_owned(), source.to_string())
            }
            ForkAsError::PrivDrop(d) => Self::PrivDrop(d.into()),
            ForkAsError::ChildSetup { step, source } => {
                Self::ChildSetup(*step, source.raw_os_error().unwrap_or(0))
            }
            ForkAsError::Panicked { message } => Self::Panicked(message.clone()),
            ForkAsError::Signaled {
                signal,
                core_dumped,
                ..
            } => Self::Signaled(*signal, *core_dumped),
            ForkAsError::NoResult { exit_code } => Self::NoResult(*exit_code),
            ForkAsError::Timeout { timeout } => {
                Self::Timeout(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
            }
            ForkAsError::TooLarge { len, limit } => Self::TooLarge(*len, *limit),
            ForkAsError::Encode { message } => Self::Codec(message.clone()),
            ForkAsError::Decode(e) => Self::Codec(e.to_string()),
            ForkAsError::Protocol { reason } => Self::Protocol(reason.clone()),
            ForkAsError::Resolve(e) => Self::Other(e.to_string()),
            e @ (ForkAsError::UnknownFunction { .. }
            | ForkAsError::BadArguments { .. }
            | ForkAsError::Exec(_)
            | ForkAsError::ExecMode { .. }) => Self::Other(e.to_string()),
        }
    }
}

impl From<WireForkAsError> for ForkAsError {
    fn from(w: WireForkAsError) -> Self {
        match w {
            WireForkAsError::MultiThreaded(n) => Self::MultiThreaded {
                threads: usize::try_from(n).unwrap_or(usize::MAX),
            },
            WireForkAsError::Spawn(what, text) => Self::Protocol {
                reason: format!("the fork server's {what} failed: {text}"),
            },
            WireForkAsError::PrivDrop(d) => Self::PrivDrop(d.into()),
            WireForkAsError::ChildSetup(step, errno) => Self::ChildSetup {
                step,
                source: io::Error::from_raw_os_error(errno),
            },
            WireForkAsError::Panicked(message) => Self::Panicked { message },
            WireForkAsError::Signaled(signal, core_dumped) => Self::Signaled {
                signal,
                name: signal_name(signal),
                core_dumped,
            },
            WireForkAsError::NoResult(exit_code) => Self::NoResult { exit_code },
            WireForkAsError::Timeout(ms) => Self::Timeout {
                timeout: Duration::from_millis(ms),
            },
            WireForkAsError::TooLarge(len, limit) => Self::TooLarge { len, limit },
            WireForkAsError::Codec(message) => Self::Encode { message },
            WireForkAsError::Protocol(reason) => Self::Protocol { reason },
            WireForkAsError::Other(reason) => Self::Protocol { reason },
        }
    }
}
