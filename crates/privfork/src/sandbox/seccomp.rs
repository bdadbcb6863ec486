//! The seccomp-bpf side of the sandbox: promises compiled to filters.
//!
//! Two filters are installed; for each system call the kernel runs both
//! and the most restrictive answer wins (kill > errno > allow):
//!
//! 1. a hand-written guard: the architecture must be x86_64 (anything else
//!    is killed), the x32 ABI (syscall numbers with bit 30 set) is killed,
//!    and `clone3` answers `ENOSYS` so that the C library falls back to
//!    `clone`, whose flags a filter can read (clone3's are in memory);
//! 2. the allowlist compiled by `seccompiler` from the promises: allowed
//!    calls pass, everything else gets the violation action.
//!
//! The guard is written by hand because seccompiler matches exact syscall
//! numbers and cannot express "every number with bit 30 set".

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch, sock_filter};

use super::promises::{self, Promises};
pub(crate) use super::soft::{Soft, soft_refusals};

/// What happens when the process makes a call its promises do not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Violation {
    /// The process is killed (`SIGSYS`); the default, as on OpenBSD.
    #[default]
    Kill,
    /// The call fails with `EPERM` (the `error` promise also selects this).
    Errno,
    /// The call is reported to a supervisor holding the filter's listener
    /// (`SECCOMP_RET_USER_NOTIF`), which names it and the promise that would
    /// allow it, then fails it with `EPERM` — for writing a profile. Only
    /// with [`crate::sandbox::Sandbox::apply_exec_once`] (`privfork run`).
    Log,
}

/// Error of compiling a filter.
#[derive(Debug, thiserror::Error)]
#[error("compiling the seccomp filter failed: {0}")]
pub struct CompileError(String);

// Classic BPF opcodes (class | size/op | mode) and seccomp constants not
// exported by seccompiler; see linux/bpf_common.h and linux/seccomp.h.
/// BPF_LD | BPF_W | BPF_ABS (BPF_LD and BPF_W are 0).
const LD_W_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JEQ | BPF_K.
const JMP_JEQ_K: u16 = 0x05 | 0x10;
/// BPF_JMP | BPF_JSET | BPF_K.
const JMP_JSET_K: u16 = 0x05 | 0x40;
/// BPF_RET | BPF_K.
const RET_K: u16 = 0x06;
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
/// Offset of `args[0]` in `struct seccomp_data` (little-endian: the low
/// half of each argument comes first).
const OFFSET_ARGS: u32 = 16;
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The guard filter (see the module docs).
pub(crate) fn guard() -> BpfProgram {
    vec![
        stmt(LD_W_ABS, OFFSET_ARCH),
        jump(JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFFSET_NR),
        jump(JMP_JSET_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, RET_KILL_PROCESS),
        jump(JMP_JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32),
        stmt(RET_K, RET_ALLOW),
    ]
}

/// The filter answering [`soft_refusals`] with their errors (the allowlist
/// lets those calls through to it). Each entry is a block:
/// `ld nr; jeq NR ? next : skip; [ld arg1; jeq V ? next : skip;] ret ERRNO`
/// (`jeq V ? skip : next` for an `other` refusal),
/// and the program ends with `ret ALLOW`.
pub(crate) fn soft_filter(refusals: &[Soft]) -> BpfProgram {
    let mut prog = Vec::new();
    for s in refusals {
        prog.push(stmt(LD_W_ABS, OFFSET_NR));
        match s.arg {
            None => {
                prog.push(jump(JMP_JEQ_K, s.nr as u32, 0, 1));
            }
            Some((index, v)) => {
                prog.push(jump(JMP_JEQ_K, s.nr as u32, 0, 3));
                // Low 32 bits of the argument (an int: the kernel uses those).
                prog.push(stmt(LD_W_ABS, OFFSET_ARGS + 8 * u32::from(index)));
                prog.push(if s.other {
                    jump(JMP_JEQ_K, v, 1, 0)
                } else {
                    jump(JMP_JEQ_K, v, 0, 1)
                });
            }
        }
        prog.push(stmt(RET_K, RET_ERRNO | s.errno as u32));
    }
    prog.push(stmt(RET_K, RET_ALLOW));
    prog
}

