//! The transactional outbox and its relay.
//!
//! A service calls [`enqueue`] inside the transaction that changes its state, so the event
//! exists if and only if the change committed. The [`Relay`] publishes unsent rows and
//! marks a row sent only after the bus confirmed it. A relay that dies between publishing
//! and marking leaves the row unsent; once its lease expires the row is published again,
//! and the consumers' inbox makes that second delivery harmless.
//!
//! Rows are claimed with a short lease (`claimed_until`) in one portable `UPDATE …
//! RETURNING`, so several relays (replicas) never publish the same row at once and no
//! transaction is held open while talking to the broker.

use std::{sync::Arc, time::Duration};

use sqlx::AnyConnection;

use crate::{bus::Bus, clock, db::Db, events::Envelope, shutdown::Shutdown};

/// Writes `envelope` to the outbox of the service whose transaction `conn` is.
pub async fn enqueue(conn: &mut AnyConnection, envelope: &Envelope) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (id, event_type, envelope, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(envelope.id.to_string())
    .bind(&envelope.event_type)
    .bind(String::from_utf8_lossy(&envelope.to_json()).into_owned())
    .bind(clock::to_micros(envelope.occurred_at))
    .execute(conn)
    .await?;
    Ok(())
}

/// Unsent events waiting in a service's outbox (the `outbox_backlog` gauge).
pub async fn backlog(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(db.pool())
        .await
}

#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Rows claimed per round.
    pub batch: i64,
    /// How long a claim keeps other relays off a row; after it, a crashed relay's rows are
    /// published again.
    pub lease: Duration,
    /// Poll interval when no commit signalled new rows.
    pub idle_poll: Duration,
    /// How long sent rows are kept for inspection before they are deleted.
    pub retention: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 100,
            lease: Duration::from_secs(10),
            idle_poll: Duration::from_millis(500),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Publishes one service's outbox to the bus.
pub struct Relay {
    db: Db,
    bus: Arc<dyn Bus>,
    config: RelayConfig,
}

impl Relay {
    pub fn new(db: Db, bus: Arc<dyn Bus>, config: RelayConfig) -> Self {
        Self { db, bus, config }
    }

    /// Claims up to one batch of unsent rows and publishes them; returns how many were
    /// published and marked sent. A failed publish stops the round: the failed row and the
    /// rest of the batch stay unsent and are retried when their lease expires.
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
        let now = clock::now_micros();
        let lease_until = now + self.config.lease.as_micros() as i64;
        // The claim condition is repeated outside the sub-select so that, on PostgreSQL,
        // a row another relay claimed while we waited for its lock is re-checked and skipped.
        let claimed: Vec<(String, String)> = sqlx::query_as(
            "UPDATE outbox SET claimed_until = $1 \
             WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL \
                            AND (claimed_until IS NULL OR claimed_until < $2) \
                          ORDER BY id LIMIT $3) \
               AND sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < $2) \
             RETURNING id, envelope",
        )
        .bind(lease_until)
        .bind(now)
        .bind(self.config.batch)
        .fetch_all(self.db.pool())
        .await?;
        let mut claimed = claimed;
        claimed.sort(); // RETURNING order is unspecified; publish oldest first.

        let mut published = 0;
        for (id, json) in claimed {
            let envelope = match Envelope::from_json(json.as_bytes()) {
                Ok(e) => e,
                Err(err) => {
                    // Only this code writes the outbox, so this is a bug: keep the row, say so.
                    tracing::error!(outbox_id = %id, error = %err, "unreadable outbox row left unsent");
                    continue;
                }
            };
            self.bus.publish(&envelope).await?;
            sqlx::query("UPDATE outbox SET sent_at = $1, claimed_until = NULL WHERE id = $2")
                .bind(clock::now_micros())
                .bind(&id)
                .execute(self.db.pool())
                .await?;
            metrics::counter!("outbox_published_total", "service" => self.db.service())
                .increment(1);
            published += 1;
        }
        Ok(published)
    }

    /// Deletes sent rows older than the retention period.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let cutoff = clock::now_micros() - self.config.retention.as_micros() as i64;
        let done = sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
            .bind(cutoff)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Relays until shutdown, then publishes what is left once more before returning
    /// (the "flush the outbox" step of graceful shutdown).
    pub async fn run(self, shutdown: Shutdown) {
        let signal = self.db.outbox_signal();
        let service = self.db.service();
        let mut failures: u32 = 0;
        let mut rounds: u64 = 0;
        loop {
            if shutdown.is_triggered() {
                break;
            }
            let wait = match self.relay_once().await {
                Ok(n) if n as i64 == self.config.batch => Duration::ZERO,
                Ok(_) => {
                    failures = 0;
                    self.config.idle_poll
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(7)));
                    tracing::warn!(service, error = %err, ?backoff, "outbox relay round failed");
                    backoff
                }
            };
            rounds += 1;
            if rounds.is_multiple_of(1000) {
                if let Err(err) = self.prune().await {
                    tracing::warn!(service, error = %err, "outbox prune failed");
                }
            }
            if !wait.is_zero() {
                tokio::select! {
                    _ = signal.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait() => {}
                }
            }
        }
        match self.relay_once().await {
            Ok(n) => tracing::info!(service, flushed = n, "outbox relay stopped"),
            Err(err) => tracing::warn!(service, error = %err, "outbox flush at shutdown failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bus::local::LocalBus, db::DatabaseTarget};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Noted {}
    impl crate::events::Event for Noted {
        const TYPE: &'static str = "test.Noted";
        const VERSION: u32 = 1;
    }

    #[tokio::test]
    async fn published_rows_are_marked_sent_and_pruned_after_retention() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&DatabaseTarget::SqliteDir(dir.path().to_owned()), "pruned")
            .await
            .unwrap();
        db.migrate(&sqlx::migrate::Migrator::DEFAULT).await.unwrap();
        let bus = Arc::new(LocalBus::open(&dir.path().join("bus.db")).await.unwrap());
        let mut conn = db.pool().acquire().await.unwrap();
        for _ in 0..3 {
            enqueue(&mut conn, &Envelope::new(&Noted {})).await.unwrap();
        }
        drop(conn);
        let relay = Relay::new(
            db.clone(),
            bus,
            RelayConfig {
                batch: 2,
                retention: Duration::ZERO,
                ..RelayConfig::default()
            },
        );
        assert_eq!(backlog(&db).await.unwrap(), 3);
        assert_eq!(relay.relay_once().await.unwrap(), 2, "one batch at a time");
        assert_eq!(relay.relay_once().await.unwrap(), 1);
        assert_eq!(relay.relay_once().await.unwrap(), 0);
        assert_eq!(backlog(&db).await.unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(relay.prune().await.unwrap(), 3);
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}
