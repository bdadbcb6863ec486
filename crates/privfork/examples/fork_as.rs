//! Runs a few functions as another user with fork-as and prints what
//! happened. Run as root: `cargo run --example fork_as [USER]` (default
//! `nobody`).

use std::time::{Duration, Instant};

use privfork::{ForkAs, ForkAsError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let user = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nobody".to_owned());
    let me = rustix::process::getuid().as_raw();
    println!(
        "parent: pid {}, uid {me}",
        rustix::process::getpid().as_raw_nonzero()
    );
    let call = ForkAs::user(&user)?.timeout(Duration::from_secs(2));
    println!("target: {}", call.identity());

    // 1. A function whose result says who ran it.
    let t = Instant::now();
    let (pid, uid, gid): (i32, u32, u32) = call.run(|| {
        (
            rustix::process::getpid().as_raw_nonzero().get(),
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        )
    })?;
    println!(
        "child:  pid {pid} ran as uid {uid}, gid {gid} ({:?} round trip)",
        t.elapsed()
    );

    // 2. The child cannot get root back.
    let regained: bool =
        call.run(|| rustix::thread::set_thread_uid(rustix::process::Uid::ROOT).is_ok())?;
    println!(
        "child:  setuid(0) after the drop {}",
        if regained {
            "SUCCEEDED (bug!)"
        } else {
            "failed, as it must"
        }
    );

    // 3. Failures come back as typed errors.
    match call.run(|| -> u8 { panic!("a bug in the function") }) {
        Err(ForkAsError::Panicked { message }) => {
            println!("panic:  reported as Panicked {{ message: {message:?} }}")
        }
        other => println!("panic:  unexpected {other:?}"),
    }
    match call.clone().timeout(Duration::from_millis(200)).run(|| {
        std::thread::sleep(Duration::from_secs(10));
        0u8
    }) {
        Err(e @ ForkAsError::Timeout { .. }) => println!("slow:   {e}"),
        other => println!("slow:   unexpected {other:?}"),
    }
    Ok(())
}
