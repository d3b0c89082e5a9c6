//! The example plugins in `plugins-wasm/examples`, end to end: loaded
//! through `WasmStageConfig::read` + `build` as `pipeline.toml` would, fed
//! parsed events. Needs the wasm32-wasip2 target (`rust-toolchain.toml`
//! lists it): without it, or when an example does not build, the test fails.

mod common;

use std::path::Path;

use common::*;
use plugins_wasm::WasmStage;
use runner_core::config::{ConfigErrors, Overrides, TableReader};
use runner_core::{Outcome, Severity, Stage, Verdict};

/// Builds a stage from a `[[stage]]` table body (minus `kind`), with `path`
/// relative to the examples' dist directory.
fn stage(toml_body: &str) -> Result<WasmStage, String> {
    let table: toml::Table = toml_body.parse().expect("test TOML");
    let ov = Overrides::new();
    let mut errors = ConfigErrors::default();
    let mut eff = Vec::new();
    let mut r = TableReader::new("stage[0]", table, &ov, &mut errors, &mut eff);
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dist");
    let cfg = WasmStageConfig::read(&mut r, &dist);
    r.finish();
    assert!(errors.is_empty(), "{errors}");
    cfg.expect("config reads").build_stage()
}

use plugins_wasm::WasmStageConfig;

fn reason(v: Verdict) -> String {
    match v {
        Verdict::Drop {
            outcome: Outcome::PluginDropped,
            reason,
        } => reason.into_owned(),
        other => panic!("expected plugin_dropped, got {other:?}"),
    }
}

#[test]
fn namespace_filter_allows_and_denies_by_namespace_and_kind() {
    example("namespace-filter");
    let s = stage(
        r#"path = "namespace-filter.wasm"
           config = { deny_namespaces = ["kube-*", "sandbox"], deny_kinds = "Job", allow_kinds = "Pod, Node, Deployment" }"#,
    )
    .unwrap();
    assert_eq!(s.name(), "wasm:namespace-filter");
    let ev = |ns: &str, kind: &str| verdict(&s, &mut event(ns, kind, "CrashLoop", "critical", "x"));
    assert_eq!(ev("payments", "Pod"), Verdict::Pass);
    assert_eq!(
        reason(ev("kube-system", "Pod")),
        "wasm:namespace-filter: namespace kube-system is denied"
    );
    assert_eq!(
        reason(ev("sandbox", "Pod")),
        "wasm:namespace-filter: namespace sandbox is denied"
    );
    assert_eq!(
        reason(ev("payments", "Job")),
        "wasm:namespace-filter: kind Job is denied"
    );
    assert_eq!(
        reason(ev("payments", "CronJob")),
        "wasm:namespace-filter: kind CronJob is not allowed"
    );
    // Cluster-scoped objects skip namespace rules.
    assert_eq!(ev("", "Node"), Verdict::Pass);

    let s = stage(
        r#"path = "namespace-filter.wasm"
                     config = { allow_namespaces = "payments" }"#,
    )
    .unwrap();
    assert_eq!(
        verdict(&s, &mut event("payments", "Pod", "OOMKilled", "error", "")),
        Verdict::Pass
    );
    assert_eq!(
        reason(verdict(
            &s,
            &mut event("shop", "Pod", "OOMKilled", "error", "")
        )),
        "wasm:namespace-filter: namespace shop is not allowed"
    );
    assert_eq!(s.stats().failures, 0);
}

