//! Promises, named as OpenBSD's pledge(2) names them, and the system calls
//! each one allows on Linux (x86_64).
//!
//! A promise maps to a set of allowed system calls, some only with certain
//! arguments: the rows of the promise table (`sandbox/table.rs`), which
//! this module compiles into seccompiler rules. Anything no promise allows
//! is refused, and some calls are allowed by no promise at all (see
//! [`NEVER`]).
//!
//! Argument checks compare the whole argument the kernel uses: `int`
//! arguments (flags, commands, families) on their 32 bits, `long` ones
//! (clone flags) on both halves.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use seccompiler::{SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition, SeccompRule};

use super::table::{self, Arg, Row, TABLE};

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
    /// Creating, reading, writing and removing files in `/tmp` (Landlock
    /// `rwc` on `/tmp` itself).
    Tmppath,
    /// Changing file modes and times.
    Fattr,
    /// Changing file owners.
    Chown,
    /// File locks.
    Flock,
    /// IPv4 and IPv6 sockets.
    Inet,
    /// Multicast socket options (joining groups, multicast TTL/loop/if).
    Mcast,
    /// Unix-domain sockets.
    Unix,
    /// UDP sockets for name resolution, and the resolver's files.
    Dns,
    /// The user and group databases (`/etc/passwd`, `/etc/group`).
    Getpw,
    /// Serving connections accepted on listeners the process was handed:
    /// `accept`, and the socket options of an accepted connection — no
    /// `socket`, `connect`, `bind` or `listen` (not an OpenBSD promise).
    Accept,
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
    /// Listing processes through `/proc`.
    Ps,
    /// Memory, CPU and load figures (`/proc/meminfo`, `/proc/stat`...).
    Vminfo,
    /// Restricting itself further: the `landlock_*` calls.
    Unveil,
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
    (Promise::Tmppath, "tmppath"),
    (Promise::Fattr, "fattr"),
    (Promise::Chown, "chown"),
    (Promise::Flock, "flock"),
    (Promise::Inet, "inet"),
    (Promise::Mcast, "mcast"),
    (Promise::Unix, "unix"),
    (Promise::Dns, "dns"),
    (Promise::Getpw, "getpw"),
    (Promise::Accept, "accept"),
    (Promise::Proc, "proc"),
    (Promise::Exec, "exec"),
    (Promise::Id, "id"),
    (Promise::Sendfd, "sendfd"),
    (Promise::Recvfd, "recvfd"),
    (Promise::Tty, "tty"),
    (Promise::ProtExec, "prot_exec"),
    (Promise::Ps, "ps"),
    (Promise::Vminfo, "vminfo"),
    (Promise::Unveil, "unveil"),
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

/// OpenBSD's promises privfork does not provide on Linux, with the reason
/// (refused by name, as an unknown promise; see the docs' OpenBSD table).
pub const REFUSED: &[(&str, &str)] = &[
    (
        "tape",
        "tape drive ioctls (MTIOC*): no tape drives to speak of; refused rather than half-done",
    ),
    (
        "settime",
        "setting the clock needs CAP_SYS_TIME, which the sandbox drops",
    ),
    (
        "pf",
        "OpenBSD's packet filter ioctls; Linux's firewall (netfilter) needs CAP_NET_ADMIN, dropped",
    ),
    (
        "route",
        "routing table reads: would need netlink sockets, whose requests are behind a pointer the filter cannot check",
    ),
    (
        "wroute",
        "routing table changes need CAP_NET_ADMIN, dropped",
    ),
    (
        "audio",
        "audio ioctls (ALSA, OSS) differ per driver and pass structures behind pointers; not offered (an unveiled device reads and writes with rpath/wpath, its ioctls are refused)",
    ),
    (
        "video",
        "video4linux ioctls: dozens of commands behind pointers; not checked, so not offered",
    ),
    (
        "bpf",
        "OpenBSD's bpf(4) packet capture: on Linux raw packet sockets need CAP_NET_RAW, dropped",
    ),
    (
        "disklabel",
        "disk label ioctls need CAP_SYS_ADMIN or raw devices; not offered",
    ),
    (
        "drm",
        "graphics (DRM) ioctls: driver-specific commands behind pointers; not offered",
    ),
    (
        "vmm",
        "OpenBSD's vmm(4); KVM's ioctls would hand out a whole machine; not offered",
    ),
];

