//! The fork server: fork-as for multithreaded programs.
//!
//! A multithreaded process must not fork (another thread may hold a lock
//! that stays locked forever in the child), and forking a process with a
//! large heap is slow (the kernel copies its page tables). The fork server
//! solves both: a small single-threaded process, forked from the program
//! *before it starts any thread*, that forks a fork-as child per request.
//!
//! ```no_run
//! use privfork::fork_server::ForkServer;
//!
//! fn word_count(text: String) -> usize {
//!     text.split_whitespace().count()
//! }
//!
//! // In main, before any thread exists:
//! let server = ForkServer::builder()
//!     .register("word_count", word_count)
//!     .allow("word_count", "nobody")?
//!     .spawn()?;
//! // Later, from any thread (ForkServer is Sync):
//! let n: usize = server.call("word_count", "nobody", &"a b c".to_string())?;
//! assert_eq!(n, 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What the server will run
//!
//! Functions are registered by name when the server is built; a request
//! names one, never a code address. The server runs only the (function,
//! user) pairs it was told to [`allow`](ForkServerBuilder::allow), with users
//! resolved at build time: a compromised caller can neither ask for root nor
//! for a user outside that list, and a refused request forks nothing. The
//! caller's deadline and result limit are capped by the server's own.
//! Everything else of fork-as carries over: the child drops privileges
//! (verified), dies with the server, sees no fd but stdio and its pipe, and
//! its failures come back as [`ForkAsError`]s.
//!
//! The server dies with the process that spawned it (parent-death signal),
//! exits when its channel closes (dropping the [`ForkServer`]), and kills
//! and reaps its children on the way out.

pub mod protocol;
mod server;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::thread::CapabilitySet;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fork_as::{DEFAULT_MAX_RESULT, DEFAULT_TIMEOUT, ForkAsError, Functions};
use crate::identity::{Identity, ResolveError};
use crate::ipc::{Bytes, CallError, Channel, Client, Limits};
use crate::privdrop::DropOptions;
use crate::process::Child;
use crate::sandbox::{PreparedSandbox, Sandbox, SandboxError};
use crate::sys::{self, ForkError, Forked};
use protocol::{CallFailure, CallRequest, Reply, Request, ServerStats};

/// Default cap on the size of a call's encoded arguments.
pub const DEFAULT_MAX_ARGS: usize = 1 << 20;
/// How long past a call's deadline a caller waits for the server's answer
/// before deciding that the server has stopped answering.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// Default cap on the number of children running at once.
pub const DEFAULT_MAX_CHILDREN: u32 = 64;

