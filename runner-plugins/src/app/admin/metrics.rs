//! `/metrics`: a `prometheus-client` collector that reads the pipeline's
//! read-only views at scrape time (no second set of counters to drift).
//! Names, units and labels are listed in docs/operations.md.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelValue, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use runner_core::pipeline::PipelineHandle;
use runner_core::status::{IncidentLog, SourcePhase};

#[derive(Clone)]
pub(crate) struct PipelineCollector {
    pub handle: PipelineHandle,
    pub max_concurrent: usize,
}

impl std::fmt::Debug for PipelineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipelineCollector")
    }
}

/// One metric family with any number of labelled samples.
fn family<L: EncodeLabelValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (Vec<(&'static str, L)>, Value)>,
) -> Result<(), std::fmt::Error> {
    let samples: Vec<_> = samples.into_iter().collect();
    let Some((_, first)) = samples.first() else {
        return Ok(());
    };
    let kind = match first {
        Value::Counter(_) | Value::CounterF(_) => MetricType::Counter,
        Value::Gauge(_) | Value::GaugeF(_) => MetricType::Gauge,
    };
    let mut fam = enc.encode_descriptor(name, help, unit, kind)?;
    for (labels, v) in &samples {
        let m = fam.encode_family(labels)?;
        match *v {
            Value::Counter(n) => ConstCounter::new(n).encode(m)?,
            Value::CounterF(n) => ConstCounter::new(n).encode(m)?,
            Value::Gauge(n) => ConstGauge::new(n).encode(m)?,
            Value::GaugeF(n) => ConstGauge::new(n).encode(m)?,
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Value {
    Counter(u64),
    CounterF(f64),
    Gauge(i64),
    GaugeF(f64),
}

impl Collector for PipelineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.handle;
        let sources = h.sources();
        let stats = h.stats();

        family(
            &mut enc,
            "runner_events_received",
            "Payloads handed to the intake by a source.",
            None,
            sources.iter().map(|s| {
                (
                    vec![("source", s.name.as_str())],
                    Value::Counter(s.received),
                )
            }),
        )?;
        let rows = h.recorder().breakdown().rows();
        family(
            &mut enc,
            "runner_events_outcome",
            "Terminal outcomes of events, by outcome, cluster (first N clusters, then `other`), source and deciding stage.",
            None,
            rows.iter().map(|r| {
                (
                    vec![
                        ("outcome", r.outcome.as_str()),
                        ("cluster", &*r.cluster),
                        ("source", &*r.source),
                        ("stage", &*r.stage),
                    ],
                    Value::Counter(r.count),
                )
            }),
        )?;
        family(
            &mut enc,
            "runner_events_in_flight",
            "Events received and not yet in a terminal outcome.",
            None,
            [(
                Vec::<(&str, &str)>::new(),
                Value::Gauge(stats.in_flight() as i64),
            )],
        )?;

        if let Some(j) = h.recorder().journal() {
            let (committed, failed) = j.commits();
            family(
                &mut enc,
                "runner_state_commits",
                "State store batches written (`result=\"ok\"`) and failed writes, each retried (`result=\"failed\"`: disk full or read-only).",
                None,
                [
                    (vec![("result", "ok")], Value::Counter(committed)),
                    (vec![("result", "failed")], Value::Counter(failed)),
                ],
            )?;
            family(
                &mut enc,
                "runner_state_writable",
                "1 while the state store writes, 0 while its writes fail (changes then wait in memory).",
                None,
                [(
                    Vec::<(&str, &str)>::new(),
                    Value::Gauge(i64::from(j.store_error().is_none())),
                )],
            )?;
        }
        let (depth, cap) = h.intake();
        family(
            &mut enc,
            "runner_queue_depth",
            "Events waiting: the intake queue, all cluster queues together, and per cluster.",
            None,
            {
                let mut v: Vec<(Vec<(&'static str, String)>, Value)> = vec![
                    (
                        vec![("queue", "intake".into()), ("cluster", String::new())],
                        Value::Gauge(depth as i64),
                    ),
                    (
                        vec![("queue", "global".into()), ("cluster", String::new())],
                        Value::Gauge(h.router().queued as i64),
                    ),
                ];
                // Cluster label values are bounded like the outcome counters'.
                let mut per: std::collections::BTreeMap<String, i64> = Default::default();
                for (c, d) in h.router_view().queue_depths() {
                    *per.entry(h.recorder().breakdown().cluster_label(&c).to_string())
                        .or_default() += d as i64;
                }
                for (c, d) in per {
                    v.push((
                        vec![("queue", "cluster".into()), ("cluster", c)],
                        Value::Gauge(d),
                    ));
                }
                v
            },
        )?;
        family(
            &mut enc,
            "runner_queue_capacity",
            "Bounds of the queues.",
            None,
            [(vec![("queue", "intake")], Value::Gauge(cap as i64))],
        )?;
        let r = h.router();
        family(
            &mut enc,
            "runner_agents_running",
            "Agent (sink) calls running now.",
            None,
            [(Vec::<(&str, &str)>::new(), Value::Gauge(r.running as i64))],
        )?;
        family(
            &mut enc,
            "runner_agents_max",
            "Global cap on running agents (MAX_CONCURRENT_AGENTS).",
            None,
            [(
                Vec::<(&str, &str)>::new(),
                Value::Gauge(self.max_concurrent as i64),
            )],
        )?;
        family(
            &mut enc,
            "runner_cluster_workers",
            "Cluster workers alive (one per cluster with recent work).",
            None,
            [(Vec::<(&str, &str)>::new(), Value::Gauge(r.workers as i64))],
        )?;

        // Histogram: encoded by hand from the core's fixed buckets.
        let durations = h.router_view().durations().snapshot();
        if !durations.is_empty() {
            let mut fam = enc.encode_descriptor(
                "runner_agent_duration",
                "Duration of agent (sink) calls, by outcome.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (outcome, data) in &durations {
                let labels = [("outcome", outcome.as_str())];
                let mut m = fam.encode_family(&labels)?;
                // The encoder accumulates: it takes per-bucket counts.
                m.encode_histogram::<Vec<(String, String)>>(
                    data.sum_seconds,
                    data.count,
                    &data.per_bucket(),
                    None,
                )?;
            }
        }

        family(
            &mut enc,
            "runner_source_up",
            "1 when the source is subscribed now.",
            None,
            sources.iter().map(|s| {
                (
                    vec![("source", s.name.as_str())],
                    Value::Gauge(i64::from(s.phase == SourcePhase::Subscribed)),
                )
            }),
        )?;
        family(
            &mut enc,
            "runner_source_sessions",
            "Session attempts of a source (the first included).",
            None,
            sources.iter().map(|s| {
                (
                    vec![("source", s.name.as_str())],
                    Value::Counter(s.sessions),
                )
            }),
        )?;
        family(
            &mut enc,
            "runner_source_reconnects",
            "Session attempts after the first.",
            None,
            sources.iter().map(|s| {
                (
                    vec![("source", s.name.as_str())],
                    Value::Counter(s.reconnects),
                )
            }),
        )?;
        family(
            &mut enc,
            "runner_source_last_event_age",
            "Time since the source's last payload (absent until the first).",
            Some(&Unit::Seconds),
            sources.iter().filter_map(|s| {
                s.seconds_since_last_event
                    .map(|a| (vec![("source", s.name.as_str())], Value::GaugeF(a)))
            }),
        )?;

        let stages = h.recorder().stage_stats();
        family(
            &mut enc,
            "runner_stage_events",
            "Events a stage passed, modified or dropped.",
            None,
            stages.iter().flat_map(|s| {
                [
                    ("passed", s.passed),
                    ("modified", s.modified),
                    ("dropped", s.dropped),
                ]
                .into_iter()
                .map(move |(r, n)| {
                    (
                        vec![("stage", s.name.as_str()), ("result", r)],
                        Value::Counter(n),
                    )
                })
            }),
        )?;
        let health = h.stage_health();
        let plugins = || health.iter().filter(|(_, s)| s.plugin);
        family(
            &mut enc,
            "runner_plugin_calls",
            "Plugin calls per WASM stage (failed ones included).",
            None,
            plugins().map(|(n, s)| (vec![("stage", n.as_str())], Value::Counter(s.calls))),
        )?;
        family(
            &mut enc,
            "runner_plugin_call_seconds",
            "Time spent in plugin calls per WASM stage, summed (divide by runner_plugin_calls_total for the mean).",
            None,
            plugins().map(|(n, s)| {
                (
                    vec![("stage", n.as_str())],
                    Value::CounterF(s.call_nanos as f64 / 1e9),
                )
            }),
        )?;
        family(
            &mut enc,
            "runner_plugin_errors",
            "Failed plugin calls (timeouts, traps, memory limits, errors) per stage.",
            None,
            health
                .iter()
                .map(|(n, s)| (vec![("stage", n.as_str())], Value::Counter(s.errors))),
        )?;
        family(
            &mut enc,
            "runner_plugin_disabled",
            "1 when a plugin stage disabled itself after repeated failures.",
            None,
            health.iter().map(|(n, s)| {
                (
                    vec![("stage", n.as_str())],
                    Value::Gauge(i64::from(s.disabled)),
                )
            }),
        )?;

        if let Some(log) = h.incident_log() {
            usage(&mut enc, log.as_ref())?;
        }
        family(
            &mut enc,
            "runner_shutting_down",
            "1 once shutdown began.",
            None,
            [(
                Vec::<(&str, &str)>::new(),
                Value::Gauge(i64::from(h.is_shutting_down())),
            )],
        )?;
        family(
            &mut enc,
            "runner_build_info",
            "Always 1; the version is a label.",
            None,
            [(
                vec![("version", env!("CARGO_PKG_VERSION"))],
                Value::Gauge(1),
            )],
        )?;
        Ok(())
    }
}

/// Agent usage as far as the sink learned it (agents that report cost or
/// tokens); absent until one did.
fn usage(enc: &mut DescriptorEncoder, log: &dyn IncidentLog) -> Result<(), std::fmt::Error> {
    let u = log.usage();
    if u.reported == 0 {
        return Ok(());
    }
    family(
        enc,
        "runner_agent_cost_usd",
        "Agent cost in US dollars, as reported by the agents.",
        None,
        [(Vec::<(&str, &str)>::new(), Value::CounterF(u.cost_usd))],
    )?;
    family(
        enc,
        "runner_agent_tokens",
        "Model tokens used by agents, as reported by the agents.",
        None,
        [
            (vec![("direction", "input")], Value::Counter(u.input_tokens)),
            (
                vec![("direction", "output")],
                Value::Counter(u.output_tokens),
            ),
        ],
    )
}

/// The registry served on `/metrics`.
pub(crate) fn registry(c: PipelineCollector) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(c));
    r
}

/// Prometheus text exposition (format 0.0.4).
pub(crate) fn render(r: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, r)
        .expect("writing to a String cannot fail");
    out
}

pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
