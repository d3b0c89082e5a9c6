//! Alertmanager's webhook payload (version 4) and how one alert becomes the
//! runner's flat event payload. The result goes through the same parser and
//! validation as every other source's payloads (`Event::from_json`), so
//! limits (lengths, control characters) are enforced in one place.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::config::Mapping;

/// The webhook body. Unknown fields are ignored; a wrong type is malformed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Webhook {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    #[serde(default)]
    pub receiver: String,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Alert {
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AlertStatus {
    Firing,
    Resolved,
}

/// Parses and checks a body. The error is the reason sent back with 400.
pub(crate) fn parse(body: &[u8]) -> Result<Webhook, String> {
    let w: Webhook =
        serde_json::from_slice(body).map_err(|e| format!("not an Alertmanager webhook: {e}"))?;
    if w.version != "4" {
        return Err(format!(
            "unsupported webhook payload version {:?} (supported: \"4\")",
            w.version.chars().take(16).collect::<String>()
        ));
    }
    if let Some(i) = w.alerts.iter().position(|a| a.fingerprint.is_empty()) {
        return Err(format!("alerts[{i}]: empty fingerprint"));
    }
    Ok(w)
}

/// Kind used when no resource label matches: the alert itself is the subject.
pub(crate) const ALERT_KIND: &str = "Alert";

fn first<'a>(labels: &'a BTreeMap<String, String>, names: &[String]) -> Option<&'a str> {
    names
        .iter()
        .filter_map(|n| labels.get(n))
        .map(String::as_str)
        .find(|v| !v.is_empty())
}

