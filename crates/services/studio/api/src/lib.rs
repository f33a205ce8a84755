//! Studio's contract with other services: the events it publishes and the ids they carry.
//! The wallet turns an [`ImageGenerated`] into an asset its creator owns.

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
