//! sd_notify for the program of `privfork run`: the program gets a
//! `NOTIFY_SOCKET` of its own, privfork reads what arrives there and
//! passes a few kinds of message on to its own `NOTIFY_SOCKET` (systemd's,
//! or `privfork serve`'s).
//!
//! - **The program's socket.** When privfork's environment has
//!   `NOTIFY_SOCKET` (a path or an `@abstract` name), privfork binds a
//!   unix datagram socket in a fresh directory of its own (under
//!   `/run/privfork` as root; `$XDG_RUNTIME_DIR` or the temp directory
//!   otherwise), owned by the program's uid with mode 0600 (only that uid
//!   and root can send), and gives the program that path as
//!   `NOTIFY_SOCKET` — never privfork's own. Both go when privfork exits.
//! - **Only the program's processes.** A message is taken only from the
//!   program or a process it started (the sender's pid from
//!   `SCM_CREDENTIALS`, followed up `/proc/PID/stat`'s ppid to privfork,
//!   the program's parent and subreaper); another process of the same uid
//!   is ignored (one line on stderr, then counted).
//! - **Only state.** Of a message, `READY=1`, `STOPPING=1`, `RELOADING=1`
//!   (with a fresh `MONOTONIC_USEC=`, which systemd wants with it) and
//!   `STATUS=` (one line, at most [`MAX_STATUS`] bytes) are passed on; never
//!   `MAINPID=`, `FDSTORE=`, `WATCHDOG=`, `EXTEND_TIMEOUT_USEC=`, `ERRNO=`…
//!   and never file descriptors (those sent along are closed once their
//!   message is handled, which is what `BARRIER=1` waits for). privfork sends from its own pid, which is
//!   what systemd's `NotifyAccess=main` expects of a `Type=notify` service.
//! - **Without the `unix` promise.** The program cannot make a unix
//!   socket, so the supervisor answers `socket(AF_UNIX, SOCK_DGRAM, 0)`
//!   itself ([`Notify::on_call`]): it hands over one end of a
//!   `SOCK_SEQPACKET` pair whose other end privfork reads. A seqpacket
//!   socket is connected for life and ignores a destination address, so it
//!   reaches privfork and nothing else. `connect` of that socket to the
//!   program's `NOTIFY_SOCKET` is answered 0 (it is connected already),
//!   and so is a `sendto` naming it; the same calls naming anything else
//!   fail with `EACCES` — the answer `socket` itself got before (the soft
//!   answer glibc's `syslog` copes with) — and are named on stderr.
//!
//! Sending goes through a non-blocking socket made for each message: a
//! service manager that stops reading costs messages (counted), never
//! privfork's event loop. (The `sd-notify` crate, which formats the
//! states here, sends blocking and takes `NOTIFY_SOCKET` as a path only.)

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode};
use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use sd_notify::NotifyState;

use super::call::Call;
use super::reap;
use crate::event::{Interest, Poller, Readiness};
use crate::sys;

/// The most sockets handed over for sd_notify open at once; past it the
/// oldest is closed (its holder then gets `ECONNRESET`/`EPIPE`).
pub(crate) const MAX_HANDED: usize = 64;

/// The largest message read (systemd's own limit, `NOTIFY_BUFFER_MAX`);
/// a longer one is dropped whole.
const MAX_MESSAGE: usize = 4096;

/// The longest `STATUS=` text passed on, in bytes; a longer one is cut at
/// a character boundary.
pub(crate) const MAX_STATUS: usize = 512;

/// Messages read from one socket per wake-up, so that one busy sender
/// does not hold up privfork's event loop.
const BURST: usize = 32;

/// Messages read from one socket by [`Notify::drain`].
const DRAIN: usize = 256;

/// Tokens a [`Notify`] takes in a [`Poller`], from its base.
pub(crate) const TOKENS: usize = 1 + MAX_HANDED;

/// Where privfork's own `NOTIFY_SOCKET` points.
#[derive(Debug)]
struct Upstream {
    addr: SocketAddrUnix,
    /// As the environment said it, for messages.
    text: String,
}

