//! The catalog's storage and operations: products, their variants and tags, written with
//! their event in one transaction, and the search (filters, rank, facets, cursor pages).
//! Portable SQL; the full-text condition comes from [`crate::search::Engine`].

use std::{
    collections::BTreeMap,
    ops::Deref,
    sync::{Arc, OnceLock},
};

use axum::body::Bytes;

use rendermart_catalog_api::{
    ProductDelisted, ProductId, ProductListed, ProductSnapshot, ProductUpdated, VariantSnapshot,
    PRODUCT_AGGREGATE,
};
use rendermart_platform::{
    clock,
    db::{is_unique_violation, Db},
    events::{Envelope, Event},
    outbox,
    recent::{Changes, Recent, Weigh},
};
use rendermart_studio_api::GenerationId;
use rendermart_types::{Currency, Money, Sku, UserId};
use serde::Serialize;
use sqlx::{Any, AnyConnection, FromRow, Transaction};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::{
    domain::{Cursor, Invalid, PrintRefused, ProductDraft, Search, Sort},
    search::Engine,
};

/// Why a catalog request was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Only sellers and admins create products; only a product's seller or an admin
    /// changes it.
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    /// Someone other than the image's current owner tried to sell prints of it.
    #[error("the image belongs to someone else")]
    NotImageOwner,
    #[error("not found")]
    NotFound,
    #[error("sku {0} is taken")]
    SkuTaken(String),
    #[error("the product is archived")]
    Archived,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl From<PrintRefused> for CatalogError {
    fn from(refused: PrintRefused) -> Self {
        match refused {
            PrintRefused::NoSuchImage => {
                CatalogError::Invalid(Invalid::new("asset_id", "is not an image in the wallet"))
            }
            PrintRefused::NotTheOwner => CatalogError::NotImageOwner,
        }
    }
}

impl From<rendermart_wallet_api::WalletUnavailable> for CatalogError {
    fn from(e: rendermart_wallet_api::WalletUnavailable) -> Self {
        CatalogError::Unavailable(e.to_string())
    }
}

impl From<sqlx::Error> for CatalogError {
    fn from(e: sqlx::Error) -> Self {
        if rendermart_platform::db::is_transient(&e) {
            CatalogError::Unavailable(e.to_string())
        } else {
            CatalogError::Internal(e.into())
        }
    }
}

/// A product as anyone sees it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Product {
    pub id: ProductId,
    pub seller_id: UserId,
    /// `print`, `book` or `goods`.
    pub kind: String,
    pub title: String,
    pub description: String,
    /// The category's slug.
    pub category: String,
    pub tags: Vec<String>,
    /// Links to its pictures.
    pub images: Vec<String>,
    /// The image (a wallet asset) a print is made of.
    pub asset_id: Option<GenerationId>,
    /// `active` (on sale, found by search) or `archived` (readable by id only).
    pub status: String,
    /// The lowest and the highest variant price.
    pub price: PriceRange,
    pub variants: Vec<Variant>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PriceRange {
    pub min: Money,
    pub max: Money,
}

/// One sellable variant.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Variant {
    pub sku: Sku,
    /// e.g. `A3 matte`.
    pub name: String,
    /// e.g. `{"size": "A3", "paper": "matte"}`.
    pub options: BTreeMap<String, String>,
    pub price: Money,
    /// Whether it can be ordered now, as inventory last said (`StockAvailable` /
    /// `StockOut`). A variant whose SKU was never stocked is not in stock.
    pub in_stock: bool,
}

/// One page of search results.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<Product>,
    /// Pass as `cursor` (with the same search) for the next page; absent on the last.
    pub next_cursor: Option<String>,
    /// Counts over every product the search matches (not only this page).
    pub facets: Facets,
}

/// A search's page, and its JSON once someone asked for it (made once per remembered
/// search, not once per request).
#[derive(Debug)]
pub struct Found {
    page: ProductPage,
    json: OnceLock<Bytes>,
}

impl Found {
    pub fn json(&self) -> Result<Bytes, CatalogError> {
        if let Some(json) = self.json.get() {
            return Ok(json.clone());
        }
        let json = Bytes::from(serde_json::to_vec(&self.page).map_err(anyhow::Error::from)?);
        Ok(self.json.get_or_init(|| json).clone())
    }
}

