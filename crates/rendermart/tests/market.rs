//! The marketplace through the real application, on both stacks: list, buy, resell, and
//! the races that must have exactly one winner.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rendermart_testkit::{assert_problem, Stack, TestApp, User};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

rendermart_testkit::on_both_stacks!(
    a_sale_moves_money_and_ownership_together_and_a_resale_pays_the_creator,
    bad_listings_and_buys_are_refused_and_move_nothing,
    two_hundred_concurrent_buys_of_one_listing_make_exactly_one_sale,
    listings_are_browsed_newest_or_cheapest_first_and_filtered_by_prompt,
    an_offer_holds_the_money_and_accepting_it_sells_like_a_buy,
    rejected_cancelled_expired_and_outbid_offers_give_the_money_back,
    a_counter_is_the_buyers_to_accept_and_the_sale_is_at_its_amount,
    bad_offers_and_answers_are_refused_and_move_nothing,
    an_accept_racing_forty_buys_has_one_winner_and_every_hold_is_released,
    concurrent_buys_of_distinct_listings_each_succeed_or_fail_alone,
);

async fn app(stack: Stack) -> Option<TestApp> {
    TestApp::spawn_with(stack, |s| s.set("wallet.min_offer_secs", 1)).await
}

/// What a 512×512 generation costs by default (`studio.prices.square_512`).
const SMALL_IMAGE_PRICE: i64 = 50;

