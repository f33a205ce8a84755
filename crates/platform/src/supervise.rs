//! Supervision: every long-lived task of a process (consumers, relays, timer workers,
//! services' background workers) runs under a [`Supervisor`] that restarts it, with
//! backoff, when it returns or panics before shutdown.
//!
//! The one thing to know: the supervisor is also what `/readyz` and `/metrics` ask about
//! consumers. Its [`Liveness`] check fails while a consumer is down (between a crash and
//! its restart) or its loop has not shown life for `stall_after`; its
//! [`MetricsSampler`] sets, per consumer, `bus_consumer_up`, `bus_consumer_lag`,
//! `bus_consumer_oldest_unacked_seconds`, `bus_dlq_depth` and
//! `supervised_restarts_total` per task. Names are the code's consumer and worker names,
//! never request data, so the label sets are bounded.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio::task::JoinHandle;

use crate::{
    bus::{Bus, ConsumerHealth, Handler, Subscription},
    consumer::{Consumer, EventHandler},
    http::ReadinessCheck,
    shutdown::Shutdown,
};

/// Something `/metrics` samples at scrape time.
#[async_trait]
pub trait MetricsSampler: Send + Sync {
    async fn sample(&self);
}

/// Restart backoff: doubles from `initial` to `max`; a task that ran for `reset_after`
/// starts again from `initial`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// One supervised task, as `/readyz` sees it.
struct Unit {
    name: String,
    running: AtomicBool,
    restarts: AtomicU64,
    consumer: Option<(Arc<ConsumerHealth>, Arc<dyn Bus>)>,
}

/// A supervised task's state, for operators and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitStatus {
    pub name: String,
    pub running: bool,
    pub restarts: u64,
}

/// Starts tasks and keeps them running until shutdown.
#[derive(Clone)]
pub struct Supervisor {
    shutdown: Shutdown,
    backoff: Backoff,
    stall_after: Duration,
    units: Arc<Mutex<Vec<Arc<Unit>>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Supervisor {
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            shutdown,
            backoff: Backoff::default(),
            stall_after: Duration::from_secs(60),
            units: Arc::default(),
            tasks: Arc::default(),
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long a consumer loop may show no life before `/readyz` reports it stalled.
    pub fn with_stall_after(mut self, stall_after: Duration) -> Self {
        self.stall_after = stall_after;
        self
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Runs `make(shutdown)` until shutdown, restarting it with backoff whenever it
    /// returns or panics earlier.
    pub fn spawn_worker<F, Fut>(&self, name: &str, make: F)
    where
        F: Fn(Shutdown) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let unit = self.register(name, None);
        self.spawn_unit(unit, move |shutdown| {
            make(shutdown).map(|()| Ok::<(), String>(()))
        });
    }

    /// Subscribes `subscription` on `bus` and keeps it subscribed: a consumer task that
    /// ends (its channel could not be reopened, a lane died) or fails to subscribe is
    /// started again with backoff.
    pub fn spawn_consumer(
        &self,
        bus: Arc<dyn Bus>,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
    ) {
        let unit = self.register(
            &subscription.consumer,
            Some((subscription.health(), bus.clone())),
        );
        self.spawn_unit(unit, move |shutdown| {
            let (bus, subscription, handler) = (bus.clone(), subscription.clone(), handler.clone());
            async move {
                let task = bus
                    .subscribe(subscription, handler, shutdown)
                    .await
                    .map_err(|e| e.to_string())?;
                task.await.map_err(|e| e.to_string())
            }
        });
    }

    /// [`Supervisor::spawn_consumer`] for a consumer built with the helper.
    pub fn consume<H: EventHandler>(&self, bus: Arc<dyn Bus>, consumer: Consumer<H>) {
        let (subscription, handler) = consumer.into_parts();
        self.spawn_consumer(bus, subscription, handler);
    }

    /// Waits until every consumer has subscribed once (its queue and bindings exist, so an
    /// event published from then on reaches it), for at most `within`; false if one has
    /// not. Producers start after this: an event published to a topic before its first
    /// consumer ever bound a queue reaches nobody.
    pub async fn consumers_subscribed(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let all = lock(&self.units)
                .iter()
                .filter_map(|u| u.consumer.as_ref())
                .all(|(health, _)| health.is_running());
            if all {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn register(
        &self,
        name: &str,
        consumer: Option<(Arc<ConsumerHealth>, Arc<dyn Bus>)>,
    ) -> Arc<Unit> {
        let unit = Arc::new(Unit {
            name: name.to_owned(),
            running: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
            consumer,
        });
        lock(&self.units).push(unit.clone());
        unit
    }

    fn spawn_unit<F, Fut>(&self, unit: Arc<Unit>, make: F)
    where
        F: Fn(Shutdown) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        let backoff = self.backoff;
        let task = tokio::spawn(async move {
            let mut wait = backoff.initial;
            while !shutdown.is_triggered() {
                unit.running.store(true, Ordering::SeqCst);
                let started = Instant::now();
                let ended = std::panic::AssertUnwindSafe(make(shutdown.clone()))
                    .catch_unwind()
                    .await;
                unit.running.store(false, Ordering::SeqCst);
                if shutdown.is_triggered() {
                    break;
                }
                let why = match ended {
                    Ok(Ok(())) => "returned".to_owned(),
                    Ok(Err(e)) => e,
                    Err(_) => "panicked".to_owned(),
                };
                if started.elapsed() >= backoff.reset_after {
                    wait = backoff.initial;
                }
                unit.restarts.fetch_add(1, Ordering::SeqCst);
                metrics::counter!("supervised_restarts_total", "task" => unit.name.clone())
                    .increment(1);
                tracing::error!(task = %unit.name, why, ?wait, "supervised task stopped; restarting");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait() => break,
                }
                wait = (wait * 2).min(backoff.max);
            }
        });
        lock(&self.tasks).push(task);
    }

    /// Every supervised task's state.
    pub fn status(&self) -> Vec<UnitStatus> {
        lock(&self.units)
            .iter()
            .map(|u| UnitStatus {
                name: u.name.clone(),
                running: u.running.load(Ordering::SeqCst)
                    && u.consumer.as_ref().is_none_or(|(h, _)| h.is_running()),
                restarts: u.restarts.load(Ordering::SeqCst),
            })
            .collect()
    }

    /// The `/readyz` check of this process's consumers and workers.
    pub fn liveness(&self) -> Arc<dyn ReadinessCheck> {
        Arc::new(Liveness(self.clone()))
    }

    /// The `/metrics` sampler of this process's consumers.
    pub fn sampler(&self) -> Arc<dyn MetricsSampler> {
        Arc::new(self.clone())
    }

    /// After shutdown was triggered: waits (up to `timeout`) for every task to finish.
    pub async fn join(&self, timeout: Duration) -> bool {
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.tasks));
        tokio::time::timeout(timeout, async {
            for task in tasks {
                let _ = task.await;
            }
        })
        .await
        .is_ok()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `/readyz`: every supervised task runs, and no consumer loop has stalled.
pub struct Liveness(Supervisor);

#[async_trait]
impl ReadinessCheck for Liveness {
    fn name(&self) -> String {
        "consumers".into()
    }

