//! `[[cluster]]`: the agents' access to the clusters, without ever handing
//! them a cluster credential.
//!
//! The runner holds one credential per cluster (a kubeconfig/context the
//! operator names). Agents get a generated kubeconfig that points at a
//! loopback proxy inside the runner and carries a random token valid only
//! while their incident runs; the proxy forwards reads (never Secrets, never
//! exec/attach/port-forward/proxy, never a write) to that incident's cluster
//! with the real credential. Each credential is checked with a
//! SelfSubjectRulesReview before it is used. See docs/agents.md.

pub(crate) mod proxy;
pub(crate) mod rules;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runner_core::config::TableReader;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use upstream::Upstream;

/// How long a successful credential check is trusted before the next
/// incident of that cluster checks again (RBAC can change under us).
pub(crate) const RECHECK_AFTER: Duration = Duration::from_secs(600);
/// Bound of one credential check (all its namespaces).
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
/// An unreachable cluster is retried at most this often.
pub(crate) const RETRY_UNREACHABLE: Duration = Duration::from_secs(30);

/// What to do with a credential that can write or read Secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnsafe {
    /// The runner does not start (`runner validate` fails).
    Refuse,
    /// The runner starts; incidents of this cluster are not investigated.
    Disable,
}

impl std::str::FromStr for OnUnsafe {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "refuse" => Ok(OnUnsafe::Refuse),
            "disable" => Ok(OnUnsafe::Disable),
            _ => Err(()),
        }
    }
}

impl std::fmt::Display for OnUnsafe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnUnsafe::Refuse => "refuse",
            OnUnsafe::Disable => "disable",
        })
    }
}

runner_core::config_enum!(OnUnsafe, "one of refuse, disable");

/// One `[[cluster]]` table.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The event's `cluster` this credential serves.
    pub name: String,
    pub kubeconfig: PathBuf,
    pub context: Option<String>,
    pub on_unsafe: OnUnsafe,
    /// Namespaces whose rules the startup check reviews.
    pub check_namespaces: Vec<String>,
    /// Resources refused by the proxy besides Secrets.
    pub deny_resources: Vec<String>,
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

impl ClusterConfig {
    /// Reads one `[[cluster]]` table; every problem is reported through `r`.
    pub(crate) fn read(r: &mut TableReader<'_>, base_dir: &Path) -> Option<ClusterConfig> {
        let before = r.errors().len();
        let name: Option<String> = r.req("name");
        let kubeconfig: Option<String> = r.req("kubeconfig");
        let context: Option<String> = r.opt("context");
        let on_unsafe: OnUnsafe = r.opt_or("on_unsafe_credential", OnUnsafe::Refuse);
        let check_namespaces: Vec<String> = r.opt_or(
            "check_namespaces",
            vec!["default".to_string(), "kube-system".to_string()],
        );
        let deny_resources: Vec<String> = r.opt_or("deny_resources", Vec::new());

        if let Some(n) = &name
            && (n.trim().is_empty() || n.chars().any(char::is_control) || n.len() > 253)
        {
            r.error(
                "name",
                format!("{n:?}"),
                "the cluster name events carry (non-empty, printable, at most 253 characters)",
            );
        }
        let path = kubeconfig.as_ref().map(|k| base_dir.join(k));
        if let (Some(k), Some(p)) = (&kubeconfig, &path)
            && let Err(e) = std::fs::File::open(p).and_then(|f| f.metadata())
        {
            r.error(
                "kubeconfig",
                format!("{k:?}"),
                format!("a readable kubeconfig file, relative to the config's directory ({e})"),
            );
        }
        if let Some(c) = &context
            && c.trim().is_empty()
        {
            r.error(
                "context",
                "\"\"",
                "a context name of the kubeconfig (or no `context` for its current context)",
            );
        }
        if check_namespaces.is_empty() || !check_namespaces.iter().all(|n| is_dns_label(n)) {
            r.error(
                "check_namespaces",
                format!("{check_namespaces:?}"),
                "a non-empty list of namespace names",
            );
        }
        for d in &deny_resources {
            if !is_dns_label(d) {
                r.error(
                    "deny_resources",
                    format!("{d:?}"),
                    "plural resource names such as configmaps",
                );
            }
        }
        if r.errors().len() > before {
            return None;
        }
        Some(ClusterConfig {
            name: name?,
            kubeconfig: path?,
            context,
            on_unsafe,
            check_namespaces,
            deny_resources,
        })
    }
}

