//! One session attempt: a fresh transport and service, initialize →
//! `logging/setLevel` → `events_subscribe`, then liveness checks until the
//! session is lost, the server fails fatally, or shutdown.

use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientRequest, PingRequest};
#[allow(deprecated)]
use rmcp::model::{LoggingLevel, SetLevelRequestParams};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use serde_json::{Map, Value};
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tokio_util::sync::CancellationToken;

use super::config::McpSourceConfig;
use super::handler::{Handler, SessionSignals, SourceShared};
use super::watch::{StreamRetry, WatchedClient};
use crate::retry::parse_retry_after;

/// Tries of one liveness request before the session is given up.
const LIVENESS_ATTEMPTS: u32 = 3;
const LIVENESS_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How long a lost GET stream may stay closed before the session is
/// replaced (rmcp reopens it at once when it can; capped by
/// `request_timeout`).
const REOPEN_WAIT: Duration = Duration::from_secs(3);
/// Reopens less than `RAPID_REOPEN` apart, more than `MAX_RAPID_REOPENS`
/// times in a row: the stream keeps closing, start a fresh session (which
/// goes through the backoff) instead of reopening it in a tight loop.
const RAPID_REOPEN: Duration = Duration::from_secs(1);
const MAX_RAPID_REOPENS: u32 = 5;

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// How a session ended.
#[derive(Debug)]
pub(crate) enum End {
    Shutdown,
    /// Transient: start a fresh session after a delay.
    Retry {
        reason: String,
        /// How long the session was subscribed (None: never got there).
        subscribed_for: Option<Duration>,
        /// A server-requested minimum delay (429 Retry-After).
        retry_after: Option<Duration>,
        /// A failure worth its own explanation (wrong path, nothing listening).
        cause: Cause,
    },
    /// Retrying cannot help (wrong credentials, no event streaming).
    Fatal(String),
}

/// Failures that are more likely a configuration mistake than a flaky
/// network: the supervisor says so in a line of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    Other,
    /// HTTP 404 to `initialize`: nothing serves MCP at that path.
    NotFound,
    /// TCP connection refused: nothing listens at that host and port.
    Refused,
}

/// What an error means for the reconnect loop.
#[derive(Debug, PartialEq)]
pub(crate) enum Failure {
    /// 401/403: the credentials are wrong.
    Auth(String),
    RateLimited(Option<Duration>),
    /// 404 on a known session: the server forgot it (restart).
    SessionGone,
    /// 404 without a session (to `initialize`): wrong endpoint path.
    NotFound(String),
    /// The TCP connection was refused.
    Refused(String),
    Other(String),
}

