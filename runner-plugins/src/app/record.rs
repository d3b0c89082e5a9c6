//! `runner record`: runs a pipeline's sources only and writes every payload
//! they receive, one JSON object per line, to a file that `runner replay`
//! and `runner test` (`input_file`) read. No stage, router or agent runs.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use runner_core::CancellationToken;
use runner_core::config::Overrides;
use runner_core::source::{Intake, IntakeItem, SourceContext};
use runner_core::status::SourceStatus;
use runner_core::{Outcome, Recorder};
use serde_json::Value;
use tokio::task::JoinSet;

use super::{EXIT_CONFIG, EXIT_FATAL, EXIT_OK, compile};

pub(super) struct RecordOptions<'a> {
    pub(super) out: &'a Path,
    pub(super) max_bytes: u64,
    pub(super) max_events: Option<u64>,
    pub(super) append: bool,
}

/// The line recorded for one payload: as received, with the cluster a
/// source fills in for payloads that lack it (`cluster_fill`), so that a
/// replay of the line sees the event the live chain saw.
fn line(mut data: Value, cluster_fill: Option<&str>) -> Vec<u8> {
    if let (Some(fill), Some(obj)) = (cluster_fill, data.as_object_mut()) {
        let empty = obj
            .get("cluster")
            .is_none_or(|c| c.as_str().is_some_and(str::is_empty));
        if empty {
            obj.insert("cluster".into(), Value::String(fill.to_string()));
        }
    }
    let mut l = serde_json::to_vec(&data).unwrap_or_default();
    l.push(b'\n');
    l
}

fn open(opts: &RecordOptions<'_>) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    // Payloads carry whatever the cluster put in them (secrets included):
    // only the runner's user may read the recording.
    o.mode(0o600);
    if opts.append {
        o.append(true).create(true);
    } else {
        o.write(true).create_new(true);
    }
    o.open(opts.out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "--out {:?}: the file exists (remove it, choose another name, or pass --append)",
                opts.out.display().to_string()
            )
        } else {
            format!(
                "--out {:?}: cannot open it: {e}",
                opts.out.display().to_string()
            )
        }
    })
}

/// Compiles `config` without its `[[stage]]` tables: recording needs the
/// sources only, and a plugin that does not load (the one being debugged,
/// say) must not stop it.
fn compile_sources(
    config: &Path,
    ov: &Overrides,
) -> Result<compile::Compiled, runner_core::config::ConfigErrors> {
    let text = std::fs::read_to_string(config).map_err(|e| {
        let mut errs = runner_core::config::ConfigErrors::default();
        errs.push(
            "--config",
            format!("{:?}", config.display().to_string()),
            format!("a readable pipeline.toml ({e})"),
        );
        errs
    })?;
    // Text that does not parse goes to the compiler as it is, which
    // reports the syntax error.
    let text = match text.parse::<toml::Table>() {
        Ok(mut t) => {
            t.remove("stage");
            t.to_string()
        }
        Err(_) => text,
    };
    let base_dir = match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let opts = compile::CompileOptions {
        base_dir,
        skip_sources: false,
    };
    compile::compile(&text, ov, &opts)
}

