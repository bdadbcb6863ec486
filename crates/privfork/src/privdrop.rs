//! The privilege drop: one ordered, verified, fail-closed routine.
//!
//! Order (each step needs the privilege the later ones give up):
//!
//! 1. Refuse uid 0 as a target unless [`DropOptions::allow_root`].
//! 2. Check that the process can change ids (CAP_SETUID and CAP_SETGID in
//!    its effective set) — before anything changes, so a refusal leaves the
//!    process exactly as it was.
//! 3. `setgroups`: the target's supplementary groups — root's groups must go
//!    while we still hold CAP_SETGID.
//! 4. `setresgid`: real, effective and saved gid.
//! 5. `setresuid`: real, effective and saved uid. For a non-root target the
//!    kernel clears the capability sets here (ambient included)…
//! 6. …unless securebits of an ancestor (`SECBIT_KEEP_CAPS`,
//!    `SECBIT_NO_SETUID_FIXUP`) kept them: then we clear them with `capset`
//!    (which also empties the ambient set, a subset of permitted ∩
//!    inheritable).
//! 7. Verify: real/effective/saved uids and gids equal the target; the
//!    supplementary groups are exactly the target's; for a non-root target
//!    the effective, permitted and inheritable capability sets are empty
//!    (the ambient set is a subset of permitted ∩ inheritable, so it is empty
//!    too), and `setuid(0)` and `setgid(old gid)` fail.
//!
//! [`drop_privileges`] uses the C library's calls, which apply to every
//! thread (glibc's set*id broadcast); a fork-as child, proven
//! single-threaded, uses the raw syscalls.
//! A failure from step 3 on has changed the process: [`drop_privileges`] then
//! aborts the process rather than return with half-dropped credentials; the
//! fork-as child reports it to its parent and exits. See credentials(7),
//! capabilities(7), setresuid(2), setgroups(2).

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

    // 1. Root as a target is a choice, never a default.
    if uid.is_root() && !opts.allow_root {
        return Err(early(PrivDropError::RootRefused { target: who() }));
    }

    // 2. Privilege check, unless the process already is exactly the target.
    let caps = rustix::thread::capabilities(None)
        .map_err(|e| early(step(DropStep::ReadCapabilities, e.into())))?;
    if already_target(target).map_err(|e| early(step(DropStep::ReadGroups, e)))? {
        return verify(target, sys::get_res_gid().1).map_err(late);
    }
    let missing = match (
        caps.effective.contains(CapabilitySet::SETUID),
        caps.effective.contains(CapabilitySet::SETGID),
    ) {
        (true, true) => None,
        (false, true) => Some("CAP_SETUID"),
        (true, false) => Some("CAP_SETGID"),
        (false, false) => Some("CAP_SETUID, CAP_SETGID"),
    };
    if let Some(missing) = missing {
        return Err(early(PrivDropError::MissingPrivilege {
            target: who(),
            uid: sys::get_res_uid().0.as_raw(),
            missing: missing.to_owned(),
        }));
    }
    let old_gid = sys::get_res_gid().1; // for the "cannot regain" probe

    // 3–5. Groups first, then gid, then uid: each needs what the next drops.
    sys::set_groups(threads, target.raw_groups())
        .map_err(|e| late(step(DropStep::SetGroups, e)))?;
    sys::set_res_gid(threads, gid).map_err(|e| late(step(DropStep::SetResGid, e)))?;
    sys::set_res_uid(threads, uid).map_err(|e| late(step(DropStep::SetResUid, e)))?;
    // 6. The kernel cleared the capabilities in setresuid unless securebits
    // (KEEP_CAPS, NO_SETUID_FIXUP) said otherwise; then clear them here.
    // Emptying the permitted and inheritable sets empties the ambient set
    // too: the kernel keeps ambient ⊆ permitted ∩ inheritable.
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
    // 7. Trust nothing above: read it all back.
    verify(target, old_gid).map_err(late)
}

/// Whether the process already has exactly the target's ids and groups.
fn already_target(target: &Identity) -> io::Result<bool> {
    let (u, g) = (target.raw_uid(), target.raw_gid());
    let (ru, eu, su) = sys::get_res_uid();
    let (rg, eg, sg) = sys::get_res_gid();
    if [ru, eu, su] != [u, u, u] || [rg, eg, sg] != [g, g, g] {
        return Ok(false);
    }
    sys::with_groups(|groups| groups == target.raw_groups())
}

fn verify(target: &Identity, old_gid: Gid) -> Result<(), PrivDropError> {
    let fail = |check: String| PrivDropError::Verify {
        target: target.to_string(),
        check,
    };
    let (u, g) = (target.raw_uid(), target.raw_gid());
    let (ru, eu, su) = sys::get_res_uid();
    if [ru, eu, su] != [u, u, u] {
        return Err(fail(format!(
            "uids are {}/{}/{} (real/effective/saved), expected {}",
            ru.as_raw(),
            eu.as_raw(),
            su.as_raw(),
            u.as_raw()
        )));
    }
    let (rg, eg, sg) = sys::get_res_gid();
    if [rg, eg, sg] != [g, g, g] {
        return Err(fail(format!(
            "gids are {}/{}/{} (real/effective/saved), expected {}",
            rg.as_raw(),
            eg.as_raw(),
            sg.as_raw(),
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
