//! Signals sent to `privfork run` reach the program, and the program's
//! status comes back: from `kill`, and from a real terminal (a pty whose
//! foreground process group is privfork's) under `--tty`. These tests run
//! as root (they drop to nobody) and fail loudly otherwise.

#[path = "../../privfork/tests/time_limit/mod.rs"]
mod time_limit;
use time_limit::time_limit;

mod common;
use common::{code, privfork_with_default_signals, pty, stderr};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;

/// Arguments for a python3 program under `privfork run` (EPERM, not
/// death, for what python probes at start-up).
const PYTHON: &[&str] = &[
    "run",
    "-u",
    "nobody",
    "-p",
    "stdio rpath tty",
    "-v",
    "r:/usr/lib/python3.11",
    "--mode",
    "errno",
];

/// Starts `python3 -c code` under privfork, its stdout piped.
fn python(code: &str) -> std::process::Child {
    privfork_with_default_signals()
        .args(PYTHON)
        .args(["--", "/usr/bin/python3", "-c", code])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends `sig` to privfork (not to the program: privfork passes it on).
fn send(child: &std::process::Child, sig: Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

/// Each signal a user or a supervisor sends — TERM, INT, HUP, QUIT,
/// USR1, USR2, WINCH — reaches the program; the ones that are commands
/// (USR1 here) as often as they are sent; privfork exits with the
/// program's status.
#[test]
fn every_signal_sent_to_privfork_reaches_the_program() {
    let _limit = time_limit!();
    let names = [
        "TERM", "INT", "HUP", "QUIT", "USR1", "USR1", "USR2", "WINCH",
    ];
    let program = format!(
        r#"import os, signal, sys, time
got = []
# os.write, not print: a handler may run while print("ready") is still
# flushing, and print is not reentrant.
def h(n, f):
    got.append(n)
    os.write(1, f"got {{signal.Signals(n).name}}\n".encode())
for n in {names:?}:
    signal.signal(getattr(signal, "SIG" + n), h)
print("ready", flush=True)
while len(got) < {count}:
    time.sleep(0.02)
sys.exit(3)
"#,
        count = names.len()
    );
    let mut child = python(&program);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    for name in names {
        let sig = match name {
            "TERM" => Signal::TERM,
            "INT" => Signal::INT,
            "HUP" => Signal::HUP,
            "QUIT" => Signal::QUIT,
            "USR1" => Signal::USR1,
            "USR2" => Signal::USR2,
            _ => Signal::WINCH,
        };
        send(&child, sig);
        line.clear();
        out.read_line(&mut line).unwrap();
        if line.is_empty() {
            let o = child.wait_with_output().unwrap();
            panic!("EOF after SIG{name}: {:?} {}", o.status, stderr(&o));
        }
        assert_eq!(line, format!("got SIG{name}\n"), "after SIG{name}");
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{status:?}");
}

/// A program that handles SIGTERM gets it, cleans up and exits with a
/// status of its own, which privfork passes on; one that does not dies of
/// it, and privfork exits 128 + 15.
#[test]
fn sigterm_lets_the_program_stop_cleanly() {
    let _limit = time_limit!();
    let mut child = python(
        r#"import os, signal, sys, time
def h(n, f):
    os.write(1, b"cleaning up\n")
    sys.exit(42)
signal.signal(signal.SIGTERM, h)
print("ready", flush=True)
while True:
    time.sleep(0.02)
"#,
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    send(&child, Signal::TERM);
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "cleaning up\n");
    assert_eq!(child.wait().unwrap().code(), Some(42));
    // Not handled: the program dies of it.
    let mut child = python("print('ready', flush=True)\nimport time\ntime.sleep(100)");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    line.clear();
    out.read_line(&mut line).unwrap();
    send(&child, Signal::TERM);
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 128 + libc::SIGTERM, "{}", stderr(&o));
}

/// A signal privfork was started with ignored (here SIGINT, as for a
/// script's background job) stays ignored, as if the program were run
/// directly: the program inherits it ignored, and privfork neither passes
/// it on nor, on the second one, kills the program as a repeated request
/// to stop. SIGTERM still ends it.
#[test]
fn a_signal_ignored_at_start_stays_ignored() {
    let _limit = time_limit!();
    // `trap '' INT` in a shell that then execs privfork: SIG_IGN survives
    // exec.
    let mut child = Command::new("/usr/bin/env")
        .args([
            "--default-signal",
            "/bin/sh",
            "-c",
            "trap '' INT; exec \"$0\" \"$@\"",
        ])
        .arg(env!("CARGO_BIN_EXE_privfork"))
        .args(PYTHON)
        .args([
            "--",
            "/usr/bin/python3",
            "-c",
            "import signal, time\n\
             print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN, flush=True)\n\
             time.sleep(100)",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "True\n", "the program inherits SIGINT ignored");
    // Two SIGINTs, each gone from privfork (read or discarded) before the
    // next is sent: pending standard signals merge.
    for _ in 0..2 {
        send(&child, Signal::INT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while int_pending(child.id()) {
            assert!(Instant::now() < deadline, "SIGINT never taken");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Time for privfork to act on them, were it to.
    std::thread::sleep(Duration::from_millis(300));
    send(&child, Signal::TERM);
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 128 + libc::SIGTERM, "{}", stderr(&o));
}

/// Whether SIGINT is pending for process `pid` (its threads' shared set).
fn int_pending(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|set| set & (1 << (libc::SIGINT - 1)) != 0)
}

/// privfork, in a session of its own with a pty as its controlling
/// terminal (privfork's process group in the foreground), started with
/// `stdio`.
fn on_a_terminal(slave: &std::fs::File, args: &[&str]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = privfork_with_default_signals();
    cmd.args(args)
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: the closure runs in the forked child of this multithreaded
    // test process; it makes only the setsid and ioctl system calls (no
    // allocation, no lock) before the exec.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

/// Reads the pty's master until `want` appears in what it has said (or
/// 20 s pass); returns everything read so far.
fn read_until(master: &std::os::fd::OwnedFd, seen: &mut String, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(want) {
        assert!(Instant::now() < deadline, "no {want:?} in {seen:?}");
        let mut fds = [rustix::event::PollFd::new(
            master,
            rustix::event::PollFlags::IN,
        )];
        let t = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        let _ = rustix::event::poll(&mut fds, Some(&t));
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = rustix::io::read(master, &mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]).replace("\r\n", "\n"));
        }
    }
}

/// With `--tty`, a Ctrl-C typed on the terminal reaches the program once
/// (through privfork, in the terminal's foreground group; the program is
/// in a session of its own, so not also straight from the terminal), a
/// second Ctrl-C once more without killing it, and a window size change
/// reaches it as SIGWINCH with the new size readable.
#[test]
fn ctrl_c_on_the_terminal_reaches_the_program_once() {
    let _limit = time_limit!();
    let (master, slave) = pty();
    let program = r#"import os, signal, sys, time
n = 0
def on_int(s, f):
    global n
    n += 1
    os.write(1, f"INT {n}\n".encode())
def on_winch(s, f):
    c, r = os.get_terminal_size(1)
    os.write(1, f"WINCH {c}x{r}\n".encode())
signal.signal(signal.SIGINT, on_int)
signal.signal(signal.SIGWINCH, on_winch)
print("ready", flush=True)
while n < 2:
    time.sleep(0.02)
time.sleep(0.5)
print("done", n, flush=True)
"#;
    let mut args: Vec<&str> = PYTHON.to_vec();
    args.extend(["--tty", "--", "/usr/bin/python3", "-c", program]);
    let mut child = on_a_terminal(&slave, &args);
    let mut seen = String::new();
    read_until(&master, &mut seen, "ready\n");
    rustix::io::write(&master, b"\x03").unwrap();
    read_until(&master, &mut seen, "INT 1\n");
    // Time for a second delivery, were there one.
    std::thread::sleep(Duration::from_millis(700));
    read_until(&master, &mut seen, "INT 1\n");
    assert!(!seen.contains("INT 2"), "one Ctrl-C, two SIGINTs: {seen}");
    rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: 40,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .unwrap();
    read_until(&master, &mut seen, "WINCH 100x40\n");
    rustix::io::write(&master, b"\x03").unwrap();
    read_until(&master, &mut seen, "done 2\n");
    let status = child.wait().unwrap();
    // The second Ctrl-C was the program's to handle, not a kill.
    assert_eq!(status.code(), Some(0), "{status:?}: {seen}");
}

/// An interactive shell under `--tty` reads what is typed on the terminal
/// and answers there; its exit status comes back.
#[test]
fn an_interactive_shell_runs_on_the_terminal() {
    let _limit = time_limit!();
    let (master, slave) = pty();
    let mut child = on_a_terminal(
        &slave,
        &[
            "run",
            "-u",
            "nobody",
            "-p",
            "stdio rpath tty",
            "--mode",
            "errno",
            "--tty",
            "--",
            "/bin/bash",
            "--norc",
            "-i",
        ],
    );
    rustix::io::write(&master, b"echo sum=$((40+2))\nexit 5\n").unwrap();
    let mut seen = String::new();
    read_until(&master, &mut seen, "sum=42\n");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "{status:?}: {seen}");
}
