//! The agent sink's incident log: the most recent incidents in memory, for
//! the admin server's incidents page. Reports are resolved only for ids
//! this log produced, so a request can never name an arbitrary path.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use runner_core::UsageTotals;
use runner_core::status::{IncidentLog, IncidentView};

use super::workspace::{IncidentDoc, Status};

/// Incidents kept for the page (older ones stay on disk).
pub(crate) const KEEP: usize = 500;

#[derive(Default)]
pub(crate) struct IncidentBook {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Newest first, each with its workspace directory.
    items: VecDeque<(IncidentView, PathBuf)>,
    usage: UsageTotals,
}

fn status_str(s: Status) -> &'static str {
    match s {
        Status::Created => "created",
        Status::Running => "running",
        Status::Completed => "completed",
        Status::Failed => "failed",
        Status::TimedOut => "timed_out",
        Status::Abandoned => "abandoned",
        Status::NoClusterData => "no_cluster_data",
        Status::OverBudget => "over_budget",
    }
}

impl IncidentBook {
    /// Records the incident's current state (inserting it when new).
    pub(crate) fn update(&self, doc: &IncidentDoc, seq: u64, dir: &Path) {
        let terminal = !matches!(doc.status, Status::Created | Status::Running);
        let view = IncidentView {
            id: doc.id.clone(),
            seq,
            cluster: doc.cluster.clone(),
            namespace: doc.namespace.clone(),
            kind: doc.resource.kind.clone(),
            name: doc.resource.name.clone(),
            severity: doc.severity.clone(),
            fault_type: doc.fault_type.clone(),
            status: status_str(doc.status).to_string(),
            started_at: doc.started_at.clone(),
            duration_ms: doc.duration_ms,
            cost_usd: doc.usage.as_ref().and_then(|u| u.cost_usd),
            input_tokens: doc.usage.as_ref().and_then(|u| u.input_tokens),
            output_tokens: doc.usage.as_ref().and_then(|u| u.output_tokens),
            has_report: terminal,
        };
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Usage is final once the incident is: count it the first time only.
        let was_terminal = g.items.iter().any(|(v, _)| v.id == view.id && v.has_report);
        if terminal
            && !was_terminal
            && let Some(u) = &doc.usage
        {
            g.usage
                .add(u.input_tokens, u.output_tokens, u.cost_usd, u.turns);
        }
        if let Some((v, _)) = g.items.iter_mut().find(|(v, _)| v.id == view.id) {
            *v = view;
        } else {
            g.items.push_front((view, dir.to_path_buf()));
            g.items.truncate(KEEP);
        }
    }
}

impl IncidentLog for IncidentBook {
    fn recent(&self) -> Vec<IncidentView> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.items.iter().map(|(v, _)| v.clone()).collect()
    }

    fn report_html(&self, id: &str) -> Option<PathBuf> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (_, dir) = g.items.iter().find(|(v, _)| v.id == id && v.has_report)?;
        Some(dir.join("report.html"))
    }

    fn usage(&self) -> UsageTotals {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).usage
    }
}
