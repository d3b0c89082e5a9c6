//! Notices: what an event sink reports about its work (an incident
//! finished, agents degraded or recovered), delivered to every notifier
//! sink (`[[sink]] kind = "slack"`). A notifier never delays the sink that
//! reports: `notify` must return at once (queue, or drop and log).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use super::agent::report::RootCause;
use super::agent::workspace::IncidentDoc;

/// One thing worth telling people about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Notice<'a> {
    /// An incident reached its final state (not for abandoned ones: the
    /// runner is shutting down).
    Incident {
        doc: &'a IncidentDoc,
        root_cause: Option<&'a RootCause>,
        report: &'a Path,
    },
    /// `consecutive` agent runs failed in a row (sent once per streak).
    Degraded {
        consecutive: u32,
        last_reason: &'a str,
    },
    /// An agent completed again after `failures` consecutive failures.
    Recovered { failures: u32 },
}

/// A sink that is told about other sinks' work.
#[async_trait]
pub(crate) trait Notify: Send + Sync {
    fn name(&self) -> &str;

    /// Takes a notice; never waits.
    fn notify(&self, notice: &Notice<'_>);

    /// Flushes what is pending, within the notifier's own time limit.
    async fn close(&self);
}

/// The notifiers a sink reports to. Cheap to clone; the list is set once,
/// after every sink is built (so the order of `[[sink]]` tables does not
/// matter).
#[derive(Clone, Default)]
pub struct Notices(Arc<OnceLock<Vec<Arc<dyn Notify>>>>);

impl Notices {
    /// A list that is already complete (tests, the embedded demo).
    pub(crate) fn new(notifiers: Vec<Arc<dyn Notify>>) -> Notices {
        let n = Notices::default();
        n.set(notifiers);
        n
    }

    /// One Slack sink, complete (other crates' tests: the notifier trait
    /// stays inside this crate).
    pub fn slack(sink: crate::sinks::slack::SlackSink) -> Notices {
        Notices::new(vec![Arc::new(sink)])
    }

    /// Sets the list once; later calls are ignored.
    pub(crate) fn set(&self, notifiers: Vec<Arc<dyn Notify>>) {
        let _ = self.0.set(notifiers);
    }

    fn list(&self) -> &[Arc<dyn Notify>] {
        self.0.get().map(Vec::as_slice).unwrap_or_default()
    }

    /// True when nobody listens (a sink may skip preparing a notice).
    pub(crate) fn is_empty(&self) -> bool {
        self.list().is_empty()
    }

    pub(crate) fn send(&self, notice: &Notice<'_>) {
        for n in self.list() {
            n.notify(notice);
        }
    }

    pub(crate) async fn close(&self) {
        for n in self.list() {
            n.close().await;
        }
    }
}
