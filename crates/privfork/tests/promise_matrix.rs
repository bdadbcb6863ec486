//! Every operation against every promise, each layer alone.
//!
//! For each operation: a positive control (the same operation in a fork-as
//! child as nobody, unsandboxed, works), then, for `stdio` alone and for
//! `stdio` plus each promise, the operation under the seccomp filter alone
//! and under Landlock alone (`Layers`, a test-only knob: a test in which one
//! layer hides the other tests neither). The seccomp verdict must follow the
//! promise table; the Landlock verdict is the ruleset's (the unveiled
//! directory, no TCP port allowed, the scopes) whatever the promises.
//! Files are world-readable ones the test creates, inside and outside the
//! unveiled directory. Network operations use 127.0.0.1 only. Operations
//! on sockets handed to a worker (made before the sandbox: a listener with
//! a client waiting, an unconnected TCP and an unconnected UDP socket) run
//! in a plain forked child as nobody instead, since fork-as hands its child
//! no fd.

mod support;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use privfork::sandbox::promises::ALL;
use privfork::sandbox::{Layers, Sandbox};
use privfork::{ForkAs, ForkAsError};
use support::{TempDir, require_root};

const NOBODY: u32 = 65534;

/// What the operations work on.
struct World {
    inside: PathBuf,
    outside: PathBuf,
    victim: libc::pid_t,
    /// A TCP listener on 127.0.0.1, made before any sandbox: the one a
    /// worker is handed.
    listener: std::net::TcpListener,
    port: u16,
    /// Sockets handed to the child, fresh for each run.
    handed: Handed,
}

/// Sockets made before the sandbox, as a worker may be handed them: the
/// refusals of `connect` and `bind` on them are the promises', not a
/// missing `socket()`. Made anew for each run (a connect in one run would
/// leave the next one a connected socket).
struct Handed {
    /// An unconnected, unbound TCP socket.
    tcp: OwnedFd,
    /// An unconnected, unbound UDP socket.
    udp: OwnedFd,
    /// A client connected to the listener, waiting in its backlog to be
    /// accepted.
    _client: std::net::TcpStream,
}

impl Handed {
    fn new(port: u16) -> Self {
        Self {
            tcp: socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap(),
            udp: socket(libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap(),
            _client: std::net::TcpStream::connect(("127.0.0.1", port)).unwrap(),
        }
    }
}

/// An operation: its name, promises it needs besides stdio (to get as far
/// as the call tested), the promises that allow it (`stdio`: stdio alone
/// does), whether Landlock alone refuses it, and the operation (0 or the
/// errno it failed with).
struct Op {
    name: &'static str,
    needs: &'static str,
    by: &'static [&'static str],
    landlock_refuses: bool,
    run: fn(&World) -> i32,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn rc(r: libc::c_long) -> i32 {
    if r < 0 { errno() } else { 0 }
}

fn io<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn socket(family: i32, kind: i32, proto: i32) -> Result<OwnedFd, i32> {
    // SAFETY: integer arguments; a returned fd is owned by nobody else.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        Err(errno())
    } else {
        // SAFETY: a fresh fd from socket(2).
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn loopback(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

const SIN_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

fn tcp_connect(w: &World, fastopen: bool) -> i32 {
    let s = match socket(libc::AF_INET, libc::SOCK_STREAM, 0) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let addr = loopback(w.port);
    let ptr = (&raw const addr).cast::<libc::sockaddr>();
    // SAFETY: `addr` is a live sockaddr_in of SIN_LEN bytes; the payload is
    // one byte of a static.
    rc(unsafe {
        if fastopen {
            libc::sendto(
                s.as_raw_fd(),
                b"x".as_ptr().cast(),
                1,
                libc::MSG_FASTOPEN,
                ptr,
                SIN_LEN,
            ) as libc::c_long
        } else {
            libc::c_long::from(libc::connect(s.as_raw_fd(), ptr, SIN_LEN))
        }
    })
}

fn connect_to(s: &OwnedFd, port: u16) -> i32 {
    let addr = loopback(port);
    // SAFETY: `addr` is a live sockaddr_in of SIN_LEN bytes.
    rc(libc::c_long::from(unsafe {
        libc::connect(s.as_raw_fd(), (&raw const addr).cast(), SIN_LEN)
    }))
}

fn bind_to_any_port(s: &OwnedFd) -> i32 {
    let addr = loopback(0);
    // SAFETY: `addr` is a live sockaddr_in of SIN_LEN bytes.
    rc(libc::c_long::from(unsafe {
        libc::bind(s.as_raw_fd(), (&raw const addr).cast(), SIN_LEN)
    }))
}

/// Accepts the waiting client on the handed listener (as std and tokio
/// do: `accept4` with SOCK_CLOEXEC, and SOCK_NONBLOCK) and answers it.
fn accept_and_answer(w: &World) -> i32 {
    let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: NULL address and length: the peer's address is not wanted.
    let fd = unsafe {
        libc::accept4(
            w.listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            flags,
        )
    };
    if fd < 0 {
        return errno();
    }
    // SAFETY: a fresh fd from accept4(2).
    let conn = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: one byte of a static.
    rc(unsafe { libc::write(conn.as_raw_fd(), b"x".as_ptr().cast(), 1) } as libc::c_long)
}

/// `sendmsg` with a destination (`msg_name`) on the handed unconnected UDP
/// socket.
fn sendmsg_to(s: &OwnedFd, port: u16) -> i32 {
    let mut addr = loopback(port);
    let mut iov = libc::iovec {
        iov_base: b"x".as_ptr().cast_mut().cast(),
        iov_len: 1,
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = SIN_LEN;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: `msg` points at live locals; the kernel only reads them.
    rc(unsafe { libc::sendmsg(s.as_raw_fd(), &msg, 0) } as libc::c_long)
}

fn setsockopt_int(s: &OwnedFd, level: i32, name: i32, value: i32) -> i32 {
    // SAFETY: `value` is a live c_int of the length given.
    rc(libc::c_long::from(unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    }))
}

fn socketpair(kind: i32) -> Result<[OwnedFd; 2], i32> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } < 0
    {
        return Err(errno());
    }
    // SAFETY: two fresh fds from socketpair(2).
    Ok(unsafe { [OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])] })
}

