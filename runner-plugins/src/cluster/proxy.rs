//! The read-only kube-API proxy: a loopback HTTP endpoint that accepts only
//! per-incident tokens and forwards only reads, never Secrets, to the real
//! API server of the token's cluster with the real credential.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;

use super::Shared;
use runner_core::text::clean_line;

/// Subresources an investigation needs; everything else (exec, attach,
/// portforward, proxy, token, eviction, ...) is refused.
const ALLOWED_SUBRESOURCES: [&str; 3] = ["log", "status", "scale"];
/// Paths outside `/api/v1/...` and `/apis/<group>/<version>/...` that
/// kubectl's discovery and health checks read.
const NON_RESOURCE_PATHS: [&str; 6] =
    ["/version", "/api", "/apis", "/healthz", "/livez", "/readyz"];

fn pct_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decides one request: `Ok(())` forwards it, `Err(reason)` refuses it.
/// `deny` lists extra resource names refused in any API group.
pub(crate) fn classify(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    deny: &[String],
) -> Result<(), String> {
    if method != Method::GET && method != Method::HEAD {
        return Err(format!(
            "verb {method} refused: the agent's cluster access is read-only"
        ));
    }
    if headers
        .keys()
        .any(|k| k.as_str().to_ascii_lowercase().starts_with("impersonate-"))
    {
        return Err("impersonation refused".into());
    }
    if headers.contains_key(header::UPGRADE) {
        return Err("protocol upgrades (exec, attach, port-forward streams) refused".into());
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (pct_decode(k), pct_decode(v).to_ascii_lowercase());
        if (k == "watch" || k == "follow") && !matches!(v.as_str(), "false" | "0") {
            return Err(format!("{k} refused: only requests that end are forwarded"));
        }
    }
    // No encoded or relative segments: what we judge is what the API server routes.
    if !path.starts_with('/') || path.contains(['%', '\\']) {
        return Err("path with encoded or unusual characters refused".into());
    }
    let segs: Vec<&str> = path[1..].split('/').collect();
    if segs.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err("path with empty or relative segments refused".into());
    }
    if segs.contains(&"secrets") {
        return Err("Secrets are never readable through the runner's proxy".into());
    }
    if NON_RESOURCE_PATHS.contains(&path)
        || path == "/openapi/v2"
        || path.starts_with("/openapi/v3")
    {
        return Ok(());
    }
    let rest: &[&str] = match segs.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _group] => return Ok(()),
        ["apis", _group, _version, rest @ ..] => rest,
        ["api", _] => return Ok(()),
        _ => {
            return Err(format!(
                "non-resource path {} refused",
                clean_line(path, 200)
            ));
        }
    };
    if rest.is_empty() {
        return Ok(()); // the group's resource list (discovery)
    }
    if matches!(rest[0], "watch" | "proxy") {
        return Err(format!(
            "{} refused: only requests that end are forwarded",
            rest[0]
        ));
    }
    // Resource paths as the API server parses them.
    let (resource, name, sub, extra) = match rest {
        ["namespaces", _ns, resource, tail @ ..] => {
            (*resource, tail.first(), tail.get(1), tail.len() > 2)
        }
        ["namespaces", name @ ..] => ("namespaces", name.first(), name.get(1), name.len() > 2),
        [resource, tail @ ..] => (*resource, tail.first(), tail.get(1), tail.len() > 2),
        [] => unreachable!("checked above"),
    };
    let _ = name;
    if deny.iter().any(|d| d == resource) {
        return Err(format!(
            "resource {resource} refused by this cluster's deny_resources"
        ));
    }
    if let Some(sub) = sub
        && !ALLOWED_SUBRESOURCES.contains(sub)
    {
        return Err(format!("subresource {resource}/{sub} refused"));
    }
    if extra {
        return Err("path beyond a subresource refused".into());
    }
    Ok(())
}

/// A Kubernetes `Status` error, so kubectl prints a clear message.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("event-runner read-only proxy: {message}"),
        "reason": reason,
        "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("static response parts")
}

/// Splits `/incident/<token>/<rest>` into the token and `/<rest>`.
///
/// The token travels in the server URL's path rather than in an
/// Authorization header because kubectl does not send bearer tokens to a
/// plain-http server; a path prefix works with every Kubernetes client.
pub(crate) fn split_token(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(TOKEN_PREFIX)?;
    match rest.find('/') {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None => Some((rest, "/")),
    }
}

/// The agent's server URL is `http://<proxy>/incident/<token>`.
pub(crate) const TOKEN_PREFIX: &str = "/incident/";

