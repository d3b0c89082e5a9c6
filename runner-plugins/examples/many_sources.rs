//! Many MCP sources in one process: threads, RSS and CPU at idle and under
//! a steady load, and per-source order.
//!
//! cargo run --release -p runner-plugins --example many_sources -- [SOURCES] [IDLE_S] [LOAD_S] [RATE]
//!
//! Defaults: 500 sources, 20 s idle, 20 s load, 10 events/s per source.
//! The test MCP servers run in child processes (this binary re-executed, one
//! per 100 sources: a server accepts 100 subscriptions), so the numbers are
//! the sources' own: SOURCES real `McpSource`s, each with its
//! own session and subscription, hand their payloads to one intake drained
//! by a consumer that checks, per source, that the fault ids arrive as
//! 0, 1, 2, … with no gap and no reordering. Every event must be delivered:
//! the example exits 1 otherwise.
//!
//! Measured with `getrusage` (process CPU, context switches) and
//! `/proc/self/status` (RSS, peak RSS, threads):
//! * idle: all sources subscribed, nothing sent, for IDLE_S seconds;
//! * load: the server emits RATE events/s, each to every subscriber (so
//!   SOURCES × RATE notifications/s in total), for LOAD_S seconds.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_testserver::{Scenario, TestServer};
use runner_core::config::{ConfigErrors, Overrides, TableReader};
use runner_core::status::{SourcePhase, SourceStatus};
use runner_core::{CancellationToken, Intake, IntakeItem, Queued, Recorder, SourceContext};
use runner_plugins::component::{BuildContext, ComponentConfig, ReadContext};
use runner_plugins::sources::mcp::McpSourceConfig;
use serde_json::json;

const SERVER_ENV: &str = "MANY_SOURCES_SERVER";
/// Subscriptions one server accepts.
const SOURCES_PER_SERVER: usize = 100;

/// The child: a test server driven by lines on stdin (`load COUNT RATE`,
/// `quit`), printing its URL first and `done` after each load.
async fn server_main() {
    let server = TestServer::start(Scenario::empty()).await.expect("server");
    println!("{}", server.url());
    let control = server.control();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["load", count, rate] => {
                let count: u64 = count.parse().expect("count");
                let rate: f64 = rate.parse().expect("rate");
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for i in 0..count {
                    tick.tick().await;
                    control
                        .emit(&json!({
                            "cluster": "many",
                            "faultId": format!("f-{i}"),
                            "faultType": "CrashLoop",
                            "severity": "critical",
                            "resource": {"apiVersion": "v1", "kind": "Pod", "name": format!("pod-{i}"), "namespace": "load"},
                            "context": "load",
                        }))
                        .await;
                }
                println!("done");
                let _ = std::io::stdout().flush();
            }
            ["quit"] => break,
            _ => eprintln!("unknown command {line:?}"),
        }
    }
    server.shutdown().await;
}

#[derive(Clone, Copy)]
struct Usage {
    cpu: Duration,
    csw: i64,
    at: Instant,
}

fn usage() -> Usage {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Usage {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        csw: ru.ru_nvcsw + ru.ru_nivcsw,
        at: Instant::now(),
    }
}

/// (VmRSS kB, VmHWM kB, threads)
fn mem() -> (u64, u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"), field("Threads:"))
}

fn report(label: &str, a: Usage, b: Usage) {
    let wall = (b.at - a.at).as_secs_f64();
    let cpu = b.cpu.checked_sub(a.cpu).unwrap().as_secs_f64();
    let (rss, hwm, threads) = mem();
    println!(
        "{label:<6} {wall:>6.1} s wall  CPU {cpu:>7.3} s ({:>6.2} % of a core)  context switches {:>8.1}/s  RSS {:>7} kB  peak {:>7} kB  threads {threads}",
        cpu / wall * 100.0,
        (b.csw - a.csw) as f64 / wall,
        rss,
        hwm,
    );
}

fn main() {
    if std::env::var_os(SERVER_ENV).is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(server_main());
        return;
    }
    let mut args = std::env::args().skip(1);
    let sources: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let idle_s: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let load_s: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    // The runner's own runtime shape: multi-thread, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ok = rt.block_on(run(sources, idle_s, load_s, rate));
    std::process::exit(if ok { 0 } else { 1 });
}

