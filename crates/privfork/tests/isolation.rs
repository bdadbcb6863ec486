//! The child-setup routine's isolation, end to end: what a fork-as child
//! (and so every child privfork starts) can no longer reach of its parent —
//! the terminal, the session keyring, shared mappings, the personality,
//! signal handlers — and a sandbox prepared in the parent holding in the
//! child and its descendants.
//!
//! Every refusal has a positive control: the same operation from a plain
//! forked child dropped to the same user without the routine works, so the
//! refusal is the routine's, not file permissions'. Runs as root; each
//! case in a fresh single-threaded process (see `support`).

mod support;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;

use privfork::sandbox::Sandbox;
use privfork::{ForkAs, ForkAsError};
use support::{TempDir, require_root};

const NOBODY: u32 = 65534;

fn main() {
    support::main(
        &[
            (
                "no_controlling_terminal_and_no_tiocsti",
                no_controlling_terminal_and_no_tiocsti,
            ),
            (
                "session_keyring_is_not_inherited",
                session_keyring_is_not_inherited,
            ),
            (
                "shared_mappings_are_gone_in_the_child",
                shared_mappings_are_gone_in_the_child,
            ),
            ("personality_is_reset", personality_is_reset),
            (
                "working_directory_is_not_inherited",
                working_directory_is_not_inherited,
            ),
            ("signal_handlers_are_reset", signal_handlers_are_reset),
            (
                "prepared_sandbox_lets_the_child_abort",
                prepared_sandbox_lets_the_child_abort,
            ),
            (
                "prepared_sandbox_holds_in_a_grandchild",
                prepared_sandbox_holds_in_a_grandchild,
            ),
            (
                "signals_to_others_refused_by_landlock_scope",
                signals_to_others_refused_by_landlock_scope,
            ),
            (
                "filter_refuses_group_and_broadcast_signals",
                filter_refuses_group_and_broadcast_signals,
            ),
        ],
        &[],
    )
}

/// The errno of the last failed call, or 0.
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Runs `f` in a plain forked child (no setup routine) dropped to nobody —
/// the positive control — and returns its exit code.
fn plain_child_as_nobody(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the test process is single-threaded (one process per case,
    // harness = false), so the child may run any code; it ends in _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: integer arguments; the child is single-threaded.
        let ok = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(NOBODY, NOBODY, NOBODY) == 0
                && libc::setresuid(NOBODY, NOBODY, NOBODY) == 0
        };
        let code = if ok { f() } else { 99 };
        // SAFETY: ends the child without running the parent's cleanup.
        unsafe { libc::_exit(code) };
    }
    wait_exit(pid)
}

/// Waits for `pid` and returns its exit code (fails the test on a signal).
fn wait_exit(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: `status` is a live local.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status),
        "child ended by signal {}",
        libc::WTERMSIG(status)
    );
    libc::WEXITSTATUS(status)
}

/// Runs `f` in a forked process of its own (so the case process keeps its
/// session and keyring) and fails the test if it fails.
fn in_sub_process(f: fn()) {
    // SAFETY: single-threaded test process; the child ends in _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = std::panic::catch_unwind(f).is_ok();
        let _ = std::io::stderr().flush();
        // SAFETY: ends the child without unwinding into the runner.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    assert_eq!(wait_exit(pid), 0, "the sub-process failed (see its stderr)");
}

fn no_controlling_terminal_and_no_tiocsti() {
    require_root();
    in_sub_process(|| {
        // A session of our own whose controlling terminal is a new pty:
        // CI has no terminal, and the test must not touch the caller's.
        // SAFETY: integer-only calls; the pty path is a NUL-terminated
        // string the kernel only reads.
        unsafe {
            assert!(
                libc::setsid() > 0,
                "setsid: {}",
                std::io::Error::last_os_error()
            );
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(master >= 0);
            assert_eq!(libc::grantpt(master), 0);
            assert_eq!(libc::unlockpt(master), 0);
            let name = libc::ptsname(master);
            assert!(!name.is_null());
            // Without O_NOCTTY a session leader acquires it as its terminal.
            let slave = libc::open(name, libc::O_RDWR);
            assert!(slave >= 0);
            assert_eq!(libc::dup2(slave, 0), 0);
        }
        let try_terminal = || -> (i32, i32) {
            // SAFETY: a NUL-terminated path; TIOCSTI reads one byte from a
            // live local.
            unsafe {
                let tty = libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR);
                let open_errno = if tty >= 0 { 0 } else { errno() };
                let byte = b'x';
                let rc = libc::ioctl(0, libc::TIOCSTI, &byte);
                (open_errno, if rc == 0 { 0 } else { errno() })
            }
        };
        // Control: a plain child as nobody in this session reaches the
        // terminal: /dev/tty opens and TIOCSTI pushes input.
        let control = plain_child_as_nobody(|| {
            let (open, sti) = try_terminal();
            i32::from(open != 0) | i32::from(sti != 0) << 1
        });
        assert_eq!(
            control, 0,
            "control: /dev/tty or TIOCSTI failed without the routine"
        );
        let (open, sti) = ForkAs::user("nobody")
            .unwrap()
            .stdio(privfork::fork_as::Stdio::Inherit)
            .run(try_terminal)
            .unwrap();
        assert_eq!(open, libc::ENXIO, "fork-as child opened /dev/tty");
        assert_eq!(sti, libc::EPERM, "fork-as child pushed input with TIOCSTI");
        let sid: (i32, i32) = ForkAs::user("nobody")
            .unwrap()
            .run(|| {
                // SAFETY: integer-only calls.
                unsafe { (libc::getsid(0), libc::getpid()) }
            })
            .unwrap();
        assert_eq!(sid.0, sid.1, "the fork-as child leads a session of its own");
    });
}

