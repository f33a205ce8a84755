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
    /// The platform's fee on every sale, in basis points (500 = 5 %).
    pub fee_bps: u32,
    /// The creator's royalty on every resale, in basis points (1000 = 10 %).
    pub royalty_bps: u32,
    /// Highest listing price (and offer), in minor units.
    pub max_price: i64,
    /// Shortest time an offer may stay open, in seconds (a longest is a week).
    pub min_offer_secs: i64,
    /// Who takes top-up payments: `test` (settles at once; declines 4002 and 4004) or
    /// `stripe` (a PaymentIntent the browser confirms; credited by Stripe's webhook).
    pub payment_provider: String,
    /// `[wallet.stripe]`, required when `payment_provider = "stripe"`.
    pub stripe: Option<crate::stripe::StripeConfig>,
}

impl Default for WalletConfig {
    fn default() -> Self {
        Self {
            currency: "USD".into(),
            max_topup: 100_000_000,
            max_payout: 100_000_000,
            payout_settle_secs: 2,
            ledger_check_secs: 60,
            fee_bps: 500,
            royalty_bps: 1_000,
            max_price: 100_000_000,
            min_offer_secs: 60,
            payment_provider: "test".into(),
            stripe: None,
        }
    }
}
