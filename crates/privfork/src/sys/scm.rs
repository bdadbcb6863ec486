//! Receiving one datagram with its sender's credentials
//! (`SCM_CREDENTIALS`), as `privfork run`'s sd_notify relay reads the
//! program's messages.
//!
//! Not rustix's `recvmsg`: its `UCred` holds the pid as a non-zero `Pid`,
//! and the kernel writes 0 there for a sender whose pid this pid namespace
//! cannot name (a process of an outer namespace). Here the pid is a plain
//! integer, and 0 is simply "unknown".

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The sender of a datagram, as `SCM_CREDENTIALS` gave it: its process
/// (tgid) in this pid namespace (0 if it has none here), uid and gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sender {
    pub(crate) pid: i32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// One datagram (or seqpacket record) as [`recv_with_creds`] read it.
#[derive(Debug)]
pub(crate) struct Received {
    /// Bytes placed in the buffer.
    pub(crate) len: usize,
    /// The datagram was longer than the buffer (`MSG_TRUNC`): the rest is
    /// lost.
    pub(crate) truncated: bool,
    /// `None` if no credentials came with it (the socket lacks
    /// `SO_PASSCRED`).
    pub(crate) sender: Option<Sender>,
    /// File descriptors sent along (`SCM_RIGHTS`), up to [`MAX_FDS`], the
    /// most one message can carry. Closed when dropped.
    pub(crate) fds: Vec<OwnedFd>,
}

/// The most fds taken from one message: the kernel's own limit
/// (`SCM_MAX_FD`), so that none is left for the kernel to close inside
/// this `recvmsg` (a close that may block) — every one comes back, to be
/// closed where it cannot block the caller. Where the socket refuses fds
/// (`SO_PASSRIGHTS`, Linux 6.16), none comes.
pub(crate) const MAX_FDS: usize = 253;

/// Room for one `SCM_CREDENTIALS` message and one `SCM_RIGHTS` message of
/// [`MAX_FDS`] fds: `CMSG_SPACE(12)` + `CMSG_SPACE(4 × 253)` = 32 + 1032
/// bytes on x86_64, 8-aligned as `cmsghdr` needs.
const CONTROL_WORDS: usize = 133;

/// `recvmsg(fd, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)`—Receives one datagram
/// into `buf`, with its sender's credentials (the socket must have
/// `SO_PASSCRED`) and the fds sent with it.
///
/// # Errors
///
/// The error of `recvmsg`: `EAGAIN` when nothing is queued.
///
/// See recvmsg(2), unix(7) "SCM_CREDENTIALS", "SCM_RIGHTS".
pub(crate) fn recv_with_creds(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: CMSG_SPACE only computes a size from its integer argument.
    let space = unsafe {
        libc::CMSG_SPACE(std::mem::size_of::<libc::ucred>() as u32)
            + libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32)
    } as usize;
    assert!(space <= std::mem::size_of_val(&control));
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr (null pointers, zero lengths) is a valid
    // value; the fields that matter are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` points to one iovec describing `buf` (live and
    // writable for `buf.len()` bytes) and to `control` (live, writable,
    // 8-aligned, at least `msg_controllen` bytes); the kernel writes within
    // those bounds and updates the lengths and flags of `msg`.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut sender = None;
    let mut fds = Vec::new();
    // SAFETY: `msg` was filled by the kernel; CMSG_FIRSTHDR reads its
    // control pointer and length and returns null or a header inside
    // `control`.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: non-null, so a header inside `control` (8-aligned, as
        // cmsghdr requires) that the kernel wrote in full.
        let hdr = unsafe { &*cmsg };
        // SAFETY: CMSG_DATA points just past the header, inside the same
        // buffer; the lengths are checked against cmsg_len before reading.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        let data_len = (hdr.cmsg_len as usize).saturating_sub(data as usize - cmsg as usize);
        if hdr.cmsg_level == libc::SOL_SOCKET {
            if hdr.cmsg_type == libc::SCM_CREDENTIALS
                && data_len >= std::mem::size_of::<libc::ucred>()
            {
                // SAFETY: `data_len` bytes of the message lie at `data`,
                // enough for a ucred; read unaligned (4-aligned here).
                let c = unsafe { std::ptr::read_unaligned(data.cast::<libc::ucred>()) };
                sender = Some(Sender {
                    pid: c.pid,
                    uid: c.uid,
                    gid: c.gid,
                });
            } else if hdr.cmsg_type == libc::SCM_RIGHTS {
                for i in 0..data_len / std::mem::size_of::<RawFd>() {
                    // SAFETY: within the `data_len` bytes of this message.
                    let fd = unsafe { std::ptr::read_unaligned(data.cast::<RawFd>().add(i)) };
                    if fd >= 0 {
                        // SAFETY: the kernel just installed this fd for
                        // us (MSG_CMSG_CLOEXEC); nothing else owns it.
                        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
        }
        // SAFETY: `msg` and `cmsg` as above; CMSG_NXTHDR returns null past
        // the end of the control data.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(Received {
        len: (n as usize).min(buf.len()),
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        sender,
        fds,
    })
}

/// `setsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, 0)` (Linux 6.16)—Refuses
/// fds sent to this socket: a sender's `SCM_RIGHTS` fails with `EPERM`, so
/// privfork never holds (and never closes) an fd someone else chose — a
/// TCP socket lingering on unsent data would make that close block.
///
/// # Errors
///
/// `ENOPROTOOPT` on older kernels.
///
/// See unix(7), socket(7).
pub(crate) fn refuse_passed_fds(fd: BorrowedFd<'_>) -> io::Result<()> {
    /// include/uapi/asm-generic/socket.h
    const SO_PASSRIGHTS: libc::c_int = 83;
    let off: libc::c_int = 0;
    // SAFETY: `off` is a live int for the kernel to read, its size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSRIGHTS,
            (&raw const off).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn credentials_and_truncation_are_reported() {
        use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::sockopt::set_socket_passcred(&b, true).unwrap();
        rustix::io::write(&a, b"READY=1").unwrap();
        rustix::io::write(&a, &[b'x'; 100]).unwrap();
        let mut buf = [0u8; 64];
        let r = recv_with_creds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..r.len], b"READY=1");
        assert!(!r.truncated);
        let me = rustix::process::getpid().as_raw_nonzero().get();
        assert_eq!(r.sender.map(|s| s.pid), Some(me));
        let r = recv_with_creds(b.as_fd(), &mut buf).unwrap();
        assert!(r.truncated);
        // An fd sent along is received, and closed with the message.
        let (pr, pw) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut cmsg = rustix::net::SendAncillaryBuffer::new(&mut space);
        let fds = [pw.as_fd()];
        assert!(cmsg.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(
            &a,
            &[std::io::IoSlice::new(b"BARRIER=1")],
            &mut cmsg,
            rustix::net::SendFlags::empty(),
        )
        .unwrap();
        drop(pw);
        let r = recv_with_creds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..r.len], r.fds.len()), (&b"BARRIER=1"[..], 1));
        rustix::fs::fcntl_setfl(&pr, rustix::fs::OFlags::NONBLOCK).unwrap();
        let mut one = [0u8; 1];
        assert_eq!(
            rustix::io::read(&pr, &mut one),
            Err(rustix::io::Errno::AGAIN)
        );
        drop(r);
        assert_eq!(
            rustix::io::read(&pr, &mut one),
            Ok(0),
            "closed with the message"
        );
        assert_eq!(
            recv_with_creds(b.as_fd(), &mut buf)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EAGAIN)
        );
    }
}
