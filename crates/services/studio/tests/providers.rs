//! Contract tests: the real provider clients against a local HTTP double (axum on
//! 127.0.0.1:0) that records the exact request and answers with the documented shapes.
//! Nothing leaves the machine. Bedrock's half needs `--features bedrock`.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::{to_bytes, Body},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use base64::Engine;
use rendermart_studio::{
    generate_with_retry,
    providers::{OpenAiConfig, OpenAiProvider, Secret},
    GenerationRequest, ImageProvider, ImageSize, NegativePrompt, Prompt, ProviderError,
    RetryPolicy, Seed,
};
use serde_json::{json, Value};

// ------------------------------------------------------------------ the double

/// What the double saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// As sent on the wire (percent-encoding kept).
    path: String,
    query: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// What the double answers, in order; the last one repeats.
#[derive(Clone)]
enum Reply {
    Json(u16, Value, Vec<(&'static str, String)>),
    Raw(u16, &'static str),
    Hang,
}

#[derive(Clone, Default)]
struct DoubleState {
    seen: Arc<Mutex<Vec<Seen>>>,
    replies: Arc<Mutex<VecDeque<Reply>>>,
}

struct Double {
    addr: SocketAddr,
    state: DoubleState,
}

impl Double {
    async fn start(replies: Vec<Reply>) -> Double {
        let state = DoubleState {
            seen: Arc::default(),
            replies: Arc::new(Mutex::new(replies.into())),
        };
        let app = Router::new().fallback(answer).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Double { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

async fn answer(State(state): State<DoubleState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, 64 * 1024 * 1024).await.unwrap_or_default();
    state.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers.clone(),
        body: body.to_vec(),
    });
    let reply = {
        let mut replies = state.replies.lock().unwrap();
        if replies.len() > 1 {
            replies.pop_front()
        } else {
            replies.front().cloned()
        }
    };
    match reply {
        Some(Reply::Json(status, v, headers)) => {
            let mut r = (StatusCode::from_u16(status).unwrap(), axum::Json(v)).into_response();
            for (k, val) in headers {
                r.headers_mut()
                    .insert(k, HeaderValue::from_str(&val).unwrap());
            }
            r
        }
        Some(Reply::Raw(status, text)) => Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(text))
            .unwrap(),
        Some(Reply::Hang) => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        None => (StatusCode::INTERNAL_SERVER_ERROR, "no reply scripted").into_response(),
    }
}

// ------------------------------------------------------------------ helpers

/// A real 512×512 PNG (what a provider would send), and its base64.
fn png_b64() -> (Vec<u8>, String) {
    let prompt = Prompt::parse("a lake").unwrap();
    // Any valid PNG will do; the renderer makes one without another dependency.
    let img = rendermart_studio::render::render(
        &prompt,
        None,
        ImageSize::Square512,
        Seed::new(1).unwrap(),
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&img.png);
    (img.png, b64)
}

fn request() -> GenerationRequest {
    GenerationRequest::new(
        Prompt::parse("a mountain lake at dusk").unwrap(),
        ImageSize::Square768,
        Seed::new(42).unwrap(),
    )
    .with_negative_prompt(NegativePrompt::parse("fog").unwrap())
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(2_000),
    }
}

fn openai(double: &Double, timeout_ms: u64) -> OpenAiProvider {
    OpenAiProvider::new(&OpenAiConfig {
        base_url: double.url(),
        api_key: Secret::new("sk-test-123"),
        model: "dall-e-3".into(),
        timeout_ms,
        connect_timeout_ms: 1_000,
    })
    .unwrap()
}

fn openai_ok(b64: &str) -> Reply {
    Reply::Json(
        200,
        json!({"created": 1, "data": [{"b64_json": b64}]}),
        vec![],
    )
}

// ------------------------------------------------------------------ OpenAI

#[tokio::test]
async fn openai_sends_the_documented_request_and_decodes_b64_json() {
    let (png, b64) = png_b64();
    let double = Double::start(vec![openai_ok(&b64)]).await;
    let provider = openai(&double, 5_000);

    let image = provider.generate(&request()).await.unwrap();

    let seen = double.seen();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/images/generations");
    assert_eq!(r.query, "");
    assert_eq!(r.header("authorization"), "Bearer sk-test-123");
    assert!(r.header("content-type").starts_with("application/json"));
    assert_eq!(
        r.json(),
        json!({
            "model": "dall-e-3",
            "prompt": "a mountain lake at dusk\n\nAvoid: fog",
            "n": 1,
            "size": "768x768",
            "response_format": "b64_json",
        })
    );
    assert_eq!(image.png, png);
    assert_eq!((image.width, image.height), (512, 512));
    assert_eq!(image.provider, "openai");
    assert_eq!(image.model, "dall-e-3");
    assert_eq!(image.seed, None);
    assert!(image.thumbnail_png.starts_with(b"\x89PNG"));
}

#[tokio::test]
async fn openai_content_policy_refusal_is_readable_and_never_retried() {
    let double = Double::start(vec![Reply::Json(
        400,
        json!({"error": {
            "message": "Your request was rejected as a result of our safety system.",
            "type": "invalid_request_error",
            "code": "content_policy_violation"
        }}),
        vec![],
    )])
    .await;
    let e = generate_with_retry(&openai(&double, 5_000), &request(), &fast_retries())
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Rejected { .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("safety system"), "{e}");
    assert_eq!(
        double.seen().len(),
        1,
        "a refused prompt must not be sent again"
    );
}

#[tokio::test]
async fn openai_bad_request_and_refused_key_are_not_retried() {
    let double = Double::start(vec![Reply::Json(
        400,
        json!({"error": {"message": "Invalid size '768x768'. Supported sizes are 1024x1024, 1024x1792, 1792x1024.", "type": "invalid_request_error", "code": null}}),
        vec![],
    )])
    .await;
    let e = generate_with_retry(&openai(&double, 5_000), &request(), &fast_retries())
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Rejected { .. }));
    assert!(e.to_string().contains("Supported sizes"), "{e}");
    assert_eq!(double.seen().len(), 1);

    let double = Double::start(vec![Reply::Json(
        401,
        json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}),
        vec![],
    )])
    .await;
    let e = generate_with_retry(&openai(&double, 5_000), &request(), &fast_retries())
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Misconfigured { .. }), "{e:?}");
    assert_eq!(double.seen().len(), 1);
}

