//! Wiring: turns [`Settings`] into a running process. `Application::build` connects the
//! backends the configuration names, starts the enabled services (migrations, routes,
//! outbox relay, timer worker, inbox pruner, workers — all supervised) and binds the
//! listener; `run_until_stopped` serves until the shutdown signal, then drains in order:
//! stop accepting, finish in-flight requests, stop workers and consumers, flush the outbox
//! relays until empty (or their grace period ends), close the pools. The relays get their
//! own stop signal for that: they must outlive everything that can still commit events.
//!
//! Business logic never appears here, and no service knows which backends it runs on.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{middleware, routing::get, Json, Router};
use rendermart_identity::{Identity, IdentityApi};
use rendermart_platform::{
    auth::{self, Authenticator},
    bus::{amqp::AmqpBus, local::LocalBus, Bus},
    db::{DatabaseTarget, Db},
    http::{edge_layers, ops_router, EdgeConfig, Readiness},
    inbox::{self, InboxRetention},
    outbox::{Relay, RelayConfig},
    ratelimit::{MemoryRateLimiter, RateLimiter, RedisRateLimiter},
    shutdown::Shutdown,
    supervise::Supervisor,
    timers::{TimerConfig, TimerWorker},
};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    config::{ServiceName, Settings},
    openapi,
};

/// A built, bound, not yet serving RenderMart process.
pub struct Application {
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    /// Workers and consumers: stopped once in-flight requests are done.
    workers: Supervisor,
    /// Outbox relays: stopped (and flushed) last.
    relays: Supervisor,
    tasks: Vec<JoinHandle<()>>,
    databases: Vec<Db>,
}

/// The backends every service of this process shares.
pub struct Backends {
    pub target: DatabaseTarget,
    pub bus: Arc<dyn Bus>,
    pub limiter: Arc<dyn RateLimiter>,
    readiness: Readiness,
}

impl Backends {
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let target =
            DatabaseTarget::from_config(settings.database_url.as_deref(), &settings.data_dir)?;
        let mut readiness = Readiness::new();
        let bus: Arc<dyn Bus> = match &settings.bus {
            Some(url) => Arc::new(
                AmqpBus::connect(url, &format!("{}.events", settings.namespace))
                    .await
                    .context("connecting to RabbitMQ")?,
            ),
            None => {
                if matches!(target, DatabaseTarget::Postgres(_)) {
                    tracing::warn!(
                        "PostgreSQL with the in-process bus: events reach only consumers in \
                         this process; set --bus amqp://… when more than one process runs"
                    );
                }
                Arc::new(
                    LocalBus::open(&settings.data_dir.join("bus.db"))
                        .await
                        .context("opening the local bus")?,
                )
            }
        };
        readiness.bus(bus.clone());
        let limiter: Arc<dyn RateLimiter> = match &settings.redis_url {
            Some(url) => {
                let redis = Arc::new(
                    RedisRateLimiter::connect(url, &settings.namespace)
                        .await
                        .context("connecting to Redis")?,
                );
                readiness.check(redis.clone());
                redis
            }
            None => Arc::new(MemoryRateLimiter::new()),
        };
        Ok(Self {
            target,
            bus,
            limiter,
            readiness,
        })
    }

    /// Opens and migrates one service's database.
    pub async fn database(
        &self,
        service: &'static str,
        migrator: &sqlx::migrate::Migrator,
    ) -> anyhow::Result<Db> {
        let db = Db::connect(&self.target, service)
            .await
            .with_context(|| format!("connecting to the {service} database"))?;
        db.migrate(migrator)
            .await
            .with_context(|| format!("migrating the {service} database"))?;
        Ok(db)
    }
}

