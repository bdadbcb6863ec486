//! A bounded HTTP/1.1 load client for loopback servers, shared by the
//! notes tests and the restart benchmark (`benches/restart.rs` includes
//! this file with `#[path]`). It depends on nothing else in
//! `tests/common`.
//!
//! `start_load(cfg)` starts `cfg.clients` clients (each sends its next
//! request when the last is done, or paced, see `LoadConfig::pace`) on a
//! tokio runtime of its own (background threads) and returns at once, so the
//! caller can act on the server (send SIGHUPs, stop it) while they run;
//! `LoadHandle::finish` waits for the end and returns a [`LoadReport`] of
//! every request. [`LoadReport::summary`] splits it into restart seconds
//! and quiet seconds (see [`restart_seconds`]).
//!
//! # What is counted
//!
//! Clients never retry. A *keep-alive* client sends one request after
//! another on one connection; before each, if hyper says the connection
//! is closed or not ready (the last answer said `Connection: close`, or
//! the server closed the idle connection and the client saw it), the
//! client opens a new connection: the request was never sent, so that is
//! no retry. Once `send_request` has been called, anything but a complete
//! 2xx answer within `per_request_timeout` is a failed request, of one
//! [`Outcome`]: reset, closed before the answer, timeout, status, body
//! error. A *new-connection* client opens a connection for each request
//! and closes it after the answer (it sends no `Connection: close`: like a
//! client that just does not reuse connections, and see "closed" below);
//! a connect that fails or times out is that request's failure (and is
//! counted among connect failures too).
//!
//! A connection is closed only once its answer has been read in full
//! (or the request has failed), and then abortively (`SO_LINGER` 0: a
//! reset, so no `TIME_WAIT` on either side when the client closes first).
//! On loopback one client address has some 28 000 ports toward the
//! server's one; thousands of new connections a second would keep them
//! all in `TIME_WAIT` within seconds (on the server's side too, if it
//! closed first), and from then on each connect must hunt for a reusable
//! 4-tuple: the run would slow down as it goes (seen: p99 doubled after
//! 10 s), a trend of the load machine that has nothing to do with the
//! server. That is why new-connection clients close first.
//!
//! A request's latency runs from the moment its client wanted to send it
//! (before the readiness check and any connect it needed) to the last byte
//! of its answer, or to its failure.
//!
//! # Bounds
//!
//! Connects are bounded by `connect_timeout`, each request (readiness
//! check, any connect, send, whole answer) by `per_request_timeout`, and
//! the whole run by `duration` plus a grace of both timeouts and a
//! second: clients start no request after `duration`, and whatever is still running at the end
//! of the grace is dropped (counted in `LoadReport::aborted_clients`).
//! At most `max_records` requests are recorded one by one (16 bytes each);
//! beyond that they are counted (totals and outcomes stay exact) but
//! neither timed nor placed in seconds (`LoadReport::unrecorded`).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Requests recorded one by one by default (64 MiB of records).
pub const DEFAULT_MAX_RECORDS: usize = 4 << 20;

/// The most answer bytes read per request; more is a body error (a
/// client of a load test has no use for large answers).
pub const MAX_BODY: usize = 16 << 20;

/// What the clients do.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server (loopback, plain HTTP/1.1).
    pub addr: SocketAddr,
    /// Clients running at once, each one request at a time.
    pub clients: usize,
    /// The fraction of clients (rounded to nearest) that keep one
    /// connection for many requests; the others open a connection per
    /// request.
    pub keepalive_share: f64,
    /// How long clients start requests.
    pub duration: Duration,
    /// GET targets, taken in turn (each client starts at its own offset).
    pub paths: Vec<String>,
    /// Optional: one request in `every` of each client is this POST.
    pub post: Option<PostTarget>,
    /// The `Host` header; default the address.
    pub host: String,
    pub connect_timeout: Duration,
    /// Bounds a request from its start (readiness check, any connect,
    /// which `connect_timeout` bounds too) to its answer's last byte.
    pub per_request_timeout: Duration,
    /// Optional least time between the starts of a client's requests
    /// (default: none, each client sends as fast as it is answered).
    pub pace: Option<Duration>,
    /// Threads of the clients' runtime.
    pub threads: usize,
    /// Requests recorded one by one (see the module docs).
    pub max_records: usize,
}

/// A POST some requests make instead of a GET.
#[derive(Debug, Clone)]
pub struct PostTarget {
    pub path: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// One request in `every` (per client) is this POST; at least 1.
    pub every: u32,
}

