//! Durable timers: deadlines that survive restarts, for saga steps that must time out.
//!
//! A step calls [`schedule`] in its transaction: "at `due_at`, send this command to that
//! consumer". The [`TimerWorker`] (one active per service, by the same database-clock
//! lease as the relay) fires due timers. The one thing to know: **firing is one
//! transaction** — the timer is marked fired and its command is written to the outbox
//! together — so a timer fires exactly once even across crashes, and its command then
//! travels like any other (relay, bus, consumer helper). [`cancel`] in the step that makes
//! the deadline moot (say, payment arrived) removes it, in that step's transaction.

use std::time::Duration;

use sqlx::{Any, Transaction};
use time::OffsetDateTime;

use crate::{clock, db::Db, events::Envelope, lease::Lease, outbox, shutdown::Shutdown};

/// Sets (or resets, if not fired yet) the timer `key`: at `due_at` the command is sent to
/// the consumer `destination`. `key` names the deadline, e.g. `checkout:<order>:payment`.
pub async fn schedule(
    tx: &mut Transaction<'_, Any>,
    key: &str,
    due_at: OffsetDateTime,
    destination: &str,
    command: &Envelope,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO timers (key, destination, envelope, due_at, created_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (key) DO UPDATE SET destination = excluded.destination, \
             envelope = excluded.envelope, due_at = excluded.due_at \
         WHERE timers.fired_at IS NULL",
    )
    .bind(key)
    .bind(destination)
    .bind(String::from_utf8_lossy(&command.to_json()).into_owned())
    .bind(clock::to_micros(due_at))
    .bind(clock::now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Removes the timer `key` unless it has fired; returns whether it was pending.
pub async fn cancel(tx: &mut Transaction<'_, Any>, key: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM timers WHERE key = $1 AND fired_at IS NULL")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Timers not fired yet.
pub async fn pending(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM timers WHERE fired_at IS NULL")
        .fetch_one(db.pool())
        .await
}

#[derive(Clone, Debug)]
pub struct TimerConfig {
    pub batch: i64,
    pub lease: Duration,
    /// How often due timers are looked for.
    pub poll: Duration,
    /// Fired timers are deleted after this long.
    pub retention: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            batch: 100,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Fires one service's due timers.
pub struct TimerWorker {
    db: Db,
    config: TimerConfig,
    lease: Lease,
}

impl TimerWorker {
    pub fn new(db: Db, config: TimerConfig) -> Self {
        let lease = Lease::new(db.clone(), "timers");
        Self { db, config, lease }
    }

    /// Fires the timers due by the database's clock (0 when another replica holds the
    /// lease); returns how many fired.
    pub async fn fire_due(&mut self) -> Result<usize, sqlx::Error> {
        if !self.lease.acquire(self.config.lease).await? {
            return Ok(0);
        }
        let Some(token) = self.lease.token().map(str::to_owned) else {
            return Ok(0);
        };
        let due: Vec<(String, String, String)> = sqlx::query_as(&format!(
            "SELECT key, destination, envelope FROM timers \
             WHERE fired_at IS NULL AND due_at <= {now} ORDER BY due_at LIMIT $1",
            now = self.db.now_sql()
        ))
        .bind(self.config.batch)
        .fetch_all(self.db.pool())
        .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.begin().await?;
        let mut fired = 0;
        for (key, destination, json) in due {
            let marked = sqlx::query(&format!(
                "UPDATE timers SET fired_at = {now} WHERE key = $1 AND fired_at IS NULL AND {holds}",
                now = self.db.now_sql(),
                holds = self.lease.holds(2)
            ))
            .bind(&key)
            .bind(&token)
            .execute(&mut *tx)
            .await?;
            if marked.rows_affected() != 1 {
                continue;
            }
            match Envelope::from_json(json.as_bytes()) {
                Ok(command) => {
                    outbox::send_command(&mut tx, &destination, &command).await?;
                    fired += 1;
                }
                Err(err) => {
                    tracing::error!(service = self.db.service(), timer = %key, error = %err, "unreadable timer command; marked fired without sending")
                }
            }
        }
        tx.commit().await?;
        if fired > 0 {
            self.db.outbox_committed();
            metrics::counter!("timers_fired_total", "service" => self.db.service())
                .increment(fired as u64);
        }
        Ok(fired)
    }

    /// Deletes fired timers past retention.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let cutoff = clock::now_micros()
            - i64::try_from(self.config.retention.as_micros()).unwrap_or(i64::MAX / 4);
        let done = sqlx::query("DELETE FROM timers WHERE fired_at IS NOT NULL AND fired_at < $1")
            .bind(cutoff)
            .execute(self.db.writer())
            .await?;
        Ok(done.rows_affected())
    }

    /// Fires due timers until shutdown (run it under the supervisor).
    pub async fn run(mut self, shutdown: Shutdown) {
        let mut rounds: u64 = 0;
        while !shutdown.is_triggered() {
            let wait = match self.fire_due().await {
                Ok(n) if n as i64 == self.config.batch => Duration::ZERO,
                Ok(_) => self.config.poll,
                Err(err) => {
                    tracing::warn!(service = self.db.service(), error = %err, "firing timers failed");
                    self.config.poll * 4
                }
            };
            rounds += 1;
            if rounds.is_multiple_of(1000) {
                let _ = self.prune().await;
            }
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait() => {}
                }
            }
        }
        let _ = self.lease.release().await;
    }
}
