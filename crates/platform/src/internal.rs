//! Service-to-service authentication: internal routes answer only other RenderMart
//! processes, which prove it with a credential derived from the shared `service_secret`.
//!
//! The credential is `<caller>.<unix seconds>.<hex HMAC-SHA256(key, "<caller>.<unix
//! seconds>")>` in the `x-rendermart-service` header, where `key` is derived from the
//! secret (never the secret itself). It is accepted for five minutes either side of its
//! timestamp, so a captured one stops working soon; the secret never travels.
//!
//! [`layer`] guards the `/internal/…` routes: a request without the header gets a 404 (the
//! routes do not exist for the public), a wrong or stale credential a 401. With no secret
//! configured every internal request is a 404: a process that runs everything has no
//! internal callers.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use hmac::{Hmac, Mac};
use rendermart_types::Secret;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::http::Problem;

/// Header that carries the credential.
pub const CREDENTIAL_HEADER: &str = "x-rendermart-service";
/// How far a credential's timestamp may be from the callee's clock.
const MAX_SKEW_SECS: i64 = 300;
const KEY_CONTEXT: &[u8] = b"rendermart internal calls v1";

/// The calling process's identity, proven by the shared secret.
#[derive(Clone)]
pub struct ServiceCredential {
    caller: String,
    key: [u8; 32],
}

impl std::fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCredential")
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

fn derive_key(secret: &Secret) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(KEY_CONTEXT);
    mac.finalize().into_bytes().into()
}

fn signature(key: &[u8; 32], message: &str) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().into()
}

impl ServiceCredential {
    /// `caller` names the calling process (its services, e.g. `web`), for the callee's logs.
    pub fn new(caller: &str, secret: &Secret) -> Self {
        let caller: String = caller
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == ',' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        Self {
            caller,
            key: derive_key(secret),
        }
    }

    /// A fresh credential for one request.
    pub fn token(&self) -> String {
        let message = format!("{}.{}", self.caller, crate::clock::now().unix_timestamp());
        let sig = signature(&self.key, &message);
        format!("{message}.{}", hex::encode(sig))
    }

    /// Checks a presented credential; returns the caller's name.
    pub fn verify(&self, token: &str) -> Result<String, &'static str> {
        let mut parts = token.rsplitn(2, '.');
        let (Some(sig_hex), Some(message)) = (parts.next(), parts.next()) else {
            return Err("malformed service credential");
        };
        let Some((caller, ts)) = message.rsplit_once('.') else {
            return Err("malformed service credential");
        };
        let ts: i64 = ts.parse().map_err(|_| "malformed service credential")?;
        let presented = hex::decode(sig_hex).map_err(|_| "malformed service credential")?;
        let expected = signature(&self.key, message);
        if !bool::from(presented.as_slice().ct_eq(&expected)) {
            return Err("service credential does not match the shared secret");
        }
        if (crate::clock::now().unix_timestamp() - ts).abs() > MAX_SKEW_SECS {
            return Err("service credential expired (check the clocks)");
        }
        Ok(caller.to_owned())
    }
}

/// The caller of an internal route, for handlers that want to log it.
#[derive(Clone, Debug)]
pub struct CallerService(pub String);

/// Guards internal routes. Install with
/// `axum::middleware::from_fn_with_state(verifier, internal::layer)`.
pub async fn layer(
    State(verifier): State<Option<Arc<ServiceCredential>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(CREDENTIAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (Some(verifier), Some(presented)) = (verifier, presented) else {
        return Problem::not_found("No such API endpoint.").into_response();
    };
    match verifier.verify(&presented) {
        Ok(caller) => {
            request.extensions_mut().insert(CallerService(caller));
            next.run(request).await
        }
        Err(why) => {
            tracing::warn!(why, "internal call refused");
            Problem::new(
                http::StatusCode::UNAUTHORIZED,
                "service-credential",
                "Service credential refused",
            )
            .detail(why)
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_verifies_only_with_the_same_secret() {
        let web = ServiceCredential::new("web", &Secret::new("s3cret-shared"));
        let identity = ServiceCredential::new("identity", &Secret::new("s3cret-shared"));
        let stranger = ServiceCredential::new("web", &Secret::new("another"));
        let token = web.token();
        assert_eq!(identity.verify(&token).unwrap(), "web");
        assert!(stranger.verify(&token).is_err());
        assert!(!token.contains("s3cret"), "the secret never travels");
        assert!(!format!("{web:?}").contains("s3cret"));
    }

    #[test]
    fn a_tampered_or_stale_credential_is_refused() {
        let c = ServiceCredential::new("web", &Secret::new("k"));
        let token = c.token();
        let (message, sig) = token.rsplit_once('.').unwrap();
        let (caller, ts) = message.rsplit_once('.').unwrap();
        assert!(
            c.verify(&format!("admin.{ts}.{sig}")).is_err(),
            "caller changed"
        );
        let old = ts.parse::<i64>().unwrap() - 3600;
        let stale = format!("{caller}.{old}");
        let stale = format!("{stale}.{}", hex::encode(signature(&c.key, &stale)));
        assert_eq!(
            c.verify(&stale),
            Err("service credential expired (check the clocks)")
        );
        for junk in ["", "x", "a.b.c", "web.123.zz", &format!("{message}.00")] {
            assert!(c.verify(junk).is_err(), "{junk:?}");
        }
    }
}
