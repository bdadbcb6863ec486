//! `privfork run`, as a user runs it. These tests run as root (they drop
//! to nobody) and fail loudly otherwise.

#[path = "../../privfork/tests/time_limit/mod.rs"]
mod time_limit;
use time_limit::time_limit;

mod common;
use common::{Dir, code, privfork_run, privfork_with_default_signals, pty, stderr, stdout};

use std::process::{Command, Output};

#[test]
fn dynamic_program_starts_as_nobody_under_stdio() {
    let _limit = time_limit!();
    let o = privfork_run(&["-u", "nobody", "-p", "stdio", "--", "/bin/true"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn runs_as_the_user() {
    let _limit = time_limit!();
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--",
        "/usr/bin/id",
        "-u",
    ]);
    assert_eq!(stdout(&o).trim(), "65534", "{}", stderr(&o));
}

#[test]
fn exit_status_and_signals_pass_through() {
    let _limit = time_limit!();
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--",
        "/bin/sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath proc",
        "--",
        "/bin/sh",
        "-c",
        "kill -9 $$",
    ]);
    assert_eq!(code(&o), 128 + 9, "{}", stderr(&o));
}

#[test]
fn the_program_cannot_exec_again() {
    let _limit = time_limit!();
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--",
        "/bin/sh",
        "-c",
        "exec /bin/true",
    ]);
    // Killed, as for any refused call, and named: the supervisor keeps
    // its listener and refuses every exec after the first.
    assert_eq!(code(&o), 128 + libc::SIGSYS, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(r#"refused execve("/bin/true") in sh"#)
            && stderr(&o).contains("a second exec"),
        "{}",
        stderr(&o)
    );
    // In errno mode the shell sees EPERM (and exits 126, as sh does).
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--mode",
        "errno",
        "--",
        "/bin/sh",
        "-c",
        "exec /bin/true",
    ]);
    assert_eq!(code(&o), 126, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    // Unless exec is promised.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath exec",
        "-v",
        "rx:/usr/bin",
        "--",
        "/bin/sh",
        "-c",
        "exec /bin/true",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn violation_modes() {
    let _limit = time_limit!();
    let dir = Dir::new("modes");
    let target = format!("echo hi > {}/f", dir.path());
    // kill: SIGSYS.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--",
        "/bin/sh",
        "-c",
        &target,
    ]);
    assert_eq!(code(&o), 128 + libc::SIGSYS, "{}", stderr(&o));
    // errno: the shell sees EPERM and says so.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--mode",
        "errno",
        "--",
        "/bin/sh",
        "-c",
        &target,
    ]);
    assert!(stderr(&o).contains("not permitted"), "{}", stderr(&o));
    // log: names the call and the promises that allow it.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--mode",
        "log",
        "--",
        "/bin/sh",
        "-c",
        &target,
    ]);
    let e = stderr(&o);
    assert!(e.contains("openat") && e.contains("cpath"), "{e}");
    assert!(!dir.0.join("f").exists());
    // The error promise, without --mode: EPERM, as pledge(2)'s "error".
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath error",
        "--",
        "/bin/sh",
        "-c",
        &target,
    ]);
    assert_ne!(code(&o), 128 + libc::SIGSYS, "{}", stderr(&o));
    assert!(stderr(&o).contains("not permitted"), "{}", stderr(&o));
    // --mode still wins.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath error",
        "--mode",
        "kill",
        "--",
        "/bin/sh",
        "-c",
        &target,
    ]);
    assert_eq!(code(&o), 128 + libc::SIGSYS, "{}", stderr(&o));
    assert!(!dir.0.join("f").exists());
}

#[test]
fn files_in_the_unveiled_directory_only() {
    let _limit = time_limit!();
    let dir = Dir::new("files");
    let script = format!(
        "echo hello > {d}/f && cat {d}/f && mkdir {d}/sub && mv {d}/f {d}/sub/g && rm {d}/sub/g && rmdir {d}/sub",
        d = dir.path()
    );
    let unveil = format!("rwc:{}", dir.path());
    // The shell runs cat, mkdir, mv...: it needs proc and exec, and the
    // programs it runs need unveiling for execution (each file: privfork
    // then unveils their libraries too).
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath wpath cpath proc exec",
        "-v",
        &unveil,
        "-v",
        "rx:/usr/bin/cat",
        "-v",
        "rx:/usr/bin/mkdir",
        "-v",
        "rx:/usr/bin/mv",
        "-v",
        "rx:/usr/bin/rm",
        "-v",
        "rx:/usr/bin/rmdir",
        "--",
        "/bin/sh",
        "-c",
        &script,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "hello");
    // Outside it: Landlock refuses.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath wpath cpath",
        "-v",
        &unveil,
        "--",
        "/bin/cat",
        "/etc/hostname",
    ]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
}