/// Error of building, spawning or calling a fork server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForkServerError {
    /// `allow` named a function that was not registered.
    #[error("fork server: no function named {name:?} is registered")]
    UnknownFunction {
        /// The name.
        name: String,
    },
    /// `allow` named a user that could not be resolved.
    #[error("fork server: cannot allow {function:?} as {user:?}")]
    Resolve {
        /// The function.
        function: String,
        /// The user as given.
        user: String,
        /// Why it failed.
        #[source]
        source: ResolveError,
    },
    /// The process that tried to start the server has several threads.
    #[error(
        "fork server: cannot start from a process with {threads} threads; spawn it early \
         in main, before any thread (or async runtime) starts"
    )]
    MultiThreaded {
        /// The number of threads seen.
        threads: usize,
    },
    /// Starting the server failed.
    #[error("fork server: {what} failed")]
    Spawn {
        /// The call that failed.
        what: &'static str,
        /// Its error.
        #[source]
        source: io::Error,
    },
    /// The server refused the (function, user) pair; nothing was forked.
    #[error("fork server refused the call: {reason}")]
    Refused {
        /// What was not allowed.
        reason: String,
    },
    /// `allow_sandboxed` was given a sandbox that cannot be prepared.
    #[error("fork server: cannot sandbox {function:?}")]
    Sandbox {
        /// The function.
        function: String,
        /// Why.
        #[source]
        source: SandboxError,
    },
    /// The server runs its maximum number of children already.
    #[error("fork server busy: {max_children} children already running")]
    Busy {
        /// The server's limit.
        max_children: u32,
    },
    /// The arguments could not be encoded, or are over the server's limit.
    #[error("fork server: the arguments cannot be sent: {reason}")]
    Arguments {
        /// Why.
        reason: String,
    },
    /// The child could not decode the arguments as the function's type.
    #[error("fork server: the function could not decode its arguments: {message}")]
    BadArguments {
        /// postcard's message.
        message: String,
    },
    /// The call ran and failed as a fork-as call fails.
    #[error(transparent)]
    ForkAs(#[from] ForkAsError),
    /// The result could not be decoded as the expected type.
    #[error("fork server: the result could not be decoded")]
    Decode(#[source] postcard::Error),
    /// The channel to the server failed (the server is gone, or sent
    /// something invalid and the channel was closed).
    #[error("fork server: channel failed")]
    Channel(#[from] CallError),
    /// The server did not answer in time (it is stopped, stuck, or gone
    /// without closing its channel).
    #[error("fork server: no answer within {waited:?}")]
    NoAnswer {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The server answered with the wrong kind of reply.
    #[error("fork server: unexpected reply {0}")]
    UnexpectedReply(&'static str),
}

/// A registered function's name with its argument and result types, so
/// that registering a function of other types, or calling it with the
/// wrong argument or expecting the wrong result, does not compile:
///
/// ```no_run
/// use privfork::fork_server::{ForkServer, Function};
///
/// const WORD_COUNT: Function<String, usize> = Function::new("word_count");
/// fn word_count(text: String) -> usize { text.split_whitespace().count() }
///
/// let server = ForkServer::builder()
///     .register_fn(WORD_COUNT, word_count)
///     .allow(WORD_COUNT.name(), "nobody")?
///     .spawn()?;
/// let n = server.invoke(WORD_COUNT, "nobody", &"a b".to_string())?;
/// assert_eq!(n, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Function<A, R> {
    name: &'static str,
    types: std::marker::PhantomData<fn(A) -> R>,
}

impl<A, R> Function<A, R> {
    /// The function registered as `name`.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            types: std::marker::PhantomData,
        }
    }

    /// Its name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<A, R> Clone for Function<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for Function<A, R> {}

impl<A, R> fmt::Debug for Function<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Function({:?})", self.name)
    }
}

/// One allowed (function, user) pair: who the child runs as, and the
/// sandbox it installs, if any.
#[derive(Debug, Clone)]
pub(crate) struct Allowed {
    pub(crate) identity: Identity,
    pub(crate) sandbox: Option<Arc<PreparedSandbox>>,
}

/// Builds a fork server: the functions it may run, for whom, and its limits.
pub struct ForkServerBuilder {
    functions: Functions,
    allowed: BTreeMap<(String, String), Allowed>,
    drop: DropOptions,
    max_timeout: Duration,
    max_result: usize,
    max_args: usize,
    max_children: u32,
    max_memory: Option<u64>,
}

impl fmt::Debug for ForkServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForkServerBuilder")
            .field("functions", &self.functions)
            .field("allowed", &self.allowed)
            .field("max_timeout", &self.max_timeout)
            .field("max_result", &self.max_result)
            .field("max_args", &self.max_args)
            .field("max_children", &self.max_children)
            .field("max_memory", &self.max_memory)
            .finish()
    }
}

impl Default for ForkServerBuilder {
    fn default() -> Self {
        Self {
            functions: Functions::new(),
            allowed: BTreeMap::new(),
            drop: DropOptions::default(),
            max_timeout: DEFAULT_TIMEOUT,
            max_result: DEFAULT_MAX_RESULT,
            max_args: DEFAULT_MAX_ARGS,
            max_children: DEFAULT_MAX_CHILDREN,
            max_memory: None,
        }
    }
}

