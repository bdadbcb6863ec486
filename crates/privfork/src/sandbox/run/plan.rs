//! What `privfork run` works out before any fork, as root, from the
//! command line: the program's path, whether only root and the caller can
//! change what it and its libraries name (`crate::trusted_path`), and the
//! sandbox — the caller's unveils, and exactly what the dynamic loader
//! opens (see [`crate::sandbox::loader`]).

use super::*;

/// Finds `program` as execvp would, in `path` (the program's own `PATH`)
/// unless it contains a '/'; made absolute (`--chdir` happens before the
/// exec).
pub(super) fn resolve(program: &Path, path: Option<&std::ffi::OsStr>) -> Result<PathBuf, RunError> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return if program.exists() {
            std::path::absolute(program).map_err(|e| fail(exit::NOT_FOUND, e))
        } else {
            Err(fail(
                exit::NOT_FOUND,
                format!("{}: no such file", program.display()),
            ))
        };
    }
    let path = path.unwrap_or(SAFE_PATH.as_ref());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return std::path::absolute(candidate).map_err(|e| fail(exit::NOT_FOUND, e));
        }
    }
    Err(fail(
        exit::NOT_FOUND,
        format!(
            "{}: command not found in the program's PATH ({})",
            program.display(),
            path.to_string_lossy()
        ),
    ))
}

/// Opens `path` for reading only if it is a regular file. privfork is
/// still root here and the path may come from an untrusted ELF file
/// (`PT_INTERP`, `DT_NEEDED`, `DT_RUNPATH`): opening a device for reading
/// can do something (`/dev/watchdog` arms a watchdog), a FIFO blocks, a
/// terminal could become privfork's. So the path is first opened
/// `O_PATH` (which opens nothing: no driver's `open` runs), checked with
/// `fstat`, and only a regular file is opened for reading, through that
/// same fd (`/proc/self/fd/N`), not by its name again.
///
/// # Errors
///
/// The error of `open` or `fstat`; `InvalidInput` for anything but a
/// regular file.
pub(in crate::sandbox) fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{FileType, Mode, OFlags};
    let opath = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    let stat = rustix::fs::fstat(&opath)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let through = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&opath));
    let f = rustix::fs::open(
        through.as_str(),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(f.into())
}

/// The interpreter a script names on its `#!` line (the first word; the
/// kernel reads at most 256 bytes), if `program` is a script. It is not
/// unveiled automatically: the script, not the caller, names it. The
/// caller unveils it (`-v rx:/bin/sh`).
pub(super) fn script_interpreter(program: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = Vec::with_capacity(256);
    open_regular(program)
        .ok()?
        .take(256)
        .read_to_end(&mut head)
        .ok()?;
    let line = head.strip_prefix(b"#!")?;
    let line = line.split(|&c| c == b'\n').next()?;
    let word = line
        .split(|&c| c == b' ' || c == b'\t')
        .find(|w| !w.is_empty())?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(word)))
}

/// A resolution failure, with its exit code.
fn resolve_fail(e: crate::sandbox::loader::ResolveError) -> RunError {
    use crate::sandbox::loader::ResolveError;
    let code = match e {
        ResolveError::Missing { .. } | ResolveError::TooMany { .. } => exit::MISSING_LIBRARY,
        _ => exit::CANNOT_EXEC,
    };
    fail(code, e)
}

/// Refuses `path` unless only root and the caller (privfork's real uid)
/// can change what it names: privfork, root, checks these files by name
/// and Landlock opens them again by name; a directory on the way that
/// someone else can write lets them swap the file (for a symlink to `/`,
/// say) in between.
fn trusted(path: &Path, dir: bool) -> Result<(), RunError> {
    use crate::trusted_path;
    let caller = [rustix::process::getuid().as_raw()];
    let abs = std::path::absolute(path).map_err(|e| fail(exit::NOT_FOUND, e))?;
    let checked = if dir {
        trusted_path::check_dir(&abs, &caller)
    } else {
        trusted_path::check(&abs, &caller)
    };
    match checked {
        Ok(()) => Ok(()),
        // A search directory that does not exist: the loader passes over
        // it, and anything created there later is not unveiled.
        Err(trusted_path::UntrustedPath::Stat { source, .. })
            if dir && source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        Err(e) => Err(fail(exit::UNTRUSTED_PATH, format!("refusing to run: {e}"))),
    }
}

/// Checks every file and search directory of `r` with [`trusted`].
fn trusted_resolution(r: &crate::sandbox::loader::Resolution) -> Result<(), RunError> {
    for p in r.found.iter().chain(&r.interpreter).chain(&r.libraries) {
        trusted(p, false)?;
    }
    for d in &r.search_dirs {
        trusted(d, true)?;
    }
    Ok(())
}

/// Read (and, for the program and interpreters, execute) permissions.
fn perms(exec: bool) -> crate::sandbox::Perms {
    crate::sandbox::Perms {
        read: true,
        exec,
        ..Default::default()
    }
}

