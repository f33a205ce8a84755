//! The order pages, in the site's shared frame (decision 47): checkout, the buyer's orders
//! and one order with its live status, and the administrators' order desk. Thin handlers:
//! parse the form, call one [`Orders`] method, answer with a page or a `303`. Everything
//! works without JavaScript; an order page follows its status over SSE with `live.js`
//! (`data-live-src`) and, without it, refreshes itself while the order is pending.

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    http::StatusCode,
    response::Response,
    routing::{get, post},
    Router,
};
use rendermart_orders_api::OrderId;
use rendermart_platform::{auth::Role, http::Problem};
use rendermart_web::{
    form::MemberForm, no_store, page, problem_page, security_headers, see_other, Chrome, ErrorPage,
    Member, Visitor,
};
use serde::Deserialize;

use crate::{
    domain::{AddressInput, IdempotencyKey, ShippingAddress, Status},
    store::{OrderLineView, OrderSummary, OrderView, Orders, OrdersError},
};

pub fn router(orders: Arc<Orders>) -> Router {
    Router::new()
        .route("/checkout", get(checkout_page).post(checkout))
        .route("/orders", get(orders_page))
        .route("/orders/{id}", get(order_page))
        .route("/orders/{id}/cancel", post(cancel))
        .route("/admin/orders", get(admin_page))
        .route("/admin/orders/{id}/{action}", post(admin_action))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(orders)
}

fn show(template: &impl Template) -> Response {
    no_store(page(StatusCode::OK, template))
}

fn fail(chrome: &Chrome, e: impl Into<Problem>) -> Response {
    problem_page(chrome.clone(), e)
}

fn fresh_key() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Declares a member form's CSRF field and where a signed-out poster is sent.
macro_rules! member_form {
    ($form:ty, $log_in_first:expr) => {
        impl rendermart_web::form::CsrfField for $form {
            fn csrf_token(&self) -> &str {
                &self.csrf_token
            }
            const LOG_IN_FIRST: &'static str = $log_in_first;
        }
    };
}

struct LineRow {
    title: String,
    variant: String,
    sku: String,
    quantity: u32,
    unit_price: String,
    line_total: String,
    href: String,
}

impl From<&OrderLineView> for LineRow {
    fn from(l: &OrderLineView) -> Self {
        Self {
            title: l.title.clone(),
            variant: l.variant.clone(),
            sku: l.sku.as_str().to_owned(),
            quantity: l.quantity,
            unit_price: l.unit_price.to_string(),
            line_total: l.line_total.to_string(),
            href: format!("/store/p/{}", l.product_id),
        }
    }
}

// ---- checkout ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage {
    chrome: Chrome,
    csrf_token: String,
    idempotency_key: String,
    lines: Vec<LineRow>,
    total: String,
    /// Why the cart cannot be checked out (empty, changed), instead of the form.
    blocked: Option<String>,
}

