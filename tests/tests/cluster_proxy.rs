//! The read-only cluster proxy against a recording fake kube-apiserver:
//! what reaches the real API server is judged from the fake's records.
//! Clients: reqwest (every refusal rule) and the real `kubectl` through the
//! generated kubeconfig.

mod cluster_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_support::*;
use runner_plugins::cluster::{Access, Check, ClusterConfig, ClusterGuard, OnUnsafe, Upstream};

const REAL: &str = "real-cluster-credential-0123456789";

fn config(name: &str, kubeconfig: &Path) -> ClusterConfig {
    ClusterConfig {
        name: name.into(),
        kubeconfig: kubeconfig.into(),
        context: None,
        on_unsafe: OnUnsafe::Refuse,
        check_namespaces: vec!["default".into()],
        deny_resources: vec!["configmaps".into()],
    }
}

/// A guard over one cluster `prod` served by `api` with the token credential.
fn guard_for(dir: &Path, api: &FakeApi) -> ClusterGuard {
    let kc = dir.join("operator.kubeconfig");
    token_kubeconfig(&kc, &api.url(), REAL);
    let up = Upstream::load(&kc, None).expect("load operator kubeconfig");
    ClusterGuard::new(vec![(config("prod", &kc), up)])
}

async fn granted(g: &ClusterGuard, incident: &str) -> runner_plugins::cluster::Grant {
    match g.access("prod", incident).await {
        Access::Granted(gr) => gr,
        Access::None(w) | Access::Disabled(w) => panic!("no access: {w}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_forwards_reads_and_refuses_everything_else() {
    let tmp = tempfile::tempdir().unwrap();
    let api = FakeApi::start(REAL, read_only_rules()).await;
    let g = guard_for(tmp.path(), &api);
    let checks = g.verify_all().await;
    assert_eq!(checks[0].2, Check::Safe { incomplete: None });
    // The check is the one write the runner makes, with the real credential.
    let seen = api.seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].method, "POST");
    assert!(
        seen[0].body.contains("SelfSubjectRulesReview"),
        "{:?}",
        seen[0]
    );
    assert_eq!(
        seen[0].auth.as_deref(),
        Some(format!("Bearer {REAL}").as_str())
    );

    let grant = granted(&g, "inc-1").await;
    let kc = grant.kubeconfig();
    let token = token_of(&kc);
    let proxy = proxy_of(&kc);
    assert!(proxy.starts_with("http://127.0.0.1:"), "{proxy}");
    assert_eq!(token.len(), 64);
    assert!(
        !kc.contains(REAL),
        "the agent's kubeconfig must not hold the credential"
    );
    let http = reqwest::Client::new();
    let req =
        |m: reqwest::Method, p: &str, t: &str| http.request(m, format!("{proxy}/incident/{t}{p}"));

    // Reads are forwarded with the real credential, never the agent's token.
    let r = req(
        reqwest::Method::GET,
        "/api/v1/namespaces/default/pods?limit=5",
        &token,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("web-1"));
    let r = req(
        reqwest::Method::GET,
        "/api/v1/namespaces/default/pods/web-1/log?tailLines=10",
        &token,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "oom: killed\n");

    // Everything else is refused with a Kubernetes Status and never forwarded.
    let refused: Vec<(reqwest::Method, &str)> = vec![
        (
            reqwest::Method::DELETE,
            "/api/v1/namespaces/default/pods/web-1",
        ),
        (reqwest::Method::POST, "/api/v1/namespaces/default/pods"),
        (
            reqwest::Method::PUT,
            "/api/v1/namespaces/default/pods/web-1",
        ),
        (
            reqwest::Method::PATCH,
            "/api/v1/namespaces/default/pods/web-1",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/namespaces/default/serviceaccounts/default/token",
        ),
        (reqwest::Method::GET, "/api/v1/namespaces/default/secrets"),
        (
            reqwest::Method::GET,
            "/api/v1/namespaces/default/secrets/db",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods/web-1/exec?command=sh",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods/web-1/attach",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods/web-1/portforward",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods/web-1/proxy/",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/namespaces/default/pods?watch=true",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/namespaces/default/configmaps",
        ),
        (reqwest::Method::GET, "/metrics"),
    ];
    for (m, p) in &refused {
        let r = req(m.clone(), p, &token).send().await.unwrap();
        assert_eq!(r.status(), 403, "{m} {p}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["kind"], "Status", "{m} {p}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("read-only proxy"),
            "{body}"
        );
    }
    let r = req(reqwest::Method::GET, "/api/v1/pods", &token)
        .header("Impersonate-User", "system:admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Foreign tokens, the real credential itself, and no token at all
    // (also not as a bearer token).
    for t in ["not-a-token", REAL, ""] {
        let r = req(reqwest::Method::GET, "/api/v1/namespaces/default/pods", t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "token {t:?}");
    }
    let r = http
        .get(format!("{proxy}/api/v1/namespaces/default/pods"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Exactly the two reads reached the API server, with the real credential.
    let reads = api.seen_reads();
    let targets: Vec<&str> = reads.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "/api/v1/namespaces/default/pods?limit=5",
            "/api/v1/namespaces/default/pods/web-1/log?tailLines=10"
        ]
    );
    assert!(
        reads
            .iter()
            .all(|s| s.method == "GET"
                && s.auth.as_deref() == Some(format!("Bearer {REAL}").as_str()))
    );
    assert_eq!(grant.counts(), (2, refused.len() as u64 + 1));
    assert_eq!(g.counters("prod"), Some((2, refused.len() as u64 + 1, 0)));
    assert_eq!(g.unauthenticated(), 4);

    // The incident ends: its token is revoked.
    assert_eq!(g.live_tokens(), 1);
    drop(grant);
    assert_eq!(g.live_tokens(), 0);
    let r = req(
        reqwest::Method::GET,
        "/api/v1/namespaces/default/pods",
        &token,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        api.seen_reads().len(),
        2,
        "a revoked token reached the API server"
    );
    g.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_per_incident_and_per_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let api = FakeApi::start(REAL, read_only_rules()).await;
    let g = guard_for(tmp.path(), &api);
    // What the agents' sandbox must keep them from reading.
    assert_eq!(
        g.credential_paths(),
        vec![tmp.path().join("operator.kubeconfig")]
    );
    let a = granted(&g, "inc-a").await;
    let b = granted(&g, "inc-b").await;
    assert_ne!(token_of(&a.kubeconfig()), token_of(&b.kubeconfig()));
    // A cluster without a credential gets no access, and says why.
    match g.access("staging", "inc-c").await {
        Access::None(why) => assert!(
            why.contains("no agent credential is configured for cluster \"staging\""),
            "{why}"
        ),
        _ => panic!("staging has no credential"),
    }
    drop(a);
    let base = server_of(&b.kubeconfig());
    let r = reqwest::Client::new()
        .get(format!("{base}/api/v1/namespaces/default/pods"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "b's token outlives a's incident");
    g.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_that_writes_disables_its_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let api = FakeApi::start(REAL, write_rules()).await;
    let g = guard_for(tmp.path(), &api);
    let checks = g.verify_all().await;
    match &checks[0].2 {
        Check::Unsafe(p) => {
            let all = p.join("\n");
            assert!(
                all.contains("write verbs [delete] on resources [pods]"),
                "{all}"
            );
            assert!(all.contains("can read Secrets"), "{all}");
        }
        other => panic!("expected unsafe, got {other:?}"),
    }
    match g.access("prod", "inc-1").await {
        Access::Disabled(why) => assert!(why.contains("delete"), "{why}"),
        _ => panic!("a writing credential must disable the cluster"),
    }
    assert!(api.seen_reads().is_empty());
    assert!(
        g.proxy_address().is_none(),
        "no proxy for a disabled cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cluster_gets_no_access_and_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let kc = tmp.path().join("k");
    // A closed port: bind and release.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    token_kubeconfig(&kc, &format!("http://127.0.0.1:{port}"), REAL);
    let g = ClusterGuard::new(vec![(
        config("prod", &kc),
        Upstream::load(&kc, None).unwrap(),
    )]);
    assert!(matches!(g.verify_all().await[0].2, Check::Unreachable(_)));
    match g.access("prod", "inc-1").await {
        Access::None(why) => assert!(why.contains("unreachable"), "{why}"),
        _ => panic!("unverified credential must not be used"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_ca_data_and_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path());
    let api = FakeApi::start_tls(&pki, read_only_rules()).await;
    let kc = tmp.path().join("cert.kubeconfig");
    cert_kubeconfig(&kc, &api.url(), &pki, &pki.ca_cert);
    let g = ClusterGuard::new(vec![(
        config("prod", &kc),
        Upstream::load(&kc, None).unwrap(),
    )]);
    assert_eq!(g.verify_all().await[0].2, Check::Safe { incomplete: None });
    let grant = granted(&g, "inc-tls").await;
    let kcfg = grant.kubeconfig();
    let r = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/namespaces/default/pods/web-1",
            server_of(&kcfg)
        ))
        .bearer_auth(token_of(&kcfg))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(api.seen_reads().len(), 1);
    // The proxy sends no Authorization upstream for certificate auth.
    assert_eq!(api.seen_reads()[0].auth, None);

    // Verification stays on: a kubeconfig naming another CA cannot connect.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let wrong = make_pki(&other);
    let kc2 = tmp.path().join("wrong-ca.kubeconfig");
    cert_kubeconfig(&kc2, &api.url(), &pki, &wrong.ca_cert);
    let g2 = ClusterGuard::new(vec![(
        config("prod", &kc2),
        Upstream::load(&kc2, None).unwrap(),
    )]);
    match &g2.verify_all().await[0].2 {
        Check::Unreachable(e) => assert!(!e.is_empty()),
        other => panic!("a wrong CA must not verify: {other:?}"),
    }
    g.close();
}

/// Runs the real kubectl with `kubeconfig`, HOME in `home` (its cache).
fn kubectl(home: &Path, kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    let mut child = Command::new("kubectl")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--request-timeout", "10s"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on PATH");
    // Bounded: kubectl's own retries must not hang the test.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("kubectl {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kubectl_through_the_generated_kubeconfig() {
    let tmp = tempfile::tempdir().unwrap();
    let api = FakeApi::start(REAL, read_only_rules()).await;
    let foreign = FakeApi::start("never-valid", read_only_rules()).await;
    let g = guard_for(tmp.path(), &api);
    g.verify_all().await;
    let grant = granted(&g, "inc-kubectl").await;
    let kc_text = grant.kubeconfig();
    let token = token_of(&kc_text);
    let kc = tmp.path().join("agent.kubeconfig");
    std::fs::write(&kc, &kc_text).unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let (kc2, home2) = (kc.clone(), home.clone());
    let run = move |args: &'static [&'static str]| {
        let (kc, home) = (kc2.clone(), home2.clone());
        tokio::task::spawn_blocking(move || kubectl(&home, &kc, args))
    };

    let out = run(&["get", "pods", "-n", "default"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl get pods: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("web-1") && stdout.contains("web-2"),
        "{stdout}"
    );

    let out = run(&["logs", "web-1", "-n", "default"]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "oom: killed\n");

    let out = run(&["delete", "pod", "web-1", "-n", "default"])
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read-only proxy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&["get", "secrets", "-n", "default"]).await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Secrets are never readable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&["exec", "web-1", "-n", "default", "--", "sh", "-c", "id"])
        .await
        .unwrap();
    assert!(!out.status.success(), "kubectl exec must fail");

    let out = run(&["get", "pods", "-n", "default", "--as", "system:admin"])
        .await
        .unwrap();
    assert!(!out.status.success(), "impersonation must fail");

    // --server elsewhere: kubectl takes nothing of value there (the
    // kubeconfig holds no credential), and even the incident's own proxy
    // URL sent elsewhere carries only the per-incident token.
    let foreign_plain: &'static str =
        Box::leak(format!("--server={}", foreign.url()).into_boxed_str());
    let args: &'static [&'static str] =
        Box::leak(vec!["get", "pods", "-n", "default", foreign_plain].into_boxed_slice());
    let out = run(args).await.unwrap();
    assert!(!out.status.success());
    let foreign_tok: &'static str =
        Box::leak(format!("--server={}/incident/{token}", foreign.url()).into_boxed_str());
    let args: &'static [&'static str] =
        Box::leak(vec!["get", "pods", "-n", "default", foreign_tok].into_boxed_slice());
    let out = run(args).await.unwrap();
    assert!(!out.status.success());

    // Verdict from what the upstream recorded: only reads, only the real credential.
    for s in api.seen() {
        assert_eq!(
            s.auth.as_deref(),
            Some(format!("Bearer {REAL}").as_str()),
            "{s:?}"
        );
        assert!(
            s.method == "GET" || s.target.contains("selfsubjectrulesreviews"),
            "{s:?}"
        );
        assert!(
            !s.target.contains("secrets") && !s.target.contains("exec"),
            "{s:?}"
        );
        assert!(
            !s.target.contains(&token),
            "the incident token leaked upstream: {s:?}"
        );
        assert!(
            !s.headers.iter().any(|(k, _)| k.starts_with("impersonate")),
            "{s:?}"
        );
    }
    assert!(
        api.seen()
            .iter()
            .any(|s| s.target.starts_with("/api/v1/namespaces/default/pods"))
    );
    assert!(!api.seen().iter().any(|s| s.method == "DELETE"));
    let f = foreign.seen_all();
    assert!(
        f.iter().any(|s| s.target.starts_with("/api")),
        "kubectl did not reach the foreign listener: {f:?}"
    );
    for s in &f {
        let all = format!("{s:?}");
        assert!(
            !all.contains(REAL),
            "the real credential reached a foreign server: {all}"
        );
        assert!(s.auth.is_none(), "{all}");
    }
    assert!(f.iter().any(|s| s.target.contains(&token)), "{f:?}");
    // That token dies with the incident: useless once sent elsewhere.
    drop(grant);
    let before = api.seen().len();
    let out =
        tokio::task::spawn_blocking(move || kubectl(&home, &kc, &["get", "pods", "-n", "default"]))
            .await
            .unwrap();
    assert!(!out.status.success(), "a revoked token still worked");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no valid incident token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        api.seen().len(),
        before,
        "a revoked token reached the API server"
    );
    g.close();
}
