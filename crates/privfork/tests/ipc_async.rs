//! Async channels (feature `tokio`): round trips, fds, interop with the
//! blocking end, hostile input, and a client shared by many tasks.

mod time_limit;
use time_limit::time_limit;

mod ipc_common;

use std::io::Write;
use std::os::unix::net::UnixStream;

use ipc_common::*;
use privfork::ipc::{
    AsyncChannel, AsyncClient, Bytes, CallError, Channel, Header, Limits, RecvError, socketpair,
};

#[tokio::test]
async fn async_round_trip_with_fds() {
    let _limit = time_limit!();
    let (mut a, mut b) = AsyncChannel::<ToServer, ToClient>::pair(Limits::default()).unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let want = identity(&file);
    a.send_with(
        3,
        &ToServer::PassFile { name: "n".into() },
        vec![file.into()],
    )
    .await
    .unwrap();
    let got = b.recv().await.unwrap();
    assert_eq!(got.msg, ToServer::PassFile { name: "n".into() });
    assert_eq!(got.request_id, 3);
    assert_eq!(identity(&got.fds[0]), want);
    let flags = rustix::io::fcntl_getfd(&got.fds[0]).unwrap();
    assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    b.send(&ToClient::Pong(4)).await.unwrap();
    assert_eq!(a.recv().await.unwrap().msg, ToClient::Pong(4));
    assert_eq!(a.peer_cred().unwrap().pid, std::process::id() as i32);
}

#[tokio::test]
async fn async_end_talks_to_a_blocking_end_with_large_messages() {
    let _limit = time_limit!();
    let (x, y) = socketpair().unwrap();
    let mut async_end = AsyncChannel::<ToClient, ToServer>::from_fd(x, Limits::default()).unwrap();
    let blocking = std::thread::spawn(move || {
        let mut ch = Channel::<ToServer, ToClient>::from_fd(y, Limits::default()).unwrap();
        for i in 0..20u32 {
            ch.send_with(
                u64::from(i),
                &ToServer::ForkAs {
                    function: "f".into(),
                    user: UserSpec::Name("nobody".into()),
                    deadline_ms: 1,
                    size_limit: 2,
                    payload: Bytes(vec![i as u8; 200_000]),
                },
                Vec::new(),
            )
            .unwrap();
            assert_eq!(ch.recv().unwrap().msg, ToClient::Pong(i));
        }
    });
    for i in 0..20u32 {
        let r = async_end.recv().await.unwrap();
        let ToServer::ForkAs { payload, .. } = r.msg else {
            panic!()
        };
        assert_eq!(payload, Bytes(vec![i as u8; 200_000]));
        // Replies larger than the socket buffer exercise partial writes.
        async_end
            .send_with(r.request_id, &ToClient::Pong(i), Vec::new())
            .await
            .unwrap();
    }
    tokio::task::spawn_blocking(move || blocking.join().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn async_unknown_type_closes_the_channel() {
    let _limit = time_limit!();
    let (raw, ours) = socketpair().unwrap();
    let mut ch = AsyncChannel::<ToClient, ToServer>::from_fd(ours, Limits::default()).unwrap();
    let raw = UnixStream::from(raw);
    let h = Header {
        msg_type: 77,
        len: 0,
        request_id: 0,
        num_fds: 0,
    };
    (&raw).write_all(&h.encode()).unwrap();
    let e = ch.recv().await.unwrap_err();
    assert!(matches!(e, RecvError::UnknownType { code: 77 }), "{e:?}");
    assert!(matches!(
        ch.recv().await.unwrap_err(),
        RecvError::Closed { .. }
    ));
}

#[tokio::test]
async fn async_state_refuses_unexpected_kinds() {
    let _limit = time_limit!();
    let (mut a, mut b) = AsyncChannel::<ToServer, ToClient>::pair(Limits::default()).unwrap();
    b.set_accepting("await-hello", &[ToServerKind::Hello]);
    a.send(&ToServer::Shutdown).await.unwrap();
    let e = b.recv().await.unwrap_err();
    assert!(
        matches!(
            e,
            RecvError::NotAllowed {
                name: "Shutdown",
                state: "await-hello",
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_client_serves_concurrent_tasks() {
    let _limit = time_limit!();
    let (client, server) = socketpair().unwrap();
    let server = std::thread::spawn(move || {
        // Reverse-order replies in batches of 8: replies arrive out of order.
        let mut ch = Channel::<ToClient, ToServer>::from_fd(server, Limits::default()).unwrap();
        loop {
            let mut batch = Vec::new();
            while batch.len() < 8 {
                match ch.recv() {
                    Ok(r) => batch.push(r),
                    Err(e) if e.is_peer_closed() => return,
                    Err(e) => panic!("{e}"),
                }
            }
            for r in batch.into_iter().rev() {
                let ToServer::Ping(n) = r.msg else { panic!() };
                ch.send_with(r.request_id, &ToClient::Pong(n + 1), Vec::new())
                    .unwrap();
            }
        }
    });
    let client = std::sync::Arc::new(AsyncClient::new(
        AsyncChannel::<ToServer, ToClient>::from_fd(client, Limits::default()).unwrap(),
    ));
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40u32 {
                let n = t * 1000 + i;
                let r = client.call(&ToServer::Ping(n), Vec::new()).await.unwrap();
                assert_eq!(r.msg, ToClient::Pong(n + 1));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(client);
    tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn async_client_reports_a_closed_server() {
    let _limit = time_limit!();
    let (mut client_end, server_end) =
        AsyncChannel::<ToServer, ToClient>::pair(Limits::default()).unwrap();
    client_end.accept_all();
    drop(server_end);
    let client = AsyncClient::new(client_end);
    let e = client
        .call(&ToServer::Ping(1), Vec::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            CallError::Send(_) | CallError::Recv(RecvError::PeerClosed)
        ),
        "{e:?}"
    );
    let e = client
        .call(&ToServer::Ping(2), Vec::new())
        .await
        .unwrap_err();
    assert!(
        matches!(e, CallError::Closed { .. } | CallError::Send(_)),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_cancelled_call_does_not_break_the_client() {
    let _limit = time_limit!();
    let (client, server) = socketpair().unwrap();
    let server = std::thread::spawn(move || {
        let mut ch = Channel::<ToClient, ToServer>::from_fd(server, Limits::default()).unwrap();
        let first = ch.recv().unwrap();
        let second = ch.recv().unwrap();
        // The reply to the cancelled call comes first and must be dropped.
        for r in [first, second] {
            let ToServer::Ping(n) = r.msg else { panic!() };
            ch.send_with(r.request_id, &ToClient::Pong(n), Vec::new())
                .unwrap();
        }
        assert!(ch.recv().unwrap_err().is_peer_closed());
    });
    let client = AsyncClient::new(
        AsyncChannel::<ToServer, ToClient>::from_fd(client, Limits::default()).unwrap(),
    );
    {
        let first = client.call(&ToServer::Ping(1), Vec::new());
        tokio::pin!(first);
        tokio::select! {
            biased;
            r = &mut first => panic!("no reply can have come yet: {r:?}"),
            () = std::future::ready(()) => {}
        }
    }
    let r = client.call(&ToServer::Ping(2), Vec::new()).await.unwrap();
    assert_eq!(r.msg, ToClient::Pong(2));
    drop(client);
    tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();
}
