//! Plugins built by the TypeScript (componentize-js) and Python
//! (componentize-py) toolchains with their default settings: they load as
//! they come (WASI linked, deny-by-default), filter like the Rust examples,
//! and the sandbox holds for them (deadline, memory cap, no files, no
//! environment, no network).
//!
//! The components are built once per test binary by
//! `build-guest-examples.sh` from the toolchains `.ci/run` installs
//! (`.ci/node`, `.ci/venv`); without them the tests fail with the install
//! line. Compiled components are cached under the target dir, so only the
//! first run pays for compiling them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{event, verdict};
use plugins_wasm::{CacheOutcome, LogLevel, OnError, WasmStage, WasmStageConfig};
use runner_core::{Event, Outcome, Severity, Verdict};

fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    BUILT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(here.join("build-guest-examples.sh"))
            .output()
            .expect("run build-guest-examples.sh");
        assert!(
            out.status.success(),
            "building the TypeScript/Python plugins failed (exit {:?}); a missing toolchain \
             prints its install line:\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let path = here.join("examples/dist").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} missing after build", path.display());
    path
}

/// A config for a built guest, compiled through the shared test cache.
fn config(name: &str) -> WasmStageConfig {
    let mut cfg = WasmStageConfig::new(guest(name));
    cfg.cache_dir = Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache"));
    // Interpreters need more than a Rust guest: componentize-py's runtime
    // starts at about 20 MiB of linear memory.
    cfg.max_memory_mb = 128;
    cfg.timeout_ms = 200;
    cfg
}

fn build(cfg: &WasmStageConfig) -> WasmStage {
    let start = Instant::now();
    let stage = cfg
        .build_stage()
        .unwrap_or_else(|e| panic!("{} does not load: {e}", cfg.path.display()));
    eprintln!(
        "{} loaded in {:?} (compile cache: {:?})",
        cfg.path.display(),
        start.elapsed(),
        stage.cache_outcome()
    );
    stage
}

fn pod(ns: &str, fault_type: &str, sev: &str) -> Event {
    event(ns, "Pod", fault_type, sev, "container restarted")
}

fn dropped(v: &Verdict) -> Option<&str> {
    match v {
        Verdict::Drop {
            outcome: Outcome::PluginDropped,
            reason,
        } => Some(reason),
        _ => None,
    }
}

#[test]
fn typescript_namespace_deny_filters_as_built() {
    let mut cfg = config("ts-namespace-deny");
    cfg.config = vec![("deny_namespaces".into(), "kube-*,dev".into())];
    let stage = build(&cfg);
    assert!(
        stage.init_logs().iter().any(|l| l.level == LogLevel::Info
            && l.message == "namespace-deny: 2 pattern(s): kube-*, dev"),
        "init logs: {:?}",
        stage.init_logs()
    );
    let v = verdict(&stage, &mut pod("kube-system", "CrashLoop", "critical"));
    assert_eq!(
        dropped(&v),
        Some("wasm:ts-namespace-deny: namespace kube-system matches kube-*")
    );
    assert_eq!(
        dropped(&verdict(&stage, &mut pod("dev", "CrashLoop", "error"))),
        Some("wasm:ts-namespace-deny: namespace dev matches dev")
    );
    assert_eq!(
        verdict(&stage, &mut pod("payments", "CrashLoop", "error")),
        Verdict::Pass
    );
    let s = stage.stats();
    assert_eq!((s.calls, s.kept, s.dropped, s.failures), (3, 1, 2, 0));

    // A typo in the config fails the load with the plugin's own message.
    cfg.config = vec![("deny_namespace".into(), "x".into())];
    let e = cfg.build_stage().err().expect("unknown key refused");
    assert!(
        e.starts_with("a plugin whose init succeeds (init returned an error: ")
            && e.contains("unknown config key \"deny_namespace\""),
        "{e}"
    );
}

