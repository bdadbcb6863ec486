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
//!   `STATUS=` (one line, at most [`forward::MAX_STATUS`] bytes) are passed on; never
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
//!   and a `sendto` naming it goes through; the same calls naming anything else
//!   fail with `EACCES` — the answer `socket` itself got before (the soft
//!   answer glibc's `syslog` copes with) — and are named on stderr.
//!
//! Sending goes through a non-blocking socket made for each message: a
//! service manager that stops reading costs messages (counted), never
//! privfork's event loop. (The `sd-notify` crate, which formats the
//! states here, sends blocking and takes `NOTIFY_SOCKET` as a path only.)
//!
//! Here: the program's socket and reading it; in `forward`, what of a
//! message goes on and the sending; in `handover`, the supervisor's side
//! without `unix`.

mod forward;
mod handover;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::event::{Interest, Poller, Readiness};
use crate::sys;
use forward::{Relaying, Upstream};
use handover::Handed;
pub(crate) use handover::NotifyAnswer;

/// The most sockets handed over for sd_notify open at once; past it the
/// oldest is closed (its holder then gets `ECONNRESET`/`EPIPE`).
pub(crate) const MAX_HANDED: usize = 64;

/// The largest message read (systemd's own limit, `NOTIFY_BUFFER_MAX`);
/// a longer one is dropped whole.
pub(crate) const MAX_MESSAGE: usize = 4096;

/// Messages read from one socket per wake-up, so that one busy sender
/// does not hold up privfork's event loop.
const BURST: usize = 32;

/// Messages read from one socket by [`Notify::drain`].
const DRAIN: usize = 256;

/// Tokens a [`Notify`] takes in a [`Poller`], from its base.
pub(crate) const TOKENS: usize = 1 + MAX_HANDED;

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
        let bound = bind(&path, Some(uid)).and_then(|socket| {
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
                queue: std::collections::VecDeque::new(),
                retry_at: None,
                verdicts: std::collections::HashMap::new(),
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
        self.relay.flush();
    }

    /// When what waits to be passed on is to be tried again (privfork's
    /// own manager had a full queue), if anything waits.
    pub(crate) fn retry_at(&self) -> Option<std::time::Instant> {
        self.relay.retry_at
    }

    /// Reads what is queued on every socket (bounded), once the program
    /// has exited: what it said just before (`STOPPING=1`, say) may have
    /// come after the last wake-up.
    pub(crate) fn drain(&mut self) {
        read(self.socket.as_fd(), &mut self.relay, Some(DRAIN));
        for h in &self.handed {
            read(h.kept.as_fd(), &mut self.relay, Some(DRAIN));
        }
        // The last words (STOPPING=1) are worth a short wait for a manager
        // whose queue is full: a second at most.
        self.relay.flush();
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while self.relay.retry_at.is_some() && std::time::Instant::now() < give_up {
            std::thread::sleep(std::time::Duration::from_millis(10));
            self.relay.flush();
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
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A private directory for the program's socket, mode 0700 for now:
/// `notify-RANDOM` under `/run/privfork` (made 0711 and checked to be
/// root's alone) as root, else under `$XDG_RUNTIME_DIR` or the temp
/// directory.
/// Removes the directories (and sockets) a privfork run of pid `pid` made
/// and could not remove itself (killed with SIGKILL: `privfork serve`
/// kills an instance's privfork run so, and calls this once it is reaped
/// — the pid cannot have been reused before).
pub(crate) fn remove_dirs_of(pid: u32) {
    let prefix = format!("notify-{pid}-");
    let base = if rustix::process::geteuid().is_root() {
        PathBuf::from("/run/privfork")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_dir())
            .unwrap_or_else(std::env::temp_dir)
    };
    let Ok(entries) = std::fs::read_dir(&base) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

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
        // privfork's pid in the name: a privfork serve that had to kill
        // this privfork removes what it left (see `remove_dirs_of`).
        let dir = base.join(format!("notify-{}-{:016x}", std::process::id(), random()));
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

/// Closes `fds` on a thread of its own, never the supervisor's: closing
/// the last reference to a file someone else chose can block — a TCP
/// socket lingering on unsent data (`SO_LINGER`), a FUSE or NFS file's
/// flush — and the supervisor's loop must not wait on it (every refused
/// call, `--timeout`, passed-on signals wait with it). The copies the
/// supervisor takes of the program's fds (`pidfd_getfd`) go here, as do
/// fds that came with a message where the kernel cannot refuse them.
/// If the thread cannot be started, they are closed here.
pub(crate) fn close_later(fds: Vec<OwnedFd>) {
    use std::sync::mpsc::{Sender, channel};
    use std::sync::{Mutex, OnceLock};
    static CLOSER: OnceLock<Option<Mutex<Sender<Vec<OwnedFd>>>>> = OnceLock::new();
    if fds.is_empty() {
        return;
    }
    let closer = CLOSER.get_or_init(|| {
        let (tx, rx) = channel::<Vec<OwnedFd>>();
        std::thread::Builder::new()
            .name("privfork-closer".into())
            .spawn(move || {
                for fds in rx {
                    drop(fds);
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    match closer {
        Some(tx) => {
            let tx = tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(back) = tx.send(fds) {
                drop(back.0);
            }
        }
        None => drop(fds),
    }
}

/// A non-blocking datagram socket with `SO_PASSCRED` that refuses fds,
/// bound at `path` (in a directory only privfork can reach yet), mode
/// 0600, owned by `owner` (by privfork with `None`). `privfork run`'s
/// relay and `privfork serve`'s per-instance sockets.
pub(crate) fn bind(path: &Path, owner: Option<u32>) -> io::Result<OwnedFd> {
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::bind(&socket, &SocketAddrUnix::new(path)?)?;
    rustix::net::sockopt::set_socket_passcred(&socket, true)?;
    // No fds with the messages (kernels before 6.16 cannot refuse them:
    // those are closed by `close_later`).
    let _ = sys::refuse_passed_fds(socket.as_fd());
    rustix::fs::chmod(path, Mode::from_raw_mode(0o600))?;
    if let Some(uid) = owner {
        rustix::fs::chownat(
            rustix::fs::CWD,
            path,
            Some(rustix::process::Uid::from_raw(uid)),
            None,
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
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
                // Where the kernel cannot refuse them (before 6.16):
                // closed only now, off the supervisor's thread.
                close_later(r.fds);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return false,
            Err(_) => return true,
        }
    }
    false
}
