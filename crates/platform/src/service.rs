//! The contract between a service crate and the binary.
//!
//! A service is a crate that implements [`Service`]: its name, the services it uses, its
//! configuration section, its migrations, how it starts in this process from a [`Context`]
//! into what the binary serves and runs ([`Started`]: public routes, internal routes,
//! OpenAPI, workers, event consumers, readiness checks), and how its client is reached when
//! it runs in another process ([`Service::connect_remote`]).
//!
//! The binary keeps one list of [`ServiceDef`]s, one line per service
//! (`ServiceDef::of::<rendermart_identity::IdentityService>()`), and derives everything else
//! from it: which names `--services` accepts, what `migrate` migrates, what `config` prints,
//! which outbox relays, consumers, workers and readiness checks run, and which
//! `--<name>-url` flags exist. Adding a service is a crate and a line in that list.
//!
//! Services reach each other only through client traits kept in [`Clients`]: a service that
//! runs here provides its local client while it starts (list order puts dependencies
//! first); one that runs elsewhere is provided by its `connect_remote` from its URL.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock},
};

use axum::Router;
use serde::{de::DeserializeOwned, Serialize};
use sqlx::migrate::Migrator;

use crate::{
    bus::{Bus, Handler, Subscription},
    client::ServiceClient,
    db::Db,
    http::ReadinessCheck,
    ratelimit::RateLimiter,
    shutdown::Shutdown,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a service crate implements (on a unit struct, e.g. `pub struct IdentityService;`).
pub trait Service: Send + Sync + 'static {
    /// Lower-case name: the `--services` token, the schema (PostgreSQL) or file (SQLite)
    /// of its tables, its `[name]` configuration section, the `<name>_url` key
    /// (`RENDERMART_<NAME>_URL`, `--<name>-url`) that says where it runs when not here,
    /// the prefix of its internal routes (`/internal/<name>/…`) and of its consumers.
    const NAME: &'static str;
    /// Services whose clients this one asks for. Each must run in this process (earlier in
    /// the list) or be reachable at its configured URL; the binary refuses to start
    /// otherwise, naming the missing setting.
    const USES: &'static [&'static str] = &[];
    /// Its `[name]` configuration section. Every field must have a default
    /// (`#[serde(default)]`), so an absent section means the defaults.
    type Config: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Its schema, applied (with the platform's outbox/inbox tables) before it starts.
    /// `None` for a service without tables; its [`Context::db`] is then `None`.
    fn migrations() -> Option<&'static Migrator> {
        None
    }

    /// Builds the service in this process: connects its workers, provides its client in
    /// `ctx.clients`, and returns what the binary serves and runs.
    fn start(ctx: Context<Self::Config>) -> impl Future<Output = anyhow::Result<Started>> + Send;

    /// Provides this service's client(s) in `clients` for a process where it does not run,
    /// talking to it at `remote`. `config` is its section as this process sees it (a client
    /// may have settings of its own, e.g. a cache). The default says it has none.
    fn connect_remote(
        config: &Self::Config,
        remote: &ServiceClient,
        clients: &Clients,
    ) -> anyhow::Result<()> {
        let _ = (config, remote, clients);
        anyhow::bail!("{} cannot be reached remotely", Self::NAME)
    }
}

/// What a service starts from.
pub struct Context<C> {
    pub config: C,
    /// Its own database (schema or file), migrated; `None` if it has no migrations.
    pub db: Option<Db>,
    pub bus: Arc<dyn Bus>,
    pub limiter: Arc<dyn RateLimiter>,
    /// Redis, when the deployment has one (`--redis-url`).
    pub redis: Option<redis::aio::ConnectionManager>,
    /// Where images and other files live (a local directory or S3), with signed links.
    pub objects: crate::objects::Objects,
    pub shutdown: Shutdown,
    pub clients: Clients,
    pub shared: Arc<SharedSettings>,
}

impl<C> Context<C> {
    /// Its database; an error if the service declared no migrations.
    pub fn db(&self) -> anyhow::Result<Db> {
        self.db
            .clone()
            .ok_or_else(|| anyhow::anyhow!("this service has no database (no migrations)"))
    }
}

/// Settings of the process that several services read.
#[derive(Clone, Debug, Default)]
pub struct SharedSettings {
    /// Where the embedded default keeps its files (SQLite, local bus, objects).
    pub data_dir: std::path::PathBuf,
    /// Mark cookies `Secure` (the site is served over HTTPS).
    pub cookie_secure: bool,
    /// Key prefix for shared infrastructure (RabbitMQ objects, Redis keys).
    pub namespace: String,
    /// The shared secret internal calls are signed with, when the deployment has one.
    pub service_secret: Option<rendermart_types::Secret>,
}