/// Builds the sandbox for `opts` (before any fork, so bad input is
/// reported by the privfork process itself).
///
/// Unveils the caller's paths, and exactly what the dynamic loader opens
/// (see [`crate::sandbox::loader`]): the program and its interpreter for reading
/// and execution (the kernel opens both at exec), each library it needs
/// for reading only (the loader `mmap`s them with `PROT_EXEC`, which
/// Landlock does not govern), and `/etc/ld.so.cache`. The same for every
/// regular file the caller unveiled for execution, and for a script's
/// interpreter if the caller unveiled it for execution: a program the
/// caller lets run needs its libraries too. Nothing a script names is
/// unveiled on its say-so.
pub(super) fn sandbox(opts: &RunOptions, program: &Path) -> Result<Sandbox, RunError> {
    use crate::sandbox::loader;
    let mut sb = Sandbox::new()
        .promises(&opts.promises)
        .map_err(|e| fail(exit::BAD_PROMISE, e))?;
    // Only when asked: otherwise the `error` promise decides.
    if let Some(v) = opts.violation {
        sb = sb.violation(v);
    }
    let mut sb = sb
        // Fail closed: a kernel without a layer is refused by `prepare`,
        // before anything is restricted or started.
        .policy(if opts.best_effort {
            Policy::BestEffort
        } else {
            Policy::Require
        });
    if !sb.promise_set().contains(crate::sandbox::Promise::Stdio) {
        return Err(fail(
            exit::BAD_PROMISE,
            "the promises must include stdio (a program cannot even exit without it)",
        ));
    }
    let prot_exec = sb.promise_set().contains(crate::sandbox::Promise::ProtExec);
    // Each spec parsed once; a missing path is reported here, by name,
    // before any fork.
    let mut unveils = Vec::new();
    for spec in &opts.unveil {
        let u = Unveil::parse(spec).map_err(|e| fail(exit::BAD_UNVEIL, e))?;
        if !u.optional && !u.path.exists() {
            return Err(fail(
                exit::BAD_UNVEIL,
                format!(
                    "cannot unveil {}: no such file or directory",
                    u.path.display()
                ),
            ));
        }
        unveils.push(u);
    }
    // Checked before it is first opened or resolved: from here on, only
    // root and the caller can change what the name points to.
    trusted(program, false)?;
    let program = program
        .canonicalize()
        .map_err(|e| fail(exit::NOT_FOUND, format!("{}: {e}", program.display())))?;
    let loaded = loader::resolve(&program).map_err(resolve_fail)?;
    trusted_resolution(&loaded)?;
    let interpreter = script_interpreter(&program);
    // Only a dynamically linked program (or a script, whose interpreter
    // usually is) needs the loader's read-only opens and executable file
    // mappings.
    if interpreter.is_some() || loaded.dynamic {
        sb = sb.for_exec_loader();
    }
    // What the caller allowed to be executed, by canonical path.
    let exec_unveiled: Vec<PathBuf> = unveils
        .iter()
        .filter(|u| u.perms.exec)
        .filter_map(|u| u.path.canonicalize().ok())
        .collect();
    let mut programs = vec![(program.clone(), loaded)];
    let mut extra: Vec<PathBuf> = exec_unveiled
        .iter()
        .filter(|p| p.is_file())
        .cloned()
        .collect();
    if let Some(i) = interpreter.and_then(|i| i.canonicalize().ok())
        && exec_unveiled.iter().any(|u| i.starts_with(u))
    {
        extra.push(i);
    }
    for p in extra {
        if !programs.iter().any(|(q, _)| *q == p) {
            trusted(&p, false)?;
            let r = loader::resolve(&p).map_err(resolve_fail)?;
            trusted_resolution(&r)?;
            programs.push((p, r));
        }
    }
    let mut files = std::collections::BTreeMap::new();
    files.insert(program.clone(), true);
    for (path, r) in &programs {
        if let Some(obj) = &r.exec_stack
            && !prot_exec
        {
            return Err(fail(
                exit::EXEC_STACK,
                format!(
                    "{}: {} wants an executable stack (PT_GNU_STACK with PF_X, or none): \
                     promise prot_exec to run it",
                    path.display(),
                    obj.display()
                ),
            ));
        }
        if let Some(i) = &r.interpreter {
            files.insert(i.clone(), true);
        }
        for lib in &r.libraries {
            files.entry(lib.clone()).or_insert(false);
        }
    }
    for u in unveils {
        sb = sb.unveil_path(u);
    }
    if programs.iter().any(|(_, r)| r.dynamic) {
        sb = sb.unveil_path(Unveil {
            path: loader::LD_SO_CACHE.into(),
            perms: perms(false),
            optional: true,
        });
    }
    for (path, exec) in files {
        sb = sb.unveil_path(Unveil {
            path,
            perms: perms(exec),
            optional: false,
        });
    }
    for &p in &opts.bind {
        sb = sb.bind(p);
    }
    for &p in &opts.connect {
        sb = sb.connect(p);
    }
    Ok(sb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_and_fifos_are_recognised_safely() {
        let dir = std::env::temp_dir().join(format!("privfork-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = dir.join("s");
        std::fs::write(&s, "#!/bin/sh -e\necho\n").unwrap();
        assert!(script_interpreter(&s).is_some());
        assert_eq!(script_interpreter(&s), Some(PathBuf::from("/bin/sh")));
        std::fs::write(&s, "#! \t/usr/bin/env python3\n").unwrap();
        assert_eq!(script_interpreter(&s), Some(PathBuf::from("/usr/bin/env")));
        std::fs::write(&s, "echo\n").unwrap();
        assert!(script_interpreter(&s).is_none());
        // A FIFO is neither opened for long nor read: no hang.
        let fifo = dir.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();

        assert!(script_interpreter(&fifo).is_none());
        // Nor parsed as ELF: nothing to load.
        assert!(!crate::sandbox::loader::resolve(&fifo).unwrap().dynamic);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
