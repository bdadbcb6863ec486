//! Generations and their member slots: starting a member (its channel,
//! stderr pipe, listeners and peer channels placed by exec of the
//! generation's pinned binary), its exit, its restart with backoff.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{Main, RESTART_STOP_TIMEOUT};
use crate::exe::{Exe, Spawn};
use crate::family::protocol::{self, Allowed, ChildState, ToChild, ToMain};
use crate::family::relay::{Sink, Source};
use crate::family::status::MemberReport;
use crate::family::{CHANNEL_FD, FIRST_LISTENER_FD, Restart, Role};
use crate::ipc::Channel;
use crate::process::{Child, ExitStatus};

/// A member that ran at least this long before dying is not crash-looping:
/// its backoff starts over.
const STABLE_UPTIME: Duration = Duration::from_secs(10);
/// Consecutive quick deaths after which a crash loop is reported.
const CRASH_LOOP: u32 = 3;

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// A restart started it; not every member is ready yet. A member that
    /// dies or is not ready in time fails the restart.
    Starting,
    /// The generation serving: members that die are restarted.
    Serving,
    /// Told to finish (a restart's old generation, or a new one that
    /// failed): nothing restarts; what is left at `until` is killed.
    Ending {
        /// When the rest is killed.
        until: Instant,
        /// Whether that was done.
        killed: bool,
    },
}

/// One generation of members, all started from the same pinned binary.
pub(super) struct Generation {
    pub number: u64,
    pub exe: Exe,
    pub phase: Phase,
    pub members: Vec<Member>,
    pub pending_ends: Vec<PendingEnd>,
}

/// One process slot: a role's instance, running or waiting to start.
pub(super) struct Member {
    pub role: &'static Role,
    pub instance: u32,
    /// The user it runs as, when main's caller chose one
    /// ([`crate::family::Family::user`]) instead of the row's.
    pub user: Option<String>,
    pub run: Option<Running>,
    pub next_start: Option<Instant>,
    pub backoff: Duration,
    pub quick_deaths: u32,
    pub restarts: u64,
    /// Stopped on purpose (a peer restarted): start again at once.
    pub restart_now: bool,
}

pub(super) struct Running {
    pub child: Child,
    pub channel: Channel<ToChild, ToMain>,
    /// The member closed its end (it is exiting): not polled any more.
    pub channel_closed: bool,
    pub stderr: Source,
    pub state: ChildState,
    /// Which run this is (unique in main's life, across restarts).
    pub serial: u64,
    /// Its channels to partners: `(partner slot, where the other end is)`.
    pub links: Vec<(usize, Link)>,
    pub started: Instant,
    pub ready_by: Option<Instant>,
    /// Application messages it sent that no handler took (counted, not
    /// a log line each).
    pub unhandled_app: u64,
    /// Told to stop: killed if still running then (dropped once acted on,
    /// so a past deadline does not keep waking main).
    pub stop_by: Option<Instant>,
    /// What it reported about itself when it said ready (cut to size).
    pub report: Option<MemberReport>,
    /// Status answers that could not be sent to it.
    pub status_failures: u64,
    /// Told to drain for a restart (only then may it hand over).
    pub draining: bool,
    /// Connections it handed over so far.
    pub handovers: u64,
    /// Sockets it sent that main did not pass on. Closed only once it is
    /// reaped, with lingering off: it may keep a copy and set `SO_LINGER`
    /// on it, and a lingering TCP close blocks the process that closes
    /// last (main), whatever its fd flags.
    pub held: Vec<OwnedFd>,
    /// Its pidfd said it exited (its last messages are being read).
    pub exited: bool,
    /// How many times its channel was found busy while a restart waited
    /// for quiet channels to exec.
    pub busy_samples: u32,
}

/// How log lines name a member's process: role, instance, generation
/// (after the first), pid.
pub(super) fn tag(role: &Role, instance: u32, generation: u64, pid: u32) -> String {
    if generation > 1 {
        format!("[{}:{instance} g{generation} {pid}]", role.name)
    } else {
        format!("[{}:{instance} {pid}]", role.name)
    }
}

