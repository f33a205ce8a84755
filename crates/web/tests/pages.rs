//! The site driven like a browser would: forms fetched, filled in and posted, cookies kept
//! between requests, against a real identity service on its own SQLite database.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{body::Body, Router};
use http::{header, HeaderMap, Request, StatusCode};
use rendermart_identity::{Identity, IdentityConfig};
use rendermart_identity_api::IdentityApi;
use rendermart_platform::{
    auth::{self, Authenticator, Credential},
    db::{DatabaseTarget, Db},
    ratelimit::{Limit, MemoryRateLimiter},
};
use rendermart_web::{fallback, router, WebConfig};
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery";

/// One browser on a fresh site: the router, the identity behind it, and a cookie jar.
struct Browser {
    app: Router,
    identity: Arc<Identity>,
    cookies: BTreeMap<String, String>,
    _data: Arc<tempfile::TempDir>,
}

/// What came back, body read as text.
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn location(&self) -> &str {
        self.header(header::LOCATION)
    }

    fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The value of the first hidden `csrf_token` field.
    fn csrf_token(&self) -> String {
        // The header's log-out form has one too: take the first in the page's content.
        let main = self.body.find("<main").unwrap_or(0);
        let start = r#"name="csrf_token" value=""#;
        let from = self.body[main..]
            .find(start)
            .map(|at| main + at + start.len())
            .expect("the page has a form with a csrf_token field");
        let len = self.body[from..].find('"').unwrap_or(0);
        self.body[from..from + len].to_owned()
    }

    fn between(&self, start: &str, end: &str) -> Option<String> {
        let from = self.body.find(start)? + start.len();
        let len = self.body[from..].find(end)?;
        Some(self.body[from..from + len].to_owned())
    }

    fn assert_html(&self) {
        assert_eq!(
            self.header(header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
    }
}

async fn site() -> Browser {
    site_with(IdentityConfig::default()).await
}

async fn site_with(config: IdentityConfig) -> Browser {
    let data = tempfile::tempdir().expect("temp dir");
    let db = Db::connect(
        &DatabaseTarget::SqliteDir(data.path().to_owned()),
        rendermart_identity_api::SERVICE,
    )
    .await
    .expect("sqlite");
    db.migrate(&rendermart_identity::MIGRATOR)
        .await
        .expect("migrations");
    let identity = Arc::new(
        Identity::new(db, Arc::new(MemoryRateLimiter::new()), config)
            .await
            .expect("identity"),
    );
    let authenticator: Arc<dyn Authenticator> = identity.clone();
    let app = router(
        identity.clone() as Arc<dyn IdentityApi>,
        WebConfig::default(),
    )
    .fallback(fallback())
    .layer(axum::middleware::from_fn_with_state(
        authenticator,
        auth::layer,
    ));
    Browser {
        app,
        identity,
        cookies: BTreeMap::new(),
        _data: Arc::new(data),
    }
}

fn form_encode(fields: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                b => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Browser {
    async fn send(&mut self, request: http::request::Builder, body: Body) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let request = if cookie.is_empty() {
            request
        } else {
            request.header(header::COOKIE, cookie)
        };
        let response = self
            .app
            .clone()
            .oneshot(request.body(body).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let page = Page {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).expect("utf-8 body"),
        };
        for set in page.set_cookies() {
            let pair = set.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if value.is_empty() || set.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Request::get(path), Body::empty()).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let request =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        self.send(request, Body::from(form_encode(fields))).await
    }

    /// Opens the sign-up form and sends it filled in.
    async fn sign_up(&mut self, email: &str, display_name: &str, password: &str) -> Page {
        let form = self.get("/signup").await;
        let token = form.csrf_token();
        self.post(
            "/signup",
            &[
                ("email", email),
                ("display_name", display_name),
                ("password", password),
                ("csrf_token", &token),
            ],
        )
        .await
    }

    /// Opens the log-in form (with `next`, if any) and sends it filled in.
    async fn log_in(&mut self, email: &str, password: &str, next: Option<&str>) -> Page {
        let form = self.get("/login").await;
        let token = form.csrf_token();
        let mut fields = vec![
            ("email", email),
            ("password", password),
            ("csrf_token", &token),
        ];
        if let Some(next) = next {
            fields.push(("next", next));
        }
        self.post("/login", &fields).await
    }

    /// A fresh browser on the same site (no cookies).
    fn another_browser(&self) -> Browser {
        Browser {
            app: self.app.clone(),
            identity: self.identity.clone(),
            cookies: BTreeMap::new(),
            _data: self._data.clone(),
        }
    }
}

#[tokio::test]
async fn signing_up_through_the_form_sets_a_session_and_redirects_to_the_account_page() {
    let mut browser = site().await;

    let form = browser.get("/signup").await;
    assert_eq!(form.status, StatusCode::OK);
    form.assert_html();
    assert_eq!(form.header(header::CACHE_CONTROL), "no-store");
    let csrf_cookie = form
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("rm_csrf="))
        .expect("the form sets its CSRF cookie")
        .to_owned();
    assert!(csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"));
    assert!(csrf_cookie.contains(&format!("rm_csrf={}", form.csrf_token())));
    for field in [
        r#"autocomplete="email""#,
        r#"autocomplete="new-password""#,
        r#"<label for="display_name">"#,
    ] {
        assert!(form.body.contains(field), "missing {field}");
    }

    let done = browser
        .sign_up("ada@example.com", "Ada Lovelace", PASSWORD)
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), "/account");
    let session = done
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("rm_session="))
        .expect("a session cookie")
        .to_owned();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax"));

    let account = browser.get("/account").await;
    assert_eq!(account.status, StatusCode::OK);
    account.assert_html();
    assert_eq!(account.header(header::CACHE_CONTROL), "no-store");
    assert!(account.body.contains("Ada Lovelace"));
    assert!(account.body.contains("ada@example.com"));
    assert!(account.body.contains("customer"));
    assert!(account.body.contains("Member since"));
    assert!(account.body.contains(r#"action="/logout""#));
}

#[tokio::test]
async fn a_form_post_without_the_csrf_cookie_is_refused() {
    let mut browser = site().await;
    let token = browser.get("/signup").await.csrf_token();
    let fields = |token| {
        [
            ("email", "mallory@example.com"),
            ("display_name", "Mallory"),
            ("password", PASSWORD),
            ("csrf_token", token),
        ]
    };

    // The token in the field, but no cookie: what a cross-site page would send.
    let mut stranger = browser.another_browser();
    let refused = stranger.post("/signup", &fields(&token)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    refused.assert_html();
    assert!(refused.body.contains("Reload the form"));
    assert!(refused
        .set_cookies()
        .iter()
        .all(|c| !c.starts_with("rm_session=")));

    // The cookie, but a field that does not match it; or no field at all.
    let refused = browser.post("/signup", &fields("not-the-token")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = browser
        .post(
            "/login",
            &[("email", "a@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // Nothing was created: the genuine form still signs this email up.
    let genuine = browser.post("/signup", &fields(&token)).await;
    assert_eq!(genuine.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_signed_in_form_without_the_session_token_is_refused() {
    let mut browser = site().await;
    browser.sign_up("ada@example.com", "Ada", PASSWORD).await;

    let forged = browser
        .post(
            "/account/tokens",
            &[("name", "stolen"), ("csrf_token", "guess")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    forged.assert_html();
    assert!(!browser.get("/account").await.body.contains("stolen"));

    let forged = browser.post("/logout", &[("csrf_token", "guess")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.get("/account").await.status, StatusCode::OK);
}

#[tokio::test]
async fn login_failure_says_the_same_for_unknown_email_and_wrong_password() {
    let mut ada = site().await;
    ada.sign_up("ada@example.com", "Ada", PASSWORD).await;

    let mut browser = ada.another_browser();
    let wrong_password = browser
        .log_in("ada@example.com", "not her password", None)
        .await;
    let unknown_email = browser.log_in("nobody@example.com", PASSWORD, None).await;

    for page in [&wrong_password, &unknown_email] {
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        page.assert_html();
        assert!(page.body.contains("Email or password is incorrect."));
        assert!(page
            .set_cookies()
            .iter()
            .all(|c| !c.starts_with("rm_session=")));
    }
    // The email typed is kept; apart from it, the two pages are identical.
    assert!(wrong_password.body.contains(r#"value="ada@example.com""#));
    assert!(unknown_email.body.contains(r#"value="nobody@example.com""#));
    assert_eq!(
        wrong_password.body.replace("ada@example.com", "EMAIL"),
        unknown_email.body.replace("nobody@example.com", "EMAIL"),
    );

    let ok = browser.log_in("ada@example.com", PASSWORD, None).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location(), "/account");
}

#[tokio::test]
async fn account_page_requires_a_session() {
    let mut ada = site().await;
    ada.sign_up("ada@example.com", "Ada", PASSWORD).await;
    let mut browser = ada.another_browser();

    let away = browser.get("/account").await;
    assert_eq!(away.status, StatusCode::SEE_OTHER);
    assert_eq!(away.location(), "/login?next=/account");
    let posted = browser.post("/account/tokens", &[("name", "x")]).await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER);
    assert_eq!(posted.location(), "/login?next=/account");

    // The log-in page carries `next` through to where the visitor wanted to go.
    let login = browser.get("/login?next=/account").await;
    assert!(login.body.contains(r#"name="next" value="/account""#));
    let token = login.csrf_token();
    let done = browser
        .post(
            "/login",
            &[
                ("email", "ada@example.com"),
                ("password", PASSWORD),
                ("csrf_token", &token),
                ("next", "/account"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), "/account");
    assert_eq!(browser.get("/account").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_new_token_secret_is_shown_once_and_revoking_it_removes_it() {
    let mut browser = site().await;
    browser.sign_up("ada@example.com", "Ada", PASSWORD).await;
    let account = browser.get("/account").await;
    assert!(account.body.contains("You have no API tokens yet."));
    let csrf = account.csrf_token();

    let created = browser
        .post(
            "/account/tokens",
            &[("name", "ci uploader"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK);
    created.assert_html();
    assert_eq!(created.header(header::CACHE_CONTROL), "no-store");
    assert!(created.body.contains("Copy it now"));
    assert!(created.body.contains("Never"), "not used yet");
    let secret = created
        .between(
            r#"<code class="secret" aria-label="Your new API token">"#,
            "</code>",
        )
        .expect("the secret is on the page");
    assert!(secret.starts_with("rmt_"));
    let works = |identity: Arc<Identity>, secret: String| async move {
        identity
            .authenticate(&Credential::Bearer(secret))
            .await
            .expect("authenticate")
            .is_some()
    };
    assert!(works(browser.identity.clone(), secret.clone()).await);

    // Listed by name and prefix from now on, never with its secret.
    let later = browser.get("/account").await;
    assert!(!later.body.contains(&secret));
    assert!(later.body.contains("ci uploader"));
    assert!(later.body.contains(&secret[..10]));
    assert!(later.body.contains("UTC</time>"), "last used is shown");

    let id = later
        .between(r#"action="/account/tokens/"#, "/revoke\"")
        .expect("a revoke form");
    let revoked = browser
        .post(
            &format!("/account/tokens/{id}/revoke"),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert_eq!(revoked.location(), "/account");
    let after = browser.get("/account").await;
    assert!(!after.body.contains("ci uploader"));
    assert!(after.body.contains("You have no API tokens yet."));
    assert!(!works(browser.identity.clone(), secret).await);

    // Revoking twice is harmless: the token is gone either way.
    let again = browser
        .post(
            &format!("/account/tokens/{id}/revoke"),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);

    // A token that never existed, or someone else's: a 404 page, and theirs keeps working.
    let mut bob = browser.another_browser();
    bob.sign_up("bob@example.com", "Bob", PASSWORD).await;
    let bob_csrf = bob.get("/account").await.csrf_token();
    let bobs = bob
        .post(
            "/account/tokens",
            &[("name", "bob's"), ("csrf_token", &bob_csrf)],
        )
        .await;
    let bobs_secret = bobs
        .between(
            r#"<code class="secret" aria-label="Your new API token">"#,
            "</code>",
        )
        .expect("bob's secret");
    let bobs_id = bobs
        .between(r#"action="/account/tokens/"#, "/revoke\"")
        .expect("bob's revoke form");
    for path in [
        format!("/account/tokens/{bobs_id}/revoke"),
        format!(
            "/account/tokens/{}/revoke",
            rendermart_platform::uuid::Uuid::now_v7()
        ),
        "/account/tokens/not-an-id/revoke".to_owned(),
    ] {
        let refused = browser.post(&path, &[("csrf_token", &csrf)]).await;
        assert_eq!(refused.status, StatusCode::NOT_FOUND, "{path}");
        refused.assert_html();
    }
    assert!(works(browser.identity.clone(), bobs_secret).await);
}

#[tokio::test]
async fn a_token_with_a_bad_name_is_refused_next_to_the_field() {
    let mut browser = site().await;
    browser.sign_up("ada@example.com", "Ada", PASSWORD).await;
    let csrf = browser.get("/account").await.csrf_token();
    let refused = browser
        .post("/account/tokens", &[("name", "   "), ("csrf_token", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains(r#"id="token-name-error""#));
    assert!(refused.body.contains("Name is required."));
    assert!(refused.body.contains(r#"aria-invalid="true""#));
}

#[tokio::test]
async fn logout_ends_the_session_server_side() {
    let mut browser = site().await;
    browser.sign_up("ada@example.com", "Ada", PASSWORD).await;
    let old_session = browser.cookies["rm_session"].clone();
    let csrf = browser.get("/account").await.csrf_token();

    let out = browser.post("/logout", &[("csrf_token", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/");
    assert!(out
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("rm_session=;") && c.contains("Max-Age=0")));
    assert!(!browser.cookies.contains_key("rm_session"));

    // Someone who kept a copy of the cookie gets nothing from it.
    let mut thief = browser.another_browser();
    thief.cookies.insert("rm_session".into(), old_session);
    let page = thief.get("/account").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/login?next=/account");
}

#[tokio::test]
async fn logging_in_again_replaces_the_previous_session() {
    let mut browser = site().await;
    browser.sign_up("ada@example.com", "Ada", PASSWORD).await;
    let first = browser.cookies["rm_session"].clone();

    let again = browser.log_in("ada@example.com", PASSWORD, None).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_ne!(browser.cookies["rm_session"], first);
    assert_eq!(browser.get("/account").await.status, StatusCode::OK);

    let mut old = browser.another_browser();
    old.cookies.insert("rm_session".into(), first);
    assert_eq!(old.get("/account").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn next_parameter_cannot_redirect_off_site() {
    let mut ada = site().await;
    ada.sign_up("ada@example.com", "Ada", PASSWORD).await;
    let mut browser = ada.another_browser();

    for evil in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "evil.example",
    ] {
        let page = browser
            .log_in("ada@example.com", PASSWORD, Some(evil))
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "next={evil:?}");
        assert_eq!(page.location(), "/account", "next={evil:?}");
    }
    let login = browser.get("/login?next=//evil.example/").await;
    assert!(!login.body.contains("evil.example"));

    let page = browser
        .log_in("ada@example.com", PASSWORD, Some("/account?tab=tokens"))
        .await;
    assert_eq!(page.location(), "/account?tab=tokens");
}

#[tokio::test]
async fn a_password_is_never_echoed_back() {
    let mut browser = site().await;
    let secret = "zebra-unicorn-9137";

    // Refused for its display name: email and name kept, password not.
    let refused = browser.sign_up("ada@example.com", "   ", secret).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    refused.assert_html();
    assert!(!refused.body.contains(secret));
    assert!(refused.body.contains(r#"value="ada@example.com""#));
    assert!(refused.body.contains("Display name is required."));
    assert!(refused
        .body
        .contains(r#"aria-describedby="display_name-hint display_name-error""#));

    // Refused for the password itself.
    let short = "tiny-pw1";
    let refused = browser.sign_up("ada@example.com", "Ada", short).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!refused.body.contains(short));
    assert!(refused.body.contains(r#"value="Ada""#));
    assert!(refused
        .body
        .contains("Password must be at least 10 characters."));
    assert!(refused.body.contains(r#"id="password-error""#));

    // A failed log-in.
    let failed = browser.log_in("ada@example.com", secret, None).await;
    assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    assert!(!failed.body.contains(secret));
}

#[tokio::test]
async fn signing_up_with_a_taken_email_offers_to_log_in() {
    let mut ada = site().await;
    ada.sign_up("ada@example.com", "Ada", PASSWORD).await;
    let mut browser = ada.another_browser();
    let taken = browser
        .sign_up("ADA@example.com", "Another Ada", PASSWORD)
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    taken.assert_html();
    assert!(taken.body.contains("already exists"));
    assert!(taken
        .body
        .contains(r#"<a href="/login">Log in instead</a>"#));
    assert!(taken.body.contains(r#"value="Another Ada""#));
}

#[tokio::test]
async fn too_many_attempts_get_a_429_page_with_retry_after() {
    let config = IdentityConfig {
        login_per_account_address: Limit {
            max: 2,
            window: Duration::from_secs(300),
        },
        ..IdentityConfig::default()
    };
    let mut browser = site_with(config).await;
    for _ in 0..2 {
        let page = browser
            .log_in("ada@example.com", "wrong password", None)
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    let limited = browser
        .log_in("ada@example.com", "wrong password", None)
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    limited.assert_html();
    let retry_after: u64 = limited
        .header(header::RETRY_AFTER)
        .parse()
        .expect("a Retry-After in seconds");
    assert!((1..=300).contains(&retry_after));
    assert!(limited.body.contains("Too many attempts"));
}

#[tokio::test]
async fn unknown_pages_get_an_html_404_and_unknown_api_paths_a_problem() {
    let mut browser = site().await;

    let page = browser.get("/no/such/page").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    page.assert_html();
    assert!(page.body.contains("Page not found"));
    assert!(page.body.contains(r#"href="/static/app.css""#));

    let api = browser.get("/api/v1/no-such-thing").await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert_eq!(api.header(header::CONTENT_TYPE), "application/problem+json");
    let problem: serde_json::Value = serde_json::from_str(&api.body).expect("json");
    assert_eq!(problem["type"], "/problems/not-found");
    assert_eq!(problem["status"], 404);
}

#[tokio::test]
async fn a_form_body_that_cannot_be_read_gets_an_html_error_not_a_500() {
    let mut browser = site().await;
    let token = browser.get("/login").await.csrf_token();
    let json = Request::post("/login").header(header::CONTENT_TYPE, "application/json");
    let page = browser
        .send(json, Body::from(format!(r#"{{"csrf_token":"{token}"}}"#)))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_html();

    let garbled = browser.post("/login", &[("email", "a@example.com")]).await;
    // Missing fields read as empty: the CSRF check answers, not a deserialiser.
    assert_eq!(garbled.status, StatusCode::FORBIDDEN);

    // A field sent twice cannot be read as one value.
    let page = browser
        .post(
            "/login",
            &[("email", "a@example.com"), ("email", "b@example.com")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    page.assert_html();
}

#[tokio::test]
async fn what_people_type_is_escaped() {
    let mut browser = site().await;
    let name = r#"<script>alert("x")</script>"#;
    browser.sign_up("ada@example.com", name, PASSWORD).await;
    let account = browser.get("/account").await;
    assert_eq!(account.status, StatusCode::OK);
    assert!(!account.body.contains("<script>"));
    assert!(account
        .body
        .contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
}

#[tokio::test]
async fn the_home_page_invites_visitors_in_and_members_on() {
    let mut browser = site().await;
    let home = browser.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    home.assert_html();
    assert!(home.body.contains("Turn prompts into pictures you own."));
    assert!(home.body.contains(r#"href="/signup""#));
    assert!(home.body.contains(r#"href="/login""#));
    assert!(!home.body.contains("Go to your account"));
    let csp = home.header(header::CONTENT_SECURITY_POLICY);
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("http"),
        "{csp}"
    );
    assert!(home
        .body
        .contains(r#"<script src="/static/live.js" defer></script>"#));
    for (href, label) in [("/studio", "Studio"), ("/market", "Market")] {
        assert!(home
            .body
            .contains(&format!(r#"<a href="{href}">{label}</a>"#)));
    }
    assert!(!home.body.contains(r#"href="/wallet""#), "members only");

    browser.sign_up("ada@example.com", "Ada", PASSWORD).await;
    let home = browser.get("/").await;
    assert!(home.body.contains("Go to your account"));
    assert!(home
        .body
        .contains("Signed in as </span><strong>Ada</strong>"));
    assert!(home.body.contains(r#"aria-current="page""#));
    for href in ["/wallet", "/offers"] {
        assert!(home.body.contains(&format!(r#"href="{href}""#)), "{href}");
    }
}

#[tokio::test]
async fn the_stylesheet_script_and_logo_are_served_from_the_binary() {
    let mut browser = site().await;
    let css = browser.get("/static/app.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.header(header::CONTENT_TYPE), "text/css; charset=utf-8");
    assert_eq!(css.header(header::CACHE_CONTROL), "public, max-age=3600");
    assert!(css.body.contains(".field-error"));

    let script = browser.get("/static/live.js").await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(
        script.header(header::CONTENT_TYPE),
        "text/javascript; charset=utf-8"
    );
    assert!(script.body.contains("EventSource"));

    let logo = browser.get("/static/logo.svg").await;
    assert_eq!(logo.status, StatusCode::OK);
    assert_eq!(logo.header(header::CONTENT_TYPE), "image/svg+xml");
    assert!(logo.body.starts_with("<svg"));
}
