//! Listening sockets: bound from configuration, adopted from systemd's
//! socket activation, handed to children at fixed fds by name.
//!
//! The main process of a family owns the listeners; workers receive them
//! at fixed fd numbers through exec (see [`Listeners::hand_to`] and
//! [`Listeners::adopt`]), and a later generation of the main process can
//! adopt them the same way across its own exec.
//!
//! ```no_run
//! use privfork::listen::{ListenSpec, Listeners};
//!
//! let specs: Vec<ListenSpec> = vec!["127.0.0.1:8080,name=http".parse()?];
//! // systemd's sockets when started by socket activation, else our own.
//! let listeners = match Listeners::from_systemd()? {
//!     Some(l) => l,
//!     None => Listeners::bind(&specs)?,
//! };
//! for l in listeners.iter() {
//!     println!("{} on {}", l.name(), l.local_addr());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! TCP listeners get `SO_REUSEADDR` (a restarted server binds again while
//! old connections linger in TIME_WAIT), IPv6 ones `IPV6_V6ONLY` (so
//! `[::]:80` and `0.0.0.0:80` can both be bound), and every listener the
//! backlog of `net.core.somaxconn` (the kernel's cap). A unix socket path
//! gets its mode and owner before `listen`, so no client can connect
//! while its permissions are still the umask's; a stale socket file (no
//! one listening) is replaced, anything else at the path is an error.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustix::net::{AddressFamily, SocketAddrAny, SocketFlags, SocketType, sockopt};

use crate::exe::Spawn;
use crate::identity::Identity;
use crate::inherit::{FdKind, InheritError, take_inherited_fd};

/// Longest name a listener may have (systemd's limit for fd names).
const MAX_NAME: usize = 255;
/// The backlog if `net.core.somaxconn` cannot be read.
const DEFAULT_BACKLOG: i32 = 4096;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP address, IPv4 or IPv6 (port 0: any free port).
    Tcp(std::net::SocketAddr),
    /// A unix stream socket at a path.
    Unix(PathBuf),
}

/// A listener to bind: address, name, and for unix paths the file's mode
/// and owner.
///
/// Parsed from `ADDR[,name=NAME][,mode=OCTAL][,owner=USER][,group=GROUP]`
/// with `ADDR` one of `127.0.0.1:8080`, `[::1]:8080`, `unix:/run/app.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The address.
    pub addr: ListenAddr,
    /// The name children find it by (`LISTEN_FDNAMES`); default
    /// `listen` followed by its index.
    pub name: Option<String>,
    /// Mode of a unix socket file (default 0o660).
    pub mode: u32,
    /// Owner of a unix socket file (user name or uid), if it changes.
    pub owner: Option<String>,
    /// Group of a unix socket file (group name or gid), if it changes.
    pub group: Option<String>,
}

/// Error of binding or adopting listeners.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// A spec could not be parsed.
    #[error(
        "bad listen address {spec:?}: {reason} (expected HOST:PORT, [V6]:PORT or unix:/PATH, \
         then ,name=N ,mode=0660 ,owner=USER ,group=GROUP)"
    )]
    Spec {
        /// The spec given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A system call failed for one address.
    #[error("cannot listen on {addr}: {step} failed")]
    Bind {
        /// The address.
        addr: String,
        /// The call.
        step: &'static str,
        /// Its error.
        #[source]
        source: io::Error,
    },
    /// The owner or group of a unix socket cannot be resolved.
    #[error("cannot listen on {addr}: bad owner or group")]
    Owner {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: crate::identity::ResolveError,
    },
    /// An inherited fd is not a listening socket of a supported kind.
    #[error("inherited listener {name:?} at fd {fd}")]
    Inherited {
        /// Its name.
        name: String,
        /// Its number.
        fd: RawFd,
        /// Why it cannot be used.
        #[source]
        source: InheritError,
    },
    /// systemd's variables are inconsistent.
    #[error("socket activation: {0}")]
    Systemd(String),
    /// Two listeners have the same name.
    #[error("two listeners are named {0:?}")]
    DuplicateName(String),
}