/// What a started service gives the binary.
#[derive(Default)]
pub struct Started {
    /// Public routes (`/api/v1/…`, pages), merged into the process's router.
    pub routes: Router,
    /// Routes for other services only, nested under `/internal/<name>` and refused (404)
    /// without a valid service credential.
    pub internal: Router,
    /// The OpenAPI document of its public API routes, merged into `/api/v1/openapi.json`.
    pub openapi: Option<utoipa::openapi::OpenApi>,
    /// Background loops, supervised (`platform::supervise`): restarted with backoff if they
    /// end or panic before shutdown.
    pub workers: Vec<Worker>,
    /// Event subscriptions (made with [`crate::consumer::Consumer`]), started once every
    /// service of the process has started, and supervised.
    pub consumers: Vec<EventConsumer>,
    /// Extra dependencies `/readyz` must check (its database and the bus are checked
    /// already).
    pub readiness: Vec<Arc<dyn ReadinessCheck>>,
}

/// An event subscription and the handler that applies its events, as the binary
/// subscribes it: `Started { consumers: vec![Consumer::new(db, "wallet.x", h)?.into()], .. }`.
pub struct EventConsumer {
    pub subscription: Subscription,
    pub handler: Arc<dyn Handler>,
}

impl<H: crate::consumer::EventHandler> From<crate::consumer::Consumer<H>> for EventConsumer {
    fn from(consumer: crate::consumer::Consumer<H>) -> Self {
        let (subscription, handler) = consumer.into_parts();
        Self {
            subscription,
            handler,
        }
    }
}

type WorkerFn = dyn Fn(Shutdown) -> BoxFuture<'static, ()> + Send + Sync;

/// A named background loop. It is a factory, so a supervisor can run it again if it ends
/// (or panics) before shutdown.
#[derive(Clone)]
pub struct Worker {
    pub name: String,
    run: Arc<WorkerFn>,
}

impl Worker {
    pub fn new<F, Fut>(name: impl Into<String>, run: F) -> Self
    where
        F: Fn(Shutdown) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            name: name.into(),
            run: Arc::new(move |shutdown| Box::pin(run(shutdown))),
        }
    }

    /// One run of the loop, until shutdown (or until it gives up).
    pub fn run(&self, shutdown: Shutdown) -> BoxFuture<'static, ()> {
        (self.run)(shutdown)
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).finish()
    }
}

/// The clients of other services this process can reach, by client trait:
/// `clients.provide::<dyn IdentityApi>(identity)` and `clients.get::<dyn IdentityApi>()`.
#[derive(Clone, Default)]
pub struct Clients {
    by_type: Arc<RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

impl Clients {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `client` the implementation of `T` in this process (replacing any earlier one).
    pub fn provide<T: ?Sized + Send + Sync + 'static>(&self, client: Arc<T>) {
        let mut map = self.by_type.write().unwrap_or_else(|p| p.into_inner());
        map.insert(TypeId::of::<T>(), Arc::new(client));
    }

    /// The implementation of `T`, if one was provided.
    pub fn get<T: ?Sized + Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let map = self.by_type.read().unwrap_or_else(|p| p.into_inner());
        map.get(&TypeId::of::<T>())
            .and_then(|any| any.downcast_ref::<Arc<T>>())
            .cloned()
    }

    /// The implementation of `T`, or an error naming the service that should provide it.
    pub fn require<T: ?Sized + Send + Sync + 'static>(
        &self,
        service: &str,
    ) -> anyhow::Result<Arc<T>> {
        self.get::<T>().ok_or_else(|| {
            anyhow::anyhow!(
                "no {} client: run {service} in this process or set --{service}-url",
                std::any::type_name::<T>()
            )
        })
    }
}

/// Where a service's configuration section comes from: the binary's layered configuration
/// (defaults, file, environment, flags).
pub type ConfigSource = figment::Figment;

type StartFn = fn(&ConfigSource, Context<()>) -> BoxFuture<'static, anyhow::Result<Started>>;

/// A [`Service`] with its type erased, as the binary's list holds it.
#[derive(Clone, Copy)]
pub struct ServiceDef {
    pub name: &'static str,
    pub uses: &'static [&'static str],
    pub migrations: Option<&'static Migrator>,
    section: fn(&ConfigSource) -> Result<serde_json::Value, Box<figment::Error>>,
    start: StartFn,
    connect_remote: ConnectFn,
}

type ConnectFn = fn(&ConfigSource, &ServiceClient, &Clients) -> anyhow::Result<()>;

impl std::fmt::Debug for ServiceDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceDef")
            .field("name", &self.name)
            .field("uses", &self.uses)
            .finish()
    }
}

fn config_of<S: Service>(source: &ConfigSource) -> Result<S::Config, Box<figment::Error>> {
    if source.contains(S::NAME) {
        source.extract_inner(S::NAME).map_err(Box::new)
    } else {
        Ok(S::Config::default())
    }
}

