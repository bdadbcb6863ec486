//! The one place where privfork calls into the C library or the kernel
//! through `unsafe` code.
//!
//! # Safety
//!
//! Everything `unsafe` in the crate is here, behind safe functions whose
//! signatures carry the invariants the unsafe code relies on:
//!
//! - [`fork`] checks that the process has exactly one thread before it forks,
//!   so the child inherits no lock held by another thread; the child gets a
//!   [`ChildToken`], a non-`Send` zero-sized proof that the code holding it
//!   runs in a single-threaded child forked by this module.
//! - Functions that are only sound in such a child (clearing the environment,
//!   pointing inherited fds at /dev/null, clearing the signal mask, raw
//!   per-thread credential calls) take `&ChildToken`.
//! - Credential calls for a process that may have threads go through the C
//!   library's `setgroups`/`setresgid`/`setresuid`, which glibc applies to
//!   every thread (the raw syscalls act on the calling thread only); the
//!   raw calls are used only with a `ChildToken` ([`Threads::Only`]).
//! - [`spawn::spawn`] may clone a multithreaded process because its child
//!   runs only raw system calls on data prepared before the clone, then
//!   execs or `_exit`s (see that module).
//! - User and group database look-ups use the re-entrant `*_r` calls with
//!   buffers owned by Rust, grown on `ERANGE`.
#![allow(unsafe_code)]

mod fscreds;
mod isolate;
pub(crate) use fscreds::{chmod_fd, with_fs_creds};
mod netns;
mod scm;
pub(crate) use scm::{Sender, recv_with_creds, refuse_passed_fds};
#[cfg(target_os = "openbsd")]
pub(crate) mod openbsd;
pub(crate) mod spawn;

pub(crate) use isolate::{
    join_new_session_keyring, landlock_abi, landlock_restrict_self, reset_personality,
    reset_signal_handlers, unmap_shared_mappings,
};
pub(crate) use netns::enter_empty_network_namespace;

use std::ffi::{CStr, CString};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use rustix::process::{Gid, Pid, Uid};

/// Proof that the code holding it runs in a child created by [`fork`] from a
/// single-threaded process, before any thread was started in the child — or
/// in a freshly exec'ed image found single-threaded by
/// [`exec_image_token`].
///
/// It is neither `Send` nor `Sync` and cannot be built outside this module.
#[derive(Debug)]
pub(crate) struct ChildToken {
    _not_send: PhantomData<*const ()>,
}

/// Result of [`fork`].
#[derive(Debug)]
pub(crate) enum Forked {
    /// In the parent, with the child's pid.
    Parent(Pid),
    /// In the child.
    Child(ChildToken),
}

/// Error of [`fork`].
#[derive(Debug)]
pub(crate) enum ForkError {
    /// The process has more than one thread.
    MultiThreaded(usize),
    /// The threads could not be counted.
    CountThreads(io::Error),
    /// `fork` itself failed.
    Fork(io::Error),
}

/// Counts the threads of the calling process, without allocating.
///
/// procfs gives `/proc/self/task` a link count of 2 plus the number of
/// threads (`proc_task_getattr`), so one `stat` answers; field 20 of
/// `/proc/self/stat` is the fallback if that ever looks wrong.
///
/// # Errors
///
/// Fails if `/proc` is not mounted or cannot be parsed.
pub(crate) fn thread_count() -> io::Result<usize> {
    // Checked once: /proc must be procfs for the link count to mean threads.
    static PROCFS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let procfs = match PROCFS.get() {
        Some(&p) => p,
        None => {
            let fs = rustix::fs::statfs(c"/proc/self/task")?;
            *PROCFS.get_or_init(|| fs.f_type == rustix::fs::PROC_SUPER_MAGIC)
        }
    };
    if !procfs {
        return Err(io::Error::other("/proc is not a procfs mount"));
    }
    let st = rustix::fs::stat(c"/proc/self/task")?;
    if st.st_nlink >= 3 {
        return Ok((st.st_nlink - 2) as usize);
    }
    thread_count_from_stat()
}

