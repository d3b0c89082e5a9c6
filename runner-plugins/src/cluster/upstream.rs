//! The real API server of one cluster: its address and credential, read
//! once from the operator's kubeconfig with `kubectl config view --raw
//! --minify --flatten -o json` (kubectl resolves contexts, relative paths and
//! file references; we need no YAML parser), and an HTTP client that keeps
//! TLS verification on.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::Url;
use serde_json::Value;

/// How long `kubectl config view` may take (it is local, but a broken
/// kubectl must not hang the startup).
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound of one forwarded request (a large `pods/log` included).
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration problem of a `[[cluster]]` entry: (key, value, allowed).
pub(crate) type Problem = (&'static str, String, String);

#[derive(Clone)]
enum Auth {
    Token(String),
    /// Re-read on every request: projected service-account tokens rotate.
    TokenFile(PathBuf),
    /// Client certificate (in the HTTP client) only.
    None,
}

/// The connection to one real API server. Never shown in full: `describe`
/// names the server and the kind of credential, never its value.
#[derive(Clone)]
pub struct Upstream {
    server: Url,
    client: reqwest::Client,
    auth: Auth,
    describe: String,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

/// `kubectl config view` for one kubeconfig/context, as JSON.
fn kubectl_view(kubeconfig: &Path, context: Option<&str>) -> Result<Value, Problem> {
    let mut cmd = Command::new("kubectl");
    cmd.args([
        "config",
        "view",
        "--raw",
        "--minify",
        "--flatten",
        "-o",
        "json",
    ])
    .arg("--kubeconfig")
    .arg(kubeconfig);
    if let Some(c) = context {
        cmd.arg("--context").arg(c);
    }
    cmd.env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        (
            "kubeconfig",
            format!("{:?}", kubeconfig.display().to_string()),
            format!("kubectl on PATH to read it (`kubectl config view` could not start: {e})"),
        )
    })?;
    let deadline = Instant::now() + KUBECTL_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err((
                    "kubeconfig",
                    format!("{:?}", kubeconfig.display().to_string()),
                    format!("a kubeconfig `kubectl config view` reads within {KUBECTL_TIMEOUT:?}"),
                ));
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| {
        (
            "kubeconfig",
            format!("{:?}", kubeconfig.display().to_string()),
            format!("a kubeconfig kubectl can read ({e})"),
        )
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let err = runner_core::text::clean_line(&err, 300);
        let key = if context.is_some() && err.contains("context") {
            "context"
        } else {
            "kubeconfig"
        };
        let value = match (key, context) {
            ("context", Some(c)) => format!("{c:?}"),
            _ => format!("{:?}", kubeconfig.display().to_string()),
        };
        let allowed = if key == "context" {
            format!(
                "a context defined in {} (kubectl: {err})",
                kubeconfig.display()
            )
        } else {
            format!("a kubeconfig with a usable (current) context (kubectl: {err})")
        };
        return Err((key, value, allowed));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        (
            "kubeconfig",
            format!("{:?}", kubeconfig.display().to_string()),
            format!("a kubeconfig kubectl prints as JSON ({e})"),
        )
    })
}

fn b64(v: &Value) -> Option<Result<Vec<u8>, String>> {
    v.as_str().map(|s| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| e.to_string())
    })
}

