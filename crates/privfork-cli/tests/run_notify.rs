//! `privfork run` and sd_notify: started with `NOTIFY_SOCKET` (the test
//! plays systemd and binds it), privfork gives the program a socket of its
//! own and passes on `READY=1`, `STOPPING=1`, `RELOADING=1` (with a fresh
//! `MONOTONIC_USEC=`) and `STATUS=` from the program and its processes —
//! nothing else, from no one else. Without the `unix` promise the program's
//! unix datagram socket is one privfork hands over, which reaches privfork
//! and nothing else. Run as root (the programs drop to nobody).

#[path = "../../privfork/tests/time_limit/mod.rs"]
mod time_limit;
use time_limit::time_limit;

mod common;
use common::{Dir, code, random, stderr, stdout};

use std::io::{BufRead, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The test's service manager: a datagram socket that privfork's
/// `NOTIFY_SOCKET` names.
struct Manager {
    /// What `NOTIFY_SOCKET` says: a path, or `@name`.
    address: String,
    sock: UnixDatagram,
    _dir: Dir,
}

impl Manager {
    /// Bound at a path in a directory of the test's own.
    fn new(tag: &str) -> Self {
        let dir = Dir::new(tag);
        let path = dir.0.join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        Self {
            address: path.to_str().unwrap().to_owned(),
            sock,
            _dir: dir,
        }
    }

    /// Bound at an abstract name.
    fn abstract_name() -> Self {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("privfork-test-notify-{:016x}", random());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_nonblocking(true).unwrap();
        Self {
            address: format!("@{name}"),
            sock,
            _dir: Dir::new("abstract-unused"),
        }
    }

    /// Every message queued (privfork has exited: nothing more comes).
    fn received(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = self.sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }
}

/// `privfork run ARGS…` with `NOTIFY_SOCKET` = `notify` (none with `None`).
fn command(notify: Option<&str>, args: &[&str]) -> Command {
    assert!(
        rustix::process::geteuid().is_root(),
        "privfork run tests drop to nobody: run them as root"
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_privfork"));
    c.arg("run").args(args);
    match notify {
        Some(n) => c.env("NOTIFY_SOCKET", n),
        None => c.env_remove("NOTIFY_SOCKET"),
    };
    c
}

fn run(notify: Option<&str>, args: &[&str]) -> Output {
    command(notify, args)
        .stdin(Stdio::null())
        .output()
        .expect("run privfork")
}

/// Python's standard library directory, unveiled for reading.
fn python_lib() -> String {
    let dir = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python3.") && p.join("os.py").exists())
        })
        .expect("python3's standard library in /usr/lib/python3.N (apt-get install python3)");
    format!("r:{}", dir.display())
}

/// `-u nobody -p PROMISES -v PYLIB [EXTRA…] -- /usr/bin/python3 -c
/// CLIENT+CODE`: the arguments of a python program that has [`CLIENT`].
fn python_args(promises: &str, extra: &[&str], code: &str) -> Vec<String> {
    let mut args: Vec<String> = ["-u", "nobody", "-p", promises, "-v", &python_lib()]
        .map(String::from)
        .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--", "/usr/bin/python3", "-c"].map(String::from));
    args.push(format!("{CLIENT}\n{code}"));
    args
}

fn python(notify: &str, promises: &str, extra: &[&str], code: &str) -> Output {
    let args = python_args(promises, extra, code);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(Some(notify), &args)
}

/// The two ways clients send: connect + send (gunicorn 20.1's
/// `gunicorn/systemd.py`, the sd-notify crate, go-systemd) and sendmsg
/// with the address, after trying to grow the send buffer (libsystemd's
/// `sd_pid_notify_with_fds`); and sendto with the address.
const CLIENT: &str = r#"
import os, socket
ADDR = os.environ["NOTIFY_SOCKET"]
def dgram():
    return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
def send(msg):
    s = dgram()
    s.connect(ADDR)
    s.sendall(msg.encode())
    s.close()
