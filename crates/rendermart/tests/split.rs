//! Identity and web in two processes, as a split deployment runs them: the web process
//! reaches identity only through `RemoteIdentity` over identity's internal routes. Each
//! test runs on both stacks; the processes are two `Application`s here (see process.rs for
//! the same with real binaries).

use std::time::{Duration, Instant};

use rendermart_identity_api::{
    ClientMeta, IdentityApi, IdentityError, LogIn, RemoteIdentity, SignUp,
};
use rendermart_platform::{
    auth::{AuthCache, Authenticator, Credential},
    client::{ClientOptions, ServiceClient},
    internal::ServiceCredential,
};
use rendermart_testkit::{Stack, TestApp};
use reqwest::{header, Client, StatusCode};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";
const STACKS: [Stack; 2] = [Stack::Embedded, Stack::Distributed];

fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::now_v7().simple())
}

/// The value of the first hidden `csrf_token` field in the page's main content.
fn csrf_field(html: &str) -> String {
    let main = html.find("<main").unwrap_or(0);
    let marker = r#"name="csrf_token" value=""#;
    let from = main + html[main..].find(marker).expect("a form with a csrf_token") + marker.len();
    let len = html[from..].find('"').unwrap_or(0);
    html[from..from + len].to_owned()
}

async fn page(client: &Client, url: String) -> (StatusCode, String) {
    let response = client.get(url).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn post_form(client: &Client, url: String, fields: &[(&str, &str)]) -> reqwest::Response {
    client.post(url).form(fields).send().await.unwrap()
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Signs up through the web process's form; returns the browser.
async fn sign_up_on_the_site(web: &TestApp, email: &str) -> Client {
    let browser = web.new_client();
    let (status, form) = page(&browser, web.url("/signup")).await;
    assert_eq!(status, StatusCode::OK);
    let token = csrf_field(&form);
    let done = post_form(
        &browser,
        web.url("/signup"),
        &[
            ("email", email),
            ("display_name", "Remote Ada"),
            ("password", PASSWORD),
            ("csrf_token", &token),
        ],
    )
    .await;
    assert_eq!(
        done.status(),
        StatusCode::SEE_OTHER,
        "{}",
        done.text().await.unwrap()
    );
    assert_eq!(location(&done), "/account");
    browser
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_works_through_a_remote_identity() {
    for stack in STACKS {
        let Some((identity, web)) = TestApp::spawn_split(stack, &["identity"], "web").await else {
            continue;
        };
        let email = unique_email("remote");
        let browser = sign_up_on_the_site(&web, &email).await;

        // The account page, rendered by web from what identity says.
        let (status, account) = page(&browser, web.url("/account")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            account.contains("Remote Ada") && account.contains(&email),
            "{account}"
        );

        // A token created and revoked through the web process exists in identity.
        let csrf = csrf_field(&account);
        let created = post_form(
            &browser,
            web.url("/account/tokens"),
            &[("name", "laptop"), ("csrf_token", &csrf)],
        )
        .await;
        assert_eq!(created.status(), StatusCode::OK);
        let created = created.text().await.unwrap();
        let start = created.find("rmt_").expect("the new secret is shown once");
        let secret: String = created[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        let me = identity.get_with_token("/api/v1/me", &secret).await;
        assert_eq!(me.status(), StatusCode::OK);
        let token_id = created
            .split("/account/tokens/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("a revoke form")
            .to_owned();
        let revoked = post_form(
            &browser,
            web.url(&format!("/account/tokens/{token_id}/revoke")),
            &[("csrf_token", &csrf)],
        )
        .await;
        assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            identity
                .get_with_token("/api/v1/me", &secret)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );

        // Log out, log in with a wrong then the right password, all through web.
        let out = post_form(&browser, web.url("/logout"), &[("csrf_token", &csrf)]).await;
        assert_eq!(out.status(), StatusCode::SEE_OTHER);
        let after = browser.get(web.url("/account")).send().await.unwrap();
        assert_eq!(location(&after), "/login?next=/account");
        let (_, login) = page(&browser, web.url("/login")).await;
        let token = csrf_field(&login);
        let wrong = post_form(
            &browser,
            web.url("/login"),
            &[
                ("email", &email),
                ("password", "not the password"),
                ("csrf_token", &token),
            ],
        )
        .await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let right = post_form(
            &browser,
            web.url("/login"),
            &[
                ("email", &email),
                ("password", PASSWORD),
                ("csrf_token", &token),
            ],
        )
        .await;
        assert_eq!(right.status(), StatusCode::SEE_OTHER);
        let (status, account) = page(&browser, web.url("/account")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(account.contains("Remote Ada"));

        // Web's readiness includes identity.
        let ready: Value = reqwest::get(web.url("/readyz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            ready["ok"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "remote:identity"),
            "{ready}"
        );
    }
}

/// A cookie's value from a response's `Set-Cookie` headers.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// Signs up through web's form keeping cookies by hand; returns the session cookie value.
async fn sign_up_by_hand(web: &TestApp, email: &str) -> String {
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = client.get(web.url("/signup")).send().await.unwrap();
    let csrf_cookie = set_cookie(&form, "rm_csrf").expect("the form sets its CSRF cookie");
    let token = csrf_field(&form.text().await.unwrap());
    let done = client
        .post(web.url("/signup"))
        .header(header::COOKIE, format!("rm_csrf={csrf_cookie}"))
        .form(&[
            ("email", email),
            ("display_name", "Ended"),
            ("password", PASSWORD),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    set_cookie(&done, "rm_session").expect("signed in")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_in_identity_stops_working_in_web_within_a_second() {
    for stack in STACKS {
        let Some((identity, web)) = TestApp::spawn_split(stack, &["identity"], "web").await else {
            continue;
        };
        let session = sign_up_by_hand(&web, &unique_email("ended")).await;
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let account = |client: Client| {
            let (url, cookie) = (web.url("/account"), format!("rm_session={session}"));
            async move {
                client
                    .get(url)
                    .header(header::COOKIE, cookie)
                    .send()
                    .await
                    .unwrap()
            }
        };
        let first = account(client.clone()).await;
        assert_eq!(first.status(), StatusCode::OK);
        let csrf = csrf_field(&first.text().await.unwrap());
        // Ended in identity (its own API, another process), not through web.
        let logout = client
            .post(identity.url("/api/v1/auth/logout"))
            .header(header::COOKIE, format!("rm_session={session}"))
            .header("x-csrf-token", &csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(logout.status(), StatusCode::NO_CONTENT);
        let ended_at = Instant::now();
        loop {
            let response = account(client.clone()).await;
            if response.status() == StatusCode::SEE_OTHER {
                break;
            }
            assert_eq!(response.status(), StatusCode::OK);
            assert!(
                ended_at.elapsed() < Duration::from_secs(1),
                "the ended session still worked in web after {:?}",
                ended_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!(
            "{stack:?}: a session ended in identity was refused by web after {:?}",
            ended_at.elapsed()
        );
    }
}

/// Identity's client over HTTP, as another process builds it.
fn remote_identity(identity: &TestApp) -> RemoteIdentity {
    let secret = identity
        .settings
        .service_secret
        .clone()
        .expect("a split app has a secret");
    let client = ServiceClient::new(
        "identity",
        &identity.address,
        ServiceCredential::new("test", &secret),
        ClientOptions::default(),
    )
    .unwrap();
    RemoteIdentity::new(
        client,
        std::sync::Arc::new(AuthCache::new(Duration::from_millis(500), 100)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_in_identity_stops_authenticating_remotely_within_a_second() {
    for stack in STACKS {
        let Some((identity, _web)) = TestApp::spawn_split(stack, &["identity"], "web").await else {
            continue;
        };
        let remote = remote_identity(&identity);
        let user = identity.signed_up_user().await;
        let (id, secret) = identity.api_token(&user, "ci").await;
        let credential = Credential::Bearer(secret);
        let found = remote.authenticate(&credential).await.unwrap();
        assert_eq!(
            found.map(|p| p.email),
            Some(user.email.clone()),
            "cached from now on"
        );
        let revoked = user
            .client
            .delete(identity.url(&format!("/api/v1/tokens/{id}")))
            .header("x-csrf-token", &user.csrf_token)
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
        let revoked_at = Instant::now();
        while remote.authenticate(&credential).await.unwrap().is_some() {
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "a revoked token still authenticated after {:?}",
                revoked_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!(
            "{stack:?}: revoked token refused remotely after {:?}",
            revoked_at.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_client_gives_the_same_answers_and_errors_as_the_service() {
    for stack in STACKS {
        let Some((identity, _web)) = TestApp::spawn_split(stack, &["identity"], "web").await else {
            continue;
        };
        let remote = remote_identity(&identity);
        let email = unique_email("contract");
        let sign_up = |email: &str, password: &str| SignUp {
            email: email.to_owned(),
            display_name: "Contract".into(),
            password: password.to_owned(),
            end_session: None,
        };
        let session = remote
            .sign_up(sign_up(&email, PASSWORD), ClientMeta::default())
            .await
            .unwrap();
        assert_eq!(session.user.email, email);
        assert!(matches!(
            remote
                .sign_up(sign_up(&email, PASSWORD), ClientMeta::default())
                .await,
            Err(IdentityError::EmailTaken)
        ));
        match remote
            .sign_up(
                sign_up(&unique_email("short"), "short"),
                ClientMeta::default(),
            )
            .await
        {
            Err(IdentityError::Invalid(invalid)) => assert_eq!(invalid.field, "password"),
            other => panic!("expected an invalid password, got {other:?}"),
        }
        let log_in = |password: &str| LogIn {
            email: email.clone(),
            password: password.to_owned(),
            rotate_from: Some(session.id),
        };
        assert!(matches!(
            remote
                .log_in(log_in("wrong password!!"), ClientMeta::default())
                .await,
            Err(IdentityError::InvalidCredentials)
        ));
        let again = remote
            .log_in(log_in(PASSWORD), ClientMeta::default())
            .await
            .unwrap();
        assert_eq!(again.user.id, session.user.id);
        assert_eq!(remote.user(session.user.id).await.unwrap().email, email);
        assert!(matches!(
            remote.user(rendermart_identity_api::UserId::new()).await,
            Err(IdentityError::NotFound)
        ));
        let token = remote
            .create_token(session.user.id, "remote")
            .await
            .unwrap();
        let listed = remote.list_tokens(session.user.id, None, 10).await.unwrap();
        assert_eq!(
            listed.iter().map(|t| t.id).collect::<Vec<_>>(),
            [token.info.id]
        );
        remote
            .revoke_token(session.user.id, token.info.id)
            .await
            .unwrap();
        assert!(matches!(
            remote
                .revoke_token(rendermart_identity_api::UserId::new(), token.info.id)
                .await,
            Err(IdentityError::NotFound)
        ));
        remote.log_out(again.id).await.unwrap();
        assert!(remote
            .authenticate(&Credential::SessionCookie(again.token.clone()))
            .await
            .unwrap()
            .is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_routes_answer_only_callers_with_the_service_credential() {
    for stack in STACKS {
        let Some((identity, _web)) = TestApp::spawn_split(stack, &["identity"], "web").await else {
            continue;
        };
        let url = identity.url("/internal/identity/v1/authenticate");
        let body = serde_json::json!({"credential": {"kind": "bearer", "secret": "rmt_x"}});
        let client = Client::new();
        let without = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(
            without.status(),
            StatusCode::NOT_FOUND,
            "no credential: the route does not exist"
        );
        let forged = client
            .post(&url)
            .header("x-rendermart-service", "web.1700000000.00ff")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
        let stranger = ServiceCredential::new("web", &"another secret".to_owned().into());
        let wrong_secret = client
            .post(&url)
            .header("x-rendermart-service", stranger.token())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(wrong_secret.status(), StatusCode::UNAUTHORIZED);
        let secret = identity.settings.service_secret.clone().unwrap();
        let right = client
            .post(&url)
            .header(
                "x-rendermart-service",
                ServiceCredential::new("web", &secret).token(),
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), StatusCode::OK);
        assert_eq!(
            right.json::<Value>().await.unwrap(),
            Value::Null,
            "unknown token: nobody"
        );
    }
    // A process that runs everything has no internal callers: the routes do not exist.
    let Some(all) = TestApp::spawn(Stack::Embedded).await else {
        return;
    };
    let response = Client::new()
        .post(all.url("/internal/identity/v1/authenticate"))
        .header("x-rendermart-service", "anything")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_identity_is_down_web_answers_503_and_is_not_ready() {
    for stack in STACKS {
        let Some((identity, web)) = TestApp::spawn_split(stack, &["identity"], "web").await else {
            continue;
        };
        let session = sign_up_by_hand(&web, &unique_email("down")).await;
        identity.stop().await;
        let client = Client::new();
        let response = client
            .get(web.url("/account"))
            .header(header::COOKIE, format!("rm_session={session}"))
            .send()
            .await
            .unwrap();
        // The cache may still know the session for up to its lifetime; after it, 503.
        let response = if response.status() == StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(600)).await;
            client
                .get(web.url("/account"))
                .header(header::COOKIE, format!("rm_session={session}"))
                .send()
                .await
                .unwrap()
        } else {
            response
        };
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        assert!(response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/html")));
        // Anonymous pages still work; the sign-up form's submission is a 503 page, not a 500.
        assert_eq!(
            client.get(web.url("/")).send().await.unwrap().status(),
            StatusCode::OK
        );
        let ready = client.get(web.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        let ready: Value = ready.json().await.unwrap();
        assert!(ready["failed"]["remote:identity"].is_string(), "{ready}");
    }
}