/// Opens identity's storage and service.
pub async fn open_identity(
    settings: &Settings,
    backends: &Backends,
) -> anyhow::Result<Arc<Identity>> {
    let db = backends
        .database(rendermart_identity::SERVICE, &rendermart_identity::MIGRATOR)
        .await?;
    Ok(Arc::new(
        Identity::new(db, backends.limiter.clone(), settings.identity.clone()).await?,
    ))
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        rendermart_platform::telemetry::metrics_handle();
        let mut backends = Backends::connect(&settings).await?;
        let shutdown = Shutdown::new();
        let workers = Supervisor::new(Shutdown::new());
        let relays = Supervisor::new(Shutdown::new());
        backends.readiness.check(workers.liveness());
        backends.readiness.sampler(workers.sampler());
        let tasks = Vec::new();
        let mut databases = Vec::new();
        let mut api = Router::new();
        let mut doc = openapi::root();

        let identity = if settings.services.contains(ServiceName::Identity) {
            let identity = open_identity(&settings, &backends).await?;
            let db = identity.db().clone();
            backends.readiness.database(db.clone());
            spawn_event_workers(&db, &backends, &workers, &relays);
            workers.spawn_worker("identity.worker", {
                let identity = identity.clone();
                move |stop| rendermart_identity::worker(identity.clone(), stop)
            });
            databases.push(db);
            api = api.merge(rendermart_identity::api::router(
                identity.clone(),
                settings.cookie_secure,
            ));
            doc.merge(<rendermart_identity::api::IdentityApiDoc as utoipa::OpenApi>::openapi());
            Some(identity)
        } else {
            None
        };

        // Until identity has a remote client, the services that authenticate callers run
        // beside it in one process.
        let authenticator: Arc<dyn Authenticator> = match &identity {
            Some(identity) => identity.clone(),
            None => anyhow::bail!(
                "the identity service must run in this process (add it to --services): \
                 a remote identity client is not available yet"
            ),
        };

        openapi::add_edge_problems(&mut doc);
        let mut router = api.route(
            "/api/v1/openapi.json",
            get({
                let doc = Arc::new(doc);
                move || async move { Json(doc.as_ref().clone()) }
            }),
        );
        if settings.services.contains(ServiceName::Web) {
            let identity: Arc<dyn IdentityApi> = identity.clone().context("web needs identity")?;
            router = router.merge(rendermart_web::router(
                identity,
                rendermart_web::WebConfig {
                    cookie_secure: settings.cookie_secure,
                },
            ));
        }
        let router = router
            .fallback_service(rendermart_web::fallback())
            .layer(middleware::from_fn_with_state(authenticator, auth::layer))
            .merge(ops_router(backends.readiness.clone()));
        let router = edge_layers(
            router,
            &EdgeConfig {
                request_timeout: Duration::from_secs(settings.request_timeout_secs),
                body_limit: settings.body_limit_bytes,
            },
        );

        let listener = TcpListener::bind(settings.addr)
            .await
            .with_context(|| format!("binding {}", settings.addr))?;
        tracing::info!(
            addr = %listener.local_addr()?,
            services = %settings.services,
            database = ?backends.target.backend(),
            bus = backends.bus.kind(),
            "rendermart ready"
        );
        Ok(Self {
            listener,
            router,
            shutdown,
            workers,
            relays,
            tasks,
            databases,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Triggering this handle starts the graceful shutdown.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            shutdown,
            workers,
            relays,
            tasks,
            databases,
        } = self;
        let signal = shutdown.clone();
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { signal.wait().await })
        .await
        .context("HTTP server failed")?;
        // In-flight requests have committed. Then workers and consumers finish what they
        // hold (and may commit events too); only then are the relays told to flush.
        tracing::info!("HTTP server stopped; draining workers and consumers");
        shutdown.trigger();
        workers.shutdown().trigger();
        if !workers.join(Duration::from_secs(20)).await {
            tracing::warn!("workers did not stop within 20s");
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), futures_join_all(tasks)).await;
        tracing::info!("flushing the outbox relays");
        relays.shutdown().trigger();
        if !relays.join(Duration::from_secs(20)).await {
            tracing::warn!("outbox relays did not finish flushing within 20s");
        }
        for db in databases {
            db.close().await;
        }
        tracing::info!("rendermart stopped");
        Ok(())
    }
}

async fn futures_join_all(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// A service database's event machinery, supervised: its outbox relay (stopped last, see
/// `run_until_stopped`), its timer worker and its inbox pruner.
fn spawn_event_workers(db: &Db, backends: &Backends, workers: &Supervisor, relays: &Supervisor) {
    let service = db.service();
    relays.spawn_worker(&format!("{service}.outbox_relay"), {
        let (db, bus) = (db.clone(), backends.bus.clone());
        move |stop| Relay::new(db.clone(), bus.clone(), RelayConfig::default()).run(stop)
    });
    workers.spawn_worker(&format!("{service}.timers"), {
        let db = db.clone();
        move |stop| TimerWorker::new(db.clone(), TimerConfig::default()).run(stop)
    });
    workers.spawn_worker(&format!("{service}.inbox_pruner"), {
        let db = db.clone();
        move |stop| inbox::run_pruner(db.clone(), InboxRetention::default(), stop)
    });
}
