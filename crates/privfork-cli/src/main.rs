//! The `privfork` command.
//!
//! - `privfork run [-u USER] [-g GROUP] [-p PROMISES] [-v PERM:PATH]...
//!   [--bind PORT]... [--connect PORT]... [--mode kill|errno|log] -- CMD
//!   [ARGS...]` runs CMD as USER under pledge-style promises and unveiled
//!   paths; CMD cannot execute anything further unless `exec` is promised.
//!   Exit status: CMD's own, or 128 + the signal that killed it; privfork's
//!   own failures use 117–127 (see `privfork run --help`).
//! - `privfork id USER [--group GROUP]` prints the identity a privilege drop
//!   or fork-as to USER would take: uid, primary gid and supplementary
//!   groups, resolved exactly as the library resolves them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use privfork::Identity;

/// OpenBSD-style privilege separation for Rust services on Linux.
#[derive(Debug, Parser)]
#[command(name = "privfork", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// Kill the program on a refused call (SIGSYS).
    Kill,
    /// Fail the refused call with EPERM.
    Errno,
    /// Report each refused call and the promise that would allow it, then
    /// fail it with EPERM.
    Log,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a program as a user under promises and unveiled paths.
    ///
    /// Exit status: the program's own, or 128 + the signal that killed it.
    /// privfork's own failures: 117 the program, its interpreter, a library
    /// or a library search directory lies in a directory that someone other
    /// than root or the caller can write, 118 a sandbox layer this kernel cannot
    /// enforce (see --best-effort), 119 an executable stack without
    /// prot_exec, 120 a needed library not found, 121 bad promise, 122 bad
    /// unveil spec or
    /// missing path, 123 unknown user or group, 124 privilege drop failed,
    /// 125 sandbox failed, 126 program not executable, 127 not found.
    Run {
        /// Run as this user (name or uid). Required when privfork runs as
        /// root (the program never runs as root): e.g. -u nobody.
        #[arg(short, long)]
        user: Option<String>,
        /// Run with this group (name or gid) as the only group.
        #[arg(short, long)]
        group: Option<String>,
        /// Promises, as pledge(2) names them ("stdio rpath inet").
        #[arg(short, long, default_value = "stdio")]
        promises: String,
        /// Unveil PATH with PERMS from rwxc, e.g. r:/etc or rwc:/srv/data
        /// (a '?' after PERMS skips a missing path).
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
        /// Give the program privfork's own stdin, stdout and stderr, a
        /// terminal included (for interactive programs). By default its
        /// stdout and stderr are pipes that privfork relays, and its stdin
        /// is /dev/null when privfork's is a terminal.
        #[arg(long, visible_alias = "tty")]
        inherit_stdio: bool,
        /// Run even if this kernel cannot enforce every layer (Landlock,
        /// seccomp, ...), with a warning naming what is missing. Without
        /// it, such a kernel is refused (exit status 118).
        #[arg(long)]
        best_effort: bool,
        /// Set K=V in the program's environment. The program starts from an
        /// empty environment: PATH, LANG, LC_*, TERM and TZ are kept from
        /// privfork's, HOME, USER, LOGNAME and SHELL are the user's own.
        #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
        env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
        /// Pass NAME from privfork's environment on to the program.
        #[arg(long = "keep-env", value_name = "NAME")]
        keep_env: Vec<std::ffi::OsString>,
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
            inherit_stdio,
            best_effort,
            env,
            keep_env,
            command,
        } => {
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
                stdio: if inherit_stdio {
                    privfork::sandbox::run::StdioMode::Inherit
                } else {
                    privfork::sandbox::run::StdioMode::Relay
                },
                env,
                keep_env,
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
                    ExitCode::from(2)
                }
            }
        }
    }
}
