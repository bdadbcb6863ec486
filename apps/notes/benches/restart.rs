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
//! `--per-second` (figures for each second). Needs nginx (`apt-get install nginx`; `.ci/run`
//! installs it); it runs its own, with a config in a temp dir, never the
//! system's.

#[path = "../tests/common/load.rs"]
mod load;
#[path = "../tests/common/restart_log.rs"]
mod restart_log;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use load::{LoadConfig, LoadReport, Outcome, Summary, Window, start_load};
use restart_log::RestartLine;

const CLIENTS: usize = 32;
const KEEPALIVE_SHARE: f64 = 0.5;
/// Most bytes of a server's log kept.
const LOG_CAP: usize = 4 << 20;
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

// ---- the table ----------------------------------------------------------

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1e3;
    if m < 10.0 {
        format!("{m:.2}")
    } else if m < 1000.0 {
        format!("{m:.1}")
    } else {
        format!("{m:.0}")
    }
}

/// `restart / quiet` of one percentile.
fn pair(s: &Summary, f: fn(&load::Percentiles) -> Duration) -> String {
    let one = |w: &Window| w.latency.as_ref().map_or("-".to_owned(), |p| ms(f(p)));
    format!("{} / {}", one(&s.restart), one(&s.quiet))
}

fn p99_ratio(s: &Summary) -> Option<f64> {
    let r = s.restart.latency?.p99.as_secs_f64();
    let q = s.quiet.latency?.p99.as_secs_f64();
    (q > 0.0).then(|| r / q)
}

fn mark(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn print_table(sides: &[Side], schedule: &Schedule) {
    let mut rows: Vec<(String, Vec<String>, String)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&Run) -> String, target: &str| {
        rows.push((
            name.to_owned(),
            sides.iter().map(|s| f(&s.run)).collect(),
            target.to_owned(),
        ));
    };
    row(
        "requests (ok)",
        &|r| format!("{} ({})", r.report.total, r.report.ok()),
        "",
    );
    row(
        "requests/s",
        &|r| {
            format!(
                "{:.0}",
                r.report.total as f64 / schedule.duration().as_secs_f64()
            )
        },
        "",
    );
    row("errors", &|r| r.report.failed().to_string(), "0");
    let kinds: BTreeSet<Outcome> = sides
        .iter()
        .flat_map(|s| s.run.report.failures().into_keys())
        .collect();
    for k in &kinds {
        row(
            &format!("  {k}"),
            &|r| {
                let n = r.report.outcomes.get(k).copied().unwrap_or(0);
                let reused = r.report.reused_failures.get(k).copied().unwrap_or(0);
                format!("{n} ({reused} reused)")
            },
            "",
        );
    }
    row(
        "  of them in restart s / quiet s",
        &|r| {
            format!(
                "{} / {}",
                r.summary.restart.failed(),
                r.summary.quiet.failed()
            )
        },
        "",
    );
    row(
        "connects (failed)",
        &|r| format!("{} ({})", r.report.connects, r.report.connect_failures),
        "",
    );
    row(
        "reloads sent",
        &|r| r.restarts.len().to_string(),
        &schedule.reloads().to_string(),
    );
    row(
        "restart s / quiet s",
        &|r| {
            format!(
                "{} / {}",
                r.summary.restart_seconds, r.summary.quiet_seconds
            )
        },
        "",
    );
    row(
        "p50 ms, restart s / quiet s",
        &|r| pair(&r.summary, |p| p.p50),
        "",
    );
    row(
        "p99 ms, restart s / quiet s",
        &|r| pair(&r.summary, |p| p.p99),
        "",
    );
    row(
        "p99 restart / quiet",
        &|r| p99_ratio(&r.summary).map_or("-".into(), |x| format!("{x:.2}x")),
        &format!("<= {TARGET_P99_RATIO}x"),
    );
    row(
        "p99.9 ms, restart s / quiet s",
        &|r| pair(&r.summary, |p| p.p999),
        "",
    );
    row(
        "max ms, restart s / quiet s",
        &|r| pair(&r.summary, |p| p.max),
        "",
    );
    row(
        "requests >= 1 s (any outcome)",
        &|r| r.summary.overall.slow.to_string(),
        "0",
    );
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let wc = rows
        .iter()
        .flat_map(|r| r.1.iter().map(|c| c.chars().count()))
        .chain(sides.iter().map(|s| s.name.len()))
        .max()
        .unwrap_or(0);
    println!();
    print!("{:<w0$}", "");
    for s in sides {
        print!("  {:>wc$}", s.name);
    }
    println!("  target");
    for (name, cells, target) in rows {
        print!("{name:<w0$}");
        for c in cells {
            print!("  {c:>wc$}");
        }
        println!("  {target}");
    }
    println!(
        "(reused: failed on a keep-alive connection that had carried earlier requests, \
         as when a server closes an idle connection just as the client sends)"
    );
    println!();
    println!(
        "targets: 0 errors; no request >= 1 s; restart-second p99 <= {TARGET_P99_RATIO}x quiet p99"
    );
    for s in sides {
        let r = &s.run;
        let errors = r.report.failed();
        let max = r.summary.overall.latency.map_or(Duration::ZERO, |p| p.max);
        let slow = r.summary.overall.slow;
        let ratio = p99_ratio(&r.summary);
        println!(
            "  {:<6} errors {} ({errors}); >= 1 s {} ({slow}, max ok {} ms); p99 {} ({})",
            s.name,
            mark(errors == 0),
            mark(slow == 0 && max < TARGET_MAX),
            ms(max),
            mark(ratio.is_some_and(|x| x <= TARGET_P99_RATIO)),
            ratio.map_or("no figure".into(), |x| format!("{x:.2}x")),
        );
    }
    for s in sides {
        if s.run.report.unrecorded > 0 {
            println!(
                "{}: {} requests over the record cap are in the counts only",
                s.name, s.run.report.unrecorded
            );
        }
    }
}

