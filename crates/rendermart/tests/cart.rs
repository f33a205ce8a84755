//! The cart through the real application, on every store it runs on: SQLite (embedded),
//! Redis (the distributed stack, which has one) and PostgreSQL (the distributed stack
//! without Redis). Each rule is written once and run on all three: concurrent "+1"s lose
//! nothing, bad input is a 4xx that changes nothing, prices come from the catalog only, a
//! guest cart joins the user's at log-in, idle carts expire, and the pages' forms work.

use std::time::Duration;

use rendermart_testkit::{assert_problem, Stack, TestApp, User};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

/// Where carts live in a test run.
#[derive(Clone, Copy, Debug)]
enum Store {
    Sqlite,
    Redis,
    Postgres,
}

/// Runs each `async fn rule(store: Store)` on the three stores.
macro_rules! on_every_store {
    ($($rule:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() { super::$rule(super::Store::Sqlite).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() { super::$rule(super::Store::Redis).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() { super::$rule(super::Store::Postgres).await })*
        }
    };
}

on_every_store!(
    a_hundred_concurrent_adds_of_one_make_a_hundred,
    a_guest_cart_is_priced_by_the_catalog_and_changed_line_by_line,
    bad_quantities_unknown_skus_and_client_prices_change_nothing,
    a_guest_cart_joins_the_users_cart_at_log_in,
    the_log_in_page_merges_the_guest_cart_too,
    an_idle_cart_expires,
    the_cart_page_adds_updates_and_removes_with_forms,
);

async fn spawn(store: Store, settings: &[(&str, i64)]) -> Option<TestApp> {
    let stack = match store {
        Store::Sqlite => Stack::Embedded,
        Store::Redis | Store::Postgres => Stack::Distributed,
    };
    TestApp::spawn_with(stack, |s| {
        if let Store::Postgres = store {
            s.redis_url = None;
        }
        for (key, value) in settings {
            s.set(key, value);
        }
    })
    .await
}

fn usd(amount: i64) -> Value {
    json!({"amount": amount, "currency": "USD"})
}

async fn json_of(r: Response, expected: StatusCode) -> Value {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, expected, "{body}");
    body
}

