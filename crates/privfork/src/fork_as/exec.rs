//! Fork-as in exec mode: the child is a fresh image of the pinned binary,
//! not a copy of the caller, so it holds none of the caller's memory.
//!
//! # The two halves
//!
//! The caller ([`ForkAs::run_exec`]) resolves the user (in the caller,
//! as for [`ForkAs::run`]), encodes the arguments and spawns the pinned
//! binary with [`crate::exe::Spawn`]: [`EXEC_ROLE`] in argv, an empty
//! environment, a unix socket at fd [`CHANNEL_FD`], stdin/stdout/stderr on
//! `/dev/null` (unless [`Stdio::Inherit`]) and no other fd. Over the socket
//! it sends one request — the function's name, its encoded argument, the
//! caller's pid, the numeric uid, gid and groups to drop to, the drop and
//! `no_new_privs` options, the environment to set, the result limit and
//! the address-space cap —
//! and reads back the same result frame as a forked child's, under the same
//! deadline (watching the child's pidfd), so every [`ForkAsError`] means
//! what it means for [`ForkAs::run`].
//!
//! The child ([`exec_entry`], the first line of the program's `main`)
//! refuses to start in a secure-execution image (setuid, setgid, file
//! capabilities), checks that it has one thread, adopts the socket with
//! [`take_inherited_fd`], reads the request, looks the function up by name
//! in the [`Functions`] it was given, prepares that function's sandbox if
//! it has one, runs the one child-setup routine ([`crate::setup`]: the
//! same stages as a forked fork-as child, from the signal mask to seccomp,
//! with the drop to the ids of the request and the parent-death signal
//! checked against the caller's pid), and only then decodes the argument
//! and runs the function.
//!
//! Why the child may trust its request, and how a sandbox crosses the
//! exec: see the parent module's docs, "Exec mode".

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use rustix::io::Errno;
use rustix::process::Pid;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::functions::{ChildOutcome, Functions};
use super::{
    ChildFds, EXIT_SETUP_FAILED, ForkAs, ForkAsError, Pending, child_body, decode_exact, dev_null,
    spawn_err, tag, write_frame,
};
use crate::event::{Interest, Poller};
use crate::exe::{Exe, Spawn};
use crate::identity::Identity;
use crate::inherit::{FdKind, take_inherited_fd};
use crate::privdrop::DropOptions;
use crate::setup::{Environment, SetupStep, Stdio};
use crate::sys;

/// The role an exec-mode child is started in (`argv[2]`, after
/// [`crate::exe::ROLE_FLAG`]).
pub const EXEC_ROLE: &str = "privfork-fork-as-exec";

/// The fd number of the exec-mode child's socket to its caller.
pub const CHANNEL_FD: RawFd = 3;

/// Limit on an encoded request (the argument, names, environment).
pub const MAX_REQUEST: usize = 64 << 20;

/// First bytes of every request: "PFX" and a format version.
const MAGIC: [u8; 4] = *b"PFX1";

/// The request, caller to child. The ids are numeric: resolved by the
/// caller, never looked up in the child.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    function: String,
    args: Vec<u8>,
    /// The caller's pid, for the parent-death check.
    parent: i32,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    allow_root: bool,
    no_new_privs: bool,
    /// `None`: empty; else exactly these variables.
    env: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    stdio_null: bool,
    max_result: u64,
    /// `RLIMIT_AS` to set (only ever lowered: a forged value gains nothing).
    max_memory: Option<u64>,
}

/// Why an exec-mode child refused a request before running anything (the
/// payload of a [`tag::REFUSED`] frame).
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Refusal {
    /// No function of that name is registered.
    UnknownFunction(String),
    /// The request is malformed, or names an invalid identity.
    BadRequest(String),
    /// The function's sandbox could not be prepared.
    Sandbox(String),
}

impl From<Refusal> for ForkAsError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::UnknownFunction(name) => ForkAsError::UnknownFunction { name },
            Refusal::BadRequest(reason) => ForkAsError::ExecMode {
                reason: format!("the child refused the request: {reason}"),
            },
            Refusal::Sandbox(reason) => ForkAsError::ExecMode {
                reason: format!("the child could not prepare the function's sandbox: {reason}"),
            },
        }
    }
}

