//! The cart's pages, in the site's shared frame (decision 47): `GET /cart`, and the forms
//! that change it — `POST /cart/items` (the "Add to cart" of product pages), `POST
//! /cart/items/{sku}` (a new quantity; 0 removes) and `POST /cart/items/{sku}/remove`.
//! Each answers `303 /cart`. No JavaScript needed.
//!
//! Guests and members post the same forms, so the CSRF check follows the visitor: a
//! member's form carries their session's token, a guest's the signed double-submit token
//! (`rendermart_web::csrf`) made with the process's form key, which every page router of
//! the process shares (so a product page another service renders posts here).

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use rendermart_platform::{auth, http::ClientInfo};
use rendermart_types::Sku;
use rendermart_web::{
    csrf::{self, FormKey, FormToken},
    form::HtmlForm,
    no_store, page, problem_page, security_headers, see_other, Chrome, ErrorPage, Visitor,
};
use serde::Deserialize;

use crate::{
    cart::{CartError, Carts},
    domain::Quantity,
    shopper::Shopper,
};

const CART_PAGE: &str = "/cart";

#[derive(Clone)]
struct Pages {
    carts: Arc<Carts>,
    form_key: FormKey,
}

pub fn router(carts: Arc<Carts>, form_key: FormKey) -> Router {
    Router::new()
        .route(CART_PAGE, get(show))
        .route("/cart/items", post(add))
        .route("/cart/items/{sku}", post(update))
        .route("/cart/items/{sku}/remove", post(remove))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(Pages { carts, form_key })
}

struct Line {
    sku: String,
    title: String,
    variant: String,
    unit_price: String,
    line_total: String,
    quantity: u32,
    on_sale: bool,
    in_stock: bool,
}

#[derive(Template)]
#[template(path = "cart.html")]
struct CartPage {
    chrome: Chrome,
    csrf_token: String,
    guest: bool,
    lines: Vec<Line>,
    total: String,
    count: u64,
    max_quantity: u32,
}

fn secure(pages: &Pages, client: &ClientInfo) -> bool {
    auth::wants_secure_cookies(client, pages.carts.cookie_secure())
}

/// The visitor's cart (merging a guest cart into a member's).
async fn shopper(
    pages: &Pages,
    visitor: &Visitor,
    client: &ClientInfo,
    headers: &HeaderMap,
    writes: bool,
) -> Result<Shopper, CartError> {
    let principal = visitor.0.as_ref().map(|m| &m.principal);
    Shopper::resolve(
        &pages.carts,
        principal,
        headers,
        secure(pages, client),
        writes,
    )
    .await
}

