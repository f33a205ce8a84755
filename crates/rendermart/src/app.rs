//! Wiring: turns [`Settings`] and the list of services ([`crate::services`]) into a running
//! process. `Application::build` connects the backends the configuration names, reaches the
//! services that run elsewhere through their remote clients, starts the services enabled
//! here in dependency order (migrations, routes, internal routes, and per database an
//! outbox relay, a timer worker and an inbox pruner; workers and consumers — all
//! supervised), and binds the listener; `run_until_stopped` serves until the shutdown
//! signal, then drains in order: stop accepting, finish in-flight requests, stop workers
//! and consumers, flush the outbox relays until empty (or their grace period ends), close
//! the pools. The relays get their own stop signal for that: they must outlive everything
//! that can still commit events.
//!
//! Business logic never appears here, and no service knows which backends it runs on or
//! whether the services it uses run in this process.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{middleware, routing::get, Json, Router};
use rendermart_platform::{
    auth::{self, Authenticator, NoAuthenticator},
    bus::{amqp::AmqpBus, local::LocalBus, Bus},
    client::{ClientOptions, RemoteCheck, ServiceClient},
    db::{DatabaseTarget, Db},
    http::{edge_layers, health_router, ops_router, serve, EdgeConfig, Readiness, ServeConfig},
    inbox::{self, InboxRetention},
    internal::{self, ServiceCredential},
    objects::{self, Objects},
    outbox::{Relay, RelayConfig},
    ratelimit::{MemoryRateLimiter, RateLimiter, RedisRateLimiter},
    service::{in_dependency_order, Clients, Context, ServiceDef, SharedSettings},
    shutdown::Shutdown,
    supervise::Supervisor,
    timers::{TimerConfig, TimerWorker},
};
use tokio::net::TcpListener;

use crate::{config::Settings, openapi, services};

/// A built, bound, not yet serving RenderMart process.
pub struct Application {
    listener: TcpListener,
    router: Router,
    /// The operations listener (`--ops-addr`) and its router, when configured.
    ops: Option<(TcpListener, Router)>,
    serve_config: ServeConfig,
    shutdown: Shutdown,
    /// Workers and consumers: stopped once in-flight requests are done.
    workers: Supervisor,
    /// Outbox relays: stopped (and flushed) last.
    relays: Supervisor,
    databases: Vec<Db>,
    /// The names of the bus consumers this process runs.
    consumer_names: Vec<String>,
}

/// The backends every service of this process shares.
pub struct Backends {
    pub target: DatabaseTarget,
    pub bus: Arc<dyn Bus>,
    pub limiter: Arc<dyn RateLimiter>,
    pub redis: Option<redis::aio::ConnectionManager>,
    pub objects: Objects,
    readiness: Readiness,
}

