//! What members say to main: life-cycle messages, status queries (and
//! the status main builds for them), connections handed over in a
//! restart. Every byte is hostile: the channel accepts only the kinds of
//! the member's state ([`protocol::accepted`]).

use std::os::fd::OwnedFd;
use std::time::Instant;

use super::Main;
use super::members::{Phase, allowed};
use crate::family::protocol::{self, ChildState, ToChild, ToMain};
use crate::family::status::{FamilyStatus, MemberStatus, ProcessFacts};
use crate::ipc::{Bytes, RecvError, SendError};

/// Unhandled application messages are logged as a count this often.
const UNHANDLED_APP_EVERY: u64 = 10_000;
/// How long a status answer is reused: a member that asks in a loop costs
/// main one `/proc` read per member this often, not per query.
const STATUS_REUSE: std::time::Duration = std::time::Duration::from_millis(250);
/// Most messages read from one member per wake-up.
const MESSAGE_BUDGET: usize = 256;
/// Frames main may have queued to one member (status answers, orders)
/// before it counts as not reading its channel, and is killed.
pub(super) const MAX_QUEUED: usize = 64;
/// Connections main may have queued to one member of the new generation
/// before it closes further ones instead (a flood from a draining member
/// must not pile up fds in main).
const MAX_QUEUED_CONNECTIONS: usize = 256;
/// Frames of any kind queued to one member past which it counts as not
/// reading its channel (a taker busy with a burst of handed-over
/// connections is not killed for it).
pub(super) const MAX_QUEUED_ANY: usize = MAX_QUEUED + MAX_QUEUED_CONNECTIONS;
/// Connections one draining member may hand over; past it, it is killed
/// (a member does not have this many connections: it is dup'ing them).
const MAX_HANDOVERS: u64 = 1 << 16;
/// Sockets a member sent that main did not pass on, kept until it is
/// reaped (closing one earlier could block: see [`Running::held`]).
const MAX_HELD: usize = 64;

