//! pledge(2) and unveil(2) for Linux: seccomp-bpf, Landlock, no_new_privs,
//! capabilities and resource limits, applied in one call.
//!
//! ```no_run
//! use privfork::sandbox::Sandbox;
//!
//! let report = Sandbox::new()
//!     .promises("stdio rpath")?
//!     .unveil("r:/etc/ssl")?
//!     .apply()?;
//! println!("{report}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Order
//!
//! [`Sandbox::prepare`] does everything that can fail on bad input while
//! nothing is restricted: it opens each unveiled path, creates the
//! Landlock ruleset and compiles the seccomp filters. The result, a
//! [`PreparedSandbox`], is installed by the child-setup routine
//! (`crate::setup`, the same for every process privfork starts), whose
//! stages for it run in this order, each needing what the later ones take
//! away:
//!
//! 1. resource limits: no core dumps (`RLIMIT_CORE` 0);
//! 2. not dumpable;
//! 3. capabilities: bounding set emptied (if CAP_SETPCAP allows), ambient
//!    cleared, effective/permitted/inheritable emptied;
//! 4. no_new_privs;
//! 5. Landlock (unveil);
//! 6. seccomp (pledge), last, on every thread (TSYNC).
//!
//! [`Sandbox::apply`] prepares and installs in the calling process, which
//! must have one thread (Landlock before ABI 8 restricts only the calling
//! thread, so it must come before threads).
//!
//! The report says what each layer enforced: [`Level::Full`],
//! [`Level::Partial`] or [`Level::None`]. With [`Policy::Require`], a
//! kernel without seccomp or without every Landlock feature the sandbox
//! handles is refused by `prepare`, before anything is restricted; a layer
//! still short of full after installing (capabilities without CAP_SETPCAP)
//! is an error then too, and the process should exit.

mod allowances;
mod call;
pub mod elf;
pub mod exec_once;
pub mod explain;
pub mod landlock;
pub mod ldcache;
pub mod loader;
pub(crate) mod notify;
mod on_behalf;
#[cfg(target_os = "openbsd")]
pub mod openbsd;
pub mod promises;
pub(crate) mod reap;
mod relay;
pub mod resources;
pub mod run;
pub mod seccomp;
mod soft;
mod syscall_names;
pub(crate) mod table;

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

pub use self::landlock::{Perms, Unveil, UnveilError};
pub use self::promises::{Promise, Promises, UnknownPromise};
pub use self::seccomp::Violation;

/// How far a layer was enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Not at all (not supported by the kernel, or not permitted).
    None,
    /// Some of it.
    Partial,
    /// All of it.
    Full,
}

/// Whether less than full enforcement is acceptable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Policy {
    /// Enforce what the kernel supports and report the rest (default).
    #[default]
    BestEffort,
    /// Fail unless every layer is fully enforced.
    Require,
}

/// What [`Sandbox::apply`] enforced, layer by layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// `RLIMIT_CORE` set to 0.
    pub rlimits: Level,
    /// Not dumpable. Always [`Level::Partial`] for a process about to
    /// execute a program ([`Sandbox::apply_exec_once`]): the kernel makes it
    /// dumpable again at the exec of a readable program, so
    /// [`Policy::Require`] does not count it there.
    pub not_dumpable: Level,
    /// Capabilities dropped (partial: the bounding set could not be
    /// emptied without CAP_SETPCAP).
    pub capabilities: Level,
    /// no_new_privs set.
    pub no_new_privs: Level,
    /// Landlock.
    pub landlock: Level,
    /// seccomp.
    pub seccomp: Level,
    /// Optional unveiled paths that did not exist and were skipped.
    pub skipped: Vec<PathBuf>,
}

