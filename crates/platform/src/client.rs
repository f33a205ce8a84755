//! Calls from one service to another over HTTP: the transport under every remote client.
//!
//! A service's remote client (e.g. identity's `RemoteIdentity`) is a thin mapping from its
//! trait methods to [`ServiceClient`] calls on the service's internal routes. This module
//! gives every such call the same behaviour:
//!
//! * a deadline (the per-call timeout), sent along as `x-rendermart-deadline` (Unix ms) so
//!   the callee can give up too;
//! * the caller's W3C `traceparent`, so one trace spans both processes;
//! * the service credential ([`crate::internal`]), without which internal routes are 404;
//! * retries with backoff **only** for calls that are safe to repeat (GET, PUT, DELETE, or
//!   a POST its caller marks idempotent), and only on transport errors, timeouts and
//!   502/503/504;
//! * a circuit breaker: after consecutive failures the callee is treated as down for a
//!   cool-down, so a dead dependency costs callers nothing but a fast 503;
//! * the callee's problem+json answer handed back as a [`RemoteProblem`], which the client
//!   turns into the service's own error (a remote `EmailTaken` is the same `EmailTaken`).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{Method, StatusCode};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{http::FieldError, internal::ServiceCredential};

/// Header carrying the caller's deadline, in Unix milliseconds.
pub const DEADLINE_HEADER: &str = "x-rendermart-deadline";

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Deadline of one call, retries included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Tries of an idempotent call (the first included).
    pub attempts: u32,
    pub initial_backoff: Duration,
    /// Consecutive failures that open the circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit fails calls at once before letting one through again.
    pub breaker_cool_down: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            attempts: 3,
            initial_backoff: Duration::from_millis(50),
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(5),
        }
    }
}

/// A problem+json answer from the callee, as it sent it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RemoteProblem {
    #[serde(skip)]
    pub status: u16,
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl RemoteProblem {
    /// The problem type without its `/problems/` prefix (`email-taken`).
    pub fn slug(&self) -> &str {
        self.type_.trim_start_matches("/problems/")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The callee answered with a problem: map it to the service's own error.
    #[error("{} answered {}: {}", .service, .problem.status, .problem.title)]
    Problem {
        service: &'static str,
        problem: RemoteProblem,
    },
    /// The callee could not be reached or did not answer in time: a 503 to our caller.
    #[error("{service} is unavailable: {reason}")]
    Unavailable {
        service: &'static str,
        reason: String,
    },
}

/// Whether a call may be sent again if the first attempt's fate is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    Safe,
    Never,
}

/// The HTTP client of one remote service. Cheap to clone.
#[derive(Clone)]
pub struct ServiceClient {
    inner: Arc<Inner>,
}

struct Inner {
    service: &'static str,
    base: String,
    http: reqwest::Client,
    credential: ServiceCredential,
    options: ClientOptions,
    breaker: Mutex<Breaker>,
}

#[derive(Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("service", &self.inner.service)
            .field("base", &self.inner.base)
            .finish()
    }
}

/// Why an attempt failed, and whether trying again may help.
enum Attempt<T> {
    Done(T),
    Problem(RemoteProblem),
    Failed(String),
}