fn sys(nr: libc::c_long, a: [libc::c_long; 4]) -> i32 {
    // SAFETY: the callers pass integers, or pointers to live locals of the
    // sizes the call expects.
    rc(unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3]) })
}

#[rustfmt::skip]
const OPS: &[Op] = &[
    // wpath opens without O_CREAT and cpath opens with any flags: a read
    // open passes both; Landlock decides what is read.
    Op { name: "read_inside", needs: "", by: &["rpath", "wpath", "cpath"], landlock_refuses: false,
         run: |w| io(std::fs::read(w.inside.join("file"))) },
    Op { name: "read_outside", needs: "", by: &["rpath", "wpath", "cpath"], landlock_refuses: true,
         run: |w| io(std::fs::read(w.outside.join("file"))) },
    Op { name: "write_inside", needs: "", by: &["wpath", "cpath"], landlock_refuses: false,
         run: |w| io(std::fs::OpenOptions::new().write(true).open(w.inside.join("file"))) },
    Op { name: "create_inside", needs: "", by: &["cpath"], landlock_refuses: false,
         run: |w| io(std::fs::File::create_new(w.inside.join("new"))) },
    Op { name: "create_outside", needs: "", by: &["cpath"], landlock_refuses: true,
         run: |w| io(std::fs::File::create_new(w.outside.join("new"))) },
    Op { name: "mkfifo_inside", needs: "", by: &["dpath"], landlock_refuses: false,
         run: |w| io(rustix::fs::mknodat(rustix::fs::CWD, w.inside.join("fifo"),
             rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0).map_err(std::io::Error::from)) },
    // fattr changes modes through an fd only (fchmod); the path form is
    // allowed by no promise (Landlock does not govern chmod).
    Op { name: "fchmod_inside", needs: "rpath", by: &["fattr"], landlock_refuses: false,
         run: |w| match std::fs::File::open(w.inside.join("mine")) {
             Ok(f) => io(f.set_permissions(std::fs::Permissions::from_mode(0o644))),
             Err(e) => e.raw_os_error().unwrap_or(-1),
         } },
    Op { name: "chmod_path_inside", needs: "", by: &[], landlock_refuses: false,
         run: |w| io(std::fs::set_permissions(w.inside.join("mine"), std::fs::Permissions::from_mode(0o644))) },
    Op { name: "flock_inside", needs: "rpath", by: &["flock"], landlock_refuses: false,
         run: |w| match std::fs::File::open(w.inside.join("file")) {
             Ok(f) => io(rustix::fs::flock(&f, rustix::fs::FlockOperation::LockShared).map_err(std::io::Error::from)),
             Err(e) => e.raw_os_error().unwrap_or(-1),
         } },
    Op { name: "socket_tcp", needs: "", by: &["inet"], landlock_refuses: false,
         run: |_| socket(libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP).map_or_else(|e| e, |_| 0) },
    Op { name: "socket_udp", needs: "", by: &["inet", "dns"], landlock_refuses: false,
         run: |_| socket(libc::AF_INET, libc::SOCK_DGRAM, 0).map_or_else(|e| e, |_| 0) },
    Op { name: "socket_mptcp", needs: "", by: &[], landlock_refuses: false,
         run: |_| socket(libc::AF_INET, libc::SOCK_STREAM, 262).map_or_else(|e| e, |_| 0) },
    Op { name: "socket_unix", needs: "", by: &["unix"], landlock_refuses: false,
         run: |_| socket(libc::AF_UNIX, libc::SOCK_STREAM, 0).map_or_else(|e| e, |_| 0) },
    Op { name: "socket_netlink", needs: "", by: &[], landlock_refuses: false,
         run: |_| socket(libc::AF_NETLINK, libc::SOCK_RAW, 0).map_or_else(|e| e, |_| 0) },
    Op { name: "socketpair_stream", needs: "", by: &["stdio"], landlock_refuses: false,
         run: |_| socketpair(libc::SOCK_STREAM).map_or_else(|e| e, |_| 0) },
    Op { name: "socketpair_dgram", needs: "", by: &[], landlock_refuses: false,
         run: |_| socketpair(libc::SOCK_DGRAM).map_or_else(|e| e, |_| 0) },
    // sendto with a destination on a connected pair: EISCONN means the
    // kernel saw it (allowed).
    Op { name: "sendto_with_address", needs: "", by: &["inet", "unix", "dns"], landlock_refuses: false,
         run: |_| match socketpair(libc::SOCK_STREAM) {
             Err(e) => e,
             Ok(p) => {
                 let addr = loopback(9);
                 // SAFETY: a live sockaddr_in and one byte of a static.
                 let r = unsafe { libc::sendto(p[0].as_raw_fd(), b"x".as_ptr().cast(), 1, 0,
                     (&raw const addr).cast(), SIN_LEN) };
                 if r < 0 && errno() != libc::EISCONN { errno() } else { 0 }
             }
         } },
    Op { name: "tcp_connect_no_port", needs: "inet", by: &["stdio"], landlock_refuses: true,
         run: |w| tcp_connect(w, false) },
    Op { name: "tcp_fastopen_no_port", needs: "inet", by: &[], landlock_refuses: false,
         run: |w| tcp_connect(w, true) },
    // The documented choice: listen on an unbound socket binds an
    // ephemeral port, which neither layer can refuse (Landlock governs
    // bind and connect, and the filter cannot know whether a socket is
    // bound).
    Op { name: "tcp_listen_autobind", needs: "inet", by: &["stdio"], landlock_refuses: false,
         run: |_| match socket(libc::AF_INET, libc::SOCK_STREAM, 0) {
             Err(e) => e,
             // SAFETY: integer arguments.
             Ok(s) => rc(libc::c_long::from(unsafe { libc::listen(s.as_raw_fd(), 1) })),
         } },
    Op { name: "udp_bind", needs: "dns", by: &["inet", "unix"], landlock_refuses: false,
         run: |_| match socket(libc::AF_INET, libc::SOCK_DGRAM, 0) {
             Err(e) => e,
             Ok(s) => {
                 let addr = loopback(0);
                 // SAFETY: a live sockaddr_in.
                 rc(libc::c_long::from(unsafe { libc::bind(s.as_raw_fd(), (&raw const addr).cast(), SIN_LEN) }))
             }
         } },
    // The attack of issue 10 item 6: a datagram pair end, disconnected
    // with AF_UNSPEC, bound to an abstract name (which would receive what
    // other processes send there). Landlock's abstract-socket scope does
    // not refuse binding; the filter refuses the datagram pair under every
    // promise, and `dns` has no bind at all.
    Op { name: "abstract_bind_after_disconnect", needs: "inet dns", by: &[], landlock_refuses: false,
         run: |_| match socketpair(libc::SOCK_DGRAM) {
             Err(e) => e,
             Ok(p) => {
                 let unspec = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
                 // SAFETY: a live sockaddr of its size.
                 if unsafe { libc::connect(p[0].as_raw_fd(), &unspec, 16) } < 0 { return errno(); }
                 // SAFETY: all-zero is a valid sockaddr_un.
                 let mut un: libc::sockaddr_un = unsafe { std::mem::zeroed() };
                 un.sun_family = libc::AF_UNIX as libc::sa_family_t;
                 let name = format!("privfork-matrix-{}", std::process::id());
                 for (d, b) in un.sun_path[1..].iter_mut().zip(name.bytes()) { *d = b as libc::c_char; }
                 let len = (2 + 1 + name.len()) as libc::socklen_t;
                 // SAFETY: a live sockaddr_un of at least `len` bytes.
                 rc(libc::c_long::from(unsafe { libc::bind(p[0].as_raw_fd(), (&raw const un).cast(), len) }))
             }
         } },
    Op { name: "getpgid_other", needs: "", by: &[], landlock_refuses: false,
         run: |w| sys(libc::SYS_getpgid, [w.victim.into(), 0, 0, 0]) },
    Op { name: "getsid_other", needs: "", by: &[], landlock_refuses: false,
         run: |w| sys(libc::SYS_getsid, [w.victim.into(), 0, 0, 0]) },
    Op { name: "getpriority_other", needs: "", by: &[], landlock_refuses: false,
         run: |w| sys(libc::SYS_getpriority, [libc::PRIO_PROCESS.into(), w.victim.into(), 0, 0]) },
    Op { name: "prlimit_other", needs: "", by: &[], landlock_refuses: false,
         run: |w| {
             let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
             sys(libc::SYS_prlimit64, [w.victim.into(), libc::RLIMIT_CPU.into(), 0, (&raw mut old) as libc::c_long])
         } },
    Op { name: "setpriority_other", needs: "", by: &[], landlock_refuses: false,
         run: |w| sys(libc::SYS_setpriority, [libc::PRIO_PROCESS.into(), w.victim.into(), 19, 0]) },
    Op { name: "setpriority_self", needs: "", by: &["proc", "id"], landlock_refuses: false,
         run: |_| sys(libc::SYS_setpriority, [libc::PRIO_PROCESS.into(), 0, 19, 0]) },
    Op { name: "sched_setaffinity_other", needs: "", by: &[], landlock_refuses: false,
         run: |w| {
             let mut set = [0u64; 16];
             // SAFETY: `set` is 128 writable bytes.
             let n = unsafe { libc::syscall(libc::SYS_sched_getaffinity, 0, 128, set.as_mut_ptr()) };
             if n < 0 { return errno(); }
             sys(libc::SYS_sched_setaffinity, [w.victim.into(), 128, set.as_ptr() as libc::c_long, 0])
         } },
    // The filter lets one positive pid through; Landlock's signal scope
    // refuses a process outside the sandbox.
    Op { name: "kill_other", needs: "", by: &["stdio"], landlock_refuses: true,
         run: |w| sys(libc::SYS_kill, [w.victim.into(), 0, 0, 0]) },
    // kill(-1) answers 0 even when every target refused it, so Landlock's
    // scope does not show in its result (kill_other shows it).
    Op { name: "kill_every_process", needs: "", by: &["proc"], landlock_refuses: false,
         run: |_| sys(libc::SYS_kill, [-1, 0, 0, 0]) },
    Op { name: "personality", needs: "", by: &[], landlock_refuses: false,
         run: |_| sys(libc::SYS_personality, [0xffff_ffff, 0, 0, 0]) },
];