impl LoadConfig {
    /// Defaults: 8 clients, half keep-alive, 5 s, `GET /`, connect
    /// timeout 2 s, request timeout 5 s, 2 threads.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            clients: 8,
            keepalive_share: 0.5,
            duration: Duration::from_secs(5),
            paths: vec!["/".to_owned()],
            post: None,
            host: addr.to_string(),
            connect_timeout: Duration::from_secs(2),
            per_request_timeout: Duration::from_secs(5),
            pace: None,
            threads: 2,
            max_records: DEFAULT_MAX_RECORDS,
        }
    }

    /// Clients that keep their connection.
    pub fn keepalive_clients(&self) -> usize {
        let k = (self.clients as f64 * self.keepalive_share.clamp(0.0, 1.0)).round();
        (k as usize).min(self.clients)
    }

    /// How long after `duration` the run is cut short.
    pub fn grace(&self) -> Duration {
        self.connect_timeout + self.per_request_timeout + Duration::from_secs(1)
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// A complete 2xx answer.
    Ok,
    /// The connect was refused (nothing listening).
    ConnectRefused,
    /// The connect did not complete within `connect_timeout`.
    ConnectTimeout,
    /// The connect failed otherwise.
    ConnectOther,
    /// The connection was reset (or the write hit a closed pipe).
    Reset,
    /// The connection closed before a complete answer head arrived.
    ClosedBeforeResponse,
    /// No complete answer within `per_request_timeout`.
    Timeout,
    /// An answer with a status other than 2xx.
    Status(u16),
    /// The answer's body broke off (or passed [`MAX_BODY`]).
    BodyError,
    /// Any other error (e.g. an unparsable answer).
    Other,
}

impl Outcome {
    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }

    /// A failure to connect (which is also the request's failure).
    pub fn is_connect_failure(self) -> bool {
        matches!(
            self,
            Outcome::ConnectRefused | Outcome::ConnectTimeout | Outcome::ConnectOther
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::ConnectRefused => f.write_str("connect refused"),
            Outcome::ConnectTimeout => f.write_str("connect timeout"),
            Outcome::ConnectOther => f.write_str("connect other"),
            Outcome::Reset => f.write_str("reset"),
            Outcome::ClosedBeforeResponse => f.write_str("closed before response"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::Status(s) => write!(f, "status {s}"),
            Outcome::BodyError => f.write_str("body error"),
            Outcome::Other => f.write_str("other error"),
        }
    }
}

/// One request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// When it started, in ms since the load started.
    pub start_ms: u32,
    /// How long it took, in µs (saturating).
    pub latency_us: u32,
    pub outcome: Outcome,
    /// Sent on a connection that had carried an earlier request.
    pub reused: bool,
}

/// Everything the clients did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// When the clients started.
    pub started: Instant,
    /// How long clients were to start requests.
    pub duration: Duration,
    /// From the start to the end of the last client.
    pub elapsed: Duration,
    /// Every request, recorded or not.
    pub total: u64,
    /// Requests by outcome (exact, recorded or not).
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Failed requests sent on a reused keep-alive connection, by
    /// outcome: the ones a server's closing of idle connections can
    /// cause.
    pub reused_failures: BTreeMap<Outcome, u64>,
    /// Connects attempted, and those that failed.
    pub connects: u64,
    pub connect_failures: u64,
    /// Recorded requests, in order of start.
    pub records: Vec<Record>,
    /// Requests beyond `max_records`: counted, not recorded.
    pub unrecorded: u64,
    /// Clients still busy at the end of the grace (their request in
    /// flight is not counted); 0 unless something hung past the bounds.
    pub aborted_clients: usize,
}

impl LoadReport {
    pub fn ok(&self) -> u64 {
        self.outcomes.get(&Outcome::Ok).copied().unwrap_or(0)
    }

    pub fn failed(&self) -> u64 {
        self.total - self.ok()
    }

    /// The failures, by outcome.
    pub fn failures(&self) -> BTreeMap<Outcome, u64> {
        let mut f = self.outcomes.clone();
        f.remove(&Outcome::Ok);
        f
    }

