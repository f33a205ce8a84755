//! The reservation rules against real databases: each test runs on SQLite (a temp dir,
//! always) as `sqlite::<rule>` and on PostgreSQL (a fresh database) as `postgres::<rule>`
//! when `RENDERMART_TEST_DATABASE_URL` (an admin URL) is set; without it the PostgreSQL
//! run says it skipped and passes.
//!
//! Reservations are made through [`Inventory`] directly and through the consumer
//! `inventory.orders` (its bus-level handler, so the inbox and the transaction are the real
//! ones); what inventory published is read back from its outbox.

use std::{sync::Arc, time::Duration};

use futures_util::future::join_all;
use rendermart_inventory::{
    domain::{Delta, Reason},
    orders_in::OrdersIn,
    stock::{Inventory, ReserveOutcome, Settled},
    InventoryConfig, MIGRATOR,
};
use rendermart_inventory_api::{
    InventoryApi as _, StockAvailable, StockCommitted, StockLow, StockOut, StockRejected,
    StockReleased, StockReserved,
};
use rendermart_orders_api::{OrderCancelled, OrderConfirmed, OrderId, OrderLine, OrderPlaced};
use rendermart_platform::{
    bus::Handler,
    consumer::Consumer,
    db::{DatabaseTarget, Db},
    events::{Envelope, Event},
    shutdown::Shutdown,
};
use rendermart_types::{Sku, UserId};
use sqlx::{Connection, Executor};

macro_rules! on_both_databases {
    ($($rule:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $rule() {
                    super::$rule(super::Fixture::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $rule() {
                    let Some(fixture) = super::Fixture::postgres().await else { return };
                    super::$rule(fixture).await
                }
            )*
        }
    };
}

on_both_databases!(
    five_hundred_concurrent_reservations_for_the_last_ten_units_reserve_exactly_ten,
    an_order_reserves_all_its_lines_or_none,
    an_expired_reservation_is_released_and_the_stock_returns,
    a_cancelled_order_releases_and_a_confirmed_one_commits,
    a_repeated_order_changes_nothing,
    stock_low_and_out_are_published_once_when_crossed,
    an_adjustment_cannot_take_stock_below_what_is_reserved,
    the_levels_a_page_shows_follow_every_change_made_here_at_once_and_another_replicas_soon,
);

// ---------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------

async fn five_hundred_concurrent_reservations_for_the_last_ten_units_reserve_exactly_ten(
    f: Fixture,
) {
    let inventory = f.inventory(InventoryConfig::default()).await;
    stock_up(&inventory, "PRINT-LAST", 10).await;
    let attempts = (0..500).map(|_| {
        let inventory = inventory.clone();
        tokio::spawn(async move {
            inventory
                .reserve(OrderId::new(), &[line("PRINT-LAST", 1)])
                .await
                .expect("a reservation is decided, not failed")
        })
    });
    let outcomes: Vec<ReserveOutcome> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let reserved = outcomes
        .iter()
        .filter(|o| matches!(o, ReserveOutcome::Reserved { .. }))
        .count();
    let rejected = outcomes
        .iter()
        .filter(|o| matches!(o, ReserveOutcome::Rejected { .. }))
        .count();
    assert_eq!((reserved, rejected), (10, 490));
    let stock = inventory.stock(&sku("PRINT-LAST")).await.unwrap();
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available),
        (10, 10, 0)
    );
    let (raw_available,): (i64,) =
        sqlx::query_as("SELECT on_hand - reserved FROM stock WHERE sku = 'PRINT-LAST'")
            .fetch_one(f.db.pool())
            .await
            .unwrap();
    assert_eq!(raw_available, 0, "never negative");
    let (held,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(l.quantity), 0) AS BIGINT) FROM reservation_lines l \
         JOIN reservations r ON r.order_id = l.order_id WHERE r.status = 'held'",
    )
    .fetch_one(f.db.pool())
    .await
    .unwrap();
    assert_eq!(held, 10, "the held lines add up to what is reserved");
    let published = f.published().await;
    assert_eq!(count::<StockReserved>(&published), 10);
    assert_eq!(count::<StockRejected>(&published), 490);
    assert_eq!(count::<StockOut>(&published), 1);
    assert_eq!(count::<StockLow>(&published), 1);
    let rejection: StockRejected = first(&published);
    assert_eq!(
        rejection.reason,
        "out of stock: PRINT-LAST (1 asked, none left)"
    );
}

