//! The middleware stack in front of every route, applied once by the binary.
//!
//! Outermost first:
//! 1. compression;
//! 2. the request's context and its answer, in one function ([`request_context`]):
//!    - the request id (an incoming `X-Request-Id` is kept if it is usable, 1–128 visible
//!      ASCII characters, otherwise a UUID v7 is made; it is echoed on the response), the
//!      client ([`ClientInfo`]: peer address, or what a trusted proxy forwarded), the W3C
//!      trace context (continued or new, kept in a task-local for the request and echoed
//!      as `traceparent`), a span every log line of the request is written in, and the
//!      metric labels; `Authorization` and `Cookie` are marked sensitive (kept out of
//!      logs);
//!    - a body declared larger than the limit is refused with 413 before anything reads
//!      it; the rest of the stack runs under the request timeout (408) and a panic becomes
//!      a 500;
//!    - a bare error status (no body a client reads, e.g. the router's 404/405, the
//!      timeout's 408, the body limit's 413, an extractor's rejection, a panic's 500)
//!      becomes problem+json under `/api` (a rejection's plain-text reason as its detail)
//!      and an HTML page everywhere else ([`in_the_callers_format`]);
//!    - on the way out: one access-log line and the request metrics, then response
//!      hardening: the page security headers on every HTML response; `nosniff` and
//!      (unless the handler chose otherwise) `Cache-Control: no-store` on every `/api`
//!      response; `Strict-Transport-Security` when cookies are secure;
//! 3. the body size limit every extractor obeys.
//!
//! Each step that only needs the request and the response is one function in one layer,
//! not a layer of its own: every layer costs a boxed future and a clone of the service
//! behind it on every request (decisions 63 and 64).
//!
//! The one thing to know: metric labels never carry a value the client chose. The method
//! is one of the standard methods or `OTHER`; the route is the matched route template or
//! `unmatched`; the status is what we answered.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use futures_util::FutureExt as _;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tower_http::compression::CompressionLayer;

use tracing::Instrument as _;

use super::{html, ClientInfo, Problem, TrustedProxies};
use crate::telemetry::{self, TraceContext};

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// What the edge needs to know about this deployment.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// Longest a request may take, body included (408 beyond).
    pub request_timeout: Duration,
    /// Largest request body accepted (413 beyond).
    pub body_limit: usize,
    /// Peers whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed.
    pub trusted_proxies: TrustedProxies,
    /// The site is served over HTTPS (cookies are `Secure` for every request).
    pub cookie_secure: bool,
    /// `Strict-Transport-Security: max-age` sent with responses to secure requests
    /// (`cookie_secure`, or HTTPS through a trusted proxy); zero never sends it.
    pub hsts_max_age: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            body_limit: 64 * 1024,
            trusted_proxies: TrustedProxies::default(),
            cookie_secure: false,
            hsts_max_age: Duration::from_secs(365 * 24 * 60 * 60),
        }
    }
}

/// What the edge middleware shares, prepared once.
struct Edge {
    request_timeout: Duration,
    body_limit: usize,
    trusted_proxies: TrustedProxies,
    cookie_secure: bool,
    hsts: Option<HeaderValue>,
}

/// Wraps the merged router of all services with the shared edge.
pub fn edge_layers(router: Router, config: &EdgeConfig) -> Router {
    let edge = Arc::new(Edge {
        request_timeout: config.request_timeout,
        body_limit: config.body_limit,
        trusted_proxies: config.trusted_proxies.clone(),
        cookie_secure: config.cookie_secure,
        hsts: Some(config.hsts_max_age.as_secs())
            .filter(|secs| *secs > 0)
            .and_then(|secs| HeaderValue::from_str(&format!("max-age={secs}")).ok()),
    });
    // `Router::layer` wraps: the last layer added is the outermost.
    router
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(middleware::from_fn_with_state(edge, request_context))
        .layer(CompressionLayer::new())
}

/// The metric label for a method: the standard ones by name, any other as `OTHER` (a
/// client may send any token as a method; each would otherwise become a time series).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// The route label: the matched route template, never the path a client sent.
fn route_label(request: &Request) -> Arc<str> {
    static UNMATCHED: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| Arc::from(p.as_str()))
        .unwrap_or_else(|| UNMATCHED.get_or_init(|| Arc::from("unmatched")).clone())
}

/// The request metrics of one (route, method, status): looked up once, then reused, so a
/// request records them without building label strings or hashing them in the registry.
#[derive(Clone)]
struct RequestMetrics {
    requests: metrics::Counter,
    duration: metrics::Histogram,
    server_errors: Option<metrics::Counter>,
}

