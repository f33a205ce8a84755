//! [`Inventory`]: stock per SKU, reservations of orders, adjustments. The one thing to
//! know: **available stock is checked and taken in one conditional `UPDATE`** (`… WHERE
//! on_hand - reserved >= q`), so no interleaving of concurrent reservations can take more
//! than there is; the table's CHECK backs it up. Every operation writes its effect and the
//! events it causes in one transaction (the outbox), and each order's reservation moves
//! only forward (held → committed | released, or rejected), by conditional `UPDATE`s, so
//! a repeated or late message changes nothing.

use rendermart_inventory_api::{
    InventoryUnavailable, ShortLine, StockAvailable, StockCommitted, StockLevel, StockLow,
    StockOut, StockRejected, StockReleased, StockReserved, RESERVATION_AGGREGATE, SKU_AGGREGATE,
};
use rendermart_orders_api::{OrderId, OrderLine};
use rendermart_platform::{
    clock,
    db::Db,
    events::Envelope,
    outbox,
    recent::{Changes, Recent, Weigh},
};
use rendermart_types::{Sku, UserId};
use serde::Serialize;
use sqlx::{Any, AnyConnection, Transaction};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::{
    config::InventoryConfig,
    domain::{self, Delta, Invalid, Reason, ReservationLines, MAX_ON_HAND},
};

rendermart_types::entity_id!(
    /// One admin adjustment in the audit trail (UUID v7, so ordered by time).
    AdjustmentId
);

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("no stock is kept for this SKU")]
    UnknownSku,
    /// An adjustment would take on-hand stock below what is reserved (or above the limit).
    #[error("{0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

/// The database being unreachable or busy is "try again" (503); anything else is a bug.
impl From<sqlx::Error> for InventoryError {
    fn from(e: sqlx::Error) -> Self {
        if rendermart_platform::db::is_transient(&e) {
            InventoryError::Unavailable(e.to_string())
        } else {
            InventoryError::Internal(e.into())
        }
    }
}

/// One SKU's stock as anyone may see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct StockView {
    pub sku: Sku,
    /// Units in the warehouse (reserved ones included).
    pub on_hand: i64,
    /// Units promised to orders not yet confirmed.
    pub reserved: i64,
    /// What can still be ordered: on_hand - reserved, never below zero.
    pub available: i64,
}

/// One line of a SKU's audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Adjustment {
    pub id: AdjustmentId,
    pub sku: Sku,
    pub delta: i64,
    pub reason: String,
    /// The admin who made it.
    pub by_user: UserId,
    /// On-hand stock right after it.
    pub on_hand_after: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// What asking to reserve an order's lines did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Every line is reserved until `expires_at`.
    Reserved {
        lines: Vec<OrderLine>,
        expires_at: OffsetDateTime,
    },
    /// Nothing is reserved; `short` names the lines the stock did not cover.
    Rejected {
        reason: String,
        short: Vec<ShortLine>,
    },
    /// The order was decided before (its status now): nothing changed, nothing published.
    AlreadyDecided(String),
}

/// Where an order's units come back from when it no longer takes them.
#[derive(Clone, Copy)]
enum Returned {
    /// Held for it: `reserved` drops.
    Reserved,
    /// Taken when it was confirmed: `on_hand` rises.
    Committed,
}

/// What a commit or release of an order's reservation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Done now (these lines).
    Done(Vec<OrderLine>),
    /// The reservation was not held (its status, or `None` if the order is unknown):
    /// nothing changed.
    NotHeld(Option<String>),
}

pub struct Inventory {
    db: Db,
    config: InventoryConfig,
    /// Bumped after every commit of a change of stock made here (decision 65).
    changes: Changes,
    /// The levels pages showed lately, by SKU (absent: never stocked).
    shown: Recent<Sku, Shown>,
}

/// A SKU's level as a page showed it (`None`: never stocked).
struct Shown(Option<StockLevel>);

impl Weigh for Shown {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.0.as_ref().map_or(0, |l| l.sku.as_str().len())
    }
}

