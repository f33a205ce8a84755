//! Orders: checkout and the checkout saga, order history, cancellation, shipping and
//! refunds.
//!
//! * [`OrdersService`] — the [`Service`] the binary lists: migrations, the `[orders]`
//!   section ([`OrdersConfig`]), `POST /api/v1/checkout` and `/api/v1/orders` (with live
//!   status over SSE), the order pages, consumer `orders.saga`, and the worker that puts
//!   a failed order's lines back in its buyer's cart;
//! * [`store::Orders`] — the rules over the tables: `place` (idempotent per key), `get`,
//!   `list`, `cancel`, `ship`, `deliver`, `refund`, and the saga's steps;
//! * [`saga`] — consumer `orders.saga`: inventory's and the wallet's answers, and the
//!   checkout's durable timer;
//! * [`domain`] — the rules free of HTTP and SQL.
//!
//! It uses the catalog (prices at checkout), the cart (what is bought) and, through events
//! only, inventory and the wallet. `rendermart-orders-api` holds the events it publishes.

pub mod api;
mod config;
pub mod domain;
pub mod pages;
pub mod saga;
pub mod store;

use std::{sync::Arc, time::Duration};

pub use config::OrdersConfig;
use rendermart_cart_api::CartApi;
use rendermart_catalog_api::CatalogApi;
use rendermart_platform::{
    consumer::Consumer,
    live::{LiveStreams, DEFAULT_MAX_STREAMS},
    service::{Context, Service, Started, Worker},
    shutdown::Shutdown,
};
use store::Orders;
use utoipa::OpenApi;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How often the worker looks for orders that owe their buyer's cart something.
const CART_SETTLE_EVERY: Duration = Duration::from_millis(500);

/// The orders service, as the binary starts it.
pub struct OrdersService;

impl Service for OrdersService {
    const NAME: &'static str = rendermart_orders_api::SERVICE;
    const USES: &'static [&'static str] = &["catalog", "cart"];
    type Config = OrdersConfig;

    fn migrations() -> Option<&'static sqlx::migrate::Migrator> {
        Some(&MIGRATOR)
    }

    async fn start(ctx: Context<OrdersConfig>) -> anyhow::Result<Started> {
        let db = ctx.db()?;
        let catalog = ctx.clients.require::<dyn CatalogApi>("catalog")?;
        let cart = ctx.clients.require::<dyn CartApi>("cart")?;
        let timeout = ctx.config.checkout_timeout_secs;
        let orders = Arc::new(Orders::new(db.clone(), ctx.config.clone(), catalog, cart)?);
        let streams = LiveStreams::new(DEFAULT_MAX_STREAMS, ctx.shutdown.clone());
        let settling = orders.clone();
        Ok(Started {
            routes: api::router(api::OrdersState {
                orders: orders.clone(),
                streams,
            })
            .merge(pages::router(orders.clone())),
            openapi: Some(api::OrdersApiDoc::openapi()),
            consumers: vec![Consumer::new(
                db,
                store::SAGA_CONSUMER,
                saga::Saga::new(orders, timeout),
            )?
            .with_concurrency(8)
            .into()],
            workers: vec![Worker::new("orders.settle_carts", move |stop| {
                settle_carts(settling.clone(), stop)
            })],
            ..Started::default()
        })
    }
}

/// Puts failed orders' lines back in their buyers' carts (and takes out lines a checkout
/// could not) until shutdown.
async fn settle_carts(orders: Arc<Orders>, stop: Shutdown) {
    while !stop.is_triggered() {
        match orders.settle_carts(100).await {
            Ok(n) if n >= 100 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "settling carts failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(CART_SETTLE_EVERY) => {}
            _ = stop.wait() => return,
        }
    }
}