async fn run(sources: usize, idle_s: u64, load_s: u64, rate: u64) -> bool {
    let (rss0, _, threads0) = mem();
    // A server accepts at most 100 subscriptions (like the real one): one
    // server process per 100 sources, as with one server per cluster.
    let mut servers = Vec::new();
    for _ in 0..sources.div_ceil(SOURCES_PER_SERVER) {
        let mut child = std::process::Command::new(std::env::current_exe().expect("self"))
            .env(SERVER_ENV, "1")
            .env("RUST_LOG", "error")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start a server process");
        let child_in = child.stdin.take().expect("stdin");
        let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let url = line_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server URL");
        servers.push((child, child_in, line_rx, url));
    }

    let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 20);
    let recorder = Arc::new(Recorder::new(Arc::from(Vec::new())));
    let intake = Intake::new(tx, recorder.clone());
    let shutdown = CancellationToken::new();
    let mut statuses = Vec::new();
    let mut tasks = Vec::new();
    let started = Instant::now();
    for i in 0..sources {
        let mut errs = ConfigErrors::default();
        let mut eff = Vec::new();
        let ov = Overrides::new();
        let url = &servers[i % servers.len()].3;
        let table: toml::Table = format!("name = \"s{i}\"\nendpoint = {url:?}")
            .parse()
            .unwrap();
        let mut r = TableReader::new(format!("source[{i}]"), table, &ov, &mut errs, &mut eff);
        let dir = std::path::PathBuf::new();
        let cx = ReadContext {
            base_dir: &dir,
            index: i,
            count: sources,
            overrides: &ov,
        };
        let cfg = McpSourceConfig::read(&mut r, &cx).expect("config");
        r.finish();
        let status = SourceStatus::new(&format!("s{i}"));
        statuses.push(status.clone());
        let ctx = SourceContext {
            intake: intake.for_source(status.clone()),
            shutdown: shutdown.clone(),
            status,
        };
        let source = cfg.build(&BuildContext::default()).expect("source");
        tasks.push(tokio::spawn(source.run(ctx)));
    }
    drop(intake);

    // Per source: the next fault id expected.
    let expect_total = sources as u64 * load_s * rate;
    let consumer = tokio::spawn(async move {
        let mut next = std::collections::HashMap::<Arc<str>, u64>::new();
        let mut got = 0u64;
        let mut out_of_order = 0u64;
        let mut buf = Vec::with_capacity(64);
        while rx.recv_many(&mut buf, 64).await > 0 {
            for item in buf.drain(..) {
                let IntakeItem::Payload(Queued { raw, bytes }) = item else {
                    continue;
                };
                recorder.release(bytes);
                let id: u64 = raw.data["faultId"]
                    .as_str()
                    .and_then(|f| f.strip_prefix("f-"))
                    .and_then(|n| n.parse().ok())
                    .expect("fault id");
                let n = next.entry(raw.source.clone()).or_insert(0);
                if id != *n {
                    out_of_order += 1;
                }
                *n = id + 1;
                got += 1;
            }
        }
        (got, out_of_order, next)
    });

    let deadline = Instant::now() + Duration::from_secs(300);
    let mut next_note = 10;
    loop {
        let up = statuses
            .iter()
            .filter(|s| s.snapshot().phase == SourcePhase::Subscribed)
            .count();
        if up == sources {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("only {up} of {sources} sources subscribed after 300 s");
            return false;
        }
        if started.elapsed().as_secs() >= next_note {
            next_note += 10;
            let errors: Vec<String> = statuses
                .iter()
                .filter_map(|s| s.snapshot().last_error)
                .take(3)
                .collect();
            eprintln!(
                "{:.0} s: {up} of {sources} subscribed; errors e.g. {errors:?}",
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{sources} sources subscribed in {:.1} s (process before: RSS {rss0} kB, {threads0} threads)",
        started.elapsed().as_secs_f64()
    );
    // Let the subscriptions settle (first GET-stream checks), then idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = usage();
    tokio::time::sleep(Duration::from_secs(idle_s)).await;
    let b = usage();
    report("idle", a, b);

    for (_, child_in, _, _) in &mut servers {
        writeln!(child_in, "load {} {rate}", load_s * rate).expect("command a server");
    }
    let a = usage();
    let mut waits = Vec::new();
    for (child, child_in, line_rx, _) in servers {
        waits.push(tokio::task::spawn_blocking(move || {
            let done = line_rx.recv_timeout(Duration::from_secs(load_s * 10 + 120));
            (child, child_in, done)
        }));
    }
    let mut children = Vec::new();
    for w in waits {
        let (child, child_in, done) = w.await.expect("join");
        if done.as_deref() != Ok("done") {
            eprintln!("a server did not finish the load: {done:?}");
            return false;
        }
        children.push((child, child_in));
    }
    // Delivered to the intake: the sources' status counts every payload.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let received: u64 = statuses.iter().map(|s| s.snapshot().received).sum();
        if received >= expect_total {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("only {received} of {expect_total} events reached the intake");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = usage();
    report("load", a, b);
    for (_, child_in) in &mut children {
        let _ = writeln!(child_in, "quit");
    }

    shutdown.cancel();
    for t in tasks {
        if let Err(e) = t.await.expect("source task") {
            eprintln!("source failed: {e}");
        }
    }
    let (got, out_of_order, next) = consumer.await.expect("consumer");
    let short = next.values().filter(|&&n| n != load_s * rate).count() + (sources - next.len());
    for (mut child, _) in children {
        let _ = child.wait();
    }
    println!(
        "delivered {got} of {expect_total} events ({} per source), {out_of_order} out of order, {short} sources short",
        load_s * rate
    );
    got == expect_total && out_of_order == 0 && short == 0
}
