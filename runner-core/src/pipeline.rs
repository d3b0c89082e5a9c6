//! The pipeline runtime: sources → intake queue → parse/validate → stages
//! (in configured order) → router → sink, with graceful shutdown.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::catch::{catch, catch_future};
use crate::envelope::{ChainTimes, Envelope};
use crate::event::Event;
use crate::outcome::{Outcome, StatsSnapshot};
use crate::record::{Recorder, StageStats};
use crate::router::{Router, RouterLimits, RouterSnapshot, ShutdownReport};
use crate::sink::Sink;
use crate::source::{Intake, IntakeItem, RawPayload, Source, SourceContext, SourceError};
use crate::stage::{Stage, StageHealth, Verdict};
use crate::state::{
    Journal, PendingState, Recovered, StateScope, StateStore, StoredCounters, Writer,
};
use crate::status::{IncidentLog, Readiness, SourceHealth, SourceStatus};

const INTAKE_BATCH: usize = 64;

/// Everything a pipeline is made of, as produced by the config compiler.
pub struct PipelineParts {
    /// The sources, each run on its own task.
    pub sources: Vec<Box<dyn Source>>,
    /// The stage chain, in order.
    pub stages: Vec<Box<dyn Stage>>,
    /// Where routed events go.
    pub sink: Arc<dyn Sink>,
    /// Concurrency and queue bounds of the router.
    pub limits: RouterLimits,
    /// Bound of the queue between sources and the stage chain.
    pub intake_capacity: usize,
    /// How long running sink calls may continue after shutdown begins.
    pub shutdown_grace: Duration,
    /// Bound of the payload bytes held by events in flight (intake queue,
    /// stages, router queues, running agents).
    pub payload_budget: usize,
    /// Clusters that get their own label value in the outcome breakdown.
    pub cluster_labels: usize,
    /// The durable state store, when the runner keeps one.
    pub state: Option<DurableState>,
}

/// A state store opened (and read) before the pipeline starts.
pub struct DurableState {
    /// The opened store (the writer task owns it from the start).
    pub store: Box<dyn StateStore>,
    /// What the store held: counters, pending events.
    pub recovered: Recovered,
    /// How often an event whose agent was interrupted (crash, or killed at
    /// shutdown) is run again; after that it ends `abandoned`.
    pub rerun_interrupted: u32,
    /// Where the runtime appends its changes ([`Journal::new`]); shared with
    /// whoever else records into the store (workspace retention).
    pub journal: Arc<Journal>,
}

/// What the state store held when this run started (for the final statistics).
#[derive(Debug, Clone, Copy, Default)]
pub struct CarriedOver {
    /// The counters the store held.
    pub counters: StoredCounters,
    /// Pending events found (queued, running or interrupted).
    pub pending: u64,
    /// Of those, re-runs of interrupted agents, and the ones that were
    /// interrupted too often and ended `abandoned`.
    pub reruns: u64,
    /// Interrupted too often: ended `abandoned` instead of running again.
    pub gave_up: u64,
}

/// Result of a whole run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The counters at the end.
    pub stats: StatsSnapshot,
    /// Per-stage counters.
    pub stages: Vec<StageStats>,
    /// How the router's shutdown went.
    pub shutdown: ShutdownReport,
    /// Set when a source failed fatally (the run should exit non-zero).
    pub fatal: Option<SourceError>,
    /// What the sink's agents consumed (tokens, cost, turns).
    pub usage: crate::sink::UsageTotals,
    /// Each stage's health at the end (plugin calls, failures, latency).
    pub stage_health: Vec<(String, StageHealth)>,
    /// With a state store: what previous runs left.
    pub carried: Option<CarriedOver>,
}

/// Handle to a running pipeline.
#[derive(Clone)]
pub struct PipelineHandle {
    recorder: Arc<Recorder>,
    router: Router,
    graceful: CancellationToken,
    force: CancellationToken,
    sources: Arc<[Arc<SourceStatus>]>,
    intake_depth: Arc<AtomicUsize>,
    intake_capacity: usize,
    sink: Arc<dyn Sink>,
}

