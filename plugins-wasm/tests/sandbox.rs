//! Sandbox and failure handling with hand-written plugins (no wasm target
//! needed): deadlines, memory cap, traps and `on_error`, load-time errors,
//! replace verdicts, guest state.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use plugins_wasm::{OnError, WasmStageConfig};
use runner_core::config::{ConfigErrors, Overrides, TableReader};
use runner_core::pipeline::{ChainResult, StageChain};
use runner_core::{Event, Outcome, RawPayload, Recorder, Severity, Stage, StageFuture, Verdict};

const LOOP_FOREVER: &str = "(loop $spin (br $spin))";
/// Grows memory until refused, then aborts like a Rust guest out of memory.
const HOG: &str =
    "(loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable";

fn drop_reason(v: &Verdict) -> &str {
    match v {
        Verdict::Drop {
            outcome: Outcome::PluginDropped,
            reason,
        } => reason,
        other => panic!("expected a plugin_dropped verdict, got {other:?}"),
    }
}

fn warning() -> Event {
    event("payments", "Pod", "CrashLoop", "warning", "restarting")
}

fn critical() -> Event {
    event("payments", "Pod", "CrashLoop", "critical", "restarting")
}

#[test]
fn keep_and_drop_verdicts() {
    let (_d, cfg) = config_for(&component(INIT_OK, KEEP));
    let stage = build(&cfg);
    assert_eq!(stage.name(), "wasm:test-plugin");
    assert_eq!(verdict(&stage, &mut warning()), Verdict::Pass);

    let (_d, mut cfg) = config_for(&component(INIT_OK, DROP));
    cfg.name = Some("deny".into());
    let stage = build(&cfg);
    let v = verdict(&stage, &mut warning());
    assert_eq!(drop_reason(&v), "wasm:deny: boom");
    let s = stage.stats();
    assert_eq!((s.calls, s.kept, s.dropped, s.failures), (1, 0, 1, 0));
}

#[test]
fn infinite_loop_is_stopped_within_its_deadline_and_next_event_is_processed() {
    let (_d, mut cfg) = config_for(&component(INIT_OK, &on_critical(LOOP_FOREVER)));
    cfg.timeout_ms = 20;
    let stage = build(&cfg);

    let start = Instant::now();
    let v = verdict(&stage, &mut critical());
    let took = start.elapsed();
    eprintln!("runaway plugin interrupted after {took:?} (timeout_ms = 20)");
    assert_eq!(v, Verdict::Pass, "on_error = pass");
    assert!(
        took >= Duration::from_millis(20) && took < Duration::from_millis(220),
        "interrupted after {took:?}, deadline 20 ms"
    );
    let s = stage.stats();
    assert_eq!((s.failures, s.timeouts), (1, 1));

    // The runner keeps going: a fresh instance handles the next event.
    let start = Instant::now();
    assert_eq!(verdict(&stage, &mut warning()), Verdict::Pass);
    assert!(start.elapsed() < Duration::from_millis(200));
    let s = stage.stats();
    assert_eq!((s.kept, s.instantiations), (1, 2));

    // With on_error = drop the looping event is dropped with the reason.
    cfg.on_error = OnError::Drop;
    let stage = build(&cfg);
    let v = verdict(&stage, &mut critical());
    assert!(drop_reason(&v).contains("timed out after 20 ms"), "{v:?}");
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let (_d, mut cfg) = config_for(&component(INIT_OK, &on_critical(HOG)));
    cfg.max_memory_mb = 2;
    cfg.on_error = OnError::Drop;
    let stage = build(&cfg);
    let v = verdict(&stage, &mut critical());
    let reason = drop_reason(&v);
    assert!(reason.contains("memory limit of 2 MiB reached"), "{reason}");
    let s = stage.stats();
    assert_eq!((s.failures, s.memory_limits), (1, 1));
    // Same again after re-instantiation, and ordinary events still pass.
    assert!(drop_reason(&verdict(&stage, &mut critical())).contains("memory limit"));
    assert_eq!(verdict(&stage, &mut warning()), Verdict::Pass);
    assert_eq!(stage.stats().instantiations, 3);
}

