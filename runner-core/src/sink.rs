//! The `Sink` trait: consumes events that passed every stage, one at a time
//! per call, under the router's concurrency limits.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::envelope::Envelope;
use crate::outcome::Outcome;

/// Result of handling one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkResult {
    /// One of `Completed`, `Failed`, `TimedOut`, `Abandoned`, `OverBudget`.
    pub outcome: Outcome,
    /// Why, for anything but `Completed`.
    pub reason: Option<String>,
    /// What the sink knows about the incident (workspace, usage), kept by
    /// the state store.
    pub incident: Option<crate::state::IncidentMeta>,
}

impl SinkResult {
    /// The event's incident was investigated.
    pub fn completed() -> Self {
        SinkResult {
            outcome: Outcome::Completed,
            reason: None,
            incident: None,
        }
    }
    /// The sink failed on this event, for `reason`.
    pub fn failed(reason: impl Into<String>) -> Self {
        SinkResult {
            outcome: Outcome::Failed,
            reason: Some(reason.into()),
            incident: None,
        }
    }
    /// The sink's work ran past its deadline.
    pub fn timed_out(reason: impl Into<String>) -> Self {
        SinkResult {
            outcome: Outcome::TimedOut,
            reason: Some(reason.into()),
            incident: None,
        }
    }
    /// A budget (tokens, cost, runs) did not allow the work.
    pub fn over_budget(reason: impl Into<String>) -> Self {
        SinkResult {
            outcome: Outcome::OverBudget,
            reason: Some(reason.into()),
            incident: None,
        }
    }
    /// The same result, with what the sink knows about the incident.
    pub fn with_incident(mut self, meta: crate::state::IncidentMeta) -> Self {
        self.incident = Some(meta);
        self
    }
    /// The work was given up (shutdown, or interrupted too often).
    pub fn abandoned(reason: impl Into<String>) -> Self {
        SinkResult {
            outcome: Outcome::Abandoned,
            reason: Some(reason.into()),
            incident: None,
        }
    }
}

/// Where routed events end: one call per event, under the router's limits.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The sink's name, for logs and outcome reasons.
    fn name(&self) -> &str;

    /// Handles one event. `kill` is cancelled when the shutdown grace period
    /// has expired: stop at once, clean up (kill process groups) and return
    /// `Abandoned`. The router calls this at most once per cluster at a time
    /// and never more than the global cap concurrently.
    async fn handle(&self, envelope: &Envelope, kill: CancellationToken) -> SinkResult;

    /// The source withdrew the event `seq` while this sink was handling it
    /// (an alert resolved while its agent ran). Called from the intake task:
    /// record it (e.g. on the incident) without blocking. The call itself
    /// goes on; its outcome's reason gets the note appended by the router.
    fn note(&self, seq: u64, note: &str) {
        let _ = (seq, note);
    }

    /// The runner keeps durable state: `scope` is this sink's share of the
    /// store and `entries` what it held when the previous run ended (the
    /// agent sink keeps its daily budgets there). Called once before the
    /// first `handle`.
    fn attach_state(&self, _scope: crate::state::StateScope, _entries: Vec<(Vec<u8>, Vec<u8>)>) {}

    /// Called once after the last `handle` returned (flush notifications).
    async fn close(&self) {}

    /// The sink's record of incidents, for the incidents page (optional).
    fn incident_log(&self) -> Option<std::sync::Arc<dyn crate::status::IncidentLog>> {
        None
    }

    /// Totals of what the sink's agents consumed, for the final statistics.
    fn usage_totals(&self) -> UsageTotals {
        UsageTotals::default()
    }
}

/// Agent usage summed over runs, as far as their CLIs reported it (the
/// final statistics, the incidents page, metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct UsageTotals {
    /// Runs whose agent reported usage.
    pub reported: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Only what CLIs reported; runs without a cost add nothing.
    pub cost_usd: f64,
    /// Model turns.
    pub turns: u64,
}

impl UsageTotals {
    /// Adds one run's reported usage (what it did not report adds nothing).
    pub fn add(
        &mut self,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
        cost_usd: Option<f64>,
        turns: Option<u64>,
    ) {
        self.reported += 1;
        self.input_tokens += input_tokens.unwrap_or(0);
        self.output_tokens += output_tokens.unwrap_or(0);
        self.cost_usd += cost_usd.unwrap_or(0.0);
        self.turns += turns.unwrap_or(0);
    }
}
