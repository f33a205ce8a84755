//! `rendermart seed`: fills a RenderMart with a living demo — people with credits,
//! generated images, listings, past sales (a resale with its royalty among them), open
//! offers and a counter-offer — and the store's demo catalog (a bookstore and a print
//! shop, [`catalog_demo`]: over 200 products with variants and stock), with a progress bar
//! on standard error.
//!
//! It starts the application in this process on a free local port and does everything as
//! people would, through the public API, so the demo is exactly what the product makes
//! (held and captured credits, fees, royalties, owner histories, stock adjustments with
//! their audit trail). The one exception is the store's account, an administrator (who
//! alone may adjust stock), made the way `rendermart create-admin` makes one.
//!
//! It is idempotent: run it again and it adds nothing and succeeds. The marketplace part
//! is skipped when its first person exists; a demo product whose SKUs exist is skipped,
//! and a SKU of it inventory has never stocked is stocked (a run cut short finishes).
//! Every demo account signs in with [`DEMO_PASSWORD`]: seed demos, not production.

pub mod catalog_demo;

use std::{io::Write, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{Application, Settings};

/// The store's account: it sells the demo catalog and stocks it (an administrator).
pub const STORE_ACCOUNT: (&str, &str) = ("store@demo.rendermart.test", "RenderMart Store");

/// The demo's people: (email, display name). They all sign in with [`DEMO_PASSWORD`].
pub const PEOPLE: [(&str, &str); 4] = [
    ("ada@demo.rendermart.test", "Ada"),
    ("grace@demo.rendermart.test", "Grace"),
    ("linus@demo.rendermart.test", "Linus"),
    ("margaret@demo.rendermart.test", "Margaret"),
];
pub const DEMO_PASSWORD: &str = "demo password 1234";

/// Three prompts per person.
const PROMPTS: [[&str; 3]; 4] = [
    [
        "a lighthouse at dusk over a calm ocean",
        "a fox in fresh snow under pine trees",
        "a quiet harbour at dawn with red boats",
    ],
    [
        "a desert city at noon with golden domes",
        "a forest waterfall in spring mist",
        "a night market under paper lanterns",
    ],
    [
        "a mountain lake at sunrise with one canoe",
        "a storm over wheat fields at dusk",
        "a garden of tulips beside a windmill",
    ],
    [
        "an orbiting station above a blue planet",
        "a rainy street at night with neon signs",
        "a coral reef with turtles in clear water",
    ],
];

/// What `run` made (all 0 but `products_existing` on a second run).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seeded {
    pub people: usize,
    pub images: usize,
    pub listings: usize,
    pub sales: usize,
    pub offers: usize,
    /// Demo products created by this run.
    pub products: usize,
    /// Demo products that were there already (skipped).
    pub products_existing: usize,
    /// SKUs stocked by this run.
    pub skus_stocked: usize,
}

/// Seeds the deployment `settings` describe. `progress` gets the bar (standard error).
pub async fn run(settings: Settings, progress: &mut dyn Write) -> anyhow::Result<Seeded> {
    let mut settings = settings;
    settings.addr = "127.0.0.1:0".parse().context("local address")?;
    settings.ops_addr = None;
    // The seeder signs everyone up from one address, and generates many images at once.
    settings.set("identity.signup_per_ip.max", 1_000);
    settings.set("identity.login_per_ip.max", 1_000);
    settings.set("studio.per_user_active_jobs", 10);
    let app = Application::build(settings.clone()).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());
    let result = match ensure_store_account(&settings).await {
        Ok(()) => Seeder::new(base, progress).seed().await,
        Err(e) => Err(e),
    };
    shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
    result
}

/// Makes the store's administrator account unless it exists (the schema is migrated: the
/// application was built).
async fn ensure_store_account(settings: &Settings) -> anyhow::Result<()> {
    use rendermart_platform::db::{DatabaseTarget, Db};
    let target = DatabaseTarget::from_config(
        settings.database_url.as_ref().map(|u| u.expose()),
        &settings.data_dir,
    )?;
    let db = Db::connect(&target, rendermart_identity_api::SERVICE).await?;
    let config = settings
        .section(rendermart_identity_api::SERVICE)
        .map_err(|e| anyhow::anyhow!("identity settings: {e}"))?;
    let limiter = Arc::new(rendermart_platform::ratelimit::MemoryRateLimiter::new());
    let identity = rendermart_identity::Identity::new(db.clone(), limiter, config).await?;
    let made = identity
        .create_admin(STORE_ACCOUNT.0, STORE_ACCOUNT.1, DEMO_PASSWORD)
        .await;
    db.close().await;
    match made {
        Ok(_) | Err(rendermart_identity_api::IdentityError::EmailTaken) => Ok(()),
        Err(e) => bail!("making the store's account: {e}"),
    }
}

struct Person {
    client: reqwest::Client,
    csrf: String,
}

struct Seeder<'a> {
    base: String,
    progress: &'a mut dyn Write,
    done: usize,
    total: usize,
}

impl<'a> Seeder<'a> {
    fn new(base: String, progress: &'a mut dyn Write) -> Self {
        Self {
            base,
            progress,
            done: 0,
            total: 0,
        }
    }