impl Main<'_> {
    /// Reads what member `i` of generation `g` sent (a budget per
    /// wake-up); how many messages it read.
    pub(super) fn on_channel(&mut self, g: usize, i: usize) -> usize {
        let (role, instance, number) = {
            let m = &self.gens[g].members[i];
            (m.role, m.instance, self.gens[g].number)
        };
        // A few messages per wake-up: a chatty member cannot keep main
        // here (the poll is level-triggered: the rest come next time).
        let mut read = 0;
        for _ in 0..MESSAGE_BUDGET {
            let Some(r) = &mut self.gens[g].members[i].run else {
                return read;
            };
            let tag = super::members::tag(role, instance, number, r.child.pid());
            match r.channel.try_recv() {
                Ok(Some(mut msg)) => {
                    read += 1;
                    match msg.msg {
                        ToMain::Ready(report) => {
                            // Stopping already: its Ready crossed our Stop
                            // (it stays stopping; Ready is not accepted
                            // again once the kinds are reset below). Read
                            // after it died: it is not ready.
                            if r.state == ChildState::Starting && !r.exited {
                                r.state = ChildState::Running;
                            }
                            r.ready_by = None;
                            r.report = Some(report.bounded());
                            self.status_cache = None;
                            self.log.log(&format!("{tag} ready"));
                        }
                        ToMain::StatusQuery => {
                            self.answer_status(g, i, msg.request_id, &tag);
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
                        ToMain::Handover(bytes) => {
                            // The kind declares one fd: the channel
                            // checked that it came.
                            let Some(socket) = msg.fds.pop() else {
                                continue;
                            };
                            // Whatever it is, its close never blocks main
                            // (a lingering TCP close would).
                            let _ = rustix::net::sockopt::set_socket_linger(&socket, None);
                            r.handovers += 1;
                            let why = if !r.draining {
                                Some("handed over a connection without a drain")
                            } else if bytes.0.len() > protocol::MAX_HANDOVER_BYTES {
                                Some("handed over more bytes than a handover carries")
                            } else if r.handovers > MAX_HANDOVERS {
                                Some("handed over more connections than it can have")
                            } else if !self.accepted_on_listener(role, &socket) {
                                Some(
                                    "handed over something that is not a connection \
                                     accepted on its listeners",
                                )
                            } else {
                                None
                            };
                            // Accepted here, but its client is gone (it
                            // reset the connection meanwhile): nothing to
                            // pass on.
                            if why.is_none()
                                && !matches!(rustix::net::getpeername(&socket), Ok(Some(_)))
                            {
                                self.handover.dropped += 1;
                                self.hold(g, i, socket);
                                continue;
                            }
                            if let Some(why) = why {
                                self.log.log(&format!("{tag} {why}; killing it"));
                                let r = self.gens[g].members[i].run.as_mut().expect("runs");
                                r.held.push(socket);
                                r.channel_closed = true;
                                let _ = r.child.kill();
                                return read;
                            }
                            self.pass_connection(g, i, socket, bytes);
                            continue;
                        }
                    }
                    r.channel.set_accepting(
                        protocol::state_name(r.state),
                        &protocol::accepted(r.state, allowed(role)),
                    );
                    // Ready does not reset the crash-loop count: one that
                    // says Ready and dies at once is still looping (only
                    // a stable uptime resets it, as it does the backoff).
                    if r.state == ChildState::Running {
                        self.on_ready(g);
                    }
                }
                Ok(None) => return read,
                // It closed its end (between messages, or with unread
                // data: a reset): it is exiting, and its pidfd will say
                // how.
                Err(RecvError::PeerClosed | RecvError::Closed { .. } | RecvError::Io { .. }) => {
                    r.channel_closed = true;
                    return read;
                }
                Err(e) => {
                    // A message it may not send: the channel is closed;
                    // the member is killed and (per its row) restarted.
                    self.log
                        .log(&format!("{tag} broke the protocol ({e}); killing it"));
                    r.channel_closed = true;
                    let _ = r.child.kill();
                    return read;
                }
            }
        }
        read
    }

    /// Answers member `i`'s status query without ever waiting on it: one
    /// that does not read its answers is killed.
    fn answer_status(&mut self, g: usize, i: usize, request_id: u64, tag: &str) {
        let status = self.status();
        let Some(r) = &mut self.gens[g].members[i].run else {
            return;
        };
        let mut queued =
            r.channel
                .sender()
                .queue(request_id, &ToChild::Status(status.clone()), Vec::new());
        if let Err(SendError::TooLarge { .. }) = queued {
            // Too many members with long reports for one frame: the
            // kernel's facts alone.
            let mut bare = status;
            for m in &mut bare.members {
                m.reported = None;
            }
            queued = r
                .channel
                .sender()
                .queue(request_id, &ToChild::Status(bare), Vec::new());
        }
        let sent = queued.and_then(|()| r.channel.sender().try_flush());
        match sent {
            Ok(true) => {}
            Ok(false) if r.channel.queued() <= MAX_QUEUED_ANY => {}
            Ok(false) => {
                self.log
                    .log(&format!("{tag} does not read its channel; killing it"));
                r.channel_closed = true;
                let _ = r.child.kill();
            }
            Err(e) => {
                // Once per run: a member asking in a loop must not fill
                // main's log.
                r.status_failures += 1;
                if r.status_failures == 1 {
                    self.log.log(&format!(
                        "{tag}: status answer: {e} (further failures not logged)"
                    ));
                }
            }
        }
    }

    /// Passes a connection that member `i` of draining generation `g`
    /// handed over to a ready member of the same role in the serving
    /// generation (in turn); with none, or one whose queue is full, it is
    /// kept until the sender is reaped, then closed, and counted.
    fn pass_connection(&mut self, g: usize, i: usize, socket: OwnedFd, bytes: Bytes) {
        let role = self.gens[g].members[i].role.name;
        let s = self.serving();
        let takers: Vec<usize> = self.gens[s]
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                s != g
                    && m.role.name == role
                    && m.role.handover
                    && m.run.as_ref().is_some_and(|r| {
                        r.state == ChildState::Running
                            && !r.channel_closed
                            && r.channel.queued() < MAX_QUEUED_CONNECTIONS
                    })
            })
            .map(|(j, _)| j)
            .collect();
        if takers.is_empty() {
            self.handover.dropped += 1;
            self.hold(g, i, socket);
            return;
        }
        self.handover.next = self.handover.next.wrapping_add(1);
        let j = takers[self.handover.next % takers.len()];
        let r = self.gens[s].members[j].run.as_mut().expect("a taker runs");
        let sent = r
            .channel
            .sender()
            .queue(0, &ToChild::Connection(bytes), vec![socket])
            .and_then(|()| r.channel.sender().try_flush());
        match sent {
            // Written, or queued: main writes the rest when the channel
            // is writable.
            Ok(_) => self.handover.passed += 1,
            Err(_) => self.handover.dropped += 1,
        }
    }

    /// Keeps `socket`, sent by member `i` of `g`, until that member is
    /// reaped (it cannot turn lingering back on then); past [`MAX_HELD`]
    /// further ones are closed at once (lingering was turned off when they
    /// arrived). Not the member's fault: no taker, a full queue.
    fn hold(&mut self, g: usize, i: usize, socket: OwnedFd) {
        match &mut self.gens[g].members[i].run {
            Some(r) if r.held.len() < MAX_HELD => r.held.push(socket),
            _ => crate::ipc::fdpass::close_received(socket),
        }
    }

    /// Whether `socket` is a stream socket whose local address is one of
    /// main's listeners' (same port, and the listener's IP or a wildcard;
    /// or the same unix address): a connection accepted there. A
    /// socketpair end, a listener or a socket bound elsewhere is not.
    fn accepted_on_listener(&self, role: &crate::family::Role, socket: &OwnedFd) -> bool {
        use rustix::net::{SocketAddrUnix, SocketType, getsockname, sockopt};
        if !sockopt::socket_type(socket).is_ok_and(|t| t == SocketType::STREAM)
            || sockopt::socket_acceptconn(socket).unwrap_or(true)
        {
            return false;
        }
        let Ok(local) = getsockname(socket) else {
            return false;
        };
        // Any of main's listeners: after a restart, the old member's row is
        // the new binary's, whose listener list may differ from the one it
        // was started with.
        let _ = role;
        self.listeners.iter().any(|l| {
            let Ok(bound) = getsockname(l) else {
                return false;
            };
            match (
                std::net::SocketAddr::try_from(local.clone()),
                std::net::SocketAddr::try_from(bound.clone()),
            ) {
                (Ok(a), Ok(b)) => {
                    a.port() == b.port() && (b.ip().is_unspecified() || a.ip() == b.ip())
                }
                _ => match (
                    SocketAddrUnix::try_from(local.clone()),
                    SocketAddrUnix::try_from(bound),
                ) {
                    // A path, or an abstract name; never unnamed.
                    (Ok(a), Ok(b)) => !a.is_unnamed() && a == b,
                    _ => false,
                },
            }
        })
    }

    /// Writes what is queued for member `i` of generation `g`.
    pub(super) fn flush_channel(&mut self, g: usize, i: usize) {
        if let Some(r) = &mut self.gens[g].members[i].run
            && r.channel.sender().try_flush().is_err()
        {
            r.channel_closed = true;
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
        let mut members = Vec::new();
        for gn in &self.gens {
            for m in &gn.members {
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
                    generation: gn.number,
                    state: state.to_owned(),
                    restarts: m.restarts,
                    uptime_ms,
                    process,
                    reported,
                });
            }
        }
        FamilyStatus {
            generation: self.gens[self.serving()].number,
            started_unix_ms: self.started_unix_ms,
            main,
            members,
            restarts: self.restarts.fold.count,
            restarting: self.restarts.current.is_some(),
            last_restart: self.restarts.last.clone(),
        }
    }

    /// A member of generation `g` said ready: the family's first start
    /// or a restart's new generation may be complete.
    fn on_ready(&mut self, g: usize) {
        let all = self.gens[g].members.iter().all(|m| {
            m.run
                .as_ref()
                .is_some_and(|r| r.state == ChildState::Running)
        });
        if !all {
            return;
        }
        match self.gens[g].phase {
            Phase::Starting => self.cut_over(g),
            Phase::Serving if !self.ready_notified => {
                self.ready_notified = true;
                self.log.log("every role is ready");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
            _ => {}
        }
    }
}
