//! Soft answers: the start-up probes programs and their libraries make on
//! their own and cope with failing, answered with an errno instead of a
//! violation when no promise allows them (OpenBSD's pledge does the same
//! for a few: `fchown` under `fattr`, the terminal queries without `tty`).
//!
//! [`SOFT`] is the one source: the soft filter is compiled from it by
//! `seccomp::soft_filter` (the allowlist lets those calls through to it),
//! and the docs' list is rendered from it by [`render_soft_markdown`]
//! (checked by a unit test, as the promise table is).

use super::promises::{Promise, Promises};
use super::table::{self, Val};

/// When a soft answer applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SoftWhen {
    /// Only under this promise.
    pub(crate) with: Option<Promise>,
    /// Only when none of these is promised.
    pub(crate) without: &'static [Promise],
    /// Not with the loader rules of `privfork run` (which allow the call).
    pub(crate) not_loader: bool,
    /// Not with the quiet opens (Landlock fully enforced: the filter lets
    /// opens that create nothing through and Landlock decides).
    pub(crate) not_quiet_opens: bool,
}

const ALWAYS: SoftWhen = SoftWhen {
    with: None,
    without: &[],
    not_loader: false,
    not_quiet_opens: false,
};
const fn without(ps: &'static [Promise]) -> SoftWhen {
    SoftWhen {
        without: ps,
        ..ALWAYS
    }
}
const fn under(p: Promise) -> SoftWhen {
    SoftWhen {
        with: Some(p),
        ..ALWAYS
    }
}

/// How a soft answer looks at the call's arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SoftArg {
    /// Any arguments.
    Any,
    /// The `int` argument is one of the values.
    In(u8, &'static [Val]),
    /// The `int` argument is not the value.
    Not(u8, Val),
}

/// One start-up probe answered with an errno instead of a violation, and
/// why: the calls, which of their arguments, when, the errno.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SoftRule {
    pub(crate) calls: &'static [i64],
    pub(crate) arg: SoftArg,
    pub(crate) when: SoftWhen,
    pub(crate) errno: Val,
    pub(crate) why: &'static str,
}

macro_rules! val {
    ($n:ident) => {
        Val {
            v: libc::$n as i64,
            name: stringify!($n),
        }
    };
}

/// The terminal queries a program makes to learn whether and how big its
/// terminal is (`isatty`, `get_terminal_size`, job control's `tcgetpgrp`).
const TTY_QUERIES: &[Val] = &[
    val!(TCGETS),
    val!(TIOCGWINSZ),
    val!(TIOCGPGRP),
    val!(TIOCGSID),
];

