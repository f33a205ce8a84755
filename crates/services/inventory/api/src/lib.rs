//! The inventory service's contract with other services: its events.
//!
//! Two kinds, two aggregates:
//!
//! * the answers to an order's saga, aggregate `reservation:<order id>`
//!   ([`RESERVATION_AGGREGATE`]): [`StockReserved`] or [`StockRejected`] after
//!   `orders.OrderPlaced`; then [`StockCommitted`] after `orders.OrderConfirmed`, or
//!   [`StockReleased`] after `orders.OrderCancelled` or when the reservation expired;
//! * facts about one SKU's availability, aggregate `sku:<sku>` ([`SKU_AGGREGATE`]):
//!   [`StockLow`], [`StockOut`] and [`StockAvailable`], each published once per crossing
//!   (catalog search keeps its "in stock" flag from them).

use rendermart_orders_api::{OrderId, OrderLine};
use rendermart_platform::events::Event;
use rendermart_types::Sku;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The service's name.
pub const SERVICE: &str = "inventory";

/// The aggregate kind of the answers about one order's reservation: `reservation:<order>`.
pub const RESERVATION_AGGREGATE: &str = "reservation";

/// The aggregate kind of one SKU's availability facts: `sku:<sku>`.
pub const SKU_AGGREGATE: &str = "sku";

/// Every line of the order is reserved (all or nothing) until the reservation expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: OrderId,
    /// The reserved lines, one per SKU (an order naming a SKU twice is summed).
    pub lines: Vec<OrderLine>,
    /// When the reservation is released unless the order is confirmed first.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl Event for StockReserved {
    const TYPE: &'static str = "inventory.StockReserved";
    const VERSION: u32 = 1;
}

/// A line the stock could not cover when the order was placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortLine {
    pub sku: Sku,
    pub requested: u32,
    /// Available at the time; 0 for a SKU inventory does not stock.
    pub available: i64,
}

/// Nothing of the order is reserved: the stock did not cover some line (or the order was
/// malformed). The saga cancels the order with `reason`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRejected {
    pub order_id: OrderId,
    /// A sentence the buyer can read, e.g. "out of stock: PRINT-A3 (2 asked, 1 left)".
    pub reason: String,
    /// The lines that were short (empty when the order itself was malformed).
    pub short: Vec<ShortLine>,
}

impl Event for StockRejected {
    const TYPE: &'static str = "inventory.StockRejected";
    const VERSION: u32 = 1;
}

/// The confirmed order's reservation is taken out of stock for good (on hand drops).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockCommitted {
    pub order_id: OrderId,
    pub lines: Vec<OrderLine>,
}

impl Event for StockCommitted {
    const TYPE: &'static str = "inventory.StockCommitted";
    const VERSION: u32 = 1;
}

/// The reservation is given back to the stock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReleased {
    pub order_id: OrderId,
    /// `expired` (the saga must cancel the order) or `cancelled: <the order's reason>`.
    pub why: String,
    pub lines: Vec<OrderLine>,
}

impl Event for StockReleased {
    const TYPE: &'static str = "inventory.StockReleased";
    const VERSION: u32 = 1;
}

/// The SKU's available stock fell from above the low-stock threshold to at or below it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLow {
    pub sku: Sku,
    pub available: i64,
    pub threshold: i64,
}

impl Event for StockLow {
    const TYPE: &'static str = "inventory.StockLow";
    const VERSION: u32 = 1;
}

/// The SKU's available stock fell to zero: nothing more can be ordered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockOut {
    pub sku: Sku,
}

impl Event for StockOut {
    const TYPE: &'static str = "inventory.StockOut";
    const VERSION: u32 = 1;
}

/// The SKU's available stock rose from zero (or it was stocked for the first time): it can
/// be ordered again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockAvailable {
    pub sku: Sku,
    pub available: i64,
}

impl Event for StockAvailable {
    const TYPE: &'static str = "inventory.StockAvailable";
    const VERSION: u32 = 1;
}

/// One SKU's stock, as `GET /api/v1/inventory/{sku}` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub sku: Sku,
    pub on_hand: i64,
    pub reserved: i64,
    /// What can still be ordered: `on_hand - reserved`, never below zero.
    pub available: i64,
}

/// Inventory could not answer: the caller should answer 503.
#[derive(Debug, thiserror::Error)]
#[error("inventory is unavailable: {0}")]
pub struct InventoryUnavailable(pub String);

/// How other services (cart, orders, pages) read stock: the service itself in process.
#[async_trait::async_trait]
pub trait InventoryApi: Send + Sync + 'static {
    /// The stock of each of `skus` that inventory stocks, in no particular order; a SKU it
    /// has never stocked is absent (nothing of it can be ordered).
    async fn levels(&self, skus: &[Sku]) -> Result<Vec<StockLevel>, InventoryUnavailable>;

    /// Like [`levels`](Self::levels), for a page that shows availability: a level may be
    /// up to half a second old, but a change committed through the same service instance
    /// is seen by the next read. Never for a decision (reserving, pricing a cart).
    async fn levels_to_show(&self, skus: &[Sku]) -> Result<Vec<StockLevel>, InventoryUnavailable> {
        self.levels(skus).await
    }
}
