//! `kind = "severity"`: drops events below a threshold.

use runner_core::config::TableReader;
use runner_core::{Event, Outcome, Severity, Stage, StageFuture, Verdict};

use crate::component::{BuildContext, ComponentConfig, KeyError, ReadContext};
use crate::settings::SEVERITY_THRESHOLD;

/// Config type (what `pipeline.toml` says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeverityConfig {
    pub threshold: Severity,
}

impl ComponentConfig for SeverityConfig {
    const KIND: &'static str = "severity";
    type Built = Box<dyn Stage>;

    fn read(r: &mut TableReader<'_>, _cx: &ReadContext<'_>) -> Option<Self> {
        let threshold = r.setting(&SEVERITY_THRESHOLD);
        Some(SeverityConfig { threshold })
    }

    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Stage>, KeyError> {
        Ok(Box::new(SeverityStage {
            threshold: self.threshold,
        }))
    }
}

/// Runtime type.
pub(crate) struct SeverityStage {
    threshold: Severity,
}

impl Stage for SeverityStage {
    fn name(&self) -> &str {
        "severity"
    }

    fn process<'a>(&'a self, event: &'a mut Event) -> StageFuture<'a> {
        if event.severity >= self.threshold {
            return StageFuture::Ready(Verdict::Pass);
        }
        tracing::debug!(
            severity = event.severity.as_str(),
            threshold = self.threshold.as_str(),
            cluster = %event.cluster,
            name = %event.resource.name,
            "below severity threshold"
        );
        StageFuture::Ready(Verdict::Drop {
            outcome: Outcome::Filtered,
            // Static text: no allocation per filtered event in a storm.
            reason: std::borrow::Cow::Borrowed("below severity threshold"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(sev: &str) -> Event {
        Event::from_str(
            &format!(r#"{{"cluster":"c","severity":"{sev}","resource":{{"name":"n"}}}}"#),
            None,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn threshold_is_inclusive() {
        let s = SeverityStage {
            threshold: Severity::Error,
        };
        for (sev, pass) in [
            ("debug", false),
            ("info", false),
            ("warning", false),
            ("error", true),
            ("critical", true),
        ] {
            let mut e = ev(sev);
            let v = s.process(&mut e).resolve().await;
            assert_eq!(v == Verdict::Pass, pass, "{sev}");
            if !pass {
                assert!(matches!(
                    v,
                    Verdict::Drop {
                        outcome: Outcome::Filtered,
                        ..
                    }
                ));
            }
        }
    }
}
