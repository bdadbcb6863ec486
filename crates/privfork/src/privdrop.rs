//! The privilege drop: one ordered, verified, fail-closed routine.
//!
//! Order (each step needs the privilege the later ones give up):
//!
//! 1. Refuse uid 0 as a target unless [`DropOptions::allow_root`], and the
//!    reserved id `(uid_t)-1`.
//! 2. Work out what must change and check the privilege for it (CAP_SETUID
//!    for a uid the process does not have, CAP_SETGID for a gid or groups)
//!    — before anything changes, so a refusal leaves the process exactly as
//!    it was. In a multithreaded process, also refuse when other threads
//!    would keep capabilities (see below).
//! 3. `setgroups`, if the groups differ: root's groups must go while we
//!    still hold CAP_SETGID.
//! 4. `setresgid`: real, effective, saved (and so filesystem) gid.
//! 5. `setresuid`: real, effective, saved (and so filesystem) uid. Called
//!    even when the ids already match, to reset the filesystem ids. When
//!    the process had uid 0 the kernel clears its capabilities here…
//! 6. …and we clear them with `capset` in any case: a non-root caller
//!    holding CAP_SETUID, or securebits (`KEEP_CAPS`, `NO_SETUID_FIXUP`),
//!    would otherwise keep them. Emptying permitted and inheritable also
//!    empties ambient, a subset of permitted ∩ inheritable.
//! 7. Verify: real/effective/saved/fs uids and gids equal the target; the
//!    supplementary groups are exactly the target's; for a non-root target
//!    the capability sets are empty and `setuid(0)` and `setgid(old gid)`
//!    fail (if either succeeds, the process aborts). In a multithreaded
//!    process every thread is checked through `/proc/self/task`.
//!
//! Threads: [`drop_privileges`] uses the C library's calls, which glibc
//! applies to every thread; `capset` has no such broadcast. So with several
//! threads the drop is refused up front unless the kernel's setuid fixup
//! clears every thread's capabilities by itself (the process has uid 0, no
//! securebit keeps capabilities, the inheritable set is empty). A fork-as
//! child, proven single-threaded, uses the raw per-thread syscalls and also
//! makes itself not dumpable right after the uid change.
//!
//! A failure after step 3 has changed the process: [`drop_privileges`] then
//! aborts the process rather than return with half-dropped credentials; the
//! fork-as child reports it to its parent and exits. See credentials(7),
//! capabilities(7), setresuid(2), setgroups(2), setfsuid(2).

use std::io;

use rustix::process::{Gid, Uid};
use rustix::thread::{CapabilitySet, CapabilitySets};
use serde::{Deserialize, Serialize};

use crate::identity::Identity;
use crate::sys::{self, Threads};

/// Options of a privilege drop.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DropOptions {
    /// Allow uid 0 as the target (keeps the capabilities; only the groups
    /// and gid change). Off by default: "drop to root" is usually a
    /// configuration mistake.
    pub allow_root: bool,
}

impl DropOptions {
    /// Default options: refuse root as a target.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`DropOptions::allow_root`].
    pub fn allow_root(mut self, allow: bool) -> Self {
        self.allow_root = allow;
        self
    }
}

/// A step of the privilege drop, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DropStep {
    /// Reading the capability sets (`capget`).
    ReadCapabilities,
    /// `setgroups`.
    SetGroups,
    /// `setresgid`.
    SetResGid,
    /// `setresuid`.
    SetResUid,
    /// Clearing the capability sets (`capset`).
    ClearCapabilities,
    /// Reading the supplementary groups back (`getgroups`).
    ReadGroups,
    /// Counting the threads (`/proc/self/task`).
    ReadThreads,
    /// Making the process not dumpable (`prctl(PR_SET_DUMPABLE)`).
    NotDumpable,
}

impl std::fmt::Display for DropStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ReadCapabilities => "capget",
            Self::SetGroups => "setgroups",
            Self::SetResGid => "setresgid",
            Self::SetResUid => "setresuid",
            Self::ClearCapabilities => "capset",
            Self::ReadGroups => "getgroups",
            Self::ReadThreads => "counting threads in /proc/self/task",
            Self::NotDumpable => "prctl(PR_SET_DUMPABLE)",
        })
    }
}

