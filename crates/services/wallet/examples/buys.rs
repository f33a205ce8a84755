//! Buys of distinct listings (of a hundred sellers) per second: the wallet's whole buy (close the listing, check the
//! buyer's money, move the asset, balanced postings, three history lines, the sale record,
//! end the listing's offers) in its own transaction, `CONCURRENCY` at a time, on the
//! embedded SQLite database or on PostgreSQL. HTTP is not part of it (the request edge is
//! measured by `scripts/bench-baseline`).
//!
//!   cargo run --release -p rendermart-wallet --example buys -- [LISTINGS] [CONCURRENCY] [DATABASE_URL]
//!
//! Without DATABASE_URL it uses a fresh SQLite file in a temporary directory; with one (a
//! PostgreSQL admin URL), a fresh database it drops afterwards. `scripts/bench-buys` runs
//! both and pgbench's TPC-B on the same server.

use std::{sync::Arc, time::Instant};

use rendermart_platform::{
    clock,
    db::{DatabaseTarget, Db},
};
use rendermart_types::UserId;
use rendermart_wallet::{domain::Amount, ledger::Ledger, market::Market, WalletConfig, MIGRATOR};
use sqlx::Connection;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listings: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let concurrency: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(16);
    let admin_url = args.get(3).cloned();
    let dir = tempfile::tempdir()?;
    let (target, database) = match &admin_url {
        None => (DatabaseTarget::from_config(None, dir.path())?, None),
        Some(admin) => {
            let name = format!("rm_bench_{}", uuid::Uuid::now_v7().simple());
            let mut conn = sqlx::postgres::PgConnection::connect(admin).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await?;
            let (base, _) = admin.rsplit_once('/').unwrap_or((admin, ""));
            let url = format!("{base}/{name}");
            (
                DatabaseTarget::from_config(Some(&url), dir.path())?,
                Some((admin.clone(), name)),
            )
        }
    };
    let db = Db::connect(&target, "wallet").await?;
    db.migrate(&MIGRATOR).await?;
    let config = WalletConfig {
        max_topup: i64::MAX / 4,
        ..WalletConfig::default()
    };
    let ledger = Arc::new(Ledger::new(db.clone(), config)?);
    ledger.open_platform_accounts().await?;
    let market = Arc::new(Market::new(ledger.clone()));

    // A hundred sellers own `listings` images, each listed; `concurrency` buyers with money.
    let sellers: Vec<UserId> = (0..100).map(|_| UserId::new()).collect();
    let buyers: Vec<UserId> = (0..concurrency).map(|_| UserId::new()).collect();
    let prepared = Instant::now();
    let mut ids = Vec::with_capacity(listings);
    for i in 0..listings {
        let seller = sellers[i % sellers.len()];
        let asset = uuid::Uuid::now_v7().to_string();
        let mut tx = db.begin().await?;
        sqlx::query(
            "INSERT INTO assets (id, owner_id, creator_id, prompt, provider, model, seed, width, \
             height, original_key, thumbnail_key, created_at) \
             VALUES ($1, $2, $2, $3, 'procedural', 'bench', 1, 512, 512, 'o', 't', $4)",
        )
        .bind(&asset)
        .bind(seller)
        .bind(format!("bench image {i}"))
        .bind(clock::now_micros())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO asset_owners (asset_id, seq, owner_id, since, how) \
             VALUES ($1, 1, $2, $3, 'created')",
        )
        .bind(&asset)
        .bind(seller)
        .bind(clock::now_micros())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let listing = market.open(seller, asset.parse()?, 100).await?;
        ids.push(listing.id);
    }
    for buyer in &buyers {
        let money = Amount::parse(100 * listings as i64, i64::MAX)?;
        ledger.top_up(*buyer, money, None).await?;
    }
    eprintln!(
        "prepared {listings} listings and {concurrency} buyers in {:.1} s",
        prepared.elapsed().as_secs_f64()
    );

    // Each buyer takes every `concurrency`-th listing: distinct listings, no contention
    // between buyers but the database's own.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (b, buyer) in buyers.iter().copied().enumerate() {
        let mine: Vec<_> = ids.iter().copied().skip(b).step_by(concurrency).collect();
        let market = market.clone();
        tasks.spawn(async move {
            let mut failed = 0usize;
            for id in mine {
                if market.buy(buyer, id, None, None).await.is_err() {
                    failed += 1;
                }
            }
            failed
        });
    }
    let mut failed = 0;
    while let Some(f) = tasks.join_next().await {
        failed += f?;
    }
    let secs = started.elapsed().as_secs_f64();
    let check = ledger.check().await?;
    let fees = rendermart_wallet::ledger::platform_balance(&db, "platform:fees").await?;
    assert_eq!(fees, 5 * (listings - failed) as i64, "5 % of each 100");
    println!(
        "{} buys of distinct listings, {concurrency} at a time, on {}: {:.0} buys/s ({failed} failed; ledger imbalance {}, accounts out of step {})",
        listings - failed,
        if admin_url.is_some() { "PostgreSQL" } else { "SQLite" },
        (listings - failed) as f64 / secs,
        check.imbalance,
        check.out_of_step,
    );
    db.close().await;
    if let Some((admin, name)) = database {
        let mut conn = sqlx::postgres::PgConnection::connect(&admin).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}
