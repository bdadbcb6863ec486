//! IPC benchmark (harness = false): prints median and p99 figures.
//!
//! 1. Small-message round trip over a typed [`Channel`] against a raw
//!    socketpair `write`/`read` ping-pong of the same size, alternating call
//!    by call in the same run (target: channel median <= 1.5x raw median).
//!    The threads are pinned — once all on one CPU, once the echo threads on
//!    another — because where the scheduler puts them otherwise decides a
//!    2-3x difference on its own.
//! 2. Throughput of 64 KiB messages (`Bytes` payload) one way, against raw
//!    64 KiB writes.
//! 3. Round trip through a [`Client`] shared by 8 threads.
//!
//! Run: `cargo bench -p privfork --bench ipc` (add `-- --quick` for a short
//! run).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use privfork::ipc::{Bytes, Channel, Client, Limits, socketpair};
use privfork::ipc_message;

ipc_message! {
    #[derive(Debug)]
    pub enum Up / UpKind {
        1 => Ping(u32),
        2 => Blob(Bytes),
        3 => Stop,
    }
}

ipc_message! {
    #[derive(Debug)]
    pub enum Down / DownKind {
        1 => Pong(u32),
    }
}

/// Size of the raw message: what the channel puts on the wire for `Ping`
/// (20-byte header + variant + varint).
const SMALL: usize = 20 + 1 + 5;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    let med = percentile(&v, 0.5);
    println!(
        "{name:<34} n={:<7} median {:>8.2} us   p99 {:>8.2} us",
        v.len(),
        med.as_secs_f64() * 1e6,
        percentile(&v, 0.99).as_secs_f64() * 1e6
    );
    med
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
}

/// Round trips with the caller on CPU 0 and both echo threads on
/// `echo_cpu`: where the threads run decides whether a round trip is a
/// same-CPU hand-off or a cross-CPU wake-up, which differ by 2-3x on a VM,
/// so both cases are pinned alike and measured separately.
fn round_trips(rounds: usize, per_round: usize, echo_cpu: usize) {
    println!("-- caller on CPU 0, echo threads on CPU {echo_cpu}");
    pin(0);
    // Raw: a thread echoes fixed-size messages.
    let (a, b) = UnixStream::pair().unwrap();
    let raw_echo = thread::spawn(move || {
        pin(echo_cpu);
        let mut b = b;
        let mut buf = [0u8; SMALL];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
    });
    // Channel: a thread answers Ping(n) with Pong(n).
    let (mut ch, mut server) = Channel::<Up, Down>::pair(Limits::default()).unwrap();
    let ch_echo = thread::spawn(move || {
        pin(echo_cpu);
        while let Ok(r) = server.recv() {
            match r.msg {
                Up::Ping(n) => server.send_with(r.request_id, &Down::Pong(n), Vec::new()),
                _ => break,
            }
            .unwrap();
        }
    });

    let mut raw = Vec::with_capacity(rounds * per_round);
    let mut typed = Vec::with_capacity(rounds * per_round);
    let mut a = a;
    let msg = [7u8; SMALL];
    let mut buf = [0u8; SMALL];
    for round in 0..rounds + 1 {
        // Round 0 warms up both paths and is not recorded.
        for i in 0..per_round {
            let t = Instant::now();
            a.write_all(&msg).unwrap();
            a.read_exact(&mut buf).unwrap();
            if round > 0 {
                raw.push(t.elapsed());
            }
            let t = Instant::now();
            ch.send(&Up::Ping(u32::MAX - i as u32)).unwrap();
            let r = ch.recv().unwrap();
            if round > 0 {
                typed.push(t.elapsed());
            }
            assert!(matches!(r.msg, Down::Pong(_)));
        }
    }
    let raw_med = summary("raw socketpair ping-pong", raw);
    let ch_med = summary("typed Channel round trip", typed);
    println!(
        "ratio typed/raw (median)           {:.2}x   (target <= 1.5x)",
        ch_med.as_secs_f64() / raw_med.as_secs_f64()
    );
    drop(a);
    raw_echo.join().unwrap();
    ch.send(&Up::Stop).unwrap();
    ch_echo.join().unwrap();
}