async fn an_order_reserves_all_its_lines_or_none(f: Fixture) {
    let inventory = f.inventory(InventoryConfig::default()).await;
    stock_up(&inventory, "PRINT-A3", 1).await;
    stock_up(&inventory, "BOOK-7", 5).await;
    // PRINT-A3 is short: nothing is reserved, BOOK-7's line included.
    let order = OrderId::new();
    let outcome = inventory
        .reserve(
            order,
            &[
                line("BOOK-7", 3),
                line("PRINT-A3", 2),
                line("MUG-UNKNOWN", 1),
            ],
        )
        .await
        .unwrap();
    let ReserveOutcome::Rejected { reason, short } = outcome else {
        panic!("expected a rejection, got {outcome:?}");
    };
    assert_eq!(
        reason,
        "out of stock: MUG-UNKNOWN (1 asked, none left), PRINT-A3 (2 asked, 1 left)"
    );
    assert_eq!(short.len(), 2);
    assert_eq!(available(&inventory, "BOOK-7").await, 5);
    assert_eq!(available(&inventory, "PRINT-A3").await, 1);
    assert_eq!(
        inventory
            .reservation_status(order)
            .await
            .unwrap()
            .as_deref(),
        Some("rejected")
    );
    let rejected: StockRejected = first(&f.published().await);
    assert_eq!(rejected.order_id, order);
    assert_eq!(rejected.short[1].sku, sku("PRINT-A3"));
    assert_eq!(
        (rejected.short[1].requested, rejected.short[1].available),
        (2, 1)
    );

    // Every line covered (one SKU named twice is summed): all reserved.
    let order = OrderId::new();
    let outcome = inventory
        .reserve(
            order,
            &[line("BOOK-7", 2), line("PRINT-A3", 1), line("book-7", 1)],
        )
        .await
        .unwrap();
    let ReserveOutcome::Reserved { lines, .. } = outcome else {
        panic!("expected a reservation, got {outcome:?}");
    };
    assert_eq!(lines, vec![line("BOOK-7", 3), line("PRINT-A3", 1)]);
    assert_eq!(available(&inventory, "BOOK-7").await, 2);
    assert_eq!(available(&inventory, "PRINT-A3").await, 0);

    // A malformed order is rejected with a reason, not an error.
    let outcome = inventory
        .reserve(OrderId::new(), &[line("BOOK-7", 0)])
        .await
        .unwrap();
    assert!(
        matches!(&outcome, ReserveOutcome::Rejected { reason, short } if reason.contains("quantity") && short.is_empty()),
        "{outcome:?}"
    );
    assert_eq!(available(&inventory, "BOOK-7").await, 2);
}

