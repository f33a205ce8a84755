//! The `procedural` provider: the offline renderer on the blocking pool.

use async_trait::async_trait;

use super::{GeneratedImage, ImageProvider, ProviderError};
use crate::domain::GenerationRequest;
use crate::render::{self, MODEL_NAME, PROVIDER_NAME};

/// Renders locally; never throttled, never times out on a network. CPU-bound, so it runs
/// on tokio's blocking pool; the service bounds how many run at once.
#[derive(Debug, Default, Clone)]
pub struct ProceduralProvider;

impl ProceduralProvider {
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl ImageProvider for ProceduralProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn model(&self) -> &str {
        MODEL_NAME
    }

    async fn generate(&self, request: &GenerationRequest) -> Result<GeneratedImage, ProviderError> {
        let prompt = request.prompt.clone();
        let negative = request.negative_prompt.clone();
        let (size, seed) = (request.size, request.seed);
        let rendered = tokio::task::spawn_blocking(move || {
            render::render(&prompt, negative.as_ref(), size, seed)
        })
        .await
        .map_err(|e| ProviderError::Unavailable {
            provider: PROVIDER_NAME.into(),
            status: None,
            message: format!("the renderer stopped: {e}"),
        })?
        .map_err(|e| ProviderError::InvalidResponse {
            provider: PROVIDER_NAME.into(),
            detail: e.to_string(),
        })?;
        Ok(GeneratedImage {
            png: rendered.png,
            thumbnail_png: rendered.thumbnail_png,
            width: rendered.width,
            height: rendered.height,
            provider: PROVIDER_NAME.into(),
            model: MODEL_NAME.into(),
            seed: Some(seed.value()),
        })
    }
}
