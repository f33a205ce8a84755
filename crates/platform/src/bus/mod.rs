//! The event bus: how envelopes leave one service and reach the consumers of another.
//!
//! Two implementations behind one trait, chosen by configuration only:
//!
//! * [`local::LocalBus`] for the embedded default: an in-process bus whose queues are kept
//!   in a SQLite file, so a `kill -9` loses nothing that was confirmed to the relay.
//! * [`amqp::AmqpBus`] for the distributed deployment: RabbitMQ, a durable topic exchange,
//!   one durable (quorum) queue per consumer, publisher confirms, a retry queue with
//!   backoff and a dead-letter queue.
//!
//! Both give the same contract: [`Bus::publish`] returns only once the message is durable
//! (confirmed); each [`Subscription`] gets every matching event at least once; a handler
//! error is retried with exponential backoff and, after `max_attempts`, the message is
//! moved to the consumer's dead-letter queue and counted in `bus_dead_lettered_total`.

pub mod amqp;
pub mod local;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{events::Envelope, shutdown::Shutdown};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the broker did not confirm the message: {0}")]
    NotConfirmed(String),
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// Why a handler could not apply an event. Every error is retried up to the subscription's
/// `max_attempts`; the message says why in the logs and in the dead-letter record.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    pub fn new(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// Something that applies events. It must be idempotent per event id (use [`crate::inbox`]).
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError>;
}

/// One consumer's interest: a durable queue named after `consumer`, bound to event types.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// Stable name, e.g. `notifications.user_registered`; it names the queue.
    pub consumer: String,
    pub event_types: Vec<String>,
    pub retry: RetryPolicy,
}

impl Subscription {
    pub fn new(consumer: impl Into<String>, event_types: &[&str]) -> Self {
        Self {
            consumer: consumer.into(),
            event_types: event_types.iter().map(|s| s.to_string()).collect(),
            retry: RetryPolicy::default(),
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// Bounded retries with exponential backoff.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Deliveries before the message is dead-lettered (the first one counts).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before delivery number `attempt + 1`, after `attempt` failures (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes and returns once the bus has made the message durable.
    async fn publish(&self, envelope: &Envelope) -> Result<(), BusError>;

    /// Declares the subscription's queue and bindings and starts consuming in the
    /// background until `shutdown`; the returned handle completes when the consumer has
    /// finished its in-flight message and stopped.
    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
    ) -> Result<tokio::task::JoinHandle<()>, BusError>;

    /// Messages waiting for this consumer (lag).
    async fn pending(&self, consumer: &str) -> Result<u64, BusError>;

    /// Messages in this consumer's dead-letter queue.
    async fn dead_lettered(&self, consumer: &str) -> Result<u64, BusError>;

    /// Readiness: is the broker reachable now?
    async fn ping(&self) -> Result<(), BusError>;

    /// Short name for logs and `/readyz`.
    fn kind(&self) -> &'static str;
}

/// What became of one delivery.
pub(crate) enum Outcome {
    Applied,
    /// The handler failed; retry while attempts remain.
    Failed(String),
    /// The message can never be applied (not an envelope): dead-letter at once.
    Poison(String),
}

/// Decodes one message and runs the handler inside the trace the envelope carries, in a
/// `consume` span. Both buses deliver through here, so a handler sees the same thing on
/// either.
pub(crate) async fn deliver(
    handler: &dyn Handler,
    consumer: &str,
    body: &[u8],
    attempt: u32,
) -> Outcome {
    use tracing::Instrument;
    let envelope = match Envelope::from_json(body) {
        Ok(envelope) => envelope,
        Err(err) => return Outcome::Poison(format!("unreadable envelope: {err}")),
    };
    let ctx = envelope
        .trace
        .as_deref()
        .and_then(crate::telemetry::TraceContext::continue_from)
        .unwrap_or_else(crate::telemetry::TraceContext::new_root);
    let span = tracing::info_span!(
        "consume",
        consumer,
        event_type = %envelope.event_type,
        trace_id = %ctx.trace_id,
        attempt,
    );
    crate::telemetry::attach_span(&span, &ctx);
    match crate::telemetry::with_trace(ctx, handler.handle(&envelope))
        .instrument(span)
        .await
    {
        Ok(()) => Outcome::Applied,
        Err(e) => Outcome::Failed(e.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(4), Duration::from_millis(800));
        assert_eq!(p.backoff(5), Duration::from_secs(1));
        assert_eq!(p.backoff(40), Duration::from_secs(1));
    }
}
