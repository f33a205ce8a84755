//! Card top-ups through Stripe, the real application against a local Stripe double, on both
//! stacks: a top-up waits for its payment, Stripe's signed webhook credits it once, and a
//! forged, stale or replayed webhook credits nothing.

use std::sync::{Arc, Mutex};

use axum::{extract::State, http::HeaderMap, routing::post, Json, Router};
use rendermart_testkit::{assert_problem, Stack, TestApp, User};
use rendermart_wallet::stripe::sign_webhook;
use reqwest::StatusCode;
use serde_json::{json, Value};

rendermart_testkit::on_both_stacks!(
    a_card_top_up_is_credited_once_when_stripes_signed_webhook_says_paid,
    forged_stale_and_mismatched_webhooks_credit_nothing,
    a_declined_card_is_a_402_and_its_top_up_fails,
);

const WEBHOOK_SECRET: &str = "whsec_test_0123456789";

/// What the double was asked: (Idempotency-Key, form body).
type Asked = Arc<Mutex<Vec<(String, String)>>>;

/// A Stripe double answering `POST /v1/payment_intents` as Stripe documents it (a card
/// error for 40.02), and the app configured to use it.
async fn app_with_stripe(stack: Stack) -> Option<(TestApp, Asked)> {
    let asked: Asked = Arc::default();
    let double = Router::new()
        .route("/v1/payment_intents", post(create_intent))
        .with_state(asked.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, double).await });
    let app = TestApp::spawn_with(stack, |s| {
        s.set("wallet.payment_provider", "stripe");
        s.set("wallet.stripe.api_base", &base);
        s.set("wallet.stripe.secret_key", "sk_test_double");
        s.set("wallet.stripe.webhook_secret", WEBHOOK_SECRET);
    })
    .await?;
    Some((app, asked))
}

async fn create_intent(
    State(asked): State<Asked>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    assert_eq!(headers["authorization"], "Bearer sk_test_double");
    let key = headers["idempotency-key"].to_str().unwrap().to_owned();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    asked.lock().unwrap().push((key.clone(), body.clone()));
    let amount: i64 = field("amount").parse().unwrap();
    if amount == 4_002 {
        return (
            StatusCode::PAYMENT_REQUIRED,
            Json(
                json!({"error": {"type": "card_error", "code": "card_declined",
                "decline_code": "generic_decline", "message": "Your card was declined."}}),
            ),
        );
    }
    // One intent per idempotency key, as Stripe does.
    let id = format!("pi_{}", key.replace([':', '-'], "_"));
    (
        StatusCode::OK,
        Json(json!({
            "id": id, "object": "payment_intent", "status": "requires_payment_method",
            "amount": amount, "currency": field("currency"),
            "client_secret": format!("{id}_secret_abc"),
            "metadata": {"transaction_id": field("metadata[transaction_id]"),
                         "user_id": field("metadata[user_id]")},
        })),
    )
}

async fn top_up(app: &TestApp, user: &User, amount: i64, key: &str) -> reqwest::Response {
    user.client
        .post(app.url("/api/v1/wallet/topups"))
        .header("x-csrf-token", &user.csrf_token)
        .header("idempotency-key", key)
        .json(&json!({"amount": amount}))
        .send()
        .await
        .unwrap()
}

/// A `payment_intent.<what>` event for the top-up `transaction`, as Stripe sends it.
fn event(what: &str, transaction: &str, amount: i64, currency: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": format!("evt_{}", uuid::Uuid::now_v7().simple()),
        "object": "event",
        "type": format!("payment_intent.{what}"),
        "created": 1_700_000_000,
        "data": {"object": {
            "id": "pi_x", "object": "payment_intent", "status": what,
            "amount": amount, "currency": currency,
            "metadata": {"transaction_id": transaction},
        }},
    }))
    .unwrap()
}

