//! Image providers behind one trait, chosen by configuration.
//!
//! * `procedural` — the offline renderer ([`crate::render`]), always available;
//! * `openai` — any OpenAI-compatible images API ([`OpenAiProvider`]);
//! * `bedrock` — Amazon Bedrock InvokeModel, Titan and Stability models (cargo feature
//!   `bedrock`).
//!
//! Every failure is a [`ProviderError`] that says whether trying again can help and reads
//! well as a failed job's reason; [`generate_with_retry`] retries exactly those that can.

mod config;
mod openai;
mod procedural;
mod retry;

#[cfg(feature = "bedrock")]
mod bedrock;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;

pub use config::{
    BedrockConfig, OpenAiConfig, RetryConfig, Secret, StudioProvidersConfig, TitanQuality,
};
pub use openai::OpenAiProvider;
pub use procedural::ProceduralProvider;
pub use retry::{generate_with_retry, retry, RetryPolicy};

#[cfg(feature = "bedrock")]
pub use bedrock::{BedrockModelFamily, BedrockProvider};

use crate::domain::{GenerationRequest, InvalidInput, ProviderName};
use crate::image_io::check_png;

/// An image a provider made: the PNG as received (checked), its thumbnail, and provenance.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    pub png: Vec<u8>,
    pub thumbnail_png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// The provider's configured name (`procedural`, `openai`, `bedrock`).
    pub provider: String,
    /// The model that made it (`rendermart-procedural-1`, `dall-e-3`,
    /// `amazon.titan-image-generator-v2:0`…).
    pub model: String,
    /// The seed the provider used, when it takes one (OpenAI does not).
    pub seed: Option<u32>,
}

/// One image provider.
#[async_trait]
pub trait ImageProvider: Send + Sync {
    /// The configured name, shown with the image.
    fn name(&self) -> &str;
    /// The model, shown with the image.
    fn model(&self) -> &str;
    /// Makes one image. Does not retry; see [`generate_with_retry`].
    async fn generate(&self, request: &GenerationRequest) -> Result<GeneratedImage, ProviderError>;
}

/// Why a provider did not deliver an image. `Display` is a sentence a person can read (it
/// becomes a failed job's `error`); provider-supplied text in it is trimmed and bounded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Rate limited (HTTP 429, Bedrock ThrottlingException). Retryable.
    #[error("{provider} is busy right now (rate limited){}: {message}", after_hint(.retry_after))]
    Throttled {
        provider: String,
        retry_after: Option<Duration>,
        message: String,
    },
    /// No answer in time. Retryable.
    #[error("{provider} did not answer within {} s", .after.as_secs_f32().ceil())]
    Timeout { provider: String, after: Duration },
    /// Unreachable or failing on its side (5xx, connection refused). Retryable.
    #[error("{provider} is unavailable{}: {message}", status_hint(.status))]
    Unavailable {
        provider: String,
        status: Option<u16>,
        message: String,
    },
    /// The request was refused: content policy, or something the provider cannot do.
    /// Not retryable: the same prompt fails the same way.
    #[error("{provider} refused this request: {reason}")]
    Rejected { provider: String, reason: String },
    /// Our side is wrong: credentials refused, model unknown, no quota. Not retryable; an
    /// operator must act.
    #[error("{provider} is not set up correctly: {message}")]
    Misconfigured { provider: String, message: String },
    /// The provider answered with something that is not a usable image. Not retryable.
    #[error("{provider} sent an answer we could not use: {detail}")]
    InvalidResponse { provider: String, detail: String },
}

fn after_hint(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(", try again in {} s", d.as_secs_f32().ceil()),
        None => String::new(),
    }
}

fn status_hint(s: &Option<u16>) -> String {
    match s {
        Some(s) => format!(" (HTTP {s})"),
        None => String::new(),
    }
}