/// Every OpenBSD promise, in pledge(2)'s order, and what privfork does for
/// it on Linux (the refused ones: [`REFUSED`]). Rendered into the docs by
/// [`openbsd_markdown`].
pub const OPENBSD: &[(&str, &str)] = &[
    (
        "stdio",
        "the table's stdio rows; the quiet allowances and soft answers (see their sections)",
    ),
    (
        "rpath",
        "read-only opens, path look-ups; Landlock decides which files (-v r:PATH)",
    ),
    (
        "wpath",
        "opens for writing without creating, truncate; Landlock decides (-v w:PATH)",
    ),
    (
        "cpath",
        "create, rename, link, remove; Landlock decides where (-v c:DIR)",
    ),
    (
        "dpath",
        "mknod/mknodat (FIFOs; device nodes need CAP_MKNOD, dropped)",
    ),
    (
        "tmppath",
        "/tmp itself, read-write-create through Landlock, and the calls mkstemp/mkdtemp/unlink make (see Quiet allowances)",
    ),
    (
        "inet",
        "TCP and UDP sockets; TCP ports through Landlock (--bind, --connect); no multicast options (mcast)",
    ),
    (
        "mcast",
        "the IP/IPv6 multicast socket options (IP_ADD_MEMBERSHIP, IPV6_JOIN_GROUP, MCAST_*, IP_MULTICAST_*)",
    ),
    (
        "fattr",
        "fchmod (no setuid/setgid bits) and futimens on open files; chmod by path done by `privfork run`'s supervisor inside writable unveils (the library: EPERM); other path forms and fchown without chown answer EPERM",
    ),
    ("chown", "fchown on open files; path forms answer EPERM"),
    ("flock", "flock and fcntl record locks"),
    (
        "unix",
        "Unix-domain sockets; abstract names scoped by Landlock",
    ),
    (
        "dns",
        "UDP sockets, connect and sendto for the resolver; /etc/resolv.conf, hosts, nsswitch.conf, gai.conf, host.conf, services, protocols read-only; the netlink probe answered EACCES",
    ),
    (
        "getpw",
        "/etc/passwd, /etc/group, /etc/nsswitch.conf read-only (no shadow); nscd's socket probe is answered EACCES without unix, under any promise",
    ),
    (
        "sendfd",
        "nothing added: sendmsg is in stdio (control data is behind a pointer)",
    ),
    ("recvfd", "nothing added: recvmsg is in stdio"),
    ("tape", ""),
    (
        "tty",
        "terminal ioctls (never TIOCSTI); without it, terminal queries answer ENOTTY",
    ),
    (
        "proc",
        "fork, clone without namespaces, signals to others (scoped by Landlock), process groups",
    ),
    ("exec", "execve/execveat; Landlock decides which files (x)"),
    ("prot_exec", "PROT_EXEC in mmap/mprotect"),
    ("settime", ""),
    (
        "ps",
        "/proc read-only through Landlock, and getdents64 to list it",
    ),
    (
        "vminfo",
        "/proc/meminfo, stat, loadavg, uptime, cpuinfo and /sys/devices/system/cpu read-only (sysinfo is in stdio)",
    ),
    (
        "id",
        "set*id, setgroups, setrlimit, prlimit64 and setpriority of itself",
    ),
    ("pf", ""),
    ("route", ""),
    ("wroute", ""),
    ("audio", ""),
    ("video", ""),
    ("bpf", ""),
    (
        "unveil",
        "landlock_create_ruleset, landlock_add_rule, landlock_restrict_self: the program may restrict itself further",
    ),
    (
        "error",
        "violations return EPERM instead of killing (as --mode errno)",
    ),
    ("disklabel", ""),
    ("drm", ""),
    ("vmm", ""),
];

/// The docs' table of every OpenBSD promise (see [`OPENBSD`]).
pub fn openbsd_markdown() -> String {
    let mut out = String::from("| OpenBSD promise | privfork on Linux |\n|---|---|\n");
    for (name, what) in OPENBSD {
        let what = match REFUSED.iter().find(|(n, _)| n == name) {
            Some((_, why)) => format!("**refused** (unknown promise, exit 121): {why}"),
            None => (*what).to_owned(),
        };
        out.push_str(&format!("| `{name}` | {what} |\n"));
    }
    out
}

/// The docs' list of start-up probes answered with an errno.
pub fn soft_answers_markdown() -> String {
    super::soft::render_soft_markdown()
}

