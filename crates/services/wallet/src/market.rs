//! The marketplace for originals: list an asset you own, change its price, withdraw it,
//! and buy, where the buyer's money, the seller's proceeds, the platform's fee, the
//! creator's royalty on a resale and the change of owner are one database transaction. Two
//! buyers racing for one listing cannot both win: the listing is closed by a conditional
//! `UPDATE` that only one of them can make.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use rendermart_platform::{
    auth::Principal,
    clock,
    db::is_unique_violation,
    group::{Group, GroupWork},
    http::{ApiJson, Problem},
};
use rendermart_studio_api::GenerationId;
use rendermart_types::{Money, UserId};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, FromRow};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::{
    domain::IdempotencyKey,
    ledger::{user_account, Ledger, TransactionId, WalletError, WalletView, FEES},
};

rendermart_types::entity_id!(
    /// A listing of an asset.
    ListingId
);
rendermart_types::entity_id!(
    /// A sale: a listing bought.
    SaleId
);

#[derive(OpenApi)]
#[openapi(
    paths(list, browse, show, reprice, withdraw, buy),
    components(schemas(Listing, ListingPage, NewListing, NewPrice, Sale, Bought, Problem)),
    tags((name = "marketplace", description = "Listings and sales of originals"))
)]
pub struct MarketApiDoc;

/// Why a marketplace request was refused, on top of the ledger's reasons.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error("not the owner")]
    NotOwner,
    #[error("already listed")]
    AlreadyListed,
    #[error("the listing is closed")]
    Closed,
    #[error("your own listing")]
    OwnListing,
    #[error("not found")]
    NotFound,
    /// The listing's price is no longer the one the buyer saw.
    #[error("the price changed")]
    PriceChanged { price: i64 },
    /// The buyer's idempotency key recorded a sale a moment ago (a race of repeats).
    #[error("idempotency key raced")]
    KeyRaced,
}

impl From<sqlx::Error> for MarketError {
    fn from(e: sqlx::Error) -> Self {
        MarketError::Wallet(e.into())
    }
}

impl From<MarketError> for Problem {
    fn from(e: MarketError) -> Self {
        match e {
            MarketError::Wallet(e) => e.into(),
            MarketError::NotOwner => {
                Problem::forbidden("Only the owner of an asset can list it or change its listing.")
            }
            MarketError::AlreadyListed => Problem::conflict(
                "already-listed",
                "Already listed",
                "This asset has an open listing. Change its price or withdraw it instead.",
            ),
            MarketError::Closed => Problem::conflict(
                "listing-closed",
                "Listing closed",
                "This listing is no longer open: it was sold or withdrawn.",
            ),
            MarketError::OwnListing => Problem::conflict(
                "own-listing",
                "Your own listing",
                "You cannot buy what you are selling.",
            ),
            MarketError::NotFound => Problem::not_found("No such listing or asset."),
            MarketError::KeyRaced => WalletError::KeyReused.into(),
            MarketError::PriceChanged { price } => Problem::conflict(
                "price-changed",
                "The price changed",
                format!(
                    "The seller changed the price to {price} minor units since you saw it; nothing was bought."
                ),
            ),
        }
    }
}

