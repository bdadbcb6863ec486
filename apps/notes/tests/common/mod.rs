//! The notes app, started for real: the `notes` binary as root on a free
//! loopback port with a data directory of the test's own; its stderr
//! collected (bounded); an HTTP client; what `/proc` says of its
//! processes. Dropping a `Notes` stops the whole family.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most bytes of the app's stderr kept.
const LOG_CAP: usize = 1 << 20;

/// Fails loudly unless root: the app changes users.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the notes tests start the app as root (it drops to nobody); run them as root"
    );
}

/// A directory of the test's own, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "notes-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port (bound, noted, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running notes family.
#[derive(Debug)]
pub struct Notes {
    pub child: Child,
    log: Arc<Mutex<String>>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub addr: String,
    /// Holds the data directory (`data()`), unless the test gave its own.
    pub dir: Option<TempDir>,
    data: PathBuf,
}

impl Notes {
    /// Starts the app with `extra` options on a free port with a fresh
    /// data directory, and waits until every role is ready.
    pub fn start(extra: &[&str]) -> Self {
        let dir = TempDir::new("data");
        let data = dir.path().join("notes");
        let mut n = Self::start_at(&data, extra);
        n.dir = Some(dir);
        n
    }

    /// As `start`, with the data directory at `data`.
    pub fn start_at(data: &Path, extra: &[&str]) -> Self {
        let n = Self::spawn(data, extra);
        n.wait_log("every role is ready", 1, 30);
        n
    }

    /// Starts the app without waiting for it.
    pub fn spawn(data: &Path, extra: &[&str]) -> Self {
        Self::spawn_under(&[], data, extra)
    }

    /// Starts the app through `wrapper` (e.g. `setpriv …`, which then
    /// execs it) without waiting for it.
    pub fn spawn_under(wrapper: &[&str], data: &Path, extra: &[&str]) -> Self {
        Self::spawn_exe(wrapper, Path::new(env!("CARGO_BIN_EXE_notes")), data, extra)
    }

    /// As `spawn_under`, the app being the binary at `exe` (a copy of
    /// notes, e.g. one a test replaces on disk).
    pub fn spawn_exe(wrapper: &[&str], exe: &Path, data: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.arg("--listen")
            .arg(&addr)
            .arg("--data")
            .arg(data)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting notes");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                if l.len() < LOG_CAP {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        Self {
            child,
            log,
            base: format!("http://{addr}"),
            addr,
            dir: None,
            data: data.to_owned(),
        }
    }

    pub fn data(&self) -> &Path {
        &self.data
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log has `count` lines containing `needle`.
    pub fn wait_log(&self, needle: &str, count: usize, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let log = self.log();
            if log.lines().filter(|l| l.contains(needle)).count() >= count {
                return;
            }
            assert!(
                Instant::now() < end,
                "no {count} line(s) with {needle:?} within {secs} s; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pid of the running member `role` (a child of main whose
    /// title ends in `: role`).
    pub fn member(&self, role: &str) -> u32 {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(pid) = children(self.pid()).into_iter().find(|&p| {
                cmdline(p)
                    .first()
                    .is_some_and(|a0| a0.ends_with(&format!(": {role}")))
            }) {
                return pid;
            }
            assert!(Instant::now() < end, "no {role} member of {}", self.pid());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// An HTTP call: (status, body).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.call_with(method, path, &[], body)
    }

    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, String) {
        let (s, b, _) = self.call_full(method, path, headers, body);
        (s, b)
    }

    /// An HTTP call: (status, body, headers as `name: value` lines).
    pub fn call_full(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, String, String) {
        let url = format!("{}{path}", self.base);
        let agent = agent();
        let result = match (method, body) {
            ("GET", _) => with_headers(agent.get(&url), headers).call(),
            ("DELETE", _) => with_headers(agent.delete(&url), headers).call(),
            ("POST", b) => with_headers(agent.post(&url), headers).send(b.unwrap_or("")),
            ("PUT", b) => with_headers(agent.put(&url), headers).send(b.unwrap_or("")),
            (m, _) => panic!("method {m}"),
        };
        let mut resp =
            result.unwrap_or_else(|e| panic!("{method} {url}: {e}\nlog:\n{}", self.log()));
        let status = resp.status().as_u16();
        let hdrs = resp
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_default();
        (status, body, hdrs)
    }

    /// A raw request (for paths no client sends as is); the status.
    pub fn raw_status(&self, request: &str) -> u16 {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.take(1 << 20).read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text:?}"))
    }

    /// Creates a note through the API; its id.
    pub fn create(&self, text: &str) -> String {
        let (s, b) = self.call(
            "POST",
            "/api/notes",
            Some(&serde_json::json!({ "text": text }).to_string()),
        );
        assert_eq!(s, 201, "{b}");
        json(&b)["id"].as_str().unwrap().to_owned()
    }

    /// Stops the family: SIGTERM, then SIGKILL after 20 s.
    pub fn stop(&mut self) -> Option<i32> {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Notes {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

fn with_headers<B>(
    mut r: ureq::RequestBuilder<B>,
    headers: &[(&str, &str)],
) -> ureq::RequestBuilder<B> {
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r
}

/// A client that returns every status (not only 2xx) and gives up after
/// 30 s.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .max_redirects(0)
        .build()
        .into()
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The pids whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if status_field(p, "PPid").as_deref() == Some(&pid.to_string()) {
            out.push(p);
        }
    }
    out
}

pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A field of `/proc/<pid>/status`, if the process exists.
pub fn status_field(pid: u32, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
}
