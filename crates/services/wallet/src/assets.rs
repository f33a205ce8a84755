//! Image assets: made from studio's `ImageGenerated` (owned by their creator, with their
//! provenance), listed for their owner, shown to anyone with their owner history and a
//! thumbnail (`/api/v1/assets/{id}/thumbnail`, served by the app: what pages put in `<img>`); the original only
//! to its owner, through an expiring signed link. [`Assets`] is also the wallet's
//! [`AssetsApi`] client in process: who owns an image now.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use rendermart_platform::{
    auth::{OptionalPrincipal, Principal},
    clock,
    db::Db,
    http::{ApiJson, Problem},
    objects::{ObjectKey, Objects},
};
use rendermart_studio_api::{GenerationId, ImageGenerated};
use rendermart_types::UserId;
use rendermart_wallet_api::{AssetsApi, OwnerOf, WalletUnavailable};
use serde::Serialize;
use sqlx::FromRow;
use utoipa::{OpenApi, ToSchema};

/// How long a link to an image stays valid.
const LINK_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(OpenApi)]
#[openapi(
    paths(mine, show, original, thumbnail),
    components(schemas(Asset, AssetView, Ownership, AssetList, Problem)),
    tags((name = "assets", description = "Images people own"))
)]
pub struct AssetsApiDoc;

/// Makes studio's image an asset its creator owns, with its provenance and the first line
/// of its owner history (in the consumer's transaction; a repeat changes nothing).
pub(crate) async fn create_from(
    conn: &mut sqlx::AnyConnection,
    image: &ImageGenerated,
) -> Result<(), sqlx::Error> {
    let created_at = clock::to_micros(image.created_at);
    sqlx::query(
        "INSERT INTO assets (id, owner_id, creator_id, prompt, negative_prompt, provider, \
         model, seed, width, height, original_key, thumbnail_key, created_at) \
         VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(image.generation_id)
    .bind(image.creator)
    .bind(&image.prompt)
    .bind(&image.negative_prompt)
    .bind(&image.provider)
    .bind(&image.model)
    .bind(image.seed.map(i64::from))
    .bind(i64::from(image.width))
    .bind(i64::from(image.height))
    .bind(&image.original_key)
    .bind(&image.thumbnail_key)
    .bind(created_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO asset_owners (asset_id, seq, owner_id, since, how) \
         VALUES ($1, 1, $2, $3, 'created') ON CONFLICT (asset_id, seq) DO NOTHING",
    )
    .bind(image.generation_id)
    .bind(image.creator)
    .bind(created_at)
    .execute(&mut *conn)
    .await?;
    metrics::counter!("wallet_assets_created_total").increment(1);
    Ok(())
}

/// An asset and its provenance.
#[derive(Clone, Debug, Serialize, FromRow, ToSchema)]
pub struct Asset {
    pub id: GenerationId,
    pub owner_id: UserId,
    pub creator_id: UserId,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub provider: String,
    pub model: String,
    pub seed: Option<i64>,
    pub width: i64,
    pub height: i64,
    /// UTC microseconds since the epoch.
    pub created_at: i64,
    #[serde(skip)]
    pub original_key: String,
    #[serde(skip)]
    pub thumbnail_key: String,
}

/// One owner of an asset, in order.
#[derive(Clone, Debug, Serialize, FromRow, ToSchema)]
pub struct Ownership {
    pub owner_id: UserId,
    /// UTC microseconds since the epoch.
    pub since: i64,
    /// `created` or `bought`.
    pub how: String,
}

/// The public view of an asset.
#[derive(Serialize, ToSchema)]
pub struct AssetView {
    #[serde(flatten)]
    asset: Asset,
    /// A signed link to the thumbnail, valid for 15 minutes.
    thumbnail_url: String,
    owners: Vec<Ownership>,
}

#[derive(Serialize, ToSchema)]
pub struct AssetList {
    /// Newest first, at most 100.
    items: Vec<AssetView>,
}

const ASSET_COLUMNS: &str = "id, owner_id, creator_id, prompt, negative_prompt, provider, model, \
                             seed, width, height, created_at, original_key, thumbnail_key";

pub struct Assets {
    db: Db,
    objects: Objects,
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    tracing::warn!(error = %e, "assets unavailable");
    Problem::unavailable(2, "Assets are unavailable right now. Try again shortly.")
}

impl Assets {
    pub fn new(db: Db, objects: Objects) -> Self {
        Self { db, objects }
    }

    async fn link(&self, key: &str) -> Result<String, Problem> {
        let key = ObjectKey::parse(key).map_err(|e| Problem::internal(&e))?;
        let url = self
            .objects
            .store()
            .signed_url(&key, LINK_TTL, None)
            .await
            .map_err(unavailable)?;
        Ok(url.into_string())
    }

    /// The asset's owners, first to current.
    pub(crate) async fn owners(&self, asset: GenerationId) -> Result<Vec<Ownership>, Problem> {
        let mut conn = self.db.pool().acquire().await.map_err(unavailable)?;
        sqlx::query_as(
            "SELECT owner_id, since, how FROM asset_owners WHERE asset_id = $1 ORDER BY seq",
        )
        .bind(asset)
        .fetch_all(&mut *conn)
        .await
        .map_err(unavailable)
    }

    async fn view(&self, asset: Asset) -> Result<AssetView, Problem> {
        let owners = self.owners(asset.id).await?;
        let thumbnail_url = self.link(&asset.thumbnail_key).await?;
        Ok(AssetView {
            asset,
            thumbnail_url,
            owners,
        })
    }

    pub(crate) async fn find(&self, id: &str) -> Result<Asset, Problem> {
        let id: GenerationId = id
            .parse()
            .map_err(|_| Problem::not_found("No such asset."))?;
        let mut conn = self.db.pool().acquire().await.map_err(unavailable)?;
        sqlx::query_as(&format!("SELECT {ASSET_COLUMNS} FROM assets WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Problem::not_found("No such asset."))
    }
}

#[async_trait::async_trait]
impl AssetsApi for Assets {
    async fn owner_of(&self, asset: GenerationId) -> Result<Option<UserId>, WalletUnavailable> {
        let unavailable = |e: sqlx::Error| WalletUnavailable(e.to_string());
        let mut conn = self.db.pool().acquire().await.map_err(unavailable)?;
        sqlx::query_scalar("SELECT owner_id FROM assets WHERE id = $1")
            .bind(asset)
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)
    }
}

/// The internal route [`rendermart_wallet_api::RemoteAssets`] calls, relative to
/// `/internal/wallet` (the binary nests it behind the service credential).
pub fn internal_router(assets: Arc<Assets>) -> Router {
    Router::new()
        .route("/v1/assets/{id}/owner", get(owner))
        .with_state(assets)
}

async fn owner(
    State(assets): State<Arc<Assets>>,
    Path(id): Path<GenerationId>,
) -> Result<ApiJson<OwnerOf>, Problem> {
    let owner = assets.owner_of(id).await.map_err(unavailable)?;
    Ok(ApiJson(OwnerOf { owner }))
}

pub fn router(assets: Arc<Assets>) -> Router {
    Router::new()
        .route("/api/v1/assets", get(mine))
        .route("/api/v1/assets/{id}", get(show))
        .route("/api/v1/assets/{id}/original", get(original))
        .route("/api/v1/assets/{id}/thumbnail", get(thumbnail))
        .with_state(assets)
}

/// The caller's images, newest first.
#[utoipa::path(get, path = "/api/v1/assets", tag = "assets",
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The caller's assets", body = AssetList),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn mine(
    State(assets): State<Arc<Assets>>,
    principal: Principal,
) -> Result<ApiJson<AssetList>, Problem> {
    let rows: Vec<Asset> = {
        let mut conn = assets.db.pool().acquire().await.map_err(unavailable)?;
        sqlx::query_as(&format!(
            "SELECT {ASSET_COLUMNS} FROM assets WHERE owner_id = $1 ORDER BY id DESC LIMIT 100"
        ))
        .bind(principal.user_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(unavailable)?
    };
    let mut items = Vec::with_capacity(rows.len());
    for asset in rows {
        items.push(assets.view(asset).await?);
    }
    Ok(ApiJson(AssetList { items }))
}

/// Anyone may look at an asset: its provenance, its owners in order, its thumbnail.
#[utoipa::path(get, path = "/api/v1/assets/{id}", tag = "assets",
    params(("id" = String, Path, description = "The asset's id")),
    responses(
        (status = 200, description = "The asset", body = AssetView),
        (status = 404, description = "No such asset", body = Problem, content_type = "application/problem+json"),
    ))]
