//! The store's pages, in the site's shared frame (decision 47: each service renders its own
//! pages with `rendermart-web`'s layout and error pages):
//!
//! * `GET /store` — categories with their counts, the newest products, a search form;
//! * `GET /store/c/{category}` and `GET /store/search` — results with facet links and
//!   counts, filters, a sort, and a next-page link ([`listing`]);
//! * `GET /store/p/{id_or_sku}` — a product, its variants with live availability from
//!   inventory and an "Add to cart" form each ([`product`]).
//!
//! Everything works without JavaScript (GET forms and links), and nothing is inline (the
//! site's CSP). Bad parameters are the catalog's problem shown as a 4xx page, never a 500.
//! The "Add to cart" forms post to `/cart/items` with the anonymous double-submit CSRF
//! token of `rendermart_web::csrf` (the cart's `GuestForm` checks it), signed with the
//! process's form key ([`FormKey::for_process`]), so both ends agree.

mod listing;
mod product;

use std::sync::Arc;

use axum::{response::Response, routing::get, Router};
use rendermart_catalog_api::ProductId;
use rendermart_platform::{http::Problem, recent::Recent, service::Clients};
use rendermart_types::Money;
use rendermart_web::{csrf::FormKey, no_store, page, problem_page, security_headers, Chrome};

use crate::store::{Catalog, Product};

/// What every page handler shares.
#[derive(Clone)]
pub(crate) struct Pages {
    catalog: Arc<Catalog>,
    /// Where inventory's client is found at request time (it starts after the catalog).
    clients: Clients,
    form_key: FormKey,
    cookie_secure: bool,
    /// Anonymous visitors' product pages, rendered once ([`product::Rendered`]).
    rendered: Arc<Recent<ProductId, product::Rendered>>,
}

pub fn router(
    catalog: Arc<Catalog>,
    clients: Clients,
    form_key: FormKey,
    cookie_secure: bool,
) -> Router {
    Router::new()
        .route("/store", get(listing::home))
        .route("/store/search", get(listing::search))
        .route("/store/c/{category}", get(listing::category))
        .route("/store/p/{id_or_sku}", get(product::show))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(Pages {
            catalog,
            clients,
            form_key,
            cookie_secure,
            rendered: Arc::default(),
        })
}

/// A page as a `200`.
fn show_page(template: &impl askama::Template) -> Response {
    page(axum::http::StatusCode::OK, template)
}

/// A catalog error (or any problem) as a page in the frame.
fn error(chrome: &Chrome, e: impl Into<Problem>) -> Response {
    no_store(problem_page(chrome.clone(), e))
}

/// `wall-art` → `Wall art`.
fn category_label(slug: &str) -> String {
    let words = slug.replace('-', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `12.00 USD`, or `12.00 – 18.00 USD` for a product whose variants differ.
fn price_range(min: &Money, max: &Money) -> String {
    if min == max {
        min.to_string()
    } else {
        format!("{} – {max}", major(min))
    }
}

/// The amount alone, in major units: `1250` USD → `12.50`.
fn major(money: &Money) -> String {
    money
        .to_string()
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A product in a list of results.
pub(crate) struct Card {
    pub href: String,
    pub title: String,
    pub kind: String,
    pub category: String,
    pub price: String,
    pub in_stock: bool,
    pub thumb: Option<String>,
}

impl Card {
    fn of(p: &Product) -> Self {
        Self {
            href: format!("/store/p/{}", p.id),
            title: p.title.clone(),
            kind: p.kind.clone(),
            category: category_label(&p.category),
            price: price_range(&p.price.min, &p.price.max),
            in_stock: p.variants.iter().any(|v| v.in_stock),
            thumb: thumbnail(p),
        }
    }
}

/// A same-origin picture of the product: a print's image thumbnail (the site's CSP allows
/// no remote image, so other pictures are linked, not shown).
fn thumbnail(p: &Product) -> Option<String> {
    p.asset_id
        .map(|asset| format!("/api/v1/assets/{asset}/thumbnail"))
}

#[cfg(test)]
mod tests {
    use rendermart_types::Currency;

    use super::*;

    #[test]
    fn categories_and_prices_read_as_words() {
        assert_eq!(category_label("wall-art"), "Wall art");
        assert_eq!(category_label("books"), "Books");
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(
            price_range(&Money::new(1200, usd), &Money::new(1200, usd)),
            "12.00 USD"
        );
        assert_eq!(
            price_range(&Money::new(1200, usd), &Money::new(1850, usd)),
            "12.00 – 18.50 USD"
        );
    }
}
