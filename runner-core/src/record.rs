//! The single place where outcomes are recorded: counters, per-stage
//! counters, the audit log line, and `Stage::finished` notifications.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::envelope::Envelope;
use crate::outcome::{Counters, Outcome, StatsSnapshot};
use crate::stage::Stage;
use crate::state::Journal;
use crate::status::{DEFAULT_CLUSTER_LABELS, OutcomeBreakdown};

/// Per-stage counters.
#[derive(Debug, Default)]
pub(crate) struct StageCounters {
    pub passed: AtomicU64,
    pub modified: AtomicU64,
    pub dropped: AtomicU64,
}

/// Counters of one stage, for statistics and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageStats {
    /// The stage's name.
    pub name: String,
    /// Events it let through unchanged.
    pub passed: u64,
    /// Events it let through modified.
    pub modified: u64,
    /// Events it stopped (with whatever outcome).
    pub dropped: u64,
}

/// Records outcomes. Shared by the intake, the router and the sink path.
pub struct Recorder {
    counters: Counters,
    stages: Arc<[Box<dyn Stage>]>,
    stage_counters: Box<[StageCounters]>,
    /// Payload bytes of events received and not yet at their outcome
    /// (intake queue, stages, router queues, running), and their bound.
    /// Shared with the state store's journal, which charges the payloads
    /// it holds until its writer has committed them.
    bytes_used: Arc<AtomicUsize>,
    bytes_budget: AtomicUsize,
    breakdown: OutcomeBreakdown,
    /// The state store's journal, when the runner keeps durable state.
    journal: std::sync::OnceLock<Arc<Journal>>,
}

impl Recorder {
    /// A recorder for these stages, with the default number of cluster labels.
    pub fn new(stages: Arc<[Box<dyn Stage>]>) -> Self {
        Self::with_cluster_labels(stages, DEFAULT_CLUSTER_LABELS)
    }

    /// `cluster_labels`: how many clusters get their own label value in the
    /// outcome breakdown (the rest count as `other`).
    pub(crate) fn with_cluster_labels(
        stages: Arc<[Box<dyn Stage>]>,
        cluster_labels: usize,
    ) -> Self {
        let stage_counters = stages.iter().map(|_| StageCounters::default()).collect();
        Recorder {
            counters: Counters::new(),
            stages,
            stage_counters,
            breakdown: OutcomeBreakdown::new(cluster_labels),
            bytes_used: Arc::new(AtomicUsize::new(0)),
            bytes_budget: AtomicUsize::new(usize::MAX),
            journal: std::sync::OnceLock::new(),
        }
    }

    /// Makes outcomes durable: every one from now on is appended to the
    /// state store's journal. Set once, before the pipeline starts.
    pub fn set_journal(&self, journal: Arc<Journal>) {
        journal.charge_to(self.bytes_used.clone());
        let _ = self.journal.set(journal);
    }

