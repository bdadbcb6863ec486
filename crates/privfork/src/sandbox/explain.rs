//! Naming a refused system call, for the supervisor of `privfork run`: the
//! call with the detail that matters (the ioctl request by name, the
//! socket family and type, the open flags, the path, the address), and the
//! promise that would allow it — judged by compiling the filter each other
//! promise would give and running it on the call's registers, so a promise
//! already held is never suggested and one that would not help is never
//! named — or, when none would, that none does and what to do instead.
//!
//! The call itself is read by [`super::call`]; what privfork does on the
//! program's behalf (chmod by path, `/dev/null` for writing) is
//! [`super::on_behalf`].
//!
//! In log mode it also tells which allowed opens Landlock will refuse: the
//! kernel's own record of Landlock refusals is the audit log, off on most
//! machines (and turning it on changes the whole system). The supervisor
//! resolves the path as the program would (its cwd, its dirfd) and matches
//! it against the unveiled paths: for reporting only — Landlock decides.

use std::cell::OnceCell;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use seccompiler::BpfProgram;

use super::call::{
    Call, NAMESPACE_FLAGS, PRCTL_OPTIONS, SOCKET_FAMILIES, ioctl_name, name_of, shown,
};
use super::on_behalf::Writable;
use super::promises::{ALL, NEVER, Promise, Promises};
use super::seccomp::{self, Violation};
use super::{Kind, Perms, Sandbox};

/// The filters a promise set compiles to: everything the kernel runs.
type Chain = Vec<BpfProgram>;

/// Explains refused calls for one sandbox (see the module docs).
#[derive(Debug)]
pub struct Explainer {
    pub(super) sandbox: Sandbox,
    /// The held promises' filters, compiled at the first call that needs
    /// them (none, in most runs): nothing added to the program's start-up.
    own: OnceCell<Chain>,
    /// Each promise not held, and the filters the held ones plus it
    /// compile to; built at the first refusal.
    others: OnceCell<Vec<(Promise, Chain)>>,
    /// Whether opens that create nothing pass the filter.
    quiet_opens: bool,
    /// The paths Landlock allows, canonical: with the permissions they
    /// keep, and those the caller asked for (a right no held promise backs
    /// is not kept).
    rules: Vec<(PathBuf, Perms, Perms)>,
    /// Those the program may write, by identity (for chmod by path).
    pub(super) writable: Writable,
}

fn chain_of(sb: &Sandbox, promises: &Promises, quiet_opens: bool) -> Chain {
    // Compiled as the supervised sandbox is; a refused call answers EPERM
    // here, which is all "refused" needs.
    match sb.compile(promises, Violation::Errno, Kind::Supervised, quiet_opens) {
        Ok((mut filters, allowlist)) => {
            filters.push(allowlist);
            filters
        }
        // The same rules compiled for the sandbox itself: cannot fail here
        // unless they failed there. An empty chain allows nothing below.
        Err(_) => Vec::new(),
    }
}

/// `rwxc` of Landlock rights.
fn perms_of(a: landlock::BitFlags<landlock::AccessFs>) -> Perms {
    use landlock::AccessFs;
    Perms {
        read: a.contains(AccessFs::ReadFile),
        write: a.contains(AccessFs::WriteFile),
        exec: a.contains(AccessFs::Execute),
        create: a.contains(AccessFs::MakeReg),
    }
}

impl Explainer {
    pub(super) fn new(sb: &Sandbox, quiet_opens: bool) -> Self {
        let quiet = sb.quiet();
        let granted = perms_of(quiet.granted);
        let canonical = |p: &Path| p.canonicalize().ok();
        // The caller's unveils with the rights they keep (the ones asked
        // for remembered, for the hint); then the built-in allowances.
        let rules: Vec<(PathBuf, Perms, Perms)> = sb
            .unveils
            .iter()
            .filter_map(|u| Some((canonical(&u.path)?, and(u.perms, granted), u.perms)))
            .chain(
                quiet
                    .paths
                    .iter()
                    .filter_map(|u| Some((canonical(&u.path)?, u.perms, u.perms))),
            )
            .collect();
        Self {
            own: OnceCell::new(),
            sandbox: sb.clone(),
            quiet_opens,
            others: OnceCell::new(),
            writable: Writable::of(&rules),
            rules,
        }
    }

