//! Main: starts every member, supervises, restarts the family smoothly on
//! SIGHUP, stops it on SIGTERM.
//!
//! - [`members`]: generations, their member slots, start, exit, backoff;
//! - [`messages`]: what members send, status answers, handed-over
//!   connections;
//! - [`restart`]: the smooth restart (preflight, exec in place with the
//!   state record, cutover, drain, the outcome);
//! - [`adopt`]: the new image's side (adopt the running generation, start
//!   the next).

mod adopt;
mod members;
mod messages;
mod restart;

use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::Family;
use super::relay::Sink;
use super::status::{FamilyStatus, UserNames};
use crate::event::{Interest, Poller, Readiness, Signals};
use crate::listen::Listeners;
use members::{Generation, Member, Phase, allowed, stop_member};

/// How long a member stopped for a restart (a peer of it died) has to
/// finish before it is killed.
const RESTART_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections handed from a draining generation to the serving one.
#[derive(Debug, Default)]
struct Handovers {
    /// Passed on to a member of the serving generation.
    passed: u64,
    /// Closed: nobody in the serving generation could take them.
    dropped: u64,
    /// Round-robin position among the takers.
    next: usize,
}

pub(super) struct Main<'a> {
    family: &'a Family,
    listeners: Listeners,
    /// Where the binary was when main first started: what a restart's
    /// preflight opens.
    path: std::path::PathBuf,
    started_unix_ms: u64,
    user_names: UserNames,
    /// The last status answer and when it was made.
    status_cache: Option<(Instant, FamilyStatus)>,
    /// Exactly one is serving; during a restart a starting or an ending
    /// one runs beside it.
    gens: Vec<Generation>,
    /// The serial of the last run started.
    serial: u64,
    log: Sink,
    stopping: Option<Instant>,
    killed_at_deadline: bool,
    ready_notified: bool,
    restarts: restart::Restarts,
    handover: Handovers,
    /// Killed children main still has to reap (a preflight cut short);
    /// reaped as their pidfds say they exited, never waited on.
    orphans: Vec<crate::process::Child>,
}

/// Runs main until the family stops; the exit code.
pub(super) fn run(family: &Family) -> Result<i32, String> {
    // Every role's user exists, before anything is bound or started.
    for r in family.roles {
        if let Some(u) = family.user_of(r) {
            crate::identity::Identity::user(&u)
                .map_err(|e| format!("role {:?}: user {u:?}: {e}", r.name))?;
        }
    }
    let signals = Signals::new(&[Signal::CHILD, Signal::TERM, Signal::INT, Signal::HUP])
        .map_err(|e| format!("signalfd: {e}"))?;
    // Room for what a restart holds at once (connections queued to new
    // members, sockets held for old ones): the soft fd limit up to the
    // hard one.
    if let Some(hard) = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        );
    }
    let _ = rustix::thread::set_name(c"privfork-main");
    let (mut log, note) = Sink::for_stderr();
    if let Some(note) = note {
        log.log(&note);
    }
    // A smooth restart's new image adopts the running generation;
    // otherwise main starts the first one.
    let mut main = match adopt::adopt(family, log)? {
        Ok(main) => main,
        Err(log) => first_start(family, log)?,
    };
    let code = main.run(&signals);
    main.log.flush_for(Duration::from_secs(1));
    // A killed check not reaped yet: given up, not waited on (main exits;
    // init reaps it).
    for c in main.orphans.drain(..) {
        drop(c.into_pidfd());
    }
    Ok(code)
}

/// Main's first start: binds (or takes from systemd) the listeners and
/// lays out generation 1.
fn first_start(family: &Family, log: Sink) -> Result<Main<'_>, String> {
    let exe = crate::exe::Exe::pin().map_err(|e| e.to_string())?;
    let listeners = match Listeners::from_systemd().map_err(|e| e.to_string())? {
        Some(l) => l,
        None => Listeners::bind(&family.listen).map_err(|e| e.to_string())?,
    };
    check_listeners(family, &listeners)?;
    let path = exe.path().to_owned();
    let gn = Generation {
        number: 1,
        exe,
        phase: Phase::Serving,
        members: slots(family),
        pending_ends: Vec::new(),
    };
    Ok(Main {
        family,
        listeners,
        path,
        started_unix_ms: super::status::unix_ms(std::time::SystemTime::now()),
        user_names: UserNames::default(),
        status_cache: None,
        gens: vec![gn],
        serial: 0,
        log,
        stopping: None,
        killed_at_deadline: false,
        ready_notified: false,
        restarts: restart::Restarts::default(),
        handover: Handovers::default(),
        orphans: Vec::new(),
    })
}

/// Every role's listeners are among `listeners`.
fn check_listeners(family: &Family, listeners: &Listeners) -> Result<(), String> {
    for r in family.roles {
        if r.listeners == super::ALL_LISTENERS {
            continue;
        }
        for name in r.listeners {
            if listeners.get(name).is_none() {
                return Err(format!(
                    "role {:?} needs listener {name:?}, which is not configured (have: {:?})",
                    r.name,
                    listeners.names()
                ));
            }
        }
    }
    Ok(())
}

