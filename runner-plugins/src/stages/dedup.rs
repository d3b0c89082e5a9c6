//! `kind = "dedup"`: placeholder until the dedup issue lands (passes everything).
// FIXME(issue 4): replaced by the real dedup stage.

use runner_core::config::TableReader;
use runner_core::{Event, Stage, StageFuture, Verdict};

#[derive(Debug, Clone)]
pub struct DedupConfig {
    pub window_seconds: u64,
}

impl DedupConfig {
    pub fn read(r: &mut TableReader<'_>) -> Option<DedupConfig> {
        let window_seconds = r.layered(
            "window_seconds",
            crate::settings::DEDUP_WINDOW_SECONDS,
            300u64,
        );
        Some(DedupConfig { window_seconds })
    }
    pub fn build(&self) -> Box<dyn Stage> {
        Box::new(DedupStage)
    }
}

pub struct DedupStage;

impl Stage for DedupStage {
    fn name(&self) -> &str {
        "dedup"
    }
    fn process<'a>(&'a self, _event: &'a mut Event) -> StageFuture<'a> {
        StageFuture::Ready(Verdict::Pass)
    }
}
