//! The authentication contract every route relies on.
//!
//! Identity owns users, sessions and tokens; every other service only needs to know *who is
//! calling*. The edge layer ([`layer`]) reads the credential of each request (a bearer API
//! token, else the session cookie), asks the [`Authenticator`] (identity's client, local or
//! remote) who it belongs to, and leaves the answer in the request. Handlers then take a
//! [`Principal`] argument (401 if nobody valid is calling) or an [`OptionalPrincipal`].
//! If identity cannot be asked (it is down), a request with a credential gets a 503.
//!
//! CSRF: a request authenticated by the session cookie that changes state (any method but
//! GET/HEAD/OPTIONS) must carry the session's CSRF token in `X-CSRF-Token`, checked when the
//! handler asks for a `Principal`. Bearer-token requests need none: browsers never attach
//! them on their own. Server-rendered forms check the token from the form body instead
//! ([`Principal::csrf_matches`]).
//!
//! The session cookie is `__Host-rm_session` when cookies are secure (the `__Host-` prefix
//! makes browsers refuse it unless it is Secure, host-only and `Path=/`, so a sibling
//! subdomain cannot plant one) and `rm_session` on plain-HTTP development setups.
//!
//! Roles and the session cookie live here, not in identity, because every service's routes
//! depend on them; which user has which role is identity's business.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use axum::{
    extract::{FromRequestParts, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{header, request::Parts, HeaderMap, Method};
use rendermart_types::UserId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::http::Problem;

/// Name of the session cookie on plain HTTP.
pub const SESSION_COOKIE: &str = "rm_session";
/// Name of the session cookie when cookies are secure.
pub const SECURE_SESSION_COOKIE: &str = "__Host-rm_session";
/// Header carrying the CSRF token of a cookie session.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a user may do beyond their own data.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Seller,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Seller => "seller",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "customer" => Ok(Role::Customer),
            "seller" => Ok(Role::Seller),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?} (customer, seller or admin)"
            )),
        }
    }
}

/// A credential as presented by a request.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "secret", rename_all = "snake_case")]
pub enum Credential {
    SessionCookie(String),
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        match self {
            Credential::SessionCookie(_) => f.write_str("SessionCookie(..)"),
            Credential::Bearer(_) => f.write_str("Bearer(..)"),
        }
    }
}

impl Credential {
    /// The request's credential: an `Authorization: Bearer` header wins over the cookie.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let value = value.to_str().ok()?;
            let (scheme, token) = value.split_once(' ')?;
            return scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| Credential::Bearer(token.trim().to_owned()));
        }
        session_cookie_value(headers).map(Credential::SessionCookie)
    }

    fn secret(&self) -> &str {
        match self {
            Credential::SessionCookie(s) | Credential::Bearer(s) => s,
        }
    }
}

/// The value of the session cookie (either name), if the request has one.
pub fn session_cookie_value(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SECURE_SESSION_COOKIE).or_else(|| cookie(headers, SESSION_COOKIE))
}

/// The non-empty value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// How the caller proved who they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Via {
    /// A browser session; state changes need its CSRF token.
    Session {
        session_id: Uuid,
        csrf_token: String,
    },
    ApiToken {
        token_id: Uuid,
    },
}

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub user_id: UserId,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub via: Via,
}

impl Principal {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Constant-time comparison of a submitted CSRF token with the session's.
    pub fn csrf_matches(&self, submitted: &str) -> bool {
        match &self.via {
            Via::Session { csrf_token, .. } => {
                bool::from(csrf_token.as_bytes().ct_eq(submitted.as_bytes()))
            }
            Via::ApiToken { .. } => true,
        }
    }

    pub fn csrf_token(&self) -> Option<&str> {
        match &self.via {
            Via::Session { csrf_token, .. } => Some(csrf_token),
            Via::ApiToken { .. } => None,
        }
    }

    /// Whether the caller signed in with a browser session (not an API token).
    pub fn is_session(&self) -> bool {
        matches!(self.via, Via::Session { .. })
    }
}

/// Identity could not be asked who is calling (it is down or timed out).
#[derive(Debug, thiserror::Error)]
#[error("authentication backend unavailable: {0}")]
pub struct AuthError(pub String);