#[test]
fn the_program_sees_its_sandbox() {
    let _limit = time_limit!();
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "-v",
        "r:/proc",
        "--",
        "/bin/cat",
        "/proc/self/status",
    ]);
    let s = stdout(&o);
    let field = |n: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(n))
            .unwrap_or_else(|| panic!("no {n} in {s}; stderr {}", stderr(&o)))
            .trim()
            .to_owned()
    };
    assert_eq!(field("Seccomp:"), "2");
    assert_eq!(field("NoNewPrivs:"), "1");
    for set in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(set), "0000000000000000", "{set}");
    }
    assert_eq!(field("Uid:"), "65534\t65534\t65534\t65534");
}

#[test]
fn bad_input_has_its_own_code_and_message() {
    let _limit = time_limit!();
    for (args, want_code, want_text) in [
        (vec!["-p", "stdio bogus", "--", "/bin/true"], 121, "bogus"),
        (vec!["-p", "rpath", "--", "/bin/true"], 121, "stdio"),
        (vec!["-v", "rz:/tmp", "--", "/bin/true"], 122, "rz:/tmp"),
        (
            vec!["-v", "r:/no/such/pf", "--", "/bin/true"],
            122,
            "/no/such/pf",
        ),
        (
            vec!["-u", "no-such-user-pf", "--", "/bin/true"],
            123,
            "no-such-user-pf",
        ),
        (vec!["--", "/no/such/prog-pf"], 127, "/no/such/prog-pf"),
        (vec!["--", "no-such-prog-pf"], 127, "no-such-prog-pf"),
    ] {
        // As root, -u is required (checked on its own below).
        let mut args = args;
        if args[0] != "-u" {
            args.splice(0..0, ["-u", "nobody"]);
        }
        let o = privfork_run(&args);
        assert_eq!(code(&o), want_code, "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.lines().count() == 1 && e.contains(want_text),
            "{args:?}: {e}"
        );
    }
}

#[test]
fn fds_left_open_by_the_caller_do_not_reach_the_program() {
    let _limit = time_limit!();
    // A root-only file open on fd 7 in privfork's caller: the program must
    // not be able to read it through the inherited fd.
    let dir = Dir::new("fds");
    let secret = dir.0.join("secret");
    std::fs::write(&secret, "top secret").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let script = format!(
        "exec 7<{} && exec {} run -u nobody -p 'stdio rpath' -- /bin/sh -c 'read l <&7; echo \"got:$l\"'",
        secret.display(),
        env!("CARGO_BIN_EXE_privfork")
    );
    let o = Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(!out.contains("top secret"), "the program read fd 7: {out}");
    assert!(
        stderr(&o).contains("7"),
        "expected a bad-fd error: {}",
        stderr(&o)
    );
}

#[test]
fn scripts_run_when_their_interpreter_is_unveiled() {
    let _limit = time_limit!();
    let dir = Dir::new("script");
    // Only root may write where the program lies (see run_loader.rs).
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = dir.0.join("s.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 5\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = script.to_str().unwrap();
    // The script names its interpreter; privfork does not unveil what a
    // script names. Without the caller's unveil: cannot execute.
    let o = privfork_run(&["-u", "nobody", "-p", "stdio rpath", "--", path]);
    assert_eq!(code(&o), 126, "{}", stderr(&o));
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "-v",
        "rx:/bin/sh",
        "--",
        path,
    ]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
}

