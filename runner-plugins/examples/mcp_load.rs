//! Load generator: notifications/s received by the MCP source over loopback
//! next to rmcp's raw receive rate, measured in the same process and run.
//!
//! cargo run --release -p runner-plugins --example mcp_load -- [EVENTS] [ROUNDS]
//!
//! For each round, a fresh in-process test server emits EVENTS distinct
//! faults (a storm) to one subscriber:
//! * `raw`    – a bare rmcp client whose handler only counts notifications;
//! * `source` – the real `McpSource` (session setup, logger dispatch,
//!   non-blocking intake hand-off) with a drain task that counts;
//! * `parsed` – the same, the drain task also parses every payload into an
//!   `Event` as the pipeline does.
//!
//! The clock runs from the first to the last notification received, so
//! session setup is excluded. Server and client share the machine's cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
use runner_plugins::sources::mcp::McpSourceConfig;
use runner_plugins::testserver::{Scenario, TestServer};
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

async fn raw(events: u64) -> f64 {
    let server = TestServer::start(Scenario::empty()).await.unwrap();
    let counting = Counting::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = server.url();
    let c = counting.clone();
    // Same runtime shape as the source: a current-thread runtime of its own.
    let client = std::thread::spawn(move || {
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
            c.wait(events).await;
            let _ = s.cancel().await;
        })
    });
    assert!(
        server
            .control()
            .wait_for_subscriber(1, Duration::from_secs(30))
            .await
    );
    server.control().storm(events, 0).await;
    counting.wait(events).await;
    client.join().unwrap();
    server.shutdown().await;
    counting.rate()
}

/// (submit-side rate, consumer-side rate)
async fn source(events: u64, parse: bool, lazy: bool) -> (f64, f64) {
    let server = TestServer::start(Scenario::empty()).await.unwrap();
    let mut errs = ConfigErrors::default();
    let mut eff = Vec::new();
    let ov = Overrides::new();
    let table: toml::Table = format!("endpoint = {:?}", server.url()).parse().unwrap();
    let mut r = TableReader::new("source[0]", table, &ov, &mut errs, &mut eff);
    let cfg = McpSourceConfig::read(&mut r, 0).expect("config");
    r.finish();
    let (tx, mut rx) = tokio::sync::mpsc::channel(events as usize + 16);
    let recorder = Arc::new(Recorder::new(Arc::from(Vec::new())));
    // Submit side: the intake counts `received` inside the source's
    // handler; poll it to time the source alone (without the consumer).
    let rec = recorder.clone();
    let poller = std::thread::spawn(move || {
        let mut first = None;
        loop {
            let n = rec.snapshot().received;
            if n >= 1 && first.is_none() {
                first = Some(Instant::now());
            }
            if n >= events {
                let f: Instant = first.expect("first seen");
                return (events - 1) as f64 / f.elapsed().as_secs_f64();
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        intake: Intake::new(tx, recorder),
        shutdown: shutdown.clone(),
    };
    let task = tokio::spawn(cfg.build().run(ctx));
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
        while let Some(raw) = rx.recv().await {
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
    server.control().storm(events, 0).await;
    counting.wait(events).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(drain.await.unwrap(), 0, "every generated fault parses");
    server.shutdown().await;
    (poller.join().unwrap(), counting.rate())
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
    let (mut r, mut l, mut s, mut p) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let a = raw(events).await;
        let (lz, _) = source(events, false, true).await;
        let (_, b) = source(events, false, false).await;
        let (_, c) = source(events, true, false).await;
        println!(
            "round {round}: raw rmcp {a:>7.0}/s | source: lazy consumer {lz:>7.0}/s, per-payload consumer {b:>7.0}/s, + parse {c:>7.0}/s"
        );
        r.push(a);
        l.push(lz);
        s.push(b);
        p.push(c);
    }
    let (a, lz, b, c) = (median(r), median(l), median(s), median(p));
    let pct = |x: f64| (x / a - 1.0) * 100.0;
    println!(
        "median of {rounds} x {events} events: raw rmcp {a:.0}/s; source with lazy consumer {lz:.0}/s ({:+.1} %), per-payload consumer {b:.0}/s ({:+.1} %), + parse {c:.0}/s ({:+.1} %)",
        pct(lz),
        pct(b),
        pct(c)
    );
}