#[test]
fn python_escalate_raises_severity_as_built() {
    let mut cfg = config("python-escalate");
    cfg.config = vec![("fault_types".into(), "OOMKilled".into())];
    let stage = build(&cfg);
    assert!(
        stage
            .init_logs()
            .iter()
            .any(|l| l.message == "escalate: OOMKilled -> critical"),
        "init logs: {:?}",
        stage.init_logs()
    );
    let mut ev = pod("payments", "OOMKilled", "warning");
    let mut v = Verdict::Pass;
    let logs = common::capture_logs(|| v = verdict(&stage, &mut ev));
    assert_eq!(v, Verdict::Modified, "{logs}");
    assert!(
        logs.contains("INFO plugin: escalating OOMKilled in payments stage=wasm:python-escalate"),
        "{logs}"
    );
    assert_eq!(ev.severity, Severity::Critical);
    // The payload itself is untouched: the plugin replaced typed fields only.
    assert_eq!(ev.raw["severity"], "warning");
    let mut ev = pod("payments", "CrashLoop", "warning");
    assert_eq!(verdict(&stage, &mut ev), Verdict::Pass);
    assert_eq!(ev.severity, Severity::Warning);

    cfg.config = vec![("to".into(), "urgent".into())];
    let e = cfg.build_stage().err().expect("bad value refused");
    assert!(
        e.contains("to = 'urgent': one of debug, info, warning, error, critical"),
        "{e}"
    );
}

/// The sandbox probe, with `on_error = drop` so failures are visible.
fn probe() -> &'static WasmStage {
    static PROBE: OnceLock<WasmStage> = OnceLock::new();
    PROBE.get_or_init(|| {
        let mut cfg = config("python-sandbox-probe");
        cfg.on_error = OnError::Drop;
        cfg.timeout_ms = 100;
        cfg.max_memory_mb = 64;
        build(&cfg)
    })
}

fn probe_reason(fault_type: &str) -> String {
    let v = verdict(probe(), &mut pod("payments", fault_type, "error"));
    dropped(&v)
        .unwrap_or_else(|| panic!("{fault_type}: expected a drop, got {v:?}"))
        .to_string()
}

#[test]
fn python_guest_cannot_read_files_environment_or_network() {
    let r = probe_reason("ReadFile");
    assert!(r.contains("denied:"), "{r}");
    let r = probe_reason("ListRoot");
    assert!(r.contains("denied:"), "{r}");
    let r = probe_reason("Env");
    assert!(r.ends_with("env={}"), "{r}");
    let r = probe_reason("Connect");
    assert!(r.contains("denied:"), "{r}");
    let r = probe_reason("Resolve");
    assert!(r.contains("denied:"), "{r}");
}

#[test]
fn python_guest_loop_and_memory_bomb_are_stopped_and_the_next_event_runs() {
    // Loaded (and maybe compiled) before the clock starts.
    probe();
    let start = Instant::now();
    let r = probe_reason("Loop");
    let took = start.elapsed();
    assert!(r.contains("timed out after 100 ms"), "{r}");
    assert!(took < Duration::from_secs(5), "interrupted after {took:?}");

    let r = probe_reason("Hog");
    assert!(r.contains("memory limit of 64 MiB reached"), "{r}");

    // A fresh instance takes the next event.
    assert_eq!(
        verdict(probe(), &mut pod("payments", "CrashLoop", "error")),
        Verdict::Pass
    );
    let s = probe().stats();
    assert!(s.timeouts >= 1 && s.memory_limits >= 1, "{s:?}");
}

#[test]
fn second_load_comes_from_the_compile_cache_and_a_corrupted_entry_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("ts-namespace-deny");
    cfg.cache_dir = Some(dir.path().join("cache"));
    let first = build(&cfg);
    assert_eq!(first.cache_outcome(), &CacheOutcome::Miss);
    let start = Instant::now();
    let second = build(&cfg);
    let hit_time = start.elapsed();
    assert_eq!(second.cache_outcome(), &CacheOutcome::Hit);
    eprintln!("cache hit load: {hit_time:?}");
    assert_eq!(
        verdict(&second, &mut pod("payments", "CrashLoop", "error")),
        Verdict::Pass
    );

    // Flip one byte in the middle of the entry: the MAC check catches it
    // before anything is deserialized, and the entry is rebuilt.
    let cache = plugins_wasm::CompileCache::open(&dir.path().join("cache")).unwrap();
    let entry = cache.entry_path(&std::fs::read(&cfg.path).unwrap());
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&entry, &bytes).unwrap();
    let third = build(&cfg);
    match third.cache_outcome() {
        CacheOutcome::Rebuilt(why) => assert!(why.contains("authentication failed"), "{why}"),
        other => panic!("expected a rebuilt entry, got {other:?}"),
    }
    assert_eq!(
        verdict(&third, &mut pod("dev", "CrashLoop", "error")),
        Verdict::Pass
    );
    assert_eq!(build(&cfg).cache_outcome(), &CacheOutcome::Hit);
}
