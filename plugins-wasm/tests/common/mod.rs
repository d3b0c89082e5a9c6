//! Test helpers: hand-written plugins (core WAT wrapped into components
//! against our WIT, as wit-bindgen guests are) and the built examples.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use plugins_wasm::{WasmStage, WasmStageConfig};
use runner_core::{Event, Stage, Verdict};

pub(crate) const WIT: &str = include_str!("../../wit/event-runner-plugin.wit");

/// A flat payload; `sev` is the severity, `ns` the namespace.
pub(crate) fn event(ns: &str, kind: &str, fault_type: &str, sev: &str, context: &str) -> Event {
    let v = serde_json::json!({
        "subscriptionId": "sub-1", "cluster": "prod-us-east-1", "faultId": "f-1",
        "faultType": fault_type, "severity": sev,
        "resource": {"apiVersion": "v1", "kind": kind, "name": "api-7d9f", "namespace": ns, "uid": "u-1"},
        "context": context, "timestamp": "2025-12-20T14:02:11Z"
    });
    Event::from_str(&v.to_string(), None).expect("valid test event")
}

pub(crate) fn verdict(stage: &dyn Stage, ev: &mut Event) -> Verdict {
    match stage.process(ev) {
        runner_core::StageFuture::Ready(v) => v,
        runner_core::StageFuture::Pending(_) => panic!("WASM stages answer synchronously"),
    }
}

/// Memory layout offsets of the canonical-ABI `event` record (see the WIT):
/// severity is the u8 at 68; the record is 100 bytes.
pub(crate) const SEVERITY_OFFSET: u32 = 68;
pub(crate) const EVENT_SIZE: u32 = 100;

/// Core-module WAT of a plugin. `filter` gets the event pointer in `$ev`
/// and returns a pointer to `result<verdict, string>`; the return area at
/// 32 is free to use, 1024.. holds the string "boom", 2048.. is scratch.
pub(crate) fn plugin_wat(version: &str, init_body: &str, filter_body: &str) -> String {
    format!(
        r#"(module
  (import "event-runner:plugin/host@{version}" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 1024) "boom")
  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $new i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                           (i32.xor (i32.sub (local.get $align) (i32.const 1)) (i32.const -1))))
    (global.set $heap (i32.add (local.get $p) (local.get $new)))
    (block $ok (loop $grow
      (br_if $ok (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
      (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
      (br $grow)))
    (local.get $p))
  (func (export "event-runner:plugin/filter@{version}#init") (param $cfg i32) (param $n i32) (result i32)
    {init_body})
  (func (export "event-runner:plugin/filter@{version}#filter") (param $ev i32) (result i32)
    {filter_body})
  ;; Arguments are copied in with cabi_realloc; free them after each call.
  (func (export "cabi_post_event-runner:plugin/filter@{version}#filter") (param i32)
    (global.set $heap (i32.const 4096)))
)"#
    )
}

/// `init` that logs "boom" at info level and succeeds.
pub(crate) const INIT_OK: &str = "(call $log (i32.const 1) (i32.const 1024) (i32.const 4))
    (i32.store8 (i32.const 16) (i32.const 0)) (i32.const 16)";
/// `init` that returns `err("boom")`.
pub(crate) const INIT_ERR: &str = "(i32.store8 (i32.const 16) (i32.const 1))
    (i32.store (i32.const 20) (i32.const 1024)) (i32.store (i32.const 24) (i32.const 4)) (i32.const 16)";
/// `filter` returning `ok(keep)`.
pub(crate) const KEEP: &str = "(i32.store8 (i32.const 32) (i32.const 0)) (i32.store8 (i32.const 36) (i32.const 0)) (i32.const 32)";
/// `filter` returning `ok(drop("boom"))`.
pub(crate) const DROP: &str = "(i32.store8 (i32.const 32) (i32.const 0)) (i32.store8 (i32.const 36) (i32.const 1))
    (i32.store (i32.const 40) (i32.const 1024)) (i32.store (i32.const 44) (i32.const 4)) (i32.const 32)";
/// `filter` returning `err("boom")`.
pub(crate) const ERR: &str = "(i32.store8 (i32.const 32) (i32.const 1))
    (i32.store (i32.const 36) (i32.const 1024)) (i32.store (i32.const 40) (i32.const 4)) (i32.const 32)";

