//! The consumer helper: the only way a service applies events and commands.
//!
//! A service writes an [`EventHandler`] — one typed message in, its effect written through
//! the [`HandlerContext`]'s transaction — and wraps it in a [`Consumer`] named
//! `<service>.<name>`. For every delivery the helper decodes the message (any of the types
//! and versions its [`Incoming`] accepts), opens a transaction on the consumer's own
//! database, claims the event in the inbox (a duplicate commits nothing and succeeds),
//! runs the handler, and commits; events and commands the handler enqueued commit with the
//! effect and wake the service's relay. A database error is classified (transient ones
//! retry without using attempts); a panic fails only this message.
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
    bus::{Bus, BusError, Handler, HandlerError, RetryPolicy, Subscription},
    clock,
    db::Db,
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

/// What the order check decided for a message of an aggregate.
enum Order {
    Apply,
    /// Deferred behind an earlier event of the aggregate.
    Wait(String),
}

impl<H: EventHandler> Applier<H> {
    fn fresh_after(&self) -> i64 {
        clock::now_micros() - i64::try_from(self.stale_after.as_micros()).unwrap_or(i64::MAX / 4)
    }

    async fn order(
        &self,
        tx: &mut Transaction<'static, Any>,
        envelope: &Envelope,
        aggregate: &str,
        sequence: i64,
    ) -> Result<Order, sqlx::Error> {
        let fresh = self.fresh_after();
        let block: Option<(i64, String)> = sqlx::query_as(
            "SELECT sequence, event_id FROM consumer_blocks \
             WHERE consumer = $1 AND aggregate = $2 AND blocked_at > $3",
        )
        .bind(&self.name)
        .bind(aggregate)
        .bind(fresh)
        .fetch_optional(&mut **tx)
        .await?;
        let id = envelope.id.to_string();
        match block {
            Some((blocked_at, blocker)) if blocker != id && sequence > blocked_at => {
                return Ok(Order::Wait(format!(
                    "{aggregate} is blocked at sequence {blocked_at}"
                )))
            }
            Some((_, blocker)) if blocker == id => return Ok(Order::Apply),
            _ => {}
        }
        let earlier: Option<i64> = sqlx::query_scalar(
            "SELECT sequence FROM consumer_deferrals \
             WHERE consumer = $1 AND aggregate = $2 AND sequence < $3 AND event_id <> $4 \
               AND deferred_at > $5 \
             ORDER BY sequence LIMIT 1",
        )
        .bind(&self.name)
        .bind(aggregate)
        .bind(sequence)
        .bind(&id)
        .bind(fresh)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(match earlier {
            Some(seq) => Order::Wait(format!(
                "{aggregate} has an earlier deferred event (sequence {seq})"
            )),
            None => Order::Apply,
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

#[async_trait]
impl<H: EventHandler> Handler for Applier<H> {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        use futures_util::FutureExt;

        let message = H::Message::decode(envelope).map_err(HandlerError::permanent)?;
        let ordered = envelope.aggregate.as_deref().zip(envelope.sequence);
        let mut tx = self.db.begin().await?;
        if !inbox::claim(&mut tx, &self.name, envelope.id).await? {
            // Applied before: nothing is committed, and the message is done.
            tx.rollback().await?;
            return Ok(());
        }
        if let Some((aggregate, sequence)) = ordered {
            if let Order::Wait(why) = self.order(&mut tx, envelope, aggregate, sequence).await? {
                tx.rollback().await?;
                self.note_deferral(envelope, aggregate, sequence).await;
                return Err(HandlerError::deferred(why));
            }
        }
        let applied = {
            let mut cx = HandlerContext {
                tx: &mut tx,
                envelope,
                consumer: &self.name,
            };
            std::panic::AssertUnwindSafe(self.handler.handle(&mut cx, message))
                .catch_unwind()
                .await
        };
        let applied = match applied {
            Ok(result) => result,
            Err(_) => Err(HandlerError::permanent("handler panicked")),
        };
        match applied {
            Ok(()) => {
                if ordered.is_some() {
                    self.release(&mut tx, envelope).await?;
                }
                tx.commit().await?;
                // The effect is committed whatever the hook does: a panic in it is logged,
                // and neither fails the message nor stops the consumer.
                let hook = std::panic::AssertUnwindSafe(|| self.handler.committed());
                if std::panic::catch_unwind(hook).is_err() {
                    tracing::error!(consumer = %self.name, "the after-commit hook panicked");
                }
                // Whatever the handler enqueued goes out now, not at the relay's next poll.
                self.db.outbox_committed();
                Ok(())
            }
            Err(err) => {
                drop(tx);
                if let Some((aggregate, sequence)) = ordered {
                    if err.kind != crate::bus::FailureKind::Deferred {
                        self.block(envelope, aggregate, sequence).await;
                    }
                }
                Err(err)
            }
        }
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
