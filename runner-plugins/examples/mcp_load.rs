//! Load generator: notifications/s received by the MCP source over loopback
//! next to rmcp's raw receive rate, measured in the same process and run.
//!
//! cargo run --release -p runner-plugins --example mcp_load -- [EVENTS] [ROUNDS]
//!
//! For each round, a fresh in-process test server emits EVENTS distinct
//! faults (a storm) to one subscriber, measured four ways:
//! * `raw rmcp` – a bare rmcp client (same transport settings, own
//!   current-thread runtime) whose handler only counts notifications;
//! * `source, lazy consumer` – the real `McpSource`; its intake is drained
//!   once per millisecond, which isolates the source's own cost;
//! * `source, per-payload consumer` – drained like the pipeline does, one
//!   `recv` per payload (the source thread pays for waking the consumer);
//! * `source + parse` – that consumer also parses each payload into an
//!   `Event`.
//!
//! Reported: the receive rate (first to last notification, session setup
//! excluded) and the CPU time of the client thread per notification (the
//! thread running rmcp and the handler; from /proc, 10 ms ticks). The rate
//! is noisy when other work shares the cores (the server runs in the same
//! process); the CPU per notification is the steadier figure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mcp_testserver::{Scenario, TestServer};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
#[allow(deprecated)]
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam, SetLevelRequestParams};
use rmcp::service::{NotificationContext, RoleClient};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ServiceExt};
use runner_core::config::{ConfigErrors, Overrides, TableReader};
use runner_core::{CancellationToken, Event, Intake, Recorder, SourceContext};
use runner_plugins::component::{BuildContext, ComponentConfig, ReadContext};
use runner_plugins::sources::mcp::McpSourceConfig;
use serde_json::Map;

#[derive(Clone, Default)]
struct Counting {
    n: Arc<AtomicU64>,
    first: Arc<std::sync::Mutex<Option<Instant>>>,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Counting {
    fn hit(&self) {
        let now = Instant::now();
        self.first.lock().unwrap().get_or_insert(now);
        *self.last.lock().unwrap() = Some(now);
        self.n.fetch_add(1, Ordering::Relaxed);
    }
    fn rate(&self) -> f64 {
        let f = self.first.lock().unwrap().expect("received something");
        let l = self.last.lock().unwrap().expect("received something");
        let n = self.n.load(Ordering::Relaxed) as f64;
        (n - 1.0) / (l - f).as_secs_f64()
    }
    async fn wait(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.n.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} received",
                self.n.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl ClientHandler for Counting {
    #[allow(deprecated)]
    async fn on_logging_message(
        &self,
        _p: LoggingMessageNotificationParam,
        _c: NotificationContext<RoleClient>,
    ) {
        self.hit();
    }
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("raw", "0"),
        )
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }
}

/// (rate, client-thread CPU µs per notification)
async fn raw(events: u64) -> (f64, f64) {
    let server = TestServer::start(Scenario::empty()).await.unwrap();
    let counting = Counting::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = server.url();
    let c = counting.clone();
    // Same runtime shape as the source: a current-thread runtime of its own.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let client = std::thread::Builder::new()
        .name("mcpbench-raw".into())
        .spawn(move || {
            rt.block_on(async move {
                let cfg = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                    .reinit_on_expired_session(false);
                let t = StreamableHttpClientTransport::with_client(reqwest::Client::new(), cfg);
                let s = c.clone().serve(t).await.unwrap();
                #[allow(deprecated)]
                s.set_level(SetLevelRequestParams::new(LoggingLevel::Info))
                    .await
                    .unwrap();
                let mut args = Map::new();
                args.insert("mode".into(), "faults".into());
                s.call_tool(CallToolRequestParams::new("events_subscribe").with_arguments(args))
                    .await
                    .unwrap();
                let _ = done_rx.await;
                let _ = s.cancel().await;
            })
        })
        .unwrap();
    assert!(
        server
            .control()
            .wait_for_subscriber(1, Duration::from_secs(30))
            .await
    );
    let cpu0 = thread_cpu("mcpbench-raw");
    server.control().storm(events, 0).await;
    counting.wait(events).await;
    let cpu = thread_cpu("mcpbench-raw").checked_sub(cpu0).unwrap();
    let _ = done_tx.send(());
    client.join().unwrap();
    server.shutdown().await;
    (counting.rate(), us_per(cpu, events))
}