/// The proxy's single handler (every path).
pub(crate) async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let (token, path) = split_token(req.uri().path()).unwrap_or(("", req.uri().path()));
    let path = path.to_string();
    let query = req.uri().query().map(str::to_string);
    // Logged without the token.
    let shown = clean_line(
        &match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        },
        300,
    );
    let Some(grant) = Some(token)
        .filter(|t| !t.is_empty())
        .and_then(|t| shared.lookup(t))
    else {
        shared.unauthenticated.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(verb = %method, path = %shown, decision = "refused", reason = "no valid incident token", "cluster proxy");
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "no valid incident token (tokens end with their incident)",
        );
    };
    let cluster = &grant.cluster;
    if let Err(why) = classify(
        &method,
        &path,
        query.as_deref(),
        req.headers(),
        &cluster.deny,
    ) {
        grant.refused.fetch_add(1, Ordering::Relaxed);
        cluster.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(incident = %grant.incident, cluster = %cluster.name, verb = %method, path = %shown, decision = "refused", reason = %why, "cluster proxy");
        return status(StatusCode::FORBIDDEN, "Forbidden", &why);
    }
    grant.allowed.fetch_add(1, Ordering::Relaxed);
    cluster.allowed.fetch_add(1, Ordering::Relaxed);
    let pq = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let mut rb = match cluster.upstream.request(method.clone(), &pq) {
        Ok(rb) => rb,
        Err(e) => {
            cluster.upstream_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(incident = %grant.incident, cluster = %cluster.name, error = %e, "cluster proxy: cannot build the upstream request");
            return status(
                StatusCode::BAD_GATEWAY,
                "InternalError",
                "the runner cannot reach the API server",
            );
        }
    };
    // Only headers that shape the answer; never the agent's Authorization.
    for h in [header::ACCEPT, header::USER_AGENT] {
        if let Some(v) = req.headers().get(&h) {
            rb = rb.header(h, v.clone());
        }
    }
    match rb.send().await {
        Ok(resp) => {
            let code = resp.status();
            tracing::info!(incident = %grant.incident, cluster = %cluster.name, verb = %method, path = %shown, decision = "allowed", status = code.as_u16(), "cluster proxy");
            let mut out = Response::builder().status(code.as_u16());
            for h in [
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                header::WARNING,
            ] {
                if let Some(v) = resp.headers().get(&h) {
                    out = out.header(
                        h,
                        HeaderValue::from_bytes(v.as_bytes())
                            .unwrap_or(HeaderValue::from_static("")),
                    );
                }
            }
            let stream = futures::stream::unfold(Some(resp), |resp| async move {
                let mut resp = resp?;
                match resp.chunk().await {
                    Ok(Some(b)) => Some((Ok(b), Some(resp))),
                    Ok(None) => None,
                    Err(e) => Some((Err(e), None)),
                }
            });
            out.body(Body::from_stream(stream)).unwrap_or_else(|_| {
                status(
                    StatusCode::BAD_GATEWAY,
                    "InternalError",
                    "bad upstream response",
                )
            })
        }
        Err(e) => {
            cluster.upstream_errors.fetch_add(1, Ordering::Relaxed);
            let e = runner_core::text::clean_line(&e.to_string(), 300);
            tracing::warn!(incident = %grant.incident, cluster = %cluster.name, verb = %method, path = %shown, decision = "allowed", error = %e, "cluster proxy: API server unreachable");
            status(
                StatusCode::BAD_GATEWAY,
                "InternalError",
                "the runner cannot reach the API server",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(m: Method, pq: &str) -> Result<(), String> {
        let (p, q) = match pq.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (pq, None),
        };
        classify(&m, p, q, &HeaderMap::new(), &["configmaps".to_string()])
    }

    #[test]
    fn reads_pass() {
        for p in [
            "/api",
            "/apis",
            "/api/v1",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3/api/v1",
            "/api/v1/namespaces",
            "/api/v1/namespaces/default",
            "/api/v1/namespaces/default/pods?limit=500",
            "/api/v1/namespaces/default/pods/web-1",
            "/api/v1/namespaces/default/pods/web-1/log?container=app&tailLines=100",
            "/api/v1/namespaces/default/events?watch=false",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            "/api/v1/nodes/n1/status",
            "/api/v1/pods",
        ] {
            assert_eq!(check(Method::GET, p), Ok(()), "{p}");
        }
        assert_eq!(check(Method::HEAD, "/api/v1/pods"), Ok(()));
    }

    #[test]
    fn everything_else_is_refused() {
        for m in [
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(
                check(m.clone(), "/api/v1/namespaces/default/pods/x").is_err(),
                "{m}"
            );
        }
        for p in [
            "/api/v1/namespaces/default/secrets",
            "/api/v1/namespaces/default/secrets/db",
            "/api/v1/secrets",
            "/apis/example.com/v1/namespaces/a/secrets",
            "/api/v1/namespaces/default/pods/x/exec?command=sh",
            "/api/v1/namespaces/default/pods/x/attach",
            "/api/v1/namespaces/default/pods/x/portforward",
            "/api/v1/namespaces/default/pods/x/proxy/admin",
            "/api/v1/namespaces/default/services/x/proxy",
            "/api/v1/nodes/n1/proxy/logs",
            "/api/v1/proxy/namespaces/default/pods/x",
            "/api/v1/watch/pods",
            "/api/v1/pods?watch=true",
            "/api/v1/pods?watch=1",
            "/api/v1/pods?%77atch=true",
            "/api/v1/namespaces/default/pods/x/log?follow=true",
            "/api/v1/namespaces/default/serviceaccounts/x/token",
            "/api/v1/namespaces/default/configmaps",
            "/api/v1/namespaces/default/pods/x/log/extra",
            "/api/v1/namespaces/default/pods/../secrets",
            "/api/v1/namespaces/default/%73ecrets",
            "/api/v1//namespaces",
            "/metrics",
            "/logs/kube-apiserver.log",
            "/debug/pprof",
            "/",
        ] {
            assert!(check(Method::GET, p).is_err(), "{p} must be refused");
        }
        let mut h = HeaderMap::new();
        h.insert("Impersonate-User", HeaderValue::from_static("admin"));
        assert!(classify(&Method::GET, "/api/v1/pods", None, &h, &[]).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(classify(&Method::GET, "/api/v1/pods", None, &h, &[]).is_err());
    }
}
