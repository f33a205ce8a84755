//! The embedded bus: in-process delivery, durable queues in one SQLite file.
//!
//! It mirrors the broker's model so behaviour does not change between deployments:
//! bindings (`queue`, topic `pattern`, matched by [`super::topic_matches`] as RabbitMQ
//! does) decide which queues a published envelope is copied to; a command goes to its one
//! queue; publishing a batch is one transaction (that commit is the "confirm"). Each queue
//! is split into lanes by aggregate; a lane is strictly first-in first-out, its head is
//! retried in place (so a retry never lets a later event of the aggregate overtake it)
//! and a message that used its attempts is marked dead (the dead-letter queue, listed
//! and redriven by the operations commands). The due messages at a lane's head (up to
//! 32) are claimed in one statement and handed to the handler as a batch
//! ([`Handler::handle_batch`]), and settled in one; the messages after a failure go back
//! uncounted, behind it (decision 68).
//!
//! The one thing to know: **claiming is an index walk** — the head of a lane is the first
//! entry of `bus_lane_head (queue, lane, dead, seq)`, whatever the backlog — and the file
//! belongs to one process (locks left by a previous run are cleared at open).
//! All writes go through one connection (writers queue fairly in the pool instead of
//! sleeping in SQLite's busy handler). Publishing commits with `synchronous = FULL` (it
//! confirms to the relay); the consuming side's writes (claims, acks, retries) use
//! `NORMAL`, which a process crash cannot lose either, and whose loss on power failure
//! means at worst a redelivery.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, RwLock},
    time::Duration,
};

use async_trait::async_trait;
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    SqlitePool,
};
use tokio::sync::Notify;

use super::{
    judge_batch, lane_of, topic_matches, Bus, BusError, DeadLetter, Handler, History, Outgoing,
    Subscription, Verdict,
};
use crate::{clock, events::Envelope, shutdown::Shutdown};

