//! `GET /store/p/{id_or_sku}`: a product, its variants with their price and availability,
//! and an "Add to cart" form for each variant that can be ordered.
//!
//! Availability is inventory's level (`InventoryApi::levels_to_show`: at most half a
//! second old, decision 65): "In stock", "Only N left" (at most [`FEW`]) or "Out of
//! stock"; a SKU inventory never stocked is out of stock. If inventory does not answer, the page falls back to the catalog's own flag
//! (kept from inventory's events) rather than failing.
//!
//! The forms post to `/cart/items` (`sku`, `quantity`, `csrf_token`), anonymous-form style:
//! the token is the visitor's signed double-submit token, whose cookie is set here when it
//! is new.

use std::collections::HashMap;

use askama::Template;
use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue},
    response::Response,
};
use rendermart_inventory_api::InventoryApi;
use rendermart_platform::{auth::wants_secure_cookies, http::ClientInfo};
use rendermart_types::Sku;
use rendermart_web::{csrf::FormToken, no_store, Chrome, Visitor};

use super::{category_label, error, show_page, thumbnail, Pages};
use crate::{api::find, store::Product};

/// At most this many left reads "Only N left".
const FEW: i64 = 5;
/// The most one form adds at once.
const QUANTITY_MAX: i64 = 99;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Availability {
    InStock,
    Few(i64),
    Out,
}

impl Availability {
    /// From inventory's available count (`None`: never stocked).
    fn of(available: Option<i64>) -> Self {
        match available.unwrap_or(0) {
            n if n <= 0 => Self::Out,
            n if n <= FEW => Self::Few(n),
            _ => Self::InStock,
        }
    }

    fn label(self) -> String {
        match self {
            Self::InStock => "In stock".to_owned(),
            Self::Few(n) => format!("Only {n} left"),
            Self::Out => "Out of stock".to_owned(),
        }
    }

    fn class(self) -> &'static str {
        match self {
            Self::InStock => "stock-in",
            Self::Few(_) => "stock-few",
            Self::Out => "stock-out",
        }
    }
}

struct VariantView {
    sku: String,
    name: String,
    options: String,
    price: String,
    availability: String,
    class: &'static str,
    /// Can be ordered now: the form is shown, with this most per form.
    max_quantity: Option<i64>,
}

#[derive(Template)]
#[template(path = "store_product.html")]
struct ProductPage {
    chrome: Chrome,
    title: String,
    kind: String,
    description: String,
    category: String,
    category_href: String,
    /// (tag, its search's href).
    tags: Vec<(String, String)>,
    price: String,
    on_sale: bool,
    thumb: Option<String>,
    /// Pictures on other sites: (href, label). The CSP shows no remote image; they are
    /// links.
    pictures: Vec<(String, String)>,
    variants: Vec<VariantView>,
    csrf_token: String,
}

pub async fn show(
    State(pages): State<Pages>,
    visitor: Visitor,
    client: ClientInfo,
    headers: HeaderMap,
    Path(id_or_sku): Path<String>,
) -> Result<Response, Response> {
    let chrome = visitor.chrome().at("/store");
    let product = find(&pages.catalog, &id_or_sku)
        .await
        .map_err(|e| error(&chrome, e))?;
    let on_sale = product.status == "active";
    let available = levels(&pages, &product).await;
    let variants = product
        .variants
        .iter()
        .map(|v| {
            let availability = match &available {
                Some(levels) => Availability::of(levels.get(&v.sku).copied()),
                None if v.in_stock => Availability::InStock,
                None => Availability::Out,
            };
            let max_quantity = match availability {
                Availability::Out => None,
                Availability::Few(n) => Some(n),
                Availability::InStock => Some(
                    available
                        .as_ref()
                        .and_then(|l| l.get(&v.sku).copied())
                        .unwrap_or(QUANTITY_MAX)
                        .min(QUANTITY_MAX),
                ),
            }
            .filter(|_| on_sale);
            VariantView {
                sku: v.sku.to_string(),
                name: v.name.clone(),
                options: v
                    .options
                    .iter()
                    .map(|(k, val)| format!("{}: {val}", category_label(k)))
                    .collect::<Vec<_>>()
                    .join(", "),
                price: v.price.to_string(),
                availability: availability.label(),
                class: availability.class(),
                max_quantity,
            }
        })
        .collect();
    let token = FormToken::for_request(&pages.form_key, &headers);
    let body = ProductPage {
        chrome,
        kind: product.kind.clone(),
        description: product.description.clone(),
        category: category_label(&product.category),
        category_href: format!("/store/c/{}", product.category),
        tags: product
            .tags
            .iter()
            .map(|t| {
                let query: String = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("tag", t)
                    .finish();
                (t.clone(), format!("/store/search?{query}"))
            })
            .collect(),
        price: super::price_range(&product.price.min, &product.price.max),
        on_sale,
        thumb: thumbnail(&product),
        pictures: product
            .images
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let host = url::Url::parse(url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_default();
                (url.clone(), format!("Picture {} (on {host})", i + 1))
            })
            .collect(),
        variants,
        csrf_token: token.value().to_owned(),
        title: product.title.clone(),
    };
    // The form carries a token for this visitor: no shared cache may keep the page.
    let mut response = no_store(show_page(&body));
    let secure = wants_secure_cookies(&client, pages.cookie_secure);
    if let Some(cookie) = token
        .set_cookie(secure)
        .and_then(|c| HeaderValue::try_from(c).ok())
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// Available units per SKU from inventory (absent: never stocked); `None` when inventory
/// is not reachable from here or did not answer.
async fn levels(pages: &Pages, product: &Product) -> Option<HashMap<Sku, i64>> {
    let inventory = pages.clients.get::<dyn InventoryApi>()?;
    let skus: Vec<Sku> = product.variants.iter().map(|v| v.sku.clone()).collect();
    match inventory.levels_to_show(&skus).await {
        Ok(levels) => Some(levels.into_iter().map(|l| (l.sku, l.available)).collect()),
        Err(e) => {
            tracing::warn!(error = %e, "stock levels unavailable; showing the catalog's flag");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_reads_in_stock_few_or_out() {
        assert_eq!(Availability::of(None).label(), "Out of stock");
        assert_eq!(Availability::of(Some(0)).label(), "Out of stock");
        assert_eq!(Availability::of(Some(3)).label(), "Only 3 left");
        assert_eq!(Availability::of(Some(5)).label(), "Only 5 left");
        assert_eq!(Availability::of(Some(6)).label(), "In stock");
    }
}
