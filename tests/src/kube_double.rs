//! A recording kube-apiserver double on loopback: enough of the core API
//! for `kubectl get pods`, `kubectl describe pod` and `kubectl logs` to
//! work through a kubeconfig with a bearer token. Every request is
//! recorded (method, path with query, bearer token), so tests judge what
//! reached the "cluster" and with which credential. DELETE and other
//! writes are answered with success, so a write that gets through is a
//! recorded side effect, never a silent error.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeRequest {
    pub method: String,
    pub path: String,
    /// The bearer token sent, if any.
    pub token: Option<String>,
}

struct Inner {
    token: String,
    requests: Mutex<Vec<KubeRequest>>,
}

/// A CA (what kubeconfigs carry) and the certificate for 127.0.0.1 it
/// signed (valid for a century), only for this double. rustls, as the
/// runner uses it, refuses a self-signed CA certificate as a server's.
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBmjCCAT+gAwIBAgIUJC0EHs/qw2tDzt/30kYjifwhX3swCgYIKoZIzj0EAwIw\nGTEXMBUGA1UEAwwOa3ViZS1kb3VibGUtY2EwIBcNMjYxMTI5MTE0ODUxWhgPMjEy\nNjExMDUxMTQ4NTFaMBkxFzAVBgNVBAMMDmt1YmUtZG91YmxlLWNhMFkwEwYHKoZI\nzj0CAQYIKoZIzj0DAQcDQgAEz4a+M6nvycoOkWs+bnPY9axMBHeecUf5k9Xwqpoo\naKM4bFXlUSvHnzGcU6PNap74IU8sFFw3wElIf/jvCIv6UKNjMGEwHQYDVR0OBBYE\nFKEQW18qU1bYhIUp5CJBUmkDJWfvMB8GA1UdIwQYMBaAFKEQW18qU1bYhIUp5CJB\nUmkDJWfvMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEGMAoGCCqGSM49\nBAMCA0kAMEYCIQCEKHMwfCzzXQLNHsmB7UVCHyZORj0N1tHCs9QiK/iV4wIhANU2\np7YOpWWEQSAvcAE2Sd57kp3DFavB6EoI84FU2/gn\n-----END CERTIFICATE-----\n";
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBuTCCAV+gAwIBAgIUBN/JXmXVbVHNRaKhiFBIO4VUouYwCgYIKoZIzj0EAwIw\nGTEXMBUGA1UEAwwOa3ViZS1kb3VibGUtY2EwIBcNMjYxMTI5MTE0ODUyWhgPMjEy\nNjExMDUxMTQ4NTJaMBQxEjAQBgNVBAMMCTEyNy4wLjAuMTBZMBMGByqGSM49AgEG\nCCqGSM49AwEHA0IABHG7NHarXcyhdGtMRbvYm54Mz1vy9jgNx2GRgqG0pKe/6RtK\nvFDnASSN+2qOqP0CiaQN5Dffv6sfnqquoDVvhBajgYcwgYQwDwYDVR0RBAgwBocE\nfwAAATAMBgNVHRMBAf8EAjAAMA4GA1UdDwEB/wQEAwIHgDATBgNVHSUEDDAKBggr\nBgEFBQcDATAdBgNVHQ4EFgQUOotQsd3pMHjJiPoON5OBhnY75vAwHwYDVR0jBBgw\nFoAUoRBbXypTVtiEhSnkIkFSaQMlZ+8wCgYIKoZIzj0EAwIDSAAwRQIhAIFwTnpH\nBcJazg6RT/Dq4x3S1CWdgpaQh+JI70+ruNK+AiB2sg5GfK2Mc1KMC5/RUE1516zH\nGlYNvZDXM4b8sXopaQ==\n-----END CERTIFICATE-----\n";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghTJkyvgSa2m5NvhU\nyJKTyziZOwxRwQy8o0745DpgHC2hRANCAARxuzR2q13MoXRrTEW72JueDM9b8vY4\nDcdhkYKhtKSnv+kbSrxQ5wEkjftqjqj9AomkDeQ337+rH56qrqA1b4QW\n-----END PRIVATE KEY-----\n";

