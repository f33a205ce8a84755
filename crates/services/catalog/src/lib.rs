//! Catalog: what the store sells. Products (a print of an image, a book, goods) with
//! variants (a print: size and paper; a book: format), a SKU and a price per variant,
//! images, a category, tags and a seller; and the search over them. Its public face:
//!
//! * [`CatalogService`] — the [`Service`] the binary lists: migrations, the `[catalog]`
//!   section ([`CatalogConfig`]), routes under `/api/v1/products` and their OpenAPI;
//! * [`api`] — create (sellers and admins), edit and archive (the product's seller or an
//!   admin), read by id or SKU, and search with facets and cursor pages;
//! * the store's pages (`/store`, `/store/search`, `/store/c/{category}`,
//!   `/store/p/{id_or_sku}`) in the site's frame, with "Add to cart" forms for the cart;
//! * [`search`] — the full-text engines (SQLite FTS5, PostgreSQL `tsvector`), the one
//!   place their SQL differs, and the portable rank both share (`docs/search.md`);
//! * [`domain`] — the rules, free of HTTP and SQL.
//!
//! It publishes `catalog.ProductListed`, `ProductUpdated` and `ProductDelisted`
//! (`rendermart-catalog-api`) in the transaction of each change, and consumes inventory's
//! `StockOut` and `StockAvailable` ([`stock_in`], consumer `catalog.stock`) to keep each
//! variant's `in_stock` flag, which search filters on. A variant is out of stock until
//! inventory says otherwise (decision 55).
//!
//! A print that names an image (`asset_id`) is created only by the image's current owner,
//! asked of the wallet's `AssetsApi` (decision 59); the wallet pays the image's creator
//! the royalty on each print sold when the order ships.
//!
//! Not done yet:
//!
//! * following `AssetSold`: a print listed before its image was sold stays its old
//!   owner's. The check is made when a print is created; `asset_id` cannot be edited.
//!
pub mod api;
pub mod domain;
mod pages;
pub mod search;
pub mod stock_in;
pub mod store;

use std::sync::Arc;

use anyhow::Context as _;
use rendermart_platform::{
    consumer::Consumer,
    service::{Context, Service, Started},
};
use rendermart_types::Currency;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The catalog's settings (`[catalog]` in `rendermart.toml`, `RENDERMART_CATALOG__*`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// ISO 4217 code every price is in: the wallet's currency.
    pub currency: String,
    /// Most variants a product may have (1–100).
    pub max_variants: usize,
    /// Highest variant price, in minor units.
    pub max_price: i64,
    /// Products per search page when the client does not say (1–100).
    pub page_size: u32,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            currency: "USD".into(),
            max_variants: 20,
            max_price: 100_000_000,
            page_size: 20,
        }
    }
}

impl CatalogConfig {
    fn rules(&self) -> anyhow::Result<domain::Rules> {
        let currency = Currency::parse(&self.currency).context("catalog.currency")?;
        anyhow::ensure!(
            (1..=100).contains(&self.max_variants),
            "catalog.max_variants must be 1 to 100"
        );
        anyhow::ensure!(self.max_price >= 1, "catalog.max_price must be at least 1");
        anyhow::ensure!(
            (1..=domain::LIMIT_MAX).contains(&self.page_size),
            "catalog.page_size must be 1 to 100"
        );
        Ok(domain::Rules {
            currency,
            max_price: self.max_price,
            max_variants: self.max_variants,
        })
    }
}

/// The catalog service, as the binary starts it.
pub struct CatalogService;

impl Service for CatalogService {
    const NAME: &'static str = rendermart_catalog_api::SERVICE;
    const USES: &'static [&'static str] = &["wallet"];
    type Config = CatalogConfig;

    fn migrations() -> Option<&'static sqlx::migrate::Migrator> {
        Some(&MIGRATOR)
    }

    async fn start(ctx: Context<CatalogConfig>) -> anyhow::Result<Started> {
        let rules = ctx.config.rules()?;
        let db = ctx.db()?;
        let assets = ctx
            .clients
            .require::<dyn rendermart_wallet_api::AssetsApi>("wallet")?;
        search::install(&db)
            .await
            .context("making the catalog's full-text index")?;
        // One catalog, cloned: its clones share the short memory of reads and its version.
        let catalog = store::Catalog::new(db.clone(), rules.currency, ctx.config.page_size);
        ctx.clients
            .provide::<dyn rendermart_catalog_api::CatalogApi>(Arc::new(catalog.clone()));
        let stock = stock_in::StockIn(catalog.changes());
        let pages = pages::router(
            Arc::new(catalog.clone()),
            ctx.clients.clone(),
            rendermart_web::csrf::FormKey::for_process(ctx.shared.service_secret.as_ref()),
            ctx.shared.cookie_secure,
        );
        let api = Arc::new(api::CatalogApi {
            catalog,
            rules,
            assets,
        });
        Ok(Started {
            routes: api::router(api).merge(pages),
            openapi: Some(api::CatalogApiDoc::openapi()),
            consumers: vec![Consumer::new(db, "catalog.stock", stock)?.into()],
            ..Started::default()
        })
    }
}
