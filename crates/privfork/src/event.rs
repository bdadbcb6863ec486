//! One small event loop: wait on fds, pidfds and a signalfd until one is
//! ready or a deadline passes.
//!
//! Every part of privfork that waits goes through here: fork-as's parent
//! (result pipe + child pidfd), the fork server (its channel + every
//! child), the IPC client's timeouts, `privfork run`'s supervisor, and the
//! process family's main once it lands (channels, pidfds, [`Signals`]). It
//! is `poll(2)`, which needs no kernel
//! object of its own and no registration that outlives the call: a
//! [`Poller`] is built on the stack for each wait, from the fds that matter
//! at that moment, and asks nothing of the heap for up to `N` fds (fork-as's
//! parent avoids writing heap pages while its child lives: each would be a
//! copy-on-write fault).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use privfork::event::{Interest, Poller};
//!
//! let (r, w) = rustix::pipe::pipe()?;
//! rustix::io::write(&w, b"x")?;
//! let mut poller = Poller::<2>::new();
//! poller.add(&r, Interest::READABLE, 7);
//! poller.add(&w, Interest::WRITABLE, 8);
//! let deadline = Instant::now() + Duration::from_secs(1);
//! assert_eq!(poller.wait(Some(deadline))?, 2);
//! let ready: Vec<usize> = poller.ready().map(|(token, _)| token).collect();
//! assert_eq!(ready, [7, 8]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Deadlines are [`Instant`]s, not durations, so that a wait interrupted by
//! a signal (`EINTR`, retried) or woken early by poll's rounding of its
//! timeout (re-checked against the clock) never waits longer or shorter in
//! total.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::sys;

/// What to wait for on an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest(PollFlags);

impl Interest {
    /// Input to read, or end of file (a pidfd: the child has exited; a
    /// signalfd: a signal is pending).
    pub const READABLE: Self = Self(PollFlags::IN);
    /// Room to write.
    pub const WRITABLE: Self = Self(PollFlags::OUT);
    /// Either.
    pub const BOTH: Self = Self(PollFlags::IN.union(PollFlags::OUT));
}

/// What `poll` reported for a ready fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness(PollFlags);

impl Readiness {
    /// There is input (`POLLIN`).
    #[must_use]
    pub fn is_readable(self) -> bool {
        self.0.contains(PollFlags::IN)
    }

    /// There is room to write (`POLLOUT`).
    #[must_use]
    pub fn is_writable(self) -> bool {
        self.0.contains(PollFlags::OUT)
    }

    /// The peer hung up (`POLLHUP`); reads drain what is left, then see
    /// end of file.
    #[must_use]
    pub fn is_hangup(self) -> bool {
        self.0.contains(PollFlags::HUP)
    }

    /// An error condition (`POLLERR`), or the fd is not open (`POLLNVAL`).
    #[must_use]
    pub fn is_error(self) -> bool {
        self.0.intersects(PollFlags::ERR | PollFlags::NVAL)
    }
}

/// The fds of one wait, each with a caller-chosen token; up to `N` of them
/// are held inline (no allocation), more spill to the heap.
///
/// Build one per wait: it borrows the fds it watches.
pub struct Poller<'fd, const N: usize = 4> {
    /// Filled up to `len`; the slots after that repeat the first entry
    /// (so that no `unsafe` is needed for uninitialised slots) and are
    /// never passed to `poll`.
    inline: Option<[PollFd<'fd>; N]>,
    inline_tokens: [usize; N],
    /// Used instead of `inline` once more than `N` fds were added.
    heap_fds: Vec<PollFd<'fd>>,
    heap_tokens: Vec<usize>,
    len: usize,
}

impl<const N: usize> std::fmt::Debug for Poller<'_, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("len", &self.len)
            .field("tokens", &self.tokens())
            .finish()
    }
}

