//! The notes app end to end, through its three processes: the JSON API,
//! the pages, the errors for hostile input, the web hygiene headers, and
//! `--check`. Runs as root (the app drops its worker to nobody).

mod common;

use std::os::unix::ffi::OsStrExt;
#[path = "../../../crates/privfork/tests/time_limit/mod.rs"]
mod time_limit;

use common::{Notes, json, require_root};
use time_limit::time_limit;

#[test]
fn api_round_trip_and_pagination() {
    let _limit = time_limit!();
    require_root();
    let n = Notes::start(&[]);
    let texts = ["first note", "second — ünïcödé ✓", "# third\n\nwith a body"];
    let ids: Vec<String> = texts.iter().map(|t| n.create(t)).collect();
    for (id, text) in ids.iter().zip(texts) {
        assert_eq!(id.len(), 32, "{id}");
        let (s, b) = n.call("GET", &format!("/api/notes/{id}"), None);
        assert_eq!(s, 200, "{b}");
        let v = json(&b);
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["text"], text);
        assert!(v["created"].as_str().unwrap().ends_with('Z'), "{v}");
    }
    // Newest first, two per page, with a link to the next page.
    let (s, b) = n.call("GET", "/api/notes?limit=2", None);
    assert_eq!(s, 200, "{b}");
    let v = json(&b);
    assert_eq!(v["total"], 3);
    let page: Vec<&str> = v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, [ids[2].as_str(), ids[1].as_str()], "{v}");
    assert_eq!(v["notes"][0]["title"], "# third");
    let next = v["next"].as_str().unwrap();
    let v2 = json(&n.call("GET", next, None).1);
    assert_eq!(v2["notes"][0]["id"], ids[0].as_str());
    assert!(v2["next"].is_null(), "{v2}");
    // Delete: 204, then gone.
    let (s, _) = n.call("DELETE", &format!("/api/notes/{}", ids[1]), None);
    assert_eq!(s, 204);
    let (s, b) = n.call("GET", &format!("/api/notes/{}", ids[1]), None);
    assert_eq!(s, 404);
    assert!(json(&b)["error"].is_string());
    let (s, _) = n.call("DELETE", &format!("/api/notes/{}", ids[1]), None);
    assert_eq!(s, 404);
    assert_eq!(json(&n.call("GET", "/api/notes", None).1)["total"], 2);
    // Ids are unguessable: 128 random bits, no two alike, no order.
    assert!(ids.windows(2).all(|w| w[0] != w[1]));
}