#[test]
fn root_must_name_the_user() {
    let _limit = time_limit!();
    // Without -u, root's program would run as uid 0.
    for args in [
        vec!["-p", "stdio", "--", "/bin/true"],
        vec!["-g", "nogroup", "-p", "stdio", "--", "/bin/true"],
    ] {
        let o = privfork_run(&args);
        assert_eq!(code(&o), 123, "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.lines().count() == 1 && e.contains("-u nobody"), "{e}");
    }
    // Nor as root by name or number.
    for user in ["root", "0"] {
        let o = privfork_run(&["-u", user, "-p", "stdio", "--", "/bin/true"]);
        assert_eq!(code(&o), 123, "-u {user}: {}", stderr(&o));
        assert!(stderr(&o).contains("-u nobody"), "{}", stderr(&o));
    }
}

/// Waits (up to 20 s) until `path` holds a pid, and returns it.
fn pid_in(path: &std::path::Path) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pid in {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Whether the process behind `pidfd` has exited (its pidfd polls
/// readable), without waiting.
fn exited(pidfd: &std::os::fd::OwnedFd) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&zero)).unwrap() == 1
}

/// The processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) {
                found.push(format!("{pid}: {cmd}"));
            }
        }
    }
    found
}

/// Promises and unveils for a shell that starts other programs and writes
/// in `dir`.
fn shell_args(dir: &Dir) -> Vec<String> {
    [
        "-u",
        "nobody",
        "-p",
        "stdio rpath wpath cpath proc exec",
        "-v",
        "rx:/usr/bin",
        // The programs the shell starts from /usr/bin: their libraries
        // (privfork resolves only those of files unveiled one by one).
        "-v",
        "r:/usr/lib",
        "-v",
        "rw:/dev/null",
        "-v",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("rwc:{}", dir.path()),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
    ])
    .collect()
}

#[test]
fn nothing_the_program_started_outlives_it() {
    let _limit = time_limit!();
    let dir = Dir::new("reap");
    let d = dir.path();
    // A grandchild in a session of its own, and a double-forked daemon;
    // the program waits until both are up and the test has their pidfds.
    let script = format!(
        "setsid /bin/sh -c 'echo $$ > {d}/p1.t && mv {d}/p1.t {d}/p1; exec sleep 1000' & \
         (sleep 1000 & echo $! > {d}/p2.t && mv {d}/p2.t {d}/p2) & \
         while [ ! -e {d}/go ]; do sleep 0.01; done; echo main done"
    );
    let mut args = shell_args(&dir);
    args.push(script);
    let child = Command::new(env!("CARGO_BIN_EXE_privfork"))
        .arg("run")
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pidfds: Vec<_> = ["p1", "p2"]
        .iter()
        .map(|f| {
            let pid = pid_in(&dir.0.join(f));
            let fd = rustix::process::pidfd_open(
                rustix::process::Pid::from_raw(pid).unwrap(),
                rustix::process::PidfdFlags::empty(),
            )
            .unwrap();
            // Still running, and in a session other than privfork's.
            assert!(!exited(&fd), "{f} ended early");
            (pid, fd)
        })
        .collect();
    std::fs::write(dir.0.join("go"), "").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "main done\n");
    for (pid, fd) in &pidfds {
        assert!(exited(fd), "pid {pid} outlived privfork run");
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}

#[test]
fn descendants_die_even_when_the_program_exits_at_once() {
    let _limit = time_limit!();
    let dir = Dir::new("reap-now");
    let marker = format!("1000.{}0", std::process::id());
    let script = format!(
        "setsid sleep {marker} & (sleep {marker} &) ; (sleep {marker} & exec sleep {marker}) & exit 0"
    );
    for _ in 0..5 {
        let mut args = shell_args(&dir);
        args.push(script.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = privfork_run(&args);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let left = processes_with(&marker);
        assert!(left.is_empty(), "still running: {left:?}");
    }
    // What a user types: the sleep dies with the shell.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath proc exec",
        "-v",
        "rx:/usr/bin",
        "-v",
        "rw:/dev/null",
        "--",
        "/bin/sh",
        "-c",
        &format!("sleep {marker} & echo started"),
    ]);
    assert_eq!(stdout(&o), "started\n", "{}", stderr(&o));
    assert!(processes_with(&marker).is_empty());
}

#[test]
fn log_mode_returns_when_the_program_exits() {
    let _limit = time_limit!();
    let start = std::time::Instant::now();
    // The daemon left behind keeps the filter (and its listener) alive.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath proc exec",
        "-v",
        "rx:/usr/bin",
        "--mode",
        "log",
        "--",
        "/bin/sh",
        "-c",
        "(sleep 1000 &) ; exit 4",
    ]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "log mode waited for the daemon"
    );
}

