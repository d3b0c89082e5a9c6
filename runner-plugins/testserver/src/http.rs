//! The HTTP front of the test server: rmcp's `StreamableHttpService` does the
//! MCP protocol; this handler in front of it adds what go-sdk v1.2.0's
//! `StreamableHTTPHandler` does differently ("Transport") and the scripted
//! failure modes (see the module docs of `testserver`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::rmcp_handler::{Handler, SessionRef};
use super::{Inner, SUPPORTED_VERSIONS, Serving, Session, StreamSlot};

const SESSION_HEADER: &str = "mcp-session-id";
const MAX_BODY: usize = 4 << 20;

type Service = StreamableHttpService<Handler, LocalSessionManager>;

/// One incarnation of the rmcp service: its sessions die with it.
pub(super) struct Mcp {
    svc: Service,
    ct: CancellationToken,
}

fn new_mcp(inner: &Arc<Inner>) -> Mcp {
    let mut sessions = LocalSessionManager::default();
    // Like the Go server: no session timeout, no priming/retry events, and
    // `stream_capacity` messages buffered towards a GET stream.
    sessions.session_config.keep_alive = None;
    sessions.session_config.sse_retry = None;
    sessions.session_config.channel_capacity = inner.opts.stream_capacity.max(1);
    let ct = CancellationToken::new();
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(true)
        .with_sse_keep_alive(None)
        .with_sse_retry(None)
        .with_cancellation_token(ct.clone())
        // go-sdk checks no Host header (the binary may listen on 0.0.0.0).
        .disable_allowed_hosts();
    let weak = Arc::downgrade(inner);
    let svc = StreamableHttpService::new(
        move || {
            Ok(Handler {
                inner: weak.clone(),
            })
        },
        Arc::new(sessions),
        config,
    );
    Mcp { svc, ct }
}

/// Drops the current rmcp service: every session it knew is gone.
pub(super) fn reset_mcp(inner: &Inner) {
    if let Some(old) = inner.mcp.lock().unwrap().take() {
        old.ct.cancel();
    }
}

fn current(inner: &Arc<Inner>) -> Service {
    let mut slot = inner.mcp.lock().unwrap();
    slot.get_or_insert_with(|| new_mcp(inner)).svc.clone()
}

/// Accepts TCP connections whose close can be made abortive (RST).
struct ResetListener(tokio::net::TcpListener);

/// A connection that sends a TCP reset instead of a FIN when it is closed
/// after its `reset` flag was set (like a proxy or load balancer cutting it).
pub(super) struct ResetIo {
    io: tokio::net::TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResetIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Acquire) {
            // SO_LINGER 0: close() discards unsent data and sends RST.
            let _ = self.io.set_zero_linger();
        }
    }
}

impl tokio::io::AsyncRead for ResetIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ResetIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for ResetListener {
    type Io = ResetIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (ResetIo, std::net::SocketAddr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        // Like the Go server (Go sets TCP_NODELAY on every connection): without
        // it, Nagle's algorithm holds the small response frames back until
        // the client's delayed ACK (~40 ms per subscribe on loopback).
        let _ = io.set_nodelay(true);
        let io = ResetIo {
            io,
            reset: Arc::new(AtomicBool::new(false)),
        };
        (io, addr)
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.local_addr()
    }
}

/// The reset switch of the connection a request came on.
#[derive(Clone)]
pub(super) struct ConnReset(pub(super) Arc<AtomicBool>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, ResetListener>>
    for ConnReset
{
    fn connect_info(s: axum::serve::IncomingStream<'_, ResetListener>) -> Self {
        ConnReset(s.io().reset.clone())
    }
}

pub(super) fn serve(inner: &Arc<Inner>, listener: tokio::net::TcpListener) {
    let app = Router::new()
        .route("/mcp", axum::routing::any(mcp))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(inner.clone())
        .into_make_service_with_connect_info::<ConnReset>();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(ResetListener(listener), app)
            .with_graceful_shutdown(s.cancelled_owned())
            .await;
    });
    if let Some(old) = inner
        .serving
        .lock()
        .unwrap()
        .replace(Serving { stop, task })
    {
        old.stop.cancel();
        old.task.abort();
    }
}

/// Stops listening; open connections are cut (streams were killed before).
pub(super) async fn stop(inner: &Arc<Inner>) {
    let serving = inner.serving.lock().unwrap().take();
    if let Some(s) = serving {
        s.stop.cancel();
        let abort = s.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), s.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{body}\n"),
    )
        .into_response()
}

/// Clears the session's stream slot when its GET body goes away.
struct Guard {
    session: Arc<Session>,
    generation: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut slot = self.session.stream.lock().unwrap();
        if slot
            .as_ref()
            .is_some_and(|s| s.generation == self.generation)
        {
            *slot = None;
        }
    }
}