async fn checkout_page(State(orders): State<Arc<Orders>>, visitor: Visitor) -> Response {
    let Some(member) = visitor.0.clone() else {
        return see_other("/login?next=/checkout");
    };
    let chrome = visitor.chrome();
    let (lines, total, blocked) = match orders.priced_cart(member.user_id()).await {
        Ok((_, lines)) => {
            let total = lines
                .iter()
                .try_fold(None::<rendermart_types::Money>, |sum, l| match sum {
                    None => Some(Some(l.line_total)),
                    Some(s) => s.checked_add(l.line_total).ok().map(Some),
                })
                .flatten()
                .map(|m| m.to_string())
                .unwrap_or_default();
            (lines.iter().map(LineRow::from).collect(), total, None)
        }
        Err(OrdersError::EmptyCart) => (
            Vec::new(),
            String::new(),
            Some("Your cart is empty.".into()),
        ),
        Err(OrdersError::CartChanged(why)) => (
            Vec::new(),
            String::new(),
            Some(format!("Your cart changed: {why}.")),
        ),
        Err(e) => return fail(&chrome, e),
    };
    show(&CheckoutPage {
        csrf_token: member.csrf_token().to_owned(),
        idempotency_key: fresh_key(),
        lines,
        total,
        blocked,
        chrome,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CheckoutForm {
    csrf_token: String,
    idempotency_key: String,
    name: String,
    line1: String,
    line2: String,
    city: String,
    postal_code: String,
    country: String,
}
member_form!(CheckoutForm, "/login?next=/checkout");

async fn checkout(
    State(orders): State<Arc<Orders>>,
    MemberForm { member, form }: MemberForm<CheckoutForm>,
) -> Response {
    let chrome = Visitor(Some(member.clone())).chrome();
    let placed = async {
        let key = IdempotencyKey::parse(&form.idempotency_key)?;
        let address = ShippingAddress::parse(&AddressInput {
            name: &form.name,
            line1: &form.line1,
            line2: &form.line2,
            city: &form.city,
            postal_code: &form.postal_code,
            country: &form.country,
        })?;
        orders.place(member.user_id(), &key, &address).await
    }
    .await;
    match placed {
        Ok(placed) => see_other(&format!("/orders/{}", placed.order.id)),
        Err(e) => fail(&chrome, e),
    }
}

// ---- the buyer's orders -----------------------------------------------------------------

struct SummaryRow {
    id: String,
    href: String,
    status: String,
    reason: String,
    total: String,
    item_count: i64,
    created: String,
}

impl SummaryRow {
    fn of(o: &OrderSummary, href: String) -> Self {
        Self {
            id: o.id.to_string(),
            href,
            status: o.status.clone(),
            reason: o.reason.clone().unwrap_or_default(),
            total: o.total.to_string(),
            item_count: o.item_count,
            created: stamp(o.created_at),
        }
    }
}

fn stamp(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    at.format(format).unwrap_or_default()
}

#[derive(Template)]
#[template(path = "orders.html")]
struct OrdersPage {
    chrome: Chrome,
    rows: Vec<SummaryRow>,
}

async fn orders_page(State(orders): State<Arc<Orders>>, visitor: Visitor) -> Response {
    let Some(member) = visitor.0.clone() else {
        return see_other("/login?next=/orders");
    };
    let chrome = visitor.chrome();
    match orders.list(Some(member.user_id()), None, None, 50).await {
        Ok(list) => show(&OrdersPage {
            rows: list
                .iter()
                .map(|o| SummaryRow::of(o, format!("/orders/{}", o.id)))
                .collect(),
            chrome,
        }),
        Err(e) => fail(&chrome, e),
    }
}

#[derive(Template)]
#[template(path = "order.html")]
struct OrderPage {
    chrome: Chrome,
    csrf_token: String,
    id: String,
    status: String,
    reason: String,
    pending: bool,
    live: bool,
    can_cancel: bool,
    total: String,
    lines: Vec<LineRow>,
    address: ShippingAddress,
    history: Vec<(String, String, String)>,
    flash: Option<&'static str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OrderQuery {
    done: String,
}

/// An order its viewer may read (its buyer or an administrator), or a 404 page.
async fn readable(orders: &Orders, member: &Member, raw: &str) -> Result<OrderView, OrdersError> {
    let id: OrderId = raw.parse().map_err(|_| OrdersError::NotFound)?;
    let order = orders.get(id).await?;
    if order.buyer == member.user_id() || member.principal.has_role(Role::Admin) {
        Ok(order)
    } else {
        Err(OrdersError::NotFound)
    }
}

async fn order_page(
    State(orders): State<Arc<Orders>>,
    visitor: Visitor,
    Path(id): Path<String>,
    query: Result<Query<OrderQuery>, QueryRejection>,
) -> Response {
    let Some(member) = visitor.0.clone() else {
        return see_other("/login?next=/orders");
    };
    let chrome = visitor.chrome();
    let order = match readable(&orders, &member, &id).await {
        Ok(order) => order,
        Err(e) => return fail(&chrome, e),
    };
    let status = order.status();
    show(&OrderPage {
        csrf_token: member.csrf_token().to_owned(),
        id: order.id.to_string(),
        status: order.status.clone(),
        reason: order.reason.clone().unwrap_or_default(),
        pending: status == Status::Pending,
        live: !status.is_final(),
        can_cancel: order.buyer == member.user_id() && status.buyer_may_cancel(),
        total: order.total.to_string(),
        lines: order.lines.iter().map(LineRow::from).collect(),
        address: order.shipping_address.clone(),
        history: order
            .history
            .iter()
            .map(|h| (h.status.clone(), h.note.clone(), stamp(h.at)))
            .collect(),
        flash: match query.map(|q| q.0.done).ok().as_deref() {
            Some("cancelled") => {
                Some("Your order is cancelled; any payment is refunded to your wallet.")
            }
            _ => None,
        },
        chrome,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PlainForm {
    csrf_token: String,
    reason: String,
}
member_form!(PlainForm, "/login?next=/orders");

async fn cancel(
    State(orders): State<Arc<Orders>>,
    Path(id): Path<String>,
    MemberForm { member, .. }: MemberForm<PlainForm>,
) -> Response {
    let chrome = Visitor(Some(member.clone())).chrome();
    let Ok(order) = id.parse::<OrderId>() else {
        return fail(&chrome, OrdersError::NotFound);
    };
    match orders.cancel(member.user_id(), order).await {
        Ok(_) => see_other(&format!("/orders/{order}?done=cancelled")),
        Err(e) => fail(&chrome, e),
    }
}

// ---- the administrators' desk -----------------------------------------------------------

struct DeskRow {
    summary: SummaryRow,
    can_ship: bool,
    can_deliver: bool,
    can_refund: bool,
}

#[derive(Template)]
#[template(path = "admin_orders.html")]
struct AdminPage {
    chrome: Chrome,
    csrf_token: String,
    rows: Vec<DeskRow>,
    /// The status filter's options: (value, selected).
    statuses: Vec<StatusOption>,
    all_selected: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeskQuery {
    status: String,
}

struct StatusOption {
    value: &'static str,
    selected: bool,
}

const STATUSES: [&str; 6] = [
    "pending",
    "confirmed",
    "cancelled",
    "shipped",
    "delivered",
    "refunded",
];

fn not_admin(chrome: Chrome) -> Response {
    page(
        StatusCode::FORBIDDEN,
        &ErrorPage::new(
            chrome,
            StatusCode::FORBIDDEN,
            "Administrators only",
            "This page is for the store's administrators.",
        )
        .link("/orders", "Your orders"),
    )
}

async fn admin_page(
    State(orders): State<Arc<Orders>>,
    visitor: Visitor,
    query: Result<Query<DeskQuery>, QueryRejection>,
) -> Response {
    let Some(member) = visitor.0.clone() else {
        return see_other("/login?next=/admin/orders");
    };
    let chrome = visitor.chrome();
    if !member.principal.has_role(Role::Admin) {
        return not_admin(chrome);
    }
    let raw = query.map(|q| q.0.status).unwrap_or_default();
    let status = match raw.as_str() {
        "" => None,
        s => match Status::parse(s) {
            Some(s) => Some(s),
            None => {
                return fail(
                    &chrome,
                    Problem::validation("status: not an order status.")
                        .field("status", "must be an order status"),
                )
            }
        },
    };
    match orders.list(None, status, None, 100).await {
        Ok(list) => show(&AdminPage {
            csrf_token: member.csrf_token().to_owned(),
            rows: list
                .iter()
                .map(|o| {
                    let s = Status::parse(&o.status).unwrap_or(Status::Pending);
                    DeskRow {
                        summary: SummaryRow::of(o, format!("/orders/{}", o.id)),
                        can_ship: s == Status::Confirmed,
                        can_deliver: s == Status::Shipped,
                        can_refund: s.may_refund(),
                    }
                })
                .collect(),
            statuses: STATUSES
                .iter()
                .map(|s| StatusOption {
                    value: s,
                    selected: *s == raw,
                })
                .collect(),
            all_selected: raw.is_empty(),
            chrome,
        }),
        Err(e) => fail(&chrome, e),
    }
}

async fn admin_action(
    State(orders): State<Arc<Orders>>,
    Path((id, action)): Path<(String, String)>,
    MemberForm { member, form }: MemberForm<PlainForm>,
) -> Response {
    let chrome = Visitor(Some(member.clone())).chrome();
    if !member.principal.has_role(Role::Admin) {
        return not_admin(chrome);
    }
    let Ok(order) = id.parse::<OrderId>() else {
        return fail(&chrome, OrdersError::NotFound);
    };
    let done = match action.as_str() {
        "ship" => orders.ship(order).await,
        "deliver" => orders.deliver(order).await,
        "refund" => orders.refund(order, &form.reason).await,
        _ => Err(OrdersError::NotFound),
    };
    match done {
        Ok(_) => see_other("/admin/orders"),
        Err(e) => fail(&chrome, e),
    }
}