impl Running {
    /// A process of a member, in `state`, with its channel and stderr,
    /// started now; its deadlines and report are the caller's to set.
    pub fn new(
        child: Child,
        channel: Channel<ToChild, ToMain>,
        stderr: Source,
        state: ChildState,
        serial: u64,
        links: Vec<(usize, Link)>,
    ) -> Self {
        Self {
            child,
            channel,
            channel_closed: false,
            stderr,
            state,
            serial,
            links,
            started: Instant::now(),
            ready_by: None,
            unhandled_app: 0,
            stop_by: None,
            report: None,
            status_failures: 0,
            draining: false,
            handovers: 0,
            held: Vec::new(),
            exited: false,
            busy_samples: 0,
        }
    }
}

impl Member {
    pub fn tag(&self, generation: u64, pid: u32) -> String {
        tag(self.role, self.instance, generation, pid)
    }

    /// A slot not started yet.
    pub fn new(role: &'static Role, instance: u32, user: Option<String>) -> Self {
        Self {
            role,
            instance,
            user,
            run: None,
            next_start: Some(Instant::now()),
            backoff: Duration::ZERO,
            quick_deaths: 0,
            restarts: 0,
            restart_now: false,
        }
    }
}

/// What role `r`'s row lets it send.
pub(super) fn allowed(r: &Role) -> Allowed {
    Allowed {
        app: r.app_messages,
        status: r.status,
        handover: r.handover,
    }
}

/// A socketpair end waiting for member `member` to start; the other end
/// is held by run `creator` of member `from` (dropped when that run
/// exits).
pub(super) struct PendingEnd {
    pub member: usize,
    pub from: usize,
    pub creator: u64,
    pub fd: OwnedFd,
}

/// Where the other end of a member's channel to a partner is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Link {
    /// Held by the partner's run with this serial.
    Held(u64),
    /// Waiting in `pending_ends` for the partner's next start.
    Pending,
}

/// A member's end of its channel to a partner, while it starts.
enum PeerEnd {
    /// The end the partner left waiting.
    Taken(PendingEnd),
    /// A fresh pair: this member's end, and the partner's (to wait).
    Created { mine: OwnedFd, theirs: OwnedFd },
}

