//! End to end: the real `runner` binary with `[[cluster]]` credentials
//! against a recording fake kube-apiserver. Agents are sh scripts running
//! the real `kubectl`; verdicts come from what the fake API server recorded
//! and from the files the agents left.

mod cluster_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster_support::*;
use e2e::{Runner, num};
use mcp_testserver::{Scenario, Step, TestServer, fault};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const REAL: &str = "real-cluster-credential-e2e-0123456789";

fn pipeline(endpoint: &str, clusters: &str, agent: &str) -> String {
    format!(
        r#"[settings]
log_level = "info"
log_format = "json"
shutdown_timeout_seconds = 10

[[source]]
kind = "mcp"
endpoint = "{endpoint}"

{clusters}

[sink]
kind = "agent"
command_line = {agent:?}
workspace_root = "{{dir}}/incidents"
timeout_seconds = 60
"#
    )
}

fn cluster_toml(name: &str, kubeconfig: &Path, extra: &str) -> String {
    format!(
        "[[cluster]]\nname = \"{name}\"\nkubeconfig = {:?}\n{extra}\n",
        kubeconfig.display().to_string()
    )
}

async fn exit_of(r: &mut Runner) -> i32 {
    r.wait_exit(T)
        .await
        .unwrap_or_else(|| panic!("runner did not exit\n{}", r.dump()))
        .code()
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_that_can_write_is_refused_by_validate_and_run() {
    let tmp = tempfile::tempdir().unwrap();
    let api = FakeApi::start(REAL, write_rules()).await;
    let kc = tmp.path().join("prod.kubeconfig");
    token_kubeconfig(&kc, &api.url(), REAL);
    let cfg = pipeline(
        "http://127.0.0.1:1/mcp",
        &cluster_toml("prod", &kc, ""),
        "true",
    );

    let mut v = Runner::builder(&cfg).subcommand("validate").spawn();
    assert_eq!(exit_of(&mut v).await, 2, "{}", v.dump());
    let out = v.lines().join("\n");
    assert!(out.contains("prod: REFUSED"), "{out}");
    assert!(
        out.contains("write verbs [delete] on resources [pods]"),
        "{out}"
    );
    assert!(out.contains("can read Secrets"), "{out}");

    let mut r = Runner::builder(&cfg).spawn();
    assert_eq!(exit_of(&mut r).await, 2, "{}", r.dump());
    assert!(
        r.lines().join("\n").contains("refusing to start"),
        "{}",
        r.dump()
    );
    assert!(
        r.count("final statistics") == 0,
        "the pipeline must not start"
    );

    // Only the credential checks reached the API server: no agent ran.
    let seen = api.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|s| s.method == "POST" && s.target.contains("selfsubjectrulesreviews")),
        "{seen:?}"
    );

    // With on_unsafe_credential = "disable" validate passes, loudly.
    let cfg = pipeline(
        "http://127.0.0.1:1/mcp",
        &cluster_toml("prod", &kc, "on_unsafe_credential = \"disable\""),
        "true",
    );
    let mut v = Runner::builder(&cfg).subcommand("validate").spawn();
    assert_eq!(exit_of(&mut v).await, 0, "{}", v.dump());
    assert!(
        v.lines()
            .join("\n")
            .contains("prod: ERROR, triage for this cluster disabled"),
        "{}",
        v.dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_config_errors_are_reported_together() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.kubeconfig");
    token_kubeconfig(&good, "https://127.0.0.1:6443", REAL);
    let insecure = tmp.path().join("insecure.kubeconfig");
    std::fs::write(
        &insecure,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n",
    )
    .unwrap();
    let clusters = [
        cluster_toml("a", &tmp.path().join("missing.kubeconfig"), ""),
        cluster_toml("b", &good, "context = \"no-such-context\""),
        cluster_toml("c", &good, "on_unsafe_credential = \"ignore\""),
        cluster_toml("d", &insecure, ""),
        cluster_toml("e", &good, ""),
        cluster_toml("e", &good, ""),
    ]
    .join("\n");
    let cfg = pipeline("http://127.0.0.1:1/mcp", &clusters, "true").replace(
        "timeout_seconds = 60",
        "timeout_seconds = 60\nenv_allow = [\"KUBECONFIG\"]",
    );
    let mut v = Runner::builder(&cfg).subcommand("validate").spawn();
    assert_eq!(exit_of(&mut v).await, 2, "{}", v.dump());
    let out = v.lines().join("\n");
    for needle in [
        "cluster[0].kubeconfig: invalid value",
        "a readable kubeconfig file",
        "cluster[1].context: invalid value \"no-such-context\"",
        "cluster[2].on_unsafe_credential: invalid value",
        "one of refuse, disable",
        "cluster[3].kubeconfig",
        "TLS verification on",
        "cluster[5].name: invalid value \"e\"",
        "sink.env_allow: invalid value \"KUBECONFIG\"",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
}

fn workspaces(root: &Path) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if let Ok(text) = std::fs::read_to_string(e.path().join("incident.json")) {
            out.push((e.path(), serde_json::from_str(&text).unwrap()));
        }
    }
    out
}

