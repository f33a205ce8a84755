//! [`Carts`]: the cart service's rules over its store. A line is a SKU and a quantity; it
//! is priced when the cart is read, from the catalog (price, title, on sale) and inventory
//! (available stock) — never from anything a client sent, and never stored. Adding checks
//! with the catalog that the SKU is on sale (a short, bounded cache in front of it keeps the
//! hot path to one store round trip); every change is one atomic step of the store.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rendermart_cart_api::{CartApi, CartLine, CartUnavailable};
use rendermart_catalog_api::{CatalogApi, ProductId, SkuOffer};
use rendermart_inventory_api::InventoryApi;
use rendermart_types::{Money, Sku, UserId};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    config::CartConfig,
    domain::{CartOwner, GuestId, Invalid, Limits, Quantity},
    store::{CartStore, Change, StoreError, StoredLine},
};

#[derive(Debug, thiserror::Error)]
pub enum CartError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The catalog does not sell this SKU (unknown, or its product is archived).
    #[error("no product on sale has SKU {0}")]
    UnknownSku(Sku),
    #[error("quantity would be more than {max} (the line holds {current})")]
    QuantityTooLarge { current: u32, max: u32 },
    #[error("the cart already holds {max} lines, the most one cart may hold")]
    TooManyLines { max: u32 },
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for CartError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::QuantityTooLarge { current, max } => {
                CartError::QuantityTooLarge { current, max }
            }
            StoreError::TooManyLines { max } => CartError::TooManyLines { max },
            StoreError::Unavailable(why) => CartError::Unavailable(why),
        }
    }
}

/// One line of a cart as the shopper sees it, priced now.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LineView {
    pub sku: Sku,
    pub quantity: u32,
    /// Absent when the catalog no longer knows the SKU.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub product_id: Option<ProductId>,
    pub title: Option<String>,
    /// The variant's name, e.g. `A3 matte`.
    pub variant: Option<String>,
    /// The catalog's price now.
    pub unit_price: Option<Money>,
    /// unit_price × quantity.
    pub line_total: Option<Money>,
    /// False once the product is archived (or unknown): the line is not in the total and
    /// cannot be checked out.
    pub on_sale: bool,
    /// Units inventory can still sell (absent when inventory does not stock the SKU or
    /// cannot be asked).
    pub available: Option<i64>,
    /// Whether inventory has at least this line's quantity.
    pub in_stock: bool,
}

/// A cart as the shopper sees it: lines oldest first, priced at read time.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CartView {
    pub lines: Vec<LineView>,
    /// The sum of the lines on sale; absent when no line is on sale.
    pub total: Option<Money>,
    /// Units in the cart (every line's quantity summed).
    pub count: u64,
}

/// A line after a change.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LineChanged {
    pub sku: Sku,
    /// What the line holds now.
    pub quantity: u32,
}

/// SKUs the catalog said are on sale, believed for a short while. Bounded: at most
/// [`SKU_CACHE_CAPACITY`] entries, only SKUs that are on sale (so a client naming random
/// SKUs cannot fill it), each for `ttl`.
struct OnSaleCache {
    ttl: Duration,
    entries: Mutex<HashMap<Sku, Instant>>,
}

const SKU_CACHE_CAPACITY: usize = 10_000;

impl OnSaleCache {
    fn knows(&self, sku: &Sku) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(sku).is_some_and(|at| at.elapsed() < self.ttl)
    }

    fn remember(&self, sku: &Sku) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= SKU_CACHE_CAPACITY {
            let ttl = self.ttl;
            entries.retain(|_, at| at.elapsed() < ttl);
            if entries.len() >= SKU_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(sku.clone(), Instant::now());
    }
}

pub struct Carts {
    store: Arc<dyn CartStore>,
    catalog: Arc<dyn CatalogApi>,
    inventory: Arc<dyn InventoryApi>,
    config: CartConfig,
    on_sale: OnSaleCache,
    cookie_secure: bool,
}

