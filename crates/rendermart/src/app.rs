//! Wiring: turns [`Settings`] into a running process. `Application::build` connects the
//! backends the configuration names, starts the enabled services (migrations, routes,
//! outbox relay, workers) and binds the listener; `run_until_stopped` serves until the
//! shutdown signal, then drains in order: stop accepting, finish in-flight requests, stop
//! workers and consumers, flush the outbox relays, close the pools.
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
    http::{edge_layers, health_router, ops_router, serve, EdgeConfig, Readiness, ServeConfig},
    outbox::{Relay, RelayConfig},
    ratelimit::{MemoryRateLimiter, RateLimiter, RedisRateLimiter},
    shutdown::Shutdown,
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
    /// The operations listener (`--ops-addr`) and its router, when configured.
    ops: Option<(TcpListener, Router)>,
    serve_config: ServeConfig,
    shutdown: Shutdown,
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
        let mut tasks = Vec::new();
        let mut databases = Vec::new();
        let mut api = Router::new();
        let mut doc = openapi::root();

        let identity = if settings.services.contains(ServiceName::Identity) {
            let identity = open_identity(&settings, &backends).await?;
            let db = identity.db().clone();
            backends.readiness.database(db.clone());
            tasks.push(spawn_relay(db.clone(), &backends, &shutdown));
            tasks.push(tokio::spawn(rendermart_identity::worker(
                identity.clone(),
                shutdown.clone(),
            )));
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
        // With a separate operations address, the public port keeps health but not metrics.
        let public_ops = match settings.ops_addr {
            Some(_) => health_router(backends.readiness.clone()),
            None => ops_router(backends.readiness.clone()),
        };
        let router = router
            .fallback_service(rendermart_web::fallback())
            .layer(middleware::from_fn_with_state(authenticator, auth::layer))
            .merge(public_ops);
        let edge = EdgeConfig {
            request_timeout: Duration::from_secs(settings.request_timeout_secs),
            body_limit: settings.body_limit_bytes,
            trusted_proxies: settings.trusted_proxies.clone(),
            cookie_secure: settings.cookie_secure,
            hsts_max_age: Duration::from_secs(settings.hsts_max_age_secs),
        };
        let router = edge_layers(router, &edge);
        let serve_config = ServeConfig {
            header_read_timeout: Duration::from_secs(settings.header_read_timeout_secs),
            max_connections: settings.max_connections,
            ..ServeConfig::default()
        };

        let listener = TcpListener::bind(settings.addr)
            .await
            .with_context(|| format!("binding {}", settings.addr))?;
        let ops = match settings.ops_addr {
            Some(addr) => {
                let ops_listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the operations address {addr}"))?;
                let ops_router = edge_layers(ops_router(backends.readiness.clone()), &edge);
                Some((ops_listener, ops_router))
            }
            None => None,
        };
        tracing::info!(
            addr = %listener.local_addr()?,
            ops_addr = %ops
                .as_ref()
                .and_then(|(l, _)| l.local_addr().ok())
                .map_or_else(|| "off".to_owned(), |a| a.to_string()),
            services = %settings.services,
            database = ?backends.target.backend(),
            bus = backends.bus.kind(),
            "rendermart ready"
        );
        Ok(Self {
            listener,
            router,
            ops,
            serve_config,
            shutdown,
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

    /// The operations address (`--ops-addr`), when one is configured.
    pub fn ops_local_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Triggering this handle starts the graceful shutdown.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            ops,
            serve_config,
            shutdown,
            tasks,
            databases,
        } = self;
        let public = serve(listener, router, &serve_config, shutdown.wait());
        let operations = async {
            match ops {
                Some((listener, router)) => {
                    serve(listener, router, &serve_config, shutdown.wait()).await
                }
                None => Ok(()),
            }
        };
        tokio::try_join!(public, operations).context("HTTP server failed")?;
        tracing::info!("HTTP server stopped; draining workers and outbox relays");
        shutdown.trigger();
        let drain = futures_util::future::join_all(tasks);
        if tokio::time::timeout(Duration::from_secs(20), drain)
            .await
            .is_err()
        {
            tracing::warn!("workers did not stop within 20s");
        }
        for db in databases {
            db.close().await;
        }
        tracing::info!("rendermart stopped");
        Ok(())
    }
}

fn spawn_relay(db: Db, backends: &Backends, shutdown: &Shutdown) -> JoinHandle<()> {
    let relay = Relay::new(db, backends.bus.clone(), RelayConfig::default());
    tokio::spawn(relay.run(shutdown.clone()))
}
