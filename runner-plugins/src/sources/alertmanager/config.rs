//! `[[source]] kind = "alertmanager"`: reading and validating one webhook
//! receiver. Every problem is reported at once, before anything listens.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runner_core::Severity;
use runner_core::config::TableReader;

use crate::component::{BuildContext, ComponentConfig, KeyError, ReadContext};

/// Resource labels understood without an explicit kind, in the default
/// precedence order (most specific first; first label present wins).
/// `job_name` is the Kubernetes Job: `job` is Prometheus' scrape job.
pub(crate) const KNOWN_RESOURCE_LABELS: &[(&str, &str)] = &[
    ("pod", "Pod"),
    ("deployment", "Deployment"),
    ("statefulset", "StatefulSet"),
    ("daemonset", "DaemonSet"),
    ("replicaset", "ReplicaSet"),
    ("job_name", "Job"),
    ("cronjob", "CronJob"),
    ("horizontalpodautoscaler", "HorizontalPodAutoscaler"),
    ("persistentvolumeclaim", "PersistentVolumeClaim"),
    ("persistentvolume", "PersistentVolume"),
    ("service", "Service"),
    ("node", "Node"),
];

pub(crate) const DEFAULT_NAMESPACE_LABELS: &[&str] = &["namespace"];
pub(crate) const DEFAULT_CONTEXT_ANNOTATIONS: &[&str] =
    &["summary", "description", "message", "runbook_url"];
/// `severity` label values (lowercase) → the runner's scale.
pub(crate) const DEFAULT_SEVERITY_MAP: &[(&str, Severity)] = &[
    ("critical", Severity::Critical),
    ("page", Severity::Critical),
    ("error", Severity::Error),
    ("high", Severity::Error),
    ("warning", Severity::Warning),
    ("warn", Severity::Warning),
    ("medium", Severity::Warning),
    ("info", Severity::Info),
    ("low", Severity::Info),
    ("none", Severity::Info),
    ("debug", Severity::Debug),
];

/// How the sender must authenticate (as Alertmanager's `http_config` sends it).
#[derive(Clone)]
pub(crate) enum Auth {
    /// Only allowed on a loopback `listen` address.
    None,
    /// `Authorization: Bearer <token>` (`authorization` or `bearer_token`).
    Bearer(Arc<str>),
    /// `Authorization: Basic …` (`basic_auth`).
    Basic {
        username: String,
        password: Arc<str>,
    },
}

impl Auth {
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Auth::None => "none (loopback only)",
            Auth::Bearer(_) => "bearer",
            Auth::Basic { .. } => "basic",
        }
    }
}

/// How alert labels become an event's fields. See `docs/alertmanager.md`.
#[derive(Debug, Clone)]
pub(crate) struct Mapping {
    /// Label naming the cluster; when absent on an alert, the source's `cluster`.
    pub cluster_label: String,
    pub namespace_labels: Vec<String>,
    /// `(label, kind)` in precedence order.
    pub resource_labels: Vec<(String, String)>,
    pub severity_label: String,
    /// Lowercase label value → severity.
    pub severity_map: BTreeMap<String, Severity>,
    /// For an alert without the label or with an unmapped value.
    pub default_severity: Severity,
    pub context_annotations: Vec<String>,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            cluster_label: "cluster".into(),
            namespace_labels: DEFAULT_NAMESPACE_LABELS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            resource_labels: KNOWN_RESOURCE_LABELS
                .iter()
                .map(|(l, k)| (l.to_string(), k.to_string()))
                .collect(),
            severity_label: "severity".into(),
            severity_map: DEFAULT_SEVERITY_MAP
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            default_severity: Severity::Warning,
            context_annotations: DEFAULT_CONTEXT_ANNOTATIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// A validated Alertmanager source configuration.
#[derive(Clone)]
pub(crate) struct AlertmanagerSourceConfig {
    pub name: String,
    pub listen: SocketAddr,
    /// Fills the cluster of alerts without the cluster label.
    pub cluster: Option<String>,
    pub auth: Auth,
    /// Where the secret came from, for the startup log.
    pub auth_origin: String,
    pub max_body_bytes: usize,
    pub max_concurrent_requests: usize,
    /// Reading one request body may take this long.
    pub request_timeout: Duration,
    /// `Retry-After` sent with a 503.
    pub retry_after_seconds: u64,
    /// Firing alerts remembered to recognise repeats (oldest forgotten first).
    pub max_tracked_alerts: usize,
    pub mapping: Mapping,
}

impl std::fmt::Debug for AlertmanagerSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertmanagerSourceConfig")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("cluster", &self.cluster)
            .field("auth", &self.auth.describe())
            .field("mapping", &self.mapping)
            .finish_non_exhaustive()
    }
}

