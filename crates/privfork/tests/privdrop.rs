//! The process-wide privilege drop. Runs as root; each case in a fresh
//! process of its own (see `support`), because a drop cannot be undone.

mod support;

use privfork::privdrop::{PrivDropError, drop_privileges};
use privfork::{DropOptions, Identity};
use rustix::process::{Gid, Uid};
use support::{require_root, status_field};

fn main() {
    support::main(
        &[
            ("drop_to_nobody_is_verified", drop_to_nobody_is_verified),
            ("all_threads_are_dropped", all_threads_are_dropped),
            (
                "old_supplementary_groups_are_gone",
                old_supplementary_groups_are_gone,
            ),
            (
                "numeric_uid_without_passwd_entry",
                numeric_uid_without_passwd_entry,
            ),
            (
                "keepcaps_cannot_keep_capabilities",
                keepcaps_cannot_keep_capabilities,
            ),
            (
                "ambient_capabilities_are_cleared",
                ambient_capabilities_are_cleared,
            ),
            (
                "non_root_caller_with_caps_is_dropped_fully",
                non_root_caller_with_caps_is_dropped_fully,
            ),
            (
                "no_setuid_fixup_securebit_cannot_keep_capabilities",
                no_setuid_fixup_securebit_cannot_keep_capabilities,
            ),
            ("fs_ids_are_reset_and_checked", fs_ids_are_reset_and_checked),
            ("many_supplementary_groups", many_supplementary_groups),
            (
                "another_threads_caps_are_seen_before_the_drop",
                another_threads_caps_are_seen_before_the_drop,
            ),
            (
                "threads_that_would_keep_caps_are_refused",
                threads_that_would_keep_caps_are_refused,
            ),
            (
                "keepcaps_with_threads_is_refused",
                keepcaps_with_threads_is_refused,
            ),
            (
                "root_target_refused_and_nothing_changed",
                root_target_refused_and_nothing_changed,
            ),
            (
                "root_target_allowed_explicitly",
                root_target_allowed_explicitly,
            ),
            (
                "missing_privilege_named_and_nothing_changed",
                missing_privilege_named_and_nothing_changed,
            ),
            (
                "dropping_to_self_needs_no_privilege",
                dropping_to_self_needs_no_privilege,
            ),
        ],
        &[],
    )
}

fn nobody() -> Identity {
    Identity::user("nobody").unwrap()
}

fn assert_is(id: &Identity) {
    let ids = |n: u32| format!("{n}\t{n}\t{n}\t{n}");
    assert_eq!(status_field("Uid"), ids(id.uid()));
    assert_eq!(status_field("Gid"), ids(id.gid()));
    let groups: Vec<String> = id.groups().iter().map(|g| g.to_string()).collect();
    assert_eq!(status_field("Groups"), groups.join(" "));
}

fn assert_no_caps() {
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(status_field(set), "0000000000000000", "{set}");
    }
}

fn drop_to_nobody_is_verified() {
    require_root();
    let id = nobody();
    drop_privileges(&id, &DropOptions::new()).unwrap();
    assert_is(&id);
    assert_no_caps();
    assert_eq!(
        rustix::thread::set_thread_uid(Uid::ROOT),
        Err(rustix::io::Errno::PERM)
    );
    assert_eq!(
        rustix::thread::set_thread_gid(Gid::ROOT),
        Err(rustix::io::Errno::PERM)
    );
}

fn all_threads_are_dropped() {
    require_root();
    // Threads started before the drop must end up as nobody too (the raw
    // syscalls would only change the calling thread).
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<String>();
    let t = std::thread::spawn(move || {
        go_rx.recv().unwrap();
        let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let uid = s
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .to_owned();
        done_tx.send(uid).unwrap();
    });
    let id = nobody();
    drop_privileges(&id, &DropOptions::new()).unwrap();
    go_tx.send(()).unwrap();
    let seen = done_rx.recv().unwrap();
    t.join().unwrap();
    let n = id.uid();
    assert_eq!(seen, format!("Uid:\t{n}\t{n}\t{n}\t{n}"));
}

fn old_supplementary_groups_are_gone() {
    require_root();
    // Give root some extra groups first (allowed explicitly), then drop.
    let root_plus = Identity::user("root")
        .unwrap()
        .with_groups([777, 778])
        .unwrap();
    drop_privileges(&root_plus, &DropOptions::new().allow_root(true)).unwrap();
    assert_eq!(status_field("Groups"), "0 777 778");
    let id = nobody();
    drop_privileges(&id, &DropOptions::new()).unwrap();
    assert_eq!(status_field("Groups"), id.gid().to_string());
}

