//! Fork-as, end to end. Runs as root; each case in a fresh single-threaded
//! process (see `support`).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use privfork::fork_as::Environment;
use privfork::privdrop::PrivDropError;
use privfork::{DropOptions, ForkAs, ForkAsError, Identity, ResolveError, fork_as};
use serde::{Deserialize, Serialize};
use support::{assert_no_children, fd_count, require_root, status_field};

fn main() {
    support::main(
        &[
            ("round_trip_of_several_types", round_trip_of_several_types),
            (
                "max_memory_caps_the_child_alone",
                max_memory_caps_the_child_alone,
            ),
            (
                "child_ids_groups_caps_are_as_asked",
                child_ids_groups_caps_are_as_asked,
            ),
            (
                "numeric_uid_and_explicit_groups",
                numeric_uid_and_explicit_groups,
            ),
            ("child_cannot_regain_root", child_cannot_regain_root),
            ("panic_gives_its_message", panic_gives_its_message),
            (
                "abort_and_sigkill_give_signal_errors",
                abort_and_sigkill_give_signal_errors,
            ),
            ("exit_without_result", exit_without_result),
            (
                "slow_function_times_out_and_is_reaped",
                slow_function_times_out_and_is_reaped,
            ),
            ("oversized_result_is_refused", oversized_result_is_refused),
            (
                "hostile_length_is_refused_before_allocation",
                hostile_length_is_refused_before_allocation,
            ),
            (
                "garbage_payload_is_a_decode_error",
                garbage_payload_is_a_decode_error,
            ),
            (
                "unknown_frame_tag_is_a_protocol_error",
                unknown_frame_tag_is_a_protocol_error,
            ),
            ("unknown_user_is_named", unknown_user_is_named),
            (
                "child_reaches_no_fd_of_the_parent",
                child_reaches_no_fd_of_the_parent,
            ),
            (
                "captured_files_stay_safe_to_use_and_drop",
                captured_files_stay_safe_to_use_and_drop,
            ),
            (
                "environment_is_cleared_or_set",
                environment_is_cleared_or_set,
            ),
            (
                "thousand_calls_leave_no_zombie_and_flat_fds",
                thousand_calls_leave_no_zombie_and_flat_fds,
            ),
            (
                "multithreaded_caller_is_refused",
                multithreaded_caller_is_refused,
            ),
            (
                "root_target_is_refused_by_default",
                root_target_is_refused_by_default,
            ),
            (
                "unprivileged_caller_gets_missing_privilege",
                unprivileged_caller_gets_missing_privilege,
            ),
            ("child_dies_with_its_parent", child_dies_with_its_parent),
            (
                "grandchild_does_not_stall_the_call",
                grandchild_does_not_stall_the_call,
            ),
            (
                "reaping_sigchld_handler_is_harmless",
                reaping_sigchld_handler_is_harmless,
            ),
            ("ignored_sigchld_is_refused", ignored_sigchld_is_refused),
            (
                "oversized_report_is_a_protocol_error",
                oversized_report_is_a_protocol_error,
            ),
            (
                "trailing_bytes_are_a_protocol_error",
                trailing_bytes_are_a_protocol_error,
            ),
            (
                "unbounded_limits_do_not_trust_the_header",
                unbounded_limits_do_not_trust_the_header,
            ),
        ],
        &[("orphan_helper", orphan_helper)],
    )
}

