//! Studio and the images people own, through the real application on both stacks.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rendermart_testkit::{assert_problem, Stack, TestApp, User};
use reqwest::{header, Response, StatusCode};
use serde_json::{json, Value};

rendermart_testkit::on_both_stacks!(
    a_generation_becomes_an_image_its_creator_owns,
    one_idempotency_key_makes_one_generation_even_sent_ten_times_at_once,
    bad_generation_requests_get_a_4xx_naming_the_field,
    a_person_never_has_more_than_the_limit_of_generations_at_once,
    a_generation_is_charged_its_price_once_and_only_when_it_succeeds,
    without_enough_credits_a_generation_fails_saying_so_and_charges_nothing,
    a_provider_failure_releases_the_hold_and_a_retry_of_its_key_charges_nothing,
    concurrent_generations_never_spend_more_than_the_balance,
);

/// Default prices (`studio.prices`), minor units.
const PRICE_512: i64 = 50;
const PRICE_768: i64 = 100;
const PRICE_1024: i64 = 200;

async fn generate(app: &TestApp, user: &User, key: &str, body: Value) -> Response {
    user.client
        .post(app.url("/api/v1/generations"))
        .header("x-csrf-token", &user.csrf_token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn get_json(app: &TestApp, client: &reqwest::Client, path: &str) -> (StatusCode, Value) {
    let r = client.get(app.url(path)).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `path` as `user` until `done` holds, at most 60 s.
async fn until(
    app: &TestApp,
    user: &User,
    path: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get_json(app, &user.client, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// Follows a redirect from `path` and returns the image it leads to.
async fn image_behind(app: &TestApp, client: &reqwest::Client, path: &str) -> (u32, u32) {
    let r = client.get(app.url(path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "{path}");
    let location = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    let url = if location.starts_with('/') {
        app.url(&location)
    } else {
        location
    };
    let image = reqwest::get(url).await.unwrap();
    assert_eq!(image.status(), StatusCode::OK);
    png_size(&image.bytes().await.unwrap())
}

async fn a_generation_becomes_an_image_its_creator_owns(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let creator = app.signed_up_user().await;
    app.top_up(&creator, PRICE_512).await;
    let body = json!({"prompt": "a lighthouse at dusk over a calm ocean", "width": 512, "height": 512, "seed": 7});
    let r = generate(&app, &creator, "lighthouse-1", body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(
        ["queued", "running"].contains(&job["status"].as_str().unwrap()),
        "{job}"
    );
    let done = until(
        &app,
        &creator,
        &format!("/api/v1/generations/{id}"),
        "the generation finishes",
        |j| j["status"] == "succeeded" || j["status"] == "failed",
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["asset_id"], id.as_str());
    assert_eq!(done["provider"], "procedural");

    // The wallet makes it an asset its creator owns, with its provenance.
    let mine = until(&app, &creator, "/api/v1/assets", "the asset appears", |a| {
        a["items"].as_array().is_some_and(|items| !items.is_empty())
    })
    .await;
    let asset = &mine["items"][0];
    assert_eq!(asset["id"], id.as_str());
    assert_eq!(asset["owner_id"], creator.id.as_str());
    assert_eq!(asset["creator_id"], creator.id.as_str());
    assert_eq!(asset["prompt"], "a lighthouse at dusk over a calm ocean");
    assert_eq!(
        (asset["seed"].as_i64(), asset["width"].as_i64()),
        (Some(7), Some(512))
    );
    assert_eq!(asset["owners"][0]["how"], "created");
    assert!(
        asset.get("original_key").is_none(),
        "storage keys stay inside"
    );

    // Anyone sees the public view and the thumbnail; only the owner gets the original.
    let (status, public) = get_json(&app, &app.new_client(), &format!("/api/v1/assets/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(public["prompt"], asset["prompt"]);
    let original = format!("/api/v1/assets/{id}/original");
    assert_eq!(
        image_behind(&app, &creator.client, &original).await,
        (512, 512)
    );
    let stranger = app.signed_up_user().await;
    let (w, h) = image_behind(&app, &stranger.client, &original).await;
    assert!(
        w < 512 && h < 512,
        "a stranger gets the thumbnail, not {w}x{h}"
    );
    let (w, _) = image_behind(&app, &app.new_client(), &original).await;
    assert!(w < 512);
    // Someone else's generation does not exist for them.
    let (status, _) = get_json(&app, &stranger.client, &format!("/api/v1/generations/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get_json(&app, &app.new_client(), "/api/v1/assets/not-an-id").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn one_idempotency_key_makes_one_generation_even_sent_ten_times_at_once(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let user = app.signed_up_user().await;
    let body = json!({"prompt": "a red fox in snow", "width": 512, "height": 512});
    let attempts = (0..10).map(|_| {
        let (app, user, body) = (&app, &user, body.clone());
        async move {
            let r = generate(app, user, "fox", body).await;
            let status = r.status();
            let job: Value = r.json().await.unwrap();
            (status, job["id"].clone())
        }
    });
    let answers = join_all(attempts).await;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    let replayed = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!((created, replayed), (1, 9), "{answers:?}");
    assert!(answers.iter().all(|(_, id)| *id == answers[0].1));
    let (_, list) = get_json(&app, &user.client, "/api/v1/generations").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

async fn bad_generation_requests_get_a_4xx_naming_the_field(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let user = app.signed_up_user().await;
    for (body, field) in [
        (json!({"prompt": "   "}), "prompt"),
        (json!({"prompt": "x".repeat(1001)}), "prompt"),
        (
            json!({"prompt": "ok", "width": 500, "height": 500}),
            "width",
        ),
        (json!({"prompt": "ok", "provider": "nope"}), "provider"),
    ] {
        let r = generate(
            &app,
            &user,
            &format!("bad-{field}-{}", body.to_string().len()),
            body.clone(),
        )
        .await;
        let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    for body in [
        json!({"prompt": "ok", "seed": -1}),
        json!({"prompt": 5}),
        json!({}),
    ] {
        let r = generate(&app, &user, "bad-types", body.clone()).await;
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let no_key = user
        .client
        .post(app.url("/api/v1/generations"))
        .header("x-csrf-token", &user.csrf_token)
        .json(&json!({"prompt": "ok"}))
        .send()
        .await
        .unwrap();
    assert_problem(no_key, StatusCode::BAD_REQUEST).await;
    let anonymous = app
        .new_client()
        .post(app.url("/api/v1/generations"))
        .header("idempotency-key", "k")
        .json(&json!({"prompt": "ok"}))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
    let (_, list) = get_json(&app, &user.client, "/api/v1/generations").await;
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "nothing was queued: {list}"
    );
}

/// Twelve requests at once with different keys: at most three are queued or running at a
/// time (the default limit); the others are told 429 with `Retry-After`.
async fn a_person_never_has_more_than_the_limit_of_generations_at_once(stack: Stack) {
    let Some(app) = TestApp::spawn_with(stack, |s| s.set("studio.max_concurrent_renders", 1)).await
    else {
        return;
    };
    let user = app.signed_up_user().await;
    app.top_up(&user, 3 * PRICE_1024 + PRICE_512).await;
    let attempts = (0..12).map(|i| {
        let (app, user) = (&app, &user);
        async move {
            let body = json!({"prompt": format!("tile {i}"), "width": 1024, "height": 1024});
            let r = generate(app, user, &format!("tile-{i}"), body).await;
            let retry_after = r.headers().contains_key(header::RETRY_AFTER);
            (r.status(), retry_after)
        }
    });
    let answers = join_all(attempts).await;
    let accepted = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    let limited = answers
        .iter()
        .filter(|(s, retry)| *s == StatusCode::TOO_MANY_REQUESTS && *retry)
        .count();
    assert!((1..=3).contains(&accepted), "{answers:?}");
    assert_eq!(accepted + limited, 12, "{answers:?}");
    // Once they finish, the person may generate again.
    until(
        &app,
        &user,
        "/api/v1/generations",
        "the accepted ones finish",
        |list| {
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|j| j["status"] == "succeeded")
        },
    )
    .await;
    let again = generate(
        &app,
        &user,
        "after",
        json!({"prompt": "again", "width": 512, "height": 512}),
    )
    .await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
}

/// Waits for the generation `id` to end and returns it.
async fn finished(app: &TestApp, user: &User, id: &str) -> Value {
    until(
        app,
        user,
        &format!("/api/v1/generations/{id}"),
        "the generation ends",
        |j| j["status"] == "succeeded" || j["status"] == "failed",
    )
    .await
}

async fn wallet_of(app: &TestApp, user: &User) -> (i64, i64) {
    let (status, w) = get_json(app, &user.client, "/api/v1/wallet").await;
    assert_eq!(status, StatusCode::OK, "{w}");
    (w["balance"].as_i64().unwrap(), w["held"].as_i64().unwrap())
}

/// The user's history lines of kind `generation`, as (status, amount).
async fn generation_lines(app: &TestApp, user: &User) -> Vec<(String, i64)> {
    let (_, history) = get_json(app, &user.client, "/api/v1/wallet/transactions").await;
    history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "generation")
        .map(|t| {
            (
                t["status"].as_str().unwrap().to_owned(),
                t["amount"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn a_generation_is_charged_its_price_once_and_only_when_it_succeeds(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let user = app.signed_up_user().await;
    app.top_up(&user, 1_000).await;
    let body = json!({"prompt": "a harbour at dawn", "width": 768, "height": 768});
    let r = generate(&app, &user, "harbour", body.clone()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["price"], PRICE_768, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(finished(&app, &user, &id).await["status"], "succeeded");
    // The capture commits with the asset: once the asset is there, so is the charge.
    until(&app, &user, "/api/v1/assets", "the asset appears", |a| {
        a["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    assert_eq!(wallet_of(&app, &user).await, (1_000 - PRICE_768, 0));
    // The same key again is the same job, not a second charge.
    let again = generate(&app, &user, "harbour", body).await;
    assert_eq!(again.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wallet_of(&app, &user).await, (1_000 - PRICE_768, 0));
    assert_eq!(
        generation_lines(&app, &user).await,
        vec![("settled".to_owned(), -PRICE_768)]
    );
    app.assert_wallet_ledger_sound().await;
}

async fn without_enough_credits_a_generation_fails_saying_so_and_charges_nothing(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let user = app.signed_up_user().await;
    app.top_up(&user, PRICE_512 - 1).await;
    let r = generate(
        &app,
        &user,
        "poor",
        json!({"prompt": "a castle", "width": 512, "height": 512}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = finished(&app, &user, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("Not enough credits"), "{error}");
    assert!(
        error.contains("0.50 USD") && error.contains("0.49 USD"),
        "{error}"
    );
    assert!(job["asset_id"].is_null());
    assert_eq!(wallet_of(&app, &user).await, (PRICE_512 - 1, 0));
    assert_eq!(
        generation_lines(&app, &user).await,
        vec![("refused".to_owned(), -PRICE_512)]
    );
    // With the money there, the next one runs.
    app.top_up(&user, 1).await;
    let r = generate(
        &app,
        &user,
        "rich",
        json!({"prompt": "a castle", "width": 512, "height": 512}),
    )
    .await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(finished(&app, &user, &id).await["status"], "succeeded");
    app.assert_wallet_ledger_sound().await;
}

async fn a_provider_failure_releases_the_hold_and_a_retry_of_its_key_charges_nothing(stack: Stack) {
    // An OpenAI-compatible provider nobody answers at: every call fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let Some(app) = TestApp::spawn_with(stack, |s| {
        s.set("studio.providers.openai.base_url", &url);
        s.set("studio.providers.openai.api_key", "sk-test");
        s.set("studio.providers.openai.model", "gpt-image-1");
        s.set("studio.providers.retry.max_attempts", 1);
    })
    .await
    else {
        return;
    };
    let user = app.signed_up_user().await;
    app.top_up(&user, 1_000).await;
    let body = json!({"prompt": "a storm", "width": 512, "height": 512, "provider": "openai"});
    let r = generate(&app, &user, "storm", body.clone()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = finished(&app, &user, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(!job["error"].as_str().unwrap().is_empty(), "{job}");
    let released = until(&app, &user, "/api/v1/wallet", "the hold is released", |w| {
        w["held"] == 0
    })
    .await;
    assert_eq!(released["balance"], 1_000);
    let again = generate(&app, &user, "storm", body).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap()["status"], "failed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wallet_of(&app, &user).await, (1_000, 0));
    assert_eq!(
        generation_lines(&app, &user).await,
        vec![("released".to_owned(), -PRICE_512)]
    );
    app.assert_wallet_ledger_sound().await;
}

/// Twelve generations at once against the money for five: five succeed, seven are
/// refused, and the balance ends at exactly what is left.
async fn concurrent_generations_never_spend_more_than_the_balance(stack: Stack) {
    let Some(app) = TestApp::spawn_with(stack, |s| s.set("studio.per_user_active_jobs", 20)).await
    else {
        return;
    };
    let user = app.signed_up_user().await;
    app.top_up(&user, 5 * PRICE_512 + 10).await;
    let attempts = (0..12).map(|i| {
        let (app, user) = (&app, &user);
        async move {
            let body = json!({"prompt": format!("tile {i}"), "width": 512, "height": 512});
            let r = generate(app, user, &format!("tile-{i}"), body).await;
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            let id = r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            finished(app, user, &id).await["status"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    });
    let ends = join_all(attempts).await;
    let succeeded = ends.iter().filter(|s| *s == "succeeded").count();
    assert_eq!((succeeded, ends.len() - succeeded), (5, 7), "{ends:?}");
    until(&app, &user, "/api/v1/assets", "five assets", |a| {
        a["items"].as_array().is_some_and(|i| i.len() == 5)
    })
    .await;
    assert_eq!(wallet_of(&app, &user).await, (10, 0));
    app.assert_wallet_ledger_sound().await;
}
