//! A faithful test double of the events-enabled kubernetes-mcp-server
//! (`docs/mcp-events-protocol.md`; quoted section names below refer to it), scriptable from a
//! JSON-lines scenario, usable in-process (tests, the embedded demo) and as
//! the `mcp-test-server` binary.
//!
//! The MCP protocol layer is rmcp's server side (`rmcp_handler.rs`: a
//! `ServerHandler` served by `StreamableHttpService` with a
//! `LocalSessionManager`, stateful, no SSE keep-alive, no priming events).
//! What rmcp does not do, and the Go server does, sits around it (`http.rs`,
//! an axum front handler) and in the handler:
//!
//! * `logging/setLevel` gating (nothing before it, nothing below the level,
//!   "Session setup"): rmcp sends whatever the handler asks it to, so the handler gates;
//! * silent cancellation of a subscription whose session has no open GET
//!   stream at delivery time ("Delivery"): rmcp would cache the notification for a
//!   later stream, so the front tracks open GET streams per session and the
//!   handler checks before sending;
//! * zombie fault watchers that keep sending with the old id after a
//!   cancellation while the session lives ("Duplicates", switchable);
//! * the four `events_*` tools with Go `MarshalIndent` result texts ("Tools"),
//!   error texts with `isError` ("Tools"), `-32602 unknown tool`, the
//!   10-per-session and 100-per-server limits; nothing persisted across restart;
//! * the go-sdk HTTP surface where rmcp differs: 400 for `Last-Event-ID` (no
//!   resumption is offered: the real server has no event store), 409 for a
//!   second GET (rmcp would open a silent "shadow" stream), 404 with Go's text
//!   for unknown sessions, 204 for DELETE (rmcp: 202), 400 for a bad `Accept`
//!   (rmcp: 406), a missing session on GET (rmcp: 400/406 → 405), a body that
//!   is not a JSON object (rmcp: 415) and a protocol version outside go-sdk's
//!   list (rmcp knows newer ones);
//! * SSE framing: rmcp numbers every event (`id: N`) even without an event
//!   store; the front rewrites each rmcp frame to go-sdk's `event: message` +
//!   `data:` form without `id:`/`retry:` lines ("Transport"), so a client never
//!   learns an event id and never tries a `Last-Event-ID` resumption that the
//!   real server would not offer;
//! * no replay: every new GET stream of a session starts with rmcp re-sending
//!   its cache of earlier standalone messages; the front drops those frames
//!   (go-sdk never re-sends), so a reconnecting client sees only new ones;
//! * scripted failure modes: cut GET streams, forget sessions / restart
//!   (a fresh rmcp service and session manager, so old ids get 404), hang a
//!   subscribe, freeze/thaw, answer 401/429 (`fail_next`, `require_token`),
//!   and a frame that is not JSON (`garbage_frame`, spliced into the GET body).
//!
//! Remaining differences from the Go server, none of which the runner can
//! observe: session ids are rmcp's UUIDs (go-sdk: 26 base32 characters;
//! clients treat them as opaque); rmcp answers a POST's headers (200, SSE)
//! before the handler has run, so a hung `events_subscribe` is a 200 whose
//! body never comes, and on restart that body is cut instead of a 503 (either
//! way the client's request fails); rmcp rejects a POST without
//! `Content-Type: application/json` with 415 (go-sdk does not look at it;
//! every MCP client sends it); a delivery that races a GET stream closing can
//! land in rmcp's cache and reach the next stream (go-sdk fails it and cancels
//! the subscription) — the window is the few microseconds between the
//! open-stream check and rmcp's write.

mod gojson;
mod http;
mod rmcp_handler;
pub mod scenario;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use gojson::{marshal_indent, now_rfc3339};
pub use scenario::{Scenario, Step};

/// Protocol versions the Go server accepts (go-sdk v1.2.0).
pub const SUPPORTED_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
pub const MAX_PER_SESSION: usize = 10;
pub const MAX_GLOBAL: usize = 100;