/// Error of a privilege drop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivDropError {
    /// The target is uid 0 and [`DropOptions::allow_root`] is off.
    #[error("refusing to drop privileges to {target}: uid 0 is root (set allow_root to allow it)")]
    RootRefused {
        /// The target, as text.
        target: String,
    },
    /// The process lacks the privilege to change ids. Nothing was changed.
    #[error(
        "cannot drop privileges to {target}: the process (uid {uid}) lacks {missing}; \
         run as root or grant CAP_SETUID and CAP_SETGID"
    )]
    MissingPrivilege {
        /// The target, as text.
        target: String,
        /// The current real uid.
        uid: u32,
        /// Which capabilities are missing, e.g. "CAP_SETUID, CAP_SETGID".
        missing: String,
    },
    /// A system call of the drop failed.
    #[error("dropping privileges to {target}: {step} failed")]
    Step {
        /// The target, as text.
        target: String,
        /// The failed step.
        step: DropStep,
        /// The error of that call.
        #[source]
        source: io::Error,
    },
    /// The target has an id that cannot be a target. Nothing was changed.
    #[error("cannot drop privileges to {target}: {reason}")]
    InvalidTarget {
        /// The target, as text.
        target: String,
        /// Why.
        reason: &'static str,
    },
    /// The process has several threads and dropping would leave some of
    /// them with capabilities. Nothing was changed.
    #[error(
        "cannot drop privileges to {target} in a multithreaded process: {reason}; \
         drop before starting threads, or from a single-threaded child"
    )]
    ThreadsWouldKeepCapabilities {
        /// The target, as text.
        target: String,
        /// Why the other threads would keep capabilities.
        reason: &'static str,
    },
    /// The calls succeeded but the result is not what was asked.
    #[error("dropping privileges to {target}: verification failed: {check}")]
    Verify {
        /// The target, as text.
        target: String,
        /// What did not hold.
        check: String,
    },
}

/// A failure of [`drop_to`], with whether the credentials had changed.
#[derive(Debug)]
pub(crate) struct DropFailure {
    pub(crate) error: PrivDropError,
    pub(crate) changed: bool,
}

/// Drops the calling process's privileges to `target`, then verifies them.
///
/// On success every thread runs as `target` with no capabilities (for a
/// non-root target) and root cannot be regained.
///
/// # Errors
///
/// [`PrivDropError::RootRefused`] and [`PrivDropError::MissingPrivilege`]
/// before anything changed. A failure after the credentials started to
/// change does not return: the process prints the error to stderr and
/// aborts, so it never runs half-dropped.
pub fn drop_privileges(target: &Identity, opts: &DropOptions) -> Result<(), PrivDropError> {
    match drop_to(target, opts, Threads::All) {
        Ok(()) => Ok(()),
        Err(DropFailure {
            error,
            changed: false,
        }) => Err(error),
        Err(DropFailure {
            error,
            changed: true,
        }) => {
            eprintln!("privfork: fatal: {error}; aborting rather than run half-dropped");
            std::process::abort()
        }
    }
}

