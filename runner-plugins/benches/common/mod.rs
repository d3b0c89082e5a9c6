//! Setup shared by the `pipeline` and `state` benches: the payload set,
//! the two test sinks, the severity + dedup stages and the paused runtime.

use std::sync::Arc;

use async_trait::async_trait;
use runner_core::{CancellationToken, Envelope, RawPayload, Severity, Sink, SinkResult, Stage};
use runner_plugins::component::{BuildContext, ComponentConfig};
use runner_plugins::stages::dedup::DedupConfig;
use runner_plugins::stages::severity::SeverityConfig;

pub(crate) const PAYLOADS: usize = 16_384;
pub(crate) const RESOURCES: usize = 8_192;

/// One ~1 KB payload in the `kubernetes/faults` shape and field order.
pub(crate) fn payload(i: usize) -> String {
    let r = (i * 2_654_435_761) % RESOURCES; // scatter: repeats are not adjacent
    let cluster = r % 100;
    let ns = ["payments", "checkout", "search", "default"][r % 4];
    let (fault, sev) = if i.is_multiple_of(5) {
        ("PodCrash", "warning")
    } else {
        ("CrashLoop", "critical")
    };
    let head = format!(
        r#"{{"subscriptionId":"sub-3f9a2c71","cluster":"prod-cluster-{cluster:03}","faultId":"{:016x}","faultType":"{fault}","severity":"{sev}","resource":{{"apiVersion":"v1","kind":"Pod","name":"{ns}-api-7d9f8b6c5-{r:05}","namespace":"{ns}","uid":"3f1c2e4a-8b7d-4c6e-9a1f-{r:012}"}},"context":"Container entered CrashLoopBackOff state, restart count: {}, waiting message: back-off 5m0s restarting failed container=app pod={ns}-api-7d9f8b6c5-{r:05}_{ns}(3f1c2e4a-8b7d-4c6e-9a1f-{r:012}), last exit code: 1, last reason: Error, termination message: "#,
        (r as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        i % 50
    );
    let tail = r#"","timestamp":"2025-12-20T14:02:11Z"}"#;
    let pad = 1024usize.saturating_sub(head.len() + tail.len());
    let filler: String =
        "panic: runtime error: invalid memory address or nil pointer dereference; "
            .chars()
            .cycle()
            .take(pad)
            .collect();
    format!("{head}{filler}{tail}")
}

pub(crate) struct Noop;

/// Every agent slot stays taken: the storm case, where routing is queueing
/// plus overflow handling.
pub(crate) struct Busy;

#[async_trait]
impl Sink for Busy {
    fn name(&self) -> &str {
        "busy"
    }
    async fn handle(&self, _env: &Envelope, kill: CancellationToken) -> SinkResult {
        kill.cancelled().await;
        SinkResult::abandoned("killed")
    }
}

#[async_trait]
impl Sink for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    async fn handle(&self, _env: &Envelope, _kill: CancellationToken) -> SinkResult {
        SinkResult::completed()
    }
}

pub(crate) fn stages() -> Arc<[Box<dyn Stage>]> {
    let sev = SeverityConfig {
        threshold: Severity::Error,
    };
    let dedup = DedupConfig {
        window_seconds: 300,
        ..DedupConfig::default()
    };
    let cx = BuildContext::default();
    vec![sev.build(&cx).unwrap(), dedup.build(&cx).unwrap()].into()
}

pub(crate) fn raw(text: &str, src: &Arc<str>) -> RawPayload {
    RawPayload {
        data: serde_json::from_str(text).unwrap(),
        source: src.clone(),
        cluster_fill: None,
        received_at: tokio::time::Instant::now(),
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A current-thread runtime on the paused clock: the dedup window is
/// advanced explicitly, not waited for.
pub(crate) fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}
