//! The fork server's wire protocol: one request enum, one reply enum.
//!
//! Requests name a function and a user as text; the server maps the pair
//! to a function and an identity it resolved at startup, and runs nothing
//! else. Arguments and results are opaque postcard bytes here: the server
//! never decodes a function's argument (the child does) and forwards the
//! child's result bytes without decoding them (the caller does).

use serde::{Deserialize, Serialize};

use crate::fork_as::WireForkAsError;
use crate::ipc::Bytes;
use crate::ipc_message;

ipc_message! {
    /// Caller to fork server.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Request / RequestKind {
        /// Run a function as a user.
        1 => Call(CallRequest),
        /// Counters of the server.
        2 => Stats,
    }
}

/// A fork-as request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRequest {
    /// The registered function's name.
    pub function: String,
    /// The user, exactly as the server's `allow` named it.
    pub user: String,
    /// The postcard-encoded argument.
    pub args: Bytes,
    /// The caller's deadline in milliseconds (capped by the server).
    pub timeout_ms: u64,
    /// The caller's result limit in bytes (capped by the server).
    pub max_result: u64,
}

ipc_message! {
    /// Fork server to caller.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Reply / ReplyKind {
        /// The outcome of a `Call`.
        1 => Outcome(Result<Bytes, CallFailure>),
        /// The answer to `Stats`.
        2 => Stats(ServerStats),
    }
}

/// Why a call did not produce a result, as sent by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallFailure {
    /// The (function, user) pair is not allowed; nothing was forked.
    Refused {
        /// What was not allowed.
        reason: String,
    },
    /// The server runs its maximum number of children already.
    Busy {
        /// That maximum.
        max_children: u32,
    },
    /// The child could not decode the arguments as the function's type.
    BadArguments(String),
    /// Fork-as failed (panic, signal, timeout, size, drop, ...).
    ForkAs(WireForkAsError),
}

/// Counters of a fork server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServerStats {
    /// Children forked since start.
    pub forks: u64,
    /// Calls refused by the policy (nothing forked).
    pub refused: u64,
    /// Calls refused because the server was busy.
    pub busy: u64,
    /// Children running now.
    pub running: u32,
}
