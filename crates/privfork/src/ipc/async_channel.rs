//! Async typed channels for tokio (feature `tokio`), for workers that are
//! async servers. Same wire format, limits and checks as the blocking
//! [`Channel`](super::Channel); the two interoperate.
//!
//! Cancel safety: all partial state lives in the channel, not the future.
//! Dropping a `recv` future loses nothing; dropping a `send` future leaves
//! the message queued, and the next `send` or `flush` writes it first.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustix::fs::OFlags;
use tokio::io::Interest;
use tokio::net::UnixStream;

use super::channel::{PeerCred, check_unix_stream, peer_cred, socketpair};
use super::error::{CallError, OpenError, RecvError, SendError};
use super::frame::Limits;
use super::message::Message;
use super::wire::{ReadCore, Received, Step, WriteCore, error_chain};

/// Puts `fd` in non-blocking mode and registers it with the runtime's
/// reactor (through `tokio::net::UnixStream`, whose registration is safe).
fn register(fd: OwnedFd) -> Result<Arc<UnixStream>, OpenError> {
    let fl = rustix::fs::fcntl_getfl(&fd).map_err(|e| OpenError::Fd {
        what: "fcntl(F_GETFL)",
        source: e.into(),
    })?;
    rustix::fs::fcntl_setfl(&fd, fl | OFlags::NONBLOCK).map_err(|e| OpenError::Fd {
        what: "fcntl(F_SETFL, O_NONBLOCK)",
        source: e.into(),
    })?;
    UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
        .map(Arc::new)
        .map_err(|source| OpenError::Reactor { source })
}

/// The receiving half of an async channel.
#[derive(Debug)]
pub struct AsyncReceiver<Rx: Message> {
    fd: Arc<UnixStream>,
    core: ReadCore<Rx>,
}

impl<Rx: Message> AsyncReceiver<Rx> {
    /// See [`Receiver::set_accepting`](super::Receiver::set_accepting).
    pub fn set_accepting(&mut self, state: &'static str, kinds: &[Rx::Kind]) {
        self.core.accepting.state = state;
        self.core.accepting.kinds = Some(kinds.to_vec());
    }

    /// See [`Receiver::accept_all`](super::Receiver::accept_all).
    pub fn accept_all(&mut self) {
        self.core.accepting.state = "any";
        self.core.accepting.kinds = None;
    }

    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// As for [`Receiver::recv`](super::Receiver::recv).
    pub async fn recv(&mut self) -> Result<Received<Rx>, RecvError> {
        loop {
            let sock = self.fd.as_fd();
            if let Some(m) = self.core.next_message(sock)? {
                return Ok(m);
            }
            // Try first: data is often already there, and a readiness
            // round trip through the reactor costs more than a failed read.
            if self.core.fill(sock, true)? == Step::Progress {
                continue;
            }
            if let Err(source) = self.fd.readable().await {
                return Err(self.core.fail(sock, RecvError::Io { source }));
            }
            let core = &mut self.core;
            // try_io clears the readiness when the closure says WouldBlock.
            match self
                .fd
                .try_io(Interest::READABLE, || match core.fill(sock, true) {
                    Ok(Step::WouldBlock) => Err(std::io::ErrorKind::WouldBlock.into()),
                    other => Ok(other),
                }) {
                Ok(r) => {
                    r?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(source) => return Err(self.core.fail(sock, RecvError::Io { source })),
            }
        }
    }
}

/// The sending half of an async channel.
#[derive(Debug)]
pub struct AsyncSender<Tx: Message> {
    fd: Arc<UnixStream>,
    core: WriteCore<Tx>,
}

impl<Tx: Message> AsyncSender<Tx> {
    /// Sends `msg` (request id 0, no fds).
    ///
    /// # Errors
    ///
    /// As for [`Sender::send_with`](super::Sender::send_with).
    pub async fn send(&mut self, msg: &Tx) -> Result<(), SendError> {
        self.send_with(0, msg, Vec::new()).await
    }

    /// Sends `msg` under `request_id` with `fds` (exactly as many as its
    /// kind declares), and waits until all queued output is written.
    ///
    /// # Errors
    ///
    /// As for [`Sender::send_with`](super::Sender::send_with).
    pub async fn send_with(
        &mut self,
        request_id: u64,
        msg: &Tx,
        fds: Vec<OwnedFd>,
    ) -> Result<(), SendError> {
        self.queue(request_id, msg, fds)?;
        self.flush().await
    }

    /// Queues `msg` without writing anything; [`AsyncSender::flush`] writes
    /// it.
    ///
    /// # Errors
    ///
    /// As for [`Sender::queue`](super::Sender::queue).
    pub fn queue(&mut self, request_id: u64, msg: &Tx, fds: Vec<OwnedFd>) -> Result<(), SendError> {
        self.core.enqueue(request_id, msg, fds)
    }

