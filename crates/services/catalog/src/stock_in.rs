//! Consumer `catalog.stock`: the catalog's "in stock" flag, from inventory's availability
//! facts (aggregate `sku:<sku>`, applied in order per SKU by the consumer helper):
//!
//! * `inventory.StockAvailable` — the SKU can be ordered again (or was stocked first);
//! * `inventory.StockOut` — nothing more of it can be ordered.
//!
//! Each sets `sku_availability` (kept for SKUs the catalog does not have yet, so a variant
//! created later starts right) and the variants with that SKU, which is what search's
//! `in_stock` filter reads. A variant nobody stocked yet is out of stock (decision 55).

use async_trait::async_trait;
use rendermart_inventory_api::{StockAvailable, StockOut};
use rendermart_platform::{
    bus::HandlerError,
    consumer::{EventHandler, HandlerContext},
    events::{DecodeError, Envelope, Event, Incoming},
    recent::Changes,
};
use rendermart_types::Sku;

/// The availability facts the catalog applies.
pub enum StockEvent {
    Out(StockOut),
    Available(StockAvailable),
}

impl StockEvent {
    /// The SKU and whether it can be ordered now.
    fn availability(&self) -> (&Sku, bool) {
        match self {
            StockEvent::Out(e) => (&e.sku, false),
            StockEvent::Available(e) => (&e.sku, true),
        }
    }
}

impl Incoming for StockEvent {
    fn event_types() -> Vec<String> {
        vec![StockOut::TYPE.into(), StockAvailable::TYPE.into()]
    }

    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        match envelope.event_type.as_str() {
            StockOut::TYPE => envelope.decode().map(Self::Out),
            StockAvailable::TYPE => envelope.decode().map(Self::Available),
            _ => Err(DecodeError::unexpected("a stock event", envelope)),
        }
    }
}

/// Bumps the catalog's [`Changes`] after each flag it applies is committed, so remembered
/// reads are stale.
pub struct StockIn(pub Changes);

#[async_trait]
impl EventHandler for StockIn {
    type Message = StockEvent;

    async fn handle(
        &self,
        cx: &mut HandlerContext<'_>,
        event: StockEvent,
    ) -> Result<(), HandlerError> {
        let (sku, in_stock) = event.availability();
        let flag = i64::from(in_stock);
        sqlx::query(
            "INSERT INTO sku_availability (sku, in_stock) VALUES ($1, $2) \
             ON CONFLICT (sku) DO UPDATE SET in_stock = excluded.in_stock",
        )
        .bind(sku)
        .bind(flag)
        .execute(cx.conn())
        .await?;
        sqlx::query("UPDATE variants SET in_stock = $1 WHERE sku = $2")
            .bind(flag)
            .bind(sku)
            .execute(cx.conn())
            .await?;
        metrics::counter!("catalog_stock_flags_total", "in_stock" => if in_stock { "true" } else { "false" })
            .increment(1);
        Ok(())
    }

    fn committed(&self) {
        self.0.bump();
    }
}
