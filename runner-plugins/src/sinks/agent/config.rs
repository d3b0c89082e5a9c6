//! `[[sink]] kind = "agent"`: reading and validating the table.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runner_core::Sink;
use runner_core::config::TableReader;

use super::presets::{Preset, PresetOptions, unknown_placeholders};
use super::sandbox::{self, Mode, SandboxConfig};
use crate::component::{BuildContext, ComponentConfig, KeyError, ReadContext};
use crate::settings as env;
use crate::sinks::slack::SlackOptions;

/// The read-only triage prompt shipped with the binary.
pub(crate) const DEFAULT_PROMPT: &str = include_str!("../../../prompts/triage.md");

/// Variables the runner sets for every agent; `env_allow` cannot name them.
pub const INCIDENT_VARS: [&str; 13] = [
    "KUBECONFIG",
    "INCIDENT_ID",
    "INCIDENT_DIR",
    "EVENT_FILE",
    "PROMPT_FILE",
    "AGENT_MODEL",
    "CLUSTER",
    "NAMESPACE",
    "RESOURCE_KIND",
    "RESOURCE_NAME",
    "FAULT_ID",
    "SEVERITY",
    // The workspace's tmp/ (the sandbox leaves no other writable temp).
    "TMPDIR",
];

const MAX_TIMEOUT_SECONDS: u64 = 7 * 24 * 3600;
const MAX_GRACE_SECONDS: u64 = 3600;

/// Always passed through when set in the runner's environment.
pub(crate) const BASE_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];

/// How the agent is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCommand {
    Preset(Preset),
    /// Generic argv with placeholders (`command = [...]`).
    Argv(Vec<String>),
    /// `AGENT_COMMAND`: a command line run with `sh -c` in the workspace.
    /// No placeholder is substituted; the script reads `$PROMPT_FILE` etc.
    Shell(String),
}

#[derive(Debug, Clone)]
pub struct AgentSinkConfig {
    pub command: AgentCommand,
    pub model: String,
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL of the process group.
    pub kill_grace: Duration,
    /// Relative paths resolve against the process working directory.
    pub workspace_root: PathBuf,
    /// The prompt template's text (the default or `prompt_file`'s content).
    pub prompt: String,
    /// Extra environment names passed through to the agent.
    pub env_allow: Vec<String>,
    pub min_investigation_bytes: u64,
    /// Name of the variable holding the webhook (for messages only).
    pub(crate) slack_webhook_env: String,
    /// The webhook itself, read from the environment; never logged unmasked.
    pub(crate) slack_webhook: Option<String>,
    pub(crate) slack: SlackOptions,
    /// Consecutive failed/timed-out agents before one "degraded" message.
    pub failure_alert_threshold: u32,
    /// The kernel sandbox every agent runs under.
    pub sandbox: SandboxConfig,
    /// Names of variables holding a source's token (`token_env`), redacted
    /// from reports like every other secret.
    pub(crate) secret_envs: Vec<String>,
    /// The `[[cluster]]` credentials and the read-only proxy; `None`: no
    /// agent can reach any cluster.
    pub(crate) clusters: Option<Arc<crate::cluster::ClusterGuard>>,
    /// The admin server's public URL (`[server] public_url`): messages link
    /// to the incident's page there.
    pub public_url: Option<String>,
    /// Budget flags and endpoint of the CLI presets.
    pub(crate) preset_options: Box<PresetOptions>,
    pub(crate) daily_budget: Box<DailyBudget>,
    /// Workspace retention and the agents' log cap.
    pub(crate) retention: Box<Retention>,
}

/// How much the incident workspaces may keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retention {
    /// Workspaces older than this are deleted (`retention_days`; 0: never).
    pub max_age: Option<Duration>,
    /// Total size of all workspaces (`retention_max_bytes`; 0: no bound).
    pub max_bytes: Option<u64>,
    /// Cap of each agent's stdout and stderr log (`log_max_bytes`).
    pub log_max_bytes: u64,
}

