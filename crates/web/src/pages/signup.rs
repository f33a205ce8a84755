//! `GET /signup` and `POST /signup`: create an account and sign in.
//!
//! A refused form comes back with the message next to its field and what was typed kept,
//! except the password, which is never written back into a page.

use askama::Template;
use axum::{extract::State, response::Response};
use http::{HeaderMap, StatusCode};
use rendermart_identity_api::{device, ClientMeta, IdentityError, SignUp};
use rendermart_platform::http::ClientInfo;
use serde::Deserialize;

use super::{error_page, field_label, secure, signed_in, with_cookie};
use crate::{
    chrome::{no_store, page, Chrome, Visitor},
    csrf::FormToken,
    form::{CsrfField, GuestForm, GuestPage},
    Site,
};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SignupForm {
    email: String,
    display_name: String,
    password: String,
    csrf_token: String,
}

impl CsrfField for SignupForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

impl GuestPage for SignupForm {
    const PATH: &'static str = "/signup";
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    chrome: Chrome,
    csrf_token: String,
    email: String,
    display_name: String,
    errors: SignupErrors,
}

/// What is wrong with the form, next to the field it concerns.
#[derive(Default)]
struct SignupErrors {
    email: Option<String>,
    /// The email belongs to an account already: offer to log in.
    email_taken: bool,
    display_name: Option<String>,
    password: Option<String>,
    /// An error about no field in particular.
    form: Option<String>,
}

impl SignupErrors {
    fn any(&self) -> bool {
        self.email.is_some()
            || self.email_taken
            || self.display_name.is_some()
            || self.password.is_some()
            || self.form.is_some()
    }
}

struct Entered {
    email: String,
    display_name: String,
}

fn render(
    status: StatusCode,
    chrome: Chrome,
    token: &FormToken,
    secure: bool,
    entered: Entered,
    errors: SignupErrors,
) -> Response {
    let body = SignupPage {
        chrome,
        csrf_token: token.value().to_owned(),
        email: entered.email,
        display_name: entered.display_name,
        errors,
    };
    with_cookie(no_store(page(status, &body)), token.set_cookie(secure))
}

pub async fn show(
    State(site): State<Site>,
    visitor: Visitor,
    client: ClientInfo,
    headers: HeaderMap,
) -> Response {
    let token = FormToken::for_request(&site.config.form_key, &headers);
    let secure = secure(&client, site.config.cookie_secure);
    let entered = Entered {
        email: String::new(),
        display_name: String::new(),
    };
    render(
        StatusCode::OK,
        visitor.chrome(),
        &token,
        secure,
        entered,
        SignupErrors::default(),
    )
}

pub async fn submit(
    State(site): State<Site>,
    client: ClientInfo,
    headers: HeaderMap,
    GuestForm { visitor, form }: GuestForm<SignupForm>,
) -> Response {
    let chrome = visitor.chrome();
    let secure = secure(&client, site.config.cookie_secure);
    let entered = Entered {
        email: form.email.clone(),
        display_name: form.display_name.clone(),
    };
    let input = SignUp {
        email: form.email,
        display_name: form.display_name,
        password: form.password,
        // Someone signed in made a new account: their previous session ends rather than
        // living on unseen until it expires.
        end_session: visitor.0.as_ref().map(|member| member.session_id),
    };
    let meta = ClientMeta {
        ip: client.ip,
        device: device::from_headers(&headers),
    };
    let mut errors = SignupErrors::default();
    let status = match site.identity.sign_up(input, meta).await {
        Ok(session) => return signed_in(&session, "/account", secure),
        Err(IdentityError::Invalid(invalid)) => {
            let message = format!("{} {}.", field_label(&invalid.field), invalid.message);
            match invalid.field.as_str() {
                "email" => errors.email = Some(message),
                "display_name" => errors.display_name = Some(message),
                "password" => errors.password = Some(message),
                _ => errors.form = Some(message),
            }
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Err(IdentityError::EmailTaken) => {
            errors.email_taken = true;
            StatusCode::CONFLICT
        }
        Err(other) => return error_page(chrome, other),
    };
    // The form was genuine, so the visitor's cookie holds the token to render it with.
    let token = FormToken::for_request(&site.config.form_key, &headers);
    render(status, chrome, &token, secure, entered, errors)
}
