//! privfork — OpenBSD-style privilege separation for Rust services on Linux.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod ipc;
