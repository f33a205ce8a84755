//! The `bedrock` provider: Amazon Bedrock InvokeModel through the official AWS SDK for Rust.
//!
//! Region, credentials (environment, profile, web identity/IRSA, ECS, instance metadata)
//! come from the standard AWS chain; the region and the endpoint can be overridden in
//! [`BedrockConfig`]. The SDK's own retries are off ([`generate_with_retry`] is the one
//! retry policy, so attempts do not multiply) and its operation timeout is the configured
//! one. HTTPS is rustls with ring (the SDK's default client would build aws-lc).
//!
//! Request and response bodies, per model family (InvokeModel:
//! <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModel.html>):
//!
//! * Titan Image Generator v1/v2
//!   (<https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-image.html>):
//!   `{"taskType":"TEXT_IMAGE","textToImageParams":{"text","negativeText"?},
//!   "imageGenerationConfig":{"numberOfImages":1,"height","width","cfgScale","seed","quality"}}`
//!   → `{"images":["<base64 PNG>"],"error":null}`. Text and negative text are 1–512
//!   characters; seed 0–2,147,483,646; cfgScale 1.1–10 (default 8).
//! * Stable Diffusion XL 1.0
//!   (<https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-1-0-text-image.html>):
//!   `{"text_prompts":[{"text","weight":1},{"text":<negative>,"weight":-1}],"cfg_scale",
//!   "seed","width","height","steps","samples":1}` →
//!   `{"artifacts":[{"base64","seed","finishReason"}]}`; sizes from a fixed list
//!   (1024×1024, 1344×768, 768×1344, …); `finishReason` `CONTENT_FILTERED` means refused.
//! * Stable Diffusion 3 / 3.5 and Stable Image Core/Ultra
//!   (<https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-3-text-image.html>,
//!   <https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-3-5-large.html>):
//!   `{"prompt","negative_prompt"?,"seed","aspect_ratio","output_format":"png"}` →
//!   `{"seeds":[…],"finish_reasons":[null],"images":["<base64>"]}`; a non-null finish
//!   reason ("Filter reason: prompt", …) means refused.

use async_trait::async_trait;
use aws_sdk_bedrockruntime::{
    config::{
        retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Region, SharedHttpClient,
    },
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    operation::invoke_model::InvokeModelError,
    primitives::Blob,
    Client,
};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

use super::openai::parse_retry_after;
use super::{
    accept_png, readable, BedrockConfig, ConfigError, GeneratedImage, ImageProvider, ProviderError,
};
use crate::domain::{GenerationRequest, ImageSize, Orientation};

const NAME: &str = "bedrock";
/// Titan's limit for `text` and `negativeText`.
pub const TITAN_MAX_TEXT: usize = 512;

/// The request/response dialect of a Bedrock image model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BedrockModelFamily {
    /// `amazon.titan-image-generator-v1`, `amazon.titan-image-generator-v2:0`.
    Titan,
    /// `stability.stable-diffusion-xl-v1`.
    StableDiffusionXl,
    /// `stability.sd3-large-v1:0`, `stability.sd3-5-large-v1:0`,
    /// `stability.stable-image-core-v1:1`, `stability.stable-image-ultra-v1:1`.
    StabilityImage,
}

impl BedrockModelFamily {
    /// Recognises a model id (a cross-region profile prefix such as `us.` is fine).
    pub fn of(model_id: &str) -> Option<Self> {
        let id = model_id.to_ascii_lowercase();
        if id.contains("amazon.titan-image-generator") {
            Some(Self::Titan)
        } else if id.contains("stability.stable-diffusion-xl") {
            Some(Self::StableDiffusionXl)
        } else if id.contains("stability.sd3") || id.contains("stability.stable-image") {
            Some(Self::StabilityImage)
        } else {
            None
        }
    }

    /// The size requested from the model: exact where it offers ours, else its nearest
    /// native size of the same shape (the image's real size is recorded with it).
    pub fn native_size(self, size: ImageSize) -> (u32, u32) {
        match (self, size.orientation()) {
            (Self::Titan, Orientation::Square) => size.dimensions(),
            (Self::Titan, Orientation::Landscape) => (1280, 768),
            (Self::Titan, Orientation::Portrait) => (768, 1280),
            (_, Orientation::Square) => (1024, 1024),
            (_, Orientation::Landscape) => (1344, 768),
            (_, Orientation::Portrait) => (768, 1344),
        }
    }
}

