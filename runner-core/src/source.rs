//! The `Source` trait and the intake hand-off every source uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::outcome::Outcome;
use crate::record::Recorder;
use crate::status::SourceStatus;

/// A payload as it arrived, before parsing.
#[derive(Debug)]
pub struct RawPayload {
    /// The payload's JSON.
    pub data: Value,
    /// The name of the source that received it.
    pub source: Arc<str>,
    /// Cluster name to use when the payload's `cluster` is empty.
    pub cluster_fill: Option<Arc<str>>,
    /// When it arrived.
    pub received_at: Instant,
}

/// A payload in the intake queue with the bytes charged for it.
#[derive(Debug)]
pub struct Queued {
    /// The payload.
    pub raw: RawPayload,
    /// Charged to the recorder's byte budget; released with the outcome.
    pub bytes: usize,
}

/// A source's request to withdraw the events it sent earlier under one
/// fault id (an alert that resolved). It is not an event: never counted as
/// received. Queued events that match end `cancelled`; a running one is
/// only noted (see `Router::cancel`).
#[derive(Debug, Clone)]
pub struct CancelRequest {
    /// The source whose events it withdraws.
    pub source: Arc<str>,
    /// The fault id they were sent under.
    pub fault_id: String,
    /// Why, for the audit line and the incident (e.g. "alert resolved at …").
    pub reason: String,
}

/// What travels through the intake queue. Cancellations share the queue
/// with payloads so they are applied in the order the source sent them: a
/// cancel can never overtake the event it withdraws.
#[derive(Debug)]
pub enum IntakeItem {
    /// A payload to parse and filter.
    Payload(Queued),
    /// A withdrawal of earlier payloads.
    Cancel(CancelRequest),
}

/// Non-blocking hand-off from sources into the pipeline's bounded intake
/// queue. Counting happens here so every source is accounted the same way.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<IntakeItem>,
    recorder: Arc<Recorder>,
    /// Payloads queued and not yet taken by the intake task (readiness).
    depth: Arc<AtomicUsize>,
    /// The submitting source's status (per-source counts, last event).
    status: Option<Arc<SourceStatus>>,
}

impl Intake {
    /// An intake feeding `tx` and counting into `recorder`.
    pub fn new(tx: mpsc::Sender<IntakeItem>, recorder: Arc<Recorder>) -> Self {
        Intake {
            tx,
            recorder,
            depth: Arc::new(AtomicUsize::new(0)),
            status: None,
        }
    }

    /// The same intake, counting into `status` for one source.
    pub fn for_source(&self, status: Arc<SourceStatus>) -> Intake {
        Intake {
            status: Some(status),
            ..self.clone()
        }
    }

    /// Shared depth counter: the consumer subtracts what it took.
    pub(crate) fn depth(&self) -> Arc<AtomicUsize> {
        self.depth.clone()
    }

    /// Counts a payload the source refused before it could become an event
    /// (a body that is not the source's format) as received and `invalid`.
    pub fn invalid(&self, source: &Arc<str>, reason: &str) {
        self.refused(source, Outcome::Invalid, reason);
    }

    /// Counts a payload the source recognised as a repeat of one it already
    /// handed over (same alert, same firing episode) as received and
    /// `duplicate`, without using intake space.
    pub fn duplicate(&self, source: &Arc<str>, reason: &str) {
        self.refused(source, Outcome::Duplicate, reason);
    }

    fn refused(&self, source: &Arc<str>, outcome: Outcome, reason: &str) {
        self.recorder.received();
        if let Some(st) = &self.status {
            st.event();
        }
        self.recorder
            .finish_raw(None, source, outcome, "intake", reason);
    }

    /// Queues a cancellation (see [`CancelRequest`]). Never waits: `false`
    /// when the intake queue is full or closed (the source should make its
    /// sender retry). Nothing is counted: a cancellation is not an event.
    pub fn cancel(&self, source: &Arc<str>, fault_id: &str, reason: &str) -> bool {
        let req = CancelRequest {
            source: source.clone(),
            fault_id: fault_id.to_string(),
            reason: reason.to_string(),
        };
        self.depth.fetch_add(1, Ordering::Relaxed);
        let ok = self.tx.try_send(IntakeItem::Cancel(req)).is_ok();
        if !ok {
            self.depth.fetch_sub(1, Ordering::Relaxed);
        }
        ok
    }

    /// Counts the payload as received and queues it. Never waits: when the
    /// intake queue is full the payload is `rejected` (logged and counted),
    /// so a flood cannot pile up tasks or memory in the transport.
    ///
    /// Memory is bounded by bytes too: a payload over
    /// [`max_payload_bytes`](crate::event::max_payload_bytes) is `invalid`
    /// (the reason gives its size), and one that does not fit in the byte
    /// budget of events in flight is `rejected`.
    pub fn submit(&self, data: Value, source: &Arc<str>, cluster_fill: Option<&Arc<str>>) -> bool {
        self.recorder.received();
        if let Some(st) = &self.status {
            st.event();
        }
        let bytes = crate::event::json_size(&data);
        let max = crate::event::max_payload_bytes();
        if bytes > max {
            drop(data);
            let why =
                format!("payload too large: {bytes} bytes (maximum {max}, MAX_PAYLOAD_BYTES)");
            self.recorder
                .finish_raw(None, source, Outcome::Invalid, "intake", &why);
            return false;
        }
        if !self.recorder.try_charge(bytes) {
            drop(data);
            let (used, budget) = self.recorder.bytes();
            let why = format!(
                "payload byte budget full: {used} of {budget} bytes held by queued and running events, this payload has {bytes} (PAYLOAD_BUDGET_BYTES)"
            );
            self.recorder
                .finish_raw(None, source, Outcome::Rejected, "intake", &why);
            return false;
        }
        let raw = RawPayload {
            data,
            source: source.clone(),
            cluster_fill: cluster_fill.cloned(),
            received_at: Instant::now(),
        };
        // Counted before the send so the consumer never sees it negative.
        self.depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(IntakeItem::Payload(Queued { raw, bytes })) {
            Ok(()) => true,
            Err(e) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                self.recorder.release(bytes);
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "intake queue full",
                    mpsc::error::TrySendError::Closed(_) => "intake closed (shutting down)",
                };
                let outcome = if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    Outcome::Rejected
                } else {
                    Outcome::Abandoned
                };
                self.recorder
                    .finish_raw(None, source, outcome, "intake", why);
                false
            }
        }
    }
}

/// What a source gets to run with.
pub struct SourceContext {
    /// Where the source hands in payloads.
    pub intake: Intake,
    /// Cancelled when intake stops (shutdown): close sessions and return.
    pub shutdown: CancellationToken,
    /// Report connection state here (subscribed, backoff, sessions): it
    /// feeds readiness and metrics. Payloads are counted by the intake.
    pub status: Arc<SourceStatus>,
}

/// A fatal source error ends the runner with a non-zero exit (wrong
/// credentials, a server without event streaming). Transient problems are
/// the source's own business (retry with backoff) and never surface here.
#[derive(Debug, Clone, thiserror::Error)]
#[error("source {source_name}: {message}")]
pub struct SourceError {
    /// The source's name.
    pub source_name: String,
    /// What went wrong.
    pub message: String,
}

/// Something that produces fault payloads (an MCP session, a webhook).
#[async_trait]
pub trait Source: Send {
    /// The source's name, for logs, counters and the `source` of its payloads.
    fn name(&self) -> &str;

    /// Runs until `ctx.shutdown` is cancelled (then returns `Ok`) or a fatal
    /// error. Owns its connection lifecycle: reconnects, liveness, backoff.
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError>;
}
