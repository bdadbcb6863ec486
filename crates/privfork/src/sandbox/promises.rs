//! Promises, named as OpenBSD's pledge(2) names them, and the system calls
//! each one allows on Linux (x86_64).
//!
//! A promise maps to a set of allowed system calls, some only with certain
//! arguments (socket families, `open` flags, `fcntl` and `ioctl` commands,
//! `mmap`/`mprotect` without `PROT_EXEC`, `kill` only to one process (Landlock
//! scopes it to the process itself),
//! `clone` only for threads). Anything no promise allows is refused, and
//! some calls are allowed by no promise at all (see [`NEVER`]).
//!
//! Argument checks compare the whole argument the kernel uses: `int`
//! arguments (flags, commands, families) on their 32 bits, `long` ones
//! (clone flags) on both halves.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use seccompiler::{SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition, SeccompRule};

/// One promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Promise {
    /// Basic I/O on open fds, memory, time, threads, signals to itself.
    Stdio,
    /// Read-only opens, stat, directory listing, path look-ups.
    Rpath,
    /// Opens for writing (no create).
    Wpath,
    /// Creating, renaming, linking and removing files and directories.
    Cpath,
    /// Creating special files (FIFOs, device nodes).
    Dpath,
    /// Changing file modes and times.
    Fattr,
    /// Changing file owners.
    Chown,
    /// File locks.
    Flock,
    /// IPv4 and IPv6 sockets.
    Inet,
    /// Unix-domain sockets.
    Unix,
    /// UDP sockets for name resolution.
    Dns,
    /// Creating processes, signals to others, process groups.
    Proc,
    /// Executing programs.
    Exec,
    /// Changing user and group ids and resource limits.
    Id,
    /// Sending fds (`sendmsg` is in stdio; see the docs' differences).
    Sendfd,
    /// Receiving fds (`recvmsg` is in stdio; see the docs' differences).
    Recvfd,
    /// Terminal `ioctl`s.
    Tty,
    /// `PROT_EXEC` in `mmap` and `mprotect`.
    ProtExec,
    /// Violations return `EPERM` instead of killing the process.
    Error,
}

/// Every promise with its name, in pledge's order.
pub const ALL: &[(Promise, &str)] = &[
    (Promise::Stdio, "stdio"),
    (Promise::Rpath, "rpath"),
    (Promise::Wpath, "wpath"),
    (Promise::Cpath, "cpath"),
    (Promise::Dpath, "dpath"),
    (Promise::Fattr, "fattr"),
    (Promise::Chown, "chown"),
    (Promise::Flock, "flock"),
    (Promise::Inet, "inet"),
    (Promise::Unix, "unix"),
    (Promise::Dns, "dns"),
    (Promise::Proc, "proc"),
    (Promise::Exec, "exec"),
    (Promise::Id, "id"),
    (Promise::Sendfd, "sendfd"),
    (Promise::Recvfd, "recvfd"),
    (Promise::Tty, "tty"),
    (Promise::ProtExec, "prot_exec"),
    (Promise::Error, "error"),
];

impl Promise {
    /// The promise's name.
    pub fn name(self) -> &'static str {
        ALL.iter()
            .find(|(p, _)| *p == self)
            .map(|(_, n)| *n)
            .expect("every promise is in ALL")
    }
}

impl fmt::Display for Promise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A promise name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown promise {name:?} (known: {known})")]
pub struct UnknownPromise {
    /// The name given.
    pub name: String,
    /// The known names, space-separated.
    pub known: String,
}

/// A set of promises.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Promises(BTreeSet<Promise>);

impl Promises {
    /// Parses space-separated promise names, as pledge(2) takes them
    /// (`"stdio rpath inet"`).
    ///
    /// # Errors
    ///
    /// [`UnknownPromise`] naming the first unknown word.
    pub fn parse(text: &str) -> Result<Self, UnknownPromise> {
        let mut set = BTreeSet::new();
        for word in text.split_whitespace() {
            let Some((p, _)) = ALL.iter().find(|(_, n)| *n == word) else {
                return Err(UnknownPromise {
                    name: word.to_owned(),
                    known: ALL.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(" "),
                });
            };
            set.insert(*p);
        }
        Ok(Self(set))
    }

