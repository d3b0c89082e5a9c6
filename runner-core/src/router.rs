//! The cluster router: bounded per-cluster queues, one worker per cluster,
//! a global cap on running sink calls, and overflow policies.
//!
//! Invariants (tested in `tests/router_props.rs`, a proptest with a model
//! of the queues, and `tests/router_invariants.rs`, on tokio's paused clock):
//! * at most `max_concurrent` sink calls run at any instant;
//! * at most one sink call per cluster at any instant;
//! * a cluster queue never holds more than `cluster_queue` events and all
//!   queues together never more than `global_queue`;
//! * on overflow, `drop` removes the oldest queued event (of that cluster
//!   queue, or of all queues for the global bound) and `reject` refuses the
//!   new one; either way exactly one event gets an outcome;
//! * global slots are handed out first come, first served (tokio's
//!   semaphore is FIFO), so a busy cluster cannot starve the others: after
//!   each run a worker queues behind everyone already waiting;
//! * a group leader waiting out its `group_wait` holds no global slot (it
//!   waits queued, at the head of its cluster's queue);
//! * a panicking sink is recorded `failed` and frees its slot and cluster;
//! * a sink that ignores the kill signal is dropped [`KILL_WAIT`] after it
//!   (recorded `abandoned`), so shutdown always returns.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::catch::{catch, catch_future};
use crate::envelope::Envelope;
use crate::outcome::Outcome;
use crate::record::Recorder;
use crate::sink::{Sink, SinkResult};
use crate::status::{DurationHistogram, WorkItem};

/// How long a running sink call may take to honour the kill signal before
/// its future is dropped and the event recorded `abandoned`.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// What a full queue does with a new event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Remove the oldest queued event to admit the new one.
    Drop,
    /// Refuse the new event.
    Reject,
}

impl fmt::Display for OverflowPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OverflowPolicy::Drop => "drop",
            OverflowPolicy::Reject => "reject",
        })
    }
}

impl FromStr for OverflowPolicy {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "drop" => Ok(OverflowPolicy::Drop),
            "reject" => Ok(OverflowPolicy::Reject),
            _ => Err(()),
        }
    }
}

crate::config_enum!(
    OverflowPolicy,
    "one of drop (drop oldest), reject (reject newest)"
);

/// Upper bound of `max_concurrent`: each slot is an agent process, and
/// tokio's semaphore panics above `usize::MAX >> 3` permits.
pub const MAX_CONCURRENT_LIMIT: usize = 4096;
/// Upper bound of every queue size (intake, global, per cluster): a bigger
/// queue only hides an overload and holds that many payloads in memory.
pub const MAX_QUEUE_LIMIT: usize = 1_000_000;
/// Upper bound of the idle-worker and other second-valued settings (a day):
/// keeps deadline arithmetic far from overflow.
pub const MAX_SECONDS_LIMIT: u64 = 86_400;

/// The router's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterLimits {
    /// Sink calls running at once, across all clusters.
    pub max_concurrent: usize,
    /// Events queued across all clusters.
    pub global_queue: usize,
    /// Events queued per cluster.
    pub cluster_queue: usize,
    /// What a full queue does.
    pub policy: OverflowPolicy,
    /// A cluster worker with nothing to do exits after this long.
    pub idle_reap: Duration,
}

impl Default for RouterLimits {
    fn default() -> Self {
        RouterLimits {
            max_concurrent: 5,
            global_queue: 100,
            cluster_queue: 10,
            policy: OverflowPolicy::Drop,
            idle_reap: Duration::from_secs(60),
        }
    }
}

/// Live view for status output and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouterSnapshot {
    /// Sink calls running.
    pub running: usize,
    /// Events waiting.
    pub queued: usize,
    /// Live per-cluster workers.
    pub workers: usize,
}

/// What happened to queued and running events at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Queued events that never started.
    pub abandoned_queued: usize,
    /// Queued events left in the state store for the next run (instead of
    /// `abandoned`, when the runner keeps durable state).
    pub deferred_queued: usize,
    /// Running sink calls killed at shutdown whose events were kept in the
    /// state store as `interrupted` (also counted in `killed`).
    pub interrupted: usize,
    /// Running sink calls killed after the grace period.
    pub killed: usize,
}

