//! Adopting fds that came through exec, by number, without `unsafe`.
//!
//! A child spawned with [`crate::exe::Spawn::fd`] finds its channel and
//! listeners at fixed numbers. [`take_inherited_fd`] turns such a number
//! into an [`OwnedFd`] after checking that it is open, that it is of the
//! expected kind, and that it came through exec; it marks the fd
//! close-on-exec, so it is not passed on by accident.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use rustix::fs::FileType;
use rustix::net::{AddressFamily, SocketType};

use crate::sys::spawn::{Claimed, adopt, fd_flags};

/// The kind of file an inherited fd must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FdKind {
    /// Anything open.
    Any,
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A pipe or FIFO (either end).
    Pipe,
    /// A connected (not listening) unix stream socket.
    UnixStream,
    /// A connected (not listening) unix seqpacket socket.
    UnixSeqpacket,
    /// A unix datagram socket.
    UnixDatagram,
    /// A listening unix stream socket.
    UnixListener,
    /// A listening TCP socket (IPv4 or IPv6).
    TcpListener,
    /// A connected TCP socket (IPv4 or IPv6).
    TcpStream,
    /// A UDP socket (IPv4 or IPv6).
    UdpSocket,
}

/// Error of [`take_inherited_fd`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InheritError {
    /// The number is not an open fd.
    #[error("inherited fd {fd} is not open")]
    NotOpen {
        /// The number.
        fd: RawFd,
    },
    /// 0, 1 and 2 belong to the standard streams of `std`.
    #[error("fd {fd} is a standard stream; it is not taken as an inherited fd")]
    Stdio {
        /// The number.
        fd: RawFd,
    },
    /// The fd was not among those [`capture`] found without close-on-exec
    /// at the start of the program: it did not come through exec.
    #[error(
        "fd {fd} did not come through exec (it was not open without close-on-exec when the program started)"
    )]
    NotInherited {
        /// The number.
        fd: RawFd,
    },
    /// The number was already taken in this process.
    #[error("inherited fd {fd} was already taken in this process")]
    AlreadyTaken {
        /// The number.
        fd: RawFd,
    },
    /// The fd is of another kind than expected; it is left as it was.
    #[error("inherited fd {fd} is {found}, not {expected:?}")]
    WrongKind {
        /// The number.
        fd: RawFd,
        /// What was asked for.
        expected: FdKind,
        /// What it is.
        found: String,
    },
    /// Inspecting the fd failed.
    #[error("cannot inspect inherited fd {fd}: {source}")]
    Inspect {
        /// The number.
        fd: RawFd,
        /// Why.
        source: io::Error,
    },
    /// [`capture`] has not run: nothing can tell inherited fds from the
    /// program's own.
    #[error(
        "cannot take fd {fd}: the inherited fds were never captured; call \
         privfork::inherit::capture() first thing in main (Family::dispatch and \
         fork_as::exec_entry do)"
    )]
    NotCaptured {
        /// The number.
        fd: RawFd,
    },
    /// The socket's peer is not the process that started this one.
    #[error(
        "inherited channel {fd}: its peer is pid {peer_pid} (uid {peer_uid}), not this \
         process's parent {parent} (uid {uid}); refusing orders from it"
    )]
    NotFromParent {
        /// The number.
        fd: RawFd,
        /// The peer's pid (for a socketpair: the process that made it).
        peer_pid: i32,
        /// The peer's uid.
        peer_uid: u32,
        /// This process's parent.
        parent: i32,
        /// This process's real uid.
        uid: u32,
    },
}

