//! Card top-ups through Stripe (`wallet.payment_provider = "stripe"`).
//!
//! 1. `POST /api/v1/wallet/topups` records a top-up `processing` (nothing credited) and
//!    creates a PaymentIntent for it (Stripe idempotency key `topup:<transaction id>`, the
//!    transaction's id in its metadata); the answer (202) carries the intent's
//!    `client_secret` for the browser to confirm the payment with Stripe.js. A repeat with the
//!    same `Idempotency-Key` while the intent could not be created tries again under the same
//!    Stripe key, so it never makes a second intent.
//! 2. Stripe calls `POST /api/v1/wallet/stripe/webhook`. A verified
//!    `payment_intent.succeeded` whose amount and currency match credits the top-up (once: a
//!    conditional update from `processing`); `payment_intent.payment_failed` or `canceled`
//!    marks it failed. Anything else is acknowledged and ignored, so Stripe stops resending.

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use rendermart_platform::{clock, db::is_unique_violation, http::Problem};
use rendermart_types::UserId;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

use crate::{
    domain::{Amount, IdempotencyKey},
    ledger::{user_account, Ledger, Outcome, TransactionId, WalletError, PROVIDER_CLEARING},
    stripe::{StripeClient, StripeError},
};

/// What the browser needs to pay for a card top-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct PaymentStart {
    /// `stripe`.
    pub provider: String,
    /// The PaymentIntent (`pi_…`).
    pub payment_intent: String,
    /// For `stripe.confirmCardPayment` in the browser.
    pub client_secret: Option<String>,
}

const PROCESSING: &str = "Top-up by card (waiting for the payment)";

