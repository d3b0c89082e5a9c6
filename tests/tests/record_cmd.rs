//! End to end: `runner record` against the test MCP server on loopback:
//! what the source receives lands in a JSON-lines file (mode 0600) that
//! `runner replay` and `runner test` read back; the size cap stops the
//! recording with one warning and whole lines only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{Runner, quick_sink_toml, runner_bin};
use mcp_testserver::{Scenario, TestServer, fault};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn config(url: &str) -> String {
    format!(
        "[[source]]\nkind = \"mcp\"\nname = \"live\"\nendpoint = \"{url}\"\n\n{}",
        quick_sink_toml(Path::new("{dir}/incidents"))
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls until `path` has `n` lines; every poll has a deadline.
async fn wait_lines(path: &Path, n: usize, r: &Runner) {
    let deadline = Instant::now() + T;
    while lines(path).len() < n {
        assert!(
            Instant::now() < deadline,
            "{} has {} of {n} lines\n{}",
            path.display(),
            lines(path).len(),
            r.dump()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_what_the_source_receives_for_replay_and_test() {
    let server = TestServer::start(Scenario::empty()).await.unwrap();
    let c = server.control();
    let mut r = Runner::builder(&config(&server.url()))
        .subcommand("record")
        .arg("--out")
        .arg("rec.jsonl")
        .spawn();
    assert!(c.wait_for_subscriber(1, T).await, "{}", r.dump());
    c.storm(3, 0).await;
    c.malformed(1).await; // "not an object": recorded as received
    let rec = r.dir().join("rec.jsonl");
    wait_lines(&rec, 4, &r).await;
    let status = r.stop(T).await;
    assert_eq!(status.code(), Some(0), "{}", r.dump());
    assert!(
        r.dump().contains("recorded 4 payloads (")
            && r.dump().contains("stopped: SIGTERM received"),
        "{}",
        r.dump()
    );

    let got = lines(&rec);
    assert_eq!(got.len(), 4, "{got:?}");
    for (i, l) in got[..3].iter().enumerate() {
        // As the source received it: the server's payload plus the
        // subscription id it adds; the timestamp is the send time.
        let mut v: Value = serde_json::from_str(l).unwrap();
        let mut want = fault(i as u64);
        for k in ["timestamp", "subscriptionId"] {
            assert!(v[k].is_string(), "line {}: {k} in {l}", i + 1);
            v.as_object_mut().unwrap().remove(k);
            want.as_object_mut().unwrap().remove(k);
        }
        assert_eq!(v, want, "line {}", i + 1);
    }
    assert_eq!(got[3], "\"not an object\"");
    let mode = std::fs::metadata(&rec).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "payloads may hold secrets");

    // A second record into the same file is refused (no silent overwrite).
    let again = Command::new(runner_bin())
        .args(["record", "--out"])
        .arg(&rec)
        .arg("--config")
        .arg(r.dir().join("pipeline.toml"))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("the file exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The recording feeds replay...
    let replay = Command::new(runner_bin())
        .arg("replay")
        .arg(&rec)
        .arg("--config")
        .arg(r.dir().join("pipeline.toml"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&replay.stdout);
    assert!(replay.status.success(), "{out}");
    assert!(
        out.contains("summary: received 4 | would run agent 3"),
        "{out}"
    );
    assert!(out.contains("  invalid         1"), "{out}");

    // ...and runner test, line by line.
    let t = r.dir().join("cases.toml");
    std::fs::write(
        &t,
        "[[stage]]\nkind = \"severity\"\nthreshold = \"ERROR\"\n\n\
         [[case]]\nname = \"recorded faults pass\"\ninput_file = \"rec.jsonl\"\nline = 1\nexpect = \"passed\"\nfields = { cluster = \"kind-events-test\", \"resource.name\" = \"workload-0\" }\n\n\
         [[case]]\nname = \"the garbage line is invalid\"\ninput_file = \"rec.jsonl\"\nline = 4\nexpect = \"invalid\"\n",
    )
    .unwrap();
    let test = Command::new(runner_bin())
        .arg("test")
        .arg(&t)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&test.stdout);
    assert_eq!(test.status.code(), Some(0), "{out}");
    assert!(out.contains("2 cases: 2 passed, 0 failed"), "{out}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_cap_stops_recording_once_with_whole_lines() {
    let server = TestServer::start(Scenario::empty()).await.unwrap();
    let c = server.control();
    // A fault payload is ~400 bytes: two fit, the third does not.
    let one = serde_json::to_vec(&fault(0)).unwrap().len() as u64 + 1;
    let cap = 2 * one + one / 2;
    // Recording runs the sources only: a plugin that does not load (the
    // one being debugged) does not stop it.
    let cfg = config(&server.url()).replace(
        "\n\n[sink]",
        "\n\n[[stage]]\nkind = \"wasm\"\npath = \"not-built-yet.wasm\"\n\n[sink]",
    );
    assert!(cfg.contains("not-built-yet.wasm"), "{cfg}");
    let mut r = Runner::builder(&cfg)
        .subcommand("record")
        .arg("--out")
        .arg("rec.jsonl")
        .arg("--max-bytes")
        .arg(cap.to_string())
        .spawn();
    assert!(c.wait_for_subscriber(1, T).await, "{}", r.dump());
    c.storm(6, 0).await;
    // It stops by itself at the cap.
    let status = r
        .wait_exit(T)
        .await
        .unwrap_or_else(|| panic!("still recording past the cap\n{}", r.dump()));
    assert_eq!(status.code(), Some(0), "{}", r.dump());
    let rec = r.dir().join("rec.jsonl");
    let got = lines(&rec);
    assert_eq!(got.len(), 2, "{got:?}");
    for l in &got {
        serde_json::from_str::<Value>(l).expect("whole JSON lines only");
    }
    assert!(std::fs::metadata(&rec).unwrap().len() <= cap);
    assert_eq!(
        r.count("recording stopped: the next payload would pass the size cap (--max-bytes)"),
        1,
        "{}",
        r.dump()
    );
    assert!(
        r.dump()
            .contains(&format!("stopped: size cap of {cap} bytes reached")),
        "{}",
        r.dump()
    );
    server.shutdown().await;
}
