//! Identity through the real application, on both stacks: each test states one rule.

use futures_util::future::join_all;
use rendermart_testkit::{assert_problem, stack_tests, TestApp};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::now_v7().simple())
}

fn set_cookie(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The session cookie's value from a `Set-Cookie` header.
fn session_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.strip_prefix("rm_session="))
        .unwrap_or_default()
        .to_owned()
}

stack_tests! {
    async fn signing_up_returns_the_user_and_an_http_only_session_cookie(app) {
        let client = app.new_client();
        let email = unique_email("ada");
        let response = app.signup(&client, &email, "Ada", PASSWORD).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let cookie = set_cookie(&response);
        assert!(cookie.starts_with("rm_session="), "{cookie}");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"), "{cookie}");
        assert!(!cookie.contains("Secure"), "not served over TLS: {cookie}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["user"]["email"], email);
        assert_eq!(body["user"]["display_name"], "Ada");
        assert_eq!(body["user"]["roles"], json!(["customer"]));
        assert!(body["csrf_token"].as_str().is_some_and(|t| t.len() >= 32));

        let me: Value = client.get(app.url("/api/v1/me")).send().await.unwrap().json().await.unwrap();
        assert_eq!(me["email"], email);
        assert_eq!(me["id"], body["user"]["id"]);
    }

    async fn a_forwarded_proto_from_an_untrusted_peer_does_not_make_cookies_secure(app) {
        // No trusted proxies are configured (the default): anyone could send this header.
        let response = app
            .new_client()
            .post(app.url("/api/v1/auth/signup"))
            .header("x-forwarded-proto", "https")
            .json(&json!({"email": unique_email("tls"), "display_name": "Tls", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(!set_cookie(&response).contains("Secure"), "{}", set_cookie(&response));
        assert!(!response.headers().contains_key("strict-transport-security"));
    }

    async fn emails_are_normalised_and_one_mailbox_is_one_account(app) {
        let local = format!("mixed-{}", uuid::Uuid::now_v7().simple());
        let response = app.signup(&app.new_client(), &format!("  {local}@Example.COM "), "Mixed", PASSWORD).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["user"]["email"], format!("{local}@example.com"));

        let again = app.signup(&app.new_client(), &format!("{}@EXAMPLE.com", local.to_uppercase()), "Other", PASSWORD).await;
        let problem = assert_problem(again, StatusCode::CONFLICT).await;
        assert_eq!(problem["type"], "/problems/email-taken");
    }

    /// The look-alikes an outside probe registered as separate accounts: composed and
    /// decomposed `é` and full-width letters are the same account; a Cyrillic letter among
    /// Latin ones, a zero-width space and a right-to-left override are refused (naming the
    /// field); a wholly Cyrillic look-alike of a taken email is taken.
    async fn emails_that_look_the_same_are_one_account(app) {
        // Digits only: they belong to every alphabet, so the Cyrillic address is wholly
        // Cyrillic.
        let tag = uuid::Uuid::now_v7().as_u128() % 1_000_000_000_000_000;
        let first = app.signup(&app.new_client(), &format!("jos\u{e9}-{tag}@example.com"), "Jose", PASSWORD).await;
        assert_eq!(first.status(), StatusCode::CREATED);
        for same in [
            format!("jose\u{301}-{tag}@example.com"),
            format!("\u{ff4a}\u{ff4f}\u{ff53}\u{e9}-{tag}@example.com"),
        ] {
            let again = app.signup(&app.new_client(), &same, "Jose", PASSWORD).await;
            assert_problem(again, StatusCode::CONFLICT).await;
        }
        for bad in [
            format!("jos\u{435}-{tag}@example.com"),
            format!("jo\u{200b}se-{tag}@example.com"),
            format!("jose-{tag}\u{202e}@example.com"),
        ] {
            let refused = app.signup(&app.new_client(), &bad, "Jose", PASSWORD).await;
            let problem = assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
            assert_eq!(problem["errors"][0]["field"], "email", "{problem}");
        }
        let latin = app.signup(&app.new_client(), &format!("paypal-{tag}@example.com"), "P", PASSWORD).await;
        assert_eq!(latin.status(), StatusCode::CREATED);
        let cyrillic = format!("\u{440}\u{430}\u{443}\u{440}\u{430}\u{4cf}-{tag}@example.com");
        let lookalike = app.signup(&app.new_client(), &cyrillic, "P", PASSWORD).await;
        assert_problem(lookalike, StatusCode::CONFLICT).await;
        for name in ["Ad\u{200b}a", "Ada\u{202e}"] {
            let refused = app.signup(&app.new_client(), &unique_email("name"), name, PASSWORD).await;
            let problem = assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
            assert_eq!(problem["errors"][0]["field"], "display_name", "{problem}");
        }
    }

    /// Signing up while signed in ends the old session: one browser, one session.
    async fn signing_up_with_a_live_session_ends_that_session(app) {
        let client = app.new_client();
        let first = app.signup(&client, &unique_email("first"), "First", PASSWORD).await;
        assert_eq!(first.status(), StatusCode::CREATED);
        let old = session_value(&set_cookie(&first));
        let second = app.signup(&client, &unique_email("second"), "Second", PASSWORD).await;
        assert_eq!(second.status(), StatusCode::CREATED);
        let second_id = second.json::<Value>().await.unwrap()["user"]["id"].clone();
        let stale = reqwest::Client::new()
            .get(app.url("/api/v1/me"))
            .header(header::COOKIE, format!("rm_session={old}"))
            .send()
            .await
            .unwrap();
        assert_problem(stale, StatusCode::UNAUTHORIZED).await;
        let me: Value = client.get(app.url("/api/v1/me")).send().await.unwrap().json().await.unwrap();
        assert_eq!(me["id"], second_id, "{me}");
    }

    async fn invalid_sign_up_fields_get_a_422_naming_the_field(app) {
        let client = app.new_client();
        for (body, field) in [
            (json!({"email": unique_email("p"), "display_name": "P", "password": "short"}), "password"),
            (json!({"email": "not-an-email", "display_name": "P", "password": PASSWORD}), "email"),
            (json!({"email": unique_email("p"), "display_name": "   ", "password": PASSWORD}), "display_name"),
        ] {
            let response = app.post_json(&client, "/api/v1/auth/signup", &body).await;
            let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
            assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        }
    }

    async fn bad_input_gets_a_4xx_problem_never_a_5xx(app) {
        let client = app.new_client();
        let url = app.url("/api/v1/auth/signup");
        let json_ct = (header::CONTENT_TYPE, "application/json");
        let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
            ("missing fields", client.post(&url).json(&json!({"email": "a@b.co"})), StatusCode::UNPROCESSABLE_ENTITY),
            ("wrong types", client.post(&url).json(&json!({"email": 5, "display_name": [], "password": true})), StatusCode::UNPROCESSABLE_ENTITY),
            ("bad json", client.post(&url).header(json_ct.0.clone(), json_ct.1).body("{\"email\": "), StatusCode::BAD_REQUEST),
            ("not json", client.post(&url).header(header::CONTENT_TYPE, "text/plain").body("hello"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ("no body", client.post(&url), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ("array body", client.post(&url).json(&json!([1, 2])), StatusCode::UNPROCESSABLE_ENTITY),
            ("huge body", client.post(&url).header(json_ct.0.clone(), json_ct.1).body(format!("{{\"email\": \"{}\"}}", "a".repeat(2 * 1024 * 1024))), StatusCode::PAYLOAD_TOO_LARGE),
            ("huge password", client.post(&url).json(&json!({"email": unique_email("h"), "display_name": "H", "password": "p".repeat(5000)})), StatusCode::UNPROCESSABLE_ENTITY),
            ("unknown route", client.get(app.url("/api/v1/nope")), StatusCode::NOT_FOUND),
            ("wrong method", client.get(&url), StatusCode::METHOD_NOT_ALLOWED),
            ("bad token id", client.delete(app.url("/api/v1/tokens/not-a-uuid")).bearer_auth("rmt_nope"), StatusCode::UNAUTHORIZED),
            ("bad login json", client.post(app.url("/api/v1/auth/login")).json(&json!({"email": null})), StatusCode::UNPROCESSABLE_ENTITY),
        ];
        for (what, request, expected) in cases {
            let response = request.send().await.unwrap();
            assert!(response.status().is_client_error(), "{what}: {}", response.status());
            let problem = assert_problem(response, expected).await;
            assert!(!problem.to_string().contains("panicked"), "{what}: {problem}");
        }
    }

    async fn a_failed_login_says_the_same_whether_or_not_the_email_exists(app) {
        let user = app.signed_up_user().await;
        let client = app.new_client();
        let wrong_password = app.login(&client, &user.email, "wrong password!!").await;
        let unknown_email = app.login(&client, &unique_email("ghost"), "wrong password!!").await;
        let malformed_email = app.login(&client, "not an email", "wrong password!!").await;
        let a = assert_problem(wrong_password, StatusCode::UNAUTHORIZED).await;
        let b = assert_problem(unknown_email, StatusCode::UNAUTHORIZED).await;
        let c = assert_problem(malformed_email, StatusCode::UNAUTHORIZED).await;
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    async fn logging_in_rotates_the_session(app) {
        let user = app.signed_up_user().await;
        let first = app.login(&user.client, &user.email, &user.password).await;
        assert_eq!(first.status(), StatusCode::OK);
        let old = session_value(&set_cookie(&first));
        let second = app.login(&user.client, &user.email, &user.password).await;
        assert_eq!(second.status(), StatusCode::OK);
        let new = session_value(&set_cookie(&second));
        assert_ne!(old, new);
        let with_old = reqwest::Client::new()
            .get(app.url("/api/v1/me"))
            .header(header::COOKIE, format!("rm_session={old}"))
            .send().await.unwrap();
        assert_problem(with_old, StatusCode::UNAUTHORIZED).await;
        let with_new = reqwest::Client::new()
            .get(app.url("/api/v1/me"))
            .header(header::COOKIE, format!("rm_session={new}"))
            .send().await.unwrap();
        assert_eq!(with_new.status(), StatusCode::OK);
    }

    async fn logging_out_kills_the_session_server_side(app) {
        let client = app.new_client();
        let email = unique_email("bye");
        let signup = app.signup(&client, &email, "Bye", PASSWORD).await;
        let session = session_value(&set_cookie(&signup));
        let csrf = signup.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned();
        let logout = client.post(app.url("/api/v1/auth/logout")).header("x-csrf-token", &csrf).send().await.unwrap();
        assert_eq!(logout.status(), StatusCode::NO_CONTENT);
        assert!(set_cookie(&logout).contains("Max-Age=0"));
        // Even a client that kept the cookie is out.
        let replay = reqwest::Client::new()
            .get(app.url("/api/v1/me"))
            .header(header::COOKIE, format!("rm_session={session}"))
            .send().await.unwrap();
        assert_problem(replay, StatusCode::UNAUTHORIZED).await;
    }

    async fn state_changes_on_a_session_cookie_need_the_csrf_token(app) {
        let user = app.signed_up_user().await;
        let without = user.client.post(app.url("/api/v1/tokens")).json(&json!({"name": "x"})).send().await.unwrap();
        let problem = assert_problem(without, StatusCode::FORBIDDEN).await;
        assert_eq!(problem["type"], "/problems/csrf");
        let wrong = user.client.post(app.url("/api/v1/tokens")).header("x-csrf-token", "guess").json(&json!({"name": "x"})).send().await.unwrap();
        assert_problem(wrong, StatusCode::FORBIDDEN).await;
        let logout = user.client.post(app.url("/api/v1/auth/logout")).send().await.unwrap();
        assert_problem(logout, StatusCode::FORBIDDEN).await;
        // Reads need no token, and the right token works.
        assert_eq!(user.client.get(app.url("/api/v1/me")).send().await.unwrap().status(), StatusCode::OK);
        let right = user.client.post(app.url("/api/v1/tokens")).header("x-csrf-token", &user.csrf_token).json(&json!({"name": "x"})).send().await.unwrap();
        assert_eq!(right.status(), StatusCode::CREATED);
    }

    async fn a_bearer_token_needs_no_csrf_and_stops_working_the_moment_it_is_revoked(app) {
        let user = app.signed_up_user().await;
        let (id, token) = app.api_token(&user, "laptop").await;
        assert!(token.starts_with("rmt_"));
        let me = app.get_with_token("/api/v1/me", &token).await;
        assert_eq!(me.status(), StatusCode::OK);
        assert_eq!(me.json::<Value>().await.unwrap()["id"], user.id);
        let revoked = user.client.delete(app.url(&format!("/api/v1/tokens/{id}"))).header("x-csrf-token", &user.csrf_token).send().await.unwrap();
        assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
        assert_problem(app.get_with_token("/api/v1/me", &token).await, StatusCode::UNAUTHORIZED).await;
        assert_problem(app.get_with_token("/api/v1/me", "rmt_made_up").await, StatusCode::UNAUTHORIZED).await;
    }

    async fn a_token_can_neither_mint_nor_list_nor_revoke_tokens(app) {
        let user = app.signed_up_user().await;
        let (first_id, token) = app.api_token(&user, "ci").await;
        let (second_id, _) = app.api_token(&user, "laptop").await;
        let bearer = reqwest::Client::new();
        let minted = bearer.post(app.url("/api/v1/tokens")).bearer_auth(&token).json(&json!({"name": "child"})).send().await.unwrap();
        assert_eq!(assert_problem(minted, StatusCode::FORBIDDEN).await["type"], "/problems/forbidden");
        let listed = bearer.get(app.url("/api/v1/tokens")).bearer_auth(&token).send().await.unwrap();
        assert_problem(listed, StatusCode::FORBIDDEN).await;
        let revoked = bearer.delete(app.url(&format!("/api/v1/tokens/{second_id}"))).bearer_auth(&token).send().await.unwrap();
        assert_problem(revoked, StatusCode::FORBIDDEN).await;
        // Nothing was made or changed: the session still sees exactly the two tokens.
        let page: Value = user.client.get(app.url("/api/v1/tokens")).send().await.unwrap().json().await.unwrap();
        let ids: Vec<&str> = page["items"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [first_id.as_str(), second_id.as_str()]);
    }

    async fn token_lists_never_show_secrets_and_page_with_cursors(app) {
        let user = app.signed_up_user().await;
        let mut secrets = Vec::new();
        for name in ["one", "two", "three"] {
            secrets.push(app.api_token(&user, name).await.1);
        }
        let first: Value = user.client.get(app.url("/api/v1/tokens?limit=2")).send().await.unwrap().json().await.unwrap();
        assert_eq!(first["items"].as_array().unwrap().len(), 2);
        assert_eq!(first["items"][0]["name"], "one");
        let cursor = first["next_cursor"].as_str().expect("a next page");
        let second: Value = user.client.get(app.url(&format!("/api/v1/tokens?limit=2&cursor={cursor}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(second["items"].as_array().unwrap().len(), 1);
        assert_eq!(second["items"][0]["name"], "three");
        assert!(second["next_cursor"].is_null());
        let text = format!("{first}{second}");
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()));
        }
        assert!(first["items"][0].get("token").is_none());
        assert!(secrets[0].starts_with(first["items"][0]["prefix"].as_str().unwrap()));
        let bad = user.client.get(app.url("/api/v1/tokens?limit=0")).send().await.unwrap();
        assert_problem(bad, StatusCode::BAD_REQUEST).await;
        let bad = user.client.get(app.url("/api/v1/tokens?cursor=zzz")).send().await.unwrap();
        assert_problem(bad, StatusCode::BAD_REQUEST).await;
    }

    async fn nobody_can_revoke_another_users_token(app) {
        let alice = app.signed_up_user().await;
        let mallory = app.signed_up_user().await;
        let (id, token) = app.api_token(&alice, "alice's").await;
        let attempt = mallory.client.delete(app.url(&format!("/api/v1/tokens/{id}"))).header("x-csrf-token", &mallory.csrf_token).send().await.unwrap();
        assert_problem(attempt, StatusCode::NOT_FOUND).await;
        assert_eq!(app.get_with_token("/api/v1/me", &token).await.status(), StatusCode::OK);
    }

    async fn no_response_ever_contains_the_password_or_its_hash(app) {
        let client = app.new_client();
        let email = unique_email("secret");
        let password = "a very secret passphrase";
        let mut bodies = Vec::new();
        let r = app.signup(&client, &email, "Secret", password).await;
        let csrf = {
            let text = r.text().await.unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            bodies.push(text);
            v["csrf_token"].as_str().unwrap().to_owned()
        };
        bodies.push(app.login(&client, &email, password).await.text().await.unwrap());
        bodies.push(app.login(&client, &email, "wrong wrong wrong").await.text().await.unwrap());
        bodies.push(app.signup(&client, &email, "Again", password).await.text().await.unwrap());
        bodies.push(client.get(app.url("/api/v1/me")).send().await.unwrap().text().await.unwrap());
        let token = client.post(app.url("/api/v1/tokens")).header("x-csrf-token", &csrf).json(&json!({"name": "t"})).send().await.unwrap();
        let _ = token.text().await.unwrap();
        bodies.push(client.get(app.url("/api/v1/tokens")).send().await.unwrap().text().await.unwrap());
        for body in bodies {
            assert!(!body.contains(password), "{body}");
            assert!(!body.contains("$argon2"), "{body}");
            assert!(!body.contains("password_hash"), "{body}");
        }
    }

    async fn the_openapi_document_describes_the_identity_api(app) {
        let doc: Value = app.client.get(app.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for path in ["/api/v1/auth/signup", "/api/v1/auth/login", "/api/v1/auth/logout", "/api/v1/me", "/api/v1/tokens", "/api/v1/tokens/{id}"] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        assert!(doc["components"]["schemas"]["Problem"].is_object());
    }

    async fn health_readiness_and_metrics_are_served(app) {
        let health = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::OK);
        let ready: Value = ready.json().await.unwrap();
        let ok = ready["ok"].to_string();
        assert!(ok.contains("db:identity") && ok.contains("bus:"), "{ready}");
        if app.settings.redis_url.is_some() {
            assert!(ok.contains("redis"), "{ready}");
        }
        let _ = app.signed_up_user().await;
        let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("http_requests_total"), "{metrics}");
        assert!(metrics.contains("route=\"/api/v1/auth/signup\""), "{metrics}");
        assert!(metrics.contains("http_request_duration_seconds_bucket"), "{metrics}");
        assert!(metrics.contains("outbox_backlog{service=\"identity\"}"), "{metrics}");
        // The sign-up's write transaction waited for its connection (on SQLite, the
        // service's one writer): how long is recorded per service.
        assert!(metrics.contains("db_begin_wait_seconds_count{service=\"identity\"}"), "{metrics}");
    }

    async fn responses_carry_a_request_id_and_continue_the_callers_trace(app) {
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let response = app.client.get(app.url("/healthz"))
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .header("x-request-id", "req-123")
            .send().await.unwrap();
        assert_eq!(response.headers()["x-request-id"], "req-123");
        let traceparent = response.headers()["traceparent"].to_str().unwrap();
        assert!(traceparent.starts_with(&format!("00-{trace_id}-")), "{traceparent}");
        let fresh = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert!(fresh.headers().contains_key("x-request-id"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stops_working_when_it_expires() {
    let app = TestApp::spawn_with(rendermart_testkit::Stack::Embedded, |s| {
        s.set("identity.session_ttl_secs", 1)
    })
    .await
    .unwrap();
    let user = app.signed_up_user().await;
    assert_eq!(
        user.client
            .get(app.url("/api/v1/me"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let expired = user.client.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_problem(expired, StatusCode::UNAUTHORIZED).await;
}

/// Behind a TLS-terminating proxy that is configured as trusted, `X-Forwarded-Proto:
/// https` makes the session cookie `Secure` and turns HSTS on.
async fn cookies_are_secure_behind_a_trusted_tls_terminating_proxy(
    stack: rendermart_testkit::Stack,
) {
    let Some(app) = TestApp::spawn_with(stack, |s| {
        s.trusted_proxies = "127.0.0.1/32".parse().unwrap();
    })
    .await
    else {
        return;
    };
    let response = app
        .new_client()
        .post(app.url("/api/v1/auth/signup"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"email": unique_email("tls"), "display_name": "Tls", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        set_cookie(&response).contains("; Secure"),
        "{}",
        set_cookie(&response)
    );
    assert!(response.headers().contains_key("strict-transport-security"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_cookies_are_secure_behind_a_trusted_tls_terminating_proxy() {
    cookies_are_secure_behind_a_trusted_tls_terminating_proxy(rendermart_testkit::Stack::Embedded)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_cookies_are_secure_behind_a_trusted_tls_terminating_proxy() {
    cookies_are_secure_behind_a_trusted_tls_terminating_proxy(
        rendermart_testkit::Stack::Distributed,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_secure_when_configured() {
    let app = TestApp::spawn_with(rendermart_testkit::Stack::Embedded, |s| {
        s.cookie_secure = true
    })
    .await
    .unwrap();
    let response = app
        .signup(&app.new_client(), &unique_email("sec"), "Sec", PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(set_cookie(&response).contains("; Secure"));
}

mod races {
    use super::*;
    use rendermart_testkit::Stack;

    /// Sixteen browsers submit the same new email at once: one account, fifteen conflicts.
    /// (The per-account sign-up limit is raised so that only uniqueness decides.)
    async fn concurrent_sign_ups_with_one_email_create_exactly_one_account(stack: Stack) {
        let Some(app) =
            TestApp::spawn_with(stack, |s| s.set("identity.signup_per_account.max", 100)).await
        else {
            return;
        };
        let email = unique_email("race");
        let attempts = (0..16).map(|i| {
            let app = &app;
            let email = email.clone();
            async move {
                app.signup(&app.new_client(), &email, &format!("Racer {i}"), PASSWORD)
                    .await
                    .status()
            }
        });
        let statuses = join_all(attempts).await;
        let created = statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count();
        let conflicts = statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count();
        assert_eq!((created, conflicts), (1, 15), "{statuses:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_concurrent_sign_ups_with_one_email_create_exactly_one_account() {
        concurrent_sign_ups_with_one_email_create_exactly_one_account(Stack::Embedded).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn distributed_concurrent_sign_ups_with_one_email_create_exactly_one_account() {
        concurrent_sign_ups_with_one_email_create_exactly_one_account(Stack::Distributed).await
    }
}

mod rate_limits {
    use super::*;
    use rendermart_testkit::Stack;

    async fn sign_up_is_limited_per_email(stack: Stack) {
        let Some(app) = TestApp::spawn(stack).await else {
            return;
        };
        let email = unique_email("again");
        let limit = app
            .settings
            .section::<rendermart_identity::IdentityConfig>("identity")
            .unwrap()
            .signup_per_account
            .max;
        let first = app
            .signup(&app.new_client(), &email, "Again", PASSWORD)
            .await;
        assert_eq!(first.status(), StatusCode::CREATED);
        for _ in 1..limit {
            let r = app
                .signup(&app.new_client(), &email, "Again", PASSWORD)
                .await;
            assert_problem(r, StatusCode::CONFLICT).await;
        }
        let limited = app
            .signup(&app.new_client(), &email, "Again", PASSWORD)
            .await;
        assert_problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_sign_up_is_limited_per_email() {
        sign_up_is_limited_per_email(Stack::Embedded).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn distributed_sign_up_is_limited_per_email_in_redis() {
        sign_up_is_limited_per_email(Stack::Distributed).await
    }

    /// A log-in from `address` (through a trusted proxy's `X-Forwarded-For`).
    async fn login_from(
        app: &TestApp,
        client: &reqwest::Client,
        address: &str,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        client
            .post(app.url("/api/v1/auth/login"))
            .header("x-forwarded-for", address)
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// The outside probe's attack on the defaults: ten wrong passwords for someone's email
    /// from ten addresses. The owner's right password still works, from a browser the
    /// account has never seen and from an address of its own.
    async fn strangers_guessing_from_many_addresses_do_not_lock_the_owner_out(stack: Stack) {
        let Some(app) = TestApp::spawn_with(stack, |s| {
            s.trusted_proxies = "127.0.0.1/32".parse().unwrap();
        })
        .await
        else {
            return;
        };
        let owner = app.signed_up_user().await;
        for i in 0..10 {
            let r = login_from(
                &app,
                &app.new_client(),
                &format!("198.51.100.{i}"),
                &owner.email,
                "wrong password!!",
            )
            .await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
        }
        let owner_login = login_from(
            &app,
            &app.new_client(),
            "203.0.113.7",
            &owner.email,
            &owner.password,
        )
        .await;
        assert_eq!(owner_login.status(), StatusCode::OK);
    }

    /// Past the per-account ceiling nobody is refused: a stranger's attempt is slowed, the
    /// owner's known browser (its device cookie from sign-up) is not.
    async fn past_the_account_ceiling_strangers_are_slowed_and_the_owner_is_not(stack: Stack) {
        let Some(app) = TestApp::spawn_with(stack, |s| {
            s.trusted_proxies = "127.0.0.1/32".parse().unwrap();
            s.set("identity.login_per_account.max", 3);
            s.set("identity.login_slowdown_ms", 2000);
        })
        .await
        else {
            return;
        };
        let owner = app.signed_up_user().await;
        let attempts = (0..12).map(|i| {
            let app = &app;
            let email = owner.email.clone();
            async move {
                login_from(
                    app,
                    &app.new_client(),
                    &format!("198.51.100.{i}"),
                    &email,
                    "wrong password!!",
                )
                .await
                .status()
            }
        });
        let statuses = join_all(attempts).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
            "{statuses:?}"
        );
        // A stranger's browser with the right password: let in, after the slow-down.
        let started = std::time::Instant::now();
        let stranger = login_from(
            &app,
            &app.new_client(),
            "203.0.113.8",
            &owner.email,
            &owner.password,
        )
        .await;
        assert_eq!(stranger.status(), StatusCode::OK);
        assert!(started.elapsed() >= std::time::Duration::from_millis(2000));
        // The owner's own browser: let in without waiting for the slow-down.
        let started = std::time::Instant::now();
        let own = login_from(
            &app,
            &owner.client,
            "203.0.113.9",
            &owner.email,
            &owner.password,
        )
        .await;
        assert_eq!(own.status(), StatusCode::OK);
        assert!(
            started.elapsed() < std::time::Duration::from_millis(2000),
            "the owner's known browser was slowed"
        );
    }

    /// Brute force stays bounded: one address guessing at one account is refused after the
    /// per-account-and-address limit, even with the right password, while the owner
    /// elsewhere is not; a success forgives that address's failures.
    async fn one_address_guessing_at_one_account_is_refused(stack: Stack) {
        let Some(app) = TestApp::spawn_with(stack, |s| {
            s.trusted_proxies = "127.0.0.1/32".parse().unwrap();
            s.set("identity.login_per_account_address.max", 3);
            s.set("identity.login_per_account_address.window", 60);
        })
        .await
        else {
            return;
        };
        let owner = app.signed_up_user().await;
        let attacker = app.new_client();
        for _ in 0..3 {
            let r = login_from(
                &app,
                &attacker,
                "198.51.100.1",
                &owner.email,
                "wrong password!!",
            )
            .await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let limited = login_from(
            &app,
            &attacker,
            "198.51.100.1",
            &owner.email,
            &owner.password,
        )
        .await;
        let retry_after: u64 = limited.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert_problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
        // The same address, another account: unaffected.
        let other = app.signed_up_user().await;
        let r = login_from(
            &app,
            &attacker,
            "198.51.100.1",
            &other.email,
            &other.password,
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        // The owner from their own address: unaffected, and two failures then a success
        // there leave that address a clean slate.
        for _ in 0..2 {
            let r = login_from(
                &app,
                &app.new_client(),
                "203.0.113.5",
                &owner.email,
                "wrong password!!",
            )
            .await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let ok = login_from(
            &app,
            &app.new_client(),
            "203.0.113.5",
            &owner.email,
            &owner.password,
        )
        .await;
        assert_eq!(ok.status(), StatusCode::OK);
        for _ in 0..3 {
            let r = login_from(
                &app,
                &app.new_client(),
                "203.0.113.5",
                &owner.email,
                "wrong password!!",
            )
            .await;
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "failures were forgiven"
            );
        }
    }

    async fn sign_up_and_login_are_limited_per_ip(stack: Stack) {
        let Some(app) = TestApp::spawn_with(stack, |s| {
            s.set("identity.signup_per_ip.max", 2);
            s.set("identity.login_per_ip.max", 2);
        })
        .await
        else {
            return;
        };
        for _ in 0..2 {
            let r = app
                .signup(&app.new_client(), &unique_email("ip"), "Ip", PASSWORD)
                .await;
            assert_eq!(r.status(), StatusCode::CREATED);
        }
        let third = app
            .signup(&app.new_client(), &unique_email("ip"), "Ip", PASSWORD)
            .await;
        assert!(third.headers().contains_key(header::RETRY_AFTER));
        assert_problem(third, StatusCode::TOO_MANY_REQUESTS).await;
        for _ in 0..2 {
            let r = app
                .login(&app.new_client(), &unique_email("nobody"), PASSWORD)
                .await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let limited = app
            .login(&app.new_client(), &unique_email("nobody"), PASSWORD)
            .await;
        assert_problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_strangers_guessing_from_many_addresses_do_not_lock_the_owner_out() {
        strangers_guessing_from_many_addresses_do_not_lock_the_owner_out(Stack::Embedded).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn distributed_strangers_guessing_from_many_addresses_do_not_lock_the_owner_out() {
        strangers_guessing_from_many_addresses_do_not_lock_the_owner_out(Stack::Distributed).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_past_the_account_ceiling_strangers_are_slowed_and_the_owner_is_not() {
        past_the_account_ceiling_strangers_are_slowed_and_the_owner_is_not(Stack::Embedded).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn distributed_past_the_account_ceiling_strangers_are_slowed_and_the_owner_is_not() {
        past_the_account_ceiling_strangers_are_slowed_and_the_owner_is_not(Stack::Distributed).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_one_address_guessing_at_one_account_is_refused() {
        one_address_guessing_at_one_account_is_refused(Stack::Embedded).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn distributed_one_address_guessing_at_one_account_is_refused_in_redis() {
        one_address_guessing_at_one_account_is_refused(Stack::Distributed).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_sign_up_and_login_are_limited_per_ip() {
        sign_up_and_login_are_limited_per_ip(Stack::Embedded).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn distributed_sign_up_and_login_are_limited_per_ip_in_redis() {
        sign_up_and_login_are_limited_per_ip(Stack::Distributed).await
    }
}
