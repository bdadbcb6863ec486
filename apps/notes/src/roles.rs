//! The family of `notes`, as data: one row per process.
//!
//! | role   | user              | sandbox                                                        | gets |
//! |--------|-------------------|----------------------------------------------------------------|------|
//! | main   | root              | none (binds listeners, supervises, never parses requests)      | — |
//! | worker | `--user` (nobody) | `stdio rpath wpath cpath flock accept`, unveils the data dir `rwc` | every listener, a channel to `render`; on a restart, the previous worker's idle connections |
//! | render | root, SETUID/SETGID/KILL only | none itself: each render is a fresh child as `--render-user` under `stdio` alone | a channel to `worker` |

use privfork::family::{ALL_LISTENERS, Role, RoleContext};
use privfork::fork_server::{ForkServer, ForkServerBuilder, Function};
use privfork::sandbox::{Sandbox, SandboxError};

use crate::config::Config;

/// The worker's promises: serve connections on the listeners it was
/// handed (accept, read, write, close: no socket, bind or connect), read
/// and write files (Landlock confines them to the data directory), lock
/// them (a writer holds a lock on its temp file).
pub const WORKER_PROMISES: &str = "stdio rpath wpath cpath flock accept";
/// A render child's promises: computing, and writing its result.
pub const RENDER_PROMISES: &str = "stdio";

/// What the worker asks the render helper for: a note's markdown in,
/// sanitized HTML out.
pub const RENDER: Function<String, String> = Function::new("render");

/// The rows, sandboxed.
pub static ROLES: &[Role] = &[
    Role {
        listeners: ALL_LISTENERS,
        peers: &["render"],
        status: true,
        // Idle connections move to the next generation's worker on a
        // smooth restart (none is closed under a waiting client).
        handover: true,
        sandbox: Some(worker_sandbox),
        ..Role::new("worker", crate::worker::run)
    },
    RENDER_ROLE,
];

/// The rows with the worker unsandboxed (`--no-sandbox`, for measuring
/// the sandbox's cost only). It still runs as its user.
pub static ROLES_NO_SANDBOX: &[Role] = &[
    Role {
        listeners: ALL_LISTENERS,
        peers: &["render"],
        status: true,
        handover: true,
        sandbox: None,
        ..Role::new("worker", crate::worker::run)
    },
    RENDER_ROLE,
];

const RENDER_ROLE: Role = Role {
    // The fork server keeps root's uid with exactly the capabilities it
    // needs to drop and signal its children, and sandboxes each child
    // instead of itself (their setup needs calls no promise allows).
    user: None,
    keep_caps: ForkServerBuilder::CAPS,
    sandbox: None,
    ..Role::new("render", render_helper)
};

/// The worker's sandbox, from the configuration main passed on.
fn worker_sandbox(args: &[String]) -> Result<Sandbox, SandboxError> {
    let config = Config::from_member_args(args).map_err(|e| SandboxError::Step {
        step: "reading the notes configuration",
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
    })?;
    Sandbox::new()
        .promises(WORKER_PROMISES)?
        .unveil(&format!("rwc:{}", config.data.display()))
}

/// The render helper: the fork server, serving the worker on their
/// channel, each call a fresh child as the render user under `stdio`.
fn render_helper(mut cx: RoleContext) -> i32 {
    let config = match Config::from_member_args(cx.args()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("render: {e}");
            return 1;
        }
    };
    let Some(channel) = cx.take_peer("worker") else {
        eprintln!("render: no channel to the worker");
        return 1;
    };
    let sandbox = match Sandbox::new().promises(RENDER_PROMISES) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("render: {e}");
            return 1;
        }
    };
    let server = match ForkServer::builder()
        .register_fn(RENDER, render_note)
        .max_timeout(config.render_timeout())
        .max_result(usize::try_from(config.render_max).unwrap_or(usize::MAX))
        .max_memory(config.render_max_memory << 20)
        .max_args(usize::try_from(config.max_body).unwrap_or(usize::MAX) + 64)
        .allow_sandboxed(RENDER.name(), &config.render_user, &sandbox)
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("render: {e}");
            return 1;
        }
    };
    cx.set_detail(format!(
        "each render: a fresh child as {} under \"{RENDER_PROMISES}\", killed after {} ms, at most {} MiB",
        config.render_user, config.render_timeout_ms, config.render_max_memory
    ));
    if cx.ready().is_err() {
        return 1;
    }
    // Until the worker closes its end (it stops, or restarts: main then
    // restarts this helper with it).
    server.serve(channel)
}

/// Runs in a render child, as the render user, under `stdio`.
fn render_note(markdown: String) -> String {
    crate::render::render(&markdown)
}
