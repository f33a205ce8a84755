//! `GET /wallet` (members): balance, held, available, the history a page at a time, and the
//! top-up and payout forms (each with a hidden idempotency key, so a double submit moves
//! money once). With `/static/live.js` the amounts follow `/api/v1/wallet/events`.

use askama::Template;
use axum::{
    extract::{rejection::QueryRejection, Query, State},
    response::Response,
};
use rendermart_web::{form::MemberForm, see_other, Chrome, Visitor};
use serde::Deserialize;

use super::{fresh_key, member_form, show_page, OrPage, Pages, Stamp};
use crate::{
    domain::{Amount, IdempotencyKey, Invalid},
    ledger::{TransactionId, WalletError},
};

const LOG_IN_FIRST: &str = "/login?next=/wallet";
/// History lines per page.
const PAGE_SIZE: u32 = 20;

#[derive(Template)]
#[template(path = "wallet.html")]
struct WalletPage {
    chrome: Chrome,
    csrf_token: String,
    balance: String,
    held: String,
    available: String,
    currency: String,
    exponent: u32,
    rows: Vec<Row>,
    next_href: Option<String>,
    first_page: bool,
    topup_key: String,
    payout_key: String,
    flash: Option<&'static str>,
}

struct Row {
    when: Stamp,
    description: String,
    kind: String,
    status: String,
    amount: String,
    incoming: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WalletQuery {
    before: String,
    done: String,
}

fn flash(done: &str) -> Option<&'static str> {
    match done {
        "topup" => Some("Your top-up is in your wallet."),
        "payout" => {
            Some("Your payout is on its way: the amount is held until the bank settles it.")
        }
        _ => None,
    }
}

pub async fn show(
    State(pages): State<Pages>,
    visitor: Visitor,
    query: Result<Query<WalletQuery>, QueryRejection>,
) -> Result<Response, Response> {
    let Some(member) = visitor.0.clone() else {
        return Ok(see_other(LOG_IN_FIRST));
    };
    let chrome = visitor.chrome().at("/wallet");
    let query = query.map(|q| q.0).unwrap_or_default();
    let before = match query.before.trim() {
        "" => None,
        raw => Some(raw.parse::<TransactionId>().map_err(|_| {
            WalletError::Invalid(Invalid {
                field: "before",
                message: "must be a link from this page".to_owned(),
            })
        }))
        .transpose()
        .or_page(&chrome)?,
    };
    let wallet = pages
        .ledger
        .wallet(member.user_id())
        .await
        .or_page(&chrome)?;
    let history = pages
        .ledger
        .transactions(member.user_id(), before, PAGE_SIZE)
        .await
        .or_page(&chrome)?;
    let next_href = (history.len() == PAGE_SIZE as usize)
        .then(|| history.last().map(|t| format!("/wallet?before={}", t.id)))
        .flatten();
    let currency = pages.currency();
    Ok(show_page(&WalletPage {
        csrf_token: member.csrf_token().to_owned(),
        balance: pages.money(wallet.balance),
        held: pages.money(wallet.held),
        available: pages.money(wallet.available),
        currency: currency.code().to_owned(),
        exponent: currency.exponent(),
        rows: history
            .into_iter()
            .map(|t| Row {
                when: Stamp::from_micros(t.created_at),
                description: t.description,
                kind: t.kind,
                status: t.status,
                amount: pages.money(t.amount),
                incoming: t.amount > 0,
            })
            .collect(),
        next_href,
        first_page: before.is_none(),
        topup_key: fresh_key(),
        payout_key: fresh_key(),
        flash: flash(&query.done),
        chrome,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MoveForm {
    csrf_token: String,
    amount: String,
    idempotency_key: String,
}
member_form!(MoveForm, LOG_IN_FIRST);

/// The amount (typed in major units, within `max`) and the form's idempotency key.
#[allow(clippy::result_large_err)]
fn read(
    pages: &Pages,
    chrome: &Chrome,
    label: &str,
    form: &MoveForm,
    max: i64,
) -> Result<(Amount, IdempotencyKey), Response> {
    let minor = pages.amount(chrome, label, &form.amount)?;
    let amount = Amount::parse(minor, max)
        .map_err(|_| {
            WalletError::Invalid(Invalid {
                field: "amount",
                message: format!("must be at most {}", pages.money(max)),
            })
        })
        .or_page(chrome)?;
    let key = IdempotencyKey::parse(&form.idempotency_key)
        .map_err(WalletError::from)
        .or_page(chrome)?;
    Ok((amount, key))
}

pub async fn top_up(
    State(pages): State<Pages>,
    MemberForm { member, form }: MemberForm<MoveForm>,
) -> Result<Response, Response> {
    let chrome = Visitor(Some(member.clone())).chrome().at("/wallet");
    let (amount, key) = read(&pages, &chrome, "Top-up", &form, pages.ledger.max_topup())?;
    pages
        .ledger
        .top_up(member.user_id(), amount, Some(key))
        .await
        .or_page(&chrome)?;
    Ok(see_other("/wallet?done=topup"))
}

pub async fn payout(
    State(pages): State<Pages>,
    MemberForm { member, form }: MemberForm<MoveForm>,
) -> Result<Response, Response> {
    let chrome = Visitor(Some(member.clone())).chrome().at("/wallet");
    let (amount, key) = read(&pages, &chrome, "Payout", &form, pages.ledger.max_payout())?;
    pages
        .ledger
        .request_payout(member.user_id(), amount, Some(key))
        .await
        .or_page(&chrome)?;
    Ok(see_other("/wallet?done=payout"))
}