fn aspect_ratio(size: ImageSize) -> &'static str {
    match size.orientation() {
        Orientation::Square => "1:1",
        Orientation::Landscape => "16:9",
        Orientation::Portrait => "9:16",
    }
}

/// The SDK's HTTPS client on rustls + ring.
fn https_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

#[derive(Debug, Clone)]
pub struct BedrockProvider {
    client: Client,
    model_id: String,
    family: BedrockModelFamily,
    config: BedrockConfig,
}

impl BedrockProvider {
    /// Resolves the standard AWS chain (credentials, region) and builds the provider.
    pub async fn from_config(config: &BedrockConfig) -> Result<Self, ConfigError> {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        Self::new(config, &sdk)
    }

    /// Builds the provider on an already loaded AWS configuration (shared with other AWS
    /// clients, or made with static credentials in tests). The region and endpoint of
    /// `config` win over the SDK configuration's.
    pub fn new(config: &BedrockConfig, sdk: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        let family = BedrockModelFamily::of(&config.model_id).ok_or_else(|| {
            ConfigError(format!(
                "bedrock.model_id \"{}\" is not a supported image model (Titan Image Generator, \
                 Stable Diffusion XL, SD3/3.5, Stable Image)",
                config.model_id
            ))
        })?;
        let mut builder = aws_sdk_bedrockruntime::config::Builder::from(sdk)
            .behavior_version(BehaviorVersion::latest())
            .http_client(https_client())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(config.timeout())
                    .connect_timeout(Duration::from_millis(config.connect_timeout_ms.max(1)))
                    .build(),
            );
        if let Some(region) = &config.region {
            builder = builder.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint_url {
            builder = builder.endpoint_url(endpoint);
        }
        let conf = builder.build();
        if conf.region().is_none() {
            return Err(ConfigError(
                "bedrock: no AWS region (set studio.bedrock.region or AWS_REGION)".into(),
            ));
        }
        Ok(Self {
            client: Client::from_conf(conf),
            model_id: config.model_id.clone(),
            family,
            config: config.clone(),
        })
    }

    pub fn family(&self) -> BedrockModelFamily {
        self.family
    }

    /// The JSON body InvokeModel gets for this model family.
    pub fn request_body(&self, request: &GenerationRequest) -> Result<Value, ProviderError> {
        let prompt = request.prompt.as_str();
        let negative = request.negative_prompt.as_ref().map(|n| n.as_str());
        let seed = request.seed.value();
        let (width, height) = self.family.native_size(request.size);
        Ok(match self.family {
            BedrockModelFamily::Titan => {
                for (what, text) in [("prompt", Some(prompt)), ("negative prompt", negative)] {
                    if let Some(n) = text
                        .map(|t| t.chars().count())
                        .filter(|n| *n > TITAN_MAX_TEXT)
                    {
                        return Err(ProviderError::Rejected {
                            provider: NAME.into(),
                            reason: format!(
                                "Amazon Titan accepts a {what} of at most {TITAN_MAX_TEXT} characters; this one has {n}"
                            ),
                        });
                    }
                }
                let mut params = json!({ "text": prompt });
                if let Some(neg) = negative {
                    params["negativeText"] = json!(neg);
                }
                json!({
                    "taskType": "TEXT_IMAGE",
                    "textToImageParams": params,
                    "imageGenerationConfig": {
                        "numberOfImages": 1,
                        "height": height,
                        "width": width,
                        "cfgScale": self.config.cfg_scale.unwrap_or(8.0).clamp(1.1, 10.0),
                        "seed": seed,
                        "quality": self.config.quality.as_str(),
                    }
                })
            }
            BedrockModelFamily::StableDiffusionXl => {
                let mut prompts = vec![json!({ "text": prompt, "weight": 1.0 })];
                if let Some(neg) = negative {
                    prompts.push(json!({ "text": neg, "weight": -1.0 }));
                }
                json!({
                    "text_prompts": prompts,
                    "cfg_scale": self.config.cfg_scale.unwrap_or(7.0).clamp(0.0, 35.0),
                    "seed": seed,
                    "width": width,
                    "height": height,
                    "steps": self.config.steps.clamp(10, 150),
                    "samples": 1,
                })
            }
            BedrockModelFamily::StabilityImage => {
                let mut body = json!({
                    "prompt": prompt,
                    "seed": seed,
                    "aspect_ratio": aspect_ratio(request.size),
                    "output_format": "png",
                });
                if let Some(neg) = negative {
                    body["negative_prompt"] = json!(neg);
                }
                body
            }
        })
    }

