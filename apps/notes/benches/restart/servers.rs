//! The servers the restart bench loads, each a guard that stops it on
//! drop (a panic included): notes, an nginx of the bench's own, and the
//! temp dir they work in.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::report::truncate;

/// Most bytes of a server's log kept.
const LOG_CAP: usize = 4 << 20;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Appends `reader`'s lines to `sink` (up to [`LOG_CAP`] bytes; the rest
/// is read and dropped, so the writer never blocks).
fn collect_lines(reader: impl Read + Send + 'static, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let mut l = sink.lock().unwrap();
            if l.len() < LOG_CAP {
                l.push_str(&line);
                l.push('\n');
            }
        }
    });
}

/// Whether `child` has exited, without reaping it (`waitid` with
/// `WNOWAIT`).
fn has_exited(child: &Child) -> bool {
    use rustix::process::{Pid, WaitId, WaitIdOptions, waitid};
    let pid = Pid::from_raw(child.id() as i32).unwrap();
    let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    // An error (ECHILD): already reaped, so exited too.
    !matches!(waitid(WaitId::Pid(pid), opts), Ok(None))
}

/// Waits up to `secs` for `cond`; false if it never held.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    cond()
}

/// The notes family, stopped (SIGTERM, then SIGKILL) on drop.
pub(crate) struct NotesProc {
    child: Child,
    log: Arc<Mutex<String>>,
    pub(crate) addr: SocketAddr,
}

impl NotesProc {
    pub(crate) fn start(bin: &Path, data: &Path) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut child = Command::new(bin)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting notes");
        let log = Arc::new(Mutex::new(String::new()));
        collect_lines(child.stderr.take().unwrap(), Arc::clone(&log));
        let app = Self { child, log, addr };
        let ready = wait_for(30, || {
            app.log().contains("every role is ready") || app.child_exited()
        });
        assert!(
            ready && !app.child_exited(),
            "notes did not get ready; log:\n{}",
            truncate(&app.log(), 8000)
        );
        app
    }

    fn child_exited(&self) -> bool {
        has_exited(&self.child)
    }

    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Main's open fds and child processes.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let pid = self.pid();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        (fds, children(pid).len())
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    /// Creates the note the load reads: a JSON document of about 1 KiB.
    pub(crate) fn create_note(&self) -> String {
        let text = "# Under load\n\n".to_owned() + &"a note read over and over. ".repeat(36);
        let mut r = Self::agent()
            .post(&format!("http://{}/api/notes", self.addr))
            .send(&serde_json::json!({ "text": text }).to_string())
            .expect("POST /api/notes");
        assert_eq!(r.status().as_u16(), 201);
        let v: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    pub(crate) fn get(&self, path: &str) -> Vec<u8> {
        let mut r = Self::agent()
            .get(&format!("http://{}{path}", self.addr))
            .call()
            .expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.body_mut().read_to_vec().unwrap()
    }
}

impl Drop for NotesProc {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if !wait_for(15, || matches!(self.child.try_wait(), Ok(Some(_)))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The child processes of `pid` (of all its threads).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

pub(crate) fn find_nginx() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("nginx"))
            .find(|c| c.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from("/usr/sbin/nginx");
        p.is_file().then_some(p)
    })
}

/// An nginx of our own (master and 2 workers), its config, pid file,
/// logs and temp files in `dir`; stopped on drop (SIGTERM to the master,
/// which stops its workers before it exits; SIGKILL to what is left). It
/// stays in the bench's process group, so a Ctrl-C at the terminal stops
/// it too (SIGINT: nginx's fast shutdown).
pub(crate) struct NginxProc {
    bin: PathBuf,
    dir: PathBuf,
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl NginxProc {
    pub(crate) fn start(bin: &Path, dir: &Path) -> Self {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let d = dir.display();
        std::fs::create_dir_all(dir.join("nginx-tmp")).unwrap();
        // keepalive_requests: as many as notes takes (no limit) within a
        // run; keepalive_timeout: longer than a run.
        let conf = format!(
            "worker_processes 2;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-tmp/body;
    proxy_temp_path {d}/nginx-tmp/proxy;
    fastcgi_temp_path {d}/nginx-tmp/fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/uwsgi;
    scgi_temp_path {d}/nginx-tmp/scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
    }}
}}
"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let out = std::fs::File::create(dir.join("nginx-stderr.log")).unwrap();
        let child = Command::new(bin)
            .args(Self::base_args(dir))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting nginx");
        let n = Self {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            child,
            addr,
        };
        let up = wait_for(10, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(
            up && !n.exited(),
            "nginx did not start; stderr:\n{}\nerror log:\n{}",
            truncate(
                &std::fs::read_to_string(dir.join("nginx-stderr.log")).unwrap_or_default(),
                4000
            ),
            truncate(&n.error_log(), 4000)
        );
        println!("nginx: {} on {addr}", bin.display());
        n
    }

    fn base_args(dir: &Path) -> Vec<std::ffi::OsString> {
        let p = |s: &str| dir.join(s).into_os_string();
        vec![
            "-p".into(),
            dir.as_os_str().to_owned(),
            "-e".into(),
            p("nginx-error.log"),
            "-c".into(),
            p("nginx.conf"),
        ]
    }

    /// `nginx -s reload` (it signals the master named in the pid file),
    /// bounded to 5 s.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let mut c = Command::new(&self.bin)
            .args(Self::base_args(&self.dir))
            .args(["-s", "reload"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nginx -s reload: {e}"))?;
        let done = wait_for(5, || matches!(c.try_wait(), Ok(Some(_))));
        if !done {
            let _ = c.kill();
            let _ = c.wait();
            return Err("nginx -s reload took over 5 s".into());
        }
        let st = c.wait().map_err(|e| e.to_string())?;
        if st.success() {
            Ok(())
        } else {
            let mut err = String::new();
            let _ = c
                .stderr
                .take()
                .map(|s| s.take(4096).read_to_string(&mut err));
            Err(format!("nginx -s reload: {st}: {}", err.trim()))
        }
    }

    /// Whether the master has exited (it is not reaped here).
    pub(crate) fn exited(&self) -> bool {
        has_exited(&self.child)
    }

    pub(crate) fn error_log(&self) -> String {
        let mut s = String::new();
        if let Ok(f) = std::fs::File::open(self.dir.join("nginx-error.log")) {
            let _ = f.take(LOG_CAP as u64).read_to_string(&mut s);
        }
        s
    }
}

impl Drop for NginxProc {
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process};
        let master = self.child.id();
        let _ = kill_process(Pid::from_raw(master as i32).unwrap(), Signal::TERM);
        if !wait_for(10, || has_exited(&self.child)) {
            // A hung master: its workers (current, and old ones still
            // draining after a reload) are its children, listed while it
            // lives, then killed with it.
            for pid in children(master) {
                let _ = kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL);
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The bench's temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        // What a run stopped by a signal (no unwinding) left behind.
        if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
            for e in dir.flatten() {
                let name = e.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("notes-restart-bench-"))
                    .and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let p = std::env::temp_dir().join(format!("notes-restart-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