impl Inventory {
    pub fn new(db: Db, config: InventoryConfig) -> anyhow::Result<Self> {
        config.check()?;
        Ok(Self {
            db,
            config,
            changes: Changes::default(),
            shown: Recent::default(),
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn config(&self) -> &InventoryConfig {
        &self.config
    }

    /// A change of stock was committed here by someone else (the consumer, which commits
    /// the `_in` methods' work): the levels pages were shown are stale. The methods that
    /// commit their own transaction say so themselves.
    pub fn stock_changed(&self) {
        self.changes.bump();
    }

    /// The SKU's stock.
    pub async fn stock(&self, sku: &Sku) -> Result<StockView, InventoryError> {
        let mut conn = self.db.pool().acquire().await?;
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT on_hand, reserved FROM stock WHERE sku = $1")
                .bind(sku)
                .fetch_optional(&mut *conn)
                .await?;
        let (on_hand, reserved) = row.ok_or(InventoryError::UnknownSku)?;
        Ok(StockView {
            sku: sku.clone(),
            on_hand,
            reserved,
            available: (on_hand - reserved).max(0),
        })
    }

    /// Reserves all of `order`'s lines or none, in its own transaction, and publishes the
    /// answer (`StockReserved` or `StockRejected`) with it. The same order again changes
    /// nothing ([`ReserveOutcome::AlreadyDecided`]).
    pub async fn reserve(
        &self,
        order: OrderId,
        lines: &[OrderLine],
    ) -> Result<ReserveOutcome, InventoryError> {
        let mut tx = self.db.begin().await?;
        let outcome = self.reserve_in(&mut tx, order, lines).await?;
        tx.commit().await?;
        self.changes.bump();
        self.db.outbox_committed();
        Ok(outcome)
    }

    /// [`reserve`](Self::reserve) inside the caller's transaction (the consumer's).
    pub async fn reserve_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        order: OrderId,
        lines: &[OrderLine],
    ) -> Result<ReserveOutcome, InventoryError> {
        let now = clock::now_micros();
        let ttl = i64::try_from(self.config.reservation_ttl_secs)
            .unwrap_or(i64::MAX / 2_000_000)
            .saturating_mul(1_000_000);
        let expires_at = now.saturating_add(ttl);
        // The order-level guard: whoever inserts it decides the order; anyone else (a
        // redelivery, a retry, a concurrent call) finds it and changes nothing.
        let claimed = sqlx::query(
            "INSERT INTO reservations (order_id, status, expires_at, created_at, updated_at) \
             VALUES ($1, 'held', $2, $3, $3) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order)
        .bind(expires_at)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if claimed != 1 {
            let status = self.status_of(tx, order).await?.unwrap_or_default();
            return Ok(ReserveOutcome::AlreadyDecided(status));
        }
        let lines = match ReservationLines::parse(lines) {
            Ok(lines) => lines,
            Err(invalid) => {
                let reason = format!("the order cannot be reserved: {invalid}");
                return self.reject(tx, order, reason, Vec::new()).await;
            }
        };
        // Check and take each line in one statement; remember what was taken so a short
        // line can undo it (every line is tried, so the rejection names all short ones).
        let mut taken: Vec<(&Sku, u32, i64, i64)> = Vec::new();
        let mut short = Vec::new();
        for (sku, quantity) in lines.iter() {
            let q = i64::from(*quantity);
            let row: Option<(i64, i64)> = sqlx::query_as(
                "UPDATE stock SET reserved = reserved + $1, updated_at = $2 \
                 WHERE sku = $3 AND on_hand - reserved >= $1 RETURNING on_hand, reserved",
            )
            .bind(q)
            .bind(now)
            .bind(sku)
            .fetch_optional(&mut **tx)
            .await?;
            match row {
                Some((on_hand, reserved)) => taken.push((sku, *quantity, on_hand, reserved)),
                None => short.push(ShortLine {
                    sku: sku.clone(),
                    requested: *quantity,
                    available: self.available_in(tx, sku).await?,
                }),
            }
        }
        if !short.is_empty() {
            for (sku, quantity, _, _) in &taken {
                sqlx::query("UPDATE stock SET reserved = reserved - $1 WHERE sku = $2")
                    .bind(i64::from(*quantity))
                    .bind(*sku)
                    .execute(&mut **tx)
                    .await?;
            }
            let reason = domain::rejection_reason(&short);
            return self.reject(tx, order, reason, short).await;
        }
        for (sku, quantity, on_hand, reserved) in &taken {
            sqlx::query(
                "INSERT INTO reservation_lines (order_id, sku, quantity) VALUES ($1, $2, $3)",
            )
            .bind(order)
            .bind(*sku)
            .bind(i64::from(*quantity))
            .execute(&mut **tx)
            .await?;
            let after = on_hand - reserved;
            self.publish_crossings(tx, sku, after + i64::from(*quantity), after)
                .await?;
        }
        let expires_at = clock::from_micros(expires_at);
        let lines = lines.to_order_lines();
        let reserved = StockReserved {
            order_id: order,
            lines: lines.clone(),
            expires_at,
        };
        publish_for_order(tx, order, &Envelope::new(&reserved)).await?;
        metrics::counter!("inventory_reservations_total", "outcome" => "reserved").increment(1);
        Ok(ReserveOutcome::Reserved { lines, expires_at })
    }

    async fn reject(
        &self,
        tx: &mut Transaction<'static, Any>,
        order: OrderId,
        reason: String,
        short: Vec<ShortLine>,
    ) -> Result<ReserveOutcome, InventoryError> {
        sqlx::query(
            "UPDATE reservations SET status = 'rejected', reason = $1, expires_at = NULL \
             WHERE order_id = $2",
        )
        .bind(&reason)
        .bind(order)
        .execute(&mut **tx)
        .await?;
        let rejected = StockRejected {
            order_id: order,
            reason: reason.clone(),
            short: short.clone(),
        };
        publish_for_order(tx, order, &Envelope::new(&rejected)).await?;
        metrics::counter!("inventory_reservations_total", "outcome" => "rejected").increment(1);
        Ok(ReserveOutcome::Rejected { reason, short })
    }

    /// The confirmed order's reservation leaves the stock for good (on hand and reserved
    /// both drop, so available does not move); publishes `StockCommitted`. A reservation
    /// that is not held (released, rejected, unknown) is left alone.
    pub async fn commit(&self, order: OrderId) -> Result<Settled, InventoryError> {
        let mut tx = self.db.begin().await?;
        let settled = self.commit_in(&mut tx, order).await?;
        tx.commit().await?;
        self.changes.bump();
        self.db.outbox_committed();
        Ok(settled)
    }

    pub async fn commit_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        order: OrderId,
    ) -> Result<Settled, InventoryError> {
        let now = clock::now_micros();
        let done = sqlx::query(
            "UPDATE reservations SET status = 'committed', expires_at = NULL, updated_at = $1 \
             WHERE order_id = $2 AND status = 'held'",
        )
        .bind(now)
        .bind(order)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if done != 1 {
            return Ok(Settled::NotHeld(self.status_of(tx, order).await?));
        }
        let lines = self.lines_of(tx, order).await?;
        for line in &lines {
            sqlx::query(
                "UPDATE stock SET on_hand = on_hand - $1, reserved = reserved - $1, \
                 updated_at = $2 WHERE sku = $3",
            )
            .bind(i64::from(line.quantity))
            .bind(now)
            .bind(&line.sku)
            .execute(&mut **tx)
            .await?;
        }
        let committed = StockCommitted {
            order_id: order,
            lines: lines.clone(),
        };
        publish_for_order(tx, order, &Envelope::new(&committed)).await?;
        metrics::counter!("inventory_settled_total", "outcome" => "committed").increment(1);
        Ok(Settled::Done(lines))
    }

    /// Gives the order's held reservation back to the stock and publishes `StockReleased`
    /// with `why`; a committed one (a confirmed order cancelled before shipping) goes back
    /// on hand. An order inventory has not seen yet is marked released, so a late
    /// reserve for it holds nothing.
    pub async fn release(&self, order: OrderId, why: &str) -> Result<Settled, InventoryError> {
        let mut tx = self.db.begin().await?;
        let settled = self.release_in(&mut tx, order, why).await?;
        tx.commit().await?;
        self.changes.bump();
        self.db.outbox_committed();
        Ok(settled)
    }

    pub async fn release_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        order: OrderId,
        why: &str,
    ) -> Result<Settled, InventoryError> {
        let now = clock::now_micros();
        let done = sqlx::query(
            "UPDATE reservations SET status = 'released', reason = $1, expires_at = NULL, \
             updated_at = $2 WHERE order_id = $3 AND status = 'held'",
        )
        .bind(why)
        .bind(now)
        .bind(order)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if done != 1 {
            let status = self.status_of(tx, order).await?;
            if status.as_deref() == Some("committed") {
                return self.restock_in(tx, order, why).await;
            }
            if status.is_none() {
                sqlx::query(
                    "INSERT INTO reservations (order_id, status, reason, created_at, updated_at) \
                     VALUES ($1, 'released', $2, $3, $3) ON CONFLICT (order_id) DO NOTHING",
                )
                .bind(order)
                .bind(why)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            }
            return Ok(Settled::NotHeld(status));
        }
        self.give_back(tx, order, why, Returned::Reserved).await
    }

    /// A confirmed order cancelled before it shipped: its committed units go back on hand
    /// (the reservation ends `released`, with `why`), and `StockReleased` says so.
    async fn restock_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        order: OrderId,
        why: &str,
    ) -> Result<Settled, InventoryError> {
        let now = clock::now_micros();
        let done = sqlx::query(
            "UPDATE reservations SET status = 'released', reason = $1, updated_at = $2 \
             WHERE order_id = $3 AND status = 'committed'",
        )
        .bind(why)
        .bind(now)
        .bind(order)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if done != 1 {
            return Ok(Settled::NotHeld(self.status_of(tx, order).await?));
        }
        self.give_back(tx, order, why, Returned::Committed).await
    }

