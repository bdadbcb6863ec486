//! The `privfork` command.
//!
//! - `privfork run [-u USER] [-g GROUP] [-p PROMISES] [-v PERM:PATH]...
//!   [--bind PORT]... [--connect PORT]... [--mode kill|errno|log]
//!   [--env K=V]... [--keep-env NAME]... [--inherit-env] [--chdir DIR]
//!   [--tty] [--cpu SECS] [--memory SIZE] [--file-size SIZE]
//!   [--processes N] [--open-files N] [--timeout DURATION] [--net none]
//!   -- CMD [ARGS...]` runs CMD as USER (the caller without `-u`; never
//!   root) under pledge-style promises (seccomp-bpf) and unveiled paths
//!   (Landlock), with a clean environment, resource limits, an optional
//!   deadline and an optional empty network namespace; CMD cannot execute
//!   anything further unless `exec` is promised. privfork relays CMD's
//!   output, passes signals on, and ends everything CMD started when it
//!   exits. Exit status: CMD's own, or 128 + the signal that killed it;
//!   privfork's own failures use 115–127, and 2 for a malformed option
//!   (see `privfork run --help`).
//! - `privfork id USER [--group GROUP]` prints the identity a privilege drop
//!   or fork-as to USER would take: uid, primary gid and supplementary
//!   groups, resolved exactly as the library resolves them; an unknown
//!   user or group exits 123, as `run` does.
//!
//! `privfork serve` (supervising a server with smooth restarts) is not
//! here yet.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use privfork::Identity;
use privfork::sandbox::resources;

/// A malformed option value (as clap's own usage errors).
const USAGE: u8 = 2;

/// OpenBSD-style privilege separation on Linux: `privfork run` runs a
/// program as a user under pledge-style promises and unveiled paths;
/// `privfork id` shows the identity a privilege drop takes.
#[derive(Debug, Parser)]
#[command(name = "privfork", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// Kill the process that made a refused call (privfork then exits
    /// 159, 128 + SIGSYS). In every mode each refused call is named on
    /// privfork's stderr with the promise that would allow it.
    Kill,
    /// Fail the refused call with EPERM (named on stderr).
    Errno,
    /// As errno, and also name each open Landlock will refuse with the
    /// -v that would allow it: for finding what a program needs.
    Log,
}