fn keyctl(cmd: libc::c_long, a: libc::c_long, b: libc::c_long, c: libc::c_long) -> libc::c_long {
    // SAFETY: the callers pass integers or pointers to live buffers of the
    // sizes given, as each command expects.
    unsafe { libc::syscall(libc::SYS_keyctl, cmd, a, b, c) }
}

fn session_keyring_is_not_inherited() {
    require_root();
    in_sub_process(|| {
        const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
        const KEYCTL_READ: libc::c_long = 11;
        const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
        // A session keyring of this sub-process's own, so the test never
        // touches the session it was started from.
        assert!(keyctl(KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0) > 0);
        let secret = b"root's secret";
        // SAFETY: NUL-terminated type and description; the payload pointer
        // and length describe `secret`.
        let key = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"privfork-test-key".as_ptr(),
                secret.as_ptr(),
                secret.len(),
                KEY_SPEC_SESSION_KEYRING,
            )
        };
        assert!(key > 0, "add_key: {}", std::io::Error::last_os_error());
        let read_key = move || -> i64 {
            let mut buf = [0u8; 64];
            let n = keyctl(KEYCTL_READ, key, buf.as_mut_ptr() as libc::c_long, 64);
            if n < 0 { -i64::from(errno()) } else { n }
        };
        // Control: a plain child as nobody possesses the key through the
        // inherited session keyring and reads it.
        let control = plain_child_as_nobody(|| i32::from(read_key() != secret.len() as i64));
        assert_eq!(
            control, 0,
            "control: the key was not readable without the routine"
        );
        let got: i64 = ForkAs::user("nobody").unwrap().run(read_key).unwrap();
        assert_eq!(
            got,
            -i64::from(libc::EACCES),
            "fork-as child read root's key"
        );
    });
}

/// Whether `addr` lies in a mapping of the calling process.
fn mapped(addr: usize) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().any(|l| {
        let range = l.split(' ').next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            usize::from_str_radix(a, 16).unwrap(),
            usize::from_str_radix(b, 16).unwrap(),
        );
        (a..b).contains(&addr)
    })
}

