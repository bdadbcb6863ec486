//! Nothing acknowledged is lost, nothing half-written is ever a note: the
//! write path's order seen with strace, a worker killed under load, 1000
//! notes from 16 clients, and `kill -9` of the whole family mid-write.

mod common;
#[path = "../../../crates/privfork/tests/time_limit/mod.rs"]
mod time_limit;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Notes, json, require_root};
use time_limit::time_limit;

/// The text of note `seq` of client `client`, `len` bytes: a header line
/// naming it and a body that can be checked whole.
fn text(client: usize, seq: usize, len: usize) -> String {
    let head = format!("note {client}-{seq} ✓\n");
    let body: String = (0..len.saturating_sub(head.len()))
        .map(|i| char::from(b'a' + ((i + client + seq) % 26) as u8))
        .collect();
    head + &body
}

/// Whether `t` is a whole note made by `text` (for notes whose creator
/// never heard back).
fn is_whole(t: &str) -> bool {
    let Some((head, _)) = t.split_once('\n') else {
        return false;
    };
    let Some(name) = head
        .strip_prefix("note ")
        .and_then(|h| h.strip_suffix(" ✓"))
    else {
        return false;
    };
    let Some((c, s)) = name.split_once('-') else {
        return false;
    };
    let (Ok(c), Ok(s)) = (c.parse::<usize>(), s.parse::<usize>()) else {
        return false;
    };
    text(c, s, t.len()) == t
}

