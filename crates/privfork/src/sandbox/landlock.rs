//! The Landlock side of the sandbox: unveil(2)-style path rules, TCP port
//! rules and scopes.
//!
//! The ruleset handles every filesystem right of ABI 5 (refer, truncate and
//! ioctl_dev included), TCP bind/connect of ABI 4 and the scopes of ABI 6
//! (abstract Unix sockets, signals). On an older kernel the landlock crate
//! drops what it cannot enforce and reports a partial status.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, PathFdError, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
};

use super::Level;

/// Permissions of an unveiled path, as unveil(2) spells them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Perms {
    /// `r`: read files, list directories.
    pub read: bool,
    /// `w`: write and truncate files.
    pub write: bool,
    /// `x`: execute files.
    pub exec: bool,
    /// `c`: create and remove files, directories, links, FIFOs, sockets;
    /// rename and link within the unveiled trees.
    pub create: bool,
}

/// One unveiled path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unveil {
    /// The path (a directory covers everything beneath it).
    pub path: PathBuf,
    /// What may be done there.
    pub perms: Perms,
    /// Skip the path (with a warning in the report) if it does not exist,
    /// instead of failing.
    pub optional: bool,
}

/// A bad unveil spec or path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnveilError {
    /// The spec is not `PERMS:PATH`.
    #[error(
        "bad unveil spec {spec:?}: {reason} (expected PERMS:PATH, PERMS from \"rwxc\", e.g. rwc:/srv/data, or a bare /PATH for read-only)"
    )]
    Spec {
        /// The spec given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// The path cannot be opened.
    #[error("cannot unveil {path}: {source}")]
    Path {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Landlock refused the ruleset.
    #[error("landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
}

impl Unveil {
    /// Parses `PERMS:PATH` (`r:/etc`, `rwc:/srv/data`); a `?` after the
    /// permissions marks the path optional (`r?:/etc/ssl`). A bare
    /// absolute path (`/etc`, no permissions) is read-only, as in
    /// pledge.com's `-v PATH`; such a spec is all path, `:` included.
    ///
    /// # Errors
    ///
    /// [`UnveilError::Spec`] naming the spec and what is wrong with it.
    pub fn parse(spec: &str) -> Result<Self, UnveilError> {
        let bad = |reason: &str| UnveilError::Spec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        if spec.starts_with('/') {
            return Ok(Self {
                path: PathBuf::from(spec),
                perms: Perms {
                    read: true,
                    ..Perms::default()
                },
                optional: false,
            });
        }
        let (perms_text, path) = spec
            .split_once(':')
            .ok_or_else(|| bad("no ':' (and not an absolute path, which would be read-only)"))?;
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        if !path.starts_with('/') {
            return Err(bad("the path must be absolute"));
        }
        let (perms_text, optional) = match perms_text.strip_suffix('?') {
            Some(p) => (p, true),
            None => (perms_text, false),
        };
        if perms_text.is_empty() {
            return Err(bad("no permissions"));
        }
        let mut perms = Perms::default();
        for c in perms_text.chars() {
            let flag = match c {
                'r' => &mut perms.read,
                'w' => &mut perms.write,
                'x' => &mut perms.exec,
                'c' => &mut perms.create,
                other => return Err(bad(&format!("unknown permission {other:?}"))),
            };
            if *flag {
                return Err(bad(&format!("permission {c:?} given twice")));
            }
            *flag = true;
        }
        Ok(Self {
            path: PathBuf::from(path),
            perms,
            optional,
        })
    }
}

/// The ABIs whose rights the ruleset handles.
const FS_ABI: ABI = ABI::V5;
const NET_ABI: ABI = ABI::V4;
const SCOPE_ABI: ABI = ABI::V6;

fn fs_access(perms: Perms, is_dir: bool) -> BitFlags<AccessFs> {
    let mut a = BitFlags::<AccessFs>::empty();
    if perms.read {
        a |= AccessFs::ReadFile;
        if is_dir {
            a |= AccessFs::ReadDir;
        }
    }
    if perms.write {
        a |= AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
    }
    if perms.exec {
        a |= AccessFs::Execute;
    }
    if perms.create && is_dir {
        a |= AccessFs::MakeReg
            | AccessFs::MakeDir
            | AccessFs::MakeSym
            | AccessFs::MakeSock
            | AccessFs::MakeFifo
            | AccessFs::RemoveFile
            | AccessFs::RemoveDir
            | AccessFs::Refer;
    }
    a & AccessFs::from_all(FS_ABI)
}

/// A ruleset ready to be enforced, and what was skipped while building it.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The ruleset's fd; `None` on a kernel without Landlock.
    pub(crate) ruleset: Option<OwnedFd>,
    /// What enforcing it will give on this kernel.
    pub(crate) level: Level,
    pub(crate) skipped: Vec<PathBuf>,
}

/// What the ruleset enforces on a kernel of Landlock ABI `abi`: all of it
/// from ABI 6 (the scopes; filesystem rights need 5, TCP ports 4), some of
/// it from ABI 1, nothing without Landlock. The `landlock` crate drops what
/// the kernel cannot enforce (best effort) or refuses it (required).
fn level_for_abi(abi: i32) -> Level {
    match abi {
        a if a >= SCOPE_ABI as i32 => Level::Full,
        a if a >= 1 => Level::Partial,
        _ => Level::None,
    }
}

