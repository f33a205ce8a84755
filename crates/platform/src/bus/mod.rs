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
//! (confirmed); each [`Subscription`] gets every event whose type matches one of its
//! patterns (AMQP topic syntax on both buses: [`topic_matches`]) at least once, and
//! commands [`Bus::send`] addresses to it; events of one aggregate are handed to the
//! handler in queue order (a consumer runs `concurrency` lanes, an aggregate always in the
//! same lane), different aggregates in parallel. A lane's waiting messages are handed over
//! together ([`Handler::handle_batch`]), so a consumer may apply them in one transaction.
//!
//! Failures are judged here, once for both buses ([`judge_batch`]): a permanent handler error
//! uses one of `max_attempts`, then the message is dead-lettered; a transient error
//! ([`HandlerError::transient`], e.g. the database is unreachable) is retried with capped
//! backoff without using attempts until `transient_ceiling` has passed since its first
//! failure; a panic is a permanent failure of that message, never of the consumer; a
//! deferral (the consumer helper keeping an aggregate in order) waits without using
//! anything. The handler hears about a dead-lettering before it happens
//! ([`Handler::dead_lettering`]).

pub mod amqp;
pub mod local;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::{clock, events::Envelope, shutdown::Shutdown};
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus refused or lost this message (returned, nacked, failed to write): the
    /// relay counts it against the message, and parks one that keeps failing.
    #[error("the broker did not confirm the message: {0}")]
    NotConfirmed(String),
    /// The bus could not be reached; says nothing about the message.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// No confirm in time (e.g. the broker blocks publishers during an alarm); says nothing
    /// about the message.
    #[error("bus timed out: {0}")]
    TimedOut(String),
    #[error("no such message: {0}")]
    NotFound(String),
}

/// Whether a failure may go away by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Retried with backoff without using attempts (database down, busy, conflict).
    Transient,
    /// Uses one attempt; after the last, the message is dead-lettered.
    Permanent,
    /// Not a failure: the message must wait (an earlier event of its aggregate is not
    /// applied yet). Uses nothing; retried after the subscription's `defer_delay`.
    Deferred,
}

/// Why a handler could not apply an event; the message says why in the logs and in the
/// dead-letter record.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub kind: FailureKind,
    pub message: String,
}

impl HandlerError {
    /// A permanent failure (uses an attempt).
    pub fn new(e: impl std::fmt::Display) -> Self {
        Self::permanent(e)
    }
    pub fn permanent(e: impl std::fmt::Display) -> Self {
        Self {
            kind: FailureKind::Permanent,
            message: e.to_string(),
        }
    }
    pub fn transient(e: impl std::fmt::Display) -> Self {
        Self {
            kind: FailureKind::Transient,
            message: e.to_string(),
        }
    }
    pub fn deferred(why: impl std::fmt::Display) -> Self {
        Self {
            kind: FailureKind::Deferred,
            message: why.to_string(),
        }
    }
    pub fn is_transient(&self) -> bool {
        self.kind == FailureKind::Transient
    }
}

/// Database errors are classified by [`crate::db::is_transient`].
impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_transient(&e) {
            Self::transient(e)
        } else {
            Self::permanent(e)
        }
    }
}

/// Something that applies events. It must be idempotent per event id; services use the
/// consumer helper ([`crate::consumer`]), which is.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError>;

    /// Called before `envelope` is dead-lettered (so the helper can let the rest of its
    /// aggregate go on). An error postpones the dead-lettering, as a transient failure.
    async fn dead_lettering(&self, _envelope: &Envelope, _error: &str) -> Result<(), HandlerError> {
        Ok(())
    }

    /// Applies consecutive messages of one lane, in order, and answers for each message it
    /// tried, in order. It stops after the first failure: a message past the end of the
    /// answer was not applied, and the bus hands it over again later without counting an
    /// attempt. Each message is handled in its own delivery scope ([`scoped`]: its trace,
    /// its correlation, a panic caught as its own failure). The default handles them one
    /// at a time; the consumer helper applies a batch in one transaction (decision 68).
    async fn handle_batch(
        &self,
        consumer: &str,
        batch: &[Delivery<'_>],
    ) -> Vec<Result<(), HandlerError>> {
        one_at_a_time(self, consumer, batch).await
    }
}

