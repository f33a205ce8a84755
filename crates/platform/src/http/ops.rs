//! `/healthz`, `/readyz` and `/metrics`, the same in every process.
//!
//! [`ops_router`] serves all three; [`health_router`] only the first two, for the public
//! port of a process whose metrics are served on a separate operations address
//! (`--ops-addr`), so per-route counts are not shown to anyone who asks.
//!
//! `/healthz` answers as long as the process serves HTTP. `/readyz` checks every dependency
//! this process uses (each service's database, the bus, Redis) and answers 503 naming the
//! ones that failed. `/metrics` samples the queue gauges (outbox backlog per service,
//! consumer lag and dead-letter depth per consumer) at scrape time, then renders Prometheus
//! text from the process-wide recorder.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::{extract::State, response::IntoResponse, routing::get, Json, Router};
use http::{header, StatusCode};

use crate::{bus::Bus, db::Db, outbox, telemetry};

/// Something `/readyz` must be able to reach.
#[async_trait]
pub trait ReadinessCheck: Send + Sync {
    fn name(&self) -> String;
    async fn check(&self) -> Result<(), String>;
}

#[async_trait]
impl ReadinessCheck for Db {
    fn name(&self) -> String {
        format!("db:{}", self.service())
    }
    async fn check(&self) -> Result<(), String> {
        self.ping().await.map_err(|e| e.to_string())
    }
}

struct BusCheck(Arc<dyn Bus>);

