//! The epoch ticker behind every plugin deadline.
//!
//! Deadlines are counted in engine epochs. A thread advances the epoch every
//! [`EPOCH_TICK`](crate::EPOCH_TICK), but only while at least one plugin call
//! (or instantiation) is in flight: with no call running it is parked and
//! costs no wake-ups. A call holds an [`InFlight`] guard for its duration;
//! the first guard unparks the thread.
//!
//! Deadlines stay correct across parking because a store's deadline is set
//! relative to the current epoch when its call starts, and the epoch only
//! moves while calls run.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::Thread;

use crate::{EPOCH_TICK, engine};

struct Ticker {
    in_flight: AtomicUsize,
    ticks: AtomicU64,
    parked: AtomicBool,
    thread: OnceLock<Thread>,
}

static TICKER: Ticker = Ticker {
    in_flight: AtomicUsize::new(0),
    ticks: AtomicU64::new(0),
    parked: AtomicBool::new(false),
    thread: OnceLock::new(),
};

fn thread() -> &'static Thread {
    TICKER.thread.get_or_init(|| {
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(run)
            .expect("spawn the wasm epoch thread")
            .thread()
            .clone()
    })
}

fn run() {
    let t = &TICKER;
    loop {
        if t.in_flight.load(Ordering::Acquire) == 0 {
            t.parked.store(true, Ordering::Release);
            // An unpark between the load and here leaves a token: park
            // returns at once and the loop looks again.
            std::thread::park();
            t.parked.store(false, Ordering::Release);
            continue;
        }
        std::thread::sleep(EPOCH_TICK);
        engine().increment_epoch();
        t.ticks.fetch_add(1, Ordering::Relaxed);
    }
}

/// Keeps the ticker running while a plugin call is in flight.
pub(crate) struct InFlight;

impl InFlight {
    pub(crate) fn enter() -> InFlight {
        if TICKER.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            thread().unpark();
        }
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        TICKER.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the ticker is doing, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickerState {
    /// Epochs advanced since the process started.
    pub ticks: u64,
    /// Plugin calls in flight now.
    pub in_flight: usize,
    /// The thread is parked (no call in flight, no wake-ups).
    pub parked: bool,
}

/// The ticker's state; `None` before any plugin call started it.
pub fn state() -> Option<TickerState> {
    let t = &TICKER;
    t.thread.get()?;
    Some(TickerState {
        ticks: t.ticks.load(Ordering::Relaxed),
        in_flight: t.in_flight.load(Ordering::Relaxed),
        parked: t.parked.load(Ordering::Acquire),
    })
}
