//! The quiet allowances: files every Landlock ruleset the sandbox builds
//! opens to the program whatever the caller unveiled (as pledge(2) lets
//! any process open `/dev/null` and the time zone files), and the files
//! promises that mean "read these system files" bring with them (`dns`:
//! the resolver's configuration, `getpw`: the user databases, ...).
//!
//! With Landlock enforced, the filter lets read-only opens through under
//! every promise (`promises::add_quiet_opens`) and Landlock decides which
//! file; writing `/dev/null` without `wpath` is `privfork run`'s
//! supervisor's (`sandbox::on_behalf`). For that to widen nothing else, the caller's unveils keep only the Landlock rights
//! some promise lets the program use ([`granted_by`]): without `wpath` or
//! `cpath` no unveiled path is writable, without `rpath` (or the loader's
//! read-only opens) none is readable — only the files below are.
//!
//! This list is the one source: the ruleset is built from it, and the
//! docs' list is rendered from it ([`render_markdown`], checked by a unit
//! test as the promise table is).

use landlock::{AccessFs, BitFlags};

pub(crate) use super::landlock::Quiet;
use super::landlock::{Perms, Unveil};
use super::promises::{Promise, Promises};

/// When a quiet allowance holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    /// Always, whatever the promises.
    Always,
    /// Under this promise.
    Under(Promise),
}

/// One file (or tree) opened to the program.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allowance {
    pub(crate) when: When,
    pub(crate) path: &'static str,
    /// Read-write (else read-only).
    pub(crate) write: bool,
    /// Read, write, create and remove beneath the directory (`tmppath`).
    pub(crate) create: bool,
    pub(crate) why: &'static str,
}

const fn ro(when: When, path: &'static str, why: &'static str) -> Allowance {
    Allowance {
        when,
        path,
        write: false,
        create: false,
        why,
    }
}

const TZ: &str = "time zone: glibc's tzset, as OpenBSD allows it under any promise";
const DNS: &str =
    "glibc's getaddrinfo reads it (OpenBSD's dns: resolv.conf, hosts, services, protocols)";
const PW: &str = "glibc 2.36's getpwnam/getgrnam (files module, built into libc) read it";
const LOCALE: &str = "the locale LANG and LC_* name (privfork run keeps them): glibc's setlocale loads it at start (perl warns, python and coreutils fall back without it); public data";
const VM: &str = "memory, CPU and load figures (free, uptime, nproc, top's header)";

/// Every quiet allowance. Paths that do not exist are skipped (a system
/// without `/etc/gai.conf` is no error); each is opened once, following
/// symlinks (`/etc/localtime` names its zone file, which gets the rule).
pub(crate) static ALLOWANCES: &[Allowance] = &[
    Allowance {
        when: When::Always,
        path: "/dev/null",
        write: true,
        create: false,
        why: "daemon(3), git and perl open it; as OpenBSD, read-write under any promise",
    },
    ro(
        When::Always,
        "/dev/zero",
        "zero pages (mmap of /dev/zero, dd if=/dev/zero)",
    ),
    ro(
        When::Always,
        "/dev/urandom",
        "randomness for libraries that read it instead of calling getrandom (OpenSSL's fallback, older runtimes)",
    ),
    ro(When::Always, "/etc/localtime", TZ),
    ro(When::Always, "/usr/share/zoneinfo", TZ),
    ro(When::Always, "/usr/lib/locale", LOCALE),
    ro(When::Always, "/usr/share/locale/locale.alias", LOCALE),
    ro(When::Under(Promise::Dns), "/etc/resolv.conf", DNS),
    ro(When::Under(Promise::Dns), "/etc/hosts", DNS),
    ro(When::Under(Promise::Dns), "/etc/nsswitch.conf", DNS),
    ro(When::Under(Promise::Dns), "/etc/gai.conf", DNS),
    ro(When::Under(Promise::Dns), "/etc/host.conf", DNS),
    ro(When::Under(Promise::Dns), "/etc/services", DNS),
    ro(When::Under(Promise::Dns), "/etc/protocols", DNS),
    ro(When::Under(Promise::Getpw), "/etc/nsswitch.conf", PW),
    ro(When::Under(Promise::Getpw), "/etc/passwd", PW),
    ro(When::Under(Promise::Getpw), "/etc/group", PW),
    Allowance {
        when: When::Under(Promise::Tmppath),
        path: "/tmp",
        write: true,
        create: true,
        why: "/tmp itself (see tmppath): files there are the user's by DAC and the sticky bit",
    },
    ro(
        When::Under(Promise::Ps),
        "/proc",
        "process listing: /proc/PID/{stat,status,cmdline} of every process, and the rest of /proc read-only — sysctls in /proc/sys, the network state in /proc/net (connections, routes), mounts included; file permissions and Landlock's ptrace scope still hide other processes' environ, fd and mem",
    ),
    ro(When::Under(Promise::Vminfo), "/proc/meminfo", VM),
    ro(When::Under(Promise::Vminfo), "/proc/stat", VM),
    ro(When::Under(Promise::Vminfo), "/proc/loadavg", VM),
    ro(When::Under(Promise::Vminfo), "/proc/uptime", VM),
    ro(When::Under(Promise::Vminfo), "/proc/cpuinfo", VM),
    ro(
        When::Under(Promise::Vminfo),
        "/sys/devices/system/cpu",
        "CPU counts (glibc's get_nprocs reads online, possible)",
    ),
];