impl ProviderError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Throttled { .. }
                | ProviderError::Timeout { .. }
                | ProviderError::Unavailable { .. }
        )
    }

    /// The provider's own hint of when to come back.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A stable code for metrics and the problem type (never provider text).
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Throttled { .. } => "throttled",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Unavailable { .. } => "unavailable",
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::Misconfigured { .. } => "misconfigured",
            ProviderError::InvalidResponse { .. } => "invalid_response",
        }
    }
}

/// Provider text as it may appear in a job's error: control characters dropped, whitespace
/// collapsed, at most 300 characters.
pub(crate) fn readable(text: &str) -> String {
    const MAX: usize = 300;
    let mut out = String::new();
    for word in text.split_whitespace() {
        let word: String = word.chars().filter(|c| !c.is_control()).collect();
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word);
        if out.chars().count() > MAX {
            out = out.chars().take(MAX - 1).collect();
            out.push('…');
            break;
        }
    }
    if out.is_empty() {
        "no details given".into()
    } else {
        out
    }
}

/// Checks untrusted PNG bytes on the blocking pool (a full decode) and wraps them with
/// provenance.
pub(crate) async fn accept_png(
    provider: &str,
    model: &str,
    bytes: Vec<u8>,
    seed: Option<u32>,
) -> Result<GeneratedImage, ProviderError> {
    let invalid = |detail: String| ProviderError::InvalidResponse {
        provider: provider.to_owned(),
        detail,
    };
    let checked = tokio::task::spawn_blocking(move || check_png(bytes))
        .await
        .map_err(|e| invalid(format!("checking the image failed: {e}")))?
        .map_err(|e| invalid(e.to_string()))?;
    Ok(GeneratedImage {
        png: checked.png,
        thumbnail_png: checked.thumbnail_png,
        width: checked.width,
        height: checked.height,
        provider: provider.to_owned(),
        model: model.to_owned(),
        seed,
    })
}

/// Configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("studio providers: {0}")]
pub struct ConfigError(pub String);

/// The configured providers, by name, and the retry policy.
pub struct Providers {
    default: String,
    by_name: BTreeMap<String, Arc<dyn ImageProvider>>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("default", &self.default)
            .field("names", &self.by_name.keys().collect::<Vec<_>>())
            .field("retry", &self.retry)
            .finish()
    }
}

impl Providers {
    /// Builds every configured provider. `procedural` is always there. Async because the
    /// AWS credential chain is resolved here.
    pub async fn from_config(config: &StudioProvidersConfig) -> Result<Self, ConfigError> {
        let mut by_name: BTreeMap<String, Arc<dyn ImageProvider>> = BTreeMap::new();
        by_name.insert(
            crate::render::PROVIDER_NAME.into(),
            Arc::new(ProceduralProvider::new()),
        );
        if let Some(openai) = &config.openai {
            by_name.insert("openai".into(), Arc::new(OpenAiProvider::new(openai)?));
        }
        if let Some(bedrock) = &config.bedrock {
            #[cfg(feature = "bedrock")]
            {
                by_name.insert(
                    "bedrock".into(),
                    Arc::new(BedrockProvider::from_config(bedrock).await?),
                );
            }
            #[cfg(not(feature = "bedrock"))]
            {
                let _ = bedrock;
                return Err(ConfigError(
                    "the bedrock provider is configured but this build has no `bedrock` feature"
                        .into(),
                ));
            }
        }
        Self::new(&config.default_provider, by_name, config.retry.policy())
    }