async fn deliver(app: &TestApp, payload: &[u8], signature: &str) -> reqwest::Response {
    app.new_client()
        .post(app.url("/api/v1/wallet/stripe/webhook"))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(payload.to_vec())
        .send()
        .await
        .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn balance(app: &TestApp, user: &User) -> i64 {
    let w: Value = user
        .client
        .get(app.url("/api/v1/wallet"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    w["balance"].as_i64().unwrap()
}

async fn a_card_top_up_is_credited_once_when_stripes_signed_webhook_says_paid(stack: Stack) {
    let Some((app, asked)) = app_with_stripe(stack).await else {
        return;
    };
    let user = app.signed_up_user().await;
    let r = top_up(&app, &user, 2_500, "card-1").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let started: Value = r.json().await.unwrap();
    assert_eq!(started["transaction"]["status"], "processing");
    assert_eq!(started["payment"]["provider"], "stripe");
    assert!(started["payment"]["client_secret"]
        .as_str()
        .unwrap()
        .contains("_secret_"));
    let transaction = started["transaction"]["id"].as_str().unwrap().to_owned();
    // Stripe was asked once, with our key and the documented body.
    {
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].0, format!("topup:{transaction}"));
        assert!(
            asked[0].1.contains("amount=2500&currency=usd"),
            "{}",
            asked[0].1
        );
    }
    assert_eq!(balance(&app, &user).await, 0, "nothing before the payment");
    // The same key again: the same top-up and the same intent, not a second one.
    let again: Value = top_up(&app, &user, 2_500, "card-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["transaction"]["id"], transaction.as_str());
    assert_eq!(
        again["payment"]["payment_intent"],
        started["payment"]["payment_intent"]
    );

    let paid = event("succeeded", &transaction, 2_500, "usd");
    let signature = sign_webhook(&paid, WEBHOOK_SECRET, now());
    assert_eq!(
        deliver(&app, &paid, &signature).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(balance(&app, &user).await, 2_500);
    // Stripe resends events: a second delivery credits nothing more.
    assert_eq!(
        deliver(&app, &paid, &signature).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(balance(&app, &user).await, 2_500);
    let history: Value = user
        .client
        .get(app.url("/api/v1/wallet/transactions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["items"][0]["status"], "settled");
    assert_eq!(history["items"][0]["description"], "Top-up by card");
    app.assert_wallet_ledger_sound().await;
}

async fn forged_stale_and_mismatched_webhooks_credit_nothing(stack: Stack) {
    let Some((app, _)) = app_with_stripe(stack).await else {
        return;
    };
    let user = app.signed_up_user().await;
    let started: Value = top_up(&app, &user, 1_000, "card-2")
        .await
        .json()
        .await
        .unwrap();
    let transaction = started["transaction"]["id"].as_str().unwrap().to_owned();
    let paid = event("succeeded", &transaction, 1_000, "usd");
    for signature in [
        sign_webhook(&paid, "whsec_someone_else", now()),
        sign_webhook(&paid, WEBHOOK_SECRET, now() - 3_600),
        String::new(),
        "t=1,v1=00".to_owned(),
    ] {
        assert_problem(
            deliver(&app, &paid, &signature).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    // A payload changed after signing.
    let signature = sign_webhook(&paid, WEBHOOK_SECRET, now());
    let forged = event("succeeded", &transaction, 1_000_000, "usd");
    assert_problem(
        deliver(&app, &forged, &signature).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // Correctly signed, but for another amount or currency than the top-up: not credited.
    for (amount, currency) in [(999, "usd"), (1_000, "eur")] {
        let wrong = event("succeeded", &transaction, amount, currency);
        let signature = sign_webhook(&wrong, WEBHOOK_SECRET, now());
        assert_eq!(
            deliver(&app, &wrong, &signature).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(balance(&app, &user).await, 0);
    // A failed payment ends it; a success after that credits nothing.
    let failed = event("payment_failed", &transaction, 1_000, "usd");
    let signature = sign_webhook(&failed, WEBHOOK_SECRET, now());
    assert_eq!(
        deliver(&app, &failed, &signature).await.status(),
        StatusCode::NO_CONTENT
    );
    let signature = sign_webhook(&paid, WEBHOOK_SECRET, now());
    assert_eq!(
        deliver(&app, &paid, &signature).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(balance(&app, &user).await, 0);
    app.assert_wallet_ledger_sound().await;
}

async fn a_declined_card_is_a_402_and_its_top_up_fails(stack: Stack) {
    let Some((app, _)) = app_with_stripe(stack).await else {
        return;
    };
    let user = app.signed_up_user().await;
    let problem = assert_problem(
        top_up(&app, &user, 4_002, "card-3").await,
        StatusCode::PAYMENT_REQUIRED,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("declined"),
        "{problem}"
    );
    let history: Value = user
        .client
        .get(app.url("/api/v1/wallet/transactions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["items"][0]["status"], "failed");
    assert_eq!(balance(&app, &user).await, 0);
}
