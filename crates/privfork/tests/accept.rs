//! The `accept` promise: a worker handed a listener serves connections on
//! it, and has no other way onto the network.
//!
//! Each case forks a child that drops to nobody and applies the sandbox
//! itself, as a worker does, keeping the sockets made before the fork: a
//! listener on 127.0.0.1 with a real client waiting in its backlog, and an
//! unconnected TCP and an unconnected UDP socket — so a refused `connect`
//! or `bind` is refused by the promise, not by a missing `socket()`. Every
//! refusal is first shown to work in the same child without the sandbox
//! (the positive control). The refusals are checked under the seccomp
//! filter alone in errno mode (each refused call answers `EPERM`), then
//! once under the whole sandbox in kill mode (`SIGSYS`).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use privfork::sandbox::{Layers, Sandbox, Violation};
use support::require_root;

const NOBODY: u32 = 65534;

fn main() {
    support::main(
        &[
            (
                "refusals_work_without_the_sandbox",
                refusals_work_without_the_sandbox,
            ),
            (
                "the_filter_refuses_all_but_accept",
                the_filter_refuses_all_but_accept,
            ),
            ("the_sandbox_kills_on_connect", the_sandbox_kills_on_connect),
            (
                "a_std_server_serves_under_stdio_accept",
                a_std_server_serves_under_stdio_accept,
            ),
            (
                "a_tokio_server_serves_under_stdio_accept",
                a_tokio_server_serves_under_stdio_accept,
            ),
        ],
        &[],
    )
}

/// What the worker is handed, made before the fork.
struct Handed {
    listener: TcpListener,
    /// The client, connected (waiting in the listener's backlog) and
    /// having sent "ping".
    client: TcpStream,
    /// Unconnected, unbound TCP sockets: one to connect, one to bind.
    tcp: [OwnedFd; 2],
    /// Unconnected, unbound UDP sockets: one to connect, one to bind.
    udp: [OwnedFd; 2],
    /// A port on 127.0.0.1 to connect to.
    port: u16,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// 0, or the errno of a failed call.
fn rc(r: libc::c_long) -> i32 {
    if r < 0 { errno() } else { 0 }
}

fn socket(family: i32, kind: i32) -> Result<OwnedFd, i32> {
    // SAFETY: integer arguments; a returned fd is owned by nobody else.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, 0) };
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

impl Handed {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        client.write_all(b"ping").unwrap();
        Self {
            listener,
            client,
            tcp: [0; 2].map(|_| socket(libc::AF_INET, libc::SOCK_STREAM).unwrap()),
            udp: [0; 2].map(|_| socket(libc::AF_INET, libc::SOCK_DGRAM).unwrap()),
            port,
        }
    }

    /// The client's side, after the child answered: the child's reply.
    fn reply(mut self) -> String {
        self.client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = String::new();
        self.client.read_to_string(&mut got).unwrap();
        got
    }
}

/// Every call the worker must not make, on what it was handed: each name
/// with 0 or the errno it failed with.
fn forbidden(h: &Handed) -> Vec<(&'static str, i32)> {
    let addr = loopback(h.port);
    let sa = (&raw const addr).cast::<libc::sockaddr>();
    let any = loopback(0);
    let sa_any = (&raw const any).cast::<libc::sockaddr>();
    let fresh = |family, kind| socket(family, kind).map_or_else(|e| e, |_| 0);
    let true_path = c"/bin/true";
    let argv = [true_path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: live sockaddr_ins of SIN_LEN bytes, one byte of a static,
    // NUL-terminated argv and envp arrays; the fds are the handed ones.
    unsafe {
        vec![
            ("socket tcp", fresh(libc::AF_INET, libc::SOCK_STREAM)),
            ("socket udp", fresh(libc::AF_INET, libc::SOCK_DGRAM)),
            ("socket udp6", fresh(libc::AF_INET6, libc::SOCK_DGRAM)),
            (
                "connect tcp",
                rc(libc::connect(h.tcp[0].as_raw_fd(), sa, SIN_LEN).into()),
            ),
            (
                "connect udp",
                rc(libc::connect(h.udp[0].as_raw_fd(), sa, SIN_LEN).into()),
            ),
            (
                "sendto udp with an address",
                rc(libc::sendto(
                    h.udp[1].as_raw_fd(),
                    b"x".as_ptr().cast(),
                    1,
                    0,
                    sa,
                    SIN_LEN,
                ) as _),
            ),
            (
                "bind udp",
                rc(libc::bind(h.udp[1].as_raw_fd(), sa_any, SIN_LEN).into()),
            ),
            (
                "bind tcp",
                rc(libc::bind(h.tcp[1].as_raw_fd(), sa_any, SIN_LEN).into()),
            ),
            ("listen", rc(libc::listen(h.tcp[1].as_raw_fd(), 1).into())),
            (
                "execve",
                rc(libc::execve(true_path.as_ptr(), argv.as_ptr(), envp.as_ptr()).into()),
            ),
        ]
    }
}

/// Accepts the waiting client on the handed listener with std (`accept4`
/// with SOCK_CLOEXEC), sets what servers set on a connection, reads its
/// "ping" and answers "pong".
fn serve_one_std(listener: &TcpListener) {
    let (mut conn, peer) = listener.accept().unwrap();
    assert!(peer.ip().is_loopback());
    assert_eq!(conn.peer_addr().unwrap(), peer);
    conn.local_addr().unwrap();
    conn.set_nodelay(true).unwrap();
    assert!(conn.nodelay().unwrap());
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    conn.write_all(b"pong").unwrap();
    conn.shutdown(std::net::Shutdown::Both).unwrap();
}

/// Forks a child that drops to nobody, applies `sandbox` (if any) and
/// runs `body`; its wait status.
fn in_child(sandbox: Option<&Sandbox>, body: impl FnOnce()) -> i32 {
    let prepared = sandbox.map(|s| s.prepare().unwrap());
    // SAFETY: single-threaded case process; the child ends in _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: integer arguments (no supplementary group list).
            unsafe {
                assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
                assert_eq!(libc::setresgid(NOBODY, NOBODY, NOBODY), 0);
                assert_eq!(libc::setresuid(NOBODY, NOBODY, NOBODY), 0);
            }
            if let Some(p) = &prepared {
                p.apply_to_self().unwrap();
            }
            body();
        }))
        .is_ok();
        // SAFETY: ends the child without unwinding into the runner.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: `status` is a live local; `pid` is our unreaped child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

