//! Blocking channels: round trips of every kind, fd passing, peer
//! credentials, partial and non-blocking I/O, shared and per-call clients.

mod time_limit;
use time_limit::time_limit;

mod ipc_common;

use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::thread;

use ipc_common::*;
use privfork::ipc::{Bytes, Channel, Client, Limits, Message, Receiver, socketpair};

fn sample_to_server(kind: ToServerKind) -> ToServer {
    match kind {
        ToServerKind::Hello => ToServer::Hello { generation: 42 },
        ToServerKind::ForkAs => ToServer::ForkAs {
            function: "render".into(),
            user: UserSpec::Id {
                uid: 65534,
                gid: 65534,
            },
            deadline_ms: 1500,
            size_limit: 1 << 16,
            payload: Bytes(vec![1, 2, 3, 255]),
        },
        ToServerKind::PassFile => ToServer::PassFile { name: "log".into() },
        ToServerKind::PassTwo => ToServer::PassTwo,
        ToServerKind::Connect => ToServer::Connect,
        ToServerKind::Ping => ToServer::Ping(u32::MAX),
        ToServerKind::Shutdown => ToServer::Shutdown,
    }
}

fn sample_to_client(kind: ToClientKind) -> ToClient {
    match kind {
        ToClientKind::Welcome => ToClient::Welcome { pid: -1 },
        ToClientKind::ForkResult => ToClient::ForkResult(Err(ForkFailure::Oversize { limit: 9 })),
        ToClientKind::FileBack => ToClient::FileBack,
        ToClientKind::Pong => ToClient::Pong(0),
    }
}

#[test]
fn every_kind_round_trips_both_ways_with_its_fds() {
    let _limit = time_limit!();
    let (mut client, mut server) = Channel::<ToServer, ToClient>::pair(Limits::default()).unwrap();
    for (i, kind) in ToServer::KINDS.iter().enumerate() {
        let msg = sample_to_server(*kind);
        let nfds = ToServer::describe(*kind).fds;
        client
            .send_with(i as u64 + 100, &msg, fds_for(nfds))
            .unwrap();
        let got = server.recv().unwrap();
        assert_eq!(got.msg, msg);
        assert_eq!(got.request_id, i as u64 + 100);
        assert_eq!(got.fds.len(), usize::from(nfds));
    }
    for kind in ToClient::KINDS {
        let msg = sample_to_client(*kind);
        let nfds = ToClient::describe(*kind).fds;
        server.send_fds(&msg, fds_for(nfds)).unwrap();
        let got = client.recv().unwrap();
        assert_eq!(got.msg, msg);
        assert_eq!(got.fds.len(), usize::from(nfds));
    }
    // A fork-as result at the size of a real reply.
    let big = ToClient::ForkResult(Ok(Bytes((0..200_000u32).map(|i| i as u8).collect())));
    server.send(&big).unwrap();
    assert_eq!(client.recv().unwrap().msg, big);
}

#[test]
fn fds_arrive_open_cloexec_and_refer_to_the_same_file() {
    let _limit = time_limit!();
    let path = temp_path("same-file");
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.write_all(b"before").unwrap();
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let sent_ids = [identity(&file), identity(&r)];

    let (mut a, mut b) = Channel::<ToServer, ToClient>::pair(Limits::default()).unwrap();
    let dup: OwnedFd = file.as_fd().try_clone_to_owned().unwrap();
    a.send_fds(&ToServer::PassTwo, vec![dup, r]).unwrap();
    let got = b.recv().unwrap();
    assert_eq!(got.msg, ToServer::PassTwo);
    assert_eq!(got.fds.len(), 2);
    for (fd, want) in got.fds.iter().zip(sent_ids) {
        let flags = rustix::io::fcntl_getfd(fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC), "not CLOEXEC");
        assert_eq!(identity(fd), want);
    }
    // Same open file description: writes through one show through the other.
    let mut fds = got.fds.into_iter();
    let mut received = std::fs::File::from(fds.next().unwrap());
    received.write_all(b"+after").unwrap();
    file.rewind().unwrap();
    let mut all = String::new();
    file.read_to_string(&mut all).unwrap();
    assert_eq!(all, "before+after");
    let mut pipe_r = std::fs::File::from(fds.next().unwrap());
    let mut w = std::fs::File::from(w);
    w.write_all(b"x").unwrap();
    drop(w);
    let mut s = String::new();
    pipe_r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "x");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn peer_credentials_name_this_process() {
    let _limit = time_limit!();
    let (a, b) = Channel::<ToServer, ToClient>::pair(Limits::default()).unwrap();
    for c in [a.peer_cred().unwrap(), b.peer_cred().unwrap()] {
        assert_eq!(c.pid, std::process::id() as i32);
        assert_eq!(c.uid, rustix::process::geteuid().as_raw());
        assert_eq!(c.gid, rustix::process::getegid().as_raw());
    }
}

