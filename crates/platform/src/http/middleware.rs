//! The middleware stack in front of every route, applied once by the binary.
//!
//! Outermost first: panic → 500 problem (a bug must not drop the connection); request id
//! and trace context, a span per request, one access-log line and the request metrics;
//! sensitive headers kept out of logs; compression; the timeout (408); for `/api/` paths,
//! any bare error status produced by a layer or the router (404, 405, 408, 413) rewritten
//! as problem+json; and the body size limit every extractor obeys (413).

use std::time::{Duration, Instant};

use axum::{
    extract::{DefaultBodyLimit, MatchedPath, Request},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use http::{header, HeaderName, HeaderValue, StatusCode};
use tower_http::{
    catch_panic::CatchPanicLayer, compression::CompressionLayer,
    sensitive_headers::SetSensitiveRequestHeadersLayer, timeout::TimeoutLayer,
};
use tracing::Instrument;

use super::Problem;
use crate::telemetry::{self, TraceContext};

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub request_timeout: Duration,
    pub body_limit: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            body_limit: 64 * 1024,
        }
    }
}

/// Wraps the merged router of all services with the shared edge.
pub fn edge_layers(router: Router, config: &EdgeConfig) -> Router {
    // `Router::layer` wraps: the last layer added is the outermost.
    router
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(middleware::from_fn(problem_for_bare_api_errors))
        .layer(middleware::from_fn_with_state(
            config.body_limit,
            refuse_declared_oversize,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(CompressionLayer::new())
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(middleware::from_fn(observe))
        .layer(CatchPanicLayer::custom(|_| {
            Problem::internal(&"handler panicked").into_response()
        }))
}

/// Request id, trace context, span, access log and metrics for one request.
async fn observe(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let trace = request
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::continue_from)
        .unwrap_or_else(TraceContext::new_root);
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        trace_id = %trace.trace_id,
        request_id = %request_id,
    );
    telemetry::attach_span(&span, &trace);
    let traceparent = trace.traceparent();
    let mut response = telemetry::with_trace(trace, next.run(request))
        .instrument(span.clone())
        .await;

    let status = response.status();
    let elapsed = start.elapsed();
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    if status.is_server_error() {
        metrics::counter!("http_server_errors_total", &labels[..2]).increment(1);
    }
    let trace_id = traceparent.get(3..35).unwrap_or_default();
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1e3,
            trace_id,
            "request"
        )
    });
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&traceparent) {
        headers.insert(TRACEPARENT.clone(), v);
    }
    response
}

/// How much of an oversized body is read and thrown away so the client can finish sending
/// and read the 413 (a "lingering close"); beyond this, or after the time bound, the
/// connection is simply closed.
const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A body whose `Content-Length` exceeds the limit gets 413 before any handler runs. The
/// body is drained (bounded) first: answering while the client is still writing makes the
/// kernel reset the connection, and the client would see a broken pipe instead of the 413.
async fn refuse_declared_oversize(
    axum::extract::State(limit): axum::extract::State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let Some(declared) = declared.filter(|n| *n > limit) else {
        return next.run(request).await;
    };
    let is_api = request.uri().path().starts_with("/api/");
    if declared <= DRAIN_MAX_BYTES {
        let body = request.into_body();
        let _ =
            tokio::time::timeout(DRAIN_TIMEOUT, axum::body::to_bytes(body, DRAIN_MAX_BYTES)).await;
    }
    let detail = format!("The request body is larger than the {limit} bytes this server accepts.");
    if is_api {
        Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE)
            .detail(detail)
            .into_response()
    } else {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::response::Html(format!(
                "<!doctype html><title>Too large</title><h1>Too large</h1><p>{detail} \
                 Go back and shorten what you entered.</p>"
            )),
        )
            .into_response()
    }
}

/// API clients always get problem+json, even for errors no handler produced.
async fn problem_for_bare_api_errors(request: Request, next: Next) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    let status = response.status();
    if !is_api || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem {
        return response;
    }
    let problem = match status {
        StatusCode::NOT_FOUND => Problem::not_found("No such API endpoint."),
        StatusCode::METHOD_NOT_ALLOWED => {
            Problem::from_status(status).detail("This endpoint does not accept that HTTP method.")
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::from_status(status).detail("The request body is too large.")
        }
        StatusCode::REQUEST_TIMEOUT => {
            Problem::from_status(status).detail("The request took too long to process.")
        }
        s => Problem::from_status(s),
    };
    let mut rewritten = problem.into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        rewritten.headers_mut().insert(header::ALLOW, allow.clone());
    }
    rewritten
}
