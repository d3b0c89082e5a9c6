//! The fault event model: one runtime type for every payload shape a server
//! may send (docs/mcp-events-protocol.md, "Notifications"), plus the
//! original JSON.
//!
//! Shapes accepted, all mapped onto [`Event`]:
//! * flat with `faultId` (current `kubernetes/faults`),
//! * flat without `faultId` (`kubernetes/resource-faults` era),
//! * legacy nested `{subscriptionId, cluster, event{...}, logs[...]}` (also the
//!   `kubernetes/events` payload): `event.reason` becomes the fault type,
//!   `event.type` the severity (`Warning` → WARNING, `Normal` → INFO).
//!
//! Unknown fields are ignored; a wrong type or a non-object is a parse error.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::severity::Severity;

/// Longest identity field (cluster, namespace, kind, name) accepted. Kubernetes
/// names are at most 253 bytes; anything longer is not from a real cluster.
pub const MAX_NAME_LEN: usize = 253;
/// `context` longer than this is truncated (it may embed captured logs).
pub(crate) const MAX_CONTEXT_LEN: usize = 64 * 1024;

/// Default of the largest payload accepted at intake (`MAX_PAYLOAD_BYTES`).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1 << 20;

static MAX_PAYLOAD_BYTES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_PAYLOAD_BYTES);

/// The largest payload, as compact JSON bytes, that may enter the pipeline:
/// at intake, in `runner replay`, and as a WASM stage's replacement.
pub fn max_payload_bytes() -> usize {
    MAX_PAYLOAD_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sets [`max_payload_bytes`] for the process (the config compiler does,
/// before any stage or source is built).
pub fn set_max_payload_bytes(n: usize) {
    MAX_PAYLOAD_BYTES.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// Size of `v` as compact JSON (what `serde_json::to_string` would
/// produce), counted by walking the tree: no text is built and strings are
/// scanned once, a table lookup per byte. Runs for every payload on the
/// source's thread, so it is kept cheap.
pub(crate) fn json_size(v: &Value) -> usize {
    match v {
        Value::Null => 4,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => number_len(n),
        Value::String(s) => string_len(s),
        Value::Array(a) => 2 + a.len().saturating_sub(1) + a.iter().map(json_size).sum::<usize>(),
        Value::Object(m) => {
            2 + m.len().saturating_sub(1)
                + m.iter()
                    .map(|(k, v)| string_len(k) + 1 + json_size(v))
                    .sum::<usize>()
        }
    }
}

/// Bytes of `s` as a JSON string literal, quotes included, escaped the way
/// serde_json escapes (`\"`, `\\`, `\b\f\n\r\t`, other controls as `\u00XX`).
fn string_len(s: &str) -> usize {
    // Extra bytes each byte costs when escaped (0: written as is).
    const EXTRA: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut i = 0;
        while i < 0x20 {
            t[i] = 5; // \u00XX
            i += 1;
        }
        t[0x08] = 1;
        t[0x09] = 1;
        t[0x0a] = 1;
        t[0x0c] = 1;
        t[0x0d] = 1;
        t[b'"' as usize] = 1;
        t[b'\\' as usize] = 1;
        t
    };
    2 + s.len() + s.bytes().map(|b| EXTRA[b as usize] as usize).sum::<usize>()
}

fn number_len(n: &serde_json::Number) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a number into an infallible sink cannot fail.
    let _ = serde_json::to_writer(&mut c, n);
    c.0
}

/// Which payload layout the server sent (several server versions are in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Current flat payload with `faultId`.
    Flat,
    /// Flat payload without `faultId` (older servers).
    FlatNoFaultId,
    /// Legacy nested `event{...}` payload.
    Nested,
}

/// The Kubernetes object a fault is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    /// `apiVersion`, e.g. `apps/v1`.
    pub api_version: String,
    /// `kind`, e.g. `Pod`.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// Empty for cluster-scoped objects (Nodes).
    pub namespace: String,
    /// The object's UID.
    pub uid: String,
}

/// A validated fault event. Fields are untrusted text from the cluster: never
/// use them unsanitized in paths or command lines.
#[derive(Debug, Clone)]
pub struct Event {
    /// The payload layout it arrived in.
    pub shape: Shape,
    /// The server's id of this fault (`None` from older servers).
    pub fault_id: Option<String>,
    /// The subscription that delivered it, if the server says.
    pub subscription_id: Option<String>,
    /// The cluster it happened in (the routing key).
    pub cluster: String,
    /// What went wrong, e.g. `CrashLoopBackOff`.
    pub fault_type: String,
    /// How bad it is.
    pub severity: Severity,
    /// The object concerned.
    pub resource: Resource,
    /// Free text the server attached (logs, messages); untrusted.
    pub context: String,
    /// Detection time as sent by the server (RFC 3339), if any.
    pub timestamp: Option<String>,
    /// The original payload, unmodified.
    pub raw: Arc<Value>,
    /// The incident this event leads, set by a grouping stage (see
    /// [`crate::group`]); `None` for ungrouped events.
    pub group: Option<Arc<crate::group::Incident>>,
}

