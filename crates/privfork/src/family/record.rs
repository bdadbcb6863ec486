//! The state record a smooth restart hands from the running main image to
//! the new one it execs: the generation serving, its members (their
//! pidfds, channels and stderr pipes, by fd number), the listeners, and
//! the restart under way.
//!
//! It travels in a sealed memfd whose number is in `PRIVFORK_STATE_FD`.
//! The file starts with a fixed header — [`MAGIC`], then the record's
//! [`VERSION`] (u32, little-endian), then the payload's length (u32) —
//! and the payload is postcard. An image reads the version before
//! anything else and refuses a version it does not know before it takes
//! a single fd ([`RecordError::Version`]); the running image asks the new
//! binary first (the preflight sets [`PREFLIGHT_ENV`] to the version it
//! writes, and [`check_preflight`] answers in the new binary),
//! so an image that cannot read the record is never exec'd.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::status::{MemberReport, RestartReport};

/// The record's first bytes.
pub(crate) const MAGIC: &[u8; 8] = b"pfstate\0";
/// The version of the record this image writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Largest record read (a family is a handful of processes).
const MAX_RECORD: usize = 1 << 20;
/// Where the new image finds the record's fd number.
pub(crate) const STATE_ENV: &str = "PRIVFORK_STATE_FD";
/// Set by a preflight to the record version the running image writes.
pub(crate) const PREFLIGHT_ENV: &str = "PRIVFORK_PREFLIGHT_RECORD";
/// Set by a preflight to the names of the listeners main has
/// (`:`-separated): the new binary's roles must need no other.
pub(crate) const PREFLIGHT_LISTENERS_ENV: &str = "PRIVFORK_PREFLIGHT_LISTENERS";
/// Exit code of a preflight whose binary cannot read the running image's
/// record, or whose roles cannot run with what main has.
pub(crate) const EXIT_WRONG_VERSION: i32 = 3;

/// Everything the new image needs to adopt the running generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The generation serving.
    pub generation: u64,
    /// Where the binary was when main first started (what a preflight
    /// opens).
    pub path: String,
    /// The serving generation's pinned binary (an `O_PATH` fd).
    pub exe_fd: i32,
    /// Main's first start (Unix ms).
    pub started_unix_ms: u64,
    /// The listeners: name and fd number.
    pub listeners: Vec<(String, i32)>,
    /// The last run serial handed out.
    pub serial: u64,
    /// Whether READY=1 was sent to systemd already.
    pub ready_notified: bool,
    /// Restarts begun so far (this one included).
    pub restarts: u64,
    /// The last restart that finished.
    pub last: Option<RestartReport>,
    /// The restart under way: its number and when its SIGHUP came
    /// (`CLOCK_MONOTONIC`, ns: the clock does not change across exec).
    pub began_monotonic_ns: u64,
    /// A SIGHUP came during this restart: one more follows it.
    pub again: bool,
    /// The serving generation's member slots, in table order.
    pub members: Vec<MemberRecord>,
    /// Channel ends waiting for a member's next start.
    pub pending_ends: Vec<PendingRecord>,
}

/// One member slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberRecord {
    pub role: String,
    pub instance: u32,
    pub user: Option<String>,
    pub restarts: u64,
    pub quick_deaths: u32,
    pub backoff_ms: u64,
    pub run: Option<RunRecord>,
}

/// A running member's process and fds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub pid: u32,
    pub pidfd: i32,
    pub channel: i32,
    pub stderr: i32,
    /// `protocol::ChildState` as its name.
    pub state: String,
    pub serial: u64,
    /// `(partner slot, serial of the run holding the other end)`; `None`:
    /// the other end waits in `pending_ends`.
    pub links: Vec<(u32, Option<u64>)>,
    pub uptime_ms: u64,
    pub report: Option<MemberReport>,
}

/// A channel end waiting for member `member`, made by run `creator` of
/// member `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingRecord {
    pub member: u32,
    pub from: u32,
    pub creator: u64,
    pub fd: i32,
}

/// Why a record could not be written or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("state record: {0}")]
    Io(#[from] std::io::Error),
    #[error("state record: not a privfork state record")]
    Magic,
    #[error(
        "state record version {found}: this binary reads version {VERSION} only \
         (refusing before adopting anything)"
    )]
    Version { found: u32 },
    #[error("state record: {0}")]
    Decode(#[from] postcard::Error),
    #[error("state record: {0} bytes, more than the {MAX_RECORD} allowed")]
    TooLarge(usize),
}