impl<const N: usize> Default for Poller<'_, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'fd, const N: usize> Poller<'fd, N> {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inline: None,
            inline_tokens: [0; N],
            heap_fds: Vec::new(),
            heap_tokens: Vec::new(),
            len: 0,
        }
    }

    /// Watches `fd` for `interest`, reported under `token`.
    pub fn add<Fd: AsFd>(&mut self, fd: &'fd Fd, interest: Interest, token: usize) {
        self.add_fd(fd.as_fd(), interest, token);
    }

    /// As [`Poller::add`], for a borrowed fd.
    pub fn add_fd(&mut self, fd: BorrowedFd<'fd>, interest: Interest, token: usize) {
        let entry = PollFd::from_borrowed_fd(fd, interest.0);
        if self.len < N && self.heap_fds.is_empty() {
            match &mut self.inline {
                None => self.inline = Some(std::array::from_fn(|_| entry.clone())),
                Some(fds) => fds[self.len] = entry,
            }
            self.inline_tokens[self.len] = token;
        } else {
            if self.heap_fds.is_empty() {
                // Spill: the inline entries move to the heap, in order.
                let fds = self.inline.take().into_iter().flatten().take(self.len);
                self.heap_fds.extend(fds);
                self.heap_tokens
                    .extend_from_slice(&self.inline_tokens[..self.len]);
            }
            self.heap_fds.push(entry);
            self.heap_tokens.push(token);
        }
        self.len += 1;
    }

    /// How many fds are watched.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no fd is watched (a wait then only sleeps until the
    /// deadline).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn fds(&self) -> &[PollFd<'fd>] {
        if !self.heap_fds.is_empty() {
            return &self.heap_fds;
        }
        match &self.inline {
            Some(fds) => &fds[..self.len],
            None => &[],
        }
    }

    fn fds_mut(&mut self) -> &mut [PollFd<'fd>] {
        if !self.heap_fds.is_empty() {
            return &mut self.heap_fds;
        }
        match &mut self.inline {
            Some(fds) => &mut fds[..self.len],
            None => &mut [],
        }
    }

    fn tokens(&self) -> &[usize] {
        if self.heap_fds.is_empty() {
            &self.inline_tokens[..self.len]
        } else {
            &self.heap_tokens
        }
    }

    /// `poll(2)`—Waits until a watched fd is ready or `deadline` (if any)
    /// passes, and returns how many are ready: 0 only when the deadline has
    /// passed. `EINTR` is retried, and a timeout that poll rounded short is
    /// waited out, against the same deadline. A deadline already past still
    /// looks once, without waiting: a loop whose deadline has gone by must
    /// not stop seeing its fds.
    ///
    /// # Errors
    ///
    /// The error of `poll` (`ENOMEM`, or `EINVAL` for too many fds);
    /// `InvalidInput` with no fd and no deadline (that wait would never
    /// end).
    pub fn wait(&mut self, deadline: Option<Instant>) -> io::Result<usize> {
        if self.is_empty() && deadline.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a wait with no fd and no deadline would never end",
            ));
        }
        let fds = self.fds_mut();
        for fd in fds.iter_mut() {
            fd.clear_revents();
        }
        let mut looked = false;
        loop {
            let timeout = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() && looked {
                        return Ok(0);
                    }
                    Some(Timespec::try_from(left).unwrap_or(Timespec {
                        tv_sec: i64::MAX,
                        tv_nsec: 0,
                    }))
                }
            };
            looked = true;
            if fds.is_empty() && timeout.is_some_and(|t| t.tv_sec == 0 && t.tv_nsec == 0) {
                return Ok(0);
            }
            match rustix::event::poll(fds, timeout.as_ref()) {
                Ok(0) => {} // re-check the clock: poll may round down
                Ok(n) => return Ok(n),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The tokens of the fds the last [`Poller::wait`] found ready, with
    /// what it found, in the order they were added.
    pub fn ready(&self) -> impl Iterator<Item = (usize, Readiness)> + '_ {
        self.fds()
            .iter()
            .zip(self.tokens())
            .filter(|(fd, _)| !fd.revents().is_empty())
            .map(|(fd, &token)| (token, Readiness(fd.revents())))
    }

    /// What the last [`Poller::wait`] found for `token` (the first fd added
    /// under it); `None` if not ready.
    #[must_use]
    pub fn readiness(&self, token: usize) -> Option<Readiness> {
        self.ready().find(|&(t, _)| t == token).map(|(_, r)| r)
    }
}

