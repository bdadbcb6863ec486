//! The note store: one file per note in one data directory, written
//! atomically and durably.
//!
//! Every operation is relative to one directory fd (`*at()` calls), so the
//! store works the same before and after Landlock unveils only that
//! directory, and never resolves a path outside it. A note lives in
//! `<32 hex>.note`; it is first written to `.tmp-<id>-<random>`, flushed,
//! and renamed into place, so a reader sees a whole note or none.
//!
//! File format: one header line `notes-v1 <created_ms>\n`, then the text
//! (UTF-8).
//!
//! Syscalls used, by promise: `stdio` (read, write, fstat, fsync, close),
//! `rpath` (openat read-only, getdents64, newfstatat, faccessat2, fcntl
//! F_GETFL), `cpath` (openat O_CREAT, renameat2, unlinkat), `flock`, and
//! getrandom for ids.

#![forbid(unsafe_code)]

use std::error::Error;
use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{
    Access, AtFlags, Dir, FileType, FlockOperation, Mode, OFlags, RenameFlags, Stat, accessat,
    fcntl_getfl, flock, fstat, fsync, openat, renameat, renameat_with, statat, unlinkat,
};
use rustix::io::Errno;

/// The largest note text [`Store::create`] accepts, in bytes.
pub const MAX_NOTE_TEXT: usize = 1 << 20;

/// The largest note file [`Store::get`] reads, in bytes: a note of
/// [`MAX_NOTE_TEXT`] plus its header fits with room to spare; anything
/// bigger was not written by this store and is refused before reading.
pub const MAX_NOTE_FILE: u64 = 2 << 20;

/// How much of a note [`Store::list`] reads to find its title.
const HEAD_BYTES: u64 = 4096;

/// The most chars of a title.
pub const TITLE_MAX_CHARS: usize = 80;

const MAGIC: &[u8] = b"notes-v1 ";
const NOTE_SUFFIX: &str = ".note";
const TEMP_PREFIX: &str = ".tmp-";
/// How long an unlocked temp file is left alone after its last write, in
/// seconds (see [`Store::remove_stale_temps`]).
pub const STALE_TEMP_SECS: u64 = 60;

/// How often `create` starts over when a cleaner removed its fresh temp
/// file before it could lock it (see [`Store::remove_stale_temps`]).
const TEMP_ATTEMPTS: usize = 3;

/// A note's name: 128 random bits, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NoteId([u8; 16]);

/// A string that is not a [`NoteId`] (not exactly 32 chars of `[0-9a-f]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadId;

impl fmt::Display for BadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a note id (32 lowercase hex digits)")
    }
}

impl Error for BadId {}

impl NoteId {
    /// Makes a fresh id from 128 bits of the OS's randomness (`getrandom(2)`).
    ///
    /// # Errors
    ///
    /// The OS had no randomness to give (`getrandom` failed).
    pub fn new() -> io::Result<NoteId> {
        let mut bytes = [0; 16];
        random_fill(&mut bytes)?;
        Ok(NoteId(bytes))
    }

    /// Parses the 32-lowercase-hex-digit form [`Display`](fmt::Display)
    /// writes. Anything else — other lengths, uppercase, `.`, `/`, `%`,
    /// non-ASCII — is refused, so a parsed id is always a safe file name.
    ///
    /// # Errors
    ///
    /// [`BadId`] for any other string.
    pub fn parse(s: &str) -> Result<NoteId, BadId> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return Err(BadId);
        }
        let mut bytes = [0; 16];
        for (byte, pair) in bytes.iter_mut().zip(s.chunks_exact(2)) {
            *byte = (hex_digit(pair[0]).ok_or(BadId)? << 4) | hex_digit(pair[1]).ok_or(BadId)?;
        }
        Ok(NoteId(bytes))
    }

    /// The file name of this note in the data directory.
    fn file_name(&self) -> String {
        format!("{self}{NOTE_SUFFIX}")
    }

    /// The id a directory entry name holds, if it is `<id>.note`.
    fn from_file_name(name: &[u8]) -> Option<NoteId> {
        let stem = name.strip_suffix(NOTE_SUFFIX.as_bytes())?;
        NoteId::parse(std::str::from_utf8(stem).ok()?).ok()
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for NoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteId({self})")
    }
}

impl FromStr for NoteId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<NoteId, BadId> {
        NoteId::parse(s)
    }
}

/// A whole note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub id: NoteId,
    pub text: String,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created: u64,
}

/// What a listing shows of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteMeta {
    pub id: NoteId,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created: u64,
    /// The first non-empty line, trimmed, cut to [`TITLE_MAX_CHARS`] chars.
    pub title: String,
}

/// The data directory: notes are files in it, reached only through its fd.
#[derive(Debug)]
pub struct Store {
    /// Opened `O_DIRECTORY` without `O_PATH`: `fsync` needs a real fd.
    dir: OwnedFd,
}

