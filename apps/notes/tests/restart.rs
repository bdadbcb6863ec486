//! The smooth restart of notes, end to end, under load: SIGHUPs while
//! many clients — keep-alive and new connections mixed, reading and
//! writing, never retrying — hit the app; no request may fail. Also a
//! binary replaced by one that exits (the preflight refuses it), a storm
//! of SIGHUPs, notes written across restarts, an upload in flight across
//! a restart, and main's pid and listening socket unchanged.

mod common;
#[path = "common/load.rs"]
mod load;
#[path = "../../../crates/privfork/tests/proc_net/mod.rs"]
mod proc_net;
#[path = "common/restart_log.rs"]
mod restart_log;
#[path = "../../../crates/privfork/tests/time_limit/mod.rs"]
mod time_limit;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Notes;
use load::{LoadConfig, LoadHandle, start_load};
use proc_net::listening_inode;
use time_limit::time_limit;

/// Load on notes: 32 clients, half keep-alive, reading a note and a page
/// of the list, one request in 20 a POST; runs until finished (at most
/// `secs`).
fn load_on(n: &Notes, secs: u64) -> LoadHandle {
    let id = n.create("a note to read under load");
    let mut cfg = LoadConfig::new(n.addr.parse().unwrap());
    cfg.clients = 32;
    cfg.keepalive_share = 0.5;
    cfg.duration = Duration::from_secs(secs);
    cfg.paths = vec![format!("/api/notes/{id}"), "/".into()];
    cfg.post = Some(load::PostTarget {
        path: "/api/notes".into(),
        content_type: "application/json".into(),
        body: br#"{"text":"posted under load"}"#.to_vec(),
        every: 20,
    });
    start_load(cfg).unwrap()
}

fn hup(n: &Notes) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(n.pid() as i32).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
}