    /// Whether the held promises allow syscall `nr` with `args` (every
    /// filter answers ALLOW). `false` for anything the interpreter cannot
    /// judge: a call this says is allowed is one the supervisor may let
    /// through.
    pub(crate) fn allows(&self, nr: i64, args: [u64; 6]) -> bool {
        let own = self
            .own
            .get_or_init(|| chain_of(&self.sandbox, &self.sandbox.promises, self.quiet_opens));
        !own.is_empty() && answer(own, nr, args).is_some_and(seccomp::allows)
    }

    /// The promises not held that would each allow the call (on `path`,
    /// if it names one).
    fn allowing(&self, nr: i64, args: [u64; 6], path: Option<&Path>) -> Vec<Promise> {
        let others = self.others.get_or_init(|| {
            ALL.iter()
                .map(|(p, _)| *p)
                // error changes what a refusal does, not what is allowed;
                // sendfd and recvfd add nothing on Linux (see the docs).
                .filter(|p| !matches!(p, Promise::Error | Promise::Sendfd | Promise::Recvfd))
                .filter(|p| !self.sandbox.promises.contains(*p))
                .map(|p| {
                    let mut set = self.sandbox.promises.clone();
                    set.insert(p);
                    (p, chain_of(&self.sandbox, &set, self.quiet_opens))
                })
                .collect()
        });
        others
            .iter()
            .filter(|(_, chain)| {
                !chain.is_empty() && answer(chain, nr, args).is_some_and(seccomp::allows)
            })
            .map(|(p, _)| *p)
            // tmppath's calls are any file's for the filter; Landlock keeps
            // them to /tmp: named only for a path there.
            .filter(|p| *p != Promise::Tmppath || path.is_some_and(|p| p.starts_with("/tmp")))
            .collect()
    }

    /// Why `call` was refused and what would allow it, in one clause.
    pub(crate) fn why(&self, call: &Call, exec_done: bool) -> String {
        let mut out = String::new();
        let allowing = self.allowing(call.nr, call.args, call.path.as_deref());
        let is_exec = call.nr == libc::SYS_execve || call.nr == libc::SYS_execveat;
        if is_exec && exec_done {
            out.push_str("a second exec: only the exec promise allows one (with the program unveiled with x)");
        } else if allowing.is_empty() {
            out.push_str(&none_allows(call));
        } else {
            let names: Vec<&str> = allowing.iter().map(|p| p.name()).collect();
            let _ = write!(out, "would be allowed by {}", names.join(" or "));
        }
        // With the promise added, the unveils keep the rights asked for:
        // only a path not unveiled for them stays refused.
        if !allowing.is_empty()
            && let Some(l) = self.landlock_gap(call, true)
        {
            let _ = write!(out, ", and Landlock would still refuse it: {l}");
        }
        out
    }

    /// For an allowed call: why Landlock will refuse it, if the unveiled
    /// paths say it will (log mode's report of an open).
    pub(crate) fn landlock_refusal(&self, call: &Call) -> Option<String> {
        self.landlock_gap(call, false)
    }

    /// What the unveiled paths lack for `call`'s path, if it has one and
    /// they lack something: with the rights they keep under the held
    /// promises, or (`as_asked`) with those the caller asked for.
    fn landlock_gap(&self, call: &Call, as_asked: bool) -> Option<String> {
        let path = call.path.as_ref()?;
        let (target, need) = needed(call, path)?;
        let (kept, asked) = self.perms_at(&target);
        let have = if as_asked { asked } else { kept };
        let missing = and(need, not(have));
        if missing == Perms::default() {
            return None;
        }
        let spec = perms_text(missing);
        let target = shown(&target.to_string_lossy());
        // Unveiled for it, but no held promise backs the right.
        if and(missing, not(asked)) == Perms::default() {
            let promise = match (missing.create, missing.write) {
                (true, _) => "cpath",
                (false, true) => "wpath (or cpath)",
                _ => "rpath",
            };
            return Some(format!(
                "{target} is unveiled for {spec}, but only {promise} lets the program use it"
            ));
        }
        Some(format!(
            "{target} is not unveiled for {spec} (add -v {spec}:{target})"
        ))
    }

