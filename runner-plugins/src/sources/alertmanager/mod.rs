//! `kind = "alertmanager"`: an HTTP receiver for Prometheus Alertmanager's
//! webhook (payload version 4) at `POST /webhook`.
//!
//! It answers fast and never waits on the pipeline: Alertmanager retries a
//! failed notification, and a slow receiver delays every other notification
//! of that receiver. Each firing alert is handed to the intake with the
//! non-blocking `Intake::submit`; a resolved alert becomes a cancellation
//! (`Intake::cancel`) keyed by its fingerprint, which travels through the
//! same queue so it cannot overtake the firing alert it withdraws. When the
//! intake refuses anything (full), the answer is 503 so Alertmanager sends
//! the whole group again later; what was refused is already counted
//! `rejected`, and what was accepted comes back as a duplicate.
//!
//! Limits: a body size cap (checked on `Content-Length` and while reading),
//! a body read deadline, and a cap on requests handled at once (503 beyond).
//! Mapping and setup: `docs/alertmanager.md`.

pub(crate) mod config;
pub(crate) mod mapping;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runner_core::{Intake, Source, SourceContext, SourceError};
use serde_json::json;
use tokio::sync::Semaphore;

pub(crate) use config::{AlertmanagerSourceConfig, Auth, Mapping};
use mapping::AlertStatus;

pub(crate) struct AlertmanagerSource {
    cfg: AlertmanagerSourceConfig,
}

impl AlertmanagerSource {
    pub(crate) fn new(cfg: AlertmanagerSourceConfig) -> Self {
        AlertmanagerSource { cfg }
    }
}

/// Request counters of one receiver (logged when it stops). Alerts are
/// counted by the pipeline's `Recorder` like every source's payloads.
#[derive(Default, Debug)]
pub(crate) struct ReceiverStats {
    pub requests: AtomicU64,
    pub unauthorized: AtomicU64,
    /// 503 because `max_concurrent_requests` were already being handled.
    pub busy: AtomicU64,
    pub bad_requests: AtomicU64,
    /// 503 because the intake refused at least one alert of the group.
    pub intake_full: AtomicU64,
    pub firing: AtomicU64,
    pub resolved: AtomicU64,
}

/// Alerts handed to the intake, by fingerprint, with the `startsAt` of
/// their firing episode: Alertmanager re-sends every alert of a group on
/// each change and on retries, and those repeats are duplicates. A resolve
/// forgets the fingerprint, so the next episode is a new event. Bounded:
/// the oldest entries are forgotten first.
struct Seen {
    /// fingerprint → (startsAt, generation of its `order` entry).
    starts: HashMap<String, (String, u64)>,
    /// Insertion order; entries whose generation no longer matches are stale.
    order: VecDeque<(String, u64)>,
    next_gen: u64,
    max: usize,
}

impl Seen {
    fn new(max: usize) -> Seen {
        Seen {
            starts: HashMap::new(),
            order: VecDeque::new(),
            next_gen: 0,
            max,
        }
    }
    fn is_repeat(&self, fingerprint: &str, starts_at: &str) -> bool {
        self.starts
            .get(fingerprint)
            .is_some_and(|(s, _)| s == starts_at)
    }
    fn insert(&mut self, fingerprint: &str, starts_at: &str) {
        let g = self.next_gen;
        self.next_gen += 1;
        self.starts
            .insert(fingerprint.to_string(), (starts_at.to_string(), g));
        self.order.push_back((fingerprint.to_string(), g));
        while self.order.len() > self.max {
            if let Some((old, og)) = self.order.pop_front()
                && self.starts.get(&old).is_some_and(|(_, g)| *g == og)
            {
                self.starts.remove(&old);
            }
        }
    }
    /// O(1): the `order` entry goes stale and is dropped when it reaches the front.
    fn forget(&mut self, fingerprint: &str) {
        self.starts.remove(fingerprint);
    }
}

