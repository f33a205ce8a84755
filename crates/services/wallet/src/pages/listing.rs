//! `GET /market/{id}`: one listing — the image, its provenance, price and status — and its
//! forms: for other members Buy (with a hidden idempotency key, so a double submit buys
//! once) and Offer; for the seller Reprice and Withdraw. A closed listing says who bought it.

use askama::Template;
use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use rendermart_web::{form::MemberForm, see_other, Chrome, ErrorPage, Visitor};
use serde::Deserialize;

use super::{asset::Provenance, fresh_key, member_form, show_page, who, OrPage, Pages};
use crate::{
    domain::IdempotencyKey,
    ledger::WalletError,
    market::{listing_id, Listing, MarketError},
    offers::{DEFAULT_EXPIRES_IN, MAX_EXPIRES_IN},
};

#[derive(Template)]
#[template(path = "listing.html")]
struct ListingPage {
    chrome: Chrome,
    csrf_token: String,
    id: String,
    asset_id: String,
    prompt: String,
    price: String,
    /// The price in minor units, posted back with Buy so a changed price is noticed.
    price_minor: i64,
    /// The price as typed into the reprice field (`12.50`).
    price_major: String,
    status: String,
    is_open: bool,
    currency: String,
    seller: String,
    buyer: Option<String>,
    provenance: Provenance,
    is_member: bool,
    is_seller: bool,
    idempotency_key: String,
    expiries: Vec<Expiry>,
    flash: Option<&'static str>,
}

/// A choice of how long an offer stays open.
struct Expiry {
    secs: i64,
    label: &'static str,
    default: bool,
}

fn expiries() -> Vec<Expiry> {
    [
        (3600, "1 hour"),
        (DEFAULT_EXPIRES_IN, "1 day"),
        (3 * 24 * 3600, "3 days"),
        (MAX_EXPIRES_IN, "7 days"),
    ]
    .into_iter()
    .map(|(secs, label)| Expiry {
        secs,
        label,
        default: secs == DEFAULT_EXPIRES_IN,
    })
    .collect()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListingFlash {
    done: String,
}

fn flash(done: &str) -> Option<&'static str> {
    match done {
        "bought" => {
            Some("You bought this image: it is yours now, and the price has left your wallet.")
        }
        "listed" => Some("Your image is listed for sale."),
        "repriced" => Some("The price is changed."),
        "withdrawn" => Some("Your listing is withdrawn."),
        _ => None,
    }
}

/// The price in major units as a person types it: `1250` → `12.50`.
fn major(pages: &Pages, minor: i64) -> String {
    let shown = pages.money(minor);
    shown
        .split_once(' ')
        .map(|(n, _)| n.to_owned())
        .unwrap_or(shown)
}

async fn find(pages: &Pages, chrome: &Chrome, id: &str) -> Result<Listing, Response> {
    let id = listing_id(id).or_page(chrome)?;
    pages.market.listing(id).await.or_page(chrome)
}

