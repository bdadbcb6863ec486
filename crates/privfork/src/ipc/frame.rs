//! Frames: a fixed header, an exact-length payload, and the fds it declares.
//!
//! Wire layout (little endian, [`HEADER_LEN`] bytes, then the payload):
//!
//! | bytes | field        | meaning                                        |
//! |-------|--------------|------------------------------------------------|
//! | 0..4  | `msg_type`   | message type code of the protocol direction    |
//! | 4..8  | `len`        | exact payload length in bytes                  |
//! | 8..16 | `request_id` | pairs a reply with its request (0 = none)      |
//! | 16..18| `num_fds`    | fds sent with this frame over `SCM_RIGHTS`     |
//! | 18..20| `version`    | [`WIRE_VERSION`]; anything else is refused     |
//!
//! [`FrameDecoder`] is a state machine that consumes bytes in whatever pieces
//! `recvmsg` returns them, so partial reads and non-blocking sockets need no
//! special care from the caller. It checks the header against the channel's
//! [`Limits`] before it allocates anything for the payload, and it binds
//! received fds to the frame that declared them (see [`FrameDecoder::feed`]).
//! It never panics on any input; `fuzz/` and `tests/ipc_frame_prop.rs` hold
//! it to that.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 20;

/// Header version this code writes and accepts.
pub const WIRE_VERSION: u16 = 1;

/// The kernel refuses more than this many fds in one `SCM_RIGHTS` message
/// (`SCM_MAX_FD` in `include/net/scm.h`).
pub const KERNEL_MAX_FDS: usize = 253;

/// Per-channel limits, checked before any allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted or sent, in bytes.
    pub max_payload: u32,
    /// Most fds one message may carry (at most [`KERNEL_MAX_FDS`]).
    pub max_fds: u16,
}

impl Default for Limits {
    /// 1 MiB payloads (room for 64 KiB messages and fork-as results of
    /// moderate size), 16 fds per message.
    fn default() -> Self {
        Self {
            max_payload: 1 << 20,
            max_fds: 16,
        }
    }
}

impl Limits {
    /// The limits with `max_fds` clamped to what the kernel can deliver.
    #[must_use]
    pub fn clamped(self) -> Self {
        Self {
            max_payload: self.max_payload,
            max_fds: self.max_fds.min(KERNEL_MAX_FDS as u16),
        }
    }
}

/// The fixed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type code.
    pub msg_type: u32,
    /// Exact payload length in bytes.
    pub len: u32,
    /// Request id (0 when the message is not part of a call).
    pub request_id: u64,
    /// Number of fds sent with this frame.
    pub num_fds: u16,
}

impl Header {
    /// Encodes the header into its wire form.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.msg_type.to_le_bytes());
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        b[16..18].copy_from_slice(&self.num_fds.to_le_bytes());
        b[18..20].copy_from_slice(&WIRE_VERSION.to_le_bytes());
        b
    }

    /// Decodes and checks a header against `limits`.
    ///
    /// # Errors
    ///
    /// [`FrameError::BadVersion`], [`FrameError::PayloadTooLarge`] or
    /// [`FrameError::TooManyFdsDeclared`].
    pub fn decode(b: &[u8; HEADER_LEN], limits: &Limits) -> Result<Self, FrameError> {
        let [
            t0,
            t1,
            t2,
            t3,
            l0,
            l1,
            l2,
            l3,
            r0,
            r1,
            r2,
            r3,
            r4,
            r5,
            r6,
            r7,
            f0,
            f1,
            v0,
            v1,
        ] = *b;
        let h = Header {
            msg_type: u32::from_le_bytes([t0, t1, t2, t3]),
            len: u32::from_le_bytes([l0, l1, l2, l3]),
            request_id: u64::from_le_bytes([r0, r1, r2, r3, r4, r5, r6, r7]),
            num_fds: u16::from_le_bytes([f0, f1]),
        };
        let version = u16::from_le_bytes([v0, v1]);
        if version != WIRE_VERSION {
            return Err(FrameError::BadVersion {
                msg_type: h.msg_type,
                version,
            });
        }
        if h.len > limits.max_payload {
            return Err(FrameError::PayloadTooLarge {
                msg_type: h.msg_type,
                len: h.len,
                limit: limits.max_payload,
            });
        }
        if h.num_fds > limits.max_fds {
            return Err(FrameError::TooManyFdsDeclared {
                msg_type: h.msg_type,
                declared: h.num_fds,
                limit: limits.max_fds,
            });
        }
        Ok(h)
    }
}

