//! Tokens, cost, turns and kubectl results of one agent run, read from the
//! CLI's machine-readable stdout (`logs/agent-stdout.log`). Each preset's
//! format is documented in docs/agents.md. Lines that are not JSON, or JSON
//! of an unknown shape, are skipped: a CLI upgrade may lose the numbers but
//! never fails an incident.

use std::io::BufRead;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::presets::OutputFormat;

/// At most this much of stdout is parsed (stream output holds tool output).
const MAX_PARSE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_tokens: Option<u64>,
    /// As reported by the CLI (claude only); never estimated.
    pub cost_usd: Option<f64>,
    /// Model turns as the CLI counts them (claude).
    pub turns: Option<u64>,
    /// Shell tool calls whose command is a kubectl invocation.
    pub kubectl_calls: u64,
    /// Of those, the ones that failed or were refused.
    pub kubectl_failed: u64,
    /// The CLI's own error message when its final record reports one
    /// (claude prints auth errors there, on stdout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Usage {
    /// True when the agent tried kubectl and not one call succeeded.
    pub(crate) fn no_cluster_data(&self) -> bool {
        self.kubectl_calls > 0 && self.kubectl_failed == self.kubectl_calls
    }

    /// One line for reports and logs.
    pub(crate) fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let (Some(i), Some(o)) = (self.input_tokens, self.output_tokens) {
            parts.push(format!("{i} input / {o} output tokens"));
        }
        if let Some(c) = self.cache_read_tokens.filter(|c| *c > 0) {
            parts.push(format!("{c} cached"));
        }
        if let Some(t) = self.turns {
            parts.push(format!("{t} turns"));
        }
        if let Some(c) = self.cost_usd {
            parts.push(format!("${c:.4}"));
        }
        parts.push(format!(
            "kubectl calls {} ({} failed)",
            self.kubectl_calls, self.kubectl_failed
        ));
        parts.join(", ")
    }
}

/// Is `cmd` (a shell command line) a kubectl invocation?
fn is_kubectl(cmd: &str) -> bool {
    let c = cmd.trim_start();
    // codex reports `/bin/bash -lc 'kubectl ...'`.
    let c = c
        .strip_prefix("/bin/bash -lc ")
        .or_else(|| c.strip_prefix("bash -lc "))
        .or_else(|| c.strip_prefix("/bin/sh -c "))
        .map(|r| r.trim_start_matches(['\'', '"']))
        .unwrap_or(c);
    c == "kubectl" || c.starts_with("kubectl ")
}