/// Compiles `promises` into the allowlist filter.
///
/// # Errors
///
/// [`CompileError`] if seccompiler rejects the rules (a bug: they are
/// fixed in the code).
pub(crate) fn allowlist(
    promises: &Promises,
    violation: Violation,
    soft: &[Soft],
    extra: &dyn Fn(&mut promises::Rules),
) -> Result<BpfProgram, CompileError> {
    let mut rules = promises::rules(promises);
    extra(&mut rules);
    // Answered with an error by the soft filter (`soft`, installed with
    // this allowlist).
    for soft in soft {
        match soft.arg {
            None => {
                rules.insert(soft.nr, None);
            }
            Some((index, v)) => promises::allow_arg(&mut rules, soft.nr, index, v, soft.other),
        }
    }
    let rules = rules
        .into_iter()
        .map(|(nr, r)| (nr, r.unwrap_or_default()))
        .collect();
    let mismatch = match violation {
        Violation::Kill => SeccompAction::KillProcess,
        Violation::Errno => SeccompAction::Errno(libc::EPERM as u32),
        // seccompiler has no user-notification action: compile with Trap,
        // then turn every "return TRAP" into "return USER_NOTIF" below.
        Violation::Log => SeccompAction::Trap,
    };
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|e| CompileError(e.to_string()))?;
    let mut prog = BpfProgram::try_from(filter).map_err(|e| CompileError(e.to_string()))?;
    if violation == Violation::Log {
        for ins in &mut prog {
            if ins.code == RET_K && ins.k == RET_TRAP {
                ins.k = RET_USER_NOTIF;
            }
        }
    }
    Ok(prog)
}

/// The filter that sends `execve`/`execveat` to a supervisor (which lets
/// exactly one through: see `Sandbox::apply_exec_once`).
pub(crate) fn exec_to_supervisor() -> BpfProgram {
    vec![
        stmt(LD_W_ABS, OFFSET_NR),
        jump(JMP_JEQ_K, libc::SYS_execve as u32, 1, 0),
        jump(JMP_JEQ_K, libc::SYS_execveat as u32, 0, 1),
        stmt(RET_K, RET_USER_NOTIF),
        stmt(RET_K, RET_ALLOW),
    ]
}

/// Fails unless the kernel has seccomp filtering (for
/// `Policy::Require`, before anything is restricted).
pub(crate) fn check_available() -> Result<(), super::SandboxError> {
    // The kernel lists "Seccomp:" in /proc/PID/status only when built with
    // seccomp (CONFIG_SECCOMP).
    let step = "checking for seccomp (/proc/self/status)";
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|source| super::SandboxError::Step { step, source })?;
    if status.lines().any(|l| l.starts_with("Seccomp:")) {
        Ok(())
    } else {
        Err(super::SandboxError::Step {
            step,
            source: std::io::Error::other("this kernel has no seccomp"),
        })
    }
}

/// Installs `filters` on every thread of the process (TSYNC).
///
/// # Errors
///
/// The kernel's refusal (e.g. without no_new_privs or CAP_SYS_ADMIN).
pub(crate) fn install(filters: &[BpfProgram]) -> Result<(), seccompiler::Error> {
    for f in filters {
        seccompiler::apply_filter_all_threads(f)?;
    }
    Ok(())
}

/// The opens that go to the supervisor in log mode (see
/// [`calls_to_supervisor`]).
pub(crate) const SUPERVISED_OPENS: [i64; 3] = [libc::SYS_open, libc::SYS_openat, libc::SYS_creat];

/// The path forms of chmod, which the supervisor of `privfork run` does
/// for the program under `fattr` (see `exec_once`).
pub(crate) const SUPERVISED_CHMODS: [i64; 3] =
    [libc::SYS_chmod, libc::SYS_fchmodat, libc::SYS_fchmodat2];

/// The set-id calls, which the supervisor of `privfork run` answers
/// without `id` (see `exec_once`): success when they would change nothing,
/// `EPERM` otherwise.
pub(crate) const SUPERVISED_SETIDS: [i64; 6] = [
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
];

