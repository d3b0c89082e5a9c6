//! `[[source]] kind = "mcp"`: reading and validating one MCP source.

use std::sync::Arc;
use std::time::Duration;

use runner_core::config::TableReader;
use serde_json::{Map, Value};

use crate::component::{BuildContext, ComponentConfig, KeyError, ReadContext};
use crate::settings as env;

pub(crate) const MODES: &str = "faults, events, resource-faults";

/// A validated MCP source configuration.
#[derive(Clone)]
pub struct McpSourceConfig {
    pub(crate) name: String,
    pub(crate) endpoint: String,
    pub(crate) mode: String,
    /// Fills an empty `cluster` in payloads (server running in-cluster).
    pub(crate) cluster: Option<String>,
    /// Extra `events_subscribe` arguments besides `mode` (context, filters).
    pub(crate) arguments: Map<String, Value>,
    /// Bearer token (never logged; see `token_origin`).
    pub(crate) token: Option<Arc<str>>,
    /// Where the token came from, for the startup log.
    pub(crate) token_origin: String,
    pub(crate) reconnect_initial: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) subscription_check: Duration,
    pub(crate) subscribe_timeout: Duration,
    pub(crate) request_timeout: Duration,
    /// Consecutive failed attempts before failures are logged at error level.
    pub(crate) failure_alert_after: u32,
}

impl std::fmt::Debug for McpSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpSourceConfig")
            .field("name", &self.name)
            .field("endpoint", &runner_core::config::mask_url(&self.endpoint))
            .field("mode", &self.mode)
            .field("cluster", &self.cluster)
            .field("token", &self.token.as_ref().map(|_| "****"))
            .finish_non_exhaustive()
    }
}

fn secs(r: &mut TableReader<'_>, setting: &env::Setting) -> Duration {
    let max = runner_core::router::MAX_SECONDS_LIMIT;
    Duration::from_secs(r.setting_in(setting, 1..=max, "seconds"))
}

/// Validates an http(s) URL with a host; returns a description of what is wrong.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<(), &'static str> {
    let url = reqwest::Url::parse(endpoint).map_err(|_| "not a URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("scheme must be http or https");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("missing host");
    }
    Ok(())
}

impl McpSourceConfig {
    /// The settings (flags and environment variables) of this kind, by
    /// their `pipeline.toml` key: the demo drops them, its sources being its
    /// own simulated servers.
    pub(crate) fn settings() -> impl Iterator<Item = &'static env::Setting> {
        env::SETTINGS
            .iter()
            .filter(|s| s.key.starts_with("source."))
    }

    /// The logger whose notifications carry this mode's payloads.
    pub(crate) fn logger(&self) -> String {
        format!("kubernetes/{}", self.mode)
    }
}

/// Reports the source settings set by flag or variable when there are
/// several sources.
fn reject_shared_overrides(r: &mut TableReader<'_>, cx: &ReadContext<'_>) {
    // A source variable or flag names one server: with several sources
    // it would be a guess which one it means. Each one set is reported
    // once, with the first source.
    if cx.count > 1 && cx.index == 0 {
        // Secrets are variables that a key names (`token_env`), read
        // by each source itself.
        for s in McpSourceConfig::settings().filter(|s| !s.secret) {
            if cx.overrides.get(s.env).is_some() {
                r.errors().push(
                    s.env,
                    "(set)",
                    format!(
                        "only with exactly one [[source]]; with several, set each `{}` in pipeline.toml",
                        s.table_key()
                    ),
                );
            }
        }
    }
}

/// `endpoint`: required, an http(s) URL with a host.
fn read_endpoint(r: &mut TableReader<'_>) -> Option<String> {
    let Some(endpoint) = r.setting_url(&env::K8S_CLUSTER_MCP_ENDPOINT) else {
        r.error(
            "endpoint",
            "(missing)",
            "an http(s) URL such as http://127.0.0.1:8080/mcp (or K8S_CLUSTER_MCP_ENDPOINT)",
        );
        return None;
    };
    if let Err(why) = check_endpoint(&endpoint) {
        r.error(
            "endpoint",
            format!("{:?}", runner_core::config::mask_url(&endpoint)),
            format!("an http(s) URL such as http://127.0.0.1:8080/mcp ({why})"),
        );
        return None;
    }
    Some(endpoint)
}

