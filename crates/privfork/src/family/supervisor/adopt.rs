//! A smooth restart's new image: adopting the running generation from the
//! state record ([`adopt`]) and starting the next one beside it.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::members::{Generation, Link, Member, PendingEnd, Phase, Running, allowed};
use super::restart::{InProgress, Restarts, Stage};
use super::{Handovers, Main, slots};
use crate::exe::Exe;
use crate::family::protocol::{self, ChildState};
use crate::family::record::{Record, STATE_ENV};
use crate::family::relay::{Sink, Source};
use crate::family::status::UserNames;
use crate::family::{Family, Restart, Role};
use crate::inherit::{FdKind, take_inherited_fd};
use crate::ipc::Channel;
use crate::listen::Listeners;
use crate::process::Child;

/// In a new image started by a restart's exec ([`STATE_ENV`] set): adopts
/// the running generation from the state record and starts the next one.
/// `Ok(Err(log))`: not a restart's image (main starts the first
/// generation). `Err`: the record could not be read or its fds taken —
/// this image refuses to run the family (main exits; the members see it
/// die and exit too, loudly: see the docs).
pub(super) fn adopt(family: &Family, mut log: Sink) -> Result<Result<Main<'_>, Sink>, String> {
    let Some(n) = std::env::var_os(STATE_ENV) else {
        return Ok(Err(log));
    };
    let n: RawFd = n
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{STATE_ENV}={n:?} is not an fd number"))?;
    let fd = take_inherited_fd(n, FdKind::File).map_err(|e| format!("state record: {e}"))?;
    let rec = Record::read(&fd).map_err(|e| e.to_string())?;
    drop(fd);
    let take = |n: RawFd, kind: FdKind, what: &str| {
        take_inherited_fd(n, kind).map_err(|e| format!("state record: {what}: {e}"))
    };
    let exe = Exe::from_fd(take(rec.exe_fd, FdKind::File, "pinned binary")?, &rec.path);
    let listeners = Listeners::adopt_numbered(&rec.listeners).map_err(|e| e.to_string())?;
    super::check_listeners(family, &listeners)?;
    let mut members = Vec::with_capacity(rec.members.len());
    for m in &rec.members {
        let role = role_named(family.roles, &m.role);
        let mut member = Member::new(role, m.instance, m.user.clone());
        member.next_start = None;
        member.restarts = m.restarts;
        member.quick_deaths = m.quick_deaths;
        member.backoff = Duration::from_millis(m.backoff_ms);
        if let Some(r) = &m.run {
            let what = format!("{}:{} pid {}", m.role, m.instance, r.pid);
            let child = Child::from_pidfd(take(r.pidfd, FdKind::Any, &what)?)
                .map_err(|e| format!("state record: {what}: {e}"))?;
            if child.pid() != r.pid {
                return Err(format!(
                    "state record: {what}: its pidfd is for pid {}",
                    child.pid()
                ));
            }
            let state = match r.state.as_str() {
                "starting" => ChildState::Starting,
                "running" => ChildState::Running,
                "stopping" => ChildState::Stopping,
                _ => ChildState::Stopped,
            };
            let mut channel = Channel::from_fd(
                take(r.channel, FdKind::UnixStream, &what)?,
                protocol::LIMITS,
            )
            .map_err(|e| format!("state record: {what}: {e}"))?;
            channel.set_accepting(
                protocol::state_name(state),
                &protocol::accepted(state, allowed(role)),
            );
            let tag = member.tag(rec.generation, r.pid);
            let stderr = if r.stderr >= 0 {
                Source::new(take(r.stderr, FdKind::Pipe, &what)?, tag)
            } else {
                // Its stderr had closed: a source already at its end.
                let (rd, _) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                    .map_err(|e| format!("pipe: {e}"))?;
                Source::new(rd, tag)
            }
            .map_err(|e| e.to_string())?;
            let started = Instant::now()
                .checked_sub(Duration::from_millis(r.uptime_ms))
                .unwrap_or_else(Instant::now);
            let links = r
                .links
                .iter()
                .map(|(j, s)| (*j as usize, s.map_or(Link::Pending, Link::Held)))
                .collect();
            let mut run = Running::new(child, channel, stderr, state, r.serial, links);
            run.started = started;
            // A member still starting gets a fresh ready deadline.
            run.ready_by =
                (state == ChildState::Starting).then(|| Instant::now() + role.ready_timeout);
            run.report = r.report.clone();
            // One stopping when main exec'd (an older image did not wait
            // for it) ends within the restart stop deadline.
            if matches!(state, ChildState::Stopping | ChildState::Stopped) {
                run.stop_by = Some(Instant::now() + super::RESTART_STOP_TIMEOUT);
            }
            member.run = Some(run);
        } else {
            member.next_start = Some(Instant::now() + member.backoff);
        }
        members.push(member);
    }
    let mut pending_ends = Vec::with_capacity(rec.pending_ends.len());
    for e in &rec.pending_ends {
        pending_ends.push(PendingEnd {
            member: e.member as usize,
            from: e.from as usize,
            creator: e.creator,
            fd: take(e.fd, FdKind::UnixStream, "a waiting channel end")?,
        });
    }
    let number = rec.restarts;
    log.log(&format!(
        "restart {number}: re-executed in place (pid {}); adopted generation {} \
         ({} running); starting generation {}",
        std::process::id(),
        rec.generation,
        members.iter().filter(|m| m.run.is_some()).count(),
        rec.generation + 1
    ));
    let mut main = Main {
        family,
        listeners,
        path: rec.path.clone().into(),
        started_unix_ms: rec.started_unix_ms,
        user_names: UserNames::default(),
        status_cache: None,
        gens: vec![Generation {
            number: rec.generation,
            exe,
            phase: Phase::Serving,
            members,
            pending_ends,
        }],
        serial: rec.serial,
        log,
        stopping: None,
        killed_at_deadline: false,
        ready_notified: rec.ready_notified,
        restarts: Restarts {
            fold: crate::reload::Fold::resumed(rec.restarts, Some(number), rec.again),
            last: rec.last.clone(),
            current: Some(InProgress {
                number,
                began_ns: rec.began_monotonic_ns,
                stage: Stage::Starting,
            }),
        },
        handover: Handovers::default(),
        orphans: Vec::new(),
    };
    main.start_next_generation(rec.generation + 1);
    Ok(Ok(main))
}

