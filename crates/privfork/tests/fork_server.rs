//! The fork server, end to end. Runs as root; each case in a fresh process
//! (see `support`) that starts its server before any thread.

mod support;

use std::sync::Arc;
use std::time::Duration;

use privfork::fork_server::protocol::{CallFailure, CallRequest, Reply, Request};
use privfork::fork_server::{ForkServer, ForkServerBuilder};
use privfork::ipc::Bytes;
use privfork::privdrop::PrivDropError;
use privfork::{ForkAsError, ForkServerError};
use support::{Watched, assert_no_children, require_root, status_field};

fn main() {
    support::main(
        &[
            ("round_trips", round_trips),
            (
                "eight_threads_get_their_own_results",
                eight_threads_get_their_own_results,
            ),
            (
                "disallowed_pairs_are_refused_without_forking",
                disallowed_pairs_are_refused_without_forking,
            ),
            (
                "root_is_never_granted_by_default",
                root_is_never_granted_by_default,
            ),
            ("fork_as_errors_carry_over", fork_as_errors_carry_over),
            (
                "server_caps_the_deadline_and_size",
                server_caps_the_deadline_and_size,
            ),
            ("busy_server_answers_busy", busy_server_answers_busy),
            ("sandbox_per_allowed_function", sandbox_per_allowed_function),
            (
                "registered_sandbox_applies_unless_the_pair_gives_one",
                registered_sandbox_applies_unless_the_pair_gives_one,
            ),
            ("children_die_with_the_server", children_die_with_the_server),
            (
                "drop_stops_and_reaps_the_server",
                drop_stops_and_reaps_the_server,
            ),
            (
                "multithreaded_spawn_is_refused",
                multithreaded_spawn_is_refused,
            ),
            ("big_caller_small_server", big_caller_small_server),
            (
                "builder_errors_name_the_input",
                builder_errors_name_the_input,
            ),
            (
                "flooding_caller_gets_backpressure",
                flooding_caller_gets_backpressure,
            ),
            (
                "huge_names_are_refused_not_fatal",
                huge_names_are_refused_not_fatal,
            ),
            (
                "server_enforces_its_argument_limit",
                server_enforces_its_argument_limit,
            ),
            (
                "garbage_from_the_caller_ends_the_server",
                garbage_from_the_caller_ends_the_server,
            ),
            (
                "stopped_server_gives_no_answer",
                stopped_server_gives_no_answer,
            ),
        ],
        &[],
    )
}

fn whoami(tag: u64) -> (u32, u32, u64) {
    (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
        tag,
    )
}

fn word_count(text: String) -> usize {
    text.split_whitespace().count()
}

fn sleep_ms(ms: u64) -> u8 {
    std::thread::sleep(Duration::from_millis(ms));
    1
}

fn blob(len: usize) -> Vec<u8> {
    vec![0xAB; len]
}

fn panics(msg: String) -> u8 {
    panic!("{msg}")
}

fn aborts(_: ()) -> u8 {
    std::process::abort()
}

fn three(v: (u64, u64, u64)) -> u64 {
    v.0 + v.1 + v.2
}

fn builder() -> ForkServerBuilder {
    ForkServer::builder()
        .register("whoami", whoami)
        .register("word_count", word_count)
        .register("sleep_ms", sleep_ms)
        .register("blob", blob)
        .register("panics", panics)
        .register("aborts", aborts)
        .register("three", three)
        .register("not_allowed", word_count)
        .register("read_status", read_status)
}

/// Reads the child's own /proc status: refused under a stdio sandbox.
fn read_status(_: ()) -> Option<String> {
    std::fs::read_to_string("/proc/self/status").ok()
}

fn standard_builder() -> ForkServerBuilder {
    let mut b = builder();
    for f in [
        "whoami",
        "word_count",
        "sleep_ms",
        "blob",
        "panics",
        "aborts",
        "three",
    ] {
        b = b.allow(f, "nobody").unwrap();
    }
    b.allow("whoami", "4000777").unwrap()
}

fn standard() -> ForkServer {
    standard_builder().spawn().unwrap()
}

