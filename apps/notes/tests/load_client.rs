//! The load client of the restart benchmark (`common/load.rs`) and the
//! parser of notes' restart lines (`common/restart_log.rs`), tested: the
//! percentile and restart-second arithmetic; each failure kind, against
//! small servers that misbehave on purpose (so the client is shown to see
//! failures, and to open a new connection without counting a failure when
//! one closes between requests); and a run against notes, with no failure
//! while it serves and failures once it is stopped mid-run.

mod common;
#[path = "common/load.rs"]
mod load;
#[path = "common/restart_log.rs"]
mod restart_log;
#[path = "../../../crates/privfork/tests/time_limit/mod.rs"]
mod time_limit;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use load::{LoadConfig, LoadReport, Outcome, Record, percentile, restart_seconds, start_load};
use restart_log::{RestartLine, parse_line, parse_log};
use time_limit::time_limit;

// ---- arithmetic -------------------------------------------------------

#[test]
fn percentiles_are_nearest_rank() {
    let _limit = time_limit!();
    assert_eq!(percentile(&[], 500), None);
    assert_eq!(percentile(&[7], 0), Some(7));
    assert_eq!(percentile(&[7], 999), Some(7));
    let v: Vec<u32> = (1..=1000).collect();
    assert_eq!(percentile(&v, 500), Some(500));
    assert_eq!(percentile(&v, 990), Some(990));
    assert_eq!(percentile(&v, 999), Some(999));
    assert_eq!(percentile(&v, 1000), Some(1000));
    // 10 values: p99 and p99.9 are the largest, p50 the fifth.
    let v: Vec<u32> = (1..=10).collect();
    assert_eq!(percentile(&v, 500), Some(5));
    assert_eq!(percentile(&v, 990), Some(10));
    assert_eq!(percentile(&v, 999), Some(10));
    // 1001 values: p99.9 is the 1000th (ceil(0.999 × 1001) = 1000).
    let v: Vec<u32> = (1..=1001).collect();
    assert_eq!(percentile(&v, 999), Some(1000));
    // The record of a request stays small (the cap's memory is 16 bytes
    // a request).
    assert!(std::mem::size_of::<Record>() <= 16);
    let p = load::Percentiles::of(vec![3000, 1000, 2000]).unwrap();
    assert_eq!(p.p50, Duration::from_millis(2));
    assert_eq!(p.max, Duration::from_millis(3));
}

#[test]
fn a_restart_marks_its_second_and_the_next() {
    let _limit = time_limit!();
    let s = |v: &[u64]| {
        v.iter()
            .copied()
            .collect::<std::collections::BTreeSet<u64>>()
    };
    assert_eq!(restart_seconds(&[]), s(&[]));
    assert_eq!(restart_seconds(&[Duration::from_millis(3200)]), s(&[3, 4]));
    assert_eq!(restart_seconds(&[Duration::from_millis(3999)]), s(&[3, 4]));
    assert_eq!(restart_seconds(&[Duration::from_millis(4000)]), s(&[4, 5]));
    assert_eq!(
        restart_seconds(&[Duration::from_millis(500), Duration::from_millis(1500)]),
        s(&[0, 1, 2])
    );
}

fn record(start_ms: u32, latency_ms: u32, outcome: Outcome) -> Record {
    Record {
        start_ms,
        latency_us: latency_ms * 1000,
        outcome,
        reused: false,
    }
}

fn report(records: Vec<Record>, secs: u64) -> LoadReport {
    let mut outcomes = std::collections::BTreeMap::new();
    for r in &records {
        *outcomes.entry(r.outcome).or_default() += 1;
    }
    LoadReport {
        started: Instant::now(),
        duration: Duration::from_secs(secs),
        elapsed: Duration::from_secs(secs),
        total: records.len() as u64,
        outcomes,
        reused_failures: Default::default(),
        connects: 0,
        connect_failures: 0,
        records,
        unrecorded: 0,
        aborted_clients: 0,
    }
}

