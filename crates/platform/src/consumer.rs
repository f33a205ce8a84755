//! The consumer helper: the only way a service applies events and commands.
//!
//! A service writes an [`EventHandler`] — one typed message in, its effect written through
//! the [`HandlerContext`]'s transaction — and wraps it in a [`Consumer`] named
//! `<service>.<name>`. For every delivery the helper decodes the message (any of the types
//! and versions its [`Incoming`] accepts), opens a transaction on the consumer's own
//! database, claims the event in the inbox (a duplicate commits nothing and succeeds),
//! runs the handler, and commits; events and commands the handler enqueued commit with the
//! effect and wake the service's relay. A database error is classified (transient ones
//! retry without using attempts); a panic fails only this message. When the bus hands
//! over several messages of a lane at once, on SQLite they are applied in one
//! transaction, each in its own savepoint: the first that fails is rolled back alone and
//! ends the batch, and one commit holds all the others (decision 68). On PostgreSQL each
//! message keeps its own transaction.
//!
//! The one thing to know: **events of one aggregate are applied in sequence order even
//! though retries reorder the queue.** When an aggregate's event fails, the helper writes a
//! durable block (`consumer_blocks`: this consumer, this aggregate, blocked at sequence k);
//! later events of that aggregate are deferred (`consumer_deferrals`; deferral uses no
//! attempts) until the blocker is applied or dead-lettered (the bus tells the helper first,
//! [`Handler::dead_lettering`]), and deferred events then go in sequence order. Blocks and
//! deferrals untouched for `stale_after` are ignored, so a message lost by an operator
//! cannot hold its aggregate forever.

use std::{marker::PhantomData, sync::Arc, time::Duration};

use async_trait::async_trait;
use sqlx::{Any, AnyConnection, Transaction};

use crate::{
    bus::{
        one_at_a_time, scoped, Bus, BusError, Delivery, Handler, HandlerError, RetryPolicy,
        Subscription,
    },
    clock,
    db::{self, Backend, Db},
    events::{Envelope, Incoming},
    inbox, outbox,
    shutdown::Shutdown,
};

/// What a handler can touch while applying one message.
pub struct HandlerContext<'a> {
    tx: &'a mut Transaction<'static, Any>,
    envelope: &'a Envelope,
    consumer: &'a str,
}

impl HandlerContext<'_> {
    /// The transaction the effect is written in (it also holds the inbox claim).
    pub fn tx(&mut self) -> &mut Transaction<'static, Any> {
        self.tx
    }

    /// The transaction as a connection, for `.execute(cx.conn())`.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut *self.tx
    }

    /// The envelope being applied (id, aggregate, sequence, correlation).
    pub fn envelope(&self) -> &Envelope {
        self.envelope
    }

    pub fn consumer(&self) -> &str {
        self.consumer
    }

    /// Publishes an event with the effect (it inherits this message's correlation).
    pub async fn publish(&mut self, envelope: &Envelope) -> Result<(), HandlerError> {
        Ok(outbox::enqueue(self.tx, envelope).await?)
    }

    /// Sends a command to the consumer `to` with the effect.
    pub async fn send(&mut self, to: &str, command: &Envelope) -> Result<(), HandlerError> {
        Ok(outbox::send_command(self.tx, to, command).await?)
    }
}

/// A typed handler. It must write its effect only through `cx` (so it commits with the
/// inbox claim) and return a [`HandlerError`] — `?` on a `sqlx::Error` classifies it.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    type Message: Incoming;
    async fn handle(
        &self,
        cx: &mut HandlerContext<'_>,
        message: Self::Message,
    ) -> Result<(), HandlerError>;

    /// Runs after the transaction that holds a message's effect has committed; not when it
    /// rolled back, nor for a message applied before. For what must follow the commit,
    /// such as making a memory of reads stale (decision 65).
    fn committed(&self) {}
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("consumer name {name:?} must be `{service}.<name>` (lowercase ascii, digits, _)")]
    BadName { name: String, service: &'static str },
}

/// How long an untouched block or deferral is honoured.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(2 * 24 * 3600);

/// A named consumer: its handler, its database and its delivery settings.
pub struct Consumer<H: EventHandler> {
    name: String,
    db: Db,
    handler: H,
    retry: RetryPolicy,
    concurrency: usize,
    stale_after: Duration,
}