fn thread_count_from_stat() -> io::Result<usize> {
    let fd = rustix::fs::open(
        c"/proc/self/stat",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while len < buf.len() {
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let bad = || io::Error::other("cannot parse the thread count in /proc/self/stat");
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after its last ')'. Field 3 (state) comes first there.
    let text = &buf[..len];
    let close = text.iter().rposition(|&b| b == b')').ok_or_else(bad)?;
    let field = text[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(20 - 3)
        .ok_or_else(bad)?;
    std::str::from_utf8(field)
        .ok()
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)
}

/// `fork()`—Creates a child process, refusing if the caller is multithreaded.
///
/// # Errors
///
/// [`ForkError::MultiThreaded`] if the process has more than one thread (a
/// thread other than the caller may hold a lock, e.g. the allocator's, that
/// would stay locked forever in the child); the other variants if counting
/// threads or `fork` itself fails.
///
/// See fork(2).
pub(crate) fn fork() -> Result<Forked, ForkError> {
    let threads = thread_count().map_err(ForkError::CountThreads)?;
    if threads != 1 {
        return Err(ForkError::MultiThreaded(threads));
    }
    // SAFETY: the process has exactly one thread (checked just above; only
    // this thread could start another, and it is here), so no other thread
    // can hold a lock, and the child is a consistent copy in which any code,
    // allocation included, may run.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(ForkError::Fork(io::Error::last_os_error())),
        0 => Ok(Forked::Child(ChildToken {
            _not_send: PhantomData,
        })),
        pid => {
            debug_assert!(pid > 0);
            // fork returned a positive pid, which is what from_raw needs.
            Ok(Forked::Parent(
                Pid::from_raw(pid).expect("fork returned a positive pid"),
            ))
        }
    }
}

/// A [`ChildToken`] for the image of a process that was just started by
/// exec (fork-as in exec mode, a member of the process family: the pinned
/// binary, run with its role in argv), after checking that the process has
/// exactly one thread.
///
/// # Safety invariant
///
/// The token's users (clearing `environ`, pointing fds at /dev/null, raw
/// per-thread set*id calls, the signal mask) rely on one thing: no other
/// thread exists while they run. After exec the kernel leaves one thread;
/// Rust's runtime starts none before `main`; and only the calling thread
/// could start another. So if the count is 1 here, it stays 1 for as long
/// as the caller — the exec entry, which runs the child-setup routine
/// before the registered function and starts no thread itself — holds the
/// non-`Send` token. Called after the program started a thread (the exec
/// entry not first in `main`), it refuses.
///
/// # Errors
///
/// The threads could not be counted, or there is more than one.
pub(crate) fn exec_image_token() -> io::Result<ChildToken> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "the exec-mode child has {threads} threads at its entry; call \
             privfork::fork_as::exec_entry first thing in main, before any thread starts"
        )));
    }
    Ok(ChildToken {
        _not_send: PhantomData,
    })
}

/// Opens `/dev/null` on each of fds 0, 1 and 2 that is not open, so that
/// nothing opened later lands there (a log written to fd 2 would go into
/// it). Call it before anything else opens an fd.
///
/// # Errors
///
/// `/dev/null` cannot be opened.
pub(crate) fn open_missing_stdio() -> io::Result<()> {
    // Safe code: open(2) returns the lowest free fd, so while /dev/null
    // lands on 0, 1 or 2 it fills a hole (kept open, not close-on-exec, as
    // those fds are); the first one above 2 shows none is left, and is
    // closed. Nothing is opened when 0–2 are all open (the usual case).
    let missing = (0..=2).any(|fd| matches!(spawn::fd_flags(fd), Ok(None)));
    if !missing {
        return Ok(());
    }
    loop {
        let fd = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY,
            rustix::fs::Mode::empty(),
        )?;
        if fd.as_raw_fd() > 2 {
            return Ok(());
        }
        let _kept: RawFd = std::os::fd::IntoRawFd::into_raw_fd(fd);
    }
}

/// `getauxval(AT_SECURE)`—Whether this image was started in secure-execution
/// mode: a setuid or setgid binary, file capabilities, or an LSM asking for
/// it. Such a process has privileges its invoker lacks.
///
/// See getauxval(3).
pub(crate) fn secure_exec() -> bool {
    // SAFETY: getauxval takes an integer and reads the auxiliary vector the
    // kernel left for this image; it returns 0 for an absent entry and
    // touches no memory of ours.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// `_exit(code)`—Ends the process at once: no destructors, no atexit
/// handlers, no stdio flush.
///
/// See _exit(2).
pub(crate) fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit takes no pointers and never returns; skipping Rust
    // destructors is the point (the child must not run the parent's cleanup).
    unsafe { libc::_exit(code) }
}

/// Empties the environment of the child by pointing `environ` at nothing.
///
/// Unlike `clearenv()` this frees nothing: freeing would write to the
/// allocator's state, a copy-on-write fault in a forked child, and the old
/// array goes away with the child anyway.
pub(crate) fn clear_env(_child: &ChildToken) {
    // SAFETY: the token proves we are in a single-threaded child, so no
    // other thread reads `environ` while it changes; a null `environ` is
    // what clearenv itself leaves, and getenv/setenv handle it.
    unsafe { libc::environ = std::ptr::null_mut() };
}

/// The fds open in this process, listed from `/proc/self/fd` — in the
/// parent just before it forks (single-threaded, so the list is still exact
/// in the child), which spares the child that work and its page faults.
#[derive(Debug)]
pub(crate) struct OpenFds {
    small: [RawFd; 64],
    len: usize,
    more: Vec<RawFd>,
}

impl OpenFds {
    fn iter(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.small[..self.len].iter().chain(&self.more).copied()
    }
}

