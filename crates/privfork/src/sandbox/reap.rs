//! Nothing the program started outlives `privfork run`.
//!
//! privfork makes itself a *child subreaper*
//! (`prctl(PR_SET_CHILD_SUBREAPER)`): a descendant whose parent dies — a
//! daemon that double-forked, a child that called `setsid` and was left
//! behind — is reparented to privfork instead of to init. So every process
//! the program started stays a descendant of privfork: the children of
//! privfork and, transitively, theirs.
//!
//! When the program exits, [`kill_descendants`] finds them (the `ppid`
//! field of `/proc/*/stat`, followed down from privfork), opens a pidfd for
//! each, checks again that the pid still names a descendant, and sends
//! SIGKILL through the pidfd (so a pid freed and reused meanwhile is never
//! hit); then it reaps, and starts over until `waitpid` says there is no
//! child left. A process forked between the scan and the kill loses its
//! parent to the SIGKILL, becomes privfork's child, and is found by the
//! next round.
//!
//! While the program runs, [`reap_orphans`] reaps the descendants that were
//! reparented to privfork and have exited, so a long-running program that
//! leaves orphans behind does not fill the process table with zombies.
//!
//! A pid namespace would do this too, but would make the program PID 1,
//! which changes its signal handling (no default action for signals it does
//! not handle). What this cannot cover: SIGKILL of privfork itself. The
//! program then dies of its parent-death signal, but its own descendants
//! are reparented to init (a cgroup would be needed to follow them).

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`—Makes the calling process the reaper
/// of its orphaned descendants.
///
/// # Errors
///
/// The error of `prctl`.
pub(crate) fn become_subreaper() -> io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(Into::into)
}

/// The `ppid` field of `/proc/PID/stat` (after the command name, which may
/// itself hold spaces and parentheses: the last `)` ends it).
fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // " S PPID ..."
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Whether process `pid` descends from `ancestor` (its child, its
/// child's child...), by the `ppid` chains of `/proc/PID/stat`; a process
/// is not its own descendant. Under a subreaper `ancestor` (privfork),
/// that is every process the program started, orphans included.
///
/// A process that is gone (or a pid this namespace cannot name, 0) is
/// not. The walk stops at init or after 4096 steps.
pub(crate) fn descends_from(pid: i32, ancestor: i32) -> bool {
    if pid <= 0 || pid == ancestor {
        return false;
    }
    let mut cur = pid;
    for _ in 0..4096 {
        match ppid_of(cur) {
            Some(ppid) if ppid == ancestor => return true,
            Some(ppid) if ppid > 1 => cur = ppid,
            _ => return false,
        }
    }
    false
}

/// Every process's parent, from `/proc`.
fn process_table() -> io::Result<HashMap<i32, i32>> {
    let mut table = HashMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Gone meanwhile: not ours to kill any more.
        if let Some(ppid) = ppid_of(pid) {
            table.insert(pid, ppid);
        }
    }
    Ok(table)
}

/// The descendants of `root` in `table`.
fn descendants(table: &HashMap<i32, i32>, root: i32) -> HashSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, &ppid) in table {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = HashSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if found.insert(c) {
                todo.push(c);
            }
        }
    }
    found
}

/// Sends SIGKILL to every descendant of the calling process found in one
/// scan of `/proc`.
fn kill_round(me: i32) -> io::Result<()> {
    let tree = descendants(&process_table()?, me);
    for &pid in &tree {
        let Some(raw) = Pid::from_raw(pid) else {
            continue;
        };
        // The pidfd pins the process the pid names now; if that process's
        // parent is still us or one of ours, it is the descendant seen in
        // the scan (or one forked in its place, ours too). Otherwise the
        // pid was freed and reused: leave it alone.
        let Ok(pidfd) = rustix::process::pidfd_open(raw, PidfdFlags::empty()) else {
            continue; // gone already
        };
        if ppid_of(pid).is_some_and(|ppid| ppid == me || tree.contains(&ppid)) {
            // ESRCH: it died meanwhile.
            let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
        }
    }
    Ok(())
}

/// Kills every descendant of the calling process (a subreaper, see
/// [`become_subreaper`]) and reaps them, until it has no child left.
///
/// Call it once the program's own process has been reaped (through its
/// [`crate::process::Child`]): this reaps any child.
///
/// # Errors
///
/// Reading `/proc`, or a `waitpid` failure other than `ECHILD`.
pub(crate) fn kill_descendants() -> io::Result<()> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    loop {
        // privfork is a subreaper: every process the program left has a
        // chain of parents ending at a child of privfork's. With no child
        // left (ECHILD, after reaping zombies) there is none: no need to
        // read the whole process table (the usual end of a run).
        if no_children()? {
            return Ok(());
        }
        kill_round(me)?;
        // Reap whatever has exited; none exited yet but children remain:
        // the SIGKILLs are on their way (or a child escaped this round's
        // scan), so look again shortly.
        loop {
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(Errno::CHILD) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Reaps the zombies among privfork's children; whether none is left.
fn no_children() -> io::Result<bool> {
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some(_)) | Err(Errno::INTR) => continue,
            Ok(None) => return Ok(false),
            Err(Errno::CHILD) => return Ok(true),
            Err(e) => return Err(e.into()),
        }
    }
}

/// privfork's children as the kernel lists them
/// (`/proc/self/task/TID/children`; privfork's event loop is its one
/// thread), if it can.
fn own_children() -> Option<Vec<i32>> {
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/children")).ok()?;
    text.split_ascii_whitespace()
        .map(|p| p.parse().ok())
        .collect()
}

/// Reaps every child of the calling process that has exited, except
/// `keep` (the program itself, whose status its own handle collects).
/// Never blocks.
pub(crate) fn reap_orphans(keep: u32) {
    orphans(&[keep], false);
}

/// As [`reap_orphans`] for the children in `keep` (`privfork serve`'s
/// instances), and SIGKILL first to every other child still running: a
/// child of privfork that it did not start is an orphan of an instance
/// whose supervisor is gone, to end with it. Never blocks.
pub(crate) fn end_orphans(keep: &[u32]) {
    orphans(keep, true);
}

fn orphans(keep: &[u32], kill: bool) {
    let kept = |p: i32| keep.iter().any(|&k| i64::from(p) == i64::from(k));
    // Nothing but the kept ones among privfork's children: nothing to
    // reap, no need to read the whole process table.
    if own_children().is_some_and(|c| c.iter().all(|&p| kept(p))) {
        return;
    }
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let Ok(table) = process_table() else {
        return;
    };
    for (&pid, &ppid) in &table {
        if ppid != me || kept(pid) {
            continue;
        }
        // Our own unreaped child: its pid cannot have been reused.
        if let Some(raw) = Pid::from_raw(pid) {
            if kill {
                let _ = rustix::process::kill_process(raw, Signal::KILL);
            }
            let _ = rustix::process::waitpid(Some(raw), WaitOptions::NOHANG);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_read_past_odd_command_names() {
        let me = std::process::id() as i32;
        let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
        assert_eq!(ppid_of(me), Some(parent));
        assert_eq!(ppid_of(-5), None);
    }

    #[test]
    fn descendants_follow_the_chains() {
        let table: HashMap<i32, i32> = [(2, 1), (3, 2), (4, 3), (5, 1), (6, 9), (7, 6)]
            .into_iter()
            .collect();
        let d = descendants(&table, 2);
        assert_eq!(d, [3, 4].into_iter().collect());
        assert_eq!(descendants(&table, 1).len(), 4);
        assert!(descendants(&table, 4).is_empty());
    }
}
