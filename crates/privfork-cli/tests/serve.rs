//! `privfork serve` with a real server: Debian's gunicorn (sync workers)
//! and a small WSGI app, on a port below 1024 bound by privfork as root,
//! the server running as nobody. These tests run as root and fail loudly
//! otherwise; a missing gunicorn fails them (`.ci/run` installs it).

#[path = "../../privfork/tests/time_limit/mod.rs"]
mod time_limit;
use time_limit::time_limit;

mod common;
use common::{Dir, privfork_with_default_signals};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GUNICORN: &str = "/usr/bin/gunicorn";

/// The app: `/` answers with the worker's pid and its instance's (the
/// arbiter's, its parent); `/probe/WHAT` tries what the sandbox must refuse
/// (a new socket; connect or bind on the one it has, the client's).
const APP: &str = r#"import os, socket
def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/probe/socket":
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    elif path == "/probe/unix":
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    elif path == "/probe/connect":
        environ["gunicorn.socket"].connect(("127.0.0.1", 9))
    elif path == "/probe/bind":
        environ["gunicorn.socket"].bind(("127.0.0.1", 0))
    body = f"worker {os.getpid()} instance {os.getppid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

/// gunicorn's configuration: with the file `hang` beside it, an instance
/// never gets as far as saying it is ready (on_starting runs before the
/// arbiter's READY=1).
const CONF: &str = r#"import os, time
here = os.path.dirname(os.path.abspath(__file__))
def on_starting(server):
    if os.path.exists(os.path.join(here, "hang")):
        time.sleep(1000)
"#;

/// The app's directory (readable by nobody).
fn app_dir() -> Dir {
    assert!(
        rustix::process::geteuid().is_root(),
        "privfork serve tests bind a port below 1024 and drop to nobody: run them as root"
    );
    assert!(
        std::path::Path::new(GUNICORN).exists(),
        "{GUNICORN} is missing: apt-get install gunicorn (.ci/run does)"
    );
    let dir = Dir::new("serve");
    // Readable, not writable, by nobody (python would write its bytecode
    // cache there).
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(dir.0.join("app.py"), APP).unwrap();
    std::fs::write(dir.0.join("conf.py"), CONF).unwrap();
    dir
}

