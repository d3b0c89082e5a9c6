//! Modifier: redacts secret-looking strings and raises the severity of faults
//! in production namespaces.
//!
//! Config (every key optional):
//! * `keys`: comma-separated names whose values are secrets in `key=value` /
//!   `key: value` / `"key":"value"` form (case-insensitive). Default:
//!   `password, passwd, pwd, secret, token, api_key, apikey, access_key,
//!   secret_key, client_secret, private_key`.
//! * `production_namespaces`: comma-separated globs; events there get at
//!   least severity `raise_to`.
//! * `raise_to`: `warning`, `error` or `critical` (default `critical`).
//!
//! Also redacts `Bearer <token>` and AWS access key ids (`AKIA…`). Redaction
//! applies to `context` and to the original JSON (`raw-json`), so neither
//! later stages nor the agent see the secret. The event is replaced only when
//! something changed.

use std::sync::OnceLock;

use event_runner::plugin::host::{LogLevel, log};
use exports::event_runner::plugin::filter::{Event, Guest, Severity, Verdict};
use plugin_kit::{any_glob, check_keys, get, list};

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

const MASK: &str = "[REDACTED]";
const DEFAULT_KEYS: &str = "password, passwd, pwd, secret, token, api_key, apikey, access_key, secret_key, client_secret, private_key";

struct Settings {
    /// Lowercased.
    keys: Vec<String>,
    production: Vec<String>,
    raise_to: Severity,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn rank(s: Severity) -> u8 {
    match s {
        Severity::Debug => 0,
        Severity::Info => 1,
        Severity::Warning => 2,
        Severity::Error => 3,
        Severity::Critical => 4,
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Ends a secret value: whitespace, quotes, JSON/URL punctuation. All ASCII,
/// so cutting there never splits a UTF-8 character, and the mask contains
/// none of them, so redacting inside a JSON string keeps the JSON valid.
fn ends_value(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'"' | b'\\' | b'\'' | b',' | b';' | b'&' | b'}' | b')')
}

/// Returns `[start, end)` byte ranges of secret values in `text`.
fn secret_spans(text: &str, keys: &[String]) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let lc = text.to_ascii_lowercase();
    let lb = lc.as_bytes();
    // Bytes that can start a match; everything else is skipped cheaply
    // (a 1 KB context is mostly such bytes).
    let mut first = [false; 256];
    for k in keys {
        if let Some(&c) = k.as_bytes().first() {
            first[c as usize] = true;
        }
    }
    first[b'b' as usize] = true;
    first[b'a' as usize] = true;
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !first[lb[i] as usize] {
            i += 1;
            continue;
        }
        // `Bearer <token>`
        if lb[i..].starts_with(b"bearer ") && (i == 0 || !is_word(b[i - 1])) {
            let v = i + 7;
            let mut e = v;
            while e < b.len() && !ends_value(b[e]) {
                e += 1;
            }
            if e > v {
                spans.push((v, e));
                i = e;
                continue;
            }
        }
        // AWS access key id: AKIA + 16 upper-case letters or digits.
        if b[i..].starts_with(b"AKIA")
            && b.len() >= i + 20
            && b[i + 4..i + 20]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            spans.push((i, i + 20));
            i += 20;
            continue;
        }
        // key=value, key: value, "key":"value", \"key\":\"value\"
        if i == 0 || !is_word(b[i - 1]) {
            if let Some(key) = keys.iter().find(|k| lb[i..].starts_with(k.as_bytes())) {
                let mut j = i + key.len();
                if j < b.len() && is_word(b[j]) {
                    i += 1;
                    continue;
                }
                let skip = |j: &mut usize| {
                    while *j < b.len() && matches!(b[*j], b' ' | b'"' | b'\\' | b'\'') {
                        *j += 1;
                    }
                };
                skip(&mut j);
                if j < b.len() && (b[j] == b'=' || b[j] == b':') {
                    j += 1;
                    skip(&mut j);
                    let v = j;
                    while j < b.len() && !ends_value(b[j]) {
                        j += 1;
                    }
                    if j > v && &text[v..j] != MASK {
                        spans.push((v, j));
                    }
                    i = j.max(i + 1);
                    continue;
                }
            }
        }
        i += 1;
    }
    spans
}

/// The text with secrets masked, or `None` when there was nothing to mask.
fn redact(text: &str, keys: &[String]) -> Option<String> {
    let spans = secret_spans(text, keys);
    if spans.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (s, e) in spans {
        out.push_str(&text[last..s]);
        out.push_str(MASK);
        last = e;
    }
    out.push_str(&text[last..]);
    Some(out)
}

struct Redactor;

impl Guest for Redactor {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        plugin_kit::forward_panics(|m| log(LogLevel::Error, m));
        check_keys(&config, &["keys", "production_namespaces", "raise_to"])?;
        let keys: Vec<String> = list(get(&config, "keys").unwrap_or(DEFAULT_KEYS))
            .into_iter()
            .map(|k| k.to_ascii_lowercase())
            .collect();
        let raise_to = match get(&config, "raise_to")
            .unwrap_or("critical")
            .to_ascii_lowercase()
            .as_str()
        {
            "warning" => Severity::Warning,
            "error" => Severity::Error,
            "critical" => Severity::Critical,
            other => {
                return Err(format!(
                    "raise_to: {other:?} is not one of warning, error, critical"
                ));
            }
        };
        let settings = Settings {
            keys,
            production: get(&config, "production_namespaces")
                .map(list)
                .unwrap_or_default(),
            raise_to,
        };
        SETTINGS
            .set(settings)
            .map_err(|_| "init called twice".to_string())
    }

    fn filter(mut event: Event) -> Result<Verdict, String> {
        let s = SETTINGS.get().ok_or("filter called before init")?;
        let mut changed = false;
        if let Some(c) = redact(&event.context, &s.keys) {
            event.context = c;
            changed = true;
        }
        if let Some(r) = redact(&event.raw_json, &s.keys) {
            event.raw_json = r;
            changed = true;
        }
        if !event.resource.namespace.is_empty()
            && any_glob(&s.production, &event.resource.namespace)
            && rank(event.severity) < rank(s.raise_to)
        {
            event.severity = s.raise_to;
            changed = true;
        }
        Ok(if changed {
            Verdict::Replace(event)
        } else {
            Verdict::Keep
        })
    }
}

export!(Redactor);

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        list(DEFAULT_KEYS)
    }

    #[test]
    fn redacts_common_forms() {
        let k = keys();
        assert_eq!(
            redact("db password=hunter2 failed", &k).unwrap(),
            "db password=[REDACTED] failed"
        );
        assert_eq!(
            redact(r#"{"context":"token: abc123, next"}"#, &k).unwrap(),
            r#"{"context":"token: [REDACTED], next"}"#
        );
        assert_eq!(
            redact(r#"env \"API_KEY\":\"s3cr3t\" set"#, &k).unwrap(),
            r#"env \"API_KEY\":\"[REDACTED]\" set"#
        );
        assert_eq!(
            redact("Authorization: Bearer eyJhbGci.x.y", &k).unwrap(),
            "Authorization: Bearer [REDACTED]"
        );
        assert_eq!(
            redact("key AKIAABCDEFGHIJKLMNOP used", &k).unwrap(),
            "key [REDACTED] used"
        );
        assert_eq!(redact("tokenizer=fast secretary: bob", &k), None);
        assert_eq!(redact("nothing here", &k), None);
        assert_eq!(redact("password=[REDACTED]", &k), None);
    }
}