/// Tries a read, a delete and a Secrets read, records each exit code, and
/// writes an investigation quoting what it could read.
const KUBECTL_AGENT: &str = r#"mkdir -p output
kubectl get pods -n default > output/pods.txt 2>&1; echo "get=$?" >> output/rc
kubectl delete pod web-1 -n default > output/delete.txt 2>&1; echo "delete=$?" >> output/rc
kubectl get secrets -n default > output/secrets.txt 2>&1; echo "secrets=$?" >> output/rc
{ printf '# Investigation\n\n## Root Cause\n\nPods seen by the agent are listed below; this text is long enough to count.\n\n'; cat output/pods.txt; } > output/investigation.md
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_read_their_cluster_through_the_proxy_and_nothing_else() {
    e2e::runner_bin();
    let tmp = tempfile::tempdir().unwrap();
    let api = FakeApi::start(REAL, read_only_rules()).await;
    let kc = tmp.path().join("prod.kubeconfig");
    token_kubeconfig(&kc, &api.url(), REAL);
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();

    let mut prod = fault(1);
    prod["cluster"] = "prod".into();
    let mut staging = fault(2);
    staging["cluster"] = "staging".into();
    staging["severity"] = "critical".into();
    let emit = |data: Value| Step::Emit {
        data,
        repeat: 1,
        logger: "kubernetes/faults".into(),
        level: "warning".into(),
    };
    let server = TestServer::start(Scenario::new(vec![
        Step::WaitForSubscriber {
            active: 1,
            timeout_ms: 120_000,
        },
        emit(prod),
        emit(staging),
    ]))
    .await
    .unwrap();
    let cfg = pipeline(
        &server.url(),
        &cluster_toml("prod", &kc, "check_namespaces = [\"default\"]"),
        KUBECTL_AGENT,
    );
    let mut r = Runner::builder(&cfg)
        .env("HOME", home.display().to_string())
        .spawn();
    assert!(
        r.wait_for_count("agent finished", 2, T).await,
        "two agents should finish\n{}",
        r.dump()
    );
    let status = r.stop(T).await;
    assert_eq!(status.code(), Some(0), "{}", r.dump());
    let stats = r.final_stats().expect("final statistics");
    assert_eq!(num(&stats, "completed"), 2, "{}", r.dump());
    assert_eq!(stats["adds_up"], Value::Bool(true));

    let ws = workspaces(&r.dir().join("incidents"));
    assert_eq!(ws.len(), 2);
    let find = |c: &str| {
        ws.iter()
            .find(|(_, d)| d["cluster"] == c)
            .expect(c)
            .0
            .clone()
    };
    let (p, s) = (find("prod"), find("staging"));
    let rc = |dir: &Path| std::fs::read_to_string(dir.join("output/rc")).unwrap();

    // prod: the read worked, the delete and the Secrets read did not.
    let prc = rc(&p);
    assert!(prc.contains("get=0"), "{prc}");
    assert!(
        !prc.contains("delete=0") && !prc.contains("secrets=0"),
        "{prc}"
    );
    let pods = std::fs::read_to_string(p.join("output/pods.txt")).unwrap();
    assert!(pods.contains("web-1"), "{pods}");
    let delete = std::fs::read_to_string(p.join("output/delete.txt")).unwrap();
    assert!(delete.contains("read-only proxy"), "{delete}");
    let kcfg = std::fs::read_to_string(p.join("kubeconfig")).unwrap();
    assert!(
        !kcfg.contains(REAL) && kcfg.contains("/incident/"),
        "{kcfg}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(p.join("kubeconfig"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let prompt = std::fs::read_to_string(p.join("prompt.md")).unwrap();
    assert!(
        prompt.contains("Read-only, through the runner's proxy"),
        "{prompt}"
    );
    let report = std::fs::read_to_string(p.join("report.md")).unwrap();
    assert!(
        report.contains("| Cluster access | read-only through the runner's proxy |"),
        "{report}"
    );

    // staging: no credential configured, so no cluster at all, and it says so.
    let src = rc(&s);
    assert!(!src.contains("get=0"), "{src}");
    let prompt = std::fs::read_to_string(s.join("prompt.md")).unwrap();
    assert!(
        prompt.contains("no agent credential is configured for cluster \"staging\""),
        "{prompt}"
    );
    let report = std::fs::read_to_string(s.join("report.md")).unwrap();
    assert!(report.contains("Cluster access | none"), "{report}");
    let scfg = std::fs::read_to_string(s.join("kubeconfig")).unwrap();
    assert!(!scfg.contains("server"), "{scfg}");

    // The API server saw the check and prod's reads, with the real
    // credential, and nothing else.
    let seen = api.seen();
    assert!(
        seen.iter()
            .any(|x| x.target.starts_with("/api/v1/namespaces/default/pods")),
        "{seen:?}"
    );
    for x in &seen {
        assert_eq!(
            x.auth.as_deref(),
            Some(format!("Bearer {REAL}").as_str()),
            "{x:?}"
        );
        assert!(
            x.method == "GET" || x.target.contains("selfsubjectrulesreviews"),
            "{x:?}"
        );
        assert!(!x.target.contains("secrets"), "{x:?}");
    }

    // Every decision is in the log, with the incident; the token was revoked.
    let refused: Vec<Value> = r
        .messages("cluster proxy")
        .into_iter()
        .filter(|m| m["decision"] == "refused")
        .collect();
    assert!(refused.iter().any(|m| m["verb"] == "DELETE"), "{refused:?}");
    assert!(
        refused
            .iter()
            .any(|m| m["path"].as_str().unwrap_or("").contains("secrets")),
        "{refused:?}"
    );
    let inc = p.file_name().unwrap().to_str().unwrap();
    assert!(refused.iter().all(|m| m["incident"] == inc), "{refused:?}");
    let revoked = r.messages("cluster proxy: incident token revoked");
    assert_eq!(revoked.len(), 1, "{}", r.dump());
    assert!(num(&revoked[0], "refused") >= 2);
    let stats = r.messages("cluster proxy statistics");
    assert_eq!(stats.len(), 1, "{}", r.dump());
    assert_eq!(stats[0]["cluster"], "prod");
    assert!(num(&stats[0], "allowed") >= 1 && num(&stats[0], "refused") >= 2);
    let full = r.lines().join("\n");
    assert!(
        !full.contains(REAL),
        "the credential appeared in the runner's output"
    );
    server.shutdown().await;
}