#[test]
fn namespace_filter_config_errors_fail_build() {
    example("namespace-filter");
    let e = stage(
        r#"path = "namespace-filter.wasm"
                     config = { deny_namespace = "typo" }"#,
    )
    .err()
    .expect("unknown key rejected by the plugin's init");
    assert!(
        e.contains("init returned an error: unknown config key(s) deny_namespace"),
        "{e}"
    );
    let e = stage(r#"path = "namespace-filter.wasm""#).err().unwrap();
    assert!(e.contains("no rules configured"), "{e}");
}

#[test]
fn noise_suppressor_drops_known_noise_by_fault_type_and_context() {
    example("noise-suppressor");
    let s = stage(
        r#"path = "noise-suppressor.wasm"
           name = "noise"
           config = { probe = "Unhealthy | *readiness probe failed*", pulls = "ImagePull*" }"#,
    )
    .unwrap();
    assert_eq!(
        reason(verdict(
            &s,
            &mut event(
                "shop",
                "Pod",
                "Unhealthy",
                "warning",
                "Readiness probe failed: HTTP 503"
            )
        )),
        "wasm:noise: known noise (rule probe)"
    );
    assert_eq!(
        reason(verdict(
            &s,
            &mut event("shop", "Pod", "ImagePullBackOff", "error", "anything")
        )),
        "wasm:noise: known noise (rule pulls)"
    );
    // Same fault type, different context: real signal, kept.
    assert_eq!(
        verdict(
            &s,
            &mut event(
                "shop",
                "Pod",
                "Unhealthy",
                "warning",
                "Liveness probe failed"
            )
        ),
        Verdict::Pass
    );
    assert_eq!(
        verdict(
            &s,
            &mut event("shop", "Pod", "CrashLoop", "critical", "probe failed")
        ),
        Verdict::Pass
    );
    let st = s.stats();
    assert_eq!((st.calls, st.dropped, st.kept, st.failures), (4, 2, 2, 0));

    let e = stage(
        r#"path = "noise-suppressor.wasm"
                     config = { bad = " | x" }"#,
    )
    .err()
    .unwrap();
    assert!(e.contains("rule bad"), "{e}");
}

#[test]
fn redactor_masks_secrets_and_raises_production_severity() {
    example("redactor");
    let s = stage(
        r#"path = "redactor.wasm"
           config = { production_namespaces = "prod-*, payments", raise_to = "critical" }"#,
    )
    .unwrap();
    let mut ev = event(
        "payments",
        "Pod",
        "CrashLoop",
        "warning",
        "connect failed: password=hunter2 Authorization: Bearer abc.def.ghi",
    );
    assert_eq!(verdict(&s, &mut ev), Verdict::Modified);
    assert_eq!(
        ev.context,
        "connect failed: password=[REDACTED] Authorization: Bearer [REDACTED]"
    );
    assert_eq!(ev.severity, Severity::Critical);
    // The original payload is redacted too (still valid JSON, other fields kept).
    let raw_context = ev.raw["context"].as_str().unwrap();
    assert!(!raw_context.contains("hunter2") && raw_context.contains("[REDACTED]"));
    assert_eq!(ev.raw["faultId"], "f-1");
    assert!(!ev.raw.to_string().contains("abc.def.ghi"));

    // Nothing to change: kept as is.
    let mut clean = event("shop", "Pod", "CrashLoop", "warning", "restarted 5 times");
    assert_eq!(verdict(&s, &mut clean), Verdict::Pass);
    assert_eq!(clean.severity, Severity::Warning);
    // Production namespace only: severity raised, context untouched.
    let mut prod = event("prod-eu", "Pod", "OOMKilled", "error", "killed");
    assert_eq!(verdict(&s, &mut prod), Verdict::Modified);
    assert_eq!(
        (prod.severity, prod.context.as_str()),
        (Severity::Critical, "killed")
    );
    let st = s.stats();
    assert_eq!((st.replaced, st.kept, st.failures), (2, 1, 0));
}

#[test]
fn examples_chain_like_a_pipeline() {
    // suppressor → filter → redactor, as three [[stage]] entries would run.
    example("redactor");
    let stages = [
        stage(
            r#"path = "noise-suppressor.wasm"
                 config = { probe = "Unhealthy | *probe failed*" }"#,
        )
        .unwrap(),
        stage(
            r#"path = "namespace-filter.wasm"
                 config = { deny_namespaces = "kube-system" }"#,
        )
        .unwrap(),
        stage(
            r#"path = "redactor.wasm"
                 config = { production_namespaces = "payments" }"#,
        )
        .unwrap(),
    ];
    let run = |mut e: runner_core::Event| {
        for s in &stages {
            match verdict(s, &mut e) {
                Verdict::Drop { reason, .. } => return Err(reason.into_owned()),
                Verdict::Pass | Verdict::Modified => {}
            }
        }
        Ok(e)
    };
    assert!(
        run(event(
            "payments",
            "Pod",
            "Unhealthy",
            "warning",
            "Readiness probe failed"
        ))
        .is_err()
    );
    assert!(run(event("kube-system", "Pod", "CrashLoop", "critical", "x")).is_err());
    let e = run(event(
        "payments",
        "Pod",
        "CrashLoop",
        "warning",
        "token=abc",
    ))
    .unwrap();
    assert_eq!(
        (e.severity, e.context.as_str()),
        (Severity::Critical, "token=[REDACTED]")
    );
}