/// Operations on sockets handed to the child (see `Handed`), run by
/// [`run_handed`]: under `accept` a worker can accept and answer on its
/// listener and set an accepted connection's options, but not connect
/// (TCP or UDP), bind, listen or address a datagram with `sendto`.
#[rustfmt::skip]
const HANDED_OPS: &[Op] = &[
    Op { name: "accept_on_handed_listener", needs: "", by: &["inet", "unix", "accept"], landlock_refuses: false,
         run: accept_and_answer },
    Op { name: "connect_handed_tcp", needs: "", by: &["inet", "unix", "dns"], landlock_refuses: true,
         run: |w| connect_to(&w.handed.tcp, w.port) },
    Op { name: "connect_handed_udp", needs: "", by: &["inet", "unix", "dns"], landlock_refuses: false,
         run: |w| connect_to(&w.handed.udp, w.port) },
    Op { name: "bind_handed_tcp", needs: "", by: &["inet", "unix"], landlock_refuses: true,
         run: |w| bind_to_any_port(&w.handed.tcp) },
    Op { name: "bind_handed_udp", needs: "", by: &["inet", "unix"], landlock_refuses: false,
         run: |w| bind_to_any_port(&w.handed.udp) },
    Op { name: "listen_handed_tcp", needs: "", by: &["inet", "unix"], landlock_refuses: false,
         // SAFETY: integer arguments.
         run: |w| rc(libc::c_long::from(unsafe { libc::listen(w.handed.tcp.as_raw_fd(), 1) })) },
    Op { name: "sendto_handed_udp", needs: "", by: &["inet", "unix", "dns"], landlock_refuses: false,
         run: |w| {
             let addr = loopback(w.port);
             // SAFETY: a live sockaddr_in and one byte of a static.
             rc(unsafe { libc::sendto(w.handed.udp.as_raw_fd(), b"x".as_ptr().cast(), 1, 0,
                 (&raw const addr).cast(), SIN_LEN) } as libc::c_long)
         } },
    // The documented gap of stdio (docs/sandbox.md, differences):
    // msg_name is behind a pointer, so an unconnected datagram socket the
    // process was handed can still address through sendmsg.
    Op { name: "sendmsg_handed_udp_with_address", needs: "", by: &["stdio"], landlock_refuses: false,
         run: |w| sendmsg_to(&w.handed.udp, w.port) },
    Op { name: "setsockopt_nodelay", needs: "", by: &["inet", "unix", "accept"], landlock_refuses: false,
         run: |w| setsockopt_int(&w.handed.tcp, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1) },
    Op { name: "setsockopt_reuseport", needs: "", by: &["inet", "unix"], landlock_refuses: false,
         run: |w| setsockopt_int(&w.handed.tcp, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1) },
];

