//! The consumer side of "nothing is applied twice".
//!
//! A consumer calls [`claim`] inside the transaction that applies an event's effect. The
//! first delivery inserts `(consumer, event id)` and goes on; a redelivery finds the row,
//! gets `false`, and must commit nothing else. Because the row and the effect commit
//! together, a crash between them leaves neither, and the redelivery applies the event then.

use sqlx::AnyConnection;
use uuid::Uuid;

use crate::clock;

/// Records that `consumer` applies `event_id` now. Returns `false` if it already had.
pub async fn claim(
    conn: &mut AnyConnection,
    consumer: &str,
    event_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (consumer, event_id, applied_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id.to_string())
    .bind(clock::now_micros())
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}
