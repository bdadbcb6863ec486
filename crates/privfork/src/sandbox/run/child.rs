//! The child `privfork run` forks: the one child-setup routine with the
//! prepared sandbox, the seccomp listener handed to privfork, then the
//! exec of the program.

use super::*;

/// What the child sets up and executes.
pub(super) struct Launch<'a> {
    pub(super) identity: Option<&'a Identity>,
    pub(super) sb: &'a PreparedSandbox,
    pub(super) stdio: &'a relay::ChildStdio,
    pub(super) program: &'a Path,
    pub(super) env: &'a crate::setup::Environment,
    pub(super) exec_check: &'a crate::setup::ExecCheck,
    pub(super) chdir: Option<&'a std::ffi::CStr>,
    pub(super) rlimits: &'a [crate::setup::Rlimit],
    /// How many listening sockets sit at fds 3 onward, for the program.
    pub(super) listeners: u32,
    pub(super) opts: &'a RunOptions,
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
pub(super) fn child(
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
        listeners,
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
        // not govern fds opened before it): all above stderr close at exec
        // but the listeners privfork placed at 3 onward.
        fds: Fds::CloseOnExec { passed: listeners },
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
        if level != crate::sandbox::Level::Full {
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
    let mut command = std::process::Command::new(program);
    command.arg0(&opts.command[0]).args(&opts.command[1..]);
    if listeners > 0 {
        // The program's own pid: this process's, which exec keeps.
        command.env("LISTEN_PID", std::process::id().to_string());
    }
    let err = command.exec();
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