struct Shared {
    name: Arc<str>,
    seen: Mutex<Seen>,
    cluster_fill: Option<Arc<str>>,
    intake: Intake,
    mapping: Mapping,
    /// The exact `Authorization` credentials expected after the scheme.
    expected: Option<(&'static str, Vec<u8>)>,
    permits: Arc<Semaphore>,
    max_body: usize,
    read_timeout: Duration,
    retry_after: HeaderValue,
    stats: ReceiverStats,
}

/// Standard base64 with padding (what Go's `SetBasicAuth` sends).
fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                out.push(T[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Compares secrets in time independent of where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn expected_auth(auth: &Auth) -> Option<(&'static str, Vec<u8>)> {
    match auth {
        Auth::None => None,
        Auth::Bearer(t) => Some(("Bearer", t.as_bytes().to_vec())),
        Auth::Basic { username, password } => Some((
            "Basic",
            base64(format!("{username}:{password}").as_bytes()).into_bytes(),
        )),
    }
}

fn authorized(s: &Shared, headers: &HeaderMap) -> bool {
    let Some((scheme, want)) = &s.expected else {
        return true;
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let v = value.as_bytes();
    // "<scheme> <credentials>", the scheme case-insensitive (RFC 9110).
    let Some(space) = v.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (got_scheme, rest) = v.split_at(space);
    got_scheme.eq_ignore_ascii_case(scheme.as_bytes()) && ct_eq(rest[1..].trim_ascii(), want)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn retry_later(s: &Shared, body: serde_json::Value) -> Response {
    let mut r = answer(StatusCode::SERVICE_UNAVAILABLE, body);
    r.headers_mut()
        .insert(header::RETRY_AFTER, s.retry_after.clone());
    r
}

fn bad_request(s: &Shared, reason: String) -> Response {
    s.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
    // The body is the payload: one `invalid`, with the reason in the audit log.
    s.intake.invalid(&s.name, &reason);
    answer(
        StatusCode::BAD_REQUEST,
        json!({"status": "invalid", "reason": reason}),
    )
}

async fn webhook(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    s.stats.requests.fetch_add(1, Ordering::Relaxed);
    // Bounded concurrency: beyond the cap, answer at once; Alertmanager retries.
    let Ok(_permit) = s.permits.clone().try_acquire_owned() else {
        s.stats.busy.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(source = %s.name, "alertmanager webhook busy: too many requests at once; answered 503");
        return retry_later(
            &s,
            json!({"status": "busy", "reason": "too many requests at once"}),
        );
    };
    // Before the body is read: an unauthenticated sender costs nothing and
    // is never counted as received.
    if !authorized(&s, &headers) {
        s.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(source = %s.name, "alertmanager webhook: request without valid credentials; answered 401");
        let scheme = s.expected.as_ref().map_or("Bearer", |(sc, _)| *sc);
        let mut r = answer(StatusCode::UNAUTHORIZED, json!({"status": "unauthorized"}));
        if let Ok(v) = HeaderValue::from_str(&format!("{scheme} realm=\"event-runner\"")) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        return r;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_body as u64) {
        return bad_request(
            &s,
            format!(
                "body of {} bytes exceeds max_body_bytes ({})",
                declared.unwrap_or(0),
                s.max_body
            ),
        );
    }
    let bytes = match tokio::time::timeout(s.read_timeout, read_body(body, s.max_body)).await {
        Ok(Ok(b)) => b,
        Ok(Err(why)) => return bad_request(&s, why),
        Err(_) => {
            return bad_request(
                &s,
                format!(
                    "body not received within request_timeout_seconds ({})",
                    s.read_timeout.as_secs()
                ),
            );
        }
    };
    let hook = match mapping::parse(&bytes) {
        Ok(w) => w,
        Err(reason) => return bad_request(&s, reason),
    };
    if hook.truncated_alerts > 0 {
        tracing::warn!(source = %s.name, truncated = hook.truncated_alerts, group = %hook.group_key,
            "alertmanager truncated this group (max_alerts): the missing alerts never reach the runner");
    }
    let (mut accepted, mut repeats, mut refused) = (0u64, 0u64, 0u64);
    let (mut cancels, mut cancels_refused) = (0u64, 0u64);
    for a in &hook.alerts {
        match a.status {
            AlertStatus::Firing => {
                s.stats.firing.fetch_add(1, Ordering::Relaxed);
                if s.seen
                    .lock()
                    .unwrap()
                    .is_repeat(&a.fingerprint, &a.starts_at)
                {
                    s.intake.duplicate(
                        &s.name,
                        "alert already received (same fingerprint and startsAt)",
                    );
                    repeats += 1;
                    continue;
                }
                let payload = mapping::to_payload(&s.mapping, &hook, a, s.cluster_fill.as_deref());
                if s.intake.submit(payload, &s.name, s.cluster_fill.as_ref()) {
                    s.seen.lock().unwrap().insert(&a.fingerprint, &a.starts_at);
                    accepted += 1;
                } else {
                    refused += 1;
                }
            }
            AlertStatus::Resolved => {
                s.stats.resolved.fetch_add(1, Ordering::Relaxed);
                s.seen.lock().unwrap().forget(&a.fingerprint);
                let reason = format!(
                    "alert resolved at {}",
                    a.ends_at.chars().take(40).collect::<String>()
                );
                if s.intake.cancel(&s.name, &a.fingerprint, &reason) {
                    cancels += 1;
                } else {
                    cancels_refused += 1;
                }
            }
        }
    }
    let body = json!({
        "accepted": accepted,
        "duplicates": repeats,
        "refused": refused,
        "resolved": cancels,
        "resolved_refused": cancels_refused,
    });
    if refused > 0 || cancels_refused > 0 {
        s.stats.intake_full.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(source = %s.name, accepted, refused, resolved_refused = cancels_refused,
            "alertmanager webhook: intake full; answered 503 so Alertmanager retries the group");
        let mut b = body;
        b["status"] = json!("retry");
        b["reason"] = json!("intake queue full");
        return retry_later(&s, b);
    }
    tracing::debug!(source = %s.name, accepted, resolved = cancels, group = %hook.group_key, "alertmanager notification received");
    let mut b = body;
    b["status"] = json!("ok");
    answer(StatusCode::OK, b)
}

/// Reads the body, stopping as soon as it exceeds `max` (chunked bodies
/// have no `Content-Length` to check up front).
async fn read_body(body: Body, max: usize) -> Result<Vec<u8>, String> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("cannot read the body: {e}"))?;
        if buf.len() + chunk.len() > max {
            return Err(format!("body exceeds max_body_bytes ({max})"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

#[async_trait]
impl Source for AlertmanagerSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let cfg = self.cfg;
        let fatal = |message: String| SourceError {
            source_name: cfg.name.clone(),
            message,
        };
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| fatal(format!("cannot listen on {}: {e}", cfg.listen)))?;
        let local = listener
            .local_addr()
            .map_err(|e| fatal(format!("listener address: {e}")))?;
        let shared = Arc::new(Shared {
            name: Arc::from(cfg.name.as_str()),
            seen: Mutex::new(Seen::new(cfg.max_tracked_alerts)),
            cluster_fill: cfg.cluster.as_deref().map(Arc::from),
            intake: ctx.intake,
            mapping: cfg.mapping.clone(),
            expected: expected_auth(&cfg.auth),
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
            max_body: cfg.max_body_bytes,
            read_timeout: cfg.request_timeout,
            retry_after: HeaderValue::from(cfg.retry_after_seconds),
            stats: ReceiverStats::default(),
        });
        let app = axum::Router::new()
            .route("/webhook", post(webhook))
            .route("/healthz", get(|| async { "ok" }))
            // Our own limit applies (with a 400 and an `invalid` count).
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(shared.clone());
        tracing::info!(
            source = %cfg.name,
            address = %local,
            auth = cfg.auth.describe(),
            auth_origin = %cfg.auth_origin,
            max_body_bytes = cfg.max_body_bytes,
            max_concurrent_requests = cfg.max_concurrent_requests,
            "alertmanager webhook listening"
        );
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(ctx.shutdown.cancelled_owned())
            .await;
        let st = &shared.stats;
        tracing::info!(
            source = %cfg.name,
            requests = st.requests.load(Ordering::Relaxed),
            unauthorized = st.unauthorized.load(Ordering::Relaxed),
            busy = st.busy.load(Ordering::Relaxed),
            bad_requests = st.bad_requests.load(Ordering::Relaxed),
            intake_full = st.intake_full.load(Ordering::Relaxed),
            firing = st.firing.load(Ordering::Relaxed),
            resolved = st.resolved.load(Ordering::Relaxed),
            "alertmanager webhook stopped"
        );
        served.map_err(|e| fatal(format!("webhook server: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("am:s3cr3t", "YW06czNjcjN0"),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i}");
        }
    }

    #[test]
    fn seen_is_bounded_and_forgets_on_resolve() {
        let mut s = Seen::new(3);
        s.insert("a", "t1");
        assert!(s.is_repeat("a", "t1"));
        assert!(!s.is_repeat("a", "t2"), "a new episode is not a repeat");
        s.forget("a");
        assert!(!s.is_repeat("a", "t1"));
        s.insert("a", "t2");
        for f in ["b", "c", "d"] {
            s.insert(f, "t");
        }
        // The stale first "a" entry and then the live one were evicted.
        assert!(!s.is_repeat("a", "t2"));
        assert!(s.is_repeat("b", "t") && s.is_repeat("d", "t"));
        assert!(s.starts.len() <= 3 && s.order.len() <= 3);
        for i in 0..1000 {
            s.insert(&format!("f{i}"), "t");
            s.forget(&format!("f{i}"));
        }
        assert!(s.starts.len() <= 3 && s.order.len() <= 3);
    }

    #[tokio::test]
    async fn body_reading_stops_at_the_limit() {
        let big = Body::from(vec![b'x'; 2048]);
        let err = read_body(big, 1024).await.unwrap_err();
        assert_eq!(err, "body exceeds max_body_bytes (1024)");
        let ok = read_body(Body::from(vec![b'x'; 1024]), 1024).await.unwrap();
        assert_eq!(ok.len(), 1024);
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