/// A free TCP port below 1024 on 127.0.0.1.
fn low_port() -> u16 {
    for _ in 0..200 {
        let port = 600 + u16::try_from(common::random() % 400).unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 600 and 999");
}

/// privfork serve running gunicorn, its stderr collected line by line.
struct Serve {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The `privfork serve` arguments for gunicorn in `dir` on `port`, then
/// `extra` serve options.
fn gunicorn_args(dir: &Dir, port: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["serve", "--listen"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push(format!("127.0.0.1:{port}"));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.extend(
        [
            "-u",
            "nobody",
            "-p",
            "stdio rpath proc accept tmppath fattr",
            "-v",
            "r:/usr/lib/python3",
            "-v",
            "r:/usr/lib/python3.11",
            "-v",
            "rx:/usr/bin/python3.11",
            "-v",
            "r:/usr/lib/x86_64-linux-gnu",
            "-v",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    args.push(format!("r:{}", dir.path()));
    args.extend(
        [
            "--",
            GUNICORN,
            "--chdir",
            dir.path(),
            "-c",
            &format!("{}/conf.py", dir.path()),
            "-w",
            "2",
            "--graceful-timeout",
            "10",
            "app:app",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    args
}

/// gunicorn in a fresh app directory on a fresh port below 1024 behind
/// privfork serve with `extra` serve options, its first instance ready.
fn gunicorn_serving(extra: &[&str]) -> (Dir, u16, Serve) {
    let dir = app_dir();
    let port = low_port();
    let serve = Serve::start(&gunicorn_args(&dir, port, extra));
    serve.wait_for("instance 1 ready", 60);
    (dir, port, serve)
}

impl Serve {
    fn start(args: &[String]) -> Self {
        let mut child = privfork_with_default_signals()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start privfork serve");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            // Bounded: at most 20 000 lines of 1 KiB kept.
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let mut l = sink.lock().unwrap();
                        if l.len() < 20_000 {
                            l.push(line.chars().take(1024).collect());
                        }
                    }
                }
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().concat()
    }

    /// Waits until a line contains `want` (panics after `secs`).
    fn wait_for(&self, want: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.lines.lock().unwrap().iter().any(|l| l.contains(want)) {
            if Instant::now() > deadline {
                panic!("no {want:?} within {secs}s in:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// SIGTERM, then the exit code (within `secs`).
    fn stop(mut self, secs: u64) -> (Option<i32>, String) {
        self.signal(rustix::process::Signal::TERM);
        let code = wait_exit(&mut self.child, secs);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (code, self.log())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // A failed test leaves nothing running: privfork serve's tree.
        if let Ok(None) = self.child.try_wait() {
            for p in descendants(self.pid()) {
                kill9(p);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_exit(child: &mut Child, secs: u64) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            Instant::now() < deadline,
            "privfork serve still running after {secs}s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// The ppid field of /proc/PID/stat.
fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every process below `root`.
fn descendants(root: u32) -> Vec<u32> {
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let mut found = vec![root];
    let mut out = Vec::new();
    while let Some(p) = found.pop() {
        for &c in &all {
            if ppid(c) == Some(p) && !out.contains(&c) {
                out.push(c);
                found.push(c);
            }
        }
    }
    out
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

/// Whether `pid` is a gunicorn process (python running it; not an
/// instance's privfork run, whose command line is privfork serve's).
fn is_gunicorn(pid: u32) -> bool {
    cmdline(pid).starts_with(&format!("/usr/bin/python3 {GUNICORN} "))
}

/// The gunicorn processes below `root`, once there are `n` (20 s at most).
fn gunicorns(root: u32, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<u32> = descendants(root)
            .into_iter()
            .filter(|&p| is_gunicorn(p))
            .collect();
        if found.len() >= n {
            return found;
        }
        assert!(Instant::now() < deadline, "gunicorn processes: {found:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One GET with HTTP/1.0 (the server closes): the body, or why not.
fn get(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.take(64 * 1024)
        .read_to_end(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "not 200: {:?}",
            text.chars().take(200).collect::<String>()
        ));
    }
    Ok(text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
}

/// Clients that never retry, each sending one request after another
/// (HTTP/1.0, a new connection each) until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// Of the failed: a connect that failed (nothing held the socket, or
    /// its backlog was gone) or an answer other than 200 (the app broke).
    /// A server's own drops (a reset or an empty reply after a connection
    /// was accepted) are not counted here.
    not_the_servers: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    instances: Arc<Mutex<std::collections::BTreeSet<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let not_the_servers = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let instances = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed, not_the_servers, errors, instances) = (
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    not_the_servers.clone(),
                    errors.clone(),
                    instances.clone(),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match get(port, "/") {
                            Ok(body) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                if let Some(i) = body.split_whitespace().nth(3) {
                                    let mut set = instances.lock().unwrap();
                                    if set.len() < 1000 {
                                        set.insert(i.to_owned());
                                    }
                                }
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let servers_own = e.starts_with("read: ")
                                    || e.starts_with("write: ")
                                    || e == "not 200: \"\"";
                                if !servers_own {
                                    not_the_servers.fetch_add(1, Ordering::Relaxed);
                                }
                                let mut errs = errors.lock().unwrap();
                                if errs.len() < 20 {
                                    errs.push(e);
                                }
                            }
                        }
                        // Bounded load: a few hundred requests a second.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            not_the_servers,
            errors,
            instances,
            threads,
        }
    }

    /// Stops the clients: (ok, failed, first errors, instances seen).
    fn finish(self) -> (u64, u64, Vec<String>, usize) {
        let (ok, failed, _, errors, instances) = self.finish_split();
        (ok, failed, errors, instances)
    }

    /// As `finish`, with the failed requests that are not a server's own
    /// drop: (ok, failed, of them not the server's, first errors,
    /// instances seen).
    fn finish_split(self) -> (u64, u64, u64, Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let errs = self.errors.lock().unwrap().clone();
        let n = self.instances.lock().unwrap().len();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.not_the_servers.load(Ordering::Relaxed),
            errs,
            n,
        )
    }
}

/// 20 SIGHUPs under load from clients that never retry: not one request
/// fails, and the requests are answered by every generation in turn.
#[test]
fn twenty_reloads_under_load_fail_no_request() {
    let _limit = time_limit!(300);
    let (_dir, port, serve) = gunicorn_serving(&[]);
    let load = Load::start(port, 4);
    std::thread::sleep(Duration::from_millis(300));
    for n in 1..=20 {
        serve.signal(rustix::process::Signal::HUP);
        serve.wait_for(&format!("reload {n} done"), 60);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed, errors, instances) = load.finish();
    let (code, log) = serve.stop(60);
    assert_eq!(failed, 0, "failed requests: {errors:?}\n{log}");
    assert!(ok > 100, "only {ok} requests answered\n{log}");
    // Each answer names its instance (the gunicorn arbiter): more than
    // half of the 21 answered some.
    assert!(instances > 10, "answers from {instances} instances\n{log}");
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("failed"), "{log}");
}

/// Every gunicorn process runs as nobody, under seccomp (mode 2) with
/// no_new_privs and no capability; it cannot make a socket, connect or
/// bind anywhere (each attempt is refused and named, and kills the worker
/// in kill mode, which gunicorn replaces).
#[test]
fn every_server_process_is_sandboxed() {
    let _limit = time_limit!(120);
    let (_dir, port, serve) = gunicorn_serving(&[]);
    get(port, "/").expect("served");
    // The arbiter and its two workers (it says READY=1 before it forks
    // them).
    let procs = gunicorns(serve.pid(), 3);
    for p in &procs {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(field("Uid:"), "65534 65534 65534 65534", "{p}");
        assert_eq!(field("Gid:"), "65534 65534 65534 65534", "{p}");
        // nobody's own group, nothing of root's.
        assert_eq!(field("Groups:"), "65534", "{p}");
        assert_eq!(field("Seccomp:"), "2", "{p}");
        assert_eq!(field("NoNewPrivs:"), "1", "{p}");
        for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            assert_eq!(field(cap), "0000000000000000", "{p} {cap}");
        }
    }
    for (probe, refused) in [
        ("socket", "refused socket(AF_INET"),
        // nscd's probe has a soft answer (EACCES): refused all the same.
        ("unix", "PermissionError: [Errno 13] Permission denied"),
        ("connect", "refused connect("),
        ("bind", "refused bind("),
    ] {
        let r = get(port, &format!("/probe/{probe}"));
        assert!(r.is_err(), "/probe/{probe} answered: {r:?}");
        serve.wait_for(refused, 20);
    }
    // gunicorn replaced the workers: still serving.
    get(port, "/").expect("served after the probes");
    let (code, log) = serve.stop(60);
    assert_eq!(code, Some(0), "{log}");
}

/// A replacement that never becomes ready is killed at --ready-timeout;
/// the old instance keeps serving, without a failed request; the next
/// SIGHUP (the replacement fixed) works.
#[test]
fn a_replacement_never_ready_leaves_the_old_one_serving() {
    let _limit = time_limit!(180);
    let (dir, port, serve) = gunicorn_serving(&["--ready-timeout", "4s"]);
    let before = get(port, "/").unwrap();
    let instance = before.split_whitespace().nth(3).unwrap().to_owned();
    let load = Load::start(port, 3);
    std::fs::write(dir.0.join("hang"), "").unwrap();
    serve.signal(rustix::process::Signal::HUP);
    serve.wait_for(
        "reload 1 failed: instance 2 was not ready within 4s; instance 1 keeps serving",
        30,
    );
    let after = get(port, "/").unwrap();
    assert_eq!(
        after.split_whitespace().nth(3),
        Some(instance.as_str()),
        "{after}"
    );
    // The hung instance's privfork run was killed: what it could not
    // remove (its server's notify socket) is removed for it.
    serve.wait_for("instance 2 was killed by SIGKILL", 20);
    let runner = serve
        .log()
        .lines()
        .find_map(|l| l.strip_prefix("privfork serve: instance 2 started (pid "))
        .and_then(|r| r.strip_suffix(')'))
        .map(str::to_owned)
        .expect("instance 2's pid");
    let left: Vec<_> = std::fs::read_dir("/run/privfork")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("notify-{runner}-"))
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_file(dir.0.join("hang")).unwrap();
    serve.signal(rustix::process::Signal::HUP);
    serve.wait_for("reload 2 done", 60);
    let (ok, failed, errors, _) = load.finish();
    let (code, log) = serve.stop(60);
    assert_eq!(failed, 0, "{errors:?}\n{log}");
    assert!(ok > 0);
    assert_eq!(code, Some(0), "{log}");
    // Nothing of the hung instance was left.
    assert!(
        log.contains("instance 2 not ready within 4s: killed"),
        "{log}"
    );
}

/// A server that exits at once is started again after a delay that grows
/// (100ms, 200ms, 400ms, ...), each said; the socket stays open meanwhile:
/// a connection is accepted into the backlog, not refused.
#[test]
fn a_server_that_exits_at_once_backs_off() {
    let _limit = time_limit!(60);
    let port = low_port();
    let serve = Serve::start(&[
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--ready".into(),
        "delay:1s".into(),
        "-u".into(),
        "nobody".into(),
        "--".into(),
        "/bin/false".into(),
    ]);
    serve.wait_for("(failure 4 in a row)", 20);
    let log = serve.log();
    let waits: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("starting a new instance in ").nth(1))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(&waits[..4], &["100ms", "200ms", "400ms", "800ms"], "{log}");
    // Nothing serves, yet the connection is made (the kernel's backlog).
    let c = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(5),
    );
    assert!(c.is_ok(), "refused while backing off: {c:?}");
    let (code, log) = serve.stop(20);
    // How it ended: the server's own status.
    assert_eq!(code, Some(1), "{log}");
}

/// privfork serve killed with SIGKILL: every server process goes too
/// (each instance's privfork run gets SIGTERM as its parent-death signal,
/// passes it on, and ends the server's tree).
#[test]
fn kill_9_of_privfork_serve_leaves_no_server_process() {
    let _limit = time_limit!(120);
    let (_dir, port, mut serve) = gunicorn_serving(&[]);
    gunicorns(serve.pid(), 3);
    let tree = descendants(serve.pid());
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let left: Vec<u32> = tree
            .iter()
            .copied()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .is_ok_and(|s| !s.contains(") Z "))
            })
            .collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for p in &left {
                kill9(*p);
            }
            panic!("left running after kill -9: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The port is free again: nothing holds the socket.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

/// An old instance that ignores its stop signal is killed at the end of
/// --drain, with everything it started: its privfork run is killed, the
/// server dies of its parent-death signal, and the processes it started,
/// handed to privfork serve (a subreaper), are killed there.
#[test]
fn an_instance_deaf_to_its_stop_signal_goes_with_its_tree_after_drain() {
    let _limit = time_limit!(60);
    let port = low_port();
    let marker = format!("1000.{}7", std::process::id());
    let serve = Serve::start(&[
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--ready".into(),
        "delay:1s".into(),
        "--drain".into(),
        "1s".into(),
        "-u".into(),
        "nobody".into(),
        "-p".into(),
        "stdio rpath proc exec".into(),
        "-v".into(),
        "rx:/usr/bin".into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        format!("trap '' TERM; sleep {marker} & sleep {marker}"),
    ]);
    serve.wait_for("instance 1 ready", 20);
    let sleeps = |root: u32| -> Vec<u32> {
        descendants(root)
            .into_iter()
            .filter(|&p| cmdline(p).starts_with(&format!("sleep {marker}")))
            .collect()
    };
    let old = sleeps(serve.pid());
    assert_eq!(old.len(), 2, "{old:?}");
    serve.signal(rustix::process::Signal::HUP);
    serve.wait_for("reload 1 done", 30);
    let log = serve.log();
    assert!(
        log.contains("instance 1 still running 1s after its stop signal: killed"),
        "{log}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while old
        .iter()
        .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(Instant::now() < deadline, "left: {old:?}\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The new instance's two are there.
    assert_eq!(sleeps(serve.pid()).len(), 2);
    let (code, log) = serve.stop(20);
    // The new shell ignores SIGTERM too: killed after --drain, and
    // privfork serve's status is that instance's, 128 + SIGKILL.
    assert_eq!(code, Some(128 + libc::SIGKILL), "{log}");
}

/// The notify socket privfork serve reads for an instance, found by its
/// path (the only one in its private directory).
fn instance_socket(serve_pid: u32, number: u64) -> std::path::PathBuf {
    let prefix = format!("serve.{serve_pid}.");
    for e in std::fs::read_dir("/run/privfork").unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            return e.path().join(format!("instance-{number}"));
        }
    }
    panic!("no /run/privfork/{prefix}* directory");
}

/// `NAME=` of process `pid`'s environment.
fn environ(pid: u32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(format!("{name}=").as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// READY=1 from a process outside the instance — sent to privfork serve's
/// socket for the instance, and to the instance's own NOTIFY_SOCKET — is
/// ignored (and said so): the instance, which never notifies, is killed
/// at --ready-timeout, never taken for ready, and started again. privfork
/// serve's socket refuses a message carrying an fd.
#[test]
fn notify_messages_from_outside_the_instance_are_ignored() {
    let _limit = time_limit!(60);
    let port = low_port();
    let serve = Serve::start(&[
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--ready-timeout".into(),
        "10s".into(),
        "-u".into(),
        "nobody".into(),
        "--".into(),
        "/bin/sleep".into(),
        "1000".into(),
    ]);
    serve.wait_for("instance 1 started", 20);
    let sleep = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(p) = descendants(serve.pid())
                .into_iter()
                .find(|&p| cmdline(p).starts_with("/bin/sleep 1000"))
            {
                break p;
            }
            assert!(Instant::now() < deadline, "{}", serve.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let outside = std::os::unix::net::UnixDatagram::unbound().unwrap();
    // To privfork serve's own socket for instance 1 (root may reach it:
    // only the sender's pid tells).
    outside
        .send_to(b"READY=1", instance_socket(serve.pid(), 1))
        .unwrap();
    serve.wait_for("ignored a notify message not from its privfork run", 10);
    // That socket takes no fds (nothing to close on serve's loop).
    let sent = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import array, socket, sys\n\
             s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
             try:\n    s.sendmsg([b'READY=1'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, \
             array.array('i', [1]))], 0, sys.argv[1]); print('fd sent')\n\
             except PermissionError as e: print('fd refused' if e.errno == 1 else e)",
        ])
        .arg(instance_socket(serve.pid(), 1))
        .output()
        .unwrap();
    // Linux 6.16 refuses the message (SO_PASSRIGHTS); an older kernel
    // delivers it, and serve ignores it and closes the fd (the last lines
    // check it can still start an instance after that).
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut version = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let passrights = (version.next().unwrap(), version.next().unwrap()) >= (6, 16);
    assert_eq!(
        String::from_utf8_lossy(&sent.stdout),
        if passrights {
            "fd refused\n"
        } else {
            "fd sent\n"
        },
        "kernel {release}: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    // To the server's NOTIFY_SOCKET, which its privfork run reads.
    let program_socket = environ(sleep, "NOTIFY_SOCKET").expect("the server's NOTIFY_SOCKET");
    outside.send_to(b"READY=1", &program_socket).unwrap();
    serve.wait_for("ignored an sd_notify message from", 10);
    serve.wait_for("instance 1 not ready within 10s: killed", 20);
    // Started again: nothing the messages did keeps serve from forking.
    serve.wait_for("instance 2 started", 20);
    let (_, log) = serve.stop(20);
    assert!(!log.contains("ready after"), "{log}");
}

/// SIGHUPs during a reload are folded into one more reload, begun when it
/// ends, and said once.
#[test]
fn sighups_during_a_reload_fold_into_one_more() {
    let _limit = time_limit!(120);
    let (_dir, _port, serve) = gunicorn_serving(&[]);
    for _ in 0..5 {
        serve.signal(rustix::process::Signal::HUP);
        std::thread::sleep(Duration::from_millis(20));
    }
    serve.wait_for("reload 2 done", 60);
    std::thread::sleep(Duration::from_secs(2));
    let (code, log) = serve.stop(60);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        log.matches("one more reload follows it").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("reload 3"), "{log}");
}

/// A server killed outright (SIGKILL to gunicorn's arbiter) is started
/// again at once (the first failure waits 100 ms) and serves again; the
/// socket was held meanwhile.
#[test]
fn a_crashed_server_is_started_again_and_serves() {
    let _limit = time_limit!(120);
    let (_dir, port, serve) = gunicorn_serving(&[]);
    let procs = gunicorns(serve.pid(), 3);
    let before = get(port, "/").unwrap();
    // The arbiter: the gunicorn process whose parent is not gunicorn.
    let arbiter = *procs
        .iter()
        .find(|&&p| ppid(p).is_some_and(|pp| !procs.contains(&pp)))
        .unwrap();
    kill9(arbiter);
    serve.wait_for("instance 1 exited with status 137", 20);
    serve.wait_for("starting a new instance in 100ms (failure 1 in a row)", 20);
    serve.wait_for("instance 2 ready", 60);
    let after = get(port, "/").unwrap();
    assert_ne!(
        before.split_whitespace().nth(3),
        after.split_whitespace().nth(3),
        "{before} / {after}"
    );
    let (code, log) = serve.stop(60);
    assert_eq!(code, Some(0), "{log}");
}

/// privfork serve started with SIGTERM ignored (as `trap '' TERM` leaves
/// it) still stops its instances with SIGTERM: the signals it sends an
/// instance's privfork run are orders, not ones to leave ignored.
#[test]
fn the_stop_signal_reaches_the_server_whatever_serve_was_started_ignoring() {
    let _limit = time_limit!(60);
    let port = low_port();
    let mut child = std::process::Command::new("/usr/bin/env")
        .args([
            "--default-signal",
            "/bin/sh",
            "-c",
            "trap '' TERM; exec \"$0\" \"$@\"",
        ])
        .arg(env!("CARGO_BIN_EXE_privfork"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--ready", "delay:1s", "--drain", "5s", "-u", "nobody"])
        .args(["--", "/bin/sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("instance 1 ready") {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("{log}");
        }
        log.push_str(&line);
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let code = wait_exit(&mut child, 20);
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    log.push_str(&rest);
    // sleep died of the SIGTERM passed on, not of a kill after --drain.
    assert_eq!(code, Some(128 + libc::SIGTERM), "{log}");
    assert!(!log.contains("still running"), "{log}");
}

/// uvicorn (Debian's), as docs/serve.md's recipe runs it (`--fd 3`,
/// `--ready delay:2s`: it does not notify): 3 reloads under load; every
/// connection is accepted and answered, but for the ones uvicorn drops by
/// itself.
///
/// uvicorn 0.17's graceful stop closes a connection it has accepted but
/// not yet read a request from (`Server.shutdown` closes every connection
/// whose `cycle` is None): the client sees a reset or an empty reply.
/// It does so without privfork too (`benches/uvicorn_alone.py`: a held
/// socket handed from one plain uvicorn to the next 30 times drops a few
/// requests), so such a failure is allowed
/// here; what privfork serve owns is not: a refused or failed connect (no
/// process holding the socket), a wrong answer, an instance killed
/// instead of stopping by itself.
#[test]
fn uvicorn_reloads_keep_every_connection_but_the_ones_uvicorn_drops() {
    let _limit = time_limit!(120);
    assert!(
        std::path::Path::new("/usr/bin/uvicorn").exists(),
        "/usr/bin/uvicorn is missing: apt-get install uvicorn (.ci/run does)"
    );
    let dir = app_dir();
    std::fs::write(
        dir.0.join("asgi.py"),
        r#"import os
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"worker {os.getpid()} instance {os.getpid()}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
"#,
    )
    .unwrap();
    let port = low_port();
    let serve = Serve::start(&[
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "-u".into(),
        "nobody".into(),
        "-p".into(),
        "stdio rpath accept".into(),
        "-v".into(),
        "r:/usr/lib/python3".into(),
        "-v".into(),
        "r:/usr/lib/python3.11".into(),
        "-v".into(),
        "rx:/usr/bin/python3.11".into(),
        "-v".into(),
        "r:/usr/lib/x86_64-linux-gnu".into(),
        "-v".into(),
        format!("r:{}", dir.path()),
        "--ready".into(),
        "delay:2s".into(),
        "--env".into(),
        "PYTHONDONTWRITEBYTECODE=1".into(),
        "--".into(),
        "/usr/bin/uvicorn".into(),
        "--fd".into(),
        "3".into(),
        "--app-dir".into(),
        dir.path().into(),
        "asgi:app".into(),
    ]);
    serve.wait_for("instance 1 ready", 30);
    let load = Load::start(port, 3);
    for n in 1..=3 {
        serve.signal(rustix::process::Signal::HUP);
        serve.wait_for(&format!("reload {n} done"), 60);
    }
    let (ok, failed, not_uvicorns, errors, instances) = load.finish_split();
    let (code, log) = serve.stop(60);
    assert_eq!(not_uvicorns, 0, "{errors:?}\n{log}");
    // Each replaced instance stopped by itself, none was killed.
    for n in 1..=3 {
        assert!(
            log.contains(&format!(
                "privfork serve: instance {n} exited with status 0\n"
            )),
            "instance {n}:\n{log}"
        );
    }
    assert!(!log.contains("killed"), "{log}");
    // uvicorn drops at most the connections it holds unread when a stop
    // begins: one per client (3) at each of the 3 stops.
    assert!(failed <= 9, "{failed} failed: {errors:?}\n{log}");
    assert!(
        ok > 50 && instances >= 2,
        "{ok} answered by {instances}\n{log}"
    );
    assert_eq!(code, Some(0), "{log}");
}

/// Under systemd (NOTIFY_SOCKET set; the test plays systemd): READY=1
/// once the first instance is ready, RELOADING=1 with MONOTONIC_USEC when a
/// reload begins, READY=1 with a STATUS line when it is done, STOPPING=1
/// on SIGTERM.
#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let _limit = time_limit!(60);
    let dir = Dir::new("serve-systemd");
    let path = dir.0.join("notify");
    let systemd = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let port = low_port();
    let mut cmd = privfork_with_default_signals();
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--ready",
            "delay:500ms",
            "-u",
            "nobody",
            "--",
            "/bin/sleep",
            "1000",
        ])
        .env("NOTIFY_SOCKET", &path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let recv = || {
        let mut buf = [0u8; 4096];
        let n = systemd
            .recv(&mut buf)
            .expect("a message from privfork serve");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.contains("READY=1"), "{first}");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    let reloading = recv();
    assert!(
        reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="),
        "{reloading}"
    );
    // Then READY=1 with the reload's outcome (STATUS lines may come between).
    let mut done = recv();
    while !done.contains("READY=1") {
        done = recv();
    }
    assert!(done.contains("STATUS=reload 1 done"), "{done}");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let mut stopping = recv();
    while !stopping.contains("STOPPING=1") {
        stopping = recv();
    }
    assert_eq!(wait_exit(&mut child, 20), Some(128 + libc::SIGTERM));
}

/// Bad input is named, with its own exit code, and nothing keeps running:
/// a malformed option (2); a listener that cannot be bound (114); a first
/// instance that privfork run refuses — a bad promise (121), an unknown
/// user (123) — stops privfork serve with that code, not a restart loop.
#[test]
fn bad_input_is_named_with_its_code() {
    let _limit = time_limit!(60);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let free = format!("127.0.0.1:{}", low_port());
    for (args, code, says) in [
        (vec!["--ready", "soon"], 2, "--ready \"soon\""),
        (vec!["--stop-signal", "KILL"], 2, "--stop-signal \"KILL\""),
        (vec!["--drain", "5x"], 2, "--drain"),
        (vec!["-p", "stdio bogus"], 121, "unknown promise \"bogus\""),
        (vec!["-u", "no-such-user-pf"], 123, "no-such-user-pf"),
    ] {
        let mut all = vec!["serve", "--listen", &free];
        if !args.contains(&"-u") {
            all.extend(["-u", "nobody"]);
        }
        all.extend(args.iter().copied());
        all.extend(["--", "/bin/true"]);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_privfork"))
            .args(&all)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{all:?}: {err}");
        assert!(err.contains(says), "{all:?}: {err}");
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_privfork"))
        .args([
            "serve",
            "--listen",
            &taken,
            "-u",
            "nobody",
            "--",
            "/bin/true",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(114), "{err}");
    assert!(err.contains(&taken), "{err}");
}