/// Classifies a transport error by walking its source chain.
pub(crate) fn classify(err: &(dyn std::error::Error + 'static)) -> Failure {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    // The root cause reads best ("Connection refused (os error 111)");
    // the outer layers repeat rmcp's generic transport type names.
    let mut text = String::new();
    while let Some(e) = cur {
        text = e.to_string();
        if let Some(h) = e.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
            match h {
                StreamableHttpError::AuthRequired(_) => return Failure::Auth("HTTP 401".into()),
                StreamableHttpError::InsufficientScope(_) => {
                    return Failure::Auth("HTTP 403".into());
                }
                StreamableHttpError::HttpStatus(s) if s.status == 429 => {
                    return Failure::RateLimited(
                        s.retry_after.as_deref().and_then(parse_retry_after),
                    );
                }
                StreamableHttpError::SessionExpired => return Failure::SessionGone,
                StreamableHttpError::UnexpectedServerResponse(m)
                    if m.starts_with("HTTP 401") || m.starts_with("HTTP 403") =>
                {
                    return Failure::Auth(m.chars().take(200).collect());
                }
                StreamableHttpError::UnexpectedServerResponse(m) if m.starts_with("HTTP 404") => {
                    return Failure::NotFound(m.trim_end().chars().take(200).collect());
                }
                // `Client` does not expose its reqwest error as a source.
                StreamableHttpError::Client(inner) => {
                    cur = Some(inner);
                    continue;
                }
                _ => {}
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return Failure::Refused(io.to_string());
        }
        cur = e.source();
    }
    Failure::Other(text)
}

fn classify_service(e: &ServiceError) -> Failure {
    match e {
        ServiceError::TransportSend(t) => classify(t.error.as_ref()),
        other => Failure::Other(other.to_string()),
    }
}

fn retry(reason: impl Into<String>, subscribed_at: Option<Instant>) -> End {
    End::Retry {
        reason: reason.into(),
        subscribed_for: subscribed_at.map(|t| t.elapsed()),
        retry_after: None,
        cause: Cause::Other,
    }
}

/// Turns a failure into an end; `startup` makes credential errors fatal.
fn end_for(f: Failure, what: &str, startup: bool, subscribed_at: Option<Instant>) -> End {
    match f {
        Failure::Auth(m) if startup => End::Fatal(format!(
            "the MCP server rejected the credentials ({m}) during {what}; check the bearer token \
             (token_env / token_file, MCP_TOKEN / MCP_TOKEN_FILE): retrying will not help"
        )),
        Failure::Auth(m) => {
            tracing::error!(
                during = what,
                "MCP server rejected the credentials ({m}); retrying"
            );
            retry(format!("{what}: credentials rejected ({m})"), subscribed_at)
        }
        Failure::RateLimited(after) => End::Retry {
            reason: format!("{what}: rate limited (HTTP 429)"),
            subscribed_for: subscribed_at.map(|t| t.elapsed()),
            retry_after: after,
            cause: Cause::Other,
        },
        Failure::NotFound(m) => End::Retry {
            reason: format!("{what}: the endpoint answered {m}"),
            subscribed_for: subscribed_at.map(|t| t.elapsed()),
            retry_after: None,
            cause: Cause::NotFound,
        },
        Failure::Refused(m) => End::Retry {
            reason: format!("{what}: connection refused ({m})"),
            subscribed_for: subscribed_at.map(|t| t.elapsed()),
            retry_after: None,
            cause: Cause::Refused,
        },
        Failure::SessionGone => retry(
            format!("{what}: session not found (HTTP 404, server restarted?)"),
            subscribed_at,
        ),
        Failure::Other(m) => retry(format!("{what}: {m}"), subscribed_at),
    }
}

/// Message for a server without `events_subscribe` (upstream build).
pub(crate) fn no_event_streaming(endpoint: &str, detail: &str) -> String {
    format!(
        "the MCP server at {} lacks event streaming (no events_subscribe tool: {detail}); \
         this is the upstream kubernetes-mcp-server. Run the events-enabled build \
         (kubernetes-mcp-server-with-events fork) started with --port",
        runner_core::config::mask_url(endpoint)
    )
}

/// The JSON object between the first `{` and the last `}` of a tool text.
pub(crate) fn json_in_text(text: &str) -> Option<Value> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    if end < start {
        return None;
    }
    serde_json::from_str(&text[start..=end]).ok()
}