/// The docs' list of files every ruleset opens (see `sandbox/allowances.rs`).
pub fn allowances_markdown() -> String {
    super::allowances::render_markdown()
}

/// A promise name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown promise {name:?}{} (known: {known})", reason.map(|r| format!(": an OpenBSD promise privfork does not provide on Linux ({r})")).unwrap_or_default())]
#[non_exhaustive]
pub struct UnknownPromise {
    /// The name given.
    pub name: String,
    /// The known names, space-separated.
    pub known: String,
    /// Why privfork refuses it, for an OpenBSD promise it does not provide.
    pub reason: Option<&'static str>,
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
                    reason: REFUSED.iter().find(|(n, _)| *n == word).map(|(_, r)| *r),
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

    /// Adds `p`.
    pub fn insert(&mut self, p: Promise) {
        self.0.insert(p);
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
];

/// The allowed calls: syscall number → `None` (any arguments) or the rules
/// of which one must match.
pub(crate) type Rules = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn allow_if(r: &mut Rules, nr: i64, rules: Vec<SeccompRule>) {
    match r.entry(nr).or_insert_with(|| Some(Vec::new())) {
        None => {} // already allowed with any arguments
        Some(v) => v.extend(rules),
    }
}

fn cond(arg: u8, len: Len, op: Op, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, len, op, value).expect("argument index < 6")
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

/// `arg` (an `int`) equals `value`.
fn int_eq(arg: u8, value: i64) -> SeccompCondition {
    cond(arg, Len::Dword, Op::Eq, value as u32 as u64)
}

/// The alternatives one [`Arg`] allows: each a conjunction of conditions.
fn alternatives(a: &Arg) -> Vec<Vec<SeccompCondition>> {
    match *a {
        Arg::In(i, vals) => vals.iter().map(|v| vec![int_eq(i, v.v)]).collect(),
        Arg::MaskedIn(i, mask, vals) => vals
            .iter()
            .map(|v| vec![int_masked(i, mask.v, v.v)])
            .collect(),
        Arg::Clear(i, mask) => vec![vec![int_masked(i, mask.v, 0)]],
        Arg::LongClear(i, mask) => vec![vec![cond(i, Len::Qword, Op::MaskedEq(mask.v as u64), 0)]],
        Arg::LongSet(i, mask) => vec![vec![cond(
            i,
            Len::Qword,
            Op::MaskedEq(mask.v as u64),
            mask.v as u64,
        )]],
        Arg::Ne(i, v) => vec![vec![cond(i, Len::Dword, Op::Ne, v.v as u32 as u64)]],
        Arg::NotIn(i, vals) => vec![
            vals.iter()
                .map(|v| cond(i, Len::Dword, Op::Ne, v.v as u32 as u64))
                .collect(),
        ],
        Arg::Zero(i) => vec![vec![int_eq(i, 0)]],
        Arg::Null(i) => vec![vec![cond(i, Len::Qword, Op::Eq, 0)]],
        // Sign bit clear and not zero.
        Arg::Positive(i) => vec![vec![
            int_masked(i, 0x8000_0000, 0),
            cond(i, Len::Dword, Op::Ne, 0),
        ]],
    }
}

/// The seccompiler rules of a row's arguments: the product of each
/// argument's alternatives (`None`: any arguments).
fn compile_args(args: &[Arg]) -> Option<Vec<SeccompRule>> {
    if args.is_empty() {
        return None;
    }
    let mut conjunctions: Vec<Vec<SeccompCondition>> = vec![Vec::new()];
    for a in args {
        let alts = alternatives(a);
        conjunctions = conjunctions
            .iter()
            .flat_map(|c| {
                alts.iter().map(move |alt| {
                    let mut c = c.clone();
                    c.extend(alt.iter().cloned());
                    c
                })
            })
            .collect();
    }
    Some(
        conjunctions
            .into_iter()
            .map(|c| SeccompRule::new(c).expect("conditions are valid"))
            .collect(),
    )
}

/// Adds a row's calls to `r`.
fn add_row(r: &mut Rules, row: &Row) {
    for &nr in row.calls {
        match compile_args(row.args) {
            None => {
                r.insert(nr, None);
            }
            Some(rules) => allow_if(r, nr, rules),
        }
    }
}

/// Allows `nr` when its argument `index` (an `int`) is `value` — or, with
/// `other`, is not (for calls a soft refusal answers).
pub(crate) fn allow_arg(r: &mut Rules, nr: i64, index: u8, value: u32, other: bool) {
    let op = if other { Op::Ne } else { Op::Eq };
    let c = cond(index, Len::Dword, op, u64::from(value));
    allow_if(
        r,
        nr,
        vec![SeccompRule::new(vec![c]).expect("one condition")],
    );
}

/// Adds the calls `p` allows to `r`: the rows of [`TABLE`] for `p`.
pub(crate) fn add(r: &mut Rules, p: Promise) {
    for row in TABLE.iter().filter(|row| row.promise == p) {
        add_row(r, row);
    }
}

/// What a program started by `privfork run` needs before its `main`: the
/// dynamic loader opens its libraries read-only and maps them executable.
/// Read-only opens are allowed (Landlock limits which files), and `mmap`
/// with `PROT_EXEC` of a file (never of anonymous memory, never writable,
/// never through `mprotect`): a private writable+executable mapping of any
/// readable file would be as good as executable anonymous memory. And
/// `readlink`, with which the loader finds the program's `$ORIGIN` in
/// `/proc/self/exe` (of any path: the path is behind a pointer).
pub(crate) fn add_loader(r: &mut Rules) {
    for row in [
        &table::READ_ONLY_OPENAT,
        &table::READ_ONLY_OPEN,
        &table::LOADER_MMAP,
        &table::LOADER_READLINK,
    ] {
        add_row(r, row);
    }
}

/// The quiet opens: read-only `openat`/`open` (rpath's rows, under every
/// promise), for Landlock to decide which file (see `sandbox::allowances`);
/// only with the Landlock ruleset fully enforced. Writing stays `wpath`'s:
/// Landlock does not govern a pipe or memfd reopened through
/// `/proc/self/fd`; `/dev/null` for writing is `privfork run`'s supervisor's.
pub(crate) fn add_quiet_opens(r: &mut Rules) {
    for row in [&table::READ_ONLY_OPENAT, &table::READ_ONLY_OPEN] {
        add_row(r, row);
    }
}

/// The rules of `promises` together.
pub(crate) fn rules(promises: &Promises) -> Rules {
    let mut r = Rules::new();
    for p in promises.iter() {
        // mcast's options are for inet's sockets, as on OpenBSD: without
        // inet they would reach dns's UDP socket.
        if p == Promise::Mcast && !promises.contains(Promise::Inet) {
            continue;
        }
        add(&mut r, p);
    }
    r
}

/// The name of syscall `nr` (x86_64), for messages.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    super::syscall_names::name(nr)
}