    /// Takes the base64 image out of the model's answer, or says why there is none.
    fn image_from(&self, body: &[u8]) -> Result<String, ProviderError> {
        let invalid = |detail: String| ProviderError::InvalidResponse {
            provider: NAME.into(),
            detail,
        };
        let refused = |reason: String| ProviderError::Rejected {
            provider: NAME.into(),
            reason,
        };
        match self.family {
            BedrockModelFamily::Titan => {
                #[derive(Deserialize)]
                struct Titan {
                    #[serde(default)]
                    images: Vec<String>,
                    #[serde(default)]
                    error: Option<String>,
                }
                let r: Titan = serde_json::from_slice(body)
                    .map_err(|e| invalid(format!("not Titan's JSON ({e})")))?;
                if let Some(e) = r.error.filter(|e| !e.is_empty()) {
                    return Err(refused(readable(&e)));
                }
                r.images
                    .into_iter()
                    .next()
                    .ok_or_else(|| invalid("no images in Titan's answer".into()))
            }
            BedrockModelFamily::StableDiffusionXl => {
                #[derive(Deserialize)]
                struct Sdxl {
                    #[serde(default)]
                    artifacts: Vec<Artifact>,
                }
                #[derive(Deserialize)]
                struct Artifact {
                    base64: Option<String>,
                    #[serde(rename = "finishReason")]
                    finish_reason: Option<String>,
                }
                let r: Sdxl = serde_json::from_slice(body)
                    .map_err(|e| invalid(format!("not Stable Diffusion XL's JSON ({e})")))?;
                let a = r
                    .artifacts
                    .into_iter()
                    .next()
                    .ok_or_else(|| invalid("no artifacts in the answer".into()))?;
                match a.finish_reason.as_deref() {
                    Some("CONTENT_FILTERED") => {
                        return Err(refused(
                            "the image was withheld by the model's content filter".into(),
                        ))
                    }
                    Some("ERROR") => {
                        return Err(ProviderError::Unavailable {
                            provider: NAME.into(),
                            status: None,
                            message: "the model reported an error while generating".into(),
                        })
                    }
                    _ => {}
                }
                a.base64
                    .ok_or_else(|| invalid("the artifact has no base64 image".into()))
            }
            BedrockModelFamily::StabilityImage => {
                #[derive(Deserialize)]
                struct Stability {
                    #[serde(default)]
                    images: Vec<String>,
                    #[serde(default)]
                    finish_reasons: Vec<Option<String>>,
                }
                let r: Stability = serde_json::from_slice(body)
                    .map_err(|e| invalid(format!("not Stability's JSON ({e})")))?;
                if let Some(reason) = r.finish_reasons.into_iter().flatten().next() {
                    return Err(if reason.to_lowercase().contains("filter") {
                        refused(format!(
                            "the model's content filter stopped it ({})",
                            readable(&reason)
                        ))
                    } else {
                        ProviderError::Unavailable {
                            provider: NAME.into(),
                            status: None,
                            message: readable(&reason),
                        }
                    });
                }
                r.images
                    .into_iter()
                    .next()
                    .ok_or_else(|| invalid("no images in the answer".into()))
            }
        }
    }

