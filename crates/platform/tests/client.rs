//! The service-to-service client against a real HTTP server on 127.0.0.1: what it sends
//! (credential, deadline, trace), when it retries (only what is safe to repeat), how a
//! callee's problem comes back, and how a failing callee is cut off (circuit breaker).

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use rendermart_platform::{
    client::{ClientOptions, RemoteError, Retry, ServiceClient, DEADLINE_HEADER},
    http::Problem,
    internal::{ServiceCredential, CREDENTIAL_HEADER},
    telemetry::{self, TraceContext},
};
use rendermart_types::Secret;

#[derive(Clone, Default)]
struct Callee {
    calls: Arc<AtomicU32>,
    /// The first `fail_first` calls answer a bare 503.
    fail_first: u32,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

async fn flaky(State(c): State<Callee>, headers: HeaderMap) -> Response {
    c.seen.lock().unwrap().push(headers);
    let n = c.calls.fetch_add(1, Ordering::SeqCst);
    if n < c.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(serde_json::json!({"n": n})).into_response()
}

async fn conflict(State(c): State<Callee>) -> Response {
    c.calls.fetch_add(1, Ordering::SeqCst);
    Problem::conflict("email-taken", "Email already registered", "Taken.").into_response()
}

async fn slow(State(c): State<Callee>) -> Response {
    c.calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    Json(serde_json::json!({})).into_response()
}

async fn serve(callee: Callee) -> String {
    let app = Router::new()
        .route("/flaky", get(flaky).post(flaky))
        .route("/conflict", get(conflict))
        .route("/slow", get(slow))
        .with_state(callee);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn client(base: &str, options: ClientOptions) -> ServiceClient {
    let credential = ServiceCredential::new("caller", &Secret::new("shared"));
    ServiceClient::new("callee", base, credential, options).unwrap()
}

fn fast() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(2),
        initial_backoff: Duration::from_millis(5),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn a_safe_call_is_retried_and_an_unsafe_one_is_not() {
    let callee = Callee {
        fail_first: 2,
        ..Callee::default()
    };
    let base = serve(callee.clone()).await;
    let answer: serde_json::Value = client(&base, fast()).get("/flaky").await.unwrap();
    assert_eq!(answer["n"], 2, "two failures, then the third try answered");

    let callee = Callee {
        fail_first: 1,
        ..Callee::default()
    };
    let base = serve(callee.clone()).await;
    let once = client(&base, fast())
        .post::<_, serde_json::Value>("/flaky", &serde_json::json!({}), Retry::Never)
        .await;
    assert!(
        matches!(once, Err(RemoteError::Unavailable { .. })),
        "{once:?}"
    );
    assert_eq!(
        callee.calls.load(Ordering::SeqCst),
        1,
        "a POST is sent once"
    );
}

#[tokio::test]
async fn a_callees_problem_comes_back_as_a_problem_and_is_not_retried() {
    let callee = Callee::default();
    let base = serve(callee.clone()).await;
    match client(&base, fast())
        .get::<serde_json::Value>("/conflict")
        .await
    {
        Err(RemoteError::Problem { problem, .. }) => {
            assert_eq!(problem.status, 409);
            assert_eq!(problem.slug(), "email-taken");
            assert_eq!(problem.detail.as_deref(), Some("Taken."));
        }
        other => panic!("expected a problem, got {other:?}"),
    }
    assert_eq!(callee.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn every_call_carries_a_verifiable_credential_a_deadline_and_the_callers_trace() {
    let callee = Callee::default();
    let base = serve(callee.clone()).await;
    let trace = TraceContext::new_root();
    let c = client(&base, fast());
    let _: serde_json::Value = telemetry::with_trace(trace.clone(), c.get("/flaky"))
        .await
        .unwrap();
    let headers = callee.seen.lock().unwrap()[0].clone();
    let verifier = ServiceCredential::new("callee", &Secret::new("shared"));
    let token = headers[CREDENTIAL_HEADER].to_str().unwrap();
    assert_eq!(verifier.verify(token).unwrap(), "caller");
    let deadline: i64 = headers[DEADLINE_HEADER].to_str().unwrap().parse().unwrap();
    let now_ms = rendermart_platform::clock::now_micros() / 1000;
    assert!(
        deadline > now_ms && deadline <= now_ms + 2_000,
        "deadline {deadline} vs now {now_ms}"
    );
    let traceparent = headers["traceparent"].to_str().unwrap();
    assert!(traceparent.contains(&trace.trace_id), "{traceparent}");
}

#[tokio::test]
async fn a_slow_callee_costs_no_more_than_the_deadline() {
    let callee = Callee::default();
    let base = serve(callee.clone()).await;
    let options = ClientOptions {
        timeout: Duration::from_millis(300),
        ..fast()
    };
    let started = Instant::now();
    let result = client(&base, options)
        .get::<serde_json::Value>("/slow")
        .await;
    assert!(
        matches!(result, Err(RemoteError::Unavailable { .. })),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_callee_that_keeps_failing_is_cut_off_then_tried_again_after_the_cool_down() {
    let callee = Callee {
        fail_first: 1_000,
        ..Callee::default()
    };
    let base = serve(callee.clone()).await;
    let options = ClientOptions {
        attempts: 1,
        breaker_threshold: 3,
        breaker_cool_down: Duration::from_millis(300),
        ..fast()
    };
    let c = client(&base, options);
    for _ in 0..3 {
        assert!(c.get::<serde_json::Value>("/flaky").await.is_err());
    }
    assert_eq!(callee.calls.load(Ordering::SeqCst), 3);
    for _ in 0..10 {
        match c.get::<serde_json::Value>("/flaky").await {
            Err(RemoteError::Unavailable { reason, .. }) => {
                assert!(reason.contains("circuit open"), "{reason}")
            }
            other => panic!("expected a fast refusal, got {other:?}"),
        }
    }
    assert_eq!(
        callee.calls.load(Ordering::SeqCst),
        3,
        "an open circuit sends nothing"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let _ = c.get::<serde_json::Value>("/flaky").await;
    assert_eq!(
        callee.calls.load(Ordering::SeqCst),
        4,
        "one try after the cool-down"
    );
}

#[test]
fn a_client_refuses_a_base_url_that_is_not_http() {
    let credential = ServiceCredential::new("caller", &Secret::new("s"));
    assert!(
        ServiceClient::new("x", "identity:8080", credential, ClientOptions::default()).is_err()
    );
}
