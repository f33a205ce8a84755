//! The catalog through the real application, on both stacks: who may sell, what a product
//! must be, search (words, rank, facets, cursor pages), archiving, and look-up by SKU.
//! The ranking test asserts one expected order on SQLite and on PostgreSQL alike; the
//! stock test follows inventory's StockAvailable/StockOut over the bus into search. Prints
//! of an image are listed only by its current owner, asked of the wallet (decision 59), in
//! one process and across two.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use rendermart_testkit::{assert_problem, Stack, TestApp, User};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

rendermart_testkit::on_both_stacks!(
    sellers_create_products_with_variants_and_customers_cannot,
    search_finds_by_words_and_ranks_the_same_on_both_stacks,
    facets_count_categories_tags_and_prices_of_the_filtered_results,
    cursor_pages_cover_every_match_once,
    bad_products_get_a_4xx_naming_the_field,
    archived_products_leave_search_but_stay_readable_by_id,
    a_product_is_found_by_sku,
    the_in_stock_filter_follows_inventory,
    only_the_images_current_owner_lists_prints_of_it,
);

/// The catalog in one process asks the wallet in another who owns an image; when its
/// wallet is down, listing a print is a 503 and other products are still listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_wallet_says_who_may_list_prints_and_its_absence_is_a_503() {
    for stack in [Stack::Embedded, Stack::Distributed] {
        // As `TestApp::spawn_split`, but the front is told where identity and the wallet
        // run only (studio has no remote client).
        let secret = format!("test-secret-{}", uuid::Uuid::now_v7().simple());
        let Some(back) = TestApp::spawn_with(stack, |s| {
            s.services = "identity,studio,wallet".parse().expect("service names");
            s.service_secret = Some(secret.clone().into());
        })
        .await
        else {
            continue;
        };
        let front = TestApp::spawn_with(stack, |s| {
            s.services = "catalog,web".parse().expect("service names");
            s.service_secret = Some(secret.clone().into());
            s.set("identity_url", back.url(""));
            s.set("wallet_url", back.url(""));
        })
        .await
        .expect("the front starts where the back did");
        // One user jar works on both: cookies are per host, and both are 127.0.0.1.
        let (owner, other) = (back.seller_user().await, back.seller_user().await);
        let asset = asset_of(&back, &owner, "a remote lighthouse").await;
        let created = create(&front, &owner, print_of(&asset, "REMOTE-1")).await;
        assert_eq!(created["asset_id"], asset.as_str());
        let r = send(
            &front,
            &other,
            "POST",
            "/api/v1/products",
            Some(print_of(&asset, "REMOTE-2")),
        )
        .await;
        assert_problem(r, StatusCode::FORBIDDEN).await;

        // A catalog whose wallet is down (nothing listens there): a print is a 503 that
        // leaks nothing, and goods, which need no wallet, are still listed.
        let walletless = TestApp::spawn_with(stack, |s| {
            s.services = "catalog,web".parse().expect("service names");
            s.service_secret = Some(secret.clone().into());
            s.set("identity_url", back.url(""));
            s.set("wallet_url", "http://127.0.0.1:9");
        })
        .await
        .expect("a catalog starts while its wallet is down");
        let r = send(
            &walletless,
            &owner,
            "POST",
            "/api/v1/products",
            Some(print_of(&asset, "REMOTE-3")),
        )
        .await;
        let problem = assert_problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(
            !problem.to_string().contains("127.0.0.1"),
            "no internal detail: {problem}"
        );
        let mut goods = print_of(&asset, "REMOTE-4");
        goods["kind"] = json!("goods");
        goods.as_object_mut().unwrap().remove("asset_id");
        create(&walletless, &owner, goods).await;
        walletless.stop().await;
        front.stop().await;
        back.stop().await;
    }
}

async fn send(
    app: &TestApp,
    user: &User,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut request = match method {
        "POST" => user.client.post(app.url(path)),
        "PATCH" => user.client.patch(app.url(path)),
        "DELETE" => user.client.delete(app.url(path)),
        _ => user.client.get(app.url(path)),
    }
    .header("x-csrf-token", &user.csrf_token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn json_of(r: Response, expected: StatusCode) -> Value {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, expected, "{body}");
    body
}

fn usd(amount: i64) -> Value {
    json!({"amount": amount, "currency": "USD"})
}

/// A product body: one variant per price, SKUs `<sku>-1`, `<sku>-2`, …
fn product(
    sku: &str,
    title: &str,
    category: &str,
    tags: &[&str],
    description: &str,
    prices: &[i64],
) -> Value {
    let variants: Vec<Value> = prices
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"sku": format!("{sku}-{}", i + 1), "name": format!("Size {}", i + 1), "price": usd(*p)}))
        .collect();
    json!({
        "kind": "goods",
        "title": title,
        "description": description,
        "category": category,
        "tags": tags,
        "variants": variants,
    })
}

