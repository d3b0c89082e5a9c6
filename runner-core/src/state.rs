//! Durable state: what survives a restart (incidents, the queue of admitted
//! events, stage and sink state such as dedup keys and daily budgets, and
//! the cumulative outcome counters), behind the [`StateStore`] trait.
//!
//! The runtime never waits on disk per event. It appends changes to the
//! [`Journal`] (a short mutex, no I/O); one writer thread takes the whole
//! journal at a time and hands it to the store as one [`Batch`], which the
//! store applies atomically. So what is on disk is always a prefix of what
//! happened, and the counters in it match its queue exactly:
//! `received == Σ outcomes + pending` holds in every committed state.
//!
//! Counting rule (what makes that exact): an event is counted `received` in
//! the store in the same batch as its first durable trace, which is either
//! its admission to the router (it becomes a pending row) or its outcome
//! when it never reached the router. A payload still in the intake or the
//! stages when the process is SIGKILLed has no trace yet and is not
//! counted by the store (the runner cannot get it back; the log of the
//! killed run is the only record of it).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::event::{Event, Resource, Shape};
use crate::outcome::Outcome;
use crate::severity::Severity;

/// Number of outcome kinds (the counters' width).
pub const OUTCOMES: usize = Outcome::ALL.len();

/// Milliseconds since 1970-01-01 UTC.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where an admitted event stands, as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingState {
    /// Waiting in its cluster queue.
    Queued,
    /// Its agent was running (a crash left it so).
    Running,
    /// Its agent was killed at shutdown; it is re-run after the restart.
    Interrupted,
}

impl PendingState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PendingState::Queued => "queued",
            PendingState::Running => "running",
            PendingState::Interrupted => "interrupted",
        }
    }
    /// The state a name from [`PendingState::as_str`] stands for.
    pub fn parse(s: &str) -> Option<PendingState> {
        Some(match s {
            "queued" => PendingState::Queued,
            "running" => PendingState::Running,
            "interrupted" => PendingState::Interrupted,
            _ => return None,
        })
    }
}

/// An event as stored: every field of [`Event`], so a recovered event is
/// the one the stages passed (a WASM stage may have changed it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredEvent {
    /// [`Shape`] as text (`flat`, `flat_no_fault_id`, `nested`).
    pub shape: String,
    /// See [`Event::fault_id`].
    pub fault_id: Option<String>,
    /// See [`Event::subscription_id`].
    pub subscription_id: Option<String>,
    /// See [`Event::cluster`].
    pub cluster: String,
    /// See [`Event::fault_type`].
    pub fault_type: String,
    /// The severity's name ([`Severity::as_str`](crate::Severity::as_str)).
    pub severity: String,
    /// The resource's `apiVersion`.
    pub api_version: String,
    /// The resource's kind.
    pub kind: String,
    /// The resource's name.
    pub name: String,
    /// The resource's namespace.
    pub namespace: String,
    /// The resource's UID.
    pub uid: String,
    /// See [`Event::context`].
    pub context: String,
    /// See [`Event::timestamp`].
    pub timestamp: Option<String>,
    /// The original payload.
    pub raw: serde_json::Value,
}

impl StoredEvent {
    /// The stored form of `e`.
    pub fn of(e: &Event) -> StoredEvent {
        StoredEvent {
            shape: match e.shape {
                Shape::Flat => "flat",
                Shape::FlatNoFaultId => "flat_no_fault_id",
                Shape::Nested => "nested",
            }
            .into(),
            fault_id: e.fault_id.clone(),
            subscription_id: e.subscription_id.clone(),
            cluster: e.cluster.clone(),
            fault_type: e.fault_type.clone(),
            severity: e.severity.as_str().into(),
            api_version: e.resource.api_version.clone(),
            kind: e.resource.kind.clone(),
            name: e.resource.name.clone(),
            namespace: e.resource.namespace.clone(),
            uid: e.resource.uid.clone(),
            context: e.context.clone(),
            timestamp: e.timestamp.clone(),
            raw: (*e.raw).clone(),
        }
    }

    /// The event back; `None` when a field no longer parses (a store
    /// written by a build with other severities).
    pub(crate) fn to_event(&self) -> Option<Event> {
        Some(Event {
            shape: match self.shape.as_str() {
                "flat" => Shape::Flat,
                "flat_no_fault_id" => Shape::FlatNoFaultId,
                "nested" => Shape::Nested,
                _ => return None,
            },
            fault_id: self.fault_id.clone(),
            subscription_id: self.subscription_id.clone(),
            cluster: self.cluster.clone(),
            fault_type: self.fault_type.clone(),
            severity: self.severity.parse::<Severity>().ok()?,
            resource: Resource {
                api_version: self.api_version.clone(),
                kind: self.kind.clone(),
                name: self.name.clone(),
                namespace: self.namespace.clone(),
                uid: self.uid.clone(),
            },
            context: self.context.clone(),
            timestamp: self.timestamp.clone(),
            raw: Arc::new(self.raw.clone()),
            // Grouping is not persisted: a restored event runs as an
            // incident of its own.
            group: None,
        })
    }
}

