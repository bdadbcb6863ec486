//! The sandbox (pledge + unveil), applied for real. Each case runs in a
//! fresh single-threaded process of its own (see `support`), since a
//! sandbox cannot be lifted. Most cases use the `EPERM` violation mode so
//! that one process can check many refusals; kill mode is checked from the
//! outside on helper processes.

mod support;

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use privfork::sandbox::{Level, Policy, Sandbox, SandboxError, Violation};
use support::{TempDir, require_root};

fn main() {
    support::main(
        &[
            (
                "std_runtime_works_under_stdio",
                std_runtime_works_under_stdio,
            ),
            (
                "tokio_runtime_works_under_stdio",
                tokio_runtime_works_under_stdio,
            ),
            ("status_shows_the_sandbox", status_shows_the_sandbox),
            ("stdio_withholds_the_rest", stdio_withholds_the_rest),
            ("clone3_answers_enosys", clone3_answers_enosys),
            ("kill_mode_kills", kill_mode_kills),
            (
                "rpath_reads_only_unveiled_paths",
                rpath_reads_only_unveiled_paths,
            ),
            ("wpath_and_cpath", wpath_and_cpath),
            (
                "quiet_allowances_hold_for_the_library",
                quiet_allowances_hold_for_the_library,
            ),
            ("unveil_escapes_fail", unveil_escapes_fail),
            ("network_ports", network_ports),
            ("bad_input_is_named", bad_input_is_named),
            ("multithreaded_is_refused", multithreaded_is_refused),
            (
                "report_is_full_on_this_kernel",
                report_is_full_on_this_kernel,
            ),
            (
                "require_fails_before_restricting_anything",
                require_fails_before_restricting_anything,
            ),
            (
                "each_promise_allows_its_calls_and_no_more",
                each_promise_allows_its_calls_and_no_more,
            ),
            (
                "legitimate_worker_calls_keep_working",
                legitimate_worker_calls_keep_working,
            ),
            (
                "loader_rules_never_map_writable_and_executable",
                loader_rules_never_map_writable_and_executable,
            ),
            (
                "inherited_listener_still_accepts",
                inherited_listener_still_accepts,
            ),
            (
                "signals_stay_inside_the_sandbox",
                signals_stay_inside_the_sandbox,
            ),
        ],
        &[
            ("connect_later", connect_later),
            ("promise_probe", promise_probe),
            ("violate_open_for_write", violate_open_for_write),
            ("violate_exec", violate_exec),
            ("violate_socket", violate_socket),
            ("violate_ptrace", violate_ptrace),
            ("violate_prot_exec", violate_prot_exec),
            ("violate_x32", violate_x32),
        ],
    )
}

fn errno_sandbox(promises: &str) -> Sandbox {
    Sandbox::new()
        .promises(promises)
        .unwrap()
        .violation(Violation::Errno)
}

fn errno_of<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

fn std_runtime_works_under_stdio() {
    let report = Sandbox::new().promises("stdio").unwrap().apply().unwrap();
    assert_eq!(report.seccomp, Level::Full);
    // Threads, allocation, HashMap (getrandom), channels, time.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    let mut m = HashMap::new();
                    for k in 0..1000 {
                        m.insert(k, vec![i; 64]);
                    }
                    m.len()
                })
                .unwrap()
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 1000);
    }
    let t = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(5));
    assert!(t.elapsed() >= Duration::from_millis(5));
    let _ = std::time::SystemTime::now();
    let _ = std::thread::available_parallelism().unwrap();
    // A panic on a thread prints its message and is caught by join.
    let r = std::thread::spawn(|| panic!("expected panic under stdio")).join();
    assert!(r.is_err());
    // Pipes, polling, signals to itself.
    let (r, w) = rustix::pipe::pipe().unwrap();
    rustix::io::write(&w, b"x").unwrap();
    let mut fds = [rustix::event::PollFd::new(&r, rustix::event::PollFlags::IN)];
    assert_eq!(rustix::event::poll(&mut fds, None).unwrap(), 1);
    let me = rustix::process::getpid();
    rustix::process::test_kill_process(me).unwrap();
    // Writing to stdout still works.
    println!("std runtime ok");
}

fn tokio_runtime_works_under_stdio() {
    Sandbox::new().promises("stdio").unwrap().apply().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sum = rt.block_on(async {
        let tasks: Vec<_> = (0..8u64)
            .map(|i| {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    i
                })
            })
            .collect();
        let mut s = 0;
        for t in tasks {
            s += t.await.unwrap();
        }
        s
    });
    assert_eq!(sum, 28);
}

