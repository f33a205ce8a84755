//! Identity's public HTTP API under `/api/v1`: thin handlers that parse input, call one
//! service method and map the result. `IdentityError` becomes problem+json through its one
//! mapping (in `rendermart-identity-api`, shared with the remote client).
//!
//! API tokens are managed with a browser session only: a token cannot mint, list or revoke
//! tokens, so a leaked token cannot outlive its revocation through a child.

use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Router,
};
use rendermart_platform::{
    auth::{self, Principal, Via},
    http::{ApiJson, ClientInfo, Problem},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, OpenApi, ToSchema};

use rendermart_identity_api::{
    device, ClientMeta, IdentityApi, IdentityError, LogIn, NewSession, NewToken, SignUp, TokenInfo,
    User, UserId,
};

use crate::{
    domain::{SessionId, TokenId},
    Identity,
};

#[derive(OpenApi)]
#[openapi(
    paths(signup, login, logout, me, create_token, list_tokens, revoke_token),
    components(schemas(
        SignUpRequest, LoginRequest, AuthResponse, User, CreateTokenRequest, NewToken,
        TokenInfo, TokenPage, Problem, rendermart_platform::http::FieldError,
        rendermart_platform::auth::Role
    )),
    tags((name = "identity", description = "Accounts, sessions and API tokens"))
)]
pub struct IdentityApiDoc;

#[derive(Clone)]
struct ApiState {
    identity: Arc<Identity>,
    cookie_secure: bool,
    /// Where the cart's client is looked up at log-in (the cart starts after identity).
    clients: rendermart_platform::service::Clients,
}

/// The routes identity serves, with their state.
pub fn router(
    identity: Arc<Identity>,
    cookie_secure: bool,
    clients: rendermart_platform::service::Clients,
) -> Router {
    Router::new()
        .route("/api/v1/auth/signup", post(signup))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/tokens", post(create_token).get(list_tokens))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .with_state(ApiState {
            identity,
            cookie_secure,
            clients,
        })
}

#[derive(Deserialize, ToSchema)]
pub struct SignUpRequest {
    #[schema(example = "ada@example.com")]
    email: String,
    /// 1–60 characters after trimming, no control characters.
    #[schema(
        example = "Ada",
        max_length = 60,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    display_name: String,
    /// At least 10 characters, at most 1024 bytes.
    #[schema(min_length = 10, max_length = 1024)]
    password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    email: String,
    password: String,
}

/// The signed-in user; the session itself is in the `rm_session` cookie.
#[derive(Serialize, ToSchema)]
pub struct AuthResponse {
    user: User,
    /// Send as `X-CSRF-Token` on state-changing requests made with the session cookie.
    csrf_token: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    session_expires_at: OffsetDateTime,
}

/// The browser session the request came with, if any: ended by a new sign-up or log-in.
fn live_session(caller: auth::OptionalPrincipal) -> Option<SessionId> {
    caller.0.and_then(|p| match p.via {
        Via::Session { session_id, .. } => Some(SessionId::from_uuid(session_id)),
        Via::ApiToken { .. } => None,
    })
}

/// Token management needs a browser session: a token may not manage tokens.
fn session_only(principal: &Principal) -> Result<(), Problem> {
    if principal.is_session() {
        Ok(())
    } else {
        Err(Problem::forbidden(
            "API tokens are managed from a signed-in browser session, not with an API token.",
        ))
    }
}

fn signed_in(
    status: StatusCode,
    session: NewSession,
    client: &ClientInfo,
    secure: bool,
) -> Response {
    let secure = auth::wants_secure_cookies(client, secure);
    let cookie = auth::set_session_cookie(&session.token, session.cookie_max_age(), secure);
    let device = session
        .device
        .as_deref()
        .map(|token| device::set_cookie(token, secure));
    let body = AuthResponse {
        user: session.user,
        csrf_token: session.csrf_token,
        session_expires_at: session.expires_at,
    };
    let mut response = (status, [(header::SET_COOKIE, cookie)], ApiJson(body)).into_response();
    if let Some(device) = device.and_then(|d| header::HeaderValue::from_str(&d).ok()) {
        response.headers_mut().append(header::SET_COOKIE, device);
    }
    response
}

/// Create an account and sign in.
#[utoipa::path(post, path = "/api/v1/auth/signup", tag = "identity", request_body = SignUpRequest,
    responses(
        (status = 201, description = "Account created; session cookie set", body = AuthResponse),
        (status = 409, description = "Email already registered", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json"),
    ))]
async fn signup(
    State(s): State<ApiState>,
    client: ClientInfo,
    caller: auth::OptionalPrincipal,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SignUpRequest>,
) -> Result<Response, Problem> {
    let input = SignUp {
        email: req.email,
        display_name: req.display_name,
        password: req.password,
        end_session: live_session(caller),
    };
    let meta = ClientMeta {
        ip: client.ip,
        device: device::from_headers(&headers),
    };
    let session = s.identity.sign_up(input, meta).await?;
    Ok(signed_in(
        StatusCode::CREATED,
        session,
        &client,
        s.cookie_secure,
    ))
}

/// Sign in with email and password. Any session cookie sent along is ended (rotation).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "identity", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; new session cookie set", body = AuthResponse),
        (status = 401, description = "Email or password is incorrect", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json"),
    ))]
