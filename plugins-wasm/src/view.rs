//! The plugin's view of an event (the WIT `event` record), built once per
//! event however many WASM stages it passes.
//!
//! Building it clones every field and serializes the raw payload to JSON
//! text, about half the cost of a call. The last view built is kept with the
//! `raw` payload it was built from: the next WASM stage that sees the same
//! payload (pointer-equal `Arc`, kept alive here so its address cannot be
//! reused) and the same typed fields reuses it. A stage that changed a field
//! in between (severity, a replacement) gets a fresh view, so reuse is
//! never stale.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use runner_core::{Event, Severity};
use serde_json::Value;

use crate::bindings::exports::event_runner::plugin::filter as wit;

struct Last {
    raw: Arc<Value>,
    view: Arc<wit::Event>,
}

static LAST: Mutex<Option<Last>> = Mutex::new(None);
static BUILT: AtomicU64 = AtomicU64::new(0);

fn severity_to_wit(s: Severity) -> wit::Severity {
    match s {
        Severity::Debug => wit::Severity::Debug,
        Severity::Info => wit::Severity::Info,
        Severity::Warning => wit::Severity::Warning,
        Severity::Error => wit::Severity::Error,
        Severity::Critical => wit::Severity::Critical,
    }
}

pub(crate) fn severity_from_wit(s: wit::Severity) -> Severity {
    match s {
        wit::Severity::Debug => Severity::Debug,
        wit::Severity::Info => Severity::Info,
        wit::Severity::Warning => Severity::Warning,
        wit::Severity::Error => Severity::Error,
        wit::Severity::Critical => Severity::Critical,
    }
}

fn same_fields(v: &wit::Event, e: &Event) -> bool {
    v.fault_id == e.fault_id
        && v.cluster == e.cluster
        && v.resource.api_version == e.resource.api_version
        && v.resource.kind == e.resource.kind
        && v.resource.name == e.resource.name
        && v.resource.namespace == e.resource.namespace
        && v.resource.uid == e.resource.uid
        && v.fault_type == e.fault_type
        && v.severity == severity_to_wit(e.severity)
        && v.context == e.context
        && v.timestamp == e.timestamp
}

fn build(e: &Event) -> wit::Event {
    wit::Event {
        fault_id: e.fault_id.clone(),
        cluster: e.cluster.clone(),
        resource: wit::ResourceRef {
            api_version: e.resource.api_version.clone(),
            kind: e.resource.kind.clone(),
            name: e.resource.name.clone(),
            namespace: e.resource.namespace.clone(),
            uid: e.resource.uid.clone(),
        },
        fault_type: e.fault_type.clone(),
        severity: severity_to_wit(e.severity),
        context: e.context.clone(),
        timestamp: e.timestamp.clone(),
        raw_json: serde_json::to_string(&*e.raw).unwrap_or_else(|_| "{}".into()),
    }
}

/// The view of `e`, reused when the previous WASM stage saw the same event.
pub(crate) fn of(e: &Event) -> Arc<wit::Event> {
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = &*last
        && Arc::ptr_eq(&l.raw, &e.raw)
        && same_fields(&l.view, e)
    {
        return l.view.clone();
    }
    let view = Arc::new(build(e));
    BUILT.fetch_add(1, Ordering::Relaxed);
    *last = Some(Last {
        raw: e.raw.clone(),
        view: view.clone(),
    });
    view
}

/// After a replacement that kept `raw-json` was applied to `e`: the
/// plugin's record is the view of the event as it now is (when its fields
/// came through unchanged), so the next stage need not build it again.
pub(crate) fn remember(e: &Event, view: wit::Event) {
    if same_fields(&view, e) {
        *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(Last {
            raw: e.raw.clone(),
            view: Arc::new(view),
        });
    }
}

/// How many views were built (not reused) since the process started.
pub fn built() -> u64 {
    BUILT.load(Ordering::Relaxed)
}
