//! Spawn by exec of the pinned binary, and adopting inherited fds. The
//! test binary is itself the pinned exe: a case spawns its own binary with
//! a helper's name in argv (see `support`). Each helper reports on an fd
//! it inherits, or through its exit status.

mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use privfork::exe::{Exe, Spawn, SpawnError, SpawnStep, Spawned};
use privfork::inherit::{FdKind, InheritError, take_inherited_fd};
use support::{TempDir, assert_no_children, fd_count, status_field};

/// Captures the inherited fds before a helper takes them (not first thing
/// in main: some helpers first report the flags their fds arrived with,
/// which capturing changes).
fn captured() {
    // SAFETY: the helpers create no fd without close-on-exec before this
    // (std makes every fd close-on-exec), so what is open without the flag
    // came through exec.
    unsafe { privfork::inherit::capture() };
}

fn main() {
    support::main(
        &[
            (
                "fds_arrive_at_their_numbers_and_no_other",
                fds_arrive_at_their_numbers_and_no_other,
            ),
            (
                "colliding_sources_are_swapped",
                colliding_sources_are_swapped,
            ),
            (
                "signal_mask_and_dispositions_are_reset",
                signal_mask_and_dispositions_are_reset,
            ),
            (
                "failures_in_the_child_name_step_and_errno",
                failures_in_the_child_name_step_and_errno,
            ),
            ("bad_fd_targets_start_nothing", bad_fd_targets_start_nothing),
            (
                "spawn_from_a_multithreaded_process",
                spawn_from_a_multithreaded_process,
            ),
            (
                "pinned_file_runs_after_replace_and_delete",
                pinned_file_runs_after_replace_and_delete,
            ),
            (
                "current_exe_pinned_in_a_copy_survives_replace",
                current_exe_pinned_in_a_copy_survives_replace,
            ),
            (
                "take_inherited_fd_checks_kind_openness_and_once",
                take_inherited_fd_checks_kind_openness_and_once,
            ),
            (
                "take_inherited_fd_refuses_fds_made_here",
                take_inherited_fd_refuses_fds_made_here,
            ),
            (
                "many_spawns_leave_no_zombie_and_flat_fds",
                many_spawns_leave_no_zombie_and_flat_fds,
            ),
        ],
        &[
            ("report_fds", report_fds),
            ("swap_middle", swap_middle),
            ("swap_leaf", swap_leaf),
            ("report_signals", report_signals),
            ("exit_zero", exit_zero),
            ("report_exe", report_exe),
            ("pin_then_spawn", pin_then_spawn),
            ("take_checks", take_checks),
        ],
    );
}

const CASE: &str = "--privfork-case";
const WAIT: Duration = Duration::from_secs(30);

fn exe() -> &'static Exe {
    Exe::current().expect("pin /proc/self/exe")
}

