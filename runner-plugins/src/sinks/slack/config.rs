//! `[[sink]] kind = "slack"`: reading the table, and the notifier it builds.

use std::sync::Arc;

use async_trait::async_trait;
use runner_core::config::{TableReader, mask};

use super::{Notifier, SlackOptions, Transport, Webhook};
use crate::component::{BuildContext, ComponentConfig, KeyError, ReadContext};
use crate::settings as env;
use crate::sinks::agent::config::is_env_name;
use crate::sinks::notice::{Notice, Notify};

/// A validated Slack sink.
#[derive(Clone)]
pub(crate) struct SlackSinkConfig {
    /// Name of the variable holding the webhook (for messages only).
    pub webhook_env: String,
    /// The webhook itself, read from the environment; never logged unmasked.
    pub webhook: String,
    pub options: SlackOptions,
}

impl std::fmt::Debug for SlackSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackSinkConfig")
            .field("webhook_env", &self.webhook_env)
            .field("webhook", &mask(&self.webhook))
            .field("options", &self.options)
            .finish()
    }
}

fn webhook_env_of(table: &toml::Table) -> String {
    match table.get("webhook_env") {
        Some(toml::Value::String(name)) => name.clone(),
        _ => env::SLACK_WEBHOOK_URL.env.to_string(),
    }
}

impl ComponentConfig for SlackSinkConfig {
    const KIND: &'static str = "slack";
    type Built = Arc<dyn Notify>;

    fn read(r: &mut TableReader<'_>, _cx: &ReadContext<'_>) -> Option<Self> {
        let before = r.errors().len();
        let webhook_env: String = r.opt_or("webhook_env", env::SLACK_WEBHOOK_URL.env.to_string());
        if !is_env_name(&webhook_env) {
            r.error(
                "webhook_env",
                format!("{webhook_env:?}"),
                "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
            );
            return None;
        }
        // The secret comes from the environment only, never from a flag or
        // the file. A declared Slack sink without its webhook is a mistake.
        let webhook = r
            .env_var(&webhook_env)
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        match &webhook {
            None => r.error(
                "webhook_env",
                format!("{webhook_env:?} (not set)"),
                "the name of a set, non-empty environment variable holding the webhook URL",
            ),
            Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) => r.error(
                &format!("webhook_env ({webhook_env})"),
                mask(url),
                "an http(s) URL",
            ),
            Some(_) => {}
        }
        if r.errors().len() > before {
            return None;
        }
        Some(SlackSinkConfig {
            webhook_env,
            webhook: webhook?,
            options: SlackOptions::default(),
        })
    }

    fn build(&self, _cx: &BuildContext) -> Result<Arc<dyn Notify>, KeyError> {
        SlackSink::new(&self.webhook, self.options.clone())
            .map(|s| Arc::new(s) as Arc<dyn Notify>)
            .map_err(|e| {
                KeyError::new(
                    "webhook_env",
                    format!("{:?}", self.webhook_env),
                    format!("a webhook the HTTP client accepts ({e})"),
                )
            })
    }

    /// The webhook is a secret: agents must never get it.
    fn secret_envs(table: &toml::Table) -> Vec<String> {
        vec![webhook_env_of(table)]
    }
}

/// The Slack notifier: each notice becomes one Block Kit message, queued
/// for the delivery task.
pub struct SlackSink {
    notifier: Notifier,
}

impl SlackSink {
    /// A notifier posting to the webhook `url`.
    pub fn new(url: &str, opts: SlackOptions) -> Result<SlackSink, String> {
        let webhook = Webhook::new(url.to_string(), opts.request_timeout)?;
        Ok(SlackSink::with_transport(
            Arc::new(webhook),
            opts,
            mask(url),
        ))
    }

    /// A notifier over any transport; `masked` is the webhook as it may
    /// appear in logs.
    pub(crate) fn with_transport(
        transport: Arc<dyn Transport>,
        opts: SlackOptions,
        masked: String,
    ) -> SlackSink {
        SlackSink {
            notifier: Notifier::new(transport, opts, masked),
        }
    }
}

#[async_trait]
impl Notify for SlackSink {
    fn name(&self) -> &str {
        "slack"
    }

    fn notify(&self, notice: &Notice<'_>) {
        let (label, body) = match *notice {
            Notice::Incident {
                doc,
                root_cause,
                report,
            } => (
                format!("incident {}", doc.id),
                super::incident_message(doc, root_cause, report),
            ),
            Notice::Degraded {
                consecutive,
                last_reason,
            } => (
                "agents degraded".to_string(),
                super::degraded_message(consecutive, last_reason),
            ),
            Notice::Recovered { failures } => (
                "agents recovered".to_string(),
                super::recovered_message(failures),
            ),
        };
        self.notifier.send(label, body);
    }

    async fn close(&self) {
        self.notifier.close().await;
    }
}
