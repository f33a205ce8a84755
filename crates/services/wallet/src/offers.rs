//! Offers on listings: a buyer offers an amount for a while, and the amount is held from
//! their available money; the seller accepts (the sale completes exactly like a buy, paid
//! by the hold), rejects, or counters with another amount, which the buyer may accept or
//! reject in turn. An offer that expires, is cancelled, or whose listing sells or is
//! withdrawn ends and its hold is released.
//!
//! Every path that ends an offer because its listing ended closes the listing first (the
//! same lock order as a buy), so an accept racing a buy has one winner and the loser's hold
//! is released by the winner's transaction.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use rendermart_platform::{
    auth::Principal,
    clock,
    db::is_unique_violation,
    http::{ApiJson, Problem},
    shutdown::Shutdown,
};
use rendermart_studio_api::GenerationId;
use rendermart_types::UserId;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, FromRow};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::{
    domain::Invalid,
    ledger::{HoldOutcome, Ledger, WalletError},
    market::{close_listing, listing_id, Bought, ListingId, Market, MarketError, Payment, SaleOf},
};

rendermart_types::entity_id!(
    /// An offer, or a seller's counter to one.
    OfferId
);

/// Longest time an offer stays open, in seconds (the shortest is `wallet.min_offer_secs`).
pub const MAX_EXPIRES_IN: i64 = 7 * 24 * 3600;
/// When an offer names no `expires_in`: a day.
pub const DEFAULT_EXPIRES_IN: i64 = 24 * 3600;

#[derive(OpenApi)]
#[openapi(
    paths(make, inbox, show, accept, reject, counter, cancel),
    components(schemas(Offer, NewOffer, OfferPage)),
    tags((name = "offers", description = "Offers on listings: held money, accepted, rejected or countered"))
)]
pub struct OffersApiDoc;