impl Store {
    /// Opens the data directory `dir` (`O_RDONLY|O_DIRECTORY|O_CLOEXEC`).
    ///
    /// # Errors
    ///
    /// `open(2)` failed, or `dir` is not a directory.
    pub fn open(dir: &Path) -> io::Result<Store> {
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| context(e, format!("opening data directory {}", dir.display())))?;
        Store::from_fd(fd)
    }

    /// Takes a data directory fd someone else opened (the root main, say).
    ///
    /// # Errors
    ///
    /// `fd` is not a directory (`ENOTDIR`), or was opened `O_PATH`, which
    /// `fsync` and `getdents` refuse (`InvalidInput`).
    pub fn from_fd(fd: OwnedFd) -> io::Result<Store> {
        check_dir_fd(&fd)?;
        Ok(Store { dir: fd })
    }

    /// Stores `text` as a new note and returns it once it is on disk.
    ///
    /// The steps, in this order: a new id; `openat` of the temp file
    /// `.tmp-<id>-<random>` (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600);
    /// `flock(LOCK_EX)` on it, held until the rename is done, which tells
    /// [`remove_stale_temps`](Store::remove_stale_temps) a writer is alive;
    /// a check the name is still this file (a cleaner may have removed it
    /// between open and lock; then it starts over); write header and text;
    /// `fsync` the file; `renameat2(RENAME_NOREPLACE)` to `<id>.note`;
    /// `fsync` the directory. On an error before the rename the temp file
    /// is unlinked; if the directory `fsync` fails the note is unlinked
    /// again, so `Ok` means "stored" and an error means "not stored".
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `text` is over [`MAX_NOTE_TEXT`]; any failing
    /// syscall, with the step and id in the message.
    pub fn create(&self, text: &str) -> io::Result<Note> {
        if text.len() > MAX_NOTE_TEXT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "note text of {} bytes is over the limit of {MAX_NOTE_TEXT}",
                    text.len()
                ),
            ));
        }
        let note = Note {
            id: NoteId::new()?,
            text: text.to_owned(),
            created: now_ms(),
        };
        self.write_note(&note)?;
        Ok(note)
    }

    /// The write path of [`create`](Store::create) for a given note (tests
    /// use it to force an id collision).
    fn write_note(&self, note: &Note) -> io::Result<()> {
        self.write_note_with(note, |_| {})
    }

    /// [`write_note`](Store::write_note), calling `before_lock` with the
    /// temp file's name between its creation and its lock (tests run a
    /// cleaner there).
    fn write_note_with(&self, note: &Note, before_lock: impl FnMut(&str)) -> io::Result<()> {
        let id = &note.id;
        let (temp, mut file) = self.locked_temp(id, before_lock)?;
        let written = (|| {
            file.write_all(format!("notes-v1 {}\n", note.created).as_bytes())
                .and_then(|()| file.write_all(note.text.as_bytes()))
                .map_err(|e| context(e, format!("writing note {id}")))?;
            fsync(&file).map_err(|e| context(e, format!("fsync of note {id}")))?;
            self.rename_into_place(&temp, id)
        })();
        if let Err(e) = written {
            let _ = unlinkat(&self.dir, &temp, AtFlags::empty());
            return Err(e);
        }
        if let Err(e) = fsync(&self.dir) {
            // The note may or may not survive a crash: take it back, so the
            // caller's "not stored" holds and a retry makes no twin.
            let _ = unlinkat(&self.dir, id.file_name(), AtFlags::empty());
            return Err(context(
                e,
                format!("fsync of the data directory after storing note {id}"),
            ));
        }
        drop(file); // releases the lock only now
        Ok(())
    }

    /// Creates and locks a fresh temp file for note `id`, and returns its
    /// name and the file.
    fn locked_temp(
        &self,
        id: &NoteId,
        mut before_lock: impl FnMut(&str),
    ) -> io::Result<(String, File)> {
        for _ in 0..TEMP_ATTEMPTS {
            let mut suffix = [0; 8];
            random_fill(&mut suffix)?;
            let temp = format!("{TEMP_PREFIX}{id}-{}", hex(&suffix));
            let fd = openat(
                &self.dir,
                &temp,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| context(e, format!("creating temp file for note {id}")))?;
            before_lock(&temp);
            let locked = flock(&fd, FlockOperation::LockExclusive)
                .map_err(|e| context(e, format!("locking temp file for note {id}")))
                .and_then(|()| self.still_named(&fd, &temp));
            match locked {
                Ok(true) => return Ok((temp, File::from(fd))),
                // A cleaner took the lock first and unlinked the name.
                Ok(false) => continue,
                Err(e) => {
                    let _ = unlinkat(&self.dir, &temp, AtFlags::empty());
                    return Err(e);
                }
            }
        }
        Err(io::Error::other(format!(
            "temp file for note {id} was removed {TEMP_ATTEMPTS} times before it could be locked"
        )))
    }

    /// Whether `name` in the data directory is still the file `fd` is open
    /// on (same device and inode, not followed if a symlink).
    fn still_named(&self, fd: &OwnedFd, name: &str) -> io::Result<bool> {
        let open = fstat(fd).map_err(|e| context(e, format!("fstat of {name}")))?;
        match statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(named) => Ok(same_file(&open, &named)),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(context(e, format!("stat of {name}"))),
        }
    }

    /// `renameat2(temp, <id>.note, RENAME_NOREPLACE)`; plain `renameat`
    /// where the file system lacks the flag (`EINVAL`) or the kernel or a
    /// filter lacks the call (`ENOSYS`): an id collision needs 128 random
    /// bits to repeat, so the flag is a second guard, not the only one.
    fn rename_into_place(&self, temp: &str, id: &NoteId) -> io::Result<()> {
        let name = id.file_name();
        let renamed = match renameat_with(&self.dir, temp, &self.dir, &name, RenameFlags::NOREPLACE)
        {
            Err(Errno::INVAL | Errno::NOSYS) => renameat(&self.dir, temp, &self.dir, &name),
            other => other,
        };
        renamed.map_err(|e| context(e, format!("renaming temp file to {name}")))
    }

    /// Reads note `id`: `Ok(None)` if there is none.
    ///
    /// Opens `O_NOFOLLOW|O_NONBLOCK` (a symlink or FIFO planted under the
    /// name is refused, not followed or waited on), requires a regular file
    /// of at most [`MAX_NOTE_FILE`] bytes, a valid header and UTF-8 text.
    ///
    /// # Errors
    ///
    /// `InvalidData` naming the id if the file is anything but a well-formed
    /// note; any failing syscall otherwise.
    pub fn get(&self, id: &NoteId) -> io::Result<Option<Note>> {
        let Some((file, size)) = self.open_note(id)? else {
            return Ok(None);
        };
        if size > MAX_NOTE_FILE {
            return Err(corrupt(
                id,
                format!("file of {size} bytes is over the limit"),
            ));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // One byte past the limit tells a file that grew after the fstat.
        file.take(MAX_NOTE_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| context(e, format!("reading note {id}")))?;
        if bytes.len() as u64 > MAX_NOTE_FILE {
            return Err(corrupt(id, "file is over the size limit".into()));
        }
        let (created, body) =
            parse_header(&bytes).ok_or_else(|| corrupt(id, "bad header".into()))?;
        let text = std::str::from_utf8(body)
            .map_err(|e| corrupt(id, format!("text is not UTF-8: {e}")))?
            .to_owned();
        Ok(Some(Note {
            id: *id,
            text,
            created,
        }))
    }

    /// Opens `<id>.note` for reading and returns it with its size: `None`
    /// if absent, an `InvalidData` error if it is a symlink or not a regular
    /// file.
    fn open_note(&self, id: &NoteId) -> io::Result<Option<(File, u64)>> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
        let fd = match openat(&self.dir, id.file_name(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err(corrupt(id, "is a symbolic link".into())),
            Err(e) => return Err(context(e, format!("opening note {id}"))),
        };
        let stat = fstat(&fd).map_err(|e| context(e, format!("fstat of note {id}")))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(corrupt(id, "is not a regular file".into()));
        }
        Ok(Some((
            File::from(fd),
            u64::try_from(stat.st_size).unwrap_or(0),
        )))
    }

    /// Deletes note `id`: `unlinkat`, then `fsync` of the directory.
    /// Returns whether there was one.
    ///
    /// # Errors
    ///
    /// `unlinkat` failed other than with `ENOENT`, or the `fsync` failed.
    pub fn delete(&self, id: &NoteId) -> io::Result<bool> {
        match unlinkat(&self.dir, id.file_name(), AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(context(e, format!("deleting note {id}"))),
        }
        fsync(&self.dir).map_err(|e| {
            context(
                e,
                format!("fsync of the data directory after deleting note {id}"),
            )
        })?;
        Ok(true)
    }

    /// Lists notes newest first (`created` descending, then id ascending),
    /// skipping `offset` and returning at most `limit`, with the total count.
    ///
    /// Reads the first 4 KiB of each note for its title: a title whose line
    /// starts near the end of those 4 KiB is cut short. Files under a note
    /// name that are not well-formed notes (see [`get`](Store::get)) are
    /// left out, as are notes deleted while listing, so one bad file does
    /// not hide the others.
    ///
    /// # Errors
    ///
    /// Reading the directory or opening a note failed (other than the
    /// note being gone or malformed).
    pub fn list(&self, offset: usize, limit: usize) -> io::Result<(Vec<NoteMeta>, usize)> {
        let mut metas = Vec::new();
        for id in self.note_ids()? {
            match self.read_meta(&id) {
                Ok(Some(meta)) => metas.push(meta),
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {}
                Err(e) => return Err(e),
            }
        }
        metas.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        let total = metas.len();
        let page = metas.into_iter().skip(offset).take(limit).collect();
        Ok((page, total))
    }

    /// The ids of all `<id>.note` entries in the directory.
    fn note_ids(&self) -> io::Result<Vec<NoteId>> {
        let mut ids = Vec::new();
        self.for_each_name(|name| {
            if let Some(id) = NoteId::from_file_name(name) {
                ids.push(id);
            }
        })?;
        Ok(ids)
    }

    /// Calls `f` with each entry name of the data directory. Reads through
    /// a fresh open of `.` (`Dir::read_from`), not a dup: a dup shares the
    /// directory offset with every other thread's listing.
    fn for_each_name(&self, mut f: impl FnMut(&[u8])) -> io::Result<()> {
        let mut dir = Dir::read_from(&self.dir)
            .map_err(|e| context(e, "opening data directory for reading".into()))?;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| context(e, "reading data directory".into()))?;
            f(entry.file_name().to_bytes());
        }
        Ok(())
    }

    /// The header and title of note `id`, from its first [`HEAD_BYTES`].
    fn read_meta(&self, id: &NoteId) -> io::Result<Option<NoteMeta>> {
        let Some((file, _)) = self.open_note(id)? else {
            return Ok(None);
        };
        let mut head = Vec::new();
        file.take(HEAD_BYTES)
            .read_to_end(&mut head)
            .map_err(|e| context(e, format!("reading note {id}")))?;
        let (created, body) =
            parse_header(&head).ok_or_else(|| corrupt(id, "bad header".into()))?;
        let text = match std::str::from_utf8(body) {
            Ok(text) => text,
            // Cut mid-char at the end of the head: keep what is whole.
            Err(e) if e.error_len().is_none() && head.len() as u64 == HEAD_BYTES => {
                std::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or_default()
            }
            Err(e) => return Err(corrupt(id, format!("text is not UTF-8: {e}"))),
        };
        Ok(Some(NoteMeta {
            id: *id,
            created,
            title: title_of(text),
        }))
    }

    /// Removes temp files that no live writer holds, and returns how many.
    ///
    /// A writer holds `flock(LOCK_EX)` on its temp file from creation until
    /// the rename. A lock belongs to the open file description, and the
    /// kernel drops it when the last fd to it closes — also when the writer
    /// crashes or is killed. So for each `.tmp-*` entry this opens the file
    /// (`O_NOFOLLOW|O_NONBLOCK`) and tries `flock(LOCK_EX|LOCK_NB)`:
    ///
    /// - it succeeds: no process has the file open with a lock, the writer
    ///   is gone, and the file is unlinked (if the name still refers to the
    ///   file locked, which a rename in between would change);
    /// - `EWOULDBLOCK`: a live writer — perhaps the previous generation's
    ///   worker finishing a request during a restart — owns it; it is left.
    ///
    /// The lock cannot cover the moment between the writer's `openat`
    /// creating the file and its `flock`: a sweep then sees an unlocked
    /// file of a live writer. So files modified in the last
    /// [`STALE_TEMP_SECS`] are left too (a crashed writer's file goes at a
    /// later sweep), and a writer checks after locking that the name is
    /// still its file, and starts over if a sweep removed it anyway (see
    /// [`create`](Store::create)). A sweep never costs a note, at worst a
    /// failed `create` if it hits the same writer three times in a row.
    /// Entries that are not regular files, or vanish meanwhile, are left.
    ///
    /// # Errors
    ///
    /// Reading the directory, or opening, locking or unlinking a temp file
    /// failed unexpectedly.
    pub fn remove_stale_temps(&self) -> io::Result<usize> {
        self.remove_temps_older_than(STALE_TEMP_SECS)
    }

    /// [`remove_stale_temps`](Store::remove_stale_temps) with a grace of
    /// `grace_secs` since the last write.
    fn remove_temps_older_than(&self, grace_secs: u64) -> io::Result<usize> {
        let now_secs = now_ms() / 1000;
        let mut temps = Vec::new();
        self.for_each_name(|name| {
            if name.starts_with(TEMP_PREFIX.as_bytes()) {
                temps.push(CString::new(name).expect("directory entry names have no NUL"));
            }
        })?;
        let mut removed = 0;
        for temp in temps {
            let shown = temp.to_string_lossy();
            let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
            let fd = match openat(&self.dir, &temp, flags, Mode::empty()) {
                Ok(fd) => fd,
                // Gone meanwhile; a symlink or socket is not a temp of ours.
                Err(Errno::NOENT | Errno::LOOP | Errno::NXIO) => continue,
                Err(e) => return Err(context(e, format!("opening temp file {shown}"))),
            };
            let stat = fstat(&fd).map_err(|e| context(e, format!("fstat of {shown}")))?;
            if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                continue;
            }
            // A clock set back makes files look young: kept, the safe side.
            let modified = u64::try_from(stat.st_mtime).unwrap_or(0);
            if now_secs.saturating_sub(modified) < grace_secs {
                continue;
            }
            match flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) => continue,
                Err(e) => return Err(context(e, format!("locking temp file {shown}"))),
            }
            match statat(&self.dir, &temp, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(named) if same_file(&stat, &named) => {}
                Ok(_) | Err(Errno::NOENT) => continue,
                Err(e) => return Err(context(e, format!("stat of {shown}"))),
            }
            match unlinkat(&self.dir, &temp, AtFlags::empty()) {
                Ok(()) => removed += 1,
                Err(Errno::NOENT) => {}
                Err(e) => return Err(context(e, format!("removing temp file {shown}"))),
            }
        }
        if removed > 0 {
            fsync(&self.dir).map_err(|e| context(e, "fsync of the data directory".into()))?;
        }
        Ok(removed)
    }

    /// Checks, changing nothing, that the data directory can serve: it is a
    /// directory fd that is not `O_PATH`, the process may search, read and
    /// write it (`faccessat2(".", R_OK|W_OK|X_OK, AT_EACCESS)`: permission
    /// bits, ACLs and a read-only mount), and its entries can be read. For
    /// `notes --check`: it creates and deletes nothing.
    ///
    /// Landlock does not take part in `faccessat`, so this cannot see a
    /// Landlock ruleset that forbids creating files here.
    ///
    /// # Errors
    ///
    /// Which of those failed, with the errno.
    pub fn check(&self) -> io::Result<()> {
        check_dir_fd(&self.dir)?;
        accessat(
            &self.dir,
            ".",
            Access::READ_OK | Access::WRITE_OK | Access::EXEC_OK,
            AtFlags::EACCESS,
        )
        .map_err(|e| {
            context(
                e,
                "data directory is not readable, writable and searchable".into(),
            )
        })?;
        self.for_each_name(|_| {})
    }
}

