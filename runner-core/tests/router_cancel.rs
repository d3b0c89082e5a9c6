//! `Router::cancel`: a source withdraws the events it sent under a fault id
//! (an alert that resolved). Queued ones end `cancelled` and free their
//! queue space; a running one is only noted; other sources' events and
//! other ids are untouched; counters add up. Paused clock.

mod router_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use router_support::{limits, settle};
use runner_core::router::{CancelReport, OverflowPolicy, Router};
use runner_core::{
    CancelRequest, CancellationToken, Envelope, Event, Outcome, Recorder, Sink, SinkResult, Stage,
};

/// Sleeps `secs` per event and records what it was told through `note`.
struct NotedSink {
    started: Mutex<Vec<u64>>,
    notes: Mutex<Vec<(u64, String)>>,
}

#[async_trait]
impl Sink for NotedSink {
    fn name(&self) -> &str {
        "noted"
    }
    async fn handle(&self, env: &Envelope, _kill: CancellationToken) -> SinkResult {
        self.started.lock().unwrap().push(env.seq);
        tokio::time::sleep(Duration::from_secs(10)).await;
        SinkResult::completed()
    }
    fn note(&self, seq: u64, note: &str) {
        self.notes.lock().unwrap().push((seq, note.to_string()));
    }
}

/// Remembers every `finished` call (dedup relies on it to release keys).
#[derive(Default)]
struct Finished(Mutex<Vec<(String, Outcome)>>);
struct FinishedStage(Arc<Finished>);
impl Stage for FinishedStage {
    fn name(&self) -> &str {
        "finished"
    }
    fn process<'a>(&'a self, _e: &'a mut Event) -> runner_core::StageFuture<'a> {
        runner_core::StageFuture::Ready(runner_core::Verdict::Pass)
    }
    fn finished(&self, e: &Event, o: Outcome) {
        self.0.0.lock().unwrap().push((e.resource.name.clone(), o));
    }
}

fn env(seq: u64, source: &str, fault_id: &str) -> Envelope {
    let event = Event::from_json(
        serde_json::json!({"cluster": "c", "severity": "critical", "faultId": fault_id,
            "resource": {"kind": "Pod", "name": format!("p{seq}")}}),
        None,
    )
    .unwrap();
    Envelope {
        seq,
        event,
        source: Arc::from(source),
        received_at: tokio::time::Instant::now(),
        passed_stages: 1,
        bytes: 0,
        chain: None,
    }
}

fn cancel(r: &Router, source: &str, id: &str) -> CancelReport {
    r.cancel(&CancelRequest {
        source: Arc::from(source),
        fault_id: id.into(),
        reason: format!("alert resolved ({id})"),
    })
}

#[tokio::test(start_paused = true)]
async fn cancel_withdraws_queued_and_notes_running() {
    let sink = Arc::new(NotedSink {
        started: Mutex::new(Vec::new()),
        notes: Mutex::new(Vec::new()),
    });
    let fin = Arc::new(Finished::default());
    let stages: Arc<[Box<dyn Stage>]> =
        vec![Box::new(FinishedStage(fin.clone())) as Box<dyn Stage>].into();
    let rec = Arc::new(Recorder::new(stages));
    let r = Router::new(
        limits(1, 10, 10, OverflowPolicy::Drop),
        sink.clone(),
        rec.clone(),
    );
    for e in [
        env(0, "am", "a"),    // runs
        env(1, "am", "b"),    // queued, cancelled
        env(2, "am", "a"),    // queued behind the running "a": cancelled too
        env(3, "other", "b"), // another source's "b": untouched
        env(4, "am", "c"),    // another id: untouched
    ] {
        rec.received();
        r.admit(e);
    }
    settle().await;
    assert_eq!(*sink.started.lock().unwrap(), vec![0]);
    assert_eq!(r.snapshot().queued, 4);

    assert_eq!(
        cancel(&r, "am", "b"),
        CancelReport {
            cancelled: 1,
            running: 0
        }
    );
    assert_eq!(r.snapshot().queued, 3);
    assert_eq!(
        cancel(&r, "am", "a"),
        CancelReport {
            cancelled: 1,
            running: 1
        }
    );
    assert_eq!(r.snapshot().queued, 2);
    assert_eq!(
        *sink.notes.lock().unwrap(),
        vec![(0, "alert resolved (a)".to_string())]
    );
    // Unknown ids (finished, deduplicated, never sent) are a no-op.
    assert_eq!(cancel(&r, "am", "zzz"), CancelReport::default());
    assert_eq!(rec.snapshot().get(Outcome::Cancelled), 2);
    // Stages hear about cancelled events like any other outcome.
    let f = fin.0.lock().unwrap().clone();
    assert!(f.contains(&("p1".into(), Outcome::Cancelled)), "{f:?}");
    assert!(f.contains(&("p2".into(), Outcome::Cancelled)), "{f:?}");

    // The running call was not interrupted; the rest run in order.
    tokio::time::sleep(Duration::from_secs(35)).await;
    settle().await;
    assert_eq!(*sink.started.lock().unwrap(), vec![0, 3, 4]);
    let s = rec.snapshot();
    assert_eq!(s.get(Outcome::Completed), 3);
    assert!(s.adds_up(), "{s:?}");
    r.shutdown(Duration::ZERO, CancellationToken::new()).await;
}

#[tokio::test(start_paused = true)]
async fn cancel_frees_queue_space() {
    let sink = Arc::new(NotedSink {
        started: Mutex::new(Vec::new()),
        notes: Mutex::new(Vec::new()),
    });
    let rec = Arc::new(Recorder::new(Arc::from(Vec::new())));
    let r = Router::new(limits(1, 2, 10, OverflowPolicy::Reject), sink, rec.clone());
    for (seq, id) in [(0, "run"), (1, "x"), (2, "y")] {
        rec.received();
        r.admit(env(seq, "am", id));
        settle().await;
    }
    cancel(&r, "am", "x");
    // The global queue (2) had room again: nothing rejected.
    rec.received();
    r.admit(env(3, "am", "z"));
    let s = rec.snapshot();
    assert_eq!(s.get(Outcome::Rejected), 0, "{s:?}");
    assert_eq!(s.get(Outcome::Cancelled), 1);
    r.shutdown(Duration::ZERO, CancellationToken::new()).await;
    assert!(rec.snapshot().adds_up());
}