impl Record {
    /// Writes the record to a new sealed memfd (close-on-exec; the caller
    /// clears that flag for the exec).
    pub(crate) fn to_memfd(&self) -> Result<OwnedFd, RecordError> {
        use rustix::fs::{MemfdFlags, SealFlags};
        let payload = postcard::to_allocvec(self)?;
        if payload.len() > MAX_RECORD {
            return Err(RecordError::TooLarge(payload.len()));
        }
        // Not executable where the kernel can say so (6.3+; a system with
        // vm.memfd_noexec=2 refuses executable memfds).
        let fd = rustix::fs::memfd_create(
            "privfork-state",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING | MemfdFlags::NOEXEC_SEAL,
        )
        .or_else(|_| {
            rustix::fs::memfd_create(
                "privfork-state",
                MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
            )
        })
        .map_err(std::io::Error::from)?;
        let mut f = std::fs::File::from(fd);
        f.write_all(MAGIC)?;
        f.write_all(&VERSION.to_le_bytes())?;
        // Fits: checked against MAX_RECORD above.
        f.write_all(&(payload.len() as u32).to_le_bytes())?;
        f.write_all(&payload)?;
        f.rewind()?;
        let fd = OwnedFd::from(f);
        rustix::fs::fcntl_add_seals(
            &fd,
            SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
        )
        .map_err(std::io::Error::from)?;
        Ok(fd)
    }

    /// Reads a record from `fd`: the version first, nothing else if it is
    /// not [`VERSION`].
    pub(crate) fn read(fd: impl AsFd) -> Result<Self, RecordError> {
        let mut f = std::fs::File::from(fd.as_fd().try_clone_to_owned()?);
        let mut head = [0u8; 16];
        f.read_exact(&mut head)?;
        if &head[..8] != MAGIC {
            return Err(RecordError::Magic);
        }
        let found = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if found != VERSION {
            return Err(RecordError::Version { found });
        }
        let len = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as usize;
        if len > MAX_RECORD {
            return Err(RecordError::TooLarge(len));
        }
        let mut payload = vec![0u8; len];
        f.read_exact(&mut payload)?;
        Ok(postcard::from_bytes(&payload)?)
    }
}

/// In a preflight (the running image set [`PREFLIGHT_ENV`]): exits with
/// [`EXIT_WRONG_VERSION`] and a message unless this binary reads the
/// record version the running image writes and its roles can run with
/// the listeners main has, as their rows' users. Called by
/// [`super::Family::dispatch`] before the program's own check runs.
pub(crate) fn check_preflight(roles: &[super::Role]) {
    let Some(v) = std::env::var_os(PREFLIGHT_ENV) else {
        return;
    };
    let wanted = v.to_str().and_then(|s| s.parse::<u32>().ok());
    if wanted != Some(VERSION) {
        eprintln!(
            "privfork preflight: the running main writes state record version {}; \
             this binary reads version {VERSION} only",
            v.to_string_lossy()
        );
        std::process::exit(EXIT_WRONG_VERSION);
    }
    // What the new image would need from the running main: its roles'
    // listeners among main's, their rows' users known. A failure after
    // the exec would take the family down; here it only stops the restart.
    let have: Vec<String> = std::env::var(PREFLIGHT_LISTENERS_ENV)
        .map(|s| s.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    for r in roles {
        if r.listeners != super::ALL_LISTENERS {
            for l in r.listeners {
                if !have.iter().any(|h| h == l) {
                    eprintln!(
                        "privfork preflight: role {:?} needs listener {l:?}, which the \
                         running main does not have (it has {have:?})",
                        r.name
                    );
                    std::process::exit(EXIT_WRONG_VERSION);
                }
            }
        }
        if let Some(u) = r.user
            && let Err(e) = crate::identity::Identity::user(u)
        {
            eprintln!("privfork preflight: role {:?}: user {u:?}: {e}", r.name);
            std::process::exit(EXIT_WRONG_VERSION);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            generation: 3,
            path: "/usr/bin/notes".into(),
            exe_fd: 9,
            started_unix_ms: 1,
            listeners: vec![("http".into(), 5)],
            serial: 7,
            ready_notified: true,
            restarts: 2,
            last: None,
            began_monotonic_ns: 42,
            again: false,
            members: vec![MemberRecord {
                role: "worker".into(),
                instance: 0,
                user: None,
                restarts: 1,
                quick_deaths: 0,
                backoff_ms: 100,
                run: Some(RunRecord {
                    pid: 10,
                    pidfd: 11,
                    channel: 12,
                    stderr: 13,
                    state: "running".into(),
                    serial: 7,
                    links: vec![(1, Some(6))],
                    uptime_ms: 5,
                    report: None,
                }),
            }],
            pending_ends: vec![],
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let r = sample();
        let fd = r.to_memfd().unwrap();
        assert_eq!(Record::read(&fd).unwrap(), r);
        // Sealed: nobody changes it after it is written.
        let mut f = std::fs::File::from(fd);
        assert!(f.write_all(b"x").is_err());
    }

    #[test]
    fn another_version_is_refused_before_the_payload() {
        let fd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let mut f = std::fs::File::from(fd);
        f.write_all(MAGIC).unwrap();
        f.write_all(&2u32.to_le_bytes()).unwrap();
        // A payload this image could not parse: never looked at.
        f.write_all(&u32::MAX.to_le_bytes()).unwrap();
        f.rewind().unwrap();
        assert!(matches!(
            Record::read(&f),
            Err(RecordError::Version { found: 2 })
        ));
        let fd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let mut f = std::fs::File::from(fd);
        f.write_all(b"notastaterecord!").unwrap();
        f.rewind().unwrap();
        assert!(matches!(Record::read(&f), Err(RecordError::Magic)));
    }
}
