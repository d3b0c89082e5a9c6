//! End to end: `runner test FILE`, declarative cases run through the real
//! binary against the Rust example plugins: the shipped case file passes,
//! a wrong expectation exits 1 naming the case, what was expected and what
//! happened, and a bad test file exits 2 with every error at once.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use e2e::{runner_bin, workspace_root};

/// Builds the Rust example plugins; a missing target or a failed build
/// fails the test (it must not pass without running).
fn examples() -> PathBuf {
    let out = Command::new("bash")
        .arg(workspace_root().join("plugins-wasm/build-examples.sh"))
        .output()
        .expect("run build-examples.sh");
    assert_eq!(
        out.status.code(),
        Some(0),
        "building the example plugins failed (2: the wasm32-wasip2 target is missing, \
         `rustup target add wasm32-wasip2`):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    workspace_root().join("plugins-wasm/examples/dist")
}

fn runner_test(file: &Path) -> (Option<i32>, String, String) {
    let out: Output = Command::new(runner_bin())
        .arg("test")
        .arg(file)
        .env(
            "WASM_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache"),
        )
        .output()
        .expect("runner runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_rust_examples_cases_pass() {
    examples();
    let (code, stdout, stderr) =
        runner_test(&workspace_root().join("plugins-wasm/examples/tests/rust-examples.toml"));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("5 cases: 5 passed, 0 failed"), "{stdout}");
    assert!(
        stdout.contains("ok    a production secret is redacted and the event raised to critical"),
        "{stdout}"
    );
}

#[test]
fn a_wrong_expectation_exits_1_and_says_what_happened() {
    let dist = examples();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rec.jsonl"),
        "{\"cluster\":\"prod\",\"faultType\":\"CrashLoop\",\"severity\":\"critical\",\"resource\":{\"kind\":\"Pod\",\"name\":\"a\",\"namespace\":\"shop\"},\"context\":\"x\"}\n\
         {\"cluster\":\"prod\",\"faultType\":\"CrashLoop\",\"severity\":\"critical\",\"resource\":{\"kind\":\"Pod\",\"name\":\"b\",\"namespace\":\"kube-system\"},\"context\":\"x\"}\n",
    )
    .unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(
        &file,
        format!(
            r#"[[stage]]
kind = "wasm"
path = "{d}/namespace-filter.wasm"
config = {{ deny_namespaces = "kube-*" }}

[[stage]]
kind = "wasm"
path = "{d}/redactor.wasm"
config = {{ production_namespaces = "payments" }}

[[case]]
name = "right: shop passes"
input = {{ cluster = "prod", faultType = "X", severity = "error", resource = {{ kind = "Pod", name = "a", namespace = "shop" }}, context = "c" }}
expect = "passed"

[[case]]
name = "wrong outcome: every recorded line passes"
input_file = "rec.jsonl"
expect = "passed"

[[case]]
name = "wrong field: redaction expected the other way"
input = {{ cluster = "prod", faultType = "X", severity = "warning", resource = {{ kind = "Pod", name = "a", namespace = "payments" }}, context = "token=abc" }}
expect = "passed"
fields = {{ severity = "warning", context = "token=abc" }}
"#,
            d = dist.display()
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = runner_test(&file);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("ok    right: shop passes"), "{stdout}");
    assert!(
        stdout.contains("FAIL  wrong outcome: every recorded line passes\n      rec.jsonl line 2: expected passed, got plugin_dropped by wasm:namespace-filter (wasm:namespace-filter: namespace kube-system is denied)"),
        "{stdout}"
    );
    // Line 1 met the expectation: only line 2 is reported.
    assert!(!stdout.contains("rec.jsonl line 1"), "{stdout}");
    assert!(
        stdout.contains("FAIL  wrong field: redaction expected the other way\n      input: field context: expected \"token=abc\", got \"token=[REDACTED]\"\n      input: field severity: expected \"warning\", got \"CRITICAL\""),
        "{stdout}"
    );
    assert!(stdout.contains("3 cases: 1 passed, 2 failed"), "{stdout}");
}

