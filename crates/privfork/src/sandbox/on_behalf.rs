//! What `privfork run`'s supervisor does on the program's behalf, where
//! a refused call has a safe equivalent: `chmod` by path under `fattr`
//! (Landlock does not govern it and the filter cannot read the path), done
//! with the program's own file-system credentials where its unveils let it
//! write; and `/dev/null` opened for writing without `wpath`, handed over
//! as a `/dev/null` of privfork's own.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use super::Perms;
use super::call::Call;
use super::explain::Explainer;
use super::promises::Promise;
use crate::sys;

impl Explainer {
    /// Whether the supervisor does `chmod` by path for the program: under
    /// `fattr` (the filter then sends those calls to it).
    pub(crate) fn does_chmod(&self) -> bool {
        // Not under unveil: a program that narrowed its own Landlock
        // domain would still be judged by the unveils privfork knows.
        self.sandbox.promises.contains(Promise::Fattr)
            && !self.sandbox.promises.contains(Promise::Unveil)
    }

    /// The answer to `listen(fd, backlog)` refused under `accept` (without
    /// `inet` or `unix`): 0 — without doing it — when `fd` in the calling
    /// process is already a listening socket (servers such as gunicorn call
    /// `listen` again on the socket they were handed; it would only change
    /// the backlog); `None` otherwise (a refused call as any other: a
    /// socket made listening here could listen on a port nobody bound).
    /// The fd is looked at through a copy (`pidfd_getfd`), taken while the
    /// call waits.
    pub(crate) fn relisten_answer(&self, call: &Call, pidfd: Option<&OwnedFd>) -> Option<i32> {
        if call.nr != libc::SYS_listen || !self.sandbox.promises.contains(Promise::Accept) {
            return None;
        }
        let fd = call.args[0] as u32 as i32;
        let copy =
            rustix::process::pidfd_getfd(pidfd?, fd, rustix::process::PidfdGetfdFlags::empty())
                .ok()?;
        let listening = rustix::net::sockopt::socket_acceptconn(&copy);
        // Possibly the last reference by now: closed off this thread.
        super::notify::close_later(vec![copy]);
        listening.ok().filter(|&listening| listening).map(|_| 0)
    }

    /// Whether the supervisor answers the set-id calls: without `id` (the
    /// filter then sends them to it).
    pub(crate) fn does_setids(&self) -> bool {
        !self.sandbox.promises.contains(Promise::Id)
    }

    /// The answer to a set-id call ([`super::seccomp::SUPERVISED_SETIDS`])
    /// without `id`: 0 (success, nothing done) when the thread's real,
    /// effective, saved and file-system ids are all one id and every id
    /// the call names is that one or -1 (unchanged) — a call the kernel
    /// would carry out changing nothing; `EPERM` otherwise, as the soft
    /// answer of the filter has it (a process without CAP_SETUID or
    /// CAP_SETGID gets that for most changes anyway).
    pub(crate) fn setid_answer(&self, call: &Call) -> i32 {
        let Some(creds) = call.creds.as_ref() else {
            return libc::EPERM;
        };
        let (ids, named) = match call.nr {
            libc::SYS_setuid => (creds.uids, 1),
            libc::SYS_setgid => (creds.gids, 1),
            libc::SYS_setreuid => (creds.uids, 2),
            libc::SYS_setregid => (creds.gids, 2),
            libc::SYS_setresuid => (creds.uids, 3),
            libc::SYS_setresgid => (creds.gids, 3),
            _ => return libc::EPERM,
        };
        // setuid(-1) and setgid(-1): the kernel's EINVAL (no such id).
        if named == 1 && call.args[0] as u32 == u32::MAX {
            return libc::EINVAL;
        }
        let one = ids[0];
        let unchanged = ids.iter().all(|&id| id == one)
            && call.args[..named].iter().all(|&a| {
                // uid_t and gid_t are 32 bits: the kernel reads the
                // register's low half. setuid and setgid take no -1.
                let id = a as u32;
                id == one || (named > 1 && id == u32::MAX)
            });
        if unchanged { 0 } else { libc::EPERM }
    }

