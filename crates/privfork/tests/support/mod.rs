//! A tiny test runner for code that must run in a single-threaded process.
//!
//! libtest runs every test on a thread of its own, so a libtest process is
//! always multithreaded, and privilege drops are process-wide and
//! irreversible. These test binaries use `harness = false`: the runner starts
//! a fresh copy of the binary for every case (`--privfork-case NAME`), in
//! which the case runs on the main and only thread. A case passes when its
//! process exits 0; a panic (failed assertion) exits 101.
#![allow(dead_code)]

use std::process::{Command, Stdio};

/// A test case: its name and body.
pub type Case = (&'static str, fn());

const CASE_FLAG: &str = "--privfork-case";

/// Runs the cases named on the command line (all when none is), each in
/// its own process, and exits with the result. `helpers` are bodies that
/// cases start as separate processes; they are not tests themselves.
pub fn main(cases: &[Case], helpers: &[Case]) -> ! {
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
    let selected: Vec<&Case> = cases
        .iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests (one process each)", selected.len());
    let mut failed = Vec::new();
    for (name, _) in &selected {
        let out = Command::new(&exe)
            .args([CASE_FLAG, name])
            .stdin(Stdio::null())
            .output()
            .expect("start test case process");
        if out.status.success() {
            println!("test {name} ... ok");
        } else {
            println!("test {name} ... FAILED ({})", out.status);
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