/// Waits (bounded) for a spawned child and returns its exit code; kills
/// it and fails the test if it does not end in time or dies by a signal.
fn wait_exit(child: Spawned) -> i32 {
    let mut fds = [rustix::event::PollFd::new(
        &child.pidfd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::event::Timespec {
        tv_sec: WAIT.as_secs() as i64,
        tv_nsec: 0,
    };
    let n = rustix::event::poll(&mut fds, Some(&ts)).unwrap();
    if n == 0 {
        let _ = rustix::process::pidfd_send_signal(&child.pidfd, rustix::process::Signal::KILL);
    }
    let status = rustix::process::waitid(
        rustix::process::WaitId::PidFd(child.pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED,
    )
    .unwrap()
    .expect("an exited child");
    assert!(
        n > 0,
        "spawned child {:?} did not end within {WAIT:?}",
        child.pid
    );
    status
        .exit_status()
        .unwrap_or_else(|| panic!("child {:?} ended by a signal: {status:?}", child.pid))
}

/// A connected pair: ours (reads with a time limit) and the child's.
fn report_pair() -> (UnixStream, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(WAIT)).unwrap();
    (ours, theirs)
}

fn read_report(mut ours: UnixStream) -> String {
    let mut s = String::new();
    ours.read_to_string(&mut s).expect("report from the child");
    s
}

/// In a helper: takes the report socket at `n` and writes `text` to it.
fn send_report(n: i32, text: &str) {
    captured();
    let mut s = UnixStream::from(take_inherited_fd(n, FdKind::UnixStream).unwrap());
    s.write_all(text.as_bytes()).unwrap();
}

/// In a helper: every open fd with its close-on-exec flag (from
/// /proc/self/fdinfo) and its target, except the listing's own fd.
fn list_fds() -> BTreeMap<i32, (bool, String)> {
    let dir = rustix::fs::open(
        "/proc/self/fd",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    let mut entries = rustix::fs::RawDir::new(&dir, &mut buf);
    let mut fds = BTreeMap::new();
    while let Some(e) = entries.next() {
        let Ok(n) = e.unwrap().file_name().to_str().unwrap().parse::<i32>() else {
            continue;
        };
        if n == dir.as_raw_fd() {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{n}"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        fds.insert(n, (flags & libc::O_CLOEXEC as u32 != 0, link));
    }
    fds
}

fn format_fds(fds: &BTreeMap<i32, (bool, String)>) -> String {
    fds.iter()
        .map(|(n, (cloexec, link))| format!("fd {n} cloexec={cloexec} {link}\n"))
        .collect()
}

/// Parses `format_fds` output back: number -> cloexec.
fn parse_fds(report: &str) -> BTreeMap<i32, bool> {
    report
        .lines()
        .filter_map(|l| l.strip_prefix("fd "))
        .map(|l| {
            let mut w = l.split(' ');
            let n = w.next().unwrap().parse().unwrap();
            let cloexec = w.next().unwrap() == "cloexec=true";
            (n, cloexec)
        })
        .collect()
}

// ---- helpers (run in spawned processes) ----

fn report_fds() {
    let fds = list_fds();
    let args: Vec<String> = std::env::args().collect();
    let mut r = format_fds(&fds);
    r += &format!("role {:?}\n", privfork::exe::role());
    r += &format!("argv {args:?}\n");
    r += &format!(
        "env {} {:?}\n",
        std::env::vars_os().count(),
        std::env::var("PRIVFORK_SPAWN_TEST").ok()
    );
    send_report(3, &r);
}

fn swap_middle() {
    captured();
    // Here 3 and 4 are the two files and 5 the report socket, as placed by
    // the case; the leaf gets them crossed, and 5 at 5.
    let three = take_inherited_fd(3, FdKind::File).unwrap();
    let four = take_inherited_fd(4, FdKind::File).unwrap();
    let report = take_inherited_fd(5, FdKind::UnixStream).unwrap();
    let leaf = Spawn::new(exe())
        .args([CASE, "swap_leaf"])
        .fd(4, three.as_fd())
        .fd(3, four.as_fd())
        .fd(5, report.as_fd())
        .spawn()
        .unwrap();
    std::process::exit(wait_exit(leaf));
}

fn swap_leaf() {
    // The flags the fds arrived with, before capturing changes them.
    let fds = list_fds();
    captured();
    let read = |n| {
        let mut s = String::new();
        File::from(take_inherited_fd(n, FdKind::File).unwrap())
            .read_to_string(&mut s)
            .unwrap();
        s
    };
    let r = format!("3={}\n4={}\n{}", read(3), read(4), format_fds(&fds));
    send_report(5, &r);
}

fn report_signals() {
    let r = ["SigBlk", "SigIgn", "SigCgt"]
        .map(|f| format!("{f} {}\n", status_field(f)))
        .concat();
    send_report(3, &r);
}

fn exit_zero() {}

fn report_exe() {
    let link = std::fs::read_link("/proc/self/exe").unwrap();
    send_report(3, &format!("{}\n", link.display()));
}

fn pin_then_spawn() {
    captured();
    let pinned = exe();
    let mut ctl = UnixStream::from(take_inherited_fd(3, FdKind::UnixStream).unwrap());
    ctl.set_read_timeout(Some(WAIT)).unwrap();
    ctl.write_all(b"pinned\n").unwrap();
    let mut go = [0u8; 3];
    ctl.read_exact(&mut go).unwrap();
    assert_eq!(&go, b"go\n");
    let child = Spawn::new(pinned)
        .args([CASE, "report_exe"])
        .fd(3, ctl.as_fd())
        .spawn()
        .unwrap();
    drop(ctl);
    std::process::exit(wait_exit(child));
}

fn take_checks() {
    captured();
    let not_open = take_inherited_fd(9, FdKind::Any).unwrap_err();
    assert!(
        matches!(not_open, InheritError::NotOpen { fd: 9 }),
        "{not_open}"
    );
    let stdio = take_inherited_fd(1, FdKind::Any).unwrap_err();
    assert!(matches!(stdio, InheritError::Stdio { fd: 1 }), "{stdio}");

    // 3: the read end of a pipe.
    let wrong = take_inherited_fd(3, FdKind::UnixStream).unwrap_err();
    assert!(
        matches!(
            wrong,
            InheritError::WrongKind {
                fd: 3,
                expected: FdKind::UnixStream,
                ..
            }
        ),
        "{wrong}"
    );
    let pipe = take_inherited_fd(3, FdKind::Pipe).expect("the pipe, after a wrong-kind try");
    let flags = rustix::io::fcntl_getfd(&pipe).unwrap();
    assert!(
        flags.contains(rustix::io::FdFlags::CLOEXEC),
        "taken fd must be close-on-exec"
    );
    let twice = take_inherited_fd(3, FdKind::Pipe).unwrap_err();
    assert!(
        matches!(twice, InheritError::AlreadyTaken { fd: 3 }),
        "{twice}"
    );
    let mut text = String::new();
    // Kept open to the end: a number closed here could be reused by the
    // File below, and would then count as already taken.
    let mut pipe = File::from(pipe);
    pipe.read_to_string(&mut text).unwrap();
    assert_eq!(text, "through the pipe");

    // 4: a unix stream socket.
    for kind in [
        FdKind::UnixSeqpacket,
        FdKind::UnixListener,
        FdKind::TcpStream,
        FdKind::File,
    ] {
        let e = take_inherited_fd(4, kind).unwrap_err();
        assert!(
            matches!(e, InheritError::WrongKind { fd: 4, .. }),
            "{kind:?}: {e}"
        );
    }
    let stream = take_inherited_fd(4, FdKind::UnixStream).unwrap();

    // 5: a listening TCP socket.
    let e = take_inherited_fd(5, FdKind::TcpStream).unwrap_err();
    assert!(matches!(e, InheritError::WrongKind { fd: 5, .. }), "{e}");
    let listener = TcpListener::from(take_inherited_fd(5, FdKind::TcpListener).unwrap());
    let addr = listener.local_addr().unwrap();

    // 6: a unix datagram socket; Any takes it too.
    let e = take_inherited_fd(6, FdKind::UnixStream).unwrap_err();
    assert!(matches!(e, InheritError::WrongKind { fd: 6, .. }), "{e}");
    let _dgram = take_inherited_fd(6, FdKind::Any).unwrap();

    // An fd this process made (close-on-exec, as Rust makes every fd).
    let mine = File::open("/dev/null").unwrap();
    let e = take_inherited_fd(mine.as_raw_fd(), FdKind::Any).unwrap_err();
    assert!(matches!(e, InheritError::NotInherited { .. }), "{e}");

    UnixStream::from(stream)
        .write_all(format!("ok {}", addr.port()).as_bytes())
        .unwrap();
}

// ---- cases ----

fn fds_arrive_at_their_numbers_and_no_other() {
    let dir = TempDir::new("spawn-fds");
    let path = dir.path().join("data");
    std::fs::write(&path, "data").unwrap();
    let file = File::open(&path).unwrap();
    let (pipe_r, _pipe_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    // A stray fd without close-on-exec: a plain exec would pass it on.
    let stray = File::open(&path).unwrap();
    rustix::io::fcntl_setfd(&stray, rustix::io::FdFlags::empty()).unwrap();
    let (ours, theirs) = report_pair();

    let child = Spawn::new(exe())
        .arg0("custom-argv0")
        .role("worker")
        .args([CASE, "report_fds", "extra"])
        .env_clear()
        .env("PRIVFORK_SPAWN_TEST", "yes")
        .fd(3, theirs.as_fd())
        .fd(7, pipe_r.as_fd())
        .fd(10, file.as_fd())
        .spawn()
        .unwrap();
    drop(theirs);
    let report = read_report(ours);
    assert_eq!(wait_exit(child), 0, "report_fds failed; report:\n{report}");

    let fds = parse_fds(&report);
    let numbers: Vec<i32> = fds.keys().copied().collect();
    assert_eq!(numbers, [0, 1, 2, 3, 7, 10], "fds in the child:\n{report}");
    for n in [3, 7, 10] {
        assert!(!fds[&n], "fd {n} arrived close-on-exec:\n{report}");
    }
    assert!(
        report.contains(&format!("fd 10 cloexec=false {}\n", path.display())),
        "{report}"
    );
    assert!(report.contains("fd 7 cloexec=false pipe:"), "{report}");
    assert!(report.contains("role Some(\"worker\")\n"), "{report}");
    assert!(
        report.contains(
            "argv [\"custom-argv0\", \"--privfork-role\", \"worker\", \"--privfork-case\", \"report_fds\", \"extra\"]\n"
        ),
        "{report}"
    );
    assert!(report.contains("env 1 Some(\"yes\")\n"), "{report}");
    drop(stray);
    assert_no_children();
}

fn colliding_sources_are_swapped() {
    let dir = TempDir::new("spawn-swap");
    std::fs::write(dir.path().join("a"), "A").unwrap();
    std::fs::write(dir.path().join("b"), "B").unwrap();
    let a = File::open(dir.path().join("a")).unwrap();
    let b = File::open(dir.path().join("b")).unwrap();
    let (ours, theirs) = report_pair();
    // The middle process gets a at 3, b at 4, the report at 5, and spawns
    // the leaf with 3 -> 4, 4 -> 3 and 5 -> 5.
    let middle = Spawn::new(exe())
        .args([CASE, "swap_middle"])
        .fd(3, a.as_fd())
        .fd(4, b.as_fd())
        .fd(5, theirs.as_fd())
        .spawn()
        .unwrap();
    drop(theirs);
    let report = read_report(ours);
    assert_eq!(wait_exit(middle), 0, "report:\n{report}");
    assert!(report.starts_with("3=B\n4=A\n"), "{report}");
    let fds = parse_fds(&report);
    assert_eq!(
        fds.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5],
        "{report}"
    );
    assert!(fds.values().all(|cloexec| !cloexec), "{report}");
}

extern "C" fn on_usr1(_: libc::c_int) {}

fn signal_bit(sig: libc::c_int) -> u64 {
    1 << (sig - 1)
}

fn status_mask(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field} ")))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

fn signal_mask_and_dispositions_are_reset() {
    // SAFETY: a handler that does nothing, installed with a zeroed, valid
    // sigaction; SIG_IGN for SIGUSR2; the mask change is for this thread.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &act, std::ptr::null_mut()),
            0
        );
        act.sa_sigaction = libc::SIG_IGN;
        assert_eq!(
            libc::sigaction(libc::SIGUSR2, &act, std::ptr::null_mut()),
            0
        );
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGTERM);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
    }
    // The setup took: this process blocks, ignores and catches them.
    let mine = ["SigBlk", "SigIgn", "SigCgt"]
        .map(|f| format!("{f} {}\n", status_field(f)))
        .concat();
    assert_ne!(status_mask(&mine, "SigBlk") & signal_bit(libc::SIGUSR1), 0);
    assert_ne!(status_mask(&mine, "SigIgn") & signal_bit(libc::SIGUSR2), 0);
    assert_ne!(status_mask(&mine, "SigIgn") & signal_bit(libc::SIGPIPE), 0);
    assert_ne!(status_mask(&mine, "SigCgt") & signal_bit(libc::SIGUSR1), 0);

    let (ours, theirs) = report_pair();
    let child = Spawn::new(exe())
        .args([CASE, "report_signals"])
        .fd(3, theirs.as_fd())
        .spawn()
        .unwrap();
    drop(theirs);
    let report = read_report(ours);
    assert_eq!(wait_exit(child), 0, "{report}");
    assert_eq!(
        status_mask(&report, "SigBlk"),
        0,
        "mask not empty:\n{report}"
    );
    let ign = status_mask(&report, "SigIgn");
    assert_eq!(
        ign & signal_bit(libc::SIGUSR2),
        0,
        "SIGUSR2 still ignored:\n{report}"
    );
    // The child's own Rust runtime ignores SIGPIPE again at start; nothing
    // else may be ignored.
    assert_eq!(ign & !signal_bit(libc::SIGPIPE), 0, "{report}");
    assert_eq!(
        status_mask(&report, "SigCgt") & signal_bit(libc::SIGUSR1),
        0,
        "{report}"
    );
}

fn expect_child_failure(
    result: Result<Spawned, SpawnError>,
    step: SpawnStep,
    errno: i32,
) -> String {
    match result {
        Err(e @ SpawnError::Child { .. }) => {
            let SpawnError::Child {
                step: got, source, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*got, step, "{e}");
            assert_eq!(source.raw_os_error(), Some(errno), "{e}");
            e.to_string()
        }
        other => panic!("expected a failure at {step:?}, got {other:?}"),
    }
}

fn failures_in_the_child_name_step_and_errno() {
    let dir = TempDir::new("spawn-fail");
    let not_exec = dir.path().join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&not_exec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let pinned = Exe::from_path(&not_exec).unwrap();
    let msg = expect_child_failure(Spawn::new(&pinned).spawn(), SpawnStep::Exec, libc::EACCES);
    assert!(
        msg.contains("execveat") && msg.contains("not-executable"),
        "{msg}"
    );

    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "neither ELF nor a script\n").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pinned = Exe::from_path(&garbage).unwrap();
    expect_child_failure(Spawn::new(&pinned).spawn(), SpawnStep::Exec, libc::ENOEXEC);

    assert!(matches!(
        Exe::from_path(dir.path()),
        Err(privfork::exe::PinError::NotAFile { .. })
    ));
    assert!(matches!(
        Exe::from_path(dir.path().join("missing")),
        Err(privfork::exe::PinError::Open { .. })
    ));

    // A target above RLIMIT_NOFILE: the child cannot move fds above it.
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(64),
            maximum: rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum,
        },
    )
    .unwrap();
    let devnull = File::open("/dev/null").unwrap();
    let e = Spawn::new(exe())
        .args([CASE, "exit_zero"])
        .fd(100, devnull.as_fd())
        .spawn();
    let msg = expect_child_failure(e, SpawnStep::MoveFd, libc::EINVAL);
    assert!(msg.contains("fd 100"), "{msg}");
    assert_no_children();
}