    /// The permissions Landlock gives `path`, and those the caller asked
    /// for there (rules on it and on every directory above it add up, as
    /// Landlock's do).
    fn perms_at(&self, path: &Path) -> (Perms, Perms) {
        let (mut have, mut asked) = (Perms::default(), Perms::default());
        for (rule, kept, wanted) in &self.rules {
            if path.starts_with(rule) {
                have = or(have, *kept);
                asked = or(asked, *wanted);
            }
        }
        (have, asked)
    }
}

fn and(a: Perms, b: Perms) -> Perms {
    Perms {
        read: a.read && b.read,
        write: a.write && b.write,
        exec: a.exec && b.exec,
        create: a.create && b.create,
    }
}

fn or(a: Perms, b: Perms) -> Perms {
    Perms {
        read: a.read || b.read,
        write: a.write || b.write,
        exec: a.exec || b.exec,
        create: a.create || b.create,
    }
}

fn not(a: Perms) -> Perms {
    Perms {
        read: !a.read,
        write: !a.write,
        exec: !a.exec,
        create: !a.create,
    }
}

/// What every filter of `chain` answers together.
fn answer(chain: &[BpfProgram], nr: i64, args: [u64; 6]) -> Option<u32> {
    let progs: Vec<&[seccompiler::sock_filter]> = chain.iter().map(Vec::as_slice).collect();
    seccomp::evaluate_all(&progs, nr, args)
}

/// `rwxc` letters for `p`.
fn perms_text(p: Perms) -> String {
    [
        (p.read, 'r'),
        (p.write, 'w'),
        (p.exec, 'x'),
        (p.create, 'c'),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, c)| *c)
    .collect()
}

/// The path Landlock checks for `call` on `path` and the permissions it
/// needs there: the file for reads, writes and execution; the directory
/// for creating and removing.
fn needed(call: &Call, path: &Path) -> Option<(PathBuf, Perms)> {
    let parent = || path.parent().map(Path::to_path_buf);
    let create = Perms {
        create: true,
        ..Perms::default()
    };
    match call.nr {
        libc::SYS_open | libc::SYS_openat | libc::SYS_creat => {
            let flags = if call.nr == libc::SYS_creat {
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC
            } else {
                call.arg_int(if call.nr == libc::SYS_open { 1 } else { 2 })
            };
            if flags & libc::O_PATH != 0 {
                return None; // O_PATH opens no file: Landlock checks none
            }
            if flags & libc::O_CREAT != 0 && std::fs::symlink_metadata(path).is_err() {
                return Some((parent()?, create));
            }
            let acc = flags & libc::O_ACCMODE;
            Some((
                path.to_path_buf(),
                Perms {
                    read: acc == libc::O_RDONLY || acc == libc::O_RDWR,
                    write: acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0,
                    ..Perms::default()
                },
            ))
        }
        libc::SYS_execve | libc::SYS_execveat => Some((
            path.to_path_buf(),
            Perms {
                exec: true,
                ..Perms::default()
            },
        )),
        libc::SYS_truncate => Some((
            path.to_path_buf(),
            Perms {
                write: true,
                ..Perms::default()
            },
        )),
        libc::SYS_mkdir
        | libc::SYS_mkdirat
        | libc::SYS_rmdir
        | libc::SYS_unlink
        | libc::SYS_unlinkat
        | libc::SYS_mknod
        | libc::SYS_mknodat
        | libc::SYS_symlink
        | libc::SYS_symlinkat
        | libc::SYS_link
        | libc::SYS_linkat
        | libc::SYS_rename
        | libc::SYS_renameat
        | libc::SYS_renameat2 => Some((parent()?, create)),
        _ => None,
    }
}

