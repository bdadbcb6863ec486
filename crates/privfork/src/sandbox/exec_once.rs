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
//!
//! `privfork run` keeps the listener for the program's whole life, in
//! every mode ([`Supervisor::supervised`], for a sandbox from
//! [`super::Sandbox::prepare_supervised`]): there every refused call,
//! later execs included, arrives here, is named (see [`super::explain`]),
//! and is then answered as the mode says — the calling process killed, or
//! the call failed with `EPERM`. Only the first exec is ever let through;
//! with the listener closed (privfork gone), the calls it would have
//! answered fail with `ENOSYS`.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::Violation;
use super::call::Call;
use super::explain::Explainer;
use super::notify::{Notify, NotifyAnswer};
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

/// The supervisor's state: whether the one exec has been let through, and,
/// under [`Supervisor::supervised`], how refused calls are answered and
/// reported.
#[derive(Debug)]
pub struct Supervisor {
    child: u32,
    log: bool,
    exec_done: bool,
    supervised: Option<Supervised>,
}

/// A supervisor that stays for the program's whole life (`privfork run`).
#[derive(Debug)]
struct Supervised {
    explain: Explainer,
    mode: Violation,
    reports: Reports,
    /// The process privfork started (the program).
    child: u32,
    /// Whether it was killed for a refused call (kill mode).
    killed_child: bool,
    /// The program's sd_notify socket, if privfork has a `NOTIFY_SOCKET`.
    notify: Option<Notify>,
}

impl Supervisor {
    /// A supervisor for the process `child` (its pid), in log mode or not,
    /// of a sandbox from [`super::Sandbox::prepare_exec_once`].
    pub fn new(child: u32, log: bool) -> Self {
        Self {
            child,
            log,
            exec_done: false,
            supervised: None,
        }
    }

    /// A supervisor for the process `child` (its pid) of a sandbox from
    /// [`super::Sandbox::prepare_supervised`]: every refused call arrives
    /// here, and is named (see [`Supervisor::take_lines`]) and then answered
    /// as `mode` says — kill the calling process, or fail the call with
    /// `EPERM` (errno and log); in log mode the opens Landlock will refuse
    /// are named too. The listener is needed for as long as the program runs.
    pub fn supervised(child: u32, mode: Violation, explain: Explainer) -> Self {
        Self {
            child,
            log: true,
            exec_done: false,
            supervised: Some(Supervised {
                explain,
                mode,
                reports: Reports::default(),
                child,
                killed_child: false,
                notify: None,
            }),
        }
    }

    /// Gives a supervised supervisor the program's sd_notify socket: it
    /// then answers the program's sd_notify calls that its promises refuse
    /// (see [`super::notify`]), and holds the socket for the event loop
    /// ([`Supervisor::notify`]).
    pub(crate) fn with_notify(mut self, notify: Option<Notify>) -> Self {
        if let Some(s) = &mut self.supervised {
            s.notify = notify;
            if let Some(n) = &mut s.notify {
                n.set_program(s.child);
            }
        }
        self
    }

    /// The program's sd_notify socket, for the event loop.
    pub(crate) fn notify(&self) -> Option<&Notify> {
        self.supervised.as_ref().and_then(|s| s.notify.as_ref())
    }

    /// As [`Supervisor::notify`], to read it.
    pub(crate) fn notify_mut(&mut self) -> Option<&mut Notify> {
        self.supervised.as_mut().and_then(|s| s.notify.as_mut())
    }

    /// Whether this supervisor killed the program (the `child` process) for
    /// a refused call: its status then says SIGKILL, and privfork reports
    /// it as SIGSYS, what the kernel's own kill would have been.
    pub fn killed_child(&self) -> bool {
        self.supervised.as_ref().is_some_and(|s| s.killed_child)
    }

    /// The report lines produced since the last call (supervised only):
    /// each kind of refusal once, then its count at 10, 100, 1000….
    pub fn take_lines(&mut self) -> Vec<String> {
        self.supervised
            .as_mut()
            .map(|s| std::mem::take(&mut s.reports.lines))
            .unwrap_or_default()
    }

    /// The closing lines: how often each refusal seen more than once was
    /// made in all.
    pub fn summary(&mut self) -> Vec<String> {
        self.supervised
            .as_mut()
            .map(|s| {
                let mut lines = s.reports.summary();
                if let Some(n) = &s.notify {
                    lines.extend(n.summary());
                }
                lines
            })
            .unwrap_or_default()
    }