impl ForkServerBuilder {
    /// Registers `f` under `name`. Its argument arrives postcard-encoded
    /// from the caller and is decoded in the child; its result goes back
    /// encoded.
    ///
    /// # Panics
    ///
    /// If `name` is already registered (a programming error).
    pub fn register<A, R, F>(mut self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(A) -> R + 'static,
    {
        self.functions = std::mem::take(&mut self.functions).register(name, f);
        self
    }

    /// Registers every function of `functions` (e.g. the registry the
    /// program also hands to [`crate::fork_as::exec_entry`]). A function
    /// registered with a sandbox runs under it for every
    /// [`allow`](Self::allow) that gives none of its own.
    ///
    /// # Panics
    ///
    /// If a name is already registered (a programming error).
    pub fn functions(mut self, functions: Functions) -> Self {
        self.functions.extend(functions);
        self
    }

    /// Registers `f` under `function`'s name, with `function`'s types.
    ///
    /// # Panics
    ///
    /// As [`ForkServerBuilder::register`].
    pub fn register_fn<A, R, F>(self, function: Function<A, R>, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(A) -> R + 'static,
    {
        self.register(function.name, f)
    }

    /// Allows callers to run `function` as `user` (a name or numeric uid,
    /// resolved now). Requests must then name the user exactly as given
    /// here.
    ///
    /// # Errors
    ///
    /// [`ForkServerError::UnknownFunction`] if `function` is not registered
    /// (register first), [`ForkServerError::Resolve`] if `user` is unknown,
    /// [`ForkServerError::Sandbox`] if the function was registered with a
    /// sandbox ([`Functions::register_sandboxed`]) that cannot be prepared.
    pub fn allow(self, function: &str, user: &str) -> Result<Self, ForkServerError> {
        let identity = Identity::user(user).map_err(|source| ForkServerError::Resolve {
            function: function.to_owned(),
            user: user.to_owned(),
            source,
        })?;
        self.allow_identity(function, user, identity)
    }

    /// Allows `function` as `identity`, which requests name as `user`.
    ///
    /// # Errors
    ///
    /// [`ForkServerError::UnknownFunction`].
    pub fn allow_identity(
        self,
        function: &str,
        user: &str,
        identity: Identity,
    ) -> Result<Self, ForkServerError> {
        self.allow_entry(function, user, identity, None)
    }

    /// Allows callers to run `function` as `user` under `sandbox`: each
    /// call's child installs it after its privilege drop. The sandbox is
    /// prepared now, in the calling process (paths opened, Landlock ruleset
    /// created, seccomp filters compiled, see
    /// [`Sandbox::prepare`](crate::sandbox::Sandbox::prepare)); the server
    /// only hands it to each child.
    ///
    /// # Errors
    ///
    /// [`ForkServerError::UnknownFunction`], [`ForkServerError::Resolve`],
    /// or [`ForkServerError::Sandbox`] naming the bad promise or path.
    pub fn allow_sandboxed(
        self,
        function: &str,
        user: &str,
        sandbox: &Sandbox,
    ) -> Result<Self, ForkServerError> {
        let identity = Identity::user(user).map_err(|source| ForkServerError::Resolve {
            function: function.to_owned(),
            user: user.to_owned(),
            source,
        })?;
        let prepared = sandbox
            .prepare()
            .map_err(|source| ForkServerError::Sandbox {
                function: function.to_owned(),
                source,
            })?;
        self.allow_entry(function, user, identity, Some(Arc::new(prepared)))
    }

    fn allow_entry(
        mut self,
        function: &str,
        user: &str,
        identity: Identity,
        sandbox: Option<Arc<PreparedSandbox>>,
    ) -> Result<Self, ForkServerError> {
        let Some(entry) = self.functions.get(function) else {
            return Err(ForkServerError::UnknownFunction {
                name: function.to_owned(),
            });
        };
        // The function's own sandbox, unless this pair gives one.
        let sandbox = match (sandbox, &entry.sandbox) {
            (Some(s), _) => Some(s),
            (None, Some(own)) => Some(Arc::new(own.prepare().map_err(|source| {
                ForkServerError::Sandbox {
                    function: function.to_owned(),
                    source,
                }
            })?)),
            (None, None) => None,
        };
        self.allowed.insert(
            (function.to_owned(), user.to_owned()),
            Allowed { identity, sandbox },
        );
        Ok(self)
    }

    /// Privilege-drop options for the children (e.g. to allow uid 0).
    pub fn drop_options(mut self, opts: DropOptions) -> Self {
        self.drop = opts;
        self
    }

    /// Caps the deadline a caller may ask for (default 30 s).
    pub fn max_timeout(mut self, d: Duration) -> Self {
        self.max_timeout = d;
        self
    }

    /// Caps the result size a caller may ask for (default 16 MiB).
    pub fn max_result(mut self, bytes: usize) -> Self {
        self.max_result = bytes;
        self
    }

    /// Caps the encoded arguments of a call (default 1 MiB).
    pub fn max_args(mut self, bytes: usize) -> Self {
        self.max_args = bytes;
        self
    }

    /// Caps the children running at once (default 64); more calls are
    /// answered [`ForkServerError::Busy`].
    pub fn max_children(mut self, n: u32) -> Self {
        self.max_children = n.max(1);
        self
    }

    /// Caps each child's address space (`RLIMIT_AS`; see
    /// [`ForkAs::max_memory`](crate::ForkAs::max_memory)): a function that allocates without bound
    /// dies alone (SIGABRT) instead of taking the machine's memory.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    fn limits(&self) -> Limits {
        // Room for the largest result or argument, names, and a panic
        // message or other report (up to 64 KiB) with some framing.
        let biggest = self.max_result.max(self.max_args).max(64 << 10);
        Limits {
            max_payload: u32::try_from(biggest.saturating_add(4096)).unwrap_or(u32::MAX),
            max_fds: 0,
        }
    }

    /// Starts the server process. Call it before the program starts any
    /// thread (an async runtime included).
    ///
    /// # Errors
    ///
    /// [`ForkServerError::MultiThreaded`] from a multithreaded process;
    /// [`ForkServerError::Spawn`] if the socketpair, fork or pidfd fails.
    pub fn spawn(self) -> Result<ForkServer, ForkServerError> {
        let (timeout, max_result, max_args) = (self.max_timeout, self.max_result, self.max_args);
        let (channel, process) = self.spawn_raw()?;
        Ok(ForkServer {
            client: Some(Client::new(channel)),
            process: Some(process),
            timeout,
            max_result,
            max_args,
        })
    }

    /// Starts the server and returns the caller's raw end of its channel,
    /// without a [`ForkServer`] around it: for tests that play a hostile
    /// caller. Not part of the stable API.
    ///
    /// # Errors
    ///
    /// As [`ForkServerBuilder::spawn`].
    #[doc(hidden)]
    pub fn spawn_raw(self) -> Result<(Channel<Request, Reply>, ServerProcess), ForkServerError> {
        let limits = self.limits();
        let spawn_err = |what| {
            move |e: crate::ipc::OpenError| ForkServerError::Spawn {
                what,
                source: io::Error::other(e.to_string()),
            }
        };
        let (client_end, server_end) =
            Channel::<Request, Reply>::pair(limits).map_err(spawn_err("socketpair"))?;
        let parent = rustix::process::getpid();
        let devnull = crate::fork_as::dev_null().map_err(|source| ForkServerError::Spawn {
            what: "open(/dev/null)",
            source,
        })?;
        // Until the pidfd is open, no SIGCHLD handler of the program may reap
        // the server (its pid could then be reused).
        let saved = sys::block_sigchld().map_err(|source| ForkServerError::Spawn {
            what: "pthread_sigmask",
            source,
        })?;
        // Every signal blocked across the fork (see fork-as): the server
        // resets the program's handlers before it unblocks them.
        let all_blocked = sys::block_all_signals().map_err(|source| ForkServerError::Spawn {
            what: "pthread_sigmask",
            source,
        })?;
        let forked = sys::fork();
        if !matches!(forked, Ok(Forked::Child(_))) {
            drop(all_blocked);
        }
        let pid = match forked {
            Ok(Forked::Parent(pid)) => pid,
            Ok(Forked::Child(token)) => {
                drop(client_end);
                // Nothing may unwind out of here into the program's code.
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    server::main(&token, parent, server_end, devnull, self)
                }))
                .unwrap_or(101);
                sys::exit_immediately(code)
            }
            Err(e) => {
                drop(saved);
                return Err(match e {
                    ForkError::MultiThreaded(threads) => ForkServerError::MultiThreaded { threads },
                    ForkError::CountThreads(source) => ForkServerError::Spawn {
                        what: "counting threads in /proc/self/task",
                        source,
                    },
                    ForkError::Fork(source) => ForkServerError::Spawn {
                        what: "fork",
                        source,
                    },
                });
            }
        };
        drop(server_end);
        // On failure the server is killed and reaped (by pid: still ours).
        let child = Child::after_fork(pid);
        drop(saved);
        let child = child.map_err(|e| ForkServerError::Spawn {
            what: e.what(),
            source: e.into(),
        })?;
        Ok((client_end, ServerProcess { child }))
    }
}

