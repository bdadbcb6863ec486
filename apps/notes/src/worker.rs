//! The worker: set up and sandboxed by the family before this runs; starts
//! the async runtime only now (threads after the sandbox), serves HTTP on
//! every listener, and keeps its channel to main on this thread.
//!
//! This thread, the control thread, is the only one that talks to main.
//! It waits on main's channel (a stop or a restart's drain, a connection
//! the previous generation handed over, or main gone) and on a wake-up
//! pipe through which the runtime's tasks ask for the family's status and
//! hand idle connections over when draining.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use privfork::event::{Interest, Poller};
use privfork::family::{FamilyStatus, HandedOver, RoleContext};
use privfork::fork_server::ForkServer;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::serve::{DrainCounts, Handed, Signal};
use crate::store::Store;
use crate::{serve, web};

/// How often the worker sweeps temp files left by writers that died.
const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// How long the worker waits for main to answer a status query.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

type StatusReply = oneshot::Sender<Result<FamilyStatus, String>>;

/// The runtime's way to the control thread: requests go on a queue, a
/// byte on the wake-up pipe tells the control thread.
#[derive(Debug)]
pub struct Control {
    status: Mutex<Vec<StatusReply>>,
    /// Idle connections to hand to the next generation, with the bytes
    /// read from each and not answered.
    handovers: Mutex<Vec<(OwnedFd, Vec<u8>)>>,
    wake: OwnedFd,
    /// The server has returned: every connection ended, each idle one
    /// queued for handing over first.
    served: AtomicBool,
    /// What the drain did with the connections.
    pub drained: DrainCounts,
}

impl Control {
    /// A control, and the read end of its wake-up pipe.
    ///
    /// # Errors
    ///
    /// The pipe could not be made.
    pub fn new() -> std::io::Result<(Arc<Self>, OwnedFd)> {
        let (wake_r, wake_w) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        let control = Self {
            status: Mutex::new(Vec::new()),
            handovers: Mutex::new(Vec::new()),
            wake: wake_w,
            served: AtomicBool::new(false),
            drained: DrainCounts::default(),
        };
        Ok((Arc::new(control), wake_r))
    }

    /// Asks main (through the control thread) for the family's status.
    pub async fn status(&self) -> Result<FamilyStatus, String> {
        let (tx, rx) = oneshot::channel();
        self.status
            .lock()
            .map_err(|_| "status queue poisoned".to_owned())?
            .push(tx);
        self.wake();
        match tokio::time::timeout(STATUS_TIMEOUT * 2, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the worker is stopping".to_owned()),
            Err(_) => Err("no status answer in time".to_owned()),
        }
    }

    /// Hands idle connection `socket` to the next generation (through the
    /// control thread and main), with the bytes read from it and not
    /// answered.
    pub fn hand_over(&self, socket: OwnedFd, buffered: Vec<u8>) {
        // A poisoned queue (a panic while holding it) closes the socket.
        if let Ok(mut q) = self.handovers.lock() {
            q.push((socket, buffered));
        }
        self.wake();
    }

    /// The connections queued for handing over.
    pub fn take_handovers(&self) -> Vec<(OwnedFd, Vec<u8>)> {
        self.handovers
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }

