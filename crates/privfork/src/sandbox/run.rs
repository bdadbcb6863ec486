//! `privfork run`: run a program as a user, under promises and unveiled
//! paths, executed once and never again.
//!
//! The privfork process forks a child, which drops privileges, applies the
//! sandbox and executes the program; privfork stays behind as the
//! supervisor that lets exactly that one exec through (see
//! [`super::exec_once`]), relays the program's stdout and stderr (see
//! [`super::relay`]), and, once the program exits, kills and reaps
//! everything it started (see [`super::reap`]); then it exits with the
//! program's status (or 128 + the signal that killed it).
//!
//! Dynamically linked programs start because the sandbox of `run` also
//! (a) unveils the program, its interpreter, exactly the libraries the
//! loader will open (found as glibc finds them, see [`super::loader`]) and
//! `/etc/ld.so.cache`, and (b) allows read-only opens and
//! executable mappings of files (see [`super::Sandbox::for_exec_loader`]):
//! the dynamic loader needs both before the program's `main`, and on Linux
//! no sandbox can be tightened after exec by the program's own loader.

use std::ffi::OsString;
use std::io::{IoSlice, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

mod child;
mod plan;

use child::{Launch, child};
pub(super) use plan::open_regular;
use plan::{resolve, sandbox, script_interpreter};

use super::exec_once;
pub use super::relay::StdioMode;
pub use super::resources::{Limits, Net};
use super::{
    Policy, PreparedSandbox, Sandbox, SandboxError, Unveil, UnveilError, Violation, reap, relay,
};
use crate::event::{Interest, Poller, Readiness, Signals};
use crate::identity::Identity;
use crate::ipc::fdpass::{FdRecvBuffer, recv_with_fds, send_with_fds};
use crate::listen::Listeners;
use crate::privdrop::DropOptions;
use crate::process::{Child, ExitStatus, ProcessError, Signal};
use crate::setup::{Fds, Setup, SetupError, SetupStep};
use crate::sys::{self, Forked};
use rustix::process::Pid;

/// privfork's own exit codes (the program's own status passes through).
pub mod exit {
    /// A `--listen` address could not be bound (in use, no permission, a
    /// bad unix socket path or owner).
    pub const LISTEN: i32 = 114;
    /// `--timeout` passed: the program was sent SIGTERM (and SIGKILL after
    /// [`super::TIMEOUT_GRACE`] if it was still there).
    pub const TIMED_OUT: i32 = 115;
    /// The `--chdir` directory could not be entered as the target user.
    pub const BAD_CHDIR: i32 = 116;
    /// The program, its interpreter, a library or a library search
    /// directory lies under a directory that someone other than root or
    /// the caller can write (see [`crate::trusted_path`]).
    pub const UNTRUSTED_PATH: i32 = 117;
    /// A layer of the sandbox cannot be enforced on this kernel (and
    /// `--best-effort` was not given).
    pub const UNENFORCEABLE: i32 = 118;
    /// The program (or a program the caller unveiled for execution)
    /// wants an executable stack and `prot_exec` is not promised.
    pub const EXEC_STACK: i32 = 119;
    /// A library the program needs cannot be found where the dynamic
    /// loader looks (or the program, its interpreter or a library cannot
    /// be parsed as x86_64 ELF).
    pub const MISSING_LIBRARY: i32 = 120;
    /// A promise name is unknown.
    pub const BAD_PROMISE: i32 = 121;
    /// An unveil spec is malformed or its path does not exist.
    pub const BAD_UNVEIL: i32 = 122;
    /// The user or group is unknown.
    pub const BAD_USER: i32 = 123;
    /// Dropping privileges failed.
    pub const PRIVDROP: i32 = 124;
    /// The sandbox could not be applied (or privfork itself failed).
    pub const SANDBOX: i32 = 125;
    /// The program exists but could not be executed (the target user
    /// cannot reach or execute it, or the exec failed).
    pub const CANNOT_EXEC: i32 = 126;
    /// The program was not found.
    pub const NOT_FOUND: i32 = 127;
}

/// What to run, as whom, under what.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// User to run as (name or uid), if any.
    pub user: Option<String>,
    /// Group to run as (name or gid), if any.
    pub group: Option<String>,
    /// Promises, space-separated.
    pub promises: String,
    /// Unveil specs (`PERMS:PATH`).
    pub unveil: Vec<String>,
    /// TCP ports the program may bind.
    pub bind: Vec<u16>,
    /// TCP ports the program may connect to.
    pub connect: Vec<u16>,
    /// What a violation does; `None`: the sandbox's default (kill, or
    /// `EPERM` under the `error` promise).
    pub violation: Option<Violation>,
    /// Run even if a layer cannot be fully enforced (with a warning);
    /// otherwise that is refused before anything starts.
    pub best_effort: bool,
    /// The program's stdin, stdout and stderr.
    pub stdio: StdioMode,
    /// Variables set in the program's environment (`--env K=V`), over
    /// everything else.
    pub env: Vec<(OsString, OsString)>,
    /// Variables of privfork's environment passed on (`--keep-env NAME`)
    /// besides [`KEPT_ENV`].
    pub keep_env: Vec<OsString>,
    /// Pass privfork's whole environment on (`--inherit-env`), not the
    /// clean one of [`KEPT_ENV`] and [`SAFE_PATH`].
    pub inherit_env: bool,
    /// The directory the program starts in, entered as the target user
    /// (`--chdir`); `None`: privfork's own working directory.
    pub chdir: Option<PathBuf>,
    /// Resource limits.
    pub limits: Limits,
    /// Wall-clock time after which privfork ends the program (`--timeout`).
    pub timeout: Option<Duration>,
    /// The program's network (`--net none`).
    pub net: Net,
    /// Listening sockets privfork binds (as root, before anything else)
    /// and hands to the program at fds 3 onward, with `LISTEN_FDS`,
    /// `LISTEN_FDNAMES` and `LISTEN_PID` set as systemd's socket
    /// activation sets them (`--listen`).
    pub listen: Vec<crate::listen::ListenSpec>,
    /// The program and its arguments.
    pub command: Vec<OsString>,
}