#[derive(Debug, Subcommand)]
// Parsed once at start and matched right away: the size is never copied.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run a program as a user under promises and unveiled paths.
    ///
    /// The program runs as -u USER; without -u, as the caller (refused
    /// for root: root must name a user, and never root itself). It starts
    /// with a clean environment, in privfork's working directory (or
    /// --chdir), in a session of its own; signals sent to privfork
    /// (TERM, INT, HUP, QUIT, USR1, USR2, WINCH...) are passed on to it,
    /// and everything it started is killed when it exits.
    ///
    /// sd_notify: if privfork's environment has NOTIFY_SOCKET (systemd's,
    /// Type=notify), the program gets a NOTIFY_SOCKET of its own, never
    /// privfork's; privfork passes on READY=1, STOPPING=1, RELOADING=1 and
    /// STATUS= from the program and its processes, nothing else (no
    /// MAINPID, WATCHDOG, FDSTORE, no fds). It works without the unix
    /// promise: the program's datagram socket then reaches privfork only.
    ///
    /// Exit status: the program's own, or 128 + the signal that killed it.
    /// privfork's own failures: 2 a malformed option value (a size,
    /// duration or --net), 115 --timeout reached, 116 the --chdir
    /// directory cannot be entered as the user, 117 the program, its interpreter, a library
    /// or a library search directory lies in a directory that someone other
    /// than root or the caller can write, 118 a sandbox layer this kernel cannot
    /// enforce (see --best-effort), 119 an executable stack without
    /// prot_exec, 120 a needed library not found, 121 bad promise, 122 bad
    /// unveil spec or
    /// missing path, 123 unknown user or group, 124 privilege drop failed,
    /// 125 sandbox failed, 126 program not executable (by the user: the
    /// message names the directory or file that stops it), 127 not found.
    Run {
        /// Run as this user (name or uid). Without -u: as the caller.
        /// Required when privfork runs as root (the program never runs as
        /// root): e.g. -u nobody.
        #[arg(short, long)]
        user: Option<String>,
        /// Run with this group (name or gid) as the only group.
        #[arg(short, long)]
        group: Option<String>,
        /// Promises, as pledge(2) names them ("stdio rpath inet").
        #[arg(short, long, default_value = "stdio")]
        promises: String,
        /// Unveil PATH with PERMS from rwxc, e.g. r:/etc or rwc:/srv/data
        /// (a '?' after PERMS skips a missing path); a bare /PATH is
        /// read-only.
        #[arg(short = 'v', long = "unveil", value_name = "PERMS:PATH")]
        unveil: Vec<String>,
        /// Allow binding this TCP port.
        #[arg(long, value_name = "PORT")]
        bind: Vec<u16>,
        /// Allow connecting to this TCP port.
        #[arg(long, value_name = "PORT")]
        connect: Vec<u16>,
        /// What a refused system call does (default: kill, or errno under
        /// the `error` promise).
        #[arg(long, value_enum)]
        mode: Option<Mode>,
        /// Give the program privfork's own stdin, stdout and stderr — the
        /// caller's terminal — for interactive programs (a shell, python).
        /// The program still has a session of its own (the terminal is not
        /// its controlling terminal: no job control, no /dev/tty); privfork
        /// passes Ctrl-C, Ctrl-\ and window size changes on to it. Off by
        /// default: stdout and stderr are then pipes that privfork relays,
        /// and stdin is /dev/null when privfork's is a terminal.
        #[arg(long, visible_alias = "inherit-stdio")]
        tty: bool,
        /// Run even if this kernel cannot enforce every layer (Landlock,
        /// seccomp, ...), with a warning naming what is missing. Without
        /// it, such a kernel is refused (exit status 118).
        #[arg(long)]
        best_effort: bool,
        /// Set K=V in the program's environment (over everything else).
        /// The program starts from a clean environment: TERM, LANG, LC_*
        /// and TZ are kept from privfork's; PATH is
        /// /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        /// (where a CMD without '/' is looked for too); HOME, USER,
        /// LOGNAME and SHELL are the user's own.
        #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
        env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
        /// Pass NAME from privfork's environment on to the program.
        #[arg(long = "keep-env", value_name = "NAME")]
        keep_env: Vec<std::ffi::OsString>,
        /// Pass privfork's whole environment on (PATH included; HOME, USER,
        /// LOGNAME, SHELL still the user's). Risky: secrets in it (tokens,
        /// keys) reach the program, and any process of its user can read
        /// them in /proc/PID/environ.
        #[arg(long)]
        inherit_env: bool,
        /// Start the program in DIR, entered as the user (exit 116 if the
        /// user cannot). Default: privfork's working directory.
        #[arg(long, value_name = "DIR")]
        chdir: Option<std::path::PathBuf>,
        /// CPU time limit in seconds (RLIMIT_CPU): SIGXCPU, then SIGKILL.
        #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
        cpu: Option<String>,
        /// Memory limit (RLIMIT_DATA: heap and private memory; malloc
        /// fails past it), e.g. 512M, 2G. Not RLIMIT_AS, which breaks
        /// V8/node and other JITs.
        #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
        memory: Option<String>,
        /// Largest file the program may write (RLIMIT_FSIZE), e.g. 10M:
        /// SIGXFSZ past it.
        #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
        file_size: Option<String>,
        /// Process limit (RLIMIT_NPROC). It counts every process and thread
        /// of the user on the whole machine, not only the program's: with
        /// a shared user (nobody) a low value can stop the program from
        /// starting (exit 126) or forking.
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        processes: Option<String>,
        /// Open file limit (RLIMIT_NOFILE).
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        open_files: Option<String>,
        /// End the program after DURATION of wall-clock time (30, 1.5s,
        /// 10m, 2h, 1d): SIGTERM to its process group, SIGKILL 5 s later
        /// if it is still there; privfork then exits 115.
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        timeout: Option<String>,
        /// none: a new, empty network namespace with only a loopback
        /// (up); nothing outside it is reachable, not even the host's
        /// 127.0.0.1. host (default): the host's network.
        #[arg(long, value_name = "none|host")]
        net: Option<String>,
        /// The program and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// Print the identity (uid, gid, groups) that dropping to USER gives.
    Id {
        /// A user name or numeric uid.
        user: String,
        /// Use this group (name or gid) as the only group instead of the
        /// user's own.
        #[arg(short, long)]
        group: Option<String>,
    },
}

