//! The one compile path: all errors at once, precedence per layer, the
//! shipped pipeline.toml, and the `runner validate` binary itself.

use std::process::Command;

use runner_core::config::{Environment, Origin, Overrides};
use runner_plugins::app::compile::{CompileOptions, compile};

const BASE: &str = r#"
[[source]]
kind = "mcp"
endpoint = "http://127.0.0.1:9/mcp"

[[stage]]
kind = "severity"
threshold = "WARNING"

[[stage]]
kind = "dedup"

[router]
max_concurrent_agents = 3

[sink]
kind = "agent"
preset = "demo"
"#;

fn opts() -> CompileOptions {
    CompileOptions::default()
}

fn effective(text: &str, ov: &Overrides, key: &str) -> (String, Origin) {
    let c = compile(text, ov, &opts()).unwrap_or_else(|e| panic!("{e}"));
    let e = c
        .effective
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no {key}"));
    (e.value.clone(), e.origin)
}

#[test]
fn three_mistakes_are_all_reported() {
    let text = BASE
        .replace("threshold = \"WARNING\"", "threshold = \"HIGH\"")
        .replace("max_concurrent_agents = 3", "max_concurrent_agents = 0")
        .replace("kind = \"dedup\"", "kind = \"dedupe\"");
    let errs = compile(&text, &Overrides::new(), &opts())
        .err()
        .expect("invalid");
    let msg = errs.to_string();
    assert_eq!(errs.len(), 3, "{msg}");
    assert!(
        msg.contains("stage[0].threshold: invalid value \"HIGH\"; allowed: one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        "{msg}"
    );
    assert!(
        msg.contains("router.max_concurrent_agents: invalid value 0; allowed: an integer in 1..=4096 (agents)"),
        "{msg}"
    );
    assert!(
        msg.contains(
            "stage[1].kind: invalid value \"dedupe\"; allowed: one of severity, dedup, group, wasm"
        ),
        "{msg}"
    );
}

#[test]
fn unknown_keys_tables_and_syntax() {
    let text = format!("{BASE}\n[routr]\nx = 1\n").replace(
        "kind = \"severity\"",
        "kind = \"severity\"\nthreshhold = \"INFO\"",
    );
    let msg = compile(&text, &Overrides::new(), &opts())
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains(
            "routr: unknown key; allowed keys: one of: settings, source, stage, router, cluster, sink, server"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("stage[0].threshhold: unknown key; allowed keys: one of: threshold"),
        "{msg}"
    );
    let msg = compile("[[stage]\nkind=", &Overrides::new(), &opts())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("TOML syntax"), "{msg}");
    let msg = compile("", &Overrides::new(), &opts())
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("source: missing") && msg.contains("sink: missing"),
        "{msg}"
    );
}

#[test]
fn precedence_flag_env_file_default_for_each_layer() {
    let key = "router.max_concurrent_agents";
    let no_router = BASE.replace("max_concurrent_agents = 3", "");
    let mut ov = Overrides::new();
    assert_eq!(
        effective(&no_router, &ov, key),
        ("5".into(), Origin::Default)
    );
    assert_eq!(effective(BASE, &ov, key), ("3".into(), Origin::File));
    ov.set("MAX_CONCURRENT_AGENTS", "7", Origin::Env);
    assert_eq!(effective(BASE, &ov, key), ("7".into(), Origin::Env));
    ov.set("MAX_CONCURRENT_AGENTS", "9", Origin::Flag);
    assert_eq!(effective(BASE, &ov, key), ("9".into(), Origin::Flag));
    // Same for a stage option.
    let key = "stage[0].threshold";
    let mut ov = Overrides::new();
    assert_eq!(effective(BASE, &ov, key), ("WARNING".into(), Origin::File));
    ov.set("SEVERITY_THRESHOLD", "critical", Origin::Env);
    assert_eq!(effective(BASE, &ov, key), ("CRITICAL".into(), Origin::Env));
    // A bad override names the variable it came from.
    ov.set("SEVERITY_THRESHOLD", "loud", Origin::Flag);
    let msg = compile(BASE, &ov, &opts()).err().unwrap().to_string();
    assert!(
        msg.contains("stage[0].threshold (from flag SEVERITY_THRESHOLD): invalid value \"loud\""),
        "{msg}"
    );
}

