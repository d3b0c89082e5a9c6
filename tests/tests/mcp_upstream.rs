//! The real upstream kubernetes-mcp-server (npm package
//! `kubernetes-mcp-server-linux-amd64`) has no event streaming: the runner
//! must exit non-zero with a message that says so and names the build to use.
//!
//! `.ci/run` installs the package and exports `K8S_MCP_UPSTREAM_BIN`. When
//! the variable is unset this test installs the package itself with npm
//! (it never passes without having run the server).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{Runner, free_port, quick_sink_toml};

const PACKAGE: &str = "kubernetes-mcp-server-linux-amd64";

fn upstream_bin(tmp: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("K8S_MCP_UPSTREAM_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "K8S_MCP_UPSTREAM_BIN={} does not exist",
            p.display()
        );
        return p;
    }
    let status = Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(tmp)
        .arg(PACKAGE)
        .status()
        .expect("K8S_MCP_UPSTREAM_BIN is unset and npm cannot be run");
    assert!(status.success(), "npm install {PACKAGE} failed");
    let p = tmp
        .join("node_modules")
        .join(PACKAGE)
        .join("bin")
        .join(PACKAGE);
    assert!(p.is_file(), "{} missing after npm install", p.display());
    p
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_healthy(port: u16, server: &mut KillOnDrop) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("http://127.0.0.1:{port}/healthz");
    loop {
        if let Ok(r) = reqwest::get(&url).await
            && r.status().is_success()
        {
            return;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("upstream server exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "upstream server not healthy on {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_server_without_event_streaming_is_a_clear_fatal_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = upstream_bin(tmp.path());
    // A loadable kubeconfig whose API server is unreachable: the server
    // starts and serves MCP (docs/mcp-events-protocol.md, "Upstream server").
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\ncontexts:\n- name: dead\n  context:\n    cluster: dead\n    user: nobody\ncurrent-context: dead\nusers:\n- name: nobody\n  user:\n    token: not-a-real-token\n",
    )
    .unwrap();
    let port = free_port();
    let mut server = KillOnDrop(
        Command::new(&bin)
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind-address", "127.0.0.1", "--kubeconfig"])
            .arg(&kubeconfig)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start upstream kubernetes-mcp-server"),
    );
    wait_healthy(port, &mut server).await;

    let cfg = format!(
        "[settings]\nlog_format = \"json\"\n\n[[source]]\nkind = \"mcp\"\nname = \"upstream\"\nendpoint = \"http://127.0.0.1:{port}/mcp\"\nrequest_timeout_seconds = 5\n\n{}",
        quick_sink_toml(Path::new("{dir}/incidents"))
    );
    let mut r = Runner::start(&cfg);
    let status = r
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("runner kept running against upstream\n{}", r.dump()));
    assert_eq!(status.code(), Some(1), "{}", r.dump());
    let all = r.lines().join("\n");
    assert!(all.contains("lacks event streaming"), "{all}");
    assert!(all.contains("kubernetes-mcp-server-with-events"), "{all}");
    assert!(all.contains("unknown tool"), "{all}");
}