/// Why a payload did not become an [`Event`]. Either way the outcome is `invalid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    /// The payload is JSON but not an object (the JSON type it was).
    #[error("payload is not a JSON object (got {0})")]
    NotAnObject(&'static str),
    /// The payload is not JSON, or a field has the wrong type.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// A required field is absent or empty.
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    /// A field is longer than its bound.
    #[error("field `{field}` is too long ({len} bytes, max {max})")]
    TooLong {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The bound in bytes.
        max: usize,
    },
    /// The severity is not one of the known levels.
    #[error("field `severity`: {0}")]
    Severity(String),
    /// A field that must be one line contains a control character.
    #[error("field `{0}` contains a control character")]
    ControlChar(&'static str),
}

impl InvalidEvent {
    /// Short machine-friendly reason for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            InvalidEvent::NotAnObject(_) => "not_an_object",
            InvalidEvent::Malformed(_) => "malformed",
            InvalidEvent::Missing(_) => "missing_field",
            InvalidEvent::TooLong { .. } => "too_long",
            InvalidEvent::Severity(_) => "bad_severity",
            InvalidEvent::ControlChar(_) => "control_char",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResource {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    uid: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFlat {
    #[serde(default)]
    subscription_id: Option<String>,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    fault_id: Option<String>,
    #[serde(default)]
    fault_type: String,
    #[serde(default)]
    severity: String,
    resource: Option<WireResource>,
    #[serde(default)]
    context: String,
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireNestedEvent {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default, rename = "type")]
    type_: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
    involved_object: Option<WireResource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireNested {
    #[serde(default)]
    subscription_id: Option<String>,
    #[serde(default)]
    cluster: String,
    event: WireNestedEvent,
}

/// Shared stand-in for `raw` while the event is built (no allocation).
fn placeholder() -> Arc<Value> {
    static NULL: std::sync::LazyLock<Arc<Value>> =
        std::sync::LazyLock::new(|| Arc::new(Value::Null));
    NULL.clone()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" …[truncated]");
    }
}

/// `s.chars().any(char::is_control)`, with a fast path for the common case:
/// printable ASCII only, checked without branching per byte (vectorized).
fn has_control(s: &str) -> bool {
    let outside = s
        .bytes()
        .fold(0u8, |acc, c| acc | u8::from(c.wrapping_sub(0x20) > 0x5e));
    outside != 0 && s.chars().any(char::is_control)
}

fn check_len(field: &'static str, v: &str) -> Result<(), InvalidEvent> {
    // Identity fields end up in log lines and reports: a control character
    // (newline, escape) there is never from a real cluster and could forge
    // log lines, so the event is invalid.
    if has_control(v) {
        return Err(InvalidEvent::ControlChar(field));
    }
    if v.len() > MAX_NAME_LEN {
        return Err(InvalidEvent::TooLong {
            field,
            len: v.len(),
            max: MAX_NAME_LEN,
        });
    }
    Ok(())
}

impl Event {
    /// Parses and validates a notification's `data`.
    ///
    /// `cluster_fill` names the cluster when the payload's `cluster` is empty
    /// (servers running in-cluster send `""`).
    pub fn from_json(raw: Value, cluster_fill: Option<&str>) -> Result<Event, InvalidEvent> {
        let Value::Object(map) = &raw else {
            return Err(InvalidEvent::NotAnObject(json_type(&raw)));
        };
        let nested = map.contains_key("event") && !map.contains_key("resource");
        let mut ev = if nested {
            let w = WireNested::deserialize(&raw)
                .map_err(|e| InvalidEvent::Malformed(e.to_string()))?;
            let r = w.event.involved_object.unwrap_or(WireResource {
                api_version: String::new(),
                kind: String::new(),
                name: String::new(),
                namespace: String::new(),
                uid: String::new(),
            });
            let severity = match w.event.type_.as_str() {
                "Warning" => Severity::Warning,
                "Normal" => Severity::Info,
                "" => return Err(InvalidEvent::Missing("event.type")),
                other => other
                    .parse::<Severity>()
                    .map_err(|e| InvalidEvent::Severity(e.to_string()))?,
            };
            let namespace = if r.namespace.is_empty() {
                w.event.namespace
            } else {
                r.namespace
            };
            Event {
                shape: Shape::Nested,
                fault_id: None,
                subscription_id: w.subscription_id,
                cluster: w.cluster,
                fault_type: w.event.reason,
                severity,
                resource: Resource {
                    api_version: r.api_version,
                    kind: r.kind,
                    name: r.name,
                    namespace,
                    uid: r.uid,
                },
                context: w.event.message,
                timestamp: w.event.timestamp,
                raw: placeholder(),
                group: None,
            }
        } else {
            let w =
                WireFlat::deserialize(&raw).map_err(|e| InvalidEvent::Malformed(e.to_string()))?;
            let r = w.resource.ok_or(InvalidEvent::Missing("resource"))?;
            if w.severity.is_empty() {
                return Err(InvalidEvent::Missing("severity"));
            }
            let severity = w
                .severity
                .parse::<Severity>()
                .map_err(|e| InvalidEvent::Severity(e.to_string()))?;
            let fault_id = w.fault_id.filter(|f| !f.is_empty());
            Event {
                shape: if fault_id.is_some() {
                    Shape::Flat
                } else {
                    Shape::FlatNoFaultId
                },
                fault_id,
                subscription_id: w.subscription_id,
                cluster: w.cluster,
                fault_type: w.fault_type,
                severity,
                resource: Resource {
                    api_version: r.api_version,
                    kind: r.kind,
                    name: r.name,
                    namespace: r.namespace,
                    uid: r.uid,
                },
                context: w.context,
                timestamp: w.timestamp,
                raw: placeholder(),
                group: None,
            }
        };
        if ev.cluster.is_empty()
            && let Some(fill) = cluster_fill
        {
            ev.cluster = fill.to_string();
        }
        if ev.cluster.is_empty() {
            return Err(InvalidEvent::Missing("cluster"));
        }
        if ev.resource.name.is_empty() {
            return Err(InvalidEvent::Missing(if nested {
                "event.involvedObject.name"
            } else {
                "resource.name"
            }));
        }
        truncate_utf8(&mut ev.context, MAX_CONTEXT_LEN);
        ev.validate()?;
        ev.raw = Arc::new(raw);
        Ok(ev)
    }

    /// The limits every event obeys, whoever produced it (the parser, or a
    /// plugin that replaced it): a cluster and a name, identity fields of
    /// bounded length without control characters.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        if self.cluster.is_empty() {
            return Err(InvalidEvent::Missing("cluster"));
        }
        if self.resource.name.is_empty() {
            return Err(InvalidEvent::Missing("resource.name"));
        }
        check_len("cluster", &self.cluster)?;
        check_len("resource.name", &self.resource.name)?;
        check_len("resource.namespace", &self.resource.namespace)?;
        check_len("resource.kind", &self.resource.kind)?;
        check_len("faultType", &self.fault_type)?;
        check_len("resource.uid", &self.resource.uid)?;
        check_len("resource.apiVersion", &self.resource.api_version)?;
        if let Some(f) = &self.fault_id {
            check_len("faultId", f)?;
        }
        if let Some(s) = &self.subscription_id {
            check_len("subscriptionId", s)?;
        }
        if let Some(t) = &self.timestamp {
            check_len("timestamp", t)?;
        }
        if self.context.len() > MAX_CONTEXT_LEN + 32 {
            return Err(InvalidEvent::TooLong {
                field: "context",
                len: self.context.len(),
                max: MAX_CONTEXT_LEN,
            });
        }
        Ok(())
    }

    /// Parses a JSON text (one line of a recording, a test fixture).
    pub fn from_str(text: &str, cluster_fill: Option<&str>) -> Result<Event, InvalidEvent> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| InvalidEvent::Malformed(e.to_string()))?;
        Event::from_json(v, cluster_fill)
    }

    /// `faultId` when present, else `-` (for log fields).
    pub fn fault_id_or_dash(&self) -> &str {
        self.fault_id.as_deref().unwrap_or("-")
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{} {} {}",
            self.cluster,
            self.resource.namespace,
            self.resource.kind,
            self.resource.name,
            self.fault_type,
            self.severity
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FLAT: &str = r#"{"subscriptionId":"sub-3f9a2c71","cluster":"prod-us-east-1","faultId":"dbe33ea85ad9fc1d",
  "faultType":"CrashLoop","severity":"critical",
  "resource":{"apiVersion":"v1","kind":"Pod","name":"payments-api-7d9f8b6c5-x2k4q","namespace":"payments","uid":"3f1c2e4a-8b7d-4c6e-9a1f-2b3c4d5e6f70"},
  "context":"Container entered CrashLoopBackOff state, restart count: 5",
  "timestamp":"2025-12-20T14:02:11Z"}"#;

    const NODE: &str = r#"{"subscriptionId":"sub-3f9a2c71","cluster":"prod-eu-west-1","faultId":"b54c146f038b3ceb",
 "faultType":"NodeUnhealthy","severity":"critical",
 "resource":{"apiVersion":"v1","kind":"Node","name":"ip-10-42-7-19.eu-west-1.compute.internal","uid":"7c9e6679-7425-40de-944b-e07fc1f90ae7"},
 "context":"Node became unhealthy: Ready=False","timestamp":"2025-12-20T15:02:13+01:00"}"#;

    const NO_FAULT_ID: &str = r#"{"subscriptionId":"sub-0ddc180f","cluster":"kind-events-test","faultType":"CrashLoop","severity":"critical",
 "resource":{"apiVersion":"v1","kind":"Pod","name":"crash-test-pod","namespace":"default","uid":"6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"},
 "context":"Container entered CrashLoopBackOff state","timestamp":"2025-12-19T22:11:10+01:00"}"#;

    const NESTED: &str = r#"{"subscriptionId":"sub-456a1b2c","cluster":"kind-events-test",
 "event":{"namespace":"default","timestamp":"2025-12-19T21:10:02Z","type":"Warning","reason":"BackOff",
          "message":"Back-off restarting failed container crasher",
          "involvedObject":{"apiVersion":"v1","kind":"Pod","name":"crash-test-pod","namespace":"default","uid":"6a1b2c3d"},"count":4},
 "logs":[{"container":"crasher","previous":true,"hasPanic":true,"sample":"panic: boom"}]}"#;

    const EVENTS_MODE: &str = r#"{"subscriptionId":"sub-7e11a9d0","cluster":"kind-events-test","event":{"namespace":"shop","timestamp":"2025-12-20T14:05:02Z","type":"Normal","reason":"ScalingReplicaSet","message":"Scaled up","involvedObject":{"apiVersion":"apps/v1","kind":"Deployment","name":"checkout","namespace":"shop","uid":"5d41"},"count":1}}"#;

    #[test]
    fn flat_current_shape() {
        let e = Event::from_str(FLAT, None).unwrap();
        assert_eq!(e.shape, Shape::Flat);
        assert_eq!(e.fault_id.as_deref(), Some("dbe33ea85ad9fc1d"));
        assert_eq!(e.cluster, "prod-us-east-1");
        assert_eq!(e.severity, Severity::Critical);
        assert_eq!(e.resource.kind, "Pod");
        assert_eq!(e.resource.namespace, "payments");
        assert_eq!(e.fault_type, "CrashLoop");
        assert_eq!(e.timestamp.as_deref(), Some("2025-12-20T14:02:11Z"));
        assert_eq!(e.raw["faultId"], "dbe33ea85ad9fc1d");
    }

    #[test]
    fn node_has_no_namespace() {
        let e = Event::from_str(NODE, None).unwrap();
        assert_eq!(e.resource.namespace, "");
        assert_eq!(e.resource.kind, "Node");
    }

    #[test]
    fn flat_without_fault_id() {
        let e = Event::from_str(NO_FAULT_ID, None).unwrap();
        assert_eq!(e.shape, Shape::FlatNoFaultId);
        assert_eq!(e.fault_id, None);
        assert_eq!(e.fault_id_or_dash(), "-");
    }

    #[test]
    fn legacy_nested_shape() {
        let e = Event::from_str(NESTED, None).unwrap();
        assert_eq!(e.shape, Shape::Nested);
        assert_eq!(e.severity, Severity::Warning);
        assert_eq!(e.fault_type, "BackOff");
        assert_eq!(e.resource.name, "crash-test-pod");
        assert_eq!(e.context, "Back-off restarting failed container crasher");
        assert_eq!(e.raw["logs"][0]["sample"], "panic: boom");
        let e = Event::from_str(EVENTS_MODE, None).unwrap();
        assert_eq!(e.severity, Severity::Info);
        assert_eq!(e.resource.kind, "Deployment");
    }

    #[test]
    fn empty_cluster_is_filled_or_invalid() {
        let text = FLAT.replace("\"prod-us-east-1\"", "\"\"");
        assert_eq!(
            Event::from_str(&text, None).unwrap_err(),
            InvalidEvent::Missing("cluster")
        );
        assert_eq!(
            Event::from_str(&text, Some("in-cluster")).unwrap().cluster,
            "in-cluster"
        );
        // A non-empty cluster is never overridden.
        assert_eq!(
            Event::from_str(FLAT, Some("x")).unwrap().cluster,
            "prod-us-east-1"
        );
    }

    #[test]
    fn malformed_inputs() {
        for (text, kind) in [
            ("not json", "malformed"),
            ("\"a string\"", "not_an_object"),
            ("42", "not_an_object"),
            ("[1,2]", "not_an_object"),
            ("null", "not_an_object"),
            (
                r#"{"cluster":"c","severity":5,"resource":{"name":"n"}}"#,
                "malformed",
            ),
            (
                r#"{"cluster":"c","severity":"critical","resource":"pod"}"#,
                "malformed",
            ),
            (r#"{"cluster":"c","severity":"critical"}"#, "missing_field"),
            (
                r#"{"cluster":"c","severity":"critical","resource":{"kind":"Pod"}}"#,
                "missing_field",
            ),
            (
                r#"{"cluster":"c","resource":{"name":"n"}}"#,
                "missing_field",
            ),
            (
                r#"{"cluster":"c","severity":"high","resource":{"name":"n"}}"#,
                "bad_severity",
            ),
            (
                r#"{"cluster":"c","event":{"type":"Weird","involvedObject":{"name":"n"}}}"#,
                "bad_severity",
            ),
            (r#"{"cluster":"c","event":"x"}"#, "malformed"),
            (
                r#"{"cluster":"c\nFAKE LOG","severity":"critical","resource":{"name":"n"}}"#,
                "control_char",
            ),
            (
                r#"{"cluster":"c","severity":"critical","resource":{"name":"n\u001b[31m"}}"#,
                "control_char",
            ),
        ] {
            let err = Event::from_str(text, None).unwrap_err();
            assert_eq!(err.kind(), kind, "{text}: {err}");
        }
    }

    #[test]
    fn unknown_fields_ignored_and_unicode_kept() {
        let v = json!({"cluster":"c-ü","severity":"Warning","resource":{"name":"pød-名","kind":"Pod","extra":1},
            "future":{"nested":[1,2,3]},"context":"ⓘ ünïcödé"});
        let e = Event::from_json(v, None).unwrap();
        assert_eq!(e.resource.name, "pød-名");
        assert_eq!(e.context, "ⓘ ünïcödé");
    }

    #[test]
    fn control_characters_found_like_char_is_control() {
        let mut samples: Vec<String> = (0u32..0x300)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        samples.extend(
            [
                "",
                "plain",
                "ünï",
                "\u{85}",
                "x\u{9f}",
                "\u{a0}",
                "名\u{7f}",
                "\u{2028}",
            ]
            .map(String::from),
        );
        for s in samples {
            assert_eq!(has_control(&s), s.chars().any(char::is_control), "{s:?}");
        }
    }

    #[test]
    fn json_size_is_the_compact_text_length() {
        let samples = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-12),
            json!(u64::MAX),
            json!(1.5e300),
            json!(0.1),
            json!(""),
            json!(
                "quote \" backslash \\ nl \n tab \t cr \r bs \u{8} ff \u{c} nul \u{0} esc \u{1b} del \u{7f} c1 \u{85} ü 名 \u{2028}"
            ),
            json!([]),
            json!({}),
            json!([1, "a", [null, {}], {"k\n": [true]}]),
            json!({"cluster":"c","resource":{"name":"n","uid":"\u{1}"},"logs":[{"a":1.25,"b":[]}]}),
            serde_json::from_str::<Value>(FLAT).unwrap(),
            serde_json::from_str::<Value>(NESTED).unwrap(),
        ];
        for v in samples {
            assert_eq!(
                json_size(&v),
                serde_json::to_string(&v).unwrap().len(),
                "{v}"
            );
        }
    }

    #[test]
    fn huge_strings() {
        let long_name = "a".repeat(MAX_NAME_LEN + 1);
        let v = json!({"cluster":"c","severity":"critical","resource":{"name": long_name}});
        assert_eq!(Event::from_json(v, None).unwrap_err().kind(), "too_long");
        let long_ctx = "é".repeat(MAX_CONTEXT_LEN);
        let v = json!({"cluster":"c","severity":"critical","resource":{"name":"n"},"context": long_ctx});
        let e = Event::from_json(v, None).unwrap();
        assert!(e.context.len() <= MAX_CONTEXT_LEN + 20);
        assert!(e.context.ends_with("[truncated]"));
        // The original payload is kept whole.
        assert_eq!(
            e.raw["context"].as_str().unwrap().len(),
            MAX_CONTEXT_LEN * 2
        );
    }
}