/// Each second's requests, failures and p99 (`*`: a restart second).
fn print_per_second(s: &Side) {
    let restart = load::restart_seconds(
        &s.run
            .restarts
            .iter()
            .filter_map(|r| r.checked_duration_since(s.run.report.started))
            .collect::<Vec<_>>(),
    );
    let mut by: std::collections::BTreeMap<u64, (u64, u64, Vec<u32>)> = Default::default();
    for r in &s.run.report.records {
        let e = by.entry(u64::from(r.start_ms) / 1000).or_default();
        e.0 += 1;
        if r.outcome.is_ok() {
            e.2.push(r.latency_us);
        } else {
            e.1 += 1;
        }
    }
    println!();
    println!(
        "{} per second: second[*: restart] requests/errors p99 ms",
        s.name
    );
    let cells: Vec<String> = by
        .into_iter()
        .map(|(sec, (n, err, mut lat))| {
            lat.sort_unstable();
            let p99 = load::percentile(&lat, 990)
                .map_or("-".into(), |us| ms(Duration::from_micros(u64::from(us))));
            let star = if restart.contains(&sec) { "*" } else { " " };
            format!("{sec:>3}{star} {n:>6}/{err:<3} {p99:>6}")
        })
        .collect();
    for chunk in cells.chunks(5) {
        println!("  {}", chunk.join("   "));
    }
}

