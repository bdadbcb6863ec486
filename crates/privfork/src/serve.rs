//! `privfork serve`: any server that takes inherited listening sockets,
//! sandboxed, its sockets held by root, restarted on SIGHUP without a
//! moment in which nothing accepts.
//!
//! privfork binds the listeners (as root: ports below 1024, unix sockets
//! with their owner and mode) and keeps them for its whole life. Each
//! *instance* of the server is one `privfork run` — the same code, forked
//! from privfork serve: it drops to the user, applies the sandbox,
//! executes the server once with the listeners at fd 3 onward and
//! `LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`, relays its output,
//! passes signals on, and ends everything the server started when it
//! exits. privfork serve supervises the instances:
//!
//! - **Readiness.** With `--ready notify` an instance's `privfork run` is
//!   given a `NOTIFY_SOCKET` of its own — a datagram socket privfork serve
//!   binds in a directory only root can enter — and relays the server's
//!   `READY=1`, `STOPPING=1` and `STATUS=` there from the server's own
//!   processes only (see [`crate::sandbox::run`]). privfork serve accepts
//!   a message only from that instance's `privfork run` (the sender's pid,
//!   from `SCM_CREDENTIALS`). With `--ready delay:D` an instance is ready
//!   once it has run for D. Readiness is never probed through the shared
//!   listener: either instance could answer.
//! - **SIGHUP** starts a new instance on the same sockets. Once it is
//!   ready, the old one is sent `--stop-signal` (SIGTERM) and given
//!   `--drain` to finish; what is left of it then is killed. A new
//!   instance that exits, or is not ready within `--ready-timeout`, is
//!   killed and the old one serves on, the reason logged. One reload at a
//!   time; SIGHUPs during one are folded into one more ([`crate::reload`],
//!   shared with the process family's smooth restart).
//! - **Crashes.** An instance that exits by itself is started again after
//!   a delay that doubles with each failure in a row (100 ms up to 30 s;
//!   back to 100 ms once an instance has served 10 s), as
//!   `--restart always|on-failure|never` says. The sockets stay open
//!   meanwhile: connections wait in the backlog.
//! - **Stop.** SIGTERM or SIGINT: every instance is sent its stop signal
//!   and given `--drain`; a second one kills them at once. privfork serve
//!   exits with the serving instance's status (its exit code, or 128 + the
//!   signal that ended it).
//! - **Nothing outlives it.** privfork serve is a subreaper: a process an
//!   instance leaves behind when its `privfork run` dies comes back to it
//!   and is killed. If privfork serve itself is killed (SIGKILL), each
//!   `privfork run` gets SIGTERM (its parent-death signal), passes it to
//!   its server, and ends the server's tree when the server exits. As PID
//!   1 of a container it reaps every orphan.
//! - Under systemd (`Type=notify`) it reports READY, RELOADING and STATUS.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::event::{Interest, Poller, Signals};
use crate::listen::{ListenSpec, Listeners};
use crate::process::{Child, ExitStatus, Signal};
use crate::reload::{self, Fold, Request};
use crate::sandbox::notify;
use crate::sandbox::run::{self, RunError, RunOptions, exit};
use crate::sys::{self, Forked};

/// How an instance says it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// `READY=1` through sd_notify.
    Notify,
    /// Once it has run this long.
    Delay(Duration),
}

/// When an instance that exited by itself is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Whatever its status.
    Always,
    /// Unless it exited with status 0.
    #[default]
    OnFailure,
    /// Never: privfork serve then stops with the instance's status.
    Never,
}

/// What to serve, and how.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Each instance: user, sandbox, environment, limits, the command
    /// (its `listen` must be empty: the listeners are privfork serve's).
    pub run: RunOptions,
    /// The listeners, bound once.
    pub listen: Vec<ListenSpec>,
    /// How an instance says it is ready.
    pub ready: Ready,
    /// How long a new instance has to become ready.
    pub ready_timeout: Duration,
    /// What an instance is sent to stop gracefully.
    pub stop_signal: Signal,
    /// How long an instance has to stop after its stop signal.
    pub drain: Duration,
    /// When an instance that exited by itself starts again.
    pub restart: Restart,
}

