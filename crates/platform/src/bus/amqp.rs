//! The RabbitMQ bus: the distributed deployment's transport for events and commands.
//!
//! It gives the same contract as [`super::local::LocalBus`], built from broker pieces:
//!
//! * one durable topic exchange (`rendermart.events`); an envelope is published to it with
//!   its event type as routing key, persistent, and [`Bus::publish`] returns only once the
//!   broker has confirmed it (publisher confirms); a command goes through the default
//!   exchange straight to its consumer's queue, confirmed and mandatory;
//! * per consumer, a quorum queue `{exchange}.{consumer}` bound to its topic patterns, with
//!   **single active consumer** (replicas take over from each other but never interleave
//!   one queue), a retry queue `….retry`, a dead-letter queue `….dlq` (bound to the
//!   direct exchange `{exchange}.dlx`) and `….bindings`, a one-message queue holding the
//!   patterns last bound, so a pattern dropped from the code is unbound (there is no
//!   management API to ask the broker).
//!
//! The one thing to know: **a delivery is acked only after its fate is settled on the
//! broker** — the handler succeeded, or a copy was published *with confirm* to the retry
//! queue or to the dead-letter queue. A crash at any point therefore redelivers (the inbox
//! makes that harmless) and never loses a message. If the copy cannot be published, the
//! copy is retried, not the handler.
//!
//! Retries are copies, not requeues: a failed delivery is republished to the retry queue
//! with a per-message `expiration` equal to the backoff and our attempt headers; when it
//! expires, the retry queue dead-letters it back to the main queue through the default
//! exchange. The copy never carries the broker's `x-death` history, because RabbitMQ
//! silently drops a message that expires twice in the same queue with no rejection in
//! between (it takes that for a dead-letter cycle). Messages expire only at the head of a
//! queue, so a short backoff queued behind a longer one waits for it: the backoff is a
//! minimum, never shortened.
//!
//! Publishing and consuming use **separate connections**: during a memory or disk alarm the
//! broker blocks publishing connections, and acks (which drain queues and so clear the
//! alarm) must keep flowing. Every publish — connecting, taking the ordering lock, writing
//! the frames, waiting for the confirm — is bounded by one timeout, and no lock is held
//! while waiting for the broker except the short per-channel one that keeps confirm
//! numbering straight.

use std::{
    collections::HashSet,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions,
        BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    protocol::{AMQPErrorKind, AMQPSoftError},
    publisher_confirm::Confirmation,
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind,
};
use tokio::sync::mpsc;

use super::{
    judge_batch, lane_of, Bus, BusError, DeadLetter, Handler, History, Outgoing, Subscription,
    Verdict,
};
use crate::{events::Envelope, shutdown::Shutdown};

/// Deliveries the broker may push per lane before they are acked.
const PREFETCH_PER_LANE: u16 = 8;
/// Permanent failures behind this delivery (absent on the first delivery).
const ATTEMPTS_HEADER: &str = "x-rm-attempts";
/// Transient failures behind this delivery.
const TRANSIENT_HEADER: &str = "x-rm-transient";
/// When (UTC µs) the first failure happened.
const FIRST_FAILED_HEADER: &str = "x-rm-first-failed";
/// The last handler error, for whoever inspects the retry or dead-letter queue.
const ERROR_HEADER: &str = "x-rm-error";
/// The envelope's aggregate, so a delivery is given its lane without parsing the body.
const AGGREGATE_HEADER: &str = "x-rm-aggregate";
const TRACEPARENT_HEADER: &str = "traceparent";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on one publish, from asking for the connection to the broker's confirm.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
const SETTLE_RETRY_MAX: Duration = Duration::from_secs(10);
const RESUBSCRIBE_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest a consumer's setup (channel, topology, bindings, consume) may take: a broker
/// that stops answering mid-setup means a retry, never a consumer that waits for good.
const CONSUMER_SETUP_TIMEOUT: Duration = Duration::from_secs(15);
const HEARTBEAT: Duration = Duration::from_secs(1);
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
    publish_timeout: Duration,
    /// The publishing connection and its confirm-mode channel. The std mutex is only ever
    /// held to clone or replace the `Arc`, never across an await.
    publisher: Mutex<Option<Arc<Publisher>>>,
    /// Serialises reconnecting the publisher (bounded by the publish timeout).
    publisher_connecting: tokio::sync::Mutex<()>,
    /// The consuming connection (acks, queue declarations, counts, gets).
    consuming: Mutex<Option<Arc<Connection>>>,
    consuming_connecting: tokio::sync::Mutex<()>,
    /// Destination queues already declared for commands (bounded by the code's consumers).
    declared: Mutex<HashSet<String>>,
}