    /// The order's units become available again (held ones leave `reserved`, committed
    /// ones come back `on_hand`), with the crossings that causes, and `StockReleased`.
    async fn give_back(
        &self,
        tx: &mut Transaction<'static, Any>,
        order: OrderId,
        why: &str,
        returned: Returned,
    ) -> Result<Settled, InventoryError> {
        let (change, outcome) = match returned {
            Returned::Reserved => ("reserved = reserved - $1", "released"),
            Returned::Committed => ("on_hand = on_hand + $1", "restocked"),
        };
        let sql = format!(
            "UPDATE stock SET {change}, updated_at = $2 WHERE sku = $3 RETURNING on_hand, reserved"
        );
        let now = clock::now_micros();
        let lines = self.lines_of(tx, order).await?;
        for line in &lines {
            let q = i64::from(line.quantity);
            let (on_hand, reserved): (i64, i64) = sqlx::query_as(&sql)
                .bind(q)
                .bind(now)
                .bind(&line.sku)
                .fetch_one(&mut **tx)
                .await?;
            let after = on_hand - reserved;
            self.publish_crossings(tx, &line.sku, after - q, after)
                .await?;
        }
        let released = StockReleased {
            order_id: order,
            why: why.to_owned(),
            lines: lines.clone(),
        };
        publish_for_order(tx, order, &Envelope::new(&released)).await?;
        metrics::counter!("inventory_settled_total", "outcome" => outcome).increment(1);
        Ok(Settled::Done(lines))
    }