impl ForkAs {
    /// Runs the function registered as `function` with `args`, as the
    /// configured user, in a fresh image of the pinned binary `exe` (see
    /// [`exec_entry`]) rather than in a forked copy of this process: the
    /// child holds none of this process's memory. May be called from a
    /// multithreaded process.
    ///
    /// `exe` must run [`exec_entry`] first thing in its `main`, with the
    /// function registered; usually it is [`Exe::current`].
    ///
    /// The child's parent-death signal follows the calling thread (see
    /// prctl(2), `PR_SET_PDEATHSIG`); this call blocks that thread until the
    /// child is reaped, so it cannot end first. A multithreaded caller's
    /// SIGCHLD is blocked on this thread only: a SIGCHLD handler on another
    /// thread that reaps any child makes the call fail (reaped elsewhere),
    /// never wait on a stranger (the child is watched through its pidfd).
    ///
    /// # Errors
    ///
    /// Every [`ForkAsError`] of [`ForkAs::run`] (but `MultiThreaded`), and
    /// [`ForkAsError::UnknownFunction`], [`ForkAsError::BadArguments`],
    /// [`ForkAsError::Exec`] (the binary could not be started),
    /// [`ForkAsError::ExecMode`] (a sandbox set with [`ForkAs::sandbox`],
    /// arguments that cannot be encoded, or a request the child refused).
    /// The child has always been reaped when this returns.
    pub fn run_exec<A, R>(&self, exe: &Exe, function: &str, args: &A) -> Result<R, ForkAsError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let mode = |reason: String| ForkAsError::ExecMode { reason };
        if self.sandbox.is_some() {
            return Err(mode(
                "ForkAs::sandbox does not cross exec; register the function with \
                 Functions::register_sandboxed, whose sandbox the child prepares from its own \
                 image"
                    .to_owned(),
            ));
        }
        let args = postcard::to_allocvec(args)
            .map_err(|e| mode(format!("the arguments cannot be encoded: {e}")))?;
        let request = self.request(function, args);
        let mut frame = MAGIC.to_vec();
        frame.extend_from_slice(&[0; 8]);
        let frame = postcard::to_extend(&request, frame)
            .map_err(|e| mode(format!("the request cannot be encoded: {e}")))?;
        let len = frame.len() - 12;
        if len > MAX_REQUEST {
            return Err(mode(format!(
                "the request is {len} bytes, over the limit of {MAX_REQUEST}"
            )));
        }
        let mut frame = frame;
        frame[4..12].copy_from_slice(&(len as u64).to_le_bytes());

        // As for run: no SIGCHLD handler of this thread reaps the child
        // before the handle has it (the pidfd names it in any case).
        let _mask = sys::block_sigchld().map_err(|source| ForkAsError::Spawn {
            what: "pthread_sigmask",
            source,
        })?;
        super::refuse_autoreap()?;
        let deadline = super::deadline_after(self.timeout);
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| spawn_err("socketpair", e))?;
        rustix::io::ioctl_fionbio(&ours, true).map_err(|e| spawn_err("ioctl(FIONBIO)", e))?;
        let devnull = dev_null().map_err(|source| ForkAsError::Spawn {
            what: "open(/dev/null)",
            source,
        })?;
        let spawned = {
            let mut spawn = Spawn::new(exe);
            spawn
                .role(EXEC_ROLE)
                .env_clear()
                .fd(CHANNEL_FD, theirs.as_fd());
            if self.stdio == Stdio::Null {
                for n in 0..=2 {
                    spawn.fd(n, devnull);
                }
            }
            spawn.spawn()?
        };
        drop(theirs);
        let child = crate::process::Child::from_pidfd(spawned.pidfd).map_err(super::process_err)?;
        let pending = Pending::new(child, ours, deadline, self.timeout, self.max_result);
        send_request(&pending, &frame, deadline)?;
        match pending.wait::<ChildOutcome>()? {
            ChildOutcome::Ok(bytes) => decode_exact(&bytes.0),
            ChildOutcome::BadArguments(message) => Err(ForkAsError::BadArguments { message }),
            ChildOutcome::EncodeFailed(message) => Err(ForkAsError::Encode { message }),
        }
    }

    fn request(&self, function: &str, args: Vec<u8>) -> Request {
        use std::os::unix::ffi::OsStrExt;
        let pairs = |vars: &mut dyn Iterator<Item = (&std::ffi::OsStr, &std::ffi::OsStr)>| {
            vars.map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect::<Vec<_>>()
        };
        let env = match &self.env {
            Environment::Clear => None,
            Environment::Inherit => {
                let vars: Vec<_> = std::env::vars_os().collect();
                Some(pairs(
                    &mut vars.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())),
                ))
            }
            Environment::Set(vars) => Some(pairs(
                &mut vars.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())),
            )),
        };
        Request {
            function: function.to_owned(),
            args,
            parent: rustix::process::getpid().as_raw_nonzero().get(),
            uid: self.identity.uid(),
            gid: self.identity.gid(),
            groups: self.identity.groups(),
            allow_root: self.drop.allow_root,
            no_new_privs: self.no_new_privs,
            env,
            stdio_null: self.stdio == Stdio::Null,
            max_result: self.max_result as u64,
            max_memory: self.max_memory,
        }
    }
}

