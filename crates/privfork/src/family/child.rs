//! A member of the family, from exec to its role's function.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::protocol::{self, ToChild, ToMain};
use super::status::{FamilyStatus, MemberReport};
use super::{CHANNEL_FD, FIRST_LISTENER_FD, Role};
use crate::event::{Interest, wait_fd};
use crate::identity::Identity;
use crate::inherit::{FdKind, take_inherited_fd};
use crate::ipc::{Channel, RecvError, SendError};
use crate::listen::Listeners;
use crate::privdrop::DropOptions;
use crate::sandbox::Report;
use crate::setup::{Fds, Setup};

/// Exit code of a member whose setup failed (its stderr says why).
pub(crate) const EXIT_SETUP: i32 = 125;

/// What a member's function gets: its channel to main, its listeners, its
/// peer channels, and what its sandbox enforced.
#[derive(Debug)]
pub struct RoleContext {
    role: &'static str,
    instance: u32,
    channel: Channel<ToMain, ToChild>,
    listeners: Listeners,
    peers: Vec<(String, OwnedFd)>,
    report: Report,
    /// Its promises, for the report to main.
    promises: Option<String>,
    detail: Option<String>,
    args: Vec<String>,
    /// A stop request read while waiting for something else.
    stop: Option<Duration>,
    /// The request id of the last status query (answers to earlier,
    /// abandoned ones are dropped).
    query: u64,
    /// The generation it belongs to (1, then one more per restart).
    generation: u64,
    /// The stop came as a restart's drain (a new generation serves).
    draining: bool,
    /// Main's channel broke: main is gone.
    orphaned: bool,
    /// Connections handed over by the previous generation, not taken yet.
    handed: std::collections::VecDeque<HandedOver>,
}

/// A connection the previous generation handed over
/// ([`RoleContext::take_connection`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct HandedOver {
    /// The connected stream socket (TCP or unix), close-on-exec.
    pub socket: OwnedFd,
    /// What the previous owner had read from it but not answered: the
    /// start of the next request. Read these before the socket's own.
    pub buffered: Vec<u8>,
}

/// Why [`RoleContext::hand_over`] did not send a connection (the caller
/// still owns the decision: close it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoverError {
    /// Only while draining for a restart (a plain stop has nobody to take
    /// the connection).
    #[error("not draining for a restart: nobody takes the connection")]
    NotDraining,
    /// More buffered bytes than one frame carries.
    #[error("{len} buffered bytes, more than the {max} a handover carries")]
    TooManyBytes {
        /// The bytes given.
        len: usize,
        /// [`protocol::MAX_HANDOVER_BYTES`].
        max: usize,
    },
    /// The channel to main broke.
    #[error("sending the connection to main: {0}")]
    Send(#[from] SendError),
}

