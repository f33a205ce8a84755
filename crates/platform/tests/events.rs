//! The event rules of the architecture — nothing is lost, nothing is applied twice, a
//! message that keeps failing ends in a dead-letter queue — checked against real backends.
//!
//! Every scenario runs on two stacks:
//!
//! * **embedded**: SQLite files in a temporary directory and the in-process [`LocalBus`];
//!   always runs.
//! * **distributed**: a fresh PostgreSQL database and RabbitMQ ([`AmqpBus`]) with an exchange
//!   of its own; runs when `RENDERMART_TEST_DATABASE_URL` (an admin URL) and
//!   `RENDERMART_TEST_AMQP_URL` are both set, and says that it skipped otherwise.

use std::{
    borrow::Cow,
    future::Future,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use rendermart_platform::{
    bus::{
        amqp::AmqpBus, local::LocalBus, Bus, BusError, Delivery, FailureKind, Handler,
        HandlerError, RetryPolicy, Subscription,
    },
    consumer::{Consumer, EventHandler, HandlerContext},
    db::{Backend, DatabaseTarget, Db},
    events::{DecodeError, Envelope, Event, Incoming},
    events_ops, inbox,
    outbox::{self, Relay, RelayConfig},
    saga,
    shutdown::Shutdown,
    supervise::{Backoff, Supervisor},
    timers::{self, TimerConfig, TimerWorker},
};
use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_with_its_state_change_is_applied_exactly_once_even_if_the_relay_dies_after_publishing(
) {
    on_every_stack(|stack| async move {
        let producer = stack
            .db(
                "producer",
                "CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT NOT NULL)",
            )
            .await;
        let consumer_db = stack
            .db(
                "consumer",
                "CREATE TABLE effects (event_id TEXT NOT NULL, name TEXT NOT NULL)",
            )
            .await;

        let deliveries = Arc::new(AtomicU32::new(0));
        let consumer = "consumer.item_created";
        stack
            .subscribe(
                Subscription::new(consumer, &[ItemCreated::TYPE]),
                handler({
                    let (consumer_db, deliveries) = (consumer_db.clone(), deliveries.clone());
                    move |envelope| {
                        let (db, deliveries) = (consumer_db.clone(), deliveries.clone());
                        async move {
                            let item: ItemCreated = envelope.decode().map_err(HandlerError::new)?;
                            let mut tx = db.begin().await.map_err(HandlerError::new)?;
                            if inbox::claim(&mut tx, consumer, envelope.id)
                                .await
                                .map_err(HandlerError::new)?
                            {
                                sqlx::query("INSERT INTO effects (event_id, name) VALUES ($1, $2)")
                                    .bind(envelope.id.to_string())
                                    .bind(item.name)
                                    .execute(&mut *tx)
                                    .await
                                    .map_err(HandlerError::new)?;
                            }
                            tx.commit().await.map_err(HandlerError::new)?;
                            deliveries.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        }
                    }
                }),
            )
            .await;

        // The state change and its event commit together.
        let item_id = Uuid::now_v7();
        let envelope = Envelope::new(&ItemCreated {
            item_id,
            name: "a print".into(),
        });
        let mut tx = producer.begin().await.unwrap();
        sqlx::query("INSERT INTO items (id, name) VALUES ($1, $2)")
            .bind(item_id.to_string())
            .bind("a print")
            .execute(&mut *tx)
            .await
            .unwrap();
        outbox::enqueue(&mut tx, &envelope).await.unwrap();
        tx.commit().await.unwrap();

        // A relay is killed after the broker took the message but before it marked the row.
        let config = RelayConfig {
            lease: Duration::from_millis(100),
            ..RelayConfig::default()
        };
        let dying = Relay::new(
            producer.clone(),
            Arc::new(DiesAfterPublishing(stack.bus.clone())),
            config.clone(),
        );
        assert!(dying.relay_once().await.is_err());
        drop(dying);
        assert_eq!(
            outbox::backlog(&producer).await.unwrap(),
            1,
            "row left unsent"
        );

        // Its replacement publishes the row again once the dead relay's lease has expired.
        let relay = Relay::new(producer.clone(), stack.bus.clone(), config);
        let relay = &relay;
        eventually("the new relay republishes the row", move || async move {
            relay.relay_once().await.unwrap() == 1
        })
        .await;

        let deliveries = &deliveries;
        eventually("the event has been delivered twice", move || async move {
            deliveries.load(Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(
            count(&consumer_db, "SELECT COUNT(*) FROM effects").await,
            1,
            "the second delivery must change nothing"
        );
        assert_eq!(
            count(
                &producer,
                "SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL"
            )
            .await,
            1
        );
        assert_eq!(outbox::backlog(&producer).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_always_fails_ends_in_the_dead_letter_queue_after_the_configured_attempts()
{
    on_every_stack(|stack| async move {
        let calls = Arc::new(AtomicU32::new(0));
        let consumer = "consumer.always_fails";
        stack
            .subscribe(
                Subscription::new(consumer, &[Pinged::TYPE]).with_retry(RetryPolicy {
                    max_attempts: 3,
                    initial_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_millis(200),
                    ..RetryPolicy::default()
                }),
                handler({
                    let calls = calls.clone();
                    move |_| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        async { Err(HandlerError::new("the printer is on fire")) }
                    }
                }),
            )
            .await;

        stack
            .bus
            .publish(&Envelope::new(&Pinged { n: 1 }))
            .await
            .unwrap();

        let bus = &stack.bus;
        eventually("the event is dead-lettered", move || async move {
            bus.dead_lettered(consumer).await.unwrap() == 1
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(stack.bus.pending(consumer).await.unwrap(), 0);

        // Longer than the largest backoff: a stray retry would have run by now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(stack.bus.dead_lettered(consumer).await.unwrap(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_fails_then_succeeds_is_retried_and_not_dead_lettered() {
    on_every_stack(|stack| async move {
        let calls = Arc::new(AtomicU32::new(0));
        let consumer = "consumer.flaky";
        stack
            .subscribe(
                Subscription::new(consumer, &[Pinged::TYPE]).with_retry(RetryPolicy {
                    max_attempts: 5,
                    initial_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_millis(200),
                    ..RetryPolicy::default()
                }),
                handler({
                    let calls = calls.clone();
                    move |_| {
                        let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            if call <= 2 {
                                Err(HandlerError::new(format!("transient failure {call}")))
                            } else {
                                Ok(())
                            }
                        }
                    }
                }),
            )
            .await;

        stack
            .bus
            .publish(&Envelope::new(&Pinged { n: 2 }))
            .await
            .unwrap();

        let (bus, calls) = (&stack.bus, &calls);
        eventually("the third attempt applies the event", move || async move {
            calls.load(Ordering::SeqCst) == 3 && bus.pending(consumer).await.unwrap() == 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(stack.bus.dead_lettered(consumer).await.unwrap(), 0);
        assert_eq!(stack.bus.pending(consumer).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_subscribed_consumer_but_not_unsubscribed_types() {
    on_every_stack(|stack| async move {
        let consumers = [
            "consumer.pinged_one",
            "consumer.pinged_two",
            "consumer.other",
        ];
        let seen: Vec<Arc<Mutex<Vec<Uuid>>>> = consumers.iter().map(|_| Arc::default()).collect();
        for (consumer, seen) in consumers.iter().zip(&seen) {
            let event_type = if consumer.starts_with("consumer.pinged") {
                Pinged::TYPE
            } else {
                Other::TYPE
            };
            let seen = seen.clone();
            stack
                .subscribe(
                    Subscription::new(*consumer, &[event_type]),
                    handler(move |envelope| {
                        seen.lock().unwrap().push(envelope.id);
                        async { Ok(()) }
                    }),
                )
                .await;
        }

        let envelope = Envelope::new(&Pinged { n: 3 });
        stack.bus.publish(&envelope).await.unwrap();

        let seen_by = |i: usize| seen[i].lock().unwrap().clone();
        let seen_by = &seen_by;
        eventually("both Pinged consumers got the event", move || async move {
            !seen_by(0).is_empty() && !seen_by(1).is_empty()
        })
        .await;
        let bus = &stack.bus;
        eventually("no consumer has anything pending", move || async move {
            for consumer in consumers {
                if bus.pending(consumer).await.unwrap() != 0 {
                    return false;
                }
            }
            true
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(seen_by(0), vec![envelope.id]);
        assert_eq!(seen_by(1), vec![envelope.id]);
        assert_eq!(seen_by(2), Vec::<Uuid>::new());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_consumers_after_their_in_flight_message() {
    on_every_stack(|stack| async move {
        let started = Arc::new(AtomicU32::new(0));
        let finished = Arc::new(AtomicU32::new(0));
        let consumer = "consumer.slow";
        stack
            .subscribe(
                Subscription::new(consumer, &[Pinged::TYPE]),
                handler({
                    let (started, finished) = (started.clone(), finished.clone());
                    move |_| {
                        let (started, finished) = (started.clone(), finished.clone());
                        async move {
                            started.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            finished.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        }
                    }
                }),
            )
            .await;

        stack
            .bus
            .publish(&Envelope::new(&Pinged { n: 4 }))
            .await
            .unwrap();
        let started_ref = &started;
        eventually("the handler is busy with the event", move || async move {
            started_ref.load(Ordering::SeqCst) == 1
        })
        .await;

        stack.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), stack.consumers_stopped())
            .await
            .expect("consumers stop within 5 s of shutdown");
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the in-flight event was finished"
        );
        assert_eq!(stack.bus.pending(consumer).await.unwrap(), 0, "and settled");

        // Stopped means stopped: a later event waits for the next run.
        stack
            .bus
            .publish(&Envelope::new(&Pinged { n: 5 }))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert_eq!(stack.bus.pending(consumer).await.unwrap(), 1);
        assert_eq!(stack.bus.dead_lettered(consumer).await.unwrap(), 0);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Issue 6: one test per defect (named after the rule that failed), then the capabilities
// ---------------------------------------------------------------------------------------

/// Defect 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_only_its_message_which_is_dead_lettered_and_the_consumer_goes_on(
) {
    on_every_stack(|stack| async move {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicU32::new(0));
        let consumer = "consumer.panics";
        stack
            .subscribe(
                Subscription::new(consumer, &[Pinged::TYPE]).with_retry(fast_retry(2)),
                handler({
                    let (applied, calls) = (applied.clone(), calls.clone());
                    move |envelope| {
                        let (applied, calls) = (applied.clone(), calls.clone());
                        async move {
                            let n = envelope.decode::<Pinged>().unwrap().n;
                            if n == 1 {
                                calls.fetch_add(1, Ordering::SeqCst);
                                panic!("handler bug on message 1");
                            }
                            applied.lock().unwrap().push(n);
                            Ok(())
                        }
                    }
                }),
            )
            .await;
        for n in [1, 2] {
            stack
                .bus
                .publish(&Envelope::new(&Pinged { n }))
                .await
                .unwrap();
        }
        let (bus, applied) = (&stack.bus, &applied);
        eventually(
            "message 2 is applied and message 1 dead-lettered",
            move || async move {
                applied.lock().unwrap().contains(&2)
                    && bus.dead_lettered(consumer).await.unwrap() == 1
            },
        )
        .await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "each panic counted as one attempt"
        );
        // The consumer is still alive: a later message is applied.
        stack
            .bus
            .publish(&Envelope::new(&Pinged { n: 3 }))
            .await
            .unwrap();
        eventually("message 3 is applied", move || async move {
            applied.lock().unwrap().contains(&3)
        })
        .await;
    })
    .await;
}

/// Defect 2 (RabbitMQ only: the embedded bus has no connection to share).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_publishing_connection_neither_hangs_publishes_nor_stops_consumers_draining() {
    let Some(amqp_url) = std::env::var(AMQP_URL_VAR).ok() else {
        println!("skipping: {AMQP_URL_VAR} not set");
        return;
    };
    let proxy = StallingProxy::start(&amqp_url).await;
    let exchange = format!("rm_test_{}", Uuid::now_v7().simple());
    // The first connection the bus opens is its publishing one.
    let bus = AmqpBus::connect_with(&proxy.url, &exchange, Duration::from_millis(800))
        .await
        .unwrap();
    let consumer = "consumer.during_alarm";
    let seen = Arc::new(AtomicU32::new(0));
    let shutdown = Shutdown::new();
    let task = bus
        .subscribe(
            Subscription::new(consumer, &[Pinged::TYPE]),
            handler({
                let seen = seen.clone();
                move |_| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    async { Ok(()) }
                }
            }),
            shutdown.clone(),
        )
        .await
        .unwrap();
    // A second, healthy publisher fills the queue.
    let direct = AmqpBus::connect(&amqp_url, &exchange).await.unwrap();
    // The broker blocks the bus's publishing connection (as in a memory alarm).
    proxy.stall_connection(0);
    let started = Instant::now();
    let result = bus.publish(&Envelope::new(&Pinged { n: 0 })).await;
    assert!(result.is_err(), "a blocked publish must fail, not hang");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the publish was bounded by its timeout (took {:?})",
        started.elapsed()
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(5), bus.ping())
            .await
            .is_ok(),
        "ping does not hang behind the blocked publisher"
    );
    for n in 1..=20 {
        direct.publish(&Envelope::new(&Pinged { n })).await.unwrap();
    }
    let seen_ref = &seen;
    eventually(
        "the consumer drains the queue meanwhile",
        move || async move { seen_ref.load(Ordering::SeqCst) >= 20 },
    )
    .await;
    shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    delete_amqp_objects(&amqp_url, &exchange, &[consumer.to_owned()]).await;
}

/// Defect 3: the claim is an index walk (the plan test is in `bus::local`); here, the
/// message published last behind a large backlog of another queue is still claimed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claiming_on_the_embedded_bus_never_sorts_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let bus = LocalBus::open(&dir.path().join("bus.db")).await.unwrap();
    let plan = bus.explain_claim().await.unwrap().join(" | ");
    assert!(
        !plan.contains("TEMP B-TREE"),
        "the claim sorts the backlog: {plan}"
    );
}

/// Defect 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_retry_without_using_attempts_until_the_configured_ceiling() {
    on_every_stack(|stack| async move {
        // Fails transiently six times (three times its attempts), then applies.
        let outage = Arc::new(AtomicU32::new(0));
        let consumer = "consumer.outage";
        stack
            .subscribe(
                Subscription::new(consumer, &[Pinged::TYPE]).with_retry(fast_retry(2)),
                handler({
                    let outage = outage.clone();
                    move |_| {
                        let call = outage.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            if call <= 6 {
                                // A real classification: the pool timed out.
                                Err(HandlerError::from(sqlx::Error::PoolTimedOut))
                            } else {
                                Ok(())
                            }
                        }
                    }
                }),
            )
            .await;
        // Always transient, with a short ceiling: dead-lettered once the ceiling passed.
        let endless = Arc::new(AtomicU32::new(0));
        let hopeless = "consumer.endless_outage";
        stack
            .subscribe(
                Subscription::new(hopeless, &[Pinged::TYPE]).with_retry(RetryPolicy {
                    transient_ceiling: Duration::from_millis(400),
                    ..fast_retry(2)
                }),
                handler({
                    let endless = endless.clone();
                    move |_| {
                        endless.fetch_add(1, Ordering::SeqCst);
                        async { Err(HandlerError::transient("database unreachable")) }
                    }
                }),
            )
            .await;
        stack
            .bus
            .publish(&Envelope::new(&Pinged { n: 1 }))
            .await
            .unwrap();
        let (bus, outage_ref) = (&stack.bus, &outage);
        eventually(
            "the event is applied after the outage",
            move || async move {
                outage_ref.load(Ordering::SeqCst) == 7 && bus.pending(consumer).await.unwrap() == 0
            },
        )
        .await;
        assert_eq!(stack.bus.dead_lettered(consumer).await.unwrap(), 0);
        eventually(
            "the endless outage is dead-lettered after its ceiling",
            move || async move { bus.dead_lettered(hopeless).await.unwrap() == 1 },
        )
        .await;
        assert!(
            endless.load(Ordering::SeqCst) > 2,
            "more tries than attempts"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_are_classified_transient_or_permanent_on_both_databases() {
    on_every_stack(|stack| async move {
        let db = stack
            .db("classify", "CREATE TABLE t (id TEXT PRIMARY KEY)")
            .await;
        // Permanent: a constraint violation.
        sqlx::query("INSERT INTO t (id) VALUES ('a')")
            .execute(db.pool())
            .await
            .unwrap();
        let dup = sqlx::query("INSERT INTO t (id) VALUES ('a')")
            .execute(db.pool())
            .await
            .unwrap_err();
        assert!(!rendermart_platform::db::is_transient(&dup), "{dup}");
        assert!(!HandlerError::from(dup).is_transient());
        // Transient: the database is busy / the transaction lost a conflict.
        let busy = match db.backend() {
            rendermart_platform::db::Backend::Sqlite => {
                use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, Connection};
                let DatabaseTarget::SqliteDir(dir) = &stack.target else {
                    unreachable!()
                };
                let path = dir.join("classify.db");
                let mut holder = SqliteConnectOptions::new()
                    .filename(&path)
                    .connect()
                    .await
                    .unwrap();
                sqlx::query("BEGIN EXCLUSIVE")
                    .execute(&mut holder)
                    .await
                    .unwrap();
                let mut other = SqliteConnectOptions::new()
                    .filename(&path)
                    .busy_timeout(Duration::ZERO)
                    .connect()
                    .await
                    .unwrap();
                let err = sqlx::query("INSERT INTO t (id) VALUES ('b')")
                    .execute(&mut other)
                    .await
                    .unwrap_err();
                sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
                let _ = other.close().await;
                err
            }
            rendermart_platform::db::Backend::Postgres => sqlx::query(
                "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$",
            )
            .execute(db.pool())
            .await
            .unwrap_err(),
        };
        assert!(rendermart_platform::db::is_transient(&busy), "{busy}");
        assert!(HandlerError::from(busy).is_transient());
    })
    .await;
}

/// Defect 5 (first part).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_does_not_let_later_events_of_its_aggregate_overtake_it() {
    on_every_stack(|stack| async move {
        let producer = stack.db("producer", "CREATE TABLE t (x TEXT)").await;
        let seen = record(&stack, "consumer.ordered", &[Pinged::TYPE]).await;
        let mut tx = producer.begin().await.unwrap();
        for n in 0..8 {
            outbox::enqueue(
                &mut tx,
                &Envelope::new(&Pinged { n }).with_aggregate("thing", 1),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let faulty = Faulty::new(stack.bus.clone(), |n| {
            (n == 2).then(|| BusError::TimedOut("injected".into()))
        })
        .once();
        let relay = Relay::new(
            producer.clone(),
            Arc::new(faulty),
            RelayConfig {
                batch: 3,
                ..RelayConfig::default()
            },
        );
        for _ in 0..20 {
            let _ = relay.relay_once().await;
            if outbox::backlog(&producer).await.unwrap() == 0 {
                break;
            }
        }
        assert_eq!(outbox::backlog(&producer).await.unwrap(), 0);
        let seen_ref = &seen;
        eventually("all 8 arrive", move || async move {
            first_seen(seen_ref).len() == 8
        })
        .await;
        assert_eq!(first_seen(&seen), (0..8).collect::<Vec<_>>());
    })
    .await;
}

/// Defect 5: several relays, several aggregates, pipelined publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_outbox_keep_every_aggregates_order() {
    on_every_stack(|stack| async move {
        let producer = stack.db("producer", "CREATE TABLE t (x TEXT)").await;
        let seen = record(&stack, "consumer.two_relays", &[Pinged::TYPE]).await;
        for round in 0..10u32 {
            let mut tx = producer.begin().await.unwrap();
            for aggregate in 0..4u32 {
                let n = aggregate * 100 + round;
                outbox::enqueue(
                    &mut tx,
                    &Envelope::new(&Pinged { n }).with_aggregate("thing", aggregate),
                )
                .await
                .unwrap();
            }
            tx.commit().await.unwrap();
        }
        let config = RelayConfig {
            batch: 7,
            lease: Duration::from_millis(500),
            ..RelayConfig::default()
        };
        let a = Relay::new(producer.clone(), stack.bus.clone(), config.clone());
        let b = Relay::new(producer.clone(), stack.bus.clone(), config);
        let drive = |relay: Relay| {
            let producer = producer.clone();
            async move {
                for _ in 0..50 {
                    let _ = relay.relay_once().await;
                    if outbox::backlog(&producer).await.unwrap() == 0 {
                        break;
                    }
                }
            }
        };
        tokio::join!(drive(a), drive(b));
        let seen_ref = &seen;
        eventually("all 40 arrive", move || async move {
            first_seen(seen_ref).len() == 40
        })
        .await;
        let order = first_seen(&seen);
        for aggregate in 0..4u32 {
            let mine: Vec<u32> = order
                .iter()
                .copied()
                .filter(|n| n / 100 == aggregate)
                .collect();
            let expected: Vec<u32> = (0..10).map(|r| aggregate * 100 + r).collect();
            assert_eq!(mine, expected, "aggregate {aggregate} out of order");
        }
    })
    .await;
}

/// Defect 5 (last part).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_bus_keeps_refusing_is_parked_after_n_tries_and_stops_holding_back_the_rest() {
    on_every_stack(|stack| async move {
        let producer = stack.db("producer", "CREATE TABLE t (x TEXT)").await;
        let seen = record(&stack, "consumer.behind_poison", &[Pinged::TYPE]).await;
        let mut tx = producer.begin().await.unwrap();
        for n in 0..5 {
            outbox::enqueue(
                &mut tx,
                &Envelope::new(&Pinged { n }).with_aggregate("thing", n),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let refusing = Faulty::new(stack.bus.clone(), |n| {
            (n == 0).then(|| BusError::NotConfirmed("message too large".into()))
        });
        let relay = Relay::new(
            producer.clone(),
            Arc::new(refusing),
            RelayConfig {
                max_publish_attempts: 3,
                ..RelayConfig::default()
            },
        );
        for round in 1..=3 {
            assert!(
                relay.relay_once().await.is_err(),
                "round {round} fails on row 0"
            );
        }
        let parked = outbox::parked(&producer, 10).await.unwrap();
        assert_eq!(parked.len(), 1, "row 0 is parked after 3 refusals");
        assert_eq!(parked[0].attempts, 3);
        assert_eq!(relay.relay_once().await.unwrap(), 4, "the rest go out");
        assert_eq!(outbox::backlog(&producer).await.unwrap(), 0);
        let seen_ref = &seen;
        eventually("rows 1..4 arrive", move || async move {
            first_seen(seen_ref).len() == 4
        })
        .await;
        // The operator puts it back (it is refused again, and parked again).
        assert_eq!(
            rendermart_platform::events_ops::outbox_redrive(&producer, None)
                .await
                .unwrap(),
            1
        );
        assert_eq!(outbox::backlog(&producer).await.unwrap(), 1);
    })
    .await;
}

/// Defect 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_a_slow_confirm_keeps_its_lease_and_no_other_relay_republishes_its_rows() {
    on_every_stack(|stack| async move {
        let producer = stack.db("producer", "CREATE TABLE t (x TEXT)").await;
        let seen = record(&stack, "consumer.slow_confirm", &[Pinged::TYPE]).await;
        let mut tx = producer.begin().await.unwrap();
        for n in 0..3 {
            outbox::enqueue(
                &mut tx,
                &Envelope::new(&Pinged { n }).with_aggregate("thing", 1),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let config = RelayConfig {
            lease: Duration::from_millis(600),
            ..RelayConfig::default()
        };
        // Each confirm takes longer than the whole lease.
        let slow =
            Arc::new(Faulty::new(stack.bus.clone(), |_| None).delay(Duration::from_millis(800)));
        let a = Relay::new(producer.clone(), slow.clone(), config.clone());
        let b_bus = Arc::new(Faulty::new(stack.bus.clone(), |_| None));
        let b = Relay::new(producer.clone(), b_bus.clone(), config);
        let (a_done, b_published) = tokio::join!(a.relay_once(), async {
            let mut published = 0;
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                published += b.relay_once().await.unwrap_or(0);
            }
            published
        });
        assert_eq!(a_done.unwrap(), 3, "the slow relay marks its rows sent");
        assert_eq!(
            b_published, 0,
            "the other relay published nothing meanwhile"
        );
        assert_eq!(b_bus.published(), 0);
        assert_eq!(slow.published(), 3, "each row published once");
        let seen_ref = &seen;
        eventually("all 3 arrive", move || async move {
            first_seen(seen_ref).len() == 3
        })
        .await;
    })
    .await;
}

/// Defect 6: mark-sent checks the claim token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_lost_its_lease_cannot_mark_rows_sent() {
    on_every_stack(|stack| async move {
        let producer = stack.db("producer", "CREATE TABLE t (x TEXT)").await;
        let mut tx = producer.begin().await.unwrap();
        outbox::enqueue(&mut tx, &Envelope::new(&Pinged { n: 1 }))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let slow =
            Arc::new(Faulty::new(stack.bus.clone(), |_| None).delay(Duration::from_millis(400)));
        let relay = Relay::new(producer.clone(), slow, RelayConfig::default());
        let steal = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            // Another replica's takeover, as the database would record it.
            sqlx::query("UPDATE platform_leases SET holder = 'other', token = 'other-token'")
                .execute(producer.pool())
                .await
                .unwrap();
        };
        let (round, ()) = tokio::join!(relay.relay_once(), steal);
        assert!(
            matches!(round, Err(outbox::RelayError::LostLease)),
            "got {round:?}"
        );
        assert_eq!(
            outbox::backlog(&producer).await.unwrap(),
            1,
            "the row was not marked sent"
        );
    })
    .await;
}

/// Defect 7 is tested on the binary (`crates/rendermart/tests/shutdown.rs`); this is the
/// relay's part: a flush publishes until the outbox is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_publishes_until_the_outbox_is_empty() {
    on_every_stack(|stack| async move {
        let producer = stack.db("producer", "CREATE TABLE t (x TEXT)").await;
        let mut tx = producer.begin().await.unwrap();
        for n in 0..25 {
            outbox::enqueue(
                &mut tx,
                &Envelope::new(&Pinged { n }).with_aggregate("t", n % 3),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let relay = Relay::new(
            producer.clone(),
            stack.bus.clone(),
            RelayConfig {
                batch: 4,
                ..RelayConfig::default()
            },
        );
        let flushed = relay.flush(Instant::now() + Duration::from_secs(10)).await;
        assert_eq!(flushed.published, 25);
        assert_eq!(flushed.remaining, 0);
    })
    .await;
}

/// Defect 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_entries_older_than_the_redelivery_window_are_pruned() {
    on_every_stack(|stack| async move {
        let db = stack.db("consumer", "CREATE TABLE t (x TEXT)").await;
        let day = 24 * 3600 * 1_000_000i64;
        let now = rendermart_platform::clock::now_micros();
        for (i, age_days) in [20i64, 15, 3, 0].iter().enumerate() {
            sqlx::query("INSERT INTO inbox (consumer, event_id, applied_at) VALUES ($1, $2, $3)")
                .bind("consumer.c")
                .bind(format!("e{i}"))
                .bind(now - age_days * day)
                .execute(db.pool())
                .await
                .unwrap();
        }
        let window = Duration::from_secs(14 * 24 * 3600);
        assert_eq!(inbox::prune(&db, window).await.unwrap(), 2);
        let left: Vec<String> = sqlx::query_scalar("SELECT event_id FROM inbox ORDER BY event_id")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(left, vec!["e2".to_owned(), "e3".to_owned()]);
    })
    .await;
}

/// Defect 9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_patterns_match_the_same_way_on_both_buses_and_dropped_patterns_stop_matching() {
    on_every_stack(|stack| async move {
        let star = record(&stack, "consumer.star", &["test.*"]).await;
        let hash = record(&stack, "consumer.hash", &["test.#"]).await;
        let suffix = record(&stack, "consumer.suffix", &["*.Pinged"]).await;
        // A consumer whose patterns change between two runs.
        let changing = "consumer.changing";
        let first_run = Shutdown::new();
        let seen_changing = Arc::new(Mutex::new(Vec::<String>::new()));
        let collector = {
            let seen = seen_changing.clone();
            handler(move |e| {
                seen.lock().unwrap().push(e.event_type.clone());
                async { Ok(()) }
            })
        };
        stack.consumers.lock().unwrap().push(changing.to_owned());
        let task = stack
            .bus
            .subscribe(
                Subscription::new(changing, &[Pinged::TYPE]),
                collector.clone(),
                first_run.clone(),
            )
            .await
            .unwrap();
        first_run.trigger();
        task.await.unwrap();
        stack
            .subscribe(Subscription::new(changing, &[Other::TYPE]), collector)
            .await;

        stack
            .bus
            .publish(&Envelope::new(&Pinged { n: 1 }))
            .await
            .unwrap();
        stack.bus.publish(&Envelope::new(&Other {})).await.unwrap();
        stack.bus.publish(&Envelope::new(&Deep {})).await.unwrap();
        let types = |seen: &Arc<Mutex<Vec<Seen>>>| {
            let mut t: Vec<String> = seen
                .lock()
                .unwrap()
                .iter()
                .map(|p| p.event_type.clone())
                .collect();
            t.sort();
            t
        };
        let (s, h, x) = (&star, &hash, &suffix);
        eventually("every consumer got what its patterns match", move || async move {
            types(s).len() == 2 && types(h).len() == 3 && types(x).len() == 1
        })
        .await;
        let bus = &stack.bus;
        eventually(
            "nothing pending for the changed consumer",
            move || async move { bus.pending(changing).await.unwrap() == 0 },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(types(&star), vec!["test.Other", "test.Pinged"]);
        assert_eq!(
            types(&hash),
            vec!["test.Other", "test.Pinged", "test.deep.Thing"]
        );
        assert_eq!(types(&suffix), vec!["test.Pinged"]);
        assert_eq!(
            *seen_changing.lock().unwrap(),
            vec!["test.Other".to_owned()],
            "the dropped pattern no longer routes"
        );
        assert_eq!(
            stack.bus.bindings(changing).await.unwrap(),
            vec!["test.Other".to_owned()]
        );
    })
    .await;
}

/// Defect 10 (first part).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_outbox_row_is_parked_at_once_and_not_claimed_again() {
    on_every_stack(|stack| async move {
        let producer = stack.db("producer", "CREATE TABLE t (x TEXT)").await;
        sqlx::query(
            "INSERT INTO outbox (id, event_type, envelope, created_at) VALUES ('bad', 'test.Pinged', '{not json', 0)",
        )
        .execute(producer.pool())
        .await
        .unwrap();
        let mut tx = producer.begin().await.unwrap();
        outbox::enqueue(&mut tx, &Envelope::new(&Pinged { n: 1 })).await.unwrap();
        tx.commit().await.unwrap();
        let counting = Arc::new(Faulty::new(stack.bus.clone(), |_| None));
        let relay = Relay::new(producer.clone(), counting.clone(), RelayConfig::default());
        assert_eq!(relay.relay_once().await.unwrap(), 1, "the readable row goes out");
        let parked = outbox::parked(&producer, 10).await.unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].id, "bad");
        assert!(parked[0].last_error.as_deref().unwrap_or("").contains("unreadable"));
        assert_eq!(relay.relay_once().await.unwrap(), 0);
        assert_eq!(outbox::backlog(&producer).await.unwrap(), 0);
    })
    .await;
}

/// Defect 10 (second part; RabbitMQ only: on the embedded bus a retry is an update of the
/// message itself, counted when it is claimed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_copy_that_cannot_be_published_does_not_run_the_handler_again() {
    on_every_stack(|stack| async move {
        let Resources::Distributed {
            amqp_url, exchange, ..
        } = &stack.resources
        else {
            println!("not applicable to the embedded bus");
            return;
        };
        let calls = Arc::new(AtomicU32::new(0));
        let consumer = "consumer.no_retry_queue";
        stack
            .subscribe(
                Subscription::new(consumer, &[Pinged::TYPE]).with_retry(fast_retry(5)),
                handler({
                    let calls = calls.clone();
                    move |_| {
                        let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            if call == 1 {
                                Err(HandlerError::new("first try fails"))
                            } else {
                                Ok(())
                            }
                        }
                    }
                }),
            )
            .await;
        let retry_queue = format!("{exchange}.{consumer}.retry");
        let conn = lapin::Connection::connect(amqp_url, Default::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        channel
            .queue_delete(&retry_queue, Default::default())
            .await
            .unwrap();
        stack
            .bus
            .publish(&Envelope::new(&Pinged { n: 1 }))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the handler ran once while the copy could not be published"
        );
        // The retry queue is back: the copy goes out, and the retry applies the event.
        let mut args = lapin::types::FieldTable::default();
        for (k, v) in [
            ("x-queue-type", "quorum"),
            ("x-dead-letter-exchange", ""),
            ("x-dead-letter-strategy", "at-least-once"),
            ("x-overflow", "reject-publish"),
        ] {
            args.insert(k.into(), lapin::types::AMQPValue::LongString(v.into()));
        }
        args.insert(
            "x-dead-letter-routing-key".into(),
            lapin::types::AMQPValue::LongString(format!("{exchange}.{consumer}").into()),
        );
        channel
            .queue_declare(
                &retry_queue,
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .unwrap();
        let calls_ref = &calls;
        eventually("the retry applies the event", move || async move {
            calls_ref.load(Ordering::SeqCst) == 2
        })
        .await;
        let _ = conn.close(200, "done").await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Capabilities the next services stand on
// ---------------------------------------------------------------------------------------

/// Applies `ItemCreated` (v1 or v2) once, and publishes `ItemIndexed` with the effect.
struct IndexItems;

#[async_trait]
impl EventHandler for IndexItems {
    type Message = ItemCreatedAnyVersion;
    async fn handle(
        &self,
        cx: &mut HandlerContext<'_>,
        message: ItemCreatedAnyVersion,
    ) -> Result<(), HandlerError> {
        let (item_id, name) = match message {
            ItemCreatedAnyVersion::V1(v1) => (v1.item_id, v1.name),
            ItemCreatedAnyVersion::V2(v2) => (v2.item_id, v2.title),
        };
        let event_id = cx.envelope().id.to_string();
        sqlx::query("INSERT INTO effects (event_id, name) VALUES ($1, $2)")
            .bind(event_id)
            .bind(&name)
            .execute(cx.conn())
            .await?;
        cx.publish(&Envelope::new(&ItemIndexed { item_id }).with_aggregate("item", item_id))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_helper_applies_once_decodes_every_version_and_wakes_the_relay() {
    on_every_stack(|stack| async move {
        let db = stack
            .db(
                "indexer",
                "CREATE TABLE effects (event_id TEXT NOT NULL, name TEXT NOT NULL)",
            )
            .await;
        // The relay of the consumer's service polls rarely: only the helper's wake-up can
        // make its event leave quickly.
        let relay = Relay::new(
            db.clone(),
            stack.bus.clone(),
            RelayConfig {
                idle_poll: Duration::from_secs(60),
                ..RelayConfig::default()
            },
        );
        let relay_task = tokio::spawn(relay.run(stack.shutdown.clone()));
        let downstream = record(&stack, "consumer.indexed", &[ItemIndexed::TYPE]).await;
        assert!(
            Consumer::new(db.clone(), "other.items", IndexItems).is_err(),
            "names are <service>.<name>"
        );
        let consumer = Consumer::new(db.clone(), "indexer.items", IndexItems)
            .unwrap()
            .with_retry(fast_retry(3));
        let (subscription, applier) = consumer.into_parts();
        stack.subscribe(subscription, applier).await;
        // Let the relay settle into its long idle wait.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let v1 = Envelope::new(&ItemCreated {
            item_id: Uuid::now_v7(),
            name: "first".into(),
        });
        let v2 = Envelope::new(&ItemCreatedV2 {
            item_id: Uuid::now_v7(),
            title: "second".into(),
        });
        let started = Instant::now();
        for envelope in [&v1, &v2, &v1] {
            stack.bus.publish(envelope).await.unwrap();
        }
        let downstream_ref = &downstream;
        eventually("both ItemIndexed events arrive", move || async move {
            downstream_ref.lock().unwrap().len() >= 2
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the relay was woken, not polled"
        );
        let bus = &stack.bus;
        eventually("the duplicate is settled", move || async move {
            bus.pending("indexer.items").await.unwrap() == 0
        })
        .await;
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM effects ORDER BY name")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(
            names,
            vec!["first".to_owned(), "second".to_owned()],
            "v1 and v2 decoded, the duplicate applied nothing"
        );
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM outbox").await,
            2,
            "the duplicate committed nothing"
        );
        // Correlation follows the cause.
        let indexed = downstream.lock().unwrap().clone();
        for seen in indexed {
            assert!(seen.causation_id == Some(v1.id) || seen.causation_id == Some(v2.id));
        }
        stack.shutdown.trigger();
        relay_task.await.unwrap();
    })
    .await;
}

/// Applies `ItemCreated` (refusing the name "fail"); after each commit it reports, counts
/// the effects a connection other than the handler's sees.
struct CountCommits {
    db: Db,
    seen: Arc<Mutex<Vec<i64>>>,
}

#[async_trait]
impl EventHandler for CountCommits {
    type Message = ItemCreated;
    async fn handle(
        &self,
        cx: &mut HandlerContext<'_>,
        message: ItemCreated,
    ) -> Result<(), HandlerError> {
        sqlx::query("INSERT INTO effects (event_id, name) VALUES ($1, $2)")
            .bind(cx.envelope().id.to_string())
            .bind(&message.name)
            .execute(cx.conn())
            .await?;
        if message.name == "fail" {
            return Err(HandlerError::permanent("refused"));
        }
        Ok(())
    }

    fn committed(&self) {
        let db = self.db.clone();
        let visible = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(count(&db, "SELECT COUNT(*) FROM effects"))
        });
        self.seen.lock().unwrap().push(visible);
    }
}

/// The applier of consumer `<service>.items` running [`CountCommits`] on a fresh database of
/// `service`, with that database and what the hook saw.
async fn counting_commits(
    stack: &Stack,
    service: &'static str,
) -> (Db, Arc<Mutex<Vec<i64>>>, Arc<dyn Handler>) {
    let db = stack
        .db(
            service,
            "CREATE TABLE effects (event_id TEXT NOT NULL, name TEXT NOT NULL)",
        )
        .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = CountCommits {
        db: db.clone(),
        seen: seen.clone(),
    };
    let (_, applier) = Consumer::new(db.clone(), &format!("{service}.items"), handler)
        .unwrap()
        .into_parts();
    (db, seen, applier)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_runs_after_an_applied_messages_commit_and_never_for_a_duplicate_or_a_failure() {
    on_every_stack(|stack| async move {
        let (db, seen, applier) = counting_commits(&stack, "counter").await;
        let item = |name: &str| {
            Envelope::new(&ItemCreated {
                item_id: Uuid::now_v7(),
                name: name.into(),
            })
        };
        let first = item("first");
        applier.handle(&first).await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![1],
            "called once, when another connection could already see the effect"
        );
        // A duplicate applies nothing and commits nothing; a failure rolls back.
        applier.handle(&first).await.unwrap();
        assert!(applier.handle(&item("fail")).await.is_err());
        assert_eq!(*seen.lock().unwrap(), vec![1]);
        applier.handle(&item("second")).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM effects").await, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_commits_once_and_a_failing_message_rolls_back_alone_and_ends_the_batch() {
    on_every_stack(|stack| async move {
        let (db, seen, applier) = counting_commits(&stack, "batcher").await;
        let item = |name: &str, sequence: i64| {
            let mut envelope = Envelope::new(&ItemCreated {
                item_id: Uuid::now_v7(),
                name: name.into(),
            })
            .with_aggregate("thing", "x");
            envelope.sequence = Some(sequence);
            envelope
        };
        let (first, second, failing, after) = (
            item("first", 1),
            item("second", 2),
            item("fail", 3),
            item("after", 4),
        );
        let batch = [&first, &first, &second, &failing, &after];
        let deliveries: Vec<Delivery<'_>> = batch
            .iter()
            .map(|envelope| Delivery {
                envelope,
                attempt: 1,
            })
            .collect();
        let results = applier.handle_batch("batcher.items", &deliveries).await;
        let outcome: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(
            outcome,
            vec![true, true, true, false],
            "applied, duplicate, applied, failed; the batch ends at the failure"
        );
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM effects").await,
            2,
            "the failing message's insert was rolled back alone; the one after it never ran"
        );
        // One hook per applied message, after the commit that holds it: on SQLite one
        // commit holds both; on PostgreSQL each message has its own transaction.
        let commits = match db.backend() {
            Backend::Sqlite => vec![2, 2],
            Backend::Postgres => vec![1, 2],
        };
        assert_eq!(*seen.lock().unwrap(), commits);
        // The failure blocked its aggregate: the next event waits for it.
        let next = applier
            .handle_batch(
                "batcher.items",
                &[Delivery {
                    envelope: &after,
                    attempt: 1,
                }],
            )
            .await;
        assert!(
            matches!(&next[..], [Err(e)] if e.kind == FailureKind::Deferred),
            "{next:?}"
        );
        assert_eq!(count(&db, "SELECT COUNT(*) FROM effects").await, 2);
    })
    .await;
}

/// Fails the first delivery of sequence 2 of aggregate `a`; records the order it applied.
struct FlakyInOrder {
    applied: Arc<Mutex<Vec<(String, i64)>>>,
    failed_once: AtomicU32,
}

#[async_trait]
impl EventHandler for FlakyInOrder {
    type Message = Pinged;
    async fn handle(&self, cx: &mut HandlerContext<'_>, _: Pinged) -> Result<(), HandlerError> {
        let aggregate = cx.envelope().aggregate.clone().unwrap_or_default();
        let sequence = cx.envelope().sequence.unwrap_or_default();
        if aggregate == "thing:a"
            && sequence == 2
            && self.failed_once.fetch_add(1, Ordering::SeqCst) == 0
        {
            return Err(HandlerError::new("first try of a/2 fails"));
        }
        self.applied.lock().unwrap().push((aggregate, sequence));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_aggregate_are_applied_in_order_even_when_one_is_retried() {
    on_every_stack(|stack| async move {
        let producer = stack.db("producer", "CREATE TABLE t (x TEXT)").await;
        let db = stack.db("orderly", "CREATE TABLE t (x TEXT)").await;
        let applied = Arc::new(Mutex::new(Vec::new()));
        let consumer = Consumer::new(
            db.clone(),
            "orderly.pings",
            FlakyInOrder {
                applied: applied.clone(),
                failed_once: AtomicU32::new(0),
            },
        )
        .unwrap()
        .with_retry(RetryPolicy {
            initial_backoff: Duration::from_millis(300),
            defer_delay: Duration::from_millis(50),
            ..fast_retry(5)
        });
        let (subscription, applier) = consumer.into_parts();
        stack.subscribe(subscription, applier).await;
        let mut tx = producer.begin().await.unwrap();
        for n in 0..6 {
            for aggregate in ["a", "b"] {
                outbox::enqueue(
                    &mut tx,
                    &Envelope::new(&Pinged { n }).with_aggregate("thing", aggregate),
                )
                .await
                .unwrap();
            }
        }
        tx.commit().await.unwrap();
        let relay = Relay::new(producer.clone(), stack.bus.clone(), RelayConfig::default());
        relay.flush(Instant::now() + Duration::from_secs(10)).await;
        let applied_ref = &applied;
        eventually("all 12 applied", move || async move {
            applied_ref.lock().unwrap().len() == 12
        })
        .await;
        let applied = applied.lock().unwrap().clone();
        for aggregate in ["thing:a", "thing:b"] {
            let order: Vec<i64> = applied
                .iter()
                .filter(|(a, _)| a == aggregate)
                .map(|(_, s)| *s)
                .collect();
            assert_eq!(
                order,
                (1..=6).collect::<Vec<_>>(),
                "{aggregate} applied out of order"
            );
        }
        assert_eq!(count(&db, "SELECT COUNT(*) FROM consumer_blocks").await, 0);
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM consumer_deferrals").await,
            0
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_tasks_are_restarted_and_readiness_and_metrics_show_consumers() {
    on_every_stack(|stack| async move {
        let supervisor = Supervisor::new(stack.shutdown.clone()).with_backoff(Backoff {
            initial: Duration::from_millis(400),
            max: Duration::from_millis(400),
            reset_after: Duration::from_secs(60),
        });
        let runs = Arc::new(AtomicU32::new(0));
        supervisor.spawn_worker("test.worker", {
            let runs = runs.clone();
            move |shutdown| {
                let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if run == 1 {
                        panic!("worker bug");
                    }
                    shutdown.wait().await;
                }
            }
        });
        let consumer = "consumer.supervised";
        stack.consumers.lock().unwrap().push(consumer.to_owned());
        // The consumer's first subscription ends at once (as if its channel died for good).
        let flaky_bus =
            Arc::new(Faulty::new(stack.bus.clone(), |_| None).first_subscription_ends());
        supervisor.spawn_consumer(
            flaky_bus,
            Subscription::new(consumer, &[Pinged::TYPE]),
            handler(|_| async { Ok(()) }),
        );
        let liveness = supervisor.liveness();
        let liveness_ref = &liveness;
        eventually(
            "readiness reports the consumer down between its crash and restart",
            move || async move { liveness_ref.check().await.is_err() },
        )
        .await;
        eventually("both tasks restarted and ready", move || async move {
            liveness_ref.check().await.is_ok()
        })
        .await;
        let status = supervisor.status();
        assert!(
            status.iter().all(|u| u.running && u.restarts == 1),
            "{status:?}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);

        stack
            .bus
            .publish(&Envelope::new(&Pinged { n: 1 }))
            .await
            .unwrap();
        let prometheus = rendermart_platform::telemetry::metrics_handle();
        let sampler = supervisor.sampler();
        sampler.sample().await;
        let text = prometheus.render();
        for metric in [
            "bus_consumer_up",
            "bus_consumer_lag",
            "bus_consumer_oldest_unacked_seconds",
            "bus_dlq_depth",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(metric) && l.contains(consumer)),
                "{metric} for {consumer} missing from /metrics"
            );
        }
        stack.shutdown.trigger();
        assert!(
            supervisor.join(Duration::from_secs(10)).await,
            "supervised tasks stop at shutdown"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_redriven_on_both_buses() {
    on_every_stack(|stack| async move {
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let applied = Arc::new(AtomicU32::new(0));
        let consumer = "consumer.redriven";
        stack
            .subscribe(
                Subscription::new(consumer, &[Pinged::TYPE]).with_retry(fast_retry(1)),
                handler({
                    let (healthy, applied) = (healthy.clone(), applied.clone());
                    move |_| {
                        let ok = healthy.load(Ordering::SeqCst);
                        if ok {
                            applied.fetch_add(1, Ordering::SeqCst);
                        }
                        async move {
                            if ok {
                                Ok(())
                            } else {
                                Err(HandlerError::new("broken until fixed"))
                            }
                        }
                    }
                }),
            )
            .await;
        let events: Vec<Envelope> = (0..3).map(|n| Envelope::new(&Pinged { n })).collect();
        for e in &events {
            stack.bus.publish(e).await.unwrap();
        }
        let bus = &stack.bus;
        eventually("three dead letters", move || async move {
            bus.dead_lettered(consumer).await.unwrap() == 3
        })
        .await;
        let listed = events_ops::dlq_list(stack.bus.as_ref(), consumer, 10)
            .await
            .unwrap();
        assert_eq!(listed.len(), 3);
        assert!(listed
            .iter()
            .all(|d| d.event_type == Pinged::TYPE
                && d.error.as_deref() == Some("broken until fixed")));
        let wanted = events[1].id.to_string();
        let shown = events_ops::dlq_show(stack.bus.as_ref(), consumer, &wanted)
            .await
            .unwrap();
        assert_eq!(shown.event_id, wanted);
        assert!(shown.body.contains(&wanted));
        assert!(events_ops::dlq_show(stack.bus.as_ref(), consumer, "nope")
            .await
            .is_err());

        healthy.store(true, Ordering::SeqCst);
        assert_eq!(
            events_ops::dlq_redrive(stack.bus.as_ref(), consumer, Some(&wanted))
                .await
                .unwrap(),
            1
        );
        let applied_ref = &applied;
        eventually("the redriven one is applied", move || async move {
            applied_ref.load(Ordering::SeqCst) == 1
        })
        .await;
        // The letters the redrive looked at and left return to the DLQ (on RabbitMQ, a
        // moment after its channel closed).
        eventually("two dead letters remain", move || async move {
            bus.dead_lettered(consumer).await.unwrap() == 2
        })
        .await;
        assert_eq!(
            events_ops::dlq_redrive(stack.bus.as_ref(), consumer, None)
                .await
                .unwrap(),
            2
        );
        eventually("all applied", move || async move {
            applied_ref.load(Ordering::SeqCst) == 3
        })
        .await;
        assert_eq!(stack.bus.dead_lettered(consumer).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_feeds_one_consumer_the_kept_history_and_no_one_else() {
    on_every_stack(|stack| async move {
        let producer = stack.db("producer", "CREATE TABLE t (x TEXT)").await;
        let mut tx = producer.begin().await.unwrap();
        for n in 0..4 {
            outbox::enqueue(
                &mut tx,
                &Envelope::new(&Pinged { n }).with_aggregate("thing", 1),
            )
            .await
            .unwrap();
        }
        outbox::enqueue(&mut tx, &Envelope::new(&Other {}))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let relay = Relay::new(producer.clone(), stack.bus.clone(), RelayConfig::default());
        relay.flush(Instant::now() + Duration::from_secs(10)).await;
        // Both consumers subscribe after the history was published.
        let late = record(&stack, "consumer.late", &[Pinged::TYPE]).await;
        let bystander = record(&stack, "consumer.bystander", &[Pinged::TYPE]).await;
        let since = rendermart_platform::clock::now() - time::Duration::hours(1);
        let replayed = events_ops::replay(
            std::slice::from_ref(&producer),
            stack.bus.as_ref(),
            "consumer.late",
            None,
            since,
        )
        .await
        .unwrap();
        assert_eq!(
            replayed,
            events_ops::Replayed {
                sent: 4,
                skipped: 1
            }
        );
        let late_ref = &late;
        eventually("the late consumer got the history", move || async move {
            first_seen(late_ref).len() == 4
        })
        .await;
        assert_eq!(first_seen(&late), vec![0, 1, 2, 3]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            bystander.lock().unwrap().is_empty(),
            "the replay went to one consumer only"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// A small saga: reserve stock, charge payment; a declined or silent payment releases the
// stock (compensation), a silent one after a durable timeout.
// ---------------------------------------------------------------------------------------

macro_rules! message {
    ($name:ident, $type:literal) => {
        #[derive(Clone, Debug, Serialize, Deserialize)]
        struct $name {
            order: Uuid,
        }
        impl Event for $name {
            const TYPE: &'static str = $type;
            const VERSION: u32 = 1;
        }
    };
}
message!(ReserveStock, "stock.ReserveStock");
message!(ReleaseStock, "stock.ReleaseStock");
message!(StockReserved, "stock.StockReserved");
message!(StockReleased, "stock.StockReleased");
message!(PaymentSucceeded, "payments.PaymentSucceeded");
message!(PaymentDeclined, "payments.PaymentDeclined");
message!(PaymentTimedOut, "orders.PaymentTimedOut");

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ChargePayment {
    order: Uuid,
    /// How the test's payment provider answers: "pay", "decline" or "silent".
    mode: String,
}
impl Event for ChargePayment {
    const TYPE: &'static str = "payments.ChargePayment";
    const VERSION: u32 = 1;
}

const CHECKOUT: &str = "orders.checkout";
const STOCK: &str = "stock.commands";
const PAYMENTS: &str = "payments.commands";

enum StockCommand {
    Reserve(ReserveStock),
    Release(ReleaseStock),
}

impl Incoming for StockCommand {
    fn event_types() -> Vec<String> {
        Vec::new() // commands only
    }
    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        match envelope.event_type.as_str() {
            ReserveStock::TYPE => envelope.decode().map(Self::Reserve),
            ReleaseStock::TYPE => envelope.decode().map(Self::Release),
            _ => Err(DecodeError::unexpected("a stock command", envelope)),
        }
    }
}

struct Stock;

#[async_trait]
impl EventHandler for Stock {
    type Message = StockCommand;
    async fn handle(
        &self,
        cx: &mut HandlerContext<'_>,
        command: StockCommand,
    ) -> Result<(), HandlerError> {
        let (order, held, event) = match command {
            StockCommand::Reserve(c) => {
                (c.order, 1, Envelope::new(&StockReserved { order: c.order }))
            }
            StockCommand::Release(c) => {
                (c.order, 0, Envelope::new(&StockReleased { order: c.order }))
            }
        };
        sqlx::query(
            "INSERT INTO reservations (order_id, held) VALUES ($1, $2) \
             ON CONFLICT (order_id) DO UPDATE SET held = excluded.held",
        )
        .bind(order.to_string())
        .bind(held)
        .execute(cx.conn())
        .await?;
        cx.publish(&event.with_aggregate("reservation", order))
            .await
    }
}

struct Payments;

#[async_trait]
impl EventHandler for Payments {
    type Message = ChargePayment;
    async fn handle(
        &self,
        cx: &mut HandlerContext<'_>,
        charge: ChargePayment,
    ) -> Result<(), HandlerError> {
        let answer = match charge.mode.as_str() {
            "pay" => Envelope::new(&PaymentSucceeded {
                order: charge.order,
            }),
            "decline" => Envelope::new(&PaymentDeclined {
                order: charge.order,
            }),
            _ => return Ok(()), // the provider never answers
        };
        cx.publish(&answer.with_aggregate("payment", charge.order))
            .await
    }
}

enum CheckoutInput {
    Reserved(StockReserved),
    Released(StockReleased),
    Paid(PaymentSucceeded),
    Declined(PaymentDeclined),
    TimedOut(PaymentTimedOut),
}

impl Incoming for CheckoutInput {
    fn event_types() -> Vec<String> {
        vec![
            StockReserved::TYPE.into(),
            StockReleased::TYPE.into(),
            "payments.#".into(),
        ]
    }
    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        match envelope.event_type.as_str() {
            StockReserved::TYPE => envelope.decode().map(Self::Reserved),
            StockReleased::TYPE => envelope.decode().map(Self::Released),
            PaymentSucceeded::TYPE => envelope.decode().map(Self::Paid),
            PaymentDeclined::TYPE => envelope.decode().map(Self::Declined),
            PaymentTimedOut::TYPE => envelope.decode().map(Self::TimedOut),
            _ => Err(DecodeError::unexpected("a checkout input", envelope)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CheckoutState {
    status: String,
    mode: String,
    reason: Option<String>,
    correlations: Vec<Uuid>,
}

struct Checkout {
    payment_timeout: Duration,
}

impl Checkout {
    /// Starts a checkout: the saga's state, its first command, in one transaction.
    async fn start(db: &Db, order: Uuid, mode: &str) -> Uuid {
        let mut tx = db.begin().await.unwrap();
        let command = Envelope::new(&ReserveStock { order }).with_aggregate("order", order);
        let state = CheckoutState {
            status: "reserving".into(),
            mode: mode.into(),
            reason: None,
            correlations: vec![],
        };
        saga::save(&mut tx, CHECKOUT, &order.to_string(), &state, None)
            .await
            .unwrap();
        outbox::send_command(&mut tx, STOCK, &command)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        db.outbox_committed();
        command.id
    }
}

#[async_trait]
impl EventHandler for Checkout {
    type Message = CheckoutInput;
    async fn handle(
        &self,
        cx: &mut HandlerContext<'_>,
        input: CheckoutInput,
    ) -> Result<(), HandlerError> {
        let order = match &input {
            CheckoutInput::Reserved(m) => m.order,
            CheckoutInput::Released(m) => m.order,
            CheckoutInput::Paid(m) => m.order,
            CheckoutInput::Declined(m) => m.order,
            CheckoutInput::TimedOut(m) => m.order,
        };
        let id = order.to_string();
        let Some(mut saga) = saga::load::<CheckoutState>(cx.conn(), CHECKOUT, &id).await? else {
            return Err(HandlerError::permanent(format!("no checkout {id}")));
        };
        let correlation = cx.envelope().correlation_id.unwrap_or_default();
        let timer = format!("checkout:{order}:payment");
        let state = &mut saga.state;
        state.correlations.push(correlation);
        match (state.status.as_str(), input) {
            ("reserving", CheckoutInput::Reserved(_)) => {
                let charge = ChargePayment {
                    order,
                    mode: state.mode.clone(),
                };
                cx.send(
                    PAYMENTS,
                    &Envelope::new(&charge).with_aggregate("order", order),
                )
                .await?;
                let timeout =
                    Envelope::new(&PaymentTimedOut { order }).with_aggregate("order", order);
                let due = rendermart_platform::clock::now() + self.payment_timeout;
                timers::schedule(cx.tx(), &timer, due, CHECKOUT, &timeout).await?;
                state.status = "charging".into();
            }
            ("charging", CheckoutInput::Paid(_)) => {
                timers::cancel(cx.tx(), &timer).await?;
                state.status = "confirmed".into();
            }
            ("charging", CheckoutInput::Declined(_)) | ("charging", CheckoutInput::TimedOut(_)) => {
                let reason = if state.mode == "decline" {
                    "payment declined"
                } else {
                    "payment timed out"
                };
                timers::cancel(cx.tx(), &timer).await?;
                cx.send(
                    STOCK,
                    &Envelope::new(&ReleaseStock { order }).with_aggregate("order", order),
                )
                .await?;
                state.status = "releasing".into();
                state.reason = Some(reason.into());
            }
            ("releasing", CheckoutInput::Released(_)) => state.status = "cancelled".into(),
            // Late or repeated inputs (a timeout after payment) change nothing.
            _ => return Ok(()),
        }
        saga::save(cx.conn(), CHECKOUT, &id, &saga.state, Some(saga.version)).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_saga_runs_two_steps_compensates_and_times_out_across_a_timer_restart() {
    on_every_stack(|stack| async move {
        let orders = stack.db("orders", "CREATE TABLE t (x TEXT)").await;
        let stock = stack
            .db("stock", "CREATE TABLE reservations (order_id TEXT PRIMARY KEY, held INTEGER NOT NULL)")
            .await;
        let payments = stack.db("payments", "CREATE TABLE t (x TEXT)").await;
        let supervisor = Supervisor::new(stack.shutdown.clone());
        for db in [&orders, &stock, &payments] {
            let relay = Relay::new(db.clone(), stack.bus.clone(), RelayConfig { idle_poll: Duration::from_millis(100), ..RelayConfig::default() });
            let relay = Arc::new(tokio::sync::Mutex::new(Some(relay)));
            supervisor.spawn_worker(&format!("relay.{}", db.service()), move |shutdown| {
                let relay = relay.clone();
                async move {
                    if let Some(relay) = relay.lock().await.take() {
                        relay.run(shutdown).await;
                    }
                }
            });
        }
        for name in [CHECKOUT, STOCK, PAYMENTS] {
            stack.consumers.lock().unwrap().push(name.to_owned());
        }
        supervisor.consume(
            stack.bus.clone(),
            Consumer::new(orders.clone(), CHECKOUT, Checkout { payment_timeout: Duration::from_secs(5) })
                .unwrap()
                .with_retry(fast_retry(5)),
        );
        supervisor.consume(stack.bus.clone(), Consumer::new(stock.clone(), STOCK, Stock).unwrap().with_retry(fast_retry(5)));
        supervisor.consume(stack.bus.clone(), Consumer::new(payments.clone(), PAYMENTS, Payments).unwrap().with_retry(fast_retry(5)));
        // Events published before a consumer's queue is bound reach nobody: start once all
        // three are subscribed, as the application does before it starts its relays.
        assert!(supervisor.consumers_subscribed(Duration::from_secs(15)).await, "the consumers subscribed");

        // The timer worker of the first run stops right after the timers are set.
        let first_run = Shutdown::new();
        let first_worker = tokio::spawn(TimerWorker::new(orders.clone(), TimerConfig { poll: Duration::from_millis(50), ..TimerConfig::default() }).run(first_run.clone()));

        let paid = Uuid::now_v7();
        let declined = Uuid::now_v7();
        let silent = Uuid::now_v7();
        let roots = [
            Checkout::start(&orders, paid, "pay").await,
            Checkout::start(&orders, declined, "decline").await,
            Checkout::start(&orders, silent, "silent").await,
        ];
        let orders_ref = &orders;
        let status = |order: Uuid| async move {
            saga::load::<CheckoutState>(&mut orders_ref.pool().acquire().await.unwrap(), CHECKOUT, &order.to_string())
                .await
                .unwrap()
                .unwrap()
                .state
        };
        eventually("the silent checkout waits for payment", move || async move {
            status(silent).await.status == "charging"
        })
        .await;
        first_run.trigger();
        first_worker.await.unwrap();
        let silent_deadline = format!("SELECT COUNT(*) FROM timers WHERE key = 'checkout:{silent}:payment' AND fired_at IS NULL");
        assert_eq!(count(&orders, &silent_deadline).await, 1, "the payment deadline survives the worker");

        eventually("the paid checkout is confirmed", move || async move { status(paid).await.status == "confirmed" }).await;
        eventually("the declined checkout is compensated", move || async move { status(declined).await.status == "cancelled" }).await;
        // After the "restart", a new timer worker fires the deadline.
        let second_run = Shutdown::new();
        let second_worker = tokio::spawn(TimerWorker::new(orders.clone(), TimerConfig { poll: Duration::from_millis(50), ..TimerConfig::default() }).run(second_run.clone()));
        eventually("the silent checkout times out and is compensated", move || async move {
            status(silent).await.status == "cancelled"
        })
        .await;
        second_run.trigger();
        second_worker.await.unwrap();

        assert_eq!(status(declined).await.reason.as_deref(), Some("payment declined"));
        assert_eq!(status(silent).await.reason.as_deref(), Some("payment timed out"));
        assert_eq!(status(paid).await.reason, None);
        let held: Vec<(String, i64)> = sqlx::query_as("SELECT order_id, CAST(held AS BIGINT) FROM reservations ORDER BY order_id")
            .fetch_all(stock.pool())
            .await
            .unwrap();
        let held_of = |o: Uuid| held.iter().find(|(id, _)| *id == o.to_string()).map(|(_, h)| *h);
        assert_eq!(held_of(paid), Some(1), "the paid order keeps its stock");
        assert_eq!(held_of(declined), Some(0), "compensated");
        assert_eq!(held_of(silent), Some(0), "compensated after the timeout");
        // Every step of a checkout carries the correlation of the command that started it
        // (the timeout's command was sent while handling StockReserved, which inherits it).
        for (order, root) in [paid, declined, silent].into_iter().zip(roots) {
            let seen = status(order).await.correlations;
            assert!(!seen.is_empty() && seen.iter().all(|c| *c == root), "{order}: {seen:?} vs {root}");
        }
        assert_eq!(timers::pending(&orders).await.unwrap(), 0, "no deadline left behind");

        // Optimistic versioning: a save with a stale version is a transient conflict.
        let mut conn = orders.pool().acquire().await.unwrap();
        let current = saga::load::<CheckoutState>(&mut conn, CHECKOUT, &paid.to_string()).await.unwrap().unwrap();
        let next = saga::save(&mut conn, CHECKOUT, &paid.to_string(), &current.state, Some(current.version)).await.unwrap();
        assert_eq!(next, current.version + 1);
        let stale = saga::save(&mut conn, CHECKOUT, &paid.to_string(), &current.state, Some(current.version)).await;
        assert!(matches!(stale, Err(saga::SagaError::Conflict { .. })));
        assert!(HandlerError::from(stale.unwrap_err()).is_transient());
        drop(conn);

        stack.shutdown.trigger();
        assert!(supervisor.join(Duration::from_secs(15)).await);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Test events and handlers
// ---------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct ItemCreated {
    item_id: Uuid,
    name: String,
}
impl Event for ItemCreated {
    const TYPE: &'static str = "test.ItemCreated";
    const VERSION: u32 = 1;
}

#[derive(Debug, Serialize, Deserialize)]
struct Pinged {
    n: u32,
}
impl Event for Pinged {
    const TYPE: &'static str = "test.Pinged";
    const VERSION: u32 = 1;
}

#[derive(Debug, Serialize, Deserialize)]
struct Other {}
impl Event for Other {
    const TYPE: &'static str = "test.Other";
    const VERSION: u32 = 1;
}

#[derive(Debug, Serialize, Deserialize)]
struct Deep {}
impl Event for Deep {
    const TYPE: &'static str = "test.deep.Thing";
    const VERSION: u32 = 1;
}

/// Version 2 of `test.ItemCreated`: `name` became `title`.
#[derive(Debug, Serialize, Deserialize)]
struct ItemCreatedV2 {
    item_id: Uuid,
    title: String,
}
impl Event for ItemCreatedV2 {
    const TYPE: &'static str = "test.ItemCreated";
    const VERSION: u32 = 2;
}

/// What the indexer reads: `test.ItemCreated` at version 1 or 2.
enum ItemCreatedAnyVersion {
    V1(ItemCreated),
    V2(ItemCreatedV2),
}

impl Incoming for ItemCreatedAnyVersion {
    fn event_types() -> Vec<String> {
        vec![ItemCreated::TYPE.to_owned()]
    }
    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        match envelope.version {
            1 => envelope.decode().map(Self::V1),
            2 => envelope.decode().map(Self::V2),
            _ => Err(DecodeError::unexpected(
                "test.ItemCreated v1 or v2",
                envelope,
            )),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ItemIndexed {
    item_id: Uuid,
}
impl Event for ItemIndexed {
    const TYPE: &'static str = "test.ItemIndexed";
    const VERSION: u32 = 1;
}

/// Retries fast enough for tests.
fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(80),
        defer_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    }
}

/// One delivery a recording consumer saw.
#[derive(Clone, Debug)]
struct Seen {
    event_type: String,
    n: Option<u32>,
    causation_id: Option<Uuid>,
}

/// Subscribes a consumer that records every delivery.
async fn record(stack: &Stack, consumer: &str, patterns: &[&str]) -> Arc<Mutex<Vec<Seen>>> {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let s = seen.clone();
    stack
        .subscribe(
            Subscription::new(consumer, patterns),
            handler(move |e| {
                s.lock().unwrap().push(Seen {
                    event_type: e.event_type.clone(),
                    n: e.decode::<Pinged>().ok().map(|p| p.n),
                    causation_id: e.causation_id,
                });
                async { Ok(()) }
            }),
        )
        .await;
    seen
}

/// The `Pinged` numbers in the order they were first seen (duplicates dropped, as an
/// inbox would).
fn first_seen(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<u32> {
    let mut order = Vec::new();
    for n in seen.lock().unwrap().iter().filter_map(|s| s.n) {
        if !order.contains(&n) {
            order.push(n);
        }
    }
    order
}

type FailWhen = Box<dyn Fn(u32) -> Option<BusError> + Send + Sync>;

/// A real bus with faults injected in front of it: refusals of chosen `Pinged` numbers
/// (once or always), slow confirms, a first subscription that ends at once. It counts the
/// messages it let through.
struct Faulty {
    inner: Arc<dyn Bus>,
    fail: FailWhen,
    once: bool,
    failed: Mutex<Vec<u32>>,
    delay: Duration,
    published: AtomicU32,
    end_first_subscription: std::sync::atomic::AtomicBool,
}

impl Faulty {
    fn new(
        inner: Arc<dyn Bus>,
        fail: impl Fn(u32) -> Option<BusError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            fail: Box::new(fail),
            once: false,
            failed: Mutex::default(),
            delay: Duration::ZERO,
            published: AtomicU32::new(0),
            end_first_subscription: std::sync::atomic::AtomicBool::new(false),
        }
    }
    fn once(mut self) -> Self {
        self.once = true;
        self
    }
    fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    fn first_subscription_ends(self) -> Self {
        self.end_first_subscription.store(true, Ordering::SeqCst);
        self
    }
    fn published(&self) -> u32 {
        self.published.load(Ordering::SeqCst)
    }
    async fn gate(&self, envelope: &Envelope) -> Result<(), BusError> {
        let n = envelope.decode::<Pinged>().map(|p| p.n).unwrap_or(u32::MAX);
        if let Some(err) = (self.fail)(n) {
            let mut failed = self.failed.lock().unwrap();
            if !self.once || !failed.contains(&n) {
                failed.push(n);
                return Err(err);
            }
        }
        tokio::time::sleep(self.delay).await;
        Ok(())
    }
}

#[async_trait]
impl Bus for Faulty {
    async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        self.gate(envelope).await?;
        self.inner.publish(envelope).await?;
        self.published.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn send(&self, consumer: &str, envelope: &Envelope) -> Result<(), BusError> {
        self.gate(envelope).await?;
        self.inner.send(consumer, envelope).await?;
        self.published.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        if self.end_first_subscription.swap(false, Ordering::SeqCst) {
            return Ok(tokio::spawn(async {}));
        }
        self.inner.subscribe(subscription, handler, shutdown).await
    }
    async fn pending(&self, consumer: &str) -> Result<u64, BusError> {
        self.inner.pending(consumer).await
    }
    async fn dead_lettered(&self, consumer: &str) -> Result<u64, BusError> {
        self.inner.dead_lettered(consumer).await
    }
    async fn ping(&self) -> Result<(), BusError> {
        self.inner.ping().await
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

/// A TCP proxy in front of the broker that can stop forwarding what one client connection
/// sends, as RabbitMQ stops reading from a connection it blocks during a resource alarm.
struct StallingProxy {
    url: String,
    stalls: Arc<Mutex<Vec<Arc<std::sync::atomic::AtomicBool>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    async fn start(amqp_url: &str) -> Self {
        let (scheme_auth, rest) = amqp_url.split_once('@').expect("amqp URL with credentials");
        let (broker, vhost) = rest.split_once('/').unwrap_or((rest, ""));
        let broker = broker.to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("{scheme_auth}@{}/{vhost}", listener.local_addr().unwrap());
        let stalls: Arc<Mutex<Vec<Arc<std::sync::atomic::AtomicBool>>>> = Arc::default();
        let task = tokio::spawn({
            let stalls = stalls.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = tokio::net::TcpStream::connect(&broker).await else {
                        continue;
                    };
                    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    stalls.lock().unwrap().push(stalled.clone());
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pump(client_read, server_write, Some(stalled)));
                    tokio::spawn(pump(server_read, client_write, None));
                }
            }
        });
        Self { url, stalls, task }
    }

    /// Stops forwarding what the `n`-th accepted connection sends to the broker.
    fn stall_connection(&self, n: usize) {
        self.stalls.lock().unwrap()[n].store(true, Ordering::SeqCst);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Option<Arc<std::sync::atomic::AtomicBool>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    let is_stalled = || stalled.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
    loop {
        while is_stalled() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while is_stalled() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

struct FnHandler<F>(F);

#[async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Envelope) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        (self.0)(envelope.clone()).await
    }
}

fn handler<F, Fut>(f: F) -> Arc<dyn Handler>
where
    F: Fn(Envelope) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    Arc::new(FnHandler(f))
}

/// A relay's bus that is killed right after the broker took the message: the publish
/// happened, but the relay never hears the confirm, so it cannot mark the row sent.
struct DiesAfterPublishing(Arc<dyn Bus>);

#[async_trait]
impl Bus for DiesAfterPublishing {
    async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        self.0.publish(envelope).await?;
        Err(BusError::NotConfirmed("relay killed".into()))
    }
    async fn send(&self, consumer: &str, envelope: &Envelope) -> Result<(), BusError> {
        self.0.send(consumer, envelope).await?;
        Err(BusError::NotConfirmed("relay killed".into()))
    }
    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        self.0.subscribe(subscription, handler, shutdown).await
    }
    async fn pending(&self, consumer: &str) -> Result<u64, BusError> {
        self.0.pending(consumer).await
    }
    async fn dead_lettered(&self, consumer: &str) -> Result<u64, BusError> {
        self.0.dead_lettered(consumer).await
    }
    async fn ping(&self) -> Result<(), BusError> {
        self.0.ping().await
    }
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
}

// ---------------------------------------------------------------------------------------
// Stacks
// ---------------------------------------------------------------------------------------

const DATABASE_URL_VAR: &str = "RENDERMART_TEST_DATABASE_URL";
const AMQP_URL_VAR: &str = "RENDERMART_TEST_AMQP_URL";

/// One set of real backends a scenario runs on.
struct Stack {
    name: &'static str,
    target: DatabaseTarget,
    bus: Arc<dyn Bus>,
    /// Every consumer subscribed through [`Stack::subscribe`] watches this.
    shutdown: Shutdown,
    /// Names of the consumers subscribed so far, for the broker clean-up.
    consumers: Mutex<Vec<String>>,
    running: Mutex<Vec<(String, tokio::task::JoinHandle<()>)>>,
    resources: Resources,
}

enum Resources {
    Embedded {
        _dir: tempfile::TempDir,
    },
    Distributed {
        admin_url: String,
        database: String,
        amqp_url: String,
        exchange: String,
    },
}

/// Runs `scenario` on the embedded stack and, when configured, on the distributed one.
async fn on_every_stack<F, Fut>(scenario: F)
where
    F: Fn(Arc<Stack>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut stacks = vec![Stack::embedded().await];
    match (std::env::var(DATABASE_URL_VAR), std::env::var(AMQP_URL_VAR)) {
        (Ok(database_url), Ok(amqp_url)) => {
            stacks.push(Stack::distributed(&database_url, &amqp_url).await)
        }
        _ => println!(
            "skipping the distributed stack (PostgreSQL + RabbitMQ): set {DATABASE_URL_VAR} and {AMQP_URL_VAR} to run it"
        ),
    }
    for stack in stacks {
        let stack = Arc::new(stack);
        println!("running on the {} stack ({})", stack.name, stack.bus.kind());
        scenario(stack.clone()).await;
        stack.teardown().await;
        println!("passed on the {} stack", stack.name);
    }
}

impl Stack {
    async fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bus = LocalBus::open(&dir.path().join("bus.db")).await.unwrap();
        Self::new(
            "embedded",
            DatabaseTarget::SqliteDir(dir.path().join("data")),
            Arc::new(bus),
            Resources::Embedded { _dir: dir },
        )
    }

    async fn distributed(admin_url: &str, amqp_url: &str) -> Self {
        let database = format!("rm_test_{}", Uuid::now_v7().simple());
        {
            use sqlx::{Connection, Executor};
            let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
            admin
                .execute(format!("CREATE DATABASE \"{database}\"").as_str())
                .await
                .unwrap();
            admin.close().await.unwrap();
        }
        let exchange = format!("rm_test_{}", Uuid::now_v7().simple());
        let bus = AmqpBus::connect(amqp_url, &exchange).await.unwrap();
        bus.ping().await.unwrap();
        Self::new(
            "distributed",
            DatabaseTarget::Postgres(with_database(admin_url, &database)),
            Arc::new(bus),
            Resources::Distributed {
                admin_url: admin_url.to_owned(),
                database,
                amqp_url: amqp_url.to_owned(),
                exchange,
            },
        )
    }

    fn new(
        name: &'static str,
        target: DatabaseTarget,
        bus: Arc<dyn Bus>,
        resources: Resources,
    ) -> Self {
        Self {
            name,
            target,
            bus,
            shutdown: Shutdown::new(),
            consumers: Mutex::default(),
            running: Mutex::default(),
            resources,
        }
    }

    /// A service's database with the platform tables and the given schema.
    async fn db(&self, service: &'static str, schema: &str) -> Db {
        let db = Db::connect(&self.target, service).await.unwrap();
        let migrator = Migrator {
            migrations: Cow::Owned(vec![Migration::new(
                20260101000000,
                Cow::Borrowed("test schema"),
                MigrationType::Simple,
                Cow::Owned(schema.to_owned()),
                false,
            )]),
            ..Migrator::DEFAULT
        };
        db.migrate(&migrator).await.unwrap();
        db
    }

    async fn subscribe(&self, subscription: Subscription, handler: Arc<dyn Handler>) {
        let consumer = subscription.consumer.clone();
        let handle = self
            .bus
            .subscribe(subscription, handler, self.shutdown.clone())
            .await
            .unwrap();
        self.consumers.lock().unwrap().push(consumer.clone());
        self.running.lock().unwrap().push((consumer, handle));
    }

    /// Completes when every consumer task has returned (after shutdown was triggered).
    async fn consumers_stopped(&self) {
        let handles: Vec<_> = std::mem::take(&mut *self.running.lock().unwrap());
        for (consumer, handle) in handles {
            if let Err(e) = handle.await {
                panic!("consumer {consumer} did not stop cleanly: {e}");
            }
        }
    }

    /// Stops the consumers and removes what the test created on shared servers (best effort).
    async fn teardown(&self) {
        let consumers = self.consumers.lock().unwrap().clone();
        self.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.consumers_stopped()).await;
        if let Resources::Distributed {
            admin_url,
            database,
            amqp_url,
            exchange,
        } = &self.resources
        {
            delete_amqp_objects(amqp_url, exchange, &consumers).await;
            drop_database(admin_url, database).await;
        }
    }
}

/// The admin URL with its database replaced by `database`.
fn with_database(admin_url: &str, database: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

async fn drop_database(admin_url: &str, database: &str) {
    use sqlx::{Connection, Executor};
    let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await else {
        return;
    };
    if let Err(e) = admin
        .execute(format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)").as_str())
        .await
    {
        eprintln!("could not drop test database {database}: {e}");
    }
    let _ = admin.close().await;
}

/// Deletes the queues and exchanges the bus declared for this test's consumers.
async fn delete_amqp_objects(amqp_url: &str, exchange: &str, consumers: &[String]) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(conn) = lapin::Connection::connect(amqp_url, Default::default()).await else {
        return;
    };
    let mut queues = Vec::new();
    for consumer in consumers {
        queues.push(format!("{exchange}.{consumer}"));
        queues.push(format!("{exchange}.{consumer}.retry"));
        queues.push(format!("{exchange}.{consumer}.dlq"));
        queues.push(format!("{exchange}.{consumer}.bindings"));
    }
    // A failed operation closes its channel, so each gets a fresh one.
    for queue in &queues {
        if let Ok(channel) = conn.create_channel().await {
            let _ = channel
                .queue_delete(queue, QueueDeleteOptions::default())
                .await;
        }
    }
    for exchange in [exchange.to_owned(), format!("{exchange}.dlx")] {
        if let Ok(channel) = conn.create_channel().await {
            let _ = channel
                .exchange_delete(&exchange, ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = conn.close(200, "test done").await;
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

const DEADLINE: Duration = Duration::from_secs(15);

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

#[test]
fn test_database_url_keeps_server_and_options() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/admin?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}
