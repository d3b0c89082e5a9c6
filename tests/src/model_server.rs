//! A scripted model endpoint on loopback that speaks just enough of three
//! wire protocols for the real agent CLIs to run a short tool-using
//! session: Anthropic Messages (SSE), OpenAI Responses (SSE) and Gemini
//! `streamGenerateContent` (SSE). Every request is recorded.
//!
//! The script is one list of steps shared by all protocols. The step to
//! answer is the number of tool results already in the conversation, so
//! each CLI walks through the script one tool call per turn whatever the
//! tool's result was (denied, failed or fine); past the end the model says
//! "done". Requests that offer no tools (titles, summaries) get plain text.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One model turn.
#[derive(Debug, Clone)]
pub enum Step {
    /// Run a shell command with the CLI's shell tool.
    Shell(String),
    /// Write a file (relative to the working directory) with the CLI's
    /// write tool (codex: a shell heredoc, it has no other write tool).
    Write { path: String, content: String },
}

/// A request the model endpoint received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub body: String,
}

struct Inner {
    script: Vec<Step>,
    requests: Mutex<Vec<Recorded>>,
    /// Never answer (accept, read, then hold the connection).
    hang: bool,
}

pub struct ModelServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl ModelServer {
    pub async fn start(script: Vec<Step>) -> ModelServer {
        Self::start_inner(script, false).await
    }

    /// An endpoint that accepts every request and never answers.
    pub async fn hanging() -> ModelServer {
        Self::start_inner(Vec::new(), true).await
    }

