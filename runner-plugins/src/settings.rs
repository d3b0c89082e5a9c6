//! The registry of every setting that has an environment variable (and,
//! unless secret, a flag): the one place each one's name, variable, flag,
//! `pipeline.toml` key, default and meaning are written. The readers
//! (`TableReader::setting`), the command-line flags and
//! `docs/configuration.md` (`runner config-reference`) all come from it; a
//! test checks that the document did not drift and that every setting is
//! read with its registry default.

pub use runner_core::config::Setting;

/// Declares each setting as a constant named after its environment
/// variable, and [`SETTINGS`], every one in the reference's order.
macro_rules! settings {
    ($( $name:ident = $make:ident( $($arg:expr),+ $(,)? ); )+) => {
        $( pub(crate) const $name: Setting = Setting::$make(stringify!($name), $($arg),+); )+

        /// Every setting, in the order of the reference.
        pub const SETTINGS: &[Setting] = &[$($name),+];
    };
}

/// The value of [`WASM_CACHE_DIR`] that means the user's cache directory.
pub(crate) const WASM_CACHE_DIR_DEFAULT: &str = "default";

settings! {
    K8S_CLUSTER_MCP_ENDPOINT = absent(
        "mcp-endpoint",
        "source.endpoint",
        "required",
        "MCP Streamable HTTP endpoint of the events server, e.g. http://127.0.0.1:8080/mcp. With several `[[source]]` entries, set it in the file instead."
    );
    MCP_TOKEN = secret(
        "source.token_env",
        "Bearer token for the MCP server (masked in logs)."
    );
    MCP_TOKEN_FILE = absent(
        "mcp-token-file",
        "source.token_file",
        "unset",
        "File holding the bearer token (read at startup)."
    );
    MCP_SUBSCRIBE_MODE = value(
        "mcp-mode",
        "source.mode",
        "faults",
        "events_subscribe mode: faults, events, or resource-faults (older servers)."
    );
    RECONNECT_INITIAL_SECONDS = value(
        "reconnect-initial",
        "source.reconnect_initial_seconds",
        "1",
        "First reconnect delay; doubles per attempt that gets no subscription, ±10 % jitter; every session that subscribed restarts it."
    );
    RECONNECT_MAX_SECONDS = value(
        "reconnect-max",
        "source.reconnect_max_seconds",
        "60",
        "Upper bound of the reconnect delay."
    );
    PING_INTERVAL_SECONDS = value(
        "ping-interval",
        "source.ping_interval_seconds",
        "30",
        "Interval of MCP pings that prove the session is alive."
    );
    SUBSCRIPTION_CHECK_SECONDS = value(
        "subscription-check-interval",
        "source.subscription_check_seconds",
        "60",
        "Interval of events_list_subscriptions checks that detect a silently cancelled subscription."
    );
    SUBSCRIBE_TIMEOUT_SECONDS = value(
        "subscribe-timeout",
        "source.subscribe_timeout_seconds",
        "30",
        "Timeout of the events_subscribe call (the server can hang on it)."
    );
    REQUEST_TIMEOUT_SECONDS = value(
        "request-timeout",
        "source.request_timeout_seconds",
        "10",
        "Timeout of every other MCP request (initialize, setLevel, ping, list)."
    );
    SEVERITY_THRESHOLD = value(
        "severity-threshold",
        "stage.severity.threshold",
        "ERROR",
        "Events below this severity are filtered: DEBUG, INFO, WARNING, ERROR, CRITICAL."
    );
    DEDUP_WINDOW_SECONDS = value(
        "dedup-window",
        "stage.dedup.window_seconds",
        "300",
        "Events with a key seen within this window (or still queued/running) are duplicates."
    );
    DEDUP_MAX_KEYS = value(
        "dedup-max-keys",
        "stage.dedup.max_keys",
        "100000",
        "Bound of the dedup table; the oldest keys are evicted (counted)."
    );
    GROUP_WAIT_SECONDS = value(
        "group-wait",
        "stage.group.group_wait_seconds",
        "10",
        "An incident's agent starts no earlier than this after its first event, so a burst of its group is collected first (0 to 3600)."
    );
    GROUP_INTERVAL_SECONDS = value(
        "group-interval",
        "stage.group.group_interval_seconds",
        "300",
        "After an incident ended, events of its group attach to it as recurrences for this long; later ones open a new incident."
    );
    MAX_CONCURRENT_AGENTS = value(
        "max-concurrent-agents",
        "router.max_concurrent_agents",
        "5",
        "Global cap on running agents (1 to 4096)."
    );
    GLOBAL_QUEUE_SIZE = value(
        "global-queue-size",
        "router.global_queue_size",
        "100",
        "Bound on events waiting across all clusters (1 to 1000000)."
    );
    CLUSTER_QUEUE_SIZE = value(
        "cluster-queue-size",
        "router.cluster_queue_size",
        "10",
        "Bound on events waiting per cluster (1 to 1000000)."
    );
    QUEUE_OVERFLOW_POLICY = value(
        "queue-overflow-policy",
        "router.overflow_policy",
        "drop",
        "drop: remove the oldest queued event; reject: refuse the newest."
    );
    IDLE_WORKER_SECONDS = value(
        "idle-worker",
        "router.idle_worker_seconds",
        "60",
        "An idle cluster worker is reaped after this long."
    );
    INTAKE_QUEUE_SIZE = value(
        "intake-queue-size",
        "settings.intake_queue_size",
        "1024",
        "Bound of the queue between sources and stages (1 to 1000000); a full queue rejects new payloads."
    );
    MAX_PAYLOAD_BYTES = value(
        "max-payload-bytes",
        "settings.max_payload_bytes",
        "1048576",
        "Largest payload (compact JSON bytes) accepted; a larger one is `invalid` with its size in the reason. Also bounds `runner replay` lines and WASM replacements (1024 to 268435456)."
    );
    PAYLOAD_BUDGET_BYTES = value(
        "payload-budget-bytes",
        "settings.payload_budget_bytes",
        "268435456",
        "Bound of the payload bytes held by events in flight (intake queue, stages, router queues, running agents); a payload that does not fit is `rejected` (1 MiB to 64 GiB, at least MAX_PAYLOAD_BYTES)."
    );
    AGENT_COMMAND = absent(
        "agent-command",
        "sink.command_line",
        "preset",
        "Command line run with sh -c in the incident workspace; overrides the sink's preset/command."
    );
    AGENT_TIMEOUT = value(
        "agent-timeout",
        "sink.timeout_seconds",
        "300",
        "Seconds before an agent's process group is terminated."
    );
    AGENT_MODEL = value(
        "agent-model",
        "sink.model",
        "sonnet",
        "Model name passed to the agent CLI."
    );
    AGENT_KILL_GRACE = value(
        "agent-kill-grace",
        "sink.kill_grace_seconds",
        "10",
        "Seconds between SIGTERM and SIGKILL of a timed-out agent's process group."
    );
    AGENT_ENV_ALLOW = value(
        "agent-env-allow",
        "sink.env_allow",
        "",
        "Comma-separated extra environment variables passed to agents (besides PATH, HOME, LANG); the runner's secrets are refused."
    );
    AGENT_FAILURE_ALERT_THRESHOLD = value(
        "agent-failure-alert-threshold",
        "sink.failure_alert_threshold",
        "3",
        "Consecutive agent failures before one Slack \"agents degraded\" message (min 1)."
    );
    AGENT_SANDBOX = value(
        "agent-sandbox",
        "sink.sandbox",
        "enforce",
        "Kernel sandbox (Landlock) for agents: enforce (agents refused where the kernel lacks it) or off (logged at every start)."
    );
    WORKSPACE_ROOT = value(
        "workspace-root",
        "sink.workspace_root",
        "./incidents",
        "Directory of the incident workspaces."
    );
    WASM_CACHE_DIR = value(
        "wasm-cache-dir",
        "settings.wasm_cache_dir",
        "default",
        "Compiled WASM plugins kept between runs: default ($XDG_CACHE_HOME/event-runner/wasm, else ~/.cache/event-runner/wasm), a directory, or off."
    );
    SHUTDOWN_TIMEOUT_SECONDS = value(
        "shutdown-timeout",
        "settings.shutdown_timeout_seconds",
        "30",
        "Grace period for running agents after SIGTERM/SIGINT."
    );
    WORKSPACE_RETENTION_DAYS = value(
        "workspace-retention-days",
        "sink.retention_days",
        "30",
        "Incident workspaces older than this are deleted (checked at startup and every 10 minutes; recorded in the log and the state store); 0 keeps them forever."
    );
    WORKSPACE_MAX_BYTES = value(
        "workspace-max-bytes",
        "sink.retention_max_bytes",
        "10737418240",
        "Bound of the total size of the incident workspaces: the oldest finished ones are deleted beyond it; 0 means no bound."
    );
    AGENT_LOG_MAX_BYTES = value(
        "agent-log-max-bytes",
        "sink.log_max_bytes",
        "10485760",
        "Cap of each agent's stdout and stderr log; output beyond it is discarded (the log says so). 4096 to 1073741824."
    );
    STATE_DIR = value(
        "state-dir",
        "settings.state_dir",
        "<WORKSPACE_ROOT>/../state",
        "Directory of the durable state (SQLite: incidents, dedup keys, the queue, daily budgets, counters), so a restart neither forgets nor repeats. Default: `state` next to the workspace root. `off` runs without it (queued events are then abandoned at shutdown)."
    );
    STATE_RERUN_INTERRUPTED = value(
        "state-rerun-interrupted",
        "settings.rerun_interrupted",
        "1",
        "How often an incident whose agent was interrupted (runner killed, or agent killed at shutdown) is run again after the restart (0 to 10); after that it ends `abandoned`."
    );
    STATE_HISTORY_DAYS = value(
        "state-history-days",
        "settings.state_history_days",
        "90",
        "Incidents older than this are deleted from the state store (1 to 3650)."
    );
    SLACK_WEBHOOK_URL = secret(
        "sink.slack_webhook_env",
        "Slack incoming webhook; unset disables Slack (masked in logs, never passed to agents)."
    );
    LOG_LEVEL = value(
        "log-level",
        "settings.log_level",
        "info",
        "debug, info, warn, error."
    );
    LOG_FORMAT = value(
        "log-format",
        "settings.log_format",
        "text",
        "text (for humans) or json."
    );
    ADMIN_LISTEN = value(
        "admin-listen",
        "server.listen",
        "127.0.0.1:9469",
        "Admin HTTP server (health, readiness, metrics, incidents page): IP:port, or off. A non-loopback address requires a token."
    );
    ADMIN_TOKEN = secret(
        "server.token_env",
        "Bearer token the admin server requires (min 16 characters; masked in logs, never passed to agents)."
    );
    ADMIN_TOKEN_FILE = absent(
        "admin-token-file",
        "server.token_file",
        "unset",
        "File holding the admin server's token (wins over ADMIN_TOKEN)."
    );
    ADMIN_PUBLIC_URL = absent(
        "admin-public-url",
        "server.public_url",
        "unset",
        "URL under which users reach the admin server (e.g. https://runner.example.com); Slack messages then link to the incident's page."
    );
    READY_SOURCE_DOWN_SECONDS = value(
        "ready-source-down",
        "server.ready_source_down_seconds",
        "30",
        "/readyz fails when a source has been without a subscription for longer than this."
    );
    METRICS_CLUSTER_LABELS = value(
        "metrics-cluster-labels",
        "server.metrics_cluster_labels",
        "50",
        "The first N clusters seen get their own `cluster` label value in metrics; later ones are counted as `other` (min 1)."
    );
}

