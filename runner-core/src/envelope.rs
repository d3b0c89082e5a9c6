//! An event in flight, with the bookkeeping the runtime needs.

use std::sync::Arc;

use tokio::time::Instant;

use crate::event::Event;

#[derive(Debug)]
pub struct Envelope {
    /// Process-unique sequence number, assigned at intake (arrival order).
    pub seq: u64,
    pub event: Event,
    /// Name of the source that produced it.
    pub source: Arc<str>,
    pub received_at: Instant,
    /// Number of stages the event has passed (for `Stage::finished`).
    pub passed_stages: usize,
    /// Payload bytes charged to the byte budget at intake; the recorder
    /// releases them with the terminal outcome (0 when not charged).
    pub bytes: usize,
}
