//! The worker: set up and sandboxed by the family before this runs; starts
//! the async runtime only now (threads after the sandbox), serves HTTP on
//! every listener, and keeps its channel to main on this thread.
//!
//! This thread is the only one that talks to main: it waits on main's
//! channel (a stop request, or main gone) and on a wake-up pipe through
//! which request handlers ask for the family's status.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use privfork::event::{Interest, Poller};
use privfork::family::{FamilyStatus, RoleContext};
use privfork::fork_server::ForkServer;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::store::Store;
use crate::{serve, web};

/// How often the worker sweeps temp files left by writers that died.
const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// How long the worker waits for main to answer a status query.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// A handler's way to the family's status: the request goes on a queue,
/// a byte on the wake-up pipe tells the control thread.
#[derive(Debug)]
pub struct StatusClient {
    queue: Mutex<Vec<oneshot::Sender<Result<FamilyStatus, String>>>>,
    wake: OwnedFd,
}

impl StatusClient {
    /// Asks main (through the control thread) for the family's status.
    pub async fn get(&self) -> Result<FamilyStatus, String> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .lock()
            .map_err(|_| "status queue poisoned".to_owned())?
            .push(tx);
        // Full pipe: a wake-up is pending already.
        let _ = rustix::io::write(&self.wake, &[1]);
        match tokio::time::timeout(STATUS_TIMEOUT * 2, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the worker is stopping".to_owned()),
            Err(_) => Err("no status answer in time".to_owned()),
        }
    }
}

/// The worker role's function.
pub fn run(mut cx: RoleContext) -> i32 {
    match serve(&mut cx) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("worker: {e}");
            1
        }
    }
}

fn serve(cx: &mut RoleContext) -> Result<(), String> {
    let config = Config::from_member_args(cx.args()).map_err(|e| e.to_string())?;
    let listeners = cx.take_listeners();
    let channel = cx
        .take_peer("render")
        .ok_or("no channel to the render helper")?;
    let render = ForkServer::connect(channel).map_err(|e| format!("render helper: {e}"))?;
    let store = Arc::new(
        Store::open(&config.data)
            .map_err(|e| format!("data directory {}: {e}", config.data.display()))?,
    );
    // Temp files whose writer died (a crash mid-write); a live writer's,
    // e.g. the previous generation's during a restart, are left alone.
    match store.remove_stale_temps() {
        Ok(0) => {}
        Ok(n) => eprintln!("removed {n} unfinished note(s) left by a writer that died"),
        Err(e) => eprintln!("cleaning temp files: {e}"),
    }
    let (wake_r, wake_w) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )
    .map_err(|e| format!("pipe: {e}"))?;
    let status = Arc::new(StatusClient {
        queue: Mutex::new(Vec::new()),
        wake: wake_w,
    });
    // Threads start here, after the sandbox.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .thread_name("worker")
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // A writer that dies mid-note leaves a temp file; sweep now and then
    // (the store keeps what a live writer may still own).
    let sweeper = Arc::clone(&store);
    rt.spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            let s = Arc::clone(&sweeper);
            match tokio::task::spawn_blocking(move || s.remove_stale_temps()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => eprintln!("removed {n} unfinished note(s) left by a writer that died"),
                Ok(Err(e)) => eprintln!("cleaning temp files: {e}"),
                Err(_) => {}
            }
        }
    });
    let app = web::App::new(config, store, render, Arc::clone(&status));
    let server = {
        let _guard = rt.enter();
        let listeners = serve::listeners(listeners).map_err(|e| format!("listeners: {e}"))?;
        rt.spawn(serve::serve(listeners, app, stop_rx))
    };
    cx.ready().map_err(|e| format!("telling main: {e}"))?;
    loop {
        let mut p: Poller<'_, 2> = Poller::new();
        p.add_fd(cx.main_fd(), Interest::READABLE, 0);
        p.add_fd(wake_r.as_fd(), Interest::READABLE, 1);
        p.wait(None).map_err(|e| format!("poll: {e}"))?;
        let woken = p.ready().any(|(t, _)| t == 1);
        drop(p);
        if let Some(deadline) = cx.poll_stop() {
            // Stop accepting; in-flight requests finish (each connection
            // answers its current request with `Connection: close`).
            let _ = stop_tx.send(true);
            let finished = rt.block_on(async { tokio::time::timeout(deadline, server).await });
            if finished.is_err() {
                eprintln!("requests still running at the stop deadline ({deadline:?})");
            }
            cx.stopped();
            rt.shutdown_timeout(Duration::ZERO);
            return Ok(());
        }
        if woken {
            let mut buf = [0u8; 64];
            while matches!(rustix::io::read(&wake_r, &mut buf), Ok(n) if n > 0) {}
            let waiting: Vec<_> = status
                .queue
                .lock()
                .map(|mut q| std::mem::take(&mut *q))
                .unwrap_or_default();
            if waiting.is_empty() {
                continue;
            }
            let answer = cx.family_status(STATUS_TIMEOUT).map_err(|e| e.to_string());
            for tx in waiting {
                let _ = tx.send(answer.clone());
            }
        }
    }
}