    /// Whether `p` is promised.
    pub fn contains(&self, p: Promise) -> bool {
        self.0.contains(&p)
    }

    /// The promises, in order.
    pub fn iter(&self) -> impl Iterator<Item = Promise> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for Promises {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Promise::name).collect();
        f.write_str(&names.join(" "))
    }
}

/// System calls no promise allows: refused whatever is promised.
pub const NEVER: &[(&str, i64)] = &[
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("chroot", libc::SYS_chroot),
    ("pivot_root", libc::SYS_pivot_root),
    ("personality", libc::SYS_personality),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("reboot", libc::SYS_reboot),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("openat2", libc::SYS_openat2),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("seccomp", libc::SYS_seccomp),
    ("landlock_create_ruleset", libc::SYS_landlock_create_ruleset),
    ("landlock_add_rule", libc::SYS_landlock_add_rule),
    ("landlock_restrict_self", libc::SYS_landlock_restrict_self),
];

/// The allowed calls: syscall number → `None` (any arguments) or the rules
/// of which one must match.
pub(crate) type Rules = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn allow(r: &mut Rules, nrs: &[i64]) {
    for &nr in nrs {
        r.insert(nr, None);
    }
}

fn allow_if(r: &mut Rules, nr: i64, rules: Vec<SeccompRule>) {
    match r.entry(nr).or_insert_with(|| Some(Vec::new())) {
        None => {} // already allowed with any arguments
        Some(v) => v.extend(rules),
    }
}

fn cond(arg: u8, len: Len, op: Op, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, len, op, value).expect("argument index < 6")
}

/// `arg` (an `int`) equals `value`.
fn int_eq(arg: u8, value: i64) -> SeccompCondition {
    cond(arg, Len::Dword, Op::Eq, value as u32 as u64)
}

/// `arg` (an `int`) is above zero: sign bit clear, not zero.
fn positive_int(arg: u8) -> Vec<SeccompCondition> {
    vec![
        int_masked(arg, 0x8000_0000, 0),
        cond(arg, Len::Dword, Op::Ne, 0),
    ]
}

/// `(arg & mask) == value`, on the `int` argument.
fn int_masked(arg: u8, mask: i64, value: i64) -> SeccompCondition {
    cond(
        arg,
        Len::Dword,
        Op::MaskedEq(mask as u32 as u64),
        value as u32 as u64,
    )
}

fn rule(conds: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conds).expect("at most 6 conditions")
}

/// One rule per value: `arg == v` for each `v`.
fn one_of(arg: u8, values: &[i64]) -> Vec<SeccompRule> {
    values.iter().map(|&v| rule(vec![int_eq(arg, v)])).collect()
}

/// Namespace and other flags a `clone` may never carry.
const CLONE_FORBIDDEN: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWTIME
    | libc::CLONE_PTRACE
    | libc::CLONE_UNTRACED) as u64;

// From asm/prctl.h (not in the libc crate for every target).
const ARCH_SET_FS_: i64 = 0x1002;
const ARCH_GET_FS_: i64 = 0x1003;
const ARCH_GET_GS_: i64 = 0x1004;

/// Allows `nr` when its argument `index` (an `int`) is `value` (for calls
/// a soft refusal answers).
pub(crate) fn allow_arg(r: &mut Rules, nr: i64, index: u8, value: u32) {
    allow_if(r, nr, vec![rule(vec![int_eq(index, i64::from(value))])]);
}

