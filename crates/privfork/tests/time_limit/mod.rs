//! A time limit for each libtest case: a hang aborts the test binary with
//! a message naming the test, instead of stalling CI.
//!
//! Each test starts with `let _limit = time_limit!();`. A watchdog thread
//! waits for the guard to be dropped (the test returned or unwound); if
//! the limit passes first, it prints `test NAME ... FAILED (timed out
//! after Ns)` to stderr and aborts the process (libtest cannot stop one
//! test's thread, and the binary's other tests die with it).
//!
//! The limit is 60 s, or the number of seconds in
//! `PRIVFORK_TEST_TIMEOUT_SECS` (the variable the `harness = false`
//! runner in `support` reads too); `time_limit!(secs)` gives a test its
//! own limit.
#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

/// The environment variable that sets the default limit, in seconds.
pub const TIMEOUT_ENV: &str = "PRIVFORK_TEST_TIMEOUT_SECS";

/// The default limit.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(60);

/// Starts the time limit of the enclosing test, named after its function;
/// keep the returned guard alive to the end of the test.
macro_rules! time_limit {
    () => {
        crate::time_limit::start(crate::time_limit::enclosing!(), None)
    };
    ($secs:expr) => {
        crate::time_limit::start(
            crate::time_limit::enclosing!(),
            Some(::std::time::Duration::from_secs($secs)),
        )
    };
}
pub(crate) use time_limit;

/// The path of the function this expands in (`module::test_name`).
macro_rules! enclosing {
    () => {{
        fn here() {}
        let name = ::std::any::type_name_of_val(&here);
        // An async test's body is a closure (`…::{{closure}}::here`).
        name.strip_suffix("::here")
            .unwrap_or(name)
            .trim_end_matches("::{{closure}}")
    }};
}
pub(crate) use enclosing;

/// The guard of a running time limit; dropping it ends the watch.
#[must_use = "the limit ends when the guard is dropped"]
#[derive(Debug)]
pub struct TimeLimit {
    done: Option<mpsc::Sender<()>>,
    watchdog: Option<std::thread::JoinHandle<()>>,
}

/// The default limit: [`TIMEOUT_ENV`] if set, else [`DEFAULT_LIMIT`].
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

/// Starts watching test `name` for `limit` (default: [`default_limit`]).
pub fn start(name: &'static str, limit: Option<Duration>) -> TimeLimit {
    let limit = limit.unwrap_or_else(default_limit);
    let (done, wait) = mpsc::channel::<()>();
    let watchdog = std::thread::Builder::new()
        .name(format!("time limit of {name}"))
        .spawn(move || {
            // Disconnected (the guard dropped) or a message both end the
            // watch; only the timeout aborts.
            if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
                eprintln!(
                    "\ntest {name} ... FAILED (timed out after {}s); aborting the test binary",
                    limit.as_secs()
                );
                std::process::abort();
            }
        })
        .expect("start the watchdog thread");
    TimeLimit {
        done: Some(done),
        watchdog: Some(watchdog),
    }
}

impl Drop for TimeLimit {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }
}
