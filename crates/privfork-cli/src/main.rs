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
//! - `privfork serve --listen ADDR... [--ready notify|delay:D]
//!   [--ready-timeout D] [--stop-signal SIG] [--drain D]
//!   [--restart always|on-failure|never] [run's options] -- CMD [ARGS...]`
//!   binds the listeners as root and runs CMD as `privfork run` would,
//!   with the sockets at fd 3 onward (systemd's socket activation); SIGHUP
//!   starts a new instance and drains the old one once the new one is
//!   ready; crashes restart with a growing delay (see docs/serve.md).
//! - `privfork run --listen ADDR ...` hands CMD sockets the same way,
//!   without restarts.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use privfork::Identity;
use privfork::sandbox::resources;

/// A malformed option value (as clap's own usage errors).
const USAGE: u8 = 2;

/// OpenBSD-style privilege separation on Linux: `privfork run` runs a
/// program as a user under pledge-style promises and unveiled paths;
/// `privfork serve` runs a server so, on sockets it holds as root, and
/// restarts it on SIGHUP without losing a connection; `privfork id` shows
/// the identity a privilege drop takes.
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

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RestartArg {
    Always,
    OnFailure,
    Never,
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
    /// duration or --net), 114 a --listen address cannot be bound, 115 --timeout reached, 116 the --chdir
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
        #[command(flatten)]
        run: RunArgs,
        /// Bind this address as root before the program starts and hand
        /// the socket to it at fd 3 onward, with LISTEN_FDS, LISTEN_FDNAMES
        /// and LISTEN_PID set (systemd's socket activation): e.g.
        /// 127.0.0.1:80, [::1]:8080, unix:/run/app.sock,mode=0660,owner=www-data.
        /// Add ,name=NAME for LISTEN_FDNAMES. Repeatable; exit 114 if one
        /// cannot be bound. The program needs the accept promise (or inet/unix) to
        /// take connections on it.
        #[arg(long, value_name = "ADDR[,name=N][,mode=M][,owner=U][,group=G]")]
        listen: Vec<privfork::listen::ListenSpec>,
    },
    /// Serve on sockets privfork binds as root, with a sandboxed server
    /// restarted on SIGHUP without losing a connection.
    ///
    /// privfork binds every --listen address (as root: ports below 1024,
    /// unix sockets with their owner and mode) and keeps the sockets for
    /// its whole life. Each instance of the server runs exactly as
    /// `privfork run` runs CMD (the same options: user, promises, unveils,
    /// environment, limits), with the sockets at fd 3 onward and
    /// LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID set (systemd's socket
    /// activation: gunicorn, uvicorn --fd 3, Go and Rust servers that use
    /// it). The server needs the accept promise to take connections.
    ///
    /// SIGHUP starts a new instance; once it is ready the old one gets
    /// --stop-signal and --drain to finish. A new instance that exits or
    /// is not ready within --ready-timeout is killed and the old one
    /// serves on. An instance that exits by itself is started again after
    /// a growing delay (--restart). SIGTERM or SIGINT stop every instance
    /// gracefully (a second one kills them). SIGQUIT, SIGUSR1 and SIGUSR2
    /// are passed on to the serving instance.
    ///
    /// Exit status: the serving instance's (or 128 + the signal that ended
    /// it); 114 a --listen address cannot be bound; the first instance's
    /// `privfork run` failure (115–127, see `privfork run --help`).
    Serve {
        /// Bind this address and hand it to every instance: 127.0.0.1:80,
        /// [::1]:8080, unix:/run/app.sock,mode=0660,owner=www-data (add
        /// ,name=NAME for LISTEN_FDNAMES). Repeatable; at least one.
        #[arg(
            long,
            required = true,
            value_name = "ADDR[,name=N][,mode=M][,owner=U][,group=G]"
        )]
        listen: Vec<privfork::listen::ListenSpec>,
        /// How an instance says it is ready: notify (sd_notify READY=1,
        /// through a NOTIFY_SOCKET of its own) or delay:DURATION (ready
        /// once it has run that long, for servers that cannot notify).
        #[arg(long, value_name = "notify|delay:DURATION", default_value = "notify")]
        ready: String,
        /// How long a new instance has to become ready before it is
        /// killed (and, in a reload, the old one serves on).
        #[arg(long, value_name = "DURATION", default_value = "60s")]
        ready_timeout: String,
        /// What an instance is sent to stop gracefully: TERM, INT, QUIT,
        /// HUP, USR1, USR2 or WINCH.
        #[arg(long, value_name = "SIG", default_value = "TERM")]
        stop_signal: String,
        /// How long an instance has, after its stop signal, before what is
        /// left of it is killed.
        #[arg(long, value_name = "DURATION", default_value = "30s")]
        drain: String,
        /// When an instance that exited by itself starts again: always,
        /// on-failure (unless it exited 0), never (privfork then exits
        /// with its status).
        #[arg(long, value_enum, default_value = "on-failure")]
        restart: RestartArg,
        #[command(flatten)]
        run: RunArgs,
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