/// Defaults: 30 days, 10 GiB, 10 MiB per log.
pub(crate) const DEFAULT_RETENTION_DAYS: u64 = 30;
pub(crate) const DEFAULT_RETENTION_MAX_BYTES: u64 = 10 << 30;
pub(crate) const DEFAULT_LOG_MAX_BYTES: u64 = 10 << 20;

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Some(Duration::from_secs(DEFAULT_RETENTION_DAYS * 86_400)),
            max_bytes: Some(DEFAULT_RETENTION_MAX_BYTES),
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
        }
    }
}

/// Per cluster and UTC day: after these, incidents are not launched.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct DailyBudget {
    /// Agent runs (`daily_runs_per_cluster`).
    pub runs: Option<u32>,
    /// Reported dollars (`daily_budget_usd_per_cluster`); only CLIs that
    /// report a cost count towards it.
    pub usd: Option<f64>,
}

impl AgentSinkConfig {
    /// Defaults for everything but the command and the workspace root
    /// (for tests and the embedded demo).
    pub fn new(command: AgentCommand, workspace_root: impl Into<PathBuf>) -> Self {
        let workspace_root: PathBuf = workspace_root.into();
        AgentSinkConfig {
            sandbox: SandboxConfig {
                deny_paths: vec![workspace_root.clone()],
                ..SandboxConfig::default()
            },
            secret_envs: Vec::new(),
            command,
            model: env::AGENT_MODEL.default_value(),
            timeout: Duration::from_secs(env::AGENT_TIMEOUT.default_value()),
            kill_grace: Duration::from_secs(env::AGENT_KILL_GRACE.default_value()),
            workspace_root,
            prompt: DEFAULT_PROMPT.to_string(),
            env_allow: Vec::new(),
            min_investigation_bytes: 100,
            slack_webhook_env: env::SLACK_WEBHOOK_URL.env.into(),
            slack_webhook: None,
            slack: SlackOptions::default(),
            failure_alert_threshold: env::AGENT_FAILURE_ALERT_THRESHOLD.default_value(),
            clusters: None,
            public_url: None,
            preset_options: Box::default(),
            daily_budget: Box::default(),
            retention: Box::default(),
        }
    }
}

impl ComponentConfig for AgentSinkConfig {
    const KIND: &'static str = "agent";
    type Built = Arc<dyn Sink>;

