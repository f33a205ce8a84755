//! The wallet's and studio's pages through the real application, on both stacks, driven the
//! way a browser without JavaScript drives them: get a page, read its form's hidden fields,
//! post the form, follow the `303`.

use std::time::{Duration, Instant};

use rendermart_testkit::{Stack, TestApp, User};
use reqwest::{header, Response, StatusCode};
use serde_json::{json, Value};

rendermart_testkit::on_both_stacks!(
    the_market_page_lists_open_listings_and_filters_them,
    a_member_buys_from_the_listing_page_without_javascript,
    the_seller_reprices_and_withdraws_from_the_listing_page,
    the_asset_page_shows_provenance_and_lets_the_owner_list_it,
    forms_without_the_csrf_token_are_refused,
    bad_amounts_in_forms_get_a_4xx_page,
    the_offers_inbox_accepts_an_offer,
    the_studio_page_queues_a_generation_once_per_form,
    pages_have_landmarks_labels_and_no_inline_script,
    pages_name_sellers_and_owners_by_their_display_names,
    an_open_listings_card_is_served_alone_for_live_pages,
);

/// What a 512×512 generation costs by default (`studio.prices.square_512`).
const SMALL_IMAGE_PRICE: i64 = 50;

/// A page as the browser got it.
struct Page {
    status: StatusCode,
    location: String,
    body: String,
}

impl Page {
    async fn of(r: Response) -> Self {
        let status = r.status();
        let location = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = r.text().await.unwrap_or_default();
        Self {
            status,
            location,
            body,
        }
    }

    /// The body from `<main` on (the header's log-out form has a token too).
    fn main(&self) -> &str {
        let at = self.body.find("<main").unwrap_or(0);
        &self.body[at..]
    }

