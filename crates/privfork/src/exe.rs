//! The pinned binary and spawning children from it by exec.
//!
//! Every child of the process family starts as a fresh image of the
//! program's own binary: fork and exec, never a look-up in `PATH`, never
//! the path on disk at the time of the spawn (a package update may have
//! replaced it). [`Exe::current`] opens `/proc/self/exe` once — call it
//! first thing in `main` — and every [`Spawn`] execs through that fd with
//! `execveat(fd, "", …, AT_EMPTY_PATH)`, so the child runs the image that
//! was started, even if the file has since been replaced or deleted.
//!
//! The child's role goes in argv, after argv\[0\]:
//! `["myprog", "--privfork-role", "worker", …args]` (see [`ROLE_FLAG`] and
//! [`role`]); its channel and other fds arrive at fixed numbers, taken with
//! [`crate::inherit::take_inherited_fd`].
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use privfork::exe::{Exe, Spawn};
//!
//! let exe = Exe::current()?;
//! if privfork::exe::role().as_deref() == Some("worker") {
//!     let channel = privfork::inherit::take_inherited_fd(3, privfork::inherit::FdKind::UnixStream)?;
//!     // … serve on `channel` …
//!     return Ok(());
//! }
//! let (mine, theirs) = std::os::unix::net::UnixStream::pair()?;
//! let child = Spawn::new(exe).role("worker").fd(3, theirs.as_fd()).spawn()?;
//! # let _ = (mine, child);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::process::Pid;

use crate::sys::spawn::{Prepared, SpawnFailure, Step};

/// The argv word that precedes the role name: `argv[1]`, with the role in
/// `argv[2]`.
pub const ROLE_FLAG: &str = "--privfork-role";

/// The highest fd number a [`Spawn`] may place an fd at.
pub const MAX_TARGET_FD: RawFd = 4095;

/// The role this process was spawned in: `argv[2]` when `argv[1]` is
/// [`ROLE_FLAG`], as [`Spawn::role`] puts it; `None` otherwise.
pub fn role() -> Option<String> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != ROLE_FLAG {
        return None;
    }
    args.next().map(|r| r.to_string_lossy().into_owned())
}

/// Error of [`Exe::pin`], [`Exe::current`] and [`Exe::from_path`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// The binary could not be opened or inspected.
    #[error("cannot pin the binary {path}: {source}")]
    Open {
        /// The path opened.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path names something other than a regular file.
    #[error("cannot pin {path}: not a regular file")]
    NotAFile {
        /// The path opened.
        path: PathBuf,
    },
}

/// A binary pinned by an open fd (`O_PATH | O_CLOEXEC`), to exec later
/// through that fd.
///
/// The fd keeps the file's inode: replacing the file (rename over it) or
/// deleting it does not change what a later spawn runs.
///
/// The binary must be an executable file format such as ELF, not a `#!`
/// script: the fd is close-on-exec, so a script's interpreter could not
/// open it, and the exec fails with `ENOENT` (see execveat(2)).
#[derive(Debug)]
pub struct Exe {
    fd: OwnedFd,
    path: PathBuf,
}

impl Exe {
    /// Pins the binary this process runs, by opening `/proc/self/exe`.
    ///
    /// Prefer [`Exe::current`], which pins once per process.
    ///
    /// # Errors
    ///
    /// [`PinError`] if `/proc/self/exe` cannot be opened (no `/proc`).
    pub fn pin() -> Result<Exe, PinError> {
        Self::open(Path::new("/proc/self/exe"))
    }