/// [`Handler::handle_batch`] by [`Handler::handle`], message by message, each in its own
/// delivery scope, stopping after the first failure.
pub async fn one_at_a_time<H: Handler + ?Sized>(
    handler: &H,
    consumer: &str,
    batch: &[Delivery<'_>],
) -> Vec<Result<(), HandlerError>> {
    let mut results = Vec::with_capacity(batch.len());
    for delivery in batch {
        let result = scoped(consumer, delivery, handler.handle(delivery.envelope)).await;
        let failed = result.is_err();
        results.push(result);
        if failed {
            break;
        }
    }
    results
}

/// One message of a batch handed to [`Handler::handle_batch`].
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    pub envelope: &'a Envelope,
    /// Which delivery of the message this is (1 for the first).
    pub attempt: u32,
}

/// One consumer's interest: a durable queue named after `consumer`, bound to event-type
/// patterns.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// Stable name, `<service>.<name>`, e.g. `notifications.user_registered`; it names the queue.
    pub consumer: String,
    /// Topic patterns: words split on `.`, `*` matches one word, `#` zero or more.
    pub event_types: Vec<String>,
    pub retry: RetryPolicy,
    /// Lanes handled in parallel; one aggregate always uses the same lane.
    pub concurrency: usize,
    health: Arc<ConsumerHealth>,
}

impl Subscription {
    pub fn new(consumer: impl Into<String>, event_types: &[&str]) -> Self {
        let consumer = consumer.into();
        Self {
            health: Arc::new(ConsumerHealth::new(&consumer)),
            consumer,
            event_types: event_types.iter().map(|s| s.to_string()).collect(),
            retry: RetryPolicy::default(),
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn with_concurrency(mut self, lanes: usize) -> Self {
        self.concurrency = lanes.clamp(1, MAX_CONCURRENCY);
        self
    }

    /// Liveness and progress of this consumer, shared with whoever supervises it.
    pub fn health(&self) -> Arc<ConsumerHealth> {
        self.health.clone()
    }

    pub(crate) fn lanes(&self) -> usize {
        self.concurrency.clamp(1, MAX_CONCURRENCY)
    }
}

pub const DEFAULT_CONCURRENCY: usize = 8;
pub const MAX_CONCURRENCY: usize = 64;

/// Retries: permanent failures with bounded attempts, transient ones bounded by time.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Deliveries that may fail permanently before the message is dead-lettered (the first
    /// one counts).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long transient failures are retried (from the first one) before the message is
    /// dead-lettered after all: long enough to ride out an outage.
    pub transient_ceiling: Duration,
    /// Wait before a deferred message is looked at again.
    pub defer_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            transient_ceiling: Duration::from_secs(24 * 3600),
            defer_delay: Duration::from_millis(500),
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

/// A message on its way out: an event for every subscribed consumer, or a command for one.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub envelope: Envelope,
    /// `None`: publish to subscribers by type; `Some(consumer)`: send to that queue only.
    pub destination: Option<String>,
}

/// A message in a consumer's dead-letter queue.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub event_id: String,
    pub event_type: String,
    pub attempts: u32,
    pub error: Option<String>,
    /// The message body (the envelope as JSON, or whatever unreadable bytes came).
    pub body: String,
}