#[test]
fn adopting_a_non_socket_is_refused() {
    let _limit = time_limit!();
    let f: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let e = Channel::<ToServer, ToClient>::from_fd(f, Limits::default()).unwrap_err();
    assert!(e.to_string().contains("getsockopt"), "{e}");
    let (dgram, _other) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let e = Channel::<ToServer, ToClient>::from_fd(dgram, Limits::default()).unwrap_err();
    assert!(e.to_string().contains("not an AF_UNIX SOCK_STREAM"), "{e}");
}

#[test]
fn try_recv_returns_none_until_a_partial_frame_completes() {
    let _limit = time_limit!();
    let (raw, ours) = socketpair().unwrap();
    let mut ch = Channel::<ToClient, ToServer>::from_fd(ours, Limits::default()).unwrap();
    assert!(ch.try_recv().unwrap().is_none());
    let bytes = encode(&ToServer::Ping(77), 5);
    let raw = std::os::unix::net::UnixStream::from(raw);
    (&raw).write_all(&bytes[..3]).unwrap();
    assert!(ch.try_recv().unwrap().is_none());
    (&raw).write_all(&bytes[3..bytes.len() - 1]).unwrap();
    assert!(ch.try_recv().unwrap().is_none());
    (&raw).write_all(&bytes[bytes.len() - 1..]).unwrap();
    let got = ch.try_recv().unwrap().expect("complete frame");
    assert_eq!((got.msg, got.request_id), (ToServer::Ping(77), 5));
}

/// A frame as the channel would write it, for raw-socket tests.
fn encode(msg: &ToServer, request_id: u64) -> Vec<u8> {
    let payload = postcard::to_stdvec(msg).unwrap();
    let mut v = privfork::ipc::Header {
        msg_type: ToServer::describe(msg.kind()).code,
        len: payload.len() as u32,
        request_id,
        num_fds: 0,
    }
    .encode()
    .to_vec();
    v.extend(payload);
    v
}

#[test]
fn nonblocking_sender_queues_when_the_socket_is_full_and_flushes_later() {
    let _limit = time_limit!();
    let (a, b) = socketpair().unwrap();
    let fl = rustix::fs::fcntl_getfl(&a).unwrap();
    rustix::fs::fcntl_setfl(&a, fl | rustix::fs::OFlags::NONBLOCK).unwrap();
    let mut tx = Channel::<ToServer, ToClient>::from_fd(a, Limits::default()).unwrap();
    let mut rx = Channel::<ToClient, ToServer>::from_fd(b, Limits::default()).unwrap();
    let msg = |i: u32| ToServer::ForkAs {
        function: format!("f{i}"),
        user: UserSpec::Name("nobody".into()),
        deadline_ms: u64::from(i),
        size_limit: 0,
        payload: Bytes(vec![i as u8; 60_000]),
    };
    // Queue until the kernel buffer is full, with fd messages in between.
    let mut n = 0u32;
    loop {
        tx.sender()
            .queue(u64::from(n), &msg(n), Vec::new())
            .unwrap();
        tx.sender()
            .queue(
                0,
                &ToServer::PassFile {
                    name: n.to_string(),
                },
                fds_for(1),
            )
            .unwrap();
        n += 1;
        if !tx.sender().try_flush().unwrap() {
            break;
        }
        assert!(n < 10_000, "socket never filled");
    }
    let reader = thread::spawn(move || {
        for i in 0..n {
            let got = rx.recv().unwrap();
            assert_eq!(got.msg, msg(i));
            assert_eq!(got.request_id, u64::from(i));
            let got = rx.recv().unwrap();
            assert_eq!(
                got.msg,
                ToServer::PassFile {
                    name: i.to_string()
                }
            );
            assert_eq!(got.fds.len(), 1);
        }
        rx
    });
    // Blocking flush on a non-blocking fd waits in poll.
    tx.sender().flush().unwrap();
    let mut rx = reader.join().unwrap();
    assert!(rx.try_recv().unwrap().is_none());
    assert!(n >= 2, "expected the buffer to hold at least one message");
}

fn serve_batches(mut server: Channel<ToClient, ToServer>, batch: usize) {
    // Answers requests in batches, in reverse order, so that replies come
    // back out of order and the client has to park them.
    loop {
        let mut reqs = Vec::new();
        while reqs.len() < batch {
            match server.recv() {
                Ok(r) => reqs.push(r),
                Err(e) if e.is_peer_closed() => return,
                Err(e) => panic!("server: {e}"),
            }
        }
        for r in reqs.into_iter().rev() {
            let ToServer::Ping(n) = r.msg else {
                panic!("unexpected {:?}", r.msg)
            };
            server
                .send_with(r.request_id, &ToClient::Pong(n * 2), Vec::new())
                .unwrap();
        }
    }
}