impl Carts {
    pub fn new(
        store: Arc<dyn CartStore>,
        catalog: Arc<dyn CatalogApi>,
        inventory: Arc<dyn InventoryApi>,
        config: CartConfig,
    ) -> anyhow::Result<Self> {
        config.check()?;
        Ok(Self {
            store,
            catalog,
            inventory,
            on_sale: OnSaleCache {
                ttl: Duration::from_millis(config.sku_cache_ms),
                entries: Mutex::new(HashMap::new()),
            },
            config,
            cookie_secure: false,
        })
    }

    /// Marks the guest cart cookie `Secure` (the site is served over HTTPS).
    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        self.cookie_secure = secure;
        self
    }

    pub fn cookie_secure(&self) -> bool {
        self.cookie_secure
    }

    pub fn config(&self) -> &CartConfig {
        &self.config
    }

    pub fn limits(&self) -> Limits {
        self.config.limits()
    }

    pub fn store(&self) -> &Arc<dyn CartStore> {
        &self.store
    }

    /// Refuses a SKU the catalog does not sell.
    async fn ensure_on_sale(&self, sku: &Sku) -> Result<(), CartError> {
        if self.on_sale.knows(sku) {
            return Ok(());
        }
        let offers = self
            .catalog
            .offers(std::slice::from_ref(sku))
            .await
            .map_err(|e| CartError::Unavailable(e.to_string()))?;
        if offers.iter().any(|o| &o.sku == sku && o.on_sale) {
            self.on_sale.remember(sku);
            Ok(())
        } else {
            Err(CartError::UnknownSku(sku.clone()))
        }
    }

    /// Adds `quantity` of `sku` to the cart (to its line if it has one).
    pub async fn add(
        &self,
        cart: &CartOwner,
        sku: &Sku,
        quantity: Quantity,
    ) -> Result<LineChanged, CartError> {
        self.ensure_on_sale(sku).await?;
        let quantity = self
            .store
            .change(cart, sku, Change::Add(quantity), self.limits())
            .await?;
        metrics::counter!("cart_changes_total", "change" => "add").increment(1);
        Ok(LineChanged {
            sku: sku.clone(),
            quantity,
        })
    }

    /// Makes the cart's line of `sku` hold exactly `quantity` (making the line if needed).
    pub async fn set(
        &self,
        cart: &CartOwner,
        sku: &Sku,
        quantity: Quantity,
    ) -> Result<LineChanged, CartError> {
        self.ensure_on_sale(sku).await?;
        let quantity = self
            .store
            .change(cart, sku, Change::Set(quantity), self.limits())
            .await?;
        metrics::counter!("cart_changes_total", "change" => "set").increment(1);
        Ok(LineChanged {
            sku: sku.clone(),
            quantity,
        })
    }

    /// Takes the line of `sku` out of the cart (whether or not it is still sold).
    pub async fn remove(&self, cart: &CartOwner, sku: &Sku) -> Result<(), CartError> {
        self.store.remove(cart, sku).await?;
        metrics::counter!("cart_changes_total", "change" => "remove").increment(1);
        Ok(())
    }

    pub async fn clear(&self, cart: &CartOwner) -> Result<(), CartError> {
        self.store.clear(cart).await?;
        Ok(())
    }

    /// Adds the guest's cart into the user's (summed, capped) and deletes the guest's.
    pub async fn adopt(&self, guest: &GuestId, user: UserId) -> Result<(), CartError> {
        self.store
            .merge(
                &CartOwner::Guest(guest.clone()),
                &CartOwner::User(user),
                self.limits(),
            )
            .await?;
        metrics::counter!("cart_merges_total").increment(1);
        Ok(())
    }

    /// The cart, priced now by the catalog, with inventory's availability.
    pub async fn view(&self, cart: Option<&CartOwner>) -> Result<CartView, CartError> {
        let lines = match cart {
            Some(cart) => self.store.lines(cart).await?,
            None => Vec::new(),
        };
        if lines.is_empty() {
            return Ok(CartView {
                lines: Vec::new(),
                total: None,
                count: 0,
            });
        }
        let skus: Vec<Sku> = lines.iter().map(|l| l.sku.clone()).collect();
        let offers: HashMap<Sku, SkuOffer> = self
            .catalog
            .offers(&skus)
            .await
            .map_err(|e| CartError::Unavailable(e.to_string()))?
            .into_iter()
            .map(|o| (o.sku.clone(), o))
            .collect();
        // Availability is a hint on the cart page: without inventory the cart still shows.
        let levels: HashMap<Sku, i64> = match self.inventory.levels(&skus).await {
            Ok(levels) => levels.into_iter().map(|l| (l.sku, l.available)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cart shown without availability");
                HashMap::new()
            }
        };
        Ok(price(lines, &offers, &levels))
    }
}

