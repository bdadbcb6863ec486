//! Letting a sandboxed process execute exactly one program.
//!
//! seccomp cannot count, and Linux offers no "pledge after exec": a filter
//! that allows `execve` allows it forever, and one that refuses it also
//! refuses the exec of the program we mean to start. The sound way on this
//! kernel: the sandbox sends `execve` to a *supervisor* through a seccomp
//! user-notification listener (`SECCOMP_RET_USER_NOTIF`). The supervisor, a
//! separate process, answers the first `execve` with
//! `SECCOMP_USER_NOTIF_FLAG_CONTINUE` — the kernel then runs it as if no
//! filter had been there — and closes the listener. With the listener
//! closed, every later `execve` fails with `ENOSYS`. The first exec is
//! privfork's own, made before any of the program's code runs, by a
//! single-threaded process: nothing untrusted can race for it.
//!
//! In log mode the listener stays open: every refused call arrives there,
//! and the supervisor names it and the promise that would allow it, then
//! fails it with `EPERM`.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::promises::{promises_allowing, syscall_name};
use crate::event::{Interest, Poller};
use crate::sys;

/// Runs the supervisor on `listener` for the process `child` (its pid):
/// lets its first `execve` through; then, without `log`, closes the
/// listener and returns; with `log`, reports and refuses every later
/// notification until no process uses the filter any more.
///
/// `privfork run` does not use this loop but [`Supervisor`] in its own
/// event loop, so that it returns once the program's processes are gone.
///
/// # Errors
///
/// As [`Supervisor::on_readable`].
pub fn supervise(listener: OwnedFd, child: u32, mut log: Option<&mut dyn Write>) -> io::Result<()> {
    let mut sup = Supervisor::new(child, log.is_some());
    loop {
        let mut poller = Poller::<1>::new();
        poller.add(&listener, Interest::READABLE, 0);
        poller.wait(None)?;
        if !poller.readiness(0).is_some_and(|r| r.is_readable()) {
            // POLLHUP: no process uses the filter any more.
            return Ok(());
        }
        if !sup.on_readable(listener.as_fd(), log.as_deref_mut())? {
            return Ok(());
        }
    }
}

/// The supervisor's state: whether the one exec has been let through.
#[derive(Debug)]
pub struct Supervisor {
    child: u32,
    log: bool,
    exec_done: bool,
}

impl Supervisor {
    /// A supervisor for the process `child` (its pid), in log mode or not.
    pub fn new(child: u32, log: bool) -> Self {
        Self {
            child,
            log,
            exec_done: false,
        }
    }

    /// Handles one notification, once `listener` polls readable: the
    /// child's first `execve` goes through; in log mode, any other call is
    /// reported to `out` and refused with `EPERM`. Returns whether the
    /// listener is still needed: not once the exec is through outside log
    /// mode (closing it makes every later exec fail with `ENOSYS`).
    ///
    /// # Errors
    ///
    /// A failed `ioctl` on the listener (`ENOENT` for a notification
    /// whose caller died meanwhile is not an error).
    pub fn on_readable(
        &mut self,
        listener: BorrowedFd<'_>,
        out: Option<&mut (dyn Write + '_)>,
    ) -> io::Result<bool> {
        let n = match sys::notif_recv(listener) {
            Ok(n) => n,
            // The caller died between poll and recv.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(true),
            Err(e) => return Err(e),
        };
        let nr = i64::from(n.nr);
        let is_exec = nr == libc::SYS_execve || nr == libc::SYS_execveat;
        if is_exec && !self.exec_done && n.pid == self.child {
            answer(listener, n.id, true)?;
            self.exec_done = true;
            return Ok(self.log);
        }
        if let Some(out) = out {
            let name = syscall_name(nr).unwrap_or("?");
            let allowing: Vec<&str> = promises_allowing(nr).iter().map(|p| p.name()).collect();
            let hint = match (is_exec, allowing.is_empty()) {
                (true, _) => "a second exec: allowed only with the exec promise".to_owned(),
                (false, true) => "no promise allows it".to_owned(),
                (false, false) => format!("would be allowed by: {}", allowing.join(", ")),
            };
            let _ = writeln!(
                out,
                "privfork: pid {}: {name} (syscall {nr}) refused; {hint}",
                n.pid
            );
        }
        answer(listener, n.id, false)?;
        Ok(true)
    }
}

fn answer(listener: BorrowedFd<'_>, id: u64, continue_call: bool) -> io::Result<()> {
    match sys::notif_send(listener, id, continue_call, libc::EPERM) {
        // The caller died meanwhile: nothing to answer.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}
