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
                "keep_caps_securebit_cannot_keep_capabilities",
                keep_caps_securebit_cannot_keep_capabilities,
            ),
            (
                "ambient_capabilities_are_cleared",
                ambient_capabilities_are_cleared,
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

fn keep_caps_securebit_cannot_keep_capabilities() {
    require_root();
    // With PR_SET_KEEPCAPS the kernel keeps the permitted set across
    // setresuid; the drop must clear it anyway.
    rustix::thread::set_keep_capabilities(true).unwrap();
    let id = nobody();
    drop_privileges(&id, &DropOptions::new()).unwrap();
    assert_is(&id);
    assert_no_caps();
}

fn ambient_capabilities_are_cleared() {
    require_root();
    use rustix::thread::CapabilitySet;
    // Raise CAP_NET_BIND_SERVICE into the ambient set (it must be in the
    // inheritable set first); ambient caps survive a uid change.
    let mut caps = rustix::thread::capabilities(None).unwrap();
    caps.inheritable |= CapabilitySet::NET_BIND_SERVICE;
    rustix::thread::set_capabilities(None, caps).unwrap();
    rustix::thread::configure_capability_in_ambient_set(CapabilitySet::NET_BIND_SERVICE, true)
        .unwrap();
    assert_ne!(status_field("CapAmb"), "0000000000000000");
    let id = nobody();
    drop_privileges(&id, &DropOptions::new()).unwrap();
    assert_no_caps();
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
