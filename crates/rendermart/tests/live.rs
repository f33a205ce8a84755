//! Live updates (server-sent events) through the real application, on both stacks: a
//! generation's progress, the marketplace's changes and a wallet's balance reach an open
//! stream without a reload.

use std::time::Duration;

use rendermart_testkit::{Stack, TestApp, User};
use reqwest::{header, Response, StatusCode};
use serde_json::{json, Value};

rendermart_testkit::on_both_stacks!(
    a_generation_streams_its_progress_and_the_stream_ends_with_it,
    open_market_streams_see_new_listings_price_changes_and_sales,
    a_wallet_stream_shows_each_change_of_the_balance,
);

/// An open event stream and what has been read of it.
struct Events {
    response: Response,
    buffer: String,
}

impl Events {
    async fn open(client: &reqwest::Client, url: String) -> Self {
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next `(event, data)`, or `None` when the stream ended; panics after 30 s.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if name.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("an event within 30 s")
                .unwrap();
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }

    /// Reads events until one of `name` satisfies `wanted`.
    async fn until(&mut self, name: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let (event, data) = self.next().await.expect("the stream is open");
            if event == name && wanted(&data) {
                return data;
            }
        }
    }
}

async fn post(app: &TestApp, user: &User, path: &str, body: Value) -> Value {
    let r = user
        .client
        .post(app.url(path))
        .header("x-csrf-token", &user.csrf_token)
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

async fn a_generation_streams_its_progress_and_the_stream_ends_with_it(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let user = app.signed_up_user().await;
    app.top_up(&user, 100).await;
    let job = post(
        &app,
        &user,
        "/api/v1/generations",
        json!({"prompt": "a windmill at noon", "width": 512, "height": 512}),
    )
    .await;
    let id = job["id"].as_str().unwrap();
    let url = app.url(&format!("/api/v1/generations/{id}/events"));
    // Someone else's generation does not exist for them.
    let stranger = app.signed_up_user().await;
    let r = stranger.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let mut events = Events::open(&user.client, url).await;
    let mut seen = Vec::new();
    while let Some((name, data)) = events.next().await {
        assert_eq!(name, "job");
        assert_eq!(data["id"], id);
        seen.push(data["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        seen.last().map(String::as_str),
        Some("succeeded"),
        "{seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "only changes: {seen:?}"
    );
}

async fn open_market_streams_see_new_listings_price_changes_and_sales(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.signed_up_user().await;
    app.top_up(&seller, 50).await;
    let job = post(
        &app,
        &seller,
        "/api/v1/generations",
        json!({"prompt": "a red kite over dunes", "width": 512, "height": 512}),
    )
    .await;
    let asset = job["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seller
        .client
        .get(app.url(&format!("/api/v1/assets/{asset}")))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::OK
    {
        assert!(std::time::Instant::now() < deadline, "no asset");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Anyone may watch.
    let mut events = Events::open(&app.new_client(), app.url("/api/v1/market/events")).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let listing = post(
        &app,
        &seller,
        "/api/v1/listings",
        json!({"asset_id": asset, "price": 700}),
    )
    .await;
    let id = listing["id"].as_str().unwrap().to_owned();
    let opened = events
        .until("listing", |l| {
            l["id"] == id.as_str() && l["status"] == "open"
        })
        .await;
    assert_eq!(opened["price"], 700);
    assert_eq!(opened["prompt"], "a red kite over dunes");
    let r = seller
        .client
        .patch(app.url(&format!("/api/v1/listings/{id}")))
        .header("x-csrf-token", &seller.csrf_token)
        .json(&json!({"price": 650}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    events
        .until("listing", |l| l["id"] == id.as_str() && l["price"] == 650)
        .await;
    let buyer = app.signed_up_user().await;
    app.top_up(&buyer, 1_000).await;
    post(
        &app,
        &buyer,
        &format!("/api/v1/listings/{id}/buy"),
        json!({}),
    )
    .await;
    let sold = events
        .until("listing", |l| {
            l["id"] == id.as_str() && l["status"] == "sold"
        })
        .await;
    assert_eq!(sold["buyer_id"], buyer.id.as_str());
}

async fn a_wallet_stream_shows_each_change_of_the_balance(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let user = app.signed_up_user().await;
    let anonymous = app
        .new_client()
        .get(app.url("/api/v1/wallet/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let mut events = Events::open(&user.client, app.url("/api/v1/wallet/events")).await;
    let (name, now) = events.next().await.unwrap();
    assert_eq!(
        (name.as_str(), now["balance"].as_i64()),
        ("wallet", Some(0))
    );
    app.top_up(&user, 1_234).await;
    let after = events.until("wallet", |w| w["balance"] == 1_234).await;
    assert_eq!(after["available"], 1_234);
    post(
        &app,
        &user,
        "/api/v1/wallet/payouts",
        json!({"amount": 234}),
    )
    .await;
    let held = events.until("wallet", |w| w["held"] == 234).await;
    assert_eq!(held["available"], 1_000);
}
