//! The authorization matrix of studio, wallet, marketplace, cart and order routes, on both stacks: every
//! route × {anonymous, owner, another user, admin} → the expected answer. The routes come
//! from the served OpenAPI document, and a route there without a row here fails the test,
//! so a new route cannot be forgotten. (Every public route is documented: the OpenAPI
//! document is the route list.)
//!
//! "Owner" is the owner of what the path names (the generation, the asset, the listing's
//! seller, the offer's recipient); an admin has no power over other people's money or
//! images, so an admin is refused exactly like another user.

use std::collections::BTreeSet;

use rendermart_testkit::{Stack, TestApp, User};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

rendermart_testkit::on_both_stacks!(every_marketplace_route_allows_and_refuses_as_the_matrix_says);

/// The prefixes of the routes this matrix covers.
const COVERED: &[&str] = &[
    "/api/v1/generations",
    "/api/v1/wallet",
    "/api/v1/assets",
    "/api/v1/listings",
    "/api/v1/offers",
    "/api/v1/market",
    "/api/v1/cart",
    "/api/v1/checkout",
    "/api/v1/orders",
    "/api/v1/products",
    "/api/v1/inventory",
];

/// The SKU the cart rows put in carts: a product the admin lists, with stock.
const MATRIX_SKU: &str = "MATRIX-PRINT-1";

/// What `{id}` in a path is, made fresh for each row that needs one.
#[derive(Clone, Copy, Debug)]
enum Fixture {
    None,
    /// One of the owner's succeeded generations (also its asset's id).
    Generation,
    /// An open listing of one of the owner's assets.
    Listing,
    /// An open offer by a bidder on one of the owner's listings.
    Offer,
    /// `{sku}`: a SKU on sale ([`MATRIX_SKU`]). Everyone has a cart of their own (a guest's
    /// is made by the request), so every caller is allowed.
    Sku,
    /// One of the owner's confirmed store orders (of [`MATRIX_SKU`]).
    Order,
    /// `{id_or_sku}`: a product the owner (a seller) lists.
    Product,
}

/// One row: method, OpenAPI path, fixture, body, and the expected status for anonymous,
/// owner, another user, admin.
struct Row {
    method: Method,
    path: &'static str,
    fixture: Fixture,
    body: Option<Value>,
    expect: [u16; 4],
}

fn row(method: Method, path: &'static str, fixture: Fixture, expect: [u16; 4]) -> Row {
    Row {
        method,
        path,
        fixture,
        body: None,
        expect,
    }
}

