//! Blocking typed channels over a unix stream socketpair.
//!
//! A [`Channel<Tx, Rx>`] sends `Tx` messages and receives `Rx` messages.
//! It can be split into a [`Sender`] and a [`Receiver`] that share the socket
//! (for a thread per direction, or for [`Client`](super::Client)).
//!
//! Blocking calls also work on a non-blocking socket (they wait in `poll`);
//! [`Receiver::try_recv`] and [`Sender::try_flush`] never block, for a
//! `poll` loop such as the main process's.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::net::{AddressFamily, SocketFlags, SocketType};

use super::error::{OpenError, RecvError, SendError};
use super::frame::Limits;
use super::message::Message;
use super::wire::{ReadCore, Received, Step, WriteCore};
use crate::event::{Interest, wait_fd};

/// Credentials of the process at the other end, from `SO_PEERCRED`: the
/// peer as it was when the socket was created (`socketpair`) or connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// `getsockopt(SO_PEERCRED)`—Reads the peer's credentials.
///
/// # Errors
///
/// The syscall's error.
pub fn peer_cred(sock: BorrowedFd<'_>) -> std::io::Result<PeerCred> {
    let c = rustix::net::sockopt::socket_peercred(sock)?;
    Ok(PeerCred {
        pid: c.pid.as_raw_nonzero().get(),
        uid: c.uid.as_raw(),
        gid: c.gid.as_raw(),
    })
}

/// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`—Creates the two socket
/// ends of a new channel.
///
/// # Errors
///
/// [`OpenError::Socketpair`].
pub fn socketpair() -> Result<(OwnedFd, OwnedFd), OpenError> {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| OpenError::Socketpair { source: e.into() })
}

/// Checks that `fd` is an `AF_UNIX` `SOCK_STREAM` socket.
pub(crate) fn check_unix_stream(fd: BorrowedFd<'_>) -> Result<(), OpenError> {
    let ty = rustix::net::sockopt::socket_type(fd).map_err(|e| OpenError::Fd {
        what: "getsockopt(SO_TYPE)",
        source: e.into(),
    })?;
    let domain = rustix::net::sockopt::socket_domain(fd).map_err(|e| OpenError::Fd {
        what: "getsockopt(SO_DOMAIN)",
        source: e.into(),
    })?;
    if ty != SocketType::STREAM || domain != AddressFamily::UNIX {
        return Err(OpenError::NotUnixStream {
            found: format!("{domain:?} {ty:?}"),
        });
    }
    Ok(())
}

/// Blocks until `sock` is ready for `interest` (no deadline).
fn wait(sock: BorrowedFd<'_>, interest: Interest) -> std::io::Result<()> {
    wait_fd(sock, interest, None).map(drop)
}

/// The receiving half of a channel.
#[derive(Debug)]
pub struct Receiver<Rx: Message> {
    sock: Arc<OwnedFd>,
    core: ReadCore<Rx>,
}

impl<Rx: Message> Receiver<Rx> {
    /// Declares which message kinds this end accepts from now on, and names
    /// that state for errors. Anything else closes the channel.
    pub fn set_accepting(&mut self, state: &'static str, kinds: &[Rx::Kind]) {
        self.core.accepting.state = state;
        self.core.accepting.kinds = Some(kinds.to_vec());
    }

    /// Accepts every kind of `Rx` (the initial state, named `"any"`).
    pub fn accept_all(&mut self) {
        self.core.accepting.state = "any";
        self.core.accepting.kinds = None;
    }

    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// [`RecvError::PeerClosed`] when the peer hung up between messages; any
    /// other [`RecvError`] is a protocol violation or I/O error that has
    /// closed the channel (later calls return [`RecvError::Closed`]).
    pub fn recv(&mut self) -> Result<Received<Rx>, RecvError> {
        loop {
            let sock = self.sock.as_fd();
            if let Some(m) = self.core.next_message(sock)? {
                return Ok(m);
            }
            if self.core.fill(sock, false)? == Step::WouldBlock {
                // The fd is in non-blocking mode: wait for it.
                wait(sock, Interest::READABLE)
                    .map_err(|source| self.core.fail(sock, RecvError::Io { source }))?;
            }
        }
    }

    /// Returns the next message if one is complete, reading what the
    /// socket has without blocking; `Ok(None)` if it needs more bytes.
    ///
    /// # Errors
    ///
    /// As for [`Receiver::recv`].
    pub fn try_recv(&mut self) -> Result<Option<Received<Rx>>, RecvError> {
        loop {
            let sock = self.sock.as_fd();
            if let Some(m) = self.core.next_message(sock)? {
                return Ok(Some(m));
            }
            if self.core.fill(sock, true)? == Step::WouldBlock {
                return Ok(None);
            }
        }
    }

    /// True if a complete message is already buffered (a `poll` loop must
    /// drain these before it waits for the fd to become readable again).
    #[must_use]
    pub fn has_buffered(&self) -> bool {
        self.core.has_ready()
    }

    /// True if this end holds nothing it has read: no message waiting, no
    /// part of one (another reader of the socket could take over here).
    #[must_use]
    pub fn is_quiet(&self) -> bool {
        self.core.is_quiet()
    }

