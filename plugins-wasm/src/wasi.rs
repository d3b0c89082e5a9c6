//! WASI 0.2 for plugins, granting nothing: the interfaces a component from
//! the mainstream toolchains imports are all linked (so it loads as built),
//! but the context behind them has no preopened directories, an empty
//! environment, no arguments, stdin closed, no sockets and no name lookups.
//! Clocks and random numbers are real: they reveal nothing of the host a
//! plugin could misuse, and language runtimes need them (hash seeds, time
//! stamps in logs). stdout/stderr become the plugin's log lines.

use std::pin::Pin;
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use crate::log::{SharedLog, Stdio};

/// The deny-by-default context of one plugin instance.
pub(crate) fn context(log: &SharedLog) -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    b.stdout(LogStream {
        log: log.clone(),
        stream: Stdio::Stdout,
    })
    .stderr(LogStream {
        log: log.clone(),
        stream: Stdio::Stderr,
    })
    // Address checks deny everything by default as well; these make the
    // socket interfaces refuse before any address is looked at.
    .allow_tcp(false)
    .allow_udp(false)
    .allow_ip_name_lookup(false);
    b.build()
}

/// Adds every WASI 0.2 interface wasmtime-wasi implements to `linker`.
pub(crate) fn add_to_linker<T: wasmtime_wasi::WasiView>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)
}

/// The plugin's stdout or stderr, written into its call log.
#[derive(Clone)]
struct LogStream {
    log: SharedLog,
    stream: Stdio,
}

impl LogStream {
    fn append(&self, bytes: &[u8]) {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(self.stream, bytes);
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        // The call log bounds what it keeps; any write is accepted at once.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// WASI 0.2 interfaces the host implements (with the context above).
const PROVIDED: &[&str] = &[
    "wasi:io/poll",
    "wasi:io/error",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// WASI 0.2 interfaces a toolchain links in by default (componentize-js
/// for `fetch`) that the host refuses: each function traps with a message
/// saying so. Outbound HTTP would let a plugin send event data anywhere.
const DENIED: &[(&str, &str)] = &[
    (
        "wasi:http/types",
        "outbound HTTP is not available to plugins",
    ),
    (
        "wasi:http/outgoing-handler",
        "outbound HTTP is not available to plugins",
    ),
];

fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((base, v)) => (base, Some(v)),
        None => (name, None),
    }
}

fn is_wasi_02(version: Option<&str>) -> bool {
    version.is_some_and(|v| v.starts_with("0.2."))
}

/// How the host treats one import of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImportKind {
    /// `event-runner:plugin/host` (its version is checked elsewhere).
    Host,
    Provided,
    Denied(&'static str),
    Unsatisfiable,
}

pub(crate) fn classify(name: &str) -> ImportKind {
    let (base, version) = split_version(name);
    if base == "event-runner:plugin/host" {
        return ImportKind::Host;
    }
    if !is_wasi_02(version) {
        return ImportKind::Unsatisfiable;
    }
    if PROVIDED.contains(&base) {
        return ImportKind::Provided;
    }
    match DENIED.iter().find(|(b, _)| *b == base) {
        Some((_, why)) => ImportKind::Denied(why),
        None => ImportKind::Unsatisfiable,
    }
}

/// The sentence `validate` prints for imports the host cannot satisfy.
pub(crate) fn unsatisfiable_message(stage: &str, names: &[String]) -> String {
    let wasi03 = names.iter().any(|n| {
        n.starts_with("wasi:") && split_version(n).1.is_some_and(|v| v.starts_with("0.3"))
    });
    let hint = if wasi03 {
        "; WASI 0.3 is not supported yet: build for WASI 0.2 (wasm32-wasip2, the JavaScript \
         and Python toolchains' default)"
    } else {
        "; a plugin gets its events and the host's log, WASI 0.2 without files, network or \
         environment, and nothing else: remove the code or dependency that imports them"
    };
    format!(
        "a plugin that imports only what the runner provides (event-runner:plugin/host and WASI \
         0.2); {stage} imports {}, which the runner does not provide{hint}",
        names.join(", ")
    )
}

/// Links the denied interfaces the component imports to functions that
/// trap with the reason. Resources those interfaces borrow from `wasi:io`
/// (streams, pollables, errors) are linked to the same types the WASI
/// implementation uses, so the types line up.
pub(crate) fn link_denied<T: 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    component: &wasmtime::component::Component,
) -> wasmtime::Result<()> {
    use wasmtime::component::ResourceType;
    use wasmtime::component::types::ComponentItem;
    use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, IoError};

    let engine = crate::engine();
    let ty = component.component_type();
    // The component's view of wasi:io's resources, to recognise them when
    // a denied interface re-exports them.
    let mut io_resources: Vec<(ResourceType, ResourceType)> = Vec::new();
    for (name, item) in ty.imports(engine) {
        let (base, _) = split_version(name);
        let ComponentItem::ComponentInstance(inst) = item.ty else {
            continue;
        };
        for (export, item) in inst.exports(engine) {
            let ComponentItem::Resource(r) = item.ty else {
                continue;
            };
            let host = match (base, export) {
                ("wasi:io/poll", "pollable") => ResourceType::host::<DynPollable>(),
                ("wasi:io/streams", "input-stream") => ResourceType::host::<DynInputStream>(),
                ("wasi:io/streams", "output-stream") => ResourceType::host::<DynOutputStream>(),
                ("wasi:io/error", "error") => ResourceType::host::<IoError>(),
                _ => continue,
            };
            io_resources.push((r, host));
        }
    }
    for (name, item) in ty.imports(engine) {
        let ImportKind::Denied(why) = classify(name) else {
            continue;
        };
        let ComponentItem::ComponentInstance(inst) = item.ty else {
            continue;
        };
        let mut li = linker.instance(name)?;
        for (export, item) in inst.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    let what = format!("{name}#{export}: {why} (denied)");
                    li.func_new(export, move |_, _, _, _| {
                        Err(wasmtime::Error::msg(what.clone()))
                    })?;
                }
                ComponentItem::Resource(r) => {
                    let host = io_resources
                        .iter()
                        .find(|(c, _)| *c == r)
                        .map(|(_, h)| *h)
                        .unwrap_or_else(ResourceType::host::<()>);
                    li.resource(export, host, |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}
