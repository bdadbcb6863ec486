//! The promise table: which system calls each promise allows, with which
//! arguments, what the promise means on OpenBSD and why the row is there.
//!
//! This is the one source of the policy. The seccomp allowlist is compiled
//! from it (`promises::rules`), the log hints come from it
//! (`promises::promises_allowing`, used by `privfork run --mode log`), and
//! the promise table in `docs/sandbox.md` is rendered from it by
//! [`render_markdown`] — a unit test fails, printing the fresh text, when
//! the docs differ (run `PRIVFORK_BLESS_DOCS=1 cargo test -p privfork --lib
//! docs_table` to rewrite them).
//!
//! A row allows its calls when every one of its argument conditions holds
//! (none: any arguments); several rows for the same call are alternatives.
//! seccomp sees only the six argument registers: what is behind a pointer
//! (an address, a path, a `msghdr`) cannot be checked, so where a rule
//! would need it the capability is removed instead, and the `why` column
//! says so.

use super::promises::Promise::{self, *};
use libc::*;

/// A named constant, for the docs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Val {
    pub(crate) v: i64,
    pub(crate) name: &'static str,
}

/// `v!(NAME)`: the constant `NAME` with its name.
macro_rules! v {
    ($n:ident) => {
        Val {
            v: $n as i64,
            name: stringify!($n),
        }
    };
}