impl Report {
    /// The lowest level of any layer.
    pub fn overall(&self) -> Level {
        [
            self.rlimits,
            self.not_dumpable,
            self.capabilities,
            self.no_new_privs,
            self.landlock,
            self.seccomp,
        ]
        .into_iter()
        .min()
        .unwrap_or(Level::None)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rlimits {:?}, not dumpable {:?}, capabilities {:?}, no_new_privs {:?}, landlock {:?}, seccomp {:?}",
            self.rlimits,
            self.not_dumpable,
            self.capabilities,
            self.no_new_privs,
            self.landlock,
            self.seccomp
        )?;
        for p in &self.skipped {
            write!(f, "; skipped missing optional path {}", p.display())?;
        }
        Ok(())
    }
}

/// Error of building or applying a sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// A promise name is unknown.
    #[error(transparent)]
    Promise(#[from] UnknownPromise),
    /// An unveil spec or path is bad.
    #[error(transparent)]
    Unveil(#[from] UnveilError),
    /// The process has more than one thread.
    #[error(
        "cannot sandbox a process with {threads} threads: Landlock on this kernel restricts \
         only the calling thread; apply the sandbox before starting threads"
    )]
    MultiThreaded {
        /// The number of threads seen.
        threads: usize,
    },
    /// The seccomp filter could not be compiled.
    #[error(transparent)]
    Compile(#[from] seccomp::CompileError),
    /// A step failed.
    #[error("sandbox step {step} failed")]
    Step {
        /// The step.
        step: &'static str,
        /// Its error.
        #[source]
        source: std::io::Error,
    },
    /// [`Policy::Require`] and a layer was not fully enforced.
    #[error("sandbox not fully enforced ({report}); the process should exit")]
    NotFullyEnforced {
        /// What was enforced.
        report: Report,
    },
}

/// Which layers a sandbox installs. Users always get both (the default);
/// one layer alone exists for tests that prove each layer's boundary on its
/// own (a test in which one layer hides the other tests neither). Not a
/// way to weaken a sandbox silently: the missing layer is reported
/// [`Level::None`], so [`Policy::Require`] refuses it.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Layers {
    /// seccomp and Landlock.
    #[default]
    Both,
    /// The seccomp filters only: no Landlock ruleset is enforced.
    SeccompOnly,
    /// The Landlock ruleset only: no seccomp filter is installed.
    LandlockOnly,
}

/// A sandbox to apply to the calling process: promises, unveiled paths,
/// allowed TCP ports.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    promises: Promises,
    unveils: Vec<Unveil>,
    bind: Vec<u16>,
    connect: Vec<u16>,
    violation: Option<Violation>,
    policy: Policy,
    loader: bool,
    layers: Layers,
    /// `privfork run` serves the program's sd_notify sockets (see
    /// `notify`): unix sockets go to the supervisor.
    unix_to_supervisor: bool,
}

impl Sandbox {
    /// No promise, nothing unveiled: applied as is, the process could only
    /// be killed by its next system call.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the promises (space-separated names, as pledge(2) takes them).
    ///
    /// # Errors
    ///
    /// [`SandboxError::Promise`] naming an unknown promise.
    pub fn promises(mut self, text: &str) -> Result<Self, SandboxError> {
        self.promises = Promises::parse(text)?;
        Ok(self)
    }

    /// Unveils a path: `PERMS:PATH` with PERMS from `rwxc`.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Unveil`] naming the bad spec.
    pub fn unveil(mut self, spec: &str) -> Result<Self, SandboxError> {
        self.unveils.push(Unveil::parse(spec)?);
        Ok(self)
    }

    /// Unveils an already parsed path.
    pub fn unveil_path(mut self, u: Unveil) -> Self {
        self.unveils.push(u);
        self
    }

    /// Allows binding TCP `port` (everything else is refused).
    pub fn bind(mut self, port: u16) -> Self {
        self.bind.push(port);
        self
    }

    /// Allows connecting to TCP `port` (everything else is refused).
    pub fn connect(mut self, port: u16) -> Self {
        self.connect.push(port);
        self
    }