/// Everything the pty's master has to read now.
fn drain(master: &std::os::fd::OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = rustix::io::read(master, &mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).replace("\r\n", "\n")
}

#[test]
fn the_callers_terminal_is_not_the_programs() {
    let _limit = time_limit!();
    let (master, slave) = pty();
    let run = |extra: &[&str]| {
        let st = Command::new(env!("CARGO_BIN_EXE_privfork"))
            .args(["run", "-u", "nobody", "-p", "stdio rpath tty"])
            .args(extra)
            .args([
                "--",
                "/usr/bin/readlink",
                "/proc/self/fd/0",
                "/proc/self/fd/1",
                "/proc/self/fd/2",
            ])
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap())
            .status()
            .unwrap();
        assert!(st.success(), "{st:?}: {}", drain(&master));
        drain(&master)
    };
    let tty = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let tty = tty.to_str().unwrap();
    // privfork's stdio is all the terminal; the program's none of it.
    let out = run(&[]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "/dev/null", "{out}");
    assert!(
        lines[1].starts_with("pipe:") && lines[2].starts_with("pipe:"),
        "{out}"
    );
    assert!(!out.contains(tty), "{out}");
    // Unless asked for (--inherit-stdio is the old name of --tty).
    for flag in ["--tty", "--inherit-stdio"] {
        let out = run(&[flag]);
        assert_eq!(out, format!("{tty}\n{tty}\n{tty}\n"), "{flag}");
    }
}

#[test]
fn output_is_relayed_intact() {
    let _limit = time_limit!();
    let dir = Dir::new("relay");
    // 3 MB holding every byte value, in an order that is not periodic.
    let mut blob = Vec::with_capacity(3 << 20);
    let mut x: u32 = 1;
    while blob.len() < 3 << 20 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        blob.extend_from_slice(&x.to_le_bytes());
    }
    let file = dir.0.join("blob");
    std::fs::write(&file, &blob).unwrap();
    let f = file.to_str().unwrap();
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath proc exec",
        "-v",
        "rx:/usr/bin",
        "-v",
        &format!("r:{f}"),
        "--",
        "/bin/sh",
        "-c",
        &format!("cat {f}; cat {f} >&2; echo tail; exit 3"),
    ]);
    assert_eq!(code(&o), 3, "{}", String::from_utf8_lossy(&o.stderr[..200]));
    let mut want = blob.clone();
    want.extend_from_slice(b"tail\n");
    assert!(
        o.stdout == want,
        "stdout differs ({} bytes)",
        o.stdout.len()
    );
    assert!(
        o.stderr == blob,
        "stderr differs ({} bytes)",
        o.stderr.len()
    );
    // Bytes arrive as written, NULs and all, without a newline added.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio",
        "--",
        "/usr/bin/printf",
        "a\\000b\\001",
    ]);
    assert_eq!(o.stdout, b"a\0b\x01");
}

#[test]
fn stdio_flags_and_appending_logs_survive_the_program() {
    let _limit = time_limit!();
    let dir = Dir::new("flags");
    // stdin: a pipe privfork shares with the program, which makes it
    // non-blocking; stdout: a log opened for appending, which the program
    // tries to truncate and make non-appending.
    let log = dir.0.join("log");
    std::fs::write(&log, "kept\n").unwrap();
    let out = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let (r, w) = rustix::pipe::pipe().unwrap();
    let keep_r = rustix::io::dup(&r).unwrap();
    let code_py = "import os, fcntl\n\
                   os.set_blocking(0, False)\n\
                   print('nonblocking' if not os.get_blocking(0) else 'blocking', flush=True)\n\
                   fcntl.fcntl(1, fcntl.F_SETFL, 0)\n\
                   try:\n    os.ftruncate(1, 0)\nexcept OSError as e:\n    print('truncate:', e.strerror, flush=True)\n";
    let o = Command::new(env!("CARGO_BIN_EXE_privfork"))
        .args([
            "run",
            "-u",
            "nobody",
            "-p",
            "stdio rpath",
            // Python's standard library (its libraries are resolved).
            "-v",
            "r:/usr/lib/python3.11",
            "--",
            "/usr/bin/python3",
            "-c",
            code_py,
        ])
        .stdin(std::process::Stdio::from(r))
        .stdout(out)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    drop(w);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let flags = rustix::fs::fcntl_getfl(&keep_r).unwrap();
    assert!(
        !flags.contains(rustix::fs::OFlags::NONBLOCK),
        "stdin left non-blocking"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("kept\nnonblocking\ntruncate:"), "{text}");
    // The same with privfork's own stdio handed over: restored as well.
    let (r, w) = rustix::pipe::pipe().unwrap();
    let keep_r = rustix::io::dup(&r).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_privfork"))
        .args([
            "run",
            "-u",
            "nobody",
            "-p",
            "stdio rpath",
            "-v",
            "r:/usr/lib/python3.11",
            "--inherit-stdio",
            "--",
        ])
        .args([
            "/usr/bin/python3",
            "-c",
            "import os; os.set_blocking(0, False); os.set_blocking(1, False)",
        ])
        .stdin(std::process::Stdio::from(r))
        .output()
        .unwrap();
    drop(w);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        !rustix::fs::fcntl_getfl(&keep_r)
            .unwrap()
            .contains(rustix::fs::OFlags::NONBLOCK)
    );
}