fn status_shows_the_sandbox() {
    require_root();
    // Open before the sandbox: reading /proc/self/status later needs only
    // stdio (the fd is already open; the kernel regenerates it per read).
    let mut f = std::fs::File::open("/proc/self/status").unwrap();
    Sandbox::new().promises("stdio").unwrap().apply().unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    let field = |n: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(n))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(field("Seccomp:"), "2");
    assert_eq!(field("NoNewPrivs:"), "1");
    for set in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(set), "0000000000000000", "{set}");
    }
}

fn stdio_withholds_the_rest() {
    let dir = TempDir::new("withhold");
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    errno_sandbox("stdio").apply().unwrap();
    let eperm = Some(libc::EPERM);
    // Without any path promise, opens fail with EACCES (see refuse_opens).
    assert_eq!(
        errno_of(std::fs::File::open(&file)),
        Some(libc::EACCES),
        "open needs rpath"
    );
    assert_eq!(
        errno_of(std::net::TcpListener::bind("127.0.0.1:0")),
        eperm,
        "socket needs inet"
    );
    // Unix sockets: refused softly (glibc's NSS probes nscd's socket).
    assert_eq!(
        errno_of(std::os::unix::net::UnixListener::bind(dir.path().join("s"))),
        Some(libc::EACCES),
        "socket(AF_UNIX) needs unix"
    );
    assert_eq!(
        errno_of(Command::new("/bin/true").status()),
        eperm,
        "exec needs exec"
    );
    assert_eq!(errno_of(std::fs::create_dir(dir.path().join("d"))), eperm);
    // kill only to itself.
    let init = rustix::process::Pid::from_raw(1).unwrap();
    assert_eq!(
        rustix::process::test_kill_process(init),
        Err(rustix::io::Errno::PERM)
    );
    // No executable memory without prot_exec.
    // SAFETY: an anonymous mapping with no address hint; never used.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_eq!(p, libc::MAP_FAILED);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), eperm);
    // Never allowed: ptrace, io_uring, unshare, bpf.
    for (name, nr) in [
        ("ptrace", libc::SYS_ptrace),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("unshare", libc::SYS_unshare),
        ("bpf", libc::SYS_bpf),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("setuid", libc::SYS_setuid),
    ] {
        // SAFETY: harmless arguments (zeros); the call is refused anyway.
        let rc = unsafe { libc::syscall(nr, 0, 0, 0, 0) };
        assert_eq!(rc, -1, "{name} was not refused");
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            eperm,
            "{name}"
        );
    }
    // A thread-creating clone is fine, a namespace-creating one is not.
    // SAFETY: CLONE_NEWUSER with a null stack is refused before it runs.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_NEWUSER | libc::SIGCHLD,
            0,
            0,
            0,
            0,
        )
    };
    assert_eq!(rc, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), eperm);
}

fn clone3_answers_enosys() {
    Sandbox::new().promises("stdio").unwrap().apply().unwrap();
    // SAFETY: a null clone_args pointer; the filter answers before use.
    let rc = unsafe { libc::syscall(libc::SYS_clone3, 0, 0) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOSYS)
    );
    // Threads still start (glibc falls back to clone).
    assert_eq!(std::thread::spawn(|| 7).join().unwrap(), 7);
}

/// Runs helper `name` in a fresh process and returns how it ended.
fn run_helper(name: &str) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args(["--privfork-case", name])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
}

fn kill_mode_kills() {
    use std::os::unix::process::ExitStatusExt;
    for helper in [
        "violate_open_for_write",
        "violate_exec",
        "violate_socket",
        "violate_ptrace",
        "violate_prot_exec",
        "violate_x32",
    ] {
        let st = run_helper(helper);
        assert_eq!(st.signal(), Some(libc::SIGSYS), "{helper}: {st:?}");
    }
}

fn kill_sandbox() {
    Sandbox::new().promises("stdio").unwrap().apply().unwrap();
}

fn violate_open_for_write() {
    // rpath only: an open that creates is a violation. (One that creates
    // nothing passes the filter and Landlock refuses it — the quiet opens
    // that let /dev/null open read-write: see rpath_reads_only_unveiled_paths.)
    Sandbox::new()
        .promises("stdio rpath")
        .unwrap()
        .apply()
        .unwrap();
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open("/etc/hostname");
}