/// Calls that libraries and programs make on their own at start-up and cope
/// with failing, answered with an errno instead of a violation when no
/// promise allows them (they would be refused anyway; being killed for them
/// would make small promise sets unusable). The one source of the soft
/// filter and of the docs' list (`render_soft_markdown`).
pub(crate) static SOFT: &[SoftRule] = &[
    SoftRule {
        calls: &[libc::SYS_ioctl],
        arg: SoftArg::In(1, TTY_QUERIES),
        when: without(&[Promise::Tty]),
        errno: val!(ENOTTY),
        why: "isatty(), terminal size (python3's shutil.get_terminal_size, ls, less) and tcgetpgrp: \"not a terminal\", as for a pipe",
    },
    SoftRule {
        calls: &[libc::SYS_socket],
        arg: SoftArg::In(0, &[val!(AF_UNIX)]),
        when: without(&[Promise::Unix]),
        errno: val!(EACCES),
        why: "glibc's NSS probes nscd's socket (getpwnam, getaddrinfo); \"cannot\" is an answer it takes; under privfork run with a NOTIFY_SOCKET, unix sockets go to the supervisor instead, which gives this answer too but for a datagram socket (see sd_notify)",
    },
    SoftRule {
        calls: &[libc::SYS_socket],
        arg: SoftArg::In(0, &[val!(AF_NETLINK)]),
        when: under(Promise::Dns),
        errno: val!(EACCES),
        why: "glibc's getaddrinfo asks the kernel for the interfaces' addresses (__check_pf, NETLINK_ROUTE); without an answer it assumes IPv4 and IPv6 both",
    },
    SoftRule {
        calls: &[
            libc::SYS_chmod,
            libc::SYS_fchmodat,
            libc::SYS_fchmodat2,
            libc::SYS_utime,
            libc::SYS_utimes,
            libc::SYS_futimesat,
        ],
        arg: SoftArg::Any,
        when: under(Promise::Fattr),
        errno: val!(EPERM),
        why: "path forms of chmod and utimes: the path is behind a pointer and Landlock does not govern them (the fd forms are in the table); under privfork run, chmod by path goes to the supervisor instead (see the differences: fattr)",
    },
    SoftRule {
        calls: &[libc::SYS_utimensat],
        arg: SoftArg::Not(1, Val { v: 0, name: "NULL" }),
        when: under(Promise::Fattr),
        errno: val!(EPERM),
        why: "utimensat with a path (its low half not NULL; a pointer whose low half is 0 is left to the allowlist, which compares all 64 bits)",
    },
    SoftRule {
        calls: &[libc::SYS_chown, libc::SYS_lchown, libc::SYS_fchownat],
        arg: SoftArg::Any,
        when: under(Promise::Chown),
        errno: val!(EPERM),
        why: "path forms of chown, as chmod's",
    },
    SoftRule {
        calls: &[
            libc::SYS_fchown,
            libc::SYS_chown,
            libc::SYS_lchown,
            libc::SYS_fchownat,
        ],
        arg: SoftArg::Any,
        when: SoftWhen {
            with: Some(Promise::Fattr),
            without: &[Promise::Chown],
            ..ALWAYS
        },
        errno: val!(EPERM),
        why: "gzip -k, xz -k, sed -i and cp -p give a copy its owner back: under fattr without chown, \"not permitted\" (OpenBSD answers EPERM too)",
    },
    SoftRule {
        calls: &[libc::SYS_sched_getaffinity],
        arg: SoftArg::Not(0, Val { v: 0, name: "0" }),
        when: ALWAYS,
        errno: val!(ENOSYS),
        why: "glibc's pthread_getattr_np (Rust's std, for every thread) asks by tid; ENOSYS is \"no such functionality\". Only pid 0 is allowed: another pid would tell whether it exists",
    },
    SoftRule {
        calls: &[
            libc::SYS_getxattr,
            libc::SYS_lgetxattr,
            libc::SYS_fgetxattr,
            libc::SYS_listxattr,
            libc::SYS_llistxattr,
            libc::SYS_flistxattr,
        ],
        arg: SoftArg::Any,
        when: ALWAYS,
        errno: val!(ENOTSUP),
        why: "ls -l asks for ACLs and security labels: \"not supported\" (Landlock does not govern extended attributes, so no promise allows them)",
    },
    SoftRule {
        calls: &[
            libc::SYS_setxattr,
            libc::SYS_lsetxattr,
            libc::SYS_fsetxattr,
            libc::SYS_removexattr,
            libc::SYS_lremovexattr,
            libc::SYS_fremovexattr,
        ],
        arg: SoftArg::Any,
        when: ALWAYS,
        errno: val!(ENOTSUP),
        why: "sed -i and cp -p copy ACLs (fsetxattr): \"not supported\" makes gnulib fall back to fchmod (fattr)",
    },
    SoftRule {
        calls: &[libc::SYS_capget],
        arg: SoftArg::Any,
        when: ALWAYS,
        errno: val!(EPERM),
        why: "libcap and programs that check their own capabilities (they have none left)",
    },
    SoftRule {
        calls: &[
            libc::SYS_setuid,
            libc::SYS_setgid,
            libc::SYS_setreuid,
            libc::SYS_setregid,
            libc::SYS_setresuid,
            libc::SYS_setresgid,
            libc::SYS_setgroups,
        ],
        arg: SoftArg::Any,
        when: without(&[Promise::Id]),
        errno: val!(EPERM),
        why: "busybox gives up set-id privileges at start (setgid(getgid()), setuid(getuid())), gunicorn's workers drop supplementary groups (setgroups([])); both go on when refused, as any process without CAP_SETGID is; the ids stay as they are. Under privfork run's supervisor the set*id calls (not setgroups) are answered as the kernel would: success, doing nothing, when they change nothing (gunicorn's workers setuid to their own uid), EPERM otherwise",
    },
    SoftRule {
        calls: &[libc::SYS_pkey_alloc],
        arg: SoftArg::Any,
        when: ALWAYS,
        errno: val!(ENOSPC),
        why: "node (V8) asks for a memory protection key at start-up: \"none free\" makes it go without",
    },
    SoftRule {
        calls: &[libc::SYS_statfs, libc::SYS_fstatfs],
        arg: SoftArg::Any,
        when: without(&[Promise::Rpath]),
        errno: val!(EACCES),
        why: "libselinux's and coreutils' file system probes (is /sys/fs/selinux mounted? which file system is this?)",
    },
    SoftRule {
        calls: &[libc::SYS_openat, libc::SYS_open, libc::SYS_creat],
        arg: SoftArg::Any,
        when: SoftWhen {
            with: None,
            without: &[Promise::Rpath, Promise::Wpath, Promise::Cpath],
            not_loader: true,
            not_quiet_opens: true,
        },
        errno: val!(EACCES),
        why: "without the quiet opens (no full Landlock): glibc's malloc opens /proc/sys/vm/overcommit_memory, time zone code /etc/localtime; with them, read-only opens pass and Landlock answers (EACCES), write opens are violations",
    },
    SoftRule {
        calls: &[
            libc::SYS_getcwd,
            libc::SYS_access,
            libc::SYS_faccessat,
            libc::SYS_faccessat2,
        ],
        arg: SoftArg::Any,
        when: without(&[Promise::Rpath]),
        errno: val!(EACCES),
        why: "the dynamic loader checks /etc/ld.so.preload with access(); a Rust panic's backtrace calls getcwd",
    },
    SoftRule {
        calls: &[libc::SYS_readlink, libc::SYS_readlinkat],
        arg: SoftArg::Any,
        when: SoftWhen {
            with: None,
            without: &[Promise::Rpath],
            not_loader: true,
            not_quiet_opens: false,
        },
        errno: val!(EACCES),
        why: "a Rust panic's backtrace reads /proc/self/exe (with the loader rules readlink is allowed, for $ORIGIN)",
    },
];