fn round_trips() {
    require_root();
    let server = standard();
    let n: usize = server
        .call("word_count", "nobody", &"the quick brown fox".to_string())
        .unwrap();
    assert_eq!(n, 4);
    let (uid, gid, tag): (u32, u32, u64) = server.call("whoami", "nobody", &7u64).unwrap();
    assert_eq!((uid, tag), (65534, 7));
    assert_ne!(gid, 0);
    let (uid, gid, _): (u32, u32, u64) = server.call("whoami", "4000777", &0u64).unwrap();
    assert_eq!((uid, gid), (4000777, 4000777));
    let b: Vec<u8> = server.call("blob", "nobody", &300_000usize).unwrap();
    assert_eq!(b.len(), 300_000);
    assert!(b.iter().all(|&x| x == 0xAB));
    let s = server.stats().unwrap();
    assert_eq!((s.forks, s.running, s.refused), (4, 0, 0));
}

fn eight_threads_get_their_own_results() {
    require_root();
    let server = Arc::new(standard());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                for i in 0..40u64 {
                    let tag = t * 1000 + i;
                    let (uid, _, got): (u32, u32, u64) =
                        server.call("whoami", "nobody", &tag).unwrap();
                    assert_eq!((uid, got), (65534, tag), "thread {t} call {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = server.stats().unwrap();
    assert_eq!((s.forks, s.running), (320, 0));
}

fn disallowed_pairs_are_refused_without_forking() {
    require_root();
    let server = standard();
    let cases = [
        ("whoami", "root"),        // a user outside the list
        ("whoami", "0"),           // root by number
        ("whoami", "daemon"),      // another real user
        ("whoami", "65534"),       // nobody, but not as the allow() named it
        ("not_allowed", "nobody"), // registered, never allowed
        ("no_such_fn", "nobody"),  // not registered at all
    ];
    for (f, u) in cases {
        let err = server.call::<_, (u32, u32, u64)>(f, u, &1u64).unwrap_err();
        match &err {
            ForkServerError::Refused { reason } => {
                assert!(reason.contains(f) && reason.contains(u), "{reason}")
            }
            other => panic!("{f} as {u}: expected Refused, got {other:?}"),
        }
    }
    let s = server.stats().unwrap();
    assert_eq!(s.forks, 0, "a refused call must not fork");
    assert_eq!(s.refused, cases.len() as u64);
}

fn root_is_never_granted_by_default() {
    require_root();
    // Even a server configured to allow root refuses in the drop, unless
    // root was allowed explicitly in the drop options too.
    let server = builder().allow("whoami", "root").unwrap().spawn().unwrap();
    let err = server
        .call::<_, (u32, u32, u64)>("whoami", "root", &1u64)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ForkServerError::ForkAs(ForkAsError::PrivDrop(PrivDropError::RootRefused { .. }))
        ),
        "{err:?}"
    );
}

fn fork_as_errors_carry_over() {
    require_root();
    let server = standard();
    let err = server
        .call::<_, u8>("panics", "nobody", &"kaboom 7".to_string())
        .unwrap_err();
    assert!(
        matches!(&err, ForkServerError::ForkAs(ForkAsError::Panicked { message }) if message == "kaboom 7"),
        "{err:?}"
    );
    let err = server.call::<_, u8>("aborts", "nobody", &()).unwrap_err();
    assert!(
        matches!(&err, ForkServerError::ForkAs(ForkAsError::Signaled { signal, .. }) if *signal == libc::SIGABRT),
        "{err:?}"
    );
    let err = server
        .call_with::<_, u8>(
            "sleep_ms",
            "nobody",
            &60_000u64,
            Duration::from_millis(200),
            1 << 20,
        )
        .unwrap_err();
    assert!(
        matches!(&err, ForkServerError::ForkAs(ForkAsError::Timeout { .. })),
        "{err:?}"
    );
    let err = server
        .call_with::<_, Vec<u8>>(
            "blob",
            "nobody",
            &10_000usize,
            Duration::from_secs(10),
            1024,
        )
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ForkServerError::ForkAs(ForkAsError::TooLarge { limit: 1024, .. })
        ),
        "{err:?}"
    );
    // Arguments of the wrong shape: the child cannot decode them.
    let err = server.call::<_, u64>("three", "nobody", &1u8).unwrap_err();
    assert!(
        matches!(&err, ForkServerError::BadArguments { .. }),
        "{err:?}"
    );
    // A result of the wrong type for the caller.
    let err = server
        .call::<_, String>("blob", "nobody", &4usize)
        .unwrap_err();
    assert!(matches!(&err, ForkServerError::Decode(_)), "{err:?}");
    // The server is still fine.
    assert_eq!(
        server
            .call::<_, u64>("three", "nobody", &(1u64, 2u64, 3u64))
            .unwrap(),
        6
    );
    assert_eq!(server.stats().unwrap().running, 0);
}

