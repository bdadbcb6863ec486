//! A connection's byte stream as the HTTP server sees it: a TCP or unix
//! stream socket, read after the bytes a previous generation handed over
//! with it, with a meter that tells the connection's task what happened
//! on it (bytes written, end of stream seen) and a way to take the socket
//! back out of the server to hand it on.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connected stream socket, TCP or unix.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// A unix stream socket.
    Unix(UnixStream),
}

impl Stream {
    /// A socket received from main (a connection handed over): its kind
    /// read from the socket itself, made non-blocking and registered with
    /// the runtime (call inside it).
    ///
    /// # Errors
    ///
    /// Not a socket, or the runtime refused it.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        if crate::serve::is_unix(&fd) {
            let s = std::os::unix::net::UnixStream::from(fd);
            s.set_nonblocking(true)?;
            Ok(Self::Unix(UnixStream::from_std(s)?))
        } else {
            let s = std::net::TcpStream::from(fd);
            s.set_nonblocking(true)?;
            let s = TcpStream::from_std(s)?;
            s.set_nodelay(true)?;
            Ok(Self::Tcp(s))
        }
    }

    /// The socket, out of the runtime (to hand it on).
    ///
    /// # Errors
    ///
    /// The runtime could not let it go.
    pub fn into_fd(self) -> io::Result<OwnedFd> {
        Ok(match self {
            Self::Tcp(s) => s.into_std()?.into(),
            Self::Unix(s) => s.into_std()?.into(),
        })
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// What the connection's task reads about its stream while the server
/// owns it.
#[derive(Debug, Default)]
pub struct Meter {
    written: AtomicU64,
    eof: AtomicBool,
}

impl Meter {
    /// Bytes written to the socket so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Whether a read found the end of the stream (the client shut its
    /// side down or closed).
    pub fn saw_eof(&self) -> bool {
        self.eof.load(Ordering::Relaxed)
    }
}

/// A stream read after `rewind` (bytes handed over with it), metered.
///
/// It lets go of its stream once ([`ConnIo::release`]); reads and writes
/// fail after that.
#[derive(Debug)]
pub struct ConnIo {
    stream: Option<Stream>,
    rewind: Vec<u8>,
    /// How much of `rewind` was read.
    pos: usize,
    meter: Arc<Meter>,
}

impl ConnIo {
    /// `stream`, to be read after `rewind`.
    pub fn new(stream: Stream, rewind: Vec<u8>, meter: Arc<Meter>) -> Self {
        Self {
            stream: Some(stream),
            rewind,
            pos: 0,
            meter,
        }
    }

    /// The stream and what of `rewind` nobody read yet (bytes that come
    /// before the stream's own); `None` if taken already.
    pub fn release(&mut self) -> Option<(Stream, Vec<u8>)> {
        let stream = self.stream.take()?;
        let mut rest = std::mem::take(&mut self.rewind);
        rest.drain(..self.pos);
        self.pos = 0;
        Some((stream, rest))
    }

    fn stream(&mut self) -> io::Result<Pin<&mut Stream>> {
        self.stream
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "handed on"))
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.rewind.len() {
            let n = buf.remaining().min(this.rewind.len() - this.pos);
            buf.put_slice(&this.rewind[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.rewind.len() {
                this.rewind = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let asked = buf.remaining() > 0;
        let r = std::task::ready!(this.stream()?.poll_read(cx, buf));
        if r.is_ok() && asked && buf.filled().len() == before {
            this.meter.eof.store(true, Ordering::Relaxed);
        }
        Poll::Ready(r)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = std::task::ready!(this.stream()?.poll_write(cx, buf))?;
        this.meter.written.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = std::task::ready!(this.stream()?.poll_write_vectored(cx, bufs))?;
        this.meter.written.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn handed_over_bytes_come_first_and_writes_are_counted() {
        rt().block_on(async {
            let (a, mut b) = UnixStream::pair().unwrap();
            let meter = Arc::new(Meter::default());
            let mut io = ConnIo::new(Stream::Unix(a), b"GET / HT".to_vec(), Arc::clone(&meter));
            b.write_all(b"TP/1.1\r\n\r\n").await.unwrap();
            // Small reads: the rewind is served in pieces.
            let mut got = Vec::new();
            let mut buf = [0u8; 3];
            while got.len() < 18 {
                let n = io.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
            io.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
            assert_eq!(meter.written(), 17);
            assert!(!meter.saw_eof());
            let mut answer = [0u8; 17];
            b.read_exact(&mut answer).await.unwrap();
            drop(b);
            assert_eq!(io.read(&mut buf).await.unwrap(), 0);
            assert!(meter.saw_eof());
        });
    }

    #[test]
    fn what_was_not_read_of_the_rewind_is_given_back() {
        rt().block_on(async {
            let (a, _b) = UnixStream::pair().unwrap();
            let meter = Arc::new(Meter::default());
            let mut io = ConnIo::new(Stream::Unix(a), b"abcdef".to_vec(), meter);
            let mut buf = [0u8; 2];
            io.read_exact(&mut buf).await.unwrap();
            let (_, rest) = io.release().unwrap();
            assert_eq!(rest, b"cdef");
            assert!(io.release().is_none());
            assert!(io.read(&mut buf).await.is_err());
        });
    }
}
