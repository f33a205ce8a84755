//! With an OTLP endpoint configured, request spans are exported over OTLP/HTTP and keep
//! the caller's trace id. (Its own test binary: tracing's subscriber is process-wide.)

use std::time::{Duration, Instant};

use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post, Router};
use rendermart_platform::telemetry::{self, LogFormat};
use rendermart_testkit::{Stack, TestApp};
use tokio::sync::mpsc;

/// A stand-in collector: records what is POSTed to /v1/traces.
async fn collector() -> (String, mpsc::UnboundedReceiver<(String, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(tx): State<mpsc::UnboundedSender<(String, Bytes)>>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send((content_type, body));
                    ""
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_over_otlp_with_the_callers_trace_id() {
    let (endpoint, mut exports) = collector().await;
    let _guard = telemetry::init(LogFormat::Json, "info", Some(&endpoint));
    let app = TestApp::spawn(Stack::Embedded).await.unwrap();

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());

    let wanted: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (content_type, body) = tokio::time::timeout(remaining, exports.recv())
            .await
            .expect("a span export arrived within 20s")
            .expect("collector running");
        assert_eq!(content_type, "application/x-protobuf");
        if body.windows(16).any(|w| w == wanted.as_slice()) {
            assert!(
                body.windows(7).any(|w| w == b"request"),
                "the request span is named"
            );
            break;
        }
    }
}
