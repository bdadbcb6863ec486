//! The frame decoder checks a frame's declared length against the limit
//! before it allocates: measured with a global allocator that records the
//! largest single allocation made while `feed` runs. (A poisoned decoder
//! frees its buffer, so `buffered_capacity` alone cannot show this.)
//! `harness = false`: one thread, so no other test allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use privfork::ipc::{FrameDecoder, Header, Limits};

struct Recording;

static RECORDING: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every call to the system allocator unchanged; it only
// records sizes in atomics, which do not allocate.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if RECORDING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if RECORDING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Recording = Recording;

const LIMITS: Limits = Limits {
    max_payload: 4096,
    max_fds: 4,
};

/// Feeds `chunk` and returns the largest allocation made meanwhile.
fn largest_allocation_feeding(chunk: &[u8]) -> (usize, bool) {
    let mut d = FrameDecoder::new(LIMITS);
    let mut out = VecDeque::with_capacity(8);
    LARGEST.store(0, Ordering::Relaxed);
    RECORDING.store(true, Ordering::Relaxed);
    let ok = d.feed(chunk, Vec::new(), &mut out).is_ok();
    RECORDING.store(false, Ordering::Relaxed);
    (LARGEST.load(Ordering::Relaxed), ok)
}

fn header(len: u32) -> Vec<u8> {
    Header {
        msg_type: 1,
        len,
        request_id: 7,
        num_fds: 0,
    }
    .encode()
    .to_vec()
}

fn main() {
    // The time limit of this binary: a hang ends it with SIGALRM. No
    // watchdog thread: this process must keep one thread, so that nothing
    // else allocates while allocations are recorded.
    let limit: u32 = std::env::var("PRIVFORK_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(60);
    // SAFETY: alarm takes an integer and only arms a timer; SIGALRM's
    // default action, which this binary does not change, ends the process.
    unsafe { libc::alarm(limit) };
    let mut failed = 0;
    let mut passed = 0;
    let mut check = |name: &str, ok: bool, detail: String| {
        if ok {
            passed += 1;
            println!("test {name} ... ok");
        } else {
            failed += 1;
            println!("test {name} ... FAILED: {detail}");
        }
    };
    // Lengths over the limit, up to the largest a header can say.
    for len in [4097u32, 1 << 20, 1 << 30, u32::MAX] {
        let (largest, ok) = largest_allocation_feeding(&header(len));
        check(
            &format!("declared_{len}_bytes_is_refused_without_allocating_it"),
            !ok && largest <= LIMITS.max_payload as usize,
            format!("feed ok={ok}, largest allocation {largest} bytes"),
        );
    }
    // A frame at the limit allocates at most the limit.
    let mut frame = header(4096);
    frame.extend(std::iter::repeat_n(0u8, 4096));
    let (largest, ok) = largest_allocation_feeding(&frame);
    check(
        "frame_at_the_limit_allocates_at_most_the_limit",
        ok && largest <= 2 * LIMITS.max_payload as usize,
        format!("feed ok={ok}, largest allocation {largest} bytes"),
    );
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out\n",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    std::process::exit(i32::from(failed != 0));
}