    /// The run split at `restarts` (instants a restart began; those
    /// outside the run are ignored): see [`restart_seconds`].
    pub fn summary(&self, restarts: &[Instant]) -> Summary {
        let offsets: Vec<Duration> = restarts
            .iter()
            .filter_map(|r| r.checked_duration_since(self.started))
            .collect();
        let restart = restart_seconds(&offsets);
        // Seconds in which requests were started: 0 ..= the last.
        let run_seconds = self.duration.as_secs() + u64::from(self.duration.subsec_nanos() > 0);
        let quiet_seconds = (0..run_seconds).filter(|s| !restart.contains(s)).count();
        let restart_in_run = (0..run_seconds).filter(|s| restart.contains(s)).count();
        let mut overall = WindowBuilder::default();
        let mut during = WindowBuilder::default();
        let mut quiet = WindowBuilder::default();
        for r in &self.records {
            overall.add(r);
            if restart.contains(&(u64::from(r.start_ms) / 1000)) {
                during.add(r);
            } else {
                quiet.add(r);
            }
        }
        // The overall window counts every request, recorded or not.
        let mut overall = overall.build();
        overall.requests = self.total;
        overall.failures = self.failures();
        overall.ok = self.ok();
        Summary {
            overall,
            restart: during.build(),
            quiet: quiet.build(),
            restart_seconds: restart_in_run,
            quiet_seconds,
            unrecorded: self.unrecorded,
        }
    }
}

/// The seconds of a run (second `k` = `[k s, k+1 s)` after the load
/// started) that count as *restart seconds*: a second in which a restart
/// began, and the second after it (a restart late in one second disturbs
/// the start of the next). Every other second is a *quiet second*. A
/// request belongs to the second it started in.
///
/// So a restart at 3.2 s makes seconds 3 and 4 restart seconds; with one
/// restart every second, every second from the first restart on is one.
pub fn restart_seconds(restarts: &[Duration]) -> BTreeSet<u64> {
    let mut s = BTreeSet::new();
    for r in restarts {
        s.insert(r.as_secs());
        s.insert(r.as_secs() + 1);
    }
    s
}

/// The nearest-rank percentile of `sorted` (ascending): the smallest
/// value with at least `per_mille`/1000 of the values at or below it.
/// `per_mille` 500 is the median, 990 p99, 999 p99.9, 1000 the maximum;
/// `None` for no values.
pub fn percentile(sorted: &[u32], per_mille: u32) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (u64::from(per_mille.min(1000)) * n).div_ceil(1000).max(1);
    Some(sorted[(rank - 1) as usize])
}

/// Latency percentiles of successful requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Percentiles {
    /// Of latencies in µs (any order); `None` for none.
    pub fn of(mut latencies_us: Vec<u32>) -> Option<Self> {
        latencies_us.sort_unstable();
        let at = |pm| Duration::from_micros(u64::from(percentile(&latencies_us, pm).unwrap()));
        (!latencies_us.is_empty()).then(|| Self {
            p50: at(500),
            p99: at(990),
            p999: at(999),
            max: at(1000),
        })
    }
}

/// Requests started in a set of seconds.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub requests: u64,
    pub ok: u64,
    pub failures: BTreeMap<Outcome, u64>,
    /// Of the successful requests (failures are counted, not timed).
    pub latency: Option<Percentiles>,
    /// Requests of any outcome that took 1 s or more.
    pub slow: u64,
}

impl Window {
    pub fn failed(&self) -> u64 {
        self.requests - self.ok
    }
}

#[derive(Default)]
struct WindowBuilder {
    w: Window,
    ok_latencies: Vec<u32>,
}

impl WindowBuilder {
    fn add(&mut self, r: &Record) {
        self.w.requests += 1;
        if r.outcome.is_ok() {
            self.w.ok += 1;
            self.ok_latencies.push(r.latency_us);
        } else {
            *self.w.failures.entry(r.outcome).or_default() += 1;
        }
        if r.latency_us >= 1_000_000 {
            self.w.slow += 1;
        }
    }

    fn build(mut self) -> Window {
        self.w.latency = Percentiles::of(self.ok_latencies);
        self.w
    }
}

/// A run, split by [`restart_seconds`].
#[derive(Debug, Clone)]
pub struct Summary {
    /// Every request (the counts include unrecorded ones).
    pub overall: Window,
    /// Requests started in restart seconds.
    pub restart: Window,
    /// Requests started in quiet seconds.
    pub quiet: Window,
    /// Restart and quiet seconds within the run's duration.
    pub restart_seconds: usize,
    pub quiet_seconds: usize,
    /// Requests in neither `restart` nor `quiet` (over the record cap).
    pub unrecorded: u64,
}

/// A running load; [`finish`](Self::finish) waits for its end. Dropping
/// it stops the clients early and waits for them (bounded).
#[derive(Debug)]
pub struct LoadHandle {
    started: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<LoadReport>>,
}

impl LoadHandle {
    /// When the clients started (restart instants are taken against it).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Asks the clients to start no more requests.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for the end of the run (at most `duration` plus the grace
    /// after the start, and a second for the runtime to shut down).
    ///
    /// # Panics
    ///
    /// If the load thread panicked.
    pub fn finish(mut self) -> LoadReport {
        let t = self.thread.take().expect("finish once");
        t.join().expect("the load thread panicked")
    }
}