/// Checks that the unix socket `fd` (a channel that came through exec)
/// leads to the process that started this one: its peer — for a
/// socketpair, the process that created it — is this process's parent and
/// runs as this process's real uid. Returns the parent's pid.
///
/// A process started with a role in argv takes orders from its channel;
/// anyone may start the binary so, and a privileged deputy (a root service,
/// a sudo rule passing arguments and fds through) could be made to start
/// it with an attacker's socket at the channel's number. With this check
/// the orders come from the process that started it, as that process's
/// user, or are refused.
///
/// # Errors
///
/// [`InheritError::NotFromParent`], or [`InheritError::Inspect`] if the
/// credentials cannot be read.
pub fn check_from_parent(fd: std::os::fd::BorrowedFd<'_>) -> Result<i32, InheritError> {
    use std::os::fd::AsRawFd;
    let n = fd.as_raw_fd();
    // A socketpair: both ends unnamed. A client connected to a listener
    // has a named peer, and SO_PEERCRED would then name whoever listened —
    // the parent, perhaps, on a socket someone else can reach.
    let unnamed = |addr: Option<rustix::net::SocketAddrAny>| match addr {
        None => true,
        Some(a) => rustix::net::SocketAddrUnix::try_from(a).is_ok_and(|u| {
            u.path().is_none_or(|p| p.to_bytes().is_empty())
                && u.abstract_name().is_none_or(<[u8]>::is_empty)
        }),
    };
    let peer_unnamed = rustix::net::getpeername(fd).is_ok_and(unnamed);
    let own_unnamed = rustix::net::getsockname(fd).is_ok_and(|a| unnamed(Some(a)));
    if !peer_unnamed || !own_unnamed {
        return Err(InheritError::Inspect {
            fd: n,
            source: io::Error::other("not an end of a socketpair (its peer has an address)"),
        });
    }
    let peer =
        crate::ipc::peer_cred(fd).map_err(|source| InheritError::Inspect { fd: n, source })?;
    let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    let uid = rustix::process::getuid().as_raw();
    if peer.pid != parent || peer.uid != uid {
        return Err(InheritError::NotFromParent {
            fd: n,
            peer_pid: peer.pid,
            peer_uid: peer.uid,
            parent,
            uid,
        });
    }
    Ok(parent)
}

/// The fds that came through exec, listed by [`capture`]; a number leaves
/// the set when it is taken (and never comes back: by then it may name a
/// new fd someone else owns). `None` until captured.
static INHERITED: Mutex<Option<Inherited>> = Mutex::new(None);

/// The numbers [`capture`] found, split into those not taken yet and
/// those taken.
#[derive(Debug)]
struct Inherited {
    available: BTreeSet<RawFd>,
    taken: BTreeSet<RawFd>,
}

pub use crate::sys::spawn::capture;

/// [`capture`], for the crate's entry points documented as the first line
/// of `main`.
pub(crate) fn capture_inner() {
    capture_now();
}

/// [`capture_inner`] only when this process was started with fds to adopt:
/// a role in argv, systemd's socket activation, or a smooth restart's exec
/// in place (its state record names what to adopt). Otherwise inherited fds
/// are left as they are (a make jobserver's, say, stays inheritable).
pub(crate) fn capture_if_started_with_fds() {
    if crate::exe::role().is_some()
        || std::env::var_os("LISTEN_FDS").is_some()
        || std::env::var_os(crate::family::STATE_ENV).is_some()
    {
        capture_now();
    }
}

fn capture_now() {
    let mut set = INHERITED.lock().unwrap_or_else(|p| p.into_inner());
    if set.is_some() {
        return;
    }
    let mut found = BTreeSet::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for entry in dir.flatten() {
            let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<RawFd>().ok())
            else {
                continue;
            };
            // The listing's own fd has close-on-exec (std opens it so).
            if n > 2 && matches!(fd_flags(n), Ok(Some(f)) if f & libc::FD_CLOEXEC == 0) {
                found.insert(n);
            }
        }
    }
    for &n in &found {
        crate::sys::spawn::set_cloexec(n);
    }
    *set = Some(Inherited {
        available: found,
        taken: BTreeSet::new(),
    });
}