async fn send(
    app: &TestApp,
    user: &User,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut request = match method {
        "POST" => user.client.post(app.url(path)),
        "PATCH" => user.client.patch(app.url(path)),
        "DELETE" => user.client.delete(app.url(path)),
        _ => user.client.get(app.url(path)),
    }
    .header("x-csrf-token", &user.csrf_token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn json_of(r: Response, expected: StatusCode) -> Value {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, expected, "{body}");
    body
}

async fn balance(app: &TestApp, user: &User) -> i64 {
    let w = json_of(
        send(app, user, "GET", "/api/v1/wallet", None).await,
        StatusCode::OK,
    )
    .await;
    w["balance"].as_i64().unwrap()
}

async fn top_up(app: &TestApp, user: &User, amount: i64) {
    let r = send(
        app,
        user,
        "POST",
        "/api/v1/wallet/topups",
        Some(json!({"amount": amount})),
    )
    .await;
    json_of(r, StatusCode::CREATED).await;
}

/// Generates an image as `user` (paying its price, so their balance is unchanged) and
/// waits until it is their asset; returns its id.
async fn asset_of(app: &TestApp, user: &User, prompt: &str) -> String {
    app.top_up(user, SMALL_IMAGE_PRICE).await;
    let r = user
        .client
        .post(app.url("/api/v1/generations"))
        .header("x-csrf-token", &user.csrf_token)
        .header("idempotency-key", prompt.replace(' ', "-"))
        .json(&json!({"prompt": prompt, "width": 512, "height": 512}))
        .send()
        .await
        .unwrap();
    let id = json_of(r, StatusCode::ACCEPTED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = send(app, user, "GET", &format!("/api/v1/assets/{id}"), None).await;
        if r.status() == StatusCode::OK {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "the asset of {prompt:?} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn list(app: &TestApp, user: &User, asset: &str, price: i64) -> String {
    let r = send(
        app,
        user,
        "POST",
        "/api/v1/listings",
        Some(json!({"asset_id": asset, "price": price})),
    )
    .await;
    json_of(r, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// (kind, amount) of each line of the user's history.
async fn history(app: &TestApp, user: &User) -> Vec<(String, i64)> {
    let page = json_of(
        send(app, user, "GET", "/api/v1/wallet/transactions", None).await,
        StatusCode::OK,
    )
    .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap().to_owned(),
                t["amount"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn a_sale_moves_money_and_ownership_together_and_a_resale_pays_the_creator(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let (creator, buyer, third) = (
        app.signed_up_user().await,
        app.signed_up_user().await,
        app.signed_up_user().await,
    );
    let asset = asset_of(&app, &creator, "a quiet harbour at dawn").await;
    let listing = list(&app, &creator, &asset, 1_000).await;
    top_up(&app, &buyer, 5_000).await;

    let r = send(
        &app,
        &buyer,
        "POST",
        &format!("/api/v1/listings/{listing}/buy"),
        None,
    )
    .await;
    let bought = json_of(r, StatusCode::CREATED).await;
    assert_eq!(bought["sale"]["fee"], 50, "5 % fee");
    assert_eq!(bought["sale"]["royalty"], 0, "no royalty on a first sale");
    assert_eq!(bought["wallet"]["balance"], 4_000);
    assert_eq!(balance(&app, &creator).await, 950);
    let asset_view = json_of(
        send(
            &app,
            &third,
            "GET",
            &format!("/api/v1/assets/{asset}"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(asset_view["owner_id"], buyer.id.as_str());
    let owners: Vec<&str> = asset_view["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["how"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["created", "bought"]);
    let closed = json_of(
        send(
            &app,
            &third,
            "GET",
            &format!("/api/v1/listings/{listing}"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (closed["status"].as_str(), closed["buyer_id"].as_str()),
        (Some("sold"), Some(buyer.id.as_str()))
    );
    // Both sides see it in their history.
    assert!(history(&app, &buyer)
        .await
        .contains(&("purchase".into(), -1_000)));
    assert!(history(&app, &creator)
        .await
        .contains(&("sale".into(), 950)));

    // The buyer resells to a third person: the creator earns 10 %.
    let resale = list(&app, &buyer, &asset, 2_000).await;
    top_up(&app, &third, 2_000).await;
    let r = send(
        &app,
        &third,
        "POST",
        &format!("/api/v1/listings/{resale}/buy"),
        None,
    )
    .await;
    let sold = json_of(r, StatusCode::CREATED).await;
    assert_eq!(
        (
            sold["sale"]["fee"].as_i64(),
            sold["sale"]["royalty"].as_i64()
        ),
        (Some(100), Some(200))
    );
    assert_eq!(balance(&app, &third).await, 0);
    assert_eq!(balance(&app, &buyer).await, 4_000 + 1_700);
    assert_eq!(balance(&app, &creator).await, 950 + 200);
    assert!(history(&app, &creator)
        .await
        .contains(&("royalty".into(), 200)));
    // The original follows its owner.
    let original = third
        .client
        .get(app.url(&format!("/api/v1/assets/{asset}/original")))
        .send()
        .await
        .unwrap();
    assert_eq!(original.status(), StatusCode::FOUND);
    app.assert_wallet_ledger_sound().await;
}

async fn bad_listings_and_buys_are_refused_and_move_nothing(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let (owner, other) = (app.signed_up_user().await, app.signed_up_user().await);
    let asset = asset_of(&app, &owner, "a paper boat on a pond").await;
    for price in [json!(0), json!(-5), json!(100_000_001), json!(i64::MAX)] {
        let r = send(
            &app,
            &owner,
            "POST",
            "/api/v1/listings",
            Some(json!({"asset_id": asset, "price": price})),
        )
        .await;
        let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], "price", "{price}: {problem}");
    }
    for body in [
        json!({"asset_id": asset, "price": 12.5}),
        json!({"asset_id": asset, "price": "10"}),
        json!({"asset_id": "nope", "price": 10}),
        json!({"price": 10}),
    ] {
        let r = send(&app, &owner, "POST", "/api/v1/listings", Some(body.clone())).await;
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let r = send(
        &app,
        &other,
        "POST",
        "/api/v1/listings",
        Some(json!({"asset_id": asset, "price": 10})),
    )
    .await;
    assert_problem(r, StatusCode::FORBIDDEN).await;
    let listing = list(&app, &owner, &asset, 3_000).await;
    let r = send(
        &app,
        &owner,
        "POST",
        "/api/v1/listings",
        Some(json!({"asset_id": asset, "price": 10})),
    )
    .await;
    assert_problem(r, StatusCode::CONFLICT).await;
    let buy = format!("/api/v1/listings/{listing}/buy");
    assert_problem(
        send(&app, &owner, "POST", &buy, None).await,
        StatusCode::CONFLICT,
    )
    .await;
    // Not enough money: 402, and nothing moved.
    top_up(&app, &other, 2_999).await;
    let problem = assert_problem(
        send(&app, &other, "POST", &buy, None).await,
        StatusCode::PAYMENT_REQUIRED,
    )
    .await;
    assert_eq!(problem["type"], "/problems/insufficient-funds");
    assert_eq!(balance(&app, &other).await, 2_999);
    let still = json_of(
        send(
            &app,
            &other,
            "GET",
            &format!("/api/v1/listings/{listing}"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(still["status"], "open");
    // Only the seller changes or withdraws it; a withdrawn listing cannot be bought.
    let path = format!("/api/v1/listings/{listing}");
    assert_problem(
        send(&app, &other, "PATCH", &path, Some(json!({"price": 1}))).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_problem(
        send(&app, &other, "DELETE", &path, None).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let changed = json_of(
        send(&app, &owner, "PATCH", &path, Some(json!({"price": 2_000}))).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["price"], 2_000);
    let withdrawn = json_of(
        send(&app, &owner, "DELETE", &path, None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(withdrawn["status"], "withdrawn");
    assert_problem(
        send(&app, &other, "POST", &buy, None).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_problem(
        send(&app, &owner, "PATCH", &path, Some(json!({"price": 5}))).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(balance(&app, &other).await, 2_999);
    // Anonymous callers cannot list or buy; unknown listings are 404.
    let anonymous = app.new_client().post(app.url(&buy)).send().await.unwrap();
    assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
    assert_problem(
        send(&app, &other, "GET", "/api/v1/listings/not-a-listing", None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    app.assert_wallet_ledger_sound().await;
}

/// Forty buyers with the money send five buys each, all at once: one sale, the winner
/// charged once, everyone else told 409 and charged nothing, and the ledger balanced.
async fn two_hundred_concurrent_buys_of_one_listing_make_exactly_one_sale(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let seller = app.signed_up_user().await;
    let asset = asset_of(&app, &seller, "the last lighthouse").await;
    let listing = list(&app, &seller, &asset, 1_000).await;
    let mut buyers = Vec::new();
    for _ in 0..40 {
        let buyer = app.signed_up_user().await;
        top_up(&app, &buyer, 1_500).await;
        buyers.push(buyer);
    }
    let buy = format!("/api/v1/listings/{listing}/buy");
    let attempts = buyers
        .iter()
        .flat_map(|b| (0..5).map(move |i| (b, i)))
        .map(|(buyer, i)| {
            let (app, buy) = (&app, &buy);
            async move {
                let r = buyer
                    .client
                    .post(app.url(buy))
                    .header("x-csrf-token", &buyer.csrf_token)
                    .header("idempotency-key", format!("buy-{i}"))
                    .send()
                    .await
                    .unwrap();
                r.status()
            }
        });
    let statuses = join_all(attempts).await;
    assert_eq!(statuses.len(), 200);
    let sold = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((sold, conflicts), (1, 199), "{statuses:?}");
    let mut charged = 0;
    for buyer in &buyers {
        match balance(&app, buyer).await {
            500 => charged += 1,
            1_500 => {}
            other => panic!("a buyer has {other}"),
        }
    }
    assert_eq!(charged, 1);
    assert_eq!(balance(&app, &seller).await, 950);
    app.assert_wallet_ledger_sound().await;
}

async fn listings_are_browsed_newest_or_cheapest_first_and_filtered_by_prompt(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let seller = app.signed_up_user().await;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let mut ids = Vec::new();
    for (i, price) in [300, 100, 200].into_iter().enumerate() {
        let asset = asset_of(&app, &seller, &format!("{tag} orchard {i}")).await;
        ids.push(list(&app, &seller, &asset, price).await);
    }
    let anonymous = app.new_client();
    let page = |query: String| {
        let (app, anonymous) = (&app, &anonymous);
        async move {
            let r = anonymous
                .get(app.url(&format!("/api/v1/listings?{query}")))
                .send()
                .await
                .unwrap();
            json_of(r, StatusCode::OK).await
        }
    };
    let newest = page(format!("q={tag}")).await;
    let got: Vec<&str> = newest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    let first = page(format!("q={tag}&sort=price&limit=2")).await;
    let prices: Vec<i64> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["price"].as_i64().unwrap())
        .collect();
    assert_eq!(prices, [100, 200]);
    let next = first["next"].as_str().unwrap();
    let second = page(format!("q={tag}&sort=price&limit=2&after={next}")).await;
    let prices: Vec<i64> = second["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["price"].as_i64().unwrap())
        .collect();
    assert_eq!(prices, [300]);
    assert!(page(format!("q={tag}-nothing-like-it")).await["items"]
        .as_array()
        .unwrap()
        .is_empty());
    // A wildcard in the filter is a character, not a pattern.
    assert!(page("q=%25".into()).await["items"]
        .as_array()
        .unwrap()
        .is_empty());
    let bad = anonymous
        .get(app.url("/api/v1/listings?after=garbage"))
        .send()
        .await
        .unwrap();
    assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await;
}

/// (balance, held) of the user's wallet.
async fn wallet(app: &TestApp, user: &User) -> (i64, i64) {
    let w = json_of(
        send(app, user, "GET", "/api/v1/wallet", None).await,
        StatusCode::OK,
    )
    .await;
    (w["balance"].as_i64().unwrap(), w["held"].as_i64().unwrap())
}

async fn offer(app: &TestApp, buyer: &User, listing: &str, amount: i64) -> Response {
    send(
        app,
        buyer,
        "POST",
        &format!("/api/v1/listings/{listing}/offers"),
        Some(json!({"amount": amount, "expires_in": 3600})),
    )
    .await
}

async fn offer_id(app: &TestApp, buyer: &User, listing: &str, amount: i64) -> String {
    json_of(
        offer(app, buyer, listing, amount).await,
        StatusCode::CREATED,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn answer(app: &TestApp, user: &User, offer: &str, verb: &str) -> Response {
    send(
        app,
        user,
        "POST",
        &format!("/api/v1/offers/{offer}/{verb}"),
        None,
    )
    .await
}

/// A seller with a listed image at `price`, and a buyer with `money` (at least 1).
async fn listed(app: &TestApp, price: i64, money: i64) -> (User, User, String, String) {
    let seller = app.signed_up_user().await;
    let asset = asset_of(
        app,
        &seller,
        &format!("a quiet pier {}", uuid::Uuid::now_v7()),
    )
    .await;
    let listing = list(app, &seller, &asset, price).await;
    let buyer = app.signed_up_user().await;
    top_up(app, &buyer, money).await;
    (seller, buyer, asset, listing)
}

async fn an_offer_holds_the_money_and_accepting_it_sells_like_a_buy(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let (seller, buyer, asset, listing) = listed(&app, 1_000, 2_000).await;
    let id = offer_id(&app, &buyer, &listing, 800).await;
    assert_eq!(wallet(&app, &buyer).await, (2_000, 800));
    // The seller sees it received; the buyer sees it made.
    let inbox = json_of(
        send(&app, &seller, "GET", "/api/v1/offers?role=received", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(inbox["items"][0]["id"], id.as_str(), "{inbox}");
    assert_eq!(inbox["items"][0]["status"], "open");
    let made = json_of(
        send(&app, &buyer, "GET", "/api/v1/offers?role=made", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(made["items"][0]["id"], id.as_str());
    let received_by_buyer = json_of(
        send(&app, &buyer, "GET", "/api/v1/offers?role=received", None).await,
        StatusCode::OK,
    )
    .await;
    assert!(received_by_buyer["items"].as_array().unwrap().is_empty());

    let sold = json_of(
        answer(&app, &seller, &id, "accept").await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(sold["sale"]["price"], 800);
    assert_eq!(sold["sale"]["fee"], 40);
    // Paid by the hold: the buyer's money went down by the offer, nothing stays held.
    assert_eq!(wallet(&app, &buyer).await, (1_200, 0));
    assert_eq!(balance(&app, &seller).await, 760);
    let a = json_of(
        send(
            &app,
            &buyer,
            "GET",
            &format!("/api/v1/assets/{asset}"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(a["owner_id"], buyer.id.as_str());
    let l = json_of(
        send(
            &app,
            &buyer,
            "GET",
            &format!("/api/v1/listings/{listing}"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (l["status"].as_str(), l["buyer_id"].as_str()),
        (Some("sold"), Some(buyer.id.as_str()))
    );
    let o = json_of(
        send(&app, &buyer, "GET", &format!("/api/v1/offers/{id}"), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(o["status"], "accepted");
    // Accepting again is a conflict, and moves nothing.
    assert_problem(
        answer(&app, &seller, &id, "accept").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(wallet(&app, &buyer).await, (1_200, 0));
    app.assert_wallet_ledger_sound().await;
}

async fn rejected_cancelled_expired_and_outbid_offers_give_the_money_back(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let (seller, buyer, _, listing) = listed(&app, 1_000, 3_000).await;
    // Rejected by the seller.
    let first = offer_id(&app, &buyer, &listing, 500).await;
    let r = json_of(
        answer(&app, &seller, &first, "reject").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(r["status"], "rejected");
    assert_eq!(wallet(&app, &buyer).await, (3_000, 0));
    // Cancelled by the buyer.
    let second = offer_id(&app, &buyer, &listing, 600).await;
    assert_eq!(wallet(&app, &buyer).await, (3_000, 600));
    let c = json_of(
        answer(&app, &buyer, &second, "cancel").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(c["status"], "cancelled");
    assert_eq!(wallet(&app, &buyer).await, (3_000, 0));
    // Expired: released by the expiry worker within a few seconds.
    let r = send(
        &app,
        &buyer,
        "POST",
        &format!("/api/v1/listings/{listing}/offers"),
        Some(json!({"amount": 700, "expires_in": 1})),
    )
    .await;
    let third = json_of(r, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    while wallet(&app, &buyer).await != (3_000, 0) {
        assert!(Instant::now() < deadline, "the expired offer's hold stays");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let o = json_of(
        send(
            &app,
            &buyer,
            "GET",
            &format!("/api/v1/offers/{third}"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(o["status"], "expired");
    assert_problem(
        answer(&app, &seller, &third, "accept").await,
        StatusCode::CONFLICT,
    )
    .await;
    // Outbid: someone buys the listing outright; the open offer ends and is released.
    let fourth = offer_id(&app, &buyer, &listing, 800).await;
    let other = app.signed_up_user().await;
    top_up(&app, &other, 1_000).await;
    json_of(
        send(
            &app,
            &other,
            "POST",
            &format!("/api/v1/listings/{listing}/buy"),
            None,
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(wallet(&app, &buyer).await, (3_000, 0));
    let o = json_of(
        send(
            &app,
            &buyer,
            "GET",
            &format!("/api/v1/offers/{fourth}"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(o["status"], "closed");
    // Withdrawn: the owner's next listing takes an offer, then is withdrawn.
    let asset = asset_of(&app, &seller, "another pier").await;
    let relisted = list(&app, &seller, &asset, 900).await;
    offer_id(&app, &buyer, &relisted, 850).await;
    assert_eq!(wallet(&app, &buyer).await, (3_000, 850));
    json_of(
        send(
            &app,
            &seller,
            "DELETE",
            &format!("/api/v1/listings/{relisted}"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(wallet(&app, &buyer).await, (3_000, 0));
    app.assert_wallet_ledger_sound().await;
}

async fn a_counter_is_the_buyers_to_accept_and_the_sale_is_at_its_amount(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let (seller, buyer, _, listing) = listed(&app, 1_000, 2_000).await;
    let id = offer_id(&app, &buyer, &listing, 500).await;
    let r = send(
        &app,
        &seller,
        "POST",
        &format!("/api/v1/offers/{id}/counter"),
        Some(json!({"amount": 700})),
    )
    .await;
    let counter = json_of(r, StatusCode::CREATED).await;
    assert_eq!(
        (counter["kind"].as_str(), counter["amount"].as_i64()),
        (Some("counter"), Some(700))
    );
    let counter = counter["id"].as_str().unwrap().to_owned();
    // The offer it answers keeps its hold until the counter ends.
    assert_eq!(wallet(&app, &buyer).await, (2_000, 500));
    // The seller cannot accept their own counter; the buyer can.
    assert_problem(
        answer(&app, &seller, &counter, "accept").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let received = json_of(
        send(&app, &buyer, "GET", "/api/v1/offers?role=received", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(received["items"][0]["id"], counter.as_str());
    let sold = json_of(
        answer(&app, &buyer, &counter, "accept").await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(sold["sale"]["price"], 700);
    assert_eq!(wallet(&app, &buyer).await, (1_300, 0));
    assert_eq!(balance(&app, &seller).await, 700 - 35);
    let o = json_of(
        send(&app, &buyer, "GET", &format!("/api/v1/offers/{id}"), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(o["status"], "accepted");

    // A counter the buyer rejects ends the offer it answers, its hold released.
    let asset = asset_of(&app, &seller, "a second pier").await;
    let listing = list(&app, &seller, &asset, 1_000).await;
    let id = offer_id(&app, &buyer, &listing, 400).await;
    let r = send(
        &app,
        &seller,
        "POST",
        &format!("/api/v1/offers/{id}/counter"),
        Some(json!({"amount": 900})),
    )
    .await;
    let counter = json_of(r, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wallet(&app, &buyer).await, (1_300, 400));
    json_of(
        answer(&app, &buyer, &counter, "reject").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(wallet(&app, &buyer).await, (1_300, 0));
    app.assert_wallet_ledger_sound().await;
}

async fn bad_offers_and_answers_are_refused_and_move_nothing(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let (seller, buyer, _, listing) = listed(&app, 1_000, 500).await;
    let path = format!("/api/v1/listings/{listing}/offers");
    for (body, field) in [
        (json!({"amount": 0}), "amount"),
        (json!({"amount": -5}), "amount"),
        (json!({"amount": 100_000_001}), "amount"),
        (json!({"amount": 100, "expires_in": 0}), "expires_in"),
        (
            json!({"amount": 100, "expires_in": 8 * 24 * 3600}),
            "expires_in",
        ),
    ] {
        let problem = assert_problem(
            send(&app, &buyer, "POST", &path, Some(body.clone())).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    for body in [json!({"amount": 1.5}), json!({"amount": "100"}), json!({})] {
        assert_problem(
            send(&app, &buyer, "POST", &path, Some(body)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    // More than the buyer has: 402.
    assert_problem(
        offer(&app, &buyer, &listing, 501).await,
        StatusCode::PAYMENT_REQUIRED,
    )
    .await;
    // On your own listing: 409.
    assert_problem(
        offer(&app, &seller, &listing, 100).await,
        StatusCode::CONFLICT,
    )
    .await;
    // Strangers: 401.
    let anonymous = app
        .new_client()
        .post(app.url(&path))
        .json(&json!({"amount": 100}))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
    // One live offer per buyer and listing.
    let id = offer_id(&app, &buyer, &listing, 300).await;
    assert_problem(
        offer(&app, &buyer, &listing, 200).await,
        StatusCode::CONFLICT,
    )
    .await;
    // Only the seller answers it; only the buyer cancels it; others do not see it.
    assert_problem(
        answer(&app, &buyer, &id, "accept").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_problem(
        answer(&app, &buyer, &id, "reject").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_problem(
        answer(&app, &seller, &id, "cancel").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let stranger = app.signed_up_user().await;
    for verb in ["accept", "reject", "cancel"] {
        assert_problem(
            answer(&app, &stranger, &id, verb).await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    assert_problem(
        send(
            &app,
            &stranger,
            "GET",
            &format!("/api/v1/offers/{id}"),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        answer(&app, &seller, "not-an-id", "accept").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        send(&app, &buyer, "GET", "/api/v1/offers?role=everyone", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(wallet(&app, &buyer).await, (500, 300));
    assert_eq!(balance(&app, &seller).await, 0);
    app.assert_wallet_ledger_sound().await;
}

/// Ten buyers hold offers; the seller accepts one while forty others try to buy outright,
/// all at once: exactly one sale, every other hold released, nobody else charged.
async fn an_accept_racing_forty_buys_has_one_winner_and_every_hold_is_released(stack: Stack) {
    let Some(app) = app(stack).await else { return };
    let (seller, _, asset, listing) = listed(&app, 1_000, 1).await;
    let mut offerers = Vec::new();
    for i in 0..10 {
        let user = app.signed_up_user().await;
        top_up(&app, &user, 1_000).await;
        let id = offer_id(&app, &user, &listing, 900 + i).await;
        offerers.push((user, id));
    }
    let mut buyers = Vec::new();
    for _ in 0..40 {
        let user = app.signed_up_user().await;
        top_up(&app, &user, 1_000).await;
        buyers.push(user);
    }
    let buy = format!("/api/v1/listings/{listing}/buy");
    let accept = async {
        answer(&app, &seller, &offerers[3].1, "accept")
            .await
            .status()
    };
    let buys = join_all(buyers.iter().map(|b| {
        let (app, buy) = (&app, &buy);
        async move { send(app, b, "POST", buy, None).await.status() }
    }));
    let (accepted, bought) = tokio::join!(accept, buys);
    let sales = bought.iter().filter(|s| **s == StatusCode::CREATED).count()
        + usize::from(accepted == StatusCode::CREATED);
    assert_eq!(sales, 1, "accept {accepted}, buys {bought:?}");
    assert!(bought
        .iter()
        .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT));
    assert!(accepted == StatusCode::CREATED || accepted == StatusCode::CONFLICT);
    let owner = json_of(
        send(
            &app,
            &seller,
            "GET",
            &format!("/api/v1/assets/{asset}"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await["owner_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Nobody holds anything; only the winner paid.
    let mut paid = 0;
    for (i, (user, _)) in offerers.iter().enumerate() {
        match wallet(&app, user).await {
            (1_000, 0) => {}
            (rest, 0) if i == 3 && rest == 1_000 - 903 && owner == user.id => paid += 1,
            other => panic!("offerer {i}: {other:?}"),
        }
    }
    for user in &buyers {
        match wallet(&app, user).await {
            (1_000, 0) => {}
            (0, 0) if owner == user.id => paid += 1,
            other => panic!("a buyer: {other:?}"),
        }
    }
    assert_eq!(paid, 1);
    app.assert_wallet_ledger_sound().await;
}

/// Twenty people buy twenty different listings at once, every other one without the
/// money: each buy succeeds or fails on its own (on SQLite they are committed in groups,
/// a failed one rolled back alone), and the ledger is sound.
async fn concurrent_buys_of_distinct_listings_each_succeed_or_fail_alone(stack: Stack) {
    let Some(app) = TestApp::spawn_with(stack, |s| {
        s.set("studio.per_user_active_jobs", 30);
    })
    .await
    else {
        return;
    };
    let seller = app.signed_up_user().await;
    let mut listings = Vec::new();
    for i in 0..20 {
        let asset = asset_of(&app, &seller, &format!("harbour light {i}")).await;
        listings.push(list(&app, &seller, &asset, 400).await);
    }
    let mut buyers = Vec::new();
    for i in 0..20 {
        let buyer = app.signed_up_user().await;
        top_up(&app, &buyer, if i % 2 == 0 { 1_000 } else { 399 }).await;
        buyers.push(buyer);
    }
    let buys = buyers.iter().zip(&listings).map(|(buyer, listing)| {
        let app = &app;
        async move {
            send(
                app,
                buyer,
                "POST",
                &format!("/api/v1/listings/{listing}/buy"),
                None,
            )
            .await
            .status()
        }
    });
    let statuses = join_all(buys).await;
    for (i, status) in statuses.iter().enumerate() {
        let expected = if i % 2 == 0 {
            StatusCode::CREATED
        } else {
            StatusCode::PAYMENT_REQUIRED
        };
        assert_eq!(*status, expected, "buyer {i}: {statuses:?}");
    }
    for (i, buyer) in buyers.iter().enumerate() {
        let expected = if i % 2 == 0 { 600 } else { 399 };
        assert_eq!(balance(&app, buyer).await, expected, "buyer {i}");
    }
    assert_eq!(balance(&app, &seller).await, 10 * (400 - 20));
    app.assert_wallet_ledger_sound().await;
}