/// Reads a secret from a file (wins) or a named environment variable.
/// `Ok(None)`: neither configured.
fn secret(
    r: &mut TableReader<'_>,
    file_key: &'static str,
    env_key: &'static str,
) -> Result<Option<(Arc<str>, String)>, ()> {
    let file: Option<String> = r.opt(file_key);
    let env: Option<String> = r.opt(env_key);
    if let Some(path) = file {
        return match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => {
                Ok(Some((Arc::from(t.trim()), format!("file {path}"))))
            }
            Ok(_) => {
                r.error(
                    file_key,
                    format!("{path:?}"),
                    "a file holding a non-empty secret",
                );
                Err(())
            }
            Err(e) => {
                r.error(
                    file_key,
                    format!("{path:?}"),
                    format!("a readable file ({e})"),
                );
                Err(())
            }
        };
    }
    if let Some(name) = env {
        return match r.env_var(&name) {
            Some(t) if !t.trim().is_empty() => {
                Ok(Some((Arc::from(t.trim()), format!("env {name}"))))
            }
            _ => {
                r.error(
                    env_key,
                    format!("{name:?} (not set)"),
                    "the name of a set, non-empty environment variable",
                );
                Err(())
            }
        };
    }
    Ok(None)
}

fn label_list(
    r: &mut TableReader<'_>,
    key: &'static str,
    default: &[&str],
    ok: &mut bool,
) -> Vec<String> {
    match r.opt::<Vec<String>>(key) {
        None => default.iter().map(|s| s.to_string()).collect(),
        Some(v) if v.is_empty() || v.iter().any(|s| s.trim().is_empty()) => {
            r.error(
                key,
                format!("{v:?}"),
                "a non-empty list of non-empty label names",
            );
            *ok = false;
            Vec::new()
        }
        Some(v) => v,
    }
}

impl ComponentConfig for AlertmanagerSourceConfig {
    const KIND: &'static str = "alertmanager";
    type Built = Box<dyn runner_core::Source>;

