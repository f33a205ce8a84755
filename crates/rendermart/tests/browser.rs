//! The site in a real browser: headless Chromium driven through WebDriver (chromedriver),
//! clicking links and buttons and typing into forms the way a person does.
//!
//! Runs when `RENDERMART_TEST_CHROMEDRIVER` names a chromedriver binary (CI sets it, and
//! `RENDERMART_TEST_CHROMIUM` for the browser, default `/usr/bin/chromium`); without it the
//! test says it skipped and passes, so plain `cargo test` works on a bare machine.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    panic::AssertUnwindSafe,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{elements::Element, wd::TimeoutConfiguration, Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use rendermart_testkit::{Stack, TestApp};
use reqwest::Url;
use serde_json::json;

const CHROMEDRIVER_ENV: &str = "RENDERMART_TEST_CHROMEDRIVER";
const CHROMIUM_ENV: &str = "RENDERMART_TEST_CHROMIUM";
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// How long any one thing a person waits for (a page, an element) may take.
const WAIT: Duration = Duration::from_secs(10);
/// How long the whole walk through the site may take.
const WALK: Duration = Duration::from_secs(120);

const PASSWORD: &str = "correct horse battery staple";
const DISPLAY_NAME: &str = "Grace Browser";
const TOKEN_NAME: &str = "Browser test token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_up_logs_out_and_logs_in_again_in_a_real_browser() {
    let Some(chromedriver) = env_path(CHROMEDRIVER_ENV) else {
        eprintln!(
            "skipped the browser test: set {CHROMEDRIVER_ENV} (and {CHROMIUM_ENV}) to run it"
        );
        return;
    };
    let chromium = env_path(CHROMIUM_ENV).unwrap_or_else(|| DEFAULT_CHROMIUM.into());

    let app = TestApp::spawn(Stack::Embedded).await.unwrap();
    // Declared before the driver so it is removed after the browser is gone.
    let profile = tempfile::tempdir().expect("temp dir for the browser profile");
    let driver = Chromedriver::start(&chromedriver).await;
    let client = connect(&driver, &chromium, profile.path()).await;

    // Whatever happens in the walk, end the WebDriver session (which closes the browser)
    // before reporting it; the driver's guard is the last resort.
    let walk = AssertUnwindSafe(tokio::time::timeout(WALK, walk(&client, &app)))
        .catch_unwind()
        .await;
    let closed = tokio::time::timeout(WAIT, client.close()).await;
    match walk {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Err(_)) => panic!("the walk through the site took longer than {WALK:?}"),
        Ok(Ok(())) => {}
    }
    closed
        .expect("closing the WebDriver session timed out")
        .expect("the WebDriver session closes");
    drop(driver);
    app.stop().await;
}

/// Two people in two real browsers: one generates an image in the studio and lists it, the
/// other buys it from the market; both wallets show the sale, the seller's without a
/// reload (live over server-sent events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_is_generated_listed_and_bought_in_real_browsers() {
    let Some(chromedriver) = env_path(CHROMEDRIVER_ENV) else {
        eprintln!(
            "skipped the browser test: set {CHROMEDRIVER_ENV} (and {CHROMIUM_ENV}) to run it"
        );
        return;
    };
    let chromium = env_path(CHROMIUM_ENV).unwrap_or_else(|| DEFAULT_CHROMIUM.into());
    let app = TestApp::spawn(Stack::Embedded).await.unwrap();
    let profiles = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let driver = Chromedriver::start(&chromedriver).await;
    let seller = connect(&driver, &chromium, profiles.0.path()).await;
    let buyer = connect(&driver, &chromium, profiles.1.path()).await;
    let walk = AssertUnwindSafe(tokio::time::timeout(WALK, trade(&seller, &buyer, &app)))
        .catch_unwind()
        .await;
    let closed = (
        tokio::time::timeout(WAIT, seller.close()).await,
        tokio::time::timeout(WAIT, buyer.close()).await,
    );
    match walk {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Err(_)) => panic!("the trade took longer than {WALK:?}"),
        Ok(Ok(())) => {}
    }
    assert!(closed.0.is_ok() && closed.1.is_ok(), "the sessions close");
    drop(driver);
    app.stop().await;
}