impl ListenSpec {
    /// A spec for `addr` with the defaults.
    pub fn new(addr: ListenAddr) -> Self {
        Self {
            addr,
            name: None,
            mode: 0o660,
            owner: None,
            group: None,
        }
    }
}

impl FromStr for ListenSpec {
    type Err = ListenError;

    fn from_str(spec: &str) -> Result<Self, ListenError> {
        let bad = |reason: &str| ListenError::Spec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = spec.split(',');
        let addr = parts.next().unwrap_or_default();
        let addr = if let Some(path) = addr.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(bad("a unix socket path must be absolute"));
            }
            if path.len() >= 108 {
                return Err(bad("a unix socket path must be under 108 bytes"));
            }
            ListenAddr::Unix(PathBuf::from(path))
        } else {
            ListenAddr::Tcp(
                addr.parse()
                    .map_err(|_| bad("not an address with a port"))?,
            )
        };
        let mut out = Self::new(addr);
        for opt in parts {
            let (key, value) = opt
                .split_once('=')
                .ok_or_else(|| bad("an option without '='"))?;
            let unix_only = || match out.addr {
                ListenAddr::Unix(_) => Ok(()),
                ListenAddr::Tcp(_) => Err(bad(&format!("{key} applies to unix sockets only"))),
            };
            match key {
                "name" => {
                    check_name(value).map_err(|r| bad(&r))?;
                    out.name = Some(value.to_owned());
                }
                "mode" => {
                    unix_only()?;
                    out.mode = u32::from_str_radix(value, 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| bad("mode must be octal, at most 0777"))?;
                }
                "owner" => {
                    unix_only()?;
                    out.owner = Some(value.to_owned());
                }
                "group" => {
                    unix_only()?;
                    out.group = Some(value.to_owned());
                }
                other => return Err(bad(&format!("unknown option {other:?}"))),
            }
        }
        Ok(out)
    }
}

/// A name must be printable ASCII without ':' (systemd's separator).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a name must have 1 to {MAX_NAME} bytes"));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(format!("name {name:?} must be printable ASCII without ':'"));
    }
    Ok(())
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A listening socket with its name.
#[derive(Debug)]
pub struct Listener {
    name: String,
    fd: OwnedFd,
}

impl Listener {
    /// The name children find it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it listens, as text (`127.0.0.1:8080`, `unix:/run/app.sock`).
    pub fn local_addr(&self) -> String {
        match rustix::net::getsockname(&self.fd) {
            Ok(addr) => describe(&addr),
            Err(e) => format!("(unknown: {e})"),
        }
    }

    /// The socket.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn describe(addr: &SocketAddrAny) -> String {
    if let Ok(a) = std::net::SocketAddr::try_from(addr.clone()) {
        return a.to_string();
    }
    if let Ok(u) = rustix::net::SocketAddrUnix::try_from(addr.clone()) {
        if let Some(p) = u.path() {
            return format!(
                "unix:{}",
                Path::new(OsStr::from_bytes(p.to_bytes())).display()
            );
        }
        return "unix:(unnamed)".to_owned();
    }
    "(other address family)".to_owned()
}

/// `net.core.somaxconn`, the largest backlog the kernel grants.
fn backlog() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_BACKLOG)
}