/// The drop routine (see the module docs for the order).
pub(crate) fn drop_to(
    target: &Identity,
    opts: &DropOptions,
    threads: Threads<'_>,
) -> Result<(), DropFailure> {
    // Strings are built only on failure: in a fork-as child every page
    // written is a copy-on-write fault, so the success path does not allocate.
    let who = || target.to_string();
    let early = |error| DropFailure {
        error,
        changed: false,
    };
    let late = |error| DropFailure {
        error,
        changed: true,
    };
    let step = |step, source| PrivDropError::Step {
        target: who(),
        step,
        source,
    };
    let (uid, gid) = (target.raw_uid(), target.raw_gid());

    // 1. Root as a target is a choice, never a default; (uid_t)-1 means
    //    "unchanged" to the set*id calls and is never a target.
    if uid.is_root() && !opts.allow_root {
        return Err(early(PrivDropError::RootRefused { target: who() }));
    }
    let bad = u32::MAX;
    if uid.as_raw() == bad || target.raw_groups().iter().any(|g| g.as_raw() == bad) {
        return Err(early(PrivDropError::InvalidTarget {
            target: who(),
            reason: "4294967295 ((uid_t)-1) means \"no change\" and cannot be a target id",
        }));
    }

    // 2. What must change, and the privilege for it. Nothing has changed
    //    yet, so every refusal here leaves the process as it was.
    let caps = rustix::thread::capabilities(None)
        .map_err(|e| early(step(DropStep::ReadCapabilities, e.into())))?;
    let (ru, eu, su) = sys::get_res_uid();
    let (rg, eg, sg) = sys::get_res_gid();
    let groups_differ = !sys::with_groups(|groups| groups == target.raw_groups())
        .map_err(|e| early(step(DropStep::ReadGroups, e)))?;
    // setres*id needs no privilege to set ids the process already has.
    let uid_needs_cap = ![ru, eu, su].contains(&uid);
    let gid_needs_cap = ![rg, eg, sg].contains(&gid) || groups_differ;
    let missing = match (
        uid_needs_cap && !caps.effective.contains(CapabilitySet::SETUID),
        gid_needs_cap && !caps.effective.contains(CapabilitySet::SETGID),
    ) {
        (false, false) => None,
        (true, false) => Some("CAP_SETUID"),
        (false, true) => Some("CAP_SETGID"),
        (true, true) => Some("CAP_SETUID, CAP_SETGID"),
    };
    if let Some(missing) = missing {
        return Err(early(PrivDropError::MissingPrivilege {
            target: who(),
            uid: ru.as_raw(),
            missing: missing.to_owned(),
        }));
    }
    // With several threads, only setres*id reaches them all (glibc's
    // broadcast); capset acts on the calling thread. So the other threads
    // end up without capabilities only if the kernel's setuid fixup clears
    // them: the process had uid 0 among its ids, no securebit keeps
    // capabilities, and the inheritable set (which the fixup keeps) is empty.
    let several = match threads {
        Threads::All => sys::thread_count().map_err(|e| early(step(DropStep::ReadThreads, e)))? > 1,
        Threads::Only(_) => false,
    };
    if several && !uid.is_root() {
        let bits = rustix::thread::capabilities_secure_bits()
            .map_err(|e| early(step(DropStep::ReadCapabilities, e.into())))?;
        let keep = rustix::thread::get_keep_capabilities()
            .map_err(|e| early(step(DropStep::ReadCapabilities, e.into())))?;
        use rustix::thread::CapabilitiesSecureBits as Bits;
        let reason = if keep || bits.intersects(Bits::KEEP_CAPS | Bits::NO_SETUID_FIXUP) {
            Some("KEEP_CAPS or NO_SETUID_FIXUP would keep capabilities across setuid")
        } else {
            // Capability sets are per thread: look at every thread's. (Its
            // securebits are not visible; a thread that set KEEP_CAPS on
            // its own is caught by the check after the drop, which aborts.)
            other_threads_keep_caps().map_err(|e| early(step(DropStep::ReadThreads, e)))?
        };
        if let Some(reason) = reason {
            return Err(early(PrivDropError::ThreadsWouldKeepCapabilities {
                target: who(),
                reason,
            }));
        }
    }
    let old_gid = eg; // for the "cannot regain" probe

    // 3–5. Groups first, then gid, then uid: each needs what the next drops.
    //      setgroups is the first change: if it fails, nothing changed.
    if groups_differ {
        sys::set_groups(threads, target.raw_groups())
            .map_err(|e| early(step(DropStep::SetGroups, e)))?;
    }
    // Always called, even when the ids look right: they also reset the
    // filesystem ids (fsuid/fsgid) to the effective ones.
    sys::set_res_gid(threads, gid).map_err(|e| late(step(DropStep::SetResGid, e)))?;
    sys::set_res_uid(threads, uid).map_err(|e| late(step(DropStep::SetResUid, e)))?;
    if let Threads::Only(_) = threads {
        // The uid change reset dumpability to the fs.suid_dumpable sysctl;
        // a fork-as child (a copy of a root parent's memory) must not be
        // dumpable or traceable by other processes of the target user.
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
            .map_err(|e| late(step(DropStep::NotDumpable, e.into())))?;
    }
    // 6. The kernel cleared the capabilities in setresuid if the process had
    //    uid 0 and no securebit said otherwise; clear them here in any case
    //    (e.g. a non-root caller holding CAP_SETUID). Emptying permitted and
    //    inheritable empties ambient too: ambient ⊆ permitted ∩ inheritable.
    if !uid.is_root() {
        let none = CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        };
        let now = rustix::thread::capabilities(None)
            .map_err(|e| late(step(DropStep::ReadCapabilities, e.into())))?;
        if now != none {
            rustix::thread::set_capabilities(None, none)
                .map_err(|e| late(step(DropStep::ClearCapabilities, e.into())))?;
        }
    }
    // 7. Trust nothing above: read it all back, on every thread.
    verify(target, old_gid).map_err(late)?;
    if several {
        verify_all_threads(target).map_err(late)?;
    }
    Ok(())
}

