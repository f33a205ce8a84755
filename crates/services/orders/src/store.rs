//! Orders over their tables, and the checkout saga's steps. The one thing to know: **an
//! order's row is its saga's state, and every step is one conditional `UPDATE` from the
//! status (and stage) it expects**, written in one transaction with its history line and
//! the events or commands it sends (the outbox). A redelivered, late or racing event finds
//! the order moved on and changes nothing, so any step can be retried after a crash.
//!
//! The saga, per order (`pending` until it ends):
//!
//! ```text
//! checkout ── OrderPlaced ──▶ inventory ── StockReserved ──▶ PaymentRequested ──▶ wallet
//!                                       └─ StockRejected ──▶ cancelled ("out of stock: …")
//! wallet ── PaymentSucceeded ──▶ confirmed (OrderConfirmed: stock committed)
//!        └─ PaymentFailed ─────▶ cancelled ("insufficient credits: …"; OrderCancelled
//!                                 releases the stock)
//! timer checkout:<id> (checkout_timeout_secs) or the reservation expiring ──▶ cancelled,
//!                                 compensated by OrderCancelled (stock released, a
//!                                 payment already made refunded by the wallet)
//! ```

use std::{collections::HashMap, sync::Arc, time::Duration};

use rendermart_cart_api::{CartApi, CartLine};
use rendermart_catalog_api::{CatalogApi, SkuOffer};
use rendermart_orders_api::{
    OrderCancelled, OrderConfirmed, OrderId, OrderLine, OrderPlaced, OrderRefunded, OrderShipped,
    PaidLine, PaymentRequested, ORDER_AGGREGATE,
};
use rendermart_platform::{
    clock,
    db::{is_unique_violation, Db},
    events::{Envelope, Event},
    group::{Group, GroupWork},
    outbox, timers,
};
use rendermart_studio_api::GenerationId;
use rendermart_types::{Currency, Money, Sku, UserId};
use serde::{Deserialize, Serialize};
use sqlx::{Any, FromRow, Transaction};
use utoipa::ToSchema;

use crate::{
    config::OrdersConfig,
    domain::{IdempotencyKey, Invalid, ShippingAddress, Status},
};

/// The saga's own consumer: the timer's command goes to it.
pub const SAGA_CONSUMER: &str = "orders.saga";

/// What an order did to its buyer's cart: the `cart_state` column (decision 62).
mod cart_state {
    /// Placed; its lines are still in the cart.
    pub const DUE: i64 = 0;
    /// Taken out of the cart; not confirmed yet, so a cancel puts them back.
    pub const TAKEN: i64 = 1;
    /// Nothing more to do: bought and taken, put back, or cancelled before being taken.
    pub const SETTLED: i64 = 2;
    /// Confirmed while its lines were still in the cart: take them out.
    pub const BOUGHT: i64 = 3;
}

/// How long an order's lines may stay due before the worker takes them out itself: the
/// checkout that placed it takes them at once, unless it failed or its process died.
const TAKE_GRACE: Duration = Duration::from_secs(10);

/// The deadline of a pending checkout fired: cancel it if it is still pending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutTimedOut {
    pub order_id: OrderId,
}

impl Event for CheckoutTimedOut {
    const TYPE: &'static str = "orders.CheckoutTimedOut";
    const VERSION: u32 = 1;
}

#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("an Idempotency-Key header is required")]
    KeyRequired,
    #[error("this Idempotency-Key was used for a different checkout")]
    KeyReused,
    #[error("your cart is empty")]
    EmptyCart,
    #[error("{0}")]
    CartChanged(String),
    #[error("the order's total is more than the most one order may cost ({0})")]
    TooLarge(Money),
    #[error("you have {0} checkouts in progress; wait for them to finish")]
    TooManyPending(i64),
    #[error("no such order")]
    NotFound,
    #[error("{0}")]
    WrongStatus(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for OrdersError {
    fn from(e: sqlx::Error) -> Self {
        if rendermart_platform::db::is_transient(&e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Internal(e.into())
        }
    }
}

/// One line of an order as the API shows it: what was bought at what price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderLineView {
    #[schema(value_type = String)]
    pub sku: Sku,
    #[schema(value_type = String)]
    pub product_id: rendermart_catalog_api::ProductId,
    pub title: String,
    pub variant: String,
    #[schema(value_type = Object)]
    pub unit_price: Money,
    pub quantity: u32,
    #[schema(value_type = Object)]
    pub line_total: Money,
    #[serde(skip)]
    pub seller: UserId,
    #[serde(skip)]
    pub asset_id: Option<GenerationId>,
}