    /// The value of the first hidden field `name` in the form posting to `action`.
    fn field(&self, action: &str, name: &str) -> String {
        let main = self.main();
        let form = main
            .find(&format!(r#"action="{action}""#))
            .unwrap_or_else(|| panic!("no form posts to {action}:\n{main}"));
        let marker = format!(r#"name="{name}" value=""#);
        let from = main[form..]
            .find(&marker)
            .map(|at| form + at + marker.len())
            .unwrap_or_else(|| panic!("the form to {action} has no {name}"));
        let len = main[from..].find('"').unwrap_or(0);
        main[from..from + len].to_owned()
    }

    fn assert_ok(&self) {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
    }
}

async fn get(app: &TestApp, user: Option<&User>, path: &str) -> Page {
    let client = match user {
        Some(u) => u.client.clone(),
        None => app.new_client(),
    };
    Page::of(client.get(app.url(path)).send().await.unwrap()).await
}

async fn post_form(app: &TestApp, user: &User, path: &str, fields: &[(&str, &str)]) -> Page {
    Page::of(
        user.client
            .post(app.url(path))
            .form(fields)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Opens `page`, fills in the form posting to `action` (its hidden fields as rendered, plus
/// `fields`) and sends it.
async fn submit(
    app: &TestApp,
    user: &User,
    page: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> Page {
    let shown = get(app, Some(user), page).await;
    shown.assert_ok();
    let mut all: Vec<(String, String)> = ["csrf_token", "idempotency_key", "price"]
        .into_iter()
        .filter(|hidden| {
            let main = shown.main();
            main.find(&format!(r#"action="{action}""#))
                .map(|at| {
                    let end = main[at..].find("</form>").map_or(main.len(), |e| at + e);
                    main[at..end].contains(&format!(r#"type="hidden" name="{hidden}""#))
                })
                .unwrap_or(false)
        })
        .map(|hidden| (hidden.to_owned(), shown.field(action, hidden)))
        .collect();
    all.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    post_form(app, user, action, &pairs).await
}

fn assert_see_other(page: &Page, to: &str) {
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location, to);
}

async fn api(app: &TestApp, user: &User, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut request = match method {
        "POST" => user.client.post(app.url(path)),
        _ => user.client.get(app.url(path)),
    }
    .header("x-csrf-token", &user.csrf_token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    assert!(r.status().is_success(), "{method} {path}: {}", r.status());
    r.json().await.unwrap()
}

/// Generates an image as `user` (paying its price) and waits until it is their asset.
async fn asset_of(app: &TestApp, user: &User, prompt: &str) -> String {
    app.top_up(user, SMALL_IMAGE_PRICE).await;
    let r = user
        .client
        .post(app.url("/api/v1/generations"))
        .header("x-csrf-token", &user.csrf_token)
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .json(&json!({"prompt": prompt, "width": 512, "height": 512}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for_asset(app, user, &id).await;
    id
}

async fn wait_for_asset(app: &TestApp, user: &User, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = user
            .client
            .get(app.url(&format!("/api/v1/assets/{id}")))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            return;
        }
        assert!(Instant::now() < deadline, "asset {id} never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn list(app: &TestApp, user: &User, asset: &str, price: i64) -> String {
    api(
        app,
        user,
        "POST",
        "/api/v1/listings",
        Some(json!({"asset_id": asset, "price": price})),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn balance(app: &TestApp, user: &User) -> i64 {
    api(app, user, "GET", "/api/v1/wallet", None).await["balance"]
        .as_i64()
        .unwrap()
}

async fn the_market_page_lists_open_listings_and_filters_them(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.signed_up_user().await;
    let fox = asset_of(&app, &seller, "a red fox in fresh snow").await;
    let whale = asset_of(&app, &seller, "a blue whale under the ice").await;
    let fox_listing = list(&app, &seller, &fox, 1_250).await;
    let whale_listing = list(&app, &seller, &whale, 900).await;

    let market = get(&app, None, "/market").await;
    market.assert_ok();
    for (listing, prompt, price) in [
        (&fox_listing, "a red fox in fresh snow", "12.50 USD"),
        (&whale_listing, "a blue whale under the ice", "9.00 USD"),
    ] {
        assert!(market
            .body
            .contains(&format!(r#"data-listing-id="{listing}""#)));
        assert!(market.body.contains(&format!(r#"alt="{prompt}""#)));
        assert!(market.body.contains(price));
    }
    assert!(market
        .body
        .contains(r#"data-live-src="/api/v1/market/events""#));
    assert!(market.body.contains(r#"aria-live="polite""#));

    let foxes = get(&app, None, "/market?q=FOX").await;
    foxes.assert_ok();
    assert!(foxes.body.contains(&fox_listing) && !foxes.body.contains(&whale_listing));

    let cheapest = get(&app, None, "/market?sort=price").await;
    let (w, f) = (
        cheapest.body.find(&whale_listing).unwrap(),
        cheapest.body.find(&fox_listing).unwrap(),
    );
    assert!(w < f, "cheapest first");
    let newest = get(&app, None, "/market").await;
    assert!(newest.body.find(&fox_listing) > newest.body.find(&whale_listing));

    let nothing = get(&app, None, "/market?q=zebra").await;
    assert!(nothing.body.contains("No open listing"));

    let thumbnail = app
        .new_client()
        .get(app.url(&format!("/api/v1/assets/{fox}/thumbnail")))
        .send()
        .await
        .unwrap();
    // Served by the app itself, so the pages' images are same-origin with S3 too.
    assert_eq!(thumbnail.status(), StatusCode::OK);
    assert_eq!(thumbnail.headers()[header::CONTENT_TYPE], "image/png");
    let png = thumbnail.bytes().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let bad_cursor = get(&app, None, "/market?after=junk").await;
    assert_eq!(bad_cursor.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_cursor.body.contains("<main"));
    app.stop().await;
}

async fn a_member_buys_from_the_listing_page_without_javascript(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (seller, buyer) = (app.signed_up_user().await, app.signed_up_user().await);
    let asset = asset_of(&app, &seller, "a lantern on a jetty").await;
    let listing = list(&app, &seller, &asset, 1_000).await;

    let topped = submit(
        &app,
        &buyer,
        "/wallet",
        "/wallet/topups",
        &[("amount", "50")],
    )
    .await;
    assert_see_other(&topped, "/wallet?done=topup");
    let wallet = get(&app, Some(&buyer), "/wallet").await;
    assert!(wallet.body.contains("50.00 USD"), "{}", wallet.body);

    let path = format!("/market/{listing}");
    let page = get(&app, Some(&buyer), &path).await;
    page.assert_ok();
    assert!(page.body.contains("Buy for 10.00 USD"));
    let action = format!("{path}/buy");
    let fields = [
        ("csrf_token", page.field(&action, "csrf_token")),
        ("idempotency_key", page.field(&action, "idempotency_key")),
        ("price", page.field(&action, "price")),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bought = post_form(&app, &buyer, &action, &fields).await;
    assert_see_other(&bought, &format!("{path}?done=bought"));
    // The same form again (a double click): the same purchase, nothing paid twice.
    let again = post_form(&app, &buyer, &action, &fields).await;
    assert_see_other(&again, &format!("{path}?done=bought"));

    let wallet = get(&app, Some(&buyer), "/wallet").await;
    assert!(wallet.body.contains("40.00 USD"), "{}", wallet.body);
    assert!(wallet.body.contains("Bought"));
    assert_eq!(balance(&app, &buyer).await, 4_000);
    let sold = get(&app, Some(&buyer), &format!("{path}?done=bought")).await;
    assert!(sold.body.contains("Sold to you"));
    assert!(sold.body.contains("You bought this image"));
    assert!(
        !sold.body.contains(&action),
        "no buy form on a sold listing"
    );
    // The seller sees the buyer by name (testkit's users are all "Test User"), or by a
    // handle if the projection of names has not caught up yet.
    let seller_view = get(&app, Some(&seller), &path).await;
    assert!(
        seller_view.body.contains("Sold to Test User")
            || seller_view.body.contains("Sold to member "),
        "{}",
        seller_view.main()
    );
    app.stop().await;
}

async fn the_seller_reprices_and_withdraws_from_the_listing_page(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (seller, buyer) = (app.signed_up_user().await, app.signed_up_user().await);
    let asset = asset_of(&app, &seller, "a paper boat in rain").await;
    let listing = list(&app, &seller, &asset, 1_000).await;
    let path = format!("/market/{listing}");

    let stale = get(&app, Some(&buyer), &path).await;
    let repriced = submit(
        &app,
        &seller,
        &path,
        &format!("{path}/price"),
        &[("price", "12.5")],
    )
    .await;
    assert_see_other(&repriced, &format!("{path}?done=repriced"));
    assert!(get(&app, None, &path).await.body.contains("12.50 USD"));

    // The buyer's page still says 10.00: buying from it is refused, nothing moves.
    app.top_up(&buyer, 5_000).await;
    let action = format!("{path}/buy");
    let refused = post_form(
        &app,
        &buyer,
        &action,
        &[
            ("csrf_token", &stale.field(&action, "csrf_token")),
            ("idempotency_key", &stale.field(&action, "idempotency_key")),
            ("price", &stale.field(&action, "price")),
        ],
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.body.contains("12.50 USD"));
    assert_eq!(balance(&app, &buyer).await, 5_000);

    let withdrawn = submit(&app, &seller, &path, &format!("{path}/withdraw"), &[]).await;
    assert_see_other(&withdrawn, &format!("{path}?done=withdrawn"));
    let page = get(&app, None, &path).await;
    assert!(page.body.contains("withdrew"));
    assert!(!get(&app, None, "/market").await.body.contains(&listing));

    // Someone else's listing: the service says no, as a page.
    let other = asset_of(&app, &seller, "a second paper boat").await;
    let other = list(&app, &seller, &other, 700).await;
    let not_yours = post_form(
        &app,
        &buyer,
        &format!("/market/{other}/withdraw"),
        &[("csrf_token", &buyer.csrf_token)],
    )
    .await;
    assert_eq!(not_yours.status, StatusCode::FORBIDDEN);
    assert!(not_yours.body.contains("Not allowed"));
    app.stop().await;
}

async fn the_asset_page_shows_provenance_and_lets_the_owner_list_it(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let owner = app.signed_up_user().await;
    let asset = asset_of(&app, &owner, "an owl reading a map").await;
    let path = format!("/assets/{asset}");

    let public = get(&app, None, &path).await;
    public.assert_ok();
    for fact in [
        "an owl reading a map",
        "procedural",
        "512 &times; 512",
        "Created by",
    ] {
        assert!(public.body.contains(fact), "{fact}:\n{}", public.body);
    }
    assert!(
        !public.body.contains("/original"),
        "the original is the owner's"
    );
    assert!(!public.body.contains(&format!("{path}/list")));

    let mine = get(&app, Some(&owner), &path).await;
    assert!(mine
        .body
        .contains(&format!("/api/v1/assets/{asset}/original")));
    let listed = submit(
        &app,
        &owner,
        &path,
        &format!("{path}/list"),
        &[("price", "7.25")],
    )
    .await;
    assert_eq!(listed.status, StatusCode::SEE_OTHER, "{}", listed.body);
    assert!(listed.location.starts_with("/market/") && listed.location.ends_with("?done=listed"));
    let now = get(&app, Some(&owner), &path).await;
    assert!(now
        .body
        .contains("Listed for <span class=\"price\">7.25 USD</span>"));
    assert!(!now.body.contains(&format!("{path}/list")));

    let unknown = get(&app, None, "/assets/not-an-asset").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body.contains("<main"));
    app.stop().await;
}

async fn forms_without_the_csrf_token_are_refused(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let member = app.signed_up_user().await;
    let key = uuid::Uuid::now_v7().to_string();
    for token in ["", "not-the-token"] {
        let refused = post_form(
            &app,
            &member,
            "/wallet/topups",
            &[
                ("csrf_token", token),
                ("amount", "10"),
                ("idempotency_key", &key),
            ],
        )
        .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.body.contains("This form has expired"));
    }
    let no_field = post_form(&app, &member, "/wallet/topups", &[("amount", "10")]).await;
    assert_eq!(no_field.status, StatusCode::FORBIDDEN);
    let studio = post_form(&app, &member, "/studio", &[("prompt", "a cat")]).await;
    assert_eq!(studio.status, StatusCode::FORBIDDEN);
    assert_eq!(balance(&app, &member).await, 0);

    // Signed out: sent to log in, nothing done.
    let anonymous = app.new_client();
    let r = anonymous
        .post(app.url("/wallet/topups"))
        .form(&[("amount", "10")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/login?next=/wallet");
    let wallet = get(&app, None, "/wallet").await;
    assert_eq!(wallet.status, StatusCode::SEE_OTHER);
    app.stop().await;
}

async fn bad_amounts_in_forms_get_a_4xx_page(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let member = app.signed_up_user().await;
    let wallet = get(&app, Some(&member), "/wallet").await;
    let token = wallet.field("/wallet/topups", "csrf_token");
    for junk in [
        "",
        "abc",
        "-5",
        "0",
        "1.234",
        "1e3",
        "12,50",
        "99999999999999999999",
    ] {
        let page = post_form(
            &app,
            &member,
            "/wallet/topups",
            &[
                ("csrf_token", &token),
                ("amount", junk),
                ("idempotency_key", &uuid::Uuid::now_v7().to_string()),
            ],
        )
        .await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{junk:?}");
        assert!(
            page.body.contains("Please check what you entered"),
            "{junk:?}"
        );
        assert!(page.body.contains("<main"));
    }
    let too_big = post_form(
        &app,
        &member,
        "/wallet/topups",
        &[
            ("csrf_token", &token),
            ("amount", "2000000"),
            ("idempotency_key", "k1"),
        ],
    )
    .await;
    assert_eq!(too_big.status, StatusCode::UNPROCESSABLE_ENTITY);
    let no_key = post_form(
        &app,
        &member,
        "/wallet/topups",
        &[("csrf_token", &token), ("amount", "5")],
    )
    .await;
    assert_eq!(no_key.status, StatusCode::UNPROCESSABLE_ENTITY);
    let broke = submit(
        &app,
        &member,
        "/wallet",
        "/wallet/payouts",
        &[("amount", "5")],
    )
    .await;
    assert_eq!(broke.status, StatusCode::PAYMENT_REQUIRED);
    assert!(broke.body.contains("available balance does not cover"));
    let declined = submit(
        &app,
        &member,
        "/wallet",
        "/wallet/topups",
        &[("amount", "40.02")],
    )
    .await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(balance(&app, &member).await, 0);

    let bad_offer = post_form(
        &app,
        &member,
        &format!("/market/{}/offers", uuid::Uuid::now_v7()),
        &[
            ("csrf_token", &token),
            ("amount", "x"),
            ("expires_in", "3600"),
        ],
    )
    .await;
    assert_eq!(bad_offer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let no_listing = post_form(
        &app,
        &member,
        "/market/nope/offers",
        &[
            ("csrf_token", &token),
            ("amount", "1"),
            ("expires_in", "3600"),
        ],
    )
    .await;
    assert_eq!(no_listing.status, StatusCode::NOT_FOUND);
    let bad_page = get(&app, Some(&member), "/wallet?before=junk").await;
    assert_eq!(bad_page.status, StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await;
}

async fn the_offers_inbox_accepts_an_offer(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (seller, buyer) = (app.signed_up_user().await, app.signed_up_user().await);
    let asset = asset_of(&app, &seller, "a kite over dunes").await;
    let listing = list(&app, &seller, &asset, 1_000).await;
    app.top_up(&buyer, 5_000).await;
    let path = format!("/market/{listing}");

    let offered = submit(
        &app,
        &buyer,
        &path,
        &format!("{path}/offers"),
        &[("amount", "8.00"), ("expires_in", "3600")],
    )
    .await;
    assert_see_other(&offered, "/offers?done=offered");
    let made = get(&app, Some(&buyer), "/offers?done=offered").await;
    made.assert_ok();
    assert!(made.body.contains("8.00 USD") && made.body.contains("a kite over dunes"));
    assert!(made.body.contains("/cancel"), "the maker may cancel");
    assert!(!made.body.contains("/accept"));

    let inbox = get(&app, Some(&seller), "/offers").await;
    let main = inbox.main();
    let at = main.find("/accept\"").expect("an accept form");
    let start = main[..at].rfind("/offers/").unwrap();
    let accept = main[start..at + "/accept".len()].to_owned();
    assert!(main.contains("/counter\""), "the seller may counter");
    let accepted = submit(&app, &seller, "/offers", &accept, &[]).await;
    assert_see_other(&accepted, "/offers?done=accepted");

    assert_eq!(balance(&app, &buyer).await, 4_200);
    let sold = get(&app, None, &path).await;
    assert!(sold.body.contains("status-sold"));
    let after = get(&app, Some(&seller), "/offers").await;
    assert!(after.body.contains("status-accepted"));
    assert!(!after.main().contains("/accept\""));
    app.stop().await;
}

async fn the_studio_page_queues_a_generation_once_per_form(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let anonymous = get(&app, None, "/studio").await;
    anonymous.assert_ok();
    assert!(anonymous.body.contains("Log in to make images"));
    assert!(anonymous.body.contains("/login?next=/studio"));

    let member = app.signed_up_user().await;
    app.top_up(&member, 1_000).await;
    let page = get(&app, Some(&member), "/studio").await;
    page.assert_ok();
    assert!(page.body.contains("512 × 512 — 0.50"));
    let fields = [
        ("csrf_token", page.field("/studio", "csrf_token")),
        ("idempotency_key", page.field("/studio", "idempotency_key")),
        ("prompt", "a teapot on the moon".to_owned()),
        ("negative_prompt", String::new()),
        ("size", "512x512".to_owned()),
        ("seed", "7".to_owned()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for _ in 0..2 {
        let sent = post_form(&app, &member, "/studio", &fields).await;
        assert_see_other(&sent, "/studio?done=queued");
    }
    let jobs = api(&app, &member, "GET", "/api/v1/generations", None).await;
    let jobs = jobs["items"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "one job per form");
    let id = jobs[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(jobs[0]["seed"], 7);

    let listed = get(&app, Some(&member), "/studio?done=queued").await;
    assert!(listed.body.contains("a teapot on the moon"));
    assert!(listed.body.contains(r#"data-field="status""#));
    if listed.body.contains("status-queued") || listed.body.contains("status-running") {
        assert!(listed.body.contains(&format!(
            r#"data-live-src="/api/v1/generations/{id}/events""#
        )));
        assert!(listed
            .body
            .contains(r#"<noscript><meta http-equiv="refresh" content="3"></noscript>"#));
    }
    wait_for_asset(&app, &member, &id).await;
    let done = get(&app, Some(&member), "/studio").await;
    assert!(done.body.contains(&format!(r#"href="/assets/{id}""#)));
    assert!(!done.body.contains("http-equiv=\"refresh\""));

    let bad = post_form(
        &app,
        &member,
        "/studio",
        &[
            ("csrf_token", &member.csrf_token),
            ("idempotency_key", "k-bad"),
            ("prompt", "a cat"),
            ("size", "13x13"),
        ],
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await;
}

async fn pages_have_landmarks_labels_and_no_inline_script(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (seller, buyer) = (app.signed_up_user().await, app.signed_up_user().await);
    let asset = asset_of(&app, &seller, "a lighthouse <b>at</b> dusk").await;
    let listing = list(&app, &seller, &asset, 1_000).await;
    app.top_up(&buyer, 5_000).await;
    let offer = format!("/market/{listing}/offers");
    submit(
        &app,
        &buyer,
        &format!("/market/{listing}"),
        &offer,
        &[("amount", "5"), ("expires_in", "3600")],
    )
    .await;

    let pages = [
        (None, "/market".to_owned()),
        (None, format!("/market/{listing}")),
        (Some(&buyer), format!("/market/{listing}")),
        (Some(&seller), format!("/market/{listing}")),
        (None, format!("/assets/{asset}")),
        (Some(&seller), format!("/assets/{asset}")),
        (Some(&buyer), "/wallet".to_owned()),
        (Some(&buyer), "/offers".to_owned()),
        (Some(&seller), "/offers".to_owned()),
        (None, "/studio".to_owned()),
        (Some(&seller), "/studio".to_owned()),
    ];
    for (user, path) in pages {
        let page = get(&app, user, &path).await;
        page.assert_ok();
        let html = &page.body;
        let at = |what: &str| {
            format!(
                "{path} ({}): {what}",
                if user.is_some() { "member" } else { "visitor" }
            )
        };
        assert_eq!(html.matches("<main").count(), 1, "{}", at("one main"));
        assert!(
            html.contains(r#"<nav class="site-nav" aria-label="Main">"#),
            "{}",
            at("nav")
        );
        assert_eq!(html.matches("<h1").count(), 1, "{}", at("one h1"));
        assert!(!html.contains("<b>at</b>"), "{}", at("prompts are escaped"));
        // Scripts: only the site's one file, nothing inline.
        let scripts: Vec<&str> = html
            .match_indices("<script")
            .map(|(i, _)| &html[i..])
            .collect();
        assert_eq!(scripts.len(), 1, "{}", at("one script"));
        assert!(scripts[0].starts_with(r#"<script src="/static/live.js" defer></script>"#));
        assert!(
            !html.contains(" onclick=") && !html.contains(" style="),
            "{}",
            at("no inline")
        );
        // Images have alt text.
        for (i, _) in html.match_indices("<img") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            assert!(tag.contains(" alt=\""), "{}", at(tag));
        }
        // Every visible control has a label.
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
                    .unwrap_or_else(|| panic!("{}", at(&format!("no id: {tag}"))));
                assert!(
                    html.contains(&format!(r#"<label for="{id}""#)),
                    "{}",
                    at(&format!("no label for {id}"))
                );
            }
        }
    }
    app.stop().await;
}

async fn pages_name_sellers_and_owners_by_their_display_names(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    // A seller with a name of their own (testkit users are all "Test User").
    let client = app.new_client();
    let email = format!("ines-{}@example.com", uuid::Uuid::now_v7().simple());
    let r = app
        .signup(&client, &email, "Inès Sellier", "correct horse battery")
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let seller = User {
        client,
        email,
        password: "correct horse battery".into(),
        id: body["user"]["id"].as_str().unwrap().to_owned(),
        csrf_token: body["csrf_token"].as_str().unwrap().to_owned(),
    };
    let asset = asset_of(&app, &seller, "a named lighthouse").await;
    let listing = list(&app, &seller, &asset, 900).await;
    let visitor = app.signed_up_user().await;
    // The name arrives with identity's UserRegistered event: at once, or a moment later.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = get(&app, Some(&visitor), &format!("/market/{listing}")).await;
        assert_eq!(page.status, StatusCode::OK);
        if page.main().contains("Inès Sellier") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the seller is never named: {}",
            page.main()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let market = get(&app, None, "/market").await;
    assert!(
        market.main().contains("Inès Sellier"),
        "the market card names the seller"
    );
    let asset_page = get(&app, None, &format!("/assets/{asset}")).await;
    assert!(
        asset_page.main().contains("Inès Sellier"),
        "the owner history names them"
    );
    // Their own pages call them "you".
    let own = get(&app, Some(&seller), &format!("/market/{listing}")).await;
    assert!(own.main().contains("you"));
}

/// live.js adds new listings to open market pages with the card the server renders at
/// `/market/{id}/card`: there for an open listing, gone once it is sold; the first page of
/// an unfiltered market says it takes such cards, a filtered one does not.
async fn an_open_listings_card_is_served_alone_for_live_pages(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.signed_up_user().await;
    let asset = asset_of(&app, &seller, "a card of its own").await;
    let listing = list(&app, &seller, &asset, 700).await;
    let card = get(&app, None, &format!("/market/{listing}/card")).await;
    assert_eq!(card.status, StatusCode::OK);
    assert!(
        card.body.trim_start().starts_with("<li"),
        "a fragment: {}",
        card.body
    );
    assert!(card
        .body
        .contains(&format!(r#"data-listing-id="{listing}""#)));
    assert!(card.body.contains(r#"data-price="700""#));
    assert!(card.body.contains("a card of its own"));
    let market = get(&app, None, "/market").await;
    assert!(market.body.contains(r#"data-live-insert="newest""#));
    let filtered = get(&app, None, "/market?q=card").await;
    assert!(!filtered.body.contains("data-live-insert"));
    let buyer = app.signed_up_user().await;
    app.top_up(&buyer, 1_000).await;
    api(
        &app,
        &buyer,
        "POST",
        &format!("/api/v1/listings/{listing}/buy"),
        None,
    )
    .await;
    let gone = get(&app, None, &format!("/market/{listing}/card")).await;
    assert_eq!(gone.status, StatusCode::CONFLICT);
    let unknown = get(&app, None, "/market/not-a-listing/card").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

/// With images in S3 (the local S3 double at `RENDERMART_TEST_S3_URL`), the pages' images
/// still come from the site itself: the thumbnail is served by the app, not a redirect to
/// the bucket's origin, which the pages' CSP would block. Skipped without the double.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_images_in_s3_the_market_pages_thumbnails_are_same_origin() {
    let Some(s3) = std::env::var("RENDERMART_TEST_S3_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("skipped: RENDERMART_TEST_S3_URL is not set");
        return;
    };
    let bucket = format!("rm-pages-{}", uuid::Uuid::now_v7().simple());
    let app = TestApp::spawn_with(Stack::Embedded, |s| {
        let objects = &mut s.objects;
        objects.backend = rendermart_platform::objects::Backend::S3;
        objects.s3.bucket = bucket.clone();
        objects.s3.endpoint = Some(s3.clone());
        objects.s3.path_style = true;
        objects.s3.access_key_id = Some("testing".into());
        objects.s3.secret_access_key = Some("testing".to_owned().into());
        objects.s3.create_bucket = true;
    })
    .await
    .unwrap();
    let seller = app.signed_up_user().await;
    let asset = asset_of(&app, &seller, "a lighthouse kept in a bucket").await;
    list(&app, &seller, &asset, 500).await;
    let market = get(&app, None, "/market").await;
    let img = format!(r#"src="/api/v1/assets/{asset}/thumbnail""#);
    assert!(market.body.contains(&img), "{}", market.main());
    let thumbnail = app
        .new_client()
        .get(app.url(&format!("/api/v1/assets/{asset}/thumbnail")))
        .send()
        .await
        .unwrap();
    assert_eq!(thumbnail.status(), StatusCode::OK);
    let png = thumbnail.bytes().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // The original goes to its owner through a pre-signed link to the bucket.
    let original = seller
        .client
        .get(app.url(&format!("/api/v1/assets/{asset}/original")))
        .send()
        .await
        .unwrap();
    assert_eq!(original.status(), StatusCode::FOUND);
    let location = original.headers()[header::LOCATION].to_str().unwrap();
    assert!(location.starts_with(&s3), "{location}");
    app.stop().await;
}
