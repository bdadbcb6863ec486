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

use super::exec_once;
pub use super::relay::StdioMode;
pub use super::resources::{Limits, Net};
use super::{
    Policy, PreparedSandbox, Sandbox, SandboxError, Unveil, UnveilError, Violation, reap, relay,
};
use crate::event::{Interest, Poller, Readiness, Signals};
use crate::identity::Identity;
use crate::ipc::fdpass::{FdRecvBuffer, recv_with_fds, send_with_fds};
use crate::privdrop::DropOptions;
use crate::process::{Child, ExitStatus, ProcessError, Signal};
use crate::setup::{Fds, Setup, SetupError, SetupStep};
use crate::sys::{self, Forked};
use rustix::process::Pid;

/// privfork's own exit codes (the program's own status passes through).
pub mod exit {
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
/// those set by `--env`.
fn environment(opts: &RunOptions, uid: u32) -> Result<Vec<(OsString, OsString)>, RunError> {
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
        // Even with --inherit-env, the dynamic loader's variables
        // (LD_PRELOAD, LD_LIBRARY_PATH...) only when named with
        // --keep-env: privfork checked the libraries it resolved, not
        // those.
        let loader_var = name.starts_with(b"LD_") || name == b"GCONV_PATH";
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
    Ok(env)
}

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

/// Finds `program` as execvp would, in `path` (the program's own `PATH`)
/// unless it contains a '/'; made absolute (`--chdir` happens before the
/// exec).
fn resolve(program: &Path, path: Option<&std::ffi::OsStr>) -> Result<PathBuf, RunError> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return if program.exists() {
            std::path::absolute(program).map_err(|e| fail(exit::NOT_FOUND, e))
        } else {
            Err(fail(
                exit::NOT_FOUND,
                format!("{}: no such file", program.display()),
            ))
        };
    }
    let path = path.unwrap_or(SAFE_PATH.as_ref());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return std::path::absolute(candidate).map_err(|e| fail(exit::NOT_FOUND, e));
        }
    }
    Err(fail(
        exit::NOT_FOUND,
        format!(
            "{}: command not found in the program's PATH ({})",
            program.display(),
            path.to_string_lossy()
        ),
    ))
}

/// Opens `path` for reading only if it is a regular file. privfork is
/// still root here and the path may come from an untrusted ELF file
/// (`PT_INTERP`, `DT_NEEDED`, `DT_RUNPATH`): opening a device for reading
/// can do something (`/dev/watchdog` arms a watchdog), a FIFO blocks, a
/// terminal could become privfork's. So the path is first opened
/// `O_PATH` (which opens nothing: no driver's `open` runs), checked with
/// `fstat`, and only a regular file is opened for reading, through that
/// same fd (`/proc/self/fd/N`), not by its name again.
///
/// # Errors
///
/// The error of `open` or `fstat`; `InvalidInput` for anything but a
/// regular file.
pub(super) fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{FileType, Mode, OFlags};
    let opath = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    let stat = rustix::fs::fstat(&opath)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let through = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&opath));
    let f = rustix::fs::open(
        through.as_str(),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(f.into())
}

/// The interpreter a script names on its `#!` line (the first word; the
/// kernel reads at most 256 bytes), if `program` is a script. It is not
/// unveiled automatically: the script, not the caller, names it. The
/// caller unveils it (`-v rx:/bin/sh`).
fn script_interpreter(program: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = Vec::with_capacity(256);
    open_regular(program)
        .ok()?
        .take(256)
        .read_to_end(&mut head)
        .ok()?;
    let line = head.strip_prefix(b"#!")?;
    let line = line.split(|&c| c == b'\n').next()?;
    let word = line
        .split(|&c| c == b' ' || c == b'\t')
        .find(|w| !w.is_empty())?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(word)))
}

/// A resolution failure, with its exit code.
fn resolve_fail(e: super::loader::ResolveError) -> RunError {
    use super::loader::ResolveError;
    let code = match e {
        ResolveError::Missing { .. } | ResolveError::TooMany { .. } => exit::MISSING_LIBRARY,
        _ => exit::CANNOT_EXEC,
    };
    fail(code, e)
}