/// How the server is set up (flags of the real server, plus test knobs).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The kubeconfig context name reported as `cluster` ("" = in-cluster).
    pub cluster: String,
    /// Faults-mode watchers keep sending after cancellation ("Duplicates").
    pub zombies: bool,
    /// Like `--require-oauth`: 401 without `Authorization: Bearer <token>`.
    pub require_token: Option<String>,
    /// Accept `resource-faults` (servers built from 2c6d8a6..733134c^).
    pub legacy_resource_faults: bool,
    /// Frames buffered per GET stream before a delivery waits (2 s, then fails).
    pub stream_capacity: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            cluster: "kind-events-test".into(),
            zombies: true,
            require_token: None,
            legacy_resource_faults: false,
            stream_capacity: 1024,
        }
    }
}

/// Counters a test can assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Notifications written to a GET stream (what a client can receive).
    pub delivered: u64,
    /// Deliveries skipped because the session's level gates them.
    pub gated: u64,
    /// Subscriptions cancelled because their session had no GET stream.
    pub silently_cancelled: u64,
    pub sessions_created: u64,
    pub subscribes: u64,
    pub unsubscribes: u64,
    pub deletes: u64,
    pub get_streams: u64,
    pub pings: u64,
    pub list_checks: u64,
    pub restarts: u64,
    /// Active (listed, not cancelled) subscriptions right now.
    pub active_subscriptions: u64,
    pub sessions: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    gated: AtomicU64,
    silently_cancelled: AtomicU64,
    sessions_created: AtomicU64,
    subscribes: AtomicU64,
    unsubscribes: AtomicU64,
    deletes: AtomicU64,
    get_streams: AtomicU64,
    pings: AtomicU64,
    list_checks: AtomicU64,
    restarts: AtomicU64,
}

#[derive(Debug, Clone)]
struct Sub {
    id: String,
    mode: String,
    filters: Map<String, Value>,
    created_at: String,
    active: bool,
    degraded: bool,
}

/// The open GET stream of a session, as seen by the HTTP front.
struct StreamSlot {
    generation: u64,
    /// Raw frames spliced into the GET body (`garbage_frame`); closed when
    /// the body is gone, so it also tells whether the stream is open.
    inject: mpsc::Sender<Bytes>,
    kill: CancellationToken,
    /// Set once rmcp has attached its standalone stream to this GET (its
    /// response is out). Before that, a notification would be cached by
    /// rmcp instead of failing like go-sdk's write does.
    ready: Arc<std::sync::atomic::AtomicBool>,
    /// Makes the GET's TCP connection close with a reset.
    reset: Option<Arc<std::sync::atomic::AtomicBool>>,
}

#[derive(Default)]
struct Session {
    level: Mutex<Option<String>>,
    stream: Mutex<Option<StreamSlot>>,
    subs: Mutex<Vec<Sub>>,
    /// rmcp's handle to the client, set at initialize.
    peer: Mutex<Option<rmcp::Peer<rmcp::RoleServer>>>,
    /// Highest standalone-stream event index rmcp numbered and the front
    /// passed on (to drop rmcp's replays on a new GET stream).
    common_seen: Mutex<Option<u64>>,
}

impl Session {
    /// The injection channel of the open GET stream, if one is open.
    fn stream_tx(&self) -> Option<mpsc::Sender<Bytes>> {
        self.stream
            .lock()
            .unwrap()
            .as_ref()
            .filter(|s| {
                !s.inject.is_closed() && !s.kill.is_cancelled() && s.ready.load(Ordering::Acquire)
            })
            .map(|s| s.inject.clone())
    }
    /// Cuts the GET stream. The slot stays until the body is gone (its
    /// guard clears it), so a reconnect can wait for rmcp to see the old
    /// stream closed.
    fn kill_stream(&self) {
        if let Some(s) = self.stream.lock().unwrap().as_ref() {
            s.kill.cancel();
        }
    }
    /// Cuts the GET stream with a TCP reset (abortive close).
    fn reset_stream(&self) {
        if let Some(s) = self.stream.lock().unwrap().as_ref() {
            if let Some(r) = &s.reset {
                r.store(true, Ordering::Release);
            }
            s.kill.cancel();
        }
    }
}