/// "No promise allows it", with what to do instead.
fn none_allows(call: &Call) -> String {
    let name = call.name();
    if let Some(reason) = never_reason(call.nr) {
        return format!("no promise allows {name}: {reason}");
    }
    match call.nr {
        libc::SYS_socket | libc::SYS_socketpair => {
            let family = call.arg_int(0);
            let fam = name_of(SOCKET_FAMILIES, family);
            let extra = match family {
                libc::AF_NETLINK => {
                    " (kernel interfaces: routes, devices, audit); the resolver's probe \
                     (getaddrinfo) gets a soft answer under dns"
                }
                libc::AF_PACKET => " (packet sockets see the machine's traffic)",
                libc::AF_INET | libc::AF_INET6 => {
                    " of this type: inet allows TCP and UDP only, which Landlock's port \
                     rules and the filter can bound (no raw, SCTP or MPTCP sockets)"
                }
                _ => "",
            };
            format!("no promise allows {fam} sockets{extra}")
        }
        libc::SYS_ioctl => {
            let req = call.args[1] as u32;
            match req {
                0x5412 => "no promise allows TIOCSTI: it pushes input into a terminal, \
                           where it is read as typed (a way out of any sandbox sharing it)"
                    .to_owned(),
                0x540E | 0x5422 => {
                    "no promise allows taking or dropping a controlling terminal: the \
                     program's session is its own (--tty gives it privfork's terminal)"
                        .to_owned()
                }
                _ => format!(
                    "no promise allows ioctl {}: only the requests of the promise table are \
                     allowed (docs/sandbox.md)",
                    ioctl_name(req)
                ),
            }
        }
        libc::SYS_clone if call.args[0] & NAMESPACE_FLAGS != 0 => {
            "no promise allows new namespaces (privfork run --net none gives the program an \
             empty network namespace)"
                .to_owned()
        }
        libc::SYS_setsockopt | libc::SYS_getsockopt => {
            "no promise allows this socket option (docs/sandbox.md lists those allowed)".to_owned()
        }
        libc::SYS_prctl => format!(
            "no promise allows prctl {}: only the thread name and read-only queries are \
             allowed",
            name_of(PRCTL_OPTIONS, call.arg_int(0))
        ),
        libc::SYS_mmap | libc::SYS_mprotect | libc::SYS_pkey_mprotect => {
            "no promise allows memory both writable and executable, or executable anonymous \
             memory from here"
                .to_owned()
        }
        _ => format!(
            "no promise allows {name} (docs/sandbox.md: the promise table and what is never \
             allowed)"
        ),
    }
}

/// Why a call of [`NEVER`] is refused whatever is promised.
fn never_reason(nr: i64) -> Option<&'static str> {
    let name = NEVER.iter().find(|(_, n)| *n == nr)?.0;
    Some(match name {
        "ptrace" | "process_vm_readv" | "process_vm_writev" | "pidfd_getfd" => {
            "it reads or changes other processes"
        }
        "mount" | "umount2" | "fsopen" | "fsmount" | "move_mount" | "open_tree" | "chroot"
        | "pivot_root" => "it changes the file system tree",
        "unshare" | "setns" => {
            "new namespaces (privfork run --net none gives an empty network namespace)"
        }
        "io_uring_setup" | "io_uring_enter" | "io_uring_register" => {
            "io_uring's operations are not system calls the filter sees"
        }
        "keyctl" | "add_key" | "request_key" => "the kernel keyrings",
        "seccomp" | "landlock_create_ruleset" | "landlock_add_rule" | "landlock_restrict_self" => {
            "the program's own sandbox calls"
        }
        "openat2" => "its flags are behind a pointer the filter cannot read (glibc uses openat)",
        _ => "never allowed (docs/sandbox.md says why)",
    })
}

