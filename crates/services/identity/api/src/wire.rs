//! The bodies of identity's internal routes (`/internal/identity/v1/…`), shared by the
//! routes (in `rendermart-identity`) and [`crate::RemoteIdentity`], so the two cannot
//! drift apart.

use rendermart_platform::auth::Credential;
use serde::{Deserialize, Serialize};

use crate::{ClientMeta, LogIn, SessionId, SignUp};

pub const SIGN_UP: &str = "/internal/identity/v1/sign-up";
pub const LOG_IN: &str = "/internal/identity/v1/log-in";
pub const LOG_OUT: &str = "/internal/identity/v1/log-out";
pub const AUTHENTICATE: &str = "/internal/identity/v1/authenticate";

/// `/internal/identity/v1/users/{id}`
pub fn user(id: impl std::fmt::Display) -> String {
    format!("/internal/identity/v1/users/{id}")
}

/// `/internal/identity/v1/users/{id}/tokens` (GET lists with `?after=&limit=`, POST creates)
pub fn tokens(user: impl std::fmt::Display) -> String {
    format!("/internal/identity/v1/users/{user}/tokens")
}

/// `/internal/identity/v1/users/{id}/tokens/{token}` (DELETE revokes)
pub fn token(user: impl std::fmt::Display, token: impl std::fmt::Display) -> String {
    format!("/internal/identity/v1/users/{user}/tokens/{token}")
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SignUpCall {
    pub input: SignUp,
    pub meta: ClientMeta,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LogInCall {
    pub input: LogIn,
    pub meta: ClientMeta,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LogOutCall {
    pub session: SessionId,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CreateTokenCall {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AuthenticateCall {
    pub credential: Credential,
}
