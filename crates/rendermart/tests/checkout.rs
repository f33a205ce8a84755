//! Checkout and orders through the real application, on both stacks: the saga (stock,
//! payment in wallet credits, confirmation) over the bus, its compensations (out of stock,
//! insufficient credits, a deadline that passes), idempotency under concurrency, and the
//! buyer's and administrators' moves (cancel, ship, deliver, refund) with their money, and
//! a print of a resold image paying its owner and the image's creator.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rendermart_testkit::{assert_problem, Stack, TestApp, User};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

rendermart_testkit::on_both_stacks!(
    a_checkout_is_paid_from_the_wallet_confirmed_and_its_stock_committed,
    five_hundred_checkouts_for_the_last_ten_units_confirm_exactly_ten,
    twenty_concurrent_checkouts_with_one_key_make_one_order,
    a_reused_key_with_another_body_is_a_422_and_bad_checkouts_get_a_4xx,
    a_declined_payment_cancels_the_order_and_releases_its_stock,
    an_order_takes_its_lines_from_the_cart_and_a_failed_one_puts_them_back,
    a_checkout_nobody_pays_times_out_and_its_stock_returns,
    cancel_ship_deliver_and_refund_move_the_money_and_the_stock,
    a_shipped_print_pays_its_owner_and_the_images_creator_its_royalty,
    the_order_pages_work_without_script_and_are_accessible,
);

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

fn address() -> Value {
    json!({"name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London",
           "postal_code": "SW1Y 4JH", "country": "GB"})
}

/// A product of `seller` with one variant `sku` at `price`, and `stock` units of it.
async fn stocked(app: &TestApp, seller: &User, admin: &User, sku: &str, price: i64, stock: i64) {
    let body = json!({
        "kind": "goods",
        "title": format!("Lighthouse mug {sku}"),
        "description": "A mug with a lighthouse on it.",
        "category": "kitchen",
        "tags": ["mug"],
        "variants": [{"sku": sku, "name": "Standard", "price": {"amount": price, "currency": "USD"}}],
    });
    json_of(
        send(app, seller, "POST", "/api/v1/products", Some(body)).await,
        StatusCode::CREATED,
    )
    .await;
    if stock > 0 {
        json_of(
            send(
                app,
                admin,
                "POST",
                &format!("/api/v1/inventory/{sku}/adjust"),
                Some(json!({"delta": stock, "reason": "received"})),
            )
            .await,
            StatusCode::OK,
        )
        .await;
    }
}

async fn add_to_cart(app: &TestApp, user: &User, sku: &str, quantity: u32) {
    let r = send(
        app,
        user,
        "POST",
        "/api/v1/cart/items",
        Some(json!({"sku": sku, "quantity": quantity})),
    )
    .await;
    assert!(r.status().is_success(), "add to cart: {}", r.status());
}

