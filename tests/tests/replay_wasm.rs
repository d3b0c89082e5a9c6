//! End to end: `runner validate` and `runner replay` with the example WASM
//! plugins configured through `pipeline.toml`, mixed with native stages, in
//! the order the file gives.

use std::path::PathBuf;
use std::process::Command;

use e2e::{runner_bin, workspace_root};

/// Builds the example plugins. Without the wasm32-wasip2 target
/// (`rust-toolchain.toml` lists it) or when a build fails, the test fails:
/// a test that cannot run must not pass.
fn examples() -> PathBuf {
    let script = workspace_root().join("plugins-wasm/build-examples.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run build-examples.sh");
    match out.status.code() {
        Some(0) => workspace_root().join("plugins-wasm/examples/dist"),
        Some(2) => panic!(
            "the wasm32-wasip2 target is not installed for this toolchain: rust-toolchain.toml \
             lists it; run `rustup target add wasm32-wasip2`"
        ),
        _ => panic!(
            "building the example plugins failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

const RECORDED: &str = r#"{"cluster":"prod","faultId":"a1","faultType":"Unhealthy","severity":"critical","resource":{"kind":"Pod","name":"web-1","namespace":"shop"},"context":"Readiness probe failed: HTTP 503"}
{"cluster":"prod","faultId":"a2","faultType":"CrashLoop","severity":"warning","resource":{"kind":"Pod","name":"pay-1","namespace":"payments"},"context":"db password=hunter2 rejected"}
{"cluster":"prod","faultId":"a3","faultType":"CrashLoop","severity":"critical","resource":{"kind":"Pod","name":"dns-1","namespace":"kube-system"},"context":"restart count: 9"}
{"cluster":"prod","faultId":"a4","faultType":"CrashLoop","severity":"info","resource":{"kind":"Pod","name":"web-2","namespace":"shop"},"context":"restart count: 1"}
{"cluster":"prod","faultId":"a2","faultType":"CrashLoop","severity":"warning","resource":{"kind":"Pod","name":"pay-1","namespace":"payments"},"context":"db password=hunter2 rejected again"}
not json at all
"#;

fn pipeline(dist: &std::path::Path, stages: &[&str]) -> String {
    let mut s =
        String::from("[[source]]\nkind = \"mcp\"\nendpoint = \"http://127.0.0.1:1/mcp\"\n\n");
    for st in stages {
        s.push_str(&match *st {
            "noise" => format!(
                "[[stage]]\nkind = \"wasm\"\npath = \"{}/noise-suppressor.wasm\"\nconfig = {{ probe = \"Unhealthy | *readiness probe failed*\" }}\n\n",
                dist.display()
            ),
            "ns" => format!(
                "[[stage]]\nkind = \"wasm\"\npath = \"{}/namespace-filter.wasm\"\nconfig = {{ deny_namespaces = \"kube-*\" }}\n\n",
                dist.display()
            ),
            "redact" => format!(
                "[[stage]]\nkind = \"wasm\"\npath = \"{}/redactor.wasm\"\nconfig = {{ production_namespaces = \"payments\" }}\n\n",
                dist.display()
            ),
            "severity" => "[[stage]]\nkind = \"severity\"\nthreshold = \"ERROR\"\n\n".to_string(),
            "dedup" => "[[stage]]\nkind = \"dedup\"\n\n".to_string(),
            other => panic!("unknown stage {other}"),
        });
    }
    s.push_str("[sink]\nkind = \"agent\"\npreset = \"demo\"\n");
    s
}

fn replay(dist: &std::path::Path, stages: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    let rec = dir.path().join("recorded.jsonl");
    std::fs::write(&cfg, pipeline(dist, stages)).unwrap();
    std::fs::write(&rec, RECORDED).unwrap();
    let v = Command::new(runner_bin())
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "validate: {}",
        String::from_utf8_lossy(&v.stderr)
    );
    let out = Command::new(runner_bin())
        .arg("replay")
        .arg(&rec)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn line(out: &str, n: usize) -> &str {
    let prefix = format!("line {n:>5}: ");
    out.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line {n} in\n{out}"))
}

#[test]
fn plugins_and_native_stages_in_file_order() {
    let dist = examples();
    // The redactor raises payments to CRITICAL *before* the severity stage,
    // so the WARNING payments event survives the ERROR threshold.
    let out = replay(&dist, &["noise", "ns", "redact", "severity", "dedup"]);
    assert!(line(&out, 1).contains("plugin_dropped"), "{out}");
    let l2 = line(&out, 2);
    assert!(
        l2.contains("would-run-agent") && l2.contains("prod/payments/Pod/pay-1 CrashLoop CRITICAL"),
        "{out}"
    );
    assert!(line(&out, 3).contains("plugin_dropped"), "{out}");
    assert!(line(&out, 4).contains("filtered"), "{out}");
    assert!(line(&out, 5).contains("duplicate"), "{out}");
    assert!(line(&out, 6).contains("invalid"), "{out}");
    assert!(
        out.contains("summary: received 6 | would run agent 1"),
        "{out}"
    );
    assert!(out.contains("stage wasm:redactor"), "{out}");

    // Move the severity stage in front of the redactor: a one-line edit that
    // changes the outcome (the WARNING event is filtered before it is raised).
    let out = replay(&dist, &["noise", "ns", "severity", "redact", "dedup"]);
    assert!(line(&out, 2).contains("filtered"), "{out}");
    assert!(
        out.contains("summary: received 6 | would run agent 0"),
        "{out}"
    );
}

#[test]
fn validate_rejects_a_bad_module_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm garbage").unwrap();
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[source]]\nkind = \"mcp\"\nendpoint = \"http://127.0.0.1:1/mcp\"\n[[stage]]\nkind = \"wasm\"\npath = {:?}\n[[stage]]\nkind = \"wasm\"\npath = \"missing.wasm\"\n[sink]\nkind = \"agent\"\npreset = \"demo\"\n",
            bad.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(runner_bin())
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 configuration error(s)"), "{err}");
    assert!(
        err.contains("stage[0].path") && err.contains("bad.wasm"),
        "{err}"
    );
    assert!(
        err.contains("stage[1].path") && err.contains("missing.wasm"),
        "{err}"
    );
}
