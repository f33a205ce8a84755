//! The orders service's contract with other services: what an order is called and the
//! facts of its checkout saga that other services react to.
//!
//! Every event here belongs to the aggregate
//! `order:<id>` ([`ORDER_AGGREGATE`]), so a consumer applies one order's events in order:
//! [`OrderPlaced`] → [`PaymentRequested`] → [`OrderConfirmed`] | [`OrderCancelled`], then
//! [`OrderShipped`] and [`OrderRefunded`].

use rendermart_platform::events::Event;
use rendermart_studio_api::GenerationId;
use rendermart_types::{Money, Sku, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The service's name.
pub const SERVICE: &str = "orders";

/// The aggregate kind of an order's events: `order:<id>`.
pub const ORDER_AGGREGATE: &str = "order";

rendermart_types::entity_id!(
    /// A store order (UUID v7).
    OrderId
);

/// One line of an order: so many of one SKU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: Sku,
    pub quantity: u32,
}

/// A buyer placed an order (status Pending): the saga starts, inventory reserves its lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub buyer: UserId,
    pub lines: Vec<OrderLine>,
    #[serde(with = "time::serde::rfc3339")]
    pub placed_at: OffsetDateTime,
}

impl Event for OrderPlaced {
    const TYPE: &'static str = "orders.OrderPlaced";
    const VERSION: u32 = 1;
}

/// The order is paid and final: inventory commits its reservation, carts clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: OrderId,
}

impl Event for OrderConfirmed {
    const TYPE: &'static str = "orders.OrderConfirmed";
    const VERSION: u32 = 1;
}

/// The order ended without a sale (stock short, payment declined, the buyer cancelled, a
/// step timed out): inventory releases what it held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: OrderId,
    /// Why, in a sentence the buyer can read.
    pub reason: String,
}

impl Event for OrderCancelled {
    const TYPE: &'static str = "orders.OrderCancelled";
    const VERSION: u32 = 1;
}

/// The order's stock is reserved: the buyer's wallet pays `amount` (the wallet answers
/// `wallet.PaymentSucceeded` or `wallet.PaymentFailed`). The money waits in the store's
/// escrow until the order ships.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequested {
    pub order_id: OrderId,
    pub buyer: UserId,
    pub amount: Money,
    /// What the buyer's wallet history shows, e.g. "Order of 3 items".
    pub description: String,
}

impl Event for PaymentRequested {
    const TYPE: &'static str = "orders.PaymentRequested";
    const VERSION: u32 = 1;
}

/// One line of a shipped order, as the wallet pays it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaidLine {
    pub sku: Sku,
    pub seller: UserId,
    /// The image a print is made of: its creator earns the royalty.
    pub asset_id: Option<GenerationId>,
    /// What the buyer paid for the line (unit price × quantity).
    pub amount: Money,
}

/// The order left the warehouse: the wallet pays its sellers out of escrow (less the
/// platform's fee and, for prints, the image creator's royalty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub order_id: OrderId,
    pub lines: Vec<PaidLine>,
}

impl Event for OrderShipped {
    const TYPE: &'static str = "orders.OrderShipped";
    const VERSION: u32 = 1;
}

/// An administrator refunded a shipped order: the wallet gives the buyer back what they
/// paid (at most once per order). An order cancelled before shipping is refunded on
/// [`OrderCancelled`] instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRefunded {
    pub order_id: OrderId,
    pub buyer: UserId,
    pub amount: Money,
    pub reason: String,
}

impl Event for OrderRefunded {
    const TYPE: &'static str = "orders.OrderRefunded";
    const VERSION: u32 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_placed_reads_back_with_its_skus_parsed() {
        let json = serde_json::json!({
            "order_id": "0190f5b8-7c2a-7000-8000-000000000001",
            "buyer": "0190f5b8-7c2a-7000-8000-000000000002",
            "lines": [{"sku": "print-a3", "quantity": 2}],
            "placed_at": "2026-12-08T10:00:00Z",
        });
        let placed: OrderPlaced = serde_json::from_value(json).unwrap();
        assert_eq!(placed.lines[0].sku.as_str(), "PRINT-A3");
        let bad = serde_json::json!({"sku": "a b", "quantity": 1});
        assert!(serde_json::from_value::<OrderLine>(bad).is_err());
    }
}
