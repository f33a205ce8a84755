//! Property: any sequence of top-ups, payouts, generations, listings, buys and offers
//! (made, accepted, rejected, countered, cancelled), by several people, keeps the ledger
//! balanced, every balance equal to its postings, every held amount equal to its pending
//! holds, and no user's money below zero or below what is held. Never a 5xx.
//!
//! Sequences are generated and shrunk by proptest and run against one real application per
//! stack (over HTTP, as people would).

use std::time::{Duration, Instant};

use proptest::{prelude::*, test_runner::TestRunner};
use rendermart_testkit::{Stack, TestApp, User};
use reqwest::StatusCode;
use serde_json::{json, Value};

rendermart_testkit::on_both_stacks!(any_sequence_of_money_moves_keeps_the_ledger_sound);

const PEOPLE: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    TopUp {
        who: usize,
        amount: i64,
    },
    Payout {
        who: usize,
        amount: i64,
    },
    Generate {
        who: usize,
    },
    List {
        who: usize,
        price: i64,
    },
    Buy {
        who: usize,
        listing: usize,
    },
    Offer {
        who: usize,
        listing: usize,
        amount: i64,
    },
    Answer {
        who: usize,
        offer: usize,
        verb: usize,
    },
}

fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        1i64..=2_000,
        Just(4_002), // the test provider declines it
        Just(4_005), // the test provider reverses it as a payout
        Just(1_000_000),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..PEOPLE;
    prop_oneof![
        (who.clone(), amount()).prop_map(|(who, amount)| Op::TopUp { who, amount }),
        (who.clone(), amount()).prop_map(|(who, amount)| Op::Payout { who, amount }),
        who.clone().prop_map(|who| Op::Generate { who }),
        (who.clone(), 1i64..=3_000).prop_map(|(who, price)| Op::List { who, price }),
        (who.clone(), 0..8usize).prop_map(|(who, listing)| Op::Buy { who, listing }),
        (who.clone(), 0..8usize, amount()).prop_map(|(who, listing, amount)| Op::Offer {
            who,
            listing,
            amount
        }),
        (who, 0..8usize, 0..4usize).prop_map(|(who, offer, verb)| Op::Answer { who, offer, verb }),
    ]
}

struct Run<'a> {
    app: &'a TestApp,
    people: &'a [User],
    listings: Vec<String>,
    offers: Vec<String>,
}