/// Why [`RoleContext::family_status`] has no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The query could not be sent.
    #[error("sending the status query to main: {0}")]
    Send(#[from] SendError),
    /// The channel broke (main is gone, or the role may not ask: main
    /// closes the channel of a role whose row does not allow queries).
    #[error("reading main's status answer: {0}")]
    Recv(#[from] RecvError),
    /// No answer in time.
    #[error("main did not answer the status query within {0:?}")]
    Timeout(Duration),
}

impl RoleContext {
    /// The role's name.
    pub fn role(&self) -> &'static str {
        self.role
    }

    /// Which instance of the role this is (from 0).
    pub fn instance(&self) -> u32 {
        self.instance
    }

    /// The listeners the role receives, by name.
    pub fn listeners(&self) -> &Listeners {
        &self.listeners
    }

    /// Takes the listeners (to move them into a server).
    pub fn take_listeners(&mut self) -> Listeners {
        std::mem::take(&mut self.listeners)
    }

    /// Takes the channel to peer role `name` (a connected unix stream
    /// socket), if the role has one.
    pub fn take_peer(&mut self, name: &str) -> Option<OwnedFd> {
        let i = self.peers.iter().position(|(n, _)| n == name)?;
        Some(self.peers.swap_remove(i).1)
    }

    /// The names of the peer channels not taken yet.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.peers.iter().map(|(n, _)| n.as_str())
    }

    /// What the role's sandbox enforced, layer by layer.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The arguments main passes to every member ([`super::Family::args`]).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// A line main shows in the family's status beside this member's
    /// sandbox (e.g. how a helper sandboxes the children it forks); set it
    /// before [`RoleContext::ready`].
    pub fn set_detail(&mut self, detail: impl Into<String>) {
        self.detail = Some(detail.into());
    }

    /// Tells main the member is set up and serving, with what its sandbox
    /// enforced. Main counts the role as started only then (and restarts
    /// a member that never says it).
    ///
    /// # Errors
    ///
    /// The channel to main is gone.
    pub fn ready(&mut self) -> Result<(), SendError> {
        let mut report = MemberReport::new(self.promises.clone(), &self.report);
        report.detail = self.detail.clone();
        self.channel.send(&ToMain::Ready(report))
    }

    /// Asks main for the family's status (every member's pid, user, what
    /// the kernel says of its sandbox, what it reported, restarts), for a
    /// role whose row sets `status`. Waits up to `timeout`; a stop request
    /// that arrives meanwhile is kept for [`RoleContext::poll_stop`].
    ///
    /// # Errors
    ///
    /// [`StatusError`]: the channel broke, or no answer in time.
    pub fn family_status(&mut self, timeout: Duration) -> Result<FamilyStatus, StatusError> {
        self.query += 1;
        self.channel
            .send_with(self.query, &ToMain::StatusQuery, Vec::new())?;
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(m) = self.channel.try_recv()? {
                match m.msg {
                    // A late answer to a query that timed out is not this
                    // one's.
                    ToChild::Status(s) if m.request_id == self.query => return Ok(s),
                    other => self.keep(other, m.fds),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StatusError::Timeout(timeout));
            }
            wait_fd(self.channel.as_fd(), Interest::READABLE, Some(deadline))
                .map_err(|source| StatusError::Recv(RecvError::Io { source }))?;
        }
    }

    /// The channel to main, readable when main has something to say: poll
    /// it beside the role's own work.
    pub fn main_fd(&self) -> BorrowedFd<'_> {
        self.channel.as_fd()
    }

    /// Reads what main said, without blocking: `Some(deadline)` once main
    /// asks the member to stop (finish in-flight work within the deadline,
    /// then call [`RoleContext::stopped`] and return); also `Some` (zero)
    /// when main is gone. After a restart's stop,
    /// [`RoleContext::is_draining`] is true.
    pub fn poll_stop(&mut self) -> Option<Duration> {
        self.read_main();
        if self.orphaned {
            return Some(Duration::ZERO);
        }
        self.stop
    }

    /// Whether the stop main sent is a restart's drain: a new generation
    /// accepts on the same listeners, and takes idle connections
    /// ([`RoleContext::hand_over`]). False for a plain stop (the family
    /// stops: idle connections are closed).
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// The generation this member belongs to: 1 at first, one more per
    /// smooth restart.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A connection the previous generation handed over, if one came (it
    /// reads what main sent, without blocking; a stop read meanwhile is
    /// kept for [`RoleContext::poll_stop`]). Serve it as if accepted,
    /// reading [`HandedOver::buffered`] first.
    pub fn take_connection(&mut self) -> Option<HandedOver> {
        if self.handed.is_empty() {
            self.read_main();
        }
        self.handed.pop_front()
    }

    /// Hands idle connection `socket` to the next generation, with the
    /// bytes read from it but not answered (at most
    /// [`protocol::MAX_HANDOVER_BYTES`]). Only while draining
    /// ([`RoleContext::is_draining`]), and only for a role whose row sets
    /// `handover` (main closes the channel of any other).
    ///
    /// # Errors
    ///
    /// [`HandoverError`]: not draining, too many bytes, or the channel
    /// broke; the socket is closed then (the caller keeps nothing).
    pub fn hand_over(&mut self, socket: OwnedFd, buffered: &[u8]) -> Result<(), HandoverError> {
        if !self.draining {
            return Err(HandoverError::NotDraining);
        }
        if buffered.len() > protocol::MAX_HANDOVER_BYTES {
            return Err(HandoverError::TooManyBytes {
                len: buffered.len(),
                max: protocol::MAX_HANDOVER_BYTES,
            });
        }
        let msg = ToMain::Handover(crate::ipc::Bytes(buffered.to_vec()));
        Ok(self.channel.send_fds(&msg, vec![socket])?)
    }

    /// Reads every message main has sent so far, without blocking.
    fn read_main(&mut self) {
        while !self.orphaned {
            match self.channel.try_recv() {
                Ok(Some(m)) => self.keep(m.msg, m.fds),
                Ok(None) => return,
                Err(_) => self.orphaned = true,
            }
        }
    }

    /// Keeps what a message from main asks for later.
    fn keep(&mut self, msg: ToChild, mut fds: Vec<OwnedFd>) {
        match msg {
            ToChild::Stop(ms) => {
                self.stop.get_or_insert(Duration::from_millis(ms));
            }
            ToChild::Drain(ms) => {
                if self.stop.is_none() {
                    self.draining = true;
                    self.stop = Some(Duration::from_millis(ms));
                }
            }
            ToChild::Connection(bytes) => {
                // The kind declares one fd: the channel checked it came.
                if let Some(socket) = fds.pop() {
                    self.handed.push_back(HandedOver {
                        socket,
                        buffered: bytes.0,
                    });
                }
            }
            // An answer nobody waits for any more; no application
            // handler here.
            ToChild::App(_) | ToChild::Status(_) => {}
        }
    }

    /// Tells main the member has finished its work and exits now.
    pub fn stopped(&mut self) {
        let _ = self.channel.send(&ToMain::Stopped);
    }

    /// The channel to main, for application messages.
    pub fn channel(&mut self) -> &mut Channel<ToMain, ToChild> {
        &mut self.channel
    }
}

