//! One module per page (or group of forms). Handlers are thin: take the form (its CSRF
//! token already checked by its extractor, see [`crate::form`]), call one service method,
//! and turn the answer into a page or a redirect. A service error a page has no
//! form-specific answer for becomes an error page through [`error_page`], the same way for
//! every service.

pub mod account;
pub mod home;
pub mod login;
pub mod logout;
pub mod not_found;
pub mod signup;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue};
use rendermart_identity_api::{device, NewSession};
use rendermart_platform::{auth, http::ClientInfo};
use serde::Deserialize;

use crate::{
    chrome::{see_other, Chrome, ErrorPage},
    form::CsrfField,
};

/// A signed-in form with nothing but its CSRF token (log-out, revoke).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CsrfOnly {
    pub csrf_token: String,
}

impl CsrfField for CsrfOnly {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
    const LOG_IN_FIRST: &'static str = "/login?next=/account";
}

/// After sign-up or log-in: install the new session's cookie (and the device cookie, when
/// identity issued one) and go on with a `303 See Other` (so reloading the next page does
/// not re-post the form).
fn signed_in(session: &NewSession, location: &str, secure: bool) -> Response {
    let mut cookies = vec![auth::set_session_cookie(
        &session.token,
        session.cookie_max_age(),
        secure,
    )];
    if let Some(token) = &session.device {
        cookies.push(device::set_cookie(token, secure));
    }
    let mut response = see_other(location);
    for cookie in cookies {
        match HeaderValue::try_from(cookie) {
            Ok(value) => {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            // The tokens are base64url: this cannot happen, but if it did the visitor must
            // not be sent on as if signed in.
            Err(err) => return ErrorPage::internal(Chrome::default(), &err).into_response(),
        }
    }
    response
}

pub use crate::chrome::problem_page as error_page;

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

/// The secure-cookie decision for this request.
fn secure(client: &ClientInfo, configured: bool) -> bool {
    auth::wants_secure_cookies(client, configured)
}