#[test]
fn endpoint_override_is_ambiguous_with_several_sources() {
    let text = BASE.replace(
        "[[stage]]\nkind = \"severity\"",
        "[[source]]\nkind = \"mcp\"\nendpoint = \"http://127.0.0.1:10/mcp\"\n\n[[stage]]\nkind = \"severity\"",
    );
    let mut ov = Overrides::new();
    assert!(compile(&text, &ov, &opts()).is_ok());
    ov.set(
        "K8S_CLUSTER_MCP_ENDPOINT",
        "http://127.0.0.1:11/mcp",
        Origin::Env,
    );
    let msg = compile(&text, &ov, &opts()).err().unwrap().to_string();
    assert!(msg.contains("K8S_CLUSTER_MCP_ENDPOINT"), "{msg}");
}

#[test]
fn stage_order_follows_the_file() {
    let swapped = r#"
[[source]]
kind = "mcp"
endpoint = "http://127.0.0.1:9/mcp"
[[stage]]
kind = "dedup"
[[stage]]
kind = "severity"
[sink]
kind = "agent"
preset = "demo"
"#;
    let c = compile(swapped, &Overrides::new(), &opts()).unwrap();
    let names: Vec<_> = c.stages.iter().map(|s| s.name().to_string()).collect();
    assert_eq!(names, ["dedup", "severity"]);
}

fn runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_runner"))
}

#[test]
fn shipped_pipeline_toml_validates() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../pipeline.toml");
    // What the claude preset needs on the host: the CLI on PATH (a stand-in
    // that answers --version), its key and a kubeconfig file.
    let host = tempfile::tempdir().unwrap();
    let bin = host.path().join("claude");
    std::fs::write(&bin, "#!/bin/sh\necho '9.9.9 (stand-in)'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kubeconfig = host.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
    let out = runner()
        .args(["validate", "--config", root])
        .env("K8S_CLUSTER_MCP_ENDPOINT", "http://127.0.0.1:8080/mcp")
        .env("PATH", format!("{}:/usr/bin:/bin", host.path().display()))
        .env("ANTHROPIC_API_KEY", "x")
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stages:  severity -> group"), "{stdout}");
    assert!(stdout.contains("9.9.9 (stand-in)"), "{stdout}");
    assert!(
        stdout.contains("source[0].endpoint = \"http://127.0.0.1:8080/mcp\" (env)"),
        "{stdout}"
    );
    // This machine's kernel has Landlock (the sandbox tests need it too).
    assert!(
        stdout.contains("  sandbox: enforce (Landlock ABI "),
        "{stdout}"
    );
    let off = runner()
        .args(["validate", "--agent-sandbox", "off", "--config", root])
        .env("K8S_CLUSTER_MCP_ENDPOINT", "http://127.0.0.1:8080/mcp")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&off.stdout);
    assert!(
        stdout.contains("  sandbox: off (agents run without a kernel sandbox)"),
        "{stdout}"
    );
}

