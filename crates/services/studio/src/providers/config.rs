//! Which providers exist and how they are reached: the future `[studio]` section.
//!
//! Every field has a default that runs (only `procedural`, offline), so an empty section is
//! valid. `openai` and `bedrock` are switched on by being present. Environment twins
//! (`RENDERMART_STUDIO__OPENAI__API_KEY`, …) come from the platform's config loader, not
//! from here: nothing in this crate reads the environment (the AWS SDK's own credential
//! chain aside).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::retry::RetryPolicy;

pub use rendermart_types::Secret;

/// The providers section of studio's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StudioProvidersConfig {
    /// The provider used when a request names none: `procedural`, `openai` or `bedrock`.
    pub default_provider: String,
    pub retry: RetryConfig,
    /// Present → the `openai` provider is available.
    pub openai: Option<OpenAiConfig>,
    /// Present → the `bedrock` provider is available (needs the `bedrock` cargo feature).
    pub bedrock: Option<BedrockConfig>,
}

impl Default for StudioProvidersConfig {
    fn default() -> Self {
        Self {
            default_provider: "procedural".into(),
            retry: RetryConfig::default(),
            openai: None,
            bedrock: None,
        }
    }
}

/// Retries of retryable provider errors (throttling, timeouts, 5xx).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    /// Cap on one wait. A provider asking (Retry-After) for longer is not waited for: the
    /// error is returned, with the provider's hint in it.
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff_ms: 500,
            max_backoff_ms: 8_000,
        }
    }
}

impl RetryConfig {
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.clamp(1, 10),
            initial_backoff: Duration::from_millis(self.initial_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms.max(self.initial_backoff_ms)),
        }
    }
}

/// Any OpenAI-compatible images endpoint (`POST {base_url}/v1/images/generations`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenAiConfig {
    /// Without the `/v1` suffix, e.g. `https://api.openai.com` or `http://127.0.0.1:8080`.
    pub base_url: String,
    pub api_key: Secret,
    pub model: String,
    /// Whole request, answer body included. Image models take tens of seconds.
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com".into(),
            api_key: Secret::default(),
            model: "dall-e-3".into(),
            timeout_ms: 120_000,
            connect_timeout_ms: 10_000,
        }
    }
}

impl OpenAiConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

/// Titan's `quality`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TitanQuality {
    #[default]
    Standard,
    Premium,
}

impl TitanQuality {
    pub fn as_str(self) -> &'static str {
        match self {
            TitanQuality::Standard => "standard",
            TitanQuality::Premium => "premium",
        }
    }
}

/// Amazon Bedrock InvokeModel. Credentials always come from the standard AWS chain
/// (environment, profile, web identity / IRSA, ECS, instance metadata); the region too
/// unless set here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BedrockConfig {
    /// `None` → the chain's region (`AWS_REGION`, profile…).
    pub region: Option<String>,
    /// `amazon.titan-image-generator-v1`, `amazon.titan-image-generator-v2:0`,
    /// `stability.stable-diffusion-xl-v1`, `stability.sd3-large-v1:0`, … (cross-region
    /// inference profile ids such as `us.stability.sd3-5-large-v1:0` work too).
    pub model_id: String,
    /// Overrides the Bedrock runtime endpoint (VPC endpoints, tests).
    pub endpoint_url: Option<String>,
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Prompt adherence; `None` → the model's own default (Titan 8.0, SDXL 7).
    pub cfg_scale: Option<f32>,
    /// Titan only.
    pub quality: TitanQuality,
    /// SDXL only: diffusion steps.
    pub steps: u32,
}

impl Default for BedrockConfig {
    fn default() -> Self {
        Self {
            region: None,
            model_id: "amazon.titan-image-generator-v2:0".into(),
            endpoint_url: None,
            timeout_ms: 120_000,
            connect_timeout_ms: 10_000,
            cfg_scale: None,
            quality: TitanQuality::Standard,
            steps: 30,
        }
    }
}

impl BedrockConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_display_or_serialized_config() {
        let cfg = StudioProvidersConfig {
            openai: Some(OpenAiConfig {
                api_key: Secret::new("sk-live-very-secret"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let shown = format!(
            "{cfg:?} {} {}",
            cfg.openai.as_ref().unwrap().api_key,
            serde_json::to_string(&cfg).unwrap()
        );
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("***"));
        assert_eq!(cfg.openai.unwrap().api_key.expose(), "sk-live-very-secret");
    }

    #[test]
    fn an_empty_section_means_procedural_only_with_bounded_retries() {
        let cfg: StudioProvidersConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.default_provider, "procedural");
        assert!(cfg.openai.is_none() && cfg.bedrock.is_none());
        let p = cfg.retry.policy();
        assert_eq!(p.max_attempts, 3);
        let cfg: StudioProvidersConfig =
            serde_json::from_str(r#"{"openai": {"api_key": "k"}, "bedrock": {}}"#).unwrap();
        assert_eq!(cfg.openai.unwrap().base_url, "https://api.openai.com");
        assert_eq!(
            cfg.bedrock.unwrap().model_id,
            "amazon.titan-image-generator-v2:0"
        );
    }
}
