//! pledge(2) and unveil(2) passed through on OpenBSD, where they exist.
//!
//! Compiled only on OpenBSD (it cannot be built on the Linux machines this
//! project is tested on); kept small enough to check by reading.

use std::ffi::CString;
use std::io;
use std::path::Path;

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `pledge(promises, execpromises)`; `None` leaves that set unchanged.
///
/// # Errors
///
/// The error pledge(2) returns (EINVAL for an unknown promise, EPERM for
/// an attempt to widen).
pub fn pledge(promises: Option<&str>, execpromises: Option<&str>) -> io::Result<()> {
    let p = promises.map(cstring).transpose()?;
    let e = execpromises.map(cstring).transpose()?;
    crate::sys::openbsd::pledge(p.as_deref(), e.as_deref())
}

/// `unveil(path, permissions)`, permissions from "rwxc".
///
/// # Errors
///
/// The error unveil(2) returns.
pub fn unveil(path: &Path, permissions: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let perms = cstring(permissions)?;
    crate::sys::openbsd::unveil(Some(&path), Some(&perms))
}

/// `unveil(NULL, NULL)`: no more unveil calls.
///
/// # Errors
///
/// The error unveil(2) returns.
pub fn lock_unveil() -> io::Result<()> {
    crate::sys::openbsd::unveil(None, None)
}