    /// Handles one notification, once `listener` polls readable: the
    /// child's first `execve` goes through; in log mode, any other call is
    /// reported to `out` and refused with `EPERM`. Returns whether the
    /// listener is still needed: not once the exec is through outside log
    /// mode (closing it makes every later exec fail with `ENOSYS`).
    ///
    /// Under [`Supervisor::supervised`], see there; `out` is not used.
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
        // The one exec: privfork's own, by the child it forked, before any
        // of the program's code ran (the child is single-threaded, so its
        // tid is its pid).
        if is_exec && !self.exec_done && n.pid == self.child {
            match sys::notif_send(listener, n.id, true, 0) {
                Ok(()) => self.exec_done = true,
                // Withdrawn (interrupted before the answer): the child's
                // exec restarts and comes back; its code has not run.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
            return Ok(self.log);
        }
        if let Some(s) = &mut self.supervised {
            s.on_call(listener, &n, self.exec_done)?;
            return Ok(true);
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

impl Supervised {
    /// One call under a supervisor that stays (see
    /// [`Supervisor::supervised`]).
    fn on_call(
        &mut self,
        listener: BorrowedFd<'_>,
        n: &sys::Notification,
        exec_done: bool,
    ) -> io::Result<()> {
        let nr = i64::from(n.nr);
        // Log mode sends every open here. Only those the held promises
        // allow — the same filters, run on the same registers (they hold
        // still while the thread waits) — go on, and Landlock still
        // decides which files open. Judged before anything is read.
        let allowed_open = self.mode == Violation::Log
            && super::seccomp::SUPERVISED_OPENS.contains(&nr)
            && self.explain.allows(nr, n.args);
        // connect comes here with a NOTIFY_SOCKET under inet or dns (see
        // `Sandbox::prepare`): allowed ones go on, but on a socket privfork
        // handed over (answered below).
        let allowed_connect = nr == libc::SYS_connect && self.explain.allows(nr, n.args);
        let Some((call, pidfd)) = Call::read(listener, n) else {
            // Gone before it could be read: dead, or interrupted before
            // privfork received it (the call did not run; a restarted call
            // comes back).
            return Ok(());
        };
        if allowed_open {
            if let Some(gap) = self.explain.landlock_refusal(&call) {
                self.reports.note(
                    format!(
                        "{} in {}: Landlock will refuse it (EACCES): {gap}",
                        call.text, call.comm
                    ),
                    format!(
                        "privfork: Landlock will refuse {} in {} (pid {}), EACCES: {gap}",
                        call.text, call.comm, call.tgid
                    ),
                );
            }
            return answer(listener, n.id, true);
        }
        // /dev/null for writing without wpath (or with O_CREAT, O_TRUNC
        // without cpath): a /dev/null of privfork's own, handed over as the
        // call's result — whatever the path names by then, the program gets
        // nothing but /dev/null.
        if let Some(flags) = self.explain.dev_null_open(&call) {
            let cloexec =
                i64::from(n.args[if nr == libc::SYS_openat { 2 } else { 1 }] as u32 as i32)
                    & i64::from(libc::O_CLOEXEC)
                    != 0
                    && nr != libc::SYS_creat;
            let null = rustix::fs::open(
                "/dev/null",
                flags | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            );
            let sent = match &null {
                Ok(null) => sys::notif_addfd_send(listener, n.id, null.as_fd(), cloexec),
                Err(e) => Err(std::io::Error::from(*e)),
            };
            return match sent {
                Ok(()) => Ok(()),
                // The thread is gone (ENOENT), or died while the fd was
                // on its way (ESRCH): nothing to answer.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => Ok(()),
                // The program's fd table full (EMFILE), privfork's own open
                // failed...: the call fails with that error, the run goes on.
                Err(e) => answer_errno(listener, n.id, e.raw_os_error().unwrap_or(libc::EIO)),
            };
        }
        // chmod by path under fattr: done here, where the unveils allow.
        if super::seccomp::SUPERVISED_CHMODS.contains(&nr) && self.explain.does_chmod() {
            let errno = self.explain.chmod_for(&call).err().unwrap_or(0);
            return match sys::notif_send(listener, n.id, false, errno) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                r => r,
            };
        }
        // listen again on a socket already listening, under accept.
        if let Some(errno) = self.explain.relisten_answer(&call, pidfd.as_ref()) {
            return match sys::notif_send(listener, n.id, false, errno) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                r => r,
            };
        }
        // set*id without `id`: success when it changes nothing, else EPERM.
        if super::seccomp::SUPERVISED_SETIDS.contains(&nr) && self.explain.does_setids() {
            let errno = self.explain.setid_answer(&call);
            return match sys::notif_send(listener, n.id, false, errno) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                r => r,
            };
        }
        // The program's sd_notify without unix: a socket that reaches
        // privfork alone, connected to nothing else.
        if let Some(notify) = &mut self.notify {
            match notify.on_call(listener, n.id, &call, pidfd.as_ref()) {
                Some(NotifyAnswer::Answered(done)) => return done,
                Some(NotifyAnswer::Refuse) => {
                    let why = format!(
                        "the socket privfork handed over for sd_notify reaches only the \
                         program's NOTIFY_SOCKET; {}",
                        self.explain.why(&call, exec_done)
                    );
                    self.reports.note(
                        format!("{} in {}: {why}", call.text, call.comm),
                        format!(
                            "privfork: refused {} in {} (pid {}); failed it with EACCES: {why}",
                            call.text, call.comm, call.tgid
                        ),
                    );
                    return answer_errno(listener, n.id, libc::EACCES);
                }
                None => {}
            }
        }
        if allowed_connect {
            return answer(listener, n.id, true);
        }
        let why = self.explain.why(&call, exec_done);
        // Kill mode: the process dies through the pidfd opened while the
        // call was pending — even if the call is withdrawn meanwhile.
        let killed = self.mode == Violation::Kill
            && pidfd.is_some_and(|fd| {
                rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL).is_ok()
            });
        if killed && call.tgid == self.child {
            self.killed_child = true;
        }
        let action = if killed {
            "killed it"
        } else {
            "failed it with EPERM"
        };
        self.reports.note(
            format!("{} in {}: {why}", call.text, call.comm),
            format!(
                "privfork: refused {} in {} (pid {}); {action}: {why}",
                call.text, call.comm, call.tgid
            ),
        );
        if killed {
            return Ok(());
        }
        // errno and log modes; kill mode if the process could not be
        // killed (gone already): the call does not run.
        answer(listener, n.id, false)
    }
}