fn port(n: &Notes) -> u16 {
    n.addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// Asserts the load saw no failure and did some work.
fn assert_no_failure(r: &load::LoadReport, n: &Notes) {
    assert_eq!(
        r.failed(),
        0,
        "failures: {:?}\nlog:\n{}",
        r.failures(),
        n.log()
    );
    assert_eq!(r.aborted_clients, 0);
    assert!(r.ok() > 200, "only {} requests", r.ok());
}

#[test]
fn twenty_sighups_under_load_lose_no_request() {
    let _limit = time_limit!(180);
    common::require_root();
    let n = Notes::start(&[]);
    let pid = n.pid();
    let inode = listening_inode(port(&n)).expect("the listening socket");
    let h = load_on(&n, 120);
    std::thread::sleep(Duration::from_millis(500));
    for k in 1..=20 {
        hup(&n);
        n.wait_log(&format!("restart {k} done"), 1, 30);
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = {
        h.stop();
        h.finish()
    };
    assert_no_failure(&r, &n);
    // One main all along, one listening socket all along.
    assert_eq!(n.pid(), pid);
    assert_eq!(listening_inode(port(&n)), Some(inode));
    let done = restart_log::parse_log(&n.log());
    let ok = |l: &&restart_log::RestartLine| matches!(l, restart_log::RestartLine::Done { .. });
    assert_eq!(done.iter().filter(ok).count(), 20, "{done:?}");
    // Connections were handed over, not all closed: keep-alive clients
    // kept reusing connections across restarts.
    assert!(n.log().contains("handed over"), "{}", n.log());
    let passed: u64 = n
        .log()
        .lines()
        .filter_map(|l| l.split("idle connections: ").nth(1))
        .filter_map(|t| t.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(passed > 0, "main passed no connection on:\n{}", n.log());
    let (s, b) = n.call("GET", "/api/status", None);
    assert_eq!(s, 200);
    let st = common::json(&b);
    assert_eq!(st["generation"], 21, "{b}");
    assert_eq!(st["last_restart"]["ok"], true, "{b}");
    assert_eq!(st["restarts"], 20, "{b}");
}

#[test]
fn binary_replaced_by_one_that_exits_is_refused_while_serving() {
    let _limit = time_limit!(120);
    common::require_root();
    let dir = common::TempDir::new("replaced");
    let bin = dir.path().join("notes");
    std::fs::copy(env!("CARGO_BIN_EXE_notes"), &bin).unwrap();
    let data = dir.path().join("data");
    let n = Notes::spawn_exe(&[], &bin, &data, &[]);
    n.wait_log("every role is ready", 1, 30);
    let worker = n.member("worker");
    let h = load_on(&n, 60);
    std::thread::sleep(Duration::from_millis(500));
    // Replaced on disk (renamed over, as a package manager does).
    let next = dir.path().join("next");
    std::fs::copy("/bin/false", &next).unwrap();
    std::fs::rename(&next, &bin).unwrap();
    hup(&n);
    n.wait_log("restart 1 failed: preflight", 1, 30);
    std::thread::sleep(Duration::from_millis(1000));
    let r = {
        h.stop();
        h.finish()
    };
    assert_no_failure(&r, &n);
    // The old generation serves on, untouched.
    assert_eq!(n.member("worker"), worker);
    let (s, b) = n.call("GET", "/api/status", None);
    assert_eq!(s, 200);
    let st = common::json(&b);
    assert_eq!(st["generation"], 1, "{b}");
    assert_eq!(st["last_restart"]["ok"], false, "{b}");
    assert!(
        st["last_restart"]["detail"]
            .as_str()
            .unwrap()
            .contains("exited with status 1"),
        "{b}"
    );
}

#[test]
fn sighup_storm_under_load_coalesces_and_loses_no_request() {
    let _limit = time_limit!(120);
    common::require_root();
    let n = Notes::start(&[]);
    let h = load_on(&n, 60);
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    for _ in 0..50 {
        hup(&n);
        std::thread::sleep(Duration::from_millis(2));
    }
    let burst = t.elapsed();
    assert!(burst < Duration::from_millis(500));
    n.wait_log("one more restart follows", 1, 10);
    n.wait_log("restart 2 done", 1, 60);
    std::thread::sleep(Duration::from_millis(1500));
    let r = {
        h.stop();
        h.finish()
    };
    assert_no_failure(&r, &n);
    let lines = restart_log::parse_log(&n.log());
    // 50 SIGHUPs, a handful of restarts: while one runs, every SIGHUP
    // folds into one more after it. So at most one restart starts per
    // restart that ends during the burst, plus the first and the one
    // folded after the last: on a loaded machine the burst (50 × 2 ms and
    // more) can outlast a restart (70–200 ms) once or twice.
    let ended_within_burst = lines
        .iter()
        .scan(0.0, |at, l| {
            if let restart_log::RestartLine::Done { handover_ms, .. } = l {
                *at += handover_ms;
            }
            Some(*at)
        })
        .filter(|&at| at < burst.as_secs_f64() * 1000.0)
        .count();
    assert!(
        (2..=3 + ended_within_burst).contains(&lines.len()),
        "{} restarts for 50 SIGHUPs in {burst:?}: {lines:?}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .all(|l| matches!(l, restart_log::RestartLine::Done { .. })),
        "{lines:?}"
    );
}

#[test]
fn notes_written_across_restarts_are_all_there() {
    let _limit = time_limit!(120);
    common::require_root();
    let n = Notes::start(&[]);
    let base = n.base.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            // One keep-alive connection, no retries: every 201 counts.
            let agent = common::agent();
            let mut written = Vec::new();
            let mut k = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && k < 5000 {
                let text = format!("note {k}: ünïcödé ✓ {}", "x".repeat(k as usize % 300));
                let body = serde_json::json!({ "text": text }).to_string();
                let resp = agent
                    .post(&format!("{base}/api/notes"))
                    .header("content-type", "application/json")
                    .send(body.as_bytes())
                    .unwrap_or_else(|e| panic!("POST {k} failed: {e}"));
                assert_eq!(resp.status(), 201, "POST {k}");
                let v: serde_json::Value =
                    serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
                written.push((v["id"].as_str().unwrap().to_owned(), text));
                k += 1;
            }
            written
        })
    };
    for k in 1..=10 {
        std::thread::sleep(Duration::from_millis(300));
        hup(&n);
        n.wait_log(&format!("restart {k} done"), 1, 30);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.join().expect("the writer failed a request");
    assert!(written.len() > 20, "only {} notes written", written.len());
    for (id, text) in &written {
        let (s, b) = n.call("GET", &format!("/api/notes/{id}"), None);
        assert_eq!(s, 200, "note {id}");
        assert_eq!(common::json(&b)["text"].as_str(), Some(text.as_str()));
    }
}

#[test]
fn upload_in_flight_across_a_restart_completes() {
    let _limit = time_limit!(60);
    common::require_root();
    let n = Notes::start(&[]);
    let text = "uploaded slowly, across a restart";
    let body = serde_json::json!({ "text": text }).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut s = TcpStream::connect(&n.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /api/notes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{first}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    hup(&n);
    // The new generation serves; the old one drains — this request with
    // it, half uploaded, for another two seconds.
    n.wait_log("accepting after", 1, 30);
    std::thread::sleep(Duration::from_secs(2));
    s.write_all(rest.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // Answered by the draining worker, which then closes the connection.
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let id = common::json(answer.split("\r\n\r\n").nth(1).unwrap())["id"]
        .as_str()
        .unwrap()
        .to_owned();
    n.wait_log("restart 1 done", 1, 30);
    let (st, b) = n.call("GET", &format!("/api/notes/{id}"), None);
    assert_eq!(st, 200);
    assert_eq!(common::json(&b)["text"].as_str(), Some(text));
}
