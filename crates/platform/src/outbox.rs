//! The transactional outbox and its relay.
//!
//! A service calls [`enqueue`] (an event) or [`send_command`] (a command for one consumer)
//! with the transaction that changes its state, so the message exists if and only if the
//! change committed. An event of an aggregate gets the aggregate's next `sequence` from
//! `outbox_sequences` in that same transaction. The [`Relay`] publishes unsent rows in
//! insertion order (`position`) and marks them sent only after the bus confirmed them.
//!
//! The one thing to know: **one relay per service outbox is active at a time** (a
//! [`Lease`] by the database clock, renewed before every wave of publishes and while a
//! wave waits for its confirms, and checked by token in the statement that marks rows
//! sent), and it keeps **at most one unconfirmed
//! message per aggregate in flight**: a batch is published in waves, the n-th event of each
//! aggregate in wave n, each wave pipelined (all confirms awaited together). A failed
//! publish ends the round; nothing after it is marked sent, so the next round starts with
//! it and no later event of its aggregate can overtake it. A row that the bus keeps
//! refusing (or that cannot be read) is parked after `max_publish_attempts` (at once if
//! unreadable): counted in `outbox_parked_total`, listed and redriven by the operations
//! commands, no longer holding back the rows behind it. Sent rows are kept for
//! `retention` (default 7 days) so a consumer can be fed history ([`crate::events_ops`]).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::{Any, Transaction};

use crate::{
    bus::{Bus, BusError, Outgoing},
    clock,
    db::{Backend, Db},
    events::Envelope,
    lease::Lease,
    shutdown::Shutdown,
};

/// Writes the event `envelope` to the outbox of the service whose transaction `tx` is.
/// Only a transaction is accepted: an event must commit with the change it describes.
pub async fn enqueue(
    tx: &mut Transaction<'_, Any>,
    envelope: &Envelope,
) -> Result<(), sqlx::Error> {
    insert(tx, envelope, None).await
}

/// Writes a command for the consumer `destination` (`<service>.<name>`) to the outbox; the
/// relay sends it to that consumer's queue only.
pub async fn send_command(
    tx: &mut Transaction<'_, Any>,
    destination: &str,
    envelope: &Envelope,
) -> Result<(), sqlx::Error> {
    insert(tx, envelope, Some(destination)).await
}