    fn read(r: &mut TableReader<'_>, cx: &ReadContext<'_>) -> Option<Self> {
        let mut ok = true;
        let name: String = r.opt_or("name", format!("alertmanager-{}", cx.index));
        let listen_text: Option<String> = r.req("listen");
        let listen = match listen_text.as_deref().map(str::parse::<SocketAddr>) {
            Some(Ok(a)) => Some(a),
            Some(Err(_)) => {
                r.error(
                    "listen",
                    format!("{:?}", listen_text.unwrap_or_default()),
                    "an IP address and port such as 127.0.0.1:9097 or 0.0.0.0:9097",
                );
                ok = false;
                None
            }
            None => {
                ok = false;
                None
            }
        };
        let cluster: Option<String> = r.opt::<String>("cluster").filter(|c| !c.is_empty());

        let bearer = secret(r, "token_file", "token_env");
        let username: Option<String> = r.opt("username");
        let password = secret(r, "password_file", "password_env");
        let (auth, auth_origin) = match (bearer, username, password) {
            (Err(()), _, _) | (_, _, Err(())) => {
                ok = false;
                (Auth::None, String::new())
            }
            (Ok(Some(_)), Some(_), _) | (Ok(Some(_)), _, Ok(Some(_))) => {
                r.error(
                    "token_file",
                    "(set with username/password)",
                    "either a bearer token (token_file or token_env) or basic auth (username with password_file or password_env), not both",
                );
                ok = false;
                (Auth::None, String::new())
            }
            (Ok(Some((t, origin))), None, Ok(None)) => (Auth::Bearer(t), origin),
            (Ok(None), Some(u), Ok(Some((p, origin)))) if !u.is_empty() && !u.contains(':') => (
                Auth::Basic {
                    username: u,
                    password: p,
                },
                origin,
            ),
            (Ok(None), Some(u), Ok(Some(_))) => {
                r.error(
                    "username",
                    format!("{u:?}"),
                    "a non-empty user name without ':'",
                );
                ok = false;
                (Auth::None, String::new())
            }
            (Ok(None), Some(_), Ok(None)) => {
                r.error(
                    "password_file",
                    "(missing)",
                    "password_file or password_env with username (basic auth)",
                );
                ok = false;
                (Auth::None, String::new())
            }
            (Ok(None), None, Ok(Some(_))) => {
                r.error(
                    "username",
                    "(missing)",
                    "a user name with password_file/password_env",
                );
                ok = false;
                (Auth::None, String::new())
            }
            (Ok(None), None, Ok(None)) => (Auth::None, "none".to_string()),
        };
        if ok
            && matches!(auth, Auth::None)
            && let Some(a) = listen
            && !a.ip().is_loopback()
        {
            r.error(
                "listen",
                format!("{a:?} without authentication"),
                "a loopback address (127.0.0.1, ::1), or set token_file/token_env (bearer) or username with password_file/password_env (basic)",
            );
            ok = false;
        }

        let max_body_bytes: usize = r.opt_or("max_body_bytes", 4 * 1024 * 1024);
        if max_body_bytes < 1024 {
            r.error(
                "max_body_bytes",
                max_body_bytes.to_string(),
                "an integer >= 1024",
            );
            ok = false;
        }
        let max_concurrent_requests: usize = r.opt_or("max_concurrent_requests", 16);
        if max_concurrent_requests < 1 {
            r.error("max_concurrent_requests", "0", "an integer >= 1");
            ok = false;
        }
        let timeout: u64 = r.opt_or("request_timeout_seconds", 10);
        if timeout < 1 {
            r.error("request_timeout_seconds", "0", "an integer >= 1 (seconds)");
            ok = false;
        }
        let retry_after_seconds: u64 = r.opt_or("retry_after_seconds", 5);
        let max_tracked_alerts: usize = r.opt_or("max_tracked_alerts", 100_000);
        if max_tracked_alerts < 1 {
            r.error("max_tracked_alerts", "0", "an integer >= 1");
            ok = false;
        }

        let mut m = Mapping::default();
        if let Some(l) = r.opt::<String>("cluster_label") {
            m.cluster_label = l;
        }
        m.namespace_labels = label_list(r, "namespace_labels", DEFAULT_NAMESPACE_LABELS, &mut ok);
        let default_resources: Vec<&str> = KNOWN_RESOURCE_LABELS.iter().map(|(l, _)| *l).collect();
        let resources = label_list(r, "resource_labels", &default_resources, &mut ok);
        let mut unknown = Vec::new();
        m.resource_labels = Vec::with_capacity(resources.len());
        for entry in &resources {
            // `label` (a known one) or `label:Kind` (any label).
            let pair = match entry.split_once(':') {
                Some((l, k)) if !l.trim().is_empty() && !k.trim().is_empty() => {
                    Some((l.trim().to_string(), k.trim().to_string()))
                }
                Some(_) => None,
                None => KNOWN_RESOURCE_LABELS
                    .iter()
                    .find(|(l, _)| *l == entry.trim())
                    .map(|(l, k)| (l.to_string(), k.to_string())),
            };
            match pair {
                Some(p) => m.resource_labels.push(p),
                None => unknown.push(entry.clone()),
            }
        }
        if !unknown.is_empty() {
            let known: Vec<&str> = KNOWN_RESOURCE_LABELS.iter().map(|(l, _)| *l).collect();
            r.error(
                "resource_labels",
                format!("{unknown:?}"),
                format!(
                    "known labels ({}) or label:Kind for any other label",
                    known.join(", ")
                ),
            );
            ok = false;
        }
        if let Some(l) = r.opt::<String>("severity_label") {
            m.severity_label = l;
        }
        if let Some(t) = r.table("severity_map") {
            for (value, sev) in t {
                match sev.as_str().map(str::parse::<Severity>) {
                    Some(Ok(s)) => {
                        m.severity_map.insert(value.to_ascii_lowercase(), s);
                    }
                    _ => {
                        r.error(
                            &format!("severity_map.{value}"),
                            sev.to_string(),
                            format!("one of {}", Severity::ALLOWED),
                        );
                        ok = false;
                    }
                }
            }
        }
        if let Some(s) = r.opt::<String>("default_severity") {
            match s.parse::<Severity>() {
                Ok(s) => m.default_severity = s,
                Err(_) => {
                    r.error(
                        "default_severity",
                        format!("{s:?}"),
                        format!("one of {}", Severity::ALLOWED),
                    );
                    ok = false;
                }
            }
        }
        m.context_annotations = label_list(
            r,
            "context_annotations",
            DEFAULT_CONTEXT_ANNOTATIONS,
            &mut ok,
        );
        if !ok {
            return None;
        }
        Some(AlertmanagerSourceConfig {
            name,
            listen: listen.expect("checked above"),
            cluster,
            auth,
            auth_origin,
            max_body_bytes,
            max_concurrent_requests,
            request_timeout: Duration::from_secs(timeout),
            retry_after_seconds,
            max_tracked_alerts,
            mapping: m,
        })
    }

    fn build(&self, _cx: &BuildContext) -> Result<Self::Built, KeyError> {
        Ok(Box::new(super::AlertmanagerSource::new(self.clone())))
    }

