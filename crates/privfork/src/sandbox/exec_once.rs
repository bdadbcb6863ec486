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
use std::os::fd::{AsFd, OwnedFd};

use super::promises::{promises_allowing, syscall_name};
use crate::event::{Interest, Poller};
use crate::sys;

/// Runs the supervisor on `listener` for the process `child` (its pid):
/// lets its first `execve` through; then, without `log`, closes the
/// listener and returns; with `log`, reports and refuses every later
/// notification until the child and its descendants are gone.
///
/// # Errors
///
/// A failed `poll` or `ioctl` on the listener (`ENOENT` for a notification
/// whose caller died meanwhile is not an error).
pub fn supervise(listener: OwnedFd, child: u32, mut log: Option<&mut dyn Write>) -> io::Result<()> {
    let mut exec_done = false;
    loop {
        let mut poller = Poller::<1>::new();
        poller.add(&listener, Interest::READABLE, 0);
        poller.wait(None)?;
        if !poller.readiness(0).is_some_and(|r| r.is_readable()) {
            // POLLHUP: no process uses the filter any more.
            return Ok(());
        }
        let n = match sys::notif_recv(listener.as_fd()) {
            Ok(n) => n,
            // The caller died between poll and recv.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        };
        let nr = i64::from(n.nr);
        let is_exec = nr == libc::SYS_execve || nr == libc::SYS_execveat;
        if is_exec && !exec_done && n.pid == child {
            answer(&listener, n.id, true)?;
            exec_done = true;
            if log.is_none() {
                // Closing the listener: every later exec fails with ENOSYS.
                return Ok(());
            }
            continue;
        }
        if let Some(out) = log.as_deref_mut() {
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
        answer(&listener, n.id, false)?;
    }
}

fn answer(listener: &OwnedFd, id: u64, continue_call: bool) -> io::Result<()> {
    match sys::notif_send(listener.as_fd(), id, continue_call, libc::EPERM) {
        // The caller died meanwhile: nothing to answer.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}