/// Each hostile input gets its status and a JSON error, and the app keeps
/// serving after every one.
#[test]
fn hostile_requests_get_their_status_and_the_app_keeps_serving() {
    let _limit = time_limit!();
    require_root();
    let n = Notes::start(&[]);
    let worker = n.member("worker");
    let cases: Vec<(&str, String, Option<String>, u16)> = vec![
        ("GET", "/api/notes/..".into(), None, 400),
        ("GET", "/api/notes/a%2fb".into(), None, 400),
        ("GET", "/api/notes/a%2Fb".into(), None, 400),
        ("GET", "/api/notes/a/b".into(), None, 400),
        ("GET", "/api/notes/%2e%2e".into(), None, 400),
        ("GET", format!("/api/notes/{}", "a".repeat(33)), None, 400),
        ("GET", format!("/api/notes/{}", "a".repeat(4000)), None, 400),
        ("GET", format!("/api/notes/{}", "A".repeat(32)), None, 400),
        ("GET", "/api/notes/%ff%fe".into(), None, 400),
        ("GET", format!("/api/notes/{}", "0".repeat(32)), None, 404),
        (
            "DELETE",
            format!("/api/notes/{}", "0".repeat(32)),
            None,
            404,
        ),
        ("GET", "/api/nothing".into(), None, 404),
        ("PUT", "/api/notes".into(), Some("{}".into()), 405),
        ("DELETE", "/api/notes".into(), None, 405),
        ("POST", "/api/status".into(), Some("{}".into()), 405),
        ("POST", "/api/notes".into(), Some("not json".into()), 400),
        (
            "POST",
            "/api/notes".into(),
            Some("{\"text\": 5}".into()),
            400,
        ),
        (
            "POST",
            "/api/notes".into(),
            Some("{\"text\":\"x\",\"y\":1}".into()),
            400,
        ),
        (
            "POST",
            "/api/notes".into(),
            Some("{\"text\":\"  \"}".into()),
            400,
        ),
        (
            "POST",
            "/api/notes".into(),
            Some("{\"text\":\"\\ud800\"}".into()),
            400,
        ),
        ("GET", "/api/notes?limit=0".into(), None, 400),
        ("GET", "/api/notes?limit=abc".into(), None, 400),
        ("GET", "/api/notes?offset=-1".into(), None, 400),
    ];
    for (method, path, body, want) in &cases {
        let (s, b) = n.call(method, path, body.as_deref());
        assert_eq!(s, *want, "{method} {path}: {b}");
        if path.starts_with("/api") {
            assert!(json(&b)["error"].is_string(), "{method} {path}: {b}");
        }
        assert_eq!(
            n.call("GET", "/api/notes", None).0,
            200,
            "after {method} {path}"
        );
    }
    // Paths a client would normalise, sent as they are; and a body that is
    // not UTF-8 at all.
    for (raw, want) in [
        (
            "GET /api/notes/.. HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /api/notes/../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /notes/..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            400,
        ),
    ] {
        assert_eq!(n.raw_status(raw), want, "{raw:?}");
    }
    // Over the body limit: announced (answered before the body is sent),
    // and chunked without a length (answered once the limit is passed).
    assert_eq!(
        n.raw_status(
            "POST /api/notes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2097152\r\n\r\n"
        ),
        413
    );
    assert_eq!(chunked_over_limit(&n.addr), 413);
    let mut s = std::net::TcpStream::connect(&n.addr).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"POST /api/notes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{\"text\":\"\xff\"}",
    )
    .unwrap();
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // The same worker served all of it: nothing crashed.
    assert_eq!(n.member("worker"), worker);
    assert!(!n.log().contains("restarting"), "{}", n.log());
    assert_eq!(json(&n.call("GET", "/api/notes", None).1)["total"], 0);
}

/// Sends a chunked JSON body of 1 MiB + 64 KiB from a thread (write
/// errors ignored: the server may answer and close first); the status.
fn chunked_over_limit(addr: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = w.write_all(
            b"POST /api/notes HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        let chunk = vec![b'a'; 64 << 10];
        for _ in 0..17 {
            if w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .is_err()
                || w.write_all(&chunk).is_err()
                || w.write_all(b"\r\n").is_err()
            {
                return;
            }
        }
        let _ = w.write_all(b"0\r\n\r\n");
    });
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::Read::take(&mut s, 1 << 16), &mut out);
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[test]
fn pages_escape_and_forbid_script_and_cross_site_posts() {
    let _limit = time_limit!();
    require_root();
    let n = Notes::start(&[]);
    let (s, page, headers) = n.call_full("GET", "/", &[], None);
    assert_eq!(s, 200);
    assert!(page.contains("<title>notes</title>"), "{page}");
    assert!(
        page.contains("<form method=\"post\" action=\"/notes\">"),
        "{page}"
    );
    assert!(!page.contains("<script"), "{page}");
    let csp = headers
        .lines()
        .find(|l| l.starts_with("content-security-policy:"))
        .expect("a CSP header");
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(
        headers.contains("x-content-type-options: nosniff"),
        "{headers}"
    );
    // The form, posted as a browser on the same site posts it.
    let host = n.addr.clone();
    let origin = format!("http://{host}");
    let (s, _, h) = n.call_full(
        "POST",
        "/notes",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &origin),
        ],
        Some("text=%3Cscript%3Ealert(1)%3C%2Fscript%3E%0A%0A**hello**+%5Bx%5D(javascript%3Aalert(1))"),
    );
    assert_eq!(s, 303, "{h}");
    let location = h
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap()
        .to_owned();
    assert!(location.starts_with("/notes/"), "{location}");
    let (s, note) = n.call("GET", &location, None);
    assert_eq!(s, 200, "{note}");
    assert!(note.contains("<strong>hello</strong>"), "{note}");
    assert!(!note.contains("<script"), "{note}");
    assert!(!note.contains("javascript:"), "{note}");
    // The same form from another site, and a browser's cross-site fetch.
    for headers in [
        vec![("Origin", "http://evil.example")],
        vec![("Origin", "null")],
        vec![("Sec-Fetch-Site", "cross-site")],
    ] {
        let (s, b) = n.call_with("POST", "/notes", &headers, Some("text=x"));
        assert_eq!(s, 403, "{headers:?}: {b}");
        let (s, _) = n.call_with(
            "DELETE",
            &location.replace("/notes/", "/api/notes/"),
            &headers,
            None,
        );
        assert_eq!(s, 403, "{headers:?}");
    }
    assert_eq!(json(&n.call("GET", "/api/notes", None).1)["total"], 1);
    // The front page lists it, its title escaped.
    let (_, page) = n.call("GET", "/", None);
    assert!(page.contains(&location), "{page}");
    assert!(!page.contains("<script>alert"), "{page}");
}

