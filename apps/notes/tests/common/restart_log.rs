//! The lines notes' main writes at the end of each smooth restart, parsed
//! (for the restart benchmark and tests; self-contained like `load.rs`):
//!
//! ```text
//! restart N done: generation G serving; handover H ms (SIGHUP → new accepting A ms → old gone B ms)
//! restart N failed: <reason>; generation G keeps serving
//! ```
//!
//! anywhere in a line (after a prefix such as `privfork family: `). The
//! times may have decimals.
#![allow(dead_code)]

/// One restart's line.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartLine {
    Done {
        n: u64,
        generation: u64,
        /// SIGHUP to the old generation gone.
        handover_ms: f64,
        /// SIGHUP to the new generation accepting.
        accepting_ms: f64,
        /// SIGHUP to the old generation gone (as main breaks it down).
        old_gone_ms: f64,
    },
    Failed {
        n: u64,
        reason: String,
        generation: u64,
    },
}

/// Every restart line of `log`, in order.
pub fn parse_log(log: &str) -> Vec<RestartLine> {
    log.lines().filter_map(parse_line).collect()
}

/// The restart line in `line`, if there is one.
pub fn parse_line(line: &str) -> Option<RestartLine> {
    line.match_indices("restart ")
        .find_map(|(i, _)| parse_at(&line[i + "restart ".len()..]))
}

fn parse_at(s: &str) -> Option<RestartLine> {
    let (n, s) = number::<u64>(s)?;
    if let Some(s) = s.strip_prefix(" done: generation ") {
        let (generation, s) = number::<u64>(s)?;
        let s = s.strip_prefix(" serving; handover ")?;
        let (handover_ms, s) = number::<f64>(s)?;
        let s = s.strip_prefix(" ms (SIGHUP → new accepting ")?;
        let (accepting_ms, s) = number::<f64>(s)?;
        let s = s.strip_prefix(" ms → old gone ")?;
        let (old_gone_ms, s) = number::<f64>(s)?;
        s.strip_prefix(" ms)")?;
        Some(RestartLine::Done {
            n,
            generation,
            handover_ms,
            accepting_ms,
            old_gone_ms,
        })
    } else {
        let s = s.strip_prefix(" failed: ")?;
        // The reason may hold "; " itself: the generation is in the last.
        let (reason, tail) = s.rsplit_once("; generation ")?;
        let (generation, tail) = number::<u64>(tail)?;
        tail.strip_prefix(" keeps serving")?;
        Some(RestartLine::Failed {
            n,
            reason: reason.to_owned(),
            generation,
        })
    }
}

/// A number at the start of `s` (digits and, for floats, one dot), and
/// the rest.
fn number<T: std::str::FromStr>(s: &str) -> Option<(T, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let v = s[..end].parse().ok()?;
    Some((v, &s[end..]))
}
