//! The `privfork` command, run as a user would.

#[path = "../../privfork/tests/time_limit/mod.rs"]
mod time_limit;
use time_limit::time_limit;

use std::process::Command;

fn privfork(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_privfork"))
        .args(args)
        .output()
        .expect("run privfork");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn id_of_nobody() {
    let _limit = time_limit!();
    let (code, out, _) = privfork(&["id", "nobody"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("user=nobody uid=65534 "), "{out}");
}

#[test]
fn id_of_numeric_uid_without_entry() {
    let _limit = time_limit!();
    let (code, out, _) = privfork(&["id", "4000000"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "user=- uid=4000000 gid=4000000 groups=4000000");
}

#[test]
fn id_with_group() {
    let _limit = time_limit!();
    let (code, out, _) = privfork(&["id", "nobody", "--group", "4242"]);
    assert_eq!(code, 0);
    assert!(out.trim().ends_with("gid=4242 groups=4242"), "{out}");
}

/// `id` and `run` refuse the same bad user or group with the same code
/// (123) and message.
#[test]
fn unknown_user_and_group_are_named() {
    let _limit = time_limit!();
    let (code, _, err) = privfork(&["id", "no-such-user-pf"]);
    assert_eq!(code, 123);
    assert!(err.contains("unknown user \"no-such-user-pf\""), "{err}");
    let (code, _, err) = privfork(&["id", "nobody", "-g", "no-such-group-pf"]);
    assert_eq!(code, 123);
    assert!(err.contains("unknown group \"no-such-group-pf\""), "{err}");
    let (run_code, _, run_err) = privfork(&["run", "-u", "no-such-user-pf", "--", "/bin/true"]);
    assert_eq!(run_code, 123, "{run_err}");
    assert!(
        run_err.contains("unknown user \"no-such-user-pf\""),
        "{run_err}"
    );
    let (run_code, _, run_err) = privfork(&[
        "run",
        "-u",
        "nobody",
        "-g",
        "no-such-group-pf",
        "--",
        "/bin/true",
    ]);
    assert_eq!(run_code, 123, "{run_err}");
    assert!(
        run_err.contains("unknown group \"no-such-group-pf\""),
        "{run_err}"
    );
}

#[test]
fn help_lists_the_commands() {
    let _limit = time_limit!();
    let (code, out, _) = privfork(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("id"), "{out}");
    // What exists today, not "run and serve to come".
    assert!(out.contains("run") && !out.contains("to come"), "{out}");
}

/// `run --help` says who the program runs as without -u, and names the
/// options of a clean start.
#[test]
fn run_help_says_who_the_program_runs_as() {
    let _limit = time_limit!();
    let (code, out, _) = privfork(&["run", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("without -u, as the caller"), "{out}");
    for opt in [
        "--tty",
        "--inherit-env",
        "--chdir",
        "--cpu",
        "--memory",
        "--file-size",
        "--processes",
        "--open-files",
        "--timeout",
        "--net",
    ] {
        assert!(out.contains(opt), "{opt}: {out}");
    }
    assert!(out.contains("every process"), "RLIMIT_NPROC's scope: {out}");
    assert!(
        out.contains("NOTIFY_SOCKET of its own") && out.contains("STATUS="),
        "sd_notify: {out}"
    );
}
