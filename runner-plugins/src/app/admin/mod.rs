//! The admin HTTP server: `/healthz`, `/readyz`, `/metrics`, `/api/status`,
//! `/api/incidents`, the incidents page (`/`) and the reports it links to
//! (`/incidents/{id}`). It only reads the pipeline through the core's
//! read-only views; see docs/operations.md.
//!
//! With a token configured, every endpoint but the two probes requires it
//! (kubelet probes cannot carry a secret; the probe bodies carry no event
//! text and no error details). Browsers can send it as the password of
//! HTTP Basic authentication (any user name).

mod config;
pub(crate) mod metrics;
pub(crate) mod page;
pub(crate) mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use runner_core::pipeline::PipelineHandle;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub(crate) use config::{DEFAULT_LISTEN, ServerConfig};

struct AppState {
    handle: PipelineHandle,
    cfg: ServerConfig,
    registry: Registry,
    started: Instant,
    max_concurrent: usize,
}

/// A running admin server.
pub(crate) struct AdminServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds first, before the pipeline starts: a listener that cannot be
    /// bound stops the runner (an operator who configured it expects it).
    pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(addr).await
    }

    /// Serves on a bound listener.
    pub(crate) fn serve(
        listener: tokio::net::TcpListener,
        cfg: ServerConfig,
        handle: PipelineHandle,
        max_concurrent: usize,
    ) -> std::io::Result<AdminServer> {
        let addr = listener.local_addr()?;
        let registry = metrics::registry(metrics::PipelineCollector {
            handle: handle.clone(),
            max_concurrent,
        });
        let state = Arc::new(AppState {
            handle,
            cfg,
            registry,
            started: Instant::now(),
            max_concurrent,
        });
        let app = router(state);
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "admin server failed");
            }
        });
        Ok(AdminServer { addr, stop, task })
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        // Open keep-alive connections (a browser's) must not hold up exit.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await;
    }
}

fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/", get(incidents_page))
        .route("/metrics", get(metrics_handler))
        .route("/api/status", get(status_json))
        .route("/api/incidents", get(incidents_json))
        .route("/incidents/{id}", get(report))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(protected)
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Pages are ours plus escaped event text: no script, no remote content.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// Constant-time comparison: the time taken does not reveal a prefix match.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let s = s.trim().trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// True when the request carries the token (Bearer, or Basic password).
pub(crate) fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return same(rest.trim().as_bytes(), token.as_bytes());
    }
    if scheme.eq_ignore_ascii_case("basic")
        && let Some(raw) = b64_decode(rest)
        && let Some(colon) = raw.iter().position(|b| *b == b':')
    {
        return same(&raw[colon + 1..], token.as_bytes());
    }
    false
}

async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.cfg.token
        && !authorized(req.headers(), token)
    {
        let mut resp = (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "authentication required: Authorization: Bearer <token>"})),
        )
            .into_response();
        resp.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"event-runner\""),
        );
        resp.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"event-runner\", charset=\"UTF-8\""),
        );
        return resp;
    }
    next.run(req).await
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    // Answering at all proves the runtime schedules tasks; the body says
    // the rest for humans.
    axum::Json(json!({
        "status": "alive",
        "uptime_seconds": st.started.elapsed().as_secs(),
        "shutting_down": st.handle.is_shutting_down(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    let r = st.handle.readiness(st.cfg.ready_source_down);
    // Unauthenticated: names and phases, never error text (which may carry
    // server details).
    let sources: Vec<Value> = r
        .sources
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "phase": s.phase,
                "subscribed_once": s.subscribed_once,
                "down_for_seconds": s.down_for_seconds,
            })
        })
        .collect();
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(json!({
            "status": if r.ready { "ready" } else { "not ready" },
            "reasons": r.reasons.iter().map(|s| strip_details(s)).collect::<Vec<_>>(),
            "shutting_down": r.shutting_down,
            "intake_depth": r.intake_depth,
            "intake_capacity": r.intake_capacity,
            "sources": sources,
        })),
    )
        .into_response()
}