struct ClusterQueue {
    /// Shared with `State::order` and the worker: no String copy per event.
    name: Arc<str>,
    events: VecDeque<Envelope>,
    notify: Arc<Notify>,
}

/// A sink call in progress, as far as cancellation needs to know it.
struct RunningCall {
    seq: u64,
    source: Arc<str>,
    fault_id: Option<String>,
    /// Cancellations that arrived while it ran: appended to its outcome's reason.
    notes: Vec<String>,
}

/// What [`Router::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CancelReport {
    /// Queued events removed and recorded `cancelled`.
    pub cancelled: usize,
    /// Running sink calls that were told (they keep running).
    pub running: usize,
}

struct State {
    clusters: HashMap<Arc<str>, ClusterQueue>,
    running_calls: Vec<RunningCall>,
    /// seq -> cluster of every queued event: finds the globally oldest.
    order: BTreeMap<u64, Arc<str>>,
    queued: usize,
    running: usize,
    /// seq -> what is running and since when (status pages).
    running_set: HashMap<u64, (WorkItem, std::time::Instant)>,
    closed: bool,
}

fn work_item(env: &Envelope, seconds: f64) -> WorkItem {
    let e = &env.event;
    WorkItem {
        seq: env.seq,
        cluster: e.cluster.clone(),
        namespace: e.resource.namespace.clone(),
        kind: e.resource.kind.clone(),
        name: e.resource.name.clone(),
        severity: e.severity.to_string(),
        fault_type: e.fault_type.clone(),
        seconds,
    }
}

struct Inner {
    limits: RouterLimits,
    sink: Arc<dyn Sink>,
    recorder: Arc<Recorder>,
    slots: Arc<Semaphore>,
    state: Mutex<State>,
    kill: CancellationToken,
    /// Sink calls that ended `abandoned` because of the kill signal.
    killed: std::sync::atomic::AtomicUsize,
    /// Of those, the ones kept in the state store to be re-run.
    interrupted: std::sync::atomic::AtomicUsize,
    workers: Mutex<JoinSet<()>>,
    idle: Notify,
    durations: DurationHistogram,
}

