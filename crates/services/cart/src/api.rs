//! The cart's public HTTP API under `/api/v1/cart`, for guests (the `rm_cart` cookie) and
//! signed-in callers (session cookie with its CSRF token, or a bearer token). Thin
//! handlers: parse into domain types, call one [`Carts`] method, map the result;
//! `CartError` becomes problem+json here, and only here.
//!
//! A line's prices are never taken from the request: a body's `price`, `total` or any
//! other extra field is ignored; the cart is priced by the catalog when it is read.

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, Path, State},
    response::Response,
    routing::{get, patch, post},
    Router,
};
use http::{request::Parts, Method, StatusCode};
use rendermart_platform::{
    auth::{self, OptionalPrincipal, CSRF_HEADER},
    http::{ApiJson, ClientInfo, Problem},
};
use rendermart_types::Sku;
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};

use crate::{
    cart::{CartError, CartView, Carts, LineChanged, LineView},
    domain::Quantity,
    shopper::Shopper,
};

#[derive(OpenApi)]
#[openapi(
    paths(show, clear, add, update, remove),
    components(schemas(CartView, LineView, LineChanged, AddItem, UpdateItem, Problem)),
    tags((name = "cart", description = "The shopper's cart: guest (cookie) or signed in, priced from the catalog when read"))
)]
pub struct CartApiDoc;

impl From<CartError> for Problem {
    fn from(e: CartError) -> Self {
        match e {
            CartError::Invalid(invalid) => {
                Problem::validation(format!("{invalid}.")).field(invalid.field, invalid.message)
            }
            CartError::UnknownSku(sku) => {
                Problem::not_found(format!("No product on sale has SKU {sku}."))
                    .field("sku", "is not sold here")
            }
            e @ CartError::QuantityTooLarge { .. } => {
                Problem::validation(format!("The {e}.")).field("quantity", e.to_string())
            }
            e @ CartError::TooManyLines { .. } => {
                Problem::validation(format!("The {e}: remove a line first."))
                    .field("sku", e.to_string())
            }
            CartError::Unavailable(why) => {
                tracing::warn!(%why, "cart unavailable");
                Problem::unavailable(2, "The cart is unavailable right now. Try again shortly.")
            }
        }
    }
}

pub fn router(carts: Arc<Carts>) -> Router {
    Router::new()
        .route("/api/v1/cart", get(show).delete(clear))
        .route("/api/v1/cart/items", post(add))
        .route("/api/v1/cart/items/{sku}", patch(update).delete(remove))
        .with_state(carts)
}

/// The request's cart (see [`Shopper`]), after the CSRF check a session cookie needs on
/// a change (a bearer token or a guest needs none: browsers do not attach the one, and the
/// guest cookie is `SameSite=Lax`).
struct ApiShopper(Shopper);

impl FromRequestParts<Arc<Carts>> for ApiShopper {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        carts: &Arc<Carts>,
    ) -> Result<Self, Self::Rejection> {
        let Ok(OptionalPrincipal(principal)) =
            OptionalPrincipal::from_request_parts(parts, carts).await;
        let Ok(client) = ClientInfo::from_request_parts(parts, carts).await;
        let writes = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if let Some(p) = principal.as_ref().filter(|p| writes && p.is_session()) {
            let submitted = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !p.csrf_matches(submitted) {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "CSRF token missing or wrong",
                )
                .detail(
                    "Requests that change state with a session cookie must send the \
                     session's CSRF token in the X-CSRF-Token header.",
                ));
            }
        }
        let secure = auth::wants_secure_cookies(&client, carts.cookie_secure());
        let shopper =
            Shopper::resolve(carts, principal.as_ref(), &parts.headers, secure, writes).await?;
        Ok(Self(shopper))
    }
}

fn sku(raw: &str) -> Result<Sku, Problem> {
    Sku::parse(raw).map_err(|e| Problem::validation(format!("{e}.")).field("sku", e.to_string()))
}

