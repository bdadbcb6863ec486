//! Raw calls of the child-setup routine (`crate::setup`) that rustix does
//! not offer: the session keyring, shared mappings, personality, signal
//! dispositions. Each is async-signal-safe and allocates nothing, so that a
//! child forked from a large process stays cheap.

use std::io;

use super::ChildToken;

fn check_long(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)`—Makes a new anonymous
/// session keyring the caller's: keys of the session it inherited (the
/// caller's login session, root's) are no longer possessed.
///
/// See keyctl(2), session-keyring(7).
pub(crate) fn join_new_session_keyring(_child: &ChildToken) -> io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: a null name pointer asks for a new anonymous keyring; no
    // memory is passed. The token proves one thread (session keyrings are
    // per process, shared by threads; nobody else races on it).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    check_long(rc).map(drop)
}

/// The personality with no flag set (`PER_LINUX`).
const PER_LINUX: libc::c_ulong = 0;
/// `personality(0xffffffff)` only reports the current value.
const PERSONALITY_QUERY: libc::c_ulong = 0xffff_ffff;

/// `personality(PER_LINUX)`—Clears every personality flag the parent may
/// have set (`READ_IMPLIES_EXEC` would make readable mappings executable,
/// `ADDR_NO_RANDOMIZE` turns off ASLR at the next exec); returns the old
/// value.
///
/// See personality(2).
pub(crate) fn reset_personality(_child: &ChildToken) -> io::Result<libc::c_ulong> {
    // SAFETY: integer argument only; the query value changes nothing.
    let old = check_long(unsafe { libc::syscall(libc::SYS_personality, PERSONALITY_QUERY) })?;
    let old = old as libc::c_ulong;
    if old != PER_LINUX {
        // SAFETY: integer argument only.
        check_long(unsafe { libc::syscall(libc::SYS_personality, PER_LINUX) })?;
    }
    Ok(old)
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`—
/// The Landlock ABI version of the running kernel; 0 if Landlock is not
/// built in or not enabled at boot.
///
/// See landlock_create_ruleset(2).
pub(crate) fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;
    // SAFETY: a null attribute pointer with size 0 and the VERSION flag
    // only asks for the version; no memory is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(rc).unwrap_or(0).max(0)
}

/// `landlock_restrict_self(ruleset, 0)`—Restricts the calling thread (the
/// whole process when it has one thread) with `ruleset`. `no_new_privs`
/// must be set (or CAP_SYS_ADMIN held). The ruleset fd stays open and can
/// restrict another process later.
///
/// See landlock_restrict_self(2).
pub(crate) fn landlock_restrict_self(ruleset: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: integer arguments only: a live fd (borrowed for the call)
    // and no flags.
    let rc = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) };
    check_long(rc).map(drop)
}

/// The kernel's `struct sigaction` for `rt_sigaction` on x86_64 and
/// arm64: handler, flags, restorer, mask (8 bytes).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Resets every signal whose disposition is a handler to the default
/// action; ignored signals stay ignored (Rust programs ignore SIGPIPE and
/// expect `EPIPE`). The parent's handlers are the parent's code: none of it
/// should run in the child on a signal. The two signals glibc reserves for
/// itself (32 and 33, below `SIGRTMIN`) keep its handlers: its set*id
/// broadcast and thread cancellation need them.
///
/// See sigaction(2), signal(7).
pub(crate) fn reset_signal_handlers(_child: &ChildToken) -> io::Result<()> {
    let rtmin = libc::SIGRTMIN();
    let signals = (1..32).chain(rtmin..=64);
    for sig in signals {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut old = KernelSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: a null new action only queries; `old` is a live local of
        // the kernel's layout and the size passed is that of its mask.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                std::mem::size_of::<u64>(),
            )
        };
        check_long(rc)?;
        if old.handler == libc::SIG_DFL || old.handler == libc::SIG_IGN {
            continue;
        }
        let new = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: `new` is a live local of the kernel's layout; SIG_DFL
        // needs no restorer; the old-action pointer is null. The token
        // proves no other thread depends on the handler being replaced.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &new as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<u64>(),
            )
        };
        check_long(rc)?;
    }
    Ok(())
}