fn server_caps_the_deadline_and_size() {
    require_root();
    let server = builder()
        .allow("sleep_ms", "nobody")
        .unwrap()
        .allow("blob", "nobody")
        .unwrap()
        .max_timeout(Duration::from_millis(300))
        .max_result(4096)
        .spawn()
        .unwrap();
    let err = server
        .call_with::<_, u8>(
            "sleep_ms",
            "nobody",
            &60_000u64,
            Duration::from_secs(3600),
            1 << 20,
        )
        .unwrap_err();
    match err {
        ForkServerError::ForkAs(ForkAsError::Timeout { timeout }) => {
            assert_eq!(timeout, Duration::from_millis(300))
        }
        other => panic!("expected the server's 300 ms timeout, got {other:?}"),
    }
    let err = server
        .call_with::<_, Vec<u8>>(
            "blob",
            "nobody",
            &100_000usize,
            Duration::from_secs(5),
            1 << 30,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            ForkServerError::ForkAs(ForkAsError::TooLarge { limit: 4096, .. })
        ),
        "{err:?}"
    );
}

fn busy_server_answers_busy() {
    require_root();
    let server = Arc::new(
        builder()
            .allow("sleep_ms", "nobody")
            .unwrap()
            .max_children(1)
            .spawn()
            .unwrap(),
    );
    let s2 = Arc::clone(&server);
    let slow = std::thread::spawn(move || s2.call::<_, u8>("sleep_ms", "nobody", &1500u64));
    while server.stats().unwrap().running == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = server
        .call::<_, u8>("sleep_ms", "nobody", &1u64)
        .unwrap_err();
    assert!(
        matches!(err, ForkServerError::Busy { max_children: 1 }),
        "{err:?}"
    );
    assert_eq!(slow.join().unwrap().unwrap(), 1);
    assert_eq!(server.stats().unwrap().busy, 1);
}

/// Pids whose parent is `ppid`.
fn children_of(ppid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("PPid:").map(|v| v.trim().to_owned()))
                })
                .is_some_and(|p| p == ppid.to_string())
        })
        .collect()
}

fn children_die_with_the_server() {
    require_root();
    let server = Arc::new(
        builder()
            .allow("sleep_ms", "nobody")
            .unwrap()
            .spawn()
            .unwrap(),
    );
    let s2 = Arc::clone(&server);
    let caller = std::thread::spawn(move || s2.call::<_, u8>("sleep_ms", "nobody", &60_000u64));
    while server.stats().unwrap().running == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let kids = children_of(server.pid());
    assert_eq!(kids.len(), 1, "server children: {kids:?}");
    let kid = Watched::new(kids[0]);
    // The server crashes: its child must go with it, and the caller must
    // get an error rather than hang.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(server.pid() as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    kid.assert_gone("fork-as child of the killed server");
    let err = caller.join().unwrap().unwrap_err();
    assert!(matches!(err, ForkServerError::Channel(_)), "{err:?}");
    drop(server);
    assert_no_children();
}

fn drop_stops_and_reaps_the_server() {
    require_root();
    let server = standard();
    let pid = server.pid();
    let _: usize = server
        .call("word_count", "nobody", &"a".to_string())
        .unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(server);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "server {pid} still exists after drop"
    );
    assert_no_children();
}

