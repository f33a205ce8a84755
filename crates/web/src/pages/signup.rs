//! `GET /signup` and `POST /signup`: create an account and sign in.
//!
//! A refused form comes back with the message next to its field and what was typed kept,
//! except the password, which is never written back into a page.

use askama::Template;
use axum::{extract::State, response::IntoResponse, response::Response};
use http::{HeaderMap, StatusCode};
use rendermart_identity::{ClientMeta, IdentityError, SignUp};
use rendermart_platform::{auth, http::ClientInfo};
use serde::Deserialize;

use super::{field_label, signed_in, unexpected, with_cookie};
use crate::{
    chrome::{no_store, page, Chrome, ErrorPage, Visitor},
    csrf::{self, FormToken},
    form::HtmlForm,
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
    let token = FormToken::for_request(&headers);
    let secure = auth::wants_secure_cookies(&client, site.config.cookie_secure);
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
    visitor: Visitor,
    client: ClientInfo,
    headers: HeaderMap,
    HtmlForm(form): HtmlForm<SignupForm>,
) -> Response {
    let chrome = visitor.chrome();
    if !csrf::anonymous_form_is_genuine(&headers, &form.csrf_token) {
        return ErrorPage::anonymous_csrf(chrome, "/signup").into_response();
    }
    let secure = auth::wants_secure_cookies(&client, site.config.cookie_secure);
    let entered = Entered {
        email: form.email.clone(),
        display_name: form.display_name.clone(),
    };
    let input = SignUp {
        email: form.email,
        display_name: form.display_name,
        password: form.password,
    };
    let mut errors = SignupErrors::default();
    let status = match site
        .identity
        .sign_up(input, ClientMeta { ip: client.ip })
        .await
    {
        Ok(session) => {
            // Someone signed in made a new account: their previous session ends here
            // rather than living on unseen until it expires.
            if let Some(previous) = visitor.0 {
                if let Err(err) = site.identity.log_out(previous.session_id).await {
                    tracing::warn!(error = %err, "could not end the previous session at sign-up");
                }
            }
            return signed_in(&session, "/account", secure);
        }
        Err(IdentityError::Invalid(invalid)) => {
            let message = format!("{} {}.", field_label(invalid.field), invalid.message);
            match invalid.field {
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
        Err(other) => return unexpected(chrome, other),
    };
    // The form was genuine, so the visitor's cookie holds the token to render it with.
    let token = FormToken::for_request(&headers);
    render(status, chrome, &token, secure, entered, errors)
}
