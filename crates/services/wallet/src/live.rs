//! Live updates from the wallet (server-sent events, bounded by [`LiveStreams`]):
//!
//! * `GET /api/v1/market/events` — anyone: `event: listing` with the listing's JSON each time
//!   one is opened, repriced, sold or withdrawn (`event: reload` if this client fell too
//!   far behind to be told every change). One poller per process reads what changed and
//!   fans it out, so a thousand open pages cost one query every half second, and replicas
//!   each see every change (it is read from the database, not from this process's memory).
//! * `GET /api/v1/wallet/events` — the signed-in user's wallet (`event: wallet`) now and
//!   whenever it changes.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    extract::State,
    response::{sse::Event, IntoResponse, Response},
    routing::get,
    Router,
};
use futures_util::stream;
use rendermart_platform::{
    auth::Principal,
    clock,
    db::Db,
    http::Problem,
    live::{json_event, LiveStreams},
    shutdown::Shutdown,
};
use tokio::sync::broadcast;

use crate::{
    ledger::Ledger,
    market::{Listing, ListingId, LISTING_COLUMNS},
};

/// How often the feed looks for changed listings while someone watches.
const FEED_EVERY: Duration = Duration::from_millis(500);
/// Changes are re-read this far back (a transaction that took a timestamp before another
/// but committed after it is not missed); what was already sent is not sent again.
const LOOK_BACK_MICROS: i64 = 2_000_000;
/// Listing changes a slow client may be behind before it is told to reload.
const FEED_BUFFER: usize = 256;
/// How often one open wallet stream reads the wallet.
const WALLET_EVERY: Duration = Duration::from_secs(1);

/// The marketplace's changes, fanned out to every open market page of this process.
pub struct MarketFeed {
    tx: broadcast::Sender<Listing>,
    db: Db,
}

impl MarketFeed {
    pub fn new(db: Db) -> Self {
        let (tx, _) = broadcast::channel(FEED_BUFFER);
        Self { tx, db }
    }

    /// Reads what changed and tells the watchers, every half second while anyone watches,
    /// until `stop`.
    pub async fn run(self: Arc<Self>, stop: Shutdown) {
        let mut cursor = clock::now_micros();
        // What was sent within the look-back window: listing → its updated_at.
        let mut sent: HashMap<ListingId, i64> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FEED_EVERY) => {}
                _ = stop.wait() => return,
            }
            if self.tx.receiver_count() == 0 {
                cursor = clock::now_micros();
                sent.clear();
                continue;
            }
            match self.changed_since(cursor - LOOK_BACK_MICROS).await {
                Ok(changed) => {
                    for listing in changed {
                        cursor = cursor.max(listing.updated_at);
                        if sent.get(&listing.id) == Some(&listing.updated_at) {
                            continue;
                        }
                        sent.insert(listing.id, listing.updated_at);
                        let _ = self.tx.send(listing);
                    }
                    sent.retain(|_, at| *at >= cursor - LOOK_BACK_MICROS);
                }
                Err(e) => tracing::warn!(error = %e, "reading the market's changes failed"),
            }
        }
    }

    async fn changed_since(&self, since: i64) -> Result<Vec<Listing>, sqlx::Error> {
        let mut conn = self.db.pool().acquire().await?;
        sqlx::query_as(&format!(
            "SELECT {LISTING_COLUMNS} FROM listings l JOIN assets a ON a.id = l.asset_id \
             WHERE l.updated_at > $1 ORDER BY l.updated_at LIMIT 500"
        ))
        .bind(since)
        .fetch_all(&mut *conn)
        .await
    }

    fn events(&self) -> impl futures_util::Stream<Item = Event> + Send + 'static {
        stream::unfold(self.tx.subscribe(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(listing) => {
                        if let Some(event) = json_event("listing", &listing) {
                            return Some((event, rx));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Some((Event::default().event("reload").data("{}"), rx));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }
}

#[derive(Clone)]
struct Live {
    feed: Arc<MarketFeed>,
    ledger: Arc<Ledger>,
    streams: LiveStreams,
}

pub fn router(feed: Arc<MarketFeed>, ledger: Arc<Ledger>, streams: LiveStreams) -> Router {
    Router::new()
        .route("/api/v1/market/events", get(market_events))
        .route("/api/v1/wallet/events", get(wallet_events))
        .with_state(Live {
            feed,
            ledger,
            streams,
        })
}

/// Changes to listings as they happen (server-sent events).
#[utoipa::path(get, path = "/api/v1/market/events", tag = "marketplace",
    responses(
        (status = 200, description = "`text/event-stream`: `listing` events (the listing's JSON), `reload` when behind"),
        (status = 503, description = "Too many live connections", body = Problem, content_type = "application/problem+json"),
    ))]
async fn market_events(State(live): State<Live>) -> Result<Response, Problem> {
    Ok(live.streams.respond(live.feed.events())?.into_response())
}

/// The caller's wallet now and whenever it changes (server-sent events).
#[utoipa::path(get, path = "/api/v1/wallet/events", tag = "wallet",
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "`text/event-stream`: `wallet` events ({balance, held, available, currency})"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many live connections", body = Problem, content_type = "application/problem+json"),
    ))]
async fn wallet_events(
    State(live): State<Live>,
    principal: Principal,
) -> Result<Response, Problem> {
    let user = principal.user_id;
    let ledger = live.ledger.clone();
    let events = stream::unfold(None, move |last| {
        let ledger = ledger.clone();
        async move {
            let mut first = last.is_none();
            loop {
                if !first {
                    tokio::time::sleep(WALLET_EVERY).await;
                }
                first = false;
                match ledger.wallet(user).await {
                    Ok(now) if last.as_ref() != Some(&now) => {
                        let event = json_event("wallet", &now)?;
                        return Some((event, Some(now)));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "reading a wallet for its stream failed"),
                }
            }
        }
    });
    Ok(live.streams.respond(events)?.into_response())
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(market_events, wallet_events))]
pub struct LiveApiDoc;