    /// Sets what a violation does (default: kill; `EPERM` if the `error`
    /// promise is given).
    pub fn violation(mut self, v: Violation) -> Self {
        self.violation = Some(v);
        self
    }

    /// Sets whether less than full enforcement is an error.
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }

    /// Installs only one layer — for tests of that layer alone (see
    /// [`Layers`]); the report names the other [`Level::None`].
    #[doc(hidden)]
    pub fn layers(mut self, layers: Layers) -> Self {
        self.layers = layers;
        self
    }

    /// The promises.
    pub fn promise_set(&self) -> &Promises {
        &self.promises
    }

    /// Lets a program about to be executed start: read-only opens (Landlock
    /// decides which files) and executable mappings of files, which the
    /// dynamic loader needs before the program's `main`. For
    /// [`Sandbox::apply_exec_once`].
    pub fn for_exec_loader(mut self) -> Self {
        self.loader = true;
        self
    }

    /// Under a supervisor that stays ([`Sandbox::prepare_supervised`])
    /// and without the `unix` promise, sends `socket(AF_UNIX, …)` to the
    /// supervisor rather than answering it `EACCES` (the soft answer):
    /// `privfork run` answers it there, handing over a socket that reaches
    /// only its sd_notify relay (see `notify`), and answers any other unix
    /// socket `EACCES` itself. Nothing more is allowed.
    pub(crate) fn unix_sockets_to_supervisor(mut self, on: bool) -> Self {
        self.unix_to_supervisor = on;
        self
    }

    /// Applies the sandbox to the calling process (see the module docs for
    /// the order). Irreversible.
    ///
    /// # Errors
    ///
    /// [`SandboxError::MultiThreaded`], bad input (before anything is
    /// restricted), a failed step, or [`SandboxError::NotFullyEnforced`].
    pub fn apply(&self) -> Result<Report, SandboxError> {
        self.prepare()?.apply_to_self().map(|(r, _)| r)
    }

    /// Applies the sandbox for a process about to execute a program, and
    /// returns a seccomp listener through which a supervisor (another
    /// process) lets exactly one `execve` through — that program's — and
    /// refuses every later one (see [`exec_once::supervise`]). Without the
    /// `exec` promise that is the only exec the program gets: Linux can only
    /// narrow permissions at exec, never reapply them after it.
    ///
    /// In [`Violation::Log`] mode the same listener also receives every
    /// refused call, for the supervisor to report. With the `exec` promise
    /// and no log mode there is nothing to supervise: no listener.
    ///
    /// # Errors
    ///
    /// As [`Sandbox::apply`].
    pub fn apply_exec_once(&self) -> Result<(Report, Option<OwnedFd>), SandboxError> {
        self.prepare_exec_once()?.apply_to_self()
    }

    /// Prepares the sandbox without applying it: opens every unveiled path,
    /// creates the Landlock ruleset and compiles the seccomp filters. What
    /// can fail on bad input (or, under [`Policy::Require`], on a kernel
    /// that lacks a layer) fails here, while nothing is restricted.
    ///
    /// The result can be installed in a child forked later (fork-as, the
    /// fork server, the process family) with system calls alone, and holds
    /// in whatever process installs it and in that process's descendants:
    /// nothing in it depends on the pid of the process that prepared it.
    ///
    /// # Errors
    ///
    /// [`SandboxError`] naming the bad input.
    pub fn prepare(&self) -> Result<PreparedSandbox, SandboxError> {
        if self.violation == Some(Violation::Log) {
            return Err(SandboxError::Step {
                step: "choosing the violation mode",
                source: std::io::Error::other(
                    "log mode needs a supervisor: use apply_exec_once (privfork run --mode log)",
                ),
            });
        }
        self.prepare_inner(Kind::Plain)
    }

    /// [`Sandbox::prepare`] for [`Sandbox::apply_exec_once`].
    ///
    /// # Errors
    ///
    /// As [`Sandbox::prepare`].
    pub fn prepare_exec_once(&self) -> Result<PreparedSandbox, SandboxError> {
        self.prepare_inner(Kind::ExecOnce)
    }

    /// [`Sandbox::prepare`] for a process about to execute a program under
    /// a supervisor that stays for the program's whole life (`privfork
    /// run`): every call the promises refuse — in every violation mode —
    /// and every `execve` goes to the listener, and the supervisor
    /// ([`exec_once::Supervisor`] with an [`explain::Explainer`]) lets the
    /// one exec through, names each refused call, and then kills the
    /// process, fails the call with `EPERM`, or logs it, as the mode says.
    /// In log mode the opens the promises allow go to the listener too,
    /// for the supervisor to report those Landlock will refuse.
    ///
    /// If the supervisor is gone (its listener closed), every call it
    /// would have answered fails with `ENOSYS`: nothing refused runs.
    ///
    /// # Errors
    ///
    /// As [`Sandbox::prepare`].
    pub fn prepare_supervised(&self) -> Result<PreparedSandbox, SandboxError> {
        self.prepare_inner(Kind::Supervised)
    }

    /// What names refused calls for a supervisor of this sandbox, as
    /// `prepared` from it (see [`Sandbox::prepare_supervised`]).
    pub fn explainer(&self, prepared: &PreparedSandbox) -> explain::Explainer {
        explain::Explainer::new(self, prepared.quiet_opens)
    }

    /// The violation mode in effect: the one set, or kill (`EPERM` under
    /// the `error` promise).
    pub fn violation_mode(&self) -> Violation {
        self.violation
            .unwrap_or(if self.promises.contains(Promise::Error) {
                Violation::Errno
            } else {
                Violation::Kill
            })
    }

    /// The seccomp programs for `promises` (this sandbox's, or others when
    /// [`explain`] asks what another set would answer): the guard, the
    /// soft refusals, the exec filter if the exec goes to a supervisor
    /// through its own filter, and the allowlist, compiled with `mismatch`
    /// as the answer to a refused call.
    fn compile(
        &self,
        promises: &Promises,
        mismatch: Violation,
        kind: Kind,
        quiet_opens: bool,
    ) -> Result<(Vec<seccompiler::BpfProgram>, seccompiler::BpfProgram), SandboxError> {
        // The allowlist goes in last: once it is installed, installing
        // another filter is itself refused.
        let mut filters = vec![seccomp::guard()];
        let mut soft = seccomp::soft_refusals(promises, self.loader, quiet_opens);
        // Under a supervisor that stays, chmod by path under fattr goes to
        // it, which does it for the program where the unveils allow (see
        // `exec_once`): not answered EPERM here.
        if kind == Kind::Supervised
            && promises.contains(Promise::Fattr)
            && !promises.contains(Promise::Unveil)
        {
            soft.retain(|s| !seccomp::SUPERVISED_CHMODS.contains(&s.nr));
        }
        // And set-id calls without `id`: answered there, success when they
        // change nothing (gunicorn's workers setuid to the uid they have).
        if kind == Kind::Supervised && !promises.contains(Promise::Id) {
            soft.retain(|s| !seccomp::SUPERVISED_SETIDS.contains(&s.nr));
        }
        // The program's sd_notify socket without unix: the supervisor
        // answers unix sockets (see `notify`). Refused by the allowlist,
        // they reach it.
        if kind == Kind::Supervised && self.unix_to_supervisor && !promises.contains(Promise::Unix)
        {
            soft.retain(|s| {
                !(s.nr == libc::SYS_socket && s.arg == Some((0, libc::AF_UNIX as u32)))
            });
        }
        if !soft.is_empty() {
            filters.push(seccomp::soft_filter(&soft));
        }
        let exec_promised = promises.contains(Promise::Exec);
        // Exec goes to the supervisor through a filter of its own only for
        // an exec-once sandbox outside log mode: in log mode, and under a
        // supervisor that stays, it is a refused call of the allowlist.
        let to_supervisor = kind == Kind::ExecOnce && !exec_promised && mismatch != Violation::Log;
        if to_supervisor {
            filters.push(seccomp::exec_to_supervisor());
        }
        let loader = self.loader;
        let allowlist = seccomp::allowlist(promises, mismatch, &soft, &|rules| {
            if loader {
                promises::add_loader(rules);
            }
            if quiet_opens {
                promises::add_quiet_opens(rules);
            }
            if to_supervisor {
                for nr in [libc::SYS_execve, libc::SYS_execveat] {
                    rules.insert(nr, None);
                }
            }
        })?;
        Ok((filters, allowlist))
    }

    /// The Landlock side of the quiet allowances: the built-in files that
    /// hold under the promises and the rights the caller's unveils keep
    /// (see `allowances`).
    fn quiet(&self) -> allowances::Quiet {
        // With the filter installed, the caller's unveils keep only the
        // rights a promise backs.
        let strip = self.layers != Layers::LandlockOnly;
        allowances::quiet(&self.promises, self.loader, strip)
    }

    fn prepare_inner(&self, kind: Kind) -> Result<PreparedSandbox, SandboxError> {
        let require = self.policy == Policy::Require;
        if require {
            seccomp::check_available()?;
        }
        // The quiet allowances (/dev/null, time zones, the files of dns,
        // getpw, ps, vminfo, tmppath) hold in every ruleset.
        let quiet = self.quiet();
        let landlock =
            landlock::prepare(&self.unveils, &quiet, &self.bind, &self.connect, require)?;
        // Opens that create nothing pass the filter and Landlock decides
        // (how /dev/null opens read-write without wpath) — only when the
        // ruleset is fully enforced, which is what then refuses every other
        // file: before ABI 3 Landlock would not refuse O_RDONLY|O_TRUNC on
        // a readable file.
        let quiet_opens = landlock.level == Level::Full && self.layers == Layers::Both;
        // tmppath's calls reach any file for the filter: only Landlock's
        // file rights keep them to /tmp. Without them, refused (but for
        // the one-layer sandboxes of the boundary tests, `Layers`).
        if self.promises.contains(Promise::Tmppath)
            && self.layers == Layers::Both
            && landlock.level != Level::Full
        {
            return Err(SandboxError::Step {
                step: "checking the tmppath promise",
                source: std::io::Error::other(
                    "tmppath needs Landlock's file rules fully enforced (this kernel lacks \
                     them): without them its calls would reach any file",
                ),
            });
        }
        let violation = self.violation_mode();
        // Under a supervisor that stays, every refused call goes to it
        // (USER_NOTIF, the Log action), whatever the mode: it enacts the
        // mode itself after naming the call.
        let mismatch = if kind == Kind::Supervised {
            Violation::Log
        } else {
            violation
        };
        let (filters, mut allowlist) = self.compile(&self.promises, mismatch, kind, quiet_opens)?;
        if kind == Kind::Supervised && violation == Violation::Log {
            allowlist = seccomp::calls_to_supervisor(&allowlist, &seccomp::SUPERVISED_OPENS);
        }
        // The program's sd_notify socket without unix, where the filter
        // allows connect (inet, dns): a connect that may name a path goes
        // to the supervisor, which answers it on a socket it handed over
        // and lets every other one through as the filter would (see
        // `notify`) — else the kernel's connect on the handed, connected
        // socket fails (EPROTOTYPE).
        if kind == Kind::Supervised
            && self.unix_to_supervisor
            && !self.promises.contains(Promise::Unix)
            && (self.promises.contains(Promise::Inet) || self.promises.contains(Promise::Dns))
        {
            allowlist = seccomp::path_connects_to_supervisor(&allowlist);
        }
        let exec_once = kind != Kind::Plain;
        let listener = match kind {
            Kind::Supervised => Listener::OnAllowlist,
            _ => listener_for(
                exec_once && !self.promises.contains(Promise::Exec) && mismatch != Violation::Log,
                mismatch == Violation::Log && exec_once,
            ),
        };
        Ok(PreparedSandbox {
            landlock,
            filters,
            allowlist,
            listener,
            exec_once,
            quiet_opens,
            policy: self.policy,
            layers: self.layers,
        })
    }
}