async fn show(
    State(pages): State<Pages>,
    visitor: Visitor,
    client: ClientInfo,
    headers: HeaderMap,
) -> Response {
    let chrome = visitor.chrome().at(CART_PAGE);
    let shopper = match shopper(&pages, &visitor, &client, &headers, false).await {
        Ok(shopper) => shopper,
        Err(e) => return problem_page(chrome, e),
    };
    let view = match pages.carts.view(shopper.owner.as_ref()).await {
        Ok(view) => view,
        Err(e) => return problem_page(chrome, e),
    };
    let (csrf_token, form_cookie) = match &visitor.0 {
        Some(member) => (member.csrf_token().to_owned(), None),
        None => {
            let token = FormToken::for_request(&pages.form_key, &headers);
            let cookie = token.set_cookie(secure(&pages, &client));
            (token.value().to_owned(), cookie)
        }
    };
    let money = |m: Option<rendermart_types::Money>| m.map(|m| m.to_string()).unwrap_or_default();
    let template = CartPage {
        guest: visitor.0.is_none(),
        lines: view
            .lines
            .into_iter()
            .map(|l| Line {
                title: l.title.clone().unwrap_or_else(|| l.sku.to_string()),
                variant: l.variant.unwrap_or_default(),
                unit_price: money(l.unit_price),
                line_total: money(l.line_total),
                quantity: l.quantity,
                on_sale: l.on_sale,
                in_stock: l.in_stock,
                sku: l.sku.to_string(),
            })
            .collect(),
        total: money(view.total),
        count: view.count,
        max_quantity: pages.carts.limits().max_quantity,
        csrf_token,
        chrome,
    };
    let mut response = no_store(page(StatusCode::OK, &template));
    if let Some(cookie) = form_cookie.and_then(|c| HeaderValue::try_from(c).ok()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    shopper.respond(response)
}

/// A form of the cart pages: its CSRF token is checked against the member's session or,
/// for a guest, the signed double-submit cookie.
#[allow(clippy::result_large_err)]
fn check_form(
    pages: &Pages,
    visitor: &Visitor,
    headers: &HeaderMap,
    submitted: &str,
) -> Result<(), Response> {
    let chrome = visitor.chrome();
    match &visitor.0 {
        Some(member) if member.csrf_matches(submitted) => Ok(()),
        Some(_) => Err(ErrorPage::session_csrf(chrome)
            .link(CART_PAGE, "Back to your cart")
            .into_response()),
        None if csrf::anonymous_form_is_genuine(&pages.form_key, headers, submitted) => Ok(()),
        None => Err(ErrorPage::anonymous_csrf(chrome, CART_PAGE).into_response()),
    }
}

#[allow(clippy::result_large_err)]
fn sku(chrome: &Chrome, raw: &str) -> Result<Sku, Response> {
    Sku::parse(raw).map_err(|e| {
        problem_page(
            chrome.clone(),
            CartError::Invalid(crate::domain::invalid("sku", e.to_string())),
        )
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AddForm {
    csrf_token: String,
    sku: String,
    quantity: String,
}

async fn add(
    State(pages): State<Pages>,
    visitor: Visitor,
    client: ClientInfo,
    headers: HeaderMap,
    HtmlForm(form): HtmlForm<AddForm>,
) -> Response {
    let chrome = visitor.chrome();
    if let Err(refused) = check_form(&pages, &visitor, &headers, &form.csrf_token) {
        return refused;
    }
    let sku = match sku(&chrome, &form.sku) {
        Ok(sku) => sku,
        Err(page) => return page,
    };
    // An "Add to cart" button without a quantity field adds one.
    let text = if form.quantity.trim().is_empty() {
        "1"
    } else {
        &form.quantity
    };
    let max = pages.carts.limits().max_quantity;
    let quantity = match Quantity::from_text(text, max) {
        Ok(q) => q,
        Err(e) => return problem_page(chrome, CartError::from(e)),
    };
    let result = async {
        let shopper = shopper(&pages, &visitor, &client, &headers, true).await?;
        pages.carts.add(shopper.cart()?, &sku, quantity).await?;
        Ok::<_, CartError>(shopper)
    }
    .await;
    match result {
        Ok(shopper) => shopper.respond(see_other(CART_PAGE)),
        Err(e) => problem_page(chrome, e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UpdateForm {
    csrf_token: String,
    quantity: String,
}

async fn update(
    State(pages): State<Pages>,
    visitor: Visitor,
    client: ClientInfo,
    headers: HeaderMap,
    Path(raw): Path<String>,
    HtmlForm(form): HtmlForm<UpdateForm>,
) -> Response {
    let chrome = visitor.chrome();
    if let Err(refused) = check_form(&pages, &visitor, &headers, &form.csrf_token) {
        return refused;
    }
    let sku = match sku(&chrome, &raw) {
        Ok(sku) => sku,
        Err(page) => return page,
    };
    // 0 removes the line; anything else must be a quantity.
    let quantity = if form.quantity.trim() == "0" {
        None
    } else {
        match Quantity::from_text(&form.quantity, pages.carts.limits().max_quantity) {
            Ok(q) => Some(q),
            Err(e) => return problem_page(chrome, CartError::from(e)),
        }
    };
    let result = async {
        let shopper = shopper(&pages, &visitor, &client, &headers, true).await?;
        match quantity {
            Some(q) => {
                pages.carts.set(shopper.cart()?, &sku, q).await?;
            }
            None => pages.carts.remove(shopper.cart()?, &sku).await?,
        }
        Ok::<_, CartError>(shopper)
    }
    .await;
    match result {
        Ok(shopper) => shopper.respond(see_other(CART_PAGE)),
        Err(e) => problem_page(chrome, e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RemoveForm {
    csrf_token: String,
}

async fn remove(
    State(pages): State<Pages>,
    visitor: Visitor,
    client: ClientInfo,
    headers: HeaderMap,
    Path(raw): Path<String>,
    HtmlForm(form): HtmlForm<RemoveForm>,
) -> Response {
    let chrome = visitor.chrome();
    if let Err(refused) = check_form(&pages, &visitor, &headers, &form.csrf_token) {
        return refused;
    }
    let sku = match sku(&chrome, &raw) {
        Ok(sku) => sku,
        Err(page) => return page,
    };
    let result = async {
        let shopper = shopper(&pages, &visitor, &client, &headers, true).await?;
        pages.carts.remove(shopper.cart()?, &sku).await?;
        Ok::<_, CartError>(shopper)
    }
    .await;
    match result {
        Ok(shopper) => shopper.respond(see_other(CART_PAGE)),
        Err(e) => problem_page(chrome, e),
    }
}