fn violate_exec() {
    kill_sandbox();
    let _ = Command::new("/bin/true").status();
}

fn violate_socket() {
    kill_sandbox();
    let _ = std::net::UdpSocket::bind("127.0.0.1:0");
}

fn violate_ptrace() {
    kill_sandbox();
    // SAFETY: PTRACE_TRACEME with zero arguments; the filter kills first.
    unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
}

fn violate_prot_exec() {
    kill_sandbox();
    // SAFETY: an anonymous mapping with no hint; the filter kills first.
    unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
}

fn violate_x32() {
    kill_sandbox();
    // getpid through the x32 ABI (syscall number with bit 30 set).
    // SAFETY: no arguments; the filter kills first.
    unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
}

fn rpath_reads_only_unveiled_paths() {
    let inside = TempDir::new("rpath-in");
    let outside = TempDir::new("rpath-out");
    std::fs::write(inside.path().join("a"), "inside").unwrap();
    std::fs::write(outside.path().join("b"), "outside").unwrap();
    errno_sandbox("stdio rpath")
        .unveil(&format!("r:{}", inside.path().display()))
        .unwrap()
        .apply()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(inside.path().join("a")).unwrap(),
        "inside"
    );
    let names: Vec<_> = std::fs::read_dir(inside.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
    // Outside the unveiled tree: Landlock says EACCES.
    assert_eq!(
        errno_of(std::fs::read(outside.path().join("b"))),
        Some(libc::EACCES)
    );
    assert_eq!(errno_of(std::fs::read("/etc/hostname")), Some(libc::EACCES));
    // Reading is all: writing needs wpath. A write open is the filter's
    // to refuse (the quiet opens are read-only), here EPERM.
    assert_eq!(
        errno_of(
            std::fs::OpenOptions::new()
                .write(true)
                .open(inside.path().join("a"))
        ),
        Some(libc::EPERM)
    );
    // /dev/null opens for reading (a quiet allowance); for writing, the
    // library needs wpath (privfork run's supervisor hands one over).
    assert!(std::fs::File::open("/dev/null").is_ok());
    assert_eq!(
        errno_of(std::fs::OpenOptions::new().write(true).open("/dev/null")),
        Some(libc::EPERM)
    );
    // Creating is still the filter's (EPERM).
    assert_eq!(
        errno_of(std::fs::File::create(inside.path().join("new"))),
        Some(libc::EPERM)
    );
}

/// The quiet allowances hold in the library's rulesets too (not only
/// `privfork run`'s): under stdio wpath (kill mode: a violation ends the
/// case) /dev/null opens read-write, /dev/zero and the time zone read;
/// another file in /etc is Landlock's EACCES (the open passed the filter).
fn quiet_allowances_hold_for_the_library() {
    // Reading them needs no promise beyond stdio (the quiet opens);
    // writing /dev/null needs wpath in the library, which has no
    // supervisor to hand one over (privfork run's does).
    Sandbox::new()
        .promises("stdio wpath")
        .unwrap()
        .apply()
        .unwrap();
    let mut null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .unwrap();
    std::io::Write::write_all(&mut null, b"x").unwrap();
    let mut zero = [1u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/zero").unwrap(), &mut zero).unwrap();
    assert_eq!(zero, [0; 4]);
    assert!(!std::fs::read("/etc/localtime").unwrap().is_empty());
    assert_eq!(errno_of(std::fs::read("/etc/hostname")), Some(libc::EACCES));
    // Not written: /dev/zero is read-only.
    assert_eq!(
        errno_of(std::fs::OpenOptions::new().write(true).open("/dev/zero")),
        Some(libc::EACCES)
    );
}

fn wpath_and_cpath() {
    let dir = TempDir::new("wc");
    std::fs::write(dir.path().join("a"), "old").unwrap();
    errno_sandbox("stdio rpath wpath cpath")
        .unveil(&format!("rwc:{}", dir.path().display()))
        .unwrap()
        .apply()
        .unwrap();
    std::fs::write(dir.path().join("a"), "new").unwrap();
    std::fs::write(dir.path().join("b"), "created").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::rename(dir.path().join("b"), dir.path().join("sub/b")).unwrap();
    std::fs::remove_file(dir.path().join("sub/b")).unwrap();
    std::fs::remove_dir(dir.path().join("sub")).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a")).unwrap(),
        "new"
    );
    // Creating outside the tree: Landlock refuses.
    assert_eq!(
        errno_of(std::fs::write("/tmp/privfork-escape-test", "x")),
        Some(libc::EACCES)
    );
    // fattr is not promised.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        errno_of(std::fs::set_permissions(
            dir.path().join("a"),
            std::fs::Permissions::from_mode(0o644)
        )),
        Some(libc::EPERM)
    );
}

