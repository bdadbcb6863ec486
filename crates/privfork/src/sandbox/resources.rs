//! What `privfork run` lets the program use besides its sandbox: resource
//! limits (`--cpu`, `--memory`, `--file-size`, `--processes`,
//! `--open-files`), a wall-clock deadline (`--timeout`) and the network
//! (`--net none`), with the parsers for their command-line values. A bad
//! value is an error naming the input, found before anything starts.

use std::time::Duration;

use rustix::process::Resource;

/// Resource limits for the program, each lowered (soft and hard) to its
/// value in the child, as root, before the privilege drop; a limit
/// privfork already has lower stays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_CPU`: CPU seconds (SIGXCPU at the limit, then SIGKILL).
    pub cpu_seconds: Option<u64>,
    /// `RLIMIT_DATA`: bytes of data segment and private anonymous memory
    /// (`malloc` fails past it). Not `RLIMIT_AS`, which counts address
    /// space merely reserved and breaks V8/node and other JITs.
    pub memory: Option<u64>,
    /// `RLIMIT_FSIZE`: the largest file the program may write (SIGXFSZ,
    /// or `EFBIG` if it ignores that signal).
    pub file_size: Option<u64>,
    /// `RLIMIT_NPROC`: processes (threads included) of the target user —
    /// every process of that uid on the machine counts, not just the
    /// program's.
    pub processes: Option<u64>,
    /// `RLIMIT_NOFILE`: open files (one more than the highest fd number).
    pub open_files: Option<u64>,
}

impl Limits {
    /// The limits set, as the child-setup routine takes them.
    pub(crate) fn rlimits(&self) -> Vec<crate::setup::Rlimit> {
        [
            (Resource::Cpu, self.cpu_seconds),
            (Resource::Data, self.memory),
            (Resource::Fsize, self.file_size),
            (Resource::Nproc, self.processes),
            (Resource::Nofile, self.open_files),
        ]
        .into_iter()
        .filter_map(|(r, v)| Some((r, v?)))
        .collect()
    }
}

/// The program's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Net {
    /// The host's network namespace (Landlock's port rules and the
    /// promises decide what the program may do there).
    #[default]
    Host,
    /// A new, empty network namespace with only a loopback interface, up
    /// (bubblewrap's `--unshare-net`): nothing outside is reachable, the
    /// host's loopback included.
    None,
}

/// A bad command-line value: names the option and the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {option} {input:?}: {reason}")]
pub struct BadValue {
    /// The option (`--memory`).
    pub option: &'static str,
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn bad(option: &'static str, input: &str, reason: &'static str) -> BadValue {
    BadValue {
        option,
        input: input.to_owned(),
        reason,
    }
}

/// Parses a count (`--processes`, `--open-files`, `--cpu`): digits only.
///
/// # Errors
///
/// [`BadValue`] for anything but a non-negative integer that fits 64 bits.
pub fn parse_count(option: &'static str, input: &str) -> Result<u64, BadValue> {
    if input.is_empty() || !input.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(option, input, "expected a whole number, e.g. 64"));
    }
    let n: u64 = input.parse().map_err(|_| bad(option, input, "too large"))?;
    if n == 0 {
        // 0 CPU seconds kills the program at once; 0 processes or open
        // files cannot start it.
        return Err(bad(option, input, "must be at least 1"));
    }
    Ok(n)
}

/// Parses a size in bytes: a whole number with an optional binary suffix
/// `K`, `M`, `G` or `T` (×1024ⁿ; `KiB`, `MB` spellings taken alike, case
/// ignored): `4096`, `512M`, `2G`.
///
/// # Errors
///
/// [`BadValue`] for a negative, fractional or unparsable size, an unknown
/// suffix, or one beyond 64 bits.
pub fn parse_size(option: &'static str, input: &str) -> Result<u64, BadValue> {
    let digits = input.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = input.split_at(digits);
    if num.is_empty() {
        return Err(bad(
            option,
            input,
            "expected a size in bytes, e.g. 4096, 512M or 2G",
        ));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(bad(
                option,
                input,
                "unknown unit (use K, M, G or T, powers of 1024)",
            ));
        }
    };
    let n: u64 = num.parse().map_err(|_| bad(option, input, "too large"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| bad(option, input, "too large"))
}

