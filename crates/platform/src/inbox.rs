//! The consumer side of "nothing is applied twice".
//!
//! A consumer calls [`claim`] inside the transaction that applies an event's effect. The
//! first delivery inserts `(consumer, event id)` and goes on; a redelivery finds the row,
//! gets `false`, and must commit nothing else. Because the row and the effect commit
//! together, a crash between them leaves neither, and the redelivery applies the event then.
//! Services do not call this themselves: the consumer helper ([`crate::consumer`]) does.
//! Entries are pruned ([`prune`]) once no copy of their event can still arrive.

use sqlx::AnyConnection;
use uuid::Uuid;

use crate::clock;

/// The claim, with its three arguments at the given placeholders (the consumer helper
/// sends it together with the order check, whose arguments come first): it inserts one row,
/// or none if the consumer had the event.
pub(crate) fn claim_sql(consumer: &str, event_id: &str, applied_at: &str) -> String {
    format!(
        "INSERT INTO inbox (consumer, event_id, applied_at) \
         VALUES ({consumer}, {event_id}, {applied_at}) \
         ON CONFLICT (consumer, event_id) DO NOTHING"
    )
}

static CLAIM_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| claim_sql("$1", "$2", "$3"));

/// Records that `consumer` applies `event_id` now. Returns `false` if it already had.
pub async fn claim(
    conn: &mut AnyConnection,
    consumer: &str,
    event_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(&CLAIM_SQL)
        .bind(consumer)
        .bind(event_id.to_string())
        .bind(clock::now_micros())
        .execute(conn)
        .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Deletes inbox entries applied more than `window` ago. `window` must exceed the longest
/// time after which a copy of an event can still arrive: the outbox retention (a replay
/// feeds events that old), plus the transient-retry ceiling and the time a message may
/// wait in a dead-letter queue before being redriven. Past it, a late copy would be
/// applied again.
pub async fn prune(db: &crate::db::Db, window: std::time::Duration) -> Result<u64, sqlx::Error> {
    let cutoff = clock::now_micros() - i64::try_from(window.as_micros()).unwrap_or(i64::MAX / 4);
    let done = sqlx::query("DELETE FROM inbox WHERE applied_at < $1")
        .bind(cutoff)
        .execute(db.writer())
        .await?;
    if done.rows_affected() > 0 {
        tracing::info!(
            service = db.service(),
            pruned = done.rows_affected(),
            "inbox pruned"
        );
    }
    Ok(done.rows_affected())
}

/// How long inbox entries are kept, and how often they are pruned.
#[derive(Clone, Copy, Debug)]
pub struct InboxRetention {
    /// Default 14 days: the 7-day outbox retention, plus a day of transient retries, plus a
    /// week for an operator to redrive a dead letter.
    pub window: std::time::Duration,
    pub every: std::time::Duration,
}

impl Default for InboxRetention {
    fn default() -> Self {
        Self {
            window: std::time::Duration::from_secs(14 * 24 * 3600),
            every: std::time::Duration::from_secs(3600),
        }
    }
}

/// A background worker (run it under the supervisor): prunes `db`'s inbox every
/// `retention.every` until shutdown.
pub async fn run_pruner(
    db: crate::db::Db,
    retention: InboxRetention,
    shutdown: crate::shutdown::Shutdown,
) {
    while !shutdown.is_triggered() {
        if let Err(err) = prune(&db, retention.window).await {
            tracing::warn!(service = db.service(), error = %err, "inbox prune failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(retention.every) => {}
            _ = shutdown.wait() => {}
        }
    }
}
