//! `rendermart seed` on an empty embedded deployment: the demo is there afterwards, made
//! the way people make things (credits held and captured, fees, royalties, owner
//! histories), with a progress bar; a second seed refuses.

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
    assert_eq!(
        seeded,
        seed::Seeded {
            people: 4,
            images: 12,
            listings: 9,
            sales: 4,
            offers: 3
        }
    );
    let bar = String::from_utf8(bar).unwrap();
    assert!(bar.contains(" 36/36 "), "the bar ends full: {bar:?}");

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
    app.stop().await;

    // Seeding again refuses rather than doubling the demo.
    let again = seed::run(settings, &mut Vec::new()).await;
    let err = again.expect_err("a second seed refuses");
    assert!(err.to_string().contains("already seeded"), "{err}");
}
