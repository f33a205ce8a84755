//! The cart's contract with other services: the orders service reads a buyer's cart at
//! checkout, takes the ordered lines out of it, and puts them back if the order fails.
//! Prices are not part of it: whoever charges for a line asks the catalog, never the cart
//! (nor the client).

use rendermart_types::{Sku, UserId};
use serde::{Deserialize, Serialize};

/// The service's name.
pub const SERVICE: &str = "cart";

/// Name of the guest cart cookie (a random id the cart service made).
pub const GUEST_COOKIE: &str = "rm_cart";

/// `Set-Cookie` that removes the guest cart cookie, for a log-in that adopted its cart.
pub fn clear_guest_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{GUEST_COOKIE}=; HttpOnly; SameSite=Lax{secure}; Path=/; Max-Age=0")
}

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
    /// Takes `lines` out of the user's cart when an order of them is placed: each line's
    /// quantity drops by what was ordered (a line reaching zero goes). Calling it again for
    /// the same lines may remove more, so callers call it once per order.
    async fn remove_bought(&self, user: UserId, lines: &[CartLine]) -> Result<(), CartUnavailable>;
    /// Puts `lines` back into the user's cart when their order did not go through (summed
    /// with what the user added since, capped at the cart's maximum; a line that finds the
    /// cart full is dropped). Called once per failed order, like [`Self::remove_bought`].
    async fn give_back(&self, user: UserId, lines: &[CartLine]) -> Result<(), CartUnavailable>;
    /// Merges the guest cart named by `guest_cookie` (the `rm_cart` cookie's value) into
    /// the user's (summed, capped) and ends it: what log-in calls. A value that is not one
    /// of the cart's ids, or a guest without a cart, changes nothing.
    async fn adopt_guest_cart(
        &self,
        guest_cookie: &str,
        user: UserId,
    ) -> Result<(), CartUnavailable>;
}