#[test]
fn a_bad_test_file_exits_2_with_every_error() {
    let dist = examples();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(
        &file,
        format!(
            r#"[[stage]]
kind = "wasm"
path = "{d}/namespace-filter.wasm"
config = {{ deny_namespace = "kube-*" }}

[[stage]]
kind = "severity"
threshold = "LOUD"

[[case]]
name = "a"
input = "{{not json"
expect = "gone"

[[case]]
name = "b"
input_file = "missing.jsonl"
expect = "filtered"
stage = "severity"
"#,
            d = dist.display()
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = runner_test(&file);
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    for needle in [
        "case[0].input: invalid value \"{not json\"",
        "case[0].expect: invalid value \"gone\"; allowed: one of passed, filtered, duplicate, plugin_dropped",
        "case[1].input_file: invalid value \"missing.jsonl\"",
        // The stages' errors come with the file's, from the same compile
        // path as `runner validate`.
        "stage[0].path: invalid value",
        "unknown config key(s) deny_namespace",
        "stage[1].threshold: invalid value \"LOUD\"",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    assert!(!stdout.contains("cases:"), "no case may run: {stdout}");

    // A stage name no stage has is a bad file too, naming the real ones.
    std::fs::write(
        &file,
        format!(
            "[[stage]]\nkind = \"wasm\"\npath = \"{d}/namespace-filter.wasm\"\nconfig = {{ deny_namespaces = \"x\" }}\n\n\
             [[case]]\nname = \"a\"\ninput = {{ cluster = \"c\" }}\nexpect = \"plugin_dropped\"\nstage = \"wasm:namespace\"\n",
            d = dist.display()
        ),
    )
    .unwrap();
    let (code, _, stderr) = runner_test(&file);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("case[0].stage: invalid value \"wasm:namespace\"; allowed: one of the chain's stages: wasm:namespace-filter"),
        "{stderr}"
    );
}

/// `pipeline = "FILE"`: the stages of a real pipeline file (its source and
/// sink are not used), native stages included; its errors carry its name.
#[test]
fn a_pipeline_file_is_tested_by_its_own_stages() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = |threshold: &str| {
        format!(
            "[[source]]\nkind = \"mcp\"\nendpoint = \"http://127.0.0.1:1/mcp\"\n\n\
             [[stage]]\nkind = \"severity\"\nthreshold = \"{threshold}\"\n\n\
             [[stage]]\nkind = \"group\"\n\n\
             [sink]\nkind = \"agent\"\npreset = \"demo\"\n"
        )
    };
    std::fs::write(dir.path().join("p.toml"), pipeline("ERROR")).unwrap();
    let ev = |sev: &str, ft: &str| {
        format!(
            "{{ cluster = \"c\", faultType = \"{ft}\", severity = \"{sev}\", resource = {{ kind = \"Pod\", name = \"a\", namespace = \"n\" }} }}"
        )
    };
    let file = dir.path().join("t.toml");
    std::fs::write(
        &file,
        format!(
            "pipeline = \"p.toml\"\n\n\
             [[case]]\nname = \"low is filtered\"\ninput = {}\nexpect = \"filtered\"\nstage = \"severity\"\n\n\
             [[case]]\nname = \"an error passes\"\ninput = {}\nexpect = \"passed\"\n\n\
             [[case]]\nname = \"the next fault of the same pod joins its incident\"\nbefore = [{}]\ninput = {}\nexpect = \"merged\"\nstage = \"group\"\n",
            ev("info", "X"),
            ev("error", "X"),
            ev("error", "X"),
            ev("error", "Y")
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = runner_test(&file);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("3 cases: 3 passed, 0 failed"), "{stdout}");

    std::fs::write(dir.path().join("p.toml"), pipeline("LOUD")).unwrap();
    let (code, _, stderr) = runner_test(&file);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("p.toml: stage[0].threshold: invalid value \"LOUD\""),
        "{stderr}"
    );
}
