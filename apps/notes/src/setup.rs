//! What main does before the family starts: resolve the users, make the
//! data directory (owned by the worker's user, mode 0700), turn `--listen`
//! into listener specs; and `--check`, which does all the checking and
//! none of the doing.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use privfork::Identity;
use privfork::listen::ListenSpec;
use rustix::fs::{Mode, OFlags};

use crate::config::Config;
use crate::store::Store;

/// The configuration made absolute, and the listener specs.
pub fn prepare(mut config: Config) -> Result<(Config, Vec<ListenSpec>), String> {
    let root = rustix::process::geteuid().is_root();
    let worker = resolve("--user", &config.user)?;
    resolve("--render-user", &config.render_user)?;
    let worker = if root {
        worker
    } else {
        resolve(
            "the current user",
            &rustix::process::getuid().as_raw().to_string(),
        )?
    };
    config.data = absolute(&config.data)?;
    // Checked once absolute: the working directory is part of it.
    if config.data.to_str().is_none() {
        return Err(format!(
            "--data {}: the path must be valid UTF-8 (it is passed on to the worker as text)",
            config.data.display()
        ));
    }
    let specs = listen_specs(&config.listen)?;
    if !root {
        // Everything runs as the caller: the only user it can be.
        let me = rustix::process::getuid().as_raw().to_string();
        config.user.clone_from(&me);
        config.render_user = me;
        eprintln!(
            "notes: warning: not running as root, so no process changes users: the worker \
             and the render children run as uid {} (--user and --render-user are not \
             enforced); the sandbox (seccomp, Landlock, no_new_privs) still is",
            rustix::process::getuid().as_raw()
        );
    }
    data_dir(&config.data, root.then_some(&worker))?;
    if config.no_sandbox {
        eprintln!(
            "notes: WARNING: --no-sandbox: the worker runs WITHOUT seccomp and Landlock. \
             This exists to measure the sandbox's cost; never serve anyone like this."
        );
    }
    if restarted_image() {
        // The same lines as at the first start: said once is enough.
        return Ok((config, specs));
    }
    for l in &config.listen {
        match l.strip_prefix("unix:") {
            Some(path) => eprintln!(
                "notes: serving on unix socket {}",
                path.split(',').next().unwrap_or(path)
            ),
            None => eprintln!(
                "notes: serving on http://{}/",
                l.split(',').next().unwrap_or(l)
            ),
        }
    }
    eprintln!(
        "notes: data in {}, worker as {}",
        config.data.display(),
        config.user
    );
    Ok((config, specs))
}

/// Whether this main is the image a smooth restart executed in place
/// (the family passes it the running generation's state record in this
/// variable), not a first start.
fn restarted_image() -> bool {
    privfork::family::Family::is_restart()
}

/// The user main runs the worker as (`--user`; the caller itself when
/// not root).
pub fn worker_user_override(config: &Config) -> Option<String> {
    Some(config.user.clone())
}

/// `--check`: the configuration parses, the users exist, the listener
/// specs are valid, the data directory is usable (or can be created),
/// and rendering works and strips script. Binds nothing, creates and
/// deletes nothing. 0 when all is well, 1 otherwise.
pub fn check(config: &Config) -> i32 {
    let mut failed = false;
    let mut report = |what: &str, r: Result<String, String>| match r {
        Ok(detail) => eprintln!("notes --check: ok: {what}{detail}"),
        Err(e) => {
            failed = true;
            eprintln!("notes --check: FAILED: {what}: {e}");
        }
    };
    let worker = resolve("--user", &config.user);
    report(
        "worker user",
        worker.as_ref().map(|_| String::new()).map_err(Clone::clone),
    );
    report(
        "render user",
        resolve("--render-user", &config.render_user).map(|_| String::new()),
    );
    report(
        "listeners",
        listen_specs(&config.listen).map(|s| format!(" ({} valid, none bound)", s.len())),
    );
    report(
        "data directory",
        check_data_dir(config, worker.ok().as_ref()),
    );
    report("render self-test", render_self_test());
    i32::from(failed)
}

fn check_data_dir(config: &Config, worker: Option<&Identity>) -> Result<String, String> {
    let dir = absolute(&config.data)?;
    match std::fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir.parent().ok_or("no parent directory")?;
            if !parent.is_dir() {
                return Err(format!(
                    "{} is missing and its parent {} is not a directory",
                    dir.display(),
                    parent.display()
                ));
            }
            Ok(format!(" ({} would be created)", dir.display()))
        }
        Err(e) => Err(format!("{}: {e}", dir.display())),
        Ok(_) => {
            let fd = open_dir(&dir)?;
            if let Some(w) = worker
                && rustix::process::geteuid().is_root()
            {
                check_owner(&dir, fd.as_fd(), w)?;
            }
            let store = Store::from_fd(fd).map_err(|e| format!("{}: {e}", dir.display()))?;
            store
                .check()
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            Ok(format!(" ({})", dir.display()))
        }
    }
}

fn render_self_test() -> Result<String, String> {
    let html = crate::render::render(
        "# t\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) **b** <img src=x onerror=alert(1)>",
    );
    // Raw HTML may survive as escaped text; never as a tag.
    if html.contains("<script") || html.contains("javascript:") || html.contains("<img") {
        return Err(format!("unsafe output survived sanitizing: {html}"));
    }
    if !html.contains("<strong>b</strong>") {
        return Err(format!("markdown was not rendered: {html}"));
    }
    Ok(String::new())
}