    /// Writes all queued output.
    ///
    /// # Errors
    ///
    /// [`SendError::Io`] if a write fails (the channel is then closed).
    pub async fn flush(&mut self) -> Result<(), SendError> {
        while !self.core.is_empty() {
            let sock = self.fd.as_fd();
            if self.core.flush_step(sock, true)? == Step::Progress {
                continue;
            }
            self.fd
                .writable()
                .await
                .map_err(|source| SendError::Io { source })?;
            let core = &mut self.core;
            match self
                .fd
                .try_io(Interest::WRITABLE, || match core.flush_step(sock, true) {
                    Ok(Step::WouldBlock) => Err(std::io::ErrorKind::WouldBlock.into()),
                    other => Ok(other),
                }) {
                Ok(r) => {
                    r?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(source) => return Err(SendError::Io { source }),
            }
        }
        Ok(())
    }
}

/// One end of an async typed channel: sends `Tx`, receives `Rx`.
#[derive(Debug)]
pub struct AsyncChannel<Tx: Message, Rx: Message> {
    tx: AsyncSender<Tx>,
    rx: AsyncReceiver<Rx>,
}

impl<Tx: Message, Rx: Message> AsyncChannel<Tx, Rx> {
    /// Creates a connected pair of async ends.
    ///
    /// # Errors
    ///
    /// [`OpenError::Socketpair`], [`OpenError::Fd`], [`OpenError::Reactor`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled (tokio's own rule).
    pub fn pair(limits: Limits) -> Result<(Self, AsyncChannel<Rx, Tx>), OpenError> {
        let (a, b) = socketpair()?;
        Ok((Self::new(a, limits)?, AsyncChannel::new(b, limits)?))
    }

    /// Adopts `fd` (an `AF_UNIX` `SOCK_STREAM` socket), puts it in
    /// non-blocking mode and registers it with the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`OpenError::NotUnixStream`], [`OpenError::Fd`],
    /// [`OpenError::Reactor`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled (tokio's own rule).
    pub fn from_fd(fd: OwnedFd, limits: Limits) -> Result<Self, OpenError> {
        check_unix_stream(fd.as_fd())?;
        Self::new(fd, limits)
    }

    fn new(fd: OwnedFd, limits: Limits) -> Result<Self, OpenError> {
        let fd = register(fd)?;
        Ok(Self {
            tx: AsyncSender {
                fd: Arc::clone(&fd),
                core: WriteCore::new(limits),
            },
            rx: AsyncReceiver {
                fd,
                core: ReadCore::new(limits),
            },
        })
    }

    /// Splits into halves that can live in different tasks.
    #[must_use]
    pub fn split(self) -> (AsyncSender<Tx>, AsyncReceiver<Rx>) {
        (self.tx, self.rx)
    }

    /// Credentials of the peer (`SO_PEERCRED`).
    ///
    /// # Errors
    ///
    /// The syscall's error.
    pub fn peer_cred(&self) -> std::io::Result<PeerCred> {
        peer_cred(self.as_fd())
    }

    /// See [`AsyncReceiver::set_accepting`].
    pub fn set_accepting(&mut self, state: &'static str, kinds: &[Rx::Kind]) {
        self.rx.set_accepting(state, kinds);
    }

    /// See [`AsyncReceiver::accept_all`].
    pub fn accept_all(&mut self) {
        self.rx.accept_all();
    }

    /// See [`AsyncReceiver::recv`].
    ///
    /// # Errors
    ///
    /// See [`AsyncReceiver::recv`].
    pub async fn recv(&mut self) -> Result<Received<Rx>, RecvError> {
        self.rx.recv().await
    }

    /// See [`AsyncSender::send`].
    ///
    /// # Errors
    ///
    /// See [`AsyncSender::send_with`].
    pub async fn send(&mut self, msg: &Tx) -> Result<(), SendError> {
        self.tx.send(msg).await
    }

    /// See [`AsyncSender::send_with`].
    ///
    /// # Errors
    ///
    /// See [`AsyncSender::send_with`].
    pub async fn send_with(
        &mut self,
        request_id: u64,
        msg: &Tx,
        fds: Vec<OwnedFd>,
    ) -> Result<(), SendError> {
        self.tx.send_with(request_id, msg, fds).await
    }
}

impl<Tx: Message, Rx: Message> AsFd for AsyncChannel<Tx, Rx> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.rx.fd.as_fd()
    }
}

