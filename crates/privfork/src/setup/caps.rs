//! Capabilities: the bounding set, then the process's own sets.

use std::io;

use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::sandbox::Level;

/// Removes from the bounding set every capability but `keep`. Needs
/// CAP_SETPCAP: without it the set stays, which is [`Level::Partial`]
/// unless the permitted set is empty already (with no_new_privs, the
/// bounding set then no longer matters: capabilities come back only by
/// executing setuid or file-capability programs).
pub(super) fn empty_bounding_set(keep: CapabilitySet) -> io::Result<Level> {
    let caps = rustix::thread::capabilities(None)?;
    for bit in 0..64u32 {
        let cap = CapabilitySet::from_bits_retain(1u64 << bit);
        if keep.contains(cap) {
            continue;
        }
        match rustix::thread::capability_is_in_bounding_set(cap) {
            Ok(true) => {
                if !caps.effective.contains(CapabilitySet::SETPCAP) {
                    let permitted_left = !(caps.permitted - keep).is_empty();
                    return Ok(if permitted_left {
                        Level::Partial
                    } else {
                        Level::Full
                    });
                }
                rustix::thread::remove_capability_from_bounding_set(cap)?;
            }
            Ok(false) => {}
            Err(_) => break, // past the last capability the kernel knows
        }
    }
    Ok(Level::Full)
}

/// Empties the ambient set and sets effective and permitted to `keep`
/// (what the process has of it), inheritable to nothing.
pub(super) fn keep_only(keep: CapabilitySet) -> io::Result<()> {
    rustix::thread::clear_ambient_capability_set()?;
    let now = rustix::thread::capabilities(None)?;
    let kept = now.permitted & keep;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: kept,
            permitted: kept,
            inheritable: CapabilitySet::empty(),
        },
    )?;
    Ok(())
}
