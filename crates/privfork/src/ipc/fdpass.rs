//! Fd passing over unix sockets with `SCM_RIGHTS`.
//!
//! Two thin, safe wrappers around rustix's `sendmsg`/`recvmsg`: one write of
//! bytes with optional fds, one read of bytes with the fds that came with
//! them. Received fds are opened with `MSG_CMSG_CLOEXEC`, are `OwnedFd`s from
//! the first moment (so anything not claimed later is closed on drop), have
//! lingering turned off if they are sockets (the change is the socket's, so
//! the sender's copy sees it too), and a truncated control message
//! (`MSG_CTRUNC`: the buffer takes the kernel's most, 253, so only when this
//! process is out of fds) is an error, never a silent loss. Fds refused by
//! a channel are closed with [`close_received`].

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Why one `recvmsg` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvFdsError {
    /// The syscall failed (`EAGAIN` included: callers decide what it means).
    #[error("recvmsg on the channel socket failed")]
    Io {
        /// The error the kernel returned.
        #[source]
        source: std::io::Error,
    },
    /// The kernel set `MSG_CTRUNC`: fds could not all be received (this
    /// process is out of fds); those that were are closed.
    #[error(
        "control message truncated (MSG_CTRUNC): the peer sent more than {limit} fds at once; {received} were kept and closed"
    )]
    ControlTruncated {
        /// The per-message fd limit the buffer was sized for.
        limit: u16,
        /// How many fds fit in the buffer (all closed).
        received: usize,
    },
}