def sendmsg(msg):
    s = dgram()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    except PermissionError:
        pass
    s.sendmsg([msg.encode()], [], socket.MSG_NOSIGNAL, ADDR)
    s.close()
def sendto(msg):
    s = dgram()
    s.sendto(msg.encode(), ADDR)
    s.close()
"#;

/// The lines of privfork's own reports.
fn report_lines(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("privfork: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn ready_status_and_stopping_arrive_from_a_program_without_unix() {
    let _limit = time_limit!();
    let m = Manager::new("notify-basic");
    // Kill mode (the default): any call privfork did not answer would end
    // the program.
    let o = python(
        &m.address,
        "stdio rpath",
        &[],
        "send('READY=1\\nSTATUS=x')\nsendmsg('STATUS=y')\nsendto('STATUS=z')\nsend('STOPPING=1')\nprint('done')",
    );
    assert_eq!((code(&o), stdout(&o).trim()), (0, "done"), "{}", stderr(&o));
    assert_eq!(
        m.received(),
        [
            "READY=1\nSTATUS=x\n",
            "STATUS=y\n",
            "STATUS=z\n",
            "STOPPING=1\n"
        ]
    );
    assert!(report_lines(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn reloading_arrives_with_a_fresh_monotonic_usec() {
    let _limit = time_limit!();
    let usec = || {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1000
    };
    let m = Manager::new("notify-reload");
    let before = usec();
    // The program's own MONOTONIC_USEC is not the one passed on.
    let o = python(
        &m.address,
        "stdio rpath",
        &[],
        "send('RELOADING=1\\nMONOTONIC_USEC=1')\nsend('READY=1')",
    );
    let after = usec();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let got = m.received();
    assert_eq!(got.len(), 2, "{got:?}");
    let lines: Vec<&str> = got[0].lines().collect();
    assert_eq!(lines[0], "RELOADING=1", "{got:?}");
    let stamp: u64 = lines[1]
        .strip_prefix("MONOTONIC_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{got:?}"));
    assert!(
        (before..=after).contains(&stamp),
        "{before} {stamp} {after}"
    );
    assert_eq!(lines.len(), 2, "{got:?}");
    assert_eq!(got[1], "READY=1\n");
}

#[test]
fn with_unix_the_program_sends_to_its_own_socket() {
    let _limit = time_limit!();
    let m = Manager::new("notify-unix");
    let o = python(
        &m.address,
        "stdio rpath unix",
        &[],
        "st = os.stat(ADDR); d = os.stat(os.path.dirname(ADDR))\n\
         print(oct(st.st_mode), st.st_uid, oct(d.st_mode), d.st_uid)\n\
         import array\n\
         s = dgram()\n\
         try:\n    s.sendmsg([b'STATUS=fd'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [1]))], 0, ADDR); print('fd sent')\n\
         except PermissionError: print('fd refused')\n\
         send('READY=1\\nSTATUS=x')\nsendmsg('RELOADING=1')\nsendto('STOPPING=1')",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // A socket only nobody (and root) can send to, in a directory of
    // root's that nobody can only search.
    assert_eq!(
        stdout(&o).trim(),
        "0o140600 65534 0o40711 0\nfd refused",
        "{}",
        stderr(&o)
    );
    let got = m.received();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], "READY=1\nSTATUS=x\n");
    assert!(
        got[1].starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{got:?}"
    );
    assert_eq!(got[2], "STOPPING=1\n");
}

#[test]
fn only_ready_stopping_reloading_and_status_are_passed_on() {
    let _limit = time_limit!();
    let m = Manager::new("notify-keys");
    let o = python(
        &m.address,
        "stdio rpath",
        &[],
        "send('MAINPID=1\\nFDSTORE=1\\nFDNAME=x\\nWATCHDOG=1\\nWATCHDOG_USEC=1\\n\
         EXTEND_TIMEOUT_USEC=99\\nERRNO=5\\nBUSERROR=x\\nNOTIFYACCESS=all')\n\
         send('READY=1\\n' + 'x' * 5000)\n\
         send('STATUS=' + 'y' * 2000)\n\
         send('STATUS=two\\tlines\\rin one')\n\
         send('READY=1\\nMAINPID=1\\nready=1')",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let long_status = format!("STATUS={}\n", "y".repeat(512));
    assert_eq!(
        m.received(),
        [
            long_status.as_str(),
            "STATUS=two lines in one\n",
            "READY=1\n"
        ]
    );
    let lines = report_lines(&o);
    let mainpid = lines.iter().filter(|l| l.contains("MAINPID=")).count();
    assert_eq!(mainpid, 1, "named once: {lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("1 sd_notify messages longer than 4096 bytes were dropped")),
        "{lines:#?}"
    );
}

#[test]
fn a_process_outside_the_program_is_ignored_and_its_descendants_are_not() {
    let _limit = time_limit!();
    let m = Manager::new("notify-outsider");
    // The program waits for the test (a line on stdin), then a child of
    // its own sends — an fd first, which privfork's socket refuses
    // (SO_PASSRIGHTS) — and stays a second, so that it is still there
    // when privfork looks at who sent.
    let code_text = "print(ADDR, flush=True)\n\
         import sys, array, time\n\
         sys.stdin.readline()\n\
         pid = os.fork()\n\
         if pid == 0:\n\
         \x20   s = dgram(); s.connect(ADDR)\n\
         \x20   try:\n\
         \x20       s.sendmsg([b'STATUS=fd'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [1]))]); print('fd sent', flush=True)\n\
         \x20   except PermissionError: print('fd refused', flush=True)\n\
         \x20   s.send(b'STATUS=child'); time.sleep(1); os._exit(0)\n\
         os.waitpid(pid, 0)\n\
         send('READY=1\\nSTATUS=program')";
    let args = python_args("stdio rpath proc", &[], code_text);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = command(Some(&m.address), &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut addr = String::new();
    out.read_line(&mut addr).unwrap();
    let addr = addr.trim().to_owned();
    assert!(addr.starts_with("/run/privfork/notify-"), "{addr:?}");
    // Same uid as the program (nobody), not its descendant: it reaches
    // the socket, and is ignored. Another uid cannot send at all.
    let send_as = |uid: &str| {
        let o = Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                "import socket, sys\n\
                 s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                 try:\n    s.sendto(b'READY=1\\nSTATUS=outsider', sys.argv[1]); print('sent')\n\
                 except PermissionError: print('denied')",
                &addr,
            ])
            .output()
            .unwrap();
        stdout(&o).trim().to_owned()
    };
    assert_eq!(send_as("65534"), "sent");
    assert_eq!(send_as("1"), "denied");
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "fd refused\n");
    assert_eq!(
        m.received(),
        ["STATUS=child\n", "READY=1\nSTATUS=program\n"]
    );
    let lines = report_lines(&o);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ignored an sd_notify message from pid")
                && l.contains("(uid 65534): not the program or a process it started")),
        "{lines:#?}"
    );
}