impl ForkServerBuilder {
    /// The capabilities a fork server keeps (a family role that is the fork
    /// server has `user: None` and these `keep_caps`): SETUID and SETGID
    /// to drop its children, KILL to signal them once they run as other
    /// users (their deadline, and their parent-death signal, which the
    /// kernel sends with the dying parent's permissions).
    pub const CAPS: CapabilitySet = CapabilitySet::SETUID
        .union(CapabilitySet::SETGID)
        .union(CapabilitySet::KILL);

    /// Serves on `channel` in the calling process until the channel closes,
    /// and returns the exit code: the fork server as a role of the process
    /// family, whose member is already set up (its own user, [`Self::CAPS`]
    /// and nothing more, its sandbox). Its callers reach it with
    /// [`ForkServer::connect`] on the other end.
    ///
    /// The process must have one thread.
    pub fn serve(self, channel: OwnedFd) -> i32 {
        match Channel::<Reply, Request>::from_fd(channel, self.limits()) {
            Ok(channel) => server::serve(channel, self),
            Err(_) => server::EXIT_SETUP,
        }
    }
}

/// The fork server's process, reaped when dropped (after its channel is
/// closed, it exits by itself; it is killed if it has not within 5 s).
#[derive(Debug)]
#[doc(hidden)]
pub struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        if !matches!(self.child.wait_deadline(deadline), Ok(Some(_))) {
            // Still running (or the wait failed): kill it and reap it.
            let _ = self.child.kill_and_wait();
        }
    }
}