    /// If `call` opens `/dev/null` (that path, as written) for writing
    /// or with `O_CREAT`/`O_TRUNC` — what the promises refuse without
    /// `wpath`/`cpath`, and OpenBSD allows under any promise, as shell
    /// redirections and daemons make it — the flags privfork opens its own
    /// `/dev/null` with, to hand the program (see `exec_once`). `None` for
    /// anything else.
    pub(crate) fn dev_null_open(&self, call: &Call) -> Option<rustix::fs::OFlags> {
        use rustix::fs::OFlags;
        let flags = match call.nr {
            libc::SYS_open => call.arg_int(1),
            libc::SYS_openat => call.arg_int(2),
            libc::SYS_creat => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            _ => return None,
        };
        let (raw, _) = call.raw.as_ref()?;
        if raw.as_os_str() != "/dev/null" {
            return None;
        }
        // Flags whose meaning on a character device is plain; anything
        // else (O_EXCL, O_DIRECTORY, O_PATH, O_TMPFILE…) stays refused.
        let plain = libc::O_ACCMODE
            | libc::O_CREAT
            | libc::O_TRUNC
            | libc::O_APPEND
            | libc::O_NONBLOCK
            | libc::O_NOCTTY
            | libc::O_LARGEFILE
            | libc::O_NOFOLLOW
            | libc::O_CLOEXEC;
        if flags & !plain != 0 || flags & libc::O_ACCMODE == libc::O_ACCMODE {
            return None;
        }
        let keep = libc::O_ACCMODE | libc::O_APPEND | libc::O_NONBLOCK;
        Some(OFlags::from_bits_retain((flags & keep) as u32) | OFlags::NOCTTY)
    }

    /// Does a `chmod` by path for the program (`privfork run` under
    /// `fattr`; see docs/sandbox.md): Landlock does not govern `chmod` and
    /// the filter cannot read the path, so the supervisor does it where
    /// OpenBSD's unveil would let it happen, and nowhere else. Returns
    /// the call's result: `Ok(())`, or the errno to answer.
    ///
    /// The path is read once, from the waiting thread's memory, into
    /// privfork's own copy (the program cannot change it under privfork's
    /// feet). Everything after runs on a thread of privfork's with the
    /// program's file-system uid, gid and groups
    /// ([`sys::with_fs_creds`]), so the kernel checks search permission
    /// on each directory, ownership and the setgid rules as for the
    /// program itself: the parent directory is opened `O_PATH` from the
    /// program's cwd or dirfd with `openat2(RESOLVE_NO_MAGICLINKS)`, the
    /// last name in it without following a symlink (a symlink's target is
    /// not changed for it: `EPERM`); the file, or a directory it lies
    /// under — judged by identity (device and inode), walking `..` up
    /// from that directory, as Landlock judges — must be one the program
    /// may write (`EACCES`); a setuid or setgid bit the file does not
    /// already have is refused (`EPERM`); then the mode of that fd's file
    /// changes (`fchmodat2(AT_EMPTY_PATH)`).
    pub(crate) fn chmod_for(&self, call: &Call) -> Result<(), i32> {
        use rustix::fs::{Mode, OFlags};
        debug_assert!(self.does_chmod());
        let mode_arg = match call.nr {
            libc::SYS_chmod => 1,
            libc::SYS_fchmodat => 2,
            libc::SYS_fchmodat2 if call.args[3] == 0 => 2,
            // fchmodat2's flags (AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH): not
            // done for the program.
            _ => return Err(libc::EPERM),
        };
        // The kernel keeps only these bits of the mode.
        let mode = call.args[mode_arg] as u32 & 0o7777;
        let (Some((raw, dirfd)), Some(task), Some(creds)) = (&call.raw, &call.task, &call.creds)
        else {
            return Err(libc::EFAULT);
        };
        // The program's cwd or dirfd, as it holds it.
        let base = if raw.is_absolute() {
            None
        } else {
            let link = match dirfd {
                Some(fd) => format!("fd/{fd}"),
                None => "cwd".to_owned(),
            };
            Some(
                rustix::fs::openat(
                    &task.dir,
                    link.as_str(),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| match e {
                    rustix::io::Errno::NOENT => libc::EBADF,
                    e => e.raw_os_error(),
                })?,
            )
        };
        let raw = raw.clone();
        let writable = self.writable.clone();
        let done = sys::with_fs_creds(
            creds.fsuid,
            creds.fsgid,
            creds.groups.clone(),
            std::time::Duration::from_secs(2),
            move || chmod_as_user(base, &raw, mode, &writable),
        );
        match done {
            Ok(result) => result,
            // A hung file system, or another chmod still waiting on one.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                Err(libc::EIO)
            }
            Err(_) => Err(libc::EPERM),
        }
    }
}