/// Waits until `fd` is ready for `interest` or `deadline` (if any) passes;
/// `Ok(false)` when it passed. See [`Poller::wait`].
///
/// # Errors
///
/// The error of `poll`.
pub fn wait_fd(
    fd: BorrowedFd<'_>,
    interest: Interest,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let mut poller = Poller::<1>::new();
    poller.add_fd(fd, interest, 0);
    Ok(poller.wait(deadline)? > 0)
}

/// A signal read from [`Signals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalInfo {
    /// The signal number.
    pub signal: i32,
    /// The pid of the sender (for SIGCHLD: of the child), 0 if the kernel
    /// sent it.
    pub pid: u32,
    /// The real uid of the sender.
    pub uid: u32,
}

impl SignalInfo {
    /// The signal's name, e.g. `"SIGTERM"`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        crate::process::signal_name(self.signal)
    }
}

/// Signals blocked on the calling thread and read from a signalfd instead
/// of delivered: a main loop puts [`Signals`] in its [`Poller`] next to its
/// channels and pidfds, and handles SIGCHLD, SIGTERM, SIGINT or SIGHUP as
/// ordinary events — no handler, no async-signal-safety rules.
///
/// Created on the main thread before any other thread starts, so that
/// every later thread inherits the mask and no thread takes the signals
/// (a signal the process receives goes to some thread that does not block
/// it). Dropping it closes the fd and restores the thread's previous mask;
/// signals still pending are then delivered as usual (a pending SIGTERM
/// then ends the process). Not `Send`: the mask belongs to one thread.
pub struct Signals {
    fd: OwnedFd,
    _mask: sys::SavedMask,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals").field("fd", &self.fd).finish()
    }
}

impl Signals {
    /// Blocks `signals` on the calling thread and opens a signalfd for them
    /// (`SFD_CLOEXEC | SFD_NONBLOCK`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for SIGKILL or SIGSTOP (which cannot be blocked: the
    /// kernel would silently leave them out) or more than 64 signals; the
    /// error of `pthread_sigmask` or `signalfd`. Nothing stays blocked on
    /// error.
    pub fn new(signals: &[rustix::process::Signal]) -> io::Result<Self> {
        let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned());
        let mut raw = [0i32; 64];
        let raw = raw
            .get_mut(..signals.len())
            .ok_or_else(|| invalid("more than 64 signals"))?;
        for (r, s) in raw.iter_mut().zip(signals) {
            if matches!(s.as_raw(), libc::SIGKILL | libc::SIGSTOP) {
                return Err(invalid("SIGKILL and SIGSTOP cannot be blocked or read"));
            }
            *r = s.as_raw();
        }
        let mask = sys::block_signals(raw)?;
        let fd = sys::signalfd(raw)?; // on error, `mask` restores the old one
        Ok(Self {
            fd,
            _mask: mask,
            _not_send: PhantomData,
        })
    }

    /// Reads one pending signal without blocking; `Ok(None)` if none is
    /// pending. Call it until `None` after the fd polls readable: several
    /// signals may be pending, and one SIGCHLD may stand for several
    /// children (the kernel does not queue standard signals).
    ///
    /// # Errors
    ///
    /// The error of `read`.
    pub fn read(&self) -> io::Result<Option<SignalInfo>> {
        // struct signalfd_siginfo: 128 bytes; ssi_signo at 0, ssi_pid at
        // 12, ssi_uid at 16 (signalfd(2)).
        let mut buf = [0u8; 128];
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(128) => break,
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "signalfd returned {n} bytes, not one 128-byte record"
                    )));
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        let field = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
        Ok(Some(SignalInfo {
            signal: field(0) as i32,
            pid: field(12),
            uid: field(16),
        }))
    }
}

