//! The `Stage` trait: one step of the ordered filter/transform chain.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use crate::event::Event;
use crate::outcome::Outcome;

/// What a stage decided about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the event unchanged.
    Pass,
    /// Keep the event; the stage modified it in place.
    Modified,
    /// Stop here. `outcome` is the terminal outcome to record (`Filtered`,
    /// `Duplicate`, `PluginDropped`, or `Invalid`).
    Drop {
        /// The terminal outcome to record.
        outcome: Outcome,
        /// Why, for the outcome's log line.
        reason: Cow<'static, str>,
    },
}

impl Verdict {
    /// A [`Verdict::Drop`] with `outcome` and `reason`.
    pub fn drop(outcome: Outcome, reason: impl Into<Cow<'static, str>>) -> Verdict {
        Verdict::Drop {
            outcome,
            reason: reason.into(),
        }
    }
}

/// A stage's answer: synchronous stages answer `Ready` without allocating;
/// stages that must wait return a boxed future.
pub enum StageFuture<'a> {
    /// The verdict, known at once.
    Ready(Verdict),
    /// The verdict, once the stage's future completes.
    Pending(Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>),
}

impl StageFuture<'_> {
    /// The verdict (awaits a pending one).
    pub async fn resolve(self) -> Verdict {
        match self {
            StageFuture::Ready(v) => v,
            StageFuture::Pending(f) => f.await,
        }
    }
}

/// A pipeline stage. Stages run in the order `pipeline.toml` lists them, on
/// one intake task, so `process` must be quick; a stage may mutate the event.
pub trait Stage: Send + Sync {
    /// The stage's name in logs and counters (e.g. `severity`, `wasm:deny-ns`).
    fn name(&self) -> &str;

    /// Decides what happens to `event` (it may modify it in place).
    fn process<'a>(&'a self, event: &'a mut Event) -> StageFuture<'a>;

    /// Called once for every event this stage passed, when that event reaches
    /// its terminal outcome (e.g. dedup releases "in flight" keys here).
    fn finished(&self, _event: &Event, _outcome: Outcome) {}

    /// The runner keeps durable state: `scope` is this stage's share of the
    /// store and `entries` what it held when the previous run ended. Called
    /// once before the first event; stages without state ignore it.
    fn attach_state(&self, _scope: crate::state::StateScope, _entries: Vec<(Vec<u8>, Vec<u8>)>) {}

    /// An event this stage passed in a previous run is in flight again
    /// (recovered from the state store, queued or re-run). It gets
    /// [`finished`](Self::finished) like any other (dedup marks its key in
    /// flight here; a grouping stage reopens the event's incident and sets
    /// its `group`).
    fn readmitted(&self, _event: &mut Event) {}

    /// Plugin health for operators (metrics, status): errors so far and
    /// whether the stage disabled itself. Built-in stages have none.
    fn health(&self) -> StageHealth {
        StageHealth::default()
    }
}

/// See [`Stage::health`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageHealth {
    /// Failed calls (timeouts, traps, memory limits, error results).
    pub errors: u64,
    /// The stage disabled itself (too many consecutive errors).
    pub disabled: bool,
    /// Whether this is a plugin stage (the counters below are kept).
    pub plugin: bool,
    /// Plugin calls made (failed ones included).
    pub calls: u64,
    /// Time spent in plugin calls, summed, and the longest single call.
    pub call_nanos: u64,
    /// The longest single call.
    pub max_call_nanos: u64,
}