fn numeric_uid_without_passwd_entry() {
    require_root();
    let id = Identity::user("4000321").unwrap();
    assert_eq!(id.name(), None);
    drop_privileges(&id, &DropOptions::new()).unwrap();
    assert_is(&id);
    assert_eq!(status_field("Groups"), "4000321");
    assert_no_caps();
}

fn keepcaps_cannot_keep_capabilities() {
    require_root();
    // With PR_SET_KEEPCAPS the kernel keeps the permitted set across
    // setresuid; the drop must clear it anyway.
    rustix::thread::set_keep_capabilities(true).unwrap();
    let id = nobody();
    drop_privileges(&id, &DropOptions::new()).unwrap();
    assert_is(&id);
    assert_no_caps();
}

/// Becomes uid/gid 1000 (not root) while keeping CAP_SETUID, CAP_SETGID
/// and CAP_NET_BIND_SERVICE in the effective, permitted and inheritable
/// sets — a non-root process holding capabilities (as systemd's
/// AmbientCapabilities= or file capabilities give).
fn become_non_root_with_caps() {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let keep = CapabilitySet::SETUID | CapabilitySet::SETGID | CapabilitySet::NET_BIND_SERVICE;
    rustix::thread::set_keep_capabilities(true).unwrap();
    rustix::thread::set_thread_groups(&[Gid::from_raw(1000)]).unwrap();
    rustix::thread::set_thread_res_gid(
        Gid::from_raw(1000),
        Gid::from_raw(1000),
        Gid::from_raw(1000),
    )
    .unwrap();
    rustix::thread::set_thread_res_uid(
        Uid::from_raw(1000),
        Uid::from_raw(1000),
        Uid::from_raw(1000),
    )
    .unwrap();
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: keep,
        },
    )
    .unwrap();
    rustix::thread::set_keep_capabilities(false).unwrap();
    assert_eq!(status_field("Uid"), "1000\t1000\t1000\t1000");
}

fn ambient_capabilities_are_cleared() {
    require_root();
    // From a non-root uid the kernel's setuid fixup clears nothing, so an
    // ambient capability survives setresuid unless the drop clears it.
    become_non_root_with_caps();
    rustix::thread::configure_capability_in_ambient_set(
        rustix::thread::CapabilitySet::NET_BIND_SERVICE,
        true,
    )
    .unwrap();
    assert_ne!(status_field("CapAmb"), "0000000000000000");
    let id = nobody();
    drop_privileges(&id, &DropOptions::new()).unwrap();
    assert_is(&id);
    assert_no_caps();
}

fn non_root_caller_with_caps_is_dropped_fully() {
    require_root();
    become_non_root_with_caps();
    let id = nobody();
    drop_privileges(&id, &DropOptions::new()).unwrap();
    assert_is(&id);
    assert_no_caps();
}

fn no_setuid_fixup_securebit_cannot_keep_capabilities() {
    require_root();
    use rustix::thread::CapabilitiesSecureBits as Bits;
    rustix::thread::set_capabilities_secure_bits(Bits::NO_SETUID_FIXUP).unwrap();
    let id = nobody();
    drop_privileges(&id, &DropOptions::new()).unwrap();
    assert_is(&id);
    assert_no_caps();
}

fn fs_ids_are_reset_and_checked() {
    require_root();
    // uid nobody everywhere but the saved uid, then fsuid 0: the process
    // looks like nobody but opens files as root. Dropping to nobody (which
    // needs no privilege here) must reset the fs ids too.
    let dir = support::TempDir::new("fsuid");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "root only").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let id = nobody();
    let g = Gid::from_raw(id.gid());
    rustix::thread::set_thread_groups(&[g]).unwrap();
    rustix::thread::set_thread_res_gid(g, g, g).unwrap();
    let n = Uid::from_raw(id.uid());
    rustix::thread::set_thread_res_uid(n, n, Uid::ROOT).unwrap();
    // SAFETY: setfsuid takes an integer; this case process is single-threaded.
    unsafe { libc::setfsuid(0) };
    assert!(
        status_field("Uid").ends_with("\t0"),
        "fsuid 0 expected: {}",
        status_field("Uid")
    );
    assert!(
        std::fs::read(&secret).is_ok(),
        "setup: fsuid 0 should read the file"
    );
    drop_privileges(&id, &DropOptions::new()).unwrap();
    assert_is(&id);
    let err = std::fs::read(&secret).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
}

