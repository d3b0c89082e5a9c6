//! The MCP protocol layer of the test server on rmcp's server side: the
//! `initialize` answer, `logging/setLevel`, `ping` and the four `events_*`
//! tools of the events server ("Session setup"). Session state comes from the
//! HTTP front, which puts the session into the request's extensions.
// rmcp deprecates MCP logging (SEP-2577); the events server is built on it.
#![allow(deprecated)]

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use axum::http::request::Parts;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorData, InitializeRequestParams,
    InitializeResult, ListToolsResult, LoggingLevel, LoggingMessageNotificationParam,
    PaginatedRequestParams, ProtocolVersion, ServerConfig, SetLevelRequestParams, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

use super::gojson::{marshal_indent, now_rfc3339};
use super::{Inner, MAX_GLOBAL, MAX_PER_SESSION, SUPPORTED_VERSIONS, Session, Sub};

/// The session a request belongs to, attached by the HTTP front.
#[derive(Clone)]
pub(super) struct SessionRef(pub(super) Arc<Session>);

/// One handler per rmcp session (rmcp calls the factory per session).
#[derive(Clone)]
pub(super) struct Handler {
    /// Weak: the rmcp service lives inside `Inner`.
    pub(super) inner: Weak<Inner>,
}

/// Sends one `notifications/message`; false when rmcp could not.
pub(super) async fn notify(
    peer: &Peer<RoleServer>,
    logger: &str,
    level: &str,
    data: Value,
) -> bool {
    // Levels outside the MCP set do not occur on the real server.
    let level: LoggingLevel =
        serde_json::from_value(Value::String(level.to_string())).unwrap_or(LoggingLevel::Info);
    peer.notify_logging_message(
        LoggingMessageNotificationParam::new(level, data).with_logger(logger),
    )
    .await
    .is_ok()
}

fn internal(msg: &str) -> ErrorData {
    ErrorData::internal_error(msg.to_string(), None)
}

impl Handler {
    fn inner(&self) -> Result<Arc<Inner>, ErrorData> {
        self.inner
            .upgrade()
            .ok_or_else(|| internal("server stopped"))
    }
}

fn session_of(ctx: &RequestContext<RoleServer>) -> Result<Arc<Session>, ErrorData> {
    ctx.extensions
        .get::<Parts>()
        .and_then(|p| p.extensions.get::<SessionRef>())
        .map(|s| s.0.clone())
        .ok_or_else(|| internal("request without a session"))
}

fn tool_result(text: String, is_error: bool) -> CallToolResponse {
    let mut v = json!({"content": [{"type": "text", "text": text}]});
    if is_error {
        v["isError"] = json!(true);
    }
    let r: CallToolResult = serde_json::from_value(v).expect("valid tool result");
    r.into()
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        // "Session setup"; the fallback version is go-sdk's for unknown asks.
        serde_json::from_value(json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"logging": {}, "prompts": {"listChanged": true}, "tools": {"listChanged": true}},
            "serverInfo": {
                "name": "kubernetes-mcp-server",
                "title": "kubernetes-mcp-server",
                "version": "0.0.0",
                "websiteUrl": "https://github.com/containers/kubernetes-mcp-server"
            }
        }))
        .expect("valid server info")
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Owned(
            SUPPORTED_VERSIONS
                .iter()
                .map(|v| serde_json::from_value(json!(v)).expect("known version"))
                .collect(),
        )
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        context.peer.set_peer_info(request.clone());
        // Notifications to this session go through this peer.
        *session_of(&context)?.peer.lock().unwrap() = Some(context.peer.clone());
        self.negotiate_initialize(&request)
    }

    async fn ping(&self, _context: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.inner()?.counters.pings.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let level = serde_json::to_value(request.level)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        // rmcp does not gate notifications by level: the session keeps it.
        *session_of(&context)?.level.lock().unwrap() = Some(level);
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools: Vec<Tool> = serde_json::from_value(tools()).expect("valid tools");
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let inner = self.inner()?;
        let session = session_of(&context)?;
        let args = request.arguments.clone().unwrap_or_default();
        match request.name.as_ref() {
            "events_subscribe" => {
                if inner
                    .hang_subscribe
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    // Like the faults-mode informer sync that never ends
                    // ("Tools"): hold the request until restart/shutdown.
                    inner.epoch().cancelled().await;
                    return Err(internal("server restarting"));
                }
                let (t, e) = subscribe(&inner, &session, &args);
                Ok(tool_result(t, e))
            }
            "events_unsubscribe" => {
                let (t, e) = unsubscribe(&inner, &session, &args);
                Ok(tool_result(t, e))
            }
            "events_list_subscriptions" => {
                inner.counters.list_checks.fetch_add(1, Ordering::Relaxed);
                Ok(tool_result(list_subscriptions(&inner, &session), false))
            }
            "events_list" => Ok(tool_result(
                "# No events found in the cluster\n".to_string(),
                false,
            )),
            other => Err(ErrorData::invalid_params(
                format!("unknown tool {other:?}"),
                None,
            )),
        }
    }
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
    // The watcher of a faults subscription is never stopped ("Duplicates"): it
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
