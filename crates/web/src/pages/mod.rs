//! One module per page (or group of forms). Handlers are thin: read the form, check its
//! CSRF token, call one service method, and turn the answer into a page or a redirect.

pub mod account;
pub mod home;
pub mod login;
pub mod logout;
pub mod not_found;
pub mod signup;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use rendermart_identity::{IdentityError, NewSession};
use rendermart_platform::auth;
use serde::Deserialize;

use crate::chrome::{see_other, Chrome, ErrorPage};

/// A signed-in form with nothing but its CSRF token (log-out, revoke).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CsrfOnly {
    pub csrf_token: String,
}

/// After sign-up or log-in: install the new session's cookie and go on with a
/// `303 See Other` (so reloading the next page does not re-post the form).
fn signed_in(session: &NewSession, location: &str, secure: bool) -> Response {
    let cookie = auth::set_session_cookie(&session.token, session.cookie_max_age(), secure);
    let mut response = see_other(location);
    match HeaderValue::try_from(cookie) {
        Ok(value) => {
            response.headers_mut().append(header::SET_COOKIE, value);
            response
        }
        // The token is base64url: this cannot happen, but if it did the visitor must not be
        // sent on as if signed in.
        Err(err) => ErrorPage::internal(Chrome::default(), &err).into_response(),
    }
}

/// The identity errors a page has no form-specific answer for.
fn unexpected(chrome: Chrome, err: IdentityError) -> Response {
    match err {
        IdentityError::RateLimited { retry_after_secs } => {
            ErrorPage::rate_limited(chrome, retry_after_secs).into_response()
        }
        IdentityError::NotFound => {
            ErrorPage::not_found(chrome, "What you were looking for does not exist.")
                .into_response()
        }
        IdentityError::Invalid(invalid) => ErrorPage::new(
            chrome,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Please check the form",
            format!("{}: {}", field_label(invalid.field), invalid.message),
        )
        .into_response(),
        IdentityError::Internal(e) => {
            ErrorPage::internal(chrome, &format!("{e:#}")).into_response()
        }
        other @ (IdentityError::EmailTaken | IdentityError::InvalidCredentials) => {
            ErrorPage::internal(chrome, &format!("unexpected identity answer: {other}"))
                .into_response()
        }
    }
}

/// How a service's field name reads in a sentence on the page.
fn field_label(field: &str) -> &'static str {
    match field {
        "email" => "Email",
        "display_name" => "Display name",
        "password" => "Password",
        "name" => "Name",
        _ => "This field",
    }
}

/// Adds a `Set-Cookie` header, if there is one to add.
fn with_cookie(mut response: Response, cookie: Option<String>) -> Response {
    if let Some(value) = cookie.and_then(|c| HeaderValue::try_from(c).ok()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}
