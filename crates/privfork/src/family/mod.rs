//! The process family: a small privileged main that owns the listeners and
//! supervises, and members — workers, helpers — each started by exec of
//! the pinned binary, set up by the one child-setup routine, under its own
//! user and sandbox.
//!
//! The family is data: a table of [`Role`]s, one row per kind of process
//! (name, user, capabilities it keeps, sandbox, listeners it receives,
//! roles it talks to, whether it may send application messages,
//! instances, restart policy, and the function it runs once set up), as
//! OpenBSD's daemons describe their processes in a `procs[]` table.
//!
//! ```no_run
//! use privfork::family::{Family, Role, RoleContext};
//! use privfork::sandbox::Sandbox;
//!
//! fn worker(mut cx: RoleContext) -> i32 {
//!     cx.ready().unwrap();
//!     // serve on cx.listeners() until cx says stop …
//!     0
//! }
//!
//! static ROLES: &[Role] = &[Role {
//!     sandbox: Some(|_args| Sandbox::new().promises("stdio")),
//!     listeners: &["http"],
//!     ..Role::new("worker", worker)
//! }];
//!
//! fn main() {
//!     let family = Family::new(ROLES);
//!     // First line of main: a member started by exec runs its role here
//!     // and never returns.
//!     family.dispatch();
//!     let specs = vec!["127.0.0.1:8080,name=http".parse().unwrap()];
//!     std::process::exit(family.listen(specs).run_main());
//! }
//! ```
//!
//! # Main
//!
//! Main ([`Family::run_main`]) is one poll loop ([`crate::event`]) without
//! an async runtime: the signals it handles come through a signalfd, each
//! child through its pidfd, its channel and its stderr pipe. It never
//! parses untrusted input: a child's frames are checked (size, kind per
//! state: [`protocol`]), its stderr becomes log lines tagged with role and
//! pid, of bounded length, with control characters escaped, read without
//! ever blocking main.
//!
//! - A child that exits is restarted (per its [`Restart`]) with
//!   exponential backoff; a crash loop is reported in the log and in
//!   sd_notify's STATUS.
//! - SIGTERM/SIGINT: every child is told to stop accepting and finish its
//!   work; after the stop deadline the rest are killed; main exits 0 on a
//!   clean stop.
//! - sd_notify READY=1 once every role has said it is ready, STOPPING=1
//!   on shutdown (when `NOTIFY_SOCKET` is set).
//! - If main dies, every child exits: its parent-death signal (main keeps
//!   CAP_KILL for it) and EOF on its channel.
//!
//! # Members
//!
//! A member starts as the pinned binary with its role in argv
//! (`--privfork-role NAME`); [`Family::dispatch`], first thing in `main`,
//! recognises it, adopts its channel, listeners and peer channels at
//! their fixed fds, prepares its sandbox, runs the child-setup routine
//! ([`crate::setup`]: new session, keyring, limits, drop to the role's
//! user, death signal, capabilities, no_new_privs, Landlock, seccomp) and
//! only then calls the role's function with a [`RoleContext`]. Threads and
//! async runtimes start inside that function, after the sandbox.

mod child;
pub mod protocol;
mod record;
pub(crate) use record::STATE_ENV;
mod relay;
pub mod status;
mod supervisor;

use std::time::Duration;

use rustix::thread::CapabilitySet;

use crate::listen::ListenSpec;
use crate::sandbox::{Sandbox, SandboxError};

pub use child::{HandedOver, HandoverError, RoleContext, StatusError};
pub use status::{FamilyStatus, MemberReport, MemberStatus, ProcessFacts, RestartReport};

/// What main does when a member exits while the family is not stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Restart {
    /// Start it again, after a backoff that doubles while it keeps dying
    /// young (from `initial` up to `max`).
    Always {
        /// The first delay.
        initial: Duration,
        /// The longest delay.
        max: Duration,
    },
    /// Leave it; the family stops when it exits.
    Never,
}

impl Restart {
    /// Restart from 100 ms, doubling up to 30 s.
    pub const DEFAULT: Self = Self::Always {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(30),
    };
}

/// A role's `listeners` that receives every listener main has.
pub const ALL_LISTENERS: &[&str] = &["*"];

/// Builds a role's sandbox from the family's arguments ([`Family::args`]).
pub type SandboxBuilder = fn(&[String]) -> Result<Sandbox, SandboxError>;

