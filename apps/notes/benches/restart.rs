//! Smooth restart under load: notes (SIGHUP to main) against nginx
//! (`nginx -s reload`) in one run, the same load for each: 32 clients on
//! loopback (half keep-alive, half a new connection per request), never
//! retrying (see `tests/common/load.rs`), reading the same JSON document
//! (a note through notes' API; its bytes as a static file from nginx).
//!
//! Each side runs bursts of reloads, one a second, between quiet
//! stretches. A second in which a reload was sent, and the second after
//! it, are *restart seconds*; the others are *quiet seconds*; the figures
//! are split accordingly. For notes it also prints what main's log says
//! of each restart (`restart N done: … handover H ms …`).
//!
//! Run as root: `cargo bench -p notes --bench restart` (full, per server:
//! 5 s quiet, then 6 × (10 reloads, 5 s quiet) = 60 reloads in 95 s).
//! Without `--bench` (as `cargo test --benches` runs it), or with
//! `--quick`: 2 s quiet, 5 reloads, 2 s quiet. Options after `--`:
//! `--burst N` (reloads per burst), `--bursts N`, `--quiet-secs N`,
//! `--pace-ms N` (each client sends at most one request every N ms; 0,
//! the default, as fast as it is answered), `--only notes|nginx`,
//! `--per-second` (figures for each second). Needs nginx (`apt-get
//! install nginx`; `.ci/run` installs it); it runs its own, with a config
//! in a temp dir, never the system's.

#[path = "../tests/common/load.rs"]
mod load;
#[path = "restart/report.rs"]
mod report;
#[path = "../tests/common/restart_log.rs"]
mod restart_log;
#[path = "restart/servers.rs"]
mod servers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use load::{LoadConfig, LoadReport, Summary, start_load};
use report::{notes_notes, print_per_second, print_table};
use servers::{NginxProc, NotesProc, TempDir, find_nginx};

const CLIENTS: usize = 32;
const KEEPALIVE_SHARE: f64 = 0.5;
/// Targets, printed beside the figures.
const TARGET_P99_RATIO: f64 = 1.2;
const TARGET_MAX: Duration = Duration::from_secs(1);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let opt = |name: &str| {
        args.iter().position(|a| a == name).map(|i| {
            args.get(i + 1)
                .unwrap_or_else(|| panic!("{name} needs a value"))
        })
    };
    let secs = |name: &str, default: u64| {
        opt(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} {v:?}: not seconds"))
        })
    };
    let schedule = Schedule {
        quiet: Duration::from_secs(secs("--quiet-secs", if quick { 2 } else { 5 })),
        burst: u32::try_from(secs("--burst", if quick { 5 } else { 10 })).unwrap(),
        bursts: u32::try_from(secs("--bursts", if quick { 1 } else { 6 })).unwrap(),
        period: Duration::from_secs(1),
    };
    assert!(schedule.burst > 0, "--burst: at least 1");
    let pace = match secs("--pace-ms", 0) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    let only = opt("--only").map(String::as_str);
    assert!(
        matches!(only, None | Some("notes" | "nginx")),
        "--only notes or --only nginx"
    );
    assert!(
        rustix::process::geteuid().is_root(),
        "the restart bench starts notes as root (its worker drops to nobody) and nginx: run it as root"
    );
    // Loud, not skipped: a comparison without its baseline is no result.
    let nginx = (only != Some("notes")).then(|| {
        find_nginx().unwrap_or_else(|| {
            panic!(
                "\n\n*** the restart bench needs nginx (not found on PATH nor at /usr/sbin/nginx): \
                 apt-get install nginx (.ci/run installs it) ***\n"
            )
        })
    });
    let notes_bin = PathBuf::from(env!("CARGO_BIN_EXE_notes"));
    assert!(
        notes_bin.exists(),
        "no notes binary at {} (build it: cargo build --release -p notes)",
        notes_bin.display()
    );
    let keepalive = load_config(loopback(), "/", None).keepalive_clients();
    println!(
        "restart benchmark ({}): per server {} s: {} s quiet, then {} x ({} reloads one a second, \
         {} s quiet); {CLIENTS} clients ({keepalive} keep-alive, {} a new connection per request), \
         {}, no retries",
        if quick { "quick" } else { "full" },
        schedule.duration().as_secs(),
        schedule.quiet.as_secs(),
        schedule.bursts,
        schedule.burst,
        schedule.quiet.as_secs(),
        CLIENTS - keepalive,
        pace.map_or("each sending as fast as answered".into(), |p| format!(
            "each at most one request every {} ms",
            p.as_millis()
        )),
    );
    println!("notes: {}", notes_bin.display());

    let tmp = TempDir::new();
    let mut problems: Vec<String> = Vec::new();
    let mut sides: Vec<Side> = Vec::new();

    // notes first: its note's JSON is what nginx serves too.
    let (doc, notes_side) = {
        let mut app = NotesProc::start(&notes_bin, &tmp.path().join("notes-data"));
        let id = app.create_note();
        let path = format!("/api/notes/{id}");
        let doc = app.get(&path);
        let side = if only == Some("nginx") {
            None
        } else {
            let before = app.counts();
            let pid = rustix::process::Pid::from_raw(app.pid() as i32).unwrap();
            let run = run_side(app.addr, &path, &schedule, pace, &mut || {
                rustix::process::kill_process(pid, rustix::process::Signal::HUP)
                    .map_err(|e| format!("SIGHUP to notes' main: {e}"))
            });
            let after = app.counts();
            if let Some(st) = app.exited() {
                problems.push(format!("notes exited during the run ({st})"));
            }
            let log = app.log();
            Some((run, log, before, after))
        };
        (doc, side)
    };
    if let Some((run, log, before, after)) = notes_side {
        problems.extend(run.problems.iter().map(|p| format!("notes: {p}")));
        sides.push(Side {
            name: "notes",
            extra: notes_notes(&log, &run, before, after),
            run,
        });
    }
    if let Some(nginx) = nginx {
        let www = tmp.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("note.json"), &doc).unwrap();
        let server = NginxProc::start(&nginx, tmp.path());
        let run = run_side(server.addr, "/note.json", &schedule, pace, &mut || {
            server.reload()
        });
        if server.exited() {
            problems.push("nginx exited during the run".into());
        }
        problems.extend(run.problems.iter().map(|p| format!("nginx: {p}")));
        let acks = server
            .error_log()
            .lines()
            .filter(|l| l.contains("(SIGHUP) received"))
            .count();
        sides.push(Side {
            name: "nginx",
            extra: vec![format!(
                "nginx: {acks} of {} reloads acknowledged in its error log (\"signal 1 (SIGHUP) received\")",
                run.restarts.len()
            )],
            run,
        });
    }
    print_table(&sides, &schedule);
    for s in &sides {
        println!();
        for l in &s.extra {
            println!("{l}");
        }
    }
    if args.iter().any(|a| a == "--per-second") {
        for s in &sides {
            print_per_second(s);
        }
    }
    for s in &sides {
        if s.run.report.total == 0 {
            problems.push(format!("{}: no request at all", s.name));
        }
    }
    drop(tmp);
    assert!(
        problems.is_empty(),
        "the benchmark itself went wrong:\n  {}",
        problems.join("\n  ")
    );
}

