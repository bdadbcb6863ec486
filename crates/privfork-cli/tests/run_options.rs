//! `privfork run`'s clean start and limits, as a user runs them: the
//! environment, `--chdir`, who can execute the program, `-v PATH`, the
//! resource limits, `--timeout` and `--net none`. These tests run as root
//! (they drop to nobody) and fail loudly otherwise.

#[path = "../../privfork/tests/time_limit/mod.rs"]
mod time_limit;
use time_limit::time_limit;

mod common;
use common::{Dir, code, privfork_run, stderr, stdout};

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// The sudo-like `PATH` every program gets unless `--inherit-env`.
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `privfork run ARGS` with `SECRET_TOKEN`, a caller's `PATH` and `TERM`
/// in privfork's environment; returns the program's `env` output.
fn env_seen(extra: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_privfork"))
        .env("SECRET_TOKEN", "hunter2")
        .env("LD_BIND_NOW", "1")
        .env("PATH", "/tmp/callers-bin:/usr/bin:/bin")
        .env("TERM", "xterm-test")
        .args(["run", "-u", "nobody", "-p", "stdio rpath"])
        .args(extra)
        .args(["--", "/usr/bin/env"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stdout(&o)
}

/// As sudo's env_reset: TERM kept, PATH set (never the caller's), the
/// user's own HOME/USER/LOGNAME/SHELL, nothing else; `--inherit-env`
/// passes everything on, for those who ask.
#[test]
fn the_environment_is_reset_as_sudo_does() {
    let _limit = time_limit!();
    let env = env_seen(&[]);
    let has = |env: &str, l: &str| env.lines().any(|x| x == l);
    assert!(has(&env, &format!("PATH={SAFE_PATH}")), "{env}");
    assert!(has(&env, "TERM=xterm-test"), "{env}");
    assert!(
        has(&env, "USER=nobody") && has(&env, "LOGNAME=nobody"),
        "{env}"
    );
    assert!(env.lines().any(|l| l.starts_with("SHELL=")), "{env}");
    assert!(
        !env.contains("SECRET_TOKEN") && !env.contains("callers-bin"),
        "{env}"
    );
    // --keep-env PATH is the way to the caller's PATH.
    let env = env_seen(&["--keep-env", "PATH"]);
    assert!(has(&env, "PATH=/tmp/callers-bin:/usr/bin:/bin"), "{env}");
    // --inherit-env: the whole environment, the user's identity over it.
    let env = env_seen(&["--inherit-env"]);
    assert!(has(&env, "SECRET_TOKEN=hunter2"), "{env}");
    assert!(has(&env, "PATH=/tmp/callers-bin:/usr/bin:/bin"), "{env}");
    assert!(has(&env, "USER=nobody"), "{env}");
    // Not the dynamic loader's variables: privfork checked the libraries
    // it resolved, not an LD_LIBRARY_PATH's. Unless named.
    assert!(!env.contains("LD_BIND_NOW"), "{env}");
    let env = env_seen(&["--inherit-env", "--keep-env", "LD_BIND_NOW"]);
    assert!(has(&env, "LD_BIND_NOW=1"), "{env}");
    // A program named without '/' is found in the program's PATH, not
    // the caller's: a callers-bin/true would not be run.
    let o = Command::new(env!("CARGO_BIN_EXE_privfork"))
        .env("PATH", "/nonexistent-pf")
        .args(["run", "-u", "nobody", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// `--chdir DIR` is entered as the target user: a directory nobody
/// cannot enter is refused (116, naming it), though root could.
#[test]
fn chdir_is_entered_as_the_user() {
    let _limit = time_limit!();
    let open = Dir::new("chdir");
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--chdir",
        open.path(),
        "--",
        "/bin/pwd",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), open.path());
    let closed = Dir::new("chdir-closed");
    std::fs::set_permissions(&closed.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = privfork_run(&["-u", "nobody", "--chdir", closed.path(), "--", "/bin/true"]);
    assert_eq!(code(&o), 116, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.lines().count() == 1 && e.contains(closed.path()) && e.contains("nobody"),
        "{e}"
    );
    let o = privfork_run(&[
        "-u",
        "nobody",
        "--chdir",
        "/no/such/dir-pf",
        "--",
        "/bin/true",
    ]);
    assert_eq!(code(&o), 116, "{}", stderr(&o));
    assert!(stderr(&o).contains("/no/such/dir-pf"), "{}", stderr(&o));
}

/// A program the target user cannot reach or execute exits 126, naming
/// what stops it — although privfork, root, reads the file fine.
#[test]
fn a_program_the_user_cannot_execute_exits_126_naming_why() {
    let _limit = time_limit!();
    // Only root may write where the program lies (or it is untrusted, 117).
    let dir = Dir::new("noexec");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let inner = dir.0.join("private");
    std::fs::create_dir(&inner).unwrap();
    let hidden = inner.join("true");
    std::fs::copy("/bin/true", &hidden).unwrap();
    let readable = dir.0.join("true-0744");
    std::fs::copy("/bin/true", &readable).unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o744)).unwrap();
    let fine = dir.0.join("true-0755");
    std::fs::copy("/bin/true", &fine).unwrap();
    std::fs::set_permissions(&fine, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A 0700 root directory on the way.
    std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = privfork_run(&["-u", "nobody", "--", hidden.to_str().unwrap()]);
    assert_eq!(code(&o), 126, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.lines().count() == 1
            && e.contains(&format!("cannot search directory {}", inner.display()))
            && e.contains("as nobody"),
        "{e}"
    );
    // A file only its owner may execute.
    let o = privfork_run(&["-u", "nobody", "--", readable.to_str().unwrap()]);
    assert_eq!(code(&o), 126, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("cannot execute {}", readable.display())),
        "{e}"
    );
    // The control: the same program, executable by all.
    let o = privfork_run(&["-u", "nobody", "--", fine.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// `-v PATH` without permissions unveils PATH read-only (pledge.com).
#[test]
fn a_bare_unveil_path_is_read_only() {
    let _limit = time_limit!();
    let dir = Dir::new("bare");
    std::fs::write(dir.0.join("f"), "contents\n").unwrap();
    std::fs::set_permissions(dir.0.join("f"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let f = format!("{}/f", dir.path());
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "-v",
        dir.path(),
        "--",
        "/bin/cat",
        &f,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "contents\n");
    // Writing: Landlock refuses (the promises would allow it).
    let script = format!("echo more >> {f}");
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath wpath cpath",
        "-v",
        dir.path(),
        "--",
        "/bin/sh",
        "-c",
        &script,
    ]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dir.0.join("f")).unwrap(),
        "contents\n"
    );
}

/// The program's own `/proc/self/limits` line for `name`: (soft, hard).
fn limit(limits: &str, name: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {limits}"));
    let f: Vec<&str> = line[name.len()..].split_whitespace().collect();
    (f[0].to_owned(), f[1].to_owned())
}

/// Each limit flag sets its rlimit, soft and hard, as the program sees it.
#[test]
fn each_limit_flag_sets_its_rlimit() {
    let _limit = time_limit!();
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "-v",
        "r:/proc",
        "--cpu",
        "7",
        "--memory",
        "64M",
        "--file-size",
        "1K",
        "--processes",
        "1000",
        "--open-files",
        "33",
        "--",
        "/bin/cat",
        "/proc/self/limits",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let l = stdout(&o);
    for (name, want) in [
        ("Max data size", "67108864"),
        ("Max file size", "1024"),
        ("Max processes", "1000"),
        ("Max open files", "33"),
    ] {
        assert_eq!(limit(&l, name), (want.into(), want.into()), "{name}: {l}");
    }
    // SIGXCPU at the soft limit, SIGKILL a second later.
    assert_eq!(limit(&l, "Max cpu time"), ("7".into(), "8".into()), "{l}");
    // Not RLIMIT_AS: that breaks V8 and other programs that reserve
    // address space.
    assert_eq!(limit(&l, "Max address space").0, "unlimited", "{l}");
}

/// A program writing past `--file-size` gets SIGXFSZ; past `--cpu`,
/// SIGXCPU; past `--memory`, its allocation fails.
#[test]
fn limits_take_effect() {
    let _limit = time_limit!();
    let dir = Dir::new("limits");
    let f = format!("{}/big", dir.path());
    let unveil = format!("rwc:{}", dir.path());
    let write = |size: Option<&str>| {
        let mut args = vec![
            "-u",
            "nobody",
            "-p",
            "stdio rpath wpath cpath",
            "-v",
            &unveil,
        ];
        if let Some(s) = size {
            args.extend(["--file-size", s]);
        }
        let script = format!("printf %2000s x > {f}");
        args.extend(["--", "/bin/sh", "-c", &script]);
        privfork_run(&args)
    };
    let o = write(Some("1000"));
    assert_eq!(code(&o), 128 + libc::SIGXFSZ, "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 1000);
    let o = write(None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 2000);
    // A busy loop of the shell's own, past one CPU second.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--cpu",
        "1",
        "--",
        "/bin/sh",
        "-c",
        "while :; do :; done",
    ]);
    assert_eq!(code(&o), 128 + libc::SIGXCPU, "{}", stderr(&o));
    // 200 MB under a 100 MB RLIMIT_DATA: MemoryError; without it, fine.
    let alloc = |extra: &[&str]| {
        let mut args = vec![
            "-u",
            "nobody",
            "-p",
            "stdio rpath",
            "-v",
            "r:/usr/lib/python3.11",
            "--mode",
            "errno",
        ];
        args.extend_from_slice(extra);
        args.extend([
            "--",
            "/usr/bin/python3",
            "-c",
            "b = bytearray(200 << 20); print(len(b))",
        ]);
        privfork_run(&args)
    };
    let o = alloc(&["--memory", "100M"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("MemoryError"), "{}", stderr(&o));
    let o = alloc(&[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), (200u64 << 20).to_string());
}

/// `--timeout`: SIGTERM to the program at the deadline, SIGKILL after a
/// 5 s grace if it ignores that, and privfork exits 115.
#[test]
fn timeout_ends_the_program() {
    let _limit = time_limit!();
    let start = std::time::Instant::now();
    let o = privfork_run(&[
        "-u",
        "nobody",
        "--timeout",
        "500ms",
        "--",
        "/bin/sleep",
        "100",
    ]);
    assert_eq!(code(&o), 115, "{}", stderr(&o));
    assert!(stderr(&o).contains("SIGTERM"), "{}", stderr(&o));
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    // A program that ignores SIGTERM (blocked reading a pipe the test
    // holds open): SIGKILL after the grace.
    let start = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_privfork"))
        .args(["run", "-u", "nobody", "-p", "stdio rpath", "--timeout", "1"])
        .args(["--", "/bin/sh", "-c", "trap '' TERM; read x; echo read"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let o = child.wait_with_output().unwrap();
    drop(stdin);
    let took = start.elapsed();
    assert_eq!(code(&o), 115, "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "the program went on past its SIGKILL");
    assert!(
        took >= std::time::Duration::from_secs(6) && took < std::time::Duration::from_secs(20),
        "{took:?}"
    );
    // Finishing in time: the program's own status.
    let o = privfork_run(&["-u", "nobody", "--timeout", "30s", "--", "/bin/false"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

/// `--net none`: a TCP connect to a port listening on the host's
/// loopback is refused inside (its own loopback is up, with nothing on
/// it), and succeeds without the flag.
#[test]
fn net_none_cuts_the_program_off_the_host() {
    let _limit = time_limit!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected; \
         while read -r l; do case $l in *:*) echo \"if ${{l%%:*}}\";; esac; done < /proc/self/net/dev"
    );
    let connect = |extra: &[&str]| {
        let mut args = vec![
            "-u",
            "nobody",
            "-p",
            "stdio rpath inet",
            // bash probes /dev/tty and the terminal: EPERM, not death.
            "--mode",
            "errno",
            "--connect",
            &port,
            "-v",
            "r:/proc",
        ];
        args.extend_from_slice(extra);
        args.extend(["--", "/bin/bash", "-c", &script]);
        privfork_run(&args)
    };
    let o = connect(&[]);
    assert!(
        stdout(&o).contains("connected"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = connect(&["--net", "none"]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(!out.contains("connected"), "{out}");
    // Refused, not unreachable: the namespace's own loopback is up.
    assert!(err.contains("Connection refused"), "{err}");
    let ifs: Vec<&str> = out.lines().filter(|l| l.starts_with("if ")).collect();
    assert_eq!(ifs, ["if lo"], "{out}");
    // Not root, privfork cannot make the namespace: refused before any
    // fork, in one line, rather than run on the host's network.
    let o = Command::new("/usr/bin/setpriv")
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_privfork"))
        .args(["run", "--net", "none", "--", "/bin/echo", "ran"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(code(&o), 125, "{e}");
    assert!(e.lines().count() == 1 && e.contains("--net none"), "{e}");
    assert_eq!(stdout(&o), "");
}

/// Malformed values are refused with one line naming the input, exit 2,
/// before anything starts.
#[test]
fn bad_option_values_are_refused_before_anything_starts() {
    let _limit = time_limit!();
    for (opt, value) in [
        ("--memory", "-5"),
        ("--memory", "12Q"),
        ("--file-size", "1.5G"),
        ("--cpu", "1.5"),
        ("--processes", "-1"),
        ("--open-files", "many"),
        ("--timeout", "5x"),
        ("--timeout", "-3"),
        ("--net", "foo"),
    ] {
        let o = privfork_run(&["-u", "nobody", opt, value, "--", "/bin/echo", "ran"]);
        let e = stderr(&o);
        assert_eq!(code(&o), 2, "{opt} {value}: {e}");
        assert!(
            e.lines().count() == 1 && e.contains(opt) && e.contains(&format!("\"{value}\"")),
            "{opt} {value}: {e}"
        );
        assert_eq!(stdout(&o), "", "{opt} {value}: the program ran");
    }
}
