//! Identity: who people are and how they prove it.
//!
//! Owns users (argon2id password hashes, roles), browser sessions, API tokens and their
//! tables; publishes `UserRegistered`. Its contract with everyone else (the `IdentityApi`
//! trait, wire types, errors, events, the remote client) is the `rendermart-identity-api`
//! crate; this crate is the implementation. Its public face:
//!
//! * [`IdentityService`] — the [`Service`] the binary lists: migrations, the `[identity]`
//!   section ([`IdentityConfig`]), and what it starts (routes, internal routes, OpenAPI,
//!   the session-purge worker; in process it provides `IdentityApi` and the platform
//!   `Authenticator`; elsewhere, [`RemoteIdentity`](rendermart_identity_api::RemoteIdentity));
//! * [`Identity`] — the service object, for the CLI (`admin create`);
//! * [`api::IdentityApiDoc`] — its OpenAPI.

pub mod api;
mod config;
pub mod domain;
mod internal;
mod secrets;
mod service;
mod store;

use std::{sync::Arc, time::Duration};

pub use config::IdentityConfig;
use rendermart_identity_api::{IdentityApi, RemoteIdentity};
use rendermart_platform::{
    auth::{AuthCache, Authenticator},
    client::ServiceClient,
    service::{Clients, Context, Service, Started, Worker},
    shutdown::Shutdown,
};
pub use service::Identity;
use utoipa::OpenApi;

/// Identity's migrations (the platform's outbox/inbox tables are added by `Db::migrate`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The identity service, as the binary starts it.
pub struct IdentityService;

impl Service for IdentityService {
    const NAME: &'static str = rendermart_identity_api::SERVICE;
    type Config = IdentityConfig;

    fn migrations() -> Option<&'static sqlx::migrate::Migrator> {
        Some(&MIGRATOR)
    }

    async fn start(ctx: Context<IdentityConfig>) -> anyhow::Result<Started> {
        let identity =
            Arc::new(Identity::new(ctx.db()?, ctx.limiter.clone(), ctx.config.clone()).await?);
        ctx.clients.provide::<dyn IdentityApi>(identity.clone());
        ctx.clients.provide::<dyn Authenticator>(identity.clone());
        let purge = identity.clone();
        Ok(Started {
            routes: api::router(
                identity.clone(),
                ctx.shared.cookie_secure,
                ctx.clients.clone(),
            ),
            internal: internal::router(identity),
            openapi: Some(api::IdentityApiDoc::openapi()),
            workers: vec![Worker::new("identity.purge_sessions", move |shutdown| {
                purge_sessions(purge.clone(), shutdown)
            })],
            ..Started::default()
        })
    }

    fn connect_remote(
        config: &IdentityConfig,
        remote: &ServiceClient,
        clients: &Clients,
    ) -> anyhow::Result<()> {
        let cache = Arc::new(AuthCache::new(
            config.auth_cache_ttl(),
            config.auth_cache_capacity,
        ));
        let identity = Arc::new(RemoteIdentity::new(remote.clone(), cache));
        clients.provide::<dyn IdentityApi>(identity.clone());
        clients.provide::<dyn Authenticator>(identity);
        Ok(())
    }
}

/// Purges expired sessions every hour until shutdown.
async fn purge_sessions(identity: Arc<Identity>, shutdown: Shutdown) {
    loop {
        match identity.purge_expired_sessions().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired sessions purged"),
            Err(e) => tracing::warn!(error = %e, "session purge failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown.wait() => return,
        }
    }
}
