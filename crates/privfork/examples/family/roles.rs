//! The family example's roles and handler, shared with its benchmark
//! (`benches/family.rs`): a worker (nobody, sandboxed, no exec, serves
//! HTTP/1.1) and a helper (the fork server as a role) that the worker asks,
//! on every request, to render the answer in a fresh fork-as child as
//! `nobody` under `stdio` alone.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use privfork::event::{Interest, Poller};
use privfork::family::{Role, RoleContext};
use privfork::fork_server::{ForkServer, ForkServerBuilder, Function};
use privfork::sandbox::{Sandbox, SandboxError};

/// What the worker asks the helper for: the page for a path.
pub const RENDER: Function<String, String> = Function::new("render");

/// Runs in a fork-as child of the helper, as nobody, under `stdio`.
pub fn render(path: String) -> String {
    format!(
        "Hello from the privfork family.\n\
         path: {path}\n\
         rendered by pid {} as uid {} (a fresh fork-as child under stdio)\n",
        std::process::id(),
        rustix::process::getuid().as_raw(),
    )
}

fn worker_sandbox(_args: &[String]) -> Result<Sandbox, SandboxError> {
    // Accept, read, write and close connections on the listener it was
    // given; nothing else on the network, no files, no exec.
    Sandbox::new().promises(WORKER_PROMISES)
}

/// The worker's promises.
pub const WORKER_PROMISES: &str = "stdio accept";

pub static ROLES: &[Role] = &[
    Role {
        listeners: &["http"],
        peers: &["helper"],
        sandbox: Some(worker_sandbox),
        ..Role::new("worker", worker)
    },
    Role {
        // The fork server keeps root's uid with exactly the capabilities
        // it needs to drop and signal its children, and sandboxes each
        // child (below) instead of itself.
        user: None,
        keep_caps: ForkServerBuilder::CAPS,
        sandbox: None,
        ..Role::new("helper", helper)
    },
];

/// The helper: the fork server, serving the worker on their channel.
fn helper(mut cx: RoleContext) -> i32 {
    let Some(channel) = cx.take_peer("worker") else {
        eprintln!("helper: no channel to the worker");
        return 1;
    };
    let stdio = match Sandbox::new().promises("stdio") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("helper: {e}");
            return 1;
        }
    };
    let server = match ForkServer::builder()
        .register_fn(RENDER, render)
        .allow_sandboxed(RENDER.name(), "nobody", &stdio)
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("helper: {e}");
            return 1;
        }
    };
    if cx.ready().is_err() {
        return 1;
    }
    // Until the worker closes its end (it stops, or restarts: main then
    // restarts this helper with it).
    server.serve(channel)
}

/// Most connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 256;
/// How long a connection may take to send a request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request head.
const MAX_HEAD: usize = 8 << 10;

/// The worker: accepts on `http`, answers each request with what the
/// helper renders; on stop, accepts nothing more and lets the requests in
/// flight finish.
fn worker(mut cx: RoleContext) -> i32 {
    let Some(listener) = cx.take_listeners().take("http") else {
        eprintln!("worker: no http listener");
        return 1;
    };
    let listener = TcpListener::from(listener.into_fd());
    let Some(helper) = cx.take_peer("helper") else {
        eprintln!("worker: no channel to the helper");
        return 1;
    };
    let helper = match ForkServer::connect(helper) {
        Ok(h) => Arc::new(h),
        Err(e) => {
            eprintln!("worker: {e}");
            return 1;
        }
    };
    if cx.ready().is_err() {
        return 1;
    }
    let open = Arc::new(AtomicUsize::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    loop {
        let mut p: Poller<'_, 2> = Poller::new();
        p.add(&listener, Interest::READABLE, 0);
        p.add_fd(cx.main_fd(), Interest::READABLE, 1);
        if p.wait(None).is_err() {
            return 1;
        }
        let ready: Vec<usize> = p.ready().map(|(t, _)| t).collect();
        if ready.contains(&1)
            && let Some(deadline) = cx.poll_stop()
        {
            stopping.store(true, Ordering::SeqCst);
            let end = Instant::now() + deadline;
            while open.load(Ordering::SeqCst) > 0 && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            cx.stopped();
            return 0;
        }
        if ready.contains(&0) {
            let Ok((conn, _)) = listener.accept() else {
                continue;
            };
            if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                open.fetch_sub(1, Ordering::SeqCst);
                continue; // dropped: closed at once
            }
            let (helper, open, stopping) = (
                Arc::clone(&helper),
                Arc::clone(&open),
                Arc::clone(&stopping),
            );
            std::thread::spawn(move || {
                let ask = |path: &str| {
                    helper
                        .invoke(RENDER, "nobody", &path.to_owned())
                        .map_err(|e| e.to_string())
                };
                serve_connection(conn, &ask, &stopping);
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

/// Serves requests on one keep-alive connection, each answered with what
/// `handler` makes of its path.
pub fn serve_connection(
    conn: TcpStream,
    handler: &dyn Fn(&str) -> Result<String, String>,
    stopping: &AtomicBool,
) {
    let _ = conn.set_read_timeout(Some(HEAD_TIMEOUT));
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let Some((method, path, close)) = read_head(&mut reader) else {
            return;
        };
        // The last response before a stop says so.
        let close = close || stopping.load(Ordering::SeqCst);
        let (status, body) = if method != "GET" {
            ("405 Method Not Allowed", "only GET\n".to_owned())
        } else {
            match handler(&path) {
                Ok(page) => ("200 OK", page),
                Err(e) => ("500 Internal Server Error", format!("{e}\n")),
            }
        };
        // One write per response: a response in several small segments
        // waits on Nagle's algorithm and the client's delayed ACK (40 ms).
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: {}\r\n\r\n{body}",
            body.len(),
            if close { "close" } else { "keep-alive" }
        );
        let written = out.write_all(response.as_bytes());
        if written.is_err() || close {
            return;
        }
    }
}

/// Reads one request head: method, path, and whether the client asked to
/// close. `None` on end of stream, a timeout, or a head that is too long
/// or malformed.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<(String, String, bool)> {
    let mut line = String::new();
    let mut total = reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut close = version != "HTTP/1.1";
    loop {
        let mut header = String::new();
        let n = reader.read_line(&mut header).ok()?;
        total += n;
        if n == 0 || total > MAX_HEAD {
            return None;
        }
        let h = header.trim_end();
        if h.is_empty() {
            return Some((method, path, close));
        }
        if let Some((name, value)) = h.split_once(':')
            && name.eq_ignore_ascii_case("connection")
        {
            close = value.trim().eq_ignore_ascii_case("close");
        }
    }
}
