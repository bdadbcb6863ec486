//! A child process handle built on a pidfd.
//!
//! A pid is only a number: once a child is reaped, the kernel may give its
//! pid to any new process, and a `kill(pid)` or `waitpid(pid)` after that
//! hits a stranger. A pidfd names one process for as long as the fd is
//! open, so [`Child`] signals through `pidfd_send_signal` and waits through
//! `waitid(P_PIDFD)`: neither can reach a process other than the one it
//! was opened for. The handle remembers when it has reaped the child, so
//! nothing is waited for twice and nothing is signalled after the reap.
//!
//! The pidfd is readable once the child has exited, so a [`Child`] goes
//! straight into an [`event::Poller`](crate::event::Poller) next to the
//! fds the caller reads from; [`Child::try_wait`] then reaps without
//! blocking.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use privfork::process::{Child, ExitStatus};
//!
//! let cmd = std::process::Command::new("sleep").arg("10").spawn()?;
//! // Our own, unreaped child: its pid is still its own.
//! let mut child = Child::from_pid(cmd.id())?;
//! let soon = Instant::now() + Duration::from_millis(10);
//! assert_eq!(child.wait_deadline(soon)?, None);
//! child.kill()?;
//! let status = child.wait()?;
//! assert_eq!(status.to_string(), "killed by signal 9 (SIGKILL)");
//! assert!(child.kill().is_err()); // reaped: never signalled again
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Dropping
//!
//! A [`Child`] that has not been reaped is killed (SIGKILL) and reaped when
//! it is dropped: in a privilege-separated program, a child nobody watches
//! any more is a child nobody controls. The drop blocks until the kernel
//! has torn the child down, which SIGKILL makes prompt. To let a child
//! outlive its handle, take the pidfd with [`Child::into_pidfd`].
//!
//! # Reaping elsewhere
//!
//! A SIGCHLD handler that calls `waitpid(-1)`, or SIGCHLD set to `SIG_IGN`,
//! reaps children behind the handle's back; the handle then reports
//! [`ProcessError::ReapedElsewhere`] rather than a status. Block SIGCHLD
//! (as fork-as does, or with [`event::Signals`](crate::event::Signals))
//! from before the fork until the handle has the child.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions, WaitIdStatus};

pub use rustix::process::Signal;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It exited with this status (0–255).
    Exited(i32),
    /// A signal ended it.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// True if the child exited with status 0.
    #[must_use]
    pub fn success(self) -> bool {
        self == Self::Exited(0)
    }

    /// The exit status, if it exited.
    #[must_use]
    pub fn code(self) -> Option<i32> {
        match self {
            Self::Exited(code) => Some(code),
            Self::Signaled { .. } => None,
        }
    }

    /// The signal that ended it, if one did.
    #[must_use]
    pub fn signal(self) -> Option<i32> {
        match self {
            Self::Exited(_) => None,
            Self::Signaled { signal, .. } => Some(signal),
        }
    }

    /// The status as a shell reports it: the exit status, or 128 plus the
    /// signal number.
    #[must_use]
    pub fn shell_code(self) -> i32 {
        match self {
            Self::Exited(code) => code,
            Self::Signaled { signal, .. } => 128 + signal,
        }
    }

    fn from_waitid(st: &WaitIdStatus) -> Self {
        match st.terminating_signal() {
            Some(signal) => Self::Signaled {
                signal,
                core_dumped: st.dumped(),
            },
            None => Self::Exited(st.exit_status().unwrap_or(-1)),
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Exited(code) => write!(f, "exited with status {code}"),
            Self::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by signal {signal} ({})", signal_name(signal))?;
                if core_dumped {
                    f.write_str(", core dumped")?;
                }
                Ok(())
            }
        }
    }
}

/// The conventional name of a signal number, e.g. `"SIGKILL"` for 9.
#[must_use]
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => "unknown signal",
    }
}

