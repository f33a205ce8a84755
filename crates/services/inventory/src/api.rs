//! Inventory's public HTTP API under `/api/v1/inventory`: anyone reads a SKU's stock;
//! admins adjust it with a reason and read the audit trail. Thin handlers: parse, call one
//! [`Inventory`] method, map the result; `InventoryError` becomes problem+json here.

use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    routing::{get, post},
    Router,
};
use rendermart_platform::{
    auth::{Principal, Role},
    http::{ApiJson, Problem},
};
use rendermart_types::Sku;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::{
    domain::{Delta, Reason},
    stock::{Adjustment, AdjustmentId, Inventory, InventoryError, StockView},
};

#[derive(OpenApi)]
#[openapi(
    paths(stock, adjust, adjustments),
    components(schemas(StockView, Adjustment, AdjustRequest, AdjustResponse, AdjustmentPage, Problem)),
    tags((name = "inventory", description = "Stock per SKU and its audited adjustments"))
)]
pub struct InventoryApiDoc;

impl From<InventoryError> for Problem {
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::Invalid(invalid) => {
                Problem::validation(format!("{invalid}.")).field(invalid.field, invalid.message)
            }
            InventoryError::UnknownSku => Problem::not_found("No stock is kept for this SKU."),
            InventoryError::Conflict(why) => {
                Problem::conflict("stock-conflict", "Stock conflict", format!("{why}."))
            }
            InventoryError::Unavailable(why) => {
                tracing::warn!(%why, "inventory unavailable");
                Problem::unavailable(
                    2,
                    "The inventory is unavailable right now. Try again shortly.",
                )
            }
            InventoryError::Internal(e) => Problem::internal(&format!("{e:#}")),
        }
    }
}

pub fn router(inventory: Arc<Inventory>) -> Router {
    Router::new()
        .route("/api/v1/inventory/{sku}", get(stock))
        .route("/api/v1/inventory/{sku}/adjust", post(adjust))
        .route("/api/v1/inventory/{sku}/adjustments", get(adjustments))
        .with_state(inventory)
}

fn sku(raw: &str) -> Result<Sku, Problem> {
    Sku::parse(raw).map_err(|e| Problem::validation(format!("{e}.")).field("sku", e.to_string()))
}

fn admin(principal: &Principal) -> Result<(), Problem> {
    if principal.has_role(Role::Admin) {
        Ok(())
    } else {
        Err(Problem::forbidden("Only administrators can do this."))
    }
}

/// A SKU's stock: on hand, reserved for orders in checkout, and available to order.
#[utoipa::path(get, path = "/api/v1/inventory/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "The SKU (case does not matter)")),
    responses(
        (status = 200, description = "The SKU's stock", body = StockView),
        (status = 404, description = "No stock is kept for this SKU", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a SKU", body = Problem, content_type = "application/problem+json"),
    ))]
async fn stock(
    State(inventory): State<Arc<Inventory>>,
    Path(raw): Path<String>,
) -> Result<ApiJson<StockView>, Problem> {
    Ok(ApiJson(inventory.stock(&sku(&raw)?).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    /// Units to add (positive) or take out (negative) of on-hand stock; not 0, at most
    /// `inventory.max_adjust` either way, never below what is reserved.
    #[schema(example = 20)]
    delta: i64,
    /// Why, for the audit trail: 1–200 characters.
    #[schema(example = "received from the printer")]
    reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct AdjustResponse {
    stock: StockView,
    adjustment: Adjustment,
}

/// Changes a SKU's on-hand stock (admins). A positive delta on a SKU never stocked starts
/// keeping it; a negative one may not take on-hand stock below what is reserved.
#[utoipa::path(post, path = "/api/v1/inventory/{sku}/adjust", tag = "inventory",
    request_body = AdjustRequest,
    params(("sku" = String, Path, description = "The SKU")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Adjusted", body = AdjustResponse),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No stock is kept for this SKU (and the delta is negative)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It would take on-hand stock below what is reserved", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid SKU, delta or reason", body = Problem, content_type = "application/problem+json"),
    ))]
async fn adjust(
    State(inventory): State<Arc<Inventory>>,
    principal: Principal,
    Path(raw): Path<String>,
    ApiJson(req): ApiJson<AdjustRequest>,
) -> Result<ApiJson<AdjustResponse>, Problem> {
    admin(&principal)?;
    let sku = sku(&raw)?;
    let delta =
        Delta::parse(req.delta, inventory.config().max_adjust).map_err(InventoryError::from)?;
    let reason = Reason::parse(&req.reason).map_err(InventoryError::from)?;
    let (stock, adjustment) = inventory
        .adjust(&sku, delta, &reason, principal.user_id)
        .await?;
    Ok(ApiJson(AdjustResponse { stock, adjustment }))
}

#[derive(Deserialize, IntoParams)]
struct PageQuery {
    /// The `next` cursor of the previous page.
    before: Option<AdjustmentId>,
    /// 1–100, default 20.
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AdjustmentPage {
    /// Newest first.
    items: Vec<Adjustment>,
    /// Pass as `before` for the next page; absent on the last.
    next: Option<AdjustmentId>,
}

/// A SKU's audit trail of adjustments, newest first (admins).
#[utoipa::path(get, path = "/api/v1/inventory/{sku}/adjustments", tag = "inventory",
    params(("sku" = String, Path, description = "The SKU"), PageQuery),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "One page of the audit trail", body = AdjustmentPage),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No stock is kept for this SKU", body = Problem, content_type = "application/problem+json"),
    ))]
async fn adjustments(
    State(inventory): State<Arc<Inventory>>,
    principal: Principal,
    Path(raw): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<ApiJson<AdjustmentPage>, Problem> {
    admin(&principal)?;
    let sku = sku(&raw)?;
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let items = inventory.adjustments(&sku, q.before, limit).await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|a| a.id))
        .flatten();
    Ok(ApiJson(AdjustmentPage { items, next }))
}
