//! The notes app under load, sandboxed against `--no-sandbox` in the same
//! run (alternating, fresh data directories): requests per second and p99
//! latency of `GET /api/notes/{id}` and `POST /api/notes` under `wrk`, and
//! the latency of a note page, whose 10 KiB of markdown is rendered in a
//! fresh fork-as child each time, against the plain JSON read of the same
//! note.
//!
//! Run as root: `cargo bench -p notes --bench notes` (`-- --quick` for a
//! short run). Needs `wrk` (`apt-get install wrk`; `.ci/run` installs it).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(
        rustix::process::geteuid().is_root(),
        "the notes bench starts the app as root (its worker drops to nobody): run it as root"
    );
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let wrk = Command::new("wrk").arg("--version").output();
    assert!(
        wrk.is_ok(),
        "the notes bench needs wrk on PATH (apt-get install wrk)"
    );
    // POST is bound by fsync, whose latency on a shared disk drifts by
    // tens of percent within a minute: many short rounds, each a pair run
    // back to back (the order swapped every round), compared pairwise.
    let (rounds, secs, pages) = if quick { (1, 2, 50) } else { (6, 5, 300) };
    println!(
        "notes benchmark ({}; wrk -t2 -c16 -d{secs}s on 127.0.0.1, {rounds} round(s) per arm, alternating)",
        if quick { "quick" } else { "full" }
    );
    let tmp = std::env::temp_dir().join(format!("notes-bench-{}", std::process::id()));
    let mut results: [Vec<Figures>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let mut arms = [(0, &[][..]), (1, &["--no-sandbox"][..])];
        if round % 2 == 1 {
            arms.reverse();
        }
        for (arm, extra) in arms {
            let data = tmp.join(format!("r{round}-a{arm}"));
            let _ = std::fs::remove_dir_all(&data);
            std::fs::create_dir_all(&tmp).unwrap();
            let app = App::start(&data, extra);
            results[arm].push(measure(&app, secs, pages, &tmp));
            drop(app);
            let _ = std::fs::remove_dir_all(&data);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let med = |arm: usize, f: fn(&Figures) -> f64| {
        let mut v: Vec<f64> = results[arm].iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!();
    println!(
        "{:<40} {:>12} {:>12} {:>8}",
        "median of rounds", "sandboxed", "no sandbox", "ratio"
    );
    type Row = (&'static str, fn(&Figures) -> f64, bool);
    let rows: [Row; 8] = [
        ("GET /api/notes/{id} requests/s", |f| f.get_rps, true),
        ("GET /api/notes/{id} p99 ms", |f| f.get_p99_ms, false),
        ("POST /api/notes requests/s", |f| f.post_rps, true),
        ("POST /api/notes p99 ms", |f| f.post_p99_ms, false),
        (
            "GET /notes/{id} 10 KiB render p50 ms",
            |f| f.page_p50_ms,
            false,
        ),
        (
            "GET /notes/{id} 10 KiB render p99 ms",
            |f| f.page_p99_ms,
            false,
        ),
        (
            "GET /api/notes/{id} same note p50 ms",
            |f| f.json_p50_ms,
            false,
        ),
        (
            "GET /api/notes/{id} same note p99 ms",
            |f| f.json_p99_ms,
            false,
        ),
    ];
    for (name, f, higher_better) in rows {
        let (a, b) = (med(0, f), med(1, f));
        println!(
            "{name:<40} {a:>12.2} {b:>12.2} {:>7.3}x{}",
            a / b,
            if higher_better { "" } else { " (time)" }
        );
    }
    println!();
    // The ratio of each round's pair, then the median of those.
    let paired = |f: fn(&Figures) -> f64| {
        let mut r: Vec<f64> = results[0]
            .iter()
            .zip(&results[1])
            .map(|(a, b)| f(a) / f(b))
            .collect();
        r.sort_by(f64::total_cmp);
        let shown: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
        (r[r.len() / 2], shown.join(" "))
    };
    let (get, get_all) = paired(|f| f.get_rps);
    let (post, post_all) = paired(|f| f.post_rps);
    println!(
        "sandboxed/unsandboxed throughput, median of per-round pairs (target >= 0.95x):\n  \
         GET {get:.3}x (rounds: {get_all})\n  POST {post:.3}x (rounds: {post_all})"
    );
    println!(
        "render through fork-as adds {:.2} ms at the median (page {:.2} ms vs JSON {:.2} ms, sandboxed)",
        med(0, |f| f.page_p50_ms) - med(0, |f| f.json_p50_ms),
        med(0, |f| f.page_p50_ms),
        med(0, |f| f.json_p50_ms)
    );
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    get_rps: f64,
    get_p99_ms: f64,
    post_rps: f64,
    post_p99_ms: f64,
    page_p50_ms: f64,
    page_p99_ms: f64,
    json_p50_ms: f64,
    json_p99_ms: f64,
}

fn measure(app: &App, secs: u64, pages: usize, tmp: &Path) -> Figures {
    let agent = agent();
    let small = create(&agent, &app.base, &"a short note for reading. ".repeat(40));
    let (get_rps, get_p99_ms) = wrk(&format!("{}/api/notes/{small}", app.base), secs, None);
    let script = tmp.join("post.lua");
    let body = serde_json::json!({ "text": "# posted\n\n".to_owned() + &"load ".repeat(200) });
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = {}\n",
            lua_string(&body.to_string())
        ),
    )
    .unwrap();
    let (post_rps, post_p99_ms) = wrk(&format!("{}/api/notes", app.base), secs, Some(&script));
    // A 10 KiB note: headings, lists, emphasis, links, code.
    let mut md = String::new();
    let mut i = 0;
    while md.len() < 10 << 10 {
        md.push_str(&format!(
            "## Section {i}\n\nSome *emphasis*, **strong** text and a [link](https://example.org/{i}).\n\n- item one\n- item `two`\n\n```\ncode line {i}\n```\n\n"
        ));
        i += 1;
    }
    let big = create(&agent, &app.base, &md);
    let page = latencies(&agent, &format!("{}/notes/{big}", app.base), pages);
    let json = latencies(&agent, &format!("{}/api/notes/{big}", app.base), pages);
    Figures {
        get_rps,
        get_p99_ms,
        post_rps,
        post_p99_ms,
        page_p50_ms: page.0,
        page_p99_ms: page.1,
        json_p50_ms: json.0,
        json_p99_ms: json.1,
    }
}

/// Sequential GETs of `url`: (p50, p99) in ms.
fn latencies(agent: &ureq::Agent, url: &str, n: usize) -> (f64, f64) {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut r = agent.get(url).call().expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{url}");
        let _ = r.body_mut().read_to_vec();
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs wrk; (requests/s, p99 ms). Fails loudly on socket errors or
/// non-2xx answers: a benchmark of errors measures nothing.
fn wrk(url: &str, secs: u64, script: Option<&Path>) -> (f64, f64) {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        "-c16",
        &format!("-d{secs}s"),
        "--latency",
        "--timeout",
        "10s",
    ]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd.arg(url).output().expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "errors under load:\n{text}"
    );
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in:\n{text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| ms(v.trim()))
        .unwrap_or_else(|| panic!("no 99% in:\n{text}"));
    (rps, p99)
}

/// wrk's durations (`812.00us`, `1.23ms`, `2.01s`) in ms.
fn ms(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        _ => f64::NAN,
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn create(agent: &ureq::Agent, base: &str, text: &str) -> String {
    let mut r = agent
        .post(&format!("{base}/api/notes"))
        .send(&serde_json::json!({ "text": text }).to_string())
        .expect("POST");
    assert_eq!(r.status().as_u16(), 201);
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

struct App {
    child: Child,
    base: String,
}

impl App {
    fn start(data: &Path, extra: &[&str]) -> Self {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_notes"))
            .args(["--listen", &addr, "--data"])
            .arg(data)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("notes");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let line = lines.next().expect("notes exited").unwrap();
            if line.contains("every role is ready") {
                break;
            }
            assert!(Instant::now() < end, "notes did not get ready");
        }
        // Keep draining its log (a full pipe would block main).
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Self {
            child,
            base: format!("http://{addr}"),
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
