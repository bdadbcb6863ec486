//! The program's stdin, stdout and stderr: never the caller's terminal or
//! the caller's files, unless asked for.
//!
//! By default ([`StdioMode::Relay`]):
//!
//! - stdout and stderr are pipes; privfork copies what arrives to its own
//!   stdout and stderr, through bounded buffers, in its event loop. The
//!   program never holds privfork's own stdout or stderr, which are often
//!   the caller's terminal (read-write: a way to read what root types) or a
//!   log opened with `>>` (which the program could otherwise `ftruncate`,
//!   or make non-appending with `fcntl(F_SETFL)`).
//! - stdin: if privfork's stdin is a terminal, the program gets
//!   `/dev/null` (privfork does not read the terminal for it: it would take
//!   keystrokes meant for the shell, and stop with SIGTTIN when run in the
//!   background). Otherwise (a pipe, a file) it gets privfork's stdin as
//!   it is, and privfork restores its file status flags afterwards (the
//!   program may leave it non-blocking).
//!
//! [`StdioMode::Inherit`] (`privfork run --inherit-stdio`) hands the program
//! privfork's own three fds, terminal included, for interactive programs;
//! their file status flags are restored afterwards too.

use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::OFlags;
use rustix::io::Errno;

use crate::event::{Interest, Poller, Readiness};

/// How the program's stdin, stdout and stderr are set up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StdioMode {
    /// stdout and stderr through pipes relayed by privfork; stdin
    /// `/dev/null` if privfork's is a terminal, else privfork's own (see the
    /// module docs).
    #[default]
    Relay,
    /// privfork's own stdin, stdout and stderr, a terminal included.
    Inherit,
}

/// What the child puts at fds 0, 1 and 2 (`None`: privfork's own, left
/// as inherited).
#[derive(Debug, Default)]
pub(crate) struct ChildStdio {
    pub(crate) fds: [Option<OwnedFd>; 3],
}

impl ChildStdio {
    /// The fds to place at 0, 1 and 2, borrowed for the child's setup.
    pub(crate) fn borrowed(&self) -> [Option<BorrowedFd<'_>>; 3] {
        [0, 1, 2].map(|i| self.fds[i].as_ref().map(AsFd::as_fd))
    }
}

/// The most a stream holds between reading the program's pipe and writing
/// privfork's output.
const BUFFER: usize = 64 << 10;

/// The most written per wake-up: a pipe or terminal that polls writable
/// takes at least this much without blocking.
const WRITE_CHUNK: usize = 4096;

/// privfork's stdout or stderr.
#[derive(Debug)]
enum Out {
    Stdout(io::Stdout),
    Stderr(io::Stderr),
    /// privfork's stderr opened again, non-blocking (see [`report_out`]).
    Reopened(OwnedFd),
}

impl Out {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Stdout(o) => o.as_fd(),
            Self::Stderr(e) => e.as_fd(),
            Self::Reopened(fd) => fd.as_fd(),
        }
    }
}

