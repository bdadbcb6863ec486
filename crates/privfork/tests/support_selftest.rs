//! The runner in `support` enforces time limits: a case that hangs fails
//! as timed out, its whole process group is killed, and the next case
//! runs. Checked by running this binary as an inner runner over cases
//! that hang (selected by an environment variable) and reading its report.

mod support;
mod time_limit;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the inner run: the runner then runs the hanging cases.
const INNER: &str = "PRIVFORK_SELFTEST_INNER";
/// Where `hangs_with_a_grandchild` writes its grandchild's pid and start
/// time.
const PIDFILE: &str = "PRIVFORK_SELFTEST_PIDFILE";

fn main() {
    if std::env::var_os(INNER).is_some() {
        support::main_with_limits(
            &[
                ("hangs_with_a_grandchild", hangs_with_a_grandchild),
                ("sleeps_past_the_env_limit", sleeps_past_the_env_limit),
                ("passes_after_the_hangs", || {}),
                ("fails_plainly", || panic!("a plain failure")),
            ],
            &[("sleeping_grandchild", sleep_forever)],
            &[("hangs_with_a_grandchild", Duration::from_secs(1))],
        );
    }
    support::main(
        &[
            (
                "hanging_cases_time_out_and_the_run_goes_on",
                hanging_cases_time_out_and_the_run_goes_on,
            ),
            (
                "libtest_time_limit_aborts_a_hang_and_names_it",
                libtest_time_limit_aborts_a_hang_and_names_it,
            ),
        ],
        &[("hang_under_a_time_limit", hang_under_a_time_limit)],
    );
}

fn sleep_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Field 22 of /proc/PID/stat, the start time, which tells a process from
/// a later one that reuses its pid; with field 3, the state.
fn state_and_start(pid: u32) -> Option<(String, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    Some((fields[0].to_owned(), fields[22 - 3].to_owned()))
}

fn hangs_with_a_grandchild() {
    // The grandchild inherits this case's stdout and stderr, as a stray
    // process would: the runner must not wait for them forever.
    #[expect(
        clippy::zombie_processes,
        reason = "this case is killed, never returns; init reaps the grandchild"
    )]
    let grandchild = Command::new(std::env::current_exe().unwrap())
        .args(["--privfork-case", "sleeping_grandchild"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let (_, start) = state_and_start(grandchild.id()).unwrap();
    let mut f = std::fs::File::create(std::env::var_os(PIDFILE).unwrap()).unwrap();
    writeln!(f, "{} {start}", grandchild.id()).unwrap();
    drop(f);
    sleep_forever();
}

fn sleeps_past_the_env_limit() {
    std::thread::sleep(Duration::from_secs(60));
}

fn hanging_cases_time_out_and_the_run_goes_on() {
    let dir = support::TempDir::new("selftest");
    let pidfile = dir.path().join("grandchild");
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .env(INNER, "1")
        .env(PIDFILE, &pidfile)
        .env(support::TIMEOUT_ENV, "2")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!(
        "{stdout}\n(stderr)\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "test hangs_with_a_grandchild ... FAILED (timed out after 1s)\n",
        "test sleeps_past_the_env_limit ... FAILED (timed out after 2s)\n",
        "test passes_after_the_hangs ... ok\n",
        "test fails_plainly ... FAILED (exit status: 101)\n",
        "test result: FAILED. 1 passed; 3 failed;",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{report}");
    }
    assert_eq!(out.status.code(), Some(1), "{report}");
    // 1 s + 2 s of limits, plus start-up; far below the cases' own sleeps.
    assert!(took < Duration::from_secs(30), "inner run took {took:?}");

    // The grandchild was killed with its group: gone, or a zombie that its
    // new parent has not reaped, or its pid now names another process.
    let text = std::fs::read_to_string(&pidfile).expect("the grandchild's pid");
    let (pid, start) = text.trim().split_once(' ').unwrap();
    let pid: u32 = pid.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match state_and_start(pid) {
            None => break,
            Some((state, s)) if state == "Z" || s != start => break,
            Some((state, _)) => assert!(
                Instant::now() < deadline,
                "grandchild {pid} is still alive (state {state}) after its case timed out"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a libtest test with `time_limit!` does when it hangs.
fn hang_under_a_time_limit() {
    let _limit = time_limit::start("selftest::hangs", Some(Duration::from_secs(1)));
    sleep_forever();
}

fn libtest_time_limit_aborts_a_hang_and_names_it() {
    // A guard dropped in time ends its watch without a word.
    drop(time_limit::time_limit!(30));
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--privfork-case", "hang_under_a_time_limit"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
    assert!(
        stderr.contains("test selftest::hangs ... FAILED (timed out after 1s)"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}