    /// The binary this process runs, pinned on the first call and kept for
    /// the life of the process.
    ///
    /// Call it first thing in `main`: a file replaced on disk before the
    /// first call is not the image that runs (`/proc/self/exe` then names
    /// the replaced, possibly deleted, file: the kernel still resolves it
    /// to the running image, but only as long as nobody has changed it).
    ///
    /// # Errors
    ///
    /// [`PinError`] if pinning failed; later calls return the same error.
    pub fn current() -> Result<&'static Exe, PinError> {
        static CURRENT: OnceLock<Result<Exe, (PathBuf, i32)>> = OnceLock::new();
        let pinned = CURRENT.get_or_init(|| {
            Self::pin().map_err(|e| match e {
                PinError::Open { path, source } => {
                    (path, source.raw_os_error().unwrap_or(libc::EIO))
                }
                PinError::NotAFile { path } => (path, 0),
            })
        });
        match pinned {
            Ok(exe) => Ok(exe),
            Err((path, 0)) => Err(PinError::NotAFile { path: path.clone() }),
            Err((path, errno)) => Err(PinError::Open {
                path: path.clone(),
                source: io::Error::from_raw_os_error(*errno),
            }),
        }
    }

    /// Pins the binary at `path`, opened once now.
    ///
    /// # Errors
    ///
    /// [`PinError`] if it cannot be opened or is not a regular file.
    /// Whether it can be executed is only known when a spawn tries.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Exe, PinError> {
        Self::open(path.as_ref())
    }

    fn open(path: &Path) -> Result<Exe, PinError> {
        let err = |source: rustix::io::Errno| PinError::Open {
            path: path.to_owned(),
            source: source.into(),
        };
        let fd = rustix::fs::open(
            path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(err)?;
        let st = rustix::fs::fstat(&fd).map_err(err)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(PinError::NotAFile {
                path: path.to_owned(),
            });
        }
        // For messages and the default argv[0]: where the file was when it
        // was pinned (for /proc/self/exe, the link's target).
        let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap_or_else(|_| path.to_owned());
        Ok(Exe { fd, path })
    }

    /// An fd that pins a binary already (a smooth restart's state record
    /// hands the running generation's over), with the path it was pinned
    /// at.
    pub(crate) fn from_fd(fd: OwnedFd, path: impl Into<PathBuf>) -> Exe {
        Exe {
            fd,
            path: path.into(),
        }
    }

    /// Where the binary was when it was pinned.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsFd for Exe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A child started by [`Spawn::spawn`]: its pid and a pidfd for it.
///
/// The caller waits for it (e.g. `waitid` on the pidfd); dropping this
/// neither kills nor reaps the child.
#[derive(Debug)]
#[non_exhaustive]
pub struct Spawned {
    /// The child's process id.
    pub pid: Pid,
    /// A pidfd for the child (close-on-exec), opened atomically with its
    /// creation, so it cannot name a reused pid.
    pub pidfd: OwnedFd,
}

/// The step of the spawned child that failed before or at the exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnStep {
    /// Resetting signal dispositions to their defaults.
    ResetSignals,
    /// Moving a source fd above the highest target number.
    MoveFd,
    /// Marking every unmapped fd close-on-exec.
    CloseOthers,
    /// Placing an fd at its target number.
    PlaceFd,
    /// Emptying the signal mask.
    SignalMask,
    /// The exec of the pinned binary.
    Exec,
}

impl std::fmt::Display for SpawnStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SpawnStep::ResetSignals => "resetting signal dispositions (rt_sigaction)",
            SpawnStep::MoveFd => "moving an fd above the targets (fcntl F_DUPFD_CLOEXEC)",
            SpawnStep::CloseOthers => "marking other fds close-on-exec (close_range)",
            SpawnStep::PlaceFd => "placing an fd at its number (dup3)",
            SpawnStep::SignalMask => "emptying the signal mask (rt_sigprocmask)",
            SpawnStep::Exec => "executing the pinned binary (execveat)",
        })
    }
}