/// Binds one listener.
///
/// # Errors
///
/// [`ListenError`] naming the address and the call that failed.
pub fn bind(spec: &ListenSpec, name: &str) -> Result<Listener, ListenError> {
    let addr = spec.addr.to_string();
    let step = |step: &'static str| {
        let addr = addr.clone();
        move |e: rustix::io::Errno| ListenError::Bind {
            addr,
            step,
            source: e.into(),
        }
    };
    let fd = match &spec.addr {
        ListenAddr::Tcp(sa) => {
            let family = if sa.is_ipv4() {
                AddressFamily::INET
            } else {
                AddressFamily::INET6
            };
            let fd =
                rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)
                    .map_err(step("socket"))?;
            sockopt::set_socket_reuseaddr(&fd, true).map_err(step("setsockopt(SO_REUSEADDR)"))?;
            if sa.is_ipv6() {
                sockopt::set_ipv6_v6only(&fd, true).map_err(step("setsockopt(IPV6_V6ONLY)"))?;
            }
            rustix::net::bind(&fd, sa).map_err(step("bind"))?;
            fd
        }
        ListenAddr::Unix(path) => bind_unix(spec, path, &addr)?,
    };
    rustix::net::listen(&fd, backlog()).map_err(step("listen"))?;
    Ok(Listener {
        name: name.to_owned(),
        fd,
    })
}

fn bind_unix(spec: &ListenSpec, path: &Path, addr: &str) -> Result<OwnedFd, ListenError> {
    let step = |step: &'static str| {
        move |e: rustix::io::Errno| ListenError::Bind {
            addr: addr.to_owned(),
            step,
            source: e.into(),
        }
    };
    let owner = match &spec.owner {
        Some(u) => Some(Identity::user(u).map_err(|source| ListenError::Owner {
            addr: addr.to_owned(),
            source,
        })?),
        None => None,
    };
    let group = match &spec.group {
        Some(g) => Some(
            crate::identity::resolve_group(g)
                .map(rustix::process::Gid::from_raw)
                .map_err(|source| ListenError::Owner {
                    addr: addr.to_owned(),
                    source,
                })?,
        ),
        None => None,
    };
    let sa = rustix::net::SocketAddrUnix::new(path).map_err(step("a unix socket address"))?;
    // Main (root) removes a stale file, binds, then sets mode and owner by
    // name: a directory on the way that someone less privileged can write
    // would let them swap in a symlink between those steps (root would
    // chmod, chown or unlink its target). Refused, like sshd's key paths.
    // A sticky directory (/tmp) is fine: its entries of root's stay root's.
    let dir = path.parent().unwrap_or(Path::new(""));
    crate::trusted_path::check_dir(dir, &[]).map_err(|e| ListenError::Bind {
        addr: addr.to_owned(),
        step: "checking the socket's directory",
        source: io::Error::other(e.to_string()),
    })?;
    remove_stale(path, &sa).map_err(|source| ListenError::Bind {
        addr: addr.to_owned(),
        step: "replacing a stale socket file",
        source,
    })?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(step("socket"))?;
    rustix::net::bind(&fd, &sa).map_err(step("bind"))?;
    // Mode and owner before listen: until then connecting is refused, so
    // no client gets in under the umask's permissions.
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(spec.mode)).map_err(step("chmod"))?;
    if owner.is_some() || group.is_some() {
        rustix::fs::chownat(
            rustix::fs::CWD,
            path,
            owner.as_ref().map(Identity::raw_uid),
            group.or_else(|| owner.as_ref().map(Identity::raw_gid)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(step("chown"))?;
    }
    Ok(fd)
}

/// Removes a socket file nobody listens on; anything else at `path` (a
/// regular file, a live socket) is an error.
fn remove_stale(path: &Path, sa: &rustix::net::SocketAddrUnix) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_socket() {
        return Err(io::Error::other(format!(
            "{} exists and is not a socket",
            path.display()
        )));
    }
    // Non-blocking: a listener at the path whose backlog is full answers
    // EAGAIN instead of holding main's start.
    let probe = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    match rustix::net::connect(&probe, sa) {
        Ok(()) | Err(rustix::io::Errno::AGAIN) => Err(io::Error::other(format!(
            "{} is in use: something listens on it",
            path.display()
        ))),
        Err(rustix::io::Errno::CONNREFUSED) => std::fs::remove_file(path),
        Err(e) => Err(e.into()),
    }
}

/// The listeners of a process, in order, each with a unique name.
#[derive(Debug, Default)]
pub struct Listeners {
    list: Vec<Listener>,
}

