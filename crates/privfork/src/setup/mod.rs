//! The one child-setup routine: every process privfork starts for someone
//! else — a fork-as child, a fork-server child, the program of `privfork
//! run`, a member of the process family — goes through [`Setup::run`], one
//! ordered, fail-closed chain of stages.
//!
//! The order is data ([`ORDER`]) and reads top to bottom, each stage taking
//! away something the ones after it no longer need:
//!
//! | stage | what | why here |
//! |---|---|---|
//! | [`SetupStep::SignalMask`] | empty signal mask, the parent's handlers reset to default | the parent's code must not run on a signal |
//! | [`SetupStep::NullFds`] | the given fds placed at 0–2 (`privfork run`'s pipes), then every inherited fd but the kept ones reaches `/dev/null` (or closes at exec, but for the listening sockets a program is handed at 3 onward) | nothing of the parent stays reachable |
//! | [`SetupStep::Environment`] | environment emptied or set | no secret of the caller's environment leaks |
//! | [`SetupStep::Session`] | `setsid`: a new session, no controlling terminal | no way back to the caller's terminal (`/dev/tty`, `TIOCSTI`) |
//! | [`SetupStep::Keyring`] | a fresh anonymous session keyring | keys of the caller's session are no longer possessed |
//! | [`SetupStep::SharedMappings`] | every inherited `MAP_SHARED` mapping removed | a shared mapping writes the parent's files and memory whatever the child's permissions |
//! | [`SetupStep::Personality`] | `PER_LINUX` | `READ_IMPLIES_EXEC` would get round `prot_exec` |
//! | [`SetupStep::Network`] | if asked (`privfork run --net none`): a new, empty network namespace, loopback up | `unshare(CLONE_NEWNET)` needs CAP_SYS_ADMIN, which the drop takes away |
//! | [`SetupStep::WorkingDir`] | `chdir("/")` | the caller's working directory would reach files the child's user cannot name |
//! | [`SetupStep::Rlimits`] | `RLIMIT_CORE` 0 and the role's limits | while the process may still raise them |
//! | [`SetupStep::NotDumpable`] | not dumpable | no core, no ptrace by the target user |
//! | [`SetupStep::BoundingSet`] | capability bounding set emptied (but what the role keeps) | needs CAP_SETPCAP, which the drop takes away |
//! | [`SetupStep::PrivDrop`] | `setgroups`, `setresgid`, `setresuid`, verified | [`crate::privdrop`] |
//! | [`SetupStep::ParentDeathSignal`] | SIGKILL when the parent dies, then `getppid()` checked | after the drop: a credential change clears it |
//! | [`SetupStep::Capabilities`] | every capability dropped but what the role keeps | the drop clears them for root only |
//! | [`SetupStep::ChangeDir`] | if asked (`privfork run --chdir`): `chdir(DIR)` | as the target user with no capability left: a directory it cannot enter is refused, not entered with root's rights |
//! | [`SetupStep::ExecCheck`] | if asked (`privfork run`): the program can be reached and executed | as the target user (the kernel's own check), before the sandbox would refuse `access` |
//! | [`SetupStep::NoNewPrivs`] | `no_new_privs` | no privilege from a setuid or file-capability program |
//! | [`SetupStep::Landlock`] | the prepared ruleset (unveil) | before seccomp, which refuses `landlock_*` |
//! | [`SetupStep::Seccomp`] | the prepared filters (pledge), on every thread | last: it refuses what the stages above need |
//!
//! A stage that fails ends the routine with [`SetupError`] naming it; the
//! caller must then not run the child's work (fork-as reports the error to
//! its parent and exits). Threads and async runtimes start only after the
//! routine (before Landlock ABI 8 a ruleset binds only the calling thread).
//!
//! A role that must keep a capability says which (`Setup::keep_caps`:
//! the fork server keeps CAP_SETUID and CAP_SETGID to drop its children,
//! and CAP_KILL to signal them); the routine keeps exactly those, in the
//! bounding set too, and nothing else. A role that keeps capabilities
//! keeps its uid (a uid change would clear them).
//!
//! The parent-death signal is sent by the kernel with the permissions of
//! the dying parent (as if the parent had called `kill`): a parent that
//! runs as another user than its child and lacks CAP_KILL never delivers
//! it. A parent of children that drop to other users keeps CAP_KILL, or
//! relies on the child seeing EOF on a channel to it as well.

