//! Scenarios: JSON lines, one step per line, run in order.
//!
//! ```text
//! # comments and blank lines are ignored
//! {"wait_for_subscriber": {"active": 1, "timeout_ms": 10000}}  # subscribed and GET stream open
//! {"emit": {"data": {"cluster": "c", "faultId": "…", …}, "repeat": 2}}
//! {"emit": {"data": "diagnostic", "logger": "kubernetes-mcp-server", "level": "error"}}
//! {"storm": {"count": 100000}}
//! {"malformed": {"count": 3}}
//! {"garbage_frame": {}}
//! {"sleep": {"ms": 200}}
//! {"kill_streams": {}}            # cut GET streams; subscriptions cancelled ("Delivery")
//! {"cut_streams": {}}             # cut GET streams only
//! {"reset_streams": {"cancel": false}}  # abort GET connections with a TCP reset
//! {"cancel_subscriptions": {}}    # silent cancellation, streams stay
//! {"subscription_error": {}}      # degrade + kubernetes/subscription_error
//! {"drop_sessions": {}}           # forget sessions: 404 from now on
//! {"restart": {"down_ms": 500}}   # cut everything, port closed for a while
//! {"freeze": {}}                 # every request stalls, connections stay open
//! {"thaw": {}}
//! {"hang_subscribe": {"count": 1}}
//! {"fail_next": {"status": 429, "count": 2, "retry_after": "1"}}
//! ```

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::Control;

fn one() -> u64 {
    1
}
fn faults_logger() -> String {
    "kubernetes/faults".into()
}
fn warning() -> String {
    "warning".into()
}
fn ten_s() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Emit {
        data: Value,
        #[serde(default = "one")]
        repeat: u64,
        #[serde(default = "faults_logger")]
        logger: String,
        #[serde(default = "warning")]
        level: String,
    },
    Storm {
        count: u64,
        #[serde(default)]
        first: u64,
    },
    Malformed {
        #[serde(default = "one")]
        count: u64,
    },
    GarbageFrame {},
    Sleep {
        ms: u64,
    },
    WaitForSubscriber {
        #[serde(default = "one")]
        active: u64,
        #[serde(default = "ten_s")]
        timeout_ms: u64,
    },
    KillStreams {},
    CutStreams {},
    ResetStreams {
        /// Also cancel the subscriptions (a delivery hit the gap).
        #[serde(default)]
        cancel: bool,
    },
    CancelSubscriptions {},
    SubscriptionError {},
    DropSessions {},
    Restart {
        #[serde(default)]
        down_ms: u64,
    },
    Freeze {},
    Thaw {},
    HangSubscribe {
        #[serde(default = "one")]
        count: u64,
    },
    FailNext {
        status: u16,
        #[serde(default = "one")]
        count: u64,
        #[serde(default)]
        retry_after: Option<String>,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Scenario {
    pub steps: Vec<Step>,
}

impl Scenario {
    /// A server that only answers (no scripted steps).
    pub fn empty() -> Self {
        Scenario::default()
    }

    pub fn new(steps: Vec<Step>) -> Self {
        Scenario { steps }
    }

    /// Parses JSON lines; errors name the line.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let mut steps = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let step: Step =
                serde_json::from_str(line).map_err(|e| format!("scenario line {}: {e}", n + 1))?;
            steps.push(step);
        }
        Ok(Scenario { steps })
    }

    pub(super) async fn run(self, c: &Control) {
        for step in self.steps {
            tracing::debug!(?step, "scenario step");
            match step {
                Step::Emit {
                    data,
                    repeat,
                    logger,
                    level,
                } => {
                    for _ in 0..repeat {
                        c.emit_with(&logger, &level, &data).await;
                    }
                }
                Step::Storm { count, first } => c.storm(count, first).await,
                Step::Malformed { count } => c.malformed(count).await,
                Step::GarbageFrame {} => c.garbage_frame().await,
                Step::Sleep { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
                Step::WaitForSubscriber { active, timeout_ms } => {
                    if !c
                        .wait_for_subscriber(active, Duration::from_millis(timeout_ms))
                        .await
                    {
                        tracing::warn!(
                            active,
                            timeout_ms,
                            "scenario: no subscriber in time; continuing"
                        );
                    }
                }
                Step::KillStreams {} => c.kill_streams(),
                Step::CutStreams {} => c.cut_streams_only(),
                Step::ResetStreams { cancel } => c.reset_streams(cancel),
                Step::CancelSubscriptions {} => c.cancel_subscriptions(),
                Step::SubscriptionError {} => c.subscription_error().await,
                Step::DropSessions {} => c.drop_sessions(),
                Step::Restart { down_ms } => c.restart(Duration::from_millis(down_ms)).await,
                Step::Freeze {} => c.freeze(),
                Step::Thaw {} => c.thaw(),
                Step::HangSubscribe { count } => c.hang_subscribe(count),
                Step::FailNext {
                    status,
                    count,
                    retry_after,
                } => c.fail_next(status, count, retry_after),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_step_kind() {
        let text = r#"
# a comment
{"wait_for_subscriber": {}}
{"emit": {"data": {"a": 1}, "repeat": 2}}
{"storm": {"count": 10}}
{"malformed": {"count": 3}}
{"garbage_frame": {}}
{"sleep": {"ms": 5}}
{"kill_streams": {}}
{"cut_streams": {}}
{"reset_streams": {"cancel": true}}
{"cancel_subscriptions": {}}
{"subscription_error": {}}
{"drop_sessions": {}}
{"restart": {"down_ms": 10}}
{"hang_subscribe": {}}
{"freeze": {}}
{"thaw": {}}
{"fail_next": {"status": 429, "retry_after": "1"}}
"#;
        let s = Scenario::parse(text).unwrap();
        assert_eq!(s.steps.len(), 17);
        assert!(matches!(s.steps[1], Step::Emit { repeat: 2, .. }));
        let err = Scenario::parse("{\"emit\": {}}\n{\"nope\": {}}").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }
}