/// A listing as anyone sees it.
#[derive(Clone, Debug, Serialize, FromRow, ToSchema)]
pub struct Listing {
    pub id: ListingId,
    pub asset_id: GenerationId,
    pub seller_id: UserId,
    /// Minor units.
    pub price: i64,
    /// `open`, `sold` or `withdrawn`.
    pub status: String,
    pub buyer_id: Option<UserId>,
    /// The asset's prompt, for browsing.
    pub prompt: String,
    /// UTC microseconds since the epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

/// A completed sale.
#[derive(Clone, Debug, Serialize, FromRow, ToSchema)]
pub struct Sale {
    pub id: SaleId,
    pub listing_id: ListingId,
    pub asset_id: GenerationId,
    pub seller_id: UserId,
    pub buyer_id: UserId,
    pub price: i64,
    /// The platform's fee, part of the price.
    pub fee: i64,
    /// The creator's royalty on a resale, part of the price (0 on a first sale).
    pub royalty: i64,
    pub created_at: i64,
}

pub(crate) const LISTING_COLUMNS: &str =
    "l.id, l.asset_id, l.seller_id, l.price, l.status, l.buyer_id, \
                               a.prompt, l.created_at, l.updated_at";
const SALE_COLUMNS: &str =
    "id, listing_id, asset_id, seller_id, buyer_id, price, fee, royalty, created_at";

pub struct Market {
    ledger: Arc<Ledger>,
    first_pages: FirstPages,
    /// Buys, with group commit on SQLite (decisions 54 and 68); `None` only in the copy of
    /// the market that does them.
    buys: Option<Group<Buys>>,
}

/// How long a served first page of listings may be reused. Changes made in this process
/// are seen at once; another replica's within this time (live pages get them over SSE).
const FIRST_PAGE_TTL: Duration = Duration::from_millis(500);

/// The first page of open listings, newest and cheapest first (what nearly every visitor
/// asks for), serialized once and reused for [`FIRST_PAGE_TTL`]: two entries, whatever
/// clients send, so it cannot grow.
#[derive(Default)]
struct FirstPages {
    /// Bumped by every change to listings in this process.
    version: AtomicU64,
    newest: Mutex<Option<CachedPage>>,
    cheapest: Mutex<Option<CachedPage>>,
}

struct CachedPage {
    at: Instant,
    version: u64,
    body: Bytes,
}

impl FirstPages {
    fn slot(&self, by_price: bool) -> &Mutex<Option<CachedPage>> {
        if by_price {
            &self.cheapest
        } else {
            &self.newest
        }
    }

    fn get(&self, by_price: bool) -> Option<Bytes> {
        let version = self.version.load(Ordering::Acquire);
        let slot = self.slot(by_price).lock().ok()?;
        slot.as_ref()
            .filter(|c| c.version == version && c.at.elapsed() < FIRST_PAGE_TTL)
            .map(|c| c.body.clone())
    }

    /// Stores `body`, read when the version was `version` (a change since makes it stale).
    fn put(&self, by_price: bool, version: u64, body: Bytes) {
        if let Ok(mut slot) = self.slot(by_price).lock() {
            *slot = Some(CachedPage {
                at: Instant::now(),
                version,
                body,
            });
        }
    }
}

impl Market {
    pub fn new(ledger: Arc<Ledger>) -> Self {
        let buyer = Buys(Market {
            ledger: ledger.clone(),
            first_pages: FirstPages::default(),
            buys: None,
        });
        Self {
            buys: Some(Group::new(ledger.db().clone(), buyer)),
            ledger,
            first_pages: FirstPages::default(),
        }
    }

    /// Listings changed (after the commit): cached first pages are stale.
    pub(crate) fn listings_changed(&self) {
        self.first_pages.version.fetch_add(1, Ordering::AcqRel);
    }

    /// `browse` as JSON bytes; the first pages from the short cache.
    async fn browse_json(&self, q: &BrowseQuery) -> Result<Bytes, MarketError> {
        let first_page = q.q.as_deref().is_none_or(|t| t.trim().is_empty())
            && q.after.is_none()
            && q.limit.is_none_or(|l| l == 20)
            && matches!(q.sort.as_deref(), None | Some("newest") | Some("price"));
        let by_price = q.sort.as_deref() == Some("price");
        if first_page {
            if let Some(body) = self.first_pages.get(by_price) {
                return Ok(body);
            }
        }
        let version = self.first_pages.version.load(Ordering::Acquire);
        let page = self.browse(q).await?;
        let body =
            Bytes::from(serde_json::to_vec(&page).map_err(|e| WalletError::Internal(e.into()))?);
        if first_page {
            self.first_pages.put(by_price, version, body.clone());
        }
        Ok(body)
    }

