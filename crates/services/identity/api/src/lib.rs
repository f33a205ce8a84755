//! Identity's contract with the rest of RenderMart, without identity's storage or hashing.
//!
//! Other services and the web pages depend on this crate only: the [`IdentityApi`] client
//! trait and its wire types, [`IdentityError`] (with its one mapping to and from
//! problem+json, so a remote `EmailTaken` is the same `EmailTaken`), identity's events, and
//! [`RemoteIdentity`], the implementation used when identity runs in another process. The
//! in-process implementation is the service itself (`rendermart-identity`).

pub mod device;
pub mod events;
mod problem;
mod remote;
pub mod wire;

use std::net::IpAddr;

use async_trait::async_trait;
use rendermart_platform::auth::Role;
pub use rendermart_types::UserId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use events::UserRegistered;
pub use remote::RemoteIdentity;

/// The service's name: schema, config section, `--identity-url`, internal route prefix.
pub const SERVICE: &str = "identity";

rendermart_types::entity_id!(
    /// A browser session.
    SessionId
);
rendermart_types::entity_id!(
    /// An API token.
    TokenId
);

/// Why an input was refused, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// A user as other services see them. Never carries the password hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// A session just created by sign-up or log-in. `token` goes in the session cookie.
#[derive(Clone, Serialize, Deserialize)]
pub struct NewSession {
    pub id: SessionId,
    pub token: String,
    pub csrf_token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub user: User,
    /// A device token to keep in a long-lived cookie: it tells future log-ins from this
    /// browser apart from strangers' guesses (see docs/login-policy.md).
    pub device: Option<String>,
}

impl NewSession {
    /// The cookie's `Max-Age`: the time left, rounded up to whole seconds (rounding down
    /// would turn a session's last fraction of a second, or a 1-second session, into an
    /// already-expired cookie).
    pub fn cookie_max_age(&self) -> std::time::Duration {
        let left = (self.expires_at - rendermart_platform::clock::now()).as_seconds_f64();
        std::time::Duration::from_secs(left.ceil().max(0.0) as u64)
    }
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("id", &self.id)
            .field("user", &self.user.id)
            .finish_non_exhaustive()
    }
}

/// An API token as listed: never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: TokenId,
    pub name: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
}

/// A token just created: the only time its secret is shown.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret. Shown once; store it now.
    pub token: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Who is asking, for rate limits and the log-in policy.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClientMeta {
    /// The client's address (behind a trusted proxy, the forwarded one).
    pub ip: Option<IpAddr>,
    /// The device cookie this browser presented, if any.
    pub device: Option<String>,
}

/// Raw sign-up input; the service parses it into domain types.
#[derive(Clone, Serialize, Deserialize)]
pub struct SignUp {
    pub email: String,
    pub display_name: String,
    pub password: String,
    /// A session the browser is still signed in with: it ends when the new account's
    /// session starts, so one browser never holds two accounts' sessions.
    pub end_session: Option<SessionId>,
}

impl std::fmt::Debug for SignUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignUp")
            .field("email", &self.email)
            .field("display_name", &self.display_name)
            .finish_non_exhaustive()
    }
}

/// Raw log-in input.
#[derive(Clone, Serialize, Deserialize)]
pub struct LogIn {
    pub email: String,
    pub password: String,
    /// The session this browser had: ended when the new one starts (rotation).
    pub rotate_from: Option<SessionId>,
}

impl std::fmt::Debug for LogIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogIn")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Deliberately the same whether or not the email exists.
    #[error("email or password is incorrect")]
    InvalidCredentials,
    #[error("too many attempts")]
    RateLimited { retry_after_secs: u64 },
    #[error("not found")]
    NotFound,
    /// The caller may not do this (e.g. manage tokens with a token instead of a session).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Too many password checks are queued right now; try again shortly.
    #[error("busy")]
    Busy { retry_after_secs: u64 },
    /// Identity could not be reached (it runs elsewhere and is down or slow).
    #[error("identity is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

/// The one way other services (and the web pages) reach identity: the service itself in
/// process, [`RemoteIdentity`] over HTTP otherwise.
#[async_trait]
pub trait IdentityApi: Send + Sync + 'static {
    /// Creates a customer account and signs them in.
    async fn sign_up(&self, input: SignUp, meta: ClientMeta) -> Result<NewSession, IdentityError>;
    /// Verifies the password and opens a fresh session, ending `rotate_from`.
    async fn log_in(&self, input: LogIn, meta: ClientMeta) -> Result<NewSession, IdentityError>;
    /// Ends a session server-side; its cookie stops working at once.
    async fn log_out(&self, session: SessionId) -> Result<(), IdentityError>;
    async fn user(&self, id: UserId) -> Result<User, IdentityError>;
    async fn create_token(&self, user: UserId, name: &str) -> Result<NewToken, IdentityError>;
    /// One page of the user's live tokens after `after`, oldest first, at most `limit`.
    async fn list_tokens(
        &self,
        user: UserId,
        after: Option<TokenId>,
        limit: u32,
    ) -> Result<Vec<TokenInfo>, IdentityError>;
    /// Revokes one of the user's tokens; it stops working at once.
    async fn revoke_token(&self, user: UserId, token: TokenId) -> Result<(), IdentityError>;
}