type MetricsByRoute = std::collections::HashMap<
    Arc<str>,
    std::collections::HashMap<(&'static str, u16), RequestMetrics>,
>;

/// Handles by route, then (method, status). Bounded because every key part is: routes are
/// the app's templates, methods a fixed list, statuses what we answer.
fn request_metrics(method: &'static str, route: &Arc<str>, status: StatusCode) -> RequestMetrics {
    static HANDLES: std::sync::OnceLock<std::sync::RwLock<MetricsByRoute>> =
        std::sync::OnceLock::new();
    let handles = HANDLES.get_or_init(Default::default);
    let key = (method, status.as_u16());
    if let Some(found) = handles
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(route)
        .and_then(|by| by.get(&key))
    {
        return found.clone();
    }
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_string()),
        ("status", status.as_u16().to_string()),
    ];
    let made = RequestMetrics {
        requests: metrics::counter!("http_requests_total", &labels),
        duration: metrics::histogram!("http_request_duration_seconds", &labels),
        server_errors: status
            .is_server_error()
            .then(|| metrics::counter!("http_server_errors_total", &labels[..2])),
    };
    handles
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(route.clone())
        .or_default()
        .insert(key, made.clone());
    made
}

fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// The request's id: the one it came with if that is usable (1–128 visible ASCII
/// characters), otherwise a new UUID v7 (sortable by time, like every id here).
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let usable = |v: &&HeaderValue| {
        let bytes = v.as_bytes();
        (1..=128).contains(&bytes.len()) && bytes.iter().all(|b| b.is_ascii_graphic())
    };
    match headers.get(&REQUEST_ID).filter(usable) {
        Some(kept) => kept.clone(),
        None => {
            let mut buffer = uuid::Uuid::encode_buffer();
            let made = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buffer);
            HeaderValue::from_str(made).unwrap_or(HeaderValue::from_static("unknown"))
        }
    }
}

/// Fixes the request's id, resolves the client, continues or starts the trace, opens the
/// request's span and fixes the metric labels, once; the rest of the request runs inside
/// that context. On the way out: one access-log line and the request metrics, the id and
/// the trace echoed, and the headers every response of its kind carries, whichever handler
/// or layer made it.
async fn request_context(
    State(edge): State<Arc<Edge>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    for name in [header::AUTHORIZATION, header::COOKIE] {
        if let header::Entry::Occupied(mut values) = request.headers_mut().entry(name) {
            values.iter_mut().for_each(|v| v.set_sensitive(true));
        }
    }
    let request_id = request_id(request.headers());
    request
        .headers_mut()
        .insert(REQUEST_ID.clone(), request_id.clone());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = ClientInfo::resolve(peer, request.headers(), &edge.trusted_proxies);
    let trace = request
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::continue_from)
        .unwrap_or_else(TraceContext::new_root);
    let method = method_label(request.method());
    let route = route_label(&request);
    let span = request_span(&request, &route, &trace, &request_id);
    let traceparent = HeaderValue::from_str(&trace.traceparent()).ok();
    let trace_id = trace.trace_id.clone();
    let api = is_api(request.uri().path());
    let secure = edge.cookie_secure || client.https;
    request.extensions_mut().insert(client);
    request.extensions_mut().insert(trace.clone());
    let mut response = telemetry::with_trace(trace, answer(&edge, request, next, api))
        .instrument(span.clone())
        .await;
    span.in_scope(|| access_log(&response, started.elapsed(), method, &route, trace_id));
    let headers = response.headers_mut();
    headers.entry(&REQUEST_ID).or_insert(request_id);
    if let Some(traceparent) = traceparent {
        headers.insert(TRACEPARENT.clone(), traceparent);
    }
    if api {
        // API answers carry tokens and personal data: never cached, never sniffed. A
        // handler that wants caching says so with its own Cache-Control.
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    if html::is_html(headers) {
        html::add_page_security_headers(headers);
    }
    if let (true, Some(hsts)) = (secure, &edge.hsts) {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    response
}

/// The span every log line of a request is written in.
fn request_span(
    request: &Request,
    route: &str,
    trace: &TraceContext,
    request_id: &HeaderValue,
) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = %route,
        trace_id = %trace.trace_id,
        request_id = %request_id.to_str().unwrap_or_default(),
    );
    if !span.is_disabled() {
        telemetry::attach_span(&span, trace);
    }
    span
}

/// One access-log line per request (with `trace_id` at the top level, so log search
/// finds it without looking into spans) and the request metrics.
fn access_log(
    response: &Response,
    latency: Duration,
    method: &'static str,
    route: &Arc<str>,
    trace_id: String,
) {
    let status = response.status();
    let handles = request_metrics(method, route, status);
    handles.requests.increment(1);
    handles.duration.record(latency.as_secs_f64());
    if let Some(errors) = &handles.server_errors {
        errors.increment(1);
    }
    tracing::info!(
        status = status.as_u16(),
        latency_ms = latency.as_secs_f64() * 1e3,
        trace_id,
        "request"
    );
}