/// A product on sale with one variant per (sku, price), each stocked with 10; returns its id.
async fn product(app: &TestApp, admin: &User, title: &str, variants: &[(&str, i64)]) -> String {
    let body = json!({
        "kind": "goods",
        "title": title,
        "description": "For the cart tests.",
        "category": "goods",
        "tags": [],
        "variants": variants.iter().map(|(sku, price)| json!({"sku": sku, "name": format!("{sku} size"), "price": usd(*price)})).collect::<Vec<_>>(),
    });
    let created = json_of(
        admin
            .client
            .post(app.url("/api/v1/products"))
            .header("x-csrf-token", &admin.csrf_token)
            .json(&body)
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    for (sku, _) in variants {
        let r = admin
            .client
            .post(app.url(&format!("/api/v1/inventory/{sku}/adjust")))
            .header("x-csrf-token", &admin.csrf_token)
            .json(&json!({"delta": 10, "reason": "cart test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    created["id"].as_str().unwrap().to_owned()
}

/// A shopper: a guest's client (cookies kept), or a signed-in user's with their CSRF token.
struct Shopper {
    client: Client,
    csrf: Option<String>,
}

impl Shopper {
    fn guest(app: &TestApp) -> Self {
        Self {
            client: app.new_client(),
            csrf: None,
        }
    }

    fn user(user: &User) -> Self {
        Self {
            client: user.client.clone(),
            csrf: Some(user.csrf_token.clone()),
        }
    }

    async fn send(&self, app: &TestApp, method: &str, path: &str, body: Option<Value>) -> Response {
        let mut request = match method {
            "POST" => self.client.post(app.url(path)),
            "PATCH" => self.client.patch(app.url(path)),
            "DELETE" => self.client.delete(app.url(path)),
            _ => self.client.get(app.url(path)),
        };
        if let Some(csrf) = &self.csrf {
            request = request.header("x-csrf-token", csrf);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    async fn add(&self, app: &TestApp, body: Value) -> Response {
        self.send(app, "POST", "/api/v1/cart/items", Some(body))
            .await
    }

    async fn cart(&self, app: &TestApp) -> Value {
        json_of(
            self.send(app, "GET", "/api/v1/cart", None).await,
            StatusCode::OK,
        )
        .await
    }
}

/// (sku, quantity) of each line, in order.
fn lines(cart: &Value) -> Vec<(String, u64)> {
    cart["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().unwrap().to_owned(),
                l["quantity"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn owned(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(s, q)| (s.to_string(), *q)).collect()
}

async fn a_hundred_concurrent_adds_of_one_make_a_hundred(store: Store) {
    let Some(app) = spawn(store, &[]).await else {
        return;
    };
    let admin = app.admin_user().await;
    product(&app, &admin, "Race print", &[("RACE-1", 500)]).await;
    let user = app.signed_up_user().await;
    let shopper = Shopper::user(&user);
    // A guest too: their cookie is made by a first add (of another SKU).
    product(&app, &admin, "Race poster", &[("RACE-2", 300)]).await;
    let guest = Shopper::guest(&app);
    json_of(
        guest
            .add(&app, json!({"sku": "RACE-2", "quantity": 1}))
            .await,
        StatusCode::OK,
    )
    .await;

    for who in [&shopper, &guest] {
        let adds = (0..100).map(|_| async {
            who.add(&app, json!({"sku": "race-1", "quantity": 1}))
                .await
                .status()
        });
        let statuses = futures_util::future::join_all(adds).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
    }
    let cart = shopper.cart(&app).await;
    assert_eq!(lines(&cart), owned(&[("RACE-1", 100)]), "{cart}");
    assert_eq!(cart["lines"][0]["line_total"], usd(50_000));
    let cart = guest.cart(&app).await;
    assert_eq!(
        lines(&cart),
        owned(&[("RACE-2", 1), ("RACE-1", 100)]),
        "{cart}"
    );
}

async fn a_guest_cart_is_priced_by_the_catalog_and_changed_line_by_line(store: Store) {
    let Some(app) = spawn(store, &[]).await else {
        return;
    };
    let admin = app.admin_user().await;
    let lamp = product(
        &app,
        &admin,
        "Lamp",
        &[("LAMP-S", 1_500), ("LAMP-L", 2_500)],
    )
    .await;
    product(&app, &admin, "Mug", &[("MUG-1", 800)]).await;
    let guest = Shopper::guest(&app);

    // Nothing yet: an empty cart, and no cookie made for a read.
    let r = guest.send(&app, "GET", "/api/v1/cart", None).await;
    assert!(r.headers().get("set-cookie").is_none());
    assert_eq!(
        json_of(r, StatusCode::OK).await,
        json!({"lines": [], "total": null, "count": 0})
    );

    // The first add makes the cart and its cookie; a second adds to the line.
    let r = guest
        .add(&app, json!({"sku": "lamp-s", "quantity": 2}))
        .await;
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("rm_cart="), "{cookie}");
    for part in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert_eq!(
        json_of(r, StatusCode::OK).await,
        json!({"sku": "LAMP-S", "quantity": 2})
    );
    let r = guest
        .add(&app, json!({"sku": "LAMP-S", "quantity": 3}))
        .await;
    assert_eq!(json_of(r, StatusCode::OK).await["quantity"], 5);
    guest
        .add(&app, json!({"sku": "MUG-1", "quantity": 1}))
        .await;
    guest
        .add(&app, json!({"sku": "LAMP-L", "quantity": 1}))
        .await;

    let cart = guest.cart(&app).await;
    assert_eq!(
        lines(&cart),
        owned(&[("LAMP-S", 5), ("MUG-1", 1), ("LAMP-L", 1)])
    );
    let first = &cart["lines"][0];
    assert_eq!(first["product_id"], lamp.as_str());
    assert_eq!(first["title"], "Lamp");
    assert_eq!(first["variant"], "LAMP-S size");
    assert_eq!(first["unit_price"], usd(1_500));
    assert_eq!(first["line_total"], usd(7_500));
    assert_eq!(first["on_sale"], true);
    assert_eq!(first["available"], 10);
    assert_eq!(first["in_stock"], true);
    assert_eq!(cart["total"], usd(7_500 + 800 + 2_500));
    assert_eq!(cart["count"], 7);

    // PATCH sets a line; DELETE takes it out (twice: the same answer).
    let r = guest
        .send(
            &app,
            "PATCH",
            "/api/v1/cart/items/LAMP-S",
            Some(json!({"quantity": 11})),
        )
        .await;
    assert_eq!(json_of(r, StatusCode::OK).await["quantity"], 11);
    assert_eq!(guest.cart(&app).await["lines"][0]["in_stock"], false);
    for _ in 0..2 {
        let r = guest
            .send(&app, "DELETE", "/api/v1/cart/items/mug-1", None)
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(
        lines(&guest.cart(&app).await),
        owned(&[("LAMP-S", 11), ("LAMP-L", 1)])
    );

    // An archived product's line stays, shown as not on sale and out of the total.
    let r = admin
        .client
        .delete(app.url(&format!("/api/v1/products/{lamp}")))
        .header("x-csrf-token", &admin.csrf_token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let cart = guest.cart(&app).await;
    assert_eq!(cart["lines"][0]["on_sale"], false);
    assert_eq!(cart["total"], Value::Null);
    assert_eq!(cart["count"], 12);

    // Emptied.
    let r = guest.send(&app, "DELETE", "/api/v1/cart", None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(lines(&guest.cart(&app).await).is_empty());
}

async fn bad_quantities_unknown_skus_and_client_prices_change_nothing(store: Store) {
    let Some(app) = spawn(store, &[("cart.max_lines", 2), ("cart.sku_cache_ms", 0)]).await else {
        return;
    };
    let admin = app.admin_user().await;
    product(
        &app,
        &admin,
        "Print",
        &[("PRINT-1", 1_000), ("PRINT-2", 2_000), ("PRINT-3", 3_000)],
    )
    .await;
    let user = app.signed_up_user().await;
    let shopper = Shopper::user(&user);
    json_of(
        shopper
            .add(&app, json!({"sku": "PRINT-1", "quantity": 2}))
            .await,
        StatusCode::OK,
    )
    .await;
    let before = shopper.cart(&app).await;

    // A price or total sent along is ignored: the line is priced by the catalog.
    let r = shopper
        .add(
            &app,
            json!({"sku": "PRINT-2", "quantity": 1, "price": usd(1), "unit_price": usd(1), "total": usd(1)}),
        )
        .await;
    json_of(r, StatusCode::OK).await;
    let cart = shopper.cart(&app).await;
    assert_eq!(cart["lines"][1]["unit_price"], usd(2_000));
    assert_eq!(cart["total"], usd(4_000));
    let r = shopper
        .send(&app, "DELETE", "/api/v1/cart/items/PRINT-2", None)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(shopper.cart(&app).await, before);

    // Quantities that are not whole numbers from 1 to the maximum: 422 naming `quantity`.
    for quantity in [
        json!(0),
        json!(-1),
        json!(1.5),
        json!(2.0),
        json!(1e20),
        json!("3"),
        json!(null),
        json!(1000),
        json!(u64::MAX),
        json!(true),
    ] {
        for r in [
            shopper
                .add(&app, json!({"sku": "PRINT-1", "quantity": quantity}))
                .await,
            shopper
                .send(
                    &app,
                    "PATCH",
                    "/api/v1/cart/items/PRINT-1",
                    Some(json!({"quantity": quantity})),
                )
                .await,
        ] {
            let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
            assert_eq!(
                problem["errors"][0]["field"], "quantity",
                "{quantity}: {problem}"
            );
        }
    }
    let r = shopper.add(&app, json!({"sku": "PRINT-1"})).await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    // A number that is not JSON, or not an object at all.
    let r = shopper
        .client
        .post(app.url("/api/v1/cart/items"))
        .header("x-csrf-token", user.csrf_token.as_str())
        .header("content-type", "application/json")
        .body(r#"{"sku": "PRINT-1", "quantity": 1e999999}"#)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    // A line may not pass the maximum: 998 more on 2 is refused whole.
    let r = shopper
        .add(&app, json!({"sku": "PRINT-1", "quantity": 998}))
        .await;
    let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "quantity", "{problem}");

    // Unknown SKUs: 404; not SKUs at all: 422 naming `sku`.
    let r = shopper
        .add(&app, json!({"sku": "NOPE-1", "quantity": 1}))
        .await;
    assert_problem(r, StatusCode::NOT_FOUND).await;
    let r = shopper
        .send(
            &app,
            "PATCH",
            "/api/v1/cart/items/NOPE-1",
            Some(json!({"quantity": 1})),
        )
        .await;
    assert_problem(r, StatusCode::NOT_FOUND).await;
    for sku in [
        json!("bad sku!"),
        json!(""),
        json!(7),
        json!("x".repeat(65)),
    ] {
        let r = shopper.add(&app, json!({"sku": sku, "quantity": 1})).await;
        let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(problem.to_string().contains("sku"), "{problem}");
    }
    let r = shopper
        .send(&app, "DELETE", "/api/v1/cart/items/bad%20sku", None)
        .await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;

    // The cart holds at most `cart.max_lines` lines (2 here).
    json_of(
        shopper
            .add(&app, json!({"sku": "PRINT-2", "quantity": 1}))
            .await,
        StatusCode::OK,
    )
    .await;
    let full = shopper.cart(&app).await;
    let r = shopper
        .add(&app, json!({"sku": "PRINT-3", "quantity": 1}))
        .await;
    let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "sku", "{problem}");
    assert_eq!(shopper.cart(&app).await, full);

    // A session without its CSRF token changes nothing.
    let r = user
        .client
        .post(app.url("/api/v1/cart/items"))
        .json(&json!({"sku": "PRINT-1", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::FORBIDDEN).await;
    // Nor does a guest cookie the server did not make: it is ignored.
    let r = app
        .new_client()
        .get(app.url("/api/v1/cart"))
        .header("cookie", "rm_cart=../../u:everyone")
        .send()
        .await
        .unwrap();
    assert!(lines(&json_of(r, StatusCode::OK).await).is_empty());
    assert_eq!(shopper.cart(&app).await, full);
}

async fn a_guest_cart_joins_the_users_cart_at_log_in(store: Store) {
    let Some(app) = spawn(store, &[]).await else {
        return;
    };
    let admin = app.admin_user().await;
    product(&app, &admin, "Cups", &[("CUP-1", 400), ("CUP-2", 600)]).await;
    let user = app.signed_up_user().await;
    // What the user had before.
    json_of(
        Shopper::user(&user)
            .add(&app, json!({"sku": "CUP-1", "quantity": 2}))
            .await,
        StatusCode::OK,
    )
    .await;

    // A guest in another browser adds, then logs in there.
    let guest = Shopper::guest(&app);
    guest
        .add(&app, json!({"sku": "CUP-2", "quantity": 1}))
        .await;
    guest
        .add(&app, json!({"sku": "CUP-1", "quantity": 3}))
        .await;
    let r = app.login(&guest.client, &user.email, &user.password).await;
    // The log-in itself merges (summed) and clears the guest cookie.
    let cleared: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("rm_cart=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    let body = json_of(r, StatusCode::OK).await;
    let signed_in = Shopper {
        client: guest.client.clone(),
        csrf: body["csrf_token"].as_str().map(str::to_owned),
    };
    // The user's other browser, which never had the guest cookie, sees it at once.
    let cart = Shopper::user(&user).cart(&app).await;
    assert_eq!(lines(&cart), owned(&[("CUP-1", 5), ("CUP-2", 1)]), "{cart}");
    // The same in the browser that logged in, and once only.
    let r = signed_in.send(&app, "GET", "/api/v1/cart", None).await;
    assert!(
        r.headers().get("set-cookie").is_none(),
        "no guest cookie left"
    );
    let cart = json_of(r, StatusCode::OK).await;
    assert_eq!(lines(&cart), owned(&[("CUP-1", 5), ("CUP-2", 1)]));
    assert_eq!(lines(&Shopper::user(&user).cart(&app).await), lines(&cart));
}

async fn the_log_in_page_merges_the_guest_cart_too(store: Store) {
    let Some(app) = spawn(store, &[]).await else {
        return;
    };
    let admin = app.admin_user().await;
    product(&app, &admin, "Plates", &[("PLATE-1", 700)]).await;
    let user = app.signed_up_user().await;
    let guest = Shopper::guest(&app);
    guest
        .add(&app, json!({"sku": "PLATE-1", "quantity": 2}))
        .await;
    // The site's log-in form, as a browser posts it.
    let page = guest
        .client
        .get(app.url("/login?next=/cart"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = guest
        .client
        .post(app.url("/login"))
        .form(&[
            ("csrf_token", form_token(&page).as_str()),
            ("email", user.email.as_str()),
            ("password", user.password.as_str()),
            ("next", "/cart"),
        ])
        .send()
        .await
        .unwrap();
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{cookies:?}");
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("rm_cart=;") && c.contains("Max-Age=0")),
        "the log-in clears the guest cookie: {cookies:?}"
    );
    // Merged at the log-in: the user's other browser sees it before any cart request here.
    let cart = Shopper::user(&user).cart(&app).await;
    assert_eq!(lines(&cart), owned(&[("PLATE-1", 2)]), "{cart}");
}

async fn an_idle_cart_expires(store: Store) {
    let Some(app) = spawn(store, &[("cart.idle_ttl_secs", 1)]).await else {
        return;
    };
    let admin = app.admin_user().await;
    product(&app, &admin, "Short-lived", &[("BRIEF-1", 100)]).await;
    let guest = Shopper::guest(&app);
    guest
        .add(&app, json!({"sku": "BRIEF-1", "quantity": 4}))
        .await;
    assert_eq!(lines(&guest.cart(&app).await), owned(&[("BRIEF-1", 4)]));
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert!(lines(&guest.cart(&app).await).is_empty());
    // Adding again starts a new cart: the old quantity is gone.
    guest
        .add(&app, json!({"sku": "BRIEF-1", "quantity": 1}))
        .await;
    assert_eq!(lines(&guest.cart(&app).await), owned(&[("BRIEF-1", 1)]));
}

/// The value of the first hidden `csrf_token` field of a page.
fn form_token(html: &str) -> String {
    let marker = r#"name="csrf_token" value=""#;
    let start = html.find(marker).expect("a form with a token") + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

async fn the_cart_page_adds_updates_and_removes_with_forms(store: Store) {
    let Some(app) = spawn(store, &[]).await else {
        return;
    };
    let admin = app.admin_user().await;
    product(
        &app,
        &admin,
        "Poster",
        &[("POSTER-1", 1_200), ("POSTER-2", 900)],
    )
    .await;
    let browser = app.new_client();
    let page = browser.get(app.url("/cart")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Your cart is empty"), "{html}");
    assert!(html.contains(r#"href="/cart" aria-current="page""#));

    // A guest's form needs the double-submit token: without it nothing is added.
    let r = browser
        .post(app.url("/cart/items"))
        .form(&[
            ("sku", "POSTER-1"),
            ("quantity", "2"),
            ("csrf_token", "forged"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The token a page rendered (a product page's "Add to cart" uses the same).
    let html = browser
        .get(app.url("/cart"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Your cart is empty"));
    let token = {
        // The empty page has no form; the log-in page's token is the same signed cookie.
        let login = browser
            .get(app.url("/login"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        form_token(&login)
    };
    for (sku, quantity) in [("POSTER-1", "2"), ("poster-2", ""), ("POSTER-1", "1")] {
        let r = browser
            .post(app.url("/cart/items"))
            .form(&[("sku", sku), ("quantity", quantity), ("csrf_token", &token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()["location"], "/cart");
    }
    let r = browser
        .post(app.url("/cart/items"))
        .form(&[
            ("sku", "POSTER-1"),
            ("quantity", "1.5"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = browser
        .get(app.url("/cart"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Poster"), "{html}");
    assert!(html.contains(r#"for="qty-POSTER-1""#), "{html}");
    assert!(html.contains(r#"value="3""#), "{html}");
    assert!(html.contains("45.00 USD"), "{html}");
    assert!(html.contains(r#"href="/checkout""#));
    let token = form_token(&html);

    // A new quantity, then 0 (removes), then the remove button.
    let r = browser
        .post(app.url("/cart/items/POSTER-1"))
        .form(&[("quantity", "4"), ("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = browser
        .post(app.url("/cart/items/POSTER-2"))
        .form(&[("quantity", "0"), ("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cart: Value = browser
        .get(app.url("/api/v1/cart"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lines(&cart), owned(&[("POSTER-1", 4)]));
    let r = browser
        .post(app.url("/cart/items/POSTER-1/remove"))
        .form(&[("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cart: Value = browser
        .get(app.url("/api/v1/cart"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(lines(&cart).is_empty());
}
