//! The wallet's settings (`[wallet]` in `rendermart.toml`, `RENDERMART_WALLET__*`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalletConfig {
    /// ISO 4217 code of every account's currency.
    pub currency: String,
    /// Largest top-up, in minor units.
    pub max_topup: i64,
    /// Largest payout, in minor units.
    pub max_payout: i64,
    /// How long the test payout provider takes to settle a payout, in seconds.
    pub payout_settle_secs: u64,
    /// How often the ledger's invariants are checked (and exported as metrics), in seconds.
    pub ledger_check_secs: u64,
}

impl Default for WalletConfig {
    fn default() -> Self {
        Self {
            currency: "USD".into(),
            max_topup: 100_000_000,
            max_payout: 100_000_000,
            payout_settle_secs: 2,
            ledger_check_secs: 60,
        }
    }
}
