//! The group table: group key → its current incident. All the grouping
//! state of a runner is here, in memory: this is what a state store
//! persists to keep grouping across restarts (per key: the canonical key,
//! the incident id and workspace, its phase and, once ended, the wall-clock
//! end time; the attached-event counts are in the incident's
//! `incident.json`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use runner_core::group::{Incident, Phase};
use tokio::time::Instant;

/// See the module docs.
pub(crate) struct GroupTable {
    map: Mutex<HashMap<String, Arc<Incident>>>,
    max: usize,
    evictions: AtomicU64,
}

impl GroupTable {
    pub(crate) fn new(max: usize) -> GroupTable {
        GroupTable {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
            evictions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Incident>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the current incident of `canonical` (if any) under the
    /// table's lock; `f` may return a new incident to replace it.
    pub(crate) fn with<R>(
        &self,
        canonical: &str,
        now: Instant,
        f: impl FnOnce(Option<&Arc<Incident>>) -> (R, Option<Arc<Incident>>),
    ) -> R {
        let mut map = self.lock();
        let (r, new) = f(map.get(canonical));
        if let Some(inc) = new {
            map.insert(canonical.to_string(), inc);
            if map.len() > self.max {
                self.sweep(&mut map, now);
            }
        }
        r
    }

    /// Removes `inc` if it is still the current incident of its key (its
    /// leader never ran: the next event opens a new one).
    pub(crate) fn forget(&self, inc: &Arc<Incident>) {
        let mut map = self.lock();
        if map
            .get(&inc.key.canonical)
            .is_some_and(|cur| Arc::ptr_eq(cur, inc))
        {
            map.remove(&inc.key.canonical);
        }
    }

    /// Over the bound: drop closed incidents, then the longest-ended ones.
    /// Open incidents stay: each has an event queued or running, and the
    /// router's queues bound how many there are.
    fn sweep(&self, map: &mut HashMap<String, Arc<Incident>>, now: Instant) {
        map.retain(|_, inc| inc.phase_at(now) != Phase::Closed);
        if map.len() <= self.max {
            return;
        }
        let mut ended: Vec<(Instant, String)> = map
            .iter()
            .filter_map(|(k, inc)| match inc.phase_at(now) {
                Phase::Ended { at } => Some((at, k.clone())),
                _ => None,
            })
            .collect();
        ended.sort();
        // Down to 90 % so the next sweep is many inserts away.
        let target = self.max - self.max / 10;
        let excess = map.len().saturating_sub(target);
        for (_, k) in ended.into_iter().take(excess) {
            map.remove(&k);
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Keys in the table.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Ended incidents evicted (before their cooldown was over) because the
    /// table was full.
    #[cfg(test)]
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}
