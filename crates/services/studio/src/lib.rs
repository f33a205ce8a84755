//! Studio (core): what a generation request is, the procedural renderer, and the image
//! providers behind one trait.
//!
//! What is here now:
//!
//! * [`domain`] — parsed input: [`Prompt`], [`NegativePrompt`], [`ImageSize`], [`Seed`],
//!   [`ProviderName`], [`GenerationRequest`] (each constructor names the bad field);
//! * [`render`] — the offline `procedural` renderer (prompt + seed → deterministic PNG and
//!   thumbnail);
//! * [`providers`] — the [`ImageProvider`] trait, [`ProviderError`], the `procedural`,
//!   `openai` and (feature `bedrock`) `bedrock` implementations, the [`Providers`] registry
//!   built from [`StudioProvidersConfig`], and [`generate_with_retry`].
//!
//! What comes later (after the platform refactor): the `Service` with its HTTP routes
//! (`/api/v1/generations`), the jobs table and migrations, the credit-hold saga with the
//! wallet, the object store for originals and thumbnails, events and wiring into the binary.

pub mod domain;
mod image_io;
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