/// Lists the open fds of the process (see [`OpenFds`]).
///
/// # Errors
///
/// Opening or reading `/proc/self/fd` failed.
pub(crate) fn open_fds() -> io::Result<OpenFds> {
    let dir = rustix::fs::open(
        c"/proc/self/fd",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut list = OpenFds {
        small: [0; 64],
        len: 0,
        more: Vec::new(),
    };
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    let mut entries = rustix::fs::RawDir::new(&dir, &mut buf);
    while let Some(entry) = entries.next() {
        let entry = entry?;
        // "." and ".." do not parse as numbers and are skipped.
        let Some(fd) = std::str::from_utf8(entry.file_name().to_bytes())
            .ok()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        if fd == dir.as_raw_fd() {
            continue;
        }
        if list.len < list.small.len() {
            list.small[list.len] = fd;
            list.len += 1;
        } else {
            list.more.push(fd);
        }
    }
    Ok(list)
}

/// Points the child's fds listed in `fds` at `/dev/null` (`dup2`), except
/// `devnull` itself, those in `keep`, and stdin/stdout/stderr; those three
/// too when `stdio` is set (opened on `/dev/null` if they were closed).
///
/// The fds are replaced, not closed: the child runs the caller's code,
/// which may hold `OwnedFd`/`File` values for them (captured, or in
/// statics). Closing would let a later `open` reuse a number such a value
/// still owns, and its drop would close someone else's file; replaced, each
/// number stays valid and only reaches `/dev/null`.
///
/// # Errors
///
/// A `dup2` failed.
///
/// See dup2(2).
pub(crate) fn null_fds(
    _child: &ChildToken,
    fds: &OpenFds,
    devnull: BorrowedFd<'_>,
    keep: &[RawFd],
    stdio: bool,
) -> io::Result<()> {
    let null = devnull.as_raw_fd();
    let redirect = |fd: RawFd| -> io::Result<()> {
        if fd == null || keep.contains(&fd) {
            return Ok(());
        }
        // SAFETY: dup3 takes three integers. It atomically makes `fd` refer
        // to /dev/null (fd != null was checked, as dup3 requires): an fd
        // number owned by a Rust value stays open (now on /dev/null), so no
        // owner ever sees its number closed or reused. The token proves no
        // other thread can race on the fd table. The raw syscall (dup3:
        // dup2 does not exist on every architecture) keeps the child from
        // faulting in the C library's wrapper.
        let rc = unsafe { libc::syscall(libc::SYS_dup3, null, fd, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        debug_assert_eq!(rc, libc::c_long::from(fd));
        Ok(())
    };
    if stdio {
        for fd in 0..=2 {
            redirect(fd)?;
        }
    }
    for fd in fds.iter().filter(|&fd| fd > 2) {
        redirect(fd)?;
    }
    Ok(())
}

/// Points fd `fd` at `devnull` (`dup3`), as [`null_fds`] does for a list.
///
/// # Errors
///
/// `dup3` failed.
pub(crate) fn null_fd(_child: &ChildToken, devnull: BorrowedFd<'_>, fd: RawFd) -> io::Result<()> {
    if fd == devnull.as_raw_fd() {
        return Ok(());
    }
    // SAFETY: dup3 takes three integers; it atomically makes `fd` refer to
    // /dev/null, so an owner of the number still owns an open fd (now on
    // /dev/null). The token proves no other thread races on the fd table.
    let rc = unsafe { libc::syscall(libc::SYS_dup3, devnull.as_raw_fd(), fd, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The signal mask a caller had before [`block_sigchld`]; restored when
/// dropped (also if the caller unwinds).
pub(crate) struct SavedMask(libc::sigset_t);

impl Drop for SavedMask {
    fn drop(&mut self) {
        restore_sigmask(self);
    }
}

/// Blocks SIGCHLD on the calling thread and returns the previous mask.
///
/// While blocked, no SIGCHLD handler of the program can run and reap a
/// fork-as child (with `waitpid(-1)`) before we do; the child's pid cannot
/// be reused before we reap it.
///
/// See sigprocmask(2).
pub(crate) fn block_sigchld() -> io::Result<SavedMask> {
    block_signals(&[libc::SIGCHLD])
}

/// Blocks every signal the C library lets a program block on the calling
/// thread, and returns the previous mask: around a fork, so that no signal
/// runs a handler of the parent's in the child before the child has reset
/// its handlers (the child-setup routine resets them, then empties the
/// mask).
///
/// See sigfillset(3), pthread_sigmask(3).
pub(crate) fn block_all_signals() -> io::Result<SavedMask> {
    // SAFETY: an all-zero sigset_t is a valid value for sigfillset to
    // initialise; glibc's sigfillset leaves out the signals it reserves.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to the live local above.
    unsafe { libc::sigfillset(&mut set) };
    // SAFETY: an all-zero sigset_t is a valid value for the kernel to
    // overwrite.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; pthread_sigmask only reads
    // `set` and writes `old`.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(SavedMask(old))
}

/// A C `sigset_t` holding exactly `signals`.
///
/// # Errors
///
/// `EINVAL` for a number that is not a signal.
fn sigset(signals: &[i32]) -> io::Result<libc::sigset_t> {
    // SAFETY: an all-zero sigset_t is a valid value for sigemptyset to
    // initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live, writable local.
    unsafe { libc::sigemptyset(&mut set) };
    for &sig in signals {
        // SAFETY: as above; sigaddset checks the number (EINVAL).
        if unsafe { libc::sigaddset(&mut set, sig) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(set)
}

/// `pthread_sigmask(SIG_BLOCK, signals)`—Blocks `signals` on the calling
/// thread and returns the previous mask, restored when it is dropped.
///
/// See sigprocmask(2), pthread_sigmask(3).
pub(crate) fn block_signals(signals: &[i32]) -> io::Result<SavedMask> {
    let set = sigset(signals)?;
    // SAFETY: an all-zero sigset_t is a valid value for the kernel to
    // overwrite.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; pthread_sigmask only reads
    // `set` and writes `old`.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(SavedMask(old))
}

/// `signalfd(-1, signals, SFD_CLOEXEC | SFD_NONBLOCK)`—A new fd that reads
/// the pending `signals` of the calling thread (and of the process) as
/// `signalfd_siginfo` records. The signals must be blocked to be read
/// rather than delivered.
///
/// See signalfd(2).
pub(crate) fn signalfd(signals: &[i32]) -> io::Result<std::os::fd::OwnedFd> {
    let set = sigset(signals)?;
    // SAFETY: fd -1 asks for a new fd; the mask pointer is to a live local
    // the call only reads.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd, open and owned by nobody else.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Restores a mask saved by [`block_sigchld`]. Pending SIGCHLDs are then
/// delivered to the program's handler, if any, as usual.
pub(crate) fn restore_sigmask(saved: &SavedMask) {
    // SAFETY: `saved.0` is a mask the kernel filled in; the pointer is live.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved.0, std::ptr::null_mut()) };
    debug_assert_eq!(rc, 0, "restoring a mask the kernel returned cannot fail");
}

/// Unblocks every signal in the child, which starts with a clean mask.
pub(crate) fn clear_sigmask(_child: &ChildToken) {
    // The kernel's sigset for rt_sigprocmask is 8 bytes on Linux.
    let empty: u64 = 0;
    // SAFETY: the pointer is to a live 8-byte local, the size passed; the
    // old-mask pointer is null. The token proves the process has one
    // thread, whose mask this is (glibc's wrapper would only filter out its
    // reserved signals, which an empty mask does not block anyway).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            std::mem::size_of::<u64>(),
        )
    };
    debug_assert_eq!(rc, 0, "setting an empty mask cannot fail");
}

/// Which threads a credential change must reach.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Threads<'a> {
    /// Every thread of the process: the C library's wrappers, which signal
    /// each thread to make the same call (glibc's set*id broadcast).
    All,
    /// The process has this one thread (the token proves it): raw syscalls,
    /// which act on the calling thread only, are then process-wide. They
    /// are also cheaper in a fork-as child: fork does not copy the page
    /// tables of the program's code, so every code page the child runs for
    /// the first time is a page fault, and rustix's inline syscalls touch
    /// fewer pages than the C library's wrappers.
    Only(&'a ChildToken),
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `setgroups(groups)`—Sets the supplementary groups.
///
/// See setgroups(2).
pub(crate) fn set_groups(threads: Threads<'_>, groups: &[Gid]) -> io::Result<()> {
    if let Threads::Only(ChildToken { .. }) = threads {
        return Ok(rustix::thread::set_thread_groups(groups)?);
    }
    // SAFETY: Gid is a repr(transparent) gid_t, so the pointer and length
    // describe `groups`, which outlives the call; the kernel only reads it.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr().cast::<libc::gid_t>()) })
}

/// `setresgid(gid, gid, gid)`—Sets the real, effective and saved gid.
///
/// See setresgid(2).
pub(crate) fn set_res_gid(threads: Threads<'_>, gid: Gid) -> io::Result<()> {
    if let Threads::Only(ChildToken { .. }) = threads {
        return Ok(rustix::thread::set_thread_res_gid(gid, gid, gid)?);
    }
    let g = gid.as_raw();
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresgid(g, g, g) })
}

/// `setresuid(uid, uid, uid)`—Sets the real, effective and saved uid.
///
/// See setresuid(2).
pub(crate) fn set_res_uid(threads: Threads<'_>, uid: Uid) -> io::Result<()> {
    if let Threads::Only(ChildToken { .. }) = threads {
        return Ok(rustix::thread::set_thread_res_uid(uid, uid, uid)?);
    }
    let u = uid.as_raw();
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresuid(u, u, u) })
}

/// `getresuid()`—Real, effective and saved user ids.
pub(crate) fn get_res_uid() -> (Uid, Uid, Uid) {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: the three pointers are to live, distinct locals.
    let rc = unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    debug_assert_eq!(rc, 0, "getresuid with valid pointers cannot fail");
    (Uid::from_raw(r), Uid::from_raw(e), Uid::from_raw(s))
}

/// `getresgid()`—Real, effective and saved group ids.
pub(crate) fn get_res_gid() -> (Gid, Gid, Gid) {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: the three pointers are to live, distinct locals.
    let rc = unsafe { libc::getresgid(&mut r, &mut e, &mut s) };
    debug_assert_eq!(rc, 0, "getresgid with valid pointers cannot fail");
    (Gid::from_raw(r), Gid::from_raw(e), Gid::from_raw(s))
}

/// `setfsuid(-1)`—The filesystem uid of the calling thread (an invalid
/// id changes nothing and returns the current one).
///
/// See setfsuid(2).
pub(crate) fn get_fs_uid() -> Uid {
    // SAFETY: integer argument only; (uid_t)-1 is never a valid fsuid, so
    // the call only reports the current value.
    let cur = unsafe { libc::setfsuid(libc::uid_t::MAX) };
    Uid::from_raw(cur as libc::uid_t)
}

/// `setfsgid(-1)`—The filesystem gid of the calling thread.
///
/// See setfsgid(2).
pub(crate) fn get_fs_gid() -> Gid {
    // SAFETY: integer argument only; (gid_t)-1 only reports the current value.
    let cur = unsafe { libc::setfsgid(libc::gid_t::MAX) };
    Gid::from_raw(cur as libc::gid_t)
}

/// `getgroups()`—Calls `f` with the supplementary groups of the calling
/// thread, sorted and deduplicated; allocates only for more than 64 groups
/// (a fork-as child avoids allocating: every page it writes is a
/// copy-on-write fault).
pub(crate) fn with_groups<R>(f: impl FnOnce(&[Gid]) -> R) -> io::Result<R> {
    let mut small = [Gid::ROOT; 64];
    let mut big = Vec::new();
    // First try the small buffer directly (one syscall in the usual case);
    // ask for the count only when it is too small.
    let mut n: libc::c_int = 64;
    loop {
        if n < 0 {
            // SAFETY: size 0 with a null pointer only asks for the count.
            n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let buf: &mut [Gid] = if n as usize <= small.len() {
            &mut small[..]
        } else {
            big.resize(n as usize, Gid::ROOT);
            &mut big[..]
        };
        let cap = libc::c_int::try_from(buf.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: Gid is a repr(transparent) gid_t, and `buf` has room for
        // `cap` of them, the size we pass.
        let got = unsafe { libc::getgroups(cap, buf.as_mut_ptr().cast::<libc::gid_t>()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                n = -1; // more groups than room: ask for the count
                continue;
            }
            return Err(e);
        }
        let groups = &mut buf[..got as usize];
        groups.sort_unstable_by_key(|g| g.as_raw());
        let mut len = 0;
        for i in 0..groups.len() {
            if len == 0 || groups[i] != groups[len - 1] {
                groups[len] = groups[i];
                len += 1;
            }
        }
        return Ok(f(&groups[..len]));
    }
}

/// One entry of the user database.
#[derive(Debug, Clone)]
pub(crate) struct PasswdEntry {
    pub(crate) name: String,
    pub(crate) uid: Uid,
    pub(crate) gid: Gid,
    /// The home directory (`pw_dir`).
    pub(crate) home: std::ffi::OsString,
    /// The login shell (`pw_shell`).
    pub(crate) shell: std::ffi::OsString,
}

/// A C string of the passwd entry as bytes; empty if the pointer is null.
///
/// # Safety
///
/// `p` is null or points to a NUL-terminated string that lives for the
/// call.
unsafe fn os_string_at(p: *const libc::c_char) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStrExt;
    if p.is_null() {
        return std::ffi::OsString::new();
    }
    // SAFETY: non-null here, NUL-terminated and live per this function's
    // contract.
    std::ffi::OsStr::from_bytes(unsafe { CStr::from_ptr(p) }.to_bytes()).to_owned()
}

/// One entry of the group database.
#[derive(Debug, Clone)]
pub(crate) struct GroupEntry {
    pub(crate) name: String,
    pub(crate) gid: Gid,
}

enum UserKey<'a> {
    Name(&'a CStr),
    Uid(Uid),
}

enum GroupKey<'a> {
    Name(&'a CStr),
    Gid(Gid),
}

/// Runs a re-entrant `get*_r` look-up (`call`: entry, buffer, result
/// pointer → error number) with a buffer that doubles on `ERANGE` up to
/// `max_buf`; `read` turns the filled entry into a Rust value while the
/// buffer its strings point into is still alive.
///
/// `E` must be a C struct for which all-zero bytes are a valid value
/// (`passwd`, `group`: integers and pointers).
fn reentrant_lookup<E, R>(
    max_buf: usize,
    mut call: impl FnMut(&mut E, &mut [u8], &mut *mut E) -> libc::c_int,
    read: impl FnOnce(&E) -> R,
) -> io::Result<Option<R>> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: per this function's contract, all-zero is a valid E; it
        // is only read after the call filled it.
        let mut entry: E = unsafe { std::mem::zeroed() };
        let mut out: *mut E = std::ptr::null_mut();
        let rc = call(&mut entry, &mut buf, &mut out);
        if rc == libc::ERANGE && buf.len() < max_buf {
            let len = buf.len() * 2;
            buf.resize(len, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if out.is_null() {
            return Ok(None);
        }
        debug_assert!(std::ptr::eq(out, &entry));
        return Ok(Some(read(&entry)));
    }
}

fn lookup_passwd(key: UserKey<'_>) -> io::Result<Option<PasswdEntry>> {
    reentrant_lookup(
        1 << 20,
        |pwd: &mut libc::passwd, buf, out| {
            // SAFETY: `pwd`, `buf` and `out` are live for the call,
            // `buf.len()` is its real size, and a name is a NUL-terminated
            // CStr.
            unsafe {
                match key {
                    UserKey::Name(n) => {
                        libc::getpwnam_r(n.as_ptr(), pwd, buf.as_mut_ptr().cast(), buf.len(), out)
                    }
                    UserKey::Uid(u) => {
                        libc::getpwuid_r(u.as_raw(), pwd, buf.as_mut_ptr().cast(), buf.len(), out)
                    }
                }
            }
        },
        |pwd| PasswdEntry {
            // SAFETY: on success pw_name points to a NUL-terminated string
            // inside the buffer, which lives until reentrant_lookup returns.
            name: unsafe { CStr::from_ptr(pwd.pw_name) }
                .to_string_lossy()
                .into_owned(),
            uid: Uid::from_raw(pwd.pw_uid),
            gid: Gid::from_raw(pwd.pw_gid),
            // SAFETY: on success pw_dir and pw_shell are null or point to
            // NUL-terminated strings inside the buffer, as pw_name.
            home: unsafe { os_string_at(pwd.pw_dir) },
            // SAFETY: as above.
            shell: unsafe { os_string_at(pwd.pw_shell) },
        },
    )
}

fn lookup_group(key: GroupKey<'_>) -> io::Result<Option<GroupEntry>> {
    reentrant_lookup(
        1 << 22,
        |grp: &mut libc::group, buf, out| {
            // SAFETY: as in lookup_passwd: live buffers, real sizes, CStr name.
            unsafe {
                match key {
                    GroupKey::Name(n) => {
                        libc::getgrnam_r(n.as_ptr(), grp, buf.as_mut_ptr().cast(), buf.len(), out)
                    }
                    GroupKey::Gid(g) => {
                        libc::getgrgid_r(g.as_raw(), grp, buf.as_mut_ptr().cast(), buf.len(), out)
                    }
                }
            }
        },
        |grp| GroupEntry {
            // SAFETY: on success gr_name points to a NUL-terminated string
            // inside the buffer, which lives until reentrant_lookup returns.
            name: unsafe { CStr::from_ptr(grp.gr_name) }
                .to_string_lossy()
                .into_owned(),
            gid: Gid::from_raw(grp.gr_gid),
        },
    )
}

fn to_cstring(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `getpwnam_r`—Looks a user up by name.
pub(crate) fn user_by_name(name: &str) -> io::Result<Option<PasswdEntry>> {
    lookup_passwd(UserKey::Name(&to_cstring(name)?))
}

/// `getpwuid_r`—Looks a user up by uid.
pub(crate) fn user_by_uid(uid: Uid) -> io::Result<Option<PasswdEntry>> {
    lookup_passwd(UserKey::Uid(uid))
}

/// `getgrnam_r`—Looks a group up by name.
pub(crate) fn group_by_name(name: &str) -> io::Result<Option<GroupEntry>> {
    lookup_group(GroupKey::Name(&to_cstring(name)?))
}

/// `getgrgid_r`—The name of group `gid`, if it has an entry.
pub(crate) fn group_name(gid: Gid) -> io::Result<Option<String>> {
    Ok(lookup_group(GroupKey::Gid(gid))?.map(|g| g.name))
}

/// `getgrouplist`—The groups `user` belongs to, `primary` included.
pub(crate) fn group_list(user: &str, primary: Gid) -> io::Result<Vec<Gid>> {
    let name = to_cstring(user)?;
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut n = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `groups` has room for `n` entries; getgrouplist writes at
        // most `n` and stores the needed count in `n` when it returns -1.
        let rc = unsafe {
            libc::getgrouplist(name.as_ptr(), primary.as_raw(), groups.as_mut_ptr(), &mut n)
        };
        if rc == -1 {
            if groups.len() >= 65536 {
                return Err(io::Error::other("user is in more than 65536 groups"));
            }
            let want = (n.max(0) as usize).max(groups.len() * 2);
            groups.resize(want, 0);
            continue;
        }
        groups.truncate(n.max(0) as usize);
        return Ok(groups.into_iter().map(Gid::from_raw).collect());
    }
}

/// `setenv(key, value)`—Sets a variable in the child's environment.
///
/// # Panics
///
/// As [`std::env::set_var`]: on an empty key or one containing `=` or NUL.
pub(crate) fn set_env(_child: &ChildToken, key: &std::ffi::OsStr, value: &std::ffi::OsStr) {
    // SAFETY: the token proves we are in a single-threaded child, so no other
    // thread can read the environment while it changes.
    unsafe { std::env::set_var(key, value) }
}

/// `unsetenv(key)`—Removes a variable from the child's environment.
pub(crate) fn remove_env(_child: &ChildToken, key: &std::ffi::OsStr) {
    // SAFETY: the token proves we are in a single-threaded child, so no other
    // thread can read the environment while it changes.
    unsafe { std::env::remove_var(key) }
}

/// Whether the kernel reaps this process's children by itself (SIGCHLD set
/// to `SIG_IGN` or with `SA_NOCLDWAIT`), which would make a child's status
/// unobtainable and its pid reusable before we look at it.
///
/// See sigaction(2), "SA_NOCLDWAIT".
pub(crate) fn children_autoreaped() -> io::Result<bool> {
    let old = current_action(libc::SIGCHLD)?;
    Ok(old.sa_sigaction == libc::SIG_IGN || old.sa_flags & libc::SA_NOCLDWAIT != 0)
}

/// Whether `sig`'s disposition in this process is `SIG_IGN` (inherited
/// from whoever started it: `nohup`, a script's background job).
///
/// See sigaction(2), execve(2) ("signals set to be ignored remain ignored").
pub(crate) fn signal_ignored(sig: i32) -> io::Result<bool> {
    Ok(current_action(sig)?.sa_sigaction == libc::SIG_IGN)
}

/// Sets `sig` back to its default action if it is ignored (`SIG_IGN`, or
/// for SIGCHLD `SA_NOCLDWAIT`); a handler is left alone. For a supervisor
/// that must see (SIGCHLD: reap) or pass on signals a parent had it ignore.
///
/// See sigaction(2).
pub(crate) fn unignore_signal(sig: i32) -> io::Result<()> {
    let old = current_action(sig)?;
    let nocldwait = sig == libc::SIGCHLD && old.sa_flags & libc::SA_NOCLDWAIT != 0;
    if old.sa_sigaction != libc::SIG_IGN && !(nocldwait && old.sa_sigaction == libc::SIG_DFL) {
        return Ok(());
    }
    // SAFETY: an all-zero sigaction is SIG_DFL with no flags and an empty
    // mask: no handler is installed, so nothing can run on the signal.
    let new: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `new` is a live, valid sigaction; the old-action pointer is
    // null.
    let rc = unsafe { libc::sigaction(sig, &new, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `sigaction(sig, NULL, &old)`: `sig`'s disposition, unchanged.
fn current_action(sig: i32) -> io::Result<libc::sigaction> {
    // SAFETY: an all-zero sigaction is a valid value for the kernel to
    // overwrite.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `old` is a live, writable local.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_thread_counts_parse_and_see_this_thread() {
        // libtest runs tests on threads that come and go, so the two
        // readings may differ; both must parse and count at least this one.
        assert!(thread_count().unwrap() >= 1);
        assert!(thread_count_from_stat().unwrap() >= 1);
    }

    #[test]
    fn fs_ids_read_back_without_changing() {
        assert_eq!(get_fs_uid(), get_fs_uid());
        assert_eq!(get_fs_gid(), get_fs_gid());
        assert_eq!(get_fs_uid(), get_res_uid().1);
    }
}

// seccompiler's sock_filter must have the kernel's (and libc's) layout for
// the cast in install_filter_with_listener.
const _: () = assert!(
    std::mem::size_of::<seccompiler::sock_filter>() == std::mem::size_of::<libc::sock_filter>()
        && std::mem::align_of::<seccompiler::sock_filter>()
            == std::mem::align_of::<libc::sock_filter>()
);

/// Passes fds 3 to `3 + passed - 1` through the coming exec (close-on-exec
/// cleared; each must be open: `EBADF` otherwise) and marks every fd above
/// them close-on-exec (`close_range(3 + passed, ~0, CLOSE_RANGE_CLOEXEC)`),
/// so the program about to be executed inherits those and nothing else.
/// Nothing is closed now: values owning those fds stay valid until the exec
/// replaces the image.
///
/// See close_range(2), fcntl(2) `F_SETFD`.
pub(crate) fn pass_fds_cloexec_above(_child: &ChildToken, passed: u32) -> io::Result<()> {
    let first_closed = passed
        .checked_add(3)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EMFILE))?;
    for fd in 3..first_closed {
        // SAFETY: integer arguments only; F_SETFD changes a flag of the fd
        // (or fails with EBADF), it invalidates nothing.
        let rc = unsafe { libc::fcntl(fd as RawFd, libc::F_SETFD, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    cloexec_from(first_closed)
}

/// Whether fd number `n` is open in this process (`fcntl(n, F_GETFD)`).
pub(crate) fn fd_is_open(n: RawFd) -> bool {
    // SAFETY: integer arguments only; F_GETFD reads a flag, it changes
    // and invalidates nothing.
    unsafe { libc::fcntl(n, libc::F_GETFD) >= 0 }
}

/// Moves `fds` to fd numbers `first`, `first + 1`, … in order (all
/// close-on-exec) and returns them there: where a program that takes
/// inherited sockets (systemd's `LISTEN_FDS`) finds them once they are
/// passed through exec.
///
/// Each is first duplicated above the whole range (so no move needs a
/// number a source still holds), the originals closed, then each
/// duplicated again at the lowest free number from its target
/// (`F_DUPFD_CLOEXEC`), which must be the target itself: an fd open there
/// that is not one of `fds` is never overwritten — the call fails with
/// `EBUSY` instead (free it first: [`crate::inherit::take_inherited_fd`]
/// for one inherited through exec). Fds already at their numbers stay.
///
/// See fcntl(2) `F_DUPFD_CLOEXEC`.
pub(crate) fn place_fds(
    fds: Vec<std::os::fd::OwnedFd>,
    first: RawFd,
) -> io::Result<Vec<std::os::fd::OwnedFd>> {
    use std::os::fd::AsRawFd;
    let n = RawFd::try_from(fds.len()).map_err(|_| io::Error::from_raw_os_error(libc::EMFILE))?;
    let end = first
        .checked_add(n)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EMFILE))?;
    let target = |i: usize| first + i as RawFd;
    if fds
        .iter()
        .enumerate()
        .all(|(i, fd)| fd.as_raw_fd() == target(i))
    {
        return Ok(fds);
    }
    // Above the range: no source sits on a target any more.
    let mut high = Vec::with_capacity(fds.len());
    for fd in &fds {
        high.push(rustix::io::fcntl_dupfd_cloexec(fd, end)?);
    }
    drop(fds);
    let mut placed = Vec::with_capacity(high.len());
    for (i, fd) in high.iter().enumerate() {
        let at = rustix::io::fcntl_dupfd_cloexec(fd, target(i))?;
        if at.as_raw_fd() != target(i) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "fd {0} is already open (left open by whoever started privfork? \
                     start it with {0}>&-)",
                    target(i)
                ),
            ));
        }
        placed.push(at);
    }
    Ok(placed)
}

/// `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`—Sets close-on-exec on every
/// fd above 2 (a smooth restart's exec then clears it on exactly the fds
/// it passes on). Closes nothing, so it is sound in any process.
pub(crate) fn cloexec_above_stderr_now() -> io::Result<()> {
    cloexec_from(3)
}

/// `close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`—Marks every fd from
/// `first` up close-on-exec. Closes nothing, so no fd owned by a Rust value
/// is invalidated; one system call, async-signal-safe (it runs between
/// fork and exec).
pub(crate) fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: integer arguments only; CLOSE_RANGE_CLOEXEC closes nothing.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER)`—
/// Installs `filter` on the calling thread and returns the listener fd for
/// its `SECCOMP_RET_USER_NOTIF` answers (CLOEXEC, as the kernel makes it).
///
/// The caller must be single-threaded or accept a per-thread filter (the
/// flag cannot be combined with TSYNC); no_new_privs must be set.
///
/// See seccomp(2), seccomp_unotify(2).
pub(crate) fn install_filter_with_listener(
    filter: &[seccompiler::sock_filter],
) -> io::Result<std::os::fd::OwnedFd> {
    debug_assert_eq!(
        thread_count().ok(),
        Some(1),
        "a listener filter is per-thread"
    );
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len())
            .map_err(|_| io::Error::other("seccomp filter longer than 65535 instructions"))?,
        // seccompiler's sock_filter is repr(C) with the kernel's layout
        // (u16, u8, u8, u32), the same as libc's (asserted at compile time
        // above).
        filter: filter.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // Once the supervisor has received a notification, the waiting thread
    // can leave only by dying (WAIT_KILLABLE_RECV, Linux 5.19): a signal
    // handler of the program's cannot withdraw a call the supervisor is
    // answering. Older kernels refuse the flag (EINVAL): installed without.
    let mut fd = -1;
    for flags in [
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
    ] {
        // SAFETY: `prog` points to `filter`, which outlives the call; the
        // kernel copies the program and only reads it.
        fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if fd >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            break;
        }
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("listener fd out of range"))?;
    // SAFETY: the kernel just returned this new fd; nothing else owns it.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// One user notification: which thread (its tid, in the listener's pid
/// namespace), which system call, with the argument registers the filter
/// saw.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notification {
    pub(crate) id: u64,
    pub(crate) pid: u32,
    pub(crate) nr: i32,
    pub(crate) args: [u64; 6],
}

/// `ioctl(SECCOMP_IOCTL_NOTIF_RECV)`—Waits for the next notification.
///
/// See seccomp_unotify(2).
pub(crate) fn notif_recv(listener: BorrowedFd<'_>) -> io::Result<Notification> {
    // SAFETY: an all-zero seccomp_notif is valid, and the kernel requires
    // it zeroed before RECV.
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live, writable seccomp_notif, the type the
    // ioctl number encodes.
    let rc = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Notification {
        id: n.id,
        pid: n.pid,
        nr: n.data.nr,
        args: n.data.args,
    })
}

/// `ioctl(SECCOMP_IOCTL_NOTIF_ID_VALID)`—Whether notification `id` is still
/// pending: its thread is alive and still waits for the answer. Checked
/// after looking the thread up by its tid (its memory, its thread group):
/// while it waits, the tid cannot have been reused.
///
/// See seccomp_unotify(2).
pub(crate) fn notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: the pointer is to a live u64, the type the ioctl number
    // encodes; the kernel only reads it.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id,
        )
    };
    rc == 0
}

/// `ioctl(SECCOMP_IOCTL_NOTIF_SEND)`—Answers notification `id`: let the
/// call run (`continue_call`), or fail it with `errno`.
///
/// See seccomp_unotify(2), "SECCOMP_USER_NOTIF_FLAG_CONTINUE".
pub(crate) fn notif_send(
    listener: BorrowedFd<'_>,
    id: u64,
    continue_call: bool,
    errno: i32,
) -> io::Result<()> {
    let resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: if continue_call { 0 } else { -errno },
        flags: if continue_call {
            libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
        } else {
            0
        },
    };
    // SAFETY: the pointer is to a live seccomp_notif_resp, the type the
    // ioctl number encodes; the kernel only reads it.
    let rc = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `ioctl(SECCOMP_IOCTL_NOTIF_ADDFD, SECCOMP_ADDFD_FLAG_SEND)`—Answers
/// notification `id` by installing a copy of `fd` in the waiting process
/// (close-on-exec if `cloexec`) and returning its number as the call's
/// result, in one step (Linux 5.14).
///
/// See seccomp_unotify(2).
pub(crate) fn notif_addfd_send(
    listener: BorrowedFd<'_>,
    id: u64,
    fd: BorrowedFd<'_>,
    cloexec: bool,
) -> io::Result<()> {
    let add = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
        srcfd: u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))?,
        newfd: 0,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: the pointer is to a live seccomp_notif_addfd, the type the
    // ioctl number encodes; the kernel only reads it, and `fd` is live.
    let rc = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &add) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `execveat(exe, "", argv, envp, AT_EMPTY_PATH)`—Replaces this process's
/// image with the binary `exe` pins, keeping its pid, its fds without
/// close-on-exec, its signal mask and pending signals (a smooth restart's
/// exec in place). Returns only on failure, with the error; the process
/// is then unchanged.
///
/// The caller must be single-threaded: the exec would end every other
/// thread, and a child whose parent-death signal was armed by such a
/// thread would get it. Checked here: a process with more threads gets
/// an error and no exec.
///
/// See execveat(2).
pub(crate) fn exec_in_place(exe: BorrowedFd<'_>, argv: &[CString], envp: &[CString]) -> io::Error {
    match thread_count() {
        Ok(1) => {}
        Ok(n) => {
            return io::Error::other(format!(
                "main has {n} threads; a process execs in place only with one"
            ));
        }
        Err(e) => return e,
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    debug_assert!(argv_ptrs.last().is_some_and(|p| p.is_null()));
    // SAFETY: `exe` is an open fd for the call's duration (borrowed);
    // the path is a NUL-terminated empty string; `argv_ptrs` and
    // `envp_ptrs` are NULL-terminated arrays of pointers to NUL-terminated
    // strings owned by `argv`/`envp`, which outlive the call. On success
    // the call does not return; on failure it has changed nothing.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe.as_raw_fd(),
            c"".as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    debug_assert_eq!(rc, -1);
    io::Error::last_os_error()
}