/// A file's identity: device and inode.
type FileId = (u64, u64);

fn id_of(st: &rustix::fs::Stat) -> FileId {
    (st.st_dev, st.st_ino)
}

/// The unveiled paths the program may write, by identity: whether each
/// is a directory (its rule covers everything beneath) or a file.
#[derive(Debug, Clone, Default)]
pub(super) struct Writable {
    dirs: Vec<FileId>,
    files: Vec<FileId>,
}

impl Writable {
    pub(super) fn of(rules: &[(PathBuf, Perms, Perms)]) -> Self {
        let mut w = Self::default();
        for (path, kept, _) in rules {
            if !kept.write {
                continue;
            }
            let Ok(st) = rustix::fs::stat(path) else {
                continue;
            };
            if rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() {
                w.dirs.push(id_of(&st));
            } else {
                w.files.push(id_of(&st));
            }
        }
        w
    }
}

/// [`Explainer::chmod_for`]'s work, on the thread with the program's
/// file-system credentials.
fn chmod_as_user(
    base: Option<OwnedFd>,
    raw: &Path,
    mode: u32,
    writable: &Writable,
) -> Result<(), i32> {
    use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
    let errno = |e: rustix::io::Errno| e.raw_os_error();
    let at = |dir: Option<BorrowedFd<'_>>, path: &Path, flags: OFlags| {
        rustix::fs::openat2(
            dir.unwrap_or(rustix::fs::CWD),
            path,
            flags | OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(errno)
    };
    // The directory the last name is in, and that name.
    let last = raw.file_name().filter(|_| {
        !matches!(
            raw.components().next_back(),
            Some(Component::CurDir | Component::ParentDir | Component::RootDir)
        )
    });
    let (dir, file) = match last {
        Some(name) => {
            let parent = raw.parent().filter(|p| !p.as_os_str().is_empty());
            let dir = at(
                base.as_ref().map(AsFd::as_fd),
                parent.unwrap_or(Path::new(".")),
                OFlags::DIRECTORY,
            )?;
            let file = at(Some(dir.as_fd()), Path::new(name), OFlags::NOFOLLOW)?;
            (dir, file)
        }
        // ".", "..", "/": the directory itself.
        None => {
            let dir = at(base.as_ref().map(AsFd::as_fd), raw, OFlags::DIRECTORY)?;
            let file = rustix::io::dup(&dir).map_err(errno)?;
            (dir, file)
        }
    };
    let st = rustix::fs::fstat(&file).map_err(errno)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        return Err(libc::EPERM);
    }
    if mode & (libc::S_ISUID | libc::S_ISGID) & !st.st_mode != 0 {
        return Err(libc::EPERM);
    }
    if !writable.files.contains(&id_of(&st)) && !under_writable(dir, &writable.dirs)? {
        return Err(libc::EACCES);
    }
    sys::chmod_fd(file.as_fd(), mode).map_err(|e| e.raw_os_error().unwrap_or(libc::EPERM))
}

/// Whether directory `dir` or one above it is one of `dirs` (walking
/// `..` up to the root, as Landlock walks a path).
fn under_writable(dir: OwnedFd, dirs: &[FileId]) -> Result<bool, i32> {
    use rustix::fs::{Mode, OFlags};
    let mut cur = dir;
    for _ in 0..4096 {
        let here = id_of(&rustix::fs::fstat(&cur).map_err(|e| e.raw_os_error())?);
        if dirs.contains(&here) {
            return Ok(true);
        }
        let up = rustix::fs::openat(
            &cur,
            "..",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|_| libc::EACCES)?;
        if id_of(&rustix::fs::fstat(&up).map_err(|e| e.raw_os_error())?) == here {
            return Ok(false); // the root
        }
        cur = up;
    }
    Ok(false)
}
