//! Stripe as the wallet's payment provider for top-ups: create and read PaymentIntents, and
//! verify the webhooks that report what became of them.
//!
//! What is sent (API version pinned by `Stripe-Version: 2024-06-20`; the fields read here,
//! `id`, `status`, `amount`, `currency`, `client_secret`, `metadata`, are the same in every
//! version since 2019):
//!
//! * `POST {api_base}/v1/payment_intents` with `Authorization: Bearer <secret_key>`,
//!   `Idempotency-Key: <key>` (a retry with the same key returns the first answer, never a
//!   second charge) and the form body
//!   `amount=<minor units>&currency=<iso, lower case>&automatic_payment_methods[enabled]=true&metadata[<k>]=<v>…`.
//!   Values and metadata keys are percent-encoded; the brackets of the parameter names stay
//!   literal, as in Stripe's documentation and official libraries.
//! * `GET {api_base}/v1/payment_intents/{id}`.
//!
//! Errors come from the status and Stripe's `{"error": {"type", "code", "message",
//! "decline_code"}}` body: a `card_error` is [`StripeError::Declined`], another 4xx
//! [`StripeError::Rejected`], 429 [`StripeError::Throttled`], a 5xx, timeout or lost
//! connection [`StripeError::Unavailable`]. Answers are read up to 1 MiB, and a message
//! never contains the secret key, even when Stripe echoes it.
//!
//! Webhooks are checked by [`verify_webhook`], a pure function of the payload, the
//! `Stripe-Signature` header, the signing secret and the current time: `t=<unix>,v1=<hex>…`
//! where `v1` is hex(HMAC-SHA256(secret, "{t}.{payload}")). The event's `data.object` has
//! the webhook endpoint's API version (set in Stripe's dashboard), not the pinned one.

use std::{collections::BTreeMap, fmt, time::Duration};

use hmac::{Hmac, Mac};
use rendermart_types::Secret;
use reqwest::{header, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use url::form_urlencoded::byte_serialize;

/// The API version every request asks for.
pub const STRIPE_VERSION: &str = "2024-06-20";
/// The largest answer body read.
const MAX_BODY: usize = 1024 * 1024;

/// `[wallet.stripe]`: where Stripe is and the two secrets it shares with us.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StripeConfig {
    /// `https://api.stripe.com`, or a local double in tests.
    pub api_base: String,
    /// The `sk_…` key. Redacted in `Debug` and when serialized.
    pub secret_key: Secret,
    /// The webhook endpoint's `whsec_…` signing secret. Redacted like the key.
    pub webhook_secret: Secret,
    /// How long one request may take, connecting included, in milliseconds.
    pub timeout_ms: u64,
    /// How far a webhook's signed timestamp may be from now, in seconds (replay window).
    pub webhook_tolerance_secs: u64,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            api_base: "https://api.stripe.com".into(),
            secret_key: Secret::default(),
            webhook_secret: Secret::default(),
            timeout_ms: 10_000,
            webhook_tolerance_secs: 300,
        }
    }
}

/// Written by hand so that a new field cannot print a secret by accident.
impl fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeConfig")
            .field("api_base", &self.api_base)
            .field("secret_key", &"***")
            .field("webhook_secret", &"***")
            .field("timeout_ms", &self.timeout_ms)
            .field("webhook_tolerance_secs", &self.webhook_tolerance_secs)
            .finish()
    }
}

/// A setting that cannot work, naming it: `wallet.stripe.secret_key is empty`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StripeConfigError(pub String);

/// Why a call to Stripe failed.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// The card was refused (`card_error`): tell the payer, do not retry as is.
    #[error("the card was declined: {0}")]
    Declined(String),
    /// Stripe refused the request (another 4xx), or it was invalid before being sent.
    #[error("Stripe refused the request: {0}")]
    Rejected(String),
    /// 429: retry later, with the same idempotency key.
    #[error("Stripe is throttling requests{}", retry_hint(.retry_after))]
    Throttled { retry_after: Option<Duration> },
    /// 5xx, a timeout, no connection or an answer that makes no sense: retry later with
    /// the same idempotency key (Stripe may have acted on the first attempt).
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
}

impl StripeError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Unavailable(_))
    }
}

fn retry_hint(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("; retry after {:.1} s", d.as_secs_f64()),
        None => "; retry later".into(),
    }
}

