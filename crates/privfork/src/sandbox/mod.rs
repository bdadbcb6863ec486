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
//! [`Sandbox::apply`] does, in this order, each step needing what the
//! later ones take away:
//!
//! 1. refuse if the process has more than one thread (Landlock before ABI 8
//!    restricts only the calling thread, so it must come before threads);
//! 2. prepare everything that can fail on bad input: open each unveiled
//!    path, compile the seccomp filters — nothing is restricted yet;
//! 3. resource limits: no core dumps (`RLIMIT_CORE` 0);
//! 4. not dumpable;
//! 5. capabilities: bounding set emptied (if CAP_SETPCAP allows), ambient
//!    cleared, effective/permitted/inheritable emptied;
//! 6. no_new_privs;
//! 7. Landlock (unveil);
//! 8. seccomp (pledge), last, on every thread (TSYNC).
//!
//! The report says what each layer enforced: [`Level::Full`],
//! [`Level::Partial`] or [`Level::None`]. With [`Policy::Require`], anything
//! short of full is an error (the steps already taken stay taken: the
//! process should then exit).

pub mod exec_once;
pub mod landlock;
#[cfg(target_os = "openbsd")]
pub mod openbsd;
pub mod promises;
pub mod run;
pub mod seccomp;
mod syscall_names;

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::thread::{CapabilitySet, CapabilitySets};

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
    /// Not dumpable.
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

    /// Applies the sandbox to the calling process (see the module docs for
    /// the order). Irreversible.
    ///
    /// # Errors
    ///
    /// [`SandboxError::MultiThreaded`], bad input (before anything is
    /// restricted), a failed step, or [`SandboxError::NotFullyEnforced`].
    pub fn apply(&self) -> Result<Report, SandboxError> {
        if self.violation == Some(Violation::Log) {
            return Err(SandboxError::Step {
                step: "choosing the violation mode",
                source: std::io::Error::other(
                    "log mode needs a supervisor: use apply_exec_once (privfork run --mode log)",
                ),
            });
        }
        self.apply_inner(false).map(|(r, _)| r)
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
        self.apply_inner(true)
    }

    fn apply_inner(&self, exec_once: bool) -> Result<(Report, Option<OwnedFd>), SandboxError> {
        let step = |step: &'static str| {
            move |e: rustix::io::Errno| SandboxError::Step {
                step,
                source: e.into(),
            }
        };
        // 1. One thread only.
        let threads = crate::sys::thread_count().map_err(|source| SandboxError::Step {
            step: "counting threads",
            source,
        })?;
        if threads != 1 {
            return Err(SandboxError::MultiThreaded { threads });
        }
        // 2. Everything that can fail on bad input, before any change.
        let prepared = landlock::prepare(&self.unveils, &self.bind, &self.connect)?;
        let violation = self
            .violation
            .unwrap_or(if self.promises.contains(Promise::Error) {
                Violation::Errno
            } else {
                Violation::Kill
            });
        let cx = promises::Context {
            pid: rustix::process::getpid()
                .as_raw_nonzero()
                .get()
                .unsigned_abs(),
        };
        // The allowlist goes in last: once it is installed, installing
        // another filter is itself refused.
        let mut filters = vec![seccomp::guard()];
        let soft = seccomp::soft_refusals(&self.promises, self.loader);
        if !soft.is_empty() {
            filters.push(seccomp::soft_filter(&soft));
        }
        let log = violation == Violation::Log;
        let exec_promised = self.promises.contains(Promise::Exec);
        // Exec goes to the supervisor: through its own filter, or (log
        // mode) as a refused call of the allowlist.
        let exec_filter = (exec_once && !exec_promised && !log).then(seccomp::exec_to_supervisor);
        let loader = self.loader;
        let allowlist = seccomp::allowlist(&self.promises, violation, cx, loader, &|rules| {
            if loader {
                promises::add_loader(rules);
            }
            if exec_once && !exec_promised && !log {
                for nr in [libc::SYS_execve, libc::SYS_execveat] {
                    rules.insert(nr, None);
                }
            }
        })?;
        // 3. No core dumps.
        rustix::process::setrlimit(
            rustix::process::Resource::Core,
            rustix::process::Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        )
        .map_err(step("setrlimit(RLIMIT_CORE)"))?;
        // 4. Not dumpable.
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
            .map_err(step("prctl(PR_SET_DUMPABLE)"))?;
        // 5. Capabilities.
        let capabilities = drop_capabilities()?;
        // 6. no_new_privs (also needed for seccomp without CAP_SYS_ADMIN).
        rustix::thread::set_no_new_privs(true).map_err(step("prctl(PR_SET_NO_NEW_PRIVS)"))?;
        // 7. Landlock.
        let skipped = prepared.skipped.clone();
        let landlock = landlock::enforce(prepared)?;
        // 8. seccomp, last, on every thread.
        let seccomp_err = |e: seccompiler::Error| SandboxError::Step {
            step: "seccomp(SECCOMP_SET_MODE_FILTER)",
            source: std::io::Error::other(e.to_string()),
        };
        let listener_err = |source| SandboxError::Step {
            step: "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER)",
            source,
        };
        seccomp::install(&filters).map_err(seccomp_err)?;
        // A listener filter cannot use TSYNC; the process is single-threaded
        // (checked in step 1), so per-thread is the whole process.
        let mut listener = None;
        if let Some(f) = exec_filter {
            listener = Some(crate::sys::install_filter_with_listener(&f).map_err(listener_err)?);
        }
        if log && exec_once {
            listener =
                Some(crate::sys::install_filter_with_listener(&allowlist).map_err(listener_err)?);
        } else {
            seccomp::install(std::slice::from_ref(&allowlist)).map_err(seccomp_err)?;
        }
        let report = Report {
            rlimits: Level::Full,
            // execve makes the process dumpable again (for a readable
            // program): the program must set it again itself.
            not_dumpable: if exec_once {
                Level::Partial
            } else {
                Level::Full
            },
            capabilities,
            no_new_privs: Level::Full,
            landlock,
            seccomp: Level::Full,
            skipped,
        };
        if self.policy == Policy::Require && report.overall() != Level::Full {
            return Err(SandboxError::NotFullyEnforced { report });
        }
        Ok((report, listener))
    }
}

