//! The deployment files, checked with the real tools: `kubectl kustomize`
//! renders the base, `kubernetes-validate` (PyPI) accepts it for a current
//! Kubernetes version, the ConfigMap's pipeline compiles with the real
//! `runner`, and `systemd-analyze` verifies the unit. `.ci/run` installs the
//! tools; a missing tool fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::{runner_bin, workspace_root};

/// Kubernetes minor version the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.34.0";

fn tool(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found (set {env} or let .ci/run install it)");
}

fn render() -> String {
    let out = Command::new(tool("KUBECTL", "kubectl"))
        .arg("kustomize")
        .arg(workspace_root().join("deploy/kubernetes"))
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The YAML document of `kind` (the rendered output is one per `---`).
fn doc<'a>(all: &'a str, kind: &str) -> &'a str {
    all.split("\n---\n")
        .find(|d| d.lines().any(|l| l == format!("kind: {kind}")))
        .unwrap_or_else(|| panic!("no {kind} in:\n{all}"))
}

#[test]
fn kustomize_renders_and_kubernetes_validate_accepts_it() {
    let yaml = render();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &yaml).unwrap();
    for version in [KUBERNETES_VERSION, "1.33.0"] {
        let out = Command::new(tool("KUBERNETES_VALIDATE", "kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", version])
            .arg(&file)
            .output()
            .expect("run kubernetes-validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kubernetes-validate {version}:\n{text}"
        );
        for kind in [
            "namespace",
            "serviceaccount",
            "clusterrole",
            "clusterrolebinding",
            "configmap",
            "service",
            "deployment",
            "networkpolicy",
        ] {
            assert!(
                text.contains(&format!("passed for resource {kind}/")),
                "{kind} not validated for {version}:\n{text}"
            );
        }
    }
}

#[test]
fn the_manifests_keep_their_promises() {
    let yaml = render();
    let dep = doc(&yaml, "Deployment");
    for needle in [
        "path: /healthz",
        "path: /readyz",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "- ALL",
        "type: RuntimeDefault",
        "value: 0.0.0.0:9469",
        "key: admin-token",
        "key: slack-webhook-url",
        "key: mcp-token",
        "serviceAccountName: event-runner",
        "type: Recreate",
    ] {
        assert!(dep.contains(needle), "Deployment lacks {needle:?}:\n{dep}");
    }
    // The admin token is never optional: without it the runner refuses a
    // non-loopback listener.
    let admin = dep.split("name: ADMIN_TOKEN").nth(1).unwrap();
    let admin = admin.split("- name:").next().unwrap();
    assert!(!admin.contains("optional"), "{admin}");
    let ns = doc(&yaml, "Namespace");
    assert!(ns.contains("pod-security.kubernetes.io/enforce: restricted"));
    let role = doc(&yaml, "ClusterRole");
    assert!(
        !role.contains("secrets"),
        "agents must not read Secrets:\n{role}"
    );
    assert!(!role.contains("'*'") && !role.contains("\"*\""), "{role}");
    for verb in [
        "create",
        "update",
        "patch",
        "delete",
        "escalate",
        "bind",
        "impersonate",
    ] {
        assert!(!role.contains(&format!("- {verb}")), "{verb} in\n{role}");
    }
    let svc = doc(&yaml, "Service");
    assert!(
        svc.contains("name: admin") && svc.contains("port: 9469"),
        "{svc}"
    );
    assert!(
        svc.contains("app.kubernetes.io/name: event-runner"),
        "{svc}"
    );
    let np = doc(&yaml, "NetworkPolicy");
    assert!(np.contains("- Ingress") && np.contains("- Egress"), "{np}");
    assert!(
        !yaml.contains("kind: Secret\n"),
        "no Secret values ship in the base"
    );
}

/// PATH with the pinned agent CLIs (`AGENT_CLI_BIN`, else `.ci/node`).
fn agent_path() -> String {
    let bin = std::env::var_os("AGENT_CLI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".ci/node/node_modules/.bin"));
    assert!(
        bin.join("claude").exists(),
        "claude not found in {}: install the pinned CLIs as .ci/run does or set AGENT_CLI_BIN",
        bin.display()
    );
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn the_configmap_pipeline_compiles_with_the_deployment_environment() {
    let out = Command::new(runner_bin())
        .args(["validate", "--config"])
        .arg(workspace_root().join("deploy/kubernetes/pipeline.toml"))
        .env(
            "K8S_CLUSTER_MCP_ENDPOINT",
            "http://kubernetes-mcp-server.kubernetes-mcp-server.svc:8080/mcp",
        )
        .env("ADMIN_LISTEN", "0.0.0.0:9469")
        .env("ADMIN_TOKEN", "a-token-of-sufficient-length")
        // As the Deployment passes them; the image's agent layer puts the
        // claude CLI on PATH (here: the pinned CLI that .ci/run installs).
        .env("AGENT_ENV_ALLOW", "ANTHROPIC_API_KEY")
        .env("ANTHROPIC_API_KEY", "sk-test")
        .env("PATH", agent_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("server.listen = \"0.0.0.0:9469\" (env)"),
        "{text}"
    );
    // The same file without the token is refused: the Deployment needs the Secret.
    let out = Command::new(runner_bin())
        .args(["validate", "--config"])
        .arg(workspace_root().join("deploy/kubernetes/pipeline.toml"))
        .env("K8S_CLUSTER_MCP_ENDPOINT", "http://h:8080/mcp")
        .env("ADMIN_LISTEN", "0.0.0.0:9469")
        .env_remove("ADMIN_TOKEN")
        .env_remove("ADMIN_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

#[test]
fn systemd_analyze_verifies_the_hardened_unit() {
    let unit =
        std::fs::read_to_string(workspace_root().join("deploy/systemd/event-runner.service"))
            .unwrap();
    // Point ExecStart at the binary built here (verify checks it exists).
    let unit = unit.replace("/usr/local/bin/runner", &runner_bin().display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("event-runner.service");
    std::fs::write(&path, unit).unwrap();
    let analyze = tool("SYSTEMD_ANALYZE", "systemd-analyze");
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("event-runner.service:"),
        "warnings about the unit:\n{text}"
    );
    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "Overall exposure level ...: 1.5 OK": keep it low.
    let level: f64 = text
        .rsplit("Overall exposure level for event-runner.service: ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {text}"));
    assert!(level <= 2.0, "exposure {level}:\n{text}");
}
