//! The wallet's contract with other services: how it answers a request to hold credits.
//!
//! Studio asks for a hold by publishing `studio.GenerationRequested`; the wallet answers
//! with [`CreditsHeld`] or [`CreditsRefused`] (aggregate `hold:<generation id>`). The hold is
//! captured when the wallet applies `studio.ImageGenerated` (in the transaction that makes
//! the image an asset) and released when it applies `studio.GenerationFailed`.
//!
//! Other services ask it who owns an image through [`AssetsApi`] (the catalog, before it
//! lets someone sell prints of one).

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

/// The wallet could not answer (it runs elsewhere and is down or slow, or its database
/// failed): the caller should answer 503.
#[derive(Debug, thiserror::Error)]
#[error("the wallet is unavailable: {0}")]
pub struct WalletUnavailable(pub String);

/// How other services read the wallet's image assets: the service itself in process, or
/// [`RemoteAssets`] when the wallet runs elsewhere.
#[async_trait::async_trait]
pub trait AssetsApi: Send + Sync + 'static {
    /// Who owns the image now; `None` when the wallet has no such asset (never generated,
    /// or its `ImageGenerated` not applied yet).
    async fn owner_of(&self, asset: GenerationId) -> Result<Option<UserId>, WalletUnavailable>;
}

/// The wallet's internal route that answers [`AssetsApi::owner_of`]:
/// `/internal/wallet/v1/assets/{id}/owner`.
pub fn owner_path(asset: GenerationId) -> String {
    format!("/internal/wallet/v1/assets/{asset}/owner")
}

/// The body of [`owner_path`]'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerOf {
    /// `None`: no such asset.
    pub owner: Option<UserId>,
}

/// [`AssetsApi`] when the wallet runs in another process: one call to its internal route
/// through the platform's client (deadline, credential, retries, circuit breaker).
#[derive(Clone)]
pub struct RemoteAssets {
    client: rendermart_platform::client::ServiceClient,
}

impl RemoteAssets {
    pub fn new(client: rendermart_platform::client::ServiceClient) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl AssetsApi for RemoteAssets {
    async fn owner_of(&self, asset: GenerationId) -> Result<Option<UserId>, WalletUnavailable> {
        let answer: OwnerOf = self
            .client
            .get(&owner_path(asset))
            .await
            .map_err(|e| WalletUnavailable(e.to_string()))?;
        Ok(answer.owner)
    }
}