#[tokio::test]
async fn openai_429_with_retry_after_is_throttled_waited_out_and_retried_to_success() {
    let (png, b64) = png_b64();
    let double = Double::start(vec![
        Reply::Json(
            429,
            json!({"error": {"message": "Rate limit reached for images", "type": "requests", "code": "rate_limit_exceeded"}}),
            vec![("retry-after", "1".into())],
        ),
        openai_ok(&b64),
    ])
    .await;
    let provider = openai(&double, 5_000);

    // The first answer alone is a retryable Throttled with the hint.
    let first = provider.generate(&request()).await.unwrap_err();
    assert_eq!(
        first,
        ProviderError::Throttled {
            provider: "openai".into(),
            retry_after: Some(Duration::from_secs(1)),
            message: "Rate limit reached for images".into(),
        }
    );
    assert!(first.is_retryable());

    // Scripted again: 429 then success, through the retry helper.
    let double = Double::start(vec![
        Reply::Json(
            429,
            json!({"error": {"message": "slow down"}}),
            vec![("retry-after", "1".into())],
        ),
        openai_ok(&b64),
    ])
    .await;
    let started = Instant::now();
    let image = generate_with_retry(&openai(&double, 5_000), &request(), &fast_retries())
        .await
        .unwrap();
    assert_eq!(image.png, png);
    assert_eq!(double.seen().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
}

#[tokio::test]
async fn openai_429_without_retry_after_backs_off_and_retries() {
    let (_, b64) = png_b64();
    let double = Double::start(vec![
        Reply::Json(429, json!({"error": {"message": "busy"}}), vec![]),
        Reply::Json(429, json!({"error": {"message": "busy"}}), vec![]),
        openai_ok(&b64),
    ])
    .await;
    let image = generate_with_retry(&openai(&double, 5_000), &request(), &fast_retries())
        .await
        .unwrap();
    assert_eq!(image.provider, "openai");
    assert_eq!(double.seen().len(), 3);
}

#[tokio::test]
async fn openai_500_is_retried_and_gives_up_after_the_bounded_attempts() {
    let double = Double::start(vec![Reply::Json(
        500,
        json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}),
        vec![],
    )])
    .await;
    let e = generate_with_retry(&openai(&double, 5_000), &request(), &fast_retries())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::Unavailable {
                status: Some(500),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(double.seen().len(), 3, "exactly max_attempts requests");
    assert!(e.to_string().contains("HTTP 500"), "{e}");
}

