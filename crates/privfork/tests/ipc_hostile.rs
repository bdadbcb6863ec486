//! Hostile peers: each malformed input gives a clear error, closes the
//! channel (the peer sees end of stream, later calls fail), closes any fds
//! that came with it, and leaves the process running.

mod time_limit;
use time_limit::time_limit;

mod ipc_common;

use std::io::{IoSlice, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use ipc_common::*;
use privfork::ipc::fdpass::send_with_fds;
use privfork::ipc::{Channel, FrameError, Header, Limits, RecvError, socketpair};

/// The channel under attack and the raw socket of its hostile peer.
fn victim(limits: Limits) -> (Channel<ToClient, ToServer>, UnixStream) {
    let (raw, ours) = socketpair().unwrap();
    (
        Channel::from_fd(ours, limits).unwrap(),
        UnixStream::from(raw),
    )
}

fn header(msg_type: u32, len: u32, num_fds: u16) -> Vec<u8> {
    Header {
        msg_type,
        len,
        request_id: 1,
        num_fds,
    }
    .encode()
    .to_vec()
}

fn ping_payload(n: u32) -> Vec<u8> {
    postcard::to_stdvec(&ToServer::Ping(n)).unwrap()
}

fn send_raw(peer: &UnixStream, bytes: &[u8], fds: &[OwnedFd]) {
    let n = send_with_fds(peer.as_fd(), &[IoSlice::new(bytes)], fds, false).unwrap();
    assert_eq!(n, bytes.len());
}

/// A pipe whose write end is to be sent; the read end tells, without
/// waiting, whether every copy of the write end has been closed.
struct Tracer {
    read: std::fs::File,
}

impl Tracer {
    fn new() -> (Self, OwnedFd) {
        let (r, w) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )
        .unwrap();
        (Tracer { read: r.into() }, w)
    }

    fn assert_all_closed(mut self) {
        let mut b = [0u8; 1];
        match std::io::Read::read(&mut self.read, &mut b) {
            Ok(0) => {}
            other => panic!("a received fd was leaked (read gave {other:?})"),
        }
    }
}

/// Asserts that `ch` is closed: later receives fail with `Closed` and the
/// peer reads end of stream.
fn assert_closed(mut ch: Channel<ToClient, ToServer>, peer: UnixStream) {
    let e = ch.recv().unwrap_err();
    assert!(matches!(e, RecvError::Closed { .. }), "{e}");
    let e = ch.send(&ToClient::Pong(1)).unwrap_err();
    assert!(
        e.to_string().contains("sending") || e.to_string().contains("closed"),
        "{e}"
    );
    let mut buf = [0u8; 64];
    let mut peer = peer;
    // Drain anything the victim sent before it closed, then expect EOF.
    loop {
        match std::io::Read::read(&mut peer, &mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) => panic!("peer read failed: {e}"),
        }
    }
}

fn expect_err(ch: &mut Channel<ToClient, ToServer>) -> RecvError {
    let e = ch.recv().expect_err("hostile input must be refused");
    assert!(!e.is_peer_closed(), "{e}");
    e
}

#[test]
fn short_header_then_close() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    (&peer).write_all(&header(6, 1, 0)[..7]).unwrap();
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    let e = expect_err(&mut ch);
    assert!(
        matches!(e, RecvError::Frame(FrameError::ShortHeader { have: 7 })),
        "{e:?}"
    );
    assert!(privfork_chain(&e).contains("short header"), "{e}");
    assert_closed(ch, peer);
}

#[test]
fn length_over_the_limit() {
    let _limit = time_limit!();
    let limits = Limits {
        max_payload: 1000,
        max_fds: 4,
    };
    let (mut ch, peer) = victim(limits);
    (&peer).write_all(&header(6, 1001, 0)).unwrap();
    let e = expect_err(&mut ch);
    assert!(
        matches!(
            e,
            RecvError::Frame(FrameError::PayloadTooLarge {
                len: 1001,
                limit: 1000,
                ..
            })
        ),
        "{e:?}"
    );
    assert_closed(ch, peer);
}