/// When reloads are sent: `quiet`, then `bursts` times (`burst` reloads
/// `period` apart, then `quiet`). Quiet stretches between the bursts,
/// not only before and after them, so that a drift of the machine over
/// the run (seen here: p99 from 8 to 16 ms and back within a minute, with
/// no restart at all) falls on restart and quiet seconds alike.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    quiet: Duration,
    burst: u32,
    bursts: u32,
    period: Duration,
}

impl Schedule {
    fn reloads(&self) -> u32 {
        self.burst * self.bursts
    }

    fn cycle(&self) -> Duration {
        self.period * self.burst + self.quiet
    }

    fn duration(&self) -> Duration {
        self.quiet + self.cycle() * self.bursts
    }

    /// When reload `k` is due after the start: 100 ms into its second
    /// (clear of the boundary the split is made at).
    fn due(&self, k: u32) -> Duration {
        self.quiet
            + self.cycle() * (k / self.burst)
            + self.period * (k % self.burst)
            + Duration::from_millis(100)
    }
}

/// One server's run.
struct Run {
    report: LoadReport,
    summary: Summary,
    /// When each reload was sent.
    restarts: Vec<Instant>,
    problems: Vec<String>,
}

struct Side {
    name: &'static str,
    run: Run,
    /// Lines printed after the table.
    extra: Vec<String>,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn load_config(addr: SocketAddr, path: &str, pace: Option<Duration>) -> LoadConfig {
    let mut cfg = LoadConfig::new(addr);
    cfg.pace = pace;
    cfg.clients = CLIENTS;
    cfg.keepalive_share = KEEPALIVE_SHARE;
    cfg.paths = vec![path.to_owned()];
    cfg.connect_timeout = Duration::from_secs(2);
    // Long enough that a slow answer is measured (≥ 1 s is a target
    // missed) rather than cut off.
    cfg.per_request_timeout = Duration::from_secs(5);
    cfg.threads = 2;
    cfg
}

/// The load on `addr`, with `reload` called on `schedule`.
fn run_side(
    addr: SocketAddr,
    path: &str,
    schedule: &Schedule,
    pace: Option<Duration>,
    reload: &mut dyn FnMut() -> Result<(), String>,
) -> Run {
    let mut cfg = load_config(addr, path, pace);
    cfg.duration = schedule.duration();
    let h = start_load(cfg).expect("starting the load");
    let mut restarts = Vec::new();
    let mut problems = Vec::new();
    for k in 0..schedule.reloads() {
        let due = h.started() + schedule.due(k);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        restarts.push(Instant::now());
        if let Err(e) = reload() {
            problems.push(e);
        }
    }
    let report = h.finish();
    if report.aborted_clients > 0 {
        problems.push(format!(
            "{} client(s) hung past every timeout",
            report.aborted_clients
        ));
    }
    let summary = report.summary(&restarts);
    Run {
        report,
        summary,
        restarts,
        problems,
    }
}
