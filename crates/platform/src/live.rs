//! Live updates over server-sent events, bounded: at most `max` streams are open in a
//! process at once (beyond, a 503 with `Retry-After`, so a crowd of tabs cannot exhaust
//! memory or database connections), every stream sends a keep-alive comment, and all of them
//! end when the process shuts down (an open stream would otherwise hold graceful shutdown
//! until its client left).
//!
//! Pages that use them degrade to a reload without JavaScript; the streams are a
//! convenience, never the only way to see a change.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use tokio::sync::Semaphore;

use crate::{http::Problem, shutdown::Shutdown};

/// The default bound on open streams per process.
pub const DEFAULT_MAX_STREAMS: usize = 512;

/// Hands out live streams under a bound, ending them at shutdown.
#[derive(Clone)]
pub struct LiveStreams {
    permits: Arc<Semaphore>,
    shutdown: Shutdown,
}

impl LiveStreams {
    pub fn new(max: usize, shutdown: Shutdown) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.max(1))),
            shutdown,
        }
    }

    /// `events` as an SSE response that holds one slot while open, or a 503 problem when
    /// every slot is taken.
    pub fn respond<S>(
        &self,
        events: S,
    ) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static>, Problem>
    where
        S: Stream<Item = Event> + Send + 'static,
    {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("live_streams_refused_total").increment(1);
            Problem::unavailable(
                5,
                "Too many live connections right now. Reload to try again.",
            )
        })?;
        let shutdown = self.shutdown.clone();
        let stop = async move { shutdown.wait().await };
        let stream = events.take_until(Box::pin(stop)).map(move |event| {
            // The slot is held for as long as the stream lives.
            let _held = &permit;
            Ok(event)
        });
        Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
    }
}

/// An SSE event named `name` whose data is `value` as JSON (`None` if it does not
/// serialize, which our types always do).
pub fn json_event(name: &str, value: &impl serde::Serialize) -> Option<Event> {
    Event::default().event(name).json_data(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[tokio::test]
    async fn streams_beyond_the_bound_are_refused_and_a_closed_one_frees_its_slot() {
        let live = LiveStreams::new(2, Shutdown::new());
        let a = live
            .respond(futures_util::stream::pending::<Event>())
            .unwrap();
        let b = live
            .respond(futures_util::stream::pending::<Event>())
            .unwrap();
        let Err(refused) = live.respond(futures_util::stream::pending::<Event>()) else {
            panic!("a third is refused");
        };
        assert_eq!(refused.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.retry_after_secs(), Some(5));
        drop(a);
        let c = live.respond(futures_util::stream::pending::<Event>());
        assert!(c.is_ok(), "a closed stream frees its slot");
        drop((b, c));
    }

    #[tokio::test]
    async fn every_stream_ends_at_shutdown() {
        let shutdown = Shutdown::new();
        let live = LiveStreams::new(4, shutdown.clone());
        let response = live
            .respond(futures_util::stream::pending::<Event>())
            .unwrap()
            .into_response();
        let body = response.into_body();
        let reading = tokio::spawn(axum::body::to_bytes(body, 1 << 20));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!reading.is_finished());
        shutdown.trigger();
        let ended = tokio::time::timeout(Duration::from_secs(5), reading).await;
        assert!(ended.is_ok(), "the stream ended when the process shut down");
    }
}
