//! Stages run as the target user, after the privilege drop and before the
//! sandbox: entering the working directory the caller asked for, and
//! checking that the program can be reached and executed. Both are checked
//! by the kernel with the target user's credentials (permissions and ACLs
//! alike), not worked out by privfork from mode bits — privfork itself,
//! root, reads the program and could not tell.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{Access, AtFlags, CWD};

/// A program to check before the sandbox is applied: its path and every
/// directory on the way to it, made before the fork.
#[derive(Debug, Clone)]
pub struct ExecCheck {
    /// `/`, `/a`, `/a/b`... up to the program's directory.
    dirs: Vec<CString>,
    program: CString,
    /// A script is read by its interpreter, as the user: it needs `r` too.
    script: bool,
}

impl ExecCheck {
    /// The check for `program` (made absolute against the current
    /// directory, which the program starts in unless `--chdir`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a path holding a NUL byte; the error of
    /// `getcwd` for a relative path.
    pub fn new(program: &Path, script: bool) -> io::Result<Self> {
        let abs = std::path::absolute(program)?;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        let mut dirs: Vec<CString> = abs.ancestors().skip(1).map(c).collect::<Result<_, _>>()?;
        dirs.reverse();
        Ok(Self {
            dirs,
            program: c(&abs)?,
            script,
        })
    }

    /// Checks, as the calling process's user, that each directory on the
    /// way can be searched and the program executed (and read, for a
    /// script). The error names the component that stops it.
    pub(super) fn check(&self) -> io::Result<()> {
        let lossy = |c: &CStr| c.to_string_lossy().into_owned();
        for dir in &self.dirs {
            if let Err(e) =
                rustix::fs::accessat(CWD, dir.as_c_str(), Access::EXEC_OK, AtFlags::EACCESS)
            {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("cannot search directory {}: {}", lossy(dir), reason(e)),
                ));
            }
        }
        let (want, what) = if self.script {
            (Access::EXEC_OK | Access::READ_OK, "read and execute")
        } else {
            (Access::EXEC_OK, "execute")
        };
        rustix::fs::accessat(CWD, self.program.as_c_str(), want, AtFlags::EACCESS).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot {what} {}: {}", lossy(&self.program), reason(e)),
            )
        })
    }
}

/// `chdir(dir)`, as the target user: a directory it cannot enter is
/// refused here, not entered with root's rights.
pub(super) fn enter(dir: &CStr) -> io::Result<()> {
    rustix::process::chdir(dir).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot enter {}: {}", dir.to_string_lossy(), reason(e)),
        )
    })
}

/// The error's description without its number ("Permission denied").
fn reason(e: rustix::io::Errno) -> String {
    let text = io::Error::from(e).to_string();
    match text.split_once(" (os error") {
        Some((words, _)) => words.to_owned(),
        None => text,
    }
}
