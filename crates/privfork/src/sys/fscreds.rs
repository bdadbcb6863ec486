//! Doing file-system work with another user's file-system credentials, on
//! a thread of its own: what `privfork run`'s supervisor (root) uses to
//! change a file's mode for the program as the program's user would — the
//! kernel then checks search permission on every directory, ownership and
//! the setgid rules itself.
//!
//! Linux keeps credentials per thread; glibc's `setgroups` wrapper changes
//! them on every thread of the process (its set*id broadcast), so the raw
//! system calls are made here, on a fresh thread that ends after the work:
//! no other thread of privfork ever runs with these credentials. The
//! thread then empties its own capability sets (`capset`, this thread
//! only) and checks they are empty: the kernel's own drop of the file
//! capabilities when the fsuid leaves 0 does not happen under
//! `SECBIT_NO_SETUID_FIXUP` (capabilities(7)), so it is not relied on.
//! With the permitted set empty, the thread can never get root's powers
//! back, not even from a process-wide set*id call. One such thread at a
//! time.

use std::io;
use std::time::Duration;

/// Runs `work` on a new thread whose file-system uid, gid and
/// supplementary groups are `uid`, `gid` and `groups`, and returns its
/// result — or `TimedOut` if it takes longer than `limit` (a hung network
/// or FUSE file system): the thread then finishes on its own.
///
/// # Errors
///
/// Spawning the thread, a refused credential change (the thread then does
/// not run `work`), or the time limit.
pub(crate) fn with_fs_creds<T: Send + 'static>(
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    use std::sync::atomic::{AtomicBool, Ordering};
    // One at a time: a thread that outlived its limit (a hung file
    // system) is not joined by more.
    static BUSY: AtomicBool = AtomicBool::new(false);
    if uid == 0 {
        return Err(io::Error::other("refusing to act as root"));
    }
    if BUSY.swap(true, Ordering::AcqRel) {
        return Err(io::Error::from(io::ErrorKind::WouldBlock));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("privfork-as-user".into())
        .spawn(move || {
            let result = become_fs_user(uid, gid, &groups).map(|()| work());
            // Free before the answer: the next call may come right after.
            BUSY.store(false, Ordering::Release);
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        BUSY.store(false, Ordering::Release);
        return Err(e);
    }
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => Err(io::Error::from(io::ErrorKind::TimedOut)),
    }
}

/// The calling thread's file-system credentials become `uid`, `gid`,
/// `groups`, and its capability sets empty (this thread only: raw system
/// calls), checked.
fn become_fs_user(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // Only root may set groups (CAP_SETGID), and only root has others'
    // groups to leave: a privfork run by the program's own user keeps its
    // own.
    // SAFETY: integer arguments only.
    if unsafe { libc::geteuid() } == 0 {
        // SAFETY: `groups` is a live slice of `len` gid_t (u32) values,
        // which the kernel only reads; the raw call changes this thread
        // only.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_setgroups,
                groups.len(),
                groups.as_ptr().cast::<libc::gid_t>(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // setfsgid/setfsuid return the previous id and report no error: each
    // is checked by asking again (an invalid id, -1, changes nothing).
    // SAFETY: integer arguments only; this thread's credentials only.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) };
    // SAFETY: as above.
    let now = unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX) };
    if now as u32 != gid {
        return Err(io::Error::other("setfsgid did not take"));
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
    // SAFETY: as above.
    let now = unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) };
    if now as u32 != uid {
        return Err(io::Error::other("setfsuid did not take"));
    }
    drop_thread_capabilities()
}

/// Empties the calling thread's effective, permitted and inheritable
/// capability sets (`capset` applies to the calling thread only), and
/// checks.
fn drop_thread_capabilities() -> io::Result<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let empty = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, empty)?;
    let now = rustix::thread::capabilities(None)?;
    if !(now.effective.is_empty() && now.permitted.is_empty() && now.inheritable.is_empty()) {
        return Err(io::Error::other("capabilities still held"));
    }
    Ok(())
}

/// `fchmodat2(fd, "", mode, AT_EMPTY_PATH)`—Changes the mode of the file
/// `fd` names (an `O_PATH` fd too), with the calling thread's credentials.
/// Linux 6.6 and later.
///
/// # Errors
///
/// The kernel's.
pub(crate) fn chmod_fd(fd: std::os::fd::BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a live fd, a NUL-terminated empty string that outlives the
    // call (the kernel only reads it), integer mode and flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode,
            libc::AT_EMPTY_PATH,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