fn unveil_escapes_fail() {
    require_root();
    let data = TempDir::new("esc-data");
    let secret_dir = TempDir::new("esc-secret");
    let secret = secret_dir.path().join("secret");
    std::fs::write(&secret, "secret").unwrap();
    // Prepared before the sandbox: a symlink and a hard link pointing out,
    // and a directory fd of the parent of the unveiled tree.
    std::os::unix::fs::symlink(&secret, data.path().join("sym")).unwrap();
    let hard_ok = std::fs::hard_link(&secret, data.path().join("hard")).is_ok();
    let parent = std::fs::File::open(std::env::temp_dir()).unwrap();
    errno_sandbox("stdio rpath wpath cpath")
        .unveil(&format!("rwc:{}", data.path().display()))
        .unwrap()
        .apply()
        .unwrap();
    let dotdot = data
        .path()
        .join("..")
        .join(secret_dir.path().file_name().unwrap())
        .join("secret");
    assert_eq!(errno_of(std::fs::read(&dotdot)), Some(libc::EACCES), "..");
    assert_eq!(
        errno_of(std::fs::read(data.path().join("sym"))),
        Some(libc::EACCES),
        "symlink"
    );
    // Creating a hard link to an outside file is refused (a link made
    // before the sandbox is a path inside the tree, as unveil(2) too sees it).
    let _ = hard_ok;
    assert!(
        std::fs::hard_link(&secret, data.path().join("hard2")).is_err(),
        "hard link"
    );
    // Rename out of the tree.
    std::fs::write(data.path().join("mine"), "m").unwrap();
    let r = std::fs::rename(data.path().join("mine"), secret_dir.path().join("moved"));
    assert!(
        matches!(errno_of(r), Some(libc::EACCES) | Some(libc::EXDEV)),
        "rename out"
    );
    // openat from a directory fd opened before the sandbox.
    let rel = std::path::Path::new(secret_dir.path().file_name().unwrap()).join("secret");
    let r = rustix::fs::openat(
        parent.as_fd(),
        &rel,
        rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    );
    assert_eq!(
        r.err(),
        Some(rustix::io::Errno::ACCESS),
        "openat from an old dirfd"
    );
    // The parent's memory.
    let ppid = rustix::process::getppid().unwrap().as_raw_nonzero();
    assert!(std::fs::read(format!("/proc/{ppid}/mem")).is_err());
}

fn network_ports() {
    // A port free now, to allow; anything else is refused.
    let allowed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    errno_sandbox("stdio inet").bind(allowed).apply().unwrap();
    let listener = std::net::TcpListener::bind(("127.0.0.1", allowed)).unwrap();
    assert_eq!(
        errno_of(std::net::TcpListener::bind("127.0.0.1:0")),
        Some(libc::EACCES),
        "bind to a port not allowed"
    );
    // No connect port allowed: connecting is refused, even to ourselves.
    assert_eq!(
        errno_of(std::net::TcpStream::connect(("127.0.0.1", allowed))),
        Some(libc::EACCES)
    );
    drop(listener);
}

fn bad_input_is_named() {
    let e = Sandbox::new().promises("stdio bogus").unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    let e = Sandbox::new().unveil("rz:/tmp").unwrap_err();
    assert!(e.to_string().contains("rz:/tmp"), "{e}");
    let e = Sandbox::new()
        .promises("stdio")
        .unwrap()
        .unveil("r:/no/such/path/pf")
        .unwrap()
        .apply()
        .unwrap_err();
    assert!(matches!(e, SandboxError::Unveil(_)), "{e:?}");
    assert!(e.to_string().contains("/no/such/path/pf"), "{e}");
    // Optional: skipped, and said so in the report.
    let report = Sandbox::new()
        .promises("stdio")
        .unwrap()
        .unveil("r?:/no/such/path/pf")
        .unwrap()
        .apply()
        .unwrap();
    assert_eq!(
        report.skipped,
        vec![std::path::PathBuf::from("/no/such/path/pf")]
    );
    assert!(report.to_string().contains("/no/such/path/pf"));
}