/// A complete frame: header, payload of exactly `header.len` bytes, and
/// exactly `header.num_fds` fds.
#[derive(Debug)]
pub struct RawFrame {
    /// The checked header.
    pub header: Header,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// The fds that arrived with this frame, in the order they were sent.
    pub fds: Vec<OwnedFd>,
}

/// Why a byte stream is not a valid sequence of frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header carries an unknown version (garbage or a foreign peer).
    #[error("frame header (type {msg_type}) has version {version}, expected {WIRE_VERSION}")]
    BadVersion {
        /// Type code from the rejected header.
        msg_type: u32,
        /// The version found.
        version: u16,
    },
    /// The declared payload length exceeds the channel limit.
    #[error("frame of type {msg_type} declares a {len}-byte payload, over the {limit}-byte limit")]
    PayloadTooLarge {
        /// Type code from the rejected header.
        msg_type: u32,
        /// Declared length.
        len: u32,
        /// The channel's limit.
        limit: u32,
    },
    /// The header declares more fds than the channel allows.
    #[error("frame of type {msg_type} declares {declared} fds, over the limit of {limit}")]
    TooManyFdsDeclared {
        /// Type code from the rejected header.
        msg_type: u32,
        /// Declared fd count.
        declared: u16,
        /// The channel's limit.
        limit: u16,
    },
    /// More fds arrived in one read than the channel allows.
    #[error("{received} fds arrived at once, over the limit of {limit}")]
    TooManyFdsReceived {
        /// How many arrived.
        received: usize,
        /// The channel's limit.
        limit: u16,
    },
    /// Fds arrived with bytes in which no frame starts.
    #[error("{count} fds arrived with no message that declares them")]
    FdsWithoutMessage {
        /// How many fds arrived.
        count: usize,
    },
    /// The frame that owns the received fds declared a different number.
    #[error("frame of type {msg_type} declares {declared} fds but {received} arrived with it")]
    FdCountMismatch {
        /// Type code of the frame.
        msg_type: u32,
        /// Fds declared in its header.
        declared: u16,
        /// Fds that arrived with it.
        received: usize,
    },
    /// The peer closed the stream in the middle of a frame header.
    #[error("peer closed the channel after {have} of {HEADER_LEN} header bytes (short header)")]
    ShortHeader {
        /// Header bytes received.
        have: usize,
    },
    /// The peer closed the stream in the middle of a payload.
    #[error(
        "peer closed the channel mid-frame: type {msg_type} declared {len} payload bytes, {have} arrived"
    )]
    TruncatedPayload {
        /// Type code of the frame.
        msg_type: u32,
        /// Declared payload length.
        len: u32,
        /// Payload bytes received.
        have: usize,
    },
    /// An earlier error already poisoned this decoder.
    #[error("frame decoder stopped after an earlier error")]
    Poisoned,
}

#[derive(Debug)]
enum State {
    /// Collecting a header; `have == 0` means between frames.
    Header {
        buf: [u8; HEADER_LEN],
        have: usize,
        /// Fds that arrived with the read in which this header began.
        fds: Option<Vec<OwnedFd>>,
    },
    /// Collecting a payload whose header has been checked.
    Payload {
        header: Header,
        buf: Vec<u8>,
        fds: Vec<OwnedFd>,
    },
    Poisoned,
}

impl State {
    fn between_frames() -> Self {
        State::Header {
            buf: [0; HEADER_LEN],
            have: 0,
            fds: None,
        }
    }
}

/// Incremental frame decoder (see the module docs).
#[derive(Debug)]
pub struct FrameDecoder {
    limits: Limits,
    state: State,
}