    /// Releases held reservations whose time ran out (at most `limit`), each in its own
    /// transaction; one a confirmation or another replica settled first is skipped.
    /// Returns how many it released.
    pub async fn release_expired(&self, limit: i64) -> Result<u64, InventoryError> {
        let now = clock::now_micros();
        let due: Vec<(OrderId,)> = {
            let mut conn = self.db.pool().acquire().await?;
            sqlx::query_as(
                "SELECT order_id FROM reservations WHERE status = 'held' AND expires_at <= $1 \
                 ORDER BY expires_at LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?
        };
        let mut released = 0;
        for (order,) in due {
            if let Settled::Done(_) = self.release(order, "expired").await? {
                metrics::counter!("inventory_reservations_expired_total").increment(1);
                released += 1;
            }
        }
        Ok(released)
    }

    /// An admin's change of on-hand stock, kept in the audit trail with its reason. A
    /// positive delta on a SKU never stocked before starts keeping it. Refused (409) when
    /// it would take on-hand stock below what is reserved.
    pub async fn adjust(
        &self,
        sku: &Sku,
        delta: Delta,
        reason: &Reason,
        by: UserId,
    ) -> Result<(StockView, Adjustment), InventoryError> {
        let d = delta.value();
        let now = clock::now_micros();
        let mut tx = self.db.begin().await?;
        if d > 0 {
            sqlx::query(
                "INSERT INTO stock (sku, on_hand, reserved, updated_at) VALUES ($1, 0, 0, $2) \
                 ON CONFLICT (sku) DO NOTHING",
            )
            .bind(sku)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let row: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE stock SET on_hand = on_hand + $1, updated_at = $2 \
             WHERE sku = $3 AND on_hand + $1 >= reserved AND on_hand + $1 <= $4 \
             RETURNING on_hand, reserved",
        )
        .bind(d)
        .bind(now)
        .bind(sku)
        .bind(MAX_ON_HAND)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((on_hand, reserved)) = row else {
            let current: Option<(i64, i64)> =
                sqlx::query_as("SELECT on_hand, reserved FROM stock WHERE sku = $1")
                    .bind(sku)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Err(match current {
                None => InventoryError::UnknownSku,
                Some((on_hand, reserved)) if d < 0 => InventoryError::Conflict(format!(
                    "{sku} has {on_hand} on hand and {reserved} reserved: at most {} can be \
                     taken out",
                    on_hand - reserved
                )),
                Some((on_hand, _)) => InventoryError::Conflict(format!(
                    "{sku} would have more than {MAX_ON_HAND} on hand (it has {on_hand})"
                )),
            });
        };
        let adjustment = Adjustment {
            id: AdjustmentId::new(),
            sku: sku.clone(),
            delta: d,
            reason: reason.as_str().to_owned(),
            by_user: by,
            on_hand_after: on_hand,
            at: clock::from_micros(now),
        };
        sqlx::query(
            "INSERT INTO stock_adjustments (id, sku, delta, reason, by_user, on_hand_after, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(adjustment.id)
        .bind(sku)
        .bind(d)
        .bind(reason.as_str())
        .bind(by)
        .bind(on_hand)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let after = on_hand - reserved;
        self.publish_crossings(&mut tx, sku, after - d, after)
            .await?;
        tx.commit().await?;
        self.changes.bump();
        self.db.outbox_committed();
        metrics::counter!("inventory_adjustments_total").increment(1);
        let view = StockView {
            sku: sku.clone(),
            on_hand,
            reserved,
            available: after.max(0),
        };
        Ok((view, adjustment))
    }

    /// The SKU's audit trail, newest first, a page before `before`.
    pub async fn adjustments(
        &self,
        sku: &Sku,
        before: Option<AdjustmentId>,
        limit: u32,
    ) -> Result<Vec<Adjustment>, InventoryError> {
        self.stock(sku).await?;
        let mut conn = self.db.pool().acquire().await?;
        let limit = i64::from(limit.clamp(1, 100));
        type Row = (AdjustmentId, Sku, i64, String, UserId, i64, i64);
        const COLUMNS: &str = "id, sku, delta, reason, by_user, on_hand_after, at";
        let rows: Vec<Row> = match before {
            Some(before) => {
                sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM stock_adjustments \
                     WHERE sku = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
                ))
                .bind(sku)
                .bind(before)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
            }
            None => {
                sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM stock_adjustments \
                     WHERE sku = $1 ORDER BY id DESC LIMIT $2"
                ))
                .bind(sku)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(
                |(id, sku, delta, reason, by_user, on_hand_after, at)| Adjustment {
                    id,
                    sku,
                    delta,
                    reason,
                    by_user,
                    on_hand_after,
                    at: clock::from_micros(at),
                },
            )
            .collect())
    }

    /// The order's reservation status (`held`, `committed`, `released`, `rejected`), if
    /// inventory has seen it.
    pub async fn reservation_status(
        &self,
        order: OrderId,
    ) -> Result<Option<String>, InventoryError> {
        let mut conn = self.db.pool().acquire().await?;
        Ok(self.status_of(&mut conn, order).await?)
    }

    async fn status_of(
        &self,
        conn: &mut AnyConnection,
        order: OrderId,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = $1")
            .bind(order)
            .fetch_optional(conn)
            .await
    }

    async fn lines_of(
        &self,
        conn: &mut AnyConnection,
        order: OrderId,
    ) -> Result<Vec<OrderLine>, InventoryError> {
        let rows: Vec<(Sku, i64)> = sqlx::query_as(
            "SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku",
        )
        .bind(order)
        .fetch_all(conn)
        .await?;
        rows.into_iter()
            .map(|(sku, quantity)| {
                let quantity = u32::try_from(quantity)
                    .map_err(|_| anyhow::anyhow!("reserved quantity {quantity} out of range"))?;
                Ok(OrderLine { sku, quantity })
            })
            .collect()
    }

    async fn available_in(&self, conn: &mut AnyConnection, sku: &Sku) -> Result<i64, sqlx::Error> {
        let available: Option<i64> =
            sqlx::query_scalar("SELECT on_hand - reserved FROM stock WHERE sku = $1")
                .bind(sku)
                .fetch_optional(conn)
                .await?;
        Ok(available.unwrap_or(0).max(0))
    }

    /// Publishes `StockLow`, `StockOut` or `StockAvailable` for the lines the SKU's
    /// available stock crossed going from `before` to `after`.
    async fn publish_crossings(
        &self,
        tx: &mut Transaction<'static, Any>,
        sku: &Sku,
        before: i64,
        after: i64,
    ) -> Result<(), sqlx::Error> {
        let threshold = self.config.low_stock_threshold;
        let crossed = domain::crossings(before, after, threshold);
        let mut events = Vec::new();
        if crossed.low {
            events.push(Envelope::new(&StockLow {
                sku: sku.clone(),
                available: after,
                threshold,
            }));
        }
        if crossed.out {
            events.push(Envelope::new(&StockOut { sku: sku.clone() }));
        }
        if crossed.back {
            events.push(Envelope::new(&StockAvailable {
                sku: sku.clone(),
                available: after,
            }));
        }
        for event in events {
            outbox::enqueue(tx, &event.with_aggregate(SKU_AGGREGATE, sku)).await?;
        }
        Ok(())
    }
}