/// [`StoredEvent`]'s text, written from a borrowed event: the writer thread
/// serializes admissions without copying their payload first.
#[derive(Serialize)]
pub struct StoredEventRef<'a> {
    shape: &'static str,
    fault_id: &'a Option<String>,
    subscription_id: &'a Option<String>,
    cluster: &'a str,
    fault_type: &'a str,
    severity: &'static str,
    api_version: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
    context: &'a str,
    timestamp: &'a Option<String>,
    raw: &'a serde_json::Value,
}

impl<'a> StoredEventRef<'a> {
    /// Borrows `e`'s fields.
    pub fn of(e: &'a Event) -> StoredEventRef<'a> {
        StoredEventRef {
            shape: match e.shape {
                Shape::Flat => "flat",
                Shape::FlatNoFaultId => "flat_no_fault_id",
                Shape::Nested => "nested",
            },
            fault_id: &e.fault_id,
            subscription_id: &e.subscription_id,
            cluster: &e.cluster,
            fault_type: &e.fault_type,
            severity: e.severity.as_str(),
            api_version: &e.resource.api_version,
            kind: &e.resource.kind,
            name: &e.resource.name,
            namespace: &e.resource.namespace,
            uid: &e.resource.uid,
            context: &e.context,
            timestamp: &e.timestamp,
            raw: &e.raw,
        }
    }
}

/// An admitted event not yet at its outcome.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    /// Its sequence number (unique across runs).
    pub seq: u64,
    /// The source that received it.
    pub source: String,
    /// The event as the stages passed it.
    pub event: StoredEvent,
    /// When it was admitted (ms since the epoch).
    pub admitted_ms: i64,
    /// Where it was when the previous run ended.
    pub state: PendingState,
    /// How often it was re-run after an interruption.
    pub reruns: u32,
}

/// What the sink learned about an incident (workspace, usage), stored with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncidentMeta {
    /// The sink's incident id (the workspace's name).
    pub id: String,
    /// The workspace directory.
    pub workspace: String,
    /// Reported cost in millionths of a US dollar.
    pub cost_micro_usd: Option<u64>,
    /// Input tokens the agent reported.
    pub input_tokens: Option<u64>,
    /// Output tokens the agent reported.
    pub output_tokens: Option<u64>,
}

/// One durable change, in the order the runtime made it.
#[derive(Debug, Clone)]
pub enum StateOp {
    /// The event entered a router queue: the store keeps it until its
    /// outcome (counted `received`).
    Admit {
        /// The event's sequence number.
        seq: u64,
        /// The source that received it.
        source: Arc<str>,
        /// Serialized by the writer thread, not on the hot path.
        event: Box<Event>,
        /// When (ms since the epoch).
        at_ms: i64,
        /// Payload size, released from the journal's bound once written.
        bytes: usize,
    },
    /// Its sink call began: it is an incident from now on.
    Start {
        /// The event's sequence number.
        seq: u64,
        /// When (ms since the epoch).
        at_ms: i64,
    },
    /// What the sink said about the incident (before its `Finish`).
    Incident {
        /// The event's sequence number.
        seq: u64,
        /// What the sink reported.
        meta: IncidentMeta,
    },
    /// The admitted event reached its outcome (counted; the pending row goes).
    Finish {
        /// The event's sequence number.
        seq: u64,
        /// Its outcome.
        outcome: Outcome,
        /// Why (empty for `completed`).
        reason: String,
        /// When (ms since the epoch).
        at_ms: i64,
    },
    /// Left for the next run: queued at shutdown, or its agent was killed
    /// at shutdown (`interrupted`).
    Defer {
        /// The event's sequence number.
        seq: u64,
        /// Its agent was killed (not merely queued).
        interrupted: bool,
    },
    /// A recovered event was queued again; `reruns` counts re-runs after
    /// an interruption.
    Requeue {
        /// The event's sequence number.
        seq: u64,
        /// Re-runs after an interruption so far.
        reruns: u32,
    },
    /// Key-value state of a stage or sink (see [`StateScope`]).
    Put {
        /// The stage's or sink's scope.
        scope: Arc<str>,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// The store may delete the entry after this (ms since the epoch).
        expires_ms: Option<i64>,
    },
    /// Removes a key-value entry of a stage or sink.
    Delete {
        /// The stage's or sink's scope.
        scope: Arc<str>,
        /// The key.
        key: Vec<u8>,
    },
    /// Retention deleted the incident's workspace.
    Pruned {
        /// The incident's id.
        incident_id: String,
        /// When (ms since the epoch).
        at_ms: i64,
    },
}