/// A publishing connection and its channel in confirm mode.
struct Publisher {
    connection: Connection,
    channel: Channel,
    /// lapin numbers a confirm before it queues the frames, so two publishers racing on one
    /// channel could be matched to each other's confirms: the frames are handed over under
    /// this lock (held for one synchronous poll, never across an await); the confirms are
    /// awaited outside it (pipelined).
    order: Mutex<()>,
}

/// The broker objects that belong to one consumer.
struct Queues {
    main: String,
    retry: String,
    dlq: String,
    dlx: String,
    bindings: String,
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
        Self::connect_with(url, exchange, DEFAULT_PUBLISH_TIMEOUT).await
    }

    /// As [`AmqpBus::connect`], with the bound on every publish.
    pub async fn connect_with(
        url: &str,
        exchange: &str,
        publish_timeout: Duration,
    ) -> Result<Self, BusError> {
        if exchange.is_empty() {
            return Err(BusError::Unavailable(
                "the AMQP exchange name must not be empty".into(),
            ));
        }
        let bus = Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                exchange: exchange.to_owned(),
                publish_timeout,
                publisher: Mutex::new(None),
                publisher_connecting: tokio::sync::Mutex::new(()),
                consuming: Mutex::new(None),
                consuming_connecting: tokio::sync::Mutex::new(()),
                declared: Mutex::default(),
            }),
        };
        tokio::time::timeout(CONNECT_TIMEOUT, bus.publisher())
            .await
            .map_err(|_| unavailable("timed out connecting to the AMQP broker"))??;
        Ok(bus)
    }

    fn queues(&self, consumer: &str) -> Queues {
        let exchange = &self.inner.exchange;
        Queues {
            main: format!("{exchange}.{consumer}"),
            retry: format!("{exchange}.{consumer}.retry"),
            dlq: format!("{exchange}.{consumer}.dlq"),
            dlx: format!("{exchange}.dlx"),
            bindings: format!("{exchange}.{consumer}.bindings"),
        }
    }

    /// A healthy publisher, (re)connecting if needed.
    async fn publisher(&self) -> Result<Arc<Publisher>, BusError> {
        let healthy = |p: &Arc<Publisher>| {
            p.connection.status().connected() && p.channel.status().connected()
        };
        if let Some(p) = lock(&self.inner.publisher).clone() {
            if healthy(&p) {
                return Ok(p);
            }
        }
        let _connecting = self.inner.publisher_connecting.lock().await;
        if let Some(p) = lock(&self.inner.publisher).clone() {
            if healthy(&p) {
                return Ok(p);
            }
            tracing::warn!("AMQP publishing connection lost; reconnecting");
        }
        let connection = open_connection(&self.inner.url, "rendermart-publish").await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unavailable)?;
        declare_events_exchange(&channel, &self.inner.exchange)
            .await
            .map_err(unavailable)?;
        let publisher = Arc::new(Publisher {
            connection,
            channel,
            order: Mutex::new(()),
        });
        *lock(&self.inner.publisher) = Some(publisher.clone());
        Ok(publisher)
    }

    /// The consuming connection, (re)connecting if needed.
    async fn consuming(&self) -> Result<Arc<Connection>, BusError> {
        if let Some(c) = lock(&self.inner.consuming).clone() {
            if c.status().connected() {
                return Ok(c);
            }
        }
        let _connecting = self.inner.consuming_connecting.lock().await;
        if let Some(c) = lock(&self.inner.consuming).clone() {
            if c.status().connected() {
                return Ok(c);
            }
            tracing::warn!("AMQP consuming connection lost; reconnecting");
        }
        let connection = Arc::new(open_connection(&self.inner.url, "rendermart-consume").await?);
        *lock(&self.inner.consuming) = Some(connection.clone());
        Ok(connection)
    }

    /// Publishes one message and waits for the broker's confirm, all within the publish
    /// timeout. With `mandatory`, a message no queue accepted counts as not confirmed.
    async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), BusError> {
        let attempt = async {
            let publisher = self.publisher().await?;
            let options = BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            };
            // lapin registers the confirm and queues the frames in the publish future's
            // first poll (no await between them): that poll alone is done under the
            // ordering lock, so confirms match their messages, while the wait for the
            // frames to be written and for the confirm is pipelined with other publishes.
            let mut publish = Box::pin(publisher.channel.basic_publish(
                exchange,
                routing_key,
                options,
                payload,
                properties,
            ));
            let first = std::future::poll_fn(|cx| {
                let _order = lock(&publisher.order);
                std::task::Poll::Ready(publish.as_mut().poll(cx))
            })
            .await;
            let confirm = match first {
                std::task::Poll::Ready(result) => result,
                std::task::Poll::Pending => publish.await,
            }
            .map_err(not_confirmed)?;
            match confirm.await {
                Err(e) => Err(not_confirmed(e)),
                Ok(Confirmation::Ack(None)) => Ok(()),
                Ok(Confirmation::Ack(Some(returned))) => Err(not_confirmed(format!(
                    "no queue accepted it ({} {})",
                    returned.reply_code, returned.reply_text
                ))),
                // A nack is the broker's trouble (e.g. a full queue), not the message's.
                Ok(Confirmation::Nack(_)) => Err(unavailable("the broker nacked it")),
                Ok(Confirmation::NotRequested) => Err(not_confirmed(
                    "the publisher channel is not in confirm mode",
                )),
            }
        };
        match tokio::time::timeout(self.inner.publish_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(BusError::TimedOut(format!(
                "no confirm within {:?} (is the broker blocking publishers?)",
                self.inner.publish_timeout
            ))),
        }
    }

    /// Declares the consumer's exchanges and queues (idempotent), without bindings.
    async fn declare_queues(&self, channel: &Channel, consumer: &str) -> Result<(), lapin::Error> {
        let q = self.queues(consumer);
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        declare_events_exchange(channel, &self.inner.exchange).await?;
        channel
            .exchange_declare(
                &q.dlx,
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
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
                consumer,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut main = quorum_arguments(Some((&q.dlx, consumer)));
        main.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        channel.queue_declare(&q.main, durable_queue, main).await?;
        // Expired retries go back to the main queue through the default exchange.
        channel
            .queue_declare(
                &q.retry,
                durable_queue,
                quorum_arguments(Some(("", &q.main))),
            )
            .await?;
        // A classic queue: it is ready when its declare is answered. A quorum queue's
        // leader may still be starting then (RabbitMQ 3.10), and a basic.get on it fails
        // with `noproc`, a hard error that closes the whole consuming connection.
        let mut remembered = FieldTable::default();
        remembered.insert("x-queue-type".into(), long_string("classic"));
        remembered.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
        remembered.insert("x-overflow".into(), long_string("drop-head"));
        channel
            .queue_declare(&q.bindings, durable_queue, remembered)
            .await?;
        Ok(())
    }

    /// Binds the subscription's patterns and unbinds the ones it had last time and no
    /// longer has, remembering the new list in the consumer's `.bindings` queue.
    async fn update_bindings(
        &self,
        channel: &Channel,
        subscription: &Subscription,
    ) -> Result<(), BusError> {
        let q = self.queues(&subscription.consumer);
        let previous = channel
            .basic_get(&q.bindings, BasicGetOptions { no_ack: false })
            .await
            .map_err(unavailable)?;
        let old: Vec<String> = previous
            .as_ref()
            .and_then(|m| serde_json::from_slice(&m.delivery.data).ok())
            .unwrap_or_default();
        for pattern in old.iter().filter(|p| !subscription.event_types.contains(p)) {
            tracing::info!(consumer = %subscription.consumer, pattern, "removing a stale binding");
            channel
                .queue_unbind(
                    &q.main,
                    &self.inner.exchange,
                    pattern,
                    FieldTable::default(),
                )
                .await
                .map_err(unavailable)?;
        }
        for pattern in &subscription.event_types {
            channel
                .queue_bind(
                    &q.main,
                    &self.inner.exchange,
                    pattern,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(unavailable)?;
        }
        let list = serde_json::to_vec(&subscription.event_types).unwrap_or_default();
        self.publish_confirmed(
            "",
            &q.bindings,
            &list,
            BasicProperties::default().with_delivery_mode(PERSISTENT),
            true,
        )
        .await?;
        if let Some(previous) = previous {
            previous
                .delivery
                .ack(BasicAckOptions::default())
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Opens a channel for `subscription`, declares its topology and starts consuming,
    /// within [`CONSUMER_SETUP_TIMEOUT`].
    async fn open_consumer(
        &self,
        subscription: &Subscription,
    ) -> Result<(Channel, Consumer), BusError> {
        let opened = Arc::new(Mutex::new(None::<Channel>));
        let setup = self.set_up_consumer(subscription, opened.clone());
        match tokio::time::timeout(CONSUMER_SETUP_TIMEOUT, setup).await {
            Ok(result) => result,
            Err(_) => {
                // Whatever the channel had reached goes back to the broker with it.
                let channel = lock(&opened).take();
                if let Some(channel) = channel {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        channel.close(REPLY_SUCCESS, "setup timed out"),
                    )
                    .await;
                }
                Err(unavailable(format!(
                    "setting up consumer {} took longer than {CONSUMER_SETUP_TIMEOUT:?}",
                    subscription.consumer
                )))
            }
        }
    }

    async fn set_up_consumer(
        &self,
        subscription: &Subscription,
        opened: Arc<Mutex<Option<Channel>>>,
    ) -> Result<(Channel, Consumer), BusError> {
        let connection = self.consuming().await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        *lock(&opened) = Some(channel.clone());
        self.declare_queues(&channel, &subscription.consumer)
            .await
            .map_err(unavailable)?;
        self.update_bindings(&channel, subscription).await?;
        let prefetch = PREFETCH_PER_LANE
            .saturating_mul(u16::try_from(subscription.lanes()).unwrap_or(u16::MAX));
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
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
        subscription: Arc<Subscription>,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
        first: (Channel, Consumer),
    ) {
        let consumer_name = subscription.consumer.as_str();
        let health = subscription.health();
        health.set_running(true);
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
                        health.beat();
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
        health.set_running(false);
        tracing::info!(consumer = consumer_name, "AMQP consumer stopped");
    }

    /// Hands deliveries to the lanes (by aggregate) until shutdown or until the broker ends
    /// the stream; then lets every lane finish the message it is handling.
    async fn run_session(
        &self,
        subscription: &Arc<Subscription>,
        handler: &Arc<dyn Handler>,
        shutdown: &Shutdown,
        consumer: &mut Consumer,
    ) -> SessionEnd {
        let lanes = subscription.lanes();
        let session_over = Shutdown::new();
        let mut senders = Vec::with_capacity(lanes);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..lanes {
            let (tx, rx) = mpsc::channel::<Delivery>(usize::from(PREFETCH_PER_LANE));
            senders.push(tx);
            set.spawn(self.clone().lane(
                subscription.clone(),
                handler.clone(),
                shutdown.clone(),
                session_over.clone(),
                rx,
            ));
        }
        let health = subscription.health();
        let mut tick = tokio::time::interval(HEARTBEAT);
        let end = loop {
            // Only the wait for the next delivery races the shutdown signal.
            let next = tokio::select! {
                biased;
                _ = shutdown.wait() => break SessionEnd::Shutdown,
                _ = tick.tick() => { health.beat(); continue; }
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    let lane = delivery_lane(&delivery, lanes);
                    if senders[lane].send(delivery).await.is_err() {
                        break SessionEnd::Lost("a consumer lane stopped".into());
                    }
                }
                Some(Err(err)) => break SessionEnd::Lost(err.to_string()),
                None => break SessionEnd::Lost("the broker cancelled the consumer".into()),
            }
        };
        session_over.trigger();
        drop(senders);
        while set.join_next().await.is_some() {}
        end
    }

    /// One lane: hands its deliveries to the handler in order, as many as have arrived
    /// (up to the lane's prefetch) in one batch, and settles each it tried; those it did
    /// not try lead the next batch (decision 68).
    async fn lane(
        self,
        subscription: Arc<Subscription>,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
        session_over: Shutdown,
        mut deliveries: mpsc::Receiver<Delivery>,
    ) {
        let mut untried: Vec<Delivery> = Vec::new();
        loop {
            let mut batch = std::mem::take(&mut untried);
            if batch.is_empty() {
                match deliveries.recv().await {
                    Some(delivery) => batch.push(delivery),
                    None => break,
                }
            }
            while batch.len() < usize::from(PREFETCH_PER_LANE) {
                match deliveries.try_recv() {
                    Ok(delivery) => batch.push(delivery),
                    Err(_) => break,
                }
            }
            // Buffered deliveries after the end go back to the queue with the channel.
            if shutdown.is_triggered() || session_over.is_triggered() {
                break;
            }
            let messages: Vec<(&[u8], History)> = batch
                .iter()
                .map(|d| (d.data.as_slice(), history_of(&d.properties)))
                .collect();
            let verdicts = judge_batch(handler.as_ref(), &subscription, &messages).await;
            untried = batch.split_off(verdicts.len().min(batch.len()));
            for (delivery, verdict) in batch.into_iter().zip(verdicts) {
                self.settle(&subscription, delivery, verdict, &session_over)
                    .await;
            }
        }
    }

    /// Acks, or publishes the retry or dead-letter copy and then acks. A copy that cannot be
    /// published is retried with backoff (the handler is not run again); if the session
    /// ends first, the delivery is returned to the queue.
    async fn settle(
        &self,
        subscription: &Subscription,
        delivery: Delivery,
        verdict: Verdict,
        session_over: &Shutdown,
    ) {
        let consumer = subscription.consumer.as_str();
        let q = self.queues(consumer);
        let mut wait = Duration::from_millis(100);
        loop {
            let moved = match &verdict {
                Verdict::Ack => Ok(()),
                Verdict::Retry {
                    delay,
                    history,
                    error,
                } => {
                    let properties = forwarded_properties(&delivery.properties, history, error)
                        .with_expiration(delay.as_millis().max(1).to_string().into());
                    self.publish_confirmed("", &q.retry, &delivery.data, properties, true)
                        .await
                }
                Verdict::DeadLetter { history, error } => {
                    let properties = forwarded_properties(&delivery.properties, history, error);
                    let moved = self
                        .publish_confirmed(&q.dlx, consumer, &delivery.data, properties, true)
                        .await;
                    if moved.is_ok() {
                        tracing::error!(consumer, attempts = history.failed_attempts, %error, "event dead-lettered");
                        metrics::counter!("bus_dead_lettered_total", "consumer" => consumer.to_owned())
                            .increment(1);
                    }
                    moved
                }
            };
            match moved {
                Ok(()) => {
                    if let Err(err) = delivery.ack(BasicAckOptions::default()).await {
                        // The broker will redeliver it; the handler's inbox makes that harmless.
                        tracing::warn!(consumer, error = %err, "ack failed; the event will be redelivered");
                    }
                    return;
                }
                Err(err) => {
                    tracing::warn!(consumer, error = %err, ?wait, "could not move a failed event aside; retrying the copy");
                    metrics::counter!("bus_settle_failures_total", "consumer" => consumer.to_owned())
                        .increment(1);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = session_over.wait() => {
                            let requeue = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
                            let _ = delivery.nack(requeue).await;
                            return;
                        }
                    }
                    wait = (wait * 2).min(SETTLE_RETRY_MAX);
                }
            }
        }
    }

    /// Messages ready in `queue`, or 0 if it does not exist (yet).
    async fn message_count(&self, queue: &str) -> Result<u64, BusError> {
        let connection = self.consuming().await?;
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

    /// Declares a command's destination queues once, so a command sent before its
    /// consumer first subscribed waits in its queue instead of being returned.
    async fn declare_destination(&self, consumer: &str) -> Result<(), BusError> {
        if lock(&self.inner.declared).contains(consumer) {
            return Ok(());
        }
        let connection = self.consuming().await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        let declared = self.declare_queues(&channel, consumer).await;
        if channel.status().connected() {
            let _ = channel.close(REPLY_SUCCESS, "done").await;
        }
        declared.map_err(unavailable)?;
        lock(&self.inner.declared).insert(consumer.to_owned());
        Ok(())
    }

    /// Takes up to `limit` messages of `queue` without acking them; they return to the
    /// queue when `channel` closes.
    async fn peek(
        &self,
        channel: &Channel,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, BusError> {
        let mut taken = Vec::new();
        // Messages another channel just returned (an earlier listing) become ready again
        // a moment later: an empty get is believed only once the queue reports none ready.
        let mut patience = 20;
        while taken.len() < limit {
            match channel
                .basic_get(queue, BasicGetOptions { no_ack: false })
                .await
            {
                Ok(Some(message)) => taken.push(message.delivery),
                Ok(None) => {
                    let ready = channel
                        .queue_declare(
                            queue,
                            QueueDeclareOptions {
                                passive: true,
                                ..QueueDeclareOptions::default()
                            },
                            FieldTable::default(),
                        )
                        .await
                        .map(|q| q.message_count())
                        .unwrap_or(0);
                    if ready == 0 || patience == 0 {
                        break;
                    }
                    patience -= 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) if is_not_found(&err) => break,
                Err(err) => return Err(unavailable(err)),
            }
        }
        Ok(taken)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn open_connection(url: &str, name: &str) -> Result<Connection, BusError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties))
        .await
        .map_err(|_| unavailable("timed out connecting to the AMQP broker"))?
        .map_err(unavailable)
}

async fn declare_events_exchange(channel: &Channel, exchange: &str) -> Result<(), lapin::Error> {
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
    if let Some(aggregate) = &envelope.aggregate {
        headers.insert(AGGREGATE_HEADER.into(), long_string(aggregate));
    }
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(envelope.id.to_string().into())
        .with_type(envelope.event_type.clone().into())
        .with_timestamp(envelope.occurred_at.unix_timestamp().max(0) as u64)
        .with_headers(headers)
}

/// The lane of a delivery: by the aggregate header (or the body, for messages published
/// before it existed), else by message id.
fn delivery_lane(delivery: &Delivery, lanes: usize) -> usize {
    let header = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(AGGREGATE_HEADER))
        .and_then(|v| match v {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
            _ => None,
        });
    let aggregate = header.or_else(|| {
        Envelope::from_json(&delivery.data)
            .ok()
            .and_then(|e| e.aggregate)
    });
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    lane_of(aggregate.as_deref(), &id, lanes)
}

