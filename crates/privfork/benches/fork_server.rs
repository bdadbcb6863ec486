//! Fork-server round trip from a multithreaded caller holding 512 MiB of
//! touched heap, against direct fork-as from the same process while it was
//! still single-threaded and already held the 512 MiB (fork cost grows with
//! the caller's page tables; the server stays small).
//!
//! Run as root: `cargo bench -p privfork --bench fork_server`
//! (`-- --quick` for a short run). Prints median, p99 and calls/s, and the
//! ratio direct / server.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use privfork::ForkAs;
use privfork::fork_server::ForkServer;

fn answer(x: u64) -> u64 {
    x + 1
}

fn summary(label: &str, mut s: Vec<Duration>) -> Duration {
    s.sort_unstable();
    let total: Duration = s.iter().sum();
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "  {label:<44}: median {:9.1} µs  p99 {:9.1} µs  {:8.0} calls/s  ({} samples)",
        us(at(0.5)),
        us(at(0.99)),
        s.len() as f64 / total.as_secs_f64(),
        s.len()
    );
    at(0.5)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    assert!(
        rustix::process::geteuid().is_root(),
        "the fork-server benchmark drops to nobody and must run as root"
    );
    let (direct_n, server_n) = if quick { (5, 50) } else { (200, 3000) };
    println!(
        "fork-server benchmark ({})",
        if quick { "quick" } else { "full" }
    );

    // The server first, while the process is small and single-threaded.
    let server = Arc::new(
        ForkServer::builder()
            .register("answer", answer)
            .allow("answer", "nobody")
            .expect("nobody")
            .spawn()
            .expect("spawn fork server"),
    );
    let mut heap = vec![0u8; 512 << 20];
    for i in (0..heap.len()).step_by(4096) {
        heap[i] = (i / 4096) as u8;
    }
    black_box(&heap);

    // Direct fork-as: this process, single-threaded, 512 MiB.
    let call = ForkAs::user("nobody")
        .expect("nobody")
        .timeout(Duration::from_secs(10));
    for _ in 0..3 {
        black_box(call.run(|| 1u64).unwrap());
    }
    let mut direct = Vec::with_capacity(direct_n);
    for _ in 0..direct_n {
        let t = Instant::now();
        black_box(call.run(|| black_box(42u64)).unwrap());
        direct.push(t.elapsed());
    }

    // The same process made multithreaded: calls go to the server from a
    // worker thread while another thread idles.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let idler = std::thread::spawn(move || stop_rx.recv());
    let s2 = Arc::clone(&server);
    let via_server = std::thread::spawn(move || {
        for _ in 0..20 {
            black_box(s2.call::<_, u64>("answer", "nobody", &1u64).unwrap());
        }
        let mut v = Vec::with_capacity(server_n);
        for i in 0..server_n as u64 {
            let t = Instant::now();
            black_box(s2.call::<_, u64>("answer", "nobody", &i).unwrap());
            v.push(t.elapsed());
        }
        v
    })
    .join()
    .unwrap();
    stop_tx.send(()).unwrap();
    idler.join().unwrap().unwrap();

    println!("caller heap: 512 MiB touched");
    let d = summary("direct fork-as, single-threaded caller", direct);
    let s = summary("fork server, from a multithreaded caller", via_server);
    println!(
        "  ratio direct / server (median)              : {:.1}× (the server wins above 1)",
        d.as_secs_f64() / s.as_secs_f64()
    );
    black_box(&heap);
}