/// The signals `--stop-signal` may name: those `privfork run` passes on
/// to its program.
pub const STOP_SIGNALS: &[(&str, Signal)] = &[
    ("TERM", Signal::TERM),
    ("INT", Signal::INT),
    ("QUIT", Signal::QUIT),
    ("HUP", Signal::HUP),
    ("USR1", Signal::USR1),
    ("USR2", Signal::USR2),
    ("WINCH", Signal::WINCH),
];

/// The first wait before a crashed instance starts again.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An instance that served this long resets the wait.
const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// Instances at once: serving, starting, and those draining.
const MAX_INSTANCES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Started; not ready yet (killed at the deadline).
    Starting { until: Instant },
    /// Ready: the one serving (or, during a reload, the new one).
    Serving { since: Instant },
    /// Sent its stop signal; killed at the deadline.
    Stopping { kill_at: Instant },
}

struct Instance {
    number: u64,
    /// Its `privfork run`.
    runner: Child,
    /// Its notify socket and the socket file's path (`--ready notify`).
    notify: Option<(OwnedFd, PathBuf)>,
    started: Instant,
    state: State,
    /// SIGKILL sent to its `privfork run`.
    killed: bool,
    /// It has been ready: its status is the one privfork serve reports.
    served: bool,
    /// The last `STATUS=` it sent.
    status: Option<String>,
    /// Ended on purpose (a reload's old instance, a failed new one, a
    /// stop): its exit is no crash.
    ending: bool,
}

/// A reload under way: its number, when it began, the new instance.
struct Reloading {
    number: u64,
    began: Instant,
    new: u64,
}

struct Serve<'a> {
    opts: &'a ServeOptions,
    listeners: Listeners,
    /// Where the notify sockets are (removed at the end).
    notify_dir: Option<PathBuf>,
    instances: Vec<Instance>,
    started: u64,
    fold: Fold,
    reloading: Option<Reloading>,
    /// Failures in a row, and when the next instance starts after one.
    failures: u32,
    restart_at: Option<Instant>,
    /// SIGTERM/SIGINT came (how many).
    stopping: u32,
    /// Whether an instance has ever been ready.
    ever_ready: bool,
    /// The exit code, once known.
    code: Option<i32>,
    /// Status of the last instance that served, for the exit code.
    last_status: Option<ExitStatus>,
    /// Notify messages ignored (not from the instance's privfork run, too
    /// long, or carrying fds).
    ignored_notify: u64,
}

