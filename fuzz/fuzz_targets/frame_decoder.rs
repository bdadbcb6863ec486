//! Feeds arbitrary bytes, cut into arbitrary pieces, some with fds attached,
//! to the frame decoder: it must never panic, never hold more than the
//! payload limit, and only emit frames that match their headers.
#![no_main]

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use libfuzzer_sys::fuzz_target;
use privfork::ipc::{FrameDecoder, Limits};

const LIMITS: Limits = Limits {
    max_payload: 4096,
    max_fds: 3,
};

fuzz_target!(|data: &[u8]| {
    // First 8 bytes drive the cutting, the rest is the stream.
    if data.len() < 8 {
        return;
    }
    let (ctl, stream) = data.split_at(8);
    let mut seed = u64::from_le_bytes(ctl.try_into().unwrap()) | 1;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut d = FrameDecoder::new(LIMITS);
    let mut out = VecDeque::new();
    let mut pos = 0;
    while pos < stream.len() {
        let r = next();
        let n = 1 + (r as usize % 64).min(stream.len() - pos - 1);
        let nfds = if r >> 60 == 0 { (r >> 56) as usize % 4 } else { 0 };
        let fds: Vec<OwnedFd> = (0..nfds)
            .filter_map(|_| std::fs::File::open("/dev/null").ok().map(Into::into))
            .collect();
        let res = d.feed(&stream[pos..pos + n], fds, &mut out);
        assert!(d.buffered_capacity() <= LIMITS.max_payload as usize);
        for f in out.drain(..) {
            assert_eq!(f.payload.len(), f.header.len as usize);
            assert!(f.header.len <= LIMITS.max_payload);
            assert_eq!(f.fds.len(), usize::from(f.header.num_fds));
        }
        if res.is_err() {
            return;
        }
        pos += n;
    }
    let _ = d.finish();
});