/// Resolves a user option; root is refused (the point is to run as
/// someone else).
fn resolve(flag: &str, user: &str) -> Result<Identity, String> {
    let id = Identity::user(user).map_err(|e| format!("{flag} {user}: {e}"))?;
    if id.uid() == 0 {
        return Err(format!(
            "{flag} {user}: uid 0 is refused: the worker and the render children must not run as root"
        ));
    }
    Ok(id)
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    if p.is_absolute() {
        return Ok(p.to_owned());
    }
    let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    Ok(cwd.join(p))
}

/// Each `--listen` as a spec named `http0`, `http1`, ….
fn listen_specs(listen: &[String]) -> Result<Vec<ListenSpec>, String> {
    listen
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let spec = if l.split(',').any(|p| p.starts_with("name=")) {
                l.clone()
            } else {
                format!("{l},name=http{i}")
            };
            spec.parse().map_err(|e| format!("--listen {l}: {e}"))
        })
        .collect()
}

fn open_dir(dir: &Path) -> Result<std::os::fd::OwnedFd, String> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
            format!(
                "{}: not a directory (or a symlink, which is refused)",
                dir.display()
            )
        }
        e => format!("{}: {e}", dir.display()),
    })
}

fn check_owner(
    dir: &Path,
    fd: std::os::fd::BorrowedFd<'_>,
    worker: &Identity,
) -> Result<(), String> {
    let st = rustix::fs::fstat(fd).map_err(|e| format!("{}: {e}", dir.display()))?;
    if st.st_uid != worker.uid() {
        return Err(format!(
            "{} belongs to uid {}, but the worker runs as uid {}: chown it, or choose \
             another --data or --user",
            dir.display(),
            st.st_uid,
            worker.uid()
        ));
    }
    if st.st_mode & 0o077 != 0 {
        return Err(format!(
            "{} is mode {:o}: others can reach the notes; chmod 700 it",
            dir.display(),
            st.st_mode & 0o7777
        ));
    }
    Ok(())
}

/// Makes the data directory if it is missing: mode 0700, owned by the
/// worker's user (`None`: not root, it stays the caller's). An existing
/// one must be a real directory (not a symlink) owned by that user.
///
/// The directory is made and opened relative to the parent, opened once,
/// the last step without following a symlink. Whoever can write the parent
/// (the user who ran `sudo` in their home, say) could still swap another
/// directory in between root's `mkdir` and its `open`; so before handing it
/// to the worker's user, root checks that what it opened is what it made:
/// a directory of root's, mode 0700, empty.
fn data_dir(dir: &Path, worker: Option<&Identity>) -> Result<(), String> {
    let (parent, name) = match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => return Err(format!("{}: not a directory path", dir.display())),
    };
    let parent_fd = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", parent.display()))?;
    let open = || {
        rustix::fs::openat(
            &parent_fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => format!(
                "{}: not a directory (or a symlink, which is refused)",
                dir.display()
            ),
            e => format!("{}: {e}", dir.display()),
        })
    };
    match rustix::fs::mkdirat(&parent_fd, name, Mode::RWXU) {
        Ok(()) => {
            let fd = open()?;
            if let Some(w) = worker {
                made_by_us(dir, &fd)?;
                rustix::fs::fchown(
                    &fd,
                    Some(rustix::process::Uid::from_raw(w.uid())),
                    Some(rustix::process::Gid::from_raw(w.gid())),
                )
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
            }
            rustix::fs::fchmod(&fd, Mode::RWXU)
                .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
            eprintln!("notes: created {}", dir.display());
            Ok(())
        }
        Err(rustix::io::Errno::EXIST) => {
            let fd = open()?;
            match worker {
                Some(w) => check_owner(dir, fd.as_fd(), w),
                None => Ok(()),
            }
        }
        Err(e) => Err(format!("creating {}: {e}", dir.display())),
    }
}

/// Whether `fd` is the directory root just made: root's, mode 0700 (the
/// umask may only have taken bits away), with no entry.
fn made_by_us(dir: &Path, fd: &std::os::fd::OwnedFd) -> Result<(), String> {
    let swapped = || {
        format!(
            "{}: the directory changed between its creation and its opening (someone who \
             can write its parent swapped it?); not handing it to the worker",
            dir.display()
        )
    };
    let st = rustix::fs::fstat(fd).map_err(|e| format!("{}: {e}", dir.display()))?;
    if st.st_uid != 0 || st.st_mode & 0o077 != 0 {
        return Err(swapped());
    }
    let entries = rustix::fs::Dir::read_from(fd).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Err(swapped());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_roots_own_empty_private_directory_counts_as_made_here() {
        assert!(rustix::process::geteuid().is_root(), "run as root");
        let base = std::env::temp_dir().join(format!("notes-made-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        let open = |p: &Path| open_dir(p).unwrap();
        let fresh = base.join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        std::fs::set_permissions(&fresh, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        assert!(made_by_us(&fresh, &open(&fresh)).is_ok());
        // Someone else's, open to others, or with something in it: swapped.
        let theirs = base.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        std::os::unix::fs::chown(&theirs, Some(4004), Some(4004)).unwrap();
        assert!(made_by_us(&theirs, &open(&theirs)).is_err());
        let wide = base.join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert!(made_by_us(&wide, &open(&wide)).is_err());
        std::fs::write(fresh.join("planted"), "x").unwrap();
        assert!(made_by_us(&fresh, &open(&fresh)).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
