//! The few types every RenderMart service shares, and nothing else.
//!
//! * [`ids`]: one UUID v7 newtype per entity ([`entity_id!`]), stored and decoded by sqlx
//!   directly, described in OpenAPI as `uuid` strings; [`ids::UserId`] lives here because
//!   every service names users.
//! * [`money`]: [`Money`] is an integer number of minor units plus a [`Currency`]; there is
//!   no float anywhere, and arithmetic is checked.
//! * [`sku`]: [`Sku`], a product variant's stock-keeping unit (catalog, inventory, carts and
//!   orders name them);
//! * [`secret`]: [`Secret`] and [`SecretUrl`] for configuration values that must never be
//!   printed: they redact themselves in `Debug`, `Display` and `Serialize` (so in
//!   `rendermart config` and in logs) and hand out the value only through `expose()`.
//!
//! This crate is deliberately small: a type belongs here only when two services must agree
//! on it. A service's own types stay in its crate.

// Lets `entity_id!` name this crate the same way inside it as in its users.
extern crate self as rendermart_types;

pub mod ids;
pub mod money;
pub mod secret;
pub mod sku;

pub use ids::UserId;
pub use money::{AmountTextError, Currency, Money, MoneyError};
pub use secret::{Secret, SecretUrl};
pub use sku::{Sku, SkuError};

#[doc(hidden)]
pub mod __private {
    //! Re-exports for [`entity_id!`](crate::entity_id) expansions in other crates.
    pub use serde;
    pub use sqlx;
    pub use utoipa;
    pub use uuid;
}