/// The properties of a retry or dead-letter copy: the original's identity and our
/// headers, without the broker's dead-letter history (see the module comment).
fn forwarded_properties(
    original: &BasicProperties,
    history: &History,
    error: &str,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(original_headers) = original.headers() {
        for (key, value) in original_headers {
            let key = key.as_str();
            let broker_history = key == "x-death"
                || key == "x-delivery-count"
                || key.starts_with("x-first-death-")
                || key.starts_with("x-last-death-");
            // Ours are rewritten below from `history` (a redrive starts afresh).
            let ours = key == FIRST_FAILED_HEADER;
            if !broker_history && !ours {
                headers.insert(key.into(), value.clone());
            }
        }
    }
    headers.insert(
        ATTEMPTS_HEADER.into(),
        AMQPValue::LongLongInt(i64::from(history.failed_attempts)),
    );
    headers.insert(
        TRANSIENT_HEADER.into(),
        AMQPValue::LongLongInt(i64::from(history.transient_failures)),
    );
    if let Some(first) = history.first_failed_at {
        headers.insert(FIRST_FAILED_HEADER.into(), AMQPValue::LongLongInt(first));
    }
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

fn header_i64(properties: &BasicProperties, name: &str) -> Option<i64> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    Some(match value {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok()?,
        _ => return None,
    })
}