async fn an_expired_reservation_is_released_and_the_stock_returns(f: Fixture) {
    let inventory = f
        .inventory(InventoryConfig {
            reservation_ttl_secs: 1,
            ..InventoryConfig::default()
        })
        .await;
    stock_up(&inventory, "POSTER-9", 3).await;
    let (expiring, confirmed) = (OrderId::new(), OrderId::new());
    for order in [expiring, confirmed] {
        assert!(matches!(
            inventory
                .reserve(order, &[line("POSTER-9", 1)])
                .await
                .unwrap(),
            ReserveOutcome::Reserved { .. }
        ));
    }
    assert_eq!(
        inventory.commit(confirmed).await.unwrap(),
        Settled::Done(vec![line("POSTER-9", 1)])
    );
    assert_eq!(available(&inventory, "POSTER-9").await, 1);

    let stop = Shutdown::new();
    let worker = tokio::spawn(rendermart_inventory::expire_reservations(
        inventory.clone(),
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while available(&inventory, "POSTER-9").await != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired reservation was not released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.trigger();
    worker.await.unwrap();

    let stock = inventory.stock(&sku("POSTER-9")).await.unwrap();
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (2, 0, 2));
    assert_eq!(
        inventory
            .reservation_status(expiring)
            .await
            .unwrap()
            .as_deref(),
        Some("released")
    );
    let released: StockReleased = first(&f.published().await);
    assert_eq!(
        (released.order_id, released.why.as_str()),
        (expiring, "expired")
    );
    // A confirmation arriving after the expiry takes nothing.
    assert_eq!(
        inventory.commit(expiring).await.unwrap(),
        Settled::NotHeld(Some("released".into()))
    );
    assert_eq!(available(&inventory, "POSTER-9").await, 2);
}

async fn a_cancelled_order_releases_and_a_confirmed_one_commits(f: Fixture) {
    let inventory = f.inventory(InventoryConfig::default()).await;
    let orders = f.consumer(inventory.clone());
    stock_up(&inventory, "CARD-1", 10).await;
    let (cancelled, confirmed) = (OrderId::new(), OrderId::new());
    for order in [cancelled, confirmed] {
        orders
            .handle(&placed(order, &[line("CARD-1", 3)]))
            .await
            .unwrap();
    }
    let stock = inventory.stock(&sku("CARD-1")).await.unwrap();
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (10, 6, 4));

    orders
        .handle(&order_event(
            cancelled,
            &OrderCancelled {
                order_id: cancelled,
                reason: "payment declined".into(),
            },
        ))
        .await
        .unwrap();
    orders
        .handle(&order_event(
            confirmed,
            &OrderConfirmed {
                order_id: confirmed,
            },
        ))
        .await
        .unwrap();
    let stock = inventory.stock(&sku("CARD-1")).await.unwrap();
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (7, 0, 7));

    let published = f.published().await;
    assert_eq!(count::<StockReserved>(&published), 2);
    let released: StockReleased = first(&published);
    assert_eq!(released.order_id, cancelled);
    assert_eq!(released.why, "cancelled: payment declined");
    assert_eq!(released.lines, vec![line("CARD-1", 3)]);
    let committed: StockCommitted = first(&published);
    assert_eq!(committed.order_id, confirmed);
    assert_eq!(committed.lines, vec![line("CARD-1", 3)]);
    // The answers belong to the reservation's aggregate, in order.
    let aggregate = format!("reservation:{cancelled}");
    let aggregates: Vec<_> = published
        .iter()
        .filter(|e| e.aggregate.as_deref() == Some(aggregate.as_str()))
        .map(|e| (e.event_type.as_str(), e.sequence))
        .collect();
    assert_eq!(
        aggregates,
        vec![
            (StockReserved::TYPE, Some(1)),
            (StockReleased::TYPE, Some(2))
        ]
    );

    // A released reservation stays released: a later confirm changes nothing.
    orders
        .handle(&order_event(
            cancelled,
            &OrderConfirmed {
                order_id: cancelled,
            },
        ))
        .await
        .unwrap();
    let stock = inventory.stock(&sku("CARD-1")).await.unwrap();
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (7, 0, 7));
    assert_eq!(f.published().await.len(), published.len());
    // A confirmed order cancelled before it ships puts its units back on hand, once.
    let cancel_confirmed = order_event(
        confirmed,
        &OrderCancelled {
            order_id: confirmed,
            reason: "changed my mind".into(),
        },
    );
    orders.handle(&cancel_confirmed).await.unwrap();
    let stock = inventory.stock(&sku("CARD-1")).await.unwrap();
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available),
        (10, 0, 10)
    );
    let after_restock = f.published().await;
    assert_eq!(after_restock.len(), published.len() + 1);
    let restocked: Vec<StockReleased> = after_restock
        .iter()
        .filter(|e| e.is::<StockReleased>())
        .map(|e| e.decode().unwrap())
        .filter(|r: &StockReleased| r.order_id == confirmed)
        .collect();
    assert_eq!(restocked.len(), 1);
    assert_eq!(restocked[0].why, "cancelled: changed my mind");
    let again = order_event(
        confirmed,
        &OrderCancelled {
            order_id: confirmed,
            reason: "again".into(),
        },
    );
    orders.handle(&again).await.unwrap();
    let stock = inventory.stock(&sku("CARD-1")).await.unwrap();
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available),
        (10, 0, 10)
    );
    assert_eq!(f.published().await.len(), after_restock.len());

    // An order cancelled before inventory saw it placed never holds stock.
    let early = OrderId::new();
    assert_eq!(
        inventory
            .release(early, "cancelled: changed my mind")
            .await
            .unwrap(),
        Settled::NotHeld(None)
    );
    assert_eq!(
        inventory
            .reserve(early, &[line("CARD-1", 1)])
            .await
            .unwrap(),
        ReserveOutcome::AlreadyDecided("released".into())
    );
    assert_eq!(available(&inventory, "CARD-1").await, 10);
}

