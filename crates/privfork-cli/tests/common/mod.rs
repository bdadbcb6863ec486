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
