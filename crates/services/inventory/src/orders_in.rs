//! Consumer `inventory.orders`: the inventory's side of the checkout saga, a thin wrapper
//! around [`Inventory`] (all of one order's events in order, aggregate `order:<id>`):
//!
//! * `orders.OrderPlaced` — reserve every line or none; answer `StockReserved` or
//!   `StockRejected`;
//! * `orders.OrderConfirmed` — commit the reservation (`StockCommitted`);
//! * `orders.OrderCancelled` — release it (`StockReleased`, why `cancelled: <reason>`).
//!
//! The inbox makes a redelivery change nothing; the reservation's own status makes a
//! repeated order harmless too (a second reserve, commit or release finds it decided).

use std::sync::Arc;

use async_trait::async_trait;
use rendermart_orders_api::{OrderCancelled, OrderConfirmed, OrderPlaced};
use rendermart_platform::{
    bus::HandlerError,
    consumer::{EventHandler, HandlerContext},
    events::{DecodeError, Envelope, Event, Incoming},
};

use crate::stock::{Inventory, InventoryError, Settled};

/// The events of an order inventory applies.
pub enum OrderEvent {
    Placed(OrderPlaced),
    Confirmed(OrderConfirmed),
    Cancelled(OrderCancelled),
}

impl Incoming for OrderEvent {
    fn event_types() -> Vec<String> {
        vec![
            OrderPlaced::TYPE.into(),
            OrderConfirmed::TYPE.into(),
            OrderCancelled::TYPE.into(),
        ]
    }

    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        match envelope.event_type.as_str() {
            OrderPlaced::TYPE => envelope.decode().map(Self::Placed),
            OrderConfirmed::TYPE => envelope.decode().map(Self::Confirmed),
            OrderCancelled::TYPE => envelope.decode().map(Self::Cancelled),
            _ => Err(DecodeError::unexpected("an order event", envelope)),
        }
    }
}

pub struct OrdersIn {
    inventory: Arc<Inventory>,
}

impl OrdersIn {
    pub fn new(inventory: Arc<Inventory>) -> Self {
        Self { inventory }
    }
}

fn handler_error(e: InventoryError) -> HandlerError {
    match e {
        InventoryError::Unavailable(why) => HandlerError::transient(anyhow::anyhow!(why)),
        other => HandlerError::permanent(other),
    }
}

#[async_trait]
impl EventHandler for OrdersIn {
    type Message = OrderEvent;

    async fn handle(
        &self,
        cx: &mut HandlerContext<'_>,
        event: OrderEvent,
    ) -> Result<(), HandlerError> {
        match event {
            OrderEvent::Placed(placed) => {
                self.inventory
                    .reserve_in(cx.tx(), placed.order_id, &placed.lines)
                    .await
                    .map_err(handler_error)?;
            }
            OrderEvent::Confirmed(confirmed) => {
                let settled = self
                    .inventory
                    .commit_in(cx.tx(), confirmed.order_id)
                    .await
                    .map_err(handler_error)?;
                if let Settled::NotHeld(status) = settled {
                    // The saga confirmed an order whose stock is not held (it expired and
                    // was released first): nothing to take; the operator should know.
                    tracing::warn!(order = %confirmed.order_id, ?status,
                        "an order was confirmed but its reservation is not held");
                    metrics::counter!("inventory_confirmed_without_reservation_total").increment(1);
                }
            }
            OrderEvent::Cancelled(cancelled) => {
                self.inventory
                    .release_in(
                        cx.tx(),
                        cancelled.order_id,
                        &format!("cancelled: {}", short(&cancelled.reason)),
                    )
                    .await
                    .map_err(handler_error)?;
            }
        }
        Ok(())
    }

    fn committed(&self) {
        self.inventory.stock_changed();
    }
}

/// The first 200 characters of a reason, with an ellipsis when cut.
fn short(reason: &str) -> String {
    let mut s: String = reason.chars().take(200).collect();
    if s.len() < reason.len() {
        s.push('…');
    }
    s
}