/// Resolves a credential to a principal. Implemented by identity's client.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(None)` for an unknown, expired or revoked credential.
    async fn authenticate(&self, credential: &Credential) -> Result<Option<Principal>, AuthError>;
}

/// The authenticator of a process where identity neither runs nor is reachable: every
/// credential is "cannot tell" (503), and anonymous requests go on.
pub struct NoAuthenticator;

#[async_trait]
impl Authenticator for NoAuthenticator {
    async fn authenticate(&self, _: &Credential) -> Result<Option<Principal>, AuthError> {
        Err(AuthError(
            "identity is not reachable from this process (set --identity-url)".into(),
        ))
    }
}

/// A short-lived cache of valid credentials, so each API call does not ask identity again.
///
/// Bounded twice: an entry lives at most `ttl` (so a session or token revoked elsewhere
/// stops working within `ttl`), and at most `capacity` entries are kept (only credentials
/// that were valid are cached, so a client sending random tokens cannot fill it). Keys
/// are SHA-256 digests: the cache holds no secret. The process that revokes a credential
/// also drops it at once with [`AuthCache::forget`].
pub struct AuthCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], (Instant, Principal)>>,
}

impl AuthCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(credential: &Credential) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(match credential {
            Credential::SessionCookie(_) => b"s:",
            Credential::Bearer(_) => b"b:",
        });
        h.update(credential.secret().as_bytes());
        h.finalize().into()
    }

    pub fn get(&self, credential: &Credential) -> Option<Principal> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&Self::key(credential))
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, p)| p.clone())
    }

    pub fn put(&self, credential: &Credential, principal: &Principal) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(Self::key(credential), (Instant::now(), principal.clone()));
    }

    /// Drops every cached principal `matches` selects (a session just ended, a token just
    /// revoked).
    pub fn forget(&self, matches: impl Fn(&Principal) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (_, p)| !matches(p));
    }
}

/// What the edge learned about the caller; kept in the request extensions.
#[derive(Clone, Debug)]
enum Caller {
    Anonymous,
    Authenticated(Principal),
    /// A credential was sent but is not valid (expired session, revoked token).
    Rejected,
}

/// The edge middleware: resolves the caller of every request once. Install it with
/// `axum::middleware::from_fn_with_state(authenticator, auth::layer)`.
pub async fn layer(
    State(authenticator): State<Arc<dyn Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match Credential::from_headers(request.headers()) {
        None => Caller::Anonymous,
        Some(credential) => match authenticator.authenticate(&credential).await {
            Ok(Some(principal)) => Caller::Authenticated(principal),
            Ok(None) => Caller::Rejected,
            Err(err) => {
                tracing::warn!(error = %err, "cannot authenticate the request");
                let detail = "Signing in is unavailable right now. Try again in a moment.";
                if request.uri().path().starts_with("/api/") {
                    return Problem::unavailable(2, detail).into_response();
                }
                let mut page =
                    crate::http::error_page(http::StatusCode::SERVICE_UNAVAILABLE, Some(detail));
                page.headers_mut()
                    .insert(header::RETRY_AFTER, http::HeaderValue::from_static("2"));
                return page;
            }
        },
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let principal = match parts.extensions.get::<Caller>() {
            Some(Caller::Authenticated(p)) => p.clone(),
            _ => return Err(Problem::unauthorized()),
        };
        if !is_safe(&parts.method) && principal.is_session() {
            let submitted = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !principal.csrf_matches(submitted) {
                return Err(Problem::new(
                    http::StatusCode::FORBIDDEN,
                    "csrf",
                    "CSRF token missing or wrong",
                )
                .detail("Requests that change state with a session cookie must send the session's CSRF token in the X-CSRF-Token header."));
            }
        }
        Ok(principal)
    }
}

/// The caller if one is signed in; no CSRF check (for pages and safe reads).
#[derive(Clone, Debug)]
pub struct OptionalPrincipal(pub Option<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for OptionalPrincipal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(match parts.extensions.get::<Caller>() {
            Some(Caller::Authenticated(p)) => Some(p.clone()),
            _ => None,
        }))
    }
}

