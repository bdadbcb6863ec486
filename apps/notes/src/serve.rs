//! Serving connections: the listeners' accept loops (a cap on
//! connections, header read and write timeouts), connections handed over
//! by the previous generation, and the two ways of stopping — the
//! family's stop (idle connections closed) and a restart's drain (idle
//! connections handed to the next generation, so no request is lost).

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use privfork::family::protocol::MAX_HANDOVER_BYTES;
use privfork::listen::Listeners;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_io_timeout::TimeoutStream;

use crate::conn_io::{ConnIo, Meter, Stream};
use crate::web::{Shared, router};
use crate::worker::Control;

/// A listener the worker accepts on.
#[derive(Debug)]
pub enum AnyListener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// A unix stream socket.
    Unix(tokio::net::UnixListener),
}

/// The family's listeners as tokio listeners (inside the runtime).
pub fn listeners(mut l: Listeners) -> std::io::Result<Vec<AnyListener>> {
    let names: Vec<String> = l.iter().map(|x| x.name().to_owned()).collect();
    let mut out = Vec::new();
    for name in names {
        let Some(listener) = l.take(&name) else {
            continue;
        };
        let fd = listener.into_fd();
        if is_unix(&fd) {
            let std = std::os::unix::net::UnixListener::from(fd);
            std.set_nonblocking(true)?;
            out.push(AnyListener::Unix(tokio::net::UnixListener::from_std(std)?));
        } else {
            let std = std::net::TcpListener::from(fd);
            std.set_nonblocking(true)?;
            out.push(AnyListener::Tcp(tokio::net::TcpListener::from_std(std)?));
        }
    }
    Ok(out)
}

/// Whether `fd` is a unix socket (else TCP, for the family's listeners
/// and the connections accepted on them).
pub fn is_unix(fd: &OwnedFd) -> bool {
    rustix::net::sockopt::socket_domain(fd).is_ok_and(|d| d == rustix::net::AddressFamily::UNIX)
}

/// What the worker's control thread tells the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Accept and serve.
    Serve,
    /// The family stops: stop accepting, answer requests in flight with
    /// `Connection: close`, close idle connections.
    Stop,
    /// A restart: the next generation accepts on the same listeners.
    /// Stop accepting, answer requests in flight with `Connection:
    /// close`, hand idle connections over.
    Drain,
}

/// A connection the previous generation handed over.
#[derive(Debug)]
pub struct Handed {
    /// The connected socket.
    pub socket: OwnedFd,
    /// What the previous owner read from it and did not answer: read
    /// before the socket's own bytes.
    pub buffered: Vec<u8>,
}

/// What a drain did with its connections (the worker logs it once).
#[derive(Debug, Default)]
pub struct DrainCounts {
    /// Handed over to main, for the next generation.
    pub handed: AtomicU64,
    /// Closed after answering their request in flight with `Connection:
    /// close`.
    pub answered: AtomicU64,
    /// Ended otherwise: the client closed, an error, or more bytes read
    /// and unanswered than a handover carries.
    pub other: AtomicU64,
    /// Could not be handed over (main's channel broke); closed.
    pub failed: AtomicU64,
}

impl DrainCounts {
    /// One line: what the drain did.
    pub fn summary(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = format!(
            "handed over {} idle connection(s), closed {} after their last answer",
            n(&self.handed),
            n(&self.answered)
        );
        if n(&self.other) > 0 {
            s.push_str(&format!(
                ", {} ended otherwise (client gone, error, or over {MAX_HANDOVER_BYTES} bytes unanswered)",
                n(&self.other)
            ));
        }
        if n(&self.failed) > 0 {
            s.push_str(&format!(
                ", {} could not be handed over (closed)",
                n(&self.failed)
            ));
        }
        s
    }
}

/// What every connection's task shares.
struct Conns {
    builder: hyper::server::conn::http1::Builder,
    router: Router,
    write_timeout: Duration,
    control: Arc<Control>,
    signal: watch::Receiver<Signal>,
}

/// The HTTP/1 settings of every connection.
fn http1(read_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .keep_alive(true)
        // What hyper may read ahead of its parsing (a request head's
        // limit too): no more than a handover carries, so an idle
        // connection's unanswered bytes fit in one.
        .max_buf_size(MAX_HANDOVER_BYTES);
    builder
}