fn bad_fd_targets_start_nothing() {
    let devnull = File::open("/dev/null").unwrap();
    for targets in [&[-1][..], &[5000], &[4, 4]] {
        let mut spawn = Spawn::new(exe());
        spawn.args([CASE, "exit_zero"]);
        for &t in targets {
            spawn.fd(t, devnull.as_fd());
        }
        let e = spawn.spawn().unwrap_err();
        assert!(
            matches!(e, SpawnError::InvalidTarget { .. }),
            "{targets:?}: {e}"
        );
    }
    let e = Spawn::new(exe()).arg("nul\0byte").spawn().unwrap_err();
    assert!(matches!(e, SpawnError::InvalidString { .. }), "{e}");
    let e = Spawn::new(exe()).env("A=B", "c").spawn().unwrap_err();
    assert!(matches!(e, SpawnError::InvalidString { .. }), "{e}");
    assert_no_children();
}

fn spawn_from_a_multithreaded_process() {
    static STOP: AtomicBool = AtomicBool::new(false);
    // Threads that allocate and lock all along, so a fork that ran the
    // allocator or took a lock in the child would hang or crash there.
    let threads: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(|| {
                let lock = std::sync::Mutex::new(Vec::<String>::new());
                while !STOP.load(Ordering::Relaxed) {
                    let mut v = lock.lock().unwrap();
                    v.push("x".repeat(100));
                    if v.len() > 1000 {
                        v.clear();
                    }
                }
            })
        })
        .collect();
    let threads_now: usize = status_field("Threads").parse().unwrap();
    assert!(threads_now >= 4, "{threads_now} threads");
    for _ in 0..50 {
        let child = Spawn::new(exe()).args([CASE, "exit_zero"]).spawn().unwrap();
        assert_eq!(wait_exit(child), 0);
    }
    STOP.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert_no_children();
}

