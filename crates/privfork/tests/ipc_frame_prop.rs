//! Property tests of the frame decoder: random bytes in random pieces never
//! make it panic or hold more than the limit, and valid frames decode the
//! same however the stream is split.

mod time_limit;
use time_limit::time_limit;

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use privfork::ipc::{FrameDecoder, HEADER_LEN, Header, Limits, RawFrame};
use proptest::prelude::*;

const LIMITS: Limits = Limits {
    max_payload: 4096,
    max_fds: 4,
};

/// Cuts `bytes` at the given fractional points.
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| {
            if bytes.is_empty() {
                0
            } else {
                c % (bytes.len() + 1)
            }
        })
        .collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

fn encode(t: u32, id: u64, payload: &[u8], nfds: u16) -> Vec<u8> {
    let mut v = Header {
        msg_type: t,
        len: payload.len() as u32,
        request_id: id,
        num_fds: nfds,
    }
    .encode()
    .to_vec();
    v.extend_from_slice(payload);
    v
}

fn devnull(n: u16) -> Vec<OwnedFd> {
    (0..n)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect()
}

proptest! {
    #[test]
    fn random_bytes_in_random_pieces_never_panic_or_exceed_the_limit(
        bytes in proptest::collection::vec(any::<u8>(), 0..3 * HEADER_LEN + 2 * 4096),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        // Bias some headers into range so payload states are reached.
        patch_len in proptest::option::of(0u32..6000),
    ) {
        let _limit = time_limit!();
        let mut bytes = bytes;
        if let Some(l) = patch_len && bytes.len() >= HEADER_LEN {
            bytes[4..8].copy_from_slice(&l.to_le_bytes());
            bytes[16..20].copy_from_slice(&[0, 0, 1, 0]);
        }
        let mut d = FrameDecoder::new(LIMITS);
        let mut out = VecDeque::new();
        for piece in split(&bytes, &cuts) {
            let r = d.feed(piece, Vec::new(), &mut out);
            prop_assert!(d.buffered_capacity() <= LIMITS.max_payload as usize);
            for f in &out {
                prop_assert_eq!(f.payload.len(), f.header.len as usize);
                prop_assert!(f.payload.capacity() <= LIMITS.max_payload as usize);
                prop_assert!(f.fds.is_empty());
            }
            if r.is_err() {
                break;
            }
        }
        let _ = d.finish();
    }

    #[test]
    fn valid_frames_decode_identically_under_any_split(
        frames in proptest::collection::vec(
            (any::<u32>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..600)),
            0..12,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let _limit = time_limit!();
        let mut stream = Vec::new();
        for (t, id, p) in &frames {
            stream.extend(encode(*t, *id, p, 0));
        }
        let mut d = FrameDecoder::new(LIMITS);
        let mut out = VecDeque::new();
        for piece in split(&stream, &cuts) {
            d.feed(piece, Vec::new(), &mut out).unwrap();
        }
        prop_assert!(d.finish().is_ok());
        let got: Vec<(u32, u64, Vec<u8>)> = out
            .into_iter()
            .map(|f: RawFrame| (f.header.msg_type, f.header.request_id, f.payload))
            .collect();
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn fds_bind_to_the_frame_that_declared_them(
        frames in proptest::collection::vec(
            (0u16..=4, proptest::collection::vec(any::<u8>(), 0..300), any::<usize>()),
            1..8,
        ),
        glue_before in any::<bool>(),
    ) {
        let _limit = time_limit!();
        // As an honest sender and the kernel deliver them: a frame with fds
        // is sent alone, and its fds come with the read holding its first
        // byte. Earlier frames without fds may share that read (the kernel
        // glues earlier plain segments in front of it), so the fds belong to
        // the last frame beginning in the read.
        let mut d = FrameDecoder::new(LIMITS);
        let mut out = VecDeque::new();
        let mut glued: Vec<u8> = Vec::new();
        for (i, (nfds, payload, cut)) in frames.iter().enumerate() {
            let bytes = encode(i as u32, 0, payload, *nfds);
            if *nfds == 0 {
                // Frames without fds may share reads with earlier ones.
                glued.extend(bytes);
                continue;
            }
            let at = 1 + cut % bytes.len();
            if glue_before {
                glued.extend_from_slice(&bytes[..at]);
                d.feed(&glued, devnull(*nfds), &mut out).unwrap();
                glued.clear();
            } else {
                if !glued.is_empty() {
                    d.feed(&glued, Vec::new(), &mut out).unwrap();
                    glued.clear();
                }
                d.feed(&bytes[..at], devnull(*nfds), &mut out).unwrap();
            }
            if at < bytes.len() {
                d.feed(&bytes[at..], Vec::new(), &mut out).unwrap();
            }
        }
        if !glued.is_empty() {
            d.feed(&glued, Vec::new(), &mut out).unwrap();
        }
        prop_assert!(d.finish().is_ok());
        prop_assert_eq!(out.len(), frames.len());
        for (f, (nfds, payload, _)) in out.iter().zip(&frames) {
            prop_assert_eq!(f.fds.len(), usize::from(*nfds));
            prop_assert_eq!(&f.payload, payload);
        }
    }
}