/// The quiet allowances of a ruleset (`super::allowances`): paths opened
/// to the program whatever was unveiled, and the rights the caller's
/// unveils keep (those some promise lets the program use).
#[derive(Debug, Clone)]
pub(crate) struct Quiet {
    pub(crate) paths: Vec<Unveil>,
    pub(crate) granted: BitFlags<AccessFs>,
}

impl Quiet {
    /// No allowance, every right kept (Landlock alone, for tests).
    pub(crate) fn none() -> Self {
        Self {
            paths: Vec::new(),
            granted: AccessFs::from_all(FS_ABI),
        }
    }
}

/// Builds the ruleset: opens every unveiled path now (before anything is
/// restricted), so a missing one is reported by name. `require`: a kernel
/// that cannot enforce every right, port rule and scope handled here is an
/// error now (the `landlock` crate's hard requirement), not a partial
/// report after the fact.
pub(crate) fn prepare(
    unveils: &[Unveil],
    quiet: &Quiet,
    bind: &[u16],
    connect: &[u16],
    require: bool,
) -> Result<Prepared, UnveilError> {
    let level = if require {
        CompatLevel::HardRequirement
    } else {
        CompatLevel::BestEffort
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(FS_ABI))?
        .handle_access(AccessNet::from_all(NET_ABI))?
        .scope(Scope::from_all(SCOPE_ABI))?
        .create()?;
    let mut skipped = Vec::new();
    let quiet_unveils = quiet.paths.iter().map(|u| (u, true));
    for (u, is_quiet) in unveils.iter().map(|u| (u, false)).chain(quiet_unveils) {
        // Opened once (O_PATH): whether it is a directory comes from that
        // fd, not from a second lookup of the name that could find
        // something else.
        let fd = match PathFd::new(&u.path) {
            Ok(fd) => fd,
            Err(PathFdError::OpenCall { source, .. })
                if u.optional && source.kind() == std::io::ErrorKind::NotFound =>
            {
                // A quiet allowance missing on this system is no news.
                if !is_quiet {
                    skipped.push(u.path.clone());
                }
                continue;
            }
            Err(PathFdError::OpenCall { source, .. }) => {
                return Err(UnveilError::Path {
                    path: u.path.clone(),
                    source,
                });
            }
            Err(e) => {
                return Err(UnveilError::Path {
                    path: u.path.clone(),
                    source: std::io::Error::other(e.to_string()),
                });
            }
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| UnveilError::Path {
            path: u.path.clone(),
            source: e.into(),
        })?;
        let is_dir = rustix::fs::FileType::from_raw_mode(stat.st_mode).is_dir();
        let mut access = fs_access(u.perms, is_dir);
        if !is_quiet {
            access &= quiet.granted;
        }
        if access.is_empty() {
            continue;
        }
        ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?;
    }
    for &port in bind {
        ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::BindTcp))?;
    }
    for &port in connect {
        ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
    }
    let fd: Option<OwnedFd> = ruleset.into();
    let level = if fd.is_some() {
        level_for_abi(crate::sys::landlock_abi())
    } else {
        Level::None
    };
    Ok(Prepared {
        ruleset: fd,
        level,
        skipped,
    })
}

/// Enforces the ruleset on the calling thread (the sandbox refuses to run
/// with other threads: before ABI 8, Landlock restricts only the caller)
/// with one system call; the prepared ruleset stays usable for the next
/// child. `no_new_privs` must already be set.
pub(crate) fn enforce(prepared: &Prepared) -> std::io::Result<Level> {
    if let Some(fd) = &prepared.ruleset {
        crate::sys::landlock_restrict_self(fd.as_fd())?;
    }
    Ok(prepared.level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let u = Unveil::parse("rwc:/srv/data").unwrap();
        assert_eq!(u.path, PathBuf::from("/srv/data"));
        assert!(u.perms.read && u.perms.write && u.perms.create && !u.perms.exec);
        assert!(!u.optional);
        assert!(Unveil::parse("r?:/etc/ssl").unwrap().optional);
        // A bare path: read-only, as pledge.com's -v PATH (a ':' in it is
        // part of the path).
        for (spec, path) in [("/etc", "/etc"), ("/srv/a:b", "/srv/a:b")] {
            let u = Unveil::parse(spec).unwrap();
            assert_eq!(u.path, PathBuf::from(path));
            assert_eq!(
                u.perms,
                Perms {
                    read: true,
                    ..Perms::default()
                }
            );
            assert!(!u.optional);
        }
    }

    #[test]
    fn levels_follow_the_abi() {
        assert_eq!(level_for_abi(0), Level::None);
        assert_eq!(level_for_abi(4), Level::Partial);
        assert_eq!(level_for_abi(5), Level::Partial);
        assert_eq!(level_for_abi(6), Level::Full);
        assert_eq!(level_for_abi(7), Level::Full);
    }

    #[test]
    fn bad_specs_say_why() {
        for (spec, why) in [
            ("etc", "no ':'"),
            ("r:", "empty path"),
            ("r:etc", "absolute"),
            (":/etc", "no permissions"),
            ("rq:/etc", "unknown permission 'q'"),
            ("rr:/etc", "given twice"),
        ] {
            let e = Unveil::parse(spec).unwrap_err().to_string();
            assert!(e.contains(spec) && e.contains(why), "{spec}: {e}");
        }
    }
}