async fn insert(
    tx: &mut Transaction<'_, Any>,
    envelope: &Envelope,
    destination: Option<&str>,
) -> Result<(), sqlx::Error> {
    if let (Some(aggregate), None) = (&envelope.aggregate, envelope.sequence) {
        return insert_sequenced(tx, envelope, aggregate, destination).await;
    }
    sqlx::query(
        "INSERT INTO outbox (id, event_type, destination, aggregate, sequence, envelope, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(envelope.id.to_string())
    .bind(&envelope.event_type)
    .bind(destination)
    .bind(&envelope.aggregate)
    .bind(envelope.sequence)
    .bind(String::from_utf8_lossy(&envelope.to_json()).into_owned())
    .bind(clock::to_micros(envelope.occurred_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An event of an aggregate, written with the next value of the aggregate's counter, in
/// one round trip: the counter's value goes into the row and into the stored envelope. The
/// counter row stays locked until commit, so two transactions writing events of one
/// aggregate are ordered, and their positions follow their sequences.
/// On SQLite a [`crate::db::script`] of two statements (`json_set`); on PostgreSQL one
/// statement whose counter update is a data-modifying CTE, the value appended as the
/// envelope's last member (the envelope has none, so the object stays valid JSON).
async fn insert_sequenced(
    tx: &mut Transaction<'_, Any>,
    envelope: &Envelope,
    aggregate: &str,
    destination: Option<&str>,
) -> Result<(), sqlx::Error> {
    const BUMP: &str = "INSERT INTO outbox_sequences (aggregate, last) VALUES ($4, 1) \
         ON CONFLICT (aggregate) DO UPDATE SET last = outbox_sequences.last + 1";
    const COLUMNS: &str =
        "INSERT INTO outbox (id, event_type, destination, aggregate, sequence, envelope, created_at)";
    let sqlite = crate::db::backend_of(tx) == Backend::Sqlite;
    let sql = if sqlite {
        format!(
            "{BUMP}; {COLUMNS} SELECT $1, $2, $3, $4, s.last, \
             json_set($5, '$.sequence', s.last), $6 \
             FROM outbox_sequences AS s WHERE s.aggregate = $4"
        )
    } else {
        format!(
            "WITH s AS ({BUMP} RETURNING last) {COLUMNS} SELECT $1, $2, $3, $4, s.last, \
             left($5, -1) || ',\"sequence\":' || s.last || '}}', $6 FROM s"
        )
    };
    let json = String::from_utf8_lossy(&envelope.to_json()).into_owned();
    debug_assert!(json.ends_with('}'), "an envelope is a JSON object");
    let query = sqlx::query(&sql)
        .bind(envelope.id.to_string())
        .bind(&envelope.event_type)
        .bind(destination)
        .bind(aggregate)
        .bind(json)
        .bind(clock::to_micros(envelope.occurred_at));
    let written = if sqlite {
        crate::db::script(tx, query)
            .await?
            .get(1)
            .map_or(0, |step| step.rows_affected)
    } else {
        query.execute(&mut **tx).await?.rows_affected()
    };
    if written != 1 {
        return Err(sqlx::Error::Protocol(
            "the outbox row of a sequenced event was not written".into(),
        ));
    }
    Ok(())
}

/// Unsent, unparked messages waiting in a service's outbox (the `outbox_backlog` gauge).
pub async fn backlog(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL")
        .fetch_one(db.pool())
        .await
}

/// A row moved aside by the relay.
#[derive(Clone, Debug)]
pub struct ParkedRow {
    pub id: String,
    pub event_type: String,
    pub destination: Option<String>,
    pub attempts: i64,
    pub parked_at: time::OffsetDateTime,
    pub last_error: Option<String>,
}

/// Parked rows, oldest first.
pub async fn parked(db: &Db, limit: i64) -> Result<Vec<ParkedRow>, sqlx::Error> {
    type Row = (String, String, Option<String>, i64, i64, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, event_type, destination, CAST(attempts AS BIGINT), parked_at, last_error \
         FROM outbox WHERE parked_at IS NOT NULL ORDER BY position LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, event_type, destination, attempts, parked_at, last_error)| ParkedRow {
                id,
                event_type,
                destination,
                attempts,
                parked_at: clock::from_micros(parked_at),
                last_error,
            },
        )
        .collect())
}

/// Gives parked rows (one by id, or all) back to the relay with fresh attempts.
pub async fn unpark(db: &Db, id: Option<&str>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE outbox SET parked_at = NULL, attempts = 0 \
         WHERE parked_at IS NOT NULL AND ($1 IS NULL OR id = $1)",
    )
    .bind(id)
    .execute(db.writer())
    .await?;
    db.outbox_committed();
    Ok(done.rows_affected())
}

/// Sent events (not commands) from `since` on, in publication order: what a consumer
/// replay feeds. Bounded by `limit` per call; `after` is the last position returned.
pub async fn sent_since(
    db: &Db,
    since: time::OffsetDateTime,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position, envelope FROM outbox \
         WHERE sent_at IS NOT NULL AND destination IS NULL AND created_at >= $1 AND position > $2 \
         ORDER BY position LIMIT $3",
    )
    .bind(clock::to_micros(since))
    .bind(after)
    .bind(limit)
    .fetch_all(db.pool())
    .await
}

