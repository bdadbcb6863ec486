//! A network namespace of the child's own: `unshare(CLONE_NEWNET)` and the
//! loopback interface brought up, as bubblewrap's `--unshare-net` does.
//! rustix marks `unshare` unsafe (for `CLONE_FILES`) and has no interface
//! ioctls, hence this module.

use std::io;
use std::os::fd::AsRawFd;

use super::ChildToken;

/// `unshare(CLONE_NEWNET)`, then `lo` up (`SIOCGIFFLAGS`, `SIOCSIFFLAGS`
/// with `IFF_UP`)—Moves the calling process into a new, empty network
/// namespace: no interface but a loopback of its own, no route out. Needs
/// CAP_SYS_ADMIN (so: before the privilege drop).
///
/// See unshare(2), network_namespaces(7), netdevice(7).
///
/// # Errors
///
/// The error of `unshare`, `socket` or `ioctl`.
pub(crate) fn enter_empty_network_namespace(_child: &ChildToken) -> io::Result<()> {
    // SAFETY: CLONE_NEWNET changes only which network namespace the
    // process's future sockets belong to; no memory is passed, and the
    // token proves one thread, so no other thread's sockets are affected
    // (nor does CLONE_FILES, rustix's reason for `unshare_unsafe`, apply).
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // Any socket of the new namespace can carry the interface ioctls.
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data (integers and byte arrays); all zeroes
    // is a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = src as libc::c_char;
    }
    debug_assert_eq!(req.ifr_name[2], 0, "the name is NUL-terminated");
    // SAFETY: `req` is a valid, writable ifreq with a NUL-terminated name
    // that outlives the call; SIOCGIFFLAGS writes only ifr_flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS above filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS reads the name and the flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