/// Refuses `path` unless only root and the caller (privfork's real uid)
/// can change what it names: privfork, root, checks these files by name
/// and Landlock opens them again by name; a directory on the way that
/// someone else can write lets them swap the file (for a symlink to `/`,
/// say) in between.
fn trusted(path: &Path, dir: bool) -> Result<(), RunError> {
    use crate::trusted_path;
    let caller = [rustix::process::getuid().as_raw()];
    let abs = std::path::absolute(path).map_err(|e| fail(exit::NOT_FOUND, e))?;
    let checked = if dir {
        trusted_path::check_dir(&abs, &caller)
    } else {
        trusted_path::check(&abs, &caller)
    };
    match checked {
        Ok(()) => Ok(()),
        // A search directory that does not exist: the loader passes over
        // it, and anything created there later is not unveiled.
        Err(trusted_path::UntrustedPath::Stat { source, .. })
            if dir && source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        Err(e) => Err(fail(exit::UNTRUSTED_PATH, format!("refusing to run: {e}"))),
    }
}

/// Checks every file and search directory of `r` with [`trusted`].
fn trusted_resolution(r: &super::loader::Resolution) -> Result<(), RunError> {
    for p in r.found.iter().chain(&r.interpreter).chain(&r.libraries) {
        trusted(p, false)?;
    }
    for d in &r.search_dirs {
        trusted(d, true)?;
    }
    Ok(())
}

/// Read (and, for the program and interpreters, execute) permissions.
fn perms(exec: bool) -> super::Perms {
    super::Perms {
        read: true,
        exec,
        ..Default::default()
    }
}

/// Builds the sandbox for `opts` (before any fork, so bad input is
/// reported by the privfork process itself).
///
/// Unveils the caller's paths, and exactly what the dynamic loader opens
/// (see [`super::loader`]): the program and its interpreter for reading
/// and execution (the kernel opens both at exec), each library it needs
/// for reading only (the loader `mmap`s them with `PROT_EXEC`, which
/// Landlock does not govern), and `/etc/ld.so.cache`. The same for every
/// regular file the caller unveiled for execution, and for a script's
/// interpreter if the caller unveiled it for execution: a program the
/// caller lets run needs its libraries too. Nothing a script names is
/// unveiled on its say-so.
fn sandbox(opts: &RunOptions, program: &Path) -> Result<Sandbox, RunError> {
    use super::loader;
    let mut sb = Sandbox::new()
        .promises(&opts.promises)
        .map_err(|e| fail(exit::BAD_PROMISE, e))?;
    // Only when asked: otherwise the `error` promise decides.
    if let Some(v) = opts.violation {
        sb = sb.violation(v);
    }
    let mut sb = sb
        // Fail closed: a kernel without a layer is refused by `prepare`,
        // before anything is restricted or started.
        .policy(if opts.best_effort {
            Policy::BestEffort
        } else {
            Policy::Require
        });
    if !sb.promise_set().contains(super::Promise::Stdio) {
        return Err(fail(
            exit::BAD_PROMISE,
            "the promises must include stdio (a program cannot even exit without it)",
        ));
    }
    let prot_exec = sb.promise_set().contains(super::Promise::ProtExec);
    // Each spec parsed once; a missing path is reported here, by name,
    // before any fork.
    let mut unveils = Vec::new();
    for spec in &opts.unveil {
        let u = Unveil::parse(spec).map_err(|e| fail(exit::BAD_UNVEIL, e))?;
        if !u.optional && !u.path.exists() {
            return Err(fail(
                exit::BAD_UNVEIL,
                format!(
                    "cannot unveil {}: no such file or directory",
                    u.path.display()
                ),
            ));
        }
        unveils.push(u);
    }
    // Checked before it is first opened or resolved: from here on, only
    // root and the caller can change what the name points to.
    trusted(program, false)?;
    let program = program
        .canonicalize()
        .map_err(|e| fail(exit::NOT_FOUND, format!("{}: {e}", program.display())))?;
    let loaded = loader::resolve(&program).map_err(resolve_fail)?;
    trusted_resolution(&loaded)?;
    let interpreter = script_interpreter(&program);
    // Only a dynamically linked program (or a script, whose interpreter
    // usually is) needs the loader's read-only opens and executable file
    // mappings.
    if interpreter.is_some() || loaded.dynamic {
        sb = sb.for_exec_loader();
    }
    // What the caller allowed to be executed, by canonical path.
    let exec_unveiled: Vec<PathBuf> = unveils
        .iter()
        .filter(|u| u.perms.exec)
        .filter_map(|u| u.path.canonicalize().ok())
        .collect();
    let mut programs = vec![(program.clone(), loaded)];
    let mut extra: Vec<PathBuf> = exec_unveiled
        .iter()
        .filter(|p| p.is_file())
        .cloned()
        .collect();
    if let Some(i) = interpreter.and_then(|i| i.canonicalize().ok())
        && exec_unveiled.iter().any(|u| i.starts_with(u))
    {
        extra.push(i);
    }
    for p in extra {
        if !programs.iter().any(|(q, _)| *q == p) {
            trusted(&p, false)?;
            let r = loader::resolve(&p).map_err(resolve_fail)?;
            trusted_resolution(&r)?;
            programs.push((p, r));
        }
    }
    let mut files = std::collections::BTreeMap::new();
    files.insert(program.clone(), true);
    for (path, r) in &programs {
        if let Some(obj) = &r.exec_stack
            && !prot_exec
        {
            return Err(fail(
                exit::EXEC_STACK,
                format!(
                    "{}: {} wants an executable stack (PT_GNU_STACK with PF_X, or none): \
                     promise prot_exec to run it",
                    path.display(),
                    obj.display()
                ),
            ));
        }
        if let Some(i) = &r.interpreter {
            files.insert(i.clone(), true);
        }
        for lib in &r.libraries {
            files.entry(lib.clone()).or_insert(false);
        }
    }
    for u in unveils {
        sb = sb.unveil_path(u);
    }
    if programs.iter().any(|(_, r)| r.dynamic) {
        sb = sb.unveil_path(Unveil {
            path: loader::LD_SO_CACHE.into(),
            perms: perms(false),
            optional: true,
        });
    }
    for (path, exec) in files {
        sb = sb.unveil_path(Unveil {
            path,
            perms: perms(exec),
            optional: false,
        });
    }
    for &p in &opts.bind {
        sb = sb.bind(p);
    }
    for &p in &opts.connect {
        sb = sb.connect(p);
    }
    Ok(sb)
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
    let env = environment(opts, target_uid)?;
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
    let unprepared = sandbox(opts, &program)?;
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
    let signals = Signals::new(FORWARDED).map_err(|e| sys_fail("signalfd", &e))?;
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
    let mut supervisor = exec_once::Supervisor::supervised(child.pid(), mode, explain);
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
            poller.wait(deadline).map_err(loop_fail)?;
            poller.ready().collect()
        };
        relay.on_ready(&ready, RELAY);
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
            return Ok((status, timed_out));
        }
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

