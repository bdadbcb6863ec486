//! What the two smooth restarts share — the process family's
//! (`family::supervisor::restart`) and `privfork serve`'s: SIGHUPs folded
//! into one restart at a time, and what the supervisor tells systemd.
//!
//! One restart runs at a time. A SIGHUP during one is folded into exactly
//! one more, begun when it ends (however many came meanwhile): the last
//! request always sees a restart that began after it, and a burst of them
//! costs one extra restart, not a queue.
//!
//! Under systemd (`NOTIFY_SOCKET` set, `Type=notify-reload` or `notify`)
//! the supervisor reports `RELOADING=1` with `MONOTONIC_USEC` when a
//! restart begins, `READY=1` with a `STATUS=` line when it ends (whether it
//! worked or the old generation serves on), and `STOPPING=1` when it
//! stops. Outside systemd each is a no-op.

/// SIGHUPs folded into restarts (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Fold {
    /// Restarts begun so far (the number of the last one).
    pub(crate) count: u64,
    /// The one under way.
    running: Option<u64>,
    /// A SIGHUP came during it: one more follows.
    again: bool,
}

/// What to do with a SIGHUP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// Begin restart number `n` now.
    Begin(u64),
    /// Restart `running` is under way: one more follows it. `first`: the
    /// first SIGHUP folded into it (worth a log line; later ones are not).
    Folded { running: u64, first: bool },
}

impl Fold {
    /// Picks up where an earlier image left off (the family's exec in
    /// place): `count` begun, `running` under way, `again` folded.
    pub(crate) fn resumed(count: u64, running: Option<u64>, again: bool) -> Self {
        Self {
            count,
            running,
            again,
        }
    }

    /// Whether a SIGHUP was folded into the restart under way.
    pub(crate) fn folded(&self) -> bool {
        self.again
    }

    /// A SIGHUP came: begin a restart, or fold it into the next one.
    pub(crate) fn request(&mut self) -> Request {
        match self.running {
            Some(running) => {
                let first = !self.again;
                self.again = true;
                Request::Folded { running, first }
            }
            None => Request::Begin(self.begin()),
        }
    }

    /// Numbers and marks as running a restart begun without a SIGHUP of
    /// its own (a folded one), or by one (through [`Fold::request`]).
    pub(crate) fn begin(&mut self) -> u64 {
        self.count += 1;
        self.running = Some(self.count);
        self.count
    }

    /// The restart under way ended; whether a folded one is to begin now.
    pub(crate) fn done(&mut self) -> bool {
        self.running = None;
        std::mem::take(&mut self.again)
    }

    /// Stopping: no folded restart follows.
    pub(crate) fn forget_folded(&mut self) {
        self.again = false;
    }
}

/// `RELOADING=1` and `MONOTONIC_USEC=now` to systemd.
pub(crate) fn notify_reloading() {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    let _ = sd_notify::notify(&states);
}

/// `READY=1` and `STATUS=status` to systemd.
pub(crate) fn notify_ready(status: &str) {
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// `STATUS=status` to systemd.
pub(crate) fn notify_status(status: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(status)]);
}

/// `STOPPING=1` to systemd.
pub(crate) fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sighups_during_a_restart_fold_into_one_more() {
        let mut f = Fold::default();
        assert_eq!(f.request(), Request::Begin(1));
        assert_eq!(
            f.request(),
            Request::Folded {
                running: 1,
                first: true
            }
        );
        assert_eq!(
            f.request(),
            Request::Folded {
                running: 1,
                first: false
            }
        );
        assert!(f.done(), "one more follows");
        assert_eq!(f.begin(), 2);
        assert!(!f.done(), "nothing came during restart 2");
        assert_eq!(f.request(), Request::Begin(3));
        f.request();
        f.forget_folded();
        assert!(!f.done());
    }
}