    /// Advances the bar by one step, saying what is happening.
    fn step(&mut self, what: &str) {
        self.done += 1;
        let width = 30;
        let filled = (self.done * width) / self.total.max(1);
        let _ = write!(
            self.progress,
            "\r[{}{}] {:>3}/{} {:<40}",
            "#".repeat(filled),
            "-".repeat(width - filled.min(width)),
            self.done,
            self.total,
            what
        );
        let _ = self.progress.flush();
    }

    async fn call(
        &self,
        who: &Person,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self.send(who, method.clone(), path, body).await?;
        if !status.is_success() {
            bail!("{method} {path}: {status} {answer}");
        }
        Ok(answer)
    }

    /// One request, its status and JSON answer (`Null` when there is none).
    async fn send(
        &self,
        who: &Person,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = who
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .header("x-csrf-token", &who.csrf)
            .header("idempotency-key", uuid::Uuid::now_v7().to_string());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        Ok((status, answer))
    }

    async fn post(&self, who: &Person, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(who, reqwest::Method::POST, path, Some(body))
            .await
    }

    async fn get(&self, who: &Person, path: &str) -> anyhow::Result<Value> {
        self.call(who, reqwest::Method::GET, path, None).await
    }

    /// Signs `email` up; `None` when the account exists.
    async fn sign_up(&self, email: &str, name: &str) -> anyhow::Result<Option<Person>> {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let response = client
            .post(format!("{}/api/v1/auth/signup", self.base))
            .json(&json!({"email": email, "display_name": name, "password": DEMO_PASSWORD}))
            .send()
            .await?;
        if response.status() == StatusCode::CONFLICT {
            return Ok(None);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("signing up {email}: {status} {body}");
        }
        let csrf = body["csrf_token"].as_str().unwrap_or_default().to_owned();
        Ok(Some(Person { client, csrf }))
    }