impl Main<'_> {
    /// Starts every member of the serving generation whose time has come.
    pub(super) fn start_due(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        let g = self.serving();
        for i in 0..self.gens[g].members.len() {
            let m = &self.gens[g].members[i];
            let due = m.next_start.is_some_and(|t| t <= now);
            if due && m.run.is_none() {
                self.gens[g].members[i].next_start = None;
                if let Err(e) = self.start(g, i) {
                    let m = &mut self.gens[g].members[i];
                    self.log
                        .log(&format!("cannot start {}:{}: {e}", m.role.name, m.instance));
                    schedule_restart(m, &mut self.log, now, Duration::ZERO);
                }
            }
        }
    }

    /// Starts member `i` of generation `g`.
    pub(super) fn start(&mut self, g: usize, i: usize) -> Result<(), String> {
        // Peer channels: for each partner, the end it left waiting for
        // this member, or a fresh pair whose other end waits for it.
        let mut ends: Vec<(usize, PeerEnd)> = Vec::new();
        for j in self.partners(g, i) {
            let pending = &mut self.gens[g].pending_ends;
            let end = match pending.iter().position(|e| e.member == i && e.from == j) {
                Some(k) => PeerEnd::Taken(pending.swap_remove(k)),
                None => match crate::ipc::socketpair() {
                    Ok((mine, theirs)) => PeerEnd::Created { mine, theirs },
                    Err(e) => {
                        self.put_back(g, ends);
                        return Err(e.to_string());
                    }
                },
            };
            ends.push((j, end));
        }
        let (spawned, err_r, chan_main) = match self.spawn(g, i, &ends) {
            Ok(s) => s,
            Err(e) => {
                // Nobody got the ends: the taken ones wait again.
                self.put_back(g, ends);
                return Err(e);
            }
        };
        self.serial += 1;
        let serial = self.serial;
        let gn = &mut self.gens[g];
        let mut links = Vec::with_capacity(ends.len());
        for (j, end) in ends {
            match end {
                PeerEnd::Taken(e) => {
                    links.push((j, Link::Held(e.creator)));
                    if let Some(r) = &mut gn.members[j].run
                        && let Some(l) = r.links.iter_mut().find(|(k, _)| *k == i)
                    {
                        l.1 = Link::Held(serial);
                    }
                }
                PeerEnd::Created { theirs, .. } => {
                    links.push((j, Link::Pending));
                    gn.pending_ends.push(PendingEnd {
                        member: j,
                        from: i,
                        creator: serial,
                        fd: theirs,
                    });
                    // A partner running with an end of an older channel:
                    // it starts again, and takes the new one.
                    let m = &mut gn.members[j];
                    if let Some(r) = &mut m.run {
                        m.restart_now = true;
                        stop_member(r, allowed(m.role), RESTART_STOP_TIMEOUT, false);
                    }
                }
            }
        }
        let role = gn.members[i].role;
        let child = Child::from_pidfd(spawned.pidfd).map_err(|e| e.to_string())?;
        let mut channel = Channel::<ToChild, ToMain>::from_fd(chan_main, protocol::LIMITS)
            .map_err(|e| e.to_string())?;
        channel.set_accepting(
            protocol::state_name(ChildState::Starting),
            &protocol::accepted(ChildState::Starting, allowed(role)),
        );
        let number = gn.number;
        let m = &mut gn.members[i];
        let tag = m.tag(number, child.pid());
        self.log.log(&format!("{tag} started"));
        self.status_cache = None;
        let stderr = Source::new(err_r, tag).map_err(|e| e.to_string())?;
        let mut run = Running::new(child, channel, stderr, ChildState::Starting, serial, links);
        run.ready_by = Some(Instant::now() + role.ready_timeout);
        m.run = Some(run);
        Ok(())
    }

    /// The members `i` has a channel with in its generation: those of the
    /// roles its role lists, and those whose role lists its role (one
    /// instance each: `Family::new` checks).
    pub(super) fn partners(&self, g: usize, i: usize) -> Vec<usize> {
        let members = &self.gens[g].members;
        let role = members[i].role;
        (0..members.len())
            .filter(|&j| {
                let other = members[j].role;
                j != i && (role.peers.contains(&other.name) || other.peers.contains(&role.name))
            })
            .collect()
    }

    /// After a failed start: the ends it took wait again; the pairs it
    /// made are dropped.
    fn put_back(&mut self, g: usize, ends: Vec<(usize, PeerEnd)>) {
        for (_, end) in ends {
            if let PeerEnd::Taken(e) = end {
                self.gens[g].pending_ends.push(e);
            }
        }
    }

    /// Spawns member `i` of generation `g` with its peer ends: the
    /// spawned process, the read end of its stderr pipe and main's end of
    /// its channel.
    fn spawn(
        &self,
        g: usize,
        i: usize,
        ends: &[(usize, PeerEnd)],
    ) -> Result<(crate::exe::Spawned, OwnedFd, OwnedFd), String> {
        let gn = &self.gens[g];
        let role = gn.members[i].role;
        let instance = gn.members[i].instance;
        let (chan_main, chan_child) = crate::ipc::socketpair().map_err(|e| e.to_string())?;
        let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| format!("pipe: {e}"))?;
        let devnull = crate::fork_as::dev_null().map_err(|e| format!("/dev/null: {e}"))?;
        let peer_ends: Vec<(&'static str, BorrowedFd<'_>)> = ends
            .iter()
            .map(|(j, end)| {
                let fd = match end {
                    PeerEnd::Taken(e) => e.fd.as_fd(),
                    PeerEnd::Created { mine, .. } => mine.as_fd(),
                };
                (gn.members[*j].role.name, fd)
            })
            .collect();
        let listeners: Vec<_> = if role.listeners == crate::family::ALL_LISTENERS {
            self.listeners.iter().collect()
        } else {
            role.listeners
                .iter()
                .map(|n| self.listeners.get(n).ok_or(format!("no listener {n:?}")))
                .collect::<Result<_, _>>()?
        };
        let names = |v: &mut dyn Iterator<Item = &str>| {
            let s: Vec<&str> = v.collect();
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.join(":")
            }
        };
        let listener_names = names(&mut listeners.iter().map(|l| l.name()));
        let peer_names = names(&mut peer_ends.iter().map(|(n, _)| *n));
        let parent = std::process::id().to_string();
        let instance_text = instance.to_string();
        let generation = gn.number.to_string();
        let mut spawn = Spawn::new(&gn.exe);
        spawn
            .arg0(format!("{}: {}", program_name(), role.name))
            .role(role.name)
            .args([
                "--privfork-instance",
                &instance_text,
                "--privfork-parent",
                &parent,
                "--privfork-generation",
                &generation,
                "--privfork-listeners",
                &listener_names,
                "--privfork-peers",
                &peer_names,
            ]);
        if let Some(user) = &gn.members[i].user {
            spawn.args(["--privfork-user", user]);
        }
        // The program's own arguments, after a `--` the member's parser
        // stops at.
        spawn
            .args(["--"])
            .args(self.family.args.iter().map(String::as_str))
            .env_clear()
            .fd(0, devnull)
            .fd(1, err_w.as_fd())
            .fd(2, err_w.as_fd())
            .fd(CHANNEL_FD, chan_child.as_fd());
        let mut fd = FIRST_LISTENER_FD;
        for l in &listeners {
            spawn.fd(fd, l.as_fd());
            fd += 1;
        }
        for (_, end) in &peer_ends {
            spawn.fd(fd, *end);
            fd += 1;
        }
        let spawned = spawn.spawn().map_err(|e| e.to_string())?;
        drop(err_w);
        drop(chan_child);
        Ok((spawned, err_r, chan_main))
    }

    /// Member `i` of generation `g` may have exited: reaps it and acts
    /// per the generation's phase.
    pub(super) fn on_exit(&mut self, g: usize, i: usize) {
        let Some(r) = &mut self.gens[g].members[i].run else {
            return;
        };
        let status = match r.child.try_wait() {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                self.log.log(&format!("waiting for a member: {e}"));
                return;
            }
        };
        // What it said last, before its channel goes: a draining member's
        // last handovers may still be in the socket (bounded: the socket
        // buffer of a dead process, read a budget at a time).
        if let Some(r) = &mut self.gens[g].members[i].run {
            r.exited = true;
        }
        for _ in 0..64 {
            match &self.gens[g].members[i].run {
                Some(r) if !r.channel_closed => {}
                _ => break,
            }
            if self.on_channel(g, i) == 0 {
                break;
            }
        }
        if self.gens[g].members[i].run.is_none() {
            return;
        }
        let number = self.gens[g].number;
        let mut r = self.gens[g].members[i].run.take().expect("just matched");
        // Whatever is still queued on its channel (fds included) is read
        // and dropped here, not left for the kernel to close in main.
        r.channel.discard_unread(1024);
        // Connections main had queued to it go the same careful way.
        r.channel
            .sender()
            .take_queued_fds()
            .into_iter()
            .for_each(crate::ipc::fdpass::close_received);
        // It is gone: nobody can set lingering on these again.
        r.held
            .drain(..)
            .for_each(crate::ipc::fdpass::close_received);
        self.status_cache = None;
        // What it wrote last.
        r.stderr.read(&mut self.log);
        let tag = self.gens[g].members[i].tag(number, r.child.pid());
        let uptime = r.started.elapsed();
        if r.unhandled_app > 1 {
            self.log.log(&format!(
                "{tag} sent {} application messages without a handler",
                r.unhandled_app
            ));
        }
        self.log.log(&format!("{tag} {}", describe(status)));
        if self.stopping.is_some() {
            return;
        }
        match self.gens[g].phase {
            Phase::Ending { .. } => return,
            Phase::Starting => {
                self.restart_failed(format!(
                    "new {tag} {} before it was ready",
                    describe(status)
                ));
                return;
            }
            Phase::Serving => {}
        }
        let gn = &mut self.gens[g];
        // The ends it made for partners died with it.
        gn.pending_ends
            .retain(|e| !(e.from == i && e.creator == r.serial));
        // Partners holding a channel to this run hold a dead end: they
        // start again (and meet it, or its next run, on a fresh pair).
        for (j, _) in &r.links {
            let other = &mut gn.members[*j];
            if let Some(run) = &mut other.run
                && run.links.contains(&(i, Link::Held(r.serial)))
            {
                other.restart_now = true;
                stop_member(run, allowed(other.role), RESTART_STOP_TIMEOUT, false);
            }
        }
        let m = &mut gn.members[i];
        if m.restart_now {
            m.restart_now = false;
            m.next_start = Some(Instant::now());
            // Said, as every restart is: main asked it to stop (a peer
            // restarted), but it may have died of something else first.
            self.log.log(&format!(
                "restarting {}:{} at once (a peer it talked to restarted)",
                m.role.name, m.instance
            ));
            return;
        }
        match m.role.restart {
            Restart::Never => {
                self.log.log(&format!(
                    "{tag} is not restarted (restart: never); stopping the family"
                ));
                self.begin_stop();
            }
            Restart::Always { .. } => {
                schedule_restart(m, &mut self.log, Instant::now(), uptime);
            }
        }
    }
}

