//! A multithreaded program using fork-as through a fork server. Run as
//! root: `cargo run --example fork_server`.
//!
//! The server is spawned first, while the program is single-threaded; then
//! four threads ask it to run a registered function as `nobody`, and one
//! asks for something it was not allowed.

use std::sync::Arc;

use privfork::fork_server::ForkServer;

/// Runs in a throwaway child as `nobody`.
fn describe(input: String) -> String {
    format!(
        "{} chars, computed by pid {} as uid {}",
        input.chars().count(),
        rustix::process::getpid().as_raw_nonzero(),
        rustix::process::getuid().as_raw()
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Arc::new(
        ForkServer::builder()
            .register("describe", describe)
            .allow("describe", "nobody")?
            .spawn()?,
    );
    println!("fork server: pid {}", server.pid());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                let text = "x".repeat(10 * (i + 1));
                let answer: String = server.call("describe", "nobody", &text).expect("call");
                println!("thread {i}: {answer}");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    match server.call::<_, String>("describe", "root", &String::new()) {
        Err(e) => println!("as root: {e}"),
        Ok(v) => println!("as root: unexpectedly ran: {v}"),
    }
    let stats = server.stats()?;
    println!(
        "server stats: {} forks, {} refused, {} running",
        stats.forks, stats.refused, stats.running
    );
    Ok(())
}
