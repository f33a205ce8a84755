//! `GET /assets/{id}`: an image anyone may look at — its provenance (prompt, provider,
//! model, seed, size, when and by whom) and its owners in order. Its owner also gets a link
//! to the original and the "list for sale" form (or a link to the open listing).

use askama::Template;
use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    response::Response,
};
use rendermart_web::{form::MemberForm, see_other, Chrome, Visitor};
use serde::Deserialize;

use super::{member_form, show_page, who, OrPage, Pages, Stamp, Viewer};
use crate::assets::Asset;

/// Where an image comes from, as the listing and asset pages show it.
pub(crate) struct Provenance {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub provider: String,
    pub model: String,
    pub seed: Option<i64>,
    pub width: i64,
    pub height: i64,
    pub created: Stamp,
    pub creator: String,
}

impl Provenance {
    pub fn of(asset: &Asset, viewer: &Viewer) -> Self {
        Self {
            prompt: asset.prompt.clone(),
            negative_prompt: asset.negative_prompt.clone().filter(|n| !n.is_empty()),
            provider: asset.provider.clone(),
            model: asset.model.clone(),
            seed: asset.seed,
            width: asset.width,
            height: asset.height,
            created: Stamp::from_micros(asset.created_at),
            creator: who(asset.creator_id, viewer),
        }
    }
}

#[derive(Template)]
#[template(path = "asset.html")]
struct AssetPage {
    chrome: Chrome,
    csrf_token: String,
    id: String,
    prompt: String,
    owner: String,
    provenance: Provenance,
    owners: Vec<OwnerRow>,
    is_owner: bool,
    /// The open listing's id and price, when it is for sale.
    listing: Option<(String, String)>,
    currency: String,
    flash: Option<&'static str>,
}

struct OwnerRow {
    who: String,
    how: &'static str,
    since: Stamp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AssetQuery {
    done: String,
}

pub async fn show(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<String>,
    query: Result<Query<AssetQuery>, QueryRejection>,
) -> Result<Response, Response> {
    let chrome = visitor.chrome();
    let asset = pages.assets.find(&id).await.or_page(&chrome)?;
    let owners = pages.assets.owners(asset.id).await.or_page(&chrome)?;
    let listing = pages
        .market
        .open_listing_of(asset.id)
        .await
        .or_page(&chrome)?;
    let people = [asset.owner_id, asset.creator_id]
        .into_iter()
        .chain(owners.iter().map(|o| o.owner_id));
    let viewer = pages
        .viewer(visitor.0.as_ref().map(|m| m.user_id()), people)
        .await;
    let done = query.map(|q| q.0.done).unwrap_or_default();
    Ok(show_page(&AssetPage {
        csrf_token: visitor
            .0
            .as_ref()
            .map(|m| m.csrf_token().to_owned())
            .unwrap_or_default(),
        id: asset.id.to_string(),
        prompt: asset.prompt.clone(),
        owner: who(asset.owner_id, &viewer),
        provenance: Provenance::of(&asset, &viewer),
        owners: owners
            .into_iter()
            .map(|o| OwnerRow {
                who: who(o.owner_id, &viewer),
                how: if o.how == "bought" {
                    "Bought"
                } else {
                    "Created"
                },
                since: Stamp::from_micros(o.since),
            })
            .collect(),
        is_owner: viewer.is(asset.owner_id),
        listing: listing.map(|l| (l.id.to_string(), pages.money(l.price))),
        currency: pages.currency().code().to_owned(),
        flash: (done == "bought").then_some("This image is yours now."),
        chrome,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListForm {
    csrf_token: String,
    price: String,
}
member_form!(ListForm, "/login");

/// `POST /assets/{id}/list`: the owner lists the image at a price.
pub async fn list(
    State(pages): State<Pages>,
    Path(id): Path<String>,
    MemberForm { member, form }: MemberForm<ListForm>,
) -> Result<Response, Response> {
    let chrome = Visitor(Some(member.clone())).chrome();
    let asset = pages.assets.find(&id).await.or_page(&chrome)?;
    let price = pages.amount(&chrome, "Price", &form.price)?;
    let listing = pages
        .market
        .open(member.user_id(), asset.id, price)
        .await
        .or_page(&chrome)?;
    Ok(see_other(&format!("/market/{}?done=listed", listing.id)))
}