/// `privfork run ARGS` on a simulated kernel without Landlock: the test
/// installs, in the forked child before it executes privfork, a seccomp
/// filter answering ENOSYS to landlock_create_ruleset, landlock_add_rule
/// and landlock_restrict_self (x86_64: 444, 445, 446). Nothing in privfork
/// knows about the simulation.
fn privfork_run_without_landlock(args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let rules = [444i64, 445, 446].map(|nr| (nr, Vec::new())).into();
    let filter = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(libc::ENOSYS as u32),
        seccompiler::TargetArch::x86_64,
    )
    .unwrap();
    let prog: seccompiler::BpfProgram = filter.try_into().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_privfork"));
    cmd.arg("run").args(args);
    // SAFETY: the closure runs in the forked child of a multithreaded
    // process; it only makes the prctl and seccomp system calls of
    // `apply_filter` on a program compiled beforehand (no allocation, no
    // lock), and builds an error value only when they fail.
    unsafe {
        cmd.pre_exec(move || {
            seccompiler::apply_filter(&prog).map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
    cmd.output().expect("run privfork")
}

#[test]
fn a_kernel_without_landlock_is_refused_unless_best_effort() {
    let _limit = time_limit!();
    let dir = Dir::new("nolandlock");
    let marker = dir.0.join("ran");
    let script = format!("echo ran > {}", marker.display());
    let args = [
        "-u",
        "nobody",
        "-p",
        "stdio rpath wpath cpath",
        "-v",
        &format!("rwc:{}", dir.path()),
        "--",
        "/bin/sh",
        "-c",
        &script,
    ];
    // The simulation works: Landlock is gone for privfork.
    let o = privfork_run_without_landlock(&args);
    assert_eq!(code(&o), 118, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.lines().count() == 1 && e.contains("cannot enforce") && e.contains("--best-effort"),
        "{e}"
    );
    assert!(!marker.exists(), "the program ran unconfined");
    // --best-effort runs it, and says what is missing.
    let mut best = vec!["--best-effort"];
    best.extend_from_slice(&args);
    let o = privfork_run_without_landlock(&best);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: landlock enforced None"),
        "{}",
        stderr(&o)
    );
    assert!(marker.exists());
    // The control: the same command on the real kernel, without the flag.
    std::fs::remove_file(&marker).unwrap();
    let o = privfork_run(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
}

/// Without Landlock (`--best-effort` on a simulated kernel without it)
/// there are no quiet opens: the filter alone decides opens again, so a
/// write-open under stdio rpath is a violation (with the quiet opens and
/// no Landlock behind them it would write the file). The control: on the
/// real kernel Landlock refuses it (EACCES, the program goes on).
#[test]
fn no_quiet_opens_without_landlock() {
    let _limit = time_limit!();
    assert!(
        std::path::Path::new("/usr/bin/perl").is_file(),
        "needs perl"
    );
    let dir = Dir::new("noquiet");
    let f = dir.0.join("f");
    std::fs::write(&f, "x").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let code_text = format!(
        r#"if (open(F, "+<", "{}")) {{ print F "written"; print "opened\n" }} else {{ print "refused ", $!+0, "\n" }}"#,
        f.display()
    );
    let unveil = format!("rw:{}", f.display());
    let args = [
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "-v",
        &unveil,
        "--",
        "/usr/bin/perl",
        "-e",
        &code_text,
    ];
    let mut best = vec!["--best-effort"];
    best.extend_from_slice(&args);
    let o = privfork_run_without_landlock(&best);
    assert_eq!(
        code(&o),
        128 + libc::SIGSYS,
        "{} {}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "x");
    // With Landlock too: the quiet opens are read-only, a write open is
    // the filter's to refuse (Landlock does not govern pipes and memfds
    // reopened through /proc/self/fd).
    let o = privfork_run(&args);
    assert_eq!(code(&o), 128 + libc::SIGSYS, "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "x");
    // A read-only open of a file not unveiled passes the filter there,
    // and Landlock refuses it.
    let read = format!(
        r#"if (open(F, "<", "{}")) {{ print "opened\n" }} else {{ print "refused ", $!+0, "\n" }}"#,
        dir.0.join("other").display()
    );
    std::fs::write(dir.0.join("other"), "x").unwrap();
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--",
        "/usr/bin/perl",
        "-e",
        &read,
    ]);
    assert_eq!(
        stdout(&o),
        format!("refused {}\n", libc::EACCES),
        "{}",
        stderr(&o)
    );
}

/// Runs `script` under `privfork run` with a shell that may start
/// programs, waits until two processes carry `marker`, sends privfork
/// `signal`, and returns how privfork ended.
fn signal_a_running_tree(script: &str, marker: &str, signal: rustix::process::Signal) -> Output {
    let child = privfork_with_default_signals()
        .args(["run", "-u", "nobody", "-p", "stdio rpath proc exec"])
        .args([
            "-v",
            "rx:/usr/bin",
            "-v",
            "rw:/dev/null",
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Both sleeps exec'd (privfork's and the shell's command lines hold the
    // marker too, and so does a forked shell not yet exec'd).
    let sleeping = || {
        processes_with(marker)
            .iter()
            .filter(|p| {
                p.split_once(": ")
                    .is_some_and(|(_, cmd)| cmd.starts_with("sleep "))
            })
            .count()
    };
    while sleeping() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sleeps never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn an_interrupt_reaches_the_program_and_ends_its_tree() {
    let _limit = time_limit!();
    let marker = format!("1000.{}1", std::process::id());
    let o = signal_a_running_tree(
        &format!("sleep {marker} & sleep {marker}"),
        &marker,
        rustix::process::Signal::INT,
    );
    // The shell's foreground sleep took the SIGINT, as from a terminal;
    // the background one (SIGINT ignored) went with the tree.
    assert_eq!(code(&o), 128 + libc::SIGINT, "{}", stderr(&o));
    assert!(processes_with(&marker).is_empty());
}

/// fattr and chown act on fds only, never set setuid/setgid bits, and
/// never reach a file outside the unveiled paths (Landlock does not govern
/// chmod, chown or utimes; the filter allows only their fd forms).
#[test]
fn fattr_and_chown_stay_inside_the_unveiled_paths() {
    let _limit = time_limit!();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let inside = Dir::new("fattr-in");
    let outside = Dir::new("fattr-out");
    // Both files belong to nobody: only the sandbox keeps the program
    // from changing the one outside.
    let mine = inside.0.join("mine");
    let theirs = outside.0.join("theirs");
    for f in [&mine, &theirs] {
        std::fs::write(f, "x").unwrap();
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(f, Some(65534), Some(65534)).unwrap();
    }
    // A root file inside, and a link inside to the file outside.
    let roots = inside.0.join("roots");
    std::fs::write(&roots, "x").unwrap();
    std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = inside.0.join("link");
    std::os::unix::fs::symlink(&theirs, &link).unwrap();
    // nobody's file in a directory only root may search, inside.
    let closed = inside.0.join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let hidden = closed.join("hidden");
    std::fs::write(&hidden, "x").unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&hidden, Some(65534), Some(65534)).unwrap();
    let script = format!(
        r#"import os
def t(name, f):
    try:
        f(); print(name, "ok")
    except OSError as e:
        print(name, e.errno)
fd = os.open("{mine}", os.O_RDWR)
t("fchmod", lambda: os.fchmod(fd, 0o600))
t("fchmod-suid", lambda: os.fchmod(fd, 0o4755))
t("fchmod-sgid", lambda: os.fchmod(fd, 0o2755))
t("chmod-in", lambda: os.chmod("{mine}", 0o640))
t("chmod-in-suid", lambda: os.chmod("{mine}", 0o4755))
t("chmod-in-rel", lambda: (os.chdir("{inside}"), os.chmod("mine", 0o640)))
t("chmod-roots", lambda: os.chmod("{roots}", 0o666))
t("chmod-out", lambda: os.chmod("{theirs}", 0o4777))
t("chmod-out-plain", lambda: os.chmod("{theirs}", 0o666))
t("chmod-link", lambda: os.chmod("{link}", 0o666))
t("chmod-magic", lambda: os.chmod("/proc/self/fd/%d" % fd, 0o666))
t("chmod-hidden", lambda: os.chmod("{hidden}", 0o666))
out = os.open("{outside}", os.O_PATH | os.O_DIRECTORY)
t("chmod-dirfd-out", lambda: os.chmod("theirs", 0o666, dir_fd=out))
t("chmod-dotdot", lambda: os.chmod("{inside}/../{outside_name}/theirs", 0o666))
t("fchown", lambda: os.fchown(fd, -1, 65534))
t("chown-out", lambda: os.chown("{theirs}", -1, 65534))
t("lchown-out", lambda: os.lchown("{theirs}", -1, 65534))
t("futimens", lambda: os.utime(fd, (1, 1)))
t("utime-out", lambda: os.utime("{theirs}", (1, 1)))
"#,
        mine = mine.display(),
        theirs = theirs.display(),
        roots = roots.display(),
        link = link.display(),
        inside = inside.path(),
        hidden = hidden.display(),
        outside = outside.path(),
        outside_name = outside.0.file_name().unwrap().to_str().unwrap(),
    );
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath wpath fattr chown",
        "-v",
        &format!("rw:{}", inside.path()),
        "-v",
        "r:/usr/lib/python3.11",
        "--mode",
        "errno",
        "--",
        "/usr/bin/python3",
        "-c",
        &script,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let eperm = libc::EPERM.to_string();
    let eacces = libc::EACCES.to_string();
    for (op, want) in [
        ("fchmod", "ok"),
        ("fchmod-suid", eperm.as_str()),
        ("fchmod-sgid", eperm.as_str()),
        // chmod by path: privfork does it for the program where its
        // unveils let it write, on its own user's files, without setuid
        // or setgid bits (see docs/sandbox.md, fattr).
        ("chmod-in", "ok"),
        ("chmod-in-suid", eperm.as_str()),
        ("chmod-in-rel", "ok"),
        ("chmod-roots", eperm.as_str()),
        ("chmod-out", eperm.as_str()),
        ("chmod-out-plain", eacces.as_str()),
        // A symlink's target is not changed for the program.
        ("chmod-link", eperm.as_str()),
        // /proc/self/fd/N is a symlink: its target is not changed.
        ("chmod-magic", eperm.as_str()),
        // Done with the program's credentials: a directory it may not
        // search stops it, inside the unveils too.
        ("chmod-hidden", eacces.as_str()),
        ("chmod-dirfd-out", eacces.as_str()),
        ("chmod-dotdot", eacces.as_str()),
        ("fchown", "ok"),
        ("chown-out", eperm.as_str()),
        ("lchown-out", eperm.as_str()),
        ("futimens", "ok"),
        ("utime-out", eperm.as_str()),
    ] {
        assert!(
            out.lines().any(|l| l == format!("{op} {want}")),
            "{op}: want {want}\n{out}"
        );
    }
    let meta = std::fs::metadata(&mine).unwrap();
    assert_eq!(
        meta.mode() & 0o7777,
        0o640,
        "the plain fchmod and chmod took, not the setuid ones"
    );
    let meta = std::fs::metadata(&roots).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o644, "root's file changed mode");
    let meta = std::fs::metadata(&hidden).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600, "the hidden file changed mode");
    let meta = std::fs::metadata(&theirs).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o644, "the file outside changed mode");
    assert_ne!(meta.mtime(), 1, "the file outside changed times");
}

/// chmod by path, many times in a row, as git does on its lock files:
/// each is done (one helper thread at a time, freed before it answers).
#[test]
fn chmod_by_path_many_times_in_a_row() {
    let _limit = time_limit!();
    let dir = Dir::new("chmods");
    let f = dir.0.join("f");
    std::fs::write(&f, "x").unwrap();
    std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
    let script = format!(
        "import os\nbad = 0\nfor i in range(300):\n try:\n  os.chmod({:?}, 0o600 if i % 2 else 0o640)\n except OSError:\n  bad += 1\nprint(bad)",
        f.display().to_string()
    );
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath wpath fattr",
        "-v",
        &format!("rw:{}", dir.path()),
        "-v",
        "r:/usr/lib/python3.11",
        "--",
        "/usr/bin/python3",
        "-c",
        &script,
    ]);
    assert_eq!(stdout(&o).trim(), "0", "{}", stderr(&o));
}