/// Where privfork's report lines go: its stderr, opened again through
/// `/proc/self/fd/2` with `O_NONBLOCK` when it is a pipe or a terminal —
/// a description of privfork's own, so a write never blocks privfork's
/// event loop (a program sharing the terminal can stop its output with
/// `TCXONC`; a pipe can fill), and the flags of the description the
/// program shares are not touched. A regular file never blocks and is
/// used as it is (opening it again would not append); so is anything that
/// cannot be opened again (a socket).
fn report_out() -> Out {
    use rustix::fs::{FileType, Mode};
    let stderr = rustix::stdio::stderr();
    let kind = rustix::fs::fstat(stderr).map(|st| FileType::from_raw_mode(st.st_mode));
    if matches!(kind, Ok(FileType::Fifo | FileType::CharacterDevice))
        && let Ok(fd) = rustix::fs::open(
            "/proc/self/fd/2",
            OFlags::WRONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    {
        return Out::Reopened(fd);
    }
    Out::Stderr(io::stderr())
}

/// One relayed stream: the program's pipe to privfork's output.
#[derive(Debug)]
struct Stream {
    /// privfork's read end (non-blocking); `None` after end of file, or
    /// once the output is gone (the program then sees EPIPE).
    from: Option<OwnedFd>,
    to: Out,
    /// Bytes read, not yet written: `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
}

impl Stream {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Reads what the pipe has, up to the buffer's room.
    fn read(&mut self) -> usize {
        let Some(from) = &self.from else { return 0 };
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let room = BUFFER - self.buf.len();
        if room == 0 {
            return 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + room, 0);
        let r = rustix::io::read(from, &mut self.buf[old..]);
        let n = match r {
            Ok(n) => n,
            Err(Errno::AGAIN | Errno::INTR) => 0,
            Err(_) => {
                self.from = None;
                0
            }
        };
        self.buf.truncate(old + n);
        if matches!(r, Ok(0)) {
            self.from = None; // end of file: every writer has closed it
        }
        n
    }

    /// Writes some of what is pending; returns false if the output would
    /// block.
    fn write(&mut self) -> bool {
        let end = self.pending().len().min(WRITE_CHUNK);
        if end == 0 {
            return true;
        }
        match rustix::io::write(self.to.fd(), &self.pending()[..end]) {
            Ok(n) => {
                self.start += n;
                true
            }
            Err(Errno::INTR) => true,
            Err(Errno::AGAIN) => false,
            Err(_) => {
                // EPIPE or worse: the output is gone. Drop what is
                // buffered and close the pipe, as if the program wrote to
                // the closed output itself.
                self.buf.clear();
                self.start = 0;
                self.from = None;
                true
            }
        }
    }
}

/// privfork's side of the program's stdio: the streams it relays and the
/// file status flags it restores.
#[derive(Debug)]
pub(crate) struct Relay {
    /// The program's stdout and stderr (relay mode), then privfork's own
    /// report lines (to its stderr, in every mode).
    streams: Vec<Stream>,
    /// Report lines dropped because privfork's stderr was not taking them.
    dropped: u64,
    /// Flags of privfork's fds 0–2 that the program shares, as they were.
    saved_flags: [Option<OFlags>; 3],
}

/// Sets up the program's stdio for `mode`: what the child places at 0–2
/// and privfork's side.
///
/// # Errors
///
/// `pipe2`, `fcntl` or opening `/dev/null`.
pub(crate) fn plan(mode: StdioMode) -> io::Result<(ChildStdio, Relay)> {
    let mut child = ChildStdio::default();
    let mut streams = Vec::new();
    let shared = match mode {
        StdioMode::Inherit => [true; 3],
        StdioMode::Relay => {
            if io::stdin().is_terminal() {
                child.fds[0] = Some(
                    std::fs::File::open("/dev/null")?.into(), // O_CLOEXEC by std
                );
            }
            for (i, to) in [
                (1, Out::Stdout(io::stdout())),
                (2, Out::Stderr(io::stderr())),
            ] {
                let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
                rustix::fs::fcntl_setfl(&r, OFlags::NONBLOCK)?;
                child.fds[i] = Some(w);
                streams.push(Stream {
                    from: Some(r),
                    to,
                    buf: Vec::with_capacity(BUFFER),
                    start: 0,
                });
            }
            [child.fds[0].is_none(), false, false]
        }
    };
    // privfork's report lines (refused calls): queued, and written when
    // its stderr takes them — a program sharing that stderr may have made
    // it non-blocking, stopped it, or fill it.
    streams.push(Stream {
        from: None,
        to: report_out(),
        buf: Vec::new(),
        start: 0,
    });
    let mut saved_flags = [None; 3];
    for (i, fd) in std_fds().into_iter().enumerate() {
        if shared[i] {
            saved_flags[i] = rustix::fs::fcntl_getfl(fd).ok();
        }
    }
    Ok((
        child,
        Relay {
            streams,
            dropped: 0,
            saved_flags,
        },
    ))
}

/// privfork's own fds 0, 1 and 2.
fn std_fds() -> [BorrowedFd<'static>; 3] {
    // The std handles are process-wide and live for the whole program.
    [
        rustix::stdio::stdin(),
        rustix::stdio::stdout(),
        rustix::stdio::stderr(),
    ]
}

impl Relay {
    /// Tokens from `base` to `base + 2 × streams` are this relay's.
    pub(crate) fn register<'a, const N: usize>(&'a self, poller: &mut Poller<'a, N>, base: usize) {
        for (i, s) in self.streams.iter().enumerate() {
            if let Some(from) = &s.from
                && s.buf.len() - s.start < BUFFER
            {
                poller.add(from, Interest::READABLE, base + 2 * i);
            }
            if !s.pending().is_empty() {
                poller.add_fd(s.to.fd(), Interest::WRITABLE, base + 2 * i + 1);
            }
        }
    }

    /// Moves bytes for what [`Relay::register`]ed and `poll` found ready.
    pub(crate) fn on_ready(&mut self, ready: &[(usize, Readiness)], base: usize) {
        for &(token, _) in ready {
            let Some(i) = token.checked_sub(base).map(|t| t / 2) else {
                continue;
            };
            let Some(s) = self.streams.get_mut(i) else {
                continue;
            };
            if (token - base).is_multiple_of(2) {
                s.read();
            }
            // Writing right away saves a round trip through poll.
            s.write();
        }
    }

    /// Queues `line` (a newline is added) for privfork's stderr; if
    /// [`BUFFER`] bytes are already waiting, drops it and counts it (said
    /// at the end, see [`Relay::finish`]).
    pub(crate) fn report(&mut self, line: &str) {
        let Some(s) = self.streams.last_mut() else {
            return;
        };
        if s.pending().len() + line.len() + 1 > BUFFER {
            self.dropped += 1;
            return;
        }
        if s.start > 0 {
            s.buf.drain(..s.start);
            s.start = 0;
        }
        s.buf.extend_from_slice(line.as_bytes());
        s.buf.push(b'\n');
        s.write();
    }

    /// Once the program's processes are all gone: relays what is left in
    /// the pipes (without waiting for an end of file that a process outside
    /// the tree, handed a pipe, could withhold), then restores the flags.
    pub(crate) fn finish(&mut self) {
        // Bounded: a process outside the program's tree that was handed a
        // pipe's write end could keep writing, and whoever reads privfork's
        // output may have stopped reading.
        const MAX_DRAIN: usize = 16 << 20;
        let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
        for s in &mut self.streams {
            let mut drained = 0usize;
            'stream: loop {
                while !s.pending().is_empty() {
                    if !s.write() {
                        let writable =
                            crate::event::wait_fd(s.to.fd(), Interest::WRITABLE, Some(end));
                        if !matches!(writable, Ok(true)) {
                            break 'stream;
                        }
                    }
                }
                let got = s.read();
                drained += got;
                if got == 0 || drained > MAX_DRAIN || std::time::Instant::now() >= end {
                    break; // empty (EAGAIN), end of file, or enough
                }
            }
            s.from = None;
        }
        if self.dropped > 0 {
            let line = format!(
                "privfork: {} report lines were dropped: stderr was not taking them",
                self.dropped
            );
            self.dropped = 0;
            self.report(&line);
            if let Some(s) = self.streams.last_mut() {
                while !s.pending().is_empty() && s.write() {}
            }
        }
        self.restore_flags();
    }

    /// Puts back the file status flags (`O_NONBLOCK`, `O_APPEND`...) of the
    /// fds the program shared with privfork.
    pub(crate) fn restore_flags(&self) {
        for (fd, saved) in std_fds().into_iter().zip(self.saved_flags) {
            if let Some(flags) = saved
                && rustix::fs::fcntl_getfl(fd).ok() != Some(flags)
            {
                let _ = rustix::fs::fcntl_setfl(fd, flags);
            }
        }
    }
}