/// (consumer-side rate, source-thread CPU µs per notification)
async fn source(events: u64, parse: bool, lazy: bool) -> (f64, f64) {
    let server = TestServer::start(Scenario::empty()).await.unwrap();
    let mut errs = ConfigErrors::default();
    let mut eff = Vec::new();
    let ov = Overrides::new();
    let table: toml::Table = format!("name = \"bench\"\nendpoint = {:?}", server.url())
        .parse()
        .unwrap();
    let mut r = TableReader::new("source[0]", table, &ov, &mut errs, &mut eff);
    let dir = std::path::PathBuf::new();
    let cfg = McpSourceConfig::read(&mut r, &ReadContext::single(&dir, &ov)).expect("config");
    r.finish();
    let (tx, mut rx) = tokio::sync::mpsc::channel(events as usize + 16);
    let recorder = Arc::new(Recorder::new(Arc::from(Vec::new())));
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        intake: Intake::new(tx, recorder),
        shutdown: shutdown.clone(),
        status: runner_core::status::SourceStatus::new("load"),
    };
    let source = cfg.build(&BuildContext::default()).expect("source");
    let task = tokio::spawn(source.run(ctx));
    let _ = &task;
    let counting = Counting::default();
    let c = counting.clone();
    let drain = tokio::spawn(async move {
        let mut bad = 0u64;
        if lazy {
            // A consumer that wakes once per millisecond: isolates the
            // source from the cost of waking a consumer per payload.
            let mut buf = Vec::with_capacity(4096);
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                buf.clear();
                while let Ok(raw) = rx.try_recv() {
                    buf.push(raw);
                }
                for _ in buf.drain(..) {
                    c.hit();
                }
                if rx.is_closed() && rx.is_empty() {
                    return bad;
                }
            }
        }
        while let Some(item) = rx.recv().await {
            let runner_core::IntakeItem::Payload(runner_core::Queued { raw, .. }) = item else {
                continue;
            };
            if parse && Event::from_json(raw.data, raw.cluster_fill.as_deref()).is_err() {
                bad += 1;
            }
            c.hit();
        }
        bad
    });
    assert!(
        server
            .control()
            .wait_for_subscriber(1, Duration::from_secs(30))
            .await
    );
    let cpu0 = thread_cpu("mcp-sources");
    server.control().storm(events, 0).await;
    counting.wait(events).await;
    let cpu = thread_cpu("mcp-sources").checked_sub(cpu0).unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(drain.await.unwrap(), 0, "every generated fault parses");
    server.shutdown().await;
    (counting.rate(), us_per(cpu, events))
}

/// CPU time (user + system) of this process's threads whose name starts
/// with `prefix` (Linux /proc; 10 ms ticks).
fn thread_cpu(prefix: &str) -> Duration {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0u64;
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the ")" of the comm: state is #3, utime #14, stime #15.
        let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 12 {
            ticks += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        }
    }
    Duration::from_secs_f64(ticks as f64 / tick)
}

fn us_per(cpu: Duration, events: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / events as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let mut rows: [Vec<(f64, f64)>; 4] = Default::default();
    let names = [
        "raw rmcp",
        "source, lazy consumer",
        "source, per-payload consumer",
        "source + parse",
    ];
    for round in 1..=rounds {
        let got = [
            raw(events).await,
            source(events, false, true).await,
            source(events, false, false).await,
            source(events, true, false).await,
        ];
        print!("round {round}:");
        for (i, (rate, cpu)) in got.into_iter().enumerate() {
            print!(" | {} {rate:.0}/s {cpu:.1}µs", names[i]);
            rows[i].push((rate, cpu));
        }
        println!();
    }
    let med: Vec<(f64, f64)> = rows
        .iter()
        .map(|v| {
            (
                median(v.iter().map(|x| x.0).collect()),
                median(v.iter().map(|x| x.1).collect()),
            )
        })
        .collect();
    println!(
        "median of {rounds} rounds x {events} events (rate; client-thread CPU per notification):"
    );
    for (i, (rate, cpu)) in med.iter().enumerate() {
        println!(
            "  {:<30} {rate:>8.0}/s ({:+6.1} %)  {cpu:>5.1} µs ({:+6.1} %)",
            names[i],
            (rate / med[0].0 - 1.0) * 100.0,
            (cpu / med[0].1 - 1.0) * 100.0
        );
    }
}
