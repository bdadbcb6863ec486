//! The fork server's process: a single-threaded poll loop over its channel
//! and its children.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use rustix::process::Pid;

use super::ForkServerBuilder;
use super::protocol::{CallFailure, CallRequest, Reply, Request, ServerStats};
use crate::event::{Interest, Poller};
use crate::fork_as::{ChildOutcome, ForkAs, ForkAsError, Pending, WireForkAsError};
use crate::ipc::{Bytes, Channel};
use crate::sandbox::PreparedSandbox;
use crate::setup::{Fds, Setup, SetupError};
use crate::sys::{self, ChildToken};
use std::sync::Arc;

/// Exit codes of the server process.
const EXIT_OK: i32 = 0;
pub(super) const EXIT_SETUP: i32 = 125;
const EXIT_ORPHANED: i32 = 126;

/// Longest function or user name a request may carry (bytes).
const MAX_NAME: usize = 256;

/// Queues `reply`; one that cannot go on the channel (too large) is
/// replaced by a short failure rather than ending the server. `false`: the
/// channel is unusable.
fn queue_reply(channel: &mut Channel<Reply, Request>, request_id: u64, reply: &Reply) -> bool {
    if channel
        .sender()
        .queue(request_id, reply, Vec::new())
        .is_ok()
    {
        return true;
    }
    let fallback = Reply::Outcome(Err(CallFailure::ForkAs(WireForkAsError::Protocol(
        "the reply does not fit the channel's size limit".to_owned(),
    ))));
    channel
        .sender()
        .queue(request_id, &fallback, Vec::new())
        .is_ok()
}

/// A call in flight: its request id and its child.
struct InFlight {
    request_id: u64,
    pending: Pending,
}

/// Runs the server until its channel closes; returns the exit code.
pub(super) fn main(
    token: &ChildToken,
    parent: Pid,
    channel: Channel<Reply, Request>,
    devnull: BorrowedFd<'static>,
    config: ForkServerBuilder,
) -> i32 {
    // The child-setup routine: signals reset, every fd of the program but
    // stdio and the channel now reaches /dev/null (replaced, not closed:
    // registered functions may own some), a session and keyring of its
    // own, no shared mapping, limits, not dumpable, the death signal, and
    // of all capabilities only those it needs for its children: SETUID and
    // SETGID to drop them, KILL to signal them once they run as another
    // user — at their deadline, and when the server dies: the kernel sends
    // a child's parent-death signal with the dying parent's permissions, so
    // without CAP_KILL it would never reach them.
    let Ok(inherited) = sys::open_fds() else {
        return EXIT_SETUP;
    };
    // The channel, and the prepared sandboxes' rulesets (opened by the
    // caller, installed by each child).
    let mut keep = vec![channel.as_fd().as_raw_fd()];
    keep.extend(
        config
            .allowed
            .values()
            .filter_map(|a| a.sandbox.as_deref().and_then(PreparedSandbox::ruleset_fd)),
    );
    let setup = Setup {
        parent: Some(parent),
        fds: Fds::Null {
            inherited: &inherited,
            devnull,
            keep: &keep,
            stdio: false,
        },
        isolate: true,
        cwd_root: true,
        no_new_privs: true,
        ..Setup::default()
    }
    .keep_caps(super::ForkServerBuilder::CAPS);
    match setup.run(Some(token)) {
        Ok(_) => {}
        Err(SetupError::ParentGone) => return EXIT_ORPHANED,
        Err(_) => return EXIT_SETUP,
    }
    serve(channel, config)
}

/// Serves on `channel` until it closes, in a process already set up (by
/// [`main`], or as a family member); returns the exit code.
pub(super) fn serve(mut channel: Channel<Reply, Request>, config: ForkServerBuilder) -> i32 {
    // SIGCHLD stays blocked for the server's life (ForkAs::spawn needs it
    // blocked until each child is reaped).
    if sys::block_sigchld().is_err() {
        return EXIT_SETUP;
    }
    let _ = rustix::thread::set_name(c"privfork-forksrv");
    let mut server = Server {
        config,
        stats: ServerStats::default(),
        in_flight: Vec::new(),
    };
    let code = server.run(&mut channel);
    // Whatever ended the loop, no child outlives the server unreaped.
    server.in_flight.clear();
    code
}

struct Server {
    config: ForkServerBuilder,
    stats: ServerStats,
    in_flight: Vec<InFlight>,
}

