//! `privfork run` says why: each refused call is named on privfork's
//! stderr — the call, the detail that matters, the promise that would
//! allow it or that none would — in every mode; repeats are counted, not
//! reprinted; log mode also names the opens Landlock will refuse. Run as
//! root (the programs drop to nobody).

#[path = "../../privfork/tests/time_limit/mod.rs"]
mod time_limit;
use time_limit::time_limit;

mod common;
use common::{Dir, code, privfork_run, stderr, stdout};

/// Python's standard library directory (`/usr/lib/python3.N`), which a
/// python3 program needs unveiled.
fn python_lib() -> String {
    let dir = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python3.") && p.join("os.py").exists())
        })
        .expect("python3's standard library in /usr/lib/python3.N (apt-get install python3)");
    format!("r:{}", dir.display())
}

/// `privfork run -u nobody -p PROMISES [EXTRA…] -- /usr/bin/python3 -c CODE`.
fn python(promises: &str, extra: &[&str], code: &str) -> std::process::Output {
    let lib = python_lib();
    let mut args = vec!["-u", "nobody", "-p", promises, "-v", &lib];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "/usr/bin/python3", "-c", code]);
    privfork_run(&args)
}

/// The lines of privfork's own reports.
fn report_lines(o: &std::process::Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("privfork: "))
        .map(str::to_owned)
        .collect()
}

/// A directory of the test's own with one file, `data`, holding "kept\n",
/// writable by anyone (by DAC): only the sandbox stands in the way.
fn kept_file(tag: &str) -> (Dir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new(tag);
    let file = dir.0.join("data");
    std::fs::write(&file, "kept\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    (dir, file)
}

#[test]
fn tiocsti_is_named_and_no_promise_allows_it() {
    let _limit = time_limit!();
    let o = python(
        "stdio rpath tty",
        &[],
        "import fcntl, termios; fcntl.ioctl(1, termios.TIOCSTI, b'x')",
    );
    assert_eq!(code(&o), 128 + libc::SIGSYS, "{}", stderr(&o));
    let lines = report_lines(&o);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("refused ioctl(fd 1, TIOCSTI) in python3")
            && lines[0].contains("; killed it: ")
            && lines[0].contains("no promise allows TIOCSTI"),
        "{lines:#?}"
    );
}

#[test]
fn a_netlink_socket_is_named_with_its_family_and_protocol() {
    let _limit = time_limit!();
    let o = python(
        "stdio rpath inet unix",
        &[],
        "import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 15)",
    );
    assert_eq!(code(&o), 128 + libc::SIGSYS, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("refused socket(AF_NETLINK, SOCK_RAW|SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT)")
            && e.contains("no promise allows AF_NETLINK sockets"),
        "{e}"
    );
    // Neither held promise is named as the way out.
    assert!(!e.contains("would be allowed by"), "{e}");
}

#[test]
fn the_hint_names_the_promise_that_helps_and_never_one_held() {
    let _limit = time_limit!();
    // TCSETS (tcsetattr), which only tty allows; stdio and rpath are held.
    let o = python(
        "stdio rpath",
        &["--mode", "errno"],
        "import fcntl, termios\ntry:\n fcntl.ioctl(1, termios.TCSETS, bytes(60))\nexcept OSError as e:\n print(e.errno)",
    );
    assert_eq!(stdout(&o).trim(), libc::EPERM.to_string(), "{}", stderr(&o));
    let lines = report_lines(&o);
    let line = lines
        .iter()
        .find(|l| l.contains("TCSETS"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(
        line.contains("failed it with EPERM: would be allowed by tty"),
        "{line}"
    );
    // A TCP socket: inet; not unix or dns, which make no TCP sockets.
    let o = python(
        "stdio rpath",
        &["--mode", "errno"],
        "import socket\ntry:\n socket.socket(socket.AF_INET, socket.SOCK_STREAM)\nexcept OSError as e:\n print(e.errno)",
    );
    let e = stderr(&o);
    assert!(
        e.contains("refused socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0)")
            && e.contains("would be allowed by inet\n"),
        "{e}"
    );
}

#[test]
fn a_refused_call_repeated_ten_thousand_times_is_counted_not_reprinted() {
    let _limit = time_limit!();
    let dir = Dir::new("repeat");
    let target = dir.0.join("sub");
    let code_text = format!(
        "import os\nfor i in range(10000):\n try:\n  os.mkdir({:?})\n except OSError:\n  pass\nprint('done')",
        target.display().to_string()
    );
    let o = python("stdio rpath", &["--mode", "errno"], &code_text);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "done");
    let lines = report_lines(&o);
    let first: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("refused mkdir("))
        .collect();
    assert_eq!(first.len(), 1, "{lines:#?}");
    assert!(first[0].contains("would be allowed by cpath"), "{lines:#?}");
    // One line at 10, 100, 1000 and 10000, and the total at the end.
    let again = lines.iter().filter(|l| l.contains("again mkdir(")).count();
    assert_eq!(again, 4, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("10000 times in all: mkdir(")),
        "{lines:#?}"
    );
    assert!(lines.len() <= 8, "{lines:#?}");
    assert!(!target.exists());
}

