//! Watching the standalone GET stream that carries every notification.
//!
//! rmcp reopens that stream by itself: at once after a stream *error* (a TCP
//! reset from a proxy or load balancer) without consulting the retry policy,
//! and after a clean end as the retry policy says. Either way the session
//! would not hear of it, while the events server silently cancels a
//! subscription whose notification found no open stream
//! (docs/mcp-events-protocol.md, "Delivery"). So the source wraps rmcp's HTTP
//! client: every stream rmcp opens reports its opening and its end to the
//! session, which verifies its subscription as soon as the stream is back
//! (or replaces the session when it does not come back).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::common::client_side_sse::SseRetryPolicy;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use sse_stream::Sse;
use tokio::sync::watch;

use super::handler::SessionSignals;

/// What the session knows about its GET stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StreamState {
    /// A stream is open right now.
    pub open: bool,
    /// Streams opened so far in this session (1 = the first one).
    pub opens: u64,
    /// Why the last stream ended, if one did.
    pub last_loss: Option<String>,
    /// When the last stream ended.
    pub lost_at: Option<tokio::time::Instant>,
}

/// Shared between the HTTP client wrapper (writer) and the session (reader).
#[derive(Debug)]
pub(crate) struct StreamWatchState(watch::Sender<StreamState>);

impl Default for StreamWatchState {
    fn default() -> Self {
        StreamWatchState(watch::Sender::new(StreamState::default()))
    }
}

impl StreamWatchState {
    pub(crate) fn subscribe(&self) -> watch::Receiver<StreamState> {
        self.0.subscribe()
    }
    fn opened(&self) {
        self.0.send_modify(|s| {
            s.open = true;
            s.opens += 1;
        });
    }
    fn lost(&self, why: String) {
        self.0.send_modify(|s| {
            s.open = false;
            s.last_loss = Some(why);
            s.lost_at = Some(tokio::time::Instant::now());
        });
    }
}

/// reqwest with a report of every GET stream's opening and end.
#[derive(Clone)]
pub(crate) struct WatchedClient {
    pub http: reqwest::Client,
    pub signals: Arc<SessionSignals>,
}

type SseStream = BoxStream<'static, Result<Sse, SseError>>;

impl WatchedClient {
    fn watch(
        &self,
        r: Result<SseStream, StreamableHttpError<reqwest::Error>>,
    ) -> Result<SseStream, StreamableHttpError<reqwest::Error>> {
        match r {
            Ok(stream) => {
                self.signals.stream.opened();
                Ok(report_end(stream, self.signals.clone()))
            }
            Err(e) => {
                // A session whose notifications have nowhere to go is useless.
                self.signals
                    .raise(format!("event stream (GET) could not be opened: {e}"));
                Err(e)
            }
        }
    }
}

/// Passes the stream through and reports its end, clean or not, at once.
fn report_end(stream: SseStream, signals: Arc<SessionSignals>) -> SseStream {
    let state = Some((stream, signals));
    futures::stream::unfold(state, |state| async move {
        let (mut stream, signals) = state?;
        match stream.next().await {
            Some(Ok(item)) => Some((Ok(item), Some((stream, signals)))),
            Some(Err(e)) => {
                signals
                    .stream
                    .lost(format!("event stream (GET) aborted: {e}"));
                Some((Err(e), None))
            }
            None => {
                signals.stream.lost("event stream (GET) ended".into());
                None
            }
        }
    })
    .boxed()
}

impl StreamableHttpClient for WatchedClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.http
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.http
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.http
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.http
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<SseStream, StreamableHttpError<Self::Error>> {
        let r = self
            .http
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await;
        self.watch(r)
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<SseStream, StreamableHttpError<Self::Error>> {
        let r = self
            .http
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        self.watch(r)
    }
}

/// rmcp's retry policy for the GET stream. After a clean end (`n == 0`)
/// rmcp may reopen it at once: the session verifies its subscription when
/// the stream is back. A failed reopen (`n >= 1`) ends the session, which is
/// then replaced by a fresh one.
#[derive(Debug)]
pub(crate) struct StreamRetry(pub Arc<SessionSignals>);

impl SseRetryPolicy for StreamRetry {
    fn retry(&self, current_times: usize) -> Option<Duration> {
        if current_times == 0 {
            return Some(Duration::ZERO);
        }
        self.0.raise("event stream (GET) could not be reopened");
        None
    }
}