/// Runs `privfork serve`; returns the exit code.
///
/// # Errors
///
/// [`RunError`] for what fails before the first instance starts: a
/// listener that cannot be bound (114), bad options, the notify
/// directory. Failures of `privfork run` in the first instance (a bad
/// user, promise, unveil, program: 114–127) stop privfork serve with that
/// code; in a later one they fail that reload or restart.
pub fn serve(opts: &ServeOptions) -> Result<i32, RunError> {
    let bad = |code: i32, msg: String| RunError { code, message: msg };
    sys::open_missing_stdio().map_err(|e| bad(exit::SANDBOX, format!("/dev/null: {e}")))?;
    if !opts.run.listen.is_empty() {
        return Err(bad(exit::SANDBOX, "serve binds its own listeners".into()));
    }
    if opts.listen.is_empty() {
        return Err(bad(
            exit::LISTEN,
            "nothing to serve: give at least one --listen ADDR".into(),
        ));
    }
    if opts.run.command.is_empty() {
        return Err(bad(exit::NOT_FOUND, "no command given".into()));
    }
    // privfork serve reaps its instances: a SIGCHLD it was started with
    // ignored would have the kernel reap them (and reuse their pids).
    sys::unignore_signal(libc::SIGCHLD)
        .map_err(|e| bad(exit::SANDBOX, format!("sigaction(SIGCHLD): {e}")))?;
    // First, before anything of privfork's own is open: the listeners at
    // 3 onward, where every instance's program gets them.
    let listeners = run::bind_listeners(&opts.listen)?;
    for l in listeners.iter() {
        log(&format!("listening on {} ({})", l.local_addr(), l.name()));
    }
    // Events, not handlers; blocked before any fork (each privfork run
    // sets up its own).
    let signals = Signals::new(&[
        Signal::CHILD,
        Signal::HUP,
        Signal::TERM,
        Signal::INT,
        Signal::QUIT,
        Signal::USR1,
        Signal::USR2,
    ])
    .map_err(|e| bad(exit::SANDBOX, format!("signalfd: {e}")))?;
    crate::sandbox::reap::become_subreaper()
        .map_err(|e| bad(exit::SANDBOX, format!("prctl(PR_SET_CHILD_SUBREAPER): {e}")))?;
    let notify_dir = match opts.ready {
        Ready::Notify => Some(
            notify_dir().map_err(|e| bad(exit::SANDBOX, format!("the notify directory: {e}")))?,
        ),
        Ready::Delay(_) => None,
    };
    let mut s = Serve {
        opts,
        listeners,
        notify_dir,
        instances: Vec::new(),
        started: 0,
        fold: Fold::default(),
        reloading: None,
        failures: 0,
        restart_at: None,
        stopping: 0,
        ever_ready: false,
        code: None,
        last_status: None,
        ignored_notify: 0,
    };
    s.start_serving_instance();
    let result = s.run_loop(&signals);
    // Whatever is left (an error above): ended, as every orphan.
    for i in &mut s.instances {
        let _ = i.runner.kill_and_wait();
    }
    let _ = crate::sandbox::reap::kill_descendants();
    if let Some(dir) = &s.notify_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// One line on privfork serve's stderr.
fn log(line: &str) {
    eprintln!("privfork serve: {line}");
}

/// A fresh directory only root can enter, for the instances' notify
/// sockets: under `/run/privfork` as root, the temp directory otherwise.
fn notify_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let base = if rustix::process::geteuid().is_root() {
        let base = PathBuf::from("/run/privfork");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(&base)?;
        // Root's own directory: what killed privfork processes left.
        sweep_stale(&base);
        base
    } else {
        std::env::temp_dir()
    };
    // Unguessable enough not to be squatted: created, never reused
    // (create fails if it exists), and only root may write in `base`.
    let random = {
        use std::hash::{BuildHasher, Hasher};
        std::hash::RandomState::new().build_hasher().finish()
    };
    let name = format!("serve.{}.{random:016x}", std::process::id());
    let dir = base.join(name);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// Removes what a privfork serve or privfork run killed with SIGKILL left
/// in `base`: `serve.PID.*` and `notify-PID-*` directories whose PID is no
/// longer running (one running — a reused pid, say — is left alone).
fn sweep_stale(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let pid = name
            .strip_prefix("serve.")
            .and_then(|r| r.split('.').next())
            .or_else(|| {
                name.strip_prefix("notify-")
                    .and_then(|r| r.split('-').next())
            })
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Serve<'_> {
    fn run_loop(&mut self, signals: &Signals) -> Result<i32, RunError> {
        const SIGNALS: usize = 0;
        const RUNNER: usize = 1;
        const NOTIFY: usize = 1 + MAX_INSTANCES;
        loop {
            if let Some(code) = self.code
                && self.instances.is_empty()
            {
                return Ok(code);
            }
            let deadline = self.next_deadline();
            let ready: Vec<usize> = {
                let mut poller = Poller::<{ 1 + 2 * MAX_INSTANCES }>::new();
                poller.add(signals, Interest::READABLE, SIGNALS);
                for (k, i) in self.instances.iter().enumerate() {
                    poller.add(&i.runner, Interest::READABLE, RUNNER + k);
                    if let Some((fd, _)) = &i.notify {
                        poller.add(fd, Interest::READABLE, NOTIFY + k);
                    }
                }
                poller.wait(deadline).map_err(|e| RunError {
                    code: exit::SANDBOX,
                    message: format!("waiting for events: {e}"),
                })?;
                poller.ready().map(|(t, _)| t).collect()
            };
            for token in &ready {
                if (NOTIFY..NOTIFY + MAX_INSTANCES).contains(token) {
                    self.read_notify(token - NOTIFY);
                }
            }
            if ready.contains(&SIGNALS) {
                while let Ok(Some(info)) = signals.read() {
                    self.on_signal(info.signal);
                }
            }
            self.reap_instances();
            self.on_deadlines();
        }
    }

    /// The earliest time something must happen without an fd waking us.
    fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = self.restart_at;
        let mut at = |t: Instant| d = Some(d.map_or(t, |d| d.min(t)));
        for i in &self.instances {
            match i.state {
                State::Starting { until } => {
                    at(until);
                    if let Ready::Delay(delay) = self.opts.ready {
                        at(i.started + delay);
                    }
                }
                State::Stopping { kill_at } if !i.killed => at(kill_at),
                _ => {}
            }
            // Killed: its exit wakes us; look again now and then anyway.
            if i.killed {
                at(Instant::now() + Duration::from_millis(100));
            }
        }
        d
    }

    /// Starts an instance; its number, or `None` if it could not even be
    /// started (said in the log; the caller decides what follows).
    fn start_instance(&mut self) -> Option<u64> {
        self.restart_at = None;
        if self.instances.len() >= MAX_INSTANCES {
            log("too many instances at once; not starting another");
            return None;
        }
        self.started += 1;
        let number = self.started;
        let notify = match &self.notify_dir {
            Some(dir) => {
                let path = dir.join(format!("instance-{number}"));
                match notify::bind(&path, None) {
                    Ok(fd) => Some((fd, path)),
                    Err(e) => {
                        // It may be bound already (a later step failed).
                        let _ = std::fs::remove_file(&path);
                        log(&format!(
                            "instance {number}: notify socket {}: {e}",
                            path.display()
                        ));
                        return None;
                    }
                }
            }
            None => None,
        };
        let parent = rustix::process::getpid();
        let runner = match sys::fork() {
            Ok(Forked::Child(token)) => {
                // The instance's privfork run: SIGTERM when privfork serve
                // dies (it passes it on to the server, then ends the
                // server's tree), checked against a death before this.
                let _ = rustix::process::set_parent_process_death_signal(Some(Signal::TERM));
                // Its own name: `killall -HUP privfork` meant for privfork
                // serve must not reach the instance (it would pass SIGHUP
                // on to the server). Its command line stays serve's.
                let _ = rustix::thread::set_name(c"privfork-run");
                // The signals privfork serve sends it are its orders, whatever
                // privfork serve was started with ignored (privfork run
                // leaves an ignored signal alone): the stop signal, SIGTERM
                // (escalation, parent death) and those passed on.
                for sig in [
                    self.opts.stop_signal,
                    Signal::TERM,
                    Signal::QUIT,
                    Signal::USR1,
                    Signal::USR2,
                ] {
                    if sys::unignore_signal(sig.as_raw()).is_err() {
                        sys::exit_immediately(exit::SANDBOX);
                    }
                }
                if rustix::process::getppid() != Some(parent) {
                    sys::exit_immediately(exit::SANDBOX);
                }
                match &notify {
                    Some((_, path)) => {
                        sys::set_env(&token, "NOTIFY_SOCKET".as_ref(), path.as_os_str());
                    }
                    // Never systemd's: the instance is not privfork serve.
                    None => sys::remove_env(&token, "NOTIFY_SOCKET".as_ref()),
                }
                let code = match run::run_with_listeners(&self.opts.run, &self.listeners) {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("privfork: {e}");
                        e.code
                    }
                };
                sys::exit_immediately(code)
            }
            Ok(Forked::Parent(pid)) => Child::after_fork(pid).map_err(|e| e.to_string()),
            Err(e) => Err(format!("fork: {e:?}")),
        };
        let runner = match runner {
            Ok(r) => r,
            Err(e) => {
                log(&format!("instance {number}: {e}"));
                if let Some((_, path)) = &notify {
                    let _ = std::fs::remove_file(path);
                }
                return None;
            }
        };
        log(&format!("instance {number} started (pid {})", runner.pid()));
        let now = Instant::now();
        self.instances.push(Instance {
            number,
            runner,
            notify,
            started: now,
            state: State::Starting {
                until: now + self.opts.ready_timeout,
            },
            killed: false,
            ending: false,
            served: false,
            status: None,
        });
        Some(number)
    }

    /// Starts an instance that is to serve (the first, or after a crash):
    /// one that cannot even be started counts as a failure.
    fn start_serving_instance(&mut self) {
        if self.start_instance().is_none() {
            self.schedule_restart(None);
        }
    }

    fn index_of(&self, number: u64) -> Option<usize> {
        self.instances.iter().position(|i| i.number == number)
    }

    /// The instance serving (not the new one of a reload under way).
    fn serving(&self) -> Option<usize> {
        let new = self.reloading.as_ref().map(|r| r.new);
        self.instances
            .iter()
            .position(|i| matches!(i.state, State::Serving { .. }) && Some(i.number) != new)
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            libc::SIGCHLD => {}
            libc::SIGHUP => self.on_sighup(),
            libc::SIGTERM | libc::SIGINT => self.stop(sig),
            _ => {
                // QUIT, USR1, USR2: for the server (through its privfork
                // run), as if sent to it.
                let Some(sig) = Signal::from_named_raw(sig) else {
                    return;
                };
                for i in &self.instances {
                    if matches!(i.state, State::Serving { .. }) {
                        let _ = i.runner.signal(sig);
                    }
                }
            }
        }
    }

    fn on_sighup(&mut self) {
        if self.stopping > 0 {
            log("SIGHUP while stopping: ignored");
            return;
        }
        match self.fold.request() {
            Request::Folded { running, first } => {
                if first {
                    log(&format!(
                        "SIGHUP during reload {running}: one more reload follows it \
                         (further ones are folded into that)"
                    ));
                }
            }
            Request::Begin(number) => self.begin_reload(number),
        }
    }

    fn begin_reload(&mut self, number: u64) {
        // Nothing serving (starting after a crash, or backing off): the
        // instance starting, or about to, is the new one already.
        if self.serving().is_none() {
            log(&format!(
                "reload {number}: no instance serving; the next one to start is the reload"
            ));
            self.fold.done();
            if self.instances.is_empty() || self.restart_at.is_some() {
                self.start_serving_instance();
            }
            return;
        }
        reload::notify_reloading();
        log(&format!("reload {number}: starting a new instance"));
        match self.start_instance() {
            Some(new) => {
                self.reloading = Some(Reloading {
                    number,
                    began: Instant::now(),
                    new,
                });
            }
            None => {
                let line = format!(
                    "reload {number} failed: the new instance could not be started; \
                     the old one keeps serving"
                );
                log(&line);
                reload::notify_ready(&line);
                self.reload_ended();
            }
        }
    }

    /// The new instance of the reload under way will not serve: it is
    /// killed (if running) and the old one serves on.
    fn reload_failed(&mut self, reason: String) {
        let Some(r) = self.reloading.take() else {
            return;
        };
        if let Some(k) = self.index_of(r.new) {
            self.kill(k);
        }
        let serving = self.serving().map(|k| self.instances[k].number);
        let line = match serving {
            Some(n) => format!(
                "reload {} failed: instance {} {reason}; instance {n} keeps serving",
                r.number, r.new
            ),
            None => format!("reload {} failed: instance {} {reason}", r.number, r.new),
        };
        log(&line);
        reload::notify_ready(&line);
        self.reload_ended();
    }

    /// The reload under way is over (done or failed): the folded one, if
    /// any, begins.
    fn reload_ended(&mut self) {
        if self.fold.done() && self.stopping == 0 {
            let number = self.fold.begin();
            self.begin_reload(number);
        }
    }

    /// Kills instance `k`'s privfork run (SIGKILL). Its server dies of its
    /// parent-death signal; whatever the server started comes back to
    /// privfork serve (a subreaper) and is killed there.
    fn kill(&mut self, k: usize) {
        let i = &mut self.instances[k];
        i.ending = true;
        if !i.killed {
            i.killed = true;
            let _ = i.runner.kill();
        }
    }

    /// Sends instance `k` its stop signal, with `--drain` to go.
    fn ask_to_stop(&mut self, k: usize) {
        let drain = self.opts.drain;
        let sig = self.opts.stop_signal;
        let i = &mut self.instances[k];
        i.ending = true;
        if matches!(i.state, State::Stopping { .. }) {
            return;
        }
        i.state = State::Stopping {
            kill_at: Instant::now() + drain,
        };
        let _ = i.runner.signal(sig);
    }

    fn stop(&mut self, sig: i32) {
        self.stopping += 1;
        if self.stopping > 1 {
            log(&format!(
                "{} again: killing every instance",
                crate::process::signal_name(sig)
            ));
            for k in 0..self.instances.len() {
                self.kill(k);
            }
            self.code.get_or_insert(128 + sig);
            return;
        }
        log(&format!(
            "{}: stopping (each instance gets {}, {} to finish)",
            crate::process::signal_name(sig),
            crate::process::signal_name(self.opts.stop_signal.as_raw()),
            fmt_duration(self.opts.drain)
        ));
        reload::notify_stopping();
        self.fold.forget_folded();
        self.reloading = None;
        self.restart_at = None;
        for k in 0..self.instances.len() {
            self.ask_to_stop(k);
        }
        // Nothing running (backing off after a failure): the last
        // instance's status says how it ended.
        if self.instances.is_empty() {
            let code = self.last_status.map_or(0, ExitStatus::shell_code);
            self.code.get_or_insert(code);
        }
    }

    /// Notify messages on instance `k`'s socket.
    fn read_notify(&mut self, k: usize) {
        let Some(i) = self.instances.get(k) else {
            return;
        };
        let Some((fd, _)) = &i.notify else {
            return;
        };
        let runner = i.runner.pid();
        let number = i.number;
        let mut got = VecDeque::new();
        for _ in 0..64 {
            let mut buf = [0u8; notify::MAX_MESSAGE];
            let Ok(r) = sys::recv_with_creds(fd.as_fd(), &mut buf) else {
                break;
            };
            // 0: a process this pid namespace cannot name.
            let sender = r.sender.map(|s| s.pid).filter(|&p| p != 0);
            // From the instance's privfork run only: the one process that
            // relays its server's messages (after checking they come from
            // the server's processes).
            let ignored = if sender.and_then(|p| u32::try_from(p).ok()) != Some(runner) {
                Some("not from its privfork run".to_owned())
            } else if r.truncated {
                Some(format!("longer than {} bytes", notify::MAX_MESSAGE))
            } else if !r.fds.is_empty() {
                Some("carrying fds".to_owned())
            } else {
                None
            };
            // The socket refuses fds; a kernel before 6.16 cannot. They are
            // closed here: only root can reach the socket, and the closer
            // thread of `notify::close_later` would leave serve unable to
            // fork its next instance (fork wants one thread).
            drop(r.fds);
            if let Some(why) = ignored {
                self.ignored_notify += 1;
                if self.ignored_notify.is_power_of_two() {
                    log(&format!(
                        "instance {number}: ignored a notify message {why} \
                         (sender pid {}; {} so far)",
                        sender.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
                        self.ignored_notify
                    ));
                }
                continue;
            }
            got.push_back(String::from_utf8_lossy(&buf[..r.len]).into_owned());
        }
        // Of the statuses read now, the last, and only if it changed: a
        // server repeating its status floods neither the log nor systemd.
        let mut status_line: Option<String> = None;
        for msg in got {
            for line in msg.lines() {
                match line {
                    "READY=1" => self.on_ready(number),
                    "STOPPING=1" => log(&format!("instance {number}: stopping")),
                    _ => {
                        if let Some(status) = line.strip_prefix("STATUS=") {
                            status_line = Some(status.chars().take(200).collect::<String>());
                        }
                    }
                }
            }
        }
        if let Some(status) = status_line {
            self.on_status(number, status);
        }
    }

    /// Instance `number`'s new status, if it changed: logged, and told
    /// systemd.
    fn on_status(&mut self, number: u64, status: String) {
        let Some(k) = self.index_of(number) else {
            return;
        };
        if self.instances[k].status.as_deref() == Some(status.as_str()) {
            return;
        }
        log(&format!("instance {number}: status: {status}"));
        reload::notify_status(&format!("instance {number}: {status}"));
        self.instances[k].status = Some(status);
    }

    /// Instance `number` is ready.
    fn on_ready(&mut self, number: u64) {
        let Some(k) = self.index_of(number) else {
            return;
        };
        let i = &mut self.instances[k];
        let State::Starting { .. } = i.state else {
            return;
        };
        if self.stopping > 0 || i.ending {
            return;
        }
        let now = Instant::now();
        i.state = State::Serving { since: now };
        i.served = true;
        let took = now.duration_since(i.started);
        match self.reloading.as_ref().filter(|r| r.new == number) {
            Some(r) => {
                let rn = r.number;
                let old = self
                    .instances
                    .iter()
                    .position(|o| o.number != number && matches!(o.state, State::Serving { .. }));
                let old_number = old.map(|o| self.instances[o].number);
                if let Some(o) = old {
                    self.ask_to_stop(o);
                }
                log(&format!(
                    "reload {rn}: instance {number} ready after {}; instance {} draining",
                    fmt_duration(took),
                    old_number.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                ));
                // Done once the old instance is gone (see reap_instances).
                if old.is_none() {
                    self.finish_reload();
                }
            }
            None => {
                log(&format!(
                    "instance {number} ready after {}",
                    fmt_duration(took)
                ));
                if !self.ever_ready {
                    reload::notify_ready(&format!("instance {number} serving"));
                } else {
                    reload::notify_status(&format!("instance {number} serving"));
                }
            }
        }
        self.ever_ready = true;
    }

    /// The reload under way is done: its new instance serves, the old one
    /// is gone.
    fn finish_reload(&mut self) {
        let Some(r) = self.reloading.take() else {
            return;
        };
        let line = format!(
            "reload {} done in {}: instance {} serving",
            r.number,
            fmt_duration(r.began.elapsed()),
            r.new
        );
        log(&line);
        reload::notify_ready(&line);
        self.reload_ended();
    }

    /// Reaps the instances whose privfork run exited; kills and reaps the
    /// orphans privfork serve was handed.
    fn reap_instances(&mut self) {
        let keep: Vec<u32> = self.instances.iter().map(|i| i.runner.pid()).collect();
        crate::sandbox::reap::end_orphans(&keep);
        let mut k = 0;
        while k < self.instances.len() {
            let status = match self.instances[k].runner.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => {
                    k += 1;
                    continue;
                }
                Err(e) => {
                    log(&format!("instance {}: {e}", self.instances[k].number));
                    ExitStatus::Exited(exit::SANDBOX)
                }
            };
            let i = self.instances.remove(k);
            if let Some((_, path)) = &i.notify {
                let _ = std::fs::remove_file(path);
            }
            // What a killed privfork run could not remove itself: its
            // server's notify socket.
            if i.killed {
                crate::sandbox::notify::remove_dirs_of(i.runner.pid());
            }
            self.instance_exited(i, status);
        }
    }

    fn instance_exited(&mut self, i: Instance, status: ExitStatus) {
        let number = i.number;
        let how = describe(status);
        if i.served || self.last_status.is_none() {
            self.last_status = Some(status);
        }
        // The old instance of a reload, drained.
        if let Some(r) = &self.reloading
            && r.new != number
            && i.ending
        {
            log(&format!("instance {number} {how}"));
            let new_serving = self
                .index_of(r.new)
                .is_some_and(|k| matches!(self.instances[k].state, State::Serving { .. }));
            if new_serving {
                self.finish_reload();
            }
            return;
        }
        // The new instance of a reload, before it was ready.
        if self.reloading.as_ref().is_some_and(|r| r.new == number) {
            if i.ending {
                return;
            }
            self.reload_failed(format!("{how} before it was ready"));
            return;
        }
        if self.stopping > 0 {
            log(&format!("instance {number} {how}"));
            if self.instances.is_empty() {
                let code = self.last_status.map_or(0, ExitStatus::shell_code);
                self.code.get_or_insert(code);
            }
            return;
        }
        if i.ending {
            log(&format!("instance {number} {how}"));
            return;
        }
        // By itself: a crash, or the server's own end.
        log(&format!("instance {number} {how}"));
        // The first instance failing in privfork run's own way (bad user,
        // promise, unveil, program...): nothing a restart would change.
        let own_failure = status
            .code()
            .is_some_and(|c| (exit::LISTEN..=exit::NOT_FOUND).contains(&c));
        if !self.ever_ready && own_failure && self.started == 1 {
            log(&format!(
                "the first instance could not start (privfork run's exit {}): stopping",
                status.code().unwrap_or(0)
            ));
            self.code = Some(status.code().unwrap_or(exit::SANDBOX));
            self.stop_all_now();
            return;
        }
        let restart = match self.opts.restart {
            Restart::Always => true,
            Restart::OnFailure => !status.success(),
            Restart::Never => false,
        };
        let others = self.instances.iter().any(|o| {
            !o.ending && matches!(o.state, State::Serving { .. } | State::Starting { .. })
        });
        if others {
            return;
        }
        if !restart {
            log(&format!(
                "not starting it again (--restart {}): stopping",
                match self.opts.restart {
                    Restart::Always => "always",
                    Restart::OnFailure => "on-failure",
                    Restart::Never => "never",
                }
            ));
            self.code = Some(status.shell_code());
            self.stop_all_now();
            return;
        }
        let served = match i.state {
            State::Serving { since } => Some(since.elapsed()),
            _ => None,
        };
        self.schedule_restart(served);
    }

    /// Every instance killed now; privfork serve exits once they are gone.
    fn stop_all_now(&mut self) {
        self.stopping = self.stopping.max(1);
        self.fold.forget_folded();
        self.reloading = None;
        self.restart_at = None;
        for k in 0..self.instances.len() {
            self.kill(k);
        }
    }

    /// The next instance starts after the backoff; `served`: how long the
    /// one that exited had served (long enough resets the backoff).
    fn schedule_restart(&mut self, served: Option<Duration>) {
        if self.stopping > 0 {
            return;
        }
        if served.is_some_and(|d| d >= BACKOFF_RESET) {
            self.failures = 0;
        }
        let wait = BACKOFF_FIRST
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        log(&format!(
            "starting a new instance in {} (failure {} in a row); the sockets stay open",
            fmt_duration(wait),
            self.failures
        ));
        reload::notify_status(&format!(
            "no instance serving; starting one in {}",
            fmt_duration(wait)
        ));
        self.restart_at = Some(Instant::now() + wait);
    }

    fn on_deadlines(&mut self) {
        let now = Instant::now();
        if self.restart_at.is_some_and(|t| t <= now) && self.stopping == 0 {
            self.start_serving_instance();
        }
        let mut k = 0;
        while k < self.instances.len() {
            let i = &self.instances[k];
            match i.state {
                State::Starting { until } if !i.ending && !i.killed => {
                    if let Ready::Delay(delay) = self.opts.ready
                        && now >= i.started + delay
                    {
                        let number = i.number;
                        self.on_ready(number);
                    } else if now >= until {
                        let number = i.number;
                        let wait = fmt_duration(self.opts.ready_timeout);
                        log(&format!(
                            "instance {number} not ready within {wait}: killed"
                        ));
                        if self.reloading.as_ref().is_some_and(|r| r.new == number) {
                            self.reload_failed(format!("was not ready within {wait}"));
                        } else {
                            self.kill(k);
                            self.instances[k].ending = false;
                        }
                    }
                }
                State::Stopping { kill_at } if now >= kill_at && !i.killed => {
                    log(&format!(
                        "instance {} still running {} after its stop signal: killed",
                        i.number,
                        fmt_duration(self.opts.drain)
                    ));
                    self.kill(k);
                }
                _ => {}
            }
            k += 1;
        }
    }
}

/// "exited with status N" / "was killed by SIGX".
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (_, Some(s)) => format!("was killed by {}", crate::process::signal_name(s)),
        _ => "ended".to_owned(),
    }
}

/// 1.5s, 250ms, 2m30s.
fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let tenths = ms / 100;
        if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_writes_them() {
        assert_eq!(fmt_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_secs(30)), "30s");
        assert_eq!(fmt_duration(Duration::from_secs(150)), "2m30s");
    }
}
