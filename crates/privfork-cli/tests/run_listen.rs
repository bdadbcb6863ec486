//! `privfork run --listen`: sockets bound as root and handed to the
//! program at fd 3 onward, as systemd's socket activation hands them. These
//! tests run as root (they drop to nobody) and fail loudly otherwise.

#[path = "../../privfork/tests/time_limit/mod.rs"]
mod time_limit;
use time_limit::time_limit;

mod common;
use common::{Dir, code, privfork_run, stderr, stdout};

/// python3 under stdio (errno mode: its start-up probes get EPERM).
const PYTHON: &[&str] = &[
    "-u",
    "nobody",
    "-p",
    "stdio rpath",
    "-v",
    "r:/usr/lib/python3.11",
    "--mode",
    "errno",
];

/// What the program sees: the variables, and every fd from 3 to 63 that
/// is open, with whether it is a socket.
const REPORT: &str = r#"import os, stat
print("FDS", os.environ.get("LISTEN_FDS"))
print("NAMES", os.environ.get("LISTEN_FDNAMES"))
print("PID", os.environ.get("LISTEN_PID") == str(os.getpid()))
for fd in range(3, 64):
    try:
        st = os.fstat(fd)
    except OSError:
        continue
    print("OPEN", fd, "socket" if stat.S_ISSOCK(st.st_mode) else "other")
"#;

/// Two listeners (TCP and unix, named) reach the program at fds 3 and 4,
/// in order, with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (the program's
/// own pid); no other fd; the unix socket file has the owner and mode
/// asked for; a connection made before the program runs is there for it
/// to accept (privfork bound and listened first).
#[test]
fn listeners_arrive_at_fd_3_onward_with_the_activation_variables() {
    let _limit = time_limit!();
    let dir = Dir::new("listen");
    // Root's alone to write (privfork refuses to bind a unix socket where
    // others could swap the path under it).
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sock = dir.0.join("app.sock");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tcp = format!("127.0.0.1:{port},name=web");
    let unix = format!("unix:{},mode=0660,owner=nobody,name=admin", sock.display());
    let mut args = vec!["--listen", &tcp, "--listen", &unix];
    args.extend(PYTHON);
    args.extend(["--", "/usr/bin/python3", "-c", REPORT]);
    let o = privfork_run(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("FDS 2\n"), "{out}");
    assert!(out.contains("NAMES web:admin\n"), "{out}");
    assert!(out.contains("PID True\n"), "{out}");
    let open: Vec<&str> = out.lines().filter(|l| l.starts_with("OPEN")).collect();
    assert_eq!(open, ["OPEN 3 socket", "OPEN 4 socket"], "{out}");
    // The socket file stays (a later run replaces it); its owner and mode
    // are what was asked.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&sock).expect("the unix socket file");
    assert_eq!((m.uid(), m.mode() & 0o7777), (65534, 0o660));
}

/// The program accepts on the socket it was handed, under `stdio accept`
/// alone: a client's connection, bound by privfork, served as nobody.
#[test]
fn the_program_accepts_on_the_handed_socket() {
    let _limit = time_limit!();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    // listen() again, as servers do on a socket they are handed: answered
    // by the supervisor (it is listening already).
    let server = r#"import socket
s = socket.socket(fileno=3)
s.listen(16)
c, _ = s.accept()
c.sendall(b"hello from the sandbox\n")
c.close()
"#;
    let mut args = vec!["--listen", listen.as_str()];
    let mut python = PYTHON.to_vec();
    python[3] = "stdio rpath accept";
    args.extend(python);
    args.extend(["--", "/usr/bin/python3", "-c", server]);
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let handle = std::thread::spawn(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        privfork_run(&refs)
    });
    // privfork listens before the program starts: connecting may come
    // first and waits in the backlog.
    let mut c = None;
    for _ in 0..200 {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            c = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut c = c.expect("privfork never listened");
    let mut got = String::new();
    std::io::Read::read_to_string(&mut c, &mut got).unwrap();
    assert_eq!(got, "hello from the sandbox\n");
    let o = handle.join().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// A listener that cannot be bound exits 114 naming the address; a
/// malformed one is a usage error (2) naming it; nothing runs.
#[test]
fn a_listener_that_cannot_be_bound_is_named() {
    let _limit = time_limit!();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = privfork_run(&["--listen", &addr, "-u", "nobody", "--", "/bin/true"]);
    assert_eq!(code(&o), 114, "{}", stderr(&o));
    assert!(stderr(&o).contains(&addr), "{}", stderr(&o));
    let o = privfork_run(&[
        "--listen",
        "localhost:80",
        "-u",
        "nobody",
        "--",
        "/bin/true",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("localhost:80"), "{}", stderr(&o));
}

/// Socket activation describes privfork's own start: variables privfork
/// was given are never the program's, not even under --inherit-env.
#[test]
fn activation_variables_of_privfork_itself_do_not_reach_the_program() {
    let _limit = time_limit!();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_privfork"))
        .args(["run", "--inherit-env"])
        .args(PYTHON)
        .args(["--", "/usr/bin/python3", "-c", REPORT])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDNAMES", "x")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("FDS None\nNAMES None\n"), "{out}");
}

/// An fd privfork's caller left open where a listener must go is never
/// overwritten: privfork refuses, naming it, and nothing runs.
#[test]
fn a_caller_fd_where_a_listener_goes_is_not_overwritten() {
    let _limit = time_limit!();
    let o = std::process::Command::new("/bin/sh")
        .args([
            "-c",
            "exec 3</dev/null; exec \"$0\" run --listen 127.0.0.1:0 -u nobody -- /bin/true",
            env!("CARGO_BIN_EXE_privfork"),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 114, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("fd 3 is already open"),
        "{}",
        stderr(&o)
    );
}

/// Under `accept`, listen() on a socket that is not listening already is
/// refused (it could make a listener nobody bound): here one end of a
/// socketpair; in kill mode the program dies and the line names it.
#[test]
fn listen_on_a_socket_not_listening_is_refused_under_accept() {
    let _limit = time_limit!();
    let mut args = PYTHON.to_vec();
    args[3] = "stdio rpath accept";
    args.truncate(6);
    args.extend([
        "--",
        "/usr/bin/python3",
        "-c",
        "import socket\na, b = socket.socketpair()\nprint('made', flush=True)\na.listen(1)\nprint('listened')",
    ]);
    let o = privfork_run(&args);
    assert_eq!(code(&o), 128 + libc::SIGSYS, "{}", stderr(&o));
    assert_eq!(stdout(&o), "made\n");
    assert!(stderr(&o).contains("refused listen("), "{}", stderr(&o));
}