/// One condition on the argument registers (index from 0). `int`
/// arguments are compared on their low 32 bits (what the kernel uses),
/// `long` and pointer ones on all 64.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    /// The `int` argument is one of the values.
    In(u8, &'static [Val]),
    /// The `int` argument, masked, is one of the values.
    MaskedIn(u8, Val, &'static [Val]),
    /// The `int` argument has none of the mask's bits.
    Clear(u8, Val),
    /// The `long` argument has none of the mask's bits.
    LongClear(u8, Val),
    /// The `long` argument has all of the mask's bits.
    LongSet(u8, Val),
    /// The `int` argument is not the value.
    Ne(u8, Val),
    /// The `int` argument is none of the values.
    NotIn(u8, &'static [Val]),
    /// The `int` argument is 0 (a pid: the caller itself).
    Zero(u8),
    /// The pointer argument is NULL.
    Null(u8),
    /// The `int` argument is above 0 (one process by pid: never a group,
    /// never every process).
    Positive(u8),
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub(crate) promise: Promise,
    /// x86_64 syscall numbers.
    pub(crate) calls: &'static [i64],
    /// All must hold; empty: any arguments.
    pub(crate) args: &'static [Arg],
    /// What pledge(2) means by the promise for these calls.
    pub(crate) openbsd: &'static str,
    /// Why the row is there, and what its arguments rule out.
    pub(crate) why: &'static str,
}

/// The setuid and setgid mode bits.
pub(crate) const S_ISUID_SGID: u32 = S_ISUID | S_ISGID;

/// `SOCK_TYPE_MASK` of linux/net.h: the type without NONBLOCK/CLOEXEC.
pub(crate) const SOCK_TYPE_MASK: i32 = 0xf;
/// linux/tcp.h.
pub(crate) const TCP_FASTOPEN_CONNECT: i32 = 30;
// asm/prctl.h (not in the libc crate for every target).
const ARCH_SET_FS: i64 = 0x1002;
const ARCH_GET_FS: i64 = 0x1003;
const ARCH_GET_GS: i64 = 0x1004;

/// Namespace and tracing flags a `clone` may never carry.
pub(crate) const CLONE_FORBIDDEN: i64 = (CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
    | CLONE_NEWTIME
    | CLONE_PTRACE
    | CLONE_UNTRACED) as i64;
const CLONE_THREAD_VM_SIGHAND: i64 = (CLONE_THREAD | CLONE_VM | CLONE_SIGHAND) as i64;

const NO_FASTOPEN_ON_SENDTO: Arg = Arg::Clear(3, v!(MSG_FASTOPEN));
const INET_FAMILIES: &[Val] = &[v!(AF_INET), v!(AF_INET6)];
const TYPE_MASK: Val = v!(SOCK_TYPE_MASK);

const STDIO: &str = "basic I/O, memory, time, signals to self";
const NO_OPENBSD_ACCEPT: &str = "none: OpenBSD has no accept-only promise (it would need inet)";
/// The flags `accept4` may carry under `accept`.
const ACCEPT4_FLAGS: &[Val] = &[
    Val { v: 0, name: "0" },
    v!(SOCK_CLOEXEC),
    v!(SOCK_NONBLOCK),
    Val {
        v: (SOCK_CLOEXEC | SOCK_NONBLOCK) as i64,
        name: "SOCK_CLOEXEC|SOCK_NONBLOCK",
    },
];
const SOCKETS: &str = "sockets of the family";

/// linux/in.h: `IP_MULTICAST_IF` .. `IP_MULTICAST_ALL`, the `MCAST_*`
/// options included — every IPv4 multicast option (32..=49).
const IP_MULTICAST_OPTS: &[Val] = &[
    v!(IP_MULTICAST_IF),
    v!(IP_MULTICAST_TTL),
    v!(IP_MULTICAST_LOOP),
    v!(IP_ADD_MEMBERSHIP),
    v!(IP_DROP_MEMBERSHIP),
    v!(IP_UNBLOCK_SOURCE),
    v!(IP_BLOCK_SOURCE),
    v!(IP_ADD_SOURCE_MEMBERSHIP),
    v!(IP_DROP_SOURCE_MEMBERSHIP),
    v!(IP_MSFILTER),
    v!(MCAST_JOIN_GROUP),
    v!(MCAST_BLOCK_SOURCE),
    v!(MCAST_UNBLOCK_SOURCE),
    v!(MCAST_LEAVE_GROUP),
    v!(MCAST_JOIN_SOURCE_GROUP),
    v!(MCAST_LEAVE_SOURCE_GROUP),
    v!(MCAST_MSFILTER),
    v!(IP_MULTICAST_ALL),
];
/// linux/in6.h: the IPv6 multicast options (the `MCAST_*` ones share
/// IPv4's numbers at this level).
const IPV6_MULTICAST_OPTS: &[Val] = &[
    v!(IPV6_MULTICAST_IF),
    v!(IPV6_MULTICAST_HOPS),
    v!(IPV6_MULTICAST_LOOP),
    v!(IPV6_ADD_MEMBERSHIP),
    v!(IPV6_DROP_MEMBERSHIP),
    Val {
        v: 29,
        name: "IPV6_MULTICAST_ALL",
    },
    v!(MCAST_JOIN_GROUP),
    v!(MCAST_BLOCK_SOURCE),
    v!(MCAST_UNBLOCK_SOURCE),
    v!(MCAST_LEAVE_GROUP),
    v!(MCAST_JOIN_SOURCE_GROUP),
    v!(MCAST_LEAVE_SOURCE_GROUP),
    v!(MCAST_MSFILTER),
];
/// The levels whose options the next rows check one by one.
const CHECKED_LEVELS: &[Val] = &[v!(IPPROTO_TCP), v!(IPPROTO_IP), v!(IPPROTO_IPV6)];
const SETSOCKOPT_OTHER_LEVELS: &[Arg] = &[Arg::NotIn(1, CHECKED_LEVELS)];
const SETSOCKOPT_TCP: &[Arg] = &[
    Arg::In(1, &[v!(IPPROTO_TCP)]),
    Arg::Ne(2, v!(TCP_FASTOPEN_CONNECT)),
];
const SETSOCKOPT_IP: &[Arg] = &[
    Arg::In(1, &[v!(IPPROTO_IP)]),
    Arg::NotIn(2, IP_MULTICAST_OPTS),
];
const SETSOCKOPT_IPV6: &[Arg] = &[
    Arg::In(1, &[v!(IPPROTO_IPV6)]),
    Arg::NotIn(2, IPV6_MULTICAST_OPTS),
];

/// The table. Rows of one promise stay together, in pledge's order.
pub(crate) static TABLE: &[Row] = &[
    // ---- stdio
    Row {
        promise: Stdio,
        calls: &[
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
            SYS_ftruncate,
            SYS_fsync,
            SYS_fdatasync,
            SYS_fadvise64,
            SYS_copy_file_range,
            SYS_sendfile,
            SYS_splice,
            SYS_tee,
            SYS_recvmsg,
            SYS_recvmmsg,
            SYS_recvfrom,
            SYS_shutdown,
            SYS_getsockopt,
            SYS_getsockname,
            SYS_getpeername,
        ],
        args: &[],
        openbsd: STDIO,
        why: "I/O on fds the process already has",
    },
    Row {
        promise: Stdio,
        calls: &[
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
            SYS_getpgrp,
            SYS_getrlimit,
            SYS_getrusage,
            SYS_umask,
            SYS_uname,
            SYS_sysinfo,
            SYS_times,
            SYS_getrandom,
            SYS_getcpu,
            SYS_sched_yield,
        ],
        args: &[],
        openbsd: STDIO,
        why: "queries about the process itself (no pid argument)",
    },
    Row {
        promise: Stdio,
        calls: &[
            SYS_getpgid,
            SYS_getsid,
            SYS_sched_getaffinity,
            SYS_sched_getparam,
            SYS_sched_getscheduler,
            SYS_get_robust_list,
        ],
        args: &[Arg::Zero(0)],
        openbsd: STDIO,
        why: "about the process itself only: another pid would list the system's processes",
    },
    Row {
        promise: Stdio,
        calls: &[SYS_getpriority],
        args: &[Arg::In(0, &[v!(PRIO_PROCESS)]), Arg::Zero(1)],
        openbsd: STDIO,
        why: "its own priority only (not a group's, a user's or another process's)",
    },
    Row {
        promise: Stdio,
        calls: &[SYS_prlimit64],
        args: &[Arg::Zero(0), Arg::Null(2)],
        openbsd: STDIO,
        why: "reads its own limits only (pid 0, new limit NULL)",
    },
    Row {
        promise: Stdio,
        calls: &[
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
            SYS_timer_create,
            SYS_timer_settime,
            SYS_timer_gettime,
            SYS_timer_getoverrun,
            SYS_timer_delete,
        ],
        args: &[],
        openbsd: STDIO,
        why: "time, sleep and timers",
    },
    Row {
        promise: Stdio,
        calls: &[
            SYS_futex,
            SYS_futex_waitv,
            SYS_set_robust_list,
            SYS_rseq,
            SYS_set_tid_address,
            SYS_membarrier,
            SYS_brk,
            SYS_munmap,
            SYS_mremap,
            SYS_madvise,
            SYS_msync,
            SYS_mincore,
            SYS_mlock,
            SYS_mlock2,
            SYS_munlock,
        ],
        args: &[],
        openbsd: STDIO,
        why: "memory and thread synchronisation",
    },
    Row {
        promise: Stdio,
        calls: &[SYS_mmap, SYS_mprotect],
        args: &[Arg::Clear(2, v!(PROT_EXEC))],
        openbsd: STDIO,
        why: "memory never executable (prot_exec allows it)",
    },
    Row {
        promise: Stdio,
        calls: &[
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
        ],
        args: &[],
        openbsd: STDIO,
        why: "its own signal handling, exit, waiting for its own children",
    },
    Row {
        promise: Stdio,
        calls: &[
            SYS_kill,
            SYS_tgkill,
            SYS_rt_sigqueueinfo,
            SYS_rt_tgsigqueueinfo,
        ],
        args: &[Arg::Positive(0)],
        openbsd: STDIO,
        why: "one process by pid, never a group or every process; Landlock's signal scope limits it to the sandbox's own processes (a filter built in a parent cannot hold the child's pid)",
    },
    Row {
        promise: Stdio,
        calls: &[SYS_clone],
        args: &[
            Arg::LongSet(0, v!(CLONE_THREAD_VM_SIGHAND)),
            Arg::LongClear(0, v!(CLONE_FORBIDDEN)),
        ],
        openbsd: STDIO,
        why: "threads only, no namespace (clone3 answers ENOSYS: its flags are behind a pointer)",
    },
    Row {
        promise: Stdio,
        calls: &[SYS_clone3],
        args: &[],
        openbsd: STDIO,
        why: "answered ENOSYS by the guard filter, so libc falls back to clone",
    },
    Row {
        promise: Stdio,
        calls: &[SYS_arch_prctl],
        args: &[Arg::In(
            0,
            &[v!(ARCH_SET_FS), v!(ARCH_GET_FS), v!(ARCH_GET_GS)],
        )],
        openbsd: STDIO,
        why: "the C library's start-up sets the thread pointer",
    },
    Row {
        promise: Stdio,
        calls: &[SYS_fcntl],
        args: &[Arg::In(
            1,
            &[
                v!(F_GETFD),
                v!(F_SETFD),
                v!(F_GETFL),
                v!(F_SETFL),
                v!(F_DUPFD),
                v!(F_DUPFD_CLOEXEC),
                v!(F_GETPIPE_SZ),
                v!(F_SETPIPE_SZ),
            ],
        )],
        openbsd: STDIO,
        why: "fd flags and pipe sizes",
    },
    Row {
        promise: Stdio,
        calls: &[SYS_ioctl],
        args: &[Arg::In(
            1,
            &[v!(FIONREAD), v!(FIONBIO), v!(FIOCLEX), v!(FIONCLEX)],
        )],
        openbsd: STDIO,
        why: "generic fd ioctls",
    },
    Row {
        promise: Stdio,
        calls: &[SYS_prctl],
        args: &[Arg::In(
            0,
            &[
                v!(PR_SET_NAME),
                v!(PR_GET_NAME),
                v!(PR_GET_DUMPABLE),
                v!(PR_GET_NO_NEW_PRIVS),
                v!(PR_GET_SECCOMP),
                v!(PR_CAPBSET_READ),
            ],
        )],
        openbsd: STDIO,
        why: "thread name and read-only queries",
    },
    Row {
        promise: Stdio,
        calls: &[SYS_socketpair],
        args: &[
            Arg::In(0, &[v!(AF_UNIX)]),
            Arg::MaskedIn(1, TYPE_MASK, &[v!(SOCK_STREAM), v!(SOCK_SEQPACKET)]),
        ],
        openbsd: STDIO,
        why: "connected pairs only: a datagram pair can be disconnected and then address anything",
    },
    Row {
        promise: Stdio,
        calls: &[SYS_sendto],
        args: &[Arg::Null(4), Arg::Zero(5), NO_FASTOPEN_ON_SENDTO],
        openbsd: STDIO,
        why: "on a connected socket only: no destination address (inet, unix or dns allow one), no MSG_FASTOPEN",
    },
    Row {
        promise: Stdio,
        calls: &[SYS_sendmsg],
        args: &[Arg::Clear(2, v!(MSG_FASTOPEN))],
        openbsd: STDIO,
        why: "msg_name is behind a pointer: only sockets stdio can make (connected pairs) are safe; an inherited unconnected datagram socket can still address (see differences); no MSG_FASTOPEN",
    },
    Row {
        promise: Stdio,
        calls: &[SYS_sendmmsg],
        args: &[Arg::Clear(3, v!(MSG_FASTOPEN))],
        openbsd: STDIO,
        why: "as sendmsg",
    },
    // ---- rpath
    Row {
        promise: Rpath,
        calls: &[
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
        args: &[],
        openbsd: "read-only paths",
        why: "path look-ups; Landlock decides which files",
    },
    READ_ONLY_OPENAT,
    READ_ONLY_OPEN,
    // ---- wpath
    Row {
        promise: Wpath,
        calls: &[SYS_openat],
        args: &[Arg::Clear(2, v!(O_CREATE_MASK))],
        openbsd: "write paths",
        why: "opens for writing without creating (cpath creates)",
    },
    Row {
        promise: Wpath,
        calls: &[SYS_open],
        args: &[Arg::Clear(1, v!(O_CREATE_MASK))],
        openbsd: "write paths",
        why: "as openat",
    },
    Row {
        promise: Wpath,
        calls: &[SYS_truncate, SYS_fallocate],
        args: &[],
        openbsd: "write paths",
        why: "sizes of files",
    },
    Row {
        promise: Wpath,
        calls: &[SYS_ioctl],
        args: &[Arg::In(1, &[v!(FICLONE), v!(FICLONERANGE)])],
        openbsd: "write paths",
        why: "reflink copies (what cp tries first)",
    },
    // ---- cpath
    Row {
        promise: Cpath,
        calls: &[
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
        args: &[],
        openbsd: "create/remove paths",
        why: "Landlock decides where",
    },
    // ---- dpath
    Row {
        promise: Dpath,
        calls: &[SYS_mknod, SYS_mknodat],
        args: &[],
        openbsd: "special files",
        why: "FIFOs and device nodes (devices need CAP_MKNOD, dropped)",
    },
    // ---- tmppath
    Row {
        promise: Tmppath,
        calls: &[
            SYS_openat,
            SYS_open,
            SYS_unlink,
            SYS_unlinkat,
            SYS_mkdir,
            SYS_mkdirat,
            SYS_rmdir,
        ],
        args: &[],
        openbsd: "files in /tmp",
        why: "mkstemp, mkdtemp and their removal; Landlock allows /tmp (rwc) and nothing else the caller did not back with rpath/wpath/cpath",
    },
    // ---- fattr
    // Landlock does not govern chmod, chown or utimes, and a path is behind
    // a pointer the filter cannot read: only the fd forms are allowed, on
    // fds that came from opens Landlock checked (an O_PATH fd gets EBADF).
    // The path forms get EPERM (soft refusals in seccomp.rs).
    Row {
        promise: Fattr,
        calls: &[SYS_fchmod],
        args: &[Arg::Clear(1, v!(S_ISUID_SGID))],
        openbsd: "file attributes",
        why: "on an open file only, never setuid or setgid bits",
    },
    Row {
        promise: Fattr,
        calls: &[SYS_utimensat],
        args: &[Arg::Null(1)],
        openbsd: "file attributes",
        why: "futimens: times of an open file only (NULL path)",
    },
    // ---- chown
    Row {
        promise: Chown,
        calls: &[SYS_fchown],
        args: &[],
        openbsd: "file owners",
        why: "an open file only (to a group of its own without CAP_CHOWN)",
    },
    // ---- flock
    Row {
        promise: Flock,
        calls: &[SYS_flock],
        args: &[],
        openbsd: "file locks",
        why: "locks on open files",
    },
    Row {
        promise: Flock,
        calls: &[SYS_fcntl],
        args: &[Arg::In(
            1,
            &[
                v!(F_GETLK),
                v!(F_SETLK),
                v!(F_SETLKW),
                v!(F_OFD_GETLK),
                v!(F_OFD_SETLK),
                v!(F_OFD_SETLKW),
            ],
        )],
        openbsd: "file locks",
        why: "record locks",
    },
    // ---- inet
    Row {
        promise: Inet,
        calls: &[SYS_socket],
        args: &[
            Arg::In(0, INET_FAMILIES),
            Arg::MaskedIn(1, TYPE_MASK, &[v!(SOCK_STREAM)]),
            Arg::In(2, &[v!(IPPROTO_IP), v!(IPPROTO_TCP)]),
        ],
        openbsd: "IPv4/IPv6",
        why: "TCP only, the protocol Landlock's port rules cover (no MPTCP, SCTP or raw sockets)",
    },
    Row {
        promise: Inet,
        calls: &[SYS_socket],
        args: &[
            Arg::In(0, INET_FAMILIES),
            Arg::MaskedIn(1, TYPE_MASK, &[v!(SOCK_DGRAM)]),
            Arg::In(2, &[v!(IPPROTO_IP), v!(IPPROTO_UDP)]),
        ],
        openbsd: "IPv4/IPv6",
        why: "UDP, as OpenBSD's inet: Landlock has no UDP rules, so any port and address (see differences)",
    },
    Row {
        promise: Inet,
        calls: &[SYS_bind, SYS_connect, SYS_listen, SYS_accept, SYS_accept4],
        args: &[],
        openbsd: "IPv4/IPv6",
        why: "the address is behind a pointer: Landlock's TCP port rules decide; listen on an unbound socket binds an ephemeral port (see differences)",
    },
    Row {
        promise: Inet,
        calls: &[SYS_sendto],
        args: &[NO_FASTOPEN_ON_SENDTO],
        openbsd: "IPv4/IPv6",
        why: "with a destination; MSG_FASTOPEN would connect without connect(2), past Landlock",
    },
    Row {
        promise: Inet,
        calls: &[SYS_setsockopt],
        args: SETSOCKOPT_OTHER_LEVELS,
        openbsd: "IPv4/IPv6",
        why: "socket-level options (SOL_SOCKET) and levels other than TCP, IP, IPv6",
    },
    Row {
        promise: Inet,
        calls: &[SYS_setsockopt],
        args: SETSOCKOPT_TCP,
        openbsd: "IPv4/IPv6",
        why: "TCP options other than TCP_FASTOPEN_CONNECT",
    },
    Row {
        promise: Inet,
        calls: &[SYS_setsockopt],
        args: SETSOCKOPT_IP,
        openbsd: "IPv4/IPv6",
        why: "IP options but the multicast ones (mcast), as OpenBSD's inet",
    },
    Row {
        promise: Inet,
        calls: &[SYS_setsockopt],
        args: SETSOCKOPT_IPV6,
        openbsd: "IPv4/IPv6",
        why: "IPv6 options but the multicast ones (mcast)",
    },
    // ---- mcast
    Row {
        promise: Mcast,
        calls: &[SYS_setsockopt],
        args: &[Arg::In(1, &[v!(IPPROTO_IP), v!(IPPROTO_IPV6)])],
        openbsd: "multicast",
        why: "every IP and IPv6 option, the multicast ones included (joining groups, TTL, loop, interface); only with inet (without it, mcast adds nothing)",
    },
    // ---- unix
    Row {
        promise: Unix,
        calls: &[SYS_socket],
        args: &[Arg::In(0, &[v!(AF_UNIX)])],
        openbsd: SOCKETS,
        why: "Unix-domain sockets; Landlock's abstract-socket scope limits abstract names",
    },
    Row {
        promise: Unix,
        calls: &[SYS_bind, SYS_connect, SYS_listen, SYS_accept, SYS_accept4],
        args: &[],
        openbsd: SOCKETS,
        why: "the address is behind a pointer",
    },
    Row {
        promise: Unix,
        calls: &[SYS_sendto],
        args: &[NO_FASTOPEN_ON_SENDTO],
        openbsd: SOCKETS,
        why: "with a destination, no MSG_FASTOPEN",
    },
    Row {
        promise: Unix,
        calls: &[SYS_setsockopt],
        args: SETSOCKOPT_OTHER_LEVELS,
        openbsd: SOCKETS,
        why: "socket-level options; on a socket of another family it was handed, as inet's rows",
    },
    Row {
        promise: Unix,
        calls: &[SYS_setsockopt],
        args: SETSOCKOPT_TCP,
        openbsd: SOCKETS,
        why: "as inet's",
    },
    Row {
        promise: Unix,
        calls: &[SYS_setsockopt],
        args: SETSOCKOPT_IP,
        openbsd: SOCKETS,
        why: "as inet's: no multicast",
    },
    Row {
        promise: Unix,
        calls: &[SYS_setsockopt],
        args: SETSOCKOPT_IPV6,
        openbsd: SOCKETS,
        why: "as inet's: no multicast",
    },
    // ---- dns
    Row {
        promise: Dns,
        calls: &[SYS_socket],
        args: &[
            Arg::In(0, INET_FAMILIES),
            Arg::MaskedIn(1, TYPE_MASK, &[v!(SOCK_DGRAM)]),
            Arg::In(2, &[v!(IPPROTO_IP), v!(IPPROTO_UDP)]),
        ],
        openbsd: "name resolution (UDP to port 53 only)",
        why: "UDP sockets; the port cannot be checked (behind a pointer, no Landlock UDP rules)",
    },
    Row {
        promise: Dns,
        calls: &[SYS_connect],
        args: &[],
        openbsd: "name resolution",
        why: "the C library connects its UDP socket to the name server; no bind, no listen",
    },
    Row {
        promise: Dns,
        calls: &[SYS_sendto],
        args: &[NO_FASTOPEN_ON_SENDTO],
        openbsd: "name resolution",
        why: "queries to an address, no MSG_FASTOPEN",
    },
    // ---- accept (not an OpenBSD promise)
    Row {
        promise: Accept,
        calls: &[SYS_accept],
        args: &[],
        openbsd: NO_OPENBSD_ACCEPT,
        why: "connections on a listener the process was handed (the address argument is only written); creating, binding, connecting or listening on a socket is in no row of accept",
    },
    Row {
        promise: Accept,
        calls: &[SYS_accept4],
        args: &[Arg::In(3, ACCEPT4_FLAGS)],
        openbsd: NO_OPENBSD_ACCEPT,
        why: "as accept, with the flags std (SOCK_CLOEXEC) and mio/tokio (both) pass; none other",
    },
    Row {
        promise: Accept,
        calls: &[SYS_setsockopt],
        args: &[
            Arg::In(1, &[v!(SOL_SOCKET)]),
            Arg::In(
                2,
                &[
                    v!(SO_KEEPALIVE),
                    v!(SO_LINGER),
                    v!(SO_RCVTIMEO),
                    v!(SO_SNDTIMEO),
                    v!(SO_RCVBUF),
                    v!(SO_SNDBUF),
                    v!(SO_REUSEADDR),
                ],
            ),
        ],
        openbsd: NO_OPENBSD_ACCEPT,
        why: "what std, tokio and socket2 set on an accepted connection (keep-alive, linger, timeouts, buffers), and SO_REUSEADDR, which servers (gunicorn) set on the listener they are handed and which changes nothing without bind; not SO_BINDTODEVICE, SO_ATTACH_FILTER, SO_REUSEPORT and the rest",
    },
    Row {
        promise: Accept,
        calls: &[SYS_setsockopt],
        args: &[
            Arg::In(1, &[v!(IPPROTO_TCP)]),
            Arg::In(
                2,
                &[
                    v!(TCP_NODELAY),
                    v!(TCP_KEEPIDLE),
                    v!(TCP_KEEPINTVL),
                    v!(TCP_KEEPCNT),
                ],
            ),
        ],
        openbsd: NO_OPENBSD_ACCEPT,
        why: "Nagle (axum sets TCP_NODELAY) and keep-alive timing; not TCP_FASTOPEN_CONNECT, TCP_ULP or TCP_REPAIR",
    },
    // ---- proc
    Row {
        promise: Proc,
        calls: &[SYS_fork, SYS_vfork],
        args: &[],
        openbsd: "processes",
        why: "new processes",
    },
    Row {
        promise: Proc,
        calls: &[SYS_clone],
        args: &[Arg::LongClear(0, v!(CLONE_FORBIDDEN))],
        openbsd: "processes",
        why: "new processes, with no namespace",
    },
    Row {
        promise: Proc,
        calls: &[
            SYS_kill,
            SYS_tgkill,
            SYS_tkill,
            SYS_pidfd_send_signal,
            SYS_pidfd_open,
        ],
        args: &[],
        openbsd: "processes",
        why: "signals to groups and other pids; Landlock's signal scope keeps them inside the sandbox (pidfd_open of any pid only gives a handle)",
    },
    Row {
        promise: Proc,
        calls: &[SYS_setpgid, SYS_setsid],
        args: &[],
        openbsd: "processes",
        why: "the kernel allows only itself and its children",
    },
    Row {
        promise: Proc,
        calls: &[SYS_setpriority],
        args: &[Arg::In(0, &[v!(PRIO_PROCESS)]), Arg::Zero(1)],
        openbsd: "processes",
        why: "its own priority only (OpenBSD: also others of the same user)",
    },
    Row {
        promise: Proc,
        calls: &[SYS_sched_setaffinity],
        args: &[Arg::Zero(0)],
        openbsd: "processes",
        why: "its own CPUs only",
    },
    // ---- exec
    Row {
        promise: Exec,
        calls: &[SYS_execve, SYS_execveat],
        args: &[],
        openbsd: "exec",
        why: "Landlock decides which files (x)",
    },
    // ---- id
    Row {
        promise: Id,
        calls: &[
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
        ],
        args: &[],
        openbsd: "change ids",
        why: "its own ids and limits (capabilities decide which)",
    },
    Row {
        promise: Id,
        calls: &[SYS_prlimit64],
        args: &[Arg::Zero(0)],
        openbsd: "change ids",
        why: "its own limits only: another pid's RLIMIT_CPU would kill it",
    },
    Row {
        promise: Id,
        calls: &[SYS_setpriority],
        args: &[Arg::In(0, &[v!(PRIO_PROCESS)]), Arg::Zero(1)],
        openbsd: "change ids",
        why: "its own priority only",
    },
    // ---- tty
    Row {
        promise: Tty,
        calls: &[SYS_ioctl],
        args: &[Arg::In(
            1,
            &[
                v!(TCGETS),
                v!(TCSETS),
                v!(TCSETSW),
                v!(TCSETSF),
                v!(TIOCGWINSZ),
                v!(TIOCSWINSZ),
                v!(TIOCGPGRP),
                v!(TIOCSPGRP),
                v!(TCFLSH),
                v!(TCXONC),
            ],
        )],
        openbsd: "terminal ioctls",
        why: "terminal settings; never TIOCSTI (pushing input)",
    },
    // ---- ps
    Row {
        promise: Ps,
        calls: &[SYS_getdents64],
        args: &[],
        openbsd: "process listing",
        why: "listing /proc (Landlock: /proc read-only under ps)",
    },
    // ---- unveil
    Row {
        promise: Unveil,
        calls: &[
            SYS_landlock_create_ruleset,
            SYS_landlock_add_rule,
            SYS_landlock_restrict_self,
        ],
        args: &[],
        openbsd: "unveil(2)",
        why: "restricting itself further (Landlock only narrows; no_new_privs is set)",
    },
    // ---- prot_exec
    Row {
        promise: ProtExec,
        calls: &[SYS_mmap, SYS_mprotect, SYS_pkey_mprotect],
        args: &[],
        openbsd: "executable memory",
        why: "PROT_EXEC allowed",
    },
];

/// rpath's read-only `openat` (also the dynamic loader's: see
/// `promises::add_loader`).
pub(crate) const READ_ONLY_OPENAT: Row = Row {
    promise: Rpath,
    calls: &[SYS_openat],
    args: &[Arg::MaskedIn(2, v!(O_READ_MASK), &[v!(O_RDONLY)])],
    openbsd: "read-only paths",
    why: "read-only opens: no write access, O_CREAT, O_TRUNC or O_TMPFILE",
};

/// rpath's read-only `open`.
pub(crate) const READ_ONLY_OPEN: Row = Row {
    promise: Rpath,
    calls: &[SYS_open],
    args: &[Arg::MaskedIn(1, v!(O_READ_MASK), &[v!(O_RDONLY)])],
    openbsd: "read-only paths",
    why: "as openat",
};

/// The dynamic loader's executable mappings of files (never anonymous,
/// never writable), for `privfork run` of a dynamically linked program;
/// in no promise.
pub(crate) const LOADER_MMAP: Row = Row {
    promise: ProtExec,
    calls: &[SYS_mmap],
    args: &[
        Arg::Clear(3, v!(MAP_ANONYMOUS)),
        Arg::Clear(2, v!(PROT_WRITE)),
    ],
    openbsd: "",
    why: "the dynamic loader of privfork run",
};

/// The dynamic loader's `readlink("/proc/self/exe")`, with which it finds
/// the program's `$ORIGIN` (glibc 2.36 calls `readlink`; `readlinkat`, the
/// same capability, for C libraries that use it), for `privfork run` of a
/// dynamically linked program; in no promise. The path is behind a
/// pointer, so this is readlink of any path — a metadata leak like
/// `stat`'s, which `stdio` already allows; Landlock does not govern
/// readlink either.
pub(crate) const LOADER_READLINK: Row = Row {
    promise: Rpath,
    calls: &[SYS_readlink, SYS_readlinkat],
    args: &[],
    openbsd: "",
    why: "the dynamic loader of privfork run finds $ORIGIN",
};

/// Access mode and flags a read-only open may not carry (`O_TMPFILE`
/// without its `O_DIRECTORY` bit, which plain directory opens carry).
pub(crate) const O_READ_MASK: i32 = O_ACCMODE | O_CREAT | O_TRUNC | (O_TMPFILE & !O_DIRECTORY);
/// Flags that create a file.
pub(crate) const O_CREATE_MASK: i32 = O_CREAT | (O_TMPFILE & !O_DIRECTORY);

/// The name of syscall `nr`, for the docs.
pub(crate) fn call_name(nr: i64) -> &'static str {
    super::syscall_names::name(nr).unwrap_or("?")
}

fn render_arg(a: &Arg) -> String {
    let list = |vals: &[Val]| {
        let names: Vec<&str> = vals.iter().map(|v| v.name).collect();
        if names.len() == 1 {
            names[0].to_owned()
        } else {
            format!("one of {}", names.join("/"))
        }
    };
    match a {
        Arg::In(i, vals) => format!("arg{i} {}", list(vals)),
        Arg::MaskedIn(i, m, vals) => format!("arg{i} & {} {}", m.name, list(vals)),
        Arg::Clear(i, m) | Arg::LongClear(i, m) => format!("arg{i} without {}", m.name),
        Arg::LongSet(i, m) => format!("arg{i} with {}", m.name),
        Arg::Ne(i, v) => format!("arg{i} not {}", v.name),
        Arg::NotIn(i, vals) => format!(
            "arg{i} none of {}",
            vals.iter().map(|v| v.name).collect::<Vec<_>>().join("/")
        ),
        Arg::Zero(i) => format!("arg{i} 0 (itself)"),
        Arg::Null(i) => format!("arg{i} NULL"),
        Arg::Positive(i) => format!("arg{i} > 0"),
    }
}

/// The markdown promise table: one line per row of [`TABLE`].
pub(crate) fn render_markdown() -> String {
    let mut out = String::from(
        "| promise | system calls (x86_64) | arguments | OpenBSD meaning | why |\n|---|---|---|---|---|\n",
    );
    for row in TABLE {
        let calls: Vec<&str> = row.calls.iter().map(|&nr| call_name(nr)).collect();
        let args = if row.args.is_empty() {
            "any".to_owned()
        } else {
            row.args
                .iter()
                .map(render_arg)
                .collect::<Vec<_>>()
                .join("; ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            row.promise,
            calls.join(", "),
            args.replace('|', "\\|"),
            row.openbsd,
            row.why,
        ));
    }
    out
}

/// Checks that docs/sandbox.md holds exactly `fresh` between the markers
/// `<!-- BEGIN {name}: generated ... -->` and `<!-- END {name} -->`; with
/// `PRIVFORK_BLESS_DOCS=1` the docs are rewritten instead (run
/// `PRIVFORK_BLESS_DOCS=1 cargo test -p privfork --lib docs`).
#[cfg(test)]
pub(crate) fn check_docs_section(name: &str, fresh: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/sandbox.md");
    let docs = std::fs::read_to_string(path).unwrap();
    let begin = format!("<!-- BEGIN {name}");
    let end_marker = format!("<!-- END {name} -->");
    let b = docs
        .find(&begin)
        .unwrap_or_else(|| panic!("{begin} marker in docs/sandbox.md"));
    let start = docs[b..].find("-->\n").expect("end of the begin marker") + b + 4;
    let end = docs[start..].find(&end_marker).expect("end marker") + start;
    if docs[start..end] != *fresh {
        if std::env::var_os("PRIVFORK_BLESS_DOCS").is_some() {
            let new = format!("{}{fresh}{}", &docs[..start], &docs[end..]);
            std::fs::write(path, new).unwrap();
        } else {
            panic!(
                "docs/sandbox.md's {name} is stale; replace it with:\n{fresh}\n\
                 (or run PRIVFORK_BLESS_DOCS=1 cargo test -p privfork --lib docs)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_table_matches_the_table() {
        check_docs_section("promise table", &render_markdown());
    }

    #[test]
    fn every_call_has_a_name() {
        for row in TABLE {
            for &nr in row.calls {
                assert_ne!(call_name(nr), "?", "syscall {nr}");
            }
        }
    }

    #[test]
    fn rows_of_a_promise_stay_together() {
        let mut seen = Vec::new();
        for row in TABLE {
            if seen.last() != Some(&row.promise) {
                assert!(!seen.contains(&row.promise), "{} split", row.promise);
                seen.push(row.promise);
            }
        }
    }
}