pub async fn show(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<String>,
    flash_query: Result<Query<ListingFlash>, QueryRejection>,
) -> Result<Response, Response> {
    let chrome = visitor.chrome().at("/market");
    let listing = find(&pages, &chrome, &id).await?;
    let asset = pages
        .assets
        .find(&listing.asset_id.to_string())
        .await
        .or_page(&chrome)?;
    let people = [listing.seller_id, asset.creator_id]
        .into_iter()
        .chain(listing.buyer_id);
    let viewer = pages
        .viewer(visitor.0.as_ref().map(|m| m.user_id()), people)
        .await;
    let done = flash_query.map(|q| q.0.done).unwrap_or_default();
    Ok(show_page(&ListingPage {
        csrf_token: visitor
            .0
            .as_ref()
            .map(|m| m.csrf_token().to_owned())
            .unwrap_or_default(),
        id: listing.id.to_string(),
        asset_id: listing.asset_id.to_string(),
        prompt: listing.prompt.clone(),
        price: pages.money(listing.price),
        price_minor: listing.price,
        price_major: major(&pages, listing.price),
        status: listing.status.clone(),
        is_open: listing.status == "open",
        currency: pages.currency().code().to_owned(),
        seller: who(listing.seller_id, &viewer),
        buyer: listing.buyer_id.map(|b| who(b, &viewer)),
        provenance: Provenance::of(&asset, &viewer),
        is_member: viewer.id.is_some(),
        is_seller: viewer.is(listing.seller_id),
        idempotency_key: fresh_key(),
        expiries: expiries(),
        flash: flash(&done),
        chrome,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BuyForm {
    csrf_token: String,
    idempotency_key: String,
    /// The price the buyer saw, in minor units.
    price: String,
}
member_form!(BuyForm, "/login?next=/market");

pub async fn buy(
    State(pages): State<Pages>,
    Path(id): Path<String>,
    MemberForm { member, form }: MemberForm<BuyForm>,
) -> Result<Response, Response> {
    let chrome = Visitor(Some(member.clone())).chrome().at("/market");
    let listing = find(&pages, &chrome, &id).await?;
    let key = IdempotencyKey::parse(&form.idempotency_key)
        .map_err(WalletError::from)
        .or_page(&chrome)?;
    // The price may have changed since the page was shown: never pay more than was seen.
    let seen = form.price.parse::<i64>().ok();
    let bought = pages
        .market
        .buy(member.user_id(), listing.id, Some(key), seen.or(Some(-1)))
        .await;
    if let Err(MarketError::PriceChanged { price }) = bought {
        return Err(ErrorPage::new(
            chrome,
            StatusCode::CONFLICT,
            "The price has changed",
            format!(
                "The seller changed the price to {} since you opened the page, so nothing was bought. Look again and buy at the new price if you still want it.",
                pages.money(price)
            ),
        )
        .link("/market", "Back to the market")
        .into_response());
    }
    bought.or_page(&chrome)?;
    Ok(see_other(&format!("/market/{}?done=bought", listing.id)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OfferForm {
    csrf_token: String,
    amount: String,
    expires_in: String,
}
member_form!(OfferForm, "/login?next=/market");

pub async fn offer(
    State(pages): State<Pages>,
    Path(id): Path<String>,
    MemberForm { member, form }: MemberForm<OfferForm>,
) -> Result<Response, Response> {
    let chrome = Visitor(Some(member.clone())).chrome().at("/market");
    let listing = listing_id(&id).or_page(&chrome)?;
    let amount = pages.amount(&chrome, "Your offer", &form.amount)?;
    let expires_in = match form.expires_in.trim() {
        "" => None,
        raw => Some(raw.parse::<i64>().map_err(|_| {
            MarketError::Wallet(WalletError::Invalid(crate::domain::Invalid {
                field: "expires_in",
                message: "must be one of the offered choices".to_owned(),
            }))
        }))
        .transpose()
        .or_page(&chrome)?,
    };
    pages
        .offers
        .make(member.user_id(), listing, amount, expires_in)
        .await
        .or_page(&chrome)?;
    Ok(see_other("/offers?done=offered"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RepriceForm {
    csrf_token: String,
    price: String,
}
member_form!(RepriceForm, "/login?next=/market");

pub async fn reprice(
    State(pages): State<Pages>,
    Path(id): Path<String>,
    MemberForm { member, form }: MemberForm<RepriceForm>,
) -> Result<Response, Response> {
    let chrome = Visitor(Some(member.clone())).chrome().at("/market");
    let listing = listing_id(&id).or_page(&chrome)?;
    let price = pages.amount(&chrome, "New price", &form.price)?;
    pages
        .market
        .change(member.user_id(), listing, Some(price))
        .await
        .or_page(&chrome)?;
    Ok(see_other(&format!("/market/{listing}?done=repriced")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WithdrawForm {
    csrf_token: String,
}
member_form!(WithdrawForm, "/login?next=/market");

pub async fn withdraw(
    State(pages): State<Pages>,
    Path(id): Path<String>,
    MemberForm { member, .. }: MemberForm<WithdrawForm>,
) -> Result<Response, Response> {
    let chrome = Visitor(Some(member.clone())).chrome().at("/market");
    let listing = listing_id(&id).or_page(&chrome)?;
    pages
        .market
        .change(member.user_id(), listing, None)
        .await
        .or_page(&chrome)?;
    Ok(see_other(&format!("/market/{listing}?done=withdrawn")))
}
