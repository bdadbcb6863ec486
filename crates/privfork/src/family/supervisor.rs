//! Main: starts every member, supervises, stops the family.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::protocol::{self, Allowed, ChildState, ToChild, ToMain};
use super::relay::{Sink, Source};
use super::status::{FamilyStatus, MemberReport, MemberStatus, ProcessFacts, UserNames, unix_ms};
use super::{CHANNEL_FD, FIRST_LISTENER_FD, Family, Restart, Role};
use crate::event::{Interest, Poller, Signals};
use crate::exe::{Exe, Spawn};
use crate::ipc::{Channel, RecvError, SendError};
use crate::listen::Listeners;
use crate::process::{Child, ExitStatus};

/// A member that ran at least this long before dying is not crash-looping:
/// its backoff starts over.
const STABLE_UPTIME: Duration = Duration::from_secs(10);
/// Consecutive quick deaths after which a crash loop is reported.
const CRASH_LOOP: u32 = 3;
/// How long a member stopped for a restart (a peer of it died) has to
/// finish before it is killed.
const RESTART_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Unhandled application messages are logged as a count this often.
const UNHANDLED_APP_EVERY: u64 = 10_000;
/// How long a status answer is reused: a member that asks in a loop costs
/// main one `/proc` read per member this often, not per query.
const STATUS_REUSE: Duration = Duration::from_millis(250);
/// Most messages read from one member per wake-up.
const MESSAGE_BUDGET: usize = 256;

/// One process slot: a role's instance, running or waiting to start.
struct Member {
    role: &'static Role,
    instance: u32,
    /// The user it runs as, when main's caller chose one
    /// ([`Family::user`]) instead of the row's.
    user: Option<String>,
    run: Option<Running>,
    next_start: Option<Instant>,
    backoff: Duration,
    quick_deaths: u32,
    restarts: u64,
    /// Stopped on purpose (a peer restarted): start again at once.
    restart_now: bool,
}

struct Running {
    child: Child,
    channel: Channel<ToChild, ToMain>,
    /// The member closed its end (it is exiting): not polled any more.
    channel_closed: bool,
    stderr: Source,
    state: ChildState,
    /// Which run this is (unique in main's life).
    serial: u64,
    /// Its channels to partners: `(partner member, where the other end is)`.
    links: Vec<(usize, Link)>,
    started: Instant,
    ready_by: Option<Instant>,
    /// Application messages it sent that no handler took (counted, not
    /// a log line each).
    unhandled_app: u64,
    /// Told to stop: killed if still running then (dropped once acted on,
    /// so a past deadline does not keep waking main).
    stop_by: Option<Instant>,
    /// What it reported about itself when it said ready (cut to size).
    report: Option<MemberReport>,
    /// Status answers that could not be sent to it.
    status_failures: u64,
}

impl Member {
    fn tag(&self, pid: u32) -> String {
        format!("[{}:{} {pid}]", self.role.name, self.instance)
    }
}

/// What role `r`'s row lets it send.
fn allowed(r: &Role) -> Allowed {
    Allowed {
        app: r.app_messages,
        status: r.status,
    }
}

/// A socketpair end waiting for member `member` to start; the other end
/// is held by run `creator` of member `from` (dropped when that run
/// exits).
struct PendingEnd {
    member: usize,
    from: usize,
    creator: u64,
    fd: OwnedFd,
}

/// Where the other end of a member's channel to a partner is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
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

struct Main<'a> {
    exe: &'static Exe,
    listeners: &'a Listeners,
    /// Arguments passed on to every member.
    args: &'a [String],
    /// The generation running (a smooth restart adds one).
    generation: u64,
    started: std::time::SystemTime,
    user_names: UserNames,
    /// The last status answer and when it was made.
    status_cache: Option<(Instant, FamilyStatus)>,
    members: Vec<Member>,
    pending_ends: Vec<PendingEnd>,
    /// The serial of the last run started.
    serial: u64,
    log: Sink,
    stopping: Option<Instant>,
    stop_timeout: Duration,
    killed_at_deadline: bool,
    ready_notified: bool,
}

