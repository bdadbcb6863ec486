//! The restart bench's printout: the side-by-side table with the
//! targets, each second's figures, and what notes' log says of its
//! restarts.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::load::{self, Outcome, Summary, Window};
use crate::restart_log::{self, RestartLine};
use crate::{Run, Schedule, Side, TARGET_MAX, TARGET_P99_RATIO};

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

pub(crate) fn print_table(sides: &[Side], schedule: &Schedule) {
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
pub(crate) fn print_per_second(s: &Side) {
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
pub(crate) fn notes_notes(
    log: &str,
    run: &Run,
    before: (usize, usize),
    after: (usize, usize),
) -> Vec<String> {
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
    let mut accepting = Vec::new();
    let mut gone = Vec::new();
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
                accepting.push(*accepting_ms);
                gone.push(*old_gone_ms);
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
        for (name, mut v) in [
            ("handover", handover),
            ("SIGHUP → new accepting", accepting),
            ("SIGHUP → old gone", gone),
        ] {
            v.sort_by(f64::total_cmp);
            out.push(format!(
                "  {name} ms: min {:.1}, median {:.1}, max {:.1}",
                v[0],
                v[v.len() / 2],
                v[v.len() - 1]
            ));
        }
        out.push("  per restart, ms: handover (new accepting → old gone):".into());
        for chunk in per.iter().take(120).collect::<Vec<_>>().chunks(4) {
            out.push(format!(
                "    {}",
                chunk
                    .iter()
                    .map(|s| format!("{s:<34}"))
                    .collect::<String>()
                    .trim_end()
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

pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}