/// One cluster as the proxy sees it.
pub(crate) struct ClusterEntry {
    pub name: String,
    pub upstream: Upstream,
    pub deny: Vec<String>,
    pub allowed: AtomicU64,
    pub refused: AtomicU64,
    pub upstream_errors: AtomicU64,
}

/// A live incident token.
pub(crate) struct GrantEntry {
    pub incident: String,
    pub cluster: Arc<ClusterEntry>,
    pub allowed: AtomicU64,
    pub refused: AtomicU64,
}

/// State shared by the guard and the proxy's handler.
pub(crate) struct Shared {
    grants: Mutex<HashMap<String, Arc<GrantEntry>>>,
    pub unauthenticated: AtomicU64,
}

impl Shared {
    pub(crate) fn lookup(&self, token: &str) -> Option<Arc<GrantEntry>> {
        self.grants.lock().expect("grants lock").get(token).cloned()
    }
}

#[derive(Debug, Clone)]
enum Verification {
    /// Not checked yet, or unreachable when last tried.
    Unverified {
        last_try: Option<Instant>,
        error: Option<String>,
    },
    Verified {
        at: Instant,
    },
    /// The credential can write or read Secrets: never used.
    Disabled(String),
}

struct Cluster {
    cfg: ClusterConfig,
    entry: Arc<ClusterEntry>,
    state: tokio::sync::Mutex<Verification>,
}

/// The result of checking one credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Read-only, no Secrets. `incomplete` carries the server's caveat.
    Safe { incomplete: Option<String> },
    /// Grants writes or Secrets: each reason.
    Unsafe(Vec<String>),
    /// The API server could not be asked.
    Unreachable(String),
}

/// What an incident gets.
pub enum Access {
    /// A proxy token for the incident's cluster (revoked on drop).
    Granted(Grant),
    /// No cluster access; the reason is shown to the agent and in the report.
    None(String),
    /// Triage of this cluster is disabled: the agent is not started.
    Disabled(String),
}

/// A per-incident proxy token. Dropping it revokes the token.
pub struct Grant {
    token: String,
    entry: Arc<GrantEntry>,
    shared: Arc<Shared>,
    pub(crate) proxy: SocketAddr,
}

impl Grant {
    pub(crate) fn cluster(&self) -> &str {
        &self.entry.cluster.name
    }

    /// A kubeconfig for the agent: the proxy, this token, this cluster only.
    pub fn kubeconfig(&self) -> String {
        let name = "incident";
        let server = format!("http://{}{}{}", self.proxy, proxy::TOKEN_PREFIX, self.token);
        let cfg = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": server}}],
            "users": [{"name": name, "user": {}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name,
        });
        // JSON is valid YAML; kubectl and client libraries read it.
        serde_json::to_string_pretty(&cfg).expect("static JSON")
    }

    /// Requests (allowed, refused) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.entry.allowed.load(Ordering::Relaxed),
            self.entry.refused.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.shared
            .grants
            .lock()
            .expect("grants lock")
            .remove(&self.token);
        let (allowed, refused) = self.counts();
        tracing::info!(incident = %self.entry.incident, cluster = %self.entry.cluster.name, allowed, refused, "cluster proxy: incident token revoked");
    }
}

/// The empty kubeconfig given to agents without cluster access, so kubectl
/// fails clearly instead of falling back to `~/.kube/config`.
pub(crate) const NO_ACCESS_KUBECONFIG: &str = "{\"apiVersion\": \"v1\", \"kind\": \"Config\", \"clusters\": [], \"users\": [], \"contexts\": []}\n";

/// Every configured cluster, their checks, the proxy and its tokens.
pub struct ClusterGuard {
    clusters: HashMap<String, Arc<Cluster>>,
    shared: Arc<Shared>,
    proxy: tokio::sync::OnceCell<SocketAddr>,
    stop: CancellationToken,
}

impl std::fmt::Debug for ClusterGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.clusters.keys().collect();
        names.sort();
        f.debug_struct("ClusterGuard")
            .field("clusters", &names)
            .finish()
    }
}

impl ClusterGuard {
    /// A guard over loaded clusters (names unique, checked by the caller).
    pub fn new(clusters: Vec<(ClusterConfig, Upstream)>) -> ClusterGuard {
        let clusters = clusters
            .into_iter()
            .map(|(cfg, upstream)| {
                let entry = Arc::new(ClusterEntry {
                    name: cfg.name.clone(),
                    upstream,
                    deny: cfg.deny_resources.clone(),
                    allowed: AtomicU64::new(0),
                    refused: AtomicU64::new(0),
                    upstream_errors: AtomicU64::new(0),
                });
                let c = Cluster {
                    cfg,
                    entry,
                    state: tokio::sync::Mutex::new(Verification::Unverified {
                        last_try: None,
                        error: None,
                    }),
                };
                (c.cfg.name.clone(), Arc::new(c))
            })
            .collect();
        ClusterGuard {
            clusters,
            shared: Arc::new(Shared {
                grants: Mutex::new(HashMap::new()),
                unauthenticated: AtomicU64::new(0),
            }),
            proxy: tokio::sync::OnceCell::new(),
            stop: CancellationToken::new(),
        }
    }

