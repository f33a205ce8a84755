//! Inventory through the real application, on both stacks: stock is read by anyone,
//! adjusted only by admins with a reason (and audited), bad input is a 4xx; and an order's
//! events reach consumer `inventory.orders` over the bus and are answered. The reservation
//! rules themselves (concurrency, all or nothing, expiry, crossings) are tested against
//! both databases in `crates/services/inventory/tests/reservations.rs`.

use std::time::{Duration, Instant};

use rendermart_testkit::{assert_problem, Stack, TestApp, User};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

rendermart_testkit::on_both_stacks!(
    adjustments_need_an_admin_and_a_reason_and_are_audited,
    bad_skus_and_deltas_get_a_4xx,
    an_order_placed_on_the_bus_is_reserved_and_a_cancel_releases_it,
);

async fn adjustments_need_an_admin_and_a_reason_and_are_audited(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let admin = app.admin_user().await;
    let customer = app.signed_up_user().await;

    // Anonymous: 401; a customer: 403; nothing changes.
    let r = app
        .new_client()
        .post(app.url("/api/v1/inventory/PRINT-A3/adjust"))
        .json(&json!({"delta": 10, "reason": "received"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED).await;
    let r = adjust(
        &app,
        &customer,
        "PRINT-A3",
        json!({"delta": 10, "reason": "received"}),
    )
    .await;
    assert_problem(r, StatusCode::FORBIDDEN).await;
    let r = send(
        &app,
        &customer,
        "GET",
        "/api/v1/inventory/PRINT-A3/adjustments",
    )
    .await;
    assert_problem(r, StatusCode::FORBIDDEN).await;
    let r = app
        .new_client()
        .get(app.url("/api/v1/inventory/PRINT-A3"))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::NOT_FOUND).await;

    // An admin without a reason: 422 naming the field.
    for body in [
        json!({"delta": 10}),
        json!({"delta": 10, "reason": "   "}),
        json!({"delta": 10, "reason": "x".repeat(201)}),
    ] {
        let r = adjust(&app, &admin, "PRINT-A3", body).await;
        let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(problem.to_string().contains("reason"), "{problem}");
    }

    // With one: stocked, and anyone can read it (lower case works too).
    let r = adjust(
        &app,
        &admin,
        "print-a3",
        json!({"delta": 12, "reason": "received from the printer"}),
    )
    .await;
    let body = json_of(r, StatusCode::OK).await;
    assert_eq!(
        body["stock"],
        json!({"sku": "PRINT-A3", "on_hand": 12, "reserved": 0, "available": 12})
    );
    assert_eq!(body["adjustment"]["by_user"], admin.id);
    let r = adjust(
        &app,
        &admin,
        "PRINT-A3",
        json!({"delta": -2, "reason": "two arrived creased"}),
    )
    .await;
    json_of(r, StatusCode::OK).await;
    let stock = json_of(
        app.new_client()
            .get(app.url("/api/v1/inventory/print-a3"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        stock,
        json!({"sku": "PRINT-A3", "on_hand": 10, "reserved": 0, "available": 10})
    );

    // The audit trail: newest first, who, how much, why, paginated.
    let trail = json_of(
        send(
            &app,
            &admin,
            "GET",
            "/api/v1/inventory/PRINT-A3/adjustments",
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let items = trail["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["delta"], -2);
    assert_eq!(items[0]["reason"], "two arrived creased");
    assert_eq!(items[0]["on_hand_after"], 10);
    assert_eq!(items[1]["delta"], 12);
    assert_eq!(items[1]["by_user"], admin.id);
    assert!(items[1]["at"].as_str().unwrap().ends_with('Z'), "{trail}");
    let first_page = json_of(
        send(
            &app,
            &admin,
            "GET",
            "/api/v1/inventory/PRINT-A3/adjustments?limit=1",
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let next = first_page["next"].as_str().unwrap();
    let second_page = json_of(
        send(
            &app,
            &admin,
            "GET",
            &format!("/api/v1/inventory/PRINT-A3/adjustments?limit=1&before={next}"),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(second_page["items"][0]["delta"], 12);
}

async fn bad_skus_and_deltas_get_a_4xx(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let admin = app.admin_user().await;
    json_of(
        adjust(
            &app,
            &admin,
            "BOOK-7",
            json!({"delta": 5, "reason": "stock"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;

    // Deltas: zero, fractional, enormous, beyond the maximum, not a number.
    for delta in [
        json!(0),
        json!(1.5),
        json!(1e30),
        json!(1_000_001),
        json!(-1_000_001),
        json!(i64::MIN),
        json!("5"),
        Value::Null,
    ] {
        let r = adjust(
            &app,
            &admin,
            "BOOK-7",
            json!({"delta": delta, "reason": "x"}),
        )
        .await;
        let status = r.status();
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
            "{delta}: {status}"
        );
        assert_problem(r, status).await;
    }
    // An integer too large for any number type, as a client could send it.
    let r = admin
        .client
        .post(app.url("/api/v1/inventory/BOOK-7/adjust"))
        .header("x-csrf-token", &admin.csrf_token)
        .header("content-type", "application/json")
        .body(r#"{"delta": 99999999999999999999999999, "reason": "x"}"#)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(status.is_client_error(), "{status}");
    assert_problem(r, status).await;
    // Unknown fields and a body that is not an object.
    let r = adjust(
        &app,
        &admin,
        "BOOK-7",
        json!({"delta": 1, "reason": "x", "sku": "A"}),
    )
    .await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let r = adjust(&app, &admin, "BOOK-7", json!([1])).await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;

    // SKUs that are not SKUs, on every route.
    for bad in ["A%20B", "-A", "A_B", "%C3%89", &"A".repeat(65)] {
        let r = app
            .new_client()
            .get(app.url(&format!("/api/v1/inventory/{bad}")))
            .send()
            .await
            .unwrap();
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        let r = adjust(&app, &admin, bad, json!({"delta": 1, "reason": "x"})).await;
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    }

    // Unknown SKU: 404 to read, to audit, and to take stock out of.
    let r = app
        .new_client()
        .get(app.url("/api/v1/inventory/NOPE-1"))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::NOT_FOUND).await;
    let r = send(&app, &admin, "GET", "/api/v1/inventory/NOPE-1/adjustments").await;
    assert_problem(r, StatusCode::NOT_FOUND).await;
    let r = adjust(&app, &admin, "NOPE-1", json!({"delta": -1, "reason": "x"})).await;
    assert_problem(r, StatusCode::NOT_FOUND).await;

    // Below zero, and (after a reservation) below what is reserved: 409, nothing changes.
    let r = adjust(&app, &admin, "BOOK-7", json!({"delta": -6, "reason": "x"})).await;
    let problem = assert_problem(r, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("at most 5"),
        "{problem}"
    );
    place_order(&app, &[("BOOK-7", 4)]).await;
    wait_for(&app, "BOOK-7", |s| s["reserved"] == 4).await;
    let r = adjust(&app, &admin, "BOOK-7", json!({"delta": -2, "reason": "x"})).await;
    let problem = assert_problem(r, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("4 reserved"),
        "{problem}"
    );
    let stock = json_of(
        app.new_client()
            .get(app.url("/api/v1/inventory/BOOK-7"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        stock,
        json!({"sku": "BOOK-7", "on_hand": 5, "reserved": 4, "available": 1})
    );
}

async fn an_order_placed_on_the_bus_is_reserved_and_a_cancel_releases_it(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let admin = app.admin_user().await;
    json_of(
        adjust(
            &app,
            &admin,
            "MUG-2",
            json!({"delta": 3, "reason": "stock"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let order = place_order(&app, &[("MUG-2", 2)]).await;
    wait_for(&app, "MUG-2", |s| s["available"] == 1).await;
    // Too many for what is left: rejected, nothing reserved.
    let short = place_order(&app, &[("MUG-2", 2)]).await;
    let answers = wait_published(&app, "inventory.StockRejected", 1).await;
    assert_eq!(answers[0]["order_id"], short.to_string());
    assert_eq!(
        answers[0]["reason"],
        "out of stock: MUG-2 (2 asked, 1 left)"
    );
    publish_order_event(
        &app,
        order,
        &rendermart_orders_api::OrderCancelled {
            order_id: order,
            reason: "payment declined".into(),
        },
    )
    .await;
    wait_for(&app, "MUG-2", |s| s["available"] == 3 && s["reserved"] == 0).await;
    let released = wait_published(&app, "inventory.StockReleased", 1).await;
    assert_eq!(released[0]["why"], "cancelled: payment declined");
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

async fn send(app: &TestApp, user: &User, method: &str, path: &str) -> Response {
    let request = match method {
        "POST" => user.client.post(app.url(path)),
        _ => user.client.get(app.url(path)),
    };
    request
        .header("x-csrf-token", &user.csrf_token)
        .send()
        .await
        .unwrap()
}

async fn adjust(app: &TestApp, user: &User, sku: &str, body: Value) -> Response {
    user.client
        .post(app.url(&format!("/api/v1/inventory/{sku}/adjust")))
        .header("x-csrf-token", &user.csrf_token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn json_of(r: Response, expected: StatusCode) -> Value {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, expected, "{body}");
    body
}

/// Polls the SKU's stock until `done` holds (at most 15 s).
async fn wait_for(app: &TestApp, sku: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = app
            .new_client()
            .get(app.url(&format!("/api/v1/inventory/{sku}")))
            .send()
            .await
            .unwrap();
        let stock: Value = r.json().await.unwrap();
        if done(&stock) {
            return;
        }
        assert!(Instant::now() < deadline, "stock never got there: {stock}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The inventory service's database, as the app opened it.
async fn inventory_db(app: &TestApp) -> rendermart_platform::db::Db {
    let target = rendermart_platform::db::DatabaseTarget::from_config(
        app.settings.database_url.as_ref().map(|u| u.expose()),
        &app.settings.data_dir,
    )
    .unwrap();
    rendermart_platform::db::Db::connect(&target, "inventory")
        .await
        .unwrap()
}

/// Publishes an order's event onto the app's bus, as the orders service will: through an
/// outbox the app relays (inventory's, standing in for the orders service's own, which
/// does not exist yet; the aggregate `order:<id>` is then used by no one else).
async fn publish_order_event<E: rendermart_platform::events::Event>(
    app: &TestApp,
    order: rendermart_orders_api::OrderId,
    event: &E,
) {
    let db = inventory_db(app).await;
    let mut tx = db.begin().await.unwrap();
    let envelope = rendermart_platform::events::Envelope::new(event).with_aggregate("order", order);
    rendermart_platform::outbox::enqueue(&mut tx, &envelope)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    db.close().await;
}

async fn place_order(app: &TestApp, lines: &[(&str, u32)]) -> rendermart_orders_api::OrderId {
    let order = rendermart_orders_api::OrderId::new();
    let placed = rendermart_orders_api::OrderPlaced {
        order_id: order,
        buyer: rendermart_types::UserId::new(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| rendermart_orders_api::OrderLine {
                sku: rendermart_types::Sku::parse(sku).unwrap(),
                quantity: *quantity,
            })
            .collect(),
        placed_at: time::OffsetDateTime::now_utc(),
    };
    publish_order_event(app, order, &placed).await;
    order
}

/// The payloads of `event_type` inventory published, once there are `n` (at most 15 s).
async fn wait_published(app: &TestApp, event_type: &str, n: usize) -> Vec<Value> {
    let db = inventory_db(app).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT envelope FROM outbox WHERE event_type = $1 ORDER BY position")
                .bind(event_type)
                .fetch_all(db.pool())
                .await
                .unwrap();
        if rows.len() >= n {
            db.close().await;
            return rows
                .iter()
                .map(|(json,)| serde_json::from_str::<Value>(json).unwrap()["payload"].clone())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{event_type} was not published {n} times"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