/// One kind of process of the family. Build rows with [`Role::new`] and
/// struct update syntax (`Role { listeners: &["http"], ..Role::new(..) }`).
#[derive(Clone, Copy)]
pub struct Role {
    /// The role's name, in argv and in logs.
    pub name: &'static str,
    /// The user it runs as (name or uid); `None`: it keeps main's (root)
    /// and only the capabilities in `keep_caps`.
    pub user: Option<&'static str>,
    /// Capabilities it keeps (a role with a `user` keeps none).
    pub keep_caps: CapabilitySet,
    /// Its sandbox, built in the member from the family's arguments
    /// ([`Family::args`]; paths opened as root before the drop). `None`
    /// only for a role whose job needs what no promise
    /// allows — the fork server, which sets up and sandboxes each of its
    /// children instead (their setup needs `keyctl`, `setsid`, `setuid`…);
    /// such a role still gets every other stage of the setup routine.
    pub sandbox: Option<SandboxBuilder>,
    /// Names of the listeners it receives ([`ALL_LISTENERS`]: every
    /// listener main has, in order, e.g. for a server with a repeatable
    /// `--listen` option).
    pub listeners: &'static [&'static str],
    /// Roles it gets a channel to (an `AF_UNIX` stream socketpair, one end
    /// in each; the peer finds it in [`RoleContext::peers`] under this
    /// role's name). Links are symmetric: listing a role is enough. When
    /// either member of a link dies, the other is stopped and both start
    /// again on a fresh pair. A role that lists peers or is listed as one
    /// has exactly one instance ([`Family::new`] checks).
    pub peers: &'static [&'static str],
    /// Whether it may send application messages to main
    /// ([`protocol::ToMain::App`]); if not, one closes its channel.
    pub app_messages: bool,
    /// Whether it may ask main for the family's status
    /// ([`RoleContext::family_status`]: every member's pid, user, sandbox
    /// and restarts); if not, a query closes its channel.
    pub status: bool,
    /// Whether, on a smooth restart, its idle connections move to the
    /// next generation's member of the same role
    /// ([`RoleContext::hand_over`], [`RoleContext::take_connection`])
    /// instead of being closed (a server on the family's listeners).
    pub handover: bool,
    /// How many processes of this role run.
    pub instances: u32,
    /// What happens when one exits.
    pub restart: Restart,
    /// How long main waits for it to say ready before it counts as failed
    /// (killed and restarted).
    pub ready_timeout: Duration,
    /// The function it runs once set up; its return value is the exit
    /// code.
    pub run: fn(RoleContext) -> i32,
}

impl Role {
    /// A row with the defaults: user `nobody`, no capability, promises
    /// `stdio` only, no listener or peer, no application message or
    /// status query, one instance, restarted with the default backoff,
    /// 10 s to get ready.
    pub const fn new(name: &'static str, run: fn(RoleContext) -> i32) -> Self {
        Self {
            name,
            user: Some("nobody"),
            keep_caps: CapabilitySet::empty(),
            sandbox: Some(default_sandbox),
            listeners: &[],
            peers: &[],
            app_messages: false,
            status: false,
            handover: false,
            instances: 1,
            restart: Restart::DEFAULT,
            ready_timeout: Duration::from_secs(10),
            run,
        }
    }
}

fn default_sandbox(_: &[String]) -> Result<Sandbox, SandboxError> {
    Sandbox::new().promises("stdio")
}

impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Role")
            .field("name", &self.name)
            .field("user", &self.user)
            .field("keep_caps", &self.keep_caps)
            .field("listeners", &self.listeners)
            .field("peers", &self.peers)
            .field("app_messages", &self.app_messages)
            .field("status", &self.status)
            .field("handover", &self.handover)
            .field("instances", &self.instances)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

/// The fd of a member's channel to main.
pub(crate) const CHANNEL_FD: i32 = 3;
/// The first fd of a member's listeners; its peer channels follow them.
pub(crate) const FIRST_LISTENER_FD: i32 = 4;

/// A family: its roles and the listeners main binds.
#[derive(Debug)]
pub struct Family {
    roles: &'static [Role],
    listen: Vec<ListenSpec>,
    stop_timeout: Duration,
    drain_timeout: Duration,
    preflight_timeout: Duration,
    check_args: Vec<String>,
    args: Vec<String>,
    users: Vec<(&'static str, String)>,
}

impl Family {
    /// A family of `roles`.
    ///
    /// # Panics
    ///
    /// If two roles share a name, a role names an unknown peer or itself,
    /// or a role that has peer channels (lists peers or is listed as one)
    /// has other than one instance (a programming error in the table).
    pub fn new(roles: &'static [Role]) -> Self {
        for (i, r) in roles.iter().enumerate() {
            assert!(
                roles[..i].iter().all(|o| o.name != r.name),
                "two roles are named {:?}",
                r.name
            );
            for p in r.peers {
                assert!(
                    roles.iter().any(|o| o.name == *p),
                    "role {:?} names unknown peer {p:?}",
                    r.name
                );
                assert!(*p != r.name, "role {:?} names itself as a peer", r.name);
            }
            let linked = !r.peers.is_empty() || roles.iter().any(|o| o.peers.contains(&r.name));
            assert!(
                !linked || r.instances == 1,
                "role {:?} has peer channels, so it must have exactly one instance (has {})",
                r.name,
                r.instances
            );
            assert!(
                r.user.is_none() || r.keep_caps.is_empty(),
                "role {:?} keeps capabilities: it must keep main's user (user: None)",
                r.name
            );
        }
        Self {
            roles,
            listen: Vec::new(),
            stop_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            preflight_timeout: Duration::from_secs(30),
            check_args: vec!["--check".to_owned()],
            args: Vec::new(),
            users: Vec::new(),
        }
    }

