//! Per-event cost of a WASM filter next to the same logic as a native stage.
//!
//! `cargo bench -p plugins-wasm --bench filter` (builds the example plugins
//! first with plugins-wasm/build-examples.sh, needs wasm32-wasip2, and the
//! TypeScript and Python ones with build-guest-examples.sh, needs the
//! toolchains `.ci/run` installs; `NODE_BIN`, `COMPONENTIZE_PY` point
//! elsewhere).

use std::process::Command;

use criterion::{Criterion, criterion_group, criterion_main};
use plugins_wasm::WasmStageConfig;
use runner_core::{Event, Outcome, Stage, StageFuture, Verdict};

/// The namespace-filter example's logic as a native stage: deny namespaces
/// by glob (same glob semantics, same reason strings).
struct NativeDeny {
    deny: Vec<String>,
}

fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Stage for NativeDeny {
    fn name(&self) -> &str {
        "native-deny"
    }
    fn process<'a>(&'a self, event: &'a mut Event) -> StageFuture<'a> {
        let ns = &event.resource.namespace;
        StageFuture::Ready(if self.deny.iter().any(|p| glob(p, ns)) {
            Verdict::drop(Outcome::PluginDropped, format!("namespace {ns} is denied"))
        } else {
            Verdict::Pass
        })
    }
}

fn verdict(s: &dyn Stage, e: &mut Event) -> Verdict {
    match s.process(e) {
        StageFuture::Ready(v) => v,
        StageFuture::Pending(_) => unreachable!("synchronous stages"),
    }
}

/// A typical ~1 KB notification.
fn sample(ns: &str) -> Event {
    let context = format!(
        "Container entered CrashLoopBackOff state, restart count: 5. Last log lines: {}",
        "level=error msg=\"connection refused\" ".repeat(20)
    );
    let v = serde_json::json!({
        "subscriptionId": "sub-3f9a2c71", "cluster": "prod-us-east-1", "faultId": "dbe33ea85ad9fc1d",
        "faultType": "CrashLoop", "severity": "critical",
        "resource": {"apiVersion": "v1", "kind": "Pod", "name": "payments-api-7d9f8b6c5-x2k4q",
                     "namespace": ns, "uid": "3f1c2e4a-8b7d-4c6e-9a1f-2b3c4d5e6f70"},
        "context": context, "timestamp": "2025-12-20T14:02:11Z"
    });
    Event::from_json(v, None).unwrap()
}

fn bench(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("bash")
        .arg(root.join("build-examples.sh"))
        .status()
        .expect("run build-examples.sh");
    assert!(
        status.success(),
        "building the example plugins failed (needs wasm32-wasip2)"
    );

    let mut cfg = WasmStageConfig::new(root.join("examples/dist/namespace-filter.wasm"));
    cfg.config = vec![("deny_namespaces".into(), "kube-*,sandbox".into())];
    let wasm = cfg.build().expect("namespace-filter loads");
    let native = NativeDeny {
        deny: vec!["kube-*".into(), "sandbox".into()],
    };
    let mut redactor = WasmStageConfig::new(root.join("examples/dist/redactor.wasm"));
    redactor.config = vec![("production_namespaces".into(), "payments".into())];
    let redactor = redactor.build().expect("redactor loads");

    let mut g = c.benchmark_group("per_event");
    for (label, ns) in [("pass", "payments"), ("drop", "kube-system")] {
        let ev = sample(ns);
        g.bench_function(format!("native_deny/{label}"), |b| {
            b.iter_batched_ref(
                || ev.clone(),
                |e| verdict(&native, e),
                criterion::BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("wasm_namespace_filter/{label}"), |b| {
            b.iter_batched_ref(
                || ev.clone(),
                |e| verdict(&*wasm, e),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    // Part of every WASM call: the host serializes the original payload for
    // `raw-json`.
    let ev = sample("payments");
    g.bench_function("host_raw_json_to_string", |b| {
        b.iter(|| serde_json::to_string(&*ev.raw).unwrap())
    });
    // A modifier: the event crosses the boundary both ways (replace).
    let ev = sample("payments");
    g.bench_function("wasm_redactor/replace", |b| {
        b.iter_batched_ref(
            || ev.clone(),
            |e| verdict(&*redactor, e),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();

    // The same kind of work in each language: the Rust and TypeScript
    // namespace filters (deny by namespace; pass and drop), the Python
    // escalate plugin (keep, and replace with a raised severity).
    let status = Command::new("bash")
        .arg(root.join("build-guest-examples.sh"))
        .status()
        .expect("run build-guest-examples.sh");
    assert!(
        status.success(),
        "building the TypeScript/Python examples failed (toolchains: see docs/plugins.md)"
    );
    let guest = |file: &str, config: &[(&str, &str)]| {
        let mut cfg = WasmStageConfig::new(root.join("examples/dist").join(file));
        cfg.config = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The interpreters' runtimes: see docs/plugins.md, §3.
        cfg.max_memory_mb = 128;
        cfg.timeout_ms = 1000;
        cfg.build().unwrap_or_else(|e| panic!("{file} loads: {e}"))
    };
    let ts = guest(
        "ts-namespace-deny.wasm",
        &[("deny_namespaces", "kube-*,sandbox")],
    );
    let py = guest(
        "python-escalate.wasm",
        &[("fault_types", "CrashLoop"), ("to", "critical")],
    );
    let mut g = c.benchmark_group("per_event_by_language");
    for (label, ns) in [("pass", "payments"), ("drop", "kube-system")] {
        let ev = sample(ns);
        for (lang, stage) in [("rust", &wasm), ("typescript", &ts)] {
            g.bench_function(format!("{lang}_namespace_filter/{label}"), |b| {
                b.iter_batched_ref(
                    || ev.clone(),
                    |e| verdict(&**stage, e),
                    criterion::BatchSize::SmallInput,
                )
            });
        }
    }
    let keep = sample("payments"); // already critical: kept
    let mut raise = sample("payments");
    raise.severity = runner_core::Severity::Warning;
    for (label, ev) in [("keep", keep), ("replace", raise)] {
        g.bench_function(format!("python_escalate/{label}"), |b| {
            b.iter_batched_ref(
                || ev.clone(),
                |e| verdict(&*py, e),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
    // A call that failed would be measured as a fast trap, not as work.
    for (name, s) in [("typescript", &ts), ("python", &py)] {
        assert_eq!(
            s.health().errors,
            0,
            "{name} plugin calls failed during the bench"
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