impl Drop for LoadHandle {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop();
            let _ = t.join();
        }
    }
}

/// Starts the load of `cfg` (see the module docs) on threads of its own.
///
/// # Errors
///
/// If the runtime or its thread cannot be made.
///
/// # Panics
///
/// If `cfg` has no clients or no paths.
pub fn start_load(cfg: LoadConfig) -> std::io::Result<LoadHandle> {
    assert!(cfg.clients > 0, "a load needs clients");
    assert!(!cfg.paths.is_empty(), "a load needs paths");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads.max(1))
        .thread_name("load client")
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("load".into())
        .spawn(move || {
            let report = rt.block_on(run(cfg, started, flag));
            // Tasks still running were cut at the grace; their sockets
            // close with them.
            rt.shutdown_timeout(Duration::from_secs(1));
            report
        })?;
    Ok(LoadHandle {
        started,
        stop,
        thread: Some(thread),
    })
}

/// One client's counts; it alone locks it (a mutex so the counts of a
/// client cut short at the grace are kept).
#[derive(Default)]
struct ClientLog {
    records: Vec<Record>,
    outcomes: BTreeMap<Outcome, u64>,
    reused_failures: BTreeMap<Outcome, u64>,
    connects: u64,
    connect_failures: u64,
    unrecorded: u64,
}

struct Shared {
    cfg: LoadConfig,
    started: Instant,
    end: Instant,
    stop: Arc<AtomicBool>,
    /// Records taken, all clients together.
    recorded: AtomicUsize,
}

async fn run(cfg: LoadConfig, started: Instant, stop: Arc<AtomicBool>) -> LoadReport {
    let end = started + cfg.duration;
    let hard_end = end + cfg.grace();
    let keepalive = cfg.keepalive_clients();
    let clients = cfg.clients;
    let duration = cfg.duration;
    let shared = Arc::new(Shared {
        cfg,
        started,
        end,
        stop,
        recorded: AtomicUsize::new(0),
    });
    let logs: Vec<Arc<Mutex<ClientLog>>> = (0..clients).map(|_| Arc::default()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, log) in logs.iter().enumerate() {
        tasks.spawn(client(
            Arc::clone(&shared),
            i,
            i < keepalive,
            Arc::clone(log),
        ));
    }
    let mut done = 0;
    while let Ok(Some(_)) = tokio::time::timeout_at(hard_end.into(), tasks.join_next()).await {
        done += 1;
    }
    tasks.abort_all();
    let elapsed = started.elapsed();
    let mut report = LoadReport {
        started,
        duration,
        elapsed,
        total: 0,
        outcomes: BTreeMap::new(),
        reused_failures: BTreeMap::new(),
        connects: 0,
        connect_failures: 0,
        records: Vec::new(),
        unrecorded: 0,
        aborted_clients: clients - done,
    };
    for log in logs {
        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
        let l = std::mem::take(&mut *l);
        for (o, n) in l.outcomes {
            report.total += n;
            *report.outcomes.entry(o).or_default() += n;
        }
        for (o, n) in l.reused_failures {
            *report.reused_failures.entry(o).or_default() += n;
        }
        report.connects += l.connects;
        report.connect_failures += l.connect_failures;
        report.unrecorded += l.unrecorded;
        report.records.extend(l.records);
    }
    report.records.sort_by_key(|r| r.start_ms);
    report
}

