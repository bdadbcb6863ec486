//! A tiny test runner for code that must run in a single-threaded process.
//!
//! libtest runs every test on a thread of its own, so a libtest process is
//! always multithreaded, and privilege drops are process-wide and
//! irreversible. These test binaries use `harness = false`: the runner starts
//! a fresh copy of the binary for every case (`--privfork-case NAME`), in
//! which the case runs on the main and only thread. A case passes when its
//! process exits 0; a panic (failed assertion) exits 101.
//!
//! Every case has a time limit: 60 s, or the number of seconds in
//! `PRIVFORK_TEST_TIMEOUT_SECS`, or its own limit given to
//! [`main_with_limits`] (which wins over both). Each case runs in a process
//! group of its own; when the limit passes, the whole group is killed
//! (root can kill the children a case started as other users), the case is
//! reported as `FAILED (timed out after Ns)`, and the next case runs. A
//! process that left the group (`setsid`, `setpgid`) escapes this; the
//! runner then stops waiting for the output such a process still holds
//! after a few seconds. When a case ends on its own, whatever it left
//! behind in its group is killed too.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A test case: its name and body.
pub type Case = (&'static str, fn());

const CASE_FLAG: &str = "--privfork-case";

/// The environment variable that sets the default time limit, in seconds.
pub const TIMEOUT_ENV: &str = "PRIVFORK_TEST_TIMEOUT_SECS";

/// The default time limit of a case.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(60);

/// How long the runner waits for a case's output to close once the case
/// process is gone.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

/// Runs the cases named on the command line (all when none is), each in
/// its own process, and exits with the result. `helpers` are bodies that
/// cases start as separate processes; they are not tests themselves.
pub fn main(cases: &[Case], helpers: &[Case]) -> ! {
    main_with_limits(cases, helpers, &[])
}

/// [`main`], with a time limit of their own for some cases.
pub fn main_with_limits(
    cases: &[Case],
    helpers: &[Case],
    limits: &[(&'static str, Duration)],
) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(pos) = args.iter().position(|a| a == CASE_FLAG) {
        let name = args.get(pos + 1).expect("case name after --privfork-case");
        let (_, body) = cases
            .iter()
            .chain(helpers)
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no test case named {name}"));
        body();
        std::process::exit(0);
    }
    // Runner mode. Flags libtest would take (e.g. --nocapture) are ignored;
    // any other word filters cases by substring, as libtest does.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let exe = std::env::current_exe().expect("current_exe");
    let default_limit = default_limit();
    let selected: Vec<&Case> = cases
        .iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests (one process each)", selected.len());
    let mut failed = Vec::new();
    for (name, _) in &selected {
        let limit = limits
            .iter()
            .find(|(n, _)| n == name)
            .map_or(default_limit, |&(_, l)| l);
        let out = run_case(&exe, name, limit);
        match out.status {
            Ok(status) if status.success() => println!("test {name} ... ok"),
            Ok(status) => println!("test {name} ... FAILED ({status})"),
            Err(limit) => println!(
                "test {name} ... FAILED (timed out after {})",
                show_duration(limit)
            ),
        }
        if !matches!(out.status, Ok(s) if s.success()) {
            failed.push((name, out));
        }
    }
    for (name, out) in &failed {
        println!(
            "\n---- {name} stdout ----\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        println!(
            "---- {name} stderr ----\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let passed = selected.len() - failed.len();
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {} filtered out\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        cases.len() - selected.len()
    );
    std::process::exit(if failed.is_empty() { 0 } else { 1 });
}

/// The default limit: [`TIMEOUT_ENV`] if set, else [`DEFAULT_LIMIT`].
///
/// # Panics
///
/// If the variable is set but not a whole number of seconds.
pub fn default_limit() -> Duration {
    match std::env::var(TIMEOUT_ENV) {
        Ok(v) => Duration::from_secs(
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{TIMEOUT_ENV}={v:?} is not a number of seconds")),
        ),
        Err(_) => DEFAULT_LIMIT,
    }
}

fn show_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// What a case process did: its exit status, or the limit it overran.
struct Outcome {
    status: Result<ExitStatus, Duration>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Reads `from` to its end on a thread of its own; the bytes come back on
/// the channel.
fn collect(mut from: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs one case in a process group of its own, killed as a whole at
/// `limit` or when the case ends.
fn run_case(exe: &std::path::Path, name: &str, limit: Duration) -> Outcome {
    let mut child = Command::new(exe)
        .args([CASE_FLAG, name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start test case process");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a positive pid");
    // Not waited for yet, so the pid cannot name another process.
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .expect("pidfd_open of the case process");
    let stdout = collect(child.stdout.take().expect("piped stdout"));
    let stderr = collect(child.stderr.take().expect("piped stderr"));

    let deadline = Instant::now() + limit;
    let ended = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => {}
            Ok(_) => break true,
            Err(e) => panic!("poll on the case's pidfd: {e}"),
        }
    };
    // The case process is not reaped yet (a zombie at most), so its pid is
    // still its group's id: the signal reaches that group and no other.
    match rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => panic!("killing the process group of case {name}: {e}"),
    }
    let status = child.wait().expect("wait for the case process");
    let grace = |rx: mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(OUTPUT_GRACE).unwrap_or_else(|_| {
            b"(output still held open by a process that left the case's group)".to_vec()
        })
    };
    Outcome {
        status: if ended { Ok(status) } else { Err(limit) },
        stdout: grace(stdout),
        stderr: grace(stderr),
    }
}

/// Fails the test loudly unless it runs as root: these tests change users.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test must run as root (it drops to other users); run the test command as root"
    );
}

