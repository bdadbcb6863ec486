//! What the `privfork run` test files share: running the command and
//! reading its output.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `privfork run ARGS…` (as root: the tests drop to nobody).
pub fn privfork_run(args: &[&str]) -> Output {
    assert!(
        rustix::process::geteuid().is_root(),
        "privfork run tests drop to nobody: run them as root"
    );
    Command::new(env!("CARGO_BIN_EXE_privfork"))
        .arg("run")
        .args(args)
        .output()
        .expect("run privfork")
}

/// `privfork` started with every signal's default disposition, as from a
/// terminal: privfork leaves alone what it was started with ignored (SIGINT
/// and SIGQUIT, for a script's background job: CI runs the tests so).
pub fn privfork_with_default_signals() -> Command {
    let mut c = Command::new("/usr/bin/env");
    c.args(["--default-signal", env!("CARGO_BIN_EXE_privfork")]);
    c
}

/// The exit code, or -1 for a signal.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// 64 random bits (for unique names).
pub fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::hash::RandomState::new().build_hasher().finish()
}

/// A directory of the test's own, writable by nobody, removed on drop.
pub struct Dir(pub std::path::PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let r = random();
        let p = std::env::temp_dir().join(format!("privfork-run-{tag}-{r:016x}"));
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pty pair: the master (non-blocking) and the slave.
pub fn pty() -> (std::os::fd::OwnedFd, std::fs::File) {
    use rustix::pty::OpenptFlags;
    use std::os::unix::fs::OpenOptionsExt;
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(name.to_str().unwrap())
        .unwrap();
    rustix::fs::fcntl_setfl(&master, rustix::fs::OFlags::NONBLOCK).unwrap();
    (master, slave)
}