    fn price(&self, raw: i64) -> Result<i64, MarketError> {
        let max = self.ledger.config().max_price;
        if raw <= 0 || raw > max {
            return Err(WalletError::Invalid(crate::domain::Invalid {
                field: "price",
                message: format!("must be a whole number of minor units from 1 to {max}"),
            })
            .into());
        }
        Ok(raw)
    }

    pub(crate) fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub(crate) async fn listing(&self, id: ListingId) -> Result<Listing, MarketError> {
        let mut conn = self.ledger.db().pool().acquire().await?;
        sqlx::query_as(&format!(
            "SELECT {LISTING_COLUMNS} FROM listings l JOIN assets a ON a.id = l.asset_id \
             WHERE l.id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(MarketError::NotFound)
    }

    /// The open listing of `asset`, if it has one.
    pub(crate) async fn open_listing_of(
        &self,
        asset: GenerationId,
    ) -> Result<Option<Listing>, MarketError> {
        let mut conn = self.ledger.db().pool().acquire().await?;
        Ok(sqlx::query_as(&format!(
            "SELECT {LISTING_COLUMNS} FROM listings l JOIN assets a ON a.id = l.asset_id \
             WHERE l.asset_id = $1 AND l.status = 'open'"
        ))
        .bind(asset)
        .fetch_optional(&mut *conn)
        .await?)
    }

    pub async fn open(
        &self,
        seller: UserId,
        asset: GenerationId,
        price: i64,
    ) -> Result<Listing, MarketError> {
        let price = self.price(price)?;
        let mut conn = self.ledger.db().pool().acquire().await?;
        let owner: Option<(UserId,)> = sqlx::query_as("SELECT owner_id FROM assets WHERE id = $1")
            .bind(asset)
            .fetch_optional(&mut *conn)
            .await?;
        match owner {
            None => return Err(MarketError::NotFound),
            Some((owner,)) if owner != seller => return Err(MarketError::NotOwner),
            Some(_) => {}
        }
        let id = ListingId::new();
        let now = clock::now_micros();
        let inserted = sqlx::query(
            "INSERT INTO listings (id, asset_id, seller_id, price, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'open', $5, $5)",
        )
        .bind(id)
        .bind(asset)
        .bind(seller)
        .bind(price)
        .bind(now)
        .execute(&mut *conn)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(MarketError::AlreadyListed),
            Err(e) => return Err(e.into()),
        }
        drop(conn);
        self.listings_changed();
        metrics::counter!("wallet_listings_opened_total").increment(1);
        self.listing(id).await
    }

    /// Changes the price (`Some`) or withdraws (`None`) an open listing of the seller's.
    pub(crate) async fn change(
        &self,
        seller: UserId,
        id: ListingId,
        price: Option<i64>,
    ) -> Result<Listing, MarketError> {
        let price = price.map(|p| self.price(p)).transpose()?;
        let listing = self.listing(id).await?;
        if listing.seller_id != seller {
            return Err(MarketError::NotOwner);
        }
        let mut tx = self.ledger.db().begin().await?;
        let changed = match price {
            Some(price) => sqlx::query(
                "UPDATE listings SET price = $1, updated_at = $2 WHERE id = $3 AND status = 'open'",
            )
            .bind(price),
            None => sqlx::query(
                "UPDATE listings SET status = 'withdrawn', updated_at = $1 \
                 WHERE id = $2 AND status = 'open'",
            ),
        }
        .bind(clock::now_micros())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            return Err(MarketError::Closed);
        }
        if price.is_none() {
            crate::offers::end_all(&self.ledger, &mut tx, id, "closed").await?;
        }
        tx.commit().await?;
        self.listings_changed();
        self.listing(id).await
    }