/// The part of a Stripe PaymentIntent the wallet uses.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct PaymentIntent {
    /// `pi_…`.
    pub id: String,
    /// `requires_payment_method`, `requires_action`, `processing`, `succeeded`, `canceled`…
    pub status: String,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217, lower case.
    pub currency: String,
    /// What the browser needs to confirm the payment; absent from some webhooks.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The metadata sent at creation (the top-up it pays for).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A client of Stripe's PaymentIntents API. Cheap to clone.
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    api_base: String,
    secret_key: Secret,
    webhook_secret: Secret,
    timeout: Duration,
    webhook_tolerance_secs: i64,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient")
            .field("api_base", &self.api_base)
            .field("secret_key", &"***")
            .field("webhook_secret", &"***")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl StripeClient {
    pub fn new(config: &StripeConfig) -> Result<Self, StripeConfigError> {
        let refuse = |message: String| StripeConfigError(format!("wallet.stripe.{message}"));
        let base = config.api_base.trim().trim_end_matches('/');
        let parsed =
            url::Url::parse(base).map_err(|e| refuse(format!("api_base \"{base}\": {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(refuse(format!("api_base \"{base}\" must be http or https")));
        }
        for (name, secret) in [
            ("secret_key", &config.secret_key),
            ("webhook_secret", &config.webhook_secret),
        ] {
            if secret.expose().trim().is_empty() {
                return Err(refuse(format!("{name} is empty")));
            }
            if !secret.expose().bytes().all(|b| b.is_ascii_graphic()) {
                return Err(refuse(format!("{name} must be visible ASCII characters")));
            }
        }
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // Stripe never redirects; a redirect is a misconfigured api_base, not a hop.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| refuse(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            api_base: base.to_owned(),
            secret_key: config.secret_key.clone(),
            webhook_secret: config.webhook_secret.clone(),
            timeout,
            webhook_tolerance_secs: i64::try_from(config.webhook_tolerance_secs)
                .unwrap_or(i64::MAX),
        })
    }

    /// Creates a PaymentIntent of `amount` minor units. `idempotency_key` makes a retry
    /// safe: Stripe answers a repeated key with the first request's result.
    pub async fn create_payment_intent(
        &self,
        amount: i64,
        currency: &str,
        idempotency_key: &str,
        metadata: &[(&str, &str)],
    ) -> Result<PaymentIntent, StripeError> {
        let body =
            payment_intent_form(amount, currency, metadata).map_err(StripeError::Rejected)?;
        let key = idempotency_key;
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(StripeError::Rejected(
                "the idempotency key must be 1 to 255 visible ASCII characters".into(),
            ));
        }
        let request = self
            .http
            .post(format!("{}/v1/payment_intents", self.api_base))
            .header("Idempotency-Key", key)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        self.send(request).await
    }

    /// Reads a PaymentIntent by its `pi_…` id.
    pub async fn retrieve_payment_intent(&self, id: &str) -> Result<PaymentIntent, StripeError> {
        let rest = id.strip_prefix("pi_").unwrap_or_default();
        if id.len() > 255
            || rest.is_empty()
            || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(StripeError::Rejected(format!(
                "\"{}\" is not a PaymentIntent id (pi_ and letters, digits, _)",
                readable(&id.chars().take(64).collect::<String>())
            )));
        }
        let request = self
            .http
            .get(format!("{}/v1/payment_intents/{id}", self.api_base));
        self.send(request).await
    }

    /// [`verify_webhook`] with this client's signing secret and tolerance.
    pub fn verify_webhook(
        &self,
        payload: &[u8],
        signature_header: &str,
        now_unix: i64,
    ) -> Result<WebhookEvent, WebhookError> {
        verify_webhook(
            payload,
            signature_header,
            self.webhook_secret.expose(),
            now_unix,
            self.webhook_tolerance_secs,
        )
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<PaymentIntent, StripeError> {
        let response = request
            .bearer_auth(self.secret_key.expose())
            .header("Stripe-Version", STRIPE_VERSION)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(86_400.0)));
        let body = self.body(response).await?;
        if !status.is_success() {
            return Err(self.error_from(status, retry_after, &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            StripeError::Unavailable(format!("the answer is not a PaymentIntent ({e})"))
        })
    }

    fn transport_error(&self, e: reqwest::Error) -> StripeError {
        StripeError::Unavailable(if e.is_timeout() {
            format!("no answer within {} ms", self.timeout.as_millis())
        } else if e.is_connect() {
            format!("could not connect to {}", self.api_base)
        } else {
            self.redact(&e.to_string())
        })
    }

    /// Reads the body up to [`MAX_BODY`].
    async fn body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, StripeError> {
        let too_large =
            || StripeError::Unavailable(format!("the answer is larger than {MAX_BODY} bytes"));
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

    fn error_from(
        &self,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> StripeError {
        if status == StatusCode::TOO_MANY_REQUESTS {
            return StripeError::Throttled { retry_after };
        }
        let detail = serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .and_then(|b| b.error)
            .unwrap_or_default();
        let message = detail.message.clone().unwrap_or_else(|| {
            // No Stripe error body: a proxy's page, say. Show its start.
            String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
        });
        let mut details = vec![format!("HTTP {}", status.as_u16())];
        details.extend(
            [&detail.kind, &detail.code, &detail.decline_code]
                .into_iter()
                .flatten()
                .cloned(),
        );
        let text = self.redact(&format!("{} ({})", message.trim(), details.join(", ")));
        match status.as_u16() {
            500.. => StripeError::Unavailable(text),
            _ if detail.kind.as_deref() == Some("card_error") => StripeError::Declined(text),
            400..=499 => StripeError::Rejected(text),
            _ => StripeError::Unavailable(text),
        }
    }

    /// `text` on one bounded line, without the secret key even if Stripe echoed it (the
    /// key is never empty: [`StripeClient::new`] refuses that).
    fn redact(&self, text: &str) -> String {
        readable(&text.replace(self.secret_key.expose(), "***"))
    }
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
    message: Option<String>,
    decline_code: Option<String>,
}

/// The form body of a PaymentIntent creation, or why the arguments are invalid. Stripe
/// checks metadata's limits (50 keys, 40 and 500 characters) itself; an empty key or one
/// with brackets is refused here, as it would change the parameter's structure.
fn payment_intent_form(
    amount: i64,
    currency: &str,
    metadata: &[(&str, &str)],
) -> Result<String, String> {
    if amount <= 0 {
        return Err(format!(
            "the amount must be positive minor units, not {amount}"
        ));
    }
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err("the currency must be a three-letter ISO 4217 code".into());
    }
    let mut body = format!(
        "amount={amount}&currency={}&automatic_payment_methods[enabled]=true",
        currency.to_ascii_lowercase()
    );
    for (key, value) in metadata {
        if key.is_empty() || key.contains(['[', ']']) {
            return Err("a metadata key must be non-empty and without brackets".into());
        }
        body.push_str("&metadata[");
        body.extend(byte_serialize(key.as_bytes()));
        body.push_str("]=");
        body.extend(byte_serialize(value.as_bytes()));
    }
    Ok(body)
}