#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Rows read per round.
    pub batch: i64,
    /// The relay's leader lease; renewed before every wave, so it must outlast one wave
    /// (the bus's publish timeout). A crashed relay's successor waits at most this long.
    pub lease: Duration,
    /// Poll interval when no commit signalled new rows.
    pub idle_poll: Duration,
    /// How long sent rows are kept (for replay) before they are deleted.
    pub retention: Duration,
    /// Refusals by the bus after which a row is parked.
    pub max_publish_attempts: u32,
    /// At shutdown, how long to keep flushing before giving up (the rest waits for the
    /// next start).
    pub shutdown_grace: Duration,
    /// How often sent rows past retention are pruned.
    pub prune_every: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 500,
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_millis(500),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_publish_attempts: 10,
            shutdown_grace: Duration::from_secs(10),
            prune_every: Duration::from_secs(600),
        }
    }
}

/// Why a round ended early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("publishing {id} failed: {source}")]
    Publish { id: String, source: BusError },
    #[error("the relay lost its lease to another replica")]
    LostLease,
}

/// What a flush achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flushed {
    pub published: usize,
    /// Rows still unsent (and not parked) when the flush ended.
    pub remaining: i64,
}

/// Publishes one service's outbox to the bus.
pub struct Relay {
    db: Db,
    bus: Arc<dyn Bus>,
    config: RelayConfig,
    lease: tokio::sync::Mutex<Lease>,
}

struct Row {
    position: i64,
    id: String,
    message: Outgoing,
}

impl Relay {
    pub fn new(db: Db, bus: Arc<dyn Bus>, config: RelayConfig) -> Self {
        let lease = Lease::new(db.clone(), "outbox_relay");
        Self {
            db,
            bus,
            config,
            lease: tokio::sync::Mutex::new(lease),
        }
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// One round: takes (or renews) the lease, reads a batch in position order and
    /// publishes it wave by wave; returns how many rows were published and marked sent
    /// (0 when another replica holds the lease). A failed publish ends the round with an
    /// error after marking what was confirmed before it.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let mut lease = self.lease.lock().await;
        if !lease.acquire(self.config.lease).await? {
            return Ok(0);
        }
        let rows: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT position, id, envelope, destination FROM outbox \
             WHERE sent_at IS NULL AND parked_at IS NULL ORDER BY position LIMIT $1",
        )
        .bind(self.config.batch)
        .fetch_all(self.db.pool())
        .await?;

        let mut batch = Vec::with_capacity(rows.len());
        for (position, id, json, destination) in rows {
            match Envelope::from_json(json.as_bytes()) {
                Ok(envelope) => batch.push(Row {
                    position,
                    id,
                    message: Outgoing {
                        envelope,
                        destination,
                    },
                }),
                // Only this code writes the outbox, so this is a bug or a hand edit; it will
                // never read better on a later round, so it is moved aside at once.
                Err(err) => {
                    self.park(
                        &lease,
                        position,
                        &id,
                        &format!("unreadable envelope: {err}"),
                    )
                    .await?;
                }
            }
        }

        // Wave n holds the n-th row of each aggregate; rows without an aggregate are not
        // ordered and all go in the first wave.
        let mut waves: Vec<Vec<&Row>> = Vec::new();
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for row in &batch {
            let wave = match row.message.envelope.aggregate.as_deref() {
                Some(aggregate) => {
                    let n = seen.entry(aggregate).or_insert(0);
                    *n += 1;
                    *n - 1
                }
                None => 0,
            };
            if waves.len() <= wave {
                waves.resize_with(wave + 1, Vec::new);
            }
            waves[wave].push(row);
        }