/// Sends the request frame to the child without blocking past the
/// deadline. A child that stops reading (it refused the request, died, or
/// hangs) ends the sending: the result frame, its status or the deadline
/// then says why.
fn send_request(pending: &Pending, frame: &[u8], deadline: Instant) -> Result<(), ForkAsError> {
    let socket = pending.pipe.as_ref().expect("the socket of a new call");
    let mut sent = 0;
    while sent < frame.len() {
        let flags = rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT;
        match rustix::net::send(socket, &frame[sent..], flags) {
            Ok(n) => sent += n,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                let mut poller = Poller::<2>::new();
                poller.add(socket, Interest::WRITABLE, 0);
                poller.add(&pending.child, Interest::READABLE, 1);
                poller
                    .wait(Some(deadline))
                    .map_err(|source| ForkAsError::Spawn {
                        what: "poll",
                        source,
                    })?;
                if poller.readiness(1).is_some() || Instant::now() >= deadline {
                    return Ok(());
                }
            }
            Err(Errno::PIPE | Errno::CONNRESET) => return Ok(()),
            Err(e) => return Err(spawn_err("send", e)),
        }
    }
    Ok(())
}

/// The exec-mode entry: call it first thing in `main`, with the functions
/// the program lets [`ForkAs::run_exec`] run.
///
/// Returns at once when this process was not started as an exec-mode
/// fork-as child (no [`EXEC_ROLE`] in argv), so the program goes on as
/// usual. Otherwise it serves the one request on fd [`CHANNEL_FD`] — setup,
/// drop, the function, the result — and ends the process (`_exit`, no
/// destructor or `atexit` handler runs); it never returns.
///
/// It must come before anything starts a thread (it refuses to run the
/// function in a multithreaded process) or opens fds without close-on-exec.
///
/// ```no_run
/// use privfork::fork_as::{Functions, exec_entry};
/// use privfork::{ForkAs, exe::Exe};
///
/// fn word_count(text: String) -> usize {
///     text.split_whitespace().count()
/// }
///
/// fn functions() -> Functions {
///     Functions::new().register("word_count", word_count)
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     exec_entry(&functions());
///     let exe = Exe::current()?;
///     let secret = std::fs::read_to_string("/etc/shadow")?; // held in memory
///     let n: usize = ForkAs::user("nobody")?.run_exec(exe, "word_count", "a b c")?;
///     assert_eq!(n, 3); // the child never saw `secret`
///     # drop(secret);
///     Ok(())
/// }
/// ```
pub fn exec_entry(functions: &Functions) {
    // The fds that came through exec, before anything else opens one.
    crate::inherit::capture_if_started_with_fds();
    if crate::exe::role().as_deref() != Some(EXEC_ROLE) {
        return;
    }
    // Nothing may unwind into the program's main.
    let code = catch_unwind(AssertUnwindSafe(|| serve(functions))).unwrap_or(EXIT_SETUP_FAILED);
    sys::exit_immediately(code)
}