/// Takes ownership of fd number `n`, inherited through exec, after
/// checking that it is open and of `kind`; sets close-on-exec on it.
///
/// Each number can be taken once per process. The call refuses a number
/// that has close-on-exec set, which every fd created by Rust code (std,
/// rustix, tokio) has, and which this call sets: so it cannot take an fd
/// that such code already owns. It cannot tell an fd that C code or the
/// program itself created without that flag: call it only for numbers
/// the parent placed for this process (e.g. with
/// [`crate::exe::Spawn::fd`]), early in `main`, before anything else may
/// create fds without the flag.
///
/// # Errors
///
/// [`InheritError`]: not open, a standard stream (0–2), close-on-exec
/// already set, already taken, of another kind (the fd is then left open
/// and untaken), or `fstat`/`getsockopt` failed.
///
/// See fcntl(2) `F_GETFD`, fstat(2), getsockopt(2) `SO_DOMAIN`, `SO_TYPE`,
/// `SO_ACCEPTCONN`.
pub fn take_inherited_fd(n: RawFd, kind: FdKind) -> Result<OwnedFd, InheritError> {
    if (0..=2).contains(&n) {
        return Err(InheritError::Stdio { fd: n });
    }
    if n < 0 {
        return Err(InheritError::NotOpen { fd: n });
    }
    // Held to the end, so two threads cannot both take `n`.
    let mut inherited = INHERITED.lock().unwrap_or_else(|p| p.into_inner());
    let Some(set) = inherited.as_mut() else {
        return Err(InheritError::NotCaptured { fd: n });
    };
    let inspect = |source: io::Error| InheritError::Inspect { fd: n, source };
    if set.taken.contains(&n) {
        return Err(InheritError::AlreadyTaken { fd: n });
    }
    if !set.available.contains(&n) {
        return Err(match fd_flags(n).map_err(inspect)? {
            None => InheritError::NotOpen { fd: n },
            Some(_) => InheritError::NotInherited { fd: n },
        });
    }
    let fd = adopt(Claimed(n));
    match describe(&fd) {
        Ok(found) if matches(kind, &found) => {}
        Ok(found) => {
            // Not ours to close: hand the number back untouched.
            let _ = fd.into_raw_fd();
            return Err(InheritError::WrongKind {
                fd: n,
                expected: kind,
                found: found.to_string(),
            });
        }
        Err(e) => {
            let _ = fd.into_raw_fd();
            return Err(inspect(e));
        }
    }
    if let Err(e) = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC) {
        let _ = fd.into_raw_fd();
        return Err(inspect(e.into()));
    }
    set.available.remove(&n);
    set.taken.insert(n);
    Ok(fd)
}

/// What an fd is, as far as [`FdKind`] cares.
#[derive(Debug)]
enum Found {
    File(FileType),
    Socket {
        domain: AddressFamily,
        kind: SocketType,
        listening: bool,
    },
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::File(t) => write!(f, "a {t:?}"),
            Found::Socket {
                domain,
                kind,
                listening,
            } => write!(
                f,
                "a{} socket ({domain:?}, {kind:?})",
                if *listening { " listening" } else { "" }
            ),
        }
    }
}

fn describe(fd: &OwnedFd) -> io::Result<Found> {
    let st = rustix::fs::fstat(fd)?;
    let ft = FileType::from_raw_mode(st.st_mode);
    if ft != FileType::Socket {
        return Ok(Found::File(ft));
    }
    let fd = fd.as_fd();
    Ok(Found::Socket {
        domain: rustix::net::sockopt::socket_domain(fd)?,
        kind: rustix::net::sockopt::socket_type(fd)?,
        listening: rustix::net::sockopt::socket_acceptconn(fd)?,
    })
}

fn matches(want: FdKind, found: &Found) -> bool {
    let inet = |d: &AddressFamily| *d == AddressFamily::INET || *d == AddressFamily::INET6;
    match (want, found) {
        (FdKind::Any, _) => true,
        (FdKind::File, Found::File(t)) => *t == FileType::RegularFile,
        (FdKind::Directory, Found::File(t)) => *t == FileType::Directory,
        (FdKind::Pipe, Found::File(t)) => *t == FileType::Fifo,
        (
            want,
            Found::Socket {
                domain,
                kind,
                listening,
            },
        ) => match want {
            FdKind::UnixStream => {
                *domain == AddressFamily::UNIX && *kind == SocketType::STREAM && !listening
            }
            FdKind::UnixSeqpacket => {
                *domain == AddressFamily::UNIX && *kind == SocketType::SEQPACKET && !listening
            }
            FdKind::UnixDatagram => *domain == AddressFamily::UNIX && *kind == SocketType::DGRAM,
            FdKind::UnixListener => {
                *domain == AddressFamily::UNIX && *kind == SocketType::STREAM && *listening
            }
            FdKind::TcpListener => inet(domain) && *kind == SocketType::STREAM && *listening,
            FdKind::TcpStream => inet(domain) && *kind == SocketType::STREAM && !listening,
            FdKind::UdpSocket => inet(domain) && *kind == SocketType::DGRAM,
            _ => false,
        },
        _ => false,
    }
}