#[test]
fn log_mode_names_the_opens_landlock_refuses_and_lets_allowed_ones_run() {
    let _limit = time_limit!();
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new("landlock");
    let file = dir.0.join("data");
    std::fs::write(&file, "contents\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = file.to_str().unwrap();
    // Not unveiled: Landlock refuses (EACCES), and the report says so.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--mode",
        "log",
        "--",
        "/bin/cat",
        path,
    ]);
    assert_ne!(code(&o), 0);
    let e = stderr(&o);
    assert!(e.contains("Permission denied"), "{e}");
    assert!(
        e.contains(&format!(
            "Landlock will refuse openat({path:?}, O_RDONLY) in cat"
        )) && e.contains(&format!("add -v r:{path}")),
        "{e}"
    );
    // Unveiled: the open goes through the supervisor and on; no report.
    let spec = format!("r:{}", dir.0.display());
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "-v",
        &spec,
        "--mode",
        "log",
        "--",
        "/bin/cat",
        path,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "contents\n");
    assert!(!stderr(&o).contains(path), "{}", stderr(&o));
}

#[test]
fn log_mode_lets_through_only_the_opens_the_promises_allow() {
    let _limit = time_limit!();
    let (dir, file) = kept_file("logopen");
    let spec = format!("rwc:{}", dir.0.display());
    // A creating open (O_CREAT) without cpath: the filter refuses it, and
    // the supervisor must not let it on — Landlock would not stop it
    // (rw kept under wpath; the file exists, so nothing is created).
    let code_text = format!(
        "import os\ntry:\n os.write(os.open({:?}, os.O_WRONLY | os.O_CREAT), b'changed')\nexcept OSError as e:\n print(e.errno)",
        file.display().to_string()
    );
    let o = python(
        "stdio rpath wpath",
        &["-v", &spec, "--mode", "log"],
        &code_text,
    );
    assert_eq!(stdout(&o).trim(), libc::EPERM.to_string(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "kept\n");
    let e = stderr(&o);
    assert!(
        e.contains("O_WRONLY|O_CREAT|O_CLOEXEC) in python3")
            && e.contains("would be allowed by cpath"),
        "{e}"
    );
    // With cpath the same open goes through.
    let o = python(
        "stdio rpath wpath cpath",
        &["-v", &spec, "--mode", "log"],
        &code_text,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Seven bytes over the five of "kept\n".
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "changed");
}

#[test]
fn a_write_without_wpath_is_refused_and_the_hint_names_the_promises() {
    let _limit = time_limit!();
    let (dir, file) = kept_file("needs");
    let spec = format!("rw:{}", dir.0.display());
    // Unveiled rw, no wpath: the filter refuses the open (a write open
    // never passes without wpath), and a promise is all it takes — the
    // path is unveiled for w, so no "-v" is suggested (tmppath is named:
    // the test's directory is in /tmp).
    let code_text = format!(
        "import os\ntry:\n os.open({:?}, os.O_WRONLY)\nexcept OSError as e:\n print(e.errno)",
        file.display().to_string()
    );
    let o = python("stdio rpath", &["-v", &spec, "--mode", "errno"], &code_text);
    assert_eq!(stdout(&o).trim(), libc::EPERM.to_string(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("O_WRONLY|O_CLOEXEC) in python3")
            && e.contains(": would be allowed by wpath or cpath or tmppath\n"),
        "{e}"
    );
    // Not unveiled for w: the hint adds the -v.
    let spec = format!("r:{}", dir.0.display());
    let o = python("stdio rpath", &["-v", &spec, "--mode", "errno"], &code_text);
    assert!(
        stderr(&o).contains(&format!(
            "would be allowed by wpath or cpath or tmppath, and Landlock would still refuse it: {} is not unveiled for w (add -v w:{})",
            file.display(),
            file.display()
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_pipe_or_memfd_held_read_only_is_not_reopened_for_writing() {
    let _limit = time_limit!();
    // Landlock does not govern pipes and memfds: a write open of
    // /proc/self/fd/N is the filter's to refuse (no wpath), or the
    // program could write to what it was handed read-only.
    let o = python(
        "stdio rpath",
        &["--mode", "errno"],
        "import os\nr, w = os.pipe()\nos.close(w)\ntry:\n os.open('/proc/self/fd/%d' % r, os.O_WRONLY)\n print('opened')\nexcept OSError as e:\n print(e.errno)\nfd = os.open('/proc/self/fd/%d' % r, os.O_RDONLY)\nprint('read ok')",
    );
    assert_eq!(
        stdout(&o),
        format!("{}\nread ok\n", libc::EPERM),
        "{}",
        stderr(&o)
    );
}

#[test]
fn dev_null_opens_for_writing_under_any_promises() {
    let _limit = time_limit!();
    // A shell redirection (O_WRONLY|O_CREAT|O_TRUNC), without wpath or
    // cpath: privfork hands the program a /dev/null of its own.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--",
        "/bin/sh",
        "-c",
        "echo gone > /dev/null && exec 3<>/dev/null && echo kept",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "kept\n");
    // The same path spelled otherwise is not /dev/null as written: refused.
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
        "echo gone > /dev/../dev/null; echo $?",
    ]);
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn reports_reach_a_stderr_the_program_made_nonblocking_and_filled() {
    let _limit = time_limit!();
    use std::io::{BufRead, Read};
    // The program shares privfork's stderr (--tty): it makes it
    // non-blocking, fills it (a pipe nobody reads yet), makes a refused
    // call, and says so on stdout. privfork must queue its line, not lose
    // it to EAGAIN.
    let code_text = "import os, fcntl, socket\n\
        fl = fcntl.fcntl(2, fcntl.F_GETFL)\n\
        fcntl.fcntl(2, fcntl.F_SETFL, fl | os.O_NONBLOCK)\n\
        n = 0\n\
        while True:\n\
        \x20try:\n\
        \x20 n += os.write(2, b'.' * 4096)\n\
        \x20except BlockingIOError:\n\
        \x20 break\n\
        try:\n\
        \x20socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n\
        except OSError:\n\
        \x20pass\n\
        print('filled', n, flush=True)\n";
    let lib = python_lib();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_privfork"))
        .args([
            "run",
            "-u",
            "nobody",
            "-p",
            "stdio rpath",
            "-v",
            &lib,
            "--mode",
            "errno",
            "--tty",
            "--",
            "/usr/bin/python3",
            "-c",
            code_text,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("filled "), "{line:?}");
    // Only now is stderr read: the refusal line waited in privfork.
    let mut err = Vec::new();
    child
        .stderr
        .take()
        .unwrap()
        .take(16 << 20)
        .read_to_end(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let err = String::from_utf8_lossy(&err);
    assert!(
        err.contains("refused socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0) in python3"),
        "{}",
        &err[err.len().saturating_sub(2000)..]
    );
}

#[test]
fn a_refused_call_in_a_thread_kills_the_whole_program() {
    let _limit = time_limit!();
    let o = python(
        "stdio rpath",
        &[],
        "import threading, os\n\
         def f():\n os.mkdir('/nonexistent-privfork-dir')\n\
         t = threading.Thread(target=f); t.start(); t.join()\n\
         print('survived')",
    );
    assert_eq!(code(&o), 128 + libc::SIGSYS, "{}", stderr(&o));
    assert!(!stdout(&o).contains("survived"));
    assert!(
        stderr(&o).contains(r#"refused mkdir("/nonexistent-privfork-dir")"#),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_terminal_the_program_stopped_does_not_block_privfork() {
    let _limit = time_limit!();
    use std::os::unix::process::ExitStatusExt;
    // A terminal of the test's own, as privfork's stdout and stderr.
    let (master, slave) = common::pty();
    // The program (sharing the terminal: --tty) stops its output
    // (tcflow TCOOFF, which tty allows), then makes a refused call, then
    // exits. privfork's report line must wait, not block privfork.
    let lib = python_lib();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_privfork"))
        .args([
            "run", "-u", "nobody", "-p", "stdio rpath tty", "-v", &lib, "--mode", "errno",
            "--tty", "--", "/usr/bin/python3", "-c",
            "import termios, socket\ntermios.tcflow(2, termios.TCOOFF)\ntry:\n socket.socket()\nexcept OSError:\n pass",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{:?}", status.signal());
    // Output restarted: the line was queued, and written if it could be.
    let _ = termios_restart(&slave);
    drop(master);
}

/// Restarts a terminal's stopped output (tcflow TCOON).
fn termios_restart(tty: &std::fs::File) -> rustix::io::Result<()> {
    rustix::termios::tcflow(tty, rustix::termios::Action::OOn)
}

#[test]
fn dev_null_with_a_full_fd_table_fails_the_call_not_the_run() {
    let _limit = time_limit!();
    // The program fills its fd table, then opens /dev/null for writing:
    // the fd privfork hands over cannot be installed (EMFILE). The call
    // fails with that; privfork goes on supervising.
    let o = python(
        "stdio rpath",
        &["--open-files", "64"],
        "import os\nfds = []\ntry:\n while True:\n  fds.append(os.dup(0))\nexcept OSError:\n pass\ntry:\n open('/dev/null', 'w')\nexcept OSError as e:\n print(e.errno)\nfor f in fds: os.close(f)\nopen('/dev/null', 'w').write('x')\nprint('after')",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{}\nafter\n", libc::EMFILE),
        "{}",
        stderr(&o)
    );
}