impl AsFd for Signals {
    /// The signalfd: readable while a signal of the set is pending.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pipe() -> (OwnedFd, OwnedFd) {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
    }

    #[test]
    fn deadline_passes_with_nothing_ready() {
        let (r, _w) = pipe();
        let mut p = Poller::<2>::new();
        p.add(&r, Interest::READABLE, 1);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(30);
        assert_eq!(p.wait(Some(deadline)).unwrap(), 0);
        assert!(Instant::now() >= deadline, "woke before the deadline");
        assert_eq!(p.ready().count(), 0);
    }

    #[test]
    fn a_past_deadline_looks_once_without_waiting() {
        // A ready fd is still reported: a loop whose deadline has gone by
        // (a supervisor past its stop deadline) keeps seeing its fds.
        let (r, w) = pipe();
        rustix::io::write(&w, b"x").unwrap();
        let mut p = Poller::<2>::new();
        p.add(&r, Interest::READABLE, 1);
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(p.wait(Some(past)).unwrap(), 1);
        assert_eq!(p.ready().map(|(t, _)| t).collect::<Vec<_>>(), [1]);
        // Nothing ready: 0 at once, without waiting.
        let (r2, _w2) = pipe();
        let mut p = Poller::<2>::new();
        p.add(&r2, Interest::READABLE, 2);
        let start = Instant::now();
        assert_eq!(p.wait(Some(past)).unwrap(), 0);
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn tokens_of_ready_fds_are_reported() {
        let (r1, w1) = pipe();
        let (r2, _w2) = pipe();
        let mut p = Poller::<4>::new();
        p.add(&r1, Interest::READABLE, 10);
        p.add(&r2, Interest::READABLE, 20);
        p.add(&w1, Interest::WRITABLE, 30);
        assert_eq!(p.wait(None).unwrap(), 1);
        assert_eq!(p.ready().map(|(t, _)| t).collect::<Vec<_>>(), [30]);
        assert!(p.readiness(30).unwrap().is_writable());
        rustix::io::write(&w1, b"x").unwrap();
        drop(w1);
        let mut p = Poller::<4>::new();
        p.add(&r1, Interest::READABLE, 10);
        p.add(&r2, Interest::READABLE, 20);
        assert_eq!(
            p.wait(Some(Instant::now() + Duration::from_secs(5)))
                .unwrap(),
            1
        );
        let r = p.readiness(10).unwrap();
        assert!(r.is_readable() && r.is_hangup() && !r.is_error());
        assert_eq!(p.readiness(20), None);
    }

    #[test]
    fn more_fds_than_inline_spill_in_order() {
        let pipes: Vec<_> = (0..5).map(|_| pipe()).collect();
        let mut p = Poller::<2>::new();
        for (i, (r, _)) in pipes.iter().enumerate() {
            p.add(r, Interest::READABLE, 100 + i);
        }
        assert_eq!(p.len(), 5);
        rustix::io::write(&pipes[0].1, b"x").unwrap();
        rustix::io::write(&pipes[3].1, b"x").unwrap();
        assert_eq!(
            p.wait(Some(Instant::now() + Duration::from_secs(5)))
                .unwrap(),
            2
        );
        assert_eq!(p.ready().map(|(t, _)| t).collect::<Vec<_>>(), [100, 103]);
    }

    #[test]
    fn empty_poller_sleeps_until_the_deadline() {
        let mut p = Poller::<1>::new();
        assert_eq!(
            p.wait(None).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(p.wait(Some(deadline)).unwrap(), 0);
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn wait_fd_sees_input_from_another_thread() {
        let (r, w) = pipe();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            rustix::io::write(&w, b"x").unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(wait_fd(r.as_fd(), Interest::READABLE, Some(deadline)).unwrap());
        writer.join().unwrap();
    }
}
