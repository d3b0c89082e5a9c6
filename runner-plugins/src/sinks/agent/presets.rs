//! Command templates for the common agent CLIs, plus the harmless built-in
//! `demo` agent. Templates are argv vectors (never a shell string) whose
//! elements may contain the placeholders `{model}`, `{prompt_file}` and
//! `{workspace}`; nothing from an event is ever substituted.

/// The built-in demo agent: POSIX sh, no network, no API key.
pub(crate) const DEMO_AGENT_SCRIPT: &str = include_str!("../../../agents/demo-agent.sh");

/// Placeholders a template (or `command = [...]`) may use.
pub(crate) const PLACEHOLDERS: [&str; 3] = ["{model}", "{prompt_file}", "{workspace}"];

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

/// Operator settings that shape a preset's argv and its private HOME.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PresetOptions {
    /// Per-incident spending cap (claude `--max-budget-usd`).
    pub max_budget_usd: Option<f64>,
    /// Per-incident model-turn cap (claude `--max-turns`, gemini
    /// `model.maxSessionTurns`).
    pub max_turns: Option<u32>,
    /// Model endpoint override (for proxies and gateways): claude
    /// `ANTHROPIC_BASE_URL`, gemini `GOOGLE_GEMINI_BASE_URL`, codex a model
    /// provider in its `config.toml`.
    pub base_url: Option<String>,
    /// The runner's kernel sandbox (Landlock) confines the agent. codex
    /// then runs its commands without its own sandbox: that one (bubblewrap)
    /// needs mount namespaces, which a Landlock-confined process may not
    /// set up, so every command it wraps fails.
    pub kernel_sandbox: bool,
}

impl PresetOptions {
    /// codex's `--sandbox` value (and `sandbox_mode` in its config).
    fn codex_sandbox(&self) -> &'static str {
        if self.kernel_sandbox {
            "danger-full-access"
        } else {
            "workspace-write"
        }
    }
}

/// How a preset's CLI reports its run on stdout (parsed by `usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    /// `claude -p --output-format stream-json --verbose`.
    ClaudeStream,
    /// `codex exec --json`.
    CodexJson,
    /// `gemini --output-format stream-json`.
    GeminiStream,
    /// Free text: nothing to parse.
    Text,
}

/// kubectl verbs a preset lets the agent run (read-only ones).
pub(crate) const KUBECTL_READ_VERBS: [&str; 5] = ["get", "describe", "logs", "top", "events"];

/// kubectl verbs the codex command policy forbids outright.
const KUBECTL_FORBIDDEN_VERBS: [&str; 28] = [
    "delete",
    "apply",
    "create",
    "patch",
    "edit",
    "replace",
    "scale",
    "autoscale",
    "exec",
    "attach",
    "cp",
    "port-forward",
    "proxy",
    "run",
    "expose",
    "annotate",
    "label",
    "taint",
    "drain",
    "cordon",
    "uncordon",
    "rollout",
    "set",
    "debug",
    "certificate",
    "plugin",
    "config",
    "auth",
];

impl Preset {
    pub(crate) const ALLOWED: &'static str = "one of claude, codex, gemini, goose, demo";

    pub(crate) fn parse(s: &str) -> Option<Preset> {
        Some(match s {
            "claude" => Preset::Claude,
            "codex" => Preset::Codex,
            "gemini" => Preset::Gemini,
            "goose" => Preset::Goose,
            "demo" => Preset::Demo,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Preset::Claude => "claude",
            Preset::Codex => "codex",
            Preset::Gemini => "gemini",
            Preset::Goose => "goose",
            Preset::Demo => "demo",
        }
    }

    /// True for the presets that run a third-party CLI (not `demo`).
    pub(crate) fn is_cli(self) -> bool {
        self != Preset::Demo
    }

    /// Why the preset has never run in this project's tests, when it has
    /// not (said by `runner validate` and at startup).
    pub(crate) fn untested(self) -> Option<&'static str> {
        match self {
            Preset::Goose => Some(
                "UNTESTED: the goose agent CLI is published on none of npm, PyPI, crates.io or \
                 Debian (those names there are other projects, and PyPI's goose-sdk holds Python \
                 bindings without the `goose` program), so CI cannot install it; its flags, \
                 output and behaviour under the sandbox are unverified",
            ),
            _ => None,
        }
    }