#[tokio::test]
async fn openai_500_then_success_recovers() {
    let (_, b64) = png_b64();
    let double = Double::start(vec![
        Reply::Raw(502, "<html>bad gateway</html>"),
        openai_ok(&b64),
    ])
    .await;
    let image = generate_with_retry(&openai(&double, 5_000), &request(), &fast_retries())
        .await
        .unwrap();
    assert_eq!(image.model, "dall-e-3");
    assert_eq!(double.seen().len(), 2);
}

#[tokio::test]
async fn a_provider_that_never_answers_times_out_within_the_configured_bound() {
    let double = Double::start(vec![Reply::Hang]).await;
    let provider = openai(&double, 400);
    let started = Instant::now();
    let e = provider.generate(&request()).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, ProviderError::Timeout { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the timeout bound was not kept: {took:?}"
    );
}

#[tokio::test]
async fn malformed_answers_are_invalid_responses_and_not_retried() {
    let gif = base64::engine::general_purpose::STANDARD.encode(b"GIF89a\x01\x00\x01\x00");
    for reply in [
        Reply::Raw(200, "{\"data\": [{\"b64_json\": \"not base64!!\"}]}"),
        Reply::Raw(200, "<html>hello</html>"),
        Reply::Raw(200, "{\"data\": []}"),
        Reply::Json(200, json!({"data": [{"b64_json": gif}]}), vec![]),
        Reply::Json(
            200,
            json!({"data": [{"url": "https://example.invalid/x.png"}]}),
            vec![],
        ),
    ] {
        let double = Double::start(vec![reply]).await;
        let e = generate_with_retry(&openai(&double, 5_000), &request(), &fast_retries())
            .await
            .unwrap_err();
        assert!(matches!(e, ProviderError::InvalidResponse { .. }), "{e:?}");
        assert_eq!(double.seen().len(), 1);
    }
}

#[tokio::test]
async fn the_procedural_provider_is_honest_about_what_it_is() {
    let provider = rendermart_studio::providers::ProceduralProvider::new();
    let req = GenerationRequest::new(
        Prompt::parse("desert dunes at dusk").unwrap(),
        ImageSize::Square512,
        Seed::new(3).unwrap(),
    );
    let a = provider.generate(&req).await.unwrap();
    assert_eq!(a.provider, "procedural");
    assert_eq!(a.model, "rendermart-procedural-1");
    assert_eq!(a.seed, Some(3));
    assert_eq!((a.width, a.height), (512, 512));
    let b = provider.generate(&req).await.unwrap();
    assert_eq!(a.png, b.png);
}

// ------------------------------------------------------------------ Bedrock

#[cfg(feature = "bedrock")]
mod bedrock {
    use super::*;
    use aws_sdk_bedrockruntime::config::{
        BehaviorVersion, Credentials, Region, SharedCredentialsProvider,
    };
    use hmac::{Hmac, Mac};
    use rendermart_studio::providers::{BedrockConfig, BedrockProvider, TitanQuality};
    use sha2::{Digest, Sha256};

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const REGION: &str = "eu-west-1";

