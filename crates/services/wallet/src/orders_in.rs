//! A store order's money, the wallet's side of the checkout saga (consumer
//! `wallet.orders`, all of one order's events in order, aggregate `order:<id>`):
//!
//! * `orders.PaymentRequested` — the amount moves from the buyer's available money to the
//!   store's escrow (`platform:store_escrow`), or nothing moves; the answer is
//!   `wallet.PaymentSucceeded` or `wallet.PaymentFailed` ("insufficient credits: …");
//! * `orders.OrderCancelled` — a paid order's money goes back from escrow to the buyer;
//! * `orders.OrderShipped` — escrow pays each line's seller, less the platform's fee and,
//!   for a print of someone else's image, the creator's royalty;
//! * `orders.OrderRefunded` — the buyer gets the amount back: from escrow if the order was
//!   never paid out, else from `platform:store_refunds` (the platform bears a refund after
//!   shipping; sellers are not charged back).
//!
//! Every movement has a unique `reference` (`order:<id>`, `order-refund:<id>`,
//! `order-payout:<id>`), so a redelivered or repeated event never moves money twice; and
//! because one order's events arrive in order, a cancellation that follows a payment
//! always finds it.

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use rendermart_orders_api::{
    OrderCancelled, OrderId, OrderRefunded, OrderShipped, PaymentRequested,
};
use rendermart_platform::{
    bus::HandlerError,
    consumer::{EventHandler, HandlerContext},
    events::{DecodeError, Envelope, Event, Incoming},
};
use rendermart_types::{Money, UserId};
use rendermart_wallet_api::{PaymentFailed, PaymentSucceeded, PAYMENT_AGGREGATE};
use sqlx::AnyConnection;

use crate::ledger::{
    user_account, HoldOutcome, Ledger, WalletError, FEES, STORE_ESCROW, STORE_REFUNDS,
};

/// The events of an order the wallet applies.
pub enum OrderEvent {
    PaymentRequested(PaymentRequested),
    Cancelled(OrderCancelled),
    Shipped(OrderShipped),
    Refunded(OrderRefunded),
}

impl Incoming for OrderEvent {
    fn event_types() -> Vec<String> {
        vec![
            PaymentRequested::TYPE.into(),
            OrderCancelled::TYPE.into(),
            OrderShipped::TYPE.into(),
            OrderRefunded::TYPE.into(),
        ]
    }

    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        match envelope.event_type.as_str() {
            PaymentRequested::TYPE => envelope.decode().map(Self::PaymentRequested),
            OrderCancelled::TYPE => envelope.decode().map(Self::Cancelled),
            OrderShipped::TYPE => envelope.decode().map(Self::Shipped),
            OrderRefunded::TYPE => envelope.decode().map(Self::Refunded),
            _ => Err(DecodeError::unexpected("an order event", envelope)),
        }
    }
}

/// The payment's reference in the ledger.
pub fn payment_reference(order: OrderId) -> String {
    format!("order:{order}")
}

fn refund_reference(order: OrderId) -> String {
    format!("order-refund:{order}")
}

fn payout_reference(order: OrderId) -> String {
    format!("order-payout:{order}")
}

pub struct OrdersIn {
    ledger: Arc<Ledger>,
}

impl OrdersIn {
    pub fn new(ledger: Arc<Ledger>) -> Self {
        Self { ledger }
    }
}

fn handler_error(e: WalletError) -> HandlerError {
    match e {
        WalletError::Unavailable(why) => HandlerError::transient(anyhow::anyhow!(why)),
        other => HandlerError::permanent(other),
    }
}

fn internal(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::permanent(anyhow::anyhow!("{e}"))
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
            OrderEvent::PaymentRequested(ask) => {
                let answer = self.pay(cx.conn(), &ask).await?;
                if let Some(answer) = answer {
                    cx.publish(&answer.with_aggregate(PAYMENT_AGGREGATE, ask.order_id))
                        .await?;
                }
            }
            OrderEvent::Cancelled(cancelled) => {
                let why = format!("Refund: order cancelled ({})", short(&cancelled.reason));
                self.refund(cx.conn(), cancelled.order_id, &why, false)
                    .await?;
            }
            OrderEvent::Refunded(refunded) => {
                let why = format!("Refund of your order ({})", short(&refunded.reason));
                self.refund(cx.conn(), refunded.order_id, &why, true)
                    .await?;
            }
            OrderEvent::Shipped(shipped) => self.pay_out(cx.conn(), &shipped).await?,
        }
        Ok(())
    }
}