fn multithreaded_is_refused() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv());
    let e = Sandbox::new()
        .promises("stdio")
        .unwrap()
        .apply()
        .unwrap_err();
    assert!(
        matches!(e, SandboxError::MultiThreaded { threads: 2 }),
        "{e:?}"
    );
    tx.send(()).unwrap();
    t.join().unwrap().unwrap();
}

fn report_is_full_on_this_kernel() {
    require_root();
    // Root holds CAP_SETPCAP, and this kernel has Landlock ABI >= 6: every
    // layer is fully enforced, so Require passes.
    let report = Sandbox::new()
        .promises("stdio")
        .unwrap()
        .policy(Policy::Require)
        .apply()
        .unwrap();
    assert_eq!(report.overall(), Level::Full, "{report}");
}

/// On a kernel without Landlock (simulated: a filter answering ENOSYS to
/// landlock_create_ruleset, landlock_add_rule and landlock_restrict_self,
/// x86_64 444-446), `Policy::Require` fails in `prepare`, before any
/// layer is installed: no filter of privfork's, capabilities and bounding
/// set, dumpable flag and core limit all as they were. (The simulation's
/// own `apply_filter` sets no_new_privs, so that one cannot be checked.)
fn require_fails_before_restricting_anything() {
    require_root();
    let rules = [444i64, 445, 446].map(|nr| (nr, Vec::new())).into();
    let no_landlock: seccompiler::BpfProgram = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(libc::ENOSYS as u32),
        seccompiler::TargetArch::x86_64,
    )
    .unwrap()
    .try_into()
    .unwrap();
    seccompiler::apply_filter(&no_landlock).unwrap();
    let state = || {
        (
            support::status_field("Seccomp_filters"),
            support::status_field("CapEff"),
            support::status_field("CapBnd"),
            rustix::process::dumpable_behavior().unwrap(),
            rustix::process::getrlimit(rustix::process::Resource::Core),
        )
    };
    let before = state();
    assert_eq!(before.0, "1", "only the simulation's filter");
    let err = Sandbox::new()
        .promises("stdio rpath")
        .unwrap()
        .unveil("r:/etc")
        .unwrap()
        .policy(Policy::Require)
        .apply()
        .unwrap_err();
    assert!(matches!(err, SandboxError::Unveil(_)), "{err}");
    assert!(err.to_string().contains("landlock"), "{err}");
    let after = state();
    assert_eq!(
        format!("{before:?}"),
        format!("{after:?}"),
        "something was restricted"
    );
    // Still unrestricted: a call no promise given allows works.
    let dir = TempDir::new("require-before");
    std::fs::write(dir.path().join("f"), "x").unwrap();
    // The control: best effort goes ahead without Landlock, and says so.
    let report = Sandbox::new()
        .promises("stdio")
        .unwrap()
        .policy(Policy::BestEffort)
        .apply()
        .unwrap();
    assert_eq!(report.landlock, Level::None, "{report}");
    assert_eq!(report.seccomp, Level::Full, "{report}");
}

