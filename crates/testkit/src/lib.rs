//! Test helpers: spawn the real application on a random port against fresh backends, and
//! act on it the way a user or an API client does.
//!
//! Two stacks, chosen per test:
//! * [`Stack::Embedded`] — SQLite files in a temp dir, the in-process bus, in-memory rate
//!   limits. Always available.
//! * [`Stack::Distributed`] — a fresh PostgreSQL database, RabbitMQ and Redis, found through
//!   `RENDERMART_TEST_DATABASE_URL`, `RENDERMART_TEST_AMQP_URL` and
//!   `RENDERMART_TEST_REDIS_URL`. Without them the test says it skipped and passes, so
//!   plain `cargo test` works on a bare machine; CI sets them (and fails if a backend is
//!   down), so nothing is skipped there.
//!
//! [`stack_tests!`] writes each test once and runs it on both stacks.

use std::time::Duration;

use rendermart::{Application, Settings};
use rendermart_platform::shutdown::Shutdown;
use reqwest::{header, Client, Response, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};

/// Environment variables naming the test backends.
pub const DATABASE_URL_ENV: &str = "RENDERMART_TEST_DATABASE_URL";
pub const AMQP_URL_ENV: &str = "RENDERMART_TEST_AMQP_URL";
pub const REDIS_URL_ENV: &str = "RENDERMART_TEST_REDIS_URL";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    Embedded,
    Distributed,
}

/// The distributed backends' URLs, when this environment has them.
pub fn distributed_urls() -> Option<(String, String, String)> {
    Some((
        std::env::var(DATABASE_URL_ENV).ok()?,
        std::env::var(AMQP_URL_ENV).ok()?,
        std::env::var(REDIS_URL_ENV).ok()?,
    ))
}

/// A running application plus a client with its own cookie jar.
pub struct TestApp {
    pub address: String,
    /// The operations address (`http://…`), when the settings gave one (`ops_addr`).
    pub ops_address: Option<String>,
    pub stack: Stack,
    /// A client that keeps cookies, as a browser would.
    pub client: Client,
    pub settings: Settings,
    shutdown: Shutdown,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The temporary data directory it owns (none for [`TestApp::spawn_on`]).
    _data_dir: Option<tempfile::TempDir>,
    database: Option<FreshDatabase>,
    /// Bus consumers a test declared, whose queues are deleted with the app.
    consumers: std::sync::Mutex<Vec<String>>,
}