impl Deref for Found {
    type Target = ProductPage;

    fn deref(&self) -> &ProductPage {
        &self.page
    }
}

#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct Facets {
    /// How many products match in all.
    pub total: i64,
    /// Most frequent first (at most 50).
    pub category: Vec<FacetCount>,
    /// Most frequent first (at most 50).
    pub tag: Vec<FacetCount>,
    pub price: PriceFacet,
}

#[derive(Clone, Debug, Serialize, ToSchema, FromRow, PartialEq, Eq)]
pub struct FacetCount {
    pub value: String,
    pub count: i64,
}

/// The lowest and highest price among the matches (minor units); absent with no match.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct PriceFacet {
    pub min: Option<i64>,
    pub max: Option<i64>,
}

/// Most values a facet lists.
const FACET_VALUES_MAX: i64 = 50;

#[derive(FromRow)]
struct ProductRow {
    id: ProductId,
    seller_id: UserId,
    kind: String,
    title: String,
    description: String,
    category: String,
    images: String,
    asset_id: Option<GenerationId>,
    status: String,
    currency: String,
    min_price: i64,
    max_price: i64,
    created_at: i64,
    updated_at: i64,
    score: i64,
}

const PRODUCT_COLUMNS: &str = "p.id, p.seller_id, p.kind, p.title, p.description, p.category, \
     p.images, p.asset_id, p.status, p.currency, p.min_price, p.max_price, p.created_at, \
     p.updated_at";

#[derive(FromRow)]
struct VariantRow {
    product_id: ProductId,
    sku: Sku,
    name: String,
    options: String,
    price: i64,
    in_stock: i64,
}

/// A value bound to a query built at run time.
enum Bind {
    Text(String),
    Int(i64),
}

/// SQL text with numbered parameters, and their values in order.
#[derive(Default)]
struct Sql {
    binds: Vec<Bind>,
}

impl Sql {
    fn text(&mut self, v: impl Into<String>) -> String {
        self.binds.push(Bind::Text(v.into()));
        format!("${}", self.binds.len())
    }
    fn int(&mut self, v: i64) -> String {
        self.binds.push(Bind::Int(v));
        format!("${}", self.binds.len())
    }
}

fn bound<'q, O>(
    mut q: sqlx::query::QueryAs<'q, Any, O, sqlx::any::AnyArguments<'q>>,
    binds: &'q [Bind],
) -> sqlx::query::QueryAs<'q, Any, O, sqlx::any::AnyArguments<'q>> {
    for b in binds {
        q = match b {
            Bind::Text(t) => q.bind(t.as_str()),
            Bind::Int(i) => q.bind(*i),
        };
    }
    q
}

/// The catalog's operations. Clones share their short memory of reads ([`rendermart_platform::recent`]):
/// make one and clone it for every user in the process.
#[derive(Clone)]
pub struct Catalog {
    db: Db,
    engine: Engine,
    currency: Currency,
    default_limit: u32,
    recent: Arc<Memory>,
}

/// What [`Catalog`] remembers of its reads, and the version that makes it stale.
#[derive(Default)]
struct Memory {
    changes: Changes,
    searches: Recent<Search, Found>,
    products: Recent<ProductKey, Product>,
}

/// How a reader names a product.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProductKey {
    Id(ProductId),
    Sku(Sku),
}

impl Catalog {
    pub fn new(db: Db, currency: Currency, default_limit: u32) -> Self {
        Self {
            engine: Engine::of(&db),
            db,
            currency,
            default_limit,
            recent: Arc::default(),
        }
    }

    /// Bumped by every change to the catalog in this process; the stock consumer bumps it
    /// too.
    pub fn changes(&self) -> Changes {
        self.recent.changes.clone()
    }