/// `allowlist` with a prologue that sends every call in `nrs` to the
/// supervisor, allowed or not; it lets through — with
/// `SECCOMP_USER_NOTIF_FLAG_CONTINUE` — exactly those the unchanged
/// `allowlist` allows, judged by [`evaluate`] on the registers the kernel
/// passed, and answers the others. In log mode, every open (`open`,
/// `openat`, `creat`: [`SUPERVISED_OPENS`]), so that the supervisor reports
/// those Landlock will refuse (the kernel's audit of Landlock is off on
/// most machines; Landlock still decides which files open). (The same
/// answering, for `connect`s that may name a path, is
/// [`path_connects_to_supervisor`]'s.)
///
/// The prologue's jumps are forward and local, and seccompiler's program
/// follows unchanged (its jumps are relative).
pub(crate) fn calls_to_supervisor(allowlist: &[sock_filter], nrs: &[i64]) -> BpfProgram {
    let mut prog = vec![stmt(LD_W_ABS, OFFSET_NR)];
    for &nr in nrs {
        prog.push(jump(JMP_JEQ_K, nr as u32, 0, 1));
        prog.push(stmt(RET_K, RET_USER_NOTIF));
    }
    prog.extend_from_slice(allowlist);
    prog
}

/// `prog` with a prologue that sends `connect` to the supervisor unless its
/// address length is that of an IPv4 or IPv6 address (16, 28 bytes): the
/// connects that may name the program's sd_notify socket (a path), which
/// the supervisor answers on a socket it handed over and lets through
/// elsewhere exactly where `prog` allows them (see
/// [`calls_to_supervisor`]). TCP and DNS connects go straight to `prog`:
/// no round trip, and no window in which a signal makes them `EINTR`.
pub(crate) fn path_connects_to_supervisor(prog: &[sock_filter]) -> BpfProgram {
    let mut out = vec![
        stmt(LD_W_ABS, OFFSET_NR),
        // Not connect: on to `prog`.
        jump(JMP_JEQ_K, libc::SYS_connect as u32, 0, 4),
        // The low word of addrlen (a socklen_t).
        stmt(LD_W_ABS, OFFSET_ARGS + 8 * 2),
        jump(JMP_JEQ_K, 16, 2, 0),
        jump(JMP_JEQ_K, 28, 1, 0),
        stmt(RET_K, RET_USER_NOTIF),
    ];
    out.extend_from_slice(prog);
    out
}

/// Whether `ret` (a filter's answer) lets the call run.
pub(crate) fn allows(ret: u32) -> bool {
    ret == RET_ALLOW
}

/// The answer the kernel acts on when several filters answer: the most
/// restrictive, compared as the kernel does (action bits, signed: kill
/// process first, then kill thread, trap, errno, user notification, trace,
/// log, allow).
pub(crate) fn strictest(a: u32, b: u32) -> u32 {
    let rank = |r: u32| (r & 0xffff_0000) as i32;
    if rank(b) < rank(a) { b } else { a }
}

/// What the filters `progs` answer together for syscall `nr` with
/// `args` on x86_64 ([`strictest`] of each [`evaluate`]); `None` if one
/// cannot be evaluated.
pub(crate) fn evaluate_all(progs: &[&[sock_filter]], nr: i64, args: [u64; 6]) -> Option<u32> {
    let mut ret = RET_ALLOW;
    for p in progs {
        ret = strictest(ret, evaluate(p, nr, args)?);
    }
    Some(ret)
}

