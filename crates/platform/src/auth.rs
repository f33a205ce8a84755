//! The authentication contract every route relies on.
//!
//! Identity owns users, sessions and tokens; every other service only needs to know *who is
//! calling*. The edge layer ([`layer`]) reads the credential of each request (a bearer API
//! token, else the session cookie), asks the [`Authenticator`] (identity's client, local or
//! remote) who it belongs to, and leaves the answer in the request. Handlers then take a
//! [`Principal`] argument (401 if nobody valid is calling) or an [`OptionalPrincipal`].
//!
//! CSRF: a request authenticated by the session cookie that changes state (any method but
//! GET/HEAD/OPTIONS) must carry the session's CSRF token in `X-CSRF-Token`, checked when the
//! handler asks for a `Principal`. Bearer-token requests need none: browsers never attach
//! them on their own. Server-rendered forms check the token from the form body instead
//! ([`Principal::csrf_matches`]).

use std::sync::Arc;

use async_trait::async_trait;
use axum::{
    extract::{FromRequestParts, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{header, request::Parts, HeaderMap, Method};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::http::Problem;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "rm_session";
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
#[derive(Clone, PartialEq, Eq)]
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
}

/// The value of the session cookie, if the request has one.
pub fn session_cookie_value(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// The non-empty value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// How the caller proved who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
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
                constant_time_eq(csrf_token.as_bytes(), submitted.as_bytes())
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
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, thiserror::Error)]
#[error("authentication backend unavailable: {0}")]
pub struct AuthError(pub String);

/// Resolves a credential to a principal. Implemented by identity's client.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(None)` for an unknown, expired or revoked credential.
    async fn authenticate(&self, credential: &Credential) -> Result<Option<Principal>, AuthError>;
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
            Err(err) => return Problem::internal(&err).into_response(),
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
        if !is_safe(&parts.method) && matches!(principal.via, Via::Session { .. }) {
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

/// `Set-Cookie` value that installs a session. `HttpOnly` (no script can read it),
/// `SameSite=Lax` (not sent on cross-site POSTs), `Secure` when served over TLS.
pub fn set_session_cookie(token: &str, max_age: std::time::Duration, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` value that removes the session cookie.
pub fn clear_session_cookie(secure: bool) -> String {
    set_session_cookie("", std::time::Duration::ZERO, secure)
}

/// Whether cookies for this request should be `Secure`: configured so, or the client
/// reached us over HTTPS through a trusted TLS-terminating proxy (as the edge resolved it;
/// an `X-Forwarded-Proto` from anyone else counts for nothing).
pub fn wants_secure_cookies(client: &crate::http::ClientInfo, configured: bool) -> bool {
    configured || client.https
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
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
