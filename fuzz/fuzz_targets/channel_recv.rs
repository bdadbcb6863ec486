//! Writes arbitrary bytes into a real socketpair and receives typed
//! messages from it: decoding, kind checks and postcard must never panic,
//! and the channel must end in a message, a clean close or an error.
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;

use libfuzzer_sys::fuzz_target;
use privfork::ipc::{Bytes, Channel, Limits, socketpair};
use privfork::ipc_message;

ipc_message! {
    #[derive(Debug)]
    pub enum In / InKind {
        1 => Hello { generation: u64 },
        2 => Call { function: String, user: Option<u32>, payload: Bytes },
        3 => WithFd(String) + fds 1,
        4 => Nothing,
    }
}

ipc_message! {
    #[derive(Debug)]
    pub enum Out / OutKind { 1 => Unused }
}

fuzz_target!(|data: &[u8]| {
    // Stay under the socket buffer so one write never blocks.
    let data = &data[..data.len().min(100_000)];
    let (raw, ours) = socketpair().unwrap();
    let mut raw = UnixStream::from(raw);
    raw.write_all(data).unwrap();
    drop(raw);
    let limits = Limits { max_payload: 8192, max_fds: 2 };
    let mut ch = Channel::<Out, In>::from_fd(ours, limits).unwrap();
    if data.first().is_some_and(|b| b & 1 == 1) {
        ch.set_accepting("hello", &[InKind::Hello, InKind::Nothing]);
    }
    for _ in 0..10_000 {
        match ch.recv() {
            Ok(m) => assert_eq!(m.fds.len(), 0),
            Err(_) => return,
        }
    }
});