/// What the writer hands the store in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// The changes, in order.
    pub ops: Vec<StateOp>,
    /// Events first counted in this batch (see the module docs).
    pub received: u64,
    /// Outcomes first counted in this batch, indexed like [`Outcome::ALL`].
    pub outcomes: [u64; OUTCOMES],
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.received == 0 && self.outcomes.iter().all(|n| *n == 0)
    }

    /// Appends a later batch.
    pub fn merge(&mut self, later: Batch) {
        self.ops.extend(later.ops);
        self.received += later.received;
        for (a, b) in self.outcomes.iter_mut().zip(later.outcomes) {
            *a += b;
        }
    }

    /// Payload bytes held by the batch's admissions.
    pub fn admit_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|o| match o {
                StateOp::Admit { bytes, .. } => *bytes,
                _ => 0,
            })
            .sum()
    }

    /// Keeps only the last `Put`/`Delete` of each key (the others are
    /// overwritten by it anyway): dedup writes a key when an event is
    /// admitted and again at its outcome, often within one batch.
    pub fn coalesce_kv(&mut self) {
        let keep: Vec<bool> = {
            let mut seen: HashSet<(&str, &[u8])> = HashSet::new();
            let mut keep = vec![true; self.ops.len()];
            for (i, o) in self.ops.iter().enumerate().rev() {
                if let StateOp::Put { scope, key, .. } | StateOp::Delete { scope, key } = o
                    && !seen.insert((&**scope, key.as_slice()))
                {
                    keep[i] = false;
                }
            }
            keep
        };
        if keep.iter().all(|k| *k) {
            return;
        }
        let mut it = keep.into_iter();
        self.ops.retain(|_| it.next().unwrap_or(true));
    }

    /// Replaces the event of every admission whose outcome is in the batch
    /// by its identity fields only (no payload, no context): what the
    /// incident history needs, at a fraction of the memory.
    pub fn strip_ended(&mut self) {
        let ended: HashSet<u64> = self
            .ops
            .iter()
            .filter_map(|o| match o {
                StateOp::Finish { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        for o in &mut self.ops {
            if let StateOp::Admit {
                seq, event, bytes, ..
            } = o
                && ended.contains(seq)
                && *bytes > 0
            {
                let slim = Event {
                    shape: event.shape,
                    fault_id: event.fault_id.clone(),
                    subscription_id: event.subscription_id.clone(),
                    cluster: event.cluster.clone(),
                    fault_type: event.fault_type.clone(),
                    severity: event.severity,
                    resource: event.resource.clone(),
                    context: String::new(),
                    timestamp: event.timestamp.clone(),
                    raw: Arc::new(serde_json::Value::Null),
                    group: None,
                };
                **event = slim;
                *bytes = 0;
            }
        }
    }

    /// Drops the admissions that ended in this same batch without running
    /// (a storm's overflow): the store never sees their rows, only their
    /// counts. Returns how many were dropped.
    pub(crate) fn coalesce(&mut self) -> usize {
        let started: HashSet<u64> = self
            .ops
            .iter()
            .filter_map(|o| match o {
                StateOp::Start { seq, .. } | StateOp::Defer { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        let admitted: HashSet<u64> = self
            .ops
            .iter()
            .filter_map(|o| match o {
                StateOp::Admit { seq, .. } if !started.contains(seq) => Some(*seq),
                _ => None,
            })
            .collect();
        let gone: HashSet<u64> = self
            .ops
            .iter()
            .filter_map(|o| match o {
                StateOp::Finish { seq, .. } if admitted.contains(seq) => Some(*seq),
                _ => None,
            })
            .collect();
        if gone.is_empty() {
            return 0;
        }
        self.ops.retain(|o| match o {
            StateOp::Admit { seq, .. } | StateOp::Finish { seq, .. } => !gone.contains(seq),
            _ => true,
        });
        gone.len()
    }
}

/// Key-value entries of one scope, as stored.
pub type KvEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// Cumulative counters as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredCounters {
    /// Events received, over every run.
    pub received: u64,
    /// Events per outcome, indexed like [`Outcome::ALL`].
    pub outcomes: [u64; OUTCOMES],
}

impl StoredCounters {
    /// Events that reached an outcome (any).
    pub fn terminal(&self) -> u64 {
        self.outcomes.iter().sum()
    }
    /// The count of one outcome.
    pub fn get(&self, o: Outcome) -> u64 {
        self.outcomes[o as usize]
    }
}

/// What the previous runs left, read once at startup.
#[derive(Debug, Default)]
pub struct Recovered {
    /// First sequence number free for this run (above every stored one).
    pub next_seq: u64,
    /// Admitted events without an outcome, oldest first.
    pub pending: Vec<PendingEvent>,
    /// The counters over every previous run.
    pub counters: StoredCounters,
    /// Key-value state per scope.
    pub kv: HashMap<String, KvEntries>,
}

/// A store that cannot be opened, read or written (the message says which file and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError(pub String);

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StateError {}

/// A durable store. One writer thread calls it; nothing on the event path
/// does. An implementation must apply a batch atomically and in order.
///
/// A server database shared by several replicas would implement the same
/// two calls (see `docs/ARCHITECTURE.md`, "Durable state").
pub trait StateStore: Send {
    /// What previous runs left. Called once, before the pipeline starts.
    fn recover(&mut self) -> Result<Recovered, StateError>;
    /// Applies one batch: all of it or none.
    fn commit(&mut self, batch: &Batch) -> Result<(), StateError>;
    /// Periodic upkeep on the writer thread (expiry, retention); default none.
    fn maintain(&mut self) {}
}

/// A store that keeps everything in memory (tests; `STATE_DIR=off` uses no
/// store at all). Clones share the same state, so a test can "restart" a
/// pipeline on it and look inside.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct MemoryStore {
    inner: Arc<Mutex<MemoryState>>,
}

#[cfg(test)]
#[derive(Default, Debug)]
pub(crate) struct MemoryState {
    pub counters: StoredCounters,
    pub pending: std::collections::BTreeMap<u64, PendingEvent>,
    /// seq → (status, runs, meta)
    pub incidents: std::collections::BTreeMap<u64, (String, u32, Option<IncidentMeta>)>,
    pub kv: HashMap<(String, Vec<u8>), Vec<u8>>,
    pub batches: u64,
}

#[cfg(test)]
impl MemoryStore {
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.inner.lock().expect("memory store lock")
    }
}

#[cfg(test)]
impl StateStore for MemoryStore {
    fn recover(&mut self) -> Result<Recovered, StateError> {
        let st = self.state();
        let mut kv: HashMap<String, KvEntries> = HashMap::new();
        for ((scope, k), v) in &st.kv {
            kv.entry(scope.clone())
                .or_default()
                .push((k.clone(), v.clone()));
        }
        let max = st.pending.keys().chain(st.incidents.keys()).max().copied();
        Ok(Recovered {
            next_seq: max.map_or(0, |m| m + 1),
            pending: st.pending.values().cloned().collect(),
            counters: st.counters,
            kv,
        })
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StateError> {
        let mut st = self.state();
        st.batches += 1;
        st.counters.received += batch.received;
        for (a, b) in st.counters.outcomes.iter_mut().zip(batch.outcomes) {
            *a += b;
        }
        for op in &batch.ops {
            match op {
                StateOp::Admit {
                    seq,
                    source,
                    event,
                    at_ms,
                    ..
                } => {
                    st.pending.insert(
                        *seq,
                        PendingEvent {
                            seq: *seq,
                            source: source.to_string(),
                            event: StoredEvent::of(event),
                            admitted_ms: *at_ms,
                            state: PendingState::Queued,
                            reruns: 0,
                        },
                    );
                }
                StateOp::Start { seq, .. } => {
                    if let Some(p) = st.pending.get_mut(seq) {
                        p.state = PendingState::Running;
                    }
                    let e = st
                        .incidents
                        .entry(*seq)
                        .or_insert(("running".into(), 0, None));
                    e.0 = "running".into();
                    e.1 += 1;
                }
                StateOp::Incident { seq, meta } => {
                    if let Some(e) = st.incidents.get_mut(seq) {
                        e.2 = Some(meta.clone());
                    }
                }
                StateOp::Finish { seq, outcome, .. } => {
                    st.pending.remove(seq);
                    if let Some(e) = st.incidents.get_mut(seq) {
                        e.0 = outcome.as_str().into();
                    }
                }
                StateOp::Defer { seq, interrupted } => {
                    if *interrupted {
                        if let Some(p) = st.pending.get_mut(seq) {
                            p.state = PendingState::Interrupted;
                        }
                        if let Some(e) = st.incidents.get_mut(seq) {
                            e.0 = "interrupted".into();
                        }
                    }
                }
                StateOp::Requeue { seq, reruns } => {
                    if let Some(p) = st.pending.get_mut(seq) {
                        p.reruns = *reruns;
                        p.state = PendingState::Queued;
                    }
                }
                StateOp::Put {
                    scope, key, value, ..
                } => {
                    st.kv
                        .insert((scope.to_string(), key.clone()), value.clone());
                }
                StateOp::Delete { scope, key } => {
                    st.kv.remove(&(scope.to_string(), key.clone()));
                }
                StateOp::Pruned { .. } => {}
            }
        }
        Ok(())
    }
}

/// The in-memory journal the runtime appends to, and the writer thread that
/// commits it. Cheap to append to; see the module docs.
pub struct Journal {
    buf: Mutex<Batch>,
    /// Wakes the writer (enough ops) and the appenders (space again).
    cv: Condvar,
    space: Condvar,
    /// Ops the journal may hold before appenders wait for the writer
    /// (backpressure instead of unbounded memory when the disk is slow).
    capacity: usize,
    /// Payload bytes held by admissions in the journal, and their bound:
    /// a journal of big payloads holds the event path back sooner.
    bytes: std::sync::atomic::AtomicUsize,
    max_bytes: usize,
    /// The payload budget's counter (`PAYLOAD_BUDGET_BYTES`): an admission
    /// in the journal keeps its payload alive (and a copy of its text
    /// fields) after the event itself may have ended, so it is charged
    /// there too until the writer has committed it.
    budget: std::sync::OnceLock<Arc<std::sync::atomic::AtomicUsize>>,
    closing: AtomicBool,
    /// Batches committed, and failed commits (retried with the next batch).
    committed: AtomicU64,
    failures: AtomicU64,
    /// Why the store cannot write right now (`None`: it can).
    store_error: Mutex<Option<String>>,
    /// Sequence of the last committed batch, for `flush`.
    flushed: Mutex<u64>,
    flushed_cv: Condvar,
    appended: AtomicU64,
}

/// How often the writer commits at the latest.
pub(crate) const COMMIT_INTERVAL: Duration = Duration::from_millis(20);
/// Ops after which the writer commits at once.
pub(crate) const COMMIT_OPS: usize = 4096;
/// Default bound of the journal (ops waiting for the writer).
pub const JOURNAL_CAPACITY: usize = 65_536;
/// Bound of the payload bytes the journal's admissions hold (besides the
/// payload budget: an event that ended may still be in the journal).
pub(crate) const JOURNAL_MAX_BYTES: usize = 64 << 20;

impl Journal {
    /// A journal holding up to `capacity` changes before writers wait.
    pub fn new(capacity: usize) -> Arc<Journal> {
        Arc::new(Journal {
            buf: Mutex::new(Batch::default()),
            cv: Condvar::new(),
            space: Condvar::new(),
            capacity: capacity.max(COMMIT_OPS),
            bytes: std::sync::atomic::AtomicUsize::new(0),
            max_bytes: JOURNAL_MAX_BYTES,
            budget: std::sync::OnceLock::new(),
            closing: AtomicBool::new(false),
            committed: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            store_error: Mutex::new(None),
            flushed: Mutex::new(0),
            flushed_cv: Condvar::new(),
            appended: AtomicU64::new(0),
        })
    }

    /// Charges the payloads of admissions to `used` (the payload budget's
    /// counter) until they are committed. Set once, before the first admission.
    pub fn charge_to(&self, used: Arc<std::sync::atomic::AtomicUsize>) {
        let _ = self.budget.set(used);
    }

    /// Gives back `n` bytes of committed (or coalesced) admissions.
    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.bytes
            .fetch_sub(n.min(self.bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
        if let Some(b) = self.budget.get() {
            b.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Payload bytes held by admissions not yet committed.
    pub fn held_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn with(&self, f: impl FnOnce(&mut Batch)) {
        let mut b = self.buf.lock().expect("journal lock");
        // Backpressure only when the disk fell far behind: the writer runs
        // on its own thread, so this never waits on the event path's tasks.
        while (b.ops.len() >= self.capacity || self.bytes.load(Ordering::Relaxed) >= self.max_bytes)
            && !self.closing.load(Ordering::Relaxed)
        {
            b = self
                .space
                .wait_timeout(b, Duration::from_millis(100))
                .expect("journal lock")
                .0;
        }
        let was_empty = b.is_empty();
        f(&mut b);
        let n = b.ops.len();
        drop(b);
        self.appended.fetch_add(1, Ordering::Relaxed);
        // The first change wakes an idle writer (it keeps no timer while
        // nothing is pending), and a full batch is committed at once. Only
        // then: a busy writer finds the journal non-empty when it comes
        // back, and a notify per append would be a futex call per event.
        if was_empty || n == COMMIT_OPS {
            self.cv.notify_one();
        }
    }

    /// An event that ended without reaching the router (filtered, invalid…).
    pub(crate) fn outcome_only(&self, outcome: Outcome) {
        self.with(|b| {
            b.received += 1;
            b.outcomes[outcome as usize] += 1;
        });
    }

    /// `bytes`: the payload's size (as charged at intake), for the bound.
    pub(crate) fn admit(&self, seq: u64, source: &Arc<str>, event: &Event, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        // Unconditional (the event was charged at intake already): the
        // intake refuses new payloads until the writer caught up.
        if let Some(b) = self.budget.get() {
            b.fetch_add(bytes, Ordering::AcqRel);
        }
        let op = StateOp::Admit {
            bytes,
            seq,
            source: source.clone(),
            event: Box::new(event.clone()),
            at_ms: now_ms(),
        };
        self.with(|b| {
            b.received += 1;
            b.ops.push(op);
        });
    }

    pub(crate) fn start(&self, seq: u64) {
        let op = StateOp::Start {
            seq,
            at_ms: now_ms(),
        };
        self.with(|b| b.ops.push(op));
    }

    pub(crate) fn incident(&self, seq: u64, meta: IncidentMeta) {
        self.with(|b| b.ops.push(StateOp::Incident { seq, meta }));
    }

    /// The outcome of an admitted event.
    pub(crate) fn finish(&self, seq: u64, outcome: Outcome, reason: &str) {
        let op = StateOp::Finish {
            seq,
            outcome,
            reason: reason.to_string(),
            at_ms: now_ms(),
        };
        self.with(|b| {
            b.outcomes[outcome as usize] += 1;
            b.ops.push(op);
        });
    }

    pub(crate) fn defer(&self, seq: u64, interrupted: bool) {
        self.with(|b| b.ops.push(StateOp::Defer { seq, interrupted }));
    }

    pub(crate) fn requeue(&self, seq: u64, reruns: u32) {
        self.with(|b| b.ops.push(StateOp::Requeue { seq, reruns }));
    }

    pub(crate) fn put(
        &self,
        scope: &Arc<str>,
        key: &[u8],
        value: Vec<u8>,
        expires_ms: Option<i64>,
    ) {
        let op = StateOp::Put {
            scope: scope.clone(),
            key: key.to_vec(),
            value,
            expires_ms,
        };
        self.with(|b| b.ops.push(op));
    }

    pub(crate) fn delete(&self, scope: &Arc<str>, key: &[u8]) {
        let op = StateOp::Delete {
            scope: scope.clone(),
            key: key.to_vec(),
        };
        self.with(|b| b.ops.push(op));
    }

    /// Retention deleted an incident's workspace.
    pub fn pruned(&self, incident_id: &str) {
        let op = StateOp::Pruned {
            incident_id: incident_id.to_string(),
            at_ms: now_ms(),
        };
        self.with(|b| b.ops.push(op));
    }

    /// The last commit failed, and why (readiness): changes wait in memory.
    pub fn store_error(&self) -> Option<String> {
        self.store_error.lock().expect("store error lock").clone()
    }

    /// Batches committed so far, and commits that failed (and were retried).
    pub fn commits(&self) -> (u64, u64) {
        (
            self.committed.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// Waits until everything appended before the call is committed (or
    /// `timeout`). Blocking: call it off the async runtime's workers.
    #[cfg(test)]
    pub(crate) fn flush_blocking(&self, timeout: Duration) -> bool {
        let target = self.committed.load(Ordering::Relaxed) + 1;
        self.cv.notify_one();
        let deadline = std::time::Instant::now() + timeout;
        let mut f = self.flushed.lock().expect("flush lock");
        // Two commits: the one in progress may have taken its batch before
        // our last append.
        while *f < target + 1 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            self.cv.notify_one();
            f = self
                .flushed_cv
                .wait_timeout(f, left.min(COMMIT_INTERVAL))
                .expect("flush lock")
                .0;
        }
        true
    }
}

/// The writer thread: takes the journal every [`COMMIT_INTERVAL`] (or at
/// [`COMMIT_OPS`]) and commits it.
///
/// A failed commit (disk full, file gone read-only) keeps its batch and
/// retries it, merged with everything appended since, every
/// [`RETRY_INTERVAL`]: the event path never waits for a store that cannot
/// write. While it fails, the carried batch stays bounded: admissions that
/// ended unstarted leave only their counts, key-value changes keep only the
/// last per key, and an admission whose incident ended gives up its
/// payload (its row keeps the identity fields). So what piles up is the
/// events still in flight and a few small changes per incident. The
/// condition is logged once (ERROR) when it starts and once when it ends,
/// and reported by [`Journal::store_error`] (readiness) and
/// [`Journal::commits`] (metrics).
pub struct Writer {
    journal: Arc<Journal>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often [`StateStore::maintain`] runs.
pub(crate) const MAINTAIN_INTERVAL: Duration = Duration::from_secs(60);
/// How often a failed commit is retried.
pub(crate) const RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// Failed retries after which a closing writer gives up (about 5 s).
const CLOSING_RETRIES: u64 = 50;

impl Writer {
    /// Starts the writer thread, which owns `store` from now on.
    pub fn spawn(journal: Arc<Journal>, mut store: Box<dyn StateStore>) -> Writer {
        let j = journal.clone();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                let mut carry: Option<Batch> = None;
                // Payload bytes the carried batch's admissions still hold.
                let mut charged = 0usize;
                let mut failing = 0u64;
                let mut last_maintain = std::time::Instant::now();
                loop {
                    let closing = j.closing.load(Ordering::Relaxed);
                    let taken = {
                        let mut b = j.buf.lock().expect("journal lock");
                        // `closing` read again under the lock: `close` sets
                        // it under the lock, so its wake-up cannot be lost.
                        if b.is_empty() && !j.closing.load(Ordering::Relaxed) && carry.is_none() {
                            // Idle: no periodic wake-up. The first change,
                            // a flush, close or the maintenance time ends
                            // the wait…
                            b = j
                                .cv
                                .wait_timeout(b, MAINTAIN_INTERVAL)
                                .expect("journal lock")
                                .0;
                            // …and a change gets a commit interval to batch
                            // with the ones that follow it.
                            if !b.is_empty()
                                && b.ops.len() < COMMIT_OPS
                                && !j.closing.load(Ordering::Relaxed)
                            {
                                b = j
                                    .cv
                                    .wait_timeout(b, COMMIT_INTERVAL)
                                    .expect("journal lock")
                                    .0;
                            }
                        }
                        std::mem::take(&mut *b)
                    };
                    j.space.notify_all();
                    let before = charged + taken.admit_bytes();
                    let mut batch = match carry.take() {
                        Some(mut c) => {
                            c.merge(taken);
                            c
                        }
                        None => taken,
                    };
                    batch.coalesce();
                    batch.coalesce_kv();
                    if failing > 0 {
                        batch.strip_ended();
                    }
                    let held = batch.admit_bytes();
                    j.release(before.saturating_sub(held));
                    if !batch.is_empty()
                        && let Err(e) = store.commit(&batch)
                    {
                        failing += 1;
                        j.failures.fetch_add(1, Ordering::Relaxed);
                        let mut err = j.store_error.lock().expect("store error lock");
                        if err.is_none() {
                            tracing::error!(error = %e, ops = batch.ops.len(), "state store: cannot write (STATE_DIR full or read-only?); events are still investigated, their changes are kept in memory and written once the store can write again (lost if the process ends first)");
                            *err = Some(e.to_string());
                        }
                        drop(err);
                        if closing && failing > CLOSING_RETRIES {
                            tracing::error!(error = %e, ops = batch.ops.len(), "state store: the last changes could not be written at shutdown; the next run re-runs what they would have finished");
                            return;
                        }
                        charged = held;
                        carry = Some(batch);
                        std::thread::sleep(RETRY_INTERVAL);
                        continue;
                    }
                    if failing > 0 {
                        tracing::info!(failed_commits = failing, "state store: writing again; the changes kept in memory are written");
                        failing = 0;
                        *j.store_error.lock().expect("store error lock") = None;
                    }
                    j.release(held);
                    charged = 0;
                    j.space.notify_all();
                    j.committed.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut f = j.flushed.lock().expect("flush lock");
                        *f += 1;
                    }
                    j.flushed_cv.notify_all();
                    if last_maintain.elapsed() >= MAINTAIN_INTERVAL {
                        store.maintain();
                        last_maintain = std::time::Instant::now();
                    }
                    if closing && j.buf.lock().expect("journal lock").is_empty() {
                        return;
                    }
                }
            })
            .expect("spawn the state writer thread");
        Writer {
            journal,
            thread: Some(thread),
        }
    }

    /// The journal this writer drains.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Commits what is left and stops the thread (blocking).
    pub fn close(mut self) {
        {
            // Under the lock: the idle writer checks `closing` under it
            // before waiting, so this wake-up cannot fall between the two.
            let _b = self.journal.buf.lock().expect("journal lock");
            self.journal.closing.store(true, Ordering::Relaxed);
        }
        self.journal.cv.notify_all();
        self.journal.space.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A stage's or sink's share of the store: a key-value namespace, loaded at
/// startup and written through the journal.
#[derive(Clone)]
pub struct StateScope {
    scope: Arc<str>,
    journal: Arc<Journal>,
}

impl StateScope {
    /// The share `scope` of the store behind `journal`.
    pub fn new(scope: &str, journal: Arc<Journal>) -> StateScope {
        StateScope {
            scope: Arc::from(scope),
            journal,
        }
    }
    /// Stores `value` under `key` (replacing); the store may forget it after
    /// `expires_ms`. Never waits on disk.
    pub fn put(&self, key: &[u8], value: Vec<u8>, expires_ms: Option<i64>) {
        self.journal.put(&self.scope, key, value, expires_ms);
    }
    /// Removes `key`. Never waits on disk.
    pub fn delete(&self, key: &[u8]) {
        self.journal.delete(&self.scope, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event::from_json(
            serde_json::json!({"cluster":"c","severity":"critical","faultId":"f1","resource":{"kind":"Pod","name":"p","namespace":"n"}}),
            None,
        )
        .unwrap()
    }

    #[test]
    fn stored_event_round_trips() {
        let e = event();
        let s = StoredEvent::of(&e);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(
            text,
            serde_json::to_string(&StoredEventRef::of(&e)).unwrap()
        );
        let back: StoredEvent = serde_json::from_str(&text).unwrap();
        let e2 = back.to_event().unwrap();
        assert_eq!(e2.resource, e.resource);
        assert_eq!(e2.fault_id, e.fault_id);
        assert_eq!(e2.severity, e.severity);
        assert_eq!(*e2.raw, *e.raw);
    }

    #[test]
    fn coalesce_drops_admissions_that_ended_unstarted_only() {
        let j = Journal::new(JOURNAL_CAPACITY);
        let src: Arc<str> = Arc::from("s");
        let e = event();
        j.admit(1, &src, &e, 0);
        j.admit(2, &src, &e, 0);
        j.admit(3, &src, &e, 0);
        j.finish(1, Outcome::Dropped, "overflow");
        j.start(2);
        j.finish(2, Outcome::Completed, "");
        let mut b = std::mem::take(&mut *j.buf.lock().unwrap());
        assert_eq!(b.coalesce(), 1);
        let seqs: Vec<_> = b
            .ops
            .iter()
            .map(|o| match o {
                StateOp::Admit { seq, .. } => format!("a{seq}"),
                StateOp::Start { seq, .. } => format!("s{seq}"),
                StateOp::Finish { seq, .. } => format!("f{seq}"),
                _ => "?".into(),
            })
            .collect();
        assert_eq!(seqs, ["a2", "a3", "s2", "f2"]);
        // Counts stay: 3 received, 2 outcomes, 1 pending.
        assert_eq!(b.received, 3);
        assert_eq!(b.outcomes.iter().sum::<u64>(), 2);
    }

    #[test]
    fn admissions_are_charged_to_the_payload_budget_until_committed() {
        let rec = crate::record::Recorder::new(Vec::new().into());
        rec.set_byte_budget(1500);
        let j = Journal::new(JOURNAL_CAPACITY);
        rec.set_journal(j.clone());
        let src: Arc<str> = Arc::from("s");
        let e = event();
        // Charged at intake, admitted, and at its outcome released by the
        // event: the journal's copy still holds the bytes.
        assert!(rec.try_charge(1000));
        j.admit(1, &src, &e, 1000);
        assert_eq!(rec.bytes().0, 2000);
        rec.release(1000);
        j.finish(1, Outcome::Completed, "");
        assert_eq!(rec.bytes().0, 1000);
        assert!(!rec.try_charge(1000), "the uncommitted copy counts");
        let store = MemoryStore::default();
        let w = Writer::spawn(j.clone(), Box::new(store.clone()));
        assert!(j.flush_blocking(Duration::from_secs(10)));
        assert_eq!(rec.bytes().0, 0);
        assert_eq!(j.held_bytes(), 0);
        assert!(rec.try_charge(1000));
        w.close();
    }

    /// A store that fails every commit while `failing` is set (a full disk).
    struct Flaky {
        inner: MemoryStore,
        failing: Arc<AtomicBool>,
    }

    impl StateStore for Flaky {
        fn recover(&mut self) -> Result<Recovered, StateError> {
            self.inner.recover()
        }
        fn commit(&mut self, batch: &Batch) -> Result<(), StateError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(StateError("database or disk is full".into()));
            }
            self.inner.commit(batch)
        }
    }

    #[test]
    fn a_store_that_cannot_write_never_holds_the_event_path_back() {
        let rec = crate::record::Recorder::new(Vec::new().into());
        let j = Journal::new(JOURNAL_CAPACITY);
        rec.set_journal(j.clone());
        let store = MemoryStore::default();
        let failing = Arc::new(AtomicBool::new(true));
        let w = Writer::spawn(
            j.clone(),
            Box::new(Flaky {
                inner: store.clone(),
                failing: failing.clone(),
            }),
        );
        let src: Arc<str> = Arc::from("s");
        let e = event();
        // More changes than the journal's capacity: appending would block
        // if the writer did not keep taking the journal.
        const N: u64 = 30_000;
        for seq in 0..N {
            j.admit(seq, &src, &e, 100);
            j.start(seq);
            j.put(&src, &[(seq % 7) as u8], vec![1], None);
            j.finish(seq, Outcome::Completed, "");
        }
        j.admit(N, &src, &e, 100);
        assert!(!j.flush_blocking(Duration::from_millis(300)));
        assert!(j.store_error().unwrap().contains("disk is full"));
        assert!(j.commits().1 > 0);
        // Only the admission still in flight keeps its payload charged.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rec.bytes().0 != 100 {
            assert!(std::time::Instant::now() < deadline, "{:?}", rec.bytes());
            std::thread::sleep(Duration::from_millis(10));
        }
        failing.store(false, Ordering::SeqCst);
        assert!(j.flush_blocking(Duration::from_secs(10)));
        assert_eq!(j.store_error(), None);
        w.close();
        let st = store.state();
        assert_eq!(st.counters.received, N + 1);
        assert_eq!(st.counters.terminal(), N);
        assert_eq!(st.pending.len(), 1);
        assert_eq!(st.incidents.len(), N as usize);
        assert_eq!(st.kv.len(), 7);
        assert_eq!(rec.bytes().0, 0, "written: the journal's charge is gone");
    }

    #[test]
    fn writer_commits_in_order_and_counts_add_up() {
        let store = MemoryStore::default();
        let j = Journal::new(JOURNAL_CAPACITY);
        let w = Writer::spawn(j.clone(), Box::new(store.clone()));
        let src: Arc<str> = Arc::from("s");
        let e = event();
        for seq in 0..1000u64 {
            match seq % 3 {
                0 => j.outcome_only(Outcome::Filtered),
                1 => {
                    j.admit(seq, &src, &e, 0);
                    j.finish(seq, Outcome::Dropped, "x");
                }
                _ => j.admit(seq, &src, &e, 0),
            }
        }
        assert!(j.flush_blocking(Duration::from_secs(10)));
        w.close();
        let st = store.state();
        assert_eq!(st.counters.received, 1000);
        assert_eq!(
            st.counters.received,
            st.counters.terminal() + st.pending.len() as u64
        );
        assert_eq!(st.pending.len(), 333);
    }

    #[test]
    fn an_idle_writer_wakes_for_the_first_change() {
        // The idle writer keeps no timer (only the maintenance interval, a
        // minute): the append itself must wake it, no flush asked.
        let store = MemoryStore::default();
        let j = Journal::new(JOURNAL_CAPACITY);
        let w = Writer::spawn(j.clone(), Box::new(store.clone()));
        for round in 1..=3u64 {
            j.outcome_only(Outcome::Filtered);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while store.state().counters.received < round {
                assert!(
                    std::time::Instant::now() < deadline,
                    "change {round} not committed without a flush"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        w.close();
        assert_eq!(store.state().counters.received, 3);
    }
}
