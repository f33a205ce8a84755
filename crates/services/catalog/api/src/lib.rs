//! The catalog's contract with other services: the id of a product and the events the
//! catalog publishes about products (aggregate `product:<id>`, in order per product).
//!
//! Every event carries the product's sellable state as it is after the change (its SKUs
//! with their prices), so a consumer (inventory, recommendations, search elsewhere) can
//! keep a projection from events alone without calling back.

use rendermart_platform::events::Event;
use rendermart_studio_api::GenerationId;
use rendermart_types::{Money, Sku, UserId};
use serde::{Deserialize, Serialize};

/// The service's name.
pub const SERVICE: &str = "catalog";

/// The aggregate kind of the catalog's events: `product:<id>`.
pub const PRODUCT_AGGREGATE: &str = "product";

rendermart_types::entity_id!(
    /// A product of the store (a print of an image, a book, goods).
    ProductId
);

/// One sellable variant, as events describe it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantSnapshot {
    pub sku: Sku,
    /// e.g. `A3 matte`.
    pub name: String,
    pub price: Money,
}

/// A product as events describe it after the change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductSnapshot {
    pub product_id: ProductId,
    pub seller_id: UserId,
    /// `print`, `book` or `goods`.
    pub kind: String,
    pub title: String,
    /// The category's slug.
    pub category: String,
    pub tags: Vec<String>,
    /// The image a print is made of (an asset in the wallet).
    pub asset_id: Option<GenerationId>,
    pub variants: Vec<VariantSnapshot>,
}

/// A product was created and is on sale.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductListed {
    #[serde(flatten)]
    pub product: ProductSnapshot,
}

impl Event for ProductListed {
    const TYPE: &'static str = "catalog.ProductListed";
    const VERSION: u32 = 1;
}

/// A product on sale was edited (its text, tags, category, or its variants: SKUs no
/// longer listed here are no longer sold).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductUpdated {
    #[serde(flatten)]
    pub product: ProductSnapshot,
}

impl Event for ProductUpdated {
    const TYPE: &'static str = "catalog.ProductUpdated";
    const VERSION: u32 = 1;
}

/// A product was archived: none of its SKUs is sold any more (it stays readable by id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDelisted {
    pub product_id: ProductId,
    pub seller_id: UserId,
    /// The SKUs that stopped being sold.
    pub skus: Vec<Sku>,
}

impl Event for ProductDelisted {
    const TYPE: &'static str = "catalog.ProductDelisted";
    const VERSION: u32 = 1;
}

/// A variant as the store sells it now: what a cart prices and a checkout charges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuOffer {
    pub sku: Sku,
    pub product_id: ProductId,
    /// `print`, `book` or `goods`: all are physical and need a shipping address.
    pub kind: String,
    /// The product's title.
    pub title: String,
    /// The variant's name, e.g. `A3 matte`.
    pub variant: String,
    pub price: Money,
    pub seller_id: UserId,
    /// The image a print is made of: its creator earns the royalty on each print sold.
    pub asset_id: Option<GenerationId>,
    /// False once the product is archived: it can no longer be bought.
    pub on_sale: bool,
}

/// The catalog could not answer (it runs elsewhere and is down or slow, or its database
/// failed): the caller should answer 503.
#[derive(Debug, thiserror::Error)]
#[error("the catalog is unavailable: {0}")]
pub struct CatalogUnavailable(pub String);

/// How other services (cart, orders) read the catalog: the service itself in process.
#[async_trait::async_trait]
pub trait CatalogApi: Send + Sync + 'static {
    /// The variants of `skus` the catalog knows (archived ones with `on_sale: false`), in
    /// no particular order; a SKU it does not know is absent.
    async fn offers(&self, skus: &[Sku]) -> Result<Vec<SkuOffer>, CatalogUnavailable>;
}
