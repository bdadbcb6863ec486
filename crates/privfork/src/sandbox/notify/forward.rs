//! What privfork passes on of the program's sd_notify messages, and the
//! sending of it to privfork's own `NOTIFY_SOCKET`.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use sd_notify::NotifyState;

use super::super::reap;
use crate::sys;

/// The longest `STATUS=` text passed on, in bytes; a longer one is cut at
/// a character boundary.
pub(crate) const MAX_STATUS: usize = 512;

/// Where privfork's own `NOTIFY_SOCKET` points.
#[derive(Debug)]
pub(super) struct Upstream {
    addr: SocketAddrUnix,
    /// As the environment said it, for messages.
    pub(super) text: String,
}

impl Upstream {
    pub(super) fn parse(value: &OsStr) -> io::Result<Self> {
        let bytes = value.as_bytes();
        let addr = match bytes.split_first() {
            Some((b'/', _)) => SocketAddrUnix::new(Path::new(value))?,
            Some((b'@', name)) if !name.is_empty() => SocketAddrUnix::new_abstract_name(name)?,
            _ => {
                return Err(io::Error::other(
                    "neither a path nor an @abstract name (what privfork relays to)",
                ));
            }
        };
        Ok(Self {
            addr,
            text: value.to_string_lossy().into_owned(),
        })
    }
}

/// What privfork passes on, and what it said about the rest.
#[derive(Debug)]
pub(super) struct Relaying {
    pub(super) upstream: Upstream,
    /// privfork's pid: the program and its processes descend from it.
    pub(super) me: i32,
    /// The program's pid (0 until known).
    pub(super) program: i32,
    /// Messages from processes outside the program's tree.
    pub(super) outsiders: u64,
    /// Messages that were too long, dropped.
    pub(super) too_long: u64,
    /// Messages that could not be passed on.
    pub(super) failed: u64,
    /// Keys named as not passed on (each once; bounded).
    pub(super) named: Vec<String>,
    pub(super) lines: Vec<String>,
    /// Datagrams waiting to go (the manager's queue was full), oldest
    /// first; see [`Relaying::flush`].
    pub(super) queue: std::collections::VecDeque<Outgoing>,
    /// When to try the queue again.
    pub(super) retry_at: Option<std::time::Instant>,
    /// Senders found in the program's tree or not, lately (the walk up
    /// `/proc` is done once per sender, not per message).
    pub(super) verdicts: std::collections::HashMap<i32, bool>,
}

/// One datagram for privfork's `NOTIFY_SOCKET`.
#[derive(Debug)]
pub(super) struct Outgoing {
    text: Vec<u8>,
    /// Only a `STATUS=`: a later one replaces it while it waits.
    status_only: bool,
}

/// The most datagrams waiting: past it, the oldest status-only one goes
/// (a state change — READY, STOPPING, RELOADING — never does, but the
/// oldest when nothing else is left).
const MAX_QUEUED: usize = 64;
/// How soon a full queue upstream is tried again.
const RETRY: std::time::Duration = std::time::Duration::from_millis(20);
/// Verdicts kept at most (then forgotten together).
const MAX_VERDICTS: usize = 256;

/// The most keys named one by one as not passed on.
const MAX_NAMED: usize = 16;

impl Relaying {
    /// One message: from the program's tree, passed on as far as it may
    /// go; from anyone else, ignored.
    pub(super) fn on_message(&mut self, msg: &[u8], sender: Option<sys::Sender>) {
        let (program, me) = (self.program, self.me);
        if self.verdicts.len() > MAX_VERDICTS {
            self.verdicts.clear();
        }
        let verdicts = &mut self.verdicts;
        let mut ours = |s: &sys::Sender| {
            (s.pid == program && s.pid > 0)
                || *verdicts
                    .entry(s.pid)
                    .or_insert_with(|| reap::descends_from(s.pid, me))
        };
        if !sender.as_ref().is_some_and(&mut ours) {
            self.outsiders += 1;
            if self.outsiders == 1 {
                let who = sender.map_or_else(
                    || "an unknown sender".to_owned(),
                    |s| format!("pid {} (uid {})", s.pid, s.uid),
                );
                self.lines.push(format!(
                    "privfork: ignored an sd_notify message from {who}: not the program or a process it started"
                ));
            }
            return;
        }
        let relayed = Relayed::of(msg);
        for key in relayed.not_relayed {
            if self.named.len() < MAX_NAMED && !self.named.contains(&key) {
                self.lines.push(format!(
                    "privfork: the program's sd_notify {key}= is not passed on (only READY, STOPPING, RELOADING and STATUS are)"
                ));
                self.named.push(key);
            }
        }
        let mut states: Vec<NotifyState<'_>> = Vec::new();
        if relayed.reloading {
            states.push(NotifyState::Reloading);
            if let Ok(now) = NotifyState::monotonic_usec_now() {
                states.push(now);
            }
        }
        if relayed.ready {
            states.push(NotifyState::Ready);
        }
        if relayed.stopping {
            states.push(NotifyState::Stopping);
        }
        if let Some(status) = &relayed.status {
            states.push(NotifyState::Status(status));
        }
        if states.is_empty() {
            return;
        }
        let status_only = !relayed.ready && !relayed.stopping && !relayed.reloading;
        let text: String = states.iter().map(|s| format!("{s}\n")).collect();
        self.enqueue(Outgoing {
            text: text.into_bytes(),
            status_only,
        });
    }

