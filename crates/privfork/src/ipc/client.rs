//! Request/reply calls over one channel shared by many threads.
//!
//! A [`Client`] numbers each call, sends it, and waits for the reply that
//! carries the same request id. One waiting thread at a time reads the
//! socket (the leader); replies for other calls are parked and their
//! threads woken, so calls from many threads overlap on one channel. A
//! reply whose id matches no outstanding call is a protocol error that
//! closes the channel (a peer cannot make the client buffer without bound).
//!
//! This is what a multithreaded worker uses to ask the fork server: one
//! `Client` shared by all threads, or a fresh channel per call (send one end
//! of a new [`socketpair`](super::socketpair) as an fd and talk on the other).
//! The server side is a plain [`Channel`] that answers each request with
//! [`Channel::send_with`] under the request's id.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::channel::{Channel, PeerCred, Receiver, Sender};
use super::error::{CallError, RecvError, SendError};
use super::message::Message;
use super::wire::{Received, error_chain};
use crate::event::{Interest, wait_fd};

#[derive(Debug)]
struct Shared<Rx: Message> {
    outstanding: HashSet<u64>,
    /// Calls that timed out: their replies, if they come, are dropped.
    abandoned: HashSet<u64>,
    parked: HashMap<u64, Received<Rx>>,
    reader_busy: bool,
    closed: Option<String>,
}