/// The flat payload for one firing alert (see `docs/alertmanager.md`).
/// Without the cluster label (or an empty one) the source's `cluster_fill`
/// is written in, so the stored event names it; without either the event is
/// `invalid` (missing cluster), never guessed.
pub(crate) fn to_payload(m: &Mapping, w: &Webhook, a: &Alert, cluster_fill: Option<&str>) -> Value {
    let alertname = a.labels.get("alertname").map_or("", String::as_str);
    let cluster = a
        .labels
        .get(&m.cluster_label)
        .map(String::as_str)
        .filter(|c| !c.is_empty())
        .or(cluster_fill)
        .unwrap_or("");
    let namespace = first(&a.labels, &m.namespace_labels).unwrap_or("");
    let (kind, name) = m
        .resource_labels
        .iter()
        .find_map(|(label, kind)| {
            a.labels
                .get(label)
                .filter(|v| !v.is_empty())
                .map(|v| (kind.as_str(), v.as_str()))
        })
        .unwrap_or((
            ALERT_KIND,
            if alertname.is_empty() {
                a.fingerprint.as_str()
            } else {
                alertname
            },
        ));
    let severity = a
        .labels
        .get(&m.severity_label)
        .and_then(|v| m.severity_map.get(&v.trim().to_ascii_lowercase()))
        .copied()
        .unwrap_or(m.default_severity);
    let mut context = String::new();
    for key in &m.context_annotations {
        if let Some(v) = a.annotations.get(key).filter(|v| !v.trim().is_empty()) {
            if !context.is_empty() {
                context.push('\n');
            }
            context.push_str(key);
            context.push_str(": ");
            context.push_str(v.trim());
        }
    }
    let mut alert = Map::new();
    alert.insert("status".into(), json!("firing"));
    alert.insert("labels".into(), json!(a.labels));
    alert.insert("annotations".into(), json!(a.annotations));
    alert.insert("startsAt".into(), json!(a.starts_at));
    alert.insert("endsAt".into(), json!(a.ends_at));
    alert.insert("generatorURL".into(), json!(a.generator_url));
    alert.insert("fingerprint".into(), json!(a.fingerprint));
    alert.insert("receiver".into(), json!(w.receiver));
    alert.insert("groupKey".into(), json!(w.group_key));
    alert.insert("externalURL".into(), json!(w.external_url));
    json!({
        "cluster": cluster,
        "faultId": a.fingerprint,
        "faultType": alertname,
        "severity": severity.as_str(),
        "resource": {"kind": kind, "name": name, "namespace": namespace},
        "context": context,
        "timestamp": a.starts_at,
        "alert": Value::Object(alert),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_core::{Event, Severity};

    const BODY: &str = r#"{
      "version": "4", "groupKey": "{}:{alertname=\"KubePodCrashLooping\"}", "truncatedAlerts": 0,
      "status": "firing", "receiver": "runner",
      "groupLabels": {"alertname": "KubePodCrashLooping"},
      "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
      "alerts": [
        {"status": "firing",
         "labels": {"alertname": "KubePodCrashLooping", "cluster": "prod-eu", "namespace": "payments",
                    "pod": "api-7d9f-x2k4q", "deployment": "api", "severity": "critical", "job": "kube-state-metrics"},
         "annotations": {"summary": "Pod is crash looping.", "description": "Pod payments/api restarted 5 times",
                         "runbook_url": "https://runbooks/podcrashlooping"},
         "startsAt": "2026-11-29T09:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "http://prom/graph", "fingerprint": "c2a7e3b1d4f5a6b7"},
        {"status": "resolved", "labels": {"alertname": "KubeNodeNotReady", "node": "ip-10-0-0-1", "severity": "warning"},
         "annotations": {}, "startsAt": "2026-11-29T08:00:00Z", "endsAt": "2026-11-29T09:01:00Z",
         "generatorURL": "", "fingerprint": "00aa11bb22cc33dd"}
      ]}"#;

    fn event(m: &Mapping, w: &Webhook, i: usize, fill: Option<&str>) -> Event {
        Event::from_json(to_payload(m, w, &w.alerts[i], fill), None).expect("valid event")
    }

    #[test]
    fn firing_alert_maps_onto_an_event() {
        let w = parse(BODY.as_bytes()).unwrap();
        assert_eq!(w.alerts[1].status, AlertStatus::Resolved);
        let m = Mapping::default();
        let e = event(&m, &w, 0, None);
        assert_eq!(e.cluster, "prod-eu");
        assert_eq!(e.fault_id.as_deref(), Some("c2a7e3b1d4f5a6b7"));
        assert_eq!(e.fault_type, "KubePodCrashLooping");
        assert_eq!(e.severity, Severity::Critical);
        // `pod` comes before `deployment` in the precedence list.
        assert_eq!(e.resource.kind, "Pod");
        assert_eq!(e.resource.name, "api-7d9f-x2k4q");
        assert_eq!(e.resource.namespace, "payments");
        assert_eq!(
            e.context,
            "summary: Pod is crash looping.\ndescription: Pod payments/api restarted 5 times\nrunbook_url: https://runbooks/podcrashlooping"
        );
        assert_eq!(e.timestamp.as_deref(), Some("2026-11-29T09:00:00Z"));
        // The whole alert travels with the event for the agent.
        assert_eq!(e.raw["alert"]["labels"]["job"], "kube-state-metrics");
        assert_eq!(e.raw["alert"]["receiver"], "runner");
    }

    #[test]
    fn precedence_cluster_fill_and_fallbacks() {
        let w = parse(BODY.as_bytes()).unwrap();
        let mut m = Mapping::default();
        // Node alert: no cluster label, no namespace → the source's fill.
        let e = event(&m, &w, 1, Some("fill"));
        assert_eq!(e.cluster, "fill");
        assert_eq!(
            (e.resource.kind.as_str(), e.resource.name.as_str()),
            ("Node", "ip-10-0-0-1")
        );
        assert_eq!(e.resource.namespace, "");
        assert_eq!(e.severity, Severity::Warning);
        // Without a fill the event is invalid (no cluster), never guessed.
        let err = Event::from_json(to_payload(&m, &w, &w.alerts[1], None), None).unwrap_err();
        assert_eq!(err.kind(), "missing_field");
        // Reordered precedence and another cluster label.
        m.resource_labels = vec![("deployment".into(), "Deployment".into())];
        m.cluster_label = "k8s_cluster".into();
        let e = event(&m, &w, 0, Some("fill"));
        assert_eq!(
            (e.resource.kind.as_str(), e.resource.name.as_str()),
            ("Deployment", "api")
        );
        assert_eq!(e.cluster, "fill");
        // No resource label at all: the alert is the subject.
        m.resource_labels = vec![("statefulset".into(), "StatefulSet".into())];
        let e = event(&m, &w, 0, Some("c"));
        assert_eq!(
            (e.resource.kind.as_str(), e.resource.name.as_str()),
            (ALERT_KIND, "KubePodCrashLooping")
        );
    }

    #[test]
    fn severity_mapping_and_default() {
        let mut w = parse(BODY.as_bytes()).unwrap();
        let mut m = Mapping::default();
        for (label, want) in [
            ("CRITICAL", Severity::Critical),
            ("warning", Severity::Warning),
            ("info", Severity::Info),
            ("none", Severity::Info),
            ("bogus", Severity::Warning),
        ] {
            w.alerts[0].labels.insert("severity".into(), label.into());
            assert_eq!(event(&m, &w, 0, None).severity, want, "{label}");
        }
        w.alerts[0].labels.remove("severity");
        m.default_severity = Severity::Error;
        assert_eq!(event(&m, &w, 0, None).severity, Severity::Error);
        m.severity_map.insert("p1".into(), Severity::Critical);
        m.severity_label = "priority".into();
        w.alerts[0].labels.insert("priority".into(), "P1".into());
        assert_eq!(event(&m, &w, 0, None).severity, Severity::Critical);
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        for (body, needle) in [
            ("not json", "not an Alertmanager webhook"),
            ("[]", "not an Alertmanager webhook"),
            (r#"{"version":"4"}"#, "missing field `alerts`"),
            (
                r#"{"version":"3","alerts":[]}"#,
                "unsupported webhook payload version",
            ),
            (
                r#"{"version":"4","alerts":[{"status":"firing","labels":{}}]}"#,
                "fingerprint",
            ),
            (
                r#"{"version":"4","alerts":[{"status":"pending","labels":{},"fingerprint":"a"}]}"#,
                "unknown variant",
            ),
            (
                r#"{"version":"4","alerts":[{"status":"firing","labels":{"a":1},"fingerprint":"a"}]}"#,
                "invalid type",
            ),
            (
                r#"{"version":"4","alerts":[{"status":"firing","labels":{},"fingerprint":""}]}"#,
                "empty fingerprint",
            ),
        ] {
            let err = parse(body.as_bytes()).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn hostile_label_values_become_invalid_events() {
        let mut w = parse(BODY.as_bytes()).unwrap();
        let m = Mapping::default();
        w.alerts[0]
            .labels
            .insert("pod".into(), "x\nFAKE LOG LINE".into());
        let err = Event::from_json(to_payload(&m, &w, &w.alerts[0], None), None).unwrap_err();
        assert_eq!(err.kind(), "control_char");
        w.alerts[0].labels.insert("pod".into(), "p".repeat(300));
        let err = Event::from_json(to_payload(&m, &w, &w.alerts[0], None), None).unwrap_err();
        assert_eq!(err.kind(), "too_long");
    }
}
