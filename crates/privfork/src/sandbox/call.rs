//! One system call as `privfork run`'s supervisor sees it while the
//! calling thread waits in a seccomp notification: its registers, the
//! thread's process and credentials, the paths and addresses read from its
//! memory, and the call rendered with the detail that matters (ioctl
//! requests, socket families and types, open flags… by name).

use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use super::promises::syscall_name;
use crate::sys;

/// The most bytes of a path read from the program's memory.
const PATH_MAX: usize = 4096;

/// One call as the supervisor saw it: its registers, its thread, and what
/// could be read of its memory while the thread waited.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) nr: i64,
    pub(crate) args: [u64; 6],
    /// The calling thread's process.
    pub(crate) tgid: u32,
    /// The process's name (`/proc/PID/comm`).
    pub(crate) comm: String,
    /// The call with its arguments, as a line shows it.
    pub(crate) text: String,
    /// The path the call names, resolved as the program would (its cwd,
    /// its dirfd), if it names one and it could be read.
    pub(crate) path: Option<PathBuf>,
    /// That path as the program wrote it, and the directory fd it is
    /// relative to (`None`: the cwd, or an absolute path).
    pub(super) raw: Option<(PathBuf, Option<i32>)>,
    /// The thread's file-system credentials (`/proc/TID/status`).
    pub(super) creds: Option<Creds>,
    /// The thread's `/proc/TID`, opened while the call was pending.
    pub(super) task: Option<Task>,
}