/// Which kind of process a sandbox is prepared for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One that applies it and runs on ([`Sandbox::prepare`]).
    Plain,
    /// One about to execute a program, its first exec let through by a
    /// supervisor that may then go ([`Sandbox::prepare_exec_once`]).
    ExecOnce,
    /// One about to execute a program under a supervisor that stays
    /// ([`Sandbox::prepare_supervised`]).
    Supervised,
}

/// Which filter gives the supervisor its listener: the exec filter (for
/// the one exec), or the allowlist (log mode: every refused call).
fn listener_for(exec_to_supervisor: bool, log: bool) -> Listener {
    match (exec_to_supervisor, log) {
        (_, true) => Listener::OnAllowlist,
        (true, false) => Listener::OnExecFilter,
        (false, false) => Listener::None,
    }
}

/// Which installed filter hands its notifications to a supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    None,
    /// The exec filter's `USER_NOTIF` answers (exec once).
    OnExecFilter,
    /// The allowlist's (log mode: every refused call, exec included).
    OnAllowlist,
}

/// A sandbox prepared by [`Sandbox::prepare`]: the Landlock ruleset (its
/// paths opened) and the seccomp programs, ready to be installed with
/// system calls alone — in the preparing process or in a child it forks.
///
/// It is installed by the child-setup routine (`crate::setup`), whose last
/// two stages are its Landlock and seccomp layers; the stages before them
/// (limits, not dumpable, capabilities, no_new_privs) are the routine's
/// own. [`PreparedSandbox::apply_to_self`] runs that routine on the calling
/// process.
#[derive(Debug)]
pub struct PreparedSandbox {
    landlock: landlock::Prepared,
    /// Installed first, on every thread (TSYNC).
    filters: Vec<seccompiler::BpfProgram>,
    /// Installed last.
    allowlist: seccompiler::BpfProgram,
    listener: Listener,
    exec_once: bool,
    /// Whether opens that create nothing pass the filter (Landlock
    /// decides).
    quiet_opens: bool,
    policy: Policy,
    layers: Layers,
}

