//! What main and a member of the family say to each other.
//!
//! Every byte from a child is hostile to main: the frames have a size
//! limit ([`LIMITS`]), and main accepts in each state of a child only the
//! kinds of that state ([`accepted`]) — a one-shot kind (`Ready`,
//! `Stopped`) is accepted once; anything else closes the channel, and the
//! child is killed and restarted.

use crate::ipc::{Bytes, Limits};
use crate::ipc_message;

ipc_message! {
    /// Child to main.
    #[derive(Debug, PartialEq)]
    pub enum ToMain / ToMainKind {
        /// Set up and serving (one-shot).
        1 => Ready,
        /// Asked to stop: in-flight work is done, the child exits now
        /// (one-shot).
        2 => Stopped,
        /// A message of the application's own, for roles whose row allows
        /// it. Main passes it to the application's handler; main itself
        /// never parses it.
        3 => App(Bytes),
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
    }
}

/// Frame limits of the family channel: small messages only.
pub const LIMITS: Limits = Limits {
    max_payload: 64 << 10,
    max_fds: 0,
};

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

/// The kinds main accepts from a child in `state`; `App` only if the
/// role's row allows application messages.
pub fn accepted(state: ChildState, app: bool) -> &'static [ToMainKind] {
    use ToMainKind::*;
    match (state, app) {
        (ChildState::Starting, _) => &[Ready],
        (ChildState::Running, true) => &[App],
        (ChildState::Running, false) => &[],
        (ChildState::Stopping, true) => &[Stopped, App],
        (ChildState::Stopping, false) => &[Stopped],
        (ChildState::Stopped, _) => &[],
    }
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
        assert_eq!(accepted(ChildState::Starting, true), &[Ready]);
        // After Ready, Ready is never accepted again.
        for s in [
            ChildState::Running,
            ChildState::Stopping,
            ChildState::Stopped,
        ] {
            assert!(!accepted(s, true).contains(&Ready), "{s:?}");
        }
        assert!(!accepted(ChildState::Stopped, true).contains(&Stopped));
        assert!(!accepted(ChildState::Running, false).contains(&App));
    }
}