impl Upstream {
    fn parse(value: &OsStr) -> io::Result<Self> {
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

/// One end of a socket pair handed to the program: privfork's end, and
/// the identity (device, inode) of the program's.
#[derive(Debug)]
struct Handed {
    kept: OwnedFd,
    theirs: (u64, u64),
}

/// The program's `NOTIFY_SOCKET` and what privfork passes on from it.
#[derive(Debug)]
pub(crate) struct Notify {
    /// The private directory and the socket's path in it.
    dir: PathBuf,
    path: PathBuf,
    /// Bound at `path`: non-blocking, `SO_PASSCRED`.
    socket: OwnedFd,
    /// Sockets handed over, oldest first.
    handed: VecDeque<Handed>,
    relay: Relaying,
}

/// What privfork passes on, and what it said about the rest.
#[derive(Debug)]
struct Relaying {
    upstream: Upstream,
    /// privfork's pid: the program and its processes descend from it.
    me: i32,
    /// The program's pid (0 until known).
    program: i32,
    /// Messages from processes outside the program's tree.
    outsiders: u64,
    /// Messages that were too long, dropped.
    too_long: u64,
    /// Messages that could not be passed on.
    failed: u64,
    /// Keys named as not passed on (each once; bounded).
    named: Vec<String>,
    lines: Vec<String>,
}

/// The most keys named one by one as not passed on.
const MAX_NAMED: usize = 16;

impl Notify {
    /// Sets up the program's `NOTIFY_SOCKET` if privfork's environment has
    /// one: a socket bound in a new private directory, owned by `uid` (the
    /// program's) with mode 0600. `Ok(None)` without `NOTIFY_SOCKET`.
    ///
    /// # Errors
    ///
    /// `NOTIFY_SOCKET` is neither a path nor an `@abstract` name; the
    /// directory or the socket cannot be made.
    pub(crate) fn from_env(uid: u32) -> io::Result<Option<Self>> {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let upstream = Upstream::parse(&value).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("NOTIFY_SOCKET={}: {e}", value.to_string_lossy()),
            )
        })?;
        let dir = private_dir()?;
        let path = dir.join("notify");
        let bound = bind(&path, uid).and_then(|socket| {
            // Searchable by the program now that its socket is in place
            // (0700 until then: no one could reach it half made).
            rustix::fs::chmod(&dir, Mode::from_raw_mode(0o711))?;
            Ok(socket)
        });
        let socket = match bound {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_dir(&dir);
                return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
            }
        };
        Ok(Some(Self {
            dir,
            path,
            socket,
            handed: VecDeque::new(),
            relay: Relaying {
                upstream,
                me: rustix::process::getpid().as_raw_nonzero().get(),
                program: 0,
                outsiders: 0,
                too_long: 0,
                failed: 0,
                named: Vec::new(),
                lines: Vec::new(),
            },
        }))
    }

    /// The program's `NOTIFY_SOCKET`.
    pub(crate) fn program_socket(&self) -> &Path {
        &self.path
    }

    /// Watches the program's socket and every handed-over one, with
    /// tokens from `base` to `base + TOKENS`.
    pub(crate) fn register<'a, const N: usize>(&'a self, poller: &mut Poller<'a, N>, base: usize) {
        poller.add(&self.socket, Interest::READABLE, base);
        for (i, h) in self.handed.iter().enumerate() {
            poller.add(&h.kept, Interest::READABLE, base + 1 + i);
        }
    }

    /// Reads what [`Notify::register`]ed and `poll` found ready, and
    /// passes on what may go. Must run before anything hands a socket over
    /// (the tokens name the handed sockets by position).
    pub(crate) fn on_ready(&mut self, ready: &[(usize, Readiness)], base: usize) {
        let mut gone = Vec::new();
        for &(token, readiness) in ready {
            let Some(i) = token.checked_sub(base).filter(|&i| i < TOKENS) else {
                continue;
            };
            if i == 0 {
                read(self.socket.as_fd(), &mut self.relay, Some(BURST));
                continue;
            }
            let Some(h) = self.handed.get(i - 1) else {
                continue;
            };
            // Every holder closed it: nothing more can come; read what is
            // left and close privfork's end.
            let hung_up = readiness.is_hangup() || readiness.is_error();
            let limit = if hung_up { None } else { Some(BURST) };
            if read(h.kept.as_fd(), &mut self.relay, limit) || hung_up {
                gone.push(i - 1);
            }
        }
        for i in gone.into_iter().rev() {
            self.handed.remove(i);
        }
    }

    /// Reads what is queued on every socket (bounded), once the program
    /// has exited: what it said just before (`STOPPING=1`, say) may have
    /// come after the last wake-up.
    pub(crate) fn drain(&mut self) {
        read(self.socket.as_fd(), &mut self.relay, Some(DRAIN));
        for h in &self.handed {
            read(h.kept.as_fd(), &mut self.relay, Some(DRAIN));
        }
    }

    /// Takes the program's messages from now on also from `pid`, the
    /// program itself, by its pid alone — even once it is reaped, for the
    /// last [`Notify::drain`], right after: nothing can have taken the pid
    /// over by then.
    pub(crate) fn set_program(&mut self, pid: u32) {
        self.relay.program = i32::try_from(pid).unwrap_or(0);
    }

    /// The lines for privfork's stderr since the last call.
    pub(crate) fn take_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.relay.lines)
    }

    /// The closing lines: what was ignored or lost, counted.
    pub(crate) fn summary(&self) -> Vec<String> {
        let r = &self.relay;
        let mut out = Vec::new();
        if r.outsiders > 1 {
            out.push(format!(
                "privfork: {} sd_notify messages from processes outside the program were ignored",
                r.outsiders
            ));
        }
        if r.too_long > 0 {
            out.push(format!(
                "privfork: {} sd_notify messages longer than {MAX_MESSAGE} bytes were dropped",
                r.too_long
            ));
        }
        if r.failed > 1 {
            out.push(format!(
                "privfork: {} sd_notify messages could not be passed on to NOTIFY_SOCKET={}",
                r.failed, r.upstream.text
            ));
        }
        out
    }

    /// Answers the supervisor's notification of `call` if it is one of
    /// the program's sd_notify calls without the `unix` promise (see the
    /// module docs): `socket(AF_UNIX, …)`, and `connect`, `sendto` or
    /// `setsockopt(SO_SNDBUF)` on a socket handed over. `None`: not
    /// privfork's to answer here (the call is refused as any other).
    ///
    /// `pidfd` is the calling process's, opened while the call waited.
    pub(crate) fn on_call(
        &mut self,
        listener: BorrowedFd<'_>,
        id: u64,
        call: &Call,
        pidfd: Option<&OwnedFd>,
    ) -> Option<NotifyAnswer> {
        match call.nr {
            libc::SYS_socket if call.arg_int(0) == libc::AF_UNIX => {
                Some(NotifyAnswer::Answered(self.hand_over(listener, id, call)))
            }
            libc::SYS_connect if self.is_handed(pidfd?, call.arg_int(0)) => {
                if self.names_program_socket(call, call.args[1], call.args[2]) {
                    // Connected already, to privfork.
                    Some(NotifyAnswer::Answered(answer(
                        listener,
                        id,
                        Reply::Errno(0),
                    )))
                } else {
                    Some(NotifyAnswer::Refuse)
                }
            }
            libc::SYS_sendto if call.args[4] != 0 && self.is_handed(pidfd?, call.arg_int(0)) => {
                if self.names_program_socket(call, call.args[4], call.args[5]) {
                    // A seqpacket socket ignores the address: the bytes
                    // reach privfork whatever it names. Were the fd
                    // swapped meanwhile for another socket, the call would
                    // be a sendmsg with an address, which stdio allows.
                    Some(NotifyAnswer::Answered(answer(
                        listener,
                        id,
                        Reply::Continue,
                    )))
                } else {
                    Some(NotifyAnswer::Refuse)
                }
            }
            // libsystemd's sd_notify grows the send buffer first, and goes
            // on when it cannot; the program has no CAP_NET_ADMIN for
            // SO_SNDBUFFORCE anyway.
            libc::SYS_setsockopt
                if call.arg_int(1) == libc::SOL_SOCKET
                    && matches!(call.arg_int(2), libc::SO_SNDBUF | libc::SO_SNDBUFFORCE)
                    && self.is_handed(pidfd?, call.arg_int(0)) =>
            {
                Some(NotifyAnswer::Answered(answer(
                    listener,
                    id,
                    Reply::Errno(libc::EPERM),
                )))
            }
            _ => None,
        }
    }

    /// `socket(AF_UNIX, SOCK_DGRAM[|SOCK_CLOEXEC|SOCK_NONBLOCK], 0)`: one
    /// end of a new seqpacket pair, as the call's result. Any other unix
    /// socket: `EACCES`, the soft answer it gets without a `NOTIFY_SOCKET`
    /// (glibc's NSS probes nscd's socket).
    fn hand_over(&mut self, listener: BorrowedFd<'_>, id: u64, call: &Call) -> io::Result<()> {
        let ty = call.arg_int(1);
        let extra = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        if ty & !extra != libc::SOCK_DGRAM || call.arg_int(2) != 0 {
            return answer(listener, id, Reply::Errno(libc::EACCES));
        }
        let made = (|| -> io::Result<(OwnedFd, OwnedFd, (u64, u64))> {
            let (kept, theirs) = rustix::net::socketpair(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC,
                None,
            )?;
            rustix::net::sockopt::set_socket_passcred(&kept, true)?;
            rustix::fs::fcntl_setfl(&kept, rustix::fs::OFlags::NONBLOCK)?;
            if ty & libc::SOCK_NONBLOCK != 0 {
                rustix::fs::fcntl_setfl(&theirs, rustix::fs::OFlags::NONBLOCK)?;
            }
            let st = rustix::fs::fstat(&theirs)?;
            Ok((kept, theirs, (st.st_dev, st.st_ino)))
        })();
        let (kept, theirs, ident) = match made {
            Ok(m) => m,
            // ENFILE, ENOMEM...: the program's call fails with it.
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::ENOMEM);
                return answer(listener, id, Reply::Errno(errno));
            }
        };
        let cloexec = ty & libc::SOCK_CLOEXEC != 0;
        match sys::notif_addfd_send(listener, id, theirs.as_fd(), cloexec) {
            Ok(()) => {}
            // Gone (ENOENT), or died while the fd was on its way (ESRCH).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
                return Ok(());
            }
            // EMFILE: the program's fd table is full.
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                return answer(listener, id, Reply::Errno(errno));
            }
        }
        self.handed.push_back(Handed {
            kept,
            theirs: ident,
        });
        if self.handed.len() > MAX_HANDED {
            self.handed.pop_front();
        }
        Ok(())
    }

    /// Whether fd `fd` of the process of `pidfd` is a socket privfork
    /// handed over (and still holds the other end of): the same device
    /// and inode, looked at through a copy of it (`pidfd_getfd`).
    fn is_handed(&self, pidfd: &OwnedFd, fd: i32) -> bool {
        if fd < 0 || self.handed.is_empty() {
            return false;
        }
        let Ok(copy) =
            rustix::process::pidfd_getfd(pidfd, fd, rustix::process::PidfdGetfdFlags::empty())
        else {
            return false;
        };
        let Ok(st) = rustix::fs::fstat(&copy) else {
            return false;
        };
        self.handed
            .iter()
            .any(|h| h.theirs == (st.st_dev, st.st_ino))
    }

    /// Whether the socket address at `addr` (`len` bytes) in the calling
    /// thread's memory is the program's `NOTIFY_SOCKET` (a path, read up
    /// to its first NUL as the kernel reads it).
    fn names_program_socket(&self, call: &Call, addr: u64, len: u64) -> bool {
        let Some(bytes) = call.read_sockaddr(addr, len) else {
            return false;
        };
        let Some(([lo, hi], path)) = bytes.split_first_chunk::<2>() else {
            return false;
        };
        if i32::from(u16::from_ne_bytes([*lo, *hi])) != libc::AF_UNIX {
            return false;
        }
        let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
        end > 0 && path[..end] == *self.path.as_os_str().as_bytes()
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// How [`Notify::on_call`] answered.
#[derive(Debug)]
pub(crate) enum NotifyAnswer {
    /// Answered (a socket handed over, a `connect` or `sendto` to
    /// `NOTIFY_SOCKET`, a soft refusal).
    Answered(io::Result<()>),
    /// A `connect` or `sendto` of a handed-over socket to another address:
    /// to be failed with `EACCES` and named.
    Refuse,
}

enum Reply {
    Errno(i32),
    Continue,
}

/// Answers notification `id` (a caller gone meanwhile is no error).
fn answer(listener: BorrowedFd<'_>, id: u64, reply: Reply) -> io::Result<()> {
    let (continue_call, errno) = match reply {
        Reply::Errno(e) => (false, e),
        Reply::Continue => (true, 0),
    };
    match sys::notif_send(listener, id, continue_call, errno) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// A private directory for the program's socket, mode 0700 for now:
/// `notify-RANDOM` under `/run/privfork` (made 0711 and checked to be
/// root's alone) as root, else under `$XDG_RUNTIME_DIR` or the temp
/// directory.
fn private_dir() -> io::Result<PathBuf> {
    let base = if rustix::process::geteuid().is_root() {
        let base = PathBuf::from("/run/privfork");
        match rustix::fs::mkdir(&base, Mode::from_raw_mode(0o711)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", base.display()))),
        }
        let st = rustix::fs::lstat(&base)?;
        let is_dir = rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir();
        if !is_dir || st.st_uid != 0 || st.st_mode & 0o022 != 0 {
            return Err(io::Error::other(format!(
                "{} is not a directory only root can write",
                base.display()
            )));
        }
        // Searchable by every program's user, whatever umask made it.
        if st.st_mode & 0o777 != 0o711 {
            rustix::fs::chmod(&base, Mode::from_raw_mode(0o711))?;
        }
        base
    } else {
        std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_dir())
            .unwrap_or_else(std::env::temp_dir)
    };
    for _ in 0..16 {
        let dir = base.join(format!("notify-{:016x}", random()));
        match rustix::fs::mkdir(&dir, Mode::from_raw_mode(0o700)) {
            Ok(()) => {
                // Whatever the umask left.
                rustix::fs::chmod(&dir, Mode::from_raw_mode(0o700))?;
                return Ok(dir);
            }
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        }
    }
    Err(io::Error::other(format!(
        "no free name for a directory in {}",
        base.display()
    )))
}

/// 64 random bits (std's hasher keys come from the kernel's random pool).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::hash::RandomState::new().build_hasher().finish()
}

