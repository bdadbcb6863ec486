//! The OpenBSD system calls, for `sandbox::openbsd` (OpenBSD only).

use std::ffi::CStr;
use std::io;

fn ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

/// pledge(2).
pub(crate) fn pledge(promises: Option<&CStr>, execpromises: Option<&CStr>) -> io::Result<()> {
    // SAFETY: both pointers are null or NUL-terminated strings alive for
    // the call; pledge only reads them.
    let rc = unsafe { libc::pledge(ptr(promises), ptr(execpromises)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// unveil(2).
pub(crate) fn unveil(path: Option<&CStr>, permissions: Option<&CStr>) -> io::Result<()> {
    // SAFETY: both pointers are null or NUL-terminated strings alive for
    // the call; unveil only reads them.
    let rc = unsafe { libc::unveil(ptr(path), ptr(permissions)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