impl ServiceClient {
    /// A client of `service` at `base_url` (`http://identity:8080`), calling as `credential`.
    pub fn new(
        service: &'static str,
        base_url: &str,
        credential: ServiceCredential,
        options: ClientOptions,
    ) -> anyhow::Result<Self> {
        let base = base_url.trim_end_matches('/').to_owned();
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "the URL of {service} must start with http:// or https://, not {base:?}"
        );
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                service,
                base,
                http,
                credential,
                options,
                breaker: Mutex::default(),
            }),
        })
    }

    pub fn service(&self) -> &'static str {
        self.inner.service
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        self.call::<(), T>(Method::GET, path, None, Retry::Safe)
            .await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        retry: Retry,
    ) -> Result<T, RemoteError> {
        self.call(Method::POST, path, Some(body), retry).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        self.call::<(), T>(Method::DELETE, path, None, Retry::Safe)
            .await
    }

    /// One call: `body` as JSON, the answer decoded from JSON (an empty 2xx body decodes
    /// as `null`, so `T = ()` fits a 204).
    pub async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        retry: Retry,
    ) -> Result<T, RemoteError> {
        let inner = &self.inner;
        if let Some(until) = self.open_until() {
            metrics::counter!("service_client_short_circuited_total", "service" => inner.service)
                .increment(1);
            let wait = until.saturating_duration_since(Instant::now());
            return Err(self.unavailable(format!(
                "circuit open after repeated failures; retrying in {} ms",
                wait.as_millis()
            )));
        }
        let body = match body.map(serde_json::to_vec).transpose() {
            Ok(body) => body,
            Err(e) => return Err(self.unavailable(format!("cannot encode the request: {e}"))),
        };
        let deadline = Instant::now() + inner.options.timeout;
        let attempts = if retry == Retry::Safe {
            inner.options.attempts.max(1)
        } else {
            1
        };
        let mut last_failure = String::new();
        for attempt in 1..=attempts {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.attempt(&method, path, body.as_deref(), left).await {
                Attempt::Done(value) => {
                    self.record(true);
                    return Ok(value);
                }
                Attempt::Problem(problem) => {
                    // The callee is up and answered; a 503 from it still counts against it.
                    self.record(problem.status < 500);
                    return Err(RemoteError::Problem {
                        service: inner.service,
                        problem,
                    });
                }
                Attempt::Failed(reason) => {
                    self.record(false);
                    last_failure = reason;
                    if attempt < attempts {
                        let backoff = inner.options.initial_backoff * 2u32.pow(attempt - 1);
                        tokio::time::sleep(
                            backoff.min(deadline.saturating_duration_since(Instant::now())),
                        )
                        .await;
                    }
                }
            }
        }
        metrics::counter!("service_client_failures_total", "service" => inner.service).increment(1);
        Err(self.unavailable(if last_failure.is_empty() {
            "deadline exceeded".into()
        } else {
            last_failure
        }))
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
        left: Duration,
    ) -> Attempt<T> {
        let inner = &self.inner;
        let deadline_ms = crate::clock::now_micros() / 1000 + left.as_millis() as i64;
        let mut request = inner
            .http
            .request(method.clone(), format!("{}{path}", inner.base))
            .timeout(left)
            .header(crate::internal::CREDENTIAL_HEADER, inner.credential.token())
            .header(DEADLINE_HEADER, deadline_ms.to_string())
            .header(http::header::ACCEPT, "application/json");
        if let Some(traceparent) = crate::telemetry::current_traceparent() {
            request = request.header("traceparent", traceparent);
        }
        if let Some(body) = body {
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Attempt::Failed("timed out".into()),
            Err(e) => return Attempt::Failed(format!("cannot reach it: {e}")),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let is_problem = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => return Attempt::Failed("timed out".into()),
            Err(e) => return Attempt::Failed(format!("the answer broke off: {e}")),
        };
        if status.is_success() {
            let json: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            return match serde_json::from_slice(json) {
                Ok(value) => Attempt::Done(value),
                Err(e) => Attempt::Failed(format!("unreadable answer ({status}): {e}")),
            };
        }
        if matches!(
            status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ) && !is_problem
        {
            return Attempt::Failed(format!("answered {status}"));
        }
        let mut problem: RemoteProblem = if is_problem {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| RemoteProblem {
                status: 0,
                type_: String::new(),
                title: String::new(),
                detail: None,
                errors: Vec::new(),
                retry_after: None,
            })
        } else {
            return Attempt::Failed(format!("answered {status} without a problem body"));
        };
        problem.status = status.as_u16();
        problem.retry_after = retry_after;
        if problem.title.is_empty() {
            problem.title = status.canonical_reason().unwrap_or("Error").to_owned();
        }
        Attempt::Problem(problem)
    }

    /// `GET /healthz` of the callee: is it up at all? (For the caller's `/readyz`.)
    pub async fn ping(&self) -> Result<(), String> {
        let url = format!("{}/healthz", self.inner.base);
        match self
            .inner
            .http
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(format!("cannot reach it: {e}")),
        }
    }

    fn unavailable(&self, reason: String) -> RemoteError {
        RemoteError::Unavailable {
            service: self.inner.service,
            reason,
        }
    }

    fn open_until(&self) -> Option<Instant> {
        let breaker = self.inner.breaker.lock().unwrap_or_else(|p| p.into_inner());
        breaker.open_until.filter(|until| *until > Instant::now())
    }

    fn record(&self, success: bool) {
        let mut breaker = self.inner.breaker.lock().unwrap_or_else(|p| p.into_inner());
        if success {
            *breaker = Breaker::default();
            return;
        }
        breaker.consecutive_failures += 1;
        if breaker.consecutive_failures >= self.inner.options.breaker_threshold {
            if breaker
                .open_until
                .is_none_or(|until| until <= Instant::now())
            {
                tracing::warn!(
                    service = self.inner.service,
                    "circuit opened: the service keeps failing"
                );
            }
            breaker.open_until = Some(Instant::now() + self.inner.options.breaker_cool_down);
        }
    }
}

/// `/readyz` check of a service this process calls remotely.
pub struct RemoteCheck(pub ServiceClient);

#[async_trait::async_trait]
impl crate::http::ReadinessCheck for RemoteCheck {
    fn name(&self) -> String {
        format!("remote:{}", self.0.service())
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await
    }
}
