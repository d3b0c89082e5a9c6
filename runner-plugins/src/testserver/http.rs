//! The Streamable HTTP side of the test server, shaped like go-sdk v1.2.0's
//! `StreamableHTTPHandler` as the events fork configures it (protocol §1).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::gojson::{marshal_indent, now_rfc3339};
use super::{
    Inner, MAX_GLOBAL, MAX_PER_SESSION, SUPPORTED_VERSIONS, Serving, Session, StreamSlot, Sub,
};

const SESSION_HEADER: &str = "mcp-session-id";

pub(super) fn serve(inner: &Arc<Inner>, listener: tokio::net::TcpListener) {
    let app = Router::new()
        .route("/mcp", axum::routing::any(mcp))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(inner.clone());
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
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

/// One JSON-RPC message as a one-event SSE response (no `id:` line).
fn sse_one(msg: &Value, session: Option<&str>) -> Response {
    let body = format!("event: message\ndata: {msg}\n\n");
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert(SESSION_HEADER, s);
    }
    r
}

fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn tool_text(text: String, is_error: bool) -> Value {
    let mut v = json!({"content": [{"type": "text", "text": text}]});
    if is_error {
        v["isError"] = json!(true);
    }
    v
}

async fn mcp(
    State(inner): State<Arc<Inner>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
    match method {
        Method::GET => get_stream(&inner, &headers, session_id).await,
        Method::DELETE => {
            let Some(id) = session_id else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "DELETE requires an Mcp-Session-Id header",
                );
            };
            let removed = inner.sessions.lock().unwrap().remove(&id);
            match removed {
                Some(s) => {
                    s.kill_stream();
                    inner.counters.deletes.fetch_add(1, Ordering::Relaxed);
                    inner.changed.notify_waiters();
                    StatusCode::NO_CONTENT.into_response()
                }
                None => text(StatusCode::NOT_FOUND, "session not found"),
            }
        }
        Method::POST => post(&inner, &headers, session_id, &body).await,
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