async fn checkout(app: &TestApp, user: &User, key: &str, body: &Value) -> Response {
    user.client
        .post(app.url("/api/v1/checkout"))
        .header("x-csrf-token", &user.csrf_token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Checks out and returns the order (202).
async fn place(app: &TestApp, user: &User) -> Value {
    let r = checkout(
        app,
        user,
        &uuid::Uuid::now_v7().to_string(),
        &json!({"shipping_address": address()}),
    )
    .await;
    let order = json_of(r, StatusCode::ACCEPTED).await;
    assert_eq!(order["status"], "pending", "{order}");
    order
}

/// The order once its saga left `pending` (or panics after `within`).
async fn settled(app: &TestApp, user: &User, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let order = json_of(
            send(app, user, "GET", &format!("/api/v1/orders/{id}"), None).await,
            StatusCode::OK,
        )
        .await;
        if order["status"] != "pending" {
            return order;
        }
        assert!(Instant::now() < deadline, "still pending: {order}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `f` until it returns true (or panics after 10 s).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stock(app: &TestApp, sku: &str) -> (i64, i64, i64) {
    let s = json_of(
        app.new_client()
            .get(app.url(&format!("/api/v1/inventory/{sku}")))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    (
        s["on_hand"].as_i64().unwrap(),
        s["reserved"].as_i64().unwrap(),
        s["available"].as_i64().unwrap(),
    )
}

/// (balance, held) of a user's wallet, minor units.
async fn wallet(app: &TestApp, user: &User) -> (i64, i64) {
    let w = json_of(
        send(app, user, "GET", "/api/v1/wallet", None).await,
        StatusCode::OK,
    )
    .await;
    (w["balance"].as_i64().unwrap(), w["held"].as_i64().unwrap())
}

async fn cart_quantity(app: &TestApp, user: &User, sku: &str) -> i64 {
    let cart = json_of(
        send(app, user, "GET", "/api/v1/cart", None).await,
        StatusCode::OK,
    )
    .await;
    cart["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["sku"] == sku)
        .map_or(0, |l| l["quantity"].as_i64().unwrap())
}

async fn a_checkout_is_paid_from_the_wallet_confirmed_and_its_stock_committed(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (seller, admin, buyer) = (
        app.seller_user().await,
        app.admin_user().await,
        app.signed_up_user().await,
    );
    stocked(&app, &seller, &admin, "MUG-1", 1_250, 5).await;
    app.top_up(&buyer, 10_000).await;
    add_to_cart(&app, &buyer, "MUG-1", 2).await;

    let order = place(&app, &buyer).await;
    let id = order["id"].as_str().unwrap();
    // Placing the order takes its lines out of the cart at once.
    assert_eq!(cart_quantity(&app, &buyer, "MUG-1").await, 0);
    assert_eq!(order["total"], json!({"amount": 2_500, "currency": "USD"}));
    assert_eq!(order["lines"][0]["unit_price"]["amount"], 1_250);
    assert_eq!(order["shipping_address"]["country"], "GB");

    let order = settled(&app, &buyer, id, Duration::from_secs(20)).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    let steps: Vec<&str> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["pending", "pending", "confirmed"], "{order}");
    // Paid: the money left the wallet (for the store's escrow), nothing is held.
    assert_eq!(wallet(&app, &buyer).await, (7_500, 0));
    // Committed: two fewer on hand, nothing reserved.
    eventually("the stock to be committed", || async {
        stock(&app, "MUG-1").await == (3, 0, 3)
    })
    .await;
    // The bought lines left the cart when the order was placed.
    assert_eq!(cart_quantity(&app, &buyer, "MUG-1").await, 0);
    // Listed among the buyer's orders, not among someone else's.
    let mine = json_of(
        send(&app, &buyer, "GET", "/api/v1/orders", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(mine["items"][0]["id"], id);
    let other = app.signed_up_user().await;
    let theirs = json_of(
        send(&app, &other, "GET", "/api/v1/orders", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(theirs["items"], json!([]));
    assert_problem(
        send(&app, &other, "GET", &format!("/api/v1/orders/{id}"), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    app.assert_wallet_ledger_sound().await;
}

async fn five_hundred_checkouts_for_the_last_ten_units_confirm_exactly_ten(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (seller, admin) = (app.seller_user().await, app.admin_user().await);
    stocked(&app, &seller, &admin, "LAST-10", 1_000, 10).await;
    // 500 buyers, each with the money and one unit in the cart.
    let mut buyers = Vec::with_capacity(500);
    for _ in 0..50 {
        let batch = join_all((0..10).map(|_| async {
            let buyer = app.signed_up_user().await;
            app.top_up(&buyer, 1_000).await;
            add_to_cart(&app, &buyer, "LAST-10", 1).await;
            buyer
        }))
        .await;
        buyers.extend(batch);
    }
    let orders = join_all(buyers.iter().map(|b| place(&app, b))).await;
    let mut confirmed = 0;
    let mut cancelled = 0;
    for (buyer, order) in buyers.iter().zip(&orders) {
        let order = settled(
            &app,
            buyer,
            order["id"].as_str().unwrap(),
            Duration::from_secs(120),
        )
        .await;
        match order["status"].as_str().unwrap() {
            "confirmed" => {
                confirmed += 1;
                assert_eq!(wallet(&app, buyer).await, (0, 0));
            }
            "cancelled" => {
                cancelled += 1;
                let reason = order["reason"].as_str().unwrap();
                assert!(reason.starts_with("out of stock"), "{reason}");
                assert_eq!(wallet(&app, buyer).await, (1_000, 0));
            }
            other => panic!("unexpected status {other}: {order}"),
        }
    }
    assert_eq!((confirmed, cancelled), (10, 490));
    eventually("the stock to be committed", || async {
        stock(&app, "LAST-10").await == (0, 0, 0)
    })
    .await;
    app.assert_wallet_ledger_sound().await;
}

async fn twenty_concurrent_checkouts_with_one_key_make_one_order(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (seller, admin, buyer) = (
        app.seller_user().await,
        app.admin_user().await,
        app.signed_up_user().await,
    );
    stocked(&app, &seller, &admin, "ONCE-1", 500, 50).await;
    app.top_up(&buyer, 5_000).await;
    add_to_cart(&app, &buyer, "ONCE-1", 1).await;
    let body = json!({"shipping_address": address()});
    let answers = join_all((0..20).map(|_| checkout(&app, &buyer, "same-key", &body))).await;
    let mut ids = std::collections::HashSet::new();
    for r in answers {
        let order = json_of(r, StatusCode::ACCEPTED).await;
        ids.insert(order["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids.into_iter().next().unwrap();
    let order = settled(&app, &buyer, &id, Duration::from_secs(20)).await;
    assert_eq!(order["status"], "confirmed");
    let list = json_of(
        send(&app, &buyer, "GET", "/api/v1/orders", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    // Charged once, one unit taken.
    assert_eq!(wallet(&app, &buyer).await, (4_500, 0));
    eventually("the stock to be committed", || async {
        stock(&app, "ONCE-1").await == (49, 0, 49)
    })
    .await;
    // A later repeat still answers the same order.
    let again = json_of(
        checkout(&app, &buyer, "same-key", &body).await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["status"], "confirmed");
}

async fn a_reused_key_with_another_body_is_a_422_and_bad_checkouts_get_a_4xx(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (seller, admin, buyer) = (
        app.seller_user().await,
        app.admin_user().await,
        app.signed_up_user().await,
    );
    stocked(&app, &seller, &admin, "KEY-1", 700, 5).await;
    app.top_up(&buyer, 5_000).await;

    // An empty cart is a 422.
    let body = json!({"shipping_address": address()});
    let problem = assert_problem(
        checkout(&app, &buyer, "k-empty", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(problem.to_string().contains("empty"), "{problem}");

    add_to_cart(&app, &buyer, "KEY-1", 1).await;
    // No key: 400; a bad key: 422; anonymous: 401.
    let r = buyer
        .client
        .post(app.url("/api/v1/checkout"))
        .header("x-csrf-token", &buyer.csrf_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::BAD_REQUEST).await;
    assert_problem(
        checkout(&app, &buyer, "has space", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let r = app
        .new_client()
        .post(app.url("/api/v1/checkout"))
        .header("idempotency-key", "anon")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED).await;
    // Bad addresses name the field.
    for (bad, field) in [
        (json!({}), "shipping_address"),
        (
            json!({"shipping_address": {"name": "A", "line1": "1 Road", "city": "", "postal_code": "1", "country": "GB"}}),
            "shipping_address.city",
        ),
        (
            json!({"shipping_address": {"name": "A", "line1": "1 Road", "city": "X", "postal_code": "1", "country": "Britain"}}),
            "shipping_address.country",
        ),
        (json!({"shipping_address": "somewhere"}), ""),
    ] {
        let problem = assert_problem(
            checkout(&app, &buyer, "k-bad", &bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(problem.to_string().contains(field), "{problem}");
    }
    // A price sent by the client is ignored: the catalog's is charged.
    let r = checkout(
        &app,
        &buyer,
        "k-1",
        &json!({"shipping_address": address(), "total": {"amount": 1, "currency": "USD"}}),
    )
    .await;
    let order = json_of(r, StatusCode::ACCEPTED).await;
    assert_eq!(order["total"]["amount"], 700);
    // The same key with another body: 422, and no second order.
    let mut other = address();
    other["city"] = json!("Paris");
    let problem = assert_problem(
        checkout(&app, &buyer, "k-1", &json!({"shipping_address": other})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(problem.to_string().contains("Idempotency-Key"), "{problem}");
    let list = json_of(
        send(&app, &buyer, "GET", "/api/v1/orders", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // Bad order ids and list parameters are 4xx.
    assert_problem(
        send(&app, &buyer, "GET", "/api/v1/orders/not-an-order", None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        send(&app, &buyer, "GET", "/api/v1/orders?status=lost", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=101", "limit"),
        ("limit=2.5", "limit"),
        ("all=maybe", "all"),
    ] {
        let problem = assert_problem(
            send(
                &app,
                &buyer,
                "GET",
                &format!("/api/v1/orders?{query}"),
                None,
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
    assert_problem(
        send(&app, &buyer, "GET", "/api/v1/orders?all=true", None).await,
        StatusCode::FORBIDDEN,
    )
    .await;
}

async fn a_declined_payment_cancels_the_order_and_releases_its_stock(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (seller, admin, buyer) = (
        app.seller_user().await,
        app.admin_user().await,
        app.signed_up_user().await,
    );
    stocked(&app, &seller, &admin, "POOR-1", 1_200, 3).await;
    app.top_up(&buyer, 500).await;
    add_to_cart(&app, &buyer, "POOR-1", 1).await;
    let order = place(&app, &buyer).await;
    let order = settled(
        &app,
        &buyer,
        order["id"].as_str().unwrap(),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(order["status"], "cancelled");
    let reason = order["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "insufficient credits: this order costs 12.00 USD and you have 5.00 USD available"
        ),
        "{reason}"
    );
    assert_eq!(wallet(&app, &buyer).await, (500, 0));
    eventually("the stock to be released", || async {
        stock(&app, "POOR-1").await == (3, 0, 3)
    })
    .await;
    // What was not bought goes back to the cart.
    eventually("the line to come back to the cart", || async {
        cart_quantity(&app, &buyer, "POOR-1").await == 1
    })
    .await;
    app.assert_wallet_ledger_sound().await;
}

/// The cart after checkout: placing an order takes exactly its lines out at once, so what
/// the buyer adds afterwards stays (whatever the order's fate), and an order that fails
/// puts its lines back on top of them.
async fn an_order_takes_its_lines_from_the_cart_and_a_failed_one_puts_them_back(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (seller, admin, buyer) = (
        app.seller_user().await,
        app.admin_user().await,
        app.signed_up_user().await,
    );
    stocked(&app, &seller, &admin, "BACK-1", 1_000, 10).await;
    stocked(&app, &seller, &admin, "BACK-2", 300, 10).await;
    app.top_up(&buyer, 2_500).await;

    // Bought: 2 of BACK-1 leave the cart; BACK-1 added again afterwards stays, also
    // after the order is confirmed and the worker has had time to act on it.
    add_to_cart(&app, &buyer, "BACK-1", 2).await;
    let bought = place(&app, &buyer).await;
    assert_eq!(cart_quantity(&app, &buyer, "BACK-1").await, 0);
    json_of(
        send(&app, &buyer, "DELETE", "/api/v1/cart", None).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    add_to_cart(&app, &buyer, "BACK-1", 1).await;
    let bought = settled(
        &app,
        &buyer,
        bought["id"].as_str().unwrap(),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(bought["status"], "confirmed", "{bought}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(cart_quantity(&app, &buyer, "BACK-1").await, 1);

    // Declined (5.00 USD left, 19.00 USD due): the ordered lines come back, summed with
    // what was added meanwhile and capped at the most a line may hold (999).
    add_to_cart(&app, &buyer, "BACK-2", 3).await;
    let declined = place(&app, &buyer).await;
    assert_eq!(cart_quantity(&app, &buyer, "BACK-1").await, 0);
    assert_eq!(cart_quantity(&app, &buyer, "BACK-2").await, 0);
    add_to_cart(&app, &buyer, "BACK-2", 998).await;
    let declined = settled(
        &app,
        &buyer,
        declined["id"].as_str().unwrap(),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(declined["status"], "cancelled", "{declined}");
    eventually("the declined lines to come back", || async {
        cart_quantity(&app, &buyer, "BACK-1").await == 1
            && cart_quantity(&app, &buyer, "BACK-2").await == 999
    })
    .await;
    // Once: they do not come back a second time.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(cart_quantity(&app, &buyer, "BACK-1").await, 1);
    assert_eq!(cart_quantity(&app, &buyer, "BACK-2").await, 999);

    // Cancelled by the buyer after confirmation: nothing comes back.
    json_of(
        send(&app, &buyer, "DELETE", "/api/v1/cart", None).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    add_to_cart(&app, &buyer, "BACK-2", 1).await;
    let kept = place(&app, &buyer).await;
    let id = kept["id"].as_str().unwrap();
    let kept = settled(&app, &buyer, id, Duration::from_secs(20)).await;
    assert_eq!(kept["status"], "confirmed", "{kept}");
    json_of(
        send(
            &app,
            &buyer,
            "POST",
            &format!("/api/v1/orders/{id}/cancel"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(cart_quantity(&app, &buyer, "BACK-2").await, 0);
}

async fn a_checkout_nobody_pays_times_out_and_its_stock_returns(stack: Stack) {
    // No wallet runs here: the payment request is never answered, so the checkout's
    // deadline (one second) must end it, compensated.
    let Some(app) = TestApp::spawn_with(stack, |s| {
        s.services = "identity,catalog,inventory,cart,orders,web"
            .parse()
            .expect("service names");
        s.set("orders.checkout_timeout_secs", 1);
        // The catalog uses the wallet (who owns an image): somewhere nothing answers.
        s.set("wallet_url", "http://127.0.0.1:9");
        s.service_secret = Some("checkout-timeout-test-secret".to_owned().into());
    })
    .await
    else {
        return;
    };
    let (seller, admin, buyer) = (
        app.seller_user().await,
        app.admin_user().await,
        app.signed_up_user().await,
    );
    stocked(&app, &seller, &admin, "STUCK-1", 900, 2).await;
    add_to_cart(&app, &buyer, "STUCK-1", 2).await;
    let order = place(&app, &buyer).await;
    eventually("the stock to be reserved", || async {
        stock(&app, "STUCK-1").await == (2, 2, 0)
    })
    .await;
    let order = settled(
        &app,
        &buyer,
        order["id"].as_str().unwrap(),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(order["status"], "cancelled");
    assert!(
        order["reason"]
            .as_str()
            .unwrap()
            .starts_with("checkout timed out"),
        "{order}"
    );
    eventually("the stock to be released", || async {
        stock(&app, "STUCK-1").await == (2, 0, 2)
    })
    .await;
}

async fn cancel_ship_deliver_and_refund_move_the_money_and_the_stock(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (seller, admin, buyer) = (
        app.seller_user().await,
        app.admin_user().await,
        app.signed_up_user().await,
    );
    stocked(&app, &seller, &admin, "FLOW-1", 2_000, 10).await;
    app.top_up(&buyer, 10_000).await;

    // Cancelled by the buyer after confirmation: refunded, and the stock is back.
    add_to_cart(&app, &buyer, "FLOW-1", 1).await;
    let first = place(&app, &buyer).await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(
        settled(&app, &buyer, &first_id, Duration::from_secs(20)).await["status"],
        "confirmed"
    );
    // Only administrators ship.
    assert_problem(
        send(
            &app,
            &buyer,
            "POST",
            &format!("/api/v1/orders/{first_id}/ship"),
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let cancelled = json_of(
        send(
            &app,
            &buyer,
            "POST",
            &format!("/api/v1/orders/{first_id}/cancel"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    eventually("the refund", || async {
        wallet(&app, &buyer).await == (10_000, 0)
    })
    .await;
    eventually("the restock", || async {
        stock(&app, "FLOW-1").await == (10, 0, 10)
    })
    .await;
    // Cancelling twice: 409.
    assert_problem(
        send(
            &app,
            &buyer,
            "POST",
            &format!("/api/v1/orders/{first_id}/cancel"),
            None,
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;

    // Shipped: the seller is paid the price less the 5 % fee; no cancel after that. (The
    // cancelled order's line may still be in the cart: start from an empty one.)
    assert!(send(&app, &buyer, "DELETE", "/api/v1/cart", None)
        .await
        .status()
        .is_success());
    add_to_cart(&app, &buyer, "FLOW-1", 1).await;
    let second = place(&app, &buyer).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    assert_eq!(
        settled(&app, &buyer, &second_id, Duration::from_secs(20)).await["status"],
        "confirmed"
    );
    let shipped = json_of(
        send(
            &app,
            &admin,
            "POST",
            &format!("/api/v1/orders/{second_id}/ship"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shipped["status"], "shipped");
    eventually("the seller's payout", || async {
        wallet(&app, &seller).await == (1_900, 0)
    })
    .await;
    assert_problem(
        send(
            &app,
            &buyer,
            "POST",
            &format!("/api/v1/orders/{second_id}/cancel"),
            None,
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    let delivered = json_of(
        send(
            &app,
            &admin,
            "POST",
            &format!("/api/v1/orders/{second_id}/deliver"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(delivered["status"], "delivered");
    // Refunded by an administrator after delivery: the buyer gets it all back.
    assert_problem(
        send(
            &app,
            &admin,
            "POST",
            &format!("/api/v1/orders/{second_id}/refund"),
            Some(json!({"reason": ""})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let refunded = json_of(
        send(
            &app,
            &admin,
            "POST",
            &format!("/api/v1/orders/{second_id}/refund"),
            Some(json!({"reason": "arrived damaged"})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(refunded["status"], "refunded");
    assert_eq!(refunded["reason"], "arrived damaged");
    eventually("the refund", || async {
        wallet(&app, &buyer).await == (10_000, 0)
    })
    .await;
    // The seller keeps the payout (the platform bore the refund); twice is a 409.
    assert_eq!(wallet(&app, &seller).await, (1_900, 0));
    assert_problem(
        send(
            &app,
            &admin,
            "POST",
            &format!("/api/v1/orders/{second_id}/refund"),
            Some(json!({"reason": "again"})),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    let history: Vec<String> = refunded["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        history,
        [
            "pending",
            "pending",
            "confirmed",
            "shipped",
            "delivered",
            "refunded"
        ]
    );
    // Administrators see everyone's orders.
    let all = json_of(
        send(&app, &admin, "GET", "/api/v1/orders?all=true", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    app.assert_wallet_ledger_sound().await;
}

/// Generates an image as `user` (paying its price, so their balance is unchanged) and
/// waits until the wallet has it as their asset; returns its id.
async fn asset_of(app: &TestApp, user: &User, prompt: &str) -> String {
    app.top_up(user, 50).await;
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
    let deadline = Instant::now() + Duration::from_secs(120);
    while send(app, user, "GET", &format!("/api/v1/assets/{id}"), None)
        .await
        .status()
        != StatusCode::OK
    {
        assert!(Instant::now() < deadline, "the asset never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    id
}

async fn a_shipped_print_pays_its_owner_and_the_images_creator_its_royalty(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (creator, owner, admin, buyer) = (
        app.signed_up_user().await,
        app.seller_user().await,
        app.admin_user().await,
        app.signed_up_user().await,
    );
    // The creator sells the original to the owner on the market: 1,000 less the 5 % fee.
    let asset = asset_of(&app, &creator, "a harbour worth printing").await;
    let listing = json_of(
        send(
            &app,
            &creator,
            "POST",
            "/api/v1/listings",
            Some(json!({"asset_id": asset, "price": 1_000})),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    app.top_up(&owner, 1_000).await;
    json_of(
        send(
            &app,
            &owner,
            "POST",
            &format!("/api/v1/listings/{}/buy", listing["id"].as_str().unwrap()),
            None,
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(wallet(&app, &creator).await, (950, 0));
    assert_eq!(wallet(&app, &owner).await, (0, 0));

    // The owner lists a print of it; an admin stocks it; a buyer checks out one.
    let print = json!({
        "kind": "print",
        "title": "Harbour print",
        "category": "wall-art",
        "asset_id": asset,
        "variants": [{"sku": "HARBOUR-A3", "name": "A3 matte", "price": {"amount": 10_000, "currency": "USD"}}],
    });
    json_of(
        send(&app, &owner, "POST", "/api/v1/products", Some(print)).await,
        StatusCode::CREATED,
    )
    .await;
    json_of(
        send(
            &app,
            &admin,
            "POST",
            "/api/v1/inventory/HARBOUR-A3/adjust",
            Some(json!({"delta": 5, "reason": "received"})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    app.top_up(&buyer, 10_000).await;
    eventually("the print to be on sale", || async {
        send(
            &app,
            &buyer,
            "POST",
            "/api/v1/cart/items",
            Some(json!({"sku": "HARBOUR-A3", "quantity": 1})),
        )
        .await
        .status()
        .is_success()
    })
    .await;
    let order = place(&app, &buyer).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let order = settled(&app, &buyer, &id, Duration::from_secs(20)).await;
    assert_eq!(order["status"], "confirmed", "{order}");

    // Shipping pays the owner 10,000 less the 5 % fee and the 10 % royalty, and the
    // creator the royalty.
    let shipped = json_of(
        send(
            &app,
            &admin,
            "POST",
            &format!("/api/v1/orders/{id}/ship"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shipped["status"], "shipped");
    eventually("the owner's payout", || async {
        wallet(&app, &owner).await == (8_500, 0)
    })
    .await;
    eventually("the creator's royalty", || async {
        wallet(&app, &creator).await == (1_950, 0)
    })
    .await;
    assert_eq!(wallet(&app, &buyer).await, (0, 0));
    app.assert_wallet_ledger_sound().await;
}

/// A page as a member sees it: (status, body).
async fn page(app: &TestApp, user: &User, path: &str) -> (StatusCode, String) {
    let r = user.client.get(app.url(path)).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// The value of the first hidden `name` field of a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// One main, the site's nav, one h1, no inline script or style, and a label for every
/// visible control.
fn assert_accessible(path: &str, html: &str) {
    assert_eq!(html.matches("<main").count(), 1, "{path}: one main");
    assert!(
        html.contains(r#"<nav class="site-nav" aria-label="Main">"#),
        "{path}: nav"
    );
    assert_eq!(html.matches("<h1").count(), 1, "{path}: one h1");
    assert!(
        !html.contains(" onclick=") && !html.contains(" style="),
        "{path}: inline"
    );
    assert_eq!(html.matches("<script").count(), 1, "{path}: one script");
    for control in ["<input", "<select", "<textarea"] {
        for (i, _) in html.match_indices(control) {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            if tag.contains(r#"type="hidden""#) {
                continue;
            }
            let id = tag
                .split(" id=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("{path}: no id: {tag}"));
            assert!(
                html.contains(&format!(r#"<label for="{id}""#)),
                "{path}: no label for {id}"
            );
        }
    }
}

async fn the_order_pages_work_without_script_and_are_accessible(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (seller, admin, buyer) = (
        app.seller_user().await,
        app.admin_user().await,
        app.signed_up_user().await,
    );
    stocked(&app, &seller, &admin, "PAGE-1", 1_500, 4).await;
    app.top_up(&buyer, 5_000).await;
    add_to_cart(&app, &buyer, "PAGE-1", 2).await;

    // Checkout with the form, as a browser without script posts it.
    let (status, html) = page(&app, &buyer, "/checkout").await;
    assert_eq!(status, StatusCode::OK);
    assert_accessible("/checkout", &html);
    assert!(html.contains("30.00 USD"), "the total is shown");
    let form = [
        ("csrf_token", hidden(&html, "csrf_token")),
        ("idempotency_key", hidden(&html, "idempotency_key")),
        ("name", "Ada Lovelace".into()),
        ("line1", "12 St James's Square".into()),
        ("line2", String::new()),
        ("city", "London".into()),
        ("postal_code", "SW1Y 4JH".into()),
        ("country", "gb".into()),
    ];
    let post = || buyer.client.post(app.url("/checkout")).form(&form).send();
    let r = post().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/orders/"), "{location}");
    // The same form posted twice (a double click) is the same order.
    let again = post().await.unwrap();
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);
    // A bad address is a 422 page naming the field; nothing is ordered.
    let mut bad = form.clone();
    bad[1].1 = "another-key".into();
    bad[7].1 = "Britain".into();
    let r = buyer
        .client
        .post(app.url("/checkout"))
        .form(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("country"));

    let id = location.trim_start_matches("/orders/").to_owned();
    let order = settled(&app, &buyer, &id, Duration::from_secs(20)).await;
    assert_eq!(order["status"], "confirmed");
    let (status, html) = page(&app, &buyer, &location).await;
    assert_eq!(status, StatusCode::OK);
    assert_accessible(&location, &html);
    assert!(html.contains("confirmed") && html.contains("SW1Y 4JH"));
    assert!(html.contains(&format!(r#"data-live-src="/api/v1/orders/{id}/events""#)));
    assert!(html.contains(&format!(r#"action="/orders/{id}/cancel""#)));
    let (status, html) = page(&app, &buyer, "/orders").await;
    assert_eq!(status, StatusCode::OK);
    assert_accessible("/orders", &html);
    assert!(html.contains(&location));
    // Someone else's order is not there for them; the desk is for administrators.
    assert_eq!(
        page(&app, &seller, &location).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        page(&app, &buyer, "/admin/orders").await.0,
        StatusCode::FORBIDDEN
    );
    let (status, desk) = page(&app, &admin, "/admin/orders").await;
    assert_eq!(status, StatusCode::OK);
    assert_accessible("/admin/orders", &desk);
    assert_eq!(
        page(&app, &admin, "/admin/orders?status=lost").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // Shipped from the desk with its form.
    let r = admin
        .client
        .post(app.url(&format!("/admin/orders/{id}/ship")))
        .form(&[
            ("csrf_token", hidden(&desk, "csrf_token")),
            ("reason", String::new()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, html) = page(&app, &buyer, &location).await;
    assert!(html.contains("shipped"));
    assert!(
        !html.contains(&format!(r#"action="/orders/{id}/cancel""#)),
        "no cancel once shipped"
    );
    // A form without its token changes nothing.
    let r = admin
        .client
        .post(app.url(&format!("/admin/orders/{id}/deliver")))
        .form(&[("csrf_token", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        settled(&app, &buyer, &id, Duration::from_secs(1)).await["status"],
        "shipped"
    );
}
