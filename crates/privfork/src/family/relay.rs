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

/// Main's stderr: a bounded queue written only when writable.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    queue: VecDeque<u8>,
    dropped: u64,
}

impl Sink {
    /// Queues `bytes` (a whole line), or counts it as dropped if the queue
    /// is full.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.queue.len() + bytes.len() > MAX_QUEUED {
            self.dropped += 1;
            return;
        }
        if self.dropped > 0 {
            let note = format!(
                "privfork family: {} log lines dropped (stderr too slow)\n",
                self.dropped
            );
            self.dropped = 0;
            self.queue.extend(note.as_bytes());
        }
        self.queue.extend(bytes);
    }

    /// Queues a line of main's own.
    pub(crate) fn log(&mut self, line: &str) {
        self.push(format!("privfork family: {line}\n").as_bytes());
    }

    /// Whether anything waits to be written.
    pub(crate) fn pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Writes what fd 2 takes now: at most one pipe buffer's atomic unit
    /// per call, which a writable pipe or terminal accepts without
    /// blocking.
    pub(crate) fn write_some(&mut self) {
        let (a, _) = self.queue.as_slices();
        let n = a.len().min(libc::PIPE_BUF);
        if n == 0 {
            return;
        }
        let stderr = std::io::stderr();
        match rustix::io::write(stderr.as_fd(), &a[..n]) {
            Ok(written) => {
                self.queue.drain(..written);
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
            Err(_) => self.queue.clear(), // stderr is gone: nothing to keep
        }
    }

    /// Writes what is queued, for the end of main — for at most `limit`:
    /// a stderr nobody reads must not keep main from exiting.
    pub(crate) fn flush_for(&mut self, limit: std::time::Duration) {
        let end = std::time::Instant::now() + limit;
        let stderr = std::io::stderr();
        while self.pending() {
            match crate::event::wait_fd(stderr.as_fd(), crate::event::Interest::WRITABLE, Some(end))
            {
                Ok(true) => self.write_some(),
                _ => break,
            }
        }
        self.queue.clear();
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
        String::from_utf8(sink.queue.into_iter().collect()).unwrap()
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
        assert!(sink.queue.len() <= MAX_QUEUED);
        assert!(sink.dropped > 0);
        sink.queue.clear();
        sink.push(b"after\n");
        let text: Vec<u8> = sink.queue.into_iter().collect();
        assert!(String::from_utf8_lossy(&text).contains("log lines dropped"));
    }
}