/// Runs main until the family stops; the exit code.
pub(super) fn run(family: &Family) -> Result<i32, String> {
    let (roles, specs, stop_timeout) = (family.roles, &family.listen[..], family.stop_timeout);
    // Every role's user exists, before anything is bound or started.
    for r in roles {
        if let Some(u) = family.user_of(r) {
            crate::identity::Identity::user(&u)
                .map_err(|e| format!("role {:?}: user {u:?}: {e}", r.name))?;
        }
    }
    let exe = Exe::current().map_err(|e| e.to_string())?;
    let listeners = match Listeners::from_systemd().map_err(|e| e.to_string())? {
        Some(l) => l,
        None => Listeners::bind(specs).map_err(|e| e.to_string())?,
    };
    for r in roles {
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
    let signals = Signals::new(&[Signal::CHILD, Signal::TERM, Signal::INT, Signal::HUP])
        .map_err(|e| format!("signalfd: {e}"))?;
    let _ = rustix::thread::set_name(c"privfork-main");
    let (mut log, note) = Sink::for_stderr();
    if let Some(note) = note {
        log.log(&note);
    }
    let mut main = Main {
        exe,
        listeners: &listeners,
        args: &family.args,
        generation: 1,
        started: std::time::SystemTime::now(),
        user_names: UserNames::default(),
        status_cache: None,
        members: roles
            .iter()
            .flat_map(|r| (0..r.instances).map(move |i| (r, i)))
            .map(|(role, instance)| Member {
                role,
                instance,
                user: family
                    .users
                    .iter()
                    .find(|(n, _)| *n == role.name)
                    .map(|(_, u)| u.clone()),
                run: None,
                next_start: Some(Instant::now()),
                backoff: Duration::ZERO,
                quick_deaths: 0,
                restarts: 0,
                restart_now: false,
            })
            .collect(),
        pending_ends: Vec::new(),
        serial: 0,
        log,
        stopping: None,
        stop_timeout,
        killed_at_deadline: false,
        ready_notified: false,
    };
    let code = main.run(&signals);
    main.log.flush_for(Duration::from_secs(1));
    Ok(code)
}

const TOKEN_SIGNALS: usize = 0;
const TOKEN_STDERR_OUT: usize = 1;
/// Member `i`'s fds: pidfd, channel, stderr.
fn token(i: usize, which: usize) -> usize {
    2 + 3 * i + which
}

impl Main<'_> {
    fn run(&mut self, signals: &Signals) -> i32 {
        loop {
            self.start_due();
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
            for (tok, readiness) in ready {
                match tok {
                    TOKEN_SIGNALS => self.on_signals(signals),
                    TOKEN_STDERR_OUT => self.log.write_some(),
                    t => {
                        let (i, which) = ((t - 2) / 3, (t - 2) % 3);
                        match which {
                            0 => self.on_exit(i),
                            1 => self.on_channel(i),
                            _ => {
                                let _ = readiness;
                                if let Some(r) = &mut self.members[i].run {
                                    r.stderr.read(&mut self.log);
                                }
                            }
                        }
                    }
                }
            }
            // Messages already read into a channel's buffer (left by the
            // per-wake-up budget): the fd will not say so.
            for i in 0..self.members.len() {
                if self.buffered(i) {
                    self.on_channel(i);
                }
            }
            self.check_deadlines();
        }
    }

    /// Whether member `i`'s channel holds a whole message already read.
    fn buffered(&self, i: usize) -> bool {
        self.members[i]
            .run
            .as_ref()
            .is_some_and(|r| !r.channel_closed && r.channel.has_buffered())
    }

    /// Polls everything main watches until something is ready or the next
    /// deadline; returns the ready tokens.
    fn wait(&self, signals: &Signals) -> std::io::Result<Vec<(usize, crate::event::Readiness)>> {
        let mut p: Poller<'_, 16> = Poller::new();
        p.add(signals, Interest::READABLE, TOKEN_SIGNALS);
        if self.log.pending() {
            p.add_fd(self.log.fd(), Interest::WRITABLE, TOKEN_STDERR_OUT);
        }
        // The stop deadline, until it has been acted on (members killed).
        let mut deadline: Option<Instant> = self.stopping.filter(|_| !self.killed_at_deadline);
        let mut earliest = |d: Option<Instant>| {
            if let Some(d) = d {
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
        };
        for (i, m) in self.members.iter().enumerate() {
            earliest(m.next_start);
            if let Some(r) = &m.run {
                p.add(&r.child, Interest::READABLE, token(i, 0));
                if !r.channel_closed {
                    p.add(&r.channel, Interest::READABLE, token(i, 1));
                }
                if let Some(fd) = r.stderr.fd() {
                    p.add_fd(fd, Interest::READABLE, token(i, 2));
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
        Ok(p.ready().collect())
    }

    fn on_signals(&mut self, signals: &Signals) {
        while let Ok(Some(info)) = signals.read() {
            match Signal::from_named_raw(info.signal) {
                Some(Signal::TERM) | Some(Signal::INT) => {
                    self.log
                        .log(&format!("{}: stopping the family", info.name()));
                    self.begin_stop();
                }
                Some(Signal::HUP) => {
                    self.log
                        .log("SIGHUP: a smooth restart is not implemented yet; ignored");
                }
                _ => {} // SIGCHLD: the pidfds say who
            }
        }
    }

    fn begin_stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        self.stopping = Some(Instant::now() + self.stop_timeout);
        for m in &mut self.members {
            m.next_start = None;
            if let Some(r) = &mut m.run {
                stop_member(r, allowed(m.role), self.stop_timeout);
            }
        }
    }

    /// Starts every member whose time has come.
    fn start_due(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        for i in 0..self.members.len() {
            let due = self.members[i].next_start.is_some_and(|t| t <= now);
            if due && self.members[i].run.is_none() {
                self.members[i].next_start = None;
                if let Err(e) = self.start(i) {
                    let m = &mut self.members[i];
                    self.log
                        .log(&format!("cannot start {}:{}: {e}", m.role.name, m.instance));
                    schedule_restart(m, &mut self.log, now, Duration::ZERO);
                }
            }
        }
    }

    fn start(&mut self, i: usize) -> Result<(), String> {
        // Peer channels: for each partner, the end it left waiting for
        // this member, or a fresh pair whose other end waits for it.
        let mut ends: Vec<(usize, PeerEnd)> = Vec::new();
        for j in self.partners(i) {
            let end = match self
                .pending_ends
                .iter()
                .position(|e| e.member == i && e.from == j)
            {
                Some(k) => PeerEnd::Taken(self.pending_ends.swap_remove(k)),
                None => match crate::ipc::socketpair() {
                    Ok((mine, theirs)) => PeerEnd::Created { mine, theirs },
                    Err(e) => {
                        self.put_back(ends);
                        return Err(e.to_string());
                    }
                },
            };
            ends.push((j, end));
        }
        let spawned = self.spawn(i, &ends);
        let (spawned, err_r, chan_main) = match spawned {
            Ok(s) => s,
            Err(e) => {
                // Nobody got the ends: the taken ones wait again.
                self.put_back(ends);
                return Err(e);
            }
        };
        self.serial += 1;
        let serial = self.serial;
        let mut links = Vec::with_capacity(ends.len());
        for (j, end) in ends {
            match end {
                PeerEnd::Taken(e) => {
                    links.push((j, Link::Held(e.creator)));
                    if let Some(r) = &mut self.members[j].run
                        && let Some(l) = r.links.iter_mut().find(|(k, _)| *k == i)
                    {
                        l.1 = Link::Held(serial);
                    }
                }
                PeerEnd::Created { theirs, .. } => {
                    links.push((j, Link::Pending));
                    self.pending_ends.push(PendingEnd {
                        member: j,
                        from: i,
                        creator: serial,
                        fd: theirs,
                    });
                    // A partner running with an end of an older channel:
                    // it starts again, and takes the new one.
                    let m = &mut self.members[j];
                    if let Some(r) = &mut m.run {
                        m.restart_now = true;
                        stop_member(r, allowed(m.role), RESTART_STOP_TIMEOUT);
                    }
                }
            }
        }
        let role = self.members[i].role;
        let child = Child::from_pidfd(spawned.pidfd).map_err(|e| e.to_string())?;
        let mut channel = Channel::<ToChild, ToMain>::from_fd(chan_main, protocol::LIMITS)
            .map_err(|e| e.to_string())?;
        channel.set_accepting(
            protocol::state_name(ChildState::Starting),
            protocol::accepted(ChildState::Starting, allowed(role)),
        );
        let m = &mut self.members[i];
        let tag = m.tag(child.pid());
        self.log.log(&format!("{tag} started"));
        self.status_cache = None;
        m.run = Some(Running {
            stderr: Source::new(err_r, tag).map_err(|e| e.to_string())?,
            child,
            channel,
            channel_closed: false,
            state: ChildState::Starting,
            serial,
            links,
            started: Instant::now(),
            ready_by: Some(Instant::now() + role.ready_timeout),
            stop_by: None,
            unhandled_app: 0,
            report: None,
            status_failures: 0,
        });
        Ok(())
    }

    /// The members `i` has a channel with: those of the roles its role
    /// lists, and those whose role lists its role (one instance each:
    /// `Family::new` checks).
    fn partners(&self, i: usize) -> Vec<usize> {
        let role = self.members[i].role;
        (0..self.members.len())
            .filter(|&j| {
                let other = self.members[j].role;
                j != i && (role.peers.contains(&other.name) || other.peers.contains(&role.name))
            })
            .collect()
    }

    /// After a failed start: the ends it took wait again; the pairs it
    /// made are dropped.
    fn put_back(&mut self, ends: Vec<(usize, PeerEnd)>) {
        for (_, end) in ends {
            if let PeerEnd::Taken(e) = end {
                self.pending_ends.push(e);
            }
        }
    }

    /// Spawns member `i` with its peer ends: the spawned process, the read
    /// end of its stderr pipe and main's end of its channel.
    fn spawn(
        &self,
        i: usize,
        ends: &[(usize, PeerEnd)],
    ) -> Result<(crate::exe::Spawned, OwnedFd, OwnedFd), String> {
        let role = self.members[i].role;
        let instance = self.members[i].instance;
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
                (self.members[*j].role.name, fd)
            })
            .collect();
        let listeners: Vec<_> = if role.listeners == super::ALL_LISTENERS {
            self.listeners.iter().collect()
        } else {
            role.listeners
                .iter()
                .map(|n| self.listeners.get(n).expect("checked at start"))
                .collect()
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
        let mut spawn = Spawn::new(self.exe);
        spawn
            .arg0(format!("{}: {}", program_name(), role.name))
            .role(role.name)
            .args([
                "--privfork-instance",
                &instance_text,
                "--privfork-parent",
                &parent,
                "--privfork-listeners",
                &listener_names,
                "--privfork-peers",
                &peer_names,
            ]);
        if let Some(user) = &self.members[i].user {
            spawn.args(["--privfork-user", user]);
        }
        // The program's own arguments, after a `--` the member's parser
        // stops at.
        spawn
            .args(["--"])
            .args(self.args.iter().map(String::as_str))
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

    fn on_exit(&mut self, i: usize) {
        let Some(r) = &mut self.members[i].run else {
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
        let mut r = self.members[i].run.take().expect("just matched");
        self.status_cache = None;
        // What it wrote last.
        r.stderr.read(&mut self.log);
        let m = &mut self.members[i];
        let tag = m.tag(r.child.pid());
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
        // The ends it made for partners died with it.
        self.pending_ends
            .retain(|e| !(e.from == i && e.creator == r.serial));
        // Partners holding a channel to this run hold a dead end: they
        // start again (and meet it, or its next run, on a fresh pair).
        for (j, _) in &r.links {
            let other = &mut self.members[*j];
            if let Some(run) = &mut other.run
                && run.links.contains(&(i, Link::Held(r.serial)))
            {
                other.restart_now = true;
                stop_member(run, allowed(other.role), RESTART_STOP_TIMEOUT);
            }
        }
        let m = &mut self.members[i];
        if m.restart_now {
            m.restart_now = false;
            m.next_start = Some(Instant::now());
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

    fn on_channel(&mut self, i: usize) {
        let (role, instance) = (self.members[i].role, self.members[i].instance);
        // A few messages per wake-up: a chatty member cannot keep main
        // here (the poll is level-triggered: the rest come next time).
        for _ in 0..MESSAGE_BUDGET {
            let Some(r) = &mut self.members[i].run else {
                return;
            };
            let tag = format!("[{}:{} {}]", role.name, instance, r.child.pid());
            match r.channel.try_recv() {
                Ok(Some(msg)) => {
                    match msg.msg {
                        ToMain::Ready(report) => {
                            // Stopping already: its Ready crossed our Stop
                            // (it stays stopping; Ready is not accepted
                            // again once the kinds are reset below).
                            if r.state == ChildState::Starting {
                                r.state = ChildState::Running;
                            }
                            r.ready_by = None;
                            r.report = Some(report.bounded());
                            self.status_cache = None;
                            self.log.log(&format!("{tag} ready"));
                        }
                        ToMain::StatusQuery => {
                            let status = self.status();
                            let Some(r) = &mut self.members[i].run else {
                                return;
                            };
                            // Never wait on a member: one that does not
                            // read its answers fills its channel, and is
                            // killed.
                            let mut queued = r.channel.sender().queue(
                                msg.request_id,
                                &ToChild::Status(status.clone()),
                                Vec::new(),
                            );
                            if let Err(SendError::TooLarge { .. }) = queued {
                                // Too many members with long reports for
                                // one frame: the kernel's facts alone.
                                let mut bare = status;
                                for m in &mut bare.members {
                                    m.reported = None;
                                }
                                queued = r.channel.sender().queue(
                                    msg.request_id,
                                    &ToChild::Status(bare),
                                    Vec::new(),
                                );
                            }
                            let sent = queued.and_then(|()| r.channel.sender().try_flush());
                            match sent {
                                Ok(true) => {}
                                Ok(false) => {
                                    self.log.log(&format!(
                                        "{tag} does not read its channel; killing it"
                                    ));
                                    r.channel_closed = true;
                                    let _ = r.child.kill();
                                    return;
                                }
                                Err(e) => {
                                    // Once per run: a member asking in a
                                    // loop must not fill main's log.
                                    r.status_failures += 1;
                                    if r.status_failures == 1 {
                                        self.log.log(&format!(
                                            "{tag}: status answer: {e} (further failures not logged)"
                                        ));
                                    }
                                }
                            }
                            continue;
                        }
                        ToMain::Stopped => r.state = ChildState::Stopped,
                        ToMain::App(bytes) => {
                            r.unhandled_app += 1;
                            if r.unhandled_app == 1 {
                                self.log.log(&format!(
                                    "{tag} sent an application message of {} bytes \
                                     (no handler; further ones are counted)",
                                    bytes.0.len()
                                ));
                            } else if r.unhandled_app % UNHANDLED_APP_EVERY == 0 {
                                self.log.log(&format!(
                                    "{tag} has sent {} application messages without a handler",
                                    r.unhandled_app
                                ));
                            }
                        }
                    }
                    r.channel.set_accepting(
                        protocol::state_name(r.state),
                        protocol::accepted(r.state, allowed(role)),
                    );
                    // Ready does not reset the crash-loop count: one that
                    // says Ready and dies at once is still looping (only
                    // STABLE_UPTIME resets it, as it does the backoff).
                    if r.state == ChildState::Running {
                        self.notify_ready_if_all();
                    }
                }
                Ok(None) => return,
                // It closed its end (between messages, or with unread
                // data: a reset): it is exiting, and its pidfd will say
                // how.
                Err(RecvError::PeerClosed | RecvError::Closed { .. } | RecvError::Io { .. }) => {
                    r.channel_closed = true;
                    return;
                }
                Err(e) => {
                    // A message it may not send: the channel is closed;
                    // the member is killed and (per its row) restarted.
                    self.log
                        .log(&format!("{tag} broke the protocol ({e}); killing it"));
                    r.channel_closed = true;
                    let _ = r.child.kill();
                    return;
                }
            }
        }
    }

    /// The family's status: each member slot with what the kernel says
    /// of its process and what it reported (reused for
    /// [`STATUS_REUSE`]).
    fn status(&mut self) -> FamilyStatus {
        if let Some((at, s)) = &self.status_cache
            && at.elapsed() < STATUS_REUSE
        {
            return s.clone();
        }
        let s = self.fresh_status();
        self.status_cache = Some((Instant::now(), s.clone()));
        s
    }

    fn fresh_status(&mut self) -> FamilyStatus {
        let mut main = ProcessFacts::read(std::process::id()).unwrap_or_default();
        self.user_names.name(&mut main);
        let mut members = Vec::with_capacity(self.members.len());
        for m in &self.members {
            let (state, uptime_ms, process, reported) = match &m.run {
                Some(r) => {
                    // Main has not reaped it (`run` is dropped when it
                    // is), so its pid cannot name another process yet.
                    let facts = ProcessFacts::read(r.child.pid()).map(|mut f| {
                        self.user_names.name(&mut f);
                        f
                    });
                    (
                        protocol::state_name(r.state),
                        u64::try_from(r.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        facts,
                        r.report.clone(),
                    )
                }
                None => ("down", 0, None, None),
            };
            members.push(MemberStatus {
                role: m.role.name.to_owned(),
                instance: m.instance,
                state: state.to_owned(),
                restarts: m.restarts,
                uptime_ms,
                process,
                reported,
            });
        }
        FamilyStatus {
            generation: self.generation,
            started_unix_ms: unix_ms(self.started),
            main,
            members,
        }
    }

    fn notify_ready_if_all(&mut self) {
        if self.ready_notified {
            return;
        }
        let all = self.members.iter().all(|m| {
            m.run
                .as_ref()
                .is_some_and(|r| r.state == ChildState::Running)
        });
        if all {
            self.ready_notified = true;
            self.log.log("every role is ready");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        }
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        self.check_stop_deadline(now);
        for m in &mut self.members {
            if let Some(r) = &mut m.run
                && r.ready_by.is_some_and(|t| t <= now)
            {
                r.ready_by = None;
                self.log.log(&format!(
                    "[{}:{} {}] not ready within {:?}; killing it",
                    m.role.name,
                    m.instance,
                    r.child.pid(),
                    m.role.ready_timeout
                ));
                let _ = r.child.kill();
            }
            if let Some(r) = &mut m.run
                && r.stop_by.is_some_and(|t| t <= now)
            {
                r.stop_by = None;
                self.log.log(&format!(
                    "[{}:{} {}] did not stop in time; killing it",
                    m.role.name,
                    m.instance,
                    r.child.pid(),
                ));
                let _ = r.child.kill();
            }
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
            for m in &mut self.members {
                if let Some(r) = &mut m.run {
                    self.log.log(&format!(
                        "[{}:{} {}] still running at the stop deadline; killing it",
                        m.role.name,
                        m.instance,
                        r.child.pid()
                    ));
                    r.stop_by = None;
                    let _ = r.child.kill();
                }
            }
        }
    }

    /// Once stopping and every member is gone: the exit code.
    fn check_stopped(&mut self) -> Option<i32> {
        self.stopping?;
        if self.members.iter().any(|m| m.run.is_some()) {
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
        for m in &mut self.members {
            if let Some(mut r) = m.run.take() {
                let _ = r.child.kill_and_wait();
            }
        }
    }
}

/// Tells `r` to stop within `timeout`; it is killed if it has not exited
/// by then.
fn stop_member(r: &mut Running, allowed: Allowed, timeout: Duration) {
    if matches!(r.state, ChildState::Stopping | ChildState::Stopped) {
        return;
    }
    // From now on it may say `Stopped` (once); one stopped before it said
    // `Ready` may still say that (once): its Ready and our Stop crossed.
    r.channel.set_accepting(
        protocol::state_name(ChildState::Stopping),
        &protocol::accepted_on_stop(r.state, allowed),
    );
    // A member that cannot be told (its channel is full or gone) is
    // killed; one that is told has the deadline to finish.
    let deadline_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    if r.channel.send(&ToChild::Stop(deadline_ms)).is_err() {
        let _ = r.child.kill();
    }
    r.state = ChildState::Stopping;
    r.ready_by = None;
    r.stop_by = Some(Instant::now() + timeout);
}

/// Schedules the next start of `m`, which died after `uptime`.
fn schedule_restart(m: &mut Member, log: &mut Sink, now: Instant, uptime: Duration) {
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
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
    }
}

fn describe(status: ExitStatus) -> String {
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
