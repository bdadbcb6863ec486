//! `privfork run` of real programs under OpenBSD's quiet allowances, soft
//! answers and the promises that mean something on Linux (issue 11, items
//! 2 and 3). Each test shows the allowed operation working and the
//! forbidden one failing, and says which layer refuses: an errno with the
//! program still running after a call the filter let through is
//! Landlock's; a SIGSYS, or an errno the filter answers for a call the
//! kernel would have done (a control shows it), is seccomp's. The tests
//! run as root (they drop to nobody) and fail loudly when a program they
//! use is missing.

#[path = "../../privfork/tests/time_limit/mod.rs"]
mod time_limit;
use time_limit::time_limit;

mod common;
use common::{code, privfork_run, random, stderr, stdout};

use std::os::unix::fs::PermissionsExt;

/// A directory of the test's own, writable by nobody, under `base`,
/// removed on drop.
struct Dir(std::path::PathBuf);

impl Dir {
    fn under(base: &str, tag: &str) -> Self {
        let p = std::path::Path::new(base).join(format!("privfork-ob-{tag}-{:016x}", random()));
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        Self(p)
    }
    fn new(tag: &str) -> Self {
        Self::under(std::env::temp_dir().to_str().unwrap(), tag)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
    fn join(&self, name: &str) -> String {
        format!("{}/{name}", self.path())
    }
    /// A file owned by nobody:nogroup.
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.join(name);
        std::fs::write(&p, text).unwrap();
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The program must be installed: a test that cannot run fails.
fn need(program: &str) -> &str {
    assert!(
        std::path::Path::new(program).is_file(),
        "{program} is not installed: this test needs it (apt-get install it)"
    );
    program
}

const PERL: &str = "/usr/bin/perl";

/// `privfork run -u nobody -p PROMISES [EXTRA...] -- perl -e CODE`.
fn perl(promises: &str, extra: &[&str], code: &str) -> std::process::Output {
    let mut args = vec!["-u", "nobody", "-p", promises];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", need(PERL), "-e", code]);
    privfork_run(&args)
}

/// What perl's `syscall` gave: `r=RESULT e=ERRNO`.
const SYSCALL_REPORT: &str = r#"print "r=$r e=", ($r < 0 ? $!+0 : 0), "\n";"#;

/// The result and errno a `perl -e` that ran `$r = syscall(...)` printed.
fn syscall_result(o: &std::process::Output) -> (i64, i32) {
    let out = stdout(o);
    let line = out
        .lines()
        .find(|l| l.starts_with("r="))
        .unwrap_or_else(|| panic!("no result: status {:?}, {}", o.status, stderr(o)));
    let mut parts = line.split(' ');
    let r = parts.next().unwrap()[2..].parse().unwrap();
    let e = parts.next().unwrap()[2..].parse().unwrap();
    (r, e)
}

fn killed_by_sigsys(o: &std::process::Output) -> bool {
    code(o) == 128 + libc::SIGSYS
}

// ---- quiet allowances: /dev/null

/// git opens /dev/null O_RDWR and perl reads it as the script of -e: both
/// start under stdio alone and under stdio rpath (the quiet opens, with
/// Landlock deciding).
#[test]
fn git_and_perl_start_with_dev_null() {
    let _limit = time_limit!();
    let git = if std::path::Path::new("/usr/local/bin/git").is_file() {
        "/usr/local/bin/git"
    } else {
        need("/usr/bin/git")
    };
    for promises in ["stdio", "stdio rpath"] {
        let o = privfork_run(&["-u", "nobody", "-p", promises, "--", git, "--version"]);
        assert_eq!(code(&o), 0, "git under {promises}: {}", stderr(&o));
        assert!(stdout(&o).starts_with("git version"), "{}", stdout(&o));
        let o = perl(promises, &[], "print 1");
        assert_eq!(code(&o), 0, "perl under {promises}: {}", stderr(&o));
        assert_eq!(stdout(&o), "1");
    }
}

/// `/dev/null` opens read-write under `stdio rpath` (privfork's
/// supervisor hands the program a /dev/null of its own: the path as
/// written, nothing else); another file nobody may write (by DAC),
/// unveiled `rw`, does not: without wpath a write open is the filter's to
/// refuse (here in errno mode, so perl reports it and goes on).
#[test]
fn dev_null_is_writable_but_no_other_file_without_wpath() {
    let _limit = time_limit!();
    let dir = Dir::new("devnull");
    let f = dir.file("f", "x");
    let code_text = format!(
        r#"open(N, "+<", "/dev/null") or die "null: $!"; print "null ok\n";
           if (open(F, "+<", "{f}")) {{ print "file opened\n" }} else {{ print "file: ", $!+0, "\n" }}"#
    );
    let unveil = format!("rw:{f}");
    let o = perl(
        "stdio rpath",
        &["-v", &unveil, "--mode", "errno"],
        &code_text,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("null ok\nfile: {}\n", libc::EPERM));
    // The control: with wpath the same unveil writes.
    let o = perl("stdio rpath wpath", &["-v", &unveil], &code_text);
    assert_eq!(stdout(&o), "null ok\nfile opened\n", "{}", stderr(&o));
}

/// An open that creates is still the filter's: without cpath (or
/// tmppath) it is a violation, even where Landlock would allow it.
#[test]
fn creating_without_cpath_is_still_a_violation() {
    let _limit = time_limit!();
    let dir = Dir::new("create");
    let code_text = format!(
        r#"open(F, ">", "{}") or die "$!"; print "made\n";"#,
        dir.join("new")
    );
    let unveil = format!("rwc:{}", dir.path());
    let o = perl("stdio rpath wpath", &["-v", &unveil], &code_text);
    assert!(killed_by_sigsys(&o), "{:?} {}", o.status, stderr(&o));
    let o = perl("stdio rpath wpath cpath", &["-v", &unveil], &code_text);
    assert_eq!(stdout(&o), "made\n", "{}", stderr(&o));
}

/// The time zone files are readable under every promise: /etc/localtime
/// and a zone file other than the one it names under stdio alone; a file
/// beside it in /etc is not (Landlock: the open passed the filter).
#[test]
fn time_zone_files_are_readable() {
    let _limit = time_limit!();
    let zone = need("/usr/share/zoneinfo/Europe/Paris");
    let local = std::fs::canonicalize("/etc/localtime").unwrap();
    assert_ne!(
        local,
        std::fs::canonicalize(zone).unwrap(),
        "pick another zone"
    );
    let code_text = format!(
        r#"for my $f ("/etc/localtime", "{zone}", "/etc/hostname") {{
        if (open(F, "<", $f)) {{ print "$f ok\n" }} else {{ print "$f ", $!+0, "\n" }} }}"#
    );
    let o = perl("stdio", &[], &code_text);
    assert_eq!(
        stdout(&o),
        format!(
            "/etc/localtime ok\n{zone} ok\n/etc/hostname {}\n",
            libc::EACCES
        ),
        "{}",
        stderr(&o)
    );
}