/// Prices stored lines from the catalog's offers: a line not on sale is shown but left out
/// of the total.
fn price(
    lines: Vec<StoredLine>,
    offers: &HashMap<Sku, SkuOffer>,
    levels: &HashMap<Sku, i64>,
) -> CartView {
    let mut total: Option<Money> = None;
    let mut count = 0u64;
    let mut views = Vec::with_capacity(lines.len());
    for line in lines {
        count += u64::from(line.quantity);
        let offer = offers.get(&line.sku);
        let on_sale = offer.is_some_and(|o| o.on_sale);
        let line_total = offer.and_then(|o| o.price.checked_mul(i64::from(line.quantity)).ok());
        if on_sale {
            if let Some(lt) = line_total {
                total = match total {
                    None => Some(lt),
                    Some(t) => Some(t.checked_add(lt).unwrap_or(t)),
                };
            }
        }
        let available = levels.get(&line.sku).copied();
        views.push(LineView {
            product_id: offer.map(|o| o.product_id),
            title: offer.map(|o| o.title.clone()),
            variant: offer.map(|o| o.variant.clone()),
            unit_price: offer.map(|o| o.price),
            line_total,
            on_sale,
            in_stock: available.is_some_and(|a| a >= i64::from(line.quantity)),
            available,
            quantity: line.quantity,
            sku: line.sku,
        });
    }
    CartView {
        lines: views,
        total,
        count,
    }
}

fn unavailable(e: CartError) -> CartUnavailable {
    CartUnavailable(e.to_string())
}

#[async_trait::async_trait]
impl CartApi for Carts {
    async fn lines(&self, user: UserId) -> Result<Vec<CartLine>, CartUnavailable> {
        let lines = self
            .store
            .lines(&CartOwner::User(user))
            .await
            .map_err(|e| unavailable(e.into()))?;
        Ok(lines
            .into_iter()
            .map(|l| CartLine {
                sku: l.sku,
                quantity: l.quantity,
            })
            .collect())
    }

    async fn remove_bought(&self, user: UserId, lines: &[CartLine]) -> Result<(), CartUnavailable> {
        let lines = stored(lines);
        self.store
            .take(&CartOwner::User(user), &lines)
            .await
            .map_err(|e| unavailable(e.into()))
    }

    async fn give_back(&self, user: UserId, lines: &[CartLine]) -> Result<(), CartUnavailable> {
        let lines = stored(lines);
        self.store
            .give(&CartOwner::User(user), &lines, self.limits())
            .await
            .map_err(|e| unavailable(e.into()))
    }

    async fn adopt_guest_cart(
        &self,
        guest_cookie: &str,
        user: UserId,
    ) -> Result<(), CartUnavailable> {
        match crate::domain::GuestId::parse(guest_cookie) {
            Some(guest) => self.adopt(&guest, user).await.map_err(unavailable),
            None => Ok(()),
        }
    }
}

/// Another service's lines as the store keeps them (a line of zero changes nothing).
fn stored(lines: &[CartLine]) -> Vec<StoredLine> {
    lines
        .iter()
        .filter(|l| l.quantity > 0)
        .map(|l| StoredLine {
            sku: l.sku.clone(),
            quantity: l.quantity,
        })
        .collect()
}