#[test]
fn validate_binary_lists_every_error_and_flag_beats_env() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        BASE.replace("threshold = \"WARNING\"", "threshold = \"HIGH\"")
            .replace("max_concurrent_agents = 3", "max_concurrent_agents = -2"),
    )
    .unwrap();
    let out = runner()
        .args(["validate", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 configuration error(s)"), "{err}");
    std::fs::write(&p, BASE).unwrap();
    let out = runner()
        .args(["validate", "--max-concurrent-agents", "4", "--config"])
        .arg(&p)
        .env("MAX_CONCURRENT_AGENTS", "8")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("router.max_concurrent_agents = 4 (flag)"),
        "{stdout}"
    );
    let out = runner()
        .args(["validate", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn agents_never_get_a_source_token_through_env_allow() {
    let text = BASE
        .replace(
            "endpoint = \"http://127.0.0.1:9/mcp\"",
            "endpoint = \"http://127.0.0.1:9/mcp\"\ntoken_env = \"CONFIG_TEST_SOURCE_TOKEN\"",
        )
        .replace(
            "preset = \"demo\"",
            "preset = \"demo\"\nenv_allow = [\"CONFIG_TEST_SOURCE_TOKEN\"]",
        );
    let ov = Overrides::new().with_environment(Environment::from_pairs([(
        "CONFIG_TEST_SOURCE_TOKEN",
        "s3cr3t",
    )]));
    let msg = compile(&text, &ov, &opts())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        msg.contains("sink.env_allow: invalid value \"CONFIG_TEST_SOURCE_TOKEN\""),
        "{msg}"
    );
    assert!(!msg.contains("s3cr3t"), "{msg}");
}

const SINKS: &str = r#"
[[source]]
kind = "mcp"
endpoint = "http://127.0.0.1:9/mcp"
token_env = "CONFIG_TEST_UNSET_TOKEN_A"

[[sink]]
kind = "agent"
preset = "demo"
env_allow = ["CONFIG_TEST_UNSET_HOOK"]

[[sink]]
kind = "agent"
preset = "demo"

[[sink]]
kind = "slack"
webhook_env = "CONFIG_TEST_UNSET_HOOK"

[[sink]]
kind = "pagerduty"
"#;

#[test]
fn sink_tables_report_every_error_at_once() {
    let errs = compile(SINKS, &Overrides::new(), &opts())
        .err()
        .expect("invalid");
    let msg = errs.to_string();
    for want in [
        // The source's named token variable is not set.
        "source[0].token_env: invalid value \"CONFIG_TEST_UNSET_TOKEN_A\" (not set)",
        // A declared Slack sink without its webhook.
        "sink[2].webhook_env: invalid value \"CONFIG_TEST_UNSET_HOOK\" (not set)",
        "sink[3].kind: invalid value \"pagerduty\"; allowed: one of agent, slack",
        // Another sink's secret is never passed to an agent.
        "sink[0].env_allow: invalid value \"CONFIG_TEST_UNSET_HOOK\"",
        "sink: invalid value 2 event sinks; allowed: exactly one [[sink]] with kind = \"agent\"",
    ] {
        assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
    }
    assert_eq!(errs.len(), 5, "{msg}");
}

#[test]
fn sink_table_and_sink_array_compile_alike() {
    let single = compile(BASE, &Overrides::new(), &opts()).unwrap();
    let array = BASE.replace("[sink]", "[[sink]]");
    let array = compile(&array, &Overrides::new(), &opts()).unwrap();
    assert_eq!(single.sink.name(), "agent");
    assert_eq!(array.sink.name(), "agent");
    // Error keys follow the form the file uses.
    let bad = BASE.replace("preset = \"demo\"", "preset = \"nope\"");
    let msg = compile(&bad, &Overrides::new(), &opts())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("sink.preset: invalid value \"nope\""), "{msg}");
    let bad = bad.replace("[sink]", "[[sink]]");
    let msg = compile(&bad, &Overrides::new(), &opts())
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("sink[0].preset: invalid value \"nope\""),
        "{msg}"
    );
    let none = BASE.replace("[sink]\nkind = \"agent\"\npreset = \"demo\"\n", "");
    let msg = compile(&none, &Overrides::new(), &opts())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("sink: missing"), "{msg}");
}

#[test]
fn validate_lists_the_notifier_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    let text = format!(
        "{}\n[[sink]]\nkind = \"slack\"\nwebhook_env = \"CONFIG_TEST_HOOK\"\n",
        BASE.replace("[sink]", "[[sink]]")
    );
    std::fs::write(&p, text).unwrap();
    let out = runner()
        .args(["validate", "--config"])
        .arg(&p)
        .env_remove("SLACK_WEBHOOK_URL")
        .env(
            "CONFIG_TEST_HOOK",
            "https://hooks.example/services/T/B/SECRET",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("  sink:    agent\n  notify:  slack\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("SECRET"), "{stdout}");
    // A second webhook in the agent table together with a slack sink is refused.
    std::fs::write(
        &p,
        format!(
            "{}\nslack_webhook_env = \"OTHER_HOOK\"\n[[sink]]\nkind = \"slack\"\nwebhook_env = \"CONFIG_TEST_HOOK\"\n",
            BASE.replace("[sink]", "[[sink]]")
        ),
    )
    .unwrap();
    let out = runner()
        .args(["validate", "--config"])
        .arg(&p)
        .env(
            "CONFIG_TEST_HOOK",
            "https://hooks.example/services/T/B/SECRET",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sink[0].slack_webhook_env"), "{err}");
}
