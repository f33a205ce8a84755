//! The orders service's settings (`[orders]` in `rendermart.toml`, `RENDERMART_ORDERS__*`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrdersConfig {
    /// A checkout still pending after this many seconds (stock or payment did not answer)
    /// is cancelled and compensated: its stock released, any payment refunded.
    pub checkout_timeout_secs: u64,
    /// Largest order total, in minor units.
    pub max_total: i64,
    /// Most checkouts one buyer may have pending at once (a 429 past it).
    pub max_pending_per_buyer: i64,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            checkout_timeout_secs: 120,
            max_total: 100_000_000,
            max_pending_per_buyer: 20,
        }
    }
}

impl OrdersConfig {
    /// Every setting within its range.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=24 * 3600).contains(&self.checkout_timeout_secs),
            "orders.checkout_timeout_secs must be between 1 and 86400"
        );
        anyhow::ensure!(self.max_total > 0, "orders.max_total must be positive");
        anyhow::ensure!(
            (1..=10_000).contains(&self.max_pending_per_buyer),
            "orders.max_pending_per_buyer must be between 1 and 10000"
        );
        Ok(())
    }
}
