//! The smooth restart: SIGHUP starts a new generation without a moment in
//! which nothing accepts on the listeners, and without losing a request.
//!
//! 1. **Preflight.** The binary at the path main first started from is
//!    opened once (pinned); that opened file runs with main's arguments
//!    and the family's check arguments (`--check`) under a deadline, with
//!    [`record::PREFLIGHT_ENV`] naming the state record version this
//!    image writes (a binary that cannot read it exits
//!    [`record::EXIT_WRONG_VERSION`]). Any failure: the restart ends
//!    there, the running generation serves on, the log and sd_notify's
//!    STATUS say why.
//! 2. **Exec in place.** Once every member's channel is quiet (nothing
//!    half-read, nothing queued), main writes the state record to a
//!    sealed memfd, clears close-on-exec on exactly the fds the record
//!    names (listeners, the serving generation's pinned binary, each
//!    member's pidfd, channel and stderr pipe, channel ends waiting for a
//!    partner, the record), and execs the *pinned* file with its own argv
//!    — same pid, so systemd and the members' parent-death signal and
//!    parent check stay right. Main is single-threaded (checked) and the
//!    signals it handles stay blocked across the exec, pending ones
//!    included. If the exec fails, the flags are set back and the old
//!    image serves on.
//! 3. **Adopt and start.** The new image ([`adopt`]) reads the record
//!    (version first), takes each fd it names, checking its kind, and
//!    supervises the old generation as serving; then it starts every role
//!    anew from its own image, as the next generation.
//! 4. **Cutover.** When every new member has said ready (it accepts on
//!    the same listening sockets), the old generation gets `Drain`: stop
//!    accepting, hand idle connections over (main passes each to a new
//!    member of the same role), finish requests in flight (answered with
//!    `Connection: close`) within the drain deadline; what is left then is
//!    killed. A new member that dies or is not ready in time fails the
//!    restart: the new generation is killed and the old one serves on.
//! 5. The restart ends when the old generation is gone (or the failed new
//!    one is): READY=1 and STATUS to systemd, one log line with the
//!    handover's times. SIGHUPs during a restart are coalesced into one
//!    more, run after it.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use super::Main;
use super::members::{Link, Phase, allowed, stop_member};
use crate::exe::{Exe, Spawn};
use crate::family::protocol::{self, ChildState};
use crate::family::record::{
    self, EXIT_WRONG_VERSION, MemberRecord, PREFLIGHT_ENV, PendingRecord, Record, RunRecord,
    STATE_ENV,
};
use crate::family::relay::Source;
use crate::family::status::{RestartReport, unix_ms};
use crate::process::Child;