/// The cart, each line priced by the catalog now (a line no longer on sale is shown with
/// `on_sale: false` and left out of the total).
#[utoipa::path(get, path = "/api/v1/cart", tag = "cart",
    security((), ("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The cart (empty for a guest without one)", body = CartView),
        (status = 503, description = "The cart or the catalog is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn show(
    State(carts): State<Arc<Carts>>,
    ApiShopper(shopper): ApiShopper,
) -> Result<Response, Problem> {
    let view = carts.view(shopper.owner.as_ref()).await?;
    Ok(shopper.respond(ApiJson(view)))
}

/// Empties the cart.
#[utoipa::path(delete, path = "/api/v1/cart", tag = "cart",
    security((), ("session" = []), ("bearer" = [])),
    responses(
        (status = 204, description = "The cart is empty"),
        (status = 403, description = "A session without its CSRF token", body = Problem, content_type = "application/problem+json"),
    ))]
async fn clear(
    State(carts): State<Arc<Carts>>,
    ApiShopper(shopper): ApiShopper,
) -> Result<Response, Problem> {
    carts.clear(shopper.cart()?).await?;
    Ok(shopper.respond(StatusCode::NO_CONTENT))
}

#[derive(Deserialize, ToSchema)]
pub struct AddItem {
    #[serde(default)]
    #[schema(example = "PRINT-A3")]
    sku: String,
    /// A whole number from 1 to `cart.max_quantity` (999 by default); a line never holds
    /// more than that either.
    #[serde(default)]
    #[schema(value_type = u32, example = 1)]
    quantity: serde_json::Value,
}

/// Adds units of a SKU the catalog sells to the cart (to its line, if it has one). A
/// guest without a cart gets one (and its cookie). Prices sent along are ignored.
#[utoipa::path(post, path = "/api/v1/cart/items", tag = "cart",
    request_body = AddItem,
    security((), ("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "What the line holds now", body = LineChanged),
        (status = 403, description = "A session without its CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No product on sale has this SKU", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a SKU, not a quantity, the line would pass the maximum, or the cart is full", body = Problem, content_type = "application/problem+json"),
    ))]
async fn add(
    State(carts): State<Arc<Carts>>,
    ApiShopper(shopper): ApiShopper,
    ApiJson(req): ApiJson<AddItem>,
) -> Result<Response, Problem> {
    let sku = sku(&req.sku)?;
    let quantity =
        Quantity::from_json(&req.quantity, carts.limits().max_quantity).map_err(CartError::from)?;
    let line = carts.add(shopper.cart()?, &sku, quantity).await?;
    Ok(shopper.respond(ApiJson(line)))
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateItem {
    /// A whole number from 1 to `cart.max_quantity`; remove a line with DELETE.
    #[serde(default)]
    #[schema(value_type = u32, example = 2)]
    quantity: serde_json::Value,
}

/// Makes the cart's line of a SKU hold exactly `quantity` (adding the line if the cart has
/// none).
#[utoipa::path(patch, path = "/api/v1/cart/items/{sku}", tag = "cart",
    request_body = UpdateItem,
    params(("sku" = String, Path, description = "The SKU (case does not matter)")),
    security((), ("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "What the line holds now", body = LineChanged),
        (status = 403, description = "A session without its CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No product on sale has this SKU", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a SKU or not a quantity, or the cart is full", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update(
    State(carts): State<Arc<Carts>>,
    ApiShopper(shopper): ApiShopper,
    Path(raw): Path<String>,
    ApiJson(req): ApiJson<UpdateItem>,
) -> Result<Response, Problem> {
    let sku = sku(&raw)?;
    let quantity =
        Quantity::from_json(&req.quantity, carts.limits().max_quantity).map_err(CartError::from)?;
    let line = carts.set(shopper.cart()?, &sku, quantity).await?;
    Ok(shopper.respond(ApiJson(line)))
}

/// Takes a SKU's line out of the cart (done already: the same answer).
#[utoipa::path(delete, path = "/api/v1/cart/items/{sku}", tag = "cart",
    params(("sku" = String, Path, description = "The SKU (case does not matter)")),
    security((), ("session" = []), ("bearer" = [])),
    responses(
        (status = 204, description = "The cart has no line of this SKU"),
        (status = 403, description = "A session without its CSRF token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a SKU", body = Problem, content_type = "application/problem+json"),
    ))]
async fn remove(
    State(carts): State<Arc<Carts>>,
    ApiShopper(shopper): ApiShopper,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    let sku = sku(&raw)?;
    carts.remove(shopper.cart()?, &sku).await?;
    Ok(shopper.respond(StatusCode::NO_CONTENT))
}