/// The child: one request, then the exit code.
fn serve(functions: &Functions) -> i32 {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("privfork exec-mode fork-as child: {what}: {e}");
        EXIT_SETUP_FAILED
    };
    // 1. Never with privileges the invoker lacks (see the module docs).
    if sys::secure_exec() {
        return fail(
            "refused",
            &"started setuid, setgid or with file capabilities (AT_SECURE); exec mode runs \
              only with the privileges of its invoker",
        );
    }
    // 2. One thread, or no setup routine.
    let token = match sys::exec_image_token() {
        Ok(t) => t,
        Err(e) => return fail("refused", &e),
    };
    let channel = match take_inherited_fd(CHANNEL_FD, FdKind::UnixStream) {
        Ok(fd) => fd,
        Err(e) => return fail("no channel", &e),
    };
    // Orders only from the process that started this one, as its user
    // (the caller made the socketpair: its peer credentials are the
    // caller's).
    let caller = match crate::inherit::check_from_parent(channel.as_fd()) {
        Ok(pid) => pid,
        Err(e) => return fail("refused", &e),
    };
    let refuse = |channel: &OwnedFd, refusal: Refusal| {
        let payload = postcard::to_allocvec(&refusal).unwrap_or_default();
        write_frame(channel, tag::REFUSED, &payload);
        EXIT_SETUP_FAILED
    };
    // 3. The request: who, what, with which argument.
    let request = match read_request(channel.as_fd()) {
        Ok(r) => r,
        Err(reason) => return refuse(&channel, Refusal::BadRequest(reason)),
    };
    let Some(entry) = functions.get(&request.function) else {
        return refuse(&channel, Refusal::UnknownFunction(request.function));
    };
    let call = match call_of(&request) {
        Ok(call) => call,
        Err(reason) => return refuse(&channel, Refusal::BadRequest(reason)),
    };
    if request.parent != caller {
        return refuse(
            &channel,
            Refusal::BadRequest("the request names another parent than the channel's".into()),
        );
    }
    let Some(parent) = Pid::from_raw(request.parent) else {
        return refuse(&channel, Refusal::BadRequest("parent pid".into()));
    };
    // 4. The function's sandbox, from this image, prepared as root.
    let call = match &entry.sandbox {
        None => call,
        Some(sandbox) => match sandbox.prepare() {
            Ok(prepared) => call.prepared_sandbox(Arc::new(prepared)),
            Err(e) => return refuse(&channel, Refusal::Sandbox(e.to_string())),
        },
    };
    // 5. The setup routine, then the function (fork-as's child body).
    let setup_failed = |channel: &OwnedFd, e: io::Error| {
        let report = postcard::to_allocvec(&(SetupStep::NullFds, e.raw_os_error().unwrap_or(0)))
            .unwrap_or_default();
        write_frame(channel, tag::SETUP_FAILED, &report);
        EXIT_SETUP_FAILED
    };
    let inherited = match sys::open_fds() {
        Ok(list) => list,
        Err(e) => return setup_failed(&channel, e),
    };
    let devnull: BorrowedFd<'static> = match dev_null() {
        Ok(fd) => fd,
        Err(e) => return setup_failed(&channel, e),
    };
    let fds = ChildFds {
        inherited: &inherited,
        devnull,
        skip: -1,
    };
    let args = request.args;
    child_body(&token, parent, channel, &fds, &call, move || {
        (entry.f)(&args)
    })
}

/// The [`ForkAs`] the request describes (its identity as given, by number).
fn call_of(request: &Request) -> Result<ForkAs, String> {
    use std::os::unix::ffi::OsStringExt;
    let identity = Identity::from_ids(request.uid, request.gid)
        .and_then(|id| id.with_groups(request.groups.iter().copied()))
        .map_err(|e| e.to_string())?;
    let mut call = ForkAs::new(identity)
        .drop_options(DropOptions::new().allow_root(request.allow_root))
        .no_new_privs(request.no_new_privs)
        .max_result(usize::try_from(request.max_result).unwrap_or(usize::MAX))
        .stdio(if request.stdio_null {
            Stdio::Null
        } else {
            Stdio::Inherit
        });
    if let Some(bytes) = request.max_memory {
        call = call.max_memory(bytes);
    }
    if let Some(vars) = &request.env {
        let mut set = Vec::with_capacity(vars.len());
        for (k, v) in vars {
            let bad = k.is_empty() || k.contains(&b'=') || k.contains(&0) || v.contains(&0);
            if bad {
                return Err("an invalid environment variable".into());
            }
            set.push((
                std::ffi::OsString::from_vec(k.clone()),
                std::ffi::OsString::from_vec(v.clone()),
            ));
        }
        call = call.env(Environment::Set(set));
    }
    Ok(call)
}

/// Reads the request: magic, `u64` length (checked against
/// [`MAX_REQUEST`] before allocating), postcard payload.
fn read_request(fd: BorrowedFd<'_>) -> Result<Request, String> {
    let mut header = [0u8; 12];
    read_exact(fd, &mut header)?;
    if header[..4] != MAGIC {
        return Err("not a privfork exec-mode request (bad magic or version)".into());
    }
    let len = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n <= MAX_REQUEST)
        .ok_or_else(|| format!("a request of {len} bytes, over the limit of {MAX_REQUEST}"))?;
    let mut payload = vec![0u8; len];
    read_exact(fd, &mut payload)?;
    match postcard::take_from_bytes::<Request>(&payload) {
        Ok((request, [])) => Ok(request),
        Ok(_) => Err("trailing bytes after the request".into()),
        Err(e) => Err(format!("undecodable request: {e}")),
    }
}

fn read_exact(fd: BorrowedFd<'_>, mut buf: &mut [u8]) -> Result<(), String> {
    while !buf.is_empty() {
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) => return Err("end of stream before a whole request".into()),
            Ok(n) => buf = &mut buf[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(format!("reading the request: {e}")),
        }
    }
    Ok(())
}