#[test]
fn length_longer_than_the_payload_then_close() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    let p = ping_payload(5);
    let mut b = header(6, p.len() as u32 + 10, 0);
    b.extend(&p);
    (&peer).write_all(&b).unwrap();
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    let e = expect_err(&mut ch);
    assert!(
        matches!(e, RecvError::Frame(FrameError::TruncatedPayload { have, .. }) if have == p.len()),
        "{e:?}"
    );
    assert_closed(ch, peer);
}

#[test]
fn length_longer_than_the_message() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    let mut p = ping_payload(5);
    p.extend([0, 0]);
    let mut b = header(6, p.len() as u32, 0);
    b.extend(&p);
    (&peer).write_all(&b).unwrap();
    let e = expect_err(&mut ch);
    assert!(
        matches!(
            e,
            RecvError::TrailingBytes {
                name: "Ping",
                extra: 2
            }
        ),
        "{e:?}"
    );
    assert_closed(ch, peer);
}

#[test]
fn length_shorter_than_the_message() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    let p = ping_payload(u32::MAX);
    let mut b = header(6, 2, 0);
    b.extend(&p[..2]);
    (&peer).write_all(&b).unwrap();
    let e = expect_err(&mut ch);
    assert!(
        matches!(e, RecvError::BadPayload { name: "Ping", .. }),
        "{e:?}"
    );
    assert_closed(ch, peer);
}

#[test]
fn fds_on_a_frame_that_declares_none() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    let (tracer, w) = Tracer::new();
    let p = ping_payload(1);
    let mut b = header(6, p.len() as u32, 0);
    b.extend(&p);
    send_raw(&peer, &b, &[w]);
    let e = expect_err(&mut ch);
    assert!(
        matches!(
            e,
            RecvError::Frame(FrameError::FdCountMismatch {
                declared: 0,
                received: 1,
                ..
            })
        ),
        "{e:?}"
    );
    tracer.assert_all_closed();
    assert_closed(ch, peer);
}

#[test]
fn fds_in_the_middle_of_a_payload() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    let (tracer, w) = Tracer::new();
    let p = ping_payload(u32::MAX);
    let mut b = header(6, p.len() as u32, 0);
    b.extend(&p[..1]);
    send_raw(&peer, &b, &[]);
    // The victim consumes the first part, so the rest is a separate read.
    assert!(ch.try_recv().unwrap().is_none());
    send_raw(&peer, &p[1..], &[w]);
    let e = expect_err(&mut ch);
    assert!(
        matches!(
            e,
            RecvError::Frame(FrameError::FdsWithoutMessage { count: 1 })
        ),
        "{e:?}"
    );
    tracer.assert_all_closed();
    assert_closed(ch, peer);
}

#[test]
fn declared_fds_that_never_arrive() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    let p = postcard::to_stdvec(&ToServer::PassFile { name: "x".into() }).unwrap();
    let mut b = header(3, p.len() as u32, 1);
    b.extend(&p);
    send_raw(&peer, &b, &[]);
    let e = expect_err(&mut ch);
    assert!(
        matches!(
            e,
            RecvError::Frame(FrameError::FdCountMismatch {
                declared: 1,
                received: 0,
                ..
            })
        ),
        "{e:?}"
    );
    assert_closed(ch, peer);
}

#[test]
fn fds_on_a_kind_that_carries_none() {
    let _limit = time_limit!();
    // Frame-level declaration matches, but Ping carries no fds.
    let (mut ch, peer) = victim(Limits::default());
    let (tracer, w) = Tracer::new();
    let p = ping_payload(1);
    let mut b = header(6, p.len() as u32, 1);
    b.extend(&p);
    send_raw(&peer, &b, &[w]);
    let e = expect_err(&mut ch);
    assert!(
        matches!(
            e,
            RecvError::FdDeclaration {
                name: "Ping",
                expected: 0,
                declared: 1
            }
        ),
        "{e:?}"
    );
    tracer.assert_all_closed();
    assert_closed(ch, peer);
}