/// Test defaults: quiet logs, and per-IP limits high enough that a test creating many
/// users from 127.0.0.1 measures what it means to (tests of the limits set their own).
fn test_settings(data_dir: &std::path::Path) -> Settings {
    Settings {
        addr: "127.0.0.1:0".parse().expect("static address"),
        data_dir: data_dir.to_owned(),
        log_level: std::env::var("RENDERMART_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        ..Settings::default()
    }
    .with("identity.signup_per_ip.max", 10_000)
    .with("identity.login_per_ip.max", 10_000)
    // assert_wallet_ledger_sound reads the check's gauges.
    .with("wallet.ledger_check_secs", 1)
}

impl TestApp {
    /// Spawns the app on `stack`, or `None` (with a note on stderr) when the distributed
    /// backends are not configured here.
    pub async fn spawn(stack: Stack) -> Option<Self> {
        Self::spawn_with(stack, |_| {}).await
    }

    /// Like [`spawn`](Self::spawn), with a chance to adjust the settings first.
    pub async fn spawn_with(stack: Stack, adjust: impl FnOnce(&mut Settings)) -> Option<Self> {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut settings = test_settings(data_dir.path());
        let mut database = None;
        if stack == Stack::Distributed {
            let Some((pg, amqp, redis)) = distributed_urls() else {
                eprintln!(
                    "skipped on the distributed stack: set {DATABASE_URL_ENV}, {AMQP_URL_ENV} and {REDIS_URL_ENV} to run it"
                );
                return None;
            };
            let fresh = FreshDatabase::create(&pg).await;
            settings.database_url = Some(fresh.url.as_str().into());
            settings.bus = Some(amqp.as_str().into());
            settings.redis_url = Some(redis.as_str().into());
            settings.namespace = format!("rm_test_{}", uuid::Uuid::now_v7().simple());
            database = Some(fresh);
        }
        adjust(&mut settings);
        Some(Self::start(stack, settings, Some(data_dir), database).await)
    }

    /// The embedded app on `settings` as given (their data directory, e.g. one `rendermart
    /// seed` filled), on a free local port.
    pub async fn spawn_on(mut settings: Settings) -> Self {
        settings.addr = "127.0.0.1:0".parse().expect("static address");
        Self::start(Stack::Embedded, settings, None, None).await
    }

    async fn start(
        stack: Stack,
        settings: Settings,
        data_dir: Option<tempfile::TempDir>,
        database: Option<FreshDatabase>,
    ) -> Self {
        rendermart_platform::telemetry::init_logging(settings.log_format, &settings.log_level);
        let app = Application::build(settings.clone())
            .await
            .expect("the application builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let ops_address = app.ops_local_addr().map(|a| format!("http://{a}"));
        let shutdown = app.shutdown_handle();
        // The app's own consumers' queues go with it too.
        let consumers = app.consumer_names().to_vec();
        let server = tokio::spawn(app.run_until_stopped());
        Self {
            address,
            ops_address,
            stack,
            client: new_client(),
            settings,
            shutdown,
            server: Some(server),
            _data_dir: data_dir,
            database,
            consumers: std::sync::Mutex::new(consumers),
        }
    }

    /// Two processes' worth of RenderMart on `stack`, as a split deployment runs it: one
    /// app running `services` (e.g. `identity`), and a second running `front` (e.g. `web`)
    /// that reaches the first over HTTP (`<service>_url` for each of `services`), both with
    /// the same service secret. Returns (back, front).
    pub async fn spawn_split(stack: Stack, services: &[&str], front: &str) -> Option<(Self, Self)> {
        let secret = format!("test-secret-{}", uuid::Uuid::now_v7().simple());
        let back = Self::spawn_with(stack, |s| {
            s.services = services.join(",").parse().expect("service names");
            s.service_secret = Some(secret.clone().into());
        })
        .await?;
        let urls: Vec<(String, String)> = services
            .iter()
            .map(|name| (format!("{name}_url"), back.address.clone()))
            .collect();
        let front = Self::spawn_with(stack, |s| {
            s.services = front.parse().expect("service names");
            s.service_secret = Some(secret.clone().into());
            for (key, url) in &urls {
                s.set(key, url);
            }
        })
        .await?;
        Some((back, front))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A second, independent browser (its own cookies).
    pub fn new_client(&self) -> Client {
        new_client()
    }

    pub async fn post_json(&self, client: &Client, path: &str, body: &Value) -> Response {
        client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn signup(
        &self,
        client: &Client,
        email: &str,
        name: &str,
        password: &str,
    ) -> Response {
        self.post_json(
            client,
            "/api/v1/auth/signup",
            &json!({ "email": email, "display_name": name, "password": password }),
        )
        .await
    }

    pub async fn login(&self, client: &Client, email: &str, password: &str) -> Response {
        self.post_json(
            client,
            "/api/v1/auth/login",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Signs up a new user in a fresh client and returns them signed in.
    pub async fn signed_up_user(&self) -> User {
        let client = self.new_client();
        let email = format!("user-{}@example.com", uuid::Uuid::now_v7().simple());
        let password = "correct horse battery".to_owned();
        let response = self.signup(&client, &email, "Test User", &password).await;
        assert_eq!(response.status(), StatusCode::CREATED, "sign-up failed");
        let body: Value = response.json().await.expect("json body");
        User {
            client,
            email,
            password,
            id: body["user"]["id"].as_str().expect("user id").to_owned(),
            csrf_token: body["csrf_token"].as_str().expect("csrf token").to_owned(),
        }
    }

    /// Tops up `user`'s wallet by `amount` minor units through the test provider.
    pub async fn top_up(&self, user: &User, amount: i64) {
        let response = user
            .client
            .post(self.url("/api/v1/wallet/topups"))
            .header("x-csrf-token", &user.csrf_token)
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .json(&json!({ "amount": amount }))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::CREATED, "top-up failed");
    }

    /// A signed-in administrator: a new user given the admin role in identity's database
    /// (as `rendermart admin create` would make one), then logged in afresh.
    pub async fn admin_user(&self) -> User {
        self.user_with_roles("customer,admin").await
    }

    /// A signed-in seller: a new user given the roles `customer,seller` in identity's
    /// database, then logged in afresh.
    pub async fn seller_user(&self) -> User {
        self.user_with_roles("customer,seller").await
    }

    /// A new user whose roles are set to `roles` (comma-separated) in identity's database,
    /// logged in afresh so their session carries them.
    async fn user_with_roles(&self, roles: &str) -> User {
        let user = self.signed_up_user().await;
        let target = rendermart_platform::db::DatabaseTarget::from_config(
            self.settings.database_url.as_ref().map(|u| u.expose()),
            &self.settings.data_dir,
        )
        .expect("database target");
        let db = rendermart_platform::db::Db::connect(&target, "identity")
            .await
            .expect("identity database");
        let mut conn = db.pool().acquire().await.expect("a connection");
        sqlx::query("UPDATE users SET roles = $1 WHERE id = $2")
            .bind(roles)
            .bind(&user.id)
            .execute(&mut *conn)
            .await
            .expect("roles set");
        drop(conn);
        db.close().await;
        let client = self.new_client();
        let response = self.login(&client, &user.email, &user.password).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "log-in with {roles} failed"
        );
        let body: Value = response.json().await.expect("json body");
        let last = roles.rsplit(',').next().unwrap_or(roles);
        assert!(body["user"]["roles"].to_string().contains(last), "{body}");
        User {
            client,
            csrf_token: body["csrf_token"].as_str().expect("csrf token").to_owned(),
            ..user
        }
    }

    /// Creates an API token for `user` and returns its secret.
    pub async fn api_token(&self, user: &User, name: &str) -> (String, String) {
        let response = user
            .client
            .post(self.url("/api/v1/tokens"))
            .header("x-csrf-token", &user.csrf_token)
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("request sent");
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "token creation failed"
        );
        let body: Value = response.json().await.expect("json");
        (
            body["id"].as_str().expect("id").to_owned(),
            body["token"].as_str().expect("token").to_owned(),
        )
    }

    /// `GET path` with a bearer token and no cookies.
    pub async fn get_with_token(&self, path: &str, token: &str) -> Response {
        Client::new()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// Declares that the test subscribed `consumer` on this app's bus, so its queues are
    /// removed from the broker when the app is dropped.
    pub fn track_consumer(&self, consumer: &str) {
        if let Ok(mut c) = self.consumers.lock() {
            c.push(consumer.to_owned());
        }
    }

    /// Asserts the wallet's ledger check reports a sound ledger, after giving the checker
    /// (run every second in test apps) time to see every movement.
    pub async fn assert_wallet_ledger_sound(&self) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let metrics = self
            .new_client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics answered")
            .text()
            .await
            .expect("metrics text");
        assert!(metrics.contains("wallet_ledger_imbalance 0"), "{metrics}");
        assert!(
            metrics.contains("wallet_accounts_out_of_step 0"),
            "{metrics}"
        );
        assert!(metrics.contains("wallet_holds_out_of_step 0"), "{metrics}");
    }

    /// Stops the app gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(db) = self.database.take() {
            db.drop_blocking();
        }
        if let Some(url) = self.settings.bus.clone() {
            let consumers = self.consumers.lock().map(|c| c.clone()).unwrap_or_default();
            delete_bus_objects(
                url.expose().to_owned(),
                self.settings.namespace.clone(),
                consumers,
            );
        }
    }
}

/// Best-effort removal of a test namespace's exchanges and queues from RabbitMQ, for the
/// named consumers; bounded in time.
pub fn delete_bus_objects(url: String, namespace: String, consumers: Vec<String>) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let handle = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        // Bounded: a broker that stops answering must not hang the test run.
        let cleanup = async {
            let Ok(conn) =
                lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await
            else {
                return;
            };
            if let Ok(channel) = conn.create_channel().await {
                let exchange = format!("{namespace}.events");
                for consumer in &consumers {
                    for suffix in ["", ".retry", ".dlq", ".bindings"] {
                        let queue = format!("{exchange}.{consumer}{suffix}");
                        let _ = channel
                            .queue_delete(&queue, QueueDeleteOptions::default())
                            .await;
                    }
                }
                for name in [exchange.clone(), format!("{exchange}.dlx")] {
                    let _ = channel
                        .exchange_delete(&name, ExchangeDeleteOptions::default())
                        .await;
                }
            }
            let _ = conn.close(0, "test done").await;
        };
        rt.block_on(async {
            if tokio::time::timeout(Duration::from_secs(20), cleanup)
                .await
                .is_err()
            {
                eprintln!("RabbitMQ did not answer the cleanup of {namespace} within 20 s");
            }
        });
    });
    let _ = handle.join();
}

