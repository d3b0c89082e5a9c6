//! HTTP-level checks of what the front adds around rmcp (raw reqwest, so no
//! MCP client can paper over the wire format).

use std::time::Duration;

use serde_json::{Value, json};

use super::{Scenario, ServerOptions, TestServer, fault};

const ACCEPT: &str = "application/json, text/event-stream";

struct Raw {
    http: reqwest::Client,
    url: String,
    session: Option<String>,
    token: Option<String>,
}

impl Raw {
    fn new(url: String) -> Self {
        Raw {
            http: reqwest::Client::new(),
            url,
            session: None,
            token: None,
        }
    }

    async fn post(&mut self, body: Value) -> reqwest::Response {
        let mut req = self
            .http
            .post(&self.url)
            .header("accept", ACCEPT)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        if let Some(s) = r.headers().get("mcp-session-id") {
            self.session = Some(s.to_str().unwrap().to_string());
        }
        r
    }

    async fn call(&mut self, method: &str, params: Value) -> String {
        let r = self
            .post(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .await;
        assert_eq!(r.status(), 200, "{method}");
        r.text().await.unwrap()
    }

    async fn init(&mut self) {
        self.call(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
        )
        .await;
        let r = self
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(r.status(), 202);
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

async fn next_frame(r: &mut reqwest::Response, buf: &mut String, wait: Duration) -> Option<String> {
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

fn fault_id_of(frame: &str) -> Value {
    let data = frame.strip_prefix("event: message\ndata: ").expect(frame);
    let v: Value = serde_json::from_str(data).unwrap();
    v["params"]["data"]["faultId"].clone()
}

#[tokio::test]
async fn frames_are_go_shaped_and_a_new_get_stream_replays_nothing() {
    let server = TestServer::start(Scenario::empty()).await.unwrap();
    let c = server.control();
    let mut m = Raw::new(server.url());
    m.init().await;
    // The POST answer is one go-sdk frame: no id:, no retry:, no priming.
    let body = m.call("logging/setLevel", json!({"level": "info"})).await;
    assert_eq!(
        body,
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"
    );
    let text = m
        .call(
            "tools/call",
            json!({"name": "events_subscribe", "arguments": {"mode": "faults"}}),
        )
        .await;
    assert!(text.contains("Event Subscription Created"), "{text}");
    let mut stream = m.get().await;
    assert_eq!(stream.status(), 200);
    let mut buf = String::new();
    c.emit(&fault(1)).await;
    let f = next_frame(&mut stream, &mut buf, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(!f.contains("\nid:") && !f.contains("retry:"), "{f:?}");
    assert_eq!(fault_id_of(&f), fault(1)["faultId"]);

    // Reconnect on the same session: rmcp would start the new stream with
    // its cache (fault 1 again); the Go server sends only what is new.
    c.cut_streams_only();
    assert!(
        next_frame(&mut stream, &mut buf, Duration::from_secs(5))
            .await
            .is_none()
    );
    let mut stream = m.get().await;
    assert_eq!(stream.status(), 200);
    let mut buf = String::new();
    assert!(
        next_frame(&mut stream, &mut buf, Duration::from_millis(300))
            .await
            .is_none(),
        "replayed: {buf:?}"
    );
    c.emit(&fault(2)).await;
    let f = next_frame(&mut stream, &mut buf, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(fault_id_of(&f), fault(2)["faultId"]);
    assert_eq!(server.stats().delivered, 2);
    assert_eq!(server.stats().get_streams, 2);

    // A frame that is not JSON reaches the open stream as is.
    c.garbage_frame().await;
    let f = next_frame(&mut stream, &mut buf, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(f, "event: message\ndata: {not json");
}

#[tokio::test]
async fn forgotten_and_deleted_sessions_answer_404() {
    let server = TestServer::start(Scenario::empty()).await.unwrap();
    let mut m = Raw::new(server.url());
    m.init().await;
    let mut stream = m.get().await;
    assert_eq!(stream.status(), 200);
    server.control().drop_sessions();
    // The open stream is cut, and rmcp's session manager forgot the id too.
    let mut buf = String::new();
    assert!(
        next_frame(&mut stream, &mut buf, Duration::from_secs(5))
            .await
            .is_none()
    );
    let r = m
        .post(json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(m.get().await.status(), 404);
    assert_eq!(server.stats().sessions, 0);

    // A fresh session works on the fresh rmcp service; DELETE is 204, once.
    m.session = None;
    m.init().await;
    assert!(m.call("ping", json!({})).await.contains("\"result\":{}"));
    assert_eq!(server.stats().pings, 1);
    let del = || {
        m.http
            .delete(&m.url)
            .header("mcp-session-id", m.session.as_deref().unwrap())
            .send()
    };
    assert_eq!(del().await.unwrap().status(), 204);
    assert_eq!(del().await.unwrap().status(), 404);
    assert_eq!(server.stats().deletes, 1);
}

#[tokio::test]
async fn bearer_token_is_required_when_configured() {
    let opts = ServerOptions {
        require_token: Some("s3cret".into()),
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        opts,
        Scenario::empty(),
    )
    .await
    .unwrap();
    let mut m = Raw::new(server.url());
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    assert_eq!(m.post(init.clone()).await.status(), 401);
    m.token = Some("wrong".into());
    assert_eq!(m.post(init.clone()).await.status(), 401);
    m.token = Some("s3cret".into());
    assert_eq!(m.post(init).await.status(), 200);
    assert_eq!(server.stats().sessions_created, 1);
}

/// True when the error's source chain holds a TCP connection reset.
fn is_reset(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionReset
        {
            return true;
        }
        cur = e.source();
    }
    false
}

#[tokio::test]
async fn reset_streams_aborts_the_get_connection_with_a_tcp_reset() {
    let server = TestServer::start(Scenario::empty()).await.unwrap();
    let c = server.control();
    let mut m = Raw::new(server.url());
    m.init().await;
    m.call("logging/setLevel", json!({"level": "info"})).await;
    m.call(
        "tools/call",
        json!({"name": "events_subscribe", "arguments": {"mode": "faults"}}),
    )
    .await;
    let mut stream = m.get().await;
    assert_eq!(stream.status(), 200);
    assert!(c.wait_for_subscriber(1, Duration::from_secs(5)).await);
    // Without cancel the subscription survives the reset (no delivery hit the gap).
    c.reset_streams(false);
    let err = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(e) => return Some(e),
            }
        }
    })
    .await
    .expect("the stream ends");
    let err = err.expect("an error, not a clean end");
    assert!(is_reset(&err), "not a reset: {err:?}");
    assert_eq!(server.stats().active_subscriptions, 1);
    // The session goes on: a new GET stream receives the next fault.
    let mut stream = m.get().await;
    assert_eq!(stream.status(), 200);
    assert!(c.wait_for_subscriber(1, Duration::from_secs(5)).await);
    c.emit(&fault(3)).await;
    let mut buf = String::new();
    let f = next_frame(&mut stream, &mut buf, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(fault_id_of(&f), fault(3)["faultId"]);
}