    /// Reads `[sink]` (kind already removed). Every problem is reported
    /// through `r`; `None` when any was found.
    fn read(r: &mut TableReader<'_>, cx: &ReadContext<'_>) -> Option<Self> {
        let base_dir = cx.base_dir;
        let before = r.errors().len();
        let preset: Option<String> = r.opt("preset");
        let argv: Option<Vec<String>> = r.opt("command");
        let line: Option<String> = r.setting_opt(&env::AGENT_COMMAND);
        let model: String = r.setting(&env::AGENT_MODEL);
        let timeout: u64 = r.setting(&env::AGENT_TIMEOUT);
        let grace: u64 = r.setting(&env::AGENT_KILL_GRACE);
        let root: String = r.setting(&env::WORKSPACE_ROOT);
        let prompt_file: Option<String> = r.opt("prompt_file");
        let env_allow: Vec<String> = r.setting(&env::AGENT_ENV_ALLOW);
        let min_bytes: u64 = r.opt_or("min_investigation_bytes", 100);
        let webhook_env: String =
            r.opt_or("slack_webhook_env", env::SLACK_WEBHOOK_URL.env.to_string());
        let threshold: u32 = r.setting(&env::AGENT_FAILURE_ALERT_THRESHOLD);
        let sandbox_mode: String = r.setting(&env::AGENT_SANDBOX);
        let read_paths: Vec<String> = r.opt_or("sandbox_read_paths", Vec::new());
        let write_paths: Vec<String> = r.opt_or("sandbox_write_paths", Vec::new());
        let mut ports: Vec<u16> = r.opt_or(
            "sandbox_connect_ports",
            sandbox::DEFAULT_CONNECT_PORTS.to_vec(),
        );
        let udp: String = r.opt_or("sandbox_udp", "deny".to_string());

        let max_budget_usd: Option<f64> = r.opt("max_budget_usd");
        let max_turns: Option<u32> = r.opt("max_turns");
        let base_url: Option<String> = r.opt("model_base_url");
        let unsafe_codex_network: bool = r.opt_or("unsafe_codex_network", false);
        let retention_days: u64 = r.setting_in(
            &env::WORKSPACE_RETENTION_DAYS,
            0..=36_500,
            "days (0: keep forever)",
        );
        let retention_max_bytes: u64 = r.setting_in(
            &env::WORKSPACE_MAX_BYTES,
            0..=(1 << 50),
            "bytes (0: no bound)",
        );
        let log_max_bytes: u64 = r.setting_in(&env::AGENT_LOG_MAX_BYTES, 4096..=(1 << 30), "bytes");
        let daily_runs: Option<u32> = r.opt("daily_runs_per_cluster");
        let daily_usd: Option<f64> = r.opt("daily_budget_usd_per_cluster");
        for (key, v) in [
            ("max_budget_usd", max_budget_usd),
            ("daily_budget_usd_per_cluster", daily_usd),
        ] {
            if let Some(v) = v.filter(|v| *v <= 0.0) {
                r.error(key, v.to_string(), "a number of dollars > 0");
            }
        }
        for (key, v) in [
            ("max_turns", max_turns),
            ("daily_runs_per_cluster", daily_runs),
        ] {
            if v == Some(0) {
                r.error(key, "0", "an integer >= 1 (leave the key out for no limit)");
            }
        }
        if let Some(u) = &base_url {
            let ok = (u.starts_with("https://") || u.starts_with("http://"))
                && !u
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"');
            if !ok {
                r.error(
                    "model_base_url",
                    format!("{u:?}"),
                    "an http(s) URL without spaces or quotes",
                );
            }
        }

        // The model endpoint the operator named must be reachable from the
        // sandbox.
        if let Some(port) = base_url.as_deref().and_then(url_port) {
            ports.push(port);
        }

        let command = match (line, preset, argv) {
            (Some(l), _, _) => {
                if l.trim().is_empty() {
                    r.error("command_line", "\"\"", "a non-empty command line");
                }
                Some(AgentCommand::Shell(l))
            }
            (None, Some(_), Some(_)) => {
                r.error(
                    "command",
                    "(set together with preset)",
                    "exactly one of `preset` or `command` (or AGENT_COMMAND)",
                );
                None
            }
            (None, None, None) => {
                r.error(
                    "preset",
                    "(missing)",
                    format!(
                        "{} (or `command = [...]`, or AGENT_COMMAND)",
                        Preset::ALLOWED
                    ),
                );
                None
            }
            (None, Some(p), None) => match Preset::parse(&p) {
                Some(Preset::Codex) if !unsafe_codex_network => {
                    r.error(
                        "preset",
                        "\"codex\"",
                        "another preset, or `unsafe_codex_network = true`: codex has no permission \
                         layer of its own here (its command policy lets pipes, $(...) and sh -c \
                         pass), so only the kernel sandbox, the read-only cluster proxy and the \
                         credentials hold, and nothing stops an upload to a foreign host on an \
                         allowed port (see docs/agents.md)",
                    );
                    None
                }
                Some(p) => Some(AgentCommand::Preset(p)),
                None => {
                    r.error("preset", format!("{p:?}"), Preset::ALLOWED);
                    None
                }
            },
            (None, None, Some(a)) => {
                if a.first().is_none_or(|c| c.trim().is_empty()) {
                    r.error(
                        "command",
                        format!("{a:?}"),
                        "a non-empty array whose first element is the program",
                    );
                }
                for arg in &a {
                    for u in unknown_placeholders(arg) {
                        r.error(
                            "command",
                            format!("{u:?}"),
                            "placeholders {model}, {prompt_file}, {workspace}",
                        );
                    }
                }
                Some(AgentCommand::Argv(a))
            }
        };

        if model.is_empty()
            || !model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:/@-".contains(c))
        {
            r.error(
                "model",
                format!("{model:?}"),
                "a non-empty model name of letters, digits and . _ : / @ -",
            );
        }
        // Bounded so deadline arithmetic cannot overflow.
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&timeout) {
            r.error(
                "timeout_seconds",
                timeout.to_string(),
                format!("an integer in 1..={MAX_TIMEOUT_SECONDS} (one week)"),
            );
        }
        if grace > MAX_GRACE_SECONDS {
            r.error(
                "kill_grace_seconds",
                grace.to_string(),
                format!("an integer in 0..={MAX_GRACE_SECONDS}"),
            );
        }
        if root.trim().is_empty() {
            r.error("workspace_root", "\"\"", "a directory path");
        } else if Path::new(&root).exists() && !Path::new(&root).is_dir() {
            r.error(
                "workspace_root",
                format!("{root:?}"),
                "a directory (this is a file)",
            );
        }
        let prompt = match prompt_file {
            None => DEFAULT_PROMPT.to_string(),
            Some(p) => {
                let path = base_dir.join(&p);
                match std::fs::read_to_string(&path) {
                    Ok(t) if !t.trim().is_empty() => t,
                    Ok(_) => {
                        r.error("prompt_file", format!("{p:?}"), "a non-empty file");
                        String::new()
                    }
                    Err(e) => {
                        r.error(
                            "prompt_file",
                            format!("{p:?}"),
                            format!("a readable file relative to the config's directory ({e})"),
                        );
                        String::new()
                    }
                }
            }
        };
        if !is_env_name(&webhook_env) {
            r.error(
                "slack_webhook_env",
                format!("{webhook_env:?}"),
                "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
            );
        }
        for name in &env_allow {
            if let Err(why) = check_allowed_name(name, &webhook_env) {
                r.error("env_allow", format!("{name:?}"), why);
            }
        }
        if threshold < 1 {
            r.error(
                "failure_alert_threshold",
                threshold.to_string(),
                "an integer >= 1",
            );
        }
        // The secret comes from the environment only, never from a flag or the file.
        let slack_webhook = r
            .env_var(&webhook_env)
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        if let Some(url) = &slack_webhook
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            r.error(
                &format!("slack_webhook_env ({webhook_env})"),
                runner_core::config::mask(url),
                "an http(s) URL",
            );
        }

        let mode = Mode::parse(&sandbox_mode);
        if mode.is_none() {
            r.error("sandbox", format!("{sandbox_mode:?}"), Mode::ALLOWED);
        }
        // What agents must never see, even below a granted directory.
        let mut deny_paths = vec![PathBuf::from(&root)];
        if let Ok(dir) = base_dir.canonicalize()
            && !too_broad_to_hide(&dir)
        {
            deny_paths.push(dir);
        }
        let protected = sandbox::protected_paths(
            &SandboxConfig {
                deny_paths: deny_paths
                    .iter()
                    .cloned()
                    .chain(sandbox::runner_secret_files(r.environment()))
                    .collect(),
                ..SandboxConfig::default()
            },
            r.env_var("HOME").map(Path::new),
        );
        for (key, list) in [
            ("sandbox_read_paths", &read_paths),
            ("sandbox_write_paths", &write_paths),
        ] {
            for (p, why) in sandbox::check_paths(list, &protected) {
                r.error(key, format!("{p:?}"), why);
            }
        }
        let allow_udp = match udp.as_str() {
            "deny" => false,
            "allow" => true,
            _ => {
                r.error("sandbox_udp", format!("{udp:?}"), "\"deny\" or \"allow\"");
                false
            }
        };
        if ports.contains(&0) {
            r.error(
                "sandbox_connect_ports",
                format!("{ports:?}"),
                "TCP ports in 1..=65535",
            );
        }

        if r.errors().len() > before {
            return None;
        }
        Some(AgentSinkConfig {
            command: command?,
            model,
            timeout: Duration::from_secs(timeout),
            kill_grace: Duration::from_secs(grace),
            workspace_root: PathBuf::from(root),
            prompt,
            env_allow,
            min_investigation_bytes: min_bytes,
            slack_webhook_env: webhook_env,
            slack_webhook,
            slack: SlackOptions::default(),
            failure_alert_threshold: threshold,
            sandbox: SandboxConfig {
                mode: mode?,
                read_paths: read_paths.iter().map(PathBuf::from).collect(),
                write_paths: write_paths.iter().map(PathBuf::from).collect(),
                connect_ports: ports,
                allow_udp,
                deny_paths,
            },
            secret_envs: Vec::new(),
            clusters: None,
            public_url: None,
            preset_options: Box::new(PresetOptions {
                max_budget_usd,
                max_turns,
                base_url,
                // Decided at each launch from `sandbox.mode`.
                kernel_sandbox: false,
            }),
            daily_budget: Box::new(DailyBudget {
                runs: daily_runs,
                usd: daily_usd,
            }),
            retention: Box::new(Retention {
                max_age: (retention_days > 0).then(|| Duration::from_secs(retention_days * 86_400)),
                max_bytes: (retention_max_bytes > 0).then_some(retention_max_bytes),
                log_max_bytes,
            }),
        })
    }

    fn build(&self, cx: &BuildContext) -> Result<Arc<dyn Sink>, KeyError> {
        for name in &self.env_allow {
            check_allowed_name(name, &self.slack_webhook_env)
                .map_err(|why| KeyError::new("env_allow", format!("{name:?}"), why))?;
        }
        Ok(Arc::new(super::AgentSink::with_context(self.clone(), cx)))
    }

    /// Its webhook variable is refused in `env_allow` by `read` itself.
    fn secret_envs(_table: &toml::Table) -> Vec<String> {
        Vec::new()
    }

    /// Other components' secrets (a source's `token_env`, a Slack sink's
    /// `webhook_env`) are never passed to an agent.
    fn check_secrets(&self, secrets: &[String]) -> Vec<KeyError> {
        self.env_allow
            .iter()
            .filter(|n| secrets.contains(n))
            .map(|name| {
                KeyError::new(
                    "env_allow",
                    format!("{name:?}"),
                    "a name that does not hold a secret of another component (token_env of a [[source]], webhook_env of a slack sink)",
                )
            })
            .collect()
    }
}