/// The `events_subscribe` arguments besides `mode`; `None` after an error.
fn read_arguments(r: &mut TableReader<'_>, mode: &str) -> Option<Map<String, Value>> {
    // events_subscribe arguments: the events-mode filters are sent as
    // given; the server ignores them in faults mode
    // (docs/mcp-events-protocol.md, "Tools").
    let mut ok = true;
    let mut arguments = Map::new();
    let context: Option<String> = r.opt("context");
    if let Some(c) = context.filter(|c| !c.is_empty()) {
        arguments.insert("context".into(), Value::String(c));
    }
    let namespaces: Option<Vec<String>> = r.opt("namespaces");
    if let Some(ns) = namespaces.filter(|n| !n.is_empty()) {
        arguments.insert(
            "namespaces".into(),
            Value::Array(ns.into_iter().map(Value::String).collect()),
        );
    }
    for (key, arg) in [
        ("label_selector", "labelSelector"),
        ("involved_kind", "involvedKind"),
        ("involved_name", "involvedName"),
        ("involved_namespace", "involvedNamespace"),
        ("reason", "reason"),
    ] {
        if let Some(v) = r.opt::<String>(key).filter(|v| !v.is_empty()) {
            arguments.insert(arg.into(), Value::String(v));
        }
    }
    if let Some(t) = r.opt::<String>("event_type").filter(|v| !v.is_empty()) {
        if t != "Normal" && t != "Warning" {
            r.error("event_type", format!("{t:?}"), "Normal or Warning");
            ok = false;
        } else if t == "Normal" && mode == "faults" {
            r.error(
                "event_type",
                "\"Normal\"",
                "Warning (faults mode cannot filter for Normal events)",
            );
            ok = false;
        }
        arguments.insert("type".into(), Value::String(t));
    }
    ok.then_some(arguments)
}

/// The bearer token and where it came from (for the log); reads the token
/// file. `None` after an error.
fn read_token(r: &mut TableReader<'_>) -> Option<(Option<Arc<str>>, String)> {
    let mut ok = true;
    // Token: a file wins over an environment variable.
    let explicit_env: Option<String> = r.opt("token_env");
    let token_env = explicit_env.clone().unwrap_or_else(|| {
        r.record_default("token_env", format!("{:?}", env::MCP_TOKEN.env));
        env::MCP_TOKEN.env.to_string()
    });
    let token_file: Option<String> = r.setting_opt(&env::MCP_TOKEN_FILE);
    let (token, token_origin) = match token_file {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => (Some(Arc::from(t.trim())), format!("file {path}")),
            Ok(_) => {
                r.error(
                    "token_file",
                    format!("{path:?}"),
                    "a file holding a non-empty token",
                );
                ok = false;
                (None, String::new())
            }
            Err(e) => {
                r.error(
                    "token_file",
                    format!("{path:?}"),
                    format!("a readable file ({e})"),
                );
                ok = false;
                (None, String::new())
            }
        },
        None => match r.env_var(&token_env).map(str::to_string).ok_or(()) {
            Ok(t) if !t.trim().is_empty() => {
                (Some(Arc::from(t.trim())), format!("env {token_env}"))
            }
            // Naming a variable that is not set is a mistake, not "no token".
            _ if explicit_env.is_some() => {
                r.error(
                    "token_env",
                    format!("{token_env:?} (not set)"),
                    "the name of a set, non-empty environment variable holding the token",
                );
                ok = false;
                (None, String::new())
            }
            _ => (None, "none".to_string()),
        },
    };

    ok.then_some((token, token_origin))
}

/// The reconnect, liveness and timeout intervals, in the order of the
/// struct's fields; `None` after an error.
fn read_timing(r: &mut TableReader<'_>) -> Option<[Duration; 6]> {
    let reconnect_initial = secs(r, &env::RECONNECT_INITIAL_SECONDS);
    let reconnect_max = secs(r, &env::RECONNECT_MAX_SECONDS);
    let ok = reconnect_max >= reconnect_initial;
    if !ok {
        r.error(
            "reconnect_max_seconds",
            reconnect_max.as_secs().to_string(),
            format!(
                ">= reconnect_initial_seconds ({})",
                reconnect_initial.as_secs()
            ),
        );
    }
    let ping_interval = secs(r, &env::PING_INTERVAL_SECONDS);
    let subscription_check = secs(r, &env::SUBSCRIPTION_CHECK_SECONDS);
    let subscribe_timeout = secs(r, &env::SUBSCRIBE_TIMEOUT_SECONDS);
    let request_timeout = secs(r, &env::REQUEST_TIMEOUT_SECONDS);
    ok.then_some([
        reconnect_initial,
        reconnect_max,
        ping_interval,
        subscription_check,
        subscribe_timeout,
        request_timeout,
    ])
}

impl ComponentConfig for McpSourceConfig {
    const KIND: &'static str = "mcp";
    type Built = Box<dyn runner_core::Source>;