/// What the child sets up and executes.
struct Launch<'a> {
    identity: Option<&'a Identity>,
    sb: &'a PreparedSandbox,
    stdio: &'a relay::ChildStdio,
    program: &'a Path,
    env: &'a crate::setup::Environment,
    exec_check: &'a crate::setup::ExecCheck,
    chdir: Option<&'a std::ffi::CStr>,
    rlimits: &'a [crate::setup::Rlimit],
    opts: &'a RunOptions,
}

/// The child: the child-setup routine (with the prepared sandbox), the
/// listener handed over, exec. Returns the exit code only if something
/// failed.
///
/// Unlike the usual rule between fork and exec (async-signal-safe calls
/// only, no allocation), this code allocates and runs ordinary Rust: the
/// `ChildToken` proves the process was single-threaded when it forked, so no
/// lock (the allocator's included) can be held by a thread that does not
/// exist in the child. Nothing here returns into the caller's code: every
/// path ends in exec or `_exit`.
fn child(
    token: &sys::ChildToken,
    parent: rustix::process::Pid,
    launch: &Launch<'_>,
    sock: OwnedFd,
) -> i32 {
    let Launch {
        identity,
        sb,
        stdio,
        program,
        env,
        exec_check,
        chdir,
        rlimits: limits,
        opts,
    } = *launch;
    let say = |code: i32, msg: &dyn std::fmt::Display| {
        let _ = writeln!(std::io::stderr(), "privfork: {msg}");
        code
    };
    let drop_opts = DropOptions::new();
    // Locked memory: at most 8 MiB (stdio allows mlock; the limit the
    // caller had may be unlimited).
    let mut rlimits = vec![(rustix::process::Resource::Memlock, 8 << 20)];
    rlimits.extend_from_slice(limits);
    let setup = Setup {
        parent: Some(parent),
        // The pipes of the relay (or /dev/null) at 0-2.
        stdio: stdio.borrowed(),
        // No fd the caller left open reaches the program (Landlock does
        // not govern fds opened before it): all above stderr close at exec.
        fds: Fds::CloseOnExec,
        // Not the invoker's environment: see `environment`.
        env: Some(env),
        isolate: true,
        rlimits: &rlimits,
        empty_network: opts.net == Net::None,
        chdir,
        exec_check: Some(exec_check),
        identity: identity.map(|id| (id, &drop_opts)),
        no_new_privs: true,
        sandbox: Some(sb),
        ..Setup::default()
    };
    let applied = match setup.run(Some(token)) {
        Ok(applied) => applied,
        Err(e @ SetupError::PrivDrop { .. }) => {
            let msg = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
            return say(exit::PRIVDROP, &msg);
        }
        Err(SetupError::Step {
            step: step @ (SetupStep::ChangeDir | SetupStep::ExecCheck),
            source,
        }) => {
            let who = identity.map_or_else(
                || rustix::process::getuid().as_raw().to_string(),
                |id| {
                    id.name()
                        .map_or_else(|| id.uid().to_string(), str::to_owned)
                },
            );
            return if step == SetupStep::ChangeDir {
                say(exit::BAD_CHDIR, &format!("--chdir: as {who}, {source}"))
            } else {
                say(
                    exit::CANNOT_EXEC,
                    &format!("cannot run {} as {who}: {source}", program.display()),
                )
            };
        }
        Err(SetupError::Step {
            step: SetupStep::Network,
            source,
        }) => {
            return say(
                exit::SANDBOX,
                &format!("--net none: cannot make a network namespace: {source}"),
            );
        }
        Err(SetupError::Sandbox(e @ SandboxError::Unveil(_))) => return say(exit::BAD_UNVEIL, &e),
        Err(SetupError::Sandbox(e @ SandboxError::NotFullyEnforced { .. })) => {
            return say(exit::UNENFORCEABLE, &unenforceable(&e));
        }
        Err(e) => return say(exit::SANDBOX, &e),
    };
    let report = applied.report;
    // Never silently less: say what is not fully enforced. (Not dumpable is
    // always lost at exec; the docs say so.)
    let layers = [
        ("capabilities", report.capabilities),
        ("landlock", report.landlock),
        ("seccomp", report.seccomp),
    ];
    for (layer, level) in layers {
        if level != super::Level::Full {
            let _ = writeln!(
                std::io::stderr(),
                "privfork: warning: {layer} enforced {level:?}, not fully"
            );
        }
    }
    for p in &report.skipped {
        let _ = writeln!(
            std::io::stderr(),
            "privfork: warning: optional path {} does not exist, not unveiled",
            p.display()
        );
    }
    // The listener goes to privfork, which supervises the program for its whole life.
    if let Some(listener) = applied.listener
        && send_with_fds(sock.as_fd(), &[IoSlice::new(b"L")], &[listener], false).is_err()
    {
        return say(
            exit::SANDBOX,
            &"cannot hand the seccomp listener to the supervisor",
        );
    }
    drop(sock);
    let err = std::process::Command::new(program)
        .arg0(&opts.command[0])
        .args(&opts.command[1..])
        .exec();
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        exit::NOT_FOUND
    } else {
        exit::CANNOT_EXEC
    };
    say(
        code,
        &format!("cannot execute {}: {err}", program.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_and_fifos_are_recognised_safely() {
        let dir = std::env::temp_dir().join(format!("privfork-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = dir.join("s");
        std::fs::write(&s, "#!/bin/sh -e\necho\n").unwrap();
        assert!(script_interpreter(&s).is_some());
        assert_eq!(script_interpreter(&s), Some(PathBuf::from("/bin/sh")));
        std::fs::write(&s, "#! \t/usr/bin/env python3\n").unwrap();
        assert_eq!(script_interpreter(&s), Some(PathBuf::from("/usr/bin/env")));
        std::fs::write(&s, "echo\n").unwrap();
        assert!(script_interpreter(&s).is_none());
        // A FIFO is neither opened for long nor read: no hang.
        let fifo = dir.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();

        assert!(script_interpreter(&fifo).is_none());
        // Nor parsed as ELF: nothing to load.
        assert!(!super::super::loader::resolve(&fifo).unwrap().dynamic);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
