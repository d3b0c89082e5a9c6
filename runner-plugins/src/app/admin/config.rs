//! `[server]`: the admin HTTP server's settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runner_core::config::TableReader;

use crate::settings as env;

/// Default listen address: loopback, so `runner status` and a local
/// Prometheus work out of the box and nothing is exposed.
pub(crate) const DEFAULT_LISTEN: &str = match env::ADMIN_LISTEN.default {
    runner_core::config::Fallback::Value(v) => v,
    runner_core::config::Fallback::Absent(_) => panic!("ADMIN_LISTEN has a default"),
};
/// Shortest accepted token: a guessable token is no protection.
pub(crate) const MIN_TOKEN_LEN: usize = 16;

#[derive(Clone)]
pub(crate) struct ServerConfig {
    /// `None`: the admin server is off.
    pub listen: Option<SocketAddr>,
    /// Required on every endpoint but the probes when set.
    pub token: Option<Arc<str>>,
    /// Where the token came from, for the startup log.
    pub token_origin: String,
    /// The variable the token is read from (a secret agents never get).
    pub token_env: String,
    /// Base URL users reach the server under (no trailing slash).
    pub public_url: Option<String>,
    pub ready_source_down: Duration,
    pub metrics_cluster_labels: usize,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "****"))
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: None,
            token: None,
            token_origin: "none".into(),
            token_env: env::ADMIN_TOKEN.env.into(),
            public_url: None,
            ready_source_down: Duration::from_secs(30),
            metrics_cluster_labels: runner_core::status::DEFAULT_CLUSTER_LABELS,
        }
    }
}

impl ServerConfig {
    /// Environment variables holding this server's secret.
    pub(crate) fn secret_envs(&self) -> Vec<String> {
        let mut v = vec![env::ADMIN_TOKEN.env.to_string()];
        if self.token_env != env::ADMIN_TOKEN.env {
            v.push(self.token_env.clone());
        }
        v
    }

