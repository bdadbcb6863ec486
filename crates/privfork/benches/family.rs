//! The process family, measured: time from start to every role ready,
//! main's resident memory once started, and requests per second of the
//! `family` example (worker + helper: every request rendered in a fork-as
//! child) against the same handler and HTTP code in one unsandboxed
//! process — the cost of the separation, in the same run.
//!
//! Run as root: `cargo bench -p privfork --bench family` (`-- --quick`
//! for a short run). The load comes from `wrk` on 127.0.0.1 when it is
//! installed (`apt-get install wrk`), else from a small keep-alive client
//! built in (the bench says which).

#[path = "../examples/family/roles.rs"]
#[allow(dead_code)]
mod roles;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use privfork::family::Family;

fn main() {
    Family::new(roles::ROLES).dispatch();
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(addr) = arg("--family-main") {
        let spec = format!("{addr},name=http").parse().unwrap();
        std::process::exit(Family::new(roles::ROLES).listen(vec![spec]).run_main());
    }
    if let Some(addr) = arg("--baseline") {
        baseline(&addr);
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "the family bench starts members as nobody: run it as root"
    );
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let (rounds, secs) = if quick { (1, 2) } else { (3, 8) };
    let wrk = Command::new("wrk").arg("--version").output().is_ok();
    println!(
        "family benchmark ({}; load: {})",
        if quick { "quick" } else { "full" },
        if wrk {
            "wrk -t2 -c16"
        } else {
            "built-in client, 16 connections"
        }
    );
    let mut ready = Vec::new();
    let mut rss = Vec::new();
    let (mut fam, mut base) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        // One single-process baseline, one family, alternating.
        let addr = free_addr();
        let mut b = start(&["--baseline", &addr]);
        wait_http(&addr);
        base.push(load(&addr, secs, wrk));
        stop(&mut b);

        let addr = free_addr();
        let t0 = Instant::now();
        let mut main = start_logged(&["--family-main", &addr]);
        wait_log(&mut main, "every role is ready");
        ready.push(t0.elapsed());
        wait_http(&addr);
        rss.push(vm_rss_kib(main.0.id()));
        fam.push(load(&addr, secs, wrk));
        stop(&mut main.0);
    }
    ready.sort();
    rss.sort();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (f, b) = (median(&mut fam), median(&mut base));
    println!(
        "  start to every role ready : median {:8.1} ms  ({} starts)",
        ready[ready.len() / 2].as_secs_f64() * 1e3,
        ready.len()
    );
    println!(
        "  main's RSS once started   : median {:8.0} KiB ({:.2} MiB)",
        rss[rss.len() / 2] as f64,
        rss[rss.len() / 2] as f64 / 1024.0
    );
    println!("  single unsandboxed process: median {b:8.0} requests/s");
    println!(
        "  family (worker + helper)  : median {f:8.0} requests/s  (a fork-as child per request)"
    );
    println!("  ratio family / single     : {:.3}×", f / b);
}

/// The same HTTP code and handler in one unsandboxed process.
fn baseline(addr: &str) -> ! {
    let listener = TcpListener::bind(addr).unwrap();
    let stopping = Arc::new(AtomicBool::new(false));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let stopping = Arc::clone(&stopping);
        std::thread::spawn(move || {
            let handler = |path: &str| Ok(roles::render(path.to_owned()));
            roles::serve_connection(conn, &handler, &stopping);
        });
    }
    std::process::exit(0)
}

fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

fn start(args: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A process and its stderr, read line by line.
struct Logged(Child, BufReader<std::process::ChildStderr>);

fn start_logged(args: &[&str]) -> Logged {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(c.stderr.take().unwrap());
    Logged(c, err)
}

fn wait_log(p: &mut Logged, words: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = p.1.read_line(&mut line).unwrap();
        assert!(n > 0, "main ended before {words:?}");
        if line.contains(words) {
            // Keep draining so main never blocks on a full pipe.
            let mut rest = std::mem::replace(&mut p.1, BufReader::new(dummy_stderr()));
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = rest.read_to_end(&mut sink);
            });
            return;
        }
    }
}

fn dummy_stderr() -> std::process::ChildStderr {
    let mut c = Command::new("true").stderr(Stdio::piped()).spawn().unwrap();
    let e = c.stderr.take().unwrap();
    let _ = c.wait();
    e
}

fn wait_http(addr: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = write!(s, "GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            if s.read_to_string(&mut out).is_ok() && out.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{addr} never answered 200");
}

fn stop(c: &mut Child) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(c.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    );
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if c.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn vm_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Requests per second on `addr` for `secs` seconds.
fn load(addr: &str, secs: u64, wrk: bool) -> f64 {
    if wrk {
        let out = Command::new("wrk")
            .args([
                "-t2",
                "-c16",
                &format!("-d{secs}s"),
                &format!("http://{addr}/"),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        return text
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("wrk said:\n{text}"));
    }
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (addr, done) = (addr.to_owned(), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                while Instant::now() < end {
                    write!(s, "GET / HTTP/1.1\r\nHost: b\r\n\r\n").unwrap();
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        r.read_line(&mut line).unwrap();
                        if let Some(v) = line.strip_prefix("Content-Length: ") {
                            len = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    r.read_exact(&mut body).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / secs as f64
}
