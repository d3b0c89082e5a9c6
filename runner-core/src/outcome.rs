//! Terminal outcomes and the counters that must add up.
//!
//! Invariant: every event counted in `received` ends in exactly one outcome,
//! so once the pipeline has drained, `received == sum(outcomes)`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The one terminal outcome of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Payload did not parse or failed validation.
    Invalid,
    /// Below the severity threshold (or another filtering stage).
    Filtered,
    /// Suppressed by deduplication.
    Duplicate,
    /// Removed from a full queue to admit a newer event (policy `drop`).
    Dropped,
    /// Refused because a queue was full (policy `reject`).
    Rejected,
    /// Dropped by a plugin (WASM) stage.
    PluginDropped,
    /// The agent finished successfully.
    Completed,
    /// The agent failed (non-zero exit, missing output, spawn error).
    Failed,
    /// The agent exceeded its timeout.
    TimedOut,
    /// Still queued or running when the runner shut down.
    Abandoned,
    /// Not launched: the cluster's daily agent budget (runs or dollars) was
    /// used up.
    OverBudget,
    /// Withdrawn by its source while still queued (an Alertmanager alert
    /// that resolved before its turn); see `Intake::cancel`.
    Cancelled,
    /// Attached to an incident that another event of its group leads (a
    /// grouping stage): it is investigated as part of that incident.
    Merged,
}

impl Outcome {
    /// Every outcome, in counter order.
    pub const ALL: [Outcome; 13] = [
        Outcome::Invalid,
        Outcome::Filtered,
        Outcome::Duplicate,
        Outcome::Dropped,
        Outcome::Rejected,
        Outcome::PluginDropped,
        Outcome::Completed,
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::Abandoned,
        Outcome::OverBudget,
        Outcome::Cancelled,
        Outcome::Merged,
    ];

    /// Stable snake_case name used in logs, final statistics and replay output.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Invalid => "invalid",
            Outcome::Filtered => "filtered",
            Outcome::Duplicate => "duplicate",
            Outcome::Dropped => "dropped",
            Outcome::Rejected => "rejected",
            Outcome::PluginDropped => "plugin_dropped",
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Abandoned => "abandoned",
            Outcome::OverBudget => "over_budget",
            Outcome::Cancelled => "cancelled",
            Outcome::Merged => "merged",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lock-free counters: `received` plus one per outcome.
#[derive(Debug, Default)]
pub struct Counters {
    received: AtomicU64,
    outcomes: [AtomicU64; Outcome::ALL.len()],
    recovered: AtomicU64,
    deferred: AtomicU64,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, outcome: Outcome) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// An event a previous run left in the state store entered this run.
    pub(crate) fn recovered(&self) {
        self.recovered.fetch_add(1, Ordering::Relaxed);
    }

    /// An event left in the state store for the next run (no outcome here).
    pub(crate) fn deferred(&self) {
        self.deferred.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut outcomes = [0u64; Outcome::ALL.len()];
        for (i, c) in self.outcomes.iter().enumerate() {
            outcomes[i] = c.load(Ordering::Relaxed);
        }
        StatsSnapshot {
            received: self.received.load(Ordering::Relaxed),
            outcomes,
            recovered: self.recovered.load(Ordering::Relaxed),
            deferred: self.deferred.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Events received (each ends in exactly one outcome).
    pub received: u64,
    /// Events per outcome, indexed like [`Outcome::ALL`].
    pub outcomes: [u64; Outcome::ALL.len()],
    /// Events a previous run left in the state store (queued, or whose agent
    /// was interrupted) that entered this run; they were counted `received`
    /// by the run that received them.
    pub recovered: u64,
    /// Events this run left in the state store for the next run (queued at
    /// shutdown, or agents killed at shutdown): no outcome yet.
    pub deferred: u64,
}

impl StatsSnapshot {
    /// The count of one outcome.
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome.index()]
    }

    /// Events that reached an outcome (any).
    pub fn terminal(&self) -> u64 {
        self.outcomes.iter().sum()
    }

    /// Events received (or recovered) but not yet in a terminal outcome
    /// nor deferred to the next run.
    pub fn in_flight(&self) -> u64 {
        (self.received + self.recovered).saturating_sub(self.terminal() + self.deferred)
    }

    /// True when every event this run received or recovered has exactly
    /// one outcome, or was deferred to the next run (state store).
    pub fn adds_up(&self) -> bool {
        self.received + self.recovered == self.terminal() + self.deferred
    }

    /// `(name, value)` pairs in a stable order, `received` first.
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![("received", self.received)];
        v.extend(Outcome::ALL.iter().map(|o| (o.as_str(), self.get(*o))));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up() {
        let c = Counters::new();
        for o in Outcome::ALL {
            c.received();
            c.record(o);
        }
        c.received();
        let s = c.snapshot();
        assert_eq!(s.received, 14);
        assert_eq!(s.terminal(), 13);
        assert_eq!(s.in_flight(), 1);
        assert!(!s.adds_up());
        assert_eq!(s.fields()[0], ("received", 14));
        assert_eq!(s.fields().len(), 14);
        // Indices are distinct: each outcome has its own slot.
        for o in Outcome::ALL {
            assert_eq!(s.get(o), 1, "{o}");
        }
    }
}