/// Whether `a` holds under `promises`.
pub(crate) fn holds(a: &Allowance, promises: &Promises) -> bool {
    match a.when {
        When::Always => true,
        When::Under(p) => promises.contains(p),
    }
}

/// The Landlock rights of the caller's unveils some promise lets the
/// program use (with the quiet opens in the filter, a right no promise
/// backs would otherwise be usable): read with `rpath`, `wpath`, `cpath`
/// or the loader's read-only opens; write and truncate with `wpath` or
/// `cpath`; creating and removing with `cpath` (FIFOs with `dpath` too,
/// sockets with `unix`, whose `bind` makes them); execute always (exec is
/// the `exec` promise's, or the one exec of `privfork run`).
pub(crate) fn granted_by(promises: &Promises, loader: bool) -> BitFlags<AccessFs> {
    use Promise::{Cpath, Dpath, Rpath, Unix, Wpath};
    let any = |ps: &[Promise]| ps.iter().any(|p| promises.contains(*p));
    let mut a = BitFlags::from(AccessFs::Execute);
    if loader || any(&[Rpath, Wpath, Cpath]) {
        a |= AccessFs::ReadFile | AccessFs::ReadDir;
    }
    if any(&[Wpath, Cpath]) {
        a |= AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
    }
    // Terminal ioctls on an unveiled terminal device: tty's (the filter
    // lists which requests).
    if any(&[Promise::Tty]) {
        a |= AccessFs::IoctlDev;
    }
    if any(&[Cpath]) {
        a |= AccessFs::MakeReg
            | AccessFs::MakeDir
            | AccessFs::MakeSym
            | AccessFs::RemoveFile
            | AccessFs::RemoveDir
            | AccessFs::Refer;
    }
    if any(&[Cpath, Dpath]) {
        a |= AccessFs::MakeFifo;
    }
    if any(&[Cpath, Unix]) {
        a |= AccessFs::MakeSock;
    }
    a
}

/// The quiet part of a ruleset under `promises`: the allowances that hold,
/// and the rights the caller's unveils keep — all of them when no filter
/// is installed (`strip` false: Landlock alone, for tests), since only the
/// filter's quiet opens make the stripping necessary.
pub(crate) fn quiet(promises: &Promises, loader: bool, strip: bool) -> Quiet {
    let paths = ALLOWANCES
        .iter()
        .filter(|a| holds(a, promises))
        .map(|a| Unveil {
            path: a.path.into(),
            perms: Perms {
                read: true,
                write: a.write,
                exec: false,
                create: a.create,
            },
            optional: true,
        })
        .collect();
    Quiet {
        paths,
        granted: if strip {
            granted_by(promises, loader)
        } else {
            Quiet::none().granted
        },
    }
}

/// The docs' list: one line per allowance.
pub(crate) fn render_markdown() -> String {
    let mut out = String::from("| when | path | access | why |\n|---|---|---|---|\n");
    for a in ALLOWANCES {
        let when = match a.when {
            When::Always => "always".to_owned(),
            When::Under(p) => format!("`{p}`"),
        };
        let access = match (a.write, a.create) {
            (_, true) => "read, write, create, remove beneath",
            (true, false) => "read-write",
            (false, false) => "read-only",
        };
        out.push_str(&format!(
            "| {when} | `{}` | {access} | {} |\n",
            a.path, a.why
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_allowances_match() {
        crate::sandbox::table::check_docs_section("quiet allowances", &render_markdown());
    }

    #[test]
    fn no_promise_no_writable_unveil() {
        let g = granted_by(&Promises::parse("stdio rpath tmppath dns").unwrap(), true);
        assert!(!g.contains(AccessFs::WriteFile) && !g.contains(AccessFs::MakeReg));
        assert!(g.contains(AccessFs::ReadFile));
        let g = granted_by(&Promises::parse("stdio").unwrap(), false);
        assert_eq!(g, BitFlags::from(AccessFs::Execute));
    }
}