    fn sdk_config() -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .region(Region::new(REGION))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                AKID, SECRET, None, None, "test",
            )))
            .behavior_version(BehaviorVersion::latest())
            .build()
    }

    fn provider(double: &Double, model_id: &str, timeout_ms: u64) -> BedrockProvider {
        let cfg = BedrockConfig {
            region: Some(REGION.into()),
            model_id: model_id.into(),
            endpoint_url: Some(double.url()),
            timeout_ms,
            connect_timeout_ms: 1_000,
            cfg_scale: Some(7.5),
            quality: TitanQuality::Premium,
            steps: 40,
        };
        BedrockProvider::new(&cfg, &sdk_config()).unwrap()
    }

    // ---- an independent SigV4 verifier (not the SDK's signer) --------------------------

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    /// RFC 3986 unreserved characters stay, everything else is %XX (upper-case).
    fn uri_encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    struct Authorization {
        algorithm: String,
        credential: String,
        signed_headers: Vec<String>,
        signature: String,
    }

    fn parse_authorization(h: &str) -> Authorization {
        let (algorithm, rest) = h.split_once(' ').expect("algorithm first");
        let mut credential = String::new();
        let mut signed = String::new();
        let mut signature = String::new();
        for part in rest.split(',').map(str::trim) {
            if let Some(v) = part.strip_prefix("Credential=") {
                credential = v.into();
            } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
                signed = v.into();
            } else if let Some(v) = part.strip_prefix("Signature=") {
                signature = v.into();
            }
        }
        Authorization {
            algorithm: algorithm.into(),
            credential,
            signed_headers: signed.split(';').map(String::from).collect(),
            signature,
        }
    }

    /// The SigV4 signature of a request as the double received it. Non-S3 services sign
    /// the path URI-encoded once more (each segment of the already encoded path).
    #[allow(clippy::too_many_arguments)]
    fn sigv4(
        secret: &str,
        method: &str,
        raw_path: &str,
        query: &str,
        headers: &[(String, String)],
        body: &[u8],
        amz_date: &str,
        region: &str,
        service: &str,
        double_encode: bool,
    ) -> String {
        let canonical_uri = if double_encode {
            raw_path
                .split('/')
                .map(uri_encode)
                .collect::<Vec<_>>()
                .join("/")
        } else {
            raw_path.to_string()
        };
        let mut q: Vec<&str> = query.split('&').filter(|s| !s.is_empty()).collect();
        q.sort_unstable();
        let canonical_headers: String = headers
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}:{}\n",
                    k,
                    v.split_whitespace().collect::<Vec<_>>().join(" ")
                )
            })
            .collect();
        let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        let canonical_request = format!(
            "{method}\n{canonical_uri}\n{}\n{canonical_headers}\n{}\n{}",
            q.join("&"),
            signed.join(";"),
            hex::encode(Sha256::digest(body))
        );
        let date = &amz_date[..8];
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
        let k_region = hmac(&k_date, region.as_bytes());
        let k_service = hmac(&k_region, service.as_bytes());
        let k_signing = hmac(&k_service, b"aws4_request");
        hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
    }

    #[test]
    fn the_sigv4_verifier_reproduces_awss_published_example() {
        // AWS SigV4 test suite, "get-vanilla".
        let sig = sigv4(
            SECRET,
            "GET",
            "/",
            "",
            &[
                ("host".into(), "example.amazonaws.com".into()),
                ("x-amz-date".into(), "20150830T123600Z".into()),
            ],
            b"",
            "20150830T123600Z",
            "us-east-1",
            "service",
            true,
        );
        assert_eq!(
            sig,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// Checks the Authorization header of a request the double saw, by recomputing it.
    fn assert_signed(r: &Seen) {
        let auth = parse_authorization(r.header("authorization"));
        assert_eq!(auth.algorithm, "AWS4-HMAC-SHA256");
        let amz_date = r.header("x-amz-date").to_string();
        assert_eq!(amz_date.len(), 16, "x-amz-date is YYYYMMDD'T'HHMMSS'Z'");
        assert_eq!(
            auth.credential,
            format!("{AKID}/{}/{REGION}/bedrock/aws4_request", &amz_date[..8])
        );
        for required in ["host", "x-amz-date"] {
            assert!(
                auth.signed_headers.iter().any(|h| h == required),
                "{required} must be signed: {:?}",
                auth.signed_headers
            );
        }
        let headers: Vec<(String, String)> = auth
            .signed_headers
            .iter()
            .map(|h| (h.clone(), r.header(h).trim().to_string()))
            .collect();
        let expected = sigv4(
            SECRET, &r.method, &r.path, &r.query, &headers, &r.body, &amz_date, REGION, "bedrock",
            true,
        );
        assert_eq!(auth.signature, expected, "SigV4 signature does not verify");
    }

    fn titan_ok(b64: &str) -> Reply {
        Reply::Json(200, json!({"images": [b64], "error": null}), vec![])
    }

    #[tokio::test]
    async fn titan_request_is_signed_and_shaped_as_documented() {
        let (png, b64) = png_b64();
        let double = Double::start(vec![titan_ok(&b64)]).await;
        let p = provider(&double, "amazon.titan-image-generator-v2:0", 5_000);
        let image = p.generate(&request()).await.unwrap();

        let seen = double.seen();
        assert_eq!(seen.len(), 1);
        let r = &seen[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/model/amazon.titan-image-generator-v2%3A0/invoke");
        assert!(r.header("content-type").starts_with("application/json"));
        assert_eq!(r.header("accept"), "application/json");
        assert_signed(r);
        assert_eq!(
            r.json(),
            json!({
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"text": "a mountain lake at dusk", "negativeText": "fog"},
                "imageGenerationConfig": {
                    "numberOfImages": 1, "height": 768, "width": 768,
                    "cfgScale": 7.5, "seed": 42, "quality": "premium"
                }
            })
        );
        assert_eq!(image.png, png);
        assert_eq!(image.provider, "bedrock");
        assert_eq!(image.model, "amazon.titan-image-generator-v2:0");
        assert_eq!(image.seed, Some(42));
    }

    #[tokio::test]
    async fn titan_v1_without_negative_prompt_sends_no_negative_text() {
        let (_, b64) = png_b64();
        let double = Double::start(vec![titan_ok(&b64)]).await;
        let p = provider(&double, "amazon.titan-image-generator-v1", 5_000);
        let req = GenerationRequest::new(
            Prompt::parse("city at night").unwrap(),
            ImageSize::Landscape1024x576,
            Seed::new(7).unwrap(),
        );
        p.generate(&req).await.unwrap();
        let r = &double.seen()[0];
        assert_eq!(r.path, "/model/amazon.titan-image-generator-v1/invoke");
        assert_signed(r);
        let body = r.json();
        assert_eq!(body["textToImageParams"], json!({"text": "city at night"}));
        assert_eq!(body["imageGenerationConfig"]["width"], 1280);
        assert_eq!(body["imageGenerationConfig"]["height"], 768);
    }

    #[tokio::test]
    async fn titan_refuses_a_prompt_longer_than_it_accepts_before_calling() {
        let double = Double::start(vec![Reply::Hang]).await;
        let p = provider(&double, "amazon.titan-image-generator-v2:0", 5_000);
        let req = GenerationRequest::new(
            Prompt::parse(&"lake ".repeat(150)).unwrap(),
            ImageSize::Square512,
            Seed::new(1).unwrap(),
        );
        let e = p.generate(&req).await.unwrap_err();
        assert!(matches!(e, ProviderError::Rejected { .. }));
        assert!(e.to_string().contains("512"), "{e}");
        assert!(double.seen().is_empty());
    }

    #[tokio::test]
    async fn sdxl_request_and_response_follow_the_stability_shape() {
        let (png, b64) = png_b64();
        let double = Double::start(vec![Reply::Json(
            200,
            json!({"result": "success", "artifacts": [{"seed": 42, "base64": b64, "finishReason": "SUCCESS"}]}),
            vec![],
        )])
        .await;
        let p = provider(&double, "stability.stable-diffusion-xl-v1", 5_000);
        let image = p.generate(&request()).await.unwrap();
        let r = &double.seen()[0];
        assert_eq!(r.path, "/model/stability.stable-diffusion-xl-v1/invoke");
        assert_signed(r);
        assert_eq!(
            r.json(),
            json!({
                "text_prompts": [
                    {"text": "a mountain lake at dusk", "weight": 1.0},
                    {"text": "fog", "weight": -1.0}
                ],
                "cfg_scale": 7.5, "seed": 42, "width": 1024, "height": 1024,
                "steps": 40, "samples": 1
            })
        );
        assert_eq!(image.png, png);
    }

    #[tokio::test]
    async fn sdxl_content_filter_is_a_refusal() {
        let double = Double::start(vec![Reply::Json(
            200,
            json!({"result": "success", "artifacts": [{"seed": 1, "base64": "", "finishReason": "CONTENT_FILTERED"}]}),
            vec![],
        )])
        .await;
        let p = provider(&double, "stability.stable-diffusion-xl-v1", 5_000);
        let e = generate_with_retry(&p, &request(), &fast_retries())
            .await
            .unwrap_err();
        assert!(matches!(e, ProviderError::Rejected { .. }), "{e:?}");
        assert_eq!(double.seen().len(), 1);
    }

    #[tokio::test]
    async fn sd3_request_uses_prompt_aspect_ratio_and_png() {
        let (png, b64) = png_b64();
        let double = Double::start(vec![Reply::Json(
            200,
            json!({"seeds": [42], "finish_reasons": [null], "images": [b64]}),
            vec![],
        )])
        .await;
        let p = provider(&double, "stability.sd3-large-v1:0", 5_000);
        let req = GenerationRequest::new(
            Prompt::parse("a mountain lake at dusk").unwrap(),
            ImageSize::Portrait576x1024,
            Seed::new(42).unwrap(),
        )
        .with_negative_prompt(NegativePrompt::parse("fog").unwrap());
        let image = p.generate(&req).await.unwrap();
        let r = &double.seen()[0];
        assert_eq!(r.path, "/model/stability.sd3-large-v1%3A0/invoke");
        assert_signed(r);
        assert_eq!(
            r.json(),
            json!({
                "prompt": "a mountain lake at dusk", "negative_prompt": "fog", "seed": 42,
                "aspect_ratio": "9:16", "output_format": "png"
            })
        );
        assert_eq!(image.png, png);

        let double = Double::start(vec![Reply::Json(
            200,
            json!({"finish_reasons": ["Filter reason: prompt"]}),
            vec![],
        )])
        .await;
        let p = provider(&double, "stability.sd3-large-v1:0", 5_000);
        let e = p.generate(&req).await.unwrap_err();
        assert!(matches!(e, ProviderError::Rejected { .. }), "{e:?}");
        assert!(e.to_string().contains("Filter reason: prompt"), "{e}");
    }

    fn aws_error(
        status: u16,
        kind: &str,
        message: &str,
        extra: Vec<(&'static str, String)>,
    ) -> Reply {
        let mut headers = vec![(
            "x-amzn-errortype",
            format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        )];
        headers.extend(extra);
        Reply::Json(status, json!({"message": message}), headers)
    }

    #[tokio::test]
    async fn bedrock_validation_error_is_a_readable_refusal_and_not_retried() {
        let double = Double::start(vec![aws_error(
            400,
            "ValidationException",
            "This request has been blocked by our content filters.",
            vec![],
        )])
        .await;
        let p = provider(&double, "amazon.titan-image-generator-v2:0", 5_000);
        let e = generate_with_retry(&p, &request(), &fast_retries())
            .await
            .unwrap_err();
        assert!(matches!(e, ProviderError::Rejected { .. }), "{e:?}");
        assert!(
            e.to_string().contains("blocked by our content filters"),
            "{e}"
        );
        assert_eq!(double.seen().len(), 1);
    }

    #[tokio::test]
    async fn bedrock_throttling_is_retried_then_succeeds() {
        let (_, b64) = png_b64();
        let double = Double::start(vec![
            aws_error(
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
                vec![("retry-after", "1".into())],
            ),
            aws_error(
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
                vec![],
            ),
            titan_ok(&b64),
        ])
        .await;
        let p = provider(&double, "amazon.titan-image-generator-v2:0", 5_000);
        let first = p.generate(&request()).await.unwrap_err();
        assert!(
            matches!(&first, ProviderError::Throttled { retry_after: Some(d), .. } if *d == Duration::from_secs(1)),
            "{first:?}"
        );
        let image = generate_with_retry(&p, &request(), &fast_retries())
            .await
            .unwrap();
        assert_eq!(image.provider, "bedrock");
        assert_eq!(double.seen().len(), 3);
        for r in double.seen() {
            assert_signed(&r);
        }
    }

    #[tokio::test]
    async fn bedrock_500_is_retried_up_to_the_bound() {
        let double = Double::start(vec![aws_error(
            500,
            "InternalServerException",
            "Internal server error",
            vec![],
        )])
        .await;
        let p = provider(&double, "amazon.titan-image-generator-v2:0", 5_000);
        let e = generate_with_retry(&p, &request(), &fast_retries())
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ProviderError::Unavailable {
                    status: Some(500),
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            double.seen().len(),
            3,
            "our policy's attempts, the SDK's retries are off"
        );
    }

    #[tokio::test]
    async fn bedrock_access_denied_is_misconfiguration() {
        let double = Double::start(vec![aws_error(
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
            vec![],
        )])
        .await;
        let p = provider(&double, "amazon.titan-image-generator-v2:0", 5_000);
        let e = generate_with_retry(&p, &request(), &fast_retries())
            .await
            .unwrap_err();
        assert!(matches!(e, ProviderError::Misconfigured { .. }), "{e:?}");
        assert_eq!(double.seen().len(), 1);
    }

    #[tokio::test]
    async fn bedrock_that_never_answers_times_out_within_the_bound() {
        let double = Double::start(vec![Reply::Hang]).await;
        let p = provider(&double, "amazon.titan-image-generator-v2:0", 400);
        let started = Instant::now();
        let e = p.generate(&request()).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, ProviderError::Timeout { .. }), "{e:?}");
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn bedrock_malformed_answer_is_an_invalid_response() {
        for reply in [
            Reply::Raw(200, "{\"images\": \"nope\"}"),
            Reply::Raw(200, "not json"),
            Reply::Json(200, json!({"images": ["!!!"], "error": null}), vec![]),
            Reply::Json(200, json!({"images": [], "error": null}), vec![]),
        ] {
            let double = Double::start(vec![reply]).await;
            let p = provider(&double, "amazon.titan-image-generator-v2:0", 5_000);
            let e = generate_with_retry(&p, &request(), &fast_retries())
                .await
                .unwrap_err();
            assert!(matches!(e, ProviderError::InvalidResponse { .. }), "{e:?}");
            assert_eq!(double.seen().len(), 1);
        }
    }

    #[test]
    fn an_unknown_model_id_is_refused_at_start() {
        let cfg = BedrockConfig {
            model_id: "anthropic.claude-v2".into(),
            region: Some(REGION.into()),
            ..Default::default()
        };
        let e = BedrockProvider::new(&cfg, &sdk_config()).unwrap_err();
        assert!(e.0.contains("not a supported image model"), "{e}");
    }
}
