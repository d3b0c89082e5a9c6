//! `runner replay --show-changes`: wraps each stage so that what it changed
//! in an event is written out after the event's line. Replay only; the live
//! pipeline never pays for the copies this takes.

use std::sync::{Arc, Mutex};

use runner_core::{Event, Outcome, Stage, StageFuture};

/// Changes recorded for the event being replayed, in stage order.
pub(super) type ChangeLog = Arc<Mutex<Vec<String>>>;

/// A stage that records what `inner` changed.
pub(super) struct ShowChanges {
    inner: Box<dyn Stage>,
    log: ChangeLog,
}

impl ShowChanges {
    pub(super) fn wrap(stages: Vec<Box<dyn Stage>>, log: &ChangeLog) -> Vec<Box<dyn Stage>> {
        stages
            .into_iter()
            .map(|inner| {
                Box::new(ShowChanges {
                    inner,
                    log: log.clone(),
                }) as Box<dyn Stage>
            })
            .collect()
    }
}

/// Shortens long text for a one-line change report.
fn short(s: &str) -> String {
    const MAX: usize = 80;
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > MAX {
        let cut: String = one_line.chars().take(MAX).collect();
        format!("{cut:?}…")
    } else {
        format!("{one_line:?}")
    }
}

/// Field-by-field differences between two versions of an event.
pub(super) fn diff(before: &Event, after: &Event) -> Vec<String> {
    let mut out = Vec::new();
    let mut text = |name: &str, a: &str, b: &str| {
        if a != b {
            out.push(format!("{name} {} -> {}", short(a), short(b)));
        }
    };
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    text("fault_id", &opt(&before.fault_id), &opt(&after.fault_id));
    text("cluster", &before.cluster, &after.cluster);
    text(
        "resource.api_version",
        &before.resource.api_version,
        &after.resource.api_version,
    );
    text("resource.kind", &before.resource.kind, &after.resource.kind);
    text("resource.name", &before.resource.name, &after.resource.name);
    text(
        "resource.namespace",
        &before.resource.namespace,
        &after.resource.namespace,
    );
    text("resource.uid", &before.resource.uid, &after.resource.uid);
    text("fault_type", &before.fault_type, &after.fault_type);
    text(
        "severity",
        before.severity.as_str(),
        after.severity.as_str(),
    );
    text("context", &before.context, &after.context);
    text("timestamp", &opt(&before.timestamp), &opt(&after.timestamp));
    if before.raw != after.raw {
        let keys = |v: &serde_json::Value| -> Vec<(String, String)> {
            v.as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
                .unwrap_or_default()
        };
        let (a, b) = (keys(&before.raw), keys(&after.raw));
        let mut changed: Vec<&str> = b
            .iter()
            .filter(|kv| !a.contains(kv))
            .map(|(k, _)| k.as_str())
            .chain(
                a.iter()
                    .filter(|(k, _)| !b.iter().any(|(k2, _)| k2 == k))
                    .map(|(k, _)| k.as_str()),
            )
            .collect();
        changed.sort_unstable();
        changed.dedup();
        out.push(format!("raw payload: changed {}", changed.join(", ")));
    }
    out
}

impl Stage for ShowChanges {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn process<'a>(&'a self, event: &'a mut Event) -> StageFuture<'a> {
        StageFuture::Pending(Box::pin(async move {
            let before = event.clone();
            let verdict = self.inner.process(event).resolve().await;
            let changes = diff(&before, event);
            if !changes.is_empty() {
                let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                for c in changes {
                    log.push(format!("{}: {c}", self.inner.name()));
                }
            }
            verdict
        }))
    }

    fn finished(&self, event: &Event, outcome: Outcome) {
        self.inner.finished(event, outcome);
    }

    fn health(&self) -> runner_core::stage::StageHealth {
        self.inner.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_each_changed_field() {
        let text = r#"{"cluster":"prod","faultId":"a","faultType":"CrashLoop","severity":"warning","resource":{"kind":"Pod","name":"p","namespace":"ns"},"context":"password=x"}"#;
        let before = Event::from_str(text, None).unwrap();
        let mut after = before.clone();
        assert!(diff(&before, &after).is_empty());
        after.severity = runner_core::Severity::Critical;
        after.context = "password=[REDACTED]".into();
        let mut raw = (*after.raw).clone();
        raw["context"] = "password=[REDACTED]".into();
        after.raw = Arc::new(raw);
        assert_eq!(
            diff(&before, &after),
            [
                "severity \"WARNING\" -> \"CRITICAL\"",
                "context \"password=x\" -> \"password=[REDACTED]\"",
                "raw payload: changed context",
            ]
        );
    }
}
