//! `GET /offers` (members): offers received (to accept, reject or counter) and made (to
//! cancel; a seller's counter to accept or reject), newest first, each with the forms its
//! viewer may use. The service decides who may do what; the page only hides what would
//! be refused.

use std::collections::HashMap;

use askama::Template;
use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    response::Response,
};
use rendermart_types::UserId;
use rendermart_web::{form::MemberForm, see_other, Chrome, Visitor};
use serde::Deserialize;

use super::{member_form, show_page, OrPage, Pages, Stamp};
use crate::{
    market::ListingId,
    offers::{InboxQuery, Offer, OfferId},
};

const LOG_IN_FIRST: &str = "/login?next=/offers";
/// Offers per list (received, made).
const LIST_SIZE: u32 = 50;

#[derive(Template)]
#[template(path = "offers.html")]
struct OffersPage {
    chrome: Chrome,
    csrf_token: String,
    currency: String,
    received: Vec<Row>,
    made: Vec<Row>,
    flash: Option<&'static str>,
}

struct Row {
    id: String,
    listing_id: String,
    asset_id: String,
    prompt: String,
    /// "Offer" or "Counter".
    kind: &'static str,
    amount: String,
    status: String,
    expires: Stamp,
    can_answer: bool,
    can_counter: bool,
    can_cancel: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OffersQuery {
    done: String,
}

fn flash(done: &str) -> Option<&'static str> {
    match done {
        "offered" => {
            Some("Your offer is made: the amount is held until it is answered or expires.")
        }
        "accepted" => Some("Accepted: the sale is complete."),
        "rejected" => Some("Rejected; any held amount is given back."),
        "cancelled" => Some("Cancelled; the held amount is back in your wallet."),
        "countered" => Some("Your counter is sent to the buyer."),
        _ => None,
    }
}

pub async fn show(
    State(pages): State<Pages>,
    visitor: Visitor,
    query: Result<Query<OffersQuery>, QueryRejection>,
) -> Result<Response, Response> {
    let Some(member) = visitor.0.clone() else {
        return Ok(see_other(LOG_IN_FIRST));
    };
    let chrome = visitor.chrome().at("/offers");
    let user = member.user_id();
    let mut lists = Vec::with_capacity(2);
    for role in ["received", "made"] {
        let inbox = InboxQuery {
            role: Some(role.to_owned()),
            limit: Some(LIST_SIZE),
            ..InboxQuery::default()
        };
        lists.push(
            pages
                .offers
                .inbox(user, &inbox)
                .await
                .or_page(&chrome)?
                .items,
        );
    }
    let made = lists.pop().unwrap_or_default();
    let received = lists.pop().unwrap_or_default();
    let mut prompts = HashMap::new();
    let (mut received_rows, mut made_rows) = (Vec::new(), Vec::new());
    for offer in received {
        received_rows.push(row(&pages, &mut prompts, user, offer).await);
    }
    for offer in made {
        made_rows.push(row(&pages, &mut prompts, user, offer).await);
    }
    Ok(show_page(&OffersPage {
        csrf_token: member.csrf_token().to_owned(),
        currency: pages.currency().code().to_owned(),
        received: received_rows,
        made: made_rows,
        flash: flash(&query.map(|q| q.0).unwrap_or_default().done),
        chrome,
    }))
}

/// One offer as its viewer sees it; the listing's prompt looked up once per listing.
async fn row(
    pages: &Pages,
    prompts: &mut HashMap<ListingId, String>,
    user: UserId,
    offer: Offer,
) -> Row {
    let prompt = match prompts.get(&offer.listing_id) {
        Some(p) => p.clone(),
        None => {
            let p = pages
                .market
                .listing(offer.listing_id)
                .await
                .map(|l| l.prompt)
                .unwrap_or_else(|_| "An image".to_owned());
            prompts.insert(offer.listing_id, p.clone());
            p
        }
    };
    let open = offer.status == "open";
    Row {
        id: offer.id.to_string(),
        listing_id: offer.listing_id.to_string(),
        asset_id: offer.asset_id.to_string(),
        prompt,
        kind: if offer.kind == "counter" {
            "Counter"
        } else {
            "Offer"
        },
        amount: pages.money(offer.amount),
        expires: Stamp::from_micros(offer.expires_at),
        can_answer: open && offer.recipient() == user,
        can_counter: open && offer.kind == "offer" && offer.seller_id == user,
        can_cancel: open && offer.maker() == user,
        status: offer.status,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AnswerForm {
    csrf_token: String,
}
member_form!(AnswerForm, LOG_IN_FIRST);

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CounterForm {
    csrf_token: String,
    amount: String,
}
member_form!(CounterForm, LOG_IN_FIRST);

#[allow(clippy::result_large_err)]
fn offer_id(chrome: &Chrome, raw: &str) -> Result<OfferId, Response> {
    raw.parse()
        .map_err(|_| rendermart_platform::http::Problem::not_found("No such offer."))
        .or_page(chrome)
}

pub async fn accept(
    State(pages): State<Pages>,
    Path(id): Path<String>,
    MemberForm { member, .. }: MemberForm<AnswerForm>,
) -> Result<Response, Response> {
    let chrome = Visitor(Some(member.clone())).chrome().at("/offers");
    let id = offer_id(&chrome, &id)?;
    pages
        .offers
        .accept(member.user_id(), id)
        .await
        .or_page(&chrome)?;
    Ok(see_other("/offers?done=accepted"))
}

pub async fn reject(
    State(pages): State<Pages>,
    Path(id): Path<String>,
    MemberForm { member, .. }: MemberForm<AnswerForm>,
) -> Result<Response, Response> {
    let chrome = Visitor(Some(member.clone())).chrome().at("/offers");
    let id = offer_id(&chrome, &id)?;
    pages
        .offers
        .reject(member.user_id(), id)
        .await
        .or_page(&chrome)?;
    Ok(see_other("/offers?done=rejected"))
}

pub async fn cancel(
    State(pages): State<Pages>,
    Path(id): Path<String>,
    MemberForm { member, .. }: MemberForm<AnswerForm>,
) -> Result<Response, Response> {
    let chrome = Visitor(Some(member.clone())).chrome().at("/offers");
    let id = offer_id(&chrome, &id)?;
    pages
        .offers
        .cancel(member.user_id(), id)
        .await
        .or_page(&chrome)?;
    Ok(see_other("/offers?done=cancelled"))
}

pub async fn counter(
    State(pages): State<Pages>,
    Path(id): Path<String>,
    MemberForm { member, form }: MemberForm<CounterForm>,
) -> Result<Response, Response> {
    let chrome = Visitor(Some(member.clone())).chrome().at("/offers");
    let id = offer_id(&chrome, &id)?;
    let amount = pages.amount(&chrome, "Counter amount", &form.amount)?;
    pages
        .offers
        .counter(member.user_id(), id, amount, None)
        .await
        .or_page(&chrome)?;
    Ok(see_other("/offers?done=countered"))
}