impl Main<'_> {
    /// Starts generation `number` from this image, beside the serving one.
    fn start_next_generation(&mut self, number: u64) {
        let exe = match Exe::pin() {
            Ok(e) => e,
            Err(e) => return self.finish(false, format!("pinning the new binary: {e}")),
        };
        self.gens.push(Generation {
            number,
            exe,
            phase: Phase::Starting,
            members: slots(self.family),
            pending_ends: Vec::new(),
        });
        let g = self.gens.len() - 1;
        for i in 0..self.gens[g].members.len() {
            self.gens[g].members[i].next_start = None;
            if let Err(e) = self.start(g, i) {
                let m = &self.gens[g].members[i];
                let reason = format!("cannot start new {}:{}: {e}", m.role.name, m.instance);
                self.restart_failed(reason);
                return;
            }
        }
    }
}

/// The row named `name`; for a role the new binary no longer has, a row
/// that is never restarted (its process runs on until it drains).
fn role_named(roles: &'static [Role], name: &str) -> &'static Role {
    if let Some(r) = roles.iter().find(|r| r.name == name) {
        return r;
    }
    fn gone(_: crate::family::RoleContext) -> i32 {
        1
    }
    // Once per unknown role per restart, a few bytes: leaked on purpose
    // (rows are `'static`).
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    Box::leak(Box::new(Role {
        restart: Restart::Never,
        ..Role::new(name, gone)
    }))
}