/// A user signed in through the API, with their browser-like client.
pub struct User {
    pub client: Client,
    pub email: String,
    pub password: String,
    pub id: String,
    pub csrf_token: String,
}

fn new_client() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// Asserts a response is an RFC 9457 problem with `status`, and returns its body.
pub async fn assert_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "content type {content_type:?} is not problem+json"
    );
    let body: Value = response.json().await.expect("problem body is json");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("/problems/")),
        "{body}"
    );
    assert!(body["title"].is_string(), "{body}");
    body
}

/// A PostgreSQL database made for one test, dropped afterwards.
struct FreshDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl FreshDatabase {
    async fn create(admin_url: &str) -> Self {
        let name = format!("rm_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = PgConnection::connect(admin_url)
            .await
            .expect("PostgreSQL reachable at RENDERMART_TEST_DATABASE_URL");
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .expect("create test database");
        let _ = conn.close().await;
        Self {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        }
    }

    fn drop_blocking(self) {
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                // The app's pools may still be connecting as it goes away, and a connection
                // that arrives during the drop fails it: try again a few times.
                let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
                let mut last = String::new();
                for _ in 0..10 {
                    match PgConnection::connect(&self.admin_url).await {
                        Ok(mut conn) => match conn.execute(drop.as_str()).await {
                            Ok(_) => return,
                            Err(e) => last = e.to_string(),
                        },
                        Err(e) => last = e.to_string(),
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                eprintln!("could not drop test database {}: {last}", self.name);
            });
        });
        let _ = handle.join();
    }
}