#[test]
fn the_program_never_gets_privforks_notify_socket() {
    let _limit = time_limit!();
    let m = Manager::new("notify-env");
    for extra in [
        &[][..],
        &["--inherit-env"],
        &["--keep-env", "NOTIFY_SOCKET"],
        &["--env", "NOTIFY_SOCKET=/elsewhere"],
    ] {
        let mut args = vec!["-u", "nobody", "-p", "stdio"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "/usr/bin/printenv", "NOTIFY_SOCKET"]);
        let o = run(Some(&m.address), &args);
        assert_eq!(code(&o), 0, "{extra:?}: {}", stderr(&o));
        let theirs = PathBuf::from(stdout(&o).trim());
        assert!(
            theirs.starts_with("/run/privfork") && theirs.ends_with("notify"),
            "{extra:?}: {theirs:?}"
        );
        // Removed with its directory when privfork exits.
        assert!(!theirs.parent().unwrap().exists(), "{theirs:?}");
    }
    // privfork without one: the program has none either, even inherited.
    let o = run(
        None,
        &[
            "-u",
            "nobody",
            "-p",
            "stdio",
            "--inherit-env",
            "--",
            "/usr/bin/printenv",
            "NOTIFY_SOCKET",
        ],
    );
    assert_eq!((code(&o), stdout(&o).as_str()), (1, ""), "{}", stderr(&o));
    // Nor is privfork's passed on when there is nothing to serve (empty).
    for extra in ["--inherit-env", "--keep-env=NOTIFY_SOCKET"] {
        let args = ["-u", "nobody", "-p", "stdio", extra, "--"];
        let o = run(
            Some(""),
            &[&args[..], &["/usr/bin/printenv", "NOTIFY_SOCKET"]].concat(),
        );
        assert_eq!(
            (code(&o), stdout(&o).as_str()),
            (1, ""),
            "{extra}: {}",
            stderr(&o)
        );
    }
    // An address privfork cannot serve: refused before anything starts.
    let o = run(
        Some("vsock:2:1"),
        &["-u", "nobody", "-p", "stdio", "--", "/bin/true"],
    );
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("NOTIFY_SOCKET=vsock:2:1: neither a path nor an @abstract name"),
        "{}",
        stderr(&o)
    );
    assert!(m.received().is_empty());
}

