//! Isolation stages: signals, environment, session, parent.

use std::ffi::OsString;
use std::io;

use rustix::process::{Pid, Signal};

use super::SetupError;
use crate::sys::{self, ChildToken};

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

/// Where the child's stdin, stdout and stderr go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stdio {
    /// `/dev/null` (the default): the child cannot read the caller's
    /// terminal or write to its logs.
    #[default]
    Null,
    /// The caller's stdin, stdout and stderr. The child is still in a
    /// session of its own, so a terminal among them is not its controlling
    /// terminal: it cannot push input into it (`TIOCSTI`) or open
    /// `/dev/tty`.
    Inherit,
}

/// The parent's handlers reset to the default action, then an empty
/// signal mask (the parent may have blocked SIGCHLD for the call) — in
/// that order, so no signal unblocked here can run a handler of the
/// parent's.
pub(super) fn signals(child: &ChildToken) -> io::Result<()> {
    sys::reset_signal_handlers(child)?;
    sys::clear_sigmask(child);
    Ok(())
}

/// Empties or sets the environment.
pub(super) fn environment(child: &ChildToken, env: &Environment) {
    match env {
        Environment::Inherit => {}
        Environment::Clear => sys::clear_env(child),
        Environment::Set(vars) => {
            sys::clear_env(child);
            for (k, v) in vars {
                sys::set_env(child, k, v);
            }
        }
    }
}

/// `setsid()`: a new session and process group, with no controlling
/// terminal — `/dev/tty` no longer opens, and `TIOCSTI` on a terminal fd
/// the child still holds is refused (it is not the child's controlling
/// terminal). A process-group leader cannot do this: a child forked for
/// the purpose never is one.
pub(super) fn session() -> io::Result<()> {
    rustix::process::setsid().map(drop).map_err(Into::into)
}

/// Arms SIGKILL for when the parent dies, then checks the parent is still
/// the one saved before the fork: if it died first, the death signal will
/// never come, and the child stops here.
pub(super) fn die_with(parent: Pid) -> Result<(), SetupError> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).map_err(|e| {
        SetupError::Step {
            step: super::SetupStep::ParentDeathSignal,
            source: e.into(),
        }
    })?;
    if rustix::process::getppid() != Some(parent) {
        return Err(SetupError::ParentGone);
    }
    Ok(())
}
