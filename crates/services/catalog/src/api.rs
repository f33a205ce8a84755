//! The catalog's public HTTP API under `/api/v1/products`: thin handlers that parse input
//! into domain types, check who may act, call one store operation and map the result.
//! `CatalogError` becomes problem+json here, in one place. A print that names an image is
//! created only by the image's current owner, as the wallet says (decision 59).

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use rendermart_catalog_api::ProductId;
use rendermart_platform::{
    auth::{Principal, Role},
    http::{ApiJson, Problem},
};
use rendermart_studio_api::GenerationId;
use rendermart_types::{Money, Sku, UserId};
use rendermart_wallet_api::AssetsApi;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::{
    domain::{
        may_print, Category, Description, Images, Invalid, Kind, ProductDraft, Rules, Search,
        SearchInput, Tags, Title, VariantInput, Variants,
    },
    store::{
        Catalog, CatalogError, FacetCount, Facets, PriceFacet, PriceRange, Product, ProductKey,
        ProductPage, Variant,
    },
};

#[derive(OpenApi)]
#[openapi(
    paths(create, search, show, edit, archive),
    components(schemas(
        Product, Variant, PriceRange, ProductPage, Facets, FacetCount, PriceFacet, NewProduct,
        NewVariant, ProductEdit, Problem
    )),
    tags((name = "catalog", description = "Store products: prints, books and goods, their variants and search"))
)]
pub struct CatalogApiDoc;

impl From<CatalogError> for Problem {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Invalid(invalid) => {
                Problem::validation(format!("{invalid}.")).field(&invalid.field, invalid.message)
            }
            CatalogError::Forbidden(why) => Problem::forbidden(why),
            CatalogError::NotImageOwner => {
                Problem::forbidden("Only the image's current owner can sell prints of it.")
                    .field("asset_id", "belongs to someone else")
            }
            CatalogError::NotFound => Problem::not_found("No such product."),
            CatalogError::SkuTaken(sku) => Problem::conflict(
                "sku-taken",
                "SKU taken",
                format!("The SKU {sku} belongs to another product. Choose another SKU."),
            )
            .field("sku", format!("{sku} is taken")),
            CatalogError::Archived => Problem::conflict(
                "product-archived",
                "Product archived",
                "This product is archived and can no longer be changed.",
            ),
            CatalogError::Unavailable(why) => {
                // The catalog's database, or the wallet it asks who owns an image.
                tracing::warn!(%why, "catalog unavailable");
                Problem::unavailable(
                    2,
                    "The catalog is unavailable right now. Try again shortly.",
                )
            }
            CatalogError::Internal(e) => Problem::internal(&format!("{e:#}")),
        }
    }
}

/// What the handlers share.
pub struct CatalogApi {
    pub catalog: Catalog,
    pub rules: Rules,
    /// The wallet, which says who owns an image.
    pub assets: Arc<dyn AssetsApi>,
}

pub fn router(api: Arc<CatalogApi>) -> Router {
    Router::new()
        .route("/api/v1/products", get(search).post(create))
        .route(
            "/api/v1/products/{id_or_sku}",
            get(show).patch(edit).delete(archive),
        )
        .with_state(api)
}

/// Sellers and admins may sell.
fn may_sell(principal: &Principal) -> Result<(), CatalogError> {
    if principal.has_role(Role::Seller) || principal.has_role(Role::Admin) {
        Ok(())
    } else {
        Err(CatalogError::Forbidden(
            "Only sellers and admins can create products.",
        ))
    }
}

/// A product's seller (still a seller) or an admin may change it.
fn may_edit(principal: &Principal) -> impl FnOnce(UserId) -> Result<(), CatalogError> + '_ {
    move |seller| {
        let own = seller == principal.user_id && principal.has_role(Role::Seller);
        if own || principal.has_role(Role::Admin) {
            Ok(())
        } else {
            Err(CatalogError::Forbidden(
                "Only the product's seller or an admin can change it.",
            ))
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    /// `print`, `book` or `goods`.
    #[schema(example = "print")]
    kind: String,
    /// 1–200 characters.
    #[schema(example = "Lighthouse at dusk")]
    title: String,
    /// At most 5000 characters.
    #[serde(default)]
    description: String,
    /// A slug: lower-case letters, digits and `-`.
    #[schema(example = "wall-art")]
    category: String,
    /// At most 10, each 1–30 characters.
    #[serde(default)]
    tags: Vec<String>,
    /// At most 10 http(s) URLs.
    #[serde(default)]
    images: Vec<String>,
    /// A print's image: an asset in the wallet that the caller owns now (only an image's
    /// current owner sells prints of it).
    asset_id: Option<GenerationId>,
    /// 1 to `catalog.max_variants`, each with a SKU no other product has.
    variants: Vec<NewVariant>,
}

#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVariant {
    #[schema(value_type = String, example = "PRINT-LIGHTHOUSE-A3-MATTE")]
    sku: String,
    /// 1–100 characters.
    #[schema(example = "A3, matte")]
    name: String,
    /// At most 5, e.g. `{"size": "A3", "paper": "matte"}`.
    #[serde(default)]
    options: BTreeMap<String, String>,
    /// In the catalog's currency, 1 minor unit to `catalog.max_price`.
    price: Money,
}