impl PipelineHandle {
    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.recorder.snapshot()
    }
    /// The router's counts now (running, queued).
    pub fn router(&self) -> RouterSnapshot {
        self.router.snapshot()
    }
    /// The router itself, for its read-only views (queues, running set,
    /// durations).
    pub fn router_view(&self) -> &Router {
        &self.router
    }
    /// The recorder, for the outcome breakdown and stage counters.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }
    /// Every source's health now.
    pub fn sources(&self) -> Vec<SourceHealth> {
        self.sources.iter().map(|s| s.snapshot()).collect()
    }
    /// Payloads waiting for the stage chain, and the bound.
    pub fn intake(&self) -> (usize, usize) {
        (
            self.intake_depth.load(Ordering::Relaxed),
            self.intake_capacity,
        )
    }
    /// Name and health of every stage, in order.
    pub fn stage_health(&self) -> Vec<(String, StageHealth)> {
        self.recorder
            .stages()
            .iter()
            .map(|s| (s.name().to_string(), s.health()))
            .collect()
    }
    /// The sink's incident history, if it keeps one (the admin server's pages).
    pub fn incident_log(&self) -> Option<Arc<dyn IncidentLog>> {
        self.sink.incident_log()
    }
    /// See [`crate::status::readiness`].
    pub fn readiness(&self, max_source_down: Duration) -> Readiness {
        let (depth, cap) = self.intake();
        let mut r = crate::status::readiness(
            self.sources(),
            depth,
            cap,
            self.is_shutting_down(),
            max_source_down,
        );
        // Events are still investigated, but what happens is not durable:
        // an operator must look at the disk before a restart loses it.
        if let Some(e) = self.recorder.journal().and_then(|j| j.store_error()) {
            r.ready = false;
            r.reasons
                .push(format!("state store cannot write to STATE_DIR ({e})"));
        }
        r
    }
    /// First request: graceful shutdown. Second: kill running sinks now.
    pub fn shutdown(&self) {
        if self.graceful.is_cancelled() {
            self.force.cancel();
        } else {
            self.graceful.cancel();
        }
    }
    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.graceful.is_cancelled()
    }
    /// Waits until every received event has an outcome.
    pub async fn wait_drained(&self) {
        loop {
            if self.stats().in_flight() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs events through the stage chain. Shared by the live pipeline and
/// `runner replay`, so both make the same decisions.
pub struct StageChain {
    recorder: Arc<Recorder>,
    seq: AtomicU64,
}

/// Where an event ended inside the chain.
// Not boxed: `Passed` is the common case and moves straight into the router.
#[allow(clippy::large_enum_variant)]
pub enum ChainResult {
    /// Passed every stage; route it.
    Passed(Envelope),
    /// Already recorded with this outcome; the reason (for `runner replay`).
    Stopped(Outcome, Cow<'static, str>),
}

impl StageChain {
    /// A chain numbering events from 0 (no state store).
    pub fn new(recorder: Arc<Recorder>) -> Self {
        Self::starting_at(recorder, 0)
    }

    /// Numbers events from `first_seq` on (above every seq a previous run
    /// left in the state store, so seqs stay unique across restarts).
    pub(crate) fn starting_at(recorder: Arc<Recorder>, first_seq: u64) -> Self {
        StageChain {
            recorder,
            seq: AtomicU64::new(first_seq),
        }
    }

    /// Parses, validates and runs the stages for one received payload.
    /// The payload must already be counted as received.
    pub async fn process(&self, raw: RawPayload) -> ChainResult {
        self.process_charged(raw, 0).await
    }

    /// Like [`process`](Self::process) for a payload whose `bytes` were
    /// charged to the recorder's byte budget at intake.
    pub(crate) async fn process_charged(&self, raw: RawPayload, bytes: usize) -> ChainResult {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let event = match Event::from_json(raw.data, raw.cluster_fill.as_deref()) {
            Ok(e) => e,
            Err(err) => {
                self.recorder.release(bytes);
                let reason = err.to_string();
                self.recorder.finish_raw(
                    Some(seq),
                    &raw.source,
                    Outcome::Invalid,
                    "validate",
                    &reason,
                );
                return ChainResult::Stopped(Outcome::Invalid, Cow::Owned(reason));
            }
        };
        let mut env = Envelope {
            seq,
            event,
            source: raw.source,
            received_at: raw.received_at,
            passed_stages: 0,
            bytes,
            chain: None,
        };
        if tracing::enabled!(target: "audit", tracing::Level::DEBUG) {
            env.span()
                .in_scope(|| tracing::debug!(target: "audit", "event validated"));
        }
        for (i, stage) in self.recorder.stages().iter().enumerate() {
            let verdict = match guarded(stage.as_ref(), &mut env.event).await {
                Ok(v) => v,
                Err(msg) => {
                    // A stage bug must not take the intake down with every
                    // event in flight: this event fails closed (never reaches
                    // an agent unfiltered), the next one is processed.
                    env.span().in_scope(|| {
                        tracing::error!(stage = stage.name(), panic = %msg, "stage panicked; event failed")
                    });
                    self.recorder
                        .stage_counters(i)
                        .dropped
                        .fetch_add(1, Ordering::Relaxed);
                    self.recorder
                        .finish(&env, Outcome::Failed, stage.name(), "stage panicked");
                    return ChainResult::Stopped(Outcome::Failed, Cow::Borrowed("stage panicked"));
                }
            };
            let c = self.recorder.stage_counters(i);
            match verdict {
                Verdict::Pass => {
                    c.passed.fetch_add(1, Ordering::Relaxed);
                }
                Verdict::Modified => {
                    c.passed.fetch_add(1, Ordering::Relaxed);
                    c.modified.fetch_add(1, Ordering::Relaxed);
                }
                Verdict::Drop { outcome, reason } => {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    self.recorder.finish(&env, outcome, stage.name(), &reason);
                    return ChainResult::Stopped(outcome, reason);
                }
            }
            env.passed_stages = i + 1;
        }
        env.chain = Some(ChainTimes {
            started,
            passed: tokio::time::Instant::now(),
        });
        ChainResult::Passed(env)
    }
}

/// Runs one stage, turning a panic (in `process` or its future) into an error.
async fn guarded(stage: &dyn Stage, event: &mut crate::event::Event) -> Result<Verdict, String> {
    match catch(move || stage.process(event))? {
        crate::stage::StageFuture::Ready(v) => Ok(v),
        crate::stage::StageFuture::Pending(f) => catch_future(f).await,
    }
}

/// A pipeline ready to run: sources, stage chain, router and sink.
pub struct Pipeline {
    parts: PipelineParts,
    recorder: Arc<Recorder>,
}

impl Pipeline {
    /// Builds the recorder and router from `parts`; nothing runs yet.
    pub fn new(parts: PipelineParts) -> Pipeline {
        let mut parts = parts;
        let stages: Arc<[Box<dyn Stage>]> = std::mem::take(&mut parts.stages).into();
        let recorder = Arc::new(Recorder::with_cluster_labels(stages, parts.cluster_labels));
        recorder.set_byte_budget(parts.payload_budget);
        Pipeline { parts, recorder }
    }

    /// Starts sources, intake and router. Returns the handle and the task
    /// that completes with the final report after shutdown.
    pub fn start(self) -> (PipelineHandle, tokio::task::JoinHandle<RunReport>) {
        let Pipeline {
            mut parts,
            recorder,
        } = self;
        let router = Router::new(parts.limits, parts.sink.clone(), recorder.clone());
        let (writer, first_seq, carried) = match parts.state.take() {
            Some(ds) => {
                let (w, first, c) = recover(ds, &recorder, &router, parts.sink.as_ref());
                (Some(w), first, Some(c))
            }
            None => (None, 0, None),
        };
        let capacity = parts.intake_capacity.max(1);
        let (tx, rx) = mpsc::channel::<IntakeItem>(capacity);
        let intake = Intake::new(tx, recorder.clone());
        let statuses: Arc<[Arc<SourceStatus>]> = parts
            .sources
            .iter()
            .map(|s| SourceStatus::new(s.name()))
            .collect();
        let handle = PipelineHandle {
            recorder: recorder.clone(),
            router: router.clone(),
            graceful: CancellationToken::new(),
            force: CancellationToken::new(),
            sources: statuses.clone(),
            intake_depth: intake.depth(),
            intake_capacity: capacity,
            sink: parts.sink.clone(),
        };
        let h = handle.clone();
        let join = tokio::spawn(run(
            parts
                .sources
                .into_iter()
                .zip(statuses.iter().cloned())
                .collect(),
            (intake, rx),
            parts.sink,
            parts.shutdown_grace,
            recorder,
            router,
            h,
            (first_seq, writer, carried),
        ));
        (handle, join)
    }
}

/// One item off the intake queue: a payload goes through the chain to the
/// router; a cancellation goes straight to the router (after every payload
/// the source sent before it, since both share the queue).
async fn intake_one(chain: &StageChain, router: &Router, item: IntakeItem) {
    match item {
        IntakeItem::Payload(q) => {
            if let ChainResult::Passed(env) = chain.process_charged(q.raw, q.bytes).await {
                router.admit(env);
            }
        }
        IntakeItem::Cancel(req) => {
            router.cancel(&req);
        }
    }
}

// The pipeline's parts, moved in once; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn run(
    sources: Vec<(Box<dyn Source>, Arc<SourceStatus>)>,
    (intake, mut rx): (Intake, mpsc::Receiver<IntakeItem>),
    sink: Arc<dyn Sink>,
    grace: Duration,
    recorder: Arc<Recorder>,
    router: Router,
    handle: PipelineHandle,
    (first_seq, writer, carried): (u64, Option<Writer>, Option<CarriedOver>),
) -> RunReport {
    let depth = intake.depth();
    let stop_sources = CancellationToken::new();
    let mut source_tasks = JoinSet::new();
    for (s, status) in sources {
        let ctx = SourceContext {
            intake: intake.for_source(status.clone()),
            shutdown: stop_sources.child_token(),
            status: status.clone(),
        };
        source_tasks.spawn(async move {
            let name = s.name().to_string();
            let r = s.run(ctx).await;
            // Whatever the source did, it no longer runs.
            status.stopped();
            (name, r)
        });
    }
    // Sources hold the only senders: when all have returned, intake ends.
    drop(intake);

    let chain = StageChain::starting_at(recorder.clone(), first_seq);
    let mut fatal: Option<SourceError> = None;
    let mut sources_done = source_tasks.is_empty();
    let mut intake_open = true;
    // Drained in batches: one wake-up per burst instead of one per payload.
    let mut batch = Vec::with_capacity(INTAKE_BATCH);
    loop {
        if sources_done && !intake_open {
            // Every source has ended and nothing more can arrive.
            break;
        }
        tokio::select! {
            biased;
            _ = handle.graceful.cancelled() => break,
            Some(joined) = source_tasks.join_next(), if !sources_done => {
                match joined {
                    Ok((name, Ok(()))) => tracing::info!(source = %name, "source finished"),
                    Ok((name, Err(e))) => {
                        tracing::error!(source = %name, error = %e.message, "source failed fatally; shutting down");
                        fatal.get_or_insert(e);
                        handle.graceful.cancel();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "source task panicked; shutting down");
                        fatal.get_or_insert(SourceError { source_name: "?".into(), message: format!("panicked: {e}") });
                        handle.graceful.cancel();
                    }
                }
                sources_done = source_tasks.is_empty();
            }
            n = rx.recv_many(&mut batch, INTAKE_BATCH), if intake_open => {
                if n == 0 {
                    intake_open = false;
                    continue;
                }
                depth.fetch_sub(n, Ordering::Relaxed);
                for item in batch.drain(..) {
                    intake_one(&chain, &router, item).await;
                }
            }
        }
    }

    tracing::info!("shutdown: stopping intake");
    stop_sources.cancel();
    // Give sources a moment to close their sessions cleanly.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(j) = source_tasks.join_next().await {
            if let Ok((name, Err(e))) = j {
                tracing::error!(source = %name, error = %e.message, "source failed");
                fatal.get_or_insert(e);
            }
        }
    })
    .await;
    source_tasks.abort_all();
    // Payloads already received still get an outcome: run them through the
    // chain; the router, once closed, abandons whatever passes.
    rx.close();
    router.close();
    while let Some(item) = rx.recv().await {
        depth.fetch_sub(1, Ordering::Relaxed);
        intake_one(&chain, &router, item).await;
    }
    let report_router = router.shutdown(grace, handle.force.clone()).await;
    sink.close().await;
    if let Some(w) = writer {
        // Every outcome and deferral is recorded by now: commit the rest.
        let _ = tokio::task::spawn_blocking(move || w.close()).await;
    }
    let stats = recorder.snapshot();
    RunReport {
        stats,
        stages: recorder.stage_stats(),
        shutdown: report_router,
        fatal,
        usage: sink.usage_totals(),
        stage_health: handle.stage_health(),
        carried,
    }
}