fn copy_test_binary(to: &Path) {
    std::fs::copy(std::env::current_exe().unwrap(), to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Replaces `path` (rename over it) by a script that exits 42.
fn replace_with_script(path: &Path) {
    let new = path.with_extension("new");
    std::fs::write(&new, "#!/bin/sh\nexit 42\n").unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, path).unwrap();
}

fn spawn_report_exe(pinned: &Exe) -> (i32, String) {
    let (ours, theirs) = report_pair();
    let child = Spawn::new(pinned)
        .args([CASE, "report_exe"])
        .fd(3, theirs.as_fd())
        .spawn()
        .unwrap();
    drop(theirs);
    let report = read_report(ours);
    (wait_exit(child), report)
}

fn pinned_file_runs_after_replace_and_delete() {
    let dir = TempDir::new("spawn-pin");
    let bin = dir.path().join("bin");
    copy_test_binary(&bin);
    let pinned = Exe::from_path(&bin).unwrap();
    assert_eq!(pinned.path(), bin);

    let (code, report) = spawn_report_exe(&pinned);
    assert_eq!((code, report.trim()), (0, bin.to_str().unwrap()));

    replace_with_script(&bin);
    let (code, report) = spawn_report_exe(&pinned);
    assert_eq!(code, 0, "the old image must run, not the script");
    assert_eq!(report.trim(), format!("{} (deleted)", bin.display()));
    // A fresh pin of the path names the script, which cannot run through
    // a close-on-exec fd: its interpreter would open /dev/fd/N, closed by
    // then (execveat(2), ENOENT).
    expect_child_failure(
        Spawn::new(&Exe::from_path(&bin).unwrap()).spawn(),
        SpawnStep::Exec,
        libc::ENOENT,
    );

    std::fs::remove_file(&bin).unwrap();
    let (code, report) = spawn_report_exe(&pinned);
    assert_eq!(code, 0);
    assert_eq!(report.trim(), format!("{} (deleted)", bin.display()));
    assert_no_children();
}

fn current_exe_pinned_in_a_copy_survives_replace() {
    let dir = TempDir::new("spawn-current");
    let bin = dir.path().join("bin");
    copy_test_binary(&bin);
    let (mut ours, theirs) = report_pair();
    // The copy pins itself with Exe::current(), says so, waits for "go",
    // then spawns its pinned exe, which reports its /proc/self/exe.
    let copy = Spawn::new(&Exe::from_path(&bin).unwrap())
        .args([CASE, "pin_then_spawn"])
        .fd(3, theirs.as_fd())
        .spawn()
        .unwrap();
    drop(theirs);
    let mut pinned = [0u8; 7];
    ours.read_exact(&mut pinned).unwrap();
    assert_eq!(&pinned, b"pinned\n");
    replace_with_script(&bin);
    ours.write_all(b"go\n").unwrap();
    let report = read_report(ours);
    assert_eq!(wait_exit(copy), 0, "{report}");
    assert_eq!(report.trim(), format!("{} (deleted)", bin.display()));
}

fn take_inherited_fd_checks_kind_openness_and_once() {
    let (pipe_r, pipe_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    File::from(pipe_w).write_all(b"through the pipe").unwrap();
    let (ours, theirs) = report_pair();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (dgram, _dgram_peer) = UnixDatagram::pair().unwrap();
    let child = Spawn::new(exe())
        .args([CASE, "take_checks"])
        .fd(3, pipe_r.as_fd())
        .fd(4, theirs.as_fd())
        .fd(5, listener.as_fd())
        .fd(6, dgram.as_fd())
        .spawn()
        .unwrap();
    drop((theirs, pipe_r));
    let report = read_report(ours);
    assert_eq!(
        wait_exit(child),
        0,
        "take_checks failed (its stderr is above)"
    );
    let port = listener.local_addr().unwrap().port();
    assert_eq!(report, format!("ok {port}"));
}

fn take_inherited_fd_refuses_fds_made_here() {
    captured();
    let file = File::open("/dev/null").unwrap();
    let e = take_inherited_fd(file.as_raw_fd(), FdKind::Any).unwrap_err();
    assert!(matches!(e, InheritError::NotInherited { .. }), "{e}");
    // An fd made here with close-on-exec cleared by hand (safe code can
    // do that) is not taken either: only what was open without the flag
    // when the program started counts — else there would be two owners
    // of one fd.
    let cleared = File::open("/dev/null").unwrap();
    rustix::io::fcntl_setfd(&cleared, rustix::io::FdFlags::empty()).unwrap();
    let e = take_inherited_fd(cleared.as_raw_fd(), FdKind::Any).unwrap_err();
    assert!(matches!(e, InheritError::NotInherited { .. }), "{e}");
    drop(cleared);
}

fn many_spawns_leave_no_zombie_and_flat_fds() {
    let _ = exe();
    let before = fd_count();
    for _ in 0..100 {
        let child = Spawn::new(exe()).args([CASE, "exit_zero"]).spawn().unwrap();
        assert_eq!(wait_exit(child), 0);
    }
    let devnull = File::open("/dev/null").unwrap();
    for _ in 0..100 {
        let e = Spawn::new(exe())
            .args([CASE, "exit_zero"])
            .fd(3, devnull.as_fd())
            .env("X", "y")
            .arg0("a")
            .spawn()
            .unwrap();
        assert_eq!(wait_exit(e), 0);
    }
    drop(devnull);
    assert_eq!(fd_count(), before);
    assert_no_children();
}
