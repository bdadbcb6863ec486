//! The supervisor's side of the program's sd_notify without the `unix`
//! promise: `socket(AF_UNIX, SOCK_DGRAM)` answered with one end of a
//! seqpacket pair that reaches privfork alone, and `connect`, `sendto` and
//! `setsockopt(SO_SNDBUF)` on it (see the parent module).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::net::{AddressFamily, SocketFlags, SocketType};

use super::super::call::Call;
use super::{MAX_HANDED, Notify};
use crate::sys;

/// One end of a socket pair handed to the program: privfork's end, and
/// the identity (device, inode) of the program's.
#[derive(Debug)]
pub(super) struct Handed {
    pub(super) kept: OwnedFd,
    pub(super) theirs: (u64, u64),
}

impl Notify {
    /// Answers the supervisor's notification of `call` if it is one of
    /// the program's sd_notify calls without the `unix` promise (see the
    /// module docs): `socket(AF_UNIX, …)`, and `connect`, `sendto` or
    /// `setsockopt(SO_SNDBUF)` on a socket handed over. `None`: not
    /// privfork's to answer here (the call is refused as any other).
    ///
    /// `pidfd` is the calling process's, opened while the call waited.
    pub(crate) fn on_call(
        &mut self,
        listener: BorrowedFd<'_>,
        id: u64,
        call: &Call,
        pidfd: Option<&OwnedFd>,
    ) -> Option<NotifyAnswer> {
        match call.nr {
            libc::SYS_socket if call.arg_int(0) == libc::AF_UNIX => {
                Some(NotifyAnswer::Answered(self.hand_over(listener, id, call)))
            }
            libc::SYS_connect if self.is_handed(pidfd?, call.arg_int(0)) => {
                if self.names_program_socket(call, call.args[1], call.args[2]) {
                    // Connected already, to privfork.
                    Some(NotifyAnswer::Answered(answer(
                        listener,
                        id,
                        Reply::Errno(0),
                    )))
                } else {
                    Some(NotifyAnswer::Refuse)
                }
            }
            libc::SYS_sendto if call.args[4] != 0 && self.is_handed(pidfd?, call.arg_int(0)) => {
                let fastopen = call.arg_int(3) & libc::MSG_FASTOPEN != 0;
                if !fastopen && self.names_program_socket(call, call.args[4], call.args[5]) {
                    // A seqpacket socket ignores the address: the bytes
                    // reach privfork whatever it names. Were the fd (or
                    // the address) changed meanwhile, the call would be a
                    // sendmsg with an address and without MSG_FASTOPEN,
                    // which stdio allows.
                    Some(NotifyAnswer::Answered(answer(
                        listener,
                        id,
                        Reply::Continue,
                    )))
                } else {
                    Some(NotifyAnswer::Refuse)
                }
            }
            // libsystemd's sd_notify grows the send buffer first, and goes
            // on when it cannot; the program has no CAP_NET_ADMIN for
            // SO_SNDBUFFORCE anyway.
            libc::SYS_setsockopt
                if call.arg_int(1) == libc::SOL_SOCKET
                    && matches!(call.arg_int(2), libc::SO_SNDBUF | libc::SO_SNDBUFFORCE)
                    && self.is_handed(pidfd?, call.arg_int(0)) =>
            {
                Some(NotifyAnswer::Answered(answer(
                    listener,
                    id,
                    Reply::Errno(libc::EPERM),
                )))
            }
            _ => None,
        }
    }

