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

use super::backoff::parse_retry_after;
use super::config::McpSourceConfig;
use super::handler::{Handler, SessionSignals, SourceShared, StreamWatch};

/// How a session ended.
#[derive(Debug)]
pub enum End {
    Shutdown,
    /// Transient: start a fresh session after a delay.
    Retry {
        reason: String,
        /// How long the session was subscribed (None: never got there).
        subscribed_for: Option<Duration>,
        /// A server-requested minimum delay (429 Retry-After).
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (wrong credentials, no event streaming).
    Fatal(String),
}

/// What an error means for the reconnect loop.
#[derive(Debug, PartialEq)]
pub enum Failure {
    /// 401/403: the credentials are wrong.
    Auth(String),
    RateLimited(Option<Duration>),
    /// 404 on a known session: the server forgot it (restart).
    SessionGone,
    Other(String),
}

/// Classifies a transport error by walking its source chain.
pub fn classify(err: &(dyn std::error::Error + 'static)) -> Failure {
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
                // `Client` does not expose its reqwest error as a source.
                StreamableHttpError::Client(inner) => {
                    cur = Some(inner);
                    continue;
                }
                _ => {}
            }
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
        },
        Failure::SessionGone => retry(
            format!("{what}: session not found (HTTP 404, server restarted?)"),
            subscribed_at,
        ),
        Failure::Other(m) => retry(format!("{what}: {m}"), subscribed_at),
    }
}

/// Message for a server without `events_subscribe` (upstream build).
pub fn no_event_streaming(endpoint: &str, detail: &str) -> String {
    format!(
        "the MCP server at {} lacks event streaming (no events_subscribe tool: {detail}); \
         this is the upstream kubernetes-mcp-server. Run the events-enabled build \
         (kubernetes-mcp-server-with-events fork) started with --port",
        runner_core::config::mask(endpoint)
    )
}

/// The JSON object between the first `{` and the last `}` of a tool text.
pub fn json_in_text(text: &str) -> Option<Value> {
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

pub struct Attempt<'a> {
    pub cfg: &'a McpSourceConfig,
    pub shared: &'a Arc<SourceShared>,
    pub http: &'a reqwest::Client,
    pub number: u64,
    pub shutdown: &'a CancellationToken,
    /// No session has subscribed yet: credential errors are fatal.
    pub startup: bool,
}

impl Attempt<'_> {
    pub async fn run(self) -> End {
        let signals = Arc::new(SessionSignals::default());
        let mut tcfg = StreamableHttpClientTransportConfig::with_uri(self.cfg.endpoint.as_str())
            // A silently re-initialized session has no level and no
            // subscription (stack-notes): surface the 404 instead.
            .reinit_on_expired_session(false);
        tcfg.retry_config = Arc::new(StreamWatch(signals.clone()));
        if let Some(t) = &self.cfg.token {
            tcfg = tcfg.auth_header(t.to_string());
        }
        let transport = StreamableHttpClientTransport::with_client(self.http.clone(), tcfg);
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
        // (backoff reset after a healthy period, credentials proven).
        match end {
            End::Retry {
                reason,
                subscribed_for: None,
                retry_after,
            } if subscribed_at.is_some() => End::Retry {
                reason,
                subscribed_for: subscribed_at.map(|t| t.elapsed()),
                retry_after,
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

        // Without a level the server sends nothing (protocol §2.2).
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
            // The faults-mode server can hang here forever (protocol §2.4).
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
        // The first check comes early: a notification sent before rmcp's
        // GET stream was open cancels the new subscription (§5.3).
        let first_check = cfg.subscription_check.min(Duration::from_secs(5));
        let mut check = tokio::time::interval_at(start + first_check, cfg.subscription_check);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                reason = signals.raised() => return retry(reason, *subscribed_at),
                _ = ping.tick() => {
                    let req = ClientRequest::PingRequest(PingRequest::default());
                    match timeout(rt, service.send_request(req)).await {
                        Err(_) => return retry(format!("ping timed out after {rt:?}"), *subscribed_at),
                        Ok(Err(e)) => return end_for(classify_service(&e), "ping", false, *subscribed_at),
                        Ok(Ok(_)) => {}
                    }
                }
                _ = check.tick() => {
                    match self.check_subscription(service, &id).await {
                        Ok(()) => {}
                        Err(end) => return end,
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
    /// the server cancelled silently (protocol §5.3).
    async fn check_subscription(
        &self,
        service: &RunningService<RoleClient, Handler>,
        id: &str,
    ) -> Result<(), End> {
        let rt = self.cfg.request_timeout;
        let call = service.call_tool(
            CallToolRequestParams::new("events_list_subscriptions").with_arguments(Map::new()),
        );
        let r = match timeout(rt, call).await {
            Err(_) => {
                return Err(retry(
                    format!("events_list_subscriptions timed out after {rt:?}"),
                    None,
                ));
            }
            Ok(Err(e)) => {
                return Err(end_for(
                    classify_service(&e),
                    "events_list_subscriptions",
                    false,
                    None,
                ));
            }
            Ok(Ok(r)) => r,
        };
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
    /// watchers of the old subscription, protocol §5.6c).
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
