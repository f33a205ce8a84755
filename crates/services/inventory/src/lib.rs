//! Inventory: how many of each SKU the store has, and what orders in checkout hold.
//!
//! Stock per SKU (`on_hand`, `reserved`, `available = on_hand - reserved`, never below
//! zero under any concurrency), reservations of an order's lines (all or nothing, with an
//! expiry), admins' adjustments with a reason (the audit trail). Its public face:
//!
//! * [`InventoryService`] — the [`Service`] the binary lists: migrations, the `[inventory]`
//!   section ([`InventoryConfig`]), routes under `/api/v1/inventory`, OpenAPI, consumer
//!   `inventory.orders`, and the worker that releases expired reservations;
//! * [`stock::Inventory`] — the rules over the tables: `reserve`, `commit`, `release`,
//!   `release_expired`, `adjust`, `stock`, `adjustments`; callable directly (tests, and the
//!   orders and cart services when they run in this process);
//! * [`orders_in`] — consumer `inventory.orders`, a thin wrapper around `Inventory` for
//!   `orders.OrderPlaced`, `OrderConfirmed` and `OrderCancelled`;
//! * [`domain`] — the rules free of HTTP and SQL.
//!
//! `rendermart-inventory-api` holds the events it publishes.

pub mod api;
mod config;
pub mod domain;
pub mod orders_in;
pub mod stock;

use std::{sync::Arc, time::Duration};

pub use config::InventoryConfig;
use rendermart_platform::{
    consumer::Consumer,
    service::{Context, Service, Started, Worker},
    shutdown::Shutdown,
};
use stock::Inventory;
use utoipa::OpenApi;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How often the worker looks for expired reservations.
const EXPIRY_CHECK_EVERY: Duration = Duration::from_millis(500);

/// The inventory service, as the binary starts it.
pub struct InventoryService;

impl Service for InventoryService {
    const NAME: &'static str = rendermart_inventory_api::SERVICE;
    type Config = InventoryConfig;

    fn migrations() -> Option<&'static sqlx::migrate::Migrator> {
        Some(&MIGRATOR)
    }

    async fn start(ctx: Context<InventoryConfig>) -> anyhow::Result<Started> {
        let db = ctx.db()?;
        let inventory = Arc::new(Inventory::new(db.clone(), ctx.config.clone())?);
        let expiring = inventory.clone();
        ctx.clients
            .provide::<dyn rendermart_inventory_api::InventoryApi>(inventory.clone());
        Ok(Started {
            routes: api::router(inventory.clone()),
            openapi: Some(api::InventoryApiDoc::openapi()),
            consumers: vec![Consumer::new(
                db,
                "inventory.orders",
                orders_in::OrdersIn::new(inventory),
            )?
            .into()],
            workers: vec![Worker::new("inventory.expire_reservations", move |stop| {
                expire_reservations(expiring.clone(), stop)
            })],
            ..Started::default()
        })
    }
}

/// Releases expired reservations until shutdown. Safe with several replicas: each release
/// is a conditional `UPDATE` only one of them wins.
pub async fn expire_reservations(inventory: Arc<Inventory>, stop: Shutdown) {
    while !stop.is_triggered() {
        match inventory.release_expired(100).await {
            // A full batch: there may be more due now.
            Ok(100) => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "releasing expired reservations failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EXPIRY_CHECK_EVERY) => {}
            _ = stop.wait() => return,
        }
    }
}