#[test]
fn status_can_be_switched_off() {
    let _limit = time_limit!();
    require_root();
    let n = Notes::start(&["--no-status"]);
    let (s, b) = n.call("GET", "/api/status", None);
    assert_eq!(s, 404, "{b}");
    let (_, page) = n.call("GET", "/", None);
    assert!(!page.contains("id=\"family\""), "{page}");
}

#[test]
fn check_binds_nothing_and_deletes_nothing() {
    let _limit = time_limit!();
    require_root();
    let dir = common::TempDir::new("check");
    let data = dir.path().join("notes");
    // A port someone else holds: --check must not care (it binds nothing).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let run = |data: &std::path::Path, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_notes"))
            .args(["--check", "--listen", &addr, "--data"])
            .arg(data)
            .args(extra)
            .output()
            .unwrap()
    };
    // Missing data directory: fine, and still missing afterwards.
    let out = run(&data, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!data.exists());
    // An existing one with a stale temp file: fine, and the file stays.
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let stale = data.join(".tmp-0123-abcd");
    std::fs::write(&stale, "half a note").unwrap();
    let before: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let out = run(&data, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("render self-test"), "{err}");
    let after: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after);
    // Bad configurations: exit 1, naming what is wrong.
    let out = run(&data, &["--user", "no-such-user-notes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-user-notes"));
    let out = run(&data, &["--listen", "unix:relative.sock"]);
    assert_eq!(out.status.code(), Some(1));
    std::os::unix::fs::chown(&data, Some(0), Some(0)).unwrap();
    let out = run(&data, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to uid 0"));
    drop(held);
}

/// No arguments, as the README says: 127.0.0.1:8080, `./notes-data`
/// created 0700 and owned by nobody, the URL printed. In a network
/// namespace of the test's own, so port 8080 is free whatever else runs.
#[test]
fn no_arguments_serves_on_8080_with_notes_data() {
    let _limit = time_limit!();
    require_root();
    let dir = common::TempDir::new("defaults");
    let mut child = std::process::Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\"",
        ])
        .arg(env!("CARGO_BIN_EXE_notes"))
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) and ip (iproute2) are needed");
    let stderr = child.stderr.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = std::sync::Arc::clone(&lines);
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(l + "\n"));
        }
    });
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !lines.lock().unwrap().contains("every role is ready") {
        assert!(std::time::Instant::now() < end, "{}", lines.lock().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = lines.lock().unwrap().clone();
    assert!(log.contains("serving on http://127.0.0.1:8080/"), "{log}");
    let data = dir.path().join("notes-data");
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        0o700
    );
    let out = std::process::Command::new("nsenter")
        .args([
            "--net",
            "-t",
            &child.id().to_string(),
            "curl",
            "-sf",
            "http://127.0.0.1:8080/api/status",
        ])
        .output()
        .unwrap();
    let status = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        status["members"][0]["process"]["user"], "nobody",
        "{status}"
    );
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    );
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0), "{}", lines.lock().unwrap());
}

