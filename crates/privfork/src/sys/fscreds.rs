//! Doing file-system work with another user's file-system credentials, on
//! a thread of its own: what `privfork run`'s supervisor (root) uses to
//! change a file's mode for the program as the program's user would — the
//! kernel then checks search permission on every directory, ownership and
//! the setgid rules itself.
//!
//! Linux keeps credentials per thread; glibc's `setgroups`, `setfsuid`
//! and `setfsgid` wrappers change them on every thread of the process
//! (its set*id broadcast), so the raw system calls are made here, on a
//! fresh thread that ends after the work: no other thread of privfork ever
//! runs with these credentials, and this one never runs with root's again.
//! Setting the fsuid from 0 to another uid clears `CAP_DAC_OVERRIDE`,
//! `CAP_DAC_READ_SEARCH`, `CAP_FOWNER` and the other file capabilities
//! from the thread's effective set (capabilities(7), "Effect of user ID
//! changes on capabilities").

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
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("privfork-as-user".into())
        .spawn(move || {
            let result = become_fs_user(uid, gid, &groups).map(|()| work());
            let _ = tx.send(result);
        })?;
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => Err(io::Error::from(io::ErrorKind::TimedOut)),
    }
}

/// The calling thread's file-system credentials become `uid`, `gid`,
/// `groups` (this thread only: raw system calls), checked.
fn become_fs_user(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: `groups` is a live slice of `len` gid_t (u32) values, which
    // the kernel only reads; the raw call changes this thread only.
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
    // setfsgid/setfsuid return the previous id and report no error: each
    // is checked by asking again (an invalid id, -1, changes nothing).
    // SAFETY: integer arguments only; this thread's credentials only.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) };
    // SAFETY: as above.
    let now = unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX) };
    if now != i64::from(gid) {
        return Err(io::Error::other("setfsgid did not take"));
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
    // SAFETY: as above.
    let now = unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) };
    if now != i64::from(uid) {
        return Err(io::Error::other("setfsuid did not take"));
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