/// Operations the filter answers `EPERM` (a soft refusal) under the
/// promise that names them: path forms of chmod under `fattr`.
const SOFT_EPERM: &[&str] = &["chmod_path_inside"];

fn main() {
    let cases: Vec<support::Case> = OPS
        .iter()
        .enumerate()
        .map(|(i, op)| (op.name, CASES[i]))
        .chain(
            HANDED_OPS
                .iter()
                .enumerate()
                .map(|(i, op)| (op.name, HANDED_CASES[i])),
        )
        .chain([(
            "tiocsti_refused_under_every_promise",
            tiocsti_refused_under_every_promise as fn(),
        )])
        .collect();
    support::main(&cases, &[])
}

macro_rules! cases {
    ($($i:literal)*) => { [$(|| check(&OPS[$i])),*] };
}
const CASES: [fn(); 32] =
    cases!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
const HANDED_CASES: [fn(); 10] = [
    || check_with(&HANDED_OPS[0], run_handed),
    || check_with(&HANDED_OPS[1], run_handed),
    || check_with(&HANDED_OPS[2], run_handed),
    || check_with(&HANDED_OPS[3], run_handed),
    || check_with(&HANDED_OPS[4], run_handed),
    || check_with(&HANDED_OPS[5], run_handed),
    || check_with(&HANDED_OPS[6], run_handed),
    || check_with(&HANDED_OPS[7], run_handed),
    || check_with(&HANDED_OPS[8], run_handed),
    || check_with(&HANDED_OPS[9], run_handed),
];