async fn login(
    State(s): State<ApiState>,
    client: ClientInfo,
    caller: auth::OptionalPrincipal,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, Problem> {
    let input = LogIn {
        email: req.email,
        password: req.password,
        rotate_from: live_session(caller),
    };
    let meta = ClientMeta {
        ip: client.ip,
        device: device::from_headers(&headers),
    };
    let session = s.identity.log_in(input, meta).await?;
    let user = session.user.id;
    let mut response = signed_in(StatusCode::OK, session, &client, s.cookie_secure);
    if adopt_guest_cart(&s.clients, &headers, user).await {
        let clear = rendermart_cart_api::clear_guest_cookie(auth::wants_secure_cookies(
            &client,
            s.cookie_secure,
        ));
        if let Ok(clear) = header::HeaderValue::from_str(&clear) {
            response.headers_mut().append(header::SET_COOKIE, clear);
        }
    }
    Ok(response)
}

/// Merges the request's guest cart (`rm_cart`) into `user`'s at log-in, when the cart
/// runs; true when it did (the cookie can go). A failure is logged and leaves the cookie:
/// the cart then merges it on the user's next cart request.
async fn adopt_guest_cart(
    clients: &rendermart_platform::service::Clients,
    headers: &HeaderMap,
    user: UserId,
) -> bool {
    let Some(guest) = auth::cookie(headers, rendermart_cart_api::GUEST_COOKIE) else {
        return false;
    };
    let Some(cart) = clients.get::<dyn rendermart_cart_api::CartApi>() else {
        return false;
    };
    match cart.adopt_guest_cart(&guest, user).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "adopting the guest cart at log-in failed");
            false
        }
    }
}

/// End the current browser session.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "identity",
    security(("session" = [])),
    responses(
        (status = 204, description = "Session ended; cookie cleared"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF token missing or wrong", body = Problem, content_type = "application/problem+json"),
    ))]
async fn logout(
    State(s): State<ApiState>,
    principal: Principal,
    client: ClientInfo,
) -> Result<Response, Problem> {
    let Via::Session { session_id, .. } = principal.via else {
        return Err(Problem::bad_request(
            "Log-out ends a browser session. To stop an API token, revoke it: DELETE /api/v1/tokens/{id}.",
        ));
    };
    s.identity.log_out(SessionId::from_uuid(session_id)).await?;
    let cookie = auth::clear_session_cookie(auth::wants_secure_cookies(&client, s.cookie_secure));
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// Who am I.
#[utoipa::path(get, path = "/api/v1/me", tag = "identity",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = User),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn me(State(s): State<ApiState>, principal: Principal) -> Result<ApiJson<User>, Problem> {
    Ok(ApiJson(s.identity.user(principal.user_id).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateTokenRequest {
    /// A label to recognise the token by: 1–60 characters, no control characters.
    #[schema(
        example = "ci uploader",
        max_length = 60,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    name: String,
}

/// Create an API token. The secret is in `token` and is shown only in this response.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "identity", request_body = CreateTokenRequest,
    security(("session" = [])),
    responses(
        (status = 201, description = "Token created", body = NewToken),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Tokens are managed from a browser session (with its CSRF token), not with an API token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_token(
    State(s): State<ApiState>,
    principal: Principal,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, ApiJson<NewToken>), Problem> {
    session_only(&principal)?;
    let token = s
        .identity
        .create_token(principal.user_id, &req.name)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(token)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// At most this many items (1–100, default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<String>, format = Uuid)]
    cursor: Option<String>,
}

/// A page of results; pass `next_cursor` as `cursor` to get the next one.
#[derive(Serialize, ToSchema)]
pub struct TokenPage {
    items: Vec<TokenInfo>,
    next_cursor: Option<String>,
}

/// List the caller's live API tokens (never their secrets), oldest first.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "identity", params(PageParams),
    security(("session" = [])),
    responses(
        (status = 200, description = "A page of tokens", body = TokenPage),
        (status = 400, description = "Bad cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Tokens are managed from a browser session (with its CSRF token), not with an API token", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_tokens(
    State(s): State<ApiState>,
    principal: Principal,
    Query(page): Query<PageParams>,
) -> Result<ApiJson<TokenPage>, Problem> {
    session_only(&principal)?;
    let limit = page.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(Problem::bad_request("`limit` must be between 1 and 100."));
    }
    let after = page
        .cursor
        .filter(|c| !c.is_empty())
        .map(|c| c.parse::<TokenId>())
        .transpose()
        .map_err(|_| Problem::bad_request("`cursor` is not one this API returned."))?;
    let mut items = s
        .identity
        .list_tokens(principal.user_id, after, limit + 1)
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|t| t.id.to_string())
    } else {
        None
    };
    Ok(ApiJson(TokenPage { items, next_cursor }))
}

/// Revoke an API token; it stops working immediately.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "identity",
    params(("id" = String, Path, description = "Token id")),
    security(("session" = [])),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Tokens are managed from a browser session (with its CSRF token), not with an API token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such token of yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn revoke_token(
    State(s): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    session_only(&principal)?;
    let not_found = || Problem::not_found("You have no API token with this id.");
    let id: TokenId = id.parse().map_err(|_| not_found())?;
    match s.identity.revoke_token(principal.user_id, id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(IdentityError::NotFound) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}