async fn publish_for_order(
    tx: &mut Transaction<'static, Any>,
    order: OrderId,
    envelope: &Envelope,
) -> Result<(), sqlx::Error> {
    let envelope = envelope
        .clone()
        .with_aggregate(RESERVATION_AGGREGATE, order);
    outbox::enqueue(tx, &envelope).await
}

impl Inventory {
    /// The stock of each of `skus` that inventory stocks, read now.
    async fn read_levels(&self, skus: &[Sku]) -> Result<Vec<StockLevel>, InventoryUnavailable> {
        let unavailable = |e: sqlx::Error| InventoryUnavailable(e.to_string());
        let mut levels = Vec::with_capacity(skus.len());
        // A bounded number of SKUs per statement keeps the statement's size bounded too.
        for chunk in skus.chunks(100) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT sku, on_hand, reserved FROM stock WHERE sku IN ({})",
                marks.join(", ")
            );
            let mut query = sqlx::query_as::<_, (Sku, i64, i64)>(&sql);
            for sku in chunk {
                query = query.bind(sku);
            }
            let rows = query.fetch_all(self.db.pool()).await.map_err(unavailable)?;
            levels.extend(rows.into_iter().map(|(sku, on_hand, reserved)| StockLevel {
                sku,
                on_hand,
                reserved,
                available: (on_hand - reserved).max(0),
            }));
        }
        Ok(levels)
    }
}

#[async_trait::async_trait]
impl rendermart_inventory_api::InventoryApi for Inventory {
    async fn levels(&self, skus: &[Sku]) -> Result<Vec<StockLevel>, InventoryUnavailable> {
        self.read_levels(skus).await
    }

    /// From the short memory (decision 65): SKUs read less than `recent::TTL` ago, with no
    /// change of stock made here since, are not read again.
    async fn levels_to_show(&self, skus: &[Sku]) -> Result<Vec<StockLevel>, InventoryUnavailable> {
        let version = self.changes.version();
        let mut levels = Vec::with_capacity(skus.len());
        let mut missing = Vec::new();
        for sku in skus {
            match self.shown.get(sku, version) {
                Some(shown) => levels.extend(shown.0.clone()),
                None => missing.push(sku.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(levels);
        }
        let mut read: std::collections::HashMap<Sku, StockLevel> = self
            .read_levels(&missing)
            .await?
            .into_iter()
            .map(|l| (l.sku.clone(), l))
            .collect();
        for sku in missing {
            let level = read.remove(&sku);
            self.shown
                .put(sku, version, std::sync::Arc::new(Shown(level.clone())));
            levels.extend(level);
        }
        Ok(levels)
    }
}