    /// `socket(AF_UNIX, SOCK_DGRAM[|SOCK_CLOEXEC|SOCK_NONBLOCK], 0)`: one
    /// end of a new seqpacket pair, as the call's result. Any other unix
    /// socket: `EACCES`, the soft answer it gets without a `NOTIFY_SOCKET`
    /// (glibc's NSS probes nscd's socket).
    fn hand_over(&mut self, listener: BorrowedFd<'_>, id: u64, call: &Call) -> io::Result<()> {
        let ty = call.arg_int(1);
        let extra = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        if ty & !extra != libc::SOCK_DGRAM || call.arg_int(2) != 0 {
            return answer(listener, id, Reply::Errno(libc::EACCES));
        }
        let made = (|| -> io::Result<(OwnedFd, OwnedFd, (u64, u64))> {
            let (kept, theirs) = rustix::net::socketpair(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC,
                None,
            )?;
            rustix::net::sockopt::set_socket_passcred(&kept, true)?;
            let _ = crate::sys::refuse_passed_fds(kept.as_fd());
            rustix::fs::fcntl_setfl(&kept, rustix::fs::OFlags::NONBLOCK)?;
            if ty & libc::SOCK_NONBLOCK != 0 {
                rustix::fs::fcntl_setfl(&theirs, rustix::fs::OFlags::NONBLOCK)?;
            }
            let st = rustix::fs::fstat(&theirs)?;
            Ok((kept, theirs, (st.st_dev, st.st_ino)))
        })();
        let (kept, theirs, ident) = match made {
            Ok(m) => m,
            // ENFILE, ENOMEM...: the program's call fails with it.
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::ENOMEM);
                return answer(listener, id, Reply::Errno(errno));
            }
        };
        let cloexec = ty & libc::SOCK_CLOEXEC != 0;
        match sys::notif_addfd_send(listener, id, theirs.as_fd(), cloexec) {
            Ok(()) => {}
            // Gone (ENOENT), or died while the fd was on its way (ESRCH).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
                return Ok(());
            }
            // EMFILE: the program's fd table is full.
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                return answer(listener, id, Reply::Errno(errno));
            }
        }
        self.handed.push_back(Handed {
            kept,
            theirs: ident,
        });
        if self.handed.len() > MAX_HANDED {
            self.handed.pop_front();
        }
        Ok(())
    }

    /// Whether fd `fd` of the process of `pidfd` is a socket privfork
    /// handed over (and still holds the other end of): the same device
    /// and inode, looked at through a copy of it (`pidfd_getfd`).
    fn is_handed(&self, pidfd: &OwnedFd, fd: i32) -> bool {
        if fd < 0 || self.handed.is_empty() {
            return false;
        }
        let Ok(copy) =
            rustix::process::pidfd_getfd(pidfd, fd, rustix::process::PidfdGetfdFlags::empty())
        else {
            return false;
        };
        let st = rustix::fs::fstat(&copy);
        // The copy may be the last reference by now (another thread of
        // the program closed its fd): closed off the supervisor's thread.
        super::close_later(vec![copy]);
        let Ok(st) = st else {
            return false;
        };
        self.handed
            .iter()
            .any(|h| h.theirs == (st.st_dev, st.st_ino))
    }

    /// Whether the socket address at `addr` (`len` bytes) in the calling
    /// thread's memory is the program's `NOTIFY_SOCKET` (a path, read up
    /// to its first NUL as the kernel reads it).
    fn names_program_socket(&self, call: &Call, addr: u64, len: u64) -> bool {
        let Some(bytes) = call.read_sockaddr(addr, len) else {
            return false;
        };
        let Some(([lo, hi], path)) = bytes.split_first_chunk::<2>() else {
            return false;
        };
        if i32::from(u16::from_ne_bytes([*lo, *hi])) != libc::AF_UNIX {
            return false;
        }
        let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
        end > 0 && path[..end] == *self.path.as_os_str().as_bytes()
    }
}

/// How [`Notify::on_call`] answered.
#[derive(Debug)]
pub(crate) enum NotifyAnswer {
    /// Answered (a socket handed over, a `connect` or `sendto` to
    /// `NOTIFY_SOCKET`, a soft refusal).
    Answered(io::Result<()>),
    /// A `connect` or `sendto` of a handed-over socket to another address:
    /// to be failed with `EACCES` and named.
    Refuse,
}

enum Reply {
    Errno(i32),
    Continue,
}

/// Answers notification `id` (a caller gone meanwhile is no error).
fn answer(listener: BorrowedFd<'_>, id: u64, reply: Reply) -> io::Result<()> {
    let (continue_call, errno) = match reply {
        Reply::Errno(e) => (false, e),
        Reply::Continue => (true, 0),
    };
    match sys::notif_send(listener, id, continue_call, errno) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}