impl Call {
    /// Reads the call of notification `n` (its thread waiting in the
    /// notification: registers and, for that thread, memory hold still)
    /// from `/proc`, and opens a pidfd of its process. The thread's `/proc`
    /// files are opened first, the notification is then checked to be
    /// still pending (so they are that thread's, not a reused tid's), and
    /// only then read; the pidfd is checked the same way. `None` if the
    /// notification is gone (the thread died or was interrupted before
    /// privfork received it).
    pub(crate) fn read(
        listener: BorrowedFd<'_>,
        n: &sys::Notification,
    ) -> Option<(Self, Option<OwnedFd>)> {
        use rustix::fs::{Mode, OFlags, openat};
        let tid = n.pid;
        let dir = rustix::fs::open(
            format!("/proc/{tid}"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let open = |name: &str| -> Option<std::fs::File> {
            openat(&dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                .ok()
                .map(Into::into)
        };
        let (status, comm, mem) = (open("status"), open("comm"), open("mem"));
        if !sys::notif_id_valid(listener, n.id) {
            return None;
        }
        let read = |f: Option<std::fs::File>| -> Option<String> {
            use std::io::Read;
            let mut s = String::new();
            f?.take(64 << 10).read_to_string(&mut s).ok()?;
            Some(s)
        };
        let status = read(status).unwrap_or_default();
        let tgid = thread_group(&status).unwrap_or(tid);
        let creds = Creds::of(&status);
        let comm = read(comm).map_or_else(|| "?".to_owned(), |s| shown(s.trim_end()));
        // Opened while the notification is pending: its waiting thread
        // keeps the process alive, so `tgid` is still that process.
        let pidfd = i32::try_from(tgid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            })
            .filter(|_| sys::notif_id_valid(listener, n.id));
        let mut call = Self {
            nr: i64::from(n.nr),
            args: n.args,
            tgid,
            comm,
            text: String::new(),
            path: None,
            raw: None,
            creds,
            task: None,
        };
        let task = Task { dir, mem };
        call.text = call.render(Some(&task));
        call.task = Some(task);
        Some((call, pidfd))
    }

    /// The socket address at `addr`, `len` bytes long (at most 128), in
    /// the calling thread's memory, as read while the call waited.
    pub(super) fn read_sockaddr(&self, addr: u64, len: u64) -> Option<Vec<u8>> {
        let mem = self.task.as_ref()?.mem.as_ref()?;
        if addr == 0 {
            return None;
        }
        let mut b = vec![0u8; usize::try_from(len).ok()?.min(128)];
        let n = mem.read_at(&mut b, addr).ok()?;
        b.truncate(n);
        Some(b)
    }

    pub(super) fn name(&self) -> String {
        syscall_name(self.nr).map_or_else(|| format!("syscall {}", self.nr), str::to_owned)
    }

    /// Argument `i` as the kernel reads an `int`.
    pub(super) fn arg_int(&self, i: usize) -> i32 {
        self.args[i] as u32 as i32
    }

    /// `name(detail…)`.
    pub(super) fn render(&mut self, task: Option<&Task>) -> String {
        let a = self.args;
        let mem = task.and_then(|t| t.mem.as_ref());
        let mut parts: Vec<String> = Vec::new();
        let read_path = |addr: u64| mem.and_then(|m| read_cstr(m, addr));
        let mut first_path = None;
        if let Some(spec) = PATH_ARGS.iter().find(|(nr, _)| *nr == self.nr) {
            for &(dirfd, idx) in spec.1 {
                let Some(raw) = read_path(a[idx]) else {
                    parts.push("?".to_owned());
                    continue;
                };
                parts.push(format!("{:?}", raw.display().to_string()));
                if first_path.is_none()
                    && let Some(task) = task
                {
                    let dir = dirfd.map(|d| self.arg_int(d));
                    first_path = Some(self.resolve(task, &raw, dir));
                    self.raw = Some((raw, dir.filter(|&d| d != libc::AT_FDCWD)));
                }
            }
        }
        self.path = first_path.flatten();
        match self.nr {
            libc::SYS_open => parts.push(open_flags(self.arg_int(1))),
            libc::SYS_openat => parts.push(open_flags(self.arg_int(2))),
            libc::SYS_socket | libc::SYS_socketpair => {
                let fam = self.arg_int(0);
                parts = vec![
                    name_of(SOCKET_FAMILIES, fam),
                    socket_type(self.arg_int(1)),
                    protocol(fam, self.arg_int(2)),
                ];
            }
            libc::SYS_ioctl => {
                parts = vec![format!("fd {}", self.arg_int(0)), ioctl_name(a[1] as u32)];
            }
            libc::SYS_connect | libc::SYS_bind => {
                let addr = mem.and_then(|m| sockaddr(m, a[1], a[2]));
                parts = vec![
                    format!("fd {}", self.arg_int(0)),
                    addr.unwrap_or_else(|| "?".to_owned()),
                ];
            }
            libc::SYS_sendto if a[4] != 0 => {
                let addr = mem.and_then(|m| sockaddr(m, a[4], a[5]));
                parts = vec![
                    format!("fd {}", self.arg_int(0)),
                    format!("to {}", addr.unwrap_or_else(|| "?".to_owned())),
                ];
            }
            libc::SYS_setsockopt | libc::SYS_getsockopt => {
                let level = self.arg_int(1);
                parts = vec![
                    format!("fd {}", self.arg_int(0)),
                    name_of(SOCKOPT_LEVELS, level),
                    sockopt_name(level, self.arg_int(2)),
                ];
            }
            libc::SYS_prctl => parts = vec![name_of(PRCTL_OPTIONS, self.arg_int(0))],
            libc::SYS_fcntl => {
                parts = vec![
                    format!("fd {}", self.arg_int(0)),
                    name_of(FCNTL_CMDS, self.arg_int(1)),
                ];
            }
            libc::SYS_kill | libc::SYS_tkill => {
                parts = vec![self.arg_int(0).to_string(), signal_name(self.arg_int(1))];
            }
            libc::SYS_tgkill => {
                parts = vec![
                    self.arg_int(0).to_string(),
                    self.arg_int(1).to_string(),
                    signal_name(self.arg_int(2)),
                ];
            }
            libc::SYS_mmap => parts = vec![prot(self.arg_int(2)), map_flags(self.arg_int(3))],
            libc::SYS_mprotect | libc::SYS_pkey_mprotect => parts = vec![prot(self.arg_int(2))],
            libc::SYS_clone => parts = vec![clone_flags(a[0])],
            libc::SYS_fchown => {
                parts = vec![
                    format!("fd {}", self.arg_int(0)),
                    self.arg_int(1).to_string(),
                    self.arg_int(2).to_string(),
                ];
            }
            libc::SYS_chmod => parts.push(format!("{:#o}", self.arg_int(1))),
            libc::SYS_fchmodat | libc::SYS_fchmodat2 => {
                parts.push(format!("{:#o}", self.arg_int(2)));
            }
            libc::SYS_fchmod => {
                parts = vec![
                    format!("fd {}", self.arg_int(0)),
                    format!("{:#o}", self.arg_int(1)),
                ];
            }
            _ => {}
        }
        format!("{}({})", self.name(), parts.join(", "))
    }

    /// `raw` as the program would reach it: from its cwd, or from the
    /// directory fd `dirfd` (`AT_FDCWD`: the cwd). `None` where privfork's
    /// view of the path would not be the program's: paths through /proc
    /// and the `/dev/fd` links are the program's own files, not privfork's
    /// (and a pipe's or socket's `/proc/PID/fd` entry is not Landlock's to
    /// refuse).
    fn resolve(&self, task: &Task, raw: &Path, dirfd: Option<i32>) -> Option<PathBuf> {
        let base = if raw.is_absolute() {
            PathBuf::from("/")
        } else {
            let link = match dirfd {
                Some(fd) if fd != libc::AT_FDCWD => format!("fd/{fd}"),
                _ => "cwd".to_owned(),
            };
            let dir = rustix::fs::readlinkat(&task.dir, link.as_str(), Vec::new()).ok()?;
            let dir = PathBuf::from(std::ffi::OsString::from_vec(dir.into_bytes()));
            dir.is_absolute().then_some(dir)?
        };
        let mut p = base;
        for c in raw.components() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    p.pop();
                }
                Component::Normal(n) => p.push(n),
            }
        }
        let own = |p: &Path| {
            p.starts_with("/proc") || p.starts_with("/dev/fd") || p.starts_with("/dev/std")
        };
        if own(&p) {
            return None;
        }
        // Symlinks as the kernel follows them (as root: for the report
        // only); a path that does not exist yet keeps its last part.
        let resolved = match p.canonicalize() {
            Ok(c) => c,
            Err(_) => {
                let name = p.file_name()?.to_owned();
                p.parent()?.canonicalize().ok()?.join(name)
            }
        };
        (!own(&resolved)).then_some(resolved)
    }
}