/// Error of [`Spawn::spawn`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// An argument, argv\[0\] or environment entry holds a NUL byte, or an
    /// environment key is empty or holds `=`.
    #[error("invalid {what} for {exe}: {value:?}")]
    InvalidString {
        /// Which kind of string.
        what: &'static str,
        /// The offending value.
        value: OsString,
        /// The binary.
        exe: PathBuf,
    },
    /// Two fds are mapped to the same number, or a number is out of range
    /// (negative or above [`MAX_TARGET_FD`]).
    #[error("invalid fd target {target} for {exe}: {why}")]
    InvalidTarget {
        /// The number.
        target: RawFd,
        /// Why it is refused.
        why: &'static str,
        /// The binary.
        exe: PathBuf,
    },
    /// The error pipe or the clone failed in this process.
    #[error("cannot spawn {exe}: {source}")]
    Spawn {
        /// The binary.
        exe: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The child failed at `step` (before or at the exec), exited with 127
    /// and has been reaped.
    #[error("spawned child of {exe} failed {step}{}: {source}",
        target.map(|t| format!(" for fd {t}")).unwrap_or_default())]
    Child {
        /// The binary.
        exe: PathBuf,
        /// The step that failed.
        step: SpawnStep,
        /// The fd number being placed, if the step concerns one.
        target: Option<RawFd>,
        /// The errno the child got.
        source: io::Error,
    },
}

/// A spawn of a pinned binary being set up, like [`std::process::Command`]
/// but exec-only: no `PATH` look-up, fds at fixed numbers, nothing else
/// inherited.
///
/// What the child gets:
/// - argv: `[arg0, ROLE_FLAG, role, args…]` when a role is set, else
///   `[arg0, args…]`; `arg0` defaults to the pinned path.
/// - the environment of this process (read at [`Spawn::spawn`]) unless
///   [`Spawn::env_clear`] was called, with [`Spawn::env`] and
///   [`Spawn::env_remove`] applied;
/// - stdin, stdout and stderr of this process, unless an fd is mapped to
///   0, 1 or 2; every fd mapped with [`Spawn::fd`] at its number with
///   close-on-exec clear; **no other fd**, whatever its flags;
/// - every signal at its default disposition (including signals this
///   process ignores, such as `SIGPIPE` under the Rust runtime: a child
///   starts as a fresh program would), and an empty signal mask.
#[derive(Debug)]
pub struct Spawn<'a> {
    exe: &'a Exe,
    arg0: Option<OsString>,
    role: Option<OsString>,
    args: Vec<OsString>,
    env_clear: bool,
    env: Vec<(OsString, Option<OsString>)>,
    fds: Vec<(RawFd, BorrowedFd<'a>)>,
}

impl<'a> Spawn<'a> {
    /// Starts setting up a spawn of `exe`.
    pub fn new(exe: &'a Exe) -> Self {
        Self {
            exe,
            arg0: None,
            role: None,
            args: Vec::new(),
            env_clear: false,
            env: Vec::new(),
            fds: Vec::new(),
        }
    }

    /// Sets argv\[0\] (default: the path the binary was pinned at).
    pub fn arg0(&mut self, arg0: impl AsRef<OsStr>) -> &mut Self {
        self.arg0 = Some(arg0.as_ref().to_owned());
        self
    }