/// A non-blocking datagram socket with `SO_PASSCRED`, bound at `path`
/// (in a directory only privfork can reach yet), owned by `uid` with
/// mode 0600.
fn bind(path: &Path, uid: u32) -> io::Result<OwnedFd> {
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::bind(&socket, &SocketAddrUnix::new(path)?)?;
    rustix::net::sockopt::set_socket_passcred(&socket, true)?;
    rustix::fs::chmod(path, Mode::from_raw_mode(0o600))?;
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::process::Uid::from_raw(uid)),
        None,
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(socket)
}

/// Reads and handles up to `limit` messages (all there are with `None`)
/// from `fd`. Returns whether the socket is done (its peer closed a
/// seqpacket pair, or it failed).
fn read(fd: BorrowedFd<'_>, relay: &mut Relaying, limit: Option<usize>) -> bool {
    let mut buf = [0u8; MAX_MESSAGE];
    let mut n = 0usize;
    while limit.is_none_or(|l| n < l) {
        n += 1;
        match sys::recv_with_creds(fd, &mut buf) {
            // End of file on a seqpacket pair: no credentials come with
            // it (a message always has them, SO_PASSCRED being set).
            Ok(r) if r.len == 0 && r.sender.is_none() => return true,
            Ok(r) if r.truncated => relay.too_long += 1,
            Ok(r) => {
                relay.on_message(&buf[..r.len], r.sender);
                // Closed only now: a sender waiting for its fd to close
                // (libsystemd's sd_notify_barrier, BARRIER=1) learns that
                // this message and those before it were handled.
                drop(r.fds);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return false,
            Err(_) => return true,
        }
    }
    false
}

impl Relaying {
    /// One message: from the program's tree, passed on as far as it may
    /// go; from anyone else, ignored.
    fn on_message(&mut self, msg: &[u8], sender: Option<sys::Sender>) {
        let ours = |s: &sys::Sender| {
            (s.pid == self.program && s.pid > 0) || reap::descends_from(s.pid, self.me)
        };
        if !sender.as_ref().is_some_and(ours) {
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
        let text: String = states.iter().map(|s| format!("{s}\n")).collect();
        if let Err(e) = self.send(text.as_bytes()) {
            self.failed += 1;
            if self.failed == 1 {
                self.lines.push(format!(
                    "privfork: cannot pass the program's sd_notify message on to NOTIFY_SOCKET={}: {e}",
                    self.upstream.text
                ));
            }
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