impl ServiceDef {
    pub fn of<S: Service>() -> Self {
        Self {
            name: S::NAME,
            uses: S::USES,
            migrations: S::migrations(),
            section: |source| {
                let config = config_of::<S>(source)?;
                serde_json::to_value(&config)
                    .map_err(|e| Box::new(figment::Error::from(e.to_string())))
            },
            start: |source, ctx| {
                let config = config_of::<S>(source);
                Box::pin(async move {
                    let config = config?;
                    let ctx = Context {
                        config,
                        db: ctx.db,
                        bus: ctx.bus,
                        limiter: ctx.limiter,
                        redis: ctx.redis,
                        objects: ctx.objects,
                        shutdown: ctx.shutdown,
                        clients: ctx.clients,
                        shared: ctx.shared,
                    };
                    S::start(ctx).await
                })
            },
            connect_remote: |source, remote, clients| {
                S::connect_remote(&config_of::<S>(source)?, remote, clients)
            },
        }
    }

    /// Its effective configuration section (defaults filled in), as JSON; an error if the
    /// section does not parse. Secrets show redacted (they serialize that way).
    pub fn config_section(
        &self,
        source: &ConfigSource,
    ) -> Result<serde_json::Value, Box<figment::Error>> {
        (self.section)(source)
    }

    pub fn start(
        &self,
        source: &ConfigSource,
        ctx: Context<()>,
    ) -> BoxFuture<'static, anyhow::Result<Started>> {
        (self.start)(source, ctx)
    }

    pub fn connect_remote(
        &self,
        source: &ConfigSource,
        remote: &ServiceClient,
        clients: &Clients,
    ) -> anyhow::Result<()> {
        (self.connect_remote)(source, remote, clients)
    }
}

/// Orders `defs` so that every service comes after the ones it uses (a stable topological
/// sort: the list order is kept where it does not matter). An error names a cycle.
pub fn in_dependency_order(defs: &[ServiceDef]) -> anyhow::Result<Vec<ServiceDef>> {
    let mut ordered: Vec<ServiceDef> = Vec::with_capacity(defs.len());
    let mut pending: Vec<ServiceDef> = defs.to_vec();
    while !pending.is_empty() {
        let ready = pending.iter().position(|d| {
            d.uses
                .iter()
                .all(|u| ordered.iter().any(|o| o.name == *u) || !defs.iter().any(|x| x.name == *u))
        });
        match ready {
            Some(i) => ordered.push(pending.remove(i)),
            None => {
                let names: Vec<_> = pending.iter().map(|d| d.name).collect();
                anyhow::bail!("services use each other in a cycle: {}", names.join(", "));
            }
        }
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Greeter: Send + Sync {
        fn greet(&self) -> String;
    }
    struct Hello;
    impl Greeter for Hello {
        fn greet(&self) -> String {
            "hello".into()
        }
    }

    #[test]
    fn clients_are_found_by_their_trait() {
        let clients = Clients::new();
        assert!(clients.get::<dyn Greeter>().is_none());
        let err = clients.require::<dyn Greeter>("greeter").err().unwrap();
        assert!(err.to_string().contains("--greeter-url"), "{err}");
        clients.provide::<dyn Greeter>(Arc::new(Hello));
        assert_eq!(clients.get::<dyn Greeter>().unwrap().greet(), "hello");
    }

    #[derive(Clone, Default, Serialize, serde::Deserialize)]
    #[serde(default)]
    struct EchoConfig {
        greeting: String,
        secret: Option<rendermart_types::Secret>,
    }
    struct Echo;
    impl Service for Echo {
        const NAME: &'static str = "echo";
        const USES: &'static [&'static str] = &["base"];
        type Config = EchoConfig;
        async fn start(ctx: Context<EchoConfig>) -> anyhow::Result<Started> {
            anyhow::ensure!(ctx.config.greeting == "hi", "config reached the service");
            Ok(Started::default())
        }
    }
    struct Base;
    impl Service for Base {
        const NAME: &'static str = "base";
        type Config = EchoConfig;
        async fn start(_: Context<EchoConfig>) -> anyhow::Result<Started> {
            Ok(Started::default())
        }
    }

    #[test]
    fn a_section_is_read_with_defaults_and_shows_secrets_redacted() {
        use figment::providers::{Format, Toml};
        let source = ConfigSource::new().merge(Toml::string(
            "[echo]\ngreeting = \"hi\"\nsecret = \"hunter2\"\n",
        ));
        let section = ServiceDef::of::<Echo>().config_section(&source).unwrap();
        assert_eq!(section["greeting"], "hi");
        assert_eq!(section["secret"], "***");
        let empty = ServiceDef::of::<Echo>()
            .config_section(&ConfigSource::new())
            .unwrap();
        assert_eq!(empty["greeting"], "");
        let bad = ConfigSource::new().merge(Toml::string("[echo]\ngreeting = 5\n"));
        assert!(ServiceDef::of::<Echo>().config_section(&bad).is_err());
    }

    #[test]
    fn services_start_after_the_ones_they_use() {
        let defs = [ServiceDef::of::<Echo>(), ServiceDef::of::<Base>()];
        let order: Vec<_> = in_dependency_order(&defs)
            .unwrap()
            .iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(order, ["base", "echo"]);
    }
}