/// The fields to change; absent ones stay. `variants`, when given, replaces them all.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductEdit {
    title: Option<String>,
    description: Option<String>,
    category: Option<String>,
    tags: Option<Vec<String>>,
    images: Option<Vec<String>>,
    variants: Option<Vec<NewVariant>>,
}

fn variants(raw: &[NewVariant], rules: &Rules) -> Result<Variants, Invalid> {
    let inputs: Vec<VariantInput<'_>> = raw
        .iter()
        .map(|v| VariantInput {
            sku: &v.sku,
            name: &v.name,
            options: &v.options,
            price: v.price,
        })
        .collect();
    Variants::parse(&inputs, rules)
}

fn draft(body: &NewProduct, rules: &Rules) -> Result<ProductDraft, Invalid> {
    ProductDraft {
        kind: Kind::parse(&body.kind)?,
        title: Title::parse(&body.title)?,
        description: Description::parse(&body.description)?,
        category: Category::parse(&body.category)?,
        tags: Tags::parse(&body.tags)?,
        images: Images::parse(&body.images)?,
        asset_id: body.asset_id,
        variants: variants(&body.variants, rules)?,
    }
    .check()
}

/// The product after `edit`: its current fields, with the edited ones replaced.
fn edited(current: &Product, edit: &ProductEdit, rules: &Rules) -> Result<ProductDraft, Invalid> {
    let current_variants: Vec<NewVariant> = current
        .variants
        .iter()
        .map(|v| NewVariant {
            sku: v.sku.to_string(),
            name: v.name.clone(),
            options: v.options.clone(),
            price: v.price,
        })
        .collect();
    let body = NewProduct {
        kind: current.kind.clone(),
        title: edit.title.clone().unwrap_or_else(|| current.title.clone()),
        description: edit
            .description
            .clone()
            .unwrap_or_else(|| current.description.clone()),
        category: edit
            .category
            .clone()
            .unwrap_or_else(|| current.category.clone()),
        tags: edit.tags.clone().unwrap_or_else(|| current.tags.clone()),
        images: edit
            .images
            .clone()
            .unwrap_or_else(|| current.images.clone()),
        asset_id: current.asset_id,
        variants: edit.variants.clone().unwrap_or(current_variants),
    };
    draft(&body, rules)
}

/// Create a product with its variants (sellers and admins).
#[utoipa::path(post, path = "/api/v1/products", tag = "catalog", request_body = NewProduct,
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "Created and on sale", body = Product),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a seller or an admin, or `asset_id` is someone else's image", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A SKU belongs to another product", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (named in `errors`; `asset_id` when the wallet has no such image)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The catalog or the wallet is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create(
    State(api): State<Arc<CatalogApi>>,
    principal: Principal,
    ApiJson(body): ApiJson<NewProduct>,
) -> Result<Response, Problem> {
    may_sell(&principal)?;
    let draft = draft(&body, &api.rules).map_err(CatalogError::from)?;
    if let Some(asset) = draft.asset_id {
        let owner = api
            .assets
            .owner_of(asset)
            .await
            .map_err(CatalogError::from)?;
        may_print(principal.user_id, owner).map_err(CatalogError::from)?;
    }
    let product = api.catalog.create(principal.user_id, draft).await?;
    Ok((StatusCode::CREATED, ApiJson(product)).into_response())
}