    async fn log_in(&self, email: &str) -> anyhow::Result<Person> {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let response = client
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&json!({"email": email, "password": DEMO_PASSWORD}))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("logging in {email}: {status} {body}");
        }
        let csrf = body["csrf_token"].as_str().unwrap_or_default().to_owned();
        Ok(Person { client, csrf })
    }

    async fn seed(mut self) -> anyhow::Result<Seeded> {
        let mut seeded = Seeded::default();
        let demo = catalog_demo::products();
        // The marketplace is there when its first person is.
        let first = self.sign_up(PEOPLE[0].0, PEOPLE[0].1).await?;
        let images = PROMPTS.iter().map(|p| p.len()).sum::<usize>();
        // People, top-ups, images, listings, sales, the resale, offers; then products.
        let market_steps = PEOPLE.len() * 2 + images + 8 + 3 + 2 + 3;
        self.total = demo.len() + if first.is_some() { market_steps } else { 0 };
        if let Some(first) = first {
            self.seed_market(first, &mut seeded).await?;
        }
        self.seed_catalog(&demo, &mut seeded).await?;
        let _ = writeln!(self.progress);
        Ok(seeded)
    }

    /// The store's demo products, each skipped when its SKUs exist, and their stock.
    async fn seed_catalog(
        &mut self,
        demo: &[catalog_demo::DemoProduct],
        seeded: &mut Seeded,
    ) -> anyhow::Result<()> {
        let store = self.log_in(STORE_ACCOUNT.0).await?;
        for product in demo {
            let variants: Vec<Value> = product
                .variants
                .iter()
                .map(|v| {
                    let options: serde_json::Map<String, Value> = v
                        .options
                        .iter()
                        .map(|(k, val)| ((*k).to_owned(), json!(val)))
                        .collect();
                    json!({"sku": v.sku, "name": v.name, "options": options, "price": {"amount": v.price, "currency": "USD"}})
                })
                .collect();
            let body = json!({
                "kind": product.kind,
                "title": product.title,
                "description": product.description,
                "category": product.category,
                "tags": product.tags,
                "variants": variants,
            });
            let (status, answer) = self
                .send(
                    &store,
                    reqwest::Method::POST,
                    "/api/v1/products",
                    Some(body),
                )
                .await?;
            let created = match status {
                StatusCode::CREATED => true,
                // Its SKUs exist: made by an earlier run.
                StatusCode::CONFLICT
                    if answer["type"].as_str().unwrap_or("").ends_with("sku-taken") =>
                {
                    false
                }
                _ => bail!("POST /api/v1/products: {status} {answer}"),
            };
            if created {
                seeded.products += 1;
            } else {
                seeded.products_existing += 1;
            }
            for v in product.variants.iter().filter(|v| v.stock > 0) {
                if !created {
                    let (status, _) = self
                        .send(
                            &store,
                            reqwest::Method::GET,
                            &format!("/api/v1/inventory/{}", v.sku),
                            None,
                        )
                        .await?;
                    if status != StatusCode::NOT_FOUND {
                        continue;
                    }
                }
                self.post(
                    &store,
                    &format!("/api/v1/inventory/{}/adjust", v.sku),
                    json!({"delta": v.stock, "reason": "demo stock (rendermart seed)"}),
                )
                .await?;
                seeded.skus_stocked += 1;
            }
            let title: String = product.title.chars().take(30).collect();
            self.step(&format!(
                "{} {title}",
                if created { "Listed" } else { "Had" }
            ));
        }
        Ok(())
    }

    /// The marketplace demo, `first` being its first person, just signed up.
    async fn seed_market(&mut self, first: Person, seeded: &mut Seeded) -> anyhow::Result<()> {
        let mut people = Vec::new();
        let mut first = Some(first);
        for (email, name) in PEOPLE {
            let person = match first.take() {
                Some(person) => person,
                None => self.sign_up(email, name).await?.with_context(|| {
                    format!("{email} exists but {} did not: an earlier seed was cut short; seed an empty data directory", PEOPLE[0].0)
                })?,
            };
            self.step(&format!("Signed up {name}"));
            self.post(&person, "/api/v1/wallet/topups", json!({"amount": 50_000}))
                .await?;
            self.step(&format!("Topped up {name}'s wallet"));
            people.push(person);
        }
        seeded.people = people.len();

        // Images: queued for everyone, then waited for.
        let mut jobs = Vec::new();
        for (who, prompts) in PROMPTS.iter().enumerate() {
            for (i, prompt) in prompts.iter().enumerate() {
                let job = self
                    .post(
                        &people[who],
                        "/api/v1/generations",
                        json!({"prompt": prompt, "width": 768, "height": 768, "seed": 7 + i}),
                    )
                    .await?;
                jobs.push((who, job["id"].as_str().unwrap_or_default().to_owned()));
            }
        }
        let mut assets: Vec<Vec<String>> = vec![Vec::new(); people.len()];
        for (who, id) in &jobs {
            self.wait_for_asset(&people[*who], id).await?;
            assets[*who].push(id.clone());
            self.step("Generated an image");
        }
        seeded.images = jobs.len();

        // Two listings each.
        let mut listings: Vec<Vec<String>> = vec![Vec::new(); people.len()];
        for (who, owned) in assets.iter().enumerate() {
            for (i, asset) in owned.iter().take(2).enumerate() {
                let price = 1_500 + 750 * (who as i64) + 500 * (i as i64);
                let listing = self
                    .post(
                        &people[who],
                        "/api/v1/listings",
                        json!({"asset_id": asset, "price": price}),
                    )
                    .await?;
                listings[who].push(listing["id"].as_str().unwrap_or_default().to_owned());
                self.step("Listed an image");
            }
        }
        seeded.listings = 8;

        // Past sales: Grace buys from Ada, Linus from Grace, Margaret from Linus.
        for (buyer, seller) in [(1, 0), (2, 1), (3, 2)] {
            let listing = &listings[seller][0];
            self.post(
                &people[buyer],
                &format!("/api/v1/listings/{listing}/buy"),
                json!({}),
            )
            .await?;
            self.step("A sale");
        }
        seeded.sales = 3;
        // A resale: Grace lists Ada's image again and Margaret buys it; Ada earns a royalty.
        let resale = self
            .post(
                &people[1],
                "/api/v1/listings",
                json!({"asset_id": assets[0][0], "price": 4_000}),
            )
            .await?;
        self.step("A resale listed");
        let resale = resale["id"].as_str().unwrap_or_default().to_owned();
        self.post(
            &people[3],
            &format!("/api/v1/listings/{resale}/buy"),
            json!({}),
        )
        .await?;
        self.step("A resale, with the creator's royalty");
        seeded.sales += 1;
        seeded.listings += 1;

        // Offers: open ones waiting for answers, and one countered.
        let open = [(0, 3, 1), (3, 0, 1)];
        for (buyer, seller, i) in open {
            let listing = &listings[seller][i];
            self.post(
                &people[buyer],
                &format!("/api/v1/listings/{listing}/offers"),
                json!({"amount": 1_200, "expires_in": 7 * 24 * 3600}),
            )
            .await?;
            self.step("An offer");
        }
        let listing = &listings[1][1];
        let offer = self
            .post(
                &people[2],
                &format!("/api/v1/listings/{listing}/offers"),
                json!({"amount": 1_000, "expires_in": 7 * 24 * 3600}),
            )
            .await?;
        let offer = offer["id"].as_str().unwrap_or_default().to_owned();
        self.post(
            &people[1],
            &format!("/api/v1/offers/{offer}/counter"),
            json!({"amount": 2_000, "expires_in": 7 * 24 * 3600}),
        )
        .await?;
        self.step("A counter-offer");
        seeded.offers = 3;
        Ok(())
    }

    async fn wait_for_asset(&self, who: &Person, id: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let job = self.get(who, &format!("/api/v1/generations/{id}")).await?;
            match job["status"].as_str() {
                Some("failed") => bail!("a demo image failed: {}", job["error"]),
                Some("succeeded")
                    if self.get(who, &format!("/api/v1/assets/{id}")).await.is_ok() =>
                {
                    return Ok(())
                }
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                bail!("a demo image took more than two minutes");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
