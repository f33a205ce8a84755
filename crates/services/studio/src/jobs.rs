//! Generation jobs: created by the API (idempotent per user and key), run by a worker under
//! a bounded number of renders at a time, and finished with their image stored and
//! `ImageGenerated` published in one transaction, or failed with a readable reason. A job
//! left `running` by a process that died is taken up again after a while.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use rendermart_platform::{
    bus::HandlerError,
    clock,
    consumer::{EventHandler, HandlerContext},
    db::{is_unique_violation, Db},
    events::{DecodeError, Envelope, Event, Incoming},
    objects::{ContentType, ObjectKey, Objects},
    outbox,
    shutdown::Shutdown,
};
use rendermart_studio_api::{GenerationFailed, GenerationId, GenerationRequested, ImageGenerated};
use rendermart_types::{Currency, Money, UserId};
use rendermart_wallet_api::{CreditsHeld, CreditsRefused};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use tokio::sync::{Notify, Semaphore};
use utoipa::ToSchema;

use crate::{generate_with_retry, GenerationRequest, ImageSize, InvalidInput, Providers};

/// Studio's settings (`[studio]` in `rendermart.toml`, `RENDERMART_STUDIO__*`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StudioConfig {
    /// Renders (provider calls) at once in this process; 0 means one per CPU core.
    pub max_concurrent_renders: usize,
    /// Jobs one person may have queued or running at once; beyond it, 429.
    pub per_user_active_jobs: i64,
    /// A job `running` for longer than this (its process died) is run again, in seconds.
    pub stale_after_secs: u64,
    /// Attempts before a job that keeps being interrupted fails.
    pub max_attempts: i64,
    /// A job still queued after this long (its credits were never held, or no worker took
    /// it) fails and its hold is released, in seconds.
    pub queue_timeout_secs: u64,
    /// What a generation costs, per size, in minor units of the wallet's currency.
    pub prices: Prices,
    /// The image providers.
    pub providers: crate::StudioProvidersConfig,
}

impl Default for StudioConfig {
    fn default() -> Self {
        Self {
            max_concurrent_renders: 0,
            per_user_active_jobs: 3,
            stale_after_secs: 300,
            max_attempts: 3,
            queue_timeout_secs: 600,
            prices: Prices::default(),
            providers: crate::StudioProvidersConfig::default(),
        }
    }
}

/// What a generation costs, per size, in minor units (`[studio.prices]`). 0 makes that size
/// free: nothing is held.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prices {
    pub square_512: i64,
    pub square_768: i64,
    pub square_1024: i64,
    /// 1024×576 and 576×1024.
    pub wide_1024: i64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            square_512: 50,
            square_768: 100,
            square_1024: 200,
            wide_1024: 150,
        }
    }
}

impl Prices {
    pub fn of(&self, size: ImageSize) -> i64 {
        match size {
            ImageSize::Square512 => self.square_512,
            ImageSize::Square768 => self.square_768,
            ImageSize::Square1024 => self.square_1024,
            ImageSize::Landscape1024x576 | ImageSize::Portrait576x1024 => self.wide_1024,
        }
    }