/// Requires `fd` to be a directory, not opened `O_PATH`.
fn check_dir_fd(fd: &impl AsFd) -> io::Result<()> {
    let stat = fstat(fd).map_err(|e| context(e, "fstat of the data directory".into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return Err(context(Errno::NOTDIR, "the data directory fd".into()));
    }
    let flags = fcntl_getfl(fd).map_err(|e| context(e, "F_GETFL of the data directory".into()))?;
    if flags.contains(OFlags::PATH) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the data directory fd is O_PATH: fsync and reading entries need a real fd",
        ));
    }
    Ok(())
}

/// Splits a note file into its creation time and text bytes, if its first
/// line is a well-formed header.
fn parse_header(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let rest = bytes.strip_prefix(MAGIC)?;
    // u64::MAX has 20 digits.
    let newline = rest.iter().take(21).position(|&b| b == b'\n')?;
    let digits = &rest[..newline];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let created = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((created, &rest[newline + 1..]))
}

/// The first non-empty line of `text`, trimmed, at most
/// [`TITLE_MAX_CHARS`] chars.
fn title_of(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(|line| line.chars().take(TITLE_MAX_CHARS).collect())
        .unwrap_or_default()
}

fn same_file(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_fill(bytes: &mut [u8]) -> io::Result<()> {
    getrandom::fill(bytes).map_err(|e| io::Error::other(format!("getrandom: {e}")))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An error saying what failed, keeping the kind and the cause.
#[derive(Debug)]
struct Context {
    what: String,
    source: io::Error,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl Error for Context {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

fn context(e: impl Into<io::Error>, what: String) -> io::Error {
    let source = e.into();
    io::Error::new(source.kind(), Context { what, source })
}

fn corrupt(id: &NoteId, why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("note {id} is corrupt: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "notes-store-test-{}-{}-{name}",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir(&path).unwrap();
            TempDir(path)
        }

        fn store(&self) -> Store {
            Store::open(&self.0).unwrap()
        }

        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }

        fn note_path(&self, id: &NoteId) -> PathBuf {
            self.0.join(id.file_name())
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn id(n: u8) -> NoteId {
        NoteId([n; 16])
    }

    /// Writes a note file by hand, as the store would.
    fn plant(dir: &TempDir, id: &NoteId, created: u64, text: &str) {
        std::fs::write(dir.note_path(id), format!("notes-v1 {created}\n{text}")).unwrap();
    }

    #[test]
    fn round_trip() {
        let dir = TempDir::new("round-trip");
        let store = dir.store();
        let text = "# Title\n\nbody with ünïcödé\nand a \0 NUL";
        let note = store.create(text).unwrap();
        assert_eq!(note.text, text);
        assert!(
            note.created > 1_600_000_000_000,
            "created in ms: {}",
            note.created
        );
        assert_eq!(store.get(&note.id).unwrap(), Some(note.clone()));
        assert_eq!(
            dir.names(),
            vec![format!("{}.note", note.id)],
            "no temp left"
        );
        let raw = std::fs::read(dir.note_path(&note.id)).unwrap();
        assert_eq!(raw, format!("notes-v1 {}\n{text}", note.created).as_bytes());
        // A new Store on the same directory sees it too.
        assert_eq!(dir.store().get(&note.id).unwrap(), Some(note));
    }

    #[test]
    fn empty_note_round_trips() {
        let dir = TempDir::new("empty");
        let store = dir.store();
        let note = store.create("").unwrap();
        assert_eq!(store.get(&note.id).unwrap().unwrap().text, "");
        assert_eq!(store.list(0, 10).unwrap().0[0].title, "");
    }

    #[test]
    fn get_absent_is_none() {
        let dir = TempDir::new("absent");
        assert_eq!(dir.store().get(&id(7)).unwrap(), None);
    }

    #[test]
    fn ids_are_unique_over_10k() {
        let ids: HashSet<NoteId> = (0..10_000).map(|_| NoteId::new().unwrap()).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn id_display_parses_back() {
        for _ in 0..100 {
            let id = NoteId::new().unwrap();
            let shown = id.to_string();
            assert_eq!(shown.len(), 32);
            assert!(
                shown
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert_eq!(NoteId::parse(&shown), Ok(id));
            assert_eq!(shown.parse::<NoteId>(), Ok(id));
        }
        assert_eq!(
            NoteId::parse("000102030405060708090a0b0c0d0eff").unwrap().0,
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 255]
        );
    }

    #[test]
    fn parse_rejects_bad_forms() {
        let good = "0123456789abcdef0123456789abcdef";
        assert!(NoteId::parse(good).is_ok());
        let bad = [
            "",
            "..",
            "../../etc/passwd",
            "/",
            "0123456789abcdef0123456789abcde",   // 31
            "0123456789abcdef0123456789abcdef0", // 33
            "0123456789ABCDEF0123456789ABCDEF",  // uppercase
            "0123456789abcdef0123456789abcdeF",
            "0123456789abcdef0123456789abcde/",
            "/123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abc%2f", // %2f
            "..23456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcd\0f",
            " 123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef\n",
            "+123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdé", // 32 bytes, non-ASCII
            "０123456789abcdef0123456789abcd", // fullwidth digit
            ".tmp-0123456789abcdef0123456789abcdef-0011223344556677",
            "0123456789abcdef0123456789abcdef.note",
        ];
        for s in bad {
            assert_eq!(NoteId::parse(s), Err(BadId), "{s:?} parsed");
        }
        // Temp names never look like a note file name.
        assert_eq!(
            NoteId::from_file_name(b".tmp-0123456789abcdef0123456789abcdef-0011223344556677"),
            None
        );
        assert!(NoteId::from_file_name(format!("{good}.note").as_bytes()).is_some());
        assert!(NoteId::from_file_name(good.as_bytes()).is_none());
    }

    #[test]
    fn list_is_newest_first_paginated_with_total() {
        let dir = TempDir::new("list");
        let store = dir.store();
        plant(&dir, &id(1), 100, "old");
        plant(&dir, &id(2), 300, "\n  \n   newest  \nsecond line");
        plant(&dir, &id(4), 200, "tie b");
        plant(&dir, &id(3), 200, "tie a");
        // Not notes: ignored.
        std::fs::write(dir.0.join("README"), "x").unwrap();
        std::fs::write(dir.0.join(format!("{}.note~", id(5))), "notes-v1 1\nx").unwrap();
        std::fs::write(dir.0.join(format!(".tmp-{}-00", id(6))), "notes-v1 1\nx").unwrap();

        let (all, total) = store.list(0, 100).unwrap();
        assert_eq!(total, 4);
        let order: Vec<(NoteId, u64, &str)> = all
            .iter()
            .map(|m| (m.id, m.created, m.title.as_str()))
            .collect();
        assert_eq!(
            order,
            vec![
                (id(2), 300, "newest"),
                (id(3), 200, "tie a"),
                (id(4), 200, "tie b"),
                (id(1), 100, "old"),
            ]
        );
        let (page, total) = store.list(1, 2).unwrap();
        assert_eq!(total, 4);
        assert_eq!(
            page.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![id(3), id(4)]
        );
        let (page, total) = store.list(3, 2).unwrap();
        assert_eq!((page.len(), page[0].id, total), (1, id(1), 4));
        let (page, total) = store.list(10, 2).unwrap();
        assert_eq!((page.len(), total), (0, 4));
        let (page, total) = store.list(0, 0).unwrap();
        assert_eq!((page.len(), total), (0, 4));
    }

    #[test]
    fn list_of_created_notes_matches_get() {
        let dir = TempDir::new("list-created");
        let store = dir.store();
        let a = store.create("first").unwrap();
        let b = store.create("second").unwrap();
        let (all, total) = store.list(0, 10).unwrap();
        assert_eq!(total, 2);
        let mut ids: Vec<NoteId> = all.iter().map(|m| m.id).collect();
        ids.sort();
        let mut want = vec![a.id, b.id];
        want.sort();
        assert_eq!(ids, want);
        for meta in all {
            let note = store.get(&meta.id).unwrap().unwrap();
            assert_eq!(meta.created, note.created);
            assert_eq!(meta.title, note.text);
        }
    }

    #[test]
    fn titles_are_cut_at_80_chars_on_char_boundaries() {
        assert_eq!(title_of(&"é".repeat(200)), "é".repeat(80));
        assert_eq!(title_of(&"🦀".repeat(81)), "🦀".repeat(80));
        assert_eq!(title_of("\r\n\t \r\n  hi there \r\nnext"), "hi there");
        assert_eq!(title_of(" \n\n "), "");

        // Through the store, with a multi-byte char straddling the 4 KiB head.
        let dir = TempDir::new("titles");
        let store = dir.store();
        let text = format!("{}{}", "\n".repeat(4096 - 11 - 1), "é".repeat(100));
        plant(&dir, &id(1), 1, &text);
        let (list, _) = store.list(0, 1).unwrap();
        assert_eq!(list[0].title, "");
        // 4096 - 11 - 4000 = 85 bytes of é: 42 whole chars, then half of one.
        let text = format!("{}{}", "\n".repeat(4000), "é".repeat(100));
        plant(&dir, &id(1), 1, &text);
        let (list, _) = store.list(0, 1).unwrap();
        assert_eq!(list[0].title, "é".repeat(42), "cut short, as documented");
        assert_eq!(store.get(&id(1)).unwrap().unwrap().text, text);
        let text = format!("{}{}", "\n".repeat(3000), "é".repeat(100));
        plant(&dir, &id(1), 1, &text);
        let (list, _) = store.list(0, 1).unwrap();
        assert_eq!(list[0].title, "é".repeat(80));
    }

    #[test]
    fn delete_removes_and_reports() {
        let dir = TempDir::new("delete");
        let store = dir.store();
        let keep = store.create("keep").unwrap();
        let gone = store.create("gone").unwrap();
        assert!(store.delete(&gone.id).unwrap());
        assert_eq!(store.get(&gone.id).unwrap(), None);
        assert!(!store.delete(&gone.id).unwrap());
        assert_eq!(store.get(&keep.id).unwrap(), Some(keep.clone()));
        assert_eq!(dir.names(), vec![format!("{}.note", keep.id)]);
        assert_eq!(store.list(0, 10).unwrap().1, 1);
    }

    #[test]
    fn corrupt_files_are_invalid_data_naming_the_id() {
        let dir = TempDir::new("corrupt");
        let store = dir.store();
        let n = id(0xab);
        let cases: &[&[u8]] = &[
            b"",
            b"hello",
            b"notes-v2 1\ntext",
            b"notes-v1 \ntext",
            b"notes-v1 12x\ntext",
            b"notes-v1 -1\ntext",
            b"notes-v1 +1\ntext",
            b"notes-v1 1 \ntext",
            b"notes-v1 99999999999999999999\ntext", // over u64::MAX
            b"notes-v1 1",                          // no newline
            b"notes-v1 1\n\xff\xfe",
            b"notes-v1 1\nok then \xc3",
        ];
        for &bytes in cases {
            std::fs::write(dir.note_path(&n), bytes).unwrap();
            let err = store.get(&n).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bytes:?}: {err}");
            assert!(err.to_string().contains(&n.to_string()), "{err}");
            // A listing leaves it out rather than failing.
            assert_eq!(store.list(0, 10).unwrap().1, 0, "{bytes:?}");
        }
        // The largest u64 is fine.
        std::fs::write(dir.note_path(&n), b"notes-v1 18446744073709551615\nx").unwrap();
        assert_eq!(store.get(&n).unwrap().unwrap().created, u64::MAX);
    }

    #[test]
    fn oversized_file_is_refused_without_reading() {
        let dir = TempDir::new("oversized");
        let store = dir.store();
        let n = id(1);
        let file = File::create(dir.note_path(&n)).unwrap();
        (&file).write_all(b"notes-v1 1\n").unwrap();
        file.set_len(MAX_NOTE_FILE + 1).unwrap(); // sparse
        let err = store.get(&n).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        file.set_len(MAX_NOTE_FILE).unwrap();
        // At the limit it is read (NULs are valid UTF-8).
        assert_eq!(
            store.get(&n).unwrap().unwrap().text.len() as u64,
            MAX_NOTE_FILE - 11
        );
    }

    #[test]
    fn non_regular_files_are_refused() {
        let dir = TempDir::new("non-regular");
        let store = dir.store();
        let n = id(2);
        std::fs::create_dir(dir.note_path(&n)).unwrap();
        assert_eq!(
            store.get(&n).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        std::fs::remove_dir(dir.note_path(&n)).unwrap();
        // A FIFO: O_NONBLOCK keeps the open from waiting for a writer.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.note_path(&n),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert_eq!(
            store.get(&n).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(store.list(0, 10).unwrap().1, 0);
    }

    #[test]
    fn symlinked_note_is_not_followed() {
        let dir = TempDir::new("symlink");
        let outside = TempDir::new("symlink-outside");
        let secret = outside.0.join("secret");
        std::fs::write(&secret, "notes-v1 1\nTOP SECRET").unwrap();
        let n = id(3);
        symlink(&secret, dir.note_path(&n)).unwrap();
        let store = dir.store();
        let err = store.get(&n).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(!err.to_string().contains("SECRET"));
        let (list, total) = store.list(0, 10).unwrap();
        assert_eq!((list.len(), total), (0, 0));
        // delete removes the link, not its target.
        assert!(store.delete(&n).unwrap());
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "notes-v1 1\nTOP SECRET"
        );
    }

    /// Writes a temp file last modified `age_secs` ago.
    fn plant_temp(dir: &TempDir, name: &str, age_secs: u64) {
        let file = File::create(dir.0.join(name)).unwrap();
        (&file).write_all(b"notes-v1 1\nhalf written").unwrap();
        let then = SystemTime::now() - std::time::Duration::from_secs(age_secs);
        file.set_modified(then).unwrap();
    }

    #[test]
    fn stale_temp_is_removed_and_locked_temp_kept() {
        let dir = TempDir::new("stale");
        let store = dir.store();
        let note = store.create("real note").unwrap();
        let old = STALE_TEMP_SECS + 10;
        let stale = format!(".tmp-{}-0000000000000000", id(1));
        let live = format!(".tmp-{}-1111111111111111", id(2));
        let fresh = format!(".tmp-{}-3333333333333333", id(4));
        plant_temp(&dir, &stale, old);
        plant_temp(&dir, &live, old);
        plant_temp(&dir, &fresh, 0);
        // A live writer: its own open file description holds the lock.
        let writer = File::open(dir.0.join(&live)).unwrap();
        flock(&writer, FlockOperation::LockExclusive).unwrap();
        // A symlink under a temp name is not followed, nor removed.
        let target = dir.0.join("target");
        std::fs::write(&target, "keep me").unwrap();
        symlink(&target, dir.0.join(format!(".tmp-{}-22", id(3)))).unwrap();

        assert_eq!(store.remove_stale_temps().unwrap(), 1);
        let names = dir.names();
        assert!(!names.contains(&stale), "{names:?}");
        assert!(names.contains(&live), "{names:?}");
        assert!(names.contains(&fresh), "unlocked but young: {names:?}");
        assert!(names.contains(&format!("{}.note", note.id)), "{names:?}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        assert_eq!(names.len(), 5, "{names:?}");

        // The writer dies (its fd closes): now its temp is stale.
        drop(writer);
        assert_eq!(store.remove_stale_temps().unwrap(), 1);
        assert!(!dir.names().contains(&live));
        assert_eq!(store.remove_stale_temps().unwrap(), 0);
        // Without the grace the young one goes too.
        assert_eq!(store.remove_temps_older_than(0).unwrap(), 1);
        assert!(!dir.names().contains(&fresh));
        assert_eq!(store.get(&note.id).unwrap(), Some(note));
    }

    #[test]
    fn check_changes_nothing() {
        let dir = TempDir::new("check");
        let store = dir.store();
        store.create("one").unwrap();
        std::fs::write(dir.0.join(format!(".tmp-{}-00", id(1))), "x").unwrap();
        let before = dir.names();
        let stat_before = std::fs::metadata(&dir.0).unwrap();
        store.check().unwrap();
        assert_eq!(dir.names(), before);
        let stat_after = std::fs::metadata(&dir.0).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (
                stat_before.mtime(),
                stat_before.mtime_nsec(),
                stat_before.nlink()
            ),
            (
                stat_after.mtime(),
                stat_after.mtime_nsec(),
                stat_after.nlink()
            )
        );
        // And on an empty directory.
        let empty = TempDir::new("check-empty");
        empty.store().check().unwrap();
        assert!(empty.names().is_empty());
    }

    #[test]
    fn check_needs_write_permission() {
        // As root, permission bits never refuse, so the check runs on a
        // thread of its own that drops to nobody: Linux credentials are per
        // thread (the raw setuid of set_thread_uid does not reach the
        // others), and the thread ends right after.
        let dir = TempDir::new("check-perm");
        let store = dir.store();
        let as_nobody = |mode| {
            std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
            std::thread::scope(|s| {
                s.spawn(|| {
                    rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(65534)).unwrap();
                    store.check()
                })
                .join()
                .unwrap()
            })
        };
        let err = as_nobody(0o755).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("writable"), "{err}");
        as_nobody(0o777).unwrap();
        assert!(dir.names().is_empty());
    }

    #[test]
    fn from_fd_refuses_files_and_o_path() {
        let dir = TempDir::new("from-fd");
        let file = dir.0.join("file");
        std::fs::write(&file, "x").unwrap();
        let fd = rustix::fs::open(&file, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).unwrap();
        assert_eq!(Store::from_fd(fd).unwrap_err().raw_os_error(), None);
        let fd = rustix::fs::open(&file, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).unwrap();
        assert_eq!(
            Store::from_fd(fd).unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );
        let fd = rustix::fs::open(
            &dir.0,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        assert_eq!(
            Store::from_fd(fd).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let fd = rustix::fs::open(
            &dir.0,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        Store::from_fd(fd).unwrap().check().unwrap();
        assert_eq!(
            Store::open(&file).unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );
    }

    #[test]
    fn create_of_1_mib() {
        let dir = TempDir::new("big");
        let store = dir.store();
        let text: String = (0..MAX_NOTE_TEXT)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        let note = store.create(&text).unwrap();
        assert_eq!(store.get(&note.id).unwrap().unwrap().text, text);
        let err = store.create(&format!("{text}x")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(dir.names().len(), 1, "the refused note left nothing");
    }

    #[test]
    fn failed_rename_unlinks_temp_and_keeps_existing_note() {
        let dir = TempDir::new("collision");
        let store = dir.store();
        plant(&dir, &id(9), 1, "the original");
        let clash = Note {
            id: id(9),
            text: "an impostor".into(),
            created: 2,
        };
        let err = store.write_note(&clash).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert!(err.to_string().contains(&id(9).to_string()), "{err}");
        assert_eq!(
            dir.names(),
            vec![format!("{}.note", id(9))],
            "temp unlinked"
        );
        assert_eq!(store.get(&id(9)).unwrap().unwrap().text, "the original");
    }

    #[test]
    fn concurrent_creates_are_all_readable() {
        let dir = TempDir::new("threads");
        let store = dir.store();
        let notes: Vec<Note> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..16)
                .map(|t| {
                    let store = &store;
                    s.spawn(move || {
                        (0..100)
                            .map(|i| store.create(&format!("thread {t} note {i}\nbody")).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        assert_eq!(notes.len(), 1600);
        for note in &notes {
            assert_eq!(store.get(&note.id).unwrap().as_ref(), Some(note));
        }
        let (_, total) = store.list(0, 0).unwrap();
        assert_eq!(total, 1600);
        assert_eq!(dir.names().len(), 1600, "no temps left");
    }

    #[test]
    fn cleaner_between_create_and_lock_makes_the_writer_start_over() {
        let dir = TempDir::new("cleaner-between");
        let store = dir.store();
        let note = Note {
            id: id(5),
            text: "survives".into(),
            created: 5,
        };
        let mut temps = Vec::new();
        store
            .write_note_with(&note, |temp| {
                temps.push(temp.to_owned());
                if temps.len() == 1 {
                    // The fresh temp is not locked yet: without the grace
                    // it looks stale.
                    assert_eq!(store.remove_temps_older_than(0).unwrap(), 1);
                    assert!(dir.names().is_empty());
                }
            })
            .unwrap();
        assert_eq!(temps.len(), 2, "started over once: {temps:?}");
        assert_ne!(temps[0], temps[1]);
        assert_eq!(store.get(&note.id).unwrap(), Some(note));
        assert_eq!(dir.names(), vec![format!("{}.note", id(5))]);
    }

    #[test]
    fn concurrent_cleaner_never_loses_a_note() {
        let dir = TempDir::new("cleaner-race");
        let store = dir.store();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (created, cleaned) = std::thread::scope(|s| {
            let cleaner = s.spawn(|| {
                let mut removed = 0;
                while !stop.load(Ordering::Relaxed) {
                    removed += store.remove_stale_temps()?;
                }
                io::Result::Ok(removed)
            });
            let created: io::Result<Vec<Note>> =
                (0..200).map(|i| store.create(&format!("n{i}"))).collect();
            stop.store(true, Ordering::Relaxed);
            (created, cleaner.join().unwrap())
        });
        let notes = created.unwrap();
        let cleaned = cleaned.unwrap();
        eprintln!("the cleaner removed {cleaned} fresh temps");
        for note in &notes {
            assert_eq!(store.get(&note.id).unwrap().as_ref(), Some(note));
        }
        assert_eq!(dir.names().len(), 200);
    }
}
