//! `mcp-test-server`: the faithful events-server double as a process.
//!
//! mcp-test-server [--port N] [--scenario FILE] [--cluster NAME]
//!                 [--require-token TOKEN] [--no-zombies] [--legacy-resource-faults]

use std::net::SocketAddr;
use std::process::ExitCode;

use mcp_testserver::{Scenario, ServerOptions, TestServer};

fn usage() -> ExitCode {
    eprintln!(
        "usage: mcp-test-server [--port N] [--scenario FILE.jsonl] [--cluster NAME] \
         [--require-token TOKEN] [--no-zombies] [--legacy-resource-faults]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut port: u16 = 0;
    let mut scenario = Scenario::empty();
    let mut opts = ServerOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => match args.next().and_then(|p| p.parse().ok()) {
                Some(p) => port = p,
                None => return usage(),
            },
            "--scenario" => {
                let Some(path) = args.next() else {
                    return usage();
                };
                let text = match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("error: cannot read {path}: {e}");
                        return ExitCode::from(2);
                    }
                };
                scenario = match Scenario::parse(&text) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("error: {path}: {e}");
                        return ExitCode::from(2);
                    }
                };
            }
            "--cluster" => match args.next() {
                Some(c) => opts.cluster = c,
                None => return usage(),
            },
            "--require-token" => match args.next() {
                Some(t) => opts.require_token = Some(t),
                None => return usage(),
            },
            "--no-zombies" => opts.zombies = false,
            "--legacy-resource-faults" => opts.legacy_resource_faults = true,
            "-h" | "--help" => {
                usage();
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let server = match TestServer::start_with(addr, opts, scenario).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::from(1);
            }
        };
        // Tests and scripts parse this line for the chosen port.
        println!("listening on {}", server.url());
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut done_logged = false;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = server.scenario_finished(), if !done_logged => {
                    done_logged = true;
                    eprintln!("scenario finished; serving until SIGTERM/SIGINT");
                }
            }
        }
        let stats = server.stats();
        eprintln!("final stats: {stats:?}");
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}