/// A world-writable directory with a world-readable file in it.
fn world_dir(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(d.path().join("file"), "x").unwrap();
    std::fs::set_permissions(
        d.path().join("file"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    d
}

/// What a run gave: allowed (0), refused with an errno, or killed.
#[derive(Debug, PartialEq)]
enum Verdict {
    Allowed,
    Errno(i32),
    Killed(i32),
}

/// How an operation is run as nobody, under the sandbox if one is given.
type Runner = fn(Option<&Sandbox>, &Op, &mut World) -> Verdict;

/// Runs an operation in a fork-as child as nobody.
fn run_as_nobody(sandbox: Option<&Sandbox>, op: &Op, w: &mut World) -> Verdict {
    let w: &World = w;
    // Fresh files for each run: create/mkfifo must not find last run's.
    for d in [&w.inside, &w.outside] {
        for f in ["new", "fifo"] {
            let _ = std::fs::remove_file(d.join(f));
        }
    }
    let mine = w.inside.join("mine");
    let _ = std::fs::remove_file(&mine);
    std::fs::write(&mine, "x").unwrap();
    std::os::unix::fs::chown(&mine, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut call = ForkAs::user("nobody").unwrap();
    if let Some(sb) = sandbox {
        call = call.sandbox(sb).unwrap();
    }
    let f = op.run;
    match call.run(|| f(w)) {
        Ok(0) => Verdict::Allowed,
        Ok(e) => Verdict::Errno(e),
        Err(ForkAsError::Signaled { signal, .. }) => Verdict::Killed(signal),
        Err(e) => panic!("{}: {e}", op.name),
    }
}

/// As [`run_as_nobody`], for operations on sockets handed to the child: a
/// plain fork, which keeps the caller's fds (fork-as points every one of
/// them at `/dev/null`), drops to nobody and applies the sandbox itself,
/// as a worker handed its listener does. The operation's errno is the
/// exit code; 200 and above are failures of the harness.
fn run_handed(sandbox: Option<&Sandbox>, op: &Op, w: &mut World) -> Verdict {
    w.handed = Handed::new(w.port);
    let w: &World = w;
    let prepared = sandbox.map(|s| s.prepare().unwrap());
    // SAFETY: single-threaded case process; the child ends in _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = std::panic::catch_unwind(|| {
            // SAFETY: integer arguments (no supplementary group list).
            let dropped = unsafe {
                libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setresgid(NOBODY, NOBODY, NOBODY) == 0
                    && libc::setresuid(NOBODY, NOBODY, NOBODY) == 0
            };
            if !dropped {
                return 200;
            }
            if let Some(p) = &prepared
                && p.apply_to_self().is_err()
            {
                return 201;
            }
            (op.run)(w)
        })
        .unwrap_or(202);
        // SAFETY: ends the child without unwinding into the runner.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `status` is a live local; `pid` is our unreaped child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    if libc::WIFSIGNALED(status) {
        return Verdict::Killed(libc::WTERMSIG(status));
    }
    match libc::WEXITSTATUS(status) {
        0 => Verdict::Allowed,
        c @ 200.. => panic!("{}: harness failure {c}", op.name),
        e => Verdict::Errno(e),
    }
}

