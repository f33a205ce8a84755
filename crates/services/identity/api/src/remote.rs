//! [`RemoteIdentity`]: identity's client when identity runs in another process. Every
//! method is one call to identity's internal routes through the platform's
//! [`ServiceClient`] (deadline, trace, service credential, retries only where safe, circuit
//! breaker); errors come back as the same [`IdentityError`]s.
//!
//! It is also the process's [`Authenticator`]: valid credentials are cached for a short,
//! configured time (see [`AuthCache`]), so a revoked session or token stops working here
//! within that time, and most requests do not wait for identity.

use std::sync::Arc;

use async_trait::async_trait;
use rendermart_platform::{
    auth::{AuthCache, AuthError, Authenticator, Credential, Principal},
    client::{RemoteError, Retry, ServiceClient},
};

use crate::{
    wire::{self, AuthenticateCall, CreateTokenCall, LogInCall, LogOutCall, SignUpCall},
    ClientMeta, IdentityApi, IdentityError, LogIn, NewSession, NewToken, SessionId, SignUp,
    TokenId, TokenInfo, User, UserId,
};

#[derive(Clone)]
pub struct RemoteIdentity {
    client: ServiceClient,
    cache: Arc<AuthCache>,
}

impl RemoteIdentity {
    pub fn new(client: ServiceClient, cache: Arc<AuthCache>) -> Self {
        Self { client, cache }
    }
}

#[async_trait]
impl IdentityApi for RemoteIdentity {
    async fn sign_up(&self, input: SignUp, meta: ClientMeta) -> Result<NewSession, IdentityError> {
        // Not repeated: a lost answer to a sign-up that went through would become "email
        // taken".
        let session = self
            .client
            .post(wire::SIGN_UP, &SignUpCall { input, meta }, Retry::Never)
            .await?;
        Ok(session)
    }

    async fn log_in(&self, input: LogIn, meta: ClientMeta) -> Result<NewSession, IdentityError> {
        let session = self
            .client
            .post(wire::LOG_IN, &LogInCall { input, meta }, Retry::Never)
            .await?;
        Ok(session)
    }

    async fn log_out(&self, session: SessionId) -> Result<(), IdentityError> {
        self.client
            .post::<_, ()>(wire::LOG_OUT, &LogOutCall { session }, Retry::Safe)
            .await?;
        self.cache.forget(|p| {
            matches!(p.via, rendermart_platform::auth::Via::Session { session_id, .. } if session_id == session.as_uuid())
        });
        Ok(())
    }

    async fn user(&self, id: UserId) -> Result<User, IdentityError> {
        Ok(self.client.get(&wire::user(id)).await?)
    }

    async fn create_token(&self, user: UserId, name: &str) -> Result<NewToken, IdentityError> {
        let call = CreateTokenCall {
            name: name.to_owned(),
        };
        Ok(self
            .client
            .post(&wire::tokens(user), &call, Retry::Never)
            .await?)
    }

    async fn list_tokens(
        &self,
        user: UserId,
        after: Option<TokenId>,
        limit: u32,
    ) -> Result<Vec<TokenInfo>, IdentityError> {
        let after = after.map(|t| t.to_string()).unwrap_or_default();
        let path = format!("{}?after={after}&limit={limit}", wire::tokens(user));
        Ok(self.client.get(&path).await?)
    }

    async fn revoke_token(&self, user: UserId, token: TokenId) -> Result<(), IdentityError> {
        self.client.delete::<()>(&wire::token(user, token)).await?;
        self.cache.forget(|p| {
            matches!(p.via, rendermart_platform::auth::Via::ApiToken { token_id } if token_id == token.as_uuid())
        });
        Ok(())
    }
}

#[async_trait]
impl Authenticator for RemoteIdentity {
    async fn authenticate(&self, credential: &Credential) -> Result<Option<Principal>, AuthError> {
        if let Some(principal) = self.cache.get(credential) {
            return Ok(Some(principal));
        }
        let call = AuthenticateCall {
            credential: credential.clone(),
        };
        let found: Option<Principal> = self
            .client
            .post(wire::AUTHENTICATE, &call, Retry::Safe)
            .await
            .map_err(|e: RemoteError| AuthError(e.to_string()))?;
        if let Some(principal) = &found {
            self.cache.put(credential, principal);
        }
        Ok(found)
    }
}