async fn show(
    State(assets): State<Arc<Assets>>,
    Path(id): Path<String>,
) -> Result<ApiJson<AssetView>, Problem> {
    let asset = assets.find(&id).await?;
    Ok(ApiJson(assets.view(asset).await?))
}

/// The owner is sent to the original through a signed link; everyone else to the
/// thumbnail.
#[utoipa::path(get, path = "/api/v1/assets/{id}/original", tag = "assets",
    params(("id" = String, Path, description = "The asset's id")),
    responses(
        (status = 302, description = "To a signed link: the original for its owner, the thumbnail for anyone else"),
        (status = 404, description = "No such asset", body = Problem, content_type = "application/problem+json"),
    ))]
async fn original(
    State(assets): State<Arc<Assets>>,
    OptionalPrincipal(caller): OptionalPrincipal,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let asset = assets.find(&id).await?;
    let owner = caller.is_some_and(|p| p.user_id == asset.owner_id);
    let key = if owner {
        &asset.original_key
    } else {
        &asset.thumbnail_key
    };
    to_signed_link(&assets, key).await
}

/// Anyone gets the thumbnail, served by the app itself: what pages put in `<img src>`, so
/// it is same-origin wherever images are stored (a redirect to S3 would be another origin,
/// which the pages' CSP does not allow for images). Thumbnails are public and small.
#[utoipa::path(get, path = "/api/v1/assets/{id}/thumbnail", tag = "assets",
    params(("id" = String, Path, description = "The asset's id")),
    responses(
        (status = 200, description = "The thumbnail", content_type = "image/png"),
        (status = 404, description = "No such asset", body = Problem, content_type = "application/problem+json"),
    ))]
async fn thumbnail(
    State(assets): State<Arc<Assets>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let asset = assets.find(&id).await?;
    let key = ObjectKey::parse(&asset.thumbnail_key).map_err(|e| Problem::internal(&e))?;
    let object = assets
        .objects
        .store()
        .get(&key)
        .await
        .map_err(unavailable)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png".to_owned()),
            (header::CACHE_CONTROL, "public, max-age=3600".to_owned()),
        ],
        object.bytes,
    )
        .into_response())
}

/// A `302` to a fresh signed link to the object at `key`; not cached (the link expires).
async fn to_signed_link(assets: &Assets, key: &str) -> Result<Response, Problem> {
    let url = assets.link(key).await?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, url),
            (header::CACHE_CONTROL, "private, no-store".to_owned()),
        ],
    )
        .into_response())
}