/// A waiting thread's `/proc/TID` directory and memory, opened before its
/// notification was checked to be pending.
#[derive(Debug)]
pub(super) struct Task {
    pub(super) dir: OwnedFd,
    pub(super) mem: Option<std::fs::File>,
}

/// A thread's file-system credentials.
#[derive(Debug, Clone)]
pub(super) struct Creds {
    pub(super) fsuid: u32,
    pub(super) fsgid: u32,
    pub(super) groups: Vec<u32>,
    /// Real, effective, saved and file-system uid.
    pub(super) uids: [u32; 4],
    /// Real, effective, saved and file-system gid.
    pub(super) gids: [u32; 4],
}

impl Creds {
    /// From a thread's `/proc/TID/status`: the fourth ids of `Uid:` and
    /// `Gid:` (real, effective, saved, file-system) and `Groups:`.
    fn of(status: &str) -> Option<Self> {
        let line = |key: &str| status.lines().find_map(|l| l.strip_prefix(key));
        let fs = |key: &str| line(key)?.split_whitespace().nth(3)?.parse().ok();
        let groups = line("Groups:")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<u32>, _>>()
            .ok()?;
        let four = |key: &str| -> Option<[u32; 4]> {
            let mut ids = line(key)?.split_whitespace().map(str::parse::<u32>);
            let mut out = [0; 4];
            for id in &mut out {
                *id = ids.next()?.ok()?;
            }
            Some(out)
        };
        Some(Self {
            fsuid: fs("Uid:")?,
            fsgid: fs("Gid:")?,
            groups,
            uids: four("Uid:")?,
            gids: four("Gid:")?,
        })
    }
}

/// The thread group (process) in a thread's `/proc/TID/status`.
fn thread_group(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// A NUL-terminated string at `addr` in the memory `mem` (at most
/// [`PATH_MAX`] bytes).
fn read_cstr(mem: &std::fs::File, addr: u64) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if addr == 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut chunk = [0u8; 256];
    while out.len() < PATH_MAX {
        // Up to the end of the page, so a string near an unmapped page
        // is still read.
        let at = addr + out.len() as u64;
        let room = (4096 - (at % 4096) as usize).min(chunk.len());
        let n = mem.read_at(&mut chunk[..room], at).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Some(PathBuf::from(std::ffi::OsStr::from_bytes(&out)));
        }
        out.extend_from_slice(&chunk[..n]);
    }
    None
}

