//! The orders service's public HTTP API: `POST /api/v1/checkout` and `/api/v1/orders`.
//! Thin handlers: parse, call one [`Orders`] method, map the result; `OrdersError` becomes
//! problem+json here, and nowhere else.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use futures_util::stream;
use rendermart_orders_api::OrderId;
use rendermart_platform::{
    auth::{Principal, Role},
    http::{ApiJson, Problem},
    live::{json_event, LiveStreams},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::{
    domain::{AddressInput, IdempotencyKey, ShippingAddress, Status},
    store::{HistoryEntry, OrderLineView, OrderSummary, OrderView, Orders, OrdersError},
};

#[derive(OpenApi)]
#[openapi(
    paths(checkout, list, show, events, cancel, ship, deliver, refund),
    components(schemas(CheckoutBody, AddressBody, OrderView, OrderLineView, HistoryEntry,
        OrderSummary, OrderPage, RefundBody, ShippingAddress, Problem)),
    tags((name = "orders", description = "Checkout and orders"))
)]
pub struct OrdersApiDoc;

impl From<OrdersError> for Problem {
    fn from(e: OrdersError) -> Self {
        match e {
            OrdersError::Invalid(invalid) => {
                Problem::validation(format!("{invalid}.")).field(&invalid.field, invalid.message)
            }
            OrdersError::KeyRequired => Problem::bad_request(
                "Send an Idempotency-Key header (1 to 100 visible ASCII characters) so a retried checkout makes one order.",
            ),
            OrdersError::KeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused",
            )
            .detail("This Idempotency-Key was used for a different checkout. Use a new key."),
            OrdersError::EmptyCart => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "empty-cart",
                "Your cart is empty",
            )
            .detail("Add something to your cart before checking out."),
            OrdersError::CartChanged(why) => {
                Problem::conflict("cart-changed", "Your cart changed", format!("{why}."))
            }
            OrdersError::TooLarge(max) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "order-too-large",
                "Order too large",
            )
            .detail(format!("One order may cost at most {max}. Split it into several.")),
            OrdersError::TooManyPending(_) => Problem::rate_limited(5).detail(
                "You have too many checkouts in progress. Wait for them to finish and try again.",
            ),
            OrdersError::NotFound => Problem::not_found("No such order."),
            OrdersError::WrongStatus(why) => {
                Problem::conflict("order-status", "Not possible now", format!("{why}."))
            }
            OrdersError::Unavailable(why) => {
                tracing::warn!(%why, "orders unavailable");
                Problem::unavailable(2, "Checkout is unavailable right now. Try again shortly.")
            }
            OrdersError::Internal(e) => Problem::internal(&format!("{e:#}")),
        }
    }
}

#[derive(Clone)]
pub struct OrdersState {
    pub orders: Arc<Orders>,
    pub streams: LiveStreams,
}

pub fn router(state: OrdersState) -> Router {
    Router::new()
        .route("/api/v1/checkout", post(checkout))
        .route("/api/v1/orders", get(list))
        .route("/api/v1/orders/{id}", get(show))
        .route("/api/v1/orders/{id}/events", get(events))
        .route("/api/v1/orders/{id}/cancel", post(cancel))
        .route("/api/v1/orders/{id}/ship", post(ship))
        .route("/api/v1/orders/{id}/deliver", post(deliver))
        .route("/api/v1/orders/{id}/refund", post(refund))
        .with_state(state)
}

fn admin(principal: &Principal) -> Result<(), Problem> {
    if principal.has_role(Role::Admin) {
        Ok(())
    } else {
        Err(Problem::forbidden("Only administrators can do this."))
    }
}

fn order_id(raw: &str) -> Result<OrderId, OrdersError> {
    raw.parse().map_err(|_| OrdersError::NotFound)
}

/// The order if the caller may read it (its buyer, or an administrator); someone else's
/// order does not exist for them.
async fn readable(
    orders: &Orders,
    principal: &Principal,
    raw: &str,
) -> Result<OrderView, OrdersError> {
    let order = orders.get(order_id(raw)?).await?;
    if order.buyer == principal.user_id || principal.has_role(Role::Admin) {
        Ok(order)
    } else {
        Err(OrdersError::NotFound)
    }
}

