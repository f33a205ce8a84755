//! `GET /login` and `POST /login`: sign in with email and password.
//!
//! A failed log-in says the same thing whether or not the email has an account, and a
//! successful one replaces any session the browser had (rotation), then goes on to `next`
//! only if it is a path on this site.

use askama::Template;
use axum::{
    extract::{rejection::QueryRejection, Query, State},
    response::Response,
};
use http::{HeaderMap, StatusCode};
use rendermart_identity_api::{device, ClientMeta, IdentityError, LogIn};
use rendermart_platform::http::ClientInfo;
use serde::Deserialize;

use super::{error_page, secure, signed_in, with_cookie};
use crate::{
    chrome::{no_store, page, Chrome, Visitor},
    csrf::FormToken,
    form::{CsrfField, GuestForm, GuestPage},
    next::LocalPath,
    Site,
};

/// Where to go after logging in when no `next` is given.
const DEFAULT_NEXT: &str = "/account";

const WRONG_CREDENTIALS: &str = "Email or password is incorrect.";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginQuery {
    next: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginForm {
    email: String,
    password: String,
    csrf_token: String,
    next: String,
}

impl CsrfField for LoginForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

impl GuestPage for LoginForm {
    const PATH: &'static str = "/login";
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    csrf_token: String,
    email: String,
    /// A safe local path, or empty.
    next: String,
    error: Option<&'static str>,
}

fn render(
    status: StatusCode,
    chrome: Chrome,
    token: &FormToken,
    secure: bool,
    email: String,
    next: Option<LocalPath>,
    error: Option<&'static str>,
) -> Response {
    let body = LoginPage {
        chrome,
        csrf_token: token.value().to_owned(),
        email,
        next: next.map(|n| n.as_str().to_owned()).unwrap_or_default(),
        error,
    };
    with_cookie(no_store(page(status, &body)), token.set_cookie(secure))
}

pub async fn show(
    State(site): State<Site>,
    visitor: Visitor,
    client: ClientInfo,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    // An unreadable query string is no reason to refuse the page: it only loses `next`.
    let next = query.ok().and_then(|Query(q)| LocalPath::parse(&q.next));
    let token = FormToken::for_request(&site.config.form_key, &headers);
    render(
        StatusCode::OK,
        visitor.chrome(),
        &token,
        secure(&client, site.config.cookie_secure),
        String::new(),
        next,
        None,
    )
}

pub async fn submit(
    State(site): State<Site>,
    client: ClientInfo,
    headers: HeaderMap,
    GuestForm { visitor, form }: GuestForm<LoginForm>,
) -> Response {
    let chrome = visitor.chrome();
    let secure = secure(&client, site.config.cookie_secure);
    let next = LocalPath::parse(&form.next);
    let input = LogIn {
        email: form.email.clone(),
        password: form.password,
        rotate_from: visitor.0.as_ref().map(|member| member.session_id),
    };
    let meta = ClientMeta {
        ip: client.ip,
        device: device::from_headers(&headers),
    };
    match site.identity.log_in(input, meta).await {
        Ok(session) => {
            let location = next.as_ref().map_or(DEFAULT_NEXT, LocalPath::as_str);
            let mut response = signed_in(&session, location, secure);
            if adopt_guest_cart(&site, &headers, session.user.id).await {
                let clear = rendermart_cart_api::clear_guest_cookie(secure);
                if let Ok(clear) = http::HeaderValue::from_str(&clear) {
                    response
                        .headers_mut()
                        .append(http::header::SET_COOKIE, clear);
                }
            }
            response
        }
        // Identity answers a malformed email like a wrong password; so does the page.
        Err(IdentityError::InvalidCredentials | IdentityError::Invalid(_)) => {
            let token = FormToken::for_request(&site.config.form_key, &headers);
            render(
                StatusCode::UNAUTHORIZED,
                chrome,
                &token,
                secure,
                form.email,
                next,
                Some(WRONG_CREDENTIALS),
            )
        }
        Err(other) => error_page(chrome, other),
    }
}

/// Merges the visitor's guest cart (`rm_cart`) into the account they just logged in to,
/// when the cart runs in this process; true when it did (the cookie can go). A failure is
/// logged and keeps the cookie: the cart merges it on the next cart request instead.
async fn adopt_guest_cart(
    site: &Site,
    headers: &HeaderMap,
    user: rendermart_identity_api::UserId,
) -> bool {
    let Some(guest) = rendermart_platform::auth::cookie(headers, rendermart_cart_api::GUEST_COOKIE)
    else {
        return false;
    };
    let Some(cart) = site.clients.get::<dyn rendermart_cart_api::CartApi>() else {
        return false;
    };
    match cart.adopt_guest_cart(&guest, user).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "adopting the guest cart at log-in failed");
            false
        }
    }
}
