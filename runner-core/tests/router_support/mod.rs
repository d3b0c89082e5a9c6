//! Shared fixtures of the router tests: a tracking stage that records every
//! terminal outcome by seq, and a fake sink that checks the concurrency
//! invariants from the inside.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use runner_core::router::{OverflowPolicy, Router, RouterLimits};
use runner_core::{
    CancellationToken, Envelope, Event, Outcome, Recorder, Sink, SinkResult, Stage, StageFuture,
    Verdict,
};

/// Records `(seq, outcome)` for every event that reaches a terminal outcome
/// (the router calls `Stage::finished` through the recorder). The seq travels
/// in `resource.uid`.
#[derive(Default)]
pub(crate) struct Tracker {
    pub log: Mutex<Vec<(u64, Outcome)>>,
}

impl Tracker {
    pub(crate) fn log(&self) -> Vec<(u64, Outcome)> {
        self.log.lock().unwrap().clone()
    }
    pub(crate) fn len(&self) -> usize {
        self.log.lock().unwrap().len()
    }
    pub(crate) fn outcome_of(&self, seq: u64) -> Option<Outcome> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, o)| *o)
    }
    /// Seqs with this outcome, in the order they got it.
    pub(crate) fn with(&self, outcome: Outcome) -> Vec<u64> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, o)| *o == outcome)
            .map(|(s, _)| *s)
            .collect()
    }
}

struct TrackerStage(Arc<Tracker>);

impl Stage for TrackerStage {
    fn name(&self) -> &str {
        "tracker"
    }
    fn process<'a>(&'a self, _event: &'a mut Event) -> StageFuture<'a> {
        StageFuture::Ready(Verdict::Pass)
    }
    fn finished(&self, event: &Event, outcome: Outcome) {
        let seq: u64 = event.resource.uid.parse().unwrap();
        self.0.log.lock().unwrap().push((seq, outcome));
    }
}

/// What the fake sink does with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Sleeps (tokio time), stops early with `abandoned` when killed.
    Sleep(Duration),
    /// Yields this many times (no clock: for multi-thread stress runs).
    Yield(u32),
    /// Waits for the kill signal, then returns `abandoned`.
    Stuck,
    /// Never returns, ignores the kill signal.
    IgnoreKill,
    Panic,
}

pub(crate) struct FakeSink {
    per_cluster: Mutex<HashMap<String, usize>>,
    pub running: AtomicUsize,
    pub max_running: AtomicUsize,
    pub cluster_violation: AtomicBool,
    pub started: Mutex<Vec<u64>>,
    behaviour: Box<dyn Fn(u64) -> Behaviour + Send + Sync>,
}

impl FakeSink {
    pub(crate) fn new(
        behaviour: impl Fn(u64) -> Behaviour + Send + Sync + 'static,
    ) -> Arc<FakeSink> {
        Arc::new(FakeSink {
            per_cluster: Mutex::new(HashMap::new()),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            cluster_violation: AtomicBool::new(false),
            started: Mutex::new(Vec::new()),
            behaviour: Box::new(behaviour),
        })
    }
    pub(crate) fn started(&self) -> Vec<u64> {
        self.started.lock().unwrap().clone()
    }
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
    pub(crate) fn max_running(&self) -> usize {
        self.max_running.load(Ordering::SeqCst)
    }
    pub(crate) fn violated(&self) -> bool {
        self.cluster_violation.load(Ordering::SeqCst)
    }
}

/// Undoes the running counts however `handle` ends (return, panic, abort).
struct RunGuard<'a> {
    sink: &'a FakeSink,
    cluster: String,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        *self
            .sink
            .per_cluster
            .lock()
            .unwrap()
            .get_mut(&self.cluster)
            .unwrap() -= 1;
        self.sink.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Sink for FakeSink {
    fn name(&self) -> &str {
        "fake"
    }
    async fn handle(&self, env: &Envelope, kill: CancellationToken) -> SinkResult {
        let cluster = env.event.cluster.clone();
        {
            let mut pc = self.per_cluster.lock().unwrap();
            let n = pc.entry(cluster.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                self.cluster_violation.store(true, Ordering::SeqCst);
            }
        }
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let _guard = RunGuard {
            sink: self,
            cluster,
        };
        self.started.lock().unwrap().push(env.seq);
        match (self.behaviour)(env.seq) {
            Behaviour::Sleep(d) => tokio::select! {
                _ = tokio::time::sleep(d) => SinkResult::completed(),
                _ = kill.cancelled() => SinkResult::abandoned("killed"),
            },
            Behaviour::Yield(n) => {
                for _ in 0..n {
                    tokio::task::yield_now().await;
                }
                SinkResult::completed()
            }
            Behaviour::Stuck => {
                kill.cancelled().await;
                SinkResult::abandoned("killed")
            }
            Behaviour::IgnoreKill => std::future::pending().await,
            Behaviour::Panic => panic!("fake sink panics on purpose"),
        }
    }
}

/// A router whose recorder reports every outcome to the returned tracker.
pub(crate) fn router(
    limits: RouterLimits,
    sink: Arc<FakeSink>,
) -> (Router, Arc<Recorder>, Arc<Tracker>) {
    let tracker = Arc::new(Tracker::default());
    let stages: Arc<[Box<dyn Stage>]> =
        vec![Box::new(TrackerStage(tracker.clone())) as Box<dyn Stage>].into();
    let recorder = Arc::new(Recorder::new(stages));
    (
        Router::new(limits, sink, recorder.clone()),
        recorder,
        tracker,
    )
}

pub(crate) fn limits(
    max: usize,
    global: usize,
    cluster: usize,
    policy: OverflowPolicy,
) -> RouterLimits {
    RouterLimits {
        max_concurrent: max,
        global_queue: global,
        cluster_queue: cluster,
        policy,
        idle_reap: Duration::from_secs(1),
    }
}

/// An envelope for `cluster`, its seq also in `resource.uid` for the tracker.
pub(crate) fn envelope(seq: u64, cluster: &str) -> Envelope {
    let event = Event::from_json(
        serde_json::json!({"cluster": cluster, "severity": "critical", "faultType": "CrashLoop",
            "resource": {"kind": "Pod", "name": format!("pod-{seq}"), "namespace": "ns", "uid": seq.to_string()}}),
        None,
    )
    .unwrap();
    Envelope {
        seq,
        event,
        source: Arc::from("test"),
        received_at: tokio::time::Instant::now(),
        passed_stages: 1,
        bytes: 0,
        chain: None,
    }
}

/// Counts the event as received (the intake does that in the pipeline) and admits it.
pub(crate) fn admit(router: &Router, recorder: &Recorder, seq: u64, cluster: &str) {
    recorder.received();
    router.admit(envelope(seq, cluster));
}

/// Lets every ready task run (paused clock: time does not move meanwhile).
pub(crate) async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}
