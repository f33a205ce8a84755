//! Studio: image generation.
//!
//! * [`domain`] — parsed input: [`Prompt`], [`NegativePrompt`], [`ImageSize`], [`Seed`],
//!   [`ProviderName`], [`GenerationRequest`] (each constructor names the bad field);
//! * [`render`] — the offline `procedural` renderer (prompt + seed → deterministic PNG and
//!   thumbnail);
//! * [`providers`] — the [`ImageProvider`] trait, [`ProviderError`], the `procedural`,
//!   `openai` and (feature `bedrock`) `bedrock` implementations, the [`Providers`] registry
//!   built from [`StudioProvidersConfig`], and [`generate_with_retry`];
//! * [`jobs`] — generation jobs: created idempotently, run by a worker a bounded number at a
//!   time, the image and thumbnail stored in the object store and `ImageGenerated`
//!   published with the job's success in one transaction (the wallet makes it an asset);
//! * [`api`] — `/api/v1/generations`; [`StudioService`] — the [`Service`] the binary lists.
//!
//! A generation's price is held in the wallet before it runs (the saga in
//! `rendermart_studio_api`): the job asks with `GenerationRequested` in its own
//! transaction, consumer `studio.holds` applies the wallet's answer, the worker runs only
//! held (or free) jobs, and a failure publishes `GenerationFailed` so the hold is released.

pub mod api;
pub mod domain;
mod image_io;
pub mod jobs;
pub mod pages;
pub mod providers;
pub mod render;

pub use domain::{
    GenerationInput, GenerationRequest, ImageSize, InvalidInput, NegativePrompt, Orientation,
    Prompt, ProviderName, Seed, PROMPT_MAX_CHARS,
};
pub use image_io::{check_png, thumbnail_size, CheckedPng, ImageIoError, THUMBNAIL_LONG_SIDE};
pub use providers::{
    generate_with_retry, GeneratedImage, ImageProvider, ProviderError, Providers, RetryPolicy,
    StudioProvidersConfig,
};

use std::sync::Arc;

use rendermart_platform::{
    consumer::Consumer,
    service::{Context, Service, Started, Worker},
};
use utoipa::OpenApi;

pub use jobs::StudioConfig;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The studio service, as the binary starts it.
pub struct StudioService;

impl Service for StudioService {
    const NAME: &'static str = rendermart_studio_api::SERVICE;
    type Config = StudioConfig;

    fn migrations() -> Option<&'static sqlx::migrate::Migrator> {
        Some(&MIGRATOR)
    }

    async fn start(ctx: Context<StudioConfig>) -> anyhow::Result<Started> {
        ctx.config.prices.check().map_err(|e| anyhow::anyhow!(e))?;
        let providers = Providers::from_config(&ctx.config.providers)
            .await
            .map_err(|e| anyhow::anyhow!("studio.providers: {}", e.0))?;
        let jobs = Arc::new(jobs::Jobs::new(
            ctx.db()?,
            ctx.objects.clone(),
            providers,
            ctx.config.clone(),
        ));
        let worker = jobs.clone();
        let holds = jobs::HoldsIn { wake: jobs.waker() };
        Ok(Started {
            routes: api::router(
                jobs.clone(),
                rendermart_platform::live::LiveStreams::new(
                    rendermart_platform::live::DEFAULT_MAX_STREAMS,
                    ctx.shutdown.clone(),
                ),
            )
            .merge(pages::router(jobs)),
            openapi: Some(api::StudioApiDoc::openapi()),
            consumers: vec![Consumer::new(ctx.db()?, "studio.holds", holds)?.into()],
            workers: vec![Worker::new("studio.generations", move |stop| {
                worker.clone().run(stop)
            })],
            ..Started::default()
        })
    }
}