/// Tells `r` to stop within `timeout` (as a restart's drain if `drain`);
/// it is killed if it has not exited by then.
pub(super) fn stop_member(r: &mut Running, allowed: Allowed, timeout: Duration, drain: bool) {
    if matches!(r.state, ChildState::Stopping | ChildState::Stopped) {
        return;
    }
    // From now on it may say `Stopped` (once); one stopped before it said
    // `Ready` may still say that (once): its Ready and our Stop crossed.
    r.channel.set_accepting(
        protocol::state_name(ChildState::Stopping),
        &protocol::accepted_on_stop(r.state, allowed),
    );
    // A member that cannot be told (its channel is gone, or it does not
    // read it) is killed; one that is told has the deadline to finish.
    // Never a blocking send: main waits on no member.
    let deadline_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let order = if drain {
        ToChild::Drain(deadline_ms)
    } else {
        ToChild::Stop(deadline_ms)
    };
    let sent = r
        .channel
        .sender()
        .queue(0, &order, Vec::new())
        .and_then(|()| r.channel.sender().try_flush());
    if sent.is_err() || r.channel.queued() > super::messages::MAX_QUEUED_ANY {
        let _ = r.child.kill();
    }
    r.draining = drain;
    r.state = ChildState::Stopping;
    r.ready_by = None;
    r.stop_by = Some(Instant::now() + timeout);
}

