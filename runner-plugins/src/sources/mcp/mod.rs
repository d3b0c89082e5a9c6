//! `kind = "mcp"`: subscribes to Kubernetes fault notifications of an
//! events-enabled kubernetes-mcp-server over MCP Streamable HTTP (rmcp).
//!
//! The source owns its connection lifecycle (docs/mcp-events-protocol.md
//! says what it relies on): every attempt is a fresh session (initialize →
//! GET stream open → setLevel → subscribe), the GET stream is watched (a
//! reopened stream is followed at once by a subscription check, see
//! `watch.rs`), liveness is checked actively (ping,
//! `events_list_subscriptions`) because the server sends no heartbeats and
//! cancels subscriptions silently, and transient failures are retried
//! forever with exponential backoff. Only what retrying cannot fix is
//! fatal: wrong credentials at startup, a server without event streaming, a
//! mode or filters the server rejects, a server that needs another
//! transport (listed in docs/ARCHITECTURE.md).
//!
//! Runtime choice: sources run on a small pool of current-thread runtimes,
//! one OS thread each (as many as cores, at most [`MAX_SOURCE_THREADS`]),
//! shared by every MCP source of the process; a source stays on the runtime
//! it was given. rmcp spawns one task per notification; on the multi-thread
//! runtime a few percent were handled out of order, on a current-thread
//! runtime none are (its tasks run in the order they were spawned), so
//! payloads reach the intake in the order the server sent them. Sharing the
//! runtimes keeps 500 sources from costing 500 threads and runtimes (see
//! docs/performance.md). The hand-off into the intake is a non-blocking
//! `try_send`, which works across runtimes.

pub(crate) mod config;
pub(crate) mod handler;
pub(crate) mod session;
pub(crate) mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use runner_core::{Source, SourceContext, SourceError};
use tokio_util::sync::CancellationToken;

use crate::retry::Backoff;
pub use config::McpSourceConfig;
use handler::SourceShared;
use session::{Attempt, Cause, End};

/// Longest honoured `Retry-After` (a broken server must not park us for days).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

pub(crate) struct McpSource {
    cfg: McpSourceConfig,
}

impl McpSource {
    pub(crate) fn new(cfg: McpSourceConfig) -> Self {
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
        let handle = match source_runtime() {
            Ok(h) => h,
            Err(message) => {
                return Err(SourceError {
                    source_name: name,
                    message,
                });
            }
        };
        // Aborted if this future is dropped, so the session never outlives
        // the pipeline that started it.
        let mut task = AbortOnDrop(handle.spawn(supervise(cfg, ctx)));
        match (&mut task.0).await {
            Ok(r) => r,
            Err(e) => Err(SourceError {
                source_name: name,
                message: if e.is_panic() {
                    let p = e.into_panic();
                    let text = p
                        .downcast_ref::<&str>()
                        .copied()
                        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
                        .unwrap_or("(non-string panic payload)");
                    format!("the source task panicked: {text}")
                } else {
                    "the source task was cancelled".into()
                },
            }),
        }
    }
}

/// Most threads the MCP sources of one process run on.
pub(crate) const MAX_SOURCE_THREADS: usize = 4;

struct AbortOnDrop(tokio::task::JoinHandle<Result<(), SourceError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next runtime of the shared pool (round robin), started on first use.
fn source_runtime() -> Result<tokio::runtime::Handle, String> {
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicUsize;
    static POOL: OnceLock<Result<Vec<tokio::runtime::Handle>, String>> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let pool = POOL.get_or_init(|| {
        let n = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_SOURCE_THREADS);
        (0..n).map(start_source_thread).collect()
    });
    let pool = pool.as_ref().map_err(Clone::clone)?;
    Ok(pool[NEXT.fetch_add(1, Ordering::Relaxed) % pool.len()].clone())
}

/// One thread driving a current-thread runtime for the life of the process.
fn start_source_thread(i: usize) -> Result<tokio::runtime::Handle, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the source runtime: {e}"))?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name(format!("mcp-sources-{i}"))
        .spawn(move || rt.block_on(std::future::pending::<()>()))
        .map_err(|e| format!("cannot start the source thread: {e}"))?;
    Ok(handle)
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
        endpoint = %runner_core::config::mask_url(&cfg.endpoint),
        mode = %cfg.mode,
        token = %cfg.token_origin,
        "MCP source starting"
    );
    let mut backoff = Backoff::new(cfg.reconnect_initial, cfg.reconnect_max);
    let mut attempt: u64 = 0;
    // Consecutive attempts that never got a subscription.
    let mut failures: u32 = 0;
    let mut ever_subscribed = false;
    let mut last_cause = Cause::Other;
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
        let (reason, subscribed_for, retry_after, cause) = match end {
            End::Retry {
                reason,
                subscribed_for,
                retry_after,
                cause,
            } => (reason, subscribed_for, retry_after, cause),
            other => break other,
        };
        // A session that subscribed worked: the next one starts from the
        // initial delay however short it was (a flapping server that
        // delivers each time is reconnected quickly); attempts that never
        // subscribe keep growing the delay.
        if subscribed_for.is_some() {
            ever_subscribed = true;
            backoff.reset();
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
        }
        if subscribed_for.is_some() {
            last_cause = Cause::Other;
        }
        // A refused connection after the server worked is a restart, not
        // a configuration mistake.
        let cause = match cause {
            Cause::Refused if ever_subscribed => Cause::Other,
            c => c,
        };
        if cause != last_cause {
            explain(&cfg, cause);
            last_cause = cause;
        }
        let delay = backoff.next_after(retry_after, MAX_RETRY_AFTER);
        let delay_ms = delay.as_millis() as u64;
        if subscribed_for.is_some() {
            tracing::warn!(
                source = %cfg.name,
                next_attempt = attempt + 1,
                delay_ms,
                subscribed_ms = subscribed_for.map_or(0, |d| d.as_millis() as u64),
                reason = %reason,
                "MCP session lost; reconnecting with a fresh session"
            );
        } else if failures >= cfg.failure_alert_after {
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
                "MCP session could not be established; retrying"
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

/// A line of its own for failures that look like a configuration mistake
/// rather than a flaky network, once each time the cause appears.
fn explain(cfg: &McpSourceConfig, cause: Cause) {
    let url = reqwest::Url::parse(&cfg.endpoint).ok();
    match cause {
        Cause::Other => {}
        Cause::NotFound => tracing::warn!(
            source = %cfg.name,
            endpoint = %runner_core::config::mask(&cfg.endpoint),
            // The path is no secret and is what is wrong here.
            path = url.as_ref().map_or("", |u| u.path()),
            "the MCP endpoint answered 404 Not Found to initialize: wrong path? \
             (the events server serves MCP at /mcp); still retrying"
        ),
        Cause::Refused => tracing::warn!(
            source = %cfg.name,
            endpoint = %runner_core::config::mask(&cfg.endpoint),
            port = url.as_ref().and_then(|u| u.port_or_known_default()).unwrap_or(0),
            "nothing accepts connections at the MCP endpoint (connection refused): \
             is the events server running there with --port? still retrying"
        ),
    }
}