impl PreparedSandbox {
    /// Applies the sandbox to the calling process: resource limits, not
    /// dumpable, capabilities, no_new_privs, Landlock, seccomp, in that
    /// order (the child-setup routine's stages for them); also the seccomp
    /// listener of an exec-once sandbox. Irreversible.
    ///
    /// # Errors
    ///
    /// [`SandboxError::MultiThreaded`] (Landlock before ABI 8 restricts
    /// only the calling thread), a failed step, or
    /// [`SandboxError::NotFullyEnforced`] under [`Policy::Require`].
    pub fn apply_to_self(&self) -> Result<(Report, Option<OwnedFd>), SandboxError> {
        let threads = crate::sys::thread_count().map_err(|source| SandboxError::Step {
            step: "counting threads",
            source,
        })?;
        if threads != 1 {
            return Err(SandboxError::MultiThreaded { threads });
        }
        let setup = crate::setup::Setup {
            no_new_privs: true,
            sandbox: Some(self),
            ..Default::default()
        };
        match setup.run(None) {
            Ok(applied) => Ok((applied.report, applied.listener)),
            Err(crate::setup::SetupError::Sandbox(e)) => Err(e),
            Err(e) => Err(SandboxError::Step {
                step: setup_step_name(e.step()),
                source: match e {
                    crate::setup::SetupError::Step { source, .. } => source,
                    other => std::io::Error::other(other.to_string()),
                },
            }),
        }
    }