/// Step 1: the top-up is recorded as processing and its PaymentIntent created.
pub(crate) async fn start_card_top_up(
    ledger: &Ledger,
    stripe: &StripeClient,
    user: UserId,
    amount: Amount,
    key: Option<IdempotencyKey>,
) -> Result<Outcome, WalletError> {
    let a = amount.minor_units();
    let (transaction, replayed) = {
        let mut conn = ledger.db().pool().acquire().await?;
        match ledger
            .replay(&mut conn, user, key.as_ref(), "topup", a)
            .await?
        {
            Some(t) => (t, true),
            None => {
                drop(conn);
                let mut tx = ledger.db().begin().await?;
                let account = user_account(user);
                ledger.ensure_account(&mut tx, &account, Some(user)).await?;
                match ledger
                    .insert_transaction(
                        &mut tx,
                        user,
                        "topup",
                        "processing",
                        a,
                        PROCESSING,
                        key.as_ref(),
                    )
                    .await
                {
                    Ok(t) => {
                        tx.commit().await?;
                        (t, false)
                    }
                    Err(e) if is_unique_violation(&e) => {
                        drop(tx);
                        let mut conn = ledger.db().pool().acquire().await?;
                        let t = ledger
                            .replay(&mut conn, user, key.as_ref(), "topup", a)
                            .await?
                            .ok_or(WalletError::KeyReused)?;
                        (t, true)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    };
    if transaction.status != "processing" {
        // Paid, failed or declined already: the first answer stands.
        return Ok(Outcome {
            transaction,
            replayed,
            payment: None,
        });
    }
    let id = transaction.id.to_string();
    let intent = stripe
        .create_payment_intent(
            a,
            ledger.currency().code(),
            &format!("topup:{id}"),
            &[
                ("transaction_id", id.as_str()),
                ("user_id", &user.to_string()),
            ],
        )
        .await;
    let intent = match intent {
        Ok(intent) => intent,
        Err(StripeError::Declined(why)) => {
            finish(
                ledger,
                transaction.id,
                "failed",
                &format!("Top-up declined: {why}"),
            )
            .await?;
            return Err(WalletError::Declined(why));
        }
        Err(e @ StripeError::Rejected(_)) => {
            tracing::error!(error = %e, "Stripe refused a PaymentIntent");
            finish(
                ledger,
                transaction.id,
                "failed",
                "Top-up failed: the card processor refused it",
            )
            .await?;
            return Err(WalletError::Unavailable(e.to_string()));
        }
        // Stays processing: the same key tries again under the same Stripe key.
        Err(e) => return Err(WalletError::Unavailable(e.to_string())),
    };
    let mut conn = ledger.db().pool().acquire().await?;
    sqlx::query(
        "UPDATE wallet_transactions SET reference = $1 WHERE id = $2 AND reference IS NULL",
    )
    .bind(format!("stripe:{}", intent.id))
    .bind(transaction.id)
    .execute(&mut *conn)
    .await?;
    metrics::counter!("wallet_card_topups_started_total").increment(1);
    Ok(Outcome {
        transaction,
        replayed,
        payment: Some(PaymentStart {
            provider: "stripe".into(),
            payment_intent: intent.id,
            client_secret: intent.client_secret,
        }),
    })
}

/// Ends a processing top-up without money (failed or declined).
async fn finish(
    ledger: &Ledger,
    id: TransactionId,
    status: &str,
    description: &str,
) -> Result<bool, WalletError> {
    let mut conn = ledger.db().pool().acquire().await?;
    Ok(sqlx::query(
        "UPDATE wallet_transactions SET status = $1, description = $2, updated_at = $3 \
         WHERE id = $4 AND status = 'processing'",
    )
    .bind(status)
    .bind(description)
    .bind(clock::now_micros())
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

/// Step 2: a webhook from Stripe.
pub(crate) async fn webhook(
    ledger: &Ledger,
    payload: &[u8],
    signature: &str,
) -> Result<(), WalletError> {
    let stripe = ledger.stripe().ok_or(WalletError::NotFound)?;
    let now = clock::now_micros() / 1_000_000;
    let event = stripe
        .verify_webhook(payload, signature, now)
        .map_err(|e| WalletError::BadWebhook(e.to_string()))?;
    let Some(intent) = event.payment_intent else {
        return Ok(());
    };
    let Some(id) = intent
        .metadata
        .get("transaction_id")
        .and_then(|t| t.parse::<TransactionId>().ok())
    else {
        return Ok(()); // Not one of our top-ups.
    };
    match event.kind.as_str() {
        "payment_intent.succeeded" => credit(ledger, id, intent.amount, &intent.currency).await,
        "payment_intent.payment_failed" | "payment_intent.canceled" => {
            finish(
                ledger,
                id,
                "failed",
                "Top-up failed: the card payment did not go through",
            )
            .await?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Credits a processing top-up paid by card, once.
async fn credit(
    ledger: &Ledger,
    id: TransactionId,
    amount: i64,
    currency: &str,
) -> Result<(), WalletError> {
    let mut tx = ledger.db().begin().await?;
    let paid: Option<(UserId, i64)> = sqlx::query_as(
        "UPDATE wallet_transactions SET status = 'settled', description = 'Top-up by card', \
         updated_at = $1 WHERE id = $2 AND status = 'processing' AND kind = 'topup' \
         RETURNING user_id, amount",
    )
    .bind(clock::now_micros())
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((user, expected)) = paid else {
        return Ok(()); // Credited before (a resent event), or not ours to credit.
    };
    if amount != expected || !currency.eq_ignore_ascii_case(ledger.currency().code()) {
        // Never credit what was not paid: leave it processing for a person to look at.
        tracing::error!(%id, amount, expected, currency, "a paid PaymentIntent does not match its top-up");
        metrics::counter!("wallet_card_topups_mismatched_total").increment(1);
        return Ok(());
    }
    let account = user_account(user);
    ledger
        .post(
            &mut tx,
            id,
            &[(&account, amount), (PROVIDER_CLEARING, -amount)],
        )
        .await?;
    tx.commit().await?;
    metrics::counter!("wallet_topups_total").increment(1);
    Ok(())
}

pub fn router(ledger: Arc<Ledger>) -> Router {
    Router::new()
        .route("/api/v1/wallet/stripe/webhook", post(stripe_webhook))
        .with_state(ledger)
}

/// Stripe's webhook (signed with the endpoint's secret). 404 when Stripe is not the
/// payment provider.
#[utoipa::path(post, path = "/api/v1/wallet/stripe/webhook", tag = "wallet",
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA256>")),
    responses(
        (status = 204, description = "Handled (or ignored: not a top-up event)"),
        (status = 400, description = "Bad signature or stale timestamp", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Stripe is not configured", body = Problem, content_type = "application/problem+json"),
    ))]
async fn stripe_webhook(
    State(ledger): State<Arc<Ledger>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    webhook(&ledger, &body, signature).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(stripe_webhook), components(schemas(PaymentStart)))]
pub struct PaymentsApiDoc;
