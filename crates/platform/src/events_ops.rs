//! Operations on the event machinery, the same on both buses: what `rendermart events …`
//! runs. Dead letters are listed, shown and redriven (on the embedded bus they are the
//! rows marked dead); parked outbox rows are listed and given back to the relay; and a
//! consumer can be replayed the history its producers' outboxes kept (sent rows are kept
//! for the relay's retention, 7 days by default).
//!
//! The one thing to know: **a replay goes to the one named consumer's queue only**, as
//! point-to-point sends filtered by that consumer's bindings; other consumers see nothing,
//! and the consumer's inbox turns events it already applied into no-ops.

use time::OffsetDateTime;

use crate::{
    bus::{topic_matches, Bus, BusError, DeadLetter},
    db::Db,
    events::Envelope,
    outbox::{self, ParkedRow},
};

/// The most dead letters one command looks at (a show or redrive by id searches these).
pub const MAX_LISTED: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("outbox database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("no dead letter {event_id} for {consumer}")]
    NotFound { consumer: String, event_id: String },
    #[error("the bus does not know {0}'s bindings; pass its patterns")]
    NoBindings(String),
}

/// The consumer's dead letters, oldest first.
pub async fn dlq_list(
    bus: &dyn Bus,
    consumer: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, OpsError> {
    Ok(bus.dead_letters(consumer, limit.min(MAX_LISTED)).await?)
}

/// One dead letter, by event id.
pub async fn dlq_show(
    bus: &dyn Bus,
    consumer: &str,
    event_id: &str,
) -> Result<DeadLetter, OpsError> {
    bus.dead_letters(consumer, MAX_LISTED)
        .await?
        .into_iter()
        .find(|d| d.event_id == event_id)
        .ok_or_else(|| OpsError::NotFound {
            consumer: consumer.to_owned(),
            event_id: event_id.to_owned(),
        })
}

/// Puts the consumer's dead letters (one, or all) back on its queue with fresh attempts.
pub async fn dlq_redrive(
    bus: &dyn Bus,
    consumer: &str,
    event_id: Option<&str>,
) -> Result<u64, OpsError> {
    let moved = bus.redrive(consumer, event_id).await?;
    if let (Some(id), 0) = (event_id, moved) {
        return Err(OpsError::NotFound {
            consumer: consumer.to_owned(),
            event_id: id.to_owned(),
        });
    }
    Ok(moved)
}

/// Parked outbox rows of one service.
pub async fn outbox_parked(db: &Db, limit: i64) -> Result<Vec<ParkedRow>, OpsError> {
    Ok(outbox::parked(db, limit).await?)
}

/// Gives parked rows (one, or all) back to the relay.
pub async fn outbox_redrive(db: &Db, id: Option<&str>) -> Result<u64, OpsError> {
    Ok(outbox::unpark(db, id).await?)
}

/// What a replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Events sent to the consumer's queue.
    pub sent: u64,
    /// Kept events the consumer's bindings do not match.
    pub skipped: u64,
}

/// Feeds `consumer` every event its bindings match that the `outboxes` sent since `since`
/// (and still keep), in each outbox's publication order. `patterns`: the consumer's
/// bindings, or `None` to use those the bus remembers.
pub async fn replay(
    outboxes: &[Db],
    bus: &dyn Bus,
    consumer: &str,
    patterns: Option<Vec<String>>,
    since: OffsetDateTime,
) -> Result<Replayed, OpsError> {
    let patterns = match patterns {
        Some(p) => p,
        None => bus.bindings(consumer).await?,
    };
    if patterns.is_empty() {
        return Err(OpsError::NoBindings(consumer.to_owned()));
    }
    let mut done = Replayed::default();
    for db in outboxes {
        let mut after = 0;
        loop {
            let page = outbox::sent_since(db, since, after, 500).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (_, json) in page {
                let Ok(envelope) = Envelope::from_json(json.as_bytes()) else {
                    continue;
                };
                if patterns
                    .iter()
                    .any(|p| topic_matches(p, &envelope.event_type))
                {
                    bus.send(consumer, &envelope).await?;
                    done.sent += 1;
                } else {
                    done.skipped += 1;
                }
            }
        }
    }
    tracing::info!(
        consumer,
        sent = done.sent,
        skipped = done.skipped,
        "replay done"
    );
    Ok(done)
}