    /// Whether this sandbox is for a process about to execute a program.
    pub(crate) fn exec_once(&self) -> bool {
        self.exec_once
    }

    /// Optional unveiled paths that did not exist.
    pub(crate) fn skipped(&self) -> Vec<PathBuf> {
        self.landlock.skipped.clone()
    }

    /// The Landlock stage: restricts the calling thread (the process must
    /// have one) with the prepared ruleset, which stays open, so the same
    /// prepared sandbox serves every child.
    pub(crate) fn install_landlock(&self) -> Result<Level, SandboxError> {
        if self.layers == Layers::SeccompOnly {
            return Ok(Level::None);
        }
        landlock::enforce(&self.landlock).map_err(|source| SandboxError::Step {
            step: "landlock_restrict_self",
            source,
        })
    }

    /// The fd the child's setup must keep open until the Landlock stage
    /// (the ruleset), if any.
    pub(crate) fn ruleset_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.landlock.ruleset.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// The seccomp stage: the filters, then the allowlist — with a listener
    /// for the supervisor if this is an exec-once sandbox that needs one.
    pub(crate) fn install_seccomp(&self) -> Result<Option<OwnedFd>, SandboxError> {
        if self.layers == Layers::LandlockOnly {
            return Ok(None);
        }
        let seccomp_err = |e: seccompiler::Error| SandboxError::Step {
            step: "seccomp(SECCOMP_SET_MODE_FILTER)",
            source: std::io::Error::other(e.to_string()),
        };
        let listener_err = |source| SandboxError::Step {
            step: "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER)",
            source,
        };
        // A listener filter cannot use TSYNC; the process is
        // single-threaded here (Setup runs before any thread starts).
        let (before, with_listener) = match self.listener {
            Listener::None => (&self.filters[..], None),
            Listener::OnExecFilter => {
                let (exec, before) = self.filters.split_last().expect("the exec filter");
                (before, Some(exec))
            }
            Listener::OnAllowlist => (&self.filters[..], Some(&self.allowlist)),
        };
        seccomp::install(before).map_err(seccomp_err)?;
        let listener = match with_listener {
            Some(f) => Some(crate::sys::install_filter_with_listener(f).map_err(listener_err)?),
            None => None,
        };
        if self.listener != Listener::OnAllowlist {
            seccomp::install(std::slice::from_ref(&self.allowlist)).map_err(seccomp_err)?;
        }
        Ok(listener)
    }