/// Runs one operation the way a sandboxed program would; returns 0 or the
/// errno it failed with. The operations work on files in `dir`.
fn operation(op: &str, dir: &std::path::Path) -> i32 {
    match try_operation(op, dir) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn socket(
    family: rustix::net::AddressFamily,
    kind: rustix::net::SocketType,
) -> std::io::Result<()> {
    Ok(rustix::net::socket(family, kind, None).map(drop)?)
}

fn try_operation(op: &str, dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match op {
        "read" => std::fs::read(dir.join("file")).map(drop),
        "write" => std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("file"))
            .map(drop),
        "create" => std::fs::write(dir.join("new"), "x"),
        "mkfifo" => rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .map_err(Into::into),
        // fattr and chown act on open files only (the path forms are
        // refused: see the promise table).
        "chmod" => std::fs::File::open(dir.join("file"))?
            .set_permissions(std::fs::Permissions::from_mode(0o644)),
        "chown" => std::os::unix::fs::fchown(std::fs::File::open(dir.join("file"))?, None, None),
        "flock" => {
            let f = std::fs::File::open(dir.join("file"))?;
            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockShared).map_err(Into::into)
        }
        // The socket only: binding is Landlock's business (network_ports).
        "tcp" => socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::STREAM,
        ),
        "udp" => socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
        ),
        "unix" => socket(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
        ),
        "fork" => {
            // SAFETY: the probe process is single-threaded; the child exits
            // at once without touching anything.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: ends the child immediately.
                unsafe { libc::_exit(0) };
            }
            if pid < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                let _ = rustix::process::waitpid(None, rustix::process::WaitOptions::empty());
                Ok(())
            }
        }
        "exec" => {
            use std::os::unix::process::CommandExt;
            // Success replaces this process; exec of a missing file
            // reaching the kernel answers ENOENT, which counts as allowed.
            let e = std::process::Command::new("/no/such/program-pf").exec();
            match e.raw_os_error() {
                Some(libc::ENOENT) => Ok(()),
                _ => Err(e),
            }
        }
        "setuid-self" => {
            rustix::thread::set_thread_uid(rustix::process::getuid()).map_err(Into::into)
        }
        "tty-winsize" => {
            // An ioctl only tty allows; ENOTTY on a non-terminal still means
            // it reached the kernel. Setting, not getting: without tty,
            // TIOCGWINSZ is answered ENOTTY by the filter (a soft answer),
            // which this probe could not tell from the kernel's.
            let f = std::fs::File::open("/dev/null")?;
            let ws: libc::winsize = libc::winsize {
                ws_row: 0,
                ws_col: 0,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads a winsize from the live local.
            let rc =
                unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::TIOCSWINSZ, &ws) };
            let e = std::io::Error::last_os_error();
            if rc == 0 || e.raw_os_error() == Some(libc::ENOTTY) {
                Ok(())
            } else {
                Err(e)
            }
        }
        "prot-exec" => {
            // SAFETY: an anonymous mapping with no hint, unmapped below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                Err(std::io::Error::last_os_error())
            } else {
                // SAFETY: the mapping just made, of that size.
                unsafe { libc::munmap(p, 4096) };
                Ok(())
            }
        }
        other => panic!("unknown operation {other}"),
    }
}

/// Helper: applies an errno-mode sandbox with PF_PROMISES (the dir in
/// PF_DIR unveiled rwc, /dev/null rw), runs PF_OP, prints the result.
fn promise_probe() {
    let promises = std::env::var("PF_PROMISES").unwrap();
    let op = std::env::var("PF_OP").unwrap();
    let dir = std::path::PathBuf::from(std::env::var("PF_DIR").unwrap());
    errno_sandbox(&promises)
        .unveil(&format!("rwc:{}", dir.display()))
        .unwrap()
        .unveil("rw:/dev/null")
        .unwrap()
        .apply()
        .unwrap();
    println!("{}", operation(&op, &dir));
}