/// The variables of privfork's environment the program gets by default
/// (`LC_*` too): locale, terminal type and time zone, as sudo's
/// `env_reset` keeps them. Nothing else of the invoker's environment (a
/// root shell's `AWS_SECRET_ACCESS_KEY`, say) reaches a program that
/// other processes of its user can read (`/proc/PID/environ` of a
/// dumpable process).
pub const KEPT_ENV: &[&str] = &["LANG", "TERM", "TZ"];

/// glibc's UNSECURE_ENVVARS besides `LD_*` (what its loader ignores for
/// a setuid program), kept out under `--inherit-env` unless named with
/// `--keep-env`.
const UNSECURE_ENV: &[&str] = &[
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TMPDIR",
    "TZDIR",
];

/// The program's `PATH` (and where privfork looks for a program named
/// without a `/`): Debian sudo's `secure_path`, not the caller's — a
/// caller's `PATH` may name directories the caller, or anyone, can write.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a program has after `--timeout`'s SIGTERM before SIGKILL.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// The program's environment: [`KEPT_ENV`] and `LC_*` from privfork's
/// (or all of it with `--inherit-env`), `PATH` = [`SAFE_PATH`] (the
/// caller's with `--inherit-env`), `HOME`, `USER`, `LOGNAME` and `SHELL`
/// of the user it runs as (from its passwd entry; `HOME=/` and nothing
/// else without one), then the variables named by `--keep-env`, then
/// those set by `--env`; then `NOTIFY_SOCKET` = the program's own socket
/// (see [`super::notify`]) if privfork has one, never privfork's; then
/// `LISTEN_FDS` and `LISTEN_FDNAMES` for the listeners it hands over.
fn environment(
    opts: &RunOptions,
    uid: u32,
    notify: Option<&Path>,
    listeners: &Listeners,
) -> Result<Vec<(OsString, OsString)>, RunError> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut set = |k: OsString, v: OsString| {
        env.retain(|(old, _)| *old != k);
        env.push((k, v));
    };
    if !opts.inherit_env {
        set("PATH".into(), SAFE_PATH.into());
    }
    for (k, v) in std::env::vars_os() {
        let name = k.as_bytes();
        // Even with --inherit-env, the variables glibc strips for a setuid
        // program (its UNSECURE_ENVVARS: the loader's LD_*, GCONV_PATH,
        // GLIBC_TUNABLES, LOCPATH...) only when named with --keep-env:
        // privfork checked the libraries it resolved, not those.
        let loader_var =
            name.starts_with(b"LD_") || UNSECURE_ENV.iter().any(|n| n.as_bytes() == name);
        // systemd's (or serve's) socket is privfork's alone.
        if name == b"NOTIFY_SOCKET" {
            continue;
        }
        if (opts.inherit_env && !loader_var)
            || KEPT_ENV.iter().any(|n| n.as_bytes() == name)
            || name.starts_with(b"LC_")
        {
            set(k, v);
        }
    }
    match crate::sys::user_by_uid(rustix::process::Uid::from_raw(uid)) {
        Ok(Some(pw)) => {
            let home = if pw.home.is_empty() {
                "/".into()
            } else {
                pw.home
            };
            set("HOME".into(), home);
            set("USER".into(), pw.name.clone().into());
            set("LOGNAME".into(), pw.name.into());
            if !pw.shell.is_empty() {
                set("SHELL".into(), pw.shell);
            }
        }
        _ => set("HOME".into(), "/".into()),
    }
    for k in &opts.keep_env {
        if k == "NOTIFY_SOCKET" {
            continue;
        }
        if let Some(v) = std::env::var_os(k) {
            set(k.clone(), v);
        }
    }
    for (k, v) in &opts.env {
        let bad = k.is_empty()
            || k.as_bytes().contains(&b'=')
            || k.as_bytes().contains(&0)
            || v.as_bytes().contains(&0);
        if bad {
            return Err(fail(
                exit::SANDBOX,
                format!(
                    "bad --env {}={}: the name must be non-empty, without '=' or NUL",
                    k.to_string_lossy(),
                    v.to_string_lossy()
                ),
            ));
        }
        set(k.clone(), v.clone());
    }
    if let Some(path) = notify {
        set("NOTIFY_SOCKET".into(), path.into());
    }
    // Socket activation describes privfork's own start, never the
    // program's (whatever --inherit-env or --keep-env passed): only the
    // listeners privfork hands it. LISTEN_PID is set in the child, which
    // knows its pid.
    env.retain(|(k, _)| !SOCKET_ACTIVATION_ENV.iter().any(|n| k == n));
    if !listeners.is_empty() {
        env.push(("LISTEN_FDS".into(), listeners.len().to_string().into()));
        env.push(("LISTEN_FDNAMES".into(), listeners.names().into()));
    }
    Ok(env)
}