/// Adds the calls `p` allows to `r`.
pub(crate) fn add(r: &mut Rules, p: Promise) {
    use libc::*;
    match p {
        Promise::Stdio => {
            allow(
                r,
                &[
                    SYS_read,
                    SYS_write,
                    SYS_readv,
                    SYS_writev,
                    SYS_pread64,
                    SYS_pwrite64,
                    SYS_preadv,
                    SYS_pwritev,
                    SYS_preadv2,
                    SYS_pwritev2,
                    SYS_close,
                    SYS_close_range,
                    SYS_dup,
                    SYS_dup2,
                    SYS_dup3,
                    SYS_lseek,
                    SYS_fstat,
                    SYS_newfstatat,
                    SYS_statx,
                    SYS_pipe,
                    SYS_pipe2,
                    SYS_poll,
                    SYS_ppoll,
                    SYS_select,
                    SYS_pselect6,
                    SYS_epoll_create,
                    SYS_epoll_create1,
                    SYS_epoll_ctl,
                    SYS_epoll_wait,
                    SYS_epoll_pwait,
                    SYS_epoll_pwait2,
                    SYS_eventfd,
                    SYS_eventfd2,
                    SYS_timerfd_create,
                    SYS_timerfd_settime,
                    SYS_timerfd_gettime,
                    SYS_signalfd4,
                    SYS_getpid,
                    SYS_getppid,
                    SYS_gettid,
                    SYS_getuid,
                    SYS_geteuid,
                    SYS_getgid,
                    SYS_getegid,
                    SYS_getresuid,
                    SYS_getresgid,
                    SYS_getgroups,
                    SYS_getpgid,
                    SYS_getpgrp,
                    SYS_getsid,
                    SYS_getrlimit,
                    SYS_getrusage,
                    SYS_getpriority,
                    SYS_clock_gettime,
                    SYS_clock_getres,
                    SYS_clock_nanosleep,
                    SYS_nanosleep,
                    SYS_gettimeofday,
                    SYS_time,
                    SYS_alarm,
                    SYS_getitimer,
                    SYS_setitimer,
                    SYS_pause,
                    SYS_sched_yield,
                    SYS_sched_getaffinity,
                    SYS_sched_getparam,
                    SYS_sched_getscheduler,
                    SYS_getcpu,
                    SYS_futex,
                    SYS_futex_waitv,
                    SYS_set_robust_list,
                    SYS_get_robust_list,
                    SYS_rseq,
                    SYS_set_tid_address,
                    SYS_membarrier,
                    SYS_brk,
                    SYS_munmap,
                    SYS_mremap,
                    SYS_madvise,
                    SYS_msync,
                    SYS_mincore,
                    SYS_rt_sigaction,
                    SYS_rt_sigprocmask,
                    SYS_rt_sigreturn,
                    SYS_rt_sigpending,
                    SYS_rt_sigtimedwait,
                    SYS_rt_sigsuspend,
                    SYS_sigaltstack,
                    SYS_restart_syscall,
                    SYS_exit,
                    SYS_exit_group,
                    SYS_wait4,
                    SYS_waitid,
                    SYS_getrandom,
                    SYS_uname,
                    SYS_umask,
                    SYS_ftruncate,
                    SYS_fsync,
                    SYS_fdatasync,
                    SYS_fadvise64,
                    SYS_times,
                    SYS_timer_create,
                    SYS_timer_settime,
                    SYS_timer_gettime,
                    SYS_timer_getoverrun,
                    SYS_timer_delete,
                    SYS_sysinfo,
                    SYS_mlock,
                    SYS_mlock2,
                    SYS_munlock,
                    SYS_copy_file_range,
                    SYS_sendfile,
                    SYS_splice,
                    SYS_tee,
                    SYS_sendmsg,
                    SYS_recvmsg,
                    SYS_sendmmsg,
                    SYS_recvmmsg,
                    SYS_sendto,
                    SYS_recvfrom,
                    SYS_shutdown,
                    SYS_getsockopt,
                    SYS_getsockname,
                    SYS_getpeername,
                    // Answered ENOSYS by the sandbox's first filter, so that
                    // libc falls back to clone (whose flags can be checked).
                    SYS_clone3,
                ],
            );
            // Memory: never executable without prot_exec.
            for nr in [SYS_mmap, SYS_mprotect] {
                allow_if(r, nr, vec![rule(vec![int_masked(2, PROT_EXEC as i64, 0)])]);
            }
            allow_if(
                r,
                SYS_fcntl,
                one_of(
                    1,
                    &[
                        F_GETFD as i64,
                        F_SETFD as i64,
                        F_GETFL as i64,
                        F_SETFL as i64,
                        F_DUPFD as i64,
                        F_DUPFD_CLOEXEC as i64,
                        F_GETPIPE_SZ as i64,
                        F_SETPIPE_SZ as i64,
                    ],
                ),
            );
            allow_if(
                r,
                SYS_ioctl,
                one_of(
                    1,
                    &[
                        FIONREAD as i64,
                        FIONBIO as i64,
                        FIOCLEX as i64,
                        FIONCLEX as i64,
                    ],
                ),
            );
            allow_if(
                r,
                SYS_prctl,
                one_of(
                    0,
                    &[
                        PR_SET_NAME as i64,
                        PR_GET_NAME as i64,
                        PR_GET_DUMPABLE as i64,
                        PR_GET_NO_NEW_PRIVS as i64,
                        PR_GET_SECCOMP as i64,
                        PR_CAPBSET_READ as i64,
                    ],
                ),
            );
            // Resource limits: read only (new limit pointer NULL).
            allow_if(
                r,
                SYS_prlimit64,
                vec![rule(vec![int_eq(0, 0), cond(2, Len::Qword, Op::Eq, 0)])],
            );
            // Signals to one process named by a positive pid: never to a
            // process group (0, -pgid) or to every process (-1). A filter
            // cannot compare with the caller's own pid and still be built
            // in a parent and installed in a child (or hold in the child's
            // descendants), so "only to itself" is Landlock's signal scope:
            // a sandboxed process signals nothing outside its own Landlock
            // domain (see `landlock.rs`); the report names Landlock partial
            // on a kernel without scopes.
            for nr in [
                SYS_kill,
                SYS_tgkill,
                SYS_rt_sigqueueinfo,
                SYS_rt_tgsigqueueinfo,
            ] {
                allow_if(r, nr, vec![rule(positive_int(0))]);
            }
            // Threads only: CLONE_THREAD and CLONE_VM set, no namespace.
            let thread = (CLONE_THREAD | CLONE_VM | CLONE_SIGHAND) as u64;
            allow_if(
                r,
                SYS_clone,
                vec![rule(vec![
                    cond(0, Len::Qword, Op::MaskedEq(thread), thread),
                    cond(0, Len::Qword, Op::MaskedEq(CLONE_FORBIDDEN), 0),
                ])],
            );
            // The C library's start-up sets the thread pointer (TLS).
            allow_if(
                r,
                SYS_arch_prctl,
                one_of(0, &[ARCH_SET_FS_, ARCH_GET_FS_, ARCH_GET_GS_]),
            );
            // socketpair only for Unix-domain pairs.
            allow_if(
                r,
                SYS_socketpair,
                vec![rule(vec![int_eq(0, AF_UNIX as i64)])],
            );
        }
        Promise::Rpath => {
            allow(
                r,
                &[
                    SYS_readlink,
                    SYS_readlinkat,
                    SYS_getdents64,
                    SYS_getcwd,
                    SYS_chdir,
                    SYS_fchdir,
                    SYS_access,
                    SYS_faccessat,
                    SYS_faccessat2,
                    SYS_statfs,
                    SYS_fstatfs,
                    SYS_stat,
                    SYS_lstat,
                ],
            );
            allow_read_only_opens(r);
        }
        Promise::Wpath => {
            // Opens for writing, without creating (cpath creates).
            let mask = (O_CREAT | (O_TMPFILE & !O_DIRECTORY)) as i64;
            allow_if(r, SYS_openat, vec![rule(vec![int_masked(2, mask, 0)])]);
            allow_if(r, SYS_open, vec![rule(vec![int_masked(1, mask, 0)])]);
            allow(r, &[SYS_truncate, SYS_fallocate]);
            // Reflink copies (cp --reflink, what cp tries first).
            allow_if(
                r,
                SYS_ioctl,
                one_of(1, &[FICLONE as i64, FICLONERANGE as i64]),
            );
        }
        Promise::Cpath => {
            allow(
                r,
                &[
                    SYS_openat,
                    SYS_open,
                    SYS_creat,
                    SYS_mkdir,
                    SYS_mkdirat,
                    SYS_rmdir,
                    SYS_rename,
                    SYS_renameat,
                    SYS_renameat2,
                    SYS_link,
                    SYS_linkat,
                    SYS_symlink,
                    SYS_symlinkat,
                    SYS_unlink,
                    SYS_unlinkat,
                ],
            );
        }
        Promise::Dpath => allow(r, &[SYS_mknod, SYS_mknodat]),
        Promise::Fattr => allow(
            r,
            &[
                SYS_chmod,
                SYS_fchmod,
                SYS_fchmodat,
                SYS_fchmodat2,
                SYS_utimes,
                SYS_utimensat,
                SYS_futimesat,
                SYS_utime,
            ],
        ),
        Promise::Chown => allow(r, &[SYS_chown, SYS_fchown, SYS_fchownat, SYS_lchown]),
        Promise::Flock => {
            allow(r, &[SYS_flock]);
            allow_if(
                r,
                SYS_fcntl,
                one_of(
                    1,
                    &[
                        F_GETLK as i64,
                        F_SETLK as i64,
                        F_SETLKW as i64,
                        F_OFD_GETLK as i64,
                        F_OFD_SETLK as i64,
                        F_OFD_SETLKW as i64,
                    ],
                ),
            );
        }
        Promise::Inet | Promise::Unix => {
            let families: &[i64] = if p == Promise::Inet {
                &[AF_INET as i64, AF_INET6 as i64]
            } else {
                &[AF_UNIX as i64]
            };
            allow_if(r, SYS_socket, one_of(0, families));
            allow(
                r,
                &[
                    SYS_bind,
                    SYS_listen,
                    SYS_accept,
                    SYS_accept4,
                    SYS_connect,
                    SYS_setsockopt,
                ],
            );
        }
        Promise::Dns => {
            let dgram = |family: i32| {
                rule(vec![
                    int_eq(0, family as i64),
                    int_masked(1, 0xf, SOCK_DGRAM as i64),
                ])
            };
            allow_if(r, SYS_socket, vec![dgram(AF_INET), dgram(AF_INET6)]);
            allow(r, &[SYS_connect, SYS_bind]);
        }
        Promise::Proc => {
            allow(
                r,
                &[
                    SYS_fork,
                    SYS_vfork,
                    SYS_kill,
                    SYS_tgkill,
                    SYS_tkill,
                    SYS_setpgid,
                    SYS_setsid,
                    SYS_setpriority,
                    SYS_sched_setaffinity,
                    SYS_pidfd_open,
                    SYS_pidfd_send_signal,
                ],
            );
            // New processes, with no namespace.
            allow_if(
                r,
                SYS_clone,
                vec![rule(vec![cond(
                    0,
                    Len::Qword,
                    Op::MaskedEq(CLONE_FORBIDDEN),
                    0,
                )])],
            );
        }
        Promise::Exec => allow(r, &[SYS_execve, SYS_execveat]),
        Promise::Id => allow(
            r,
            &[
                SYS_setuid,
                SYS_setgid,
                SYS_setreuid,
                SYS_setregid,
                SYS_setresuid,
                SYS_setresgid,
                SYS_setgroups,
                SYS_setfsuid,
                SYS_setfsgid,
                SYS_setrlimit,
                SYS_prlimit64,
                SYS_setpriority,
            ],
        ),
        // sendmsg/recvmsg are in stdio; seccomp cannot see SCM_RIGHTS.
        Promise::Sendfd | Promise::Recvfd | Promise::Error => {}
        Promise::Tty => allow_if(
            r,
            SYS_ioctl,
            one_of(
                1,
                &[
                    TCGETS as i64,
                    TCSETS as i64,
                    TCSETSW as i64,
                    TCSETSF as i64,
                    TIOCGWINSZ as i64,
                    TIOCSWINSZ as i64,
                    TIOCGPGRP as i64,
                    TIOCSPGRP as i64,
                    TCFLSH as i64,
                    TCXONC as i64,
                ],
            ),
        ),
        Promise::ProtExec => allow(r, &[SYS_mmap, SYS_mprotect, SYS_pkey_mprotect]),
    }
}

