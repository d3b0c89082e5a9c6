//! End to end: `runner plugin new --lang rust|ts|python NAME` scaffolds a
//! folder outside the repository that builds with the toolchains CI
//! installs (its own build.sh) and passes its own `runner test` cases.
//! One test per language, each building once.

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::{runner_bin, workspace_root};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Scaffolds `name` in a temp dir, runs its build.sh with `env`, then
/// `runner test tests.toml` there; checks both.
fn scaffold_build_and_test(lang: &str, name: &str, env: &[(&str, PathBuf)]) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(runner_bin())
        .args(["plugin", "new", "--lang", lang, "--dir"])
        .arg(dir.path())
        .arg(name)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let root = dir.path().join(name);
    assert!(root.join("wit/event-runner-plugin.wit").is_file());

    let mut build = Command::new(root.join("build.sh"));
    build.current_dir(&root);
    for (k, v) in env {
        build.env(k, v);
    }
    let out = build.output().unwrap();
    assert!(
        out.status.success(),
        "{lang} build failed (exit {:?}):\n{}\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(root.join(format!("{name}.wasm")).is_file());

    let out = Command::new(runner_bin())
        .args(["test", "tests.toml"])
        .current_dir(&root)
        .env(
            "WASM_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache"),
        )
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("2 cases: 2 passed, 0 failed"), "{stdout}");
    // The plugin's own init log: it really ran.
    assert!(
        stderr.contains(&format!("{name}: dropping NoisyProbe")),
        "{stderr}"
    );
}

/// A toolchain from the environment, else where `.ci/run` installs it;
/// missing fails the test with the install line.
fn tool(env: &str, default: &str, install: &str) -> PathBuf {
    let p = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(default));
    assert!(
        p.exists(),
        "{} not found ({env}); install: {install}",
        p.display()
    );
    p
}

#[test]
fn rust_scaffold_builds_offline_and_passes_its_test() {
    // Offline: the crates come from the local registry cache that
    // plugins-wasm/build-examples.sh fills (same wit-bindgen version).
    // Its own target dir under the test tmp dir, kept between runs.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-rust-target");
    scaffold_build_and_test(
        "rust",
        "rust-scaffold",
        &[
            ("CARGO_FLAGS", PathBuf::from("--offline")),
            ("CARGO_TARGET_DIR", target),
        ],
    );
}

#[test]
fn typescript_scaffold_builds_and_passes_its_test() {
    let node_bin = tool(
        "NODE_BIN",
        ".ci/node/node_modules/.bin",
        "npm install --prefix .ci/node typescript@7.0.2 @bytecodealliance/componentize-js@0.23.0 @bytecodealliance/preview2-shim@0.25.0",
    );
    scaffold_build_and_test("ts", "ts-scaffold", &[("NODE_BIN", node_bin)]);
}

#[test]
fn python_scaffold_builds_and_passes_its_test() {
    let cpy = tool(
        "COMPONENTIZE_PY",
        ".ci/venv/bin/componentize-py",
        "python3 -m venv .ci/venv && .ci/venv/bin/pip install componentize-py==0.25.1",
    );
    scaffold_build_and_test("python", "py-scaffold", &[("COMPONENTIZE_PY", cpy)]);
}