    /// Reads and drops what is still queued on the socket — bytes, and
    /// fds (each closed here, lingering off) — without blocking, for at
    /// most `reads` reads: before the channel of a peer that is gone is
    /// dropped, so that the kernel does not close queued fds itself.
    pub fn discard_unread(&mut self, reads: usize) {
        // Nothing more comes in (a process still holding the other end
        // gets EPIPE); what is queued can still be read, then EOF.
        let _ = rustix::net::shutdown(self.sock.as_fd(), rustix::net::Shutdown::Read);
        let mut buf = vec![0u8; 16 << 10];
        let mut cmsg = super::fdpass::FdRecvBuffer::new(0);
        for _ in 0..reads {
            match super::fdpass::recv_with_fds(self.sock.as_fd(), &mut buf, &mut cmsg, true) {
                Ok((0, fds)) => {
                    fds.into_iter().for_each(super::fdpass::close_received);
                    return;
                }
                Ok((_, fds)) => fds.into_iter().for_each(super::fdpass::close_received),
                Err(e) if e.is_would_block() => return,
                // A truncated control message: its fds were closed; go on.
                Err(super::fdpass::RecvFdsError::ControlTruncated { .. }) => {}
                Err(_) => return,
            }
        }
    }
}

impl<Rx: Message> AsFd for Receiver<Rx> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// The sending half of a channel.
#[derive(Debug)]
pub struct Sender<Tx: Message> {
    sock: Arc<OwnedFd>,
    core: WriteCore<Tx>,
}

impl<Tx: Message> Sender<Tx> {
    /// True if nothing queued is waiting to be written.
    #[must_use]
    pub fn is_flushed(&self) -> bool {
        self.core.is_empty()
    }