#[test]
fn the_summary_splits_requests_by_the_second_they_started_in() {
    let _limit = time_limit!();
    // 10 s; a restart at 4.5 s: seconds 4 and 5 are restart seconds.
    let mut records = Vec::new();
    for s in 0..10u32 {
        for i in 0..100u32 {
            let slow = if (4..6).contains(&s) { 10 } else { 1 };
            records.push(record(s * 1000 + i * 10, slow + i % 2, Outcome::Ok));
        }
    }
    records.push(record(5_900, 1500, Outcome::ClosedBeforeResponse));
    records.push(record(8_000, 3, Outcome::Status(503)));
    let r = report(records, 10);
    let sum = r.summary(&[r.started + Duration::from_millis(4500)]);
    assert_eq!((sum.restart_seconds, sum.quiet_seconds), (2, 8));
    assert_eq!(sum.overall.requests, 1002);
    assert_eq!(sum.overall.failed(), 2);
    assert_eq!(sum.restart.requests, 201);
    assert_eq!(sum.restart.ok, 200);
    assert_eq!(sum.restart.failures[&Outcome::ClosedBeforeResponse], 1);
    assert_eq!(sum.restart.slow, 1);
    assert_eq!(sum.quiet.requests, 801);
    assert_eq!(sum.quiet.failures[&Outcome::Status(503)], 1);
    assert_eq!(sum.quiet.slow, 0);
    let (rl, ql) = (sum.restart.latency.unwrap(), sum.quiet.latency.unwrap());
    assert_eq!(rl.p50, Duration::from_millis(10));
    assert_eq!(rl.p99, Duration::from_millis(11));
    assert_eq!(ql.p99, Duration::from_millis(2));
    // Failures are counted, not timed: the 1.5 s one is not the max.
    assert_eq!(rl.max, Duration::from_millis(11));
    // A restart before the run is ignored; none: every second quiet.
    let none = r.summary(&[r.started - Duration::from_secs(1)]);
    assert_eq!((none.restart_seconds, none.quiet_seconds), (0, 10));
    assert_eq!(none.quiet.requests, 1002);
}

#[test]
fn restart_lines_are_parsed_and_others_ignored() {
    let _limit = time_limit!();
    let log = "privfork family: every role is ready\n\
        privfork family: restart 1 done: generation 2 serving; handover 12.5 ms (SIGHUP → new accepting 8 ms → old gone 12.5 ms)\n\
        privfork family: restart 2 failed: --check: exit status 1; config: bad; generation 2 keeps serving\n\
        privfork family: SIGHUP: a smooth restart is not implemented yet; ignored\n\
        restart 3 done: generation 3 serving; handover 40 ms (SIGHUP → new accepting 30.25 ms → old gone 40 ms)\n";
    assert_eq!(
        parse_log(log),
        vec![
            RestartLine::Done {
                n: 1,
                generation: 2,
                handover_ms: 12.5,
                accepting_ms: 8.0,
                old_gone_ms: 12.5
            },
            RestartLine::Failed {
                n: 2,
                reason: "--check: exit status 1; config: bad".into(),
                generation: 2
            },
            RestartLine::Done {
                n: 3,
                generation: 3,
                handover_ms: 40.0,
                accepting_ms: 30.25,
                old_gone_ms: 40.0
            },
        ]
    );
    for bad in [
        "restart 1 done: generation 2 serving; handover 12 ms",
        "restart x done: generation 2 serving; handover 1 ms (SIGHUP → new accepting 1 ms → old gone 1 ms)",
        "restart 1 failed: no generation",
        "a smooth restart is not implemented yet",
    ] {
        assert_eq!(parse_line(bad), None, "{bad}");
    }
}

// ---- failure kinds, against servers that misbehave ---------------------

/// A loopback server whose every connection is handled by `serve` on a
/// thread of its own; stopped on drop.
struct RawServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawServer {
    fn start(serve: fn(TcpStream)) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for s in l.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                std::thread::spawn(move || serve(s));
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head; false at EOF or on error.
fn read_head(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => buf.push(b[0]),
            _ => return false,
        }
        if buf.len() > 64 << 10 {
            return false;
        }
    }
    true
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A short load (4 clients, half keep-alive) of `addr`.
fn short_load(addr: SocketAddr, tweak: impl FnOnce(&mut LoadConfig)) -> LoadReport {
    let mut cfg = LoadConfig::new(addr);
    cfg.clients = 4;
    cfg.duration = Duration::from_millis(600);
    cfg.connect_timeout = Duration::from_millis(500);
    cfg.per_request_timeout = Duration::from_millis(300);
    tweak(&mut cfg);
    let r = start_load(cfg).unwrap().finish();
    assert_eq!(r.aborted_clients, 0, "{r:?}");
    assert!(r.total > 0, "no request at all");
    r
}

