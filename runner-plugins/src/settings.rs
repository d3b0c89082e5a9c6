//! The registry of every setting that has an environment variable (and a
//! flag). `docs/configuration.md` is generated from this table
//! (`runner config-reference`) and a test checks that it did not drift.

/// One layered setting: `flag` > `env` > `pipeline.toml` `key` > `default`.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub env: &'static str,
    /// Long flag without dashes, or "" when secret (secrets never come from flags).
    pub flag: &'static str,
    /// Where it lives in `pipeline.toml`.
    pub key: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
    pub secret: bool,
}

macro_rules! s {
    ($env:literal, $flag:literal, $key:literal, $default:literal, $doc:literal) => {
        Setting {
            env: $env,
            flag: $flag,
            key: $key,
            default: $default,
            doc: $doc,
            secret: false,
        }
    };
    (secret $env:literal, $key:literal, $doc:literal) => {
        Setting {
            env: $env,
            flag: "",
            key: $key,
            default: "unset",
            doc: $doc,
            secret: true,
        }
    };
}

pub const K8S_CLUSTER_MCP_ENDPOINT: &str = "K8S_CLUSTER_MCP_ENDPOINT";
pub const MCP_TOKEN: &str = "MCP_TOKEN";
pub const MCP_TOKEN_FILE: &str = "MCP_TOKEN_FILE";
pub const MCP_SUBSCRIBE_MODE: &str = "MCP_SUBSCRIBE_MODE";
pub const RECONNECT_INITIAL_SECONDS: &str = "RECONNECT_INITIAL_SECONDS";
pub const RECONNECT_MAX_SECONDS: &str = "RECONNECT_MAX_SECONDS";
pub const PING_INTERVAL_SECONDS: &str = "PING_INTERVAL_SECONDS";
pub const SUBSCRIPTION_CHECK_SECONDS: &str = "SUBSCRIPTION_CHECK_SECONDS";
pub const SUBSCRIBE_TIMEOUT_SECONDS: &str = "SUBSCRIBE_TIMEOUT_SECONDS";
pub const REQUEST_TIMEOUT_SECONDS: &str = "REQUEST_TIMEOUT_SECONDS";
pub const SEVERITY_THRESHOLD: &str = "SEVERITY_THRESHOLD";
pub const DEDUP_WINDOW_SECONDS: &str = "DEDUP_WINDOW_SECONDS";
pub const DEDUP_MAX_KEYS: &str = "DEDUP_MAX_KEYS";
pub const MAX_CONCURRENT_AGENTS: &str = "MAX_CONCURRENT_AGENTS";
pub const GLOBAL_QUEUE_SIZE: &str = "GLOBAL_QUEUE_SIZE";
pub const CLUSTER_QUEUE_SIZE: &str = "CLUSTER_QUEUE_SIZE";
pub const QUEUE_OVERFLOW_POLICY: &str = "QUEUE_OVERFLOW_POLICY";
pub const IDLE_WORKER_SECONDS: &str = "IDLE_WORKER_SECONDS";
pub const INTAKE_QUEUE_SIZE: &str = "INTAKE_QUEUE_SIZE";
pub const MAX_PAYLOAD_BYTES: &str = "MAX_PAYLOAD_BYTES";
pub const PAYLOAD_BUDGET_BYTES: &str = "PAYLOAD_BUDGET_BYTES";
pub const AGENT_COMMAND: &str = "AGENT_COMMAND";
pub const AGENT_TIMEOUT: &str = "AGENT_TIMEOUT";
pub const AGENT_MODEL: &str = "AGENT_MODEL";
pub const AGENT_KILL_GRACE: &str = "AGENT_KILL_GRACE";
pub const AGENT_ENV_ALLOW: &str = "AGENT_ENV_ALLOW";
pub const AGENT_FAILURE_ALERT_THRESHOLD: &str = "AGENT_FAILURE_ALERT_THRESHOLD";
pub const AGENT_SANDBOX: &str = "AGENT_SANDBOX";
pub const WORKSPACE_ROOT: &str = "WORKSPACE_ROOT";
pub const SHUTDOWN_TIMEOUT_SECONDS: &str = "SHUTDOWN_TIMEOUT_SECONDS";
pub const SLACK_WEBHOOK_URL: &str = "SLACK_WEBHOOK_URL";
pub const LOG_LEVEL: &str = "LOG_LEVEL";
pub const LOG_FORMAT: &str = "LOG_FORMAT";
pub const ADMIN_LISTEN: &str = "ADMIN_LISTEN";
pub const ADMIN_TOKEN: &str = "ADMIN_TOKEN";
pub const ADMIN_TOKEN_FILE: &str = "ADMIN_TOKEN_FILE";
pub const ADMIN_PUBLIC_URL: &str = "ADMIN_PUBLIC_URL";
pub const READY_SOURCE_DOWN_SECONDS: &str = "READY_SOURCE_DOWN_SECONDS";
pub const METRICS_CLUSTER_LABELS: &str = "METRICS_CLUSTER_LABELS";