#[cfg(test)]
impl Sandbox {
    /// An explainer with the quiet opens, as on a kernel with full Landlock.
    fn explainer_for_tests(&self) -> Explainer {
        Explainer::new(self, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sandbox::call::tests::call;

    fn explainer(promises: &str) -> Explainer {
        Sandbox::new()
            .promises(promises)
            .unwrap()
            .for_exec_loader()
            .explainer_for_tests()
    }

    #[test]
    fn hints_name_only_promises_that_help_and_are_not_held() {
        // ioctl(TCSETS): tty allows it; stdio is held and does not.
        let e = explainer("stdio");
        let c = call(libc::SYS_ioctl, [0, 0x5402, 0, 0, 0, 0]);
        assert_eq!(e.why(&c, true), "would be allowed by tty");
        // A netlink socket: no promise, whatever is held.
        let e = explainer("stdio inet unix dns");
        let c = call(libc::SYS_socket, [16, libc::SOCK_RAW as u64, 0, 0, 0, 0]);
        let why = e.why(&c, true);
        assert!(
            why.starts_with("no promise allows AF_NETLINK sockets"),
            "{why}"
        );
        // TIOCSTI: none, even with tty.
        let e = explainer("stdio tty");
        let c = call(libc::SYS_ioctl, [0, 0x5412, 0, 0, 0, 0]);
        assert!(e.why(&c, true).starts_with("no promise allows TIOCSTI"));
        // A TCP socket: inet, not unix or dns.
        let e = explainer("stdio");
        let c = call(libc::SYS_socket, [2, libc::SOCK_STREAM as u64, 0, 0, 0, 0]);
        assert_eq!(e.why(&c, true), "would be allowed by inet");
        // A second exec.
        let c = call(libc::SYS_execve, [0; 6]);
        assert!(e.why(&c, true).starts_with("a second exec"));
    }

    #[test]
    fn the_held_promises_decide_what_is_allowed() {
        let open = |flags: i32| [0, 0, flags as u64, 0, 0, 0];
        let e = explainer("stdio");
        assert!(e.allows(libc::SYS_read, [0; 6]));
        // Read-only opens pass the filter (Landlock decides); write opens
        // need wpath.
        assert!(e.allows(libc::SYS_openat, open(libc::O_RDONLY)));
        assert!(!e.allows(libc::SYS_openat, open(libc::O_WRONLY)));
        assert!(!e.allows(libc::SYS_openat, open(libc::O_RDONLY | libc::O_TRUNC)));
        // Creating ones need cpath.
        assert!(!e.allows(libc::SYS_openat, open(libc::O_WRONLY | libc::O_CREAT)));
        let e = explainer("stdio wpath");
        assert!(!e.allows(libc::SYS_openat, open(libc::O_WRONLY | libc::O_CREAT)));
        let e = explainer("stdio cpath");
        assert!(e.allows(libc::SYS_openat, open(libc::O_WRONLY | libc::O_CREAT)));
    }

    #[test]
    fn unveils_add_up_along_the_path() {
        let dir = std::env::temp_dir();
        let sb = Sandbox::new()
            .promises("stdio rpath")
            .unwrap()
            .unveil(&format!("r:{}", dir.display()))
            .unwrap();
        let e = sb.explainer_for_tests();
        let canon = dir.canonicalize().unwrap();
        let mut c = call(libc::SYS_openat, [0, 0, libc::O_RDONLY as u64, 0, 0, 0]);
        c.path = Some(canon.join("some-file"));
        assert_eq!(e.landlock_refusal(&c), None);
        c.args[2] = libc::O_WRONLY as u64;
        let gap = e.landlock_refusal(&c).unwrap();
        assert!(gap.contains("not unveiled for w"), "{gap}");
        c.path = Some(PathBuf::from("/etc/shadow"));
        c.args[2] = libc::O_RDONLY as u64;
        let gap = e.landlock_refusal(&c).unwrap();
        assert_eq!(
            gap,
            "/etc/shadow is not unveiled for r (add -v r:/etc/shadow)"
        );
    }
}