    /// Queues one datagram: a status replaces a status still waiting at
    /// the end; a repeat of the last one waiting is dropped; past
    /// [`MAX_QUEUED`], the oldest status-only one (else the oldest) goes.
    fn enqueue(&mut self, out: Outgoing) {
        if let Some(last) = self.queue.back_mut() {
            if out.status_only && last.status_only {
                *last = out;
                return;
            }
            if last.text == out.text {
                return;
            }
        }
        self.queue.push_back(out);
        if self.queue.len() > MAX_QUEUED {
            let i = self.queue.iter().position(|o| o.status_only).unwrap_or(0);
            self.queue.remove(i);
            self.lost("too many waiting");
        }
    }

    /// Sends what waits, in order, never waiting itself: when the
    /// manager's queue is full (`EAGAIN`), the rest stays for
    /// [`Relaying::retry_at`]; any other failure loses that datagram
    /// (said once, counted).
    pub(super) fn flush(&mut self) {
        self.retry_at = None;
        while let Some(out) = self.queue.front() {
            match self.send(&out.text) {
                Ok(()) => {
                    self.queue.pop_front();
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    self.retry_at = Some(std::time::Instant::now() + RETRY);
                    return;
                }
                Err(e) => {
                    self.queue.pop_front();
                    self.lost(&e.to_string());
                }
            }
        }
    }

    fn lost(&mut self, why: &str) {
        self.failed += 1;
        if self.failed == 1 {
            self.lines.push(format!(
                "privfork: cannot pass the program's sd_notify message on to NOTIFY_SOCKET={}: {why}",
                self.upstream.text
            ));
        }
    }

    /// One datagram to privfork's `NOTIFY_SOCKET`, never waiting.
    fn send(&self, text: &[u8]) -> io::Result<()> {
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        let sent = rustix::net::sendto(
            &socket,
            text,
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            &self.upstream.addr,
        )?;
        if sent != text.len() {
            return Err(io::Error::other("short write"));
        }
        Ok(())
    }
}

/// What of one message may be passed on.
#[derive(Debug, Default, PartialEq, Eq)]
struct Relayed {
    ready: bool,
    stopping: bool,
    reloading: bool,
    /// The last `STATUS=`, made one line of at most [`MAX_STATUS`] bytes.
    status: Option<String>,
    /// Names of the other keys (`MAINPID`, `WATCHDOG`...), for the report.
    not_relayed: Vec<String>,
}

impl Relayed {
    /// Reads the `KEY=VALUE` lines of `msg`, as systemd splits them.
    fn of(msg: &[u8]) -> Self {
        let mut out = Self::default();
        for line in msg.split(|&b| b == b'\n') {
            match line {
                b"" => {}
                b"READY=1" => out.ready = true,
                b"STOPPING=1" => out.stopping = true,
                b"RELOADING=1" => out.reloading = true,
                _ => {
                    if let Some(text) = line.strip_prefix(b"STATUS=") {
                        out.status = status_line(text);
                        continue;
                    }
                    let key = line.split(|&b| b == b'=').next().unwrap_or_default();
                    // BARRIER=1 is libsystemd's sd_notify_barrier: its fd
                    // is closed as privfork reads it, which is the answer.
                    // MONOTONIC_USEC: privfork sends its own with RELOADING.
                    let shown = !key.is_empty()
                        && key.len() <= 32
                        && key.iter().all(|b| b.is_ascii_uppercase() || *b == b'_')
                        && key != b"BARRIER"
                        && key != b"MONOTONIC_USEC";
                    if shown {
                        let key = String::from_utf8_lossy(key).into_owned();
                        if !out.not_relayed.contains(&key) {
                            out.not_relayed.push(key);
                        }
                    }
                }
            }
        }
        out
    }
}

/// A `STATUS=` value as passed on: valid UTF-8 (else dropped), control
/// characters made spaces, cut to [`MAX_STATUS`] bytes at a character
/// boundary.
fn status_line(text: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(text).ok()?;
    let mut out = String::with_capacity(text.len().min(MAX_STATUS));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_STATUS {
            break;
        }
        out.push(c);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_state_and_status_are_kept() {
        let r = Relayed::of(
            b"READY=1\nMAINPID=1\nSTATUS=serving\nFDSTORE=1\nWATCHDOG=1\nBARRIER=1\nready=1\n",
        );
        assert_eq!(
            r,
            Relayed {
                ready: true,
                status: Some("serving".into()),
                not_relayed: vec!["MAINPID".into(), "FDSTORE".into(), "WATCHDOG".into()],
                ..Relayed::default()
            }
        );
        // Exact lines only, as systemd compares them.
        let r = Relayed::of(b"READY=2\nREADY=1x\n STOPPING=1\nRELOADING=1");
        assert!(!r.ready && !r.stopping && r.reloading, "{r:?}");
    }

    #[test]
    fn a_status_is_one_bounded_line_of_text() {
        assert_eq!(status_line(b"a\tb\rc").as_deref(), Some("a b c"));
        assert_eq!(status_line(b"\xff"), None);
        let long = "é".repeat(MAX_STATUS);
        let cut = status_line(long.as_bytes()).unwrap();
        assert_eq!(cut.len(), MAX_STATUS);
        let odd = format!("x{long}");
        assert_eq!(status_line(odd.as_bytes()).unwrap().len(), MAX_STATUS - 1);
    }

    #[test]
    fn both_address_forms_parse_and_others_are_refused() {
        assert!(Upstream::parse(OsStr::new("/run/systemd/notify")).is_ok());
        assert!(Upstream::parse(OsStr::new("@serve/1")).is_ok());
        for bad in ["@", "relative", "vsock:2:1"] {
            assert!(Upstream::parse(OsStr::new(bad)).is_err(), "{bad}");
        }
    }
}
