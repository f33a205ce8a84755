//! Wallet: the money users hold in RenderMart.
//!
//! One credit account per user plus the platform's accounts, a double-entry ledger (every
//! movement is a balanced set of postings written with the balances it changes, in one
//! transaction), holds, top-ups through a payment provider and payouts that are held, then
//! settled or reversed. Its public face:
//!
//! * [`WalletService`] — the [`Service`] the binary lists: migrations, the `[wallet]`
//!   section ([`WalletConfig`]), routes under `/api/v1/wallet`, OpenAPI, and two workers:
//!   payout settlement and the ledger check (exported as `wallet_ledger_imbalance` and
//!   `wallet_accounts_out_of_step` and `wallet_holds_out_of_step`, all 0 when the ledger
//!   is sound);
//! * [`ledger::Ledger`] — the ledger itself;
//! * [`assets`] — images people own: made from studio's `ImageGenerated`,
//!   `/api/v1/assets`, the original only to its owner;
//! * [`holds`] — consumer `wallet.generations`: a generation's price is held when studio
//!   asks, captured with the asset's creation, released when it fails.
//!
//! * [`market`] — listings and sales of originals: a buy moves money (price, fee, the
//!   creator's royalty on a resale) and ownership in one transaction;
//! * [`offers`] — offers that hold the buyer's money until accepted (a sale like a buy),
//!   rejected, countered, cancelled or expired.
//!
//! `rendermart-wallet-api` holds the events the wallet answers holds with and its client
//! trait, `AssetsApi` (who owns an image), which [`assets::Assets`] implements in process.

pub mod api;
pub mod assets;
mod config;
pub mod domain;
pub mod holds;
pub mod ledger;
pub mod live;
pub mod market;
pub mod offers;
pub mod orders_in;
pub mod pages;
pub mod payments;
pub mod people;
pub mod stripe;

use std::{sync::Arc, time::Duration};

pub use config::WalletConfig;
use ledger::Ledger;
use rendermart_platform::{
    client::ServiceClient,
    consumer::Consumer,
    service::{Clients, Context, Service, Started, Worker},
    shutdown::Shutdown,
};
use utoipa::OpenApi;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The wallet service, as the binary starts it.
pub struct WalletService;

impl Service for WalletService {
    const NAME: &'static str = "wallet";
    type Config = WalletConfig;

    fn migrations() -> Option<&'static sqlx::migrate::Migrator> {
        Some(&MIGRATOR)
    }

    async fn start(ctx: Context<WalletConfig>) -> anyhow::Result<Started> {
        let check_every = Duration::from_secs(ctx.config.ledger_check_secs.max(1));
        let db = ctx.db()?;
        let ledger = Arc::new(Ledger::new(db.clone(), ctx.config.clone())?);
        ledger.open_platform_accounts().await?;
        let assets = Arc::new(assets::Assets::new(db.clone(), ctx.objects.clone()));
        ctx.clients
            .provide::<dyn rendermart_wallet_api::AssetsApi>(assets.clone());
        let market = Arc::new(market::Market::new(ledger.clone()));
        let offers = Arc::new(offers::Offers::new(market.clone()));
        let expiring = offers.clone();
        let feed = Arc::new(live::MarketFeed::new(db.clone()));
        let feeding = feed.clone();
        let streams = rendermart_platform::live::LiveStreams::new(
            rendermart_platform::live::DEFAULT_MAX_STREAMS,
            ctx.shutdown.clone(),
        );
        let (settler, checker) = (ledger.clone(), ledger.clone());
        let mut doc = api::WalletApiDoc::openapi();
        doc.merge(assets::AssetsApiDoc::openapi());
        doc.merge(market::MarketApiDoc::openapi());
        doc.merge(offers::OffersApiDoc::openapi());
        doc.merge(live::LiveApiDoc::openapi());
        doc.merge(payments::PaymentsApiDoc::openapi());
        Ok(Started {
            routes: api::router(ledger.clone())
                .merge(live::router(feed, ledger.clone(), streams))
                .merge(payments::router(ledger.clone()))
                .merge(pages::router(
                    ledger.clone(),
                    market.clone(),
                    offers.clone(),
                    assets.clone(),
                ))
                .merge(assets::router(assets.clone()))
                .merge(market::router(market))
                .merge(offers::router(offers)),
            internal: assets::internal_router(assets),
            openapi: Some(doc),
            consumers: vec![
                Consumer::new(
                    db.clone(),
                    "wallet.generations",
                    holds::GenerationsIn::new(ledger.clone()),
                )?
                .into(),
                Consumer::new(
                    db.clone(),
                    "wallet.orders",
                    orders_in::OrdersIn::new(ledger.clone()),
                )?
                .into(),
                Consumer::new(db, "wallet.people", people::PeopleIn)?.into(),
            ],
            workers: vec![
                Worker::new("wallet.settle_payouts", move |stop| {
                    settle_payouts(settler.clone(), stop)
                }),
                Worker::new("wallet.market_feed", move |stop| feeding.clone().run(stop)),
                Worker::new("wallet.expire_offers", move |stop| {
                    offers::expire_offers(expiring.clone(), stop)
                }),
                Worker::new("wallet.check_ledger", move |stop| {
                    check_ledger(checker.clone(), check_every, stop)
                }),
            ],
            ..Started::default()
        })
    }

    fn connect_remote(
        _config: &WalletConfig,
        remote: &ServiceClient,
        clients: &Clients,
    ) -> anyhow::Result<()> {
        clients.provide::<dyn rendermart_wallet_api::AssetsApi>(Arc::new(
            rendermart_wallet_api::RemoteAssets::new(remote.clone()),
        ));
        Ok(())
    }
}

/// Settles due payouts every second until shutdown.
async fn settle_payouts(ledger: Arc<Ledger>, stop: Shutdown) {
    loop {
        if let Err(e) = ledger.settle_due_payouts().await {
            tracing::warn!(error = %e, "settling payouts failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait() => return,
        }
    }
}

/// Checks the ledger's invariants every `every` and exports them as gauges.
async fn check_ledger(ledger: Arc<Ledger>, every: Duration, stop: Shutdown) {
    loop {
        match ledger.check().await {
            Ok(check) => {
                metrics::gauge!("wallet_ledger_imbalance").set(check.imbalance as f64);
                metrics::gauge!("wallet_accounts_out_of_step").set(check.out_of_step as f64);
                metrics::gauge!("wallet_holds_out_of_step").set(check.holds_out_of_step as f64);
                if check.imbalance != 0 || check.out_of_step != 0 || check.holds_out_of_step != 0 {
                    tracing::error!(?check, "the ledger's invariants do not hold");
                }
            }
            Err(e) => tracing::warn!(error = %e, "checking the ledger failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait() => return,
        }
    }
}
