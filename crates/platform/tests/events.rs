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
        amqp::AmqpBus, local::LocalBus, Bus, BusError, Handler, HandlerError, RetryPolicy,
        Subscription,
    },
    db::{DatabaseTarget, Db},
    events::{Envelope, Event},
    inbox,
    outbox::{self, Relay, RelayConfig},
    shutdown::Shutdown,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldapi_a_panicking_handler_fails_its_message_and_the_consumer_goes_on_with_the_next() {
    on_every_stack(|stack| async move {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let consumer = "consumer.panics";
        stack
            .subscribe(
                Subscription::new(consumer, &[Pinged::TYPE]).with_retry(RetryPolicy {
                    max_attempts: 2,
                    initial_backoff: Duration::from_millis(20),
                    max_backoff: Duration::from_millis(50),
                }),
                handler({
                    let applied = applied.clone();
                    move |envelope| {
                        let applied = applied.clone();
                        async move {
                            let n = envelope.decode::<Pinged>().unwrap().n;
                            if n == 1 {
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
            stack.bus.publish(&Envelope::new(&Pinged { n })).await.unwrap();
        }
        let (bus, applied) = (&stack.bus, &applied);
        eventually("message 2 is applied and message 1 dead-lettered", move || async move {
            applied.lock().unwrap().contains(&2) && bus.dead_lettered(consumer).await.unwrap() == 1
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldapi_topic_patterns_match_the_same_way_on_both_buses() {
    on_every_stack(|stack| async move {
        let star = Arc::new(Mutex::new(Vec::new()));
        let consumer = "consumer.star";
        let s = star.clone();
        stack
            .subscribe(
                Subscription::new(consumer, &["test.*"]),
                handler(move |e| {
                    s.lock().unwrap().push(e.event_type.clone());
                    async { Ok(()) }
                }),
            )
            .await;
        stack.bus.publish(&Envelope::new(&Pinged { n: 1 })).await.unwrap();
        let star = &star;
        eventually("test.* receives test.Pinged", move || async move {
            !star.lock().unwrap().is_empty()
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldapi_a_failed_publish_does_not_let_later_events_overtake_it() {
    on_every_stack(|stack| async move {
        let producer = stack.db("producer", "CREATE TABLE t (x TEXT)").await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let consumer = "consumer.ordered";
        let s = seen.clone();
        stack
            .subscribe(
                Subscription::new(consumer, &[Pinged::TYPE]),
                handler(move |e| {
                    let n = e.decode::<Pinged>().unwrap().n;
                    let mut s = s.lock().unwrap();
                    if !s.contains(&n) {
                        s.push(n);
                    }
                    async { Ok(()) }
                }),
            )
            .await;
        let mut tx = producer.begin().await.unwrap();
        for n in 0..8 {
            outbox::enqueue(&mut tx, &Envelope::new(&Pinged { n })).await.unwrap();
        }
        tx.commit().await.unwrap();
        let config = RelayConfig {
            batch: 3,
            ..RelayConfig::default()
        };
        let failing = Relay::new(
            producer.clone(),
            Arc::new(FailsOnce {
                inner: stack.bus.clone(),
                fail_n: 2,
                failed: AtomicU32::new(0),
            }),
            config,
        );
        for _ in 0..6 {
            let _ = failing.relay_once().await;
        }
        let seen = &seen;
        eventually("all 8 arrive", move || async move { seen.lock().unwrap().len() == 8 }).await;
        assert_eq!(*seen.lock().unwrap(), (0..8).collect::<Vec<_>>());
    })
    .await;
}

/// Fails the first publish of `Pinged { n: fail_n }`.
struct FailsOnce {
    inner: Arc<dyn Bus>,
    fail_n: u32,
    failed: AtomicU32,
}

#[async_trait]
impl Bus for FailsOnce {
    async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        if let Ok(p) = envelope.decode::<Pinged>() {
            if p.n == self.fail_n && self.failed.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(BusError::NotConfirmed("injected".into()));
            }
        }
        self.inner.publish(envelope).await
    }
    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
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
