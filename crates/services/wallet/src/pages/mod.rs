//! The wallet's pages, in the site's shared frame (decision 47: each service renders its own
//! pages with `rendermart-web`'s layout, forms and error pages): the market, a listing, an
//! asset, the wallet and the offers inbox. One module per page; handlers stay thin (parse the
//! form, call one service method, answer with a page or a `303`).
//!
//! Everything works without JavaScript: forms post and redirect, lists page with links.
//! Elements with `data-live-src` are followed by `/static/live.js` when it runs. Every form
//! carries the session's CSRF token (checked by [`MemberForm`] before a handler runs) and
//! every service error becomes its problem shown as a page with its 4xx/5xx status.
//!
//! Amounts are typed in major units (`12.50`) and read with [`Money::parse_major`]; money is
//! shown with `Money`'s `Display` (`12.50 USD`).

mod asset;
mod listing;
mod market;
mod offers;
mod wallet;

use std::{collections::HashMap, sync::Arc};

use askama::Template;
use axum::http::StatusCode;
use axum::{
    response::Response,
    routing::{get, post},
    Router,
};
use rendermart_platform::http::Problem;
use rendermart_types::{Currency, Money, UserId};
use rendermart_web::{no_store, page, problem_page, security_headers, Chrome, ErrorPage};
use time::{format_description::BorrowedFormatItem, macros::format_description, OffsetDateTime};

use crate::{assets::Assets, ledger::Ledger, market::Market, offers::Offers};

/// What every page handler shares: the wallet's own services, called directly.
#[derive(Clone)]
pub(crate) struct Pages {
    ledger: Arc<Ledger>,
    market: Arc<Market>,
    offers: Arc<Offers>,
    assets: Arc<Assets>,
}

/// Every wallet page and form. Merged into the wallet's routes; the app's auth layer tells
/// the pages who is signed in.
pub fn router(
    ledger: Arc<Ledger>,
    market: Arc<Market>,
    offers: Arc<Offers>,
    assets: Arc<Assets>,
) -> Router {
    Router::new()
        .route("/market", get(market::show))
        .route("/market/{id}", get(listing::show))
        .route("/market/{id}/card", get(market::card))
        .route("/market/{id}/buy", post(listing::buy))
        .route("/market/{id}/offers", post(listing::offer))
        .route("/market/{id}/price", post(listing::reprice))
        .route("/market/{id}/withdraw", post(listing::withdraw))
        .route("/assets/{id}", get(asset::show))
        .route("/assets/{id}/list", post(asset::list))
        .route("/wallet", get(wallet::show))
        .route("/wallet/topups", post(wallet::top_up))
        .route("/wallet/payouts", post(wallet::payout))
        .route("/offers", get(offers::show))
        .route("/offers/{id}/accept", post(offers::accept))
        .route("/offers/{id}/reject", post(offers::reject))
        .route("/offers/{id}/cancel", post(offers::cancel))
        .route("/offers/{id}/counter", post(offers::counter))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(Pages {
            ledger,
            market,
            offers,
            assets,
        })
}

impl Pages {
    fn currency(&self) -> Currency {
        self.ledger.currency()
    }

    /// `1250` → `12.50 USD`.
    fn money(&self, minor: i64) -> String {
        Money::new(minor, self.currency()).to_string()
    }

    /// An amount typed into `field` (labelled `label` on the page), in major units, as minor
    /// units; anything else is a 422 page saying what to type.
    #[allow(clippy::result_large_err)]
    fn amount(&self, chrome: &Chrome, label: &str, text: &str) -> Result<i64, Response> {
        let bad = |why: String| {
            no_store(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ErrorPage::new(
                    chrome.clone(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Please check what you entered",
                    format!("{label}: {why}. Go back and try again."),
                ),
            ))
        };
        match Money::parse_major(text, self.currency()) {
            Ok(m) if m.amount() > 0 => Ok(m.amount()),
            Ok(_) => Err(bad("enter an amount greater than 0".to_owned())),
            Err(e) => Err(bad(e.to_string())),
        }
    }
}

/// A service's answer, or its problem as a page in the frame.
trait OrPage<T> {
    #[allow(clippy::result_large_err)]
    fn or_page(self, chrome: &Chrome) -> Result<T, Response>;
}

impl<T, E: Into<Problem>> OrPage<T> for Result<T, E> {
    fn or_page(self, chrome: &Chrome) -> Result<T, Response> {
        self.map_err(|e| problem_page(chrome.clone(), e))
    }
}

/// A page as a no-store `200` (pages show personal data and forms with tokens).
fn show_page(template: &impl Template) -> Response {
    no_store(page(StatusCode::OK, template))
}

/// A time as shown (`label`) and as machine-readable (`iso`, for `<time datetime>`).
pub(crate) struct Stamp {
    pub iso: String,
    pub label: String,
}

const DATE_TIME: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day] [hour]:[minute] UTC");

impl Stamp {
    /// From UTC microseconds since the epoch, as the wallet stores times.
    fn from_micros(micros: i64) -> Self {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Self {
            iso: at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            label: at.format(DATE_TIME).unwrap_or_default(),
        }
    }
}

/// Who is looking at a page, and the display names of the people it shows.
pub(crate) struct Viewer {
    pub id: Option<UserId>,
    names: HashMap<UserId, String>,
}

impl Viewer {
    fn is(&self, user: UserId) -> bool {
        self.id == Some(user)
    }
}

impl Pages {
    /// The viewer, with the names of `people` (from the projection of identity's
    /// registrations; a failure to read them only costs the names).
    async fn viewer(&self, id: Option<UserId>, people: impl IntoIterator<Item = UserId>) -> Viewer {
        let names = crate::people::names(self.ledger.db(), people)
            .await
            .unwrap_or_default();
        Viewer { id, names }
    }
}

/// How a member is named on the wallet's pages: "you", their display name, or (someone the
/// wallet has not heard of) a short handle from their id.
fn who(user: UserId, viewer: &Viewer) -> String {
    if viewer.is(user) {
        return "you".to_owned();
    }
    if let Some(name) = viewer.names.get(&user) {
        return name.clone();
    }
    let id = user.to_string();
    let tail = id.get(id.len().saturating_sub(6)..).unwrap_or(&id);
    format!("member {tail}")
}

/// A fresh value for a form's hidden `idempotency_key`: the same form posted twice (a
/// double click, a resend after a timeout) makes one payment.
fn fresh_key() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Declares a member form's CSRF field and where a signed-out poster is sent.
macro_rules! member_form {
    ($form:ty, $log_in_first:expr) => {
        impl rendermart_web::form::CsrfField for $form {
            fn csrf_token(&self) -> &str {
                &self.csrf_token
            }
            const LOG_IN_FIRST: &'static str = $log_in_first;
        }
    };
}
use member_form;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_you_their_name_or_a_short_handle() {
        let (a, b) = (UserId::new(), UserId::new());
        let viewer = |id| Viewer {
            id,
            names: HashMap::from([(b, "Grace".to_owned())]),
        };
        assert_eq!(who(a, &viewer(Some(a))), "you");
        assert_eq!(who(b, &viewer(Some(a))), "Grace");
        let other = who(a, &viewer(Some(UserId::new())));
        assert!(other.starts_with("member ") && other.len() == "member ".len() + 6);
        assert_eq!(who(a, &viewer(None)), other);
    }

    #[test]
    fn stamps_are_utc() {
        let s = Stamp::from_micros(1_700_000_000_000_000);
        assert_eq!(s.label, "2023-11-14 22:13 UTC");
        assert!(s.iso.starts_with("2023-11-14T22:13:20"));
    }
}