impl Listeners {
    /// Binds every spec; nothing is left bound if one fails.
    ///
    /// # Errors
    ///
    /// The first [`ListenError`], naming its address.
    pub fn bind(specs: &[ListenSpec]) -> Result<Self, ListenError> {
        let mut out = Self::default();
        for (i, spec) in specs.iter().enumerate() {
            let name = spec.name.clone().unwrap_or_else(|| format!("listen{i}"));
            out.push(bind(spec, &name)?)?;
        }
        Ok(out)
    }

    /// systemd's socket activation: the listeners at fds 3 onward when
    /// `LISTEN_PID` is this process and `LISTEN_FDS` counts them, named by
    /// `LISTEN_FDNAMES`. `Ok(None)` when the process was not socket
    /// activated. The variables stay set (as `sd_listen_fds(0)` leaves
    /// them); children spawned with a cleared environment do not see them.
    ///
    /// # Errors
    ///
    /// Inconsistent variables, or an fd that is not a listening TCP or
    /// unix stream socket.
    pub fn from_systemd() -> Result<Option<Self>, ListenError> {
        let var = |k: &str| std::env::var(k).ok();
        let (Some(pid), Some(fds)) = (var("LISTEN_PID"), var("LISTEN_FDS")) else {
            return Ok(None);
        };
        let me = rustix::process::getpid().as_raw_nonzero().get().to_string();
        if pid.trim() != me {
            return Ok(None);
        }
        let n: usize = fds
            .trim()
            .parse()
            .ok()
            .filter(|&n| n <= 4096)
            .ok_or_else(|| ListenError::Systemd(format!("LISTEN_FDS={fds:?} is not a count")))?;
        let names: Vec<String> = match var("LISTEN_FDNAMES") {
            Some(names) => {
                let names: Vec<String> = names.split(':').map(str::to_owned).collect();
                for name in &names {
                    check_name(name)
                        .map_err(|e| ListenError::Systemd(format!("LISTEN_FDNAMES: {e}")))?;
                }
                if names.len() != n {
                    return Err(ListenError::Systemd(format!(
                        "LISTEN_FDNAMES has {} names for {n} fds",
                        names.len()
                    )));
                }
                names
            }
            None => (0..n).map(|i| format!("listen{i}")).collect(),
        };
        Self::adopt(3, &names).map(Some)
    }