    /// The state store's journal, if the runner keeps durable state (its
    /// health is shown in metrics and readiness).
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.get()
    }

    /// True for an event that passed every stage, i.e. was admitted to the
    /// router (the chain stops an event at the stage that drops it).
    pub(crate) fn is_admitted(&self, env: &Envelope) -> bool {
        env.passed_stages == self.stages.len()
    }

    /// An event from a previous run (state store) entered this run.
    pub(crate) fn recovered(&self) {
        self.counters.recovered();
    }

    /// Leaves an admitted event in the state store for the next run: no
    /// outcome, no `Stage::finished` (its dedup key stays in flight until
    /// the process ends, and the next run restores it).
    pub(crate) fn defer(&self, env: &Envelope, interrupted: bool) {
        self.counters.deferred();
        self.release(env.bytes);
        if let Some(j) = self.journal.get() {
            j.defer(env.seq, interrupted);
        }
        let e = &env.event;
        tracing::info!(
            target: "audit",
            seq = env.seq,
            fault_id = e.fault_id_or_dash(),
            cluster = %e.cluster,
            interrupted,
            "event kept in the state store for the next run"
        );
    }

    /// Bounds the payload bytes held by events in flight (`PAYLOAD_BUDGET_BYTES`).
    pub(crate) fn set_byte_budget(&self, bytes: usize) {
        self.bytes_budget.store(bytes, Ordering::Relaxed);
    }

    /// `(in use, budget)` in payload bytes.
    pub(crate) fn bytes(&self) -> (usize, usize) {
        (
            self.bytes_used.load(Ordering::Relaxed),
            self.bytes_budget.load(Ordering::Relaxed),
        )
    }

    /// Charges `n` payload bytes if they fit in the budget.
    pub(crate) fn try_charge(&self, n: usize) -> bool {
        let budget = self.bytes_budget.load(Ordering::Relaxed);
        self.bytes_used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|t| *t <= budget)
            })
            .is_ok()
    }

    /// Gives back bytes charged with [`try_charge`](Self::try_charge).
    pub fn release(&self, n: usize) {
        if n > 0 {
            self.bytes_used.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Outcome counts by outcome, cluster, source and stage.
    pub fn breakdown(&self) -> &OutcomeBreakdown {
        &self.breakdown
    }

    /// The stage chain, in order.
    pub fn stages(&self) -> &Arc<[Box<dyn Stage>]> {
        &self.stages
    }

    pub(crate) fn stage_counters(&self, i: usize) -> &StageCounters {
        &self.stage_counters[i]
    }

    /// Counts one payload received (before it is parsed).
    pub fn received(&self) {
        self.counters.received();
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.counters.snapshot()
    }

    /// Every stage's counters now, in chain order.
    pub fn stage_stats(&self) -> Vec<StageStats> {
        self.stages
            .iter()
            .zip(self.stage_counters.iter())
            .map(|(s, c)| StageStats {
                name: s.name().to_string(),
                passed: c.passed.load(Ordering::Relaxed),
                modified: c.modified.load(Ordering::Relaxed),
                dropped: c.dropped.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Terminal outcome for a payload that never became an event (refused
    /// at intake, or invalid). `seq` is set once the payload was numbered.
    pub fn finish_raw(
        &self,
        seq: Option<u64>,
        source: &str,
        outcome: Outcome,
        stage: &str,
        reason: &str,
    ) {
        self.counters.record(outcome);
        if let Some(j) = self.journal.get() {
            j.outcome_only(outcome);
        }
        self.breakdown.record(outcome, "", source, stage);
        tracing::warn!(
            target: "audit",
            seq,
            source,
            stage,
            outcome = outcome.as_str(),
            reason,
            "event {}",
            outcome.as_str()
        );
    }

    /// Terminal outcome of a stored event that cannot be rebuilt (counted;
    /// its pending row goes).
    pub(crate) fn finish_stored(&self, seq: u64, source: &str, outcome: Outcome, reason: &str) {
        self.counters.record(outcome);
        if let Some(j) = self.journal.get() {
            j.finish(seq, outcome, reason);
        }
        self.breakdown.record(outcome, "", source, "state");
        tracing::warn!(target: "audit", seq, source, outcome = outcome.as_str(), reason, "event {}", outcome.as_str());
    }

    /// Terminal outcome for an event: counts it, writes the audit line and
    /// tells every stage the event passed.
    pub fn finish(&self, env: &Envelope, outcome: Outcome, stage: &str, reason: &str) {
        self.counters.record(outcome);
        if let Some(j) = self.journal.get() {
            if self.is_admitted(env) {
                j.finish(env.seq, outcome, reason);
            } else {
                j.outcome_only(outcome);
            }
        }
        self.release(env.bytes);
        let e = &env.event;
        self.breakdown
            .record(outcome, &e.cluster, &env.source, stage);
        // The event's identity comes from its span (built only when the
        // line is written).
        macro_rules! audit {
            ($lvl:ident, $level:ident) => {
                if tracing::enabled!(target: "audit", tracing::Level::$level) {
                    let _event = env.span().entered();
                    tracing::$lvl!(
                        target: "audit",
                        stage,
                        outcome = outcome.as_str(),
                        reason,
                        "event {}",
                        outcome.as_str()
                    )
                }
            };
        }
        match outcome {
            // Noise filters fire on every event of a storm: keep them at debug.
            Outcome::Filtered | Outcome::Duplicate | Outcome::Merged => audit!(debug, DEBUG),
            Outcome::Completed | Outcome::PluginDropped => audit!(info, INFO),
            _ => audit!(warn, WARN),
        }
        for s in self.stages.iter().take(env.passed_stages) {
            // A panicking hook must neither stop the other stages' hooks
            // (dedup would keep keys in flight) nor unwind into the caller
            // (the intake task or a router worker).
            if let Err(panic) = crate::catch::catch(|| s.finished(e, outcome)) {
                tracing::error!(stage = s.name(), seq = env.seq, panic = %panic, "Stage::finished panicked");
            }
        }
    }
}