    /// The currency every price is in.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn default_limit(&self) -> u32 {
        self.default_limit
    }

    /// Creates a product of `seller`'s, with its variants and tags, and `ProductListed`.
    pub async fn create(
        &self,
        seller: UserId,
        draft: ProductDraft,
    ) -> Result<Product, CatalogError> {
        let id = ProductId::new();
        let now = clock::now_micros();
        let (min, max) = draft.variants.price_range();
        let mut tx = self.db.begin().await?;
        ensure_skus_free(&mut tx, &draft, None).await?;
        sqlx::query(
            "INSERT INTO products (id, seller_id, kind, title, description, category, images, \
             asset_id, status, currency, min_price, max_price, title_terms, tag_terms, \
             search_text, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10, $11, $12, $13, $14, $15, $15)",
        )
        .bind(id)
        .bind(seller)
        .bind(draft.kind.as_str())
        .bind(draft.title.as_str())
        .bind(draft.description.as_str())
        .bind(draft.category.as_str())
        .bind(json(draft.images.as_slice())?)
        .bind(draft.asset_id)
        .bind(self.currency.code())
        .bind(min)
        .bind(max)
        .bind(draft.title_terms())
        .bind(draft.tag_terms())
        .bind(draft.search_text())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        write_children(&mut tx, id, &draft).await?;
        let snapshot = self.snapshot(id, seller, &draft);
        enqueue(&mut tx, id, &ProductListed { product: snapshot }).await?;
        tx.commit().await?;
        self.recent.changes.bump();
        self.db.outbox_committed();
        metrics::counter!("catalog_products_listed_total").increment(1);
        self.product(id).await
    }

    /// Replaces an active product's fields (and, when given, its variants) by
    /// `caller`'s edit, with `ProductUpdated`.
    pub async fn update(
        &self,
        id: ProductId,
        may_edit: impl FnOnce(UserId) -> Result<(), CatalogError>,
        edit: impl FnOnce(&Product) -> Result<ProductDraft, CatalogError>,
    ) -> Result<Product, CatalogError> {
        let current = self.product(id).await?;
        may_edit(current.seller_id)?;
        if current.status != "active" {
            return Err(CatalogError::Archived);
        }
        let draft = edit(&current)?;
        let (min, max) = draft.variants.price_range();
        let mut tx = self.db.begin().await?;
        ensure_skus_free(&mut tx, &draft, Some(id)).await?;
        let changed = sqlx::query(
            "UPDATE products SET title = $1, description = $2, category = $3, images = $4, \
             min_price = $5, max_price = $6, title_terms = $7, tag_terms = $8, search_text = $9, \
             updated_at = $10 WHERE id = $11 AND status = 'active'",
        )
        .bind(draft.title.as_str())
        .bind(draft.description.as_str())
        .bind(draft.category.as_str())
        .bind(json(draft.images.as_slice())?)
        .bind(min)
        .bind(max)
        .bind(draft.title_terms())
        .bind(draft.tag_terms())
        .bind(draft.search_text())
        .bind(clock::now_micros())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            return Err(CatalogError::Archived);
        }
        for table in ["variants", "product_tags"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE product_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        write_children(&mut tx, id, &draft).await?;
        let snapshot = self.snapshot(id, current.seller_id, &draft);
        enqueue(&mut tx, id, &ProductUpdated { product: snapshot }).await?;
        tx.commit().await?;
        self.recent.changes.bump();
        self.db.outbox_committed();
        self.product(id).await
    }

    /// Archives a product (hidden from search, still readable by id) with
    /// `ProductDelisted`. Archiving an archived product changes nothing.
    pub async fn archive(
        &self,
        id: ProductId,
        may_edit: impl FnOnce(UserId) -> Result<(), CatalogError>,
    ) -> Result<Product, CatalogError> {
        let current = self.product(id).await?;
        may_edit(current.seller_id)?;
        let mut tx = self.db.begin().await?;
        let changed = sqlx::query(
            "UPDATE products SET status = 'archived', updated_at = $1 \
             WHERE id = $2 AND status = 'active'",
        )
        .bind(clock::now_micros())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            let delisted = ProductDelisted {
                product_id: id,
                seller_id: current.seller_id,
                skus: current.variants.iter().map(|v| v.sku.clone()).collect(),
            };
            enqueue(&mut tx, id, &delisted).await?;
            tx.commit().await?;
            self.recent.changes.bump();
            self.db.outbox_committed();
            metrics::counter!("catalog_products_delisted_total").increment(1);
        }
        self.product(id).await
    }

    fn snapshot(&self, id: ProductId, seller: UserId, draft: &ProductDraft) -> ProductSnapshot {
        ProductSnapshot {
            product_id: id,
            seller_id: seller,
            kind: draft.kind.as_str().to_owned(),
            title: draft.title.as_str().to_owned(),
            category: draft.category.as_str().to_owned(),
            tags: draft.tags.to_strings(),
            asset_id: draft.asset_id,
            variants: draft
                .variants
                .iter()
                .map(|v| VariantSnapshot {
                    sku: v.sku.clone(),
                    name: v.name.clone(),
                    price: v.price.money(),
                })
                .collect(),
        }
    }

    /// A product by id, active or archived.
    pub async fn product(&self, id: ProductId) -> Result<Product, CatalogError> {
        let mut conn = self.db.pool().acquire().await?;
        let row: Option<ProductRow> = sqlx::query_as(&format!(
            "SELECT {PRODUCT_COLUMNS}, CAST(0 AS BIGINT) AS score FROM products p WHERE p.id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        let row = row.ok_or(CatalogError::NotFound)?;
        let mut products = self.assemble(&mut conn, vec![row]).await?;
        products.pop().ok_or(CatalogError::NotFound)
    }

    /// The product one of whose variants has `sku`, active or archived.
    pub async fn product_by_sku(&self, sku: &Sku) -> Result<Product, CatalogError> {
        let id: Option<ProductId> = {
            let mut conn = self.db.pool().acquire().await?;
            sqlx::query_scalar("SELECT product_id FROM variants WHERE sku = $1")
                .bind(sku)
                .fetch_optional(&mut *conn)
                .await?
        };
        self.product(id.ok_or(CatalogError::NotFound)?).await
    }

    /// A product by id or SKU, active or archived, for readers (the API's `GET`, the
    /// product page): as read at most [`rendermart_platform::recent::TTL`] ago, or after this process's
    /// last change. Writers read [`Catalog::product`].
    pub async fn lookup(&self, key: ProductKey) -> Result<Arc<Product>, CatalogError> {
        let version = self.recent.changes.version();
        if let Some(product) = self.recent.products.get(&key, version) {
            return Ok(product);
        }
        let product = Arc::new(match &key {
            ProductKey::Id(id) => self.product(*id).await?,
            ProductKey::Sku(sku) => self.product_by_sku(sku).await?,
        });
        self.recent.products.put(key, version, product.clone());
        Ok(product)
    }

    /// Active products matching `search`: one page in its order, and facets over all the
    /// matches. As read at most [`rendermart_platform::recent::TTL`] ago, or after this process's last
    /// change.
    pub async fn search(&self, search: &Search) -> Result<Arc<Found>, CatalogError> {
        let version = self.recent.changes.version();
        if let Some(page) = self.recent.searches.get(search, version) {
            return Ok(page);
        }
        let page = Arc::new(Found {
            page: self.search_now(search).await?,
            json: OnceLock::new(),
        });
        self.recent
            .searches
            .put(search.clone(), version, page.clone());
        Ok(page)
    }

    async fn search_now(&self, search: &Search) -> Result<ProductPage, CatalogError> {
        let mut sql = Sql::default();
        let filters = self.filters(&mut sql, search);
        let filter_binds = sql.binds.len();
        let score = match &search.terms {
            Some(terms) => {
                let patterns: Vec<String> = terms.like_patterns().collect();
                terms.score_sql(|i| sql.text(patterns[i].clone()))
            }
            None => "CAST(0 AS BIGINT)".to_owned(),
        };
        let mut conn = self.db.pool().acquire().await?;

        // The facets, over every match.
        let (total, min, max): (i64, Option<i64>, Option<i64>) = bound(
            sqlx::query_as(&format!(
                "SELECT CAST(COUNT(*) AS BIGINT), MIN(p.min_price), MAX(p.max_price) \
                 FROM products p WHERE {filters}"
            )),
            &sql.binds[..filter_binds],
        )
        .fetch_one(&mut *conn)
        .await?;
        let mut category: Vec<FacetCount> = bound(
            sqlx::query_as(&format!(
                "SELECT p.category AS value, CAST(COUNT(*) AS BIGINT) AS count FROM products p \
                 WHERE {filters} GROUP BY p.category ORDER BY COUNT(*) DESC, p.category \
                 LIMIT {FACET_VALUES_MAX}"
            )),
            &sql.binds[..filter_binds],
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut tag: Vec<FacetCount> = bound(
            sqlx::query_as(&format!(
                "SELECT t.tag AS value, CAST(COUNT(*) AS BIGINT) AS count \
                 FROM product_tags t JOIN products p ON p.id = t.product_id \
                 WHERE {filters} GROUP BY t.tag ORDER BY COUNT(*) DESC, t.tag \
                 LIMIT {FACET_VALUES_MAX}"
            )),
            &sql.binds[..filter_binds],
        )
        .fetch_all(&mut *conn)
        .await?;
        // Ties in byte order, whatever the database's collation.
        for facet in [&mut category, &mut tag] {
            facet.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        }

        // The page.
        let (after, order) = match (&search.cursor, search.sort) {
            (None, Sort::Newest) => (String::new(), "s.id DESC"),
            (None, Sort::Price) => (String::new(), "s.min_price, s.id"),
            (None, Sort::Relevance) => (String::new(), "s.score DESC, s.id DESC"),
            (Some(Cursor::Newest { id }), _) => (
                format!("WHERE s.id < {}", sql.text(id.clone())),
                "s.id DESC",
            ),
            (Some(Cursor::Price { price, id }), _) => {
                let (p, i) = (sql.int(*price), sql.text(id.clone()));
                (
                    format!("WHERE (s.min_price > {p} OR (s.min_price = {p} AND s.id > {i}))"),
                    "s.min_price, s.id",
                )
            }
            (Some(Cursor::Relevance { score, id }), _) => {
                let (sc, i) = (sql.int(*score), sql.text(id.clone()));
                (
                    format!("WHERE (s.score < {sc} OR (s.score = {sc} AND s.id < {i}))"),
                    "s.score DESC, s.id DESC",
                )
            }
        };
        let limit = sql.int(i64::from(search.limit) + 1);
        let mut rows: Vec<ProductRow> = bound(
            sqlx::query_as(&format!(
                "SELECT * FROM (SELECT {PRODUCT_COLUMNS}, {score} AS score FROM products p \
                 WHERE {filters}) s {after} ORDER BY {order} LIMIT {limit}"
            )),
            &sql.binds,
        )
        .fetch_all(&mut *conn)
        .await?;
        let more = rows.len() > search.limit as usize;
        rows.truncate(search.limit as usize);
        let next_cursor = rows.last().filter(|_| more).map(|last| {
            let id = last.id.to_string();
            match search.sort {
                Sort::Newest => Cursor::Newest { id },
                Sort::Price => Cursor::Price {
                    price: last.min_price,
                    id,
                },
                Sort::Relevance => Cursor::Relevance {
                    score: last.score,
                    id,
                },
            }
            .to_string()
        });
        let items = self.assemble(&mut conn, rows).await?;
        Ok(ProductPage {
            items,
            next_cursor,
            facets: Facets {
                total,
                category,
                tag,
                price: PriceFacet { min, max },
            },
        })
    }

    /// The search's conditions on `p` (active, words, category, tag, price, stock).
    fn filters(&self, sql: &mut Sql, search: &Search) -> String {
        let mut conditions = vec!["p.status = 'active'".to_owned()];
        if let Some(terms) = &search.terms {
            let param = sql.text(self.engine.query(terms));
            conditions.push(self.engine.matches_sql(&param));
        }
        if let Some(category) = &search.category {
            conditions.push(format!("p.category = {}", sql.text(category.as_str())));
        }
        if let Some(tag) = &search.tag {
            conditions.push(format!(
                "EXISTS (SELECT 1 FROM product_tags t0 WHERE t0.product_id = p.id AND t0.tag = {})",
                sql.text(tag.as_str())
            ));
        }
        // A product qualifies when one variant is in the price range (and in stock, if
        // asked): the one a buyer would pick.
        let mut variant = Vec::new();
        if let Some(min) = search.min_price {
            variant.push(format!("v.price >= {}", sql.int(min)));
        }
        if let Some(max) = search.max_price {
            variant.push(format!("v.price <= {}", sql.int(max)));
        }
        if search.in_stock {
            variant.push("v.in_stock = 1".to_owned());
        }
        if !variant.is_empty() {
            conditions.push(format!(
                "EXISTS (SELECT 1 FROM variants v WHERE v.product_id = p.id AND {})",
                variant.join(" AND ")
            ));
        }
        conditions.join(" AND ")
    }

    /// Products from their rows, with their variants and tags (two queries for the lot;
    /// the ids are ours, at most a page of them).
    async fn assemble(
        &self,
        conn: &mut AnyConnection,
        rows: Vec<ProductRow>,
    ) -> Result<Vec<Product>, CatalogError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let params: Vec<String> = (1..=rows.len()).map(|i| format!("${i}")).collect();
        let list = params.join(", ");
        let variants_sql = format!(
            "SELECT product_id, sku, name, options, price, in_stock FROM variants \
             WHERE product_id IN ({list}) ORDER BY product_id, position"
        );
        let mut variants_q = sqlx::query_as::<_, VariantRow>(&variants_sql);
        for r in &rows {
            variants_q = variants_q.bind(r.id);
        }
        let variant_rows = variants_q.fetch_all(&mut *conn).await?;
        let tags_sql = format!(
            "SELECT product_id, tag FROM product_tags WHERE product_id IN ({list}) \
             ORDER BY product_id, tag"
        );
        let mut tags_q = sqlx::query_as::<_, (ProductId, String)>(&tags_sql);
        for r in &rows {
            tags_q = tags_q.bind(r.id);
        }
        let tag_rows = tags_q.fetch_all(&mut *conn).await?;

        let mut products = Vec::with_capacity(rows.len());
        for row in rows {
            let currency = Currency::parse(&row.currency)
                .map_err(|e| CatalogError::Internal(anyhow::anyhow!("stored currency: {e}")))?;
            let variants = variant_rows
                .iter()
                .filter(|v| v.product_id == row.id)
                .map(|v| {
                    Ok(Variant {
                        sku: v.sku.clone(),
                        name: v.name.clone(),
                        options: serde_json::from_str(&v.options)
                            .map_err(|e| anyhow::anyhow!("stored options: {e}"))?,
                        price: Money::new(v.price, currency),
                        in_stock: v.in_stock == 1,
                    })
                })
                .collect::<Result<Vec<_>, anyhow::Error>>()?;
            products.push(Product {
                id: row.id,
                seller_id: row.seller_id,
                kind: row.kind,
                title: row.title,
                description: row.description,
                category: row.category,
                tags: tag_rows
                    .iter()
                    .filter(|(p, _)| *p == row.id)
                    .map(|(_, t)| t.clone())
                    .collect(),
                images: serde_json::from_str(&row.images)
                    .map_err(|e| anyhow::anyhow!("stored images: {e}"))?,
                asset_id: row.asset_id,
                status: row.status,
                price: PriceRange {
                    min: Money::new(row.min_price, currency),
                    max: Money::new(row.max_price, currency),
                },
                variants,
                created_at: clock::from_micros(row.created_at),
                updated_at: clock::from_micros(row.updated_at),
            });
        }
        Ok(products)
    }
}

/// Per allocated value, roughly (headers, small fields).
const OVERHEAD: usize = 64;

impl Weigh for Product {
    fn weight(&self) -> usize {
        let texts = [
            &self.kind,
            &self.title,
            &self.description,
            &self.category,
            &self.status,
        ];
        OVERHEAD * 4
            + texts.iter().map(|t| t.len()).sum::<usize>()
            + self
                .tags
                .iter()
                .chain(&self.images)
                .map(|t| t.len() + OVERHEAD)
                .sum::<usize>()
            + self
                .variants
                .iter()
                .map(|v| {
                    OVERHEAD * 2
                        + v.sku.as_str().len()
                        + v.name.len()
                        + v.options
                            .iter()
                            .map(|(k, o)| k.len() + o.len() + OVERHEAD)
                            .sum::<usize>()
                })
                .sum::<usize>()
    }
}

impl Weigh for Found {
    /// The page and, about as long as its text, its JSON.
    fn weight(&self) -> usize {
        2 * self.page.weight()
    }
}

impl Weigh for ProductPage {
    fn weight(&self) -> usize {
        OVERHEAD * 4
            + self.items.iter().map(Weigh::weight).sum::<usize>()
            + self.next_cursor.as_ref().map_or(0, String::len)
            + self
                .facets
                .category
                .iter()
                .chain(&self.facets.tag)
                .map(|f| f.value.len() + OVERHEAD)
                .sum::<usize>()
    }
}

fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, CatalogError> {
    serde_json::to_string(value).map_err(|e| CatalogError::Internal(e.into()))
}

/// Refuses (409, naming it) a SKU another product has; `own` may keep its own. Within the
/// write transaction, so a SKU cannot be taken between the check and the insert on SQLite
/// (one writer); on PostgreSQL a racing insert hits the unique key instead.
async fn ensure_skus_free(
    tx: &mut Transaction<'static, Any>,
    draft: &ProductDraft,
    own: Option<ProductId>,
) -> Result<(), CatalogError> {
    for v in draft.variants.iter() {
        let holder: Option<ProductId> =
            sqlx::query_scalar("SELECT product_id FROM variants WHERE sku = $1")
                .bind(&v.sku)
                .fetch_optional(&mut **tx)
                .await?;
        if holder.is_some_and(|h| Some(h) != own) {
            return Err(CatalogError::SkuTaken(v.sku.to_string()));
        }
    }
    Ok(())
}

async fn write_children(
    tx: &mut Transaction<'static, Any>,
    id: ProductId,
    draft: &ProductDraft,
) -> Result<(), CatalogError> {
    for (position, v) in draft.variants.iter().enumerate() {
        let inserted = sqlx::query(
            "INSERT INTO variants (sku, product_id, position, name, options, price, in_stock) \
             VALUES ($1, $2, $3, $4, $5, $6, \
             COALESCE((SELECT a.in_stock FROM sku_availability a WHERE a.sku = $1), 0))",
        )
        .bind(&v.sku)
        .bind(id)
        .bind(position as i64)
        .bind(&v.name)
        .bind(json(v.options.as_map())?)
        .bind(v.price.minor_units())
        .execute(&mut **tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(CatalogError::SkuTaken(v.sku.to_string()))
            }
            Err(e) => return Err(e.into()),
        }
    }
    for tag in draft.tags.iter() {
        sqlx::query("INSERT INTO product_tags (product_id, tag) VALUES ($1, $2)")
            .bind(id)
            .bind(tag.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn enqueue<E: Event>(
    tx: &mut Transaction<'static, Any>,
    id: ProductId,
    event: &E,
) -> Result<(), CatalogError> {
    let envelope = Envelope::new(event).with_aggregate(PRODUCT_AGGREGATE, id);
    outbox::enqueue(tx, &envelope).await?;
    Ok(())
}

#[async_trait::async_trait]
impl rendermart_catalog_api::CatalogApi for Catalog {
    async fn offers(
        &self,
        skus: &[Sku],
    ) -> Result<Vec<rendermart_catalog_api::SkuOffer>, rendermart_catalog_api::CatalogUnavailable>
    {
        #[derive(FromRow)]
        struct OfferRow {
            sku: Sku,
            product_id: ProductId,
            kind: String,
            title: String,
            name: String,
            price: i64,
            currency: String,
            seller_id: UserId,
            asset_id: Option<GenerationId>,
            status: String,
        }
        let unavailable = |e: String| rendermart_catalog_api::CatalogUnavailable(e);
        let mut offers = Vec::with_capacity(skus.len());
        // A bounded number of SKUs per statement keeps the statement's size bounded too.
        for chunk in skus.chunks(100) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT v.sku, v.product_id, p.kind, p.title, v.name, v.price, p.currency, \
                 p.seller_id, p.asset_id, p.status \
                 FROM variants v JOIN products p ON p.id = v.product_id WHERE v.sku IN ({})",
                marks.join(", ")
            );
            let mut query = sqlx::query_as::<_, OfferRow>(&sql);
            for sku in chunk {
                query = query.bind(sku);
            }
            let rows = query
                .fetch_all(self.db.pool())
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            for row in rows {
                let currency =
                    Currency::parse(&row.currency).map_err(|e| unavailable(e.to_string()))?;
                offers.push(rendermart_catalog_api::SkuOffer {
                    sku: row.sku,
                    product_id: row.product_id,
                    kind: row.kind,
                    title: row.title,
                    variant: row.name,
                    price: Money::new(row.price, currency),
                    seller_id: row.seller_id,
                    asset_id: row.asset_id,
                    on_sale: row.status == "active",
                });
            }
        }
        Ok(offers)
    }
}
