//! The store's pages through the real application, on both stacks: the store's home,
//! search and category pages (landmarks, labels, facet counts, the search finds what was
//! listed, bad parameters are 4xx pages), and the product page (availability from
//! inventory, an "Add to cart" form per orderable variant with the anonymous CSRF token
//! and its cookie).

use std::time::{Duration, Instant};

use rendermart_testkit::{Stack, TestApp, User};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};

rendermart_testkit::on_both_stacks!(
    store_pages_have_landmarks_labels_and_facet_counts,
    bad_store_parameters_are_4xx_pages,
    the_product_page_offers_each_orderable_variant_to_the_cart,
    anonymous_visitors_see_one_page_with_their_own_token_and_every_change_at_once,
);

struct Page {
    status: StatusCode,
    headers: header::HeaderMap,
    body: String,
}

async fn get(app: &TestApp, client: &reqwest::Client, path: &str) -> Page {
    let r = client.get(app.url(path)).send().await.unwrap();
    Page {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

impl Page {
    fn ok(self) -> Self {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        self
    }

    /// The page is in the site's frame, with its landmarks, and nothing inline.
    fn assert_accessible_frame(&self) {
        for part in [
            r#"<html lang="en">"#,
            r##"<a class="skip-link" href="#main">"##,
            r#"<nav class="site-nav" aria-label="Main">"#,
            r#"<main id="main""#,
            "<footer",
            "<h1>",
            r#"<a href="/store" aria-current="page">Store</a>"#,
        ] {
            assert!(self.body.contains(part), "missing {part}: {}", self.body);
        }
        assert!(!self.body.contains("style="), "inline style");
        assert!(!self.body.contains("<script>"), "inline script");
        let csp = self.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        // Every input but hidden ones and buttons has a label.
        for (at, _) in self.body.match_indices("<input ") {
            let tag = &self.body[at..at + self.body[at..].find('>').unwrap()];
            if tag.contains(r#"type="hidden""#) {
                continue;
            }
            let id = tag
                .split(r#"id=""#)
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("an input without an id: {tag}"));
            assert!(
                self.body.contains(&format!(r#"<label for="{id}""#)),
                "no label for {id}"
            );
        }
    }
}

async fn create(app: &TestApp, seller: &User, body: Value) -> Value {
    let r = seller
        .client
        .post(app.url("/api/v1/products"))
        .header("x-csrf-token", &seller.csrf_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

async fn stock(app: &TestApp, admin: &User, sku: &str, delta: i64) {
    let r = admin
        .client
        .post(app.url(&format!("/api/v1/inventory/{sku}/adjust")))
        .header("x-csrf-token", &admin.csrf_token)
        .json(&json!({"delta": delta, "reason": "test stock"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

fn goods(sku: &str, title: &str, kind: &str, category: &str, tags: &[&str]) -> Value {
    json!({
        "kind": kind,
        "title": title,
        "description": format!("{title}, made to last."),
        "category": category,
        "tags": tags,
        "variants": [
            {"sku": format!("{sku}-1"), "name": "Hardcover", "options": {"format": "hardcover"}, "price": {"amount": 2400, "currency": "USD"}},
            {"sku": format!("{sku}-2"), "name": "Paperback", "options": {"format": "paperback"}, "price": {"amount": 1200, "currency": "USD"}},
        ],
    })
}

/// Polls `path` until its body satisfies `done` (at most 15 s): stock events take a moment.
/// An image `seller` generated and now owns (a print names one only its owner may sell).
async fn asset_of(app: &TestApp, seller: &User) -> String {
    app.top_up(seller, 50).await;
    let r = seller
        .client
        .post(app.url("/api/v1/generations"))
        .header("x-csrf-token", &seller.csrf_token)
        .header("idempotency-key", "store-pages-lighthouse")
        .json(&json!({"prompt": "a lighthouse at dusk", "width": 512, "height": 512}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    let path = format!("/api/v1/assets/{id}");
    while seller
        .client
        .get(app.url(&path))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::OK
    {
        assert!(Instant::now() < deadline, "the asset never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    id
}

async fn wait_for_page(app: &TestApp, path: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = get(app, &app.new_client(), path).await;
        if done(&page.body) {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never got there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn store_pages_have_landmarks_labels_and_facet_counts(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.seller_user().await;
    let admin = app.admin_user().await;
    create(
        &app,
        &seller,
        goods(
            "HARB",
            "The Harbour Keeper",
            "book",
            "books",
            &["sea", "novel"],
        ),
    )
    .await;
    create(
        &app,
        &seller,
        goods("TOWN", "Town of Lanterns", "book", "books", &["novel"]),
    )
    .await;
    create(
        &app,
        &seller,
        goods("MAP", "Harbour map", "goods", "wall-art", &["sea"]),
    )
    .await;
    stock(&app, &admin, "HARB-2", 3).await;

    let anonymous = app.new_client();
    let home = get(&app, &anonymous, "/store").await.ok();
    home.assert_accessible_frame();
    assert!(
        home.body.contains(r#"<label for="store-q">"#),
        "{}",
        home.body
    );
    assert!(home.body.contains(r#"role="search""#));
    assert!(
        home.body
            .contains(r#"href="/store/c/books">Books <span class="count">(2"#),
        "{}",
        home.body
    );
    assert!(home
        .body
        .contains(r#"href="/store/c/wall-art">Wall art <span class="count">(1"#));
    assert!(home.body.contains("Newest products"));
    assert!(home.body.contains("Town of Lanterns"));

    // The search finds by words; facets count the matches; the checkbox counts stock.
    wait_for_page(&app, "/store/search?q=harbour&in_stock=true", |b| {
        b.contains("The Harbour Keeper")
    })
    .await;
    let found = get(&app, &anonymous, "/store/search?q=harbour").await.ok();
    found.assert_accessible_frame();
    assert!(found.body.contains("The Harbour Keeper") && found.body.contains("Harbour map"));
    assert!(!found.body.contains("Town of Lanterns"));
    assert!(found.body.contains("2 products"));
    assert!(
        found.body.contains(r#"Books <span class="count">(1)"#),
        "{}",
        found.body
    );
    assert!(
        found.body.contains(r#"sea <span class="count">(2)"#),
        "{}",
        found.body
    );
    assert!(
        found.body.contains(r#"In stock only (1)"#),
        "{}",
        found.body
    );
    assert!(found.body.contains(r#"<select id="f-sort" name="sort">"#));
    assert!(
        found
            .body
            .contains(r#"href="/store/search?q=harbour&amp;category=books""#),
        "{}",
        found.body
    );

    let stocked = get(&app, &anonymous, "/store/search?q=harbour&in_stock=true")
        .await
        .ok();
    assert!(stocked.body.contains("The Harbour Keeper") && !stocked.body.contains("Harbour map"));
    let cheap = get(&app, &anonymous, "/store/search?max_price=12.00&sort=price")
        .await
        .ok();
    assert!(
        cheap.body.contains("3 products"),
        "a paperback of each is 12.00"
    );
    let none = get(&app, &anonymous, "/store/search?min_price=30")
        .await
        .ok();
    assert!(none.body.contains("No product matches"));

    // A category's page, and its next page by cursor.
    let books = get(&app, &anonymous, "/store/c/books").await.ok();
    books.assert_accessible_frame();
    assert!(books.body.contains("<h1>Books</h1>"));
    assert!(books.body.contains("The Harbour Keeper") && !books.body.contains("Harbour map"));
    for i in 0..25 {
        create(
            &app,
            &seller,
            goods(
                &format!("MORE{i}"),
                &format!("Novel number {i}"),
                "book",
                "books",
                &[],
            ),
        )
        .await;
    }
    let first = get(&app, &anonymous, "/store/c/books").await.ok();
    let next = first
        .body
        .split(r#"<a class="btn btn-secondary" href=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a next-page link")
        .replace("&amp;", "&");
    assert!(next.starts_with("/store/c/books?cursor="), "{next}");
    let second = get(&app, &anonymous, &next).await.ok();
    assert!(second.body.contains("First page"));
    assert!(
        second.body.contains("The Harbour Keeper"),
        "the oldest book is on page two"
    );
}

async fn bad_store_parameters_are_4xx_pages(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let anonymous = app.new_client();
    let long = "x".repeat(201);
    for (path, status) in [
        ("/store/search?min_price=cheap", 422),
        ("/store/search?max_price=-3", 422),
        ("/store/search?min_price=20&max_price=10", 422),
        ("/store/search?in_stock=maybe", 422),
        ("/store/search?sort=random", 422),
        ("/store/search?cursor=zzz", 422),
        ("/store/search?q=a+b+c+d+e+f+g+h+i", 422),
        (&format!("/store/search?q={long}"), 422),
        ("/store/search?tag=%20%20!!", 422),
        ("/store/search?category=Not_A_Slug", 422),
        ("/store/search?q=a&q=b", 400),
        ("/store/c/Not_A_Slug", 404),
        ("/store/p/0193f7a0-0000-7000-8000-000000000001", 404),
        ("/store/p/NO-SUCH-SKU", 404),
        ("/store/p/%20", 404),
    ] {
        let page = get(&app, &anonymous, path).await;
        assert_eq!(page.status.as_u16(), status, "{path}: {}", page.body);
        assert!(page.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(page.body.contains("<main"), "{path} is a page in the frame");
    }
    // The bad field is named.
    let page = get(&app, &anonymous, "/store/search?min_price=cheap").await;
    assert!(page.body.contains("min_price"), "{}", page.body);
}

async fn the_product_page_offers_each_orderable_variant_to_the_cart(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.seller_user().await;
    let admin = app.admin_user().await;
    let asset = asset_of(&app, &seller).await;
    let mut body = goods("LH", "Lighthouse at dusk", "print", "wall-art", &["sea"]);
    body["asset_id"] = json!(asset);
    body["variants"] = json!([
        {"sku": "LH-A3", "name": "A3 matte", "options": {"size": "A3", "paper": "matte"}, "price": {"amount": 4500, "currency": "USD"}},
        {"sku": "LH-A2", "name": "A2 gloss", "options": {"size": "A2", "paper": "gloss"}, "price": {"amount": 6500, "currency": "USD"}},
        {"sku": "LH-A1", "name": "A1 gloss", "options": {"size": "A1", "paper": "gloss"}, "price": {"amount": 9500, "currency": "USD"}},
    ]);
    let product = create(&app, &seller, body).await;
    let id = product["id"].as_str().unwrap();
    stock(&app, &admin, "LH-A3", 40).await;
    stock(&app, &admin, "LH-A2", 2).await;

    let visitor = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let page = get(&app, &visitor, &format!("/store/p/{id}")).await.ok();
    page.assert_accessible_frame();
    let b = &page.body;
    assert!(b.contains("<h1>Lighthouse at dusk</h1>"));
    assert!(b.contains(r#"aria-label="Breadcrumb""#));
    assert!(b.contains(&format!(
        r#"<img src="/api/v1/assets/{asset}/thumbnail" alt="Lighthouse at dusk""#
    )));
    assert!(b.contains("45.00 – 95.00 USD"), "{b}");
    assert!(b.contains("Size: A3, Paper: matte") || b.contains("Paper: matte, Size: A3"));
    assert!(
        b.contains(r#"<span class="stock stock-in">In stock</span>"#),
        "{b}"
    );
    assert!(
        b.contains(r#"<span class="stock stock-few">Only 2 left</span>"#),
        "{b}"
    );
    assert!(
        b.contains(r#"<span class="stock stock-out">Out of stock</span>"#),
        "{b}"
    );
    // A form for each variant that can be ordered, none for the one that cannot.
    assert_eq!(
        b.matches(r#"<form method="post" action="/cart/items""#)
            .count(),
        2,
        "{b}"
    );
    assert!(b.contains(r#"<input type="hidden" name="sku" value="LH-A3">"#));
    assert!(b.contains(r#"<input type="hidden" name="sku" value="LH-A2">"#));
    assert!(!b.contains(r#"name="sku" value="LH-A1""#));
    assert!(b.contains(r#"<label for="qty-1">Quantity</label>"#));
    assert!(b.contains(r#"<input id="qty-1" name="quantity" type="number" inputmode="numeric" min="1" max="40" value="1" required>"#), "{b}");
    assert!(b.contains(r#"max="2""#));
    // The anonymous form token, in each form and in its cookie.
    let token = b
        .split(r#"<input type="hidden" name="csrf_token" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    assert!(token.len() > 43 && token.contains('.'), "{token}");
    assert_eq!(
        b.matches(&format!(r#"name="csrf_token" value="{token}""#))
            .count(),
        2
    );
    let cookie = page.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with(&format!("rm_csrf={token}")), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");

    // The same visitor keeps their token; the page is found by SKU too.
    let again = get(&app, &visitor, "/store/p/lh-a2").await.ok();
    assert!(again.body.contains(&format!(r#"value="{token}""#)));
    assert!(again.headers.get(header::SET_COOKIE).is_none());

    // Archived: still shown, no longer sold, no forms.
    let r = seller
        .client
        .delete(app.url(&format!("/api/v1/products/{id}")))
        .header("x-csrf-token", &seller.csrf_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let archived = get(&app, &visitor, &format!("/store/p/{id}")).await.ok();
    assert!(archived.body.contains("no longer sold"));
    assert!(!archived.body.contains("/cart/items"));
}

/// The form token of a product page (the first form's).
fn form_token(body: &str) -> String {
    body.split(r#"<input type="hidden" name="csrf_token" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned()
}

async fn anonymous_visitors_see_one_page_with_their_own_token_and_every_change_at_once(
    stack: Stack,
) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.seller_user().await;
    let admin = app.admin_user().await;
    let product = create(
        &app,
        &seller,
        goods("OWL", "The owl at noon", "book", "books", &[]),
    )
    .await;
    let id = product["id"].as_str().unwrap().to_owned();
    let path = format!("/store/p/{id}");
    stock(&app, &admin, "OWL-1", 30).await;
    stock(&app, &admin, "OWL-2", 8).await;

    let (ann, bob) = (app.new_client(), app.new_client());
    let first = get(&app, &ann, &path).await.ok();
    let second = get(&app, &bob, &path).await.ok();
    let (t1, t2) = (form_token(&first.body), form_token(&second.body));
    assert_ne!(t1, t2, "each visitor has a token of their own");
    for (page, token) in [(&first, &t1), (&second, &t2)] {
        assert_eq!(
            page.body.matches(token.as_str()).count(),
            2,
            "{}",
            page.body
        );
        let cookie = page.headers[header::SET_COOKIE].to_str().unwrap();
        assert!(cookie.starts_with(&format!("rm_csrf={token};")), "{cookie}");
        assert!(!page.body.contains('\u{1}'), "no slot is left in the page");
    }
    assert_eq!(first.body.replace(&t1, "T"), second.body.replace(&t2, "T"));

    // Stock moved here: the next page shows it, whoever asks.
    stock(&app, &admin, "OWL-1", -27).await;
    let page = get(&app, &ann, &path).await.ok();
    assert!(page.body.contains("Only 3 left"), "{}", page.body);
    assert!(page.body.contains(&format!(r#"value="{t1}""#)));
    stock(&app, &admin, "OWL-2", -8).await;
    let page = get(&app, &bob, &path).await.ok();
    assert_eq!(page.body.matches("/cart/items").count(), 1, "{}", page.body);
    assert!(page.body.contains("Out of stock"));

    // The product edited here: the next page shows it.
    let r = seller
        .client
        .patch(app.url(&format!("/api/v1/products/{id}")))
        .header("x-csrf-token", &seller.csrf_token)
        .json(&json!({"title": "The owl at midnight"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = get(&app, &app.new_client(), &path).await.ok();
    assert!(
        page.body.contains("<h1>The owl at midnight</h1>"),
        "{}",
        page.body
    );

    // A member sees the page in their own frame, not an anonymous visitor's.
    let member = get(&app, &seller.client, &path).await.ok();
    assert!(member.body.contains("Log out"), "{}", member.body);
    assert!(!page.body.contains("Log out"));
    assert!(member.body.contains("<h1>The owl at midnight</h1>"));
}
