//! `privfork run`: run a program as a user, under promises and unveiled
//! paths, executed once and never again.
//!
//! The privfork process forks a child, which drops privileges, applies the
//! sandbox and executes the program; privfork stays behind as the
//! supervisor that lets exactly that one exec through (see
//! [`super::exec_once`]), then waits and exits with the program's status
//! (or 128 + the signal that killed it).
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

use super::exec_once;
use super::{PreparedSandbox, Sandbox, SandboxError, Unveil, Violation};
use crate::identity::Identity;
use crate::ipc::fdpass::{FdRecvBuffer, recv_with_fds, send_with_fds};
use crate::privdrop::DropOptions;
use crate::process::{Child, ProcessError};
use crate::setup::{Fds, Setup, SetupError};
use crate::sys::{self, Forked};

/// privfork's own exit codes (the program's own status passes through).
pub mod exit {
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
    /// The program exists but could not be executed.
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
    /// What a violation does.
    pub violation: Violation,
    /// The program and its arguments.
    pub command: Vec<OsString>,
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

/// A failure to watch or reap the child, with its cause.
fn process_fail(e: ProcessError) -> RunError {
    match std::error::Error::source(&e) {
        Some(source) => fail(exit::SANDBOX, format!("{e}: {source}")),
        None => fail(exit::SANDBOX, e),
    }
}

/// Finds `program` as execvp would (PATH, unless it contains a '/').
fn resolve(program: &Path) -> Result<PathBuf, RunError> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return if program.exists() {
            Ok(program.to_path_buf())
        } else {
            Err(fail(
                exit::NOT_FOUND,
                format!("{}: no such file", program.display()),
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(fail(
        exit::NOT_FOUND,
        format!("{}: command not found in PATH", program.display()),
    ))
}

/// Opens `path` for reading only if it is a regular file, without
/// blocking (a FIFO) or acquiring a terminal: privfork is still root here.
pub(super) fn open_regular(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    f.metadata().ok()?.is_file().then_some(f)
}

/// The interpreter a script names on its `#!` line (the first word; the
/// kernel reads at most 256 bytes), if `program` is a script. It is not
/// unveiled automatically: the script, not the caller, names it. The
/// caller unveils it (`-v rx:/bin/sh`).
fn script_interpreter(program: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = Vec::with_capacity(256);
    open_regular(program)?
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
        .map_err(|e| fail(exit::BAD_PROMISE, e))?
        .violation(opts.violation);
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
    let program = program
        .canonicalize()
        .map_err(|e| fail(exit::NOT_FOUND, format!("{}: {e}", program.display())))?;
    let loaded = loader::resolve(&program).map_err(resolve_fail)?;
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
            let r = loader::resolve(&p).map_err(resolve_fail)?;
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

/// Runs the command; returns the exit code privfork should exit with.
///
/// # Errors
///
/// [`RunError`] with its exit code for every failure before the program
/// started (bad promise, unveil spec or path, user, program not found).
/// Failures in the child (privilege drop, sandbox, exec) print their
/// message there and come back as the child's exit code.
pub fn run(opts: &RunOptions) -> Result<i32, RunError> {
    let Some(program) = opts.command.first() else {
        return Err(fail(exit::NOT_FOUND, "no command given"));
    };
    let program = resolve(Path::new(program))?;
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
    // Prepared here, in privfork itself: a bad unveil or a kernel that
    // cannot enforce is reported before any fork.
    let sb = sandbox(opts, &program)?
        .prepare_exec_once()
        .map_err(|e| match e {
            SandboxError::Unveil(_) => fail(exit::BAD_UNVEIL, e),
            e => fail(exit::SANDBOX, e),
        })?;
    let log = opts.violation == Violation::Log;
    let (parent_end, child_end) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| fail(exit::SANDBOX, format!("socketpair: {e}")))?;
    let parent = rustix::process::getpid();
    let child = match sys::fork() {
        Ok(Forked::Parent(pid)) => pid,
        Ok(Forked::Child(token)) => {
            drop(parent_end);
            let code = child(
                &token,
                parent,
                identity.as_ref(),
                &sb,
                child_end,
                &program,
                opts,
            );
            sys::exit_immediately(code)
        }
        Err(e) => return Err(fail(exit::SANDBOX, format!("fork: {e:?}"))),
    };
    drop(child_end);
    // Killed and reaped if anything below returns early.
    let mut child = Child::after_fork(child).map_err(process_fail)?;
    let child_pid = child.pid();
    // The child sends the listener once sandboxed; EOF if it failed first.
    let mut buf = [0u8; 1];
    let mut cmsg = FdRecvBuffer::new(1);
    let listener = match recv_with_fds(parent_end.as_fd(), &mut buf, &mut cmsg, false) {
        Ok((_, mut fds)) if fds.len() == 1 => fds.pop(),
        _ => None,
    };
    drop(parent_end);
    if let Some(listener) = listener {
        let mut stderr = std::io::stderr();
        let out: Option<&mut dyn Write> = if log { Some(&mut stderr) } else { None };
        if let Err(e) = exec_once::supervise(listener, child_pid, out) {
            let _ = writeln!(std::io::stderr(), "privfork: supervising the program: {e}");
        }
    }
    let status = child.wait().map_err(process_fail)?;
    Ok(status.shell_code())
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
    identity: Option<&Identity>,
    sb: &PreparedSandbox,
    sock: OwnedFd,
    program: &Path,
    opts: &RunOptions,
) -> i32 {
    let say = |code: i32, msg: &dyn std::fmt::Display| {
        let _ = writeln!(std::io::stderr(), "privfork: {msg}");
        code
    };
    let drop_opts = DropOptions::new();
    // Locked memory: at most 8 MiB (stdio allows mlock; the limit the
    // caller had may be unlimited).
    let rlimits = [(rustix::process::Resource::Memlock, 8 << 20)];
    let setup = Setup {
        parent: Some(parent),
        // No fd the caller left open reaches the program (Landlock does
        // not govern fds opened before it): all above stderr close at exec.
        fds: Fds::CloseOnExec,
        isolate: true,
        rlimits: &rlimits,
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
        Err(SetupError::Sandbox(e @ SandboxError::Unveil(_))) => return say(exit::BAD_UNVEIL, &e),
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
    // Nothing to supervise (exec promised, no log): the supervisor sees EOF.
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