/// See the module docs.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl Router {
    /// A router calling `sink` under `limits`; panics on a zero bound (the config compiler refuses those).
    pub fn new(limits: RouterLimits, sink: Arc<dyn Sink>, recorder: Arc<Recorder>) -> Router {
        assert!(
            limits.max_concurrent >= 1 && limits.global_queue >= 1 && limits.cluster_queue >= 1
        );
        Router {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(limits.max_concurrent)),
                limits,
                sink,
                recorder,
                state: Mutex::new(State {
                    clusters: HashMap::new(),
                    running_calls: Vec::new(),
                    order: BTreeMap::new(),
                    queued: 0,
                    running: 0,
                    running_set: HashMap::new(),
                    closed: false,
                }),
                kill: CancellationToken::new(),
                killed: std::sync::atomic::AtomicUsize::new(0),
                interrupted: std::sync::atomic::AtomicUsize::new(0),
                workers: Mutex::new(JoinSet::new()),
                idle: Notify::new(),
                durations: DurationHistogram::default(),
            }),
        }
    }

    /// Events queued for one cluster (0 for an unknown cluster).
    pub fn cluster_depth(&self, cluster: &str) -> usize {
        let st = self.inner.state.lock().unwrap();
        st.clusters.get(cluster).map_or(0, |c| c.events.len())
    }

    /// The counts now.
    pub fn snapshot(&self) -> RouterSnapshot {
        let st = self.inner.state.lock().unwrap();
        RouterSnapshot {
            running: st.running,
            queued: st.queued,
            workers: st.clusters.len(),
        }
    }

    /// Queue depth per cluster with a worker, sorted by cluster.
    pub fn queue_depths(&self) -> Vec<(String, usize)> {
        let st = self.inner.state.lock().unwrap();
        let mut v: Vec<_> = st
            .clusters
            .values()
            .map(|c| (c.name.to_string(), c.events.len()))
            .collect();
        v.sort();
        v
    }

    /// What is queued (oldest first) and what is running (longest first).
    pub fn work(&self) -> (Vec<WorkItem>, Vec<WorkItem>) {
        let st = self.inner.state.lock().unwrap();
        let mut queued = Vec::with_capacity(st.queued);
        for (seq, cluster) in &st.order {
            if let Some(env) = st
                .clusters
                .get(cluster)
                .and_then(|c| c.events.iter().find(|e| e.seq == *seq))
            {
                queued.push(work_item(env, env.received_at.elapsed().as_secs_f64()));
            }
        }
        let mut running: Vec<WorkItem> = st
            .running_set
            .values()
            .map(|(w, t)| WorkItem {
                seconds: t.elapsed().as_secs_f64(),
                ..w.clone()
            })
            .collect();
        running.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        (queued, running)
    }

    /// Durations of finished sink calls, per outcome.
    pub fn durations(&self) -> &DurationHistogram {
        &self.inner.durations
    }

    /// Queues an event for its cluster. Never waits. Overflow is resolved by
    /// the policy and recorded; after `shutdown` began, events are abandoned
    /// (or, with a state store, kept for the next run).
    pub fn admit(&self, env: Envelope) {
        if let Some(j) = self.inner.recorder.journal() {
            // First durable trace of the event: counted `received` in the
            // store here, whatever the queue decides next.
            j.admit(env.seq, &env.source, &env.event, env.bytes);
        }
        self.admit_inner(env)
    }

    /// Queues an event a previous run left in the state store (it is
    /// already there: no new admission is written).
    pub(crate) fn admit_recovered(&self, env: Envelope) {
        self.admit_inner(env)
    }

    fn admit_inner(&self, env: Envelope) {
        let inner = &self.inner;
        let lim = inner.limits;
        let mut evicted: Option<(Envelope, &'static str, usize)> = None;
        let mut spawn: Option<(Arc<str>, Arc<Notify>)> = None;
        {
            let mut guard = inner.state.lock().unwrap();
            let st = &mut *guard;
            if st.closed {
                drop(guard);
                if inner.recorder.journal().is_some() {
                    inner.recorder.defer(&env, false);
                } else {
                    inner
                        .recorder
                        .finish(&env, Outcome::Abandoned, "router", "shutting down");
                }
                return;
            }
            let cluster = env.event.cluster.as_str();
            let depth = st.clusters.get(cluster).map_or(0, |c| c.events.len());
            if depth >= lim.cluster_queue {
                match lim.policy {
                    OverflowPolicy::Reject => {
                        drop(guard);
                        return reject(inner, env, "cluster", depth);
                    }
                    OverflowPolicy::Drop => {
                        let cq = st.clusters.get_mut(cluster).expect("depth > 0");
                        let old = cq.events.pop_front().expect("non-empty");
                        st.order.remove(&old.seq);
                        st.queued -= 1;
                        evicted = Some((old, "cluster", depth));
                    }
                }
            } else if st.queued >= lim.global_queue {
                match lim.policy {
                    OverflowPolicy::Reject => {
                        let depth = st.queued;
                        drop(guard);
                        return reject(inner, env, "global", depth);
                    }
                    OverflowPolicy::Drop => {
                        let (&seq, c) = st.order.iter().next().expect("queued > 0");
                        let c = c.clone();
                        st.order.remove(&seq);
                        let cq = st.clusters.get_mut(&c).expect("cluster of queued event");
                        // The oldest of all is normally the head of its own
                        // queue; search anyway so callers that admit out of
                        // seq order cannot make us drop the wrong event.
                        let pos = cq.events.iter().position(|e| e.seq == seq).unwrap_or(0);
                        let old = cq.events.remove(pos).expect("non-empty");
                        st.queued -= 1;
                        evicted = Some((old, "global", st.queued + 1));
                    }
                }
            }
            let seq = env.seq;
            if !st.clusters.contains_key(cluster) {
                let name: Arc<str> = Arc::from(cluster);
                let notify = Arc::new(Notify::new());
                spawn = Some((name.clone(), notify.clone()));
                st.clusters.insert(
                    name.clone(),
                    ClusterQueue {
                        name,
                        events: VecDeque::new(),
                        notify,
                    },
                );
            }
            let cq = st.clusters.get_mut(cluster).expect("inserted above");
            let name = cq.name.clone();
            cq.events.push_back(env);
            let depth = cq.events.len();
            cq.notify.notify_one();
            st.order.insert(seq, name.clone());
            st.queued += 1;
            tracing::debug!(target: "audit", seq, cluster = %name, queue = "cluster", depth, global_depth = st.queued, "event queued");
        }
        if let Some((old, queue, depth)) = evicted {
            overflow_log(&old, queue, depth, lim.policy);
            inner.recorder.finish(
                &old,
                Outcome::Dropped,
                "router",
                // Static text: no allocation per event in a storm.
                if queue == "cluster" {
                    "cluster queue full, oldest dropped"
                } else {
                    "global queue full, oldest dropped"
                },
            );
        }
        if let Some((cluster, notify)) = spawn {
            let inner2 = self.inner.clone();
            let mut workers = inner.workers.lock().unwrap();
            // A JoinSet keeps finished tasks until joined: without this, every
            // reaped worker of a long run would stay allocated.
            while workers.try_join_next().is_some() {}
            workers.spawn(worker(inner2, cluster, notify));
        }
    }

    /// Withdraws the events `req.source` sent under `req.fault_id`: queued
    /// ones end `cancelled` (their queue space is freed at once); a running
    /// one keeps running (its agent may already be writing the report), the
    /// sink is told through [`Sink::note`] and the note is appended to the
    /// reason of its outcome. Unknown ids are a no-op (already finished,
    /// deduplicated, or never sent).
    pub fn cancel(&self, req: &crate::source::CancelRequest) -> CancelReport {
        let inner = &self.inner;
        let matches = |env: &Envelope| {
            *env.source == *req.source && env.event.fault_id.as_deref() == Some(&req.fault_id)
        };
        let mut removed = Vec::new();
        let mut running = Vec::new();
        {
            let mut guard = inner.state.lock().unwrap();
            let st = &mut *guard;
            for cq in st.clusters.values_mut() {
                if !cq.events.iter().any(matches) {
                    continue;
                }
                let mut kept = VecDeque::with_capacity(cq.events.len());
                for env in cq.events.drain(..) {
                    if matches(&env) {
                        removed.push(env);
                    } else {
                        kept.push_back(env);
                    }
                }
                cq.events = kept;
                // Its worker may wait for the head it just lost.
                cq.notify.notify_one();
            }
            for env in &removed {
                st.order.remove(&env.seq);
                st.queued -= 1;
            }
            for call in st.running_calls.iter_mut() {
                if *call.source == *req.source && call.fault_id.as_deref() == Some(&req.fault_id) {
                    call.notes.push(req.reason.clone());
                    running.push(call.seq);
                }
            }
        }
        for env in &removed {
            inner
                .recorder
                .finish(env, Outcome::Cancelled, "router", &req.reason);
        }
        for &seq in &running {
            tracing::info!(
                target: "audit",
                seq,
                source = %req.source,
                fault_id = %req.fault_id,
                reason = %req.reason,
                "running event withdrawn by its source; the agent continues"
            );
            if let Err(panic) = catch(|| inner.sink.note(seq, &req.reason)) {
                tracing::error!(seq, panic = %panic, "Sink::note panicked");
            }
        }
        if !removed.is_empty() {
            // A worker waiting for work may now have nothing to do.
            inner.idle.notify_waiters();
        }
        CancelReport {
            cancelled: removed.len(),
            running: running.len(),
        }
    }

    /// Stops admitting: later `admit` calls record `abandoned`.
    pub(crate) fn close(&self) {
        self.inner.state.lock().unwrap().closed = true;
    }

    /// Stops admitting, abandons queued events, lets running sink calls
    /// finish for up to `grace` (or until `force` is cancelled), then kills
    /// the rest. Returns once every worker has exited.
    pub async fn shutdown(&self, grace: Duration, force: CancellationToken) -> ShutdownReport {
        let inner = &self.inner;
        let mut report = ShutdownReport::default();
        let abandoned: Vec<Envelope> = {
            let mut st = inner.state.lock().unwrap();
            st.closed = true;
            st.order.clear();
            st.queued = 0;
            let mut v = Vec::new();
            for cq in st.clusters.values_mut() {
                v.extend(cq.events.drain(..));
                cq.notify.notify_one();
            }
            v
        };
        let durable = inner.recorder.journal().is_some();
        for env in &abandoned {
            if durable {
                inner.recorder.defer(env, false);
            } else {
                inner
                    .recorder
                    .finish(env, Outcome::Abandoned, "router", "queued at shutdown");
            }
        }
        if durable {
            report.deferred_queued = abandoned.len();
        } else {
            report.abandoned_queued = abandoned.len();
        }
        let running = inner.state.lock().unwrap().running;
        if running > 0 {
            tracing::info!(
                running,
                grace_secs = grace.as_secs_f64(),
                "waiting for running agents to finish"
            );
        }
        let drained = tokio::select! {
            _ = self.wait_idle() => true,
            _ = tokio::time::sleep(grace) => false,
            _ = force.cancelled() => false,
        };
        if !drained {
            let running = inner.state.lock().unwrap().running;
            tracing::warn!(
                running,
                "shutdown grace period over: killing running agents"
            );
            inner.kill.cancel();
        }
        let mut workers = std::mem::take(&mut *inner.workers.lock().unwrap());
        while workers.join_next().await.is_some() {}
        // Counted from the outcomes, not from `running` at the deadline: a
        // call that finished in the same instant as the kill was not killed.
        report.killed = inner.killed.load(std::sync::atomic::Ordering::Relaxed);
        report.interrupted = inner.interrupted.load(std::sync::atomic::Ordering::Relaxed);
        report
    }

    /// Resolves when nothing is queued or running.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            {
                let st = self.inner.state.lock().unwrap();
                if st.running == 0 && st.queued == 0 {
                    return;
                }
            }
            notified.await;
        }
    }
}

