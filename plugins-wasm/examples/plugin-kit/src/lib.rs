//! Helpers for Event Runner plugins: reading the `config = { … }` table and
//! matching names against glob patterns. Plain Rust, no bindings: copy it or
//! depend on it.

/// Sends panic messages to `log` (pass the plugin's `host::log` wrapped in a
/// closure). Without this a panic still stops the call (the stage's
/// `on_error` applies), but its message is lost: the default panic hook
/// writes to stderr, which plugins do not have.
pub fn forward_panics(log: fn(&str)) {
    std::panic::set_hook(Box::new(move |info| {
        log(&format!("plugin panicked: {info}"))
    }));
}

/// Splits a comma-separated config value into trimmed, non-empty items.
/// (`config` arrays in `pipeline.toml` arrive joined with commas.)
pub fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Rejects config keys the plugin does not know, so a typo fails
/// `runner validate` instead of silently doing nothing.
pub fn check_keys(config: &[(String, String)], known: &[&str]) -> Result<(), String> {
    let unknown: Vec<&str> = config
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !known.contains(k))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "unknown config key(s) {}; known keys: {}",
            unknown.join(", "),
            known.join(", ")
        ))
    }
}

/// The value of `key`, if given.
pub fn get<'a>(config: &'a [(String, String)], key: &str) -> Option<&'a str> {
    config
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Glob match: `*` matches any run of characters (also none), `?` exactly
/// one; everything else literally. Iterative, so no pattern can blow the
/// stack or take exponential time.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// True when any pattern matches.
pub fn any_glob(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| glob(p, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("kube-*", "kube-system"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*probe*failed*", "Readiness probe failed: timeout"));
        assert!(!glob("kube-*", "default"));
        assert!(glob("payments", "payments"));
        assert!(!glob("payments", "payments-2"));
    }

    #[test]
    fn lists_and_keys() {
        assert_eq!(list(" a, b ,,c "), vec!["a", "b", "c"]);
        let cfg = vec![("deny".to_string(), "x".to_string())];
        assert!(check_keys(&cfg, &["deny"]).is_ok());
        assert!(check_keys(&cfg, &["allow"]).unwrap_err().contains("deny"));
        assert_eq!(get(&cfg, "deny"), Some("x"));
    }
}