impl Run<'_> {
    async fn send(
        &self,
        who: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let user = &self.people[who];
        let mut request = match method {
            "POST" => user.client.post(self.app.url(path)),
            _ => user.client.get(self.app.url(path)),
        }
        .header("x-csrf-token", &user.csrf_token)
        .header("idempotency-key", uuid::Uuid::now_v7().to_string());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.expect("request sent");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Applies `op`; the answer must be one a person could get, never a 5xx.
    async fn apply(&mut self, op: &Op) -> Result<(), String> {
        let (status, body, allowed): (u16, Value, &[u16]) = match *op {
            Op::TopUp { who, amount } => {
                let (s, b) = self
                    .send(
                        who,
                        "POST",
                        "/api/v1/wallet/topups",
                        Some(json!({"amount": amount})),
                    )
                    .await;
                (s, b, &[201, 402])
            }
            Op::Payout { who, amount } => {
                let (s, b) = self
                    .send(
                        who,
                        "POST",
                        "/api/v1/wallet/payouts",
                        Some(json!({"amount": amount})),
                    )
                    .await;
                (s, b, &[202, 402])
            }
            Op::Generate { who } => {
                let body = json!({"prompt": "a property of tides", "width": 512, "height": 512});
                let (s, b) = self
                    .send(who, "POST", "/api/v1/generations", Some(body))
                    .await;
                (s, b, &[202, 429])
            }
            Op::List { who, price } => {
                let (_, mine) = self.send(who, "GET", "/api/v1/assets", None).await;
                let Some(asset) = mine["items"]
                    .as_array()
                    .and_then(|items| items.first())
                    .and_then(|a| a["id"].as_str())
                else {
                    return Ok(());
                };
                let body = json!({"asset_id": asset, "price": price});
                let (s, b) = self.send(who, "POST", "/api/v1/listings", Some(body)).await;
                if s == 201 {
                    self.listings
                        .push(b["id"].as_str().unwrap_or_default().to_owned());
                }
                (s, b, &[201, 409])
            }
            Op::Buy { who, listing } => {
                let Some(id) = pick(&self.listings, listing) else {
                    return Ok(());
                };
                let (s, b) = self
                    .send(who, "POST", &format!("/api/v1/listings/{id}/buy"), None)
                    .await;
                (s, b, &[201, 402, 409])
            }
            Op::Offer {
                who,
                listing,
                amount,
            } => {
                let Some(id) = pick(&self.listings, listing) else {
                    return Ok(());
                };
                let body = json!({"amount": amount, "expires_in": 3600});
                let (s, b) = self
                    .send(
                        who,
                        "POST",
                        &format!("/api/v1/listings/{id}/offers"),
                        Some(body),
                    )
                    .await;
                if s == 201 {
                    self.offers
                        .push(b["id"].as_str().unwrap_or_default().to_owned());
                }
                (s, b, &[201, 402, 409, 422])
            }
            Op::Answer { who, offer, verb } => {
                let Some(id) = pick(&self.offers, offer) else {
                    return Ok(());
                };
                let verb = ["accept", "reject", "counter", "cancel"][verb];
                let body = (verb == "counter").then(|| json!({"amount": 777}));
                let (s, b) = self
                    .send(who, "POST", &format!("/api/v1/offers/{id}/{verb}"), body)
                    .await;
                if verb == "counter" && s == 201 {
                    self.offers
                        .push(b["id"].as_str().unwrap_or_default().to_owned());
                }
                (s, b, &[200, 201, 402, 403, 404, 409])
            }
        };
        if allowed.contains(&status) {
            Ok(())
        } else {
            Err(format!("{op:?}: {status} {body}"))
        }
    }

    /// Every person's money is at least zero and at least what is held.
    async fn check_wallets(&self) -> Result<(), String> {
        for who in 0..self.people.len() {
            let (_, w) = self.send(who, "GET", "/api/v1/wallet", None).await;
            let (balance, held) = (w["balance"].as_i64(), w["held"].as_i64());
            match (balance, held) {
                (Some(b), Some(h)) if b >= 0 && (0..=b).contains(&h) => {}
                _ => return Err(format!("person {who}'s wallet: {w}")),
            }
        }
        Ok(())
    }

    /// Waits until no generation of anyone is queued or running.
    async fn settle_generations(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for who in 0..self.people.len() {
            loop {
                let (_, list) = self.send(who, "GET", "/api/v1/generations", None).await;
                let busy = list["items"].as_array().is_some_and(|jobs| {
                    jobs.iter()
                        .any(|j| j["status"] == "queued" || j["status"] == "running")
                });
                if !busy {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("generations never finished: {list}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

fn pick(ids: &[String], i: usize) -> Option<&String> {
    (!ids.is_empty()).then(|| &ids[i % ids.len()])
}

async fn ledger_is_sound(app: &TestApp) -> Result<(), String> {
    // The check runs every second in test apps.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let metrics = app
        .new_client()
        .get(app.url("/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    for gauge in [
        "wallet_ledger_imbalance 0",
        "wallet_accounts_out_of_step 0",
        "wallet_holds_out_of_step 0",
    ] {
        if !metrics.contains(gauge) {
            return Err(format!("not {gauge}"));
        }
    }
    Ok(())
}

async fn any_sequence_of_money_moves_keeps_the_ledger_sound(stack: Stack) {
    let Some(app) = TestApp::spawn_with(stack, |s| {
        s.set("studio.per_user_active_jobs", 100);
        s.set("wallet.payout_settle_secs", 0);
    })
    .await
    else {
        return;
    };
    let mut people = Vec::new();
    for _ in 0..PEOPLE {
        people.push(app.signed_up_user().await);
    }
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 8,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let outcome = tokio::task::block_in_place(|| {
        runner.run(&prop::collection::vec(op(), 10..40), |ops| {
            let result: Result<(), String> = handle.block_on(async {
                let mut run = Run {
                    app: &app,
                    people: &people,
                    listings: Vec::new(),
                    offers: Vec::new(),
                };
                for op in &ops {
                    run.apply(op).await?;
                }
                run.settle_generations().await?;
                run.check_wallets().await?;
                ledger_is_sound(&app).await
            });
            result.map_err(TestCaseError::fail)
        })
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    assert_eq!(
        app.new_client()
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}