/// A running fork server. `Sync`: share it between threads (by reference or
/// in an `Arc`); calls from many threads overlap on its one channel.
///
/// Dropping it closes the channel; the server then kills and reaps its
/// children and exits, and the drop reaps the server.
#[derive(Debug)]
pub struct ForkServer {
    client: Option<Client<Request, Reply>>,
    /// The server process, when this handle spawned it.
    process: Option<ServerProcess>,
    timeout: Duration,
    max_result: usize,
    max_args: usize,
}

impl ForkServer {
    /// A builder with no function and the default limits.
    pub fn builder() -> ForkServerBuilder {
        ForkServerBuilder::default()
    }

    /// A handle on a fork server that serves on the other end of
    /// `channel` ([`ForkServerBuilder::serve`], e.g. a member of the
    /// process family), with the default limits.
    ///
    /// # Errors
    ///
    /// [`ForkServerError::Spawn`] if `channel` is not a usable socket.
    pub fn connect(channel: OwnedFd) -> Result<Self, ForkServerError> {
        let limits = ForkServerBuilder::default().limits();
        let channel = Channel::<Request, Reply>::from_fd(channel, limits).map_err(|e| {
            ForkServerError::Spawn {
                what: "adopting the channel",
                source: io::Error::other(e.to_string()),
            }
        })?;
        Ok(Self {
            client: Some(Client::new(channel)),
            process: None,
            timeout: DEFAULT_TIMEOUT,
            max_result: DEFAULT_MAX_RESULT,
            max_args: DEFAULT_MAX_ARGS,
        })
    }