fn matrix() -> Vec<Row> {
    use Fixture::*;
    let (get, post, patch, delete) = (Method::GET, Method::POST, Method::PATCH, Method::DELETE);
    let signed_in = [401, 200, 200, 200];
    let owner_only = [401, 200, 404, 404];
    let public = [200, 200, 200, 200];
    let with = |mut r: Row, body: Value| {
        r.body = Some(body);
        r
    };
    vec![
        row(get.clone(), "/api/v1/generations", None, signed_in),
        with(
            row(
                post.clone(),
                "/api/v1/generations",
                None,
                [401, 202, 202, 202],
            ),
            json!({"prompt": "a matrix of lights", "width": 512, "height": 512}),
        ),
        row(
            get.clone(),
            "/api/v1/generations/{id}",
            Generation,
            owner_only,
        ),
        row(
            get.clone(),
            "/api/v1/generations/{id}/events",
            Generation,
            owner_only,
        ),
        row(get.clone(), "/api/v1/wallet", None, signed_in),
        row(get.clone(), "/api/v1/wallet/transactions", None, signed_in),
        row(get.clone(), "/api/v1/wallet/events", None, signed_in),
        // Only the owner has money yet: the others pass authorization and are told 402.
        with(
            row(
                post.clone(),
                "/api/v1/wallet/payouts",
                None,
                [401, 202, 402, 402],
            ),
            json!({"amount": 1}),
        ),
        with(
            row(
                post.clone(),
                "/api/v1/wallet/topups",
                None,
                [401, 201, 201, 201],
            ),
            json!({"amount": 100}),
        ),
        // Stripe is not the provider here: the webhook does not exist for anyone.
        with(
            row(
                post.clone(),
                "/api/v1/wallet/stripe/webhook",
                None,
                [404, 404, 404, 404],
            ),
            json!({}),
        ),
        row(get.clone(), "/api/v1/assets", None, signed_in),
        row(get.clone(), "/api/v1/assets/{id}", Generation, public),
        // Everyone is sent somewhere: the owner to the original, others to the thumbnail.
        row(
            get.clone(),
            "/api/v1/assets/{id}/original",
            Generation,
            [302, 302, 302, 302],
        ),
        // The thumbnail is public, and served by the app (same origin for the pages).
        row(
            get.clone(),
            "/api/v1/assets/{id}/thumbnail",
            Generation,
            public,
        ),
        row(get.clone(), "/api/v1/listings", None, public),
        // The body names a fresh unlisted asset of the owner's (filled in below).
        row(
            post.clone(),
            "/api/v1/listings",
            Generation,
            [401, 201, 403, 403],
        ),
        row(get.clone(), "/api/v1/listings/{id}", Listing, public),
        with(
            row(
                patch.clone(),
                "/api/v1/listings/{id}",
                Listing,
                [401, 200, 403, 403],
            ),
            json!({"price": 900}),
        ),
        row(
            delete.clone(),
            "/api/v1/listings/{id}",
            Listing,
            [401, 200, 403, 403],
        ),
        // Your own listing is a 409; the others have too little money: 402.
        row(
            post.clone(),
            "/api/v1/listings/{id}/buy",
            Listing,
            [401, 409, 402, 402],
        ),
        with(
            row(
                post.clone(),
                "/api/v1/listings/{id}/offers",
                Listing,
                [401, 409, 402, 402],
            ),
            json!({"amount": 1_000}),
        ),
        row(get.clone(), "/api/v1/market/events", None, public),
        row(get.clone(), "/api/v1/offers", None, signed_in),
        row(get.clone(), "/api/v1/offers/{id}", Offer, owner_only),
        row(
            post.clone(),
            "/api/v1/offers/{id}/accept",
            Offer,
            [401, 201, 404, 404],
        ),
        row(
            post.clone(),
            "/api/v1/offers/{id}/reject",
            Offer,
            owner_only,
        ),
        // Orders. An admin reads anyone's and ships, delivers and refunds; only the buyer
        // cancels. The checkout row's body has no address: everyone signed in passes
        // authorization and is told 422 (the checkout tests cover the rest).
        with(
            row(post.clone(), "/api/v1/checkout", None, [401, 422, 422, 422]),
            json!({}),
        ),
        row(get.clone(), "/api/v1/orders", None, signed_in),
        row(
            get.clone(),
            "/api/v1/orders/{id}",
            Order,
            [401, 200, 404, 200],
        ),
        row(
            get.clone(),
            "/api/v1/orders/{id}/events",
            Order,
            [401, 200, 404, 200],
        ),
        row(
            post.clone(),
            "/api/v1/orders/{id}/cancel",
            Order,
            [401, 200, 404, 404],
        ),
        row(
            post.clone(),
            "/api/v1/orders/{id}/ship",
            Order,
            [401, 403, 403, 200],
        ),
        // Not shipped: the admin passes authorization and is told 409.
        row(
            post.clone(),
            "/api/v1/orders/{id}/deliver",
            Order,
            [401, 403, 403, 409],
        ),
        with(
            row(
                post.clone(),
                "/api/v1/orders/{id}/refund",
                Order,
                [401, 403, 403, 200],
            ),
            json!({"reason": "authorization matrix"}),
        ),
        // The catalog: anyone reads; sellers and admins sell; a product's seller or an
        // admin edits and archives it. The owner is a seller here; the other user is not.
        row(get.clone(), "/api/v1/products", None, public),
        // The admin goes first and makes the SKU: the owner, a seller, passes
        // authorization and is told 409 (the SKU is taken).
        with(
            row(post.clone(), "/api/v1/products", None, [401, 409, 403, 201]),
            json!({"kind": "goods", "title": "Matrix mug", "description": "", "category": "goods",
                   "tags": [], "variants": [{"sku": "MATRIX-MUG-1", "name": "One", "price": {"amount": 300, "currency": "USD"}}]}),
        ),
        row(get.clone(), "/api/v1/products/{id_or_sku}", Product, public),
        with(
            row(
                patch.clone(),
                "/api/v1/products/{id_or_sku}",
                Product,
                [401, 200, 403, 200],
            ),
            json!({"title": "Matrix print, renamed"}),
        ),
        row(
            delete.clone(),
            "/api/v1/products/{id_or_sku}",
            Product,
            [401, 200, 403, 200],
        ),
        // Inventory: anyone reads a SKU's stock; only admins adjust it or read its trail.
        row(get.clone(), "/api/v1/inventory/{sku}", Sku, public),
        with(
            row(
                post.clone(),
                "/api/v1/inventory/{sku}/adjust",
                Sku,
                [401, 403, 403, 200],
            ),
            json!({"delta": 1, "reason": "authorization matrix"}),
        ),
        row(
            get.clone(),
            "/api/v1/inventory/{sku}/adjustments",
            Sku,
            [401, 403, 403, 200],
        ),
        row(get.clone(), "/api/v1/cart", None, public),
        row(delete.clone(), "/api/v1/cart", None, [204, 204, 204, 204]),
        with(
            row(post.clone(), "/api/v1/cart/items", None, public),
            json!({"sku": MATRIX_SKU, "quantity": 1}),
        ),
        with(
            row(patch.clone(), "/api/v1/cart/items/{sku}", Sku, public),
            json!({"quantity": 2}),
        ),
        row(
            delete.clone(),
            "/api/v1/cart/items/{sku}",
            Sku,
            [204, 204, 204, 204],
        ),
        with(
            row(
                post.clone(),
                "/api/v1/offers/{id}/counter",
                Offer,
                [401, 201, 404, 404],
            ),
            json!({"amount": 150}),
        ),
        // Only the bidder who made it may cancel it; the seller is told 403.
        row(
            post,
            "/api/v1/offers/{id}/cancel",
            Offer,
            [401, 403, 404, 404],
        ),
    ]
}