#[derive(Deserialize, IntoParams)]
pub struct SearchParams {
    /// Words the product must all have (title, tags, category, description, variants);
    /// at most 8 words, 200 characters.
    q: Option<String>,
    /// A category slug.
    category: Option<String>,
    /// One tag.
    tag: Option<String>,
    /// Minor units: some variant costs at least this much.
    min_price: Option<String>,
    /// Minor units: some variant costs at most this much.
    max_price: Option<String>,
    /// `true`: some variant (in the price range, if one is given) is in stock.
    in_stock: Option<String>,
    /// `relevance` (default; newest without `q`), `newest` or `price` (cheapest first).
    sort: Option<String>,
    /// The `next_cursor` of the previous page of the same search.
    cursor: Option<String>,
    /// 1–100, default `catalog.page_size`.
    limit: Option<String>,
}

/// Search active products: words, filters, facets with counts over all matches, a page at
/// a time.
#[utoipa::path(get, path = "/api/v1/products", tag = "catalog", params(SearchParams),
    responses(
        (status = 200, description = "One page of matches and the facets of all of them", body = ProductPage),
        (status = 422, description = "A parameter is invalid (named in `errors`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn search(
    State(api): State<Arc<CatalogApi>>,
    Query(p): Query<SearchParams>,
) -> Result<Response, Problem> {
    let input = SearchInput {
        q: p.q.as_deref(),
        category: p.category.as_deref(),
        tag: p.tag.as_deref(),
        min_price: p.min_price.as_deref(),
        max_price: p.max_price.as_deref(),
        in_stock: p.in_stock.as_deref(),
        sort: p.sort.as_deref(),
        cursor: p.cursor.as_deref(),
        limit: p.limit.as_deref(),
    };
    let search = Search::parse(&input, api.catalog.default_limit()).map_err(CatalogError::from)?;
    let found = api.catalog.search(&search).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        found.json()?,
    )
        .into_response())
}

/// Finds a product by its id or by one of its SKUs; 404 when it is neither. For readers:
/// it may come from the catalog's short memory ([`Catalog::lookup`]).
pub(crate) async fn find(catalog: &Catalog, id_or_sku: &str) -> Result<Arc<Product>, CatalogError> {
    if let Ok(id) = id_or_sku.parse::<ProductId>() {
        return catalog.lookup(ProductKey::Id(id)).await;
    }
    match Sku::parse(id_or_sku) {
        Ok(sku) => catalog.lookup(ProductKey::Sku(sku)).await,
        Err(_) => Err(CatalogError::NotFound),
    }
}

fn product_id(raw: &str) -> Result<ProductId, CatalogError> {
    raw.parse().map_err(|_| CatalogError::NotFound)
}

/// One product, active or archived, by its id or one of its SKUs.
#[utoipa::path(get, path = "/api/v1/products/{id_or_sku}", tag = "catalog",
    params(("id_or_sku" = String, Path, description = "The product's id, or the SKU of one of its variants")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
    ))]
async fn show(
    State(api): State<Arc<CatalogApi>>,
    Path(id_or_sku): Path<String>,
) -> Result<Response, Problem> {
    let product = find(&api.catalog, &id_or_sku).await?;
    Ok(ApiJson(&*product).into_response())
}

/// Change a product (its seller or an admin).
#[utoipa::path(patch, path = "/api/v1/products/{id_or_sku}", tag = "catalog", request_body = ProductEdit,
    params(("id_or_sku" = String, Path, description = "The product's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Changed", body = Product),
        (status = 403, description = "Not its seller or an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Archived, or a SKU belongs to another product", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (named in `errors`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn edit(
    State(api): State<Arc<CatalogApi>>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ProductEdit>,
) -> Result<ApiJson<Product>, Problem> {
    let id = product_id(&id)?;
    let rules = api.rules;
    let product = api
        .catalog
        .update(id, may_edit(&principal), |current| {
            Ok(edited(current, &body, &rules)?)
        })
        .await?;
    Ok(ApiJson(product))
}

/// Archive a product (its seller or an admin): it leaves search and is no longer sold,
/// and stays readable by id. Archiving it again changes nothing.
#[utoipa::path(delete, path = "/api/v1/products/{id_or_sku}", tag = "catalog",
    params(("id_or_sku" = String, Path, description = "The product's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Archived", body = Product),
        (status = 403, description = "Not its seller or an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
    ))]
async fn archive(
    State(api): State<Arc<CatalogApi>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<ApiJson<Product>, Problem> {
    let id = product_id(&id)?;
    Ok(ApiJson(
        api.catalog.archive(id, may_edit(&principal)).await?,
    ))
}