/// Starts an idle thread and returns a way to stop it.
fn idle_thread() -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    (tx, t)
}

fn threads_that_would_keep_caps_are_refused() {
    require_root();
    // Non-root with capabilities and a second thread: capset would only
    // clear the calling thread, so the drop must refuse up front.
    become_non_root_with_caps();
    let (stop, t) = idle_thread();
    let before = (status_field("Uid"), status_field("CapPrm"));
    let err = drop_privileges(&nobody(), &DropOptions::new()).unwrap_err();
    assert!(
        matches!(err, PrivDropError::ThreadsWouldKeepCapabilities { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("multithreaded"), "{err}");
    assert_eq!(
        (status_field("Uid"), status_field("CapPrm")),
        before,
        "something changed"
    );
    stop.send(()).unwrap();
    t.join().unwrap();
}

fn keepcaps_with_threads_is_refused() {
    require_root();
    rustix::thread::set_keep_capabilities(true).unwrap();
    let (stop, t) = idle_thread();
    let err = drop_privileges(&nobody(), &DropOptions::new()).unwrap_err();
    assert!(
        matches!(err, PrivDropError::ThreadsWouldKeepCapabilities { .. }),
        "{err:?}"
    );
    assert_eq!(status_field("Uid"), "0\t0\t0\t0");
    stop.send(()).unwrap();
    t.join().unwrap();
}

fn root_target_refused_and_nothing_changed() {
    require_root();
    let before = (
        status_field("Uid"),
        status_field("Groups"),
        status_field("CapEff"),
    );
    let err = drop_privileges(&Identity::user("root").unwrap(), &DropOptions::new()).unwrap_err();
    assert!(matches!(err, PrivDropError::RootRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("allow_root"), "{err}");
    let after = (
        status_field("Uid"),
        status_field("Groups"),
        status_field("CapEff"),
    );
    assert_eq!(before, after);
}

fn root_target_allowed_explicitly() {
    require_root();
    let root = Identity::user("root").unwrap();
    drop_privileges(&root, &DropOptions::new().allow_root(true)).unwrap();
    assert_is(&root);
}

fn missing_privilege_named_and_nothing_changed() {
    require_root();
    let id = nobody();
    drop_privileges(&id, &DropOptions::new()).unwrap();
    let err = drop_privileges(&Identity::user("daemon").unwrap(), &DropOptions::new()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, PrivDropError::MissingPrivilege { .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("CAP_SETUID, CAP_SETGID") && msg.contains("daemon"),
        "{msg}"
    );
    assert!(msg.contains(&format!("uid {}", id.uid())), "{msg}");
    assert_is(&id);
}

fn dropping_to_self_needs_no_privilege() {
    require_root();
    let id = nobody();
    drop_privileges(&id, &DropOptions::new()).unwrap();
    drop_privileges(&id, &DropOptions::new()).unwrap();
    assert_is(&id);
}

fn many_supplementary_groups() {
    require_root();
    // More groups than the 64 read without allocating: the long path of
    // the group read-back is exercised too.
    let id = Identity::user("4000500")
        .unwrap()
        .with_groups(4001000..4001100)
        .unwrap();
    assert_eq!(id.groups().len(), 101);
    drop_privileges(&id, &DropOptions::new()).unwrap();
    assert_is(&id);
    assert_no_caps();
}

fn another_threads_caps_are_seen_before_the_drop() {
    require_root();
    // Capability sets are per thread: a thread that raised its own
    // inheritable set (which setuid never clears) must make the drop refuse
    // up front, with nothing changed — not abort after the fact.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let mut caps = rustix::thread::capabilities(None).unwrap();
        caps.inheritable |= rustix::thread::CapabilitySet::NET_BIND_SERVICE;
        rustix::thread::set_capabilities(None, caps).unwrap();
        ready_tx.send(()).unwrap();
        let _ = stop_rx.recv();
    });
    ready_rx.recv().unwrap();
    let err = drop_privileges(&nobody(), &DropOptions::new()).unwrap_err();
    assert!(
        matches!(err, PrivDropError::ThreadsWouldKeepCapabilities { .. }),
        "{err:?}"
    );
    assert_eq!(status_field("Uid"), "0\t0\t0\t0");
    stop_tx.send(()).unwrap();
    t.join().unwrap();
}