fn exited_0(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

fn stdio_accept() -> Sandbox {
    Sandbox::new().promises("stdio accept").unwrap()
}

/// The positive control: as nobody, unsandboxed, every call the promise
/// refuses works on the same handed sockets (execve, last, runs
/// /bin/true), and so does accepting.
fn refusals_work_without_the_sandbox() {
    require_root();
    let h = Handed::new();
    let status = in_child(None, || {
        serve_one_std(&h.listener);
        for (what, e) in forbidden(&h) {
            assert_eq!(e, 0, "{what} fails without a sandbox");
        }
        unreachable!("execve returned");
    });
    assert!(exited_0(status), "status {status:#x}");
    assert_eq!(h.reply(), "pong");
}

/// Under `stdio accept`, the seccomp filter alone, errno mode: accepting
/// and serving work; every forbidden call answers EPERM.
fn the_filter_refuses_all_but_accept() {
    require_root();
    let h = Handed::new();
    let sb = stdio_accept()
        .violation(Violation::Errno)
        .layers(Layers::SeccompOnly);
    let status = in_child(Some(&sb), || {
        serve_one_std(&h.listener);
        let wrong: Vec<_> = forbidden(&h)
            .into_iter()
            .filter(|&(_, e)| e != libc::EPERM)
            .collect();
        assert!(wrong.is_empty(), "not refused with EPERM: {wrong:?}");
    });
    assert!(exited_0(status), "status {status:#x}");
    assert_eq!(h.reply(), "pong");
}

/// The whole sandbox, kill mode: connecting the handed UDP socket kills
/// the worker (SIGSYS) after it served its connection.
fn the_sandbox_kills_on_connect() {
    require_root();
    let h = Handed::new();
    let status = in_child(Some(&stdio_accept()), || {
        serve_one_std(&h.listener);
        let addr = loopback(h.port);
        // SAFETY: a live sockaddr_in of SIN_LEN bytes.
        unsafe { libc::connect(h.udp[0].as_raw_fd(), (&raw const addr).cast(), SIN_LEN) };
    });
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
        "status {status:#x}"
    );
    assert_eq!(h.reply(), "pong");
}

/// The whole sandbox, kill mode: a std server accepts, reads, answers.
fn a_std_server_serves_under_stdio_accept() {
    require_root();
    let h = Handed::new();
    let status = in_child(Some(&stdio_accept()), || serve_one_std(&h.listener));
    assert!(exited_0(status), "status {status:#x}");
    assert_eq!(h.reply(), "pong");
}

/// The whole sandbox, kill mode: a tokio current-thread runtime, started
/// after the sandbox (epoll, eventfd: stdio's), accepts on the handed
/// listener (`accept4` with SOCK_CLOEXEC|SOCK_NONBLOCK), sets TCP_NODELAY
/// and answers.
fn a_tokio_server_serves_under_stdio_accept() {
    require_root();
    let h = Handed::new();
    h.listener.set_nonblocking(true).unwrap();
    let status = in_child(Some(&stdio_accept()), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener =
                tokio::net::TcpListener::from_std(h.listener.try_clone().unwrap()).unwrap();
            let (conn, peer) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
                .await
                .unwrap()
                .unwrap();
            assert!(peer.ip().is_loopback());
            conn.set_nodelay(true).unwrap();
            // Readiness through the runtime's epoll, then the non-blocking
            // call (tokio's io-util is not a dependency here).
            let mut got = Vec::new();
            while got.len() < 4 {
                conn.readable().await.unwrap();
                let mut buf = [0u8; 4];
                match conn.try_read(&mut buf[got.len()..]) {
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("read: {e}"),
                }
            }
            assert_eq!(got, b"ping");
            conn.writable().await.unwrap();
            assert_eq!(conn.try_write(b"pong").unwrap(), 4);
        });
    });
    assert!(exited_0(status), "status {status:#x}");
    assert_eq!(h.reply(), "pong");
}