fn verify(target: &Identity, old_gid: Gid) -> Result<(), PrivDropError> {
    let fail = |check: String| PrivDropError::Verify {
        target: target.to_string(),
        check,
    };
    let (u, g) = (target.raw_uid(), target.raw_gid());
    let (ru, eu, su) = sys::get_res_uid();
    let fsu = sys::get_fs_uid();
    if [ru, eu, su, fsu] != [u, u, u, u] {
        return Err(fail(format!(
            "uids are {}/{}/{}/{} (real/effective/saved/fs), expected {}",
            ru.as_raw(),
            eu.as_raw(),
            su.as_raw(),
            fsu.as_raw(),
            u.as_raw()
        )));
    }
    let (rg, eg, sg) = sys::get_res_gid();
    let fsg = sys::get_fs_gid();
    if [rg, eg, sg, fsg] != [g, g, g, g] {
        return Err(fail(format!(
            "gids are {}/{}/{}/{} (real/effective/saved/fs), expected {}",
            rg.as_raw(),
            eg.as_raw(),
            sg.as_raw(),
            fsg.as_raw(),
            g.as_raw()
        )));
    }
    let show = |v: &[Gid]| v.iter().map(|g| g.as_raw()).collect::<Vec<_>>();
    let wrong_groups =
        sys::with_groups(|groups| (groups != target.raw_groups()).then(|| show(groups)))
            .map_err(|e| fail(format!("getgroups failed: {e}")))?;
    if let Some(groups) = wrong_groups {
        return Err(fail(format!(
            "supplementary groups are {groups:?}, expected {:?}",
            show(target.raw_groups())
        )));
    }
    if u.is_root() {
        return Ok(());
    }
    let caps =
        rustix::thread::capabilities(None).map_err(|e| fail(format!("capget failed: {e}")))?;
    if !caps.effective.is_empty() || !caps.permitted.is_empty() || !caps.inheritable.is_empty() {
        return Err(fail(format!(
            "capability sets not empty: effective {:#x}, permitted {:#x}, inheritable {:#x}",
            caps.effective.bits(),
            caps.permitted.bits(),
            caps.inheritable.bits()
        )));
    }
    // Raw per-thread syscalls are enough for the probe: if either succeeds
    // on this thread, the process aborts.
    if rustix::thread::set_thread_uid(Uid::ROOT).is_ok() {
        // The process is root again: nothing it does from here is safe.
        eprintln!("privfork: fatal: setuid(0) succeeded after dropping to {target}");
        std::process::abort();
    }
    if old_gid != g && rustix::thread::set_thread_gid(old_gid).is_ok() {
        eprintln!(
            "privfork: fatal: setgid({}) succeeded after dropping to {target}",
            old_gid.as_raw()
        );
        std::process::abort();
    }
    Ok(())
}

/// The `status` files of every thread of the process, by thread id.
fn thread_statuses() -> io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        let task = task?;
        match std::fs::read_to_string(task.path().join("status")) {
            Ok(s) => out.push((task.file_name().to_string_lossy().into_owned(), s)),
            // The thread exited since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
        .unwrap_or("")
}