    /// The program the preset runs (looked up on PATH).
    pub(crate) fn program(self) -> &'static str {
        match self {
            Preset::Demo => "sh",
            p => p.name(),
        }
    }

    pub(crate) fn output_format(self) -> OutputFormat {
        match self {
            Preset::Claude => OutputFormat::ClaudeStream,
            Preset::Codex => OutputFormat::CodexJson,
            Preset::Gemini => OutputFormat::GeminiStream,
            Preset::Goose | Preset::Demo => OutputFormat::Text,
        }
    }

    /// Variables the CLI needs for its API key: at least one of each group
    /// must be in `env_allow` and set.
    pub(crate) fn key_vars(self) -> &'static [&'static [&'static str]] {
        match self {
            Preset::Claude => &[&["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"]],
            Preset::Codex => &[&["CODEX_API_KEY"]],
            Preset::Gemini => &[&["GEMINI_API_KEY"]],
            Preset::Goose => &[&["GOOSE_PROVIDER"]],
            Preset::Demo => &[],
        }
    }

    /// Variables the runner sets itself for this preset (so `env_allow`
    /// entries of the same name are overridden).
    pub(crate) fn endpoint_var(self) -> Option<&'static str> {
        match self {
            Preset::Claude => Some("ANTHROPIC_BASE_URL"),
            Preset::Gemini => Some("GOOGLE_GEMINI_BASE_URL"),
            _ => None,
        }
    }

    /// The argv template (documented in docs/agents.md; keep them in sync).
    pub(crate) fn template(self, o: &PresetOptions) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        let mut push = |a: &str| v.push(a.to_string());
        match self {
            // Print mode. `--allowedTools=LIST` is one argument: the spaced
            // form is variadic and would swallow the prompt. No blanket
            // Read/Write: reads in the working directory need no rule,
            // writes go to ./output only, kubectl runs read verbs only.
            Preset::Claude => {
                for a in [
                    "claude",
                    "-p",
                    "--model",
                    "{model}",
                    "--output-format",
                    "stream-json",
                    "--verbose",
                    "--no-session-persistence",
                    "--permission-mode",
                    "default",
                ] {
                    push(a);
                }
                let mut rules: Vec<String> = KUBECTL_READ_VERBS
                    .iter()
                    .map(|verb| format!("Bash(kubectl {verb}:*)"))
                    .collect();
                rules.push("Edit(./output/**)".into());
                push(&format!("--allowedTools={}", rules.join(",")));
                if let Some(b) = o.max_budget_usd {
                    push("--max-budget-usd");
                    push(&b.to_string());
                }
                if let Some(t) = o.max_turns {
                    push("--max-turns");
                    push(&t.to_string());
                }
                push("--");
                push(ASK);
            }
            // Endpoint, sandbox network and the command policy live in the
            // config.toml and rules file the runner writes into the
            // agent's private HOME (see `home_files`).
            Preset::Codex => {
                for a in [
                    "codex",
                    "exec",
                    "--model",
                    "{model}",
                    "--json",
                    "--ephemeral",
                    "--skip-git-repo-check",
                    "--sandbox",
                    o.codex_sandbox(),
                    "--cd",
                    "{workspace}",
                    "--",
                    ASK,
                ] {
                    push(a);
                }
            }
            // Never --yolo: default approval mode denies every tool call
            // that is not on the allow-list (headless runs cannot ask).
            // One --allowed-tools per entry: the flag is variadic too.
            Preset::Gemini => {
                for a in [
                    "gemini",
                    "--model",
                    "{model}",
                    "--skip-trust",
                    "--approval-mode",
                    "default",
                    "--output-format",
                    "stream-json",
                ] {
                    push(a);
                }
                for verb in KUBECTL_READ_VERBS {
                    push("--allowed-tools");
                    push(&format!("run_shell_command(kubectl {verb})"));
                }
                push("--allowed-tools");
                push("write_file");
                push("--prompt");
                push(ASK);
            }
            Preset::Goose => {
                for a in [
                    "goose",
                    "run",
                    "--no-session",
                    "--model",
                    "{model}",
                    "--instructions",
                    "{prompt_file}",
                ] {
                    push(a);
                }
            }
            // `sh -c SCRIPT NAME`: the script is a constant of this binary.
            Preset::Demo => {
                for a in ["sh", "-c", DEMO_AGENT_SCRIPT, "demo-agent"] {
                    push(a);
                }
            }
        }
        v
    }

    /// Files the runner writes into the agent's private HOME before each
    /// run: `(path relative to HOME, content)`. Nothing of the operator's
    /// own HOME is visible to a preset agent.
    pub(crate) fn home_files(self, o: &PresetOptions) -> Vec<(&'static str, String)> {
        match self {
            Preset::Codex => vec![
                (".codex/config.toml", codex_config(o)),
                (".codex/rules/runner.rules", codex_rules()),
            ],
            Preset::Gemini => vec![(".gemini/settings.json", gemini_settings(o))],
            _ => Vec::new(),
        }
    }
}

