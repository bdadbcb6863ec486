//! Fork-as in exec mode, end to end. The test binary is itself the pinned
//! exe: its `main` calls the exec entry before anything else, so a spawned
//! copy started with the exec role serves one request and exits. Runs as
//! root; each case in a fresh single-threaded process (see `support`).

mod support;

use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use privfork::exe::Exe;
use privfork::fork_as::{EXEC_ROLE, Environment, Functions, Stdio, exec_entry};
use privfork::sandbox::Sandbox;
use privfork::{ForkAs, ForkAsError, Identity};
use serde::{Deserialize, Serialize};
use support::{assert_no_children, require_root, status_field};

fn functions() -> Functions {
    Functions::new()
        .register("answer", |(): ()| 42u64)
        .register("echo", |s: String| s)
        .register("negate", |b: bool| !b)
        .register("seen", |(): ()| seen())
        .register_sandboxed(
            "seen_sandboxed",
            Sandbox::new()
                .promises("stdio rpath")
                .unwrap()
                .unveil("r:/proc")
                .unwrap(),
            |(): ()| status(),
        )
        .register("scan", |needles: Needles| scan_self(&needles))
        .register("panic", |(): ()| -> u8 { panic!("exec boom {}", 7) })
        .register("abort", |(): ()| -> u8 { std::process::abort() })
        .register("aslimit", |(): ()| {
            let l = rustix::process::getrlimit(rustix::process::Resource::As);
            // Raising it back must fail (the hard limit was lowered).
            let raised = rustix::process::setrlimit(
                rustix::process::Resource::As,
                rustix::process::Rlimit {
                    current: None,
                    maximum: None,
                },
            );
            (l.current, l.maximum, raised.is_ok())
        })
        .register("sleep", |secs: u64| {
            std::thread::sleep(Duration::from_secs(secs));
            0u8
        })
        .register("sleep_print_pid", |secs: u64| {
            println!("{}", rustix::process::getpid().as_raw_nonzero());
            std::thread::sleep(Duration::from_secs(secs));
            0u8
        })
        .register("big", |n: usize| vec![7u8; n])
        .register("fds", |(): ()| list_fds())
        .register("env", |(): ()| {
            std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
}

fn main() {
    // First: a spawned exec-mode child serves here and never returns.
    exec_entry(&functions());
    support::main(
        &[
            ("round_trip", round_trip),
            (
                "child_runs_as_nobody_after_the_setup_routine",
                child_runs_as_nobody_after_the_setup_routine,
            ),
            (
                "parent_secret_in_fork_child_not_in_exec_child",
                parent_secret_in_fork_child_not_in_exec_child,
            ),
            ("panic_gives_its_message", panic_gives_its_message),
            ("abort_gives_sigabrt", abort_gives_sigabrt),
            (
                "max_memory_reaches_the_exec_child",
                max_memory_reaches_the_exec_child,
            ),
            (
                "slow_function_times_out_and_is_reaped",
                slow_function_times_out_and_is_reaped,
            ),
            (
                "unknown_function_and_bad_arguments_are_named",
                unknown_function_and_bad_arguments_are_named,
            ),
            ("oversized_result_is_refused", oversized_result_is_refused),
            ("child_dies_with_its_parent", child_dies_with_its_parent),
            ("no_stray_fd_in_the_child", no_stray_fd_in_the_child),
            (
                "environment_is_empty_or_as_set",
                environment_is_empty_or_as_set,
            ),
            (
                "works_from_a_multithreaded_caller",
                works_from_a_multithreaded_caller,
            ),
            (
                "sandbox_on_the_call_is_refused",
                sandbox_on_the_call_is_refused,
            ),
            (
                "started_without_a_channel_it_runs_nothing",
                started_without_a_channel_it_runs_nothing,
            ),
            ("setuid_copy_refuses_to_serve", setuid_copy_refuses_to_serve),
            (
                "a_channel_from_another_process_is_refused",
                a_channel_from_another_process_is_refused,
            ),
            (
                "a_connected_client_is_not_a_channel",
                a_connected_client_is_not_a_channel,
            ),
        ],
        &[("orphan_helper", orphan_helper)],
    )
}

fn exe() -> &'static Exe {
    Exe::current().expect("pin /proc/self/exe")
}

fn nobody() -> ForkAs {
    ForkAs::user("nobody")
        .expect("nobody exists")
        .timeout(Duration::from_secs(20))
}

/// What /proc/self/status says (all a "stdio rpath" sandbox may read).
#[derive(Debug, Serialize, Deserialize)]
struct Status {
    uid: String,
    gid: String,
    groups: String,
    caps: [String; 5],
    no_new_privs: String,
    seccomp: String,
}

fn status() -> Status {
    Status {
        uid: status_field("Uid"),
        gid: status_field("Gid"),
        groups: status_field("Groups"),
        caps: ["CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"].map(status_field),
        no_new_privs: status_field("NoNewPrivs"),
        seccomp: status_field("Seccomp"),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    status: Status,
    dumpable: bool,
    pdeathsig: Option<i32>,
    session_leader: bool,
    argv: Vec<String>,
}

fn seen() -> Seen {
    Seen {
        status: status(),
        dumpable: rustix::process::dumpable_behavior().unwrap()
            != rustix::process::DumpableBehavior::NotDumpable,
        pdeathsig: rustix::process::parent_process_death_signal()
            .unwrap()
            .map(|s| s.as_raw()),
        session_leader: rustix::process::getsid(None).unwrap() == rustix::process::getpid(),
        argv: std::env::args().collect(),
    }
}

fn round_trip() {
    require_root();
    let call = nobody();
    let n: u64 = call.run_exec(exe(), "answer", &()).unwrap();
    assert_eq!(n, 42);
    // Larger than a socket's buffer both ways: the request is sent and the
    // result read as the child takes and gives them.
    let text: String = (0..400_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let back: String = call.run_exec(exe(), "echo", &text).unwrap();
    assert_eq!(back, text);
    let b: bool = call.run_exec(exe(), "negate", &true).unwrap();
    assert!(!b);
    assert_no_children();
}

fn child_runs_as_nobody_after_the_setup_routine() {
    require_root();
    let id = Identity::user("nobody").unwrap();
    let ids = |n: u32| format!("{n}\t{n}\t{n}\t{n}");
    let check = |function: &str, s: &Status, seccomp: &str| {
        assert_eq!(s.uid, ids(id.uid()), "{function}");
        assert_eq!(s.gid, ids(id.gid()), "{function}");
        assert_eq!(s.groups, id.gid().to_string(), "{function}");
        // Inheritable, permitted, effective and ambient are empty. The
        // bounding set is left as inherited in a forked-function child
        // (crate::setup, BoundingSet stage): with no_new_privs set and an
        // empty permitted set, no execve can gain from it.
        for (i, set) in s.caps[..4].iter().enumerate() {
            assert_eq!(set, "0000000000000000", "{function}: capability set {i}");
        }
        assert_eq!(s.no_new_privs, "1", "{function}");
        assert_eq!(s.seccomp, seccomp, "{function}: seccomp mode");
    };
    let s: Seen = ForkAs::new(id.clone())
        .run_exec(exe(), "seen", &())
        .unwrap();
    check("seen", &s.status, "0");
    assert!(!s.dumpable, "dumpable");
    assert_eq!(s.pdeathsig, Some(libc::SIGKILL));
    assert!(s.session_leader, "a session of its own");
    assert_eq!(
        s.argv[1..],
        ["--privfork-role".to_owned(), EXEC_ROLE.to_owned()],
        "argv"
    );
    // The function's own sandbox, prepared in the child from its image.
    let s: Status = ForkAs::new(id.clone())
        .run_exec(exe(), "seen_sandboxed", &())
        .unwrap();
    check("seen_sandboxed", &s, "2");
    // Numeric ids with explicit groups arrive exactly.
    let id = Identity::from_ids(4000300, 4000301)
        .unwrap()
        .with_groups([4000302])
        .unwrap();
    let s: Status = ForkAs::new(id)
        .run_exec(exe(), "seen_sandboxed", &())
        .unwrap();
    assert_eq!(s.uid, ids(4000300));
    assert_eq!(s.gid, ids(4000301));
    assert_eq!(s.groups, "4000301 4000302");
    assert_no_children();
}

/// What the memory scan looks for: the secret's bytes, given inverted so
/// that the scanner itself never holds them (each byte is compared with
/// `!inverted[j]` in a register), and a marker the scan must find (the
/// argument's own bytes, in the child's heap) to show it reads the heap.
#[derive(Debug, Serialize, Deserialize)]
struct Needles {
    secret_inverted: Vec<u8>,
    marker: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Scan {
    secret_hits: usize,
    marker_hits: usize,
    regions_read: usize,
    bytes_read: u64,
    unreadable: Vec<String>,
    /// Opening /proc/self/mem failed while the process was not dumpable.
    mem_refused_while_not_dumpable: bool,
}

/// Reads every readable mapping of this process through /proc/self/mem
/// and counts the needles.
///
/// A fork-as child is not dumpable, and the kernel then gives its /proc
/// files to root (mode 0600 for `mem`): after the drop the child cannot
/// open even its own `/proc/self/mem` (EACCES). The scan notes that, then
/// makes itself dumpable — any process may — and opens it again. Only
/// the way of reading changes, not what the memory holds.
fn scan_self(n: &Needles) -> Scan {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let mut mem_refused_while_not_dumpable = false;
    let mem = match std::fs::File::open("/proc/self/mem") {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            mem_refused_while_not_dumpable = rustix::process::dumpable_behavior().unwrap()
                == rustix::process::DumpableBehavior::NotDumpable;
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)
                .unwrap();
            std::fs::File::open("/proc/self/mem").expect("open /proc/self/mem when dumpable")
        }
        Err(e) => panic!("open /proc/self/mem: {e}"),
    };
    let mut scan = Scan {
        mem_refused_while_not_dumpable,
        secret_hits: 0,
        marker_hits: 0,
        regions_read: 0,
        bytes_read: 0,
        unreadable: Vec::new(),
    };
    let overlap = n.secret_inverted.len().max(n.marker.len());
    let mut buf = vec![0u8; 1 << 20];
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let range = f.next().unwrap();
        let perms = f.next().unwrap();
        let name = f.nth(3).unwrap_or("");
        if !perms.starts_with('r') || name == "[vvar]" || name == "[vvar_vclock]" {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let (start, end) = (
            u64::from_str_radix(start, 16).unwrap(),
            u64::from_str_radix(end, 16).unwrap(),
        );
        let mut at = start;
        let mut ok = true;
        while at < end {
            let want = ((end - at) as usize).min(buf.len());
            let got = match mem.read_at(&mut buf[..want], at) {
                Ok(0) | Err(_) => {
                    ok = false;
                    break;
                }
                Ok(got) => got,
            };
            scan.bytes_read += got as u64;
            let chunk = &buf[..got];
            scan.secret_hits += count(chunk, |w| {
                w.len() >= n.secret_inverted.len()
                    && n.secret_inverted
                        .iter()
                        .enumerate()
                        .all(|(j, &inv)| w[j] == !inv)
            });
            scan.marker_hits += count(chunk, |w| w.starts_with(&n.marker));
            if at + got as u64 >= end {
                break;
            }
            // Step back so a needle across two chunks is still seen.
            at += (got - overlap.min(got - 1)) as u64;
        }
        if ok {
            scan.regions_read += 1;
        } else {
            scan.unreadable.push(line.to_owned());
        }
    }
    scan
}

fn count(chunk: &[u8], hit: impl Fn(&[u8]) -> bool) -> usize {
    (0..chunk.len()).filter(|&i| hit(&chunk[i..])).count()
}

fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut raw = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut raw)
        .unwrap();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn parent_secret_in_fork_child_not_in_exec_child() {
    require_root();
    // A secret made at run time (so not in the binary), held in the heap.
    let secret: Box<[u8]> = format!("privfork-secret-{}", random_hex(24))
        .into_bytes()
        .into_boxed_slice();
    let needles = || Needles {
        secret_inverted: secret.iter().map(|b| !b).collect(),
        marker: format!("privfork-marker-{}", random_hex(24)).into_bytes(),
    };
    // Positive control: a forked child holds a readable copy of the heap.
    let n = needles();
    let forked: Scan = nobody().run(|| scan_self(&n)).unwrap();
    assert!(
        forked.secret_hits >= 1,
        "the scan must find the parent's secret in a forked child: {forked:?}"
    );
    assert!(forked.marker_hits >= 1, "{forked:?}");
    assert!(forked.mem_refused_while_not_dumpable, "{forked:?}");
    // Exec mode: a fresh image. The scan reads its heap (the marker, which
    // came in the request, is found) but not the secret.
    let exec: Scan = nobody().run_exec(exe(), "scan", &needles()).unwrap();
    assert!(
        exec.marker_hits >= 1,
        "the scan must read the exec child's heap: {exec:?}"
    );
    assert!(
        exec.regions_read >= 5 && exec.bytes_read > 1 << 20,
        "{exec:?}"
    );
    assert!(exec.mem_refused_while_not_dumpable, "{exec:?}");
    assert_eq!(
        exec.secret_hits, 0,
        "the exec-mode child holds the parent's secret: {exec:?}"
    );
    std::hint::black_box(&secret);
    assert_no_children();
}

fn panic_gives_its_message() {
    require_root();
    let err = nobody().run_exec::<_, u8>(exe(), "panic", &()).unwrap_err();
    match &err {
        ForkAsError::Panicked { message } => assert_eq!(message, "exec boom 7"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_no_children();
}

fn abort_gives_sigabrt() {
    require_root();
    let err = nobody().run_exec::<_, u8>(exe(), "abort", &()).unwrap_err();
    assert!(
        matches!(
            err,
            ForkAsError::Signaled {
                signal: libc::SIGABRT,
                core_dumped: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_no_children();
}

/// The address-space cap set on the call is the exec child's, soft and
/// hard, and it cannot raise it back.
fn max_memory_reaches_the_exec_child() {
    require_root();
    let cap: u64 = 256 << 20;
    let got: (Option<u64>, Option<u64>, bool) = nobody()
        .max_memory(cap)
        .run_exec(exe(), "aslimit", &())
        .unwrap();
    assert_eq!(got, (Some(cap), Some(cap), false));
    assert_no_children();
}

fn slow_function_times_out_and_is_reaped() {
    require_root();
    let start = Instant::now();
    let err = nobody()
        .timeout(Duration::from_millis(700))
        .run_exec::<_, u8>(exe(), "sleep", &60u64)
        .unwrap_err();
    assert!(matches!(err, ForkAsError::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(10), "{start:?}");
    assert_no_children();
}

fn unknown_function_and_bad_arguments_are_named() {
    require_root();
    let err = nobody()
        .run_exec::<_, u8>(exe(), "no_such_function", &())
        .unwrap_err();
    match &err {
        ForkAsError::UnknownFunction { name } => assert_eq!(name, "no_such_function"),
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
    assert!(err.to_string().contains("no_such_function"), "{err}");
    // 7 is not a bool: the function cannot decode its argument.
    let err = nobody()
        .run_exec::<_, bool>(exe(), "negate", &7u8)
        .unwrap_err();
    assert!(matches!(err, ForkAsError::BadArguments { .. }), "{err:?}");
    // A result of another type than the function's.
    let err = nobody()
        .run_exec::<_, (u8, u8)>(exe(), "negate", &true)
        .unwrap_err();
    assert!(
        matches!(err, ForkAsError::Decode(_) | ForkAsError::Protocol { .. }),
        "{err:?}"
    );
    assert_no_children();
}

fn oversized_result_is_refused() {
    require_root();
    let err = nobody()
        .max_result(1 << 20)
        .run_exec::<_, Vec<u8>>(exe(), "big", &(2usize << 20))
        .unwrap_err();
    assert!(
        matches!(err, ForkAsError::TooLarge { limit, .. } if limit == 1 << 20),
        "{err:?}"
    );
    // Just under the limit passes.
    let v: Vec<u8> = nobody()
        .max_result(1 << 20)
        .run_exec(exe(), "big", &((1usize << 20) - 16))
        .unwrap();
    assert_eq!(v.len(), (1 << 20) - 16);
    assert_no_children();
}

fn orphan_helper() {
    let _ = nobody()
        .stdio(Stdio::Inherit)
        .timeout(Duration::from_secs(120))
        .run_exec::<_, u8>(exe(), "sleep_print_pid", &120u64);
}

fn child_dies_with_its_parent() {
    require_root();
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--privfork-case", "orphan_helper"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(helper.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let grandchild = support::Watched::new(line.trim().parse().expect("grandchild pid"));
    helper.kill().unwrap();
    helper.wait().unwrap();
    // It sleeps for 120 s unless the death signal killed it.
    grandchild.assert_gone("exec-mode child of the killed parent");
}

/// Every open fd of the calling process with the target of its link,
/// except the listing's own.
fn list_fds() -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let n: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(format!("/proc/self/fd/{n}")).ok()?;
            let link = link.display().to_string();
            // The listing's own directory fd.
            (!link.ends_with("/fd")).then_some((n, link))
        })
        .collect();
    fds.sort();
    fds
}

fn no_stray_fd_in_the_child() {
    require_root();
    // Fds of the caller that must not reach the child: a file opened
    // without close-on-exec, a socketpair without it, a high dup.
    let dir = support::TempDir::new("exec-fds");
    let f = rustix::fs::open(
        dir.path().join("f"),
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::RDWR,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let (a, b) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::empty(),
        None,
    )
    .unwrap();
    let high = rustix::io::fcntl_dupfd_cloexec(&f, 900).unwrap();
    let fds: Vec<(i32, String)> = nobody().run_exec(exe(), "fds", &()).unwrap();
    let numbers: Vec<i32> = fds.iter().map(|f| f.0).collect();
    // stdio on /dev/null, the channel, and at most the child's own
    // /dev/null (opened close-on-exec by the setup).
    assert!(numbers.starts_with(&[0, 1, 2, 3]), "{fds:?}");
    for (n, link) in &fds {
        match n {
            3 => assert!(link.starts_with("socket:"), "{fds:?}"),
            _ => assert_eq!(link, "/dev/null", "fd {n}: {fds:?}"),
        }
    }
    assert!(fds.len() <= 5, "{fds:?}");
    drop((f, a, b, high));
    assert_no_children();
}

fn environment_is_empty_or_as_set() {
    require_root();
    let env: Vec<(String, String)> = nobody().run_exec(exe(), "env", &()).unwrap();
    assert!(env.is_empty(), "{env:?}");
    let env: Vec<(String, String)> = nobody()
        .env(Environment::Set(vec![("A".into(), "1".into())]))
        .run_exec(exe(), "env", &())
        .unwrap();
    assert_eq!(env, [("A".to_owned(), "1".to_owned())]);
}

fn works_from_a_multithreaded_caller() {
    require_root();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv());
    // Forking here is refused; exec mode is not.
    let err = nobody().run(|| 1u8).unwrap_err();
    assert!(matches!(err, ForkAsError::MultiThreaded { .. }), "{err:?}");
    let n: u64 = nobody().run_exec(exe(), "answer", &()).unwrap();
    assert_eq!(n, 42);
    tx.send(()).unwrap();
    t.join().unwrap().unwrap();
}

fn sandbox_on_the_call_is_refused() {
    require_root();
    let call = nobody()
        .sandbox(&Sandbox::new().promises("stdio").unwrap())
        .unwrap();
    let err = call.run_exec::<_, u64>(exe(), "answer", &()).unwrap_err();
    assert!(matches!(err, ForkAsError::ExecMode { .. }), "{err:?}");
    assert!(err.to_string().contains("register_sandboxed"), "{err}");
    assert_no_children();
}

/// A confused deputy: this process (root) starts the binary with the exec
/// role and a socket at fd 3 that another process made and handed over;
/// that process would send the request (any uid, allow_root). The child
/// checks its channel's peer: not its parent, so it refuses before reading.
fn a_channel_from_another_process_is_refused() {
    require_root();
    use privfork::ipc::fdpass::{FdRecvBuffer, recv_with_fds, send_with_fds};
    let (here, there) = privfork::ipc::socketpair().unwrap();
    // SAFETY: single-threaded case process; the child only makes a
    // socketpair, hands one end over, and waits for the parent's signal.
    let attacker = unsafe { libc::fork() };
    assert!(attacker >= 0);
    if attacker == 0 {
        let (mine, theirs) = privfork::ipc::socketpair().unwrap();
        send_with_fds(
            there.as_fd(),
            &[std::io::IoSlice::new(b"x")],
            &[theirs],
            false,
        )
        .unwrap();
        let mut b = [0u8; 1];
        let _ = rustix::io::read(&there, &mut b);
        drop(mine);
        // SAFETY: ends the child without the runner's cleanup.
        unsafe { libc::_exit(0) };
    }
    let mut buf = [0u8; 1];
    let mut cmsg = FdRecvBuffer::new(1);
    let (_, mut fds) = recv_with_fds(here.as_fd(), &mut buf, &mut cmsg, false).unwrap();
    let foreign = fds.pop().unwrap();
    let child = privfork::exe::Spawn::new(exe())
        .role(EXEC_ROLE)
        .fd(3, foreign.as_fd())
        .fd(2, std::io::stderr().as_fd())
        .spawn()
        .unwrap();
    let status = rustix::process::waitid(
        rustix::process::WaitId::PidFd(child.pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        status.exit_status(),
        Some(125),
        "the child served a foreign channel"
    );
    rustix::io::write(&here, b"x").unwrap();
    // SAFETY: our own child, reaped once.
    unsafe { libc::waitpid(attacker, std::ptr::null_mut(), 0) };
}

/// The parent listens on a unix socket and hands a client end it
/// connected (as any process that can reach the socket could) as fd 3:
/// SO_PEERCRED names the parent (it listened), but the channel must be a
/// socketpair — refused before anything is read.
fn a_connected_client_is_not_a_channel() {
    require_root();
    let dir = support::TempDir::new("client-channel");
    let path = dir.path().join("s");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let (_accepted, _) = listener.accept().unwrap();
    let child = privfork::exe::Spawn::new(exe())
        .role(EXEC_ROLE)
        .fd(3, client.as_fd())
        .fd(2, std::io::stderr().as_fd())
        .spawn()
        .unwrap();
    let status = rustix::process::waitid(
        rustix::process::WaitId::PidFd(child.pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        status.exit_status(),
        Some(125),
        "the child served a connected client"
    );
}

fn started_without_a_channel_it_runs_nothing() {
    // Anyone may start the binary with the role: without the channel fd
    // it runs nothing and exits 125.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--privfork-role", EXEC_ROLE])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no channel"), "{err}");
}

fn setuid_copy_refuses_to_serve() {
    require_root();
    // A copy of this binary made setuid root, started by nobody with the
    // exec role: it must refuse before it reads anything (AT_SECURE), or
    // any local user could run registered functions as any uid. The same
    // copy without the bit gets as far as looking for its channel.
    use std::os::unix::fs::PermissionsExt;
    let dir = support::TempDir::new("setuid");
    let copy = dir.path().join("exe");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    let run_as_nobody = |mode: u32| -> (Option<i32>, String) {
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(mode)).unwrap();
        let copy = copy.clone();
        nobody()
            // no_new_privs would keep the setuid bit from taking effect.
            .no_new_privs(false)
            .run(move || {
                let out = std::process::Command::new(&copy)
                    .args(["--privfork-role", EXEC_ROLE])
                    .output()
                    .unwrap();
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
            .unwrap()
    };
    let (code, err) = run_as_nobody(0o4755);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("AT_SECURE"), "{err}");
    let (code, err) = run_as_nobody(0o755);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("no channel"), "{err}");
}