#[test]
fn one_fd_over_the_limit() {
    let _limit = time_limit!();
    let limits = Limits {
        max_payload: 1000,
        max_fds: 2,
    };
    let (mut ch, peer) = victim(limits);
    let (tracer, w) = Tracer::new();
    let mut fds = fds_for(2);
    fds.push(w);
    let mut b = header(4, 1, 3);
    b.push(3); // PassTwo's variant index
    send_raw(&peer, &b, &fds);
    drop(fds);
    let e = expect_err(&mut ch);
    assert!(
        matches!(
            e,
            RecvError::Frame(FrameError::TooManyFdsReceived {
                received: 3,
                limit: 2
            })
        ),
        "{e:?}"
    );
    tracer.assert_all_closed();
    assert_closed(ch, peer);
}

#[test]
/// More fds than the limit arrive whole (the receive buffer has room for
/// the kernel's most, 253), are refused, and are all closed by the
/// receiver itself — never left for the kernel to close.
fn far_too_many_fds_are_refused_and_closed() {
    let _limit = time_limit!();
    let limits = Limits {
        max_payload: 1000,
        max_fds: 2,
    };
    let (mut ch, peer) = victim(limits);
    let (tracer, w) = Tracer::new();
    let mut fds = fds_for(40);
    fds.insert(0, w);
    let mut b = header(4, 1, 41);
    b.push(3);
    send_raw(&peer, &b, &fds);
    drop(fds);
    let e = expect_err(&mut ch);
    assert!(
        matches!(
            e,
            RecvError::Frame(privfork::ipc::FrameError::TooManyFdsReceived {
                received: 41,
                limit: 2
            })
        ),
        "{e:?}"
    );
    tracer.assert_all_closed();
    assert_closed(ch, peer);
}

#[test]
fn unknown_type() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    (&peer).write_all(&header(99, 0, 0)).unwrap();
    let e = expect_err(&mut ch);
    assert!(matches!(e, RecvError::UnknownType { code: 99 }), "{e:?}");
    assert!(e.to_string().contains("unknown message type 99"), "{e}");
    assert_closed(ch, peer);
}

#[test]
fn type_not_allowed_in_this_state() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    ch.set_accepting("await-hello", &[ToServerKind::Hello]);
    let p = ping_payload(1);
    let mut b = header(6, p.len() as u32, 0);
    b.extend(&p);
    (&peer).write_all(&b).unwrap();
    let e = expect_err(&mut ch);
    assert!(
        matches!(
            e,
            RecvError::NotAllowed {
                name: "Ping",
                state: "await-hello",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "message Ping (type 6) is not allowed in state \"await-hello\""
    );
    assert_closed(ch, peer);
}

#[test]
fn allowed_kinds_follow_the_state() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    ch.set_accepting("await-hello", &[ToServerKind::Hello]);
    let send = |m: &ToServer| {
        let p = postcard::to_stdvec(m).unwrap();
        let code =
            <ToServer as privfork::ipc::Message>::describe(privfork::ipc::Message::kind(m)).code;
        let mut b = header(code, p.len() as u32, 0);
        b.extend(&p);
        (&peer).write_all(&b).unwrap();
    };
    send(&ToServer::Hello { generation: 1 });
    assert_eq!(ch.recv().unwrap().msg, ToServer::Hello { generation: 1 });
    ch.set_accepting("serving", &[ToServerKind::Ping, ToServerKind::Shutdown]);
    send(&ToServer::Ping(2));
    assert_eq!(ch.recv().unwrap().msg, ToServer::Ping(2));
    send(&ToServer::Hello { generation: 2 });
    let e = expect_err(&mut ch);
    assert!(
        matches!(
            e,
            RecvError::NotAllowed {
                name: "Hello",
                state: "serving",
                ..
            }
        ),
        "{e:?}"
    );
    assert_closed(ch, peer);
}