async fn get_stream(
    inner: &Arc<Inner>,
    headers: &HeaderMap,
    session_id: Option<String>,
) -> Response {
    let Some(id) = session_id else {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET requires an active session",
        );
    };
    let Some(session) = inner.session(&id) else {
        return text(StatusCode::NOT_FOUND, "session not found");
    };
    if let Some(v) = headers.get("last-event-id") {
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
    let (tx, rx) = mpsc::channel::<Bytes>(inner.opts.stream_capacity.max(1));
    let kill = CancellationToken::new();
    let generation = inner.stream_gen.fetch_add(1, Ordering::Relaxed) + 1;
    {
        let mut slot = session.stream.lock().unwrap();
        if slot
            .as_ref()
            .is_some_and(|s| !s.tx.is_closed() && !s.kill.is_cancelled())
        {
            return text(
                StatusCode::CONFLICT,
                "stream ID conflicts with ongoing stream",
            );
        }
        *slot = Some(StreamSlot {
            generation,
            tx,
            kill: kill.clone(),
        });
    }
    inner.counters.get_streams.fetch_add(1, Ordering::Relaxed);
    inner.changed.notify_waiters();
    struct Guard {
        session: Arc<Session>,
        generation: u64,
    }
    impl Drop for Guard {
        // The client went away: the session has no stream any more.
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
    let state = Some((
        rx,
        kill,
        Guard {
            session,
            generation,
        },
    ));
    let stream = futures::stream::unfold(state, |state| async move {
        let (mut rx, kill, guard) = state?;
        tokio::select! {
            biased;
            // An abrupt cut (connection reset), not a clean end of stream.
            _ = kill.cancelled() => Some((Err(std::io::Error::other("stream killed")), None)),
            m = rx.recv() => m.map(|b| (Ok(b), Some((rx, kill, guard)))),
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn post(
    inner: &Arc<Inner>,
    headers: &HeaderMap,
    session_id: Option<String>,
    body: &[u8],
) -> Response {
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
    let msg: Value = match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Value::Object(m),
        _ => return text(StatusCode::BAD_REQUEST, "malformed payload"),
    };
    let method = msg
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let id = msg.get("id").cloned();
    let params = msg.get("params").cloned().unwrap_or(Value::Null);

    if method == "initialize" && session_id.is_none() {
        let Some(id) = id else {
            return text(StatusCode::BAD_REQUEST, "initialize must be a request");
        };
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = if SUPPORTED_VERSIONS.contains(&asked) {
            asked
        } else {
            "2025-06-18"
        };
        let sid = super::session_id();
        let session = Arc::new(Session {
            level: std::sync::Mutex::new(None),
            stream: std::sync::Mutex::new(None),
            subs: std::sync::Mutex::new(Vec::new()),
        });
        inner.sessions.lock().unwrap().insert(sid.clone(), session);
        inner
            .counters
            .sessions_created
            .fetch_add(1, Ordering::Relaxed);
        let r = json!({
            "capabilities": {"logging": {}, "prompts": {"listChanged": true}, "tools": {"listChanged": true}},
            "protocolVersion": version,
            "serverInfo": {
                "name": "kubernetes-mcp-server",
                "title": "kubernetes-mcp-server",
                "version": "0.0.0",
                "websiteUrl": "https://github.com/containers/kubernetes-mcp-server"
            }
        });
        return sse_one(&result(&id, r), Some(&sid));
    }
    let Some(sid) = session_id else {
        return text(StatusCode::BAD_REQUEST, "missing Mcp-Session-Id header");
    };
    let Some(session) = inner.session(&sid) else {
        return text(StatusCode::NOT_FOUND, "session not found");
    };
    let Some(id) = id else {
        // Notifications and responses.
        return StatusCode::ACCEPTED.into_response();
    };
    if method.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    let reply = match method.as_str() {
        "ping" => {
            inner.counters.pings.fetch_add(1, Ordering::Relaxed);
            result(&id, json!({}))
        }
        "logging/setLevel" => {
            let level = params
                .get("level")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            *session.level.lock().unwrap() = Some(level);
            result(&id, json!({}))
        }
        "tools/list" => result(&id, json!({"tools": tools()})),
        "tools/call" => {
            let name = params
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let args = params
                .get("arguments")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            match name.as_str() {
                "events_subscribe" => {
                    if inner
                        .hang_subscribe
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        // Like the faults-mode informer sync that never ends
                        // (§2.4): hold the request until restart/shutdown.
                        inner.epoch().cancelled().await;
                        return text(StatusCode::SERVICE_UNAVAILABLE, "server restarting");
                    }
                    let (t, e) = subscribe(inner, &session, &args);
                    result(&id, tool_text(t, e))
                }
                "events_unsubscribe" => {
                    let (t, e) = unsubscribe(inner, &session, &args);
                    result(&id, tool_text(t, e))
                }
                "events_list_subscriptions" => {
                    inner.counters.list_checks.fetch_add(1, Ordering::Relaxed);
                    result(&id, tool_text(list_subscriptions(inner, &session), false))
                }
                "events_list" => result(
                    &id,
                    tool_text("# No events found in the cluster\n".to_string(), false),
                ),
                other => rpc_error(&id, -32602, &format!("unknown tool {other:?}")),
            }
        }
        _ => rpc_error(&id, -32601, "method not found"),
    };
    sse_one(&reply, None)
}

fn subscribe(inner: &Inner, session: &Session, args: &Map<String, Value>) -> (String, bool) {
    inner.counters.subscribes.fetch_add(1, Ordering::Relaxed);
    // ParseFiltersFromMap: anything that is not a non-empty string is "events".
    let mode = args
        .get("mode")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or("events")
        .to_string();
    let mut filters = Map::new();
    if let Some(ns) = args.get("namespaces").and_then(Value::as_array) {
        let ns: Vec<Value> = ns.iter().filter(|v| v.is_string()).cloned().collect();
        if !ns.is_empty() {
            filters.insert("namespaces".into(), Value::Array(ns));
        }
    }
    for k in [
        "labelSelector",
        "involvedKind",
        "involvedName",
        "involvedNamespace",
        "type",
        "reason",
    ] {
        if let Some(v) = args
            .get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
        {
            filters.insert(k.into(), Value::String(v.into()));
        }
    }
    let ty = filters.get("type").and_then(Value::as_str).unwrap_or("");
    if !ty.is_empty() && ty != "Normal" && ty != "Warning" {
        return (
            "invalid subscription filters: invalid type: must be 'Normal', 'Warning', or empty"
                .into(),
            true,
        );
    }
    if ty == "Normal" && mode == "faults" {
        return (
            "invalid subscription filters: faults mode cannot filter for Normal events".into(),
            true,
        );
    }
    let modes_ok = mode == "events"
        || mode == "faults"
        || (mode == "resource-faults" && inner.opts.legacy_resource_faults);
    if !modes_ok {
        let allowed = if inner.opts.legacy_resource_faults {
            "must be 'events', 'faults', or 'resource-faults'"
        } else {
            "must be 'events' or 'faults'"
        };
        return (
            format!("failed to create subscription: invalid mode: {allowed}"),
            true,
        );
    }
    if session
        .subs
        .lock()
        .unwrap()
        .iter()
        .filter(|x| x.active)
        .count()
        >= MAX_PER_SESSION
    {
        return (
            format!(
                "failed to create subscription: session has reached maximum subscriptions ({MAX_PER_SESSION})"
            ),
            true,
        );
    }
    if inner.active_total() >= MAX_GLOBAL {
        return (
            format!(
                "failed to create subscription: server has reached maximum subscriptions ({MAX_GLOBAL})"
            ),
            true,
        );
    }
    let sub = Sub {
        id: format!("sub-{}", super::random_hex(8)),
        mode: mode.clone(),
        filters: filters.clone(),
        created_at: now_rfc3339(),
        active: true,
        degraded: false,
    };
    let body = json!({
        "cluster": inner.opts.cluster,
        "createdAt": sub.created_at,
        "filters": filters,
        "mode": mode,
        "status": "active",
        "subscriptionId": sub.id,
    });
    session.subs.lock().unwrap().push(sub);
    inner.changed.notify_waiters();
    (
        format!(
            "# Event Subscription Created\n\n{}\n\nYou will receive event notifications via the logging/message protocol.",
            marshal_indent(&body)
        ),
        false,
    )
}

fn unsubscribe(inner: &Inner, session: &Session, args: &Map<String, Value>) -> (String, bool) {
    let Some(id) = args
        .get("subscriptionId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return ("subscriptionId is required".into(), true);
    };
    let mut subs = session.subs.lock().unwrap();
    let Some(sub) = subs.iter_mut().find(|x| x.id == id && x.active) else {
        return (
            "failed to cancel subscription: subscription not found".into(),
            true,
        );
    };
    // The watcher of a faults subscription is never stopped (§5.6c): it
    // stays in the list as a zombie that still emits while the session lives.
    sub.active = false;
    inner.counters.unsubscribes.fetch_add(1, Ordering::Relaxed);
    inner.changed.notify_waiters();
    let body = json!({"cancelled": true, "status": "success", "subscriptionId": id});
    (
        format!("# Subscription Cancelled\n\n{}", marshal_indent(&body)),
        false,
    )
}

fn list_subscriptions(inner: &Inner, session: &Session) -> String {
    let subs: Vec<Value> = session
        .subs
        .lock()
        .unwrap()
        .iter()
        .filter(|x| x.active)
        .map(|x| {
            json!({
                "cluster": inner.opts.cluster,
                "createdAt": x.created_at,
                "degraded": x.degraded,
                "filters": x.filters,
                "mode": x.mode,
                "subscriptionId": x.id,
            })
        })
        .collect();
    let body = json!({"total": subs.len(), "subscriptions": subs});
    format!("# Active Subscriptions\n\n{}", marshal_indent(&body))
}

fn tools() -> Value {
    let ro = |title: &str, open: bool| json!({"title": title, "readOnlyHint": true, "destructiveHint": false, "openWorldHint": open});
    json!([
        {
            "name": "events_subscribe",
            "title": "Events: Subscribe",
            "description": "Subscribe to Kubernetes event notifications in real-time. Requires HTTP/SSE transport (start server with --port). Client must call logging/setLevel before receiving notifications.",
            "annotations": ro("Events: Subscribe", true),
            "inputSchema": {"type": "object", "properties": {
                "mode": {"type": "string", "enum": ["events", "faults"], "default": "events"},
                "namespaces": {"type": "array", "items": {"type": "string"}},
                "labelSelector": {"type": "string"},
                "involvedKind": {"type": "string"},
                "involvedName": {"type": "string"},
                "involvedNamespace": {"type": "string"},
                "type": {"type": "string", "enum": ["Normal", "Warning"]},
                "reason": {"type": "string"}
            }}
        },
        {
            "name": "events_unsubscribe",
            "title": "Events: Unsubscribe",
            "description": "Cancel an event subscription.",
            "annotations": ro("Events: Unsubscribe", false),
            "inputSchema": {"type": "object", "properties": {"subscriptionId": {"type": "string"}}, "required": ["subscriptionId"]}
        },
        {
            "name": "events_list_subscriptions",
            "title": "Events: List Subscriptions",
            "description": "List the active event subscriptions of this session.",
            "annotations": ro("Events: List Subscriptions", false),
            "inputSchema": {"type": "object", "properties": {}}
        },
        {
            "name": "events_list",
            "title": "Events: List",
            "description": "List all the Kubernetes events in the current cluster from all namespaces",
            "annotations": ro("Events: List", true),
            "inputSchema": {"type": "object", "properties": {"namespace": {"type": "string"}}}
        }
    ])
}