fn reject(inner: &Inner, env: Envelope, queue: &'static str, depth: usize) {
    overflow_log(&env, queue, depth, OverflowPolicy::Reject);
    inner.recorder.finish(
        &env,
        Outcome::Rejected,
        "router",
        if queue == "cluster" {
            "cluster queue full, newest rejected"
        } else {
            "global queue full, newest rejected"
        },
    );
}

fn overflow_log(env: &Envelope, queue: &str, depth: usize, policy: OverflowPolicy) {
    if tracing::enabled!(target: "audit", tracing::Level::WARN) {
        let _event = env.span().entered();
        tracing::warn!(target: "audit", queue, depth, policy = %policy, "queue overflow");
    }
}

async fn worker(inner: Arc<Inner>, cluster: Arc<str>, notify: Arc<Notify>) {
    loop {
        // Wait until this cluster has work (or reap when idle / closed).
        loop {
            let has_work = {
                let mut st = inner.state.lock().unwrap();
                let cq = st.clusters.get(&*cluster).expect("worker's own queue");
                if !cq.events.is_empty() {
                    true
                } else if st.closed {
                    st.clusters.remove(&*cluster);
                    return;
                } else {
                    false
                }
            };
            if has_work {
                break;
            }
            if tokio::time::timeout(inner.limits.idle_reap, notify.notified())
                .await
                .is_err()
            {
                let mut st = inner.state.lock().unwrap();
                if st
                    .clusters
                    .get(&cluster)
                    .is_some_and(|c| c.events.is_empty())
                {
                    st.clusters.remove(&*cluster);
                    tracing::debug!(cluster = %cluster, "idle cluster worker reaped");
                    return;
                }
            }
        }
        // A group leader waits out its `group_wait` here, at the head of
        // its queue, holding no global slot: other clusters run meanwhile,
        // and it stays evictable and cancellable. Re-checked on every
        // change of the queue (the head may be evicted or cancelled).
        let wait_until = {
            let st = inner.state.lock().unwrap();
            st.clusters
                .get(&*cluster)
                .and_then(|c| c.events.front())
                .and_then(|env| env.event.group.as_ref())
                .map(|g| g.wait_until)
        };
        if let Some(until) = wait_until
            && until > tokio::time::Instant::now()
            && !inner.kill.is_cancelled()
        {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = notify.notified() => {}
                _ = inner.kill.cancelled() => {}
            }
            continue;
        }
        // Take a global slot (FIFO), then the head of our queue: the event
        // stays queued (and evictable) while it waits for a slot.
        let permit = tokio::select! {
            p = inner.slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = inner.kill.cancelled() => continue,
        };
        let env = {
            let mut st = inner.state.lock().unwrap();
            let st = &mut *st;
            let cq = st.clusters.get_mut(&*cluster).expect("worker's own queue");
            match cq.events.pop_front() {
                Some(env) => {
                    st.order.remove(&env.seq);
                    st.queued -= 1;
                    st.running += 1;
                    st.running_set
                        .insert(env.seq, (work_item(&env, 0.0), std::time::Instant::now()));
                    st.running_calls.push(RunningCall {
                        seq: env.seq,
                        source: env.source.clone(),
                        fault_id: env.event.fault_id.clone(),
                        notes: Vec::new(),
                    });
                    debug_assert!(st.running <= inner.limits.max_concurrent);
                    if let Some(j) = inner.recorder.journal() {
                        // Under the lock: a crash after this line finds the
                        // event `running`, hence interrupted.
                        j.start(env.seq);
                    }
                    env
                }
                None => {
                    // Evicted or abandoned while we waited for the slot.
                    drop(permit);
                    inner.idle.notify_waiters();
                    continue;
                }
            }
        };
        // A panicking sink must not leak the slot or the per-cluster lock:
        // the panic is caught and the outcome recorded either way. (Inline
        // rather than a task per call: cheaper, same isolation.)
        // The sink's own log lines carry the event's identity.
        let span = env.span();
        let call = catch_future(
            inner
                .sink
                .handle(&env, inner.kill.clone())
                .instrument(span.clone()),
        );
        let res = tokio::select! {
            r = call => match r {
                Ok(r) => r,
                Err(panic) => SinkResult::failed(format!("sink panicked: {panic}")),
            },
            _ = async {
                inner.kill.cancelled().await;
                tokio::time::sleep(KILL_WAIT).await;
            } => {
                // The sink ignored the kill signal: its future is dropped here
                // (child handles with kill_on_drop die with it) so shutdown returns.
                span.in_scope(|| tracing::error!("sink ignored the kill signal; aborted"));
                SinkResult::abandoned("killed: sink did not stop after the kill signal")
            }
        };
        let started = inner
            .state
            .lock()
            .unwrap()
            .running_set
            .remove(&env.seq)
            .map(|(_, t)| t);
        if let Some(t) = started {
            inner.durations.observe(res.outcome, t.elapsed());
        }
        let killed = res.outcome == Outcome::Abandoned && inner.kill.is_cancelled();
        if killed {
            inner
                .killed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let journal = inner.recorder.journal();
        if let (Some(j), Some(meta)) = (journal, &res.incident) {
            j.incident(env.seq, meta.clone());
        }
        let notes = {
            let mut st = inner.state.lock().unwrap();
            let i = st.running_calls.iter().position(|c| c.seq == env.seq);
            i.map(|i| st.running_calls.swap_remove(i).notes)
                .unwrap_or_default()
        };
        let reason = match (res.reason.as_deref(), notes.is_empty()) {
            (r, true) => Cow::Borrowed(r.unwrap_or("")),
            (None, false) => Cow::Owned(format!("withdrawn while running: {}", notes.join("; "))),
            (Some(r), false) => Cow::Owned(format!(
                "{r}; withdrawn while running: {}",
                notes.join("; ")
            )),
        };
        // With a state store, an agent killed by the shutdown is not the end
        // of its incident: it is kept `interrupted` and re-run after the
        // restart (as many times as the store's recovery allows).
        // Otherwise: a panicking `Stage::finished` hook must not take the
        // worker down: the slot and the cluster would stay taken for good.
        // The outcome is counted before the hooks run.
        if killed && journal.is_some() {
            inner
                .interrupted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            inner.recorder.defer(&env, true);
        } else if let Err(panic) = catch(|| {
            inner
                .recorder
                .finish(&env, res.outcome, inner.sink.name(), &reason)
        }) {
            tracing::error!(seq = env.seq, panic = %panic, "recording the outcome panicked");
        }
        {
            let mut st = inner.state.lock().unwrap();
            st.running -= 1;
        }
        drop(permit);
        inner.idle.notify_waiters();
    }
}