    /// Builds the registry from ready providers (tests, custom wiring).
    pub fn new(
        default: &str,
        providers: BTreeMap<String, Arc<dyn ImageProvider>>,
        retry: RetryPolicy,
    ) -> Result<Self, ConfigError> {
        let default = ProviderName::parse(default)
            .map_err(|e| ConfigError(format!("default_provider: {}", e.reason)))?;
        if !providers.contains_key(default.as_str()) {
            return Err(ConfigError(format!(
                "default_provider \"{default}\" is not configured (configured: {})",
                providers.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(Self {
            default: default.as_str().to_owned(),
            by_name: providers,
            retry,
        })
    }

    /// The named provider, or the default one. An unknown name is the request's fault:
    /// the error names the `provider` field and lists what is available.
    pub fn get(&self, name: Option<&ProviderName>) -> Result<Arc<dyn ImageProvider>, InvalidInput> {
        let key = name.map_or(self.default.as_str(), ProviderName::as_str);
        self.by_name.get(key).cloned().ok_or_else(|| InvalidInput {
            field: "provider",
            reason: format!(
                "\"{key}\" is not available (available: {})",
                self.names().collect::<Vec<_>>().join(", ")
            ),
        })
    }

    pub fn default_name(&self) -> &str {
        &self.default
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_throttling_timeouts_and_outages_are_retryable() {
        let p = || "x".to_string();
        let cases = [
            (
                ProviderError::Throttled {
                    provider: p(),
                    retry_after: None,
                    message: p(),
                },
                true,
            ),
            (
                ProviderError::Timeout {
                    provider: p(),
                    after: Duration::from_secs(1),
                },
                true,
            ),
            (
                ProviderError::Unavailable {
                    provider: p(),
                    status: Some(503),
                    message: p(),
                },
                true,
            ),
            (
                ProviderError::Rejected {
                    provider: p(),
                    reason: p(),
                },
                false,
            ),
            (
                ProviderError::Misconfigured {
                    provider: p(),
                    message: p(),
                },
                false,
            ),
            (
                ProviderError::InvalidResponse {
                    provider: p(),
                    detail: p(),
                },
                false,
            ),
        ];
        for (e, retryable) in cases {
            assert_eq!(e.is_retryable(), retryable, "{e}");
        }
    }

    #[test]
    fn errors_read_as_sentences() {
        let e = ProviderError::Throttled {
            provider: "openai".into(),
            retry_after: Some(Duration::from_millis(1500)),
            message: "Rate limit reached".into(),
        };
        assert_eq!(
            e.to_string(),
            "openai is busy right now (rate limited), try again in 2 s: Rate limit reached"
        );
        let e = ProviderError::Timeout {
            provider: "bedrock".into(),
            after: Duration::from_secs(60),
        };
        assert_eq!(e.to_string(), "bedrock did not answer within 60 s");
    }

    #[test]
    fn provider_text_is_bounded_and_cleaned() {
        assert_eq!(readable("  a\u{1b}[31m \n b  "), "a[31m b");
        assert_eq!(readable(""), "no details given");
        let long = readable(&"word ".repeat(500));
        assert_eq!(long.chars().count(), 300);
        assert!(long.ends_with('…'));
    }

    #[tokio::test]
    async fn an_unknown_provider_names_the_field_and_lists_the_available_ones() {
        let providers = Providers::from_config(&StudioProvidersConfig::default())
            .await
            .unwrap();
        assert_eq!(providers.default_name(), "procedural");
        let e = providers
            .get(Some(&ProviderName::parse("midjourney").unwrap()))
            .err()
            .unwrap();
        assert_eq!(e.field, "provider");
        assert!(e.reason.contains("procedural"), "{e}");
        assert_eq!(providers.get(None).unwrap().name(), "procedural");
    }

    #[tokio::test]
    async fn a_default_provider_that_is_not_configured_is_refused_at_start() {
        let cfg = StudioProvidersConfig {
            default_provider: "openai".into(),
            ..Default::default()
        };
        let e = Providers::from_config(&cfg).await.unwrap_err();
        assert!(e.0.contains("not configured"), "{e}");
    }

    #[cfg(not(feature = "bedrock"))]
    #[tokio::test]
    async fn bedrock_without_the_feature_is_a_clear_start_error() {
        let cfg = StudioProvidersConfig {
            bedrock: Some(BedrockConfig::default()),
            ..Default::default()
        };
        let e = Providers::from_config(&cfg).await.unwrap_err();
        assert!(e.0.contains("`bedrock` feature"), "{e}");
    }
}