/// Why some thread would keep capabilities through setuid, if one would:
/// the kernel's fixup clears permitted/effective/ambient only for threads
/// with uid 0 among their ids, and never clears inheritable.
fn other_threads_keep_caps() -> io::Result<Option<&'static str>> {
    const NONE: &str = "0000000000000000";
    for (_, st) in thread_statuses()? {
        let has_root = status_field(&st, "Uid:")
            .split_whitespace()
            .any(|u| u == "0");
        if status_field(&st, "CapPrm:") != NONE && !has_root {
            return Ok(Some(
                "a thread holds capabilities without uid 0, which setuid does not clear",
            ));
        }
        if status_field(&st, "CapInh:") != NONE {
            return Ok(Some("a thread's inheritable capability set is not empty"));
        }
    }
    Ok(None)
}

/// Checks every thread of the process through `/proc/self/task/*/status`:
/// the same ids (real, effective, saved, fs), groups, and, for a non-root
/// target, empty capability sets.
fn verify_all_threads(target: &Identity) -> Result<(), PrivDropError> {
    let fail = |check: String| PrivDropError::Verify {
        target: target.to_string(),
        check,
    };
    let (u, g) = (target.uid(), target.gid());
    let want_uid = format!("{u}\t{u}\t{u}\t{u}");
    let want_gid = format!("{g}\t{g}\t{g}\t{g}");
    let want_groups = target
        .groups()
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let mut checks = vec![
        ("Uid:", want_uid),
        ("Gid:", want_gid),
        ("Groups:", want_groups),
    ];
    if u != 0 {
        for set in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
            checks.push((set, "0000000000000000".to_owned()));
        }
    }
    // List again until no thread appears that was not checked: a thread
    // could start another and exit between a listing and its read.
    let mut checked: Vec<String> = Vec::new();
    loop {
        let statuses =
            thread_statuses().map_err(|e| fail(format!("cannot read /proc/self/task: {e}")))?;
        let mut new = false;
        for (tid, status) in &statuses {
            if !checked.contains(tid) {
                new = true;
                checked.push(tid.clone());
            }
            for (name, want) in &checks {
                let got = status_field(status, name);
                if got != want {
                    return Err(fail(format!(
                        "thread {tid}: {name} is {got:?}, expected {want:?}"
                    )));
                }
            }
        }
        if !new {
            return Ok(());
        }
    }
}

/// The form of a [`PrivDropError`] sent from a fork-as child to its parent
/// (and from the fork server to its caller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WireDropError {
    /// [`PrivDropError::RootRefused`]: the target.
    RootRefused(String),
    /// [`PrivDropError::MissingPrivilege`]: target, uid, what is missing.
    MissingPrivilege(String, u32, String),
    /// [`PrivDropError::Step`]: target, step, errno.
    Step(String, DropStep, i32),
    /// [`PrivDropError::Verify`]: target, the failed check.
    Verify(String, String),
}

impl From<&PrivDropError> for WireDropError {
    fn from(e: &PrivDropError) -> Self {
        match e {
            PrivDropError::RootRefused { target } => Self::RootRefused(target.clone()),
            PrivDropError::MissingPrivilege {
                target,
                uid,
                missing,
            } => Self::MissingPrivilege(target.clone(), *uid, missing.clone()),
            PrivDropError::Step {
                target,
                step,
                source,
            } => Self::Step(target.clone(), *step, source.raw_os_error().unwrap_or(0)),
            PrivDropError::Verify { target, check } => Self::Verify(target.clone(), check.clone()),
            PrivDropError::InvalidTarget { target, reason } => {
                Self::Verify(target.clone(), (*reason).to_owned())
            }
            PrivDropError::ThreadsWouldKeepCapabilities { target, reason } => {
                Self::Verify(target.clone(), (*reason).to_owned())
            }
        }
    }
}

impl From<WireDropError> for PrivDropError {
    fn from(w: WireDropError) -> Self {
        match w {
            WireDropError::RootRefused(target) => Self::RootRefused { target },
            WireDropError::MissingPrivilege(target, uid, missing) => Self::MissingPrivilege {
                target,
                uid,
                missing,
            },
            WireDropError::Step(target, step, errno) => Self::Step {
                target,
                step,
                source: io::Error::from_raw_os_error(errno),
            },
            WireDropError::Verify(target, check) => Self::Verify { target, check },
        }
    }
}
