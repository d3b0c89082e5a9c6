//! A recording fake kube-apiserver on loopback (the real one cannot run
//! here): plain HTTP or TLS (optionally requiring a client certificate),
//! answering discovery, SelfSubjectRulesReview, pods (list, get, log) and
//! recording every request it receives, so tests judge what reached it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The Authorization header, if any.
    pub auth: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The rules the fake's SelfSubjectRulesReview returns.
pub(crate) fn read_only_rules() -> Value {
    json!({
        "resourceRules": [
            {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
            {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods", "pods/log", "events", "namespaces"]}
        ],
        "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/version"]}],
        "incomplete": false
    })
}

/// Rules of a credential that can delete pods and read Secrets.
pub(crate) fn write_rules() -> Value {
    json!({
        "resourceRules": [
            {"verbs": ["get", "list", "delete"], "apiGroups": [""], "resources": ["pods"]},
            {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}
        ],
        "nonResourceRules": [],
        "incomplete": false
    })
}

pub(crate) struct FakeApi {
    pub addr: SocketAddr,
    pub tls: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Behavior {
    /// The bearer token it accepts (`None`: any, e.g. client-cert auth).
    token: Option<String>,
    rules: Value,
}

impl FakeApi {
    /// Plain HTTP on 127.0.0.1, accepting `Bearer <token>`.
    pub(crate) async fn start(token: &str, rules: Value) -> FakeApi {
        Self::start_inner(
            Behavior {
                token: Some(token.to_string()),
                rules,
            },
            None,
        )
        .await
    }

    /// TLS with `pki`'s server certificate; requires a client certificate
    /// signed by its CA.
    pub(crate) async fn start_tls(pki: &Pki, rules: Value) -> FakeApi {
        use tokio_rustls::rustls;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let read = |p: &Path| std::fs::read(p).unwrap();
        let certs: Vec<rustls::pki_types::CertificateDer<'static>> = {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::CertificateDer::pem_slice_iter(&read(&pki.server_cert))
                .map(|c| c.unwrap())
                .collect()
        };
        let key = {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::PrivateKeyDer::from_pem_slice(&read(&pki.server_key)).unwrap()
        };
        let mut roots = rustls::RootCertStore::empty();
        {
            use rustls::pki_types::pem::PemObject;
            for c in rustls::pki_types::CertificateDer::pem_slice_iter(&read(&pki.ca_cert)) {
                roots.add(c.unwrap()).unwrap();
            }
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        Self::start_inner(
            Behavior { token: None, rules },
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
        )
        .await
    }

    async fn start_inner(b: Behavior, tls: Option<tokio_rustls::TlsAcceptor>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let is_tls = tls.is_some();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (s, b, tls) = (s.clone(), b.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acc) => {
                            if let Ok(stream) = acc.accept(sock).await {
                                serve(stream, &s, &b).await;
                            }
                        }
                        None => serve(sock, &s, &b).await,
                    }
                });
            }
        });
        FakeApi {
            addr,
            tls: is_tls,
            seen,
            task,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.tls { "https" } else { "http" },
            self.addr.port()
        )
    }

    /// Every request received so far, except the unauthenticated
    /// `GET /version` that this host's `kubectl` (a version dispatcher)
    /// sends before running any command, `kubectl config view` included.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| {
                !(s.auth.is_none()
                    && s.target.starts_with("/version")
                    && s.headers
                        .iter()
                        .any(|(k, v)| k == "user-agent" && v.starts_with("kubectl-dispatcher")))
            })
            .cloned()
            .collect()
    }

    /// Every request, the dispatcher's included.
    pub(crate) fn seen_all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests other than the credential checks.
    pub(crate) fn seen_reads(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| !s.target.contains("selfsubjectrulesreviews"))
            .collect()
    }
}

/// One request per connection (HTTP/1.1, `Connection: close`).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    seen: &Mutex<Vec<Seen>>,
    b: &Behavior,
) {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let len: usize = get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len.min(1 << 20)];
    if r.read_exact(&mut body).await.is_err() {
        return;
    }
    let auth = get("authorization");
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        auth: auth.clone(),
        headers: headers.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let (code, ctype, body) = answer(&method, &target, auth.as_deref(), b);
    let resp = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = r.into_inner();
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