/// A connection and the task that drives it (aborted on drop, which
/// closes the socket).
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    /// Requests sent on it.
    used: u64,
    /// Its last answer said `Connection: close`.
    closing: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn client(shared: Arc<Shared>, index: usize, keepalive: bool, log: Arc<Mutex<ClientLog>>) {
    let cfg = &shared.cfg;
    let mut conn: Option<Conn> = None;
    let mut n: u64 = index as u64;
    let mut next_start = Instant::now();
    while Instant::now() < shared.end && !shared.stop.load(Ordering::Relaxed) {
        if let Some(pace) = cfg.pace {
            tokio::time::sleep_until(next_start.into()).await;
            next_start = Instant::now().max(next_start) + pace;
            if Instant::now() >= shared.end || shared.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let req = request(cfg, n);
        n += 1;
        let start = Instant::now();
        if start >= shared.end {
            break;
        }
        // Not a retry: a connection that cannot take a request is
        // replaced before the request is sent.
        if let Some(c) = &mut conn {
            let usable = !c.closing
                && !c.sender.is_closed()
                && matches!(
                    tokio::time::timeout(cfg.per_request_timeout, c.sender.ready()).await,
                    Ok(Ok(()))
                );
            if !usable {
                conn = None;
            }
        }
        let mut connected = false;
        let outcome = match &mut conn {
            Some(c) => exchange(cfg, c, req, start).await,
            None => match connect(cfg).await {
                Ok(c) => {
                    connected = true;
                    exchange(cfg, conn.insert(c), req, start).await
                }
                Err(o) => o,
            },
        };
        let latency = start.elapsed();
        let reused = conn.as_ref().is_some_and(|c| c.used > 1);
        if !keepalive || !outcome.is_ok() {
            // Done with, or in an unknown state after a failure: closed
            // (with a reset) now.
            conn = None;
        }
        let record = Record {
            start_ms: u32::try_from(start.duration_since(shared.started).as_millis())
                .unwrap_or(u32::MAX),
            latency_us: u32::try_from(latency.as_micros()).unwrap_or(u32::MAX),
            outcome,
            reused,
        };
        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
        if connected || outcome.is_connect_failure() {
            l.connects += 1;
        }
        l.connect_failures += u64::from(outcome.is_connect_failure());
        *l.outcomes.entry(outcome).or_default() += 1;
        if reused && !outcome.is_ok() {
            *l.reused_failures.entry(outcome).or_default() += 1;
        }
        if shared.recorded.fetch_add(1, Ordering::Relaxed) < cfg.max_records {
            l.records.push(record);
        } else {
            l.unrecorded += 1;
        }
    }
}

/// The `n`th request of a client.
fn request(cfg: &LoadConfig, n: u64) -> Request<Full<Bytes>> {
    let b = Request::builder().header(header::HOST, &cfg.host);
    let post = cfg
        .post
        .as_ref()
        .filter(|p| n % u64::from(p.every.max(1)) == u64::from(p.every.max(1)) - 1);
    let r = match post {
        Some(p) => b
            .method(Method::POST)
            .uri(&p.path)
            .header(header::CONTENT_TYPE, &p.content_type)
            .body(Full::new(Bytes::from(p.body.clone()))),
        None => b
            .method(Method::GET)
            .uri(&cfg.paths[(n % cfg.paths.len() as u64) as usize])
            .body(Full::new(Bytes::new())),
    };
    r.expect("a valid request (check the paths and the host)")
}

/// Opens a connection, bounded by `connect_timeout`.
async fn connect(cfg: &LoadConfig) -> Result<Conn, Outcome> {
    let stream = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(cfg.addr)).await
    {
        Err(_) => return Err(Outcome::ConnectTimeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Outcome::ConnectRefused);
        }
        Ok(Err(_)) => return Err(Outcome::ConnectOther),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    // Closed with a reset, not a FIN: see "TIME_WAIT" in the module docs.
    let _ = rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
    // The handshake does no I/O; it only sets up the connection.
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Outcome::ConnectOther)?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Conn {
        sender,
        driver,
        used: 0,
        closing: false,
    })
}

/// Sends `req` on `c` and reads the whole answer, all within
/// `per_request_timeout` of `start`.
async fn exchange(
    cfg: &LoadConfig,
    c: &mut Conn,
    req: Request<Full<Bytes>>,
    start: Instant,
) -> Outcome {
    c.used += 1;
    let deadline = start + cfg.per_request_timeout;
    let answer = async {
        let resp = match c.sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return send_error(&e),
        };
        let status = resp.status();
        let closing = resp.headers().get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("close"))
        });
        let mut body = resp.into_body();
        let mut read = 0usize;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    read += f.data_ref().map_or(0, |d| d.len());
                    if read > MAX_BODY {
                        return Outcome::BodyError;
                    }
                }
                Err(_) => return Outcome::BodyError,
            }
        }
        c.closing = closing;
        if status.is_success() {
            Outcome::Ok
        } else {
            Outcome::Status(status.as_u16())
        }
    };
    tokio::time::timeout_at(deadline.into(), answer)
        .await
        .unwrap_or(Outcome::Timeout)
}

/// The outcome of a request whose send failed, from hyper's error and the
/// I/O error under it.
fn send_error(e: &hyper::Error) -> Outcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return match io.kind() {
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Outcome::Reset,
                K::UnexpectedEof => Outcome::ClosedBeforeResponse,
                K::TimedOut => Outcome::Timeout,
                _ => Outcome::Other,
            };
        }
        source = s.source();
    }
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        Outcome::ClosedBeforeResponse
    } else if e.is_timeout() {
        Outcome::Timeout
    } else {
        Outcome::Other
    }
}
