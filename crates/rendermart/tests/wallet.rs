//! The wallet through the real application, on both stacks: each test states one rule.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rendermart_testkit::{assert_problem, Stack, TestApp, User};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

rendermart_testkit::on_both_stacks!(
    a_new_wallet_is_empty_and_strangers_are_refused,
    a_top_up_credits_the_wallet_and_shows_in_the_history,
    bad_amounts_and_keys_get_a_4xx_naming_the_field_and_move_nothing,
    a_declined_top_up_moves_nothing,
    one_idempotency_key_credits_once_even_when_sent_thirty_times_at_once,
    concurrent_payouts_never_take_more_than_is_available,
    a_reversed_payout_gives_the_money_back,
);

/// An application whose payouts settle at once and whose ledger is checked every second.
async fn app(stack: Stack) -> Option<TestApp> {
    TestApp::spawn_with(stack, |s| {
        s.set("wallet.payout_settle_secs", 0);
        s.set("wallet.ledger_check_secs", 1);
    })
    .await
}

async fn post(app: &TestApp, user: &User, path: &str, body: Value, key: Option<&str>) -> Response {
    let mut request = user
        .client
        .post(app.url(path))
        .header("x-csrf-token", &user.csrf_token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

async fn top_up(app: &TestApp, user: &User, amount: i64, key: Option<&str>) -> Response {
    post(
        app,
        user,
        "/api/v1/wallet/topups",
        json!({ "amount": amount }),
        key,
    )
    .await
}

async fn payout(app: &TestApp, user: &User, amount: i64) -> Response {
    post(
        app,
        user,
        "/api/v1/wallet/payouts",
        json!({ "amount": amount }),
        None,
    )
    .await
}

async fn wallet(app: &TestApp, user: &User) -> Value {
    let response = user
        .client
        .get(app.url("/api/v1/wallet"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn history(app: &TestApp, user: &User) -> Vec<Value> {
    let response = user
        .client
        .get(app.url("/api/v1/wallet/transactions?limit=100"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    page["items"].as_array().unwrap().clone()
}

/// Waits until `condition` holds for the user's wallet, at most 15 s.
async fn wallet_until(
    app: &TestApp,
    user: &User,
    what: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let w = wallet(app, user).await;
        if condition(&w) {
            return w;
        }
        assert!(Instant::now() < deadline, "{what}: {w}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_new_wallet_is_empty_and_strangers_are_refused(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let stranger = app.new_client();
    for (method, path) in [
        ("GET", "/api/v1/wallet"),
        ("GET", "/api/v1/wallet/transactions"),
        ("POST", "/api/v1/wallet/topups"),
        ("POST", "/api/v1/wallet/payouts"),
    ] {
        let request = match method {
            "GET" => stranger.get(app.url(path)),
            _ => stranger.post(app.url(path)).json(&json!({"amount": 100})),
        };
        assert_problem(request.send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    }
    let user = app.signed_up_user().await;
    assert_eq!(
        wallet(&app, &user).await,
        json!({"balance": 0, "held": 0, "available": 0, "currency": "USD"})
    );
    assert!(history(&app, &user).await.is_empty());
}

async fn a_top_up_credits_the_wallet_and_shows_in_the_history(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let user = app.signed_up_user().await;
    let first = top_up(&app, &user, 5_000, None).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["wallet"]["balance"], 5_000);
    assert_eq!(body["transaction"]["amount"], 5_000);
    assert_eq!(body["transaction"]["status"], "settled");
    assert_eq!(
        top_up(&app, &user, 250, None).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(wallet(&app, &user).await["available"], 5_250);
    let lines = history(&app, &user).await;
    let amounts: Vec<i64> = lines
        .iter()
        .map(|t| t["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![250, 5_000], "newest first");
    assert!(lines.iter().all(|t| t["description"] == "Top-up"));
    // Someone else's wallet is untouched.
    let other = app.signed_up_user().await;
    assert_eq!(wallet(&app, &other).await["balance"], 0);
    app.assert_wallet_ledger_sound().await;
}

async fn bad_amounts_and_keys_get_a_4xx_naming_the_field_and_move_nothing(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let user = app.signed_up_user().await;
    for body in [
        json!({"amount": 0}),
        json!({"amount": -500}),
        json!({"amount": 100_000_001}),
        json!({"amount": i64::MAX}),
    ] {
        for path in ["/api/v1/wallet/topups", "/api/v1/wallet/payouts"] {
            let r = post(&app, &user, path, body.clone(), None).await;
            let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
            assert_eq!(problem["errors"][0]["field"], "amount", "{body}: {problem}");
        }
    }
    for body in [
        json!({"amount": 12.5}),
        json!({"amount": "12"}),
        json!({"amount": 1e30}),
        json!({}),
        json!({"amount": 100, "currency": "EUR"}),
        json!([100]),
    ] {
        let r = post(&app, &user, "/api/v1/wallet/topups", body.clone(), None).await;
        assert!(r.status().is_client_error(), "{body}: {}", r.status());
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let r = top_up(&app, &user, 100, Some("has space")).await;
    let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(wallet(&app, &user).await["balance"], 0);
    assert!(history(&app, &user).await.is_empty());
}

async fn a_declined_top_up_moves_nothing(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let user = app.signed_up_user().await;
    for declined in [4_002, 4_004] {
        let r = top_up(&app, &user, declined, None).await;
        let problem = assert_problem(r, StatusCode::PAYMENT_REQUIRED).await;
        assert_eq!(problem["type"], "/problems/payment-declined");
        assert!(problem["detail"].as_str().unwrap().contains("declined"));
    }
    assert_eq!(wallet(&app, &user).await["balance"], 0);
    assert!(history(&app, &user).await.is_empty());
}

async fn one_idempotency_key_credits_once_even_when_sent_thirty_times_at_once(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let user = app.signed_up_user().await;
    let attempts = (0..30).map(|_| {
        let (app, user) = (&app, &user);
        async move {
            let r = top_up(app, user, 1_000, Some("topup-1")).await;
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (status, body["transaction"]["id"].clone())
        }
    });
    let answers = join_all(attempts).await;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let replayed = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!((created, replayed), (1, 29), "{answers:?}");
    assert!(
        answers.iter().all(|(_, id)| *id == answers[0].1),
        "one transaction"
    );
    assert_eq!(wallet(&app, &user).await["balance"], 1_000);
    // The same key for a different request is refused; a new key is a new top-up.
    let reused = top_up(&app, &user, 2_000, Some("topup-1")).await;
    assert_problem(reused, StatusCode::CONFLICT).await;
    assert_eq!(
        top_up(&app, &user, 2_000, Some("topup-2")).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(wallet(&app, &user).await["balance"], 3_000);
    app.assert_wallet_ledger_sound().await;
}

/// Forty payouts of 10.00 at once against 100.00: exactly ten are held, thirty are told
/// 402, the account never goes below zero, and once settled the money has left.
async fn concurrent_payouts_never_take_more_than_is_available(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let user = app.signed_up_user().await;
    assert_eq!(
        top_up(&app, &user, 10_000, None).await.status(),
        StatusCode::CREATED
    );
    let attempts = (0..40).map(|_| {
        let (app, user) = (&app, &user);
        async move { payout(app, user, 1_000).await.status() }
    });
    let statuses = join_all(attempts).await;
    let held = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::PAYMENT_REQUIRED)
        .count();
    assert_eq!((held, refused), (10, 30), "{statuses:?}");
    let refused_again = payout(&app, &user, 1).await;
    let problem = assert_problem(refused_again, StatusCode::PAYMENT_REQUIRED).await;
    assert_eq!(problem["type"], "/problems/insufficient-funds");
    let settled = wallet_until(&app, &user, "every payout settles", |w| w["held"] == 0).await;
    assert_eq!(
        settled,
        json!({"balance": 0, "held": 0, "available": 0, "currency": "USD"})
    );
    let lines = history(&app, &user).await;
    let payouts: Vec<&Value> = lines.iter().filter(|t| t["kind"] == "payout").collect();
    assert_eq!(payouts.len(), 10);
    assert!(payouts
        .iter()
        .all(|t| t["status"] == "settled" && t["amount"] == -1_000));
    app.assert_wallet_ledger_sound().await;
}

async fn a_reversed_payout_gives_the_money_back(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let user = app.signed_up_user().await;
    assert_eq!(
        top_up(&app, &user, 5_000, None).await.status(),
        StatusCode::CREATED
    );
    let r = payout(&app, &user, 4_005).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["wallet"],
        json!({"balance": 5_000, "held": 4_005, "available": 995, "currency": "USD"})
    );
    let back = wallet_until(&app, &user, "the reversal releases the hold", |w| {
        w["held"] == 0
    })
    .await;
    assert_eq!(back["balance"], 5_000);
    let lines = history(&app, &user).await;
    assert_eq!(lines[0]["status"], "reversed");
    app.assert_wallet_ledger_sound().await;
}