/// systemd's socket activation variables.
const SOCKET_ACTIVATION_ENV: &[&str] = &["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// A failure of `run` before the program started, with its exit code.
#[derive(Debug)]
pub struct RunError {
    /// One of [`exit`].
    pub code: i32,
    /// A one-line message naming the bad input.
    pub message: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RunError {}

fn fail(code: i32, message: impl std::fmt::Display) -> RunError {
    RunError {
        code,
        message: message.to_string(),
    }
}

/// A kernel that cannot enforce a layer, without `--best-effort`.
fn unenforceable(e: &dyn std::fmt::Display) -> RunError {
    fail(
        exit::UNENFORCEABLE,
        format!(
            "this kernel cannot enforce the whole sandbox ({e}); refusing to run the program \
             with less (--best-effort runs it with what the kernel enforces, and says what is missing)"
        ),
    )
}

/// A failure to watch or reap the child, with its cause.
fn process_fail(e: ProcessError) -> RunError {
    match std::error::Error::source(&e) {
        Some(source) => fail(exit::SANDBOX, format!("{e}: {source}")),
        None => fail(exit::SANDBOX, e),
    }
}

/// SIGCHLD and every signal whose default action ends a process, except
/// those a fault of privfork's own raises (SEGV, BUS, FPE, ILL, TRAP, SYS,
/// ABRT), SIGPIPE (ignored by the Rust runtime) and KILL/STOP (which
/// cannot be caught). Read through a signalfd and passed on to the
/// program's process group: privfork killed by one of them (SIGQUIT from
/// Ctrl-\\, say) would leave the program's `setsid` descendants to init.
///
/// SIGWINCH (ignored by default) is passed on too: the program is in a
/// session of its own, so the terminal's size changes reach privfork,
/// in its foreground process group, and not the program.
const FORWARDED: &[Signal] = &[
    Signal::CHILD,
    Signal::WINCH,
    Signal::INT,
    Signal::TERM,
    Signal::HUP,
    Signal::QUIT,
    Signal::USR1,
    Signal::USR2,
    Signal::ALARM,
    Signal::XCPU,
    Signal::XFSZ,
    Signal::VTALARM,
    Signal::PROF,
    Signal::IO,
    Signal::POWER,
    Signal::STKFLT,
];

/// [`FORWARDED`] less the signals privfork was started with ignored
/// (`nohup`'s SIGHUP; SIGINT and SIGQUIT of a script's background job):
/// those stay ignored, in privfork and in the program, which inherits them
/// so, as if it were run directly. Read through a signalfd, a blocked
/// signal is queued even when ignored: forwarded, a second Ctrl-C meant
/// for the script would kill a program that was to ignore it. SIGCHLD is
/// always read: privfork reaps through it.
fn forwarded_signals() -> std::io::Result<Vec<Signal>> {
    let mut kept = Vec::with_capacity(FORWARDED.len());
    for &sig in FORWARDED {
        if sig == Signal::CHILD || !sys::signal_ignored(sig.as_raw())? {
            kept.push(sig);
        }
    }
    Ok(kept)
}

/// Runs the command; returns the exit code privfork should exit with.
///
/// # Errors
///
/// [`RunError`] with its exit code for every failure before the program
/// started (bad promise, unveil spec or path, user, program not found).
/// Failures in the child (privilege drop, sandbox, exec) print their
/// message there and come back as the child's exit code.
pub fn run(opts: &RunOptions) -> Result<i32, RunError> {
    // Closed 0–2 would be taken by the first fds privfork opens (the
    // relay's pipes, a listener): /dev/null fills them first.
    crate::sys::open_missing_stdio().map_err(|e| fail(exit::SANDBOX, format!("/dev/null: {e}")))?;
    let listeners = bind_listeners(&opts.listen)?;
    run_with_listeners(opts, &listeners)
}

/// Binds `specs` and moves the sockets to fds 3 onward, where the program
/// gets them: first, before privfork opens anything of its own there.
pub(crate) fn bind_listeners(specs: &[crate::listen::ListenSpec]) -> Result<Listeners, RunError> {
    if specs.is_empty() {
        return Ok(Listeners::default());
    }
    let bound = Listeners::bind(specs).map_err(|e| fail(exit::LISTEN, e))?;
    bound.place_at(FIRST_LISTEN_FD).map_err(|e| {
        fail(
            exit::LISTEN,
            format!("moving the listeners to fd 3 onward: {e}"),
        )
    })
}

/// The fd of the program's first listener: systemd's `SD_LISTEN_FDS_START`.
pub const FIRST_LISTEN_FD: i32 = 3;

/// As [`run`], handing the program `listeners`, which must sit at fds 3,
/// 4, … in order (as [`Listeners::place_at`] leaves them; `privfork
/// serve` places its own so before it starts an instance).
///
/// # Errors
///
/// As [`run`]; a listener not at its number is refused (exit 125).
pub fn run_with_listeners(opts: &RunOptions, listeners: &Listeners) -> Result<i32, RunError> {
    crate::sys::open_missing_stdio().map_err(|e| fail(exit::SANDBOX, format!("/dev/null: {e}")))?;
    // privfork reaps the program: a SIGCHLD it was started with ignored
    // would have the kernel reap it (and free its pid) first.
    sys::unignore_signal(libc::SIGCHLD)
        .map_err(|e| fail(exit::SANDBOX, format!("sigaction(SIGCHLD): {e}")))?;
    for (i, l) in listeners.iter().enumerate() {
        let want = FIRST_LISTEN_FD + i32::try_from(i).unwrap_or(i32::MAX - FIRST_LISTEN_FD);
        if std::os::fd::AsRawFd::as_raw_fd(&l.as_fd()) != want {
            return Err(fail(
                exit::SANDBOX,
                format!("listener {} is not at fd {want}", l.name()),
            ));
        }
    }
    let Some(program) = opts.command.first() else {
        return Err(fail(exit::NOT_FOUND, "no command given"));
    };
    // The supervisor finds a refused call's process and memory by the pid
    // the kernel gives it: /proc must be this pid namespace's.
    let me = rustix::process::getpid().as_raw_nonzero().get().to_string();
    if std::fs::read_link("/proc/self").ok().as_deref() != Some(Path::new(&me)) {
        return Err(fail(
            exit::SANDBOX,
            "/proc is not this pid namespace's (is it mounted?): privfork run needs it \
             to supervise the program",
        ));
    }
    // Without -u, root's program would run as uid 0: capabilities dropped,
    // but still the owner of every root file (chmod, for one, is outside
    // Landlock's reach) and of every root process (prlimit64, kill under
    // `proc`). Root names the user; nobody is the usual choice.
    if opts.user.is_none() && rustix::process::geteuid().is_root() {
        return Err(fail(
            exit::BAD_USER,
            "running as root: say which user the program runs as, e.g. -u nobody",
        ));
    }
    let identity = match (&opts.user, &opts.group) {
        (None, None) => None,
        (Some(u), None) => Some(Identity::user(u).map_err(|e| fail(exit::BAD_USER, e))?),
        (Some(u), Some(g)) => {
            Some(Identity::user_group(u, g).map_err(|e| fail(exit::BAD_USER, e))?)
        }
        (None, Some(g)) => {
            let me = rustix::process::getuid().as_raw().to_string();
            Some(Identity::user_group(&me, g).map_err(|e| fail(exit::BAD_USER, e))?)
        }
    };
    if let (Some(id), Some(user)) = (&identity, &opts.user)
        && id.uid() == 0
    {
        return Err(fail(
            exit::BAD_USER,
            format!("refusing to run the program as root ({user} is uid 0); use e.g. -u nobody"),
        ));
    }
    let target_uid = identity
        .as_ref()
        .map_or_else(|| rustix::process::getuid().as_raw(), Identity::uid);
    // sd_notify: the program's own NOTIFY_SOCKET, if privfork has one.
    let notify = super::notify::Notify::from_env(target_uid).map_err(|e| {
        fail(
            exit::SANDBOX,
            format!("setting up the program's NOTIFY_SOCKET: {e}"),
        )
    })?;
    let env = environment(
        opts,
        target_uid,
        notify.as_ref().map(super::notify::Notify::program_socket),
        listeners,
    )?;
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    let program = resolve(Path::new(program), path)?;
    // unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN: said here, before any fork,
    // rather than by the child.
    if opts.net == Net::None && !rustix::process::geteuid().is_root() {
        return Err(fail(
            exit::SANDBOX,
            "--net none needs privfork to run as root (unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN)",
        ));
    }
    let env = crate::setup::Environment::Set(env);
    // Checked in the child as the target user: privfork (root) reads the
    // program fine where the user may not reach it.
    let exec_check = crate::setup::ExecCheck::new(&program, script_interpreter(&program).is_some())
        .map_err(|e| fail(exit::NOT_FOUND, format!("{}: {e}", program.display())))?;
    let chdir = match &opts.chdir {
        Some(dir) => Some(
            std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
                fail(
                    exit::BAD_CHDIR,
                    format!("bad --chdir {}: holds a NUL byte", dir.display()),
                )
            })?,
        ),
        None => None,
    };
    let rlimits = opts.limits.rlimits();
    // Prepared here, in privfork itself: a bad unveil or a kernel that
    // cannot enforce is reported before any fork.
    let unprepared = sandbox(opts, &program)?.unix_sockets_to_supervisor(notify.is_some());
    let sb = unprepared.prepare_supervised().map_err(|e| match e {
        SandboxError::Unveil(UnveilError::Landlock(_)) if !opts.best_effort => unenforceable(&e),
        SandboxError::Unveil(_) => fail(exit::BAD_UNVEIL, e),
        SandboxError::Step { .. } if !opts.best_effort => unenforceable(&e),
        e => fail(exit::SANDBOX, e),
    })?;
    // What names refused calls, and how they are answered: in every mode
    // the supervisor (privfork) sees them first.
    let explain = unprepared.explainer(&sb);
    let mode = unprepared.violation_mode();
    let sys_fail =
        |what: &str, e: &dyn std::fmt::Display| fail(exit::SANDBOX, format!("{what}: {e}"));
    let (child_stdio, mut relay) =
        relay::plan(opts.stdio).map_err(|e| sys_fail("setting up the program's stdio", &e))?;
    // Events, not handlers: SIGCHLD (orphans to reap) and the signals that
    // would end privfork (forwarded to the program). Blocked before the
    // fork, so nothing reaps the child behind its handle's back; the
    // child's setup empties its mask again.
    let forwarded = forwarded_signals().map_err(|e| sys_fail("sigaction", &e))?;
    let signals = Signals::new(&forwarded).map_err(|e| sys_fail("signalfd", &e))?;
    // Orphaned descendants come back to privfork, to be killed at the end.
    reap::become_subreaper().map_err(|e| sys_fail("prctl(PR_SET_CHILD_SUBREAPER)", &e))?;
    let (parent_end, child_end) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| sys_fail("socketpair", &e))?;
    let parent = rustix::process::getpid();
    let child = match sys::fork() {
        Ok(Forked::Parent(pid)) => pid,
        Ok(Forked::Child(token)) => {
            drop(parent_end);
            let launch = Launch {
                identity: identity.as_ref(),
                sb: &sb,
                stdio: &child_stdio,
                program: &program,
                env: &env,
                exec_check: &exec_check,
                chdir: chdir.as_deref(),
                rlimits: &rlimits,
                listeners: u32::try_from(listeners.len()).unwrap_or(u32::MAX),
                opts,
            };
            let code = child(&token, parent, &launch, child_end);
            sys::exit_immediately(code)
        }
        Err(e) => return Err(fail(exit::SANDBOX, format!("fork: {e:?}"))),
    };
    drop(child_end);
    // privfork's copies of the program's pipe ends: only the program's
    // processes hold them now.
    drop(child_stdio);
    // Killed and reaped if anything below returns early.
    let mut child = Child::after_fork(child).map_err(process_fail)?;
    // The child sends the listener once sandboxed; EOF if it failed first.
    let mut buf = [0u8; 1];
    let mut cmsg = FdRecvBuffer::new(1);
    let listener = match recv_with_fds(parent_end.as_fd(), &mut buf, &mut cmsg, false) {
        Ok((_, mut fds)) if fds.len() == 1 => fds.pop(),
        _ => None,
    };
    drop(parent_end);
    let mut supervisor =
        exec_once::Supervisor::supervised(child.pid(), mode, explain).with_notify(notify);
    let mut listener = listener;
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let watched = watch(
        &mut child,
        &mut listener,
        &signals,
        &mut relay,
        &mut supervisor,
        Watch {
            deadline,
            tty: opts.stdio == StdioMode::Inherit,
        },
    );
    if watched.is_err() {
        let _ = child.kill_and_wait();
    }
    // The program is gone: so is everything it started. The listener stays
    // open until they are: a refused call of theirs meanwhile waits (it is
    // not answered ENOSYS and let go on).
    let reaped = reap::kill_descendants();
    drop(listener);
    for line in supervisor.summary() {
        relay.report(&line);
    }
    relay.finish();
    reaped.map_err(|e| sys_fail("killing the program's remaining processes", &e))?;
    let (status, timed_out) = watched?;
    if timed_out {
        return Ok(exit::TIMED_OUT);
    }
    // Killed by the supervisor for a refused call: what the kernel's own
    // kill would have said.
    if status.signal() == Some(libc::SIGKILL) && supervisor.killed_child() {
        return Ok(128 + libc::SIGSYS);
    }
    Ok(status.shell_code())
}