// ---- dns

/// getaddrinfo works under dns: the resolver's files are readable and
/// glibc's netlink probe is answered. Without dns, /etc/hosts stays closed
/// (Landlock: getent finds nothing and says so, exit 2).
#[test]
fn getent_ahosts_localhost_under_dns() {
    let _limit = time_limit!();
    let getent = need("/usr/bin/getent");
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath inet dns",
        "--",
        getent,
        "ahosts",
        "localhost",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("127.0.0.1"), "{}", stdout(&o));
    let o = perl(
        "stdio rpath",
        &[],
        r#"open(F, "<", "/etc/hosts") or die "$!\n";"#,
    );
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
}

/// The netlink probe (socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)) gets
/// EACCES under dns, and kills without it: the filter's answer (the
/// control shows nobody may create it).
#[test]
fn the_netlink_probe_is_answered_under_dns_only() {
    let _limit = time_limit!();
    let code_text = format!(
        "$r = syscall({}, 16, 3, 0); {SYSCALL_REPORT}",
        libc::SYS_socket
    );
    let control = std::process::Command::new(need(PERL))
        .args(["-e", &code_text])
        .output()
        .unwrap();
    assert!(syscall_result(&control).0 >= 0, "control");
    let o = perl("stdio dns", &[], &code_text);
    assert_eq!(syscall_result(&o), (-1, libc::EACCES), "{}", stderr(&o));
    let o = perl("stdio inet", &[], &code_text);
    assert!(killed_by_sigsys(&o), "{:?}", o.status);
}

