//! Go-compatible renderings used in tool result texts: `json.MarshalIndent`
//! (2-space indent, sorted keys, `<>&` escaped) and RFC 3339 timestamps.

use serde_json::Value;

/// `json.MarshalIndent(v, "", "  ")` of a Go map: keys sorted.
pub fn marshal_indent(v: &Value) -> String {
    let mut out = String::new();
    write(v, 0, &mut out);
    out
}

fn escape(s: &str, out: &mut String) {
    let json = serde_json::to_string(s).expect("string serializes");
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
}

fn write(v: &Value, depth: usize, out: &mut String) {
    let pad = |d: usize, out: &mut String| {
        for _ in 0..d {
            out.push_str("  ");
        }
    };
    match v {
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push_str("{\n");
            for (i, k) in keys.iter().enumerate() {
                pad(depth + 1, out);
                escape(k, out);
                out.push_str(": ");
                write(&m[k.as_str()], depth + 1, out);
                if i + 1 < keys.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            pad(depth, out);
            out.push('}');
        }
        Value::Array(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                pad(depth + 1, out);
                write(x, depth + 1, out);
                if i + 1 < a.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            pad(depth, out);
            out.push(']');
        }
        Value::String(s) => escape(s, out),
        other => out.push_str(&other.to_string()),
    }
}

/// Current time as RFC 3339 with seconds precision in UTC (`Z`), the way
/// the server renders `createdAt`/`timestamp` when it runs in UTC.
pub fn now_rfc3339() -> String {
    runner_core::date::rfc3339_seconds(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_marshal_indent_shape() {
        let v = json!({"subscriptionId": "sub-0ddc180f", "mode": "faults", "filters": {}, "cluster": "a<b>&c", "list": [], "n": 2});
        assert_eq!(
            marshal_indent(&v),
            "{\n  \"cluster\": \"a\\u003cb\\u003e\\u0026c\",\n  \"filters\": {},\n  \"list\": [],\n  \"mode\": \"faults\",\n  \"n\": 2,\n  \"subscriptionId\": \"sub-0ddc180f\"\n}"
        );
        let v = json!({"subscriptions": [{"a": 1}], "total": 1});
        assert_eq!(
            marshal_indent(&v),
            "{\n  \"subscriptions\": [\n    {\n      \"a\": 1\n    }\n  ],\n  \"total\": 1\n}"
        );
    }

    #[test]
    fn timestamps() {
        let rfc3339 = |secs| {
            runner_core::date::rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            )
        };
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1766242930), "2025-12-20T15:02:10Z");
    }
}
