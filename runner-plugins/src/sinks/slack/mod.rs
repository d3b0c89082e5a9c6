//! `[[sink]] kind = "slack"`: Slack incoming-webhook notifications of what
//! other sinks report (finished incidents, agents degraded and recovered).
//! Off the hot path: a notice only
//! `try_send`s into a bounded queue; one background task delivers with
//! bounded retries (429 honours `Retry-After`, 5xx and network errors back
//! off exponentially). A Slack outage costs log lines, never pipeline time.
//! The webhook URL is a secret: only its masked form is ever logged.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

mod config;

pub use config::SlackSink;
pub(crate) use config::SlackSinkConfig;

use crate::retry::Backoff;
use crate::sinks::agent::report::RootCause;
use crate::sinks::agent::workspace::{IncidentDoc, Status};
use runner_core::text::clean_line;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackOptions {
    /// Messages waiting for delivery; when full, new ones are dropped (logged).
    pub queue: usize,
    /// Attempts per message, first included.
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Upper bound on a server's `Retry-After`.
    pub max_retry_after: Duration,
    pub request_timeout: Duration,
    /// How long `close` waits for the queue to drain.
    pub flush_timeout: Duration,
}

impl Default for SlackOptions {
    fn default() -> Self {
        SlackOptions {
            queue: 64,
            max_attempts: 5,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            flush_timeout: Duration::from_secs(10),
        }
    }
}

/// The answer to one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<Duration>,
}

/// One POST of a JSON body; errors must not contain the URL.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn post(&self, body: &Value) -> Result<Reply, String>;
}

/// The real webhook client.
pub(crate) struct Webhook {
    client: reqwest::Client,
    url: String,
}

impl Webhook {
    pub(crate) fn new(url: String, timeout: Duration) -> Result<Webhook, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.without_url().to_string())?;
        Ok(Webhook { client, url })
    }
}

#[async_trait]
impl Transport for Webhook {
    async fn post(&self, body: &Value) -> Result<Reply, String> {
        let resp = self
            .client
            .post(&self.url)
            .json(body)
            .send()
            .await
            // reqwest errors print the URL, which holds the secret.
            .map_err(|e| e.without_url().to_string())?;
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            // Same parser as the MCP source: delta-seconds or an HTTP date.
            .and_then(crate::retry::parse_retry_after);
        Ok(Reply {
            status: resp.status().as_u16(),
            retry_after,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent { attempts: u32 },
    GaveUp { attempts: u32, last_error: String },
}

/// Sends `body`, retrying 429/5xx/network errors up to `max_attempts` with
/// the shared backoff (doubling, jittered; a `Retry-After` is a minimum).
pub async fn deliver(t: &dyn Transport, body: &Value, o: &SlackOptions) -> Delivery {
    let mut backoff = Backoff::new(o.base_backoff, o.max_backoff);
    let mut last_error = String::new();
    let attempts = o.max_attempts.max(1);
    for attempt in 1..=attempts {
        let retry_after = match t.post(body).await {
            Ok(r) if (200..300).contains(&r.status) => return Delivery::Sent { attempts: attempt },
            Ok(r) if r.status == 429 => {
                last_error = "HTTP 429 (rate limited)".into();
                r.retry_after
            }
            Ok(r) if r.status >= 500 => {
                last_error = format!("HTTP {}", r.status);
                None
            }
            Ok(r) => {
                // Other 4xx: the message or the webhook is wrong; retrying cannot help.
                return Delivery::GaveUp {
                    attempts: attempt,
                    last_error: format!("HTTP {} (not retried)", r.status),
                };
            }
            Err(e) => {
                last_error = e;
                None
            }
        };
        if attempt < attempts {
            tokio::time::sleep(backoff.next_after(retry_after, o.max_retry_after)).await;
        }
    }
    Delivery::GaveUp {
        attempts,
        last_error,
    }
}

struct Msg {
    label: String,
    body: Value,
}

/// The queue and its delivery task. The task starts with the first message
/// (the sink is built before any runtime exists in `runner validate`).
pub struct Notifier {
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    rx: Mutex<Option<mpsc::Receiver<Msg>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    transport: Arc<dyn Transport>,
    opts: SlackOptions,
    masked: String,
}

impl Notifier {
    /// `masked` is the webhook as it may appear in logs.
    pub fn new(transport: Arc<dyn Transport>, opts: SlackOptions, masked: String) -> Notifier {
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        Notifier {
            tx: Mutex::new(Some(tx)),
            rx: Mutex::new(Some(rx)),
            task: Mutex::new(None),
            transport,
            opts,
            masked,
        }
    }

    fn start(&self) {
        let Some(mut rx) = self.rx.lock().expect("slack rx lock").take() else {
            return;
        };
        let transport = self.transport.clone();
        let opts = self.opts.clone();
        let masked = self.masked.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                match deliver(transport.as_ref(), &m.body, &opts).await {
                    Delivery::Sent { attempts } => {
                        tracing::info!(message = %m.label, attempts, webhook = %masked, "slack message sent")
                    }
                    Delivery::GaveUp {
                        attempts,
                        last_error,
                    } => {
                        tracing::warn!(message = %m.label, attempts, error = %last_error, webhook = %masked, "slack message not delivered; giving up")
                    }
                }
            }
        });
        *self.task.lock().expect("slack task lock") = Some(task);
    }