mod as_user;
mod caps;
mod isolate;
mod limits;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use rustix::process::Pid;
use rustix::thread::CapabilitySet;

use crate::identity::Identity;
use crate::privdrop::{DropOptions, PrivDropError, drop_to};
use crate::sandbox::{Level, PreparedSandbox, Report, SandboxError};
use crate::sys::{self, ChildToken, Threads};

pub use as_user::ExecCheck;
pub use isolate::{Environment, Stdio};

/// A stage of the child-setup routine, in [`ORDER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum SetupStep {
    /// The signal mask emptied and the parent's handlers reset.
    SignalMask,
    /// Moving fork-as's result pipe above stderr (`fcntl(F_DUPFD_CLOEXEC)`);
    /// before the routine proper.
    MovePipe,
    /// Pointing the parent's fds at /dev/null (`dup3`), or marking them
    /// close-on-exec.
    NullFds,
    /// Emptying or setting the environment.
    Environment,
    /// `setsid()`.
    Session,
    /// `keyctl(KEYCTL_JOIN_SESSION_KEYRING)`.
    Keyring,
    /// Removing inherited shared mappings (`/proc/self/maps`, `munmap`).
    SharedMappings,
    /// `personality(PER_LINUX)`.
    Personality,
    /// `unshare(CLONE_NEWNET)` and the loopback interface brought up.
    Network,
    /// `chdir("/")`.
    WorkingDir,
    /// `setrlimit`.
    Rlimits,
    /// `prctl(PR_SET_DUMPABLE)`.
    NotDumpable,
    /// `prctl(PR_CAPBSET_DROP)`.
    BoundingSet,
    /// The privilege drop ([`crate::privdrop`]).
    PrivDrop,
    /// `prctl(PR_SET_PDEATHSIG)` and the `getppid()` check.
    ParentDeathSignal,
    /// `capset` and `prctl(PR_CAP_AMBIENT_CLEAR_ALL)`.
    Capabilities,
    /// `chdir` to the directory asked for, as the target user.
    ChangeDir,
    /// `faccessat(X_OK)` of the program and the directories on its way,
    /// as the target user.
    ExecCheck,
    /// `prctl(PR_SET_NO_NEW_PRIVS)`.
    NoNewPrivs,
    /// `landlock_restrict_self`.
    Landlock,
    /// `seccomp(SECCOMP_SET_MODE_FILTER)`.
    Seccomp,
}

impl std::fmt::Display for SetupStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::SignalMask => {
                "resetting the signal mask and handlers (rt_sigprocmask, rt_sigaction)"
            }
            Self::MovePipe => "fcntl(F_DUPFD_CLOEXEC) of the result pipe",
            Self::NullFds => "pointing the parent's fds at /dev/null",
            Self::Environment => "setting the environment",
            Self::Session => "setsid()",
            Self::Keyring => "keyctl(KEYCTL_JOIN_SESSION_KEYRING)",
            Self::SharedMappings => "removing inherited shared mappings (munmap)",
            Self::Personality => "personality(PER_LINUX)",
            Self::Network => "unshare(CLONE_NEWNET) with the loopback up",
            Self::WorkingDir => "chdir(\"/\")",
            Self::Rlimits => "setrlimit",
            Self::NotDumpable => "prctl(PR_SET_DUMPABLE)",
            Self::BoundingSet => "prctl(PR_CAPBSET_DROP)",
            Self::PrivDrop => "the privilege drop",
            Self::ParentDeathSignal => "prctl(PR_SET_PDEATHSIG)",
            Self::Capabilities => "capset",
            Self::ChangeDir => "entering the working directory (chdir)",
            Self::ExecCheck => "checking the program can be executed (faccessat)",
            Self::NoNewPrivs => "prctl(PR_SET_NO_NEW_PRIVS)",
            Self::Landlock => "landlock_restrict_self",
            Self::Seccomp => "seccomp(SECCOMP_SET_MODE_FILTER)",
        })
    }
}