impl<H: EventHandler> Consumer<H> {
    /// `name` is `<service>.<name>`, the service being `db`'s.
    pub fn new(db: Db, name: &str, handler: H) -> Result<Self, ConsumerError> {
        let valid = name.split_once('.').is_some_and(|(service, rest)| {
            service == db.service()
                && !rest.is_empty()
                && rest.len() <= 100
                && rest
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
        if !valid {
            return Err(ConsumerError::BadName {
                name: name.to_owned(),
                service: db.service(),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            db,
            handler,
            retry: RetryPolicy::default(),
            concurrency: crate::bus::DEFAULT_CONCURRENCY,
            stale_after: DEFAULT_STALE_AFTER,
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Aggregates handled in parallel (lanes).
    pub fn with_concurrency(mut self, lanes: usize) -> Self {
        self.concurrency = lanes;
        self
    }

    pub fn with_stale_after(mut self, stale_after: Duration) -> Self {
        self.stale_after = stale_after;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subscription (queue, bindings from the message type, retries, lanes) and the
    /// bus-level handler, for [`Bus::subscribe`] or the supervisor.
    pub fn into_parts(self) -> (Subscription, Arc<dyn Handler>) {
        let patterns = H::Message::event_types();
        let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let subscription = Subscription::new(self.name.clone(), &patterns)
            .with_retry(self.retry)
            .with_concurrency(self.concurrency);
        let handler = Arc::new(Applier {
            name: self.name,
            db: self.db,
            handler: self.handler,
            stale_after: self.stale_after,
            _message: PhantomData,
        });
        (subscription, handler)
    }

    /// Subscribes on `bus` until `shutdown` (unsupervised; services use the supervisor).
    pub async fn subscribe(
        self,
        bus: &dyn Bus,
        shutdown: Shutdown,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        let (subscription, handler) = self.into_parts();
        bus.subscribe(subscription, handler, shutdown).await
    }
}

/// The bus-level handler the helper builds around an [`EventHandler`].
struct Applier<H: EventHandler> {
    name: String,
    db: Db,
    handler: H,
    stale_after: Duration,
    _message: PhantomData<fn() -> H::Message>,
}

/// The order check in one statement: the aggregate's block (fresh or not), the earliest
/// fresh deferral before this event, and whether this event was deferred itself.
/// Arguments: `$1` consumer, `$2` aggregate, `$3` sequence, `$4` event id, `$5` fresh after.
const ORDER_SQL: &str = "SELECT b.sequence, b.event_id, b.blocked_at, \
       (SELECT d.sequence FROM consumer_deferrals AS d \
        WHERE d.consumer = $1 AND d.aggregate = $2 AND d.sequence < $3 AND d.event_id <> $4 \
          AND d.deferred_at > $5 \
        ORDER BY d.sequence LIMIT 1), \
       CAST((SELECT COUNT(*) FROM consumer_deferrals AS o \
             WHERE o.consumer = $1 AND o.event_id = $4) AS BIGINT) \
     FROM (SELECT 1 AS one) AS here \
     LEFT JOIN consumer_blocks AS b ON b.consumer = $1 AND b.aggregate = $2";

/// The inbox claim ([`inbox::claim_sql`]) with the order check's arguments: `$6` is the
/// time it is applied.
static CLAIM_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| inbox::claim_sql("$1", "$4", "$6"));

/// Savepoints of a batch: each message's effect can be rolled back alone. Each is released
/// after its message, except the last one's, which the commit ends: savepoints left open
/// nest, and SQLite then keeps every page a later message changes in its sub-journal for
/// each of them.
const SAVEPOINT: &str = "SAVEPOINT rm_message";
const ROLLBACK_TO_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT rm_message";
const RELEASE_SAVEPOINT: &str = "RELEASE SAVEPOINT rm_message";

/// On SQLite, a message's admission (its savepoint in a batch, the inbox claim and, for an
/// event of an aggregate, the order check) is one [`db::script`]: one round trip to the
/// connection's thread instead of three (decision 69). Indexed by `[savepoint][ordered]`.
static ADMIT_SCRIPTS: std::sync::LazyLock<[[String; 2]; 2]> = std::sync::LazyLock::new(|| {
    let script = |savepoint: bool, ordered: bool| {
        let mut sql = String::new();
        if savepoint {
            sql.push_str(SAVEPOINT);
            sql.push_str("; ");
        }
        sql.push_str(&CLAIM_SQL);
        if ordered {
            sql.push_str("; ");
            sql.push_str(ORDER_SQL);
        }
        sql
    };
    [
        [script(false, false), script(false, true)],
        [script(true, false), script(true, true)],
    ]
});

/// On PostgreSQL, the inbox claim and the order check of an event of an aggregate in one
/// statement: the claim is a data-modifying CTE, whose row count is the first column.
static PG_ADMIT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let order = ORDER_SQL.trim_start_matches("SELECT ");
    let claim = &*CLAIM_SQL;
    format!(
        "WITH claimed AS ({claim} RETURNING 1) \
         SELECT CAST((SELECT COUNT(*) FROM claimed) AS BIGINT), {order}"
    )
});

/// What the inbox and the order check decided for a message.
enum Admission {
    /// Applied before (the inbox had it): nothing is to be written.
    Duplicate,
    /// Apply it; `holds` says whether a block or deferral of this very event is recorded
    /// (to forget once it is applied).
    Apply { holds: bool },
    /// Deferred behind an earlier event of the aggregate.
    Wait(String),
}

/// The order check's row: block sequence, blocker, blocked at, earlier deferral, own
/// deferrals.
type OrderRow = (Option<i64>, Option<String>, Option<i64>, Option<i64>, i64);

fn order_row(row: &sqlx::any::AnyRow) -> Result<OrderRow, sqlx::Error> {
    <OrderRow as sqlx::FromRow<'_, sqlx::any::AnyRow>>::from_row(row)
}

impl<H: EventHandler> Applier<H> {
    fn fresh_after(&self) -> i64 {
        clock::now_micros() - i64::try_from(self.stale_after.as_micros()).unwrap_or(i64::MAX / 4)
    }

    /// Claims the message in the inbox and checks its order; in a batch on SQLite it first
    /// opens the message's savepoint (`savepoint`), in the same round trip.
    async fn admit(
        &self,
        tx: &mut Transaction<'static, Any>,
        envelope: &Envelope,
        savepoint: bool,
    ) -> Result<Admission, sqlx::Error> {
        let fresh = self.fresh_after();
        let id = envelope.id.to_string();
        let ordered = envelope.aggregate.as_deref().zip(envelope.sequence);
        let (claimed, row): (bool, Option<OrderRow>) = match self.db.backend() {
            Backend::Sqlite => {
                let sql = &ADMIT_SCRIPTS[usize::from(savepoint)][usize::from(ordered.is_some())];
                let steps = db::script(
                    tx,
                    sqlx::query(sql)
                        .bind(&self.name)
                        .bind(ordered.map(|(aggregate, _)| aggregate))
                        .bind(ordered.map(|(_, sequence)| sequence))
                        .bind(&id)
                        .bind(fresh)
                        .bind(clock::now_micros()),
                )
                .await?;
                let at = usize::from(savepoint);
                let claimed = steps.get(at).is_some_and(|s| s.rows_affected == 1);
                let row = match steps.get(at + 1).and_then(|s| s.rows.first()) {
                    Some(row) => Some(order_row(row)?),
                    None => None,
                };
                (claimed, row)
            }
            Backend::Postgres => {
                debug_assert!(
                    !savepoint,
                    "PostgreSQL batches are not applied in savepoints"
                );
                match ordered {
                    // The claim as a data-modifying CTE of the order check: one statement.
                    Some((aggregate, sequence)) => {
                        let (claimed, block_seq, blocker, blocked_at, earlier, own): (
                            i64,
                            Option<i64>,
                            Option<String>,
                            Option<i64>,
                            Option<i64>,
                            i64,
                        ) = sqlx::query_as(&PG_ADMIT_SQL)
                            .bind(&self.name)
                            .bind(aggregate)
                            .bind(sequence)
                            .bind(&id)
                            .bind(fresh)
                            .bind(clock::now_micros())
                            .fetch_one(&mut **tx)
                            .await?;
                        (
                            claimed == 1,
                            Some((block_seq, blocker, blocked_at, earlier, own)),
                        )
                    }
                    None => (inbox::claim(tx, &self.name, envelope.id).await?, None),
                }
            }
        };
        if !claimed {
            return Ok(Admission::Duplicate);
        }
        let (Some((aggregate, sequence)), Some(row)) = (ordered, row) else {
            return Ok(Admission::Apply { holds: false });
        };
        let (block_seq, blocker, blocked_at, earlier, own_deferrals) = row;
        let own_block = blocker.as_deref() == Some(id.as_str());
        let holds = own_block || own_deferrals > 0;
        if let (Some(blocked_at_seq), Some(at)) = (block_seq, blocked_at) {
            if at > fresh && !own_block && sequence > blocked_at_seq {
                return Ok(Admission::Wait(format!(
                    "{aggregate} is blocked at sequence {blocked_at_seq}"
                )));
            }
            if at > fresh && own_block {
                return Ok(Admission::Apply { holds });
            }
        }
        Ok(match earlier {
            Some(seq) => Admission::Wait(format!(
                "{aggregate} has an earlier deferred event (sequence {seq})"
            )),
            None => Admission::Apply { holds },
        })
    }

    async fn note_deferral(&self, envelope: &Envelope, aggregate: &str, sequence: i64) {
        let mut tx = match self.db.begin().await {
            Ok(tx) => tx,
            Err(err) => {
                tracing::warn!(consumer = %self.name, error = %err, "could not record a deferral");
                return;
            }
        };
        let noted = sqlx::query(
            "INSERT INTO consumer_deferrals (consumer, event_id, aggregate, sequence, deferred_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (consumer, event_id) DO UPDATE SET deferred_at = excluded.deferred_at",
        )
        .bind(&self.name)
        .bind(envelope.id.to_string())
        .bind(aggregate)
        .bind(sequence)
        .bind(clock::now_micros())
        .execute(&mut *tx)
        .await;
        // Its own transaction, so it reaches the disk like the effects it orders.
        if let Err(err) = async {
            noted?;
            tx.commit().await
        }
        .await
        {
            tracing::warn!(consumer = %self.name, error = %err, "could not record a deferral");
        }
    }

    /// Blocks the aggregate at this event (or keeps an earlier block).
    async fn block(&self, envelope: &Envelope, aggregate: &str, sequence: i64) {
        let mut tx = match self.db.begin().await {
            Ok(tx) => tx,
            Err(err) => {
                tracing::warn!(consumer = %self.name, error = %err, "could not record a block");
                return;
            }
        };
        let blocked = sqlx::query(
            "INSERT INTO consumer_blocks (consumer, aggregate, sequence, event_id, blocked_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (consumer, aggregate) DO UPDATE SET sequence = excluded.sequence, \
                 event_id = excluded.event_id, blocked_at = excluded.blocked_at \
             WHERE consumer_blocks.sequence >= excluded.sequence \
                OR consumer_blocks.blocked_at <= $6",
        )
        .bind(&self.name)
        .bind(aggregate)
        .bind(sequence)
        .bind(envelope.id.to_string())
        .bind(clock::now_micros())
        .bind(self.fresh_after())
        .execute(&mut *tx)
        .await;
        if let Err(err) = async {
            blocked?;
            tx.commit().await
        }
        .await
        {
            tracing::warn!(consumer = %self.name, error = %err, "could not record a block");
        }
    }

    /// Forgets this event's block and deferral (it was applied or dead-lettered).
    async fn release(
        &self,
        conn: &mut AnyConnection,
        envelope: &Envelope,
    ) -> Result<(), sqlx::Error> {
        let id = envelope.id.to_string();
        sqlx::query("DELETE FROM consumer_blocks WHERE consumer = $1 AND event_id = $2")
            .bind(&self.name)
            .bind(&id)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM consumer_deferrals WHERE consumer = $1 AND event_id = $2")
            .bind(&self.name)
            .bind(&id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// What became of one message in a transaction.
enum Applied {
    /// The handler applied it.
    Fresh,
    /// Applied before (the inbox had it): nothing was written.
    Duplicate,
}

impl<H: EventHandler> Applier<H> {
    /// Applies one message in `tx`: the inbox claim, the order check, the handler, and the
    /// release of its block or deferral; in a batch (`savepoint`) it first opens the
    /// message's savepoint. On an error, what it wrote must be rolled back (to it).
    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        envelope: &Envelope,
        savepoint: bool,
    ) -> Result<Applied, HandlerError> {
        use futures_util::FutureExt;

        // Admission first: in a batch it opens the savepoint a failure rolls back to.
        let holds = match self.admit(tx, envelope, savepoint).await? {
            Admission::Duplicate => return Ok(Applied::Duplicate),
            Admission::Wait(why) => return Err(HandlerError::deferred(why)),
            Admission::Apply { holds } => holds,
        };
        let message = H::Message::decode(envelope).map_err(HandlerError::permanent)?;
        let applied = {
            let mut cx = HandlerContext {
                tx,
                envelope,
                consumer: &self.name,
            };
            std::panic::AssertUnwindSafe(self.handler.handle(&mut cx, message))
                .catch_unwind()
                .await
        };
        match applied {
            Ok(result) => result?,
            Err(_) => return Err(HandlerError::permanent("handler panicked")),
        }
        if holds {
            self.release(tx, envelope).await?;
        }
        Ok(Applied::Fresh)
    }

    /// After a message failed and its effect was rolled back: a deferral is noted, and any
    /// other failure blocks its aggregate (each in its own transaction).
    async fn failed(&self, envelope: &Envelope, error: &HandlerError) {
        let Some((aggregate, sequence)) = envelope.aggregate.as_deref().zip(envelope.sequence)
        else {
            return;
        };
        if error.kind == crate::bus::FailureKind::Deferred {
            self.note_deferral(envelope, aggregate, sequence).await;
        } else {
            self.block(envelope, aggregate, sequence).await;
        }
    }

    /// After the commit of `fresh` messages: the handler's hook for each (a panic in it is
    /// logged, and neither fails a message nor stops the consumer), then the relay is woken
    /// for whatever they enqueued.
    fn after_commit(&self, fresh: usize) {
        for _ in 0..fresh {
            let hook = std::panic::AssertUnwindSafe(|| self.handler.committed());
            if std::panic::catch_unwind(hook).is_err() {
                tracing::error!(consumer = %self.name, "the after-commit hook panicked");
            }
        }
        if fresh > 0 {
            self.db.outbox_committed();
        }
    }
}

async fn control(tx: &mut Transaction<'static, Any>, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(&mut **tx).await.map(|_| ())
}

#[async_trait]
impl<H: EventHandler> Handler for Applier<H> {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        let mut tx = self.db.begin().await?;
        match self.apply(&mut tx, envelope, false).await {
            Ok(applied) => {
                tx.commit().await?;
                self.after_commit(usize::from(matches!(applied, Applied::Fresh)));
                Ok(())
            }
            Err(err) => {
                drop(tx);
                self.failed(envelope, &err).await;
                Err(err)
            }
        }
    }

    /// The batch in one transaction, each message in its own savepoint: a message that
    /// fails is rolled back alone and ends the batch; one commit (one wait for the disk)
    /// for all the others (decision 68).
    async fn handle_batch(
        &self,
        consumer: &str,
        batch: &[Delivery<'_>],
    ) -> Vec<Result<(), HandlerError>> {
        if batch.len() == 1 || self.db.backend() == Backend::Postgres {
            // PostgreSQL runs writers side by side: a transaction per message keeps row
            // locks short, where batches in parallel lanes would take them in different
            // orders and deadlock (a buyer's balance, a SKU's stock).
            return one_at_a_time(self, consumer, batch).await;
        }
        let mut tx = match self.db.begin().await {
            Ok(tx) => tx,
            Err(e) => return vec![Err(e.into())],
        };
        let mut results = Vec::with_capacity(batch.len());
        let mut fresh = 0;
        let mut failure = None;
        for (i, delivery) in batch.iter().enumerate() {
            let mut applied = None;
            let (slot, within) = (&mut applied, &mut tx);
            let result = scoped(consumer, delivery, async move {
                *slot = Some(self.apply(within, delivery.envelope, true).await?);
                Ok(())
            })
            .await;
            match (result, applied) {
                (Ok(()), Some(applied)) => {
                    let last = i + 1 == batch.len();
                    if !last {
                        if let Err(e) = control(&mut tx, RELEASE_SAVEPOINT).await {
                            tracing::warn!(consumer, error = %e, "a batch's transaction was lost");
                            return vec![Err(e.into())];
                        }
                    }
                    fresh += usize::from(matches!(applied, Applied::Fresh));
                    results.push(Ok(()));
                }
                (result, _) => {
                    let err = result
                        .err()
                        .unwrap_or_else(|| HandlerError::permanent("handler panicked"));
                    if let Err(e) = control(&mut tx, ROLLBACK_TO_SAVEPOINT).await {
                        // The transaction is lost (SQLite may roll back a whole transaction
                        // on some errors): nothing of the batch is applied.
                        tracing::warn!(consumer, error = %e, "a batch's transaction was lost");
                        return vec![Err(HandlerError::transient(format!(
                            "the batch's transaction was lost: {e}"
                        )))];
                    }
                    failure = Some((delivery.envelope, results.len()));
                    results.push(Err(err));
                    break;
                }
            }
        }
        if let Err(e) = tx.commit().await {
            // Nothing of the batch is applied: the first message answers for it, and the
            // rest are handed over again.
            return vec![Err(e.into())];
        }
        self.after_commit(fresh);
        if let Some((envelope, at)) = failure {
            if let Some(Err(err)) = results.get(at) {
                self.failed(envelope, err).await;
            }
        }
        results
    }

    async fn dead_lettering(&self, envelope: &Envelope, _error: &str) -> Result<(), HandlerError> {
        if envelope.aggregate.is_none() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        self.release(&mut tx, envelope).await?;
        tx.commit().await?;
        Ok(())
    }
}