#[test]
fn garbage_payload() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    let mut b = header(2, 12, 0);
    b.extend([0xff; 12]);
    (&peer).write_all(&b).unwrap();
    let e = expect_err(&mut ch);
    assert!(
        matches!(e, RecvError::BadPayload { name: "ForkAs", .. }),
        "{e:?}"
    );
    assert_closed(ch, peer);
}

#[test]
fn header_and_payload_disagree_on_the_kind() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    let p = ping_payload(1);
    let mut b = header(7, p.len() as u32, 0); // says Shutdown
    b.extend(&p);
    (&peer).write_all(&b).unwrap();
    let e = expect_err(&mut ch);
    assert!(
        matches!(
            e,
            RecvError::KindMismatch {
                header: "Shutdown",
                payload: "Ping"
            }
        ),
        "{e:?}"
    );
    assert_closed(ch, peer);
}

#[test]
fn wrong_header_version() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    let mut b = header(6, 0, 0);
    b[18] = 0xee;
    (&peer).write_all(&b).unwrap();
    let e = expect_err(&mut ch);
    assert!(
        matches!(e, RecvError::Frame(FrameError::BadVersion { .. })),
        "{e:?}"
    );
    assert_closed(ch, peer);
}

#[test]
fn peer_closing_mid_frame() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    let (tracer, w) = Tracer::new();
    let p = postcard::to_stdvec(&ToServer::PassFile {
        name: "a long enough name".into(),
    })
    .unwrap();
    let mut b = header(3, p.len() as u32, 1);
    b.extend(&p[..4]);
    send_raw(&peer, &b, &[w]);
    drop(peer);
    let e = expect_err(&mut ch);
    assert!(
        matches!(
            e,
            RecvError::Frame(FrameError::TruncatedPayload { have: 4, .. })
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("invalid frame"), "{e}");
    tracer.assert_all_closed();
    let e = ch.recv().unwrap_err();
    assert!(matches!(e, RecvError::Closed { .. }), "{e}");
}

#[test]
fn a_clean_close_between_frames_is_not_an_error() {
    let _limit = time_limit!();
    let (mut ch, peer) = victim(Limits::default());
    let p = ping_payload(1);
    let mut b = header(6, p.len() as u32, 0);
    b.extend(&p);
    (&peer).write_all(&b).unwrap();
    drop(peer);
    assert_eq!(ch.recv().unwrap().msg, ToServer::Ping(1));
    assert!(ch.recv().unwrap_err().is_peer_closed());
}

#[test]
fn valid_frames_before_an_error_in_the_same_read_are_dropped_too() {
    let _limit = time_limit!();
    // After a violation nothing from that peer is trusted: the good frame
    // that shared the read with the bad one is not delivered.
    let (mut ch, peer) = victim(Limits::default());
    let p = ping_payload(1);
    let mut b = header(6, p.len() as u32, 0);
    b.extend(&p);
    b.extend(header(6, u32::MAX, 0));
    (&peer).write_all(&b).unwrap();
    let e = expect_err(&mut ch);
    assert!(
        matches!(e, RecvError::Frame(FrameError::PayloadTooLarge { .. })),
        "{e:?}"
    );
    assert_closed(ch, peer);
}

#[test]
fn the_process_keeps_serving_after_hostile_peers() {
    let _limit = time_limit!();
    // Break a channel, then use a fresh one: the process is unaffected.
    let (mut ch, peer) = victim(Limits::default());
    (&peer).write_all(&header(1234, 0, 0)).unwrap();
    assert!(matches!(
        expect_err(&mut ch),
        RecvError::UnknownType { code: 1234 }
    ));
    let (mut a, mut b) = Channel::<ToServer, ToClient>::pair(Limits::default()).unwrap();
    a.send(&ToServer::Ping(9)).unwrap();
    assert_eq!(b.recv().unwrap().msg, ToServer::Ping(9));
}

fn privfork_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