/// A socket address at `addr`, `len` bytes long, as text.
fn sockaddr(mem: &std::fs::File, addr: u64, len: u64) -> Option<String> {
    if addr == 0 {
        return None;
    }
    let len = usize::try_from(len).ok()?.min(128);
    let mut b = vec![0u8; len];
    let n = mem.read_at(&mut b, addr).ok()?;
    b.truncate(n);
    let family = i32::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
    let port = || Some(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
    Some(match family {
        libc::AF_INET => {
            let ip = std::net::Ipv4Addr::new(*b.get(4)?, *b.get(5)?, *b.get(6)?, *b.get(7)?);
            format!("{ip}:{}", port()?)
        }
        libc::AF_INET6 => {
            let octets: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            format!("[{}]:{}", std::net::Ipv6Addr::from(octets), port()?)
        }
        libc::AF_UNIX => {
            let path = b.get(2..).unwrap_or_default();
            match path.split_first() {
                Some((0, abs)) => format!("unix @{:?}", String::from_utf8_lossy(abs)),
                _ => {
                    let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                    format!("unix {:?}", String::from_utf8_lossy(&path[..end]))
                }
            }
        }
        other => name_of(SOCKET_FAMILIES, other),
    })
}

/// `(syscall, [(dirfd argument, path argument)])` for calls that name paths.
type PathSpec = (i64, &'static [(Option<usize>, usize)]);
static PATH_ARGS: &[PathSpec] = &[
    (libc::SYS_open, &[(None, 0)]),
    (libc::SYS_openat, &[(Some(0), 1)]),
    (libc::SYS_creat, &[(None, 0)]),
    (libc::SYS_execve, &[(None, 0)]),
    (libc::SYS_execveat, &[(Some(0), 1)]),
    (libc::SYS_truncate, &[(None, 0)]),
    (libc::SYS_mkdir, &[(None, 0)]),
    (libc::SYS_mkdirat, &[(Some(0), 1)]),
    (libc::SYS_rmdir, &[(None, 0)]),
    (libc::SYS_unlink, &[(None, 0)]),
    (libc::SYS_unlinkat, &[(Some(0), 1)]),
    (libc::SYS_mknod, &[(None, 0)]),
    (libc::SYS_mknodat, &[(Some(0), 1)]),
    (libc::SYS_symlink, &[(None, 1)]),
    (libc::SYS_symlinkat, &[(Some(1), 2)]),
    (libc::SYS_link, &[(None, 1), (None, 0)]),
    (libc::SYS_linkat, &[(Some(2), 3), (Some(0), 1)]),
    (libc::SYS_rename, &[(None, 1), (None, 0)]),
    (libc::SYS_renameat, &[(Some(2), 3), (Some(0), 1)]),
    (libc::SYS_renameat2, &[(Some(2), 3), (Some(0), 1)]),
    (libc::SYS_chmod, &[(None, 0)]),
    (libc::SYS_fchmodat, &[(Some(0), 1)]),
    (libc::SYS_fchmodat2, &[(Some(0), 1)]),
    (libc::SYS_chown, &[(None, 0)]),
    (libc::SYS_lchown, &[(None, 0)]),
    (libc::SYS_fchownat, &[(Some(0), 1)]),
    (libc::SYS_access, &[(None, 0)]),
    (libc::SYS_faccessat, &[(Some(0), 1)]),
    (libc::SYS_faccessat2, &[(Some(0), 1)]),
    (libc::SYS_stat, &[(None, 0)]),
    (libc::SYS_lstat, &[(None, 0)]),
    (libc::SYS_statfs, &[(None, 0)]),
    (libc::SYS_readlink, &[(None, 0)]),
    (libc::SYS_readlinkat, &[(Some(0), 1)]),
    (libc::SYS_chdir, &[(None, 0)]),
    (libc::SYS_utimes, &[(None, 0)]),
    (libc::SYS_chroot, &[(None, 0)]),
    (libc::SYS_mount, &[(None, 1)]),
    (libc::SYS_umount2, &[(None, 0)]),
    (libc::SYS_getxattr, &[(None, 0)]),
    (libc::SYS_lgetxattr, &[(None, 0)]),
    (libc::SYS_inotify_add_watch, &[(None, 1)]),
];

/// `(value, name)` tables for the arguments lines name.
pub(super) type Names = &'static [(i32, &'static str)];

/// `NAME` for `v` from `table`, or the number.
pub(super) fn name_of(table: Names, v: i32) -> String {
    table
        .iter()
        .find(|(n, _)| *n == v)
        .map_or_else(|| v.to_string(), |(_, s)| (*s).to_owned())
}

pub(super) static SOCKET_FAMILIES: Names = &[
    (libc::AF_UNSPEC, "AF_UNSPEC"),
    (libc::AF_UNIX, "AF_UNIX"),
    (libc::AF_INET, "AF_INET"),
    (libc::AF_INET6, "AF_INET6"),
    (libc::AF_NETLINK, "AF_NETLINK"),
    (libc::AF_PACKET, "AF_PACKET"),
    (libc::AF_KEY, "AF_KEY"),
    (libc::AF_CAN, "AF_CAN"),
    (libc::AF_BLUETOOTH, "AF_BLUETOOTH"),
    (libc::AF_ALG, "AF_ALG"),
    (libc::AF_VSOCK, "AF_VSOCK"),
    (libc::AF_XDP, "AF_XDP"),
    (libc::AF_TIPC, "AF_TIPC"),
    (libc::AF_RDS, "AF_RDS"),
];

fn socket_type(t: i32) -> String {
    let base = name_of(
        &[
            (libc::SOCK_STREAM, "SOCK_STREAM"),
            (libc::SOCK_DGRAM, "SOCK_DGRAM"),
            (libc::SOCK_RAW, "SOCK_RAW"),
            (libc::SOCK_RDM, "SOCK_RDM"),
            (libc::SOCK_SEQPACKET, "SOCK_SEQPACKET"),
            (10, "SOCK_PACKET"),
        ],
        t & 0xf,
    );
    let mut s = base;
    if t & libc::SOCK_NONBLOCK != 0 {
        s.push_str("|SOCK_NONBLOCK");
    }
    if t & libc::SOCK_CLOEXEC != 0 {
        s.push_str("|SOCK_CLOEXEC");
    }
    s
}