/// What our headers say about the deliveries before this one.
fn history_of(properties: &BasicProperties) -> History {
    let count = |name| {
        header_i64(properties, name)
            .and_then(|n| u32::try_from(n.max(0)).ok())
            .unwrap_or(0)
    };
    History {
        failed_attempts: count(ATTEMPTS_HEADER),
        transient_failures: count(TRANSIENT_HEADER),
        first_failed_at: header_i64(properties, FIRST_FAILED_HEADER),
    }
}

fn header_string(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

fn dead_letter_of(delivery: &Delivery) -> DeadLetter {
    let body = String::from_utf8_lossy(&delivery.data).into_owned();
    let envelope = Envelope::from_json(&delivery.data).ok();
    DeadLetter {
        event_id: envelope
            .as_ref()
            .map(|e| e.id.to_string())
            .or_else(|| {
                delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str().to_owned())
            })
            .unwrap_or_default(),
        event_type: envelope.map(|e| e.event_type).unwrap_or_default(),
        attempts: history_of(&delivery.properties).failed_attempts,
        error: header_string(&delivery.properties, ERROR_HEADER),
        body,
    }
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

    async fn send(&self, consumer: &str, envelope: &Envelope) -> Result<(), BusError> {
        tokio::time::timeout(
            self.inner.publish_timeout,
            self.declare_destination(consumer),
        )
        .await
        .map_err(|_| not_confirmed("timed out declaring the destination queue"))??;
        self.publish_confirmed(
            "",
            &self.queues(consumer).main,
            &envelope.to_json(),
            envelope_properties(envelope),
            true,
        )
        .await
    }

    /// All messages are handed to the channel first, then their confirms are awaited
    /// together (the relay gives at most one message per aggregate per batch).
    async fn publish_batch(&self, batch: &[Outgoing]) -> Vec<Result<(), BusError>> {
        let sends = batch.iter().map(|m| async move {
            match &m.destination {
                None => self.publish(&m.envelope).await,
                Some(to) => self.send(to, &m.envelope).await,
            }
        });
        futures_util::future::join_all(sends).await
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
        lock(&self.inner.declared).insert(subscription.consumer.clone());
        let bus = self.clone();
        Ok(tokio::spawn(bus.consume(
            Arc::new(subscription),
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

    async fn dead_letters(
        &self,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let connection = self.consuming().await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        let taken = self.peek(&channel, &self.queues(consumer).dlq, limit).await;
        // Closing the channel returns every peeked message to the DLQ.
        let _ = channel.close(REPLY_SUCCESS, "listed").await;
        Ok(taken?.iter().map(dead_letter_of).collect())
    }

    async fn redrive(&self, consumer: &str, event_id: Option<&str>) -> Result<u64, BusError> {
        let q = self.queues(consumer);
        let depth = crate::events_ops::MAX_LISTED;
        let connection = self.consuming().await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        let result = async {
            let taken = self.peek(&channel, &q.dlq, depth).await?;
            let mut moved = 0;
            for delivery in taken {
                let letter = dead_letter_of(&delivery);
                if event_id.is_some_and(|id| id != letter.event_id) {
                    continue;
                }
                // A fresh start: our attempt headers are dropped with the broker's.
                let properties =
                    forwarded_properties(&delivery.properties, &History::default(), "redriven");
                self.publish_confirmed("", &q.main, &delivery.data, properties, true)
                    .await?;
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(unavailable)?;
                moved += 1;
            }
            Ok::<u64, BusError>(moved)
        }
        .await;
        let _ = channel.close(REPLY_SUCCESS, "redriven").await;
        result
    }

    async fn bindings(&self, consumer: &str) -> Result<Vec<String>, BusError> {
        let connection = self.consuming().await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        let taken = self
            .peek(&channel, &self.queues(consumer).bindings, 1)
            .await;
        let _ = channel.close(REPLY_SUCCESS, "read").await;
        Ok(taken?
            .first()
            .and_then(|d| serde_json::from_slice(&d.data).ok())
            .unwrap_or_default())
    }

    /// Reachability through the consuming connection: a broker that blocks publishers is
    /// reachable (and the relay's metrics say that it is not publishing).
    async fn ping(&self) -> Result<(), BusError> {
        let check = async {
            let connection = self.consuming().await?;
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
        };
        tokio::time::timeout(CONNECT_TIMEOUT, check)
            .await
            .map_err(|_| unavailable("the broker did not answer in time"))?
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
        assert_eq!(history_of(&original).failed_attempts, 0);

        let history = History {
            failed_attempts: 2,
            transient_failures: 3,
            first_failed_at: Some(42),
        };
        let copy = forwarded_properties(&original, &history, "boom");
        let h = copy.headers().clone().unwrap();
        assert!(!h.contains_key("x-death"));
        assert!(!h.contains_key("x-first-death-queue"));
        assert!(h.contains_key(TRACEPARENT_HEADER));
        assert_eq!(copy.message_id().as_ref().map(|s| s.as_str()), Some("id-1"));
        assert_eq!(*copy.delivery_mode(), Some(PERSISTENT));
        let back = history_of(&copy);
        assert_eq!(back.failed_attempts, 2);
        assert_eq!(back.transient_failures, 3);
        assert_eq!(back.first_failed_at, Some(42));
    }
}