impl OrdersIn {
    /// Moves the order's amount from the buyer to escrow; the answer to publish (`None`
    /// when the payment was decided before and answered then).
    async fn pay(
        &self,
        conn: &mut AnyConnection,
        ask: &PaymentRequested,
    ) -> Result<Option<Envelope>, HandlerError> {
        let currency = self.ledger.currency();
        let amount = ask.amount.amount();
        if ask.amount.currency() != currency || amount <= 0 {
            metrics::counter!("wallet_order_payments_total", "outcome" => "refused").increment(1);
            return Ok(Some(Envelope::new(&PaymentFailed {
                order_id: ask.order_id,
                buyer: ask.buyer,
                reason: format!(
                    "payment refused: the order's amount {} cannot be paid from a wallet in {currency}",
                    ask.amount
                ),
            })));
        }
        let reference = payment_reference(ask.order_id);
        let outcome = self
            .ledger
            .hold(
                conn,
                ask.buyer,
                &reference,
                "order",
                amount,
                &ask.description,
            )
            .await
            .map_err(handler_error)?;
        let answer = match outcome {
            HoldOutcome::Decided => return Ok(None),
            HoldOutcome::Held => {
                self.ledger
                    .capture(conn, &reference, &ask.description, |paid| {
                        vec![(STORE_ESCROW.to_owned(), paid)]
                    })
                    .await
                    .map_err(handler_error)?;
                Envelope::new(&PaymentSucceeded {
                    order_id: ask.order_id,
                    buyer: ask.buyer,
                    amount: ask.amount,
                })
            }
            HoldOutcome::Refused { available } => Envelope::new(&PaymentFailed {
                order_id: ask.order_id,
                buyer: ask.buyer,
                reason: format!(
                    "insufficient credits: this order costs {} and you have {} available",
                    ask.amount,
                    Money::new(available.max(0), currency)
                ),
            }),
        };
        let outcome = if answer.is::<PaymentSucceeded>() {
            "paid"
        } else {
            "refused"
        };
        metrics::counter!("wallet_order_payments_total", "outcome" => outcome).increment(1);
        Ok(Some(answer))
    }

    /// The buyer and amount of the order's settled payment, if it was paid.
    async fn payment(
        &self,
        conn: &mut AnyConnection,
        order: OrderId,
    ) -> Result<Option<(UserId, i64)>, HandlerError> {
        let paid: Option<(UserId, i64)> = sqlx::query_as(
            "SELECT user_id, amount FROM wallet_transactions \
             WHERE reference = $1 AND status = 'settled'",
        )
        .bind(payment_reference(order))
        .fetch_optional(&mut *conn)
        .await?;
        Ok(paid.map(|(buyer, amount)| (buyer, -amount)))
    }

    async fn exists(conn: &mut AnyConnection, reference: &str) -> Result<bool, HandlerError> {
        let found: Option<(String,)> =
            sqlx::query_as("SELECT id FROM wallet_transactions WHERE reference = $1")
                .bind(reference)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(found.is_some())
    }