/// `runner record`. Exit 0 when stopped by a signal, the size cap or
/// `--max-events`; 1 on a fatal source error or a write error; 2 on a bad
/// config or output file.
pub(super) async fn run(config: &Path, ov: &Overrides, opts: RecordOptions<'_>) -> ExitCode {
    let c = match compile_sources(config, ov) {
        Ok(c) => c,
        Err(errs) => {
            super::print_errors(&errs);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    super::init_logging(
        &c.settings.log_level,
        &c.settings.log_format,
        ov.environment(),
    );
    let mut file = match open(&opts) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut written = file.metadata().map(|m| m.len()).unwrap_or(0);
    if written >= opts.max_bytes {
        eprintln!(
            "error: {} already holds {written} bytes, at or over the cap of {} (--max-bytes)",
            opts.out.display(),
            opts.max_bytes
        );
        return ExitCode::from(EXIT_CONFIG);
    }

    let (tx, mut rx) = tokio::sync::mpsc::channel(c.settings.intake_queue_size);
    let recorder = Arc::new(Recorder::new(Arc::from(Vec::new())));
    let intake = Intake::new(tx, recorder.clone());
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let names: Vec<String> = c.sources.iter().map(|s| s.name().to_string()).collect();
    for s in c.sources {
        let status = SourceStatus::new(s.name());
        let ctx = SourceContext {
            intake: intake.for_source(status.clone()),
            shutdown: stop.child_token(),
            status,
        };
        tasks.spawn(s.run(ctx));
    }
    drop(intake);
    tracing::info!(
        sources = %names.join(", "),
        out = %opts.out.display(),
        max_bytes = opts.max_bytes,
        "recording payloads (stop with SIGINT/SIGTERM)"
    );

    let signals = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    };
    tokio::pin!(signals);
    let mut events = 0u64;
    let mut exit = EXIT_OK;
    let why = loop {
        tokio::select! {
            s = &mut signals => break format!("{s} received"),
            done = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Some(Ok(Err(e))) => {
                        eprintln!("error: {e}");
                        exit = EXIT_FATAL;
                        break format!("source error: {e}");
                    }
                    Some(Err(e)) => {
                        eprintln!("error: source task failed: {e}");
                        exit = EXIT_FATAL;
                        break "a source task failed".into();
                    }
                    _ if tasks.is_empty() => break "every source ended".into(),
                    _ => {}
                }
            }
            item = rx.recv() => {
                let Some(item) = item else { break "every source ended".into() };
                // A cancellation request is not a payload. (The intake's
                // depth counter feeds readiness, which recording has none of.)
                let IntakeItem::Payload(q) = item else { continue };
                recorder.release(q.bytes);
                let l = line(q.raw.data, q.raw.cluster_fill.as_deref());
                if written + l.len() as u64 > opts.max_bytes {
                    // Said once, and the recording ends: a file cut at an
                    // arbitrary payload is still whole lines.
                    tracing::warn!(
                        out = %opts.out.display(),
                        written,
                        max_bytes = opts.max_bytes,
                        "recording stopped: the next payload would pass the size cap (--max-bytes)"
                    );
                    break format!("size cap of {} bytes reached", opts.max_bytes);
                }
                if let Err(e) = file.write_all(&l) {
                    eprintln!("error: writing {}: {e}", opts.out.display());
                    exit = EXIT_FATAL;
                    break format!("write error: {e}");
                }
                written += l.len() as u64;
                events += 1;
                if opts.max_events.is_some_and(|m| events >= m) {
                    break format!("{events} payloads recorded (--max-events)");
                }
            }
        }
    };
    stop.cancel();
    // Sources close their sessions on cancellation; bounded so a stuck one
    // cannot keep the command alive.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let _ = file.sync_all();
    // Refused at intake (over max_payload_bytes, or the queue or byte
    // budget full because writing fell behind): received, never in the file.
    let snap = recorder.snapshot();
    let refused = snap.get(Outcome::Invalid) + snap.get(Outcome::Rejected);
    if refused > 0 {
        tracing::warn!(
            refused,
            "payloads refused at intake (too large, or the intake queue was full) are not in the recording"
        );
    }
    tracing::info!(events, bytes = written, refused, reason = %why, "recording ended");
    super::print_stdout(&format!(
        "recorded {events} payload{} ({written} bytes) to {}; stopped: {why}\n",
        if events == 1 { "" } else { "s" },
        opts.out.display()
    ));
    ExitCode::from(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_fills_the_cluster_only_when_missing() {
        let parse = |l: Vec<u8>| -> Value {
            assert_eq!(l.last(), Some(&b'\n'));
            serde_json::from_slice(&l).unwrap()
        };
        let v: Value = serde_json::from_str(r#"{"faultId":"a","cluster":""}"#).unwrap();
        assert_eq!(
            parse(line(v, Some("prod"))),
            serde_json::json!({"faultId": "a", "cluster": "prod"})
        );
        let v: Value = serde_json::from_str(r#"{"cluster":"dev"}"#).unwrap();
        assert_eq!(
            parse(line(v, Some("prod"))),
            serde_json::json!({"cluster": "dev"})
        );
        let v: Value = serde_json::from_str(r#"{"faultId":"b"}"#).unwrap();
        assert_eq!(parse(line(v.clone(), None)), v);
        let v = Value::String("not an object".into());
        assert_eq!(line(v, Some("prod")), b"\"not an object\"\n");
    }
}
