//! Built-in sinks, one folder per kind, and the `[[sink]]` family.
//!
//! Two roles: the *event sink* (`agent`) handles each event and decides its
//! outcome, exactly one per pipeline; *notifier sinks* (`slack`) hear what
//! the event sink did (see [`notice`]), any number.

pub mod agent;
pub mod notice;
pub mod slack;

use std::sync::Arc;

use runner_core::Sink;
use runner_core::config::ConfigErrors;

use crate::component::BuildContext;
use notice::Notify;

/// What a `[[sink]]` table builds.
pub(crate) enum SinkComponent {
    /// Handles events (exactly one per pipeline).
    Events(Arc<dyn Sink>),
    /// Hears about the event sink's work.
    Notifier(Arc<dyn Notify>),
}

impl From<Arc<dyn Sink>> for SinkComponent {
    fn from(s: Arc<dyn Sink>) -> Self {
        SinkComponent::Events(s)
    }
}

impl From<Arc<dyn Notify>> for SinkComponent {
    fn from(n: Arc<dyn Notify>) -> Self {
        SinkComponent::Notifier(n)
    }
}

crate::component_family! {
    /// A `[[sink]]` table, by `kind`.
    // Read once at startup, a handful per pipeline: the agent's larger
    // settings (sandbox paths) cost nothing worth a Box.
    #[allow(clippy::large_enum_variant)]
    pub(crate) enum SinkConfig -> SinkComponent {
        Agent(agent::AgentSinkConfig),
        Slack(slack::SlackSinkConfig),
    }
}

/// The built sinks of a pipeline.
pub(crate) struct Sinks {
    /// The event sink.
    pub events: Arc<dyn Sink>,
    /// Names of the notifier sinks, in file order (for `runner validate`).
    pub notifiers: Vec<String>,
}

/// Applies the family's rules to the read `[[sink]]` tables (`prefix`,
/// config) and builds them: exactly one event sink; the agent sink's
/// `slack_webhook_env` (a `[sink]` of earlier versions) becomes a Slack
/// sink when no `kind = "slack"` table is declared. Errors go to `errors`;
/// `None` when any was found.
pub(crate) fn assemble(
    mut read: Vec<(String, SinkConfig)>,
    cx: &BuildContext,
    errors: &mut ConfigErrors,
) -> Option<Sinks> {
    let before = errors.len();
    let declared_slack = read.iter().any(|(_, c)| matches!(c, SinkConfig::Slack(_)));
    let mut implicit = Vec::new();
    for (prefix, c) in &read {
        let SinkConfig::Agent(a) = c else { continue };
        if declared_slack {
            if a.slack_webhook_env != crate::settings::SLACK_WEBHOOK_URL.env {
                errors.push(
                    format!("{prefix}.slack_webhook_env"),
                    format!("{:?}", a.slack_webhook_env),
                    "nothing: with a [[sink]] kind = \"slack\", set its `webhook_env` instead",
                );
            }
        } else if let Some(url) = &a.slack_webhook {
            implicit.push((
                prefix.clone(),
                slack::SlackSinkConfig {
                    webhook_env: a.slack_webhook_env.clone(),
                    webhook: url.clone(),
                    options: a.slack.clone(),
                },
            ));
        }
    }
    let agents = read
        .iter()
        .filter(|(_, c)| matches!(c, SinkConfig::Agent(_)))
        .count();
    if agents != 1 {
        errors.push(
            "sink",
            format!("{agents} event sinks"),
            "exactly one [[sink]] with kind = \"agent\" (plus any number of kind = \"slack\")",
        );
    }
    if errors.len() > before {
        return None;
    }

    let mut notifiers: Vec<Arc<dyn Notify>> = Vec::new();
    for (prefix, c) in implicit {
        // As before sinks were tables of their own: a client that cannot
        // be built disables Slack instead of stopping the runner.
        match slack::SlackSink::new(&c.webhook, c.options.clone()) {
            Ok(s) => notifiers.push(Arc::new(s)),
            Err(e) => {
                tracing::error!(sink = %prefix, webhook = %runner_core::config::mask(&c.webhook), error = %e, "slack disabled: cannot build the HTTP client")
            }
        }
    }
    let mut events = None;
    for (prefix, c) in read.drain(..) {
        match c.build(cx) {
            Ok(SinkComponent::Events(s)) => events = Some(s),
            Ok(SinkComponent::Notifier(n)) => notifiers.push(n),
            Err(e) => e.push_to(&prefix, errors),
        }
    }
    let names = notifiers.iter().map(|n| n.name().to_string()).collect();
    cx.notices.set(notifiers);
    if errors.len() > before {
        return None;
    }
    Some(Sinks {
        events: events?,
        notifiers: names,
    })
}