pub const SETTINGS: &[Setting] = &[
    s!(
        "K8S_CLUSTER_MCP_ENDPOINT",
        "mcp-endpoint",
        "source.endpoint",
        "required",
        "MCP Streamable HTTP endpoint of the events server, e.g. http://127.0.0.1:8080/mcp. With several `[[source]]` entries, set it in the file instead."
    ),
    s!(secret "MCP_TOKEN", "source.token_env", "Bearer token for the MCP server (masked in logs)."),
    s!(
        "MCP_TOKEN_FILE",
        "mcp-token-file",
        "source.token_file",
        "unset",
        "File holding the bearer token (read at startup)."
    ),
    s!(
        "MCP_SUBSCRIBE_MODE",
        "mcp-mode",
        "source.mode",
        "faults",
        "events_subscribe mode: faults, events, or resource-faults (older servers)."
    ),
    s!(
        "RECONNECT_INITIAL_SECONDS",
        "reconnect-initial",
        "source.reconnect_initial_seconds",
        "1",
        "First reconnect delay; doubles per attempt that gets no subscription, ±10 % jitter; every session that subscribed restarts it."
    ),
    s!(
        "RECONNECT_MAX_SECONDS",
        "reconnect-max",
        "source.reconnect_max_seconds",
        "60",
        "Upper bound of the reconnect delay."
    ),
    s!(
        "PING_INTERVAL_SECONDS",
        "ping-interval",
        "source.ping_interval_seconds",
        "30",
        "Interval of MCP pings that prove the session is alive."
    ),
    s!(
        "SUBSCRIPTION_CHECK_SECONDS",
        "subscription-check-interval",
        "source.subscription_check_seconds",
        "60",
        "Interval of events_list_subscriptions checks that detect a silently cancelled subscription."
    ),
    s!(
        "SUBSCRIBE_TIMEOUT_SECONDS",
        "subscribe-timeout",
        "source.subscribe_timeout_seconds",
        "30",
        "Timeout of the events_subscribe call (the server can hang on it)."
    ),
    s!(
        "REQUEST_TIMEOUT_SECONDS",
        "request-timeout",
        "source.request_timeout_seconds",
        "10",
        "Timeout of every other MCP request (initialize, setLevel, ping, list)."
    ),
    s!(
        "SEVERITY_THRESHOLD",
        "severity-threshold",
        "stage.severity.threshold",
        "ERROR",
        "Events below this severity are filtered: DEBUG, INFO, WARNING, ERROR, CRITICAL."
    ),
    s!(
        "DEDUP_WINDOW_SECONDS",
        "dedup-window",
        "stage.dedup.window_seconds",
        "300",
        "Events with a key seen within this window (or still queued/running) are duplicates."
    ),
    s!(
        "DEDUP_MAX_KEYS",
        "dedup-max-keys",
        "stage.dedup.max_keys",
        "100000",
        "Bound of the dedup table; the oldest keys are evicted (counted)."
    ),
    s!(
        "MAX_CONCURRENT_AGENTS",
        "max-concurrent-agents",
        "router.max_concurrent_agents",
        "5",
        "Global cap on running agents (1 to 4096)."
    ),
    s!(
        "GLOBAL_QUEUE_SIZE",
        "global-queue-size",
        "router.global_queue_size",
        "100",
        "Bound on events waiting across all clusters (1 to 1000000)."
    ),
    s!(
        "CLUSTER_QUEUE_SIZE",
        "cluster-queue-size",
        "router.cluster_queue_size",
        "10",
        "Bound on events waiting per cluster (1 to 1000000)."
    ),
    s!(
        "QUEUE_OVERFLOW_POLICY",
        "queue-overflow-policy",
        "router.overflow_policy",
        "drop",
        "drop: remove the oldest queued event; reject: refuse the newest."
    ),
    s!(
        "IDLE_WORKER_SECONDS",
        "idle-worker",
        "router.idle_worker_seconds",
        "60",
        "An idle cluster worker is reaped after this long."
    ),
    s!(
        "INTAKE_QUEUE_SIZE",
        "intake-queue-size",
        "settings.intake_queue_size",
        "1024",
        "Bound of the queue between sources and stages (1 to 1000000); a full queue rejects new payloads."
    ),
    s!(
        "MAX_PAYLOAD_BYTES",
        "max-payload-bytes",
        "settings.max_payload_bytes",
        "1048576",
        "Largest payload (compact JSON bytes) accepted; a larger one is `invalid` with its size in the reason. Also bounds `runner replay` lines and WASM replacements (1024 to 268435456)."
    ),
    s!(
        "PAYLOAD_BUDGET_BYTES",
        "payload-budget-bytes",
        "settings.payload_budget_bytes",
        "268435456",
        "Bound of the payload bytes held by events in flight (intake queue, stages, router queues, running agents); a payload that does not fit is `rejected` (1 MiB to 64 GiB, at least MAX_PAYLOAD_BYTES)."
    ),
    s!(
        "AGENT_COMMAND",
        "agent-command",
        "sink.command_line",
        "preset",
        "Command line run with sh -c in the incident workspace; overrides the sink's preset/command."
    ),
    s!(
        "AGENT_TIMEOUT",
        "agent-timeout",
        "sink.timeout_seconds",
        "300",
        "Seconds before an agent's process group is terminated."
    ),
    s!(
        "AGENT_MODEL",
        "agent-model",
        "sink.model",
        "sonnet",
        "Model name passed to the agent CLI."
    ),
    s!(
        "AGENT_KILL_GRACE",
        "agent-kill-grace",
        "sink.kill_grace_seconds",
        "10",
        "Seconds between SIGTERM and SIGKILL of a timed-out agent's process group."
    ),
    s!(
        "AGENT_ENV_ALLOW",
        "agent-env-allow",
        "sink.env_allow",
        "none",
        "Comma-separated extra environment variables passed to agents (besides PATH, HOME, LANG); the runner's secrets are refused."
    ),
    s!(
        "AGENT_FAILURE_ALERT_THRESHOLD",
        "agent-failure-alert-threshold",
        "sink.failure_alert_threshold",
        "3",
        "Consecutive agent failures before one Slack \"agents degraded\" message (min 1)."
    ),
    s!(
        "AGENT_SANDBOX",
        "agent-sandbox",
        "sink.sandbox",
        "enforce",
        "Kernel sandbox (Landlock) for agents: enforce (agents refused where the kernel lacks it) or off (logged at every start)."
    ),
    s!(
        "WORKSPACE_ROOT",
        "workspace-root",
        "sink.workspace_root",
        "./incidents",
        "Directory of the incident workspaces."
    ),
    s!(
        "SHUTDOWN_TIMEOUT_SECONDS",
        "shutdown-timeout",
        "settings.shutdown_timeout_seconds",
        "30",
        "Grace period for running agents after SIGTERM/SIGINT."
    ),
    s!(secret "SLACK_WEBHOOK_URL", "sink.slack_webhook_env", "Slack incoming webhook; unset disables Slack (masked in logs, never passed to agents)."),
    s!(
        "LOG_LEVEL",
        "log-level",
        "settings.log_level",
        "info",
        "debug, info, warn, error."
    ),
    s!(
        "LOG_FORMAT",
        "log-format",
        "settings.log_format",
        "text",
        "text (for humans) or json."
    ),
    s!(
        "ADMIN_LISTEN",
        "admin-listen",
        "server.listen",
        "127.0.0.1:9469",
        "Admin HTTP server (health, readiness, metrics, incidents page): IP:port, or off. A non-loopback address requires a token."
    ),
    s!(secret "ADMIN_TOKEN", "server.token_env", "Bearer token the admin server requires (min 16 characters; masked in logs, never passed to agents)."),
    s!(
        "ADMIN_TOKEN_FILE",
        "admin-token-file",
        "server.token_file",
        "unset",
        "File holding the admin server's token (wins over ADMIN_TOKEN)."
    ),
    s!(
        "ADMIN_PUBLIC_URL",
        "admin-public-url",
        "server.public_url",
        "unset",
        "URL under which users reach the admin server (e.g. https://runner.example.com); Slack messages then link to the incident's page."
    ),
    s!(
        "READY_SOURCE_DOWN_SECONDS",
        "ready-source-down",
        "server.ready_source_down_seconds",
        "30",
        "/readyz fails when a source has been without a subscription for longer than this."
    ),
    s!(
        "METRICS_CLUSTER_LABELS",
        "metrics-cluster-labels",
        "server.metrics_cluster_labels",
        "50",
        "The first N clusters seen get their own `cluster` label value in metrics; later ones are counted as `other` (min 1)."
    ),
];