/// The report lines, each kind of refusal once (see
/// [`Supervisor::take_lines`]). Bounded: a program repeating one refused
/// call forever, or making ever new ones, adds a line per power of ten of
/// the same one and at most [`MAX_KINDS`] kinds.
#[derive(Debug, Default)]
struct Reports {
    counts: std::collections::HashMap<String, u64>,
    /// Kinds in the order first seen, for the summary.
    order: Vec<String>,
    /// Refusals of kinds past [`MAX_KINDS`].
    hidden: u64,
    lines: Vec<String>,
}

/// The most kinds of refusal named one by one.
const MAX_KINDS: usize = 256;

impl Reports {
    fn note(&mut self, key: String, line: String) {
        if let Some(count) = self.counts.get_mut(&key) {
            *count += 1;
            let c = *count;
            if c >= 10 && c.checked_ilog10().is_some_and(|l| 10u64.pow(l) == c) {
                self.lines
                    .push(format!("privfork: again {key} ({c} times so far)"));
            }
            return;
        }
        if self.counts.len() >= MAX_KINDS {
            self.hidden += 1;
            if self.hidden == 1 {
                self.lines.push(format!(
                    "privfork: more kinds of refused calls follow; only the first {MAX_KINDS} are named"
                ));
            }
            return;
        }
        self.counts.insert(key.clone(), 1);
        self.order.push(key);
        self.lines.push(line);
    }

    fn summary(&mut self) -> Vec<String> {
        let mut out: Vec<String> = self
            .order
            .iter()
            .filter_map(|k| {
                let c = self.counts[k];
                (c > 1).then(|| format!("privfork: {c} times in all: {k}"))
            })
            .collect();
        if self.hidden > 0 {
            out.push(format!(
                "privfork: {} more refused calls of other kinds were not named",
                self.hidden
            ));
        }
        out
    }
}

/// Fails notification `id` with `errno` (a caller gone meanwhile is no
/// error).
fn answer_errno(listener: BorrowedFd<'_>, id: u64, errno: i32) -> io::Result<()> {
    match sys::notif_send(listener, id, false, errno) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

fn answer(listener: BorrowedFd<'_>, id: u64, continue_call: bool) -> io::Result<()> {
    match sys::notif_send(listener, id, continue_call, libc::EPERM) {
        // The caller died meanwhile: nothing to answer.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}