/// How [`watch`] supervises.
#[derive(Debug, Clone, Copy)]
struct Watch {
    /// `--timeout`: when the program is sent SIGTERM.
    deadline: Option<Instant>,
    /// `--tty`: an interactive program on the caller's terminal, which
    /// takes Ctrl-C and Ctrl-\\ as often as the user presses them.
    tty: bool,
}

/// Whether a second `sig` sent to privfork kills the program (SIGKILL)
/// rather than being passed on again: only the requests to stop (SIGTERM,
/// and SIGINT and SIGQUIT unless the program is an interactive one on the
/// caller's terminal, `--tty`, where each Ctrl-C is for the program).
/// SIGHUP, SIGUSR1, SIGUSR2 and SIGWINCH are commands a program may be
/// sent many times (reload, reopen logs, the terminal resized).
fn escalates(sig: i32, tty: bool) -> bool {
    sig == libc::SIGTERM || (!tty && (sig == libc::SIGINT || sig == libc::SIGQUIT))
}

/// privfork's event loop while the program runs: the seccomp listener (the
/// one exec, every refused call; every open in log mode), the program's
/// pidfd, signals and the relayed output. Returns the program's status once it has
/// exited (the rest of its processes may still run).
///
/// At `how.deadline` the program's process group is sent SIGTERM, and the
/// program SIGKILL [`TIMEOUT_GRACE`] later if it is still there; the
/// `bool` returned says whether that happened.
fn watch(
    child: &mut Child,
    listener: &mut Option<OwnedFd>,
    signals: &Signals,
    relay: &mut relay::Relay,
    supervisor: &mut exec_once::Supervisor,
    how: Watch,
) -> Result<(ExitStatus, bool), RunError> {
    let Watch { tty, .. } = how;
    let mut deadline = how.deadline;
    let mut timed_out = false;
    const LISTENER: usize = 0;
    const CHILD: usize = 1;
    const SIGNALS: usize = 2;
    const RELAY: usize = 10;
    const NOTIFY: usize = 100;
    let loop_fail =
        |e: std::io::Error| fail(exit::SANDBOX, format!("supervising the program: {e}"));
    let mut forwarded = Vec::new();
    loop {
        let ready: Vec<(usize, Readiness)> = {
            let mut poller = Poller::<8>::new();
            if let Some(l) = listener.as_ref() {
                poller.add(l, Interest::READABLE, LISTENER);
            }
            poller.add(&*child, Interest::READABLE, CHILD);
            poller.add(signals, Interest::READABLE, SIGNALS);
            relay.register(&mut poller, RELAY);
            // Also woken to try again what waits to be passed on to
            // privfork's own NOTIFY_SOCKET.
            let mut wake = deadline;
            if let Some(notify) = supervisor.notify() {
                notify.register(&mut poller, NOTIFY);
                if let Some(retry) = notify.retry_at() {
                    wake = Some(wake.map_or(retry, |d| d.min(retry)));
                }
            }
            poller.wait(wake).map_err(loop_fail)?;
            poller.ready().collect()
        };
        relay.on_ready(&ready, RELAY);
        // Before the listener's turn: a socket handed over there would
        // move the ones the tokens name.
        pass_on_notify(supervisor, relay, Some((&ready, NOTIFY)));
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            if timed_out {
                // The grace is over.
                let _ = child.kill();
                deadline = None;
            } else {
                timed_out = true;
                let _ = writeln!(
                    std::io::stderr(),
                    "privfork: --timeout reached: SIGTERM sent to the program, SIGKILL in {}s",
                    TIMEOUT_GRACE.as_secs()
                );
                signal_group(child, Signal::TERM);
                deadline = Some(Instant::now() + TIMEOUT_GRACE);
            }
        }
        for &(token, readiness) in &ready {
            match token {
                LISTENER => {
                    let Some(l) = listener.as_ref() else { continue };
                    // Not readable (hung up): no process uses the filter.
                    let keep = readiness.is_readable()
                        && supervisor.on_readable(l.as_fd(), None).map_err(loop_fail)?;
                    for line in supervisor.take_lines() {
                        relay.report(&line);
                    }
                    if !keep {
                        *listener = None;
                    }
                }
                SIGNALS => {
                    while let Some(info) = signals.read().map_err(loop_fail)? {
                        if info.signal == libc::SIGCHLD {
                            reap::reap_orphans(child.pid());
                            continue;
                        }
                        // Passed on to the program's process group, as a
                        // terminal would (the program leads it: setsid);
                        // a second request to stop kills the program.
                        if escalates(info.signal, tty) {
                            if forwarded.contains(&info.signal) {
                                let _ = child.kill();
                                continue;
                            }
                            forwarded.push(info.signal);
                        }
                        let sig = Signal::from_named_raw(info.signal).unwrap_or(Signal::KILL);
                        signal_group(child, sig);
                    }
                }
                _ => {}
            }
        }
        if let Some(status) = child.try_wait().map_err(process_fail)? {
            // What it said just before it exited.
            pass_on_notify(supervisor, relay, None);
            return Ok((status, timed_out));
        }
    }
}

/// The program's sd_notify messages passed on (see [`super::notify`]):
/// from the sockets `poll` found ready (with the tokens' base), or with
/// `None` whatever is queued; privfork's lines about them reported.
fn pass_on_notify(
    supervisor: &mut exec_once::Supervisor,
    relay: &mut relay::Relay,
    ready: Option<(&[(usize, Readiness)], usize)>,
) {
    let Some(notify) = supervisor.notify_mut() else {
        return;
    };
    match ready {
        Some((ready, base)) => notify.on_ready(ready, base),
        None => notify.drain(),
    }
    for line in notify.take_lines() {
        relay.report(&line);
    }
}

/// Sends `sig` to the program's process group (the program leads it:
/// setsid), as a terminal would.
fn signal_group(child: &Child, sig: Signal) {
    // The program is not reaped yet: its pid, and so its group's id,
    // cannot have been reused.
    match i32::try_from(child.pid()).ok().and_then(Pid::from_raw) {
        Some(group) => {
            // ESRCH: the program has not made its group yet (setsid, at
            // its start): the program itself.
            if rustix::process::kill_process_group(group, sig).is_err() {
                let _ = child.signal(sig);
            }
        }
        None => {
            let _ = child.signal(sig);
        }
    }
}
