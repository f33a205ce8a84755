//! `rendermart seed` on an empty embedded deployment: the demo is there afterwards, made
//! the way people make things (credits held and captured, fees, royalties, owner
//! histories), with the store's demo catalog (over 200 products, stocked), and a progress
//! bar; a second seed adds nothing and succeeds.

use rendermart::{seed, Settings};
use rendermart_testkit::TestApp;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_fills_an_empty_data_directory_with_a_living_demo() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        data_dir: dir.path().to_owned(),
        log_level: "warn".into(),
        ..Settings::default()
    }
    .with("wallet.ledger_check_secs", 1);
    let mut bar = Vec::new();
    let seeded = seed::run(settings.clone(), &mut bar).await.expect("seeded");
    let products = seed::catalog_demo::products();
    assert!(products.len() >= 200);
    let stocked: usize = products
        .iter()
        .map(|p| p.variants.iter().filter(|v| v.stock > 0).count())
        .sum();
    assert_eq!(
        seeded,
        seed::Seeded {
            people: 4,
            images: 12,
            listings: 9,
            sales: 4,
            offers: 3,
            products: products.len(),
            products_existing: 0,
            skus_stocked: stocked,
        }
    );
    let bar = String::from_utf8(bar).unwrap();
    let total = 36 + products.len();
    assert!(
        bar.contains(&format!(" {total}/{total} ")),
        "the bar ends full: {bar:?}"
    );

    // The same data directory, served: the demo is browsable and sound.
    let app = TestApp::spawn_on(settings.clone()).await;
    let listings: Value = app
        .new_client()
        .get(app.url("/api/v1/listings?limit=100"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Nine listed, four sold.
    assert_eq!(listings["items"].as_array().unwrap().len(), 5, "{listings}");
    let ada = app.new_client();
    let r = app
        .login(&ada, seed::PEOPLE[0].0, seed::DEMO_PASSWORD)
        .await;
    assert_eq!(r.status(), 200);
    let history: Value = ada
        .get(app.url("/api/v1/wallet/transactions?limit=100"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    for kind in ["topup", "generation", "sale", "royalty", "offer"] {
        assert!(
            kinds.contains(&kind),
            "Ada's history has a {kind}: {kinds:?}"
        );
    }
    let offers: Value = ada
        .get(app.url("/api/v1/offers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!offers["items"].as_array().unwrap().is_empty());
    app.assert_wallet_ledger_sound().await;

    // The store: every demo product is searchable, a book is found by its words, and its
    // stock is there, in search too once inventory's events have arrived.
    let all = store_search(&app, "limit=1").await;
    assert_eq!(all["facets"]["total"], products.len());
    let book = &products[0];
    let found = store_search(&app, "q=silent+harbour&category=fiction").await;
    assert_eq!(found["items"][0]["title"], book.title.as_str(), "{found}");
    let sku = &book.variants[1].sku;
    let stock: Value = app
        .new_client()
        .get(app.url(&format!("/api/v1/inventory/{sku}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stock["available"], book.variants[1].stock, "{stock}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store_search(&app, "limit=1&in_stock=true").await["facets"]["total"] != products.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "stock never reached search"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.stop().await;

    // Seeding again adds nothing and succeeds.
    let mut bar = Vec::new();
    let again = seed::run(settings.clone(), &mut bar)
        .await
        .expect("a second seed succeeds");
    assert_eq!(
        again,
        seed::Seeded {
            products_existing: products.len(),
            ..seed::Seeded::default()
        }
    );
    let bar = String::from_utf8(bar).unwrap();
    let total = products.len();
    assert!(bar.contains(&format!(" {total}/{total} ")), "{bar:?}");
    let app = TestApp::spawn_on(settings).await;
    assert_eq!(
        store_search(&app, "limit=1").await["facets"]["total"],
        products.len()
    );
    app.stop().await;
}

async fn store_search(app: &TestApp, query: &str) -> Value {
    app.new_client()
        .get(app.url(&format!("/api/v1/products?{query}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