/// The options of `privfork run`, shared by `privfork serve`.
#[derive(Debug, clap::Args)]
struct RunArgs {
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
}

impl RunArgs {
    /// The library's options: sizes, durations and `--net` parsed.
    fn options(
        self,
        listen: Vec<privfork::listen::ListenSpec>,
    ) -> Result<privfork::sandbox::run::RunOptions, resources::BadValue> {
        let RunArgs {
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
        } = self;
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
        Ok(privfork::sandbox::run::RunOptions {
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
            listen,
            command,
        })
    }
}

/// `privfork serve`'s options, parsed.
fn serve_options(
    listen: Vec<privfork::listen::ListenSpec>,
    ready: &str,
    ready_timeout: &str,
    stop_signal: &str,
    drain: &str,
    restart: RestartArg,
    run: RunArgs,
) -> Result<privfork::serve::ServeOptions, String> {
    use privfork::serve::{Ready, Restart, STOP_SIGNALS};
    let ready = match ready {
        "notify" => Ready::Notify,
        other => match other.strip_prefix("delay:") {
            Some(d) => Ready::Delay(
                resources::parse_duration("--ready delay", d).map_err(|e| e.to_string())?,
            ),
            None => {
                return Err(format!(
                    "--ready {other:?}: expected notify or delay:DURATION (e.g. delay:2s)"
                ));
            }
        },
    };
    let name = stop_signal.trim_start_matches("SIG").to_ascii_uppercase();
    let stop_signal = STOP_SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| {
            let names: Vec<&str> = STOP_SIGNALS.iter().map(|(n, _)| *n).collect();
            format!(
                "--stop-signal {stop_signal:?}: expected one of {}",
                names.join(", ")
            )
        })?;
    Ok(privfork::serve::ServeOptions {
        run: run.options(Vec::new()).map_err(|e| e.to_string())?,
        listen,
        ready,
        ready_timeout: resources::parse_duration("--ready-timeout", ready_timeout)
            .map_err(|e| e.to_string())?,
        stop_signal,
        drain: resources::parse_duration("--drain", drain).map_err(|e| e.to_string())?,
        restart: match restart {
            RestartArg::Always => Restart::Always,
            RestartArg::OnFailure => Restart::OnFailure,
            RestartArg::Never => Restart::Never,
        },
    })
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
        Command::Run { run, listen } => {
            let opts = match run.options(listen) {
                Ok(opts) => opts,
                Err(e) => {
                    eprintln!("privfork: {e}");
                    return ExitCode::from(USAGE);
                }
            };
            match privfork::sandbox::run::run(&opts) {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
                Err(e) => {
                    eprintln!("privfork: {e}");
                    ExitCode::from(u8::try_from(e.code).unwrap_or(255))
                }
            }
        }
        Command::Serve {
            listen,
            ready,
            ready_timeout,
            stop_signal,
            drain,
            restart,
            run,
        } => {
            let opts = match serve_options(
                listen,
                &ready,
                &ready_timeout,
                &stop_signal,
                &drain,
                restart,
                run,
            ) {
                Ok(opts) => opts,
                Err(e) => {
                    eprintln!("privfork: {e}");
                    return ExitCode::from(USAGE);
                }
            };
            match privfork::serve::serve(&opts) {
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