    /// The server's pid, for a handle that spawned it; 0 for a handle from
    /// [`ForkServer::connect`]: the server's pid is not known then
    /// (`SO_PEERCRED` of a socketpair names the process that created the
    /// pair — in the family, main — not the server serving on it).
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, ServerProcess::pid)
    }

    /// Runs the function `f` names as `user` with `args`: a call whose
    /// argument and result types are checked at compile time (see
    /// [`Function`]).
    ///
    /// # Errors
    ///
    /// As [`ForkServer::call`].
    pub fn invoke<A, R>(
        &self,
        f: Function<A, R>,
        user: &str,
        args: &A,
    ) -> Result<R, ForkServerError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.call(f.name, user, args)
    }

    /// Runs `function` as `user` with `args`, with the server's deadline
    /// and result limit.
    ///
    /// # Errors
    ///
    /// See [`ForkServerError`]: refusal, busy, argument problems, every
    /// [`ForkAsError`] of the call itself, decoding, or a failed channel.
    pub fn call<A, R>(&self, function: &str, user: &str, args: &A) -> Result<R, ForkServerError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.call_with(function, user, args, self.timeout, self.max_result)
    }

    /// As [`ForkServer::call`], with a deadline and result limit of its own
    /// (the server caps both at its maximums).
    ///
    /// # Errors
    ///
    /// As [`ForkServer::call`].
    pub fn call_with<A, R>(
        &self,
        function: &str,
        user: &str,
        args: &A,
        timeout: Duration,
        max_result: usize,
    ) -> Result<R, ForkServerError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let args = postcard::to_allocvec(args).map_err(|e| ForkServerError::Arguments {
            reason: e.to_string(),
        })?;
        if args.len() > self.max_args {
            return Err(ForkServerError::Arguments {
                reason: format!(
                    "{} bytes encoded, over the server's limit of {}",
                    args.len(),
                    self.max_args
                ),
            });
        }
        let req = Request::Call(CallRequest {
            function: function.to_owned(),
            user: user.to_owned(),
            args: Bytes(args),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            max_result: max_result as u64,
        });
        // The server answers by its own deadline; this one only guards
        // against a server that stopped answering altogether.
        let wait = timeout.min(self.timeout).saturating_add(ANSWER_MARGIN);
        let reply = match self.client().call_timeout(&req, Vec::new(), wait) {
            Err(CallError::TimedOut) => return Err(ForkServerError::NoAnswer { waited: wait }),
            other => other?,
        };
        match reply.msg {
            Reply::Outcome(Ok(bytes)) => {
                postcard::from_bytes(&bytes.0).map_err(ForkServerError::Decode)
            }
            Reply::Outcome(Err(failure)) => Err(match failure {
                CallFailure::Refused { reason } => ForkServerError::Refused { reason },
                CallFailure::Busy { max_children } => ForkServerError::Busy { max_children },
                CallFailure::BadArguments(message) => ForkServerError::BadArguments { message },
                CallFailure::ForkAs(e) => ForkServerError::ForkAs(e.into()),
            }),
            Reply::Stats(_) => Err(ForkServerError::UnexpectedReply("Stats")),
        }
    }

    /// The server's counters.
    ///
    /// # Errors
    ///
    /// A failed channel, or a wrong reply.
    pub fn stats(&self) -> Result<ServerStats, ForkServerError> {
        let reply = match self
            .client()
            .call_timeout(&Request::Stats, Vec::new(), ANSWER_MARGIN)
        {
            Err(CallError::TimedOut) => {
                return Err(ForkServerError::NoAnswer {
                    waited: ANSWER_MARGIN,
                });
            }
            other => other?,
        };
        match reply.msg {
            Reply::Stats(s) => Ok(s),
            Reply::Outcome(_) => Err(ForkServerError::UnexpectedReply("Outcome")),
        }
    }

    fn client(&self) -> &Client<Request, Reply> {
        self.client.as_ref().expect("the client lives until drop")
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        // Closing the channel tells the server to stop; dropping the
        // process then waits for it (and kills it after 5 s).
        drop(self.client.take());
    }
}