/// Text from elsewhere on one line of at most 300 characters, without control characters.
fn readable(text: &str) -> String {
    const MAX: usize = 300;
    let mut out = text
        .split_whitespace()
        .map(|w| w.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if out.chars().count() > MAX {
        out = out.chars().take(MAX - 1).collect();
        out.push('…');
    }
    if out.is_empty() {
        "no details given".into()
    } else {
        out
    }
}

/// A verified Stripe event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEvent {
    /// `evt_…`: handle each once.
    pub id: String,
    /// The event's `type`: `payment_intent.succeeded`, `payment_intent.payment_failed`…
    pub kind: String,
    /// `data.object` when it is a PaymentIntent.
    pub payment_intent: Option<PaymentIntent>,
    /// When Stripe made the event, Unix seconds.
    pub created: i64,
}

/// Why a webhook was refused. Answer 400 to all: Stripe retries, an attacker learns nothing.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the Stripe-Signature header is malformed: {0}")]
    MalformedHeader(&'static str),
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    #[error("no v1 signature matches the payload")]
    SignatureMismatch,
    #[error("the signature's timestamp is {age_secs} s from now; at most {tolerance_secs} s is accepted")]
    OutsideTolerance { age_secs: u64, tolerance_secs: i64 },
    #[error("the payload is not a Stripe event's JSON: {0}")]
    PayloadNotJson(String),
}

