//! The cart's settings (`[cart]` in `rendermart.toml`, `RENDERMART_CART__*`).

use serde::{Deserialize, Serialize};

use crate::domain::{Limits, DEFAULT_MAX_LINES, DEFAULT_MAX_QUANTITY, MAX_QUANTITY_LIMIT};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CartConfig {
    /// A cart nobody changed for this long is gone (seconds; Redis TTL, or the database's
    /// `touched_at` and the cleaning worker).
    pub idle_ttl_secs: u64,
    /// Most units of one SKU on a cart line (at least 100).
    pub max_quantity: u32,
    /// Most distinct SKUs in one cart.
    pub max_lines: u32,
    /// How long a SKU the catalog said is on sale (or not) is believed without asking again,
    /// in milliseconds (0: ask every time). Prices are never cached: a cart is priced by
    /// the catalog when it is read.
    pub sku_cache_ms: u64,
}

impl Default for CartConfig {
    fn default() -> Self {
        Self {
            idle_ttl_secs: 30 * 24 * 3600,
            max_quantity: DEFAULT_MAX_QUANTITY,
            max_lines: DEFAULT_MAX_LINES,
            sku_cache_ms: 2_000,
        }
    }
}

impl CartConfig {
    /// Every setting within its range.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=365 * 24 * 3600).contains(&self.idle_ttl_secs),
            "cart.idle_ttl_secs must be between 1 and 31536000 (a year)"
        );
        anyhow::ensure!(
            (100..=MAX_QUANTITY_LIMIT).contains(&self.max_quantity),
            "cart.max_quantity must be between 100 and {MAX_QUANTITY_LIMIT}"
        );
        anyhow::ensure!(
            (1..=500).contains(&self.max_lines),
            "cart.max_lines must be between 1 and 500"
        );
        anyhow::ensure!(
            self.sku_cache_ms <= 60_000,
            "cart.sku_cache_ms must be at most 60000 (a minute)"
        );
        Ok(())
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_quantity: self.max_quantity,
            max_lines: self.max_lines,
        }
    }
}
