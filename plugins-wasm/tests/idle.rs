//! What WASM stages cost when nothing happens, and per event: the epoch
//! ticker sleeps while no call is in flight, and the plugin's view of an
//! event is built once however many WASM stages it passes. One test in its
//! own binary: both read process-wide counters other tests would move.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use plugins_wasm::epoch;
use runner_core::pipeline::{ChainResult, StageChain};
use runner_core::{RawPayload, Recorder, Stage};

fn wait_parked() -> epoch::TickerState {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let s = epoch::state().expect("a call started the ticker");
        if s.parked && s.in_flight == 0 {
            return s;
        }
        assert!(Instant::now() < deadline, "ticker still running: {s:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_ticker_sleeps_and_the_event_view_is_built_once_per_event() {
    let (_d1, cfg1) = config_for(&component(INIT_OK, KEEP));
    let (_d2, mut cfg2) = config_for(&component(INIT_OK, KEEP));
    cfg2.name = Some("second".into());
    let stages: Vec<Box<dyn Stage>> = vec![cfg1.build().unwrap(), cfg2.build().unwrap()];
    let recorder = Arc::new(Recorder::new(stages.into()));
    let chain = StageChain::new(recorder.clone());

    for i in 0..3 {
        let before = plugins_wasm::view::built();
        recorder.received();
        let raw = event(
            "payments",
            "Pod",
            "CrashLoop",
            "critical",
            &format!("n={i}"),
        )
        .raw;
        let r = chain
            .process(RawPayload {
                data: (*raw).clone(),
                source: Arc::from("test"),
                cluster_fill: None,
                received_at: tokio::time::Instant::now(),
            })
            .await;
        assert!(matches!(r, ChainResult::Passed(_)));
        assert_eq!(
            plugins_wasm::view::built() - before,
            1,
            "two WASM stages, one view per event"
        );
    }

    // Idle: no call in flight, the ticker is parked and the epoch stands
    // still (a 1 ms ticker would have moved it ~50 times).
    let parked = wait_parked();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let later = epoch::state().unwrap();
    assert_eq!(later.ticks, parked.ticks, "ticker woke while idle");
    assert!(later.parked);
}