fn throughput(count: usize) {
    const SIZE: usize = 64 * 1024;
    // Raw 64 KiB writes for reference.
    let (a, b) = UnixStream::pair().unwrap();
    let reader = thread::spawn(move || {
        let mut b = b;
        let mut buf = vec![0u8; SIZE];
        for _ in 0..count {
            b.read_exact(&mut buf).unwrap();
        }
    });
    let data = vec![5u8; SIZE];
    let t = Instant::now();
    let mut a = a;
    for _ in 0..count {
        a.write_all(&data).unwrap();
    }
    reader.join().unwrap();
    let raw = t.elapsed();

    let (mut tx, mut rx) = Channel::<Up, Down>::pair(Limits::default()).unwrap();
    let reader = thread::spawn(move || {
        let mut bytes = 0usize;
        for _ in 0..count {
            match rx.recv().unwrap().msg {
                Up::Blob(b) => bytes += b.0.len(),
                other => panic!("{other:?}"),
            }
        }
        bytes
    });
    let blob = Up::Blob(Bytes(data));
    let t = Instant::now();
    for _ in 0..count {
        tx.send(&blob).unwrap();
    }
    let bytes = reader.join().unwrap();
    let typed = t.elapsed();
    assert_eq!(bytes, count * SIZE);
    let report = |name: &str, d: Duration| {
        let mib = (count * SIZE) as f64 / (1024.0 * 1024.0);
        println!(
            "{name:<34} {count} x 64 KiB in {:>7.1} ms: {:>7.0} MiB/s, {:>7.0} msg/s, {:>6.2} us/msg",
            d.as_secs_f64() * 1e3,
            mib / d.as_secs_f64(),
            count as f64 / d.as_secs_f64(),
            d.as_secs_f64() * 1e6 / count as f64
        );
    };
    report("raw 64 KiB writes", raw);
    report("typed Channel 64 KiB messages", typed);
}

fn shared_client(threads: usize, calls: usize) {
    let (client, server) = socketpair().unwrap();
    let srv = thread::spawn(move || {
        let mut ch = Channel::<Down, Up>::from_fd(server, Limits::default()).unwrap();
        while let Ok(r) = ch.recv() {
            let Up::Ping(n) = r.msg else { break };
            ch.send_with(r.request_id, &Down::Pong(n), Vec::new())
                .unwrap();
        }
    });
    let client = Client::new(Channel::<Up, Down>::from_fd(client, Limits::default()).unwrap());
    let all: Vec<Duration> = thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let client = &client;
                s.spawn(move || {
                    let mut v = Vec::with_capacity(calls);
                    for i in 0..calls {
                        let t = Instant::now();
                        client.call(&Up::Ping(i as u32), Vec::new()).unwrap();
                        v.push(t.elapsed());
                    }
                    v
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    summary(&format!("Client call, {threads} threads sharing"), all);
    drop(client);
    srv.join().unwrap();
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing:
    // then run the short version so the bench stays working in CI.
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let (rounds, per_round, count, calls) = if quick {
        (3, 2_000, 2_000, 500)
    } else {
        (10, 5_000, 20_000, 5_000)
    };
    // Counted before any pinning (which would shrink the answer to 1).
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    round_trips(rounds, per_round, 0);
    if cpus > 1 {
        round_trips(rounds, per_round, 1);
    }
    // The rest runs unpinned again.
    let mut all = rustix::thread::CpuSet::new();
    for cpu in 0..cpus {
        all.set(cpu);
    }
    rustix::thread::sched_setaffinity(None, &all).expect("sched_setaffinity");
    throughput(count);
    shared_client(8, calls);
}
