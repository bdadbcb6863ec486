//! The family's status, as main sees it: which processes run, as whom,
//! under which sandbox, restarted how often.
//!
//! Two sources, kept apart so a reader knows what to trust:
//! - what main reads from the kernel about each member
//!   (`/proc/<pid>/status`: ids, seccomp mode and filter count,
//!   no_new_privs, effective capabilities) — true whatever the member
//!   says;
//! - what the member reported when it said it was ready
//!   ([`MemberReport`]: its promises and what each sandbox layer
//!   enforced, as its setup measured them) — true of an honest member
//!   only; Landlock's state is not visible in `/proc`, so this is the only
//!   source for it.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::sandbox::{Level, Report};

/// Longest text field a member's report may carry (longer ones are cut by
/// main).
pub const MAX_REPORT_TEXT: usize = 512;
/// Most layers a member's report may list.
pub const MAX_REPORT_LAYERS: usize = 16;

/// What a member says about itself when it is ready.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// Its promises (`None`: no sandbox of its own).
    pub promises: Option<String>,
    /// Each sandbox layer and what it enforced (`full`, `partial`,
    /// `none`), in setup order.
    pub layers: Vec<(String, String)>,
    /// Anything else worth showing (e.g. how a helper sandboxes the
    /// children it forks).
    pub detail: Option<String>,
}

impl MemberReport {
    /// The report of a member with `promises` whose setup enforced
    /// `report`.
    pub fn new(promises: Option<String>, report: &Report) -> Self {
        let layers = [
            ("rlimits", report.rlimits),
            ("not_dumpable", report.not_dumpable),
            ("capabilities", report.capabilities),
            ("no_new_privs", report.no_new_privs),
            ("landlock", report.landlock),
            ("seccomp", report.seccomp),
        ]
        .into_iter()
        .map(|(n, l)| (n.to_owned(), level_name(l).to_owned()))
        .collect();
        Self {
            promises,
            layers,
            detail: None,
        }
    }

    /// Cuts what a (possibly hostile) member sent to the sizes main keeps.
    pub(crate) fn bounded(mut self) -> Self {
        let cut = |s: &mut String| {
            if s.len() > MAX_REPORT_TEXT {
                let mut end = MAX_REPORT_TEXT;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
            }
        };
        if let Some(p) = &mut self.promises {
            cut(p);
        }
        if let Some(d) = &mut self.detail {
            cut(d);
        }
        self.layers.truncate(MAX_REPORT_LAYERS);
        for (n, l) in &mut self.layers {
            cut(n);
            cut(l);
        }
        self
    }
}

/// The name of a level, as reports show it.
pub fn level_name(l: Level) -> &'static str {
    match l {
        Level::Full => "full",
        Level::Partial => "partial",
        Level::None => "none",
    }
}

/// What the kernel says about a process (`/proc/<pid>/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessFacts {
    /// Its pid.
    pub pid: u32,
    /// Real, effective, saved and filesystem uid.
    pub uids: [u32; 4],
    /// The effective uid's user name, if it has one.
    pub user: Option<String>,
    /// Seccomp mode: 0 none, 1 strict, 2 filter.
    pub seccomp: u8,
    /// How many seccomp filters are stacked on it.
    pub seccomp_filters: u32,
    /// no_new_privs is set.
    pub no_new_privs: bool,
    /// Its effective capabilities (a bit mask).
    pub cap_eff: u64,
}

impl ProcessFacts {
    /// Reads the facts of process `pid` from `/proc/<pid>/status`; `None`
    /// if it is gone or the file cannot be read.
    pub fn read(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(Self::parse(pid, &text))
    }

    /// The facts in a `/proc/<pid>/status` text (absent fields stay 0).
    pub fn parse(pid: u32, text: &str) -> Self {
        let mut f = Self {
            pid,
            ..Self::default()
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Uid" => {
                    for (slot, v) in f.uids.iter_mut().zip(value.split_whitespace()) {
                        *slot = v.parse().unwrap_or(u32::MAX);
                    }
                }
                "Seccomp" => f.seccomp = value.parse().unwrap_or(0),
                "Seccomp_filters" => f.seccomp_filters = value.parse().unwrap_or(0),
                "NoNewPrivs" => f.no_new_privs = value == "1",
                "CapEff" => f.cap_eff = u64::from_str_radix(value, 16).unwrap_or(u64::MAX),
                _ => {}
            }
        }
        f
    }
}