/// `K=V` for `--env`.
fn parse_env(s: &str) -> Result<(std::ffi::OsString, std::ffi::OsString), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.into(), v.into())),
        _ => Err(format!("expected K=V, got {s:?}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            user,
            group,
            promises,
            unveil,
            bind,
            connect,
            mode,
            tty,
            best_effort,
            env,
            keep_env,
            inherit_env,
            chdir,
            cpu,
            memory,
            file_size,
            processes,
            open_files,
            timeout,
            net,
            command,
        } => {
            let values = || -> Result<_, resources::BadValue> {
                let size = |o, v: &Option<String>| {
                    v.as_deref()
                        .map(|v| resources::parse_size(o, v))
                        .transpose()
                };
                let count = |o, v: &Option<String>| {
                    v.as_deref()
                        .map(|v| resources::parse_count(o, v))
                        .transpose()
                };
                let limits = resources::Limits {
                    cpu_seconds: count("--cpu", &cpu)?,
                    memory: size("--memory", &memory)?,
                    file_size: size("--file-size", &file_size)?,
                    processes: count("--processes", &processes)?,
                    open_files: count("--open-files", &open_files)?,
                };
                let timeout = timeout
                    .as_deref()
                    .map(|t| resources::parse_duration("--timeout", t))
                    .transpose()?;
                let net = net
                    .as_deref()
                    .map(resources::parse_net)
                    .transpose()?
                    .unwrap_or_default();
                Ok((limits, timeout, net))
            };
            let (limits, timeout, net) = match values() {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("privfork: {e}");
                    return ExitCode::from(USAGE);
                }
            };
            let opts = privfork::sandbox::run::RunOptions {
                user,
                group,
                promises,
                unveil,
                bind,
                connect,
                violation: mode.map(|m| match m {
                    Mode::Kill => privfork::sandbox::Violation::Kill,
                    Mode::Errno => privfork::sandbox::Violation::Errno,
                    Mode::Log => privfork::sandbox::Violation::Log,
                }),
                best_effort,
                stdio: if tty {
                    privfork::sandbox::run::StdioMode::Inherit
                } else {
                    privfork::sandbox::run::StdioMode::Relay
                },
                env,
                keep_env,
                inherit_env,
                chdir,
                limits,
                timeout,
                net,
                command,
            };
            match privfork::sandbox::run::run(&opts) {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
                Err(e) => {
                    eprintln!("privfork: {e}");
                    ExitCode::from(u8::try_from(e.code).unwrap_or(255))
                }
            }
        }
        Command::Id { user, group } => {
            let id = match &group {
                Some(g) => Identity::user_group(&user, g),
                None => Identity::user(&user),
            };
            match id {
                Ok(id) => {
                    let groups: Vec<String> = id.groups().iter().map(u32::to_string).collect();
                    println!(
                        "user={} uid={} gid={} groups={}",
                        id.name().unwrap_or("-"),
                        id.uid(),
                        id.gid(),
                        groups.join(",")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("privfork: {e}");
                    // The code `run` gives the same bad user.
                    ExitCode::from(privfork::sandbox::run::exit::BAD_USER as u8)
                }
            }
        }
    }
}