/// `open`/`openat` for reading only: no write access, create, truncate or
/// temporary file (`O_TMPFILE` without its `O_DIRECTORY` bit, which plain
/// directory opens carry).
fn allow_read_only_opens(r: &mut Rules) {
    use libc::*;
    let mask = (O_ACCMODE | O_CREAT | O_TRUNC | (O_TMPFILE & !O_DIRECTORY)) as i64;
    allow_if(
        r,
        SYS_openat,
        vec![rule(vec![int_masked(2, mask, O_RDONLY as i64)])],
    );
    allow_if(
        r,
        SYS_open,
        vec![rule(vec![int_masked(1, mask, O_RDONLY as i64)])],
    );
}

/// What a program started by `privfork run` needs before its `main`: the
/// dynamic loader opens its libraries read-only and maps them executable.
/// Read-only opens are allowed (Landlock limits which files), and `mmap`
/// with `PROT_EXEC` of a file (never of anonymous memory, never through
/// `mprotect`).
pub(crate) fn add_loader(r: &mut Rules) {
    use libc::*;
    allow_read_only_opens(r);
    // Executable mappings of files only, and never writable: ld.so maps
    // text read+exec; a private writable+executable mapping of any readable
    // file would be as good as executable anonymous memory.
    allow_if(
        r,
        SYS_mmap,
        vec![rule(vec![
            int_masked(3, MAP_ANONYMOUS as i64, 0),
            int_masked(2, PROT_WRITE as i64, 0),
        ])],
    );
}