        let mut confirmed: Vec<i64> = Vec::new();
        let mut first_failure: Option<(i64, String, BusError)> = None;
        for wave in &waves {
            if !lease.acquire(self.config.lease).await? {
                break;
            }
            let messages: Vec<Outgoing> = wave.iter().map(|r| r.message.clone()).collect();
            // A slow confirm must not let the lease lapse: it is renewed while we wait, so
            // another replica takes over only from a relay that stopped making progress.
            let publish = self.bus.publish_batch(&messages);
            tokio::pin!(publish);
            let renew_every = (self.config.lease / 3).max(Duration::from_millis(10));
            let results = loop {
                tokio::select! {
                    results = &mut publish => break results,
                    _ = tokio::time::sleep(renew_every) => {
                        if let Err(err) = lease.acquire(self.config.lease).await {
                            tracing::warn!(service = self.db.service(), error = %err, "renewing the relay lease failed");
                        }
                    }
                }
            };
            for (row, result) in wave.iter().zip(results) {
                match result {
                    Ok(()) => confirmed.push(row.position),
                    Err(err) => {
                        self.note_failure(&lease, row, &err).await?;
                        if first_failure
                            .as_ref()
                            .is_none_or(|(position, _, _)| row.position < *position)
                        {
                            first_failure = Some((row.position, row.id.clone(), err));
                        }
                    }
                }
            }
            if first_failure.is_some() {
                break;
            }
        }