/// The order of the routine's stages (see the module docs). `MovePipe`
/// is fork-as's own step before the routine.
pub const ORDER: [SetupStep; 20] = [
    SetupStep::SignalMask,
    SetupStep::NullFds,
    SetupStep::Environment,
    SetupStep::Session,
    SetupStep::Keyring,
    SetupStep::SharedMappings,
    SetupStep::Personality,
    SetupStep::Network,
    SetupStep::WorkingDir,
    SetupStep::Rlimits,
    SetupStep::NotDumpable,
    SetupStep::BoundingSet,
    SetupStep::PrivDrop,
    SetupStep::ParentDeathSignal,
    SetupStep::Capabilities,
    SetupStep::ChangeDir,
    SetupStep::ExecCheck,
    SetupStep::NoNewPrivs,
    SetupStep::Landlock,
    SetupStep::Seccomp,
];

/// Error of [`Setup::run`]: the stage that failed and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A stage failed.
    #[error("child setup: {step} failed")]
    Step {
        /// The stage.
        step: SetupStep,
        /// Its error.
        #[source]
        source: io::Error,
    },
    /// The privilege drop failed; `changed`: the credentials had started to
    /// change (the process must not go on).
    #[error("child setup: the privilege drop failed")]
    PrivDrop {
        /// The drop's error.
        #[source]
        error: PrivDropError,
        /// Whether anything had changed.
        changed: bool,
    },
    /// The parent died before the death signal was armed.
    #[error("child setup: the parent is already gone")]
    ParentGone,
    /// The sandbox failed, or was not fully enforced under
    /// [`crate::sandbox::Policy::Require`].
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A stage needs a proof that the process has one thread (the token of
    /// a child forked by privfork), and none was given.
    #[error("child setup: {step} needs a single-threaded child")]
    NeedsChild {
        /// The stage.
        step: SetupStep,
    },
}

impl SetupError {
    /// The stage that failed.
    pub fn step(&self) -> SetupStep {
        match self {
            Self::Step { step, .. } | Self::NeedsChild { step } => *step,
            Self::PrivDrop { .. } => SetupStep::PrivDrop,
            Self::ParentGone => SetupStep::ParentDeathSignal,
            Self::Sandbox(SandboxError::Unveil(_)) => SetupStep::Landlock,
            Self::Sandbox(_) => SetupStep::Seccomp,
        }
    }
}

/// What happens to the fds the process inherited.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) enum Fds<'a> {
    /// Left as they are (a process sandboxing itself).
    #[default]
    Keep,
    /// Each fd listed in `inherited`, but `keep` (and stdin, stdout and
    /// stderr unless `stdio`), is pointed at `/dev/null` with `dup3` — not
    /// closed: the child may run code that owns them (fork-as).
    Null {
        inherited: &'a sys::OpenFds,
        devnull: std::os::fd::BorrowedFd<'a>,
        keep: &'a [RawFd],
        stdio: bool,
    },
    /// The process is about to execute a program: fds 3 to
    /// `3 + passed - 1` pass through the exec (its inherited listening
    /// sockets, placed there beforehand), every fd above them is marked
    /// close-on-exec.
    CloseOnExec {
        /// How many fds from 3 on the program inherits.
        passed: u32,
    },
}

/// A resource limit a role sets: `RLIMIT_*` and its soft and hard value,
/// lowered only (a limit already below it stays).
pub(crate) type Rlimit = (rustix::process::Resource, u64);

/// The child-setup routine for one process (see the module docs).
#[derive(Debug)]
pub(crate) struct Setup<'a> {
    /// The parent's pid, saved before the fork; `None`: no parent to die
    /// with (a process sandboxing itself).
    pub(crate) parent: Option<Pid>,
    /// Fds placed at 0, 1 and 2 (`dup2`) before the others are handled
    /// (`None`: that one stays as inherited).
    pub(crate) stdio: [Option<BorrowedFd<'a>>; 3],
    pub(crate) fds: Fds<'a>,
    /// `None`: unchanged.
    pub(crate) env: Option<&'a Environment>,
    /// Session, keyring, shared mappings, personality, signal handlers.
    pub(crate) isolate: bool,
    /// `chdir("/")`: set for every child that runs as another user but
    /// `privfork run`'s program, which starts where its caller is (as
    /// sudo's does; Landlock decides what it reaches there).
    pub(crate) cwd_root: bool,
    pub(crate) rlimits: &'a [Rlimit],
    /// A new, empty network namespace (loopback up).
    pub(crate) empty_network: bool,
    /// A directory entered as the target user (`privfork run --chdir`).
    pub(crate) chdir: Option<&'a std::ffi::CStr>,
    /// The program checked as the target user (`privfork run`).
    pub(crate) exec_check: Option<&'a ExecCheck>,
    /// The user to drop to, and how.
    pub(crate) identity: Option<(&'a Identity, &'a DropOptions)>,
    /// Capabilities the role keeps (and the bounding set too).
    pub(crate) keep_caps: CapabilitySet,
    pub(crate) no_new_privs: bool,
    pub(crate) sandbox: Option<&'a PreparedSandbox>,
}