    /// Adopts listeners that came through exec at fds `first`,
    /// `first + 1`, … named `names` (a child of [`Listeners::hand_to`], a
    /// later generation of the main process, or systemd's).
    ///
    /// # Errors
    ///
    /// An fd that is not open, did not come through exec, or is not a
    /// listening TCP or unix stream socket; duplicate names.
    pub fn adopt(first: RawFd, names: &[String]) -> Result<Self, ListenError> {
        let numbered: Vec<(String, RawFd)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let fd = first + RawFd::try_from(i).unwrap_or(RawFd::MAX - first);
                (name.clone(), fd)
            })
            .collect();
        Self::adopt_numbered(&numbered)
    }

    /// As [`Listeners::adopt`], for listeners at the fd numbers given
    /// with their names (a smooth restart's state record names them).
    pub(crate) fn adopt_numbered(list: &[(String, RawFd)]) -> Result<Self, ListenError> {
        let mut out = Self::default();
        for (name, fd) in list {
            let fd = *fd;
            let err = |source| ListenError::Inherited {
                name: name.clone(),
                fd,
                source,
            };
            let owned = match take_inherited_fd(fd, FdKind::TcpListener) {
                Ok(fd) => fd,
                Err(InheritError::WrongKind { .. }) => {
                    take_inherited_fd(fd, FdKind::UnixListener).map_err(err)?
                }
                Err(e) => return Err(err(e)),
            };
            out.push(Listener {
                name: name.clone(),
                fd: owned,
            })?;
        }
        Ok(out)
    }

    fn push(&mut self, l: Listener) -> Result<(), ListenError> {
        if self.get(&l.name).is_some() {
            return Err(ListenError::DuplicateName(l.name));
        }
        self.list.push(l);
        Ok(())
    }

    /// The listener named `name`.
    pub fn get(&self, name: &str) -> Option<&Listener> {
        self.list.iter().find(|l| l.name == name)
    }

    /// Takes the listener named `name` out (to own its socket).
    pub fn take(&mut self, name: &str) -> Option<Listener> {
        let i = self.list.iter().position(|l| l.name == name)?;
        Some(self.list.remove(i))
    }

    /// The listeners, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Listener> {
        self.list.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The names, `:`-separated, as `LISTEN_FDNAMES` lists them.
    pub fn names(&self) -> String {
        self.list
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Moves the sockets to fds `first`, `first + 1`, … in order, where a
    /// socket-activated program finds them once passed through exec (see
    /// [`crate::sys::place_fds`]). A number in the range held by an fd
    /// this process inherited through exec and has not taken (listed by
    /// [`crate::inherit::capture`]) is closed first; one held by anything
    /// else fails the call, naming the fd: nothing is ever overwritten.
    pub(crate) fn place_at(self, first: RawFd) -> std::io::Result<Self> {
        let n = RawFd::try_from(self.list.len()).unwrap_or(RawFd::MAX - first);
        let ours: Vec<RawFd> = self.list.iter().map(|l| l.fd.as_raw_fd()).collect();
        for target in first..first.saturating_add(n) {
            if !ours.contains(&target) && crate::sys::fd_is_open(target) {
                // Dropped: closed. Refused (not inherited, already
                // taken): placing fails below, naming the fd.
                let _ = crate::inherit::take_inherited_fd(target, crate::inherit::FdKind::Any);
            }
        }
        let names: Vec<String> = self.list.iter().map(|l| l.name.clone()).collect();
        let fds = self.list.into_iter().map(|l| l.fd).collect();
        let placed = crate::sys::place_fds(fds, first)?;
        Ok(Self {
            list: names
                .into_iter()
                .zip(placed)
                .map(|(name, fd)| Listener { name, fd })
                .collect(),
        })
    }

    /// Places every listener in `spawn`'s child at fds `first`,
    /// `first + 1`, … (the child adopts them with [`Listeners::adopt`],
    /// given [`Listeners::names`]).
    pub fn hand_to<'a>(&'a self, spawn: &mut Spawn<'a>, first: RawFd) {
        for (i, l) in self.list.iter().enumerate() {
            let fd = first + RawFd::try_from(i).unwrap_or(RawFd::MAX - first);
            spawn.fd(fd, l.as_fd());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let s: ListenSpec = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(s.addr, ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap()));
        let s: ListenSpec = "[::1]:0,name=http".parse().unwrap();
        assert_eq!(s.name.as_deref(), Some("http"));
        let s: ListenSpec = "unix:/run/x.sock,mode=0600,owner=nobody,group=nogroup"
            .parse()
            .unwrap();
        assert_eq!(s.addr, ListenAddr::Unix("/run/x.sock".into()));
        assert_eq!((s.mode, s.owner.as_deref()), (0o600, Some("nobody")));
    }

    #[test]
    fn bad_specs_say_why() {
        for (spec, why) in [
            ("localhost", "not an address"),
            ("127.0.0.1", "not an address"),
            ("unix:run/x", "absolute"),
            ("127.0.0.1:80,mode=0600", "unix sockets only"),
            ("unix:/x,mode=999", "octal"),
            ("127.0.0.1:80,name=a:b", "without ':'"),
            ("127.0.0.1:80,color=red", "unknown option"),
            ("127.0.0.1:80,name", "without '='"),
        ] {
            let e = spec.parse::<ListenSpec>().unwrap_err().to_string();
            assert!(e.contains(spec) && e.contains(why), "{spec}: {e}");
        }
    }
}
