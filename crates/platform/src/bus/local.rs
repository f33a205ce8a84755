//! The embedded bus: in-process delivery, durable queues in one SQLite file.
//!
//! It mirrors the broker's model so behaviour does not change between deployments:
//! bindings (`queue`, `event_type`) decide which queues a published envelope is copied to;
//! publishing is one transaction (that commit is the "confirm"); each consumer claims its
//! next message with a lease, deletes it when the handler succeeds, and on failure
//! schedules it again after a backoff, or marks it dead after the last attempt.
//! Consumers are woken in-process when something is published, and also poll, so messages
//! left by a previous run are picked up after a restart.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use async_trait::async_trait;
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    SqlitePool,
};
use tokio::sync::{Mutex, Notify};

use super::{deliver, Bus, BusError, Handler, Outcome, Subscription};
use crate::{clock, events::Envelope, shutdown::Shutdown};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bus_bindings (
    queue      TEXT NOT NULL,
    event_type TEXT NOT NULL,
    PRIMARY KEY (queue, event_type)
);
CREATE TABLE IF NOT EXISTS bus_messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    envelope     TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    locked_until INTEGER,
    dead         INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS bus_messages_next ON bus_messages (queue, dead, available_at, seq);
";

/// How long a consumer's claim on a message lasts before another run may take it again.
const CLAIM_LEASE: Duration = Duration::from_secs(300);
const IDLE_POLL: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct LocalBus {
    pool: SqlitePool,
    wakers: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl LocalBus {
    /// Opens (creating) the bus file.
    pub async fn open(path: &Path) -> Result<Self, BusError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            pool,
            wakers: Arc::default(),
        })
    }

    async fn waker(&self, queue: &str) -> Arc<Notify> {
        self.wakers
            .lock()
            .await
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    /// Claims the next deliverable message of `queue`.
    async fn claim(&self, queue: &str) -> Result<Option<(i64, String, i64)>, sqlx::Error> {
        let now = clock::now_micros();
        sqlx::query_as(
            "UPDATE bus_messages SET locked_until = $1, attempts = attempts + 1 \
             WHERE seq = (SELECT seq FROM bus_messages \
                          WHERE queue = $2 AND dead = 0 AND available_at <= $3 \
                            AND (locked_until IS NULL OR locked_until < $3) \
                          ORDER BY seq LIMIT 1) \
             RETURNING seq, envelope, attempts",
        )
        .bind(now + CLAIM_LEASE.as_micros() as i64)
        .bind(queue)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
    }

    async fn consume(
        self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
    ) {
        let queue = subscription.consumer.clone();
        let waker = self.waker(&queue).await;
        while !shutdown.is_triggered() {
            let claimed = match self.claim(&queue).await {
                Ok(c) => c,
                Err(err) => {
                    tracing::warn!(consumer = %queue, error = %err, "local bus claim failed");
                    None
                }
            };
            let Some((seq, json, attempts)) = claimed else {
                tokio::select! {
                    _ = waker.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.wait() => {}
                }
                continue;
            };
            let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
            let outcome = deliver(handler.as_ref(), &queue, json.as_bytes(), attempts).await;
            if let Err(err) = self.settle(&subscription, seq, attempts, outcome).await {
                tracing::warn!(consumer = %queue, error = %err, "local bus settle failed");
            }
        }
    }

    async fn settle(
        &self,
        subscription: &Subscription,
        seq: i64,
        attempts: u32,
        outcome: Outcome,
    ) -> Result<(), sqlx::Error> {
        let consumer = subscription.consumer.as_str();
        match outcome {
            Outcome::Applied => {
                sqlx::query("DELETE FROM bus_messages WHERE seq = $1")
                    .bind(seq)
                    .execute(&self.pool)
                    .await?;
                metrics::counter!("bus_consumed_total", "consumer" => consumer.to_owned())
                    .increment(1);
            }
            Outcome::Poison(error) => self.bury(consumer, seq, attempts, error).await?,
            Outcome::Failed(error) if attempts >= subscription.retry.max_attempts => {
                self.bury(consumer, seq, attempts, error).await?
            }
            Outcome::Failed(error) => {
                let wait = subscription.retry.backoff(attempts);
                tracing::warn!(consumer, attempts, %error, ?wait, "event handler failed; will retry");
                metrics::counter!("bus_retried_total", "consumer" => consumer.to_owned())
                    .increment(1);
                sqlx::query(
                    "UPDATE bus_messages SET available_at = $1, locked_until = NULL, last_error = $2 \
                     WHERE seq = $3",
                )
                .bind(clock::now_micros() + wait.as_micros() as i64)
                .bind(error)
                .bind(seq)
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Moves a message to the consumer's dead letters.
    async fn bury(
        &self,
        consumer: &str,
        seq: i64,
        attempts: u32,
        error: String,
    ) -> Result<(), sqlx::Error> {
        tracing::error!(consumer, attempts, %error, "event dead-lettered");
        metrics::counter!("bus_dead_lettered_total", "consumer" => consumer.to_owned())
            .increment(1);
        sqlx::query(
            "UPDATE bus_messages SET dead = 1, locked_until = NULL, last_error = $1 WHERE seq = $2",
        )
        .bind(error)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn count(&self, consumer: &str, dead: bool) -> Result<u64, BusError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM bus_messages WHERE queue = $1 AND dead = $2")
                .bind(consumer)
                .bind(i64::from(dead))
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(n as u64)
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        let json = String::from_utf8_lossy(&envelope.to_json()).into_owned();
        let queues: Vec<String> = sqlx::query_scalar(
            "INSERT INTO bus_messages (queue, event_id, envelope, available_at) \
             SELECT queue, $1, $2, $3 FROM bus_bindings WHERE event_type = $4 \
             RETURNING queue",
        )
        .bind(envelope.id.to_string())
        .bind(json)
        .bind(clock::now_micros())
        .bind(&envelope.event_type)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| BusError::NotConfirmed(e.to_string()))?;
        let wakers = self.wakers.lock().await;
        for queue in queues {
            if let Some(w) = wakers.get(&queue) {
                w.notify_one();
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        for event_type in &subscription.event_types {
            sqlx::query(
                "INSERT INTO bus_bindings (queue, event_type) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&subscription.consumer)
            .bind(event_type)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        }
        let bus = self.clone();
        Ok(tokio::spawn(bus.consume(subscription, handler, shutdown)))
    }

    async fn pending(&self, consumer: &str) -> Result<u64, BusError> {
        self.count(consumer, false).await
    }

    async fn dead_lettered(&self, consumer: &str) -> Result<u64, BusError> {
        self.count(consumer, true).await
    }

    async fn ping(&self) -> Result<(), BusError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}