/// The storefront in a real browser: a guest searches the store, opens a product and adds
/// it to a cart, logs in (the guest cart is merged into theirs, which already held
/// another line), checks out with a shipping address, and watches the order page turn
/// to "confirmed" (live over SSE: the page reloads itself when the status changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_searches_adds_to_a_cart_logs_in_and_checks_out_in_a_real_browser() {
    let Some(chromedriver) = env_path(CHROMEDRIVER_ENV) else {
        eprintln!(
            "skipped the browser test: set {CHROMEDRIVER_ENV} (and {CHROMIUM_ENV}) to run it"
        );
        return;
    };
    let chromium = env_path(CHROMIUM_ENV).unwrap_or_else(|| DEFAULT_CHROMIUM.into());
    let app = TestApp::spawn(Stack::Embedded).await.unwrap();
    // The store: two products with stock; a buyer with credits and one line in their cart.
    let (seller, admin, buyer) = (
        app.seller_user().await,
        app.admin_user().await,
        app.signed_up_user().await,
    );
    for (sku, title, price) in [
        ("HARBOUR-A3", "Harbour lights at dusk", 2_400),
        ("MUG-PLAIN", "Plain white mug", 900),
    ] {
        let body = json!({
            "kind": "goods", "title": title, "description": "From the browser test.",
            "category": "prints", "tags": ["test"],
            "variants": [{"sku": sku, "name": "Standard", "price": {"amount": price, "currency": "USD"}}],
        });
        let r = seller
            .client
            .post(app.url("/api/v1/products"))
            .header("x-csrf-token", &seller.csrf_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
        let r = admin
            .client
            .post(app.url(&format!("/api/v1/inventory/{sku}/adjust")))
            .header("x-csrf-token", &admin.csrf_token)
            .json(&json!({"delta": 5, "reason": "received"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
    }
    app.top_up(&buyer, 10_000).await;
    let r = buyer
        .client
        .post(app.url("/api/v1/cart/items"))
        .header("x-csrf-token", &buyer.csrf_token)
        .json(&json!({"sku": "MUG-PLAIN", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let profile = tempfile::tempdir().unwrap();
    let driver = Chromedriver::start(&chromedriver).await;
    let client = connect(&driver, &chromium, profile.path()).await;
    let walk = AssertUnwindSafe(tokio::time::timeout(
        WALK,
        shop(&client, &app, &buyer.email, &buyer.password),
    ))
    .catch_unwind()
    .await;
    let closed = tokio::time::timeout(WAIT, client.close()).await;
    match walk {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Err(_)) => panic!("the shopping took longer than {WALK:?}"),
        Ok(Ok(())) => {}
    }
    assert!(closed.is_ok(), "the session closes");
    drop(driver);
    app.stop().await;
}

async fn shop(client: &Client, app: &TestApp, email: &str, password: &str) {
    // A guest searches the store and opens the product.
    client.goto(&app.url("/store")).await.expect("open /store");
    type_into(client, "#store-q", "harbour").await;
    click(
        client,
        Locator::Css(r#"form[action="/store/search"] button[type="submit"]"#),
    )
    .await;
    // The results page (its filters), not the store home's cards that are still showing
    // while the search loads: a card found there goes stale under the click.
    find(client, ".store-filters").await;
    click(client, Locator::Css("a.card-link")).await;
    wait_for_text(client, "h1", "Harbour lights at dusk").await;
    // Two of it into the guest's cart.
    type_into(client, "form.add-to-cart input[name=quantity]", "2").await;
    click(
        client,
        Locator::Css(r#"form.add-to-cart button[type="submit"]"#),
    )
    .await;
    wait_for_url(client, app, "/cart").await;
    wait_for_text(client, "main", "Harbour lights at dusk").await;
    // Log in: the guest's line joins the mug already in the account's cart.
    client
        .goto(&app.url("/login?next=/cart"))
        .await
        .expect("open /login");
    type_into(client, "#email", email).await;
    type_into(client, "#password", password).await;
    click(
        client,
        Locator::Css(r#"form[action="/login"] button[type="submit"]"#),
    )
    .await;
    client.goto(&app.url("/cart")).await.expect("open /cart");
    wait_for_text(client, "main", "Harbour lights at dusk").await;
    wait_for_text(client, "main", "Plain white mug").await;
    // Check out: 2 × 24.00 + 9.00.
    click(client, Locator::Css(r#"main a[href="/checkout"]"#)).await;
    wait_for_url(client, app, "/checkout").await;
    wait_for_text(client, r#"[data-field="total"]"#, "57.00 USD").await;
    type_into(client, "#ship-name", "Grace Browser").await;
    type_into(client, "#ship-line1", "1 Lighthouse Lane").await;
    type_into(client, "#ship-city", "Portsmouth").await;
    type_into(client, "#ship-postal", "PO1 1AA").await;
    type_into(client, "#ship-country", "GB").await;
    click(
        client,
        Locator::Css(r#"form[action="/checkout"] button[type="submit"]"#),
    )
    .await;
    // The order page: pending at first, then confirmed without anyone reloading it.
    wait_for_text_within(
        client,
        r#"[data-field="status"]"#,
        "confirmed",
        Duration::from_secs(30),
    )
    .await;
    let url = client.current_url().await.expect("the current URL");
    assert!(url.path().starts_with("/orders/"), "at {url}");
    wait_for_text(client, "main", "57.00 USD").await;
}

/// Signs a new person up through the sign-up page and tops their wallet up by `amount`
/// (major units, as typed) on the wallet page.
async fn sign_up_with_credits(client: &Client, app: &TestApp, name: &str, amount: &str) {
    let email = format!(
        "{}-{}@example.com",
        name.to_lowercase(),
        uuid::Uuid::now_v7().simple()
    );
    client
        .goto(&app.url("/signup"))
        .await
        .expect("open /signup");
    type_into(client, "#email", &email).await;
    type_into(client, "#display_name", name).await;
    type_into(client, "#password", PASSWORD).await;
    click(
        client,
        Locator::Css(r#"form[action="/signup"] button[type="submit"]"#),
    )
    .await;
    wait_for_url(client, app, "/account").await;
    click(client, Locator::Css(r#".site-nav a[href="/wallet"]"#)).await;
    wait_for_url(client, app, "/wallet").await;
    type_into(client, "#topup-amount", amount).await;
    click(
        client,
        Locator::Css(r#"form[action="/wallet/topups"] button[type="submit"]"#),
    )
    .await;
    wait_for_text(
        client,
        r#"[data-field="balance"]"#,
        &format!("{amount} USD"),
    )
    .await;
}

/// Waits (bounded, `within`) until the element's text contains `want`.
async fn wait_for_text_within(client: &Client, css: &str, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let text = match client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        // As shown: a stylesheet may capitalize a status ("confirmed" reads "Confirmed").
        if text.to_lowercase().contains(&want.to_lowercase()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never said {want:?} within {within:?} (it says {text:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_text(client: &Client, css: &str, want: &str) {
    wait_for_text_within(client, css, want, WAIT).await;
}

async fn trade(seller: &Client, buyer: &Client, app: &TestApp) {
    // The buyer is already looking at the market when the image is listed.
    sign_up_with_credits(buyer, app, "Buyer", "50.00").await;
    click(buyer, Locator::Css(r#".site-nav a[href="/market"]"#)).await;
    wait_for_url(buyer, app, "/market").await;
    buyer
        .execute("window.rmStillHere = 7; return null;", vec![])
        .await
        .expect("mark the market page");

    // The seller: credits, then an image from the studio (the default size, 1.00 USD).
    sign_up_with_credits(seller, app, "Seller", "20.00").await;
    click(seller, Locator::Css(r#".site-nav a[href="/studio"]"#)).await;
    wait_for_url(seller, app, "/studio").await;
    type_into(seller, "#prompt", "a lighthouse at dusk over a calm ocean").await;
    click(
        seller,
        Locator::Css(r#"form[action="/studio"] button[type="submit"]"#),
    )
    .await;
    // The page follows the generation live and shows the image's link when it is done.
    let image = match seller
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css(".image-grid a.card-link"))
        .await
    {
        Ok(link) => link,
        Err(err) => panic!("the generated image never appeared in the studio: {err}"),
    };
    image.click().await.expect("open the image");
    // Its asset page: list it for 12.50.
    type_into(seller, "#list-price", "12.50").await;
    click(
        seller,
        Locator::Css(r#"form[action$="/list"] button[type="submit"]"#),
    )
    .await;
    let listing_url = loop {
        let url = seller.current_url().await.expect("the url").to_string();
        if url.contains("/market/") {
            break url;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The seller watches their wallet: 20.00 less the image's 1.00.
    seller
        .goto(&app.url("/wallet"))
        .await
        .expect("open /wallet");
    wait_for_text(seller, r#"[data-field="balance"]"#, "19.00 USD").await;
    // A mark on this very page: it is gone if the page is ever reloaded.
    seller
        .execute("window.rmStillHere = 42; return null;", vec![])
        .await
        .expect("mark the page");

    // The new listing appeared on the buyer's open market page, without a reload.
    wait_for_text_within(
        buyer,
        "#listings",
        "a lighthouse at dusk over a calm ocean",
        Duration::from_secs(15),
    )
    .await;
    let mark = buyer
        .execute("return window.rmStillHere || null;", vec![])
        .await
        .expect("read the mark");
    assert_eq!(
        mark,
        json!(7),
        "the market page was updated in place, not reloaded"
    );
    click(buyer, Locator::Css("#listings a.card-link")).await;
    let at = buyer.current_url().await.expect("the url").to_string();
    assert_eq!(
        at.split('?').next(),
        listing_url.split('?').next(),
        "the card leads to the listing"
    );
    click(
        buyer,
        Locator::Css(r#"form[action$="/buy"] button[type="submit"]"#),
    )
    .await;
    wait_for_text(buyer, "main", "You bought this image").await;
    click(buyer, Locator::Css(r#".site-nav a[href="/wallet"]"#)).await;
    wait_for_text(buyer, r#"[data-field="balance"]"#, "37.50 USD").await;

    // The seller's open wallet page shows the sale without a reload: 19.00 + 12.50 less the
    // 5 % fee (0.62).
    wait_for_text_within(
        seller,
        r#"[data-field="balance"]"#,
        "30.88 USD",
        Duration::from_secs(15),
    )
    .await;
    let mark = seller
        .execute("return window.rmStillHere || null;", vec![])
        .await
        .expect("read the mark");
    assert_eq!(
        mark,
        json!(42),
        "the seller's page was updated in place, not reloaded"
    );
}

/// Sign up, log out, fail to log in, log in, make an API token, log out.
async fn walk(client: &Client, app: &TestApp) {
    let email = format!("browser-{}@example.com", uuid::Uuid::now_v7().simple());

    // The home page, signed out: follow the header's "Sign up" link.
    client
        .goto(&app.url("/"))
        .await
        .expect("open the home page");
    wait_for_url(client, app, "/").await;
    click(client, Locator::LinkText("Sign up")).await;
    wait_for_url(client, app, "/signup").await;

    // Fill in the sign-up form and send it.
    let form = Locator::Css(r#"form[action="/signup"]"#);
    wait_for(client, form).await;
    type_into(client, "#email", &email).await;
    type_into(client, "#display_name", DISPLAY_NAME).await;
    type_into(client, "#password", PASSWORD).await;
    click(
        client,
        Locator::Css(r#"form[action="/signup"] button[type="submit"]"#),
    )
    .await;

    // Signed in, on the account page, which shows who they are.
    wait_for_url(client, app, "/account").await;
    assert_account_page(client, &email).await;
    let who = text_of(client, ".session .who").await;
    assert!(who.contains(DISPLAY_NAME), "the header names them: {who:?}");

    // The header's "Log out" button: back home, signed out.
    log_out(client, app).await;

    // The account page is for members only now.
    client
        .goto(&app.url("/account"))
        .await
        .expect("open /account");
    wait_for_url(client, app, "/login?next=/account").await;

    // To the log-in page from the header, as a person would.
    click(client, Locator::Css("a.brand")).await;
    wait_for_url(client, app, "/").await;
    click(client, Locator::Css(r#".session a[href="/login"]"#)).await;
    wait_for_url(client, app, "/login").await;

    // A wrong password is refused, and the email typed is kept.
    wait_for(client, Locator::Css(r#"form[action="/login"]"#)).await;
    type_into(client, "#email", &email).await;
    type_into(client, "#password", "not the right password").await;
    click(
        client,
        Locator::Css(r#"form[action="/login"] button[type="submit"]"#),
    )
    .await;
    let alert = wait_for(client, Locator::Css("#login-error")).await;
    let message = alert.text().await.expect("the alert's text");
    assert_eq!(message.trim(), "Email or password is incorrect.");
    let kept = find(client, "#email")
        .await
        .prop("value")
        .await
        .expect("the email field's value");
    assert_eq!(kept.as_deref(), Some(email.as_str()), "the email is kept");
    assert!(
        client
            .find_all(Locator::Css("form[action=\"/logout\"]"))
            .await
            .expect("look for a log-out button")
            .is_empty(),
        "a wrong password signs nobody in"
    );

    // The right password: signed in, on the account page.
    type_into(client, "#password", PASSWORD).await;
    click(
        client,
        Locator::Css(r#"form[action="/login"] button[type="submit"]"#),
    )
    .await;
    wait_for_url(client, app, "/account").await;
    assert_account_page(client, &email).await;

    // An API token: its secret is shown once, right after it is made.
    type_into(client, "#token-name", TOKEN_NAME).await;
    click(
        client,
        Locator::Css(r#"form[action="/account/tokens"] button[type="submit"]"#),
    )
    .await;
    let secret = wait_for(client, Locator::Css("code.secret"))
        .await
        .text()
        .await
        .expect("the secret's text");
    let secret = secret.trim().to_owned();
    assert!(
        secret.starts_with("rmt_") && secret.len() > "rmt_".len() + 16,
        "the new token's secret is shown: {secret:?}"
    );
    let created = text_of(client, "#created-title").await;
    assert!(created.contains(TOKEN_NAME), "{created:?}");

    // Coming back to the account page: the token is listed, its secret is gone.
    client
        .goto(&app.url("/account"))
        .await
        .expect("open /account again");
    wait_for_url(client, app, "/account").await;
    assert_account_page(client, &email).await;
    assert!(
        client
            .find_all(Locator::Css("code.secret"))
            .await
            .expect("look for a secret")
            .is_empty(),
        "the secret is shown only once"
    );
    let source = client.source().await.expect("the page's source");
    assert!(
        !source.contains(&secret),
        "the secret is nowhere on the page"
    );
    let tokens = text_of(client, "table.table tbody").await;
    assert!(
        tokens.contains(TOKEN_NAME),
        "the token is listed: {tokens:?}"
    );

    // A picture of the account page for a person to look at.
    match client.screenshot().await {
        Ok(png) => {
            let path = screenshot_path();
            match std::fs::write(&path, png) {
                Ok(()) => eprintln!("screenshot of the account page: {}", path.display()),
                Err(err) => eprintln!("could not write {}: {err}", path.display()),
            }
        }
        Err(err) => eprintln!("could not take a screenshot: {err}"),
    }

    log_out(client, app).await;
}

/// The account page, with the profile of the person signed in.
async fn assert_account_page(client: &Client, email: &str) {
    wait_for(client, Locator::Css("#profile-title")).await;
    let heading = text_of(client, "main h1").await;
    assert_eq!(heading.trim(), "Your account");
    let profile = text_of(client, "dl.details").await;
    assert!(profile.contains(DISPLAY_NAME), "display name: {profile:?}");
    assert!(profile.contains(email), "email: {profile:?}");
}

/// Clicks the header's "Log out" button and checks the visitor is signed out.
async fn log_out(client: &Client, app: &TestApp) {
    click(
        client,
        Locator::Css(r#".session form[action="/logout"] button[type="submit"]"#),
    )
    .await;
    wait_for_url(client, app, "/").await;
    wait_for(client, Locator::Css(r#".session a[href="/signup"]"#)).await;
    let session = text_of(client, ".session").await;
    assert!(
        session.contains("Log in") && session.contains("Sign up"),
        "the header offers to log in or sign up: {session:?}"
    );
    assert!(
        !session.contains(DISPLAY_NAME) && !session.contains("Log out"),
        "nobody is signed in: {session:?}"
    );
}

/// Waits (bounded) until the browser is at `path` on the app.
async fn wait_for_url(client: &Client, app: &TestApp, path: &str) {
    let want = Url::parse(&app.url(path)).expect("a valid URL");
    if let Err(err) = client.wait().at_most(WAIT).for_url(want.clone()).await {
        let at = client.current_url().await.map(String::from);
        panic!("expected to be at {want} within {WAIT:?} ({err}); the browser is at {at:?}");
    }
}

/// Waits (bounded) until an element is on the page.
async fn wait_for(client: &Client, locator: Locator<'_>) -> Element {
    match client.wait().at_most(WAIT).for_element(locator).await {
        Ok(element) => element,
        Err(err) => {
            let at = client.current_url().await.map(String::from);
            panic!("{locator:?} did not appear within {WAIT:?} ({err}); the browser is at {at:?}");
        }
    }
}

async fn find(client: &Client, css: &str) -> Element {
    wait_for(client, Locator::Css(css)).await
}

async fn text_of(client: &Client, css: &str) -> String {
    find(client, css)
        .await
        .text()
        .await
        .unwrap_or_else(|err| panic!("the text of {css}: {err}"))
}

async fn click(client: &Client, locator: Locator<'_>) {
    wait_for(client, locator)
        .await
        .click()
        .await
        .unwrap_or_else(|err| panic!("click {locator:?}: {err}"));
}

/// Types into an input, replacing what it held.
async fn type_into(client: &Client, css: &str, text: &str) {
    let input = find(client, css).await;
    input
        .clear()
        .await
        .unwrap_or_else(|err| panic!("clear {css}: {err}"));
    input
        .send_keys(text)
        .await
        .unwrap_or_else(|err| panic!("type into {css}: {err}"));
}

/// `target/browser-account.png` in the workspace (or `CARGO_TARGET_DIR`).
fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // crates/rendermart -> the workspace root.
            let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            manifest
                .ancestors()
                .nth(2)
                .unwrap_or(manifest)
                .join("target")
        });
    target.join("browser-account.png")
}

fn env_path(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A session in headless Chromium, kept off the network.
async fn connect(driver: &Chromedriver, chromium: &str, profile: &std::path::Path) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object")
    };
    let client = tokio::time::timeout(
        Duration::from_secs(60),
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url),
    )
    .await
    .expect("Chromium started within 60s")
    .unwrap_or_else(|err| panic!("a WebDriver session with {chromium}: {err}"));
    // Bounded page loads and scripts; no implicit waits (the test waits explicitly).
    client
        .update_timeouts(TimeoutConfiguration::new(
            Some(WAIT),
            Some(Duration::from_secs(30)),
            Some(Duration::ZERO),
        ))
        .await
        .expect("set the WebDriver timeouts");
    client
}

/// chromedriver, run by this test on a free port, stopped when dropped (even on panic).
struct Chromedriver {
    child: Child,
    port: u16,
    url: String,
}

impl Chromedriver {
    async fn start(binary: &str) -> Self {
        let port = {
            let listener =
                TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free local port");
            listener.local_addr().expect("its address").port()
        };
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("start {binary}: {err}"));
        let mut driver = Self {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return driver;
            }
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("{binary} exited before accepting connections: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "{binary} did not accept connections on port {port} within 20s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks chromedriver to quit its browsers and exit (`GET /shutdown`), bounded.
    fn ask_to_shut_down(&self) {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let request = format!(
            "GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            let _ = stream.read(&mut [0; 256]);
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.ask_to_shut_down();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