/// An offer as its buyer and seller see it.
#[derive(Clone, Debug, Serialize, FromRow, ToSchema)]
pub struct Offer {
    pub id: OfferId,
    pub listing_id: ListingId,
    pub asset_id: GenerationId,
    pub buyer_id: UserId,
    pub seller_id: UserId,
    /// `offer` (the buyer's; its amount is held) or `counter` (the seller's answer).
    pub kind: String,
    /// A counter: the offer it answers.
    pub parent_id: Option<OfferId>,
    /// Minor units.
    pub amount: i64,
    /// `open`, `countered`, `accepted`, `rejected`, `cancelled`, `expired` or `closed`
    /// (the listing sold to someone else or was withdrawn).
    pub status: String,
    /// UTC microseconds since the epoch.
    pub expires_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Offer {
    /// Who may accept or reject it: the seller for an offer, the buyer for a counter.
    pub(crate) fn recipient(&self) -> UserId {
        if self.kind == "counter" {
            self.buyer_id
        } else {
            self.seller_id
        }
    }

    /// Who made it (and may cancel it).
    pub(crate) fn maker(&self) -> UserId {
        if self.kind == "counter" {
            self.seller_id
        } else {
            self.buyer_id
        }
    }

    /// The offer whose hold pays: itself, or the offer a counter answers.
    fn held_offer(&self) -> OfferId {
        self.parent_id.unwrap_or(self.id)
    }
}

const OFFER_COLUMNS: &str = "id, listing_id, asset_id, buyer_id, seller_id, kind, parent_id, \
                             amount, status, expires_at, created_at, updated_at";

/// The hold's reference in the ledger.
fn reference(offer: OfferId) -> String {
    format!("offer:{offer}")
}

#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error(transparent)]
    Market(#[from] MarketError),
    #[error("an open offer exists")]
    AlreadyOffered,
    #[error("not yours to answer")]
    NotYours(&'static str),
    #[error("the offer is no longer open")]
    NotOpen,
}

impl From<WalletError> for OfferError {
    fn from(e: WalletError) -> Self {
        OfferError::Market(e.into())
    }
}

impl From<sqlx::Error> for OfferError {
    fn from(e: sqlx::Error) -> Self {
        OfferError::Market(e.into())
    }
}

impl From<OfferError> for Problem {
    fn from(e: OfferError) -> Self {
        match e {
            OfferError::Market(e) => e.into(),
            OfferError::AlreadyOffered => Problem::conflict(
                "offer-exists",
                "Offer exists",
                "You have an open offer on this listing. Cancel it before making another.",
            ),
            OfferError::NotYours(what) => Problem::forbidden(what),
            OfferError::NotOpen => Problem::conflict(
                "offer-closed",
                "Offer closed",
                "This offer is no longer open: it was accepted, rejected, countered, cancelled or it expired.",
            ),
        }
    }
}

pub struct Offers {
    market: Arc<Market>,
}

fn invalid(field: &'static str, message: String) -> OfferError {
    OfferError::Market(MarketError::Wallet(WalletError::Invalid(Invalid {
        field,
        message,
    })))
}

impl Offers {
    pub fn new(market: Arc<Market>) -> Self {
        Self { market }
    }

    fn ledger(&self) -> &Ledger {
        self.market.ledger()
    }

    fn amount(&self, raw: i64) -> Result<i64, OfferError> {
        let max = self.ledger().config().max_price;
        if raw <= 0 || raw > max {
            return Err(invalid(
                "amount",
                format!("must be a whole number of minor units from 1 to {max}"),
            ));
        }
        Ok(raw)
    }

    fn expires_at(&self, expires_in: Option<i64>) -> Result<i64, OfferError> {
        let secs = expires_in.unwrap_or(DEFAULT_EXPIRES_IN);
        let min = self
            .ledger()
            .config()
            .min_offer_secs
            .clamp(1, MAX_EXPIRES_IN);
        if !(min..=MAX_EXPIRES_IN).contains(&secs) {
            return Err(invalid(
                "expires_in",
                format!("must be {min} to {MAX_EXPIRES_IN} seconds"),
            ));
        }
        Ok(clock::now_micros() + secs * 1_000_000)
    }

    async fn get(&self, conn: &mut AnyConnection, id: OfferId) -> Result<Offer, OfferError> {
        sqlx::query_as(&format!("SELECT {OFFER_COLUMNS} FROM offers WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?
            .ok_or(OfferError::Market(MarketError::NotFound))
    }

    /// The offer, if `user` is its buyer or seller (anyone else: not found).
    pub async fn show(&self, user: UserId, id: OfferId) -> Result<Offer, OfferError> {
        let mut conn = self.ledger().db().pool().acquire().await?;
        let offer = self.get(&mut conn, id).await?;
        if offer.buyer_id != user && offer.seller_id != user {
            return Err(MarketError::NotFound.into());
        }
        Ok(offer)
    }

    /// `buyer` offers `amount` on an open listing for `expires_in` seconds; the amount is
    /// held from their available money.
    pub async fn make(
        &self,
        buyer: UserId,
        listing: ListingId,
        amount: i64,
        expires_in: Option<i64>,
    ) -> Result<Offer, OfferError> {
        let amount = self.amount(amount)?;
        let expires_at = self.expires_at(expires_in)?;
        let listing = self.market.listing(listing).await?;
        if listing.status != "open" {
            return Err(MarketError::Closed.into());
        }
        if listing.seller_id == buyer {
            return Err(MarketError::OwnListing.into());
        }
        let id = OfferId::new();
        let now = clock::now_micros();
        let mut tx = self.ledger().db().begin().await?;
        // The listing must still be open when the offer commits: marking it offered takes
        // its lock, so a buy or withdrawal in flight either ends this offer or comes first.
        let open = sqlx::query("UPDATE listings SET offered = 1 WHERE id = $1 AND status = 'open'")
            .bind(listing.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if open != 1 {
            return Err(MarketError::Closed.into());
        }
        let inserted = sqlx::query(&format!(
            "INSERT INTO offers ({OFFER_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, 'offer', NULL, $6, 'open', $7, $8, $8)"
        ))
        .bind(id)
        .bind(listing.id)
        .bind(listing.asset_id)
        .bind(buyer)
        .bind(listing.seller_id)
        .bind(amount)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(OfferError::AlreadyOffered),
            Err(e) => return Err(e.into()),
        }
        let what: String = listing.prompt.chars().take(60).collect();
        let held = self
            .ledger()
            .hold(
                &mut tx,
                buyer,
                &reference(id),
                "offer",
                amount,
                &format!("Offer on “{what}” (held until it is answered or expires)"),
            )
            .await?;
        if held != HoldOutcome::Held {
            return Err(WalletError::InsufficientFunds.into());
        }
        tx.commit().await?;
        metrics::counter!("wallet_offers_made_total").increment(1);
        self.show(buyer, id).await
    }

    /// The recipient accepts an open offer or counter: the listing is sold to the buyer at
    /// its amount, exactly like a buy.
    pub async fn accept(&self, user: UserId, id: OfferId) -> Result<Bought, OfferError> {
        let offer = self.show(user, id).await?;
        if offer.recipient() != user {
            return Err(OfferError::NotYours(
                "Only the one an offer was made to can accept it.",
            ));
        }
        let listing = self.market.listing(offer.listing_id).await?;
        let mut tx = self.ledger().db().begin().await?;
        close_listing(&mut tx, offer.listing_id, offer.buyer_id, None).await?;
        let accepted = sqlx::query(
            "UPDATE offers SET status = 'accepted', updated_at = $1 \
             WHERE id = $2 AND status = 'open' AND expires_at > $1",
        )
        .bind(clock::now_micros())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if accepted != 1 {
            return Err(OfferError::NotOpen);
        }
        let held = reference(offer.held_offer());
        let payment = if offer.kind == "counter" {
            // The buyer pays the counter's amount from their money, the hold of the offer
            // it answered given back first (in this same transaction).
            mark(&mut tx, offer.held_offer(), "countered", "accepted").await?;
            self.ledger()
                .release(&mut tx, &held, "Offer countered and accepted")
                .await?;
            Payment::Available
        } else {
            Payment::Hold(&held)
        };
        let sale = self
            .market
            .settle(
                &mut tx,
                &SaleOf::from(&listing),
                offer.buyer_id,
                offer.amount,
                payment,
                None,
            )
            .await?;
        tx.commit().await?;
        self.market.listings_changed();
        metrics::counter!("wallet_sales_total").increment(1);
        metrics::counter!("wallet_offers_accepted_total").increment(1);
        let wallet = self.ledger().wallet(user).await?;
        Ok(Bought { sale, wallet })
    }

    /// The recipient rejects an open offer (its hold is released) or counter (the offer it
    /// answered ends, its hold released).
    pub async fn reject(&self, user: UserId, id: OfferId) -> Result<Offer, OfferError> {
        let offer = self.show(user, id).await?;
        if offer.recipient() != user {
            return Err(OfferError::NotYours(
                "Only the one an offer was made to can reject it.",
            ));
        }
        self.end(&offer, "rejected").await?;
        self.show(user, id).await
    }

    /// The maker cancels an open offer or counter.
    pub async fn cancel(&self, user: UserId, id: OfferId) -> Result<Offer, OfferError> {
        let offer = self.show(user, id).await?;
        if offer.maker() != user {
            return Err(OfferError::NotYours(
                "Only the maker of an offer can cancel it.",
            ));
        }
        self.end(&offer, "cancelled").await?;
        self.show(user, id).await
    }

    /// The seller answers an open offer with another amount: the offer is `countered` (its
    /// hold kept) and the counter, open for `expires_in`, is the buyer's to answer.
    pub async fn counter(
        &self,
        user: UserId,
        id: OfferId,
        amount: i64,
        expires_in: Option<i64>,
    ) -> Result<Offer, OfferError> {
        let amount = self.amount(amount)?;
        let expires_at = self.expires_at(expires_in)?;
        let offer = self.show(user, id).await?;
        if offer.kind != "offer" || offer.seller_id != user {
            return Err(OfferError::NotYours(
                "Only the seller can counter, and only a buyer's offer.",
            ));
        }
        let counter = OfferId::new();
        let now = clock::now_micros();
        let mut tx = self.ledger().db().begin().await?;
        let open = sqlx::query(
            "UPDATE listings SET updated_at = updated_at WHERE id = $1 AND status = 'open'",
        )
        .bind(offer.listing_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if open != 1 {
            return Err(MarketError::Closed.into());
        }
        let countered = sqlx::query(
            "UPDATE offers SET status = 'countered', updated_at = $1 \
             WHERE id = $2 AND status = 'open' AND expires_at > $1",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if countered != 1 {
            return Err(OfferError::NotOpen);
        }
        sqlx::query(&format!(
            "INSERT INTO offers ({OFFER_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, 'counter', $6, $7, 'open', $8, $9, $9)"
        ))
        .bind(counter)
        .bind(offer.listing_id)
        .bind(offer.asset_id)
        .bind(offer.buyer_id)
        .bind(offer.seller_id)
        .bind(id)
        .bind(amount)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.show(user, counter).await
    }

    /// Ends an open offer or counter with `status`, releasing the hold that backs it.
    async fn end(&self, offer: &Offer, status: &str) -> Result<(), OfferError> {
        let mut tx = self.ledger().db().begin().await?;
        if !mark(&mut tx, offer.id, "open", status).await? {
            return Err(OfferError::NotOpen);
        }
        if offer.kind == "counter" {
            mark(&mut tx, offer.held_offer(), "countered", status).await?;
        }
        self.ledger()
            .release(
                &mut tx,
                &reference(offer.held_offer()),
                &format!("Offer {status}; the money is back"),
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends offers open past their expiry, releasing their holds. Returns how many.
    pub async fn expire_due(&self) -> Result<usize, OfferError> {
        let due: Vec<(OfferId,)> = {
            let mut conn = self.ledger().db().pool().acquire().await?;
            sqlx::query_as(
                "SELECT id FROM offers WHERE status = 'open' AND expires_at <= $1 \
                 ORDER BY expires_at LIMIT 100",
            )
            .bind(clock::now_micros())
            .fetch_all(&mut *conn)
            .await?
        };
        let mut expired = 0;
        for (id,) in due {
            let offer = {
                let mut conn = self.ledger().db().pool().acquire().await?;
                self.get(&mut conn, id).await?
            };
            match self.end(&offer, "expired").await {
                Ok(()) => expired += 1,
                // Answered meanwhile.
                Err(OfferError::NotOpen) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }

    /// Offers made to or by `user`, newest first, a page after `after`.
    pub async fn inbox(&self, user: UserId, q: &InboxQuery) -> Result<OfferPage, OfferError> {
        let limit = i64::from(q.limit.unwrap_or(50).clamp(1, 100));
        let who = match q.role.as_deref() {
            None | Some("all") => "(buyer_id = $1 OR seller_id = $1)",
            Some("received") => {
                "((kind = 'offer' AND seller_id = $1) OR (kind = 'counter' AND buyer_id = $1))"
            }
            Some("made") => {
                "((kind = 'offer' AND buyer_id = $1) OR (kind = 'counter' AND seller_id = $1))"
            }
            Some(_) => return Err(invalid("role", "must be received, made or all".to_owned())),
        };
        let after = q
            .after
            .as_deref()
            .map(|a| {
                a.parse::<OfferId>().map_err(|_| {
                    invalid("after", "must be the `next` of a previous page".to_owned())
                })
            })
            .transpose()?;
        let mut conn = self.ledger().db().pool().acquire().await?;
        let items: Vec<Offer> = match after {
            Some(after) => {
                sqlx::query_as(&format!(
                    "SELECT {OFFER_COLUMNS} FROM offers WHERE {who} AND id < $2 \
                     ORDER BY id DESC LIMIT $3"
                ))
                .bind(user)
                .bind(after)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
            }
            None => {
                sqlx::query_as(&format!(
                    "SELECT {OFFER_COLUMNS} FROM offers WHERE {who} ORDER BY id DESC LIMIT $2"
                ))
                .bind(user)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
            }
        };
        let next = (items.len() == limit as usize)
            .then(|| items.last().map(|o| o.id.to_string()))
            .flatten();
        Ok(OfferPage { items, next })
    }
}

/// Moves offer `id` from status `from` to `to`; whether it was in `from`.
async fn mark(
    conn: &mut AnyConnection,
    id: OfferId,
    from: &str,
    to: &str,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("UPDATE offers SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
            .bind(to)
            .bind(clock::now_micros())
            .bind(id)
            .bind(from)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Ends every live offer and counter on `listing` with `status` and releases their holds,
/// in the caller's transaction (the one that sold or withdrew the listing).
pub(crate) async fn end_all(
    ledger: &Ledger,
    conn: &mut AnyConnection,
    listing: ListingId,
    status: &str,
) -> Result<(), WalletError> {
    let ended: Vec<(OfferId, String)> = sqlx::query_as(
        "UPDATE offers SET status = $1, updated_at = $2 \
         WHERE listing_id = $3 AND status IN ('open', 'countered') RETURNING id, kind",
    )
    .bind(status)
    .bind(clock::now_micros())
    .bind(listing)
    .fetch_all(&mut *conn)
    .await?;
    for (id, kind) in ended {
        if kind == "offer" {
            ledger
                .release(
                    conn,
                    &reference(id),
                    "Offer ended: the listing was sold or withdrawn; the money is back",
                )
                .await?;
        }
    }
    Ok(())
}

/// Expires due offers every second until shutdown.
pub async fn expire_offers(offers: Arc<Offers>, stop: Shutdown) {
    loop {
        match offers.expire_due().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "offers expired"),
            Err(e) => tracing::warn!(error = %e, "expiring offers failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait() => return,
        }
    }
}

pub fn router(offers: Arc<Offers>) -> Router {
    Router::new()
        .route("/api/v1/listings/{id}/offers", post(make))
        .route("/api/v1/offers", get(inbox))
        .route("/api/v1/offers/{id}", get(show))
        .route("/api/v1/offers/{id}/accept", post(accept))
        .route("/api/v1/offers/{id}/reject", post(reject))
        .route("/api/v1/offers/{id}/counter", post(counter))
        .route("/api/v1/offers/{id}/cancel", post(cancel))
        .with_state(offers)
}

fn offer_id(raw: &str) -> Result<OfferId, Problem> {
    raw.parse()
        .map_err(|_| Problem::not_found("No such offer."))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOffer {
    /// Whole minor units, 1 to the configured maximum price.
    #[schema(example = 2000, minimum = 1)]
    amount: i64,
    /// Seconds the offer stays open: 60 to 604800 (a week); a day when absent.
    #[schema(example = 86400)]
    expires_in: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct OfferPage {
    pub(crate) items: Vec<Offer>,
    /// Pass as `after` for the next page; absent on the last.
    pub(crate) next: Option<String>,
}

#[derive(Default, Deserialize, IntoParams)]
pub struct InboxQuery {
    /// `received` (offers to you, counters to your offers), `made`, or `all` (default).
    pub(crate) role: Option<String>,
    /// The `next` of the previous page.
    pub(crate) after: Option<String>,
    /// 1–100, default 50.
    pub(crate) limit: Option<u32>,
}

type Api = State<Arc<Offers>>;

/// Offer an amount for a listing; the amount is held until the offer ends.
#[utoipa::path(post, path = "/api/v1/listings/{id}/offers", tag = "offers", request_body = NewOffer,
    params(("id" = String, Path, description = "The listing's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "Offered; the amount is held", body = Offer),
        (status = 402, description = "Not enough available money", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The listing is closed, yours, or you have an open offer on it", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid amount or expiry", body = Problem, content_type = "application/problem+json"),
    ))]
async fn make(
    State(offers): Api,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewOffer>,
) -> Result<Response, Problem> {
    let listing = listing_id(&id)?;
    let offer = offers
        .make(principal.user_id, listing, body.amount, body.expires_in)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(offer)).into_response())
}

/// Offers made to you and by you, newest first.
#[utoipa::path(get, path = "/api/v1/offers", tag = "offers", params(InboxQuery),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, description = "One page of offers", body = OfferPage)))]
async fn inbox(
    State(offers): Api,
    principal: Principal,
    Query(q): Query<InboxQuery>,
) -> Result<ApiJson<OfferPage>, Problem> {
    Ok(ApiJson(offers.inbox(principal.user_id, &q).await?))
}

/// One offer, to its buyer and seller.
#[utoipa::path(get, path = "/api/v1/offers/{id}", tag = "offers",
    params(("id" = String, Path, description = "The offer's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The offer", body = Offer),
        (status = 404, description = "No such offer of yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn show(
    State(offers): Api,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<ApiJson<Offer>, Problem> {
    Ok(ApiJson(
        offers.show(principal.user_id, offer_id(&id)?).await?,
    ))
}

/// Accept an offer (the seller) or a counter (the buyer): the sale completes like a buy.
#[utoipa::path(post, path = "/api/v1/offers/{id}/accept", tag = "offers",
    params(("id" = String, Path, description = "The offer's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "Sold", body = Bought),
        (status = 402, description = "The buyer's money does not cover a counter", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not yours to accept", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The offer or listing is closed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn accept(
    State(offers): Api,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let bought = offers.accept(principal.user_id, offer_id(&id)?).await?;
    Ok((StatusCode::CREATED, ApiJson(bought)).into_response())
}

/// Reject an offer (the seller) or a counter (the buyer); the hold is released.
#[utoipa::path(post, path = "/api/v1/offers/{id}/reject", tag = "offers",
    params(("id" = String, Path, description = "The offer's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Rejected", body = Offer),
        (status = 403, description = "Not yours to reject", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No longer open", body = Problem, content_type = "application/problem+json"),
    ))]
async fn reject(
    State(offers): Api,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<ApiJson<Offer>, Problem> {
    Ok(ApiJson(
        offers.reject(principal.user_id, offer_id(&id)?).await?,
    ))
}

/// Counter a buyer's offer with another amount (the seller).
#[utoipa::path(post, path = "/api/v1/offers/{id}/counter", tag = "offers", request_body = NewOffer,
    params(("id" = String, Path, description = "The offer's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "The counter, open for the buyer", body = Offer),
        (status = 403, description = "Not the seller, or not a buyer's offer", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The offer or listing is closed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid amount or expiry", body = Problem, content_type = "application/problem+json"),
    ))]
async fn counter(
    State(offers): Api,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewOffer>,
) -> Result<Response, Problem> {
    let counter = offers
        .counter(
            principal.user_id,
            offer_id(&id)?,
            body.amount,
            body.expires_in,
        )
        .await?;
    Ok((StatusCode::CREATED, ApiJson(counter)).into_response())
}

/// Cancel an offer or counter you made; the hold is released.
#[utoipa::path(post, path = "/api/v1/offers/{id}/cancel", tag = "offers",
    params(("id" = String, Path, description = "The offer's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled", body = Offer),
        (status = 403, description = "Not yours to cancel", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No longer open", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel(
    State(offers): Api,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<ApiJson<Offer>, Problem> {
    Ok(ApiJson(
        offers.cancel(principal.user_id, offer_id(&id)?).await?,
    ))
}