/// The admin URL with its database path replaced by `name`.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
}

/// Writes each test once and runs it on both stacks, as `embedded::name` and
/// `distributed::name`.
///
/// ```ignore
/// stack_tests! {
///     async fn a_rule_holds(app) {
///         let user = app.signed_up_user().await;
///         ...
///     }
/// }
/// ```
/// Runs each `async fn rule(stack: Stack)` of the calling module as `embedded::rule` and
/// `distributed::rule` (for rules that build their own app, e.g. with settings):
///
/// ```ignore
/// rendermart_testkit::on_both_stacks!(a_rule_holds, another_rule_holds);
/// async fn a_rule_holds(stack: Stack) { let Some(app) = TestApp::spawn(stack).await else { return }; … }
/// ```
#[macro_export]
macro_rules! on_both_stacks {
    ($($rule:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $rule() {
                    super::$rule($crate::Stack::Embedded).await
                }
            )*
        }
        mod distributed {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $rule() {
                    super::$rule($crate::Stack::Distributed).await
                }
            )*
        }
    };
}

#[macro_export]
macro_rules! stack_tests {
    ($( $(#[$meta:meta])* async fn $name:ident($app:ident) $body:block )*) => {
        mod embedded {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some($app) = $crate::TestApp::spawn($crate::Stack::Embedded).await else { return };
                    super::$name($app).await
                }
            )*
        }
        mod distributed {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some($app) = $crate::TestApp::spawn($crate::Stack::Distributed).await else { return };
                    super::$name($app).await
                }
            )*
        }
        $(
            async fn $name($app: $crate::TestApp) $body
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_swapped_in_the_admin_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
        assert_eq!(
            with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }
}
