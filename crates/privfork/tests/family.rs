//! The process family, end to end. The test binary is itself a family
//! program: its `main` dispatches members first; the `family_main` helper
//! runs main for the scenario named in `PF_SCENARIO`; each case starts that
//! helper as a process, talks to it over 127.0.0.1 and reads its log.
//! Runs as root (main starts members as nobody).

#[path = "proc_net/mod.rs"]
mod proc_net;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use privfork::event::{Interest, Poller};
use privfork::family::protocol::ToMain;
use privfork::family::{Family, Restart, Role, RoleContext};
use privfork::ipc::Bytes;
use privfork::sandbox::Sandbox;
use proc_net::listening_inode;
use support::require_root;

const CASE: &str = "--privfork-case";

fn worker_sandbox(_args: &[String]) -> Result<Sandbox, privfork::sandbox::SandboxError> {
    Sandbox::new().promises("stdio accept")
}

const WORKER: Role = Role {
    listeners: &["http"],
    sandbox: Some(worker_sandbox),
    ..Role::new("worker", worker)
};
const CRASHER: Role = Role {
    restart: Restart::Always {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(2),
    },
    ..Role::new("crasher", crasher)
};
const ROGUE: Role = Role::new("rogue", rogue);
const SPINNER: Role = Role::new("spinner", spinner);
const FLOODER: Role = Role::new("flooder", flooder);
const QUITTER: Role = Role::new("quitter", quitter);
const LINKER: Role = Role {
    peers: &["deaf"],
    ..Role::new("linker", sleeper)
};
const DEAF: Role = Role::new("deaf", sleeper);
const PING: Role = Role {
    peers: &["pong"],
    ..Role::new("ping", ping)
};
const PONG: Role = Role::new("pong", pong);
const CHATTER: Role = Role {
    app_messages: true,
    ..Role::new("chatter", chatter)
};
/// Its promises come from the family's arguments (`--promises P`).
fn promises_from_args(args: &[String]) -> Result<Sandbox, privfork::sandbox::SandboxError> {
    let i = args
        .iter()
        .position(|a| a == "--promises")
        .expect("--promises");
    Sandbox::new().promises(&args[i + 1])
}
const STATUSER: Role = Role {
    status: true,
    sandbox: Some(promises_from_args),
    ..Role::new("statuser", statuser)
};
const NOSY: Role = Role::new("nosy", nosy);
const DEAFASKER: Role = Role {
    status: true,
    ..Role::new("deafasker", deaf_asker)
};
const NESTER: Role = Role {
    handover: true,
    sandbox: None,
    ..Role::new("nester", nester)
};
const LINGERER: Role = Role {
    handover: true,
    sandbox: None,
    ..Role::new("lingerer", lingerer)
};
const SLOWREADY: Role = Role {
    peers: &["dier"],
    ..Role::new("slowready", slow_ready)
};
const DIER: Role = Role::new("dier", dier);
const LATE: Role = Role {
    status: true,
    ..Role::new("late", late)
};

/// A worker that, in any generation after the first, hangs before it
/// says ready (a new binary that cannot get ready).
const HANGER: Role = Role {
    listeners: &["http"],
    sandbox: Some(worker_sandbox),
    ready_timeout: Duration::from_secs(2),
    ..Role::new("hanger", hanger)
};
/// Never reads its channel: deaf to a drain.
const STUBBORN: Role = Role::new("stubborn", sleeper);

/// Every role, for members to find theirs in.
static ALL: &[Role] = &[
    WORKER, CRASHER, ROGUE, SPINNER, FLOODER, QUITTER, LINKER, DEAF, PING, PONG, CHATTER, STATUSER,
    NOSY, LATE, SLOWREADY, DIER, HANGER, STUBBORN, DEAFASKER, LINGERER, NESTER,
];
static NESTING: &[Role] = &[WORKER, NESTER];
static DEAFASKING: &[Role] = &[WORKER, DEAFASKER];
static LINGERING: &[Role] = &[WORKER, LINGERER];
static HANGING: &[Role] = &[HANGER];
static STUBBORNLY: &[Role] = &[WORKER, STUBBORN];
static BASIC: &[Role] = &[WORKER];
static CRASHY: &[Role] = &[WORKER, CRASHER];
static ROGUISH: &[Role] = &[WORKER, ROGUE];
static SPINNING: &[Role] = &[WORKER, SPINNER];
static FLOODING: &[Role] = &[WORKER, FLOODER];
static QUITTING: &[Role] = &[WORKER, QUITTER];
static DEAFENED: &[Role] = &[LINKER, DEAF];
static PINGPONG: &[Role] = &[PING, PONG];
static CHATTY: &[Role] = &[WORKER, CHATTER];
static STATUSY: &[Role] = &[WORKER, STATUSER];
static NOSEY: &[Role] = &[WORKER, NOSY];
static LATECOMER: &[Role] = &[WORKER, LATE];
static CROSSING: &[Role] = &[SLOWREADY, DIER];