#[test]
fn without_unix_the_handed_socket_reaches_nothing_else() {
    let _limit = time_limit!();
    let m = Manager::new("notify-elsewhere");
    // A socket anyone could send to, that the program must not reach.
    let other = Manager::new("notify-other");
    {
        use std::os::unix::fs::PermissionsExt;
        let perm = std::fs::Permissions::from_mode(0o777);
        std::fs::set_permissions(&other.address, perm).unwrap();
    }
    let code_text = format!(
        "import sys\n\
         OTHER = {other:?}\n\
         s = dgram()\n\
         for target in (OTHER, '/dev/log'):\n\
         \x20   try:\n\
         \x20       s.connect(target); print('connected', target)\n\
         \x20   except PermissionError:\n\
         \x20       print('refused')\n\
         try:\n\
         \x20   s.sendto(b'READY=1', OTHER); print('sent')\n\
         except PermissionError:\n\
         \x20   print('refused')\n\
         try:\n\
         \x20   s.sendto(b'READY=1', socket.MSG_FASTOPEN, ADDR); print('sent with fastopen')\n\
         except PermissionError:\n\
         \x20   print('refused')\n\
         try:\n\
         \x20   socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); print('stream')\n\
         except PermissionError:\n\
         \x20   print('refused')\n\
         sys.stdout.flush()\n\
         a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n\
         a.connect(ADDR)\n\
         print('a pair of its own connected')",
        other = other.address
    );
    let o = python(&m.address, "stdio rpath", &[], &code_text);
    assert_eq!(
        stdout(&o),
        "refused\nrefused\nrefused\nrefused\nrefused\n",
        "{}",
        stderr(&o)
    );
    // A socket privfork did not hand over: connect is refused as ever
    // without unix (kill mode).
    assert_eq!(code(&o), 128 + libc::SIGSYS, "{}", stderr(&o));
    let lines = report_lines(&o);
    for (call, what) in [
        ("connect", format!("unix {:?})", other.address)),
        ("connect", "unix \"/dev/log\")".to_owned()),
        ("sendto", format!("to unix {:?})", other.address)),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("refused {call}(fd "))
                    && l.contains(&what)
                    && l.contains("failed it with EACCES: the socket privfork handed over")),
            "{what}: {lines:#?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("refused connect(fd ") && l.contains("; killed it: ")),
        "{lines:#?}"
    );
    assert!(other.received().is_empty());
    assert!(m.received().is_empty());
}

