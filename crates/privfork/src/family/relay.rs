//! Members' stderr, relayed to main's as tagged lines — untrusted input to
//! main: lines are cut at [`MAX_LINE`] bytes, control characters escaped,
//! and main's own stderr is written only when it can take the bytes
//! without blocking, from a bounded queue (overflow is counted and said).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Longest line kept from a member; the rest of a longer one is dropped.
pub(crate) const MAX_LINE: usize = 4096;
/// Most bytes queued for main's stderr.
const MAX_QUEUED: usize = 1 << 20;
/// Most bytes read from one member per wake-up (a flooding member cannot
/// starve the others).
const READ_BUDGET: usize = 64 << 10;

/// One member's stderr pipe and its partial line.
#[derive(Debug)]
pub(crate) struct Source {
    fd: Option<OwnedFd>,
    tag: String,
    line: Vec<u8>,
    /// The current line went over [`MAX_LINE`]; skipping to its end.
    cut: bool,
}

impl Source {
    /// Reads from `fd` (non-blocking), tagging lines with `tag`.
    pub(crate) fn new(fd: OwnedFd, tag: String) -> io::Result<Self> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        Ok(Self {
            fd: Some(fd),
            tag,
            line: Vec::new(),
            cut: false,
        })
    }

    /// The pipe while it is open.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// Reads what is there (at most [`READ_BUDGET`]) into `out`, line by
    /// line; at end of file the last partial line is flushed and the pipe
    /// closed.
    pub(crate) fn read(&mut self, out: &mut Sink) {
        let Some(fd) = self.fd.take() else { return };
        let mut buf = [0u8; 8192];
        let mut budget = READ_BUDGET;
        while budget > 0 {
            match rustix::io::read(&fd, &mut buf) {
                Ok(0) => {
                    if !self.line.is_empty() || self.cut {
                        self.emit(out);
                    }
                    return; // closed: the fd is dropped
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    for &b in &buf[..n] {
                        if b == b'\n' {
                            self.emit(out);
                        } else if self.line.len() < MAX_LINE {
                            self.line.push(b);
                        } else {
                            self.cut = true;
                        }
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => break, // AGAIN: nothing more now
            }
        }
        self.fd = Some(fd);
    }

    fn emit(&mut self, out: &mut Sink) {
        let mut text = String::with_capacity(self.tag.len() + self.line.len() + 8);
        text.push_str(&self.tag);
        text.push(' ');
        escape_into(&self.line, &mut text);
        if self.cut {
            text.push_str(" [line cut]");
        }
        text.push('\n');
        out.push(text.as_bytes());
        self.line.clear();
        self.cut = false;
    }
}

/// Printable ASCII and valid UTF-8 text pass; tab stays a tab; every
/// other control character (ESC, CR, DEL, …) and invalid byte becomes
/// `\xNN`, so a member cannot forge lines or drive main's terminal.
fn escape_into(bytes: &[u8], out: &mut String) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\t' || !c.is_control() {
                out.push(c);
            } else {
                let mut b = [0u8; 4];
                for byte in c.encode_utf8(&mut b).bytes() {
                    out.push_str(&format!("\\x{byte:02x}"));
                }
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
}

/// How main writes to its stderr without ever blocking.
#[derive(Debug)]
enum Out {
    /// fd 2 is a regular file (or `/dev/null`-like): writes never block.
    File,
    /// fd 2 is a terminal, a pipe or a FIFO: written through a new open
    /// file description of it, non-blocking (setting `O_NONBLOCK` on fd 2
    /// itself would change the description the shell shares).
    Reopened(OwnedFd),
    /// fd 2 is a socket: `send(MSG_DONTWAIT)`.
    Socket,
    /// Nothing better could be set up: fd 2, one atomic pipe unit per
    /// wake-up (blocks on a terminal nobody reads).
    Blocking,
}

/// Most bytes written per wake-up.
const WRITE_BUDGET: usize = 64 << 10;
/// Most bytes of main's own lines queued.
const MAX_OWN_QUEUED: usize = 256 << 10;

/// Which queue a line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Own,
    Members,
}