/// curl fetches from a local python http.server by name (localhost, in
/// /etc/hosts) under stdio rpath inet dns, with the port allowed.
#[test]
fn curl_by_name_under_dns() {
    let _limit = time_limit!();
    let curl = need("/usr/bin/curl");
    let dir = Dir::new("curl");
    dir.file("hello.txt", "hello from the server\n");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Server(
        std::process::Command::new(need("/usr/bin/python3"))
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "http.server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("http://localhost:{port}/hello.txt");
    let port = port.to_string();
    let args = |promises| {
        privfork_run(&[
            "-u",
            "nobody",
            "-p",
            promises,
            "--connect",
            &port,
            "--",
            curl,
            "-sS",
            "--max-time",
            "5",
            &url,
        ])
    };
    let o = args("stdio rpath inet dns");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from the server\n");
    // curl (7.88) resolves "localhost" itself, without getaddrinfo, so the
    // refusal without dns is shown by getent and the netlink probe above.
}

// ---- soft answers

/// A pty this test makes, with a window size set: python3's
/// shutil.get_terminal_size() sees it under tty, and gets ENOTTY (its
/// fallback, 80x24) without tty — not a kill. A terminal ioctl the filter
/// answers: Landlock does not govern ioctls on an inherited fd.
#[test]
fn python_terminal_size_with_and_without_tty() {
    let _limit = time_limit!();
    let python = need("/usr/bin/python3");
    // SAFETY: integer-only calls and the NUL-terminated name ptsname gives.
    let (master, slave) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0);
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let slave = libc::open(libc::ptsname(master), libc::O_RDWR | libc::O_NOCTTY);
        assert!(slave >= 0);
        let ws = libc::winsize {
            ws_row: 45,
            ws_col: 123,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        assert_eq!(libc::ioctl(master, libc::TIOCSWINSZ, &ws), 0);
        (master, slave)
    };
    let dir = Dir::new("pty");
    let out = dir.join("size");
    let script = format!(
        "import shutil; open('{out}', 'w').write('%d %d' % tuple(shutil.get_terminal_size()))"
    );
    let run = |promises: &str| {
        let _ = std::fs::remove_file(&out);
        // SAFETY: `slave` is a live fd; dup gives the child's stdout its own.
        let stdout_fd = unsafe { libc::dup(slave) };
        assert!(stdout_fd >= 0);
        // SAFETY: a fresh fd this test owns.
        let stdout_file =
            unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(stdout_fd) };
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_privfork"))
            .args(["run", "-u", "nobody", "-p", promises, "--inherit-stdio"])
            .args([
                "-v",
                "r:/usr/lib/python3.11",
                "-v",
                &format!("rwc:{}", dir.path()),
            ])
            .args(["--", python, "-I", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(stdout_file)
            .output()
            .unwrap();
        (o, std::fs::read_to_string(&out).unwrap_or_default())
    };
    let (o, size) = run("stdio rpath wpath cpath tty");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(size, "123 45");
    let (o, size) = run("stdio rpath wpath cpath");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(size, "80 24", "the fallback: TIOCGWINSZ answered ENOTTY");
    // SAFETY: closing the fds this test opened.
    unsafe {
        libc::close(slave);
        libc::close(master);
    }
}

/// Start-up probes answered with an errno under stdio, each a call the
/// kernel would have done for nobody (the control): capget, statfs,
/// pkey_alloc, fsetxattr, TIOCGPGRP on a pipe is ENOTTY either way so it
/// is not here (the pty test shows tty queries). Set-id calls get the
/// kernel's own answer for a process without capabilities: success when
/// they change nothing (gunicorn's workers setuid to their own uid),
/// EPERM otherwise.
#[test]
fn start_up_probes_get_an_errno() {
    let _limit = time_limit!();
    // SAFETY of the perl code: syscall with integers and perl-owned buffers.
    let cases: &[(&str, String, i32)] = &[
        (
            "capget",
            format!(
                r#"$h = pack("LL", 0x20080522, 0); $d = "\0" x 24; $r = syscall({}, $h, $d);"#,
                libc::SYS_capget
            ),
            libc::EPERM,
        ),
        (
            "statfs",
            format!(
                r#"$p = "/"; $b = "\0" x 120; $r = syscall({}, $p, $b);"#,
                libc::SYS_statfs
            ),
            libc::EACCES,
        ),
        (
            "fsetxattr",
            format!(
                r#"open(N, "+<", "/dev/null") or die; $n = "user.x"; $v = "v"; $r = syscall({}, fileno(N), $n, $v, 1, 0);"#,
                libc::SYS_fsetxattr
            ),
            libc::ENOTSUP,
        ),
    ];
    for (what, call, errno) in cases {
        let code_text = format!("{call} {SYSCALL_REPORT}");
        let control = std::process::Command::new(need(PERL))
            .args(["-e", &code_text])
            .output()
            .unwrap();
        let (r, e) = syscall_result(&control);
        // fsetxattr on /dev/null: the kernel's own answer differs from the
        // filter's (EPERM on a device for user.*).
        assert!(r >= 0 || e != *errno, "control {what}: {r} {e}");
        let o = perl("stdio", &[], &code_text);
        assert_eq!(syscall_result(&o), (-1, *errno), "{what}: {}", stderr(&o));
    }
    // pkey_alloc: the kernel may lack protection keys (EINVAL), so only the
    // answer under the sandbox is checked.
    let code_text = format!(
        "$r = syscall({}, 0, 0); {SYSCALL_REPORT}",
        libc::SYS_pkey_alloc
    );
    let o = perl("stdio", &[], &code_text);
    assert_eq!(syscall_result(&o), (-1, libc::ENOSPC), "{}", stderr(&o));
    // Without id: the supervisor answers, as the kernel would.
    for (what, call, want) in [
        (
            "setuid to itself",
            format!("{}, 65534", libc::SYS_setuid),
            (0, 0),
        ),
        (
            "setgid to itself",
            format!("{}, 65534", libc::SYS_setgid),
            (0, 0),
        ),
        (
            "setresuid unchanged",
            format!("{}, -1, 65534, -1", libc::SYS_setresuid),
            (0, 0),
        ),
        (
            "setreuid to itself",
            format!("{}, 65534, 65534", libc::SYS_setreuid),
            (0, 0),
        ),
        (
            "setuid to root",
            format!("{}, 0", libc::SYS_setuid),
            (-1, libc::EPERM),
        ),
        (
            "setuid to -1",
            format!("{}, -1", libc::SYS_setuid),
            (-1, libc::EINVAL),
        ),
        (
            "setresgid to root",
            format!("{}, 0, 0, 0", libc::SYS_setresgid),
            (-1, libc::EPERM),
        ),
        (
            "setresuid half to root",
            format!("{}, -1, 0, -1", libc::SYS_setresuid),
            (-1, libc::EPERM),
        ),
        (
            "setgroups",
            format!("{}, 0, 0", libc::SYS_setgroups),
            (-1, libc::EPERM),
        ),
    ] {
        let o = perl(
            "stdio",
            &[],
            &format!("$r = syscall({call}); {SYSCALL_REPORT}"),
        );
        assert_eq!(syscall_result(&o), want, "{what}: {}", stderr(&o));
        let ids = perl(
            "stdio",
            &[],
            &format!("$r = syscall({call}); print \"$< $> $( $)\\n\";"),
        );
        assert!(
            stdout(&ids).starts_with("65534 65534 65534"),
            "{what} changed nothing: {}",
            stdout(&ids)
        );
    }
    // With id, setuid to itself is the kernel's (it works).
    let o = perl(
        "stdio id",
        &[],
        &format!(
            "$r = syscall({}, 65534); {SYSCALL_REPORT}",
            libc::SYS_setuid
        ),
    );
    assert_eq!(syscall_result(&o), (0, 0), "{}", stderr(&o));
}

/// gzip -k, xz -k and sed -i under stdio rpath wpath cpath fattr: their
/// fchown (giving the copy its owner back) is answered EPERM, not a kill.
/// xz says so (a warning, exit 2) and keeps the copy; with chown it is
/// done (exit 0). Landlock does not govern chown: the filter's answer.
#[test]
fn gzip_xz_and_sed_keep_going_without_chown() {
    let _limit = time_limit!();
    let dir = Dir::new("fattr");
    // Set-group-id, group root: a copy nobody makes here gets group root,
    // and giving it the original's group back (nogroup, nobody's own) is
    // an fchown the kernel allows nobody — one xz makes only then.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o2777)).unwrap();
    let unveil = format!("rwc:{}", dir.path());
    let run = |promises: &str, cmd: &[&str]| {
        let mut args = vec!["-u", "nobody", "-p", promises, "-v", &unveil, "--"];
        args.extend_from_slice(cmd);
        privfork_run(&args)
    };
    let f = dir.file("f.txt", "hello\n");
    let o = run(
        "stdio rpath wpath cpath fattr",
        &[need("/usr/bin/gzip"), "-k", &f],
    );
    assert_eq!(code(&o), 0, "gzip: {}", stderr(&o));
    assert!(std::path::Path::new(&dir.join("f.txt.gz")).is_file());
    let o = run(
        "stdio rpath wpath cpath fattr",
        &[need("/usr/bin/xz"), "-k", &f],
    );
    assert_eq!(code(&o), 2, "xz: a warning, not a kill: {}", stderr(&o));
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    assert!(std::path::Path::new(&dir.join("f.txt.xz")).is_file());
    std::fs::remove_file(dir.join("f.txt.xz")).unwrap();
    let o = run(
        "stdio rpath wpath cpath fattr chown",
        &[need("/usr/bin/xz"), "-k", &f],
    );
    assert_eq!(code(&o), 0, "xz with chown: {}", stderr(&o));
    let o = run(
        "stdio rpath wpath cpath fattr",
        &[need("/usr/bin/sed"), "-i", "s/hello/bye/", &f],
    );
    assert_eq!(code(&o), 0, "sed -i: {}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "bye\n");
    // Without fattr, fchown is a violation like any other.
    let o = run(
        "stdio rpath wpath cpath",
        &[need("/usr/bin/xz"), "-k", "-f", &f],
    );
    assert!(killed_by_sigsys(&o), "{:?} {}", o.status, stderr(&o));
}

// ---- promises

/// tmppath: a file made, written and removed in /tmp without cpath; a
/// directory elsewhere unveiled rwc is not written (Landlock: the open
/// passed the filter under tmppath); without tmppath, creating in /tmp is
/// a violation (the filter).
#[test]
fn tmppath_is_tmp_only() {
    let _limit = time_limit!();
    let elsewhere = Dir::under("/dev/shm", "tmppath");
    let name = format!("/tmp/privfork-tmppath-{:016x}", random());
    let make = |path: &str| {
        format!(
            r#"if (open(F, ">", "{path}")) {{ print F "x"; close F; unlink "{path}" or die "unlink: $!"; print "ok\n" }} else {{ print "refused ", $!+0, "\n" }}"#
        )
    };
    let unveil = format!("rwc:{}", elsewhere.path());
    let o = perl("stdio tmppath", &["-v", &unveil], &make(&name));
    assert_eq!(stdout(&o), "ok\n", "{}", stderr(&o));
    assert!(!std::path::Path::new(&name).exists());
    let o = perl(
        "stdio tmppath",
        &["-v", &unveil],
        &make(&elsewhere.join("f")),
    );
    assert_eq!(
        stdout(&o),
        format!("refused {}\n", libc::EACCES),
        "{}",
        stderr(&o)
    );
    let o = perl("stdio rpath", &[], &make(&name));
    assert!(killed_by_sigsys(&o), "{:?} {}", o.status, stderr(&o));
}

/// getpw: getent passwd and id by name under stdio getpw; without it
/// /etc/passwd stays closed (Landlock) and getent finds nobody (exit 2).
#[test]
fn getpw_reads_the_user_database() {
    let _limit = time_limit!();
    let getent = need("/usr/bin/getent");
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio getpw",
        "--",
        getent,
        "passwd",
        "root",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).starts_with("root:x:0:0:"), "{}", stdout(&o));
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio getpw",
        "--",
        need("/usr/bin/id"),
        "-un",
    ]);
    assert_eq!(stdout(&o).trim(), "nobody", "{}", stderr(&o));
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--",
        getent,
        "passwd",
        "root",
    ]);
    assert_eq!(code(&o), 2, "{} {}", stdout(&o), stderr(&o));
}