/// How many shared mappings one pass of [`unmap_shared_mappings`] collects
/// before it unmaps them and reads the list again.
const BATCH: usize = 64;

/// Removes every shared mapping (`MAP_SHARED` of a file, shared anonymous
/// memory, System V segments, io_uring rings — writable or not: `mprotect`
/// could make a read-only one writable again if its file was opened for
/// writing) inherited from the parent; returns how many were removed.
///
/// A forked child keeps its parent's mappings; a shared one reaches the
/// same pages as the parent, so a child that is to run as another user
/// would write the parent's files (or memory) through it whatever its own
/// permissions. Private mappings are copies and stay.
///
/// `/proc/self/maps` is read with a stack buffer, line by line (a line of
/// any length: only its first 64 bytes are looked at), and the list read
/// again after each batch of removals until a pass finds none.
///
/// # Errors
///
/// `/proc/self/maps` cannot be read or parsed, or `munmap` fails.
///
/// See proc_pid_maps(5), munmap(2).
pub(crate) fn unmap_shared_mappings(_child: &ChildToken) -> io::Result<usize> {
    use rustix::fs::{Mode, OFlags};
    let maps = rustix::fs::open(
        c"/proc/self/maps",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut removed = 0;
    loop {
        let mut batch = [(0usize, 0usize); BATCH];
        let found = match query_shared(&maps, &mut batch) {
            Ok(found) => found,
            // Before Linux 6.11: parse the text.
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => list_shared(&mut batch)?,
            Err(e) => return Err(e),
        };
        for &(start, end) in &batch[..found] {
            // SAFETY: [start, end) is a whole mapping the kernel listed for
            // this process, which has one thread (the token): nothing else
            // uses it concurrently. What the child's code still refers to
            // in it is the caller's contract (setup documents that shared
            // mappings are gone in the child).
            let rc = unsafe { libc::syscall(libc::SYS_munmap, start, end - start) };
            check_long(rc)?;
            removed += 1;
        }
        if found == 0 {
            return Ok(removed);
        }
    }
}

/// The kernel's `struct procmap_query` (linux/fs.h, Linux 6.11).
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}
const _: () = assert!(std::mem::size_of::<ProcmapQuery>() == 104);
/// `_IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: libc::c_ulong =
    0xC000_0000 | (104 << 16) | ((b'f' as libc::c_ulong) << 8) | 17;
const PROCMAP_QUERY_VMA_SHARED: u64 = 0x08;
const PROCMAP_QUERY_COVERING_OR_NEXT_VMA: u64 = 0x10;

/// Fills `out` with up to `out.len()` shared mappings, asking the kernel
/// for each next shared one (`ioctl(PROCMAP_QUERY)`): one call per shared
/// mapping plus one, no text to format or parse. `ENOTTY` on a kernel
/// before 6.11.
///
/// See proc_pid_maps(5), "PROCMAP_QUERY".
fn query_shared(maps: &std::os::fd::OwnedFd, out: &mut [(usize, usize)]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut found = 0;
    let mut addr = 0u64;
    while found < out.len() {
        let mut q = ProcmapQuery {
            size: std::mem::size_of::<ProcmapQuery>() as u64,
            query_flags: PROCMAP_QUERY_VMA_SHARED | PROCMAP_QUERY_COVERING_OR_NEXT_VMA,
            query_addr: addr,
            ..ProcmapQuery::default()
        };
        // SAFETY: `q` is a live, writable struct of the layout and size the
        // ioctl number encodes (asserted above); name and build-id buffers
        // are null with size 0, so the kernel writes nothing else.
        let rc = unsafe { libc::ioctl(maps.as_raw_fd(), PROCMAP_QUERY as _, &mut q) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                break; // no shared mapping at or after `addr`
            }
            return Err(e);
        }
        if q.vma_end <= q.vma_start || q.vma_start < addr {
            return Err(io::Error::other("PROCMAP_QUERY returned a bad range"));
        }
        out[found] = (q.vma_start as usize, q.vma_end as usize);
        found += 1;
        addr = q.vma_end;
    }
    Ok(found)
}

