//! Typed IPC over socketpairs, with fd passing.
//!
//! The process family talks over `AF_UNIX` `SOCK_STREAM` socketpairs. Every
//! byte from a peer is treated as hostile:
//!
//! - [`frame`]: a fixed header (type, exact payload length, request id, fd
//!   count), limits checked before any allocation, an incremental decoder
//!   that handles partial reads and binds fds to the frame that declared
//!   them.
//! - [`fdpass`]: `SCM_RIGHTS` with `MSG_CMSG_CLOEXEC`; `MSG_CTRUNC` is an
//!   error; received fds are `OwnedFd`s, closed unless claimed.
//! - [`message`]: one enum per direction ([`ipc_message!`](crate::ipc_message)),
//!   postcard payloads, a fixed fd count per kind.
//! - [`Channel`] (blocking, with non-blocking `try_*` for poll loops) and,
//!   with the `tokio` feature, `AsyncChannel`: each end declares the kinds
//!   it accepts in its current state; an unknown or unexpected kind closes
//!   the channel with an error naming it. [`PeerCred`] from `SO_PEERCRED`.
//! - [`Client`]: request/reply calls from many threads over one channel.
//!
//! The decoder is fuzzed; see `README.md` in this directory.
//!
//! ```
//! use privfork::ipc::{Channel, Limits};
//! use privfork::ipc_message;
//!
//! ipc_message! {
//!     #[derive(Debug, PartialEq)]
//!     pub enum Ask / AskKind { 1 => Ping(u32) }
//! }
//! ipc_message! {
//!     #[derive(Debug, PartialEq)]
//!     pub enum Answer / AnswerKind { 1 => Pong(u32) }
//! }
//!
//! let (mut a, mut b) = Channel::<Ask, Answer>::pair(Limits::default())?;
//! a.send(&Ask::Ping(7))?;
//! let req = b.recv()?;
//! assert_eq!(req.msg, Ask::Ping(7));
//! b.send_with(req.request_id, &Answer::Pong(8), Vec::new())?;
//! assert_eq!(a.recv()?.msg, Answer::Pong(8));
//! # Ok::<(), privfork::ipc::Error>(())
//! ```

pub mod channel;
pub mod client;
pub mod error;
pub mod fdpass;
pub mod frame;
pub mod message;
mod wire;

#[cfg(feature = "tokio")]
pub mod async_channel;

#[cfg(feature = "tokio")]
pub use async_channel::{AsyncChannel, AsyncClient, AsyncReceiver, AsyncSender};
pub use channel::{Channel, PeerCred, Receiver, Sender, peer_cred, socketpair};
pub use client::Client;
pub use error::{CallError, Error, OpenError, RecvError, SendError};
pub use frame::{FrameDecoder, FrameError, HEADER_LEN, Header, Limits, RawFrame};
pub use message::{Bytes, Message, MsgKind};
pub use wire::Received;