/// Serves every listener and every connection handed over (`handed`)
/// until `signal` says to stop or drain; returns once every connection
/// has ended (each idle one handed on through `control` when draining).
pub async fn serve(
    listeners: Vec<AnyListener>,
    handed: mpsc::UnboundedReceiver<Handed>,
    app: Shared,
    control: Arc<Control>,
    signal: watch::Receiver<Signal>,
) {
    let config = app.config();
    let permits = Arc::new(Semaphore::new(
        usize::try_from(config.max_connections).unwrap_or(usize::MAX),
    ));
    let conns = Arc::new(Conns {
        builder: http1(config.read_timeout()),
        write_timeout: config.read_timeout(),
        router: router(Arc::clone(&app)),
        control,
        signal,
    });
    // Every task holds a sender: `recv` says `None` once all are gone.
    let (alive, mut all_ended) = mpsc::channel::<()>(1);
    for l in listeners {
        tokio::spawn(accept_loop(
            l,
            Arc::clone(&permits),
            Arc::clone(&conns),
            alive.clone(),
        ));
    }
    tokio::spawn(intake(handed, permits, conns, alive));
    let _ = all_ended.recv().await;
}

/// Resolves once the server is told to stop or drain (or the control
/// thread is gone).
async fn stopping(signal: &mut watch::Receiver<Signal>) {
    let _ = signal.wait_for(|s| *s != Signal::Serve).await;
}

/// Accepts on `l` while serving; returns (dropping `l`: nothing more is
/// accepted here, and the next generation's worker gets every
/// connection in the shared backlog) when told to stop or drain.
async fn accept_loop(
    l: AnyListener,
    permits: Arc<Semaphore>,
    conns: Arc<Conns>,
    alive: mpsc::Sender<()>,
) {
    let mut signal = conns.signal.clone();
    loop {
        // A connection over the cap waits in the backlog.
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p,
            () = stopping(&mut signal) => return,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            c = accept(&l) => c,
            () = stopping(&mut signal) => return,
        };
        match accepted {
            Ok(stream) => {
                tokio::spawn(serve_conn(
                    Arc::clone(&conns),
                    stream,
                    Vec::new(),
                    permit,
                    alive.clone(),
                ));
            }
            Err(e) => {
                // EMFILE and the like: wait a little, not spin.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept(l: &AnyListener) -> std::io::Result<Stream> {
    match l {
        AnyListener::Tcp(t) => {
            let (s, _) = t.accept().await?;
            let _ = s.set_nodelay(true);
            Ok(Stream::Tcp(s))
        }
        AnyListener::Unix(u) => u.accept().await.map(|(s, _)| Stream::Unix(s)),
    }
}

/// Serves the connections the control thread passes on from main (the
/// previous generation's idle ones), each under a permit like an
/// accepted one: over the cap, it waits. Once stopping, those not
/// started are handed on as they came, or closed.
async fn intake(
    mut handed: mpsc::UnboundedReceiver<Handed>,
    permits: Arc<Semaphore>,
    conns: Arc<Conns>,
    alive: mpsc::Sender<()>,
) {
    let mut signal = conns.signal.clone();
    loop {
        let h = tokio::select! {
            h = handed.recv() => h,
            () = stopping(&mut signal) => break,
        };
        let Some(h) = h else { return };
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p,
            () = stopping(&mut signal) => {
                conns.pass_on(h);
                break;
            }
        };
        let Ok(permit) = permit else { return };
        match Stream::from_fd(h.socket) {
            Ok(stream) => {
                tokio::spawn(serve_conn(
                    Arc::clone(&conns),
                    stream,
                    h.buffered,
                    permit,
                    alive.clone(),
                ));
            }
            Err(e) => eprintln!("a connection handed over: {e}; closed"),
        }
    }
    // The control thread closes the channel once it stops; what comes
    // until then was never read here.
    while let Some(h) = handed.recv().await {
        conns.pass_on(h);
    }
}

impl Conns {
    /// A handed-over connection this worker never started: on to the
    /// next generation as it came (draining), or closed (stopping).
    fn pass_on(&self, h: Handed) {
        if *self.signal.borrow() == Signal::Drain {
            self.control.hand_over(h.socket, h.buffered);
        }
    }
}

/// The service hyper runs for each request: the router, its future boxed
/// (hyper polls a connection without shutting it down only for `Unpin`
/// futures, and axum's are not).
#[derive(Clone)]
struct Routes(Router);

type Answer = Result<axum::response::Response, std::convert::Infallible>;

impl hyper::service::Service<hyper::Request<Incoming>> for Routes {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        Box::pin(tower::ServiceExt::oneshot(self.0.clone(), req))
    }
}