#[test]
fn eight_threads_share_one_client_and_get_their_own_replies() {
    let _limit = time_limit!();
    let (client, server) = Channel::<ToServer, ToClient>::pair(Limits::default()).unwrap();
    let srv = thread::spawn(move || serve_batches(server, 8));
    let client = Client::new(client);
    thread::scope(|s| {
        for t in 0..8u32 {
            let client = &client;
            s.spawn(move || {
                for i in 0..50u32 {
                    let n = t * 1000 + i;
                    let r = client.call(&ToServer::Ping(n), Vec::new()).unwrap();
                    assert_eq!(r.msg, ToClient::Pong(n * 2));
                }
            });
        }
    });
    assert_eq!(client.peer_cred().unwrap().pid, std::process::id() as i32);
    drop(client);
    srv.join().unwrap();
}

#[test]
fn client_refuses_a_reply_to_no_request_and_closes() {
    let _limit = time_limit!();
    let (client, mut server) = Channel::<ToServer, ToClient>::pair(Limits::default()).unwrap();
    let srv = thread::spawn(move || {
        let r = server.recv().unwrap();
        server
            .send_with(r.request_id + 1000, &ToClient::Pong(1), Vec::new())
            .unwrap();
        // The client shuts the channel down.
        assert!(server.recv().unwrap_err().is_peer_closed());
    });
    let client = Client::new(client);
    let e = client.call(&ToServer::Ping(1), Vec::new()).unwrap_err();
    assert!(
        matches!(e, privfork::ipc::CallError::UnexpectedReply { .. }),
        "{e}"
    );
    assert!(client.is_closed());
    let e = client.call(&ToServer::Ping(2), Vec::new()).unwrap_err();
    assert!(matches!(e, privfork::ipc::CallError::Closed { .. }), "{e}");
    srv.join().unwrap();
}

#[test]
fn a_channel_per_call_is_opened_by_passing_a_socket_end() {
    let _limit = time_limit!();
    let (mut control, mut server) = Channel::<ToServer, ToClient>::pair(Limits::default()).unwrap();
    let srv = thread::spawn(move || {
        // Each Connect carries one socket end; serve one call on it.
        loop {
            match server.recv() {
                Ok(r) => {
                    assert_eq!(r.msg, ToServer::Connect);
                    let fd = r.fds.into_iter().next().unwrap();
                    let mut per_call =
                        Channel::<ToClient, ToServer>::from_fd(fd, Limits::default()).unwrap();
                    let req = per_call.recv().unwrap();
                    let ToServer::Ping(n) = req.msg else { panic!() };
                    per_call
                        .send_with(req.request_id, &ToClient::Pong(n + 1), Vec::new())
                        .unwrap();
                }
                Err(e) if e.is_peer_closed() => return,
                Err(e) => panic!("{e}"),
            }
        }
    });
    for n in 0..5 {
        let (mine, theirs) = socketpair().unwrap();
        control.send_fds(&ToServer::Connect, vec![theirs]).unwrap();
        let mut call = Channel::<ToServer, ToClient>::from_fd(mine, Limits::default()).unwrap();
        call.send_with(9, &ToServer::Ping(n), Vec::new()).unwrap();
        let r = call.recv().unwrap();
        assert_eq!((r.msg, r.request_id), (ToClient::Pong(n + 1), 9));
    }
    drop(control);
    srv.join().unwrap();
}

#[test]
fn split_halves_work_from_two_threads() {
    let _limit = time_limit!();
    let (a, mut b) = Channel::<ToServer, ToClient>::pair(Limits::default()).unwrap();
    let (mut tx, mut rx): (_, Receiver<ToClient>) = a.split();
    let echo = thread::spawn(move || {
        while let Ok(r) = b.recv() {
            let ToServer::Ping(n) = r.msg else { panic!() };
            b.send(&ToClient::Pong(n)).unwrap();
        }
    });
    let sender = thread::spawn(move || {
        for n in 0..1000 {
            tx.send(&ToServer::Ping(n)).unwrap();
        }
    });
    for n in 0..1000 {
        assert_eq!(rx.recv().unwrap().msg, ToClient::Pong(n));
    }
    sender.join().unwrap();
    drop(rx);
    echo.join().unwrap();
}

#[test]
fn sending_the_wrong_fds_or_too_much_is_refused_locally() {
    let _limit = time_limit!();
    let limits = Limits {
        max_payload: 100,
        max_fds: 1,
    };
    let (mut a, mut b) = Channel::<ToServer, ToClient>::pair(limits).unwrap();
    let e = a
        .send(&ToServer::PassFile { name: "x".into() })
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("PassFile carries 1 fds, 0 were given"),
        "{e}"
    );
    let e = a.send_fds(&ToServer::PassTwo, fds_for(2)).unwrap_err();
    assert!(e.to_string().contains("over the channel limit of 1"), "{e}");
    let e = a
        .send(&ToServer::ForkAs {
            function: "f".into(),
            user: UserSpec::Name("nobody".into()),
            deadline_ms: 0,
            size_limit: 0,
            payload: Bytes(vec![0; 200]),
        })
        .unwrap_err();
    assert!(e.to_string().contains("over the 100-byte limit"), "{e}");
    // Nothing was sent; the channel still works.
    a.send(&ToServer::Ping(3)).unwrap();
    assert_eq!(b.recv().unwrap().msg, ToServer::Ping(3));
}