/// Empties the capability bounding set (needs CAP_SETPCAP): call it before
/// a privilege drop takes that capability away; [`Sandbox::apply`] can then
/// report the bounding set empty. `Ok(false)`: CAP_SETPCAP is missing.
///
/// # Errors
///
/// A failed `prctl(PR_CAPBSET_DROP)` or `capget`.
pub fn drop_bounding_set() -> Result<bool, SandboxError> {
    Ok(drop_capabilities_bounding()? == Level::Full)
}

fn drop_capabilities_bounding() -> Result<Level, SandboxError> {
    let mut level = Level::Full;
    let caps = rustix::thread::capabilities(None).map_err(|e| SandboxError::Step {
        step: "capget",
        source: e.into(),
    })?;
    for bit in 0..64u32 {
        let cap = CapabilitySet::from_bits_retain(1u64 << bit);
        match rustix::thread::capability_is_in_bounding_set(cap) {
            Ok(true) => {
                if !caps.effective.contains(CapabilitySet::SETPCAP) {
                    // Without CAP_SETPCAP the bounding set stays. With an
                    // empty permitted set and no_new_privs (set by apply),
                    // it can no longer matter: capabilities come back only
                    // by executing setuid or file-capability programs.
                    if !caps.permitted.is_empty() {
                        level = Level::Partial;
                    }
                    break;
                }
                rustix::thread::remove_capability_from_bounding_set(cap).map_err(|e| {
                    SandboxError::Step {
                        step: "prctl(PR_CAPBSET_DROP)",
                        source: e.into(),
                    }
                })?;
            }
            Ok(false) => {}
            Err(_) => break, // past the last capability the kernel knows
        }
    }
    Ok(level)
}

/// Empties the bounding set (needs CAP_SETPCAP: partial without it, unless
/// it is already empty), the ambient set, and the effective, permitted and
/// inheritable sets.
fn drop_capabilities() -> Result<Level, SandboxError> {
    let level = drop_capabilities_bounding()?;
    rustix::thread::clear_ambient_capability_set().map_err(|e| SandboxError::Step {
        step: "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
        source: e.into(),
    })?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| SandboxError::Step {
        step: "capset",
        source: e.into(),
    })?;
    Ok(level)
}