struct FailNext {
    status: u16,
    remaining: u64,
    retry_after: Option<String>,
}

struct Serving {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

pub(crate) struct Inner {
    opts: ServerOptions,
    addr: Mutex<SocketAddr>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    fail_next: Mutex<Option<FailNext>>,
    hang_subscribe: AtomicU64,
    /// While true every request stalls (TCP open, no answer).
    frozen: watch::Sender<bool>,
    /// Cancelled on restart/shutdown: releases hung requests.
    epoch: Mutex<CancellationToken>,
    counters: Counters,
    changed: Notify,
    stream_gen: AtomicU64,
    serving: Mutex<Option<Serving>>,
    /// The rmcp service of the current server "incarnation" (replaced when
    /// sessions are forgotten, so rmcp forgets them too).
    mcp: Mutex<Option<http::Mcp>>,
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rand::random_range(0..16u32), 16).expect("hex digit"))
        .collect()
}

fn level_rank(l: &str) -> u8 {
    match l {
        "info" => 1,
        "notice" => 2,
        "warning" => 3,
        "error" => 4,
        "critical" => 5,
        "alert" => 6,
        "emergency" => 7,
        _ => 0, // debug and unknown strings
    }
}

/// A realistic HEAD-shape fault payload ("Notifications"), unique per `i`.
pub fn fault(i: u64) -> Value {
    let kinds = [
        ("CrashLoop", "critical", "Pod", "v1"),
        ("NodeUnhealthy", "critical", "Node", "v1"),
        ("JobFailure", "critical", "Job", "batch/v1"),
        ("DeploymentFailure", "critical", "Deployment", "apps/v1"),
        ("PodCrash", "warning", "Pod", "v1"),
    ];
    let (fault_type, severity, kind, api) = kinds[(i % kinds.len() as u64) as usize];
    let mut resource = json!({
        "apiVersion": api,
        "kind": kind,
        "name": format!("workload-{i}"),
        "uid": format!("00000000-0000-4000-8000-{i:012x}"),
    });
    if kind != "Node" {
        resource["namespace"] = json!("default");
    }
    json!({
        "cluster": "kind-events-test",
        "faultId": format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        "faultType": fault_type,
        "severity": severity,
        "resource": resource,
        "context": format!("{fault_type} detected on {kind} workload-{i}"),
        "timestamp": now_rfc3339(),
    })
}

/// Payloads the runner must count as invalid and skip.
pub fn malformed(i: u64) -> Value {
    match i % 5 {
        0 => json!("not an object"),
        1 => json!(42),
        2 => json!([1, 2, 3]),
        3 => json!({"faultId": "x", "severity": 5, "resource": "nope"}),
        _ => json!({"cluster": "c", "faultType": "CrashLoop"}),
    }
}

impl Inner {
    fn epoch(&self) -> CancellationToken {
        self.epoch.lock().unwrap().clone()
    }

    fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().unwrap().get(id).cloned()
    }

    fn all_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.lock().unwrap().values().cloned().collect()
    }

    /// Active subscriptions whose session has its GET stream open: the ones
    /// a notification can reach now. (A notification sent before the client
    /// opened its GET stream silently cancels the subscription, "Delivery".)
    fn receivable_total(&self) -> usize {
        self.all_sessions()
            .iter()
            .filter(|s| s.stream_tx().is_some())
            .map(|s| s.subs.lock().unwrap().iter().filter(|x| x.active).count())
            .sum()
    }

    fn active_total(&self) -> usize {
        self.all_sessions()
            .iter()
            .map(|s| s.subs.lock().unwrap().iter().filter(|x| x.active).count())
            .sum()
    }

    fn stats(&self) -> Stats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            delivered: l(&c.delivered),
            gated: l(&c.gated),
            silently_cancelled: l(&c.silently_cancelled),
            sessions_created: l(&c.sessions_created),
            subscribes: l(&c.subscribes),
            unsubscribes: l(&c.unsubscribes),
            deletes: l(&c.deletes),
            get_streams: l(&c.get_streams),
            pings: l(&c.pings),
            list_checks: l(&c.list_checks),
            restarts: l(&c.restarts),
            active_subscriptions: self.active_total() as u64,
            sessions: self.sessions.lock().unwrap().len() as u64,
        }
    }

    /// Delivers to one session like go-sdk's `ServerSession.Log` inside the
    /// manager's `sendNotification`. Returns false when delivery failed.
    async fn deliver(&self, s: &Session, logger: &str, level: &str, data: Value) -> Option<bool> {
        let set = s.level.lock().unwrap().clone();
        match set {
            // No level yet, or below it: nil without sending ("Session setup").
            None => {
                self.counters.gated.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Some(l) if level_rank(level) < level_rank(&l) => {
                self.counters.gated.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            _ => {}
        }
        // No open GET stream: go-sdk fails the write ("Delivery"); rmcp would
        // cache the message for a later stream, so do not hand it over.
        if s.stream_tx().is_none() {
            return Some(false);
        }
        let peer = s.peer.lock().unwrap().clone();
        let Some(peer) = peer else {
            return Some(false);
        };
        let sent = tokio::time::timeout(
            Duration::from_secs(2),
            rmcp_handler::notify(&peer, logger, level, data),
        )
        .await;
        if matches!(sent, Ok(true)) {
            self.counters.delivered.fetch_add(1, Ordering::Relaxed);
            Some(true)
        } else {
            Some(false)
        }
    }

    /// Emits one payload on `logger` to every subscription of that mode.
    async fn emit(&self, logger: &str, level: &str, data: &Value) {
        let mode = logger
            .strip_prefix("kubernetes/")
            .filter(|m| matches!(*m, "faults" | "events" | "resource-faults"));
        for s in self.all_sessions() {
            let Some(mode) = mode else {
                // Diagnostic loggers are not tied to a subscription.
                let _ = self.deliver(&s, logger, level, data.clone()).await;
                continue;
            };
            let targets: Vec<(String, bool)> = s
                .subs
                .lock()
                .unwrap()
                .iter()
                .filter(|x| x.mode == mode)
                .filter(|x| x.active || (self.opts.zombies && x.mode != "events"))
                .map(|x| (x.id.clone(), x.active))
                .collect();
            for (id, active) in targets {
                let mut d = data.clone();
                if let Value::Object(m) = &mut d {
                    m.insert("subscriptionId".into(), Value::String(id.clone()));
                }
                let ok = self.deliver(&s, logger, level, d).await;
                if ok == Some(false) && active {
                    // "Delivery": the manager cancels the subscription, silently.
                    let mut subs = s.subs.lock().unwrap();
                    if let Some(x) = subs.iter_mut().find(|x| x.id == id) {
                        x.active = false;
                    }
                    self.counters
                        .silently_cancelled
                        .fetch_add(1, Ordering::Relaxed);
                    self.changed.notify_waiters();
                }
            }
        }
    }

    async fn subscription_error(&self) {
        for s in self.all_sessions() {
            let ids: Vec<String> = {
                let mut subs = s.subs.lock().unwrap();
                subs.iter_mut()
                    .filter(|x| x.active)
                    .map(|x| {
                        x.degraded = true;
                        x.id.clone()
                    })
                    .collect()
            };
            for id in ids {
                let data = json!({
                    "subscriptionId": id,
                    "cluster": self.opts.cluster,
                    "error": "Watch connection failed after maximum retry attempts",
                    "degraded": true,
                });
                let _ = self
                    .deliver(&s, "kubernetes/subscription_error", "warning", data)
                    .await;
            }
        }
    }

    /// Sends a frame whose data is not JSON at all (a broken proxy, say).
    async fn garbage_frame(&self) {
        for s in self.all_sessions() {
            if let Some(tx) = s.stream_tx() {
                let _ = tx
                    .send(Bytes::from_static(b"event: message\ndata: {not json\n\n"))
                    .await;
            }
        }
    }

    fn kill_streams(&self, cancel_subscriptions: bool, reset: bool) {
        for s in self.all_sessions() {
            if reset {
                s.reset_stream();
            } else {
                s.kill_stream();
            }
            if cancel_subscriptions {
                self.cancel_subs(&s);
            }
        }
        self.changed.notify_waiters();
    }

    fn cancel_subs(&self, s: &Session) {
        for x in s.subs.lock().unwrap().iter_mut().filter(|x| x.active) {
            x.active = false;
            self.counters
                .silently_cancelled
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn cancel_subscriptions(&self) {
        for s in self.all_sessions() {
            self.cancel_subs(&s);
        }
        self.changed.notify_waiters();
    }

    fn forget_sessions(&self) {
        let old: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .unwrap()
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in old {
            s.kill_stream();
        }
        let old_epoch = std::mem::take(&mut *self.epoch.lock().unwrap());
        old_epoch.cancel();
        http::reset_mcp(self);
        self.changed.notify_waiters();
    }
}

/// A running test server. Dropping it stops serving.
pub struct TestServer {
    inner: Arc<Inner>,
    scenario: Option<tokio::task::JoinHandle<()>>,
    finished: watch::Receiver<bool>,
}

impl TestServer {
    /// Starts on 127.0.0.1:0 with default options and runs `scenario`.
    pub async fn start(scenario: Scenario) -> std::io::Result<TestServer> {
        Self::start_with(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ServerOptions::default(),
            scenario,
        )
        .await
    }

    pub async fn start_with(
        addr: SocketAddr,
        opts: ServerOptions,
        scenario: Scenario,
    ) -> std::io::Result<TestServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let inner = Arc::new(Inner {
            opts,
            addr: Mutex::new(listener.local_addr()?),
            sessions: Mutex::new(HashMap::new()),
            fail_next: Mutex::new(None),
            hang_subscribe: AtomicU64::new(0),
            frozen: watch::Sender::new(false),
            epoch: Mutex::new(CancellationToken::new()),
            counters: Counters::default(),
            changed: Notify::new(),
            stream_gen: AtomicU64::new(0),
            serving: Mutex::new(None),
            mcp: Mutex::new(None),
        });
        http::serve(&inner, listener);
        let (done_tx, finished) = watch::channel(false);
        let handle = Control(inner.clone());
        let task = tokio::spawn(async move {
            scenario.run(&handle).await;
            let _ = done_tx.send(true);
        });
        Ok(TestServer {
            inner,
            scenario: Some(task),
            finished,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        *self.inner.addr.lock().unwrap()
    }

    /// The MCP endpoint, `http://127.0.0.1:<port>/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr())
    }

    /// Controls for steering the server from a test (same as scenario steps).
    pub fn control(&self) -> Control {
        Control(self.inner.clone())
    }

    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Completes when the scenario has run its last step.
    pub async fn scenario_finished(&self) {
        let mut rx = self.finished.clone();
        let _ = rx.wait_for(|d| *d).await;
    }

    pub fn is_scenario_finished(&self) -> bool {
        *self.finished.borrow()
    }

    /// Stops the scenario, forgets every session and stops listening.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        if let Some(t) = self.scenario.take() {
            t.abort();
        }
        self.inner.forget_sessions();
        http::stop(&self.inner).await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(t) = self.scenario.take() {
            t.abort();
        }
        self.inner.forget_sessions();
        if let Some(s) = self.inner.serving.lock().unwrap().take() {
            s.stop.cancel();
            s.task.abort();
        }
    }
}

/// Steering handle (cheap to clone; used by scenarios and tests).
#[derive(Clone)]
pub struct Control(Arc<Inner>);

impl Control {
    pub fn stats(&self) -> Stats {
        self.0.stats()
    }
    /// Emits on `kubernetes/faults` at level `warning`.
    pub async fn emit(&self, data: &Value) {
        self.0.emit("kubernetes/faults", "warning", data).await;
    }
    pub async fn emit_with(&self, logger: &str, level: &str, data: &Value) {
        self.0.emit(logger, level, data).await;
    }
    /// `count` distinct faults (see [`fault`]).
    pub async fn storm(&self, count: u64, first: u64) {
        for i in first..first + count {
            self.0.emit("kubernetes/faults", "warning", &fault(i)).await;
        }
    }
    pub async fn malformed(&self, count: u64) {
        for i in 0..count {
            self.0
                .emit("kubernetes/faults", "warning", &malformed(i))
                .await;
        }
    }
    pub async fn garbage_frame(&self) {
        self.0.garbage_frame().await;
    }
    /// Cuts every GET stream; like a delivery attempt during the gap
    /// ("Delivery"), this also cancels the session's subscriptions silently.
    pub fn kill_streams(&self) {
        self.0.kill_streams(true, false);
    }
    /// Cuts every GET stream and leaves subscriptions alone.
    pub fn cut_streams_only(&self) {
        self.0.kill_streams(false, false);
    }
    /// Aborts every GET stream's TCP connection with a reset, as a proxy or
    /// load balancer does. `cancel_subscriptions`: a delivery was attempted
    /// during the gap, so the subscriptions are gone too ("Delivery").
    pub fn reset_streams(&self, cancel_subscriptions: bool) {
        self.0.kill_streams(cancel_subscriptions, true);
    }
    /// Silently cancels every subscription (streams stay open).
    pub fn cancel_subscriptions(&self) {
        self.0.cancel_subscriptions();
    }
    pub async fn subscription_error(&self) {
        self.0.subscription_error().await;
    }
    /// Forgets every session: the next request with an old id gets 404.
    pub fn drop_sessions(&self) {
        self.0.forget_sessions();
    }
    /// Restart: connections cut, sessions forgotten, port closed for `down`.
    pub async fn restart(&self, down: Duration) {
        self.0.counters.restarts.fetch_add(1, Ordering::Relaxed);
        self.0.forget_sessions();
        if !down.is_zero() {
            http::stop(&self.0).await;
            tokio::time::sleep(down).await;
            let addr = *self.0.addr.lock().unwrap();
            // The port was ours a moment ago; retry briefly if it lingers.
            let mut tries = 0;
            let listener = loop {
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(e) if tries < 50 => {
                        tries += 1;
                        tracing::debug!("rebinding {addr}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        tracing::error!("test server cannot rebind {addr}: {e}");
                        return;
                    }
                }
            };
            http::serve(&self.0, listener);
        }
    }
    /// Stalls every request until [`thaw`](Self::thaw) (or a restart):
    /// a frozen server whose connections stay open.
    pub fn freeze(&self) {
        self.0.frozen.send_replace(true);
    }
    pub fn thaw(&self) {
        self.0.frozen.send_replace(false);
    }
    /// The next `count` `events_subscribe` calls never answer.
    pub fn hang_subscribe(&self, count: u64) {
        self.0.hang_subscribe.store(count, Ordering::Relaxed);
    }
    /// The next `count` HTTP requests get `status` (e.g. 401, 429).
    pub fn fail_next(&self, status: u16, count: u64, retry_after: Option<String>) {
        *self.0.fail_next.lock().unwrap() = Some(FailNext {
            status,
            remaining: count,
            retry_after,
        });
    }
    /// Waits until at least `active` subscriptions are active on sessions
    /// with an open GET stream (so that an emission can be delivered).
    pub async fn wait_for_subscriber(&self, active: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.0.changed.notified();
            if self.0.receivable_total() as u64 >= active {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.0.receivable_total() as u64 >= active;
            }
        }
    }
}
