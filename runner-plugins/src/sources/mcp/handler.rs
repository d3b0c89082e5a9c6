//! The rmcp client handler: a non-blocking hand-off of each notification.
//!
//! rmcp spawns one task per incoming notification with no backpressure
//! (docs/mcp-events-protocol.md, "Client side"), so the handler never awaits: fault payloads go to
//! `Intake::submit` (a `try_send`; a full intake queue rejects and counts),
//! everything else is counted or raises a session signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rmcp::ClientHandler;
#[allow(deprecated)]
use rmcp::model::LoggingMessageNotificationParam;
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::{NotificationContext, RoleClient};
use runner_core::Intake;
use tokio_util::sync::CancellationToken;

use super::watch::StreamWatchState;

/// The protocol version the events server speaks (rmcp's default
/// 2026-07-28 has no sessions, and notifications never arrive; see
/// docs/mcp-events-protocol.md).
pub(crate) const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::V_2025_11_25;

pub(crate) const SUBSCRIPTION_ERROR_LOGGER: &str = "kubernetes/subscription_error";

/// State shared by every session of one source.
pub(crate) struct SourceShared {
    pub intake: Intake,
    pub source: Arc<str>,
    pub cluster_fill: Option<Arc<str>>,
    /// `kubernetes/<mode>`.
    pub logger: String,
    /// Payloads handed to the intake.
    pub submitted: AtomicU64,
    /// Notifications from other loggers (ignored).
    pub other_loggers: AtomicU64,
    /// Connection state for readiness and metrics.
    pub status: Arc<runner_core::status::SourceStatus>,
}

/// Signals from inside one session (handler, GET-stream watch) to the
/// session's supervisor loop. The first reason wins.
#[derive(Default)]
pub(crate) struct SessionSignals {
    trouble: CancellationToken,
    reason: Mutex<Option<String>>,
    /// Set once `events_subscribe` succeeded.
    pub subscription_id: OnceLock<String>,
    /// Openings and ends of the GET stream (see `watch.rs`).
    pub stream: StreamWatchState,
}

impl std::fmt::Debug for SessionSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSignals")
            .field("raised", &self.trouble.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl SessionSignals {
    pub(crate) fn raise(&self, reason: impl Into<String>) {
        let mut r = self.reason.lock().expect("signal lock");
        if r.is_none() {
            *r = Some(reason.into());
        }
        drop(r);
        self.trouble.cancel();
    }
    pub(crate) async fn raised(&self) -> String {
        self.trouble.cancelled().await;
        self.reason
            .lock()
            .expect("signal lock")
            .clone()
            .unwrap_or_default()
    }
}

#[derive(Clone)]
pub(crate) struct Handler {
    pub shared: Arc<SourceShared>,
    pub signals: Arc<SessionSignals>,
}

impl Handler {
    #[allow(deprecated)]
    fn on_message(&self, p: LoggingMessageNotificationParam) {
        let logger = p.logger.as_deref().unwrap_or("");
        if logger == self.shared.logger {
            self.shared.submitted.fetch_add(1, Ordering::Relaxed);
            self.shared.intake.submit(
                p.data,
                &self.shared.source,
                self.shared.cluster_fill.as_ref(),
            );
        } else if logger == SUBSCRIPTION_ERROR_LOGGER {
            let sub = p
                .data
                .get("subscriptionId")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let ours = self.signals.subscription_id.get().map(String::as_str);
            tracing::warn!(
                source = %self.shared.source,
                subscription_id = sub,
                // Recorded as str (escaped by the formatter), never `%`.
                error = p.data.get("error").and_then(|v| v.as_str()).unwrap_or(""),
                "subscription error reported by the server"
            );
            // Stale ids (old sessions) are noise; ours means it is degraded.
            if ours.is_none() || ours == Some(sub) {
                self.signals
                    .raise(format!("server reported a subscription error for {sub}"));
            }
        } else {
            self.shared.other_loggers.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(source = %self.shared.source, logger, "ignored notification from another logger");
        }
    }
}

impl ClientHandler for Handler {
    #[allow(deprecated)]
    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.on_message(params);
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("event-runner", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(PROTOCOL_VERSION)
    }
}
