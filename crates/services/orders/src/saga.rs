//! Consumer `orders.saga`: the checkout saga's answers, applied to the order's row by
//! [`Orders`]' steps (each a conditional update, so a redelivery or a late answer changes
//! nothing):
//!
//! * `inventory.StockReserved` — ask the wallet for the payment;
//! * `inventory.StockRejected` — cancel with inventory's reason ("out of stock: …");
//! * `wallet.PaymentSucceeded` — confirm;
//! * `wallet.PaymentFailed` — cancel with the wallet's reason ("insufficient credits: …");
//! * `inventory.StockReleased` with why `expired` — cancel (the reservation ran out);
//! * the command `orders.CheckoutTimedOut` (the order's durable timer) — cancel a checkout
//!   still pending.

use std::sync::Arc;

use async_trait::async_trait;
use rendermart_inventory_api::{StockRejected, StockReleased, StockReserved};
use rendermart_platform::{
    bus::HandlerError,
    consumer::{EventHandler, HandlerContext},
    events::{DecodeError, Envelope, Event, Incoming},
};
use rendermart_wallet_api::{PaymentFailed, PaymentSucceeded};

use crate::store::{CheckoutTimedOut, Orders, OrdersError};

/// What the saga reacts to.
pub enum SagaMessage {
    Reserved(StockReserved),
    Rejected(StockRejected),
    Released(StockReleased),
    Paid(PaymentSucceeded),
    PaymentFailed(PaymentFailed),
    TimedOut(CheckoutTimedOut),
}

impl Incoming for SagaMessage {
    fn event_types() -> Vec<String> {
        vec![
            StockReserved::TYPE.into(),
            StockRejected::TYPE.into(),
            StockReleased::TYPE.into(),
            PaymentSucceeded::TYPE.into(),
            PaymentFailed::TYPE.into(),
            CheckoutTimedOut::TYPE.into(),
        ]
    }

    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        match envelope.event_type.as_str() {
            StockReserved::TYPE => envelope.decode().map(Self::Reserved),
            StockRejected::TYPE => envelope.decode().map(Self::Rejected),
            StockReleased::TYPE => envelope.decode().map(Self::Released),
            PaymentSucceeded::TYPE => envelope.decode().map(Self::Paid),
            PaymentFailed::TYPE => envelope.decode().map(Self::PaymentFailed),
            CheckoutTimedOut::TYPE => envelope.decode().map(Self::TimedOut),
            _ => Err(DecodeError::unexpected("a checkout saga message", envelope)),
        }
    }
}

pub struct Saga {
    orders: Arc<Orders>,
    timeout_secs: u64,
}

impl Saga {
    pub fn new(orders: Arc<Orders>, timeout_secs: u64) -> Self {
        Self {
            orders,
            timeout_secs,
        }
    }
}

fn handler_error(e: OrdersError) -> HandlerError {
    match e {
        OrdersError::Unavailable(why) => HandlerError::transient(anyhow::anyhow!(why)),
        other => HandlerError::permanent(other),
    }
}

#[async_trait]
impl EventHandler for Saga {
    type Message = SagaMessage;

    async fn handle(
        &self,
        cx: &mut HandlerContext<'_>,
        message: SagaMessage,
    ) -> Result<(), HandlerError> {
        let orders = &self.orders;
        let tx = cx.tx();
        match message {
            SagaMessage::Reserved(reserved) => orders.on_reserved(tx, reserved.order_id).await,
            SagaMessage::Rejected(rejected) => {
                orders
                    .on_failed(tx, rejected.order_id, &rejected.reason)
                    .await
            }
            SagaMessage::Released(released) if released.why == "expired" => {
                let reason = "the reserved stock was released before the payment arrived";
                orders.on_failed(tx, released.order_id, reason).await
            }
            // Released because the order was cancelled: the saga already knows.
            SagaMessage::Released(_) => Ok(()),
            SagaMessage::Paid(paid) => orders.on_paid(tx, paid.order_id).await,
            SagaMessage::PaymentFailed(failed) => {
                orders.on_failed(tx, failed.order_id, &failed.reason).await
            }
            SagaMessage::TimedOut(timed_out) => {
                let reason = format!(
                    "checkout timed out: it did not complete within {} seconds",
                    self.timeout_secs
                );
                orders.on_failed(tx, timed_out.order_id, &reason).await
            }
        }
        .map_err(handler_error)
    }
}