/// A new generation's member slots, in table order.
fn slots(family: &Family) -> Vec<Member> {
    family
        .roles
        .iter()
        .flat_map(|r| (0..r.instances).map(move |i| (r, i)))
        .map(|(role, instance)| {
            let user = family
                .users
                .iter()
                .find(|(n, _)| *n == role.name)
                .map(|(_, u)| u.clone());
            Member::new(role, instance, user)
        })
        .collect()
}

/// What woke main.
#[derive(Debug, Clone, Copy)]
enum Event {
    Signals,
    LogWritable,
    Preflight,
    PreflightOutput,
    Exit(usize, usize),
    Channel(usize, usize),
    Stderr(usize, usize),
    Orphan,
}

impl Main<'_> {
    fn run(&mut self, signals: &Signals) -> i32 {
        loop {
            self.start_due();
            self.restart_step();
            if let Some(code) = self.check_stopped() {
                return code;
            }
            let ready = match self.wait(signals) {
                Ok(r) => r,
                Err(e) => {
                    self.log.log(&format!("poll: {e}; stopping"));
                    self.kill_all();
                    return 1;
                }
            };
            for (event, readiness) in ready {
                match event {
                    Event::Signals => self.on_signals(signals),
                    Event::LogWritable => self.log.write_some(),
                    Event::Preflight => self.on_preflight_exit(),
                    Event::PreflightOutput => self.on_preflight_output(),
                    Event::Exit(g, i) => self.on_exit(g, i),
                    Event::Channel(g, i) => {
                        if readiness.is_writable() {
                            self.flush_channel(g, i);
                        }
                        if readiness.is_readable() || readiness.is_hangup() {
                            self.on_channel(g, i);
                        }
                    }
                    Event::Orphan => {
                        self.orphans
                            .retain_mut(|c| matches!(c.try_wait(), Ok(None)));
                    }
                    Event::Stderr(g, i) => {
                        if let Some(r) = &mut self.gens[g].members[i].run {
                            r.stderr.read(&mut self.log);
                        }
                    }
                }
            }
            // Messages already read into a channel's buffer (left by the
            // per-wake-up budget): the fd will not say so.
            for g in 0..self.gens.len() {
                for i in 0..self.gens[g].members.len() {
                    if self.buffered(g, i) {
                        self.on_channel(g, i);
                    }
                }
            }
            self.check_deadlines();
            self.end_generations();
        }
    }

    /// The serving generation's index in `gens`.
    fn serving(&self) -> usize {
        self.gens
            .iter()
            .position(|g| g.phase == Phase::Serving)
            .expect("one generation serves")
    }

    /// Whether member `i` of `g` holds a whole message already read.
    fn buffered(&self, g: usize, i: usize) -> bool {
        self.gens[g].members[i]
            .run
            .as_ref()
            .is_some_and(|r| !r.channel_closed && r.channel.has_buffered())
    }

    /// Polls everything main watches until something is ready or the next
    /// deadline.
    fn wait(&self, signals: &Signals) -> std::io::Result<Vec<(Event, Readiness)>> {
        let mut events = vec![
            Event::Signals,
            Event::LogWritable,
            Event::Preflight,
            Event::PreflightOutput,
        ];
        let mut p: Poller<'_, 32> = Poller::new();
        p.add(signals, Interest::READABLE, 0);
        if self.log.pending() {
            p.add_fd(self.log.fd(), Interest::WRITABLE, 1);
        }
        // The stop deadline, until it has been acted on (members killed).
        let mut deadline: Option<Instant> = self.stopping.filter(|_| !self.killed_at_deadline);
        let mut earliest = |d: Option<Instant>| {
            if let Some(d) = d {
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
        };
        if let Some((child, out, until)) = self.preflight_fds() {
            p.add(child, Interest::READABLE, 2);
            if let Some(fd) = out {
                p.add_fd(fd, Interest::READABLE, 3);
            }
            earliest(Some(until));
        }
        earliest(self.restart_wake());
        for c in &self.orphans {
            events.push(Event::Orphan);
            p.add(c, Interest::READABLE, events.len() - 1);
        }
        for (g, gn) in self.gens.iter().enumerate() {
            if let Phase::Ending { until, killed } = gn.phase
                && !killed
            {
                earliest(Some(until));
            }
            for (i, m) in gn.members.iter().enumerate() {
                if gn.phase == Phase::Serving {
                    earliest(m.next_start);
                }
                let Some(r) = &m.run else { continue };
                events.push(Event::Exit(g, i));
                p.add(&r.child, Interest::READABLE, events.len() - 1);
                if !r.channel_closed {
                    let interest = if r.channel.is_flushed() {
                        Interest::READABLE
                    } else {
                        Interest::BOTH
                    };
                    events.push(Event::Channel(g, i));
                    p.add(&r.channel, interest, events.len() - 1);
                }
                if let Some(fd) = r.stderr.fd() {
                    events.push(Event::Stderr(g, i));
                    p.add_fd(fd, Interest::READABLE, events.len() - 1);
                }
                earliest(r.ready_by);
                earliest(r.stop_by);
                if !r.channel_closed && r.channel.has_buffered() {
                    earliest(Some(Instant::now()));
                }
            }
        }
        if p.wait(deadline)? == 0 {
            return Ok(Vec::new());
        }
        Ok(p.ready().map(|(t, r)| (events[t], r)).collect())
    }

    fn on_signals(&mut self, signals: &Signals) {
        while let Ok(Some(info)) = signals.read() {
            match Signal::from_named_raw(info.signal) {
                Some(Signal::TERM) | Some(Signal::INT) => {
                    self.log
                        .log(&format!("{}: stopping the family", info.name()));
                    self.begin_stop();
                }
                Some(Signal::HUP) => self.on_sighup(),
                _ => {} // SIGCHLD: the pidfds say who
            }
        }
    }

    fn begin_stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        crate::reload::notify_stopping();
        self.abort_restart_for_stop();
        let stop_timeout = self.family.stop_timeout;
        self.stopping = Some(Instant::now() + stop_timeout);
        for gn in &mut self.gens {
            for m in &mut gn.members {
                m.next_start = None;
                if let Some(r) = &mut m.run {
                    stop_member(r, allowed(m.role), stop_timeout, false);
                }
            }
        }
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        self.check_stop_deadline(now);
        let mut not_ready = None;
        for gn in &mut self.gens {
            let number = gn.number;
            if let Phase::Ending { until, killed } = &mut gn.phase
                && !*killed
                && *until <= now
            {
                *killed = true;
                for m in &mut gn.members {
                    if let Some(r) = &mut m.run {
                        self.log.log(&format!(
                            "{} still running at the drain deadline; killing it",
                            members::tag(m.role, m.instance, number, r.child.pid())
                        ));
                        r.stop_by = None;
                        let _ = r.child.kill();
                    }
                }
            }
            let starting = gn.phase == Phase::Starting;
            for m in &mut gn.members {
                if let Some(r) = &mut m.run
                    && r.ready_by.is_some_and(|t| t <= now)
                {
                    r.ready_by = None;
                    let what = format!(
                        "{} not ready within {:?}",
                        members::tag(m.role, m.instance, number, r.child.pid()),
                        m.role.ready_timeout
                    );
                    self.log.log(&format!("{what}; killing it"));
                    let _ = r.child.kill();
                    if starting {
                        not_ready = Some(format!("new {what}"));
                    }
                }
                if let Some(r) = &mut m.run
                    && r.stop_by.is_some_and(|t| t <= now)
                {
                    r.stop_by = None;
                    self.log.log(&format!(
                        "{} did not stop in time; killing it",
                        members::tag(m.role, m.instance, number, r.child.pid()),
                    ));
                    let _ = r.child.kill();
                }
            }
        }
        if let Some(why) = not_ready {
            self.restart_failed(why);
        }
    }

    /// The family's stop deadline: every member still running is killed
    /// (before the members' own deadlines, which are no earlier, so the
    /// exit code says some were killed).
    fn check_stop_deadline(&mut self, now: Instant) {
        if let Some(deadline) = self.stopping
            && now >= deadline
            && !self.killed_at_deadline
        {
            self.killed_at_deadline = true;
            for gn in &mut self.gens {
                for m in &mut gn.members {
                    if let Some(r) = &mut m.run {
                        self.log.log(&format!(
                            "{} still running at the stop deadline; killing it",
                            members::tag(m.role, m.instance, gn.number, r.child.pid())
                        ));
                        r.stop_by = None;
                        let _ = r.child.kill();
                    }
                }
            }
        }
    }

    /// Drops ending generations whose members are all gone (a restart
    /// under way may finish then).
    fn end_generations(&mut self) {
        let before = self.gens.len();
        self.gens.retain(|g| {
            !matches!(g.phase, Phase::Ending { .. }) || g.members.iter().any(|m| m.run.is_some())
        });
        if self.gens.len() != before {
            self.status_cache = None;
            self.generation_ended();
        }
    }

    /// Once stopping and every member is gone: the exit code.
    fn check_stopped(&mut self) -> Option<i32> {
        self.stopping?;
        if self.preflight_fds().is_some()
            || self
                .gens
                .iter()
                .any(|g| g.members.iter().any(|m| m.run.is_some()))
        {
            return None;
        }
        self.log.log(if self.killed_at_deadline {
            "stopped (some members were killed at the deadline)"
        } else {
            "stopped"
        });
        Some(i32::from(self.killed_at_deadline))
    }

    fn kill_all(&mut self) {
        for gn in &mut self.gens {
            for m in &mut gn.members {
                if let Some(mut r) = m.run.take() {
                    let _ = r.child.kill_and_wait();
                }
            }
        }
    }
}
