//! The I/O-agnostic halves of a channel end, shared by the blocking and the
//! tokio front ends: each step is one syscall with `MSG_DONTWAIT` or not,
//! and all state (partial frames, queued output) lives here, so a front end
//! can stop after any step (`EAGAIN`, a cancelled future) and resume later.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};

use super::error::{RecvError, SendError};
use super::fdpass::{self, FdRecvBuffer};
use super::frame::{FrameDecoder, HEADER_LEN, Header, Limits, RawFrame};
use super::message::Message;

/// Read buffer size: one 64 KiB message plus its header in one read.
const READ_BUF: usize = 64 * 1024 + HEADER_LEN;
/// Most frames gathered into one `sendmsg`.
const MAX_IOV: usize = 64;
/// Keep a sent frame's buffer for reuse up to this capacity.
const SPARE_MAX: usize = 64 * 1024 + HEADER_LEN;

/// A received message, its request id and the fds bound to it.
#[derive(Debug)]
pub struct Received<M> {
    /// The message.
    pub msg: M,
    /// Request id from the header (0 when not part of a call).
    pub request_id: u64,
    /// Exactly as many fds as the message kind declares, in sending order,
    /// open and close-on-exec. Fds nobody takes are closed on drop.
    pub fds: Vec<OwnedFd>,
}

/// Result of one I/O step.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Something happened; look again.
    Progress,
    /// The socket would block.
    WouldBlock,
}

/// Which kinds the receiving end accepts now.
#[derive(Debug)]
pub(crate) struct Accepting<K> {
    pub(crate) state: &'static str,
    pub(crate) kinds: Option<Vec<K>>,
}

/// Receiving half: decoder, buffers, state and the acceptance rules.
#[derive(Debug)]
pub(crate) struct ReadCore<Rx: Message> {
    decoder: FrameDecoder,
    cmsg: FdRecvBuffer,
    rbuf: Box<[u8]>,
    ready: VecDeque<RawFrame>,
    pub(crate) accepting: Accepting<Rx::Kind>,
    closed: Option<String>,
    _rx: PhantomData<fn() -> Rx>,
}

/// `err` and its sources, joined by ": ".
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

fn shutdown(sock: BorrowedFd<'_>) {
    // The peer must see the channel end; failure (already shut down, peer
    // gone) leaves nothing to do.
    let _ = rustix::net::shutdown(sock, rustix::net::Shutdown::Both);
}

impl<Rx: Message> ReadCore<Rx> {
    pub(crate) fn new(limits: Limits) -> Self {
        let limits = limits.clamped();
        Self {
            decoder: FrameDecoder::new(limits),
            cmsg: FdRecvBuffer::new(limits.max_fds),
            rbuf: vec![0u8; READ_BUF].into_boxed_slice(),
            ready: VecDeque::new(),
            accepting: Accepting {
                state: "any",
                kinds: None,
            },
            closed: None,
            _rx: PhantomData,
        }
    }

    pub(crate) fn closed_error(&self) -> Option<RecvError> {
        self.closed.as_ref().map(|reason| RecvError::Closed {
            reason: reason.clone(),
        })
    }

    /// Records `err` as the reason the channel closed, drops everything
    /// buffered (closing any fds) and shuts the socket down.
    pub(crate) fn fail(&mut self, sock: BorrowedFd<'_>, err: RecvError) -> RecvError {
        if self.closed.is_none() {
            self.closed = Some(error_chain(&err));
        }
        self.ready.clear();
        self.decoder = FrameDecoder::new(self.decoder.limits());
        shutdown(sock);
        err
    }

    /// Turns the next complete frame into a message, if there is one.
    pub(crate) fn next_message(
        &mut self,
        sock: BorrowedFd<'_>,
    ) -> Result<Option<Received<Rx>>, RecvError> {
        let Some(frame) = self.ready.pop_front() else {
            return match self.closed_error() {
                Some(e) => Err(e),
                None => Ok(None),
            };
        };
        match self.check(frame) {
            Ok(m) => Ok(Some(m)),
            Err(e) => Err(self.fail(sock, e)),
        }
    }

    fn check(&self, frame: RawFrame) -> Result<Received<Rx>, RecvError> {
        match self.check_inner(&frame).and_then(|()| self.decode(&frame)) {
            Ok(msg) => Ok(Received {
                msg,
                request_id: frame.header.request_id,
                fds: frame.fds,
            }),
            Err(e) => {
                // The frame's fds are closed here: a socket among them
                // must not make that close wait (a TCP socket the peer set
                // to linger blocks the last close, non-blocking or not).
                frame
                    .fds
                    .into_iter()
                    .for_each(super::fdpass::close_received);
                Err(e)
            }
        }
    }