#[test]
fn systemd_notify_a_libsystemd_client_is_passed_on() {
    let _limit = time_limit!();
    // systemd-notify (252) reads PR_GET_SECUREBITS and the ambient
    // capabilities at start, which no promise allows: errno mode. Its
    // sd_notify grows the send buffer, sends with an address and SCM
    // credentials, then waits on a BARRIER=1 for its fd to be closed.
    for promises in ["stdio", "stdio unix"] {
        let m = Manager::new("notify-systemd-notify");
        let o = run(
            Some(&m.address),
            &[
                "-u",
                "nobody",
                "-p",
                promises,
                "--mode",
                "errno",
                "--",
                "/usr/bin/systemd-notify",
                "--ready",
                "--no-block",
                "--status=up",
            ],
        );
        assert_eq!(code(&o), 0, "{promises}: {}", stderr(&o));
        assert_eq!(m.received(), ["READY=1\nSTATUS=up\n"], "{promises}");
        // Nothing about the socket, its connect or its buffer size.
        let lines = report_lines(&o);
        assert!(
            lines
                .iter()
                .all(|l| l.contains("prctl") || l.contains("Landlock will refuse")),
            "{promises}: {lines:#?}"
        );
    }
}

#[test]
fn gunicorns_sd_notify_works_without_unix() {
    let _limit = time_limit!();
    let m = Manager::new("notify-gunicorn");
    let o = python(
        &m.address,
        "stdio rpath",
        &["-v", "r:/usr/lib/python3/dist-packages"],
        "from gunicorn.systemd import sd_notify\n\
         class Log:\n    def debug(self, *a, **k): print('failed', a, k)\n\
         sd_notify('READY=1\\nSTATUS=gunicorn', Log())",
    );
    assert_eq!((code(&o), stdout(&o).as_str()), (0, ""), "{}", stderr(&o));
    assert_eq!(m.received(), ["READY=1\nSTATUS=gunicorn\n"]);
}

#[test]
fn at_most_64_handed_sockets_stay_open() {
    let _limit = time_limit!();
    let m = Manager::new("notify-bound");
    let o = python(
        &m.address,
        "stdio rpath",
        &[],
        "socks = []\n\
         for _ in range(65):\n    s = dgram(); s.connect(ADDR); socks.append(s)\n\
         try:\n    socks[0].send(b'STATUS=first'); print('first sent')\n\
         except (BrokenPipeError, ConnectionResetError): print('first closed')\n\
         socks[1].send(b'STATUS=second')\nsocks[64].send(b'STATUS=last')",
    );
    assert_eq!(
        (code(&o), stdout(&o).trim()),
        (0, "first closed"),
        "{}",
        stderr(&o)
    );
    // Both read in one wake-up, the newer status replaces the older.
    let got = m.received();
    assert!(
        got.last().map(String::as_str) == Some("STATUS=last\n")
            && !got.iter().any(|g| g.contains("first")),
        "{got:?}"
    );
}

#[test]
fn an_abstract_notify_socket_is_served() {
    let _limit = time_limit!();
    let m = Manager::abstract_name();
    let o = python(&m.address, "stdio rpath", &[], "send('READY=1')");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(m.received(), ["READY=1\n"]);
}