    /// `token_env` and `password_env` hold webhook secrets: agents must never get them.
    fn secret_envs(table: &toml::Table) -> Vec<String> {
        ["token_env", "password_env"]
            .into_iter()
            .filter_map(|k| match table.get(k) {
                Some(toml::Value::String(name)) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_core::config::{ConfigErrors, Overrides};

    fn read(text: &str) -> (Option<AlertmanagerSourceConfig>, ConfigErrors) {
        let mut errs = ConfigErrors::default();
        let mut eff = Vec::new();
        let ov = Overrides::new();
        let mut r = TableReader::new("source[1]", text.parse().unwrap(), &ov, &mut errs, &mut eff);
        let dir = std::path::PathBuf::new();
        let cx = ReadContext {
            base_dir: &dir,
            index: 1,
            count: 2,
            overrides: &ov,
        };
        let c = AlertmanagerSourceConfig::read(&mut r, &cx);
        r.finish();
        (c, errs)
    }

    #[test]
    fn loopback_defaults() {
        let (c, errs) = read("listen = '127.0.0.1:9097'\ncluster = 'prod'");
        assert!(errs.is_empty(), "{errs}");
        let c = c.unwrap();
        assert_eq!(c.name, "alertmanager-1");
        assert!(matches!(c.auth, Auth::None));
        assert_eq!(c.mapping.resource_labels[0], ("pod".into(), "Pod".into()));
        assert_eq!(c.mapping.severity_map["critical"], Severity::Critical);
        assert_eq!(c.max_body_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn every_error_at_once() {
        let (c, errs) = read(
            "listen = 'localhost:99999'\ntoken_file = '/nonexistent/am-token'\n\
             namespace_labels = []\nresource_labels = ['pod', 'weird']\ncontext_annotations = []\n\
             severity_map = { p1 = 'HIGH' }\ndefault_severity = 'loud'\nmax_body_bytes = 10",
        );
        assert!(c.is_none());
        let text = errs.to_string();
        for needle in [
            "source[1].listen",
            "source[1].token_file",
            "/nonexistent/am-token",
            "source[1].namespace_labels",
            "source[1].resource_labels",
            "\"weird\"",
            "source[1].context_annotations",
            "source[1].severity_map.p1",
            "source[1].default_severity",
            "source[1].max_body_bytes",
        ] {
            assert!(text.contains(needle), "{needle} missing in {text}");
        }
    }

    #[test]
    fn auth_required_off_loopback_and_read_from_files() {
        let (c, errs) = read("listen = '0.0.0.0:9097'");
        assert!(c.is_none());
        assert!(
            errs.to_string().contains("without authentication"),
            "{errs}"
        );
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("tok");
        std::fs::write(&tok, "s3cret\n").unwrap();
        let (c, errs) = read(&format!(
            "listen = '0.0.0.0:9097'\ntoken_file = {:?}",
            tok.display().to_string()
        ));
        assert!(errs.is_empty(), "{errs}");
        let c = c.unwrap();
        assert!(matches!(&c.auth, Auth::Bearer(t) if &**t == "s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        let (c, errs) = read(&format!(
            "listen = '[::]:9097'\nusername = 'am'\npassword_file = {:?}",
            tok.display().to_string()
        ));
        assert!(errs.is_empty(), "{errs}");
        assert!(matches!(c.unwrap().auth, Auth::Basic { .. }));
        // Both kinds at once, or a user without a password, are mistakes.
        let (_, errs) = read(&format!(
            "listen = '127.0.0.1:1'\nusername = 'am'\ntoken_file = {0:?}\npassword_file = {0:?}",
            tok.display().to_string()
        ));
        assert!(errs.to_string().contains("not both"), "{errs}");
        let (_, errs) = read("listen = '127.0.0.1:1'\nusername = 'am'");
        assert!(
            errs.to_string().contains("source[1].password_file"),
            "{errs}"
        );
    }

    #[test]
    fn custom_resource_labels_keep_their_order() {
        let (c, errs) = read(
            "listen = '127.0.0.1:1'\nresource_labels = ['node', 'rollout:Rollout', 'pod']\n\
             namespace_labels = ['exported_namespace', 'namespace']",
        );
        assert!(errs.is_empty(), "{errs}");
        let m = c.unwrap().mapping;
        assert_eq!(
            m.resource_labels,
            vec![
                ("node".to_string(), "Node".to_string()),
                ("rollout".into(), "Rollout".into()),
                ("pod".into(), "Pod".into())
            ]
        );
        assert_eq!(m.namespace_labels, ["exported_namespace", "namespace"]);
    }
}