impl RecvFdsError {
    /// True when the error is `EAGAIN`/`EWOULDBLOCK` on a non-blocking read.
    #[must_use]
    pub fn is_would_block(&self) -> bool {
        matches!(self, RecvFdsError::Io { source } if source.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// A reusable control-message buffer with room for the kernel's most fds
/// per message (253), so that fds over a channel's limit are received and
/// refused by the channel rather than dropped by the kernel.
#[derive(Debug)]
pub struct FdRecvBuffer {
    space: Vec<MaybeUninit<u8>>,
    max_fds: u16,
}

/// The most fds the kernel passes in one message (`SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

impl FdRecvBuffer {
    /// Creates a buffer for the fds of one read: room for as many as the
    /// kernel passes in one message (253), so that a peer sending more
    /// than `max_fds` gets them refused here (each closed by this process
    /// as it chooses) rather than closed by the kernel in this process's
    /// context; more than `max_fds` is an error.
    #[must_use]
    pub fn new(max_fds: u16) -> Self {
        let space = rustix::cmsg_space!(ScmRights(usize::from(max_fds).max(SCM_MAX_FD) + 1));
        Self {
            space: vec![MaybeUninit::uninit(); space],
            max_fds,
        }
    }
}

/// `recvmsg(MSG_CMSG_CLOEXEC)`—Reads bytes into `buf` and returns how many
/// arrived (0 = end of stream) with the fds that came with them.
///
/// `nonblocking` adds `MSG_DONTWAIT`.
///
/// # Errors
///
/// [`RecvFdsError::Io`] if the syscall fails (`EINTR` is retried here);
/// [`RecvFdsError::ControlTruncated`] on `MSG_CTRUNC`.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    cmsg: &mut FdRecvBuffer,
    nonblocking: bool,
) -> Result<(usize, Vec<OwnedFd>), RecvFdsError> {
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    let mut control = RecvAncillaryBuffer::new(&mut cmsg.space);
    let msg = loop {
        let mut iov = [IoSliceMut::new(buf)];
        match rustix::net::recvmsg(sock, &mut iov, &mut control, flags) {
            Ok(m) => break m,
            Err(Errno::INTR) => continue,
            Err(e) => {
                return Err(RecvFdsError::Io { source: e.into() });
            }
        }
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        // Other ancillary kinds (credentials) are not requested; whatever
        // they hold is dropped here.
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    // A received TCP socket the sender set to linger would make whoever
    // closes it last wait (in `close`, whatever the fd's flags) until its
    // data is sent or the linger time passes: lingering is turned off on
    // every socket that arrives (not a socket: nothing happens).
    for fd in &fds {
        let _ = rustix::net::sockopt::set_socket_linger(fd, None);
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        let received = fds.len();
        fds.into_iter().for_each(close_received);
        return Err(RecvFdsError::ControlTruncated {
            limit: cmsg.max_fds,
            received,
        });
    }
    Ok((msg.bytes, fds))
}

/// Closes `fd`, received from a peer that may be hostile, so that this
/// process does not wait in `close`: lingering off (a TCP socket set to
/// linger blocks whoever closes it last); a unix socket is shut down for
/// reading first and the fds queued in it — which the kernel would
/// otherwise release here, in this process, lingering sockets included —
/// are taken out and closed the same way, to the kernel's own nesting
/// depth; connections waiting on a unix listener likewise. Bounded: a
/// few reads per socket.
pub fn close_received(fd: OwnedFd) {
    close_nested(fd, 0);
}

fn close_nested(fd: OwnedFd, depth: u32) {
    use rustix::net::{AddressFamily, Shutdown, sockopt};
    let _ = sockopt::set_socket_linger(&fd, None);
    if depth > 4 || !sockopt::socket_domain(&fd).is_ok_and(|d| d == AddressFamily::UNIX) {
        return;
    }
    if sockopt::socket_acceptconn(&fd).unwrap_or(false) {
        for _ in 0..64 {
            match rustix::net::accept_with(
                &fd,
                rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
            ) {
                Ok(c) => close_nested(c, depth + 1),
                Err(_) => return,
            }
        }
        return;
    }
    let _ = rustix::net::shutdown(&fd, Shutdown::Read);
    let mut buf = [0u8; 4096];
    let mut cmsg = FdRecvBuffer::new(0);
    for _ in 0..64 {
        match recv_with_fds_raw(fd.as_fd(), &mut buf, &mut cmsg) {
            Some((0, fds)) => {
                fds.into_iter().for_each(|f| close_nested(f, depth + 1));
                return;
            }
            Some((_, fds)) => fds.into_iter().for_each(|f| close_nested(f, depth + 1)),
            None => return,
        }
    }
}

/// One non-blocking `recvmsg`, its fds whatever the truncation; `None`
/// when nothing (more) can be read.
fn recv_with_fds_raw(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    cmsg: &mut FdRecvBuffer,
) -> Option<(usize, Vec<OwnedFd>)> {
    let mut control = RecvAncillaryBuffer::new(&mut cmsg.space);
    let mut iov = [IoSliceMut::new(buf)];
    let flags = RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT;
    let msg = loop {
        match rustix::net::recvmsg(sock, &mut iov, &mut control, flags) {
            Ok(m) => break m,
            Err(Errno::INTR) => continue,
            Err(_) => return None,
        }
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    Some((msg.bytes, fds))
}

/// `sendmsg(MSG_NOSIGNAL)`—Writes `bufs` (possibly only a prefix of them)
/// and, if `fds` is not empty, the fds with the first byte written.
///
/// Returns the number of bytes written; when it is non-zero the fds were
/// sent. `MSG_NOSIGNAL` turns a closed peer into `EPIPE` instead of
/// `SIGPIPE`. `nonblocking` adds `MSG_DONTWAIT`.
///
/// # Errors
///
/// The syscall's error (`EINTR` is retried here, `EAGAIN` is returned).
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[OwnedFd],
    nonblocking: bool,
) -> std::io::Result<usize> {
    let mut flags = SendFlags::NOSIGNAL;
    if nonblocking {
        flags |= SendFlags::DONTWAIT;
    }
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let mut space = if borrowed.is_empty() {
        Vec::new()
    } else {
        vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len()))]
    };
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(std::io::Error::other(
            "SCM_RIGHTS control message does not fit its buffer",
        ));
    }
    loop {
        match rustix::net::sendmsg(sock, bufs, &mut control, flags) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