/// The member's arguments after `--privfork-role NAME`.
struct Args {
    role: String,
    instance: u32,
    parent: rustix::process::Pid,
    listeners: Vec<String>,
    peers: Vec<String>,
    /// The user main chose instead of the row's.
    user: Option<String>,
    generation: u64,
    /// The program's arguments, after `--`.
    rest: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // Main's flags come first; the program's own arguments follow `--`.
    let rest = match args.iter().position(|a| a == "--") {
        Some(i) => {
            let rest = args.split_off(i + 1);
            args.pop();
            rest
        }
        None => Vec::new(),
    };
    let value = |flag: &str| -> Result<&str, String> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
            .ok_or_else(|| format!("missing {flag}"))
    };
    let list = |v: &str| -> Vec<String> {
        if v == "-" {
            Vec::new()
        } else {
            v.split(':').map(str::to_owned).collect()
        }
    };
    let parent: i32 = value("--privfork-parent")?
        .parse()
        .map_err(|_| "bad --privfork-parent".to_owned())?;
    Ok(Args {
        role: value(crate::exe::ROLE_FLAG)?.to_owned(),
        instance: value("--privfork-instance")?
            .parse()
            .map_err(|_| "bad --privfork-instance".to_owned())?,
        parent: rustix::process::Pid::from_raw(parent).ok_or("bad --privfork-parent")?,
        listeners: list(value("--privfork-listeners")?),
        peers: list(value("--privfork-peers")?),
        user: value("--privfork-user").ok().map(str::to_owned),
        generation: match value("--privfork-generation") {
            Ok(g) => g
                .parse()
                .map_err(|_| "bad --privfork-generation".to_owned())?,
            Err(_) => 1,
        },
        rest,
    })
}

/// Whether this process already is `id`'s user and group (every real,
/// effective and saved id), and that user is not root.
fn already_unprivileged(id: &Identity) -> bool {
    let (ru, eu, su) = crate::sys::get_res_uid();
    let (rg, eg, sg) = crate::sys::get_res_gid();
    id.uid() != 0
        && [ru, eu, su].iter().all(|u| u.as_raw() == id.uid())
        && [rg, eg, sg].iter().all(|g| g.as_raw() == id.gid())
}

/// The member's `main`: set up, run the role, exit with its code.
pub(super) fn main(roles: &'static [Role]) -> ! {
    let code = match setup(roles) {
        Ok((role, cx)) => (role.run)(cx),
        Err(e) => {
            eprintln!("privfork member setup failed: {e}");
            EXIT_SETUP
        }
    };
    std::process::exit(code)
}