fn main() {
    Family::new(ALL).dispatch();
    support::main_with_limits(
        &[
            (
                "members_run_as_their_user_sandboxed",
                members_run_as_their_user_sandboxed,
            ),
            ("killed_worker_is_restarted", killed_worker_is_restarted),
            ("crash_loop_backs_off", crash_loop_backs_off),
            (
                "sigterm_lets_in_flight_requests_finish",
                sigterm_lets_in_flight_requests_finish,
            ),
            ("members_die_with_main", members_die_with_main),
            ("socket_activation", socket_activation),
            (
                "disallowed_message_restarts_the_member",
                disallowed_message_restarts_the_member,
            ),
            ("sd_notify_ready_and_stopping", sd_notify_ready_and_stopping),
            (
                "flooding_member_and_stalled_stderr_do_not_block_main",
                flooding_member_and_stalled_stderr_do_not_block_main,
            ),
            (
                "ready_then_dead_is_a_crash_loop",
                ready_then_dead_is_a_crash_loop,
            ),
            (
                "member_deaf_to_a_restart_stop_is_killed",
                member_deaf_to_a_restart_stop_is_killed,
            ),
            (
                "peers_meet_again_after_a_restart",
                peers_meet_again_after_a_restart,
            ),
            (
                "linked_role_with_instances_is_refused",
                linked_role_with_instances_is_refused,
            ),
            (
                "app_flood_does_not_drown_mains_lines",
                app_flood_does_not_drown_mains_lines,
            ),
            (
                "terminal_nobody_reads_does_not_block_main",
                terminal_nobody_reads_does_not_block_main,
            ),
            (
                "connected_fork_server_has_no_pid",
                connected_fork_server_has_no_pid,
            ),
            (
                "main_started_without_stdio_opens_dev_null",
                main_started_without_stdio_opens_dev_null,
            ),
            ("systemd_fd_names_are_checked", systemd_fd_names_are_checked),
            (
                "status_agrees_with_proc_and_args_and_user_reach_members",
                status_agrees_with_proc_and_args_and_user_reach_members,
            ),
            (
                "status_query_without_the_row_kills_the_member",
                status_query_without_the_row_kills_the_member,
            ),
            (
                "unknown_user_stops_main_naming_it",
                unknown_user_stops_main_naming_it,
            ),
            (
                "a_late_status_answer_is_not_taken_for_the_next",
                a_late_status_answer_is_not_taken_for_the_next,
            ),
            (
                "ready_crossing_a_stop_is_not_a_protocol_break",
                ready_crossing_a_stop_is_not_a_protocol_break,
            ),
            (
                "a_second_ready_after_a_crossing_breaks_the_protocol",
                a_second_ready_after_a_crossing_breaks_the_protocol,
            ),
            (
                "sighup_restarts_in_place_on_the_same_socket",
                sighup_restarts_in_place_on_the_same_socket,
            ),
            (
                "failed_preflight_keeps_the_old_generation",
                failed_preflight_keeps_the_old_generation,
            ),
            (
                "new_member_never_ready_fails_the_restart",
                new_member_never_ready_fails_the_restart,
            ),
            (
                "sighups_during_a_restart_coalesce",
                sighups_during_a_restart_coalesce,
            ),
            (
                "stuck_old_member_is_killed_at_the_drain_deadline",
                stuck_old_member_is_killed_at_the_drain_deadline,
            ),
            (
                "request_in_flight_across_a_restart_completes",
                request_in_flight_across_a_restart_completes,
            ),
            (
                "fds_processes_and_filters_stay_flat_over_restarts",
                fds_processes_and_filters_stay_flat_over_restarts,
            ),
            (
                "new_image_dying_before_adopting_ends_the_family_loudly",
                new_image_dying_before_adopting_ends_the_family_loudly,
            ),
            (
                "preflight_refuses_a_record_version_it_cannot_read",
                preflight_refuses_a_record_version_it_cannot_read,
            ),
            ("sd_notify_on_a_restart", sd_notify_on_a_restart),
            (
                "member_not_reading_its_answers_cannot_hang_a_stop",
                member_not_reading_its_answers_cannot_hang_a_stop,
            ),
            (
                "member_not_reading_cannot_veto_a_restart",
                member_not_reading_cannot_veto_a_restart,
            ),
            (
                "lingering_socket_sent_to_main_cannot_block_it",
                lingering_socket_sent_to_main_cannot_block_it,
            ),
            (
                "lingering_socket_nested_in_a_unix_socket_cannot_block_main",
                lingering_socket_nested_in_a_unix_socket_cannot_block_main,
            ),
        ],
        &[("family_main", family_main)],
        &[(
            "fds_processes_and_filters_stay_flat_over_restarts",
            Duration::from_secs(240),
        )],
    )
}

// ---- the members ---------------------------------------------------------