fn check(op: &Op) {
    check_with(op, run_as_nobody);
}

fn check_with(op: &Op, run: Runner) {
    require_root();
    let inside = world_dir("matrix-in");
    let outside = world_dir("matrix-out");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let victim = support::Victim::start();
    let port = listener.local_addr().unwrap().port();
    let mut w = World {
        inside: inside.path().to_owned(),
        outside: outside.path().to_owned(),
        victim: victim.0,
        listener,
        port,
        handed: Handed::new(port),
    };
    // The positive control: unsandboxed, the operation works.
    assert_eq!(
        run(None, op, &mut w),
        Verdict::Allowed,
        "control: {} fails without a sandbox",
        op.name
    );
    let unveil = format!("rwc:{}", w.inside.display());
    let mut wrong = Vec::new();
    let mut sets = vec![("stdio".to_owned(), op.by.contains(&"stdio"))];
    for (_, name) in ALL {
        let allowed = op.by.contains(&"stdio") || op.by.contains(name);
        sets.push((format!("stdio {name}"), allowed));
    }
    for (promises, seccomp_allows) in sets {
        let promises = format!("{promises} {}", op.needs);
        let sandbox = |layers| {
            Sandbox::new()
                .promises(&promises)
                .unwrap()
                .unveil(&unveil)
                .unwrap()
                .layers(layers)
        };
        let seccomp = run(Some(&sandbox(Layers::SeccompOnly)), op, &mut w);
        if (seccomp == Verdict::Allowed) != seccomp_allows {
            wrong.push(format!("seccomp alone, {promises:?}: {seccomp:?}"));
        }
        if seccomp_allows || seccomp == Verdict::Allowed || promises.contains("error") {
            continue;
        }
        // A refusal by the filter kills (SIGSYS), or is a soft refusal's
        // errno — never the kernel's own answer to a call that ran (the
        // control shows the kernel lets nobody do it).
        let soft_eperm = SOFT_EPERM.contains(&op.name) && promises.contains("fattr");
        let filter_said = matches!(
            seccomp,
            Verdict::Killed(libc::SIGSYS) | Verdict::Errno(libc::EACCES)
        ) || (soft_eperm && seccomp == Verdict::Errno(libc::EPERM));
        if !filter_said {
            wrong.push(format!(
                "seccomp alone, {promises:?}: refused as {seccomp:?}"
            ));
        }
    }
    // Landlock's verdict does not depend on the promises (but for the
    // quiet allowances some bring): every set, with the filter off.
    for (_, name) in ALL {
        let promises = format!("stdio {name} {}", op.needs);
        let sb = Sandbox::new()
            .promises(&promises)
            .unwrap()
            .unveil(&unveil)
            .unwrap()
            .layers(Layers::LandlockOnly);
        let landlock = run(Some(&sb), op, &mut w);
        // tmppath's quiet allowance opens /tmp read-write-create, and the
        // world's directories are in /tmp: "outside" is inside it there.
        let in_tmp = *name == "tmppath" && w.outside.starts_with("/tmp");
        let refuses = op.landlock_refuses && !(in_tmp && op.name.ends_with("_outside"));
        if (landlock != Verdict::Allowed) != refuses {
            wrong.push(format!("Landlock alone, {promises:?}: {landlock:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}: {wrong:#?}", op.name);
}

/// TIOCSTI (pushing input into a terminal) stays refused under every
/// promise, tty included, while tty's own ioctls work on the same terminal:
/// a pty this test creates, made the controlling terminal of a session of
/// its own (never the caller's terminal).
fn tiocsti_refused_under_every_promise() {
    require_root();
    let every: Vec<&str> = ALL.iter().map(|(_, n)| *n).collect();
    let every = every.join(" ");
    for (promises, layers, expect_sti) in [
        (None, Layers::Both, 0),
        (Some("stdio tty"), Layers::SeccompOnly, libc::EPERM),
        (Some(every.as_str()), Layers::SeccompOnly, libc::EPERM),
        (Some(every.as_str()), Layers::Both, libc::EPERM),
        // Landlock does not govern an ioctl on a terminal opened before.
        (Some("stdio tty"), Layers::LandlockOnly, 0),
    ] {
        // SAFETY: single-threaded case process; the child ends in _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = std::panic::catch_unwind(|| {
                // SAFETY: integer-only calls and a NUL-terminated pty path.
                let pty = unsafe {
                    assert!(libc::setsid() > 0);
                    let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
                    assert!(master >= 0);
                    assert_eq!(libc::grantpt(master), 0);
                    assert_eq!(libc::unlockpt(master), 0);
                    let name = libc::ptsname(master);
                    // Without O_NOCTTY a session leader acquires it.
                    let slave = libc::open(name, libc::O_RDWR);
                    assert!(slave >= 0);
                    slave
                };
                if let Some(p) = promises {
                    Sandbox::new()
                        .promises(p)
                        .unwrap()
                        .violation(privfork::sandbox::Violation::Errno)
                        .layers(layers)
                        .apply()
                        .unwrap();
                }
                // SAFETY: all-zero is a valid winsize.
                let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
                // SAFETY: TIOCGWINSZ writes a winsize into the live local;
                // TIOCSTI reads one byte from a static.
                unsafe {
                    assert_eq!(libc::ioctl(pty, libc::TIOCGWINSZ, &mut ws), 0, "TIOCGWINSZ");
                    let sti = if libc::ioctl(pty, libc::TIOCSTI, b"x".as_ptr()) == 0 {
                        0
                    } else {
                        errno()
                    };
                    assert_eq!(sti, expect_sti, "TIOCSTI under {promises:?} {layers:?}");
                }
            })
            .is_ok();
            // SAFETY: ends the child without unwinding into the runner.
            unsafe { libc::_exit(if code { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: `status` is a live local.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "TIOCSTI case {promises:?} {layers:?}: status {status:#x}"
        );
    }
}
