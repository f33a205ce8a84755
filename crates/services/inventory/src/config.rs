//! Inventory's settings (`[inventory]` in `rendermart.toml`, `RENDERMART_INVENTORY__*`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventoryConfig {
    /// How long an order's reservation holds its stock unless the order is confirmed,
    /// in seconds.
    pub reservation_ttl_secs: u64,
    /// `inventory.StockLow` is published when a SKU's available stock falls to this or
    /// below (0: never).
    pub low_stock_threshold: i64,
    /// Largest change of on-hand stock one adjustment may make, either way.
    pub max_adjust: i64,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            reservation_ttl_secs: 900,
            low_stock_threshold: 5,
            max_adjust: 1_000_000,
        }
    }
}

impl InventoryConfig {
    /// Every setting within its range.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=30 * 24 * 3600).contains(&self.reservation_ttl_secs),
            "inventory.reservation_ttl_secs must be between 1 and 2592000 (30 days)"
        );
        anyhow::ensure!(
            self.low_stock_threshold >= 0,
            "inventory.low_stock_threshold must be at least 0"
        );
        anyhow::ensure!(
            (1..=crate::domain::MAX_ON_HAND).contains(&self.max_adjust),
            "inventory.max_adjust must be between 1 and {}",
            crate::domain::MAX_ON_HAND
        );
        Ok(())
    }
}