/// Markdown table of [`SETTINGS`] (the generated part of docs/configuration.md).
pub(crate) fn reference_table() -> String {
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
            s.env,
            flag,
            s.key,
            s.default_text(),
            s.doc
        ));
    }
    out
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

    /// The readers take each setting's key, variable and default from the
    /// registry: compiling a pipeline that sets nothing shows every setting
    /// in the effective configuration, at its registry default.
    #[test]
    fn every_setting_is_read_with_its_registry_default() {
        use crate::app::compile::{CompileOptions, compile};
        use runner_core::config::{Fallback, Origin, Overrides};
        let text = "[[source]]\nkind = \"mcp\"\n\n[[stage]]\nkind = \"severity\"\n\n\
                    [[stage]]\nkind = \"dedup\"\n\n[[stage]]\nkind = \"group\"\n\n[[sink]]\nkind = \"agent\"\ncommand = [\"true\"]\n";
        // The endpoint is required: an error naming it, and nothing else.
        let Err(errs) = compile(text, &Overrides::new(), &CompileOptions::default()) else {
            panic!("compiled without an endpoint")
        };
        assert_eq!(errs.len(), 1, "{errs}");
        assert_eq!(errs.0[0].key, "source[0].endpoint");
        let text = text.replace(
            "kind = \"mcp\"\n",
            "kind = \"mcp\"\nendpoint = \"http://127.0.0.1:1/mcp\"\n",
        );
        let c = compile(&text, &Overrides::new(), &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        // `sink[0].model` and `stage[1].window_seconds` as the registry
        // writes them: `sink.model`, `stage.window_seconds`.
        let plain = |k: &str| {
            let mut out = String::new();
            let mut skip = false;
            for ch in k.chars() {
                match ch {
                    '[' => skip = true,
                    ']' => skip = false,
                    _ if !skip => out.push(ch),
                    _ => {}
                }
            }
            out
        };
        for s in SETTINGS {
            let key = match s.key.split('.').collect::<Vec<_>>()[..] {
                ["stage", _, k] => format!("stage.{k}"),
                _ => s.key.to_string(),
            };
            let e = c
                .effective
                .iter()
                .find(|e| plain(&e.key) == key)
                .unwrap_or_else(|| {
                    panic!(
                        "{} ({}) is not in the effective configuration",
                        s.env, s.key
                    )
                });
            if s.key == "source.endpoint" {
                continue;
            }
            assert_eq!(e.origin, Origin::Default, "{}", s.env);
            if let (false, Fallback::Value(v)) = (s.secret, s.default) {
                let expected = if v.is_empty() { "[]" } else { v };
                assert_eq!(e.value.trim_matches('"'), expected, "{}", s.env);
            }
        }
    }

    #[test]
    fn constants_outside_the_registry_agree_with_it() {
        assert_eq!(
            MAX_PAYLOAD_BYTES.default_value::<usize>(),
            runner_core::event::DEFAULT_MAX_PAYLOAD_BYTES
        );
        assert_eq!(
            METRICS_CLUSTER_LABELS.default_value::<usize>(),
            runner_core::status::DEFAULT_CLUSTER_LABELS
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