    async fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for unit in lock(&self.0.units).iter() {
            if !unit.running.load(Ordering::SeqCst) {
                problems.push(format!("{} is down", unit.name));
                continue;
            }
            if let Some((health, _)) = &unit.consumer {
                if !health.is_running() {
                    problems.push(format!("{} is not consuming", unit.name));
                } else if health.since_heartbeat() > self.0.stall_after {
                    problems.push(format!(
                        "{} has shown no life for {}s",
                        unit.name,
                        health.since_heartbeat().as_secs()
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

#[async_trait]
impl MetricsSampler for Supervisor {
    async fn sample(&self) {
        let units: Vec<Arc<Unit>> = lock(&self.units).clone();
        for unit in units {
            let Some((health, bus)) = &unit.consumer else {
                continue;
            };
            let consumer = unit.name.clone();
            let up = unit.running.load(Ordering::SeqCst) && health.is_running();
            metrics::gauge!("bus_consumer_up", "consumer" => consumer.clone()).set(if up {
                1.0
            } else {
                0.0
            });
            metrics::gauge!("bus_consumer_oldest_unacked_seconds", "consumer" => consumer.clone())
                .set(health.oldest_unacked_age().as_secs_f64());
            metrics::gauge!("bus_consumer_handled", "consumer" => consumer.clone())
                .set(health.handled() as f64);
            let bounded = Duration::from_secs(2);
            if let Ok(Ok(n)) = tokio::time::timeout(bounded, bus.pending(&consumer)).await {
                metrics::gauge!("bus_consumer_lag", "consumer" => consumer.clone()).set(n as f64);
            }
            if let Ok(Ok(n)) = tokio::time::timeout(bounded, bus.dead_lettered(&consumer)).await {
                metrics::gauge!("bus_dlq_depth", "consumer" => consumer.clone()).set(n as f64);
            }
        }
    }
}