/// A data directory main did not make for the worker is refused at start,
/// naming the problem: another user's, open to others, or a symlink.
#[test]
fn unsuitable_data_directory_is_refused_at_start() {
    let _limit = time_limit!();
    require_root();
    let dir = common::TempDir::new("baddata");
    let root_owned = dir.path().join("root-owned");
    std::fs::create_dir(&root_owned).unwrap();
    std::fs::set_permissions(
        &root_owned,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::os::unix::fs::chown(&open, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&open, &link).unwrap();
    // A parent that a user owns (as when root runs it in someone's home):
    // fine, the directory is made there and handed to the worker.
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(4003), Some(4003)).unwrap();
    let in_home = home.join("notes-data");
    let not_utf8 = dir.path().join(std::ffi::OsStr::from_bytes(b"notes-\xff"));
    let fine = dir.path().join("fine");
    for (data, extra, says) in [
        (&root_owned, &[][..], "belongs to uid 0"),
        (&open, &[][..], "others can reach the notes"),
        (&link, &[][..], "not a directory (or a symlink"),
        (&not_utf8, &[][..], "must be valid UTF-8"),
        (&fine, &["--user", "root"][..], "uid 0 is refused"),
        (&fine, &["--render-user", "0"][..], "uid 0 is refused"),
    ] {
        let mut n = Notes::spawn(data, extra);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(s) = n.child.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < end, "{}", n.log());
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(1), "{}", n.log());
        // The log reader may still be draining.
        n.wait_log(says, 1, 5);
        assert!(!n.log().contains("started"), "{}", n.log());
    }
    assert!(!fine.exists() && !not_utf8.exists());
    // The default `--data` (relative) under a working directory whose name
    // is not UTF-8.
    let odd_cwd = dir.path().join(std::ffi::OsStr::from_bytes(b"cwd-\xfe"));
    std::fs::create_dir(&odd_cwd).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_notes"))
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .current_dir(&odd_cwd)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be valid UTF-8"));
    assert!(!odd_cwd.join("notes-data").exists());
    let n = Notes::start_at(&in_home, &[]);
    assert_eq!(n.call("GET", "/api/notes", None).0, 200);
    let meta = std::fs::metadata(&in_home).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
}

/// DNS rebinding: a page on another name that resolves to this machine
/// sends its own name as `Host`; every request of it is refused, reads
/// too. IP addresses, `localhost` and `--host` names pass.
#[test]
fn requests_for_other_host_names_are_refused() {
    let _limit = time_limit!();
    require_root();
    let n = Notes::start(&["--host", "notes.test"]);
    let port = n.addr.rsplit(':').next().unwrap().to_owned();
    let evil = format!("evil.example:{port}");
    for (method, path, body) in [
        ("GET", "/api/notes", None),
        ("GET", "/api/status", None),
        ("GET", "/", None),
        ("POST", "/api/notes", Some("{\"text\":\"planted\"}")),
    ] {
        let (s, b) = n.call_with(
            method,
            path,
            &[("Host", &evil), ("Origin", &format!("http://{evil}"))],
            body,
        );
        assert_eq!(s, 421, "{method} {path}: {b}");
    }
    assert_eq!(json(&n.call("GET", "/api/notes", None).1)["total"], 0);
    for name in [format!("localhost:{port}"), format!("notes.test:{port}")] {
        let (s, b) = n.call_with(
            "POST",
            "/api/notes",
            &[("Host", &name), ("Origin", &format!("http://{name}"))],
            Some("{\"text\":\"fine\"}"),
        );
        assert_eq!(s, 201, "{name}: {b}");
    }
}

/// A body trickled a byte at a time is cut off at the read timeout as a
/// whole, not per byte.
#[test]
fn trickled_body_is_cut_off_at_the_read_timeout() {
    let _limit = time_limit!();
    require_root();
    let n = Notes::start(&["--read-timeout", "2"]);
    let mut s = std::net::TcpStream::connect(&n.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    use std::io::{Read, Write};
    s.write_all(b"POST /api/notes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    // One byte every 500 ms, for up to 20 s, until the server answers.
    while started.elapsed() < std::time::Duration::from_secs(20) {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                out.extend_from_slice(&buf[..k]);
                break;
            }
            Err(_) => {}
        }
        if s.write_all(b" ").is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}
