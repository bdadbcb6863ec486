//! What the notes family's processes are, read from `/proc` while they
//! run: `/api/status` tells the truth, the worker is sandboxed, each
//! render is a fresh `nobody` child under seccomp that dies at its
//! deadline, and hostile notes end in a clear error, never a hung or
//! crashed worker.

mod common;
#[path = "../../../crates/privfork/tests/time_limit/mod.rs"]
mod time_limit;

use std::time::{Duration, Instant};

use common::{Notes, children, json, require_root, status_field};
use time_limit::time_limit;

/// About 1 MB of nested emphasis: the slowest kind of note found for the
/// renderer (linear, but about 1 s in a release build and several in a
/// debug build), so over any deadline of a few hundred ms.
fn slow_note() -> String {
    "*_".repeat(250_000) + "a" + &"_*".repeat(250_000)
}

/// 100 000 nested block quotes: quadratic in the HTML sanitizer, until
/// the renderer caps nesting.
fn nesting_bomb() -> String {
    ">".repeat(100_000)
}

#[test]
fn status_agrees_with_proc() {
    let _limit = time_limit!();
    require_root();
    let n = Notes::start(&[]);
    let (s, b) = n.call("GET", "/api/status", None);
    assert_eq!(s, 200, "{b}");
    let v = json(&b);
    assert_eq!(v["generation"], 1);
    assert_eq!(v["main"]["pid"], n.pid());
    assert_eq!(v["main"]["uids"], serde_json::json!([0, 0, 0, 0]));
    let member = |role: &str| {
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == role)
            .unwrap_or_else(|| panic!("{role} in {v}"))
            .clone()
    };
    for (role, uid, promises, caps) in [
        (
            "worker",
            65534,
            Some("stdio rpath wpath cpath flock accept"),
            "0000000000000000",
        ),
        // The render helper keeps root's uid with SETUID, SETGID and KILL
        // only, to drop and signal its children.
        ("render", 0, None, "00000000000000e0"),
    ] {
        let m = member(role);
        let pid = n.member(role);
        assert_eq!(m["process"]["pid"], pid, "{m}");
        assert_eq!(m["state"], "running");
        assert_eq!(m["restarts"], 0);
        let uids = format!("{uid}\t{uid}\t{uid}\t{uid}");
        assert_eq!(status_field(pid, "Uid").unwrap(), uids, "{role}");
        assert_eq!(
            m["process"]["uids"],
            serde_json::json!([uid, uid, uid, uid])
        );
        assert_eq!(status_field(pid, "CapEff").unwrap(), caps, "{role}");
        assert_eq!(
            m["process"]["cap_eff"].as_u64().unwrap(),
            u64::from_str_radix(caps, 16).unwrap()
        );
        let seccomp = status_field(pid, "Seccomp").unwrap();
        assert_eq!(m["process"]["seccomp"].to_string(), seccomp, "{role}");
        assert_eq!(
            m["process"]["seccomp_filters"].to_string(),
            status_field(pid, "Seccomp_filters").unwrap()
        );
        assert_eq!(status_field(pid, "NoNewPrivs").unwrap(), "1", "{role}");
        assert_eq!(m["process"]["no_new_privs"], true);
        assert_eq!(m["reported"]["promises"].as_str(), promises, "{m}");
    }
    let w = n.member("worker");
    assert_eq!(status_field(w, "Seccomp").unwrap(), "2");
    let layers = member("worker")["reported"]["layers"].clone();
    for layer in ["landlock", "seccomp", "no_new_privs", "capabilities"] {
        let level = layers
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l[0] == layer)
            .unwrap_or_else(|| panic!("{layer} in {layers}"));
        assert_eq!(level[1], "full", "{layer}: {layers}");
    }
    assert!(
        member("render")["reported"]["detail"]
            .as_str()
            .unwrap()
            .contains("as nobody under \"stdio\"")
    );
    // The page shows the same table.
    let (_, page) = n.call("GET", "/", None);
    assert!(page.contains("id=\"family\""), "{page}");
    assert!(
        page.contains(&format!("<td>{w}</td><td>nobody</td>")),
        "{page}"
    );
}