/// Serves one connection (read after `rewind`, the bytes handed over with
/// it) until it ends, or until told to stop or drain; then closes it, or
/// — draining, if it was idle — hands it on.
///
/// Why handing on an idle connection loses nothing. On the signal,
/// `graceful_shutdown` disables keep-alive, and hyper (1.x,
/// `proto/h1/conn.rs` `disable_keep_alive`, `dispatch.rs`
/// `disable_keep_alive`) then either:
/// - closes the connection at once, without writing, when it is idle
///   between requests (`KA::Idle`: the last response flushed, no request
///   head complete — a partly received next head is still idle) or fresh
///   (nothing read and nothing written yet: `has_initial_read_write_state`;
///   a fresh connection is `KA::Busy`, but the dispatcher closes it too);
///   or
/// - for a connection with a request in progress (head parsed, or a
///   first request partly read), answers that request with
///   `Connection: close`, and closes after it.
///
/// So a connection that ended `Ok` with no byte written after the signal
/// has no request in progress, and everything the client sent is still
/// ours to hand on: the bytes hyper read and did not parse are
/// `read_buf` (plus what of `rewind` it had not read yet), the bytes not
/// yet read stay in the kernel's socket buffer, which travels with the
/// fd. The next generation reads them in that order. A connection that
/// wrote after the signal answered with `Connection: close` (or finished
/// flushing an answer it had begun: then it is closed too, as hyper
/// would) — it is shut down and closed, as the client expects. An error,
/// or the client's end of stream, closes it too.
///
/// A fresh connection whose first request head hyper has begun to read
/// counts as in progress: it is answered once the head is complete, or
/// ended by the header read timeout or at the drain deadline, whichever
/// comes first (a client that sends a few bytes and then waits).
async fn serve_conn(
    conns: Arc<Conns>,
    stream: Stream,
    rewind: Vec<u8>,
    _permit: OwnedSemaphorePermit,
    _alive: mpsc::Sender<()>,
) {
    let meter = Arc::new(Meter::default());
    let mut io = TimeoutStream::new(ConnIo::new(stream, rewind, Arc::clone(&meter)));
    io.set_write_timeout(Some(conns.write_timeout));
    let mut conn = conns
        .builder
        .serve_connection(TokioIo::new(Box::pin(io)), Routes(conns.router.clone()));
    let mut signal = conns.signal.clone();
    let mut told = Signal::Serve;
    let mut written_then = 0;
    let ended = loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
            s = signal.wait_for(|s| *s != Signal::Serve), if told == Signal::Serve => {
                // The control thread gone: as a stop.
                told = s.map_or(Signal::Stop, |s| *s);
                written_then = meter.written();
                Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    let parts = conn.into_parts();
    let mut io = parts.io.into_inner();
    let counts = &conns.control.drained;
    if told == Signal::Drain {
        let idle = ended.is_ok() && meter.written() == written_then && !meter.saw_eof();
        if idle && let Some((stream, rest)) = io.as_mut().get_pin_mut().get_mut().release() {
            let mut buffered = parts.read_buf.to_vec();
            buffered.extend_from_slice(&rest);
            if buffered.len() > MAX_HANDOVER_BYTES {
                counts.other.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match stream.into_fd() {
                Ok(fd) => conns.control.hand_over(fd, buffered),
                Err(_) => {
                    counts.other.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        let counter = if ended.is_ok() && !meter.saw_eof() {
            &counts.answered
        } else {
            &counts.other
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    if ended.is_ok() {
        // As hyper does at the end of a connection it owns.
        let _ = io.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::io::{Read, Write};

    /// A server of one route (`/slow` answers after a while), its control
    /// and the control's wake-up pipe, serving until the signal.
    struct Server {
        addr: std::net::SocketAddr,
        control: Arc<Control>,
        signal: watch::Sender<Signal>,
        handed: mpsc::UnboundedSender<Handed>,
        done: tokio::task::JoinHandle<()>,
        rt: tokio::runtime::Runtime,
        _wake: OwnedFd,
    }

    impl Server {
        fn start() -> Self {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let (control, wake) = Control::new().unwrap();
            let (signal, signal_rx) = watch::channel(Signal::Serve);
            let (handed, handed_rx) = mpsc::unbounded_channel();
            let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = std.local_addr().unwrap();
            std.set_nonblocking(true).unwrap();
            let router = Router::new().route("/", get(|| async { "ok" })).route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "slow"
                }),
            );
            let conns = Arc::new(Conns {
                builder: http1(Duration::from_secs(5)),
                router,
                write_timeout: Duration::from_secs(5),
                control: Arc::clone(&control),
                signal: signal_rx,
            });
            let done = rt.spawn(async move {
                let l = AnyListener::Tcp(tokio::net::TcpListener::from_std(std).unwrap());
                let permits = Arc::new(Semaphore::new(16));
                let (alive, mut all_ended) = mpsc::channel::<()>(1);
                tokio::spawn(accept_loop(
                    l,
                    Arc::clone(&permits),
                    Arc::clone(&conns),
                    alive.clone(),
                ));
                tokio::spawn(intake(handed_rx, permits, conns, alive));
                let _ = all_ended.recv().await;
            });
            Self {
                addr,
                control,
                signal,
                handed,
                done,
                rt,
                _wake: wake,
            }
        }

        /// Drains; returns once every connection ended, with what was
        /// handed over.
        fn drain(self) -> (Vec<(OwnedFd, Vec<u8>)>, Arc<Control>) {
            self.signal.send(Signal::Drain).unwrap();
            drop(self.handed);
            self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), self.done)
                    .await
                    .expect("the drain ends")
                    .unwrap();
            });
            (self.control.take_handovers(), self.control)
        }
    }

    fn send_get(c: &mut std::net::TcpStream, path: &str) {
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    }

    /// Reads one answer (a body of `len` bytes).
    fn answer(c: &mut std::net::TcpStream, len: usize) -> String {
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        loop {
            let n = c.read(&mut b).unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(i) = text.find("\r\n\r\n")
                && got.len() >= i + 4 + len
            {
                return text;
            }
        }
    }

    #[test]
    fn a_drain_hands_idle_connections_over_with_what_was_read() {
        let s = Server::start();
        // Idle after an answer, then half of a next request sent.
        let mut idle = std::net::TcpStream::connect(s.addr).unwrap();
        send_get(&mut idle, "/");
        assert!(answer(&mut idle, 2).ends_with("ok"));
        idle.write_all(b"GET /next HT").unwrap();
        // Connected, nothing sent.
        let fresh = std::net::TcpStream::connect(s.addr).unwrap();
        // A request in flight: answered, with `Connection: close`.
        let mut busy = std::net::TcpStream::connect(s.addr).unwrap();
        send_get(&mut busy, "/slow");
        std::thread::sleep(Duration::from_millis(100));
        let (handed, control) = s.drain();
        let busy_answer = answer(&mut busy, 4);
        assert!(busy_answer.contains("connection: close"), "{busy_answer}");
        assert_eq!(busy.read(&mut [0u8; 8]).unwrap(), 0, "closed after it");
        assert_eq!(handed.len(), 2, "the idle and the fresh connection");
        let mut peers: Vec<_> = handed
            .iter()
            .map(|(fd, b)| {
                let s = std::net::TcpStream::from(fd.try_clone().unwrap());
                (s.peer_addr().unwrap(), b.clone())
            })
            .collect();
        peers.sort();
        let mut want = vec![
            (idle.local_addr().unwrap(), b"GET /next HT".to_vec()),
            (fresh.local_addr().unwrap(), Vec::new()),
        ];
        want.sort();
        assert_eq!(peers, want);
        let c = &control.drained;
        assert_eq!(c.answered.load(Ordering::Relaxed), 1);
        assert_eq!(c.other.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_handed_over_connection_is_served_from_its_buffered_bytes_first() {
        let s = Server::start();
        // The previous generation read half of a request, the other half
        // is in the socket.
        let (mut client, server_side) = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            (c, l.accept().unwrap().0)
        };
        client.write_all(b"/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s.handed
            .send(Handed {
                socket: server_side.into(),
                buffered: b"GET ".to_vec(),
            })
            .unwrap();
        assert!(answer(&mut client, 2).ends_with("ok"));
        // Still keep-alive: a second request on it.
        send_get(&mut client, "/");
        assert!(answer(&mut client, 2).ends_with("ok"));
        // Drained while idle: handed on again, nothing pending.
        let (handed, _) = s.drain();
        assert_eq!(handed.len(), 1);
        assert!(handed[0].1.is_empty());
    }
}
