//! Identity: who people are and how they prove it.
//!
//! Owns users (argon2id password hashes, roles), browser sessions, API tokens and their
//! tables; publishes [`UserRegistered`]. Its public face:
//!
//! * [`Identity`] — the service; it is also the local [`IdentityApi`] client and the
//!   platform [`Authenticator`](rendermart_platform::auth::Authenticator) the edge uses;
//! * [`api::router`] and [`api::IdentityApiDoc`] — the `/api/v1` routes and their OpenAPI;
//! * [`MIGRATOR`] — its schema; [`IdentityConfig`] — its settings;
//! * [`worker`] — its background work (expired-session purge).

pub mod api;
mod client;
mod config;
pub mod domain;
mod events;
mod secrets;
mod service;
mod store;

use std::{sync::Arc, time::Duration};

pub use client::{
    ClientMeta, IdentityApi, IdentityError, NewSession, NewToken, SignUp, TokenInfo, User,
};
pub use config::IdentityConfig;
pub use events::UserRegistered;
use rendermart_platform::shutdown::Shutdown;
pub use service::Identity;

/// The service's schema name and SQLite file name.
pub const SERVICE: &str = "identity";

/// Identity's migrations (the platform's outbox/inbox tables are added by `Db::migrate`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Purges expired sessions every hour until shutdown.
pub async fn worker(identity: Arc<Identity>, shutdown: Shutdown) {
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