fn shared_mappings_are_gone_in_the_child() {
    require_root();
    let dir = TempDir::new("shared-map");
    let path = dir.path().join("root-only");
    std::fs::write(&path, b"original").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // SAFETY: a fresh mapping of 8 bytes of an open file, and one anonymous
    // shared page; both stay mapped (never unmapped) in the test process.
    let (file_map, anon_map) = unsafe {
        let f = libc::mmap(
            std::ptr::null_mut(),
            8,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        let a = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert!(f != libc::MAP_FAILED && a != libc::MAP_FAILED);
        (f as usize, a as usize)
    };
    drop(file);
    // Control: a plain child as nobody, which cannot open the file, still
    // writes it through the inherited mapping.
    let control = plain_child_as_nobody(|| {
        let denied = std::fs::OpenOptions::new().write(true).open(&path).is_err();
        // SAFETY: the mapping is 8 writable bytes inherited from the parent.
        unsafe { std::ptr::copy_nonoverlapping(b"HACKED!!".as_ptr(), file_map as *mut u8, 8) };
        i32::from(!denied)
    });
    assert_eq!(control, 0, "control: nobody could open the root-only file");
    assert_eq!(std::fs::read(&path).unwrap(), b"HACKED!!", "control write");
    std::fs::write(&path, b"original").unwrap();
    // The fork-as child has neither mapping.
    let seen: (bool, bool) = ForkAs::user("nobody")
        .unwrap()
        .run(move || (mapped(file_map), mapped(anon_map)))
        .unwrap();
    assert_eq!(
        seen,
        (false, false),
        "(file, anonymous) shared mapping still mapped"
    );
    // And a write through the old address faults instead of reaching the file.
    let err = ForkAs::user("nobody")
        .unwrap()
        .run(move || {
            // SAFETY: deliberately writes through an address the child no
            // longer maps: the expected outcome is SIGSEGV.
            unsafe { std::ptr::write_volatile(file_map as *mut u8, b'X') };
        })
        .unwrap_err();
    assert!(
        matches!(err, ForkAsError::Signaled { signal, .. } if signal == libc::SIGSEGV),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"original");
    // Private mappings stay: the child still sees the parent's heap.
    let heap = vec![7u8; 1 << 20];
    let sum: u64 = ForkAs::user("nobody")
        .unwrap()
        .run(|| heap.iter().map(|&b| u64::from(b)).sum())
        .unwrap();
    assert_eq!(sum, 7 << 20);
}

fn personality_is_reset() {
    require_root();
    const QUERY: libc::c_ulong = 0xffff_ffff;
    // SAFETY: integer arguments; changes only this test process.
    let before = unsafe {
        libc::personality(libc::READ_IMPLIES_EXEC as libc::c_ulong);
        libc::personality(QUERY)
    };
    assert_eq!(before & libc::READ_IMPLIES_EXEC, libc::READ_IMPLIES_EXEC);
    let child: i32 = ForkAs::user("nobody")
        .unwrap()
        // SAFETY: the query value changes nothing.
        .run(|| unsafe { libc::personality(QUERY) })
        .unwrap();
    assert_eq!(child, 0, "the fork-as child kept personality {child:#x}");
}

fn working_directory_is_not_inherited() {
    require_root();
    // The caller works in secret/sub: secret is root's alone (0700), sub
    // and its file are readable. nobody cannot name the file by path, but
    // a child keeping the caller's working directory reads it relatively.
    let dir = TempDir::new("cwd");
    let secret = dir.path().join("secret");
    let sub = secret.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(sub.join("file"), "TOP SECRET").unwrap();
    std::fs::set_permissions(sub.join("file"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::env::set_current_dir(&sub).unwrap();
    let read = || std::fs::read_to_string("file").is_ok();
    // Control: a plain child as nobody, in the caller's directory.
    assert_eq!(plain_child_as_nobody(|| i32::from(!read())), 0, "control");
    let (found, cwd): (bool, String) = ForkAs::user("nobody")
        .unwrap()
        .run(move || {
            let cwd = std::fs::read_link("/proc/self/cwd")
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (read(), cwd)
        })
        .unwrap();
    assert!(
        !found,
        "the fork-as child read the file through the caller's directory"
    );
    assert_eq!(cwd, "/");
    std::env::set_current_dir("/").unwrap();
}

extern "C" fn note_signal(_: libc::c_int) {}

fn signal_handlers_are_reset() {
    require_root();
    // SAFETY: installs a handler that does nothing, for SIGUSR1, in this
    // test process.
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            note_signal as *const () as libc::sighandler_t,
        );
        libc::signal(libc::SIGUSR2, libc::SIG_IGN);
        // Control: the parent survives its own SIGUSR1 (the handler runs).
        assert_eq!(libc::raise(libc::SIGUSR1), 0);
    }
    let err = ForkAs::user("nobody")
        .unwrap()
        .run(|| {
            // SAFETY: signals to itself; ignored SIGUSR2 stays ignored, the
            // default action of SIGUSR1 ends the process.
            unsafe {
                libc::raise(libc::SIGUSR2);
                libc::raise(libc::SIGUSR1);
            }
        })
        .unwrap_err();
    assert!(
        matches!(err, ForkAsError::Signaled { signal, .. } if signal == libc::SIGUSR1),
        "the parent's SIGUSR1 handler ran in the child: {err:?}"
    );
}

fn prepared_sandbox_lets_the_child_abort() {
    require_root();
    let call = ForkAs::user("nobody")
        .unwrap()
        .sandbox(&Sandbox::new().promises("stdio").unwrap())
        .unwrap();
    // abort() signals the process itself (tgkill with its own pid): a
    // filter holding the preparing process's pid would answer SIGSYS.
    let err = call.run(|| -> u8 { std::process::abort() }).unwrap_err();
    assert!(
        matches!(err, ForkAsError::Signaled { signal, .. } if signal == libc::SIGABRT),
        "{err:?}"
    );
    // The same prepared sandbox serves the next child too, and holds there.
    let status: String = call
        .run(|| std::fs::read_to_string("/proc/self/status").unwrap_or_default())
        .unwrap_or_default();
    assert!(status.is_empty(), "stdio alone read /proc/self/status");
    let n: u32 = call.run(|| 41 + 1).unwrap();
    assert_eq!(n, 42);
}

fn prepared_sandbox_holds_in_a_grandchild() {
    require_root();
    let victim = support::Victim::start();
    let outside = victim.0;
    let call = ForkAs::user("nobody")
        .unwrap()
        .sandbox(&Sandbox::new().promises("stdio proc").unwrap())
        .unwrap();
    // The child forks twice. The first grandchild aborts (its own pid, not
    // the child's, nor the preparing process's): SIGABRT. The second
    // reports what Landlock's signal scope lets it signal — `proc` lets
    // the filter pass any kill, so this is Landlock alone: its parent (the
    // same domain) yes, the victim outside the domain no.
    let (signal, scope, seccomp): (i32, i32, String) = call
        .run(move || {
            let wait = |pid| {
                let mut status = 0;
                // SAFETY: `status` is a live local.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                status
            };
            // SAFETY: the fork-as child is single-threaded; the
            // grandchildren make integer-only calls and end in abort/_exit.
            let aborter = unsafe { libc::fork() };
            if aborter == 0 {
                std::process::abort();
            }
            let aborted = wait(aborter);
            // SAFETY: as above.
            let prober = unsafe { libc::fork() };
            if prober == 0 {
                // SAFETY: signal 0 only checks permission.
                let code = unsafe {
                    let parent_ok = libc::kill(libc::getppid(), 0) == 0;
                    let outside_refused = libc::kill(outside, 0) == -1 && errno() == libc::EPERM;
                    i32::from(!parent_ok) | i32::from(!outside_refused) << 1
                };
                // SAFETY: ends the grandchild at once.
                unsafe { libc::_exit(code) };
            }
            let probed = wait(prober);
            let seccomp = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let scope = if libc::WIFEXITED(probed) {
                libc::WEXITSTATUS(probed)
            } else {
                -1
            };
            (libc::WTERMSIG(aborted), scope, seccomp)
        })
        .unwrap();
    assert_eq!(signal, libc::SIGABRT, "the grandchild's abort()");
    assert_eq!(
        scope, 0,
        "grandchild: bit 0 = could not signal its parent, bit 1 = could signal outside"
    );
    assert!(seccomp.is_empty(), "stdio proc read /proc/self/status");
}

fn signals_to_others_refused_by_landlock_scope() {
    require_root();
    let victim = support::Victim::start();
    let pid = victim.0;
    let probe = move || -> i32 {
        // SAFETY: kill with signal 0 only checks permission.
        if unsafe { libc::kill(pid, 0) } == 0 {
            0
        } else {
            errno()
        }
    };
    // Control: as nobody, unsandboxed, the victim (also nobody) can be
    // signalled — so a refusal below is the sandbox's, not the uid's.
    let control: i32 = ForkAs::user("nobody").unwrap().run(probe).unwrap();
    assert_eq!(control, 0, "control: nobody could not signal nobody");
    // The filter lets kill with a positive pid through; Landlock's signal
    // scope refuses a process outside the child's domain.
    let sandboxed = ForkAs::user("nobody")
        .unwrap()
        .sandbox(&Sandbox::new().promises("stdio").unwrap())
        .unwrap();
    assert_eq!(sandboxed.run(probe).unwrap(), libc::EPERM);
    // ...and still lets the child signal itself.
    let own: i32 = sandboxed
        // SAFETY: signal 0 to itself only checks permission.
        .run(|| unsafe { libc::kill(libc::getpid(), 0) })
        .unwrap();
    assert_eq!(own, 0);
}

fn filter_refuses_group_and_broadcast_signals() {
    require_root();
    let sandboxed = ForkAs::user("nobody")
        .unwrap()
        .sandbox(&Sandbox::new().promises("stdio").unwrap())
        .unwrap();
    // Killed by the filter (SIGSYS), not refused by Landlock (EPERM): the
    // filter alone allows only a positive pid.
    for target in [0, -1] {
        let err = sandboxed
            // SAFETY: signal 0 only checks permission.
            .run(move || unsafe { libc::kill(target, 0) })
            .unwrap_err();
        assert!(
            matches!(err, ForkAsError::Signaled { signal, .. } if signal == libc::SIGSYS),
            "kill({target}, 0): {err:?}"
        );
    }
}
