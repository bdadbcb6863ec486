//! Serving connections: the listeners' accept loops (a cap on
//! connections, header read and write timeouts) and the graceful stop.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use privfork::listen::Listeners;
use tokio::sync::{Semaphore, watch};
use tokio_io_timeout::TimeoutStream;

use crate::web::{Shared, router};

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

fn is_unix(fd: &std::os::fd::OwnedFd) -> bool {
    rustix::net::sockopt::socket_domain(fd).is_ok_and(|d| d == rustix::net::AddressFamily::UNIX)
}

/// Serves every listener until `stop` turns true, then lets the
/// connections finish: each answers its request in flight with
/// `Connection: close`; idle ones are closed.
pub async fn serve(listeners: Vec<AnyListener>, app: Shared, mut stop: watch::Receiver<bool>) {
    let router = router(Arc::clone(&app));
    let permits = Arc::new(Semaphore::new(
        usize::try_from(app.config().max_connections).unwrap_or(usize::MAX),
    ));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(app.config().read_timeout())
        .keep_alive(true)
        .max_buf_size(64 << 10);
    let builder = Arc::new(builder);
    let mut accepts = tokio::task::JoinSet::new();
    let (conn_tx, mut conn_rx) =
        tokio::sync::mpsc::channel::<(Conn, tokio::sync::OwnedSemaphorePermit)>(64);
    for l in listeners {
        let (permits, conn_tx, mut stop) = (Arc::clone(&permits), conn_tx.clone(), stop.clone());
        accepts.spawn(async move {
            loop {
                // A connection over the cap waits in the backlog.
                let permit = tokio::select! {
                    p = Arc::clone(&permits).acquire_owned() => p,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let Ok(permit) = permit else { return };
                let conn = tokio::select! {
                    c = accept(&l) => c,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match conn {
                    Ok(c) => {
                        if conn_tx.send((c, permit)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // EMFILE and the like: wait a little, not spin.
                        eprintln!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    drop(conn_tx);
    loop {
        tokio::select! {
            c = conn_rx.recv() => {
                let Some((conn, permit)) = c else { break };
                let service = hyper_util::service::TowerToHyperService::new(router.clone());
                let builder = Arc::clone(&builder);
                let write_timeout = Some(app.config().read_timeout());
                match conn {
                    Conn::Tcp(s) => {
                        let _ = s.set_nodelay(true);
                        let mut s = TimeoutStream::new(s);
                        s.set_write_timeout(write_timeout);
                        let c = builder.serve_connection(TokioIo::new(Box::pin(s)), service);
                        let c = graceful.watch(c);
                        tokio::spawn(async move { let _ = c.await; drop(permit); });
                    }
                    Conn::Unix(s) => {
                        let mut s = TimeoutStream::new(s);
                        s.set_write_timeout(write_timeout);
                        let c = builder.serve_connection(TokioIo::new(Box::pin(s)), service);
                        let c = graceful.watch(c);
                        tokio::spawn(async move { let _ = c.await; drop(permit); });
                    }
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    accepts.abort_all();
    graceful.shutdown().await;
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &AnyListener) -> std::io::Result<Conn> {
    match l {
        AnyListener::Tcp(t) => t.accept().await.map(|(s, _)| Conn::Tcp(s)),
        AnyListener::Unix(u) => u.accept().await.map(|(s, _)| Conn::Unix(s)),
    }
}
