//! The process family in one program: main (root, owns the listener,
//! supervises), a worker (nobody, sandboxed, no exec, serves HTTP/1.1) and
//! a helper (the fork server as a role) that the worker asks, on every
//! request, to render the answer in a fresh fork-as child as `nobody`
//! under `stdio` alone. The roles are in `roles.rs`.
//!
//! ```sh
//! sudo cargo run --release -p privfork --example family -- --listen 127.0.0.1:8080
//! curl http://127.0.0.1:8080/hello
//! ps -o pid,user,args --ppid "$(pgrep -of 'examples/family')"
//! ```
//!
//! SIGTERM or Ctrl-C stops it: the worker finishes the requests in
//! flight, then everything exits.

mod roles;

use privfork::family::Family;

fn main() {
    let family = Family::new(roles::ROLES);
    // First thing: a member started by exec runs its role here.
    family.dispatch();
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1:8080", String::as_str);
    let spec = match format!("{listen},name=http").parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("family: {e}");
            std::process::exit(2);
        }
    };
    std::process::exit(family.listen(vec![spec]).run_main());
}