impl Server {
    fn run(&mut self, channel: &mut Channel<Reply, Request>) -> i32 {
        loop {
            // 1. Collect finished children and queue their replies (at most
            //    max_children of them).
            let mut i = 0;
            while i < self.in_flight.len() {
                match self.in_flight[i].pending.advance::<ChildOutcome>() {
                    None => i += 1,
                    Some(result) => {
                        let done = self.in_flight.swap_remove(i);
                        let reply = Reply::Outcome(outcome(result));
                        if !queue_reply(channel, done.request_id, &reply) {
                            return EXIT_OK;
                        }
                    }
                }
            }
            self.stats.running = self.in_flight.len() as u32;
            // 2. Send what is queued, as far as the socket takes it.
            let Ok(mut flushed) = channel.sender().try_flush() else {
                return EXIT_OK; // the caller is gone
            };
            // 3. Serve requests — only while replies are leaving: a caller
            //    that sends without reading gets backpressure (its requests
            //    wait in the socket), not a server whose memory grows.
            while flushed {
                match channel.try_recv() {
                    Ok(Some(req)) => {
                        if let Some(reply) = self.handle(req.request_id, req.msg)
                            && !queue_reply(channel, req.request_id, &reply)
                        {
                            return EXIT_OK;
                        }
                        let Ok(done) = channel.sender().try_flush() else {
                            return EXIT_OK;
                        };
                        flushed = done;
                    }
                    Ok(None) => break,
                    // End of stream, or a hostile frame: the channel is
                    // closed either way, and so is the server.
                    Err(_) => return EXIT_OK,
                }
            }
            // 4. Sleep until the channel or a child has news, or the next
            //    deadline passes.
            if self.wait(channel, flushed).is_err() {
                return EXIT_SETUP;
            }
        }
    }

    /// Handles one request; `None` when the reply comes later (a child).
    fn handle(&mut self, request_id: u64, req: Request) -> Option<Reply> {
        match req {
            Request::Stats => {
                self.stats.running = self.in_flight.len() as u32;
                Some(Reply::Stats(self.stats))
            }
            Request::Call(CallRequest {
                function,
                user,
                args,
                timeout_ms,
                max_result,
            }) => {
                let refuse = |stats: &mut ServerStats, reason: String| {
                    stats.refused += 1;
                    Some(Reply::Outcome(Err(CallFailure::Refused { reason })))
                };
                if function.len() > MAX_NAME || user.len() > MAX_NAME {
                    return refuse(
                        &mut self.stats,
                        format!("a function or user name is over {MAX_NAME} bytes"),
                    );
                }
                if args.0.len() > self.config.max_args {
                    return refuse(
                        &mut self.stats,
                        format!(
                            "{} bytes of arguments, over the server's limit of {}",
                            args.0.len(),
                            self.config.max_args
                        ),
                    );
                }
                let key = (function, user);
                let Some(allowed) = self.config.allowed.get(&key) else {
                    let (function, user) = key;
                    return refuse(
                        &mut self.stats,
                        format!("{function:?} as {user:?} is not allowed"),
                    );
                };
                if self.in_flight.len() >= self.config.max_children as usize {
                    self.stats.busy += 1;
                    return Some(Reply::Outcome(Err(CallFailure::Busy {
                        max_children: self.config.max_children,
                    })));
                }
                let f = self
                    .config
                    .functions
                    .get(&key.0)
                    .map(|entry| &entry.f)
                    .expect("allow() only accepts registered functions");
                let timeout = Duration::from_millis(timeout_ms).min(self.config.max_timeout);
                let max_result = usize::try_from(max_result)
                    .unwrap_or(usize::MAX)
                    .min(self.config.max_result);
                let mut call = ForkAs::new(allowed.identity.clone())
                    .timeout(timeout)
                    .max_result(max_result)
                    .drop_options(self.config.drop.clone());
                if let Some(sandbox) = &allowed.sandbox {
                    call = call.prepared_sandbox(Arc::clone(sandbox));
                }
                if let Some(bytes) = self.config.max_memory {
                    call = call.max_memory(bytes);
                }
                self.stats.forks += 1;
                match call.spawn(|| f(&args.0)) {
                    Ok(pending) => {
                        self.in_flight.push(InFlight {
                            request_id,
                            pending,
                        });
                        None
                    }
                    Err(e) => Some(Reply::Outcome(Err(CallFailure::ForkAs(
                        WireForkAsError::from(&e),
                    )))),
                }
            }
        }
    }

    fn wait(&self, channel: &Channel<Reply, Request>, flushed: bool) -> std::io::Result<()> {
        // New requests only once the replies are out (see run, step 3).
        let interest = if flushed {
            Interest::READABLE
        } else {
            Interest::WRITABLE
        };
        // Tokens are not needed: every child is advanced after each wake.
        let mut poller = Poller::<16>::new();
        poller.add(channel, interest, 0);
        for f in &self.in_flight {
            for fd in f.pending.poll_fds().into_iter().flatten() {
                poller.add_fd(fd, Interest::READABLE, 0);
            }
        }
        let next = self
            .in_flight
            .iter()
            .filter_map(|f| f.pending.deadline())
            .min();
        poller.wait(next).map(drop)
    }
}

/// Maps a child's result to the reply's outcome.
fn outcome(result: Result<ChildOutcome, ForkAsError>) -> Result<Bytes, CallFailure> {
    match result {
        Ok(ChildOutcome::Ok(bytes)) => Ok(bytes),
        Ok(ChildOutcome::BadArguments(m)) => Err(CallFailure::BadArguments(m)),
        Ok(ChildOutcome::EncodeFailed(m)) => Err(CallFailure::ForkAs(WireForkAsError::Codec(m))),
        Err(e) => Err(CallFailure::ForkAs(WireForkAsError::from(&e))),
    }
}
