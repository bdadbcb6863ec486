//! What main and a member of the family say to each other.
//!
//! Every byte from a child is hostile to main: the frames have a size
//! limit ([`LIMITS`]), and main accepts in each state of a child only the
//! kinds of that state ([`accepted`]; right after a stop,
//! [`accepted_on_stop`]) — a one-shot kind (`Ready`, `Stopped`) is
//! accepted once; anything else closes the channel, and the child is
//! killed and restarted.

use super::status::{FamilyStatus, MemberReport};
use crate::ipc::{Bytes, Limits};
use crate::ipc_message;

ipc_message! {
    /// Child to main.
    #[derive(Debug, PartialEq)]
    pub enum ToMain / ToMainKind {
        /// Set up and serving (one-shot), with what its sandbox enforced.
        1 => Ready(MemberReport),
        /// Asked to stop: in-flight work is done, the child exits now
        /// (one-shot).
        2 => Stopped,
        /// A message of the application's own, for roles whose row allows
        /// it. Main passes it to the application's handler; main itself
        /// never parses it.
        3 => App(Bytes),
        /// Asks for the family's status, for roles whose row allows it;
        /// main answers [`ToChild::Status`].
        4 => StatusQuery,
        /// While draining for a restart, for roles whose row sets
        /// `handover`: an idle connection (one fd: a connected stream
        /// socket) for the next generation, with the bytes already read
        /// from it but not yet answered. Main passes both on, unread.
        5 => Handover(Bytes) + fds 1,
    }
}

ipc_message! {
    /// Main to child.
    #[derive(Debug, PartialEq)]
    pub enum ToChild / ToChildKind {
        /// Stop accepting new work, finish what is in flight within the
        /// deadline (milliseconds), say `Stopped`, exit.
        1 => Stop(u64),
        /// A message of the application's own.
        2 => App(Bytes),
        /// The answer to a [`ToMain::StatusQuery`].
        3 => Status(FamilyStatus),
        /// A restart: a new generation is serving. Stop accepting, hand
        /// idle connections over ([`ToMain::Handover`], roles that do),
        /// finish the rest within the deadline (milliseconds), say
        /// `Stopped`, exit.
        4 => Drain(u64),
        /// A connection handed over by the previous generation (one fd),
        /// with the bytes to read before the socket's own.
        5 => Connection(Bytes) + fds 1,
    }
}

/// Frame limits of the family channel: small messages only.
pub const LIMITS: Limits = Limits {
    max_payload: 64 << 10,
    max_fds: 1,
};

/// Most bytes a handed-over connection may carry (what the old worker had
/// read but not answered); the rest of a frame is the header.
pub const MAX_HANDOVER_BYTES: usize = 60 << 10;

/// The kinds main accepts from a child it has just told to stop, coming
/// from state `from`: the stopping state's, plus `Ready` once if it had
/// not said it yet (its Ready and main's Stop can cross on the channel).
/// After any message main resets the kinds to [`accepted`]`(Stopping)`,
/// which has no `Ready`: it stays one-shot.
pub fn accepted_on_stop(from: ChildState, allowed: Allowed) -> Vec<ToMainKind> {
    let mut kinds = accepted(ChildState::Stopping, allowed);
    if from == ChildState::Starting {
        kinds.push(ToMainKind::Ready);
    }
    kinds
}

/// Where a child is in its life, as main sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildState {
    /// Started, not yet ready.
    Starting,
    /// Said `Ready`.
    Running,
    /// Told to stop.
    Stopping,
    /// Said `Stopped`.
    Stopped,
}

/// What a role's row lets it send beyond the life-cycle messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    /// Application messages ([`ToMain::App`]).
    pub app: bool,
    /// Status queries ([`ToMain::StatusQuery`]).
    pub status: bool,
    /// Connections handed over while draining ([`ToMain::Handover`]).
    pub handover: bool,
}

/// The kinds main accepts from a child in `state`: `App` and
/// `StatusQuery` only while running or stopping, `Handover` only while
/// stopping, and each only if the role's row allows it.
pub fn accepted(state: ChildState, allowed: Allowed) -> Vec<ToMainKind> {
    use ToMainKind::*;
    let mut kinds = Vec::with_capacity(4);
    match state {
        ChildState::Starting => kinds.push(Ready),
        ChildState::Running | ChildState::Stopping => {
            if state == ChildState::Stopping {
                kinds.push(Stopped);
                if allowed.handover {
                    kinds.push(Handover);
                }
            }
            if allowed.app {
                kinds.push(App);
            }
            if allowed.status {
                kinds.push(StatusQuery);
            }
        }
        ChildState::Stopped => {}
    }
    kinds
}

/// The name of a state, for the channel's errors.
pub fn state_name(state: ChildState) -> &'static str {
    match state {
        ChildState::Starting => "starting",
        ChildState::Running => "running",
        ChildState::Stopping => "stopping",
        ChildState::Stopped => "stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_kinds_are_accepted_once() {
        use ToMainKind::*;
        let all = Allowed {
            app: true,
            status: true,
            handover: true,
        };
        let none = Allowed {
            app: false,
            status: false,
            handover: false,
        };
        assert_eq!(accepted(ChildState::Starting, all), &[Ready]);
        // After Ready, Ready is never accepted again.
        for s in [
            ChildState::Running,
            ChildState::Stopping,
            ChildState::Stopped,
        ] {
            assert!(!accepted(s, all).contains(&Ready), "{s:?}");
        }
        assert!(!accepted(ChildState::Stopped, all).contains(&Stopped));
        // What a row does not allow is never accepted.
        for s in [ChildState::Running, ChildState::Stopping] {
            assert!(!accepted(s, none).contains(&App), "{s:?}");
            assert!(!accepted(s, none).contains(&StatusQuery), "{s:?}");
            assert!(accepted(s, all).contains(&StatusQuery), "{s:?}");
        }
        assert!(!accepted(ChildState::Starting, all).contains(&StatusQuery));
        // Connections move only while draining, and only for rows that
        // say so.
        assert!(accepted(ChildState::Stopping, all).contains(&Handover));
        assert!(!accepted(ChildState::Stopping, none).contains(&Handover));
        assert!(!accepted(ChildState::Running, all).contains(&Handover));
        assert!(!accepted(ChildState::Starting, all).contains(&Handover));
        // Stopped before it said Ready: it may still say it (the messages
        // crossed); stopped after: never again.
        assert!(accepted_on_stop(ChildState::Starting, none).contains(&Ready));
        assert!(accepted_on_stop(ChildState::Starting, none).contains(&Stopped));
        assert!(!accepted_on_stop(ChildState::Running, all).contains(&Ready));
        assert!(!accepted(ChildState::Stopping, all).contains(&Ready));
    }
}