/// A channel end shared by threads for request/reply calls.
#[derive(Debug)]
pub struct Client<Tx: Message, Rx: Message> {
    next_id: AtomicU64,
    tx: Mutex<Sender<Tx>>,
    rx: Mutex<Receiver<Rx>>,
    shared: Mutex<Shared<Rx>>,
    wake: Condvar,
    peer: std::io::Result<PeerCred>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another caller leaves the data consistent (every update is
    // a single insert/remove), so carry on rather than spread the panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<Tx: Message, Rx: Message> Client<Tx, Rx> {
    /// Wraps `channel` for shared use.
    #[must_use]
    pub fn new(channel: Channel<Tx, Rx>) -> Self {
        let peer = channel.peer_cred();
        let (tx, rx) = channel.split();
        Self {
            next_id: AtomicU64::new(1),
            tx: Mutex::new(tx),
            rx: Mutex::new(rx),
            shared: Mutex::new(Shared {
                outstanding: HashSet::new(),
                abandoned: HashSet::new(),
                parked: HashMap::new(),
                reader_busy: false,
                closed: None,
            }),
            wake: Condvar::new(),
            peer,
        }
    }

    /// Credentials of the server end (`SO_PEERCRED`, read at creation).
    ///
    /// # Errors
    ///
    /// The error `getsockopt` returned then.
    pub fn peer_cred(&self) -> std::io::Result<PeerCred> {
        match &self.peer {
            Ok(c) => Ok(*c),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// Sends `msg` with `fds` as a new request and waits for its reply.
    ///
    /// # Errors
    ///
    /// [`CallError::Send`] / [`CallError::Recv`] for the failure this call
    /// met, [`CallError::Closed`] if the channel was closed (by any caller's
    /// failure or by the peer), [`CallError::UnexpectedReply`] for a reply to
    /// no outstanding request. All but a refused send close the channel.
    pub fn call(&self, msg: &Tx, fds: Vec<OwnedFd>) -> Result<Received<Rx>, CallError> {
        self.call_until(msg, fds, None)
    }

    /// As [`Client::call`], but gives up after `timeout`: a peer that stops
    /// answering (or reading) cannot hold the caller forever.
    ///
    /// A request that timed out may still be partly queued (it is written
    /// before the next request) and may still be answered; that late reply
    /// is dropped. The channel stays open.
    ///
    /// # Errors
    ///
    /// As [`Client::call`], and [`CallError::TimedOut`].
    pub fn call_timeout(
        &self,
        msg: &Tx,
        fds: Vec<OwnedFd>,
        timeout: Duration,
    ) -> Result<Received<Rx>, CallError> {
        self.call_until(msg, fds, Instant::now().checked_add(timeout))
    }

    fn call_until(
        &self,
        msg: &Tx,
        fds: Vec<OwnedFd>,
        deadline: Option<Instant>,
    ) -> Result<Received<Rx>, CallError> {
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
        if let Err(e) = self.send_until(id, msg, fds, deadline) {
            let mut st = lock(&self.shared);
            st.outstanding.remove(&id);
            if matches!(e, CallError::TimedOut) {
                // Part of the request may be out: expect a reply anyway.
                st.abandoned.insert(id);
            }
            return Err(e);
        }
        self.wait_reply(id, deadline)
    }

    /// Queues the request and writes it, waiting for the socket at most
    /// until `deadline`. While it waits to write, it also reads replies if
    /// no other thread does: a peer that answers before it reads more
    /// requests (the fork server does) would otherwise wait for us while we
    /// wait for it.
    fn send_until(
        &self,
        id: u64,
        msg: &Tx,
        fds: Vec<OwnedFd>,
        deadline: Option<Instant>,
    ) -> Result<(), CallError> {
        let mut tx = self.lock_tx_until(deadline)?;
        tx.queue(id, msg, fds)?;
        loop {
            if tx.try_flush()? {
                return Ok(());
            }
            let reading = {
                let mut st = lock(&self.shared);
                !std::mem::replace(&mut st.reader_busy, true)
            };
            let interest = if reading {
                Interest::BOTH
            } else {
                Interest::WRITABLE
            };
            let waited = wait_fd(tx.as_fd(), interest, deadline);
            if reading {
                let drained = self.drain_replies();
                let mut st = lock(&self.shared);
                st.reader_busy = false;
                if let Err(e) = &drained {
                    st.closed = Some(error_chain(e));
                }
                drop(st);
                self.wake.notify_all();
                drained?;
            }
            let ready = waited.map_err(|source| CallError::Send(SendError::Io { source }))?;
            if !ready {
                // Out of time. A request none of which went out is taken
                // back (it will never run); one cut in the middle leaves
                // the stream unrepairable, so the channel is closed.
                if !tx.withdraw_last_if_unsent() {
                    tx.close("a request timed out half-written");
                    lock(&self.shared).closed = Some("a request timed out half-written".to_owned());
                    self.wake.notify_all();
                    return Err(CallError::Closed {
                        reason: "a request timed out half-written".to_owned(),
                    });
                }
                return Err(CallError::TimedOut);
            }
        }
    }

    /// Takes the send lock, waiting at most until `deadline`.
    fn lock_tx_until(
        &self,
        deadline: Option<Instant>,
    ) -> Result<MutexGuard<'_, Sender<Tx>>, CallError> {
        let Some(deadline) = deadline else {
            return Ok(lock(&self.tx));
        };
        loop {
            match self.tx.try_lock() {
                Ok(g) => return Ok(g),
                Err(std::sync::TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return Err(CallError::TimedOut);
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }

    /// Reads every reply already available without blocking and files it:
    /// parked for its caller, or dropped if its call timed out.
    fn drain_replies(&self) -> Result<(), CallError> {
        let mut rx = lock(&self.rx);
        loop {
            let Some(r) = rx.try_recv().map_err(CallError::Recv)? else {
                return Ok(());
            };
            let mut st = lock(&self.shared);
            if st.outstanding.remove(&r.request_id) {
                st.parked.insert(r.request_id, r);
            } else if !st.abandoned.remove(&r.request_id) {
                let e = CallError::UnexpectedReply {
                    request_id: r.request_id,
                };
                drop(st);
                drop(rx);
                self.close_socket();
                return Err(e);
            }
        }
    }

    fn wait_reply(&self, id: u64, deadline: Option<Instant>) -> Result<Received<Rx>, CallError> {
        let timed_out = |st: &mut MutexGuard<'_, Shared<Rx>>| {
            st.outstanding.remove(&id);
            st.abandoned.insert(id);
            Err(CallError::TimedOut)
        };
        loop {
            {
                let mut st = lock(&self.shared);
                loop {
                    if let Some(r) = st.parked.remove(&id) {
                        return Ok(r);
                    }
                    if let Some(reason) = &st.closed {
                        let reason = reason.clone();
                        st.outstanding.remove(&id);
                        return Err(CallError::Closed { reason });
                    }
                    if !st.reader_busy {
                        st.reader_busy = true;
                        break;
                    }
                    st = match deadline {
                        None => self.wake.wait(st).unwrap_or_else(PoisonError::into_inner),
                        Some(d) => {
                            let left = d.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return timed_out(&mut st);
                            }
                            self.wake
                                .wait_timeout(st, left)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0
                        }
                    };
                }
            }
            // This thread is the reader until it has one message or its
            // deadline passes.
            let got = self.read_one(deadline);
            let mut st = lock(&self.shared);
            st.reader_busy = false;
            let result = match got {
                Ok(None) => {
                    self.wake.notify_all();
                    return timed_out(&mut st);
                }
                Ok(Some(r)) if st.outstanding.remove(&r.request_id) => {
                    if r.request_id == id {
                        Some(Ok(r))
                    } else {
                        st.parked.insert(r.request_id, r);
                        None
                    }
                }
                // The late reply to a call that timed out: dropped.
                Ok(Some(r)) if st.abandoned.remove(&r.request_id) => None,
                Ok(Some(r)) => {
                    let e = CallError::UnexpectedReply {
                        request_id: r.request_id,
                    };
                    st.closed = Some(error_chain(&e));
                    // Shut the socket so the peer and later calls see it.
                    self.close_socket();
                    st.outstanding.remove(&id);
                    Some(Err(e))
                }
                Err(e) => {
                    st.closed = Some(error_chain(&e));
                    st.outstanding.remove(&id);
                    Some(Err(CallError::Recv(e)))
                }
            };
            self.wake.notify_all();
            if let Some(r) = result {
                return r;
            }
        }
    }

    /// Reads one message, waiting at most until `deadline` (`Ok(None)`).
    fn read_one(&self, deadline: Option<Instant>) -> Result<Option<Received<Rx>>, RecvError> {
        let mut rx = lock(&self.rx);
        let Some(deadline) = deadline else {
            return rx.recv().map(Some);
        };
        loop {
            if let Some(r) = rx.try_recv()? {
                return Ok(Some(r));
            }
            match wait_fd(rx.as_fd(), Interest::READABLE, Some(deadline)) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(source) => return Err(RecvError::Io { source }),
            }
        }
    }

    fn close_socket(&self) {
        let rx = lock(&self.rx);
        let _ = rustix::net::shutdown(rx.as_fd(), rustix::net::Shutdown::Both);
    }

    /// True once the channel is closed; every later call fails.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        lock(&self.shared).closed.is_some()
    }
}

impl<Tx: Message, Rx: Message> From<Channel<Tx, Rx>> for Client<Tx, Rx> {
    fn from(c: Channel<Tx, Rx>) -> Self {
        Self::new(c)
    }
}