impl Backends {
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let target = DatabaseTarget::from_config(
            settings.database_url.as_ref().map(|u| u.expose()),
            &settings.data_dir,
        )?;
        let mut readiness = Readiness::new();
        let bus: Arc<dyn Bus> = match &settings.bus {
            Some(url) => Arc::new(
                AmqpBus::connect(url.expose(), &format!("{}.events", settings.namespace))
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
        let (limiter, redis): (Arc<dyn RateLimiter>, _) = match &settings.redis_url {
            Some(url) => {
                let limiter = Arc::new(
                    RedisRateLimiter::connect(url.expose(), &settings.namespace)
                        .await
                        .context("connecting to Redis")?,
                );
                readiness.check(limiter.clone());
                let redis = limiter.connection();
                (limiter, Some(redis))
            }
            None => (Arc::new(MemoryRateLimiter::new()), None),
        };
        let objects = objects::open(&settings.objects, &settings.data_dir)
            .await
            .context("opening the object store")?;
        readiness.check(objects.readiness_check());
        Ok(Self {
            target,
            bus,
            limiter,
            redis,
            objects,
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

/// The services enabled in this process, in the order they start.
fn local_services(settings: &Settings) -> anyhow::Result<Vec<ServiceDef>> {
    let enabled: Vec<ServiceDef> = services::all()
        .into_iter()
        .filter(|d| settings.services.contains(d.name))
        .collect();
    in_dependency_order(&enabled)
}

/// Provides the clients of the services that run elsewhere, and checks that every service
/// used here is either here or reachable.
fn connect_remote_services(
    settings: &Settings,
    clients: &Clients,
    readiness: &mut Readiness,
) -> anyhow::Result<()> {
    let defs = services::all();
    let local = |name: &str| settings.services.contains(name);
    let secret = settings.service_secret.as_ref();
    if !settings.services.is_all() && secret.is_none() {
        anyhow::bail!(
            "this process runs only some services ({}), so the others call it or it calls \
             them: set the shared service secret (RENDERMART_SERVICE_SECRET or \
             --service-secret) in every process of the deployment",
            settings.services
        );
    }
    for def in defs.iter().filter(|d| !local(d.name)) {
        let Some(url) = settings.service_url(def.name) else {
            continue;
        };
        let secret = secret.context("a remote service needs the shared service secret")?;
        let credential = ServiceCredential::new(&settings.services.to_string(), secret);
        let client = ServiceClient::new(def.name, &url, credential, ClientOptions::default())?;
        def.connect_remote(&settings.source, &client, clients)
            .with_context(|| format!("connecting to {} at {url}", def.name))?;
        readiness.check(Arc::new(RemoteCheck(client)));
        tracing::info!(service = def.name, %url, "using a remote service");
    }
    for def in defs.iter().filter(|d| local(d.name)) {
        for used in def.uses {
            if !local(used) && settings.service_url(used).is_none() {
                anyhow::bail!(
                    "{} uses {used}: run it in this process (--services …,{used}) or say where \
                     it runs (--{used}-url or RENDERMART_{}_URL)",
                    def.name,
                    used.to_ascii_uppercase()
                );
            }
        }
    }
    Ok(())
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        rendermart_platform::telemetry::metrics_handle();
        let backends = Backends::connect(&settings).await?;
        let mut readiness = backends.readiness.clone();
        let shutdown = Shutdown::new();
        let clients = Clients::new();
        connect_remote_services(&settings, &clients, &mut readiness)?;

        let shared = Arc::new(SharedSettings {
            data_dir: settings.data_dir.clone(),
            cookie_secure: settings.cookie_secure,
            namespace: settings.namespace.clone(),
            service_secret: settings.service_secret.clone(),
        });
        let workers = Supervisor::new(Shutdown::new());
        let relays = Supervisor::new(Shutdown::new());
        readiness.check(workers.liveness());
        readiness.sampler(workers.sampler());
        let mut databases = Vec::new();
        let mut routes = Router::new();
        let mut internal_routes = Router::new();
        let mut doc = openapi::root();
        let mut consumers = Vec::new();
        for def in local_services(&settings)? {
            let db = match def.migrations {
                Some(migrator) => {
                    let db = backends.database(def.name, migrator).await?;
                    readiness.database(db.clone());
                    databases.push(db.clone());
                    Some(db)
                }
                None => None,
            };
            let ctx = Context {
                config: (),
                db,
                bus: backends.bus.clone(),
                limiter: backends.limiter.clone(),
                redis: backends.redis.clone(),
                objects: backends.objects.clone(),
                shutdown: shutdown.clone(),
                clients: clients.clone(),
                shared: shared.clone(),
            };
            let started = def
                .start(&settings.source, ctx)
                .await
                .with_context(|| format!("starting {}", def.name))?;
            routes = routes.merge(started.routes);
            if started.internal.has_routes() {
                internal_routes =
                    internal_routes.nest(&format!("/internal/{}", def.name), started.internal);
            }
            if let Some(service_doc) = started.openapi {
                doc.merge(service_doc);
            }
            for worker in started.workers {
                workers.spawn_worker(&worker.name.clone(), move |stop| worker.run(stop));
            }
            consumers.extend(started.consumers);
            for check in started.readiness {
                readiness.check(check);
            }
        }
        let consumer_names = consumers
            .iter()
            .map(|c| c.subscription.consumer.clone())
            .collect();
        for consumer in consumers {
            workers.spawn_consumer(
                backends.bus.clone(),
                consumer.subscription,
                consumer.handler,
            );
        }
        // Relays publish only once every consumer has bound its queue: on a first start, an
        // event published before that would reach no queue.
        if !workers.consumers_subscribed(CONSUMERS_SUBSCRIBE_WAIT).await {
            tracing::warn!(
                wait = ?CONSUMERS_SUBSCRIBE_WAIT,
                "not every consumer has subscribed yet; starting the outbox relays anyway (they retry)"
            );
        }
        for db in &databases {
            spawn_event_workers(db, &backends, &workers, &relays);
        }

        let authenticator: Arc<dyn Authenticator> = clients
            .get::<dyn Authenticator>()
            .unwrap_or_else(|| Arc::new(NoAuthenticator));
        openapi::add_edge_problems(&mut doc);
        let doc = Arc::new(doc);
        let public = routes
            .route(
                "/api/v1/openapi.json",
                get(move || async move { Json(doc.as_ref().clone()) }),
            )
            .merge(backends.objects.router())
            .fallback_service(rendermart_web::fallback())
            .layer(middleware::from_fn_with_state(authenticator, auth::layer));
        // Internal routes answer other RenderMart processes only: the service credential
        // is checked before anything else, and without a secret they do not exist.
        let verifier = settings
            .service_secret
            .as_ref()
            .map(|secret| Arc::new(ServiceCredential::new("verifier", secret)));
        let internal_routes =
            internal_routes.layer(middleware::from_fn_with_state(verifier, internal::layer));
        // With a separate operations address, the public port keeps health but not metrics.
        let public_ops = match settings.ops_addr {
            Some(_) => health_router(readiness.clone()),
            None => ops_router(readiness.clone()),
        };
        let router = public.merge(internal_routes).merge(public_ops);
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
                Some((ops_listener, edge_layers(ops_router(readiness), &edge)))
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
            workers,
            relays,
            databases,
            consumer_names,
        })
    }

    /// The names of the bus consumers this process runs (`wallet.generations`…).
    pub fn consumer_names(&self) -> &[String] {
        &self.consumer_names
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
            workers,
            relays,
            databases,
            consumer_names: _,
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
        // In-flight requests have committed. Then workers and consumers finish what they
        // hold (and may commit events too); only then are the relays told to flush.
        tracing::info!("HTTP server stopped; draining workers and consumers");
        shutdown.trigger();
        workers.shutdown().trigger();
        if !workers.join(Duration::from_secs(20)).await {
            tracing::warn!("workers did not stop within 20s");
        }
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

/// Longest the start waits for consumers to subscribe before the relays start.
const CONSUMERS_SUBSCRIBE_WAIT: Duration = Duration::from_secs(30);

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