    fn error_from(
        &self,
        e: SdkError<InvokeModelError, aws_sdk_bedrockruntime::config::http::HttpResponse>,
    ) -> ProviderError {
        let provider = NAME.to_string();
        // The error with its sources, for the arms that have nothing more specific.
        let context = readable(&DisplayErrorContext(&e).to_string());
        match e {
            SdkError::TimeoutError(_) => ProviderError::Timeout {
                provider,
                after: self.config.timeout(),
            },
            SdkError::DispatchFailure(f) if f.is_timeout() => ProviderError::Timeout {
                provider,
                after: self.config.timeout(),
            },
            SdkError::DispatchFailure(_) => ProviderError::Unavailable {
                provider,
                status: None,
                message: format!("could not reach Bedrock ({})", context),
            },
            SdkError::ResponseError(_) => ProviderError::InvalidResponse {
                provider,
                detail: context,
            },
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let retry_after = se
                    .raw()
                    .headers()
                    .get("retry-after")
                    .and_then(parse_retry_after);
                let err = se.into_err();
                let message = readable(err.message().unwrap_or_else(|| err.code().unwrap_or("")));
                match err {
                    InvokeModelError::ThrottlingException(_)
                    | InvokeModelError::ServiceQuotaExceededException(_) => {
                        ProviderError::Throttled {
                            provider,
                            retry_after,
                            message,
                        }
                    }
                    InvokeModelError::ModelTimeoutException(_) => ProviderError::Timeout {
                        provider,
                        after: self.config.timeout(),
                    },
                    InvokeModelError::ServiceUnavailableException(_)
                    | InvokeModelError::InternalServerException(_)
                    | InvokeModelError::ModelNotReadyException(_)
                    | InvokeModelError::ModelErrorException(_) => ProviderError::Unavailable {
                        provider,
                        status: Some(status),
                        message,
                    },
                    InvokeModelError::ValidationException(_) => ProviderError::Rejected {
                        provider,
                        reason: message,
                    },
                    InvokeModelError::AccessDeniedException(_) => ProviderError::Misconfigured {
                        provider,
                        message: format!("access denied ({message})"),
                    },
                    InvokeModelError::ResourceNotFoundException(_) => {
                        ProviderError::Misconfigured {
                            provider,
                            message: format!("model \"{}\" not found ({message})", self.model_id),
                        }
                    }
                    _ if status == 429 => ProviderError::Throttled {
                        provider,
                        retry_after,
                        message,
                    },
                    _ if status >= 500 => ProviderError::Unavailable {
                        provider,
                        status: Some(status),
                        message,
                    },
                    _ if status == 401 || status == 403 => {
                        ProviderError::Misconfigured { provider, message }
                    }
                    _ => ProviderError::Rejected {
                        provider,
                        reason: message,
                    },
                }
            }
            SdkError::ConstructionFailure(_) => ProviderError::Misconfigured {
                provider,
                message: context,
            },
            _ => ProviderError::Unavailable {
                provider,
                status: None,
                message: context,
            },
        }
    }
}

#[async_trait]
impl ImageProvider for BedrockProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn model(&self) -> &str {
        &self.model_id
    }

    async fn generate(&self, request: &GenerationRequest) -> Result<GeneratedImage, ProviderError> {
        let body = self.request_body(request)?;
        let bytes = serde_json::to_vec(&body).map_err(|e| ProviderError::InvalidResponse {
            provider: NAME.into(),
            detail: format!("could not encode the request: {e}"),
        })?;
        let out = self
            .client
            .invoke_model()
            .model_id(&self.model_id)
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(bytes))
            .send()
            .await
            .map_err(|e| self.error_from(e))?;
        let b64 = self.image_from(out.body().as_ref())?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| ProviderError::InvalidResponse {
                provider: NAME.into(),
                detail: format!("the image is not base64 ({e})"),
            })?;
        accept_png(NAME, &self.model_id, png, Some(request.seed.value())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_map_to_their_family() {
        use BedrockModelFamily::*;
        for (id, family) in [
            ("amazon.titan-image-generator-v1", Some(Titan)),
            ("amazon.titan-image-generator-v2:0", Some(Titan)),
            ("stability.stable-diffusion-xl-v1", Some(StableDiffusionXl)),
            ("stability.sd3-large-v1:0", Some(StabilityImage)),
            ("us.stability.sd3-5-large-v1:0", Some(StabilityImage)),
            ("stability.stable-image-core-v1:1", Some(StabilityImage)),
            ("anthropic.claude-v2", None),
        ] {
            assert_eq!(BedrockModelFamily::of(id), family, "{id}");
        }
    }

    #[test]
    fn every_offered_size_maps_to_a_size_the_model_takes() {
        for size in ImageSize::ALL {
            let (w, h) = BedrockModelFamily::StableDiffusionXl.native_size(size);
            assert!(w % 64 == 0 && h % 64 == 0);
            let (w, h) = BedrockModelFamily::Titan.native_size(size);
            assert!(w % 64 == 0 && h % 64 == 0);
            assert_eq!(w.cmp(&h), size.width().cmp(&size.height()));
        }
    }
}