/// Fills `out` with up to `out.len()` shared mappings of this process
/// from `/proc/self/maps`; returns how many.
fn list_shared(out: &mut [(usize, usize)]) -> io::Result<usize> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        c"/proc/self/maps",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf = [0u8; 4096];
    let mut head = [0u8; 64];
    let mut head_len = 0;
    let mut skipping = false; // past the first 64 bytes of a line
    let mut found = 0;
    loop {
        let n = match rustix::io::read(&fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                if let Some(range) = parse_shared(&head[..head_len])? {
                    if found == out.len() {
                        return Ok(found);
                    }
                    out[found] = range;
                    found += 1;
                }
                head_len = 0;
                skipping = false;
            } else if !skipping {
                head[head_len] = b;
                head_len += 1;
                skipping = head_len == head.len();
            }
        }
    }
    if head_len != 0 {
        return Err(io::Error::other("/proc/self/maps ends mid-line"));
    }
    Ok(found)
}

/// Parses the start of a maps line, `START-END PERMS ...`: the range if
/// the mapping is shared (`s` as the fourth permission character).
fn parse_shared(line: &[u8]) -> io::Result<Option<(usize, usize)>> {
    let bad = || io::Error::other("cannot parse a line of /proc/self/maps");
    let dash = line.iter().position(|&b| b == b'-').ok_or_else(bad)?;
    let space = line.iter().position(|&b| b == b' ').ok_or_else(bad)?;
    if space <= dash || line.len() < space + 5 {
        return Err(bad());
    }
    let perms = &line[space + 1..space + 5];
    if perms[3] != b's' {
        return Ok(None);
    }
    let start = parse_hex(&line[..dash]).ok_or_else(bad)?;
    let end = parse_hex(&line[dash + 1..space]).ok_or_else(bad)?;
    if end <= start {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

fn parse_hex(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0usize, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc << 4 | v as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let shared = b"7f0000001000-7f0000002000 rw-s 00000000 00:01 1234 /dev/zero (deleted)";
        assert_eq!(
            parse_shared(shared).unwrap(),
            Some((0x7f00_0000_1000, 0x7f00_0000_2000))
        );
        let private = b"55d0c0a00000-55d0c0a21000 r-xp 00000000 fd:00 42 /usr/bin/true";
        assert_eq!(parse_shared(private).unwrap(), None);
        let read_only_shared = b"1000-2000 r--s 0 0:0 0";
        assert_eq!(
            parse_shared(read_only_shared).unwrap(),
            Some((0x1000, 0x2000))
        );
        for bad in [&b""[..], b"zz-1000 rw-s", b"2000-1000 rw-s 0", b"1000-2000"] {
            assert!(
                parse_shared(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn both_listings_agree() {
        // A shared mapping of our own, so there is something to find.
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh read-only shared mapping of one page of an open
        // file, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let mut text = [(0, 0); BATCH];
        let n = list_shared(&mut text).unwrap();
        let maps = rustix::fs::open(
            c"/proc/self/maps",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let mut query = [(0, 0); BATCH];
        match query_shared(&maps, &mut query) {
            // Other test threads may map and unmap meanwhile; ours is in both.
            Ok(m) => {
                assert!(query[..m].contains(&(p as usize, p as usize + 4096)));
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOTTY), "{e}"),
        }
        assert!(text[..n].contains(&(p as usize, p as usize + 4096)));
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(p, 4096) };
    }
}