/// rmcp frame (`data:` + `id: N`) → go-sdk frame (`event: message` + `data:`,
/// no `id:`/`retry:`). rmcp's SSE body yields one whole event per chunk.
///
/// On a GET stream (`seen` set) frames rmcp replays are dropped: every new
/// standalone stream of a session starts with rmcp re-sending its cache of
/// earlier standalone messages (a resumption the Go server never does).
/// Their ids are the common channel's running index, so anything at or
/// below the highest index already passed on is a replay.
fn go_frame(b: Bytes, seen: Option<&Session>) -> Option<Bytes> {
    let Ok(s) = std::str::from_utf8(&b) else {
        return Some(b);
    };
    if let Some(session) = seen
        && let Some(idx) = s
            .lines()
            .find_map(|l| l.strip_prefix("id:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
    {
        let mut last = session.common_seen.lock().unwrap();
        if last.is_some_and(|l| idx <= l) {
            return None;
        }
        *last = Some(idx);
    }
    let mut out = String::with_capacity(s.len() + 16);
    if !s.lines().any(|l| l.starts_with("event:")) && s.lines().any(|l| l.starts_with("data:")) {
        out.push_str("event: message\n");
    }
    for l in s.split_inclusive('\n') {
        if !(l.starts_with("id:") || l.starts_with("retry:")) {
            out.push_str(l);
        }
    }
    Some(Bytes::from(out))
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Passes an rmcp SSE body through: frames rewritten, raw frames spliced in
/// from `inject`, and an abrupt cut (connection error) when `kill` fires.
fn wrap_sse(
    body: Body,
    inject: Option<mpsc::Receiver<Bytes>>,
    kill: CancellationToken,
    guard: Option<Guard>,
) -> Body {
    let seen = guard.as_ref().map(|g| g.session.clone());
    let state = Some((body.into_data_stream(), inject, kill, guard, seen));
    let stream = futures::stream::unfold(state, |state| async move {
        let (mut data, mut inject, kill, guard, seen) = state?;
        let item = loop {
            tokio::select! {
                biased;
                _ = kill.cancelled() => return Some((Err(std::io::Error::other("stream killed")), None)),
                Some(b) = recv_opt(&mut inject) => break Ok(b),
                m = data.next() => match m {
                    None => return None,
                    Some(Ok(b)) => {
                        if let Some(b) = go_frame(b, seen.as_deref()) {
                            break Ok(b);
                        }
                    }
                    Some(Err(e)) => return Some((Err(std::io::Error::other(e)), None)),
                },
            }
        };
        Some((item, Some((data, inject, kill, guard, seen))))
    });
    Body::from_stream(stream)
}

fn is_sse(r: &Response) -> bool {
    r.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Hands the request to rmcp; SSE answers are cut on restart/shutdown.
async fn forward(inner: &Arc<Inner>, req: Request) -> Response {
    let r = current(inner).handle(req).await.map(Body::new);
    if !is_sse(&r) {
        return r;
    }
    let (parts, body) = r.into_parts();
    let body = wrap_sse(body, None, inner.epoch().child_token(), None);
    Response::from_parts(parts, body)
}

async fn mcp(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let headers = req.headers().clone();
    // A frozen server accepts the request and never answers it.
    let mut frozen = inner.frozen.subscribe();
    if *frozen.borrow() {
        let epoch = inner.epoch();
        tokio::select! {
            _ = frozen.wait_for(|f| !*f) => {}
            _ = epoch.cancelled() => return text(StatusCode::SERVICE_UNAVAILABLE, "server restarting"),
        }
    }
    // Scripted failures first: they model a proxy or an auth layer in front.
    {
        let mut f = inner.fail_next.lock().unwrap();
        if let Some(fail) = f.as_mut()
            && fail.remaining > 0
        {
            fail.remaining -= 1;
            let status =
                StatusCode::from_u16(fail.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = text(status, status.canonical_reason().unwrap_or("error"));
            if let Some(ra) = fail
                .retry_after
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                r.headers_mut().insert(header::RETRY_AFTER, ra);
            }
            return r;
        }
    }
    if let Some(tok) = &inner.opts.require_token {
        let want = format!("Bearer {tok}");
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(want.as_str())
        {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
    }
    if let Some(v) = headers.get("mcp-protocol-version") {
        let v = v.to_str().unwrap_or("");
        if !SUPPORTED_VERSIONS.contains(&v) {
            return text(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Bad Request: Unsupported protocol version (supported versions: {})",
                    SUPPORTED_VERSIONS.join(",")
                ),
            );
        }
    }
    let session_id = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match req.method().clone() {
        Method::GET => get_stream(&inner, req, session_id).await,
        Method::DELETE => {
            let Some(id) = session_id else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "DELETE requires an Mcp-Session-Id header",
                );
            };
            if inner.session(&id).is_none() {
                return text(StatusCode::NOT_FOUND, "session not found");
            }
            let r = forward(&inner, req).await;
            if !r.status().is_success() {
                return r;
            }
            let removed = inner.sessions.lock().unwrap().remove(&id);
            if let Some(s) = removed {
                s.kill_stream();
                inner.counters.deletes.fetch_add(1, Ordering::Relaxed);
                inner.changed.notify_waiters();
            }
            // rmcp answers 202; go-sdk 204 ("Session setup").
            StatusCode::NO_CONTENT.into_response()
        }
        Method::POST => post(&inner, req, session_id).await,
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

async fn get_stream(inner: &Arc<Inner>, mut req: Request, session_id: Option<String>) -> Response {
    let Some(id) = session_id else {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET requires an active session",
        );
    };
    let Some(session) = inner.session(&id) else {
        return text(StatusCode::NOT_FOUND, "session not found");
    };
    // No resumption (rmcp would replay its cache): go-sdk without an
    // event store refuses it.
    if let Some(v) = req.headers().get("last-event-id") {
        let v = v.to_str().unwrap_or("");
        let looks_valid = v
            .split_once('_')
            .is_some_and(|(_, n)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        return if looks_valid {
            text(StatusCode::BAD_REQUEST, "stream replay unsupported")
        } else {
            text(
                StatusCode::BAD_REQUEST,
                &format!("malformed Last-Event-ID {v:?}"),
            )
        };
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let kill = inner.epoch().child_token();
    let reset = req
        .extensions()
        .get::<axum::extract::ConnectInfo<ConnReset>>()
        .map(|c| c.0.0.clone());
    let generation = inner.stream_gen.fetch_add(1, Ordering::Relaxed) + 1;
    // A cut stream's body may not be dropped yet; until it is, rmcp still
    // sees its standalone stream open and would give this GET a silent
    // "shadow" stream that never receives anything.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        {
            let mut slot = session.stream.lock().unwrap();
            match slot.as_ref() {
                // go-sdk refuses a second standalone stream (rmcp would open
                // a shadow stream instead).
                Some(s) if !s.inject.is_closed() && !s.kill.is_cancelled() => {
                    return text(
                        StatusCode::CONFLICT,
                        "stream ID conflicts with ongoing stream",
                    );
                }
                Some(s) if !s.inject.is_closed() && tokio::time::Instant::now() < deadline => {}
                _ => {
                    *slot = Some(StreamSlot {
                        generation,
                        inject: tx,
                        kill: kill.clone(),
                        ready: ready.clone(),
                        reset,
                    });
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let guard = Guard {
        session: session.clone(),
        generation,
    };
    req.extensions_mut().insert(SessionRef(session));
    let r = current(inner).handle(req).await.map(Body::new);
    if r.status() != StatusCode::OK || !is_sse(&r) {
        return r; // the guard clears the slot
    }
    inner.counters.get_streams.fetch_add(1, Ordering::Relaxed);
    ready.store(true, Ordering::Release);
    inner.changed.notify_waiters();
    let (parts, body) = r.into_parts();
    Response::from_parts(parts, wrap_sse(body, Some(rx), kill, Some(guard)))
}

async fn post(inner: &Arc<Inner>, req: Request, session_id: Option<String>) -> Response {
    let headers = req.headers();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(accept.contains("application/json") && accept.contains("text/event-stream")) {
        return text(
            StatusCode::BAD_REQUEST,
            "Accept must contain both 'application/json' and 'text/event-stream'",
        );
    }
    if headers.contains_key("last-event-id") {
        return text(
            StatusCode::BAD_REQUEST,
            "can't send Last-Event-ID for POST request",
        );
    }
    let (mut parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return text(StatusCode::BAD_REQUEST, "malformed payload");
    };
    let msg: Value = match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Value::Object(m),
        _ => return text(StatusCode::BAD_REQUEST, "malformed payload"),
    };
    let is_init = msg.get("method").and_then(Value::as_str) == Some("initialize");
    let Some(sid) = session_id else {
        if !is_init {
            return text(StatusCode::BAD_REQUEST, "missing Mcp-Session-Id header");
        }
        if msg.get("id").is_none() {
            return text(StatusCode::BAD_REQUEST, "initialize must be a request");
        }
        // The session's state exists before rmcp names the session; it is
        // registered under the id rmcp answers with.
        let session = Arc::new(Session::default());
        parts.extensions.insert(SessionRef(session.clone()));
        let r = forward(inner, Request::from_parts(parts, Body::from(bytes))).await;
        if let Some(id) = r
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|_| r.status() == StatusCode::OK)
        {
            inner
                .sessions
                .lock()
                .unwrap()
                .insert(id.to_string(), session);
            inner
                .counters
                .sessions_created
                .fetch_add(1, Ordering::Relaxed);
        }
        return r;
    };
    let Some(session) = inner.session(&sid) else {
        return text(StatusCode::NOT_FOUND, "session not found");
    };
    parts.extensions.insert(SessionRef(session));
    forward(inner, Request::from_parts(parts, Body::from(bytes))).await
}
