//! The driver of `scripts/bench-checkouts`: checkouts end to end against a running
//! RenderMart, over HTTP. It stocks one product (as the administrator the script made with
//! `rendermart admin create`), signs up BUYERS buyers with the credits they need, then each
//! buyer in turn sets its cart to one unit (`PATCH /api/v1/cart/items/{sku}`) and checks out
//! with a fresh `Idempotency-Key`, CHECKOUTS in all. The clock runs from the first checkout
//! until every order has left `pending` (the saga complete: stock reserved, payment taken,
//! order confirmed, every event delivered and applied), and the rate is confirmed orders per
//! second of that time.
//!
//! `checkouts BASE_URL ADMIN_EMAIL ADMIN_PASSWORD CHECKOUTS BUYERS`

use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PRICE: i64 = 100;
const SKU: &str = "BENCH-CHECKOUT-1";

struct Person {
    client: reqwest::Client,
    csrf: String,
}

impl Person {
    /// A GET answered with JSON.
    async fn get_json(&self, url: String) -> Value {
        self.client
            .get(url)
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("json")
    }

    async fn enter(base: &str, path: &str, body: Value) -> Self {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .pool_max_idle_per_host(4)
            .build()
            .expect("a client");
        let r = client
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .expect("answered");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        let body: Value = r.json().await.expect("json");
        Self {
            client,
            csrf: body["csrf_token"].as_str().expect("csrf token").to_owned(),
        }
    }

    async fn send(&self, method: reqwest::Method, url: String, body: Value) -> reqwest::Response {
        self.client
            .request(method, url)
            .header("x-csrf-token", &self.csrf)
            .json(&body)
            .send()
            .await
            .expect("answered")
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, email, password, checkouts, buyers] = &args[..] else {
        eprintln!("usage: checkouts BASE_URL ADMIN_EMAIL ADMIN_PASSWORD CHECKOUTS BUYERS");
        std::process::exit(2);
    };
    let checkouts: usize = checkouts.parse().expect("CHECKOUTS is a number");
    let buyers: usize = buyers.parse().expect("BUYERS is a number");
    let base = base.trim_end_matches('/').to_owned();

    let admin = Person::enter(
        &base,
        "/api/v1/auth/login",
        json!({"email": email, "password": password}),
    )
    .await;
    let r = admin
        .send(
            reqwest::Method::POST,
            format!("{base}/api/v1/products"),
            json!({"kind": "goods", "title": "Benchmark mug", "description": "", "category": "bench",
                   "tags": [], "variants": [{"sku": SKU, "name": "One", "price": {"amount": PRICE, "currency": "USD"}}]}),
        )
        .await;
    assert!(r.status().is_success(), "product: {}", r.status());
    let r = admin
        .send(
            reqwest::Method::POST,
            format!("{base}/api/v1/inventory/{SKU}/adjust"),
            json!({"delta": checkouts, "reason": "benchmark"}),
        )
        .await;
    assert!(r.status().is_success(), "stock: {}", r.status());

    let per_buyer = checkouts.div_ceil(buyers);
    let mut people = Vec::with_capacity(buyers);
    for i in 0..buyers {
        let person = Person::enter(
            &base,
            "/api/v1/auth/signup",
            json!({"email": format!("bench-{i}-{}@example.com", std::process::id()),
                   "display_name": "Bench", "password": "correct horse battery"}),
        )
        .await;
        let r = person
            .send(
                reqwest::Method::POST,
                format!("{base}/api/v1/wallet/topups"),
                json!({"amount": PRICE * per_buyer as i64}),
            )
            .await;
        assert!(r.status().is_success(), "top-up: {}", r.status());
        people.push(person);
    }

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, person) in people.into_iter().enumerate() {
        let base = base.clone();
        let mine = per_buyer.min(checkouts.saturating_sub(i * per_buyer));
        tasks.spawn(async move {
            let mut retries = 0usize;
            let mut placed = 0usize;
            while placed < mine {
                person
                    .send(
                        reqwest::Method::PATCH,
                        format!("{base}/api/v1/cart/items/{SKU}"),
                        json!({"quantity": 1}),
                    )
                    .await;
                let r = person
                    .client
                    .post(format!("{base}/api/v1/checkout"))
                    .header("x-csrf-token", &person.csrf)
                    .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                    .json(
                        &json!({"shipping_address": {"name": "Bench", "line1": "1 Road",
                        "city": "Town", "postal_code": "B1", "country": "GB"}}),
                    )
                    .send()
                    .await
                    .expect("answered");
                match r.status().as_u16() {
                    202 => placed += 1,
                    // The cart lost its line to an earlier order's clean-up, or too many
                    // checkouts of this buyer are pending: try again.
                    422 | 429 => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    other => panic!("checkout answered {other}"),
                }
            }
            retries
        });
    }
    let mut retries = 0;
    while let Some(r) = tasks.join_next().await {
        retries += r.expect("a buyer's task");
    }
    let placed_in = started.elapsed();
    // Until every order left pending (admins list everyone's): one pending order is
    // enough to wait on, so the poll stays light while the sagas run.
    loop {
        let page = admin
            .get_json(format!(
                "{base}/api/v1/orders?all=true&limit=1&status=pending"
            ))
            .await;
        if page["items"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let (confirmed, cancelled) = loop {
        let mut counts = Vec::new();
        for status in ["pending", "confirmed", "cancelled"] {
            let mut n = 0;
            let mut cursor = String::new();
            loop {
                let page = admin
                    .get_json(format!(
                        "{base}/api/v1/orders?all=true&limit=100&status={status}&cursor={cursor}"
                    ))
                    .await;
                n += page["items"].as_array().map_or(0, Vec::len);
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = next.to_owned(),
                    None => break,
                }
            }
            counts.push(n);
            if status == "pending" && n > 0 {
                break;
            }
        }
        if counts.len() == 3 {
            break (counts[1], counts[2]);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "{checkouts} checkouts by {buyers} buyers: placed in {:.2} s ({retries} retried), all sagas ended in {:.2} s: {confirmed} confirmed, {cancelled} cancelled: {:.0} checkouts/s end to end",
        placed_in.as_secs_f64(),
        elapsed.as_secs_f64(),
        confirmed as f64 / elapsed.as_secs_f64()
    );
}
