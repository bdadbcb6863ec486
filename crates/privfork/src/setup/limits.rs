//! Resource limits and dumpability.

use std::io;

use rustix::process::{DumpableBehavior, Resource, Rlimit};

/// `RLIMIT_CORE` 0, then each of `limits` lowered to its value (never
/// raised: a limit the caller already set lower stays).
pub(super) fn set(limits: &[super::Rlimit]) -> io::Result<()> {
    let zero = [(Resource::Core, 0)];
    for &(resource, value) in zero.iter().chain(limits) {
        let old = rustix::process::getrlimit(resource);
        let lower = |cur: Option<u64>| Some(cur.map_or(value, |c| c.min(value)));
        rustix::process::setrlimit(
            resource,
            Rlimit {
                current: lower(old.current),
                maximum: lower(old.maximum),
            },
        )?;
    }
    Ok(())
}

/// Not dumpable: no core file, and no ptrace or `/proc/PID/mem` by the
/// user the process runs as. The drop sets it again right after the uid
/// change, which resets it.
pub(super) fn not_dumpable() -> io::Result<()> {
    Ok(rustix::process::set_dumpable_behavior(
        DumpableBehavior::NotDumpable,
    )?)
}
