//! Saga state with optimistic versioning.
//!
//! A saga (say, checkout) keeps one state record per instance in its service's
//! `saga_states` table. A step loads it, decides, and saves it with the version it loaded,
//! inside the consumer helper's transaction, together with the commands it sends and the
//! timers it sets. The one thing to know: **a save whose expected version is not the
//! stored one is a [`SagaError::Conflict`]**, which becomes a *transient* handler error, so
//! the step is simply run again on the fresh state (two steps of one saga racing on two
//! lanes or replicas never both win).

use serde::{de::DeserializeOwned, Serialize};
use sqlx::AnyConnection;

use crate::{bus::HandlerError, clock};

/// A loaded saga instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Saga<S> {
    pub id: String,
    /// The version to pass to [`save`]: 1 after the first save, +1 each save.
    pub version: i64,
    pub state: S,
}

#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error("saga {saga} {id} was changed concurrently (expected version {expected:?})")]
    Conflict {
        saga: String,
        id: String,
        expected: Option<i64>,
    },
    #[error("saga {saga} {id} has a state that does not decode: {source}")]
    Corrupt {
        saga: String,
        id: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<SagaError> for HandlerError {
    fn from(e: SagaError) -> Self {
        match e {
            SagaError::Conflict { .. } => HandlerError::transient(e),
            SagaError::Db(db) => db.into(),
            SagaError::Corrupt { .. } => HandlerError::permanent(e),
        }
    }
}

/// The state of instance `id` of `saga`, if it exists.
pub async fn load<S: DeserializeOwned>(
    conn: &mut AnyConnection,
    saga: &str,
    id: &str,
) -> Result<Option<Saga<S>>, SagaError> {
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT version, state FROM saga_states WHERE saga = $1 AND id = $2")
            .bind(saga)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|(version, json)| {
        serde_json::from_str(&json)
            .map(|state| Saga {
                id: id.to_owned(),
                version,
                state,
            })
            .map_err(|source| SagaError::Corrupt {
                saga: saga.to_owned(),
                id: id.to_owned(),
                source,
            })
    })
    .transpose()
}

/// Saves `state` if the stored version is `expected` (`None`: the instance must not exist
/// yet); returns the new version.
pub async fn save<S: Serialize>(
    conn: &mut AnyConnection,
    saga: &str,
    id: &str,
    state: &S,
    expected: Option<i64>,
) -> Result<i64, SagaError> {
    let json = serde_json::to_string(state).map_err(|source| SagaError::Corrupt {
        saga: saga.to_owned(),
        id: id.to_owned(),
        source,
    })?;
    let now = clock::now_micros();
    let written = match expected {
        None => {
            sqlx::query(
                "INSERT INTO saga_states (saga, id, version, state, updated_at) \
                 VALUES ($1, $2, 1, $3, $4) ON CONFLICT (saga, id) DO NOTHING",
            )
            .bind(saga)
            .bind(id)
            .bind(&json)
            .bind(now)
            .execute(&mut *conn)
            .await?
        }
        Some(version) => {
            sqlx::query(
                "UPDATE saga_states SET version = version + 1, state = $1, updated_at = $2 \
                 WHERE saga = $3 AND id = $4 AND version = $5",
            )
            .bind(&json)
            .bind(now)
            .bind(saga)
            .bind(id)
            .bind(version)
            .execute(&mut *conn)
            .await?
        }
    };
    if written.rows_affected() != 1 {
        return Err(SagaError::Conflict {
            saga: saga.to_owned(),
            id: id.to_owned(),
            expected,
        });
    }
    Ok(expected.map_or(1, |v| v + 1))
}