async fn a_repeated_order_changes_nothing(f: Fixture) {
    let inventory = f.inventory(InventoryConfig::default()).await;
    let orders = f.consumer(inventory.clone());
    stock_up(&inventory, "CARD-2", 5).await;
    let order = OrderId::new();
    let event = placed(order, &[line("CARD-2", 2)]);
    // The same delivery twice: the inbox drops the second.
    orders.handle(&event).await.unwrap();
    orders.handle(&event).await.unwrap();
    // The same order in a new message (a producer retry): the order-level guard.
    orders
        .handle(&placed(order, &[line("CARD-2", 2)]))
        .await
        .unwrap();
    assert_eq!(
        inventory
            .reserve(order, &[line("CARD-2", 2)])
            .await
            .unwrap(),
        ReserveOutcome::AlreadyDecided("held".into())
    );
    assert_eq!(available(&inventory, "CARD-2").await, 3);
    let published = f.published().await;
    assert_eq!(count::<StockReserved>(&published), 1);
    // Concurrent repeats of one order: still one reservation.
    let again = OrderId::new();
    let repeats = (0..20).map(|_| {
        let inventory = inventory.clone();
        tokio::spawn(async move { inventory.reserve(again, &[line("CARD-2", 1)]).await })
    });
    let decided = join_all(repeats)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(ReserveOutcome::Reserved { .. }))))
        .count();
    assert_eq!(decided, 1);
    assert_eq!(available(&inventory, "CARD-2").await, 2);
}

async fn stock_low_and_out_are_published_once_when_crossed(f: Fixture) {
    let inventory = f.inventory(InventoryConfig::default()).await; // threshold 5
    let admin = UserId::new();
    let s = sku("LAMP-3");
    inventory
        .adjust(&s, delta(8), &reason("first delivery"), admin)
        .await
        .unwrap();
    let mut orders = Vec::new();
    for _ in 0..8 {
        let order = OrderId::new();
        inventory
            .reserve(order, &[line("LAMP-3", 1)])
            .await
            .unwrap();
        orders.push(order);
    }
    // 8 → 0 one at a time: low once (at 5), out once (at 0).
    let published = f.published().await;
    assert_eq!(
        count::<StockAvailable>(&published),
        1,
        "stocked for the first time"
    );
    assert_eq!(count::<StockLow>(&published), 1);
    assert_eq!(count::<StockOut>(&published), 1);
    let low: StockLow = first(&published);
    assert_eq!((low.available, low.threshold), (5, 5));
    // Rejections at zero publish no more.
    inventory
        .reserve(OrderId::new(), &[line("LAMP-3", 1)])
        .await
        .unwrap();
    // Back above zero (a release): available again; below the threshold still, so no
    // second low; out again when it is taken.
    inventory.release(orders[0], "expired").await.unwrap();
    inventory
        .reserve(OrderId::new(), &[line("LAMP-3", 1)])
        .await
        .unwrap();
    let published = f.published().await;
    assert_eq!(count::<StockAvailable>(&published), 2);
    assert_eq!(count::<StockLow>(&published), 1);
    assert_eq!(count::<StockOut>(&published), 2);
    // Restocked above the threshold and drained in one order: low and out together.
    inventory
        .adjust(&s, delta(10), &reason("second delivery"), admin)
        .await
        .unwrap();
    inventory
        .reserve(OrderId::new(), &[line("LAMP-3", 10)])
        .await
        .unwrap();
    let published = f.published().await;
    assert_eq!(count::<StockAvailable>(&published), 3);
    assert_eq!(count::<StockLow>(&published), 2);
    assert_eq!(count::<StockOut>(&published), 3);
    // Every one of them belongs to the SKU's aggregate.
    assert!(published
        .iter()
        .filter(|e| e.event_type.starts_with("inventory.Stock")
            && [StockLow::TYPE, StockOut::TYPE, StockAvailable::TYPE]
                .contains(&e.event_type.as_str()))
        .all(|e| e.aggregate.as_deref() == Some("sku:LAMP-3")));
}

