//! `kind = "mcp"`: subscribes to Kubernetes fault notifications of an
//! events-enabled kubernetes-mcp-server over MCP Streamable HTTP (rmcp).
//!
//! The source owns its connection lifecycle (protocol doc §5): every attempt
//! is a fresh session (initialize → setLevel → subscribe), liveness is
//! checked actively (ping, `events_list_subscriptions`) because the server
//! sends no heartbeats and cancels subscriptions silently, and transient
//! failures are retried forever with exponential backoff. Only wrong
//! credentials at startup and a server without event streaming are fatal.
//!
//! Runtime choice: each source runs on its own current-thread runtime in a
//! dedicated OS thread. rmcp spawns one task per notification; on the
//! multi-thread runtime a few percent were handled out of order
//! (stack-notes), on a current-thread runtime none are, so payloads reach
//! the intake in the order the server sent them. The hand-off into the
//! intake is a non-blocking `try_send`, which works across runtimes.

pub mod backoff;
pub mod config;
pub mod handler;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use runner_core::{Source, SourceContext, SourceError};
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
pub use config::McpSourceConfig;
use handler::SourceShared;
use session::{Attempt, End};

/// Longest honoured `Retry-After` (a broken server must not park us for days).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

pub struct McpSource {
    cfg: McpSourceConfig,
}

impl McpSource {
    pub fn new(cfg: McpSourceConfig) -> Self {
        McpSource { cfg }
    }
}

#[async_trait]
impl Source for McpSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let cfg = self.cfg;
        let name = cfg.name.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("mcp-{name}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(SourceError {
                            source_name: cfg.name.clone(),
                            message: format!("cannot start the source runtime: {e}"),
                        }));
                        return;
                    }
                };
                let r = rt.block_on(supervise(cfg, ctx));
                let _ = tx.send(r);
            });
        if let Err(e) = spawned {
            return Err(SourceError {
                source_name: name,
                message: format!("cannot start the source thread: {e}"),
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(SourceError {
                source_name: name,
                message: "the source thread panicked".into(),
            })
        })
    }
}

/// The reconnect loop: one fresh session per attempt, forever.
async fn supervise(cfg: McpSourceConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let shared = Arc::new(SourceShared {
        intake: ctx.intake,
        source: Arc::from(cfg.name.as_str()),
        cluster_fill: cfg.cluster.as_deref().map(Arc::from),
        logger: cfg.logger(),
        submitted: AtomicU64::new(0),
        other_loggers: AtomicU64::new(0),
        status: ctx.status,
    });
    let shutdown: CancellationToken = ctx.shutdown;
    let http = match reqwest::Client::builder()
        .connect_timeout(cfg.request_timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return Err(SourceError {
                source_name: cfg.name.clone(),
                message: format!("cannot build the HTTP client: {e}"),
            });
        }
    };
    tracing::info!(
        source = %cfg.name,
        endpoint = %runner_core::config::mask(&cfg.endpoint),
        mode = %cfg.mode,
        token = %cfg.token_origin,
        "MCP source starting"
    );
    let mut backoff = Backoff::new(cfg.reconnect_initial, cfg.reconnect_max);
    let mut attempt: u64 = 0;
    let mut failures: u32 = 0;
    let mut ever_subscribed = false;
    let end = loop {
        attempt += 1;
        shared.status.connecting();
        let end = Attempt {
            cfg: &cfg,
            shared: &shared,
            http: &http,
            number: attempt,
            shutdown: &shutdown,
            startup: !ever_subscribed,
        }
        .run()
        .await;
        let (reason, subscribed_for, retry_after) = match end {
            End::Retry {
                reason,
                subscribed_for,
                retry_after,
            } => (reason, subscribed_for, retry_after),
            other => break other,
        };
        if let Some(d) = subscribed_for {
            ever_subscribed = true;
            if d >= cfg.healthy_after {
                backoff.reset();
                failures = 0;
            }
        }
        failures = failures.saturating_add(1);
        let mut delay = backoff.next_delay();
        if let Some(after) = retry_after {
            delay = delay.max(after.min(MAX_RETRY_AFTER));
        }
        let delay_ms = delay.as_millis() as u64;
        if failures >= cfg.failure_alert_after {
            tracing::error!(
                source = %cfg.name,
                next_attempt = attempt + 1,
                delay_ms,
                consecutive_failures = failures,
                reason = %reason,
                "MCP session failed repeatedly; still retrying"
            );
        } else {
            tracing::warn!(
                source = %cfg.name,
                next_attempt = attempt + 1,
                delay_ms,
                consecutive_failures = failures,
                reason = %reason,
                "MCP session lost; reconnecting with a fresh session"
            );
        }
        shared.status.backoff(delay, &reason);
        tokio::select! {
            _ = shutdown.cancelled() => break End::Shutdown,
            _ = tokio::time::sleep(delay) => {}
        }
    };
    tracing::info!(
        source = %cfg.name,
        submitted = shared.submitted.load(Ordering::Relaxed),
        other_loggers = shared.other_loggers.load(Ordering::Relaxed),
        sessions = attempt,
        "MCP source stopped"
    );
    match end {
        End::Fatal(message) => Err(SourceError {
            source_name: cfg.name.clone(),
            message,
        }),
        _ => Ok(()),
    }
}