    /// What the seccomp stage enforces: full, or none for a sandbox of
    /// Landlock alone (tests only: see [`Layers`]).
    pub(crate) fn seccomp_level(&self) -> Level {
        if self.layers == Layers::LandlockOnly {
            Level::None
        } else {
            Level::Full
        }
    }

    /// Under [`Policy::Require`], anything short of full is an error —
    /// but for not dumpable in an exec-once sandbox, which no kernel keeps
    /// across the exec (see [`Report::not_dumpable`]).
    pub(crate) fn check_policy(&self, report: &Report) -> Result<(), SandboxError> {
        let mut counted = report.clone();
        if self.exec_once {
            counted.not_dumpable = Level::Full;
        }
        if self.policy == Policy::Require && counted.overall() != Level::Full {
            return Err(SandboxError::NotFullyEnforced {
                report: report.clone(),
            });
        }
        Ok(())
    }
}

/// A setup stage's name as [`SandboxError::Step`] gives it.
fn setup_step_name(step: crate::setup::SetupStep) -> &'static str {
    use crate::setup::SetupStep as S;
    match step {
        S::Rlimits => "setrlimit(RLIMIT_CORE)",
        S::NotDumpable => "prctl(PR_SET_DUMPABLE)",
        S::BoundingSet => "prctl(PR_CAPBSET_DROP)",
        S::Capabilities => "capset",
        S::NoNewPrivs => "prctl(PR_SET_NO_NEW_PRIVS)",
        S::Landlock => "landlock_restrict_self",
        _ => "seccomp(SECCOMP_SET_MODE_FILTER)",
    }
}