    pub(crate) fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.clusters.keys().cloned().collect();
        v.sort();
        v
    }

    /// Files that hold the real credentials (each kubeconfig and its
    /// `tokenFile`): the agent runs as the runner's user, so its sandbox
    /// must deny reading them.
    pub fn credential_paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::new();
        for c in self.clusters.values() {
            v.push(c.cfg.kubeconfig.clone());
            if let Some(f) = c.entry.upstream.token_file() {
                v.push(f.to_path_buf());
            }
        }
        v.sort();
        v.dedup();
        v
    }

    /// Live incident tokens (for tests and statistics).
    pub fn live_tokens(&self) -> usize {
        self.shared.grants.lock().expect("grants lock").len()
    }

    /// Checks one credential with a SelfSubjectRulesReview per namespace.
    async fn check(c: &Cluster) -> Check {
        let mut problems = Vec::new();
        let mut incomplete = None;
        for ns in &c.cfg.check_namespaces {
            let body = json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectRulesReview",
                "spec": {"namespace": ns},
            });
            let rb = match c.entry.upstream.request(
                reqwest::Method::POST,
                "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            ) {
                Ok(rb) => rb,
                Err(e) => return Check::Unreachable(e),
            };
            let resp = match tokio::time::timeout(CHECK_TIMEOUT, rb.json(&body).send()).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    return Check::Unreachable(runner_core::text::clean_line(&e.to_string(), 300));
                }
                Err(_) => return Check::Unreachable(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            let code = resp.status();
            let v: Value = match tokio::time::timeout(CHECK_TIMEOUT, resp.json()).await {
                Ok(Ok(v)) => v,
                _ if !code.is_success() => {
                    return Check::Unreachable(format!(
                        "SelfSubjectRulesReview answered HTTP {code}"
                    ));
                }
                _ => return Check::Unreachable("SelfSubjectRulesReview answer is not JSON".into()),
            };
            if !code.is_success() {
                let msg = v["message"].as_str().unwrap_or("");
                return Check::Unreachable(format!(
                    "SelfSubjectRulesReview answered HTTP {code}: {}",
                    runner_core::text::clean_line(msg, 200)
                ));
            }
            let verdict = rules::judge(&v["status"]);
            for p in verdict.problems {
                let p = format!("{p} (namespace {ns})");
                if !problems.contains(&p) {
                    problems.push(p);
                }
            }
            incomplete = incomplete.or(verdict.incomplete);
        }
        if problems.is_empty() {
            Check::Safe { incomplete }
        } else {
            Check::Unsafe(problems)
        }
    }

    /// Records a check's result and logs it. Returns the new state.
    fn apply(c: &Cluster, check: &Check, state: &mut Verification, at_startup: bool) {
        let name = &c.cfg.name;
        let server = c.entry.upstream.describe();
        match check {
            Check::Safe { incomplete } => {
                if let Some(why) = incomplete {
                    tracing::warn!(cluster = %name, server = %server, evaluation_error = %why, "cluster credential check incomplete: the API server could not list every rule; the proxy still refuses writes and Secrets");
                }
                tracing::info!(cluster = %name, server = %server, "cluster credential is read-only: agents get proxied access");
                *state = Verification::Verified { at: Instant::now() };
            }
            Check::Unsafe(problems) => {
                let reason = format!(
                    "the agent credential of cluster {name} {}",
                    problems.join("; ")
                );
                tracing::error!(cluster = %name, server = %server, problems = %problems.join("; "), policy = %c.cfg.on_unsafe, "CLUSTER CREDENTIAL REFUSED: it can write or read Secrets; triage for this cluster is disabled");
                *state = Verification::Disabled(reason);
            }
            Check::Unreachable(e) => {
                if at_startup {
                    tracing::warn!(cluster = %name, server = %server, error = %e, "CLUSTER UNREACHABLE at startup: its credential is unchecked; agents get no access to it until a check succeeds (retried at its next incident)");
                } else {
                    tracing::warn!(cluster = %name, server = %server, error = %e, "cluster credential check failed: cluster unreachable");
                }
                if !matches!(state, Verification::Verified { .. }) {
                    *state = Verification::Unverified {
                        last_try: Some(Instant::now()),
                        error: Some(e.clone()),
                    };
                }
            }
        }
    }

    /// Checks every cluster (at startup and in `runner validate`).
    pub async fn verify_all(&self) -> Vec<(String, OnUnsafe, Check)> {
        let checks = self.clusters.values().map(|c| async move {
            let check = Self::check(c).await;
            let mut st = c.state.lock().await;
            Self::apply(c, &check, &mut st, true);
            (c.cfg.name.clone(), c.cfg.on_unsafe, check)
        });
        let mut out = futures::future::join_all(checks).await;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    async fn proxy_addr(&self) -> Result<SocketAddr, String> {
        self.proxy
            .get_or_try_init(|| async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| format!("cannot bind the cluster proxy on 127.0.0.1: {e}"))?;
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                // Small request/response frames (kubectl's GETs): without
                // TCP_NODELAY a response can wait for the client's delayed ACK.
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let app = axum::Router::new()
                    .fallback(proxy::handle)
                    .with_state(self.shared.clone());
                let stop = self.stop.clone();
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move { stop.cancelled().await })
                        .await;
                });
                tracing::info!(address = %addr, "cluster proxy listening (loopback, per-incident tokens)");
                Ok(addr)
            })
            .await
            .copied()
    }

    /// The address of the proxy, once started.
    pub fn proxy_address(&self) -> Option<SocketAddr> {
        self.proxy.get().copied()
    }

    /// Decides what the incident `incident` of cluster `cluster` gets.
    pub async fn access(&self, cluster: &str, incident: &str) -> Access {
        let Some(c) = self.clusters.get(cluster) else {
            return Access::None(format!(
                "no agent credential is configured for cluster {:?}: by design the agent cannot reach it (add a [[cluster]] entry)",
                runner_core::text::clean_line(cluster, 253)
            ));
        };
        {
            let mut st = c.state.lock().await;
            let due = match &*st {
                Verification::Disabled(why) => return Access::Disabled(why.clone()),
                Verification::Verified { at } => at.elapsed() >= RECHECK_AFTER,
                Verification::Unverified { last_try: None, .. } => true,
                Verification::Unverified {
                    last_try: Some(t), ..
                } => t.elapsed() >= RETRY_UNREACHABLE,
            };
            if due {
                let check = Self::check(c).await;
                Self::apply(c, &check, &mut st, false);
            }
            match &*st {
                Verification::Disabled(why) => return Access::Disabled(why.clone()),
                Verification::Unverified { error, .. } => {
                    return Access::None(format!(
                        "cluster {cluster} is unreachable for the runner ({}); the agent has no access to it",
                        error.as_deref().unwrap_or("not checked yet")
                    ));
                }
                Verification::Verified { .. } => {}
            }
        }
        let proxy = match self.proxy_addr().await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cluster proxy unavailable");
                return Access::None(format!("the runner's cluster proxy is unavailable ({e})"));
            }
        };
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let entry = Arc::new(GrantEntry {
            incident: incident.to_string(),
            cluster: c.entry.clone(),
            allowed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        self.shared
            .grants
            .lock()
            .expect("grants lock")
            .insert(token.clone(), entry.clone());
        Access::Granted(Grant {
            token,
            entry,
            shared: self.shared.clone(),
            proxy,
        })
    }

    /// Logs the proxy's counters and stops it.
    pub fn close(&self) {
        if self.proxy.get().is_some() {
            for name in self.names() {
                let e = &self.clusters[&name].entry;
                tracing::info!(
                    cluster = %name,
                    allowed = e.allowed.load(Ordering::Relaxed),
                    refused = e.refused.load(Ordering::Relaxed),
                    upstream_errors = e.upstream_errors.load(Ordering::Relaxed),
                    "cluster proxy statistics"
                );
            }
            tracing::info!(
                unauthenticated = self.shared.unauthenticated.load(Ordering::Relaxed),
                "cluster proxy statistics (requests without a valid token)"
            );
        }
        self.stop.cancel();
    }

    /// Per-cluster counters: (allowed, refused, upstream errors).
    pub fn counters(&self, cluster: &str) -> Option<(u64, u64, u64)> {
        self.clusters.get(cluster).map(|c| {
            (
                c.entry.allowed.load(Ordering::Relaxed),
                c.entry.refused.load(Ordering::Relaxed),
                c.entry.upstream_errors.load(Ordering::Relaxed),
            )
        })
    }

    pub fn unauthenticated(&self) -> u64 {
        self.shared.unauthenticated.load(Ordering::Relaxed)
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