/// The promise table in markdown, one line per row: promise, system
/// calls, argument rule, OpenBSD meaning, why (as in `docs/sandbox.md`).
pub fn table_markdown() -> String {
    table::render_markdown()
}

/// The promises that allow syscall `nr` with some arguments, for messages
/// (from the same table the filter is compiled from).
pub fn promises_allowing(nr: i64) -> Vec<Promise> {
    let mut out: Vec<Promise> = Vec::new();
    for row in TABLE.iter().filter(|row| row.calls.contains(&nr)) {
        if !out.contains(&row.promise) {
            out.push(row.promise);
        }
    }
    out
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

    /// Every OpenBSD promise is either provided or refused with a reason,
    /// never both, never silently missing.
    #[test]
    fn docs_every_openbsd_promise_is_accounted_for() {
        for (name, what) in OPENBSD {
            let provided = ALL.iter().any(|(_, n)| n == name);
            let refused = REFUSED.iter().any(|(n, _)| n == name);
            assert!(provided != refused, "{name}");
            assert_eq!(what.is_empty(), refused, "{name}");
        }
        for (_, n) in ALL {
            assert!(*n == "accept" || OPENBSD.iter().any(|(o, _)| o == n), "{n}");
        }
        assert_eq!(OPENBSD.len(), 36);
        crate::sandbox::table::check_docs_section("OpenBSD promises", &openbsd_markdown());
    }

    #[test]
    fn refused_openbsd_promises_say_why() {
        for (name, why) in REFUSED {
            let e = Promises::parse(&format!("stdio {name}")).unwrap_err();
            assert_eq!(e.reason, Some(*why));
            assert!(e.to_string().contains("OpenBSD"), "{e}");
        }
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