/// A config directory that is `/` or a system directory agents must read
/// (`pipeline.toml` directly in `/etc`) cannot be hidden as a whole; the
/// file is then protected by nothing but its mode (documented).
fn too_broad_to_hide(dir: &Path) -> bool {
    ["/", "/etc", "/usr", "/opt", "/bin", "/lib", "/lib64"]
        .iter()
        .any(|s| Path::new(s).starts_with(dir))
}

pub(crate) fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Names that hold the runner's own secrets: never passed to an agent.
pub(crate) fn is_secret_name(name: &str, webhook_env: &str) -> bool {
    name == webhook_env
        || name == env::MCP_TOKEN_FILE.env
        || crate::settings::SETTINGS
            .iter()
            .any(|s| s.secret && s.env == name)
}

fn check_allowed_name(name: &str, webhook_env: &str) -> Result<(), String> {
    if !is_env_name(name) {
        return Err("an environment variable name ([A-Za-z_][A-Za-z0-9_]*)".into());
    }
    if is_secret_name(name, webhook_env) {
        return Err("a name that does not hold a runner secret (webhook, tokens are never passed to agents)".into());
    }
    if INCIDENT_VARS.contains(&name) || BASE_ENV.contains(&name) {
        return Err("a name the runner does not already set (PATH, HOME, LANG and the incident variables are always passed; KUBECONFIG is generated per incident from [[cluster]], see docs/agents.md)".into());
    }
    Ok(())
}