fn multithreaded_spawn_is_refused() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv());
    let err = builder().spawn().unwrap_err();
    assert!(
        matches!(err, ForkServerError::MultiThreaded { threads: 2 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("before any thread"), "{err}");
    tx.send(()).unwrap();
    t.join().unwrap().unwrap();
}

fn rss_kib(pid: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn big_caller_small_server() {
    require_root();
    // The server is forked while the caller is small; the caller then grows
    // to 512 MiB and starts threads. Calls still fork only the small server,
    // so their cost does not grow with the caller (see benches/fork_server).
    let server = Arc::new(standard());
    let mut heap = vec![0u8; 512 << 20];
    for i in (0..heap.len()).step_by(4096) {
        heap[i] = 1;
    }
    let s2 = Arc::clone(&server);
    let t = std::thread::spawn(move || s2.call::<_, (u32, u32, u64)>("whoami", "nobody", &5u64));
    assert_eq!(t.join().unwrap().unwrap().2, 5);
    assert!(
        rss_kib("self") > 512 * 1024,
        "caller RSS {} KiB",
        rss_kib("self")
    );
    let server_rss = rss_kib(&server.pid().to_string());
    assert!(server_rss < 64 * 1024, "server RSS {server_rss} KiB");
    std::hint::black_box(&heap);
    let _ = status_field("VmRSS");
}

fn sandbox_per_allowed_function() {
    require_root();
    let stdio = privfork::sandbox::Sandbox::new().promises("stdio").unwrap();
    let server = builder()
        .allow_sandboxed("read_status", "nobody", &stdio)
        .unwrap()
        .allow_sandboxed("aborts", "nobody", &stdio)
        .unwrap()
        // The same function as another user, without a sandbox: the
        // positive control.
        .allow("read_status", "4000777")
        .unwrap()
        .spawn()
        .unwrap();
    let open: Option<String> = server.call("read_status", "4000777", &()).unwrap();
    let open = open.expect("control: the unsandboxed child reads its status");
    assert!(open.contains("Seccomp:\t0"), "{open}");
    let sandboxed: Option<String> = server.call("read_status", "nobody", &()).unwrap();
    assert_eq!(
        sandboxed, None,
        "the sandboxed child read /proc/self/status"
    );
    // The filter, prepared in the caller and installed in the server's
    // child, names no pid: the child's own abort() is SIGABRT, not SIGSYS.
    let err = server.call::<_, u8>("aborts", "nobody", &()).unwrap_err();
    assert!(
        matches!(&err, ForkServerError::ForkAs(ForkAsError::Signaled { signal, .. }) if *signal == libc::SIGABRT),
        "{err:?}"
    );
    // A bad sandbox is refused when the server is built, naming the function.
    let bad = privfork::sandbox::Sandbox::new()
        .promises("stdio")
        .unwrap()
        .unveil("r:/no/such/path-pf")
        .unwrap();
    let err = builder()
        .allow_sandboxed("read_status", "nobody", &bad)
        .unwrap_err();
    assert!(matches!(err, ForkServerError::Sandbox { .. }), "{err:?}");
    assert!(err.to_string().contains("read_status"), "{err}");
}

fn registered_sandbox_applies_unless_the_pair_gives_one() {
    require_root();
    // A registry shared with exec mode: the function's own sandbox holds
    // for a plain allow(); allow_sandboxed gives the pair another.
    let sandbox = |promises: &str| {
        privfork::sandbox::Sandbox::new()
            .promises(promises)
            .unwrap()
            .unveil("r:/proc")
            .unwrap()
    };
    let functions = privfork::fork_as::Functions::new().register_sandboxed(
        "seccomp",
        sandbox("stdio rpath"),
        |(): ()| status_field("Seccomp"),
    );
    let server = ForkServer::builder()
        .functions(functions)
        .allow("seccomp", "nobody")
        .unwrap()
        // Without rpath the status cannot be read: the function panics.
        .allow_sandboxed(
            "seccomp",
            "4000778",
            &privfork::sandbox::Sandbox::new()
                .promises("stdio error")
                .unwrap(),
        )
        .unwrap()
        .spawn()
        .unwrap();
    let mode: String = server.call("seccomp", "nobody", &()).unwrap();
    assert_eq!(mode, "2", "the registered sandbox is installed");
    let err = server
        .call::<_, String>("seccomp", "4000778", &())
        .unwrap_err();
    assert!(
        matches!(&err, ForkServerError::ForkAs(ForkAsError::Panicked { .. })),
        "the pair's own sandbox replaces the registered one: {err:?}"
    );
}

fn builder_errors_name_the_input() {
    let err = ForkServer::builder().allow("nope", "nobody").unwrap_err();
    assert!(
        matches!(err, ForkServerError::UnknownFunction { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope"), "{err}");
    let err = builder().allow("whoami", "no-such-user-pf").unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("no-such-user-pf"), "{chain}");
}

fn refused_call(name_len: usize) -> Request {
    Request::Call(CallRequest {
        function: "f".repeat(name_len),
        user: "nobody".into(),
        args: Bytes(Vec::new()),
        timeout_ms: 1000,
        max_result: 1024,
    })
}

fn flooding_caller_gets_backpressure() {
    require_root();
    // A hostile caller sends requests as fast as it can and never reads a
    // reply. The server must stop reading once its replies back up, not
    // buffer replies without bound.
    let (mut ch, server) = standard_builder().spawn_raw().unwrap();
    let server_pid = server.pid().to_string();
    let req = refused_call(250);
    let start = std::time::Instant::now();
    let mut queued = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        for _ in 0..200 {
            ch.sender().queue(queued, &req, Vec::new()).unwrap();
            queued += 1;
        }
        let _ = ch.sender().try_flush().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    // The caller tried to send far more than the server may hold...
    assert!(queued > 100_000, "only {queued} requests were queued");
    // ...and the server stayed small (replies are ~300 bytes each, so
    // 100_000 of them alone would be ~30 MiB).
    let rss = rss_kib(&server_pid);
    assert!(rss < 16 * 1024, "server RSS {rss} KiB after the flood");
    // It is still serving: replies arrive once the caller reads.
    for _ in 0..10 {
        let r = ch.recv().unwrap();
        assert!(
            matches!(r.msg, Reply::Outcome(Err(CallFailure::Refused { .. }))),
            "{r:?}"
        );
    }
    drop(ch);
    drop(server); // reaps it; it exits on its own once the channel closes
}

fn huge_names_are_refused_not_fatal() {
    require_root();
    let server = standard();
    // Control characters expand ~5x when quoted: the echo must not grow
    // past the channel's limit and end the server.
    let name = "\u{1}".repeat(4 << 20);
    let err = server.call::<_, u8>(&name, "nobody", &()).unwrap_err();
    assert!(matches!(err, ForkServerError::Refused { .. }), "{err:?}");
    let err = server.call::<_, u8>("whoami", &name, &()).unwrap_err();
    assert!(matches!(err, ForkServerError::Refused { .. }), "{err:?}");
    let (uid, _, _): (u32, u32, u64) = server.call("whoami", "nobody", &1u64).unwrap();
    assert_eq!(uid, 65534);
}

fn server_enforces_its_argument_limit() {
    require_root();
    // The caller-side check can be skipped by a hostile caller: the server
    // checks again and refuses without forking.
    let (mut ch, _server) = standard_builder().max_args(1024).spawn_raw().unwrap();
    let req = Request::Call(CallRequest {
        function: "word_count".into(),
        user: "nobody".into(),
        args: Bytes(vec![b'a'; 2 << 20]),
        timeout_ms: 1000,
        max_result: 1024,
    });
    ch.send_with(1, &req, Vec::new()).unwrap();
    let r = ch.recv().unwrap();
    match r.msg {
        Reply::Outcome(Err(CallFailure::Refused { reason })) => {
            assert!(reason.contains("arguments"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    ch.send_with(2, &Request::Stats, Vec::new()).unwrap();
    match ch.recv().unwrap().msg {
        Reply::Stats(s) => assert_eq!((s.forks, s.refused), (0, 1)),
        other => panic!("{other:?}"),
    }
}

fn garbage_from_the_caller_ends_the_server() {
    require_root();
    use std::os::fd::AsFd;
    let (ch, server) = standard_builder().spawn_raw().unwrap();
    let watched = Watched::new(server.pid());
    rustix::io::write(ch.as_fd(), &[0xff; 64]).unwrap();
    watched.assert_gone("fork server fed garbage");
    drop(ch);
    drop(server);
    assert_no_children();
}

fn stopped_server_gives_no_answer() {
    require_root();
    let server = standard();
    let pid = rustix::process::Pid::from_raw(server.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let err = server
        .call_with::<_, usize>(
            "word_count",
            "nobody",
            &"a".to_string(),
            Duration::from_millis(100),
            1024,
        )
        .unwrap_err();
    assert!(matches!(err, ForkServerError::NoAnswer { .. }), "{err:?}");
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    // The late reply is dropped; the next call works.
    let n: usize = server
        .call("word_count", "nobody", &"a b".to_string())
        .unwrap();
    assert_eq!(n, 2);
}