/// `body` runs first when the event's severity is CRITICAL; otherwise keep.
pub(crate) fn on_critical(body: &str) -> String {
    format!(
        "(if (i32.eq (i32.load8_u offset={SEVERITY_OFFSET} (local.get $ev)) (i32.const 4)) (then {body}))
    {KEEP}"
    )
}

/// Wraps a core module into a component for the `plugin` world of `wit`,
/// the way wit-bindgen + wasm-component-ld do for Rust guests.
pub(crate) fn componentize(core_wat: &str, wit: &str) -> Vec<u8> {
    componentize_with(core_wat, wit, &[])
}

/// Like [`componentize`], with extra WIT packages (e.g. WASI) the world
/// may import.
pub(crate) fn componentize_with(core_wat: &str, wit: &str, deps: &[&str]) -> Vec<u8> {
    let mut module = wat::parse_str(core_wat).expect("test WAT parses");
    let mut resolve = wit_parser::Resolve::default();
    for (i, dep) in deps.iter().enumerate() {
        resolve
            .push_str(format!("dep{i}.wit"), dep)
            .expect("dependency WIT parses");
    }
    let pkg = resolve
        .push_str("event-runner-plugin.wit", wit)
        .expect("test WIT parses");
    let world = resolve
        .select_world(&[pkg], Some("plugin"))
        .expect("world plugin");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embed WIT metadata");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("module accepted")
        .validate(true)
        .encode()
        .expect("component encodes")
}

/// A component for the current WIT from an init and a filter body.
pub(crate) fn component(init_body: &str, filter_body: &str) -> Vec<u8> {
    componentize(&plugin_wat("0.1.0", init_body, filter_body), WIT)
}

/// Writes `bytes` to a temp file and returns a config pointing at it; the
/// directory lives as long as the returned guard.
pub(crate) fn config_for(bytes: &[u8]) -> (tempfile::TempDir, WasmStageConfig) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test-plugin.wasm");
    std::fs::write(&path, bytes).unwrap();
    (dir, WasmStageConfig::new(path))
}

pub(crate) fn build(cfg: &WasmStageConfig) -> WasmStage {
    cfg.build_stage()
        .unwrap_or_else(|e| panic!("build failed: {e}"))
}

fn wasm_target_installed() -> bool {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib/wasm32-wasip2")
        .is_dir()
}

/// The built example plugin `name` (e.g. `redactor`). Builds the examples
/// once per test binary (a no-op when `.ci/run` already did). Without the
/// wasm32-wasip2 target (`rust-toolchain.toml` lists it, so rustup installs
/// it) the test fails: a test that cannot run must not pass.
pub(crate) fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    BUILT.get_or_init(|| {
        assert!(
            wasm_target_installed(),
            "the wasm32-wasip2 target is not installed for this toolchain: \
             rust-toolchain.toml lists it; run `rustup target add wasm32-wasip2` \
             (or let rustup install the toolchain file) to test the example plugins"
        );
        let out = Command::new("bash")
            .arg(here.join("build-examples.sh"))
            .output()
            .expect("run build-examples.sh");
        assert!(
            out.status.success(),
            "building the example plugins failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let path = here.join("examples/dist").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} missing after build", path.display());
    path
}

/// Captures what the runner would log on this thread while `f` runs. One
/// global subscriber for the whole test binary (scoped subscribers race
/// with other tests over tracing's callsite cache); it writes into the
/// buffer of the thread that logs, if that thread is capturing.
pub(crate) fn capture_logs(f: impl FnOnce()) -> String {
    use std::cell::RefCell;
    thread_local! {
        static BUF: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    }
    struct ThreadBuf;
    impl std::io::Write for ThreadBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            BUF.with(|buf| {
                if let Some(v) = buf.borrow_mut().as_mut() {
                    v.extend_from_slice(b);
                }
            });
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_writer(|| ThreadBuf)
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .init();
    });
    BUF.with(|b| *b.borrow_mut() = Some(Vec::new()));
    f();
    let out = BUF.with(|b| b.borrow_mut().take()).unwrap_or_default();
    String::from_utf8(out).unwrap()
}