fn status(code: u16, msg: &str) -> (u16, &'static str, String) {
    (
        code,
        "application/json",
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": msg, "code": code}).to_string(),
    )
}

fn pod(name: &str) -> Value {
    json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
           "spec": {"containers": [{"name": "app", "image": "nginx"}]}, "status": {"phase": "Running"}})
}

fn answer(
    method: &str,
    target: &str,
    auth: Option<&str>,
    b: &Behavior,
) -> (u16, &'static str, String) {
    if let Some(t) = &b.token
        && auth != Some(format!("Bearer {t}").as_str())
    {
        return status(401, "Unauthorized");
    }
    let path = target.split('?').next().unwrap_or("");
    let j = |v: Value| (200, "application/json", v.to_string());
    match (method, path) {
        ("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews") => (
            201,
            "application/json",
            json!({"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1", "status": b.rules}).to_string(),
        ),
        ("GET", "/version") => j(json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0"})),
        ("GET", "/api") => j(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})),
        ("GET", "/apis") => j(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})),
        ("GET", "/api/v1") => j(json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get", "list", "delete"], "shortNames": ["po"]},
            {"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]},
            {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
            {"name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret", "verbs": ["get", "list"]},
            {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace", "verbs": ["get", "list"], "shortNames": ["ns"]}
        ]})),
        ("GET", "/api/v1/namespaces/default/pods") => j(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
            "items": [pod("web-1"), pod("web-2")]})),
        ("GET", "/api/v1/namespaces/default/pods/web-1") => j(pod("web-1")),
        ("GET", "/api/v1/namespaces/default/pods/web-1/log") => (200, "text/plain", "oom: killed\n".into()),
        ("GET", "/api/v1/namespaces/default/secrets") => j(json!({"kind": "SecretList", "apiVersion": "v1", "metadata": {},
            "items": [{"metadata": {"name": "db"}, "data": {"password": "czNjcjN0"}}]})),
        ("DELETE", _) => j(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
        _ => status(404, "not found"),
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate,
/// made with the openssl CLI.
pub(crate) struct Pki {
    pub ca_cert: std::path::PathBuf,
    pub server_cert: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
}

pub(crate) fn make_pki(dir: &Path) -> Pki {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=fake-cluster-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n").unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for who in ["server", "client"] {
        let key = format!("{who}.key");
        let csr = format!("{who}.csr");
        let pem = format!("{who}.pem");
        let ext = format!("{who}.ext");
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={who}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    Pki {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

/// An operator kubeconfig for `server` with a bearer token.
pub(crate) fn token_kubeconfig(path: &Path, server: &str, token: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\ncontexts:\n- name: triage\n  context:\n    cluster: fake\n    user: agent-reader\ncurrent-context: triage\nusers:\n- name: agent-reader\n  user:\n    token: {token}\n"
        ),
    )
    .unwrap();
}

/// An operator kubeconfig for `server` with the CA and a client certificate (files).
pub(crate) fn cert_kubeconfig(path: &Path, server: &str, pki: &Pki, ca: &Path) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n    certificate-authority: {}\ncontexts:\n- name: triage\n  context:\n    cluster: fake\n    user: cert-user\ncurrent-context: triage\nusers:\n- name: cert-user\n  user:\n    client-certificate: {}\n    client-key: {}\n",
            ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    )
    .unwrap();
}

/// The incident token in a generated (JSON) kubeconfig's server URL.
pub(crate) fn token_of(kubeconfig: &str) -> String {
    let server = server_of(kubeconfig);
    let (_, t) = server.split_once("/incident/").expect("token path");
    t.to_string()
}

/// `http://host:port` of a generated kubeconfig's server.
pub(crate) fn proxy_of(kubeconfig: &str) -> String {
    let server = server_of(kubeconfig);
    let (p, _) = server.split_once("/incident/").expect("token path");
    p.to_string()
}

/// The server in a generated (JSON) kubeconfig.
pub(crate) fn server_of(kubeconfig: &str) -> String {
    let v: Value = serde_json::from_str(kubeconfig).unwrap();
    v["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_string()
}