    /// Buys an open listing: one transaction moves the money (buyer → seller, fee, the
    /// creator's royalty on a resale) and the asset, and closes the listing. With
    /// `expected_price` (what the buyer was shown), a listing repriced since is not bought.
    pub async fn buy(
        &self,
        buyer: UserId,
        id: ListingId,
        key: Option<IdempotencyKey>,
        expected_price: Option<i64>,
    ) -> Result<(Sale, bool), MarketError> {
        if let Some(key) = &key {
            if let Some(sale) = self.sale_by_key(buyer, key).await? {
                return if sale.listing_id == id {
                    Ok((sale, true))
                } else {
                    Err(WalletError::KeyReused.into())
                };
            }
        }
        let job = BuyJob {
            buyer,
            listing: id,
            key: key.clone(),
            expected_price,
        };
        let outcome = match &self.buys {
            Some(buys) => buys.run(job).await,
            None => Err(BuyFailure::Market(
                WalletError::Unavailable("this market does not take buys".into()).into(),
            )),
        };
        match outcome {
            Ok(sale) => {
                self.listings_changed();
                metrics::counter!("wallet_sales_total").increment(1);
                Ok((sale, false))
            }
            // Only now, outside the transaction, is the listing read to say why.
            Err(BuyFailure::NotClosed) => {
                let listing = self.listing(id).await?;
                Err(if listing.seller_id == buyer {
                    MarketError::OwnListing
                } else if listing.status != "open" {
                    MarketError::Closed
                } else {
                    MarketError::PriceChanged {
                        price: listing.price,
                    }
                })
            }
            Err(BuyFailure::Market(MarketError::KeyRaced)) => {
                // The same key bought something a moment ago: that purchase stands.
                let key = key.ok_or(MarketError::Closed)?;
                let sale = self
                    .sale_by_key(buyer, &key)
                    .await?
                    .ok_or(MarketError::Closed)?;
                Ok((sale, true))
            }
            Err(BuyFailure::Market(e)) => Err(e),
        }
    }

    /// The steps of a buy inside `conn`'s transaction: close the listing (whoever closes it
    /// buys it, at the price it has then or, given, the one the buyer saw), then settle.
    async fn buy_in(&self, conn: &mut AnyConnection, job: &BuyJob) -> Result<Sale, BuyFailure> {
        let closed: Option<(GenerationId, UserId, i64, i64)> = sqlx::query_as(
            "UPDATE listings SET status = 'sold', buyer_id = $1, updated_at = $2 \
             WHERE id = $3 AND status = 'open' AND seller_id <> $1 AND ($4 < 0 OR price = $4) \
             RETURNING asset_id, seller_id, price, offered",
        )
        .bind(job.buyer)
        .bind(clock::now_micros())
        .bind(job.listing)
        .bind(job.expected_price.unwrap_or(-1))
        .fetch_optional(&mut *conn)
        .await
        .map_err(MarketError::from)?;
        let Some((asset_id, seller_id, price, offered)) = closed else {
            return Err(BuyFailure::NotClosed);
        };
        let sold = SaleOf {
            listing: job.listing,
            asset: asset_id,
            seller: seller_id,
            offered: offered != 0,
        };
        Ok(self
            .settle(
                conn,
                &sold,
                job.buyer,
                price,
                Payment::Available,
                job.key.as_ref(),
            )
            .await?)
    }