    /// How many frames are queued, not yet wholly written.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.core.len()
    }

    /// Takes the fds of the queued frames not sent yet, for a caller about
    /// to drop a channel whose peer is gone that wants to close them its
    /// own way (e.g. [`super::fdpass::close_received`]).
    pub fn take_queued_fds(&mut self) -> Vec<OwnedFd> {
        self.core.take_fds()
    }

    /// Sends `msg` (request id 0, no fds) and waits until it is written.
    ///
    /// # Errors
    ///
    /// See [`Sender::send_with`].
    pub fn send(&mut self, msg: &Tx) -> Result<(), SendError> {
        self.send_with(0, msg, Vec::new())
    }

    /// Sends `msg` with `fds`, which must be exactly as many as its kind
    /// declares. The fds are closed here once sent.
    ///
    /// # Errors
    ///
    /// See [`Sender::send_with`].
    pub fn send_fds(&mut self, msg: &Tx, fds: Vec<OwnedFd>) -> Result<(), SendError> {
        self.send_with(0, msg, fds)
    }

    /// Sends `msg` under `request_id` (a reply uses its request's id) with
    /// `fds`, and waits until everything queued is written.
    ///
    /// # Errors
    ///
    /// [`SendError::FdCount`] or [`SendError::TooManyFds`] for the wrong
    /// fds, [`SendError::Encode`] / [`SendError::TooLarge`] for a message
    /// that cannot go on this channel (nothing is sent in these cases),
    /// [`SendError::Io`] if the write fails (the channel is then closed).
    pub fn send_with(
        &mut self,
        request_id: u64,
        msg: &Tx,
        fds: Vec<OwnedFd>,
    ) -> Result<(), SendError> {
        self.core.enqueue(request_id, msg, fds)?;
        self.flush()
    }

    /// Queues `msg` without writing anything; see [`Sender::try_flush`].
    ///
    /// # Errors
    ///
    /// As for [`Sender::send_with`], except I/O errors.
    pub fn queue(&mut self, request_id: u64, msg: &Tx, fds: Vec<OwnedFd>) -> Result<(), SendError> {
        self.core.enqueue(request_id, msg, fds)
    }

    /// Writes queued output until it is all written, waiting as needed.
    ///
    /// # Errors
    ///
    /// [`SendError::Io`] if a write fails (the channel is then closed).
    pub fn flush(&mut self) -> Result<(), SendError> {
        while !self.core.is_empty() {
            let sock = self.sock.as_fd();
            if self.core.flush_step(sock, false)? == Step::WouldBlock {
                wait(sock, Interest::WRITABLE).map_err(|source| SendError::Io { source })?;
            }
        }
        Ok(())
    }

    /// Takes back the last queued message if none of it was written yet.
    pub(crate) fn withdraw_last_if_unsent(&mut self) -> bool {
        self.core.withdraw_last_if_unsent()
    }

    /// Closes the channel for sending (and shuts the socket down).
    pub(crate) fn close(&mut self, reason: &str) {
        let sock = Arc::clone(&self.sock);
        self.core.close(sock.as_fd(), reason);
    }

    /// Writes as much queued output as the socket takes without blocking;
    /// returns true when nothing is left queued.
    ///
    /// # Errors
    ///
    /// [`SendError::Io`] if a write fails (the channel is then closed).
    pub fn try_flush(&mut self) -> Result<bool, SendError> {
        while !self.core.is_empty() {
            if self.core.flush_step(self.sock.as_fd(), true)? == Step::WouldBlock {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl<Tx: Message> AsFd for Sender<Tx> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// One end of a typed channel: sends `Tx`, receives `Rx`.
#[derive(Debug)]
pub struct Channel<Tx: Message, Rx: Message> {
    tx: Sender<Tx>,
    rx: Receiver<Rx>,
}

impl<Tx: Message, Rx: Message> Channel<Tx, Rx> {
    /// Creates a connected pair: this end and the peer's end, both with
    /// `limits` (for threads, or a forked child that keeps the address
    /// space). For a child that execs, create the sockets with
    /// [`socketpair`], pass one fd down and adopt it with
    /// [`Channel::from_fd`] on each side.
    ///
    /// # Errors
    ///
    /// [`OpenError::Socketpair`].
    pub fn pair(limits: Limits) -> Result<(Self, Channel<Rx, Tx>), OpenError> {
        let (a, b) = socketpair()?;
        Ok((Self::new(a, limits), Channel::new(b, limits)))
    }

    /// Adopts `fd`, which must be an `AF_UNIX` `SOCK_STREAM` socket (e.g.
    /// the channel a child finds at its fixed fd number).
    ///
    /// # Errors
    ///
    /// [`OpenError::Fd`] or [`OpenError::NotUnixStream`].
    pub fn from_fd(fd: OwnedFd, limits: Limits) -> Result<Self, OpenError> {
        check_unix_stream(fd.as_fd())?;
        Ok(Self::new(fd, limits))
    }

    pub(crate) fn new(fd: OwnedFd, limits: Limits) -> Self {
        let sock = Arc::new(fd);
        Self {
            tx: Sender {
                sock: Arc::clone(&sock),
                core: WriteCore::new(limits),
            },
            rx: Receiver {
                sock,
                core: ReadCore::new(limits),
            },
        }
    }

    /// Splits into halves that can be moved to different threads.
    #[must_use]
    pub fn split(self) -> (Sender<Tx>, Receiver<Rx>) {
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

    /// See [`Receiver::set_accepting`].
    pub fn set_accepting(&mut self, state: &'static str, kinds: &[Rx::Kind]) {
        self.rx.set_accepting(state, kinds);
    }

    /// See [`Receiver::accept_all`].
    pub fn accept_all(&mut self) {
        self.rx.accept_all();
    }

    /// See [`Receiver::recv`].
    ///
    /// # Errors
    ///
    /// See [`Receiver::recv`].
    pub fn recv(&mut self) -> Result<Received<Rx>, RecvError> {
        self.rx.recv()
    }

    /// See [`Receiver::try_recv`].
    ///
    /// # Errors
    ///
    /// See [`Receiver::recv`].
    pub fn try_recv(&mut self) -> Result<Option<Received<Rx>>, RecvError> {
        self.rx.try_recv()
    }

    /// See [`Receiver::has_buffered`].
    #[must_use]
    pub fn has_buffered(&self) -> bool {
        self.rx.has_buffered()
    }

    /// See [`Receiver::discard_unread`].
    pub fn discard_unread(&mut self, reads: usize) {
        self.rx.discard_unread(reads);
    }

    /// See [`Sender::queued`].
    #[must_use]
    pub fn queued(&self) -> usize {
        self.tx.queued()
    }

    /// See [`Sender::is_flushed`].
    #[must_use]
    pub fn is_flushed(&self) -> bool {
        self.tx.is_flushed()
    }

    /// True if this end holds nothing read and nothing queued to send:
    /// another process could take over the socket here without a message
    /// lost or cut (a smooth restart's exec checks it).
    #[must_use]
    pub fn is_quiet(&self) -> bool {
        self.rx.is_quiet() && self.tx.is_flushed()
    }

    /// See [`Sender::send`].
    ///
    /// # Errors
    ///
    /// See [`Sender::send_with`].
    pub fn send(&mut self, msg: &Tx) -> Result<(), SendError> {
        self.tx.send(msg)
    }

    /// See [`Sender::send_fds`].
    ///
    /// # Errors
    ///
    /// See [`Sender::send_with`].
    pub fn send_fds(&mut self, msg: &Tx, fds: Vec<OwnedFd>) -> Result<(), SendError> {
        self.tx.send_fds(msg, fds)
    }

    /// See [`Sender::send_with`].
    ///
    /// # Errors
    ///
    /// See [`Sender::send_with`].
    pub fn send_with(
        &mut self,
        request_id: u64,
        msg: &Tx,
        fds: Vec<OwnedFd>,
    ) -> Result<(), SendError> {
        self.tx.send_with(request_id, msg, fds)
    }

    /// The sending half.
    pub fn sender(&mut self) -> &mut Sender<Tx> {
        &mut self.tx
    }

    /// The receiving half.
    pub fn receiver(&mut self) -> &mut Receiver<Rx> {
        &mut self.rx
    }
}

impl<Tx: Message, Rx: Message> AsFd for Channel<Tx, Rx> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.rx.sock.as_fd()
    }
}