/// The rest of the stack's answer to `request`, in the caller's format: a body declared
/// larger than the limit is refused before anything reads it, the request may take at most
/// the timeout (then 408), and a panic is a 500.
async fn answer(edge: &Edge, request: Request, next: Next, api: bool) -> Response {
    let request = match refuse_declared_oversize(edge.body_limit, request, api).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let handled = std::panic::AssertUnwindSafe(next.run(request)).catch_unwind();
    let response = match tokio::time::timeout(edge.request_timeout, handled).await {
        Ok(Ok(response)) => response,
        Ok(Err(cause)) => panicked(cause),
        Err(_elapsed) => StatusCode::REQUEST_TIMEOUT.into_response(),
    };
    in_the_callers_format(response, api).await
}

/// A panic in a handler is a bug: logged, answered with a bare 500 that
/// [`in_the_callers_format`] turns into a problem or a page. The connection stays up.
fn panicked(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = cause
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| cause.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "handler panicked");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

/// How much of an oversized body is read and thrown away so the client can finish sending
/// and read the 413 (a "lingering close"); beyond this, or after the time bound, the
/// connection is simply closed.
const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A body whose `Content-Length` exceeds the limit gets 413 before any handler runs. The
/// body is drained (bounded) first: answering while the client is still writing makes the
/// kernel reset the connection, and the client would see a broken pipe instead of the 413.
/// `Ok` gives the request back when it may go on.
async fn refuse_declared_oversize(
    limit: usize,
    request: Request,
    api: bool,
) -> Result<Request, Response> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let Some(declared) = declared.filter(|n| *n > limit) else {
        return Ok(request);
    };
    if declared <= DRAIN_MAX_BYTES {
        let body = request.into_body();
        let _ =
            tokio::time::timeout(DRAIN_TIMEOUT, axum::body::to_bytes(body, DRAIN_MAX_BYTES)).await;
    }
    let detail = format!("The request body is larger than the {limit} bytes this server accepts.");
    Err(if api {
        Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE)
            .detail(detail)
            .into_response()
    } else {
        html::error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some(&format!("{detail} Go back and shorten what you entered.")),
        )
    })
}

/// Whether an error response already speaks to its reader: problem+json for API clients;
/// for people, anything with a body type other than plain text (HTML pages, and the JSON
/// of `/readyz`, which probes read).
fn is_bare(response: &Response, api: bool) -> bool {
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes);
    match content_type {
        None => true,
        Some(ct) if api => !ct.starts_with(b"application/problem+json"),
        Some(ct) => ct.starts_with(b"text/plain"),
    }
}

/// API clients always get problem+json and people an HTML page, even for errors no
/// handler produced (the router's 404 and 405, the timeout's 408, the limit's 413, a
/// panic's 500). Any other response is passed on as it is.
async fn in_the_callers_format(response: Response, api: bool) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || !is_bare(&response, api) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let mut rewritten = if api {
        let problem = match status {
            StatusCode::NOT_FOUND => Problem::not_found("No such API endpoint."),
            s => Problem::from_status(s),
        };
        // An extractor's rejection says in plain text what was wrong with the request
        // ("Failed to deserialize query string: limit: invalid digit found in string"):
        // the client is told, not just "could not be read". A server error says nothing.
        let reason = match status.is_client_error() {
            true => plain_reason(body).await,
            false => None,
        };
        match reason {
            Some(reason) => problem.detail(reason),
            None => problem,
        }
        .into_response()
    } else {
        html::error_page(status, None)
    };
    // What the original said about how to proceed stays.
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.get(&name) {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    rewritten
}

/// The longest plain-text reason passed on to the client.
const REASON_MAX_BYTES: usize = 512;

/// The text of a short plain-text error body, trimmed; `None` when it is empty, not
/// UTF-8, or longer than [`REASON_MAX_BYTES`].
async fn plain_reason(body: axum::body::Body) -> Option<String> {
    let bytes = axum::body::to_bytes(body, REASON_MAX_BYTES).await.ok()?;
    let text = std::str::from_utf8(&bytes).ok()?.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_standard_methods_name_their_metric_label() {
        for (method, label) in [
            (Method::GET, "GET"),
            (Method::POST, "POST"),
            (Method::DELETE, "DELETE"),
            (Method::OPTIONS, "OPTIONS"),
        ] {
            assert_eq!(method_label(&method), label);
        }
        for made_up in ["FOO", "get", "BREW", "X".repeat(200).as_str()] {
            let method = Method::from_bytes(made_up.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "OTHER", "{made_up}");
        }
    }

    #[test]
    fn unusable_request_ids_are_replaced() {
        let made = request_id(&HeaderMap::new());
        assert!(
            made.to_str().unwrap().parse::<uuid::Uuid>().is_ok(),
            "{made:?}"
        );
        for bad in ["", "has space", &"x".repeat(129)] {
            let mut headers = HeaderMap::new();
            headers.insert(&REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let replaced = request_id(&headers);
            assert!(
                replaced.to_str().unwrap().parse::<uuid::Uuid>().is_ok(),
                "{bad:?}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(&REQUEST_ID, HeaderValue::from_static("req-123"));
        assert_eq!(request_id(&headers), "req-123");
        headers.insert(
            &REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(128)).unwrap(),
        );
        assert_eq!(request_id(&headers), "x".repeat(128).as_str());
    }
}