/// Markdown table of [`SETTINGS`] (the generated part of docs/configuration.md).
pub fn reference_table() -> String {
    let mut out = String::from(
        "| variable | flag | pipeline.toml key | default | meaning |\n| --- | --- | --- | --- | --- |\n",
    );
    for s in SETTINGS {
        let flag = if s.flag.is_empty() {
            "(env only, secret)".to_string()
        } else {
            format!("`--{}`", s.flag)
        };
        out.push_str(&format!(
            "| `{}` | {} | `{}` | `{}` | {} |\n",
            s.env, flag, s.key, s.default, s.doc
        ));
    }
    out
}

pub fn find(env: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.env == env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_configuration_md_matches_the_registry() {
        let doc = include_str!("../../docs/configuration.md");
        let begin = "<!-- BEGIN GENERATED: runner config-reference -->\n";
        let start = doc.find(begin).expect("begin marker") + begin.len();
        let end = doc.find("<!-- END GENERATED -->").expect("end marker");
        assert_eq!(
            &doc[start..end],
            reference_table(),
            "docs/configuration.md drifted: regenerate with `runner config-reference`"
        );
    }

    #[test]
    fn env_names_are_unique() {
        let mut names: Vec<_> = SETTINGS.iter().map(|s| s.env).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
    }
}