    /// Queues a message; never waits. A full queue drops it (logged).
    pub fn send(&self, label: String, body: Value) {
        self.start();
        let tx = self.tx.lock().expect("slack tx lock").clone();
        let Some(tx) = tx else {
            tracing::warn!(message = %label, "slack notifier closed; message dropped");
            return;
        };
        if let Err(e) = tx.try_send(Msg { label, body }) {
            let (why, m) = match e {
                mpsc::error::TrySendError::Full(m) => ("queue full", m),
                mpsc::error::TrySendError::Closed(m) => ("delivery task gone", m),
            };
            tracing::warn!(message = %m.label, reason = why, webhook = %self.masked, "slack message dropped");
        }
    }

    /// Stops accepting messages and waits up to `flush_timeout` for the
    /// queue to drain; whatever is left then is dropped (logged).
    pub async fn close(&self) {
        self.tx.lock().expect("slack tx lock").take();
        let task = self.task.lock().expect("slack task lock").take();
        let Some(mut task) = task else { return };
        match tokio::time::timeout(self.opts.flush_timeout, &mut task).await {
            Ok(_) => {}
            Err(_) => {
                task.abort();
                tracing::warn!(webhook = %self.masked, timeout_s = self.opts.flush_timeout.as_secs_f64(), "slack messages still pending at shutdown were dropped");
            }
        }
    }
}

/// Slack `mrkdwn` escaping: untrusted text cannot mention `@channel` or
/// forge links.
pub(crate) fn esc(s: &str) -> String {
    clean_line(s, 1000)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn fmt_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// One Block Kit message for a finished incident.
pub(crate) fn incident_message(doc: &IncidentDoc, rc: Option<&RootCause>, report: &Path) -> Value {
    let (emoji, verdict) = match doc.status {
        Status::Completed => (":white_check_mark:", "triaged"),
        Status::TimedOut => (":hourglass:", "triage timed out"),
        Status::NoClusterData => (":warning:", "triage could not reach the cluster"),
        _ => (":x:", "triage failed"),
    };
    let r = &doc.resource;
    let ns = if doc.namespace.is_empty() {
        "(cluster-scoped)".to_string()
    } else {
        esc(&doc.namespace)
    };
    let header = clean_line(&format!("Kubernetes incident {verdict} {emoji}"), 150);
    let cause = match rc {
        Some(rc) if !rc.lines.is_empty() => format!(
            "*Root Cause ({} confidence):*\n{}",
            rc.confidence.unwrap_or("UNKNOWN"),
            rc.lines
                .iter()
                .map(|l| esc(l))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        _ => match &doc.failure_reason {
            Some(why) => format!("*Root Cause:* not determined ({})", esc(why)),
            None => "*Root Cause:* not determined".to_string(),
        },
    };
    let duration = doc
        .duration_ms
        .map(fmt_duration)
        .unwrap_or_else(|| "-".into());
    let fallback = format!(
        "{} {} on {}/{} in {} ({}): {verdict}",
        doc.severity,
        esc(&doc.fault_type),
        esc(&r.kind),
        esc(&r.name),
        esc(&doc.cluster),
        ns
    );
    json!({
        "text": fallback,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": format!("*Cluster:*\n{}", esc(&doc.cluster))},
                {"type": "mrkdwn", "text": format!("*Namespace:*\n{ns}")},
                {"type": "mrkdwn", "text": format!("*Resource:*\n{}/{}", esc(&r.kind), esc(&r.name))},
                {"type": "mrkdwn", "text": format!("*Fault type:*\n{}", esc(&doc.fault_type))},
                {"type": "mrkdwn", "text": format!("*Severity:*\n{}", doc.severity)},
                {"type": "mrkdwn", "text": format!("*Duration:*\n{duration}")},
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": cause}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("Incident `{}` | Report: {}", doc.id, esc(&report.display().to_string()))}
            ]},
        ]
    })
}

/// The circuit breaker's "agents degraded" message.
pub(crate) fn degraded_message(consecutive: u32, last_reason: &str) -> Value {
    let text = format!(
        "{consecutive} consecutive agent runs failed. Last failure: {}",
        esc(last_reason)
    );
    json!({
        "text": format!("AI agents degraded: {text}"),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "AI agents degraded :warning:", "emoji": true}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        ]
    })
}

/// The circuit breaker's "recovered" message.
pub(crate) fn recovered_message(failures: u32) -> Value {
    let text = format!("An agent completed again after {failures} consecutive failures.");
    json!({
        "text": format!("AI agents recovered: {text}"),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "AI agents recovered :white_check_mark:", "emoji": true}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<!channel> & <http://x|y>"),
            "&lt;!channel&gt; &amp; &lt;http://x|y&gt;"
        );
    }
}
