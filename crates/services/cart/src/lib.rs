//! Cart: what a shopper means to buy, before checkout.
//!
//! Guest carts (named by the `rm_cart` cookie) and signed-in users' carts; a guest cart is
//! merged into the user's when a request carries both. A line is a SKU and a quantity; it
//! is priced from the catalog and inventory when the cart is read, never from the client.
//! Carts expire after an idle time. Its public face:
//!
//! * [`CartService`] — the [`Service`] the binary lists: the `[cart]` section
//!   ([`CartConfig`]), routes under `/api/v1/cart` and the `/cart` pages, OpenAPI, the
//!   in-process [`CartApi`](rendermart_cart_api::CartApi) (the orders service reads carts
//!   through it), and, on the database, the worker deleting idle carts;
//! * [`cart::Carts`] — the rules over the store: `add`, `set`, `remove`, `clear`, `adopt`
//!   (the log-in merge), `view` (priced now);
//! * [`store`] — one [`store::CartStore`] trait with two adapters: Redis (a hash per cart,
//!   every change one Lua script, TTL refreshed on each write) when `--redis-url` is set,
//!   the service's database otherwise (conditional upserts, `touched_at`, a worker);
//! * [`domain`] — quantities, guest ids, whose cart: the rules free of HTTP and storage.

pub mod api;
pub mod cart;
mod config;
pub mod domain;
mod pages;
pub mod shopper;
pub mod store;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
pub use config::CartConfig;
use rendermart_catalog_api::CatalogApi;
use rendermart_inventory_api::InventoryApi;
use rendermart_platform::{
    service::{Context, Service, Started, Worker},
    shutdown::Shutdown,
};
use store::{CartStore, DbCarts, RedisCarts};
use utoipa::OpenApi;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How often the database adapter's worker looks for idle carts.
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(60);

/// The cart service, as the binary starts it.
pub struct CartService;

impl Service for CartService {
    const NAME: &'static str = rendermart_cart_api::SERVICE;
    const USES: &'static [&'static str] = &[
        rendermart_catalog_api::SERVICE,
        rendermart_inventory_api::SERVICE,
    ];
    type Config = CartConfig;

    fn migrations() -> Option<&'static sqlx::migrate::Migrator> {
        Some(&MIGRATOR)
    }

    async fn start(ctx: Context<CartConfig>) -> anyhow::Result<Started> {
        ctx.config.check()?;
        let catalog = ctx
            .clients
            .require::<dyn CatalogApi>(rendermart_catalog_api::SERVICE)?;
        let inventory = ctx
            .clients
            .require::<dyn InventoryApi>(rendermart_inventory_api::SERVICE)?;
        let ttl = ctx.config.idle_ttl_secs;
        let mut workers = Vec::new();
        let store: Arc<dyn CartStore> = match ctx.redis.clone() {
            Some(conn) => Arc::new(
                RedisCarts::new(conn, &ctx.shared.namespace, ttl)
                    .await
                    .context("loading the cart's scripts into Redis")?,
            ),
            None => {
                let db = Arc::new(DbCarts::new(ctx.db()?, ttl));
                let expiring = db.clone();
                workers.push(Worker::new("cart.expire_idle", move |stop| {
                    expire_idle(expiring.clone(), stop)
                }));
                db
            }
        };
        tracing::info!(store = store.kind(), "carts");
        let carts = Arc::new(
            cart::Carts::new(store, catalog, inventory, ctx.config.clone())?
                .with_secure_cookies(ctx.shared.cookie_secure),
        );
        ctx.clients
            .provide::<dyn rendermart_cart_api::CartApi>(carts.clone());
        let form_key =
            rendermart_web::csrf::FormKey::for_process(ctx.shared.service_secret.as_ref());
        Ok(Started {
            routes: api::router(carts.clone()).merge(pages::router(carts, form_key)),
            openapi: Some(api::CartApiDoc::openapi()),
            workers,
            ..Started::default()
        })
    }
}

/// Deletes carts idle past their time until shutdown (database adapter only). Safe with
/// several replicas: each delete is conditional on the cart still being idle.
async fn expire_idle(store: Arc<DbCarts>, stop: Shutdown) {
    while !stop.is_triggered() {
        match store.expire_idle(500).await {
            Ok(n) => {
                metrics::counter!("cart_expired_total").increment(n);
                if n == 500 {
                    // A full batch: there may be more due now.
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "deleting idle carts failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EXPIRY_CHECK_EVERY) => {}
            _ = stop.wait() => return,
        }
    }
}