async fn create(app: &TestApp, seller: &User, body: Value) -> Value {
    json_of(
        send(app, seller, "POST", "/api/v1/products", Some(body)).await,
        StatusCode::CREATED,
    )
    .await
}

/// `GET /api/v1/products?<query>` anonymously.
async fn search(app: &TestApp, query: &str) -> Value {
    let r = app
        .new_client()
        .get(app.url(&format!("/api/v1/products?{query}")))
        .send()
        .await
        .unwrap();
    json_of(r, StatusCode::OK).await
}

fn titles(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_owned())
        .collect()
}

async fn sellers_create_products_with_variants_and_customers_cannot(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.seller_user().await;
    let body = json!({
        "kind": "print",
        "title": "Lighthouse at dusk",
        "description": "A giclée print on archival paper.",
        "category": "wall-art",
        "tags": ["Lighthouse", "sea"],
        "images": ["https://img.example.com/lighthouse.png"],
        "variants": [
            {"sku": "lh-a3-matte", "name": "A3 matte", "options": {"size": "A3", "paper": "matte"}, "price": usd(4500)},
            {"sku": "LH-A2-GLOSS", "name": "A2 gloss", "options": {"size": "A2", "paper": "gloss"}, "price": usd(6500)},
        ],
    });
    let created = create(&app, &seller, body.clone()).await;
    assert_eq!(created["seller_id"], seller.id.as_str());
    assert_eq!(created["status"], "active");
    assert_eq!(created["tags"], json!(["lighthouse", "sea"]));
    assert_eq!(created["asset_id"], Value::Null);
    assert_eq!(created["variants"][0]["sku"], "LH-A3-MATTE");
    assert_eq!(created["variants"][0]["options"]["paper"], "matte");
    assert_eq!(created["variants"][1]["price"], usd(6500));
    // Nothing is in stock until inventory says so.
    assert_eq!(created["variants"][1]["in_stock"], false);
    assert_eq!(
        created["price"],
        json!({"min": usd(4500), "max": usd(6500)})
    );
    let id = created["id"].as_str().unwrap();

    // A customer is refused (403), an anonymous caller asked to sign in (401).
    let customer = app.signed_up_user().await;
    let mut other = body.clone();
    other["variants"] = json!([{"sku": "LH-OTHER", "name": "A4", "price": usd(100)}]);
    let r = send(
        &app,
        &customer,
        "POST",
        "/api/v1/products",
        Some(other.clone()),
    )
    .await;
    assert_problem(r, StatusCode::FORBIDDEN).await;
    let r = app
        .new_client()
        .post(app.url("/api/v1/products"))
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED).await;

    // An admin may sell too.
    let admin = app.admin_user().await;
    create(&app, &admin, other).await;

    // Its seller and an admin edit it; another seller and a customer cannot.
    let path = format!("/api/v1/products/{id}");
    let rival = app.seller_user().await;
    for intruder in [&rival, &customer] {
        let r = send(
            &app,
            intruder,
            "PATCH",
            &path,
            Some(json!({"title": "Mine now"})),
        )
        .await;
        assert_problem(r, StatusCode::FORBIDDEN).await;
    }
    let edited = json_of(
        send(
            &app,
            &seller,
            "PATCH",
            &path,
            Some(json!({"title": "Lighthouse at night", "variants": [
                {"sku": "LH-A3-MATTE", "name": "A3 matte", "price": usd(4000)},
            ]})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(edited["title"], "Lighthouse at night");
    assert_eq!(edited["description"], "A giclée print on archival paper.");
    assert_eq!(edited["variants"].as_array().unwrap().len(), 1);
    assert_eq!(edited["price"]["max"], usd(4000));
    let edited = json_of(
        send(
            &app,
            &admin,
            "PATCH",
            &path,
            Some(json!({"tags": ["featured"]})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(edited["tags"], json!(["featured"]));
    // The SKU the edit dropped is free again.
    let mut reuse = body.clone();
    reuse["variants"] = json!([{"sku": "LH-A2-GLOSS", "name": "A2", "price": usd(100)}]);
    create(&app, &rival, reuse).await;

    let doc = search_doc(&app).await;
    assert!(doc.contains("/api/v1/products/{id_or_sku}"), "{doc}");
}

async fn search_doc(app: &TestApp) -> String {
    app.new_client()
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Thirty products, created in this order (later ones are newer).
const SHELF: [(&str, &str, &[&str], &str); 30] = [
    (
        "Lighthouse at dusk",
        "wall-art",
        &["lighthouse", "sea"],
        "A red lighthouse over a calm sea.",
    ),
    (
        "Harbour at dawn",
        "wall-art",
        &["harbour", "boats"],
        "Boats in the harbour, a lighthouse far away.",
    ),
    (
        "Red fox in snow",
        "wall-art",
        &["animals", "winter"],
        "A red fox.",
    ),
    (
        "The Lighthouse Keeper",
        "books",
        &["novel", "sea"],
        "A novel about a lonely keeper.",
    ),
    (
        "Sea glass",
        "goods",
        &["sea", "glass"],
        "Sea glass from the red coast.",
    ),
    (
        "Lighthouse mug",
        "goods",
        &["mug", "lighthouse"],
        "A mug with a lighthouse.",
    ),
    (
        "Storm over the sea",
        "wall-art",
        &["sea", "storm"],
        "Waves hit a lighthouse.",
    ),
    (
        "Red sea sunrise",
        "wall-art",
        &["sea", "red"],
        "Sunrise over the red sea.",
    ),
    (
        "City at night",
        "wall-art",
        &["city", "night"],
        "Lights of the city.",
    ),
    (
        "Night train",
        "books",
        &["novel", "travel"],
        "A train through the night.",
    ),
    (
        "Mountain lake",
        "wall-art",
        &["mountains", "lake"],
        "A still lake.",
    ),
    (
        "Lake house cookbook",
        "books",
        &["cooking"],
        "Recipes from the lake house.",
    ),
    (
        "Forest path",
        "wall-art",
        &["forest", "autumn"],
        "A path in a red autumn forest.",
    ),
    (
        "Autumn leaves tea towel",
        "goods",
        &["autumn", "kitchen"],
        "Red and gold leaves.",
    ),
    (
        "Whale song",
        "wall-art",
        &["sea", "whales"],
        "A whale under the sea.",
    ),
    (
        "Sea shanties songbook",
        "books",
        &["music", "sea"],
        "Songs of the sea.",
    ),
    (
        "Old harbour map",
        "wall-art",
        &["maps", "harbour"],
        "A map of the old harbour and its lighthouse.",
    ),
    (
        "Lighthouse poster",
        "wall-art",
        &["poster"],
        "A tall lighthouse.",
    ),
    (
        "Red lighthouse tote",
        "goods",
        &["bags", "red"],
        "A tote bag with a red lighthouse.",
    ),
    ("Desert dunes", "wall-art", &["desert"], "Dunes at noon."),
    (
        "Desert night sky",
        "wall-art",
        &["desert", "night", "stars"],
        "Stars over the desert.",
    ),
    (
        "Star atlas",
        "books",
        &["astronomy", "stars"],
        "An atlas of the night sky.",
    ),
    (
        "Snow owl",
        "wall-art",
        &["animals", "winter"],
        "An owl in the snow.",
    ),
    (
        "Winter cabin",
        "wall-art",
        &["winter", "cabin"],
        "A cabin in the snow by a lake.",
    ),
    (
        "Cabin cookbook",
        "books",
        &["cooking", "cabin"],
        "Winter recipes.",
    ),
    ("Coffee mug", "goods", &["mug", "coffee"], "A plain mug."),
    (
        "Sea kayak guide",
        "books",
        &["travel", "sea"],
        "Paddling the coast.",
    ),
    (
        "Harbour lights",
        "wall-art",
        &["harbour", "night"],
        "The harbour lights at night.",
    ),
    (
        "Lighthouse and sea",
        "wall-art",
        &["lighthouse", "sea"],
        "Lighthouse by the sea.",
    ),
    (
        "Red harbour boats",
        "wall-art",
        &["harbour", "red", "boats"],
        "Red boats in the harbour.",
    ),
];

async fn search_finds_by_words_and_ranks_the_same_on_both_stacks(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.seller_user().await;
    for (i, (title, category, tags, description)) in SHELF.iter().enumerate() {
        create(
            &app,
            &seller,
            product(
                &format!("SHELF-{i}"),
                title,
                category,
                tags,
                description,
                &[1000 + i as i64],
            ),
        )
        .await;
    }
    // The rank (docs/search.md): per query word, 4 if the title has it, 2 if a tag or the
    // category has it; every word must be somewhere; ties newest first.
    let expected: [(&str, &[&str]); 8] = [
        (
            "lighthouse",
            &[
                "Lighthouse and sea",
                "Lighthouse mug",
                "Lighthouse at dusk",
                "Red lighthouse tote",
                "Lighthouse poster",
            ],
        ),
        (
            "red sea",
            &["Red sea sunrise", "Sea glass", "Lighthouse at dusk"],
        ),
        (
            "harbour",
            &[
                "Red harbour boats",
                "Harbour lights",
                "Old harbour map",
                "Harbour at dawn",
            ],
        ),
        (
            "night",
            &[
                "Desert night sky",
                "City at night",
                "Night train",
                "Harbour lights",
                "Star atlas",
            ],
        ),
        (
            "Winter",
            &[
                "Winter cabin",
                "Snow owl",
                "Red fox in snow",
                "Cabin cookbook",
            ],
        ),
        ("cabin winter", &["Winter cabin", "Cabin cookbook"]),
        ("MUG!", &["Coffee mug", "Lighthouse mug"]),
        ("lighthouse keeper", &["The Lighthouse Keeper"]),
    ];
    for (q, top) in expected {
        let page = search(
            &app,
            &format!("q={}&limit=5", q.replace(' ', "+").replace('!', "%21")),
        )
        .await;
        assert_eq!(titles(&page), top, "q={q} on {stack:?}");
    }
    // No word in common: nothing; a word only in descriptions still matches.
    assert_eq!(search(&app, "q=volcano").await["items"], json!([]));
    assert_eq!(
        titles(&search(&app, "q=paddling").await),
        ["Sea kayak guide"]
    );
    // Newest and price sorts with a query keep the matches and change the order.
    let by_price = search(&app, "q=harbour&sort=price").await;
    assert_eq!(
        titles(&by_price),
        [
            "Harbour at dawn",
            "Old harbour map",
            "Harbour lights",
            "Red harbour boats"
        ]
    );
}

async fn facets_count_categories_tags_and_prices_of_the_filtered_results(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.seller_user().await;
    create(
        &app,
        &seller,
        product(
            "F-1",
            "Blue sea",
            "wall-art",
            &["sea", "blue"],
            "",
            &[1000, 3000],
        ),
    )
    .await;
    create(
        &app,
        &seller,
        product("F-2", "Green sea", "wall-art", &["sea"], "", &[2000]),
    )
    .await;
    create(
        &app,
        &seller,
        product("F-3", "Sea novel", "books", &["sea", "novel"], "", &[1500]),
    )
    .await;
    create(
        &app,
        &seller,
        product("F-4", "Town novel", "books", &["novel"], "", &[500]),
    )
    .await;
    create(
        &app,
        &seller,
        product("F-5", "Mug", "goods", &["mug"], "", &[800]),
    )
    .await;

    let count = |v: &str, n: i64| json!({"value": v, "count": n});
    let all = search(&app, "").await;
    assert_eq!(all["facets"]["total"], 5);
    assert_eq!(
        all["facets"]["category"],
        json!([count("books", 2), count("wall-art", 2), count("goods", 1)])
    );
    assert_eq!(all["facets"]["price"], json!({"min": 500, "max": 3000}));

    let sea = search(&app, "q=sea").await;
    assert_eq!(sea["facets"]["total"], 3);
    assert_eq!(
        sea["facets"]["category"],
        json!([count("wall-art", 2), count("books", 1)])
    );
    assert_eq!(
        sea["facets"]["tag"],
        json!([count("sea", 3), count("blue", 1), count("novel", 1)])
    );
    assert_eq!(sea["facets"]["price"], json!({"min": 1000, "max": 3000}));

    let books = search(&app, "category=books").await;
    assert_eq!(books["facets"]["total"], 2);
    assert_eq!(
        books["facets"]["tag"],
        json!([count("novel", 2), count("sea", 1)])
    );
    assert_eq!(books["facets"]["price"], json!({"min": 500, "max": 1500}));

    // A product is in a price range when one of its variants is.
    let mid = search(&app, "min_price=1200&max_price=2500&sort=price").await;
    assert_eq!(titles(&mid), ["Sea novel", "Green sea"]);
    assert_eq!(
        mid["facets"]["category"],
        json!([count("books", 1), count("wall-art", 1)])
    );
    assert_eq!(mid["facets"]["price"], json!({"min": 1500, "max": 2000}));

    let one = search(&app, "q=sea&tag=novel").await;
    assert_eq!(titles(&one), ["Sea novel"]);
    assert_eq!(
        one["facets"]["tag"],
        json!([count("novel", 1), count("sea", 1)])
    );

    // Nothing was stocked: nothing is in stock.
    assert_eq!(search(&app, "in_stock=true").await["facets"]["total"], 0);

    let none = search(&app, "q=volcano").await;
    assert_eq!(
        none["facets"],
        json!({"total": 0, "category": [], "tag": [], "price": {"min": null, "max": null}})
    );
}

/// Walks every page of `query` `limit` at a time; returns the items in order.
async fn all_pages(app: &TestApp, query: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut q = format!("{query}&limit={limit}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let page = search(app, &q).await;
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit);
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(got.len(), limit, "only a full page has a next page");
                cursor = Some(c.to_owned());
            }
            None => return items,
        }
    }
    panic!("more than 100 pages");
}

async fn cursor_pages_cover_every_match_once(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.seller_user().await;
    let mut created = Vec::new();
    for i in 0..23i64 {
        // Prices repeat, so the price order needs its tiebreak; every 3rd has "framed".
        let title = if i % 3 == 0 {
            format!("Framed poster {i}")
        } else {
            format!("Poster {i}")
        };
        let tags: &[&str] = if i % 2 == 0 { &["framed"] } else { &[] };
        let p = create(
            &app,
            &seller,
            product(
                &format!("PAGE-{i}"),
                &title,
                "posters",
                tags,
                "",
                &[100 * (i % 5 + 1)],
            ),
        )
        .await;
        created.push(p["id"].as_str().unwrap().to_owned());
    }
    let ids = |items: &[Value]| {
        items
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };

    let newest = all_pages(&app, "sort=newest", 5).await;
    let mut expected = created.clone();
    expected.reverse();
    assert_eq!(ids(&newest), expected);

    let cheapest = all_pages(&app, "sort=price", 4).await;
    assert_eq!(cheapest.len(), 23);
    assert_eq!(ids(&cheapest).into_iter().collect::<HashSet<_>>().len(), 23);
    let prices: Vec<i64> = cheapest
        .iter()
        .map(|p| p["price"]["min"]["amount"].as_i64().unwrap())
        .collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{prices:?}");

    // Relevance with ties (many equal scores) and a filter: every match once, best first.
    let framed = all_pages(&app, "q=poster+framed", 3).await;
    let total = search(&app, "q=poster+framed").await["facets"]["total"]
        .as_i64()
        .unwrap();
    assert_eq!(framed.len() as i64, total);
    assert_eq!(
        ids(&framed).into_iter().collect::<HashSet<_>>().len(),
        framed.len()
    );
    let first_plain = framed
        .iter()
        .position(|p| !p["title"].as_str().unwrap().starts_with("Framed"))
        .unwrap();
    assert!(framed[first_plain..]
        .iter()
        .all(|p| !p["title"].as_str().unwrap().starts_with("Framed")));

    // A cursor of another sort, or made up, is refused naming it.
    let page = search(&app, "sort=newest&limit=5").await;
    let c = page["next_cursor"].as_str().unwrap();
    let r = app
        .new_client()
        .get(app.url(&format!("/api/v1/products?sort=price&cursor={c}")))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "cursor");
}

async fn bad_products_get_a_4xx_naming_the_field(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.seller_user().await;
    let good = product("GOOD", "A good product", "goods", &["fine"], "", &[500]);
    create(&app, &seller, good.clone()).await;

    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = product("NEW", "New product", "goods", &[], "", &[500]);
        f(&mut b);
        b
    };
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            with(&|b| b["variants"][0]["price"] = usd(0)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants[0].price.amount",
        ),
        (
            with(&|b| b["variants"][0]["price"] = usd(-5)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants[0].price.amount",
        ),
        (
            with(&|b| b["variants"][0]["price"] = usd(1_000_000_000_000)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants[0].price.amount",
        ),
        (
            with(&|b| b["variants"][0]["price"] = json!({"amount": 500, "currency": "EUR"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants[0].price.currency",
        ),
        (
            with(&|b| b["title"] = json!("   ")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "title",
        ),
        (
            with(&|b| b["title"] = json!("x".repeat(201))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "title",
        ),
        (
            with(&|b| b["category"] = json!("Wall Art!")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "category",
        ),
        (
            with(&|b| b["tags"] = json!((0..11).map(|i| format!("t{i}")).collect::<Vec<_>>())),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tags",
        ),
        (
            with(&|b| b["variants"] = json!([])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants",
        ),
        (
            with(&|b| {
                b["variants"] = json!((0..21)
                    .map(|i| json!({"sku": format!("MANY-{i}"), "name": "x", "price": usd(100)}))
                    .collect::<Vec<_>>())
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants",
        ),
        (
            with(&|b| b["variants"][0]["sku"] = json!("not a sku")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants[0].sku",
        ),
        (
            with(&|b| b["asset_id"] = json!("0193f7a0-0000-7000-8000-000000000001")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "asset_id",
        ),
        (
            with(&|b| b["images"] = json!(["javascript:alert(1)"])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "images[0]",
        ),
        (
            with(&|b| b["variants"][0]["sku"] = json!("good-1")),
            StatusCode::CONFLICT,
            "sku",
        ),
    ];
    for (body, status, field) in cases {
        let r = send(
            &app,
            &seller,
            "POST",
            "/api/v1/products",
            Some(body.clone()),
        )
        .await;
        let problem = assert_problem(r, status).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body} → {problem}");
    }
    // A fractional price is not money: refused by the JSON reader, naming the field.
    let r = send(
        &app,
        &seller,
        "POST",
        "/api/v1/products",
        Some(with(&|b| {
            b["variants"][0]["price"] = json!({"amount": 12.5, "currency": "USD"})
        })),
    )
    .await;
    let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("variants[0].price.amount"),
        "{problem}"
    );
    let r = send(
        &app,
        &seller,
        "POST",
        "/api/v1/products",
        Some(with(&|b| b["colour"] = json!("red"))),
    )
    .await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;

    // Bad searches are named too.
    for (query, field) in [
        ("limit=500", "limit"),
        ("sort=best", "sort"),
        ("min_price=abc", "min_price"),
        ("in_stock=maybe", "in_stock"),
        ("cursor=zzz", "cursor"),
        ("q=a+b+c+d+e+f+g+h+i", "q"),
    ] {
        let r = app
            .new_client()
            .get(app.url(&format!("/api/v1/products?{query}")))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], field, "{query}");
    }
    // Nothing was created by the refused requests.
    assert_eq!(search(&app, "").await["facets"]["total"], 1);
}

async fn archived_products_leave_search_but_stay_readable_by_id(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.seller_user().await;
    let keep = create(
        &app,
        &seller,
        product(
            "KEEP",
            "Harbour print",
            "wall-art",
            &["harbour"],
            "",
            &[900],
        ),
    )
    .await;
    let gone = create(
        &app,
        &seller,
        product(
            "GONE",
            "Harbour poster",
            "wall-art",
            &["harbour"],
            "",
            &[700],
        ),
    )
    .await;
    let gone_path = format!("/api/v1/products/{}", gone["id"].as_str().unwrap());

    let customer = app.signed_up_user().await;
    assert_problem(
        send(&app, &customer, "DELETE", &gone_path, None).await,
        StatusCode::FORBIDDEN,
    )
    .await;

    let archived = json_of(
        send(&app, &seller, "DELETE", &gone_path, None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(archived["status"], "archived");
    // Archiving again changes nothing.
    json_of(
        send(&app, &seller, "DELETE", &gone_path, None).await,
        StatusCode::OK,
    )
    .await;

    for query in ["q=harbour", "", "category=wall-art", "sort=price"] {
        let page = search(&app, query).await;
        assert_eq!(titles(&page), ["Harbour print"], "{query}");
        assert_eq!(page["facets"]["total"], 1);
    }
    assert_eq!(
        search(&app, "tag=harbour").await["facets"]["tag"],
        json!([{"value": "harbour", "count": 1}])
    );

    let read = json_of(
        app.new_client()
            .get(app.url(&gone_path))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(read["status"], "archived");
    assert_eq!(read["title"], "Harbour poster");
    let by_sku = json_of(
        app.new_client()
            .get(app.url("/api/v1/products/GONE-1"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_sku["status"], "archived");

    let r = send(
        &app,
        &seller,
        "PATCH",
        &gone_path,
        Some(json!({"title": "Back again"})),
    )
    .await;
    let problem = assert_problem(r, StatusCode::CONFLICT).await;
    assert_eq!(problem["type"], "/problems/product-archived");
    assert_eq!(keep["status"], "active");
}

async fn a_product_is_found_by_sku(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.seller_user().await;
    let mut body = product("BOOK-DUNE", "Dune", "books", &["novel"], "", &[1200, 2500]);
    body["kind"] = json!("book");
    body["variants"][0]["sku"] = json!("book-dune-paperback");
    let created = create(&app, &seller, body).await;
    let anonymous = app.new_client();
    for key in [
        "BOOK-DUNE-PAPERBACK",
        "book-dune-paperback",
        "BOOK-DUNE-2",
        created["id"].as_str().unwrap(),
    ] {
        let found = json_of(
            anonymous
                .get(app.url(&format!("/api/v1/products/{key}")))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(found["id"], created["id"], "{key}");
        assert_eq!(found["variants"][0]["sku"], "BOOK-DUNE-PAPERBACK");
    }
    for unknown in [
        "BOOK-NOPE",
        "0193f7a0-0000-7000-8000-000000000009",
        "not%20a%20sku",
    ] {
        let r = anonymous
            .get(app.url(&format!("/api/v1/products/{unknown}")))
            .send()
            .await
            .unwrap();
        assert_problem(r, StatusCode::NOT_FOUND).await;
    }
}

async fn the_in_stock_filter_follows_inventory(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let seller = app.seller_user().await;
    let admin = app.admin_user().await;
    create(
        &app,
        &seller,
        product("KITE", "Red kite", "goods", &["kite"], "", &[1200, 1800]),
    )
    .await;
    // A SKU stocked before its product exists: the product starts in stock.
    adjust(&app, &admin, "EARLY-1", 4).await;
    wait_for_availability(&app, "EARLY-1").await;
    create(
        &app,
        &seller,
        product("EARLY", "Early bird", "goods", &[], "", &[900]),
    )
    .await;
    wait_until(&app, "/api/v1/products?in_stock=true", |p| {
        titles(p) == ["Early bird"]
    })
    .await;
    assert_eq!(
        search(&app, "q=kite").await["items"][0]["variants"][0]["in_stock"],
        false
    );

    // Stock arrives for one variant: the kite is found with the filter.
    adjust(&app, &admin, "KITE-2", 1).await;
    wait_until(&app, "/api/v1/products?q=kite&in_stock=true", |p| {
        titles(p) == ["Red kite"]
    })
    .await;
    let kite = search(&app, "q=kite").await;
    assert_eq!(kite["items"][0]["variants"][0]["in_stock"], false);
    assert_eq!(kite["items"][0]["variants"][1]["in_stock"], true);
    // Editing the product keeps what inventory said.
    let id = kite["items"][0]["id"].as_str().unwrap().to_owned();
    json_of(
        send(
            &app,
            &seller,
            "PATCH",
            &format!("/api/v1/products/{id}"),
            Some(json!({"title": "Red kite, large"})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        search(&app, "q=kite&in_stock=true").await["facets"]["total"],
        1
    );

    // An order reserves the last unit (StockOut): not found with the filter, still without.
    place_order(&app, "KITE-2", 1).await;
    wait_until(&app, "/api/v1/products?q=kite&in_stock=true", |p| {
        p["facets"]["total"] == 0
    })
    .await;
    assert_eq!(search(&app, "q=kite").await["facets"]["total"], 1);
}

/// An admin adds `delta` units of `sku` (or takes them out, when negative).
async fn adjust(app: &TestApp, admin: &User, sku: &str, delta: i64) {
    json_of(
        send(
            app,
            admin,
            "POST",
            &format!("/api/v1/inventory/{sku}/adjust"),
            Some(json!({"delta": delta, "reason": "test stock"})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
}

/// Polls `GET path` until `done` holds (at most 15 s): events take a moment to arrive.
async fn wait_until(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = app.new_client().get(app.url(path)).send().await.unwrap();
        let body: Value = r.json().await.unwrap();
        if done(&body) {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 15 s) until the catalog has heard inventory's word on `sku`.
async fn wait_for_availability(app: &TestApp, sku: &str) {
    let db = service_db(app, "catalog").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let known: Option<i64> =
            sqlx::query_scalar("SELECT in_stock FROM sku_availability WHERE sku = $1")
                .bind(sku)
                .fetch_optional(db.pool())
                .await
                .unwrap();
        if known.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the catalog never heard of {sku}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.close().await;
}

/// A service's database, as the app opened it.
async fn service_db(app: &TestApp, service: &'static str) -> rendermart_platform::db::Db {
    let target = rendermart_platform::db::DatabaseTarget::from_config(
        app.settings.database_url.as_ref().map(|u| u.expose()),
        &app.settings.data_dir,
    )
    .unwrap();
    rendermart_platform::db::Db::connect(&target, service)
        .await
        .unwrap()
}

/// Places an order of `quantity` × `sku` on the bus, as the orders service will: through
/// inventory's outbox, which the app relays (the orders service does not exist yet).
async fn place_order(app: &TestApp, sku: &str, quantity: u32) {
    let order = rendermart_orders_api::OrderId::new();
    let placed = rendermart_orders_api::OrderPlaced {
        order_id: order,
        buyer: rendermart_types::UserId::new(),
        lines: vec![rendermart_orders_api::OrderLine {
            sku: rendermart_types::Sku::parse(sku).unwrap(),
            quantity,
        }],
        placed_at: time::OffsetDateTime::now_utc(),
    };
    let db = service_db(app, "inventory").await;
    let mut tx = db.begin().await.unwrap();
    let envelope =
        rendermart_platform::events::Envelope::new(&placed).with_aggregate("order", order);
    rendermart_platform::outbox::enqueue(&mut tx, &envelope)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    db.close().await;
}

/// What a 512×512 generation costs by default (`studio.prices.square_512`).
const SMALL_IMAGE_PRICE: i64 = 50;

/// Generates an image as `user` (paying its price, so their balance is unchanged) and
/// waits until the wallet has it as their asset; returns its id.
async fn asset_of(app: &TestApp, user: &User, prompt: &str) -> String {
    app.top_up(user, SMALL_IMAGE_PRICE).await;
    let r = user
        .client
        .post(app.url("/api/v1/generations"))
        .header("x-csrf-token", &user.csrf_token)
        .header("idempotency-key", prompt.replace(' ', "-"))
        .json(&json!({"prompt": prompt, "width": 512, "height": 512}))
        .send()
        .await
        .unwrap();
    let id = json_of(r, StatusCode::ACCEPTED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    while send(app, user, "GET", &format!("/api/v1/assets/{id}"), None)
        .await
        .status()
        != StatusCode::OK
    {
        assert!(
            Instant::now() < deadline,
            "the asset of {prompt:?} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    id
}

/// A print of `asset` with one variant, SKU `sku`.
fn print_of(asset: &str, sku: &str) -> Value {
    json!({
        "kind": "print",
        "title": "A print of my image",
        "category": "wall-art",
        "asset_id": asset,
        "variants": [{"sku": sku, "name": "A3 matte", "options": {"size": "A3", "paper": "matte"}, "price": usd(4500)}],
    })
}

/// The first field a problem names.
fn field_named(problem: &Value) -> &str {
    problem["errors"][0]["field"].as_str().unwrap_or_default()
}

async fn only_the_images_current_owner_lists_prints_of_it(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let (owner, other, admin, buyer) = (
        app.seller_user().await,
        app.seller_user().await,
        app.admin_user().await,
        app.seller_user().await,
    );
    let asset = asset_of(&app, &owner, "a lighthouse to print").await;

    // Its owner lists a print of it.
    let print = create(&app, &owner, print_of(&asset, "OWN-1")).await;
    assert_eq!(print["asset_id"], asset.as_str());
    assert_eq!(print["seller_id"], owner.id.as_str());

    // Another seller, and an admin (who would be the print's seller), may not.
    for who in [&other, &admin] {
        let r = send(
            &app,
            who,
            "POST",
            "/api/v1/products",
            Some(print_of(&asset, "OWN-2")),
        )
        .await;
        let problem = assert_problem(r, StatusCode::FORBIDDEN).await;
        assert_eq!(field_named(&problem), "asset_id", "{problem}");
    }

    // An image the wallet does not know is a 422 naming asset_id.
    let unknown = print_of("0193f7a0-0000-7000-8000-000000000001", "OWN-3");
    let r = send(&app, &owner, "POST", "/api/v1/products", Some(unknown)).await;
    let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(field_named(&problem), "asset_id", "{problem}");

    // Sold on the market: the new owner lists prints of it, the old one no longer can.
    let r = send(
        &app,
        &owner,
        "POST",
        "/api/v1/listings",
        Some(json!({"asset_id": asset, "price": 1_000})),
    )
    .await;
    let listing = json_of(r, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.top_up(&buyer, 1_000).await;
    let r = send(
        &app,
        &buyer,
        "POST",
        &format!("/api/v1/listings/{listing}/buy"),
        None,
    )
    .await;
    json_of(r, StatusCode::CREATED).await;
    let print = create(&app, &buyer, print_of(&asset, "OWN-4")).await;
    assert_eq!(print["seller_id"], buyer.id.as_str());
    let r = send(
        &app,
        &owner,
        "POST",
        "/api/v1/products",
        Some(print_of(&asset, "OWN-5")),
    )
    .await;
    assert_problem(r, StatusCode::FORBIDDEN).await;
    // Nothing refused was created.
    for sku in ["OWN-2", "OWN-3", "OWN-5"] {
        let r = app
            .new_client()
            .get(app.url(&format!("/api/v1/products/{sku}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{sku}");
    }
}