#[test]
fn what_the_program_says_as_it_exits_is_not_lost() {
    let _limit = time_limit!();
    // The program's last message may come after privfork's last wake-up
    // and before it reaps the program: privfork reads what is queued
    // then, and still knows the (reaped) program by its pid. A race, so
    // tried 24 times, four programs at a time on the machine's CPUs.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                scope.spawn(move || {
                    let m = Manager::new("notify-last");
                    let mut failures = Vec::new();
                    for i in 0..6 {
                        let o = python(
                            &m.address,
                            "stdio rpath",
                            &[],
                            &format!("send('STATUS={w}.{i}')\nsendto('STOPPING=1')\nprint('done')"),
                        );
                        let want = [format!("STATUS={w}.{i}\n"), "STOPPING=1\n".to_owned()];
                        let got = m.received();
                        if code(&o) != 0 || got != want {
                            failures.push(format!("{w}.{i}: {got:?} {}", stderr(&o)));
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A burst longer than the service manager's queue (10 datagrams by
/// default) loses no state change: what privfork cannot send at once
/// waits, in order, and goes when the manager has read (a slow reader).
#[test]
fn a_burst_longer_than_the_managers_queue_loses_no_state_change() {
    let _limit = time_limit!();
    let m = Manager::new("notify-burst");
    let sock = m.sock.try_clone().unwrap();
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    // 12 RELOADING/READY pairs: 24 datagrams none of which may go.
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 8192];
        while got.len() < 24 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            match sock.recv(&mut buf) {
                Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => break,
            }
        }
        got
    });
    let o = python(
        &m.address,
        "stdio rpath unix",
        &[],
        "for _ in range(12):\n    send('RELOADING=1')\n    send('READY=1')",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let got = reader.join().unwrap();
    assert_eq!(got.len(), 24, "{got:?}\n{}", stderr(&o));
    for (i, g) in got.iter().enumerate() {
        let want = if i % 2 == 0 {
            "RELOADING=1\n"
        } else {
            "READY=1\n"
        };
        assert!(g.starts_with(want), "{i}: {g:?}");
    }
    assert!(!stderr(&o).contains("cannot pass"), "{}", stderr(&o));
}

/// Under `inet` (or `dns`) without `unix`, the filter allows connect: it
/// comes to the supervisor all the same, which answers it on the socket it
/// handed over (connect + send, as gunicorn does, reaches the manager) and
/// lets every other connect through as the filter would (a TCP connection
/// to a port the test listens on, allowed by --connect, is made — with an
/// address as long as a path's, so that it is the supervisor's); connect
/// on the handed socket to another address stays refused.
#[test]
fn under_inet_connect_on_the_handed_socket_works_and_others_go_through() {
    let _limit = time_limit!();
    let m = Manager::new("notify-inet");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    // Accepts one connection, for 20 s at most (the program may fail
    // before it connects).
    tcp.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut served = 0;
        while served < 2 && std::time::Instant::now() < deadline {
            if let Ok((mut c, _)) = tcp.accept() {
                let _ = std::io::Write::write_all(&mut c, b"tcp ok\n");
                served += 1;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    let port_s = port.to_string();
    let code_text = format!(
        "send('READY=1\\nSTATUS=inet')\n\
         t = socket.create_connection(('127.0.0.1', {port}))\n\
         print(t.recv(100).decode().strip(), flush=True)\n\
         import ctypes, struct\n\
         u = socket.socket(); u.setblocking(True)\n\
         a = struct.pack('<H', socket.AF_INET) + struct.pack('!H', {port}) + socket.inet_aton('127.0.0.1')\n\
         a = a.ljust(110, b'\\0')\n\
         print('long address', ctypes.CDLL(None).connect(u.fileno(), a, 110), u.recv(100).decode().strip(), flush=True)\n\
         s = dgram()\n\
         try:\n    s.connect('/dev/log'); print('connected elsewhere')\n\
         except PermissionError: print('elsewhere refused')"
    );
    let o = python(
        &m.address,
        "stdio rpath inet",
        &[
            "--connect",
            &port_s,
            "-v",
            "r:/usr/lib/x86_64-linux-gnu/libffi.so.8",
        ],
        &code_text,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // The second TCP connect passes a sockaddr_in in 110 bytes, as long as
    // a path's: it comes to the supervisor, which lets it through.
    assert_eq!(
        stdout(&o),
        "tcp ok\nlong address 0 tcp ok\nelsewhere refused\n",
        "{}",
        stderr(&o)
    );
    assert_eq!(m.received(), ["READY=1\nSTATUS=inet\n"]);
    server.join().unwrap();
}