    /// Wakes the control thread.
    pub fn wake(&self) {
        // Full pipe: a wake-up is pending already.
        let _ = rustix::io::write(&self.wake, &[1]);
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
    let (control, wake_r) = Control::new().map_err(|e| format!("pipe: {e}"))?;
    // Threads start here, after the sandbox.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .thread_name("worker")
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
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
    let (signal, signal_rx) = watch::channel(Signal::Serve);
    let (handed_tx, handed_rx) = mpsc::unbounded_channel();
    let app = web::App::new(config, store, render, Arc::clone(&control));
    {
        let _guard = rt.enter();
        let listeners = serve::listeners(listeners).map_err(|e| format!("listeners: {e}"))?;
        let control = Arc::clone(&control);
        rt.spawn(async move {
            serve::serve(listeners, handed_rx, app, Arc::clone(&control), signal_rx).await;
            // (Not the task's handle: the task is not finished yet when
            // the woken control thread looks.)
            control.served.store(true, Ordering::Release);
            control.wake();
        });
    }
    cx.ready().map_err(|e| format!("telling main: {e}"))?;
    let mut ctl = ControlLoop {
        control,
        handed: Some(handed_tx),
        signal,
        deadline: None,
        handover_failed: false,
    };
    loop {
        ctl.answer_status(cx);
        ctl.take_connections(cx);
        ctl.check_stop(cx);
        if let Some(deadline) = ctl.deadline {
            // Whatever the server queued before it finished is sent now,
            // before `Stopped` (on the same channel, so main passes every
            // connection on before it sees this member stop).
            let finished = ctl.control.served.load(Ordering::Acquire);
            ctl.send_handovers(cx);
            let late = Instant::now() >= deadline;
            if finished || late {
                if !finished {
                    eprintln!("requests still running at the stop deadline");
                }
                if cx.is_draining() {
                    ctl.wait_for_main_to_read(cx, deadline);
                    eprintln!("drained: {}", ctl.control.drained.summary());
                }
                cx.stopped();
                rt.shutdown_timeout(Duration::ZERO);
                return Ok(());
            }
        }
        let mut p: Poller<'_, 2> = Poller::new();
        p.add_fd(cx.main_fd(), Interest::READABLE, 0);
        p.add_fd(wake_r.as_fd(), Interest::READABLE, 1);
        p.wait(ctl.deadline).map_err(|e| format!("poll: {e}"))?;
        let woken = p.ready().any(|(t, _)| t == 1);
        drop(p);
        if woken {
            let mut buf = [0u8; 64];
            while matches!(rustix::io::read(&wake_r, &mut buf), Ok(n) if n > 0) {}
        }
    }
}

/// The control thread's state between wake-ups.
struct ControlLoop {
    control: Arc<Control>,
    /// Where connections handed over go (to the runtime); `None` once
    /// stopping.
    handed: Option<mpsc::UnboundedSender<Handed>>,
    signal: watch::Sender<Signal>,
    /// When stopping: when the server must be done.
    deadline: Option<Instant>,
    /// A handover failed already (logged once).
    handover_failed: bool,
}

impl ControlLoop {
    /// Answers the status queries waiting (one query to main for all).
    fn answer_status(&mut self, cx: &mut RoleContext) {
        let waiting: Vec<_> = self
            .control
            .status
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default();
        if waiting.is_empty() {
            return;
        }
        // (Messages main sends meanwhile are kept: read below.)
        let answer = cx.family_status(STATUS_TIMEOUT).map_err(|e| e.to_string());
        for tx in waiting {
            let _ = tx.send(answer.clone());
        }
    }

    /// Passes the connections main handed over to the server; once
    /// stopping, on to the next generation untouched (draining) or
    /// closed.
    fn take_connections(&mut self, cx: &mut RoleContext) {
        while let Some(h) = cx.take_connection() {
            let HandedOver {
                socket, buffered, ..
            } = h;
            let h = Handed { socket, buffered };
            let h = match &self.handed {
                Some(tx) => match tx.send(h) {
                    Ok(()) => continue,
                    Err(mpsc::error::SendError(h)) => h,
                },
                None => h,
            };
            if cx.is_draining() {
                self.control.hand_over(h.socket, h.buffered);
            }
        }
    }

    /// Reads a stop or drain: tells the server (once), and keeps the
    /// earliest deadline (main gone: now).
    fn check_stop(&mut self, cx: &mut RoleContext) {
        let Some(within) = cx.poll_stop() else {
            return;
        };
        let deadline = Instant::now() + within;
        if let Some(d) = &mut self.deadline {
            *d = (*d).min(deadline);
            return;
        }
        self.deadline = Some(deadline);
        let _ = self.signal.send(if cx.is_draining() {
            Signal::Drain
        } else {
            Signal::Stop
        });
        // The server takes no more: what main still passes on goes
        // through `take_connections` straight on.
        self.handed = None;
    }

    /// Returns once main has read every connection handed over (or at
    /// `deadline`). Main reads a member's channel in order, so its answer
    /// to a status query sent after them says it has them all. Needed
    /// because main, when it sees a member's process end, drops its
    /// channel with whatever is still unread on it: the sockets in unread
    /// handovers would be closed, and a client whose next request waits
    /// in one would get a reset. (The worker's row allows status
    /// queries, in every state but stopped.)
    fn wait_for_main_to_read(&mut self, cx: &mut RoleContext, deadline: Instant) {
        if self.control.drained.handed.load(Ordering::Relaxed) == 0 {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = cx.family_status(left.min(STATUS_TIMEOUT)) {
            eprintln!("waiting for main to take the connections handed over: {e}");
        }
    }

    /// Sends main the connections the server queued for handing over.
    fn send_handovers(&mut self, cx: &mut RoleContext) {
        for (socket, buffered) in self.control.take_handovers() {
            match cx.hand_over(socket, &buffered) {
                Ok(()) => {
                    self.control.drained.handed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // The socket is closed: the client sees its idle
                    // connection close, as in a plain stop.
                    self.control.drained.failed.fetch_add(1, Ordering::Relaxed);
                    if !self.handover_failed {
                        self.handover_failed = true;
                        eprintln!("handing a connection over: {e} (further failures counted)");
                    }
                }
            }
        }
    }
}
