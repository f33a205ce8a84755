//! Identity's internal routes: what [`RemoteIdentity`](rendermart_identity_api::RemoteIdentity)
//! calls when identity runs in another process. The binary nests them under
//! `/internal/identity` behind the service credential, so nobody else reaches them. Each
//! handler is one `IdentityApi` call; bodies are the shared types of
//! `rendermart_identity_api::wire`, errors the same problems as the public API.

use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{delete, get, post},
    Json, Router,
};
use rendermart_identity_api::{
    wire::{AuthenticateCall, CreateTokenCall, LogInCall, LogOutCall, SignUpCall},
    IdentityApi, NewSession, NewToken, TokenId, TokenInfo, User, UserId,
};
use rendermart_platform::{
    auth::Principal,
    http::{ApiJson, Problem},
};
use serde::Deserialize;

use crate::Identity;

/// The routes, relative to `/internal/identity` (see `rendermart_identity_api::wire`).
pub fn router(identity: Arc<Identity>) -> Router {
    Router::new()
        .route("/v1/sign-up", post(sign_up))
        .route("/v1/log-in", post(log_in))
        .route("/v1/log-out", post(log_out))
        .route("/v1/authenticate", post(authenticate))
        .route("/v1/users/{id}", get(user))
        .route("/v1/users/{id}/tokens", post(create_token).get(list_tokens))
        .route("/v1/users/{id}/tokens/{token}", delete(revoke_token))
        .with_state(identity)
}

type Api = State<Arc<Identity>>;

fn parse<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, Problem> {
    raw.parse()
        .map_err(|_| Problem::bad_request(format!("`{what}` is not a valid id.")))
}

async fn sign_up(
    State(identity): Api,
    ApiJson(call): ApiJson<SignUpCall>,
) -> Result<(StatusCode, Json<NewSession>), Problem> {
    let session = identity.sign_up(call.input, call.meta).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

async fn log_in(
    State(identity): Api,
    ApiJson(call): ApiJson<LogInCall>,
) -> Result<Json<NewSession>, Problem> {
    Ok(Json(identity.log_in(call.input, call.meta).await?))
}

async fn log_out(
    State(identity): Api,
    ApiJson(call): ApiJson<LogOutCall>,
) -> Result<StatusCode, Problem> {
    identity.log_out(call.session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Always asks the database: the caller keeps its own short cache.
async fn authenticate(
    State(identity): Api,
    ApiJson(call): ApiJson<AuthenticateCall>,
) -> Result<Json<Option<Principal>>, Problem> {
    identity
        .authenticate_uncached(&call.credential)
        .await
        .map(Json)
        .map_err(|e| Problem::unavailable(1, e.to_string()))
}

async fn user(State(identity): Api, Path(id): Path<String>) -> Result<Json<User>, Problem> {
    let id: UserId = parse(&id, "id")?;
    Ok(Json(identity.user(id).await?))
}

async fn create_token(
    State(identity): Api,
    Path(id): Path<String>,
    ApiJson(call): ApiJson<CreateTokenCall>,
) -> Result<(StatusCode, Json<NewToken>), Problem> {
    let id: UserId = parse(&id, "id")?;
    let token = identity.create_token(id, &call.name).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

#[derive(Deserialize)]
struct TokenPage {
    #[serde(default)]
    after: String,
    limit: Option<u32>,
}

async fn list_tokens(
    State(identity): Api,
    Path(id): Path<String>,
    Query(page): Query<TokenPage>,
) -> Result<Json<Vec<TokenInfo>>, Problem> {
    let id: UserId = parse(&id, "id")?;
    let after: Option<TokenId> = if page.after.is_empty() {
        None
    } else {
        Some(parse(&page.after, "after")?)
    };
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(identity.list_tokens(id, after, limit).await?))
}

async fn revoke_token(
    State(identity): Api,
    Path((id, token)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let id: UserId = parse(&id, "id")?;
    let token: TokenId = parse(&token, "token")?;
    identity.revoke_token(id, token).await?;
    Ok(StatusCode::NO_CONTENT)
}