    /// The header's checks: kind known, allowed now, fds as declared.
    fn check_inner(&self, frame: &RawFrame) -> Result<(), RecvError> {
        let h = frame.header;
        let kind = Rx::from_code(h.msg_type).ok_or(RecvError::UnknownType { code: h.msg_type })?;
        let desc = Rx::describe(kind);
        if let Some(kinds) = &self.accepting.kinds
            && !kinds.contains(&kind)
        {
            return Err(RecvError::NotAllowed {
                name: desc.name,
                code: desc.code,
                state: self.accepting.state,
            });
        }
        if desc.fds != h.num_fds {
            return Err(RecvError::FdDeclaration {
                name: desc.name,
                expected: desc.fds,
                declared: h.num_fds,
            });
        }
        Ok(())
    }

    /// The payload, decoded: exactly one message of the header's kind.
    fn decode(&self, frame: &RawFrame) -> Result<Rx, RecvError> {
        let h = frame.header;
        let kind = Rx::from_code(h.msg_type).ok_or(RecvError::UnknownType { code: h.msg_type })?;
        let desc = Rx::describe(kind);
        let (msg, rest) = postcard::take_from_bytes::<Rx>(&frame.payload).map_err(|source| {
            RecvError::BadPayload {
                name: desc.name,
                source,
            }
        })?;
        if !rest.is_empty() {
            return Err(RecvError::TrailingBytes {
                name: desc.name,
                extra: rest.len(),
            });
        }
        let got = msg.kind();
        if got != kind {
            return Err(RecvError::KindMismatch {
                header: desc.name,
                payload: Rx::describe(got).name,
            });
        }
        Ok(msg)
    }

    /// One `recvmsg` into the decoder.
    ///
    /// End of stream between frames is [`RecvError::PeerClosed`] (and
    /// closes this end too); inside a frame it is a [`FrameError`].
    ///
    /// [`FrameError`]: super::frame::FrameError
    pub(crate) fn fill(
        &mut self,
        sock: BorrowedFd<'_>,
        nonblocking: bool,
    ) -> Result<Step, RecvError> {
        if let Some(e) = self.closed_error() {
            return Err(e);
        }
        let (n, fds) =
            match fdpass::recv_with_fds(sock, &mut self.rbuf, &mut self.cmsg, nonblocking) {
                Ok(r) => r,
                Err(e) if e.is_would_block() => return Ok(Step::WouldBlock),
                Err(e) => return Err(self.fail(sock, e.into())),
            };
        if n == 0 {
            drop(fds);
            let err = match self.decoder.finish() {
                Ok(()) => RecvError::PeerClosed,
                Err(e) => RecvError::Frame(e),
            };
            // Frames already decoded stay deliverable before the close.
            let ready = std::mem::take(&mut self.ready);
            let e = self.fail(sock, err);
            self.ready = ready;
            return Err(e);
        }
        if fds.len() > usize::from(self.decoder.limits().max_fds) {
            // Refused before the decoder holds them: closed with care.
            let received = fds.len();
            fds.into_iter().for_each(super::fdpass::close_received);
            let e = super::frame::FrameError::TooManyFdsReceived {
                received,
                limit: self.decoder.limits().max_fds,
            };
            return Err(self.fail(sock, e.into()));
        }
        if let Err(e) = self.decoder.feed(&self.rbuf[..n], fds, &mut self.ready) {
            return Err(self.fail(sock, e.into()));
        }
        Ok(Step::Progress)
    }

    /// True if a complete frame is waiting.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// True if nothing read is held: no complete frame, no partial one.
    pub(crate) fn is_quiet(&self) -> bool {
        self.ready.is_empty() && self.decoder.is_idle()
    }
}

#[derive(Debug)]
struct OutFrame {
    bytes: Vec<u8>,
    written: usize,
    /// Sent with the first byte of this frame, then dropped (closed here).
    fds: Vec<OwnedFd>,
}

/// Sending half: encoder and output queue.
#[derive(Debug)]
pub(crate) struct WriteCore<Tx: Message> {
    limits: Limits,
    queue: VecDeque<OutFrame>,
    spare: Vec<u8>,
    closed: Option<String>,
    _tx: PhantomData<fn(Tx)>,
}

