//! The wallet's contract with other services: how it answers a request to hold credits.
//!
//! Studio asks for a hold by publishing `studio.GenerationRequested`; the wallet answers
//! with [`CreditsHeld`] or [`CreditsRefused`] (aggregate `hold:<generation id>`). The hold is
//! captured when the wallet applies `studio.ImageGenerated` (in the transaction that makes
//! the image an asset) and released when it applies `studio.GenerationFailed`.

use rendermart_platform::events::Event;
use rendermart_studio_api::GenerationId;
use rendermart_types::UserId;
use serde::{Deserialize, Serialize};

/// The service's name.
pub const SERVICE: &str = "wallet";

/// The aggregate kind of the wallet's answers about one generation's hold.
pub const HOLD_AGGREGATE: &str = "hold";

/// The generation's price is held from its requester's available credits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsHeld {
    pub generation_id: GenerationId,
    pub user: UserId,
    /// Minor units held.
    pub amount: i64,
}

impl Event for CreditsHeld {
    const TYPE: &'static str = "wallet.CreditsHeld";
    const VERSION: u32 = 1;
}

/// The requester's available credits do not cover the generation's price: nothing is held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsRefused {
    pub generation_id: GenerationId,
    pub user: UserId,
    /// The price, in minor units.
    pub amount: i64,
    /// What the user had available when it was asked, in minor units.
    pub available: i64,
    /// ISO 4217 code of both amounts.
    pub currency: String,
}

impl Event for CreditsRefused {
    const TYPE: &'static str = "wallet.CreditsRefused";
    const VERSION: u32 = 1;
}

/// The aggregate kind of the wallet's answers about one order's payment:
/// `payment:<order id>`.
pub const PAYMENT_AGGREGATE: &str = "payment";

/// The order is paid: its amount left the buyer's wallet for the store's escrow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSucceeded {
    pub order_id: rendermart_orders_api::OrderId,
    pub buyer: UserId,
    pub amount: rendermart_types::Money,
}

impl Event for PaymentSucceeded {
    const TYPE: &'static str = "wallet.PaymentSucceeded";
    const VERSION: u32 = 1;
}

/// The order is not paid: nothing moved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub order_id: rendermart_orders_api::OrderId,
    pub buyer: UserId,
    /// A sentence the buyer can read, e.g. "insufficient credits: this order costs
    /// 12.00 USD and you have 5.00 USD available".
    pub reason: String,
}

impl Event for PaymentFailed {
    const TYPE: &'static str = "wallet.PaymentFailed";
    const VERSION: u32 = 1;
}