/// Error of a [`Child`] operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// A system call on the child failed.
    #[error("{what} for child {pid} failed")]
    Sys {
        /// The call, e.g. `"pidfd_open"`.
        what: &'static str,
        /// The child's pid.
        pid: u32,
        /// Its error.
        #[source]
        source: io::Error,
    },
    /// The child has already been reaped through this handle: its pid may
    /// belong to another process by now, so it is not signalled.
    #[error("child {pid} has already been reaped; it is not signalled again")]
    AlreadyReaped {
        /// The pid it had.
        pid: u32,
    },
    /// Something else reaped the child (SIGCHLD ignored, or a handler that
    /// calls `waitpid(-1)`), so its status is lost.
    #[error("child {pid} was reaped elsewhere (is SIGCHLD ignored?)")]
    ReapedElsewhere {
        /// The pid it had.
        pid: u32,
    },
    /// The pid or pidfd does not name a child of this process.
    #[error("process {pid} is not a child of this process")]
    NotAChild {
        /// The pid.
        pid: i64,
    },
}

impl ProcessError {
    /// The failed call, for callers that report errors as `what` + source.
    #[must_use]
    pub fn what(&self) -> &'static str {
        match self {
            Self::Sys { what, .. } => what,
            Self::AlreadyReaped { .. } => "pidfd_send_signal",
            Self::ReapedElsewhere { .. } => "waitid",
            Self::NotAChild { .. } => "waitid",
        }
    }
}

impl From<ProcessError> for io::Error {
    fn from(e: ProcessError) -> Self {
        match e {
            ProcessError::Sys { source, .. } => source,
            other => io::Error::other(other.to_string()),
        }
    }
}

/// A child process, watched and signalled through its pidfd.
///
/// Killed and reaped on drop unless already reaped (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    /// Set once reaped through this handle (or found reaped elsewhere:
    /// `None` then).
    reaped: Option<Option<ExitStatus>>,
}