/// Drops the `: <error>` tail a readiness reason may carry.
fn strip_details(reason: &str) -> String {
    match reason.find(": ") {
        Some(i) if reason.ends_with(')') => format!("{})", &reason[..i]),
        _ => reason.to_string(),
    }
}

async fn metrics_handler(State(st): State<Arc<AppState>>) -> Response {
    let body = metrics::render(&st.registry);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        body,
    )
        .into_response()
}

/// Everything `runner status` shows.
pub(crate) fn status_value(
    handle: &PipelineHandle,
    cfg: &ServerConfig,
    max_concurrent: usize,
) -> Value {
    let s = handle.stats();
    let r = handle.router();
    let ready = handle.readiness(cfg.ready_source_down);
    let (queued, running) = handle.router_view().work();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": ready.ready,
        "reasons": ready.reasons,
        "shutting_down": ready.shutting_down,
        "stats": s.fields().into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "adds_up": s.adds_up(),
        "in_flight": s.in_flight(),
        "intake": {"depth": ready.intake_depth, "capacity": ready.intake_capacity},
        "router": {"running": r.running, "queued": r.queued, "workers": r.workers, "max_concurrent": max_concurrent},
        "queues": handle.router_view().queue_depths(),
        "sources": ready.sources,
        "stages": handle.stage_health().iter().zip(handle.recorder().stage_stats()).map(|((n, h), st)| json!({
            "name": n, "passed": st.passed, "modified": st.modified, "dropped": st.dropped,
            "plugin_errors": h.errors, "disabled": h.disabled,
        })).collect::<Vec<_>>(),
        "running": running,
        "queued": queued,
    })
}

async fn status_json(State(st): State<Arc<AppState>>) -> Response {
    axum::Json(status_value(&st.handle, &st.cfg, st.max_concurrent)).into_response()
}

/// The incidents as JSON: running and queued from the router, recent from
/// the sink's log.
pub(crate) fn incidents_value(handle: &PipelineHandle) -> Value {
    let (queued, running) = handle.router_view().work();
    let recent = handle
        .incident_log()
        .map(|l| l.recent())
        .unwrap_or_default();
    json!({
        "running": running,
        "queued": queued,
        "recent": recent,
    })
}

async fn incidents_json(State(st): State<Arc<AppState>>) -> Response {
    axum::Json(incidents_value(&st.handle)).into_response()
}

async fn incidents_page(State(st): State<Arc<AppState>>) -> Response {
    let (queued, running) = st.handle.router_view().work();
    let recent = st
        .handle
        .incident_log()
        .map(|l| l.recent())
        .unwrap_or_default();
    let ready = st.handle.readiness(st.cfg.ready_source_down);
    let html = page::render(&page::PageData {
        running: &running,
        queued: &queued,
        recent: &recent,
        stats: st.handle.stats(),
        ready: ready.ready,
        reasons: &ready.reasons,
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        html,
    )
        .into_response()
}

async fn report(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Some(path) = st.handle.incident_log().and_then(|l| l.report_html(&id)) else {
        return (StatusCode::NOT_FOUND, "no such incident report\n").into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
        Err(_) => (
            StatusCode::NOT_FOUND,
            "the report is not written yet (the incident is still open)\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_are_accepted_only_with_the_token() {
        let tok = "0123456789abcdef";
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, tok));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdef"),
        );
        assert!(authorized(&h, tok));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdeX"),
        );
        assert!(!authorized(&h, tok));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcde"),
        );
        assert!(!authorized(&h, tok));
        // "oncall:0123456789abcdef"
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic b25jYWxsOjAxMjM0NTY3ODlhYmNkZWY="),
        );
        assert!(authorized(&h, tok));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(!authorized(&h, tok));
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(b64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(b64_decode("aGk").unwrap(), b"hi");
        assert!(b64_decode("a*b").is_none());
    }

    #[test]
    fn readiness_reasons_lose_error_details() {
        assert_eq!(
            strip_details(
                "source a without a subscription for 40s (backoff: connect to 10.0.0.1 refused)"
            ),
            "source a without a subscription for 40s (backoff)"
        );
        assert_eq!(strip_details("shutting down"), "shutting down");
    }
}
