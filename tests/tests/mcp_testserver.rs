//! The test MCP server speaks the events server's protocol
//! (docs/mcp-events-protocol.md): checked with raw HTTP so the rmcp client
//! cannot paper over it.

use std::time::Duration;

use futures_util_shim::next_frame;
use mcp_testserver::{Scenario, TestServer, fault};
use serde_json::{Value, json};

const ACCEPT: &str = "application/json, text/event-stream";

struct Client {
    http: reqwest::Client,
    url: String,
    session: Option<String>,
    id: u64,
}

impl Client {
    fn new(url: String) -> Self {
        Client {
            http: reqwest::Client::new(),
            url,
            session: None,
            id: 0,
        }
    }

    async fn post_raw(&self, body: Value) -> reqwest::Response {
        let mut req = self
            .http
            .post(&self.url)
            .header("accept", ACCEPT)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        req.send().await.unwrap()
    }

    /// A request; returns the JSON-RPC message from the one-event SSE body.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let r = self
            .post_raw(json!({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params}))
            .await;
        assert_eq!(r.status(), 200, "{method}");
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        if let Some(s) = r.headers().get("mcp-session-id") {
            self.session = Some(s.to_str().unwrap().to_string());
        }
        let body = r.text().await.unwrap();
        assert!(body.starts_with("event: message\ndata: "), "{body:?}");
        assert!(!body.contains("\nid:"), "no event ids: {body:?}");
        serde_json::from_str(body.trim_start_matches("event: message\ndata: ").trim()).unwrap()
    }

    async fn init(&mut self) {
        let r = self
            .call(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
            )
            .await;
        assert_eq!(r["result"]["protocolVersion"], "2025-11-25");
        assert_eq!(r["result"]["serverInfo"]["name"], "kubernetes-mcp-server");
        let s = self.session.clone().unwrap();
        // go-sdk issues 26 base32 characters; the test server's sessions come
        // from rmcp's LocalSessionManager, which issues UUIDs. Clients treat
        // the id as opaque (docs/mcp-events-protocol.md, "Transport"), so the shape is rmcp's here.
        assert_eq!(s.len(), 36, "{s}");
        assert!(s.chars().all(|c| c.is_ascii_hexdigit() || c == '-'), "{s}");
        let n = self
            .post_raw(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(n.status(), 202);
    }

    async fn tool(&mut self, name: &str, args: Value) -> (String, bool) {
        let r = self
            .call("tools/call", json!({"name": name, "arguments": args}))
            .await;
        let res = &r["result"];
        (
            res["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            res["isError"].as_bool().unwrap_or(false),
        )
    }

    async fn get(&self) -> reqwest::Response {
        let mut req = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream");
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        req.send().await.unwrap()
    }
}

/// Minimal SSE frame reader over a streaming body (no extra crates).
mod futures_util_shim {
    pub(crate) async fn next_frame(
        r: &mut reqwest::Response,
        buf: &mut String,
        wait: std::time::Duration,
    ) -> Option<String> {
        loop {
            if let Some(i) = buf.find("\n\n") {
                let frame = buf[..i].to_string();
                buf.drain(..i + 2);
                return Some(frame);
            }
            match tokio::time::timeout(wait, r.chunk()).await {
                Ok(Ok(Some(c))) => buf.push_str(&String::from_utf8_lossy(&c)),
                _ => return None,
            }
        }
    }
}

fn data_of(frame: &str) -> Value {
    let line = frame.lines().find(|l| l.starts_with("data: ")).unwrap();
    serde_json::from_str(&line["data: ".len()..]).unwrap()
}

fn json_in(text: &str) -> Value {
    serde_json::from_str(&text[text.find('{').unwrap()..=text.rfind('}').unwrap()]).unwrap()
}

#[tokio::test]
async fn subscribe_texts_gating_and_delivery() {
    let server = TestServer::start(Scenario::empty()).await.unwrap();
    let c0 = server.control();
    let mut c = Client::new(server.url());
    c.init().await;
    let mut stream = c.get().await;
    assert_eq!(stream.status(), 200);
    // A second concurrent GET conflicts.
    assert_eq!(c.get().await.status(), 409);

    let (text, err) = c.tool("events_subscribe", json!({"mode": "faults"})).await;
    assert!(!err);
    assert!(text.starts_with("# Event Subscription Created\n\n{\n  \"cluster\": \"kind-events-test\",\n  \"createdAt\": "), "{text}");
    assert!(text.ends_with(
        "\n}\n\nYou will receive event notifications via the logging/message protocol."
    ));
    let sub = json_in(&text);
    let id = sub["subscriptionId"].as_str().unwrap().to_string();
    assert!(id.starts_with("sub-") && id.len() == 12, "{id}");
    assert_eq!(sub["filters"], json!({}));
    assert_eq!(sub["status"], "active");

    // Before setLevel nothing is sent, and the subscription survives.
    let mut buf = String::new();
    c0.emit(&fault(1)).await;
    assert!(
        next_frame(&mut stream, &mut buf, Duration::from_millis(300))
            .await
            .is_none()
    );
    assert_eq!(server.stats().gated, 1);
    assert_eq!(server.stats().active_subscriptions, 1);
    // Level "error" still gates warning-level faults.
    c.call("logging/setLevel", json!({"level": "error"})).await;
    c0.emit(&fault(2)).await;
    assert!(
        next_frame(&mut stream, &mut buf, Duration::from_millis(300))
            .await
            .is_none()
    );
    c.call("logging/setLevel", json!({"level": "info"})).await;
    c0.emit(&fault(3)).await;
    let frame = next_frame(&mut stream, &mut buf, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(frame.starts_with("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"data\":"), "{frame}");
    let msg = data_of(&frame);
    assert_eq!(msg["params"]["logger"], "kubernetes/faults");
    assert_eq!(msg["params"]["level"], "warning");
    assert_eq!(msg["params"]["data"]["subscriptionId"], id.as_str());
    assert_eq!(msg["params"]["data"]["faultId"], fault(3)["faultId"]);

    let (text, _) = c.tool("events_list_subscriptions", json!({})).await;
    assert!(
        text.starts_with(
            "# Active Subscriptions\n\n{\n  \"subscriptions\": [\n    {\n      \"cluster\""
        ),
        "{text}"
    );
    let list = json_in(&text);
    assert_eq!(list["total"], 1);
    assert_eq!(list["subscriptions"][0]["degraded"], false);

    // Unsubscribe once; the second call is an error (not idempotent).
    let (text, err) = c
        .tool("events_unsubscribe", json!({"subscriptionId": id}))
        .await;
    assert!(!err, "{text}");
    assert_eq!(
        json_in(&text),
        json!({"cancelled": true, "status": "success", "subscriptionId": id})
    );
    let (text, err) = c
        .tool("events_unsubscribe", json!({"subscriptionId": id}))
        .await;
    assert!(err);
    assert_eq!(
        text,
        "failed to cancel subscription: subscription not found"
    );
    let (text, err) = c.tool("events_unsubscribe", json!({})).await;
    assert!(err && text == "subscriptionId is required");
    // Zombie watcher (docs/mcp-events-protocol.md, "Duplicates"): the
    // cancelled faults subscription still emits.
    c0.emit(&fault(4)).await;
    let frame = next_frame(&mut stream, &mut buf, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        data_of(&frame)["params"]["data"]["subscriptionId"],
        id.as_str()
    );
}

#[tokio::test]
async fn errors_limits_and_http_statuses() {
    let server = TestServer::start(Scenario::empty()).await.unwrap();
    let mut c = Client::new(server.url());
    c.init().await;
    let (t, e) = c
        .tool("events_subscribe", json!({"mode": "resource-faults"}))
        .await;
    assert!(e);
    assert_eq!(
        t,
        "failed to create subscription: invalid mode: must be 'events' or 'faults'"
    );
    let (t, e) = c
        .tool(
            "events_subscribe",
            json!({"mode": "faults", "type": "Normal"}),
        )
        .await;
    assert!(e && t == "invalid subscription filters: faults mode cannot filter for Normal events");
    let (t, e) = c.tool("events_subscribe", json!({"type": "Odd"})).await;
    assert!(e && t.contains("invalid type"));
    // Non-string mode falls back to events; filters echo back.
    let (t, e) = c
        .tool(
            "events_subscribe",
            json!({"mode": 5, "namespaces": ["a", 1]}),
        )
        .await;
    assert!(!e);
    assert_eq!(json_in(&t)["mode"], "events");
    assert_eq!(json_in(&t)["filters"], json!({"namespaces": ["a"]}));
    for _ in 1..10 {
        assert!(
            !c.tool("events_subscribe", json!({"mode": "faults"}))
                .await
                .1
        );
    }
    let (t, e) = c.tool("events_subscribe", json!({"mode": "faults"})).await;
    assert!(e);
    assert_eq!(
        t,
        "failed to create subscription: session has reached maximum subscriptions (10)"
    );
    let r = c
        .call("tools/call", json!({"name": "nope", "arguments": {}}))
        .await;
    assert_eq!(r["error"]["code"], -32602);
    assert_eq!(r["error"]["message"], "unknown tool \"nope\"");
    let r = c.call("tools/list", json!({})).await;
    let names: Vec<&str> = r["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "events_subscribe",
            "events_unsubscribe",
            "events_list_subscriptions",
            "events_list"
        ]
    );
    assert_eq!(c.call("ping", json!({})).await["result"], json!({}));

    // GET with Last-Event-ID: no resumption.
    let r = c
        .http
        .get(&c.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.as_deref().unwrap())
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.unwrap().trim(),
        "malformed Last-Event-ID \"x\""
    );
    // Bad Accept, bad protocol version, GET without session.
    let r = c
        .http
        .post(&c.url)
        .header("accept", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .http
        .post(&c.url)
        .header("accept", ACCEPT)
        .header("mcp-protocol-version", "1999-01-01")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(c.http.get(&c.url).send().await.unwrap().status(), 405);

    // DELETE ends the session; afterwards 404 "session not found".
    let sid = c.session.clone().unwrap();
    let r = c
        .http
        .delete(&c.url)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .post_raw(json!({"jsonrpc": "2.0", "id": 99, "method": "ping"}))
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap().trim(), "session not found");

    // Scripted statuses with Retry-After.
    server.control().fail_next(429, 1, Some("2".into()));
    let r = c
        .http
        .get(format!("http://{}/mcp", server.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
}

#[tokio::test]
async fn undeliverable_notification_cancels_the_subscription_silently() {
    let server = TestServer::start(Scenario::empty()).await.unwrap();
    let mut c = Client::new(server.url());
    c.init().await;
    c.call("logging/setLevel", json!({"level": "info"})).await;
    assert!(
        !c.tool("events_subscribe", json!({"mode": "faults"}))
            .await
            .1
    );
    // No GET stream open at delivery time (docs/mcp-events-protocol.md, "Delivery").
    server.control().emit(&fault(1)).await;
    assert_eq!(server.stats().silently_cancelled, 1);
    assert_eq!(server.stats().delivered, 0);
    let (t, _) = c.tool("events_list_subscriptions", json!({})).await;
    assert_eq!(json_in(&t)["total"], 0);
    assert!(t.contains("\"subscriptions\": []"), "{t}");

    // Restart forgets everything: 404 for the old session.
    server.control().restart(Duration::ZERO).await;
    let r = c
        .post_raw(json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}))
        .await;
    assert_eq!(r.status(), 404);
}