    /// Every price is at least 0.
    pub fn check(&self) -> Result<(), String> {
        for (name, price) in [
            ("square_512", self.square_512),
            ("square_768", self.square_768),
            ("square_1024", self.square_1024),
            ("wide_1024", self.wide_1024),
        ] {
            if price < 0 {
                return Err(format!("studio.prices.{name} must be at least 0"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StudioError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("Idempotency-Key is required")]
    KeyRequired,
    #[error("too many generations at once")]
    TooManyActive { limit: i64 },
    #[error("not found")]
    NotFound,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

/// The database being unreachable or busy (a lock wait, a serialization failure) is
/// "try again" (503); anything else is a bug (500).
impl From<sqlx::Error> for StudioError {
    fn from(e: sqlx::Error) -> Self {
        if rendermart_platform::db::is_transient(&e) {
            StudioError::Unavailable(e.to_string())
        } else {
            StudioError::Internal(e.into())
        }
    }
}

/// A job as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow, ToSchema)]
pub struct Job {
    pub id: GenerationId,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub status: String,
    /// Why it failed, in a sentence.
    pub error: Option<String>,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub width: i64,
    pub height: i64,
    pub seed: i64,
    pub provider: String,
    pub model: Option<String>,
    /// What it costs, in minor units; held when it is queued, charged when it succeeds,
    /// released when it fails.
    pub price: i64,
    /// UTC microseconds since the epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

impl Job {
    /// The asset the image became (same id), once the job succeeded.
    pub fn asset_id(&self) -> Option<GenerationId> {
        (self.status == "succeeded").then_some(self.id)
    }
}

/// How often the worker looks for jobs a dead process left running.
const STALE_CHECK_EVERY: Duration = Duration::from_secs(5);

const JOB_COLUMNS: &str = "id, status, error, prompt, negative_prompt, width, height, seed, \
                           provider, model, price, created_at, updated_at";

pub struct Jobs {
    db: Db,
    objects: Objects,
    providers: Providers,
    config: StudioConfig,
    renders: Arc<Semaphore>,
    wake: Arc<Notify>,
}

/// A created job, and whether it is an earlier one the same key made.
pub struct Created {
    pub job: Job,
    pub replayed: bool,
}

impl Jobs {
    pub fn new(db: Db, objects: Objects, providers: Providers, config: StudioConfig) -> Self {
        let renders = match config.max_concurrent_renders {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Self {
            db,
            objects,
            providers,
            config,
            renders: Arc::new(Semaphore::new(renders)),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Queues a generation for `user`. The same key again answers with the first job.
    pub async fn create(
        &self,
        user: UserId,
        key: &str,
        request: GenerationRequest,
    ) -> Result<Created, StudioError> {
        if let Some(job) = self.by_key(user, key).await? {
            return Ok(Created {
                job,
                replayed: true,
            });
        }
        // The provider must exist: an unknown one is the caller's mistake, now.
        let provider = self.providers.get(request.provider.as_ref())?;
        let mut conn = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO generation_quota (user_id, active) VALUES ($1, 0) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user)
        .execute(&mut *conn)
        .await?;
        let within = sqlx::query(
            "UPDATE generation_quota SET active = active + 1 WHERE user_id = $1 AND active < $2",
        )
        .bind(user)
        .bind(self.config.per_user_active_jobs)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if within != 1 {
            return Err(StudioError::TooManyActive {
                limit: self.config.per_user_active_jobs,
            });
        }
        let id = GenerationId::new();
        let now = clock::now_micros();
        let (width, height) = request.size.dimensions();
        let price = self.config.prices.of(request.size);
        let hold = if price > 0 { "pending" } else { "free" };
        let inserted = sqlx::query(
            "INSERT INTO generation_jobs (id, user_id, idempotency_key, prompt, negative_prompt, \
             width, height, seed, provider, status, price, hold, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $10, $11, $12, $12)",
        )
        .bind(id)
        .bind(user)
        .bind(key)
        .bind(request.prompt.as_str())
        .bind(request.negative_prompt.as_ref().map(|n| n.as_str()))
        .bind(i64::from(width))
        .bind(i64::from(height))
        .bind(i64::from(request.seed.value()))
        .bind(provider.name())
        .bind(price)
        .bind(hold)
        .bind(now)
        .execute(&mut *conn)
        .await;
        match inserted {
            Ok(_) => {
                if price > 0 {
                    // Asked in the job's own transaction: a job exists iff its hold is asked.
                    let ask = GenerationRequested {
                        generation_id: id,
                        user,
                        amount: price,
                        description: describe(request.size, request.prompt.as_str()),
                    };
                    outbox::enqueue(
                        &mut conn,
                        &Envelope::new(&ask).with_aggregate("generation", id),
                    )
                    .await?;
                }
                conn.commit().await?;
                if price > 0 {
                    self.db.outbox_committed();
                }
            }
            Err(e) if is_unique_violation(&e) => {
                drop(conn);
                let job = self.by_key(user, key).await?.ok_or(StudioError::NotFound)?;
                return Ok(Created {
                    job,
                    replayed: true,
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.wake.notify_one();
        metrics::counter!("studio_generations_queued_total").increment(1);
        let job = self.get(user, id).await?;
        Ok(Created {
            job,
            replayed: false,
        })
    }

    async fn by_key(&self, user: UserId, key: &str) -> Result<Option<Job>, StudioError> {
        let mut conn = self.db.pool().acquire().await?;
        Ok(sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM generation_jobs WHERE user_id = $1 AND idempotency_key = $2"
        ))
        .bind(user)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?)
    }

    /// The job, if `user` owns it (anyone else: not found).
    pub async fn get(&self, user: UserId, id: GenerationId) -> Result<Job, StudioError> {
        let mut conn = self.db.pool().acquire().await?;
        sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM generation_jobs WHERE id = $1 AND user_id = $2"
        ))
        .bind(id)
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StudioError::NotFound)
    }

    /// The settings it runs with (the pages show `prices`).
    pub fn config(&self) -> &StudioConfig {
        &self.config
    }

    /// What wakes the worker: a job queued or its credits held.
    pub(crate) fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The user's latest jobs, newest first.
    pub async fn mine(&self, user: UserId, limit: i64) -> Result<Vec<Job>, StudioError> {
        let mut conn = self.db.pool().acquire().await?;
        Ok(sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM generation_jobs WHERE user_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(user)
        .bind(limit.clamp(1, 100))
        .fetch_all(&mut *conn)
        .await?)
    }

    /// The worker: takes queued jobs (and jobs a dead process left running) and runs them,
    /// a bounded number at a time, until `stop`; then lets the running ones finish.
    pub async fn run(self: Arc<Self>, stop: Shutdown) {
        let mut running = tokio::task::JoinSet::new();
        // Looking for jobs a dead process left is not worth a query per job claimed.
        let mut next_stale_check = tokio::time::Instant::now();
        while !stop.is_triggered() {
            if tokio::time::Instant::now() >= next_stale_check {
                if let Err(e) = self.requeue_stale().await {
                    tracing::warn!(error = %e, "requeueing stale generation jobs failed");
                }
                next_stale_check = tokio::time::Instant::now() + STALE_CHECK_EVERY;
            }
            match self.claim_next().await {
                Ok(Some((job, user, permit))) => {
                    let jobs = self.clone();
                    running.spawn(async move {
                        jobs.render(job, user).await;
                        drop(permit);
                    });
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "claiming a generation job failed"),
            }
            while running.try_join_next().is_some() {}
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.wait() => {}
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// A render slot and the oldest queued job, marked running; `None` when there is none.
    async fn claim_next(
        &self,
    ) -> Result<Option<(Job, UserId, tokio::sync::OwnedSemaphorePermit)>, StudioError> {
        let permit = self
            .renders
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StudioError::Internal(e.into()))?;
        let mut conn = self.db.pool().acquire().await?;
        let candidates: Vec<(GenerationId, UserId)> = sqlx::query_as(
            "SELECT id, user_id FROM generation_jobs WHERE status = 'queued' \
             AND hold IN ('held', 'free') ORDER BY created_at LIMIT 10",
        )
        .fetch_all(&mut *conn)
        .await?;
        for (id, user) in candidates {
            let claimed = sqlx::query(
                "UPDATE generation_jobs SET status = 'running', attempts = attempts + 1, \
                 updated_at = $1 WHERE id = $2 AND status = 'queued'",
            )
            .bind(clock::now_micros())
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if claimed == 1 {
                drop(conn);
                let job = self.get(user, id).await?;
                return Ok(Some((job, user, permit)));
            }
        }
        Ok(None)
    }

    /// Jobs left `running` longer than `stale_after_secs` by a process that died: queued
    /// again, or failed once they used up their attempts.
    async fn requeue_stale(&self) -> Result<(), StudioError> {
        let before = clock::now_micros()
            - i64::try_from(self.config.stale_after_secs.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX);
        let stale: Vec<(GenerationId, UserId, i64)> = {
            let mut conn = self.db.pool().acquire().await?;
            sqlx::query_as(
                "SELECT id, user_id, attempts FROM generation_jobs \
                 WHERE status = 'running' AND updated_at < $1 LIMIT 100",
            )
            .bind(before)
            .fetch_all(&mut *conn)
            .await?
        };
        for (id, user, attempts) in stale {
            if attempts >= self.config.max_attempts {
                self.fail(
                    id,
                    user,
                    "The generation was interrupted too many times. Try again.",
                    "running",
                )
                .await?;
            } else {
                let mut conn = self.db.pool().acquire().await?;
                sqlx::query(
                    "UPDATE generation_jobs SET status = 'queued', updated_at = $1 \
                     WHERE id = $2 AND status = 'running' AND updated_at < $3",
                )
                .bind(clock::now_micros())
                .bind(id)
                .bind(before)
                .execute(&mut *conn)
                .await?;
                tracing::warn!(job = %id, "an interrupted generation is queued again");
            }
        }
        self.fail_overdue().await
    }

    /// Jobs still queued after `queue_timeout_secs` fail, and their credits are released.
    async fn fail_overdue(&self) -> Result<(), StudioError> {
        let before = clock::now_micros()
            - i64::try_from(self.config.queue_timeout_secs.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX);
        let overdue: Vec<(GenerationId, UserId, String)> = {
            let mut conn = self.db.pool().acquire().await?;
            sqlx::query_as(
                "SELECT id, user_id, hold FROM generation_jobs \
                 WHERE status = 'queued' AND created_at < $1 LIMIT 100",
            )
            .bind(before)
            .fetch_all(&mut *conn)
            .await?
        };
        for (id, user, hold) in overdue {
            let reason = if hold == "pending" {
                "The wallet did not answer in time, so the generation did not start. \
                 Nothing was charged; try again."
            } else {
                "The generation waited too long to start. Nothing was charged; try again."
            };
            self.fail(id, user, reason, "queued").await?;
            tracing::warn!(job = %id, "a generation that never started has failed");
        }
        Ok(())
    }

    /// The wallet's answer to a job's hold: held (the worker may run it) or refused (the
    /// job fails, nothing was held).
    pub(crate) async fn apply_hold(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        answer: HoldAnswer,
    ) -> Result<(), sqlx::Error> {
        match answer {
            HoldAnswer::Held(held) => {
                sqlx::query(
                    "UPDATE generation_jobs SET hold = 'held', updated_at = $1 \
                     WHERE id = $2 AND hold = 'pending'",
                )
                .bind(clock::now_micros())
                .bind(held.generation_id)
                .execute(&mut **tx)
                .await?;
            }
            HoldAnswer::Refused(refused) => {
                sqlx::query(
                    "UPDATE generation_jobs SET hold = 'refused', updated_at = $1 \
                     WHERE id = $2 AND hold = 'pending'",
                )
                .bind(clock::now_micros())
                .bind(refused.generation_id)
                .execute(&mut **tx)
                .await?;
                let reason = match Currency::parse(&refused.currency) {
                    Ok(c) => format!(
                        "Not enough credits: this image costs {} and you have {} available. \
                         Top up your wallet and try again.",
                        Money::new(refused.amount, c),
                        Money::new(refused.available.max(0), c)
                    ),
                    Err(_) => "Not enough credits for this image. Top up your wallet and try \
                               again."
                        .to_owned(),
                };
                fail_in(tx, refused.generation_id, refused.user, &reason, "queued").await?;
            }
        }
        Ok(())
    }

    async fn render(&self, job: Job, user: UserId) {
        let outcome = self.try_render(&job, user).await;
        let result = match outcome {
            Ok(()) => Ok(()),
            Err(reason) => self.fail(job.id, user, &reason, "running").await,
        };
        if let Err(e) = result {
            // The job stays `running`; it is taken up again once stale.
            tracing::warn!(job = %job.id, error = %e, "recording a generation's outcome failed");
        }
    }

    /// Renders, stores and finishes the job; `Err` is the reason it failed.
    async fn try_render(&self, job: &Job, user: UserId) -> Result<(), String> {
        let input = crate::GenerationInput {
            prompt: job.prompt.clone(),
            negative_prompt: job.negative_prompt.clone(),
            width: u32::try_from(job.width).ok(),
            height: u32::try_from(job.height).ok(),
            seed: u64::try_from(job.seed).ok(),
            provider: Some(job.provider.clone()),
        };
        let request = GenerationRequest::parse(&input).map_err(|e| e.to_string())?;
        let provider = self
            .providers
            .get(request.provider.as_ref())
            .map_err(|e| e.to_string())?;
        let started = std::time::Instant::now();
        let image = generate_with_retry(provider.as_ref(), &request, self.providers.retry_policy())
            .await
            .map_err(|e| e.to_string())?;
        metrics::histogram!("studio_render_seconds").record(started.elapsed().as_secs_f64());
        let original = format!("generations/{}.png", job.id);
        let thumbnail = format!("generations/{}.thumb.png", job.id);
        let png = ContentType::parse("image/png").map_err(|e| e.0)?;
        let store = self.objects.store();
        for (key, bytes) in [(&original, image.png), (&thumbnail, image.thumbnail_png)] {
            let key = ObjectKey::parse(key.as_str()).map_err(|e| e.to_string())?;
            store
                .put(&key, Bytes::from(bytes), &png)
                .await
                .map_err(|e| format!("The image could not be stored: {e}"))?;
        }
        let event = ImageGenerated {
            generation_id: job.id,
            creator: user,
            prompt: job.prompt.clone(),
            negative_prompt: job.negative_prompt.clone(),
            provider: image.provider,
            model: image.model.clone(),
            seed: image.seed,
            width: image.width,
            height: image.height,
            original_key: original.clone(),
            thumbnail_key: thumbnail.clone(),
            created_at: clock::now(),
        };
        let finished = async {
            let mut tx = self.db.begin().await?;
            let updated = sqlx::query(
                "UPDATE generation_jobs SET status = 'succeeded', model = $1, original_key = $2, \
                 thumbnail_key = $3, updated_at = $4 WHERE id = $5 AND status = 'running'",
            )
            .bind(&image.model)
            .bind(&original)
            .bind(&thumbnail)
            .bind(clock::now_micros())
            .bind(job.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 1 {
                release_quota(&mut tx, user).await?;
                outbox::enqueue(
                    &mut tx,
                    &Envelope::new(&event).with_aggregate("generation", job.id),
                )
                .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        };
        finished
            .await
            .map_err(|e| format!("The image could not be recorded: {e}"))?;
        self.db.outbox_committed();
        metrics::counter!("studio_generations_finished_total", "outcome" => "succeeded")
            .increment(1);
        Ok(())
    }

    /// Fails a job in `from` status with a reason a person can read.
    async fn fail(
        &self,
        id: GenerationId,
        user: UserId,
        reason: &str,
        from: &str,
    ) -> Result<(), StudioError> {
        let mut tx = self.db.begin().await?;
        let failed = fail_in(&mut tx, id, user, reason, from).await?;
        tx.commit().await?;
        if failed {
            self.db.outbox_committed();
        }
        Ok(())
    }
}

/// Fails job `id` if it is in `from` status, frees its quota slot and publishes
/// `GenerationFailed` (the wallet releases its hold), all in `tx`. `false` when the job was
/// no longer in `from` (another path finished it first).
pub(crate) async fn fail_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: GenerationId,
    user: UserId,
    reason: &str,
    from: &str,
) -> Result<bool, sqlx::Error> {
    let price: Option<(i64,)> = sqlx::query_as(
        "UPDATE generation_jobs SET status = 'failed', error = $1, updated_at = $2 \
         WHERE id = $3 AND status = $4 RETURNING price",
    )
    .bind(reason)
    .bind(clock::now_micros())
    .bind(id)
    .bind(from)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((amount,)) = price else {
        return Ok(false);
    };
    release_quota(tx, user).await?;
    let failed = GenerationFailed {
        generation_id: id,
        user,
        amount,
        reason: reason.to_owned(),
    };
    outbox::enqueue(tx, &Envelope::new(&failed).with_aggregate("generation", id)).await?;
    metrics::counter!("studio_generations_finished_total", "outcome" => "failed").increment(1);
    Ok(true)
}

/// The wallet's history line for a generation: its size and the start of its prompt.
fn describe(size: ImageSize, prompt: &str) -> String {
    let (w, h) = size.dimensions();
    let mut short: String = prompt.chars().take(60).collect();
    if short.len() < prompt.len() {
        short.push('…');
    }
    format!("Image generation ({w}×{h}): \"{short}\"")
}

/// One job of `user` is no longer queued or running.
async fn release_quota(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user: UserId,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE generation_quota SET active = active - 1 WHERE user_id = $1 AND active > 0",
    )
    .bind(user)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The wallet's answers about a job's credits (consumer `studio.holds`).
pub(crate) enum HoldAnswer {
    Held(CreditsHeld),
    Refused(CreditsRefused),
}

impl Incoming for HoldAnswer {
    fn event_types() -> Vec<String> {
        vec![CreditsHeld::TYPE.into(), CreditsRefused::TYPE.into()]
    }

    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        match envelope.event_type.as_str() {
            CreditsHeld::TYPE => envelope.decode().map(Self::Held),
            CreditsRefused::TYPE => envelope.decode().map(Self::Refused),
            _ => Err(DecodeError::unexpected("a credit hold answer", envelope)),
        }
    }
}

/// Applies the wallet's answers to jobs' holds, and wakes the worker for held ones.
pub(crate) struct HoldsIn {
    pub(crate) wake: Arc<Notify>,
}

#[async_trait::async_trait]
impl EventHandler for HoldsIn {
    type Message = HoldAnswer;

    async fn handle(
        &self,
        cx: &mut HandlerContext<'_>,
        answer: HoldAnswer,
    ) -> Result<(), HandlerError> {
        let held = matches!(answer, HoldAnswer::Held(_));
        Jobs::apply_hold(cx.tx(), answer).await?;
        if held {
            // Before the commit: at worst the worker looks once too early and finds the
            // job on its next round (500 ms).
            self.wake.notify_one();
        }
        Ok(())
    }
}
