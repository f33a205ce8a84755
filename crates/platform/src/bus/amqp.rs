//! The RabbitMQ bus: the distributed deployment's transport for events.
//!
//! It gives the same contract as [`super::local::LocalBus`], built from broker pieces:
//!
//! * one durable topic exchange (`rendermart.events`); an envelope is published to it with
//!   its event type as routing key, persistent, and [`Bus::publish`] returns only once the
//!   broker has confirmed it (publisher confirms);
//! * per consumer, a quorum queue `{exchange}.{consumer}` bound to the event types it wants,
//!   a retry queue `{exchange}.{consumer}.retry` and a dead-letter queue
//!   `{exchange}.{consumer}.dlq` (bound to the direct exchange `{exchange}.dlx`).
//!
//! The one thing to know: **a delivery is acked only after its fate is settled on the
//! broker** — the handler succeeded, or a copy was published *with confirm* to the retry
//! queue or to the dead-letter queue. A crash at any point therefore redelivers (the inbox
//! makes that harmless) and never loses a message.
//!
//! Retries are copies, not requeues: a failed delivery is republished to the retry queue
//! with a per-message `expiration` equal to the backoff and an incremented `x-rm-attempts`
//! header; when it expires, the retry queue dead-letters it back to the main queue through
//! the default exchange. The copy never carries the broker's `x-death` history, because
//! RabbitMQ silently drops a message that expires twice in the same queue with no rejection
//! in between (it takes that for a dead-letter cycle).
//!
//! All three queues are quorum queues (replicated, as the architecture asks). The retry
//! queue uses the `at-least-once` dead-letter strategy (which requires `x-overflow:
//! reject-publish`), so the broker's move from retry back to the main queue is itself
//! confirmed internally and cannot drop a message; the main queue carries the same
//! arguments and points its dead letters at the DLQ, as a safety net for anything the broker
//! dead-letters on its own (e.g. a delivery limit set by policy). Messages expire only at
//! the head of a queue, so a short backoff queued behind a longer one waits for it: the
//! backoff is a minimum, never shortened.
//!
//! One connection is shared by the publisher channel (in confirm mode) and one channel per
//! subscription. When the connection dies (broker restart), the next publish reconnects
//! once, and consumers re-open their channel and topology with a backoff until shutdown.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    protocol::{AMQPErrorKind, AMQPSoftError},
    publisher_confirm::Confirmation,
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind,
};
use tokio::sync::Mutex;

use super::{deliver, Bus, BusError, Handler, Outcome, Subscription};
use crate::{events::Envelope, shutdown::Shutdown};

/// Deliveries the broker may push to a consumer before it acks; handled one at a time.
const PREFETCH: u16 = 16;
/// How many failed deliveries a message has behind it (absent on the first delivery).
const ATTEMPTS_HEADER: &str = "x-rm-attempts";
/// The last handler error, for whoever inspects the retry or dead-letter queue.
const ERROR_HEADER: &str = "x-rm-error";
const TRACEPARENT_HEADER: &str = "traceparent";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A broker under a resource alarm blocks publishers; past this, the publish is not confirmed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before a delivery whose retry/dead-letter copy could not be published is requeued.
const SETTLE_FAILURE_PAUSE: Duration = Duration::from_secs(1);
const RESUBSCRIBE_MAX_BACKOFF: Duration = Duration::from_secs(30);
const PERSISTENT: u8 = 2;
const REPLY_SUCCESS: u16 = 200;

/// The RabbitMQ implementation of [`Bus`]. Cheap to clone.
#[derive(Clone)]
pub struct AmqpBus {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    exchange: String,
    link: Mutex<Option<Link>>,
}

/// A live connection and its publisher channel (confirm mode).
struct Link {
    connection: Arc<Connection>,
    publisher: Channel,
}

/// The broker objects that belong to one consumer.
struct Queues {
    main: String,
    retry: String,
    dlq: String,
    dlx: String,
}

/// Why a consuming session ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

fn not_confirmed(e: impl std::fmt::Display) -> BusError {
    BusError::NotConfirmed(e.to_string())
}