    async fn start_inner(script: Vec<Step>, hang: bool) -> ModelServer {
        let inner = Arc::new(Inner {
            script,
            requests: Mutex::new(Vec::new()),
            hang,
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind model server");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ModelServer { addr, inner, task }
    }

    /// `http://127.0.0.1:PORT` (no path).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().expect("lock").clone()
    }

    /// Every request body, concatenated (to search for leaked secrets).
    pub fn all_bodies(&self) -> String {
        self.requests()
            .into_iter()
            .map(|r| r.body)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(inner): State<Arc<Inner>>, uri: Uri, body: Bytes) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).into_owned();
    inner.requests.lock().expect("lock").push(Recorded {
        path: path.clone(),
        body: text,
    });
    if inner.hang {
        std::future::pending::<()>().await;
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let p = uri.path();
    if p.ends_with("/messages") {
        sse(anthropic(&inner.script, &req))
    } else if p.ends_with("/responses") {
        sse(openai(&inner.script, &req))
    } else if p.contains("GenerateContent") {
        sse(gemini(&inner.script, &req))
    } else {
        (StatusCode::NOT_FOUND, "not found").into_response()
    }
}

fn sse(events: Vec<(Option<&'static str>, Value)>) -> Response {
    let mut out = String::new();
    for (name, data) in events {
        if let Some(n) = name {
            out.push_str(&format!("event: {n}\n"));
        }
        out.push_str(&format!("data: {data}\n\n"));
    }
    ([(header::CONTENT_TYPE, "text/event-stream")], out).into_response()
}

fn count_blocks(v: &Value, array_key: &str, pred: impl Fn(&Value) -> bool) -> usize {
    v.get(array_key)
        .and_then(Value::as_array)
        .map(|items| items.iter().filter(|i| pred(i)).count())
        .unwrap_or(0)
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn has_tool(req: &Value, name: &str) -> bool {
    req.get("tools").and_then(Value::as_array).is_some_and(|t| {
        t.iter()
            .any(|x| x.get("name").and_then(Value::as_str) == Some(name))
    })
}

fn anthropic(script: &[Step], req: &Value) -> Vec<(Option<&'static str>, Value)> {
    let id = next_id();
    let model = req.get("model").cloned().unwrap_or(json!("claude"));
    // Tool results so far: one per step already answered.
    let step = req
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    count_blocks(m, "content", |c| {
                        c.get("type").and_then(Value::as_str) == Some("tool_result")
                    })
                })
                .sum::<usize>()
        })
        .unwrap_or(0);
    let tool = if has_tool(req, "Bash") {
        script.get(step)
    } else {
        None
    };
    let mut ev = vec![(
        Some("message_start"),
        json!({"type":"message_start","message":{"id":format!("msg_{id}"),"type":"message","role":"assistant","model":model,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":100,"output_tokens":1}}}),
    )];
    let stop = match tool {
        None => {
            ev.push((Some("content_block_start"), json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})));
            ev.push((Some("content_block_delta"), json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"done"}})));
            "end_turn"
        }
        Some(s) => {
            let (name, input) = match s {
                Step::Shell(c) => (
                    "Bash",
                    json!({"command": c, "description": "scripted step"}),
                ),
                Step::Write { path, content } => {
                    ("Write", json!({"file_path": path, "content": content}))
                }
            };
            ev.push((Some("content_block_start"), json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":format!("toolu_{id}"),"name":name,"input":{}}})));
            ev.push((Some("content_block_delta"), json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":input.to_string()}})));
            "tool_use"
        }
    };
    ev.push((
        Some("content_block_stop"),
        json!({"type":"content_block_stop","index":0}),
    ));
    ev.push((Some("message_delta"), json!({"type":"message_delta","delta":{"stop_reason":stop,"stop_sequence":null},"usage":{"output_tokens":10}})));
    ev.push((Some("message_stop"), json!({"type":"message_stop"})));
    ev
}

/// A shell command that writes `content` to `path` (codex has no write tool
/// under the fallback model metadata).
fn heredoc(path: &str, content: &str) -> String {
    format!(
        "mkdir -p \"$(dirname '{path}')\" && cat > '{path}' <<'RUNNER_EOF'\n{content}\nRUNNER_EOF"
    )
}

fn openai(script: &[Step], req: &Value) -> Vec<(Option<&'static str>, Value)> {
    let id = next_id();
    let step = count_blocks(req, "input", |i| {
        i.get("type").and_then(Value::as_str) == Some("function_call_output")
    });
    let item = match script.get(step).filter(|_| has_tool(req, "exec_command")) {
        Some(s) => {
            let cmd = match s {
                Step::Shell(c) => c.clone(),
                Step::Write { path, content } => heredoc(path, content),
            };
            json!({"type":"function_call","id":format!("fc_{id}"),"call_id":format!("call_{id}"),"name":"exec_command","arguments":json!({"cmd": cmd}).to_string(),"status":"completed"})
        }
        None => {
            json!({"type":"message","id":format!("m_{id}"),"role":"assistant","status":"completed","content":[{"type":"output_text","text":"done","annotations":[]}]})
        }
    };
    vec![
        (
            Some("response.created"),
            json!({"type":"response.created","response":{"id":format!("resp_{id}")}}),
        ),
        (
            Some("response.output_item.done"),
            json!({"type":"response.output_item.done","output_index":0,"item":item}),
        ),
        (
            Some("response.completed"),
            json!({"type":"response.completed","response":{"id":format!("resp_{id}"),"output":[],"usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":0},"output_tokens":10,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":110}}}),
        ),
    ]
}

fn gemini(script: &[Step], req: &Value) -> Vec<(Option<&'static str>, Value)> {
    let step = req
        .get("contents")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| count_blocks(c, "parts", |p| p.get("functionResponse").is_some()))
                .sum::<usize>()
        })
        .unwrap_or(0);
    let part = match script.get(step).filter(|_| req.get("tools").is_some()) {
        Some(Step::Shell(c)) => {
            json!({"functionCall":{"name":"run_shell_command","args":{"command": c}}})
        }
        Some(Step::Write { path, content }) => {
            json!({"functionCall":{"name":"write_file","args":{"file_path": path, "content": content}}})
        }
        None => json!({"text": "done"}),
    };
    vec![(
        None,
        json!({"candidates":[{"content":{"role":"model","parts":[part]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":100,"candidatesTokenCount":10,"totalTokenCount":110}}),
    )]
}