/// The MAC of `"{t}.{payload}"` under `secret`. HMAC takes keys of any length (longer ones
/// are hashed first), so the error cannot happen; it is kept typed rather than unwrapped.
fn webhook_mac(
    payload: &[u8],
    secret: &str,
    t: i64,
) -> Result<Hmac<Sha256>, hmac::digest::InvalidLength> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    Ok(mac)
}

/// A `Stripe-Signature` header value for `payload` signed with `secret` at `t`, as Stripe
/// makes it: `t=<t>,v1=<hex>`. For tests and local Stripe doubles; production only verifies.
pub fn sign_webhook(payload: &[u8], secret: &str, t: i64) -> String {
    let signature = webhook_mac(payload, secret, t)
        .map(|mac| hex::encode(mac.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={t},v1={signature}")
}

/// Checks a webhook as Stripe documents it and parses its event: the header's `t` and
/// every `v1` (other schemes, such as `v0`, are ignored); one `v1` must equal
/// hex(HMAC-SHA256(secret, "{t}.{payload}")), compared in constant time; `t` must be at
/// most `tolerance_secs` from `now_unix`, either way. The payload must be the raw body.
pub fn verify_webhook(
    payload: &[u8],
    signature_header: &str,
    secret: &str,
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<WebhookEvent, WebhookError> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in signature_header.split(',') {
        let (name, value) = part
            .trim()
            .split_once('=')
            .ok_or(WebhookError::MalformedHeader(
                "an element is not name=value",
            ))?;
        match name {
            "t" if t.is_some() => return Err(WebhookError::MalformedHeader("t appears twice")),
            "t" => {
                let parsed = value.parse::<i64>();
                t = Some(parsed.map_err(|_| WebhookError::MalformedHeader("t is not a number"))?);
            }
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let t = t.ok_or(WebhookError::MalformedHeader("no t timestamp"))?;
    if signatures.is_empty() {
        return Err(WebhookError::NoV1Signature);
    }
    let mac = webhook_mac(payload, secret, t).map_err(|_| WebhookError::SignatureMismatch)?;
    let matches = signatures.iter().any(|hex_sig| {
        hex::decode(hex_sig).is_ok_and(|sig| mac.clone().verify_slice(&sig).is_ok())
    });
    if !matches {
        return Err(WebhookError::SignatureMismatch);
    }
    let age_secs = now_unix.abs_diff(t);
    if age_secs > tolerance_secs.max(0).unsigned_abs() {
        return Err(WebhookError::OutsideTolerance {
            age_secs,
            tolerance_secs,
        });
    }
    let not_json = |e: serde_json::Error| WebhookError::PayloadNotJson(e.to_string());
    let event: RawEvent = serde_json::from_slice(payload).map_err(not_json)?;
    let payment_intent = match event.data.object.get("object") {
        Some(o) if o == "payment_intent" => {
            Some(serde_json::from_value(event.data.object).map_err(not_json)?)
        }
        _ => None,
    };
    Ok(WebhookEvent {
        id: event.id,
        kind: event.kind,
        payment_intent,
        created: event.created,
    })
}

#[derive(Deserialize)]
struct RawEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    data: RawEventData,
}

#[derive(Deserialize)]
struct RawEventData {
    object: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::{
        body::{Body, Bytes},
        http::{HeaderMap, Method, Uri},
        response::Response,
    };
    use serde_json::json;

    use super::*;

    const KEY: &str = "sk_test_51RenderMartDoubleKey0123";
    const WHSEC: &str = "whsec_test_RenderMartDouble";
    const PI: &str = "pi_3MtwBwLkdIwHu7ix28a3tqPa";
    const T: i64 = 1_700_000_000;

    fn config(api_base: &str, timeout_ms: u64) -> StripeConfig {
        StripeConfig {
            api_base: api_base.into(),
            secret_key: Secret::new(KEY),
            webhook_secret: Secret::new(WHSEC),
            timeout_ms,
            ..StripeConfig::default()
        }
    }

    /// A request as the double saw it.
    struct Seen {
        method: Method,
        path: String,
        headers: HeaderMap,
        body: String,
    }

    /// What the double answers to every request, after `delay`.
    #[derive(Clone)]
    struct Reply {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
        delay: Duration,
    }

    fn reply(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// A client of a local Stripe double that records every request and answers `reply`.
    async fn stripe_double(reply: Reply, timeout_ms: u64) -> (StripeClient, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (log, reply) = (log.clone(), reply.clone());
                async move {
                    log.lock().unwrap().push(Seen {
                        method,
                        path: uri.path().to_owned(),
                        headers,
                        body: String::from_utf8(body.to_vec()).unwrap(),
                    });
                    tokio::time::sleep(reply.delay).await;
                    let mut response = Response::builder()
                        .status(reply.status)
                        .header("content-type", "application/json")
                        .header("request-id", "req_double");
                    for (name, value) in &reply.headers {
                        response = response.header(*name, *value);
                    }
                    response.body(Body::from(reply.body)).unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (StripeClient::new(&config(&base, timeout_ms)).unwrap(), seen)
    }

    /// A PaymentIntent as Stripe's API reference shows it.
    fn payment_intent(amount: i64, status: &str) -> serde_json::Value {
        json!({
            "id": PI, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
            "amount_received": 0, "automatic_payment_methods": {"enabled": true},
            "capture_method": "automatic", "client_secret": format!("{PI}_secret_YrKJUKribcBjcG8HV"),
            "confirmation_method": "automatic", "created": 1_680_800_504, "currency": "usd",
            "livemode": false, "metadata": {"topup_id": "tx_1"},
            "payment_method_types": ["card", "link"], "status": status
        })
    }

    fn stripe_error(kind: &str, code: &str, message: &str) -> String {
        json!({"error": {"type": kind, "code": code, "message": message,
            "decline_code": if kind == "card_error" { Some("insufficient_funds") } else { None },
            "request_log_url": "https://dashboard.stripe.com/test/logs/req_double"}})
        .to_string()
    }

    /// The error of a top-up that is expected to fail.
    async fn create_fails(stripe: &StripeClient) -> StripeError {
        let created = stripe.create_payment_intent(100, "usd", "k1", &[]).await;
        created.unwrap_err()
    }

    async fn retrieve_fails(stripe: &StripeClient) -> StripeError {
        stripe.retrieve_payment_intent(PI).await.unwrap_err()
    }

    /// [`verify_webhook`] with the double's secret and a 300 s tolerance.
    fn verify(payload: &[u8], header: &str, now: i64) -> Result<WebhookEvent, WebhookError> {
        verify_webhook(payload, header, WHSEC, now, 300)
    }

    #[tokio::test]
    async fn a_payment_intent_is_created_with_the_documented_form_body_and_headers() {
        let answer = payment_intent(1_500, "requires_payment_method").to_string();
        let (stripe, seen) = stripe_double(reply(200, answer), 10_000).await;
        let metadata = [("topup_id", "tx_1"), ("note", "a & b = c é")];
        let pi = stripe
            .create_payment_intent(1_500, "USD", "topup-tx_1", &metadata)
            .await
            .unwrap();
        assert_eq!(
            (pi.id.as_str(), pi.amount, pi.currency.as_str()),
            (PI, 1_500, "usd")
        );
        assert_eq!(pi.status, "requires_payment_method");
        assert!(pi.client_secret.unwrap().starts_with(PI));
        assert_eq!(pi.metadata["topup_id"], "tx_1");

        let seen = seen.lock().unwrap();
        let [request] = &seen[..] else {
            panic!("{} requests", seen.len())
        };
        assert_eq!(
            (&request.method, request.path.as_str()),
            (&Method::POST, "/v1/payment_intents")
        );
        let header = |name: &str| request.headers.get(name).map(|v| v.to_str().unwrap());
        assert_eq!(
            header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(header("idempotency-key"), Some("topup-tx_1"));
        assert_eq!(
            header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(header("stripe-version"), Some(STRIPE_VERSION));
        assert_eq!(
            request.body,
            "amount=1500&currency=usd&automatic_payment_methods[enabled]=true\
             &metadata[topup_id]=tx_1&metadata[note]=a+%26+b+%3D+c+%C3%A9"
        );
        let fields: Vec<String> = url::form_urlencoded::parse(request.body.as_bytes())
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        assert_eq!(
            fields,
            [
                "amount=1500",
                "currency=usd",
                "automatic_payment_methods[enabled]=true",
                "metadata[topup_id]=tx_1",
                "metadata[note]=a & b = c é",
            ]
        );
    }

    #[tokio::test]
    async fn a_payment_intent_is_retrieved_by_id_and_a_malformed_id_is_never_sent() {
        let answer = payment_intent(1_500, "succeeded").to_string();
        let (stripe, seen) = stripe_double(reply(200, answer), 10_000).await;
        let pi = stripe.retrieve_payment_intent(PI).await.unwrap();
        assert_eq!((pi.id.as_str(), pi.status.as_str()), (PI, "succeeded"));
        for bad in [
            "",
            "pi_",
            "ch_123",
            "pi_../../v1/charges",
            "pi_a?b=c",
            "pi_a b",
        ] {
            let e = stripe.retrieve_payment_intent(bad).await.unwrap_err();
            assert!(matches!(e, StripeError::Rejected(_)), "{bad:?}: {e:?}");
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (&seen[0].method, seen[0].path.as_str()),
            (&Method::GET, &*format!("/v1/payment_intents/{PI}"))
        );
        let auth = seen[0].headers.get("authorization").unwrap();
        assert_eq!(auth, &format!("Bearer {KEY}"));
    }

    #[tokio::test]
    async fn invalid_arguments_are_refused_before_any_request() {
        let (stripe, seen) = stripe_double(reply(200, "{}"), 10_000).await;
        for attempt in [
            stripe.create_payment_intent(0, "usd", "k", &[]),
            stripe.create_payment_intent(-5, "usd", "k", &[]),
            stripe.create_payment_intent(1, "us", "k", &[]),
            stripe.create_payment_intent(1, "usd", "", &[]),
            stripe.create_payment_intent(1, "usd", "a key", &[]),
            stripe.create_payment_intent(1, "usd", "k", &[("a[b]", "x")]),
            stripe.create_payment_intent(1, "usd", "k", &[("", "x")]),
        ] {
            let e = attempt.await;
            assert!(matches!(e, Err(StripeError::Rejected(_))), "{e:?}");
        }
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_card_error_is_a_readable_decline() {
        let body = stripe_error(
            "card_error",
            "card_declined",
            "Your card has insufficient funds.",
        );
        let (stripe, _) = stripe_double(reply(402, body), 10_000).await;
        let e = create_fails(&stripe).await;
        let StripeError::Declined(text) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            text,
            "Your card has insufficient funds. (HTTP 402, card_error, card_declined, insufficient_funds)"
        );
        assert!(!e.is_retryable());
    }

    #[tokio::test]
    async fn other_client_errors_are_rejections_and_server_errors_unavailable() {
        let body = stripe_error(
            "invalid_request_error",
            "parameter_invalid_integer",
            "Invalid integer: 1.5",
        );
        let (stripe, _) = stripe_double(reply(400, body), 10_000).await;
        let e = create_fails(&stripe).await;
        assert!(
            matches!(&e, StripeError::Rejected(t) if t.contains("Invalid integer")),
            "{e:?}"
        );

        let (stripe, _) = stripe_double(reply(502, "<html>Bad gateway</html>"), 10_000).await;
        let e = retrieve_fails(&stripe).await;
        assert!(
            matches!(&e, StripeError::Unavailable(t) if t.contains("Bad gateway")),
            "{e:?}"
        );
        assert!(e.is_retryable());

        let (stripe, _) = stripe_double(reply(200, "not json"), 10_000).await;
        let e = retrieve_fails(&stripe).await;
        assert!(matches!(e, StripeError::Unavailable(_)), "{e:?}");
    }

    #[tokio::test]
    async fn an_error_that_echoes_the_key_is_redacted() {
        let body = stripe_error(
            "invalid_request_error",
            "api_key_invalid",
            &format!("Invalid API Key provided: {KEY}"),
        );
        let (stripe, _) = stripe_double(reply(401, body), 10_000).await;
        let e = retrieve_fails(&stripe).await;
        assert!(matches!(e, StripeError::Rejected(_)), "{e:?}");
        assert!(
            !e.to_string().contains(KEY) && !format!("{e:?}").contains(KEY),
            "{e}"
        );
        assert!(
            e.to_string().contains("Invalid API Key provided: ***"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn throttling_carries_retry_after() {
        let mut throttled = reply(
            429,
            stripe_error("invalid_request_error", "rate_limit", "Too many requests"),
        );
        throttled.headers.push(("retry-after", "2"));
        let (stripe, _) = stripe_double(throttled, 10_000).await;
        let e = create_fails(&stripe).await;
        assert!(
            matches!(e, StripeError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(2)),
            "{e:?}"
        );
        assert!(e.is_retryable());

        let (stripe, _) = stripe_double(reply(429, "{}"), 10_000).await;
        let e = retrieve_fails(&stripe).await;
        assert!(
            matches!(e, StripeError::Throttled { retry_after: None }),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_timeout_is_unavailable() {
        let mut slow = reply(200, payment_intent(100, "succeeded").to_string());
        slow.delay = Duration::from_secs(3);
        let (stripe, _) = stripe_double(slow, 200).await;
        let started = std::time::Instant::now();
        let e = retrieve_fails(&stripe).await;
        assert!(
            matches!(&e, StripeError::Unavailable(t) if t.contains("200 ms")),
            "{e:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn an_answer_larger_than_a_mebibyte_is_not_read() {
        let (stripe, _) = stripe_double(reply(200, " ".repeat(MAX_BODY + 1)), 10_000).await;
        let e = retrieve_fails(&stripe).await;
        assert!(
            matches!(&e, StripeError::Unavailable(t) if t.contains("larger")),
            "{e:?}"
        );
    }

    #[test]
    fn a_config_without_secrets_or_with_a_bad_api_base_is_refused() {
        let e = StripeClient::new(&StripeConfig::default()).unwrap_err();
        assert_eq!(e.to_string(), "wallet.stripe.secret_key is empty");
        let no_webhook = StripeConfig {
            webhook_secret: Secret::default(),
            ..config("https://api.stripe.com", 1)
        };
        let e = StripeClient::new(&no_webhook).unwrap_err();
        assert_eq!(e.to_string(), "wallet.stripe.webhook_secret is empty");
        for base in ["ftp://api.stripe.com", "api.stripe.com", ""] {
            let e = StripeClient::new(&config(base, 1)).unwrap_err();
            assert!(
                e.to_string().starts_with("wallet.stripe.api_base"),
                "{base}: {e}"
            );
        }
        let toml_like: StripeConfig = serde_json::from_value(json!({"secret_key": KEY})).unwrap();
        assert_eq!(
            (toml_like.timeout_ms, toml_like.webhook_tolerance_secs),
            (10_000, 300)
        );
        assert!(serde_json::from_value::<StripeConfig>(json!({"secret": KEY})).is_err());
    }

    #[test]
    fn the_secret_key_never_prints() {
        let config = config("https://api.stripe.com", 1_000);
        let client = StripeClient::new(&config).unwrap();
        let printed = [
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{client:?}"),
            serde_json::to_string(&config).unwrap(),
        ];
        for text in printed {
            assert!(!text.contains(KEY) && !text.contains(WHSEC), "{text}");
            assert!(text.contains("api.stripe.com"), "{text}");
        }
    }

    fn event() -> Vec<u8> {
        json!({
            "id": "evt_3MtwBwLkdIwHu7ix0a1b2c3d", "object": "event", "api_version": STRIPE_VERSION,
            "created": T, "livemode": false, "pending_webhooks": 1,
            "type": "payment_intent.succeeded",
            "data": {"object": payment_intent(1_500, "succeeded")}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_webhook_signed_with_the_secret_is_accepted() {
        let payload = event();
        let header = sign_webhook(&payload, WHSEC, T);
        let event = verify(&payload, &header, T + 10).unwrap();
        assert_eq!(event.id, "evt_3MtwBwLkdIwHu7ix0a1b2c3d");
        assert_eq!(
            (event.kind.as_str(), event.created),
            ("payment_intent.succeeded", T)
        );
        let pi = event.payment_intent.unwrap();
        assert_eq!(
            (pi.id.as_str(), pi.status.as_str(), pi.amount),
            (PI, "succeeded", 1_500)
        );

        // The client uses its configured secret and tolerance.
        let client = StripeClient::new(&config("https://api.stripe.com", 1)).unwrap();
        assert!(client.verify_webhook(&payload, &header, T + 300).is_ok());
        assert!(client.verify_webhook(&payload, &header, T + 301).is_err());

        // An event about something else has no PaymentIntent.
        let other = json!({"id": "evt_2", "type": "charge.refunded", "created": T,
            "data": {"object": {"id": "ch_1", "object": "charge"}}})
        .to_string();
        let header = sign_webhook(other.as_bytes(), WHSEC, T);
        let event = verify(other.as_bytes(), &header, T).unwrap();
        assert_eq!(
            (event.kind.as_str(), event.payment_intent),
            ("charge.refunded", None)
        );
    }

    #[test]
    fn a_tampered_payload_or_signature_is_refused() {
        let payload = event();
        let header = sign_webhook(&payload, WHSEC, T);
        let mut tampered = payload.clone();
        let at = tampered.iter().position(|b| *b == b'5').unwrap();
        tampered[at] = b'9';
        let mismatch = Err(WebhookError::SignatureMismatch);
        assert_eq!(verify(&tampered, &header, T), mismatch);
        assert_eq!(
            verify_webhook(&payload, &header, "whsec_other", T, 300),
            mismatch
        );
        // The timestamp is signed too: moving it breaks the signature.
        let moved = header.replace(&format!("t={T}"), &format!("t={}", T + 1));
        assert_eq!(verify(&payload, &moved, T), mismatch);
        let (_, hex_sig) = header.split_once("v1=").unwrap();
        let mut flipped: Vec<u8> = hex_sig.bytes().collect();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = format!("t={T},v1={}", String::from_utf8(flipped).unwrap());
        assert_eq!(verify(&payload, &flipped, T), mismatch);
        let not_hex = format!("t={T},v1=zz{}", &hex_sig[2..]);
        assert_eq!(verify(&payload, &not_hex, T), mismatch);
        // v0 is Stripe's test-only scheme and proves nothing.
        let v0_only = header.replace("v1=", "v0=");
        assert_eq!(
            verify(&payload, &v0_only, T),
            Err(WebhookError::NoV1Signature)
        );
    }

    #[test]
    fn a_stale_webhook_is_refused() {
        let payload = event();
        let header = sign_webhook(&payload, WHSEC, T);
        assert!(verify(&payload, &header, T + 300).is_ok());
        assert!(verify(&payload, &header, T - 300).is_ok());
        for now in [T + 301, T - 301, i64::MAX, i64::MIN] {
            let e = verify(&payload, &header, now).unwrap_err();
            assert!(
                matches!(e, WebhookError::OutsideTolerance { .. }),
                "{now}: {e:?}"
            );
        }
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let payload = event();
        let good = sign_webhook(&payload, WHSEC, T);
        let (_, good_sig) = good.split_once("v1=").unwrap();
        let old = sign_webhook(&payload, "whsec_rolled_away", T);
        let (_, old_sig) = old.split_once("v1=").unwrap();
        for header in [
            format!("t={T},v1={old_sig},v1={good_sig},v0={old_sig}"),
            format!("t={T}, v1={good_sig}, v1={old_sig}"),
            format!("v1={good_sig},t={T}"),
        ] {
            assert!(verify(&payload, &header, T).is_ok(), "{header}");
        }
    }

    #[test]
    fn a_malformed_or_unsigned_header_or_payload_is_refused() {
        let payload = event();
        let good = sign_webhook(&payload, WHSEC, T);
        for header in [
            "",
            "garbage",
            "v1=abcd",
            "t=soon,v1=abcd",
            &format!("t={T},t={T},v1=ab"),
        ] {
            let e = verify(&payload, header, T).unwrap_err();
            assert!(
                matches!(e, WebhookError::MalformedHeader(_)),
                "{header:?}: {e:?}"
            );
        }
        let e = verify(&payload, &format!("t={T}"), T);
        assert_eq!(e, Err(WebhookError::NoV1Signature));
        assert!(
            good.starts_with(&format!("t={T},v1=")) && good.len() == 64 + 16,
            "{good}"
        );

        for body in [&b"not json"[..], br#"{"id":"evt_1"}"#] {
            let header = sign_webhook(body, WHSEC, T);
            let e = verify(body, &header, T).unwrap_err();
            assert!(matches!(e, WebhookError::PayloadNotJson(_)), "{e:?}");
        }
    }
}