fn toml_str(s: &str) -> String {
    // A TOML basic string is a JSON string minus a few escapes JSON never
    // produces for valid UTF-8 text.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `~/.codex/config.toml`: no approvals (headless), no history, and
/// either no sandbox of its own (the runner's confines it) or, without the
/// runner's, the workspace-write sandbox with network (kubectl must reach
/// the cluster).
fn codex_config(o: &PresetOptions) -> String {
    let mut c = format!(
        "# Written by the event runner for one incident; not the operator's config.\n\
         approval_policy = \"never\"\n\
         sandbox_mode = \"{}\"\n",
        o.codex_sandbox()
    );
    if o.base_url.is_some() {
        c.push_str("model_provider = \"runner\"\n");
    }
    c.push_str("\n[history]\npersistence = \"none\"\n");
    if !o.kernel_sandbox {
        c.push_str("\n[sandbox_workspace_write]\nnetwork_access = true\n");
    }
    if let Some(url) = &o.base_url {
        c.push_str(&format!(
            "\n[model_providers.runner]\nname = \"runner\"\nbase_url = {}\nenv_key = \"CODEX_API_KEY\"\nwire_api = \"responses\"\n\
             # The endpoint serves HTTPS only; skip the WebSocket attempts.\nsupports_websockets = false\n",
            toml_str(url)
        ));
    }
    c
}

/// The codex command policy: mutating kubectl verbs and the common
/// network tools are forbidden. codex checks plain commands and simple
/// `;`/`&&` chains against it, not pipes into `xargs`, `$(...)` or
/// `sh -c`, so it is a speed bump, not a boundary (docs/agents.md).
fn codex_rules() -> String {
    let verbs: Vec<String> = KUBECTL_FORBIDDEN_VERBS
        .iter()
        .map(|v| format!("\"{v}\""))
        .collect();
    format!(
        "# Written by the event runner.\n\
         prefix_rule(pattern = [\"kubectl\", [{}]], decision = \"forbidden\")\n\
         prefix_rule(pattern = [[\"curl\", \"wget\", \"nc\", \"ncat\", \"socat\", \"ssh\", \"scp\"]], decision = \"forbidden\")\n\
         prefix_rule(pattern = [[\"rm\", \"env\", \"printenv\"]], decision = \"forbidden\")\n",
        verbs.join(", ")
    )
}

/// `~/.gemini/settings.json`: API-key auth (needed with a custom
/// endpoint), no telemetry, the turn cap.
fn gemini_settings(o: &PresetOptions) -> String {
    let mut v = serde_json::json!({
        "security": { "auth": { "selectedType": "gemini-api-key" } },
        "privacy": { "usageStatisticsEnabled": false },
        "telemetry": { "enabled": false },
        "general": { "disableAutoUpdate": true, "disableUpdateNag": true },
    });
    if let Some(t) = o.max_turns {
        v["model"] = serde_json::json!({ "maxSessionTurns": t });
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// The first executable `prog` on `path` (a PATH value); `prog` itself
/// when it contains a slash.
pub fn which(prog: &str, path: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.contains('/') {
        let p = std::path::PathBuf::from(prog);
        return runnable(&p).then_some(p);
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| std::path::Path::new(d).join(prog))
        .find(|p| runnable(p))
}

/// Replaces the placeholders in each argv element. Values are operator
/// configuration or runner-generated paths, and argv elements are passed to
/// `execve` as-is, so no quoting is needed or done.
pub(crate) fn expand(
    template: &[String],
    model: &str,
    prompt_file: &str,
    workspace: &str,
) -> Vec<String> {
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
pub(crate) fn unknown_placeholders(arg: &str) -> Vec<String> {
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
            let t = p.template(&PresetOptions::default());
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
    fn claude_flags_are_single_args_and_prompt_follows_double_dash() {
        let o = PresetOptions {
            max_budget_usd: Some(0.5),
            max_turns: Some(12),
            base_url: None,
            kernel_sandbox: false,
        };
        let t = Preset::Claude.template(&o);
        let allowed = t
            .iter()
            .find(|a| a.starts_with("--allowedTools="))
            .expect("one-argument allow-list");
        assert!(
            !allowed.contains("Read") && !allowed.contains("Write"),
            "{allowed}"
        );
        assert!(allowed.contains("Edit(./output/**)"), "{allowed}");
        assert!(!t.iter().any(|a| a == "--allowedTools"), "{t:?}");
        let dd = t.iter().position(|a| a == "--").expect("--");
        assert_eq!(dd, t.len() - 2, "{t:?}");
        for f in [
            "--no-session-persistence",
            "--max-budget-usd",
            "--max-turns",
        ] {
            assert!(t.iter().any(|a| a == f), "{f}: {t:?}");
        }
        let g = Preset::Gemini.template(&o);
        assert!(!g.iter().any(|a| a == "--yolo"), "{g:?}");
        assert!(g.iter().any(|a| a == "--skip-trust"), "{g:?}");
        // Every --allowed-tools takes exactly one value.
        for (i, a) in g.iter().enumerate() {
            if a == "--allowed-tools" {
                assert!(!g[i + 1].starts_with("--"), "{g:?}");
            }
        }
        let files = Preset::Codex.home_files(&PresetOptions {
            base_url: Some("http://127.0.0.1:9/v1".into()),
            ..o
        });
        let cfg = &files[0].1;
        assert!(
            cfg.contains("base_url = \"http://127.0.0.1:9/v1\""),
            "{cfg}"
        );
        assert!(cfg.contains("network_access = true"), "{cfg}");
        assert!(files[1].1.contains("\"delete\""), "{}", files[1].1);
    }

    #[test]
    fn codex_leaves_confinement_to_the_kernel_sandbox_when_there_is_one() {
        let sandbox_arg = |t: &[String]| {
            let i = t.iter().position(|a| a == "--sandbox").expect("--sandbox");
            t[i + 1].clone()
        };
        let confined = PresetOptions {
            kernel_sandbox: true,
            ..PresetOptions::default()
        };
        assert_eq!(
            sandbox_arg(&Preset::Codex.template(&confined)),
            "danger-full-access"
        );
        let cfg = &Preset::Codex.home_files(&confined)[0].1;
        assert!(
            cfg.contains("sandbox_mode = \"danger-full-access\""),
            "{cfg}"
        );
        assert!(!cfg.contains("network_access"), "{cfg}");
        // Without the runner's sandbox, codex's own one stays on.
        let bare = PresetOptions::default();
        assert_eq!(
            sandbox_arg(&Preset::Codex.template(&bare)),
            "workspace-write"
        );
        let cfg = &Preset::Codex.home_files(&bare)[0].1;
        assert!(cfg.contains("sandbox_mode = \"workspace-write\""), "{cfg}");
        assert!(cfg.contains("network_access = true"), "{cfg}");
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