/// How long main waits for every member's channel to be quiet before it
/// gives the exec up.
const QUIET_TIMEOUT: Duration = Duration::from_secs(1);
/// How often it looks again meanwhile.
const QUIET_RETRY: Duration = Duration::from_millis(5);
/// Variables of main's environment that describe this image's start, not
/// the next one's: never passed to a preflight or across the exec.
const START_ONLY_ENV: &[&str] = &[STATE_ENV, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Main's restarts: counters, the one under way, the last one's outcome.
#[derive(Default)]
pub(super) struct Restarts {
    /// Restarts begun since main first started, and SIGHUPs folded into
    /// the next one (shared with `privfork serve`).
    pub fold: crate::reload::Fold,
    pub last: Option<RestartReport>,
    pub current: Option<InProgress>,
}

pub(super) struct InProgress {
    pub(super) number: u64,
    /// When its SIGHUP came (`CLOCK_MONOTONIC`, ns: the same clock in the
    /// new image).
    pub(super) began_ns: u64,
    pub(super) stage: Stage,
}

pub(super) enum Stage {
    /// The new binary's check runs (killed at `until`).
    Preflight {
        child: Child,
        out: Source,
        until: Instant,
        exe: Exe,
        file: FileId,
    },
    /// Checked; waiting for every channel to be quiet and no member
    /// stopping, then the exec. Members that keep it waiting past
    /// [`QUIET_TIMEOUT`] are killed (once).
    Exec {
        since: Instant,
        exe: Exe,
        file: FileId,
        killed: bool,
        /// How many times the channels were looked at meanwhile.
        samples: u32,
        /// When the restart gives up waiting.
        until: Instant,
    },
    /// In the new image: the new generation starts.
    Starting,
    /// The new generation serves; the old one drains.
    Draining { accepting_ms: u64 },
    /// Failed; the new generation's processes are being ended.
    Failing { reason: String },
}

/// What identifies the bytes of a pinned binary: device, inode, size,
/// modification and change times. The exec runs the file the preflight
/// checked (the same fd); this catches the same file rewritten in place
/// in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId([i64; 7]);

impl FileId {
    fn of(exe: &Exe) -> std::io::Result<Self> {
        let st = rustix::fs::fstat(exe)?;
        Ok(Self([
            st.st_dev as i64,
            st.st_ino as i64,
            st.st_size,
            st.st_mtime,
            st.st_mtime_nsec as i64,
            st.st_ctime,
            st.st_ctime_nsec as i64,
        ]))
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

fn ms_since(ns: u64) -> u64 {
    monotonic_ns().saturating_sub(ns) / 1_000_000
}

impl Main<'_> {
    pub(super) fn on_sighup(&mut self) {
        if self.stopping.is_some() {
            self.log.log("SIGHUP while stopping: ignored");
            return;
        }
        match self.restarts.fold.request() {
            crate::reload::Request::Folded { running, first } => {
                if first {
                    self.log.log(&format!(
                        "SIGHUP during restart {running}: one more restart follows it \
                         (further ones are folded into that)"
                    ));
                }
            }
            crate::reload::Request::Begin(number) => self.begin_restart(number),
        }
    }

    fn begin_restart(&mut self, number: u64) {
        let began_ns = monotonic_ns();
        crate::reload::notify_reloading();
        self.status_cache = None;
        self.log.log(&format!(
            "restart {number}: checking {} ({})",
            self.path.display(),
            self.family.check_args.join(" ")
        ));
        match self.spawn_preflight() {
            Ok(stage) => {
                self.restarts.current = Some(InProgress {
                    number,
                    began_ns,
                    stage,
                });
            }
            Err(reason) => {
                self.restarts.current = Some(InProgress {
                    number,
                    began_ns,
                    stage: Stage::Starting,
                });
                self.finish(false, format!("preflight: {reason}"));
            }
        }
    }

    /// Pins the binary at main's path and starts its check.
    fn spawn_preflight(&mut self) -> Result<Stage, String> {
        let exe = Exe::from_path(&self.path).map_err(|e| e.to_string())?;
        let file = FileId::of(&exe).map_err(|e| format!("fstat of the new binary: {e}"))?;
        let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| format!("pipe: {e}"))?;
        let devnull = crate::fork_as::dev_null().map_err(|e| format!("/dev/null: {e}"))?;
        let mut argv = std::env::args_os();
        let arg0 = argv.next().unwrap_or_else(|| self.path.clone().into());
        let mut spawn = Spawn::new(&exe);
        spawn
            .arg0(&arg0)
            .args(argv)
            .args(&self.family.check_args)
            .env(PREFLIGHT_ENV, record::VERSION.to_string())
            .env(record::PREFLIGHT_LISTENERS_ENV, self.listeners.names())
            .fd(0, devnull.as_fd())
            .fd(1, out_w.as_fd())
            .fd(2, out_w.as_fd());
        // A check talks to nobody: not to systemd either.
        for k in START_ONLY_ENV.iter().chain(&["NOTIFY_SOCKET"]) {
            spawn.env_remove(k);
        }
        let spawned = spawn.spawn().map_err(|e| e.to_string())?;
        drop(out_w);
        let child = Child::from_pidfd(spawned.pidfd).map_err(|e| e.to_string())?;
        let out = Source::new(out_r, format!("[preflight {}]", child.pid()))
            .map_err(|e| e.to_string())?;
        Ok(Stage::Preflight {
            child,
            out,
            until: Instant::now() + self.family.preflight_timeout,
            exe,
            file,
        })
    }

    /// The preflight's pidfd, output pipe and deadline, while it runs.
    pub(super) fn preflight_fds(&self) -> Option<(&Child, Option<BorrowedFd<'_>>, Instant)> {
        match &self.restarts.current.as_ref()?.stage {
            Stage::Preflight {
                child, out, until, ..
            } => Some((child, out.fd(), *until)),
            _ => None,
        }
    }

    /// When main must look at the restart again without an fd waking it.
    pub(super) fn restart_wake(&self) -> Option<Instant> {
        match &self.restarts.current.as_ref()?.stage {
            Stage::Exec { .. } => Some(Instant::now() + QUIET_RETRY),
            _ => None,
        }
    }

    pub(super) fn on_preflight_output(&mut self) {
        if let Some(InProgress {
            stage: Stage::Preflight { out, .. },
            ..
        }) = &mut self.restarts.current
        {
            out.read(&mut self.log);
        }
    }

    pub(super) fn on_preflight_exit(&mut self) {
        let Some(InProgress {
            stage: Stage::Preflight { child, out, .. },
            ..
        }) = &mut self.restarts.current
        else {
            return;
        };
        let status = match child.try_wait() {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                let reason = format!("preflight: waiting for it: {e}");
                self.finish(false, reason);
                return;
            }
        };
        out.read(&mut self.log);
        if status.success() {
            let Some(InProgress { stage, .. }) = &mut self.restarts.current else {
                return;
            };
            let Stage::Preflight { exe, file, .. } = std::mem::replace(stage, Stage::Starting)
            else {
                return;
            };
            *stage = Stage::Exec {
                since: Instant::now(),
                exe,
                file,
                killed: false,
                samples: 0,
                until: Instant::now() + QUIET_TIMEOUT * 2 + super::RESTART_STOP_TIMEOUT,
            };
            // Busy counts start now, not in an earlier restart.
            for gn in &mut self.gens {
                for m in &mut gn.members {
                    if let Some(r) = &mut m.run {
                        r.busy_samples = 0;
                    }
                }
            }
            return;
        }
        let path = self.path.display();
        let reason = if status.code() == Some(EXIT_WRONG_VERSION) {
            format!(
                "preflight: {path} cannot take over from this main (the state record \
                 version {} it writes, or the listeners or users its roles need: \
                 the check's output above says which)",
                record::VERSION
            )
        } else {
            format!(
                "preflight: `{path} {}` {status}",
                self.family.check_args.join(" ")
            )
        };
        self.finish(false, reason);
    }

    /// Moves the restart on where no fd event does: the preflight's
    /// deadline, the exec once the channels are quiet.
    pub(super) fn restart_step(&mut self) {
        let Some(current) = &mut self.restarts.current else {
            return;
        };
        match &mut current.stage {
            Stage::Preflight { child, until, .. } if Instant::now() >= *until => {
                // Reaped later, among the orphans (never waited on here: a
                // check stuck in the kernel must not stop main).
                let _ = child.kill();
                let reason = format!(
                    "preflight: the check did not finish within {:?}; killed",
                    self.family.preflight_timeout
                );
                self.finish(false, reason);
            }
            Stage::Exec {
                since,
                killed,
                samples,
                until,
                ..
            } => {
                *samples += 1;
                let (since, killed, samples, until) = (*since, *killed, *samples, *until);
                if self.channels_quiet() {
                    self.exec_in_place();
                } else if Instant::now() >= until {
                    let why = if self.any_stopping() {
                        "a member was still stopping"
                    } else if !self.orphans.is_empty() {
                        "a killed check was not reaped yet"
                    } else {
                        "members kept main's channels busy"
                    };
                    self.finish(false, format!("{why}; not re-executing"));
                } else if since.elapsed() >= QUIET_TIMEOUT && !killed && !self.any_stopping() {
                    self.kill_unquiet(samples);
                }
            }
            _ => {}
        }
    }

    /// Whether a member is stopping or stopped but not gone (its own stop
    /// deadline ends it; the exec waits for that).
    fn any_stopping(&self) -> bool {
        self.gens.iter().any(|gn| {
            gn.members.iter().any(|m| {
                m.run
                    .as_ref()
                    .is_some_and(|r| matches!(r.state, ChildState::Stopping | ChildState::Stopped))
            })
        })
    }

    /// Kills the members whose channel was busy in at least a tenth of
    /// the `samples` taken while the exec waited (an honest member is
    /// busy for an instant; members taking turns to keep main busy are
    /// each busy often), and gives them as long again to be reaped: a
    /// member must not be able to veto a restart.
    fn kill_unquiet(&mut self, samples: u32) {
        let mut any = false;
        for gn in &mut self.gens {
            for m in &mut gn.members {
                if let Some(r) = &mut m.run
                    && r.busy_samples > 0
                    && r.busy_samples.saturating_mul(10) >= samples
                {
                    any = true;
                    self.log.log(&format!(
                        "{} keeps main's channel busy while a restart waits; killing it",
                        super::members::tag(m.role, m.instance, gn.number, r.child.pid())
                    ));
                    let _ = r.child.kill();
                }
            }
        }
        if any
            && let Some(InProgress {
                stage: Stage::Exec { since, killed, .. },
                ..
            }) = &mut self.restarts.current
        {
            *since = Instant::now();
            *killed = true;
        }
    }

    /// Whether every member's channel holds nothing read and nothing to
    /// send (flushing what is queued first), and no member is stopping
    /// (the record keeps no stop deadline).
    fn channels_quiet(&mut self) -> bool {
        let mut quiet = self.orphans.is_empty();
        for gn in &mut self.gens {
            for m in &mut gn.members {
                if let Some(r) = &mut m.run {
                    if !r.channel_closed {
                        let _ = r.channel.sender().try_flush();
                        if !r.channel.is_quiet() {
                            quiet = false;
                            r.busy_samples += 1;
                        }
                    }
                    // No stop deadline and no held socket cross the exec.
                    quiet &= !matches!(r.state, ChildState::Stopping | ChildState::Stopped)
                        && r.held.is_empty();
                }
            }
        }
        quiet
    }

    /// Writes the state record and execs the checked binary; returns only
    /// if that failed (the restart failed then, and the old image serves
    /// on).
    fn exec_in_place(&mut self) {
        let number = self.restarts.current.as_ref().map_or(0, |c| c.number);
        self.log.log(&format!(
            "restart {number}: executing the checked binary in place (pid {})",
            std::process::id()
        ));
        self.log.flush_for(Duration::from_millis(200));
        let why = self.try_exec();
        self.finish(false, why);
    }

    /// The exec itself: returns why it did not happen (nothing changed
    /// then: the flags it cleared are set again).
    fn try_exec(&self) -> String {
        let Some(InProgress {
            stage: Stage::Exec { exe, file, .. },
            ..
        }) = &self.restarts.current
        else {
            return "no checked binary".to_owned();
        };
        if FileId::of(exe).ok() != Some(*file) {
            return format!(
                "{} changed in place after its check; not executing it",
                self.path.display()
            );
        }
        let (record, mut fds) = self.record();
        let memfd = match record.to_memfd() {
            Ok(fd) => fd,
            Err(e) => return e.to_string(),
        };
        fds.push(memfd.as_fd());
        let argv: Vec<CString> = std::env::args_os()
            .filter_map(|a| CString::new(a.as_bytes()).ok())
            .collect();
        let mut envp: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| !START_ONLY_ENV.iter().any(|s| OsStr::new(s) == k))
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).ok()
            })
            .collect();
        envp.push(
            CString::new(format!("{STATE_ENV}={}", memfd.as_raw_fd())).expect("no NUL in digits"),
        );
        // Exactly the fds the record names cross the exec (and 0-2): any
        // other fd main has without close-on-exec — one its own parent
        // left it, say — gets the flag now.
        if let Err(e) = crate::sys::cloexec_above_stderr_now() {
            return format!("setting close-on-exec: {e}");
        }
        if let Err(e) = set_inheritable(&fds, true) {
            let _ = set_inheritable(&fds, false);
            return format!("clearing close-on-exec: {e}");
        }
        let e = crate::sys::exec_in_place(exe.as_fd(), &argv, &envp);
        // Still here: nothing changed but the flags.
        let _ = set_inheritable(&fds, false);
        format!("exec: {e}")
    }

    /// The state record of the serving generation, and the fds it names.
    fn record(&self) -> (Record, Vec<BorrowedFd<'_>>) {
        let gn = &self.gens[self.serving()];
        let mut fds = vec![gn.exe.as_fd()];
        let listeners: Vec<(String, i32)> = self
            .listeners
            .iter()
            .map(|l| (l.name().to_owned(), l.as_fd().as_raw_fd()))
            .collect();
        fds.extend(self.listeners.iter().map(AsFd::as_fd));
        let members = gn
            .members
            .iter()
            .map(|m| MemberRecord {
                role: m.role.name.to_owned(),
                instance: m.instance,
                user: m.user.clone(),
                restarts: m.restarts,
                quick_deaths: m.quick_deaths,
                backoff_ms: u64::try_from(m.backoff.as_millis()).unwrap_or(u64::MAX),
                run: m.run.as_ref().map(|r| {
                    let pidfd = r.child.as_fd().as_raw_fd();
                    let channel = r.channel.as_fd().as_raw_fd();
                    let stderr = r.stderr.fd().map_or(-1, |f| f.as_raw_fd());
                    fds.extend([r.child.as_fd(), r.channel.as_fd()]);
                    fds.extend(r.stderr.fd());
                    RunRecord {
                        pid: r.child.pid(),
                        pidfd,
                        channel,
                        stderr,
                        state: protocol::state_name(r.state).to_owned(),
                        serial: r.serial,
                        links: r
                            .links
                            .iter()
                            .map(|(j, l)| {
                                (
                                    *j as u32,
                                    match l {
                                        Link::Held(s) => Some(*s),
                                        Link::Pending => None,
                                    },
                                )
                            })
                            .collect(),
                        uptime_ms: u64::try_from(r.started.elapsed().as_millis())
                            .unwrap_or(u64::MAX),
                        report: r.report.clone(),
                    }
                }),
            })
            .collect();
        let pending_ends = gn
            .pending_ends
            .iter()
            .map(|e| {
                fds.push(e.fd.as_fd());
                PendingRecord {
                    member: e.member as u32,
                    from: e.from as u32,
                    creator: e.creator,
                    fd: e.fd.as_raw_fd(),
                }
            })
            .collect();
        let current = self.restarts.current.as_ref();
        let record = Record {
            generation: gn.number,
            path: self.path.to_string_lossy().into_owned(),
            exe_fd: gn.exe.as_fd().as_raw_fd(),
            started_unix_ms: self.started_unix_ms,
            listeners,
            serial: self.serial,
            ready_notified: self.ready_notified,
            restarts: self.restarts.fold.count,
            last: self.restarts.last.clone(),
            began_monotonic_ns: current.map_or(0, |c| c.began_ns),
            again: self.restarts.fold.folded(),
            members,
            pending_ends,
        };
        (record, fds)
    }

    /// Every member of new generation `g` is ready: it serves; the old
    /// one drains.
    pub(super) fn cut_over(&mut self, g: usize) {
        let Some(current) = &mut self.restarts.current else {
            return;
        };
        let accepting_ms = ms_since(current.began_ns);
        current.stage = Stage::Draining { accepting_ms };
        let number = current.number;
        // Counted per drain, for its log line.
        self.handover.passed = 0;
        self.handover.dropped = 0;
        let old = self.serving();
        let drain = self.family.drain_timeout;
        self.gens[old].phase = Phase::Ending {
            until: Instant::now() + drain,
            killed: false,
        };
        for m in &mut self.gens[old].members {
            m.next_start = None;
            if let Some(r) = &mut m.run {
                stop_member(r, allowed(m.role), drain, true);
            }
        }
        self.gens[g].phase = Phase::Serving;
        self.status_cache = None;
        self.log.log(&format!(
            "restart {number}: generation {} accepting after {accepting_ms} ms; \
             generation {} drains (up to {drain:?})",
            self.gens[g].number, self.gens[old].number
        ));
    }

    /// The restart failed: a new generation being started is killed; the
    /// old one serves on.
    pub(super) fn restart_failed(&mut self, reason: String) {
        let Some(current) = &mut self.restarts.current else {
            return;
        };
        if !matches!(current.stage, Stage::Starting) {
            return;
        }
        current.stage = Stage::Failing {
            reason: reason.clone(),
        };
        let mut any = false;
        for gn in &mut self.gens {
            if gn.phase != Phase::Starting {
                continue;
            }
            gn.phase = Phase::Ending {
                until: Instant::now(),
                killed: true,
            };
            for m in &mut gn.members {
                m.next_start = None;
                if let Some(r) = &mut m.run {
                    any = true;
                    let _ = r.child.kill();
                }
            }
        }
        self.log.log(&format!(
            "restart failed ({reason}); killing the new generation"
        ));
        if !any {
            self.generation_ended();
        }
    }

    /// A generation has ended: the restart under way may be done.
    pub(super) fn generation_ended(&mut self) {
        if self
            .gens
            .iter()
            .any(|g| matches!(g.phase, Phase::Ending { .. }))
        {
            return;
        }
        let Some(current) = &self.restarts.current else {
            return;
        };
        match &current.stage {
            Stage::Draining { accepting_ms } => {
                let total = ms_since(current.began_ns);
                let detail = format!(
                    "generation {} serving; handover {total} ms (SIGHUP → new accepting \
                     {accepting_ms} ms → old gone {total} ms); idle connections: {} passed \
                     on, {} closed (client gone, or nobody to take them)",
                    self.gens[self.serving()].number,
                    self.handover.passed,
                    self.handover.dropped
                );
                self.finish(true, detail);
            }
            Stage::Failing { reason } => {
                let reason = reason.clone();
                self.finish(false, reason);
            }
            _ => {}
        }
    }

    /// Ends the restart under way: reports it (log, sd_notify, status)
    /// and starts the coalesced one, if any.
    pub(super) fn finish(&mut self, ok: bool, detail: String) {
        let Some(current) = self.restarts.current.take() else {
            return;
        };
        if let Stage::Preflight { child, .. } = current.stage {
            // A check still running is killed and reaped when it exits.
            let _ = child.kill();
            self.orphans.push(child);
        }
        let generation = self.gens[self.serving()].number;
        let line = if ok {
            format!("restart {} done: {detail}", current.number)
        } else if self.stopping.is_some() {
            format!("restart {} ended: {detail}", current.number)
        } else {
            format!(
                "restart {} failed: {detail}; generation {generation} keeps serving",
                current.number
            )
        };
        self.log.log(&line);
        self.restarts.last = Some(RestartReport {
            number: current.number,
            ok,
            generation,
            detail,
            duration_ms: ms_since(current.began_ns),
            finished_unix_ms: unix_ms(std::time::SystemTime::now()),
        });
        self.status_cache = None;
        let status = format!("generation {generation} serving; last restart: {line}");
        crate::reload::notify_ready(&status);
        if self.restarts.fold.done() && self.stopping.is_none() {
            let number = self.restarts.fold.begin();
            self.begin_restart(number);
        }
    }

    /// The family stops: a restart under way ends here (a running check is
    /// killed; a starting generation is stopped with the rest).
    pub(super) fn abort_restart_for_stop(&mut self) {
        self.restarts.fold.forget_folded();
        let Some(current) = &mut self.restarts.current else {
            return;
        };
        if !matches!(current.stage, Stage::Preflight { .. }) {
            current.stage = Stage::Starting;
        }
        // Whatever generation was starting is stopped with the rest; the
        // serving one stays the serving one until all are gone.
        self.finish(false, "the family is stopping".to_owned());
    }
}

/// Clears (`inheritable`) or sets close-on-exec on each of `fds`.
fn set_inheritable(fds: &[BorrowedFd<'_>], inheritable: bool) -> std::io::Result<()> {
    use rustix::io::FdFlags;
    let flags = if inheritable {
        FdFlags::empty()
    } else {
        FdFlags::CLOEXEC
    };
    for fd in fds {
        rustix::io::fcntl_setfd(fd, flags)?;
    }
    Ok(())
}