#[derive(Debug)]
struct Shared<Rx: Message> {
    outstanding: HashSet<u64>,
    /// Calls whose future was dropped; their replies are discarded.
    abandoned: HashSet<u64>,
    parked: HashMap<u64, Received<Rx>>,
    closed: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under this lock is a single insert/remove: a panic
    // elsewhere cannot leave it half-done.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Async request/reply calls from many tasks over one channel; see
/// [`Client`](super::Client) for the protocol. Cancelling a call (dropping
/// its future) is allowed: its reply is discarded when it comes.
#[derive(Debug)]
pub struct AsyncClient<Tx: Message, Rx: Message> {
    next_id: AtomicU64,
    tx: tokio::sync::Mutex<AsyncSender<Tx>>,
    rx: tokio::sync::Mutex<AsyncReceiver<Rx>>,
    shared: Mutex<Shared<Rx>>,
    wake: tokio::sync::Notify,
}

struct Pending<'a, Tx: Message, Rx: Message> {
    client: &'a AsyncClient<Tx, Rx>,
    id: u64,
    /// The request is queued: a reply may come even if the call is dropped.
    queued: bool,
    done: bool,
}

impl<Tx: Message, Rx: Message> Drop for Pending<'_, Tx, Rx> {
    fn drop(&mut self) {
        let mut st = lock(&self.client.shared);
        if !self.done && st.outstanding.contains(&self.id) {
            if self.queued {
                // Cancelled after queueing: the reply may come; drop it then.
                st.abandoned.insert(self.id);
            } else {
                // Never queued: no reply can come.
                st.outstanding.remove(&self.id);
            }
        }
        st.parked.remove(&self.id);
        drop(st);
        // A cancelled reader must hand the socket to someone else.
        self.client.wake.notify_waiters();
    }
}

impl<Tx: Message, Rx: Message> AsyncClient<Tx, Rx> {
    /// Wraps `channel` for shared use.
    #[must_use]
    pub fn new(channel: AsyncChannel<Tx, Rx>) -> Self {
        let (tx, rx) = channel.split();
        Self {
            next_id: AtomicU64::new(1),
            tx: tokio::sync::Mutex::new(tx),
            rx: tokio::sync::Mutex::new(rx),
            shared: Mutex::new(Shared {
                outstanding: HashSet::new(),
                abandoned: HashSet::new(),
                parked: HashMap::new(),
                closed: None,
            }),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Sends `msg` with `fds` as a new request and waits for its reply.
    ///
    /// # Errors
    ///
    /// As for [`Client::call`](super::Client::call).
    pub async fn call(&self, msg: &Tx, fds: Vec<OwnedFd>) -> Result<Received<Rx>, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = lock(&self.shared);
            if let Some(reason) = &st.closed {
                return Err(CallError::Closed {
                    reason: reason.clone(),
                });
            }
            st.outstanding.insert(id);
        }
        let mut pending = Pending {
            client: self,
            id,
            queued: false,
            done: false,
        };
        let sent = {
            let mut tx = self.tx.lock().await;
            match tx.queue(id, msg, fds) {
                Err(e) => Err(e),
                Ok(()) => {
                    pending.queued = true;
                    tx.flush().await
                }
            }
        };
        if let Err(e) = sent {
            lock(&self.shared).outstanding.remove(&id);
            pending.done = true;
            return Err(e.into());
        }
        let r = self.wait_reply(id).await;
        pending.done = true;
        r
    }

    async fn wait_reply(&self, id: u64) -> Result<Received<Rx>, CallError> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            {
                let mut st = lock(&self.shared);
                if let Some(r) = st.parked.remove(&id) {
                    return Ok(r);
                }
                if let Some(reason) = &st.closed {
                    let reason = reason.clone();
                    st.outstanding.remove(&id);
                    return Err(CallError::Closed { reason });
                }
            }
            let Ok(mut rx) = self.rx.try_lock() else {
                notified.await;
                continue;
            };
            let got = rx.recv().await;
            let mut st = lock(&self.shared);
            let result = match got {
                Ok(r) if st.outstanding.remove(&r.request_id) => {
                    if st.abandoned.remove(&r.request_id) {
                        None
                    } else if r.request_id == id {
                        Some(Ok(r))
                    } else {
                        st.parked.insert(r.request_id, r);
                        None
                    }
                }
                Ok(r) => {
                    let e = CallError::UnexpectedReply {
                        request_id: r.request_id,
                    };
                    st.closed = Some(error_chain(&e));
                    let _ = rustix::net::shutdown(rx.fd.as_fd(), rustix::net::Shutdown::Both);
                    st.outstanding.remove(&id);
                    Some(Err(e))
                }
                Err(e) => {
                    st.closed = Some(error_chain(&e));
                    st.outstanding.remove(&id);
                    Some(Err(CallError::Recv(e)))
                }
            };
            drop(st);
            drop(rx);
            self.wake.notify_waiters();
            if let Some(r) = result {
                return r;
            }
        }
    }
}