fn setup(roles: &'static [Role]) -> Result<(&'static Role, RoleContext), String> {
    // An image started setuid, setgid or with file capabilities would have
    // privileges its invoker lacks: anyone may exec the binary with a role
    // in argv, so only an invoker who already has the privileges gets
    // them.
    if crate::sys::secure_exec() {
        return Err("refusing to run a role in a setuid/setgid or file-capability image".into());
    }
    // Proof of one thread, for the routine's per-thread calls.
    let token = crate::sys::exec_image_token().map_err(|e| e.to_string())?;
    let args = parse_args()?;
    let role = roles
        .iter()
        .find(|r| r.name == args.role)
        .ok_or_else(|| format!("no role named {:?}", args.role))?;
    // What main placed at fixed fds.
    let channel = take_inherited_fd(CHANNEL_FD, FdKind::UnixStream)
        .map_err(|e| format!("the channel to main: {e}"))?;
    // Orders only from main: the process that started this one, as its
    // user, and the parent argv names.
    let main_pid = crate::inherit::check_from_parent(channel.as_fd())
        .map_err(|e| format!("the channel to main: {e}"))?;
    if main_pid != args.parent.as_raw_nonzero().get() {
        return Err(format!(
            "--privfork-parent {} is not the parent {main_pid}",
            args.parent.as_raw_nonzero()
        ));
    }
    let channel = Channel::<ToMain, ToChild>::from_fd(channel, protocol::LIMITS)
        .map_err(|e| format!("the channel to main: {e}"))?;
    let listeners =
        Listeners::adopt(FIRST_LISTENER_FD, &args.listeners).map_err(|e| e.to_string())?;
    let mut peers = Vec::new();
    let first_peer = FIRST_LISTENER_FD + args.listeners.len() as i32;
    for (i, name) in args.peers.iter().enumerate() {
        let fd = take_inherited_fd(first_peer + i as i32, FdKind::UnixStream)
            .map_err(|e| format!("the channel to peer {name:?}: {e}"))?;
        peers.push((name.clone(), fd));
    }
    // The sandbox, prepared while still root (its paths opened now).
    let sandbox = match role.sandbox {
        Some(build) => {
            Some(build(&args.rest).map_err(|e| format!("role {:?}: sandbox: {e}", role.name))?)
        }
        None => None,
    };
    let promises = sandbox.as_ref().map(|s| s.promise_set().to_string());
    let sandbox = match sandbox {
        Some(s) => Some(
            s.prepare()
                .map_err(|e| format!("role {:?}: sandbox: {e}", role.name))?,
        ),
        None => None,
    };
    // Main's choice of user applies only to a role with a user of its
    // own: one that keeps main's user and capabilities stays as it is.
    let user = match (role.user, &args.user) {
        (None, _) => None,
        (Some(_), Some(chosen)) => Some(chosen.as_str()),
        (Some(row), None) => Some(row),
    };
    let identity = match user {
        Some(u) => {
            let id = Identity::user(u).map_err(|e| format!("role {:?}: {e}", role.name))?;
            // A main that is not root starts its members as its own user
            // (it cannot change users): there is nothing to drop, and its
            // supplementary groups are its own to keep.
            (!already_unprivileged(&id)).then_some(id)
        }
        None => None,
    };
    let drop_opts = DropOptions::new();
    let applied = Setup {
        parent: Some(args.parent),
        fds: Fds::CloseOnExec { passed: 0 },
        isolate: true,
        cwd_root: true,
        identity: identity.as_ref().map(|id| (id, &drop_opts)),
        keep_caps: role.keep_caps,
        no_new_privs: true,
        sandbox: sandbox.as_ref(),
        ..Setup::default()
    }
    .run(Some(&token))
    .map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        format!("role {:?}: {msg}", role.name)
    })?;
    let _ = rustix::thread::set_name(
        &std::ffi::CString::new(role.name.chars().take(15).collect::<String>()).unwrap_or_default(),
    );
    Ok((
        role,
        RoleContext {
            role: role.name,
            instance: args.instance,
            channel,
            listeners,
            peers,
            report: applied.report,
            promises,
            detail: None,
            args: args.rest,
            stop: None,
            query: 0,
            generation: args.generation,
            draining: false,
            orphaned: false,
            handed: std::collections::VecDeque::new(),
        },
    ))
}