    fn read(r: &mut TableReader<'_>, cx: &ReadContext<'_>) -> Option<Self> {
        reject_shared_overrides(r, cx);
        let name: String = r.opt_or("name", format!("mcp-{}", cx.index));
        let endpoint = read_endpoint(r);
        let mut ok = endpoint.is_some();
        let mode: String = r.setting(&env::MCP_SUBSCRIBE_MODE);
        if !MODES.split(", ").any(|m| m == mode) {
            r.error("mode", format!("{mode:?}"), format!("one of {MODES}"));
            ok = false;
        }
        let cluster: Option<String> = r.opt::<String>("cluster").filter(|c| !c.is_empty());
        let arguments = read_arguments(r, &mode);
        let token = read_token(r);
        let timing = read_timing(r);
        let failure_alert_after: u32 = r.opt_or("failure_alert_after", 5);
        let (Some(endpoint), Some(arguments), Some((token, token_origin)), Some(timing), true) =
            (endpoint, arguments, token, timing, ok)
        else {
            return None;
        };
        let [
            reconnect_initial,
            reconnect_max,
            ping_interval,
            subscription_check,
            subscribe_timeout,
            request_timeout,
        ] = timing;
        Some(McpSourceConfig {
            name,
            endpoint,
            mode,
            cluster,
            arguments,
            token,
            token_origin,
            reconnect_initial,
            reconnect_max,
            ping_interval,
            subscription_check,
            subscribe_timeout,
            request_timeout,
            failure_alert_after: failure_alert_after.max(1),
        })
    }

    fn build(&self, _cx: &BuildContext) -> Result<Self::Built, KeyError> {
        Ok(Box::new(super::McpSource::new(self.clone())))
    }

    /// `token_env` holds the bearer token: agents must never get it.
    fn secret_envs(table: &toml::Table) -> Vec<String> {
        match table.get("token_env") {
            Some(toml::Value::String(name)) => vec![name.clone()],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_core::config::{ConfigErrors, Overrides};

    fn read(text: &str, ov: &Overrides) -> (Option<McpSourceConfig>, ConfigErrors) {
        let mut errs = ConfigErrors::default();
        let mut eff = Vec::new();
        let mut r = TableReader::new("source[0]", text.parse().unwrap(), ov, &mut errs, &mut eff);
        let dir = std::path::PathBuf::new();
        let c = McpSourceConfig::read(&mut r, &ReadContext::single(&dir, ov));
        r.finish();
        (c, errs)
    }

    #[test]
    fn defaults_and_arguments() {
        let (c, errs) = read(
            "endpoint = 'http://127.0.0.1:1/mcp'\ncontext = 'prod'\nnamespaces = ['a']\ncluster = 'c1'",
            &Overrides::new(),
        );
        assert!(errs.is_empty(), "{errs}");
        let c = c.unwrap();
        assert_eq!(c.mode, "faults");
        assert_eq!(c.logger(), "kubernetes/faults");
        assert_eq!(c.cluster.as_deref(), Some("c1"));
        assert_eq!(c.arguments["context"], "prod");
        assert_eq!(c.arguments["namespaces"][0], "a");
        assert_eq!(c.reconnect_initial, Duration::from_secs(1));
        assert_eq!(c.reconnect_max, Duration::from_secs(60));
        assert_eq!(c.name, "mcp-0");
    }

    #[test]
    fn every_error_at_once() {
        let (c, errs) = read(
            "endpoint = 'ftp://x'\nmode = 'all'\nping_interval_seconds = 0\nreconnect_initial_seconds = 9\nreconnect_max_seconds = 3\ntypo = 1",
            &Overrides::new(),
        );
        assert!(c.is_none());
        let text = errs.to_string();
        for needle in [
            "source[0].endpoint",
            "source[0].mode",
            "source[0].ping_interval_seconds",
            "source[0].reconnect_max_seconds",
            "source[0].typo",
        ] {
            assert!(text.contains(needle), "{needle} missing in {text}");
        }
    }

    #[test]
    fn env_endpoint_and_missing_endpoint() {
        let (_, errs) = read("", &Overrides::new());
        assert!(errs.to_string().contains("endpoint: missing"), "{errs}");
        let mut ov = Overrides::new();
        ov.set(
            env::K8S_CLUSTER_MCP_ENDPOINT.env,
            "https://mcp.example:8443/mcp",
            runner_core::config::Origin::Env,
        );
        let (c, errs) = read("", &ov);
        assert!(errs.is_empty(), "{errs}");
        assert_eq!(c.unwrap().endpoint, "https://mcp.example:8443/mcp");
    }

    #[test]
    fn named_token_env_must_be_set() {
        let (c, errs) = read(
            "endpoint = 'http://h/mcp'\ntoken_env = 'E2E_SURELY_UNSET_TOKEN_VAR'",
            &Overrides::new(),
        );
        assert!(c.is_none());
        assert!(errs.to_string().contains("source[0].token_env"), "{errs}");
    }

    #[test]
    fn token_file_is_read_and_masked_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "s3cret\n").unwrap();
        let (c, errs) = read(
            &format!(
                "endpoint = 'http://h/mcp'\ntoken_file = {:?}",
                p.display().to_string()
            ),
            &Overrides::new(),
        );
        assert!(errs.is_empty(), "{errs}");
        let c = c.unwrap();
        assert_eq!(c.token.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