impl BusError {
    /// Whether the failure is the message's own (and so counts towards parking it).
    pub fn is_message_specific(&self) -> bool {
        matches!(self, Self::NotConfirmed(_))
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes and returns once the bus has made the message durable.
    async fn publish(&self, envelope: &Envelope) -> Result<(), BusError>;

    /// Sends a command to one consumer's queue (confirmed, and refused if it reaches no queue).
    async fn send(&self, _consumer: &str, _envelope: &Envelope) -> Result<(), BusError> {
        Err(BusError::Unavailable(format!(
            "{} does not support commands",
            self.kind()
        )))
    }

    /// Publishes or sends several messages at once (pipelined); one result per message, in
    /// order. The relay gives it at most one message per aggregate.
    async fn publish_batch(&self, batch: &[Outgoing]) -> Vec<Result<(), BusError>> {
        let sends = batch.iter().map(|m| async move {
            match &m.destination {
                None => self.publish(&m.envelope).await,
                Some(to) => self.send(to, &m.envelope).await,
            }
        });
        futures_util::future::join_all(sends).await
    }

    /// Declares the subscription's queue and bindings (removing bindings it no longer
    /// has) and starts consuming in the background until `shutdown`; the returned handle
    /// completes when the consumer has finished its in-flight messages and stopped.
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

    /// Up to `limit` messages of the consumer's dead-letter queue, oldest first.
    async fn dead_letters(
        &self,
        _consumer: &str,
        _limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        Err(BusError::Unavailable("not supported".into()))
    }

    /// Puts dead letters back on the consumer's queue with fresh attempts: the one with
    /// `event_id`, or all. Returns how many.
    async fn redrive(&self, _consumer: &str, _event_id: Option<&str>) -> Result<u64, BusError> {
        Err(BusError::Unavailable("not supported".into()))
    }

    /// The binding patterns the bus remembers for this consumer.
    async fn bindings(&self, _consumer: &str) -> Result<Vec<String>, BusError> {
        Ok(Vec::new())
    }

    /// Readiness: is the broker reachable now?
    async fn ping(&self) -> Result<(), BusError>;

    /// Short name for logs and `/readyz`.
    fn kind(&self) -> &'static str;
}

/// AMQP topic matching, the one semantics of both buses: `pattern` and `key` are split on
/// `.`; `*` matches exactly one word, `#` zero or more words.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    // Dynamic programming over (pattern word, key word): bounded by their product.
    let (p, k) = (pattern.len(), key.len());
    let mut reach = vec![vec![false; k + 1]; p + 1];
    reach[0][0] = true;
    for i in 1..=p {
        let word = pattern[i - 1];
        for j in 0..=k {
            reach[i][j] = match word {
                "#" => reach[i - 1][j] || (j > 0 && reach[i][j - 1]),
                "*" => j > 0 && reach[i - 1][j - 1],
                w => j > 0 && reach[i - 1][j - 1] && key[j - 1] == w,
            };
        }
    }
    reach[p][k]
}

/// The lane of a message: by aggregate, so one aggregate's messages are handled in order;
/// messages without one spread by id.
pub fn lane_of(aggregate: Option<&str>, event_id: &str, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    // A fixed hash (not RandomState): lanes are stored by the local bus across restarts.
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    aggregate.unwrap_or(event_id).hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
}

struct Fnv(u64);
impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Liveness and progress of one consumer, updated by the bus as it works and read by the
/// supervisor for `/readyz` and `/metrics`.
#[derive(Debug)]
pub struct ConsumerHealth {
    consumer: String,
    running: AtomicBool,
    /// Last time (µs) the consume loop was seen alive: waiting, polling or handling.
    heartbeat: AtomicI64,
    handled: AtomicU64,
    next_token: AtomicU64,
    /// Messages handed to the handler and not yet settled, by when they were received.
    in_flight: Mutex<BTreeMap<u64, Instant>>,
}

impl ConsumerHealth {
    pub fn new(consumer: &str) -> Self {
        Self {
            consumer: consumer.to_owned(),
            running: AtomicBool::new(false),
            heartbeat: AtomicI64::new(0),
            handled: AtomicU64::new(0),
            next_token: AtomicU64::new(0),
            in_flight: Mutex::default(),
        }
    }
    pub fn consumer(&self) -> &str {
        &self.consumer
    }
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
        self.beat();
    }
    pub fn beat(&self) {
        self.heartbeat.store(clock::now_micros(), Ordering::SeqCst);
    }
    /// Time since the consume loop last showed life.
    pub fn since_heartbeat(&self) -> Duration {
        let last = self.heartbeat.load(Ordering::SeqCst);
        Duration::from_micros(u64::try_from(clock::now_micros() - last).unwrap_or(0))
    }
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::SeqCst)
    }
    /// Age of the oldest message this consumer holds unsettled (zero when idle).
    pub fn oldest_unacked_age(&self) -> Duration {
        let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight
            .values()
            .min()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }
    fn begin(&self) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::SeqCst);
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, Instant::now());
        self.beat();
        token
    }
    /// A message handed over but not tried: no longer in flight, not counted as handled.
    fn forget(&self, token: u64) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
    }
    fn end(&self, token: u64) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
        self.handled.fetch_add(1, Ordering::SeqCst);
        self.beat();
    }
}

/// What the bus knows about a message's earlier deliveries.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct History {
    /// Permanent failures before this delivery.
    pub failed_attempts: u32,
    /// Transient failures before this delivery.
    pub transient_failures: u32,
    /// When (µs) the first failure of any kind happened.
    pub first_failed_at: Option<i64>,
}