/// What notes' log says of the restarts, and its fds and members
/// before and after the run.
fn notes_notes(log: &str, run: &Run, before: (usize, usize), after: (usize, usize)) -> Vec<String> {
    let mut out = vec![format!(
        "notes main: {} → {} open fds, {} → {} child processes over the run",
        before.0, after.0, before.1, after.1
    )];
    let lines = restart_log::parse_log(log);
    if lines.is_empty() {
        let hup = log.lines().filter(|l| l.contains("SIGHUP")).count();
        out.push(format!(
            "notes handover: no restart line seen ({} SIGHUPs sent; main's log mentions SIGHUP {hup} times{})",
            run.restarts.len(),
            log.lines()
                .find(|l| l.contains("SIGHUP"))
                .map_or(String::new(), |l| format!(", e.g. {:?}", truncate(l, 120)))
        ));
        return out;
    }
    let mut handover = Vec::new();
    let mut per = Vec::new();
    let mut failed = Vec::new();
    for l in &lines {
        match l {
            RestartLine::Done {
                n,
                generation,
                handover_ms,
                accepting_ms,
                old_gone_ms,
            } => {
                handover.push(*handover_ms);
                per.push(format!(
                    "#{n} g{generation} {handover_ms:.1} ({accepting_ms:.1}→{old_gone_ms:.1})"
                ));
            }
            RestartLine::Failed {
                n,
                reason,
                generation,
            } => failed.push(format!(
                "#{n} (generation {generation} kept serving): {}",
                truncate(reason, 200)
            )),
        }
    }
    out.push(format!(
        "notes handover: {} restart(s) done, {} failed, of {} SIGHUPs sent",
        handover.len(),
        failed.len(),
        run.restarts.len()
    ));
    if !handover.is_empty() {
        let mut h = handover.clone();
        h.sort_by(f64::total_cmp);
        out.push(format!(
            "  handover ms: min {:.1}, median {:.1}, max {:.1}",
            h[0],
            h[h.len() / 2],
            h[h.len() - 1]
        ));
        out.push("  per restart, ms: handover (new accepting → old gone):".into());
        for chunk in per.iter().take(120).collect::<Vec<_>>().chunks(4) {
            out.push(format!(
                "    {}",
                chunk.iter().map(|s| format!("{s:<34}")).collect::<String>()
            ));
        }
        if per.len() > 120 {
            out.push(format!("    … and {} more", per.len() - 120));
        }
    }
    for f in failed.iter().take(10) {
        out.push(format!("  failed {f}"));
    }
    if failed.len() > 10 {
        out.push(format!("  … and {} more failures", failed.len() - 10));
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}

// ---- the servers --------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Appends `reader`'s lines to `sink` (up to [`LOG_CAP`] bytes; the rest
/// is read and dropped, so the writer never blocks).
fn collect_lines(reader: impl Read + Send + 'static, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let mut l = sink.lock().unwrap();
            if l.len() < LOG_CAP {
                l.push_str(&line);
                l.push('\n');
            }
        }
    });
}

/// Whether `child` has exited, without reaping it (`waitid` with
/// `WNOWAIT`).
fn has_exited(child: &Child) -> bool {
    use rustix::process::{Pid, WaitId, WaitIdOptions, waitid};
    let pid = Pid::from_raw(child.id() as i32).unwrap();
    let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    // An error (ECHILD): already reaped, so exited too.
    !matches!(waitid(WaitId::Pid(pid), opts), Ok(None))
}

/// Waits up to `secs` for `cond`; false if it never held.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    cond()
}

/// The notes family, stopped (SIGTERM, then SIGKILL) on drop.
struct NotesProc {
    child: Child,
    log: Arc<Mutex<String>>,
    addr: SocketAddr,
}