/// Exit status printed in a tool result (`Exit code 1` / `Exit Code: 1`).
fn exit_code_in(text: &str) -> Option<i64> {
    text.lines().find_map(|l| {
        let l = l.trim();
        let rest = l
            .strip_prefix("Exit code ")
            .or_else(|| l.strip_prefix("Exit Code: "))?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn u(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Parses a CLI's stdout log; `None` for free-text formats or when the log
/// cannot be read.
pub(crate) fn parse_file(format: OutputFormat, path: &Path) -> Option<Usage> {
    use std::io::Read;
    if format == OutputFormat::Text {
        return None;
    }
    let f = std::fs::File::open(path).ok()?;
    let reader = std::io::BufReader::new(f.take(MAX_PARSE_BYTES));
    Some(parse_lines(format, reader.lines().map_while(Result::ok)))
}

pub(crate) fn parse_lines(format: OutputFormat, lines: impl Iterator<Item = String>) -> Usage {
    let mut usage = Usage::default();
    // Tool call ids that ran kubectl, waiting for their results.
    let mut pending: Vec<String> = Vec::new();
    for line in lines {
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
            continue;
        };
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        match format {
            OutputFormat::ClaudeStream => claude_line(&v, kind, &mut usage, &mut pending),
            OutputFormat::CodexJson => codex_line(&v, kind, &mut usage),
            OutputFormat::GeminiStream => gemini_line(&v, kind, &mut usage, &mut pending),
            OutputFormat::Text => {}
        }
    }
    usage
}

fn claude_line(v: &Value, kind: &str, usage: &mut Usage, pending: &mut Vec<String>) {
    let content = v
        .pointer("/message/content")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match kind {
        "assistant" => {
            for c in &content {
                if c.get("type").and_then(Value::as_str) == Some("tool_use")
                    && c.get("name").and_then(Value::as_str) == Some("Bash")
                    && c.pointer("/input/command")
                        .and_then(Value::as_str)
                        .is_some_and(is_kubectl)
                {
                    usage.kubectl_calls += 1;
                    if let Some(id) = c.get("id").and_then(Value::as_str) {
                        pending.push(id.to_string());
                    }
                }
            }
        }
        "user" => {
            for c in &content {
                if c.get("type").and_then(Value::as_str) != Some("tool_result") {
                    continue;
                }
                let Some(id) = c.get("tool_use_id").and_then(Value::as_str) else {
                    continue;
                };
                let Some(pos) = pending.iter().position(|p| p == id) else {
                    continue;
                };
                pending.remove(pos);
                let text = c.get("content").map(text_of).unwrap_or_default();
                let failed = c.get("is_error").and_then(Value::as_bool) == Some(true)
                    || exit_code_in(&text).is_some_and(|e| e != 0);
                if failed {
                    usage.kubectl_failed += 1;
                }
            }
        }
        "result" => {
            if let Some(u_) = v.get("usage") {
                usage.input_tokens = u(u_, "input_tokens").map(|i| {
                    i + u(u_, "cache_creation_input_tokens").unwrap_or(0)
                        + u(u_, "cache_read_input_tokens").unwrap_or(0)
                });
                usage.output_tokens = u(u_, "output_tokens");
                usage.cache_read_tokens = u(u_, "cache_read_input_tokens");
            }
            usage.cost_usd = v.get("total_cost_usd").and_then(Value::as_f64);
            usage.turns = u(v, "num_turns");
            if v.get("is_error").and_then(Value::as_bool) == Some(true) {
                let msg = v
                    .get("result")
                    .and_then(Value::as_str)
                    .or_else(|| v.get("subtype").and_then(Value::as_str))
                    .unwrap_or("error");
                usage.error = Some(msg.chars().take(2000).collect());
            }
        }
        _ => {}
    }
}

fn codex_line(v: &Value, kind: &str, usage: &mut Usage) {
    match kind {
        "item.completed" => {
            let Some(item) = v.get("item") else { return };
            if item.get("type").and_then(Value::as_str) != Some("command_execution") {
                return;
            }
            if !item
                .get("command")
                .and_then(Value::as_str)
                .is_some_and(is_kubectl)
            {
                return;
            }
            usage.kubectl_calls += 1;
            let ok = item.get("exit_code").and_then(Value::as_i64) == Some(0)
                && item.get("status").and_then(Value::as_str) != Some("failed");
            if !ok {
                usage.kubectl_failed += 1;
            }
        }
        "turn.completed" => {
            if let Some(u_) = v.get("usage") {
                let add = |a: &mut Option<u64>, b: Option<u64>| {
                    if let Some(b) = b {
                        *a = Some(a.unwrap_or(0) + b);
                    }
                };
                add(&mut usage.input_tokens, u(u_, "input_tokens"));
                add(&mut usage.output_tokens, u(u_, "output_tokens"));
                add(&mut usage.cache_read_tokens, u(u_, "cached_input_tokens"));
            }
        }
        "turn.failed" | "error" => {
            let msg = v
                .pointer("/error/message")
                .or_else(|| v.get("message"))
                .and_then(Value::as_str);
            // Reconnect notices are `error` events too; keep the last word.
            if let Some(m) = msg {
                usage.error = Some(m.chars().take(2000).collect());
            }
        }
        _ => {}
    }
}

fn gemini_line(v: &Value, kind: &str, usage: &mut Usage, pending: &mut Vec<String>) {
    match kind {
        "tool_use"
            if v.get("tool_name").and_then(Value::as_str) == Some("run_shell_command")
                && v.pointer("/parameters/command")
                    .and_then(Value::as_str)
                    .is_some_and(is_kubectl) =>
        {
            usage.kubectl_calls += 1;
            if let Some(id) = v.get("tool_id").and_then(Value::as_str) {
                pending.push(id.to_string());
            }
        }
        "tool_result" => {
            let Some(id) = v.get("tool_id").and_then(Value::as_str) else {
                return;
            };
            let Some(pos) = pending.iter().position(|p| p == id) else {
                return;
            };
            pending.remove(pos);
            let out = v.get("output").map(text_of).unwrap_or_default();
            let failed = v.get("status").and_then(Value::as_str) != Some("success")
                || exit_code_in(&out).is_some_and(|e| e != 0);
            if failed {
                usage.kubectl_failed += 1;
            }
        }
        "result" => {
            if let Some(s) = v.get("stats") {
                usage.input_tokens = u(s, "input_tokens");
                usage.output_tokens = u(s, "output_tokens");
                usage.cache_read_tokens = u(s, "cached");
            }
            if v.get("status").and_then(Value::as_str) == Some("error") {
                let msg = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                usage.error = Some(msg.chars().take(2000).collect());
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> impl Iterator<Item = String> + '_ {
        s.lines().map(str::to_string)
    }

    #[test]
    fn claude_stream() {
        let log = r#"{"type":"system","subtype":"init"}
{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"kubectl get pods"}}]}}
{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","is_error":true,"content":"Exit code 1\nconnection refused"}]}}
{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t2","name":"Bash","input":{"command":"kubectl logs p"}}]}}
{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t2","content":"log line"}]}}
not json
{"type":"result","is_error":false,"num_turns":3,"total_cost_usd":0.0012,"usage":{"input_tokens":300,"cache_read_input_tokens":50,"output_tokens":19}}"#;
        let u = parse_lines(OutputFormat::ClaudeStream, lines(log));
        assert_eq!(u.kubectl_calls, 2);
        assert_eq!(u.kubectl_failed, 1);
        assert!(!u.no_cluster_data());
        assert_eq!(u.input_tokens, Some(350));
        assert_eq!(u.output_tokens, Some(19));
        assert_eq!(u.turns, Some(3));
        assert_eq!(u.cost_usd, Some(0.0012));
        assert_eq!(u.error, None);
        let err = r#"{"type":"result","is_error":true,"result":"Invalid API key · Fix external API key"}"#;
        let u = parse_lines(OutputFormat::ClaudeStream, lines(err));
        assert_eq!(
            u.error.as_deref(),
            Some("Invalid API key · Fix external API key")
        );
    }

    #[test]
    fn codex_json() {
        let log = r#"{"type":"item.completed","item":{"type":"command_execution","command":"/bin/bash -lc 'kubectl get pods'","exit_code":1,"status":"failed"}}
{"type":"item.completed","item":{"type":"command_execution","command":"/bin/bash -lc 'echo hi'","exit_code":0,"status":"completed"}}
{"type":"turn.completed","usage":{"input_tokens":30,"cached_input_tokens":4,"output_tokens":15}}"#;
        let u = parse_lines(OutputFormat::CodexJson, lines(log));
        assert_eq!((u.kubectl_calls, u.kubectl_failed), (1, 1));
        assert!(u.no_cluster_data());
        assert_eq!(u.input_tokens, Some(30));
        assert_eq!(u.cache_read_tokens, Some(4));
        assert_eq!(u.cost_usd, None);
    }

    #[test]
    fn gemini_stream() {
        let log = r#"{"type":"tool_use","tool_name":"run_shell_command","tool_id":"a","parameters":{"command":"kubectl get pods"}}
{"type":"tool_result","tool_id":"a","status":"success","output":"refused\nExit Code: 1\n"}
{"type":"tool_use","tool_name":"run_shell_command","tool_id":"b","parameters":{"command":"kubectl delete pod x"}}
{"type":"tool_result","tool_id":"b","status":"error","output":"Tool execution denied by policy."}
{"type":"result","status":"success","stats":{"input_tokens":60,"output_tokens":12,"cached":0}}"#;
        let u = parse_lines(OutputFormat::GeminiStream, lines(log));
        assert_eq!((u.kubectl_calls, u.kubectl_failed), (2, 2));
        assert!(u.no_cluster_data());
        assert_eq!(u.input_tokens, Some(60));
    }

    #[test]
    fn kubectl_detection() {
        assert!(is_kubectl("kubectl get pods"));
        assert!(is_kubectl("/bin/bash -lc 'kubectl get pods'"));
        assert!(!is_kubectl("echo kubectl"));
        assert!(!is_kubectl("kubectlx"));
        assert_eq!(exit_code_in("x\nExit Code: 3\n"), Some(3));
        assert_eq!(exit_code_in("Exit code 1\nE..."), Some(1));
    }
}