/// `Set-Cookie` value that installs a session: `HttpOnly` (no script can read it),
/// `SameSite=Lax` (not sent on cross-site POSTs), `Path=/`; when `secure`, `Secure` and
/// the `__Host-` name.
pub fn set_session_cookie(token: &str, max_age: Duration, secure: bool) -> String {
    let name = if secure {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    };
    cookie::Cookie::build((name, token))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .secure(secure)
        .max_age(time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        ))
        .build()
        .to_string()
}

/// Whether cookies for this request should be `Secure`: configured so, or the client
/// reached us over HTTPS through a trusted TLS-terminating proxy (as the edge resolved it;
/// an `X-Forwarded-Proto` from anyone else counts for nothing).
pub fn wants_secure_cookies(client: &crate::http::ClientInfo, configured: bool) -> bool {
    configured || client.https
}

/// `Set-Cookie` value that removes the session cookie.
pub fn clear_session_cookie(secure: bool) -> String {
    set_session_cookie("", Duration::ZERO, secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_wins_over_cookie_and_cookie_is_found_among_others() {
        let h = headers(&[
            ("cookie", "a=1; rm_session=abc; b=2"),
            ("authorization", "Bearer tok"),
        ]);
        assert_eq!(
            Credential::from_headers(&h),
            Some(Credential::Bearer("tok".into()))
        );
        let h = headers(&[("cookie", "a=1; rm_session=abc; b=2")]);
        assert_eq!(
            Credential::from_headers(&h),
            Some(Credential::SessionCookie("abc".into()))
        );
        let h = headers(&[("cookie", "__Host-rm_session=sec; rm_session=plain")]);
        assert_eq!(
            Credential::from_headers(&h),
            Some(Credential::SessionCookie("sec".into())),
            "the secure cookie wins"
        );
        assert_eq!(
            Credential::from_headers(&headers(&[("cookie", "x=1")])),
            None
        );
        assert_eq!(
            Credential::from_headers(&headers(&[("authorization", "Basic Zm9v")])),
            None
        );
    }

    #[test]
    fn credentials_never_print_their_secret() {
        let c = Credential::Bearer("s3cret".into());
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn secure_session_cookies_use_the_host_prefix() {
        let secure = set_session_cookie("t", Duration::from_secs(60), true);
        assert!(secure.starts_with("__Host-rm_session=t"), "{secure}");
        for part in ["Path=/", "HttpOnly", "SameSite=Lax", "Secure", "Max-Age=60"] {
            assert!(secure.contains(part), "{secure} lacks {part}");
        }
        assert!(!secure.contains("Domain"), "{secure}");
        let plain = set_session_cookie("t", Duration::from_secs(60), false);
        assert!(
            plain.starts_with("rm_session=t") && !plain.contains("Secure"),
            "{plain}"
        );
    }

    fn principal(session: Uuid) -> Principal {
        Principal {
            user_id: UserId::new(),
            email: "a@example.com".into(),
            display_name: "A".into(),
            roles: vec![Role::Customer],
            via: Via::Session {
                session_id: session,
                csrf_token: "c".into(),
            },
        }
    }

    #[test]
    fn the_auth_cache_expires_forgets_and_stays_bounded() {
        let cache = AuthCache::new(Duration::from_millis(50), 3);
        let cred = Credential::SessionCookie("x".into());
        let session = Uuid::now_v7();
        cache.put(&cred, &principal(session));
        assert!(cache.get(&cred).is_some());
        assert!(
            cache.get(&Credential::Bearer("x".into())).is_none(),
            "kinds are separate"
        );
        cache.forget(|p| matches!(p.via, Via::Session { session_id, .. } if session_id == session));
        assert!(cache.get(&cred).is_none(), "forgotten at once");
        cache.put(&cred, &principal(session));
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&cred).is_none(), "expired after the ttl");
        for i in 0..10 {
            cache.put(
                &Credential::Bearer(format!("t{i}")),
                &principal(Uuid::now_v7()),
            );
        }
        assert!(cache.entries.lock().unwrap().len() <= 3);
    }
}