async fn an_adjustment_cannot_take_stock_below_what_is_reserved(f: Fixture) {
    let inventory = f.inventory(InventoryConfig::default()).await;
    let admin = UserId::new();
    let s = sku("FRAME-4");
    stock_up(&inventory, "FRAME-4", 5).await;
    inventory
        .reserve(OrderId::new(), &[line("FRAME-4", 3)])
        .await
        .unwrap();
    let err = inventory
        .adjust(&s, delta(-3), &reason("broken"), admin)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("at most 2 can be taken out"),
        "{err}"
    );
    let (view, adjustment) = inventory
        .adjust(&s, delta(-2), &reason("broken in transit"), admin)
        .await
        .unwrap();
    assert_eq!((view.on_hand, view.reserved, view.available), (3, 3, 0));
    assert_eq!(adjustment.on_hand_after, 3);
    let err = inventory
        .adjust(&sku("NEVER-STOCKED"), delta(-1), &reason("x"), admin)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        rendermart_inventory::stock::InventoryError::UnknownSku
    ));
    let trail = inventory.adjustments(&s, None, 10).await.unwrap();
    assert_eq!(
        trail.iter().map(|a| a.delta).collect::<Vec<_>>(),
        vec![-2, 5]
    );
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

async fn the_levels_a_page_shows_follow_every_change_made_here_at_once_and_another_replicas_soon(
    f: Fixture,
) {
    let inventory = f.inventory(InventoryConfig::default()).await;
    let orders = f.consumer(inventory.clone());
    stock_up(&inventory, "FRAME-1", 5).await;
    assert_eq!(shown(&inventory, "FRAME-1").await, Some(5));
    assert_eq!(shown(&inventory, "NEVER-STOCKED").await, None);
    // Shown twice in a row: the second may come from memory, and is the same.
    assert_eq!(shown(&inventory, "FRAME-1").await, Some(5));

    // Each change made through this instance is shown on the next view: an adjustment,
    // a reservation and a release applied by its consumer.
    stock_up(&inventory, "FRAME-1", 2).await;
    assert_eq!(shown(&inventory, "FRAME-1").await, Some(7));
    let order = OrderId::new();
    orders
        .handle(&placed(order, &[line("FRAME-1", 3)]))
        .await
        .unwrap();
    assert_eq!(shown(&inventory, "FRAME-1").await, Some(4));
    stock_up(&inventory, "NEVER-STOCKED", 1).await;
    assert_eq!(shown(&inventory, "NEVER-STOCKED").await, Some(1));
    orders
        .handle(&order_event(
            order,
            &OrderCancelled {
                order_id: order,
                reason: "changed my mind".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(shown(&inventory, "FRAME-1").await, Some(7));

    // Another replica's change is shown within half a second.
    let other = f.inventory(InventoryConfig::default()).await;
    stock_up(&other, "FRAME-1", 10).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while shown(&inventory, "FRAME-1").await != Some(17) {
        assert!(
            std::time::Instant::now() < deadline,
            "another replica's change was not shown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What decisions read is never from memory.
    assert_eq!(available(&inventory, "FRAME-1").await, 17);
}

/// What a page would show for the SKU: its available units, `None` if never stocked.
async fn shown(inventory: &Inventory, raw: &str) -> Option<i64> {
    let levels = inventory.levels_to_show(&[sku(raw)]).await.unwrap();
    assert!(levels.len() <= 1);
    levels.first().map(|l| l.available)
}

fn sku(raw: &str) -> Sku {
    Sku::parse(raw).unwrap()
}

fn line(raw: &str, quantity: u32) -> OrderLine {
    OrderLine {
        sku: sku(raw),
        quantity,
    }
}

fn delta(d: i64) -> Delta {
    Delta::parse(d, 1_000_000).unwrap()
}

fn reason(r: &str) -> Reason {
    Reason::parse(r).unwrap()
}

async fn stock_up(inventory: &Inventory, raw: &str, units: i64) {
    inventory
        .adjust(
            &sku(raw),
            delta(units),
            &reason("test stock"),
            UserId::new(),
        )
        .await
        .unwrap();
}

async fn available(inventory: &Inventory, raw: &str) -> i64 {
    inventory.stock(&sku(raw)).await.unwrap().available
}

fn order_event<E: Event>(order: OrderId, event: &E) -> Envelope {
    Envelope::new(event).with_aggregate("order", order)
}

fn placed(order: OrderId, lines: &[OrderLine]) -> Envelope {
    order_event(
        order,
        &OrderPlaced {
            order_id: order,
            buyer: UserId::new(),
            lines: lines.to_vec(),
            placed_at: time::OffsetDateTime::now_utc(),
        },
    )
}

fn count<E: Event>(published: &[Envelope]) -> usize {
    published.iter().filter(|e| e.is::<E>()).count()
}

/// The first published event of type `E`.
fn first<E: Event>(published: &[Envelope]) -> E {
    published
        .iter()
        .find(|e| e.is::<E>())
        .unwrap_or_else(|| panic!("no {} was published", E::TYPE))
        .decode()
        .unwrap()
}

/// An inventory database on one backend, removed afterwards.
struct Fixture {
    db: Db,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl Fixture {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let target = DatabaseTarget::SqliteDir(dir.path().to_owned());
        Self::on(target, Some(dir), None).await
    }

    async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var("RENDERMART_TEST_DATABASE_URL") else {
            eprintln!("skipped on PostgreSQL: set RENDERMART_TEST_DATABASE_URL to run it");
            return None;
        };
        let name = format!("rm_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap();
        admin.close().await.unwrap();
        let target = DatabaseTarget::Postgres(with_database(&admin_url, &name));
        Some(Self::on(target, None, Some((admin_url, name))).await)
    }

    async fn on(
        target: DatabaseTarget,
        dir: Option<tempfile::TempDir>,
        postgres: Option<(String, String)>,
    ) -> Self {
        let db = Db::connect(&target, "inventory").await.unwrap();
        db.migrate(&MIGRATOR).await.unwrap();
        Self {
            db,
            _dir: dir,
            postgres,
        }
    }

    async fn inventory(&self, config: InventoryConfig) -> Arc<Inventory> {
        Arc::new(Inventory::new(self.db.clone(), config).unwrap())
    }

    /// Consumer `inventory.orders` as the bus calls it.
    fn consumer(&self, inventory: Arc<Inventory>) -> Arc<dyn Handler> {
        Consumer::new(
            self.db.clone(),
            "inventory.orders",
            OrdersIn::new(inventory),
        )
        .unwrap()
        .into_parts()
        .1
    }

    /// Everything inventory has published so far, in outbox order.
    async fn published(&self) -> Vec<Envelope> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT envelope FROM outbox ORDER BY position")
            .fetch_all(self.db.pool())
            .await
            .unwrap();
        rows.iter()
            .map(|(json,)| Envelope::from_json(json.as_bytes()).unwrap())
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = conn
                        .execute(
                            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str(),
                        )
                        .await;
                }
            });
        })
        .join();
    }
}

/// The admin URL with its database replaced by `name`.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
}