    /// Reads `[server]`; every problem goes to the reader's errors.
    pub(crate) fn read(r: &mut TableReader<'_>) -> ServerConfig {
        let listen_text: String = r.setting(&env::ADMIN_LISTEN);
        let listen = match listen_text.trim() {
            "off" => None,
            t => match t.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    r.error(
                        "listen",
                        format!("{listen_text:?}"),
                        "IP:port (e.g. 127.0.0.1:9469, 0.0.0.0:9469, [::1]:9469) or off",
                    );
                    None
                }
            },
        };

        // The token never comes from a flag: a file or an environment variable.
        let explicit_env: Option<String> = r.opt("token_env");
        let token_env = explicit_env.clone().unwrap_or_else(|| {
            r.record_default("token_env", format!("{:?}", env::ADMIN_TOKEN.env));
            env::ADMIN_TOKEN.env.to_string()
        });
        let token_file: Option<String> = r.setting_opt(&env::ADMIN_TOKEN_FILE);
        let (token, token_origin, token_key) = match &token_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(t) => (
                    Some(t.trim().to_string()),
                    format!("file {path}"),
                    "token_file",
                ),
                Err(e) => {
                    r.error(
                        "token_file",
                        format!("{path:?}"),
                        format!("a readable file ({e})"),
                    );
                    (None, String::new(), "token_file")
                }
            },
            None => match r.env_var(&token_env).map(str::to_string) {
                Some(t) if !t.trim().is_empty() => (
                    Some(t.trim().to_string()),
                    format!("env {token_env}"),
                    "token_env",
                ),
                _ if explicit_env.is_some() => {
                    r.error(
                        "token_env",
                        format!("{token_env:?} (not set)"),
                        "the name of a set, non-empty environment variable holding the token",
                    );
                    (None, String::new(), "token_env")
                }
                _ => (None, "none".to_string(), "token_env"),
            },
        };
        if let Some(t) = &token
            && t.chars().count() < MIN_TOKEN_LEN
        {
            r.error(
                token_key,
                format!("a token of {} characters", t.chars().count()),
                format!("a token of at least {MIN_TOKEN_LEN} characters"),
            );
        }
        if let Some(a) = listen
            && !a.ip().is_loopback()
            && token.is_none()
        {
            r.error(
                "listen",
                format!("{a:?} (not loopback, no token)"),
                format!(
                    "a loopback address, or a token ({} / {} / server.token_file) to listen on {a}",
                    env::ADMIN_TOKEN.env,
                    env::ADMIN_TOKEN_FILE.env
                ),
            );
        }

        let public_url: Option<String> = r.setting_opt(&env::ADMIN_PUBLIC_URL);
        let public_url = public_url.map(|u| u.trim().trim_end_matches('/').to_string());
        if let Some(u) = &public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            r.error(
                "public_url",
                format!("{u:?}"),
                "an http:// or https:// URL (e.g. https://runner.example.com)",
            );
        }
        let down: u64 = r.setting(&env::READY_SOURCE_DOWN_SECONDS);
        let labels: usize = r.setting(&env::METRICS_CLUSTER_LABELS);
        if labels < 1 {
            r.error(
                "metrics_cluster_labels",
                labels.to_string(),
                "an integer >= 1",
            );
        }
        ServerConfig {
            listen,
            token: token.map(Arc::from),
            token_origin,
            token_env,
            public_url,
            ready_source_down: Duration::from_secs(down),
            metrics_cluster_labels: labels.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_core::config::{ConfigErrors, Origin, Overrides};

    fn read(toml: &str, ov: &Overrides) -> Result<ServerConfig, String> {
        let mut errors = ConfigErrors::default();
        let mut eff = Vec::new();
        let t: toml::Table = toml.parse().unwrap();
        let mut r = TableReader::new("server", t, ov, &mut errors, &mut eff);
        let c = ServerConfig::read(&mut r);
        r.finish();
        if errors.is_empty() {
            Ok(c)
        } else {
            Err(errors.to_string())
        }
    }

    #[test]
    fn loopback_by_default_and_off_is_off() {
        let c = read("", &Overrides::new()).unwrap();
        assert_eq!(c.listen, Some(DEFAULT_LISTEN.parse().unwrap()));
        let c = read("listen = 'off'", &Overrides::new()).unwrap();
        assert_eq!(c.listen, None);
    }

    #[test]
    fn non_loopback_without_token_is_refused_with_every_error() {
        let mut ov = Overrides::new();
        ov.set(env::ADMIN_LISTEN.env, "0.0.0.0:9469", Origin::Flag);
        let e = read(
            "public_url = 'runner.example.com'\nmetrics_cluster_labels = 0",
            &ov,
        )
        .unwrap_err();
        assert!(e.contains("server.listen"), "{e}");
        assert!(e.contains("not loopback, no token"), "{e}");
        assert!(e.contains("server.public_url"), "{e}");
        assert!(e.contains("server.metrics_cluster_labels"), "{e}");
        let e = read("listen = 'nonsense'", &Overrides::new()).unwrap_err();
        assert!(e.contains("IP:port"), "{e}");
    }

    #[test]
    fn token_file_allows_any_address_and_short_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "0123456789abcdef-long-enough\n").unwrap();
        let c = read(
            &format!(
                "listen = '0.0.0.0:1'\ntoken_file = {:?}",
                f.display().to_string()
            ),
            &Overrides::new(),
        )
        .unwrap();
        assert_eq!(c.token.as_deref(), Some("0123456789abcdef-long-enough"));
        assert!(!format!("{c:?}").contains("0123456789"));
        std::fs::write(&f, "short").unwrap();
        let e = read(
            &format!("token_file = {:?}", f.display().to_string()),
            &Overrides::new(),
        )
        .unwrap_err();
        assert!(e.contains("at least 16"), "{e}");
        assert!(
            !e.contains("short"),
            "the token itself is never printed: {e}"
        );
    }
}
