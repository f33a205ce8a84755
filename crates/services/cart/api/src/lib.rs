//! The cart's contract with other services: the orders service reads a buyer's cart at
//! checkout and empties it once the order is confirmed. Prices are not part of it: whoever
//! charges for a line asks the catalog, never the cart (nor the client).

use rendermart_types::{Sku, UserId};
use serde::{Deserialize, Serialize};

/// The service's name.
pub const SERVICE: &str = "cart";

/// One line of a cart: so many of one SKU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub sku: Sku,
    pub quantity: u32,
}

/// The cart could not answer (its store is down or slow): the caller should answer 503.
#[derive(Debug, thiserror::Error)]
#[error("the cart is unavailable: {0}")]
pub struct CartUnavailable(pub String);

/// How other services reach a signed-in user's cart: the service itself in process.
#[async_trait::async_trait]
pub trait CartApi: Send + Sync + 'static {
    /// The user's cart lines, oldest first (empty for no cart or an expired one).
    async fn lines(&self, user: UserId) -> Result<Vec<CartLine>, CartUnavailable>;
    /// Takes `lines` out of the user's cart after they were bought: each line's quantity
    /// drops by what was bought (a line reaching zero goes), so what the user added since
    /// the checkout stays. Calling it again for the same lines may remove more, so callers
    /// call it once per order.
    async fn remove_bought(&self, user: UserId, lines: &[CartLine]) -> Result<(), CartUnavailable>;
}