#[async_trait]
impl ReadinessCheck for BusCheck {
    fn name(&self) -> String {
        format!("bus:{}", self.0.kind())
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

/// What this process depends on, for `/readyz` and the queue gauges.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<Arc<dyn ReadinessCheck>>,
    outboxes: Vec<Db>,
    bus: Option<Arc<dyn Bus>>,
    consumers: Vec<String>,
    samplers: Vec<Arc<dyn crate::supervise::MetricsSampler>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// A service database: checked, and its outbox backlog measured.
    pub fn database(&mut self, db: Db) -> &mut Self {
        self.checks.push(Arc::new(db.clone()));
        self.outboxes.push(db);
        self
    }

    pub fn bus(&mut self, bus: Arc<dyn Bus>) -> &mut Self {
        self.checks.push(Arc::new(BusCheck(bus.clone())));
        self.bus = Some(bus);
        self
    }

    pub fn consumer(&mut self, name: impl Into<String>) -> &mut Self {
        self.consumers.push(name.into());
        self
    }

    pub fn check(&mut self, check: Arc<dyn ReadinessCheck>) -> &mut Self {
        self.checks.push(check);
        self
    }

    /// Gauges sampled at scrape time (e.g. the supervisor's consumer gauges).
    pub fn sampler(&mut self, sampler: Arc<dyn crate::supervise::MetricsSampler>) -> &mut Self {
        self.samplers.push(sampler);
        self
    }

    async fn sample_queue_gauges(&self) {
        for sampler in &self.samplers {
            sampler.sample().await;
        }
        for db in &self.outboxes {
            if let Ok(n) = outbox::backlog(db).await {
                metrics::gauge!("outbox_backlog", "service" => db.service()).set(n as f64);
            }
        }
        if let Some(bus) = &self.bus {
            for consumer in &self.consumers {
                if let Ok(n) = bus.pending(consumer).await {
                    metrics::gauge!("bus_consumer_lag", "consumer" => consumer.clone())
                        .set(n as f64);
                }
                if let Ok(n) = bus.dead_lettered(consumer).await {
                    metrics::gauge!("bus_dlq_depth", "consumer" => consumer.clone()).set(n as f64);
                }
            }
        }
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn ops_router(readiness: Readiness) -> Router {
    // The recorder is installed before any gauge is sampled, so nothing is recorded into
    // the void.
    let prometheus = telemetry::metrics_handle();
    health_routes()
        .route(
            "/metrics",
            get(move |State(readiness): State<Arc<Readiness>>| {
                let prometheus = prometheus.clone();
                async move {
                    readiness.sample_queue_gauges().await;
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        prometheus.render(),
                    )
                }
            }),
        )
        .with_state(Arc::new(readiness))
}

/// `/healthz` and `/readyz` only (no `/metrics`).
pub fn health_router(readiness: Readiness) -> Router {
    health_routes().with_state(Arc::new(readiness))
}

fn health_routes() -> Router<Arc<Readiness>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> impl IntoResponse {
    let mut failed = serde_json::Map::new();
    let mut ok = Vec::new();
    for check in &readiness.checks {
        let result = tokio::time::timeout(Duration::from_secs(2), check.check())
            .await
            .unwrap_or_else(|_| Err("timed out after 2s".into()));
        match result {
            Ok(()) => ok.push(check.name()),
            Err(e) => {
                tracing::warn!(dependency = %check.name(), error = %e, "not ready");
                failed.insert(check.name(), e.into());
            }
        }
    }
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({ "ready": failed.is_empty(), "ok": ok, "failed": failed })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DatabaseTarget;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(http::Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readyz_names_the_dependency_that_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let target = DatabaseTarget::SqliteDir(dir.path().to_owned());
        let up = Db::connect(&target, "up").await.unwrap();
        let down = Db::connect(&target, "down").await.unwrap();
        let mut readiness = Readiness::new();
        readiness.database(up).database(down.clone());
        let router = ops_router(readiness);

        let (status, body) = get(router.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");

        down.close().await;
        let (status, body) = get(router.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(body["failed"]["db:down"].is_string(), "{body}");
        assert_eq!(body["ok"], serde_json::json!(["db:up"]));

        // Alive is not ready: /healthz still answers.
        assert_eq!(get(router, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_health_router_serves_health_but_not_metrics() {
        let router = health_router(Readiness::new());
        assert_eq!(get(router.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(router.clone(), "/readyz").await.0, StatusCode::OK);
        assert_eq!(get(router, "/metrics").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn metrics_report_outbox_backlog_consumer_lag_and_dead_letters() {
        use crate::{
            bus::{local::LocalBus, Handler, HandlerError, RetryPolicy, Subscription},
            events::{Envelope, Event},
            outbox,
            shutdown::Shutdown,
        };
        struct Fails;
        #[async_trait]
        impl Handler for Fails {
            async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
                Err(HandlerError::new("always"))
            }
        }
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Probe {}
        impl Event for Probe {
            const TYPE: &'static str = "test.MetricsProbe";
            const VERSION: u32 = 1;
        }

        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&DatabaseTarget::SqliteDir(dir.path().to_owned()), "metered")
            .await
            .unwrap();
        db.migrate(&sqlx::migrate::Migrator::DEFAULT).await.unwrap();
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::open(&dir.path().join("bus.db")).await.unwrap());
        let shutdown = Shutdown::new();
        let retry = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        let consumer = bus
            .subscribe(
                Subscription::new("metered.dead", &[Probe::TYPE]).with_retry(retry),
                Arc::new(Fails),
                shutdown.clone(),
            )
            .await
            .unwrap();
        // One event left in the outbox, one dead-lettered on the bus.
        let mut tx = db.begin().await.unwrap();
        outbox::enqueue(&mut tx, &Envelope::new(&Probe {}))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        bus.publish(&Envelope::new(&Probe {})).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while bus.dead_lettered("metered.dead").await.unwrap() == 0 {
            assert!(std::time::Instant::now() < deadline, "never dead-lettered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let mut readiness = Readiness::new();
        readiness.database(db).bus(bus).consumer("metered.dead");
        let (status, text) = get(ops_router(readiness), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("outbox_backlog{service=\"metered\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bus_dlq_depth{consumer=\"metered.dead\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bus_consumer_lag{consumer=\"metered.dead\"} 0"),
            "{text}"
        );
        shutdown.trigger();
        consumer.await.unwrap();
    }
}