/// Main's stderr: two bounded queues — main's own lines, written first
/// and never dropped for members' lines, and members' lines — written
/// only as far as stderr takes them without blocking.
#[derive(Debug)]
pub(crate) struct Sink {
    out: Out,
    stderr: std::io::Stderr,
    own: VecDeque<u8>,
    members: VecDeque<u8>,
    dropped: u64,
    own_dropped: u64,
    /// A partial write left this queue in the middle of a line: it goes
    /// on first, so lines are never interleaved.
    mid_line: Option<Queue>,
}

impl Default for Sink {
    fn default() -> Self {
        Self {
            out: Out::Blocking,
            stderr: std::io::stderr(),
            own: VecDeque::new(),
            members: VecDeque::new(),
            dropped: 0,
            own_dropped: 0,
            mid_line: None,
        }
    }
}

impl Sink {
    /// A sink on this process's fd 2, set up so that writing never
    /// blocks (see [`Out`]); also a note for the log if that could not be
    /// done.
    pub(crate) fn for_stderr() -> (Self, Option<String>) {
        use rustix::fs::{FileType, Mode, OFlags};
        let stderr = std::io::stderr();
        // Reopened (a new, non-blocking open file description) only when it
        // is a pipe or a terminal that fd 2 already has open for writing:
        // reopening through /proc runs the driver's open with root's rights
        // whatever fd 2 was opened as (an O_PATH fd to a device would do).
        let writable = rustix::fs::fcntl_getfl(stderr.as_fd()).is_ok_and(|fl| {
            !fl.contains(OFlags::PATH) && (fl.contains(OFlags::WRONLY) || fl.contains(OFlags::RDWR))
        });
        let (out, note) = match rustix::fs::fstat(stderr.as_fd()) {
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => (Out::File, None),
                FileType::Socket => (Out::Socket, None),
                FileType::Fifo | FileType::CharacterDevice
                    if writable
                        && (FileType::from_raw_mode(st.st_mode) == FileType::Fifo
                            || std::io::IsTerminal::is_terminal(&stderr)) =>
                {
                    match rustix::fs::open(
                        "/proc/self/fd/2",
                        OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
                        Mode::empty(),
                    ) {
                        Ok(fd) => (Out::Reopened(fd), None),
                        Err(e) => (
                            Out::Blocking,
                            Some(format!(
                                "cannot reopen stderr non-blocking ({e}); a stalled terminal \
                                 may block main"
                            )),
                        ),
                    }
                }
                _ => (
                    Out::Blocking,
                    Some(
                        "stderr is neither a file, a socket, a pipe nor a terminal open for \
                          writing: written as it is"
                            .to_owned(),
                    ),
                ),
            },
            Err(e) => (Out::Blocking, Some(format!("fstat of stderr: {e}"))),
        };
        (
            Self {
                out,
                ..Self::default()
            },
            note,
        )
    }

    /// The fd to poll for writability.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match &self.out {
            Out::Reopened(fd) => fd.as_fd(),
            _ => self.stderr.as_fd(),
        }
    }

    /// Queues a member's line `bytes`, or counts it as dropped if its
    /// queue is full.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.members.len() + bytes.len() > MAX_QUEUED {
            self.dropped += 1;
            return;
        }
        if self.dropped > 0 {
            let n = std::mem::take(&mut self.dropped);
            self.log(&format!("{n} members' log lines dropped (stderr too slow)"));
        }
        self.members.extend(bytes);
    }

    /// Queues a line of main's own (dropped only if main's own queue is
    /// full, and then counted).
    pub(crate) fn log(&mut self, line: &str) {
        let text = format!("privfork family: {line}\n");
        if self.own.len() + text.len() > MAX_OWN_QUEUED {
            self.own_dropped += 1;
            return;
        }
        if self.own_dropped > 0 {
            let note = format!(
                "privfork family: {} of main's log lines dropped (stderr too slow)\n",
                std::mem::take(&mut self.own_dropped)
            );
            self.own.extend(note.as_bytes());
        }
        self.own.extend(text.as_bytes());
    }

    /// Whether anything waits to be written.
    pub(crate) fn pending(&self) -> bool {
        !self.own.is_empty() || !self.members.is_empty()
    }

    /// Writes what stderr takes now without blocking (at most
    /// [`WRITE_BUDGET`]): main's own lines first, a line begun always
    /// finished first.
    pub(crate) fn write_some(&mut self) {
        let mut budget = WRITE_BUDGET;
        while budget > 0 {
            let which = match self.mid_line {
                Some(q) => q,
                None if !self.own.is_empty() => Queue::Own,
                None => Queue::Members,
            };
            let queue = match which {
                Queue::Own => &mut self.own,
                Queue::Members => &mut self.members,
            };
            let (a, _) = queue.as_slices();
            let limit = if matches!(self.out, Out::Blocking) {
                libc::PIPE_BUF
            } else {
                budget
            };
            let n = a.len().min(limit);
            if n == 0 {
                self.mid_line = None;
                return;
            }
            let stderr = &self.stderr;
            let res = match &self.out {
                Out::Reopened(fd) => rustix::io::write(fd, &a[..n]),
                Out::Socket => rustix::net::send(
                    stderr.as_fd(),
                    &a[..n],
                    rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
                ),
                Out::File | Out::Blocking => rustix::io::write(stderr.as_fd(), &a[..n]),
            };
            match res {
                Ok(0) => return,
                Ok(written) => {
                    let ends_line = a[written - 1] == b'\n';
                    queue.drain(..written);
                    self.mid_line = (!ends_line).then_some(which);
                    budget = budget.saturating_sub(written);
                    if matches!(self.out, Out::Blocking) {
                        return; // one write per wake-up
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => return,
                Err(_) => {
                    // stderr is gone: nothing to keep
                    self.own.clear();
                    self.members.clear();
                    self.mid_line = None;
                    return;
                }
            }
        }
    }

    /// Writes what is queued, for the end of main — for at most `limit`:
    /// a stderr nobody reads must not keep main from exiting.
    pub(crate) fn flush_for(&mut self, limit: std::time::Duration) {
        let end = std::time::Instant::now() + limit;
        while self.pending() {
            match crate::event::wait_fd(self.fd(), crate::event::Interest::WRITABLE, Some(end)) {
                Ok(true) => self.write_some(),
                _ => break,
            }
        }
        self.own.clear();
        self.members.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(input: &[u8]) -> String {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        rustix::io::write(&w, input).unwrap();
        drop(w);
        let mut src = Source::new(r, "[w 1]".into()).unwrap();
        let mut sink = Sink::default();
        while src.fd().is_some() {
            src.read(&mut sink);
        }
        String::from_utf8(sink.members.into_iter().collect()).unwrap()
    }

    #[test]
    fn lines_are_tagged_and_escaped() {
        assert_eq!(relay(b"hello\nworld"), "[w 1] hello\n[w 1] world\n");
        assert_eq!(
            relay(b"\x1b[2Jfake\rline\x7f\xff\n"),
            "[w 1] \\x1b[2Jfake\\x0dline\\x7f\\xff\n"
        );
        assert_eq!(
            relay("tab\tand ünïcode\n".as_bytes()),
            "[w 1] tab\tand ünïcode\n"
        );
    }

    #[test]
    fn long_lines_are_cut() {
        let mut input = vec![b'a'; MAX_LINE * 3];
        input.extend(b"\nnext\n");
        let out = relay(&input);
        let mut lines = out.lines();
        let first = lines.next().unwrap();
        assert!(first.ends_with(" [line cut]"));
        assert_eq!(first.len(), "[w 1] ".len() + MAX_LINE + " [line cut]".len());
        assert_eq!(lines.next(), Some("[w 1] next"));
    }

    #[test]
    fn a_full_queue_drops_and_says_so() {
        let mut sink = Sink::default();
        let line = vec![b'x'; 1000];
        for _ in 0..(MAX_QUEUED / 1000 + 10) {
            sink.push(&line);
        }
        assert!(sink.members.len() <= MAX_QUEUED);
        assert!(sink.dropped > 0);
        sink.members.clear();
        sink.push(b"after\n");
        let text: Vec<u8> = sink.own.into_iter().collect();
        assert!(String::from_utf8_lossy(&text).contains("log lines dropped"));
    }

    #[test]
    fn main_lines_are_not_dropped_for_members_lines() {
        let mut sink = Sink::default();
        let line = vec![b'x'; 1000];
        for _ in 0..(MAX_QUEUED / 1000 + 10) {
            sink.push(&line);
        }
        sink.log("still here");
        let text: Vec<u8> = sink.own.into_iter().collect();
        assert!(String::from_utf8_lossy(&text).contains("still here"));
    }
}
