//! Command templates for the common agent CLIs, plus the harmless built-in
//! `demo` agent. Templates are argv vectors (never a shell string) whose
//! elements may contain the placeholders `{model}`, `{prompt_file}` and
//! `{workspace}`; nothing from an event is ever substituted.

/// The built-in demo agent: POSIX sh, no network, no API key.
pub const DEMO_AGENT_SCRIPT: &str = include_str!("../../../agents/demo-agent.sh");

/// Placeholders a template (or `command = [...]`) may use.
pub const PLACEHOLDERS: [&str; 3] = ["{model}", "{prompt_file}", "{workspace}"];

/// The instruction every CLI preset passes as its prompt argument: the prompt
/// itself lives in a file so no prompt text ever reaches an argv or a shell.
const ASK: &str = "Read the file {prompt_file} and follow its instructions exactly. Work read-only. Write your report to output/investigation.md.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Claude,
    Codex,
    Gemini,
    Goose,
    Demo,
}

impl Preset {
    pub const ALLOWED: &'static str = "one of claude, codex, gemini, goose, demo";

    pub fn parse(s: &str) -> Option<Preset> {
        Some(match s {
            "claude" => Preset::Claude,
            "codex" => Preset::Codex,
            "gemini" => Preset::Gemini,
            "goose" => Preset::Goose,
            "demo" => Preset::Demo,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Claude => "claude",
            Preset::Codex => "codex",
            Preset::Gemini => "gemini",
            Preset::Goose => "goose",
            Preset::Demo => "demo",
        }
    }

    /// The argv template (documented in docs/agents.md; keep them in sync).
    pub fn template(self) -> Vec<String> {
        let v: &[&str] = match self {
            // Print mode; tools limited to reading, kubectl read verbs and
            // writing the report.
            Preset::Claude => &[
                "claude",
                "-p",
                "--model",
                "{model}",
                "--output-format",
                "text",
                "--allowedTools",
                "Read,Glob,Grep,Write,Bash(kubectl get:*),Bash(kubectl describe:*),Bash(kubectl logs:*),Bash(kubectl top:*),Bash(kubectl events:*)",
                ASK,
            ],
            Preset::Codex => &[
                "codex",
                "exec",
                "--model",
                "{model}",
                "--cd",
                "{workspace}",
                "--skip-git-repo-check",
                "--sandbox",
                "workspace-write",
                ASK,
            ],
            Preset::Gemini => &["gemini", "--model", "{model}", "--yolo", "--prompt", ASK],
            Preset::Goose => &[
                "goose",
                "run",
                "--no-session",
                "--model",
                "{model}",
                "--instructions",
                "{prompt_file}",
            ],
            // `sh -c SCRIPT NAME`: the script is a constant of this binary.
            Preset::Demo => &["sh", "-c", DEMO_AGENT_SCRIPT, "demo-agent"],
        };
        v.iter().map(|s| s.to_string()).collect()
    }
}

/// Replaces the placeholders in each argv element. Values are operator
/// configuration or runner-generated paths, and argv elements are passed to
/// `execve` as-is, so no quoting is needed or done.
pub fn expand(template: &[String], model: &str, prompt_file: &str, workspace: &str) -> Vec<String> {
    template
        .iter()
        .map(|a| {
            a.replace("{model}", model)
                .replace("{prompt_file}", prompt_file)
                .replace("{workspace}", workspace)
        })
        .collect()
}

/// Placeholder-looking tokens in `arg` that are not known placeholders
/// (a typo such as `{promptfile}` would otherwise reach the agent verbatim).
pub fn unknown_placeholders(arg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let after = &rest[start..];
        let Some(end) = after.find('}') else { break };
        let token = &after[..=end];
        let inner = &token[1..token.len() - 1];
        let looks_like = !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if looks_like && !PLACEHOLDERS.contains(&token) {
            out.push(token.to_string());
        }
        rest = &after[end + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_use_only_known_placeholders() {
        for p in [
            Preset::Claude,
            Preset::Codex,
            Preset::Gemini,
            Preset::Goose,
            Preset::Demo,
        ] {
            assert_eq!(Preset::parse(p.name()), Some(p));
            let t = p.template();
            if p != Preset::Demo {
                for a in &t {
                    assert!(unknown_placeholders(a).is_empty(), "{p:?}: {a}");
                }
                assert!(t.iter().any(|a| a.contains("{model}")), "{p:?}");
            }
        }
        assert_eq!(Preset::parse("bash"), None);
    }

    #[test]
    fn expand_and_unknown() {
        let t = vec!["x".into(), "--m={model}".into(), "{prompt_file}".into()];
        assert_eq!(
            expand(&t, "sonnet", "/w/prompt.md", "/w"),
            vec!["x", "--m=sonnet", "/w/prompt.md"]
        );
        assert_eq!(
            unknown_placeholders("a {promptfile} {model} {}"),
            vec!["{promptfile}"]
        );
        assert!(unknown_placeholders("json {\"a\": 1}").is_empty());
    }
}