    /// Arguments main passes to every member, after its own (typically
    /// the program's configuration, so a member reads the same settings
    /// main started with). A member finds them in [`RoleContext::args`],
    /// and its sandbox builder gets them. They travel in argv, which
    /// every local user can read (`/proc/PID/cmdline`): no secrets here.
    pub fn args(mut self, args: Vec<String>) -> Self {
        self.args = args;
        self
    }

    /// Runs role `role` as `user` (a name or numeric uid) instead of the
    /// user in its row, e.g. from a `--user` option. The user is resolved
    /// when main starts: an unknown one stops it there, naming the role.
    ///
    /// # Panics
    ///
    /// If no role is named `role`, or its row keeps main's user (a role
    /// that keeps capabilities cannot change users: a programming error).
    pub fn user(mut self, role: &str, user: impl Into<String>) -> Self {
        let row = self
            .roles
            .iter()
            .find(|r| r.name == role)
            .unwrap_or_else(|| panic!("Family::user: no role named {role:?}"));
        assert!(
            row.user.is_some(),
            "Family::user: role {role:?} keeps main's user"
        );
        self.users.retain(|(r, _)| *r != row.name);
        self.users.push((row.name, user.into()));
        self
    }

    /// The user role `r` runs as: its override, or its row's.
    fn user_of(&self, r: &Role) -> Option<String> {
        self.users
            .iter()
            .find(|(n, _)| *n == r.name)
            .map(|(_, u)| u.clone())
            .or_else(|| r.user.map(str::to_owned))
    }

    /// The listeners main binds (unless systemd passed its own).
    pub fn listen(mut self, specs: Vec<ListenSpec>) -> Self {
        self.listen = specs;
        self
    }

    /// How long members get to finish their work on stop (default 10 s).
    pub fn stop_timeout(mut self, d: Duration) -> Self {
        self.stop_timeout = d;
        self
    }

    /// On a smooth restart, how long the old generation gets to finish its
    /// requests in flight once the new one serves (default 10 s); what is
    /// left of it then is killed.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }

    /// On a smooth restart, how long the new binary's check may run
    /// (default 30 s); a check that takes longer fails the restart.
    pub fn preflight_timeout(mut self, d: Duration) -> Self {
        self.preflight_timeout = d;
        self
    }

    /// The arguments a smooth restart's preflight appends to main's own
    /// command line to run the new binary's self-check (default
    /// `--check`): it must exit 0 only if that binary can start with this
    /// configuration, and must bind, change and start nothing.
    pub fn check_args(mut self, args: Vec<String>) -> Self {
        self.check_args = args;
        self
    }

    /// Whether this image was started by a smooth restart's exec in place
    /// (main then adopts the running generation instead of starting
    /// fresh): e.g. to print a start-up banner only once.
    pub fn is_restart() -> bool {
        std::env::var_os(STATE_ENV).is_some()
    }

    /// If this process was started as a member (`--privfork-role` in
    /// argv), sets it up, runs its role and exits; otherwise returns. Call
    /// it first thing in `main`, before any thread starts.
    pub fn dispatch(&self) {
        // The fds that came through exec (a member's channel, listeners
        // and peers; main's from systemd), before anything else opens one.
        crate::inherit::capture_if_started_with_fds();
        // A smooth restart's preflight: this binary must read the state
        // record the running main writes, or the restart stops here.
        record::check_preflight(self.roles);
        if crate::exe::role().is_some() {
            child::main(self.roles)
        }
    }

    /// Runs main: opens `/dev/null` on any of fds 0-2 that is closed, binds
    /// (or adopts from systemd) the listeners, starts every role,
    /// supervises, and returns the exit code when the family stops.
    /// Errors before the family starts are printed and give exit code 1.
    pub fn run_main(self) -> i32 {
        // A preflight's program must stop at its check: a family started
        // here would run beside the real one, as root.
        if std::env::var_os(record::PREFLIGHT_ENV).is_some() {
            eprintln!(
                "privfork family: started as a restart's preflight, but the program did not \
                 stop at its check ({}); refusing to start a family",
                self.check_args.join(" ")
            );
            return 2;
        }
        // First: fds 0-2 open, so no listener or channel lands on them.
        if let Err(e) = crate::sys::open_missing_stdio() {
            eprintln!("privfork family: opening /dev/null on fds 0-2: {e}");
            return 1;
        }
        match supervisor::run(&self) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("privfork family: {e}");
                1
            }
        }
    }
}
