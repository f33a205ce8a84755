//! `GET /market`: open listings as a grid, filtered by words of the prompt, newest or
//! cheapest first, a page at a time. The filter is a GET form and the pages are links, so
//! it all works without script; with `/static/live.js` the grid follows
//! `/api/v1/market/events` (prices change, sold cards leave, new ones are announced).

use askama::Template;
use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    response::Response,
};
use rendermart_web::{problem_page, Chrome, Visitor};
use serde::Deserialize;

use super::{show_page, who, OrPage, Pages};
use crate::market::{listing_id, BrowseQuery, MarketError};

/// Listings per page.
const PAGE_SIZE: u32 = 24;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MarketQuery {
    q: String,
    /// `newest` or `price`.
    sort: String,
    after: String,
}

#[derive(Template)]
#[template(path = "market.html")]
struct MarketPage {
    chrome: Chrome,
    q: String,
    by_price: bool,
    cards: Vec<Card>,
    /// The next page, when there is one.
    next_href: Option<String>,
    /// Not on the first page: the way back to it.
    first_href: Option<String>,
    currency: String,
    exponent: u32,
    /// On the first page of an unfiltered market, new listings are added live, in this
    /// order (`newest` or `price`); elsewhere a notice offers a reload.
    live_insert: Option<&'static str>,
}

pub(super) struct Card {
    pub id: String,
    pub asset_id: String,
    pub prompt: String,
    pub price: String,
    /// For placing a card added live in a grid sorted by price.
    pub price_minor: i64,
    pub seller: String,
}

/// One listing's card alone, for live.js to add to an open market page.
#[derive(Template)]
#[template(path = "listing_card_fragment.html")]
struct CardFragment {
    card: Card,
}

/// `/market?q=…&sort=…[&after=…]`, with only the parts that are set.
fn market_href(q: &str, by_price: bool, after: Option<&str>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if !q.is_empty() {
        query.append_pair("q", q);
    }
    if by_price {
        query.append_pair("sort", "price");
    }
    if let Some(after) = after {
        query.append_pair("after", after);
    }
    let query = query.finish();
    if query.is_empty() {
        "/market".to_owned()
    } else {
        format!("/market?{query}")
    }
}

pub async fn show(
    State(pages): State<Pages>,
    visitor: Visitor,
    query: Result<Query<MarketQuery>, QueryRejection>,
) -> Result<Response, Response> {
    let chrome = visitor.chrome().at("/market");
    let query = query.map(|q| q.0).unwrap_or_default();
    let q = query.q.trim().chars().take(100).collect::<String>();
    let by_price = query.sort == "price";
    let after = Some(query.after.trim()).filter(|a| !a.is_empty());
    let browse = BrowseQuery {
        sort: by_price.then(|| "price".to_owned()),
        q: Some(q.clone()).filter(|q| !q.is_empty()),
        after: after.map(str::to_owned),
        limit: Some(PAGE_SIZE),
    };
    let listings = pages.market.browse(&browse).await.or_page(&chrome)?;
    let viewer = pages
        .viewer(
            visitor.0.as_ref().map(|m| m.user_id()),
            listings.items.iter().map(|l| l.seller_id),
        )
        .await;
    let cards = listings
        .items
        .into_iter()
        .map(|l| Card {
            id: l.id.to_string(),
            asset_id: l.asset_id.to_string(),
            prompt: l.prompt,
            price: pages.money(l.price),
            price_minor: l.price,
            seller: who(l.seller_id, &viewer),
        })
        .collect();
    let currency = pages.currency();
    let live_insert =
        (q.is_empty() && after.is_none()).then_some(if by_price { "price" } else { "newest" });
    Ok(show_page(&MarketPage {
        chrome,
        next_href: listings
            .next
            .as_deref()
            .map(|next| market_href(&q, by_price, Some(next))),
        first_href: after.map(|_| market_href(&q, by_price, None)),
        q,
        by_price,
        cards,
        currency: currency.code().to_owned(),
        exponent: currency.exponent(),
        live_insert,
    }))
}

/// `GET /market/{id}/card`: an open listing's card (an HTML fragment), which live.js adds
/// to open market pages when the listing appears. A closed listing is a 409, an unknown
/// one a 404.
pub async fn card(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let chrome = visitor.chrome().at("/market");
    let listing = listing_id(&id).map_err(|p| problem_page(chrome.clone(), p))?;
    let listing = pages.market.listing(listing).await.or_page(&chrome)?;
    if listing.status != "open" {
        return Err(problem_page(chrome, MarketError::Closed));
    }
    let viewer = pages
        .viewer(visitor.0.as_ref().map(|m| m.user_id()), [listing.seller_id])
        .await;
    Ok(show_page(&CardFragment {
        card: Card {
            id: listing.id.to_string(),
            asset_id: listing.asset_id.to_string(),
            prompt: listing.prompt.clone(),
            price: pages.money(listing.price),
            price_minor: listing.price,
            seller: who(listing.seller_id, &viewer),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_links_keep_the_filter_and_encode_it() {
        assert_eq!(market_href("", false, None), "/market");
        assert_eq!(
            market_href("red & blue", true, Some("100:abc")),
            "/market?q=red+%26+blue&sort=price&after=100%3Aabc"
        );
    }
}