/// ps: busybox ps lists pid 1 under stdio ps; without ps /proc stays
/// closed (Landlock: busybox says it cannot open /proc).
#[test]
fn ps_lists_processes() {
    let _limit = time_limit!();
    let busybox = need("/usr/bin/busybox");
    let o = privfork_run(&["-u", "nobody", "-p", "stdio ps", "--", busybox, "ps"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).lines().any(|l| l.trim_start().starts_with("1 ")),
        "{}",
        stdout(&o)
    );
    let o = privfork_run(&["-u", "nobody", "-p", "stdio rpath", "--", busybox, "ps"]);
    assert!(stderr(&o).contains("can't open '/proc'"), "{}", stderr(&o));
}

/// vminfo: busybox free reads /proc/meminfo under stdio vminfo; without
/// it the file stays closed (Landlock).
#[test]
fn vminfo_reads_memory_figures() {
    let _limit = time_limit!();
    let busybox = need("/usr/bin/busybox");
    let o = privfork_run(&["-u", "nobody", "-p", "stdio vminfo", "--", busybox, "free"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("Mem:"), "{}", stdout(&o));
    let o = privfork_run(&["-u", "nobody", "-p", "stdio rpath", "--", busybox, "free"]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("/proc/meminfo"), "{}", stderr(&o));
}

/// mcast: a multicast option on a UDP socket under stdio inet mcast; under
/// inet alone it is a violation (the filter; Landlock has no say in
/// socket options). An ordinary IP option stays inet's.
#[test]
fn multicast_options_need_mcast() {
    let _limit = time_limit!();
    let sock = format!(
        "$s = syscall({}, 2, 2, 0); $s >= 0 or die;",
        libc::SYS_socket
    );
    let opt = |name: i32| {
        format!(
            r#"{sock} $v = pack("i", 1); $r = syscall({}, $s, 0, {name}, $v, 4); {SYSCALL_REPORT}"#,
            libc::SYS_setsockopt
        )
    };
    let o = perl("stdio inet mcast", &[], &opt(libc::IP_MULTICAST_TTL));
    assert_eq!(syscall_result(&o), (0, 0), "{}", stderr(&o));
    let o = perl("stdio inet", &[], &opt(libc::IP_MULTICAST_TTL));
    assert!(killed_by_sigsys(&o), "{:?} {}", o.status, stderr(&o));
    let o = perl("stdio inet", &[], &opt(libc::IP_TOS));
    assert_eq!(syscall_result(&o), (0, 0), "{}", stderr(&o));
}

/// unveil: the program narrows itself with Landlock (a ruleset handling
/// read_file and no rule: /dev/zero, readable before, is refused after);
/// without unveil the landlock calls are violations.
#[test]
fn unveil_lets_the_program_narrow_itself() {
    let _limit = time_limit!();
    let code_text = format!(
        r#"open(Z, "<", "/dev/zero") or die "before: $!"; close Z;
           $attr = pack("Q", 4); $fd = syscall({create}, $attr, 8, 0); $fd >= 0 or die "create: $!";
           syscall({restrict}, $fd, 0) == 0 or die "restrict: $!";
           if (open(Z, "<", "/dev/zero")) {{ print "still open\n" }} else {{ print "after ", $!+0, "\n" }}"#,
        create = libc::SYS_landlock_create_ruleset,
        restrict = libc::SYS_landlock_restrict_self,
    );
    let o = perl("stdio unveil", &[], &code_text);
    assert_eq!(
        stdout(&o),
        format!("after {}\n", libc::EACCES),
        "{}",
        stderr(&o)
    );
    let o = perl("stdio", &[], &code_text);
    assert!(killed_by_sigsys(&o), "{:?} {}", o.status, stderr(&o));
}

/// error: a violation returns EPERM and the program goes on.
#[test]
fn error_turns_violations_into_eperm() {
    let _limit = time_limit!();
    let code_text = format!(
        "$r = syscall({}, 2, 1, 0); {SYSCALL_REPORT}",
        libc::SYS_socket
    );
    let o = perl("stdio error", &[], &code_text);
    assert_eq!(syscall_result(&o), (-1, libc::EPERM), "{}", stderr(&o));
    let o = perl("stdio", &[], &code_text);
    assert!(killed_by_sigsys(&o), "{:?}", o.status);
}

/// OpenBSD promises privfork does not provide are refused by name, with
/// the reason, exit 121.
#[test]
fn refused_openbsd_promises_are_named() {
    let _limit = time_limit!();
    for name in [
        "tape",
        "settime",
        "pf",
        "route",
        "wroute",
        "audio",
        "video",
        "bpf",
        "disklabel",
        "drm",
        "vmm",
    ] {
        let o = privfork_run(&[
            "-u",
            "nobody",
            "-p",
            &format!("stdio {name}"),
            "--",
            "/bin/true",
        ]);
        assert_eq!(code(&o), 121, "{name}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(name) && stderr(&o).contains("OpenBSD promise"),
            "{name}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn the_locale_named_by_lang_loads() {
    let _limit = time_limit!();
    // LANG=C.UTF-8 passes to the program; its locale files are a quiet
    // allowance, so perl sets it without a warning (Landlock alone would
    // refuse the files: perl warns "Setting locale failed").
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_privfork"))
        .args([
            "run",
            "-u",
            "nobody",
            "-p",
            "stdio",
            "--",
            need("/usr/bin/perl"),
        ])
        .args(["-e", "print qq(hi\\n)"])
        .env("LANG", "C.UTF-8")
        .env_remove("LC_ALL")
        .env_remove("LC_CTYPE")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "hi\n", "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "perl warns when it cannot set the locale");
}
