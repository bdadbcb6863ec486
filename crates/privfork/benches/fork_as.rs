//! Fork-as round trip against a bare fork + pipe + waitpid baseline, and
//! fork-as in exec mode (the child a fresh image of this binary) against
//! plain fork-as, with a small heap and with 512 MiB of touched heap (fork
//! copies page tables, so its cost grows with the mapped memory).
//!
//! Run as root: `cargo bench -p privfork --bench fork_as`
//! (`-- --quick` for a short run). Prints median, p99 and calls/s per case
//! and the ratios fork-as / baseline and exec mode / fork-as at each heap
//! size. The cases alternate call by call so that machine noise hits all
//! alike.
//!
//! This is a plain `harness = false` binary rather than criterion because
//! fork-as refuses to run in a multithreaded process and the process must
//! stay single-threaded for the whole measurement.

use std::hint::black_box;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use privfork::ForkAs;
use privfork::exe::Exe;
use privfork::fork_as::{Functions, exec_entry};

/// fork, child writes a u64 to a pipe and `_exit`s, parent reads and reaps.
fn bare_fork_pipe_wait() -> u64 {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    // SAFETY: this benchmark process is single-threaded (checked in main),
    // so the child is a consistent copy; it only writes and calls _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let v: u64 = 42;
        let _ = rustix::io::write(&w, &v.to_le_bytes());
        // SAFETY: _exit never returns; skipping destructors is intended.
        unsafe { libc::_exit(0) };
    }
    drop(w);
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        let n = rustix::io::read(r.as_fd(), &mut buf[got..]).unwrap();
        assert!(n > 0, "child closed the pipe early");
        got += n;
    }
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()).unwrap();
    u64::from_le_bytes(buf)
}

struct Stats {
    median: Duration,
    p99: Duration,
    per_sec: f64,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort_unstable();
    let total: Duration = samples.iter().sum();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p99: at(0.99),
        per_sec: samples.len() as f64 / total.as_secs_f64(),
    }
}

fn measure(label: &str, samples: usize, exe: &Exe) {
    let call = ForkAs::user("nobody")
        .expect("user nobody")
        .timeout(Duration::from_secs(10));
    let exec = || -> u64 { call.run_exec(exe, "answer", &()).unwrap() };
    // Warm up every path (page cache, lazy init, the user database).
    for _ in 0..20 {
        black_box(bare_fork_pipe_wait());
        black_box(call.run(|| 42u64).unwrap());
        assert_eq!(exec(), 42);
    }
    let (mut base, mut fa, mut ex) = (Vec::new(), Vec::new(), Vec::new());
    // Alternate call by call, so that noise from the shared machine falls
    // on every case alike.
    for _ in 0..samples {
        let t = Instant::now();
        black_box(bare_fork_pipe_wait());
        base.push(t.elapsed());
        let t = Instant::now();
        black_box(call.run(|| black_box(42u64)).unwrap());
        fa.push(t.elapsed());
        let t = Instant::now();
        black_box(exec());
        ex.push(t.elapsed());
    }
    let (b, f, e) = (stats(base), stats(fa), stats(ex));
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("{label}");
    println!(
        "  bare fork+pipe+waitpid : median {:8.1} µs  p99 {:8.1} µs  {:8.0} calls/s",
        us(b.median),
        us(b.p99),
        b.per_sec
    );
    println!(
        "  fork-as nobody -> u64  : median {:8.1} µs  p99 {:8.1} µs  {:8.0} calls/s",
        us(f.median),
        us(f.p99),
        f.per_sec
    );
    println!(
        "  ratio fork-as / bare   : median {:.3}×  p99 {:.3}×  ({} samples each)",
        us(f.median) / us(b.median),
        us(f.p99) / us(b.p99),
        samples
    );
    println!(
        "  exec mode nobody -> u64: median {:8.1} µs  p99 {:8.1} µs  {:8.0} calls/s",
        us(e.median),
        us(e.p99),
        e.per_sec
    );
    println!(
        "  ratio exec / fork-as   : median {:.3}×  p99 {:.3}×",
        us(e.median) / us(f.median),
        us(e.p99) / us(f.p99),
    );
}

fn main() {
    // First: a spawned exec-mode child serves its call here and exits.
    exec_entry(&Functions::new().register("answer", |(): ()| 42u64));
    let exe = Exe::current().expect("pin /proc/self/exe");
    let args: Vec<String> = std::env::args().collect();
    // cargo bench passes --bench; cargo test --benches runs us with no
    // flag: then do one quick smoke round so the bench stays compiled and
    // working without taking minutes of the test run.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    assert!(
        rustix::process::geteuid().is_root(),
        "the fork-as benchmark drops to nobody and must run as root"
    );
    let threads = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().to_owned()))
        .unwrap();
    assert_eq!(threads, "1", "the benchmark must run single-threaded");
    let (small_samples, big_samples) = if quick { (40, 5) } else { (3000, 300) };

    println!(
        "fork-as benchmark ({})",
        if quick { "quick" } else { "full" }
    );
    measure("heap: small (process as started)", small_samples, exe);

    // 512 MiB, every page touched so it is really mapped.
    let mut heap = vec![0u8; 512 << 20];
    for i in (0..heap.len()).step_by(4096) {
        heap[i] = (i / 4096) as u8;
    }
    black_box(&heap);
    measure("heap: 512 MiB touched", big_samples, exe);
    black_box(&heap);
}