/// What the bus must do with a delivery.
#[derive(Debug)]
pub(crate) enum Verdict {
    Ack,
    /// Deliver again after `delay` with this history.
    Retry {
        delay: Duration,
        history: History,
        error: String,
    },
    DeadLetter {
        history: History,
        error: String,
    },
}

/// Delivers consecutive messages of one lane as a batch ([`Handler::handle_batch`]) and
/// decides the fate of each message the handler tried, in order; the verdicts may be fewer
/// than the messages (never none): the rest were not tried and go back as they were. An
/// unreadable message ends the batch before it, and is dead-lettered when it is first.
pub(crate) async fn judge_batch(
    handler: &dyn Handler,
    subscription: &Subscription,
    messages: &[(&[u8], History)],
) -> Vec<Verdict> {
    let mut envelopes = Vec::with_capacity(messages.len());
    for (body, history) in messages {
        match Envelope::from_json(body) {
            Ok(envelope) => envelopes.push((envelope, *history)),
            Err(err) if envelopes.is_empty() => return vec![unreadable(*history, &err)],
            Err(_) => break,
        }
    }
    let batch: Vec<Delivery<'_>> = envelopes
        .iter()
        .map(|(envelope, history)| Delivery {
            envelope,
            attempt: history.failed_attempts.saturating_add(1),
        })
        .collect();
    let health = subscription.health.clone();
    let tokens: Vec<u64> = batch.iter().map(|_| health.begin()).collect();
    let consumer = subscription.consumer.as_str();
    let handled = std::panic::AssertUnwindSafe(handler.handle_batch(consumer, &batch));
    let mut results = futures_util::FutureExt::catch_unwind(handled)
        .await
        .unwrap_or_else(|_| vec![Err(HandlerError::permanent("handler panicked"))]);
    results.truncate(batch.len());
    if results.is_empty() {
        results.push(Err(HandlerError::permanent(
            "the handler answered for none of its messages",
        )));
    }
    for (i, token) in tokens.into_iter().enumerate() {
        if i < results.len() {
            health.end(token);
        } else {
            health.forget(token);
        }
    }
    let mut verdicts = Vec::with_capacity(results.len());
    for ((envelope, history), result) in envelopes.iter().zip(results) {
        verdicts.push(verdict(handler, subscription, envelope, *history, result).await);
    }
    verdicts
}

fn unreadable(history: History, err: &impl std::fmt::Display) -> Verdict {
    Verdict::DeadLetter {
        history: History {
            failed_attempts: history.failed_attempts.saturating_add(1),
            ..history
        },
        error: format!("unreadable envelope: {err}"),
    }
}

/// The fate of a delivery from the handler's answer and the message's history.
async fn verdict(
    handler: &dyn Handler,
    subscription: &Subscription,
    envelope: &Envelope,
    history: History,
    result: Result<(), HandlerError>,
) -> Verdict {
    let consumer = subscription.consumer.as_str();
    let attempt = history.failed_attempts.saturating_add(1);
    let now = clock::now_micros();
    let policy = &subscription.retry;
    let error = match result {
        Ok(()) => {
            metrics::counter!("bus_consumed_total", "consumer" => consumer.to_owned()).increment(1);
            return Verdict::Ack;
        }
        Err(e) => e,
    };
    match error.kind {
        FailureKind::Deferred => {
            metrics::counter!("bus_deferred_total", "consumer" => consumer.to_owned()).increment(1);
            Verdict::Retry {
                delay: policy.defer_delay,
                history,
                error: error.message,
            }
        }
        FailureKind::Transient => {
            let first = history.first_failed_at.unwrap_or(now);
            let ceiling = i64::try_from(policy.transient_ceiling.as_micros()).unwrap_or(i64::MAX);
            let next = History {
                transient_failures: history.transient_failures.saturating_add(1),
                first_failed_at: Some(first),
                ..history
            };
            if now.saturating_sub(first) >= ceiling {
                let error = format!(
                    "transient failures for longer than {:?}: {}",
                    policy.transient_ceiling, error.message
                );
                return dead_letter(handler, subscription, envelope, next, error).await;
            }
            let delay = policy.backoff(next.transient_failures);
            tracing::warn!(consumer, transient_failures = next.transient_failures, error = %error.message, ?delay, "event handler failed transiently; will retry");
            metrics::counter!("bus_retried_total", "consumer" => consumer.to_owned()).increment(1);
            Verdict::Retry {
                delay,
                history: next,
                error: error.message,
            }
        }
        FailureKind::Permanent => {
            let next = History {
                failed_attempts: attempt,
                first_failed_at: Some(history.first_failed_at.unwrap_or(now)),
                ..history
            };
            if attempt >= policy.max_attempts {
                return dead_letter(handler, subscription, envelope, next, error.message).await;
            }
            let delay = policy.backoff(attempt);
            tracing::warn!(consumer, attempts = attempt, error = %error.message, ?delay, "event handler failed; will retry");
            metrics::counter!("bus_retried_total", "consumer" => consumer.to_owned()).increment(1);
            Verdict::Retry {
                delay,
                history: next,
                error: error.message,
            }
        }
    }
}