    /// Gives a paid order's money back to its buyer, once. Before the payout it comes from
    /// escrow; after it (only an administrator's refund, `after_payout_allowed`), from the
    /// platform's refunds account.
    async fn refund(
        &self,
        conn: &mut AnyConnection,
        order: OrderId,
        description: &str,
        after_payout_allowed: bool,
    ) -> Result<(), HandlerError> {
        let Some((buyer, amount)) = self.payment(conn, order).await? else {
            return Ok(()); // never paid: nothing to give back
        };
        let reference = refund_reference(order);
        if Self::exists(conn, &reference).await? {
            return Ok(());
        }
        let paid_out = Self::exists(conn, &payout_reference(order)).await?;
        if paid_out && !after_payout_allowed {
            tracing::warn!(%order, "an order cancelled after its payout is not refunded");
            return Ok(());
        }
        let source = if paid_out {
            STORE_REFUNDS
        } else {
            STORE_ESCROW
        };
        let t = self
            .ledger
            .insert_transaction(conn, buyer, "refund", "settled", amount, description, None)
            .await?;
        sqlx::query("UPDATE wallet_transactions SET reference = $1 WHERE id = $2")
            .bind(&reference)
            .bind(t.id)
            .execute(&mut *conn)
            .await?;
        let account = user_account(buyer);
        self.ledger
            .post(conn, t.id, &[(source, -amount), (account.as_str(), amount)])
            .await
            .map_err(handler_error)?;
        metrics::counter!("wallet_order_refunds_total").increment(1);
        Ok(())
    }

    /// Pays a shipped order's sellers (and creators' royalties, and the platform's fee)
    /// out of escrow, once.
    async fn pay_out(
        &self,
        conn: &mut AnyConnection,
        shipped: &OrderShipped,
    ) -> Result<(), HandlerError> {
        let order = shipped.order_id;
        let Some((_, paid)) = self.payment(conn, order).await? else {
            tracing::warn!(%order, "a shipped order was never paid: nothing to pay out");
            return Ok(());
        };
        let reference = payout_reference(order);
        if Self::exists(conn, &reference).await?
            || Self::exists(conn, &refund_reference(order)).await?
        {
            return Ok(());
        }
        let config = self.ledger.config();
        // What each person earns, and the platform's fees.
        let mut earned: BTreeMap<(UserId, &'static str), i64> = BTreeMap::new();
        let mut fees = 0i64;
        let mut total = 0i64;
        for line in &shipped.lines {
            let amount = line.amount;
            let fee = amount.share_bps(config.fee_bps).map_err(internal)?.amount();
            let creator: Option<UserId> = match line.asset_id {
                Some(asset) => {
                    sqlx::query_scalar("SELECT creator_id FROM assets WHERE id = $1")
                        .bind(asset)
                        .fetch_optional(&mut *conn)
                        .await?
                }
                None => None,
            };
            let royalty = match creator {
                Some(creator) if creator != line.seller => {
                    let royalty = amount
                        .share_bps(config.royalty_bps)
                        .map_err(internal)?
                        .amount();
                    *earned.entry((creator, "royalty")).or_default() += royalty;
                    royalty
                }
                _ => 0,
            };
            *earned.entry((line.seller, "sale")).or_default() += amount.amount() - fee - royalty;
            fees += fee;
            total += amount.amount();
        }
        if total != paid {
            // The order and the payment disagree: move nothing, tell the operator.
            return Err(internal(format!(
                "order {order} shipped lines total {total} but {paid} was paid"
            )));
        }
        let mut first = true;
        for ((user, kind), amount) in earned {
            if amount <= 0 {
                continue;
            }
            let description = match kind {
                "royalty" => format!("Royalty on prints sold in order {order}"),
                _ => format!("Store sale: order {order}"),
            };
            let account = user_account(user);
            self.ledger
                .ensure_account(conn, &account, Some(user))
                .await?;
            let t = self
                .ledger
                .insert_transaction(conn, user, kind, "settled", amount, &description, None)
                .await?;
            let mut postings = vec![(STORE_ESCROW, -amount), (account.as_str(), amount)];
            if first {
                sqlx::query("UPDATE wallet_transactions SET reference = $1 WHERE id = $2")
                    .bind(&reference)
                    .bind(t.id)
                    .execute(&mut *conn)
                    .await?;
                if fees > 0 {
                    postings.push((STORE_ESCROW, -fees));
                    postings.push((FEES, fees));
                }
                first = false;
            }
            self.ledger
                .post(conn, t.id, &postings)
                .await
                .map_err(handler_error)?;
        }
        metrics::counter!("wallet_order_payouts_total").increment(1);
        Ok(())
    }
}

/// The first 120 characters of a reason, with an ellipsis when cut.
fn short(reason: &str) -> String {
    let mut s: String = reason.chars().take(120).collect();
    if s.len() < reason.len() {
        s.push('…');
    }
    s
}