impl Child {
    /// Watches `pid`, a child this process forked a moment ago. Call it
    /// before anything can reap the child (SIGCHLD blocked, no other thread
    /// waiting for any child): while the child is unreaped, its pid is its
    /// own.
    ///
    /// If the pidfd cannot be opened, the child is killed and reaped by pid
    /// (still safe: it is unreaped) and the error returned.
    ///
    /// # Errors
    ///
    /// [`ProcessError::Sys`] from `pidfd_open`.
    pub(crate) fn after_fork(pid: Pid) -> Result<Self, ProcessError> {
        match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
            Ok(pidfd) => Ok(Self {
                pid,
                pidfd: Some(pidfd),
                reaped: None,
            }),
            Err(e) => {
                // Without a pidfd it cannot be watched: end it now.
                let _ = rustix::process::kill_process(pid, Signal::KILL);
                let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
                Err(sys_err("pidfd_open", pid, e))
            }
        }
    }

    /// Watches `pid`, an unreaped child of this process (e.g. from
    /// [`std::process::Child::id`] before anything waited for it).
    ///
    /// The handle checks that the pidfd names a child of this process; a
    /// pid whose child was already reaped, and then reused by an unrelated
    /// process, is refused. (A pid reused by *another* child of ours cannot
    /// be told apart: open the handle before anything can reap the child.)
    ///
    /// # Errors
    ///
    /// [`ProcessError::Sys`] from `pidfd_open` (`ESRCH`: no such process),
    /// [`ProcessError::NotAChild`].
    pub fn from_pid(pid: u32) -> Result<Self, ProcessError> {
        let not_child = ProcessError::NotAChild { pid: pid.into() };
        let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            return Err(not_child);
        };
        let pidfd = rustix::process::pidfd_open(raw, PidfdFlags::empty())
            .map_err(|e| sys_err("pidfd_open", raw, e))?;
        Self::checked(raw, pidfd)
    }

    /// Watches the process `pidfd` refers to, which must be an unreaped
    /// child of this process.
    ///
    /// # Errors
    ///
    /// [`ProcessError::Sys`] if its pid cannot be read
    /// (`/proc/self/fdinfo`), [`ProcessError::NotAChild`] if it is not our
    /// child or has already been reaped.
    pub fn from_pidfd(pidfd: OwnedFd) -> Result<Self, ProcessError> {
        let pid = pidfd_pid(pidfd.as_fd())?;
        let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            return Err(ProcessError::NotAChild { pid });
        };
        Self::checked(raw, pidfd)
    }

    /// Checks (without reaping) that `pidfd` names a child of ours.
    fn checked(pid: Pid, pidfd: OwnedFd) -> Result<Self, ProcessError> {
        let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        match waitid(pidfd.as_fd(), opts) {
            Ok(_) => Ok(Self {
                pid,
                pidfd: Some(pidfd),
                reaped: None,
            }),
            Err(Errno::CHILD) => Err(ProcessError::NotAChild {
                pid: pid.as_raw_nonzero().get().into(),
            }),
            Err(e) => Err(sys_err("waitid", pid, e)),
        }
    }

    /// The child's pid. After the child is reaped, the number may belong to
    /// another process: use it for messages, never to signal or wait.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid.as_raw_nonzero().get().unsigned_abs()
    }

    /// True once the child has been reaped (or found reaped elsewhere).
    #[must_use]
    pub fn is_reaped(&self) -> bool {
        self.reaped.is_some()
    }

    /// The child's pidfd (see [`AsFd`]).
    fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd
            .as_ref()
            .expect("the pidfd is only taken by into_pidfd, which consumes the handle")
            .as_fd()
    }

    /// `pidfd_send_signal(pidfd, signal)`—Sends `signal` to the child.
    ///
    /// Through the pidfd, so a pid reused after the child was reaped
    /// elsewhere is never hit (the call fails with `ESRCH`). A child that
    /// has exited but is not reaped yet takes the signal without effect.
    ///
    /// # Errors
    ///
    /// [`ProcessError::AlreadyReaped`] once this handle has reaped it;
    /// [`ProcessError::Sys`] from the call.
    pub fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        if self.reaped.is_some() {
            return Err(ProcessError::AlreadyReaped { pid: self.pid() });
        }
        rustix::process::pidfd_send_signal(self.pidfd(), signal)
            .map_err(|e| sys_err("pidfd_send_signal", self.pid, e))
    }

    /// Sends SIGKILL (see [`Child::signal`]).
    ///
    /// # Errors
    ///
    /// As [`Child::signal`].
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.signal(Signal::KILL)
    }

    /// Reaps the child if it has exited, without blocking; `Ok(None)` while
    /// it runs. Once reaped, returns the same status again.
    ///
    /// # Errors
    ///
    /// [`ProcessError::ReapedElsewhere`] if something else reaped it;
    /// [`ProcessError::Sys`] from `waitid`.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        self.reap(WaitIdOptions::EXITED | WaitIdOptions::NOHANG)
    }

    /// Waits for the child to exit and reaps it. Once reaped, returns the
    /// same status again.
    ///
    /// # Errors
    ///
    /// As [`Child::try_wait`].
    pub fn wait(&mut self) -> Result<ExitStatus, ProcessError> {
        match self.reap(WaitIdOptions::EXITED)? {
            Some(status) => Ok(status),
            // A blocking waitid returns a status or an error.
            None => Err(self.reaped_elsewhere()),
        }
    }

    /// Waits for the child to exit until `deadline`, and reaps it;
    /// `Ok(None)` if it still runs then (it is left running: kill it, or
    /// wait again).
    ///
    /// # Errors
    ///
    /// As [`Child::try_wait`], and [`ProcessError::Sys`] from `poll`.
    pub fn wait_deadline(&mut self, deadline: Instant) -> Result<Option<ExitStatus>, ProcessError> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            let ready = crate::event::wait_fd(
                self.pidfd(),
                crate::event::Interest::READABLE,
                Some(deadline),
            )
            .map_err(|e| ProcessError::Sys {
                what: "poll",
                pid: self.pid(),
                source: e,
            })?;
            if !ready {
                return self.try_wait();
            }
        }
    }

    /// Kills the child and reaps it, unless it is reaped already; returns
    /// how it ended (usually SIGKILL, unless it exited first).
    ///
    /// # Errors
    ///
    /// As [`Child::wait`].
    pub fn kill_and_wait(&mut self) -> Result<ExitStatus, ProcessError> {
        if self.reaped.is_none() {
            // Any error (it exited meanwhile) leaves the wait to report.
            let _ = self.kill();
        }
        self.wait()
    }

    /// Gives up the handle without killing or reaping the child and returns
    /// its pidfd; the caller reaps it (`waitid(P_PIDFD)`) or lets it be.
    #[must_use]
    pub fn into_pidfd(mut self) -> OwnedFd {
        self.reaped = Some(None); // nothing left for the drop to do
        self.pidfd
            .take()
            .expect("the pidfd is only taken here, which consumes the handle")
    }

    fn reap(&mut self, opts: WaitIdOptions) -> Result<Option<ExitStatus>, ProcessError> {
        match self.reaped {
            Some(Some(status)) => return Ok(Some(status)),
            Some(None) => return Err(self.reaped_elsewhere()),
            None => {}
        }
        match waitid(self.pidfd(), opts) {
            Ok(Some(st)) => {
                let status = ExitStatus::from_waitid(&st);
                self.reaped = Some(Some(status));
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(Errno::CHILD) => {
                // There is nothing left to reap.
                self.reaped = Some(None);
                Err(self.reaped_elsewhere())
            }
            Err(e) => Err(sys_err("waitid", self.pid, e)),
        }
    }

    fn reaped_elsewhere(&self) -> ProcessError {
        ProcessError::ReapedElsewhere { pid: self.pid() }
    }
}

