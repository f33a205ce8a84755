//! `GET /account` and its token forms: who you are, and the API tokens programs use to act
//! for you.
//!
//! Creating a token answers with the account page itself, not a redirect: the secret exists
//! only in that response (identity stores its digest), so it is shown once, never cached.

use askama::Template;
use axum::{
    extract::{rejection::PathRejection, Path, State},
    response::{IntoResponse, Response},
};
use http::StatusCode;
use rendermart_identity_api::{IdentityError, NewToken, TokenId, TokenInfo, User};
use serde::Deserialize;
use time::{format_description::BorrowedFormatItem, macros::format_description, OffsetDateTime};

use super::{error_page, CsrfOnly};
use crate::{
    chrome::{no_store, page, see_other, Chrome, ErrorPage, Member, Visitor},
    form::{CsrfField, MemberForm},
    Site,
};

/// Where someone who is not signed in is sent instead.
const LOG_IN_FIRST: &str = "/login?next=/account";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateTokenForm {
    name: String,
    csrf_token: String,
}

impl CsrfField for CreateTokenForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
    const LOG_IN_FIRST: &'static str = LOG_IN_FIRST;
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    csrf_token: String,
    profile: Profile,
    tokens: Vec<TokenRow>,
    /// A token created by this very request, secret included.
    created: Option<CreatedToken>,
    /// The create form as typed, and what is wrong with it.
    token_name: String,
    token_error: Option<String>,
}

struct Profile {
    display_name: String,
    email: String,
    roles: Vec<&'static str>,
    member_since: Stamp,
}

struct TokenRow {
    id: String,
    name: String,
    prefix: String,
    created: Stamp,
    last_used: Option<Stamp>,
}

struct CreatedToken {
    name: String,
    secret: String,
}

/// A time as shown (`label`) and as machine-readable (`iso`, for `<time datetime>`).
struct Stamp {
    iso: String,
    label: String,
}

const DATE: &[BorrowedFormatItem<'_>] =
    format_description!("[month repr:long] [day padding:none], [year]");
const DATE_TIME: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day] [hour]:[minute] UTC");

impl Stamp {
    fn new(at: OffsetDateTime, format: &[BorrowedFormatItem<'_>]) -> Self {
        let at = at.to_offset(time::UtcOffset::UTC);
        Self {
            iso: at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            label: at.format(format).unwrap_or_default(),
        }
    }
}

impl From<User> for Profile {
    fn from(user: User) -> Self {
        Self {
            display_name: user.display_name,
            email: user.email,
            roles: user.roles.iter().map(|r| r.as_str()).collect(),
            member_since: Stamp::new(user.created_at, DATE),
        }
    }
}

impl From<TokenInfo> for TokenRow {
    fn from(t: TokenInfo) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name,
            prefix: t.prefix,
            created: Stamp::new(t.created_at, DATE_TIME),
            last_used: t.last_used_at.map(|at| Stamp::new(at, DATE_TIME)),
        }
    }
}

/// What the create-token form brings to the page.
#[derive(Default)]
struct TokenForm {
    created: Option<NewToken>,
    name: String,
    error: Option<String>,
}

/// The account page for `member`, as of now.
async fn render(site: &Site, member: &Member, status: StatusCode, form: TokenForm) -> Response {
    let chrome = Visitor(Some(member.clone())).chrome().at("/account");
    let user = match site.identity.user(member.user_id()).await {
        Ok(user) => user,
        // The account is gone though its session was live a moment ago.
        Err(IdentityError::NotFound) => return see_other(LOG_IN_FIRST),
        Err(err) => return error_page(chrome, err),
    };
    let tokens = match site
        .identity
        .list_tokens(member.user_id(), None, 1000)
        .await
    {
        Ok(tokens) => tokens,
        Err(err) => return error_page(chrome, err),
    };
    let body = AccountPage {
        chrome,
        csrf_token: member.csrf_token().to_owned(),
        profile: user.into(),
        tokens: tokens.into_iter().map(TokenRow::from).collect(),
        created: form.created.map(|t| CreatedToken {
            name: t.info.name,
            secret: t.token,
        }),
        token_name: form.name,
        token_error: form.error,
    };
    no_store(page(status, &body))
}

pub async fn show(State(site): State<Site>, visitor: Visitor) -> Response {
    match visitor.0 {
        Some(member) => render(&site, &member, StatusCode::OK, TokenForm::default()).await,
        None => see_other(LOG_IN_FIRST),
    }
}

pub async fn create_token(
    State(site): State<Site>,
    MemberForm { member, form }: MemberForm<CreateTokenForm>,
) -> Response {
    match site
        .identity
        .create_token(member.user_id(), &form.name)
        .await
    {
        Ok(created) => {
            let form = TokenForm {
                created: Some(created),
                ..TokenForm::default()
            };
            render(&site, &member, StatusCode::OK, form).await
        }
        Err(IdentityError::Invalid(invalid)) => {
            let form = TokenForm {
                created: None,
                name: form.name,
                error: Some(format!("Name {}.", invalid.message)),
            };
            render(&site, &member, StatusCode::UNPROCESSABLE_ENTITY, form).await
        }
        Err(err) => error_page(Visitor(Some(member)).chrome(), err),
    }
}

pub async fn revoke_token(
    State(site): State<Site>,
    id: Result<Path<String>, PathRejection>,
    MemberForm { member, .. }: MemberForm<CsrfOnly>,
) -> Response {
    let chrome = Visitor(Some(member.clone())).chrome();
    let no_such_token = |chrome| {
        ErrorPage::not_found(
            chrome,
            "You have no API token with this id. It may already have been revoked.",
        )
        .link("/account", "Back to your account")
        .into_response()
    };
    let Some(id) = id.ok().and_then(|Path(id)| id.parse::<TokenId>().ok()) else {
        return no_such_token(chrome);
    };
    match site.identity.revoke_token(member.user_id(), id).await {
        Ok(()) => see_other("/account"),
        Err(IdentityError::NotFound) => no_such_token(chrome),
        Err(err) => error_page(chrome, err),
    }
}