impl FrameDecoder {
    /// Creates a decoder that enforces `limits`.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            limits: limits.clamped(),
            state: State::between_frames(),
        }
    }

    /// The limits this decoder enforces.
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes of memory the decoder holds for a partial payload (its buffer's
    /// capacity). Never more than `limits().max_payload`.
    #[must_use]
    pub fn buffered_capacity(&self) -> usize {
        match &self.state {
            State::Payload { buf, .. } => buf.capacity(),
            _ => 0,
        }
    }

    /// True between frames (nothing partial is buffered).
    #[must_use]
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Consumes `chunk`, the bytes one `recvmsg` returned, with the fds that
    /// arrived with it, and appends every completed frame to `out`.
    ///
    /// Fd binding follows what the kernel does for `SOCK_STREAM` unix
    /// sockets: fds travel with the first byte of the `sendmsg` that carried
    /// them, a `recvmsg` stops right after the segment that carries fds, and
    /// a sender sends each fd-carrying frame with one `sendmsg` starting at
    /// its header. So the fds of a read belong to the **last frame that
    /// begins in that read**; that frame must declare exactly that many, every
    /// other frame beginning there must declare none, and fds in a read where
    /// no frame begins belong to nobody. All of these are errors.
    ///
    /// # Errors
    ///
    /// Any [`FrameError`]; the decoder is then poisoned and drops (closes)
    /// every fd it held. Frames completed earlier in the same chunk are
    /// discarded too: after a protocol error nothing from that peer is
    /// trusted.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        fds: Vec<OwnedFd>,
        out: &mut VecDeque<RawFrame>,
    ) -> Result<(), FrameError> {
        let before = out.len();
        let r = self.feed_inner(chunk, fds, out);
        if r.is_err() {
            self.state = State::Poisoned;
            out.truncate(before);
        }
        r
    }

    fn feed_inner(
        &mut self,
        chunk: &[u8],
        fds: Vec<OwnedFd>,
        out: &mut VecDeque<RawFrame>,
    ) -> Result<(), FrameError> {
        if fds.len() > usize::from(self.limits.max_fds) {
            return Err(FrameError::TooManyFdsReceived {
                received: fds.len(),
                limit: self.limits.max_fds,
            });
        }
        let mut pending = if fds.is_empty() { None } else { Some(fds) };
        let mut pos = 0;
        while pos < chunk.len() {
            match &mut self.state {
                State::Poisoned => return Err(FrameError::Poisoned),
                State::Header {
                    buf,
                    have,
                    fds: header_fds,
                } => {
                    let starts_here = *have == 0;
                    let n = (HEADER_LEN - *have).min(chunk.len() - pos);
                    buf[*have..*have + n].copy_from_slice(&chunk[pos..pos + n]);
                    *have += n;
                    pos += n;
                    if *have < HEADER_LEN {
                        // The chunk ended inside this header, so this frame is
                        // the last one beginning in the chunk.
                        if starts_here {
                            *header_fds = pending.take();
                        }
                        break;
                    }
                    let header = Header::decode(buf, &self.limits)?;
                    let frame_fds = if starts_here {
                        // Last frame beginning in this chunk iff it reaches
                        // the chunk's end.
                        let remaining = chunk.len() - pos;
                        if header.len as usize >= remaining {
                            pending.take()
                        } else {
                            None
                        }
                    } else {
                        header_fds.take()
                    };
                    let frame_fds = frame_fds.unwrap_or_default();
                    if frame_fds.len() != usize::from(header.num_fds) {
                        return Err(FrameError::FdCountMismatch {
                            msg_type: header.msg_type,
                            declared: header.num_fds,
                            received: frame_fds.len(),
                        });
                    }
                    let len = header.len as usize;
                    let remaining = chunk.len() - pos;
                    if remaining >= len {
                        out.push_back(RawFrame {
                            header,
                            payload: chunk[pos..pos + len].to_vec(),
                            fds: frame_fds,
                        });
                        pos += len;
                        self.state = State::between_frames();
                    } else {
                        // `len` was checked against the limit in decode().
                        let mut payload = Vec::with_capacity(len);
                        payload.extend_from_slice(&chunk[pos..]);
                        pos = chunk.len();
                        self.state = State::Payload {
                            header,
                            buf: payload,
                            fds: frame_fds,
                        };
                    }
                }
                State::Payload { header, buf, fds } => {
                    let need = header.len as usize - buf.len();
                    let n = need.min(chunk.len() - pos);
                    buf.extend_from_slice(&chunk[pos..pos + n]);
                    pos += n;
                    if buf.len() == header.len as usize {
                        let frame = RawFrame {
                            header: *header,
                            payload: std::mem::take(buf),
                            fds: std::mem::take(fds),
                        };
                        out.push_back(frame);
                        self.state = State::between_frames();
                    }
                }
            }
        }
        if let Some(unclaimed) = pending {
            return Err(FrameError::FdsWithoutMessage {
                count: unclaimed.len(),
            });
        }
        Ok(())
    }

    /// Tells the decoder the peer closed the stream.
    ///
    /// # Errors
    ///
    /// [`FrameError::ShortHeader`] or [`FrameError::TruncatedPayload`] if the
    /// stream ended inside a frame; [`FrameError::Poisoned`] after an error.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        let state = std::mem::replace(&mut self.state, State::Poisoned);
        match state {
            State::Header { have: 0, .. } => {
                self.state = State::between_frames();
                Ok(())
            }
            State::Header { have, .. } => Err(FrameError::ShortHeader { have }),
            State::Payload { header, buf, .. } => Err(FrameError::TruncatedPayload {
                msg_type: header.msg_type,
                len: header.len,
                have: buf.len(),
            }),
            State::Poisoned => Err(FrameError::Poisoned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(t: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Header {
            msg_type: t,
            len: payload.len() as u32,
            request_id: 7,
            num_fds: 0,
        }
        .encode()
        .to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn byte_at_a_time_yields_same_frames() {
        let mut bytes = frame(1, b"hello");
        bytes.extend(frame(2, b""));
        bytes.extend(frame(3, &[9; 300]));
        let mut d = FrameDecoder::new(Limits::default());
        let mut out = VecDeque::new();
        for b in &bytes {
            d.feed(std::slice::from_ref(b), Vec::new(), &mut out)
                .unwrap();
        }
        d.finish().unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|f| (f.header.msg_type, f.payload.len()))
            .collect();
        assert_eq!(got, vec![(1, 5), (2, 0), (3, 300)]);
        assert!(out.iter().all(|f| f.header.request_id == 7));
    }

    #[test]
    fn oversize_length_refused_before_allocation() {
        let mut h = Header {
            msg_type: 1,
            len: u32::MAX,
            request_id: 0,
            num_fds: 0,
        }
        .encode()
        .to_vec();
        h.truncate(HEADER_LEN);
        let mut d = FrameDecoder::new(Limits::default());
        let mut out = VecDeque::new();
        let e = d.feed(&h, Vec::new(), &mut out).unwrap_err();
        assert!(matches!(
            e,
            FrameError::PayloadTooLarge { len: u32::MAX, .. }
        ));
        assert_eq!(d.buffered_capacity(), 0);
        assert!(matches!(
            d.feed(b"x", Vec::new(), &mut out),
            Err(FrameError::Poisoned)
        ));
    }

    #[test]
    fn eof_inside_frame_is_an_error() {
        let bytes = frame(1, b"hello");
        let mut d = FrameDecoder::new(Limits::default());
        let mut out = VecDeque::new();
        d.feed(&bytes[..5], Vec::new(), &mut out).unwrap();
        assert!(matches!(
            d.finish(),
            Err(FrameError::ShortHeader { have: 5 })
        ));
        let mut d = FrameDecoder::new(Limits::default());
        d.feed(&bytes[..HEADER_LEN + 2], Vec::new(), &mut out)
            .unwrap();
        assert!(matches!(
            d.finish(),
            Err(FrameError::TruncatedPayload {
                len: 5,
                have: 2,
                ..
            })
        ));
    }
}