fn each_promise_allows_its_calls_and_no_more() {
    require_root();
    // (operation, promises that make it pass, besides stdio)
    let cases: &[(&str, &str)] = &[
        ("read", "rpath"),
        ("write", "wpath"),
        ("create", "cpath"),
        ("mkfifo", "dpath"),
        ("chmod", "rpath fattr"),
        ("chown", "rpath chown"),
        ("flock", "rpath flock"),
        ("tcp", "inet"),
        ("udp", "dns"),
        ("unix", "unix"),
        ("fork", "proc"),
        ("exec", "exec"),
        ("setuid-self", "id"),
        ("tty-winsize", "rpath tty"),
        ("prot-exec", "prot_exec"),
    ];
    let mut failures = Vec::new();
    for (op, promise) in cases {
        let dir = TempDir::new("probe");
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let probe = |promises: String| -> i32 {
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--privfork-case", "promise_probe"])
                .env("PF_PROMISES", &promises)
                .env("PF_OP", op)
                .env("PF_DIR", dir.path())
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{op} with {promises:?}: {out:?}"))
        };
        let with = probe(format!("stdio {promise}"));
        let only_stdio = probe("stdio".to_owned());
        if with != 0 {
            failures.push(format!(
                "{op}: fails with errno {with} under \"stdio {promise}\""
            ));
        }
        if only_stdio == 0 {
            failures.push(format!("{op}: allowed under stdio alone"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn legitimate_worker_calls_keep_working() {
    // What a worker under "stdio rpath wpath cpath" with its directory
    // unveiled does besides files: time, timers, memory queries, locked
    // memory, pipe sizes, signals to itself, preallocation. Kill mode: a
    // refused call ends this process and fails the case.
    let dir = TempDir::new("worker");
    Sandbox::new()
        .promises("stdio rpath wpath cpath")
        .unwrap()
        .unveil(&format!("rwc:{}", dir.path().display()))
        .unwrap()
        .apply()
        .unwrap();
    // SAFETY: plain libc calls with valid pointers to locals; each result
    // is checked.
    unsafe {
        let mut t: libc::tms = std::mem::zeroed();
        assert_ne!(libc::times(&mut t), -1 as libc::clock_t);
        let mut timer: libc::timer_t = std::mem::zeroed();
        let mut ev: libc::sigevent = std::mem::zeroed();
        ev.sigev_notify = libc::SIGEV_NONE;
        assert_eq!(
            libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut timer),
            0
        );
        assert_eq!(libc::timer_delete(timer), 0);
        let mut si: libc::sysinfo = std::mem::zeroed();
        assert_eq!(libc::sysinfo(&mut si), 0);
        let page = [0u8; 4096];
        // mlock may fail with ENOMEM/EPERM under RLIMIT_MEMLOCK; what
        // matters is that the call is allowed (not killed).
        let _ = libc::mlock(page.as_ptr().cast(), page.len());
        let _ = libc::munlock(page.as_ptr().cast(), page.len());
        let val = libc::sigval {
            sival_ptr: std::ptr::null_mut(),
        };
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
        assert_eq!(libc::sigqueue(libc::getpid(), libc::SIGUSR1, val), 0);
    }
    let (r, _w) = rustix::pipe::pipe().unwrap();
    rustix::pipe::fcntl_setpipe_size(&r, 1 << 16).unwrap();
    let f = std::fs::File::create(dir.path().join("pre")).unwrap();
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, 4096).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 4096);
}

fn loader_rules_never_map_writable_and_executable() {
    // With the loader rules (privfork run of a dynamic program), files may
    // be mapped read+exec, but never writable+exec: a private RWX mapping
    // of a readable file would be executable memory the program can fill.
    let dir = TempDir::new("loader");
    std::fs::write(dir.path().join("code"), [0xc3u8; 4096]).unwrap();
    let f = std::fs::File::open(dir.path().join("code")).unwrap();
    errno_sandbox("stdio rpath")
        .for_exec_loader()
        .unveil(&format!("r:{}", dir.path().display()))
        .unwrap()
        .apply()
        .unwrap();
    let map = |prot: i32| {
        // SAFETY: a private file mapping with no address hint, unmapped at
        // once when it succeeds.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                prot,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::io::Error::last_os_error().raw_os_error()
        } else {
            // SAFETY: the mapping just made, of that size.
            unsafe { libc::munmap(p, 4096) };
            None
        }
    };
    assert_eq!(
        map(libc::PROT_READ | libc::PROT_EXEC),
        None,
        "r-x file mapping"
    );
    assert_eq!(
        map(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC),
        Some(libc::EPERM),
        "rwx file mapping"
    );
}

/// Helper: connects to 127.0.0.1:$PF_PORT after a short delay.
fn connect_later() {
    let port: u16 = std::env::var("PF_PORT").unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut s, b"hello").unwrap();
}

fn inherited_listener_still_accepts() {
    // A listening socket made before the sandbox keeps accepting, even
    // with no port allowed for bind or connect.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut client = Command::new(std::env::current_exe().unwrap())
        .args(["--privfork-case", "connect_later"])
        .env("PF_PORT", port.to_string())
        .spawn()
        .unwrap();
    errno_sandbox("stdio inet").apply().unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello");
    // New listeners are still refused.
    assert_eq!(
        errno_of(std::net::TcpListener::bind("127.0.0.1:0")),
        Some(libc::EACCES)
    );
    let _ = client.wait();
}

fn signals_stay_inside_the_sandbox() {
    // With proc (kill to any pid allowed by seccomp), Landlock's signal
    // scope still refuses signals to processes outside the sandbox: here
    // the test runner, our parent (signal 0 only probes).
    errno_sandbox("stdio proc").apply().unwrap();
    let parent = rustix::process::getppid().unwrap();
    assert_eq!(
        rustix::process::test_kill_process(parent),
        Err(rustix::io::Errno::PERM)
    );
    // Signals to itself are fine.
    rustix::process::test_kill_process(rustix::process::getpid()).unwrap();
}