impl NotesProc {
    fn start(bin: &Path, data: &Path) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut child = Command::new(bin)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting notes");
        let log = Arc::new(Mutex::new(String::new()));
        collect_lines(child.stderr.take().unwrap(), Arc::clone(&log));
        let app = Self { child, log, addr };
        let ready = wait_for(30, || {
            app.log().contains("every role is ready") || app.child_exited()
        });
        assert!(
            ready && !app.child_exited(),
            "notes did not get ready; log:\n{}",
            truncate(&app.log(), 8000)
        );
        app
    }

    fn child_exited(&self) -> bool {
        has_exited(&self.child)
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Main's open fds and child processes.
    fn counts(&self) -> (usize, usize) {
        let pid = self.pid();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        (fds, children(pid).len())
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    /// Creates the note the load reads: a JSON document of about 1 KiB.
    fn create_note(&self) -> String {
        let text = "# Under load\n\n".to_owned() + &"a note read over and over. ".repeat(36);
        let mut r = Self::agent()
            .post(&format!("http://{}/api/notes", self.addr))
            .send(&serde_json::json!({ "text": text }).to_string())
            .expect("POST /api/notes");
        assert_eq!(r.status().as_u16(), 201);
        let v: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    fn get(&self, path: &str) -> Vec<u8> {
        let mut r = Self::agent()
            .get(&format!("http://{}{path}", self.addr))
            .call()
            .expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.body_mut().read_to_vec().unwrap()
    }
}

impl Drop for NotesProc {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if !wait_for(15, || matches!(self.child.try_wait(), Ok(Some(_)))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The child processes of `pid` (of all its threads).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn find_nginx() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("nginx"))
            .find(|c| c.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from("/usr/sbin/nginx");
        p.is_file().then_some(p)
    })
}

/// An nginx of our own (master and 2 workers), its config, pid file,
/// logs and temp files in `dir`; stopped on drop (SIGTERM to the master,
/// which stops its workers before it exits; SIGKILL to what is left). It
/// stays in the bench's process group, so a Ctrl-C at the terminal stops
/// it too (SIGINT: nginx's fast shutdown).
struct NginxProc {
    bin: PathBuf,
    dir: PathBuf,
    child: Child,
    addr: SocketAddr,
}

impl NginxProc {
    fn start(bin: &Path, dir: &Path) -> Self {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let d = dir.display();
        std::fs::create_dir_all(dir.join("nginx-tmp")).unwrap();
        // keepalive_requests: as many as notes takes (no limit) within a
        // run; keepalive_timeout: longer than a run.
        let conf = format!(
            "worker_processes 2;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-tmp/body;
    proxy_temp_path {d}/nginx-tmp/proxy;
    fastcgi_temp_path {d}/nginx-tmp/fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/uwsgi;
    scgi_temp_path {d}/nginx-tmp/scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
    }}
}}
"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let out = std::fs::File::create(dir.join("nginx-stderr.log")).unwrap();
        let child = Command::new(bin)
            .args(Self::base_args(dir))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting nginx");
        let n = Self {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            child,
            addr,
        };
        let up = wait_for(10, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(
            up && !n.exited(),
            "nginx did not start; stderr:\n{}\nerror log:\n{}",
            truncate(
                &std::fs::read_to_string(dir.join("nginx-stderr.log")).unwrap_or_default(),
                4000
            ),
            truncate(&n.error_log(), 4000)
        );
        println!("nginx: {} on {addr}", bin.display());
        n
    }

    fn base_args(dir: &Path) -> Vec<std::ffi::OsString> {
        let p = |s: &str| dir.join(s).into_os_string();
        vec![
            "-p".into(),
            dir.as_os_str().to_owned(),
            "-e".into(),
            p("nginx-error.log"),
            "-c".into(),
            p("nginx.conf"),
        ]
    }

    /// `nginx -s reload` (it signals the master named in the pid file),
    /// bounded to 5 s.
    fn reload(&self) -> Result<(), String> {
        let mut c = Command::new(&self.bin)
            .args(Self::base_args(&self.dir))
            .args(["-s", "reload"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nginx -s reload: {e}"))?;
        let done = wait_for(5, || matches!(c.try_wait(), Ok(Some(_))));
        if !done {
            let _ = c.kill();
            let _ = c.wait();
            return Err("nginx -s reload took over 5 s".into());
        }
        let st = c.wait().map_err(|e| e.to_string())?;
        if st.success() {
            Ok(())
        } else {
            let mut err = String::new();
            let _ = c
                .stderr
                .take()
                .map(|s| s.take(4096).read_to_string(&mut err));
            Err(format!("nginx -s reload: {st}: {}", err.trim()))
        }
    }

    /// Whether the master has exited (it is not reaped here).
    fn exited(&self) -> bool {
        has_exited(&self.child)
    }

    fn error_log(&self) -> String {
        let mut s = String::new();
        if let Ok(f) = std::fs::File::open(self.dir.join("nginx-error.log")) {
            let _ = f.take(LOG_CAP as u64).read_to_string(&mut s);
        }
        s
    }
}

impl Drop for NginxProc {
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process};
        let master = self.child.id();
        let _ = kill_process(Pid::from_raw(master as i32).unwrap(), Signal::TERM);
        if !wait_for(10, || has_exited(&self.child)) {
            // A hung master: its workers (current, and old ones still
            // draining after a reload) are its children, listed while it
            // lives, then killed with it.
            for pid in children(master) {
                let _ = kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL);
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The bench's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        // What a run stopped by a signal (no unwinding) left behind.
        if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
            for e in dir.flatten() {
                let name = e.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("notes-restart-bench-"))
                    .and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let p = std::env::temp_dir().join(format!("notes-restart-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