/// Hands stages and sink their stored state, starts the writer, and puts
/// back in the router what the previous run left: queued events in their
/// order, interrupted ones once more (up to `rerun_interrupted` times).
/// Before any source runs, so recovered events queue first.
fn recover(
    ds: DurableState,
    recorder: &Arc<Recorder>,
    router: &Router,
    sink: &dyn Sink,
) -> (Writer, u64, CarriedOver) {
    let DurableState {
        store,
        recovered,
        rerun_interrupted,
        journal,
    } = ds;
    let Recovered {
        next_seq,
        pending,
        counters,
        mut kv,
    } = recovered;
    recorder.set_journal(journal.clone());
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for stage in recorder.stages().iter() {
        let n = seen.entry(stage.name().to_string()).or_insert(0);
        let scope = if *n == 0 {
            format!("stage.{}", stage.name())
        } else {
            format!("stage.{}#{n}", stage.name())
        };
        *n += 1;
        let entries = kv.remove(&scope).unwrap_or_default();
        stage.attach_state(StateScope::new(&scope, journal.clone()), entries);
    }
    let scope = format!("sink.{}", sink.name());
    let entries = kv.remove(&scope).unwrap_or_default();
    sink.attach_state(StateScope::new(&scope, journal.clone()), entries);
    let writer = Writer::spawn(journal.clone(), store);
    let mut carried = CarriedOver {
        counters,
        pending: pending.len() as u64,
        ..CarriedOver::default()
    };
    let all_stages = recorder.stages().len();
    for p in pending {
        recorder.recovered();
        let Some(event) = p.event.to_event() else {
            recorder.finish_stored(
                p.seq,
                &p.source,
                Outcome::Invalid,
                "stored event no longer parses",
            );
            continue;
        };
        let mut env = Envelope {
            seq: p.seq,
            event,
            source: Arc::from(p.source.as_str()),
            received_at: tokio::time::Instant::now(),
            passed_stages: all_stages,
            bytes: 0,
            chain: None,
        };
        for s in recorder.stages().iter() {
            s.readmitted(&mut env.event);
        }
        match p.state {
            PendingState::Queued => {
                tracing::info!(target: "audit", seq = p.seq, cluster = %env.event.cluster, "event recovered from the state store: queued again");
                router.admit_recovered(env);
            }
            PendingState::Running | PendingState::Interrupted if p.reruns < rerun_interrupted => {
                carried.reruns += 1;
                journal.requeue(p.seq, p.reruns + 1);
                tracing::warn!(target: "audit", seq = p.seq, cluster = %env.event.cluster, state = p.state.as_str(), rerun = p.reruns + 1, "incident interrupted by the previous run's end: running it again");
                router.admit_recovered(env);
            }
            PendingState::Running | PendingState::Interrupted => {
                carried.gave_up += 1;
                let reason = format!(
                    "agent interrupted {} time(s); not run again (rerun_interrupted = {rerun_interrupted})",
                    p.reruns + 1
                );
                recorder.finish(&env, Outcome::Abandoned, "state", &reason);
            }
        }
    }
    (writer, next_seq, carried)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::StageFuture;

    struct Boom;
    impl Stage for Boom {
        fn name(&self) -> &str {
            "boom"
        }
        fn process<'a>(&'a self, event: &'a mut Event) -> StageFuture<'a> {
            if event.resource.name == "bad" {
                panic!("boom on {}", event.resource.name);
            }
            StageFuture::Ready(Verdict::Pass)
        }
    }

    fn raw(name: &str) -> RawPayload {
        RawPayload {
            data: serde_json::json!({"cluster":"c","severity":"critical","resource":{"name": name}}),
            source: Arc::from("t"),
            cluster_fill: None,
            received_at: tokio::time::Instant::now(),
        }
    }

    #[tokio::test]
    async fn a_panicking_stage_fails_that_event_only() {
        let stages: Arc<[Box<dyn Stage>]> = vec![Box::new(Boom) as Box<dyn Stage>].into();
        let rec = Arc::new(Recorder::new(stages));
        let chain = StageChain::new(rec.clone());
        for name in ["ok", "bad", "ok2"] {
            rec.received();
            let r = chain.process(raw(name)).await;
            match (name, r) {
                ("bad", ChainResult::Stopped(o, _)) => assert_eq!(o, Outcome::Failed),
                (_, ChainResult::Passed(env)) => rec.finish(&env, Outcome::Completed, "test", ""),
                (n, _) => panic!("unexpected result for {n}"),
            }
        }
        let s = rec.snapshot();
        assert!(s.adds_up());
        assert_eq!(s.get(Outcome::Failed), 1);
        assert_eq!(s.get(Outcome::Completed), 2);
        assert_eq!(rec.stage_stats()[0].dropped, 1);
    }
}