fn applies(w: &SoftWhen, promises: &Promises, loader: bool, quiet_opens: bool) -> bool {
    w.with.is_none_or(|p| promises.contains(p))
        && !w.without.iter().any(|p| promises.contains(*p))
        && (!w.not_loader || !loader)
        && (!w.not_quiet_opens || !quiet_opens)
}

/// The soft answers that apply under `promises` (see [`SOFT`]).
pub(crate) fn soft_refusals(promises: &Promises, loader: bool, quiet_opens: bool) -> Vec<Soft> {
    let mut v = Vec::new();
    for rule in SOFT
        .iter()
        .filter(|r| applies(&r.when, promises, loader, quiet_opens))
    {
        for &nr in rule.calls {
            let errno = rule.errno.v as i32;
            match rule.arg {
                SoftArg::Any => v.push(Soft::any(nr, errno)),
                SoftArg::In(i, vals) => v.extend(vals.iter().map(|val| Soft {
                    nr,
                    arg: Some((i, val.v as u32)),
                    other: false,
                    errno,
                })),
                SoftArg::Not(i, val) => v.push(Soft {
                    nr,
                    arg: Some((i, val.v as u32)),
                    other: true,
                    errno,
                }),
            }
        }
    }
    v
}

/// The docs' list of soft answers: one line per [`SOFT`] rule.
pub(crate) fn render_soft_markdown() -> String {
    let mut out =
        String::from("| calls | arguments | when | answer | why |\n|---|---|---|---|---|\n");
    for r in SOFT {
        let calls: Vec<&str> = r.calls.iter().map(|&nr| table::call_name(nr)).collect();
        let arg = match r.arg {
            SoftArg::Any => "any".to_owned(),
            SoftArg::In(i, vals) => format!(
                "arg{i} one of {}",
                vals.iter().map(|v| v.name).collect::<Vec<_>>().join("/")
            ),
            SoftArg::Not(i, v) => format!("arg{i} not {}", v.name),
        };
        let mut when = Vec::new();
        if let Some(p) = r.when.with {
            when.push(format!("under `{p}`"));
        }
        if !r.when.without.is_empty() {
            let names: Vec<String> = r.when.without.iter().map(|p| format!("`{p}`")).collect();
            when.push(format!("without {}", names.join(", ")));
        }
        if r.when.not_loader {
            when.push("not for a dynamically linked program of `privfork run`".to_owned());
        }
        if r.when.not_quiet_opens {
            when.push("without the quiet opens (Landlock not fully enforced)".to_owned());
        }
        let when = if when.is_empty() {
            "always".to_owned()
        } else {
            when.join("; ")
        };
        out.push_str(&format!(
            "| {} | {arg} | {when} | `{}` | {} |\n",
            calls.join(", "),
            r.errno.name,
            r.why
        ));
    }
    out
}

/// A soft refusal: syscall `nr` (with its `int` argument `arg.0` equal to
/// `arg.1`, if given — or, with `other`, anything but `arg.1`) fails with
/// `errno`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Soft {
    pub(crate) nr: i64,
    pub(crate) arg: Option<(u8, u32)>,
    pub(crate) other: bool,
    pub(crate) errno: i32,
}

impl Soft {
    pub(crate) fn any(nr: i64, errno: i32) -> Self {
        Self {
            nr,
            arg: None,
            other: false,
            errno,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_soft_answers_match() {
        crate::sandbox::table::check_docs_section("soft answers", &render_soft_markdown());
    }
}