/// The rules of `promises` together.
pub(crate) fn rules(promises: &Promises) -> Rules {
    let mut r = Rules::new();
    for p in promises.iter() {
        add(&mut r, p);
    }
    r
}

/// The name of syscall `nr` (x86_64), for messages.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    super::syscall_names::name(nr)
}

/// The promises that allow syscall `nr` with some arguments, for messages.
pub fn promises_allowing(nr: i64) -> Vec<Promise> {
    ALL.iter()
        .map(|(p, _)| *p)
        .filter(|p| {
            let mut r = Rules::new();
            add(&mut r, *p);
            r.contains_key(&nr)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let all: Vec<&str> = ALL.iter().map(|(_, n)| *n).collect();
        let p = Promises::parse(&all.join(" ")).unwrap();
        assert_eq!(p.iter().count(), ALL.len());
        assert_eq!(p.to_string().split(' ').count(), ALL.len());
    }

    #[test]
    fn unknown_promise_is_named() {
        let e = Promises::parse("stdio rpathh").unwrap_err();
        assert_eq!(e.name, "rpathh");
        assert!(e.to_string().contains("rpathh") && e.to_string().contains("stdio"));
    }

    #[test]
    fn no_promise_allows_a_never_call() {
        let all =
            Promises::parse(&ALL.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(" ")).unwrap();
        let r = rules(&all);
        for (name, nr) in NEVER {
            assert!(!r.contains_key(nr), "{name} is allowed by some promise");
        }
    }

    #[test]
    fn stdio_never_allows_exec_or_sockets() {
        let r = rules(&Promises::parse("stdio").unwrap());
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_socket,
            libc::SYS_openat,
        ] {
            assert!(!r.contains_key(&nr), "stdio allows syscall {nr}");
        }
    }
}
