//! Identity's client: the one way other services (and the web pages) reach identity.
//! In one process it is [`crate::Identity`] itself; a remote implementation over HTTP fits
//! the same trait.

use std::net::IpAddr;

use async_trait::async_trait;
use rendermart_platform::auth::Role;
use serde::Serialize;
use time::OffsetDateTime;

use crate::domain::{Invalid, SessionId, TokenId, UserId};

/// A user as other services see them. Never carries the password hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// A session just created by sign-up or log-in. `token` goes in the session cookie.
#[derive(Clone)]
pub struct NewSession {
    pub id: SessionId,
    pub token: String,
    pub csrf_token: String,
    pub expires_at: OffsetDateTime,
    pub user: User,
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
            .finish()
    }
}

/// An API token as listed: never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    #[schema(value_type = String, format = Uuid)]
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
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret. Shown once; store it now.
    pub token: String,
}

/// Who is asking, for rate limits.
#[derive(Clone, Copy, Debug)]
pub struct ClientMeta {
    pub ip: Option<IpAddr>,
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
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

/// Raw sign-up input; the service parses it into domain types.
#[derive(Clone, Debug)]
pub struct SignUp {
    pub email: String,
    pub display_name: String,
    pub password: String,
}

#[async_trait]
pub trait IdentityApi: Send + Sync + 'static {
    /// Creates a customer account and signs them in.
    async fn sign_up(&self, input: SignUp, meta: ClientMeta) -> Result<NewSession, IdentityError>;
    /// Verifies the password and opens a fresh session (the old one, if any, is the
    /// caller's to end: see `rotate_from`).
    async fn log_in(
        &self,
        email: &str,
        password: &str,
        rotate_from: Option<SessionId>,
        meta: ClientMeta,
    ) -> Result<NewSession, IdentityError>;
    /// Ends a session server-side; its cookie stops working at once.
    async fn log_out(&self, session: SessionId) -> Result<(), IdentityError>;
    async fn user(&self, id: UserId) -> Result<User, IdentityError>;
    async fn create_token(&self, user: UserId, name: &str) -> Result<NewToken, IdentityError>;
    async fn list_tokens(&self, user: UserId) -> Result<Vec<TokenInfo>, IdentityError>;
    /// Revokes one of the user's tokens; it stops working at once.
    async fn revoke_token(&self, user: UserId, token: TokenId) -> Result<(), IdentityError>;
}
