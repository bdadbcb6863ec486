//! privfork — OpenBSD-style privilege separation for Rust services on Linux.
//!
//! The pieces, each in a module named after the concept it wraps:
//!
//! - [`identity`]: users and groups resolved by name or numeric id.
//! - [`privdrop`]: the ordered, verified, fail-closed privilege drop.
//! - [`fork_as`](mod@fork_as): run a function as another user in a freshly forked child
//!   and get its serialized result back over a pipe.
//! - [`fork_server`]: fork-as for multithreaded programs, through a small
//!   single-threaded server process started before any thread.
//! - [`sandbox`]: pledge and unveil on Linux (seccomp-bpf promises,
//!   Landlock unveiled paths and ports, no_new_privs, capabilities,
//!   rlimits; native calls on OpenBSD), and [`sandbox::run`], what the
//!   `privfork run` command is: run any program as a user under promises
//!   and unveiled paths, executed once and never again, with a clean
//!   environment, resource limits and a deadline
//!   ([`sandbox::resources`]), an optional empty network namespace, its
//!   output relayed, signals passed on and everything it started ended
//!   with it.
//! - [`setup`]: the one ordered, fail-closed routine that sets up every
//!   child privfork starts (fork-as, the fork server, `privfork run`, the
//!   family's members).
//! - [`process`]: a child process handle on a pidfd (wait, kill, exit
//!   status; never a reused pid).
//! - [`event`]: the one poll loop every waiting part uses (fds, pidfds, a
//!   signalfd, deadlines).
//! - [`listen`]: listening sockets bound from configuration or adopted from
//!   systemd, handed to children at fixed fds by name.
//! - [`family`]: the process family: a privileged main supervising
//!   members started by exec, each under its own user and sandbox, from a
//!   table of roles.
//! - [`trusted_path`]: whether someone less privileged could swap what a
//!   path names between a check and its use.
//! - [`ipc`]: framed, typed channels over unix socketpairs with fd passing
//!   (blocking, and async with the `tokio` feature).
//! - [`exe`]: the binary pinned at start, and children spawned from it by
//!   exec with fds at fixed numbers and their role in argv.
//! - [`inherit`]: adopting an fd that came through exec, by number, checked.
//!
//! All `unsafe` code lives in the private `sys` module; every other module is
//! compiled under `#![deny(unsafe_code)]`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod event;
pub mod exe;
pub mod family;
pub mod fork_as;
pub mod fork_server;
pub mod identity;
pub mod inherit;
pub mod ipc;
pub mod listen;
pub mod privdrop;
pub mod process;
mod reload;
pub mod sandbox;
pub mod serve;
pub mod setup;
mod sys;
pub mod trusted_path;

pub use fork_as::{ForkAs, ForkAsError, fork_as};
pub use fork_server::{ForkServer, ForkServerError};
pub use identity::{Identity, ResolveError};
pub use privdrop::{DropOptions, PrivDropError};