/// Tells the handler, then dead-letters; if the handler cannot take note now, the message
/// is retried as after a transient failure instead.
async fn dead_letter(
    handler: &dyn Handler,
    subscription: &Subscription,
    envelope: &Envelope,
    history: History,
    error: String,
) -> Verdict {
    let noted = std::panic::AssertUnwindSafe(handler.dead_lettering(envelope, &error));
    match futures_util::FutureExt::catch_unwind(noted).await {
        Ok(Ok(())) => Verdict::DeadLetter { history, error },
        Ok(Err(e)) => Verdict::Retry {
            delay: subscription
                .retry
                .backoff(history.transient_failures.max(1)),
            history,
            error: format!("dead-lettering postponed: {e}"),
        },
        Err(_) => Verdict::Retry {
            delay: subscription.retry.max_backoff,
            history,
            error: "dead-lettering postponed: the handler's callback panicked".into(),
        },
    }
}

/// Runs `handling` (the handling of one delivery) inside the trace its envelope carries,
/// in a `consume` span, as the handling of that envelope (what it publishes inherits its
/// correlation). A panic is caught here and becomes a permanent failure of this message:
/// the consumer goes on.
pub async fn scoped<F>(consumer: &str, delivery: &Delivery<'_>, handling: F) -> F::Output
where
    F: std::future::Future<Output = Result<(), HandlerError>>,
{
    use futures_util::FutureExt;
    use tracing::Instrument;
    let envelope = delivery.envelope;
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
        attempt = delivery.attempt,
    );
    crate::telemetry::attach_span(&span, &ctx);
    let handled =
        crate::telemetry::with_trace(ctx, crate::events::while_handling(envelope, handling))
            .instrument(span);
    match std::panic::AssertUnwindSafe(handled).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            tracing::error!(consumer, event_id = %envelope.id, panic = %what, "event handler panicked");
            metrics::counter!("bus_handler_panics_total", "consumer" => consumer.to_owned())
                .increment(1);
            Err(HandlerError::permanent(format!("handler panicked: {what}")))
        }
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
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(4), Duration::from_millis(800));
        assert_eq!(p.backoff(5), Duration::from_secs(1));
        assert_eq!(p.backoff(40), Duration::from_secs(1));
    }

    #[test]
    fn topic_patterns_follow_amqp_rules() {
        assert!(topic_matches("orders.Placed", "orders.Placed"));
        assert!(!topic_matches("orders.Placed", "orders.Paid"));
        assert!(topic_matches("orders.*", "orders.Placed"));
        assert!(!topic_matches("orders.*", "orders.Placed.v2"));
        assert!(!topic_matches("orders.*", "orders"));
        assert!(topic_matches("orders.#", "orders"));
        assert!(topic_matches("orders.#", "orders.Placed.v2"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("#.Placed", "orders.Placed"));
        assert!(topic_matches("*.Placed", "orders.Placed"));
        assert!(!topic_matches("*.Placed", "a.orders.Placed"));
        assert!(topic_matches("a.#.z", "a.z"));
        assert!(topic_matches("a.#.z", "a.b.c.z"));
        assert!(!topic_matches("a.#.z", "a.b.c"));
    }

    #[test]
    fn an_aggregate_always_gets_the_same_lane() {
        let a = lane_of(Some("order:1"), "x", 8);
        for id in ["y", "z", "w"] {
            assert_eq!(lane_of(Some("order:1"), id, 8), a);
        }
        let spread: std::collections::HashSet<_> =
            (0..64).map(|i| lane_of(None, &i.to_string(), 8)).collect();
        assert!(spread.len() > 4, "ids spread over lanes");
    }
}