/// A shipping address as sent.
#[derive(Deserialize, ToSchema)]
pub struct AddressBody {
    #[schema(example = "Ada Lovelace")]
    name: String,
    #[schema(example = "12 St James's Square")]
    line1: String,
    #[serde(default)]
    line2: String,
    #[schema(example = "London")]
    city: String,
    #[schema(example = "SW1Y 4JH")]
    postal_code: String,
    #[schema(example = "GB")]
    country: String,
}

impl AddressBody {
    pub fn parse(&self) -> Result<ShippingAddress, OrdersError> {
        Ok(ShippingAddress::parse(&AddressInput {
            name: &self.name,
            line1: &self.line1,
            line2: &self.line2,
            city: &self.city,
            postal_code: &self.postal_code,
            country: &self.country,
        })?)
    }
}

/// The body of `POST /api/v1/checkout`. The order is the caller's cart, priced by the
/// catalog now: prices or totals sent here are ignored.
#[derive(Deserialize, ToSchema)]
pub struct CheckoutBody {
    /// Every store product is physical goods, so an address is required.
    shipping_address: Option<AddressBody>,
}

fn idempotency_key(headers: &HeaderMap) -> Result<IdempotencyKey, OrdersError> {
    let raw = headers
        .get("idempotency-key")
        .ok_or(OrdersError::KeyRequired)?;
    Ok(IdempotencyKey::parse(raw.to_str().unwrap_or("\u{0}"))?)
}

/// Checks out the caller's cart: places an order (status `pending`) and starts its saga
/// (stock, then payment in wallet credits). Answers 202 with the order; follow it with
/// `GET /api/v1/orders/{id}` or its `/events`. The same key and body give the same order
/// (202 again, `Idempotent-Replayed: true`); the same key with another body is a 422.
#[utoipa::path(post, path = "/api/v1/checkout", tag = "orders",
    request_body = CheckoutBody,
    params(("Idempotency-Key" = String, Header, description = "1–100 visible ASCII characters; required")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 202, description = "The order, pending while its saga runs", body = OrderView),
        (status = 400, description = "No Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Something in the cart is no longer sold", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty cart, bad address, too large, or the key reused for another body", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many checkouts in progress", body = Problem, content_type = "application/problem+json"),
    ))]
async fn checkout(
    State(state): State<OrdersState>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CheckoutBody>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let address = body
        .shipping_address
        .as_ref()
        .ok_or_else(|| {
            OrdersError::Invalid(crate::domain::Invalid::new(
                "shipping_address",
                "is required: store goods are shipped",
            ))
        })?
        .parse()?;
    let placed = state
        .orders
        .place(principal.user_id, &key, &address)
        .await?;
    let mut response = (StatusCode::ACCEPTED, ApiJson(placed.order)).into_response();
    if placed.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[derive(Deserialize, IntoParams)]
struct ListQuery {
    /// Only orders of this status.
    status: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1–100, default 20.
    limit: Option<String>,
    /// `true` (administrators): everyone's orders (default: your own).
    all: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OrderPage {
    /// Newest first.
    items: Vec<OrderSummary>,
    /// Pass as `cursor` for the next page; absent on the last.
    next_cursor: Option<String>,
}

/// Your orders, newest first (administrators: everyone's with `all=true`).
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders",
    params(ListQuery),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "One page of orders", body = OrderPage),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`all` without being an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad status, cursor, limit or `all`", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list(
    State(state): State<OrdersState>,
    principal: Principal,
    Query(q): Query<ListQuery>,
) -> Result<ApiJson<OrderPage>, Problem> {
    let all = match q.all.as_deref() {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(Problem::validation("all: must be true or false.")
                .field("all", "must be true or false"))
        }
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => 20,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                Problem::validation("limit: must be a whole number from 1 to 100.")
                    .field("limit", "must be a whole number from 1 to 100")
            })?,
    };
    let buyer = if all {
        admin(&principal)?;
        None
    } else {
        Some(principal.user_id)
    };
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(Status::parse(raw).ok_or_else(|| {
            Problem::validation("status: not an order status.").field(
                "status",
                "must be pending, confirmed, cancelled, shipped, delivered or refunded",
            )
        })?),
    };
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(raw.parse::<OrderId>().map_err(|_| {
            Problem::validation("cursor: not a cursor from this list.")
                .field("cursor", "must be a next_cursor this list gave")
        })?),
    };
    let items = state.orders.list(buyer, status, before, limit).await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|o| o.id.to_string()))
        .flatten();
    Ok(ApiJson(OrderPage { items, next_cursor }))
}