#[test]
fn trap_with_on_error_pass_passes_and_recreates_the_instance() {
    let (_d, cfg) = config_for(&component(INIT_OK, &on_critical("unreachable")));
    let stage = build(&cfg);
    assert_eq!(verdict(&stage, &mut critical()), Verdict::Pass);
    assert_eq!(verdict(&stage, &mut warning()), Verdict::Pass);
    let s = stage.stats();
    assert_eq!((s.calls, s.failures, s.traps, s.kept), (2, 1, 1, 1));
    assert_eq!(s.instantiations, 2, "a trapped instance is never reused");
}

#[test]
fn trap_with_on_error_drop_drops_with_the_reason() {
    let (_d, mut cfg) = config_for(&component(INIT_OK, &on_critical("unreachable")));
    cfg.on_error = OnError::Drop;
    let stage = build(&cfg);
    let v = verdict(&stage, &mut critical());
    let reason = drop_reason(&v);
    assert!(
        reason.starts_with("wasm:test-plugin failed (on_error=drop): trapped:")
            && reason.contains("unreachable"),
        "{reason}"
    );
    assert_eq!(verdict(&stage, &mut warning()), Verdict::Pass);
}

#[test]
fn trap_with_on_error_disable_turns_the_stage_off_after_consecutive_failures() {
    let (_d, mut cfg) = config_for(&component(INIT_OK, &on_critical("unreachable")));
    cfg.on_error = OnError::Disable;
    cfg.disable_after = 3;
    let stage = build(&cfg);
    // Two failures, a success (resets the count), two failures: still on.
    for mk in [critical, critical, warning, critical, critical] {
        assert_eq!(verdict(&stage, &mut mk()), Verdict::Pass);
    }
    assert!(!stage.stats().disabled);
    // The third consecutive failure disables it.
    assert_eq!(verdict(&stage, &mut critical()), Verdict::Pass);
    let s = stage.stats();
    assert!(s.disabled);
    assert_eq!((s.calls, s.failures), (6, 5));
    // Disabled: everything passes without calling the plugin.
    for _ in 0..3 {
        assert_eq!(verdict(&stage, &mut critical()), Verdict::Pass);
    }
    let s = stage.stats();
    assert_eq!((s.calls, s.skipped_disabled), (6, 3));
}

#[test]
fn error_result_follows_on_error_and_keeps_the_instance() {
    let (_d, mut cfg) = config_for(&component(INIT_OK, ERR));
    cfg.on_error = OnError::Drop;
    let stage = build(&cfg);
    for _ in 0..2 {
        let v = verdict(&stage, &mut warning());
        assert!(
            drop_reason(&v).ends_with("returned an error: boom"),
            "{v:?}"
        );
    }
    let s = stage.stats();
    assert_eq!((s.failures, s.errors, s.instantiations), (2, 2, 1));
}

/// Replace: copy the event and set severity to CRITICAL (and optionally
/// break it by emptying `cluster`).
fn replace_body(break_cluster: bool) -> String {
    let verdict_event = 40;
    let sev = verdict_event + SEVERITY_OFFSET;
    let cluster_len = verdict_event + 16;
    let breaker = if break_cluster {
        format!("(i32.store (i32.const {cluster_len}) (i32.const 0))")
    } else {
        String::new()
    };
    format!(
        "(i32.store8 (i32.const 32) (i32.const 0)) (i32.store8 (i32.const 36) (i32.const 2))
    (memory.copy (i32.const {verdict_event}) (local.get $ev) (i32.const {EVENT_SIZE}))
    (i32.store8 (i32.const {sev}) (i32.const 4)) {breaker}
    (i32.const 32)"
    )
}

/// A native stage after the plugin: records the severity it sees.
struct Probe(Arc<Mutex<Vec<Severity>>>);