impl AsFd for Child {
    /// The pidfd: readable once the child has exited (poll it, then
    /// [`Child::try_wait`]).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let _ = self.kill_and_wait();
        }
    }
}

/// `waitid(P_PIDFD, pidfd, opts)`, retried on `EINTR`.
fn waitid(pidfd: BorrowedFd<'_>, opts: WaitIdOptions) -> rustix::io::Result<Option<WaitIdStatus>> {
    loop {
        match rustix::process::waitid(WaitId::PidFd(pidfd), opts) {
            Err(Errno::INTR) => {}
            r => return r,
        }
    }
}

fn sys_err(what: &'static str, pid: Pid, e: Errno) -> ProcessError {
    ProcessError::Sys {
        what,
        pid: pid.as_raw_nonzero().get().unsigned_abs(),
        source: e.into(),
    }
}

/// The pid a pidfd refers to, from the `Pid:` line of its fdinfo: `-1`
/// once the process has been reaped, `0` if it is outside our pid
/// namespace.
fn pidfd_pid(pidfd: BorrowedFd<'_>) -> Result<i64, ProcessError> {
    let path = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
    let err = |source| ProcessError::Sys {
        what: "reading /proc/self/fdinfo",
        pid: 0,
        source,
    };
    let text = std::fs::read_to_string(path).map_err(err)?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| err(io::Error::other("not a pidfd (no Pid: line in its fdinfo)")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[allow(
        clippy::zombie_processes,
        reason = "the privfork handle waits for it, through its pidfd"
    )]
    fn spawn(cmd: &str, args: &[&str]) -> Child {
        let c = std::process::Command::new(cmd).args(args).spawn().unwrap();
        Child::from_pid(c.id()).unwrap()
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn exit_code_is_reported_once_and_kept() {
        let mut c = spawn("sh", &["-c", "exit 7"]);
        let st = c.wait_deadline(soon(10_000)).unwrap().expect("sh exits");
        assert_eq!(st, ExitStatus::Exited(7));
        assert_eq!(st.code(), Some(7));
        assert_eq!(st.to_string(), "exited with status 7");
        assert!(c.is_reaped());
        // Asked again: the same status, no second waitid.
        assert_eq!(c.try_wait().unwrap(), Some(st));
        assert_eq!(c.wait().unwrap(), st);
    }

    #[test]
    fn signal_names_in_status() {
        let mut c = spawn("sh", &["-c", "kill -TERM $$"]);
        let st = c.wait_deadline(soon(10_000)).unwrap().expect("sh exits");
        assert_eq!(st.signal(), Some(libc::SIGTERM));
        assert_eq!(st.shell_code(), 128 + 15);
        assert_eq!(st.to_string(), "killed by signal 15 (SIGTERM)");
        let dumped = ExitStatus::Signaled {
            signal: libc::SIGSEGV,
            core_dumped: true,
        };
        assert_eq!(
            dumped.to_string(),
            "killed by signal 11 (SIGSEGV), core dumped"
        );
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(1000), "unknown signal");
    }

    #[test]
    fn deadline_passes_and_the_child_stays_killable() {
        let mut c = spawn("sleep", &["30"]);
        let start = Instant::now();
        assert_eq!(c.wait_deadline(soon(50)).unwrap(), None);
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(!c.is_reaped());
        c.kill().unwrap();
        let st = c.wait_deadline(soon(10_000)).unwrap().expect("killed");
        assert_eq!(
            st,
            ExitStatus::Signaled {
                signal: libc::SIGKILL,
                core_dumped: false
            }
        );
        assert_eq!(st.to_string(), "killed by signal 9 (SIGKILL)");
    }

    #[test]
    fn a_reaped_child_is_never_signalled() {
        let mut c = spawn("true", &[]);
        c.wait().unwrap();
        assert!(matches!(
            c.signal(Signal::TERM),
            Err(ProcessError::AlreadyReaped { .. })
        ));
        assert!(matches!(c.kill(), Err(ProcessError::AlreadyReaped { .. })));
    }

    #[test]
    #[allow(
        clippy::zombie_processes,
        reason = "reaped below by pid, behind the handle's back"
    )]
    fn the_pidfd_never_reaches_a_reused_pid() {
        // Reaped behind the handle's back, by pid: the pidfd now names a
        // process that is gone, whatever runs under the number.
        let cmd = std::process::Command::new("true").spawn().unwrap();
        let mut c = Child::from_pid(cmd.id()).unwrap();
        let pid = Pid::from_raw(cmd.id() as i32).unwrap();
        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()).unwrap();
        match c.signal(Signal::TERM) {
            Err(ProcessError::Sys { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ESRCH));
            }
            other => panic!("signal after a reap elsewhere: {other:?}"),
        }
        assert!(matches!(
            c.try_wait(),
            Err(ProcessError::ReapedElsewhere { .. })
        ));
        assert!(c.is_reaped());
        assert!(matches!(c.kill(), Err(ProcessError::AlreadyReaped { .. })));
    }

    #[test]
    fn drop_kills_and_reaps() {
        let c = spawn("sleep", &["30"]);
        let pidfd = rustix::io::fcntl_dupfd_cloexec(&c, 3).unwrap();
        drop(c);
        // Reaped: the pid is gone, and waitid on the pidfd finds no child.
        assert_eq!(
            rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED)
                .unwrap_err(),
            Errno::CHILD
        );
    }

    #[test]
    fn from_pidfd_and_into_pidfd_round_trip() {
        let c = spawn("sleep", &["30"]);
        let pid = c.pid();
        let mut c = Child::from_pidfd(c.into_pidfd()).unwrap();
        assert_eq!(c.pid(), pid);
        assert_eq!(c.kill_and_wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn not_our_child_is_refused() {
        assert!(matches!(
            Child::from_pid(1),
            Err(ProcessError::NotAChild { pid: 1 })
        ));
    }
}