/// Asserts that every request of `r` ended in `outcome`.
fn all_are(r: &LoadReport, outcome: Outcome) {
    assert_eq!(
        r.outcomes.keys().copied().collect::<Vec<_>>(),
        vec![outcome],
        "outcomes: {:?}",
        r.outcomes
    );
}

#[test]
fn a_refused_connect_fails_the_request() {
    let _limit = time_limit!();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = short_load(addr, |_| {});
    all_are(&r, Outcome::ConnectRefused);
    assert_eq!(r.connect_failures, r.total);
    assert_eq!(r.connects, r.total);
}

#[test]
fn a_non_2xx_status_fails_the_request() {
    let _limit = time_limit!();
    let srv = RawServer::start(|mut s| {
        while read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let r = short_load(srv.addr, |_| {});
    all_are(&r, Outcome::Status(503));
    assert_eq!(r.connect_failures, 0);
}

#[test]
fn a_close_before_the_answer_fails_the_request() {
    let _limit = time_limit!();
    let srv = RawServer::start(|mut s| {
        read_head(&mut s);
    });
    let r = short_load(srv.addr, |_| {});
    all_are(&r, Outcome::ClosedBeforeResponse);
}

#[test]
fn a_reset_fails_the_request() {
    let _limit = time_limit!();
    let srv = RawServer::start(|mut s| {
        read_head(&mut s);
        // Linger 0: the close sends RST.
        rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
    });
    let r = short_load(srv.addr, |_| {});
    all_are(&r, Outcome::Reset);
}

#[test]
fn a_silent_server_times_the_request_out() {
    let _limit = time_limit!();
    let srv = RawServer::start(|mut s| {
        read_head(&mut s);
        std::thread::sleep(Duration::from_secs(2));
    });
    let r = short_load(srv.addr, |_| {});
    all_are(&r, Outcome::Timeout);
    let slowest = r.records.iter().map(|r| r.latency_us).max().unwrap();
    assert!(
        (300_000..1_000_000).contains(&slowest),
        "a timeout of 300 ms took {slowest} µs"
    );
}

#[test]
fn a_body_cut_short_fails_the_request() {
    let _limit = time_limit!();
    let srv = RawServer::start(|mut s| {
        if read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
        }
    });
    let r = short_load(srv.addr, |_| {});
    all_are(&r, Outcome::BodyError);
}

#[test]
fn connection_close_makes_a_new_connection_not_a_failure() {
    let _limit = time_limit!();
    // One answer per connection, which says so.
    let srv = RawServer::start(|mut s| {
        if read_head(&mut s) {
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let r = short_load(srv.addr, |c| c.keepalive_share = 1.0);
    all_are(&r, Outcome::Ok);
    assert_eq!(r.connects, r.total, "one connection per request");
    assert!(r.total > 20, "{r:?}");
}

#[test]
fn an_idle_connection_closed_by_the_server_is_replaced_not_failed() {
    let _limit = time_limit!();
    // Keep-alive answers, but the server closes each connection after the
    // first; the clients pause 100 ms between requests, so they see the
    // close before their next request and must connect anew.
    let srv = RawServer::start(|mut s| {
        if read_head(&mut s) {
            let _ = s.write_all(OK);
        }
    });
    let r = short_load(srv.addr, |c| {
        c.keepalive_share = 1.0;
        c.pace = Some(Duration::from_millis(100));
    });
    all_are(&r, Outcome::Ok);
    assert_eq!(r.connects, r.total);
    // A server that keeps them: one connection per client.
    let srv = RawServer::start(|mut s| {
        while read_head(&mut s) {
            let _ = s.write_all(OK);
        }
    });
    let r = short_load(srv.addr, |c| c.keepalive_share = 1.0);
    all_are(&r, Outcome::Ok);
    assert_eq!(r.connects, 4, "{r:?}");
    assert!(r.records.iter().filter(|r| r.reused).count() as u64 > r.total / 2);
}

#[test]
fn the_record_is_capped_and_the_counts_stay_exact() {
    let _limit = time_limit!();
    let srv = RawServer::start(|mut s| {
        while read_head(&mut s) {
            let _ = s.write_all(OK);
        }
    });
    let r = short_load(srv.addr, |c| c.max_records = 10);
    assert_eq!(r.records.len(), 10);
    assert_eq!(r.unrecorded, r.total - 10);
    assert_eq!(r.ok(), r.total);
    let sum = r.summary(&[]);
    assert_eq!(sum.overall.requests, r.total);
    assert_eq!(sum.quiet.requests + sum.restart.requests, 10);
    assert_eq!(sum.unrecorded, r.total - 10);
}

// ---- against notes ------------------------------------------------------

/// A load of notes: reads of one note and of the list, and a POST in 20.
fn notes_load(n: &common::Notes, secs: u64) -> LoadConfig {
    let id = n.create("a note to read under load");
    let mut cfg = LoadConfig::new(n.addr.parse().unwrap());
    cfg.clients = 8;
    cfg.duration = Duration::from_secs(secs);
    cfg.paths = vec![format!("/api/notes/{id}"), "/api/notes?limit=5".into()];
    cfg.post = Some(load::PostTarget {
        path: "/api/notes".into(),
        content_type: "application/json".into(),
        body: br#"{"text":"posted under load"}"#.to_vec(),
        every: 20,
    });
    cfg
}

#[test]
fn notes_serving_gives_no_failure() {
    let _limit = time_limit!();
    common::require_root();
    let n = common::Notes::start(&[]);
    let cfg = notes_load(&n, 3);
    let keepalive = cfg.keepalive_clients();
    let r = start_load(cfg).unwrap().finish();
    assert_eq!(
        r.failed(),
        0,
        "failures: {:?}\nlog:\n{}",
        r.failures(),
        n.log()
    );
    assert!(r.ok() > 100, "{} requests", r.ok());
    assert_eq!(r.aborted_clients, 0);
    // The new-connection clients connect once per request; the keep-alive
    // ones once each.
    let fresh = r.records.iter().filter(|r| !r.reused).count() as u64;
    assert_eq!(r.connects, fresh);
    assert!(r.connects < r.total, "keep-alive reused no connection");
    assert!(r.connects >= keepalive as u64);
    // The POSTs were served (one in 20 of each client's requests).
    let (s, b) = n.call("GET", "/api/notes?limit=1", None);
    assert_eq!(s, 200);
    let total = common::json(&b)["total"].as_u64().unwrap();
    assert!(
        total > 1 + r.total / 40,
        "{total} notes after {} requests",
        r.total
    );
    let sum = r.summary(&[]);
    assert_eq!(sum.quiet_seconds, 3);
    assert!(sum.quiet.latency.is_some());
}

#[test]
fn notes_stopped_mid_run_gives_failures() {
    let _limit = time_limit!();
    common::require_root();
    let mut n = common::Notes::start(&[]);
    let cfg = notes_load(&n, 5);
    let h = start_load(cfg).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = Instant::now();
    n.stop();
    let gone = Instant::now();
    let r = h.finish();
    eprintln!(
        "stop took {:?}; {} requests, failures {:?}",
        gone - stopped,
        r.total,
        r.failures()
    );
    let failures = r.failures();
    assert!(r.ok() > 0, "{r:?}");
    assert!(r.failed() > 0, "no failure with the server stopped");
    assert!(
        failures.get(&Outcome::ConnectRefused).copied().unwrap_or(0) > 0,
        "no refused connect once notes stopped: {failures:?}"
    );
    // Every request started a moment after main is gone has failed (its
    // members die with it).
    let after = gone.duration_since(r.started).as_millis() as u32 + 200;
    let late: Vec<_> = r.records.iter().filter(|x| x.start_ms > after).collect();
    assert!(!late.is_empty(), "notes took {:?} to stop", gone - stopped);
    assert!(late.iter().all(|x| !x.outcome.is_ok()), "{late:?}");
    // …and the split by seconds sees them.
    let sum = r.summary(&[stopped]);
    assert!(sum.restart.failed() > 0);
    assert_eq!(sum.quiet.failed() + sum.restart.failed(), r.failed());
}