fn protocol(family: i32, p: i32) -> String {
    let table: Names = match family {
        libc::AF_NETLINK => &[
            (libc::NETLINK_ROUTE, "NETLINK_ROUTE"),
            (libc::NETLINK_SOCK_DIAG, "NETLINK_SOCK_DIAG"),
            (libc::NETLINK_AUDIT, "NETLINK_AUDIT"),
            (libc::NETLINK_NETFILTER, "NETLINK_NETFILTER"),
            (libc::NETLINK_KOBJECT_UEVENT, "NETLINK_KOBJECT_UEVENT"),
            (libc::NETLINK_GENERIC, "NETLINK_GENERIC"),
        ],
        libc::AF_INET | libc::AF_INET6 => &[
            (libc::IPPROTO_TCP, "IPPROTO_TCP"),
            (libc::IPPROTO_UDP, "IPPROTO_UDP"),
            (libc::IPPROTO_ICMP, "IPPROTO_ICMP"),
            (libc::IPPROTO_ICMPV6, "IPPROTO_ICMPV6"),
            (libc::IPPROTO_SCTP, "IPPROTO_SCTP"),
            (libc::IPPROTO_UDPLITE, "IPPROTO_UDPLITE"),
            (libc::IPPROTO_RAW, "IPPROTO_RAW"),
            (libc::IPPROTO_MPTCP, "IPPROTO_MPTCP"),
        ],
        _ => &[],
    };
    name_of(table, p)
}

/// Terminal and file ioctl requests by name.
static IOCTLS: &[(u32, &str)] = &[
    (0x5401, "TCGETS"),
    (0x5402, "TCSETS"),
    (0x5403, "TCSETSW"),
    (0x5404, "TCSETSF"),
    (0x5405, "TCGETA"),
    (0x5406, "TCSETA"),
    (0x5409, "TCSBRK"),
    (0x540A, "TCXONC"),
    (0x540B, "TCFLSH"),
    (0x540C, "TIOCEXCL"),
    (0x540D, "TIOCNXCL"),
    (0x540E, "TIOCSCTTY"),
    (0x540F, "TIOCGPGRP"),
    (0x5410, "TIOCSPGRP"),
    (0x5411, "TIOCOUTQ"),
    (0x5412, "TIOCSTI"),
    (0x5413, "TIOCGWINSZ"),
    (0x5414, "TIOCSWINSZ"),
    (0x5415, "TIOCMGET"),
    (0x541B, "FIONREAD"),
    (0x541C, "TIOCLINUX"),
    (0x541D, "TIOCCONS"),
    (0x541E, "TIOCGSERIAL"),
    (0x5421, "FIONBIO"),
    (0x5422, "TIOCNOTTY"),
    (0x5429, "TIOCGSID"),
    (0x802c_542a, "TCGETS2"),
    (0x5441, "TIOCGPTPEER"),
    (0x5450, "FIONCLEX"),
    (0x5451, "FIOCLEX"),
    (0x5452, "FIOASYNC"),
    (0x5460, "FIOQSIZE"),
    (0x8004_5430, "TIOCGPTN"),
    (0x4004_5431, "TIOCSPTLCK"),
    (0x8004_5440, "TIOCGEXCL"),
    (0x4004_9409, "FICLONE"),
    (0x4020_940d, "FICLONERANGE"),
    (0x8008_6601, "FS_IOC_GETFLAGS"),
    (0x4008_6602, "FS_IOC_SETFLAGS"),
    (0xc020_660b, "FS_IOC_FIEMAP"),
    (0x8008_1272, "BLKGETSIZE64"),
    (0x8912, "SIOCGIFCONF"),
    (0x8913, "SIOCGIFFLAGS"),
    (0x8914, "SIOCSIFFLAGS"),
    (0x8915, "SIOCGIFADDR"),
    (0x8927, "SIOCGIFHWADDR"),
    (0x8933, "SIOCGIFINDEX"),
    (0x4B33, "KDGKBTYPE"),
    (0x5603, "VT_GETSTATE"),
    (0x8004_5200, "RNDGETENTCNT"),
];

pub(super) fn ioctl_name(req: u32) -> String {
    IOCTLS
        .iter()
        .find(|(n, _)| *n == req)
        .map_or_else(|| format!("{req:#x}"), |(_, s)| (*s).to_owned())
}