fn is_not_found(err: &lapin::Error) -> bool {
    matches!(err, lapin::Error::ProtocolError(e)
        if *e.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

impl AmqpBus {
    /// Connects to the broker at `url` and declares the durable topic `exchange`.
    pub async fn connect(url: &str, exchange: &str) -> Result<Self, BusError> {
        if exchange.is_empty() {
            return Err(BusError::Unavailable(
                "the AMQP exchange name must not be empty".into(),
            ));
        }
        let bus = Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                exchange: exchange.to_owned(),
                link: Mutex::new(None),
            }),
        };
        bus.connection().await?;
        Ok(bus)
    }

    fn queues(&self, consumer: &str) -> Queues {
        let exchange = &self.inner.exchange;
        Queues {
            main: format!("{exchange}.{consumer}"),
            retry: format!("{exchange}.{consumer}.retry"),
            dlq: format!("{exchange}.{consumer}.dlq"),
            dlx: format!("{exchange}.dlx"),
        }
    }

    /// Makes `slot` hold a healthy link, trying one (re)connection if it does not.
    async fn ensure_link<'a>(&self, slot: &'a mut Option<Link>) -> Result<&'a Link, BusError> {
        let state = slot.as_ref().map(|link| {
            (
                link.connection.status().connected(),
                link.publisher.status().connected(),
            )
        });
        match (slot, state) {
            (Some(link), Some((true, true))) => Ok(link),
            // The connection lives but the publisher channel was closed (a channel error).
            (Some(link), Some((true, false))) => {
                link.publisher = open_publisher(&link.connection, &self.inner.exchange).await?;
                Ok(link)
            }
            (slot, _) => {
                if slot.is_some() {
                    tracing::warn!("AMQP connection lost; reconnecting");
                }
                let link = Link::open(&self.inner.url, &self.inner.exchange).await?;
                Ok(slot.insert(link))
            }
        }
    }

    /// The shared connection, reconnecting once if it is dead.
    async fn connection(&self) -> Result<Arc<Connection>, BusError> {
        let mut slot = self.inner.link.lock().await;
        let link = self.ensure_link(&mut slot).await?;
        Ok(link.connection.clone())
    }

    /// Publishes one message and waits for the broker's confirm. With `mandatory`, a
    /// message no queue accepted comes back and counts as not confirmed.
    async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), BusError> {
        let options = BasicPublishOptions {
            mandatory,
            ..BasicPublishOptions::default()
        };
        // The lock is held only while the frames are handed to the connection: lapin numbers
        // a confirm before it queues the frames, so two unserialised publishers could be
        // matched to each other's confirms. Waiting for the confirm happens outside it.
        let confirm = {
            let mut slot = self.inner.link.lock().await;
            let link = self.ensure_link(&mut slot).await?;
            link.publisher
                .basic_publish(exchange, routing_key, options, payload, properties)
                .await
                .map_err(not_confirmed)?
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Err(_) => Err(not_confirmed("timed out waiting for the broker's confirm")),
            Ok(Err(e)) => Err(not_confirmed(e)),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(not_confirmed(format!(
                "no queue accepted it ({} {})",
                returned.reply_code, returned.reply_text
            ))),
            Ok(Ok(Confirmation::Nack(_))) => Err(not_confirmed("the broker nacked it")),
            Ok(Ok(Confirmation::NotRequested)) => Err(not_confirmed(
                "the publisher channel is not in confirm mode",
            )),
        }
    }

    /// Declares the subscription's exchanges, queues and bindings (idempotent).
    async fn declare_topology(
        &self,
        channel: &Channel,
        subscription: &Subscription,
    ) -> Result<(), lapin::Error> {
        let q = self.queues(&subscription.consumer);
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .exchange_declare(
                &self.inner.exchange,
                ExchangeKind::Topic,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                &q.dlx,
                ExchangeKind::Direct,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;

        channel
            .queue_declare(&q.dlq, durable_queue, quorum_arguments(None))
            .await?;
        channel
            .queue_bind(
                &q.dlq,
                &q.dlx,
                &subscription.consumer,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        channel
            .queue_declare(
                &q.main,
                durable_queue,
                quorum_arguments(Some((&q.dlx, &subscription.consumer))),
            )
            .await?;
        // Expired retries go back to the main queue through the default exchange.
        channel
            .queue_declare(
                &q.retry,
                durable_queue,
                quorum_arguments(Some(("", &q.main))),
            )
            .await?;

        for event_type in &subscription.event_types {
            channel
                .queue_bind(
                    &q.main,
                    &self.inner.exchange,
                    event_type,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Opens a channel for `subscription`, declares its topology and starts consuming.
    async fn open_consumer(
        &self,
        subscription: &Subscription,
    ) -> Result<(Channel, Consumer), BusError> {
        let connection = self.connection().await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        self.declare_topology(&channel, subscription)
            .await
            .map_err(unavailable)?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let tag = format!(
            "{}.{}",
            subscription.consumer,
            uuid::Uuid::now_v7().simple()
        );
        let consumer = channel
            .basic_consume(
                &self.queues(&subscription.consumer).main,
                &tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        Ok((channel, consumer))
    }

    /// The consumer task: consume until shutdown, re-opening the channel if it is lost.
    async fn consume(
        self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
        first: (Channel, Consumer),
    ) {
        let consumer_name = subscription.consumer.as_str();
        let mut session = Some(first);
        let mut failures: u32 = 0;
        while !shutdown.is_triggered() {
            let (channel, mut consumer) = match session.take() {
                Some(s) => s,
                None => match self.open_consumer(&subscription).await {
                    Ok(s) => s,
                    Err(err) => {
                        failures = failures.saturating_add(1);
                        let wait = Duration::from_millis(100 * 2u64.pow(failures.min(9)))
                            .min(RESUBSCRIBE_MAX_BACKOFF);
                        tracing::warn!(consumer = consumer_name, error = %err, ?wait, "cannot resume consuming; will retry");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.wait() => {}
                        }
                        continue;
                    }
                },
            };
            failures = 0;
            match self
                .run_session(&subscription, &handler, &shutdown, &mut consumer)
                .await
            {
                SessionEnd::Shutdown => {
                    stop_consuming(&channel, &consumer, consumer_name).await;
                    break;
                }
                SessionEnd::Lost(why) => {
                    tracing::warn!(
                        consumer = consumer_name,
                        why,
                        "AMQP consumer lost; resubscribing"
                    );
                    // Whatever it had prefetched goes back to the queue with the channel.
                    let _ = channel.close(REPLY_SUCCESS, "resubscribing").await;
                }
            }
        }
        tracing::info!(consumer = consumer_name, "AMQP consumer stopped");
    }

    /// Handles deliveries one at a time until shutdown or until the broker ends the stream.
    async fn run_session(
        &self,
        subscription: &Subscription,
        handler: &Arc<dyn Handler>,
        shutdown: &Shutdown,
        consumer: &mut Consumer,
    ) -> SessionEnd {
        loop {
            // Only the wait for the next delivery races the shutdown signal; a delivery in
            // hand is handled and settled before the signal is looked at again.
            let next = tokio::select! {
                biased;
                _ = shutdown.wait() => return SessionEnd::Shutdown,
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => self.process(subscription, handler, delivery).await,
                Some(Err(err)) => return SessionEnd::Lost(err.to_string()),
                None => return SessionEnd::Lost("the broker cancelled the consumer".into()),
            }
        }
    }

    /// Applies one delivery and settles it: ack, retry copy or dead-letter copy.
    async fn process(
        &self,
        subscription: &Subscription,
        handler: &Arc<dyn Handler>,
        delivery: Delivery,
    ) {
        let consumer = subscription.consumer.as_str();
        let attempt = previous_attempts(&delivery.properties).saturating_add(1);
        let outcome = deliver(handler.as_ref(), consumer, &delivery.data, attempt).await;

        let q = self.queues(consumer);
        let settled = match outcome {
            Outcome::Applied => {
                metrics::counter!("bus_consumed_total", "consumer" => consumer.to_owned())
                    .increment(1);
                Ok(())
            }
            Outcome::Failed(error) if attempt < subscription.retry.max_attempts => {
                let wait = subscription.retry.backoff(attempt);
                tracing::warn!(consumer, attempts = attempt, %error, ?wait, "event handler failed; will retry");
                let properties = forwarded_properties(&delivery.properties, attempt, &error)
                    .with_expiration(wait.as_millis().to_string().into());
                let moved = self
                    .publish_confirmed("", &q.retry, &delivery.data, properties, true)
                    .await;
                if moved.is_ok() {
                    metrics::counter!("bus_retried_total", "consumer" => consumer.to_owned())
                        .increment(1);
                }
                moved
            }
            Outcome::Failed(error) | Outcome::Poison(error) => {
                let properties = forwarded_properties(&delivery.properties, attempt, &error);
                let moved = self
                    .publish_confirmed(&q.dlx, consumer, &delivery.data, properties, true)
                    .await;
                if moved.is_ok() {
                    tracing::error!(consumer, attempts = attempt, %error, "event dead-lettered");
                    metrics::counter!("bus_dead_lettered_total", "consumer" => consumer.to_owned())
                        .increment(1);
                }
                moved
            }
        };

        match settled {
            Ok(()) => {
                if let Err(err) = delivery.ack(BasicAckOptions::default()).await {
                    // The broker will redeliver it; the handler's inbox makes that harmless.
                    tracing::warn!(consumer, error = %err, "ack failed; the event will be redelivered");
                }
            }
            Err(err) => {
                tracing::warn!(consumer, error = %err, "could not move a failed event aside; returning it to the queue");
                tokio::time::sleep(SETTLE_FAILURE_PAUSE).await;
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                if let Err(err) = delivery.nack(requeue).await {
                    tracing::warn!(consumer, error = %err, "nack failed; the event will be redelivered");
                }
            }
        }
    }

    /// Messages ready in `queue`, or 0 if it does not exist (yet).
    async fn message_count(&self, queue: &str) -> Result<u64, BusError> {
        let connection = self.connection().await?;
        // A passive declare of a missing queue closes its channel: use a throwaway one.
        let channel = connection.create_channel().await.map_err(unavailable)?;
        let declared = channel
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        if channel.status().connected() {
            let _ = channel.close(REPLY_SUCCESS, "done").await;
        }
        match declared {
            Ok(q) => Ok(u64::from(q.message_count())),
            Err(err) if is_not_found(&err) => Ok(0),
            Err(err) => Err(unavailable(err)),
        }
    }
}

impl Link {
    async fn open(url: &str, exchange: &str) -> Result<Self, BusError> {
        let properties = ConnectionProperties::default().with_connection_name("rendermart".into());
        let connection =
            tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties))
                .await
                .map_err(|_| unavailable("timed out connecting to the AMQP broker"))?
                .map_err(unavailable)?;
        let connection = Arc::new(connection);
        let publisher = open_publisher(&connection, exchange).await?;
        Ok(Self {
            connection,
            publisher,
        })
    }
}

/// A channel in confirm mode, after making sure the events exchange exists.
async fn open_publisher(connection: &Connection, exchange: &str) -> Result<Channel, BusError> {
    let channel = connection.create_channel().await.map_err(unavailable)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(unavailable)?;
    channel
        .exchange_declare(
            exchange,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(unavailable)?;
    Ok(channel)
}

/// Cancels the consumer and closes its channel, which returns prefetched deliveries.
async fn stop_consuming(channel: &Channel, stream: &Consumer, consumer: &str) {
    if let Err(err) = channel
        .basic_cancel(stream.tag().as_str(), BasicCancelOptions::default())
        .await
    {
        tracing::debug!(consumer, error = %err, "cancelling the consumer failed");
    }
    if let Err(err) = channel.close(REPLY_SUCCESS, "consumer stopped").await {
        tracing::debug!(consumer, error = %err, "closing the consumer channel failed");
    }
}

/// Arguments of a quorum queue, optionally dead-lettering to `(exchange, routing key)`
/// at least once.
fn quorum_arguments(dead_letter_to: Option<(&str, &str)>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    if let Some((exchange, routing_key)) = dead_letter_to {
        args.insert("x-dead-letter-exchange".into(), long_string(exchange));
        args.insert("x-dead-letter-routing-key".into(), long_string(routing_key));
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), long_string("reject-publish"));
    }
    args
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// How the envelope travels: persistent JSON, identified by the envelope id.
fn envelope_properties(envelope: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(trace) = &envelope.trace {
        headers.insert(TRACEPARENT_HEADER.into(), long_string(trace));
    }
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(envelope.id.to_string().into())
        .with_type(envelope.event_type.clone().into())
        .with_timestamp(envelope.occurred_at.unix_timestamp().max(0) as u64)
        .with_headers(headers)
}

/// The properties of a retry or dead-letter copy: the original's identity and our
/// headers, without the broker's dead-letter history (see the module comment).
fn forwarded_properties(original: &BasicProperties, attempts: u32, error: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(original_headers) = original.headers() {
        for (key, value) in original_headers {
            let key = key.as_str();
            let broker_history = key == "x-death"
                || key == "x-delivery-count"
                || key.starts_with("x-first-death-")
                || key.starts_with("x-last-death-");
            if !broker_history {
                headers.insert(key.into(), value.clone());
            }
        }
    }
    headers.insert(
        ATTEMPTS_HEADER.into(),
        AMQPValue::LongLongInt(i64::from(attempts)),
    );
    let error: String = error.chars().take(1000).collect();
    headers.insert(ERROR_HEADER.into(), long_string(&error));

    let mut properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers);
    if let Some(v) = original.content_type() {
        properties = properties.with_content_type(v.clone());
    }
    if let Some(v) = original.message_id() {
        properties = properties.with_message_id(v.clone());
    }
    if let Some(v) = original.kind() {
        properties = properties.with_type(v.clone());
    }
    if let Some(v) = original.timestamp() {
        properties = properties.with_timestamp(*v);
    }
    properties
}

/// Failed deliveries behind this one, from our header (0 on the first delivery).
fn previous_attempts(properties: &BasicProperties) -> u32 {
    let Some(value) = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(ATTEMPTS_HEADER))
    else {
        return 0;
    };
    let n: i64 = match value {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes())
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

#[async_trait]
impl Bus for AmqpBus {
    async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        // Not mandatory: an event nobody subscribes to is published and dropped, as on the
        // local bus.
        self.publish_confirmed(
            &self.inner.exchange,
            &envelope.event_type,
            &envelope.to_json(),
            envelope_properties(envelope),
            false,
        )
        .await
    }

    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        // Declared here, not in the task, so a broker that refuses the topology is an error
        // the caller sees at start-up.
        let first = self.open_consumer(&subscription).await?;
        let bus = self.clone();
        Ok(tokio::spawn(bus.consume(
            subscription,
            handler,
            shutdown,
            first,
        )))
    }

    /// Ready messages in the main queue plus those waiting out a retry backoff: both are
    /// still to be applied by this consumer (the local bus counts them the same way).
    async fn pending(&self, consumer: &str) -> Result<u64, BusError> {
        let q = self.queues(consumer);
        Ok(self.message_count(&q.main).await? + self.message_count(&q.retry).await?)
    }

    async fn dead_lettered(&self, consumer: &str) -> Result<u64, BusError> {
        self.message_count(&self.queues(consumer).dlq).await
    }

    async fn ping(&self) -> Result<(), BusError> {
        let connection = self.connection().await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        let declared = channel
            .exchange_declare(
                &self.inner.exchange,
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        if channel.status().connected() {
            let _ = channel.close(REPLY_SUCCESS, "done").await;
        }
        declared.map_err(unavailable)
    }

    fn kind(&self) -> &'static str {
        "amqp"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_copies_drop_the_broker_history_and_count_attempts() {
        let mut headers = FieldTable::default();
        headers.insert("x-death".into(), AMQPValue::LongString("cycle".into()));
        headers.insert("x-first-death-queue".into(), long_string("q"));
        headers.insert(TRACEPARENT_HEADER.into(), long_string("00-abc"));
        let original = BasicProperties::default()
            .with_message_id("id-1".into())
            .with_headers(headers);
        assert_eq!(previous_attempts(&original), 0);

        let copy = forwarded_properties(&original, 2, "boom");
        let h = copy.headers().clone().unwrap();
        assert!(!h.contains_key("x-death"));
        assert!(!h.contains_key("x-first-death-queue"));
        assert!(h.contains_key(TRACEPARENT_HEADER));
        assert_eq!(copy.message_id().as_ref().map(|s| s.as_str()), Some("id-1"));
        assert_eq!(*copy.delivery_mode(), Some(PERSISTENT));
        assert_eq!(previous_attempts(&copy), 2);
    }
}