fn is_loopback_host(u: &Url) -> bool {
    match u.host_str() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

impl Upstream {
    /// Reads the cluster's connection from `kubeconfig` (and `context`) and
    /// builds its client. Every problem found is returned.
    pub fn load(kubeconfig: &Path, context: Option<&str>) -> Result<Upstream, Vec<Problem>> {
        let view = kubectl_view(kubeconfig, context).map_err(|p| vec![p])?;
        Self::from_view(&view, kubeconfig)
    }

    /// Builds the upstream from `kubectl config view -o json` output.
    pub(crate) fn from_view(view: &Value, kubeconfig: &Path) -> Result<Upstream, Vec<Problem>> {
        let shown = format!("{:?}", kubeconfig.display().to_string());
        let mut problems: Vec<Problem> = Vec::new();
        let mut bad = |allowed: String| problems.push(("kubeconfig", shown.clone(), allowed));
        let cluster = &view["clusters"][0]["cluster"];
        let user = &view["users"][0]["user"];
        let context_name = view["current-context"].as_str().unwrap_or("").to_string();

        let server = match cluster["server"].as_str().map(Url::parse) {
            Some(Ok(u))
                if u.scheme() == "https" || (u.scheme() == "http" && is_loopback_host(&u)) =>
            {
                Some(u)
            }
            Some(Ok(u)) => {
                bad(format!(
                    "an https:// API server (got {}:// for context {context_name:?}; plain http only on loopback)",
                    u.scheme()
                ));
                None
            }
            Some(Err(e)) => {
                bad(format!(
                    "a valid API server URL in context {context_name:?} ({e})"
                ));
                None
            }
            None => {
                bad(format!(
                    "a cluster with a `server` for context {context_name:?}"
                ));
                None
            }
        };
        if cluster["insecure-skip-tls-verify"].as_bool() == Some(true) {
            bad("TLS verification on: remove insecure-skip-tls-verify and set certificate-authority(-data)".into());
        }
        for unsupported in ["tls-server-name", "proxy-url"] {
            if cluster.get(unsupported).is_some() {
                bad(format!(
                    "a cluster without `{unsupported}` (not supported by the runner's proxy)"
                ));
            }
        }
        for unsupported in [
            "exec",
            "auth-provider",
            "username",
            "password",
            "as",
            "as-groups",
            "as-uid",
            "as-user-extra",
        ] {
            if user.get(unsupported).is_some() {
                bad(format!(
                    "a user with a bearer token (`token`/`tokenFile`) or a client certificate; `{unsupported}` is not supported (create a ServiceAccount token, see docs/agents.md)"
                ));
            }
        }

        let mut builder = reqwest::Client::builder()
            // The credential must never follow a redirect elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(UPSTREAM_TIMEOUT);
        if let Some(ca) = b64(&cluster["certificate-authority-data"]) {
            match ca.and_then(|pem| {
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())
            }) {
                // The cluster's CA only, as kubectl does.
                Ok(certs) if !certs.is_empty() => builder = builder.tls_certs_only(certs),
                Ok(_) => {
                    bad("certificate-authority data holding at least one PEM certificate".into())
                }
                Err(e) => bad(format!("readable certificate-authority data ({e})")),
            }
        }
        let cert = b64(&user["client-certificate-data"]);
        let key = b64(&user["client-key-data"]);
        let mut has_cert = false;
        match (cert, key) {
            (Some(Ok(mut c)), Some(Ok(k))) => {
                c.push(b'\n');
                c.extend_from_slice(&k);
                match reqwest::Identity::from_pem(&c) {
                    Ok(id) => {
                        builder = builder.identity(id);
                        has_cert = true;
                    }
                    Err(e) => bad(format!("a PEM client certificate and key ({e})")),
                }
            }
            (None, None) => {}
            (Some(Err(e)), _) | (_, Some(Err(e))) => {
                bad(format!("readable client certificate data ({e})"))
            }
            _ => bad("both client-certificate and client-key, or neither".into()),
        }
        let auth = if let Some(t) = user["token"].as_str().filter(|t| !t.is_empty()) {
            Auth::Token(t.trim().to_string())
        } else if let Some(f) = user["tokenFile"].as_str().filter(|f| !f.is_empty()) {
            let p = PathBuf::from(f);
            if let Err(e) = std::fs::read_to_string(&p) {
                bad(format!("a readable tokenFile ({f:?}: {e})"));
            }
            Auth::TokenFile(p)
        } else {
            Auth::None
        };
        if matches!(auth, Auth::None) && !has_cert {
            bad(format!(
                "a user with a credential (token, tokenFile or client certificate) for context {context_name:?}"
            ));
        }
        let client = match builder.build() {
            Ok(c) => Some(c),
            Err(e) => {
                bad(format!("a TLS configuration the runner can use ({e})"));
                None
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let server = server.expect("no problems implies a server");
        let kind = match (&auth, has_cert) {
            (Auth::Token(_), _) => "bearer token",
            (Auth::TokenFile(_), _) => "token file",
            (Auth::None, _) => "client certificate",
        };
        Ok(Upstream {
            describe: format!(
                "{} ({kind}, context {context_name:?})",
                server.as_str().trim_end_matches('/')
            ),
            server,
            client: client.expect("no problems implies a client"),
            auth,
        })
    }

    /// A file the credential is read from at run time (`tokenFile`).
    pub(crate) fn token_file(&self) -> Option<&Path> {
        match &self.auth {
            Auth::TokenFile(p) => Some(p),
            _ => None,
        }
    }

    /// `server (credential kind, context)`, safe for logs.
    pub(crate) fn describe(&self) -> &str {
        &self.describe
    }

    /// `path_and_query` appended to the server URL (which may carry a path
    /// prefix, e.g. behind a management proxy).
    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!(
            "{}{}",
            self.server.as_str().trim_end_matches('/'),
            path_and_query
        )
    }

    /// A request to the real API server with the real credential.
    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        let rb = self.client.request(method, self.url(path_and_query));
        Ok(match &self.auth {
            Auth::Token(t) => rb.bearer_auth(t),
            Auth::TokenFile(p) => {
                let t = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read tokenFile {}: {e}", p.display()))?;
                rb.bearer_auth(t.trim())
            }
            Auth::None => rb,
        })
    }
}
