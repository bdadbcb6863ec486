//! Whether a path can be changed under a privileged process by someone
//! less privileged.
//!
//! A root process that checks a file by name and uses it by name later
//! (unveils a library, executes a program, binds a socket and sets its
//! mode) is open to a swap in between — a symlink renamed over the file,
//! or a directory on the way flipped to a symlink — by anyone who can
//! write a directory on that path. [`check`] refuses such paths: every
//! directory from `/` down to the path's own directory must be owned by
//! root or by one of the trusted uids and writable by nobody else, unless
//! it is sticky (like `/tmp`): then only its owner and each entry's owner
//! can rename or remove entries, and the next component's owner is checked
//! in turn. The same rule OpenSSH applies to its key files.
//!
//! The path is checked as given, component by component, without
//! following symlinks in the directories checked (a symlink on the way is
//! followed and its target checked the same way, so `/lib` → `usr/lib`
//! works).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Why a path is not trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UntrustedPath {
    /// The file, or a directory on the way, can be written by someone
    /// else.
    #[error(
        "{path}: {dir} is writable by uid {owner} or by others (mode {mode:o}), so it could \
         be changed between the check and its use; keep it owned by root (or the caller) and \
         writable by no one else, in directories only root can write"
    )]
    Writable {
        /// The path checked.
        path: PathBuf,
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its mode.
        mode: u32,
    },
    /// The path or a directory on it cannot be examined.
    #[error("{path}: cannot check {dir}: {source}")]
    Stat {
        /// The path checked.
        path: PathBuf,
        /// What could not be examined.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Symlinks nest too deep.
    #[error("{path}: too many symbolic links")]
    Loop {
        /// The path checked.
        path: PathBuf,
    },
}

/// Checks that no one but root or `trusted` uids can change what `path`
/// names (see the module docs). `path` must be absolute.
///
/// # Errors
///
/// [`UntrustedPath`] naming the first directory that others can write.
pub fn check(path: &Path, trusted: &[u32]) -> Result<(), UntrustedPath> {
    absolute(path)?;
    let mut budget = 40; // symlinks followed
    check_inner(path, path, trusted, false, &mut budget)
}

/// As [`check`], for a directory whose entries are looked up by name
/// later (a library search directory): the directory itself must be
/// writable by no one else either.
///
/// # Errors
///
/// [`UntrustedPath`] naming the first directory that others can write.
pub fn check_dir(dir: &Path, trusted: &[u32]) -> Result<(), UntrustedPath> {
    absolute(dir)?;
    let mut budget = 40;
    check_inner(dir, dir, trusted, true, &mut budget)
}

/// A relative path would be checked from `/`, not from where it is used.
fn absolute(path: &Path) -> Result<(), UntrustedPath> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(UntrustedPath::Stat {
            path: path.to_path_buf(),
            dir: path.to_path_buf(),
            source: io::Error::other("the path must be absolute"),
        })
    }
}

