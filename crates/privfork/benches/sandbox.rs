//! Cost of the sandbox: a syscall-heavy loop (10^6 `getppid`) with and
//! without the seccomp filter, and with a one-instruction allow-all filter
//! (the floor any filter costs), in forked children taking turns (round by
//! round, so machine noise hits all alike), and the time `Sandbox::apply`
//! takes.
//!
//! Run: `cargo bench -p privfork --bench sandbox` (`-- --quick` for a short
//! run). Root gives the full sandbox (capabilities dropped too).

use std::time::{Duration, Instant};

use privfork::sandbox::Sandbox;

/// `getppid` `n` times through the raw syscall (no vDSO, no caching).
fn syscall_loop(n: u32) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(rustix::process::getppid());
    }
    t.elapsed()
}

/// Runs `f` in a forked child and returns the two numbers it reports.
fn in_child(f: fn() -> (u64, u64)) -> (u64, u64) {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    // SAFETY: this benchmark is single-threaded; the child runs `f`, writes
    // 16 bytes and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let (a, b) = f();
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(&a.to_le_bytes());
        buf[8..].copy_from_slice(&b.to_le_bytes());
        let _ = rustix::io::write(&w, &buf);
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(0) };
    }
    drop(w);
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 16 {
        let n = rustix::io::read(&r, &mut buf[got..]).unwrap();
        assert!(n > 0, "child died before reporting");
        got += n;
    }
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()).unwrap();
    (
        u64::from_le_bytes(buf[..8].try_into().unwrap()),
        u64::from_le_bytes(buf[8..].try_into().unwrap()),
    )
}

const N: u32 = 1_000_000;

fn unfiltered() -> (u64, u64) {
    (syscall_loop(N).as_nanos() as u64, 0)
}

fn filtered() -> (u64, u64) {
    let t = Instant::now();
    Sandbox::new()
        .promises("stdio")
        .unwrap()
        .apply()
        .expect("apply the sandbox");
    let apply = t.elapsed().as_nanos() as u64;
    (syscall_loop(N).as_nanos() as u64, apply)
}

/// The floor: one filter that allows everything (load nr, return ALLOW).
/// What any seccomp filter costs on this kernel, before any rule runs.
fn allow_all() -> (u64, u64) {
    rustix::thread::set_no_new_privs(true).unwrap();
    let prog = vec![
        seccompiler::sock_filter {
            code: 0x20, // BPF_LD | BPF_W | BPF_ABS
            jt: 0,
            jf: 0,
            k: 0,
        },
        seccompiler::sock_filter {
            code: 0x06, // BPF_RET | BPF_K
            jt: 0,
            jf: 0,
            k: 0x7fff_0000, // SECCOMP_RET_ALLOW
        },
    ];
    seccompiler::apply_filter(&prog).expect("install the allow-all filter");
    (syscall_loop(N).as_nanos() as u64, 0)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let rounds = if quick { 2 } else { 15 };
    let (mut plain, mut seccomp, mut apply) = (Vec::new(), Vec::new(), Vec::new());
    let mut floor = Vec::new();
    for _ in 0..rounds {
        plain.push(in_child(unfiltered).0);
        floor.push(in_child(allow_all).0);
        let (loop_ns, apply_ns) = in_child(filtered);
        seccomp.push(loop_ns);
        apply.push(apply_ns);
    }
    let (p, s, a) = (median(plain), median(seccomp), median(apply));
    let fl = median(floor);
    println!(
        "sandbox benchmark ({}, {rounds} rounds)",
        if quick { "quick" } else { "full" }
    );
    println!(
        "  10^6 getppid, no filter       : {:8.1} ms  ({:.1} ns/call)",
        p as f64 / 1e6,
        p as f64 / f64::from(N)
    );
    println!(
        "  10^6 getppid, stdio sandbox   : {:8.1} ms  ({:.1} ns/call)",
        s as f64 / 1e6,
        s as f64 / f64::from(N)
    );
    println!(
        "  10^6 getppid, allow-all filter: {:8.1} ms  ({:.1} ns/call)",
        fl as f64 / 1e6,
        fl as f64 / f64::from(N)
    );
    println!(
        "  ratio filtered / unfiltered   : {:.3}x (target <= 1.15x)",
        s as f64 / p as f64
    );
    println!(
        "  ratio allow-all / unfiltered  : {:.3}x (the floor: any filter at all)",
        fl as f64 / p as f64
    );
    println!(
        "  Sandbox::apply (stdio)        : {:8.1} us",
        a as f64 / 1e3
    );
}
