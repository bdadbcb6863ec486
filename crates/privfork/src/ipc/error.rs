//! Errors of the IPC operations, one enum per operation, and an umbrella.

use std::io;

use super::fdpass::RecvFdsError;
use super::frame::FrameError;

/// Why a channel could not be created or adopted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)` failed.
    #[error("socketpair(AF_UNIX, SOCK_STREAM) failed")]
    Socketpair {
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// Inspecting or configuring the adopted fd failed.
    #[error("{what} on the channel fd failed")]
    Fd {
        /// The call that failed.
        what: &'static str,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// The fd is not a unix stream socket.
    #[error("the channel fd is not an AF_UNIX SOCK_STREAM socket ({found})")]
    NotUnixStream {
        /// What it is instead.
        found: String,
    },
    /// Registering the fd with the tokio reactor failed (no runtime?).
    #[error("registering the channel fd with the tokio reactor failed")]
    Reactor {
        /// The error tokio returned.
        #[source]
        source: io::Error,
    },
}

/// Why receiving a message failed. Every variant except
/// [`RecvError::PeerClosed`] and [`RecvError::Closed`] is a protocol
/// violation or I/O failure that has just closed the channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// `recvmsg` failed.
    #[error("receiving on the channel failed")]
    Io {
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// Ancillary data was truncated (more fds than the limit).
    #[error(transparent)]
    Fds(RecvFdsError),
    /// The byte stream is not a valid frame sequence.
    #[error("invalid frame from peer")]
    Frame(#[from] FrameError),
    /// The header's type code names no message of this direction.
    #[error("unknown message type {code} from peer")]
    UnknownType {
        /// The code received.
        code: u32,
    },
    /// The message kind exists but is not accepted in the current state.
    #[error("message {name} (type {code}) is not allowed in state {state:?}")]
    NotAllowed {
        /// Kind name.
        name: &'static str,
        /// Kind code.
        code: u32,
        /// Name of the receiver's current state.
        state: &'static str,
    },
    /// The header declares a different fd count than the kind carries.
    #[error("message {name} carries {expected} fds but its header declares {declared}")]
    FdDeclaration {
        /// Kind name.
        name: &'static str,
        /// Fds the kind carries.
        expected: u16,
        /// Fds the header declared.
        declared: u16,
    },
    /// The payload is not a valid postcard encoding of the message.
    #[error("payload of message {name} is not a valid encoding")]
    BadPayload {
        /// Kind name from the header.
        name: &'static str,
        /// postcard's complaint.
        #[source]
        source: postcard::Error,
    },
    /// The payload is longer than its encoded message.
    #[error("payload of message {name} has {extra} bytes after the message")]
    TrailingBytes {
        /// Kind name.
        name: &'static str,
        /// Unused bytes.
        extra: usize,
    },
    /// The header says one kind, the payload encodes another.
    #[error("header says message {header} but the payload encodes {payload}")]
    KindMismatch {
        /// Kind named by the header.
        header: &'static str,
        /// Kind found in the payload.
        payload: &'static str,
    },
    /// The peer closed the channel cleanly between messages.
    #[error("peer closed the channel")]
    PeerClosed,
    /// The channel was closed earlier, by an error or by the peer.
    #[error("channel already closed: {reason}")]
    Closed {
        /// Why it was closed.
        reason: String,
    },
}

impl RecvError {
    /// True when the peer simply hung up between messages.
    #[must_use]
    pub fn is_peer_closed(&self) -> bool {
        matches!(self, RecvError::PeerClosed)
    }
}

impl From<RecvFdsError> for RecvError {
    fn from(e: RecvFdsError) -> Self {
        match e {
            RecvFdsError::Io { source } => RecvError::Io { source },
            other => RecvError::Fds(other),
        }
    }
}

/// Why sending a message failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// postcard could not encode the message.
    #[error("encoding message {name} failed")]
    Encode {
        /// Kind name.
        name: &'static str,
        /// postcard's complaint.
        #[source]
        source: postcard::Error,
    },
    /// The encoded message exceeds the channel's payload limit.
    #[error("message {name} encodes to {len} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Kind name.
        name: &'static str,
        /// Encoded length.
        len: usize,
        /// The limit.
        limit: u32,
    },
    /// The number of fds given does not match what the kind carries.
    #[error("message {name} carries {expected} fds, {given} were given")]
    FdCount {
        /// Kind name.
        name: &'static str,
        /// Fds the kind carries.
        expected: u16,
        /// Fds passed to send.
        given: usize,
    },
    /// The kind carries more fds than the channel allows per message.
    #[error("message {name} carries {count} fds, over the channel limit of {limit}")]
    TooManyFds {
        /// Kind name.
        name: &'static str,
        /// Fd count.
        count: usize,
        /// The limit.
        limit: u16,
    },
    /// `sendmsg` failed (`EPIPE`: the peer is gone).
    #[error("sending on the channel failed")]
    Io {
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// The channel was closed earlier.
    #[error("channel already closed: {reason}")]
    Closed {
        /// Why it was closed.
        reason: String,
    },
}

/// Why a request/reply call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// Sending the request failed.
    #[error("sending the request failed")]
    Send(#[from] SendError),
    /// Receiving the reply failed.
    #[error("receiving the reply failed")]
    Recv(#[from] RecvError),
    /// A reply came for no outstanding request (a confused or hostile peer);
    /// the channel is closed.
    #[error("reply with request id {request_id} matches no outstanding request")]
    UnexpectedReply {
        /// The id in the reply.
        request_id: u64,
    },
    /// No reply came before the call's deadline (the channel stays open; a
    /// late reply is dropped).
    #[error("no reply before the deadline")]
    TimedOut,
    /// The channel was closed earlier, possibly while serving another call.
    #[error("channel closed: {reason}")]
    Closed {
        /// Why it was closed.
        reason: String,
    },
}

/// Any IPC error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`OpenError`].
    #[error(transparent)]
    Open(#[from] OpenError),
    /// See [`RecvError`].
    #[error(transparent)]
    Recv(#[from] RecvError),
    /// See [`SendError`].
    #[error(transparent)]
    Send(#[from] SendError),
    /// See [`CallError`].
    #[error(transparent)]
    Call(#[from] CallError),
}