impl Default for Setup<'_> {
    /// Nothing but the stages every process gets (limits, not dumpable,
    /// capabilities): the fields say what else to do.
    fn default() -> Self {
        Self {
            parent: None,
            stdio: [None; 3],
            fds: Fds::Keep,
            env: None,
            isolate: false,
            cwd_root: false,
            rlimits: &[],
            empty_network: false,
            chdir: None,
            exec_check: None,
            identity: None,
            keep_caps: CapabilitySet::empty(),
            no_new_privs: false,
            sandbox: None,
        }
    }
}

/// What [`Setup::run`] left in place.
#[derive(Debug)]
pub(crate) struct Applied {
    /// What each layer enforced.
    pub(crate) report: Report,
    /// The seccomp listener of an exec-once sandbox, for its supervisor.
    pub(crate) listener: Option<OwnedFd>,
}

impl Setup<'_> {
    /// Keeps exactly `caps` (see the module docs).
    pub(crate) fn keep_caps(mut self, caps: CapabilitySet) -> Self {
        self.keep_caps = caps;
        self
    }

    /// Runs every stage in [`ORDER`]; stops at the first failure.
    ///
    /// `child`: the proof that the process has one thread, needed by the
    /// stages that change process-wide state with per-thread calls (fds,
    /// environment, isolation, the drop's raw set*id calls).
    ///
    /// # Errors
    ///
    /// [`SetupError`] naming the stage that failed.
    pub(crate) fn run(&self, child: Option<&ChildToken>) -> Result<Applied, SetupError> {
        debug_assert!(
            self.keep_caps.is_empty() || self.identity.is_none_or(|(id, _)| id.raw_uid().is_root()),
            "a role that keeps capabilities keeps its uid"
        );
        let mut applied = Applied {
            report: Report {
                rlimits: Level::None,
                not_dumpable: Level::None,
                capabilities: Level::None,
                no_new_privs: Level::None,
                landlock: Level::None,
                seccomp: Level::None,
                skipped: self
                    .sandbox
                    .map(PreparedSandbox::skipped)
                    .unwrap_or_default(),
            },
            listener: None,
        };
        for step in ORDER {
            self.stage(step, child, &mut applied)?;
        }
        if let Some(sb) = self.sandbox {
            sb.check_policy(&applied.report)?;
        }
        Ok(applied)
    }

    /// `dup2`s the given fds onto 0, 1 and 2 (which lose close-on-exec).
    fn place_stdio(&self) -> io::Result<()> {
        let [stdin, stdout, stderr] = self.stdio;
        if let Some(fd) = stdin {
            rustix::stdio::dup2_stdin(fd)?;
        }
        if let Some(fd) = stdout {
            rustix::stdio::dup2_stdout(fd)?;
        }
        if let Some(fd) = stderr {
            rustix::stdio::dup2_stderr(fd)?;
        }
        Ok(())
    }

    /// The fds the process inherited: kept, pointed at `/dev/null`, or
    /// closed at exec (see [`Fds`]).
    fn null_fds(&self, child: Option<&ChildToken>) -> Result<(), SetupError> {
        let step = SetupStep::NullFds;
        let fail = |source: io::Error| SetupError::Step { step, source };
        let token = || child.ok_or(SetupError::NeedsChild { step });
        match self.fds {
            Fds::Keep => {}
            Fds::Null {
                inherited,
                devnull,
                keep,
                stdio,
            } => {
                // The prepared sandbox's ruleset stays too, for the
                // Landlock stage (on the stack: no allocation here).
                let mut all = [-1; 8];
                let n = keep.len();
                if n >= all.len() {
                    return Err(fail(io::Error::other("more than 7 fds to keep")));
                }
                all[..n].copy_from_slice(keep);
                all[n] = self
                    .sandbox
                    .and_then(PreparedSandbox::ruleset_fd)
                    .unwrap_or(-1);
                sys::null_fds(token()?, inherited, devnull, &all[..=n], stdio).map_err(fail)?;
            }
            Fds::CloseOnExec { passed } => {
                sys::pass_fds_cloexec_above(token()?, passed).map_err(fail)?;
            }
        }
        Ok(())
    }

    fn stage(
        &self,
        step: SetupStep,
        child: Option<&ChildToken>,
        applied: &mut Applied,
    ) -> Result<(), SetupError> {
        let fail = |source: io::Error| SetupError::Step { step, source };
        let token = || child.ok_or(SetupError::NeedsChild { step });
        let report = &mut applied.report;
        match step {
            SetupStep::SignalMask if self.isolate => isolate::signals(token()?).map_err(fail)?,
            SetupStep::NullFds => {
                self.place_stdio().map_err(fail)?;
                self.null_fds(child)?;
            }
            SetupStep::Environment => {
                if let Some(env) = self.env {
                    isolate::environment(token()?, env);
                }
            }
            SetupStep::Session if self.isolate => isolate::session().map_err(fail)?,
            SetupStep::Keyring if self.isolate => {
                sys::join_new_session_keyring(token()?).map_err(fail)?;
            }
            SetupStep::SharedMappings if self.isolate => {
                sys::unmap_shared_mappings(token()?).map_err(fail)?;
            }
            SetupStep::Personality if self.isolate => {
                sys::reset_personality(token()?).map_err(fail)?;
            }
            SetupStep::Network => {
                if self.empty_network {
                    sys::enter_empty_network_namespace(token()?).map_err(fail)?;
                }
            }
            SetupStep::WorkingDir => {
                if self.cwd_root {
                    rustix::process::chdir(c"/").map_err(|e| fail(e.into()))?;
                }
            }
            SetupStep::Rlimits => {
                limits::set(self.rlimits).map_err(fail)?;
                report.rlimits = Level::Full;
            }
            SetupStep::NotDumpable => {
                limits::not_dumpable().map_err(fail)?;
                // execve makes the process dumpable again (for a readable
                // program): the program must set it again itself.
                report.not_dumpable = match self.sandbox {
                    Some(sb) if sb.exec_once() => Level::Partial,
                    _ => Level::Full,
                };
            }
            SetupStep::BoundingSet => {
                // With no_new_privs set later in this routine and no
                // capability kept, the bounding set cannot matter: an
                // execve under no_new_privs grants nothing (setuid bits
                // and file capabilities are ignored), and the permitted
                // set will be empty. Emptying it would cost a credential
                // commit per capability in every fork-as child (its fds
                // are pointed at /dev/null: it runs this image's code).
                // Every other process — one that keeps a capability, runs
                // without no_new_privs, sandboxes itself, or is about to
                // execute a program (whose /proc status shows the set) —
                // gets it emptied.
                let forked_function = matches!(self.fds, Fds::Null { .. });
                report.capabilities =
                    if forked_function && self.no_new_privs && self.keep_caps.is_empty() {
                        Level::Full
                    } else {
                        caps::empty_bounding_set(self.keep_caps).map_err(fail)?
                    };
            }
            SetupStep::PrivDrop => {
                if let Some((identity, opts)) = self.identity {
                    // The drop's raw set*id calls act on this thread only:
                    // code run since the token was made (a sandbox's
                    // preparation, a user look-up) must not have started
                    // another, which would keep the old ids.
                    if child.is_some() && sys::thread_count().map_err(fail)? != 1 {
                        return Err(fail(io::Error::other(
                            "a thread was started before the privilege drop",
                        )));
                    }
                    let threads = match child {
                        Some(t) => Threads::Only(t),
                        None => Threads::All,
                    };
                    drop_to(identity, opts, threads).map_err(|f| SetupError::PrivDrop {
                        error: f.error,
                        changed: f.changed,
                    })?;
                }
            }
            SetupStep::ParentDeathSignal => {
                if let Some(parent) = self.parent {
                    isolate::die_with(parent)?;
                }
            }
            SetupStep::Capabilities => {
                caps::keep_only(self.keep_caps).map_err(fail)?;
                // Partial if the bounding set could not be emptied while
                // capabilities remain that it would matter for.
                if !self.keep_caps.is_empty() {
                    report.capabilities = report.capabilities.min(Level::Partial);
                }
            }
            SetupStep::ChangeDir => {
                if let Some(dir) = self.chdir {
                    as_user::enter(dir).map_err(fail)?;
                }
            }
            SetupStep::ExecCheck => {
                if let Some(check) = self.exec_check {
                    check.check().map_err(fail)?;
                }
            }
            SetupStep::NoNewPrivs => {
                if self.no_new_privs {
                    rustix::thread::set_no_new_privs(true).map_err(|e| fail(e.into()))?;
                    report.no_new_privs = Level::Full;
                }
            }
            SetupStep::Landlock => {
                if let Some(sb) = self.sandbox {
                    report.landlock = sb.install_landlock()?;
                    // The prepared ruleset is shared with the parent and
                    // every later child: once enforced here, this process
                    // keeps no way to it (landlock_add_rule on it would
                    // widen theirs).
                    if let (Fds::Null { devnull, .. }, Some(fd)) = (self.fds, sb.ruleset_fd()) {
                        sys::null_fd(token()?, devnull, fd).map_err(fail)?;
                    }
                }
            }
            SetupStep::Seccomp => {
                if let Some(sb) = self.sandbox {
                    applied.listener = sb.install_seccomp()?;
                    report.seccomp = sb.seccomp_level();
                }
            }
            // Isolation stages of a process that isolates nothing.
            SetupStep::SignalMask
            | SetupStep::Session
            | SetupStep::Keyring
            | SetupStep::SharedMappings
            | SetupStep::Personality
            | SetupStep::MovePipe => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(step: SetupStep) -> usize {
        ORDER.iter().position(|&s| s == step).expect("in ORDER")
    }

    /// The order DESIGN.md gives, as constraints between stages: each
    /// assertion names why the first must come before the second.
    #[test]
    fn stages_run_in_the_designed_order() {
        use SetupStep::*;
        let before = |a, b, why: &str| assert!(pos(a) < pos(b), "{a:?} before {b:?}: {why}");
        // Isolation first: nothing of the parent reachable while the rest runs.
        for s in [
            NullFds,
            Environment,
            Session,
            Keyring,
            SharedMappings,
            Personality,
        ] {
            before(SignalMask, s, "no parent handler runs during setup");
            before(s, Rlimits, "isolation before any limit");
        }
        before(Rlimits, PrivDrop, "raising limits needs privilege");
        before(
            NotDumpable,
            PrivDrop,
            "no window in which the target user can ptrace",
        );
        before(BoundingSet, PrivDrop, "PR_CAPBSET_DROP needs CAP_SETPCAP");
        before(
            Network,
            PrivDrop,
            "unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN",
        );
        before(SignalMask, Network, "no parent handler runs during setup");
        for s in [ChangeDir, ExecCheck] {
            before(PrivDrop, s, "checked with the target user's rights");
            before(Capabilities, s, "no capability bypasses the check");
            before(s, Landlock, "the sandbox may refuse chdir and access");
        }
        before(
            SharedMappings,
            PrivDrop,
            "no shared page reachable as the target user",
        );
        before(
            PrivDrop,
            ParentDeathSignal,
            "a credential change clears the death signal",
        );
        before(
            PrivDrop,
            Capabilities,
            "the drop needs CAP_SETUID/CAP_SETGID",
        );
        before(
            Capabilities,
            NoNewPrivs,
            "capabilities settled before freezing them",
        );
        before(
            NoNewPrivs,
            Landlock,
            "Landlock needs no_new_privs without CAP_SYS_ADMIN",
        );
        before(Landlock, Seccomp, "seccomp refuses landlock_restrict_self");
        assert_eq!(ORDER.last(), Some(&Seccomp), "seccomp last");
        // Every stage appears once.
        for (i, s) in ORDER.iter().enumerate() {
            assert_eq!(pos(*s), i, "{s:?} appears twice");
        }
        assert!(
            !ORDER.contains(&MovePipe),
            "fork-as's own step is not the routine's"
        );
    }
}
