//! The setup most end-to-end tests repeat: the in-process MCP test server
//! on loopback, the real runner on a pipeline that points at it, and a
//! deadline for the runner's subscription.

use std::time::Duration;

use mcp_testserver::{Scenario, TestServer};

use crate::Runner;

/// Starts an empty test server and the runner on the pipeline `config(url)`
/// (`url` is the server's MCP endpoint), then waits at most `timeout` until
/// the runner has subscribed. Panics with the runner's log when it does not.
pub async fn subscribed(
    config: impl FnOnce(&str) -> String,
    timeout: Duration,
) -> (TestServer, Runner) {
    let server = TestServer::start(Scenario::empty())
        .await
        .expect("start the MCP test server");
    let runner = Runner::start(&config(&server.url()));
    assert!(
        server.control().wait_for_subscriber(1, timeout).await,
        "the runner did not subscribe within {timeout:?}\n{}",
        runner.dump()
    );
    (server, runner)
}