    /// Completes the sale of `listing`, already closed for `buyer` in `conn`'s
    /// transaction, at `price`: the buyer pays (from available money, or by capturing an
    /// offer's hold), the seller gets the price less the fee and (on a resale) the
    /// creator's royalty, the asset changes owner, the sale is recorded and every other
    /// offer on the listing ends with its hold released.
    pub(crate) async fn settle(
        &self,
        conn: &mut AnyConnection,
        listing: &SaleOf,
        buyer: UserId,
        price: i64,
        payment: Payment<'_>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sale, MarketError> {
        let config = self.ledger.config();
        let money = Money::new(price, self.ledger.currency());
        let fee = money
            .share_bps(config.fee_bps)
            .map_err(|e| WalletError::Internal(e.into()))?
            .amount();
        // The asset changes hands only if the seller still owns it.
        let moved: Option<(UserId, String)> = sqlx::query_as(
            "UPDATE assets SET owner_id = $1 WHERE id = $2 AND owner_id = $3 \
             RETURNING creator_id, prompt",
        )
        .bind(buyer)
        .bind(listing.asset)
        .bind(listing.seller)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((creator, prompt)) = moved else {
            // The seller no longer owns it: the listing cannot be honoured.
            return Err(MarketError::Closed);
        };
        let royalty = if creator != listing.seller {
            money
                .share_bps(config.royalty_bps)
                .map_err(|e| WalletError::Internal(e.into()))?
                .amount()
        } else {
            0
        };
        let proceeds = price - fee - royalty;
        let now = clock::now_micros();
        sqlx::query(
            "INSERT INTO asset_owners (asset_id, seq, owner_id, since, how) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, 'bought' FROM asset_owners \
             WHERE asset_id = $1",
        )
        .bind(listing.asset)
        .bind(buyer)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        let seller_account = user_account(listing.seller);
        let creator_account = user_account(creator);
        if royalty > 0 {
            self.ledger
                .ensure_account(conn, &creator_account, Some(creator))
                .await?;
        }
        let what: String = prompt.chars().take(60).collect();
        let sold_line = format!("Sold “{what}” (price {price}, fee {fee}, royalty {royalty})");
        let royalty_line = format!("Royalty on the resale of “{what}”");
        let mut lines = vec![(
            TransactionId::new(),
            listing.seller,
            "sale",
            proceeds,
            sold_line.as_str(),
        )];
        if royalty > 0 {
            lines.push((
                TransactionId::new(),
                creator,
                "royalty",
                royalty,
                royalty_line.as_str(),
            ));
        }
        match payment {
            Payment::Available => {
                // Check and take the money in one statement (no account: no money), and
                // credit the seller in the statement that makes their account if needed.
                let buyer_account = user_account(buyer);
                let funded = sqlx::query(
                    "UPDATE wallet_accounts SET balance = balance - $2 \
                     WHERE id = $1 AND balance - held >= $2",
                )
                .bind(&buyer_account)
                .bind(price)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if funded != 1 {
                    return Err(WalletError::InsufficientFunds.into());
                }
                self.ledger
                    .credit_person(conn, listing.seller, proceeds)
                    .await?;
                let bought = TransactionId::new();
                let bought_line = format!("Bought “{what}”");
                lines.push((bought, buyer, "purchase", -price, bought_line.as_str()));
                self.ledger.insert_settled_lines(conn, &lines).await?;
                let mut postings = vec![
                    (buyer_account.as_str(), -price),
                    (seller_account.as_str(), proceeds),
                    (FEES, fee),
                ];
                if royalty > 0 {
                    postings.push((creator_account.as_str(), royalty));
                }
                // The buyer's and the seller's balances moved above.
                self.ledger.post_after(conn, bought, &postings, 2).await?;
            }
            Payment::Hold(reference) => {
                self.ledger
                    .ensure_account(conn, &seller_account, Some(listing.seller))
                    .await?;
                let mut shares = vec![(seller_account.clone(), proceeds), (FEES.to_owned(), fee)];
                if royalty > 0 {
                    shares.push((creator_account.clone(), royalty));
                }
                let captured = self
                    .ledger
                    .capture(
                        conn,
                        reference,
                        &format!("Bought “{what}” (offer accepted)"),
                        |_| shares,
                    )
                    .await?;
                if !captured {
                    return Err(MarketError::Closed);
                }
                self.ledger.insert_settled_lines(conn, &lines).await?;
            }
        }
        let sale = Sale {
            id: SaleId::new(),
            listing_id: listing.listing,
            asset_id: listing.asset,
            seller_id: listing.seller,
            buyer_id: buyer,
            price,
            fee,
            royalty,
            created_at: now,
        };
        let recorded = sqlx::query(&format!(
            "INSERT INTO sales ({SALE_COLUMNS}, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(sale.id)
        .bind(sale.listing_id)
        .bind(sale.asset_id)
        .bind(sale.seller_id)
        .bind(sale.buyer_id)
        .bind(sale.price)
        .bind(sale.fee)
        .bind(sale.royalty)
        .bind(sale.created_at)
        .bind(key.map(IdempotencyKey::as_str))
        .execute(&mut *conn)
        .await;
        match recorded {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(MarketError::KeyRaced),
            Err(e) => return Err(e.into()),
        }
        if listing.offered {
            crate::offers::end_all(&self.ledger, conn, listing.listing, "closed").await?;
        }
        Ok(sale)
    }

    async fn sale_by_key(
        &self,
        buyer: UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<Sale>, MarketError> {
        let mut conn = self.ledger.db().pool().acquire().await?;
        Ok(sqlx::query_as(&format!(
            "SELECT {SALE_COLUMNS} FROM sales WHERE buyer_id = $1 AND idempotency_key = $2"
        ))
        .bind(buyer)
        .bind(key.as_str())
        .fetch_optional(&mut *conn)
        .await?)
    }

    /// Open listings, newest first or cheapest first, optionally whose prompt contains
    /// `text`; a page after `after` (the `next` of the previous page).
    pub(crate) async fn browse(&self, q: &BrowseQuery) -> Result<ListingPage, MarketError> {
        let limit = i64::from(q.limit.unwrap_or(20).clamp(1, 100));
        let text =
            q.q.as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| {
                    let escaped: String = t
                        .chars()
                        .take(100)
                        .flat_map(|c| match c {
                            '%' | '_' | '\\' => vec!['\\', c],
                            c => vec![c],
                        })
                        .collect();
                    format!("%{}%", escaped.to_lowercase())
                });
        let by_price = q.sort.as_deref() == Some("price");
        let cursor = q.after.as_deref().map(parse_cursor).transpose()?;
        let mut sql = format!(
            "SELECT {LISTING_COLUMNS} FROM listings l JOIN assets a ON a.id = l.asset_id \
             WHERE l.status = 'open'"
        );
        let mut n = 0;
        let mut arg = || {
            n += 1;
            format!("${n}")
        };
        if text.is_some() {
            sql += &format!(" AND LOWER(a.prompt) LIKE {} ESCAPE '\\'", arg());
        }
        match (&cursor, by_price) {
            (Some(_), true) => {
                let (p1, p2, p3) = (arg(), arg(), arg());
                sql += &format!(" AND (l.price > {p1} OR (l.price = {p2} AND l.id > {p3}))");
            }
            (Some(_), false) => sql += &format!(" AND l.id < {}", arg()),
            (None, _) => {}
        }
        sql += if by_price {
            " ORDER BY l.price, l.id"
        } else {
            " ORDER BY l.id DESC"
        };
        sql += &format!(" LIMIT {}", arg());
        let mut query = sqlx::query_as::<_, Listing>(&sql);
        if let Some(text) = &text {
            query = query.bind(text.clone());
        }
        match (&cursor, by_price) {
            (Some((price, id)), true) => query = query.bind(*price).bind(*price).bind(*id),
            (Some((_, id)), false) => query = query.bind(*id),
            (None, _) => {}
        }
        let mut conn = self.ledger.db().pool().acquire().await?;
        let items = query.bind(limit).fetch_all(&mut *conn).await?;
        let next = (items.len() == limit as usize)
            .then(|| items.last().map(|l| format!("{}:{}", l.price, l.id)))
            .flatten();
        Ok(ListingPage { items, next })
    }
}

/// One buy asked for.
#[derive(Clone)]
struct BuyJob {
    buyer: UserId,
    listing: ListingId,
    key: Option<IdempotencyKey>,
    expected_price: Option<i64>,
}

/// Why a buy did not happen: the listing could not be closed for the buyer (explained
/// after the transaction), or another refusal.
enum BuyFailure {
    NotClosed,
    Market(MarketError),
}

impl From<MarketError> for BuyFailure {
    fn from(e: MarketError) -> Self {
        BuyFailure::Market(e)
    }
}

impl From<sqlx::Error> for BuyFailure {
    fn from(e: sqlx::Error) -> Self {
        BuyFailure::Market(e.into())
    }
}

/// Does buys (the market's copy that has no group of its own).
struct Buys(Market);

#[async_trait::async_trait]
impl GroupWork for Buys {
    type Job = BuyJob;
    type Output = Sale;
    type Error = BuyFailure;

    async fn apply(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        job: &BuyJob,
    ) -> Result<Sale, BuyFailure> {
        self.0.buy_in(tx, job).await
    }
}

/// What a sale needs of its listing: which it is, its asset and its seller.
pub(crate) struct SaleOf {
    pub listing: ListingId,
    pub asset: GenerationId,
    pub seller: UserId,
    /// Whether it ever had an offer (live ones end with the sale).
    pub offered: bool,
}

impl From<&Listing> for SaleOf {
    fn from(l: &Listing) -> Self {
        Self {
            listing: l.id,
            asset: l.asset_id,
            seller: l.seller_id,
            offered: true,
        }
    }
}

/// How the buyer pays in a sale.
pub(crate) enum Payment<'a> {
    /// From their available money, checked in the sale's transaction.
    Available,
    /// By capturing the hold made for this reference (an accepted offer).
    Hold(&'a str),
}

/// Closes an open listing for `buyer`, and at `price` when given (a buy must not pay a
/// price changed since the buyer saw it). Whoever closes it buys it; everyone else finds it
/// closed. Locks the listing first, so every path that ends it takes locks in one order.
pub(crate) async fn close_listing(
    conn: &mut AnyConnection,
    id: ListingId,
    buyer: UserId,
    price: Option<i64>,
) -> Result<(), MarketError> {
    let closed = sqlx::query(
        "UPDATE listings SET status = 'sold', buyer_id = $1, updated_at = $2 \
         WHERE id = $3 AND status = 'open' AND ($4 < 0 OR price = $4)",
    )
    .bind(buyer)
    .bind(clock::now_micros())
    .bind(id)
    .bind(price.unwrap_or(-1))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if closed != 1 {
        return Err(MarketError::Closed);
    }
    Ok(())
}

fn parse_cursor(raw: &str) -> Result<(i64, ListingId), MarketError> {
    let bad = || {
        MarketError::Wallet(WalletError::Invalid(crate::domain::Invalid {
            field: "after",
            message: "must be the `next` value of a previous page".into(),
        }))
    };
    let (price, id) = raw.split_once(':').ok_or_else(bad)?;
    Ok((
        price.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
}

pub fn router(market: Arc<Market>) -> Router {
    Router::new()
        .route("/api/v1/listings", get(browse).post(list))
        .route(
            "/api/v1/listings/{id}",
            get(show).patch(reprice).delete(withdraw),
        )
        .route("/api/v1/listings/{id}/buy", post(buy))
        .with_state(market)
}

pub(crate) fn listing_id(raw: &str) -> Result<ListingId, Problem> {
    raw.parse().map_err(|_| MarketError::NotFound.into())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewListing {
    asset_id: GenerationId,
    /// Whole minor units, 1 to the configured maximum.
    #[schema(example = 2500, minimum = 1)]
    price: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPrice {
    #[schema(example = 3000, minimum = 1)]
    price: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ListingPage {
    pub(crate) items: Vec<Listing>,
    /// Pass as `after` for the next page; absent on the last.
    pub(crate) next: Option<String>,
}

#[derive(Default, Deserialize, IntoParams)]
pub struct BrowseQuery {
    /// `newest` (default) or `price` (cheapest first).
    pub(crate) sort: Option<String>,
    /// Words the prompt contains.
    pub(crate) q: Option<String>,
    /// The `next` of the previous page.
    pub(crate) after: Option<String>,
    /// 1–100, default 20.
    pub(crate) limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct Bought {
    pub(crate) sale: Sale,
    pub(crate) wallet: WalletView,
}

/// List an asset you own at a price.
#[utoipa::path(post, path = "/api/v1/listings", tag = "marketplace", request_body = NewListing,
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "Listed", body = Listing),
        (status = 403, description = "Not the asset's owner", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already listed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid price", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list(
    State(market): State<Arc<Market>>,
    principal: Principal,
    ApiJson(body): ApiJson<NewListing>,
) -> Result<Response, Problem> {
    let listing = market
        .open(principal.user_id, body.asset_id, body.price)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(listing)).into_response())
}

/// Open listings: newest or cheapest first, filtered by words of the prompt, a page at a
/// time.
#[utoipa::path(get, path = "/api/v1/listings", tag = "marketplace", params(BrowseQuery),
    responses((status = 200, description = "One page of open listings", body = ListingPage)))]
async fn browse(
    State(market): State<Arc<Market>>,
    Query(q): Query<BrowseQuery>,
) -> Result<Response, Problem> {
    let body = market.browse_json(&q).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// One listing, open or closed.
#[utoipa::path(get, path = "/api/v1/listings/{id}", tag = "marketplace",
    params(("id" = String, Path, description = "The listing's id")),
    responses(
        (status = 200, description = "The listing", body = Listing),
        (status = 404, description = "No such listing", body = Problem, content_type = "application/problem+json"),
    ))]
async fn show(
    State(market): State<Arc<Market>>,
    Path(id): Path<String>,
) -> Result<ApiJson<Listing>, Problem> {
    Ok(ApiJson(market.listing(listing_id(&id)?).await?))
}

/// Change the price of your open listing.
#[utoipa::path(patch, path = "/api/v1/listings/{id}", tag = "marketplace", request_body = NewPrice,
    params(("id" = String, Path, description = "The listing's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Changed", body = Listing),
        (status = 403, description = "Not your listing", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Closed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid price", body = Problem, content_type = "application/problem+json"),
    ))]
async fn reprice(
    State(market): State<Arc<Market>>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewPrice>,
) -> Result<ApiJson<Listing>, Problem> {
    let id = listing_id(&id)?;
    Ok(ApiJson(
        market
            .change(principal.user_id, id, Some(body.price))
            .await?,
    ))
}

/// Withdraw your open listing.
#[utoipa::path(delete, path = "/api/v1/listings/{id}", tag = "marketplace",
    params(("id" = String, Path, description = "The listing's id")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Withdrawn", body = Listing),
        (status = 403, description = "Not your listing", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Closed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn withdraw(
    State(market): State<Arc<Market>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<ApiJson<Listing>, Problem> {
    let id = listing_id(&id)?;
    Ok(ApiJson(market.change(principal.user_id, id, None).await?))
}

/// Buy a listing: money and ownership move together, once. With an `Idempotency-Key`, a
/// repeat answers with the first purchase (200).
#[utoipa::path(post, path = "/api/v1/listings/{id}/buy", tag = "marketplace",
    params(("id" = String, Path, description = "The listing's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–100 visible ASCII characters")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "Bought", body = Bought),
        (status = 200, description = "A repeat of an earlier purchase with the same key", body = Bought),
        (status = 402, description = "Not enough available money", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Sold or withdrawn already, or your own listing", body = Problem, content_type = "application/problem+json"),
    ))]
async fn buy(
    State(market): State<Arc<Market>>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = listing_id(&id)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            Some(IdempotencyKey::parse(v.to_str().unwrap_or("\u{0}")).map_err(WalletError::from)?)
        }
    };
    let (sale, replayed) = market.buy(principal.user_id, id, key, None).await?;
    let wallet = market.ledger.wallet(principal.user_id).await?;
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, ApiJson(Bought { sale, wallet })).into_response())
}