/// Schedules the next start of `m`, which died after `uptime`.
pub(super) fn schedule_restart(m: &mut Member, log: &mut Sink, now: Instant, uptime: Duration) {
    let Restart::Always { initial, max } = m.role.restart else {
        return;
    };
    if uptime >= STABLE_UPTIME {
        m.backoff = initial;
        m.quick_deaths = 0;
    } else {
        m.backoff = if m.backoff.is_zero() {
            initial
        } else {
            (m.backoff * 2).min(max)
        };
        m.quick_deaths += 1;
    }
    m.restarts += 1;
    m.next_start = Some(now + m.backoff);
    log.log(&format!(
        "restarting {}:{} in {:?} (restart {})",
        m.role.name, m.instance, m.backoff, m.restarts
    ));
    if m.quick_deaths >= CRASH_LOOP {
        let status = format!(
            "{}:{} is crash-looping: {} quick deaths in a row, next start in {:?}",
            m.role.name, m.instance, m.quick_deaths, m.backoff
        );
        log.log(&status);
        crate::reload::notify_status(&status);
    }
}

pub(super) fn describe(status: ExitStatus) -> String {
    status.to_string()
}

/// The program's name for process titles.
fn program_name() -> String {
    std::env::args_os()
        .next()
        .map(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "privfork".to_owned())
}
