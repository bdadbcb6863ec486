//! Resource limits and dumpability.

use std::io;

use rustix::process::{DumpableBehavior, Resource, Rlimit};

/// `RLIMIT_CORE` 0, then each of `limits` lowered to its value (never
/// raised: a limit the caller already set lower stays). `RLIMIT_CPU`'s
/// hard limit is one second above its soft one: the kernel sends SIGXCPU
/// at the soft limit, which a program may catch to stop cleanly, and
/// SIGKILL at the hard one (equal limits would give SIGKILL straight away).
pub(super) fn set(limits: &[super::Rlimit]) -> io::Result<()> {
    let zero = [(Resource::Core, 0)];
    for &(resource, value) in zero.iter().chain(limits) {
        let old = rustix::process::getrlimit(resource);
        let hard = if resource == Resource::Cpu {
            value.saturating_add(1)
        } else {
            value
        };
        let lower = |cur: Option<u64>, to: u64| Some(cur.map_or(to, |c| c.min(to)));
        let maximum = lower(old.maximum, hard);
        rustix::process::setrlimit(
            resource,
            Rlimit {
                // Never above the hard limit (an old one lower than ours).
                current: lower(old.current, value).min(maximum),
                maximum,
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