/// Accepts TCP connections and completes the TLS handshake.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((s, a)) = self.tcp.accept().await else {
                continue;
            };
            // A failed handshake (a client that gave up) is not fatal.
            if let Ok(tls) = self.acceptor.accept(s).await {
                return (tls, a);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(CERT_PEM.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(KEY_PEM.as_bytes()).expect("key");
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server cert");
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

pub struct KubeDouble {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

/// The pod the double serves (namespace `default`).
pub const POD: &str = "web-1";

/// Where the runner checks what its cluster credential may do.
const SSRR_PATH: &str = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews";

impl KubeDouble {
    /// Serves on 127.0.0.1:0 and accepts only `token`.
    pub async fn start(token: &str) -> KubeDouble {
        let inner = Arc::new(Inner {
            token: token.to_string(),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind kube double");
        let addr = tcp.local_addr().expect("addr");
        let listener = TlsListener {
            tcp,
            acceptor: acceptor(),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        KubeDouble { addr, inner, task }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<KubeRequest> {
        self.inner.requests.lock().expect("lock").clone()
    }

    /// Requests other than GET (a write reached the cluster), leaving out
    /// the runner's own SelfSubjectRulesReview of the credential.
    pub fn writes(&self) -> Vec<KubeRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET" && !(r.method == "POST" && r.path == SSRR_PATH))
            .collect()
    }

    /// A `[[cluster]]` table giving the agents of cluster `name` read access
    /// to this double through the runner's proxy (`kubeconfig`: a file
    /// written by [`write_kubeconfig`](Self::write_kubeconfig)).
    pub fn cluster_table(name: &str, kubeconfig: &Path) -> String {
        format!(
            "[[cluster]]\nname = {name:?}\nkubeconfig = {:?}\n",
            kubeconfig.display().to_string()
        )
    }

    /// Writes a kubeconfig for this server with `token` to `path`.
    pub fn write_kubeconfig(&self, path: &Path) {
        use std::io::Write;
        let mut ca = Vec::new();
        {
            // base64 of the PEM, as kubeconfigs carry it.
            let mut enc = Base64(&mut ca);
            enc.write_all(CA_PEM.as_bytes()).expect("encode");
        }
        let cfg = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
             users:\n- name: agent\n  user:\n    token: {}\n\
             contexts:\n- name: double\n  context:\n    cluster: double\n    user: agent\n    namespace: default\n\
             current-context: double\n",
            self.url(),
            String::from_utf8(ca).expect("ascii"),
            self.inner.token
        );
        std::fs::write(path, cfg).expect("write kubeconfig");
    }
}

impl Drop for KubeDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: StatusCode, reason: &str, msg: &str) -> Response {
    let body = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":msg,"reason":reason,"code":code.as_u16()});
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok_json(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn pod(ns: &str) -> Value {
    json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":POD,"namespace":ns,"uid":"0b7e6f1c-pod","creationTimestamp":"2026-11-29T00:00:00Z","labels":{"app":"web"}},
        "spec":{"containers":[{"name":"app","image":"registry.example/web:v2"}],"nodeName":"node-1"},
        "status":{"phase":"Running","podIP":"10.0.0.7","startTime":"2026-11-29T00:00:00Z","conditions":[{"type":"Ready","status":"False"}],
            "containerStatuses":[{"name":"app","ready":false,"restartCount":7,"image":"registry.example/web:v2","imageID":"","started":false,
                "state":{"waiting":{"reason":"CrashLoopBackOff","message":"back-off restarting failed container"}},
                "lastState":{"terminated":{"exitCode":1,"reason":"Error"}}}]}})
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    inner.requests.lock().expect("lock").push(KubeRequest {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        token: token.clone(),
    });
    if token.as_deref() != Some(inner.token.as_str()) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    if method == Method::POST && uri.path() == SSRR_PATH {
        // The runner's own startup check of the credential (never an
        // agent's write): a read-only role without Secrets.
        return (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"kind":"SelfSubjectRulesReview","apiVersion":"authorization.k8s.io/v1","status":{
                "resourceRules":[
                    {"verbs":["create"],"apiGroups":["authorization.k8s.io"],"resources":["selfsubjectaccessreviews","selfsubjectrulesreviews"]},
                    {"verbs":["get","list","watch"],"apiGroups":[""],"resources":["pods","pods/log","events","namespaces"]}
                ],
                "nonResourceRules":[{"verbs":["get"],"nonResourceURLs":["/api","/api/*","/apis","/apis/*","/version"]}],
                "incomplete":false}})
            .to_string(),
        )
            .into_response();
    }
    if method != Method::GET {
        // Recorded above; answered as if it worked.
        return ok_json(
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success"}),
        );
    }
    let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api"] => ok_json(
            json!({"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1"}]}),
        ),
        ["apis"] => ok_json(json!({"kind":"APIGroupList","apiVersion":"v1","groups":[]})),
        ["api", "v1"] => ok_json(
            json!({"kind":"APIResourceList","groupVersion":"v1","resources":[
                {"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list","delete","create","patch","update","watch"],"shortNames":["po"]},
                {"name":"pods/log","singularName":"","namespaced":true,"kind":"Pod","verbs":["get"]},
                {"name":"events","singularName":"event","namespaced":true,"kind":"Event","verbs":["get","list"],"shortNames":["ev"]}
            ]}),
        ),
        ["api", "v1", "namespaces", ns, "pods"] => ok_json(
            json!({"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[pod(ns)]}),
        ),
        ["api", "v1", "namespaces", ns, "pods", name] if *name == POD => ok_json(pod(ns)),
        ["api", "v1", "namespaces", _, "pods", name, "log"] if *name == POD => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            "panic: config key DATABASE_URL missing\n",
        )
            .into_response(),
        ["api", "v1", "namespaces", _, "events"] | ["api", "v1", "events"] => ok_json(
            json!({"kind":"EventList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}),
        ),
        _ => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
    }
}

/// A plain listener that records every connection's first request line
/// (a "foreign" host data must never reach).
pub struct Foreign {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Foreign {
    pub async fn start() -> Foreign {
        Self::start_inner(None).await
    }

    /// Speaks TLS with the double's certificate, so a kubeconfig's CA
    /// accepts it (a client sends its bearer token only over TLS).
    pub async fn start_tls() -> Foreign {
        Self::start_inner(Some(acceptor())).await
    }

    async fn start_inner(tls: Option<tokio_rustls::TlsAcceptor>) -> Foreign {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind foreign");
        let addr = listener.local_addr().expect("addr");
        let h = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let h = h.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => record(s, h).await,
                        Some(a) => match a.accept(s).await {
                            Ok(t) => record(t, h).await,
                            // The handshake itself reached us: record it.
                            Err(e) => h.lock().expect("lock").push(format!("tls: {e}")),
                        },
                    }
                });
            }
        });
        Foreign { addr, hits, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().expect("lock").clone()
    }
}

/// Records the first bytes a client sent and answers 200.
async fn record<S>(mut s: S, h: Arc<Mutex<Vec<String>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap_or(0);
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    h.lock().expect("lock").push(first);
    let _ = s
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await;
}

impl Drop for Foreign {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Minimal base64 (standard alphabet, padded) for one-shot encoding.
struct Base64<'a>(&'a mut Vec<u8>);

impl std::io::Write for Base64<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for chunk in buf.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    self.0.push(A[((n >> (18 - 6 * i)) & 63) as usize]);
                } else {
                    self.0.push(b'=');
                }
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