fn nobody() -> ForkAs {
    ForkAs::user("nobody")
        .expect("nobody exists")
        .timeout(Duration::from_secs(20))
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Shape {
    Circle { r: f64 },
    Named(String),
    Unit,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Report {
    id: u64,
    tags: Vec<String>,
    shapes: Vec<Shape>,
    maybe: Option<i32>,
    map: BTreeMap<String, u16>,
}

fn round_trip_of_several_types() {
    require_root();
    let call = nobody();
    assert_eq!(call.run(|| 42u64).unwrap(), 42);
    assert_eq!(call.run(|| -7i8).unwrap(), -7);
    call.run(|| ()).unwrap();
    assert_eq!(call.run(|| "héllo".to_string()).unwrap(), "héllo");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let expect = big.clone();
    assert_eq!(call.run(move || big).unwrap(), expect);
    let r: Result<u32, String> = call.run(|| Err("no".to_string())).unwrap();
    assert_eq!(r, Err("no".into()));
    let make = || Report {
        id: 9,
        tags: vec!["a".into(), "b".into()],
        shapes: vec![
            Shape::Circle { r: 1.5 },
            Shape::Named("sq".into()),
            Shape::Unit,
        ],
        maybe: None,
        map: [("k".to_string(), 3u16)].into(),
    };
    assert_eq!(call.run(make).unwrap(), make());
    // The closure's captures come along (copy-on-write memory).
    let captured: Vec<i32> = (1..=3).collect();
    assert_eq!(call.run(|| captured.iter().sum::<i32>()).unwrap(), 6);
    assert_no_children();
}

#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    uid: String,
    gid: String,
    groups: String,
    cap_inh: String,
    cap_prm: String,
    cap_eff: String,
    cap_amb: String,
    dumpable: bool,
    pdeathsig: Option<i32>,
}

fn seen() -> Seen {
    Seen {
        uid: status_field("Uid"),
        gid: status_field("Gid"),
        groups: status_field("Groups"),
        cap_inh: status_field("CapInh"),
        cap_prm: status_field("CapPrm"),
        cap_eff: status_field("CapEff"),
        cap_amb: status_field("CapAmb"),
        dumpable: rustix::process::dumpable_behavior().unwrap()
            != rustix::process::DumpableBehavior::NotDumpable,
        pdeathsig: rustix::process::parent_process_death_signal()
            .unwrap()
            .map(|s| s.as_raw()),
    }
}

fn child_ids_groups_caps_are_as_asked() {
    require_root();
    let id = Identity::user("nobody").unwrap();
    let (uid, gid) = (id.uid(), id.gid());
    let s = ForkAs::new(id).run(seen).unwrap();
    let ids = |n: u32| format!("{n}\t{n}\t{n}\t{n}"); // real, effective, saved, fs
    assert_eq!(s.uid, ids(uid));
    assert_eq!(s.gid, ids(gid));
    assert_eq!(s.groups, gid.to_string(), "only nobody's own group is left");
    for (name, set) in [
        ("CapInh", &s.cap_inh),
        ("CapPrm", &s.cap_prm),
        ("CapEff", &s.cap_eff),
        ("CapAmb", &s.cap_amb),
    ] {
        assert_eq!(set, "0000000000000000", "{name} not empty");
    }
    assert!(!s.dumpable, "child must not be dumpable");
    assert_eq!(
        s.pdeathsig,
        Some(libc::SIGKILL),
        "death signal set after the drop"
    );
}

fn numeric_uid_and_explicit_groups() {
    require_root();
    let id = Identity::user("4000123")
        .unwrap()
        .with_groups([4000124, 4000125])
        .unwrap();
    let s = ForkAs::new(id).run(seen).unwrap();
    assert_eq!(s.uid, "4000123\t4000123\t4000123\t4000123");
    assert_eq!(s.gid, "4000123\t4000123\t4000123\t4000123");
    assert_eq!(s.groups, "4000123 4000124 4000125");
    let id = Identity::from_ids(4000200, 4000201).unwrap();
    let s = ForkAs::new(id).run(seen).unwrap();
    assert_eq!(s.uid, "4000200\t4000200\t4000200\t4000200");
    assert_eq!(s.gid, "4000201\t4000201\t4000201\t4000201");
    assert_eq!(s.groups, "4000201");
}

fn child_cannot_regain_root() {
    require_root();
    // A file only root may read or write, in a directory anyone may enter.
    let dir = support::TempDir::new("regain");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "root only").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = secret.clone();
    let results: Vec<(String, Option<i32>)> = nobody()
        .run(move || {
            use rustix::process::{Gid, Uid};
            let errno = |r: rustix::io::Result<()>| r.err().map(|e| e.raw_os_error());
            let ioerr = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error());
            vec![
                (
                    "setuid(0)".into(),
                    errno(rustix::thread::set_thread_uid(Uid::ROOT)),
                ),
                (
                    "setresuid(0,0,0)".into(),
                    errno(rustix::thread::set_thread_res_uid(
                        Uid::ROOT,
                        Uid::ROOT,
                        Uid::ROOT,
                    )),
                ),
                (
                    "setgid(0)".into(),
                    errno(rustix::thread::set_thread_gid(Gid::ROOT)),
                ),
                (
                    "setgroups([0])".into(),
                    errno(rustix::thread::set_thread_groups(&[Gid::ROOT])),
                ),
                (
                    "read root-only file".into(),
                    ioerr(std::fs::read(&path).map(drop)),
                ),
                (
                    "write root-only file".into(),
                    ioerr(std::fs::write(&path, "x")),
                ),
                (
                    "chmod root-only file to same mode".into(),
                    ioerr(std::fs::set_permissions(
                        &path,
                        std::fs::Permissions::from_mode(0o600),
                    )),
                ),
            ]
        })
        .unwrap();
    for (what, errno) in &results {
        assert!(
            matches!(errno, Some(libc::EPERM) | Some(libc::EACCES)),
            "{what} was not refused: {errno:?}"
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only");
}

fn panic_gives_its_message() {
    require_root();
    let err = nobody()
        .run(|| -> u8 { panic!("boom at step {}", 42) })
        .unwrap_err();
    match &err {
        ForkAsError::Panicked { message } => assert_eq!(message, "boom at step 42"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert!(err.to_string().contains("boom at step 42"), "{err}");
    assert_no_children();
}

/// A child over its address-space cap dies alone (the allocation fails,
/// Rust aborts); the cap is the child's only, and a call within it runs.
fn max_memory_caps_the_child_alone() {
    require_root();
    let cap: u64 = 256 << 20;
    // Within the cap: its own limit is what was asked, soft and hard.
    let (soft, hard, raised) = nobody()
        .max_memory(cap)
        .run(|| {
            let l = rustix::process::getrlimit(rustix::process::Resource::As);
            // Raising it back must fail: the hard limit was lowered before
            // the drop.
            let raised = rustix::process::setrlimit(
                rustix::process::Resource::As,
                rustix::process::Rlimit {
                    current: None,
                    maximum: None,
                },
            );
            (l.current, l.maximum, raised.is_ok())
        })
        .unwrap();
    assert_eq!((soft, hard, raised), (Some(cap), Some(cap), false));
    // Over it: 1 GiB of address space (zeroed pages: without the cap it
    // would cost no real memory).
    let err = nobody()
        .max_memory(cap)
        .run(|| std::hint::black_box(vec![0u8; 1 << 30]).len())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ForkAsError::Signaled {
                signal: libc::SIGABRT,
                ..
            }
        ),
        "{err:?}"
    );
    assert_no_children();
}

fn abort_and_sigkill_give_signal_errors() {
    require_root();
    let err = nobody()
        .run(|| -> u8 { std::process::abort() })
        .unwrap_err();
    assert!(
        matches!(
            err,
            ForkAsError::Signaled {
                signal: libc::SIGABRT,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("SIGABRT"), "{err}");
    let err = nobody()
        .run(|| -> u8 {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            unreachable!()
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            ForkAsError::Signaled {
                signal: libc::SIGKILL,
                ..
            }
        ),
        "{err:?}"
    );
    assert_no_children();
}

fn exit_without_result() {
    require_root();
    let err = nobody()
        .run(|| -> u8 { std::process::exit(7) })
        .unwrap_err();
    assert!(
        matches!(err, ForkAsError::NoResult { exit_code: 7 }),
        "{err:?}"
    );
    assert_no_children();
}

fn slow_function_times_out_and_is_reaped() {
    require_root();
    let start = Instant::now();
    let err = nobody()
        .timeout(Duration::from_millis(300))
        .run(|| {
            std::thread::sleep(Duration::from_secs(60));
            1u8
        })
        .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, ForkAsError::Timeout { .. }), "{err:?}");
    // Not a speed check: proves the call returned on the deadline instead of
    // waiting out the 60 s function.
    assert!(took < Duration::from_secs(30), "returned after {took:?}");
    assert_no_children();
    // A function that closes its pipe and lingers is also killed at the
    // deadline, not waited for.
    let err = nobody()
        .timeout(Duration::from_millis(300))
        .run(|| {
            for fd in 3..64 {
                let _ = rustix::io::fcntl_getfd(borrow(fd)).map(|_| close(fd));
            }
            std::thread::sleep(Duration::from_secs(60));
            1u8
        })
        .unwrap_err();
    assert!(matches!(err, ForkAsError::Timeout { .. }), "{err:?}");
    assert_no_children();
}

fn oversized_result_is_refused() {
    require_root();
    let err = nobody()
        .max_result(1 << 20)
        .run(|| vec![7u8; 10 << 20])
        .unwrap_err();
    match err {
        ForkAsError::TooLarge { len, limit } => {
            assert!(len >= 10 << 20, "len {len}");
            assert_eq!(limit, 1 << 20);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_no_children();
}

fn is_fifo(fd: i32) -> bool {
    let st = rustix::fs::fstat(borrow(fd)).unwrap();
    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo
}

/// The child's end of the result pipe: the one FIFO among its fds (every
/// other fd of the parent now reaches /dev/null).
fn pipe_fd() -> i32 {
    let fifos: Vec<i32> = open_fds().into_iter().filter(|&fd| is_fifo(fd)).collect();
    assert_eq!(fifos.len(), 1, "expected only the pipe, found {fifos:?}");
    fifos[0]
}

fn raw_write(fd: i32, bytes: &[u8]) {
    rustix::io::write(borrow(fd), bytes).unwrap();
}

fn hostile_length_is_refused_before_allocation() {
    require_root();
    // A taken-over child claims a 1 TiB result and then stalls: the parent
    // must refuse on the header alone, kill the child and reap it.
    let err = nobody()
        .timeout(Duration::from_secs(20))
        .run(|| -> u8 {
            let mut h = [0u8; 9];
            h[1..].copy_from_slice(&(1u64 << 40).to_le_bytes());
            raw_write(pipe_fd(), &h);
            std::thread::sleep(Duration::from_secs(60));
            0
        })
        .unwrap_err();
    assert!(
        matches!(err, ForkAsError::TooLarge { len, .. } if len == 1 << 40),
        "{err:?}"
    );
    assert_no_children();
}

fn garbage_payload_is_a_decode_error() {
    require_root();
    let err = nobody()
        .run(|| -> String {
            // A well-formed frame whose payload is not a postcard String:
            // the varint length runs past the end.
            let payload = [0xffu8, 0xff, 0xff, 0x0f, b'x'];
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            frame.extend_from_slice(&payload);
            raw_write(pipe_fd(), &frame);
            std::process::exit(0)
        })
        .unwrap_err();
    assert!(matches!(err, ForkAsError::Decode(_)), "{err:?}");
    assert_no_children();
}

fn unknown_frame_tag_is_a_protocol_error() {
    require_root();
    let err = nobody()
        .run(|| -> u8 {
            let mut frame = vec![200u8];
            frame.extend_from_slice(&0u64.to_le_bytes());
            raw_write(pipe_fd(), &frame);
            std::process::exit(0)
        })
        .unwrap_err();
    assert!(matches!(err, ForkAsError::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("200"), "{err}");
    // A header cut short, then exit: also a protocol error, not a result.
    let err = nobody()
        .run(|| -> u8 {
            raw_write(pipe_fd(), &[0u8, 1, 0]);
            std::process::exit(0)
        })
        .unwrap_err();
    assert!(matches!(err, ForkAsError::Protocol { .. }), "{err:?}");
    assert_no_children();
}

fn unknown_user_is_named() {
    let err = fork_as("no-such-user-pf", || 1u8).unwrap_err();
    assert!(
        matches!(&err, ForkAsError::Resolve(ResolveError::UnknownUser { name }) if name == "no-such-user-pf"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-user-pf"), "{err}");
    let err = ForkAs::user("no-such-user-pf").unwrap_err();
    assert!(err.to_string().contains("no-such-user-pf"), "{err}");
    let err = Identity::user("nobody")
        .unwrap()
        .with_group("no-such-group-pf")
        .unwrap_err();
    assert!(err.to_string().contains("no-such-group-pf"), "{err}");
    assert_no_children();
}

fn borrow(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: only used on fds that are open for the rest of the (short)
    // function that probes them; a closed fd makes the syscall fail with
    // EBADF, which is what the probe looks for.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

fn close(fd: i32) {
    // SAFETY: the test owns the fd it closes (the child's own pipe end).
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
}

/// Open fds, found with fcntl(F_GETFD) (a non-dumpable process cannot list
/// its own /proc/self/fd).
fn open_fds() -> Vec<i32> {
    (0..4096)
        .filter(|&fd| rustix::io::fcntl_getfd(borrow(fd)).is_ok())
        .collect()
}

/// (st_dev, st_ino, st_rdev) of an fd.
fn file_id(fd: impl AsFd) -> (u64, u64, u64) {
    let st = rustix::fs::fstat(fd).unwrap();
    (st.st_dev, st.st_ino, st.st_rdev)
}

fn child_reaches_no_fd_of_the_parent() {
    require_root();
    // Parent fds the child must not reach: a file opened without CLOEXEC, a
    // socketpair, a dup at a high number, and its stdio.
    let dir = support::TempDir::new("fds");
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
    assert!(high.as_raw_fd() >= 900);
    let null = file_id(std::fs::File::open("/dev/null").unwrap());
    let parent_stdout = file_id(std::io::stdout());
    let seen: Vec<(i32, (u64, u64, u64), bool)> = nobody()
        .run(|| {
            open_fds()
                .into_iter()
                .map(|fd| (fd, file_id(borrow(fd)), is_fifo(fd)))
                .collect()
        })
        .unwrap();
    let pipes: Vec<_> = seen.iter().filter(|s| s.2).collect();
    assert_eq!(pipes.len(), 1, "exactly one pipe expected in {seen:?}");
    for (fd, id, fifo) in &seen {
        assert!(
            *fifo || *id == null,
            "fd {fd} of the child reaches {id:?}, not /dev/null"
        );
    }
    for n in [0, 1, 2, f.as_raw_fd(), a.as_raw_fd(), b.as_raw_fd(), 900] {
        assert!(
            seen.iter().any(|s| s.0 == n && s.1 == null),
            "fd {n} not on /dev/null: {seen:?}"
        );
    }
    // With inherited stdio, 0–2 are the parent's.
    let out: (u64, u64, u64) = nobody()
        .stdio(privfork::fork_as::Stdio::Inherit)
        .run(|| file_id(borrow(1)))
        .unwrap();
    assert_eq!(out, parent_stdout);
    drop((f, a, b, high));
}

fn captured_files_stay_safe_to_use_and_drop() {
    require_root();
    // The function owns a File of the parent. In the child its fd reaches
    // /dev/null instead of being closed, so a file the function opens gets
    // another number, and dropping the captured File closes only itself.
    let dir = support::TempDir::new("iosafe");
    std::fs::write(dir.path().join("secret"), "parent data").unwrap();
    let captured = std::fs::File::open(dir.path().join("secret")).unwrap();
    let captured_fd = captured.as_raw_fd();
    let (read_back, new_fd, still_open): (String, i32, bool) = nobody()
        .run(move || {
            use std::io::Read;
            let mut captured = captured;
            let mut got = String::new();
            let _ = captured.read_to_string(&mut got); // /dev/null: nothing
            let mine = std::fs::File::open("/dev/zero").unwrap();
            let new_fd = mine.as_raw_fd();
            drop(captured);
            let still_open = rustix::io::fcntl_getfd(&mine).is_ok();
            (got, new_fd, still_open)
        })
        .unwrap();
    assert_eq!(read_back, "", "the child read the parent's file");
    assert_ne!(new_fd, captured_fd, "the captured fd number was reused");
    assert!(still_open);
}

fn environment_is_cleared_or_set() {
    require_root();
    // SAFETY: this case process is single-threaded.
    unsafe { std::env::set_var("PRIVFORK_SECRET", "hunter2") };
    let vars: Vec<(String, String)> = nobody().run(|| std::env::vars().collect()).unwrap();
    assert!(vars.is_empty(), "environment not cleared: {vars:?}");
    let vars: Vec<(String, String)> = nobody()
        .env(Environment::Set(vec![("LANG".into(), "C".into())]))
        .run(|| std::env::vars().collect())
        .unwrap();
    assert_eq!(vars, vec![("LANG".to_string(), "C".to_string())]);
    let secret: Option<String> = nobody()
        .env(Environment::Inherit)
        .run(|| std::env::var("PRIVFORK_SECRET").ok())
        .unwrap();
    assert_eq!(secret.as_deref(), Some("hunter2"));
}

fn thousand_calls_leave_no_zombie_and_flat_fds() {
    require_root();
    let call = nobody();
    // One call first, so lazily opened fds (if any) exist before counting.
    call.run(|| 0u64).unwrap();
    let before = fd_count();
    for i in 0..1000u64 {
        assert_eq!(call.run(move || i * 2).unwrap(), i * 2);
    }
    assert_eq!(fd_count(), before, "fd count changed over 1000 calls");
    assert_no_children();
}

fn multithreaded_caller_is_refused() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv());
    let err = fork_as("nobody", || 1u8).unwrap_err();
    assert!(
        matches!(err, ForkAsError::MultiThreaded { threads: 2 }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("2 threads") && msg.contains("fork server"),
        "{msg}"
    );
    tx.send(()).unwrap();
    t.join().unwrap().unwrap();
    assert_no_children();
}

fn root_target_is_refused_by_default() {
    require_root();
    let err = ForkAs::user("root").unwrap().run(|| 1u8).unwrap_err();
    assert!(
        matches!(
            err,
            ForkAsError::PrivDrop(PrivDropError::RootRefused { .. })
        ),
        "{err:?}"
    );
    // Explicitly allowed, it runs as root with only root's group.
    let groups = ForkAs::user("root")
        .unwrap()
        .drop_options(DropOptions::new().allow_root(true))
        .run(|| status_field("Groups"))
        .unwrap();
    assert_eq!(groups, "0");
    assert_no_children();
}

fn unprivileged_caller_gets_missing_privilege() {
    require_root();
    // As nobody, a nested fork-as (the child is single-threaded) to another
    // user must fail in the privilege check, naming what is missing.
    let inner = ForkAs::user("daemon").unwrap();
    let msg: String = nobody()
        .run(move || match inner.run(|| 1u8) {
            Err(ForkAsError::PrivDrop(e @ PrivDropError::MissingPrivilege { .. })) => e.to_string(),
            other => format!("unexpected: {other:?}"),
        })
        .unwrap();
    assert!(
        msg.contains("CAP_SETUID") && msg.contains("CAP_SETGID"),
        "{msg}"
    );
    assert!(msg.contains("daemon"), "{msg}");
    assert_no_children();
}

/// Helper for `child_dies_with_its_parent`: fork-as a child that prints its
/// pid and sleeps; this process is then killed by the test.
fn orphan_helper() {
    let _ = nobody()
        .stdio(privfork::fork_as::Stdio::Inherit)
        .timeout(Duration::from_secs(120))
        .run(|| {
            println!("{}", rustix::process::getpid().as_raw_nonzero());
            std::thread::sleep(Duration::from_secs(120));
            0u8
        });
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
    grandchild.assert_gone("fork-as child of the killed parent");
}

fn grandchild_does_not_stall_the_call() {
    require_root();
    // The function forks a grandchild that keeps the result pipe open and
    // then exits without a result: the call must report that at once, not
    // wait for the grandchild or the deadline.
    let err = nobody()
        .timeout(Duration::from_secs(60))
        .run(|| -> u8 {
            // SAFETY: the fork-as child is single-threaded; the grandchild
            // only sleeps and _exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                std::thread::sleep(Duration::from_secs(3));
                // SAFETY: ends the grandchild without running any cleanup.
                unsafe { libc::_exit(0) };
            }
            std::process::exit(3)
        })
        .unwrap_err();
    assert!(
        matches!(err, ForkAsError::NoResult { exit_code: 3 }),
        "{err:?}"
    );
    assert_no_children();
}

extern "C" fn reap_all(_: libc::c_int) {
    // SAFETY: waitpid is async-signal-safe; a null status pointer is allowed.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

fn set_sigchld(handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction with a handler (or SIG_IGN/SIG_DFL) and an
    // empty mask is valid; this case process is single-threaded.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut()), 0);
    }
}

fn reaping_sigchld_handler_is_harmless() {
    require_root();
    // A program whose SIGCHLD handler reaps every child (a common pattern)
    // must not lose fork-as results to it.
    set_sigchld(reap_all as *const () as libc::sighandler_t);
    for i in 0..50u64 {
        assert_eq!(nobody().run(move || i + 1).unwrap(), i + 1);
    }
    set_sigchld(libc::SIG_DFL);
    assert_no_children();
}

fn ignored_sigchld_is_refused() {
    require_root();
    set_sigchld(libc::SIG_IGN);
    let err = nobody().run(|| 1u8).unwrap_err();
    let msg = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(msg.contains("SIGCHLD"), "{msg}");
    set_sigchld(libc::SIG_DFL);
}

fn raw_frame(tag: u8, len: u64, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![tag];
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn oversized_report_is_a_protocol_error() {
    require_root();
    // A panic report announcing more than the 64 KiB allowed for reports.
    let err = nobody()
        .run(|| -> u8 {
            raw_write(pipe_fd(), &raw_frame(1, 100_000, b""));
            std::thread::sleep(Duration::from_secs(60));
            0
        })
        .unwrap_err();
    assert!(matches!(err, ForkAsError::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("report"), "{err}");
    assert_no_children();
}

fn trailing_bytes_are_a_protocol_error() {
    require_root();
    let err = nobody()
        .run(|| -> u8 {
            // postcard u8 7, then two stray bytes.
            raw_write(pipe_fd(), &raw_frame(0, 3, &[7, 1, 2]));
            std::process::exit(0)
        })
        .unwrap_err();
    assert!(matches!(err, ForkAsError::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("left over"), "{err}");
}

fn unbounded_limits_do_not_trust_the_header() {
    require_root();
    // No size limit and no deadline to speak of: a child claiming 2^62
    // bytes must not make the parent allocate them (the buffer grows with
    // what arrives); it stalls, so the (short) deadline ends it.
    let err = nobody()
        .max_result(usize::MAX)
        .timeout(Duration::from_millis(500))
        .run(|| -> u8 {
            raw_write(pipe_fd(), &raw_frame(0, 1 << 62, &[0; 100]));
            std::thread::sleep(Duration::from_secs(60));
            0
        })
        .unwrap_err();
    assert!(matches!(err, ForkAsError::Timeout { .. }), "{err:?}");
    // A timeout past the clock's range is "no deadline", not a panic.
    assert_eq!(nobody().timeout(Duration::MAX).run(|| 5u8).unwrap(), 5);
    assert_no_children();
}