        // Nothing after the first failure is marked sent: the next round starts with it.
        if let Some((failed_at, _, _)) = &first_failure {
            confirmed.retain(|p| p < failed_at);
        }
        let published = self.mark_sent(&lease, &confirmed).await?;
        if published < confirmed.len() {
            lease.lost();
            return Err(RelayError::LostLease);
        }
        metrics::counter!("outbox_published_total", "service" => self.db.service())
            .increment(published as u64);
        match first_failure {
            Some((_, id, source)) => Err(RelayError::Publish { id, source }),
            None => Ok(published),
        }
    }

    /// Marks rows sent, only while this relay still holds its lease.
    async fn mark_sent(&self, lease: &Lease, positions: &[i64]) -> Result<usize, sqlx::Error> {
        let Some(token) = lease.token() else {
            return Ok(0);
        };
        if positions.is_empty() {
            return Ok(0);
        }
        let mut marked = 0;
        let mut tx = self.db.begin_unsynced().await?;
        for chunk in positions.chunks(500) {
            let list = chunk
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let done = sqlx::query(&format!(
                "UPDATE outbox SET sent_at = {now} WHERE position IN ({list}) AND sent_at IS NULL \
                 AND {holds}",
                now = self.db.now_sql(),
                holds = lease.holds(1)
            ))
            .bind(token)
            .execute(&mut *tx)
            .await?;
            marked += done.rows_affected() as usize;
        }
        tx.commit().await?;
        Ok(marked)
    }

    /// Counts a failed publish against the row if it was the message's own failure, and
    /// parks the row once it has used its attempts.
    async fn note_failure(
        &self,
        lease: &Lease,
        row: &Row,
        err: &BusError,
    ) -> Result<(), sqlx::Error> {
        tracing::warn!(service = self.db.service(), outbox_id = %row.id, error = %err, "outbox publish failed");
        if !err.is_message_specific() {
            return Ok(());
        }
        let attempts: Option<i64> = sqlx::query_scalar(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1 WHERE position = $2 \
             RETURNING CAST(attempts AS BIGINT)",
        )
        .bind(err.to_string())
        .bind(row.position)
        .fetch_optional(self.db.pool())
        .await?;
        if attempts.unwrap_or(0) >= i64::from(self.config.max_publish_attempts) {
            self.park(lease, row.position, &row.id, &err.to_string())
                .await?;
        }
        Ok(())
    }

    async fn park(
        &self,
        lease: &Lease,
        position: i64,
        id: &str,
        why: &str,
    ) -> Result<(), sqlx::Error> {
        let Some(token) = lease.token() else {
            return Ok(());
        };
        sqlx::query(&format!(
            "UPDATE outbox SET parked_at = {now}, last_error = $1 WHERE position = $2 AND {holds}",
            now = self.db.now_sql(),
            holds = lease.holds(3)
        ))
        .bind(why)
        .bind(position)
        .bind(token)
        .execute(self.db.writer())
        .await?;
        tracing::error!(service = self.db.service(), outbox_id = %id, why, "outbox row parked; `rendermart events outbox redrive` puts it back");
        metrics::counter!("outbox_parked_total", "service" => self.db.service()).increment(1);
        Ok(())
    }

    /// Publishes until the outbox is empty (parked rows aside) or `deadline` passes: the
    /// last step of a graceful shutdown, after in-flight requests have committed.
    pub async fn flush(&self, deadline: Instant) -> Flushed {
        let mut published = 0;
        let mut pause = Duration::from_millis(20);
        loop {
            let round = tokio::time::timeout_at(deadline.into(), self.relay_once()).await;
            match round {
                Err(_) => break,
                Ok(Ok(n)) if n > 0 => {
                    published += n;
                    continue;
                }
                Ok(Ok(_)) => {
                    // Another replica holds the lease: it publishes what is left.
                    if self.lease.lock().await.token().is_none() {
                        break;
                    }
                    if let Ok(0) = backlog(&self.db).await {
                        break;
                    }
                }
                Ok(Err(err)) => {
                    tracing::warn!(service = self.db.service(), error = %err, "outbox flush round failed")
                }
            }
            if Instant::now() + pause >= deadline {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        let remaining = backlog(&self.db).await.unwrap_or(-1);
        Flushed {
            published,
            remaining,
        }
    }

    /// Deletes sent rows older than the retention period.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let cutoff = clock::now_micros()
            - i64::try_from(self.config.retention.as_micros()).unwrap_or(i64::MAX / 4);
        let done = sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
            .bind(cutoff)
            .execute(self.db.writer())
            .await?;
        Ok(done.rows_affected())
    }

    /// Relays until `shutdown`, then flushes until the outbox is empty or
    /// `shutdown_grace` has passed, and gives the lease up. Trigger `shutdown` only once
    /// the process has stopped committing (after in-flight requests and consumers).
    pub async fn run(self, shutdown: Shutdown) {
        let signal = self.db.outbox_signal();
        let service = self.db.service();
        let mut failures: u32 = 0;
        let mut last_prune = Instant::now();
        loop {
            if shutdown.is_triggered() {
                break;
            }
            let wait = match self.relay_once().await {
                Ok(n) if n as i64 == self.config.batch => {
                    failures = 0;
                    Duration::ZERO
                }
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
            if last_prune.elapsed() >= self.config.prune_every {
                last_prune = Instant::now();
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
        let flushed = self
            .flush(Instant::now() + self.config.shutdown_grace)
            .await;
        if let Err(err) = self.lease.lock().await.release().await {
            tracing::debug!(service, error = %err, "releasing the relay lease failed");
        }
        tracing::info!(
            service,
            flushed = flushed.published,
            remaining = flushed.remaining,
            "outbox relay stopped"
        );
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
        let mut tx = db.begin().await.unwrap();
        for _ in 0..3 {
            enqueue(&mut tx, &Envelope::new(&Noted {}).with_aggregate("note", 1))
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
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
        let sequences: Vec<Option<i64>> =
            sqlx::query_scalar("SELECT sequence FROM outbox ORDER BY position")
                .fetch_all(db.pool())
                .await
                .unwrap();
        assert_eq!(sequences, vec![Some(1), Some(2), Some(3)]);
        // The envelope that is published carries the same sequence as its row.
        let envelopes: Vec<String> =
            sqlx::query_scalar("SELECT envelope FROM outbox ORDER BY position")
                .fetch_all(db.pool())
                .await
                .unwrap();
        let carried: Vec<Option<i64>> = envelopes
            .iter()
            .map(|json| Envelope::from_json(json.as_bytes()).unwrap().sequence)
            .collect();
        assert_eq!(carried, sequences);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(relay.prune().await.unwrap(), 3);
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}