/// Schema version kept in `PRAGMA user_version`; 0 is the first (unlaned) layout.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bus_bindings (
    queue   TEXT NOT NULL,
    pattern TEXT NOT NULL,
    PRIMARY KEY (queue, pattern)
);
CREATE TABLE IF NOT EXISTS bus_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_queues (
    queue TEXT PRIMARY KEY,
    lanes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_messages (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    queue              TEXT NOT NULL,
    lane               INTEGER NOT NULL,
    event_id           TEXT NOT NULL,
    envelope           TEXT NOT NULL,
    enqueued_at        INTEGER NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    transient_failures INTEGER NOT NULL DEFAULT 0,
    first_failed_at    INTEGER,
    available_at       INTEGER NOT NULL,
    locked_until       INTEGER,
    dead               INTEGER NOT NULL DEFAULT 0,
    dead_at            INTEGER,
    last_error         TEXT
);
CREATE INDEX IF NOT EXISTS bus_lane_head ON bus_messages (queue, lane, dead, seq);
";

/// The claim: the first messages of one lane, up to `$5`, as far as they are due and not
/// locked (a message is claimed only if no earlier one of its lane is waiting or locked, so
/// a retried head holds back the whole lane). The sub-select is a seek to the first
/// `(queue, lane, 0)` entry of `bus_lane_head`, and each guard a walk of at most `$5` entries
/// of it; no sort, no scan.
const CLAIM_SQL: &str = "UPDATE bus_messages SET locked_until = $1, attempts = attempts + 1 \
     WHERE seq IN (SELECT seq FROM bus_messages WHERE queue = $2 AND lane = $3 AND dead = 0 \
                   ORDER BY seq LIMIT $5) \
       AND NOT EXISTS (SELECT 1 FROM bus_messages AS h \
                       WHERE h.queue = $2 AND h.lane = $3 AND h.dead = 0 \
                         AND h.seq <= bus_messages.seq \
                         AND (h.available_at > $4 OR h.locked_until >= $4)) \
     RETURNING seq, envelope, attempts, transient_failures, first_failed_at";

/// The most messages of a lane handed to the handler at once (decision 68).
const BATCH_MAX: usize = 32;

const HEAD_SQL: &str = "SELECT available_at FROM bus_messages \
     WHERE queue = $1 AND lane = $2 AND dead = 0 ORDER BY seq LIMIT 1";

/// How long a consumer's claim on a message lasts (a handler slower than this may see its
/// message handled twice, which the inbox absorbs).
const CLAIM_LEASE: Duration = Duration::from_secs(300);
const IDLE_POLL: Duration = Duration::from_millis(500);
const SETTLE_RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// The one writing connection: writers queue here (fairly, without SQLite's
    /// busy-wait sleeps). `synchronous = NORMAL`, switched to `FULL` around a publish.
    writer: SqlitePool,
    /// Reads (heads, counts, listings) never wait for the writer in WAL mode.
    reader: SqlitePool,
    routes: RwLock<Routes>,
    /// One waker per lane of each queue.
    wakers: RwLock<HashMap<String, Vec<Arc<Notify>>>>,
    /// Held by publishing and subscribing, so no message is given a lane from a lane count
    /// that a concurrent subscription is changing.
    topology: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Routes {
    /// `bus_meta.bindings` when these were read: another process (or another instance in
    /// this one) that subscribes bumps it, and the next publish reloads.
    version: i64,
    bindings: Vec<(String, String)>,
    lanes: HashMap<String, usize>,
}

const BINDINGS_VERSION_SQL: &str =
    "SELECT COALESCE((SELECT value FROM bus_meta WHERE key = 'bindings'), 0)";

async fn load_routes(conn: &mut sqlx::SqliteConnection) -> Result<Routes, sqlx::Error> {
    let version: i64 = sqlx::query_scalar(BINDINGS_VERSION_SQL)
        .fetch_one(&mut *conn)
        .await?;
    let bindings: Vec<(String, String)> = sqlx::query_as("SELECT queue, pattern FROM bus_bindings")
        .fetch_all(&mut *conn)
        .await?;
    let lanes: Vec<(String, i64)> = sqlx::query_as("SELECT queue, lanes FROM bus_queues")
        .fetch_all(&mut *conn)
        .await?;
    Ok(Routes {
        version,
        bindings,
        lanes: lanes
            .into_iter()
            .map(|(q, n)| (q, usize::try_from(n).unwrap_or(1).max(1)))
            .collect(),
    })
}

impl Routes {
    fn queues_for(&self, event_type: &str) -> Vec<(String, usize)> {
        let mut queues: Vec<(String, usize)> = Vec::new();
        for (queue, pattern) in &self.bindings {
            if topic_matches(pattern, event_type) && !queues.iter().any(|(q, _)| q == queue) {
                let lanes = self.lanes.get(queue).copied().unwrap_or(1);
                queues.push((queue.clone(), lanes));
            }
        }
        queues
    }
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 4)
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
            .busy_timeout(Duration::from_secs(10))
            // A deep backlog's lane heads and index paths stay in memory.
            .pragma("cache_size", "-32000");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone().synchronous(SqliteSynchronous::Normal))
            .await
            .map_err(unavailable)?;
        upgrade_schema(&writer).await.map_err(unavailable)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.synchronous(SqliteSynchronous::Normal))
            .await
            .map_err(unavailable)?;
        // The file belongs to this process: claims of a previous run are void.
        sqlx::query("UPDATE bus_messages SET locked_until = NULL WHERE locked_until IS NOT NULL")
            .execute(&writer)
            .await
            .map_err(unavailable)?;
        let mut conn = reader.acquire().await.map_err(unavailable)?;
        let routes = load_routes(&mut conn).await.map_err(unavailable)?;
        drop(conn);
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                reader,
                routes: RwLock::new(routes),
                wakers: RwLock::default(),
                topology: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn wake(&self, queue: &str, lane: usize) {
        let wakers = self.inner.wakers.read().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = wakers.get(queue).and_then(|lanes| lanes.get(lane)) {
            w.notify_one();
        }
    }

    fn lane_wakers(&self, queue: &str, lanes: usize) -> Vec<Arc<Notify>> {
        let mut wakers = self.inner.wakers.write().unwrap_or_else(|e| e.into_inner());
        let entry = wakers.entry(queue.to_owned()).or_default();
        if entry.len() != lanes {
            *entry = (0..lanes).map(|_| Arc::new(Notify::new())).collect();
        }
        entry.clone()
    }

    /// Reloads bindings and lane counts if a subscription anywhere changed them.
    async fn refresh_routes(&self) -> Result<(), sqlx::Error> {
        let version: i64 = sqlx::query_scalar(BINDINGS_VERSION_SQL)
            .fetch_one(&self.inner.reader)
            .await?;
        let current = self
            .inner
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .version;
        if version != current {
            let mut conn = self.inner.reader.acquire().await?;
            let routes = load_routes(&mut conn).await?;
            *self.inner.routes.write().unwrap_or_else(|e| e.into_inner()) = routes;
        }
        Ok(())
    }

    /// Inserts a batch's rows (and declares command queues) in one transaction that
    /// reaches the disk (the commit is the relay's confirm), as one script: one round trip
    /// to the writer's thread, however many rows (decision 69). The writer is left
    /// synchronous = NORMAL, out of any transaction, whatever happened; if that cannot be
    /// made sure, the connection is dropped.
    async fn insert_batch(
        &self,
        mut conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
        declared: &[String],
        rows: &[(String, usize, &Envelope)],
        now: i64,
    ) -> Result<Vec<(String, usize)>, sqlx::Error> {
        // $1 is the time; then a queue and its lane count per declared queue, then four
        // arguments per message row.
        let mut sql = String::from("PRAGMA synchronous = FULL; BEGIN IMMEDIATE; ");
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        for _ in declared {
            let (queue, lanes) = (next(), next());
            sql.push_str(&format!(
                "INSERT INTO bus_queues (queue, lanes) VALUES (${queue}, ${lanes}) \
                 ON CONFLICT DO NOTHING; "
            ));
        }
        if !declared.is_empty() {
            sql.push_str(
                "INSERT INTO bus_meta (key, value) VALUES ('bindings', 1) \
                 ON CONFLICT (key) DO UPDATE SET value = bus_meta.value + 1; ",
            );
        }
        // SQLite takes at most 32,766 arguments in one statement.
        for chunk in rows.chunks(1000) {
            sql.push_str(
                "INSERT INTO bus_messages (queue, lane, event_id, envelope, enqueued_at, \
                 available_at) VALUES ",
            );
            for (i, _) in chunk.iter().enumerate() {
                let (queue, lane, id, envelope) = (next(), next(), next(), next());
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("(${queue}, ${lane}, ${id}, ${envelope}, $1, $1)"));
            }
            sql.push_str("; ");
        }
        sql.push_str("COMMIT; PRAGMA synchronous = NORMAL");

        let mut query = sqlx::query(&sql).bind(now);
        for queue in declared {
            query = query.bind(queue).bind(super::DEFAULT_CONCURRENCY as i64);
        }
        let mut woken = Vec::with_capacity(rows.len());
        for (queue, lanes, envelope) in rows {
            let id = envelope.id.to_string();
            let lane = lane_of(envelope.aggregate.as_deref(), &id, *lanes);
            query = query
                .bind(queue)
                .bind(lane as i64)
                .bind(id)
                .bind(String::from_utf8_lossy(&envelope.to_json()).into_owned());
            woken.push((queue.clone(), lane));
        }
        match query.execute(&mut *conn).await {
            Ok(_) => Ok(woken),
            Err(e) => {
                // It stopped somewhere in the script: end any transaction it left open (the
                // ROLLBACK fails if none was), reset the mode, and make sure, by opening
                // and closing one, that no transaction is left; else drop the connection.
                // (Had only the last statement, the mode's reset, failed, the batch did
                // commit: the relay publishes it again, and consumers' inboxes absorb the
                // copies.)
                let clean = {
                    use sqlx::Executor;
                    let c: &mut sqlx::SqliteConnection = &mut conn;
                    let _ = c.execute(sqlx::raw_sql("ROLLBACK")).await;
                    c.execute(sqlx::raw_sql("PRAGMA synchronous = NORMAL"))
                        .await
                        .is_ok()
                        && c.execute(sqlx::raw_sql("BEGIN; ROLLBACK")).await.is_ok()
                };
                if !clean {
                    conn.detach();
                }
                Err(e)
            }
        }
    }

    /// Claims the first messages of `queue`'s `lane` that are due (at most `limit`), in
    /// lane order.
    async fn claim(
        &self,
        queue: &str,
        lane: usize,
        limit: usize,
    ) -> Result<Vec<(i64, String, History)>, sqlx::Error> {
        let now = clock::now_micros();
        let mut rows: Vec<(i64, String, i64, i64, Option<i64>)> = sqlx::query_as(CLAIM_SQL)
            .bind(now + micros(CLAIM_LEASE))
            .bind(queue)
            .bind(lane as i64)
            .bind(now)
            .bind(limit as i64)
            .fetch_all(&self.inner.writer)
            .await?;
        rows.sort_unstable_by_key(|row| row.0);
        Ok(rows
            .into_iter()
            .map(|(seq, json, attempts, transient, first)| {
                let history = History {
                    // The claim counted this delivery; the history is of the ones before it.
                    failed_attempts: u32::try_from(attempts - 1).unwrap_or(0),
                    transient_failures: u32::try_from(transient).unwrap_or(0),
                    first_failed_at: first,
                };
                (seq, json, history)
            })
            .collect())
    }

    /// How long until the lane's head is due (`None`: the lane is empty).
    async fn head_due_in(&self, queue: &str, lane: usize) -> Result<Option<Duration>, sqlx::Error> {
        let due: Option<i64> = sqlx::query_scalar(HEAD_SQL)
            .bind(queue)
            .bind(lane as i64)
            .fetch_optional(&self.inner.reader)
            .await?;
        Ok(due
            .map(|at| Duration::from_micros(u64::try_from(at - clock::now_micros()).unwrap_or(0))))
    }

    async fn consume_lane(
        self,
        subscription: Arc<Subscription>,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
        lane: usize,
        waker: Arc<Notify>,
    ) {
        let queue = subscription.consumer.as_str();
        let health = subscription.health();
        // Whether the last batch was shorter than a full one and all of it was acked: then
        // the lane held nothing more that was due, and only a publish (which wakes it) or
        // another process can have added more, so the lane waits for that before claiming
        // again instead of claiming nothing and reading its head (two round trips to the
        // database per batch, decision 69).
        let mut drained = false;
        while !shutdown.is_triggered() {
            health.beat();
            if std::mem::take(&mut drained) {
                tokio::select! {
                    _ = waker.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.wait() => {}
                }
                continue;
            }
            let claimed = match self.claim(queue, lane, BATCH_MAX).await {
                Ok(c) => c,
                Err(err) => {
                    tracing::warn!(consumer = %queue, error = %err, "local bus claim failed");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                let wait = match self.head_due_in(queue, lane).await {
                    Ok(Some(due)) => due.clamp(Duration::from_millis(1), IDLE_POLL),
                    _ => IDLE_POLL,
                };
                tokio::select! {
                    _ = waker.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait() => {}
                }
                continue;
            }
            let messages: Vec<(&[u8], History)> = claimed
                .iter()
                .map(|(_, json, history)| (json.as_bytes(), *history))
                .collect();
            let verdicts = judge_batch(handler.as_ref(), &subscription, &messages).await;
            let seqs: Vec<i64> = claimed.iter().map(|(seq, _, _)| *seq).collect();
            // The handler ran; only the settling is retried if the file is busy, never the
            // handler (until shutdown, when the claims are left to the next run).
            let mut wait = Duration::from_millis(50);
            while let Err(err) = self.settle(queue, &seqs, &verdicts).await {
                tracing::warn!(consumer = %queue, error = %err, "local bus settle failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait() => return,
                }
                wait = (wait * 2).min(SETTLE_RETRY_MAX);
            }
            drained = claimed.len() < BATCH_MAX
                && verdicts.len() == claimed.len()
                && verdicts.iter().all(|v| matches!(v, Verdict::Ack));
        }
    }

    /// Settles a batch: `verdicts[i]` is the fate of `seqs[i]`; messages past the verdicts
    /// were not tried and go back as they were (their claim did not count). One
    /// transaction, so retrying it after an error settles each message once.
    async fn settle(
        &self,
        consumer: &str,
        seqs: &[i64],
        verdicts: &[Verdict],
    ) -> Result<(), sqlx::Error> {
        let acked: Vec<i64> = seqs
            .iter()
            .zip(verdicts)
            .filter(|(_, v)| matches!(v, Verdict::Ack))
            .map(|(seq, _)| *seq)
            .collect();
        let untried = &seqs[verdicts.len().min(seqs.len())..];
        let mut conn = self.inner.writer.acquire().await?;
        if acked.len() == verdicts.len() && untried.is_empty() {
            // The common case: one statement, no transaction.
            return settle_in(&mut conn, consumer, seqs, verdicts, &acked, untried).await;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        settle_in(&mut tx, consumer, seqs, verdicts, &acked, untried).await?;
        tx.commit().await
    }

    async fn count(&self, consumer: &str, dead: bool) -> Result<u64, BusError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM bus_messages WHERE queue = $1 AND dead = $2")
                .bind(consumer)
                .bind(i64::from(dead))
                .fetch_one(&self.inner.reader)
                .await
                .map_err(unavailable)?;
        Ok(n as u64)
    }

    /// Moves every waiting message of `queue` to the lane its aggregate has with `lanes`
    /// lanes (after the consumer's concurrency changed), keeping their order.
    async fn relane(&self, queue: &str, lanes: usize) -> Result<(), sqlx::Error> {
        let mut tx = self.inner.writer.begin().await?;
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, event_id, envelope FROM bus_messages WHERE queue = $1 AND dead = 0",
        )
        .bind(queue)
        .fetch_all(&mut *tx)
        .await?;
        for (seq, event_id, json) in rows {
            let aggregate = Envelope::from_json(json.as_bytes())
                .ok()
                .and_then(|e| e.aggregate);
            sqlx::query("UPDATE bus_messages SET lane = $1 WHERE seq = $2")
                .bind(lane_of(aggregate.as_deref(), &event_id, lanes) as i64)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Checkpoints and truncates the write-ahead log (benchmarks call it after filling a
    /// queue, so the fill's checkpoint is not charged to the drain).
    #[doc(hidden)]
    pub async fn checkpoint(&self) -> Result<(), BusError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.inner.writer)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// The claim's query plan, for the test that it never sorts the backlog.
    #[doc(hidden)]
    pub async fn explain_claim(&self) -> Result<Vec<String>, BusError> {
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {CLAIM_SQL}"))
                .bind(0i64)
                .bind("q")
                .bind(0i64)
                .bind(0i64)
                .bind(BATCH_MAX as i64)
                .fetch_all(&self.inner.reader)
                .await
                .map_err(unavailable)?;
        Ok(rows.into_iter().map(|r| r.3).collect())
    }
}

/// `$1, $2, … $n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`LocalBus::settle`]'s statements.
async fn settle_in(
    conn: &mut sqlx::SqliteConnection,
    consumer: &str,
    seqs: &[i64],
    verdicts: &[Verdict],
    acked: &[i64],
    untried: &[i64],
) -> Result<(), sqlx::Error> {
    for (sql, seqs) in [
        ("DELETE FROM bus_messages WHERE seq IN", acked),
        (
            "UPDATE bus_messages SET locked_until = NULL, attempts = attempts - 1 WHERE seq IN",
            untried,
        ),
    ] {
        if seqs.is_empty() {
            continue;
        }
        let sql = format!("{sql} ({})", placeholders(seqs.len()));
        let mut query = sqlx::query(&sql);
        for seq in seqs {
            query = query.bind(*seq);
        }
        query.execute(&mut *conn).await?;
    }
    for (seq, verdict) in seqs.iter().zip(verdicts) {
        match verdict {
            Verdict::Ack => {}
            Verdict::Retry {
                delay,
                history,
                error,
            } => {
                sqlx::query(
                    "UPDATE bus_messages SET available_at = $1, locked_until = NULL, attempts = $2, \
                     transient_failures = $3, first_failed_at = $4, last_error = $5 WHERE seq = $6",
                )
                .bind(clock::now_micros() + micros(*delay))
                .bind(i64::from(history.failed_attempts))
                .bind(i64::from(history.transient_failures))
                .bind(history.first_failed_at)
                .bind(error)
                .bind(seq)
                .execute(&mut *conn)
                .await?;
            }
            Verdict::DeadLetter { history, error } => {
                sqlx::query(
                    "UPDATE bus_messages SET dead = 1, dead_at = $1, locked_until = NULL, \
                     attempts = $2, last_error = $3 WHERE seq = $4",
                )
                .bind(clock::now_micros())
                .bind(i64::from(history.failed_attempts))
                .bind(error)
                .bind(seq)
                .execute(&mut *conn)
                .await?;
                tracing::error!(consumer, attempts = history.failed_attempts, %error, "event dead-lettered");
                metrics::counter!("bus_dead_lettered_total", "consumer" => consumer.to_owned())
                    .increment(1);
            }
        }
    }
    Ok(())
}

/// Creates the tables, carrying messages of the first layout (no lanes) over.
async fn upgrade_schema(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(pool)
        .await?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    let old: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'bus_messages'",
    )
    .fetch_optional(&mut *tx)
    .await?;
    // Version 0 had `bus_messages` without lanes; version 2 lacked only `bus_meta`.
    let old = old.filter(|_| version == 0);
    if old.is_some() {
        sqlx::raw_sql(
            "ALTER TABLE bus_messages RENAME TO bus_messages_v1;
             DROP INDEX IF EXISTS bus_messages_next;
             ALTER TABLE bus_bindings RENAME TO bus_bindings_v1;",
        )
        .execute(&mut *tx)
        .await?;
    }
    sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
    if old.is_some() {
        // Lane 0 until the consumer subscribes again and its messages are re-laned.
        sqlx::raw_sql(
            "INSERT INTO bus_messages (queue, lane, event_id, envelope, enqueued_at, attempts, \
                 available_at, dead, last_error) \
             SELECT queue, 0, event_id, envelope, available_at, attempts, available_at, dead, \
                 last_error FROM bus_messages_v1 ORDER BY seq;
             INSERT INTO bus_bindings (queue, pattern) SELECT queue, event_type FROM bus_bindings_v1;
             INSERT INTO bus_queues (queue, lanes) SELECT DISTINCT queue, 1 FROM bus_bindings_v1;
             DROP TABLE bus_messages_v1;
             DROP TABLE bus_bindings_v1;",
        )
        .execute(&mut *tx)
        .await?;
    }
    sqlx::raw_sql(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        let batch = [Outgoing {
            envelope: envelope.clone(),
            destination: None,
        }];
        self.publish_batch(&batch).await.pop().unwrap_or(Ok(()))
    }

    async fn send(&self, consumer: &str, envelope: &Envelope) -> Result<(), BusError> {
        let batch = [Outgoing {
            envelope: envelope.clone(),
            destination: Some(consumer.to_owned()),
        }];
        self.publish_batch(&batch).await.pop().unwrap_or(Ok(()))
    }

    /// One transaction for the whole batch: one commit (one fsync) confirms it all.
    async fn publish_batch(&self, batch: &[Outgoing]) -> Vec<Result<(), BusError>> {
        let _topology = self.inner.topology.lock().await;
        if let Err(e) = self.refresh_routes().await {
            return batch.iter().map(|_| Err(unavailable(&e))).collect();
        }
        let mut results: Vec<Result<(), BusError>> = Vec::with_capacity(batch.len());
        let mut rows: Vec<(String, usize, &Envelope)> = Vec::new();
        let mut declared: Vec<String> = Vec::new();
        {
            let routes = self.inner.routes.read().unwrap_or_else(|e| e.into_inner());
            for message in batch {
                match &message.destination {
                    None => {
                        for (queue, lanes) in routes.queues_for(&message.envelope.event_type) {
                            rows.push((queue, lanes, &message.envelope));
                        }
                        results.push(Ok(()));
                    }
                    Some(queue) => {
                        // A command to a consumer that has not subscribed yet declares its
                        // queue, as the RabbitMQ bus does, so it waits there for it.
                        let lanes = match routes.lanes.get(queue) {
                            Some(lanes) => *lanes,
                            None => {
                                if !declared.contains(queue) {
                                    declared.push(queue.clone());
                                }
                                super::DEFAULT_CONCURRENCY
                            }
                        };
                        rows.push((queue.clone(), lanes, &message.envelope));
                        results.push(Ok(()));
                    }
                }
            }
        }
        if rows.is_empty() {
            return results;
        }
        let now = clock::now_micros();
        let written: Result<Vec<(String, usize)>, sqlx::Error> = async {
            let conn = self.inner.writer.acquire().await?;
            self.insert_batch(conn, &declared, &rows, now).await
        }
        .await;
        match written {
            Ok(woken) => {
                if !declared.is_empty() {
                    let mut routes = self.inner.routes.write().unwrap_or_else(|e| e.into_inner());
                    for queue in declared {
                        routes
                            .lanes
                            .entry(queue)
                            .or_insert(super::DEFAULT_CONCURRENCY);
                    }
                }
                for (queue, lane) in woken {
                    self.wake(&queue, lane);
                }
                results
            }
            Err(e) => batch
                .iter()
                .map(|_| {
                    Err(if crate::db::is_transient(&e) {
                        BusError::Unavailable(e.to_string())
                    } else {
                        BusError::NotConfirmed(e.to_string())
                    })
                })
                .collect(),
        }
    }

    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        let queue = subscription.consumer.clone();
        let lanes = subscription.lanes();
        let topology = self.inner.topology.lock().await;
        let previous_lanes: Option<i64> =
            sqlx::query_scalar("SELECT lanes FROM bus_queues WHERE queue = $1")
                .bind(&queue)
                .fetch_optional(&self.inner.reader)
                .await
                .map_err(unavailable)?;
        // Bindings are replaced as a whole: a pattern the subscription no longer has stops
        // routing at once.
        let mut tx = self.inner.writer.begin().await.map_err(unavailable)?;
        sqlx::query("DELETE FROM bus_bindings WHERE queue = $1")
            .bind(&queue)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        for pattern in &subscription.event_types {
            sqlx::query(
                "INSERT INTO bus_bindings (queue, pattern) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&queue)
            .bind(pattern)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        sqlx::query(
            "INSERT INTO bus_queues (queue, lanes) VALUES ($1, $2) \
             ON CONFLICT (queue) DO UPDATE SET lanes = excluded.lanes",
        )
        .bind(&queue)
        .bind(lanes as i64)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO bus_meta (key, value) VALUES ('bindings', 1)              ON CONFLICT (key) DO UPDATE SET value = bus_meta.value + 1",
        )
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        self.refresh_routes().await.map_err(unavailable)?;
        if previous_lanes != Some(lanes as i64) {
            self.relane(&queue, lanes).await.map_err(unavailable)?;
        }
        drop(topology);

        let wakers = self.lane_wakers(&queue, lanes);
        let subscription = Arc::new(subscription);
        let bus = self.clone();
        Ok(tokio::spawn(async move {
            let health = subscription.health();
            health.set_running(true);
            let mut set = tokio::task::JoinSet::new();
            for (lane, waker) in wakers.into_iter().enumerate() {
                set.spawn(bus.clone().consume_lane(
                    subscription.clone(),
                    handler.clone(),
                    shutdown.clone(),
                    lane,
                    waker,
                ));
            }
            // A lane that ends before shutdown is a bug: stop the whole consumer so its
            // supervisor restarts it, rather than run with a lane missing.
            while let Some(ended) = set.join_next().await {
                if !shutdown.is_triggered() {
                    tracing::error!(consumer = %subscription.consumer, outcome = ?ended.err(), "a consumer lane stopped; stopping the consumer");
                    set.abort_all();
                }
            }
            health.set_running(false);
        }))
    }

    async fn pending(&self, consumer: &str) -> Result<u64, BusError> {
        self.count(consumer, false).await
    }

    async fn dead_lettered(&self, consumer: &str) -> Result<u64, BusError> {
        self.count(consumer, true).await
    }

    async fn dead_letters(
        &self,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let rows: Vec<(String, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT event_id, envelope, attempts, last_error FROM bus_messages \
             WHERE queue = $1 AND dead = 1 ORDER BY seq LIMIT $2",
        )
        .bind(consumer)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.reader)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(event_id, body, attempts, error)| DeadLetter {
                event_type: Envelope::from_json(body.as_bytes())
                    .map(|e| e.event_type)
                    .unwrap_or_default(),
                event_id,
                attempts: u32::try_from(attempts).unwrap_or(0),
                error,
                body,
            })
            .collect())
    }

    async fn redrive(&self, consumer: &str, event_id: Option<&str>) -> Result<u64, BusError> {
        let now = clock::now_micros();
        let done = sqlx::query(
            "UPDATE bus_messages SET dead = 0, dead_at = NULL, attempts = 0, transient_failures = 0, \
             first_failed_at = NULL, available_at = $1, locked_until = NULL \
             WHERE queue = $2 AND dead = 1 AND ($3 IS NULL OR event_id = $3)",
        )
        .bind(now)
        .bind(consumer)
        .bind(event_id)
        .execute(&self.inner.writer)
        .await
        .map_err(unavailable)?;
        let lanes = self
            .inner
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .lanes
            .get(consumer)
            .copied()
            .unwrap_or(1);
        for lane in 0..lanes {
            self.wake(consumer, lane);
        }
        Ok(done.rows_affected())
    }

    async fn bindings(&self, consumer: &str) -> Result<Vec<String>, BusError> {
        sqlx::query_scalar("SELECT pattern FROM bus_bindings WHERE queue = $1 ORDER BY pattern")
            .bind(consumer)
            .fetch_all(&self.inner.reader)
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), BusError> {
        sqlx::query("SELECT 1")
            .execute(&self.inner.reader)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Delivery, HandlerError, RetryPolicy};
    use crate::events::Event;
    use std::sync::Mutex;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Numbered {
        n: u32,
    }
    impl Event for Numbered {
        const TYPE: &'static str = "test.Numbered";
        const VERSION: u32 = 1;
    }

    /// Records every batch it is handed, as (n, attempt) pairs; fails n = 3 the first time.
    #[derive(Default)]
    struct Batches(Mutex<Vec<Vec<(u32, u32)>>>);

    #[async_trait]
    impl Handler for Batches {
        async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
            unreachable!("the embedded bus hands over batches")
        }
        async fn handle_batch(
            &self,
            _consumer: &str,
            batch: &[Delivery<'_>],
        ) -> Vec<Result<(), HandlerError>> {
            let seen: Vec<(u32, u32)> = batch
                .iter()
                .map(|d| (d.envelope.decode::<Numbered>().unwrap().n, d.attempt))
                .collect();
            let mut results = Vec::new();
            for (n, attempt) in &seen {
                if *n == 3 && *attempt == 1 {
                    results.push(Err(HandlerError::permanent("three fails once")));
                    break;
                }
                results.push(Ok(()));
            }
            self.0.lock().unwrap().push(seen);
            results
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lane_is_handed_over_in_batches_and_a_failure_holds_back_the_rest_uncounted() {
        let dir = tempfile::tempdir().unwrap();
        let bus = LocalBus::open(&dir.path().join("bus.db")).await.unwrap();
        let consumer = "test.batches";
        let subscription = Subscription::new(consumer, &[Numbered::TYPE])
            .with_concurrency(1)
            .with_retry(RetryPolicy {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(50),
                ..RetryPolicy::default()
            });
        let shutdown = Shutdown::new();
        // Bound before anything is published, then handed the whole backlog at once.
        let handler = Arc::new(Batches::default());
        let idle = Arc::new(Batches::default());
        let stopped = Shutdown::new();
        stopped.trigger();
        bus.subscribe(subscription.clone(), idle, stopped)
            .await
            .unwrap()
            .await
            .unwrap();
        let batch: Vec<Outgoing> = (0..10)
            .map(|n| Outgoing {
                envelope: Envelope::new(&Numbered { n }).with_aggregate("thing", "one"),
                destination: None,
            })
            .collect();
        for result in bus.publish_batch(&batch).await {
            result.unwrap();
        }
        let task = bus
            .subscribe(subscription, handler.clone(), shutdown.clone())
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while bus.pending(consumer).await.unwrap() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the lane never drained"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.trigger();
        task.await.unwrap();
        let batches = handler.0.lock().unwrap().clone();
        assert_eq!(
            batches[0],
            (0..10).map(|n| (n, 1)).collect::<Vec<_>>(),
            "the backlog came as one batch, in order"
        );
        assert_eq!(
            batches[1],
            (3..10)
                .map(|n| (n, if n == 3 { 2 } else { 1 }))
                .collect::<Vec<_>>(),
            "the failed message came back first, on its second attempt; those after it \
             waited, and their first hand-over did not count"
        );
        assert_eq!(batches.len(), 2);
        assert_eq!(bus.dead_lettered(consumer).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_publish_that_fails_midway_stores_none_of_its_batch_and_leaves_the_writer_usable() {
        let dir = tempfile::tempdir().unwrap();
        let bus = LocalBus::open(&dir.path().join("bus.db")).await.unwrap();
        let consumer = "test.refused";
        let stopped = Shutdown::new();
        stopped.trigger();
        let subscription = Subscription::new(consumer, &[Numbered::TYPE]);
        bus.subscribe(subscription, Arc::new(Batches::default()), stopped)
            .await
            .unwrap()
            .await
            .unwrap();
        // The database refuses the third row of the batch, after two were inserted.
        let refused = Envelope::new(&Numbered { n: 3 });
        sqlx::query(&format!(
            "CREATE TRIGGER refuse BEFORE INSERT ON bus_messages WHEN NEW.event_id = '{}' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
            refused.id
        ))
        .execute(&bus.inner.writer)
        .await
        .unwrap();
        let batch: Vec<Outgoing> = [1, 2]
            .into_iter()
            .map(|n| Envelope::new(&Numbered { n }))
            .chain([refused])
            .map(|envelope| Outgoing {
                envelope,
                destination: None,
            })
            .collect();
        let results = bus.publish_batch(&batch).await;
        assert!(
            results.iter().all(Result::is_err),
            "the batch is one commit"
        );
        assert_eq!(
            bus.pending(consumer).await.unwrap(),
            0,
            "nothing of it stays"
        );

        // The writer is out of the failed transaction and back to NORMAL: the next
        // publish commits, and the mode is what the claims and settles expect.
        bus.publish(&Envelope::new(&Numbered { n: 4 }))
            .await
            .unwrap();
        assert_eq!(bus.pending(consumer).await.unwrap(), 1);
        let mode: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&bus.inner.writer)
            .await
            .unwrap();
        assert_eq!(mode, 1, "synchronous = NORMAL");
    }

    #[tokio::test]
    async fn claiming_walks_the_lane_index_and_never_sorts_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let bus = LocalBus::open(&dir.path().join("bus.db")).await.unwrap();
        let plan = bus.explain_claim().await.unwrap().join(" | ");
        assert!(!plan.contains("TEMP B-TREE"), "the claim sorts: {plan}");
        assert!(
            plan.contains("bus_lane_head"),
            "the claim does not use the lane index: {plan}"
        );
    }
}