/// The TCP port of an http(s) URL (explicit, or the scheme's default).
fn url_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    match host_port.rsplit_once(':') {
        Some((_, p)) if !host_port.ends_with(']') => p.parse().ok(),
        _ => match scheme {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        },
    }
}

/// What `runner validate` found out about a CLI preset's requirements.
#[derive(Debug, Default)]
pub(crate) struct Preflight {
    /// Informational lines (program path and version).
    pub info: Vec<String>,
    /// Every missing program, variable or file, each a full sentence.
    pub missing: Vec<String>,
}

impl AgentSinkConfig {
    /// Checks what a CLI preset needs on this host: its program on PATH
    /// (and its version), its API key variable in `env_allow` and set.
    /// Cluster access comes from `[[cluster]]`, never from `KUBECONFIG`.
    /// `env` reads the runner's environment.
    pub(crate) fn preflight(&self, env: &dyn Fn(&str) -> Option<String>) -> Preflight {
        let mut out = Preflight::default();
        let AgentCommand::Preset(p) = &self.command else {
            return out;
        };
        if !p.is_cli() {
            return out;
        }
        if let Some(why) = p.untested() {
            out.info.push(format!("preset {:?}: {why}", p.name()));
        }
        let path = env("PATH").unwrap_or_default();
        match super::presets::which(p.program(), &path) {
            None => out.missing.push(format!(
                "preset {:?}: the `{}` program is not on PATH ({path})",
                p.name(),
                p.program()
            )),
            Some(bin) => {
                let version = cli_version(&bin, &path, env("TMPDIR"));
                out.info.push(format!(
                    "preset {:?}: {} ({})",
                    p.name(),
                    bin.display(),
                    version.unwrap_or_else(|e| format!("version unknown: {e}"))
                ));
            }
        }
        let allowed = |n: &str| self.env_allow.iter().any(|a| a == n);
        let set = |n: &str| env(n).is_some_and(|v| !v.is_empty());
        let needs: Vec<Vec<&str>> = p.key_vars().iter().map(|g| g.to_vec()).collect();
        for group in needs {
            if group.iter().any(|n| allowed(n) && set(n)) {
                continue;
            }
            let names = group.join(" or ");
            let not_allowed: Vec<&str> = group.iter().copied().filter(|n| !allowed(n)).collect();
            let why = if not_allowed.len() == group.len() {
                "not in env_allow"
            } else {
                "in env_allow but not set in the runner's environment"
            };
            out.missing
                .push(format!("preset {:?}: {names} {why}", p.name()));
        }
        // Cluster access never comes from the runner's environment: each
        // agent gets a kubeconfig for the runner's read-only proxy.
        if self.clusters.is_none() {
            out.info.push(format!(
                "preset {:?}: no [[cluster]] entries: agents will have no cluster access",
                p.name()
            ));
        }
        out
    }
}

/// `<bin> --version`, first line, run with a throwaway HOME (under `tmpdir`,
/// the runner's TMPDIR) and a deadline.
fn cli_version(bin: &Path, path: &str, tmpdir: Option<String>) -> Result<String, String> {
    use std::process::{Command, Stdio};
    let tmpdir = tmpdir
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "/tmp".into());
    let home = Path::new(&tmpdir).join(format!("runner-validate-{}", std::process::id()));
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let res = (|| {
        let mut child = Command::new(bin)
            .arg("--version")
            .env_clear()
            .env("PATH", path)
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                break;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("`--version` did not answer within 20 s".to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut s = String::new();
        use std::io::Read;
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut s);
        }
        Ok(s.lines().next().unwrap_or("").trim().to_string())
    })();
    let _ = std::fs::remove_dir_all(&home);
    res
}
