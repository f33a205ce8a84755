//! The `openai` provider: any OpenAI-compatible `POST {base_url}/v1/images/generations`.
//!
//! What is sent (JSON, `Authorization: Bearer <api_key>`):
//! `{"model": <model>, "prompt": <prompt>, "n": 1, "size": "<w>x<h>", "response_format": "b64_json"}`.
//! The images API has no negative prompt, so a negative prompt is appended to the prompt as
//! a last paragraph: `"<prompt>\n\nAvoid: <negative prompt>"`. The size is the requested
//! one as is; a server that does not offer it (DALL·E 3 makes only 1024×1024, 1792×1024
//! and 1024×1792) answers 400, which becomes a readable [`ProviderError::Rejected`].
//! The answer's `data[0].b64_json` must be a PNG. Errors come from the status and the
//! `{"error": {"message", "type", "code"}}` body.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use reqwest::{header, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{
    accept_png, readable, ConfigError, GeneratedImage, ImageProvider, OpenAiConfig, ProviderError,
    Secret,
};
use crate::domain::GenerationRequest;

const NAME: &str = "openai";
/// The largest answer body read (a 1792×1024 PNG in base64 is ~4 MiB).
const MAX_BODY: usize = 32 * 1024 * 1024;

#[derive(Clone)]
pub struct OpenAiProvider {
    client: reqwest::Client,
    url: String,
    api_key: Secret,
    model: String,
    timeout: Duration,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .finish()
    }
}

impl OpenAiProvider {
    pub fn new(config: &OpenAiConfig) -> Result<Self, ConfigError> {
        let base = config.base_url.trim().trim_end_matches('/');
        let parsed = reqwest::Url::parse(base)
            .map_err(|e| ConfigError(format!("openai.base_url \"{base}\": {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError("openai.base_url must be http or https".into()));
        }
        if config.api_key.is_empty() {
            return Err(ConfigError("openai.api_key is empty".into()));
        }
        if config.model.trim().is_empty() {
            return Err(ConfigError("openai.model is empty".into()));
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout())
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms.max(1)))
            .build()
            .map_err(|e| ConfigError(format!("openai: HTTP client: {e}")))?;
        Ok(Self {
            client,
            url: format!("{base}/v1/images/generations"),
            api_key: config.api_key.clone(),
            model: config.model.trim().to_owned(),
            timeout: config.timeout(),
        })
    }

    /// The prompt as sent: the negative prompt has no field of its own in this API.
    pub fn prompt_text(request: &GenerationRequest) -> String {
        match &request.negative_prompt {
            Some(neg) => format!("{}\n\nAvoid: {}", request.prompt, neg),
            None => request.prompt.to_string(),
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            ProviderError::Timeout {
                provider: NAME.into(),
                after: self.timeout,
            }
        } else if e.is_connect() {
            ProviderError::Unavailable {
                provider: NAME.into(),
                status: None,
                message: "could not connect".into(),
            }
        } else {
            ProviderError::Unavailable {
                provider: NAME.into(),
                status: None,
                message: readable(&e.to_string()),
            }
        }
    }

    /// Reads the body up to [`MAX_BODY`].
    async fn body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(e))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn too_large() -> ProviderError {
    ProviderError::InvalidResponse {
        provider: NAME.into(),
        detail: format!("the answer is larger than {} MiB", MAX_BODY / 1024 / 1024),
    }
}

#[derive(Deserialize)]
struct ImagesResponse {
    data: Vec<ImageData>,
}

#[derive(Deserialize)]
struct ImageData {
    b64_json: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<serde_json::Value>,
}

/// Retry-After: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(24 * 3600)));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(86_400.0)));
        }
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

fn error_from(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> ProviderError {
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.error)
        .unwrap_or_default();
    let code = match &detail.code {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let kind = detail.kind.unwrap_or_default();
    let message = readable(&detail.message.unwrap_or_else(|| {
        // No JSON error: a proxy's page, say. Show its start, bounded.
        String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
    }));
    let provider = NAME.to_string();
    let is = |c: &str| code == c || kind == c;
    match status.as_u16() {
        429 if is("insufficient_quota") || is("billing_hard_limit_reached") => {
            ProviderError::Misconfigured {
                provider,
                message: format!("the account has no quota left: {message}"),
            }
        }
        429 => ProviderError::Throttled {
            provider,
            retry_after,
            message,
        },
        400 if is("content_policy_violation")
            || message.to_lowercase().contains("safety system") =>
        {
            ProviderError::Rejected {
                provider,
                reason: format!("the prompt was refused by its content policy ({message})"),
            }
        }
        401 | 403 => ProviderError::Misconfigured {
            provider,
            message: format!("the API key was refused ({message})"),
        },
        404 => ProviderError::Misconfigured {
            provider,
            message: format!("the model or endpoint does not exist ({message})"),
        },
        // The server gave up waiting on its side: worth another try, like a 5xx.
        408 => ProviderError::Unavailable {
            provider,
            status: Some(408),
            message,
        },
        400..=499 => ProviderError::Rejected {
            provider,
            reason: message,
        },
        s => ProviderError::Unavailable {
            provider,
            status: Some(s),
            message,
        },
    }
}

#[async_trait]
impl ImageProvider for OpenAiProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn generate(&self, request: &GenerationRequest) -> Result<GeneratedImage, ProviderError> {
        let body = json!({
            "model": self.model,
            "prompt": Self::prompt_text(request),
            "n": 1,
            "size": request.size.to_string(),
            "response_format": "b64_json",
        });
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(self.api_key.expose())
            .header(header::ACCEPT, "application/json")
            .json(&body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = self.body(response).await?;
        if !status.is_success() {
            return Err(error_from(status, retry_after, &bytes));
        }
        let invalid = |detail: String| ProviderError::InvalidResponse {
            provider: NAME.into(),
            detail,
        };
        let parsed: ImagesResponse = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("not the images API's JSON ({e})")))?;
        let b64 = parsed
            .data
            .into_iter()
            .next()
            .and_then(|d| d.b64_json)
            .ok_or_else(|| invalid("no data[0].b64_json in the answer".into()))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| invalid(format!("data[0].b64_json is not base64 ({e})")))?;
        accept_png(NAME, &self.model, png, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
        let text = later
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap();
        let got = parse_retry_after(&text).unwrap();
        assert!(
            got > Duration::from_secs(25) && got <= Duration::from_secs(30),
            "{got:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-3"), None);
    }

    #[test]
    fn quota_exhaustion_is_not_mistaken_for_throttling() {
        let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let e = error_from(StatusCode::TOO_MANY_REQUESTS, None, body);
        assert!(matches!(e, ProviderError::Misconfigured { .. }), "{e:?}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn a_config_without_key_or_with_a_bad_url_is_refused() {
        let e = OpenAiProvider::new(&OpenAiConfig::default()).unwrap_err();
        assert!(e.0.contains("api_key"), "{e}");
        let e = OpenAiProvider::new(&OpenAiConfig {
            base_url: "ftp://x".into(),
            api_key: Secret::new("k"),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.0.contains("http"), "{e}");
    }
}