/// Asserts that the process has no child left, zombie or running.
pub fn assert_no_children() {
    match rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG) {
        Err(rustix::io::Errno::CHILD) => {}
        other => panic!("a child process is left over: waitpid(-1, WNOHANG) = {other:?}"),
    }
}

/// The number of open fds of this process.
pub fn fd_count() -> usize {
    // read_dir holds one fd of its own while listing; it is counted every
    // time, so comparisons stay exact.
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A field of `/proc/self/status`, e.g. `status_field("Uid")`.
pub fn status_field(name: &str) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
        .trim()
        .to_owned()
}

/// A fresh directory under the system temp dir (mode 0755, random name),
/// removed with its contents on drop — also when the test fails.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// Creates it; `tag` goes into the name.
    pub fn new(tag: &str) -> Self {
        use std::hash::{BuildHasher, Hasher};
        use std::os::unix::fs::PermissionsExt;
        // RandomState is seeded from the OS's random source.
        let random = std::hash::RandomState::new().build_hasher().finish();
        let dir = std::env::temp_dir().join(format!("privfork-test-{tag}-{random:016x}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process that is not our child (a grandchild, a fork server's child),
/// watched through a pidfd opened before anything could end it (so a
/// reused pid can never be mistaken for it). Our own children are watched
/// with `privfork::process::Child`.
pub struct Watched {
    pidfd: std::os::fd::OwnedFd,
    pid: u32,
}

impl Watched {
    /// Starts watching `pid`, which must be alive.
    pub fn new(pid: u32) -> Self {
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid as i32).expect("a positive pid"),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap_or_else(|e| panic!("pidfd_open({pid}): {e}"));
        Self { pidfd, pid }
    }

    /// Waits up to 30 s for the process to exit; fails the test if it
    /// does not.
    pub fn assert_gone(&self, what: &str) {
        use std::os::fd::AsFd;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let gone = privfork::event::wait_fd(
            self.pidfd.as_fd(),
            privfork::event::Interest::READABLE,
            Some(deadline),
        )
        .unwrap();
        assert!(gone, "{what} {} is still alive after 30 s", self.pid);
    }
}

/// Makes `cmd` start with `listener` at fd 3 and without close-on-exec,
/// as systemd's socket activation hands it (the caller sets `LISTEN_FDS`,
/// `LISTEN_FDNAMES` and, through a shell, `LISTEN_PID`).
pub fn listener_at_fd3(cmd: &mut std::process::Command, listener: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = listener.as_raw_fd();
    // SAFETY: between fork and exec the closure only calls dup2 and fcntl,
    // which are async-signal-safe, on an fd the parent keeps open; fd 3 is
    // left without close-on-exec (dup2 clears it on a copy; when the
    // listener already is fd 3, fcntl does).
    unsafe {
        cmd.pre_exec(move || {
            let rc = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A process running as nobody (65534) outside any sandbox, pausing until
/// killed: the target of signal tests. Killed and reaped on drop.
pub struct Victim(pub libc::pid_t);

impl Victim {
    /// Starts it and returns once it runs as nobody. The caller must be
    /// single-threaded (a case process).
    pub fn start() -> Self {
        use std::os::fd::AsRawFd;
        let (r, w) = rustix::pipe::pipe().unwrap();
        // SAFETY: single-threaded case process; the child drops to nobody,
        // says so on the pipe and sleeps until killed.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: integer arguments, then a one-byte write from a static.
            unsafe {
                libc::setresgid(65534, 65534, 65534);
                libc::setresuid(65534, 65534, 65534);
                libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        drop(w);
        let mut b = [0u8];
        assert_eq!(rustix::io::read(&r, &mut b).unwrap(), 1, "victim ready");
        Self(pid)
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        // SAFETY: our own unreaped child: its pid cannot be reused yet.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}