fn check_inner(
    original: &Path,
    path: &Path,
    trusted: &[u32],
    last_is_dir: bool,
    budget: &mut u32,
) -> Result<(), UntrustedPath> {
    let ok_owner = |uid: u32| uid == 0 || trusted.contains(&uid);
    let stat = |p: &Path| {
        std::fs::symlink_metadata(p).map_err(|source| UntrustedPath::Stat {
            path: original.to_path_buf(),
            dir: p.to_path_buf(),
            source,
        })
    };
    let mut cur = PathBuf::from("/");
    let mut comps = path.components().peekable();
    let mut parent_sticky_owner: Option<u32> = None;
    while let Some(c) = comps.next() {
        match c {
            Component::RootDir => {
                cur = PathBuf::from("/");
            }
            Component::CurDir => continue,
            Component::ParentDir => {
                cur.pop();
            }
            Component::Normal(name) => {
                let next = cur.join(name);
                let meta = stat(&next)?;
                // In a sticky directory, an entry owned by someone else
                // could be swapped by its owner.
                if parent_sticky_owner.is_some() && !ok_owner(meta.uid()) {
                    return Err(UntrustedPath::Writable {
                        path: original.to_path_buf(),
                        dir: next,
                        owner: meta.uid(),
                        mode: meta.mode() & 0o7777,
                    });
                }
                if meta.file_type().is_symlink() {
                    *budget = budget.checked_sub(1).ok_or_else(|| UntrustedPath::Loop {
                        path: original.to_path_buf(),
                    })?;
                    let target =
                        std::fs::read_link(&next).map_err(|source| UntrustedPath::Stat {
                            path: original.to_path_buf(),
                            dir: next.clone(),
                            source,
                        })?;
                    let mut resolved = if target.is_absolute() {
                        target
                    } else {
                        cur.join(target)
                    };
                    for rest in comps.by_ref() {
                        resolved.push(rest);
                    }
                    return check_inner(original, &resolved, trusted, last_is_dir, budget);
                }
                cur = next;
                if comps.peek().is_none() && !last_is_dir {
                    // The file itself: whoever owns it or can write it
                    // can change it between the check and its use (a
                    // program's execstack header, a library's code).
                    if !ok_owner(meta.uid()) || meta.mode() & 0o022 != 0 {
                        return Err(UntrustedPath::Writable {
                            path: original.to_path_buf(),
                            dir: cur,
                            owner: meta.uid(),
                            mode: meta.mode() & 0o7777,
                        });
                    }
                    break;
                }
            }
            Component::Prefix(_) => {}
        }
        // `cur` is a directory the path goes through.
        let meta = stat(&cur)?;
        let mode = meta.mode();
        let writable_by_others = mode & 0o022 != 0;
        let sticky = mode & 0o1000 != 0;
        if !ok_owner(meta.uid()) || (writable_by_others && !sticky) {
            return Err(UntrustedPath::Writable {
                path: original.to_path_buf(),
                dir: cur,
                owner: meta.uid(),
                mode: mode & 0o7777,
            });
        }
        parent_sticky_owner = (writable_by_others && sticky).then_some(meta.uid());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_paths_are_trusted() {
        for p in [
            "/usr/bin/true",
            "/lib/x86_64-linux-gnu",
            "/etc/ld.so.cache",
            "/",
        ] {
            if Path::new(p).exists() {
                check(Path::new(p), &[]).unwrap_or_else(|e| panic!("{p}: {e}"));
            }
        }
    }

    #[test]
    fn relative_paths_are_refused() {
        for p in ["x", "", "./usr/bin/true"] {
            let e = check(Path::new(p), &[]).unwrap_err();
            assert!(e.to_string().contains("absolute"), "{p:?}: {e}");
            assert!(check_dir(Path::new(p), &[]).is_err(), "{p:?}");
        }
    }

    #[test]
    fn the_file_itself_must_be_trusted() {
        let me = rustix::process::geteuid().as_raw();
        let dir =
            std::env::temp_dir().join(format!("privfork-trusted-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let file = dir.join("prog");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert!(check(&file, &[me]).is_ok());
        // Writable by others: refused.
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let e = check(&file, &[me]).unwrap_err();
        assert!(e.to_string().contains("prog"), "{e}");
        // Owned by someone else (when the test may chown): refused.
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        if me == 0 {
            std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
            assert!(check(&file, &[]).is_err());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_sticky_dir_needs_a_trusted_entry() {
        // /tmp is sticky and world-writable: an entry owned by a trusted
        // uid is fine, the sticky directory alone is not a refusal.
        let tmp = std::env::temp_dir();
        let meta = std::fs::metadata(&tmp).unwrap();
        if meta.mode() & 0o1000 != 0 {
            let me = rustix::process::geteuid().as_raw();
            let dir = tmp.join(format!("privfork-trusted-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            let file = dir.join("f");
            std::fs::write(&file, "x").unwrap();
            assert!(check(&file, &[me]).is_ok());
            // The same directory made writable by others: refused.
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .unwrap();
            let e = check(&file, &[me]).unwrap_err();
            assert!(e.to_string().contains("writable"), "{e}");
            // As a search directory: the directory itself is checked.
            assert!(check_dir(&dir, &[me]).is_err());
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            assert!(check_dir(&dir, &[me]).is_ok());
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