#[test]
fn render_child_is_nobody_under_seccomp_and_dies_at_its_deadline() {
    let _limit = time_limit!();
    require_root();
    let n = Notes::start(&["--render-timeout-ms", "500"]);
    let worker = n.member("worker");
    let render = n.member("render");
    let id = n.create(&slow_note());
    let base = n.base.clone();
    let started = Instant::now();
    let page = std::thread::spawn(move || {
        let mut r = common::agent()
            .get(&format!("{base}/notes/{id}"))
            .call()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap())
    });
    // The render child, read while it works.
    let child = loop {
        if let Some(&c) = children(render).first() {
            break c;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no render child appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    // Its setup may still be running for an instant: wait for seccomp.
    let end = Instant::now() + Duration::from_secs(2);
    while status_field(child, "Seccomp").as_deref() != Some("2") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(status_field(child, "Seccomp").as_deref(), Some("2"));
    assert_eq!(
        status_field(child, "Uid").as_deref(),
        Some("65534\t65534\t65534\t65534")
    );
    assert_eq!(status_field(child, "NoNewPrivs").as_deref(), Some("1"));
    assert_eq!(
        status_field(child, "CapEff").as_deref(),
        Some("0000000000000000")
    );
    // Its address space is capped (512 MiB by default), soft and hard.
    let limits = std::fs::read_to_string(format!("/proc/{child}/limits")).unwrap_or_default();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))
        .unwrap_or_else(|| panic!("{limits}"));
    let cap = (512u64 << 20).to_string();
    assert_eq!(
        line.split_whitespace().filter(|w| *w == cap).count(),
        2,
        "{line}"
    );
    let (status, body) = page.join().unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("longer than 500 ms"), "{body}");
    // Killed and reaped: no render child left; the same worker serves.
    assert!(children(render).is_empty());
    assert!(
        status_field(child, "Uid").is_none(),
        "render child {child} still exists"
    );
    assert_eq!(n.member("worker"), worker);
    let ok = n.create("**fine**");
    let (s, b) = n.call("GET", &format!("/notes/{ok}"), None);
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("<strong>fine</strong>"), "{b}");
}

/// Megabytes of emphasis, 10^5 links, a sea of open tags, deep lists and
/// quotes: each ends in a page with a clear error (or, if it renders in
/// time and size, a clean one), never a hung or crashed worker. A 300 ms
/// deadline makes the slow ones fail in any build.
#[test]
fn hostile_notes_end_in_a_clear_error() {
    let _limit = time_limit!(120);
    require_root();
    let n = Notes::start(&["--render-timeout-ms", "300"]);
    let worker = n.member("worker");
    let hostile = [
        ("emphasis", "*a".repeat(400_000)),
        ("links", "[a](b)".repeat(100_000)),
        ("open tags", "<div>".repeat(200_000)),
        ("deep list", "- ".repeat(100_000) + "x"),
        ("nesting", nesting_bomb()),
        ("nested emphasis", slow_note()),
        ("task list", "- [ ] x\n".repeat(100_000)),
    ];
    let mut errors = 0;
    for (what, text) in &hostile {
        let id = n.create(text);
        let (s, b) = n.call("GET", &format!("/notes/{id}"), None);
        match s {
            422 => {
                errors += 1;
                assert!(b.contains("id=\"render-error\""), "{what}: {b:.300}");
                assert!(
                    b.contains("the renderer was stopped") || b.contains("rendering failed"),
                    "{what}: {b:.2000}"
                );
            }
            200 => assert!(!b.contains("<script"), "{what}"),
            s => panic!("{what}: status {s}: {b:.300}"),
        }
        assert_eq!(n.member("worker"), worker, "{what}: the worker changed");
    }
    assert!(errors >= 2, "only {errors} hostile notes were stopped");
    assert!(!n.log().contains("restarting"), "{}", n.log());
}

/// Started by a user that is not root: every process runs as that user
/// (none can change users), the worker still under its sandbox, and one
/// warning says what is not enforced.
#[test]
fn not_root_runs_as_the_caller_still_sandboxed() {
    let _limit = time_limit!();
    require_root();
    let dir = common::TempDir::new("notroot");
    let data = dir.path().join("notes");
    std::os::unix::fs::chown(dir.path(), Some(4002), Some(4002)).unwrap();
    let n = Notes::spawn_under(
        &[
            "setpriv", "--reuid", "4002", "--regid", "4002", "--groups", "4002", "--",
        ],
        &data,
        &[],
    );
    n.wait_log("every role is ready", 1, 30);
    let log = n.log();
    assert_eq!(
        log.matches("warning: not running as root").count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("--user and --render-user are not enforced"),
        "{log}"
    );
    for role in ["worker", "render"] {
        let pid = n.member(role);
        assert_eq!(
            status_field(pid, "Uid").as_deref(),
            Some("4002\t4002\t4002\t4002"),
            "{role}"
        );
    }
    let w = n.member("worker");
    assert_eq!(status_field(w, "Seccomp").as_deref(), Some("2"));
    assert_eq!(status_field(w, "NoNewPrivs").as_deref(), Some("1"));
    let id = n.create("**mine**");
    let (s, b) = n.call("GET", &format!("/notes/{id}"), None);
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("<strong>mine</strong>"), "{b}");
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 4002);
}