impl Stage for Probe {
    fn name(&self) -> &str {
        "probe"
    }
    fn process<'a>(&'a self, event: &'a mut Event) -> StageFuture<'a> {
        self.0.lock().unwrap().push(event.severity);
        StageFuture::Ready(Verdict::Pass)
    }
}

#[tokio::test]
async fn replace_verdict_flows_into_later_stages() {
    let (_d, cfg) = config_for(&component(INIT_OK, &replace_body(false)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stages: Vec<Box<dyn Stage>> =
        vec![cfg.build().expect("builds"), Box::new(Probe(seen.clone()))];
    let recorder = Arc::new(Recorder::new(stages.into()));
    let chain = StageChain::new(recorder.clone());
    let raw = warning().raw;
    recorder.received();
    let result = chain
        .process(RawPayload {
            data: (*raw).clone(),
            source: Arc::from("test"),
            cluster_fill: None,
            received_at: tokio::time::Instant::now(),
        })
        .await;
    let ChainResult::Passed(env) = result else {
        panic!("the event should pass both stages")
    };
    assert_eq!(env.event.severity, Severity::Critical);
    assert_eq!(*seen.lock().unwrap(), vec![Severity::Critical]);
    // Unchanged raw-json leaves the original payload as it was.
    assert_eq!(env.event.raw["severity"], "warning");
    assert_eq!(env.event.cluster, "prod-us-east-1");
    assert_eq!(recorder.stage_stats()[0].modified, 1);
}

#[test]
fn invalid_replacement_is_a_plugin_error() {
    let (_d, mut cfg) = config_for(&component(INIT_OK, &replace_body(true)));
    cfg.on_error = OnError::Drop;
    let stage = build(&cfg);
    let mut ev = warning();
    let v = verdict(&stage, &mut ev);
    assert!(
        drop_reason(&v).contains("invalid replacement event: missing required field `cluster`"),
        "{v:?}"
    );
    // The event was not touched.
    assert_eq!(ev.severity, Severity::Warning);
}

#[test]
fn guest_state_persists_between_events_until_a_trap() {
    // Counts calls in a global; drops the second event it sees; traps on
    // CRITICAL.
    let body = format!(
        "(global.set $n (i32.add (global.get $n) (i32.const 1)))
    (if (i32.eq (i32.load8_u offset={SEVERITY_OFFSET} (local.get $ev)) (i32.const 4)) (then unreachable))
    (if (i32.eq (global.get $n) (i32.const 2)) (then {DROP} return))
    {KEEP}"
    );
    let wat = plugin_wat("0.1.0", INIT_OK, &body).replacen(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 1) (global $n (mut i32) (i32.const 0))",
        1,
    );
    let (_d, cfg) = config_for(&componentize(&wat, WIT));
    let stage = build(&cfg);
    let dropped = |v: Verdict| matches!(v, Verdict::Drop { .. });
    let seq: Vec<bool> = [warning, warning, warning, critical, warning, warning]
        .iter()
        .map(|mk| dropped(verdict(&stage, &mut mk())))
        .collect();
    assert_eq!(seq, [false, true, false, false, false, true]);
}

fn build_err(cfg: &WasmStageConfig) -> String {
    match cfg.build() {
        Ok(_) => panic!("build should fail for {}", cfg.path.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_file_fails_build() {
    let cfg = WasmStageConfig::new("/nonexistent/plugin.wasm");
    let e = build_err(&cfg);
    assert!(
        e.starts_with("an existing WASM component file (cannot open it:"),
        "{e}"
    );
}

#[test]
fn invalid_module_fails_build() {
    let (_d, cfg) = config_for(b"this is not wasm at all");
    let e = build_err(&cfg);
    assert!(
        e.starts_with("a valid WebAssembly component (this file is not one:"),
        "{e}"
    );

    let (_d, cfg) = config_for(&wat::parse_str("(module)").unwrap());
    let e = build_err(&cfg);
    assert!(
        e.contains("this file is a core module") && e.contains("wasm32-wasip2"),
        "{e}"
    );

    let (_d, cfg) = config_for(&wat::parse_str("(component)").unwrap());
    let e = build_err(&cfg);
    assert!(
        e.contains(
            "a component exporting event-runner:plugin/filter@0.1.0; this one exports: none"
        ),
        "{e}"
    );
}

#[test]
fn wit_version_mismatch_fails_build() {
    let wit = WIT.replace("event-runner:plugin@0.1.0", "event-runner:plugin@0.2.0");
    let bytes = componentize(&plugin_wat("0.2.0", INIT_OK, KEEP), &wit);
    let (_d, cfg) = config_for(&bytes);
    let e = build_err(&cfg);
    assert!(
        e.contains("built against event-runner:plugin@0.2.0") && e.contains("WIT version mismatch"),
        "{e}"
    );
}

#[test]
fn wit_type_mismatch_fails_build() {
    // Same version, but the event record lost a field: the types differ.
    let wit = WIT.replace("        raw-json: string,\n", "");
    assert_ne!(wit, WIT);
    let bytes = componentize(&plugin_wat("0.1.0", INIT_OK, KEEP), &wit);
    let (_d, cfg) = config_for(&bytes);
    let e = build_err(&cfg);
    assert!(
        e.starts_with("a plugin matching event-runner:plugin@0.1.0 (WIT mismatch: ")
            && e.contains("fields"),
        "{e}"
    );
}

#[test]
fn init_error_and_init_timeout_fail_build() {
    let (_d, cfg) = config_for(&component(INIT_ERR, KEEP));
    let e = build_err(&cfg);
    assert_eq!(
        e,
        "a plugin whose init succeeds (init returned an error: boom)"
    );

    let (_d, cfg) = config_for(&component(&format!("{LOOP_FOREVER} (i32.const 16)"), KEEP));
    let start = Instant::now();
    let e = build_err(&cfg);
    assert_eq!(
        e,
        "a plugin whose init succeeds (init timed out after 5000 ms (interrupted))"
    );
    assert!(start.elapsed() < Duration::from_secs(8));
}

#[test]
fn memory_cap_below_initial_memory_fails_build() {
    let wat = plugin_wat("0.1.0", INIT_OK, KEEP).replacen(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 64)",
        1,
    );
    let (_d, mut cfg) = config_for(&componentize(&wat, WIT));
    cfg.max_memory_mb = 2;
    let e = build_err(&cfg);
    assert!(
        e.starts_with("a plugin that starts within max_memory_mb = 2 MiB"),
        "{e}"
    );
    cfg.max_memory_mb = 8;
    build(&cfg);
}

#[test]
fn config_is_read_and_errors_read_like_validate_output() {
    // The way runner-plugins/src/app/compile.rs reads and builds a wasm stage.
    let (dir, _) = config_for(&component(INIT_ERR, KEEP));
    let table: toml::Table = r#"path = "test-plugin.wasm"
        config = { deny = ["a", "b"] }
        on_error = "drop""#
        .parse()
        .unwrap();
    let ov = Overrides::new();
    let mut errors = ConfigErrors::default();
    let mut eff = Vec::new();
    let mut r = TableReader::new("stage[2]", table, &ov, &mut errors, &mut eff);
    let cfg = WasmStageConfig::read(&mut r, dir.path()).expect("reads");
    assert_eq!(cfg.config, vec![("deny".to_string(), "a,b".to_string())]);
    let e = cfg.build().err().expect("init fails");
    r.error("path", format!("{:?}", cfg.path.display().to_string()), e);
    r.finish();
    let text = errors.to_string();
    assert!(
        text.contains("stage[2].path: invalid value")
            && text
                .contains("allowed: a plugin whose init succeeds (init returned an error: boom)"),
        "{text}"
    );
}

/// A few WASI 0.2 functions a guest's standard library calls (a hash seed,
/// the environment, the clock), an outbound HTTP call (denied) and an
/// interface no host provides.
const WASI_SUBSET: &str = "package wasi:random@0.2.6;
interface insecure-seed { insecure-seed: func() -> tuple<u64, u64>; }
package wasi:cli@0.2.6 {
  interface environment { get-environment: func() -> list<tuple<string, string>>; }
}
package wasi:clocks@0.2.6 {
  interface monotonic-clock { now: func() -> u64; }
}
package wasi:http@0.2.10 {
  interface outgoing-handler { handle: func() -> u32; }
}
package wasi:keyvalue@0.2.0-draft {
  interface store { ping: func() -> u32; }
}";

fn wasi_world() -> String {
    WIT.replace(
        "world plugin {\n",
        "world plugin {\n    import wasi:random/insecure-seed@0.2.6;\n    import wasi:cli/environment@0.2.6;\n    import wasi:clocks/monotonic-clock@0.2.6;\n    import wasi:http/outgoing-handler@0.2.10;\n",
    )
}

fn with_wasi_imports(wat: &str) -> String {
    wat.replacen(
        "(memory (export \"memory\") 1)",
        "(import \"wasi:random/insecure-seed@0.2.6\" \"insecure-seed\" (func $seed (param i32)))
  (import \"wasi:cli/environment@0.2.6\" \"get-environment\" (func $env (param i32)))
  (import \"wasi:clocks/monotonic-clock@0.2.6\" \"now\" (func $now (result i64)))
  (import \"wasi:http/outgoing-handler@0.2.10\" \"handle\" (func $http (result i32)))
  (memory (export \"memory\") 1)
  (data (i32.const 3072) \"plugin panicked: boom at src/lib.rs:7:5\")",
        1,
    )
}

#[test]
fn wasi_gives_a_seed_a_clock_and_an_empty_environment_and_denies_http() {
    // Asks for a seed, the environment and the clock on every call (a
    // HashMap, the panic machinery and a timestamp would); a non-empty
    // environment or a clock that does not move traps; on CRITICAL it
    // tries an outbound HTTP call.
    let body = format!(
        "(local $t i64)
    (call $seed (i32.const 2048))
    (call $env (i32.const 2048))
    (if (i32.ne (i32.load (i32.const 2052)) (i32.const 0)) (then unreachable))
    (local.set $t (call $now))
    (if (i64.eqz (local.get $t)) (then unreachable))
    (if (i32.eq (i32.load8_u offset={SEVERITY_OFFSET} (local.get $ev)) (i32.const 4))
      (then (drop (call $http))))
    {KEEP}"
    );
    let wat = with_wasi_imports(&plugin_wat("0.1.0", INIT_OK, &body));
    let (_d, mut cfg) = config_for(&componentize_with(&wat, &wasi_world(), &[WASI_SUBSET]));
    cfg.on_error = OnError::Drop;
    let stage = build(&cfg);
    assert_eq!(verdict(&stage, &mut warning()), Verdict::Pass);
    let v = verdict(&stage, &mut critical());
    let reason = drop_reason(&v);
    assert!(
        reason.contains(
            "wasi:http/outgoing-handler@0.2.10#handle: outbound HTTP is not available to plugins (denied)"
        ) && reason.contains("trapped"),
        "{reason}"
    );
}

#[test]
fn an_import_the_runner_does_not_provide_fails_validate_naming_it() {
    let world = WIT.replace(
        "world plugin {\n",
        "world plugin {\n    import wasi:keyvalue/store@0.2.0-draft;\n",
    );
    let wat = plugin_wat("0.1.0", INIT_OK, KEEP).replacen(
        "(memory (export \"memory\") 1)",
        "(import \"wasi:keyvalue/store@0.2.0-draft\" \"ping\" (func $ping (result i32)))
  (memory (export \"memory\") 1)",
        1,
    );
    let (_d, cfg) = config_for(&componentize_with(&wat, &world, &[WASI_SUBSET]));
    let e = build_err(&cfg);
    assert_eq!(
        e,
        "a plugin that imports only what the runner provides (event-runner:plugin/host and WASI \
         0.2); wasm:test-plugin imports wasi:keyvalue/store@0.2.0-draft, which the runner does \
         not provide; a plugin gets its events and the host's log, WASI 0.2 without files, \
         network or environment, and nothing else: remove the code or dependency that imports them"
    );
}

#[test]
fn a_panic_in_init_reports_the_plugins_own_message() {
    // What a Rust guest with `plugin_kit::forward_panics` does when `init`
    // panics: the panic machinery reads the environment (RUST_BACKTRACE),
    // the hook logs the message at error level, then the guest aborts.
    let init = "(call $env (i32.const 2048))
    (call $log (i32.const 3) (i32.const 3072) (i32.const 39))
    unreachable";
    let wat = with_wasi_imports(&plugin_wat("0.1.0", init, KEEP));
    let (_d, cfg) = config_for(&componentize_with(&wat, &wasi_world(), &[WASI_SUBSET]));
    let e = build_err(&cfg);
    assert!(
        e.contains("plugin panicked: boom at src/lib.rs:7:5"),
        "the plugin's own message must be reported: {e}"
    );
    assert!(!e.contains("environment"), "{e}");

    // The same in a call: the drop reason carries the message.
    let body = "(call $env (i32.const 2048))
    (call $log (i32.const 3) (i32.const 3072) (i32.const 39))
    unreachable";
    let wat = with_wasi_imports(&plugin_wat("0.1.0", INIT_OK, body));
    let (_d, mut cfg) = config_for(&componentize_with(&wat, &wasi_world(), &[WASI_SUBSET]));
    cfg.on_error = OnError::Drop;
    let stage = build(&cfg);
    let v = verdict(&stage, &mut critical());
    assert!(
        drop_reason(&v).contains("plugin panicked: boom at src/lib.rs:7:5"),
        "{v:?}"
    );
}

#[test]
fn plugin_logs_are_tagged_sanitized_and_capped() {
    // Logs "bo\nm"-style text 40 times per event: only 16 lines are kept.
    let body = format!(
        "(local $i i32)
    (i32.store8 (i32.const 1026) (i32.const 10))
    (loop $again
      (call $log (i32.const 2) (i32.const 1024) (i32.const 4))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 40))))
    {KEEP}"
    );
    let (_d, cfg) = config_for(&component(INIT_OK, &body));
    let logs = capture_logs(|| {
        let stage = build(&cfg);
        assert_eq!(verdict(&stage, &mut warning()), Verdict::Pass);
    });
    let plugin_lines: Vec<&str> = logs.lines().filter(|l| l.contains(" plugin: ")).collect();
    // One from init (info "boom") and 16 from the call (warn "bo m").
    assert_eq!(plugin_lines.len(), 17, "{logs}");
    assert!(
        plugin_lines[1].contains("WARN plugin: bo m stage=wasm:test-plugin"),
        "tagged, control characters replaced: {logs}"
    );
    assert!(
        logs.contains("plugin log lines dropped") && logs.contains("suppressed=24"),
        "{logs}"
    );
}

#[test]
fn disabling_logs_one_loud_line() {
    let (_d, mut cfg) = config_for(&component(INIT_OK, "unreachable"));
    cfg.on_error = OnError::Disable;
    cfg.disable_after = 2;
    let logs = capture_logs(|| {
        let stage = build(&cfg);
        for _ in 0..6 {
            assert_eq!(verdict(&stage, &mut critical()), Verdict::Pass);
        }
        assert_eq!(stage.stats().failures, 2);
    });
    assert_eq!(logs.matches("WASM plugin failed").count(), 2, "{logs}");
    let loud: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WASM STAGE DISABLED"))
        .collect();
    assert_eq!(loud.len(), 1, "{logs}");
    assert!(
        loud[0].contains("ERROR") && loud[0].contains("after 2 consecutive failures"),
        "{logs}"
    );
}
