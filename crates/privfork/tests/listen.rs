//! Listeners: bound from specs, handed to a child through exec by name,
//! adopted from systemd's socket activation. Each case in a fresh
//! single-threaded process (see `support`); the test binary is its own
//! pinned exe, so helpers run as spawned copies of it.

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use privfork::exe::{Exe, Spawn};
use privfork::listen::{ListenError, ListenSpec, Listeners};
use support::{TempDir, require_root};

const CASE: &str = "--privfork-case";

fn main() {
    // SAFETY: first thing in main: nothing has created an fd yet, so what
    // is open without close-on-exec came through exec.
    unsafe { privfork::inherit::capture() };
    support::main(
        &[
            ("tcp_v4_and_v6_listen", tcp_v4_and_v6_listen),
            (
                "unix_socket_gets_mode_and_owner",
                unix_socket_gets_mode_and_owner,
            ),
            (
                "unix_stale_replaced_live_and_files_refused",
                unix_stale_replaced_live_and_files_refused,
            ),
            ("listeners_cross_exec_by_name", listeners_cross_exec_by_name),
            ("systemd_socket_activation", systemd_socket_activation),
            (
                "systemd_variables_for_another_pid_are_ignored",
                systemd_variables_for_another_pid_are_ignored,
            ),
            ("duplicate_names_are_refused", duplicate_names_are_refused),
            (
                "socket_in_a_directory_others_write_is_refused",
                socket_in_a_directory_others_write_is_refused,
            ),
        ],
        &[
            ("serve_adopted", serve_adopted),
            ("serve_systemd", serve_systemd),
        ],
    )
}

fn exe() -> &'static Exe {
    Exe::current().expect("pin the test binary")
}

/// The backlog `ss` reports for the listener on `port` (Send-Q).
fn backlog_of(port: u16) -> Option<u32> {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next()?.split_whitespace().nth(2)?.parse().ok()
}

fn port_of(l: &privfork::listen::Listener) -> u16 {
    l.local_addr()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap()
}

fn tcp_v4_and_v6_listen() {
    let specs: Vec<ListenSpec> = ["127.0.0.1:0,name=v4", "[::1]:0,name=v6"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let listeners = Listeners::bind(&specs).unwrap();
    assert_eq!(listeners.names(), "v4:v6");
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for l in listeners.iter() {
        let addr = l.local_addr();
        assert!(
            addr.starts_with("127.0.0.1:") || addr.starts_with("[::1]:"),
            "{addr}"
        );
        let fd = l.as_fd();
        assert!(rustix::net::sockopt::socket_reuseaddr(fd).unwrap());
        assert_eq!(
            backlog_of(port_of(l)),
            Some(somaxconn),
            "the backlog of {addr} (ss Send-Q) is not net.core.somaxconn"
        );
        // A client connects and the listener accepts it.
        let mut client = TcpStream::connect(addr.parse::<std::net::SocketAddr>().unwrap()).unwrap();
        let conn = rustix::net::accept(fd).unwrap();
        rustix::io::write(&conn, b"hi").unwrap();
        let mut buf = [0u8; 2];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }
    let v6 = listeners.get("v6").unwrap();
    assert!(rustix::net::sockopt::ipv6_v6only(v6.as_fd()).unwrap());
    // Binding a taken port names the address and the call.
    let taken = format!("{},name=again", listeners.get("v4").unwrap().local_addr());
    let err = Listeners::bind(&[taken.parse().unwrap()]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1:") && text.contains("bind"),
        "{text}"
    );
}

fn unix_socket_gets_mode_and_owner() {
    require_root();
    let dir = TempDir::new("listen-unix");
    let path = dir.path().join("app.sock");
    let spec: ListenSpec = format!("unix:{},mode=0640,owner=nobody,name=api", path.display())
        .parse()
        .unwrap();
    let listeners = Listeners::bind(&[spec]).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(meta.uid(), 65534, "owner");
    let l = listeners.get("api").unwrap();
    assert_eq!(l.local_addr(), format!("unix:{}", path.display()));
    let mut client = UnixStream::connect(&path).unwrap();
    let conn = rustix::net::accept(l.as_fd()).unwrap();
    rustix::io::write(&conn, b"ok").unwrap();
    let mut buf = [0u8; 2];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ok");
}

fn unix_stale_replaced_live_and_files_refused() {
    let dir = TempDir::new("listen-stale");
    let path = dir.path().join("s.sock");
    let spec: ListenSpec = format!("unix:{}", path.display()).parse().unwrap();
    // A live socket at the path: refused, and left alone.
    let live = UnixListener::bind(&path).unwrap();
    let err = Listeners::bind(std::slice::from_ref(&spec)).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("in use"),
        "{err:?}"
    );
    // Once nobody listens, the stale file is replaced.
    drop(live);
    assert!(path.exists());
    let l = Listeners::bind(std::slice::from_ref(&spec)).unwrap();
    UnixStream::connect(&path).unwrap();
    drop(l);
    // A regular file at the path is never removed.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"data").unwrap();
    let err = Listeners::bind(std::slice::from_ref(&spec)).unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("not a socket"), "{chain}");
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
}