/// An order with its lines and status history (its buyer, or an administrator).
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "The order's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn show(
    State(state): State<OrdersState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<ApiJson<OrderView>, Problem> {
    Ok(ApiJson(readable(&state.orders, &principal, &id).await?))
}

/// How often one open order stream reads its order.
const ORDER_EVERY: Duration = Duration::from_millis(300);

/// An order's status as it changes (server-sent events): `event: order` with the order's
/// JSON now and at each change of status; the stream ends when no further step can follow
/// (cancelled, delivered or refunded).
#[utoipa::path(get, path = "/api/v1/orders/{id}/events", tag = "orders",
    params(("id" = String, Path, description = "The order's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "`text/event-stream` of `order` events (the order's JSON)"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of yours", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many live connections", body = Problem, content_type = "application/problem+json"),
    ))]
async fn events(
    State(state): State<OrdersState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let first = readable(&state.orders, &principal, &id).await?;
    let orders = state.orders.clone();
    let id = first.id;
    let stream = stream::unfold(
        (Some(first), None::<String>, false),
        move |(next, last, ended)| {
            let orders = orders.clone();
            async move {
                if ended {
                    return None;
                }
                let mut next = next;
                loop {
                    if let Some(order) = next.take() {
                        if last.as_deref() != Some(order.status.as_str()) {
                            let done = order.status().is_final();
                            let status = order.status.clone();
                            let event = json_event("order", &order)?;
                            return Some((event, (None, Some(status), done)));
                        }
                    }
                    tokio::time::sleep(ORDER_EVERY).await;
                    match orders.get(id).await {
                        Ok(order) => next = Some(order),
                        Err(e) => {
                            tracing::debug!(error = %e, "reading an order for its stream failed")
                        }
                    }
                }
            }
        },
    );
    Ok(state.streams.respond(stream)?.into_response())
}

/// Cancels your order before it ships: its stock is released and a payment refunded.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path, description = "The order's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled", body = OrderView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Shipped, or ended already", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel(
    State(state): State<OrdersState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<ApiJson<OrderView>, Problem> {
    Ok(ApiJson(
        state
            .orders
            .cancel(principal.user_id, order_id(&id)?)
            .await?,
    ))
}

/// Marks a confirmed order shipped (administrators); its sellers are paid.
#[utoipa::path(post, path = "/api/v1/orders/{id}/ship", tag = "orders",
    params(("id" = String, Path, description = "The order's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Shipped", body = OrderView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not confirmed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn ship(
    State(state): State<OrdersState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<ApiJson<OrderView>, Problem> {
    admin(&principal)?;
    Ok(ApiJson(state.orders.ship(order_id(&id)?).await?))
}

/// Marks a shipped order delivered (administrators).
#[utoipa::path(post, path = "/api/v1/orders/{id}/deliver", tag = "orders",
    params(("id" = String, Path, description = "The order's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Delivered", body = OrderView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not shipped", body = Problem, content_type = "application/problem+json"),
    ))]
async fn deliver(
    State(state): State<OrdersState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<ApiJson<OrderView>, Problem> {
    admin(&principal)?;
    Ok(ApiJson(state.orders.deliver(order_id(&id)?).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Why, shown to the buyer: 1–200 characters.
    #[schema(example = "arrived damaged")]
    reason: String,
}

/// Refunds a paid order (administrators): the buyer's credits come back. Not shipped yet,
/// its stock is released too.
#[utoipa::path(post, path = "/api/v1/orders/{id}/refund", tag = "orders",
    request_body = RefundBody,
    params(("id" = String, Path, description = "The order's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Refunded", body = OrderView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not paid, or refunded already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad reason", body = Problem, content_type = "application/problem+json"),
    ))]
async fn refund(
    State(state): State<OrdersState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RefundBody>,
) -> Result<ApiJson<OrderView>, Problem> {
    admin(&principal)?;
    Ok(ApiJson(
        state.orders.refund(order_id(&id)?, &body.reason).await?,
    ))
}
