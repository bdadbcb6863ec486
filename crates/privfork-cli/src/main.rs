//! The `privfork` command.
//!
//! `privfork id USER [--group GROUP]` prints the identity a privilege drop
//! or fork-as to USER would take: uid, primary gid and supplementary groups,
//! resolved exactly as the library resolves them. `privfork run` (a
//! sandboxed exec) and `privfork serve` (a supervisor) come later.

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

#[derive(Debug, Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
