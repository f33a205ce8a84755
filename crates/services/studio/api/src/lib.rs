//! Studio's contract with other services: the events it publishes and the ids they carry.
//! A generation's credits are a saga with the wallet: [`GenerationRequested`] asks it to
//! hold the price; [`ImageGenerated`] (the wallet makes it an asset its creator owns and
//! captures the hold, in one transaction) or [`GenerationFailed`] (the hold is released)
//! ends it.

use rendermart_platform::events::Event;
use rendermart_types::UserId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The service's name.
pub const SERVICE: &str = "studio";

rendermart_types::entity_id!(
    /// A generation job; the asset its image becomes has the same id.
    GenerationId
);

/// A generation succeeded: its image and thumbnail are stored, and this is their
/// provenance. Aggregate `generation:<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageGenerated {
    pub generation_id: GenerationId,
    pub creator: UserId,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    /// The provider's configured name (`procedural`, `openai`, `bedrock`).
    pub provider: String,
    pub model: String,
    /// The seed the provider used, when it takes one.
    pub seed: Option<u32>,
    pub width: u32,
    pub height: u32,
    /// Object-store keys of the original PNG and its thumbnail.
    pub original_key: String,
    pub thumbnail_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Event for ImageGenerated {
    const TYPE: &'static str = "studio.ImageGenerated";
    const VERSION: u32 = 1;
}

/// A generation was asked for and costs `amount` (minor units of the wallet's currency):
/// the wallet holds it, or refuses. Aggregate `generation:<id>`, before any other event of
/// the generation. Free generations (`amount` 0) are not announced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRequested {
    pub generation_id: GenerationId,
    pub user: UserId,
    pub amount: i64,
    /// What the wallet's history says, e.g. `Image generation (768×768): "a lighthouse…"`.
    pub description: String,
}

impl Event for GenerationRequested {
    const TYPE: &'static str = "studio.GenerationRequested";
    const VERSION: u32 = 1;
}

/// A generation failed for good (`reason` is a sentence a person can read); whatever was
/// held for it is released. Aggregate `generation:<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationFailed {
    pub generation_id: GenerationId,
    pub user: UserId,
    /// The price that was asked for (0 for a free generation).
    pub amount: i64,
    pub reason: String,
}

impl Event for GenerationFailed {
    const TYPE: &'static str = "studio.GenerationFailed";
    const VERSION: u32 = 1;
}