/// One step of an order's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub status: String,
    /// What happened, in a sentence the buyer can read.
    pub note: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: time::OffsetDateTime,
}

/// An order as its buyer (or an administrator) reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderView {
    #[schema(value_type = String)]
    pub id: OrderId,
    #[schema(value_type = String)]
    pub buyer: UserId,
    /// `pending`, `confirmed`, `cancelled`, `shipped`, `delivered` or `refunded`.
    pub status: String,
    /// Why it was cancelled or refunded.
    pub reason: Option<String>,
    #[schema(value_type = Object)]
    pub total: Money,
    pub item_count: i64,
    pub lines: Vec<OrderLineView>,
    pub shipping_address: ShippingAddress,
    /// Oldest first.
    pub history: Vec<HistoryEntry>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: time::OffsetDateTime,
}

impl OrderView {
    pub fn status(&self) -> Status {
        Status::parse(&self.status).unwrap_or(Status::Pending)
    }
}

/// One order in a list (no lines or history).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderSummary {
    #[schema(value_type = String)]
    pub id: OrderId,
    #[schema(value_type = String)]
    pub buyer: UserId,
    pub status: String,
    pub reason: Option<String>,
    #[schema(value_type = Object)]
    pub total: Money,
    pub item_count: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

#[derive(FromRow)]
struct OrderRow {
    id: OrderId,
    buyer_id: UserId,
    status: String,
    reason: Option<String>,
    currency: String,
    total: i64,
    item_count: i64,
    shipping: String,
    created_at: i64,
    updated_at: i64,
}

const ORDER_COLUMNS: &str = "id, buyer_id, status, reason, currency, total, item_count, \
     shipping, created_at, updated_at";

#[derive(FromRow)]
struct LineRow {
    sku: Sku,
    product_id: rendermart_catalog_api::ProductId,
    title: String,
    variant: String,
    seller_id: UserId,
    asset_id: Option<GenerationId>,
    unit_price: i64,
    quantity: i64,
}

/// What a checkout did: the order, and whether it was made by an earlier request with the
/// same key.
pub struct Placed {
    pub order: OrderView,
    pub replayed: bool,
}

pub struct Orders {
    db: Db,
    placing: Group<PlaceOrders>,
    taking: Group<RecordTaken>,
    config: OrdersConfig,
    catalog: Arc<dyn CatalogApi>,
    cart: Arc<dyn CartApi>,
}

fn currency(code: &str) -> Result<Currency, OrdersError> {
    Currency::parse(code).map_err(|e| OrdersError::Internal(anyhow::anyhow!("currency: {e}")))
}

/// The order's events all belong to `order:<id>`, so each consumer applies them in order.
fn for_order(event: &impl Event, order: OrderId) -> Envelope {
    Envelope::new(event).with_aggregate(ORDER_AGGREGATE, order)
}

fn timer_key(order: OrderId) -> String {
    format!("checkout:{order}")
}

