//! A test protocol shaped like the fork server's: requests naming a
//! registered function, a user, a deadline, a size limit and opaque bytes,
//! plus messages that carry fds.
#![allow(dead_code)]

use std::os::fd::{AsFd, OwnedFd};

use privfork::ipc::Bytes;
use privfork::ipc_message;
use serde::{Deserialize, Serialize};

/// Who a function should run as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserSpec {
    /// By name.
    Name(String),
    /// By numeric uid/gid.
    Id { uid: u32, gid: u32 },
}

/// A typed failure carried back to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForkFailure {
    Refused(String),
    Timeout,
    Oversize { limit: u64 },
}

ipc_message! {
    /// Caller to server.
    #[derive(Debug, Clone, PartialEq)]
    pub enum ToServer / ToServerKind {
        1 => Hello { generation: u64 },
        2 => ForkAs {
            function: String,
            user: UserSpec,
            deadline_ms: u64,
            size_limit: u64,
            payload: Bytes,
        },
        3 => PassFile { name: String } + fds 1,
        4 => PassTwo + fds 2,
        5 => Connect + fds 1,
        6 => Ping(u32),
        7 => Shutdown,
    }
}

ipc_message! {
    /// Server to caller.
    #[derive(Debug, Clone, PartialEq)]
    pub enum ToClient / ToClientKind {
        1 => Welcome { pid: i32 },
        2 => ForkResult(Result<Bytes, ForkFailure>),
        3 => FileBack + fds 1,
        4 => Pong(u32),
    }
}

/// Number of fds a message kind needs in these tests, as fresh fds.
pub fn fds_for(n: u16) -> Vec<OwnedFd> {
    (0..n)
        .map(|_| {
            std::fs::File::open("/dev/null")
                .expect("open /dev/null")
                .into()
        })
        .collect()
}

/// `(st_dev, st_ino)` of an open file.
pub fn identity(fd: impl AsFd) -> (u64, u64) {
    let st = rustix::fs::fstat(fd).expect("fstat");
    (st.st_dev, st.st_ino)
}

/// A unique path under the temp dir.
pub fn temp_path(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("privfork-ipc-{}-{tag}-{n}", std::process::id()))
}