impl<Tx: Message> WriteCore<Tx> {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits: limits.clamped(),
            queue: VecDeque::new(),
            spare: Vec::new(),
            closed: None,
            _tx: PhantomData,
        }
    }

    /// Encodes `msg` and queues it with `fds`.
    pub(crate) fn enqueue(
        &mut self,
        request_id: u64,
        msg: &Tx,
        fds: Vec<OwnedFd>,
    ) -> Result<(), SendError> {
        if let Some(reason) = &self.closed {
            return Err(SendError::Closed {
                reason: reason.clone(),
            });
        }
        let desc = Tx::describe(msg.kind());
        if fds.len() != usize::from(desc.fds) {
            return Err(SendError::FdCount {
                name: desc.name,
                expected: desc.fds,
                given: fds.len(),
            });
        }
        if fds.len() > usize::from(self.limits.max_fds) {
            return Err(SendError::TooManyFds {
                name: desc.name,
                count: fds.len(),
                limit: self.limits.max_fds,
            });
        }
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        buf.extend_from_slice(&[0u8; HEADER_LEN]);
        let mut buf = postcard::to_extend(msg, buf).map_err(|source| SendError::Encode {
            name: desc.name,
            source,
        })?;
        let len = buf.len() - HEADER_LEN;
        if len > self.limits.max_payload as usize {
            return Err(SendError::TooLarge {
                name: desc.name,
                len,
                limit: self.limits.max_payload,
            });
        }
        let header = Header {
            msg_type: desc.code,
            // Fits: checked against a u32 limit just above.
            len: len as u32,
            request_id,
            num_fds: desc.fds,
        };
        buf[..HEADER_LEN].copy_from_slice(&header.encode());
        self.queue.push_back(OutFrame {
            bytes: buf,
            written: 0,
            fds,
        });
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Takes the fds of every queued frame not sent yet (the frames stay;
    /// they can no longer be sent with their fds, so the caller drops the
    /// channel next).
    pub(crate) fn take_fds(&mut self) -> Vec<OwnedFd> {
        self.queue
            .iter_mut()
            .flat_map(|f| std::mem::take(&mut f.fds))
            .collect()
    }

    /// Takes back the last queued frame if none of it was written yet;
    /// `false` if part of it is already out (or nothing is queued).
    pub(crate) fn withdraw_last_if_unsent(&mut self) -> bool {
        match self.queue.back() {
            Some(f) if f.written == 0 => {
                self.queue.pop_back();
                true
            }
            _ => false,
        }
    }

    /// Closes the sending side: a frame was cut in the middle and the
    /// stream cannot be repaired.
    pub(crate) fn close(&mut self, sock: BorrowedFd<'_>, reason: &str) {
        if self.closed.is_none() {
            self.closed = Some(reason.to_owned());
        }
        self.queue.clear();
        shutdown(sock);
    }

    /// One `sendmsg` of as much queued output as the rules allow: a frame
    /// with fds goes alone, so its fds travel with its first byte and no
    /// other frame begins in the same segment.
    pub(crate) fn flush_step(
        &mut self,
        sock: BorrowedFd<'_>,
        nonblocking: bool,
    ) -> Result<Step, SendError> {
        if let Some(reason) = &self.closed {
            return Err(SendError::Closed {
                reason: reason.clone(),
            });
        }
        let Some(front) = self.queue.front() else {
            return Ok(Step::Progress);
        };
        let res = if front.written == 0 && !front.fds.is_empty() {
            fdpass::send_with_fds(sock, &[IoSlice::new(&front.bytes)], &front.fds, nonblocking)
        } else {
            let mut iov: Vec<IoSlice<'_>> = Vec::new();
            for (i, f) in self.queue.iter().enumerate() {
                if i >= MAX_IOV || (i > 0 && !f.fds.is_empty()) {
                    break;
                }
                iov.push(IoSlice::new(&f.bytes[f.written..]));
            }
            fdpass::send_with_fds(sock, &iov, &[], nonblocking)
        };
        let mut n = match res {
            Ok(0) => {
                let e = std::io::Error::new(std::io::ErrorKind::WriteZero, "sendmsg wrote 0 bytes");
                return Err(self.fail(sock, e));
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Step::WouldBlock),
            Err(e) => return Err(self.fail(sock, e)),
        };
        while n > 0 {
            let Some(f) = self.queue.front_mut() else {
                break;
            };
            // The fds went with the first byte; our copies close here.
            f.fds.clear();
            let take = n.min(f.bytes.len() - f.written);
            f.written += take;
            n -= take;
            if f.written == f.bytes.len() {
                if let Some(done) = self.queue.pop_front()
                    && done.bytes.capacity() <= SPARE_MAX
                {
                    self.spare = done.bytes;
                }
            } else {
                break;
            }
        }
        Ok(Step::Progress)
    }

    fn fail(&mut self, sock: BorrowedFd<'_>, source: std::io::Error) -> SendError {
        let err = SendError::Io { source };
        self.closed = Some(error_chain(&err));
        self.queue.clear();
        shutdown(sock);
        err
    }
}