/// Helper: adopts listeners at fd 3 onward named by `PF_NAMES`, accepts
/// one connection on each and answers with its name.
fn serve_adopted() {
    let names: Vec<String> = std::env::var("PF_NAMES")
        .unwrap()
        .split(':')
        .map(str::to_owned)
        .collect();
    let listeners = Listeners::adopt(3, &names).unwrap();
    answer_each(&listeners);
}

/// Helper: socket activation.
fn serve_systemd() {
    let listeners = Listeners::from_systemd()
        .unwrap()
        .expect("started with LISTEN_PID set to this process");
    answer_each(&listeners);
}

fn answer_each(listeners: &Listeners) {
    for l in listeners.iter() {
        let conn = rustix::net::accept(l.as_fd()).unwrap();
        rustix::io::write(&conn, l.name().as_bytes()).unwrap();
    }
}

fn read_name(mut s: impl Read) -> String {
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn wait_success(child: privfork::exe::Spawned) {
    let status = rustix::process::waitid(
        rustix::process::WaitId::PidFd(child.pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED,
    )
    .unwrap()
    .unwrap();
    assert_eq!(status.exit_status(), Some(0), "the helper failed");
}

fn listeners_cross_exec_by_name() {
    let dir = TempDir::new("listen-exec");
    let unix_path = dir.path().join("u.sock");
    let specs: Vec<ListenSpec> = [
        "127.0.0.1:0,name=web".to_owned(),
        format!("unix:{},name=admin", unix_path.display()),
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let listeners = Listeners::bind(&specs).unwrap();
    let tcp = listeners.get("web").unwrap().local_addr();
    let mut spawn = Spawn::new(exe());
    spawn
        .args([CASE, "serve_adopted"])
        .env("PF_NAMES", listeners.names());
    listeners.hand_to(&mut spawn, 3);
    let child = spawn.spawn().unwrap();
    let web = TcpStream::connect(tcp.parse::<std::net::SocketAddr>().unwrap()).unwrap();
    web.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(read_name(web), "web");
    let admin = UnixStream::connect(&unix_path).unwrap();
    admin
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(read_name(admin), "admin");
    wait_success(child);
}

/// Starts this binary's `serve_systemd` helper the way systemd does: the
/// socket at fd 3, `LISTEN_FDS`, `LISTEN_FDNAMES`, and `LISTEN_PID` set to
/// the helper's own pid (by a shell that then execs it, keeping its pid).
fn start_activated(listener: &OwnedFd, pid_expr: &str) -> std::process::Child {
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args([
        "-c",
        &format!("LISTEN_PID={pid_expr} exec \"$0\" {CASE} serve_systemd"),
        exe().path().to_str().unwrap(),
    ])
    .env("LISTEN_FDS", "1")
    .env("LISTEN_FDNAMES", "activated")
    .stdin(std::process::Stdio::null());
    support::listener_at_fd3(&mut cmd, listener);
    cmd.spawn().unwrap()
}

fn systemd_socket_activation() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = OwnedFd::from(listener);
    let mut child = start_activated(&fd, "$$");
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(read_name(s), "activated");
    assert!(child.wait().unwrap().success());
}

fn systemd_variables_for_another_pid_are_ignored() {
    // Variables meant for another process (LISTEN_PID not ours): nothing
    // is adopted, and fd 3 is left alone.
    // SAFETY: single-threaded test process; the variables are read back
    // by this thread only.
    unsafe {
        std::env::set_var("LISTEN_PID", "1");
        std::env::set_var("LISTEN_FDS", "1");
    }
    assert!(Listeners::from_systemd().unwrap().is_none());
    // Our pid with a count that does not match the names: refused.
    let me = std::process::id().to_string();
    // SAFETY: as above.
    unsafe {
        std::env::set_var("LISTEN_PID", &me);
        std::env::set_var("LISTEN_FDS", "2");
        std::env::set_var("LISTEN_FDNAMES", "one");
    }
    let err = Listeners::from_systemd().unwrap_err();
    assert!(matches!(err, ListenError::Systemd(_)), "{err:?}");
    // Our pid, but fd 3 is not a listener that came through exec.
    // SAFETY: as above.
    unsafe {
        std::env::set_var("LISTEN_FDS", "1");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    // Whatever this process has at fd 3 was made here, with close-on-exec
    // (or is /dev/null placed there now): not a listener from exec.
    let f = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: fcntl only queries; dup3 onto 3 happens only when 3 is not
    // open, and the new fd is owned by `placed` below.
    let placed = unsafe {
        (libc::fcntl(3, libc::F_GETFD) == -1).then(|| {
            assert_eq!(libc::dup3(f.as_raw_fd(), 3, libc::O_CLOEXEC), 3);
            OwnedFd::from_raw_fd(3)
        })
    };
    let err = Listeners::from_systemd().unwrap_err();
    assert!(
        matches!(err, ListenError::Inherited { fd: 3, .. }),
        "{err:?}"
    );
    drop(placed);
}

fn duplicate_names_are_refused() {
    let specs: Vec<ListenSpec> = ["127.0.0.1:0,name=a", "127.0.0.1:0,name=a"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let err = Listeners::bind(&specs).unwrap_err();
    assert!(
        matches!(err, ListenError::DuplicateName(ref n) if n == "a"),
        "{err:?}"
    );
}

fn socket_in_a_directory_others_write_is_refused() {
    require_root();
    // A directory nobody owns: nobody could swap a symlink in between the
    // bind and the chmod/chown, or between the stale check and the unlink.
    let dir = TempDir::new("listen-untrusted");
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let spec: ListenSpec = format!("unix:{}/s.sock,mode=0666", theirs.display())
        .parse()
        .unwrap();
    let err = Listeners::bind(&[spec]).unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("checking the socket's directory"), "{chain}");
    assert!(chain.contains("writable"), "{chain}");
    assert!(!theirs.join("s.sock").exists(), "nothing was bound");
    // The same directory owned by root (0755), and a name right in the
    // sticky /tmp: fine.
    std::os::unix::fs::chown(&theirs, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ok: ListenSpec = format!("unix:{}/s.sock", theirs.display()).parse().unwrap();
    Listeners::bind(&[ok]).unwrap();
    let in_tmp = format!("/tmp/privfork-listen-{}.sock", std::process::id());
    let spec: ListenSpec = format!("unix:{in_tmp}").parse().unwrap();
    let l = Listeners::bind(&[spec]).unwrap();
    drop(l);
    let _ = std::fs::remove_file(&in_tmp);
}