static SOCKOPT_LEVELS: Names = &[
    (libc::SOL_SOCKET, "SOL_SOCKET"),
    (libc::IPPROTO_IP, "IPPROTO_IP"),
    (libc::IPPROTO_TCP, "IPPROTO_TCP"),
    (libc::IPPROTO_UDP, "IPPROTO_UDP"),
    (libc::IPPROTO_IPV6, "IPPROTO_IPV6"),
    (libc::SOL_NETLINK, "SOL_NETLINK"),
    (libc::SOL_PACKET, "SOL_PACKET"),
];

fn sockopt_name(level: i32, opt: i32) -> String {
    let table: Names = match level {
        libc::SOL_SOCKET => &[
            (libc::SO_REUSEADDR, "SO_REUSEADDR"),
            (libc::SO_TYPE, "SO_TYPE"),
            (libc::SO_ERROR, "SO_ERROR"),
            (libc::SO_BROADCAST, "SO_BROADCAST"),
            (libc::SO_SNDBUF, "SO_SNDBUF"),
            (libc::SO_RCVBUF, "SO_RCVBUF"),
            (libc::SO_KEEPALIVE, "SO_KEEPALIVE"),
            (libc::SO_PRIORITY, "SO_PRIORITY"),
            (libc::SO_LINGER, "SO_LINGER"),
            (libc::SO_REUSEPORT, "SO_REUSEPORT"),
            (libc::SO_RCVTIMEO, "SO_RCVTIMEO"),
            (libc::SO_SNDTIMEO, "SO_SNDTIMEO"),
            (libc::SO_BINDTODEVICE, "SO_BINDTODEVICE"),
            (libc::SO_ATTACH_FILTER, "SO_ATTACH_FILTER"),
            (libc::SO_MARK, "SO_MARK"),
        ],
        libc::IPPROTO_TCP => &[
            (libc::TCP_NODELAY, "TCP_NODELAY"),
            (libc::TCP_KEEPIDLE, "TCP_KEEPIDLE"),
            (libc::TCP_KEEPINTVL, "TCP_KEEPINTVL"),
            (libc::TCP_KEEPCNT, "TCP_KEEPCNT"),
            (libc::TCP_FASTOPEN, "TCP_FASTOPEN"),
            (30, "TCP_FASTOPEN_CONNECT"),
            (31, "TCP_ULP"),
            (libc::TCP_REPAIR, "TCP_REPAIR"),
            (libc::TCP_CONGESTION, "TCP_CONGESTION"),
            (libc::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"),
        ],
        libc::IPPROTO_IP => &[
            (libc::IP_TOS, "IP_TOS"),
            (libc::IP_TTL, "IP_TTL"),
            (libc::IP_MULTICAST_IF, "IP_MULTICAST_IF"),
            (libc::IP_MULTICAST_TTL, "IP_MULTICAST_TTL"),
            (libc::IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP"),
            (libc::IP_ADD_MEMBERSHIP, "IP_ADD_MEMBERSHIP"),
            (libc::IP_DROP_MEMBERSHIP, "IP_DROP_MEMBERSHIP"),
            (libc::IP_TRANSPARENT, "IP_TRANSPARENT"),
            (libc::IP_FREEBIND, "IP_FREEBIND"),
            (42, "MCAST_JOIN_GROUP"),
        ],
        libc::IPPROTO_IPV6 => &[
            (libc::IPV6_V6ONLY, "IPV6_V6ONLY"),
            (libc::IPV6_ADD_MEMBERSHIP, "IPV6_JOIN_GROUP"),
            (libc::IPV6_DROP_MEMBERSHIP, "IPV6_LEAVE_GROUP"),
            (libc::IPV6_MULTICAST_IF, "IPV6_MULTICAST_IF"),
            (libc::IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS"),
            (libc::IPV6_MULTICAST_LOOP, "IPV6_MULTICAST_LOOP"),
            (42, "MCAST_JOIN_GROUP"),
        ],
        _ => &[],
    };
    name_of(table, opt)
}

pub(super) static PRCTL_OPTIONS: Names = &[
    (libc::PR_SET_PDEATHSIG, "PR_SET_PDEATHSIG"),
    (libc::PR_GET_PDEATHSIG, "PR_GET_PDEATHSIG"),
    (libc::PR_GET_DUMPABLE, "PR_GET_DUMPABLE"),
    (libc::PR_SET_DUMPABLE, "PR_SET_DUMPABLE"),
    (libc::PR_GET_KEEPCAPS, "PR_GET_KEEPCAPS"),
    (libc::PR_SET_KEEPCAPS, "PR_SET_KEEPCAPS"),
    (libc::PR_SET_NAME, "PR_SET_NAME"),
    (libc::PR_GET_NAME, "PR_GET_NAME"),
    (libc::PR_GET_SECCOMP, "PR_GET_SECCOMP"),
    (libc::PR_SET_SECCOMP, "PR_SET_SECCOMP"),
    (libc::PR_CAPBSET_READ, "PR_CAPBSET_READ"),
    (libc::PR_CAPBSET_DROP, "PR_CAPBSET_DROP"),
    (libc::PR_SET_MM, "PR_SET_MM"),
    (libc::PR_SET_CHILD_SUBREAPER, "PR_SET_CHILD_SUBREAPER"),
    (libc::PR_GET_CHILD_SUBREAPER, "PR_GET_CHILD_SUBREAPER"),
    (libc::PR_SET_NO_NEW_PRIVS, "PR_SET_NO_NEW_PRIVS"),
    (libc::PR_GET_NO_NEW_PRIVS, "PR_GET_NO_NEW_PRIVS"),
    (libc::PR_GET_TID_ADDRESS, "PR_GET_TID_ADDRESS"),
    (libc::PR_SET_THP_DISABLE, "PR_SET_THP_DISABLE"),
    (libc::PR_GET_THP_DISABLE, "PR_GET_THP_DISABLE"),
    (libc::PR_CAP_AMBIENT, "PR_CAP_AMBIENT"),
    (libc::PR_SET_TIMERSLACK, "PR_SET_TIMERSLACK"),
    (libc::PR_SET_PTRACER, "PR_SET_PTRACER"),
    (0x5356_4d41, "PR_SET_VMA"),
];

static FCNTL_CMDS: Names = &[
    (libc::F_DUPFD, "F_DUPFD"),
    (libc::F_GETFD, "F_GETFD"),
    (libc::F_SETFD, "F_SETFD"),
    (libc::F_GETFL, "F_GETFL"),
    (libc::F_SETFL, "F_SETFL"),
    (libc::F_GETLK, "F_GETLK"),
    (libc::F_SETLK, "F_SETLK"),
    (libc::F_SETLKW, "F_SETLKW"),
    (libc::F_SETOWN, "F_SETOWN"),
    (libc::F_GETOWN, "F_GETOWN"),
    (10, "F_SETSIG"),
    (11, "F_GETSIG"),
    (libc::F_SETLEASE, "F_SETLEASE"),
    (libc::F_GETLEASE, "F_GETLEASE"),
    (libc::F_NOTIFY, "F_NOTIFY"),
    (libc::F_DUPFD_CLOEXEC, "F_DUPFD_CLOEXEC"),
    (libc::F_SETPIPE_SZ, "F_SETPIPE_SZ"),
    (libc::F_GETPIPE_SZ, "F_GETPIPE_SZ"),
    (libc::F_ADD_SEALS, "F_ADD_SEALS"),
    (libc::F_GET_SEALS, "F_GET_SEALS"),
    (libc::F_OFD_GETLK, "F_OFD_GETLK"),
    (libc::F_OFD_SETLK, "F_OFD_SETLK"),
    (libc::F_OFD_SETLKW, "F_OFD_SETLKW"),
];

fn signal_name(sig: i32) -> String {
    match rustix::process::Signal::from_named_raw(sig) {
        Some(s) => format!("{s:?}"),
        None => sig.to_string(),
    }
}

/// `a|b|c` of the set bits of `v` named in `table`, the rest in hex.
fn flags(v: u64, table: &[(u64, &str)], zero: &str) -> String {
    let mut rest = v;
    let mut out: Vec<String> = Vec::new();
    for (bit, name) in table {
        if *bit != 0 && rest & bit == *bit {
            out.push((*name).to_owned());
            rest &= !bit;
        }
    }
    if rest != 0 {
        out.push(format!("{rest:#x}"));
    }
    if out.is_empty() {
        zero.to_owned()
    } else {
        out.join("|")
    }
}

fn open_flags(f: i32) -> String {
    let access = match f & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        libc::O_RDWR => "O_RDWR",
        _ => "O_ACCMODE",
    };
    let rest = flags(
        u64::from((f & !libc::O_ACCMODE) as u32),
        &[
            (libc::O_TMPFILE as u64, "O_TMPFILE"),
            (libc::O_SYNC as u64, "O_SYNC"),
            (libc::O_CREAT as u64, "O_CREAT"),
            (libc::O_EXCL as u64, "O_EXCL"),
            (libc::O_NOCTTY as u64, "O_NOCTTY"),
            (libc::O_TRUNC as u64, "O_TRUNC"),
            (libc::O_APPEND as u64, "O_APPEND"),
            (libc::O_NONBLOCK as u64, "O_NONBLOCK"),
            (libc::O_DSYNC as u64, "O_DSYNC"),
            (libc::O_DIRECT as u64, "O_DIRECT"),
            (libc::O_LARGEFILE as u64, "O_LARGEFILE"),
            (libc::O_DIRECTORY as u64, "O_DIRECTORY"),
            (libc::O_NOFOLLOW as u64, "O_NOFOLLOW"),
            (libc::O_NOATIME as u64, "O_NOATIME"),
            (libc::O_CLOEXEC as u64, "O_CLOEXEC"),
            (libc::O_PATH as u64, "O_PATH"),
        ],
        "",
    );
    if rest.is_empty() {
        access.to_owned()
    } else {
        format!("{access}|{rest}")
    }
}

fn prot(p: i32) -> String {
    flags(
        u64::from(p as u32),
        &[
            (libc::PROT_READ as u64, "PROT_READ"),
            (libc::PROT_WRITE as u64, "PROT_WRITE"),
            (libc::PROT_EXEC as u64, "PROT_EXEC"),
        ],
        "PROT_NONE",
    )
}

fn map_flags(f: i32) -> String {
    flags(
        u64::from(f as u32),
        &[
            (libc::MAP_SHARED as u64, "MAP_SHARED"),
            (libc::MAP_PRIVATE as u64, "MAP_PRIVATE"),
            (libc::MAP_FIXED as u64, "MAP_FIXED"),
            (libc::MAP_ANONYMOUS as u64, "MAP_ANONYMOUS"),
        ],
        "0",
    )
}

/// Every `CLONE_NEW*` flag.
pub(super) const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32 as u64;

fn clone_flags(f: u64) -> String {
    let c = |v: i32| u64::from(v as u32);
    flags(
        f & !0xff,
        &[
            (c(libc::CLONE_VM), "CLONE_VM"),
            (c(libc::CLONE_FS), "CLONE_FS"),
            (c(libc::CLONE_FILES), "CLONE_FILES"),
            (c(libc::CLONE_SIGHAND), "CLONE_SIGHAND"),
            (c(libc::CLONE_PIDFD), "CLONE_PIDFD"),
            (c(libc::CLONE_PTRACE), "CLONE_PTRACE"),
            (c(libc::CLONE_VFORK), "CLONE_VFORK"),
            (c(libc::CLONE_PARENT), "CLONE_PARENT"),
            (c(libc::CLONE_THREAD), "CLONE_THREAD"),
            (c(libc::CLONE_NEWNS), "CLONE_NEWNS"),
            (c(libc::CLONE_SYSVSEM), "CLONE_SYSVSEM"),
            (c(libc::CLONE_SETTLS), "CLONE_SETTLS"),
            (c(libc::CLONE_PARENT_SETTID), "CLONE_PARENT_SETTID"),
            (c(libc::CLONE_CHILD_CLEARTID), "CLONE_CHILD_CLEARTID"),
            (c(libc::CLONE_UNTRACED), "CLONE_UNTRACED"),
            (c(libc::CLONE_CHILD_SETTID), "CLONE_CHILD_SETTID"),
            (c(libc::CLONE_NEWCGROUP), "CLONE_NEWCGROUP"),
            (c(libc::CLONE_NEWUTS), "CLONE_NEWUTS"),
            (c(libc::CLONE_NEWIPC), "CLONE_NEWIPC"),
            (c(libc::CLONE_NEWUSER), "CLONE_NEWUSER"),
            (c(libc::CLONE_NEWPID), "CLONE_NEWPID"),
            (c(libc::CLONE_NEWNET), "CLONE_NEWNET"),
            (c(libc::CLONE_IO), "CLONE_IO"),
        ],
        "0",
    )
}

/// `text` as a line may show it: as is if it is printable, quoted with
/// escapes otherwise (a program's name or path must not put control
/// characters on privfork's terminal).
pub(super) fn shown(text: &str) -> String {
    if text.chars().all(|c| !c.is_control()) {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::sandbox) fn call(nr: i64, args: [u64; 6]) -> Call {
        let mut c = Call {
            nr,
            args,
            tgid: 0,
            comm: "t".into(),
            text: String::new(),
            path: None,
            raw: None,
            creds: None,
            task: None,
        };
        c.text = c.render(None);
        c
    }

    #[test]
    fn the_detail_that_matters_is_named() {
        let c = call(libc::SYS_ioctl, [1, 0x5412, 0, 0, 0, 0]);
        assert_eq!(c.text, "ioctl(fd 1, TIOCSTI)");
        let c = call(
            libc::SYS_socket,
            [16, (libc::SOCK_RAW | libc::SOCK_CLOEXEC) as u64, 0, 0, 0, 0],
        );
        assert_eq!(
            c.text,
            "socket(AF_NETLINK, SOCK_RAW|SOCK_CLOEXEC, NETLINK_ROUTE)"
        );
        assert_eq!(
            open_flags(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC),
            "O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC"
        );
        assert_eq!(
            open_flags(libc::O_TMPFILE | libc::O_RDWR),
            "O_RDWR|O_TMPFILE"
        );
    }
}
