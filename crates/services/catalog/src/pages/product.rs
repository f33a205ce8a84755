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

use std::{collections::HashMap, sync::Arc};

use askama::Template;
use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue},
    response::{Html, IntoResponse, Response},
};
use rendermart_inventory_api::InventoryApi;
use rendermart_platform::{
    auth::wants_secure_cookies,
    http::{ClientInfo, Problem},
    recent::Weigh,
};
use rendermart_types::Sku;
use rendermart_web::{csrf::FormToken, no_store, Chrome, Visitor};

use super::{category_label, error, thumbnail, Pages};
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
    let available = levels(&pages, &product).await;
    let token = FormToken::for_request(&pages.form_key, &headers);
    // The template escapes the token; a spliced one must need no escaping (ours never
    // does: base64url and a dot).
    let plain = !token
        .value()
        .bytes()
        .any(|b| matches!(b, b'<' | b'>' | b'&' | b'"' | b'\''));
    let body = if visitor.0.is_none() && plain {
        anonymous_page(&pages, chrome, product, available, token.value())
    } else {
        view(chrome, &product, &available, token.value()).render()
    };
    // The form carries a token for this visitor: no shared cache may keep the page.
    let mut response = no_store(match body {
        Ok(body) => Html(body).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "the product page failed to render");
            return Err(error(
                &visitor.chrome().at("/store"),
                Problem::internal(&err),
            ));
        }
    });
    let secure = wants_secure_cookies(&client, pages.cookie_secure);
    if let Some(cookie) = token
        .set_cookie(secure)
        .and_then(|c| HeaderValue::try_from(c).ok())
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The page as everyone who is not signed in sees it, apart from their form token: the
/// same product as read and the same levels give the same text, so it is rendered once
/// ([`Rendered`]) and the token is put where the forms carry it.
fn anonymous_page(
    pages: &Pages,
    chrome: Chrome,
    product: Arc<Product>,
    available: Option<HashMap<Sku, i64>>,
    token: &str,
) -> askama::Result<String> {
    let rendered = match pages.rendered.get(&product.id, 0) {
        Some(rendered)
            if Arc::ptr_eq(&rendered.product, &product) && rendered.levels == available =>
        {
            rendered
        }
        _ => {
            let page = view(chrome, &product, &available, TOKEN_SLOT);
            let forms = page
                .variants
                .iter()
                .filter(|v| v.max_quantity.is_some())
                .count();
            let text = page.render()?;
            let parts: Vec<String> = text.split(TOKEN_SLOT).map(str::to_owned).collect();
            // Only the forms' fields hold the slot; if a product's own text held it too,
            // the page is not cut (and not remembered).
            if parts.len() != forms + 1 {
                return view(page.chrome, &product, &available, token).render();
            }
            let rendered = Arc::new(Rendered {
                product: product.clone(),
                levels: available,
                parts,
            });
            pages.rendered.put(product.id, 0, rendered.clone());
            rendered
        }
    };
    Ok(rendered.with_token(token))
}

/// Where the visitor's form token goes in a [`Rendered`] page. A product's text holds no
/// control characters (`domain`); a page where the slot appears elsewhere is not cut.
const TOKEN_SLOT: &str = "\u{1}csrf-token\u{1}";

/// An anonymous visitor's product page, cut at its form tokens, with what it was rendered
/// from (the product as read, the levels shown). Kept in [`Pages`]' memory by product id:
/// at most [`rendermart_platform::recent::ENTRIES_MAX`] products for half a second; a
/// product read again or levels that moved make it stale.
pub(crate) struct Rendered {
    product: Arc<Product>,
    levels: Option<HashMap<Sku, i64>>,
    parts: Vec<String>,
}

impl Rendered {
    fn with_token(&self, token: &str) -> String {
        let len = self.parts.iter().map(String::len).sum::<usize>()
            + token.len() * (self.parts.len() - 1);
        let mut body = String::with_capacity(len);
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                body.push_str(token);
            }
            body.push_str(part);
        }
        body
    }
}

impl Weigh for Rendered {
    fn weight(&self) -> usize {
        self.parts.iter().map(String::len).sum::<usize>() + 64 * self.parts.len() + 512
    }
}

/// The page's view of a product, its levels and the visitor's form token.
fn view(
    chrome: Chrome,
    product: &Product,
    available: &Option<HashMap<Sku, i64>>,
    token: &str,
) -> ProductPage {
    let on_sale = product.status == "active";
    let variants = product
        .variants
        .iter()
        .map(|v| {
            let availability = match available {
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
    ProductPage {
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
        thumb: thumbnail(product),
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
        csrf_token: token.to_owned(),
        title: product.title.clone(),
    }
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