/// One member slot of the family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its role.
    pub role: String,
    /// Which instance of the role.
    pub instance: u32,
    /// `starting`, `running`, `stopping`, `stopped`, or `down` (waiting
    /// to be started again).
    pub state: String,
    /// The generation it belongs to (during a smooth restart two run).
    pub generation: u64,
    /// How many times main restarted it.
    pub restarts: u64,
    /// How long the current process has run, in milliseconds.
    pub uptime_ms: u64,
    /// What the kernel says about its process (none while it is down).
    pub process: Option<ProcessFacts>,
    /// What it reported about itself when it said it was ready.
    pub reported: Option<MemberReport>,
}

/// The whole family, as main answers a member's status query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyStatus {
    /// The generation running (starts at 1; a smooth restart adds one).
    pub generation: u64,
    /// When main started (Unix time, milliseconds).
    pub started_unix_ms: u64,
    /// Main itself.
    pub main: ProcessFacts,
    /// Every member slot, of every generation running.
    pub members: Vec<MemberStatus>,
    /// Smooth restarts begun since main first started.
    pub restarts: u64,
    /// Whether one is under way.
    pub restarting: bool,
    /// The last one that finished.
    pub last_restart: Option<RestartReport>,
}

/// How a smooth restart ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartReport {
    /// Which restart (1 for the first since main started).
    pub number: u64,
    /// Whether the new generation took over.
    pub ok: bool,
    /// The generation serving after it.
    pub generation: u64,
    /// What happened: the handover's times, or why it failed.
    pub detail: String,
    /// From the SIGHUP to the end (old generation gone, or the failure
    /// cleaned up), in milliseconds.
    pub duration_ms: u64,
    /// When it ended (Unix time, milliseconds).
    pub finished_unix_ms: u64,
}

/// User names by uid, looked up once each (main answers status queries
/// often; the user database does not change under it in practice).
#[derive(Debug, Default)]
pub(crate) struct UserNames(HashMap<u32, Option<String>>);

impl UserNames {
    /// Fills in `facts.user` from its effective uid.
    pub(crate) fn name(&mut self, facts: &mut ProcessFacts) {
        let uid = facts.uids[1];
        facts.user = self
            .0
            .entry(uid)
            .or_insert_with(|| {
                crate::sys::user_by_uid(rustix::process::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|e| e.name)
            })
            .clone();
    }
}

/// Now as Unix milliseconds.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_fields_are_read() {
        let text = "Name:\tworker\nUid:\t65534\t65534\t65534\t65534\n\
                    NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n\
                    CapEff:\t0000000000000000\n";
        let f = ProcessFacts::parse(7, text);
        assert_eq!(f.uids, [65534; 4]);
        assert_eq!((f.seccomp, f.seccomp_filters, f.no_new_privs), (2, 1, true));
        assert_eq!(f.cap_eff, 0);
        let root = ProcessFacts::parse(1, "Uid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n");
        assert_eq!(root.cap_eff, 0x1ff_ffff_ffff);
        assert!(!root.no_new_privs);
    }

    #[test]
    fn a_hostile_report_is_cut_to_size() {
        let r = MemberReport {
            promises: Some("é".repeat(MAX_REPORT_TEXT)),
            layers: vec![("x".repeat(4096), "y".into()); 100],
            detail: Some("d".repeat(1 << 16)),
        }
        .bounded();
        assert!(r.promises.as_ref().unwrap().len() <= MAX_REPORT_TEXT);
        assert_eq!(r.layers.len(), MAX_REPORT_LAYERS);
        assert!(r.layers.iter().all(|(n, _)| n.len() <= MAX_REPORT_TEXT));
        assert_eq!(r.detail.unwrap().len(), MAX_REPORT_TEXT);
    }
}