/// chmod by path is done on a thread that holds no capability, even when
/// privfork runs with SECBIT_NO_SETUID_FIXUP (the kernel then keeps root's
/// file capabilities across the fsuid change): a root file in a writable
/// unveil keeps its mode.
#[test]
fn chmod_for_the_program_holds_no_capability() {
    let _limit = time_limit!();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = Dir::new("nofixup");
    let roots = dir.0.join("roots");
    std::fs::write(&roots, "x").unwrap();
    std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = format!(
        "import os\ntry:\n os.chmod({:?}, 0o666)\n print('changed')\nexcept OSError as e:\n print(e.errno)",
        roots.display().to_string()
    );
    let o = Command::new("/usr/bin/setpriv")
        .args(["--securebits", "+no_setuid_fixup", "--"])
        .arg(env!("CARGO_BIN_EXE_privfork"))
        .args(["run", "-u", "nobody", "-p", "stdio rpath wpath cpath fattr"])
        .arg("-v")
        .arg(format!("rwc:{}", dir.path()))
        .args([
            "-v",
            "r:/usr/lib/python3.11",
            "--",
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), libc::EPERM.to_string(), "{}", stderr(&o));
    let meta = std::fs::metadata(&roots).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o644, "root's file changed mode");
}

/// The program starts from an empty environment: a secret in the
/// invoker's (root's) environment does not reach a program run as nobody,
/// whose environment other nobody processes can read.
#[test]
fn the_invokers_environment_stays_with_the_invoker() {
    let _limit = time_limit!();
    let env_of = |extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_privfork"))
            .env("SECRET_TOKEN", "hunter2")
            .env("LC_TIME", "C")
            .env("HOME", "/root")
            .args(["run", "-u", "nobody", "-p", "stdio rpath"])
            .args(extra)
            .args(["--", "/usr/bin/env"])
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        stdout(&o)
    };
    let nobody_home = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == "nobody").then(|| f[5].to_owned())
        })
        .unwrap();
    let env = env_of(&[]);
    assert!(!env.contains("SECRET_TOKEN"), "{env}");
    assert!(
        env.lines().any(|l| l == format!("HOME={nobody_home}")),
        "{env}"
    );
    assert!(env.lines().any(|l| l == "USER=nobody"), "{env}");
    assert!(env.lines().any(|l| l == "LOGNAME=nobody"), "{env}");
    assert!(env.lines().any(|l| l == "LC_TIME=C"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    let env = env_of(&["--keep-env", "SECRET_TOKEN", "--env", "FOO=a=b"]);
    assert!(env.lines().any(|l| l == "SECRET_TOKEN=hunter2"), "{env}");
    assert!(env.lines().any(|l| l == "FOO=a=b"), "{env}");
    // --env wins over the defaults.
    let env = env_of(&["--env", "HOME=/srv"]);
    assert!(env.lines().any(|l| l == "HOME=/srv"), "{env}");
}

/// Every signal that would end privfork by its default action (here
/// SIGQUIT, Ctrl-\\) is passed on to the program, and privfork stays to
/// end the program's tree: a `setsid` descendant does not go to init.
#[test]
fn a_quit_reaches_the_program_and_ends_its_tree() {
    let _limit = time_limit!();
    let marker = format!("1000.{}3", std::process::id());
    let o = signal_a_running_tree(
        &format!("setsid sleep {marker} & sleep {marker}"),
        &marker,
        rustix::process::Signal::QUIT,
    );
    let left = processes_with(&marker);
    for p in &left {
        // Not left behind if the test fails: the pid each line starts with.
        if let Some(pid) = p
            .split(':')
            .next()
            .and_then(|n| n.parse().ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    assert_eq!(code(&o), 128 + libc::SIGQUIT, "{}", stderr(&o));
    assert!(left.is_empty(), "{left:?}");
}