/// Serves HTTP/1.1 on `http` until told to stop: `GET /` answers with
/// who it is; `GET /slow` takes 1.5 s. On stop it accepts nothing more,
/// waits for the requests in flight, and says it stopped.
fn worker(mut cx: RoleContext) -> i32 {
    let listener = cx
        .take_listeners()
        .take("http")
        .expect("the http listener")
        .into_fd();
    let listener = TcpListener::from(listener);
    cx.ready().unwrap();
    let mut in_flight: Vec<std::thread::JoinHandle<()>> = Vec::new();
    loop {
        let mut p: Poller<'_, 2> = Poller::new();
        p.add(&listener, Interest::READABLE, 0);
        p.add_fd(cx.main_fd(), Interest::READABLE, 1);
        p.wait(None).unwrap();
        let ready: Vec<usize> = p.ready().map(|(t, _)| t).collect();
        if ready.contains(&1)
            && let Some(deadline) = cx.poll_stop()
        {
            let end = Instant::now() + deadline;
            for h in in_flight {
                while !h.is_finished() && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            cx.stopped();
            return 0;
        }
        if ready.contains(&0)
            && let Ok((conn, _)) = listener.accept()
        {
            in_flight.retain(|h| !h.is_finished());
            in_flight.push(std::thread::spawn(move || serve(conn)));
        }
    }
}

fn serve(mut conn: TcpStream) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    if line.starts_with("GET /slow") {
        std::thread::sleep(Duration::from_millis(1500));
    }
    let body = format!(
        "worker uid={} pid={}\n",
        rustix::process::getuid().as_raw(),
        std::process::id()
    );
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Generation 1: the worker. Later generations: never ready.
fn hanger(cx: RoleContext) -> i32 {
    if cx.generation() == 1 {
        return worker(cx);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Dies at once, before it is ready.
fn crasher(_: RoleContext) -> i32 {
    3
}

/// Says ready, then sends a kind its row does not allow.
fn rogue(mut cx: RoleContext) -> i32 {
    cx.ready().unwrap();
    let _ = cx.channel().send(&ToMain::App(Bytes(vec![1, 2, 3])));
    std::thread::sleep(Duration::from_secs(60));
    0
}

/// Says ready, then spins without ever reading its channel: only the
/// parent-death signal can end it when main dies.
fn spinner(mut cx: RoleContext) -> i32 {
    cx.ready().unwrap();
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Says ready, then writes to stderr as fast as it can: endless lines,
/// some far over the line limit, with escape sequences.
fn flooder(mut cx: RoleContext) -> i32 {
    cx.ready().unwrap();
    let long = vec![b'x'; 100_000];
    let mut err = std::io::stderr().lock();
    loop {
        let _ = err.write_all(b"\x1b[2Jflood line\n");
        let _ = err.write_all(&long);
        let _ = err.write_all(b"\n");
    }
}

/// Says ready, then exits at once.
fn quitter(mut cx: RoleContext) -> i32 {
    cx.ready().unwrap();
    0
}

/// Says ready, then sleeps without ever reading its channel (deaf to
/// Stop).
fn sleeper(mut cx: RoleContext) -> i32 {
    cx.ready().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Says ready, asks main for the family's status until every member
/// runs, prints it as one line on stderr (main's log), then waits for
/// stop.
fn statuser(mut cx: RoleContext) -> i32 {
    cx.set_detail("a detail line");
    cx.ready().unwrap();
    for _ in 0..200 {
        let s = cx.family_status(Duration::from_secs(5)).unwrap();
        if s.members.iter().all(|m| m.state == "running") {
            let mut line = format!("STATUS gen={} main={}", s.generation, s.main.pid);
            for m in &s.members {
                let p = m.process.as_ref().unwrap();
                let r = m.reported.as_ref().unwrap();
                let landlock = r.layers.iter().find(|(n, _)| n == "landlock").unwrap();
                line.push_str(&format!(
                    " | {} pid={} uid={} user={} seccomp={} filters={} nnp={} promises={} landlock={} detail={}",
                    m.role,
                    p.pid,
                    p.uids[1],
                    p.user.as_deref().unwrap_or("-"),
                    p.seccomp,
                    p.seccomp_filters,
                    p.no_new_privs,
                    r.promises.as_deref().unwrap_or("-").replace(' ', "+"),
                    landlock.1,
                    r.detail.as_deref().unwrap_or("-").replace(' ', "+"),
                ));
            }
            eprintln!("{line}");
            eprintln!("ARGS {:?}", cx.args());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    until_stopped(cx)
}

/// Leaves one status answer unread (a query that timed out), waits, then
/// asks properly: the answer must be the fresh one, not the old one still
/// in the channel. Prints its own uptime as main saw it.
fn late(mut cx: RoleContext) -> i32 {
    cx.ready().unwrap();
    cx.channel().send(&ToMain::StatusQuery).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let s = cx.family_status(Duration::from_secs(5)).unwrap();
    let me = s.members.iter().find(|m| m.role == "late").unwrap();
    eprintln!("LATE uptime_ms={}", me.uptime_ms);
    until_stopped(cx)
}

/// Takes a second to get ready (its peer has died meanwhile, so main has
/// told it to stop before it said Ready), then stops when told.
fn slow_ready(mut cx: RoleContext) -> i32 {
    std::thread::sleep(Duration::from_millis(1000));
    // Whether the Stop came first (it is kept for `until_stopped`).
    let crossed = cx.poll_stop().is_some();
    eprintln!("CROSSED {crossed}");
    cx.ready().unwrap();
    if cx.args().iter().any(|a| a == "ready-twice") {
        // A second Ready is never accepted, crossing or not.
        cx.ready().unwrap();
    }
    // Main reads the Ready before it sees this process exit.
    std::thread::sleep(Duration::from_millis(300));
    until_stopped(cx)
}

/// Exits after 200 ms, taking its peer with it.
fn dier(_: RoleContext) -> i32 {
    std::thread::sleep(Duration::from_millis(200));
    0
}

/// Waits until main says stop, says stopped; the exit code.
fn until_stopped(mut cx: RoleContext) -> i32 {
    while cx.poll_stop().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    cx.stopped();
    0
}

/// Says ready, asks main for the status 600 times without reading an
/// answer, then sleeps.
fn deaf_asker(mut cx: RoleContext) -> i32 {
    cx.ready().unwrap();
    for _ in 0..600 {
        if cx.channel().send(&ToMain::StatusQuery).is_err() {
            break;
        }
    }
    eprintln!("DEAFASKER sent its queries");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Hands main a TCP socket with unsent data to a client that reads
/// nothing, set to linger for ever, and closes its own copy: the close
/// of main's copy is the last one (a lingering close blocks).
fn lingerer(mut cx: RoleContext) -> i32 {
    cx.ready().unwrap();
    let (conn, client) = lingering_connection();
    eprintln!("LINGERER handing over");
    let _ = cx
        .channel()
        .send_fds(&ToMain::Handover(Bytes(Vec::new())), vec![conn]);
    std::thread::sleep(Duration::from_secs(60));
    drop(client);
    0
}

/// A TCP connection on 127.0.0.1 whose send buffer is full, to a client
/// (returned, to keep open) that reads nothing, set to linger for ever:
/// closing the last copy of it blocks.
fn lingering_connection() -> (OwnedFd, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut conn, _) = l.accept().unwrap();
    conn.set_nonblocking(true).unwrap();
    let buf = vec![b'x'; 65536];
    while conn.write(&buf).is_ok() {}
    rustix::net::sockopt::set_socket_linger(&conn, Some(Duration::from_secs(1 << 30))).unwrap();
    (OwnedFd::from(conn), client)
}

/// Hides a lingering TCP socket (unsent data, a client that reads
/// nothing, linger for ever) in the queue of a unix socket, and sends
/// main that unix socket: releasing it would close the TCP socket in main.
fn nester(mut cx: RoleContext) -> i32 {
    cx.ready().unwrap();
    let (conn, client) = lingering_connection();
    let (a, b) = privfork::ipc::socketpair().unwrap();
    privfork::ipc::fdpass::send_with_fds(
        a.as_fd(),
        &[std::io::IoSlice::new(b"x")],
        std::slice::from_ref(&conn),
        false,
    )
    .unwrap();
    // Only the copy in `b`'s queue is left.
    drop(conn);
    drop(a);
    eprintln!("NESTER handing over");
    let _ = cx
        .channel()
        .send_fds(&ToMain::Handover(Bytes(Vec::new())), vec![b]);
    std::thread::sleep(Duration::from_secs(60));
    drop(client);
    0
}

/// Says ready, then asks for the status its row does not allow.
fn nosy(mut cx: RoleContext) -> i32 {
    cx.ready().unwrap();
    let _ = cx.family_status(Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(60));
    0
}

/// Sends a byte to `pong` and says ready once it comes back.
fn ping(cx: RoleContext) -> i32 {
    peer_echo(cx, "pong", true)
}

/// Echoes what `ping` sends; says ready after the first echo.
fn pong(cx: RoleContext) -> i32 {
    peer_echo(cx, "ping", false)
}

/// Ready only after a byte went through the channel to `peer` and back;
/// stops when main says so. Without a channel (or once it is gone) it
/// only waits for Stop, never ready.
fn peer_echo(mut cx: RoleContext, peer: &str, first: bool) -> i32 {
    let mut chan = cx.take_peer(peer);
    if first && let Some(c) = &chan {
        let ok = rustix::io::write(c, b"x").is_ok()
            && privfork::event::wait_fd(
                c.as_fd(),
                Interest::READABLE,
                Some(Instant::now() + Duration::from_secs(5)),
            )
            .unwrap_or(false)
            && matches!(rustix::io::read(c, &mut [0u8; 1]), Ok(1));
        if !ok {
            return 4;
        }
        cx.ready().unwrap();
    }
    let mut ready = first;
    loop {
        let mut p: Poller<'_, 2> = Poller::new();
        p.add_fd(cx.main_fd(), Interest::READABLE, 0);
        if let Some(c) = &chan {
            p.add(c, Interest::READABLE, 1);
        }
        p.wait(None).unwrap();
        let tokens: Vec<usize> = p.ready().map(|(t, _)| t).collect();
        if tokens.contains(&1) {
            let c = chan.as_ref().unwrap();
            let mut b = [0u8; 1];
            match rustix::io::read(c, &mut b) {
                Ok(1) => {
                    let _ = rustix::io::write(c, &b);
                    if !ready {
                        ready = true;
                        cx.ready().unwrap();
                    }
                }
                _ => chan = None, // gone: wait for Stop
            }
        }
        if tokens.contains(&0) && cx.poll_stop().is_some() {
            cx.stopped();
            return 0;
        }
    }
}

/// Says ready, then sends application messages (which main has no
/// handler for) as fast as it can.
fn chatter(mut cx: RoleContext) -> i32 {
    cx.ready().unwrap();
    loop {
        if cx.channel().send(&ToMain::App(Bytes(vec![0; 16]))).is_err() {
            return 1;
        }
    }
}

/// Helper: main, for `PF_SCENARIO`, listening on `PF_LISTEN`. With
/// `--check` (a smooth restart's preflight): exits 0, or 1 if
/// `PF_CHECK_FAIL` is set, binding nothing. `PF_DIE_AFTER_EXEC`: an image
/// started by a restart's exec dies before it adopts anything.
fn family_main() {
    if std::env::args().any(|a| a == "--check") {
        std::process::exit(i32::from(std::env::var_os("PF_CHECK_FAIL").is_some()));
    }
    if std::env::var_os("PF_DIE_AFTER_EXEC").is_some()
        && std::env::var_os("PRIVFORK_STATE_FD").is_some()
    {
        eprintln!("new image: dying before adopting anything");
        std::process::exit(7);
    }
    if std::env::var_os("PF_CLOSE_STDIO").is_some() {
        for fd in 0..3 {
            // SAFETY: nothing in this process uses fds 0-2 as owned
            // values; std's handles just see errors from now on.
            unsafe { libc::close(fd) };
        }
    }
    let roles = match std::env::var("PF_SCENARIO").as_deref() {
        Ok("crashy") => CRASHY,
        Ok("roguish") => ROGUISH,
        Ok("spinning") => SPINNING,
        Ok("flooding") => FLOODING,
        Ok("quitting") => QUITTING,
        Ok("deaf") => DEAFENED,
        Ok("pingpong") => PINGPONG,
        Ok("chatty") => CHATTY,
        Ok("status") => STATUSY,
        Ok("nosy") => NOSEY,
        Ok("late") => LATECOMER,
        Ok("crossing") => CROSSING,
        Ok("hanging") => HANGING,
        Ok("stubborn") => STUBBORNLY,
        Ok("deafasking") => DEAFASKING,
        Ok("lingering") => LINGERING,
        Ok("nesting") => NESTING,
        _ => BASIC,
    };
    let mut family = Family::new(roles).stop_timeout(Duration::from_secs(5));
    if let Some(ms) = std::env::var("PF_DRAIN_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        family = family.drain_timeout(Duration::from_millis(ms));
    }
    if std::env::var_os("PF_READY_TWICE").is_some() {
        // Members start with an empty environment: tell them in argv.
        family = family.args(vec!["ready-twice".into()]);
    }
    if std::ptr::eq(roles, STATUSY) {
        let user = std::env::var("PF_STATUS_USER").unwrap_or_else(|_| "4001".into());
        family = family
            .args(vec![
                "--promises".into(),
                "stdio".into(),
                "a b".into(),
                "--privfork-user".into(),
                "0".into(),
            ])
            .user("statuser", user);
    }
    if let Ok(spec) = std::env::var("PF_LISTEN") {
        family = family.listen(vec![spec.parse().unwrap()]);
    }
    std::process::exit(family.run_main());
}

// ---- the harness ---------------------------------------------------------

/// A running family main, its log collected as it comes.
struct Main {
    child: Child,
    log: Arc<Mutex<String>>,
    addr: String,
}

impl Main {
    fn start(scenario: &str) -> Self {
        Self::start_with(scenario, |_| {})
    }

    fn start_with(scenario: &str, adjust: impl FnOnce(&mut Command)) -> Self {
        Self::start_exe(&std::env::current_exe().unwrap(), scenario, adjust)
    }

    /// As `start_with`, main being the binary at `exe` (a copy of this
    /// one).
    fn start_exe(exe: &std::path::Path, scenario: &str, adjust: impl FnOnce(&mut Command)) -> Self {
        // A free port: bound, noted, released (loopback only).
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let mut cmd = Command::new(exe);
        cmd.args([CASE, "family_main"])
            .env("PF_SCENARIO", scenario)
            .env("PF_LISTEN", format!("{addr},name=http"));
        adjust(&mut cmd);
        Self::spawn(cmd, addr)
    }

    /// Main started as systemd starts it: a listener on 127.0.0.1 at fd 3
    /// named `name`, `LISTEN_FDS=1` and `LISTEN_PID` its own pid (set by a
    /// shell that then execs it). The listener is returned to keep open.
    fn socket_activated(name: &str) -> (Self, OwnedFd) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let fd = OwnedFd::from(listener);
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            &format!("LISTEN_PID=$$ exec \"$0\" {CASE} family_main"),
            std::env::current_exe().unwrap().to_str().unwrap(),
        ])
        .env("PF_SCENARIO", "basic")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", name)
        .env_remove("PF_LISTEN");
        support::listener_at_fd3(&mut cmd, &fd);
        (Self::spawn(cmd, addr), fd)
    }

    fn spawn(mut cmd: Command, addr: String) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        if std::env::var_os("PF_TEST_NO_LOG_READER").is_some() {
            // A main whose stderr nobody reads (the pipe fills up).
            std::mem::forget(stderr);
            return Self { child, log, addr };
        }
        // A slow reader (main's log queue fills meanwhile), and lines
        // the case does not look at left out.
        let delay = std::env::var("PF_TEST_LOG_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis);
        let skip = std::env::var("PF_TEST_LOG_SKIP").ok();
        std::thread::spawn(move || {
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if skip.as_ref().is_some_and(|s| line.contains(s.as_str())) {
                    continue;
                }
                let mut l = sink.lock().unwrap();
                if l.len() < 1 << 20 {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        Self { child, log, addr }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log holds `count` lines containing every one of
    /// `words`; fails the test after `secs`.
    fn wait_log(&self, words: &[&str], count: usize, secs: u64) -> Vec<String> {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let found: Vec<String> = self
                .log()
                .lines()
                .filter(|l| words.iter().all(|w| l.contains(w)))
                .map(str::to_owned)
                .collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                Instant::now() < end,
                "no {count} log lines with {words:?} within {secs} s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pids of main's children, with the role in their title.
    fn members(&self) -> Vec<(u32, String)> {
        let pid = self.pid();
        let kids =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        kids.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .map(|p: u32| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let title = String::from_utf8_lossy(cmd.split(|&b| b == 0).next().unwrap_or(&[]))
                    .into_owned();
                (p, title)
            })
            .collect()
    }

    fn member(&self, role: &str) -> u32 {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((p, _)) = self
                .members()
                .into_iter()
                .find(|(_, t)| t.ends_with(&format!(": {role}")))
            {
                return p;
            }
            assert!(
                Instant::now() < end,
                "no {role} member; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.pid() as i32).unwrap(),
            sig,
        )
        .unwrap();
    }

    /// Waits for main to exit; its status code.
    fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                Instant::now() < end,
                "main still running; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Main {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// GET / until it answers 200 (the worker may be restarting).
fn get_ok(addr: &str, secs: u64) -> String {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = write!(s, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            if s.read_to_string(&mut out).is_ok() && out.starts_with("HTTP/1.1 200") {
                return out;
            }
        }
        assert!(Instant::now() < end, "no 200 within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status_field(pid: u32, name: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} for {pid}"))
        .trim()
        .to_owned()
}

fn pidfd(pid: u32) -> OwnedFd {
    rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap()
}

/// Whether the process behind `fd` exits within `secs`.
fn exits_within(fd: &OwnedFd, secs: f64) -> bool {
    privfork::event::wait_fd(
        fd.as_fd(),
        Interest::READABLE,
        Some(Instant::now() + Duration::from_secs_f64(secs)),
    )
    .unwrap()
}

// ---- the cases -------------------------------------------------------------

fn members_run_as_their_user_sandboxed() {
    require_root();
    let main = Main::start("basic");
    main.wait_log(&["every role is ready"], 1, 20);
    let body = get_ok(&main.addr, 10);
    assert!(body.contains("worker uid=65534"), "{body}");
    let w = main.member("worker");
    assert_eq!(status_field(w, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(w, "Groups"), "65534");
    assert_eq!(status_field(w, "Seccomp"), "2");
    assert_eq!(status_field(w, "NoNewPrivs"), "1");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(w, set), "0000000000000000", "{set}");
    }
    // Exactly: /dev/null on 0, the log pipe on 1 and 2, the channel to
    // main on 3, the listener on 4 — nothing else of main's.
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{w}/fd"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let n: i32 = e.file_name().to_str().unwrap().parse().unwrap();
            let target = std::fs::read_link(e.path()).unwrap();
            (n, target.to_string_lossy().into_owned())
        })
        .collect();
    fds.sort();
    let numbers: Vec<i32> = fds.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [0, 1, 2, 3, 4], "{fds:?}");
    assert_eq!(fds[0].1, "/dev/null");
    assert!(
        fds[1].1.starts_with("pipe:") && fds[1].1 == fds[2].1,
        "{fds:?}"
    );
    assert!(
        fds[3].1.starts_with("socket:") && fds[4].1.starts_with("socket:"),
        "{fds:?}"
    );
    // The title names the role; main runs as root.
    let title = String::from_utf8(std::fs::read(format!("/proc/{w}/cmdline")).unwrap()).unwrap();
    let argv0 = title.split('\0').next().unwrap();
    assert!(
        argv0.starts_with("family-") && argv0.ends_with(": worker"),
        "{title:?}"
    );
    assert_eq!(status_field(main.pid(), "Uid"), "0\t0\t0\t0");
}

fn killed_worker_is_restarted() {
    require_root();
    let main = Main::start("basic");
    main.wait_log(&["every role is ready"], 1, 20);
    let first = main.member("worker");
    let fd = pidfd(first);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(first as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(exits_within(&fd, 5.0));
    main.wait_log(&["restarting worker:0"], 1, 10);
    main.wait_log(&["[worker:0", "started"], 2, 10);
    let body = get_ok(&main.addr, 10);
    let second = main.member("worker");
    assert_ne!(first, second);
    assert!(body.contains(&format!("pid={second}")), "{body}");
    assert!(
        main.log()
            .contains(&format!("[worker:0 {first}] killed by signal 9 (SIGKILL)"))
    );
}

fn crash_loop_backs_off() {
    require_root();
    let main = Main::start("crashy");
    // 100 ms, 200 ms, 400 ms, 800 ms: the delay doubles while it keeps
    // dying young, and the loop is reported.
    let lines = main.wait_log(&["restarting crasher:0 in"], 4, 20);
    let delays: Vec<&str> = lines
        .iter()
        .map(|l| l.split(" in ").nth(1).unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(
        &delays[..4],
        ["100ms", "200ms", "400ms", "800ms"],
        "{lines:?}"
    );
    main.wait_log(&["crasher:0 is crash-looping"], 1, 10);
    // Main and the worker are fine meanwhile.
    assert!(get_ok(&main.addr, 10).contains("worker uid="));
    assert!(main.log().contains("exited with status 3"));
}

fn sigterm_lets_in_flight_requests_finish() {
    require_root();
    let mut main = Main::start("basic");
    main.wait_log(&["every role is ready"], 1, 20);
    get_ok(&main.addr, 10);
    let addr = main.addr.clone();
    let slow = std::thread::spawn(move || get(&addr, "/slow"));
    // The request is in the worker when main is told to stop.
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    main.signal(rustix::process::Signal::TERM);
    let answer = slow.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("worker uid=65534"), "{answer}");
    assert_eq!(main.wait_exit(10), Some(0), "log:\n{}", main.log());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        start.elapsed()
    );
    let log = main.log();
    assert!(log.contains("SIGTERM: stopping the family"), "{log}");
    assert!(log.contains("exited with status 0"), "{log}");
    assert!(log.contains("privfork family: stopped\n"), "{log}");
    // Nothing accepts any more.
    assert!(TcpStream::connect(&main.addr).is_err());
}

fn members_die_with_main() {
    require_root();
    let main = Main::start("spinning");
    main.wait_log(&["every role is ready"], 1, 20);
    let members = main.members();
    assert_eq!(members.len(), 2, "{members:?}");
    let fds: Vec<(u32, OwnedFd)> = members.iter().map(|(p, _)| (*p, pidfd(*p))).collect();
    main.signal(rustix::process::Signal::KILL);
    for (p, fd) in &fds {
        // The spinner never reads its channel: its death signal ends it.
        assert!(exits_within(fd, 1.0), "member {p} outlived main by 1 s");
    }
}

fn socket_activation() {
    require_root();
    let (main, fd) = Main::socket_activated("http");
    main.wait_log(&["every role is ready"], 1, 20);
    let body = get_ok(&main.addr, 10);
    assert!(body.contains("worker uid=65534"), "{body}");
    drop(fd);
}

fn disallowed_message_restarts_the_member() {
    require_root();
    let main = Main::start("roguish");
    // Its row allows no application message: the channel is closed, the
    // member killed and started again; main and the worker carry on.
    main.wait_log(&["[rogue:0", "broke the protocol"], 2, 20);
    let lines = main.wait_log(&["[rogue:0", "started"], 2, 10);
    assert_ne!(lines[0], lines[1]);
    assert!(get_ok(&main.addr, 10).contains("worker uid=65534"));
    assert!(
        rustix::process::test_kill_process(
            rustix::process::Pid::from_raw(main.pid() as i32).unwrap()
        )
        .is_ok()
    );
}

fn sd_notify_ready_and_stopping() {
    require_root();
    let dir = support::TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut main = Main::start_with("basic", |cmd| {
        cmd.env("NOTIFY_SOCKET", &path);
    });
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.contains("READY=1"), "{first:?}");
    // Ready only once every role said so: the worker answers by now.
    assert!(get_ok(&main.addr, 5).contains("worker uid=65534"));
    main.signal(rustix::process::Signal::TERM);
    let n = sock.recv(&mut buf).unwrap();
    let second = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(second.contains("STOPPING=1"), "{second:?}");
    assert_eq!(main.wait_exit(10), Some(0));
}

fn flooding_member_and_stalled_stderr_do_not_block_main() {
    require_root();
    // Main's stderr is a pipe nobody reads (it fills within the first
    // moments), and a member floods its own stderr: main keeps serving,
    // supervising and stopping.
    // SAFETY: the case process is single-threaded; the variable is read
    // by Main::spawn in this thread.
    unsafe { std::env::set_var("PF_TEST_NO_LOG_READER", "1") };
    let mut main = Main::start("flooding");
    std::thread::sleep(Duration::from_secs(2));
    let body = get_ok(&main.addr, 10);
    let first = body.split("pid=").nth(1).unwrap().trim().to_owned();
    let w: u32 = first.parse().unwrap();
    let fd = pidfd(w);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(w as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(exits_within(&fd, 5.0));
    // Restarted despite the flood and the full stderr.
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let body = get_ok(&main.addr, 10);
        if !body.contains(&format!("pid={first}")) {
            break;
        }
        assert!(Instant::now() < end, "the worker was not restarted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    main.signal(rustix::process::Signal::TERM);
    // The flooder never reads its channel: killed at the 5 s stop
    // deadline; main then exits (1: a member had to be killed), its last
    // log lines given up after a second.
    assert_eq!(main.wait_exit(15), Some(1));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

fn connected_fork_server_has_no_pid() {
    // The handle cannot know the server's pid: SO_PEERCRED of a
    // socketpair names its creator (here this process, in the family
    // main), which must not pass for the server.
    let (ours, _theirs) = privfork::ipc::socketpair().unwrap();
    let server = privfork::fork_server::ForkServer::connect(ours).unwrap();
    assert_eq!(server.pid(), 0);
}

fn main_started_without_stdio_opens_dev_null() {
    require_root();
    // Main started with fds 0, 1 and 2 closed: its first opens (the
    // pinned binary, the listener, members' channels) must not land
    // there, or its log would go into them. (Rust's runtime opens
    // /dev/null on them before `main` in a Rust program; the helper
    // closes them after, as a host without that runtime would start.)
    let main = Main::start_with("basic", |cmd| {
        cmd.env("PF_CLOSE_STDIO", "1");
    });
    assert!(get_ok(&main.addr, 20).contains("worker uid=65534"));
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{}/fd/{fd}", main.pid())).unwrap();
        assert_eq!(target, std::path::Path::new("/dev/null"), "fd {fd}");
    }
}

fn systemd_fd_names_are_checked() {
    require_root();
    // A name that spec names may not have (control character, space):
    // refused with the same rule.
    let (mut main, fd) = Main::socket_activated("ht tp\x1b");
    main.wait_log(&["LISTEN_FDNAMES", "must be printable ASCII"], 1, 20);
    assert_eq!(main.wait_exit(20), Some(1));
    drop(fd);
}

fn ready_then_dead_is_a_crash_loop() {
    require_root();
    let main = Main::start("quitting");
    // Ready, then gone at once: a crash loop all the same.
    main.wait_log(&["[quitter:0", "ready"], 3, 20);
    main.wait_log(&["quitter:0 is crash-looping"], 1, 20);
    let lines = main.wait_log(&["restarting quitter:0 in"], 3, 10);
    assert!(lines[2].contains(" in 400ms "), "{lines:?}");
}

fn member_deaf_to_a_restart_stop_is_killed() {
    require_root();
    let main = Main::start("deaf");
    main.wait_log(&["every role is ready"], 1, 20);
    // The linker dies: its peer is told to stop (to restart with a fresh
    // channel), ignores it, and is killed at the deadline (5 s).
    let linker = main.member("linker");
    let fd = pidfd(linker);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(linker as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(exits_within(&fd, 5.0));
    main.wait_log(&["[deaf:0", "did not stop in time; killing it"], 1, 15);
    main.wait_log(&["[deaf:0", "started"], 2, 10);
}

fn peers_meet_again_after_a_restart() {
    require_root();
    let main = Main::start("pingpong");
    main.wait_log(&["every role is ready"], 1, 20);
    // Ping (which lists pong) dies: pong is stopped and starts at once,
    // ping after its backoff; both must get the two ends of one fresh
    // pair (each says ready only after an echo through it).
    for round in 2..4 {
        let p = main.member("ping");
        let fd = pidfd(p);
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(p as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        assert!(exits_within(&fd, 5.0));
        main.wait_log(&["[ping:0", "ready"], round, 8);
        main.wait_log(&["[pong:0", "ready"], round, 8);
    }
    // And when pong dies, likewise.
    let p = main.member("pong");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(p as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    main.wait_log(&["[ping:0", "ready"], 4, 8);
    main.wait_log(&["[pong:0", "ready"], 4, 8);
}

fn linked_role_with_instances_is_refused() {
    // A peer channel joins two processes: a linked role has one instance.
    static TWO_PONGS: &[Role] = &[
        PING,
        Role {
            instances: 2,
            ..PONG
        },
    ];
    let panic = std::panic::catch_unwind(|| Family::new(TWO_PONGS)).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("\"pong\" has peer channels, so it must have exactly one instance"),
        "{msg}"
    );
}

fn app_flood_does_not_drown_mains_lines() {
    require_root();
    // A member sends application messages main has no handler for, as
    // fast as it can, while main's log is not read for 8 s: main's own lines
    // (a restart) still get through.
    // SAFETY: the case process is single-threaded; the variables are read
    // by Main::spawn in this thread.
    unsafe {
        std::env::set_var("PF_TEST_LOG_DELAY_MS", "8000");
        std::env::set_var("PF_TEST_LOG_SKIP", "application message");
    }
    let main = Main::start("chatty");
    let body = get_ok(&main.addr, 20);
    let first: u32 = body.split("pid=").nth(1).unwrap().trim().parse().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let fd = pidfd(first);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(first as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(exits_within(&fd, 5.0));
    main.wait_log(&["every role is ready"], 1, 10);
    main.wait_log(&["restarting worker:0"], 1, 10);
    main.wait_log(&["[worker:0", "started"], 2, 10);
}

fn terminal_nobody_reads_does_not_block_main() {
    require_root();
    // Main's stderr is a terminal (a pty made here) whose master nobody
    // reads, and a member floods: main's writes must not block it, so a
    // SIGTERM still stops the family in time.
    // SAFETY: integer-only calls on fds this function owns; the slave's
    // name is a NUL-terminated string the kernel only reads.
    let (master, slave) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0);
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let name = libc::ptsname(master);
        assert!(!name.is_null());
        let slave = libc::open(name, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(slave >= 0);
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave))
    };
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([CASE, "family_main"])
        .env("PF_SCENARIO", "flooding")
        .env("PF_LISTEN", format!("{addr},name=http"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut main = Main {
        child,
        log: Arc::new(Mutex::new(String::new())),
        addr,
    };
    get_ok(&main.addr, 20);
    // The terminal's buffer fills.
    std::thread::sleep(Duration::from_secs(2));
    let start = Instant::now();
    main.signal(rustix::process::Signal::TERM);
    // The flooder is killed at the 5 s stop deadline; main exits (1) and
    // gives up its last lines after a second.
    assert_eq!(main.wait_exit(15), Some(1));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    drop(master);
}

fn status_agrees_with_proc_and_args_and_user_reach_members() {
    require_root();
    let main = Main::start("status");
    let line = main.wait_log(&["STATUS gen="], 1, 30).remove(0);
    let args = main.wait_log(&["ARGS "], 1, 10).remove(0);
    // The arguments arrive whole, in order; one that looks like a
    // privfork flag stays an argument and changes nothing.
    assert!(
        args.ends_with(r#"ARGS ["--promises", "stdio", "a b", "--privfork-user", "0"]"#),
        "{args}"
    );
    assert!(line.contains(&format!("main={}", main.pid())), "{line}");
    assert!(line.contains("gen=1"), "{line}");
    for (role, uid, promises) in [
        ("worker", 65534, "stdio+accept"),
        ("statuser", 4001, "stdio"),
    ] {
        let pid = main.member(role);
        let part = line
            .split(" | ")
            .find(|p| p.starts_with(&format!("{role} ")))
            .unwrap_or_else(|| panic!("{role} in {line}"));
        // What main told the member agrees with what the kernel says.
        assert!(part.contains(&format!("pid={pid} ")), "{part}");
        assert_eq!(
            status_field(pid, "Uid"),
            format!("{uid}\t{uid}\t{uid}\t{uid}"),
            "{role}"
        );
        assert!(part.contains(&format!(" uid={uid} ")), "{part}");
        assert!(
            part.contains(&format!(" seccomp={} ", status_field(pid, "Seccomp"))),
            "{part}"
        );
        assert!(
            part.contains(&format!(
                " filters={} ",
                status_field(pid, "Seccomp_filters")
            )),
            "{part}"
        );
        assert!(part.contains(" nnp=true "), "{part}");
        assert!(part.contains(&format!(" promises={promises} ")), "{part}");
        assert!(part.contains(" landlock=full "), "{part}");
    }
    assert!(line.contains(" user=nobody "), "{line}");
    assert!(line.contains("detail=a+detail+line"), "{line}");
}

fn status_query_without_the_row_kills_the_member() {
    require_root();
    let main = Main::start("nosy");
    main.wait_log(&["[nosy:0", "broke the protocol"], 1, 20);
    main.wait_log(&["[nosy:0", "started"], 2, 10);
}

fn unknown_user_stops_main_naming_it() {
    require_root();
    let mut main = Main::start_with("status", |c| {
        c.env("PF_STATUS_USER", "no-such-user-pf");
    });
    assert_eq!(main.wait_exit(20), Some(1));
    // The log reader may still be draining the pipe.
    main.wait_log(&[r#"role "statuser": user "no-such-user-pf""#], 1, 5);
    assert!(!main.log().contains("started"), "{}", main.log());
}

fn a_late_status_answer_is_not_taken_for_the_next() {
    require_root();
    let main = Main::start("late");
    let line = main.wait_log(&["LATE uptime_ms="], 1, 30).remove(0);
    let ms: u64 = line.rsplit('=').next().unwrap().trim().parse().unwrap();
    // The unread answer was made at once; the right one after 600 ms.
    assert!(ms >= 600, "stale answer: {line}");
}

fn ready_crossing_a_stop_is_not_a_protocol_break() {
    require_root();
    let main = Main::start("crossing");
    // Its peer died while it was starting: told to stop, it says Ready
    // (crossing the Stop), then Stopped, and exits on its own — the same
    // process, seen through each step.
    let crossed = main
        .wait_log(&["[slowready:0", "CROSSED true"], 1, 20)
        .remove(0);
    let tag = crossed.split(']').next().unwrap().to_owned() + "]";
    main.wait_log(&[&tag, "] ready"], 1, 10);
    main.wait_log(&[&tag, "exited with status 0"], 1, 10);
    let log = main.log();
    assert!(!log.contains("broke the protocol"), "{log}");
    assert!(!log.contains("did not stop in time"), "{log}");
}

fn a_second_ready_after_a_crossing_breaks_the_protocol() {
    require_root();
    let main = Main::start_with("crossing", |c| {
        c.env("PF_READY_TWICE", "1");
    });
    let crossed = main
        .wait_log(&["[slowready:0", "CROSSED true"], 1, 20)
        .remove(0);
    let tag = crossed.split(']').next().unwrap().to_owned() + "]";
    main.wait_log(&[&tag, "broke the protocol"], 1, 10);
}

// ---- smooth restart --------------------------------------------------------

/// Whether process `pid` has socket `inode` open.
fn holds_socket(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == want))
        })
        .unwrap_or(false)
}

fn fd_count_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Sends SIGHUP and waits for restart `n` to finish well.
fn restart(main: &Main, n: u64) {
    main.signal(rustix::process::Signal::HUP);
    main.wait_log(&[&format!("restart {n} done")], 1, 30);
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn sighup_restarts_in_place_on_the_same_socket() {
    require_root();
    let main = Main::start("basic");
    main.wait_log(&["every role is ready"], 1, 20);
    let inode = listening_inode(port_of(&main.addr)).expect("the listening socket");
    assert!(holds_socket(main.pid(), inode));
    let old = main.member("worker");
    let old_fd = pidfd(old);
    restart(&main, 1);
    let done = main.wait_log(&["restart 1 done"], 1, 1).remove(0);
    assert!(done.contains("generation 2 serving"), "{done}");
    // Main is the same process (exec'd in place), with the same socket.
    assert_ne!(status_field(main.pid(), "State").chars().next(), Some('Z'));
    main.wait_log(
        &["re-executed in place", &format!("pid {}", main.pid())],
        1,
        1,
    );
    assert_eq!(listening_inode(port_of(&main.addr)), Some(inode));
    assert!(holds_socket(main.pid(), inode));
    // The old worker is gone; the new one accepts on that same socket.
    assert!(exits_within(&old_fd, 5.0));
    let new = main.member("worker");
    assert_ne!(new, old);
    assert!(
        holds_socket(new, inode),
        "the new worker has the same socket"
    );
    assert!(get_ok(&main.addr, 5).contains(&format!("pid={new}")));
    // It runs as the old one did: sandboxed, as nobody.
    assert_eq!(status_field(new, "Seccomp"), "2");
    assert_eq!(
        status_field(new, "Uid").split_whitespace().next(),
        Some("65534")
    );
}

fn failed_preflight_keeps_the_old_generation() {
    require_root();
    let dir = support::TempDir::new("preflight");
    let bin = dir.path().join("family-main");
    std::fs::copy(std::env::current_exe().unwrap(), &bin).unwrap();
    let main = Main::start_exe(&bin, "basic", |_| {});
    main.wait_log(&["every role is ready"], 1, 20);
    let old = main.member("worker");
    // The binary is replaced (renamed over, as a package manager does) by
    // one that exits at once.
    let next = dir.path().join("next");
    std::fs::copy("/bin/false", &next).unwrap();
    std::fs::rename(&next, &bin).unwrap();
    main.signal(rustix::process::Signal::HUP);
    let line = main
        .wait_log(&["restart 1 failed", "preflight"], 1, 20)
        .remove(0);
    assert!(line.contains("exited with status 1"), "{line}");
    assert!(line.contains("generation 1 keeps serving"), "{line}");
    // The old generation serves on, untouched.
    assert!(get_ok(&main.addr, 5).contains(&format!("pid={old}")));
    assert_eq!(main.member("worker"), old);
    // A good binary again: the next SIGHUP goes through.
    std::fs::copy(std::env::current_exe().unwrap(), &next).unwrap();
    std::fs::rename(&next, &bin).unwrap();
    restart(&main, 2);
    assert!(get_ok(&main.addr, 5).contains("worker uid=65534"));
    assert_ne!(main.member("worker"), old);
}

fn new_member_never_ready_fails_the_restart() {
    require_root();
    let main = Main::start("hanging");
    main.wait_log(&["every role is ready"], 1, 20);
    let old = main.member("hanger");
    let old_fd = pidfd(old);
    main.signal(rustix::process::Signal::HUP);
    let line = main.wait_log(&["restart 1 failed"], 1, 20).remove(0);
    assert!(line.contains("not ready within 2s"), "{line}");
    assert!(line.contains("generation 1 keeps serving"), "{line}");
    // The failed generation is gone; the old one never stopped.
    assert!(!exits_within(&old_fd, 0.2));
    assert_eq!(main.members().len(), 1, "{:?}", main.members());
    assert!(get_ok(&main.addr, 5).contains(&format!("pid={old}")));
}

fn sighups_during_a_restart_coalesce() {
    require_root();
    let main = Main::start("basic");
    main.wait_log(&["every role is ready"], 1, 20);
    // A request in flight holds the old worker for 1.5 s: the restart
    // lasts at least that long, so every SIGHUP below comes during it.
    let addr = main.addr.clone();
    let slow = std::thread::spawn(move || get(&addr, "/slow"));
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..50 {
        main.signal(rustix::process::Signal::HUP);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(slow.join().unwrap().starts_with("HTTP/1.1 200"));
    main.wait_log(&["restart 2 done"], 1, 30);
    std::thread::sleep(Duration::from_millis(500));
    let log = main.log();
    assert!(!log.contains("restart 3"), "{log}");
    assert_eq!(log.matches("one more restart follows").count(), 1, "{log}");
}

fn stuck_old_member_is_killed_at_the_drain_deadline() {
    require_root();
    let main = Main::start_with("stubborn", |c| {
        c.env("PF_DRAIN_MS", "1000");
    });
    main.wait_log(&["every role is ready"], 1, 20);
    let stuck = main.member("stubborn");
    let stuck_fd = pidfd(stuck);
    main.signal(rustix::process::Signal::HUP);
    main.wait_log(&["accepting after"], 1, 20);
    // Deaf to the drain: alive until the deadline, killed at it.
    assert!(!exits_within(&stuck_fd, 0.5));
    main.wait_log(
        &[
            &format!("[stubborn:0 {stuck}]"),
            "still running at the drain deadline; killing it",
        ],
        1,
        10,
    );
    assert!(exits_within(&stuck_fd, 2.0));
    main.wait_log(&["restart 1 done"], 1, 10);
}

fn request_in_flight_across_a_restart_completes() {
    require_root();
    let main = Main::start("basic");
    main.wait_log(&["every role is ready"], 1, 20);
    let old = main.member("worker");
    let addr = main.addr.clone();
    let slow = std::thread::spawn(move || get(&addr, "/slow"));
    std::thread::sleep(Duration::from_millis(200));
    main.signal(rustix::process::Signal::HUP);
    let answer = slow.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&format!("pid={old}")), "{answer}");
    main.wait_log(&["restart 1 done"], 1, 20);
}

fn fds_processes_and_filters_stay_flat_over_restarts() {
    require_root();
    let main = Main::start("basic");
    main.wait_log(&["every role is ready"], 1, 20);
    restart(&main, 1);
    let pid = main.pid();
    let fds = fd_count_of(pid);
    let members = main.members().len();
    let filters = status_field(pid, "Seccomp_filters");
    let threads = status_field(pid, "Threads");
    for n in 2..=200 {
        restart(&main, n);
    }
    assert_eq!(fd_count_of(pid), fds, "main's fds after 200 restarts");
    assert_eq!(main.members().len(), members, "{:?}", main.members());
    assert_eq!(status_field(pid, "Seccomp_filters"), filters);
    assert_eq!(status_field(pid, "Threads"), threads);
    assert_eq!(threads, "1");
    assert!(get_ok(&main.addr, 5).contains("worker uid=65534"));
}

fn new_image_dying_before_adopting_ends_the_family_loudly() {
    require_root();
    let mut main = Main::start_with("basic", |c| {
        c.env("PF_DIE_AFTER_EXEC", "1");
    });
    main.wait_log(&["every role is ready"], 1, 20);
    let worker_fd = pidfd(main.member("worker"));
    main.signal(rustix::process::Signal::HUP);
    // Main exits with the new image's code; the members follow it (their
    // parent-death signal), none is left behind.
    assert_eq!(main.wait_exit(20), Some(7));
    assert!(exits_within(&worker_fd, 5.0));
    main.wait_log(&["new image: dying before adopting anything"], 1, 5);
    assert!(TcpStream::connect(&main.addr).is_err(), "nobody listens");
}

fn preflight_refuses_a_record_version_it_cannot_read() {
    require_root();
    let run = |version: &str, listeners: &str| {
        Command::new(std::env::current_exe().unwrap())
            .args([CASE, "family_main", "--check"])
            .env("PRIVFORK_PREFLIGHT_RECORD", version)
            .env("PRIVFORK_PREFLIGHT_LISTENERS", listeners)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run("999", "http");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("version 999") && err.contains("version 1"),
        "{err}"
    );
    assert_eq!(run("1", "http").status.code(), Some(0));
    // A role needing a listener the running main does not have: refused
    // here, not after the exec (where it would take the family down).
    let out = run("1", "other");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs listener \"http\""), "{err}");
}

fn sd_notify_on_a_restart() {
    require_root();
    let dir = support::TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let main = Main::start_with("basic", |cmd| {
        cmd.env("NOTIFY_SOCKET", &path);
    });
    let mut buf = [0u8; 4096];
    let mut recv = || {
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(recv().contains("READY=1"));
    main.signal(rustix::process::Signal::HUP);
    let reloading = recv();
    assert!(reloading.contains("RELOADING=1"), "{reloading:?}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    let ready = recv();
    assert!(ready.contains("READY=1"), "{ready:?}");
    assert!(
        ready.contains("STATUS=generation 2 serving; last restart: restart 1 done"),
        "{ready:?}"
    );
}

fn member_not_reading_its_answers_cannot_hang_a_stop() {
    require_root();
    let mut main = Main::start("deafasking");
    main.wait_log(&["DEAFASKER sent its queries"], 1, 20);
    std::thread::sleep(Duration::from_millis(300));
    main.signal(rustix::process::Signal::TERM);
    // Main never waits on a member: it exits within its stop deadline
    // (5 s), whatever that member does.
    assert!(main.wait_exit(12).is_some());
}

fn member_not_reading_cannot_veto_a_restart() {
    require_root();
    let main = Main::start("deafasking");
    main.wait_log(&["DEAFASKER sent its queries"], 1, 20);
    std::thread::sleep(Duration::from_millis(300));
    main.signal(rustix::process::Signal::HUP);
    main.wait_log(&["restart 1 done"], 1, 30);
}

fn lingering_socket_sent_to_main_cannot_block_it() {
    // Handover while running breaks the protocol: the frame is refused
    // and its socket closed by main, which must not wait for it.
    refused_socket_does_not_block_main("lingering", "[lingerer:0");
}

fn lingering_socket_nested_in_a_unix_socket_cannot_block_main() {
    refused_socket_does_not_block_main("nesting", "[nester:0");
}

/// Main, refusing what the member of `scenario` sends, still stops
/// within its deadline on SIGTERM.
fn refused_socket_does_not_block_main(scenario: &str, tag: &str) {
    require_root();
    let mut main = Main::start(scenario);
    main.wait_log(&[tag, "broke the protocol"], 1, 20);
    main.signal(rustix::process::Signal::TERM);
    assert!(
        main.wait_exit(12).is_some(),
        "main blocked; log:\n{}",
        main.log()
    );
}
