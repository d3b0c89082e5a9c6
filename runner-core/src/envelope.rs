//! An event in flight, with the bookkeeping the runtime needs.

use std::sync::Arc;

use tokio::time::Instant;

use crate::event::Event;

/// An [`Event`] with its sequence number, source, arrival time and budget charge.
#[derive(Debug)]
pub struct Envelope {
    /// Process-unique sequence number, assigned at intake (arrival order).
    pub seq: u64,
    /// The validated event (stages may modify it).
    pub event: Event,
    /// Name of the source that produced it.
    pub source: Arc<str>,
    /// When intake received it (queue and run durations start here).
    pub received_at: Instant,
    /// Number of stages the event has passed (for `Stage::finished`).
    pub passed_stages: usize,
    /// Payload bytes charged to the byte budget at intake; the recorder
    /// releases them with the terminal outcome (0 when not charged).
    pub bytes: usize,
    /// When the chain started on it and when it passed the last stage (for
    /// the per-phase timings an agent sink reports); `None` where an event
    /// did not come through the chain (recovered from the state store).
    pub chain: Option<ChainTimes>,
}

/// Two clock reads per event on the chain; see [`Envelope::chain`].
#[derive(Debug, Clone, Copy)]
pub struct ChainTimes {
    /// Taken off the intake queue: `received_at` to here is the intake wait.
    pub started: Instant,
    /// Passed every stage (parse, validation and stages took `passed - started`);
    /// from here it waits in the router.
    pub passed: Instant,
}

impl Envelope {
    /// The event's identity as a tracing span named `event`: `seq`,
    /// `source`, `fault_id`, `cluster`, `namespace`, `resource`
    /// (`kind/name`) and `severity`. Every log line about one event is
    /// written inside it, so the identity is listed once, here; a JSON log
    /// line carries it under `span`, a text line as `event{…}:`.
    ///
    /// At ERROR level so that no log level hides the identity of a line
    /// written inside it. An enabled span costs an allocation: build it
    /// where a line is written (after checking that the line's level is
    /// enabled) or around a sink call, not for every event.
    pub(crate) fn span(&self) -> tracing::Span {
        let e = &self.event;
        tracing::error_span!(
            target: "audit",
            "event",
            seq = self.seq,
            source = %self.source,
            fault_id = e.fault_id_or_dash(),
            cluster = %e.cluster,
            namespace = %e.resource.namespace,
            resource = %format_args!("{}/{}", e.resource.kind, e.resource.name),
            severity = e.severity.as_str(),
        )
    }
}