impl Orders {
    pub fn new(
        db: Db,
        config: OrdersConfig,
        catalog: Arc<dyn CatalogApi>,
        cart: Arc<dyn CartApi>,
    ) -> anyhow::Result<Self> {
        config.check()?;
        let placing = PlaceOrders {
            timeout: Duration::from_secs(config.checkout_timeout_secs),
        };
        Ok(Self {
            placing: Group::new(db.clone(), placing),
            taking: Group::new(db.clone(), RecordTaken),
            db,
            config,
            catalog,
            cart,
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The buyer's cart as order lines priced by the catalog now, or why it cannot be
    /// bought. A price a client sent never gets here: only SKUs and quantities do.
    pub async fn priced_cart(
        &self,
        buyer: UserId,
    ) -> Result<(Vec<CartLine>, Vec<OrderLineView>), OrdersError> {
        let cart = self
            .cart
            .lines(buyer)
            .await
            .map_err(|e| OrdersError::Unavailable(e.to_string()))?;
        if cart.is_empty() {
            return Err(OrdersError::EmptyCart);
        }
        let skus: Vec<Sku> = cart.iter().map(|l| l.sku.clone()).collect();
        let offers: HashMap<Sku, SkuOffer> = self
            .catalog
            .offers(&skus)
            .await
            .map_err(|e| OrdersError::Unavailable(e.to_string()))?
            .into_iter()
            .map(|o| (o.sku.clone(), o))
            .collect();
        let mut lines = Vec::with_capacity(cart.len());
        let mut gone = Vec::new();
        for line in &cart {
            match offers.get(&line.sku) {
                Some(offer) if offer.on_sale => {
                    let line_total = offer
                        .price
                        .checked_mul(i64::from(line.quantity))
                        .map_err(|_| OrdersError::TooLarge(offer.price))?;
                    lines.push(OrderLineView {
                        sku: line.sku.clone(),
                        product_id: offer.product_id,
                        title: offer.title.clone(),
                        variant: offer.variant.clone(),
                        unit_price: offer.price,
                        quantity: line.quantity,
                        line_total,
                        seller: offer.seller_id,
                        asset_id: offer.asset_id,
                    });
                }
                _ => gone.push(line.sku.as_str().to_owned()),
            }
        }
        if !gone.is_empty() {
            return Err(OrdersError::CartChanged(format!(
                "no longer sold: {}; remove it from your cart and check out again",
                gone.join(", ")
            )));
        }
        Ok((cart, lines))
    }

    /// Places the buyer's cart as an order (status pending) and starts its saga, once per
    /// idempotency key: the same key and body give the same order; the same key with a
    /// different body is [`OrdersError::KeyReused`].
    pub async fn place(
        &self,
        buyer: UserId,
        key: &IdempotencyKey,
        address: &ShippingAddress,
    ) -> Result<Placed, OrdersError> {
        let request = serde_json::json!({ "shipping_address": address }).to_string();
        if let Some(found) = self.by_key(buyer, key, &request).await? {
            return Ok(found);
        }
        let pending: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM orders WHERE buyer_id = $1 AND status = 'pending'",
        )
        .bind(buyer)
        .fetch_one(self.db.pool())
        .await?;
        if pending >= self.config.max_pending_per_buyer {
            return Err(OrdersError::TooManyPending(pending));
        }
        let lines = match self.priced_cart(buyer).await {
            Ok((_, lines)) => lines,
            // A request with the same key may have placed the order and taken the cart
            // since this one looked (it commits the order before it takes the lines).
            Err(OrdersError::EmptyCart) => {
                return self
                    .by_key(buyer, key, &request)
                    .await?
                    .ok_or(OrdersError::EmptyCart)
            }
            Err(e) => return Err(e),
        };
        let currency = lines[0].unit_price.currency();
        let mut total = Money::zero(currency);
        for line in &lines {
            total = total
                .checked_add(line.line_total)
                .map_err(|_| OrdersError::CartChanged("the cart mixes currencies".into()))?;
        }
        let max = Money::new(self.config.max_total, currency);
        if total.amount() > self.config.max_total {
            return Err(OrdersError::TooLarge(max));
        }
        let item_count: i64 = lines.iter().map(|l| i64::from(l.quantity)).sum();
        let id = OrderId::new();
        let job = Placing {
            id,
            buyer,
            key: key.as_str().to_owned(),
            request: request.clone(),
            currency,
            total,
            item_count,
            shipping: serde_json::to_string(address).map_err(anyhow::Error::from)?,
            address: address.clone(),
            lines: lines.clone(),
        };
        let Some(order) = self.placing.run(job).await? else {
            // The same key raced this request and won: answer with its order.
            return self
                .by_key(buyer, key, &request)
                .await?
                .ok_or_else(|| OrdersError::Internal(anyhow::anyhow!("order vanished")));
        };
        self.db.outbox_committed();
        metrics::counter!("orders_placed_total").increment(1);
        // The ordered lines leave the cart now (they come back if the order fails). If the
        // cart cannot answer, the order stands and the worker takes them out later.
        let ordered: Vec<CartLine> = lines
            .iter()
            .map(|l| CartLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
            })
            .collect();
        if let Err(e) = self.take_from_cart(id, buyer, &ordered).await {
            tracing::warn!(order = %id, error = %e, "taking an order's lines out of the cart failed");
        }
        Ok(Placed {
            order,
            replayed: false,
        })
    }

    /// The order an earlier checkout with this key made, if any.
    async fn by_key(
        &self,
        buyer: UserId,
        key: &IdempotencyKey,
        request: &str,
    ) -> Result<Option<Placed>, OrdersError> {
        let found: Option<(OrderId, String)> = sqlx::query_as(
            "SELECT id, request FROM orders WHERE buyer_id = $1 AND idempotency_key = $2",
        )
        .bind(buyer)
        .bind(key.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        match found {
            None => Ok(None),
            Some((_, earlier)) if earlier != request => Err(OrdersError::KeyReused),
            Some((id, _)) => Ok(Some(Placed {
                order: self.get(id).await?,
                replayed: true,
            })),
        }
    }

    /// An order with its lines and history.
    pub async fn get(&self, id: OrderId) -> Result<OrderView, OrdersError> {
        let mut conn = self.db.pool().acquire().await?;
        read_order(&mut conn, id).await
    }

    /// A page of orders, newest first: one buyer's, or everyone's (`None`, administrators),
    /// optionally of one status, before the cursor `before`.
    pub async fn list(
        &self,
        buyer: Option<UserId>,
        status: Option<Status>,
        before: Option<OrderId>,
        limit: u32,
    ) -> Result<Vec<OrderSummary>, OrdersError> {
        let mut sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE 1 = 1");
        let mut n = 0;
        let mut mark = || {
            n += 1;
            format!("${n}")
        };
        if buyer.is_some() {
            sql.push_str(&format!(" AND buyer_id = {}", mark()));
        }
        if status.is_some() {
            sql.push_str(&format!(" AND status = {}", mark()));
        }
        if before.is_some() {
            sql.push_str(&format!(" AND id < {}", mark()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", mark()));
        let mut query = sqlx::query_as::<_, OrderRow>(&sql);
        if let Some(buyer) = buyer {
            query = query.bind(buyer);
        }
        if let Some(status) = status {
            query = query.bind(status.as_str());
        }
        if let Some(before) = before {
            query = query.bind(before);
        }
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(self.db.pool())
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(OrderSummary {
                    id: row.id,
                    buyer: row.buyer_id,
                    status: row.status,
                    reason: row.reason,
                    total: Money::new(row.total, currency(&row.currency)?),
                    item_count: row.item_count,
                    created_at: clock::from_micros(row.created_at),
                })
            })
            .collect()
    }

    // ---- the buyer's and the administrators' moves -------------------------------------

    /// The buyer cancels before fulfilment (pending or confirmed): the stock goes back and a
    /// payment made is refunded (both by `OrderCancelled`).
    pub async fn cancel(&self, buyer: UserId, id: OrderId) -> Result<OrderView, OrdersError> {
        let order = self.get(id).await?;
        if order.buyer != buyer {
            return Err(OrdersError::NotFound);
        }
        let mut tx = self.db.begin().await?;
        let moved = cancel_in(&mut tx, id, &["pending", "confirmed"], "cancelled by you").await?;
        if !moved {
            tx.rollback().await?;
            return Err(OrdersError::WrongStatus(format!(
                "this order is {} and can no longer be cancelled",
                self.get(id).await?.status
            )));
        }
        tx.commit().await?;
        self.db.outbox_committed();
        self.get(id).await
    }

    /// An administrator marks a confirmed order shipped: its sellers are paid out of escrow.
    pub async fn ship(&self, id: OrderId) -> Result<OrderView, OrdersError> {
        let order = self.get(id).await?;
        let mut tx = self.db.begin().await?;
        if !step(
            &mut tx,
            id,
            &["confirmed"],
            None,
            Status::Shipped,
            None,
            "Shipped",
        )
        .await?
        {
            tx.rollback().await?;
            return Err(OrdersError::WrongStatus(format!(
                "only a confirmed order can be shipped; this one is {}",
                order.status
            )));
        }
        let shipped = OrderShipped {
            order_id: id,
            lines: order
                .lines
                .iter()
                .map(|l| PaidLine {
                    sku: l.sku.clone(),
                    seller: l.seller,
                    asset_id: l.asset_id,
                    amount: l.line_total,
                })
                .collect(),
        };
        outbox::enqueue(&mut tx, &for_order(&shipped, id)).await?;
        tx.commit().await?;
        self.db.outbox_committed();
        self.get(id).await
    }

    /// An administrator marks a shipped order delivered.
    pub async fn deliver(&self, id: OrderId) -> Result<OrderView, OrdersError> {
        let order = self.get(id).await?;
        let mut tx = self.db.begin().await?;
        if !step(
            &mut tx,
            id,
            &["shipped"],
            None,
            Status::Delivered,
            None,
            "Delivered",
        )
        .await?
        {
            tx.rollback().await?;
            return Err(OrdersError::WrongStatus(format!(
                "only a shipped order can be delivered; this one is {}",
                order.status
            )));
        }
        tx.commit().await?;
        self.get(id).await
    }

    /// An administrator refunds a paid order. Not shipped yet: like a cancellation, the
    /// stock goes back and escrow refunds the buyer. Shipped: the wallet refunds the buyer
    /// (`OrderRefunded`).
    pub async fn refund(&self, id: OrderId, reason: &str) -> Result<OrderView, OrdersError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 200 {
            return Err(Invalid::new("reason", "must be 1 to 200 characters").into());
        }
        let order = self.get(id).await?;
        if !order.status().may_refund() {
            return Err(OrdersError::WrongStatus(format!(
                "only a paid order can be refunded; this one is {}",
                order.status
            )));
        }
        let note = format!("Refunded: {reason}");
        let mut tx = self.db.begin().await?;
        let from = [order.status.as_str()];
        if !step(
            &mut tx,
            id,
            &from,
            None,
            Status::Refunded,
            Some(reason),
            &note,
        )
        .await?
        {
            tx.rollback().await?;
            return Err(OrdersError::WrongStatus(
                "the order changed meanwhile; reload it and try again".into(),
            ));
        }
        if order.status() == Status::Confirmed {
            let cancelled = OrderCancelled {
                order_id: id,
                reason: format!("refunded: {reason}"),
            };
            outbox::enqueue(&mut tx, &for_order(&cancelled, id)).await?;
        } else {
            let refunded = OrderRefunded {
                order_id: id,
                buyer: order.buyer,
                amount: order.total,
                reason: reason.to_owned(),
            };
            outbox::enqueue(&mut tx, &for_order(&refunded, id)).await?;
        }
        tx.commit().await?;
        self.db.outbox_committed();
        self.get(id).await
    }

    // ---- the saga's steps (each in the consumer helper's transaction) ------------------

    /// Inventory reserved every line: ask the buyer's wallet to pay.
    pub async fn on_reserved(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: OrderId,
    ) -> Result<(), OrdersError> {
        let moved: Option<(UserId, i64, String, i64)> = sqlx::query_as(
            "UPDATE orders SET stage = 'reserved', updated_at = $1 \
             WHERE id = $2 AND status = 'pending' AND stage = 'placed' \
             RETURNING buyer_id, total, currency, item_count",
        )
        .bind(clock::now_micros())
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some((buyer, total, code, items)) = moved else {
            return Ok(()); // decided already (cancelled meanwhile, or a redelivery)
        };
        history(
            tx,
            id,
            Status::Pending,
            "Stock reserved: taking the payment",
        )
        .await?;
        let ask = PaymentRequested {
            order_id: id,
            buyer,
            amount: Money::new(total, currency(&code)?),
            description: format!(
                "Store order of {items} item{}",
                if items == 1 { "" } else { "s" }
            ),
        };
        outbox::enqueue(tx, &for_order(&ask, id)).await?;
        Ok(())
    }

    /// The wallet took the payment: the order is confirmed and its stock committed.
    pub async fn on_paid(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: OrderId,
    ) -> Result<(), OrdersError> {
        let note = "Paid: your order is confirmed";
        if step(
            tx,
            id,
            &["pending"],
            Some("reserved"),
            Status::Confirmed,
            None,
            note,
        )
        .await?
        {
            outbox::enqueue(tx, &for_order(&OrderConfirmed { order_id: id }, id)).await?;
            timers::cancel(tx, &timer_key(id)).await?;
            // Bought: its lines never go back to the cart.
            sqlx::query(
                "UPDATE orders SET cart_state = CASE cart_state WHEN 0 THEN 3 WHEN 1 THEN 2 \
                 ELSE cart_state END WHERE id = $1",
            )
            .bind(id)
            .execute(&mut **tx)
            .await?;
            metrics::counter!("orders_finished_total", "outcome" => "confirmed").increment(1);
        }
        // Otherwise the order was cancelled first (timed out, or by the buyer): its
        // OrderCancelled follows the payment request, so the wallet refunds it.
        Ok(())
    }

    /// Something ended a pending checkout (stock short, payment refused, the reservation
    /// expired, the deadline passed): cancel it with `reason` and compensate.
    pub async fn on_failed(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: OrderId,
        reason: &str,
    ) -> Result<(), OrdersError> {
        if cancel_in(tx, id, &["pending"], reason).await? {
            timers::cancel(tx, &timer_key(id)).await?;
            metrics::counter!("orders_finished_total", "outcome" => "cancelled").increment(1);
        }
        Ok(())
    }

    /// Takes an order's lines out of its buyer's cart and records it (due → taken, bought
    /// → settled).
    async fn take_from_cart(
        &self,
        id: OrderId,
        buyer: UserId,
        lines: &[CartLine],
    ) -> Result<(), OrdersError> {
        self.cart
            .remove_bought(buyer, lines)
            .await
            .map_err(|e| OrdersError::Unavailable(e.to_string()))?;
        self.taking.run(id).await
    }

    /// An order's lines, as cart lines.
    async fn cart_lines_of(&self, id: OrderId) -> Result<Vec<CartLine>, OrdersError> {
        let lines: Vec<(Sku, i64)> = sqlx::query_as(
            "SELECT sku, quantity FROM order_lines WHERE order_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await?;
        Ok(lines
            .into_iter()
            .map(|(sku, quantity)| CartLine {
                sku,
                quantity: u32::try_from(quantity).unwrap_or(u32::MAX),
            })
            .collect())
    }

    /// Settles what orders owe their buyers' carts (at most `limit` of each kind; returns
    /// how many it settled): the lines of an order cancelled before it was confirmed go
    /// back to the cart, and lines still due past [`TAKE_GRACE`] (their checkout could not
    /// take them) are taken out, unless the order was cancelled. A crash between changing
    /// a cart and recording it may change that cart twice; a cart never goes below zero or
    /// past its maximum.
    pub async fn settle_carts(&self, limit: i64) -> Result<usize, OrdersError> {
        let failed: Vec<(OrderId, UserId)> = sqlx::query_as(
            "SELECT id, buyer_id FROM orders WHERE cart_state = $1 AND status = 'cancelled' \
             ORDER BY id LIMIT $2",
        )
        .bind(cart_state::TAKEN)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        for (id, buyer) in &failed {
            let lines = self.cart_lines_of(*id).await?;
            self.cart
                .give_back(*buyer, &lines)
                .await
                .map_err(|e| OrdersError::Unavailable(e.to_string()))?;
            sqlx::query("UPDATE orders SET cart_state = $1 WHERE id = $2 AND cart_state = $3")
                .bind(cart_state::SETTLED)
                .bind(id)
                .bind(cart_state::TAKEN)
                .execute(self.db.writer())
                .await?;
        }
        let grace = i64::try_from(TAKE_GRACE.as_micros()).unwrap_or(i64::MAX);
        let stale: Vec<(OrderId, UserId, String)> = sqlx::query_as(
            "SELECT id, buyer_id, status FROM orders WHERE cart_state IN ($1, $2) \
             AND created_at < $3 ORDER BY id LIMIT $4",
        )
        .bind(cart_state::DUE)
        .bind(cart_state::BOUGHT)
        .bind(clock::now_micros().saturating_sub(grace))
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        for (id, buyer, status) in &stale {
            if status == "cancelled" {
                // Never taken: its lines are still in the cart, where they belong.
                sqlx::query(
                    "UPDATE orders SET cart_state = $1 WHERE id = $2 AND cart_state IN ($3, $4)",
                )
                .bind(cart_state::SETTLED)
                .bind(id)
                .bind(cart_state::DUE)
                .bind(cart_state::BOUGHT)
                .execute(self.db.writer())
                .await?;
            } else {
                let lines = self.cart_lines_of(*id).await?;
                self.take_from_cart(*id, *buyer, &lines).await?;
            }
        }
        Ok(failed.len() + stale.len())
    }
}

/// An order to write: everything `place` decided before it takes the writer.
pub struct Placing {
    id: OrderId,
    buyer: UserId,
    key: String,
    request: String,
    currency: Currency,
    total: Money,
    item_count: i64,
    shipping: String,
    address: ShippingAddress,
    lines: Vec<OrderLineView>,
}

/// Writes placed orders (with group commit on SQLite, decision 68): the order, its lines,
/// its first history line, `OrderPlaced` and the saga's deadline, in one transaction.
pub struct PlaceOrders {
    timeout: Duration,
}

#[async_trait::async_trait]
impl GroupWork for PlaceOrders {
    type Job = Placing;
    /// `None`: an order with the same idempotency key exists (it raced this one and won).
    type Output = Option<OrderView>;
    type Error = OrdersError;

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        job: &Placing,
    ) -> Result<Option<OrderView>, OrdersError> {
        let (id, now) = (job.id, clock::now_micros());
        let inserted = sqlx::query(
            "INSERT INTO orders (id, buyer_id, status, stage, currency, total, item_count, \
             shipping, idempotency_key, request, created_at, updated_at) \
             VALUES ($1, $2, 'pending', 'placed', $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(id)
        .bind(job.buyer)
        .bind(job.currency.code())
        .bind(job.total.amount())
        .bind(job.item_count)
        .bind(&job.shipping)
        .bind(&job.key)
        .bind(&job.request)
        .bind(now)
        .execute(&mut **tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        for (position, line) in job.lines.iter().enumerate() {
            sqlx::query(
                "INSERT INTO order_lines (order_id, position, sku, product_id, title, variant, \
                 seller_id, asset_id, unit_price, quantity) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(id)
            .bind(position as i64)
            .bind(&line.sku)
            .bind(line.product_id)
            .bind(&line.title)
            .bind(&line.variant)
            .bind(line.seller)
            .bind(line.asset_id)
            .bind(line.unit_price.amount())
            .bind(i64::from(line.quantity))
            .execute(&mut **tx)
            .await?;
        }
        let note = "Order placed: reserving the stock";
        history_at(tx, id, Status::Pending, note, now).await?;
        let placed = OrderPlaced {
            order_id: id,
            buyer: job.buyer,
            lines: job
                .lines
                .iter()
                .map(|l| OrderLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                })
                .collect(),
            placed_at: clock::from_micros(now),
        };
        outbox::enqueue(tx, &for_order(&placed, id)).await?;
        timers::schedule(
            tx,
            &timer_key(id),
            clock::now() + self.timeout,
            SAGA_CONSUMER,
            &Envelope::new(&CheckoutTimedOut { order_id: id }),
        )
        .await?;
        // The answer is the order as placed (what `read_order` would read back now, before
        // the saga can move it on), made from what was just written.
        let at = clock::from_micros(now);
        Ok(Some(OrderView {
            id,
            buyer: job.buyer,
            status: Status::Pending.as_str().to_owned(),
            reason: None,
            total: job.total,
            item_count: job.item_count,
            lines: job.lines.clone(),
            shipping_address: job.address.clone(),
            history: vec![HistoryEntry {
                status: Status::Pending.as_str().to_owned(),
                note: note.to_owned(),
                at,
            }],
            created_at: at,
            updated_at: at,
        }))
    }
}

/// Records that an order's lines left its buyer's cart (due → taken, bought → settled),
/// many checkouts' records in one commit on SQLite.
pub struct RecordTaken;

#[async_trait::async_trait]
impl GroupWork for RecordTaken {
    type Job = OrderId;
    type Output = ();
    type Error = OrdersError;

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &OrderId,
    ) -> Result<(), OrdersError> {
        sqlx::query(
            "UPDATE orders SET cart_state = CASE cart_state WHEN 0 THEN 1 ELSE 2 END \
             WHERE id = $1 AND cart_state IN (0, 3)",
        )
        .bind(id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// Moves an order from one of `from` (and `stage`, if given) to `to`, with its history
/// line; false if it was not there (nothing written).
async fn step(
    tx: &mut Transaction<'static, Any>,
    id: OrderId,
    from: &[&str],
    stage: Option<&str>,
    to: Status,
    reason: Option<&str>,
    note: &str,
) -> Result<bool, sqlx::Error> {
    let marks: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 5)).collect();
    let mut sql = format!(
        "UPDATE orders SET status = $1, stage = CASE WHEN $1 = 'pending' THEN stage ELSE 'done' END, \
         reason = COALESCE($2, reason), updated_at = $3 WHERE id = $4 AND status IN ({})",
        marks.join(", ")
    );
    if stage.is_some() {
        sql.push_str(&format!(" AND stage = ${}", from.len() + 5));
    }
    let mut query = sqlx::query(&sql)
        .bind(to.as_str())
        .bind(reason)
        .bind(clock::now_micros())
        .bind(id);
    for status in from {
        query = query.bind(*status);
    }
    if let Some(stage) = stage {
        query = query.bind(stage);
    }
    if query.execute(&mut **tx).await?.rows_affected() != 1 {
        return Ok(false);
    }
    history(tx, id, to, note).await?;
    Ok(true)
}

/// Cancels an order that is in one of `from`, with `reason`, and sends `OrderCancelled`
/// (inventory releases or restocks, the wallet refunds a payment).
async fn cancel_in(
    tx: &mut Transaction<'static, Any>,
    id: OrderId,
    from: &[&str],
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let note = format!("Cancelled: {reason}");
    if !step(tx, id, from, None, Status::Cancelled, Some(reason), &note).await? {
        return Ok(false);
    }
    let cancelled = OrderCancelled {
        order_id: id,
        reason: reason.to_owned(),
    };
    outbox::enqueue(tx, &for_order(&cancelled, id)).await?;
    Ok(true)
}

async fn history(
    tx: &mut Transaction<'static, Any>,
    id: OrderId,
    status: Status,
    note: &str,
) -> Result<(), sqlx::Error> {
    history_at(tx, id, status, note, clock::now_micros()).await
}

async fn history_at(
    tx: &mut Transaction<'static, Any>,
    id: OrderId,
    status: Status,
    note: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO order_history (order_id, seq, status, note, at) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 FROM order_history WHERE order_id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(note)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An order with its lines and history, read on `conn` (a transaction sees its own writes).
async fn read_order(conn: &mut sqlx::AnyConnection, id: OrderId) -> Result<OrderView, OrdersError> {
    let row: OrderRow =
        sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(OrdersError::NotFound)?;
    let lines: Vec<LineRow> = sqlx::query_as(
        "SELECT sku, product_id, title, variant, seller_id, asset_id, unit_price, quantity \
         FROM order_lines WHERE order_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let history: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT status, note, at FROM order_history WHERE order_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let currency = currency(&row.currency)?;
    Ok(OrderView {
        id: row.id,
        buyer: row.buyer_id,
        status: row.status,
        reason: row.reason,
        total: Money::new(row.total, currency),
        item_count: row.item_count,
        lines: lines
            .into_iter()
            .map(|l| {
                let quantity = u32::try_from(l.quantity).unwrap_or(0);
                OrderLineView {
                    sku: l.sku,
                    product_id: l.product_id,
                    title: l.title,
                    variant: l.variant,
                    unit_price: Money::new(l.unit_price, currency),
                    quantity,
                    line_total: Money::new(l.unit_price * l.quantity, currency),
                    seller: l.seller_id,
                    asset_id: l.asset_id,
                }
            })
            .collect(),
        shipping_address: serde_json::from_str(&row.shipping)
            .map_err(|e| OrdersError::Internal(anyhow::anyhow!("shipping address: {e}")))?,
        history: history
            .into_iter()
            .map(|(status, note, at)| HistoryEntry {
                status,
                note,
                at: clock::from_micros(at),
            })
            .collect(),
        created_at: clock::from_micros(row.created_at),
        updated_at: clock::from_micros(row.updated_at),
    })
}