/// POSTs a note, retrying on a connection failure (a worker being
/// restarted); `Some(id)` once it is acknowledged with 201.
fn post(agent: &ureq::Agent, base: &str, t: &str, deadline: Instant) -> Option<String> {
    let body = serde_json::json!({ "text": t }).to_string();
    while Instant::now() < deadline {
        match agent.post(&format!("{base}/api/notes")).send(&body) {
            Ok(mut r) if r.status().as_u16() == 201 => {
                let b = r.body_mut().read_to_string().ok()?;
                return Some(json(&b)["id"].as_str()?.to_owned());
            }
            Ok(r) => panic!("POST answered {}", r.status()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    None
}

#[test]
fn thousand_notes_from_sixteen_clients_are_all_there() {
    let _limit = time_limit!(120);
    require_root();
    let n = Notes::start(&[]);
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let threads: Vec<_> = (0..16)
        .map(|c| {
            let (base, acked) = (n.base.clone(), Arc::clone(&acked));
            std::thread::spawn(move || {
                let agent = common::agent();
                let deadline = Instant::now() + Duration::from_secs(90);
                // 1000 in all: clients 0-7 write 63, 8-15 write 62.
                for s in 0..(if c < 8 { 63 } else { 62 }) {
                    let t = text(c, s, 100 + (c * 37 + s * 101) % 3000);
                    let id = post(&agent, &base, &t, deadline).expect("acknowledged");
                    acked.lock().unwrap().insert(id, t);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap();
    assert_eq!(acked.len(), 1000);
    for (id, t) in acked.iter() {
        let (s, b) = n.call("GET", &format!("/api/notes/{id}"), None);
        assert_eq!(s, 200, "{id}: {b}");
        assert_eq!(json(&b)["text"].as_str().unwrap(), t, "{id}");
    }
    assert_eq!(
        json(&n.call("GET", "/api/notes?limit=1", None).1)["total"],
        1000
    );
}

#[test]
fn killing_the_worker_under_load_loses_no_acknowledged_note() {
    let _limit = time_limit!(120);
    require_root();
    let n = Notes::start(&[]);
    let first = n.member("worker");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..8)
        .map(|c| {
            let (base, acked, stop) = (n.base.clone(), Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let agent = common::agent();
                let mut s = 0;
                while !stop.load(Ordering::SeqCst) {
                    let t = text(c, s, 2000 + s % 5000);
                    let deadline = Instant::now() + Duration::from_secs(30);
                    if let Some(id) = post(&agent, &base, &t, deadline) {
                        acked.lock().unwrap().push((id, t));
                    }
                    s += 1;
                }
            })
        })
        .collect();
    // Let writes flow, kill the worker mid-stream, let the new one serve.
    let wait_acked = |k: usize| {
        let end = Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().len() < k {
            assert!(Instant::now() < end, "writes did not flow");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_acked(50);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(first as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    n.wait_log("restarting worker:0", 1, 10);
    let before = acked.lock().unwrap().len();
    wait_acked(before + 50);
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert_ne!(n.member("worker"), first);
    let acked = acked.lock().unwrap();
    for (id, t) in acked.iter() {
        let (s, b) = n.call("GET", &format!("/api/notes/{id}"), None);
        assert_eq!(s, 200, "acknowledged note {id} lost: {b}");
        assert_eq!(json(&b)["text"].as_str().unwrap(), t, "{id}");
    }
    // Whatever was stored beyond them is whole.
    let total = json(&n.call("GET", "/api/notes?limit=1", None).1)["total"]
        .as_u64()
        .unwrap();
    assert!(total as usize >= acked.len());
}

#[test]
fn kill_9_of_the_family_mid_write_leaves_no_partial_note() {
    let _limit = time_limit!(120);
    require_root();
    let dir = common::TempDir::new("kill9");
    let data = dir.path().join("notes");
    let mut n = Notes::start_at(&data, &[]);
    let pids = [n.pid(), n.member("worker"), n.member("render")];
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..8)
        .map(|c| {
            let (base, stop) = (n.base.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let agent = common::agent();
                let mut s = 0;
                while !stop.load(Ordering::SeqCst) {
                    // Large notes: a write takes long enough to be caught
                    // in the middle.
                    let body =
                        serde_json::json!({ "text": text(c, s, 200_000 + s % 7) }).to_string();
                    let _ = agent.post(&format!("{base}/api/notes")).send(&body);
                    s += 1;
                }
            })
        })
        .collect();
    // Wait for notes to be on disk, then kill every process at once.
    let end = Instant::now() + Duration::from_secs(30);
    let stored = || {
        std::fs::read_dir(&data).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".note"))
            })
            .count()
        })
    };
    while stored() < 20 {
        assert!(Instant::now() < end, "no notes written");
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in pids {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(p as i32).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    let _ = n.child.wait();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    // Every file named as a note holds a whole note.
    let mut notes = 0;
    let mut temps = 0;
    for e in std::fs::read_dir(&data).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".note") {
            notes += 1;
        } else if name.starts_with(".tmp-") {
            temps += 1;
        } else {
            panic!("unexpected file {name}");
        }
    }
    assert!(notes >= 20, "{notes}");
    // The store leaves unlocked temp files younger than its grace (a live
    // writer between creating and locking one looks the same): age them,
    // as if the restart came later. If the kill caught no write in
    // flight, plant one dead writer's file.
    if temps == 0 {
        std::fs::write(data.join(".tmp-planted"), "half a note").unwrap();
        temps = 1;
    }
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for e in std::fs::read_dir(&data).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            std::fs::File::options()
                .write(true)
                .open(e.path())
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
    // A new family on the same directory: every note reads back whole,
    // and the dead writers' temp files are gone.
    let n2 = Notes::start_at(&data, &[]);
    let list = json(&n2.call("GET", "/api/notes?limit=100", None).1);
    assert_eq!(list["total"].as_u64().unwrap() as usize, notes);
    let mut offset = 0;
    while offset < notes {
        let page = json(
            &n2.call(
                "GET",
                &format!("/api/notes?offset={offset}&limit=100"),
                None,
            )
            .1,
        );
        for m in page["notes"].as_array().unwrap() {
            let id = m["id"].as_str().unwrap();
            let (s, b) = n2.call("GET", &format!("/api/notes/{id}"), None);
            assert_eq!(s, 200, "{id}: {b:.300}");
            assert!(
                is_whole(json(&b)["text"].as_str().unwrap()),
                "{id} is not whole"
            );
            offset += 1;
        }
    }
    let left: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(
        left.is_empty(),
        "temp files left after restart: {left:?} (were {temps})"
    );
    n2.wait_log(
        &format!("removed {temps} unfinished note(s) left by a writer that died"),
        1,
        5,
    );
    drop(n2);
    let _ = n.stop();
}

/// The write path, as the kernel sees it: the temp file is synced, then
/// renamed to its note name, then the directory is synced, and only then
/// does the 201 go out.
#[test]
fn note_is_synced_renamed_and_directory_synced_before_201() {
    let _limit = time_limit!();
    require_root();
    let n = Notes::start(&[]);
    let worker = n.member("worker");
    let dir = common::TempDir::new("strace");
    let out = dir.path().join("trace");
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-s", "48", "-o"])
        .arg(&out)
        .args([
            "-e",
            "trace=openat,fsync,fdatasync,rename,renameat,renameat2,write,writev,sendto,sendmsg",
            "-p",
            &worker.to_string(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace is needed (.ci/run installs it)");
    // Attached once a traced call shows up.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = n.call("GET", "/api/notes", None);
        if std::fs::read_to_string(&out).is_ok_and(|t| t.contains("HTTP/1.1 200")) {
            break;
        }
        assert!(Instant::now() < end, "strace did not attach");
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = n.create("synced?");
    std::thread::sleep(Duration::from_millis(200));
    let _ = strace.kill();
    let _ = strace.wait();
    let trace = std::fs::read_to_string(&out).unwrap();
    // Completed calls, in order ("<... x resumed>" lines complete a call
    // that was split across threads).
    let lines: Vec<&str> = trace
        .lines()
        .filter(|l| !l.contains("<unfinished ...>"))
        .collect();
    let find = |what: &dyn Fn(&str) -> bool, from: usize, label: &str| -> (usize, String) {
        lines[from..]
            .iter()
            .position(|l| what(l))
            .map(|i| (from + i, lines[from + i].to_owned()))
            .unwrap_or_else(|| panic!("no {label} after line {from} in:\n{trace}"))
    };
    let fd_of = |line: &str| -> String { line.rsplit("= ").next().unwrap().trim().to_owned() };
    let (open_i, open) = find(
        &|l| l.contains("openat(") && l.contains(".tmp-"),
        0,
        "temp open",
    );
    let tmp_fd = fd_of(&open);
    let (sync_i, _) = find(
        &|l| l.contains(&format!("fsync({tmp_fd}")) || l.contains("fsync resumed"),
        open_i,
        "fsync of the temp file",
    );
    let (rename_i, rename) = find(
        &|l| l.contains("rename") && l.contains(&format!("{id}.note")),
        sync_i,
        "rename to the note",
    );
    assert!(rename.contains(".tmp-"), "{rename}");
    let (dsync_i, _) = find(
        &|l| l.contains("fsync"),
        rename_i + 1,
        "fsync of the directory",
    );
    let (answer_i, _) = find(&|l| l.contains("HTTP/1.1 201"), 0, "the 201");
    assert!(
        open_i < sync_i && sync_i < rename_i && rename_i < dsync_i && dsync_i < answer_i,
        "order open {open_i}, fsync {sync_i}, rename {rename_i}, dir fsync {dsync_i}, 201 {answer_i}:\n{trace}"
    );
}