fn result_text(r: &rmcp::model::CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One liveness request, retried: a single failed request (a pooled
/// connection closed under a burst, a 502 from a proxy) is no proof that the
/// session or its GET stream is gone. Definite answers (404 session gone,
/// 401/403, 429, rmcp's transport closed) end the session at once; other
/// failures only after `LIVENESS_ATTEMPTS` tries or once `rt` has passed
/// since the first, so a frozen server is still given up after one timeout.
async fn probe<T, F, Fut>(source: &str, rt: Duration, what: &str, mut call: F) -> Result<T, End>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ServiceError>>,
{
    let first = Instant::now();
    let mut attempt = 1u32;
    loop {
        let failure = match timeout(rt, call()).await {
            Ok(Ok(v)) => return Ok(v),
            Err(_) => Failure::Other(format!("timed out after {rt:?}")),
            Ok(Err(ServiceError::TransportClosed)) => {
                return Err(retry(format!("{what}: MCP transport closed"), None));
            }
            Ok(Err(e)) => classify_service(&e),
        };
        let definite = matches!(
            failure,
            Failure::Auth(_) | Failure::SessionGone | Failure::RateLimited(_)
        );
        if definite || attempt >= LIVENESS_ATTEMPTS || first.elapsed() >= rt {
            return Err(end_for(failure, what, false, None));
        }
        tracing::info!(
            source,
            request = what,
            attempt,
            error = ?failure,
            "liveness request failed; retrying before giving up the session"
        );
        attempt += 1;
        tokio::time::sleep(LIVENESS_RETRY_PAUSE).await;
    }
}

pub(crate) struct Attempt<'a> {
    pub cfg: &'a McpSourceConfig,
    pub shared: &'a Arc<SourceShared>,
    pub http: &'a reqwest::Client,
    pub number: u64,
    pub shutdown: &'a CancellationToken,
    /// No session has subscribed yet: credential errors are fatal.
    pub startup: bool,
}

impl Attempt<'_> {
    pub(crate) async fn run(self) -> End {
        let signals = Arc::new(SessionSignals::default());
        let mut tcfg = StreamableHttpClientTransportConfig::with_uri(self.cfg.endpoint.as_str())
            // A silently re-initialized session has no level and no
            // subscription (docs/mcp-events-protocol.md, "Client side"):
            // surface the 404 instead.
            .reinit_on_expired_session(false);
        tcfg.retry_config = Arc::new(StreamRetry(signals.clone()));
        if let Some(t) = &self.cfg.token {
            tcfg = tcfg.auth_header(t.to_string());
        }
        let client = WatchedClient {
            http: self.http.clone(),
            signals: signals.clone(),
        };
        let transport = StreamableHttpClientTransport::with_client(client, tcfg);
        let handler = Handler {
            shared: self.shared.clone(),
            signals: signals.clone(),
        };
        let rt = self.cfg.request_timeout;
        let service = tokio::select! {
            _ = self.shutdown.cancelled() => return End::Shutdown,
            r = timeout(rt, handler.serve(transport)) => match r {
                Err(_) => return retry(format!("initialize timed out after {rt:?}"), None),
                Ok(Err(e)) => {
                    let f = if e.is_authorization_required() {
                        Failure::Auth("authorization required".into())
                    } else {
                        match &e {
                            rmcp::service::ClientInitializeError::TransportError { error, .. } => {
                                classify(error.error.as_ref())
                            }
                            other => Failure::Other(other.to_string()),
                        }
                    };
                    return end_for(f, "initialize", self.startup, None);
                }
                Ok(Ok(s)) => s,
            }
        };
        tracing::debug!(source = %self.shared.source, attempt = self.number, "initialized");

        let mut subscribed_at: Option<Instant> = None;
        let end = tokio::select! {
            _ = self.shutdown.cancelled() => End::Shutdown,
            e = self.live(&service, &signals, &mut subscribed_at) => e,
        };
        self.close(service, &signals, matches!(end, End::Shutdown))
            .await;
        // However the session ended, a subscribed one counts as connected
        // (backoff reset, credentials proven).
        match end {
            End::Retry {
                reason,
                subscribed_for: None,
                retry_after,
                cause,
            } if subscribed_at.is_some() => End::Retry {
                reason,
                subscribed_for: subscribed_at.map(|t| t.elapsed()),
                retry_after,
                cause,
            },
            other => other,
        }
    }

    async fn live(
        &self,
        service: &RunningService<RoleClient, Handler>,
        signals: &Arc<SessionSignals>,
        subscribed_at: &mut Option<Instant>,
    ) -> End {
        let cfg = self.cfg;
        let rt = cfg.request_timeout;
        let mut stream = signals.stream.subscribe();
        // A notification sent before the GET stream is open cancels the new
        // subscription (docs/mcp-events-protocol.md, "Delivery"): subscribe
        // only once rmcp has opened it.
        let opened = stream.wait_for(|s| s.opens >= 1);
        tokio::select! {
            reason = signals.raised() => return retry(reason, None),
            r = timeout(rt, opened) => match r {
                Ok(Ok(_)) => {}
                _ => return retry(format!("event stream (GET) not opened within {rt:?}"), None),
            },
        }

        // Without a level the server sends nothing (docs/mcp-events-protocol.md,
        // "Session setup").
        #[allow(deprecated)]
        let set_level = service.set_level(SetLevelRequestParams::new(LoggingLevel::Info));
        match timeout(rt, set_level).await {
            Err(_) => return retry(format!("logging/setLevel timed out after {rt:?}"), None),
            Ok(Err(e)) => {
                return end_for(classify_service(&e), "logging/setLevel", self.startup, None);
            }
            Ok(Ok(())) => {}
        }

        let mut args = cfg.arguments.clone();
        args.insert("mode".into(), Value::String(cfg.mode.clone()));
        let call =
            service.call_tool(CallToolRequestParams::new("events_subscribe").with_arguments(args));
        let st = cfg.subscribe_timeout;
        let result = match timeout(st, call).await {
            // A faults-mode server can hang here forever
            // (docs/mcp-events-protocol.md, "Tools").
            Err(_) => return retry(format!("events_subscribe timed out after {st:?}"), None),
            Ok(Err(ServiceError::McpError(e))) => {
                let msg = e.message.to_string();
                if msg.contains("unknown tool")
                    || !self.has_subscribe_tool(service).await.unwrap_or(true)
                {
                    return End::Fatal(no_event_streaming(&cfg.endpoint, &msg));
                }
                return retry(
                    format!("events_subscribe failed: JSON-RPC {}: {msg}", e.code.0),
                    None,
                );
            }
            Ok(Err(e)) => {
                return end_for(classify_service(&e), "events_subscribe", self.startup, None);
            }
            Ok(Ok(r)) => r,
        };
        let text = result_text(&result);
        if result.is_error == Some(true) {
            return self.subscribe_error(&text);
        }
        let Some(id) = json_in_text(&text).and_then(|v| {
            v.get("subscriptionId")
                .and_then(Value::as_str)
                .map(str::to_string)
        }) else {
            return retry(
                format!(
                    "events_subscribe result has no subscriptionId: {:.200}",
                    text
                ),
                None,
            );
        };
        let _ = signals.subscription_id.set(id.clone());
        *subscribed_at = Some(Instant::now());
        self.shared.status.subscribed();
        tracing::info!(
            source = %self.shared.source,
            attempt = self.number,
            subscription_id = %id,
            mode = %cfg.mode,
            "subscribed to MCP events"
        );

        let start = Instant::now();
        let mut ping = tokio::time::interval_at(start + cfg.ping_interval, cfg.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first check comes early, in case something slipped past the
        // stream watch.
        let first_check = cfg.subscription_check.min(Duration::from_secs(5));
        let mut check = tokio::time::interval_at(start + first_check, cfg.subscription_check);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let reopen_wait = rt.min(REOPEN_WAIT);
        let now = stream.borrow_and_update().clone();
        let mut verified_opens = now.opens;
        // The stream may have dropped while subscribing.
        let mut lost_since = (!now.open).then(Instant::now);
        let mut last_reopen: Option<Instant> = None;
        let mut rapid_reopens = 0u32;
        loop {
            let reopen_deadline = lost_since.map(|t| t + reopen_wait);
            tokio::select! {
                reason = signals.raised() => return retry(reason, *subscribed_at),
                Ok(()) = stream.changed() => {
                    let st = stream.borrow_and_update().clone();
                    if !st.open {
                        if lost_since.is_none() {
                            lost_since = Some(st.lost_at.unwrap_or_else(Instant::now));
                            tracing::info!(
                                source = %self.shared.source,
                                reason = st.last_loss.as_deref().unwrap_or(""),
                                "event stream lost; waiting for it to reopen"
                            );
                        }
                        continue;
                    }
                    if st.opens <= verified_opens {
                        continue;
                    }
                    verified_opens = st.opens;
                    lost_since = None;
                    // Lost and reopened may arrive as one change.
                    let down_ms = st.lost_at.map_or(0, |t| t.elapsed().as_millis() as u64);
                    let now = Instant::now();
                    if last_reopen.is_some_and(|t| now - t < RAPID_REOPEN) {
                        rapid_reopens += 1;
                    } else {
                        rapid_reopens = 1;
                    }
                    last_reopen = Some(now);
                    if rapid_reopens > MAX_RAPID_REOPENS {
                        return retry(
                            format!(
                                "event stream (GET) keeps closing ({rapid_reopens} reopens less than {RAPID_REOPEN:?} apart)"
                            ),
                            *subscribed_at,
                        );
                    }
                    // A notification sent while no stream was open has
                    // cancelled the subscription: verify it now.
                    if let Err(end) = self.check_subscription(service, &id).await {
                        return end;
                    }
                    tracing::info!(
                        source = %self.shared.source,
                        subscription_id = %id,
                        down_ms,
                        "event stream reopened; subscription still active"
                    );
                }
                _ = sleep_until_opt(reopen_deadline), if reopen_deadline.is_some() => {
                    return retry(
                        format!("event stream (GET) lost and not reopened within {reopen_wait:?}"),
                        *subscribed_at,
                    );
                }
                _ = ping.tick() => {
                    let req = || service.send_request(ClientRequest::PingRequest(PingRequest::default()));
                    if let Err(end) = probe(&self.shared.source, rt, "ping", req).await {
                        return end;
                    }
                }
                _ = check.tick() => {
                    if let Err(end) = self.check_subscription(service, &id).await {
                        return end;
                    }
                }
            }
        }
    }

    fn subscribe_error(&self, text: &str) -> End {
        // Server text ends up in log lines and the fatal message: escape
        // control characters so it cannot forge lines.
        let text = &text.escape_debug().to_string();
        let cfg = self.cfg;
        if text.contains("invalid mode") {
            return End::Fatal(format!(
                "the MCP server rejected mode {:?}: {text}. Use mode = \"faults\" (current servers) \
                 or \"resource-faults\" (servers built between 2c6d8a6 and 733134c)",
                cfg.mode
            ));
        }
        if text.starts_with("invalid subscription filters")
            || text.contains("require an HTTP/SSE transport")
        {
            return End::Fatal(format!("events_subscribe refused: {text}"));
        }
        retry(format!("events_subscribe refused: {text}"), None)
    }

    async fn has_subscribe_tool(
        &self,
        service: &RunningService<RoleClient, Handler>,
    ) -> Option<bool> {
        let tools = timeout(self.cfg.request_timeout, service.list_all_tools())
            .await
            .ok()?
            .ok()?;
        Some(tools.iter().any(|t| t.name == "events_subscribe"))
    }

    /// `events_list_subscriptions` is the only way to see a subscription
    /// the server cancelled silently (docs/mcp-events-protocol.md, "Delivery").
    async fn check_subscription(
        &self,
        service: &RunningService<RoleClient, Handler>,
        id: &str,
    ) -> Result<(), End> {
        let call = || {
            service.call_tool(
                CallToolRequestParams::new("events_list_subscriptions").with_arguments(Map::new()),
            )
        };
        let r = probe(
            &self.shared.source,
            self.cfg.request_timeout,
            "events_list_subscriptions",
            call,
        )
        .await?;
        let text = result_text(&r);
        if r.is_error == Some(true) {
            return Err(retry(
                format!("events_list_subscriptions failed: {text:.200}"),
                None,
            ));
        }
        let Some(v) = json_in_text(&text) else {
            tracing::warn!(source = %self.shared.source, "unparseable events_list_subscriptions result; keeping the session");
            return Ok(());
        };
        let subs = v.get("subscriptions").and_then(Value::as_array);
        let ours = subs.and_then(|s| {
            s.iter()
                .find(|x| x.get("subscriptionId").and_then(Value::as_str) == Some(id))
        });
        match ours {
            None => Err(retry(
                format!("subscription {id} vanished on the server (silently cancelled)"),
                None,
            )),
            Some(s) if s.get("degraded").and_then(Value::as_bool) == Some(true) => {
                Err(retry(format!("subscription {id} is degraded"), None))
            }
            Some(_) => {
                tracing::debug!(source = %self.shared.source, subscription_id = id, "subscription present");
                Ok(())
            }
        }
    }

    /// Best effort and bounded: unsubscribe on shutdown, then close the
    /// transport, which DELETEs the session (and with it any zombie
    /// watchers of the old subscription, docs/mcp-events-protocol.md,
    /// "Duplicates").
    async fn close(
        &self,
        service: RunningService<RoleClient, Handler>,
        signals: &SessionSignals,
        unsubscribe: bool,
    ) {
        // Together well inside the pipeline's 5 s wait for sources.
        let short = self.cfg.request_timeout.min(Duration::from_secs(1));
        if unsubscribe && let Some(id) = signals.subscription_id.get() {
            let mut args = Map::new();
            args.insert("subscriptionId".into(), Value::String(id.clone()));
            let call = service
                .call_tool(CallToolRequestParams::new("events_unsubscribe").with_arguments(args));
            let _ = timeout(short, call).await;
        }
        if timeout(short + Duration::from_secs(1), service.cancel())
            .await
            .is_err()
        {
            tracing::debug!(source = %self.shared.source, "closing the MCP session timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_id_from_go_style_text() {
        let text = "# Event Subscription Created\n\n{\n  \"cluster\": \"kind-events-test\",\n  \"createdAt\": \"2025-12-20T15:02:10+01:00\",\n  \"filters\": {},\n  \"mode\": \"faults\",\n  \"status\": \"active\",\n  \"subscriptionId\": \"sub-0ddc180f\"\n}\n\nYou will receive event notifications via the logging/message protocol.";
        let v = json_in_text(text).unwrap();
        assert_eq!(v["subscriptionId"], "sub-0ddc180f");
        assert!(json_in_text("no json").is_none());
        assert!(json_in_text("} {").is_none());
    }

    #[test]
    fn classify_status_errors() {
        let e: StreamableHttpError<reqwest::Error> = StreamableHttpError::SessionExpired;
        assert_eq!(classify(&e), Failure::SessionGone);
        let e: StreamableHttpError<reqwest::Error> =
            StreamableHttpError::UnexpectedServerResponse("HTTP 401 Unauthorized: no".into());
        assert!(matches!(classify(&e), Failure::Auth(_)));
        let e: StreamableHttpError<reqwest::Error> = StreamableHttpError::HttpStatus(
            rmcp::transport::streamable_http_client::HttpStatusError::new(429, Some("3".into())),
        );
        assert_eq!(
            classify(&e),
            Failure::RateLimited(Some(Duration::from_secs(3)))
        );
        let e = std::io::Error::other("connection refused");
        assert!(matches!(classify(&e), Failure::Other(m) if m.contains("refused")));
    }

    #[test]
    fn wrong_path_and_refused_connection_are_told_apart() {
        let e: StreamableHttpError<reqwest::Error> = StreamableHttpError::UnexpectedServerResponse(
            "HTTP 404 Not Found: 404 page not found\n".into(),
        );
        assert_eq!(
            classify(&e),
            Failure::NotFound("HTTP 404 Not Found: 404 page not found".into())
        );
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(classify(&e), Failure::Refused(_)));
        assert!(matches!(
            end_for(classify(&e), "initialize", true, None),
            End::Retry {
                cause: Cause::Refused,
                ..
            }
        ));
    }

    fn failing(n: &std::sync::atomic::AtomicU32) -> Result<(), ServiceError> {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(ServiceError::UnexpectedResponse)
    }

    #[tokio::test(start_paused = true)]
    async fn probe_retries_transient_failures() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let rt = Duration::from_secs(10);
        // Two hiccups, then an answer: the session lives on.
        let n = AtomicU32::new(0);
        let t = Instant::now();
        let r = probe("s", rt, "ping", || async {
            if n.load(Ordering::Relaxed) < 2 {
                failing(&n)
            } else {
                Ok(())
            }
        })
        .await;
        assert!(r.is_ok());
        assert_eq!(t.elapsed(), 2 * LIVENESS_RETRY_PAUSE);
        // Failing every time: given up after LIVENESS_ATTEMPTS tries.
        let n = AtomicU32::new(0);
        let r = probe("s", rt, "ping", || async { failing(&n) }).await;
        assert!(matches!(r, Err(End::Retry { .. })));
        assert_eq!(n.load(Ordering::Relaxed), LIVENESS_ATTEMPTS);
        // Rmcp's transport is gone: no point in retrying.
        let n = AtomicU32::new(0);
        let r = probe("s", rt, "ping", || async {
            n.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(ServiceError::TransportClosed)
        })
        .await;
        assert!(matches!(r, Err(End::Retry { .. })));
        assert_eq!(n.load(Ordering::Relaxed), 1);
        // A frozen server: one timeout is enough, as before.
        let t = Instant::now();
        let r = probe("s", rt, "ping", std::future::pending::<Result<(), _>>).await;
        assert!(
            matches!(&r, Err(End::Retry { reason, .. }) if reason.contains("timed out")),
            "{r:?}"
        );
        assert_eq!(t.elapsed(), rt);
    }

    #[test]
    fn auth_is_fatal_only_at_startup() {
        assert!(matches!(
            end_for(Failure::Auth("HTTP 401".into()), "initialize", true, None),
            End::Fatal(m) if m.contains("credentials")
        ));
        assert!(matches!(
            end_for(Failure::Auth("HTTP 401".into()), "ping", false, None),
            End::Retry { .. }
        ));
    }
}