/// Parses a duration as timeout(1) does: a non-negative decimal number
/// with an optional unit, `s` (the default), `m`, `h` or `d`, or `ms`:
/// `30`, `1.5s`, `10m`, `250ms`. Zero is refused (timeout(1) takes it to
/// mean no timeout: leave the option out instead).
///
/// # Errors
///
/// [`BadValue`] for a negative, zero or unparsable number, or an unknown
/// unit.
pub fn parse_duration(option: &'static str, input: &str) -> Result<Duration, BadValue> {
    let split = input
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (num, unit) = input.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => {
            return Err(bad(
                option,
                input,
                "expected a duration such as 30, 1.5s, 250ms, 10m, 2h or 1d",
            ));
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| bad(option, input, "expected a number, e.g. 30 or 1.5s"))?;
    let secs = n * scale;
    if secs <= 0.0 {
        return Err(bad(option, input, "must be more than zero"));
    }
    // At most ten years: beyond that it is not a timeout, and the clock
    // arithmetic (now + timeout) must not overflow.
    if secs > 10.0 * 365.0 * 86400.0 {
        return Err(bad(option, input, "too long (at most ten years)"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad(option, input, "too long"))
}

/// Parses `--net`: `host` or `none`.
///
/// # Errors
///
/// [`BadValue`] for anything else.
pub fn parse_net(input: &str) -> Result<Net, BadValue> {
    match input {
        "host" => Ok(Net::Host),
        "none" => Ok(Net::None),
        _ => Err(bad(
            "--net",
            input,
            "expected none (an empty network namespace) or host",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("--memory", "4096"), Ok(4096));
        assert_eq!(parse_size("--memory", "512M"), Ok(512 << 20));
        assert_eq!(parse_size("--memory", "2g"), Ok(2 << 30));
        assert_eq!(parse_size("--memory", "1KiB"), Ok(1024));
        for bad in [
            "",
            "-1",
            "1.5G",
            "12Q",
            "M",
            " 1",
            "99999999999999999999",
            "20000000T",
        ] {
            let e = parse_size("--memory", bad).unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains("--memory"), "{e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("--timeout", "30"),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(
            parse_duration("--timeout", "1.5s"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_duration("--timeout", "250ms"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("--timeout", "10m"),
            Ok(Duration::from_secs(600))
        );
        assert_eq!(
            parse_duration("--timeout", "1d"),
            Ok(Duration::from_secs(86400))
        );
        // "10000000000000000000" overflowed Instant + timeout.
        for bad in [
            "",
            "-1",
            "0",
            "5x",
            "1..2",
            "s",
            "1e3",
            "10 s",
            "10000000000000000000",
            "3651d",
        ] {
            assert!(parse_duration("--timeout", bad).is_err(), "{bad}");
        }
        assert!(parse_duration("--timeout", "3650d").is_ok());
    }

    #[test]
    fn counts_and_net() {
        assert_eq!(parse_count("--processes", "64"), Ok(64));
        // 0 CPU seconds kills at once; 0 files or processes start nothing.
        assert!(parse_count("--cpu", "0").is_err());
        for bad in ["", "-1", "1.0", "x"] {
            assert!(parse_count("--processes", bad).is_err(), "{bad}");
        }
        assert_eq!(parse_net("none"), Ok(Net::None));
        assert_eq!(parse_net("host"), Ok(Net::Host));
        assert!(
            parse_net("foo")
                .unwrap_err()
                .to_string()
                .contains("\"foo\"")
        );
    }

    #[test]
    fn only_the_limits_given_are_set() {
        let l = Limits {
            memory: Some(1 << 20),
            open_files: Some(32),
            ..Limits::default()
        };
        assert_eq!(
            l.rlimits(),
            vec![(Resource::Data, 1 << 20), (Resource::Nofile, 32)]
        );
    }
}