/// The people, and what the owner has.
struct World {
    owner: User,
    other: User,
    admin: User,
    bidder: User,
    /// The owner's assets not yet used by a row.
    assets: Vec<String>,
    /// Products the owner listed so far (for fresh SKUs).
    products: usize,
}

async fn send(
    app: &TestApp,
    who: Option<&User>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> StatusCode {
    let (client, csrf) = match who {
        Some(user) => (user.client.clone(), Some(user.csrf_token.clone())),
        None => (app.new_client(), None),
    };
    let mut request = client
        .request(method, app.url(path))
        .header("idempotency-key", uuid::Uuid::now_v7().to_string());
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    // Streams answer their status at once; the body is not read.
    request.send().await.expect("request sent").status()
}

async fn post_json(app: &TestApp, user: &User, path: &str, body: Value) -> Value {
    let r = user
        .client
        .post(app.url(path))
        .header("x-csrf-token", &user.csrf_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

impl World {
    async fn new(app: &TestApp, assets: usize) -> Self {
        // A seller (a customer who may also sell in the store).
        let owner = app.seller_user().await;
        app.top_up(&owner, 10_000).await;
        let mut jobs = Vec::new();
        for i in 0..assets {
            let r = owner
                .client
                .post(app.url("/api/v1/generations"))
                .header("x-csrf-token", &owner.csrf_token)
                .header("idempotency-key", format!("matrix-{i}"))
                .json(&json!({"prompt": format!("matrix tile {i}"), "width": 512, "height": 512}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            jobs.push(
                r.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        for id in &jobs {
            while send(
                app,
                Some(&owner),
                Method::GET,
                &format!("/api/v1/assets/{id}"),
                None,
            )
            .await
                != StatusCode::OK
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "asset {id} never appeared"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        let bidder = app.signed_up_user().await;
        app.top_up(&bidder, 100_000).await;
        Self {
            owner,
            other: app.signed_up_user().await,
            admin: app.admin_user().await,
            bidder,
            assets: jobs,
            products: 0,
        }
    }

    /// The product the cart rows add ([`MATRIX_SKU`]), listed and stocked by the admin.
    async fn stock_a_product(&self, app: &TestApp) {
        post_json(
            app,
            &self.admin,
            "/api/v1/products",
            json!({
                "kind": "goods",
                "title": "Matrix print",
                "description": "",
                "category": "goods",
                "tags": [],
                "variants": [{"sku": MATRIX_SKU, "name": "One size", "price": {"amount": 500, "currency": "USD"}}],
            }),
        )
        .await;
        post_json(
            app,
            &self.admin,
            &format!("/api/v1/inventory/{MATRIX_SKU}/adjust"),
            json!({"delta": 10, "reason": "authorization matrix"}),
        )
        .await;
    }

    /// A product the owner lists (they are a seller), fresh for each row.
    async fn product(&mut self, app: &TestApp) -> String {
        self.products += 1;
        let sku = format!("MATRIX-OWN-{}", self.products);
        let product = post_json(
            app,
            &self.owner,
            "/api/v1/products",
            json!({"kind": "goods", "title": "The owner's goods", "description": "", "category": "goods",
                   "tags": [], "variants": [{"sku": sku, "name": "One", "price": {"amount": 200, "currency": "USD"}}]}),
        )
        .await;
        product["id"].as_str().unwrap().to_owned()
    }

    /// A confirmed order of the owner's: one unit of [`MATRIX_SKU`] checked out.
    async fn order(&mut self, app: &TestApp) -> String {
        post_json(
            app,
            &self.owner,
            "/api/v1/cart/items",
            json!({"sku": MATRIX_SKU, "quantity": 1}),
        )
        .await;
        let r = self
            .owner
            .client
            .post(app.url("/api/v1/checkout"))
            .header("x-csrf-token", &self.owner.csrf_token)
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .json(
                &json!({"shipping_address": {"name": "Matrix", "line1": "1 Grid Road",
                "city": "Lattice", "postal_code": "M1 1AA", "country": "GB"}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let order: Value = self
                .owner
                .client
                .get(app.url(&format!("/api/v1/orders/{id}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if order["status"] == "confirmed" {
                break;
            }
            assert!(
                order["status"] == "pending" && std::time::Instant::now() < deadline,
                "the matrix's order did not confirm: {order}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Later orders start from an empty cart.
        send(app, Some(&self.owner), Method::DELETE, "/api/v1/cart", None).await;
        id
    }

    fn asset(&mut self) -> String {
        self.assets.pop().expect("enough assets for the matrix")
    }

    async fn listing(&mut self, app: &TestApp) -> String {
        let asset = self.asset();
        let listing = post_json(
            app,
            &self.owner,
            "/api/v1/listings",
            json!({"asset_id": asset, "price": 1_000}),
        )
        .await;
        listing["id"].as_str().unwrap().to_owned()
    }

    async fn offer(&mut self, app: &TestApp) -> String {
        let listing = self.listing(app).await;
        let offer = post_json(
            app,
            &self.bidder,
            &format!("/api/v1/listings/{listing}/offers"),
            json!({"amount": 500}),
        )
        .await;
        offer["id"].as_str().unwrap().to_owned()
    }
}

/// The covered routes the served OpenAPI document lists, as "METHOD path".
async fn documented_routes(app: &TestApp) -> BTreeSet<String> {
    let doc: Value = app
        .new_client()
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !COVERED.iter().any(|p| path.starts_with(p)) {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                routes.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    routes
}

async fn every_marketplace_route_allows_and_refuses_as_the_matrix_says(stack: Stack) {
    let Some(app) = TestApp::spawn_with(stack, |s| s.set("studio.per_user_active_jobs", 50)).await
    else {
        return;
    };
    let rows = matrix();
    let listed: BTreeSet<String> = rows
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let documented = documented_routes(&app).await;
    let forgotten: Vec<&String> = documented.difference(&listed).collect();
    assert!(
        forgotten.is_empty(),
        "routes without a row in the authorization matrix: {forgotten:?}"
    );
    let stale: Vec<&String> = listed.difference(&documented).collect();
    assert!(
        stale.is_empty(),
        "rows for routes that do not exist: {stale:?}"
    );

    let needs_asset = rows
        .iter()
        .filter(|r| {
            !matches!(
                r.fixture,
                Fixture::None | Fixture::Sku | Fixture::Order | Fixture::Product
            )
        })
        .count();
    let mut world = World::new(&app, needs_asset).await;
    world.stock_a_product(&app).await;
    let mut failures = Vec::new();
    for row in &rows {
        let (path, body) = match row.fixture {
            Fixture::None => (row.path.to_owned(), row.body.clone()),
            Fixture::Generation if row.path == "/api/v1/listings" => (
                row.path.to_owned(),
                Some(json!({"asset_id": world.asset(), "price": 700})),
            ),
            Fixture::Generation => (row.path.replace("{id}", &world.asset()), row.body.clone()),
            Fixture::Listing => (
                row.path.replace("{id}", &world.listing(&app).await),
                row.body.clone(),
            ),
            Fixture::Offer => (
                row.path.replace("{id}", &world.offer(&app).await),
                row.body.clone(),
            ),
            Fixture::Sku => (row.path.replace("{sku}", MATRIX_SKU), row.body.clone()),
            Fixture::Product => (
                row.path.replace("{id_or_sku}", &world.product(&app).await),
                row.body.clone(),
            ),
            Fixture::Order => (
                row.path.replace("{id}", &world.order(&app).await),
                row.body.clone(),
            ),
        };
        // The owner goes last: an allowed request may change what the path names.
        let who = [
            (3, Some(&world.admin)),
            (2, Some(&world.other)),
            (0, None),
            (1, Some(&world.owner)),
        ];
        for (i, user) in who {
            let got = send(&app, user, row.method.clone(), &path, body.as_ref()).await;
            let role = ["anonymous", "owner", "another user", "admin"][i];
            if got.as_u16() != row.expect[i] {
                failures.push(format!(
                    "{} {} as {role}: expected {}, got {got}",
                    row.method, row.path, row.expect[i]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The allowed requests did what they say: the others' top-ups landed, and the admin
    // (who sells the matrix's product) was paid for the order they shipped, less the 5 %
    // fee (the refunded one is borne by the platform).
    for (user, expected) in [(&world.other, 100), (&world.admin, 100 + 475)] {
        let wallet: Value = user
            .client
            .get(app.url("/api/v1/wallet"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(wallet["balance"], expected, "{wallet}");
    }
    app.assert_wallet_ledger_sound().await;
}