    /// Sets the role, passed as `ROLE_FLAG role` right after argv\[0\].
    pub fn role(&mut self, role: impl AsRef<OsStr>) -> &mut Self {
        self.role = Some(role.as_ref().to_owned());
        self
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Starts the child's environment empty instead of from this
    /// process's (variables set with [`Spawn::env`] are kept).
    pub fn env_clear(&mut self) -> &mut Self {
        self.env_clear = true;
        self.env.retain(|(_, v)| v.is_some());
        self
    }

    /// Sets a variable in the child's environment.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes a variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Places `source` at fd number `target` in the child, with
    /// close-on-exec clear. The source may be at any number, including
    /// another mapping's target.
    pub fn fd(&mut self, target: RawFd, source: BorrowedFd<'a>) -> &mut Self {
        self.fds.push((target, source));
        self
    }

    /// Starts the child and returns once it has exec'ed the binary.
    ///
    /// May be called from a multithreaded process: the child does only
    /// raw system calls before the exec. The returned pidfd is opened with
    /// the child (`clone3` with `CLONE_PIDFD`); only where `clone3` is
    /// refused (`ENOSYS`) is it opened right after, and a thread of this
    /// program reaping any child (`waitpid(-1)`) in that instant could
    /// then make it fail.
    ///
    /// # Errors
    ///
    /// [`SpawnError`]: bad strings or fd targets (nothing started), a
    /// failed pipe or clone, or the step that failed in the child with
    /// its errno (the child is reaped).
    pub fn spawn(&self) -> Result<Spawned, SpawnError> {
        let exe_path = || self.exe.path.clone();
        let cstring = |what: &'static str, value: &OsStr| {
            CString::new(value.as_bytes()).map_err(|_| SpawnError::InvalidString {
                what,
                value: value.to_owned(),
                exe: exe_path(),
            })
        };
        let mut argv = Vec::with_capacity(self.args.len() + 3);
        argv.push(cstring(
            "argv[0]",
            self.arg0.as_deref().unwrap_or(self.exe.path.as_os_str()),
        )?);
        if let Some(role) = &self.role {
            argv.push(cstring("role", OsStr::new(ROLE_FLAG))?);
            argv.push(cstring("role", role)?);
        }
        for a in &self.args {
            argv.push(cstring("argument", a)?);
        }

        let mut vars: Vec<(OsString, OsString)> = if self.env_clear {
            Vec::new()
        } else {
            std::env::vars_os().collect()
        };
        for (key, value) in &self.env {
            if key.is_empty() || key.as_bytes().contains(&b'=') {
                return Err(SpawnError::InvalidString {
                    what: "environment key",
                    value: key.clone(),
                    exe: exe_path(),
                });
            }
            vars.retain(|(k, _)| k != key);
            if let Some(v) = value {
                vars.push((key.clone(), v.clone()));
            }
        }
        let mut envp = Vec::with_capacity(vars.len());
        for (k, v) in vars {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            envp.push(cstring("environment entry", &OsString::from_vec(entry))?);
        }

        let mut map = Vec::with_capacity(self.fds.len());
        for (i, &(target, source)) in self.fds.iter().enumerate() {
            let why = if !(0..=MAX_TARGET_FD).contains(&target) {
                Some("out of range")
            } else if self.fds[..i].iter().any(|&(t, _)| t == target) {
                Some("mapped twice")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(SpawnError::InvalidTarget {
                    target,
                    why,
                    exe: exe_path(),
                });
            }
            map.push((source.as_raw_fd(), target));
        }

        let mut prep = Prepared::new(argv, envp, map);
        match crate::sys::spawn::spawn(self.exe.as_fd(), &mut prep) {
            Ok((pid, pidfd)) => Ok(Spawned { pid, pidfd }),
            Err(SpawnFailure::Pipe(source) | SpawnFailure::Clone(source)) => {
                Err(SpawnError::Spawn {
                    exe: exe_path(),
                    source,
                })
            }
            Err(SpawnFailure::Report(source)) => Err(SpawnError::Spawn {
                exe: exe_path(),
                source,
            }),
            Err(SpawnFailure::Child {
                step,
                target,
                error,
            }) => Err(SpawnError::Child {
                exe: exe_path(),
                step: match step {
                    Step::ResetSignal => SpawnStep::ResetSignals,
                    Step::MoveFd => SpawnStep::MoveFd,
                    Step::CloseOthers => SpawnStep::CloseOthers,
                    Step::PlaceFd => SpawnStep::PlaceFd,
                    Step::SignalMask => SpawnStep::SignalMask,
                    Step::Exec => SpawnStep::Exec,
                },
                target,
                source: error,
            }),
        }
    }
}
