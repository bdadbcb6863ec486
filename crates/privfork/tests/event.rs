//! `event::Signals` and the event loop with real signals and children. A
//! signal mask is per thread and a signal sent to the process goes to any
//! thread that does not block it, so each case runs in a fresh
//! single-threaded process (see `support`).

mod support;

use std::time::{Duration, Instant};

use privfork::event::{Interest, Poller, Signals};
use privfork::process::{Child, ExitStatus, Signal};
use support::{assert_no_children, status_field};

fn main() {
    support::main(
        &[
            (
                "signals_are_read_from_the_signalfd",
                signals_are_read_from_the_signalfd,
            ),
            (
                "sigchld_and_the_pidfd_wake_one_loop",
                sigchld_and_the_pidfd_wake_one_loop,
            ),
            (
                "uncatchable_signals_are_refused",
                uncatchable_signals_are_refused,
            ),
        ],
        &[],
    )
}

fn blocked_mask() -> u64 {
    u64::from_str_radix(&status_field("SigBlk"), 16).unwrap()
}

fn bit(sig: Signal) -> u64 {
    1 << (sig.as_raw() - 1)
}

fn signals_are_read_from_the_signalfd() {
    assert_eq!(blocked_mask(), 0);
    let signals = Signals::new(&[Signal::USR1, Signal::TERM]).unwrap();
    assert_eq!(blocked_mask(), bit(Signal::USR1) | bit(Signal::TERM));
    assert_eq!(signals.read().unwrap(), None);
    let me = rustix::process::getpid();
    rustix::process::kill_process(me, Signal::TERM).unwrap();
    rustix::process::kill_process(me, Signal::USR1).unwrap();
    let mut poller = Poller::<1>::new();
    poller.add(&signals, Interest::READABLE, 5);
    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(poller.wait(Some(deadline)).unwrap(), 1);
    assert!(poller.readiness(5).unwrap().is_readable());
    // Standard signals come lowest number first.
    let first = signals.read().unwrap().expect("SIGUSR1 pending");
    assert_eq!((first.signal, first.name()), (libc::SIGUSR1, "SIGUSR1"));
    assert_eq!(first.pid, me.as_raw_nonzero().get() as u32);
    assert_eq!(first.uid, 0);
    let second = signals.read().unwrap().expect("SIGTERM pending");
    assert_eq!(second.name(), "SIGTERM");
    assert_eq!(signals.read().unwrap(), None);
    // Nothing pending now: dropping restores the mask without dying.
    drop(signals);
    assert_eq!(blocked_mask(), 0);
}

#[allow(
    clippy::zombie_processes,
    reason = "the privfork handle reaps it, through its pidfd"
)]
fn sigchld_and_the_pidfd_wake_one_loop() {
    let signals = Signals::new(&[Signal::CHILD]).unwrap();
    let cmd = std::process::Command::new("sh")
        .args(["-c", "exit 3"])
        .spawn()
        .unwrap();
    let mut child = Child::from_pid(cmd.id()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut got_sigchld, mut got_exit) = (false, false);
    while !(got_sigchld && got_exit) {
        let mut poller = Poller::<2>::new();
        poller.add(&signals, Interest::READABLE, 0);
        if !got_exit {
            poller.add(&child, Interest::READABLE, 1);
        }
        assert!(poller.wait(Some(deadline)).unwrap() > 0, "nothing in 10 s");
        let ready: Vec<usize> = poller.ready().map(|(t, _)| t).collect();
        drop(poller);
        for token in ready {
            match token {
                0 => {
                    while let Some(info) = signals.read().unwrap() {
                        assert_eq!(info.signal, libc::SIGCHLD);
                        assert_eq!(info.pid, child.pid());
                        got_sigchld = true;
                    }
                }
                _ => {
                    assert_eq!(child.try_wait().unwrap(), Some(ExitStatus::Exited(3)));
                    got_exit = true;
                }
            }
        }
    }
    assert_no_children();
}

fn uncatchable_signals_are_refused() {
    for sig in [Signal::KILL, Signal::STOP] {
        let e = Signals::new(&[Signal::HUP, sig]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
    assert_eq!(blocked_mask(), 0, "nothing stays blocked on error");
}
