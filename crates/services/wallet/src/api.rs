//! The wallet's public HTTP API under `/api/v1/wallet`: thin handlers that parse input,
//! call one ledger method and map the result. `WalletError` becomes problem+json here, in
//! one place.

use std::sync::Arc;

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use rendermart_platform::{
    auth::Principal,
    http::{ApiJson, Problem},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::{
    domain::{Amount, IdempotencyKey},
    ledger::{Ledger, Outcome, Transaction, TransactionId, WalletError, WalletView},
};

#[derive(OpenApi)]
#[openapi(
    paths(wallet, transactions, top_up, payout),
    components(schemas(WalletView, Transaction, TransactionPage, AmountRequest, MoveResponse, Problem)),
    tags((name = "wallet", description = "Credits: balance, history, top-ups and payouts"))
)]
pub struct WalletApiDoc;

impl From<WalletError> for Problem {
    fn from(e: WalletError) -> Self {
        match e {
            WalletError::Invalid(invalid) => {
                Problem::validation(format!("{invalid}.")).field(invalid.field, invalid.message)
            }
            WalletError::Declined(reason) => Problem::new(
                StatusCode::PAYMENT_REQUIRED,
                "payment-declined",
                "Payment declined",
            )
            .detail(format!(
                "The payment provider declined the charge: {reason}."
            )),
            WalletError::BadWebhook(why) => {
                tracing::warn!(%why, "a webhook was refused");
                Problem::bad_request("The webhook's signature or timestamp is not valid.")
            }
            WalletError::InsufficientFunds => Problem::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient-funds",
                "Insufficient funds",
            )
            .detail("Your available balance does not cover this amount."),
            WalletError::KeyReused => Problem::conflict(
                "idempotency-key-reused",
                "Idempotency key reused",
                "This Idempotency-Key was used for a different request. Use a new key.",
            ),
            WalletError::NotFound => Problem::not_found("Not found."),
            WalletError::Unavailable(why) => {
                tracing::warn!(%why, "wallet unavailable");
                Problem::unavailable(2, "The wallet is unavailable right now. Try again shortly.")
            }
            WalletError::Internal(e) => Problem::internal(&format!("{e:#}")),
        }
    }
}

pub fn router(ledger: Arc<Ledger>) -> Router {
    Router::new()
        .route("/api/v1/wallet", get(wallet))
        .route("/api/v1/wallet/transactions", get(transactions))
        .route("/api/v1/wallet/topups", post(top_up))
        .route("/api/v1/wallet/payouts", post(payout))
        .with_state(ledger)
}

/// The caller's balance, what is held for pending payouts, and what is available.
#[utoipa::path(get, path = "/api/v1/wallet", tag = "wallet",
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The caller's wallet", body = WalletView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn wallet(
    State(ledger): State<Arc<Ledger>>,
    principal: Principal,
) -> Result<ApiJson<WalletView>, Problem> {
    Ok(ApiJson(ledger.wallet(principal.user_id).await?))
}

#[derive(Deserialize, IntoParams)]
struct PageQuery {
    /// The `next` cursor of the previous page.
    before: Option<TransactionId>,
    /// 1–100, default 20.
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct TransactionPage {
    /// Newest first.
    items: Vec<Transaction>,
    /// Pass as `before` for the next page; absent on the last.
    next: Option<TransactionId>,
}

/// The caller's history, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/wallet/transactions", tag = "wallet", params(PageQuery),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "One page of the caller's history", body = TransactionPage),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn transactions(
    State(ledger): State<Arc<Ledger>>,
    principal: Principal,
    Query(q): Query<PageQuery>,
) -> Result<ApiJson<TransactionPage>, Problem> {
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let items = ledger
        .transactions(principal.user_id, q.before, limit)
        .await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|t| t.id))
        .flatten();
    Ok(ApiJson(TransactionPage { items, next }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountRequest {
    /// Whole minor units (1250 is 12.50), positive, at most the configured maximum.
    #[schema(example = 5000, minimum = 1)]
    amount: i64,
}

#[derive(Serialize, ToSchema)]
pub struct MoveResponse {
    transaction: Transaction,
    wallet: WalletView,
    /// A card top-up: what the browser needs to pay (it is credited once paid).
    #[serde(skip_serializing_if = "Option::is_none")]
    payment: Option<crate::payments::PaymentStart>,
}

/// The optional `Idempotency-Key` header.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, WalletError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => Ok(Some(IdempotencyKey::parse(v.to_str().unwrap_or("\u{0}"))?)),
    }
}

async fn answer(
    ledger: &Ledger,
    principal: &Principal,
    outcome: Outcome,
    created: StatusCode,
) -> Result<Response, Problem> {
    let wallet = ledger.wallet(principal.user_id).await?;
    let status = if outcome.replayed {
        StatusCode::OK
    } else {
        created
    };
    let mut response = (
        status,
        ApiJson(MoveResponse {
            transaction: outcome.transaction,
            wallet,
            payment: outcome.payment,
        }),
    )
        .into_response();
    if outcome.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// Adds credits through the payment provider. With an `Idempotency-Key`, a repeat of the
/// same request answers with the first one's transaction (200) and credits nothing more.
/// The `test` provider declines 40.02 (4002) and 40.04 (4004).
#[utoipa::path(post, path = "/api/v1/wallet/topups", tag = "wallet", request_body = AmountRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–100 visible ASCII characters")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "Credited (the test provider)", body = MoveResponse),
        (status = 202, description = "A card top-up waiting for its payment (Stripe): `payment.client_secret` confirms it", body = MoveResponse),
        (status = 200, description = "A repeat of an earlier request with the same key", body = MoveResponse),
        (status = 402, description = "Declined by the payment provider", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key was used for a different request", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid amount", body = Problem, content_type = "application/problem+json"),
    ))]
async fn top_up(
    State(ledger): State<Arc<Ledger>>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AmountRequest>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let amount = Amount::parse(req.amount, ledger.max_topup()).map_err(WalletError::from)?;
    let outcome = ledger.top_up(principal.user_id, amount, key).await?;
    // A card top-up is credited once paid: accepted, not done.
    let created = if outcome.transaction.status == "processing" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    answer(&ledger, &principal, outcome, created).await
}

/// Asks for a payout to the caller's bank: the amount is held at once (402 if it is not
/// available), then the provider settles it (the money leaves) or reverses it (the hold
/// is released). The `test` provider reverses 40.05 (4005).
#[utoipa::path(post, path = "/api/v1/wallet/payouts", tag = "wallet", request_body = AmountRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–100 visible ASCII characters")),
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 202, description = "Held; settles shortly", body = MoveResponse),
        (status = 200, description = "A repeat of an earlier request with the same key", body = MoveResponse),
        (status = 402, description = "Not enough available money", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key was used for a different request", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid amount", body = Problem, content_type = "application/problem+json"),
    ))]
async fn payout(
    State(ledger): State<Arc<Ledger>>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AmountRequest>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let amount = Amount::parse(req.amount, ledger.max_payout()).map_err(WalletError::from)?;
    let outcome = ledger
        .request_payout(principal.user_id, amount, key)
        .await?;
    answer(&ledger, &principal, outcome, StatusCode::ACCEPTED).await
}
