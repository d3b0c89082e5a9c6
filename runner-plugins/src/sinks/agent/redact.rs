//! Redaction of the runner's known secret values from everything an agent
//! wrote before it reaches `report.md`, `report.html` or Slack. The last
//! layer: an agent that obtained a secret despite the sandbox still cannot
//! publish it through the runner.

use std::collections::BTreeSet;

use runner_core::config::Environment;

/// Replaces each secret occurrence.
pub(crate) const MARK: &str = "[REDACTED]";

/// Shorter values are not treated as secrets: replacing `true` or a port
/// number everywhere would garble reports and protect nothing.
const MIN_SECRET_LEN: usize = 8;

/// Words in an environment variable's name that mark its value secret.
const SECRET_WORDS: &[&str] = &[
    "TOKEN",
    "KEY",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "WEBHOOK",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
];

pub(crate) fn name_looks_secret(name: &str) -> bool {
    let u = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| u.contains(w))
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    pub(crate) fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        let set: BTreeSet<String> = values
            .into_iter()
            .map(|v| v.trim().to_string())
            .filter(|v| v.len() >= MIN_SECRET_LEN)
            .collect();
        let mut secrets: Vec<String> = set.into_iter().collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        Redactor { secrets }
    }

    /// The runner's secrets: every variable of its environment whose name
    /// looks secret, the named `extra_envs` (webhook, token variables), the
    /// content of `token_files`, and `values` (e.g. the webhook URL).
    pub(crate) fn from_runner(
        env: &Environment,
        extra_envs: &[String],
        token_files: &[String],
        values: impl IntoIterator<Item = String>,
    ) -> Redactor {
        let mut all: Vec<String> = values.into_iter().collect();
        for (k, v) in env.iter() {
            if name_looks_secret(k) || extra_envs.iter().any(|e| e == k) {
                all.push(v.to_string());
            }
        }
        for f in token_files {
            if let Ok(t) = std::fs::read_to_string(f) {
                all.push(t);
            }
        }
        Redactor::new(all)
    }

    /// `text` with every secret replaced by [`MARK`].
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MARK);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for n in [
            "SLACK_WEBHOOK_URL",
            "MCP_TOKEN",
            "ANTHROPIC_API_KEY",
            "db_password",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(name_looks_secret(n), "{n}");
        }
        for n in ["PATH", "HOME", "LANG", "CLUSTER"] {
            assert!(!name_looks_secret(n), "{n}");
        }
    }

    #[test]
    fn redacts_longest_first_and_ignores_short_values() {
        let r = Redactor::new([
            "abcdefgh".to_string(),
            "xxabcdefghyy".to_string(),
            "short".to_string(),
            "  padded-secret-1\n".to_string(),
        ]);
        assert_eq!(r.secrets.len(), 3);
        assert_eq!(
            r.redact("a xxabcdefghyy b abcdefgh c short d padded-secret-1"),
            "a [REDACTED] b [REDACTED] c short d [REDACTED]"
        );
        assert_eq!(Redactor::default().redact("same"), "same");
    }
}