/// A classic-BPF interpreter for the opcodes seccompiler and this module
/// emit, run on the `seccomp_data` of syscall `nr` with `args` on x86_64:
/// what the filter answers, without installing it. The supervisor of
/// `privfork run` uses it on the registers of a notification (the data the
/// kernel ran the filter on) to tell allowed opens from refused ones, and
/// to find the promises that would allow a refused call.
///
/// `None` for anything it cannot interpret (an unknown opcode, a jump or
/// load out of range, no return): the caller then treats the call as
/// refused.
pub(crate) fn evaluate(prog: &[sock_filter], nr: i64, args: [u64; 6]) -> Option<u32> {
    let mut data = [0u32; 16];
    data[0] = nr as u32;
    data[1] = AUDIT_ARCH_X86_64;
    for (i, a) in args.iter().enumerate() {
        data[4 + 2 * i] = *a as u32;
        data[5 + 2 * i] = (*a >> 32) as u32;
    }
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let ins = prog.get(pc)?;
        pc += 1;
        let jump_if = |cond: bool| usize::from(if cond { ins.jt } else { ins.jf });
        match ins.code {
            LD_W_ABS => {
                if ins.k % 4 != 0 {
                    return None;
                }
                acc = *data.get(ins.k as usize / 4)?;
            }
            0x05 => pc = pc.checked_add(ins.k as usize)?,
            JMP_JEQ_K => pc += jump_if(acc == ins.k),
            0x25 => pc += jump_if(acc > ins.k),
            0x35 => pc += jump_if(acc >= ins.k),
            JMP_JSET_K => pc += jump_if(acc & ins.k != 0),
            0x54 => acc &= ins.k,
            RET_K => return Some(ins.k),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_connects_go_to_the_supervisor_and_inet_ones_do_not() {
        let allow_all = [stmt(RET_K, RET_ALLOW)];
        let p = path_connects_to_supervisor(&allow_all);
        let connect = |len: u64| evaluate(&p, libc::SYS_connect, [3, 0x1000, len, 0, 0, 0]);
        assert_eq!(connect(16), Some(RET_ALLOW), "sockaddr_in");
        assert_eq!(connect(28), Some(RET_ALLOW), "sockaddr_in6");
        assert_eq!(connect(110), Some(RET_USER_NOTIF), "sockaddr_un");
        assert_eq!(connect(45), Some(RET_USER_NOTIF), "a path");
        // Only the low 32 bits of addrlen count, as the kernel reads it.
        assert_eq!(connect((1 << 32) | 16), Some(RET_ALLOW));
        let read = evaluate(&p, libc::SYS_read, [3, 0, 110, 0, 0, 0]);
        assert_eq!(read, Some(RET_ALLOW), "other calls go on to the allowlist");
    }

    use crate::sandbox::promises::{ALL, Promises};

    /// Whether the table's rows for `promises` allow the call (the
    /// allowlist compiled from the table alone, without soft refusals).
    fn table_allows(promises: &str, nr: i64, args: [u64; 6]) -> bool {
        let p = Promises::parse(promises).unwrap();
        let prog = allowlist(
            &p,
            Violation::Errno,
            &soft_refusals(&p, false, false),
            &|_| {},
        )
        .unwrap();
        let soft: Vec<_> = soft_refusals(&p, false, false)
            .into_iter()
            .filter(|s| s.nr == nr)
            .collect();
        // A call a soft refusal answers is let through by the allowlist
        // for the soft filter: judge those by the table's rules alone.
        if !soft.is_empty() {
            let rules = crate::sandbox::promises::rules(&p)
                .into_iter()
                .map(|(nr, r)| (nr, r.unwrap_or_default()))
                .collect();
            let f = SeccompFilter::new(
                rules,
                SeccompAction::Errno(1),
                SeccompAction::Allow,
                TargetArch::x86_64,
            )
            .unwrap();
            let prog = BpfProgram::try_from(f).unwrap();
            return evaluate(&prog, nr, args) == Some(RET_ALLOW);
        }
        evaluate(&prog, nr, args) == Some(RET_ALLOW)
    }

    const ADDR: u64 = 0x1000;

    /// (what, syscall, arguments, promises that allow it besides stdio;
    /// "stdio": stdio alone does).
    #[rustfmt::skip]
    fn cases() -> Vec<(&'static str, i64, [u64; 6], &'static [&'static str])> {
        use libc::*;
        let i = |v: i32| v as u32 as u64;
        let neg = |v: i32| v as i64 as u64;
        vec![
            ("socket tcp", SYS_socket, [i(AF_INET), i(SOCK_STREAM), 0, 0, 0, 0], &["inet"]),
            ("socket tcp6 cloexec", SYS_socket, [i(AF_INET6), i(SOCK_STREAM | SOCK_CLOEXEC), i(IPPROTO_TCP), 0, 0, 0], &["inet"]),
            ("socket mptcp", SYS_socket, [i(AF_INET), i(SOCK_STREAM), 262, 0, 0, 0], &[]),
            ("socket sctp", SYS_socket, [i(AF_INET), i(SOCK_STREAM), i(IPPROTO_SCTP), 0, 0, 0], &[]),
            ("socket udp", SYS_socket, [i(AF_INET6), i(SOCK_DGRAM), i(IPPROTO_UDP), 0, 0, 0], &["inet", "dns"]),
            ("socket udplite", SYS_socket, [i(AF_INET), i(SOCK_DGRAM), i(IPPROTO_UDPLITE), 0, 0, 0], &[]),
            ("socket raw", SYS_socket, [i(AF_INET), i(SOCK_RAW), i(IPPROTO_ICMP), 0, 0, 0], &[]),
            ("socket unix", SYS_socket, [i(AF_UNIX), i(SOCK_DGRAM), 0, 0, 0, 0], &["unix"]),
            ("socket netlink", SYS_socket, [i(AF_NETLINK), i(SOCK_RAW), 0, 0, 0, 0], &[]),
            ("socket packet", SYS_socket, [i(AF_PACKET), i(SOCK_RAW), 0, 0, 0, 0], &[]),
            ("socketpair stream", SYS_socketpair, [i(AF_UNIX), i(SOCK_STREAM | SOCK_CLOEXEC), 0, ADDR, 0, 0], &["stdio"]),
            ("socketpair seqpacket", SYS_socketpair, [i(AF_UNIX), i(SOCK_SEQPACKET), 0, ADDR, 0, 0], &["stdio"]),
            ("socketpair dgram", SYS_socketpair, [i(AF_UNIX), i(SOCK_DGRAM), 0, ADDR, 0, 0], &[]),
            ("sendto connected", SYS_sendto, [3, ADDR, 1, 0, 0, 0], &["stdio"]),
            ("sendto address", SYS_sendto, [3, ADDR, 1, 0, ADDR, 16], &["inet", "unix", "dns"]),
            ("sendto fastopen", SYS_sendto, [3, ADDR, 1, i(MSG_FASTOPEN), ADDR, 16], &[]),
            ("sendmsg", SYS_sendmsg, [3, ADDR, i(MSG_NOSIGNAL), 0, 0, 0], &["stdio"]),
            ("sendmsg fastopen", SYS_sendmsg, [3, ADDR, i(MSG_FASTOPEN), 0, 0, 0], &[]),
            ("sendmmsg fastopen", SYS_sendmmsg, [3, ADDR, 1, i(MSG_FASTOPEN), 0, 0], &[]),
            ("setsockopt nodelay", SYS_setsockopt, [3, i(IPPROTO_TCP), i(TCP_NODELAY), ADDR, 4, 0], &["inet", "unix", "accept"]),
            ("setsockopt keepidle", SYS_setsockopt, [3, i(IPPROTO_TCP), i(TCP_KEEPIDLE), ADDR, 4, 0], &["inet", "unix", "accept"]),
            ("setsockopt keepalive", SYS_setsockopt, [3, i(SOL_SOCKET), i(SO_KEEPALIVE), ADDR, 4, 0], &["inet", "unix", "accept"]),
            ("setsockopt reuseaddr", SYS_setsockopt, [3, i(SOL_SOCKET), i(SO_REUSEADDR), ADDR, 4, 0], &["inet", "unix", "accept"]),
            ("setsockopt rcvtimeo", SYS_setsockopt, [3, i(SOL_SOCKET), i(SO_RCVTIMEO), ADDR, 16, 0], &["inet", "unix", "accept"]),
            ("setsockopt bindtodevice", SYS_setsockopt, [3, i(SOL_SOCKET), i(SO_BINDTODEVICE), ADDR, 4, 0], &["inet", "unix"]),
            ("setsockopt reuseport", SYS_setsockopt, [3, i(SOL_SOCKET), i(SO_REUSEPORT), ADDR, 4, 0], &["inet", "unix"]),
            ("setsockopt tcp_ulp", SYS_setsockopt, [3, i(IPPROTO_TCP), i(TCP_ULP), ADDR, 4, 0], &["inet", "unix"]),
            ("setsockopt nodelay at ip level", SYS_setsockopt, [3, i(IPPROTO_IP), i(TCP_NODELAY), ADDR, 4, 0], &["inet", "unix", "mcast"]),
            ("setsockopt ip_add_membership", SYS_setsockopt, [3, i(IPPROTO_IP), i(IP_ADD_MEMBERSHIP), ADDR, 8, 0], &["mcast"]),
            ("setsockopt ip_multicast_ttl", SYS_setsockopt, [3, i(IPPROTO_IP), i(IP_MULTICAST_TTL), ADDR, 4, 0], &["mcast"]),
            ("setsockopt mcast_join_group", SYS_setsockopt, [3, i(IPPROTO_IP), i(MCAST_JOIN_GROUP), ADDR, 136, 0], &["mcast"]),
            ("setsockopt ipv6_join_group", SYS_setsockopt, [3, i(IPPROTO_IPV6), i(IPV6_ADD_MEMBERSHIP), ADDR, 20, 0], &["mcast"]),
            ("setsockopt ipv6 mcast_join_group", SYS_setsockopt, [3, i(IPPROTO_IPV6), i(MCAST_JOIN_GROUP), ADDR, 136, 0], &["mcast"]),
            ("setsockopt ipv6_v6only", SYS_setsockopt, [3, i(IPPROTO_IPV6), i(IPV6_V6ONLY), ADDR, 4, 0], &["inet", "unix", "mcast"]),
            ("setsockopt ip_tos", SYS_setsockopt, [3, i(IPPROTO_IP), i(IP_TOS), ADDR, 4, 0], &["inet", "unix", "mcast"]),
            ("landlock_restrict_self", SYS_landlock_restrict_self, [3, 0, 0, 0, 0, 0], &["unveil"]),
            ("landlock_create_ruleset", SYS_landlock_create_ruleset, [ADDR, 16, 0, 0, 0, 0], &["unveil"]),
            ("getdents64", SYS_getdents64, [3, ADDR, 4096, 0, 0, 0], &["rpath", "ps"]),
            ("unlink", SYS_unlink, [ADDR, 0, 0, 0, 0, 0], &["cpath", "tmppath"]),
            ("openat creat", SYS_openat, [i(AT_FDCWD), ADDR, i(O_CREAT | O_RDWR), 0o600, 0, 0], &["cpath", "tmppath"]),
            ("openat rdwr", SYS_openat, [i(AT_FDCWD), ADDR, i(O_RDWR), 0, 0, 0], &["wpath", "cpath", "tmppath"]),
            ("capget", SYS_capget, [ADDR, ADDR, 0, 0, 0, 0], &[]),
            ("accept", SYS_accept, [3, ADDR, ADDR, 0, 0, 0], &["inet", "unix", "accept"]),
            ("accept4 no flags", SYS_accept4, [3, 0, 0, 0, 0, 0], &["inet", "unix", "accept"]),
            ("accept4 cloexec", SYS_accept4, [3, ADDR, ADDR, i(SOCK_CLOEXEC), 0, 0], &["inet", "unix", "accept"]),
            ("accept4 cloexec nonblock", SYS_accept4, [3, ADDR, ADDR, i(SOCK_CLOEXEC | SOCK_NONBLOCK), 0, 0], &["inet", "unix", "accept"]),
            ("accept4 other flag", SYS_accept4, [3, ADDR, ADDR, i(SOCK_CLOEXEC | 1), 0, 0], &["inet", "unix"]),
            ("accept4 flags high half", SYS_accept4, [3, ADDR, ADDR, 1 << 32 | i(SOCK_CLOEXEC), 0, 0], &["inet", "unix", "accept"]),
            ("setsockopt fastopen connect", SYS_setsockopt, [3, i(IPPROTO_TCP), 30, ADDR, 4, 0], &[]),
            ("bind", SYS_bind, [3, ADDR, 16, 0, 0, 0], &["inet", "unix"]),
            ("connect", SYS_connect, [3, ADDR, 16, 0, 0, 0], &["inet", "unix", "dns"]),
            ("listen", SYS_listen, [3, 1, 0, 0, 0, 0], &["inet", "unix"]),
            ("getpgid self", SYS_getpgid, [0; 6], &["stdio"]),
            ("getpgid other", SYS_getpgid, [1, 0, 0, 0, 0, 0], &[]),
            ("getsid other", SYS_getsid, [1, 0, 0, 0, 0, 0], &[]),
            ("getpriority self", SYS_getpriority, [i(PRIO_PROCESS as i32), 0, 0, 0, 0, 0], &["stdio"]),
            ("getpriority other", SYS_getpriority, [i(PRIO_PROCESS as i32), 1, 0, 0, 0, 0], &[]),
            ("getpriority user", SYS_getpriority, [i(PRIO_USER as i32), 0, 0, 0, 0, 0], &[]),
            ("prlimit64 read self", SYS_prlimit64, [0, i(RLIMIT_CPU as i32), 0, ADDR, 0, 0], &["stdio"]),
            ("prlimit64 set self", SYS_prlimit64, [0, i(RLIMIT_CPU as i32), ADDR, 0, 0, 0], &["id"]),
            ("prlimit64 read other", SYS_prlimit64, [1, i(RLIMIT_CPU as i32), 0, ADDR, 0, 0], &[]),
            ("prlimit64 set other", SYS_prlimit64, [1, i(RLIMIT_CPU as i32), ADDR, 0, 0, 0], &[]),
            ("setpriority self", SYS_setpriority, [i(PRIO_PROCESS as i32), 0, 5, 0, 0, 0], &["proc", "id"]),
            ("setpriority other", SYS_setpriority, [i(PRIO_PROCESS as i32), 1, 5, 0, 0, 0], &[]),
            ("sched_setaffinity self", SYS_sched_setaffinity, [0, 8, ADDR, 0, 0, 0], &["proc"]),
            ("sched_setaffinity other", SYS_sched_setaffinity, [1, 8, ADDR, 0, 0, 0], &[]),
            ("sched_getaffinity other", SYS_sched_getaffinity, [1, 8, ADDR, 0, 0, 0], &[]),
            ("sched_getparam other", SYS_sched_getparam, [1, ADDR, 0, 0, 0, 0], &[]),
            ("get_robust_list other", SYS_get_robust_list, [1, ADDR, ADDR, 0, 0, 0], &[]),
            ("kill one pid", SYS_kill, [1, 0, 0, 0, 0, 0], &["stdio"]),
            ("kill group", SYS_kill, [0, 0, 0, 0, 0, 0], &["proc"]),
            ("kill every process", SYS_kill, [neg(-1), 0, 0, 0, 0, 0], &["proc"]),
            ("tgkill group", SYS_tgkill, [neg(-5), 5, 0, 0, 0, 0], &["proc"]),
            ("rt_sigqueueinfo group", SYS_rt_sigqueueinfo, [0, 10, ADDR, 0, 0, 0], &[]),
            ("pidfd_open", SYS_pidfd_open, [1, 0, 0, 0, 0, 0], &["proc"]),
            ("ioctl TIOCSTI", SYS_ioctl, [0, TIOCSTI, ADDR, 0, 0, 0], &[]),
            ("ioctl TIOCGWINSZ", SYS_ioctl, [0, TIOCGWINSZ, ADDR, 0, 0, 0], &["tty"]),
            ("personality", SYS_personality, [0; 6], &[]),
            ("process_vm_readv", SYS_process_vm_readv, [1, ADDR, 1, ADDR, 1, 0], &[]),
            ("kcmp", SYS_kcmp, [1, 1, 0, 0, 0, 0], &[]),
            ("ioprio_set", SYS_ioprio_set, [1, 0, 0, 0, 0, 0], &[]),
            ("clone thread", SYS_clone, [(CLONE_THREAD | CLONE_VM | CLONE_SIGHAND) as u64, 0, 0, 0, 0, 0], &["stdio"]),
            ("clone process", SYS_clone, [SIGCHLD as u64, 0, 0, 0, 0, 0], &["proc"]),
            ("clone newuser", SYS_clone, [(CLONE_NEWUSER | SIGCHLD) as u64, 0, 0, 0, 0, 0], &[]),
            ("mmap exec", SYS_mmap, [0, 4096, i(PROT_READ | PROT_EXEC), i(MAP_PRIVATE | MAP_ANONYMOUS), neg(-1), 0], &["prot_exec"]),
        ]
    }

    /// Every case under stdio alone, each promise with stdio, and every
    /// promise together: allowed exactly where the case says.
    #[test]
    fn the_table_allows_each_call_exactly_where_it_says() {
        let mut wrong = Vec::new();
        for (what, nr, args, by) in cases() {
            let mut sets: Vec<(String, bool)> = vec![("stdio".into(), by.contains(&"stdio"))];
            for (_, name) in ALL {
                // mcast adds its options only to inet's (as OpenBSD).
                if *name == "mcast" {
                    sets.push((
                        "stdio inet mcast".into(),
                        by.iter().any(|p| ["stdio", "inet", "mcast"].contains(p)),
                    ));
                    sets.push(("stdio mcast".into(), by.contains(&"stdio")));
                    continue;
                }
                sets.push((
                    format!("stdio {name}"),
                    by.contains(&"stdio") || by.contains(name),
                ));
            }
            let every: Vec<&str> = ALL.iter().map(|(_, n)| *n).collect();
            sets.push((every.join(" "), !by.is_empty()));
            for (promises, expected) in sets {
                if table_allows(&promises, nr, args) != expected {
                    wrong.push(format!(
                        "{what} under {promises:?}: expected allowed={expected}"
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    /// Under stdio alone, readlink is a soft refusal (EACCES); with the
    /// loader rules it is allowed, by the allowlist and the soft filter
    /// both (the loader's $ORIGIN).
    #[test]
    fn the_loader_rules_allow_readlink() {
        let p = Promises::parse("stdio").unwrap();
        for nr in [libc::SYS_readlink, libc::SYS_readlinkat] {
            let args = [ADDR, ADDR, 64, 0, 0, 0];
            let soft = soft_filter(&soft_refusals(&p, false, false));
            assert_eq!(
                evaluate(&soft, nr, args),
                Some(RET_ERRNO | libc::EACCES as u32)
            );
            let soft = soft_filter(&soft_refusals(&p, true, false));
            assert_eq!(evaluate(&soft, nr, args), Some(RET_ALLOW));
            let allow = allowlist(&p, Violation::Kill, &soft_refusals(&p, true, false), &|r| {
                crate::sandbox::promises::add_loader(r)
            })
            .unwrap();
            assert_eq!(evaluate(&allow, nr, args), Some(RET_ALLOW));
        }
    }

    #[test]
    fn the_installed_filters_answer_sched_getaffinity_of_another_pid_enosys() {
        let p = Promises::parse("stdio").unwrap();
        let soft = soft_filter(&soft_refusals(&p, false, false));
        let args = |pid| [pid, 8, ADDR, 0, 0, 0];
        let nr = libc::SYS_sched_getaffinity;
        assert_eq!(evaluate(&soft, nr, args(0)), Some(RET_ALLOW));
        assert_eq!(
            evaluate(&soft, nr, args(7)),
            Some(RET_ERRNO | libc::ENOSYS as u32)
        );
        let allow = allowlist(
            &p,
            Violation::Kill,
            &soft_refusals(&p, false, false),
            &|_| {},
        )
        .unwrap();
        assert_eq!(evaluate(&allow, nr, args(0)), Some(RET_ALLOW));
        assert_eq!(
            evaluate(&allow, nr, args(7)),
            Some(RET_ALLOW),
            "left to the soft filter"
        );
    }
}
