//! Event Runner core: the event model, the `Source`/`Stage`/`Sink` traits,
//! outcomes and counters, the cluster router and the pipeline runtime.
//!
//! This crate knows no concrete plugin. See `docs/ARCHITECTURE.md`.

// Every public item is API for the other crates: say what it is for.
#![warn(missing_docs)]

mod catch;
pub mod config;
pub mod date;
pub mod envelope;
pub mod event;
pub mod group;
pub mod outcome;
pub mod pipeline;
pub mod record;
pub mod router;
pub mod severity;
pub mod sink;
pub mod source;
pub mod stage;
pub mod state;
pub mod status;
pub mod text;

pub use envelope::{ChainTimes, Envelope};
pub use event::{Event, InvalidEvent, Resource, Shape};
pub use outcome::{Counters, Outcome, StatsSnapshot};
pub use record::Recorder;
pub use severity::Severity;
pub use sink::{Sink, SinkResult, UsageTotals};
pub use source::{
    CancelRequest, Intake, IntakeItem, Queued, RawPayload, Source, SourceContext, SourceError,
};
pub use stage::{Stage, StageFuture, Verdict};
pub use tokio_util::sync::CancellationToken;
