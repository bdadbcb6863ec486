//! `notes`: the privfork demo application. Main (root) binds the
//! listeners and supervises; the worker (`--user`, sandboxed) serves HTTP
//! and stores notes; the render helper turns markdown into sanitized HTML
//! in a throwaway child per note. See `roles.rs` for the table.

#![deny(unsafe_code)]

mod config;
mod conn_io;
mod pages;
mod render;
mod roles;
mod serve;
mod setup;
mod store;
mod web;
mod worker;

use clap::Parser;
use privfork::family::Family;

use crate::config::Config;

fn main() {
    // A member finds its role in the same table main used: the one
    // without the worker's sandbox only when main passed `--no-sandbox`.
    let member = privfork::exe::role().is_some();
    // (`args_os`: an argument that is not UTF-8 is clap's to report.)
    let no_sandbox = if member {
        std::env::args_os()
            .skip_while(|a| a != "--")
            .any(|a| a == "--no-sandbox")
    } else {
        std::env::args_os().skip(1).any(|a| a == "--no-sandbox")
    };
    let table = if no_sandbox {
        roles::ROLES_NO_SANDBOX
    } else {
        roles::ROLES
    };
    let family = Family::new(table);
    // First thing: a member started by exec runs its role here.
    family.dispatch();

    let config = Config::parse();
    if config.no_sandbox != no_sandbox {
        // `--no-sandbox` given as another option's value, say.
        eprintln!("notes: --no-sandbox must be given as an option of its own");
        std::process::exit(2);
    }
    let code = if config.check {
        setup::check(&config)
    } else {
        match setup::prepare(config) {
            Ok((config, specs)) => {
                let mut family = family
                    .listen(specs)
                    .args(config.member_args())
                    .stop_timeout(std::time::Duration::from_secs(10));
                if let Some(user) = setup::worker_user_override(&config) {
                    family = family.user("worker", user);
                }
                family.run_main()
            }
            Err(e) => {
                eprintln!("notes: {e}");
                1
            }
        }
    };
    std::process::exit(code)
}
